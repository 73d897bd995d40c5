//! The media port pool: UDP ports for sessions, one socket per leg.
//!
//! Ports are not handed out in sequence: the pool walks the range with a random stride
//! coprime to its size, from a random start. Consecutive sessions get far-apart ports (a
//! stranger who sees one cannot guess the next, and a spray has to cover the range to find
//! a PENDING plain-RTP publisher), and the walk is a full cycle, so a port just freed is
//! reused last, as with a sequential allocator (a sender that has not noticed its session
//! ended keeps hitting a closed port rather than latching the next publisher).

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ring::rand::SecureRandom;
use socket2::{Domain, Protocol, Socket, Type};

pub struct PortPool {
    min: u16,
    max: u16,
    /// Offset of the next port to try, and the stride of the walk.
    next: u32,
    stride: u32,
    /// The last bind found no free port (cleared by the next one that succeeds): `/ready`.
    exhausted: bool,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> PortPool {
        let max = max.max(min);
        let span = u32::from(max - min) + 1;
        let rng = ring::rand::SystemRandom::new();
        let mut b = [0u8; 8];
        // The system RNG does not fail on Linux; a fixed start and stride are still correct.
        let _ = rng.fill(&mut b);
        let r = u64::from_ne_bytes(b);
        let next = (r % u64::from(span)) as u32;
        // A stride in the middle third of the range, coprime with its size.
        let mut stride = (span / 3 + ((r >> 32) as u32) % (span / 3).max(1)).max(1);
        while gcd(stride, span) != 1 {
            stride += 1;
        }
        PortPool {
            min,
            max,
            next,
            stride: stride % span.max(1),
            exhausted: false,
        }
    }

    /// A session ended: its ports are free again (readiness stops saying "exhausted").
    pub fn released(&mut self) {
        self.exhausted = false;
    }

    pub fn span(&self) -> usize {
        (self.max - self.min) as usize + 1
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Binds the next free port of the walk. Only "in use" moves on to the next port; any
    /// other error (out of descriptors, a bad address) is returned at once.
    pub fn bind(&mut self, ip: IpAddr, publisher: bool) -> std::io::Result<UdpSocket> {
        let span = self.span() as u32;
        for _ in 0..span {
            let port = self.min + self.next as u16;
            self.next = (self.next + self.stride) % span;
            match bind_udp(SocketAddr::new(ip, port), publisher) {
                Ok(s) => {
                    self.exhausted = false;
                    return Ok(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
        self.exhausted = true;
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "every port of the range is in use",
        ))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn bind_udp(addr: SocketAddr, publisher: bool) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if publisher {
        // A publisher's port absorbs bursts (keyframes) while its shard is busy fanning out.
        let _ = s.set_recv_buffer_size(4 << 20);
    } else {
        let _ = s.set_send_buffer_size(1 << 20);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ports_are_not_handed_out_in_sequence_and_stay_in_range() {
        let mut pool = PortPool::new(20100, 20199);
        let socks: Vec<UdpSocket> = (0..20)
            .map(|_| pool.bind(IpAddr::V4(Ipv4Addr::LOCALHOST), false).unwrap())
            .collect();
        let ports: Vec<u16> = socks
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(
            ports.iter().all(|p| (20100..=20199).contains(p)),
            "{ports:?}"
        );
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
        // Random starts: 19 consecutive pairs would all be +1 in sequence; by chance a few.
        assert!(sequential < 10, "{ports:?}");
        assert!(!pool.exhausted());
    }

    #[test]
    fn the_walk_visits_every_port_before_reusing_one() {
        for (min, max) in [
            (20300u16, 20399u16),
            (20400, 20400),
            (20500, 20563),
            (65500, 65535),
        ] {
            let mut pool = PortPool::new(min, max);
            let span = pool.span() as u32;
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..span {
                seen.insert(pool.min + pool.next as u16);
                pool.next = (pool.next + pool.stride) % span;
            }
            assert_eq!(
                seen.len() as u32,
                span,
                "{min}-{max} stride {}",
                pool.stride
            );
            assert!(seen.iter().all(|p| (min..=max).contains(p)));
        }
    }

    #[test]
    fn a_full_range_is_reported_exhausted_until_a_port_frees() {
        let mut pool = PortPool::new(20200, 20203);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut held: Vec<UdpSocket> = (0..4).map(|_| pool.bind(ip, true).unwrap()).collect();
        assert!(pool.bind(ip, true).is_err());
        assert!(pool.exhausted());
        held.pop();
        assert!(pool.bind(ip, true).is_ok());
        assert!(!pool.exhausted());
    }
}
