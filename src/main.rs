//! The `cost-model` binary: parse config, init logging, run the replica until a signal.

use std::process::ExitCode;

use cost_model::config::{Config, LogFormat};

/// sysexits' EX_USAGE: bad configuration.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Both rustls providers are compiled in (kube: ring, object_store: aws-lc-rs), so rustls
    // cannot choose; the Kubernetes client needs a process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = match Config::load(std::env::args_os(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .to_string();
            eprintln!("cost-model: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("cost-model: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    cost_model::init_tracing(cfg.log_format == LogFormat::Json);
    let system = actix::System::new();
    match system.block_on(cost_model::app::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, as for bad flags: what failed and why.
            eprintln!("cost-model: {e:#}");
            ExitCode::FAILURE
        }
    }
}
