// A `UserId` only comes out of validation (`UserId::new`, `str::parse`):
// there is no conversion from an arbitrary string.
use ws_lifecycle::id::UserId;

fn main() {
    let from_the_request = String::from("alice\nbob");
    let user: UserId = from_the_request.into();
    let _ = user;
}
