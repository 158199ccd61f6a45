//! The HTTP server with its request-head guard, over real loopback sockets: request targets
//! that Go's server accepts and actix-http alone rejects reach the handlers decoded as sent,
//! oversized targets and heads get our JSON 414 and 431, keep-alive, pipelining, bodies and
//! `Expect: 100-continue` still work, no connection is left hanging, and actix logs no ERROR.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::{App, HttpResponse, web};
use cost_model::api::head::OVERSIZED_PATH;
use cost_model::api::server::{bind, serve};
use tracing_subscriber::layer::SubscriberExt as _;

/// How long any read on a client socket may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// ERROR events logged by anything in the process since the last test started.
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One test at a time, so that each owns the ERROR log while it runs.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A tracing layer that records ERROR events.
struct ErrorCapture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut text = event.metadata().target().to_string();
            event.record(&mut Fields(&mut text));
            lock(&ERRORS).push(text);
        }
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

/// A running server on a loopback port, stopped gracefully on `stop`.
struct TestServer {
    addr: SocketAddr,
    handle: actix_server::ServerHandle,
    thread: JoinHandle<std::io::Result<()>>,
    _serial: MutexGuard<'static, ()>,
}

async fn echo(q: web::Query<HashMap<String, String>>) -> HttpResponse {
    HttpResponse::Ok().body(q.get("filter").cloned().unwrap_or_default())
}

async fn echo_body(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

async fn oversized(q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let bytes = q.get("bytes").map_or("?", String::as_str);
    let (code, message) = match q.get("what").map(String::as_str) {
        Some("uri") => (414, format!("request target too long ({bytes} bytes)")),
        _ => (431, format!("request head too large ({bytes} bytes)")),
    };
    let status = actix_web::http::StatusCode::from_u16(code).expect("414 and 431 are valid");
    HttpResponse::build(status).json(serde_json::json!({"code": code, "message": message}))
}

impl TestServer {
    fn start() -> TestServer {
        let serial = lock(&SERIAL);
        static SUBSCRIBER: Once = Once::new();
        SUBSCRIBER.call_once(|| {
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(ErrorCapture),
            )
            .expect("no other global subscriber in this test binary");
        });
        lock(&ERRORS).clear();

        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let server = serve(listener, 2, || {
                    App::new()
                        .route("/echo", web::get().to(echo))
                        .route("/echo", web::post().to(echo_body))
                        .route(OVERSIZED_PATH, web::get().to(oversized))
                })?;
                tx.send(server.handle())
                    .expect("the test waits for the handle");
                server.await
            })
        });
        let handle = rx
            .recv_timeout(READ_TIMEOUT)
            .expect("server started in time");
        // The listener is bound before this returns: connections queue in its backlog until
        // the workers accept them, so no wait is needed.
        TestServer {
            addr,
            handle,
            thread,
            _serial: serial,
        }
    }

    fn connect(&self) -> BufReader<TcpStream> {
        let stream = TcpStream::connect(self.addr).expect("connect to the test server");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set write timeout");
        BufReader::new(stream)
    }

    /// Stops the server gracefully and returns the ERROR events logged while it ran.
    fn stop(self) -> Vec<String> {
        futures::executor::block_on(self.handle.stop(true));
        self.thread
            .join()
            .expect("server thread did not panic")
            .expect("server ran without error");
        std::mem::take(&mut *lock(&ERRORS))
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads one response (status line, headers, `Content-Length` body).
fn read_response(conn: &mut BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    conn.read_line(&mut line).expect("status line in time");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).expect("header line in time");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').expect("header line with a colon");
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().expect("numeric content-length"));
    resp.body = vec![0; len];
    conn.read_exact(&mut resp.body).expect("body in time");
    resp
}

/// Checks that the server closed the connection (end of file, not a timeout).
fn assert_closed(conn: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .expect("the server closes the connection in time");
    assert!(
        rest.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn send(conn: &mut BufReader<TcpStream>, bytes: &[u8]) {
    conn.get_mut().write_all(bytes).expect("write request");
}

#[test]
fn raw_characters_go_accepts_reach_the_handler_decoded_as_sent() {
    let server = TestServer::start();
    let values: &[&[u8]] = &[
        b"namespace:\"kube-system\"",
        b"<a>",
        b"{b}",
        b"c|d",
        b"e^f",
        b"g`h",
        b"i\\j",
        b"x#y",
        "caf\u{e9}".as_bytes(),
        b"all:\"<>{}|^`\\#",
    ];
    for value in values {
        let mut conn = server.connect();
        let mut req = b"GET /echo?window=1d&filter=".to_vec();
        req.extend_from_slice(value);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        send(&mut conn, &req);
        let resp = read_response(&mut conn);
        assert_eq!(
            resp.status,
            200,
            "{:?}: {}",
            String::from_utf8_lossy(value),
            resp.text()
        );
        assert_eq!(resp.body, *value);
        assert_closed(&mut conn);
    }

    // Already encoded: decoded once, as before.
    let mut conn = server.connect();
    send(
        &mut conn,
        b"GET /echo?filter=namespace:%22kube-system%22 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let resp = read_response(&mut conn);
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "namespace:\"kube-system\"")
    );
    assert_closed(&mut conn);

    // A raw quote in the path reaches routing: 404, not actix's 400.
    let mut conn = server.connect();
    send(
        &mut conn,
        b"GET /nope\"x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(read_response(&mut conn).status, 404);
    assert_closed(&mut conn);

    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

#[test]
fn a_70000_byte_target_gets_a_json_414() {
    let server = TestServer::start();
    let mut conn = server.connect();
    let prefix = "/echo?filter=";
    let target = format!("{prefix}{}", "a".repeat(70_000 - prefix.len()));
    assert_eq!(target.len(), 70_000);
    send(
        &mut conn,
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    let resp = read_response(&mut conn);
    assert_eq!(resp.status, 414, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["code"], 414);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("70000 bytes")),
        "{body}"
    );
    assert_closed(&mut conn);
    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

#[test]
fn a_100_kb_header_gets_a_json_431() {
    let server = TestServer::start();
    let mut conn = server.connect();
    let big = "b".repeat(100 * 1024);
    send(
        &mut conn,
        format!("GET /echo?filter=x HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    let resp = read_response(&mut conn);
    assert_eq!(resp.status, 431, "{}", resp.text());
    assert_eq!(resp.json()["code"], 431);
    assert_closed(&mut conn);
    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

#[test]
fn two_pipelined_gets_on_one_keep_alive_connection_both_answered() {
    let server = TestServer::start();
    let mut conn = server.connect();
    send(
        &mut conn,
        b"GET /echo?filter=\"one\" HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /echo?filter=<two> HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let first = read_response(&mut conn);
    assert_eq!((first.status, first.text().as_str()), (200, "\"one\""));
    let second = read_response(&mut conn);
    assert_eq!((second.status, second.text().as_str()), (200, "<two>"));
    assert_closed(&mut conn);

    // The same, one request at a time on a kept-alive connection.
    let mut conn = server.connect();
    send(
        &mut conn,
        b"GET /echo?filter={1} HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(read_response(&mut conn).text(), "{1}");
    send(
        &mut conn,
        b"GET /echo?filter=|2| HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(read_response(&mut conn).text(), "|2|");
    assert_closed(&mut conn);
    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

#[test]
fn a_post_with_a_body_then_a_get_on_one_connection_both_answered() {
    let server = TestServer::start();
    let mut conn = server.connect();
    // Body and the next request in one write, so they can arrive in one read.
    send(
        &mut conn,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\na\"b<c\
          GET /echo?filter=\"x\" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let post = read_response(&mut conn);
    assert_eq!((post.status, post.body.as_slice()), (200, &b"a\"b<c"[..]));
    let get = read_response(&mut conn);
    assert_eq!((get.status, get.text().as_str()), (200, "\"x\""));
    assert_closed(&mut conn);
    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

#[test]
fn expect_100_continue_still_works() {
    let server = TestServer::start();
    let mut conn = server.connect();
    send(
        &mut conn,
        b"POST /echo?filter=\"x\" HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
          Content-Length: 5\r\nConnection: close\r\n\r\n",
    );
    let cont = read_response(&mut conn);
    assert_eq!(cont.status, 100);
    send(&mut conn, b"hello");
    let resp = read_response(&mut conn);
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    assert_closed(&mut conn);
    drop(conn);
    assert_eq!(server.stop(), Vec::<String>::new());
}

/// The control for the ERROR checks above: a request target Go rejects too (a control byte)
/// still gets actix's own 400, and that ERROR line is seen by the capture.
#[test]
fn a_control_byte_is_still_actix_400_and_its_error_is_captured() {
    let server = TestServer::start();
    let mut conn = server.connect();
    send(
        &mut conn,
        b"GET /echo?filter=a\x01b HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let resp = read_response(&mut conn);
    assert_eq!(resp.status, 400);
    assert!(resp.body.is_empty());
    assert_closed(&mut conn);
    drop(conn);
    let errors = server.stop();
    assert!(
        errors.iter().any(|e| e.contains("stream error")),
        "the ERROR capture saw nothing: {errors:?}"
    );
}
