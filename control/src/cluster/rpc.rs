//! Cluster-wide find / find_all / terminate: the node the REST call reached publishes the
//! request on `ms.cluster.rest` with a reply inbox; every other node runs it on its own
//! sessions and answers. Replies are gathered until every live peer answered or the deadline
//! (`cluster.rpc_timeout_ms`) passed; peers that did not answer are named, never skipped
//! silently. The filter travels as the client's JSON, so each node validates it as a local
//! call would.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Cluster;

pub const REST_SUBJECT: &str = "ms.cluster.rest";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestRequest {
    /// The asking node (it answers its own part locally).
    pub from: String,
    /// `find`, `find_all` or `terminate`.
    pub op: String,
    pub body: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestReply {
    pub node: String,
    /// find/find_all: stream objects; terminate: the stopped mediaSessionIds.
    pub result: Vec<Value>,
}

/// What a scatter-gather got: the replies and the live peers that did not answer.
#[derive(Debug, Default)]
pub struct Gathered {
    pub replies: Vec<RestReply>,
    pub missing: Vec<String>,
}

/// The peers still owed an answer (sans-IO part of the gather).
pub fn missing(expected: &BTreeSet<String>, replies: &[RestReply]) -> Vec<String> {
    let got: BTreeSet<&str> = replies.iter().map(|r| r.node.as_str()).collect();
    expected
        .iter()
        .filter(|n| !got.contains(n.as_str()))
        .cloned()
        .collect()
}

impl Cluster {
    /// Asks every other live node; `None` when NATS is away (the caller answers local-only).
    pub async fn scatter(&self, op: &str, body: Value) -> Option<Gathered> {
        if !self.connected() {
            return None;
        }
        let expected: BTreeSet<String> = self
            .liveness
            .lock()
            .unwrap()
            .alive(Instant::now())
            .into_iter()
            .collect();
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.ok()?;
        let req = RestRequest {
            from: self.node.clone(),
            op: op.into(),
            body,
        };
        let payload = serde_json::to_vec(&req).ok()?;
        self.client
            .publish_with_reply(REST_SUBJECT, inbox, payload.into())
            .await
            .ok()?;
        let mut out = Gathered::default();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.rpc_timeout_ms);
        while !missing(&expected, &out.replies).is_empty() {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => {
                    if let Ok(r) = serde_json::from_slice::<RestReply>(&m.payload) {
                        if r.node != self.node && !out.replies.iter().any(|x| x.node == r.node) {
                            out.replies.push(r);
                        }
                    }
                }
                _ => break,
            }
        }
        let _ = sub.unsubscribe().await;
        out.missing = missing(&expected, &out.replies);
        if !out.missing.is_empty() {
            tracing::warn!(op, missing = ?out.missing, "cluster call: nodes did not answer in time");
        }
        Some(out)
    }

    /// The requests other nodes send (see [`REST_SUBJECT`]); the caller answers with
    /// [`Cluster::answer`].
    pub async fn rest_requests(&self) -> Option<async_nats::Subscriber> {
        self.client.subscribe(REST_SUBJECT).await.ok()
    }

    pub async fn answer(&self, reply_to: async_nats::Subject, result: Vec<Value>) {
        let r = RestReply {
            node: self.node.clone(),
            result,
        };
        if let Ok(p) = serde_json::to_vec(&r) {
            let _ = self.client.publish(reply_to, p.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_peers_that_did_not_answer() {
        let expected: BTreeSet<String> = ["b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let r = |n: &str| RestReply {
            node: n.into(),
            result: vec![],
        };
        assert_eq!(missing(&expected, &[r("c")]), ["b", "d"]);
        assert!(missing(&expected, &[r("b"), r("c"), r("d"), r("x")]).is_empty());
    }
}
