//! SDP (RFC 4566 / RFC 8866) for plain RTP publishers and players, sans-IO: parse a
//! publisher's offer, write the answer, and write the SDP file a player (ffmpeg) opens.
//!
//! # Why a hand-written parser
//!
//! Two maintained crates were tried on the SDP that ffmpeg writes:
//! * `webrtc-sdp` (Mozilla) has no `a=crypto` support at all (it is WebRTC-only: DTLS-SRTP),
//!   so SDES keys, the point of this module, would be dropped as unknown attributes.
//! * `sdp` (webrtc-rs, 0.17) parses ffmpeg's output, but only tokenises: its errors carry no
//!   line and little context (`parse int: invalid digit found in string` for a bad m= port,
//!   `SdpInvalidSyntax: m=` for a missing `t=`), it hands back attributes as raw strings, and
//!   it pulls in `url`, `rand` and `substring`.
//!
//! With either crate, everything this module is for (rtpmap, fmtp, crypto, direction,
//! connection override, the answer and the player file) would still be written here. The
//! line grammar itself is `<letter>=<value>` per line, so a small parser that knows the
//! handful of lines we use, and reports errors as "line N (`text`): what is wrong", is less
//! code and gives REST callers better errors. Lines we do not use (`i= u= e= p= z= k= r=`,
//! unknown `a=`) are skipped, as RFC 4566 asks of parsers.
//!
//! # What ffmpeg (5.1) writes and reads (checked by running it)
//!
//! * `-f rtp ... -sdp_file f.sdp` writes `m=<kind> <port> RTP/AVP <pt>` **even with SRTP**
//!   (the `a=crypto` line is then the only sign), a session-level `c=` for one output but
//!   media-level `c=` for several, `b=AS:` for audio, and no `a=rtpmap` for static payload
//!   types (PCMU is just `m=audio 40002 RTP/AVP 0`). Samples: `testdata/ffmpeg_*.sdp`.
//! * As a player of an SDP file it binds the m= port and port+1 on 0.0.0.0, uses only the
//!   **first** payload type of each m= line, takes the key from `a=crypto` (ignoring the tag;
//!   the last `a=crypto` line of a section wins), and accepts `RTP/SAVP` too. Anything after
//!   the base64 key (`|2^31`, `|1:4`) breaks it: it logs "Incorrect amount of SRTP params"
//!   and then decodes the encrypted packets as if they were plain. So [`play_sdp`] writes
//!   exactly `a=crypto:1 SUITE inline:KEY`.

use std::fmt;
use std::net::IpAddr;

use engine::srtp::{SdesCrypto, SrtpKeys};

/// Largest SDP accepted (REST bodies come from anyone).
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// A parse or generation error: what is wrong and, when it comes from a line, which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError {
    /// 1-based line number in the parsed text.
    pub line: Option<usize>,
    pub message: String,
}

impl SdpError {
    fn at(line: &Line<'_>, message: impl Into<String>) -> SdpError {
        SdpError {
            line: Some(line.no),
            message: format!("`{}`: {}", line.shown(), message.into()),
        }
    }

    pub(crate) fn general(message: impl Into<String>) -> SdpError {
        SdpError {
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "SDP line {n}: {}", self.message),
            None => write!(f, "SDP: {}", self.message),
        }
    }
}

impl std::error::Error for SdpError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The m= line's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportProfile {
    RtpAvp,
    RtpSavp,
    RtpAvpf,
    RtpSavpf,
}

impl TransportProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProfile::RtpAvp => "RTP/AVP",
            TransportProfile::RtpSavp => "RTP/SAVP",
            TransportProfile::RtpAvpf => "RTP/AVPF",
            TransportProfile::RtpSavpf => "RTP/SAVPF",
        }
    }

    /// `RTP/SAVP` or `RTP/SAVPF`.
    pub fn is_secure(self) -> bool {
        matches!(self, TransportProfile::RtpSavp | TransportProfile::RtpSavpf)
    }

    fn parse(s: &str) -> Result<TransportProfile, String> {
        Ok(match s {
            "RTP/AVP" => TransportProfile::RtpAvp,
            "RTP/SAVP" => TransportProfile::RtpSavp,
            "RTP/AVPF" => TransportProfile::RtpAvpf,
            "RTP/SAVPF" => TransportProfile::RtpSavpf,
            p if p.contains("TLS") || p.contains("DTLS") => {
                return Err(format!(
                    "transport {p} (DTLS-SRTP) is not supported; use RTP/SAVP with a=crypto (SDES)"
                ))
            }
            p => {
                return Err(format!(
                    "transport {p:?} is not supported (RTP/AVP, RTP/SAVP, RTP/AVPF, RTP/SAVPF)"
                ))
            }
        })
    }
}

impl fmt::Display for TransportProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Media direction attribute (RFC 4566 §6.7), from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// Whether the side that wrote this SDP sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Encoding name as written (`H264`, `opus`, `MPEG4-GENERIC`); compare case-insensitively.
    pub encoding: String,
    pub clock_rate: u32,
    /// Audio channels, when given.
    pub channels: Option<u16>,
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.encoding, self.clock_rate)?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// One payload type of an m= line with what the SDP says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    pub pt: u8,
    /// From `a=rtpmap`, or for a static payload type without one, the RFC 3551 default
    /// (`None` only for static types RFC 3551 does not define).
    pub rtpmap: Option<RtpMap>,
    /// The `a=fmtp` parameters, verbatim (after `a=fmtp:<pt> `).
    pub fmtp: Option<String>,
}

impl PayloadType {
    /// Encoding name, if known.
    pub fn codec(&self) -> Option<&str> {
        self.rtpmap.as_ref().map(|r| r.encoding.as_str())
    }
}

/// One m= section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: MediaKind,
    /// 0 = the offerer disabled this stream.
    pub port: u16,
    pub profile: TransportProfile,
    /// In m= line order (the first is the offerer's preferred / ffmpeg's only one).
    pub payload_types: Vec<PayloadType>,
    /// The first `a=crypto` line with a suite and parameters we support. ffmpeg sends
    /// SRTP with `RTP/AVP` plus `a=crypto`, so this, not [`Self::profile`], says whether the
    /// stream is encrypted.
    pub crypto: Option<SdesCrypto>,
    /// Media-level direction, else session-level, else `sendrecv`.
    pub direction: Direction,
    /// Media-level `c=` address (overrides the session one).
    pub connection: Option<IpAddr>,
    /// `a=rtcp:<port>` (RFC 3605).
    pub rtcp_port: Option<u16>,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=mid`.
    pub mid: Option<String>,
    /// Distinct SSRCs from `a=ssrc` lines, in order of appearance.
    pub ssrcs: Vec<u32>,
    /// `b=AS:` in kbit/s.
    pub bandwidth_kbps: Option<u32>,
    /// Line of the m= line (for error messages of later checks).
    pub line: usize,
}

impl MediaSection {
    pub fn payload_type(&self, pt: u8) -> Option<&PayloadType> {
        self.payload_types.iter().find(|p| p.pt == pt)
    }

    /// Whether media in this section is SRTP.
    pub fn is_srtp(&self) -> bool {
        self.crypto.is_some()
    }

    /// A publisher's section must send (`sendonly` or `sendrecv`).
    pub fn check_publisher_sends(&self) -> Result<(), SdpError> {
        if self.direction.sends() {
            return Ok(());
        }
        Err(SdpError {
            line: Some(self.line),
            message: format!(
                "m={} is {}: a publisher's offer must send (sendonly or sendrecv)",
                self.kind,
                self.direction.as_str()
            ),
        })
    }

    /// The server's own SDES keys for this section when it is SRTP, with the offer's suite.
    pub fn answer_keys(&self) -> Result<Option<SrtpKeys>, SdpError> {
        self.crypto
            .as_ref()
            .map(|c| SrtpKeys::generate(c.keys.profile))
            .transpose()
            .map_err(|e| SdpError::general(format!("SRTP key generation: {e}")))
    }
}

/// A parsed offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// `s=` (may be empty).
    pub session_name: String,
    /// `o=` unicast address, when numeric.
    pub origin_address: Option<IpAddr>,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    pub media: Vec<MediaSection>,
}

impl Offer {
    /// Where the offerer receives media `i` (media `c=`, else session `c=`).
    pub fn media_address(&self, i: usize) -> Option<IpAddr> {
        self.media
            .get(i)
            .and_then(|m| m.connection.or(self.connection))
    }

    /// Fresh server keys for every encrypted section, with the suite the offer chose (for
    /// [`answer`]'s `srtp_keys_per_media`).
    pub fn generate_answer_keys(&self) -> Result<Vec<Option<SrtpKeys>>, SdpError> {
        self.media.iter().map(MediaSection::answer_keys).collect()
    }
}

/// One line of SDP text.
struct Line<'a> {
    no: usize,
    kind: u8,
    value: &'a str,
}

impl Line<'_> {
    /// The line for error messages, cut short, and without key material.
    fn shown(&self) -> String {
        if self.kind == b'a' && self.value.starts_with("crypto:") {
            return "a=crypto:...".into();
        }
        let mut s = format!("{}={}", self.kind as char, self.value);
        if s.len() > 80 {
            let mut cut = 77;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }
}

/// RFC 3551 static payload types.
fn static_rtpmap(pt: u8) -> Option<RtpMap> {
    let (enc, rate, ch) = match pt {
        0 => ("PCMU", 8000, Some(1)),
        3 => ("GSM", 8000, Some(1)),
        4 => ("G723", 8000, Some(1)),
        5 => ("DVI4", 8000, Some(1)),
        6 => ("DVI4", 16000, Some(1)),
        7 => ("LPC", 8000, Some(1)),
        8 => ("PCMA", 8000, Some(1)),
        9 => ("G722", 8000, Some(1)),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, Some(1)),
        12 => ("QCELP", 8000, Some(1)),
        13 => ("CN", 8000, Some(1)),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, Some(1)),
        16 => ("DVI4", 11025, Some(1)),
        17 => ("DVI4", 22050, Some(1)),
        18 => ("G729", 8000, Some(1)),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    };
    Some(RtpMap {
        encoding: enc.into(),
        clock_rate: rate,
        channels: ch,
    })
}

fn parse_addr(line: &Line<'_>, v: &str) -> Result<IpAddr, SdpError> {
    // <nettype> <addrtype> <address>[/ttl[/count]]
    let mut it = v.split_ascii_whitespace();
    let (net, at, addr) = (it.next(), it.next(), it.next());
    let (Some(net), Some(at), Some(addr)) = (net, at, addr) else {
        return Err(SdpError::at(
            line,
            "expected `IN IP4|IP6 <address>`".to_string(),
        ));
    };
    if net != "IN" {
        return Err(SdpError::at(
            line,
            format!("network type {net:?} is not IN"),
        ));
    }
    let host = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = host.parse().map_err(|_| {
        SdpError::at(
            line,
            format!("address {host:?} is not a numeric IP address (host names are not resolved)"),
        )
    })?;
    match (at, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        ("IP4" | "IP6", _) => Err(SdpError::at(
            line,
            format!("address {host} does not match address type {at}"),
        )),
        _ => Err(SdpError::at(
            line,
            format!("address type {at:?} is not IP4 or IP6"),
        )),
    }
}

fn parse_pt(line: &Line<'_>, s: &str) -> Result<u8, SdpError> {
    s.parse::<u8>().ok().filter(|&p| p <= 127).ok_or_else(|| {
        SdpError::at(
            line,
            format!("payload type {s:?} is not a number in 0..=127"),
        )
    })
}

/// Media section under construction.
struct Building {
    m: MediaSection,
    direction: Option<Direction>,
    rtpmaps: Vec<(u8, RtpMap)>,
    fmtps: Vec<(u8, String)>,
    /// Crypto lines that failed, for the error if none succeeds.
    crypto_errors: Vec<SdpError>,
}

fn parse_m(line: &Line<'_>) -> Result<MediaSection, SdpError> {
    let mut it = line.value.split_ascii_whitespace();
    let kind = match it.next() {
        Some("audio") => MediaKind::Audio,
        Some("video") => MediaKind::Video,
        Some(k) => {
            return Err(SdpError::at(
                line,
                format!("media {k:?} is not supported (audio, video)"),
            ))
        }
        None => return Err(SdpError::at(line, "empty m= line")),
    };
    let port_s = it
        .next()
        .ok_or_else(|| SdpError::at(line, "missing port"))?;
    let (port_s, count) = match port_s.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port_s, None),
    };
    let port: u16 = port_s.parse().map_err(|_| {
        SdpError::at(
            line,
            format!("port {port_s:?} is not a number in 0..=65535"),
        )
    })?;
    if count.is_some_and(|n| n != "1") {
        return Err(SdpError::at(
            line,
            "port ranges (port/count) are not supported",
        ));
    }
    let proto = it
        .next()
        .ok_or_else(|| SdpError::at(line, "missing transport (e.g. RTP/AVP)"))?;
    let profile = TransportProfile::parse(proto).map_err(|e| SdpError::at(line, e))?;
    let mut pts: Vec<PayloadType> = Vec::new();
    for f in it {
        let pt = parse_pt(line, f)?;
        if pts.iter().any(|p| p.pt == pt) {
            return Err(SdpError::at(
                line,
                format!("payload type {pt} is listed twice"),
            ));
        }
        pts.push(PayloadType {
            pt,
            rtpmap: None,
            fmtp: None,
        });
    }
    if pts.is_empty() {
        return Err(SdpError::at(line, "no payload types"));
    }
    Ok(MediaSection {
        kind,
        port,
        profile,
        payload_types: pts,
        crypto: None,
        direction: Direction::SendRecv,
        connection: None,
        rtcp_port: None,
        rtcp_mux: false,
        mid: None,
        ssrcs: Vec::new(),
        bandwidth_kbps: None,
        line: line.no,
    })
}

fn parse_rtpmap(line: &Line<'_>, v: &str) -> Result<(u8, RtpMap), SdpError> {
    let (pt_s, rest) = v
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| SdpError::at(line, "expected `a=rtpmap:<pt> <encoding>/<clock rate>`"))?;
    let pt = parse_pt(line, pt_s)?;
    let mut parts = rest.trim().split('/');
    let enc = parts.next().unwrap_or("");
    if enc.is_empty() || !enc.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SdpError::at(line, "missing or invalid encoding name"));
    }
    let rate_s = parts
        .next()
        .ok_or_else(|| SdpError::at(line, format!("encoding {enc} has no /clock rate")))?;
    let clock_rate = rate_s
        .parse::<u32>()
        .ok()
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            SdpError::at(
                line,
                format!("clock rate {rate_s:?} is not a positive number"),
            )
        })?;
    let channels = match parts.next() {
        None => None,
        Some(c) => Some(c.parse::<u16>().ok().filter(|&c| c > 0).ok_or_else(|| {
            SdpError::at(
                line,
                format!("channel count {c:?} is not a positive number"),
            )
        })?),
    };
    if parts.next().is_some() {
        return Err(SdpError::at(line, "too many /-separated fields"));
    }
    Ok((
        pt,
        RtpMap {
            encoding: enc.to_string(),
            clock_rate,
            channels,
        },
    ))
}

/// Parses a publisher's SDP offer.
///
/// Accepts LF or CRLF line ends and leading/trailing blank lines. Requires `v=0` first, at
/// least one `m=audio|video` section, a numeric `c=` address for every section with a
/// non-zero port (media-level or session-level), an `a=rtpmap` for every dynamic payload
/// type (96..=127), and a usable `a=crypto` in every `RTP/SAVP(F)` section. An `a=crypto`
/// in an `RTP/AVP` section (what ffmpeg writes) makes that section SRTP too.
pub fn parse_offer(text: &str) -> Result<Offer, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::general(format!(
            "{} bytes is larger than the {MAX_SDP_LEN}-byte limit",
            text.len()
        )));
    }
    let mut session_name = String::new();
    let mut origin_address = None;
    let mut connection = None;
    let mut session_direction: Option<Direction> = None;
    let mut media: Vec<MediaSection> = Vec::new();
    let mut cur: Option<Building> = None;
    let mut seen_v = false;

    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        let b = raw.as_bytes();
        if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
            let mut shown: String = raw.chars().take(40).collect();
            if shown.len() < raw.len() {
                shown.push_str("...");
            }
            return Err(SdpError {
                line: Some(i + 1),
                message: format!("`{shown}`: expected `<letter>=<value>`"),
            });
        }
        let line = Line {
            no: i + 1,
            kind: b[0],
            value: &raw[2..],
        };
        if raw.contains(['\0', '\r']) {
            // RFC 8866 §9 allows neither inside a line. Values such as fmtp and mid are
            // copied into the answer and the players' SDP, where ffmpeg would start a new
            // line at the CR (an injected a=crypto, say) or stop reading at the NUL.
            return Err(SdpError::at(&line, "NUL or CR inside the line"));
        }
        if !seen_v {
            if line.kind != b'v' {
                return Err(SdpError::at(&line, "an SDP must start with v=0"));
            }
            if line.value.trim() != "0" {
                return Err(SdpError::at(&line, "only SDP version 0 exists"));
            }
            seen_v = true;
            continue;
        }
        match line.kind {
            b'v' => return Err(SdpError::at(&line, "second v= line")),
            b'o' if cur.is_none() => {
                // o=<username> <sess-id> <sess-version> IN IP4 <address>
                let f: Vec<&str> = line.value.split_ascii_whitespace().collect();
                if f.len() != 6 {
                    return Err(SdpError::at(&line, "expected 6 fields in o="));
                }
                origin_address = f[5].parse().ok();
            }
            b's' if cur.is_none() => session_name = line.value.trim().to_string(),
            b'c' => {
                let ip = parse_addr(&line, line.value)?;
                match cur.as_mut() {
                    Some(b) => b.m.connection = Some(ip),
                    None => connection = Some(ip),
                }
            }
            b'b' => {
                if let (Some(b), Some(v)) = (cur.as_mut(), line.value.strip_prefix("AS:")) {
                    b.m.bandwidth_kbps = Some(v.trim().parse().map_err(|_| {
                        SdpError::at(&line, format!("bandwidth {v:?} is not a number"))
                    })?);
                }
            }
            b'm' => {
                if let Some(b) = cur.take() {
                    media.push(finish(b, session_direction)?);
                }
                cur = Some(Building {
                    m: parse_m(&line)?,
                    direction: None,
                    rtpmaps: Vec::new(),
                    fmtps: Vec::new(),
                    crypto_errors: Vec::new(),
                });
            }
            b'a' => {
                let (name, value) = match line.value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (line.value.trim(), None),
                };
                if let Some(d) = Direction::parse(name) {
                    match cur.as_mut() {
                        Some(b) => b.direction = Some(d),
                        None => session_direction = Some(d),
                    }
                    continue;
                }
                let Some(b) = cur.as_mut() else {
                    continue; // other session-level attributes (a=tool:...) do not matter
                };
                match (name, value) {
                    ("rtpmap", Some(v)) => {
                        let (pt, map) = parse_rtpmap(&line, v)?;
                        if b.rtpmaps.iter().any(|(p, _)| *p == pt) {
                            return Err(SdpError::at(
                                &line,
                                format!("second a=rtpmap for payload type {pt}"),
                            ));
                        }
                        b.rtpmaps.push((pt, map));
                    }
                    ("fmtp", Some(v)) => {
                        let (pt_s, params) = v
                            .split_once(|c: char| c.is_ascii_whitespace())
                            .unwrap_or((v, ""));
                        let pt = parse_pt(&line, pt_s)?;
                        if b.fmtps.iter().any(|(p, _)| *p == pt) {
                            return Err(SdpError::at(
                                &line,
                                format!("second a=fmtp for payload type {pt}"),
                            ));
                        }
                        b.fmtps.push((pt, params.trim().to_string()));
                    }
                    // The first usable line wins; later ones are alternatives we do not need.
                    ("crypto", Some(v)) if b.m.crypto.is_none() => match SdesCrypto::parse(v) {
                        Ok(c) => b.m.crypto = Some(c),
                        Err(e) => b.crypto_errors.push(SdpError::at(&line, e.to_string())),
                    },
                    ("rtcp", Some(v)) => {
                        let p = v.split_ascii_whitespace().next().unwrap_or("");
                        b.m.rtcp_port = Some(p.parse().map_err(|_| {
                            SdpError::at(&line, format!("RTCP port {p:?} is not a number"))
                        })?);
                    }
                    ("rtcp-mux", None) => b.m.rtcp_mux = true,
                    ("mid", Some(v)) => b.m.mid = Some(v.trim().to_string()),
                    ("ssrc", Some(v)) => {
                        let s = v.split_ascii_whitespace().next().unwrap_or("");
                        let ssrc: u32 = s.parse().map_err(|_| {
                            SdpError::at(&line, format!("SSRC {s:?} is not a 32-bit number"))
                        })?;
                        if !b.m.ssrcs.contains(&ssrc) {
                            b.m.ssrcs.push(ssrc);
                        }
                    }
                    _ => {}
                }
            }
            _ => {} // o=/s= inside media, i= u= e= p= t= r= z= k=: not needed
        }
    }
    if !seen_v {
        return Err(SdpError::general("empty SDP (expected v=0 ...)"));
    }
    if let Some(b) = cur.take() {
        media.push(finish(b, session_direction)?);
    }
    if media.is_empty() {
        return Err(SdpError::general("no m= sections"));
    }
    for m in &media {
        if m.port != 0 && m.connection.or(connection).is_none() {
            return Err(SdpError {
                line: Some(m.line),
                message: format!(
                    "m={} has no c= line and there is no session-level c=",
                    m.kind
                ),
            });
        }
    }
    Ok(Offer {
        session_name,
        origin_address,
        connection,
        media,
    })
}

fn finish(mut b: Building, session_direction: Option<Direction>) -> Result<MediaSection, SdpError> {
    let m = &mut b.m;
    m.direction = b.direction.or(session_direction).unwrap_or_default();
    let line = m.line;
    let at_m = move |msg: String| SdpError {
        line: Some(line),
        message: msg,
    };
    for p in &mut m.payload_types {
        p.rtpmap = b
            .rtpmaps
            .iter()
            .find(|(pt, _)| *pt == p.pt)
            .map(|(_, r)| r.clone())
            .or_else(|| static_rtpmap(p.pt));
        p.fmtp = b
            .fmtps
            .iter()
            .find(|(pt, _)| *pt == p.pt)
            .map(|(_, f)| f.clone());
        if p.rtpmap.is_none() && p.pt >= 96 && m.port != 0 {
            return Err(at_m(format!(
                "m={}: dynamic payload type {} has no a=rtpmap",
                m.kind, p.pt
            )));
        }
    }
    if m.crypto.is_none() {
        if let Some(e) = b.crypto_errors.into_iter().next() {
            return Err(e);
        }
        if m.profile.is_secure() && m.port != 0 {
            return Err(at_m(format!(
                "m={} uses {} but has no a=crypto line (DTLS-SRTP is not supported)",
                m.kind, m.profile
            )));
        }
    }
    Ok(b.m)
}

fn ip_fields(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    }
}

pub(crate) fn write_payload_attrs(out: &mut String, pts: &[PayloadType]) {
    for p in pts {
        if let Some(r) = &p.rtpmap {
            out.push_str(&format!("a=rtpmap:{} {r}\r\n", p.pt));
        }
    }
    for p in pts {
        if let Some(f) = &p.fmtp {
            out.push_str(&format!("a=fmtp:{} {f}\r\n", p.pt));
        }
    }
}

fn pt_list(pts: &[PayloadType]) -> String {
    pts.iter()
        .map(|p| p.pt.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `o=` session id: deterministic for the same inputs, different across ports/addresses.
fn session_id(server_ip: IpAddr, ports: &[u16]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for b in server_ip.to_string().bytes() {
        eat(b);
    }
    for p in ports {
        for b in p.to_be_bytes() {
            eat(b);
        }
    }
    h >> 1 // fits the i64 range some parsers assume
}

/// Removes what would break the line structure from free text (s= line).
fn one_line(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let t = t.trim();
    if t.is_empty() {
        "-".into()
    } else {
        t.to_string()
    }
}

/// The server's answer to a publisher's offer: the server receives everything offered
/// (every payload type, every section with a non-zero port) and sends no media.
///
/// * `ports_per_media[i]`: the server port for `offer.media[i]` (ignored for sections the
///   offer disabled with port 0, which stay at 0). The server takes RTP and RTCP on that
///   one port, so each section gets `a=rtcp:<port>` (RFC 3605), plus `a=rtcp-mux` when
///   the offer had it. (ffmpeg publishers ignore both: they send RTCP to port+1 unless
///   told `?rtcpport=<port>`.)
/// * `srtp_keys_per_media[i]`: the server's own keys for every encrypted section
///   (`offer.media[i].crypto.is_some()`), with the same suite; see
///   [`Offer::generate_answer_keys`]. SDES keys are per sender: the offerer's key (in the
///   offer) is what the server decrypts the publisher's media with; the answer's key is what
///   the server encrypts its own RTCP (receiver reports, NACK, PLI) to the publisher with.
///   RFC 4568 §5.1.2 requires the accepted line's tag and suite to be echoed.
/// * Every answered section is `a=recvonly`. An offer section that does not send
///   (`recvonly`/`inactive`) is an error: a publisher must send.
pub fn answer(
    offer: &Offer,
    server_ip: IpAddr,
    ports_per_media: &[u16],
    srtp_keys_per_media: Option<&[Option<SrtpKeys>]>,
) -> Result<String, SdpError> {
    if ports_per_media.len() != offer.media.len() {
        return Err(SdpError::general(format!(
            "{} ports for {} m= sections",
            ports_per_media.len(),
            offer.media.len()
        )));
    }
    if let Some(k) = srtp_keys_per_media {
        if k.len() != offer.media.len() {
            return Err(SdpError::general(format!(
                "{} SRTP key entries for {} m= sections",
                k.len(),
                offer.media.len()
            )));
        }
    }
    let mut out = String::with_capacity(512);
    let id = session_id(server_ip, ports_per_media);
    let ipf = ip_fields(server_ip);
    out.push_str(&format!(
        "v=0\r\no=- {id} 1 {ipf}\r\ns=-\r\nc={ipf}\r\nt=0 0\r\n"
    ));
    for (i, m) in offer.media.iter().enumerate() {
        let pts = pt_list(&m.payload_types);
        if m.port == 0 {
            out.push_str(&format!("m={} 0 {} {pts}\r\n", m.kind, m.profile));
            continue;
        }
        m.check_publisher_sends()?;
        let port = ports_per_media[i];
        if port == 0 {
            return Err(SdpError::general(format!(
                "port 0 given for m={} #{i}",
                m.kind
            )));
        }
        out.push_str(&format!("m={} {port} {} {pts}\r\n", m.kind, m.profile));
        write_payload_attrs(&mut out, &m.payload_types);
        out.push_str(&format!("a=rtcp:{port}\r\n"));
        if m.rtcp_mux {
            out.push_str("a=rtcp-mux\r\n");
        }
        if let Some(mid) = &m.mid {
            out.push_str(&format!("a=mid:{mid}\r\n"));
        }
        out.push_str("a=recvonly\r\n");
        if let Some(c) = &m.crypto {
            let keys = srtp_keys_per_media
                .and_then(|k| k[i].as_ref())
                .ok_or_else(|| {
                    SdpError::general(format!(
                        "m={} #{i} is SRTP but no server key was given",
                        m.kind
                    ))
                })?;
            if keys.profile != c.keys.profile {
                return Err(SdpError::general(format!(
                    "m={} #{i}: server key is {} but the offer chose {}",
                    m.kind, keys.profile, c.keys.profile
                )));
            }
            out.push_str(&format!("a=crypto:{}\r\n", keys.to_sdes(c.tag)));
        }
    }
    Ok(out)
}

/// One section of a player's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayMedia {
    pub kind: MediaKind,
    /// The player's receive port: ffmpeg binds it (and port+1 for RTCP) on 0.0.0.0, so two
    /// players on one host need port pairs that do not overlap.
    pub port: u16,
    /// Copied from the publisher's offer. ffmpeg decodes only the **first** one, so put
    /// the payload type the publisher actually sends first.
    pub payload_types: Vec<PayloadType>,
    /// The SSRCs the server sends this section with (`a=ssrc`), so a decrypting player such
    /// as GStreamer's `srtpdec` knows them before the first packet.
    pub ssrcs: Vec<u32>,
}

/// `a=ssrc:<ssrc> cname:mediaserver` lines (RFC 5576), one per distinct SSRC.
pub fn write_ssrcs(out: &mut String, ssrcs: &[u32]) {
    let mut seen: Vec<u32> = Vec::with_capacity(ssrcs.len());
    for &s in ssrcs {
        if !seen.contains(&s) {
            seen.push(s);
            out.push_str(&format!("a=ssrc:{s} cname:mediaserver\r\n"));
        }
    }
}

impl PlayMedia {
    /// A section carrying what `section` of a publisher's offer carries, to `port`.
    pub fn from_offer(section: &MediaSection, port: u16) -> PlayMedia {
        PlayMedia {
            kind: section.kind,
            port,
            payload_types: section.payload_types.clone(),
            ssrcs: Vec::new(),
        }
    }
}

/// The SDP file a player opens, e.g.
/// `ffmpeg -protocol_whitelist file,udp,rtp -i play.sdp ...` (SRTP needs no extra protocols:
/// ffmpeg's SDP demuxer decrypts inside its RTP depacketizer).
///
/// `server_ip` goes into `o=` and a session-level `c=`. ffmpeg's player uses `c=` only as
/// the peer for `-sdp_flags filter_src` (drop packets from other addresses); it opens its
/// sockets read-only and sends no RTCP.
///
/// With `srtp`, `srtp[i]` is the key the server protects section `i` with; such sections
/// are written as `RTP/SAVP` with `a=crypto:1 <suite> inline:<key>` and nothing more on
/// that line (see the module docs for why).
pub fn play_sdp(
    stream_name: &str,
    server_ip: IpAddr,
    media: &[PlayMedia],
    srtp: Option<&[Option<SrtpKeys>]>,
) -> Result<String, SdpError> {
    if media.is_empty() {
        return Err(SdpError::general("no media sections to play"));
    }
    if let Some(k) = srtp {
        if k.len() != media.len() {
            return Err(SdpError::general(format!(
                "{} SRTP key entries for {} media sections",
                k.len(),
                media.len()
            )));
        }
    }
    let ipf = ip_fields(server_ip);
    let mut out = String::with_capacity(512);
    out.push_str(&format!(
        "v=0\r\no=- 0 0 {ipf}\r\ns={}\r\nc={ipf}\r\nt=0 0\r\n",
        one_line(stream_name)
    ));
    for (i, m) in media.iter().enumerate() {
        if m.payload_types.is_empty() {
            return Err(SdpError::general(format!(
                "m={} #{i} has no payload types",
                m.kind
            )));
        }
        if m.port == 0 {
            return Err(SdpError::general(format!("m={} #{i} has port 0", m.kind)));
        }
        let keys = srtp.and_then(|k| k[i].as_ref());
        let proto = if keys.is_some() {
            TransportProfile::RtpSavp
        } else {
            TransportProfile::RtpAvp
        };
        out.push_str(&format!(
            "m={} {} {proto} {}\r\n",
            m.kind,
            m.port,
            pt_list(&m.payload_types)
        ));
        write_payload_attrs(&mut out, &m.payload_types);
        if let Some(k) = keys {
            out.push_str(&format!("a=crypto:{}\r\n", k.to_sdes(1)));
        }
        write_ssrcs(&mut out, &m.ssrcs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::srtp::{SrtpContext, SrtpProfile};

    // Written by ffmpeg 5.1 (`-f rtp ... -sdp_file`), byte for byte (CRLF line ends).
    const FF_H264_OPUS: &str = include_str!("testdata/ffmpeg_h264_opus.sdp");
    const FF_H264_OPUS_SRTP: &str = include_str!("testdata/ffmpeg_h264_opus_srtp.sdp");
    const FF_H264_GH_AAC: &str = include_str!("testdata/ffmpeg_h264_globalheader_aac.sdp");
    const FF_VP8_PCMU: &str = include_str!("testdata/ffmpeg_vp8_pcmu.sdp");
    const FF_OPUS_SRTP32_V6: &str = include_str!("testdata/ffmpeg_opus_srtp32_ipv6.sdp");

    const KEY: &str = "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn err(text: &str) -> SdpError {
        parse_offer(text).unwrap_err()
    }

    #[test]
    fn sdp_parses_ffmpeg_h264_opus() {
        assert!(FF_H264_OPUS.contains("\r\n"), "fixture keeps ffmpeg's CRLF");
        let o = parse_offer(FF_H264_OPUS).unwrap();
        assert_eq!(o.session_name, "No Name");
        assert_eq!(o.connection, None);
        assert_eq!(o.origin_address, Some(ip("127.0.0.1")));
        assert_eq!(o.media.len(), 2);
        let v = &o.media[0];
        assert_eq!(v.kind, MediaKind::Video);
        assert_eq!(v.port, 40000);
        assert_eq!(v.profile, TransportProfile::RtpAvp);
        assert_eq!(v.connection, Some(ip("127.0.0.1")));
        assert_eq!(v.direction, Direction::SendRecv);
        assert_eq!(
            v.payload_types,
            vec![PayloadType {
                pt: 96,
                rtpmap: Some(RtpMap {
                    encoding: "H264".into(),
                    clock_rate: 90000,
                    channels: None
                }),
                fmtp: Some("packetization-mode=1".into()),
            }]
        );
        assert!(!v.is_srtp());
        let a = &o.media[1];
        assert_eq!(a.kind, MediaKind::Audio);
        assert_eq!(a.port, 40002);
        assert_eq!(a.bandwidth_kbps, Some(64));
        let opus = a.payload_type(97).unwrap();
        assert_eq!(opus.codec(), Some("opus"));
        assert_eq!(opus.rtpmap.as_ref().unwrap().clock_rate, 48000);
        assert_eq!(opus.rtpmap.as_ref().unwrap().channels, Some(2));
        assert_eq!(opus.fmtp, None);
        assert_eq!(o.media_address(1), Some(ip("127.0.0.1")));
        // LF-only input parses the same.
        assert_eq!(parse_offer(&FF_H264_OPUS.replace("\r\n", "\n")).unwrap(), o);
    }

    #[test]
    fn sdp_parses_ffmpeg_srtp_offer_with_rtp_avp() {
        let o = parse_offer(FF_H264_OPUS_SRTP).unwrap();
        for m in &o.media {
            // ffmpeg says RTP/AVP even for SRTP: the crypto line decides.
            assert_eq!(m.profile, TransportProfile::RtpAvp);
            let c = m.crypto.as_ref().expect("crypto parsed");
            assert_eq!(c.tag, 1);
            assert_eq!(c.keys.profile, SrtpProfile::AesCm128HmacSha1_80);
            assert_eq!(c.keys.to_ffmpeg_params(), KEY);
        }
    }

    #[test]
    fn sdp_parses_ffmpeg_global_header_aac_vp8_pcmu_ipv6() {
        let o = parse_offer(FF_H264_GH_AAC).unwrap();
        let f = o.media[0].payload_types[0].fmtp.as_deref().unwrap();
        assert!(f.starts_with(
            "packetization-mode=1; sprop-parameter-sets=Z0LADdoFB+wEQAAAAwBAAAAMg8UKqA==,aM4PyA==;"
        ));
        let aac = &o.media[1].payload_types[0];
        assert_eq!(aac.codec(), Some("MPEG4-GENERIC"));
        assert_eq!(aac.rtpmap.as_ref().unwrap().channels, Some(1));
        assert!(aac.fmtp.as_deref().unwrap().ends_with("config=118856E500"));

        let o = parse_offer(FF_VP8_PCMU).unwrap();
        assert_eq!(o.media[0].payload_types[0].codec(), Some("VP8"));
        // Static PT 0 without a=rtpmap gets the RFC 3551 default.
        assert_eq!(
            o.media[1].payload_types[0].rtpmap,
            Some(RtpMap {
                encoding: "PCMU".into(),
                clock_rate: 8000,
                channels: Some(1)
            })
        );

        // Same IPv6 SDP with the _80 suite parses; ffmpeg's _32 suite is refused, naming it.
        let o = parse_offer(&FF_OPUS_SRTP32_V6.replace("_32", "_80")).unwrap();
        assert_eq!(o.connection, Some(ip("::1")));
        assert_eq!(o.media[0].connection, None);
        assert_eq!(o.media_address(0), Some(ip("::1")));
        assert_eq!(o.media[0].payload_types[0].pt, 111);
        assert!(o.media[0].is_srtp());
        let e = parse_offer(FF_OPUS_SRTP32_V6).unwrap_err();
        assert_eq!(e.line, Some(10));
        assert!(e.message.contains("AES_CM_128_HMAC_SHA1_32"), "{e}");
    }

    #[test]
    fn sdp_parses_sdes_offer_from_other_endpoints() {
        // An RFC 4568-style SIP offer: RTP/SAVP, two crypto lines (the first with a suite we
        // do not support), session-level sendonly overridden per media, a=rtcp, mid, ssrc.
        let text = "v=0\n\
            o=alice 2890844526 2890844526 IN IP4 192.0.2.10\n\
            s=SDES offer\n\
            c=IN IP4 192.0.2.10\n\
            t=0 0\n\
            a=sendonly\n\
            m=audio 49170 RTP/SAVP 0 8 101\n\
            a=rtpmap:101 telephone-event/8000\n\
            a=fmtp:101 0-15\n\
            a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20\n\
            a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20\n\
            a=rtcp:49171\n\
            a=mid:a0\n\
            a=ssrc:3735928559 cname:x\n\
            a=ssrc:3735928559 msid:y\n\
            m=video 51372 RTP/SAVPF 100\n\
            c=IN IP4 192.0.2.11/127\n\
            a=rtpmap:100 VP8/90000\n\
            a=sendrecv\n\
            a=rtcp-mux\n\
            a=crypto:7 AEAD_AES_128_GCM inline:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXA==\n";
        let o = parse_offer(text).unwrap();
        let a = &o.media[0];
        assert_eq!(a.profile, TransportProfile::RtpSavp);
        assert_eq!(a.direction, Direction::SendOnly);
        assert_eq!(a.payload_types.len(), 3);
        assert_eq!(a.payload_types[1].codec(), Some("PCMA"));
        assert_eq!(a.payload_types[2].fmtp.as_deref(), Some("0-15"));
        assert_eq!(
            a.crypto.as_ref().unwrap().tag,
            2,
            "first supported suite chosen"
        );
        assert_eq!(a.rtcp_port, Some(49171));
        assert_eq!(a.mid.as_deref(), Some("a0"));
        assert_eq!(a.ssrcs, vec![0xdead_beef]);
        let v = &o.media[1];
        assert_eq!(v.direction, Direction::SendRecv);
        assert_eq!(v.connection, Some(ip("192.0.2.11")));
        assert!(v.rtcp_mux);
        assert_eq!(
            v.crypto.as_ref().unwrap().keys.profile,
            SrtpProfile::AeadAes128Gcm
        );
        assert_eq!(v.crypto.as_ref().unwrap().tag, 7);
    }

    #[test]
    fn sdp_errors_name_line_and_problem() {
        let base = "v=0\no=- 0 0 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nt=0 0\n";
        let cases: &[(&str, usize, &str)] = &[
            (
                "m=video 4x000 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
                6,
                "port \"4x000\"",
            ),
            ("m=video 70000 RTP/AVP 96\n", 6, "port \"70000\""),
            ("m=video 4000/2 RTP/AVP 96\n", 6, "port ranges"),
            (
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n",
                6,
                "\"application\"",
            ),
            ("m=video 9 UDP/TLS/RTP/SAVPF 96\n", 6, "DTLS-SRTP"),
            ("m=video 9 udp 33\n", 6, "transport \"udp\""),
            ("m=video 4000 RTP/AVP\n", 6, "no payload types"),
            ("m=video 4000 RTP/AVP 128\n", 6, "payload type \"128\""),
            ("m=video 4000 RTP/AVP 96 96\n", 6, "listed twice"),
            (
                "m=video 4000 RTP/AVP 96\n",
                6,
                "dynamic payload type 96 has no a=rtpmap",
            ),
            (
                "m=video 4000 RTP/AVP 96\na=rtpmap:96 H264\n",
                7,
                "no /clock rate",
            ),
            (
                "m=video 4000 RTP/AVP 96\na=rtpmap:96 H264/0\n",
                7,
                "clock rate \"0\"",
            ),
            (
                "m=audio 4000 RTP/AVP 96\na=rtpmap:96 opus/48000/x\n",
                7,
                "channel count",
            ),
            (
                "m=audio 4000 RTP/AVP 96\na=rtpmap:96 opus/48000/2\na=rtpmap:96 opus/48000/2\n",
                8,
                "second a=rtpmap",
            ),
            ("m=audio 4000 RTP/SAVP 0\n", 6, "no a=crypto line"),
            (
                "m=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\n",
                7,
                "needs 30 bytes",
            ),
            (
                "m=audio 4000 RTP/AVP 0\na=crypto:1 F8_128_HMAC_SHA1_80 inline:AAAA\n",
                7,
                "F8_128_HMAC_SHA1_80",
            ),
            (
                "m=audio 4000 RTP/AVP 0\nc=IN IP4 example.com\n",
                7,
                "not a numeric IP",
            ),
            (
                "m=audio 4000 RTP/AVP 0\nc=IN IP6 1.2.3.4\n",
                7,
                "does not match",
            ),
            ("m=audio 4000 RTP/AVP 0\nc=IN\n", 7, "expected `IN IP4|IP6"),
            ("m=audio 4000 RTP/AVP 0\nb=AS:lots\n", 7, "bandwidth"),
            ("m=audio 4000 RTP/AVP 0\na=rtcp:x\n", 7, "RTCP port"),
            (
                "m=audio 4000 RTP/AVP 0\nthis is not sdp\n",
                7,
                "expected `<letter>=<value>`",
            ),
        ];
        for (tail, line, want) in cases {
            let e = err(&format!("{base}{tail}"));
            assert_eq!(e.line, Some(*line), "{tail:?}: {e}");
            assert!(e.to_string().contains(want), "{tail:?}: {e} lacks {want:?}");
            assert!(
                e.to_string().starts_with(&format!("SDP line {line}: ")),
                "{e}"
            );
        }
        // No key material in errors.
        let e = err(&format!(
            "{base}m=audio 4000 RTP/AVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^x\n"
        ));
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(e.to_string().contains("lifetime"), "{e}");
    }

    #[test]
    fn sdp_nul_or_cr_inside_a_line_is_refused() {
        // Found by fuzz/sdp_parse: an fmtp value with a NUL (or a bare CR) was accepted and
        // copied verbatim into the answer and the players' SDP; ffmpeg ends a line at CR, so
        // a publisher could add lines (a=crypto, say) to every player's SDP.
        let base = "v=0\r\ns=x\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 96\r\n\
                    a=rtpmap:96 H264/90000\r\n";
        for bad in [
            "a=fmtp:96 profile-level-id=42\ra=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n",
            "a=fmtp:96 sprop-parameter-sets=Z0LA\0\0\08UKqA==\r\n",
            "a=mid:v\r\r\n",
        ] {
            let e = err(&format!("{base}{bad}"));
            assert_eq!(e.line, Some(6), "{bad:?}: {e}");
            assert!(e.message.contains("NUL or CR"), "{e}");
        }
        // CRLF and LF line ends are still fine, and so are tabs inside a value.
        let o = parse_offer(&format!("{base}a=fmtp:96 a=1;\tb=2\r\n")).unwrap();
        assert_eq!(
            o.media[0].payload_types[0].fmtp.as_deref(),
            Some("a=1;\tb=2")
        );
    }

    #[test]
    fn sdp_structural_errors() {
        assert!(err("").to_string().contains("empty SDP"));
        assert!(err("\r\n\r\n").to_string().contains("empty SDP"));
        assert!(err("o=- 0 0 IN IP4 1.2.3.4\n")
            .to_string()
            .contains("start with v=0"));
        assert!(err("v=1\n").to_string().contains("version 0"));
        assert!(err("v=0\ns=x\n").to_string().contains("no m= sections"));
        let e = err("v=0\ns=x\nm=audio 4000 RTP/AVP 0\n");
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().contains("no c= line"), "{e}");
        // A disabled section needs no address.
        assert!(parse_offer("v=0\ns=x\nm=audio 0 RTP/AVP 0\n").is_ok());
        let big = format!("v=0\n{}", "a=x\n".repeat(MAX_SDP_LEN / 4));
        assert!(err(&big).to_string().contains("limit"));
        let e = err("v=0\no=too few\n");
        assert!(e.to_string().contains("6 fields"), "{e}");
        // Non-ASCII and long lines are shown shortened, without panicking on char bounds.
        let e = err(&format!("v=0\nm=vidéo {} RTP/AVP 0\n", "é".repeat(100)));
        assert!(e.to_string().contains("..."), "{e}");
    }

    #[test]
    fn sdp_answer_for_ffmpeg_offers() {
        let o = parse_offer(FF_H264_OPUS).unwrap();
        let a = answer(&o, ip("10.0.0.5"), &[30000, 30002], None).unwrap();
        let lines: Vec<&str> = a.split("\r\n").collect();
        assert_eq!(lines[0], "v=0");
        assert!(lines[1].starts_with("o=- ") && lines[1].ends_with(" 1 IN IP4 10.0.0.5"));
        assert_eq!(
            &lines[2..],
            &[
                "s=-",
                "c=IN IP4 10.0.0.5",
                "t=0 0",
                "m=video 30000 RTP/AVP 96",
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 packetization-mode=1",
                "a=rtcp:30000",
                "a=recvonly",
                "m=audio 30002 RTP/AVP 97",
                "a=rtpmap:97 opus/48000/2",
                "a=rtcp:30002",
                "a=recvonly",
                "",
            ]
        );
        // The answer is itself valid SDP that this parser reads back.
        let back = parse_offer(&a).unwrap();
        assert_eq!(back.media[0].direction, Direction::RecvOnly);
        assert_eq!(back.media[1].port, 30002);
        assert_eq!(back.media_address(0), Some(ip("10.0.0.5")));

        // SRTP: the server's own key, the offer's tag and suite, same transport as offered.
        let o = parse_offer(FF_H264_OPUS_SRTP).unwrap();
        let keys = o.generate_answer_keys().unwrap();
        assert!(keys.iter().all(|k| k.is_some()));
        let a = answer(&o, ip("10.0.0.5"), &[30000, 30002], Some(&keys)).unwrap();
        let back = parse_offer(&a).unwrap();
        for (m, k) in back.media.iter().zip(&keys) {
            assert_eq!(m.profile, TransportProfile::RtpAvp);
            let c = m.crypto.as_ref().unwrap();
            assert_eq!(c.tag, 1);
            assert_eq!(Some(&c.keys), k.as_ref());
            assert_ne!(
                c.keys.to_ffmpeg_params(),
                KEY,
                "answer carries the server's key"
            );
        }
    }

    #[test]
    fn sdp_answer_mirrors_sdes_offer_details() {
        let text = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=x\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
            m=audio 5000 RTP/SAVP 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
            a=sendonly\r\na=rtcp-mux\r\na=mid:0\r\n\
            a=crypto:3 AEAD_AES_128_GCM inline:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXA==\r\n\
            m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let o = parse_offer(text).unwrap();
        let keys = o.generate_answer_keys().unwrap();
        assert!(keys[1].is_none());
        let a = answer(&o, ip("2001:db8::2"), &[6000, 0], Some(&keys)).unwrap();
        assert!(a.contains("c=IN IP6 2001:db8::2\r\n"), "{a}");
        assert!(a.contains("m=audio 6000 RTP/SAVP 111 0\r\n"), "{a}");
        assert!(
            a.contains("a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000/1\r\n"),
            "{a}"
        );
        assert!(
            a.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"),
            "{a}"
        );
        assert!(
            a.contains("a=rtcp:6000\r\na=rtcp-mux\r\na=mid:0\r\na=recvonly\r\n"),
            "{a}"
        );
        assert!(a.contains("a=crypto:3 AEAD_AES_128_GCM inline:"), "{a}");
        assert!(
            a.ends_with("m=video 0 RTP/AVP 96\r\n"),
            "disabled section stays disabled: {a}"
        );
        let back = parse_offer(&a).unwrap();
        assert_eq!(back.media.len(), 2);
        assert_eq!(
            back.media[0].crypto.as_ref().unwrap().keys,
            *keys[0].as_ref().unwrap()
        );
    }

    #[test]
    fn sdp_answer_errors() {
        let o = parse_offer(FF_H264_OPUS_SRTP).unwrap();
        let ipa = ip("127.0.0.1");
        assert!(answer(&o, ipa, &[1], None)
            .unwrap_err()
            .message
            .contains("1 ports for 2"));
        let e = answer(&o, ipa, &[1, 2], None).unwrap_err();
        assert!(e.message.contains("no server key"), "{e}");
        let e = answer(&o, ipa, &[1, 2], Some(&[None])).unwrap_err();
        assert!(e.message.contains("1 SRTP key entries"), "{e}");
        let gcm = Some(SrtpKeys::generate(SrtpProfile::AeadAes128Gcm).unwrap());
        let e = answer(&o, ipa, &[1, 2], Some(&[gcm.clone(), gcm])).unwrap_err();
        assert!(
            e.message.contains("offer chose AES_CM_128_HMAC_SHA1_80"),
            "{e}"
        );
        let plain = parse_offer(FF_H264_OPUS).unwrap();
        assert!(answer(&plain, ipa, &[0, 2], None)
            .unwrap_err()
            .message
            .contains("port 0"));
        let ro =
            parse_offer(&FF_H264_OPUS.replace("a=fmtp:96", "a=recvonly\r\na=fmtp:96")).unwrap();
        let e = answer(&ro, ipa, &[1, 2], None).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("recvonly"), "{e}");
    }

    #[test]
    fn sdp_play_file_matches_what_ffmpeg_reads() {
        let o = parse_offer(FF_H264_OPUS).unwrap();
        let media = [
            PlayMedia::from_offer(&o.media[0], 42000),
            PlayMedia::from_offer(&o.media[1], 42002),
        ];
        let s = play_sdp("live/cam1", ip("127.0.0.1"), &media, None).unwrap();
        assert_eq!(
            s,
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=live/cam1\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video 42000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
             m=audio 42002 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n"
        );
        let back = parse_offer(&s).unwrap();
        assert_eq!(back.media[0].payload_types, o.media[0].payload_types);
        assert_eq!(back.media[1].payload_types, o.media[1].payload_types);

        // SRTP: RTP/SAVP and exactly `a=crypto:1 SUITE inline:KEY`, the server's key.
        let k = SrtpKeys::from_ffmpeg_params(SrtpProfile::AesCm128HmacSha1_80, KEY).unwrap();
        let s = play_sdp(
            "bad\r\nname\u{0}",
            ip("::1"),
            &media,
            Some(&[Some(k.clone()), None]),
        )
        .unwrap();
        assert!(s.contains("s=bad__name_\r\n"), "{s}");
        assert!(s.contains("c=IN IP6 ::1\r\n"), "{s}");
        assert!(s.contains(&format!(
            "m=video 42000 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\nm=audio 42002 RTP/AVP 97\r\n"
        )));
        let back = parse_offer(&s).unwrap();
        assert_eq!(back.media[0].crypto.as_ref().unwrap().keys, k);
        assert!(back.media[1].crypto.is_none());

        assert!(play_sdp("x", ip("1.2.3.4"), &[], None).is_err());
        assert!(play_sdp("x", ip("1.2.3.4"), &media, Some(&[None])).is_err());
        let mut bad = media.clone();
        bad[0].port = 0;
        assert!(play_sdp("x", ip("1.2.3.4"), &bad, None).is_err());
        bad[0].port = 1;
        bad[0].payload_types.clear();
        assert!(play_sdp("x", ip("1.2.3.4"), &bad, None).is_err());
        assert!(play_sdp("", ip("1.2.3.4"), &media, None)
            .unwrap()
            .contains("s=-\r\n"));
    }

    #[test]
    fn sdp_keys_from_offer_and_play_file_interoperate() {
        // Publisher (ffmpeg) encrypts with the key in its offer; the server decrypts with the
        // context built from the parsed offer, re-encrypts with its player key, and the
        // player decrypts with the key read back from the play SDP.
        let o = parse_offer(FF_H264_OPUS_SRTP).unwrap();
        let offer_keys = &o.media[0].crypto.as_ref().unwrap().keys;
        let mut publisher = SrtpContext::new(
            &SrtpKeys::from_ffmpeg_params(SrtpProfile::AesCm128HmacSha1_80, KEY).unwrap(),
        )
        .unwrap();
        let mut server_in = SrtpContext::new(offer_keys).unwrap();
        let player_key = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
        let mut server_out = SrtpContext::new(&player_key).unwrap();
        let play = play_sdp(
            "s",
            ip("127.0.0.1"),
            &[PlayMedia::from_offer(&o.media[0], 42000)],
            Some(&[Some(player_key)]),
        )
        .unwrap();
        let player_keys = parse_offer(&play).unwrap().media[0]
            .crypto
            .clone()
            .unwrap()
            .keys;
        let mut player = SrtpContext::new(&player_keys).unwrap();
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42];
        pkt.extend_from_slice(b"an H264 NAL unit");
        let wire = publisher.protect_rtp(&pkt).unwrap();
        let plain = server_in.unprotect_rtp(&wire).unwrap();
        let out = server_out.protect_rtp(&plain).unwrap();
        assert_eq!(&player.unprotect_rtp(&out).unwrap()[..], &pkt[..]);
    }
}
