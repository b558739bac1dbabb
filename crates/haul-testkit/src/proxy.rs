//! A fault-injecting TCP proxy on 127.0.0.1 for end-to-end tests: it
//! forwards to a server on this machine and, in either direction, cuts
//! connections, flips a byte, or delays, at seeded rates per chunk (up to
//! 64 KiB read from one side). What a flaky network does to a client that
//! must never land a corrupted byte.
//!
//! Threads, not async: the proxy must not depend on the runtime of the code
//! under test. Its threads end with the test process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy)]
pub struct ProxyFaults {
    pub seed: u64,
    /// Fraction of chunks after which both sides of the connection are cut.
    pub cut_rate: f64,
    /// Fraction of chunks with one byte flipped.
    pub flip_rate: f64,
    /// Added before each chunk is forwarded.
    pub delay: Duration,
}

/// Counts of what was done, for the test's report.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub chunks: AtomicU64,
    pub cuts: AtomicU64,
    pub flips: AtomicU64,
}

/// A running proxy.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    pub endpoint: String,
    pub stats: Arc<ProxyStats>,
}

/// A tiny seeded generator (xorshift), one per proxy, shared by its threads.
#[derive(Debug)]
struct Dice(Mutex<u64>);

impl Dice {
    fn next(&self) -> u64 {
        let mut x = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn chance(&self, rate: f64) -> bool {
        rate > 0.0 && (self.next() % 1_000_000) < (rate * 1_000_000.0) as u64
    }
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, faults: ProxyFaults) -> Result<FaultProxy, std::io::Error> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let stats = Arc::new(ProxyStats::default());
        let dice = Arc::new(Dice(Mutex::new(faults.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)));
        let st = stats.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                for (from, to) in [(client, server), (s2, c2)] {
                    let (st, dice) = (st.clone(), dice.clone());
                    std::thread::spawn(move || pump(from, to, faults, &st, &dice));
                }
            }
        });
        Ok(FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            stats,
        })
    }

    /// "N connections, N chunks, N cut, N flipped".
    pub fn report(&self) -> String {
        let s = &self.stats;
        format!(
            "{} connections, {} chunks, {} cut, {} flipped",
            s.connections.load(Ordering::Relaxed),
            s.chunks.load(Ordering::Relaxed),
            s.cuts.load(Ordering::Relaxed),
            s.flips.load(Ordering::Relaxed)
        )
    }
}

/// Copies `from` to `to` chunk by chunk, with faults, until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream, f: ProxyFaults, st: &ProxyStats, dice: &Dice) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        st.chunks.fetch_add(1, Ordering::Relaxed);
        if !f.delay.is_zero() {
            std::thread::sleep(f.delay);
        }
        if dice.chance(f.cut_rate) {
            st.cuts.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if dice.chance(f.flip_rate) {
            let at = (dice.next() as usize) % n;
            buf[at] ^= 1 << (dice.next() % 8);
            st.flips.fetch_add(1, Ordering::Relaxed);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
