//! The forwarding hot path (arena copy → header rewrite → cross-shard ring → pop) performs no
//! heap allocation per packet, nor does an SRTP player's copy (protected in place in the send
//! slot's buffer). Measured with a counting global allocator on this thread.

use engine::arena::PacketArena;
use engine::mesh::{Hop, Mesh};
use engine::rewrite::Rewriter;
use engine::rtp;
use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

mod common;
use common::counted;

#[global_allocator]
static A: common::Counting = common::Counting;

fn packet(seq: u16) -> Vec<u8> {
    let mut v = vec![0x80, 96];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    v.extend_from_slice(&0x1234u32.to_be_bytes());
    v.extend_from_slice(&[0x55; 1088]);
    v
}

/// One packet through the path a cross-shard player's packet takes.
fn forward(arena: &mut PacketArena, mesh: &Mesh, players: &mut [Rewriter], raw: &[u8]) -> u64 {
    let h = rtp::parse_rtp(raw).unwrap();
    let pkt = arena.copy(raw);
    mesh.push(
        0,
        1,
        Hop::Media {
            stream: 1,
            pkt,
            stamp: 0,
        },
    )
    .unwrap();
    let Some(Hop::Media { pkt, .. }) = mesh.pop(0, 1) else {
        panic!("hop lost")
    };
    let mut sum = 0u64;
    let mut head = [0u8; 12];
    for p in players.iter_mut() {
        let rw = p
            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
            .unwrap();
        rtp::write_rewritten_header(&pkt, rw.seq, rw.timestamp, rw.ssrc, &mut head);
        // What a send slot holds while the kernel sends: a refcounted view, not a copy.
        let held = pkt.clone();
        sum += head[3] as u64 + held.len() as u64;
    }
    sum
}

#[test]
fn forwarding_does_not_allocate_per_packet() {
    let mut arena = PacketArena::new(256 * 1024, 8, 64);
    let mesh = Mesh::new(2, 1024).unwrap();
    let mut players: Vec<Rewriter> = (0..100).map(Rewriter::new).collect();
    let packets: Vec<Vec<u8>> = (0..1024u16).map(packet).collect();
    // Warm-up: the first use of each arena chunk promotes it to a shared buffer once, so go
    // round all eight chunks (1,024 x 1,100 B is about 4 chunks) before counting.
    for _ in 0..3 {
        for p in &packets {
            forward(&mut arena, &mesh, &mut players, p);
        }
    }
    let (sum, n) = counted(|| {
        let mut sum = 0;
        for round in 0..20 {
            for p in &packets {
                sum += forward(&mut arena, &mesh, &mut players, p) + round;
            }
        }
        sum
    });
    assert!(sum > 0);
    assert_eq!(
        n, 0,
        "allocations during 20,480 forwarded packets x 100 players"
    );
    assert_eq!(arena.grows, 0);
}

/// An SRTP player's copy, as `send_media` makes it: rewritten header and payload copied into
/// the send slot's own buffer, protected there in place with the player's key.
fn forward_srtp(
    arena: &mut PacketArena,
    players: &mut [(Rewriter, SrtpContext, Box<[u8]>)],
    raw: &[u8],
) -> u64 {
    let h = rtp::parse_rtp(raw).unwrap();
    let pkt = arena.copy(raw);
    let mut sum = 0u64;
    let mut head = [0u8; 12];
    for (rw, ctx, slot_buf) in players.iter_mut() {
        let r = rw
            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
            .unwrap();
        rtp::write_rewritten_header(&pkt, r.seq, r.timestamp, r.ssrc, &mut head);
        let len = pkt.len();
        slot_buf[..12].copy_from_slice(&head);
        slot_buf[12..len].copy_from_slice(&pkt[12..]);
        sum += ctx.protect_rtp_in_place(slot_buf, len).unwrap() as u64;
    }
    sum
}

#[test]
fn srtp_players_do_not_allocate_per_packet() {
    for profile in SrtpProfile::ALL {
        let mut arena = PacketArena::new(256 * 1024, 8, 64);
        let mut players: Vec<(Rewriter, SrtpContext, Box<[u8]>)> = (0..10)
            .map(|i| {
                let keys = SrtpKeys::generate(profile).unwrap();
                (
                    Rewriter::new(i),
                    SrtpContext::new(&keys).unwrap(),
                    vec![0u8; 1536].into_boxed_slice(),
                )
            })
            .collect();
        let packets: Vec<Vec<u8>> = (0..1024u16).map(packet).collect();
        // Warm-up: every arena chunk once (see above), then each context's first packets
        // (per-SSRC state). Kept small: crypto is slow in unoptimised test builds.
        for _ in 0..3 {
            for p in &packets {
                drop(arena.copy(p));
            }
        }
        for p in &packets[..16] {
            forward_srtp(&mut arena, &mut players, p);
        }
        let (sum, n) = counted(|| {
            let mut sum = 0;
            for p in &packets[16..528] {
                sum += forward_srtp(&mut arena, &mut players, p);
            }
            sum
        });
        assert_eq!(sum, 512 * 10 * (1100 + profile.rtp_overhead() as u64));
        assert_eq!(
            n, 0,
            "{profile}: allocations during 512 packets x 10 SRTP players"
        );
    }
}
