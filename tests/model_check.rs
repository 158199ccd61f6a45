//! A model check of the election + publish protocol with `stateright`: the Lease campaign of
//! `src/election/kubernetes.rs`, the claims the `Elector` forwards (`src/election/elector.rs`),
//! and the storage controller's promotion, writes, backups and fencing
//! (`src/storage/controller.rs`, `backup::backup` in `src/storage/backup.rs`), step by step as
//! the code takes them, against an apiserver Lease and a bucket of manifests.
//!
//! # What is modelled
//!
//! - **The Lease** (`holderIdentity`, `leaseTransitions`, and its `resourceVersion` as the
//!   apiserver uses it: a PUT lands only if the version it carries is still the current one, a
//!   POST only if the Lease does not exist). Versions are only compared for equality and never
//!   come back, so each replica keeps, instead of a number, whether the version it holds is
//!   still current.
//! - **The campaign**, one attempt at a time: the fast-path renew from the cached object (it
//!   lands or conflicts as it is sent); the slow path, a GET and then a PUT or a POST decided
//!   from what it read (take the Lease when it is unheld, ours, or its record has not changed
//!   for a lease duration since *this* replica first saw it; the term from `next_record`, never
//!   at or below the floor unless renewing), the write landing later; the answer applied later
//!   still (not leading when it came back a renew deadline or more after it was sent);
//!   demotion once the renew deadline since the last successful send has passed (the biased
//!   `race`: once it has passed, the campaign does nothing else first, though a request already
//!   sent still lands); step-down when storage fences it (release, then a lease duration of
//!   cool-down); graceful shutdown (storage drains, then the campaign stops and releases). A
//!   release is one step: its GET and conditional PUT either find the Lease unchanged or
//!   conflict and go round again, which is the same as releasing later.
//! - **Time** as ticks: one tick ages every timer at once (the holder's renew deadline, each
//!   replica's view of how long the record it sees has been unchanged, the cool-down, an
//!   answer's age), whatever the replicas are doing. A paused replica (SIGSTOP) is any schedule
//!   in which its steps wait while ticks pass; the checker explores every such schedule, so on
//!   resuming, its storage may act on a stale role before the demotion reaches it, and requests
//!   it sent land late.
//! - **Claims to storage**: the Elector reads the campaign's claims through a `watch` and storage
//!   takes the `RoleChanged` it sends in order; here the two are one channel holding the newest
//!   claim, so storage learns a role late, or misses one in between, but never goes back.
//!   `BucketTerm` and `Fenced` reach the campaign's floor and step-down permit at once.
//! - **Storage**: promotion (the old term's work cancelled, the promotion backup registered,
//!   unless a backup of the same term *and promotion* is still marked in flight), demotion (writes off, work
//!   cancelled), the write lock (one job at a time, first come first served), an ETL write
//!   (staged into the lineage, then backed up), `backup()`'s loop (cancelled? read the newest
//!   manifest; fenced by a higher term; merge a newer generation; nothing to publish when the
//!   newest is this lineage under this term; create-if-absent at the next generation; look once
//!   more and go round again if a higher generation appeared; five rounds at most),
//!   `after_backup` (install, enable writes unless the lineage's term is higher, fence, retry
//!   later after an error), follower polls.
//! - **The bucket** as the list of manifests by generation, each `(term, writer, items)`,
//!   written only by create-if-absent. A set of data is an *item*: each ETL write adds a new
//!   one, and a merge keeps the items of both sides.
//! - **Faults**, at most `Protocol::faults` in a run: a lease write (fast-path renew, or the
//!   slow path's PUT or POST) that lands but whose answer is lost; a manifest create that lands
//!   but whose answer is lost, or that never lands; a bucket read that fails. (A lease write
//!   that never lands is the same as one whose sender gave up on its deadline.)
//!
//! A few steps of the code are taken as one where nothing observable happens in between: an
//! attempt's loop top and its GET; an ETL write's staging and its backup's first read of the
//! bucket; a backup's read, its uploads, and the token check before its create (a create that
//! is cancelled there is the same, to everyone else, as one that never lands).
//!
//! # What the model leaves out
//!
//! - Real clocks: every replica's clock runs at the same rate (client-go tolerates skew, not a
//!   skew *rate*); the lease duration and renew deadline are 2 and 1 ticks instead of 15 s and
//!   10 s; the retry period and the candidates' jitter are left out (an attempt may start at any
//!   time). A write sent before its sender's renew deadline passed lands whenever the schedule
//!   says, but one abandoned by the demotion before it landed is dropped.
//! - Lease deletion and re-creation (`leaseTransitions` starting again at 0, which the bucket
//!   floor is there for), RBAC failures, other writers of the Lease, coordinated election.
//! - Network partitions beyond requests that are lost or delayed (a replica cut off from the
//!   apiserver but not from the bucket is one whose lease requests fail).
//! - `object_store` backend differences: the bucket is one linearizable store whose listing
//!   always shows every manifest. Garbage collection of old manifests and objects (so the create
//!   that lands *below* the newest generation, which `backup()` looks again for, cannot happen
//!   here); unreadable or corrupt manifests; manifests of another cluster.
//! - The ETL contents: set objects, uploads, sha256 checks, scrubbing, the local file store and
//!   what a promotion adopts from it (the model's lineage is what storage serves), slot-by-slot
//!   merging (a merge here is a union: a newer copy of a window replacing an older one, and
//!   retention, are not modelled), the follower's blocked reads and snapshot serving.
//! - A follower's poll is one step (list, read and install) and never installs a stale read.
//! - More than three replicas, terms above `Protocol::max_term`, more writes than
//!   `Protocol::max_writes`, more shutdowns than `Protocol::max_shutdowns`; replicas that
//!   crash and restart.
//!
//! # Properties
//!
//! Always: one writer per term (two replicas never have writes enabled under one term, and no
//! two writers publish under one term); no publish is accepted from a term lower than one
//! already in the bucket; manifest terms never decrease as generations increase; no publish is
//! lost (a manifest whose writer saw its publish succeed stays in the bucket, and its items are
//! in the newest manifest in every later state); a replica's term (as its campaign leads and as
//! its storage is promoted) never decreases. Sometimes, so the check is not vacuous: a failover
//! publish, a publish under a second term that carries the first's items, a fenced leader, two
//! leaders with writes on at once, a lost generation race, a released lease, a Lease taken from
//! a holder that still believes it leads.
//!
//! # Bounds, and what was checked
//!
//! `cargo test --test model_check` checks breadth first, one thread per check (so the bound
//! holds for every schedule), every state reachable in at most the steps below, and asserts
//! that the check completed, that no always-property failed and that every sometimes-property
//! was reached (all seven, but the release in the three-replica check: a release needs a
//! shutdown, or a fenced leader stepping down, deeper than that). All checks bound terms to 3
//! and ETL writes to 2. About 22 s in all on two cores in a debug build (each check 10-13 s).
//!
//! | test | replicas | faults | shutdowns | steps (`target_max_depth`) | unique states |
//! | --- | --- | --- | --- | --- | --- |
//! | `two_replicas_with_a_fault_and_a_shutdown` | 2 | ≤ 1 | ≤ 1 | 18 (20) | 1,340,150 |
//! | `two_replicas_deeper` | 2 | 0 | ≤ 1 | 22 (24) | 1,221,522 |
//! | `three_replicas` | 3 | 0 | 0 | 18 (20) | 944,096 |
//! | `a_leader_never_stalls_with_writes_off` | 2 | 0 | 0 | 14 (16) | 11,078 |
//!
//! None of the properties fails within these bounds, including a liveness one every check
//! carries: a leader whose campaign and storage agree on its term is never left with writes off
//! and nothing that could turn them on again. That one failed until the controller keyed its
//! backups by promotion as well as term; its own test keeps the 14-step trace that found it.

#![forbid(unsafe_code)]

use stateright::{Checker, Model, Property};

/// Ticks a lease record must stay unchanged before another replica may take it (client-go's
/// LeaseDuration, 15 s).
const LEASE_DURATION: u8 = 2;
/// Ticks after the last successful send by which the holder must have renewed (RenewDeadline,
/// 10 s): less than the lease duration.
const RENEW_DEADLINE: u8 = 1;
/// `backup::PUBLISH_ATTEMPTS`.
const PUBLISH_ATTEMPTS: u8 = 5;

/// A replica, by index.
type Id = u8;
/// A term (the Lease's `leaseTransitions`).
type Term = u8;

/// The bounds of one check.
#[derive(Clone, Debug)]
struct Protocol {
    /// How many replicas.
    replicas: u8,
    /// No acquisition is explored that would hand out a higher term.
    max_term: Term,
    /// How many ETL writes in all.
    max_writes: u8,
    /// How many replicas may shut down (SIGTERM).
    max_shutdowns: u8,
    /// How many lost or failed requests (see the module doc) one run may have.
    faults: u8,
    /// Check, besides the protocol's properties, that a leader never stalls with writes off.
    stall: bool,
}

/// The Lease as the apiserver holds it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Lease {
    holder: Option<Id>,
    transitions: Term,
}

/// A manifest in the bucket; its generation is its index + 1.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Manifest {
    term: Term,
    writer: Id,
    /// Bit `i`: the item of the `i`-th ETL write.
    items: u8,
}

/// A lineage as storage holds it: the generation it builds on, that generation's term and
/// writer, and its items.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
struct Snap {
    generation: u8,
    term: Term,
    writer: Option<Id>,
    items: u8,
}

/// The campaign's leadership (`Leading`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Leading {
    term: Term,
    /// Ticks until the renew deadline (`valid_from + renew_deadline`).
    left: u8,
}

/// What the campaign last read or wrote of the Lease (`cached`, and `observed`, which holds the
/// same record).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Seen {
    holder: Option<Id>,
    transitions: Term,
    /// Whether its resourceVersion is still the Lease's.
    current: bool,
    /// Ticks until the record expires in this replica's view (first seen + lease duration).
    left: u8,
}

/// Where the campaign is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Phase {
    /// Between attempts.
    Idle,
    /// The fast-path renew failed: the slow path's GET is due, with the floor and cool-down
    /// read at the loop's top.
    Get { floor: Term, may_acquire: bool },
    /// A PUT (or a POST when `create`) decided from a GET, not landed yet.
    Put {
        create: bool,
        /// Whether the version the GET returned is still current.
        current: bool,
        term: Term,
    },
    /// A write of ours landed; its answer is on the way.
    Response {
        term: Term,
        /// Whether the version written is still current.
        current: bool,
        /// Ticks since it was sent (saturates at the renew deadline).
        age: u8,
    },
    /// Releasing the Lease: after a step-down, or (`stop`) on shutdown.
    Releasing { stop: bool },
    /// The process has exited.
    Stopped,
}

/// A backup registered by `run_backup`, waiting for the write lock.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Waiter {
    term: Term,
    promotion: bool,
    /// The promotion (`Replica::promotions`) it was started under.
    epoch: u8,
    cancelled: bool,
}

/// Where a running `backup()` is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum JobStep {
    /// At the top of the loop, after a lost race.
    Read,
    /// The create of `generation` is on its way.
    Land { generation: u8 },
    /// Created: look once more for a higher generation.
    Recheck { generation: u8 },
}

/// The job holding the write lock.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Job {
    /// `None` for an ETL write's backup, else whether it is the promotion's.
    promotion: Option<bool>,
    term: Term,
    /// The promotion (`Replica::promotions`) it was started under.
    epoch: u8,
    cancelled: bool,
    /// Rounds of the loop already lost.
    attempt: u8,
    head: Snap,
    step: JobStep,
}

/// How a `backup()` ended.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// `Ok`, with the lineage to install.
    Done(Snap),
    Fenced(Term),
    Foreign,
    Cancelled,
    /// A bucket error, or `Contended`: retried later.
    Failed,
}

/// One replica: its campaign and its storage controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Replica {
    phase: Phase,
    leading: Option<Leading>,
    seen: Option<Seen>,
    /// Ticks of cool-down left after a step-down.
    cooldown: u8,
    /// `term_floor`.
    floor: Term,
    /// The step-down `Notify` holds a permit.
    step_down: bool,
    /// The highest term the campaign has led under.
    max_led: Term,
    /// The role storage was last told (`None`: follower).
    told: Option<Term>,
    /// Storage's role.
    role: Option<Term>,
    writes: bool,
    /// The current cancellation token has fired.
    cancelled: bool,
    head: Snap,
    /// The highest manifest term storage has installed.
    max_term: Term,
    /// Promotions so far (`Storage::promotions`).
    promotions: u8,
    /// The backup running or queued: its term and promotion.
    backup_in_flight: Option<(Term, u8)>,
    /// The backup retry scheduled: its term and promotion (one slot: a later retry replaces an
    /// earlier one, which would find its promotion gone when it fired).
    retry_scheduled: Option<(Term, u8)>,
    job: Option<Job>,
    waiting: Vec<Waiter>,
    foreign: bool,
    draining: bool,
    /// The highest term storage has been promoted to.
    max_role: Term,
}

impl Replica {
    fn new() -> Self {
        Self {
            phase: Phase::Idle,
            leading: None,
            seen: None,
            cooldown: 0,
            floor: 0,
            step_down: false,
            max_led: 0,
            told: None,
            role: None,
            writes: false,
            // A new Storage's token is cancelled: it leads nothing.
            cancelled: true,
            head: Snap::default(),
            max_term: 0,
            promotions: 0,
            backup_in_flight: None,
            retry_scheduled: None,
            job: None,
            waiting: Vec::new(),
            foreign: false,
            draining: false,
            max_role: 0,
        }
    }

    fn alive(&self) -> bool {
        self.phase != Phase::Stopped
    }

    /// The renew deadline has passed while leading: the campaign's `race` returns `Deadline`
    /// before anything else it waits for.
    fn past_deadline(&self) -> bool {
        matches!(self.leading, Some(l) if l.left == 0)
    }

    /// In a `race` (not releasing, not stopped).
    fn racing(&self) -> bool {
        !matches!(self.phase, Phase::Releasing { .. } | Phase::Stopped)
    }

    /// The write lock is free and nobody waits for it.
    fn lock_free(&self) -> bool {
        self.job.is_none() && self.waiting.is_empty()
    }

    /// Every token so far has fired: the current one, and with it all work in flight or waiting.
    fn cancel_all(&mut self) {
        self.cancelled = true;
        if let Some(job) = &mut self.job {
            job.cancelled = true;
        }
        for w in &mut self.waiting {
            w.cancelled = true;
        }
    }

    /// `Storage::writes_off`.
    fn writes_off(&mut self) {
        self.writes = false;
        self.cancel_all();
    }

    /// `Storage::install`, with `BucketTerm` to the campaign's floor.
    fn install(&mut self, snap: Snap) {
        self.head = snap;
        if snap.term > self.max_term {
            self.max_term = snap.term;
            self.floor = self.floor.max(snap.term);
        }
    }

    /// `Storage::fence`, with `Fenced` to the elector (floor, step-down permit).
    fn fence(&mut self, newer: Term) {
        self.writes_off();
        self.floor = self.floor.max(newer);
        self.step_down = true;
    }

    /// `Storage::enable_writes`.
    fn enable_writes(&mut self, term: Term) {
        if self.foreign {
            return;
        }
        if self.head.term > term {
            self.fence(self.head.term);
            return;
        }
        self.writes = true;
    }

    /// `Storage::run_backup`: registered now, run once it holds the write lock.
    fn run_backup(&mut self, term: Term, promotion: bool) {
        let key = (term, self.promotions);
        if self.backup_in_flight == Some(key) || self.foreign {
            return;
        }
        self.backup_in_flight = Some(key);
        self.waiting.push(Waiter {
            term,
            promotion,
            epoch: self.promotions,
            cancelled: self.cancelled,
        });
    }

    /// A job's end as `run_backup`'s and `WriteSets`' continuations take it, then
    /// `after_backup`.
    fn finish(&mut self, job: Job, outcome: Outcome) {
        self.job = None;
        if self.backup_in_flight == Some((job.term, job.epoch)) {
            self.backup_in_flight = None;
        }
        if self.role != Some(job.term) {
            return;
        }
        // `run_backup`'s continuation leaves a backup of an earlier promotion to the backup of
        // the current one; `WriteSets`' does not look.
        if job.promotion.is_some() && job.epoch != self.promotions {
            return;
        }
        let promotion = job.promotion == Some(true);
        match outcome {
            Outcome::Done(snap) => {
                self.install(snap);
                if promotion || !self.writes {
                    self.enable_writes(job.term);
                }
            }
            Outcome::Fenced(newer) => self.fence(newer),
            Outcome::Foreign => {
                self.writes_off();
                self.foreign = true;
            }
            Outcome::Cancelled => {}
            Outcome::Failed => {
                if promotion || !self.writes {
                    self.enable_writes(job.term);
                }
                self.retry_scheduled = Some((job.term, self.promotions));
            }
        }
    }

    /// Whether the campaign leads (and may renew) a term storage also leads, with no writes and
    /// nothing that could turn them on again: no backup running or waiting, no retry, no
    /// step-down coming. Renewing changes none of that, so such a leader keeps its Lease with
    /// writes off for as long as it keeps renewing.
    fn stalled(&self) -> bool {
        let Some(l) = self.leading else {
            return false;
        };
        self.alive()
            && !self.past_deadline()
            && !self.draining
            && self.told == Some(l.term)
            && self.role == Some(l.term)
            && !self.writes
            && !self.foreign
            && !self.step_down
            && self.lock_free()
            && self.retry_scheduled != Some((l.term, self.promotions))
    }
}

/// The whole system.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    lease: Option<Lease>,
    bucket: Vec<Manifest>,
    replicas: Vec<Replica>,
    /// ETL writes made so far.
    writes: u8,
    shutdowns: u8,
    /// Faults so far.
    faults: u8,
    /// Bit `g`: the writer of generation `g` saw its publish succeed.
    acked: u32,
    /// The items of those manifests.
    acked_items: u8,
    /// A create landed with a term below one already in the bucket.
    low_term_accepted: bool,
    /// A replica led, or storage was promoted, under a term below one it had before.
    term_decreased: bool,
    /// A create landed above the next generation (a model error: generations are contiguous).
    gap: bool,
}

impl State {
    fn newest(&self) -> Option<(u8, Manifest)> {
        self.bucket.last().map(|m| (self.bucket.len() as u8, *m))
    }

    fn replica(&mut self, id: Id) -> &mut Replica {
        &mut self.replicas[usize::from(id)]
    }

    /// Writes the Lease: every version anyone holds is no longer current.
    fn write_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
        for r in &mut self.replicas {
            if let Some(s) = &mut r.seen {
                s.current = false;
            }
            match &mut r.phase {
                Phase::Put {
                    create: false,
                    current,
                    ..
                }
                | Phase::Response { current, .. } => *current = false,
                _ => {}
            }
        }
    }

    /// `observe`: the record just read (`current`) or written, whose first sight starts the
    /// expiry clock.
    fn observe(&mut self, id: Id, lease: Lease, current: bool) {
        let r = self.replica(id);
        let left = match r.seen {
            // The same record as before: the clock keeps running.
            Some(s) if s.current && current => s.left,
            _ => LEASE_DURATION,
        };
        r.seen = Some(Seen {
            holder: lease.holder,
            transitions: lease.transitions,
            current,
            left,
        });
    }

    /// `apply(Attempt::Following)`, then back to waiting.
    fn following(&mut self, id: Id) {
        let r = self.replica(id);
        r.leading = None;
        r.phase = Phase::Idle;
    }
}

/// `next_record`'s term: +1 when the holder changes, never at or below the floor unless
/// renewing.
fn next_term(lease: Option<Lease>, me: Id, renewing: bool, floor: Term) -> Term {
    let (holder, transitions) = lease.map_or((None, 0), |l| (l.holder, l.transitions));
    let mut term = transitions;
    if holder != Some(me) {
        term += 1;
    }
    if !renewing && term <= floor {
        term = floor + 1;
    }
    term
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Action {
    /// Time passes for everyone.
    Tick,
    /// The campaign's loop top: the fast-path renew (which lands or conflicts at once; a
    /// conflict leads to the GET), else the slow path's GET and what the campaign decides from
    /// it.
    Attempt(Id),
    /// Fault: the fast-path renew lands but its answer is lost; the GET follows.
    FastRenewLost(Id),
    /// The slow path's GET after a failed fast-path renew.
    Get(Id),
    /// The slow path's PUT (or POST) reaches the apiserver.
    Land(Id),
    /// Fault: it lands but its answer is lost (`Attempt::Failed`).
    LandLost(Id),
    /// The answer to a write that landed: `holding`, then `apply`.
    Respond(Id),
    /// The renew deadline passed: `lose_on_deadline`.
    Deadline(Id),
    /// The step-down permit from `Fenced`.
    StepDown(Id),
    /// `release`: GET, and if we still hold it, a PUT with no holder.
    Release(Id),
    /// The release gives up.
    ReleaseFails(Id),
    /// SIGTERM: storage drains (writes off, work cancelled).
    Sigterm(Id),
    /// Drained: the campaign stops (releasing if it led or the Lease names it).
    StopCampaign(Id),
    /// Storage handles the newest claim's role if it changed (`promote` or `demote`).
    Deliver(Id),
    /// A follower's poll installs the bucket's newest manifest.
    Poll(Id),
    /// The ETL writer hands the leader a set (`WriteSets`): staged into the lineage, then its
    /// backup reads the bucket.
    Write(Id),
    /// `backup()`'s loop top (a registered backup taking the lock, or a job that lost a race):
    /// token check, newest manifest, fence, merge, decide, create sent.
    Read(Id),
    /// Fault: the bucket read fails.
    ReadFails(Id),
    /// The create-if-absent reaches the bucket.
    Create(Id),
    /// Fault: it lands but its answer is lost.
    CreateLost(Id),
    /// Fault: it never lands (or the token had fired before it was sent).
    CreateFails(Id),
    /// After a create: look once more for a higher generation.
    Recheck(Id),
    /// `schedule_backup`'s timer.
    Retry(Id),
}

impl Protocol {
    /// Takes one fault from the run's budget, if any is left.
    fn fault(&self, s: &mut State) -> bool {
        let left = s.faults < self.faults;
        if left {
            s.faults += 1;
        }
        left
    }

    fn step(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Tick => {
                for r in &mut s.replicas {
                    if let Some(l) = &mut r.leading {
                        l.left = l.left.saturating_sub(1);
                    }
                    if let Some(seen) = &mut r.seen {
                        seen.left = seen.left.saturating_sub(1);
                    }
                    r.cooldown = r.cooldown.saturating_sub(1);
                    if let Phase::Response { age, .. } = &mut r.phase {
                        *age = (*age + 1).min(RENEW_DEADLINE);
                    }
                }
            }
            Action::Attempt(id) | Action::FastRenewLost(id) => {
                let r = &last.replicas[usize::from(id)];
                if r.phase != Phase::Idle || r.past_deadline() {
                    return None;
                }
                let (floor, may_acquire) = (r.floor, r.cooldown == 0);
                let fast = match (r.leading, r.seen) {
                    (Some(l), Some(seen))
                        if seen.holder == Some(id) && seen.transitions == l.term =>
                    {
                        Some((l.term, seen.current))
                    }
                    _ => None,
                };
                let renewed = |term| Lease {
                    holder: Some(id),
                    transitions: term,
                };
                let slow = Phase::Get { floor, may_acquire };
                match (action, fast) {
                    (Action::Attempt(_), None) => self.get(&mut s, id, floor, may_acquire)?,
                    (Action::Attempt(_), Some((term, true))) => {
                        s.write_lease(renewed(term));
                        s.replica(id).phase = Phase::Response {
                            term,
                            current: true,
                            age: 0,
                        };
                    }
                    // A conflict (409): the slow path.
                    (Action::Attempt(_), Some((_, false))) => s.replica(id).phase = slow,
                    (Action::FastRenewLost(_), Some((term, true))) if self.fault(&mut s) => {
                        s.write_lease(renewed(term));
                        s.replica(id).phase = slow;
                    }
                    _ => return None,
                }
            }
            Action::Get(id) => {
                let r = &last.replicas[usize::from(id)];
                let Phase::Get { floor, may_acquire } = r.phase else {
                    return None;
                };
                if r.past_deadline() {
                    return None;
                }
                self.get(&mut s, id, floor, may_acquire)?;
            }
            Action::Land(id) | Action::LandLost(id) => {
                let Phase::Put {
                    create,
                    current,
                    term,
                } = s.replica(id).phase
                else {
                    return None;
                };
                let lands = if create { s.lease.is_none() } else { current };
                let written = Lease {
                    holder: Some(id),
                    transitions: term,
                };
                match action {
                    Action::Land(_) if lands => {
                        s.write_lease(written);
                        s.replica(id).phase = Phase::Response {
                            term,
                            current: true,
                            age: 0,
                        };
                    }
                    // 409: Conflict, or AlreadyExists for a POST.
                    Action::Land(_) => s.following(id),
                    Action::LandLost(_) if lands && self.fault(&mut s) => {
                        s.write_lease(written);
                        s.replica(id).phase = Phase::Idle;
                    }
                    _ => return None,
                }
            }
            Action::Respond(id) => {
                let r = &last.replicas[usize::from(id)];
                let Phase::Response { term, current, age } = r.phase else {
                    return None;
                };
                if r.past_deadline() {
                    return None;
                }
                let written = Lease {
                    holder: Some(id),
                    transitions: term,
                };
                // `holding`: a record of our own making, so new to us.
                s.replica(id).seen = None;
                s.observe(id, written, current);
                let r = s.replica(id);
                r.phase = Phase::Idle;
                if age >= RENEW_DEADLINE {
                    // Written too late: others may already see it expire.
                    r.leading = None;
                } else {
                    if term < r.max_led {
                        s.term_decreased = true;
                    }
                    let r = s.replica(id);
                    r.max_led = r.max_led.max(term);
                    r.leading = Some(Leading {
                        term,
                        left: RENEW_DEADLINE - age,
                    });
                }
            }
            Action::Deadline(id) => {
                let r = s.replica(id);
                if !r.past_deadline() || !r.racing() {
                    return None;
                }
                r.leading = None;
                r.phase = Phase::Idle;
            }
            Action::StepDown(id) => {
                let r = s.replica(id);
                if !r.step_down || !r.racing() {
                    return None;
                }
                r.step_down = false;
                r.phase = if r.leading.take().is_some() {
                    Phase::Releasing { stop: false }
                } else {
                    Phase::Idle
                };
            }
            Action::Release(id) | Action::ReleaseFails(id) => {
                let Phase::Releasing { stop } = s.replica(id).phase else {
                    return None;
                };
                if let (Action::Release(_), Some(lease)) = (action, s.lease) {
                    s.observe(id, lease, true);
                    if lease.holder == Some(id) {
                        let released = Lease {
                            holder: None,
                            transitions: lease.transitions,
                        };
                        s.write_lease(released);
                        s.observe(id, released, true);
                    }
                }
                let r = s.replica(id);
                if stop {
                    r.phase = Phase::Stopped;
                } else {
                    r.cooldown = LEASE_DURATION;
                    r.phase = Phase::Idle;
                }
            }
            Action::Sigterm(id) => {
                if s.shutdowns >= self.max_shutdowns {
                    return None;
                }
                s.shutdowns += 1;
                let r = s.replica(id);
                if r.draining || !r.alive() {
                    return None;
                }
                // `Drain`: writes off and the token fired; `StopCampaign` waits for the lock.
                r.draining = true;
                r.writes = false;
                r.cancel_all();
            }
            Action::StopCampaign(id) => {
                let r = s.replica(id);
                if !r.draining || !r.racing() || !r.lock_free() {
                    return None;
                }
                let was_leading = r.leading.take().is_some();
                let named = r.seen.is_some_and(|seen| seen.holder == Some(id));
                r.phase = if was_leading || named {
                    Phase::Releasing { stop: true }
                } else {
                    Phase::Stopped
                };
            }
            Action::Deliver(id) => {
                let r = s.replica(id);
                let claim = r.leading.map(|l| l.term);
                if !r.alive() || claim == r.told {
                    return None;
                }
                r.told = claim;
                match claim {
                    Some(term) if r.role != Some(term) => {
                        // `promote`.
                        r.writes = false;
                        r.cancel_all();
                        r.cancelled = false;
                        r.promotions += 1;
                        r.role = Some(term);
                        if term < r.max_role {
                            s.term_decreased = true;
                        }
                        let r = s.replica(id);
                        r.max_role = r.max_role.max(term);
                        r.run_backup(term, true);
                    }
                    Some(_) => {}
                    None => {
                        // `demote`.
                        r.writes_off();
                        r.role = None;
                    }
                }
            }
            Action::Poll(id) => {
                let (generation, m) = s.newest()?;
                let r = s.replica(id);
                if !r.alive() || r.role.is_some() {
                    return None;
                }
                r.install(Snap {
                    generation,
                    term: m.term,
                    writer: Some(m.writer),
                    items: m.items,
                });
            }
            Action::Write(id) => {
                let item = s.writes;
                let r = s.replica(id);
                let term = r.role?;
                if !r.writes || !r.alive() || !r.lock_free() || item >= self.max_writes {
                    return None;
                }
                // `stage` (the lineage served at once), then `backup` of it.
                r.head.items |= 1 << item;
                r.backup_in_flight = Some((term, r.promotions));
                let job = Job {
                    promotion: None,
                    term,
                    epoch: r.promotions,
                    cancelled: r.cancelled,
                    attempt: 0,
                    head: r.head,
                    step: JobStep::Read,
                };
                s.writes += 1;
                self.read(&mut s, id, job);
            }
            Action::Read(id) | Action::ReadFails(id) => {
                let r = s.replica(id);
                if !r.alive() {
                    return None;
                }
                let job = match (r.job, r.waiting.first()) {
                    (Some(job), _) if job.step == JobStep::Read => job,
                    (None, Some(&w)) => {
                        r.waiting.remove(0);
                        Job {
                            promotion: Some(w.promotion),
                            term: w.term,
                            epoch: w.epoch,
                            cancelled: w.cancelled,
                            attempt: 0,
                            head: r.head,
                            step: JobStep::Read,
                        }
                    }
                    _ => return None,
                };
                match action {
                    Action::Read(_) => self.read(&mut s, id, job),
                    _ if self.fault(&mut s) => s.replica(id).finish(job, Outcome::Failed),
                    _ => return None,
                }
            }
            Action::Create(id) | Action::CreateLost(id) | Action::CreateFails(id) => {
                let mut job = s.replica(id).job?;
                let JobStep::Land { generation } = job.step else {
                    return None;
                };
                if !s.replica(id).alive() || (action != Action::Create(id) && !self.fault(&mut s)) {
                    return None;
                }
                if let Action::CreateFails(_) = action {
                    let outcome = if job.cancelled {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed
                    };
                    s.replica(id).finish(job, outcome);
                    return Some(s);
                }
                let next = s.bucket.len() as u8 + 1;
                if generation > next {
                    s.gap = true;
                    return Some(s);
                }
                if generation < next {
                    if let Action::CreateLost(_) = action {
                        return None;
                    }
                    // AlreadyExists: read the winner.
                    job.attempt += 1;
                    if job.attempt == PUBLISH_ATTEMPTS {
                        s.replica(id).finish(job, Outcome::Failed);
                    } else {
                        job.step = JobStep::Read;
                        s.replica(id).job = Some(job);
                    }
                    return Some(s);
                }
                if s.bucket.iter().any(|m| m.term > job.term) {
                    s.low_term_accepted = true;
                }
                s.bucket.push(Manifest {
                    term: job.term,
                    writer: id,
                    items: job.head.items,
                });
                if let Action::CreateLost(_) = action {
                    s.replica(id).finish(job, Outcome::Failed);
                } else {
                    job.step = JobStep::Recheck { generation };
                    s.replica(id).job = Some(job);
                }
            }
            Action::Recheck(id) => {
                let mut job = s.replica(id).job?;
                let JobStep::Recheck { generation } = job.step else {
                    return None;
                };
                if !s.replica(id).alive() {
                    return None;
                }
                let ours = Snap {
                    generation,
                    term: job.term,
                    writer: Some(id),
                    items: job.head.items,
                };
                if s.bucket.len() as u8 > generation {
                    // Published below the newest: build on ours and go round again.
                    job.head = ours;
                    job.attempt += 1;
                    if job.attempt == PUBLISH_ATTEMPTS {
                        s.replica(id).finish(job, Outcome::Failed);
                    } else {
                        job.step = JobStep::Read;
                        s.replica(id).job = Some(job);
                    }
                } else {
                    // The writer sees its publish succeed.
                    assert!(generation < 32, "acked holds 31 generations");
                    s.acked |= 1 << generation;
                    s.acked_items |= job.head.items;
                    s.replica(id).finish(job, Outcome::Done(ours));
                }
            }
            Action::Retry(id) => {
                let r = s.replica(id);
                let (term, epoch) = r.retry_scheduled.take()?;
                if !r.alive() {
                    return None;
                }
                if r.role == Some(term) && r.promotions == epoch && !r.cancelled {
                    r.run_backup(term, false);
                }
            }
        }
        Some(s)
    }

    /// The slow path from the GET on: observe the Lease, then follow, or send a PUT (a POST
    /// when it does not exist). `None` when the write would hand out a term above the bound.
    fn get(&self, s: &mut State, id: Id, floor: Term, may_acquire: bool) -> Option<()> {
        let leading = s.replica(id).leading;
        let Some(lease) = s.lease else {
            s.replica(id).seen = None;
            if !may_acquire {
                s.following(id);
                return Some(());
            }
            let term = next_term(None, id, false, floor);
            if term > self.max_term {
                return None;
            }
            s.replica(id).phase = Phase::Put {
                create: true,
                current: true,
                term,
            };
            return Some(());
        };
        s.observe(id, lease, true);
        let ours = lease.holder == Some(id);
        if let Some(l) = leading
            && (!ours || lease.transitions != l.term)
        {
            // Someone else took it: our term is over.
            s.following(id);
            return Some(());
        }
        let held_by_other = !ours && lease.holder.is_some();
        let unexpired = s.replica(id).seen.is_some_and(|seen| seen.left > 0);
        if (held_by_other && unexpired) || !may_acquire {
            s.following(id);
            return Some(());
        }
        let term = next_term(Some(lease), id, leading.is_some(), floor);
        if term > self.max_term {
            return None;
        }
        s.replica(id).phase = Phase::Put {
            create: false,
            current: true,
            term,
        };
        Some(())
    }

    /// `backup()`'s loop top for `job` of replica `id`, up to sending the create; the job ends
    /// here or waits for its create to land.
    fn read(&self, s: &mut State, id: Id, mut job: Job) {
        let outcome = Self::decide(s, id, &mut job);
        let r = s.replica(id);
        match outcome {
            Some(outcome) => r.finish(job, outcome),
            None => r.job = Some(job),
        }
    }

    /// The decisions of `backup()`'s loop top: `Some` when it ends there.
    fn decide(s: &State, id: Id, job: &mut Job) -> Option<Outcome> {
        if job.cancelled {
            return Some(Outcome::Cancelled);
        }
        let newest = s.newest();
        let highest = newest.map_or(0, |(g, _)| g);
        // A higher term anywhere fences.
        if let Some((_, m)) = newest
            && m.term > job.term
        {
            return Some(Outcome::Fenced(m.term));
        }
        let head = &mut job.head;
        if let Some((generation, m)) = newest
            && generation >= head.generation
            && m.items != head.items
        {
            let same_term_other_writer = m.term == job.term && m.writer != id;
            if same_term_other_writer && head.writer == Some(id) && generation > head.generation {
                return Some(Outcome::Foreign);
            }
            // `merge`: their generation, term and writer; both sides' items.
            *head = Snap {
                generation,
                term: m.term,
                writer: Some(m.writer),
                items: head.items | m.items,
            };
        }
        if head.items == 0 {
            // Nothing built and nothing in the bucket.
            return Some(Outcome::Done(*head));
        }
        if let Some((generation, m)) = newest
            && m.term == job.term
            && m.items == head.items
        {
            // The bucket's newest already names this lineage under this term.
            return Some(Outcome::Done(Snap {
                generation,
                ..*head
            }));
        }
        job.step = JobStep::Land {
            generation: highest.max(head.generation) + 1,
        };
        None
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            lease: None,
            bucket: Vec::new(),
            replicas: (0..self.replicas).map(|_| Replica::new()).collect(),
            writes: 0,
            shutdowns: 0,
            faults: 0,
            acked: 0,
            acked_items: 0,
            low_term_accepted: false,
            term_decreased: false,
            gap: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        actions.push(Action::Tick);
        for id in 0..self.replicas {
            let r = &s.replicas[usize::from(id)];
            if !r.alive() {
                continue;
            }
            // Only what may be enabled (`step` decides), so that no state is cloned for
            // nothing.
            let fault = s.faults < self.faults;
            let enabled = |a: &Action| match a {
                Action::Attempt(_) => r.phase == Phase::Idle,
                Action::FastRenewLost(_) => fault && r.phase == Phase::Idle,
                Action::Get(_) => matches!(r.phase, Phase::Get { .. }),
                Action::Land(_) => matches!(r.phase, Phase::Put { .. }),
                Action::LandLost(_) => fault && matches!(r.phase, Phase::Put { .. }),
                Action::Respond(_) => matches!(r.phase, Phase::Response { .. }),
                Action::Deadline(_) => r.past_deadline(),
                Action::StepDown(_) => r.step_down,
                Action::Release(_) | Action::ReleaseFails(_) => {
                    matches!(r.phase, Phase::Releasing { .. })
                }
                Action::Sigterm(_) => s.shutdowns < self.max_shutdowns && !r.draining,
                Action::StopCampaign(_) => r.draining,
                Action::Deliver(_) => r.leading.map(|l| l.term) != r.told,
                Action::Poll(_) => r.role.is_none() && !s.bucket.is_empty(),
                Action::Write(_) => r.writes,
                Action::Read(_) => r.job.is_some() || !r.waiting.is_empty(),
                Action::ReadFails(_) => fault && (r.job.is_some() || !r.waiting.is_empty()),
                Action::Create(_) | Action::Recheck(_) => r.job.is_some(),
                Action::CreateLost(_) | Action::CreateFails(_) => fault && r.job.is_some(),
                Action::Retry(_) => r.retry_scheduled.is_some(),
                Action::Tick => false,
            };
            let all = [
                Action::Attempt(id),
                Action::FastRenewLost(id),
                Action::Get(id),
                Action::Land(id),
                Action::LandLost(id),
                Action::Respond(id),
                Action::Deadline(id),
                Action::StepDown(id),
                Action::Release(id),
                Action::ReleaseFails(id),
                Action::Sigterm(id),
                Action::StopCampaign(id),
                Action::Deliver(id),
                Action::Poll(id),
                Action::Write(id),
                Action::Read(id),
                Action::ReadFails(id),
                Action::Create(id),
                Action::CreateLost(id),
                Action::CreateFails(id),
                Action::Recheck(id),
                Action::Retry(id),
            ];
            actions.extend(all.into_iter().filter(enabled));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        self.step(last, action).filter(|s| s != last)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            // 1.
            Property::always("one writer per term", |_, s: &State| {
                let writing: Vec<Term> = s
                    .replicas
                    .iter()
                    .filter(|r| r.writes)
                    .filter_map(|r| r.role)
                    .collect();
                let distinct = writing
                    .iter()
                    .enumerate()
                    .all(|(i, t)| !writing[i + 1..].contains(t));
                let one_publisher = s.bucket.iter().all(|a| {
                    s.bucket
                        .iter()
                        .all(|b| a.term != b.term || a.writer == b.writer)
                });
                distinct && one_publisher
            }),
            Property::always(
                "no publish accepted below the bucket's term",
                |_, s: &State| !s.low_term_accepted,
            ),
            // 2.
            Property::always("manifest terms never decrease", |_, s: &State| {
                s.bucket.windows(2).all(|w| w[0].term <= w[1].term)
            }),
            // 3.
            Property::always("no acknowledged publish lost", |_, s: &State| {
                let present = (1..32).all(|g| s.acked & (1 << g) == 0 || g <= s.bucket.len());
                let carried = s.newest().map_or(s.acked_items == 0, |(_, m)| {
                    m.items & s.acked_items == s.acked_items
                });
                present && carried
            }),
            // 4.
            Property::always("a replica's term never decreases", |_, s: &State| {
                !s.term_decreased
            }),
            Property::always("generations are contiguous", |_, s: &State| !s.gap),
            // Not vacuous.
            Property::sometimes("a failover publish", |_, s: &State| {
                s.bucket.iter().any(|m| m.writer != s.bucket[0].writer)
            }),
            Property::sometimes(
                "a second term carries the first's publish",
                |_, s: &State| {
                    s.bucket.iter().enumerate().any(|(i, a)| {
                        a.items != 0
                            && s.bucket[i + 1..].iter().any(|b| {
                                b.term > a.term
                                    && b.writer != a.writer
                                    && b.items & a.items == a.items
                            })
                    })
                },
            ),
            Property::sometimes("a deposed leader is fenced", |_, s: &State| {
                s.replicas.iter().any(|r| r.step_down)
            }),
            Property::sometimes("two leaders write at once", |_, s: &State| {
                s.replicas.iter().filter(|r| r.writes).count() >= 2
            }),
            Property::sometimes("a generation race is lost", |_, s: &State| {
                s.replicas
                    .iter()
                    .any(|r| r.job.is_some_and(|j| j.attempt > 0))
            }),
            Property::sometimes("the lease is released", |_, s: &State| {
                s.lease
                    .is_some_and(|l| l.holder.is_none() && l.transitions > 0)
            }),
            Property::sometimes(
                "the lease moves on while its old holder leads",
                |_, s: &State| {
                    s.lease.is_some_and(|l| {
                        s.replicas.iter().enumerate().any(|(id, r)| {
                            r.leading.is_some() && l.holder.is_some() && l.holder != Some(id as Id)
                        })
                    })
                },
            ),
        ];
        if self.stall {
            properties.push(Property::always(
                "a leader never stalls with writes off",
                |_, s: &State| !s.replicas.iter().any(Replica::stalled),
            ));
        }
        properties
    }
}

/// The sometimes-properties: every check reaches them all unless it says otherwise.
const REACHED: [&str; 7] = [
    "a failover publish",
    "a second term carries the first's publish",
    "a deposed leader is fenced",
    "two leaders write at once",
    "a generation race is lost",
    "the lease moves on while its old holder leads",
    "the lease is released",
];

/// Checks `model` breadth first with `target_max_depth(depth)` (the start is depth 1, so every
/// state within `depth - 2` steps of it is checked), prints what it covered, and asserts that
/// the check completed, that no always-property failed (a failure panics with its trace, one
/// action a line) and that every property of `reached` was reached.
fn check(model: Protocol, depth: usize, reached: &[&str]) {
    let started = std::time::Instant::now();
    // One thread keeps the search strictly breadth first, so the depth bound holds for every
    // schedule (with several, a state first found by a longer path counts that path's depth);
    // the tests themselves run side by side.
    let checker = model
        .clone()
        .checker()
        .threads(1)
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    println!(
        "{model:?}, depth {depth}: {} unique states ({} visited), deepest {}, in {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    assert!(checker.is_done(), "the check did not complete");
    for p in model.properties() {
        let found = checker.discovery(p.name);
        match p.expectation {
            stateright::Expectation::Always | stateright::Expectation::Eventually => {
                if let Some(path) = found {
                    let steps: Vec<String> = path
                        .clone()
                        .into_actions()
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect();
                    panic!(
                        "\"{}\" fails after {} steps:\n{}\nlast state: {:#?}",
                        p.name,
                        steps.len(),
                        steps.join("\n"),
                        path.last_state()
                    );
                }
            }
            stateright::Expectation::Sometimes => {
                if reached.contains(&p.name) {
                    assert!(found.is_some(), "\"{}\" was never reached", p.name);
                }
            }
        }
    }
}

/// Two replicas, up to one fault and one shutdown in a run, terms up to 3, two writes: every
/// state within 18 steps (1,302,338 states, about 12 s).
#[test]
fn two_replicas_with_a_fault_and_a_shutdown() {
    check(
        Protocol {
            replicas: 2,
            max_term: 3,
            max_writes: 2,
            max_shutdowns: 1,
            faults: 1,
            stall: true,
        },
        20,
        &REACHED,
    );
}

/// Two replicas, no faults, up to one shutdown: deeper, every state within 22 steps (1,160,802
/// states, about 12 s).
#[test]
fn two_replicas_deeper() {
    check(
        Protocol {
            replicas: 2,
            max_term: 3,
            max_writes: 2,
            max_shutdowns: 1,
            faults: 0,
            stall: true,
        },
        24,
        &REACHED,
    );
}

/// Three replicas, no faults, no shutdown: every state within 18 steps (930,854 states, about
/// 10 s). (A release needs a shutdown, or a fenced leader stepping down, deeper than this.)
#[test]
fn three_replicas() {
    check(
        Protocol {
            replicas: 3,
            max_term: 3,
            max_writes: 2,
            max_shutdowns: 0,
            faults: 0,
            stall: true,
        },
        20,
        &REACHED[..6],
    );
}

/// A leader whose campaign and storage agree on its term must not be left with writes off and
/// nothing that could turn them on again.
///
/// This failed (11,000 states to depth 16) before `Storage` keyed its in-flight backup by
/// promotion as well as term; `a_promotion_to_the_term_just_demoted_from_still_enables_writes`
/// in `tests/storage_rules.rs` replays it on the real controller. The checker's trace, 14 steps (replica 1 is "A", 0 is
/// "B"; B's one step plays no part):
///
/// 1. `Attempt(1)`, `Land(1)`: A finds no Lease and creates it (term 1).
/// 2. `Respond(1)`: A leads term 1.
/// 3. `Tick`: A's renew deadline passes with no renew (the apiserver slow for 10 s).
/// 4. `Deliver(1)`: A's storage is promoted to 1: `run_backup(1, true)` marks
///    `backup_in_flight = Some(1)`; the promotion backup waits for the write lock (or the
///    bucket).
/// 5. `Deadline(1)`: A's campaign demotes itself.
/// 6. `Attempt(1)`, `Land(1)`: A reads the Lease, which still names A (no other replica has
///    waited a lease duration), and takes it back; `next_record` keeps term 1, since nothing
///    under term 1 is in the bucket yet to raise the floor.
/// 7. `Deliver(1)`: storage sees the follower claim: `demote` fires the token the promotion
///    backup holds, but `backup_in_flight` stays `Some(1)`.
/// 8. `Respond(1)`, `Attempt(1)`: A leads term 1 again and renews; `Attempt(0)`: B reads the
///    Lease.
/// 9. `Deliver(1)`: `promote(1)` calls `run_backup(1, true)`, which returns at once because
///    `backup_in_flight == Some(1)`: no promotion backup.
/// 10. `Read(1)`: the old backup takes the lock, finds its token fired and ends `Cancelled`; its
///     continuation clears `backup_in_flight` and, storage leading term 1 again, hands
///     `after_backup` a `Cancelled`, which does nothing.
///
/// Now A holds the Lease under term 1 with writes off, no backup running or scheduled and no
/// step-down coming: `WriteSets` is dropped and `AwaitWritable` waits, for as long as A keeps
/// renewing. (The protocol's safety properties hold throughout; this is lost progress.) Now step
/// 9 registers a backup of the second promotion, which runs after the cancelled one and enables
/// writes.
#[test]
fn a_leader_never_stalls_with_writes_off() {
    check(
        Protocol {
            replicas: 2,
            max_term: 3,
            max_writes: 2,
            max_shutdowns: 0,
            faults: 0,
            stall: true,
        },
        16,
        &[],
    );
}
