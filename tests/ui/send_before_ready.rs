// A connection that is authenticated but not Ready has no `send`: events
// before Ready go through a handle, which buffers them.
use ws_lifecycle::Hub;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::memory;

async fn not_ready_yet() -> Result<(), Box<dyn std::error::Error>> {
    let hub = Hub::new();
    let (transport, _client) = memory::pair(8);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(UserId::new("alice")?.into())
        .await?;
    conn.send(Event::custom(EventName::new("hello")?, serde_json::json!(null)))?;
    Ok(())
}

fn main() {
    let _ = not_ready_yet();
}
