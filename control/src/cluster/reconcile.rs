//! Relay reconciliation (docs/cluster.md, 4.6). `relay.ended` is a core-NATS message: at most
//! once, and dropped while NATS is away, so a relay half could outlive its other half (an
//! origin sending to an edge port nobody reads, or an edge relay publisher fed by nothing).
//! Every [`EVERY`] each node asks the peer of each of its relay halves, one request per
//! peer, which of them it still holds; a half whose other half is gone ends the way
//! `relay.ended` would have ended it. A peer that does not answer is left to liveness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::Status;
use serde::{Deserialize, Serialize};

use super::relay::EDGE_LOSS_INFO;
use super::{names, Cluster};
use crate::core::now_ms;
use crate::registry::SessionRecord;

/// How often each node checks its relays.
pub const EVERY: Duration = Duration::from_secs(5);
/// Info of an edge's relay publisher (and so of its players) whose upstream half is gone.
pub const RELAY_LOSS_INFO: &str = "Failed by relay loss";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayCheck {
    pub relay_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RelayCheckReply {
    /// The asked ids this node holds no half of.
    pub unknown: Vec<String>,
}

fn check_subject(node: &str) -> String {
    format!("ms.node.{}.relay.check", names::encode(node))
}

/// The relay ids to ask about, per peer: halves older than `min_age_ms`, so that a pull in
/// flight (the edge half exists before the upstream half) is never taken for a lost one.
pub fn due(
    relays: &[SessionRecord],
    now_ms: u64,
    min_age_ms: u64,
) -> BTreeMap<String, Vec<String>> {
    let mut by_peer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in relays {
        if let Some(x) = &r.relay {
            if now_ms.saturating_sub(r.create_date) >= min_age_ms {
                by_peer
                    .entry(x.peer.clone())
                    .or_default()
                    .push(x.relay_id.clone());
            }
        }
    }
    by_peer
}

/// The asked ids not among those held.
pub fn unknown(asked: &[String], held: &[SessionRecord]) -> Vec<String> {
    asked
        .iter()
        .filter(|id| {
            !held
                .iter()
                .any(|r| r.relay.as_ref().is_some_and(|x| &x.relay_id == *id))
        })
        .cloned()
        .collect()
}

impl Cluster {
    async fn reconcile(&self) {
        let relays = self.relays();
        let min_age = self.cfg.pull_timeout_ms + 2 * self.cfg.rpc_timeout_ms;
        for (peer, ids) in due(&relays, now_ms(), min_age) {
            let Ok(payload) = serde_json::to_vec(&RelayCheck { relay_ids: ids }) else {
                continue;
            };
            let r = self
                .client
                .send_request(
                    check_subject(&peer),
                    async_nats::Request::new()
                        .payload(payload.into())
                        .timeout(Some(self.timeout())),
                )
                .await;
            let Some(reply) = r
                .ok()
                .and_then(|m| serde_json::from_slice::<RelayCheckReply>(&m.payload).ok())
            else {
                continue;
            };
            for id in reply.unknown {
                let Some(r) = relays
                    .iter()
                    .find(|r| r.relay.as_ref().is_some_and(|x| x.relay_id == id))
                else {
                    continue;
                };
                // An edge's relay publisher fails, and its players with it; an upstream's
                // relay player just stops.
                let (status, info) = if r.published {
                    (Status::Failed, RELAY_LOSS_INFO)
                } else {
                    (Status::Stopped, EDGE_LOSS_INFO)
                };
                tracing::warn!(stream = %r.name, id = %r.media_session_id, %peer, relay_id = %id, info, "relay's other half is gone (its relay.ended was lost): ending this half");
                self.core.end_one(&r.media_session_id, status, info);
            }
        }
    }
}

pub fn spawn(c: Arc<Cluster>) {
    c.on_each(
        check_subject(&c.node),
        "relay-check",
        Duration::from_millis(500),
        |me, m| {
            let (Some(reply), Ok(req)) = (
                m.reply.clone(),
                serde_json::from_slice::<RelayCheck>(&m.payload),
            ) else {
                return;
            };
            let answer = RelayCheckReply {
                unknown: unknown(&req.relay_ids, &me.relays()),
            };
            let me = me.clone();
            tokio::spawn(async move {
                if let Ok(p) = serde_json::to_vec(&answer) {
                    let _ = me.client.publish(reply, p.into()).await;
                }
            });
        },
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            if c.connected() {
                c.reconcile().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RelayInfo;

    fn relay(id: &str, peer: &str, created: u64) -> SessionRecord {
        let mut r = SessionRecord::new(1, id, "s", false, 1);
        r.create_date = created;
        r.relay = Some(RelayInfo {
            relay_id: id.into(),
            peer: peer.into(),
            origin: "a".into(),
        });
        r
    }

    #[test]
    fn only_settled_relays_are_checked_one_request_per_peer() {
        let rs = [
            relay("r1", "b", 1_000),
            relay("r2", "c", 1_000),
            relay("r3", "b", 9_500), // a pull maybe still in flight
            relay("r4", "b", 2_000),
            SessionRecord::new(2, "p", "s", true, 1), // not a relay
        ];
        let d = due(&rs, 10_000, 1_000);
        assert_eq!(d.len(), 2);
        assert_eq!(d["b"], vec!["r1".to_string(), "r4".to_string()]);
        assert_eq!(d["c"], vec!["r2".to_string()]);
    }

    #[test]
    fn unknown_lists_what_is_not_held() {
        let held = [relay("r1", "x", 0)];
        let asked = vec!["r1".to_string(), "r9".to_string()];
        assert_eq!(unknown(&asked, &held), vec!["r9".to_string()]);
        let wire = serde_json::to_string(&RelayCheckReply {
            unknown: vec!["r9".into()],
        })
        .unwrap();
        assert_eq!(wire, r#"{"unknown":["r9"]}"#);
    }
}
