//! The HTTP server: what `actix_web::HttpServer::new(f).workers(n).shutdown_timeout(5)
//! .disable_signals().listen(l)?.run()` builds, assembled here from actix-server and
//! actix-http so that every accepted connection passes through [`HeadGuard`] before
//! actix-http's HTTP/1 parser sees it. This module owns the listening socket's options, the
//! HTTP/1 service settings (keep-alive, request and disconnect timeouts, no half-close, graceful
//! shutdown) and the `AppConfig` the app sees; it serves plaintext HTTP/1.x only (no TLS, no
//! HTTP/2), as the replica always has.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_server::{Server, ServerBuilder};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use tokio::net::TcpStream;

use super::head::HeadGuard;

/// Pending connections the listening socket queues (actix-web's `HttpServer` default).
pub const BACKLOG: u32 = 1024;

/// Seconds workers get to finish requests after a graceful stop.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Time a client has to send a complete request head on a new connection (actix-web's
/// default).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a client has to close its side once the server shuts a connection down (actix-web's
/// default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most workers actix-server runs (it panics above this).
const MAX_WORKERS: usize = 512;

/// Binds a listening socket as actix-web's `HttpServer::bind` does: `SO_REUSEADDR` (not on
/// Windows), then listen with a backlog of [`BACKLOG`]. The listener is left blocking, as
/// actix-web leaves it; [`serve`] makes it non-blocking.
///
/// The socket is made through tokio (whose `TcpSocket` is socket2 underneath, as actix-web's
/// is), in a short-lived thread with a one-off runtime, because tokio only hands out a
/// listening socket from inside a runtime; any context may call this.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listen = move || -> io::Result<TcpListener> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let _entered = runtime.enter();
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?.into_std()?;
        listener.set_nonblocking(false)?;
        Ok(listener)
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cost-model-bind".into())
            .spawn_scoped(scope, listen)?
            .join()
            .map_err(|_| io::Error::other("binding the listener panicked"))?
    })
}

/// Builds the HTTP server on `listener` with `workers` worker threads, each running an app
/// made by `app_factory`, every connection wrapped in [`HeadGuard`].
///
/// It is what `HttpServer::new(app_factory).workers(workers).shutdown_timeout(5)
/// .disable_signals().listen(listener)?.run()` builds (same keep-alive, request and
/// disconnect timeouts, graceful-shutdown signal, `AppConfig` with the listener's
/// address as host and `secure` false, service name), over HTTP/1.x only, with `TCP_NODELAY`
/// set on accepted connections and half-closed connections treated as gone (so a disconnect
/// cancels its query). Run the returned [`Server`] inside an actix `System` and stop
/// it with `server.handle().stop(true)`.
///
/// # Errors
///
/// `workers` outside 1–512 (where actix-server would panic), or the listener's address or
/// non-blocking mode cannot be had.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    app_factory: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("HTTP worker count must be 1 to {MAX_WORKERS}, not {workers}"),
        ));
    }
    let addr = listener.local_addr()?;
    let builder = ServerBuilder::default()
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .listen(format!("actix-web-service-{addr}"), listener, move || {
            let host = addr.to_string();
            let shutdown = shutdown.clone();
            let app = app_factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let http1 = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // A client that closes its side has gone away: drop its request, so the query
                // it started is cancelled rather than computed for nobody. (actix-web allows
                // half-closed connections by default; no client of this API half-closes and
                // then waits for an answer.)
                .h1_allow_half_closed(false)
                .local_addr(addr)
                .tcp_nodelay(true)
                .h1(map_config(app, move |_| {
                    // `AppConfig::new` is crate-private; this is the same constructor, kept
                    // public for actix-test.
                    AppConfig::__priv_test_new(false, host.clone(), addr)
                }));
            fn_service(|stream: TcpStream| async move {
                // Best effort, as actix-http does it: a socket that refuses is still served.
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().ok();
                Ok::<_, DispatchError>((HeadGuard::new(stream), peer))
            })
            .and_then(http1)
        })?
        .run();
    Ok(server)
}
