//! Accepting connections, with the limits a public listener needs: a cap on
//! open connections (in all and per source address), a deadline for the
//! request head, an idle timeout on every connection, and a graceful stop.
//!
//! `axum::serve` sets none of these: a client that connects and sends
//! nothing, or half a header, held a file descriptor forever (issue 8).
//!
//! * **Head deadline** (`header_read_timeout`): hyper's own timer, running
//!   from the moment hyper waits for a request head (a new connection, or a
//!   kept-alive one after its last response) until the head is complete. It
//!   is therefore also the keep-alive idle timeout between requests.
//! * **Idle timeout** (`idle_timeout`): no byte read or written for that long
//!   closes the connection, whatever it is doing: a stalled body, a client
//!   that stopped reading its response. A body that stalls is answered 408
//!   sooner, by the `Json` extractor (`body_read_timeout`).
//! * **Caps**: past `max_connections` in all or `max_connections_per_ip`
//!   from one address, a new connection is closed at once (counted in
//!   `keyward_http_connections_refused_total`), so one client cannot take
//!   every file descriptor and `/healthz` keeps answering others.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::HttpConfig;

/// Open connections, in all and by source address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A slot held for as long as its connection lives.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total -= 1;
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
        metrics::gauge!("keyward_http_connections").set(c.total as f64);
    }
}

fn take_slot(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &HttpConfig) -> Result<Slot, &'static str> {
    let mut c = counts.lock();
    if c.total >= limits.max_connections {
        return Err("total");
    }
    let n = c.by_ip.entry(ip).or_insert(0);
    if *n >= limits.max_connections_per_ip {
        return Err("per_ip");
    }
    *n += 1;
    c.total += 1;
    metrics::gauge!("keyward_http_connections").set(c.total as f64);
    Ok(Slot { counts: counts.clone(), ip })
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests
/// in flight finish for at most `shutdown_grace_ms`.
pub async fn serve(
    listener: TcpListener,
    api: crate::Api,
    limits: &HttpConfig,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let api = Arc::new(api);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    let mut last_refusal_log = Instant::now() - Duration::from_secs(2);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // accept: wait a little rather than spin.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match take_slot(&counts, peer.ip().to_canonical(), limits) {
            Ok(s) => s,
            Err(reason) => {
                metrics::counter!("keyward_http_connections_refused_total", "reason" => reason).increment(1);
                if last_refusal_log.elapsed() >= Duration::from_secs(1) {
                    last_refusal_log = Instant::now();
                    tracing::warn!(reason, peer_ip = %peer.ip(), "Connection refused: too many open connections.");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = IdleIo::new(stream, idle);
        let conn = Conn { api: api.clone(), peer, builder: builder.clone(), watcher: graceful.watcher() };
        match &tls {
            None => {
                tokio::spawn(conn.run(io, None, slot));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let hsts = tls.hsts().cloned();
                let handshake = Duration::from_millis(limits.header_read_timeout_ms);
                tokio::spawn(async move {
                    // The handshake shares the head's deadline: a client that
                    // opens a connection and sends nothing holds nothing for long.
                    match tokio::time::timeout(handshake, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let verified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                            conn.run(stream, Some((crate::tls::ClientCert(verified), hsts)), slot).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, peer_ip = %peer.ip(), "TLS handshake failed."),
                        Err(_) => tracing::debug!(peer_ip = %peer.ip(), "TLS handshake timed out."),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = limits.shutdown_grace_ms, "Requests still running at shutdown were cut off.");
        }
    }
    Ok(())
}

/// One accepted connection, served by hyper once its TLS handshake (if any) is done.
struct Conn {
    api: Arc<crate::Api>,
    peer: std::net::SocketAddr,
    builder: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Conn {
    /// Serves requests on `io`; `tls` carries the client-certificate state
    /// every request is marked with, and the HSTS header every answer gets.
    async fn run<I>(self, io: I, tls: Option<(crate::tls::ClientCert, Option<axum::http::HeaderValue>)>, slot: Slot)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _slot = slot;
        let Conn { api, peer, builder, watcher } = self;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let api = api.clone();
            let tls = tls.clone();
            async move {
                if let Some((cert, _)) = &tls {
                    req.extensions_mut().insert(*cert);
                }
                let mut res = if crate::fast::takes(&req) {
                    crate::fast::verify(&api.fast, req, peer).await
                } else {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    match api.router.clone().oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    }
                };
                if let Some((_, Some(hsts))) = &tls {
                    res.headers_mut().insert(axum::http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
                }
                Ok::<_, std::convert::Infallible>(res)
            }
        });
        if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await {
            tracing::debug!(error = %e, "Connection ended with an error.");
        }
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way
/// for `timeout`. The timer is reset lazily: activity only records when it
/// happened, and the sleep is re-armed when it fires early.
pub struct IdleIo<T> {
    inner: T,
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        let now = Instant::now();
        IdleIo { inner, timeout, last: now, sleep: Box::pin(tokio::time::sleep_until(now + timeout)) }
    }

    /// Called when the inner stream is pending: errors once idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let deadline = self.last + self.timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle too long"));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
