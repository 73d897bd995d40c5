//! Zero-copy RTP/RTCP header views (sans-IO).
//!
//! The hot path only needs a handful of header fields and must not allocate, so it reads
//! them in place instead of building a `rtp::packet::Packet` (which owns its CSRC list and
//! extensions). The `rtp` crate is used in tests to cross-check this parser.

/// Why a datagram was rejected as RTP/RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    TooShort,
    BadVersion,
    BadLength,
}

/// The fixed fields of an RTP header plus where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload (after CSRCs and the extension).
    pub payload_offset: usize,
}

/// RFC 5761 demultiplexing: RTCP packet types 192..=223 share the second byte with RTP's
/// marker bit + payload type, and RTP avoids payload types 64..=95 to keep them apart.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

/// Parses and validates an RTP header, including CSRC, extension and padding lengths.
pub fn parse_rtp(buf: &[u8]) -> Result<RtpHeader, ParseError> {
    if buf.len() < 12 {
        return Err(ParseError::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(ParseError::BadVersion);
    }
    let cc = (buf[0] & 0x0f) as usize;
    let mut off = 12 + 4 * cc;
    if buf.len() < off {
        return Err(ParseError::BadLength);
    }
    if buf[0] & 0x10 != 0 {
        if buf.len() < off + 4 {
            return Err(ParseError::BadLength);
        }
        let words = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
        off += 4 + 4 * words;
        if buf.len() < off {
            return Err(ParseError::BadLength);
        }
    }
    if buf[0] & 0x20 != 0 {
        let pad = buf[buf.len() - 1] as usize;
        if pad == 0 || off + pad > buf.len() {
            return Err(ParseError::BadLength);
        }
    }
    Ok(RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload_offset: off,
    })
}

/// Whether `buf`'s header (fixed part, CSRCs, extension) fits and, for the RFC 8285
/// one-byte (`0xBEDE`) and two-byte (`0x100X`) extension profiles, the elements exactly fill
/// the extension block (padding bytes allowed; the reserved one-byte ID 15 is refused).
///
/// [`parse_rtp`] does not look inside the extension: forwarding copies it verbatim. Code that
/// hands a packet to the `rtp` crate's header parser (webrtc-srtp does, on every call) must
/// check this first: that parser panics on an element running past the end of the packet,
/// and for elements that overrun or stop early it computes a header length different from
/// the wire length, so the payload would be encrypted from the wrong offset.
pub fn header_extension_well_formed(buf: &[u8]) -> bool {
    if buf.len() < 12 {
        return false;
    }
    let off = 12 + 4 * (buf[0] & 0x0f) as usize;
    if buf.len() < off {
        return false;
    }
    if buf[0] & 0x10 == 0 {
        return true;
    }
    let Some(head) = buf.get(off..off + 4) else {
        return false;
    };
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = u16::from_be_bytes([head[2], head[3]]) as usize;
    let Some(block) = buf.get(off + 4..off + 4 + 4 * words) else {
        return false;
    };
    let mut i = 0;
    if profile == 0xBEDE {
        while i < block.len() {
            let b = block[i];
            if b == 0 {
                i += 1;
            } else if b >> 4 == 15 {
                return false;
            } else {
                i += 2 + (b & 0x0f) as usize;
            }
        }
    } else if profile & 0xfff0 == 0x1000 {
        while i < block.len() {
            if block[i] == 0 {
                i += 1;
            } else {
                let Some(&len) = block.get(i + 1) else {
                    return false;
                };
                i += 2 + len as usize;
            }
        }
    } else {
        i = block.len(); // RFC 3550 extension: opaque
    }
    i == block.len()
}

/// Writes a copy of the first 12 header bytes with seq, timestamp and SSRC replaced.
pub fn write_rewritten_header(orig: &[u8], seq: u16, ts: u32, ssrc: u32, out: &mut [u8; 12]) {
    out.copy_from_slice(&orig[..12]);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Validates an RTCP compound packet: every sub-packet has version 2 and a length that fits.
pub fn validate_rtcp(buf: &[u8]) -> Result<(), ParseError> {
    if buf.len() < 4 {
        return Err(ParseError::TooShort);
    }
    let mut off = 0;
    while off < buf.len() {
        if buf.len() - off < 4 {
            return Err(ParseError::BadLength);
        }
        if buf[off] >> 6 != 2 {
            return Err(ParseError::BadVersion);
        }
        let len = (u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize + 1) * 4;
        if off + len > buf.len() {
            return Err(ParseError::BadLength);
        }
        off += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtp::packet::Packet;
    use webrtc_util::{MarshalSize, Unmarshal};

    fn build(cc: u8, ext: bool, pad: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x80 | cc | if ext { 0x10 } else { 0 } | if pad > 0 { 0x20 } else { 0 },
            0xE0,
        ];
        v.extend_from_slice(&0x1234u16.to_be_bytes());
        v.extend_from_slice(&0xdeadbeefu32.to_be_bytes());
        v.extend_from_slice(&0x01020304u32.to_be_bytes());
        for i in 0..cc {
            v.extend_from_slice(&(i as u32).to_be_bytes());
        }
        if ext {
            v.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
        }
        v.extend_from_slice(payload);
        if pad > 0 {
            v.extend(std::iter::repeat_n(0, pad as usize - 1));
            v.push(pad);
        }
        v
    }

    #[test]
    fn parses_like_the_rtp_crate() {
        for (cc, ext, pad) in [(0, false, 0), (2, false, 0), (0, true, 0), (3, true, 4)] {
            let raw = build(cc, ext, pad, b"hello");
            let h = parse_rtp(&raw).unwrap();
            let mut b = Bytes::from(raw.clone());
            let p = Packet::unmarshal(&mut b).unwrap();
            assert_eq!(h.seq, p.header.sequence_number);
            assert_eq!(h.timestamp, p.header.timestamp);
            assert_eq!(h.ssrc, p.header.ssrc);
            assert_eq!(h.payload_type, p.header.payload_type);
            assert_eq!(h.marker, p.header.marker);
            let payload_end = raw.len() - pad as usize;
            assert_eq!(&raw[h.payload_offset..payload_end], &p.payload[..]);
            let _ = p.marshal_size();
        }
    }

    #[test]
    fn rejects_truncated_and_bad_version() {
        assert_eq!(parse_rtp(&[0x80; 5]), Err(ParseError::TooShort));
        assert_eq!(parse_rtp(&[0x40; 12]), Err(ParseError::BadVersion));
        let raw = build(4, false, 0, b"");
        assert_eq!(parse_rtp(&raw[..20]), Err(ParseError::BadLength));
        let mut raw = build(0, false, 0, b"abc");
        raw[0] |= 0x20;
        *raw.last_mut().unwrap() = 200;
        assert_eq!(parse_rtp(&raw), Err(ParseError::BadLength));
    }

    #[test]
    fn rewrites_only_seq_ts_ssrc() {
        let raw = build(0, false, 0, b"x");
        let mut out = [0u8; 12];
        write_rewritten_header(&raw, 7, 9, 11, &mut out);
        let h = parse_rtp(&out).unwrap();
        assert_eq!(
            (h.seq, h.timestamp, h.ssrc, h.payload_type),
            (7, 9, 11, 0x60)
        );
        assert!(h.marker);
    }

    #[test]
    fn header_extension_elements_must_fill_the_block() {
        let with_ext = |profile: u16, block: &[u8]| {
            let mut v = build(0, false, 0, b"");
            v[0] |= 0x10;
            v.extend_from_slice(&profile.to_be_bytes());
            v.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
            v.extend_from_slice(block);
            v.extend_from_slice(b"payload");
            v
        };
        let ok = |v: &[u8]| header_extension_well_formed(v);
        assert!(ok(&build(2, false, 0, b"x")));
        assert!(ok(&build(0, true, 0, b"x")));
        assert!(ok(&with_ext(0xBEDE, &[0, 0, 0x10, 0xAA])));
        assert!(ok(&with_ext(0xBEDE, &[0x21, 1, 2, 0])));
        assert!(ok(&with_ext(0x1000, &[1, 2, 0xAA, 0xBB, 0, 2, 0, 0])));
        assert!(ok(&with_ext(0x1234, &[0xFF; 8])));
        // Overruns (the fuzz finding), reserved ID 15, a two-byte element without its length.
        assert!(!ok(&with_ext(0xBEDE, &[0x1F, 1, 2, 3])));
        assert!(!ok(&with_ext(0xBEDE, &[0x10, 0xAA, 0xF0, 0])));
        assert!(!ok(&with_ext(0x1000, &[0, 0, 0, 1])));
        assert!(!ok(&with_ext(0x1000, &[1, 3, 0, 0])));
        // The block itself must fit, as must the CSRCs.
        let long = with_ext(0xBEDE, &[0x10, 0xAA, 0, 0]);
        assert!(!ok(&long[..18]));
        assert!(!ok(&build(4, false, 0, b"")[..20]));
        // parse_rtp forwards what it cannot vouch for inside the block.
        assert!(parse_rtp(&with_ext(0xBEDE, &[0x1F, 1, 2, 3])).is_ok());
    }

    #[test]
    fn demuxes_rtcp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(validate_rtcp(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]).is_ok());
        assert!(validate_rtcp(&[0x81, 206, 0, 9, 0, 0, 0, 1]).is_err());
    }
}
