// `close` consumes the connection: nothing can be sent on it afterwards.
use ws_lifecycle::Hub;
use ws_lifecycle::close::CloseCause;
use ws_lifecycle::connection::{Connection, Ready};
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::transport::memory::MemoryTransport;

async fn closed(conn: Connection<Ready<MemoryTransport>>) -> Result<(), Box<dyn std::error::Error>> {
    let _report = conn.close(CloseCause::Dropped).await;
    conn.send(Event::custom(EventName::new("late")?, serde_json::json!(null)))?;
    Ok(())
}

fn main() {
    let _ = Hub::new();
    let _ = closed;
}
