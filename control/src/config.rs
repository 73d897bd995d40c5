//! Server configuration: an embedded default overlaid with an optional TOML file.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name in stream objects and hooks (`nodeId`); the cluster names nodes by
    /// it too. Empty (the default) = the host name.
    #[serde(default)]
    pub node_id: String,
    /// Where the server keeps what it writes: `apps.json` (runtime app changes) and, unless
    /// `https.auto_cert_dir` says otherwise, `tls/` (the generated certificate). Relative
    /// paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// SIGTERM/SIGINT: how long the drain may take (sessions stopped, their hooks sent)
    /// before the process exits anyway.
    pub shutdown_timeout_ms: u64,
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub media: MediaConfig,
    pub webrtc: WebRtcSettings,
    pub apps: Vec<AppConfig>,
    pub hooks: HooksConfig,
    pub cluster: ClusterConfig,
}

/// WHIP/WHEP sessions (`[webrtc]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcSettings {
    /// A WebRTC session whose ICE + DTLS is not up this long after its offer fails
    /// ("ICE/DTLS connect timeout").
    pub connect_timeout_ms: u64,
    /// WHEP players' media is protected by the engine in place with the DTLS-SRTP keys, like
    /// an SDES SRTP player's; false sends every packet through str0m (for comparison).
    pub protect_in_place: bool,
}

/// Origin/edge cluster on NATS (`docs/cluster.md`). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub enabled: bool,
    pub nats_url: String,
    /// The address other nodes send relay media to.
    pub advertise: IpAddr,
    /// An edge keeps an upstream this long after its last player leaves.
    pub linger_ms: u64,
    /// Heartbeat period, and the silence after which peers declare a node dead.
    pub heartbeat_ms: u64,
    pub dead_after_ms: u64,
    /// Deadline of one NATS call (claim, release, request).
    pub rpc_timeout_ms: u64,
    /// Deadline of an edge pull, nested pulls through other edges included.
    pub pull_timeout_ms: u64,
    /// Relay with SRTP even when the origin stream is plain RTP.
    pub srtp: bool,
    /// Nodes to pull through (first alive one), before the origin.
    pub upstream: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    pub timeout_ms: u64,
    /// Calls in flight at once, per class: authorization (connect, publishStream,
    /// playStream), notifications (StreamStatusEvent, unPublishStream, stopStream) and
    /// keep-alives each have their own pool, so none waits behind another.
    pub max_concurrency: usize,
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// PEM file of a private CA that hook web servers' certificates may chain to (besides
    /// the webpki roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub keep_alive: KeepAliveConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepAliveConfig {
    pub enabled: bool,
    pub interval_ms: u64,
    pub apps: Vec<String>,
}

/// What to do when a hook call fails (transport error, timeout, non-2xx).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum RestOnError {
    /// Log and go on as if the call succeeded.
    #[default]
    Log,
    /// Fail the operation (deny the publish/play; terminate on keep-alive).
    Fail,
}

/// How a hook's reply is used.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum RestPolicy {
    /// Call and only look at the status.
    #[default]
    Notify,
    /// Also apply the reply's fields named in `restOverwrite`.
    Overwrite,
    /// Do not call this method (WCS 5 spells it `DISABLE`, WCS 4 `DISABLED`).
    #[serde(alias = "DISABLE")]
    Disabled,
}

/// Per-method hook behaviour, as the reference server's restClientConfig. Field lists take
/// WCS's form (a comma-separated string, `""` = none) or a list.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestClientConfig {
    #[serde(default)]
    pub rest_on_error: RestOnError,
    #[serde(default)]
    pub rest_policy: RestPolicy,
    #[serde(default, deserialize_with = "field_list")]
    pub rest_overwrite: Vec<String>,
    /// Fields not sent to the web server.
    #[serde(default, deserialize_with = "field_list")]
    pub rest_exclude: Vec<String>,
    /// Fields stripped from this server's replies to the client (publish/play answers).
    #[serde(default, deserialize_with = "field_list")]
    pub client_exclude: Vec<String>,
}

/// A list of field names: `["a", "b"]`, or WCS's `"a,b"` (spaces ignored, `""` = empty).
fn field_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        List(Vec<String>),
    }
    let names = match Form::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a comma-separated string or a list of field names")
    })? {
        Form::Text(s) => s.split(',').map(str::to_string).collect(),
        Form::List(v) => v,
    };
    Ok(names
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Where a generated self-signed certificate is kept; default `<data_dir>/tls`.
    #[serde(default)]
    pub auto_cert_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub key: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Per-method settings, keyed by method name.
    #[serde(default)]
    pub rest_client_config: std::collections::BTreeMap<String, RestClientConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The operator's bearer token, for the control API. Unset: the control API answers
    /// loopback clients only.
    #[serde(default)]
    pub token: Option<String>,
    /// Bearer token for media signalling (WHIP/WHEP, publish, play); unset = open.
    #[serde(default)]
    pub public_token: Option<String>,
    /// A second plain-HTTP listener that serves the control API (and only it is: the main
    /// listeners then refuse the control API with 403).
    #[serde(default)]
    pub control_listen: Option<SocketAddr>,
    pub max_body: usize,
    /// Request head deadline, also the idle time allowed between keep-alive requests.
    pub header_timeout_ms: u64,
    /// Request body deadline (408 past it).
    pub body_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
    /// Largest request head (431 past it).
    pub max_header_bytes: usize,
    /// Open REST connections in total (0 = half the fd soft limit) and per client IP.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// A publisher with no media for this long fails ("Failed by RTP activity"); 0 = off.
    pub rtp_activity_timeout_ms: u64,
    /// A publisher that never sends fails this long after it was created; 0 = off.
    pub pending_timeout_ms: u64,
    /// Keep players waiting for a republish when their publisher stops, instead of stopping
    /// them ("Stopped by publisher stop", the reference server's behaviour and the default).
    pub players_outlive_publisher: bool,
    pub bind: IpAddr,
    pub public_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub shards: usize,
    pub pin_cores: bool,
    pub max_sessions: usize,
    pub max_players_per_stream: usize,
    /// A stream's players stay on its publisher's shard up to this many (one core serves the
    /// stream: no cross-shard hop per packet); more go to the shards with fewest of them.
    /// 0: every session is spread round robin over the shards.
    pub stream_shard_players: usize,
    /// NACK entries per second one player may send towards the publisher (0 = none); past
    /// it they are dropped and counted (`mediaserver_nacks_dropped_total`). For WebRTC
    /// players answered from the stream's history: packets per second resent to one player.
    pub nack_rate_per_player: u32,
    /// A plain-RTP/SRTP publisher whose SDP offer names its address (c=) latches a source
    /// only from that address. Off for publishers behind NAT that write their private one.
    pub latch_offer_address: bool,
    /// Send each player's packets of a loop turn as UDP GSO batches (fewer kernel sends per
    /// video frame); falls back per socket where the kernel refuses.
    pub gso: bool,
    /// connect() each plain-RTP/SRTP player's socket to the player: sends skip the kernel's
    /// per-send route lookup.
    pub connect_players: bool,
    /// Receive RTP/SRTP publishers' bursts as UDP GRO datagrams (one completion per burst
    /// where the NIC or a GSO sender coalesced it).
    pub gro: bool,
    /// A packet that waited longer than this in the server (from its arrival on the host) is
    /// dropped, not sent late, and counted (`reason="stale"`); 0 = never drop.
    pub max_queue_ms: u64,
}

/// The host name (the default `node_id`); "localhost" when the system has none.
/// The part of the media port range that Linux also hands out as ephemeral ports
/// (`net.ipv4.ip_local_port_range`), if any: the server's own outgoing sockets (hooks,
/// NATS, clients on the box) can take those ports, and a port a client just freed can
/// still receive its peer's packets.
pub fn ephemeral_overlap(port_min: u16, port_max: u16) -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|v| v.parse::<u16>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    overlap((port_min, port_max), (lo, hi))
}

fn overlap(a: (u16, u16), b: (u16, u16)) -> Option<(u16, u16)> {
    let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
    (lo <= hi).then_some((lo, hi))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if rc == 0 && !s.is_empty() => s.to_string(),
        _ => "localhost".into(),
    }
}

/// Deep-merges `over` into `base` (tables merge, other values replace).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// The embedded default overlaid with `user` (TOML text), if any.
    pub fn load(user: Option<&str>) -> Result<Config, String> {
        let mut v: toml::Value = toml::from_str(DEFAULT_TOML).map_err(|e| e.to_string())?;
        if let Some(u) = user {
            let o: toml::Value = toml::from_str(u).map_err(|e| format!("config: {e}"))?;
            merge(&mut v, o);
        }
        let cfg: Config = v
            .try_into()
            .map_err(|e: toml::de::Error| format!("config: {e}"))?;
        let mut cfg = cfg;
        if cfg.node_id.is_empty() {
            cfg.node_id = hostname();
        }
        if cfg.media.port_min > cfg.media.port_max {
            return Err("config: media.port_min > media.port_max".into());
        }
        if cfg.webrtc.connect_timeout_ms == 0 {
            return Err("config: webrtc.connect_timeout_ms must be > 0".into());
        }
        Ok(cfg)
    }

    /// The file runtime app changes are persisted to: `<data_dir>/apps.json`.
    pub fn apps_state_path(&self) -> PathBuf {
        self.data_dir.join("apps.json")
    }

    /// The directory for the generated TLS certificate: `https.auto_cert_dir`, else
    /// `<data_dir>/tls`.
    pub fn auto_cert_dir(&self) -> PathBuf {
        self.https
            .auto_cert_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls"))
    }

    /// A config for tests: loopback, ephemeral HTTP port, small port range, and a fresh
    /// `data_dir` of its own under the temp directory (so tests never share app state).
    pub fn for_tests(shards: usize) -> Config {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut c = Config::load(None).expect("default config");
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.data_dir =
            std::env::temp_dir().join(format!("mediaserver-test-{}-{n}", std::process::id()));
        // A leftover from an earlier process with the same pid must not leak in.
        let _ = std::fs::remove_dir_all(&c.data_dir);
        c.http.listen = "127.0.0.1:0".parse().unwrap();
        c.media.bind = "127.0.0.1".parse().unwrap();
        c.media.shards = shards;
        c.media.pin_cores = false;
        // Tests place sessions round robin, so both shards and the hops between them are
        // exercised with few players; the placement rule has its own test.
        c.media.stream_shard_players = 0;
        // Servers of one test process get disjoint media port windows (8 x 2,800 ports): a
        // port freed by one test's server is not reused by another's while the first test
        // still sends to it (a stray packet would latch a plain-RTP publisher there). All
        // windows sit below Linux's ephemeral range (32768-): a test's client socket there
        // gets a port a server just freed, and a server still sending to it would latch
        // another test's publisher (seen as a flaky terminate-storm test).
        let window = (n % 8) as u16;
        c.media.port_min = 10000 + window * 2800;
        c.media.port_max = c.media.port_min + 2799;
        c.https.enabled = false;
        c.https.listen = "127.0.0.1:0".parse().unwrap();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_and_user_overrides_merge() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.http.listen.port(), 8081);
        let c = Config::load(Some("[media]\nshards = 3\n")).unwrap();
        assert_eq!(c.media.shards, 3);
        assert_eq!(c.media.port_min, 10000);
        // The default range stays below Linux's default ephemeral range (32768-60999).
        assert_eq!(
            overlap((c.media.port_min, c.media.port_max), (32768, 60999)),
            None
        );
        assert_eq!(
            overlap((20000, 40000), (32768, 60999)),
            Some((32768, 40000))
        );
        assert_eq!(c.auto_cert_dir(), PathBuf::from("data/tls"));
        assert_eq!(c.apps_state_path(), PathBuf::from("data/apps.json"));
        let c = Config::load(Some("data_dir = \"/var/lib/ms\"\n")).unwrap();
        assert_eq!(c.auto_cert_dir(), PathBuf::from("/var/lib/ms/tls"));
        let c = Config::load(Some("data_dir = \"/d\"\n[https]\nauto_cert_dir = \"/c\"\n")).unwrap();
        assert_eq!(c.auto_cert_dir(), PathBuf::from("/c"));
        assert!(Config::load(Some("[media]\nbogus = 1\n"))
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn seed_rest_client_config_block_loads_verbatim() {
        // The reference server's seed block, as TOML with the same keys and string values.
        let c = Config::load(Some(
            r#"
[[apps]]
key = "seedApp"
url = "http://127.0.0.1:9/MyAPI"
methods = ["StreamKeepAliveEvent"]
[apps.rest_client_config.StreamKeepAliveEvent]
clientExclude = ""
restExclude = "sdp"
restOnError = "FAIL"
restPolicy = "NOTIFY"
restOverwrite = ""
[apps.rest_client_config.connect]
restPolicy = "DISABLE"
restExclude = "sdp, info"
clientExclude = ["sdp"]
"#,
        ))
        .unwrap();
        let app = c.apps.iter().find(|a| a.key == "seedApp").unwrap();
        let ka = &app.rest_client_config["StreamKeepAliveEvent"];
        assert_eq!(ka.rest_exclude, ["sdp"]);
        assert!(ka.client_exclude.is_empty() && ka.rest_overwrite.is_empty());
        assert_eq!(ka.rest_on_error, RestOnError::Fail);
        assert_eq!(ka.rest_policy, RestPolicy::Notify);
        let conn = &app.rest_client_config["connect"];
        assert_eq!(conn.rest_policy, RestPolicy::Disabled);
        assert_eq!(conn.rest_exclude, ["sdp", "info"]);
        assert_eq!(conn.client_exclude, ["sdp"]);
        assert!(!c.node_id.is_empty(), "node_id defaults to the host name");
        let bad = Config::load(Some(
            "[[apps]]\nkey = \"x\"\n[apps.rest_client_config.connect]\nrestExclude = 3\n",
        ))
        .unwrap_err();
        assert!(bad.contains("comma-separated"), "{bad}");
    }
}
