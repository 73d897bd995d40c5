//! Node liveness: every node publishes a heartbeat on `ms.node.<id>.hb` each
//! `cluster.heartbeat_ms`; a node silent for `cluster.dead_after_ms` is dead, and its peers
//! delete its directory entries with revision-checked deletes (several peers racing: one
//! wins, the rest see "wrong last revision"). NATS 2.9 has no per-key TTL and `max_age`
//! expiry tells watchers nothing, hence heartbeats on a core subject.
//!
//! [`Peers`] is the sans-IO part: who was heard when, and who is dead now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{directory, names, Cluster};

/// Last heartbeat per peer, measured from when this node last (re)connected: right after a
/// reconnect nobody has had a chance to be heard, so everyone gets `dead_after` of grace.
pub struct Peers {
    me: String,
    dead_after: Duration,
    since: Instant,
    seen: HashMap<String, Instant>,
    /// Heard peers already reported dead by [`Peers::newly_dead`].
    reported: std::collections::HashSet<String>,
}

impl Peers {
    pub fn new(me: &str, dead_after: Duration) -> Peers {
        Peers {
            me: me.to_string(),
            dead_after,
            since: Instant::now(),
            seen: HashMap::new(),
            reported: Default::default(),
        }
    }

    pub fn heard(&mut self, node: &str, now: Instant) {
        self.seen.insert(node.to_string(), now);
        self.reported.remove(node);
    }

    /// The peers heard before that died since the last call (each death reported once):
    /// what makes a directory sweep worth its reads.
    pub fn newly_dead(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self
            .seen
            .keys()
            .filter(|n| !self.reported.contains(*n) && self.is_dead(n, now))
            .cloned()
            .collect();
        self.reported.extend(dead.iter().cloned());
        dead
    }

    /// A (re)connect: start every peer's clock again.
    pub fn reset(&mut self, now: Instant) {
        self.since = now;
        self.seen.clear();
        self.reported.clear();
    }

    /// Peers heard from and not dead at `now` (this node excluded).
    pub fn alive(&self, now: Instant) -> Vec<String> {
        self.seen
            .keys()
            .filter(|n| **n != self.me && !self.is_dead(n, now))
            .cloned()
            .collect()
    }

    /// Whether `node` (named in a directory entry) is dead at `now`. This node never is.
    pub fn is_dead(&self, node: &str, now: Instant) -> bool {
        if node == self.me {
            return false;
        }
        let last = self
            .seen
            .get(node)
            .copied()
            .unwrap_or(self.since)
            .max(self.since);
        now.saturating_duration_since(last) > self.dead_after
    }
}

/// Full directory scans, in units of `dead_after_ms`, when no heard peer died.
const RESCAN_DEAD_AFTERS: u32 = 10;

fn hb_subject(node: &str) -> String {
    format!("ms.node.{}.hb", names::encode(node))
}

impl Cluster {
    /// Says "alive" once. Also sent before every claim, so a node that just connected is
    /// heard before any peer can see its entries.
    pub async fn heartbeat(&self) {
        let _ = self
            .client
            .publish(hb_subject(&self.node), self.node.clone().into())
            .await;
    }
}

/// Starts the heartbeat publisher, the heartbeat listener and the sweep.
pub fn spawn(c: Arc<Cluster>) {
    let period = Duration::from_millis(c.cfg.heartbeat_ms.max(50));
    let hb = c.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            // Skipped while disconnected: no backlog of stale heartbeats on reconnect.
            if hb.connected() {
                let _ = tokio::time::timeout(period, hb.heartbeat()).await;
            }
        }
    });
    c.on_each("ms.node.*.hb".into(), "heartbeat", period, |me, m| {
        if let Ok(node) = std::str::from_utf8(&m.payload) {
            me.liveness.lock().unwrap().heard(node, Instant::now());
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A sweep reads every directory entry, so it runs when a heard peer dies, and
        // otherwise every RESCAN_DEAD_AFTERS x dead_after (entries of nodes this node never
        // heard: it started after they died), the first one a grace period after a connect.
        let dead_after = Duration::from_millis(c.cfg.dead_after_ms);
        let rescan = dead_after * RESCAN_DEAD_AFTERS;
        let mut was_connected = false;
        let mut reclaim = false;
        let mut next_full = Instant::now();
        loop {
            tick.tick().await;
            let connected = c.connected();
            let now = Instant::now();
            let event = c
                .connected_event
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            if connected && (!was_connected || event) {
                c.liveness.lock().unwrap().reset(now);
                // The bucket handle may point at a bucket a NATS restart lost.
                *c.streams.lock().unwrap() = None;
                reclaim = true;
                next_full = now + dead_after + period;
            }
            was_connected = connected;
            if !connected {
                continue;
            }
            // JetStream may take a moment after a NATS restart: retry every tick until done.
            if reclaim {
                reclaim = !c.reassert().await;
            }
            let died = c.liveness.lock().unwrap().newly_dead(now);
            if !died.is_empty() {
                c.nodes_died(&died);
            }
            if !died.is_empty() || now >= next_full {
                next_full = now + rescan;
                if let Err(e) = sweep(&c).await {
                    tracing::debug!(error = %e, "directory sweep failed");
                    next_full = now + period;
                }
            }
        }
    });
}

/// Deletes the directory entries of dead nodes.
async fn sweep(c: &Cluster) -> Result<(), String> {
    let store = tokio::time::timeout(c.timeout(), c.store())
        .await
        .map_err(|_| "timeout".to_string())??;
    let entries = tokio::time::timeout(c.timeout() * 4, directory::list(&store))
        .await
        .map_err(|_| "timeout".to_string())??;
    let now = Instant::now();
    let young = directory::now_ms().saturating_sub(c.cfg.dead_after_ms);
    for (name, e, rev) in entries {
        // An entry younger than the dead-after window may belong to a node not heard yet.
        if e.created > young || !c.liveness.lock().unwrap().is_dead(&e.node, now) {
            continue;
        }
        if directory::release(&store, &name, rev).await? {
            tracing::warn!(stream = %name, node = %e.node, "node silent past cluster.dead_after_ms: its stream removed from the directory");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_silence_with_grace_after_reconnect() {
        let t0 = Instant::now();
        let d = Duration::from_millis(2000);
        let mut p = Peers::new("a", d);
        p.reset(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        // Never heard: grace from the (re)connect.
        assert!(!p.is_dead("b", at(1900)));
        assert!(p.is_dead("b", at(2100)));
        p.heard("b", at(2000));
        assert!(!p.is_dead("b", at(3900)));
        assert!(p.is_dead("b", at(4100)));
        assert!(!p.is_dead("a", at(99_000)), "never itself");
        p.heard("a", at(3000));
        assert_eq!(p.alive(at(3500)), ["b"]);
        assert!(p.alive(at(4100)).is_empty());
        // Each death of a heard peer is reported once; hearing it again re-arms it.
        assert_eq!(p.newly_dead(at(4100)), ["b"]);
        assert!(p.newly_dead(at(4200)).is_empty());
        p.heard("b", at(4300));
        assert!(p.newly_dead(at(4400)).is_empty());
        assert_eq!(p.newly_dead(at(6400)), ["b"]);
        // A reconnect restarts every clock.
        p.reset(at(10_000));
        assert!(!p.is_dead("b", at(11_000)));
        assert!(p.is_dead("b", at(12_100)));
    }
}
