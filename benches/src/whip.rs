//! `load publish --whip`: one str0m WHIP publisher (ICE + DTLS-SRTP, one video m-line
//! `sendonly`, as a browser would offer), sending paced RTP whose payload starts with the
//! load tool's stamp (send time, publisher 0), so `load play --whep` players (and plain RTP
//! players) report latency. Bounded by `duration`; DELETEs its session at the end.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::clock::mono_ns;
use crate::net::bind_udp;
use crate::pkt::{write_stamp, STAMP_LEN};
use crate::rest::Client;
use crate::Result;

#[derive(Debug, Clone)]
pub struct WhipConfig {
    pub server: String,
    pub token: Option<String>,
    pub name: String,
    pub pps: u32,
    /// Payload bytes per packet (the stamp's 12 included).
    pub payload: usize,
    pub duration: Duration,
    pub local_ip: IpAddr,
    pub port: u16,
    pub connect_timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct WhipReport {
    pub connect_ms: f64,
    pub codec_pt: u8,
    pub sent: u64,
    pub send_s: f64,
    pub keyframe_requests: u64,
}

impl WhipReport {
    pub fn summary(&self) -> String {
        format!(
            "whip: connected in {:.1} ms (PT {}), sent {} packets in {:.2} s, {} keyframe requests",
            self.connect_ms, self.codec_pt, self.sent, self.send_s, self.keyframe_requests
        )
    }
}

pub fn run(cfg: &WhipConfig) -> Result<WhipReport> {
    if cfg.pps == 0 || cfg.payload < STAMP_LEN {
        return Err("--whip needs --pps > 0 and --size leaving at least 12 payload bytes".into());
    }
    let sock = bind_udp(SocketAddr::new(cfg.local_ip, cfg.port), 1 << 20)?;
    let local = sock.local_addr()?;
    let t0 = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(t0);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
    let client = Client::new(&cfg.server, cfg.token.clone());
    let path = format!("/whip/{}", cfg.name);
    let (location, answer) = client.post_sdp(&path, &offer.to_sdp_string())?;
    let answer = SdpAnswer::from_sdp_string(&answer)
        .map_err(|e| format!("POST {path}: bad SDP answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("POST {path}: answer refused: {e}"))?;
    let pt = *rtc
        .media(mid)
        .and_then(|m| m.remote_pts().first().copied())
        .ok_or("the answer negotiated no video payload type")?;

    let mut buf = vec![0u8; 2048];
    let mut connected: Option<Instant> = None;
    let mut keyframe_requests = 0u64;
    let mut sent = 0u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.pps as f64);
    let mut next_send: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let give_up = t0 + cfg.connect_timeout;
    let mut payload = vec![0u8; cfg.payload];
    loop {
        // Outputs until str0m's next timeout.
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    let now = Instant::now();
                    connected = Some(now);
                    next_send = Some(now);
                    end = Some(now + cfg.duration);
                }
                Output::Event(Event::KeyframeRequest(_)) => keyframe_requests += 1,
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if connected.is_none() && now > give_up {
            return Err(format!(
                "WHIP publisher did not connect within {:?}",
                cfg.connect_timeout
            )
            .into());
        }
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if let Some(t) = next_send.filter(|&t| now >= t) {
            write_stamp(&mut payload, mono_ns(), 0);
            let ts = (sent * 90_000 / cfg.pps as u64) as u32;
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.write_rtp(
                    RtpWrite::new(pt.into(), SeqNo::from(sent + 1), ts, now, payload.clone())
                        .marker(true)
                        .nackable(true),
                );
                sent += 1;
            }
            next_send = Some(t + interval);
            continue;
        }
        let wake = [Some(timeout), next_send]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(20));
        let wait = wake
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(100), Duration::from_millis(20));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), r))?;
                }
            }
            Err(_) => rtc.handle_input(Input::Timeout(Instant::now()))?,
        }
    }
    if !location.is_empty() {
        client.delete(&location);
    }
    let c = connected.expect("loop ends only once connected");
    Ok(WhipReport {
        connect_ms: (c - t0).as_secs_f64() * 1e3,
        codec_pt: pt,
        sent,
        send_s: c.elapsed().as_secs_f64(),
        keyframe_requests,
    })
}
