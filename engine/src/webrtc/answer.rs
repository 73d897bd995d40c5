//! Planning the answer to an offer: which m-lines are usable, in which direction, with which
//! codec, before str0m sees the offer; and making str0m's SDP errors readable.

use str0m::change::SdpOffer;
use str0m::format::CodecConfig;
use str0m::media::Direction;

use super::codecs::{self, MediaKind, TrackInfo};
use super::{WebRtcConfig, WebRtcError, WebRtcRole};

/// What the offer's m-lines allow, decided before str0m sees it.
pub(super) struct Plan {
    /// The offer with unusable m-lines made inactive and `sendrecv` made one-way.
    pub(super) offer: SdpOffer,
    /// The codecs to configure (one per media kind; two H.264 flavours for a player).
    pub(super) candidates: Vec<codecs::CodecChoice>,
}

/// Chooses directions and codecs for an offer. Every audio/video m-line that cannot be used
/// (wrong direction, second m-line of a kind, no acceptable codec) is made inactive; if none
/// is left the offer is refused.
pub(super) fn plan(
    cfg: &WebRtcConfig,
    role: WebRtcRole,
    offer: SdpOffer,
    tracks: &[TrackInfo],
) -> Result<Plan, WebRtcError> {
    // Candidates per kind, in preference order.
    let per_track: Vec<(TrackInfo, Vec<codecs::CodecChoice>)> = tracks
        .iter()
        .map(|t| (*t, codecs::play_candidates(t)))
        .collect();
    let publish = codecs::publish_candidates(&cfg.codecs);

    let mut sdp = (*offer).clone();
    let mut chosen: Vec<codecs::CodecChoice> = Vec::new();
    let mut used_tracks: Vec<usize> = Vec::new();
    let mut kinds_taken: Vec<MediaKind> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut codec_problems: Vec<String> = Vec::new();
    let mut usable = 0;

    // str0m's `set_direction` panics on an m-line without a direction attribute (which it
    // reads as inactive), so only ever change a direction that is there. (A macro: str0m's
    // m-line type is public but lives in a private module, so it cannot be named.)
    macro_rules! set_dir {
        ($line:expr, $d:expr) => {
            if $line.direction() != $d {
                $line.set_direction($d);
            }
        };
    }

    for (i, line) in sdp.media_lines.iter_mut().enumerate() {
        if !line.typ.is_media() || line.disabled {
            continue;
        }
        let remote = line.rtp_params();
        let Some(kind) = remote
            .iter()
            .map(|p| MediaKind::from_s0(p.spec().codec.kind()))
            .next()
        else {
            codec_problems.push(format!("m-line {i}: no audio/video payload types"));
            set_dir!(line, Direction::Inactive);
            continue;
        };
        let dir = line.direction();
        let wanted = match role {
            WebRtcRole::Publish => Direction::SendOnly,
            WebRtcRole::Play => Direction::RecvOnly,
        };
        let ok_dir = dir == wanted || dir == Direction::SendRecv;
        if !ok_dir {
            problems.push(format!(
                "m-line {i} ({kind:?}) is {dir}, a {} offer needs {wanted} or sendrecv",
                match role {
                    WebRtcRole::Publish => "WHIP publish",
                    WebRtcRole::Play => "WHEP play",
                }
            ));
            set_dir!(line, Direction::Inactive);
            continue;
        }
        if kinds_taken.contains(&kind) {
            problems.push(format!("m-line {i}: only one {kind:?} track per session"));
            set_dir!(line, Direction::Inactive);
            continue;
        }
        // sendrecv is answered one-way: the session never sends to a publisher nor receives
        // media from a player.
        set_dir!(line, wanted);

        let pick = match role {
            WebRtcRole::Publish => publish
                .iter()
                .find(|c| c.codec.kind() == kind && remote.iter().any(|r| c.matches(r)))
                .copied()
                .map(|c| vec![c]),
            WebRtcRole::Play => {
                let hit = per_track
                    .iter()
                    .enumerate()
                    .filter(|(ti, (t, _))| t.kind == kind && !used_tracks.contains(ti))
                    .find_map(|(ti, (_, cands))| {
                        let ok: Vec<_> = cands
                            .iter()
                            .filter(|c| remote.iter().any(|r| c.matches(r)))
                            .copied()
                            .collect();
                        (!ok.is_empty()).then_some((ti, ok))
                    });
                hit.map(|(ti, ok)| {
                    used_tracks.push(ti);
                    ok
                })
            }
        };
        match pick {
            Some(c) => {
                kinds_taken.push(kind);
                chosen.extend(c);
                usable += 1;
            }
            None => {
                let want = match role {
                    WebRtcRole::Publish => cfg
                        .codecs
                        .iter()
                        .filter(|c| c.kind() == kind)
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join("/"),
                    WebRtcRole::Play => tracks
                        .iter()
                        .filter(|t| t.kind == kind)
                        .map(|t| t.codec.name())
                        .collect::<Vec<_>>()
                        .join("/"),
                };
                let want = if want.is_empty() {
                    "nothing".to_string()
                } else {
                    want
                };
                codec_problems.push(format!(
                    "m-line {i} ({kind:?}) offers {}; accepted: {want}{}",
                    codecs::describe(&remote),
                    if want.contains("H264") {
                        " (H264 needs packetization-mode=1, profile 42e0xx or 4200xx)"
                    } else {
                        ""
                    }
                ));
                set_dir!(line, Direction::Inactive);
            }
        }
    }
    if usable == 0 {
        if !codec_problems.is_empty() {
            let mut all = codec_problems;
            all.extend(problems);
            return Err(WebRtcError::NoSupportedCodec(all.join("; ")));
        }
        if problems.is_empty() {
            return Err(WebRtcError::NoUsableMedia(
                "no audio or video m-line".into(),
            ));
        }
        return Err(WebRtcError::NoUsableMedia(problems.join("; ")));
    }
    for p in problems.iter().chain(codec_problems.iter()) {
        tracing::debug!(role = ?role, "offer m-line not used: {p}");
    }
    Ok(Plan {
        offer: SdpOffer::from(sdp),
        candidates: chosen,
    })
}

/// Payload types for the provisional local config: distinct, in the dynamic range.
/// str0m re-numbers to the remote's PTs while answering.
pub(super) fn codec_config_for(cands: &[codecs::CodecChoice]) -> CodecConfig {
    let mut cfg = CodecConfig::empty();
    let mut next = 96u8;
    for c in cands {
        let pt = next;
        next += 1;
        let rtx = if c.codec.kind() == MediaKind::Video {
            next += 1;
            Some(next - 1)
        } else {
            None
        };
        c.add_to(&mut cfg, pt, rtx);
    }
    cfg
}

/// str0m's parse errors start with the parser's memory address ("Parse error at
/// PointerOffset(0x7f..)"), useless to an HTTP client; keep the explanation lines.
pub(super) fn clean_parse_error(msg: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in msg.lines() {
        let line = match line.find("Parse error at PointerOffset(") {
            Some(i) => line[..i].trim_end().trim_end_matches(':'),
            None => line.trim(),
        };
        if !line.is_empty() {
            parts.push(line);
        }
    }
    match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => format!("{first}: {}", rest.join("; ")),
        _ => parts.join("; "),
    }
}
