//! The REST side of cluster-wide find / find_all / terminate: the asking node merges the
//! other nodes' answers (`rpc.rs`) into its own, and answers theirs with its local part.

use std::sync::Arc;

use hyper::header::HeaderValue;
use serde_json::{json, Value};

use crate::core::ApiError;
use crate::server::{Api, Resp};

impl Api {
    /// Runs `op` on the other nodes too (cluster on): their results after ours, and what the
    /// response must say about nodes that did not answer or a NATS that is away.
    pub(crate) async fn gather(
        &self,
        op: &str,
        body: &[u8],
        mut mine: Vec<Value>,
    ) -> (Vec<Value>, Scope) {
        let Some(c) = &self.cluster else {
            return (mine, Scope::Node);
        };
        let body: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        match c.scatter(op, body).await {
            None => {
                tracing::warn!(
                    op,
                    "NATS unavailable: answering with this node's sessions only"
                );
                (mine, Scope::Local)
            }
            Some(g) => {
                for r in g.replies {
                    mine.extend(r.result);
                }
                (mine, Scope::Cluster(g.missing))
            }
        }
    }

    /// Answers other nodes' cluster-wide find/find_all/terminate with this node's part.
    pub(crate) async fn serve_cluster_rest(self: Arc<Self>, c: Arc<crate::cluster::Cluster>) {
        use futures_util::StreamExt;
        loop {
            let Some(mut sub) = c.rest_requests().await else {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            };
            while let Some(m) = sub.next().await {
                let Ok(req) =
                    serde_json::from_slice::<crate::cluster::rpc::RestRequest>(&m.payload)
                else {
                    continue;
                };
                let Some(reply) = m.reply.clone() else {
                    continue;
                };
                if req.from == c.node {
                    continue;
                }
                let body = req.body.to_string();
                let result = match req.op.as_str() {
                    "find" => self.local_find(body.as_bytes(), false).await,
                    "find_all" => self.local_find(body.as_bytes(), true).await,
                    "terminate" => self.local_terminate(body.as_bytes()),
                    _ => continue,
                };
                // A filter the asking node accepted is valid here too; answer [] otherwise.
                c.answer(reply, result.unwrap_or_default()).await;
            }
        }
    }
}

/// Which sessions a find/terminate reply covers.
pub(crate) enum Scope {
    /// Single node (no cluster).
    Node,
    /// Cluster on but NATS away: this node only.
    Local,
    /// Every node, but for those named (they did not answer in time).
    Cluster(Vec<String>),
}

impl Scope {
    /// Headers saying how complete the result is: `X-Cluster-Scope: local` when NATS is
    /// away, `X-Cluster-Missing: node-b,node-c` when some nodes did not answer.
    pub(crate) fn mark(&self, mut r: Resp) -> Resp {
        let h = r.headers_mut();
        match self {
            Scope::Node => {}
            Scope::Local => {
                h.insert("x-cluster-scope", HeaderValue::from_static("local"));
            }
            Scope::Cluster(missing) if !missing.is_empty() => {
                if let Ok(v) = HeaderValue::from_str(&missing.join(",")) {
                    h.insert("x-cluster-missing", v);
                }
            }
            Scope::Cluster(_) => {}
        }
        r
    }

    /// Nothing matched: 404 only when every node answered.
    pub(crate) fn not_found(&self) -> ApiError {
        match self {
            Scope::Cluster(missing) if !missing.is_empty() => ApiError::new(
                504,
                format!(
                    "Stream not found on the nodes that answered; no answer from {}",
                    missing.join(", ")
                ),
            ),
            Scope::Local => ApiError::new(
                503,
                "Stream not found on this node; NATS unavailable, other nodes not asked",
            ),
            _ => ApiError::new(404, "Stream not found"),
        }
    }
}
