//! Serves an axum `Router` on a TCP listener within bounds a client cannot
//! stretch: connections in all and per source address, the time to send a
//! request's header, the time a connection may sit without moving a byte,
//! the header's size and count (HTTP/1.1 and HTTP/2, with TLS or without).
//! Both HTTP listeners (operations and the public API) go through here.
//! Knows nothing about routes.

mod tls;

pub use tls::{TlsError, TlsFiles};

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one listener grants its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; a connection over it is closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// A request's header (and a TLS handshake) must arrive within this;
    /// on a connection with no request under way (HTTP/1.1 keep-alive, or
    /// HTTP/2 with no stream open) it is also the wait for the next request.
    pub header_read_timeout: Duration,
    /// A connection that moves no byte in either direction this long is
    /// closed (a silent client, a stalled upload, a client that stopped
    /// reading its answer).
    pub idle_timeout: Duration,
    /// Bytes of a request's start line and headers (HTTP/1.1: at least
    /// 8 KiB, hyper's smallest read buffer; HTTP/2: the header list).
    pub max_header_bytes: usize,
    /// Header fields in one HTTP/1.1 request.
    pub max_headers: usize,
    /// HTTP/2 streams (requests) in flight on one connection.
    pub max_streams: u32,
}

/// How long open connections may finish their requests at a stop.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound listener with its limits and, optionally, TLS.
pub struct BoundedServer {
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<TlsFiles>>,
    /// For logs: which listener this is.
    name: &'static str,
}

impl BoundedServer {
    pub async fn bind(
        name: &'static str,
        listen: &str,
        limits: Limits,
        tls: Option<Arc<TlsFiles>>,
    ) -> io::Result<BoundedServer> {
        let listener = TcpListener::bind(listen).await?;
        Ok(BoundedServer { listener, limits, tls, name })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `app` until `shutdown`, then lets open requests finish for a
    /// few seconds. Requests carry the client's address as
    /// `ConnectInfo<SocketAddr>`.
    pub async fn run(self, app: Router, shutdown: CancellationToken) -> io::Result<()> {
        let BoundedServer { listener, limits, tls, name } = self;
        let slots = Arc::new(Slots::new(limits.max_connections.max(1), limits.max_connections_per_source.max(1)));
        let builder = Arc::new(builder(&limits));
        let connections = TaskTracker::new();
        let mut refused_logged = Instant::now() - Duration::from_secs(60);
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors (or a connection reset before
                        // accept): wait rather than spin; the listener stays.
                        tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = slots.try_take(peer.ip()) else {
                // Closed at once: the descriptor is back before the next accept.
                drop(stream);
                if refused_logged.elapsed() >= Duration::from_secs(10) {
                    refused_logged = Instant::now();
                    tracing::warn!(listener = name, source = %peer.ip(), "connection limit reached; closing new connections");
                }
                continue;
            };
            let (app, builder, tls, shutdown) = (app.clone(), builder.clone(), tls.clone(), shutdown.clone());
            connections.spawn(async move {
                let _slot = slot;
                serve_connection(stream, peer, app, &builder, tls, limits, shutdown).await;
            });
        }
        drop(listener);
        connections.close();
        if tokio::time::timeout(DRAIN + Duration::from_secs(1), connections.wait()).await.is_err() {
            tracing::warn!(listener = name, "connections still open at the stop were closed");
        }
        Ok(())
    }
}

type Builder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

fn builder(limits: &Limits) -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.max(1))
        // hyper answers 431 when the header does not fit its read buffer.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(limits.max_streams.max(1))
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
    builder
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: &Builder,
    tls: Option<Arc<TlsFiles>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let stream = Tracked { inner: stream, activity: activity.clone() };
    match tls {
        None => drive(stream, peer, app, builder, &activity, limits, shutdown).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => drive(stream, peer, app, builder, &activity, limits, shutdown).await,
                Ok(Err(e)) => tracing::debug!(source = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(source = %peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP on one connection until it ends, idles out or the server stops.
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    builder: &Builder,
    activity: &Activity,
    limits: Limits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(Requests::new());
    let counted = requests.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        // In flight from its header until its answer's body is sent (or the
        // request is dropped).
        let guard = InFlight::new(counted.clone());
        async move {
            let response = tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| axum::body::Body::new(Counted { inner: body, _guard: guard })),
            )
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining: Option<Instant> = None;
    loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        // No request under way: the next one's header must come within the
        // header read timeout. hyper enforces it for HTTP/1.1; this does for
        // HTTP/2 too, where a client can keep a connection busy with PINGs
        // or a HEADERS frame never ended (checked again at least every
        // timeout while requests are under way).
        let quiet_left = if requests.in_flight() == 0 {
            limits.header_read_timeout.saturating_sub(requests.quiet_for())
        } else {
            limits.header_read_timeout
        };
        let drain_left = draining.map(|since| DRAIN.saturating_sub(since.elapsed()));
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(source = %peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if draining.is_none() => {
                connection.as_mut().graceful_shutdown();
                draining = Some(Instant::now());
            }
            _ = tokio::time::sleep(idle_left) => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!(source = %peer, "HTTP connection idle; closed");
                    return;
                }
            }
            _ = tokio::time::sleep(quiet_left) => {
                if requests.in_flight() == 0 && requests.quiet_for() >= limits.header_read_timeout {
                    tracing::debug!(source = %peer, "HTTP connection sent no request within the header read timeout; closed");
                    return;
                }
            }
            _ = tokio::time::sleep(drain_left.unwrap_or(Duration::MAX)), if drain_left.is_some() => return,
        }
    }
}

/// The requests under way on one connection, and since when there are none.
struct Requests {
    start: Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    changed_millis: AtomicU64,
}

impl Requests {
    fn new() -> Self {
        Requests { start: Instant::now(), in_flight: Default::default(), changed_millis: AtomicU64::new(0) }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn touch(&self) {
        self.changed_millis.store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Since a request last began or ended (or the connection opened).
    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.changed_millis.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One request under way; counted until dropped.
struct InFlight(Arc<Requests>);

impl InFlight {
    fn new(requests: Arc<Requests>) -> Self {
        requests.in_flight.fetch_add(1, Ordering::AcqRel);
        requests.touch();
        InFlight(requests)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted until it is sent.
struct Counted {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl axum::body::HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { start: Instant::now(), last_millis: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_millis.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A TCP stream that records when it last read or wrote a byte.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connection slots: in all and per source address.
struct Slots {
    max: usize,
    per_source: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Slots {
    fn new(max: usize, per_source: usize) -> Self {
        Slots { max, per_source, open: Mutex::new((0, HashMap::new())) }
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, sources) = &mut *open;
        let here = sources.get(&ip).copied().unwrap_or(0);
        if *total >= self.max || here >= self.per_source {
            return None;
        }
        *total += 1;
        sources.insert(ip, here + 1);
        Some(Slot { slots: self.clone(), ip })
    }
}

/// One open connection; frees its slot when dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, sources) = &mut *open;
        *total -= 1;
        if let Some(count) = sources.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                sources.remove(&self.ip);
            }
        }
    }
}

/// Whether `listen` names a loopback address (plain HTTP there needs no TLS).
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_in_all_and_per_source_and_free_on_drop() {
        let slots = Arc::new(Slots::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "per source");
        let _b1 = slots.try_take(b).unwrap();
        assert!(slots.try_take(b).is_none(), "in all");
        drop(a1);
        assert!(slots.try_take(b).is_some());
    }

    #[test]
    fn only_loopback_addresses_count_as_loopback() {
        assert!(is_loopback("127.0.0.1:8080"));
        assert!(is_loopback("[::1]:8080"));
        assert!(is_loopback("localhost:8080"));
        assert!(!is_loopback("0.0.0.0:8080"));
        assert!(!is_loopback("10.1.2.3:8080"));
    }
}
