//! The load tool's RTP packets.
//!
//! A plain RTP v2 header (no CSRC, no extension, payload type [`PAYLOAD_TYPE`]) followed by a
//! payload whose first [`STAMP_LEN`] bytes are the send time (u64 nanoseconds on
//! CLOCK_MONOTONIC, big-endian) and the publisher index (u32, big-endian); the rest is filler.
//! The server rewrites only seq / timestamp / SSRC, so the stamp survives the trip.
//!
//! With SRTP the payload is encrypted per player, so the stamp moves into an RTP header
//! extension ([`StampAt::Extension`]): SRTP authenticates the header extension but does not
//! encrypt it (RFC 3711 §3.1), and the server forwards everything after the first 12 header
//! bytes untouched, so players read the stamp without decrypting. The extension is RFC 8285
//! one-byte-header (`0xBEDE`, 4 words) with one element, id [`STAMP_EXT_ID`], 12 bytes.

use engine::rtp::parse_rtp;

pub const RTP_HEADER_LEN: usize = 12;
/// Dynamic payload type used by every publisher.
pub const PAYLOAD_TYPE: u8 = 96;
/// Send timestamp (8 bytes) + publisher index (4 bytes).
pub const STAMP_LEN: usize = 12;
/// Smallest packet the tool can build.
pub const MIN_PACKET_LEN: usize = RTP_HEADER_LEN + STAMP_LEN;
/// RTP clock rate used for the timestamps (video).
pub const CLOCK_RATE: u32 = 90_000;
/// Header-extension element id carrying the stamp.
pub const STAMP_EXT_ID: u8 = 1;
/// The extension: profile + length (4 bytes), element header (1), stamp (12), padding (3).
pub const STAMP_EXT_LEN: usize = 4 + 16;
/// Smallest packet with the stamp in the header extension.
pub const MIN_PACKET_LEN_EXT: usize = RTP_HEADER_LEN + STAMP_EXT_LEN;

/// Where a packet carries its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampAt {
    /// First bytes of the payload (plain RTP).
    Payload,
    /// A header extension element (SRTP: readable without decrypting).
    Extension,
}

impl StampAt {
    /// Offset of the stamp in the packet.
    pub const fn offset(self) -> usize {
        match self {
            StampAt::Payload => RTP_HEADER_LEN,
            StampAt::Extension => RTP_HEADER_LEN + 5,
        }
    }

    /// Smallest packet of this layout.
    pub const fn min_len(self) -> usize {
        match self {
            StampAt::Payload => MIN_PACKET_LEN,
            StampAt::Extension => MIN_PACKET_LEN_EXT,
        }
    }
}

/// The SSRC publisher `idx` uses: distinct per index, never zero.
pub fn publisher_ssrc(idx: u32) -> u32 {
    (0x4c4f_4144 ^ idx.wrapping_mul(0x9e37_79b9)) | 1
}

/// RTP timestamp increment per packet at `pps` packets/s (at least 1).
pub fn ts_step(pps: u32) -> u32 {
    if pps == 0 {
        // Unpaced runs: pretend 30 fps.
        return CLOCK_RATE / 30;
    }
    (CLOCK_RATE / pps).max(1)
}

/// Writes a complete packet into `buf` (its whole length is the packet): header, stamp, and
/// zero filler.
pub fn write_packet(buf: &mut [u8], seq: u16, ts: u32, ssrc: u32, send_ns: u64, publisher: u32) {
    write_packet_at(StampAt::Payload, buf, seq, ts, ssrc, send_ns, publisher);
}

/// [`write_packet`] with the stamp where `at` says.
pub fn write_packet_at(
    at: StampAt,
    buf: &mut [u8],
    seq: u16,
    ts: u32,
    ssrc: u32,
    send_ns: u64,
    publisher: u32,
) {
    assert!(
        buf.len() >= at.min_len(),
        "packet shorter than {} bytes",
        at.min_len()
    );
    buf[RTP_HEADER_LEN..].fill(0);
    write_fields_at(at, buf, seq, ts, ssrc, send_ns, publisher);
}

/// [`write_fields`] with the stamp where `at` says (for the extension: also its header).
#[inline]
pub fn write_fields_at(
    at: StampAt,
    buf: &mut [u8],
    seq: u16,
    ts: u32,
    ssrc: u32,
    send_ns: u64,
    publisher: u32,
) {
    buf[0] = 0x80;
    buf[1] = PAYLOAD_TYPE;
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if at == StampAt::Extension {
        buf[0] |= 0x10;
        buf[12..16].copy_from_slice(&[0xbe, 0xde, 0, 4]);
        buf[16] = (STAMP_EXT_ID << 4) | (STAMP_LEN as u8 - 1);
        buf[29..32].fill(0);
    }
    let o = at.offset();
    buf[o + 8..o + 12].copy_from_slice(&publisher.to_be_bytes());
    restamp_at(at, buf, seq, ts, send_ns);
}

/// [`write_packet`] without touching the filler (for buffers that are reused and already zero
/// past the stamp).
#[inline]
pub fn write_fields(buf: &mut [u8], seq: u16, ts: u32, ssrc: u32, send_ns: u64, publisher: u32) {
    write_fields_at(StampAt::Payload, buf, seq, ts, ssrc, send_ns, publisher);
}

/// Updates seq, timestamp and send time of a packet built by [`write_packet`] (the hot path of
/// the sender: 22 bytes written per packet).
#[inline]
pub fn restamp(buf: &mut [u8], seq: u16, ts: u32, send_ns: u64) {
    restamp_at(StampAt::Payload, buf, seq, ts, send_ns);
}

/// [`restamp`] for either layout.
#[inline]
pub fn restamp_at(at: StampAt, buf: &mut [u8], seq: u16, ts: u32, send_ns: u64) {
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    let o = at.offset();
    buf[o..o + 8].copy_from_slice(&send_ns.to_be_bytes());
}

/// Writes the stamp (send time, publisher index; [`STAMP_LEN`] bytes) at the start of `p`.
pub fn write_stamp(p: &mut [u8], send_ns: u64, publisher: u32) {
    p[..8].copy_from_slice(&send_ns.to_be_bytes());
    p[8..STAMP_LEN].copy_from_slice(&publisher.to_be_bytes());
}

/// (send time, publisher index) from the first [`STAMP_LEN`] bytes of `p`.
pub fn read_stamp(p: &[u8]) -> Option<(u64, u32)> {
    let p = p.get(..STAMP_LEN)?;
    Some((
        u64::from_be_bytes(p[..8].try_into().ok()?),
        u32::from_be_bytes(p[8..].try_into().ok()?),
    ))
}

/// The stamp from the header extension, if the packet has ours (one-byte header, first
/// element id [`STAMP_EXT_ID`] with 12 bytes).
fn ext_stamp(buf: &[u8]) -> Option<&[u8]> {
    if buf.first()? & 0x10 == 0 {
        return None;
    }
    let o = RTP_HEADER_LEN + 4 * (buf[0] & 0x0f) as usize;
    let e = buf.get(o..o + 5 + STAMP_LEN)?;
    (e[..2] == [0xbe, 0xde] && e[4] == (STAMP_EXT_ID << 4) | (STAMP_LEN as u8 - 1)).then(|| &e[5..])
}

/// A packet built by [`write_packet`] (possibly rewritten by the server), as a player sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload_type: u8,
    pub send_ns: u64,
    pub publisher: u32,
}

/// Parses a received datagram; `None` if it is not valid RTP or the payload is too short to
/// carry the stamp.
///
/// The stamp is read from our header extension when there is one (SRTP: the payload is
/// encrypted, the extension is not), else from the payload.
pub fn parse_packet(buf: &[u8]) -> Option<Received> {
    let h = parse_rtp(buf).ok()?;
    let p = match ext_stamp(buf) {
        Some(p) => p,
        None => buf.get(h.payload_offset..h.payload_offset + STAMP_LEN)?,
    };
    let (send_ns, publisher) = read_stamp(p)?;
    Some(Received {
        seq: h.seq,
        timestamp: h.timestamp,
        ssrc: h.ssrc,
        payload_type: h.payload_type,
        send_ns,
        publisher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::rtp::write_rewritten_header;

    #[test]
    fn build_then_parse_roundtrips() {
        let mut buf = vec![0xffu8; 200];
        write_packet(
            &mut buf,
            65535,
            0xdead_beef,
            publisher_ssrc(3),
            123_456_789_012,
            3,
        );
        let h = parse_rtp(&buf).unwrap();
        assert_eq!(h.payload_type, 96);
        assert!(!h.marker);
        assert_eq!(h.payload_offset, 12);
        let r = parse_packet(&buf).unwrap();
        assert_eq!(
            r,
            Received {
                seq: 65535,
                timestamp: 0xdead_beef,
                ssrc: publisher_ssrc(3),
                payload_type: 96,
                send_ns: 123_456_789_012,
                publisher: 3,
            }
        );
        // Filler is zeroed even over a dirty buffer.
        assert!(buf[MIN_PACKET_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn restamp_changes_only_seq_ts_and_time() {
        let mut buf = vec![0u8; 64];
        write_packet(&mut buf, 1, 2, 77, 5, 9);
        let before = buf.clone();
        restamp(&mut buf, 10, 20, 50);
        let r = parse_packet(&buf).unwrap();
        assert_eq!((r.seq, r.timestamp, r.send_ns), (10, 20, 50));
        assert_eq!((r.ssrc, r.publisher), (77, 9));
        assert_eq!(buf[8..12], before[8..12]);
        assert_eq!(buf[24..], before[24..]);
    }

    #[test]
    fn stamp_survives_the_servers_header_rewrite() {
        let mut buf = vec![0u8; 100];
        write_packet(&mut buf, 7, 8, 9, 42, 5);
        let mut hdr = [0u8; 12];
        write_rewritten_header(&buf, 1000, 2000, 3000, &mut hdr);
        buf[..12].copy_from_slice(&hdr);
        let r = parse_packet(&buf).unwrap();
        assert_eq!((r.seq, r.timestamp, r.ssrc), (1000, 2000, 3000));
        assert_eq!((r.send_ns, r.publisher), (42, 5));
    }

    #[test]
    fn rejects_garbage_and_short_payloads() {
        assert!(parse_packet(&[0u8; 40]).is_none()); // version 0
        let mut buf = vec![0u8; MIN_PACKET_LEN];
        write_packet(&mut buf, 1, 1, 1, 1, 1);
        assert!(parse_packet(&buf).is_some());
        assert!(parse_packet(&buf[..MIN_PACKET_LEN - 1]).is_none());
        // A header extension shifts the payload; the stamp is read after it.
        let mut ext = buf[..12].to_vec();
        ext[0] |= 0x10;
        ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        ext.extend_from_slice(&buf[12..]);
        let r = parse_packet(&ext).unwrap();
        assert_eq!((r.send_ns, r.publisher), (1, 1));
    }

    #[test]
    fn stamp_in_the_header_extension_survives_rewrite_and_srtp() {
        use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
        let mut buf = vec![0xffu8; 1100];
        write_packet_at(StampAt::Extension, &mut buf, 9, 10, 11, 12_345, 6);
        let h = parse_rtp(&buf).unwrap();
        assert_eq!(
            h.payload_offset, MIN_PACKET_LEN_EXT,
            "extension parsed as such"
        );
        assert!(buf[MIN_PACKET_LEN_EXT..].iter().all(|&b| b == 0));
        let r = parse_packet(&buf).unwrap();
        assert_eq!((r.seq, r.send_ns, r.publisher), (9, 12_345, 6));
        restamp_at(StampAt::Extension, &mut buf, 10, 20, 99);
        assert_eq!(parse_packet(&buf).unwrap().send_ns, 99);
        // What the server does per player: rewrite the first 12 bytes, forward the rest
        // (extension included) untouched, then SRTP-protect with the player's key.
        let mut hdr = [0u8; 12];
        write_rewritten_header(&buf, 1000, 2000, 3000, &mut hdr);
        buf[..12].copy_from_slice(&hdr);
        for profile in SrtpProfile::ALL {
            let keys = SrtpKeys::generate(profile).unwrap();
            let enc = SrtpContext::new(&keys).unwrap().protect_rtp(&buf).unwrap();
            assert_eq!(&enc[..MIN_PACKET_LEN_EXT], &buf[..MIN_PACKET_LEN_EXT]);
            assert_ne!(
                &enc[MIN_PACKET_LEN_EXT..buf.len()],
                &buf[MIN_PACKET_LEN_EXT..]
            );
            let r = parse_packet(&enc).unwrap();
            assert_eq!((r.seq, r.ssrc, r.send_ns, r.publisher), (1000, 3000, 99, 6));
            let dec = SrtpContext::new(&keys)
                .unwrap()
                .unprotect_rtp(&enc)
                .unwrap();
            assert_eq!(&dec[..], &buf[..]);
        }
    }

    #[test]
    fn ssrcs_and_steps() {
        let s: std::collections::HashSet<u32> = (0..1000).map(publisher_ssrc).collect();
        assert_eq!(s.len(), 1000);
        assert!(!s.contains(&0));
        assert_eq!(ts_step(50), 1800);
        assert_eq!(ts_step(1_000_000), 1);
        assert_eq!(ts_step(0), 3000);
    }
}
