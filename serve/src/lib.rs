//! The HTTP listener every Chaperone service serves on (gateway, recorder
//! feed, review service): `serve(listener, router, limits, shutdown)`.
//!
//! It owns what `axum::serve` leaves open (issue 17):
//!
//! - **Timeouts.** A connection must send a whole request head within
//!   `header_timeout`, also while it sits idle between requests (hyper arms
//!   the timer whenever it waits for a head), so silent, idle and
//!   header-trickling connections are closed. A handler must produce its
//!   response within `request_timeout` (408 otherwise). Upgraded WebSockets
//!   leave hyper and keep their own heartbeats.
//! - **Connection caps.** At most `max_connections` open connections, and at
//!   most `max_per_client` from one address. Past the per-client cap a
//!   connection gets `429` and is closed; past the total cap a small overflow
//!   lane still takes a single request with a short header timeout, answers
//!   `/livez` and `/readyz`, and `503 Retry-After` to anything else, so an
//!   orchestrator's probes keep working while the node is full. Past the
//!   overflow lane: a raw `503` and close.
//! - **Descriptors.** `raise_descriptor_limit` lifts the soft `RLIMIT_NOFILE`
//!   to the hard one at start; the cap is derived from it minus a reserve for
//!   what else the process holds (media socket, Redis, recorder feed, store,
//!   files). When `accept` still fails (EMFILE, ENFILE), the loop backs off
//!   instead of spinning.
//!
//! Every response carries the security headers (`security_headers`).
//!
//! It never reads a request body and never logs a request's content.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// Connections the overflow lane takes once the cap is reached.
pub const OVERFLOW_LANE: usize = 32;
/// Header timeout in the overflow lane.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause of the accept loop after repeated errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Paths the overflow lane still serves.
const HEALTH_PATHS: [&str; 2] = ["/livez", "/readyz"];

/// The limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a whole request head, also between requests.
    pub header_timeout: Duration,
    /// Longest wait for a handler's response (408 after it).
    pub request_timeout: Duration,
    /// Cap on open connections; 0 derives it from the descriptor limit.
    pub max_connections: usize,
    /// Cap on open connections from one client address; 0 is no cap.
    pub max_per_client: usize,
    /// Descriptors kept back for everything but client connections.
    pub reserved_descriptors: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 0,
            max_per_client: 256,
            reserved_descriptors: 256,
        }
    }
}

impl Limits {
    /// The connection cap for a process whose descriptor limit is `nofile`:
    /// the configured cap, never more than the descriptors left after the
    /// reserve and the overflow lane, and at least one.
    pub fn connection_cap(&self, nofile: u64) -> usize {
        let spare = nofile
            .saturating_sub(self.reserved_descriptors)
            .saturating_sub(OVERFLOW_LANE as u64);
        let spare = usize::try_from(spare).unwrap_or(usize::MAX);
        let cap = if self.max_connections == 0 {
            spare
        } else {
            self.max_connections.min(spare)
        };
        cap.max(1)
    }
}

/// The soft descriptor limit now.
pub fn descriptor_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Raises the soft descriptor limit to the hard one (capped at 1 048 576)
/// and returns `(before, after)`. On failure the limit stays and is returned
/// twice; the caller logs it.
pub fn raise_descriptor_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (1024, 1024);
    };
    let target = hard.min(1 << 20);
    if target <= soft {
        return (soft, soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => (soft, target),
        Err(_) => (soft, soft),
    }
}

/// Raises the descriptor limit and logs the connection budget of `limits`
/// for the listener called `what`. Call once at start, before `serve`.
pub fn announce_budget(what: &str, limits: &Limits) -> usize {
    let (before, after) = raise_descriptor_limit();
    let cap = limits.connection_cap(after);
    tracing::info!(
        listener = what,
        descriptors_before = before,
        descriptors = after,
        reserved = limits.reserved_descriptors,
        overflow_lane = OVERFLOW_LANE,
        max_connections = cap,
        max_per_client = limits.max_per_client,
        header_timeout_secs = limits.header_timeout.as_secs_f64(),
        request_timeout_secs = limits.request_timeout.as_secs_f64(),
        "descriptor limit {before} -> {after}: accepting up to {cap} connections ({} reserved for media, store, recorder feed and files)",
        limits.reserved_descriptors
    );
    cap
}

/// Adds the security headers every response carries.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    // frame-ancestors covers current browsers; X-Frame-Options the rest.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Camera and microphone only for this origin's own pages (the lesson
    // page); everything else a page could ask for, never.
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(
            "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=(), interest-cohort=()",
        ),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Marks a request that arrived in the overflow lane.
#[derive(Clone, Copy, Debug)]
struct Overflow;

/// How a new connection is taken.
enum Admission {
    Normal(Ticket),
    Overflow(Ticket),
    /// Refused: the raw response to write before closing.
    Refused(&'static [u8], &'static str),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    overflow: usize,
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Gate {
    cap: usize,
    per_client: usize,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    last_warn_ms: AtomicU64,
    started: tokio::time::Instant,
}

/// Holds one connection's place; gives it back when dropped.
struct Ticket {
    gate: Arc<Gate>,
    ip: IpAddr,
    overflow: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.gate.lock();
        if self.overflow {
            c.overflow = c.overflow.saturating_sub(1);
        } else {
            c.total = c.total.saturating_sub(1);
        }
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}

const REFUSED_PER_CLIENT: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 10\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n\r\ntoo many connections from your address: wait";
const REFUSED_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n\r\nthis server is full: try again shortly";

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A poisoned count is still a count: the guard only holds integers.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let mut c = self.lock();
        let mine = c.per_client.get(&ip).copied().unwrap_or(0);
        if self.per_client != 0 && mine >= self.per_client {
            return Admission::Refused(REFUSED_PER_CLIENT, "per_client");
        }
        let overflow = if c.total < self.cap {
            c.total += 1;
            false
        } else if c.overflow < OVERFLOW_LANE {
            c.overflow += 1;
            true
        } else {
            return Admission::Refused(REFUSED_FULL, "full");
        };
        *c.per_client.entry(ip).or_insert(0) += 1;
        let ticket = Ticket {
            gate: Arc::clone(self),
            ip,
            overflow,
        };
        if overflow {
            Admission::Overflow(ticket)
        } else {
            Admission::Normal(ticket)
        }
    }

    /// Logs a refusal at most every ten seconds, with the count since start.
    fn note_refusal(&self, why: &str, peer: SocketAddr) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (n == 1 || now.saturating_sub(last) >= 10_000)
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(reason = why, client = %peer.ip(), refused_total = n, cap = self.cap, per_client = self.per_client, "connection refused: too many connections");
        }
    }
}

/// Whether an accept error means the process or system ran out of
/// descriptors or memory (back off) rather than one connection failing.
fn exhausted(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Answers anything but the health paths with 503 in the overflow lane.
async fn overflow_gate(req: Request, next: Next) -> Response {
    if req.extensions().get::<Overflow>().is_some() && !HEALTH_PATHS.contains(&req.uri().path()) {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is full: try again shortly",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    next.run(req).await
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes,
/// then lets open requests finish. Call `announce_budget` first to raise the
/// descriptor limit.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = Arc::new(Gate {
        cap: limits.connection_cap(descriptor_limit()),
        per_client: limits.max_per_client,
        counts: Mutex::default(),
        refused: AtomicU64::new(0),
        last_warn_ms: AtomicU64::new(0),
        started: tokio::time::Instant::now(),
    });
    let router = router
        .layer(axum::middleware::from_fn(overflow_gate))
        .layer(axum::middleware::map_response(security_headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    // Every connection holds a receiver; `closed()` on the sender resolves
    // when the last one is gone.
    let (drain, drain_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                if exhausted(&e) {
                    tracing::error!(error = %e, pause_ms = backoff.as_millis(), "accept failed: out of descriptors or memory; pausing");
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let (ticket, overflow) = match gate.admit(peer.ip()) {
            Admission::Normal(t) => (t, false),
            Admission::Overflow(t) => (t, true),
            Admission::Refused(answer, why) => {
                gate.note_refusal(why, peer);
                refuse(stream, answer);
                continue;
            }
        };
        let router = router.clone();
        let mut drain_rx = drain_rx.clone();
        tokio::spawn(async move {
            let _ticket = ticket;
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if overflow {
                    req.extensions_mut().insert(Overflow);
                }
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(if overflow {
                    OVERFLOW_HEADER_TIMEOUT.min(limits.header_timeout)
                } else {
                    limits.header_timeout
                })
                .keep_alive(!overflow);
            let conn = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, client = %peer.ip(), "connection closed");
                    }
                }
                _ = drain_rx.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(drain_rx);
    let _ = drain.send(true);
    drain.closed().await;
    Ok(())
}

/// Writes `answer` if the socket takes it at once, then closes.
fn refuse(stream: TcpStream, answer: &[u8]) {
    let _ = stream.try_write(answer);
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_the_overflow_lane() {
        let limits = Limits::default();
        assert_eq!(limits.connection_cap(1024), 1024 - 256 - OVERFLOW_LANE);
        let fixed = Limits {
            max_connections: 100,
            ..Limits::default()
        };
        assert_eq!(fixed.connection_cap(1 << 20), 100);
        assert_eq!(fixed.connection_cap(300), 12);
        assert_eq!(fixed.connection_cap(10), 1);
    }

    #[test]
    fn refusals_are_well_formed_http() {
        for raw in [REFUSED_PER_CLIENT, REFUSED_FULL] {
            let text = std::str::from_utf8(raw).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .expect("a length");
            assert_eq!(len, body.len(), "{head}");
        }
    }
}
