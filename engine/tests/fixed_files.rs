//! Sockets registered in the ring's file table: with a table smaller than the legs, some
//! legs use slots and the rest their fds, and all get every packet; a stopped session's slot
//! goes to the next session, and packets then reach the new socket, never the old one; a
//! released socket is closed for real (the table holds no reference to it).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use engine::{Command, Engine, EngineConfig, Event, NewLeg, NewSession, Role, ShardConfig};

const T: Duration = Duration::from_secs(5);

fn packet(seq: u16, tag: u8) -> Vec<u8> {
    let mut v = vec![0x80, 96];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    v.extend_from_slice(&0x1234u32.to_be_bytes());
    v.extend_from_slice(&[tag; 100]);
    v
}

/// A player session: the test's receiving socket and the server side's address.
fn player(engine: &Engine, id: u64) -> (UdpSocket, std::net::SocketAddr) {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let server_side = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server_side.local_addr().unwrap();
    let leg = NewLeg::plain(server_side, Some(sink.local_addr().unwrap()));
    engine.send(
        0,
        Command::AddSession(NewSession {
            id,
            stream: 7,
            role: Role::Player,
            legs: vec![leg],
            webrtc: None,
            timeouts: Default::default(),
            serve_first: false,
        }),
    );
    (sink, addr)
}

/// Reads what `sink` got until it is quiet: the tags of the packets, in order.
fn drain(sink: &UdpSocket) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sink.recv(&mut buf) {
        got.push(buf[n - 1]);
    }
    got
}

fn send_round(src: &UdpSocket, to: std::net::SocketAddr, seq: &mut u16, tag: u8) {
    for _ in 0..20 {
        src.send_to(&packet(*seq, tag), to).unwrap();
        *seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_removed(engine: &Engine, id: u64) {
    let end = Instant::now() + T;
    while Instant::now() < end {
        if let Ok(Event::Removed { id: got }) = engine.events().recv_timeout(T) {
            if got == id {
                return;
            }
        }
    }
    panic!("session {id} was not released");
}

#[test]
fn legs_past_the_table_use_fds_and_released_slots_are_reused_safely() {
    let engine = Engine::start(EngineConfig {
        shards: 1,
        pin: false,
        shard: ShardConfig {
            // The publisher and players 1 and 2 get slots; players 3 and 4 use fds.
            fixed_files: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let pub_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = pub_sock.local_addr().unwrap();
    engine.send(
        0,
        Command::AddSession(NewSession {
            id: 1,
            stream: 7,
            role: Role::Publisher,
            legs: vec![NewLeg::plain(pub_sock, None)],
            webrtc: None,
            timeouts: Default::default(),
            serve_first: false,
        }),
    );
    let (sinks, addrs): (Vec<UdpSocket>, Vec<_>) =
        (1..=4).map(|i| player(&engine, 100 + i)).unzip();
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seq = 0u16;
    std::thread::sleep(Duration::from_millis(100));
    send_round(&src, media, &mut seq, 1);
    for (i, s) in sinks.iter().enumerate() {
        assert_eq!(drain(s), vec![1; 20], "player {}: every packet", i + 1);
    }
    // Player 1 (a slot) and player 3 (an fd) stop; players 5 and 6 join: 5 takes player
    // 1's slot, 6 uses an fd.
    for id in [101, 103] {
        engine.send(
            0,
            Command::Terminate {
                id,
                info: "test".into(),
            },
        );
        wait_removed(&engine, id);
    }
    // Their sockets are closed: the ports can be bound again.
    for i in [0, 2] {
        let again = UdpSocket::bind(addrs[i]);
        assert!(
            again.is_ok(),
            "player {}'s port {} is free: {again:?}",
            i + 1,
            addrs[i]
        );
    }
    let new: Vec<UdpSocket> = (5..=6).map(|i| player(&engine, 100 + i).0).collect();
    std::thread::sleep(Duration::from_millis(100));
    send_round(&src, media, &mut seq, 2);
    for (i, s) in new.iter().enumerate() {
        assert_eq!(drain(s), vec![2; 20], "new player {}: every packet", i + 5);
    }
    for (i, s) in sinks.iter().enumerate() {
        let want = if i == 0 || i == 2 {
            vec![]
        } else {
            vec![2; 20]
        };
        assert_eq!(drain(s), want, "player {} after the change", i + 1);
    }
    let c = engine.stats()[0].counters;
    assert_eq!(c.send_errors, 0, "{c:?}");
    assert_eq!(c.packets_out, 4 * 20 + 4 * 20, "{c:?}");
}
