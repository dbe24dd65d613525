//! The legitimate client under a connection flood: idle sockets and slow-header (slowloris)
//! connections held against the gateway from many loopback addresses, reopened as fast as the
//! gateway closes them, while one client keeps calling a tool. Latency of that client is what
//! the report shows, next to the same client without the flood.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Connections per attacking address: under the gateway's default per-address cap (256), so
/// it is the total cap (and its eviction of idle connections) that the flood runs into.
const PER_ADDRESS: usize = 250;
/// How often the attacker reopens what the gateway closed, and trickles slowloris bytes.
const TICK: Duration = Duration::from_millis(500);

/// What the attacker saw.
#[derive(Debug, Default)]
pub struct Pressure {
    /// Connections open at the last check (held against the gateway).
    pub open_idle: AtomicU64,
    pub open_slow: AtomicU64,
    /// Connections the gateway closed and the attacker reopened.
    pub reopened: AtomicU64,
}

/// Runs the flood until `stop` is set. Idle connections come from 127.0.1.x, slow ones from
/// 127.0.2.x (all of 127/8 is loopback on Linux), `PER_ADDRESS` per address.
pub async fn flood(
    gateway: SocketAddr,
    idle: usize,
    slow: usize,
    pressure: Arc<Pressure>,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    for (kind, total, subnet) in [(Kind::Idle, idle, 1u8), (Kind::Slow, slow, 2u8)] {
        let addresses = total.div_ceil(PER_ADDRESS);
        for a in 0..addresses {
            let count = PER_ADDRESS.min(total - a * PER_ADDRESS);
            let host = u8::try_from(a % 250 + 1).unwrap_or(1);
            let source: SocketAddr = format!("127.0.{subnet}.{host}:0")
                .parse()
                .expect("a loopback address");
            tasks.push(tokio::spawn(hold(
                kind,
                source,
                gateway,
                count,
                pressure.clone(),
                stop.clone(),
            )));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Idle,
    Slow,
}

/// Keeps `count` connections from `source` open, reopening the ones the gateway closes.
async fn hold(
    kind: Kind,
    source: SocketAddr,
    gateway: SocketAddr,
    count: usize,
    pressure: Arc<Pressure>,
    stop: Arc<AtomicBool>,
) {
    let mut slots: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    let mut first_round = true;
    let mut last_open = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut open = 0u64;
        for slot in &mut slots {
            let alive = match slot {
                Some(s) => match kind {
                    Kind::Idle => is_open(s),
                    Kind::Slow => s.write_all(b"x").await.is_ok() && is_open(s),
                },
                None => false,
            };
            if alive {
                open += 1;
                continue;
            }
            if !first_round {
                pressure.reopened.fetch_add(1, Ordering::Relaxed);
            }
            *slot = connect(source, gateway, kind).await;
            if slot.is_some() {
                open += 1;
            }
        }
        first_round = false;
        let counter = match kind {
            Kind::Idle => &pressure.open_idle,
            Kind::Slow => &pressure.open_slow,
        };
        counter.fetch_add(open, Ordering::Relaxed);
        counter.fetch_sub(last_open, Ordering::Relaxed);
        last_open = open;
        tokio::time::sleep(TICK).await;
    }
}

async fn connect(source: SocketAddr, gateway: SocketAddr, kind: Kind) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(source).ok()?;
    let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(gateway))
        .await
        .ok()?
        .ok()?;
    if kind == Kind::Slow {
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .ok()?;
    }
    Some(stream)
}

/// Whether the gateway has not closed `stream` (a read would block rather than see EOF).
fn is_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {} // a response (408, say) before the close: keep reading
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
