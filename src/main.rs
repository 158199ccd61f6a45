//! The `cost-model` binary: parse config, init logging, run the replica until a signal, and exit
//! with a code that says what happened: 0 after a clean shutdown, 64 (EX_USAGE) for bad
//! configuration, 70 (EX_SOFTWARE) when a critical actor died, 1 for anything else.

use std::process::ExitCode;

use cost_model::app::RunError;
use cost_model::config::{Config, LogFormat};

/// sysexits' EX_USAGE: bad configuration.
const EXIT_CONFIG: u8 = 64;
/// sysexits' EX_SOFTWARE: an internal failure (a critical actor died).
const EXIT_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    // Both rustls providers are compiled in (kube: ring, object_store: aws-lc-rs), so rustls
    // cannot choose; the Kubernetes client needs a process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place the process environment is read: Config::load's lookup"
    )]
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match Config::load(std::env::args_os(), &env) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("cost-model: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("cost-model: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    cost_model::init_tracing(cfg.log_format == LogFormat::Json);
    cost_model::supervise::install_panic_hook();
    let system = actix::System::new();
    let outcome = system.block_on(cost_model::app::run(cfg));
    // One line, as for bad flags: what failed and why.
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RunError::Config(_)) => {
            eprintln!("cost-model: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e @ RunError::Failed(_)) => {
            eprintln!("cost-model: {e}");
            ExitCode::from(EXIT_SOFTWARE)
        }
        Err(e @ RunError::Other(_)) => {
            eprintln!("cost-model: {e}");
            ExitCode::FAILURE
        }
    }
}
