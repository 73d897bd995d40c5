//! control::sdp: parse_offer on arbitrary text; for every offer that parses, `answer` and
//! `play_sdp` must not panic, must write well-formed SDP, and what they write must parse
//! back to the same media description.
//!
//! Input: the SDP text (invalid UTF-8 is replaced, as a REST body would be refused anyway).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use control::sdp::{answer, parse_offer, play_sdp, Direction, MediaSection, PlayMedia};
use engine::srtp::SrtpKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(offer) = parse_offer(&text) else {
        return;
    };
    assert!(!offer.media.is_empty());
    let server_ip = if data.len().is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let ports: Vec<u16> = (0..offer.media.len())
        .map(|i| 20_000u16.wrapping_add(2 * i as u16).max(1))
        .collect();
    // Deterministic server keys (generate_answer_keys would use the OS RNG).
    let keys: Vec<Option<SrtpKeys>> = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.crypto.as_ref().map(|c| {
                let p = c.keys.profile;
                SrtpKeys::new(p, vec![i as u8; p.key_len()], vec![0x5a; p.salt_len()]).unwrap()
            })
        })
        .collect();

    match answer(&offer, server_ip, &ports, Some(&keys)) {
        Ok(ans) => {
            well_formed(&ans);
            let back =
                parse_offer(&ans).unwrap_or_else(|e| panic!("answer does not parse: {e}\n{ans}"));
            assert_eq!(back.media.len(), offer.media.len());
            assert_eq!(back.connection, Some(server_ip));
            for (i, (a, o)) in back.media.iter().zip(&offer.media).enumerate() {
                same_media(a, o);
                if o.port == 0 {
                    assert_eq!(a.port, 0);
                    continue;
                }
                assert_eq!(a.port, ports[i]);
                assert_eq!(a.direction, Direction::RecvOnly);
                assert_eq!(a.rtcp_port, Some(ports[i]));
                assert_eq!(a.rtcp_mux, o.rtcp_mux);
                assert_eq!(a.mid, o.mid);
                // RFC 4568 §5.1.2: the answer echoes the tag and suite, with our key.
                match (&a.crypto, &o.crypto) {
                    (Some(ac), Some(oc)) => {
                        assert_eq!(ac.tag, oc.tag);
                        assert_eq!(Some(&ac.keys), keys[i].as_ref());
                    }
                    (None, None) => {}
                    _ => panic!("crypto not answered like offered"),
                }
            }
        }
        // The only offers answer refuses: a live section that does not send.
        Err(e) => assert!(
            offer
                .media
                .iter()
                .any(|m| m.port != 0 && !m.direction.sends()),
            "answer failed on a sending offer: {e}"
        ),
    }

    // The player file for the live sections, named after the offer's s= (free text).
    let live: Vec<(usize, &MediaSection)> = offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.port != 0)
        .collect();
    if live.is_empty() {
        return;
    }
    let media: Vec<PlayMedia> = live
        .iter()
        .map(|&(i, m)| PlayMedia::from_offer(m, ports[i]))
        .collect();
    let play_keys: Vec<Option<SrtpKeys>> = live.iter().map(|&(i, _)| keys[i].clone()).collect();
    let sdp = play_sdp(&offer.session_name, server_ip, &media, Some(&play_keys))
        .unwrap_or_else(|e| panic!("play_sdp failed: {e}"));
    well_formed(&sdp);
    let back =
        parse_offer(&sdp).unwrap_or_else(|e| panic!("player SDP does not parse: {e}\n{sdp}"));
    assert_eq!(back.media.len(), live.len());
    for (p, &(i, o)) in back.media.iter().zip(&live) {
        same_media(p, o);
        assert_eq!(p.port, ports[i]);
        assert_eq!(p.crypto.as_ref().map(|c| &c.keys), keys[i].as_ref());
    }
});

/// Written SDP is CRLF-terminated `<letter>=<value>` lines with no NUL, CR or LF inside a
/// line (RFC 8866 §9 `byte-string`). A stray CR in a value copied from the offer would
/// split the line for a player that ends lines at CR (ffmpeg's SDP reader does), and a NUL
/// would end the file there.
fn well_formed(sdp: &str) {
    assert!(sdp.ends_with("\r\n"), "{sdp:?}");
    for line in sdp[..sdp.len() - 2].split("\r\n") {
        let b = line.as_bytes();
        assert!(
            b.len() >= 2 && b[0].is_ascii_lowercase() && b[1] == b'=',
            "bad line {line:?}"
        );
        assert!(
            !line.contains(['\0', '\r', '\n']),
            "NUL/CR/LF inside written line {line:?}"
        );
    }
}

/// What the answer and the player file copy from the offer.
fn same_media(a: &MediaSection, o: &MediaSection) {
    assert_eq!(a.kind, o.kind);
    assert_eq!(a.payload_types.len(), o.payload_types.len());
    for (x, y) in a.payload_types.iter().zip(&o.payload_types) {
        assert_eq!(x.pt, y.pt);
        if a.port != 0 {
            assert_eq!(x.rtpmap, y.rtpmap);
            assert_eq!(x.fmtp, y.fmtp);
        }
    }
}
