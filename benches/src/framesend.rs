//! The publishers' sender for frame profiles (`--profile video|audio|av`): each publisher
//! sends what its [`Schedule`] says is due, a frame's packets at once in one `sendmmsg`, with
//! the same stamps and counters as the flat sender (`fanout::sender`).
//!
//! Audio packets travel as a second stream of the same publisher: their own SSRC, sequence
//! and payload type, and a publisher index with the top bit set, so players count their loss
//! and latency apart from the video's.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock::{mono_ns, sleep_until};
use crate::fanout::{Publisher, SenderResult};
use crate::net::SendBatch;
use crate::pkt::{write_fields_at, StampAt};
use crate::profile::{Due, Profile, Schedule, AUDIO_PT, FPS, VIDEO_PT};
use crate::signal;

/// The publisher index audio packets carry (video: the index itself).
pub fn audio_index(idx: u32) -> u32 {
    idx | 0x8000_0000
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sender(
    mut pubs: Vec<Publisher>,
    profile: Profile,
    size: usize,
    wire_size: usize,
    batch: usize,
    stamp_at: StampAt,
    gso: bool,
    t0: u64,
    end: u64,
    interval_ns: u64,
    stop: &AtomicBool,
    tx_count: &AtomicU64,
) -> SenderResult {
    let mut sb = SendBatch::new(batch, wire_size);
    let batch = sb.capacity();
    let mut plain = vec![0u8; size];
    let n_pubs = pubs.len().max(1) as u64;
    // Publishers' frames are spread over one frame interval, as independent cameras are.
    let offset = |i: usize| i as u64 * (1_000_000_000 / FPS) / n_pubs;
    let mut sched: Vec<Schedule> = pubs.iter().map(|_| Schedule::new(profile, size)).collect();
    // Packets built so far per publisher, per stream (their sequence numbers).
    let mut audio_sent = vec![0u64; pubs.len()];
    let mut video_sent = vec![0u64; pubs.len()];
    let mut due: Vec<Due> = Vec::with_capacity(256);
    let mut lens: Vec<usize> = Vec::with_capacity(batch);
    let mut res = SenderResult::new(pubs.len(), t0);
    sleep_until(t0);
    'outer: while !pubs.is_empty() {
        let now = mono_ns();
        if now >= end || stop.load(Ordering::Relaxed) || signal::stopped() {
            break;
        }
        for (pi, p) in pubs.iter_mut().enumerate() {
            let Some(elapsed) = (now - t0).checked_sub(offset(pi)) else {
                continue;
            };
            due.clear();
            sched[pi].due(elapsed, |d| due.push(d));
            for chunk in due.chunks(batch) {
                let stamp = mono_ns();
                if stamp >= end {
                    break 'outer;
                }
                lens.clear();
                for (i, d) in chunk.iter().enumerate() {
                    let (seq, idx, ssrc, pt) = if d.audio {
                        let n = audio_sent[pi];
                        audio_sent[pi] += 1;
                        (n as u16, audio_index(p.idx), p.ssrc ^ 0x00a0_d100, AUDIO_PT)
                    } else {
                        let n = video_sent[pi];
                        video_sent[pi] += 1;
                        (p.seq0.wrapping_add(n as u16), p.idx, p.ssrc, VIDEO_PT)
                    };
                    let out = match p.srtp.as_mut() {
                        None => {
                            let buf = &mut sb.packet_mut(i)[..d.len];
                            write_fields_at(stamp_at, buf, seq, d.ts, ssrc, stamp, idx);
                            buf[1] = pt | if d.marker { 0x80 } else { 0 };
                            d.len
                        }
                        Some(ctx) => {
                            let buf = &mut plain[..d.len];
                            write_fields_at(stamp_at, buf, seq, d.ts, ssrc, stamp, idx);
                            buf[1] = pt | if d.marker { 0x80 } else { 0 };
                            ctx.protect_rtp_into(buf, sb.packet_mut(i))
                                .expect("SRTP protect of the tool's own packet")
                        }
                    };
                    lens.push(out);
                }
                let r = if gso {
                    sb.send_sized_gso(p.sock.as_raw_fd(), &lens)
                } else {
                    sb.send_sized(p.sock.as_raw_fd(), &lens)
                };
                p.attempted += chunk.len() as u64;
                p.sent += r.sent as u64;
                let bytes = lens[..r.sent].iter().sum::<usize>() as u64;
                res.record(stamp - t0, interval_ns, &r, bytes, tx_count);
            }
        }
        // Sleep until the next packet of any publisher is due.
        let next = sched
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next_due_ns().map(|d| t0 + d + offset(i)))
            .min()
            .unwrap_or(end);
        sleep_until(next.min(end));
    }
    res.finish(&pubs, end, t0)
}
