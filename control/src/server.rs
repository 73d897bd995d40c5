//! The REST server: hyper on a single-threaded tokio runtime in its own thread, so the
//! control plane never competes with the shards for their cores' run queues.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::{ApiError, Core, CreateRequest};
use crate::operator::AppEdit;
use crate::registry::{Filter, FilterBody};

pub type Resp = Response<Full<Bytes>>;

pub(crate) fn json_resp(status: u16, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn err_resp(e: ApiError) -> Resp {
    json_resp(e.status, &json!({ "error": e.message }))
}

/// Parses a JSON body into `T`; an empty body counts as `{}`.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(|b| b.is_ascii_whitespace()) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("invalid request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishBody {
    name: String,
    #[serde(default)]
    app_key: Option<String>,
    /// Expected source address "ip:port"; omitted = the first RTP packet's source is latched.
    #[serde(default)]
    source: Option<SocketAddr>,
    #[serde(default)]
    shard: Option<usize>,
    #[serde(default)]
    has_audio: Option<bool>,
    #[serde(default)]
    has_video: Option<bool>,
    #[serde(default)]
    audio_codec: Option<String>,
    #[serde(default)]
    video_codec: Option<String>,
    /// SDP offer (RTP/AVP, or SRTP with a=crypto): one server port per m= section.
    #[serde(default)]
    sdp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PlayBody {
    name: String,
    #[serde(default)]
    host: Option<std::net::IpAddr>,
    #[serde(default)]
    port: Option<u16>,
    /// The player's SDP offer (where it receives, what it decodes), instead of host/port.
    #[serde(default)]
    sdp: Option<String>,
    #[serde(default)]
    app_key: Option<String>,
    #[serde(default)]
    shard: Option<usize>,
}

/// Demo pages (camera → WHIP, WHEP → video), self-contained.
const DEMO_PUBLISH: &str = include_str!("../demo/publish.html");
const DEMO_PLAY: &str = include_str!("../demo/play.html");

fn html_resp(page: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The OpenAPI description of every route, served at /openapi.json.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Who made a request: the client's address and the server address it reached.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
    pub local: SocketAddr,
    pub listener: crate::access::Listener,
}

pub struct Api {
    pub core: Arc<Core>,
    pub hooks: Arc<crate::hooks::Hooks>,
    /// The cluster, when `cluster.enabled`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The bearer tokens in force (SIGHUP replaces them).
    pub tokens: std::sync::RwLock<Arc<crate::access::Tokens>>,
}

impl Api {
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: Client) -> Resp {
        let t0 = std::time::Instant::now();
        // A bounded label set: hyper accepts any token as a method.
        let method = match *req.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            Method::HEAD => "HEAD",
            _ => "other",
        };
        let route = route_of(req.uri().path());
        let resp = self.clone().route(req, peer).await;
        self.core.metrics.http_request(
            route,
            method,
            resp.status().as_u16(),
            t0.elapsed().as_secs_f64(),
        );
        resp
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>, peer: Client) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let audience = crate::access::audience(method.as_str(), &path);
        let bearer = crate::access::bearer(
            req.headers()
                .get(AUTHORIZATION)
                .and_then(|h| h.to_str().ok()),
        );
        let tokens = self.tokens.read().unwrap().clone();
        let forwarded = req.headers().contains_key("forwarded")
            || req.headers().contains_key("x-forwarded-for");
        if let Err(e) = crate::access::check(
            &tokens,
            audience,
            peer.listener,
            peer.addr.ip(),
            forwarded,
            bearer,
        ) {
            return err_resp(e);
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let limit = self.core.cfg.http.max_body;
        let deadline = std::time::Duration::from_millis(self.core.cfg.http.body_timeout_ms.max(1));
        let body = match tokio::time::timeout(deadline, read_body(req.into_body(), limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return err_resp(e),
            Err(_) => {
                return err_resp(ApiError::new(
                    408,
                    format!(
                        "request body not received within {} ms (http.body_timeout_ms)",
                        self.core.cfg.http.body_timeout_ms
                    ),
                ))
            }
        };
        let r = match (&method, path.as_str()) {
            (&Method::POST, "/rest-api/publish") => self.publish(&body, peer).await,
            (&Method::POST, p) if webrtc_path(p).is_some_and(|(_, _, id)| id.is_none()) => {
                let (kind, name, _) = webrtc_path(p).expect("matched");
                self.webrtc(kind, &name, content_type.as_deref(), &body, peer)
                    .await
            }
            (&Method::DELETE, p) if webrtc_path(p).is_some_and(|(_, _, id)| id.is_some()) => {
                let (kind, name, id) = webrtc_path(p).expect("matched");
                self.webrtc_delete(kind, &name, &id.expect("matched"))
            }
            (&Method::POST, "/rest-api/play") => self.play(&body, peer).await,
            (&Method::GET, p) if p.starts_with("/rest-api/stream/") && p.ends_with(".sdp") => {
                let name = percent_decode(&p["/rest-api/stream/".len()..p.len() - 4]);
                self.play_file(&name, &query, peer).await
            }
            (&Method::POST, "/rest-api/stream/find_all") => self.find(&body, true).await,
            (&Method::POST, "/rest-api/stream/find") => self.find(&body, false).await,
            (&Method::POST, "/rest-api/stream/terminate") => self.terminate(&body).await,
            (&Method::GET, "/health") => Ok(json_resp(200, &json!({"status": "ok"}))),
            (&Method::GET, "/ready") => Ok(self.ready().await),
            (&Method::GET, "/demo/publish.html") => Ok(html_resp(DEMO_PUBLISH)),
            (&Method::GET, "/demo/play.html") => Ok(html_resp(DEMO_PLAY)),
            (&Method::GET, "/metrics") => self.metrics().await,
            (&Method::GET, "/openapi.json") => {
                let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Ok(r)
            }
            (&Method::POST, "/rest-api/admin/apps/find_all") => Ok(self.apps_list()),
            (&Method::POST, "/rest-api/admin/apps/add") => self.apps_edit(&body, AppEdit::Add),
            (&Method::POST, "/rest-api/admin/apps/update") => {
                self.apps_edit(&body, AppEdit::Update)
            }
            (&Method::POST, "/rest-api/admin/apps/add_rest_method") => {
                self.apps_edit(&body, AppEdit::AddMethod)
            }
            (&Method::POST, "/rest-api/admin/apps/remove_rest_method") => {
                self.apps_edit(&body, AppEdit::RemoveMethod)
            }
            (&Method::POST, "/rest-api/admin/apps/remove") => {
                self.apps_edit(&body, AppEdit::Remove)
            }
            (_, p) if ROUTES.iter().any(|(_, rp)| *rp == p) => Err(ApiError::new(
                405,
                format!("method {method} not allowed on {p}"),
            )),
            _ => Err(ApiError::new(404, format!("no route {method} {path}"))),
        };
        r.unwrap_or_else(err_resp)
    }

    async fn publish(&self, body: &[u8], client: Client) -> Result<Resp, ApiError> {
        let b: PublishBody = parse_json(body)?;
        let plan = b
            .sdp
            .as_deref()
            .map(crate::signal::PublishPlan::new)
            .transpose()
            .map_err(|e| ApiError::new(400, format!("field `sdp`: {e}")))?;
        let mut req = CreateRequest {
            name: b.name,
            published: true,
            app_key: b.app_key.unwrap_or_else(|| "defaultApp".into()),
            peer: b.source,
            shard: b.shard,
            has_audio: b.has_audio.unwrap_or(false),
            has_video: b.has_video.unwrap_or(false),
            audio_codec: b.audio_codec,
            video_codec: b.video_codec,
            sdp: b.sdp.clone(),
            ..Default::default()
        };
        if let Some(p) = &plan {
            let media = p.media();
            let (a, v, ac, vc) = crate::signal::codecs(&media);
            req.has_audio |= a;
            req.has_video |= v;
            req.audio_codec = req.audio_codec.or(ac);
            req.video_codec = req.video_codec.or(vc);
            req.legs = p.legs.clone();
            req.media = media;
            // This server's own addresses: what it announces and binds, what the client
            // reached, and loopback for a client that is not on this host.
            let mut own = vec![
                self.core.cfg.media.public_ip,
                self.core.cfg.media.bind,
                client.local.ip().to_canonical(),
            ];
            if !client.addr.ip().to_canonical().is_loopback() {
                own.extend([
                    "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                    "::1".parse().unwrap(),
                ]);
            }
            let by_offer = self.core.cfg.media.latch_offer_address;
            for l in &mut req.legs {
                l.source_ip = latch_address(l.source_ip.filter(|_| by_offer), b.source, &own);
            }
        }
        let (rec, _) = self.create(req, client).await?;
        let mut reply = self.session_reply(&rec);
        if let Some(p) = &plan {
            match p.answer(self.core.cfg.media.public_ip, &rec.ports) {
                Ok(a) => reply["sdp"] = json!(a),
                Err(e) => {
                    self.core
                        .terminate_one(&rec.media_session_id, "Failed: SDP answer");
                    return Err(ApiError::new(500, format!("SDP answer: {e}")));
                }
            }
        }
        Ok(json_resp(200, &self.client_reply(&rec, reply)))
    }

    async fn play(&self, body: &[u8], client: Client) -> Result<Resp, ApiError> {
        let b: PlayBody = parse_json(body)?;
        let mut req = CreateRequest {
            name: b.name,
            published: false,
            app_key: b.app_key.unwrap_or_else(|| "defaultApp".into()),
            shard: b.shard,
            ..Default::default()
        };
        self.pull(&req.name).await?;
        let plan = match (b.sdp, b.host, b.port) {
            (Some(sdp), None, None) => {
                req.sdp = Some(sdp.clone());
                let media = self.stream_media(&req.name)?;
                let plan = crate::signal::PlayPlan::new(&sdp, &media)
                    .map_err(|e| ApiError::new(400, format!("field `sdp`: {e}")))?;
                req.legs = plan.legs.clone();
                set_codecs(&mut req, &media, &plan.legs);
                Some(plan)
            }
            (None, Some(host), Some(port)) => {
                if port == 0 {
                    return Err(ApiError::new(400, "field `port`: must be 1..=65535"));
                }
                req.peer = Some(SocketAddr::new(host, port));
                None
            }
            _ => {
                return Err(ApiError::new(
                    400,
                    "give either `sdp` (the player's offer) or both `host` and `port`",
                ))
            }
        };
        let (rec, _) = self.create(req, client).await?;
        let mut reply = self.session_reply(&rec);
        if let Some(p) = &plan {
            let sprop = self.core.publisher_of(&rec.name).and_then(|p| p.sprop);
            reply["sdp"] = json!(p.answer(
                self.core.cfg.media.public_ip,
                &rec.ports,
                sprop.as_deref(),
                player_ssrc(rec.id),
            ));
        }
        Ok(json_resp(200, &self.client_reply(&rec, reply)))
    }

    /// `GET /rest-api/stream/<name>.sdp?port=P[&host=H][&srtp=SUITE]`: creates a player that
    /// sends the stream's sections to H:P, H:P+2, ... (H defaults to the caller's address) and
    /// returns the SDP file to open with ffmpeg/ffplay/VLC.
    async fn play_file(&self, name: &str, query: &str, client: Client) -> Result<Resp, ApiError> {
        let mut port = None;
        let mut host = client.addr.ip();
        let mut srtp = None;
        let mut app_key = "defaultApp".to_string();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            match k {
                "port" => {
                    port = Some(v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        ApiError::new(400, format!("query `port`: {v:?} is not 1..=65535"))
                    })?)
                }
                "host" => {
                    host = v.parse().map_err(|_| {
                        ApiError::new(400, format!("query `host`: {v:?} is not an IP address"))
                    })?
                }
                "srtp" => {
                    srtp = Some(
                        v.parse::<engine::srtp::SrtpProfile>()
                            .map_err(|e| ApiError::new(400, format!("query `srtp`: {e}")))?,
                    )
                }
                "appKey" => app_key = v,
                _ => {
                    return Err(ApiError::new(
                        400,
                        format!("query `{k}`: unknown parameter (port, host, srtp, appKey)"),
                    ))
                }
            }
        }
        let port = port.ok_or_else(|| {
            ApiError::new(400, "query `port`: required (where the player receives)")
        })?;
        self.pull(name).await?;
        let media = self.stream_media(name)?;
        let legs = crate::signal::file_legs(&media, host, port, srtp)
            .map_err(|e| ApiError::new(400, e))?;
        let mut req = CreateRequest {
            name: name.to_string(),
            published: false,
            app_key,
            legs: legs.clone(),
            ..Default::default()
        };
        set_codecs(&mut req, &media, &legs);
        let (rec, _) = self.create(req, client).await?;
        let sprop = self.core.publisher_of(name).and_then(|p| p.sprop);
        let text = crate::signal::file_sdp(
            name,
            self.core.cfg.media.public_ip,
            &media,
            &legs,
            sprop.as_deref(),
            player_ssrc(rec.id),
        )
        .map_err(|e| ApiError::new(500, format!("SDP: {e}")))?;
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
        if let Ok(v) = HeaderValue::from_str(&rec.media_session_id) {
            r.headers_mut().insert("x-media-session-id", v);
        }
        Ok(r)
    }

    /// WHIP (`kind` "whip", publish) or WHEP ("whep", play): SDP offer in, 201 with the answer
    /// and the session's resource URL (`Location`) out (RFC 9725 and the WHEP draft).
    async fn webrtc(
        &self,
        kind: &str,
        name: &str,
        content_type: Option<&str>,
        body: &[u8],
        client: Client,
    ) -> Result<Resp, ApiError> {
        if content_type.is_some_and(|c| c != "application/sdp") {
            return Err(ApiError::new(
                415,
                "the body must be an SDP offer (Content-Type: application/sdp)",
            ));
        }
        let offer = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(400, "the SDP offer is not UTF-8"))?;
        if offer.trim().is_empty() {
            return Err(ApiError::new(400, "empty body: send the SDP offer"));
        }
        let published = kind == "whip";
        if !published {
            self.pull(name).await?;
            let p = self
                .core
                .publisher_of(name)
                .ok_or_else(|| ApiError::new(404, "Stream not found"))?;
            if p.tracks.is_empty() {
                return Err(ApiError::new(
                    409,
                    format!(
                        "stream `{name}` has no media a browser can play (H264, VP8, Opus over \
                         SDP-signalled RTP, SRTP or WebRTC)"
                    ),
                ));
            }
        }
        let req = CreateRequest {
            name: name.to_string(),
            published,
            app_key: "defaultApp".into(),
            webrtc_offer: Some(offer.to_string()),
            ..Default::default()
        };
        let (rec, answer) = self.create(req, client).await?;
        let answer = answer.unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(answer)));
        *r.status_mut() = StatusCode::CREATED;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
        let location = format!(
            "/{kind}/{}/{}",
            percent_encode(&rec.name),
            rec.media_session_id
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(hyper::header::LOCATION, v);
        }
        // The resource URL is the protocol's; the id header is ours, so clientExclude
        // (mediaSessionId) can hold it back.
        let excluded = self.client_excluded(&rec);
        if !excluded.iter().any(|f| f == "mediaSessionId") {
            if let Ok(v) = HeaderValue::from_str(&rec.media_session_id) {
                h.insert("x-media-session-id", v);
            }
        }
        Ok(r)
    }

    /// `DELETE` on a WHIP/WHEP resource ends that session.
    /// DELETE of a WHIP/WHEP resource URL: ends that session only. The URL's kind and name
    /// must match it (the route is public: it must not stop RTP sessions, relays or
    /// another stream's sessions by id).
    fn webrtc_delete(&self, kind: &str, name: &str, id: &str) -> Result<Resp, ApiError> {
        let info = if kind == "whip" {
            "Stopped by WHIP DELETE"
        } else {
            "Stopped by WHEP DELETE"
        };
        let f = Filter {
            media_session_ids: Some([id.to_string()].into()),
            ..Default::default()
        };
        let matches = self.core.find(&f).iter().any(|r| {
            r.webrtc && r.relay.is_none() && r.name == name && r.published == (kind == "whip")
        });
        if !matches {
            return Err(ApiError::new(404, "Stream not found"));
        }
        match self.core.terminate_one(id, info) {
            Some(_) => Ok(json_resp(200, &json!({"terminated": [id]}))),
            None => Err(ApiError::new(404, "Stream not found")),
        }
    }

    /// Cluster: a play of a stream this node lacks pulls it from its origin (or the
    /// configured upstream) first; nothing when the stream is local or the cluster is off.
    async fn pull(&self, name: &str) -> Result<(), ApiError> {
        crate::core::check_name(name)?;
        match &self.cluster {
            Some(c) => c.ensure_local(name).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// The media description of a stream published with SDP.
    fn stream_media(&self, name: &str) -> Result<Vec<crate::sdp::MediaSection>, ApiError> {
        let p = self
            .core
            .publisher_of(name)
            .ok_or_else(|| ApiError::new(404, "Stream not found"))?;
        if p.media.is_empty() {
            return Err(ApiError::new(
                409,
                format!(
                    "stream `{name}` was published without SDP, so its codecs are unknown; \
                     play it with `host` and `port`"
                ),
            ));
        }
        Ok(p.media)
    }

    /// Runs the authorisation hooks (connect, then publishStream/playStream), applies what an
    /// OVERWRITE policy changed, and creates the session.
    async fn create(
        &self,
        mut req: CreateRequest,
        client: Client,
    ) -> Result<(crate::registry::SessionRecord, Option<String>), ApiError> {
        crate::core::check_name(&req.name)?;
        if self.core.is_draining() {
            return Err(ApiError::new(503, "server is shutting down"));
        }
        // An unknown app has no hooks; Core::create rejects it with 400.
        let msid = uuid::Uuid::new_v4().to_string();
        let session_id = crate::registry::session_id_for(client.addr, client.local);
        let mut obj = json!({
            "nodeId": self.core.cfg.node_id,
            "sessionId": session_id,
            "mediaSessionId": msid,
            "name": req.name,
            "published": req.published,
            "status": "NEW",
            "appKey": req.app_key,
            "mediaType": if req.published { "publish" } else { "play" },
            "clientAddress": client.addr.to_string(),
            "remoteAddress": req.peer.map(|a| a.to_string()),
            "hasAudio": req.has_audio,
            "hasVideo": req.has_video,
            "audioCodec": req.audio_codec,
            "videoCodec": req.video_codec,
            "createDate": crate::core::now_ms(),
        });
        let method = if req.published {
            "publishStream"
        } else {
            "playStream"
        };
        let reply = self
            .hooks
            .authorize("connect", &req.app_key, &mut obj, None)
            .await?;
        // The web server may give this client its own hook settings in the connect reply.
        let session_rcc = crate::hooks::session_config(&reply);
        if let Some(r) = &session_rcc {
            tracing::info!(session = %session_id, methods = ?r.keys().collect::<Vec<_>>(), "connect reply set this session's restClientConfig");
        }
        self.hooks
            .authorize(method, &req.app_key, &mut obj, session_rcc.as_deref())
            .await?;
        req.session_id = session_id;
        req.rest_client_config = session_rcc;
        if let Some(n) = obj["name"].as_str() {
            req.name = n.to_string();
        }
        req.has_audio = obj["hasAudio"].as_bool().unwrap_or(req.has_audio);
        req.has_video = obj["hasVideo"].as_bool().unwrap_or(req.has_video);
        req.audio_codec = obj["audioCodec"]
            .as_str()
            .map(str::to_string)
            .or(req.audio_codec);
        req.video_codec = obj["videoCodec"]
            .as_str()
            .map(str::to_string)
            .or(req.video_codec);
        // Cluster: a name has one publisher cluster-wide; claim it before binding anything.
        let claimed = match (&self.cluster, req.published) {
            (Some(c), true) => {
                c.claim(&req.name, &msid).await?;
                Some(c.clone())
            }
            _ => None,
        };
        req.media_session_id = Some(msid.clone());
        let name = req.name.clone();
        let r = self.core.create(req);
        match (&r, claimed) {
            (Err(_), Some(c)) => c.release(&name, &msid).await,
            // Edges relay the stream from its directory description.
            (Ok((rec, _)), Some(c)) => c.describe(rec).await,
            _ => {}
        }
        r
    }

    fn session_reply(&self, rec: &crate::registry::SessionRecord) -> Value {
        let mut v = rec.to_json(None, false);
        v["host"] = json!(self.core.cfg.media.public_ip.to_string());
        v["port"] = json!(rec.port);
        v
    }

    /// The `clientExclude` fields of this session's connect and publishStream/playStream
    /// settings: what its replies must not carry.
    fn client_excluded(&self, rec: &crate::registry::SessionRecord) -> Vec<String> {
        let method = if rec.published {
            "publishStream"
        } else {
            "playStream"
        };
        let apps = self.core.apps.lock().unwrap();
        let session = rec.rest_client_config.as_deref();
        let mut out = apps
            .settings(&rec.app_key, "connect", session)
            .client_exclude;
        out.extend(apps.settings(&rec.app_key, method, session).client_exclude);
        out
    }

    /// A publish/play JSON reply without the session's `clientExclude` fields.
    fn client_reply(&self, rec: &crate::registry::SessionRecord, mut v: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            for f in self.client_excluded(rec) {
                o.remove(&f);
            }
        }
        v
    }

    /// This node's matches of a find (`all`: find_all, only `display` honoured).
    pub(crate) async fn local_find(&self, body: &[u8], all: bool) -> Result<Vec<Value>, ApiError> {
        let mut f = parse_filter(body)?;
        if all {
            f = Filter {
                metrics: f.metrics,
                ..Default::default()
            };
        }
        let recs = self.core.find(&f);
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let core = self.core.clone();
        let live = tokio::task::spawn_blocking(move || core.live())
            .await
            .map_err(|e| ApiError::new(500, format!("stats: {e}")))?;
        Ok(recs
            .iter()
            .map(|r| r.to_json(live.counters.get(&r.id), f.metrics))
            .collect())
    }

    /// Stops this node's matches of a terminate filter; their mediaSessionIds.
    pub(crate) fn local_terminate(&self, body: &[u8]) -> Result<Vec<Value>, ApiError> {
        let f = parse_filter(body)?;
        if f.is_empty() && !f.all {
            return Err(ApiError::new(
                400,
                "empty filter would stop every stream; send {\"all\":true} to mean that",
            ));
        }
        Ok(self
            .core
            .terminate(&f, "Stopped by rest /terminate")
            .iter()
            .map(|r| json!(r.media_session_id))
            .collect())
    }

    async fn find(&self, body: &[u8], all: bool) -> Result<Resp, ApiError> {
        let mine = self.local_find(body, all).await?;
        let (arr, scope) = self
            .gather(if all { "find_all" } else { "find" }, body, mine)
            .await;
        if arr.is_empty() && !all {
            return Err(scope.not_found());
        }
        Ok(scope.mark(json_resp(200, &Value::Array(arr))))
    }

    async fn terminate(&self, body: &[u8]) -> Result<Resp, ApiError> {
        let mine = self.local_terminate(body)?;
        let (ids, scope) = self.gather("terminate", body, mine).await;
        if ids.is_empty() {
            return Err(scope.not_found());
        }
        Ok(scope.mark(json_resp(
            200,
            &json!({"message": "Stream termination request is received", "terminated": ids}),
        )))
    }
}

/// The SSRC the player session `id` receives a publisher payload type as (the engine's
/// rewriter assigns it), for the `a=ssrc` lines of its SDP.
/// The only address a publisher's leg latches a source from: `source`'s when the request
/// names one, else the offer's `c=` address, unless that is unspecified (0.0.0.0) or this
/// server's own address (an SDP written for the destination, as ffmpeg's `-sdp_file`).
fn latch_address(
    offer_c: Option<std::net::IpAddr>,
    source: Option<SocketAddr>,
    own: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    if let Some(s) = source {
        return Some(s.ip().to_canonical());
    }
    offer_c.filter(|ip| !ip.is_unspecified() && !own.contains(&ip.to_canonical()))
}

fn player_ssrc(id: engine::SessionId) -> impl Fn(u8) -> u32 {
    let seed = engine::rewrite::player_seed(id);
    move |pt| engine::rewrite::out_ssrc_for(seed, pt)
}

fn parse_filter(body: &[u8]) -> Result<Filter, ApiError> {
    let b: FilterBody = parse_json(body)?;
    Filter::from_body(b).map_err(|e| ApiError::new(400, e))
}

/// Reads a request body of at most `limit` bytes. A larger one gets 413, but only after the
/// rest of it (up to 16 x `limit`) was read and dropped: answering mid-upload makes the
/// kernel reset the connection, and many clients then report a broken pipe, not the 413.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::new(400, format!("could not read body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= limit {
            buf.extend_from_slice(&data);
        } else if total > limit.saturating_mul(16) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::new(
            413,
            format!("request body larger than {limit} bytes"),
        ));
    }
    Ok(buf.freeze())
}

/// `/whip/<name>` or `/whep/<name>[/<mediaSessionId>]` → ("whip"|"whep", name, id).
fn webrtc_path(p: &str) -> Option<(&'static str, String, Option<String>)> {
    let (kind, rest) = if let Some(r) = p.strip_prefix("/whip/") {
        ("whip", r)
    } else {
        ("whep", p.strip_prefix("/whep/")?)
    };
    let mut parts = rest.split('/');
    let name = percent_decode(parts.next().filter(|n| !n.is_empty())?);
    let id = parts.next().map(percent_decode);
    if parts.next().is_some() || id.as_deref() == Some("") {
        return None;
    }
    Some((kind, name, id))
}

/// A player's hasAudio/hasVideo/codecs: the stream's, for the kinds its legs carry.
fn set_codecs(
    req: &mut CreateRequest,
    media: &[crate::sdp::MediaSection],
    legs: &[crate::signal::LegSpec],
) {
    let carried: Vec<_> = media
        .iter()
        .filter(|m| {
            legs.iter().any(|l| {
                m.payload_types
                    .iter()
                    .any(|p| l.payload_types.contains(&p.pt))
            })
        })
        .cloned()
        .collect();
    let (a, v, ac, vc) = crate::signal::codecs(&carried);
    (
        req.has_audio,
        req.has_video,
        req.audio_codec,
        req.video_codec,
    ) = (a, v, ac, vc);
}

/// Decodes `%XX` escapes (and `+` as space) in a path segment or query value.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a path segment (stream names are free text).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The route pattern of `path` (ROUTES' form, `{name}` for parameters), for metrics labels:
/// raw paths would make a label value per stream. "other" when none matches.
fn route_of(path: &str) -> &'static str {
    let seg = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    ROUTES
        .iter()
        .map(|(_, r)| *r)
        .find(|r| {
            if !r.contains('{') {
                return *r == path;
            }
            let prefix = &r[..r.find('{').unwrap_or(0)];
            let suffix = if r.ends_with(".sdp") { ".sdp" } else { "" };
            path.starts_with(prefix) && path.ends_with(suffix) && seg(path) == seg(r)
        })
        .unwrap_or("other")
}

/// Every route the server answers, as (method, path); checked against openapi.yaml in tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/rest-api/publish"),
    ("POST", "/rest-api/play"),
    ("GET", "/rest-api/stream/{name}.sdp"),
    ("POST", "/whip/{name}"),
    ("DELETE", "/whip/{name}/{mediaSessionId}"),
    ("POST", "/whep/{name}"),
    ("DELETE", "/whep/{name}/{mediaSessionId}"),
    ("POST", "/rest-api/stream/find_all"),
    ("POST", "/rest-api/stream/find"),
    ("POST", "/rest-api/stream/terminate"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/demo/publish.html"),
    ("GET", "/demo/play.html"),
    ("POST", "/rest-api/admin/apps/find_all"),
    ("POST", "/rest-api/admin/apps/add"),
    ("POST", "/rest-api/admin/apps/update"),
    ("POST", "/rest-api/admin/apps/add_rest_method"),
    ("POST", "/rest-api/admin/apps/remove_rest_method"),
    ("POST", "/rest-api/admin/apps/remove"),
];

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn metrics_routes_are_patterns_never_raw_paths() {
        assert_eq!(route_of("/rest-api/publish"), "/rest-api/publish");
        assert_eq!(route_of("/whip/cam1"), "/whip/{name}");
        assert_eq!(
            route_of("/whep/cam1/abc-123"),
            "/whep/{name}/{mediaSessionId}"
        );
        assert_eq!(
            route_of("/rest-api/stream/cam.sdp"),
            "/rest-api/stream/{name}.sdp"
        );
        assert_eq!(
            route_of("/rest-api/stream/find_all"),
            "/rest-api/stream/find_all"
        );
        assert_eq!(route_of("/no/such/thing"), "other");
        assert_eq!(route_of("/whip/a/b/c"), "other");
    }
}
