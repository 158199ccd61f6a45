//! cost-model: a highly available replica of the Kubecost cost-model container.
//!
//! Actors (`election`, `storage`, `etl`, the query executor in `api`) exchange messages; `model`
//! is pure data, `query` pure computation over it; `supervise` turns a dead actor into a
//! non-zero exit. The README describes the whole.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::panic,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]

pub mod api;
pub mod app;
pub mod config;
pub mod election;
pub mod etl;
pub mod metrics;
pub mod model;
pub mod query;
pub mod redact;
pub mod role;
pub mod storage;
pub mod supervise;

/// Initialises logging: `RUST_LOG` filters (default `info`), text or JSON lines. By default the
/// Kubernetes client's own per-request error lines are off: the election logs each failure
/// itself, once per change of state, instead of an ERROR every retry period.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    const QUIET_KUBE: &str = "kube_client::client::builder=off";
    #[expect(
        clippy::disallowed_methods,
        reason = "RUST_LOG is tracing's own setting, read once here as EnvFilter would"
    )]
    let rust_log = std::env::var("RUST_LOG");
    let filter = match rust_log {
        // A filter that says nothing of kube's client gets its per-request errors off too.
        Ok(f) if !f.contains("kube_client") => EnvFilter::try_new(format!("{f},{QUIET_KUBE}")),
        Ok(f) => EnvFilter::try_new(f),
        Err(_) => EnvFilter::try_new(format!("info,actix_server=warn,{QUIET_KUBE}")),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
