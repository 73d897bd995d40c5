//! engine::rtp (parse_rtp, is_rtcp, validate_rtcp, write_rewritten_header) and
//! engine::rewrite::Rewriter, with the `rtp` crate as a differential reference.
//!
//! Input: the whole input is first checked as one datagram (so a raw packet is a useful
//! seed). Then: 4 bytes of Rewriter seed (LE), followed by datagrams each prefixed by a
//! one-byte length (the last one takes what is left); every datagram that parses as RTP
//! goes through one Rewriter, whose output is checked against its contract.
#![no_main]

use bytes::Bytes;
use engine::rewrite::{Rewriter, Rewritten, MAX_TRACKS};
use engine::rtp::{
    header_extension_well_formed, is_rtcp, parse_rtp, validate_rtcp, write_rewritten_header,
    ParseError,
};
use libfuzzer_sys::fuzz_target;
use webrtc_util::Unmarshal;

fuzz_target!(|data: &[u8]| {
    check_datagram(data);
    if data.len() < 4 {
        return;
    }
    let seed = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let mut rw = Rewriter::new(seed);
    let mut model = Model::default();
    let mut rest = &data[4..];
    while let Some((&len, tail)) = rest.split_first() {
        let (pkt, tail) = tail.split_at((len as usize).min(tail.len()));
        rest = tail;
        check_datagram(pkt);
        if is_rtcp(pkt) {
            continue;
        }
        if let Ok(h) = parse_rtp(pkt) {
            model.step(&mut rw, h.payload_type, h.seq, h.timestamp, h.ssrc);
        }
    }
});

fn check_datagram(pkt: &[u8]) {
    assert_eq!(
        is_rtcp(pkt),
        pkt.len() >= 2 && (192..=223).contains(&pkt[1])
    );
    // Must not panic on anything; its own invariants are checked in rtcp_feedback.
    let _ = validate_rtcp(pkt);

    let parsed = parse_rtp(pkt);
    // The extension check is parse_rtp's header check plus a look inside the block.
    if header_extension_well_formed(pkt) && pkt[0] >> 6 == 2 && pkt[0] & 0x20 == 0 {
        assert!(parsed.is_ok());
    }
    if parsed.is_ok() && pkt[0] & 0x10 == 0 {
        assert!(header_extension_well_formed(pkt));
    }
    if let Ok(h) = parsed {
        let cc = (pkt[0] & 0x0f) as usize;
        assert!(pkt.len() >= 12 && pkt[0] >> 6 == 2);
        assert!(h.payload_offset >= 12 + 4 * cc && h.payload_offset <= pkt.len());
        let pad = if pkt[0] & 0x20 != 0 {
            pkt[pkt.len() - 1] as usize
        } else {
            0
        };
        assert!(h.payload_offset + pad <= pkt.len());
        assert_eq!(h.seq, u16::from_be_bytes([pkt[2], pkt[3]]));
        assert_eq!(
            h.timestamp,
            u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]])
        );
        assert_eq!(
            h.ssrc,
            u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]])
        );

        // A rewritten packet (new head + the original rest, as the shard sends it) parses
        // to the same layout with only seq/ts/ssrc changed.
        let (seq, ts, ssrc) = (!h.seq, h.timestamp.rotate_left(7), h.ssrc ^ 0x5a5a_5a5a);
        let mut head = [0u8; 12];
        write_rewritten_header(pkt, seq, ts, ssrc, &mut head);
        let mut out = head.to_vec();
        out.extend_from_slice(&pkt[12..]);
        let h2 = parse_rtp(&out).expect("rewritten packet parses");
        assert_eq!((h2.seq, h2.timestamp, h2.ssrc), (seq, ts, ssrc));
        assert_eq!(
            (h2.marker, h2.payload_type, h2.payload_offset),
            (h.marker, h.payload_type, h.payload_offset)
        );
        assert_eq!(&out[1..2], &pkt[1..2]);
        assert_eq!(&out[12..], &pkt[12..]);
    }
    differential(pkt, parsed);
}

/// Compares with `rtp::packet::Packet::unmarshal` where both must agree.
fn differential(pkt: &[u8], ours: Result<engine::rtp::RtpHeader, ParseError>) {
    // The rtp crate does not check the version, and panics (Buf::copy_to_bytes past the end)
    // or reads payload bytes as extension data when RFC 8285 elements overrun a block that
    // fits, so only well-formed extensions, or blocks it refuses unread, are given to it.
    let safe = header_extension_well_formed(pkt) || !extension_block_fits(pkt);
    if pkt.len() < 2 || pkt[0] >> 6 != 2 || !safe {
        return;
    }
    let reference = rtp::packet::Packet::unmarshal(&mut Bytes::copy_from_slice(pkt));
    match (ours, reference) {
        (Ok(h), Ok(p)) => {
            assert_eq!(h.seq, p.header.sequence_number);
            assert_eq!(h.timestamp, p.header.timestamp);
            assert_eq!(h.ssrc, p.header.ssrc);
            assert_eq!(h.payload_type, p.header.payload_type);
            assert_eq!(h.marker, p.header.marker);
            assert_eq!(p.header.csrc.len(), (pkt[0] & 0x0f) as usize);
            let pad = if p.header.padding {
                pkt[pkt.len() - 1] as usize
            } else {
                0
            };
            assert_eq!(&pkt[h.payload_offset..pkt.len() - pad], &p.payload[..]);
        }
        (Ok(h), Err(e)) => panic!("we accept {h:?}, the rtp crate says {e}"),
        // We are stricter in one place only: padding with a zero count (RFC 3550 says the
        // count includes itself, so it is at least 1).
        (Err(e), Ok(_)) => {
            assert_eq!(e, ParseError::BadLength);
            assert!(pkt[0] & 0x20 != 0 && pkt[pkt.len() - 1] == 0);
        }
        (Err(_), Err(_)) => {}
    }
}

/// Whether the packet has an extension whose block (not its elements) fits.
fn extension_block_fits(pkt: &[u8]) -> bool {
    if pkt.len() < 12 || pkt[0] & 0x10 == 0 {
        return false;
    }
    let off = 12 + 4 * (pkt[0] & 0x0f) as usize;
    pkt.len() >= off + 4
        && pkt.len() >= off + 4 + 4 * u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]) as usize
}

/// What the Rewriter promises (module docs of engine::rewrite), per payload type.
#[derive(Default)]
struct Model {
    tracks: Vec<TrackModel>,
}

struct TrackModel {
    pt: u8,
    src_ssrc: u32,
    last_in: (u16, u32),
    last_out: Rewritten,
    /// Highest output sequence number so far (serial-number order).
    top_seq: u16,
}

impl Model {
    fn step(&mut self, rw: &mut Rewriter, pt: u8, seq: u16, ts: u32, ssrc: u32) {
        let out = rw.rewrite(pt, seq, ts, ssrc);
        let Some(i) = self.tracks.iter().position(|t| t.pt == pt) else {
            match out {
                None => assert_eq!(self.tracks.len(), MAX_TRACKS, "refused a free track"),
                Some(o) => {
                    assert!(
                        self.tracks.len() < MAX_TRACKS,
                        "more than MAX_TRACKS tracks"
                    );
                    assert_ne!(o.ssrc, 0);
                    self.tracks.push(TrackModel {
                        pt,
                        src_ssrc: ssrc,
                        last_in: (seq, ts),
                        last_out: o,
                        top_seq: o.seq,
                    });
                    self.check_lookups(rw, pt, o, ssrc, seq);
                }
            }
            return;
        };
        let o = out.expect("a known track is always rewritten");
        let t = &mut self.tracks[i];
        assert_eq!(o.ssrc, t.last_out.ssrc, "output SSRC changed");
        if ssrc == t.src_ssrc {
            // Constant offset within one source: gaps and reordering are preserved.
            assert_eq!(
                o.seq.wrapping_sub(t.last_out.seq),
                seq.wrapping_sub(t.last_in.0)
            );
            assert_eq!(
                o.timestamp.wrapping_sub(t.last_out.timestamp),
                ts.wrapping_sub(t.last_in.1)
            );
        } else {
            // Publisher restart: continue right after the highest sequence number sent.
            assert_eq!(
                o.seq,
                t.top_seq.wrapping_add(1),
                "restart did not continue at +1"
            );
            t.src_ssrc = ssrc;
        }
        if (o.seq.wrapping_sub(t.top_seq) as i16) > 0 {
            t.top_seq = o.seq;
        }
        t.last_in = (seq, ts);
        t.last_out = o;
        self.check_lookups(rw, pt, o, ssrc, seq);
    }

    fn check_lookups(&self, rw: &Rewriter, pt: u8, o: Rewritten, ssrc: u32, seq: u16) {
        assert_eq!(rw.out_ssrc(pt), Some(o.ssrc));
        assert_eq!(rw.ssrc_pairs().count(), self.tracks.len());
        // NACK translation maps the output back to the input (unless two tracks share an
        // output SSRC, which `mix(..).max(1)` allows only for hash values 0 and 1).
        if rw.ssrc_pairs().filter(|&(out, _)| out == o.ssrc).count() == 1 {
            assert_eq!(rw.to_source(o.ssrc, o.seq), Some((ssrc, seq)));
        }
    }
}
