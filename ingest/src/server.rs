//! The HTTP server under the router: hyper's HTTP/1 connections with the limits a public
//! edge needs. A client that takes too long to send its headers, or keeps a connection open
//! without using it, is cut (and counted); the number of open connections is capped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use futures::future::BoxFuture;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::Service;
use tributary_common::shutdown::Shutdown;

/// Connections closed because the client was too slow or idle, by `reason`
/// (`header_timeout`, `idle`).
pub const CONNECTIONS_CUT_TOTAL: &str = "tributary_ingest_connections_cut_total";
/// Connections open now.
pub const OPEN_CONNECTIONS: &str = "tributary_ingest_open_connections";

/// Largest request head (request line and headers) read. Above Confluence's largest
/// (a query token is a few KB) with room for a long token header; a client trickling a
/// head this large cannot hold more memory than this per connection.
const MAX_HEADER_BYTES: usize = 96 * 1024;

/// The server's limits (`ingest_header_read_timeout_ms`, `ingest_idle_timeout_seconds`,
/// `ingest_max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Routes a source answers itself, ahead of the router. Meant for a source's busiest route:
/// it then costs no router match, no request extensions (original URI, matched path, path
/// parameters) and none of the router's boxed services and futures per request.
pub trait DirectRoutes: Send + Sync + 'static {
    /// The answer to `request` when it is one of these routes; otherwise `request`, for the
    /// router. The request is handed back by value: boxing it would cost the allocation per
    /// request this path exists to save.
    #[allow(clippy::result_large_err)]
    fn route(
        &self,
        request: Request<Incoming>,
    ) -> Result<BoxFuture<'static, Response>, Request<Incoming>>;
}

/// What the server answers with: `direct` first, then `router`.
#[derive(Clone)]
pub struct Routes {
    pub router: Router,
    pub direct: Option<Arc<dyn DirectRoutes>>,
}

impl Routes {
    async fn answer(self, request: Request<Incoming>) -> Response {
        let request = match &self.direct {
            Some(direct) => match direct.route(request) {
                Ok(answer) => return answer.await,
                Err(request) => request,
            },
            None => request,
        };
        let mut router = self.router;
        match router.call(request.map(axum::body::Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Serves `routes` on `listener` until `stop` fires, then stops accepting, lets every open
/// connection finish the request it is on (idle ones close at once) and returns.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: ServerLimits,
    stop: Shutdown,
) -> io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A connection beyond the cap waits in the listen backlog until one closes.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // moment rather than spin, and go on.
                tracing::debug!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            routes.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    // Every connection holds a slot until it is done.
    let count = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _all = slots.acquire_many(count).await;
    Ok(())
}

/// Counts an open connection for as long as it lives.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        OpenConnection { _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

async fn serve_connection(
    stream: TcpStream,
    routes: Routes,
    limits: ServerLimits,
    stop: Shutdown,
    slot: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(slot);
    let answering = Arc::new(AtomicUsize::new(0));
    let io = TokioIo::new(IdleCut::new(stream, limits.idle_timeout, answering.clone()));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let routes = routes.clone();
        let answering = Answering::start(&answering);
        async move {
            let answer = routes.answer(request).await;
            drop(answering);
            Ok::<_, Infallible>(answer)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_header_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = served {
        if err.is_timeout() {
            metrics::counter!(CONNECTIONS_CUT_TOTAL, "reason" => "header_timeout").increment(1);
        }
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Marks a request of the connection as being answered until it is dropped.
struct Answering(Arc<AtomicUsize>);

impl Answering {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Answering(count.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that fails its next read once nothing was read or written for `timeout`
/// while no request of it is being answered: an idle keep-alive connection, or one that
/// never sends anything, is closed rather than held for as long as the client likes. hyper
/// keeps reading while a request is answered, and a slow answer (a broker round trip, an
/// install key fetched) is bounded by its own timeouts, so it must not count as idleness:
/// cutting it would lose the answer of a request that may have been published.
struct IdleCut {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    answering: Arc<AtomicUsize>,
}

impl IdleCut {
    fn new(inner: TcpStream, timeout: Duration, answering: Arc<AtomicUsize>) -> Self {
        IdleCut {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            answering,
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }
}

impl AsyncRead for IdleCut {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                while this.deadline.as_mut().poll(cx).is_ready() {
                    if this.answering.load(Ordering::Relaxed) == 0 {
                        metrics::counter!(CONNECTIONS_CUT_TOTAL, "reason" => "idle").increment(1);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection idle for too long",
                        )));
                    }
                    // Polled again at once, so the new deadline wakes this read.
                    this.touch();
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for IdleCut {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
