//! Offer/answer for SDP-signalled sessions, sans-IO: turns a publisher's or player's SDP into
//! the legs (one UDP socket per m= section) the engine runs, and writes the answers and the
//! SDP file players open. Sockets are bound by [`crate::core`]; this module only plans.

use std::net::{IpAddr, SocketAddr};

use engine::srtp::{SrtpKeys, SrtpProfile};
use engine::webrtc::{Codec, MediaKind as WebMediaKind, TrackInfo};
use engine::LegKind;

use crate::sdp::{self, MediaKind, MediaSection, Offer, PayloadType, PlayMedia, SdpError};

/// One leg to create: what the engine needs besides the socket.
#[derive(Debug, Clone, Default)]
pub struct LegSpec {
    pub kind: LegKind,
    /// Players: where to send. Publishers: `None` (the first authenticated packet latches).
    pub peer: Option<SocketAddr>,
    /// Publishers: latch only a source at this address (the offer's c=, or `source`).
    pub source_ip: Option<IpAddr>,
    /// Players: the publisher's payload types this leg carries (empty = all).
    pub payload_types: Vec<u8>,
    /// Players: publisher payload type -> the number the player negotiated.
    pub pt_map: Vec<(u8, u8)>,
    /// Keys for what the peer sends us (publisher media, player RTCP).
    pub srtp_in: Option<SrtpKeys>,
    /// Keys for what we send the peer (player media, RTCP to the publisher).
    pub srtp_out: Option<SrtpKeys>,
    /// H264 payload types (publishers): the shard caches their SPS/PPS for late players.
    pub h264: Vec<u8>,
}

pub fn leg_kind(k: MediaKind) -> LegKind {
    match k {
        MediaKind::Audio => LegKind::Audio,
        MediaKind::Video => LegKind::Video,
    }
}

fn is_h264(p: &PayloadType) -> bool {
    p.codec().is_some_and(|c| c.eq_ignore_ascii_case("H264"))
}

/// A publisher's offer, checked and planned: one leg per section with a non-zero port.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub offer: Offer,
    pub legs: Vec<LegSpec>,
    /// For each leg, its index in `offer.media`.
    pub sections: Vec<usize>,
}

impl PublishPlan {
    pub fn new(offer_text: &str) -> Result<PublishPlan, SdpError> {
        let offer = sdp::parse_offer(offer_text)?;
        let mut legs = Vec::new();
        let mut sections = Vec::new();
        for (i, m) in offer.media.iter().enumerate() {
            if m.port == 0 {
                continue;
            }
            m.check_publisher_sends()?;
            let srtp_out = m.answer_keys()?;
            legs.push(LegSpec {
                kind: leg_kind(m.kind),
                source_ip: offer.media_address(i),
                srtp_in: m.crypto.as_ref().map(|c| c.keys.clone()),
                srtp_out,
                h264: m
                    .payload_types
                    .iter()
                    .filter(|p| is_h264(p))
                    .map(|p| p.pt)
                    .collect(),
                ..Default::default()
            });
            sections.push(i);
        }
        if legs.is_empty() {
            return Err(SdpError::general(
                "the offer has no media section with a non-zero port",
            ));
        }
        if legs.len() > engine::MAX_LEGS {
            return Err(SdpError::general(format!(
                "{} media sections; at most {} are supported",
                legs.len(),
                engine::MAX_LEGS
            )));
        }
        Ok(PublishPlan {
            offer,
            legs,
            sections,
        })
    }

    /// The media the stream carries (for players), in leg order.
    pub fn media(&self) -> Vec<MediaSection> {
        self.sections
            .iter()
            .map(|&i| self.offer.media[i].clone())
            .collect()
    }

    /// The answer, once the legs' ports are known (`ports[j]` for leg `j`).
    pub fn answer(&self, server_ip: IpAddr, ports: &[u16]) -> Result<String, SdpError> {
        let mut per_media = vec![0u16; self.offer.media.len()];
        let mut keys: Vec<Option<SrtpKeys>> = vec![None; self.offer.media.len()];
        for (j, &i) in self.sections.iter().enumerate() {
            per_media[i] = ports[j];
            keys[i] = self.legs[j].srtp_out.clone();
        }
        sdp::answer(&self.offer, server_ip, &per_media, Some(&keys))
    }
}

/// The publisher's payload types of `kind` that a player section can take, as
/// (publisher pt, player pt, the player's description): same codec, clock rate and channels.
fn matching_pts(publisher: &MediaSection, player: &MediaSection) -> Vec<(u8, PayloadType)> {
    let mut out = Vec::new();
    for pp in &publisher.payload_types {
        let Some(pr) = &pp.rtpmap else { continue };
        let found = player.payload_types.iter().find(|q| {
            q.rtpmap.as_ref().is_some_and(|qr| {
                qr.encoding.eq_ignore_ascii_case(&pr.encoding)
                    && qr.clock_rate == pr.clock_rate
                    && qr.channels.unwrap_or(1) == pr.channels.unwrap_or(1)
            })
        });
        if let Some(q) = found {
            out.push((pp.pt, q.clone()));
        }
    }
    out
}

/// A player's offer (it says where it receives and what it decodes), planned against the
/// publisher's media.
#[derive(Debug, Clone)]
pub struct PlayPlan {
    pub offer: Offer,
    pub legs: Vec<LegSpec>,
    /// For each leg: its index in `offer.media` and the payload types answered.
    answered: Vec<(usize, Vec<PayloadType>)>,
}

impl PlayPlan {
    pub fn new(offer_text: &str, publisher: &[MediaSection]) -> Result<PlayPlan, SdpError> {
        let offer = sdp::parse_offer(offer_text)?;
        let mut legs = Vec::new();
        let mut answered = Vec::new();
        let mut used = vec![false; publisher.len()];
        for (i, m) in offer.media.iter().enumerate() {
            if m.port == 0 {
                continue;
            }
            if !matches!(
                m.direction,
                sdp::Direction::RecvOnly | sdp::Direction::SendRecv
            ) {
                return Err(SdpError {
                    line: Some(m.line),
                    message: format!(
                        "m={} is {}: a player's offer must receive (recvonly or sendrecv)",
                        m.kind,
                        m.direction.as_str()
                    ),
                });
            }
            let Some((pi, pm)) = publisher
                .iter()
                .enumerate()
                .find(|(j, p)| !used[*j] && p.kind == m.kind)
            else {
                continue;
            };
            let pts = matching_pts(pm, m);
            if pts.is_empty() {
                continue;
            }
            used[pi] = true;
            let ip = offer.media_address(i).ok_or_else(|| SdpError {
                line: Some(m.line),
                message: format!("m={} has no c= address", m.kind),
            })?;
            let srtp_out = m.answer_keys()?;
            legs.push(LegSpec {
                kind: leg_kind(m.kind),
                peer: Some(SocketAddr::new(ip, m.port)),
                payload_types: pts.iter().map(|(p, _)| *p).collect(),
                pt_map: pts
                    .iter()
                    .filter(|(p, q)| *p != q.pt)
                    .map(|(p, q)| (*p, q.pt))
                    .collect(),
                srtp_in: m.crypto.as_ref().map(|c| c.keys.clone()),
                srtp_out,
                h264: Vec::new(),
                source_ip: None,
            });
            answered.push((i, pts.into_iter().map(|(_, q)| q).collect()));
        }
        if legs.is_empty() {
            let have: Vec<String> = publisher.iter().map(describe).collect();
            return Err(SdpError::general(format!(
                "no media section of the offer matches the stream's media ({})",
                have.join("; ")
            )));
        }
        Ok(PlayPlan {
            offer,
            legs,
            answered,
        })
    }

    /// The answer: the server sends each matched section from `ports[j]`. H264 formats get the
    /// stream's cached parameter sets (`sprop`), as in [`file_sdp`].
    /// `ssrc_of` gives the SSRC the player receives a publisher payload type as (`a=ssrc`).
    pub fn answer(
        &self,
        server_ip: IpAddr,
        ports: &[u16],
        sprop: Option<&str>,
        ssrc_of: impl Fn(u8) -> u32,
    ) -> String {
        let ipf = match server_ip {
            IpAddr::V4(a) => format!("IN IP4 {a}"),
            IpAddr::V6(a) => format!("IN IP6 {a}"),
        };
        let mut out = format!("v=0\r\no=- 0 1 {ipf}\r\ns=-\r\nc={ipf}\r\nt=0 0\r\n");
        for (i, m) in self.offer.media.iter().enumerate() {
            let Some(j) = self.answered.iter().position(|(k, _)| *k == i) else {
                // Rejected sections keep their place with port 0 (RFC 3264 §6).
                let pts: Vec<String> = m.payload_types.iter().map(|p| p.pt.to_string()).collect();
                out.push_str(&format!(
                    "m={} 0 {} {}\r\n",
                    m.kind,
                    m.profile,
                    pts.join(" ")
                ));
                continue;
            };
            let mut pts = self.answered[j].1.clone();
            if let Some(sp) = sprop {
                for p in pts.iter_mut().filter(|p| is_h264(p)) {
                    p.fmtp = Some(with_sprop(p.fmtp.as_deref(), sp));
                }
            }
            let list: Vec<String> = pts.iter().map(|p| p.pt.to_string()).collect();
            out.push_str(&format!(
                "m={} {} {} {}\r\n",
                m.kind,
                ports[j],
                m.profile,
                list.join(" ")
            ));
            sdp::write_payload_attrs(&mut out, &pts);
            out.push_str(&format!("a=rtcp:{}\r\na=sendonly\r\n", ports[j]));
            // The rewriter keys SSRCs on the publisher's payload type, mapped from ours.
            let map = &self.legs[j].pt_map;
            let ssrcs: Vec<u32> = pts
                .iter()
                .map(|p| {
                    let src = map.iter().find(|(_, to)| *to == p.pt).map_or(p.pt, |m| m.0);
                    ssrc_of(src)
                })
                .collect();
            sdp::write_ssrcs(&mut out, &ssrcs);
            if let (Some(c), Some(k)) = (&m.crypto, &self.legs[j].srtp_out) {
                out.push_str(&format!("a=crypto:{}\r\n", k.to_sdes(c.tag)));
            }
        }
        out
    }
}

fn describe(m: &MediaSection) -> String {
    let codecs: Vec<String> = m
        .payload_types
        .iter()
        .map(|p| match &p.rtpmap {
            Some(r) => r.to_string(),
            None => p.pt.to_string(),
        })
        .collect();
    format!("{}: {}", m.kind, codecs.join(", "))
}

/// A player that opens an SDP file (`GET /rest-api/stream/<name>.sdp`): section `j` of the
/// publisher's media goes to `host:base_port + 2j` (ffmpeg binds each port and port+1).
pub fn file_legs(
    publisher: &[MediaSection],
    host: IpAddr,
    base_port: u16,
    srtp: Option<SrtpProfile>,
) -> Result<Vec<LegSpec>, String> {
    let last = base_port as usize + 2 * publisher.len().saturating_sub(1) + 1;
    if base_port == 0 || last > 65535 {
        return Err(format!(
            "field `port`: {base_port} leaves no room for {} port pairs",
            publisher.len()
        ));
    }
    publisher
        .iter()
        .enumerate()
        .map(|(j, m)| {
            Ok(LegSpec {
                kind: leg_kind(m.kind),
                peer: Some(SocketAddr::new(host, base_port + 2 * j as u16)),
                payload_types: m.payload_types.iter().map(|p| p.pt).collect(),
                srtp_out: srtp
                    .map(SrtpKeys::generate)
                    .transpose()
                    .map_err(|e| format!("SRTP key generation: {e}"))?,
                ..Default::default()
            })
        })
        .collect()
}

/// The SDP file for [`file_legs`]' player. `sprop` (base64 SPS,PPS cached from the stream)
/// is put into H264 fmtp lines that lack one, so a player joining mid-stream can decode
/// from the next keyframe even when the publisher sends parameter sets only once.
pub fn file_sdp(
    name: &str,
    server_ip: IpAddr,
    publisher: &[MediaSection],
    legs: &[LegSpec],
    sprop: Option<&str>,
    ssrc_of: impl Fn(u8) -> u32,
) -> Result<String, SdpError> {
    let media: Vec<PlayMedia> = publisher
        .iter()
        .zip(legs)
        .map(|(m, l)| {
            let mut pm = PlayMedia::from_offer(m, l.peer.map_or(0, |p| p.port()));
            if let Some(sp) = sprop {
                for p in pm.payload_types.iter_mut().filter(|p| is_h264(p)) {
                    p.fmtp = Some(with_sprop(p.fmtp.as_deref(), sp));
                }
            }
            pm.ssrcs = pm.payload_types.iter().map(|p| ssrc_of(p.pt)).collect();
            pm
        })
        .collect();
    let keys: Vec<Option<SrtpKeys>> = legs.iter().map(|l| l.srtp_out.clone()).collect();
    sdp::play_sdp(name, server_ip, &media, Some(&keys))
}

/// A stream's media sections as an SDP without addresses or keys: the cluster directory's
/// description, which an edge plans its relay publisher from (as from a publisher's offer).
pub fn describe_media(name: &str, media: &[MediaSection]) -> Result<String, SdpError> {
    let pm: Vec<PlayMedia> = media.iter().map(|m| PlayMedia::from_offer(m, 9)).collect();
    sdp::play_sdp(name, IpAddr::from([0, 0, 0, 0]), &pm, None)
}

/// An fmtp value with `sprop-parameter-sets` set to `sprop` unless it already has one.
fn with_sprop(fmtp: Option<&str>, sprop: &str) -> String {
    match fmtp {
        Some(f) if f.contains("sprop-parameter-sets=") => f.to_string(),
        Some(f) if !f.trim().is_empty() => {
            format!(
                "{}; sprop-parameter-sets={sprop}",
                f.trim_end_matches([';', ' '])
            )
        }
        _ => format!("packetization-mode=1; sprop-parameter-sets={sprop}"),
    }
}

/// Codec summary of a stream's media for the stream object: (has_audio, has_video,
/// audio codec, video codec) from the first payload type of each kind.
pub fn codecs(media: &[MediaSection]) -> (bool, bool, Option<String>, Option<String>) {
    let first = |k: MediaKind| {
        media.iter().find(|m| m.kind == k).map(|m| {
            m.payload_types
                .first()
                .and_then(|p| p.codec())
                .map(str::to_string)
        })
    };
    let (a, v) = (first(MediaKind::Audio), first(MediaKind::Video));
    (a.is_some(), v.is_some(), a.flatten(), v.flatten())
}

/// A stream's media as WebRTC tracks (what a WHEP player's answer offers): per kind, the
/// first payload type in H264 (packetization-mode 1), VP8 or Opus. Other codecs cannot go
/// to browsers and are left out.
pub fn tracks_from_media(media: &[MediaSection]) -> Vec<TrackInfo> {
    let mut out: Vec<TrackInfo> = Vec::new();
    for m in media {
        for p in &m.payload_types {
            let Some(r) = &p.rtpmap else { continue };
            let codec = match r.encoding.to_ascii_uppercase().as_str() {
                "H264"
                    if p.fmtp
                        .as_deref()
                        .is_some_and(|f| f.contains("packetization-mode=1")) =>
                {
                    Codec::H264
                }
                "VP8" => Codec::Vp8,
                "OPUS" => Codec::Opus,
                _ => continue,
            };
            if out.iter().any(|t| t.kind == codec.kind()) {
                continue;
            }
            let profile = p.fmtp.as_deref().and_then(|f| {
                f.split(';')
                    .filter_map(|kv| kv.trim().strip_prefix("profile-level-id="))
                    .find_map(|v| u32::from_str_radix(v.trim(), 16).ok())
            });
            out.push(TrackInfo {
                kind: codec.kind(),
                codec,
                clock_rate: r.clock_rate,
                payload_type: p.pt,
                h264_profile_level_id: if codec == Codec::H264 { profile } else { None },
            });
        }
    }
    out
}

/// A WebRTC publisher's tracks as SDP media sections, for RTP players (`.sdp` files, offers).
pub fn media_from_tracks(tracks: &[TrackInfo]) -> Vec<MediaSection> {
    tracks
        .iter()
        .map(|t| MediaSection {
            kind: match t.kind {
                WebMediaKind::Audio => MediaKind::Audio,
                WebMediaKind::Video => MediaKind::Video,
            },
            port: 9,
            profile: sdp::TransportProfile::RtpAvp,
            payload_types: vec![PayloadType {
                pt: t.payload_type,
                rtpmap: Some(sdp::RtpMap {
                    encoding: t.codec.name().to_string(),
                    clock_rate: t.clock_rate,
                    channels: (t.codec == Codec::Opus).then_some(2),
                }),
                fmtp: match t.codec {
                    Codec::H264 => Some(format!(
                        "packetization-mode=1;profile-level-id={:06x}",
                        t.h264_profile_level_id
                            .unwrap_or(engine::webrtc::H264_CONSTRAINED_BASELINE)
                    )),
                    Codec::Opus => Some("minptime=10;useinbandfec=1".into()),
                    Codec::Vp8 => None,
                },
            }],
            crypto: None,
            direction: sdp::Direction::SendOnly,
            connection: None,
            rtcp_port: None,
            rtcp_mux: false,
            mid: None,
            ssrcs: Vec::new(),
            bandwidth_kbps: None,
            line: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FF_H264_OPUS: &str = include_str!("testdata/ffmpeg_h264_opus.sdp");
    const FF_H264_OPUS_SRTP: &str = include_str!("testdata/ffmpeg_h264_opus_srtp.sdp");

    #[test]
    fn publish_plan_has_a_leg_per_section_with_keys() {
        let p = PublishPlan::new(FF_H264_OPUS_SRTP).unwrap();
        assert_eq!(p.legs.len(), 2);
        assert_eq!(p.legs[0].kind, LegKind::Video);
        assert_eq!(p.legs[0].h264, vec![96]);
        assert_eq!(p.legs[1].kind, LegKind::Audio);
        for l in &p.legs {
            let (i, o) = (l.srtp_in.as_ref().unwrap(), l.srtp_out.as_ref().unwrap());
            assert_ne!(i.master(), o.master(), "the server's key is its own");
        }
        let ans = p
            .answer("10.0.0.1".parse().unwrap(), &[20000, 20002])
            .unwrap();
        assert!(ans.contains("m=video 20000 "), "{ans}");
        assert!(ans.contains("m=audio 20002 "), "{ans}");
        assert_eq!(ans.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80").count(), 2);
        let back = sdp::parse_offer(&ans).unwrap();
        assert_eq!(
            back.media[0].crypto.as_ref().unwrap().keys.master(),
            p.legs[0].srtp_out.as_ref().unwrap().master()
        );
        assert_eq!(
            codecs(&p.media()),
            (true, true, Some("opus".into()), Some("H264".into()))
        );
    }

    #[test]
    fn play_plan_matches_codecs_and_maps_payload_types() {
        let publisher = PublishPlan::new(FF_H264_OPUS).unwrap().media();
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=p\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 6000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=recvonly\r\n\
            m=video 6002 RTP/AVP 102 96\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\n";
        let p = PlayPlan::new(offer, &publisher).unwrap();
        assert_eq!(p.legs.len(), 2);
        assert_eq!(p.legs[0].kind, LegKind::Audio);
        assert_eq!(p.legs[0].peer, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(p.legs[0].payload_types, vec![97]);
        assert_eq!(p.legs[0].pt_map, vec![(97, 111)]);
        assert_eq!(p.legs[1].payload_types, vec![96]);
        assert_eq!(p.legs[1].pt_map, vec![(96, 102)]);
        let ans = p.answer(
            "127.0.0.1".parse().unwrap(),
            &[30000, 30002],
            Some("Z0IA,aM4="),
            |pt| 1000 + pt as u32,
        );
        assert!(ans.contains("m=audio 30000 RTP/AVP 111\r\n"), "{ans}");
        // SSRCs are named by the publisher's payload type (97 audio, 96 video).
        assert!(ans.contains("a=ssrc:1097 cname:mediaserver\r\n"), "{ans}");
        assert!(ans.contains("a=ssrc:1096 cname:mediaserver\r\n"), "{ans}");
        assert!(ans.contains("m=video 30002 RTP/AVP 102\r\n"), "{ans}");
        assert!(ans.contains("a=sendonly"));
        assert!(
            ans.contains("a=fmtp:102 sprop-parameter-sets=Z0IA,aM4=\r\n")
                || ans.contains(
                    "a=fmtp:102 packetization-mode=1; sprop-parameter-sets=Z0IA,aM4=\r\n"
                ),
            "{ans}"
        );
    }

    #[test]
    fn play_plan_rejects_offers_without_a_common_codec() {
        let publisher = PublishPlan::new(FF_H264_OPUS).unwrap().media();
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=p\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=video 6002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\n";
        let e = PlayPlan::new(offer, &publisher).unwrap_err();
        assert!(e.message.contains("video: H264/90000"), "{e}");
    }

    #[test]
    fn publish_offer_must_send() {
        let t = FF_H264_OPUS.replace("a=rtpmap:97", "a=recvonly\r\na=rtpmap:97");
        let e = PublishPlan::new(&t).unwrap_err();
        assert!(e.to_string().contains("must send"), "{e}");
    }

    #[test]
    fn file_sdp_has_port_pairs_keys_and_sprop() {
        let publisher = PublishPlan::new(FF_H264_OPUS).unwrap().media();
        let legs = file_legs(
            &publisher,
            "127.0.0.1".parse().unwrap(),
            5000,
            Some(SrtpProfile::AesCm128HmacSha1_80),
        )
        .unwrap();
        assert_eq!(legs[1].peer, Some("127.0.0.1:5002".parse().unwrap()));
        let text = file_sdp(
            "cam",
            "127.0.0.1".parse().unwrap(),
            &publisher,
            &legs,
            Some("Z0IA,aM4="),
            |pt| 7 * pt as u32,
        )
        .unwrap();
        assert!(text.contains(&format!("a=ssrc:{} cname:mediaserver\r\n", 7 * 96)));
        assert!(text.contains(&format!("a=ssrc:{} cname:mediaserver\r\n", 7 * 97)));
        assert!(text.contains("m=video 5000 RTP/SAVP 96"), "{text}");
        assert!(
            text.contains("a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0IA,aM4=\r\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
                .count(),
            2
        );
        assert!(file_legs(&publisher, "127.0.0.1".parse().unwrap(), 65534, None).is_err());
    }

    #[test]
    fn tracks_and_media_convert_both_ways() {
        let media = PublishPlan::new(FF_H264_OPUS).unwrap().media();
        let tracks = tracks_from_media(&media);
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].codec, tracks[0].payload_type), (Codec::H264, 96));
        assert_eq!((tracks[1].codec, tracks[1].payload_type), (Codec::Opus, 97));
        let back = media_from_tracks(&tracks);
        assert_eq!(back[0].payload_types[0].codec(), Some("H264"));
        assert_eq!(
            back[1].payload_types[0].rtpmap.as_ref().unwrap().channels,
            Some(2)
        );
        assert_eq!(
            tracks_from_media(&back),
            tracks
                .iter()
                .map(|t| TrackInfo {
                    h264_profile_level_id: (t.codec == Codec::H264)
                        .then_some(t.h264_profile_level_id.unwrap_or(0x42e01f)),
                    ..*t
                })
                .collect::<Vec<_>>()
        );
        // An offer with only codecs browsers cannot take gives no tracks.
        let pcmu = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
        assert!(tracks_from_media(&PublishPlan::new(pcmu).unwrap().media()).is_empty());
    }
}
