//! The `kubernetes` backend: leader election on a `coordination.k8s.io/v1` Lease, with
//! client-go's algorithm and record format so `kubectl get lease` and other clients read it.
//!
//! - **Acquire**: get the Lease (create it when missing); take it when its holder is empty, is
//!   us, or its record has not changed for `leaseDurationSeconds` measured on *our* monotonic
//!   clock from when *we* first saw that record (the holder's timestamps are never trusted).
//!   Every write is a PUT carrying the `resourceVersion` that was read: HTTP 409 means someone
//!   else won.
//! - **Term** (the fencing token) = `leaseTransitions` as written by our acquisition, never at
//!   or below the highest term storage has seen in the bucket (`Campaign::term_floor`).
//! - **Renew** every retry period from the cached object (the fast path), falling back to a get.
//!   The leader's validity runs from the moment its last successful write was *sent*; once the
//!   renew deadline has passed since then it demotes itself on a timer, whatever requests are
//!   still in flight, which is before anyone else can see the lease expire.
//! - **Release** on shutdown (client-go's `ReleaseOnCancel`) and when storage fences us: a fresh
//!   get, then, if we still hold it, a PUT with no holder and a 1 s duration.
//!
//! The campaign runs on its own thread with its own runtime, so a busy actor system can delay
//! neither a renewal nor the demotion timer.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use super::{Campaign, Claim, ElectionBackend, ElectionError, LeaseInfo};
use crate::role::Role;

/// How many times a release is retried after a conflict (an in-flight renew can land after we
/// stopped and bump the resourceVersion).
const RELEASE_ATTEMPTS: usize = 5;
/// Pause before retrying a release that failed for another reason than a conflict.
const RELEASE_PAUSE: Duration = Duration::from_millis(200);
/// Candidates wait one retry period plus up to this share of it, so replicas started together
/// drift apart instead of racing in lockstep. (client-go jitters by up to 1.2 periods; a smaller
/// jitter keeps a released lease's hand-off close to one retry period.)
const CANDIDATE_JITTER: f64 = 0.1;

/// What the Lease backend needs: the Lease, this replica's identity and client-go's timings.
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    /// This replica's identity, written as `holderIdentity`.
    pub identity: String,
    /// The Lease's name.
    pub lease_name: String,
    /// Its namespace; `None` takes the kubeconfig's or the service account's.
    pub namespace: Option<String>,
    /// client-go's LeaseDuration.
    pub lease_duration: Duration,
    /// client-go's RenewDeadline.
    pub renew_deadline: Duration,
    /// client-go's RetryPeriod.
    pub retry_period: Duration,
}

/// Why the Lease backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No usable kubeconfig or in-cluster service account.
    #[error("--election kubernetes: cannot load the kubeconfig ({looked_in}): {reason}")]
    Kubeconfig {
        /// Where the configuration was looked for.
        looked_in: String,
        /// Why it could not be loaded.
        reason: String,
    },
    /// The configuration loads but the client cannot use it.
    #[error("--election kubernetes: the kubeconfig cannot be used: {0}")]
    Client(String),
}

/// Builds the Lease backend: loads the Kubernetes client configuration (`KUBECONFIG`, else
/// in-cluster) and the namespace.
pub async fn backend(settings: KubernetesSettings) -> Result<Box<dyn ElectionBackend>, SetupError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "kube reads KUBECONFIG itself; this only names it in the error"
    )]
    let kubeconfig = std::env::var_os("KUBECONFIG");
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| SetupError::Kubeconfig {
            looked_in: match kubeconfig {
                Some(p) => format!("KUBECONFIG={}", p.to_string_lossy()),
                None => "KUBECONFIG unset, ~/.kube/config or the in-cluster service account".into(),
            },
            reason: one_line(&e),
        })?;
    // client-go bounds each request by half the renew deadline, so one hung request cannot use
    // up the whole deadline; resetting the read timer on write makes it count from the request,
    // not from when a pooled connection went idle.
    let request_timeout = settings.renew_deadline / 2;
    kube_config.connect_timeout = Some(
        kube_config
            .connect_timeout
            .map_or(request_timeout, |t| t.min(request_timeout)),
    );
    kube_config.read_timeout = Some(request_timeout);
    kube_config.write_timeout = Some(request_timeout);
    kube_config.reset_reader_on_write = true;
    // The campaign retries on its own schedule; a retry hidden in the client would only blur
    // the deadlines.
    kube_config.default_retry = false;
    // Fail at start on a configuration the client cannot use (bad certificates, proxy, ...).
    kube::Client::try_from(kube_config.clone()).map_err(|e| SetupError::Client(one_line(&e)))?;
    let namespace = settings
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    tracing::info!(
        lease = %settings.lease_name, %namespace, identity = %settings.identity,
        server = %kube_config.cluster_url, lease_duration = ?settings.lease_duration,
        renew_deadline = ?settings.renew_deadline, retry_period = ?settings.retry_period,
        "kubernetes election configured"
    );
    Ok(Box::new(KubernetesElection {
        kube_config,
        name: settings.lease_name,
        namespace,
        identity: settings.identity,
        timings: Timings {
            lease_duration: settings.lease_duration,
            renew_deadline: settings.renew_deadline,
            retry_period: settings.retry_period,
        },
        request_timeout,
    }))
}

/// client-go's three timings (validated by `Config::validate`: lease > renew > 1.2 × retry).
#[derive(Clone, Copy, Debug)]
struct Timings {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// The Lease backend, ready to campaign.
pub struct KubernetesElection {
    kube_config: kube::Config,
    name: String,
    namespace: String,
    identity: String,
    timings: Timings,
    request_timeout: Duration,
}

impl ElectionBackend for KubernetesElection {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn run(self: Box<Self>, campaign: Campaign) -> BoxFuture<'static, ()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("lease-election".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "election: cannot start its runtime; never leading");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Campaigner::new(*self) {
                        Ok(c) => c.run(campaign).await,
                        Err(e) => {
                            tracing::error!(error = %e, "election: cannot build the Kubernetes client; never leading");
                            publish(&campaign, follower_claim(None, None, Some(e)));
                            campaign.shutdown.cancelled().await;
                        }
                    }
                });
                let _ = done_tx.send(());
            });
        async move {
            match spawned {
                Ok(_) => {
                    let _ = done_rx.await;
                }
                Err(e) => tracing::error!(error = %e, "election: cannot start its thread"),
            }
        }
        .boxed()
    }
}

/// What one attempt to acquire or renew found.
enum Attempt {
    /// We hold the lease: the write that created, acquired or renewed it was sent at `sent`.
    Holding { lease: Box<Lease>, sent: Instant },
    /// Someone else holds it, won a race for it, or we may not take it now.
    Following,
    /// The apiserver could not be asked.
    Failed(ElectionError),
}

/// What interrupted a wait or a request.
enum Event<T> {
    Done(T),
    Shutdown,
    StepDown,
    /// The renew deadline passed while leading.
    Deadline,
}

/// Leadership of one term.
#[derive(Clone, Copy, Debug)]
struct Leading {
    term: u64,
    /// When the last successful write of the lease was sent: the lease is ours until
    /// `valid_from + renew_deadline` at the earliest anyone else could take it.
    valid_from: Instant,
}

/// The running campaign.
struct Campaigner {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    timings: Timings,
    request_timeout: Duration,
    /// The last Lease object read or written (carries the resourceVersion).
    cached: Option<Lease>,
    /// The record as first observed, and when, on our clock.
    observed: Option<(LeaseSpec, Instant)>,
    leading: Option<Leading>,
    /// No acquisition before this (set when storage fenced us).
    cooldown_until: Option<Instant>,
    error: Option<ElectionError>,
}

impl Campaigner {
    fn new(backend: KubernetesElection) -> Result<Self, ElectionError> {
        let client = kube::Client::try_from(backend.kube_config)
            .map_err(|e| ElectionError::Client(one_line(&e)))?;
        Ok(Self {
            api: Api::namespaced(client, &backend.namespace),
            name: backend.name,
            namespace: backend.namespace,
            identity: backend.identity,
            timings: backend.timings,
            request_timeout: backend.request_timeout,
            cached: None,
            observed: None,
            leading: None,
            cooldown_until: None,
            error: None,
        })
    }

    async fn run(mut self, c: Campaign) {
        publish(&c, self.claim());
        loop {
            let floor = *c.term_floor.borrow();
            if self.cooldown_until.is_some_and(|t| Instant::now() >= t) {
                self.cooldown_until = None;
            }
            let may_acquire = self.cooldown_until.is_none();
            let deadline = self.deadline();
            match race(&c, deadline, self.attempt(floor, may_acquire)).await {
                Event::Done(outcome) => {
                    if let Attempt::Failed(e) = &outcome {
                        c.failures
                            .get_or_create(&crate::metrics::ResultLabel::of(e.label()))
                            .inc();
                    }
                    self.apply(outcome)
                }
                Event::Shutdown => return self.stop(&c).await,
                Event::StepDown => self.step_down(&c).await,
                Event::Deadline => self.lose_on_deadline(),
            }
            publish(&c, self.claim());
            let next = self.next_attempt();
            match race(&c, self.deadline(), tokio::time::sleep_until(next)).await {
                Event::Done(()) => {}
                Event::Shutdown => return self.stop(&c).await,
                Event::StepDown => {
                    self.step_down(&c).await;
                    publish(&c, self.claim());
                }
                Event::Deadline => {
                    self.lose_on_deadline();
                    publish(&c, self.claim());
                }
            }
        }
    }

    /// When the leader must have renewed by.
    fn deadline(&self) -> Option<Instant> {
        self.leading
            .map(|l| l.valid_from + self.timings.renew_deadline)
    }

    /// When to try again after an attempt.
    fn next_attempt(&self) -> Instant {
        let now = Instant::now();
        if self.leading.is_some() {
            // client-go renews a retry period after the last renewal.
            return now + self.timings.retry_period;
        }
        let jitter = self
            .timings
            .retry_period
            .mul_f64(CANDIDATE_JITTER * random_unit());
        // A request that cannot succeed until someone fixes RBAC is not worth a retry period.
        let period = match &self.error {
            Some(e) if !e.is_retryable() => self.timings.lease_duration,
            _ => self.timings.retry_period,
        };
        let mut next = now + period + jitter;
        if let Some(cool) = self.cooldown_until {
            next = next.min(cool);
        }
        // Try again the moment the observed record expires rather than up to a period later.
        if let Some(expiry) = self.expiry()
            && expiry > now
        {
            next = next.min(expiry + Duration::from_millis(1));
        }
        next
    }

    /// When the observed record expires on our clock (`None` when unheld or never seen).
    fn expiry(&self) -> Option<Instant> {
        let (spec, at) = self.observed.as_ref()?;
        holder(spec)?;
        let secs = spec
            .lease_duration_seconds
            .map_or(self.timings.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        Some(*at + secs)
    }

    /// Records a lease just read or written; the observation time moves only when the record
    /// changed (client-go compares the record, not the resourceVersion).
    fn observe(&mut self, lease: Lease, at: Instant) {
        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(s, _)| *s != spec) {
            self.observed = Some((spec, at));
        }
        self.cached = Some(lease);
    }

    /// One try: renew (fast path) or get and then create, acquire or renew.
    async fn attempt(&mut self, floor: u64, may_acquire: bool) -> Attempt {
        // Fast path: we lead and hold the object we last wrote.
        if let (Some(leading), Some(cached)) = (self.leading, &self.cached)
            && let Some(spec) = cached.spec.as_ref()
            && holder(spec) == Some(self.identity.as_str())
            && transitions(spec) == leading.term
        {
            let mut lease = cached.clone();
            lease.spec = Some(LeaseSpec {
                renew_time: Some(micro_now()),
                ..spec.clone()
            });
            let sent = Instant::now();
            match self
                .call(self.api.replace(&self.name, &PostParams::default(), &lease))
                .await
            {
                Ok(Ok(written)) => return self.holding(written, sent),
                Ok(Err(conflict)) => {
                    tracing::debug!(%conflict, "lease renew conflicted; reading it")
                }
                Err(e) => tracing::debug!(error = %e, "lease renew failed; reading it"),
            }
        }
        // Slow path.
        let got = match self.call(self.api.get_opt(&self.name)).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Attempt::Failed(ElectionError::Api(e.to_string())),
            Err(e) => return Attempt::Failed(e),
        };
        let read_at = Instant::now();
        let Some(current) = got else {
            self.cached = None;
            self.observed = None;
            if !may_acquire {
                return Attempt::Following;
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_record(
                    &LeaseSpec::default(),
                    &self.identity,
                    self.duration_seconds(),
                    false,
                    floor,
                    micro_now(),
                )),
            };
            let sent = Instant::now();
            return match self
                .call(self.api.create(&PostParams::default(), &lease))
                .await
            {
                Ok(Ok(created)) => {
                    tracing::info!(lease = %self.name, namespace = %self.namespace, "created the lease");
                    self.holding(created, sent)
                }
                // Someone else created it first (409 AlreadyExists).
                Ok(Err(_)) => Attempt::Following,
                Err(e) => Attempt::Failed(e),
            };
        };
        self.observe(current.clone(), read_at);
        let spec = current.spec.clone().unwrap_or_default();
        let ours = holder(&spec) == Some(self.identity.as_str());
        if let Some(leading) = self.leading
            && (!ours || transitions(&spec) != leading.term)
        {
            // Someone else took it: our term is over.
            return Attempt::Following;
        }
        let held_by_other = !ours && holder(&spec).is_some();
        if held_by_other && self.expiry().is_some_and(|e| read_at < e) {
            return Attempt::Following;
        }
        if !may_acquire {
            return Attempt::Following;
        }
        let renewing = self.leading.is_some();
        let mut update = current;
        update.spec = Some(next_record(
            &spec,
            &self.identity,
            self.duration_seconds(),
            renewing,
            floor,
            micro_now(),
        ));
        let sent = Instant::now();
        match self
            .call(
                self.api
                    .replace(&self.name, &PostParams::default(), &update),
            )
            .await
        {
            Ok(Ok(written)) => {
                if !renewing {
                    tracing::info!(
                        lease = %self.name,
                        previous = holder(&spec).unwrap_or("nobody"),
                        term = written.spec.as_ref().map_or(0, transitions),
                        "acquired the lease"
                    );
                }
                self.holding(written, sent)
            }
            // 409 Conflict: someone else wrote it since our get.
            Ok(Err(_)) => Attempt::Following,
            Err(e) => Attempt::Failed(e),
        }
    }

    fn holding(&mut self, written: Lease, sent: Instant) -> Attempt {
        self.observe(written.clone(), Instant::now());
        Attempt::Holding {
            lease: Box::new(written),
            sent,
        }
    }

    /// Our lease duration as written into the record (whole seconds, at least 1).
    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.timings.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Runs one request with the request timeout. The inner result separates the conflicts
    /// (409: someone else won) from the errors worth reporting.
    async fn call<T>(
        &self,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<Result<T, kube::core::Status>, ElectionError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Err(_) => Err(ElectionError::Unreachable(format!(
                "no answer within {:?}",
                self.request_timeout
            ))),
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(Err(*status)),
            Ok(Err(kube::Error::Api(status))) if status.is_forbidden() => {
                Err(ElectionError::Forbidden {
                    namespace: self.namespace.clone(),
                    message: status.message.clone(),
                })
            }
            Ok(Err(kube::Error::Api(status))) => Err(ElectionError::Api(format!(
                "{} {}: {}",
                status.code, status.reason, status.message
            ))),
            Ok(Err(e)) => Err(ElectionError::Unreachable(one_line(&e))),
        }
    }

    fn apply(&mut self, outcome: Attempt) {
        match outcome {
            Attempt::Holding { lease, sent } => {
                self.set_error(None);
                let term = lease.spec.as_ref().map_or(0, transitions);
                if sent.elapsed() >= self.timings.renew_deadline {
                    // The write took so long that the lease may already look expired to others.
                    tracing::warn!(
                        took = ?sent.elapsed(),
                        "lease written, but later than the renew deadline; not leading on it"
                    );
                    self.leading = None;
                    return;
                }
                match self.leading {
                    Some(l) if l.term == term => {
                        self.leading = Some(Leading {
                            term,
                            valid_from: sent,
                        })
                    }
                    _ => {
                        tracing::info!(term, identity = %self.identity, "leading the lease");
                        self.leading = Some(Leading {
                            term,
                            valid_from: sent,
                        });
                    }
                }
            }
            Attempt::Following => {
                self.set_error(None);
                if let Some(l) = self.leading.take() {
                    tracing::warn!(
                        term = l.term,
                        holder = self.holder().unwrap_or("unknown"),
                        "lost the lease to another replica"
                    );
                }
            }
            Attempt::Failed(e) => self.set_error(Some(e)),
        }
    }

    /// Logs an error when its kind changes (unreachable, forbidden, ...), not on every retry:
    /// the message of an unreachable apiserver varies from one attempt to the next.
    fn set_error(&mut self, error: Option<ElectionError>) {
        let same_kind = match (&self.error, &error) {
            (Some(a), Some(b)) => a.label() == b.label(),
            (None, None) => true,
            _ => false,
        };
        if same_kind {
            if let Some(e) = &error {
                tracing::debug!(error = %e, "election: still failing");
            }
            self.error = error;
            return;
        }
        match &error {
            Some(e @ ElectionError::Forbidden { .. }) => {
                tracing::error!(error = %e, "election: cannot campaign (missing RBAC); never leading until fixed")
            }
            Some(e) => {
                tracing::warn!(error = %e, "election: lease request failed; retrying every retry period, logged again only when the failure changes")
            }
            None => tracing::info!("election: the apiserver answers again"),
        }
        self.error = error;
    }

    fn lose_on_deadline(&mut self) {
        if let Some(l) = self.leading.take() {
            tracing::warn!(
                term = l.term,
                renew_deadline = ?self.timings.renew_deadline,
                since_last_renew = ?l.valid_from.elapsed(),
                "no successful renew within the renew deadline: stepping down"
            );
        }
    }

    /// Storage found a higher term in the bucket: stop leading now, give the lease back, and
    /// stay out of the race for one lease duration.
    async fn step_down(&mut self, c: &Campaign) {
        let Some(l) = self.leading.take() else {
            tracing::debug!("step-down asked while not leading; ignored");
            return;
        };
        tracing::warn!(
            term = l.term,
            "fenced by a newer writer: stepping down and releasing the lease"
        );
        publish(c, self.claim());
        self.release().await;
        self.cooldown_until = Some(Instant::now() + self.timings.lease_duration);
    }

    /// Shutdown: writes are already drained; stop leading and release the lease.
    async fn stop(&mut self, c: &Campaign) {
        let was_leading = self.leading.take().is_some();
        publish(c, self.claim());
        if was_leading || self.holder() == Some(self.identity.as_str()) {
            self.release().await;
            publish(c, self.claim());
        }
        tracing::info!("election stopped");
    }

    /// client-go's ReleaseOnCancel, on a fresh read: if we still hold the lease, write it with
    /// no holder and a 1 s duration (transitions unchanged), so a follower takes it at its next
    /// attempt. Bounded by the renew deadline.
    async fn release(&mut self) {
        let deadline = Instant::now() + self.timings.renew_deadline;
        let released = tokio::time::timeout_at(deadline, async {
            for _ in 0..RELEASE_ATTEMPTS {
                match self.try_release().await {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "lease release failed; retrying");
                        tokio::time::sleep(RELEASE_PAUSE).await;
                    }
                }
            }
            false
        })
        .await;
        if !matches!(released, Ok(true)) {
            tracing::warn!("could not release the lease; others take it once it expires");
        }
    }

    /// `Ok(true)` when released or nothing to release, `Ok(false)` on a conflict.
    async fn try_release(&mut self) -> Result<bool, ElectionError> {
        let Some(mut lease) = self
            .call(self.api.get_opt(&self.name))
            .await?
            .map_err(|s| ElectionError::Api(s.message))?
        else {
            return Ok(true);
        };
        self.observe(lease.clone(), Instant::now());
        let spec = lease.spec.clone().unwrap_or_default();
        if holder(&spec) != Some(self.identity.as_str()) {
            return Ok(true);
        }
        let now = micro_now();
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..LeaseSpec::default()
        });
        match self
            .call(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await?
        {
            Ok(written) => {
                tracing::info!(lease = %self.name, term = transitions(&spec), "released the lease");
                self.observe(written, Instant::now());
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// The holder of the last observed lease.
    fn holder(&self) -> Option<&str> {
        self.cached.as_ref()?.spec.as_ref().and_then(holder)
    }

    fn lease_info(&self) -> Option<LeaseInfo> {
        let lease = self.cached.as_ref()?;
        let spec = lease.spec.clone().unwrap_or_default();
        Some(LeaseInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            holder: holder(&spec).map(str::to_string),
            duration_seconds: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().and_then(to_chrono),
            renew_time: spec.renew_time.as_ref().and_then(to_chrono),
            transitions: transitions(&spec),
        })
    }

    fn claim(&self) -> Claim {
        let lease = self.lease_info();
        let error = self.error.clone();
        match self.leading {
            Some(l) => Claim {
                role: Role::Leader { term: l.term },
                leader: Some(self.identity.clone()),
                lease,
                error,
            },
            None => {
                // A lease that still names us while we do not lead has no leader we know of.
                let leader = self
                    .holder()
                    .filter(|h| *h != self.identity)
                    .map(str::to_string);
                follower_claim(leader, lease, self.error.clone())
            }
        }
    }
}

fn follower_claim(
    leader: Option<String>,
    lease: Option<LeaseInfo>,
    error: Option<ElectionError>,
) -> Claim {
    Claim {
        role: Role::Follower {
            leader: leader.clone(),
        },
        leader,
        lease,
        error,
    }
}

/// Publishes a claim if it differs from the current one.
fn publish(c: &Campaign, claim: Claim) {
    c.claims.send_if_modified(|current| {
        if *current == claim {
            false
        } else {
            *current = claim;
            true
        }
    });
}

/// Runs `fut` until it finishes, or shutdown, a step-down or the renew deadline comes first.
async fn race<T>(
    c: &Campaign,
    deadline: Option<Instant>,
    fut: impl Future<Output = T>,
) -> Event<T> {
    let deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = c.shutdown.cancelled() => Event::Shutdown,
        () = c.step_down.notified() => Event::StepDown,
        () = deadline => Event::Deadline,
        v = fut => Event::Done(v),
    }
}

/// The record to write when taking or renewing the lease, as client-go builds it: acquire time
/// and transitions kept when we already hold it, `now` and `+1` when the holder changes. An
/// acquisition (not a renewal of the term we lead) never yields a term at or below `floor`.
fn next_record(
    current: &LeaseSpec,
    identity: &str,
    duration_seconds: i32,
    renewing: bool,
    floor: u64,
    now: MicroTime,
) -> LeaseSpec {
    let ours = holder(current) == Some(identity);
    let mut term = transitions(current);
    let acquire_time = if ours {
        current.acquire_time.clone().or_else(|| Some(now.clone()))
    } else {
        term += 1;
        Some(now.clone())
    };
    if !renewing && term <= floor {
        term = floor + 1;
    }
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time,
        renew_time: Some(now),
        lease_transitions: Some(i32::try_from(term).unwrap_or(i32::MAX)),
        ..LeaseSpec::default()
    }
}

/// The holder, `None` when empty.
fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn transitions(spec: &LeaseSpec) -> u64 {
    spec.lease_transitions
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0)
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn to_chrono(t: &MicroTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(t.0.as_microsecond())
}

/// An error and its sources on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s.replace('\n', " ")
}

/// A number in [0, 1) from the standard library's per-process random hasher keys.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn spec(holder: Option<&str>, transitions: i32, acquired: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            acquire_time: Some(at(acquired)),
            renew_time: Some(at(acquired + 5)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn taking_over_bumps_transitions_and_acquire_time() {
        let r = next_record(&spec(Some("a"), 3, 100), "b", 15, false, 0, at(200));
        assert_eq!(r.holder_identity.as_deref(), Some("b"));
        assert_eq!(r.lease_transitions, Some(4));
        assert_eq!(r.acquire_time, Some(at(200)));
        assert_eq!(r.renew_time, Some(at(200)));
        assert_eq!(r.lease_duration_seconds, Some(15));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let r = next_record(&spec(Some("a"), 3, 100), "a", 15, true, 3, at(200));
        assert_eq!(r.lease_transitions, Some(3));
        assert_eq!(r.acquire_time, Some(at(100)));
        assert_eq!(r.renew_time, Some(at(200)));
    }

    #[test]
    fn a_released_lease_is_taken_with_a_new_term() {
        let released = LeaseSpec {
            lease_duration_seconds: Some(1),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let r = next_record(&released, "b", 15, false, 3, at(200));
        assert_eq!(r.lease_transitions, Some(4));
    }

    #[test]
    fn terms_never_go_below_the_bucket() {
        // A recreated lease restarts at 0; the bucket has seen term 7.
        let r = next_record(&LeaseSpec::default(), "a", 15, false, 7, at(200));
        assert_eq!(r.lease_transitions, Some(8));
        // Taking back a lease that still names us after a restart: a new term too.
        let r = next_record(&spec(Some("a"), 7, 100), "a", 15, false, 7, at(200));
        assert_eq!(r.lease_transitions, Some(8));
        assert_eq!(r.acquire_time, Some(at(100)));
    }

    #[test]
    fn holder_empty_string_is_no_holder() {
        assert_eq!(holder(&spec(Some(""), 0, 0)), None);
        assert_eq!(holder(&spec(Some("x"), 0, 0)), Some("x"));
    }

    #[test]
    fn micro_time_converts_to_chrono() {
        let t = to_chrono(&at(1_700_000_000)).unwrap();
        assert_eq!(t.timestamp(), 1_700_000_000);
    }

    #[test]
    fn jitter_is_a_unit_fraction() {
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
