//! What a publisher sends over time. `flat`: evenly paced packets of one size (`--pps`,
//! `--size`). `video`: frames, as a camera's encoder sends them: 30 fps, a keyframe of 60
//! full packets every 2 s, P-frames of 3-15 packets, the last packet of each frame shorter,
//! all of a frame's packets at once (a burst). `audio`: 50 packets/s of 160 bytes (20 ms
//! Opus-like frames). `av`: both, audio on its own payload type and SSRC.
//!
//! Sans-IO: [`Schedule::due`] lists the packets due by a given time since the start, so the
//! sender only decides when to look and the unit tests can check the shape exactly.

/// Video frames per second and the keyframe interval (in frames).
pub const FPS: u64 = 30;
pub const GOP: u64 = 60;
/// Packets of a keyframe, and the P-frame range.
pub const KEYFRAME_PACKETS: usize = 60;
pub const P_MIN: usize = 3;
pub const P_MAX: usize = 15;
/// Audio: one packet every 20 ms, 160 bytes.
pub const AUDIO_INTERVAL_NS: u64 = 20_000_000;
pub const AUDIO_SIZE: usize = 160;
/// RTP payload types of the two streams (the server forwards both to every player).
pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Flat,
    Video,
    Audio,
    Av,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flat" => Ok(Self::Flat),
            "video" => Ok(Self::Video),
            "audio" => Ok(Self::Audio),
            "av" => Ok(Self::Av),
            _ => Err(format!("unknown profile `{s}` (flat, video, audio, av)")),
        }
    }
}

/// One packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub audio: bool,
    /// Packet size in bytes (RTP header included).
    pub len: usize,
    pub marker: bool,
    /// RTP timestamp (90 kHz video, 48 kHz audio).
    pub ts: u32,
}

/// A publisher's send schedule from its start.
#[derive(Debug, Clone)]
pub struct Schedule {
    profile: Profile,
    /// Full video packet size (`--size`).
    size: usize,
    next_frame: u64,
    next_audio: u64,
}

/// A deterministic spread (splitmix-like) so runs are repeatable.
fn spread(k: u64) -> u64 {
    let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Packets of video frame `k`.
pub fn frame_packets(k: u64) -> usize {
    if k.is_multiple_of(GOP) {
        KEYFRAME_PACKETS
    } else {
        P_MIN + (spread(k) % (P_MAX - P_MIN + 1) as u64) as usize
    }
}

impl Schedule {
    pub fn new(profile: Profile, size: usize) -> Self {
        Self {
            profile,
            size,
            next_frame: 0,
            next_audio: 0,
        }
    }

    pub fn has_video(&self) -> bool {
        matches!(self.profile, Profile::Video | Profile::Av)
    }

    pub fn has_audio(&self) -> bool {
        matches!(self.profile, Profile::Audio | Profile::Av)
    }

    /// Calls `f` for every packet due at `elapsed_ns` since the start that was not listed
    /// before, in send order (a frame's packets together). Flat profiles are paced by the
    /// caller and list nothing here.
    pub fn due(&mut self, elapsed_ns: u64, mut f: impl FnMut(Due)) {
        loop {
            let video_at = self
                .has_video()
                .then(|| self.next_frame * 1_000_000_000 / FPS);
            let audio_at = self
                .has_audio()
                .then(|| self.next_audio * AUDIO_INTERVAL_NS);
            let next = match (video_at, audio_at) {
                (Some(v), Some(a)) => v.min(a),
                (Some(v), None) => v,
                (None, Some(a)) => a,
                (None, None) => return,
            };
            if next > elapsed_ns {
                return;
            }
            if video_at == Some(next) {
                let k = self.next_frame;
                let n = frame_packets(k);
                // The last packet carries the frame's remainder: 20-90% of a full one.
                let last = self.size * (20 + (spread(k ^ 0x5555) % 71) as usize) / 100;
                for i in 0..n {
                    f(Due {
                        audio: false,
                        len: if i + 1 == n { last.max(64) } else { self.size },
                        marker: i + 1 == n,
                        ts: (k * 90_000 / FPS) as u32,
                    });
                }
                self.next_frame += 1;
            } else {
                let a = self.next_audio;
                f(Due {
                    audio: true,
                    len: AUDIO_SIZE,
                    marker: false,
                    ts: (a * 960) as u32,
                });
                self.next_audio += 1;
            }
        }
    }

    /// When the next packet is due, in ns since the start (None: nothing scheduled).
    pub fn next_due_ns(&self) -> Option<u64> {
        let v = self
            .has_video()
            .then(|| self.next_frame * 1_000_000_000 / FPS);
        let a = self
            .has_audio()
            .then(|| self.next_audio * AUDIO_INTERVAL_NS);
        v.into_iter().chain(a).min()
    }

    /// Mean packets per second of the profile (for reports and sizing).
    pub fn mean_pps(&self) -> f64 {
        let mut v = 0.0;
        if self.has_video() {
            let per_gop: usize = (0..GOP).map(frame_packets).sum();
            v += per_gop as f64 * FPS as f64 / GOP as f64;
        }
        if self.has_audio() {
            v += 1e9 / AUDIO_INTERVAL_NS as f64;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_is_bursts_of_frames_with_a_keyframe_every_two_seconds() {
        let mut s = Schedule::new(Profile::Video, 1200);
        let mut got = Vec::new();
        s.due(0, |d| got.push(d));
        assert_eq!(got.len(), KEYFRAME_PACKETS, "the first frame is a keyframe");
        assert!(got[..59].iter().all(|d| d.len == 1200 && !d.marker));
        assert!(got[59].marker && got[59].len < 1200 && got[59].len >= 240);
        got.clear();
        // Nothing more until the next frame is due (33.3 ms).
        s.due(33_000_000, |d| got.push(d));
        assert!(got.is_empty());
        s.due(2_000_000_000, |d| got.push(d));
        // Frames 1..=60: 59 P-frames and the next keyframe.
        let frames = got.iter().filter(|d| d.marker).count();
        assert_eq!(frames, 60);
        let p: Vec<usize> = (1..GOP).map(frame_packets).collect();
        assert!(p.iter().all(|&n| (P_MIN..=P_MAX).contains(&n)), "{p:?}");
        assert_eq!(got.len(), p.iter().sum::<usize>() + KEYFRAME_PACKETS);
        assert!(got.iter().all(|d| !d.audio));
        // ~300 packets/s.
        assert!((250.0..350.0).contains(&s.mean_pps()), "{}", s.mean_pps());
    }

    #[test]
    fn av_interleaves_audio_every_20_ms() {
        let mut s = Schedule::new(Profile::Av, 1200);
        let mut audio = 0;
        let mut video = 0;
        s.due(999_999_999, |d| {
            if d.audio {
                assert_eq!((d.len, d.ts % 960), (AUDIO_SIZE, 0));
                audio += 1;
            } else {
                video += 1;
            }
        });
        assert_eq!(audio, 50);
        assert!(video > 60 + 29 * P_MIN);
        let mut a = Schedule::new(Profile::Audio, 1200);
        assert_eq!(a.mean_pps(), 50.0);
        let mut n = 0;
        a.due(100_000_000, |_| n += 1);
        assert_eq!(n, 6, "0, 20, ..., 100 ms");
    }
}
