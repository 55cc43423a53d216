//! Connections to plain-HTTP upstreams, kept idle per serving thread.
//!
//! Why not hyper-util's pooled client, which HTTPS upstreams still use: on the gateway's hot
//! path its checkout cost more than the request's own dispatch — a pool behind a mutex, a
//! connect future built (and dropped) beside every checkout, the pool key's URI cloned, the
//! `Host` header formatted — about 5% of a serving thread's time on the gateway benchmark
//! (docs/benchmarks.md). Here an upstream's idle connections are a plain list on the thread
//! whose requests use them (see `listener`): a request takes one, or opens one, and gives it
//! back when its answer has been read to the end.
//!
//! A connection comes back only after a complete answer: an answer dropped half-read (a client
//! that went away from an SSE stream, a timeout) takes its connection with it, as HTTP/1 needs.
//! One that has sat idle for a minute, or that the upstream has closed, is closed: at checkout,
//! when another comes back, and by a sweep each serving thread runs every few seconds.

use axum::body::Body;
use axum::body::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// As long as hyper-util's pool keeps one (see `upstream::gateway_client`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each serving thread closes the connections idle past `IDLE_TIMEOUT`.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// Idle connections kept per upstream and thread; more are closed when they come back.
const MAX_IDLE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection given back may take to be ready for another request (hyper's
/// connection task may still be finishing the last one) before it is closed instead.
const READY_WAIT: Duration = Duration::from_secs(1);

/// A plain-HTTP upstream, as every request to it needs it: made once per route lookup.
pub struct Target {
    /// `host:port`, to key the idle connections by.
    address: Arc<str>,
    /// `http://host:port`, for the connector.
    connect: axum::http::Uri,
    /// The `Host` header: the host, and the port unless it is 80.
    pub host: axum::http::HeaderValue,
    /// The request target: path and query (origin-form, RFC 9112 §3.2.1).
    pub path: axum::http::Uri,
}

impl Target {
    /// `None` unless `uri` is `http://` with a host.
    pub fn of(uri: &axum::http::Uri) -> Option<Target> {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(80);
        let host_header = match uri.port_u16() {
            Some(p) if p != 80 => format!("{host}:{p}"),
            _ => host.to_string(),
        };
        // An IPv6 literal keeps its brackets in `host()`, as `connect` wants it.
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .ok()?;
        Some(Target {
            address: Arc::from(format!("{host}:{port}")),
            connect: format!("http://{host}:{port}").parse().ok()?,
            host: axum::http::HeaderValue::from_str(&host_header).ok()?,
            path,
        })
    }
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

thread_local! {
    /// Per upstream, oldest first: checkout takes the newest (its socket is the likeliest to
    /// be warm), and expiry trims from the front.
    static IDLE: RefCell<HashMap<Arc<str>, VecDeque<Idle>>> = RefCell::new(HashMap::new());
    /// hyper-util's connector, for new connections only: it resolves names off the thread,
    /// and tries each address of a name in turn (IPv6 and IPv4 raced, RFC 8305), sharing the
    /// connect timeout between them.
    static CONNECTOR: hyper_util::client::legacy::connect::HttpConnector = {
        let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(CONNECT_TIMEOUT));
        c
    };
}

/// Closes this thread's connections that have been idle past `IDLE_TIMEOUT` or that their
/// upstream closed; run every `SWEEP_INTERVAL` by each serving thread (`listener`).
pub fn sweep() {
    IDLE.with(|idle| {
        idle.borrow_mut().retain(|_, list| {
            list.retain(Idle::usable);
            !list.is_empty()
        });
    });
}

fn put_back(address: Arc<str>, sender: SendRequest<Body>) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(address).or_default();
        while list.front().is_some_and(|i| !i.usable()) {
            list.pop_front();
        }
        if list.len() < MAX_IDLE {
            list.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// A connection lent to one request; [`Lease::release`] gives it back.
pub struct Lease {
    address: Arc<str>,
    sender: SendRequest<Body>,
}

impl Lease {
    /// Back to this thread's idle list, once the answer has been read to its end. Usually
    /// the connection is ready for another request by then; when hyper's connection task has
    /// not caught up yet (or is still writing a request body the upstream answered early), it
    /// goes back when it is ready, or is closed after `READY_WAIT`.
    pub fn release(self) {
        let Lease {
            address,
            mut sender,
        } = self;
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            return put_back(address, sender);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                    put_back(address, sender);
                }
            });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The idle connection taken last (its socket is the likeliest to be warm), if any is usable.
fn take_idle(address: &str) -> Option<SendRequest<Body>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(address)?;
        while let Some(i) = list.pop_back() {
            if i.usable() {
                return Some(i.sender);
            }
        }
        None
    })
}

async fn connect(target: &Target) -> Result<SendRequest<Body>, SendError> {
    use tower::Service;
    let mut connector = CONNECTOR.with(Clone::clone);
    let stream = connector
        .call(target.connect.clone())
        .await
        .map_err(|e| SendError::Connect(e.into()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(stream).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `req` (origin-form target and `Host` already set) on an idle connection to `target`,
/// or on a new one. A request an idle connection could not take — the upstream closed it
/// meanwhile — goes to the next one; one that was written is never sent twice. (As with
/// hyper-util's client, an upstream that closes an idle connection just as a request is
/// written to it fails that request: it may have been received, and MCP requests are not
/// idempotent.)
pub async fn send(
    target: &Target,
    mut req: hyper::Request<Body>,
) -> Result<(hyper::Response<Incoming>, Lease), SendError> {
    while let Some(mut sender) = take_idle(&target.address) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, lease(target, sender))),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    let mut sender = connect(target).await?;
    let resp = sender.send_request(req).await?;
    Ok((resp, lease(target, sender)))
}

fn lease(target: &Target, sender: SendRequest<Body>) -> Lease {
    Lease {
        address: target.address.clone(),
        sender,
    }
}

/// An answer streamed to the client: its connection goes back when the last frame has been
/// read, and closes with it if the answer is dropped before.
pub struct LeasedBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl LeasedBody {
    pub fn new(body: Incoming, lease: Lease) -> LeasedBody {
        LeasedBody {
            body,
            lease: Some(lease),
        }
    }
}

impl LeasedBody {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Drop for LeasedBody {
    /// An answer that had ended before its first frame (no body at all) is dropped by hyper's
    /// server without being polled; its connection is as reusable as any.
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.body) {
            self.release();
        }
    }
}

impl http_body::Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            // The end, or the last frame of an answer of known length: hyper's server stops
            // polling a body once it says it has ended, so waiting for `None` would close
            // every such connection instead of reusing it.
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 upstream that answers every request with `ok` (or `answer`) and counts
    /// connections; with `close_after_each`, it closes each connection after its first answer,
    /// without saying so.
    async fn upstream(close_after_each: bool) -> (String, Arc<AtomicUsize>) {
        upstream_answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            close_after_each,
        )
        .await
    }

    async fn upstream_answering(
        answer: &'static [u8],
        close_after_each: bool,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // Requests here have no body: one per blank line.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                            if close_after_each {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    fn request(target: &Target) -> hyper::Request<Body> {
        let mut req = hyper::Request::new(Body::empty());
        *req.uri_mut() = target.path.clone();
        req.headers_mut()
            .insert(axum::http::header::HOST, target.host.clone());
        req
    }

    async fn get(target: &Target) -> Result<String, SendError> {
        let (resp, lease) = send(target, request(target)).await?;
        let body = LeasedBody::new(resp.into_body(), lease);
        let bytes = body.collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn targets_are_origin_form_with_the_host_as_sent() {
        let t = Target::of(&"http://example.com/mcp?x=1".parse().unwrap()).unwrap();
        assert_eq!(
            (&*t.address, t.host.to_str().unwrap()),
            ("example.com:80", "example.com")
        );
        assert_eq!(t.path, "/mcp?x=1");
        let t = Target::of(&"http://[::1]:8080".parse().unwrap()).unwrap();
        assert_eq!(
            (&*t.address, t.host.to_str().unwrap()),
            ("[::1]:8080", "[::1]:8080")
        );
        assert_eq!(t.path, "/");
        assert!(Target::of(&"https://example.com/mcp".parse().unwrap()).is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (address, accepted) = upstream(false).await;
        let target = Target::of(&format!("http://{address}/mcp").parse().unwrap()).unwrap();
        for _ in 0..5 {
            assert_eq!(get(&target).await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_of_known_length_gives_its_connection_back_at_its_last_frame() {
        let (address, accepted) = upstream(false).await;
        let target = Target::of(&format!("http://{address}/mcp").parse().unwrap()).unwrap();
        let (resp, lease) = send(&target, request(&target)).await.unwrap();
        let mut body = LeasedBody::new(resp.into_body(), lease);
        // Read as hyper's server does: frames until the body says it has ended, never `None`.
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ok");
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(get(&target).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_empty_answer_dropped_unpolled_gives_its_connection_back() {
        let (address, accepted) =
            upstream_answering(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n", false).await;
        let target = Target::of(&format!("http://{address}/mcp").parse().unwrap()).unwrap();
        for _ in 0..3 {
            let (resp, lease) = send(&target, request(&target)).await.unwrap();
            // As hyper's server does with a body that has ended before its first frame.
            drop(LeasedBody::new(resp.into_body(), lease));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_half_read_answer_closes_its_connection() {
        // Says ten bytes, sends five, and waits.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                    .await;
                open.push(stream);
            }
        });
        let target = Target::of(&format!("http://{address}/").parse().unwrap()).unwrap();
        for _ in 0..2 {
            let (resp, lease) = send(&target, request(&target)).await.unwrap();
            let mut body = LeasedBody::new(resp.into_body(), lease);
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "hello");
            drop(body);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the second request had its own"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_are_swept() {
        let (address, _) = upstream(false).await;
        let target = Target::of(&format!("http://{address}/mcp").parse().unwrap()).unwrap();
        assert_eq!(get(&target).await.unwrap(), "ok");
        let idle = || IDLE.with(|i| i.borrow().get(&*target.address).map_or(0, VecDeque::len));
        assert_eq!(idle(), 1);
        IDLE.with(|i| {
            for c in i.borrow_mut().values_mut().flatten() {
                c.since -= IDLE_TIMEOUT;
            }
        });
        sweep();
        assert_eq!(idle(), 0);
        assert!(IDLE.with(|i| i.borrow().is_empty()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_the_upstream_closed_are_not_used() {
        let (address, accepted) = upstream(true).await;
        let target = Target::of(&format!("http://{address}/mcp").parse().unwrap()).unwrap();
        for _ in 0..5 {
            assert_eq!(get(&target).await.unwrap(), "ok");
            // Let the connection's task see the close, as a serving thread between requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dead_upstream_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::of(&format!("http://{address}/").parse().unwrap()).unwrap();
        assert!(matches!(get(&target).await, Err(SendError::Connect(_))));
    }
}
