//! The demo page (`examples/common/demo.html`) as the tests drive it: its
//! buttons, the client options it takes, its event log, and waits on DOM
//! changes.

use serde_json::Value;

use crate::cdp::Browser;

/// Resolves once `condition` (a JS expression) holds, re-checking on every
/// DOM change in the page (no polling), or rejects after 20 s.
pub(crate) fn when(condition: &str) -> String {
    format!(
        "new Promise((resolve, reject) => {{
            const check = () => {{ if ({condition}) {{ observer.disconnect(); resolve(true); return true; }} return false; }};
            const observer = new MutationObserver(check);
            observer.observe(document.body, {{ subtree: true, childList: true, characterData: true, attributes: true }});
            if (!check()) setTimeout(() => {{ observer.disconnect(); reject(new Error('timed out: ' + {condition:?})); }}, 20000);
        }})"
    )
}

/// Connects the tab as `user` with the page's own button.
pub(crate) async fn connect_as(browser: &mut Browser, tab: &str, user: &str) {
    browser
        .eval(tab, &format!("document.getElementById('user').value = {user:?}; document.getElementById('connect').click(); true"))
        .await;
}

/// Sets the client's options for the tab's next connect (the demo page
/// spreads `window.demoClientOptions` into them).
pub(crate) async fn client_options(browser: &mut Browser, tab: &str, options: &Value) {
    browser
        .eval(tab, &format!("window.demoClientOptions = {options}; true"))
        .await;
}

/// The page's event log: (type, seq) per frame.
pub(crate) async fn events(browser: &mut Browser, tab: &str) -> Vec<(String, u64)> {
    let value = browser
        .eval(tab, "[...document.querySelectorAll('#events li.frame')].map(li => [li.dataset.type, Number(li.dataset.seq)])")
        .await;
    serde_json::from_value(value).unwrap()
}

/// One line of the page's log: a frame (`type`, with `off` for events of
/// the user's stream and `recovered` for `ready`), or the client's own
/// note (`type` "client", with the state and close code it reports).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Line {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) off: Option<u64>,
    pub(crate) recovered: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) resync: Option<String>,
    /// A run event a resumed connection replayed (`off` up to its ready's).
    pub(crate) replayed: bool,
}

pub(crate) async fn log_lines(browser: &mut Browser, tab: &str) -> Vec<Line> {
    let value = browser
        .eval(
            tab,
            "[...document.querySelectorAll('#events li')].map(li => ({
                type: li.classList.contains('client') ? 'client' : li.dataset.type,
                off: li.dataset.off === undefined ? null : Number(li.dataset.off),
                recovered: li.dataset.recovered ?? null,
                state: li.dataset.state ?? null,
                code: li.dataset.code ?? null,
                reason: li.dataset.reason ?? null,
                resync: li.dataset.resync ?? null,
                replayed: li.classList.contains('replayed'),
            }))",
        )
        .await;
    serde_json::from_value(value).unwrap()
}
