//! The bits of H264 over RTP (RFC 6184) the engine looks at, sans-IO: finding the parameter
//! sets (SPS, PPS) in a payload so a stream's latest ones can be cached for late players.

/// NAL unit types.
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
const NAL_STAP_A: u8 = 24;

/// Whether a payload may carry a parameter set: one byte, checked on every H264 packet.
pub fn may_have_param_sets(payload: &[u8]) -> bool {
    matches!(
        payload.first().map(|b| b & 0x1f),
        Some(NAL_SPS | NAL_PPS | NAL_STAP_A)
    )
}

/// Calls `f(nal_type, nal)` for every SPS and PPS NAL unit in an RTP payload: a single NAL
/// unit packet, or the units of a STAP-A. Fragmented units (FU-A) are not reassembled:
/// parameter sets are small and encoders send them whole. Malformed aggregates stop the walk.
pub fn for_each_param_set(payload: &[u8], mut f: impl FnMut(u8, &[u8])) {
    let Some(&first) = payload.first() else {
        return;
    };
    match first & 0x1f {
        t @ (NAL_SPS | NAL_PPS) => f(t, payload),
        NAL_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(nal) = rest.get(2..2 + n) else {
                    return;
                };
                if let Some(t) = nal.first().map(|b| b & 0x1f) {
                    if t == NAL_SPS || t == NAL_PPS {
                        f(t, nal);
                    }
                }
                rest = &rest[2 + n..];
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(p: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        for_each_param_set(p, |t, n| v.push((t, n.to_vec())));
        v
    }

    #[test]
    fn single_nal_and_stap_a() {
        let sps = [0x67, 0x42, 0xc0, 0x1e];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        assert_eq!(collect(&sps), vec![(7, sps.to_vec())]);
        let mut stap = vec![0x78, 0, 4];
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0, 4]);
        stap.extend_from_slice(&pps);
        stap.extend_from_slice(&[0, 2, 0x65, 0x88]); // an IDR slice: skipped
        assert!(may_have_param_sets(&stap));
        assert_eq!(collect(&stap), vec![(7, sps.to_vec()), (8, pps.to_vec())]);
    }

    #[test]
    fn other_and_malformed_payloads() {
        assert!(collect(&[0x65, 1, 2]).is_empty());
        assert!(!may_have_param_sets(&[0x7c, 0x85])); // FU-A
        assert!(collect(&[]).is_empty());
        // A STAP-A whose size runs past the end yields what came before and stops.
        assert_eq!(
            collect(&[0x78, 0, 1, 0x67, 0, 9, 0x68]),
            vec![(7, vec![0x67])]
        );
    }
}
