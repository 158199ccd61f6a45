//! Supervision of the critical actors. Each of `Storage`, `BackupPoller`, `EtlWriter` and
//! `Elector` holds a [`Lifeline`]; when one of them dies (a panic unwinds its task, or it stops
//! on its own) its lifeline is dropped or failed, the [`Supervisor`] records the first failure,
//! `/healthz` turns 503 and the binary shuts down and exits non-zero, so the kubelet restarts a
//! replica instead of leaving a zombie that claims to lead while nothing writes.
//!
//! The panic hook ([`install_panic_hook`]) logs every panic as one ERROR line and remembers its
//! message per thread, so a lifeline dropped by that panic can say why.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Why a critical actor is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The actor (`storage`, `poller`, `etl`, `election`).
    pub actor: &'static str,
    /// What happened: the panic message, or why it stopped.
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "critical actor {} stopped: {}", self.actor, self.reason)
    }
}

#[derive(Debug)]
struct Inner {
    failure: watch::Sender<Option<Failure>>,
    /// Set once an orderly shutdown begins: actors dropped after that are not failures.
    stopping: AtomicBool,
}

/// Collects the first failure of any critical actor.
#[derive(Clone, Debug)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor with no failure yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                failure: watch::channel(None).0,
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// A lifeline for one critical actor.
    pub fn lifeline(&self, actor: &'static str) -> Lifeline {
        Lifeline {
            actor,
            inner: self.inner.clone(),
        }
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.failure.borrow().clone()
    }

    /// Resolves with the first failure.
    pub async fn failed(&self) -> Failure {
        let mut rx = self.inner.failure.subscribe();
        let failure = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as self");
        failure.clone().expect("waited for Some")
    }

    /// An orderly shutdown has begun: from now on an actor that stops is not a failure.
    pub fn stopping(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }
}

/// Held by a critical actor; dropping it outside an orderly shutdown is a failure.
#[derive(Debug)]
pub struct Lifeline {
    actor: &'static str,
    inner: Arc<Inner>,
}

impl Lifeline {
    /// Reports that the actor can no longer do its work, with the reason.
    pub fn fail(&self, reason: &str) {
        record(&self.inner, self.actor, reason.to_string());
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .map_or_else(|| "stopped".to_string(), |p| format!("panicked: {p}"));
        record(&self.inner, self.actor, reason);
    }
}

fn record(inner: &Inner, actor: &'static str, reason: String) {
    if inner.stopping.load(Ordering::SeqCst) {
        return;
    }
    inner.failure.send_if_modified(|f| {
        if f.is_some() {
            return false;
        }
        tracing::error!(actor, %reason, "critical actor stopped; the replica cannot go on");
        *f = Some(Failure { actor, reason });
        true
    });
}

/// Makes a critical actor panic, to test that the replica does not carry on as a zombie. Only
/// in builds with the `test-support` feature (the `/debug/crash/{actor}` route sends it).
#[cfg(feature = "test-support")]
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Crash;

/// What a critical actor does on [`Crash`]: panic, as a bug would.
#[cfg(feature = "test-support")]
#[expect(
    clippy::panic,
    reason = "the debug route makes an actor panic on purpose"
)]
pub fn crash() -> ! {
    panic!("crash requested by a test")
}

thread_local! {
    /// The message and location of the last panic on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic output with one ERROR log line (thread, location, message) and
/// remembers the message for the lifeline the panic may drop. Installed by the binary.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let (message, location) = describe(info);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(thread, "panic: {message}{location}");
        remember_panic(format!("{message}{location}"));
    }));
}

/// Keeps the current panic hook (a test harness's) and only adds the remembering, so lifelines
/// dropped by a panic say why in tests too. Installed once per process.
pub fn install_panic_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let (message, location) = describe(info);
            remember_panic(format!("{message}{location}"));
            previous(info);
        }));
    });
}

/// A panic's message and ` at file:line`.
fn describe(info: &std::panic::PanicHookInfo<'_>) -> (String, String) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    let location = info
        .location()
        .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
    (message, location)
}

/// Remembers a panic message for the lifelines this thread may drop while unwinding.
fn remember_panic(message: String) {
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_orderly_stops_are_not_failures() {
        let sup = Supervisor::new();
        let a = sup.lifeline("storage");
        let b = sup.lifeline("poller");
        assert_eq!(sup.failure(), None);
        drop(a);
        assert_eq!(
            sup.failure(),
            Some(Failure {
                actor: "storage",
                reason: "stopped".into()
            })
        );
        b.fail("later");
        assert_eq!(
            sup.failure().unwrap().actor,
            "storage",
            "the first one wins"
        );

        let sup = Supervisor::new();
        let c = sup.lifeline("etl");
        sup.stopping();
        drop(c);
        assert_eq!(sup.failure(), None);
    }

    #[test]
    fn a_lifeline_dropped_by_a_panic_says_what_panicked() {
        let sup = Supervisor::new();
        let line = sup.lifeline("storage");
        // What the panic hook does on the panicking thread, without replacing the test
        // harness's hook for every other test of the process.
        let r = std::thread::spawn(move || {
            let _line = line;
            remember_panic("boom at src/x.rs:1".into());
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        let f = sup.failure().expect("a failure");
        assert_eq!(f.reason, "panicked: boom at src/x.rs:1");
    }
}
