//! A fault-injecting TCP proxy on loopback, in front of a Prometheus (or any HTTP/1.1 server).
//!
//! Bytes are forwarded as they are, both ways, so keep-alive connections, chunked responses and
//! anything else HTTP/1.1 does pass untouched. The only parsing is of requests, client to
//! server, to find where each one ends (its head, then a `Content-Length` body): that is where
//! the [`Mode`] in force is applied, per request, so a mode change also reaches connections a
//! client keeps in its pool. A request with a chunked body turns its connection into a plain
//! pipe (no more per-request faults on it); Prometheus clients do not send those.
//!
//! The proxy runs on a thread of its own with its own tokio runtime, so it can be started from
//! synchronous and asynchronous tests alike; dropping it stops it and closes every connection.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The body of an [`Mode::Error500`] answer: Prometheus's error envelope.
pub const ERROR_BODY: &str = r#"{"status":"error","errorType":"internal","error":"injected"}"#;
/// The largest request head or `Content-Length` body the proxy buffers to find a request's end.
const MAX_REQUEST: usize = 16 << 20;

/// What the proxy does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward it.
    Pass,
    /// New connections are accepted and closed at once; a request on an open connection
    /// closes that connection without an answer.
    Down,
    /// Forward it after this delay, so its response comes at least this much later.
    Slow(Duration),
    /// Answer HTTP 500 with [`ERROR_BODY`] and close the connection.
    Error500,
}

struct Shared {
    mode: Mutex<Mode>,
    requests: AtomicU64,
    upstream: SocketAddr,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode lock")
    }
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use instead of the upstream's URL.
    pub url: String,
    /// The upstream's URL as given.
    pub upstream_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in [`Mode::Pass`] on a free loopback port in front of `upstream_url`
    /// (`http://HOST:PORT`, any path ignored).
    pub fn start(upstream_url: impl AsRef<str>) -> FaultProxy {
        let upstream_url = upstream_url.as_ref();
        let authority = upstream_url.strip_prefix("http://").unwrap_or_else(|| {
            panic!("FaultProxy upstream {upstream_url:?} is not http://HOST:PORT")
        });
        let authority = authority.split('/').next().unwrap_or(authority);
        let upstream: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("FaultProxy upstream {upstream_url:?}: no address"));
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            requests: AtomicU64::new(0),
            upstream,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, s) => {}
                    }
                });
                // Dropping the runtime here cancels every connection task: their sockets close.
            })
            .expect("proxy thread");
        FaultProxy {
            url: format!("http://127.0.0.1:{port}"),
            upstream_url: upstream_url.to_string(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Applies `mode` from the next request (or connection) on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Requests seen so far: every request head read, in any mode, plus every connection
    /// closed at once in [`Mode::Down`].
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.mode() == Mode::Down {
            // Closed at once, before any byte: the client's request fails on a closed connection.
            shared.requests.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, shared.clone()));
    }
}

/// One client connection: requests forwarded (or faulted) one by one, responses piped back.
async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return; // the upstream is gone: the client sees its connection close
    };
    let _ = server.set_nodelay(true);
    let (mut client_rx, client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // The response pipe and an Error500 answer both write to the client.
    let client_tx = Arc::new(tokio::sync::Mutex::new(client_tx));
    let back_tx = client_tx.clone();
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if back_tx.lock().await.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = back_tx.lock().await.shutdown().await;
    });
    let faulted = forward_requests(&mut client_rx, &mut server_tx, &client_tx, &shared).await;
    if faulted {
        // Both halves of both sockets drop here: the connection is closed, responses or not.
        back.abort();
    } else {
        // The client sent all it will: let the last response flow back.
        let _ = server_tx.shutdown().await;
        let _ = back.await;
    }
}

/// Where the first request in `buf` ends, once all of it is there.
enum RequestEnd {
    /// Head and `Content-Length` body are complete: this many bytes.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// A chunked body: the head ends here, the body's end is not worth finding.
    Chunked(usize),
}

fn request_end(buf: &[u8]) -> RequestEnd {
    let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RequestEnd::Partial;
    };
    let head_len = head + 4;
    let mut body = 0usize;
    for line in String::from_utf8_lossy(&buf[..head]).split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return RequestEnd::Chunked(head_len);
        }
    }
    if buf.len() >= head_len + body {
        RequestEnd::Complete(head_len + body)
    } else {
        RequestEnd::Partial
    }
}

/// Forwards the client's requests to the server, each once it is complete, with the mode
/// applied to it. Returns true if a fault closed the connection, false when the client is done.
async fn forward_requests(
    client_rx: &mut OwnedReadHalf,
    server_tx: &mut OwnedWriteHalf,
    client_tx: &tokio::sync::Mutex<OwnedWriteHalf>,
    shared: &Shared,
) -> bool {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Once a request's end cannot be found (a chunked body, an oversized request), the rest of
    // the connection is piped as it is.
    let mut pipe = false;
    loop {
        while !pipe && !buf.is_empty() {
            let len = match request_end(&buf) {
                RequestEnd::Partial if buf.len() > MAX_REQUEST => {
                    pipe = true;
                    break;
                }
                RequestEnd::Partial => break,
                RequestEnd::Complete(len) => len,
                RequestEnd::Chunked(len) => {
                    pipe = true;
                    len
                }
            };
            shared.requests.fetch_add(1, Ordering::SeqCst);
            match shared.mode() {
                Mode::Pass => {}
                Mode::Slow(d) => tokio::time::sleep(d).await,
                Mode::Down => return true,
                Mode::Error500 => {
                    let answer = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ERROR_BODY}",
                        ERROR_BODY.len()
                    );
                    let mut tx = client_tx.lock().await;
                    let _ = tx.write_all(answer.as_bytes()).await;
                    let _ = tx.shutdown().await;
                    return true;
                }
            }
            if server_tx.write_all(&buf[..len]).await.is_err() {
                return true;
            }
            buf.drain(..len);
        }
        if pipe && !buf.is_empty() {
            if server_tx.write_all(&buf).await.is_err() {
                return true;
            }
            buf.clear();
        }
        match client_rx.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
