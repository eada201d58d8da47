//! What the load generator and the soak read about the server process from
//! `/proc` (Linux).

/// The resident set size of process `pid`, in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}
