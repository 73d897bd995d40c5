//! The server's REST API, as far as the load tool needs it (blocking, one keep-alive
//! connection).
//!
//! - `POST /rest-api/publish` `{"name"}` -> `{"mediaSessionId","name","host","port","shard"}`
//! - `POST /rest-api/play` `{"name","host","port"}` -> `{"mediaSessionId","port","shard",...}`
//! - `POST /rest-api/stream/terminate` `{"mediaSessionIds":[...]}`
//! - SRTP (SDES): `POST /rest-api/publish` / `play` `{"name","sdp"}` with an offer carrying
//!   `a=crypto`; the reply's `sdp` answer carries the server's key ([`srtp_offer`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishResponse {
    pub media_session_id: String,
    #[serde(default)]
    pub name: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub shard: Option<u32>,
    /// SDP answer (when the request had an offer).
    #[serde(default)]
    pub sdp: Option<String>,
}

impl PublishResponse {
    /// Where to send RTP. An unspecified announced address (0.0.0.0) means "the server's host",
    /// which for this tool is loopback.
    pub fn media_addr(&self) -> Result<SocketAddr> {
        let ip: IpAddr = self
            .host
            .parse()
            .map_err(|e| format!("publish response: bad host {:?}: {e}", self.host))?;
        let ip = if ip.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayResponse {
    pub media_session_id: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub shard: Option<u32>,
    /// SDP answer (when the request had an offer).
    #[serde(default)]
    pub sdp: Option<String>,
}

/// A one-section SDP offer for the load tool's stream (VP8 on payload type 96, so the server
/// caches no H264 parameter sets): a publisher's (`sendonly`, port 9: the server latches the
/// source) or a player's (`recvonly`, where it receives), with `keys` in `a=crypto`.
pub fn srtp_offer(dest: Option<SocketAddr>, keys: &engine::srtp::SrtpKeys) -> String {
    let (ip, port, dir) = match dest {
        Some(a) => (a.ip(), a.port(), "recvonly"),
        None => (IpAddr::from([127, 0, 0, 1]), 9, "sendonly"),
    };
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- 0 0 IN {fam} {ip}\r\ns=load\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\na={dir}\r\na=crypto:{}\r\n",
        keys.to_sdes(1)
    )
}

/// [`srtp_offer`]'s publisher offer without SRTP: plain RTP, VP8 on payload type 96.
pub fn rtp_offer() -> String {
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=load\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
     m=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\n"
        .to_string()
}

/// The keys of the first `a=crypto` line of an SDP answer.
pub fn answer_keys(sdp: &str) -> Result<engine::srtp::SrtpKeys> {
    let v = sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=crypto:"))
        .ok_or("the SDP answer has no a=crypto line")?;
    engine::srtp::SrtpKeys::parse_sdes(v).map_err(|e| format!("answer a=crypto: {e}").into())
}

#[derive(Serialize)]
struct PublishRequest<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct SdpRequest<'a> {
    name: &'a str,
    sdp: &'a str,
}

#[derive(Serialize)]
struct PlayRequest<'a> {
    name: &'a str,
    host: String,
    port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TerminateRequest<'a> {
    media_session_ids: &'a [String],
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` is e.g. `http://127.0.0.1:8081`; `token` is sent as a bearer token if set.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// `POST base+path` with the bearer token when set.
    fn request(&self, path: &str) -> (String, ureq::Request) {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.post(&url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        (url, req)
    }

    fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: impl Serialize) -> Result<T> {
        let (url, req) = self.request(path);
        let resp = sent(&url, req.send_json(body))?;
        let text = resp
            .into_string()
            .map_err(|e| format!("POST {url}: reading body: {e}"))?;
        if text.trim().is_empty() {
            // Endpoints with nothing to say (terminate) may answer with an empty body.
            return serde_json::from_str("null").map_err(|e| format!("POST {url}: {e}").into());
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("POST {url}: bad response {text:?}: {e}").into())
    }

    /// WHIP/WHEP: `POST base+path` with an SDP offer; returns the session's `Location` (empty
    /// if the server sent none) and the SDP answer.
    pub fn post_sdp(&self, path: &str, offer: &str) -> Result<(String, String)> {
        let (url, req) = self.request(path);
        let resp = sent(
            &url,
            req.set("Content-Type", "application/sdp")
                .send_string(offer),
        )?;
        let location = resp.header("location").unwrap_or_default().to_string();
        let answer = resp
            .into_string()
            .map_err(|e| format!("POST {url}: reading body: {e}"))?;
        Ok((location, answer))
    }

    /// `DELETE base+location` (a WHIP/WHEP session); the outcome is not checked, this is
    /// clean-up at the end of a run.
    pub fn delete(&self, location: &str) {
        let mut req = self.agent.delete(&format!("{}{location}", self.base));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let _ = req.call();
    }

    pub fn publish(&self, name: &str) -> Result<PublishResponse> {
        self.post("/rest-api/publish", PublishRequest { name })
    }

    /// Publish with an SDP offer (see [`srtp_offer`]); the reply carries the answer.
    pub fn publish_sdp(&self, name: &str, sdp: &str) -> Result<PublishResponse> {
        self.post("/rest-api/publish", SdpRequest { name, sdp })
    }

    /// Play with an SDP offer naming where the player receives.
    pub fn play_sdp(&self, name: &str, sdp: &str) -> Result<PlayResponse> {
        self.post("/rest-api/play", SdpRequest { name, sdp })
    }

    pub fn play(&self, name: &str, dest: SocketAddr) -> Result<PlayResponse> {
        self.post(
            "/rest-api/play",
            PlayRequest {
                name,
                host: dest.ip().to_string(),
                port: dest.port(),
            },
        )
    }

    /// Stops one session; returns once the server answered (the shard may still be sending
    /// its last packets: what the terminate-latency measurement times).
    pub fn terminate_one(&self, id: &str) -> Result<()> {
        let _: serde_json::Value = self.post(
            "/rest-api/stream/terminate",
            TerminateRequest {
                media_session_ids: std::slice::from_ref(&id.to_string()),
            },
        )?;
        Ok(())
    }

    /// `POST /rest-api/stream/find` (cluster-wide on a clustered node); nothing found (404)
    /// is an empty list.
    pub fn find(&self, filter: serde_json::Value) -> Result<Vec<serde_json::Value>> {
        let (url, req) = self.request("/rest-api/stream/find");
        match req.send_json(filter) {
            Err(ureq::Error::Status(404, _)) => Ok(Vec::new()),
            r => Ok(sent(&url, r)?
                .into_json()
                .map_err(|e| format!("POST {url}: bad response: {e}"))?),
        }
    }

    /// Stops sessions, in chunks so a request stays small.
    /// Terminates `ids`, 500 per request. A chunk the server no longer has (404) is not an
    /// error: a publisher's stop stops its players, so theirs may be gone already.
    pub fn terminate(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(500) {
            let (url, req) = self.request("/rest-api/stream/terminate");
            match req.send_json(TerminateRequest {
                media_session_ids: chunk,
            }) {
                Err(ureq::Error::Status(404, _)) => {}
                r => drop(sent(&url, r)?),
            }
        }
        Ok(())
    }
}

/// A sent request's response, or its failure as "POST url: HTTP code: body" / "POST url: why".
fn sent(url: &str, r: std::result::Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
    match r {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            Err(format!("POST {url}: HTTP {code}: {}", text.trim()).into())
        }
        Err(e) => Err(format!("POST {url}: {e}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn srtp_offers_parse_on_the_server_side() {
        use engine::srtp::{SrtpKeys, SrtpProfile};
        for profile in SrtpProfile::ALL {
            let keys = SrtpKeys::generate(profile).unwrap();
            let p = srtp_offer(None, &keys);
            assert!(p.contains("m=video 9 RTP/SAVP 96\r\n") && p.contains("a=sendonly"));
            assert_eq!(answer_keys(&p).unwrap(), keys);
            let q = srtp_offer(Some("127.0.0.1:45000".parse().unwrap()), &keys);
            assert!(q.contains("c=IN IP4 127.0.0.1") && q.contains("m=video 45000 "));
            assert!(q.contains("a=recvonly"));
        }
        assert!(answer_keys("v=0\r\n").is_err());
    }

    #[test]
    fn decodes_the_contract() {
        let p: PublishResponse = serde_json::from_str(
            r#"{"mediaSessionId":"u1","name":"s1","host":"127.0.0.1","port":20000,"shard":0}"#,
        )
        .unwrap();
        assert_eq!(p.media_addr().unwrap(), "127.0.0.1:20000".parse().unwrap());
        let p0 = PublishResponse {
            host: "0.0.0.0".into(),
            ..p.clone()
        };
        assert_eq!(p0.media_addr().unwrap(), "127.0.0.1:20000".parse().unwrap());
        let q: PlayResponse = serde_json::from_str(
            r#"{"mediaSessionId":"u2","port":20002,"shard":1,"status":"PENDING"}"#,
        )
        .unwrap();
        assert_eq!(
            (q.media_session_id.as_str(), q.port, q.shard),
            ("u2", Some(20002), Some(1))
        );
        let body = serde_json::to_string(&TerminateRequest {
            media_session_ids: &["a".into(), "b".into()],
        })
        .unwrap();
        assert_eq!(body, r#"{"mediaSessionIds":["a","b"]}"#);
        let body = serde_json::to_string(&PlayRequest {
            name: "s1",
            host: "127.0.0.1".into(),
            port: 5000,
        })
        .unwrap();
        assert_eq!(body, r#"{"name":"s1","host":"127.0.0.1","port":5000}"#);
    }

    /// One-shot HTTP server: answers each request with the next canned response and records
    /// request lines and bodies.
    fn fake_server(
        responses: Vec<(u16, &'static str)>,
    ) -> (String, std::thread::JoinHandle<Vec<(String, String)>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            for (code, body) in responses {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
                seen.push((line.trim().to_string(), String::from_utf8(b).unwrap()));
                write!(
                    w,
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (base, h)
    }

    #[test]
    fn talks_http_and_reports_errors() {
        let (base, h) = fake_server(vec![
            (
                200,
                r#"{"mediaSessionId":"p","name":"s","host":"127.0.0.1","port":20000,"shard":0}"#,
            ),
            (200, r#"{"mediaSessionId":"q","port":20002,"shard":1}"#),
            (404, r#"{"error":"no such stream"}"#),
            (200, ""),
        ]);
        let c = Client::new(&base, None);
        assert_eq!(c.publish("s").unwrap().port, 20000);
        assert_eq!(
            c.play("s", "127.0.0.1:5000".parse().unwrap())
                .unwrap()
                .media_session_id,
            "q"
        );
        let e = c
            .play("nope", "127.0.0.1:5001".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("404") && e.contains("no such stream"), "{e}");
        c.terminate(&["p".into(), "q".into()]).unwrap();
        let seen = h.join().unwrap();
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(seen[0].0, "POST /rest-api/publish HTTP/1.1");
        assert_eq!(json(&seen[0].1), json(r#"{"name":"s"}"#));
        assert_eq!(seen[1].0, "POST /rest-api/play HTTP/1.1");
        assert_eq!(
            json(&seen[1].1),
            json(r#"{"name":"s","host":"127.0.0.1","port":5000}"#)
        );
        assert_eq!(seen[3].0, "POST /rest-api/stream/terminate HTTP/1.1");
        assert_eq!(json(&seen[3].1), json(r#"{"mediaSessionIds":["p","q"]}"#));
    }
}
