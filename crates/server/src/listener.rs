//! Serving connections on per-core threads. One task accepts; each accepted connection is
//! handed, round-robin, to one of N threads, each running its own single-threaded runtime, and
//! stays there. A connection's requests, its upstream calls (through that thread's own upstream
//! client, see `upstream::client`) and their wake-ups then all happen on one thread.
//!
//! Why not tokio's work-stealing runtime, as `axum::serve` uses: a proxied request wakes
//! several tasks (the connection, the upstream connection, the handler), and on a work-stealing
//! runtime those wake-ups cross threads — a futex wake and an inter-processor interrupt each.
//! On the gateway benchmark that cost more than the gateway's own work; see
//! docs/benchmarks.md for the figures.
//!
//! Connections are long-lived (keep-alive, SSE), so the hand-over costs once per connection.
//! Shutdown is graceful: stop accepting, let every connection finish what it is answering,
//! then end the threads.

use axum::response::Response;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::TokioTimer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

type Accepted = (std::net::TcpStream, SocketAddr);

/// What the serving threads run: each request with the address of the peer that sent it.
pub type App = std::sync::Arc<
    dyn Fn(hyper::Request<Incoming>, SocketAddr) -> BoxFuture<'static, Response> + Send + Sync,
>;

/// How many serving threads to run when not configured: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The serving threads, started and waiting for connections.
pub struct Threads {
    workers: Vec<mpsc::UnboundedSender<Accepted>>,
    ended: Vec<oneshot::Receiver<()>>,
}

impl Threads {
    /// Starts `count` threads serving `app`; a connection that takes longer than
    /// `header_read_timeout` to send a request's headers (or sits idle that long between
    /// requests) is closed. Fails, before anything is accepted, when a thread or its runtime
    /// cannot be started.
    pub fn start(
        app: App,
        count: usize,
        header_read_timeout: Duration,
    ) -> std::io::Result<Threads> {
        let mut workers = Vec::new();
        let mut ended = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
            let (done, end) = oneshot::channel::<()>();
            let app = app.clone();
            std::thread::Builder::new()
                .name(format!("ezforge-http-{i}"))
                .spawn(move || {
                    runtime.block_on(worker(rx, app, header_read_timeout));
                    let _ = done.send(());
                })?;
            workers.push(tx);
            ended.push(end);
        }
        Ok(Threads { workers, ended })
    }

    /// Accepts on `listener` until `shutdown` completes; then waits for the connections to
    /// finish and the threads to end.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Threads { workers, ended } = self;
        tokio::pin!(shutdown);
        let mut next = 0usize;
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Small JSON-RPC answers must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    let stream = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot hand a connection over");
                            continue;
                        }
                    };
                    next = next.wrapping_add(1);
                    // A thread ends only at shutdown (or if its runtime panics): then the
                    // connection is closed.
                    if workers[next % workers.len()].send((stream, peer)).is_err() {
                        tracing::error!("a serving thread has ended; connection closed");
                    }
                }
                // Per-connection failures (the peer reset before accept) are the peer's problem.
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors, say: wait a little rather than spin.
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        drop(listener);
        drop(workers);
        for end in ended {
            let _ = end.await;
        }
        Ok(())
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// HTTP/2's connection preface. hyper-util reads up to this much to tell HTTP/2 from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection's first bytes arrive, and say which protocol it speaks, within
/// `limit`. Until they do, no hyper timer runs, so a client that sends nothing, or only part
/// of the HTTP/2 preface, would otherwise hold its connection for ever.
async fn protocol_chosen(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    let first_bytes = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == buf.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // The start of the preface, and no more yet. `peek` would answer at once with
                // the same bytes, so wait a little before looking again.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(limit, first_bytes)
        .await
        .unwrap_or(false)
}

/// One serving thread: serves the connections it is handed until the acceptor stops, then
/// lets them finish.
async fn worker(
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    app: App,
    header_read_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper times header reads only when it has a timer. HTTP/2 connections get pings, so
    // that a peer that went away does not hold its connection.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_read_timeout);
    // This thread's idle upstream connections are closed once unused for a minute.
    tokio::spawn(async {
        let mut every = tokio::time::interval(crate::upstream_conns::SWEEP_INTERVAL);
        loop {
            every.tick().await;
            crate::upstream_conns::sweep();
        }
    });
    while let Some((stream, peer)) = connections.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a connection over");
                continue;
            }
        };
        let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            if !protocol_chosen(&stream, header_read_timeout).await {
                return;
            }
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let answer = app(req, peer);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
