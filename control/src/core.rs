//! Glue between the REST API and the engine: creates sessions (binding their sockets here so
//! errors reach the caller), keeps the registry, tells shards about routes, applies events.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use engine::srtp::SrtpContext;
use engine::webrtc::{WebRtcConfig, WebRtcRole, WebRtcSession};
use engine::{
    Command, Engine, EngineConfig, Event, NewLeg, NewSession, Role, SessionId, Status, StreamId,
    Timeouts,
};

use crate::apps::Apps;
use crate::config::Config;
use crate::registry::{
    Counters, CreateError, Filter, Registry, RelayInfo, RelayMatch, RestClientConfigs,
    SessionRecord, Topology,
};
use crate::sdp::MediaSection;
use crate::signal::LegSpec;

/// An error for the REST caller: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What a caller asks for when creating a session.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub published: bool,
    pub app_key: String,
    /// Players: where to send. Publishers: expected source (None = first packet latches).
    pub peer: Option<SocketAddr>,
    pub shard: Option<usize>,
    pub has_audio: bool,
    pub has_video: bool,
    pub audio_codec: Option<String>,
    pub video_codec: Option<String>,
    /// Pre-assigned mediaSessionId (hooks see it before the session exists).
    pub media_session_id: Option<String>,
    /// One per socket (SDP-signalled sessions); empty = one plain leg to/from `peer`.
    pub legs: Vec<LegSpec>,
    /// Publishers signalled with SDP: the media they send, for players' SDP.
    pub media: Vec<MediaSection>,
    /// A WHIP/WHEP session: the browser's SDP offer (one leg; ICE, DTLS, SRTP by str0m).
    pub webrtc_offer: Option<String>,
    /// The client's signalling session (`sessionId`).
    pub session_id: String,
    /// Hook settings from the web server's `connect` reply, for this session's later hooks.
    pub rest_client_config: Option<Arc<RestClientConfigs>>,
    /// The client's SDP (the stream object's `sdp`).
    pub sdp: Option<String>,
    /// A cluster relay half (created by `cluster/relay.rs`, never by a client).
    pub relay: Option<RelayInfo>,
}

/// Shard-side facts about a live session, from a stats snapshot.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub counters: HashMap<SessionId, Counters>,
    /// Sessions still present on each shard (including ones being torn down).
    pub per_shard: Vec<usize>,
    pub shard_counters: Vec<engine::ShardCounters>,
}

/// A stream name: 1..=256 bytes of printable characters, no `/` (names appear in URL paths,
/// file names of recordings-to-be and NATS keys) and no control characters (NUL included).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let why = if name.is_empty() || name.len() > 256 {
        "must be 1..=256 bytes"
    } else if name.contains('/') {
        "must not contain `/`"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters (NUL, newline, ...)"
    } else {
        return Ok(());
    };
    Err(ApiError::new(400, format!("field `name`: {why}")))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct Core {
    pub cfg: Config,
    /// Hook and REST figures (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    pub apps: Mutex<Apps>,
    /// Held across an admin change to the apps and its write to the state file, so changes
    /// are persisted in the order they are applied (the `apps` lock is not held during I/O).
    apps_write: Mutex<()>,
    /// The DTLS certificate and codec preferences all WebRTC sessions share.
    webrtc: WebRtcConfig,
    engine: Engine,
    reg: Mutex<Registry>,
    ports: Mutex<crate::ports::PortPool>,
    /// SIGTERM: no new sessions; `/ready` says 503.
    draining: std::sync::atomic::AtomicBool,
    /// Last topology sent per stream, so changes only touch the shards concerned.
    topo: Mutex<HashMap<StreamId, Topology>>,
    /// Sessions stopped by control whose shard has not yet released them.
    stopping: Mutex<HashMap<SessionId, SessionRecord>>,
    rr: AtomicUsize,
    listeners: Mutex<Vec<Listener>>,
}

/// Why an admin change to the apps was refused.
#[derive(Debug)]
pub enum AppsEditError {
    /// The change itself is wrong (unknown app, bad URL or method, ...).
    Invalid(String),
    /// The state file could not be written; nothing changed.
    Persist(String),
}

/// Receives status changes; returns false to unsubscribe.
pub type Listener = Box<dyn Fn(&StatusChange) -> bool + Send>;

/// A status change, for hooks and observers.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub record: SessionRecord,
    pub status: Status,
    pub info: String,
    /// The session's counters when the status changed (its final figures on a stop).
    pub counters: Counters,
}

/// Info of players stopped because their publisher stopped, as the reference server words it.
pub const PUBLISHER_STOP_INFO: &str = "Stopped by publisher stop";

/// A publisher that ended normally is UNPUBLISHED (the reference server's word); a player
/// STOPPED. Failures stay FAILED.
fn final_status(published: bool, status: Status) -> Status {
    match status {
        Status::Stopped | Status::Unpublished if published => Status::Unpublished,
        Status::Unpublished => Status::Stopped,
        s => s,
    }
}

fn counters_of(c: &engine::SessionCounters) -> Counters {
    Counters {
        packets_in: c.packets_in,
        bytes_in: c.bytes_in,
        packets_out: c.packets_out,
        bytes_out: c.bytes_out,
        lost: c.lost,
        dropped: c.dropped,
        pli_in: c.pli_in,
        nack_in: c.nack_in,
    }
}

impl Core {
    pub fn start(cfg: Config) -> std::io::Result<Arc<Core>> {
        // `[[apps]]` overlaid with the runtime state file; see `apps::effective` for the rule.
        let apps = crate::apps::effective(&cfg.apps, &cfg.apps_state_path())
            .map_err(std::io::Error::other)?;
        let engine = Engine::start(EngineConfig {
            shards: cfg.media.shards,
            pin: cfg.media.pin_cores,
            shard: engine::ShardConfig {
                nack_rate_per_player: cfg.media.nack_rate_per_player,
                gso: cfg.media.gso,
                connect_players: cfg.media.connect_players,
                gro: cfg.media.gro,
                max_queue: std::time::Duration::from_millis(cfg.media.max_queue_ms),
                ..Default::default()
            },
            ..Default::default()
        })?;
        let events = engine.events().clone();
        let mut webrtc = WebRtcConfig::new().map_err(std::io::Error::other)?;
        webrtc.connect_timeout = std::time::Duration::from_millis(cfg.webrtc.connect_timeout_ms);
        webrtc.protect_in_place = cfg.webrtc.protect_in_place;
        let core = Arc::new(Core {
            apps: Mutex::new(apps),
            apps_write: Mutex::new(()),
            metrics: Default::default(),
            reg: Mutex::new(Registry::new(
                cfg.media.max_sessions,
                cfg.media.max_players_per_stream,
            )),
            ports: Mutex::new(crate::ports::PortPool::new(
                cfg.media.port_min,
                cfg.media.port_max,
            )),
            draining: Default::default(),
            cfg,
            webrtc,
            engine,
            topo: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            listeners: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&core);
        std::thread::Builder::new()
            .name("engine-events".into())
            .spawn(move || event_loop(weak, events))?;
        Ok(core)
    }

    /// Applies an admin change to the apps. The changed set is first written to the state
    /// file (`<data_dir>/apps.json`) and only then takes effect; when writing fails nothing
    /// changes and the error names the file.
    pub fn edit_apps<T>(
        &self,
        change: impl FnOnce(&mut Apps) -> Result<T, String>,
    ) -> Result<T, AppsEditError> {
        let _order = self.apps_write.lock().unwrap();
        let mut next = self.apps.lock().unwrap().clone();
        let out = change(&mut next).map_err(AppsEditError::Invalid)?;
        crate::apps::save(&next, &self.cfg.apps_state_path())
            .map_err(|e| AppsEditError::Persist(format!("{e}; the change was not applied")))?;
        *self.apps.lock().unwrap() = next;
        Ok(out)
    }

    pub fn shard_count(&self) -> usize {
        self.engine.shard_count()
    }

    /// Subscribes to status changes (hooks, tests).
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<StatusChange> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.listen(Box::new(move |c| tx.send(c.clone()).is_ok()));
        rx
    }

    /// Status changes for a task on the control runtime (hooks, the cluster directory).
    pub fn subscribe_async(&self) -> tokio::sync::mpsc::UnboundedReceiver<StatusChange> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.listen(Box::new(move |c| tx.send(c.clone()).is_ok()));
        rx
    }

    /// Registers a status-change callback (called on the engine-events thread; keep it short).
    pub fn listen(&self, l: Listener) {
        self.listeners.lock().unwrap().push(l);
    }

    fn notify(&self, record: &SessionRecord, status: Status, info: &str, counters: Counters) {
        let change = StatusChange {
            record: record.clone(),
            status,
            info: info.to_string(),
            counters,
        };
        self.listeners.lock().unwrap().retain(|l| l(&change));
    }

    /// Creates a publisher or player session; returns its record and, for WebRTC, the answer.
    pub fn create(&self, req: CreateRequest) -> Result<(SessionRecord, Option<String>), ApiError> {
        check_name(&req.name)?;
        if self.is_draining() {
            return Err(ApiError::new(503, "server is shutting down"));
        }
        if self.apps.lock().unwrap().get(&req.app_key).is_none() {
            return Err(ApiError::new(
                400,
                format!("field `appKey`: app `{}` not found", req.app_key),
            ));
        }
        let n = self.shard_count();
        if let Some(s) = req.shard {
            if s >= n {
                return Err(ApiError::new(400, format!("field `shard`: must be < {n}")));
            }
        }
        let (id, stream) = {
            let mut reg = self.reg.lock().unwrap();
            reg.reserve(&req.name, req.published).map_err(|e| match e {
                CreateError::NameInUse => ApiError::new(409, "Stream name is already in use"),
                CreateError::TooManySessions => {
                    ApiError::new(503, "session limit reached (media.max_sessions)")
                }
                CreateError::TooManyPlayers => ApiError::new(
                    503,
                    "player limit of this stream reached (media.max_players_per_stream)",
                ),
            })?
        };
        let specs = if req.legs.is_empty() {
            vec![LegSpec {
                peer: req.peer,
                ..Default::default()
            }]
        } else {
            req.legs.clone()
        };
        let legs = match self.bind_legs(&specs, req.published) {
            Ok(l) => l,
            Err(e) => {
                self.reg.lock().unwrap().unreserve(&req.name);
                return Err(e);
            }
        };
        let ports: Vec<u16> = legs
            .iter()
            .map(|l| l.socket.local_addr().map(|a| a.port()).unwrap_or(0))
            .collect();
        let port = ports[0];
        // WebRTC: answer the offer now that the socket (the ICE host candidate) exists.
        let mut rtc = None;
        let mut tracks = Vec::new();
        let mut media = req.media.clone();
        if let Some(offer) = &req.webrtc_offer {
            let (role, want) = if req.published {
                (WebRtcRole::Publish, Vec::new())
            } else {
                let tracks = self
                    .publisher_of(&req.name)
                    .map(|p| p.tracks)
                    .unwrap_or_default();
                (WebRtcRole::Play, tracks)
            };
            let local = SocketAddr::new(self.cfg.media.public_ip, port);
            match WebRtcSession::accept_offer(
                &self.webrtc,
                role,
                offer,
                local,
                std::time::Instant::now(),
                &want,
            ) {
                Ok((session, answer)) => {
                    if req.published {
                        tracks = session.tracks().to_vec();
                        media = crate::signal::media_from_tracks(&tracks);
                    }
                    rtc = Some((Box::new(session), answer));
                }
                Err(e) => {
                    drop(legs);
                    self.reg.lock().unwrap().unreserve(&req.name);
                    return Err(ApiError::new(400, format!("WebRTC offer: {e}")));
                }
            }
        } else if req.published {
            tracks = crate::signal::tracks_from_media(&media);
        }
        let (rtc_session, answer) = rtc.map_or((None, None), |(s, a)| (Some(s), Some(a)));
        let (mut has_audio, mut has_video) = (req.has_audio, req.has_video);
        let (mut audio_codec, mut video_codec) = (req.audio_codec.clone(), req.video_codec.clone());
        if req.webrtc_offer.is_some() {
            let (a, v, ac, vc) = crate::signal::codecs(&media);
            (has_audio, has_video) = (a, v);
            (audio_codec, video_codec) = (ac, vc);
        }
        let placed = || {
            let cap = self.cfg.media.stream_shard_players;
            let reg = self.reg.lock().unwrap();
            reg.place(&req.name, req.published, n, cap)
        };
        let shard = req
            .shard
            .or_else(placed)
            .unwrap_or_else(|| self.rr.fetch_add(1, Ordering::Relaxed) % n);
        let record = SessionRecord {
            id,
            media_session_id: req
                .media_session_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            name: req.name.clone(),
            published: req.published,
            status: Status::Pending,
            info: String::new(),
            app_key: req.app_key.clone(),
            create_date: now_ms(),
            shard,
            port,
            stream,
            remote: req.peer.or(specs[0].peer),
            ports,
            srtp: specs
                .iter()
                .any(|l| l.srtp_in.is_some() || l.srtp_out.is_some()),
            media,
            tracks,
            webrtc: rtc_session.is_some(),
            sprop: None,
            has_audio,
            has_video,
            audio_codec,
            video_codec,
            session_id: req.session_id.clone(),
            node_id: self.cfg.node_id.clone(),
            width: None,
            height: None,
            rest_client_config: req.rest_client_config.clone(),
            sdp: req.sdp.clone().or_else(|| req.webrtc_offer.clone()),
            relay: req.relay.clone(),
        };
        // Registry first, then the shard: an early event then finds its record.
        let topo = self.reg.lock().unwrap().insert(record.clone());
        self.engine.send(
            shard,
            Command::AddSession(NewSession {
                id,
                stream,
                role: if req.published {
                    Role::Publisher
                } else {
                    Role::Player
                },
                legs,
                webrtc: rtc_session,
                timeouts: if req.published {
                    self.publisher_timeouts()
                } else {
                    Timeouts::default()
                },
                serve_first: !req.published && req.relay.is_some(),
            }),
        );
        self.apply_topology(topo);
        tracing::info!(
            id = %record.media_session_id, name = %record.name, published = record.published,
            shard, port, "session created"
        );
        self.notify(&record, Status::Pending, "", Counters::default());
        Ok((record, answer))
    }

    /// A publisher's media deadlines from `media.*_timeout_ms` (0 = off).
    fn publisher_timeouts(&self) -> Timeouts {
        let ms = |v: u64| (v > 0).then(|| std::time::Duration::from_millis(v));
        Timeouts {
            rtp_activity: ms(self.cfg.media.rtp_activity_timeout_ms),
            pending: ms(self.cfg.media.pending_timeout_ms),
        }
    }

    /// Binds one socket per leg and builds the SRTP contexts (key derivation stays here, off
    /// the shards).
    fn bind_legs(&self, specs: &[LegSpec], publisher: bool) -> Result<Vec<NewLeg>, ApiError> {
        let srtp = |k: &Option<engine::srtp::SrtpKeys>| {
            k.as_ref()
                .map(SrtpContext::new)
                .transpose()
                .map_err(|e| ApiError::new(400, format!("SRTP: {e}")))
        };
        let mut out = Vec::with_capacity(specs.len());
        for l in specs {
            let socket = self
                .ports
                .lock()
                .unwrap()
                .bind(self.cfg.media.bind, publisher)
                .map_err(|e| {
                    tracing::error!(error = %e, "no free media port");
                    ApiError::new(503, format!("no free media port: {e}"))
                })?;
            out.push(NewLeg {
                kind: l.kind,
                socket,
                peer: l.peer,
                source_ip: l.source_ip,
                payload_types: l.payload_types.clone(),
                pt_map: l.pt_map.clone(),
                h264_payload_types: l.h264.clone(),
                srtp_in: srtp(&l.srtp_in)?,
                srtp_out: srtp(&l.srtp_out)?,
            });
        }
        Ok(out)
    }

    /// The publisher of stream `name`, if any.
    pub fn publisher_of(&self, name: &str) -> Option<SessionRecord> {
        self.reg.lock().unwrap().publisher_of(name).cloned()
    }

    /// Tells the shards concerned where a stream's packets and feedback go.
    fn apply_topology(&self, t: Topology) {
        let mut topo = self.topo.lock().unwrap();
        let old = topo.get(&t.stream).cloned();
        let relevant = |t: &Topology| -> BTreeSet<usize> {
            t.player_shards
                .iter()
                .copied()
                .chain(t.publisher_shard)
                .collect()
        };
        let mut shards = relevant(&t);
        if let Some(o) = &old {
            shards.extend(relevant(o));
        }
        for s in shards {
            let routes = if t.publisher_shard == Some(s) {
                t.player_shards
                    .iter()
                    .copied()
                    .filter(|&p| p != s)
                    .collect()
            } else {
                Vec::new()
            };
            let was_pub = old.as_ref().is_some_and(|o| o.publisher_shard == Some(s));
            if t.publisher_shard == Some(s) || was_pub {
                self.engine.send(
                    s,
                    Command::SetRoutes {
                        stream: t.stream,
                        shards: routes,
                    },
                );
            }
            let pub_shard = if t.player_shards.contains(&s) || t.publisher_shard == Some(s) {
                t.publisher_shard
            } else {
                None
            };
            let old_pub_shard = old.as_ref().and_then(|o| {
                if o.player_shards.contains(&s) || o.publisher_shard == Some(s) {
                    o.publisher_shard
                } else {
                    None
                }
            });
            if old.is_none() || pub_shard != old_pub_shard {
                self.engine.send(
                    s,
                    Command::SetPublisherShard {
                        stream: t.stream,
                        shard: pub_shard,
                    },
                );
            }
        }
        if t.publisher_shard.is_none() && t.player_shards.is_empty() {
            topo.remove(&t.stream);
        } else {
            topo.insert(t.stream, t);
        }
    }

    /// Ends one session with `status` (STOPPED/UNPUBLISHED, or FAILED when control detected
    /// the failure, e.g. a cluster relay's origin died). Returns its record.
    fn end(&self, id: SessionId, status: Status, info: &str) -> Option<SessionRecord> {
        let (mut rec, topo) = self.reg.lock().unwrap().remove(id)?;
        rec.status = final_status(rec.published, status);
        rec.info = info.to_string();
        self.stopping.lock().unwrap().insert(id, rec.clone());
        self.engine.send(
            rec.shard,
            Command::Terminate {
                id,
                info: info.to_string(),
            },
        );
        self.apply_topology(topo);
        tracing::info!(id = %rec.media_session_id, name = %rec.name, published = rec.published, status = rec.status.as_str(), info, "session stopped");
        if rec.published {
            self.publisher_ended(&rec);
        }
        Some(rec)
    }

    /// A publisher ended (any way): its players, relay players toward other nodes included,
    /// stop too, unless configured to wait for a republish. A cluster relay publisher that
    /// FAILED (its origin died) fails them with its info, so an edge's players say why.
    fn publisher_ended(&self, publisher: &SessionRecord) {
        let relay_failed = publisher.relay.is_some() && publisher.status == Status::Failed;
        if self.cfg.media.players_outlive_publisher && !relay_failed {
            return;
        }
        let f = Filter {
            name: Some(publisher.name.clone()),
            published: Some(false),
            relay: RelayMatch::Any,
            ..Default::default()
        };
        let (status, info) = if relay_failed {
            (Status::Failed, publisher.info.as_str())
        } else {
            (Status::Stopped, PUBLISHER_STOP_INFO)
        };
        let n = self.end_matching(&f, status, info).len();
        if n > 0 {
            tracing::info!(name = %publisher.name, players = n, info, "publisher ended; its players stopped");
        }
    }

    /// Ends the session `msid` with `status` and `info` (the cluster's relay glue).
    pub fn end_one(&self, msid: &str, status: Status, info: &str) -> Option<SessionRecord> {
        let id = self.reg.lock().unwrap().by_media_session_id(msid)?.id;
        self.end(id, status, info)
    }

    /// Sets a publisher's H264 parameter sets (a relay publisher learns them from upstream).
    pub fn set_sprop(&self, id: SessionId, sprop: String) {
        if let Some(r) = self.reg.lock().unwrap().get_mut(id) {
            r.sprop.get_or_insert(sprop);
        }
    }

    /// Players of stream `name` on this node (relay players included).
    pub fn player_count(&self, name: &str) -> usize {
        self.reg.lock().unwrap().player_count(name)
    }

    /// Stops every session matching `f`. Returns the stopped records.
    /// Players go first, so those the filter names end with its info rather than
    /// "Stopped by publisher stop".
    pub fn terminate(&self, f: &Filter, info: &str) -> Vec<SessionRecord> {
        self.end_matching(f, Status::Stopped, info)
    }

    /// Ends every session matching `f` with `status` and `info`, players first.
    fn end_matching(&self, f: &Filter, status: Status, info: &str) -> Vec<SessionRecord> {
        let mut found: Vec<(bool, SessionId)> = self
            .reg
            .lock()
            .unwrap()
            .find(f)
            .iter()
            .map(|r| (r.published, r.id))
            .collect();
        found.sort();
        found
            .into_iter()
            .filter_map(|(_, id)| self.end(id, status, info))
            .collect()
    }

    /// Stops one session by mediaSessionId.
    pub fn terminate_one(&self, msid: &str, info: &str) -> Option<SessionRecord> {
        self.end_one(msid, Status::Stopped, info)
    }

    pub fn find(&self, f: &Filter) -> Vec<SessionRecord> {
        self.reg
            .lock()
            .unwrap()
            .find(f)
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.reg.lock().unwrap().len()
    }

    /// Sessions control believes exist, per shard.
    pub fn registry_per_shard(&self) -> Vec<usize> {
        self.reg.lock().unwrap().per_shard(self.shard_count())
    }

    /// SIGTERM: refuse new sessions from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Media ports held by sessions (live or being released), and the pool's size.
    pub fn port_usage(&self) -> (u64, u64) {
        let live: usize = self
            .reg
            .lock()
            .unwrap()
            .find(&Filter {
                all: true,
                relay: RelayMatch::Any,
                ..Default::default()
            })
            .iter()
            .map(|r| r.ports.len())
            .sum();
        let stopping: usize = self
            .stopping
            .lock()
            .unwrap()
            .values()
            .map(|r| r.ports.len())
            .sum();
        let total = self.ports.lock().unwrap().span() as u64;
        ((live + stopping) as u64, total)
    }

    /// Live sessions by (kind, status), for `/metrics`.
    pub fn session_kinds(&self) -> Vec<((&'static str, &'static str), u64)> {
        let mut m: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for r in self.reg.lock().unwrap().find(&Filter {
            all: true,
            relay: RelayMatch::Any,
            ..Default::default()
        }) {
            let kind = match (r.published, r.relay.is_some()) {
                (true, false) => "publisher",
                (false, false) => "player",
                (true, true) => "relay_publisher",
                (false, true) => "relay_player",
            };
            *m.entry((kind, r.status.as_str())).or_default() += 1;
        }
        m.into_iter().collect()
    }

    /// The last port bind found the media port range full.
    pub fn ports_exhausted(&self) -> bool {
        self.ports.lock().unwrap().exhausted()
    }

    /// Shards that did not answer a ping within `timeout` (stopped or stuck).
    pub fn unresponsive_shards(&self, timeout: std::time::Duration) -> Vec<usize> {
        self.engine.unresponsive(timeout)
    }

    /// Replaces the apps with `[[apps]]` of a reloaded config overlaid with the state file
    /// (the start-up rule); nothing changes when that fails.
    pub fn reload_apps(&self, cfg_apps: &[crate::config::AppConfig]) -> Result<(), String> {
        let _order = self.apps_write.lock().unwrap();
        let next = crate::apps::effective(cfg_apps, &self.cfg.apps_state_path())?;
        *self.apps.lock().unwrap() = next;
        Ok(())
    }

    /// Sessions stopped by control but not yet released by their shard.
    pub fn stopping_count(&self) -> usize {
        self.stopping.lock().unwrap().len()
    }

    /// A stats snapshot from every shard (blocks briefly: call off the async runtime).
    pub fn live(&self) -> Live {
        let stats = self.engine.stats();
        let mut live = Live {
            per_shard: vec![0; self.shard_count()],
            shard_counters: vec![Default::default(); self.shard_count()],
            ..Default::default()
        };
        for s in stats {
            live.per_shard[s.shard] = s.sessions.len();
            live.shard_counters[s.shard] = s.counters;
            for x in s.sessions {
                live.counters.insert(x.id, counters_of(&x.counters));
            }
        }
        live
    }

    /// Test hook: makes a bug happen in a shard (see [`engine::Fault`]).
    #[doc(hidden)]
    pub fn inject_fault(&self, shard: usize, f: engine::Fault) {
        self.engine.send(shard, Command::InjectFault(f));
    }

    fn on_event(&self, ev: Event) {
        match ev {
            // The shard ended a session on its own (a failure, a browser hanging up, no
            // media): control did not ask, so the record is still registered; drop it too,
            // so nothing of it stays behind. (A stop control asked for was unregistered
            // already.)
            Event::Status {
                id,
                status: status @ (Status::Failed | Status::Stopped),
                info,
                counters,
                ..
            } if self.reg.lock().unwrap().get(id).is_some() => {
                let removed = self.reg.lock().unwrap().remove(id);
                if let Some((mut rec, topo)) = removed {
                    rec.status = final_status(rec.published, status);
                    rec.info = info.clone();
                    self.stopping.lock().unwrap().insert(id, rec.clone());
                    self.apply_topology(topo);
                    tracing::warn!(id = %rec.media_session_id, name = %rec.name, status = rec.status.as_str(), info, "session ended by its shard");
                    self.notify(&rec, rec.status, &info, counters_of(&counters));
                    if rec.published {
                        self.publisher_ended(&rec);
                    }
                }
            }
            Event::Status {
                id,
                status,
                info,
                remote,
                counters,
            } => {
                let rec = {
                    let mut reg = self.reg.lock().unwrap();
                    match reg.get_mut(id) {
                        Some(r) if matches!(status, Status::Publishing | Status::Playing) => {
                            r.status = status;
                            if remote.is_some() {
                                r.remote = remote;
                            }
                            Some(r.clone())
                        }
                        _ => None,
                    }
                };
                let rec = rec.or_else(|| self.stopping.lock().unwrap().get(&id).cloned());
                if let Some(r) = rec {
                    // A stop control asked for: the record says how it ended (STOPPED, or
                    // FAILED when control failed it).
                    let status = if status.is_final() { r.status } else { status };
                    tracing::info!(id = %r.media_session_id, name = %r.name, status = status.as_str(), info, "status");
                    self.notify(&r, status, &info, counters_of(&counters));
                }
            }
            Event::ParamSets { id, sps, pps } => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD;
                let sprop = format!("{},{}", b64.encode(&sps), b64.encode(pps));
                let size = crate::h264sps::picture_size(&sps);
                if let Some(r) = self.reg.lock().unwrap().get_mut(id) {
                    tracing::debug!(id = %r.media_session_id, %sprop, ?size, "H264 parameter sets cached");
                    r.sprop = Some(sprop);
                    if let Some((w, h)) = size {
                        (r.width, r.height) = (Some(w), Some(h));
                    }
                }
            }
            Event::Removed { id } => {
                self.stopping.lock().unwrap().remove(&id);
                self.ports.lock().unwrap().released();
            }
        }
    }
}

fn event_loop(core: Weak<Core>, events: crossbeam_channel::Receiver<Event>) {
    // Ends when every shard has exited (all senders dropped) or the core is gone.
    while let Ok(ev) = events.recv() {
        let Some(c) = core.upgrade() else {
            return;
        };
        c.on_event(ev);
    }
}
