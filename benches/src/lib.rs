//! Load tools for the media server (the `load` binary) and helpers shared with the criterion
//! benches in `benches/benches/`.
//!
//! Layout:
//! - [`pkt`]: building and parsing the load tool's RTP packets (send timestamp + publisher index
//!   in the payload).
//! - [`rx`]: receiver-side accounting: loss from sequence gaps, reordering, duplicates, RFC 3550
//!   jitter, one-way latency series.
//! - [`net`]: batched UDP (`sendmmsg` / `recvmmsg`), epoll, address lists.
//! - [`relay`]: the raw batched UDP relay, the physical-limit baseline.
//! - [`rest`]: the server's REST API (publish / play / terminate).
//! - [`fanout`]: one load run: sessions, paced publishers, receiving players, report.
//! - [`profile`] and [`framesend`]: what publishers send over time (flat, video frames,
//!   audio, both) and the sender for frame profiles.
//! - [`report`] and [`plot`]: JSON report, human summary, comparison, SVG plot.
//! - [`cluster`]: `load fanout --cluster`: origin + edges, cold/warm play -> first packet.
//! - [`terminate`]: terminate -> last packet latency with many sessions.
//! - [`whep`]: `load play --whep`: str0m WHEP players, connect times, CPU and RSS per player.
//! - [`whip`]: `load publish --whip`: a str0m WHIP publisher with stamped payloads.

pub mod clock;
pub mod cluster;
pub mod fanout;
pub mod framesend;
pub mod net;
pub mod pkt;
pub mod plot;
pub mod profile;
pub mod relay;
pub mod report;
pub mod rest;
pub mod rx;
pub mod signal;
pub mod terminate;
pub mod whep;
pub mod whip;

/// Error type of the tool: anything printable.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;
