//! A small UDP impairment relay for media tests: a slow, lossy or distant
//! link between one WebRTC client and a server, on loopback, without root.
//!
//! The relay listens on a loopback port of its own (the *front*) and talks
//! to the server from a second socket (the *back*). A client that uses the
//! front's address as the server's ICE candidate reaches the server through
//! it; the server, being ICE-lite, answers STUN from whatever address
//! reaches it, so it simply sees the back socket as the client's address.
//!
//! Each direction is shaped like a `tc tbf` qdisc with a `latency` limit: a
//! FIFO drained at the rate cap, a datagram that would wait longer than the
//! queue bound is dropped (drop-tail), then random loss, then a fixed delay.
//! Rate and loss can be changed while it runs (to lift a cap). It counts
//! what it forwarded and what it dropped, per direction, and for RTP
//! datagrams per SSRC (RTP headers are in the clear under SRTP).
//!
//! The bucket is driven by the kernel's receive time of each datagram
//! (`SO_TIMESTAMPNS`), not the time the relay's thread got round to reading
//! it: on a loaded machine that thread can be descheduled for tens of
//! milliseconds, and datagrams that arrived spread out would otherwise
//! meet the bucket as one burst and overflow a queue a real link never
//! would have (a 50 ms queue at 150 kbit/s is under 1 kB).
//!
//! Bounded: it stops by itself after its time bound, and when dropped.
//! One thread per direction; nothing here reads anything but loopback.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::clock;

/// How one direction of the link behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Rate cap in bit/s (IP and UDP headers counted, 28 bytes), or none.
    pub rate_bps: Option<u64>,
    /// Longest a datagram may wait in the queue before it is dropped
    /// instead (`tbf ... latency`).
    pub queue: Duration,
    /// Share of datagrams dropped at random, 0.0 to 1.0.
    pub loss: f64,
    /// Added one-way delay.
    pub delay: Duration,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            rate_bps: None,
            queue: Duration::from_millis(50),
            loss: 0.0,
            delay: Duration::ZERO,
        }
    }
}

/// What one direction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams received from the sender.
    pub received: u64,
    /// Datagrams passed on.
    pub forwarded: u64,
    /// Bytes passed on (UDP payload).
    pub forwarded_bytes: u64,
    /// Bytes received from the sender (UDP payload): what was offered.
    pub received_bytes: u64,
    /// Dropped because the queue was full (the rate cap).
    pub dropped_queue: u64,
    /// Dropped at random (the loss setting).
    pub dropped_loss: u64,
    /// RTP datagrams dropped (either reason), per SSRC.
    pub rtp_dropped: HashMap<u32, u64>,
    /// RTP datagrams received, per SSRC.
    pub rtp_received: HashMap<u32, u64>,
    /// The longest a datagram waited in the relay's socket before its
    /// thread read it (scheduling on a loaded machine; the bucket does not
    /// count this wait).
    pub read_lag_max: Duration,
    /// The first [`DROP_LOG`] datagrams dropped because the queue was full:
    /// when (since the relay started), their SSRC if RTP, and their size.
    pub drop_log: Vec<(Duration, Option<u32>, usize)>,
}

/// How many queue drops [`DirStats::drop_log`] keeps.
pub const DROP_LOG: usize = 20_000;

impl DirStats {
    /// Every datagram dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue + self.dropped_loss
    }
}

/// One direction's settings and counters, shared with its thread.
#[derive(Debug, Default)]
struct Dir {
    shape: Shape,
    stats: DirStats,
    /// Bytes received from the sender, with arrival times, for offered-rate
    /// windows: (arrival offset from start in ms, bytes), last 120 s.
    offered: VecDeque<(u64, u64)>,
}

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

#[derive(Debug)]
struct Shared {
    up: Mutex<Dir>,
    down: Mutex<Dir>,
    stop: AtomicBool,
    /// The client's address, learnt from its first datagram.
    client: Mutex<Option<SocketAddr>>,
    /// The server's address (nothing passes until it is known).
    server: Mutex<Option<SocketAddr>>,
    start: Instant,
}

impl Shared {
    fn dir(&self, way: Way) -> &Mutex<Dir> {
        match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        }
    }
}

/// A running relay between one client and `server`. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    front: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a relay thread sleeps at most between looks at its stop flag.
const TICK: Duration = Duration::from_millis(5);

impl Relay {
    /// Starts a relay towards `server` that stops by itself after `bound`.
    pub fn start(server: SocketAddr, bound: Duration) -> Result<Relay> {
        let relay = Relay::unconnected(bound)?;
        relay.set_server(server);
        Ok(relay)
    }

    /// The server's address, once known (from the SDP the client gets).
    pub fn set_server(&self, server: SocketAddr) {
        *self
            .shared
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server);
    }

    /// Starts a relay whose server is named later ([`Relay::set_server`];
    /// until then nothing passes) that stops by itself after `bound`.
    pub fn unconnected(bound: Duration) -> Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").context("binding the relay's front")?;
        let back = UdpSocket::bind("127.0.0.1:0").context("binding the relay's back")?;
        let front_addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            up: Mutex::default(),
            down: Mutex::default(),
            stop: AtomicBool::new(false),
            client: Mutex::new(None),
            server: Mutex::new(None),
            start: clock::now(),
        });
        let deadline = shared.start + bound;
        let mut threads = Vec::new();
        for way in [Way::Up, Way::Down] {
            let (rx, tx) = match way {
                Way::Up => (front.try_clone()?, back.try_clone()?),
                Way::Down => (back.try_clone()?, front.try_clone()?),
            };
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("relay-{way:?}"))
                    .spawn(move || pump(way, rx, tx, &shared, deadline))
                    .context("starting a relay thread")?,
            );
        }
        Ok(Relay {
            front: front_addr,
            shared,
            threads,
        })
    }

    /// The address a client sends to (the server's candidate, for it).
    pub fn addr(&self) -> SocketAddr {
        self.front
    }

    /// Changes one direction's shape; takes effect for the next datagram.
    pub fn set(&self, way: Way, shape: Shape) {
        lock(self.shared.dir(way)).shape = shape;
    }

    /// One direction's current shape.
    pub fn shape(&self, way: Way) -> Shape {
        lock(self.shared.dir(way)).shape
    }

    /// Sets one direction's rate cap (`None` lifts it), keeping the rest.
    pub fn set_rate(&self, way: Way, rate_bps: Option<u64>) {
        lock(self.shared.dir(way)).shape.rate_bps = rate_bps;
    }

    /// Sets one direction's random loss (0.0 to 1.0), keeping the rest.
    pub fn set_loss(&self, way: Way, loss: f64) {
        lock(self.shared.dir(way)).shape.loss = loss.clamp(0.0, 1.0);
    }

    /// One direction's counters so far.
    pub fn stats(&self, way: Way) -> DirStats {
        lock(self.shared.dir(way)).stats.clone()
    }

    /// The largest rate (bit/s, UDP payload) offered to the relay in one
    /// direction over any `window` that ends between `from` and `to`
    /// (offsets from [`Relay::elapsed`]), measured in 100 ms steps.
    pub fn max_offered_bps(&self, way: Way, from: Duration, to: Duration, window: Duration) -> u64 {
        let d = lock(self.shared.dir(way));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (from, to, w) = (ms(from), ms(to), ms(window).max(1));
        let mut best = 0;
        let mut end = from;
        while end <= to {
            let bytes: u64 = d
                .offered
                .iter()
                .filter(|(t, _)| *t + w > end && *t <= end)
                .map(|(_, b)| b)
                .sum();
            best = best.max(bytes * 8 * 1000 / w);
            end += 100;
        }
        best
    }

    /// Time since the relay started (the clock of [`Relay::max_offered_bps`]).
    pub fn elapsed(&self) -> Duration {
        clock::now() - self.shared.start
    }

    /// Stops both directions now.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(m: &Mutex<Dir>) -> std::sync::MutexGuard<'_, Dir> {
    // A relay thread never panics while holding the lock (it only counts),
    // so a poisoned lock still holds consistent counters.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The SSRC of an RTP datagram (not RTCP, not STUN or DTLS: RFC 7983).
fn rtp_ssrc(d: &[u8]) -> Option<u32> {
    let (b0, b1) = (*d.first()?, *d.get(1)?);
    if !(128..=191).contains(&b0) || (192..=223).contains(&b1) || d.len() < 12 {
        return None;
    }
    Some(u32::from_be_bytes(d.get(8..12)?.try_into().ok()?))
}

/// Reads one datagram: its length, sender and the kernel's receive time
/// (Unix ns), if the kernel gave one.
fn recv_stamped(
    rx: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u64>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<SockaddrStorage>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
    let mut ts = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(t) = c {
                let ns = u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(t.tv_nsec()).unwrap_or(0);
                ts = Some(ns);
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s)))
        })
        .ok_or_else(|| std::io::Error::other("a datagram from no IPv4 address"))?;
    Ok((msg.bytes, from, ts))
}

/// One direction: read, shape, release when due, until stopped or `deadline`.
fn pump(way: Way, rx: UdpSocket, tx: UdpSocket, shared: &Shared, deadline: Instant) {
    // Without kernel timestamps the read time stands in (as before).
    let stamped =
        nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .is_ok();
    // Room for what arrives while this thread is descheduled (the link's
    // queue is the bucket's, not the socket's).
    let _ = nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // When the link finishes sending what is already queued.
    let mut busy_until = shared.start;
    let mut buf = vec![0u8; 2048];
    while !shared.stop.load(Ordering::SeqCst) {
        let now = clock::now();
        if now >= deadline {
            break;
        }
        // Release what is due.
        while queue.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, bytes)) = queue.pop_front() else {
                break;
            };
            let to = match way {
                Way::Up => *shared
                    .server
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Way::Down => *shared
                    .client
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            if let Some(to) = to {
                let _ = tx.send_to(&bytes, to);
            }
        }
        let wait = queue
            .front()
            .map_or(TICK, |(at, _)| at.saturating_duration_since(now).min(TICK))
            .max(Duration::from_micros(100));
        if rx.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        let Ok((n, from, stamp)) = recv_stamped(&rx, &mut buf) else {
            continue;
        };
        let read_at = clock::now();
        // When the datagram reached the relay's socket (see the module doc).
        let lag = match (stamped, stamp) {
            (true, Some(ns)) => Duration::from_nanos(clock::unix_ns().saturating_sub(ns)),
            _ => Duration::ZERO,
        };
        let now = read_at
            .checked_sub(lag)
            .unwrap_or(read_at)
            .max(shared.start);
        let server = *shared
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match way {
            Way::Up => {
                *shared
                    .client
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(from);
            }
            // Only the server's datagrams go down.
            Way::Down if Some(from) != server => continue,
            Way::Down => {}
        }
        let data = &buf[..n];
        let ssrc = rtp_ssrc(data);
        let mut d = lock(shared.dir(way));
        let shape = d.shape;
        d.stats.received += 1;
        d.stats.received_bytes += n as u64;
        d.stats.read_lag_max = d.stats.read_lag_max.max(lag);
        let t_ms = u64::try_from((now - shared.start).as_millis()).unwrap_or(u64::MAX);
        d.offered.push_back((t_ms, n as u64));
        while d.offered.front().is_some_and(|(t, _)| *t + 120_000 < t_ms) {
            d.offered.pop_front();
        }
        if let Some(s) = ssrc {
            *d.stats.rtp_received.entry(s).or_default() += 1;
        }
        // The token bucket: a FIFO drained at the cap, bounded by `queue`.
        let leave = match shape.rate_bps {
            None => Some(now),
            Some(rate) => {
                let start = busy_until.max(now);
                if start - now > shape.queue {
                    None
                } else {
                    let bits = (n as u64 + 28) * 8;
                    let tx = Duration::from_nanos(bits * 1_000_000_000 / rate.max(1));
                    busy_until = start + tx;
                    Some(busy_until)
                }
            }
        };
        let Some(leave) = leave else {
            d.stats.dropped_queue += 1;
            if d.stats.drop_log.len() < DROP_LOG {
                let at = now.saturating_duration_since(shared.start);
                d.stats.drop_log.push((at, ssrc, n));
            }
            if let Some(s) = ssrc {
                *d.stats.rtp_dropped.entry(s).or_default() += 1;
            }
            continue;
        };
        if shape.loss > 0.0 && rand::random::<f64>() < shape.loss {
            d.stats.dropped_loss += 1;
            if let Some(s) = ssrc {
                *d.stats.rtp_dropped.entry(s).or_default() += 1;
            }
            continue;
        }
        d.stats.forwarded += 1;
        d.stats.forwarded_bytes += n as u64;
        drop(d);
        queue.push_back((leave + shape.delay, data.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A server that echoes every datagram; returns its address.
    fn echo() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(&b[..n], from);
            }
        });
        a
    }

    #[test]
    fn forwards_both_ways_and_caps_the_rate() {
        let server = echo();
        let relay = Relay::start(server, Duration::from_secs(20)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        client.send_to(b"hello", relay.addr()).unwrap();
        let mut b = [0u8; 2048];
        let (n, from) = client.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"hello"[..], relay.addr()));

        // 200 datagrams of 972 bytes (8 kbit each with headers) at once
        // into a 400 kbit/s link with a 50 ms queue: about 50 ms worth
        // (2.5 datagrams) plus the one on the wire get through.
        relay.set_rate(Way::Up, Some(400_000));
        // (Paced a little, so that the kernel's socket buffer, a queue of
        // its own, does not drop them before the relay reads them.)
        for _ in 0..200 {
            client.send_to(&[7u8; 972], relay.addr()).unwrap();
            std::thread::sleep(Duration::from_micros(50));
        }
        let mut got = 0;
        while client.recv_from(&mut b).is_ok() {
            got += 1;
        }
        let up = relay.stats(Way::Up);
        assert_eq!(up.dropped_queue + up.forwarded, up.received, "{up:?}");
        assert!(up.received > 150, "{up:?}");
        // At most the queue's 50 ms and what the sends took, at 20 ms each.
        assert!(
            (2..=12).contains(&got),
            "{got} through a full queue: {up:?}"
        );
        assert!(up.dropped_queue >= up.received - 12, "{up:?}");

        // Lifted: everything passes.
        relay.set_rate(Way::Up, None);
        for _ in 0..50 {
            client.send_to(&[7u8; 972], relay.addr()).unwrap();
        }
        let mut got = 0;
        while client.recv_from(&mut b).is_ok() {
            got += 1;
        }
        assert_eq!(got, 50);
    }

    #[test]
    fn random_loss_is_counted() {
        let server = echo();
        let relay = Relay::start(server, Duration::from_secs(20)).unwrap();
        relay.set_loss(Way::Down, 0.5);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for _ in 0..400 {
            client.send_to(&[1u8; 100], relay.addr()).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut b = [0u8; 2048];
        let mut got = 0u64;
        while client.recv_from(&mut b).is_ok() {
            got += 1;
        }
        let down = relay.stats(Way::Down);
        assert_eq!(down.dropped_loss + got, 400, "{down:?}");
        assert!((120..=280).contains(&got), "{got} of 400 at 50 % loss");
    }

    #[test]
    fn stops_by_itself() {
        let server = echo();
        let relay = Relay::start(server, Duration::from_millis(200)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        client.send_to(b"late", relay.addr()).unwrap();
        let mut b = [0u8; 64];
        assert!(client.recv_from(&mut b).is_err(), "nothing after the bound");
    }
}
