//! Batched UDP on Linux: `recvmmsg` / `sendmmsg`, a minimal epoll, socket buffers, address
//! lists.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram the receivers accept (longer ones are truncated and still counted).
pub const MAX_DATAGRAM: usize = 2048;
/// Kernel limit on messages per `sendmmsg` / `recvmmsg` call (UIO_MAXIOV).
pub const MAX_BATCH: usize = 1024;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A socket address in the kernel's representation.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    pub fn new(addr: SocketAddr) -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// For `msg_name` (the kernel only reads it on send).
    pub fn as_ptr(&self) -> *mut libc::c_void {
        &self.storage as *const libc::sockaddr_storage as *mut libc::c_void
    }

    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parses `ADDR[,ADDR...]` where each item is `ip:port` or an inclusive port range
/// `ip:first-last` (IPv6 as `[::1]:port`).
pub fn parse_targets(s: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let colon = item
            .rfind(':')
            .ok_or_else(|| format!("{item}: expected ip:port or ip:first-last"))?;
        let (host, ports) = (&item[..colon], &item[colon + 1..]);
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|e| format!("{item}: bad address: {e}"))?;
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (a, b),
            None => (ports, ports),
        };
        let first: u16 = first
            .parse()
            .map_err(|e| format!("{item}: bad port: {e}"))?;
        let last: u16 = last.parse().map_err(|e| format!("{item}: bad port: {e}"))?;
        if first == 0 || last < first {
            return Err(format!("{item}: empty or invalid port range"));
        }
        out.extend((first..=last).map(|p| SocketAddr::new(ip, p)));
    }
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(out)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a valid int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Asks for `bytes` of socket buffer in each direction: the FORCE variants (root) bypass
/// `net.core.{r,w}mem_max`; otherwise the plain ones get what the sysctl allows.
pub fn set_buffers(sock: &UdpSocket, bytes: usize) {
    let fd = sock.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v);
    }
}

/// Asks the kernel to attach each datagram's arrival time (SO_TIMESTAMPNS, CLOCK_REALTIME).
pub fn enable_rx_timestamps(sock: &UdpSocket) -> io::Result<()> {
    setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Asks the kernel to attach the socket's drop counter to each datagram (SO_RXQ_OVFL).
pub fn enable_rx_drop_counter(sock: &UdpSocket) -> io::Result<()> {
    setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// Host-wide UDP receive-buffer drops (`RcvbufErrors` in /proc/net/snmp).
pub fn udp_rcvbuf_errors() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp")?;
    parse_snmp_udp(&s, "RcvbufErrors")
        .ok_or_else(|| io::Error::other("no Udp RcvbufErrors in /proc/net/snmp"))
}

/// A field of the `Udp:` table of /proc/net/snmp (a header line, then a values line).
pub fn parse_snmp_udp(snmp: &str, field: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Binds a UDP socket with large buffers.
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let s =
        UdpSocket::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    set_buffers(&s, buffer_bytes);
    Ok(s)
}

/// Receive-side batch: `n` buffers of [`MAX_DATAGRAM`] bytes filled by one `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    msgs: Vec<libc::mmsghdr>,
    /// Ancillary data per message ([`CTRL_WORDS`] u64s each), when wanted.
    ctrl: Vec<u64>,
    len: usize,
}

/// Room for SCM_TIMESTAMPNS (CMSG_SPACE(16) = 32 bytes) and SO_RXQ_OVFL (CMSG_SPACE(4) = 24
/// bytes), with margin.
const CTRL_WORDS: usize = 12;

/// Per-datagram ancillary data (see [`RecvBatch::with_ancillary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ancillary {
    /// Kernel arrival time, CLOCK_REALTIME ns ([`enable_rx_timestamps`]).
    pub kernel_time_ns: Option<u64>,
    /// Datagrams the socket dropped for lack of buffer space since it was created
    /// ([`enable_rx_drop_counter`]).
    pub socket_drops: Option<u32>,
}

impl RecvBatch {
    pub fn new(n: usize) -> Self {
        let n = n.clamp(1, MAX_BATCH);
        Self {
            bufs: vec![0; n * MAX_DATAGRAM],
            // SAFETY (all three): plain C structs, zero is a valid value; pointers are set
            // before each use.
            iovs: vec![unsafe { zeroed() }; n],
            addrs: vec![unsafe { zeroed() }; n],
            msgs: vec![unsafe { zeroed() }; n],
            ctrl: Vec::new(),
            len: 0,
        }
    }

    /// Like [`new`](Self::new), also receiving ancillary data: arrival timestamps and drop
    /// counters, for sockets with [`enable_rx_timestamps`] / [`enable_rx_drop_counter`]. Read
    /// them with [`ancillary`](Self::ancillary).
    pub fn with_ancillary(n: usize) -> Self {
        let mut b = Self::new(n);
        b.ctrl = vec![0; b.msgs.len() * CTRL_WORDS];
        b
    }

    /// Ancillary data of datagram `i` of the last receive.
    pub fn ancillary(&self, i: usize) -> Ancillary {
        let mut a = Ancillary::default();
        if self.ctrl.is_empty() || i >= self.len {
            return a;
        }
        let h = &self.msgs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control / msg_controllen for this message; the CMSG
        // macros stay within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET {
                    let data = libc::CMSG_DATA(c);
                    if (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                        let ts = std::ptr::read_unaligned(data as *const libc::timespec);
                        a.kernel_time_ns =
                            Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                    } else if (*c).cmsg_type == libc::SO_RXQ_OVFL {
                        a.socket_drops = Some(std::ptr::read_unaligned(data as *const u32));
                    }
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        a
    }

    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Reads what `fd` (non-blocking) has, at most `rounds` batches so one busy socket cannot
    /// starve the others of an epoll round, calling `batch(self, n, now)` after each
    /// `recvmmsg` of `n` datagrams (`now`: CLOCK_MONOTONIC just after it). Stops early when a
    /// batch comes back short or the socket is drained; `Interrupted` takes a round and
    /// retries; any other error ends the drain and is returned.
    pub fn drain(
        &mut self,
        fd: RawFd,
        rounds: usize,
        mut batch: impl FnMut(&Self, usize, u64),
    ) -> io::Result<()> {
        for _ in 0..rounds {
            match self.recv(fd, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    batch(self, n, crate::clock::mono_ns());
                    if n < self.capacity() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One `recvmmsg` on `fd` with `flags` (e.g. `MSG_DONTWAIT`, `MSG_WAITFORONE`). Returns the
    /// number of datagrams; `WouldBlock` / `TimedOut` / `Interrupted` errors are the caller's to
    /// handle.
    pub fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for i in 0..self.msgs.len() {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * MAX_DATAGRAM < bufs.len().
                iov_base: unsafe { base.add(i * MAX_DATAGRAM) } as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if self.ctrl.is_empty() {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            } else {
                h.msg_control = self.ctrl[i * CTRL_WORDS..].as_mut_ptr() as *mut libc::c_void;
                h.msg_controllen = CTRL_WORDS * 8;
            }
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at live buffers owned by self for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        self.len = 0;
        let n = cvt(n)? as usize;
        self.len = n;
        Ok(n)
    }

    /// Datagram `i` of the last [`recv`](Self::recv) (truncated to [`MAX_DATAGRAM`]).
    pub fn get(&self, i: usize) -> &[u8] {
        assert!(i < self.len);
        let len = (self.msgs[i].msg_len as usize).min(MAX_DATAGRAM);
        &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len]
    }

    /// The raw iovec (base, length) of datagram `i`, for zero-copy re-sending.
    pub fn iovec(&self, i: usize) -> libc::iovec {
        let d = self.get(i);
        libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        }
    }
}

/// Outcome of [`send_all`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub sent: usize,
    pub failed: usize,
    /// The socket buffer was full (non-blocking socket); the rest were not attempted.
    pub would_block: bool,
}

/// Sends every message with `sendmmsg`, continuing after partial sends; a message the kernel
/// rejects (e.g. ECONNREFUSED after an ICMP error) is counted in `failed` and skipped.
///
/// # Safety
/// Every `mmsghdr` must point at live iovecs / buffers / addresses for the whole call.
pub unsafe fn send_all(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> SendResult {
    let mut r = SendResult::default();
    let mut off = 0;
    while off < msgs.len() {
        let n = (msgs.len() - off).min(MAX_BATCH);
        // SAFETY: caller guarantees the messages are valid.
        let k = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr().add(off), n as libc::c_uint, 0) };
        if k > 0 {
            off += k as usize;
            r.sent += k as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                r.would_block = true;
                r.failed += msgs.len() - off;
                return r;
            }
            _ => {
                r.failed += 1;
                off += 1;
            }
        }
    }
    r
}

/// A fixed set of packet buffers sent in one `sendmmsg` on a connected socket.
pub struct SendBatch {
    size: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// GSO sends: packets per message and each message's UDP_SEGMENT control message.
    runs: Vec<usize>,
    ctrl: Vec<[u64; 3]>,
}

const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's UDP_MAX_SEGMENTS, and the byte bound of one GSO datagram.
const GSO_MAX_SEGS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

impl SendBatch {
    /// `n` packets of `size` bytes each.
    pub fn new(n: usize, size: usize) -> Self {
        let n = n.clamp(1, MAX_BATCH);
        Self {
            size,
            bufs: vec![0; n * size],
            // SAFETY: plain C structs; pointers set before use.
            iovs: vec![unsafe { zeroed() }; n],
            msgs: vec![unsafe { zeroed() }; n],
            runs: vec![0; n],
            ctrl: vec![[0; 3]; n],
        }
    }

    /// Points iovec `i` at the first `lens[i]` bytes of packet buffer `i`; returns how many
    /// (at most the batch's capacity).
    fn point_iovs(&mut self, lens: &[usize]) -> usize {
        let n = lens.len().min(self.msgs.len());
        let base = self.bufs.as_mut_ptr();
        for (i, &len) in lens.iter().enumerate().take(n) {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * size < bufs.len().
                iov_base: unsafe { base.add(i * self.size) } as *mut libc::c_void,
                iov_len: len.min(self.size),
            };
        }
        n
    }

    /// Like [`send_sized`](Self::send_sized), but each run of equal-sized packets (the last
    /// may be shorter; at most 64 packets and 65,000 bytes) goes as one message with
    /// `UDP_SEGMENT`. The result counts packets (a message that fails counts all of its own).
    pub fn send_sized_gso(&mut self, fd: RawFd, lens: &[usize]) -> SendResult {
        let n = self.point_iovs(lens);
        let (mut m, mut i) = (0, 0);
        while i < n {
            let seg = self.iovs[i].iov_len;
            let (mut j, mut bytes) = (i + 1, seg);
            while j < n && j - i < GSO_MAX_SEGS && self.iovs[j].iov_len <= seg {
                let len = self.iovs[j].iov_len;
                if bytes + len > GSO_MAX_BYTES {
                    break;
                }
                bytes += len;
                j += 1;
                if len < seg {
                    break; // only the last segment may be shorter
                }
            }
            // SAFETY: zeroed mmsghdr is valid (no name: connected socket).
            self.msgs[m] = unsafe { zeroed() };
            let h = &mut self.msgs[m].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = j - i;
            if j - i > 1 {
                let c = self.ctrl[m].as_mut_ptr() as *mut libc::cmsghdr;
                // SAFETY: ctrl[m] is 24 bytes, 8-aligned: CMSG_SPACE(2).
                unsafe {
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg as u16);
                }
                h.msg_control = c as *mut libc::c_void;
                h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            }
            self.runs[m] = j - i;
            m += 1;
            i = j;
        }
        // SAFETY: the messages point into self.iovs / self.bufs / self.ctrl, alive for the call.
        let r = unsafe { send_all(fd, &mut self.msgs[..m]) };
        // send_all stops at the first message that blocks; a rejected one in the middle is
        // skipped and counted, so the packet count of a partial failure is approximate.
        let sent = self.runs[..r.sent.min(m)].iter().sum::<usize>();
        SendResult {
            sent,
            failed: n - sent,
            would_block: r.would_block,
        }
    }

    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Packet buffer `i`.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.size..(i + 1) * self.size]
    }

    /// Sends packets `0..lens.len()` on the connected socket `fd`, packet `i` being the first
    /// `lens[i]` bytes of its buffer (frames of varying sizes).
    pub fn send_sized(&mut self, fd: RawFd, lens: &[usize]) -> SendResult {
        let n = self.point_iovs(lens);
        for i in 0..n {
            // SAFETY: zeroed mmsghdr is valid (no name: connected socket).
            self.msgs[i] = unsafe { zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iovs[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the messages point into self.iovs / self.bufs, alive for the call.
        unsafe { send_all(fd, &mut self.msgs[..n]) }
    }

    /// Sends packets `0..n` on the connected socket `fd`.
    pub fn send(&mut self, fd: RawFd, n: usize) -> SendResult {
        let n = n.min(self.msgs.len());
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * size < bufs.len().
                iov_base: unsafe { base.add(i * self.size) } as *mut libc::c_void,
                iov_len: self.size,
            };
            // SAFETY: zeroed mmsghdr is valid (no name: connected socket).
            self.msgs[i] = unsafe { zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iovs[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the messages point into self.iovs / self.bufs, alive for the call.
        unsafe { send_all(fd, &mut self.msgs[..n]) }
    }
}

/// Minimal level-triggered epoll for readability.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            // SAFETY: plain C struct.
            events: vec![unsafe { zeroed() }; max_events.max(1)],
        })
    }

    /// Watches `fd` for input; `token` comes back from [`wait`](Self::wait).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd and event struct.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Waits up to `timeout_ms` and returns the tokens of ready fds.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: the events buffer is valid for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

/// Sets a receive timeout so blocking receives wake up to check for shutdown.
pub fn set_recv_timeout(sock: &UdpSocket, d: std::time::Duration) -> io::Result<()> {
    sock.set_read_timeout(Some(d))
}

/// CPU time (user + system, all threads) of process `pid` so far, in seconds, from
/// `/proc/PID/stat` (clock-tick resolution, 10 ms here).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&s)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / hz as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // rest starts at field 3 (state): utime is field 14, i.e. the 12th here.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid` in KiB (VmRSS from /proc/PID/status).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&s).ok_or_else(|| io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// Extracts VmRSS (KiB) from the text of /proc/PID/status.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let line = "1234 (media server) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        let me = cpu_seconds(std::process::id()).unwrap();
        assert!(me >= 0.0);
    }

    use super::*;

    #[test]
    fn parses_addresses_and_ranges() {
        let v = parse_targets("127.0.0.1:5000, 127.0.0.1:6000-6002,[::1]:7000").unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            s,
            [
                "127.0.0.1:5000",
                "127.0.0.1:6000",
                "127.0.0.1:6001",
                "127.0.0.1:6002",
                "[::1]:7000"
            ]
        );
        assert!(parse_targets("").is_err());
        assert!(parse_targets("127.0.0.1").is_err());
        assert!(parse_targets("127.0.0.1:6002-6000").is_err());
        assert!(parse_targets("127.0.0.1:0").is_err());
        assert!(parse_targets("nohost:5").is_err());
    }

    #[test]
    fn vmrss() {
        let s = "Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vmrss(s), Some(12345));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn sendmmsg_then_recvmmsg_on_loopback() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let tx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut sb = SendBatch::new(8, 50);
        for i in 0..8 {
            sb.packet_mut(i).fill(i as u8);
        }
        let r = sb.send(tx.as_raw_fd(), 8);
        assert_eq!(
            r,
            SendResult {
                sent: 8,
                failed: 0,
                would_block: false
            }
        );
        set_recv_timeout(&rx, std::time::Duration::from_secs(2)).unwrap();
        let mut rb = RecvBatch::new(16);
        let mut got = Vec::new();
        while got.len() < 8 {
            let n = rb.recv(rx.as_raw_fd(), libc::MSG_WAITFORONE).unwrap();
            for i in 0..n {
                got.push(rb.get(i).to_vec());
            }
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 50]);
        }
        assert_eq!(
            rb.ancillary(0),
            Ancillary::default(),
            "ancillary data not requested"
        );
        // Non-blocking receive on an empty socket.
        let e = rb.recv(rx.as_raw_fd(), libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn kernel_timestamps_are_close_to_the_clock() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        enable_rx_timestamps(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let offset = crate::clock::realtime_offset_ns();
        let before = crate::clock::mono_ns();
        tx.send_to(b"abc", rx.local_addr().unwrap()).unwrap();
        set_recv_timeout(&rx, std::time::Duration::from_secs(2)).unwrap();
        let mut rb = RecvBatch::with_ancillary(4);
        assert_eq!(rb.recv(rx.as_raw_fd(), libc::MSG_WAITFORONE).unwrap(), 1);
        let after = crate::clock::mono_ns();
        assert_eq!(rb.get(0), b"abc");
        let a = rb.ancillary(0);
        assert_eq!(a.socket_drops, None, "drop counter not enabled");
        let at = (a.kernel_time_ns.expect("SO_TIMESTAMPNS") as i64 - offset) as u64;
        // Realtime/monotonic offset sampling is good to a few microseconds.
        assert!(
            at + 50_000 >= before && at <= after + 50_000,
            "{before} <= {at} <= {after}"
        );
    }

    #[test]
    fn drain_reads_batches_until_short_and_stops_at_the_round_bound() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..7u8 {
            tx.send_to(&[i], to).unwrap();
        }
        let mut rb = RecvBatch::new(2);
        let mut seen = Vec::new();
        // Two rounds of two: four datagrams, the rest stays queued.
        rb.drain(rx.as_raw_fd(), 2, |rb, n, _| {
            seen.extend((0..n).map(|i| rb.get(i)[0]))
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2, 3]);
        // The next drain ends at the short batch (one left), then on an empty socket at once.
        rb.drain(rx.as_raw_fd(), 8, |rb, n, _| {
            seen.extend((0..n).map(|i| rb.get(i)[0]))
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
        rb.drain(rx.as_raw_fd(), 8, |_, _, _| panic!("nothing to read"))
            .unwrap();
    }

    #[test]
    fn drop_counter_counts_overflows() {
        // A tiny receive buffer that nobody reads: most of a burst is dropped. The kernel stamps
        // each queued datagram with the drop count at that moment, so the count shows up on
        // the first datagram queued after the drops.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt_int(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).unwrap();
        enable_rx_drop_counter(&rx).unwrap();
        enable_rx_timestamps(&rx).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        let mut rb = RecvBatch::with_ancillary(256);
        let n = rb.recv(rx.as_raw_fd(), libc::MSG_DONTWAIT).unwrap();
        assert!(n > 0 && n < 200, "received {n}");
        assert_eq!(rb.ancillary(0).socket_drops, None, "queued before any drop");
        tx.send_to(b"after", rx.local_addr().unwrap()).unwrap();
        let mut got = None;
        for _ in 0..1000 {
            match rb.recv(rx.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(1) => {
                    got = Some(rb.ancillary(0));
                    break;
                }
                Ok(k) => panic!("unexpected {k} datagrams"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        let a = got.expect("datagram after the drops");
        assert_eq!(rb.get(0), b"after");
        assert!(a.kernel_time_ns.is_some());
        assert_eq!(a.socket_drops, Some(200 - n as u32));
    }

    #[test]
    fn snmp_udp_table() {
        let s = "Ip: a b\nIp: 1 2\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 10 2 3 40 7\n";
        assert_eq!(parse_snmp_udp(s, "RcvbufErrors"), Some(7));
        assert_eq!(parse_snmp_udp(s, "InDatagrams"), Some(10));
        assert_eq!(parse_snmp_udp(s, "Nope"), None);
        assert!(udp_rcvbuf_errors().is_ok());
    }

    #[test]
    fn epoll_reports_readable_sockets() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16).unwrap();
        let mut ep = Epoll::new(8).unwrap();
        ep.add(a.as_raw_fd(), 10).unwrap();
        ep.add(b.as_raw_fd(), 20).unwrap();
        assert_eq!(ep.wait(0).unwrap().count(), 0);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let ready: Vec<u64> = ep.wait(1000).unwrap().collect();
        assert_eq!(ready, [20]);
    }
}
