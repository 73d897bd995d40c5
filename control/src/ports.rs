//! The media port pool: UDP ports for sessions, one socket per leg.
//!
//! A port is picked at random in the range (then the next free one after it), not in
//! sequence: a stranger who sees one session's port cannot guess the next one, and a spray
//! over the range has to cover it all to find a PENDING plain-RTP publisher (which latches
//! only its expected source anyway when it has one, see `core`).

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ring::rand::SecureRandom;
use socket2::{Domain, Protocol, Socket, Type};

pub struct PortPool {
    min: u16,
    max: u16,
    rng: ring::rand::SystemRandom,
    /// The last bind found no free port (cleared by the next one that succeeds): `/ready`.
    exhausted: bool,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> PortPool {
        PortPool {
            min,
            max: max.max(min),
            rng: ring::rand::SystemRandom::new(),
            exhausted: false,
        }
    }

    pub fn span(&self) -> usize {
        (self.max - self.min) as usize + 1
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// A random starting point in the range.
    fn start(&self) -> u16 {
        let mut b = [0u8; 4];
        let r = match self.rng.fill(&mut b) {
            Ok(()) => u32::from_ne_bytes(b),
            // The system RNG does not fail on Linux; a fixed start is still correct.
            Err(_) => 0,
        };
        self.min + (r % self.span() as u32) as u16
    }

    /// Binds a free port in the range, starting at a random one.
    pub fn bind(&mut self, ip: IpAddr, publisher: bool) -> std::io::Result<UdpSocket> {
        let mut port = self.start();
        let mut last_err = None;
        for _ in 0..self.span() {
            match bind_udp(SocketAddr::new(ip, port), publisher) {
                Ok(s) => {
                    self.exhausted = false;
                    return Ok(s);
                }
                Err(e) => last_err = Some(e),
            }
            port = if port >= self.max { self.min } else { port + 1 };
        }
        self.exhausted = true;
        Err(last_err.unwrap_or_else(|| std::io::Error::other("empty port range")))
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
