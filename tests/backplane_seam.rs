//! The [`Backplane`] seam, proved from outside the crate: an in-process
//! cluster written here, with nothing but the public API (the trait,
//! [`NodeLink`], and [`EncodedEvent`]'s wire form), passes the same
//! multi-node routing cases as the Redis backplane
//! (`tests/cluster_cases`). NATS, Postgres `LISTEN`/`NOTIFY` or Kafka
//! backplanes are written the same way.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod cluster_cases;
mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ws_lifecycle::Hub;
use ws_lifecycle::auth::AuthOutcome;
use ws_lifecycle::backplane::{Backplane, BackplaneError, BoxFuture, NodeLink};
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::event::EncodedEvent;
use ws_lifecycle::event::control::GapReason;
use ws_lifecycle::id::UserId;
use ws_lifecycle::stream::{Position, ResumeOutcome};
use ws_lifecycle::transport::memory;

/// Every node's link, by node index.
#[derive(Clone, Default)]
struct Cluster {
    links: Arc<Mutex<Vec<(usize, NodeLink)>>>,
}

impl Cluster {
    /// The links of every node but `me`, copied out so no lock is held
    /// while delivering.
    fn others(&self, me: usize) -> Vec<NodeLink> {
        let links = self.links.lock();
        links
            .iter()
            .filter(|(node, _)| *node != me)
            .map(|(_, link)| link.clone())
            .collect()
    }

    fn all(&self) -> Vec<NodeLink> {
        self.links
            .lock()
            .iter()
            .map(|(_, link)| link.clone())
            .collect()
    }

    /// A hub joined to the cluster as node `me`.
    fn node(&self, me: usize) -> Hub {
        let backplane = InProcess {
            me,
            cluster: self.clone(),
        };
        Hub::builder().backplane(backplane).build().unwrap()
    }
}

/// One node's backplane. Events travel in their wire form, as they would
/// over a network: serialised once by the sender, checked by the receiver.
struct InProcess {
    me: usize,
    cluster: Cluster,
}

impl Backplane for InProcess {
    fn start(&self, node: NodeLink) {
        self.cluster.links.lock().push((self.me, node));
    }

    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError> {
        let wire = event.to_wire();
        for link in self.cluster.others(self.me) {
            match EncodedEvent::from_wire(&wire) {
                Ok(event) => {
                    let _ = link.deliver(user, event);
                }
                Err(_) => link.record_rejected(),
            }
        }
        Ok(())
    }

    // Every node receives every event, so there is nothing to (un)subscribe.
    fn user_joined(&self, _: &UserId) {}

    fn user_left(&self, _: &UserId) {}

    fn ready_for<'a>(&'a self, _: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(async { Ok(()) })
    }

    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError> {
        for link in self.cluster.others(self.me) {
            link.disconnect_local(user, frame);
        }
        Ok(())
    }

    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        let online = self
            .cluster
            .all()
            .iter()
            .any(|link| link.local_users().contains(user));
        Box::pin(async move { Ok(online) })
    }

    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>> {
        let mut users: Vec<UserId> = self
            .cluster
            .all()
            .iter()
            .flat_map(|link| link.local_users())
            .collect();
        users.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        users.dedup();
        Box::pin(async move { Ok(users.len() as u64) })
    }
}

fn nodes(n: usize) -> Vec<Hub> {
    let cluster = Cluster::default();
    (0..n).map(|me| cluster.node(me)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_to_every_connection_of_its_user_once_in_order() {
    cluster_cases::every_event_reaches_every_connection_of_its_user_once_in_order(&nodes(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_user_on_one_node_closes_the_users_connections_on_the_others_within_1s() {
    cluster_cases::disconnect_user_closes_the_users_connections_on_every_node(&nodes(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_users_reaches_the_listed_users_on_other_nodes_and_no_one_else() {
    cluster_cases::send_to_users_reaches_the_listed_users_and_no_one_else(&nodes(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_answered_across_the_cluster() {
    let hubs = nodes(2);
    let zoe = support::user("zoe");
    let (_client, _handle) = support::connect(&hubs[1], &zoe).await;
    assert_eq!(hubs[0].is_online_anywhere(&zoe).await, Ok(true));
    assert_eq!(hubs[0].online_count().await, Ok(1));
    assert!(!hubs[0].is_online(&zoe), "zoe is not on node 0");
}

/// The resume outcome of a connection of `user` on `hub` asking for `since`.
async fn resume_from(hub: &Hub, user: &UserId, since: Position) -> ResumeOutcome {
    let (transport, client) = memory::pair(64);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(AuthOutcome::new(user.clone()).with_since(since))
        .await
        .unwrap();
    let handle = conn.handle();
    let runner = hub.clone();
    tokio::spawn(async move { runner.run(conn, &support::Scripted::default()).await });
    handle.wait_ready(Duration::from_secs(5)).await.unwrap();
    let outcome = handle.resume().cloned().unwrap();
    drop(client);
    outcome
}

/// This backplane keeps no streams, so each node numbers its own. When a
/// node is told it missed remote events (a `gap`), its stream has a hole:
/// it restarts, and a resume from before the gap is not recovered, though
/// the hole is not in its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gap_a_node_local_stream_restarts_so_no_resume_crosses_the_hole() {
    let cluster = Cluster::default();
    let hub = cluster.node(0);
    let alice = support::user("alice");
    let (_client, _handle) = support::connect(&hub, &alice).await;
    let _ = hub.send_to_user(&alice, &support::event("note", serde_json::json!(1)));
    let before = hub.stream_position(&alice).await.unwrap().unwrap();
    assert!(resume_from(&hub, &alice, before.clone()).await.recovered);

    let link = cluster.all().remove(0);
    assert!(link.notify_gap_to(&alice, GapReason::BackplaneLostEvents) > 0);
    let outcome = resume_from(&hub, &alice, before.clone()).await;
    assert!(!outcome.recovered, "resumed across a hole: {outcome:?}");
    assert_ne!(outcome.position.epoch, before.epoch);
}
