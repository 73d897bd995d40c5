//! SRTP (RFC 3711, AES-GCM per RFC 7714) keyed by SDES (RFC 4568 `a=crypto`), sans-IO.
//!
//! * [`SrtpProfile`]: the crypto suites we speak, with their SDES names and key sizes.
//! * [`SrtpKeys`] / [`SdesCrypto`]: master key + salt, parsed from / formatted to an SDP
//!   `a=crypto` value or ffmpeg's `-srtp_out_params` string, or freshly generated.
//! * [`SrtpContext`]: one direction of one SRTP session (wraps `webrtc_srtp::context::Context`).
//!
//! ffmpeg (libavformat 59, Debian 5.1) implements `AES_CM_128_HMAC_SHA1_80` (its default)
//! and `AES_CM_128_HMAC_SHA1_32`; `AEAD_AES_128_GCM` is for other clients.
//! `AES_CM_128_HMAC_SHA1_32` is deliberately not offered: for that SDES name ffmpeg puts a
//! 4-byte tag on SRTCP too, while `webrtc-srtp` (like libsrtp and RFC 5764 §4.1.2) uses 10,
//! so SRTCP between the two fails to authenticate (seen with a live ffmpeg: RTP fine, every
//! SRTCP packet rejected).
//!
//! What this wrapper adds on top of `webrtc-srtp`, and why:
//! * **Length checks before the library sees a packet.** `Context::decrypt_rtcp` indexes
//!   `encrypted[4..8]` and computes `len - (tag + 4)` without checking, so a short datagram
//!   would panic the shard.
//! * **SRTCP with the E bit clear is refused.** For AES-CM the library returns such a packet
//!   as-is *without verifying its auth tag*, which would let anyone inject RTCP. We never
//!   negotiate `UNENCRYPTED_SRTCP`, so a clear E bit is always an error here.
//! * **Our own replay window** (128 packets, RFC 3711 §3.3.2) instead of the library's:
//!   the library's `srtp_replay_protection` builds a boxed detector with a heap bitmap on
//!   *every* packet (two per `decrypt_rtp`), even for known SSRCs. Ours is a `u128` per SSRC.
//! * **A bound on SSRCs per context** ([`MAX_SSRCS`]): the library creates per-SSRC state
//!   *before* authenticating, so a flood of forged SSRCs would grow its map without limit.
//! * **RTP header extensions are checked** ([`crate::rtp::header_extension_well_formed`]):
//!   the library's header parser panics on an RFC 8285 element that runs past the packet,
//!   and encrypts from a wrong offset when elements overrun their block (found by fuzzing).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

mod inplace;

/// Accepts base64 with or without `=` padding (RFC 4568 keys are padded, but some
/// implementations drop it); the alphabet is the standard one.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Replay window size in packets (RFC 3711 requires at least 64).
pub const REPLAY_WINDOW: u64 = 128;

/// Most distinct SSRCs one context will track (RTP and RTCP counted separately). A publisher's
/// m= section normally carries one SSRC (two with RTX/FEC); packets for further SSRCs fail
/// with [`SrtpError::TooManySsrcs`] before any per-SSRC state is created.
pub const MAX_SSRCS: usize = 16;

/// An SRTP crypto suite (RFC 4568 §6.2, RFC 7714 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `AES_CM_128_HMAC_SHA1_80`: the default of ffmpeg and of most SDES endpoints.
    AesCm128HmacSha1_80,
    /// `AEAD_AES_128_GCM` (RFC 7714). Not supported by ffmpeg 5.1.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714): what DTLS-SRTP picks first with browsers (str0m's
    /// DTLS server prefers it), so WebRTC players protected in place need it.
    AeadAes256Gcm,
}

impl SrtpProfile {
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// The SDES crypto-suite name, as written in `a=crypto` and ffmpeg's `-srtp_out_suite`.
    pub const fn sdes_name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Parses an SDES suite name. Also accepts the DTLS-SRTP spellings
    /// (`SRTP_AES128_CM_HMAC_SHA1_80`, `SRTP_AEAD_AES_128_GCM`), which ffmpeg accepts too.
    pub fn from_sdes_name(name: &str) -> Option<SrtpProfile> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" | "SRTP_AES128_CM_HMAC_SHA1_80" => {
                Some(SrtpProfile::AesCm128HmacSha1_80)
            }
            "AEAD_AES_128_GCM" | "SRTP_AEAD_AES_128_GCM" => Some(SrtpProfile::AeadAes128Gcm),
            "AEAD_AES_256_GCM" | "SRTP_AEAD_AES_256_GCM" => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 12,
        }
    }

    /// Length of the SDES `inline:` key material (key then salt) in bytes.
    pub const fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Bytes that protecting adds to an RTP packet (auth tag, or GCM tag).
    pub const fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Bytes that protecting adds to an RTCP packet (E flag + SRTCP index, and the tag).
    pub const fn rtcp_overhead(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 4 + 10,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 4 + 16,
        }
    }

    fn to_webrtc(self) -> ProtectionProfile {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

impl FromStr for SrtpProfile {
    type Err = SrtpError;
    fn from_str(s: &str) -> Result<Self, SrtpError> {
        SrtpProfile::from_sdes_name(s).ok_or_else(|| SrtpError::UnsupportedSuite(s.to_string()))
    }
}

/// Errors from key handling and from protecting/unprotecting packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrtpError {
    /// The crypto suite name is not one we implement.
    UnsupportedSuite(String),
    /// A malformed or unsupported `a=crypto` value; the text says what is wrong.
    InvalidSdes(String),
    /// Key material is not valid base64.
    InvalidBase64(String),
    /// Decoded key material has the wrong length for the suite.
    KeyLength {
        profile: SrtpProfile,
        expected: usize,
        got: usize,
    },
    /// The OS random number generator failed.
    Rng(String),
    /// The packet is too short or not RTP/RTCP; the text says what is wrong. (A static
    /// string, so that dropping garbage costs no allocation.)
    Malformed(&'static str),
    /// Authentication (HMAC or GCM tag) failed: wrong key, tampering, or garbage.
    Auth,
    /// The packet was already received (or is older than the replay window).
    Replay { ssrc: u32, index: u64 },
    /// SRTCP packet with the E flag clear (unencrypted SRTCP is never negotiated here).
    UnencryptedSrtcp,
    /// This context already tracks [`MAX_SSRCS`] SSRCs.
    TooManySsrcs,
    /// `protect_*` on a context used for `unprotect_*` or vice versa.
    WrongDirection,
    /// 2^48 SRTP packets were sent with one key (RFC 3711 §9.2): re-key.
    KeyExhausted,
    /// The output buffer given to `protect_rtp_into` / `protect_rtp_in_place` is shorter
    /// than the protected packet (`needed` bytes).
    BufferTooSmall { needed: usize },
    /// Any other error from `webrtc-srtp`.
    Other(String),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::UnsupportedSuite(s) => {
                write!(
                    f,
                    "unsupported SRTP crypto suite {s:?} (supported: AES_CM_128_HMAC_SHA1_80, \
                     AEAD_AES_128_GCM)"
                )?;
                if s.contains("HMAC_SHA1_32") {
                    f.write_str(
                        "; the _32 suite is left out because ffmpeg's SRTCP for it does not \
                         interoperate: use AES_CM_128_HMAC_SHA1_80",
                    )?;
                }
                Ok(())
            }
            SrtpError::InvalidSdes(s) => write!(f, "invalid a=crypto: {s}"),
            SrtpError::InvalidBase64(s) => write!(f, "SRTP key is not valid base64: {s}"),
            SrtpError::KeyLength {
                profile,
                expected,
                got,
            } => write!(
                f,
                "{profile} needs {expected} bytes of key+salt ({} + {}), got {got}",
                profile.key_len(),
                profile.salt_len()
            ),
            SrtpError::Rng(s) => write!(f, "random number generator failed: {s}"),
            SrtpError::Malformed(s) => write!(f, "malformed packet: {s}"),
            SrtpError::Auth => f.write_str("SRTP authentication failed"),
            SrtpError::Replay { ssrc, index } => {
                write!(f, "replayed SRTP packet (ssrc {ssrc:#010x}, index {index})")
            }
            SrtpError::UnencryptedSrtcp => f.write_str("SRTCP packet with the E flag clear"),
            SrtpError::TooManySsrcs => write!(f, "more than {MAX_SSRCS} SSRCs in one SRTP context"),
            SrtpError::WrongDirection => {
                f.write_str("SRTP context used for both protect and unprotect")
            }
            SrtpError::KeyExhausted => f.write_str("SRTP key exhausted (2^48 packets); re-key"),
            SrtpError::BufferTooSmall { needed } => {
                write!(f, "SRTP output buffer too small ({needed} bytes needed)")
            }
            SrtpError::Other(s) => write!(f, "SRTP: {s}"),
        }
    }
}

impl std::error::Error for SrtpError {}

impl From<webrtc_srtp::Error> for SrtpError {
    fn from(e: webrtc_srtp::Error) -> Self {
        use webrtc_srtp::Error as E;
        match e {
            E::RtpFailedToVerifyAuthTag
            | E::RtcpFailedToVerifyAuthTag
            | E::ErrFailedToVerifyAuthTag
            | E::AesGcm(_) => SrtpError::Auth,
            E::ErrTooShortRtp | E::SrtpTooSmall(..) => SrtpError::Malformed("too short for SRTP"),
            E::ErrTooShortRtcp | E::SrtcpTooSmall(..) | E::RtcpInvalidLengthAuthTag(..) => {
                SrtpError::Malformed("too short for SRTCP")
            }
            E::Util(_) => SrtpError::Malformed("invalid RTP header"),
            E::Rtcp(_) => SrtpError::Malformed("invalid RTCP header"),
            E::ErrExceededMaxPackets => SrtpError::KeyExhausted,
            E::SrtpMasterKeyLength(..) | E::SrtpSaltLength(..) => {
                SrtpError::InvalidSdes(e.to_string())
            }
            other => SrtpError::Other(other.to_string()),
        }
    }
}

/// A master key and salt for one SRTP direction.
///
/// `Debug` does not print the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: SrtpProfile,
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("key", &"<redacted>")
            .field("salt", &"<redacted>")
            .finish()
    }
}

impl SrtpKeys {
    /// Checks the key and salt lengths against the profile.
    pub fn new(profile: SrtpProfile, key: Vec<u8>, salt: Vec<u8>) -> Result<Self, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::KeyLength {
                profile,
                expected: profile.master_len(),
                got: key.len() + salt.len(),
            });
        }
        Ok(SrtpKeys { profile, key, salt })
    }

    /// Fresh random keys from the OS RNG.
    pub fn generate(profile: SrtpProfile) -> Result<Self, SrtpError> {
        let mut m = vec![0u8; profile.master_len()];
        getrandom::fill(&mut m).map_err(|e| SrtpError::Rng(e.to_string()))?;
        Ok(Self::from_master(profile, &m))
    }

    /// Splits concatenated key||salt (the layout of SDES `inline:` and ffmpeg's params).
    fn from_master(profile: SrtpProfile, master: &[u8]) -> Self {
        let (k, s) = master.split_at(profile.key_len());
        SrtpKeys {
            profile,
            key: k.to_vec(),
            salt: s.to_vec(),
        }
    }

    /// Key then salt, concatenated.
    pub fn master(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.key.len() + self.salt.len());
        m.extend_from_slice(&self.key);
        m.extend_from_slice(&self.salt);
        m
    }

    /// Base64 (standard alphabet, padded) of key||salt: the SDES `inline:` key and also
    /// exactly what ffmpeg's `-srtp_out_params` / `-srtp_in_params` take.
    pub fn master_base64(&self) -> String {
        STANDARD.encode(self.master())
    }

    /// Keys from ffmpeg's `-srtp_out_params` value: base64 of key||salt (30 bytes for the
    /// AES_CM suites, so 40 base64 characters; 28 bytes for AEAD_AES_128_GCM).
    pub fn from_ffmpeg_params(profile: SrtpProfile, params: &str) -> Result<Self, SrtpError> {
        let m = decode_master(profile, params.trim())?;
        Ok(Self::from_master(profile, &m))
    }

    /// The value to pass to ffmpeg's `-srtp_out_params` / `-srtp_in_params`.
    pub fn to_ffmpeg_params(&self) -> String {
        self.master_base64()
    }

    /// Parses an SDP `a=crypto` value (the part after `a=crypto:`), e.g.
    /// `1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4`.
    /// The tag is dropped; use [`SdesCrypto::parse`] to keep it.
    pub fn parse_sdes(crypto_attr_value: &str) -> Result<Self, SrtpError> {
        SdesCrypto::parse(crypto_attr_value).map(|c| c.keys)
    }

    /// The `a=crypto` value (without the `a=crypto:` prefix) carrying these keys under
    /// `tag`: `TAG SUITE inline:BASE64`.
    ///
    /// No `|lifetime` or `|MKI` is written: ffmpeg's SDP demuxer passes everything after
    /// `inline:` up to the next space to its SRTP code, which then rejects the params
    /// ("Incorrect amount of SRTP params") and silently falls back to plain RTP.
    pub fn to_sdes(&self, tag: u32) -> String {
        format!(
            "{tag} {} inline:{}",
            self.profile.sdes_name(),
            self.master_base64()
        )
    }
}

fn decode_master(profile: SrtpProfile, b64: &str) -> Result<Vec<u8>, SrtpError> {
    let m = B64_LENIENT
        .decode(b64)
        .map_err(|e| SrtpError::InvalidBase64(format!("{e} in {:?}", redact(b64))))?;
    if m.len() != profile.master_len() {
        return Err(SrtpError::KeyLength {
            profile,
            expected: profile.master_len(),
            got: m.len(),
        });
    }
    Ok(m)
}

/// Keeps error messages from echoing whole keys into logs.
fn redact(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}... ({} chars)", s.chars().count())
}

/// One parsed `a=crypto` attribute: its tag and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesCrypto {
    /// The decimal tag (1..=999999999) an answer must echo (RFC 4568 §5.1.2).
    pub tag: u32,
    pub keys: SrtpKeys,
}

impl SdesCrypto {
    /// Parses `TAG SUITE inline:BASE64[|LIFETIME][|MKI:LEN] [SESSION-PARAMS]`.
    ///
    /// Supported: one key, an optional lifetime (`2^31` or decimal; accepted, not enforced),
    /// and the `WSH=` session parameter (ignored). Rejected with a message naming the
    /// problem: MKI (`webrtc-srtp` has no MKI support), several keys, `KDR=`, `FEC_*`,
    /// `UNENCRYPTED_*`/`UNAUTHENTICATED_*`, unknown suites.
    pub fn parse(value: &str) -> Result<SdesCrypto, SrtpError> {
        let bad = |m: String| SrtpError::InvalidSdes(m);
        let mut it = value.split_ascii_whitespace();
        let tag_s = it.next().ok_or_else(|| bad("empty value".into()))?;
        let tag: u32 = tag_s
            .parse()
            .ok()
            .filter(|t| (1..=999_999_999).contains(t) && tag_s.len() <= 9)
            .ok_or_else(|| bad(format!("tag {tag_s:?} is not a number in 1..=999999999")))?;
        let suite = it
            .next()
            .ok_or_else(|| bad(format!("tag {tag} has no crypto suite")))?;
        let profile: SrtpProfile = suite.parse()?;
        let key_params = it
            .next()
            .ok_or_else(|| bad(format!("{suite} has no key parameters (inline:...)")))?;
        for sp in it {
            let name = sp.split('=').next().unwrap_or(sp);
            if name != "WSH" {
                return Err(bad(format!("session parameter {sp:?} is not supported")));
            }
        }
        if key_params.contains(';') {
            return Err(bad("more than one key (';') is not supported".into()));
        }
        let inline = key_params.strip_prefix("inline:").ok_or_else(|| {
            bad(format!(
                "key method must be inline:, got {:?}",
                redact(key_params)
            ))
        })?;
        let mut parts = inline.split('|');
        let b64 = parts.next().unwrap_or("");
        if b64.is_empty() {
            return Err(bad("inline: key is empty".into()));
        }
        let master = decode_master(profile, b64)?;
        for p in parts {
            if p.contains(':') {
                return Err(bad(format!("MKI {p:?} is not supported")));
            }
            let ok = match p.strip_prefix("2^") {
                Some(exp) => exp.parse::<u32>().is_ok_and(|e| e <= 64),
                None => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            };
            if !ok {
                return Err(bad(format!(
                    "key lifetime {p:?} is neither 2^N nor a number"
                )));
            }
        }
        Ok(SdesCrypto {
            tag,
            keys: SrtpKeys::from_master(profile, &master),
        })
    }

    /// `TAG SUITE inline:BASE64` (see [`SrtpKeys::to_sdes`]).
    pub fn to_sdes(&self) -> String {
        self.keys.to_sdes(self.tag)
    }
}

/// RFC 3711 §3.3.2 sliding replay window over a packet index (the 48-bit extended sequence
/// number for SRTP, the 31-bit SRTCP index for SRTCP).
#[derive(Debug, Clone, Copy)]
struct ReplayWindow {
    ssrc: u32,
    /// Highest accepted index.
    top: u64,
    /// Bit i set = index `top - i` was accepted.
    bits: u128,
}

impl ReplayWindow {
    fn new(ssrc: u32, first: u64) -> Self {
        // Nothing accepted yet: an empty window anchored so that `first` counts as new.
        ReplayWindow {
            ssrc,
            top: first,
            bits: 0,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let d = self.top - index;
        if d >= REPLAY_WINDOW || self.bits & (1u128 << d) != 0 {
            return Err(SrtpError::Replay {
                ssrc: self.ssrc,
                index,
            });
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.top = index;
            self.bits |= 1;
        } else {
            self.bits |= 1u128 << (self.top - index);
        }
    }

    /// The extended SRTP index for `seq`, guessed the way RFC 3711 Appendix A (and
    /// `webrtc-srtp`) guess the ROC: the candidate nearest the highest index seen.
    fn estimate_rtp_index(&self, seq: u16) -> u64 {
        let roc = self.top >> 16;
        let top_seq = (self.top & 0xffff) as i64;
        let s = seq as i64;
        let v = if top_seq < 0x8000 {
            if s - top_seq > 0x8000 && roc > 0 {
                roc - 1
            } else {
                roc
            }
        } else if top_seq - 0x8000 > s {
            roc + 1
        } else {
            roc
        };
        (v << 16) | seq as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Protect,
    Unprotect,
}

/// One direction of an SRTP session: either the receive side (only `unprotect_*`) or the
/// send side (only `protect_*`). Mixing both on one context is refused with
/// [`SrtpError::WrongDirection`]; SDES gives each direction its own keys anyway.
///
/// Unprotect checks a 128-packet replay window per SSRC ([`REPLAY_WINDOW`]) and refuses
/// SRTCP without the E flag. Per-SSRC state exists for at most [`MAX_SSRCS`] SSRCs.
///
/// # Heap allocations per call
///
/// RTP protect runs on this crate's own code ([`inplace`], the RustCrypto primitives
/// `webrtc-srtp` uses, checked byte for byte against it); everything else goes through
/// `webrtc-srtp` 0.17, which has no in-place API and returns a freshly allocated buffer from
/// every call. Counted with a counting global allocator (`engine/tests/srtp_alloc.rs`),
/// steady state (SSRC already known), 1200-byte RTP payload, RTP without header extensions,
/// 8-byte RR:
///
/// | call                    | AES_CM_128_HMAC_SHA1_80 | AEAD_AES_128_GCM |
/// |-------------------------|-------------------------|------------------|
/// | `protect_rtp_into`      | 0                       | 0                |
/// | `protect_rtp_in_place`  | 0                       | 0                |
/// | `protect_rtp`           | 1 (the output)          | 1 (the output)   |
/// | `unprotect_rtp`         | 1                       | 3                |
/// | `protect_rtcp`          | 1                       | 4                |
/// | `unprotect_rtcp`        | 1                       | 4                |
///
/// `protect_rtp*` cost the same with header extensions or CSRCs. The library's one AES-CM
/// allocation is the output `Vec` (packet + tag), handed to `Bytes` without copying. GCM adds
/// a 12-byte nonce `Vec` and the `aes-gcm` ciphertext `Vec` (and the 12-byte AAD `Vec` for
/// RTCP). An RTP packet **with a header extension** costs `unprotect_rtp` two more (the
/// library parses the header into an owned `rtp::header::Header`: the element list and one
/// `Bytes` per element): 3 with AES-CM, 5 with GCM. The first packet of a new SSRC also
/// allocates the per-SSRC state. Nothing is allocated on the error paths checked before the
/// library is called (short packets, bad version, replays, E flag clear, too many SSRCs); an
/// AES-CM packet that fails authentication costs the 1 output allocation (the library
/// allocates before it checks the tag).
///
/// So SRTP on the per-player hot path (`protect_rtp_in_place` into the shard's send slot,
/// once per player per packet) allocates nothing; the once-per-publisher-packet
/// `unprotect_rtp` still allocates its output.
///
/// The state lives behind one `Box`, so an `Option<SrtpContext>` (a session leg's, plain RTP
/// or not) is one pointer wide.
pub struct SrtpContext {
    s: Box<ContextState>,
}

/// Session keys are derived on first use, per half: a player's outgoing context only ever
/// protects RTP (our code), a publisher's incoming one only unprotects (`webrtc-srtp`), so
/// each keeps only the state it uses (about 1 KiB each less per SRTP leg).
struct ContextState {
    keys: SrtpKeys,
    /// `webrtc-srtp`: unprotect and RTCP; created on the first such call.
    ctx: Option<Context>,
    /// Our own RTP protect (no allocation per packet), with its own per-SSRC rollover
    /// counters; created on the first `protect_rtp*`.
    rtp_tx: Option<Box<inplace::RtpProtector>>,
    profile: SrtpProfile,
    direction: Option<Direction>,
    rtp_replay: Vec<ReplayWindow>,
    rtcp_replay: Vec<ReplayWindow>,
    /// SSRCs handed to the library (its state is keyed by them), RTP and RTCP.
    rtp_ssrcs: Vec<u32>,
    rtcp_ssrcs: Vec<u32>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.s.profile)
            .field("direction", &self.s.direction)
            .field("rtp_ssrcs", &self.s.rtp_ssrcs)
            .field("rtcp_ssrcs", &self.s.rtcp_ssrcs)
            .finish_non_exhaustive()
    }
}

/// Fixed RTP header size (no CSRCs, no extension).
const RTP_HEADER_LEN: usize = 12;
/// RTCP common header + sender SSRC: the part SRTCP leaves unencrypted.
const RTCP_HEADER_LEN: usize = 8;

impl SrtpContext {
    /// A context for one direction with these keys (lengths checked here). The session keys
    /// are derived on the first call that needs them (a few allocations, once), like the
    /// per-SSRC state on the first packet of an SSRC.
    pub fn new(keys: &SrtpKeys) -> Result<Self, SrtpError> {
        let keys = SrtpKeys::new(keys.profile, keys.key.clone(), keys.salt.clone())?;
        Ok(SrtpContext {
            s: Box::new(ContextState {
                profile: keys.profile,
                keys,
                ctx: None,
                rtp_tx: None,
                direction: None,
                rtp_replay: Vec::new(),
                rtcp_replay: Vec::new(),
                rtp_ssrcs: Vec::new(),
                rtcp_ssrcs: Vec::new(),
            }),
        })
    }

    /// The `webrtc-srtp` context, created on first use.
    fn lib(&mut self) -> Result<&mut Context, SrtpError> {
        let s = &mut *self.s;
        if s.ctx.is_none() {
            // No library replay detection (we do our own; see the module docs). The
            // library's default option builds a zero-sized `NoOpReplayDetector`, whose Box
            // never allocates.
            let k = &s.keys;
            s.ctx = Some(Context::new(
                &k.key,
                &k.salt,
                k.profile.to_webrtc(),
                None,
                None,
            )?);
        }
        Ok(s.ctx.as_mut().expect("just created"))
    }

    /// Our RTP protect state, created on first use.
    fn tx(&mut self) -> Result<&mut inplace::RtpProtector, SrtpError> {
        let s = &mut *self.s;
        if s.rtp_tx.is_none() {
            s.rtp_tx = Some(Box::new(inplace::RtpProtector::new(&s.keys)?));
        }
        Ok(s.rtp_tx.as_mut().expect("just created"))
    }

    pub fn profile(&self) -> SrtpProfile {
        self.s.profile
    }

    fn direction(&mut self, d: Direction) -> Result<(), SrtpError> {
        match self.s.direction {
            None => {
                self.s.direction = Some(d);
                Ok(())
            }
            Some(x) if x == d => Ok(()),
            Some(_) => Err(SrtpError::WrongDirection),
        }
    }

    fn admit(list: &mut Vec<u32>, ssrc: u32) -> Result<(), SrtpError> {
        if list.contains(&ssrc) {
            return Ok(());
        }
        if list.len() >= MAX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        list.push(ssrc);
        Ok(())
    }

    /// Encrypts and authenticates an RTP packet (header in clear, payload encrypted, tag
    /// appended). The result is `pkt.len() + profile.rtp_overhead()` bytes, in a new buffer
    /// (one allocation); [`protect_rtp_into`](Self::protect_rtp_into) and
    /// [`protect_rtp_in_place`](Self::protect_rtp_in_place) allocate nothing.
    pub fn protect_rtp(&mut self, pkt: &[u8]) -> Result<Bytes, SrtpError> {
        self.direction(Direction::Protect)?;
        check_rtp(pkt, 0)?;
        let mut out = vec![0u8; pkt.len() + self.s.profile.rtp_overhead()];
        let n = self.tx()?.protect_into(pkt, &mut out)?;
        out.truncate(n);
        Ok(Bytes::from(out))
    }

    /// [`protect_rtp`](Self::protect_rtp) into `out`, which must hold
    /// `pkt.len() + profile.rtp_overhead()` bytes ([`SrtpError::BufferTooSmall`] otherwise).
    /// Returns the protected length. No allocation.
    pub fn protect_rtp_into(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        self.direction(Direction::Protect)?;
        check_rtp(pkt, 0)?;
        self.tx()?.protect_into(pkt, out)
    }

    /// [`protect_rtp`](Self::protect_rtp) in place: `buf[..len]` is the RTP packet; it is
    /// encrypted where it is and the tag written after it, so `buf` needs
    /// `len + profile.rtp_overhead()` bytes. Returns the protected length. No allocation.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.direction(Direction::Protect)?;
        check_rtp(buf.get(..len).unwrap_or(buf), 0)?;
        self.tx()?.protect_in_place(buf, len)
    }

    /// Verifies, replay-checks and decrypts an SRTP packet; returns the plain RTP packet.
    pub fn unprotect_rtp(&mut self, pkt: &[u8]) -> Result<Bytes, SrtpError> {
        self.direction(Direction::Unprotect)?;
        check_rtp(pkt, self.s.profile.rtp_overhead())?;
        let ssrc = rtp_ssrc(pkt);
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let slot = self.s.rtp_replay.iter().position(|w| w.ssrc == ssrc);
        let index = match slot {
            Some(i) => {
                let w = &self.s.rtp_replay[i];
                let index = w.estimate_rtp_index(seq);
                w.check(index)?;
                index
            }
            None => seq as u64,
        };
        Self::admit(&mut self.s.rtp_ssrcs, ssrc)?;
        let out = self.lib()?.decrypt_rtp(pkt)?;
        match slot {
            Some(i) => self.s.rtp_replay[i].accept(index),
            None => {
                let mut w = ReplayWindow::new(ssrc, index);
                w.accept(index);
                self.s.rtp_replay.push(w);
            }
        }
        Ok(out)
    }

    /// Encrypts and authenticates an RTCP compound packet (SRTCP index and E flag appended).
    pub fn protect_rtcp(&mut self, pkt: &[u8]) -> Result<Bytes, SrtpError> {
        self.direction(Direction::Protect)?;
        check_rtcp(pkt, 0)?;
        Self::admit(&mut self.s.rtcp_ssrcs, rtcp_ssrc(pkt))?;
        Ok(self.lib()?.encrypt_rtcp(pkt)?)
    }

    /// Verifies, replay-checks and decrypts an SRTCP packet; returns the plain RTCP packet.
    pub fn unprotect_rtcp(&mut self, pkt: &[u8]) -> Result<Bytes, SrtpError> {
        self.direction(Direction::Unprotect)?;
        check_rtcp(pkt, self.s.profile.rtcp_overhead())?;
        let ssrc = rtcp_ssrc(pkt);
        // The E flag + 31-bit index sit right after the encrypted part: before the 10-byte
        // HMAC tag for AES-CM, at the very end for GCM (whose tag is inside the ciphertext).
        let at = match self.s.profile {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => pkt.len() - 4,
            _ => pkt.len() - self.s.profile.rtcp_overhead(),
        };
        let word = u32::from_be_bytes([pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]]);
        if word & 0x8000_0000 == 0 {
            return Err(SrtpError::UnencryptedSrtcp);
        }
        let index = (word & 0x7fff_ffff) as u64;
        let slot = self.s.rtcp_replay.iter().position(|w| w.ssrc == ssrc);
        if let Some(i) = slot {
            self.s.rtcp_replay[i].check(index)?;
        }
        Self::admit(&mut self.s.rtcp_ssrcs, ssrc)?;
        let out = self.lib()?.decrypt_rtcp(pkt)?;
        match slot {
            Some(i) => self.s.rtcp_replay[i].accept(index),
            None => {
                let mut w = ReplayWindow::new(ssrc, index);
                w.accept(index);
                self.s.rtcp_replay.push(w);
            }
        }
        Ok(out)
    }
}

fn rtp_ssrc(pkt: &[u8]) -> u32 {
    u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]])
}

fn rtcp_ssrc(pkt: &[u8]) -> u32 {
    u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]])
}

/// Version 2, at least a fixed header (+ CSRCs) + `trailer` bytes, and a header extension
/// the library's header parser reads as it is on the wire (it panics on RFC 8285 elements
/// that run past the packet, and mis-sizes the header for ones that overrun their block).
fn check_rtp(pkt: &[u8], trailer: usize) -> Result<(), SrtpError> {
    if pkt.len() < RTP_HEADER_LEN + trailer {
        return Err(SrtpError::Malformed("too short for RTP/SRTP"));
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::Malformed("RTP version is not 2"));
    }
    let cc = (pkt[0] & 0x0f) as usize;
    if pkt.len() < RTP_HEADER_LEN + 4 * cc + trailer {
        return Err(SrtpError::Malformed("too short for its CSRC count"));
    }
    if !crate::rtp::header_extension_well_formed(&pkt[..pkt.len() - trailer]) {
        return Err(SrtpError::Malformed("malformed RTP header extension"));
    }
    Ok(())
}

fn check_rtcp(pkt: &[u8], trailer: usize) -> Result<(), SrtpError> {
    if pkt.len() < RTCP_HEADER_LEN + trailer {
        return Err(SrtpError::Malformed("too short for RTCP/SRTCP"));
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::Malformed("RTCP version is not 2"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal RTP packet: V=2, PT 96, given seq/ssrc, `len` payload bytes.
    fn rtp(seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..len).map(|i| (i * 7 + seq as usize) as u8));
        p
    }

    /// RTCP receiver report with one report block (32 bytes).
    fn rtcp_rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x81, 201, 0, 7];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&[0u8; 20]);
        p
    }

    fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let k = SrtpKeys::generate(profile).unwrap();
        (SrtpContext::new(&k).unwrap(), SrtpContext::new(&k).unwrap())
    }

    #[test]
    fn srtp_context_can_move_to_a_shard_thread() {
        fn send<T: Send + 'static>() {}
        send::<SrtpContext>();
        send::<SrtpKeys>();
        send::<SrtpError>();
    }

    #[test]
    fn srtp_context_is_one_pointer_in_an_option() {
        // Every session leg holds two of these, SRTP or not.
        assert_eq!(
            std::mem::size_of::<Option<SrtpContext>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn srtp_profile_names_and_lengths() {
        for p in SrtpProfile::ALL {
            assert_eq!(SrtpProfile::from_sdes_name(p.sdes_name()), Some(p));
            assert_eq!(p.to_string().parse::<SrtpProfile>().unwrap(), p);
            let wp = p.to_webrtc();
            assert_eq!(p.key_len(), wp.key_len());
            assert_eq!(p.salt_len(), wp.salt_len());
        }
        assert_eq!(SrtpProfile::AesCm128HmacSha1_80.master_len(), 30);
        assert_eq!(SrtpProfile::AeadAes128Gcm.master_len(), 28);
        assert_eq!(SrtpProfile::AeadAes256Gcm.master_len(), 44);
        assert_eq!(
            SrtpProfile::from_sdes_name("SRTP_AES128_CM_HMAC_SHA1_80"),
            Some(SrtpProfile::AesCm128HmacSha1_80)
        );
        assert!(matches!(
            "AES_256_CM_HMAC_SHA1_80".parse::<SrtpProfile>(),
            Err(SrtpError::UnsupportedSuite(_))
        ));
    }

    #[test]
    fn srtp_round_trip_all_profiles() {
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            for seq in 0..50u16 {
                let plain = rtp(seq, 0xdead_beef, 1 + seq as usize * 20);
                let enc = tx.protect_rtp(&plain).unwrap();
                assert_eq!(enc.len(), plain.len() + profile.rtp_overhead(), "{profile}");
                assert_eq!(&enc[..12], &plain[..12], "header stays in clear");
                // (A 1-byte payload encrypts to itself once in 256 random keys: skip it.)
                if plain.len() > 12 + 4 {
                    assert_ne!(&enc[12..plain.len()], &plain[12..], "payload encrypted");
                }
                let dec = rx.unprotect_rtp(&enc).unwrap();
                assert_eq!(&dec[..], &plain[..], "{profile}");
            }
            for _ in 0..5 {
                let plain = rtcp_rr(0x0102_0304);
                let enc = tx.protect_rtcp(&plain).unwrap();
                assert_eq!(
                    enc.len(),
                    plain.len() + profile.rtcp_overhead(),
                    "{profile}"
                );
                let dec = rx.unprotect_rtcp(&enc).unwrap();
                assert_eq!(&dec[..], &plain[..], "{profile}");
            }
        }
    }

    #[test]
    fn srtp_rtp_with_csrc_and_extension_round_trip() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        // CC=1, X=1, one-byte-header extension with one 2-byte element (padded to 4).
        let mut p = vec![0x91, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 7];
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x11, 0xaa, 0xbb, 0]);
        p.extend_from_slice(b"payload bytes");
        let enc = tx.protect_rtp(&p).unwrap();
        assert_eq!(&enc[..24], &p[..24]);
        assert_eq!(&rx.unprotect_rtp(&enc).unwrap()[..], &p[..]);
    }

    #[test]
    fn srtp_tampered_packet_fails_auth() {
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            let enc = tx.protect_rtp(&rtp(1, 7, 100)).unwrap();
            for at in [1, 3, 11, 20, enc.len() - 1] {
                let mut bad = enc.to_vec();
                bad[at] ^= 0x01;
                assert_eq!(
                    rx.unprotect_rtp(&bad),
                    Err(SrtpError::Auth),
                    "{profile} byte {at}"
                );
            }
            // The untouched packet still passes: failures leave no replay state behind.
            assert!(rx.unprotect_rtp(&enc).is_ok());

            let enc = tx.protect_rtcp(&rtcp_rr(7)).unwrap();
            let mut bad = enc.to_vec();
            bad[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&bad), Err(SrtpError::Auth), "{profile}");
            assert!(rx.unprotect_rtcp(&enc).is_ok());
        }
    }

    #[test]
    fn srtp_wrong_key_fails_auth() {
        let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let (_, mut other) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let enc = tx.protect_rtp(&rtp(1, 7, 100)).unwrap();
        assert_eq!(other.unprotect_rtp(&enc), Err(SrtpError::Auth));
    }

    #[test]
    fn srtp_replayed_packet_is_rejected() {
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            let encs: Vec<Bytes> = (100..110u16)
                .map(|s| tx.protect_rtp(&rtp(s, 9, 50)).unwrap())
                .collect();
            for e in &encs {
                rx.unprotect_rtp(e).unwrap();
            }
            for (i, e) in encs.iter().enumerate() {
                assert_eq!(
                    rx.unprotect_rtp(e),
                    Err(SrtpError::Replay {
                        ssrc: 9,
                        index: 100 + i as u64
                    }),
                    "{profile}"
                );
            }
            let r = tx.protect_rtcp(&rtcp_rr(9)).unwrap();
            rx.unprotect_rtcp(&r).unwrap();
            assert!(matches!(
                rx.unprotect_rtcp(&r),
                Err(SrtpError::Replay { ssrc: 9, .. })
            ));
        }
    }

    #[test]
    fn srtp_reordering_within_window_is_accepted_once() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let encs: Vec<Bytes> = (0..300u16)
            .map(|s| tx.protect_rtp(&rtp(s, 1, 20)).unwrap())
            .collect();
        // Deliver 0..200, then 150..199 again (replays), then 201, then 200 (late, ok).
        for e in &encs[..200] {
            rx.unprotect_rtp(e).unwrap();
        }
        for e in &encs[150..200] {
            assert!(matches!(rx.unprotect_rtp(e), Err(SrtpError::Replay { .. })));
        }
        rx.unprotect_rtp(&encs[201]).unwrap();
        rx.unprotect_rtp(&encs[200]).unwrap();
        assert!(matches!(
            rx.unprotect_rtp(&encs[200]),
            Err(SrtpError::Replay { .. })
        ));
        // Older than the window: refused even though never seen.
        let (mut tx3, mut rx3) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let encs: Vec<Bytes> = (0..200u16)
            .map(|s| tx3.protect_rtp(&rtp(s, 1, 20)).unwrap())
            .collect();
        rx3.unprotect_rtp(&encs[199]).unwrap();
        assert!(matches!(
            rx3.unprotect_rtp(&encs[199 - REPLAY_WINDOW as usize]),
            Err(SrtpError::Replay { .. })
        ));
        rx3.unprotect_rtp(&encs[199 - REPLAY_WINDOW as usize + 1])
            .unwrap();
    }

    #[test]
    fn srtp_sequence_wrap_keeps_working() {
        // Past 65535 the ROC increments; sender and receiver must agree, and the replay
        // window must follow the extended index.
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut seq = 65_500u16;
        let mut kept = Vec::new();
        for _ in 0..100 {
            let e = tx.protect_rtp(&rtp(seq, 5, 30)).unwrap();
            let d = rx.unprotect_rtp(&e).unwrap();
            assert_eq!(&d[..], &rtp(seq, 5, 30)[..]);
            kept.push(e);
            seq = seq.wrapping_add(1);
        }
        // A packet from before the wrap (seq 65530) replayed after it is still a replay.
        assert!(matches!(
            rx.unprotect_rtp(&kept[30]),
            Err(SrtpError::Replay { index: 65530, .. })
        ));
        assert!(matches!(
            rx.unprotect_rtp(&kept[99]),
            Err(SrtpError::Replay { index, .. }) if index == 65536 + 63
        ));
    }

    #[test]
    fn srtp_direction_is_enforced() {
        let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let e = tx.protect_rtp(&rtp(1, 1, 10)).unwrap();
        assert_eq!(tx.unprotect_rtp(&e), Err(SrtpError::WrongDirection));
        assert_eq!(tx.unprotect_rtcp(&e), Err(SrtpError::WrongDirection));
    }

    #[test]
    fn srtp_unencrypted_srtcp_is_refused() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let enc = tx.protect_rtcp(&rtcp_rr(3)).unwrap();
        let mut bad = enc.to_vec();
        let at = bad.len() - 14;
        bad[at] &= 0x7f;
        assert_eq!(rx.unprotect_rtcp(&bad), Err(SrtpError::UnencryptedSrtcp));
        // Forged E=0 packet with a garbage tag: the library alone would accept it.
        let mut forged = rtcp_rr(3);
        forged.extend_from_slice(&[0, 0, 0, 5]);
        forged.extend_from_slice(&[0u8; 10]);
        assert_eq!(rx.unprotect_rtcp(&forged), Err(SrtpError::UnencryptedSrtcp));
        assert!(rx.unprotect_rtcp(&enc).is_ok());
    }

    #[test]
    fn srtp_truncated_or_garbage_input_never_panics() {
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            let e = tx.protect_rtp(&rtp(1, 1, 40)).unwrap();
            let r = tx.protect_rtcp(&rtcp_rr(1)).unwrap();
            for n in 0..e.len() {
                assert!(rx.unprotect_rtp(&e[..n]).is_err(), "{profile} rtp len {n}");
            }
            for n in 0..r.len() {
                assert!(
                    rx.unprotect_rtcp(&r[..n]).is_err(),
                    "{profile} rtcp len {n}"
                );
            }
            for n in 0..40 {
                let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 0x80) as u8).collect();
                let _ = rx.unprotect_rtp(&junk);
                let _ = rx.unprotect_rtcp(&junk);
            }
            let (mut tx2, _) = pair(profile);
            for n in 0..12 {
                assert!(tx2.protect_rtp(&rtp(1, 1, 0)[..n]).is_err());
            }
            for n in 0..8 {
                assert!(tx2.protect_rtcp(&rtcp_rr(1)[..n]).is_err());
            }
        }
    }

    #[test]
    fn srtp_malformed_header_extension_is_refused_not_a_panic() {
        // Found by fuzz/srtp_unprotect: one-byte element 0x1F (ID 1, 16 bytes) in a one-word
        // extension block. parse_rtp accepts the packet (forwarding copies the block
        // verbatim), but webrtc-srtp's header parser read past the block: a panic when the
        // packet ends within the element, a wrong encryption offset otherwise.
        let mut p = rtp(1, 7, 0);
        p[0] |= 0x10;
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x1F, 1, 2, 3]);
        for profile in SrtpProfile::ALL {
            let (mut tx, mut rx) = pair(profile);
            for extra in [0, 3, 13, 15, 16, 40] {
                let mut q = p.clone();
                q.extend(std::iter::repeat_n(0xAA, extra));
                assert!(crate::rtp::parse_rtp(&q).is_ok());
                assert_eq!(
                    tx.protect_rtp(&q),
                    Err(SrtpError::Malformed("malformed RTP header extension")),
                    "{profile} +{extra}"
                );
                q.extend_from_slice(&[0x55; 16]);
                assert!(rx.unprotect_rtp(&q).is_err(), "{profile} +{extra}");
            }
            // Well-formed one- and two-byte extensions still round trip.
            for (seq, ext) in [
                (2, &[0xBE, 0xDE, 0, 2, 0x10, 0xAA, 0x21, 1, 2, 0, 0, 0][..]),
                (3, &[0x10, 0x00, 0, 1, 0x01, 0x02, 0xAA, 0xBB][..]),
            ] {
                let mut q = rtp(seq, 7, 0);
                q[0] |= 0x10;
                q.extend_from_slice(ext);
                q.extend_from_slice(b"payload");
                let enc = tx.protect_rtp(&q).unwrap();
                assert_eq!(&rx.unprotect_rtp(&enc).unwrap()[..], &q[..]);
            }
        }
    }

    #[test]
    fn srtp_ssrc_count_is_bounded() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        for ssrc in 0..MAX_SSRCS as u32 {
            let e = tx.protect_rtp(&rtp(1, ssrc, 10)).unwrap();
            rx.unprotect_rtp(&e).unwrap();
        }
        assert_eq!(
            tx.protect_rtp(&rtp(1, 999, 10)),
            Err(SrtpError::TooManySsrcs)
        );
        // Forged packets with fresh SSRCs are stopped before the library keeps state.
        let mut forged = rtp(1, 12345, 30);
        forged.extend_from_slice(&[0; 10]);
        assert_eq!(rx.unprotect_rtp(&forged), Err(SrtpError::TooManySsrcs));
        // Known SSRCs keep working.
        let e = tx.protect_rtp(&rtp(2, 3, 10)).unwrap();
        rx.unprotect_rtp(&e).unwrap();
    }

    #[test]
    fn srtp_sdes_parse_and_format() {
        // RFC 4568 §4 example, plus what ffmpeg writes.
        let c = SdesCrypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        );
        assert_eq!(
            c,
            Err(SrtpError::InvalidSdes(
                "MKI \"1:4\" is not supported".into()
            ))
        );
        let c = SdesCrypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.keys.profile, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!(c.keys.key.len(), 16);
        assert_eq!(c.keys.salt.len(), 14);
        assert_eq!(&c.keys.key[..4], b"=-n@");
        assert_eq!(
            c.to_sdes(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
        let ff = "1 AES_CM_128_HMAC_SHA1_80 inline:6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD";
        let k = SrtpKeys::parse_sdes(ff).unwrap();
        assert_eq!(k.to_sdes(1), ff);
        assert_eq!(
            SrtpKeys::from_ffmpeg_params(
                SrtpProfile::AesCm128HmacSha1_80,
                "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD"
            )
            .unwrap(),
            k
        );
        assert_eq!(
            k.to_ffmpeg_params(),
            "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD"
        );
        // Extra whitespace, decimal lifetime, WSH, tag 999999999, DTLS-SRTP suite spelling.
        let k2 = SdesCrypto::parse(
            "  999999999\tSRTP_AES128_CM_HMAC_SHA1_80  inline:6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD|1048576 WSH=128 ",
        )
        .unwrap();
        assert_eq!(k2.tag, 999_999_999);
        assert_eq!(k2.keys, k);
        assert_eq!(k2.to_sdes(), format!("999999999 {}", &ff[2..]));
        let e = SdesCrypto::parse(&ff.replace("_80", "_32")).unwrap_err();
        assert!(e.to_string().contains("use AES_CM_128_HMAC_SHA1_80"), "{e}");
        // GCM: 28 bytes, padded base64 and unpadded both accepted.
        let g = SrtpKeys::generate(SrtpProfile::AeadAes128Gcm).unwrap();
        let line = g.to_sdes(2);
        assert!(line.ends_with('='), "{line}");
        assert_eq!(SrtpKeys::parse_sdes(&line).unwrap(), g);
        assert_eq!(SrtpKeys::parse_sdes(line.trim_end_matches('=')).unwrap(), g);
    }

    #[test]
    fn srtp_sdes_errors_name_the_problem() {
        let key = "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD";
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("x AES_CM_128_HMAC_SHA1_80 inline:K", "tag \"x\""),
            ("0 AES_CM_128_HMAC_SHA1_80 inline:K", "tag \"0\""),
            ("1000000000 AES_CM_128_HMAC_SHA1_80 inline:K", "tag"),
            ("1", "no crypto suite"),
            ("1 F8_128_HMAC_SHA1_80 inline:K", "F8_128_HMAC_SHA1_80"),
            ("1 AES_CM_128_HMAC_SHA1_80", "no key parameters"),
            ("1 AES_CM_128_HMAC_SHA1_80 outline:K", "inline:"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:", "empty"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "base64"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "needs 30 bytes"),
            ("1 AEAD_AES_128_GCM inline:KEY", "needs 28 bytes"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^x", "lifetime"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:4", "MKI"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:KEY;inline:KEY",
                "more than one key",
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:KEY KDR=1", "KDR=1"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:KEY UNENCRYPTED_SRTP",
                "UNENCRYPTED_SRTP",
            ),
        ];
        for (v, want) in cases {
            let v = v.replace("KEY", key);
            let e = SdesCrypto::parse(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{v:?}: {e:?} lacks {want:?}");
            assert!(!e.contains(key), "error leaks the key: {e}");
        }
        let e = SrtpKeys::from_ffmpeg_params(SrtpProfile::AesCm128HmacSha1_80, "AAAA");
        assert!(matches!(
            e,
            Err(SrtpError::KeyLength {
                expected: 30,
                got: 3,
                ..
            })
        ));
    }

    #[test]
    fn srtp_keys_debug_redacts_and_generate_is_random() {
        let a = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
        let b = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
        assert_ne!(a, b);
        let d = format!("{a:?}");
        assert!(
            d.contains("redacted") && !d.contains(&a.master_base64()),
            "{d}"
        );
        assert!(SrtpKeys::new(SrtpProfile::AeadAes128Gcm, vec![0; 16], vec![0; 14]).is_err());
        assert!(SrtpKeys::new(SrtpProfile::AeadAes128Gcm, vec![0; 16], vec![0; 12]).is_ok());
        // The fields are public, so a context re-checks the lengths.
        let bad = SrtpKeys {
            profile: SrtpProfile::AesCm128HmacSha1_80,
            key: vec![],
            salt: vec![],
        };
        assert!(SrtpContext::new(&bad).is_err());
    }

    #[test]
    fn srtp_interop_sdes_line_both_sides() {
        // The publisher side builds its context from the SDES line it offers; the server
        // builds its own from the same text as received. They must interoperate.
        for profile in SrtpProfile::ALL {
            let offered = SrtpKeys::generate(profile).unwrap().to_sdes(1);
            let received = format!("a=crypto:{offered}\r\n");
            let value = received.trim_end().strip_prefix("a=crypto:").unwrap();
            let mut tx = SrtpContext::new(&SrtpKeys::parse_sdes(&offered).unwrap()).unwrap();
            let mut rx = SrtpContext::new(&SrtpKeys::parse_sdes(value).unwrap()).unwrap();
            for seq in [7u16, 8, 9, 11, 10] {
                let p = rtp(seq, 0x55, 300);
                assert_eq!(
                    &rx.unprotect_rtp(&tx.protect_rtp(&p).unwrap()).unwrap()[..],
                    &p[..]
                );
            }
            let r = rtcp_rr(0x55);
            assert_eq!(
                &rx.unprotect_rtcp(&tx.protect_rtcp(&r).unwrap()).unwrap()[..],
                &r[..]
            );
        }
    }

    /// Packets captured from ffmpeg 5.1 (`-f rtp -srtp_out_suite AES_CM_128_HMAC_SHA1_80
    /// -srtp_out_params 6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD -ssrc 305419896 -seq 65534`,
    /// Opus): three SRTP packets across the sequence-number wrap (so ROC 0 -> 1) and the first
    /// SRTCP sender report. An independent implementation's output must decrypt here.
    #[test]
    fn srtp_decrypts_ffmpeg_output() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let rtp_pkts = [
            "80e1fffeab9f36a4123456783b7d13f0bbc8485fb636ed042be2fb30a31f98f668810ab5aca02ad9f61f36a2b0cf4b51259209620bb33fe0f67ca7c2ffaf2253ca87f78d1cc28719113b75ada5d9a79afbe349a3ba9bde3779107b",
            "80e1ffffab9f3a6412345678d091fa6cf4506849bf249398823194b0ad029a47a9ae48fe99b835698bded93bdb42eb7e9342d854e0bbae0404b4fe2dffd4bf5d140832602a818be24fcd0ff742",
            "80e10000ab9f3e241234567871314f8551bd3117e001a7ce1bffb73ce4dc859018daca8e247af00a78009ab84dbb7e78b228bea4c5ccc4ba262fdbd2b42d6eb986495197deb1809956d73aa6",
        ];
        let sr =
            "80c800061234567806824077b779649017bb3374b718c0e58e813f93800000005b1be7a4599f9d78dcc1";
        let keys = SrtpKeys::from_ffmpeg_params(
            SrtpProfile::AesCm128HmacSha1_80,
            "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD",
        )
        .unwrap();
        let mut rx = SrtpContext::new(&keys).unwrap();
        let mut plains = Vec::new();
        for p in rtp_pkts {
            let enc = hex(p);
            let dec = rx.unprotect_rtp(&enc).unwrap();
            assert_eq!(dec.len(), enc.len() - 10);
            assert_eq!(&dec[..12], &enc[..12]);
            plains.push(dec);
        }
        // Opus TOC byte: every packet of one ffmpeg/libopus stream uses the same config.
        assert!(
            plains.iter().all(|p| p[12] == plains[0][12]),
            "{plains:02x?}"
        );
        let dec = rx.unprotect_rtcp(&hex(sr)).unwrap();
        assert_eq!(dec.len(), 28);
        assert_eq!(&dec[..8], &hex(sr)[..8]);
        // A plausible SR: sent before any media, so zero packet and octet counts, and an
        // RTP timestamp within a second (48000 ticks) of the first packet's.
        assert_eq!(&dec[20..28], &[0u8; 8], "{dec:02x?}");
        let ts = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        assert!(ts(&dec[16..20]).wrapping_sub(ts(&hex(rtp_pkts[0])[4..8])) < 48_000);
        // Re-protecting the plaintext with the same keys reproduces ffmpeg's bytes exactly.
        let mut tx = SrtpContext::new(&keys).unwrap();
        for (p, plain) in rtp_pkts.iter().zip(&plains) {
            assert_eq!(&tx.protect_rtp(plain).unwrap()[..], &hex(p)[..]);
        }
    }
}
