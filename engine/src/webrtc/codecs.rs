//! Which codecs a WebRTC session may negotiate, and how a negotiated payload type maps to a
//! track. Kept apart from the session so the rules can be read (and tested) on their own.
//!
//! str0m's codec configuration is per `Rtc` (session-wide), not per m-line, and an answer
//! lists every configured codec the offer also has. A publisher whose answer allowed both VP8
//! and H264 could switch codecs at will, and the players' answers (written before the
//! publisher sends anything) would have to list every codec too. So each session is built with
//! **one codec per media kind**: for a publisher the first codec of [`WebRtcConfig::codecs`]
//! the offer supports; for a player exactly the publisher's codecs ([`TrackInfo`]).

use str0m::format::{Codec as S0Codec, CodecConfig, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaKind as S0Kind, Pt};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub(crate) fn from_s0(k: S0Kind) -> MediaKind {
        match k {
            S0Kind::Audio => MediaKind::Audio,
            S0Kind::Video => MediaKind::Video,
        }
    }
}

/// The codecs this server negotiates with browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 with `packetization-mode=1` (FU-A / STAP-A), Constrained Baseline (`42e01f`) or
    /// Baseline (`42001f`) profile: what every browser can both encode and decode.
    H264,
    Vp8,
    /// Opus, 48 kHz, 2 channels in SDP (as RFC 7587 requires).
    Opus,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::H264 | Codec::Vp8 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::H264 | Codec::Vp8 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Opus => "opus",
        }
    }

    fn from_s0(c: S0Codec) -> Option<Codec> {
        match c {
            S0Codec::H264 => Some(Codec::H264),
            S0Codec::Vp8 => Some(Codec::Vp8),
            S0Codec::Opus => Some(Codec::Opus),
            _ => None,
        }
    }
}

/// H.264 Constrained Baseline, level 3.1: the profile-level-id browsers prefer.
pub const H264_CONSTRAINED_BASELINE: u32 = 0x42e01f;
/// H.264 Baseline, level 3.1.
pub const H264_BASELINE: u32 = 0x42001f;

/// One media track of a publisher, as negotiated: what a player's answer must offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    pub kind: MediaKind,
    pub codec: Codec,
    /// RTP clock rate (90000 for video, 48000 for Opus).
    pub clock_rate: u32,
    /// The publisher's payload type for this track: the PT of the packets the publish session
    /// outputs (and so of the packets the fan-out hands to [`super::WebRtcSession::send_rtp`]).
    pub payload_type: u8,
    /// H.264 only: the negotiated `profile-level-id` (packetization-mode is always 1).
    pub h264_profile_level_id: Option<u32>,
}

/// A codec this side is willing to put in an answer, before PT negotiation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodecChoice {
    pub codec: Codec,
    pub h264_profile_level_id: Option<u32>,
}

impl CodecChoice {
    /// Adds this codec to a str0m codec config with a provisional PT (str0m adopts the remote's
    /// numbers during negotiation). Video gets an RTX payload type: str0m only answers NACKs
    /// (and only sends NACKs to a publisher) when RTX is negotiated.
    pub(crate) fn add_to(&self, cfg: &mut CodecConfig, pt: u8, rtx: Option<u8>) {
        let rtx = rtx.map(Pt::from);
        match self.codec {
            Codec::H264 => cfg.add_config(
                pt.into(),
                rtx,
                S0Codec::H264,
                Frequency::NINETY_KHZ,
                None,
                FormatParams {
                    level_asymmetry_allowed: Some(true),
                    packetization_mode: Some(1),
                    profile_level_id: Some(
                        self.h264_profile_level_id
                            .unwrap_or(H264_CONSTRAINED_BASELINE),
                    ),
                    ..Default::default()
                },
            ),
            Codec::Vp8 => cfg.add_config(
                pt.into(),
                rtx,
                S0Codec::Vp8,
                Frequency::NINETY_KHZ,
                None,
                FormatParams::default(),
            ),
            Codec::Opus => cfg.add_config(
                pt.into(),
                None,
                S0Codec::Opus,
                Frequency::FORTY_EIGHT_KHZ,
                Some(2),
                FormatParams {
                    min_p_time: Some(10),
                    use_inband_fec: Some(true),
                    ..Default::default()
                },
            ),
        }
    }

    /// Whether a remote payload (from an offer) can carry this codec.
    pub(crate) fn matches(&self, remote: &PayloadParams) -> bool {
        let mut one = CodecConfig::empty();
        self.add_to(&mut one, 96, None);
        one.match_params(*remote).is_some()
    }
}

/// The publisher-side candidates in preference order: H264 expands to Constrained Baseline
/// then Baseline (both packetization-mode=1).
pub(crate) fn publish_candidates(codecs: &[Codec]) -> Vec<CodecChoice> {
    let mut v = Vec::new();
    for &c in codecs {
        match c {
            Codec::H264 => {
                for p in [H264_CONSTRAINED_BASELINE, H264_BASELINE] {
                    v.push(CodecChoice {
                        codec: c,
                        h264_profile_level_id: Some(p),
                    });
                }
            }
            _ => v.push(CodecChoice {
                codec: c,
                h264_profile_level_id: None,
            }),
        }
    }
    v
}

/// Candidates for a player: the track's own codec first, and for H.264 the other baseline
/// flavour as a fallback (a Constrained Baseline stream is a valid Baseline stream, and what
/// browsers send as "Baseline" is constrained-baseline-compatible in practice).
pub(crate) fn play_candidates(track: &TrackInfo) -> Vec<CodecChoice> {
    let own = CodecChoice {
        codec: track.codec,
        h264_profile_level_id: track.h264_profile_level_id,
    };
    let mut v = vec![own];
    if track.codec == Codec::H264 {
        let plid = track
            .h264_profile_level_id
            .unwrap_or(H264_CONSTRAINED_BASELINE);
        if plid >> 16 == 0x42 {
            // Same profile_idc (Baseline); flip the constraint flags.
            let other = if plid & 0x00ff00 == 0 {
                H264_CONSTRAINED_BASELINE
            } else {
                H264_BASELINE
            };
            v.push(CodecChoice {
                codec: Codec::H264,
                h264_profile_level_id: Some(other),
            });
        }
    }
    v
}

/// A negotiated payload, read back from str0m after it answered.
pub(crate) fn track_of(p: &PayloadParams, kind: MediaKind) -> Option<TrackInfo> {
    let spec = p.spec();
    let codec = Codec::from_s0(spec.codec)?;
    if codec.kind() != kind {
        return None;
    }
    Some(TrackInfo {
        kind,
        codec,
        clock_rate: spec.clock_rate.get(),
        payload_type: *p.pt(),
        h264_profile_level_id: if codec == Codec::H264 {
            spec.format.profile_level_id
        } else {
            None
        },
    })
}

/// "H264/90000 (pt 102), VP8/90000 (pt 96)" for error messages.
pub(crate) fn describe(params: &[PayloadParams]) -> String {
    if params.is_empty() {
        return "no payload types".into();
    }
    params
        .iter()
        .map(|p| {
            let s = p.spec();
            let mut d = format!("{}/{} (pt {})", s.codec, s.clock_rate.get(), *p.pt());
            if s.codec == S0Codec::H264 {
                d.push_str(&format!(
                    " packetization-mode={} profile-level-id={:06x}",
                    s.format.packetization_mode.unwrap_or(0),
                    s.format.profile_level_id.unwrap_or(0)
                ));
            }
            d
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_candidates_are_packetization_mode_1_baseline_family() {
        let c = publish_candidates(&[Codec::H264, Codec::Vp8, Codec::Opus]);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].h264_profile_level_id, Some(H264_CONSTRAINED_BASELINE));
        assert_eq!(c[1].h264_profile_level_id, Some(H264_BASELINE));
        let mut cfg = CodecConfig::empty();
        c[0].add_to(&mut cfg, 102, Some(103));
        let p = cfg.params()[0];
        assert_eq!(p.spec().format.packetization_mode, Some(1));
        assert_eq!(p.resend(), Some(103.into()));
        assert!(p.fb_nack() && p.fb_pli());
    }

    #[test]
    fn pm0_does_not_match_pm1() {
        let mut remote = CodecConfig::empty();
        remote.add_h264(104.into(), None, false, H264_CONSTRAINED_BASELINE);
        let cand = CodecChoice {
            codec: Codec::H264,
            h264_profile_level_id: Some(H264_CONSTRAINED_BASELINE),
        };
        assert!(!cand.matches(&remote.params()[0]));
        let mut remote = CodecConfig::empty();
        remote.add_h264(106.into(), None, true, H264_CONSTRAINED_BASELINE);
        assert!(cand.matches(&remote.params()[0]));
    }

    #[test]
    fn play_candidates_add_the_other_baseline_flavour() {
        let t = TrackInfo {
            kind: MediaKind::Video,
            codec: Codec::H264,
            clock_rate: 90_000,
            payload_type: 102,
            h264_profile_level_id: Some(H264_BASELINE),
        };
        let c = play_candidates(&t);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].h264_profile_level_id, Some(H264_CONSTRAINED_BASELINE));
    }
}
