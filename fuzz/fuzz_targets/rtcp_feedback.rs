//! engine::feedback::for_each_feedback and engine::rtp::validate_rtcp over arbitrary
//! compound RTCP, with the `rtcp` crate as a differential reference for PLI/FIR/NACK.
//!
//! Input: one datagram (a compound RTCP packet, or garbage).
#![no_main]

use bytes::Bytes;
use engine::feedback::{build_nack, build_pli, for_each_feedback, Feedback};
use engine::rtp::validate_rtcp;
use libfuzzer_sys::fuzz_target;
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

fuzz_target!(|data: &[u8]| {
    let valid = validate_rtcp(data);
    let mut ours = Vec::new();
    for_each_feedback(data, |f| ours.push(f));
    // Every item is read from at least 4 bytes of its own.
    assert!(ours.len() <= data.len() / 4);

    if valid.is_ok() {
        // validate_rtcp's framing: sub-packets tile the datagram exactly.
        let mut off = 0;
        while off < data.len() {
            assert_eq!(data[off] >> 6, 2);
            off += (u16::from_be_bytes([data[off + 2], data[off + 3]]) as usize + 1) * 4;
        }
        assert_eq!(off, data.len());
    }

    if reference_safe(data) {
        let reference = rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(data));
        assert_eq!(
            reference.is_ok(),
            valid.is_ok(),
            "rtcp crate {:?} vs validate_rtcp {valid:?}",
            reference.as_ref().err()
        );
        if let Ok(pkts) = reference {
            let mut want = Vec::new();
            for p in &pkts {
                let any = p.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    want.push(Feedback::Keyframe {
                        media_ssrc: pli.media_ssrc,
                    });
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    want.extend(
                        fir.fir
                            .iter()
                            .map(|e| Feedback::Keyframe { media_ssrc: e.ssrc }),
                    );
                } else if let Some(n) = any.downcast_ref::<TransportLayerNack>() {
                    want.extend(n.nacks.iter().map(|x| Feedback::Nack {
                        media_ssrc: n.media_ssrc,
                        pid: x.packet_id,
                        blp: x.lost_packets,
                    }));
                } else {
                    unreachable!("reference_safe admits only PLI, FIR and NACK");
                }
            }
            assert_eq!(ours, want);
        }
    }

    // What the server itself builds parses back to what it was built from.
    if data.len() >= 8 {
        let ssrc = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let (pid, blp) = (
            u16::from_be_bytes([data[4], data[5]]),
            u16::from_be_bytes([data[6], data[7]]),
        );
        let mut buf = build_pli(ssrc).to_vec();
        buf.extend_from_slice(&build_nack(ssrc, pid, blp));
        assert!(validate_rtcp(&buf).is_ok());
        let mut got = Vec::new();
        for_each_feedback(&buf, |f| got.push(f));
        assert_eq!(
            got,
            [
                Feedback::Keyframe { media_ssrc: ssrc },
                Feedback::Nack {
                    media_ssrc: ssrc,
                    pid,
                    blp
                }
            ]
        );
    }
});

/// The rtcp crate panics (Buf::get_u32 past the end) on several short or odd-sized
/// packets, and strips padding where we do not, so it only sees compounds made of PLI,
/// NACK and FIR packets without the P bit, with the sizes it handles. Walking stops at the
/// first sub-packet whose header or length does not fit: the crate rejects that one before
/// calling a sub-parser.
fn reference_safe(data: &[u8]) -> bool {
    let mut off = 0;
    while off + 4 <= data.len() {
        let (b0, pt) = (data[off], data[off + 1]);
        let words = u16::from_be_bytes([data[off + 2], data[off + 3]]) as usize;
        if b0 >> 6 != 2 || off + 4 + 4 * words > data.len() {
            return true;
        }
        let ok = b0 & 0x20 == 0
            && words >= 2
            && match (pt, b0 & 0x1f) {
                (206, 1) | (205, 1) => true,
                (206, 4) => (words - 2).is_multiple_of(2),
                _ => false,
            };
        if !ok {
            return false;
        }
        off += 4 + 4 * words;
    }
    true
}
