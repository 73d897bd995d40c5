//! The stream directory: which node publishes each stream name, in the JetStream KV bucket
//! `ms_streams`. A publish claims its name with a KV create (an update expecting "no value"),
//! which JetStream serialises: of two nodes racing for one name exactly one wins, and the
//! other answers 409 naming the winner. The owner deletes its entry, revision-checked, when
//! the publisher ends; peers delete a dead node's entries the same way (`liveness.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use super::names;

/// Bucket of stream entries (node entries would go in their own bucket: different writers
/// and lifetimes).
pub const STREAMS_BUCKET: &str = "ms_streams";

/// One directory entry (JSON in the KV value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub v: u32,
    /// The origin node's `node_id`.
    pub node: String,
    /// The publisher's mediaSessionId on that node.
    pub msid: String,
    /// Epoch ms of the claim.
    pub created: u64,
    /// What an edge needs to relay the stream; `None` until the publisher exists (the claim
    /// comes before the session is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaDescription>,
}

/// The stream's media as edges see it: never the publisher's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MediaDescription {
    /// The media sections as SDP (codecs, payload types, fmtp, in leg order, no `a=crypto`);
    /// empty when the stream was published without SDP (one leg, codecs unknown).
    pub sdp: String,
    /// H264 SPS/PPS (`sprop-parameter-sets`) when known at publish time; the relay reply
    /// carries the latest.
    pub sprop: Option<String>,
    pub srtp: bool,
    pub webrtc: bool,
    pub app_key: String,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours, at this revision.
    Won(u64),
    /// Another session holds the name (`node` may be this node: a local publisher).
    Taken { node: String },
}

/// The bucket's settings: one value per key, in memory (the directory is soft state; every
/// node's registry is the truth and re-claims after a NATS restart).
pub fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: STREAMS_BUCKET.into(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Claims `name` for publisher `msid` of `node`.
pub async fn claim(store: &kv::Store, name: &str, node: &str, msid: &str) -> Result<Claim, String> {
    let key = names::encode(name);
    let e = DirEntry {
        v: 1,
        node: node.into(),
        msid: msid.into(),
        created: now_ms(),
        media: None,
    };
    let value = serde_json::to_vec(&e).map_err(|e| e.to_string())?;
    match store.create(&key, value.clone().into()).await {
        Ok(rev) => Ok(Claim::Won(rev)),
        Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
            match lookup(store, name).await? {
                // A create that timed out after being applied, retried: it is ours.
                Some((cur, rev)) if cur.node == node && cur.msid == msid => Ok(Claim::Won(rev)),
                Some((cur, _)) => Ok(Claim::Taken { node: cur.node }),
                // Deleted between our create and our read: try once more.
                None => match store.create(&key, value.into()).await {
                    Ok(rev) => Ok(Claim::Won(rev)),
                    Err(err) => Err(format!("claim `{name}`: {err}")),
                },
            }
        }
        Err(err) => Err(format!("claim `{name}`: {err}")),
    }
}

/// Adds the media description to our entry (revision-checked: a swept or replaced entry is
/// left alone). Returns the new revision, or `None` when the entry is no longer ours.
pub async fn describe(
    store: &kv::Store,
    name: &str,
    entry: &DirEntry,
    revision: u64,
) -> Result<Option<u64>, String> {
    let value = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    match store
        .update(names::encode(name), value.into(), revision)
        .await
    {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if format!("{e:?}").contains("WrongLastSequence") => Ok(None),
        Err(e) => Err(format!("describe `{name}`: {e}")),
    }
}

/// The entry of `name` and its revision, if any.
pub async fn lookup(store: &kv::Store, name: &str) -> Result<Option<(DirEntry, u64)>, String> {
    let entry = store
        .entry(names::encode(name))
        .await
        .map_err(|e| format!("directory read `{name}`: {e}"))?;
    Ok(entry.and_then(|en| {
        if en.operation != kv::Operation::Put {
            return None;
        }
        serde_json::from_slice::<DirEntry>(&en.value)
            .ok()
            .map(|d| (d, en.revision))
    }))
}

/// Deletes the entry of `name` if it is still at `revision` (else someone else owns it now
/// and it is left alone).
pub async fn release(store: &kv::Store, name: &str, revision: u64) -> Result<bool, String> {
    match store
        .delete_expect_revision(names::encode(name), Some(revision))
        .await
    {
        Ok(()) => Ok(true),
        // async-nats 0.35 reports a failed revision check only through the publish error
        // it wraps ("wrong last sequence").
        Err(e) if format!("{e:?}").contains("WrongLastSequence") => Ok(false),
        Err(e) => Err(format!("release `{name}`: {e}")),
    }
}

/// Every live entry: (stream name, entry, revision).
pub async fn list(store: &kv::Store) -> Result<Vec<(String, DirEntry, u64)>, String> {
    use futures_util::StreamExt;
    let mut keys = store
        .keys()
        .await
        .map_err(|e| format!("directory keys: {e}"))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Some(name) = names::decode(&k) else {
            continue;
        };
        if let Some((e, rev)) = lookup(store, &name).await? {
            out.push((name, e, rev));
        }
    }
    Ok(out)
}
