//! The control plane's view of every session: names, ids, statuses, which shard owns it.
//! Pure state (no I/O) so filters and lifecycle rules are unit-testable.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use engine::{SessionId, Status, StreamId};
use serde::Deserialize;
use serde_json::{json, Value};

/// One publisher or player.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub media_session_id: String,
    pub name: String,
    pub published: bool,
    pub status: Status,
    pub info: String,
    pub app_key: String,
    pub create_date: u64,
    pub shard: usize,
    pub port: u16,
    pub stream: StreamId,
    pub remote: Option<SocketAddr>,
    /// Server ports, one per leg (`port` is the first).
    pub ports: Vec<u16>,
    /// Whether any leg is SRTP.
    pub srtp: bool,
    /// Publishers signalled with SDP: the media sections they send.
    pub media: Vec<crate::sdp::MediaSection>,
    /// Publishers: the latest H264 SPS/PPS seen, as `sprop-parameter-sets` (base64).
    pub sprop: Option<String>,
    /// Publishers: the media as WebRTC tracks (what WHEP players can get); empty when the
    /// stream has no browser-compatible codec or was published without SDP.
    pub tracks: Vec<engine::webrtc::TrackInfo>,
    /// Whether this is a WHIP/WHEP session.
    pub webrtc: bool,
    pub has_audio: bool,
    pub has_video: bool,
    pub audio_codec: Option<String>,
    pub video_codec: Option<String>,
    /// The client's signalling session (`sessionId`): see [`session_id_for`].
    pub session_id: String,
    /// This node's `node_id`.
    pub node_id: String,
    /// Publishers: the video size the latest SPS declares.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Per-method hook settings the web server gave this session in its `connect` reply;
    /// they override the app's for this session's later hooks.
    pub rest_client_config: Option<std::sync::Arc<RestClientConfigs>>,
    /// The SDP the client signalled the session with (publish/play offer, WHIP/WHEP offer).
    pub sdp: Option<String>,
    /// Cluster relays (an edge's relay publisher, an upstream node's relay player).
    pub relay: Option<RelayInfo>,
}

/// What makes a session a cluster relay: an ordinary session to the engine, told apart only
/// here (docs/cluster.md, section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// Shared by the two halves of one relay (edge publisher, upstream player).
    pub relay_id: String,
    /// The node at the other end.
    pub peer: String,
    /// The node the stream is published on.
    pub origin: String,
}

/// restClientConfig by hook method name.
pub type RestClientConfigs = std::collections::BTreeMap<String, crate::config::RestClientConfig>;

/// The `sessionId` of a session created by a REST, SDP-file or WHIP/WHEP request: like the
/// reference server's WebSocket session id, `/<client ip:port>/<server ip:port>-<uuid>`,
/// fresh per signalling request (each request is its own client session here).
pub fn session_id_for(client: SocketAddr, server: SocketAddr) -> String {
    format!("/{client}/{server}-{}", uuid::Uuid::new_v4())
}

/// Counters merged in from a shard stats snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub lost: u64,
    pub dropped: u64,
    pub pli_in: u64,
    pub nack_in: u64,
}

impl SessionRecord {
    /// A record with the identifying fields given and everything else empty (a plain RTP
    /// session that has not started, in `defaultApp`); callers set the rest.
    pub fn new(
        id: SessionId,
        media_session_id: &str,
        name: &str,
        published: bool,
        stream: StreamId,
    ) -> SessionRecord {
        SessionRecord {
            id,
            media_session_id: media_session_id.to_string(),
            name: name.to_string(),
            published,
            status: Status::Pending,
            info: String::new(),
            app_key: "defaultApp".into(),
            create_date: 0,
            shard: 0,
            port: 0,
            stream,
            remote: None,
            ports: vec![0],
            srtp: false,
            media: Vec::new(),
            sprop: None,
            tracks: Vec::new(),
            webrtc: false,
            has_audio: false,
            has_video: false,
            audio_codec: None,
            video_codec: None,
            session_id: String::new(),
            node_id: String::new(),
            width: None,
            height: None,
            rest_client_config: None,
            sdp: None,
            relay: None,
        }
    }

    /// `mediaProvider`: the transport the session uses.
    pub fn media_provider(&self) -> &'static str {
        if self.webrtc {
            "WebRTC"
        } else if self.srtp {
            "SRTP"
        } else {
            "RTP"
        }
    }

    /// The stream object as the REST API returns it.
    pub fn to_json(&self, c: Option<&Counters>, metrics: bool) -> Value {
        let c = c.copied().unwrap_or_default();
        let mut v = json!({
            "nodeId": self.node_id,
            "sessionId": self.session_id,
            "mediaSessionId": self.media_session_id,
            "name": self.name,
            "published": self.published,
            "status": self.status.as_str(),
            "info": self.info,
            "appKey": self.app_key,
            "createDate": self.create_date,
            "mediaType": if self.published { "publish" } else { "play" },
            "hasAudio": self.has_audio,
            "hasVideo": self.has_video,
            "audioCodec": self.audio_codec,
            "videoCodec": self.video_codec,
            "mediaProvider": self.media_provider(),
            "remoteAddress": self.remote.map(|a| a.to_string()),
            "serverPort": self.port,
            "serverPorts": self.ports,
            "srtp": self.srtp,
            "webrtc": self.webrtc,
            "shard": self.shard,
            "packetsIn": c.packets_in,
            "bytesIn": c.bytes_in,
            "packetsOut": c.packets_out,
            "bytesOut": c.bytes_out,
            "lost": c.lost,
        });
        if let Some(s) = &self.sdp {
            v["sdp"] = json!(s);
        }
        if let Some(r) = &self.relay {
            v["relay"] = json!(true);
            v["relayPeer"] = json!(r.peer);
            v["originNode"] = json!(r.origin);
        }
        if let (Some(w), Some(h)) = (self.width, self.height) {
            v["width"] = json!(w);
            v["height"] = json!(h);
        }
        if metrics {
            v["metrics"] = json!({
                "VIDEO_CODEC": self.video_codec,
                "AUDIO_CODEC": self.audio_codec,
                "PACKETS_IN": c.packets_in,
                "PACKETS_OUT": c.packets_out,
                "BYTES_IN": c.bytes_in,
                "BYTES_OUT": c.bytes_out,
                "LOST": c.lost,
                "DROPPED": c.dropped,
                "VIDEO_PLI": c.pli_in,
                "VIDEO_NACK": c.nack_in,
            });
        }
        v
    }
}

/// A stream filter (find / terminate). All given fields must match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterBody {
    pub name: Option<String>,
    /// A boolean, or (as clients of the reference server send it) "true"/"false".
    #[serde(default, deserialize_with = "lenient_bool")]
    pub published: Option<bool>,
    pub session_id: Option<String>,
    pub status: Option<String>,
    pub media_session_id: Option<String>,
    pub media_session_ids: Option<Vec<String>>,
    /// Terminate only: an empty filter must say `"all": true` to stop everything.
    pub all: Option<bool>,
    pub display: Option<Vec<String>>,
    /// Accepted for compatibility (the reference server's session id); matches nothing extra.
    pub app_key: Option<String>,
    /// Cluster relays: `true` = only relays, `false` = none; absent = see [`RelayMatch`].
    pub relay: Option<bool>,
}

/// `published` as the reference server takes it: a boolean or "true"/"false".
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Bool(bool),
        Text(String),
    }
    match Option::<Form>::deserialize(d)? {
        None => Ok(None),
        Some(Form::Bool(b)) => Ok(Some(b)),
        Some(Form::Text(s)) => match s.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "field `published`: invalid value `{s}`, expected true or false (boolean or string)"
            ))),
        },
    }
}

/// Which cluster relay sessions a filter can match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayMatch {
    /// Relays are infrastructure: a filter by name, published, status, sessionId or appKey
    /// skips them; one naming them by mediaSessionId, or no field at all (find_all,
    /// `{"all": true}`), matches them.
    #[default]
    Default,
    /// `"relay": true`.
    Only,
    /// `"relay": false`.
    Exclude,
    /// Relays like any other session (the publisher-ended rule).
    Any,
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub name: Option<String>,
    pub published: Option<bool>,
    pub status: Option<Status>,
    pub session_id: Option<String>,
    pub media_session_ids: Option<BTreeSet<String>>,
    pub app_key: Option<String>,
    pub all: bool,
    pub metrics: bool,
    pub relay: RelayMatch,
}

impl Filter {
    /// Validates a body. Errors name the offending field.
    pub fn from_body(b: FilterBody) -> Result<Filter, String> {
        let status = match b.status {
            None => None,
            Some(s) => Some(Status::parse(&s).ok_or_else(|| {
                format!(
                    "field `status`: unknown status `{s}` (expected one of {})",
                    Status::ALL.map(|s| s.as_str()).join(", ")
                )
            })?),
        };
        let mut ids: Option<BTreeSet<String>> = None;
        if let Some(v) = b.media_session_ids {
            if v.is_empty() {
                return Err("field `mediaSessionIds`: must not be empty".into());
            }
            ids = Some(v.into_iter().collect());
        }
        if let Some(one) = b.media_session_id {
            // Both given: AND means the single id must also be in the list.
            ids = Some(match ids {
                None => [one].into_iter().collect(),
                Some(set) => set.into_iter().filter(|x| *x == one).collect(),
            });
        }
        let metrics = match b.display {
            None => false,
            Some(d) => {
                if let Some(bad) = d.iter().find(|x| x.as_str() != "metrics") {
                    return Err(format!(
                        "field `display`: unknown value `{bad}` (expected \"metrics\")"
                    ));
                }
                !d.is_empty()
            }
        };
        Ok(Filter {
            name: b.name,
            published: b.published,
            status,
            session_id: b.session_id,
            media_session_ids: ids,
            app_key: b.app_key,
            all: b.all.unwrap_or(false),
            metrics,
            relay: match b.relay {
                None => RelayMatch::Default,
                Some(true) => RelayMatch::Only,
                Some(false) => RelayMatch::Exclude,
            },
        })
    }

    /// True when no field restricts the match.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.published.is_none()
            && self.status.is_none()
            && self.session_id.is_none()
            && self.media_session_ids.is_none()
            && self.app_key.is_none()
            && matches!(self.relay, RelayMatch::Default | RelayMatch::Any)
    }

    pub fn matches(&self, r: &SessionRecord) -> bool {
        let relay_ok = match self.relay {
            RelayMatch::Any => true,
            RelayMatch::Only => r.relay.is_some(),
            RelayMatch::Exclude => r.relay.is_none(),
            RelayMatch::Default => {
                r.relay.is_none() || self.media_session_ids.is_some() || self.is_empty()
            }
        };
        relay_ok
            && self.name.as_ref().is_none_or(|n| *n == r.name)
            && self.published.is_none_or(|p| p == r.published)
            && self.status.is_none_or(|s| s == r.status)
            && self.session_id.as_ref().is_none_or(|s| *s == r.session_id)
            && self.app_key.as_ref().is_none_or(|a| *a == r.app_key)
            && self
                .media_session_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&r.media_session_id))
    }
}

#[derive(Debug, Default)]
struct StreamEntry {
    id: StreamId,
    publisher: Option<SessionId>,
    players: BTreeSet<SessionId>,
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    NameInUse,
    TooManySessions,
    TooManyPlayers,
}

/// What the shards must be told after a stream's membership changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub stream: StreamId,
    pub publisher_shard: Option<usize>,
    /// Shards holding at least one player.
    pub player_shards: BTreeSet<usize>,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: HashMap<SessionId, SessionRecord>,
    by_msid: HashMap<String, SessionId>,
    streams: HashMap<String, StreamEntry>,
    next_session: SessionId,
    next_stream: StreamId,
    max_sessions: usize,
    max_players: usize,
}

impl Registry {
    pub fn new(max_sessions: usize, max_players: usize) -> Self {
        Self {
            max_sessions,
            max_players,
            next_session: 1,
            next_stream: 1,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Checks limits and reserves ids for a new session of `name`. Returns (session, stream).
    pub fn reserve(
        &mut self,
        name: &str,
        published: bool,
    ) -> Result<(SessionId, StreamId), CreateError> {
        if self.sessions.len() >= self.max_sessions {
            return Err(CreateError::TooManySessions);
        }
        if let Some(e) = self.streams.get(name) {
            if published && e.publisher.is_some() {
                return Err(CreateError::NameInUse);
            }
            if !published && e.players.len() >= self.max_players {
                return Err(CreateError::TooManyPlayers);
            }
        }
        let sid = self.next_session;
        self.next_session += 1;
        let stream = match self.streams.get(name) {
            Some(e) => e.id,
            None => {
                let id = self.next_stream;
                self.next_stream += 1;
                self.streams.insert(
                    name.to_string(),
                    StreamEntry {
                        id,
                        ..Default::default()
                    },
                );
                id
            }
        };
        Ok((sid, stream))
    }

    /// Drops a stream entry created by `reserve` when creating the session failed afterwards.
    pub fn unreserve(&mut self, name: &str) {
        if self
            .streams
            .get(name)
            .is_some_and(|e| e.publisher.is_none() && e.players.is_empty())
        {
            self.streams.remove(name);
        }
    }

    pub fn insert(&mut self, r: SessionRecord) -> Topology {
        let e = self.streams.get_mut(&r.name).expect("reserved stream");
        if r.published {
            e.publisher = Some(r.id);
        } else {
            e.players.insert(r.id);
        }
        self.by_msid.insert(r.media_session_id.clone(), r.id);
        let name = r.name.clone();
        self.sessions.insert(r.id, r);
        self.topology(&name).expect("stream exists")
    }

    /// The shard a new session of stream `name` should go to, or None (no rule applies: the
    /// caller spreads sessions round robin). A stream is kept on one shard while it is
    /// small: each shard that holds some of its players costs a cross-core hop and wake-up
    /// per packet, which for a small stream costs more than the sends it spreads (about 2x
    /// CPU per delivered packet here for 100 players at 1,000 pps). So a player goes to the
    /// publisher's shard until `cap` of the stream's players are there, then to the shard
    /// with the fewest of them; a publisher goes where most of its waiting players are.
    /// `cap == 0`: no rule.
    pub fn place(&self, name: &str, published: bool, shards: usize, cap: usize) -> Option<usize> {
        let e = self.streams.get(name)?;
        if cap == 0 || shards < 2 {
            return None;
        }
        let mut per = vec![0usize; shards];
        for r in e.players.iter().filter_map(|p| self.sessions.get(p)) {
            if let Some(n) = per.get_mut(r.shard) {
                *n += 1;
            }
        }
        let most = (0..shards).max_by_key(|&s| (per[s], std::cmp::Reverse(s)));
        let fewest = (0..shards).min_by_key(|&s| (per[s], s));
        if published {
            return most.filter(|&s| per[s] > 0);
        }
        let home = e
            .publisher
            .and_then(|p| self.sessions.get(&p))
            .map(|r| r.shard)
            .or(most.filter(|&s| per[s] > 0));
        match home {
            Some(h) if h < shards && per[h] < cap => Some(h),
            Some(_) => fewest,
            None => None,
        }
    }

    pub fn topology(&self, name: &str) -> Option<Topology> {
        let e = self.streams.get(name)?;
        Some(Topology {
            stream: e.id,
            publisher_shard: e
                .publisher
                .and_then(|p| self.sessions.get(&p))
                .map(|r| r.shard),
            player_shards: e
                .players
                .iter()
                .filter_map(|p| self.sessions.get(p))
                .map(|r| r.shard)
                .collect(),
        })
    }

    /// Removes a session; returns it and the stream's new topology (None if the stream is gone).
    pub fn remove(&mut self, id: SessionId) -> Option<(SessionRecord, Topology)> {
        let r = self.sessions.remove(&id)?;
        self.by_msid.remove(&r.media_session_id);
        let e = self.streams.get_mut(&r.name).expect("stream of a session");
        if e.publisher == Some(id) {
            e.publisher = None;
        }
        e.players.remove(&id);
        let topo = self.topology(&r.name).expect("stream exists");
        let e = &self.streams[&r.name];
        if e.publisher.is_none() && e.players.is_empty() {
            self.streams.remove(&r.name);
        }
        Some((r, topo))
    }

    /// The publisher of stream `name`, if it has one.
    pub fn publisher_of(&self, name: &str) -> Option<&SessionRecord> {
        self.streams
            .get(name)
            .and_then(|e| e.publisher)
            .and_then(|p| self.sessions.get(&p))
    }

    pub fn get(&self, id: SessionId) -> Option<&SessionRecord> {
        self.sessions.get(&id)
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut SessionRecord> {
        self.sessions.get_mut(&id)
    }

    pub fn by_media_session_id(&self, msid: &str) -> Option<&SessionRecord> {
        self.by_msid.get(msid).and_then(|id| self.sessions.get(id))
    }

    /// Matching sessions, oldest first.
    pub fn find(&self, f: &Filter) -> Vec<&SessionRecord> {
        let mut v: Vec<_> = self.sessions.values().filter(|r| f.matches(r)).collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Players of stream `name` (relay players toward other nodes included).
    pub fn player_count(&self, name: &str) -> usize {
        self.streams.get(name).map_or(0, |e| e.players.len())
    }

    pub fn per_shard(&self, shards: usize) -> Vec<usize> {
        let mut v = vec![0; shards];
        for r in self.sessions.values() {
            if r.shard < shards {
                v[r.shard] += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(reg: &mut Registry, name: &str, published: bool, shard: usize) -> SessionRecord {
        let (id, stream) = reg.reserve(name, published).unwrap();
        let mut r = SessionRecord::new(id, &format!("m{id}"), name, published, stream);
        r.status = if published {
            Status::Publishing
        } else {
            Status::Playing
        };
        r.shard = shard;
        reg.insert(r.clone());
        r
    }

    fn filter(j: &str) -> Result<Filter, String> {
        let b: FilterBody = serde_json::from_str(j).map_err(|e| e.to_string())?;
        Filter::from_body(b)
    }

    #[test]
    fn filters_and_together() {
        let mut reg = Registry::new(100, 100);
        rec(&mut reg, "s1", true, 0);
        rec(&mut reg, "s1", false, 1);
        rec(&mut reg, "s1", false, 0);
        rec(&mut reg, "s2", true, 1);
        rec(&mut reg, "s2", false, 1);
        let n = |j: &str| reg.find(&filter(j).unwrap()).len();
        assert_eq!(n("{}"), 5);
        assert_eq!(n(r#"{"published":false}"#), 3);
        assert_eq!(n(r#"{"name":"s1","published":false}"#), 2);
        assert_eq!(n(r#"{"name":"s1","status":"PUBLISHING"}"#), 1);
        assert_eq!(n(r#"{"mediaSessionIds":["m1","m4","zz"]}"#), 2);
        assert_eq!(
            n(r#"{"mediaSessionIds":["m1","m4"],"mediaSessionId":"m4"}"#),
            1
        );
        assert_eq!(n(r#"{"name":"s3"}"#), 0);
        // The reference server's lenient forms and its other status names.
        assert_eq!(n(r#"{"published":"false"}"#), 3);
        assert_eq!(n(r#"{"published":"true","name":"s2"}"#), 1);
        for s in [
            "UNPUBLISHED",
            "PAUSED",
            "PLAYBACK_PROBLEM",
            "NOT_ENOUGH_BANDWIDTH",
        ] {
            assert_eq!(n(&format!(r#"{{"status":"{s}"}}"#)), 0, "{s}");
        }
    }

    #[test]
    fn a_small_stream_stays_on_its_publishers_shard_then_spills() {
        let mut reg = Registry::new(100, 100);
        assert_eq!(
            reg.place("s", false, 2, 3),
            None,
            "unknown stream: round robin"
        );
        // Players waiting for a publisher: together; the publisher joins them.
        rec(&mut reg, "s", false, 1);
        assert_eq!(reg.place("s", false, 2, 3), Some(1));
        assert_eq!(reg.place("s", true, 2, 3), Some(1));
        rec(&mut reg, "s", true, 1);
        rec(&mut reg, "s", false, 1);
        assert_eq!(
            reg.place("s", false, 2, 3),
            Some(1),
            "2 of 3 on the home shard"
        );
        rec(&mut reg, "s", false, 1);
        // Full at home: the shard with fewest of the stream's players, then evenly.
        let mut got = Vec::new();
        for _ in 0..4 {
            let s = reg.place("s", false, 3, 3).unwrap();
            got.push(s);
            rec(&mut reg, "s", false, s);
        }
        assert_eq!(got, vec![0, 2, 0, 2]);
        assert_eq!(reg.place("s", false, 2, 0), None, "cap 0: no rule");
        assert_eq!(
            reg.place("s", false, 1, 3),
            None,
            "one shard: nothing to choose"
        );
    }

    #[test]
    fn relays_skipped_unless_asked_for() {
        let mut reg = Registry::new(100, 100);
        rec(&mut reg, "s1", true, 0);
        rec(&mut reg, "s1", false, 0);
        let (id, stream) = reg.reserve("s1", false).unwrap();
        let mut r = SessionRecord::new(id, "relay-p", "s1", false, stream);
        r.status = Status::Playing;
        r.relay = Some(RelayInfo {
            relay_id: "r1".into(),
            peer: "b".into(),
            origin: "a".into(),
        });
        reg.insert(r);
        let n = |j: &str| reg.find(&filter(j).unwrap()).len();
        assert_eq!(n("{}"), 3, "find_all lists relays");
        assert_eq!(n(r#"{"name":"s1"}"#), 2);
        assert_eq!(n(r#"{"name":"s1","published":false}"#), 1);
        assert_eq!(n(r#"{"status":"PLAYING"}"#), 1);
        assert_eq!(n(r#"{"name":"s1","relay":true}"#), 1);
        assert_eq!(n(r#"{"relay":false}"#), 2);
        assert_eq!(n(r#"{"mediaSessionId":"relay-p"}"#), 1);
        assert!(!filter(r#"{"relay":true}"#).unwrap().is_empty());
        let any = Filter {
            name: Some("s1".into()),
            published: Some(false),
            relay: RelayMatch::Any,
            ..Default::default()
        };
        assert_eq!(reg.find(&any).len(), 2);
        let j = reg
            .by_media_session_id("relay-p")
            .unwrap()
            .to_json(None, false);
        assert_eq!(j["relay"], true);
        assert_eq!(j["relayPeer"], "b");
        assert_eq!(j["originNode"], "a");
        assert!(reg.by_media_session_id("m1").unwrap().to_json(None, false)["relay"].is_null());
        assert_eq!(reg.player_count("s1"), 2);
    }

    #[test]
    fn session_id_filter() {
        let mut reg = Registry::new(100, 100);
        let (id, stream) = reg.reserve("s1", true).unwrap();
        let mut r = SessionRecord::new(id, "m1", "s1", true, stream);
        r.session_id = "/1.2.3.4:5/6.7.8.9:10-abc".into();
        reg.insert(r);
        let (id, stream) = reg.reserve("s1", false).unwrap();
        reg.insert(SessionRecord::new(id, "m2", "s1", false, stream));
        let f = filter(r#"{"sessionId":"/1.2.3.4:5/6.7.8.9:10-abc"}"#).unwrap();
        assert!(!f.is_empty());
        let hits = reg.find(&f);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].media_session_id, "m1");
    }

    #[test]
    fn bad_filters_name_the_field() {
        assert!(filter(r#"{"status":"DANCING"}"#)
            .unwrap_err()
            .contains("status"));
        assert!(filter(r#"{"published":"yes"}"#)
            .unwrap_err()
            .contains("published"));
        assert!(filter(r#"{"published":3}"#).is_err());
        assert!(filter(r#"{"nmae":"s1"}"#).unwrap_err().contains("nmae"));
        assert!(filter(r#"{"mediaSessionIds":[]}"#)
            .unwrap_err()
            .contains("mediaSessionIds"));
        assert!(filter(r#"{"display":["x"]}"#)
            .unwrap_err()
            .contains("display"));
        assert!(filter("{}").unwrap().is_empty());
    }

    #[test]
    fn name_in_use_and_reuse_after_removal() {
        let mut reg = Registry::new(100, 1);
        let p = rec(&mut reg, "s1", true, 0);
        assert_eq!(reg.reserve("s1", true), Err(CreateError::NameInUse));
        rec(&mut reg, "s1", false, 1);
        assert_eq!(reg.reserve("s1", false), Err(CreateError::TooManyPlayers));
        let (_, topo) = reg.remove(p.id).unwrap();
        assert_eq!(topo.publisher_shard, None);
        assert_eq!(topo.player_shards, [1].into_iter().collect());
        assert!(reg.reserve("s1", true).is_ok());
    }

    #[test]
    fn stream_entry_goes_away_with_last_session() {
        let mut reg = Registry::new(100, 100);
        let p = rec(&mut reg, "s1", true, 0);
        let q = rec(&mut reg, "s1", false, 1);
        reg.remove(p.id);
        reg.remove(q.id);
        assert!(reg.topology("s1").is_none());
        assert!(reg.is_empty());
    }
}
