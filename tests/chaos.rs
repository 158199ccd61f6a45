//! The fault suite: three replica processes of the real binary, electing through a real
//! kube-apiserver (a private `scripts/testenv` control plane) and backing up to a real S3 server
//! (MinIO of `scripts/objectstore`), driven through minutes of ETL while faults are injected at
//! random from a printed seed:
//!
//! - `kill -9` of the leader (restarted a few seconds later), SIGTERM of the leader (restarted
//!   once it has exited), SIGSTOP of the leader past the lease duration, then SIGCONT;
//! - the apiserver stopped (SIGTERM) and started again on the same etcd data, ports and
//!   credentials;
//! - the bucket unreachable (every connection closed), answering 500s, or slow, for everyone;
//! - a set object the newest manifest names overwritten with other bytes of the same size, or
//!   cut short; the newest manifest overwritten with bytes that do not parse;
//! - one replica (the leader or not) cut off from the apiserver and the bucket for longer than
//!   the lease duration: each replica reaches both through proxies of its own on loopback (a
//!   byte pipe for the apiserver's TLS, an HTTP proxy for S3), and cutting it closes them.
//!
//! Checked throughout, every 100-250 ms per replica and every 500 ms on the bucket:
//! - no two replicas report `writesEnabled` at overlapping times (a paused replica's answers,
//!   and the second after it resumes, are left out: it cannot write, the bucket fences it), and
//!   no term is ever reported writable by two identities;
//! - in the bucket (read directly, not through the proxies), a manifest's generation, once
//!   seen, keeps its term and writer; terms never decrease as generations increase; one
//!   writer per term; the highest generation never goes down;
//! - every query to every running replica (`/model/allocation` over a complete past day and a
//!   complete past hour, by namespace) answers within 5 s: 200 with exactly the totals the
//!   undisturbed reference replica answers, or 200 naming the windows it lacks
//!   (`X-Data-Unavailable`), or 503 with `Retry-After` before that process's first answer; so
//!   missing data is never answered as zero and a damaged object is never served.
//!
//! After the faults stop (every fault healed, every replica running): a leader writes, the
//! bucket's newest manifest names only objects that verify (the leader's scrub repairs what was
//! damaged; `--scrub-interval 5s`), and its complete sets equal, sha256 for sha256, those of a
//! reference run: one standalone replica with the same demo data on a folder bucket of its own,
//! undisturbed, started at the same time.
//!
//! `CHAOS_SEED` (default: fresh from the clock) and `CHAOS_DURATION` (seconds of faults, `60s`,
//! `2m`; default 45 s) set the run; a seed replays the same faults, with the same parameters, in
//! the same order (when each lands against the replicas' own timers is the machine's); `scripts/chaos --seed N --duration 120s` runs it alone. A
//! failure prints the seed, the event log and what failed; the last line printed (and
//! `target/chaos/summary.txt`) is a one-line summary of the faults injected and checks made.
//!
//! Timings are the fast test ones (lease 4 s, renew deadline 3 s, retry 1 s), so a short run
//! holds many faults; with the defaults each failover takes about four times as long.
#![allow(
    clippy::disallowed_methods,
    reason = "the run's seed and duration come from the environment; the control plane is stopped and started by a blocking helper"
)]

mod kube_support;
#[path = "prom/proxy.rs"]
mod proxy;
mod stores;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use cost_model::model::{SetKind, Window};
use cost_model::storage::backup;
use cost_model::storage::manifest::{self, FileEntry};
use kube_support::*;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use proxy::{FaultProxy, Mode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const REPLICAS: usize = 3;
const DEMO: [&str; 4] = ["--demo-seed", "23", "--demo-pods", "40"];
/// How long a query may take before it counts as unanswered.
const QUERY_BOUND: Duration = Duration::from_secs(5);
/// How long after SIGCONT a replica's answers are still left out of the writer check.
const RESUME_GRACE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The run's randomness: SplitMix64, so a seed replays the same choices.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `[lo, hi]` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

// ---------------------------------------------------------------------------------------------
// A cuttable byte pipe on loopback (the apiserver speaks TLS, so it is piped, not parsed).

struct Pipe {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Pipe {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind pipe");
        let port = listener.local_addr().expect("pipe address").port();
        let (cut, rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if *rx.borrow() {
                    continue; // dropped: closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

// ---------------------------------------------------------------------------------------------
// What the samplers know of each replica.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving HTTP on `port` since `since` (its process started or resumed then).
    Up { port: u16, since: Instant },
    /// Killed, stopping, starting or paused: its answers are not judged.
    Out,
}

struct Watch {
    identity: String,
    /// The phase, and a counter bumped on every change: a sample is judged only if the counter
    /// did not move while it was in flight.
    phase: Mutex<(Phase, u64)>,
}

impl Watch {
    fn get(&self) -> (Phase, u64) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, phase: Phase) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *p = (phase, p.1 + 1);
    }
}

/// Everything the checks found, and what they counted.
#[derive(Default)]
struct Findings {
    violations: Vec<String>,
    status_samples: u64,
    /// `(replica, term, sent, answered)` of every judged `writesEnabled: true` answer.
    writers: Vec<(usize, u64, Instant, Instant)>,
    /// term → identities that reported it writable.
    term_writers: BTreeMap<u64, HashSet<String>>,
    queries_equal: u64,
    queries_unavailable: u64,
    queries_not_ready: u64,
    queries_unjudged: u64,
    slowest_query: Duration,
    bucket_polls: u64,
    /// generation → (term, writer) as first read.
    manifests: BTreeMap<u64, (u64, String)>,
    highest_generation: u64,
}

type Shared = Arc<Mutex<Findings>>;

fn violation(f: &Shared, log: &EventLog, what: String) {
    log.note(format!("VIOLATION: {what}"));
    f.lock()
        .unwrap_or_else(|e| e.into_inner())
        .violations
        .push(what);
}

/// Timestamped events, printed on failure.
#[derive(Clone)]
struct EventLog {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EventLog {
    fn note(&self, what: impl Into<String>) {
        let line = format!("{:>7.1?} {}", self.start.elapsed(), what.into());
        eprintln!("chaos: {line}");
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

// ---------------------------------------------------------------------------------------------
// The queries and the reference's answers.

/// The two complete past windows every replica is asked about: yesterday, and the hour that
/// ended two hours ago.
fn windows(now: DateTime<Utc>) -> [Window; 2] {
    let day = now.duration_trunc(TimeDelta::days(1)).expect("day");
    let hour = now.duration_trunc(TimeDelta::hours(1)).expect("hour");
    [
        Window::new(day - TimeDelta::days(1), day),
        Window::new(hour - TimeDelta::hours(3), hour - TimeDelta::hours(2)),
    ]
}

/// The query of `w`, by namespace.
fn query(w: &Window) -> String {
    format!(
        "/model/allocation?window={},{}&aggregate=namespace&accumulate=true",
        w.start.format("%Y-%m-%dT%H:%M:%SZ"),
        w.end.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// namespace → totalCost of an answer's first set, as bits (equality, not closeness).
fn totals(body: &serde_json::Value) -> BTreeMap<String, u64> {
    body["data"][0]
        .as_object()
        .map(|set| {
            set.iter()
                .map(|(k, v)| {
                    let cost = v["totalCost"].as_f64().unwrap_or(f64::NAN);
                    (k.clone(), cost.to_bits())
                })
                .collect()
        })
        .unwrap_or_default()
}

enum Answer {
    Totals(BTreeMap<String, u64>),
    Unavailable,
    /// 503 with `Retry-After`, and its message.
    NotReady(String),
    Other(String),
}

async fn ask(http: &reqwest::Client, url: &str) -> Answer {
    let resp = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Other(format!("no answer: {e}")),
    };
    let code = resp.status().as_u16();
    let unavailable = resp.headers().contains_key("x-data-unavailable");
    let retry_after = resp.headers().contains_key("retry-after");
    let body: serde_json::Value = match resp.json().await {
        Ok(b) => b,
        Err(e) => return Answer::Other(format!("HTTP {code}, body unreadable: {e}")),
    };
    match code {
        200 if unavailable => {
            if body["warning"].is_string() {
                Answer::Unavailable
            } else {
                Answer::Other(format!("X-Data-Unavailable without a warning: {body}"))
            }
        }
        200 => Answer::Totals(totals(&body)),
        503 if retry_after => {
            Answer::NotReady(body["message"].as_str().unwrap_or_default().to_string())
        }
        _ => Answer::Other(format!("HTTP {code}: {body}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The bucket, read directly.

/// Every manifest that parses: generation → (term, writer).
async fn read_manifests(store: &dyn ObjectStore) -> Option<BTreeMap<u64, (u64, String)>> {
    use futures::TryStreamExt;
    let prefix = ObjPath::from(manifest::MANIFEST_DIR);
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.ok()?;
    let mut out = BTreeMap::new();
    for meta in listed {
        let Ok(got) = store.get(&meta.location).await else {
            continue; // deleted meanwhile
        };
        let Ok(bytes) = got.bytes().await else {
            continue;
        };
        if let Ok(m) = serde_json::from_slice::<manifest::Manifest>(&bytes) {
            out.insert(m.generation, (m.term, m.writer));
        }
    }
    Some(out)
}

async fn check_bucket(
    store: &dyn ObjectStore,
    f: &Shared,
    log: &EventLog,
    damaged: &Mutex<HashSet<u64>>,
) {
    let Some(now) = read_manifests(store).await else {
        return;
    };
    let damaged = damaged.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut found = Vec::new();
    {
        let mut g = f.lock().unwrap_or_else(|e| e.into_inner());
        g.bucket_polls += 1;
        let highest = now.keys().next_back().copied().unwrap_or(0);
        if highest < g.highest_generation && !damaged.contains(&g.highest_generation) {
            found.push(format!(
                "the highest readable generation went down: {} after {}",
                highest, g.highest_generation
            ));
        }
        g.highest_generation = g.highest_generation.max(highest);
        for (generation, (term, writer)) in &now {
            match g.manifests.get(generation) {
                Some(seen) if seen != &(*term, writer.clone()) => found.push(format!(
                    "generation {generation} changed from {seen:?} to ({term}, {writer})"
                )),
                Some(_) => {}
                None => {
                    g.manifests.insert(*generation, (*term, writer.clone()));
                }
            }
        }
        let mut last: Option<(u64, u64)> = None;
        let mut by_term: BTreeMap<u64, &str> = BTreeMap::new();
        for (generation, (term, writer)) in &g.manifests {
            if let Some((lg, lt)) = last
                && *term < lt
            {
                found.push(format!(
                    "term went down: generation {generation} has term {term}, generation {lg} had {lt}"
                ));
            }
            last = Some((*generation, *term));
            if let Some(other) = by_term.insert(*term, writer)
                && other != writer
            {
                found.push(format!("term {term} has two writers: {other} and {writer}"));
            }
        }
    }
    for v in found {
        violation(f, log, v);
    }
}

/// The newest manifest, and the objects it names that are missing or do not verify.
async fn verify_newest(store: &dyn ObjectStore) -> Option<(manifest::Manifest, Vec<String>)> {
    let m = backup::newest_manifest(store).await.ok()?.manifest?;
    let mut bad = Vec::new();
    for (path, entry) in &m.files {
        let body = match store.get(&ObjPath::from(path.as_str())).await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        if !body.is_some_and(|b| manifest::verify(entry, &b)) {
            bad.push(path.clone());
        }
    }
    Some((m, bad))
}

/// A set's slot: kind, resolution, start.
type Slot = (String, String, DateTime<Utc>);

/// The complete sets of a manifest: slot → (end, sha256).
fn complete(files: &BTreeMap<String, FileEntry>) -> BTreeMap<Slot, (DateTime<Utc>, String)> {
    files
        .values()
        .filter(|e| e.data_end >= e.end)
        .map(|e| {
            (
                (format!("{:?}", e.kind), e.resolution.to_string(), e.start),
                (e.end, e.sha256.clone()),
            )
        })
        .collect()
}

/// What [`damage`] overwrites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The newest manifest.
    Manifest,
    /// A set the newest manifest names.
    AnySet,
    /// A set the newest manifest names whose window a query reads.
    QueriedSet,
}

/// Overwrites an object of the newest manifest with other bytes (a set's: flipped or cut to
/// half; the manifest's: JSON that does not parse). Returns its path, and the manifest's
/// generation when it was the manifest.
async fn damage(
    store: &dyn ObjectStore,
    rng: &mut Rng,
    target: Target,
    queried: &[Window],
) -> Option<(String, Option<u64>)> {
    let newest = backup::newest_manifest(store).await.ok()?.manifest?;
    if target == Target::Manifest {
        let path = manifest::manifest_path(newest.generation);
        store
            .put(
                &path,
                PutPayload::from_static(b"{\"generation\": 1, \"term\": trunc"),
            )
            .await
            .ok()?;
        return Some((path.to_string(), Some(newest.generation)));
    }
    // The set that answers a queried window: allocations, of exactly that window.
    let read = |e: &FileEntry| {
        e.kind == SetKind::Allocations
            && queried.iter().any(|w| e.start == w.start && e.end == w.end)
    };
    let files: Vec<&String> = if target == Target::QueriedSet {
        newest
            .files
            .iter()
            .filter(|(_, e)| read(e))
            .map(|(p, _)| p)
            .collect()
    } else {
        newest.files.keys().collect()
    };
    if files.is_empty() {
        return None;
    }
    let path = files[rng.below(files.len() as u64) as usize].clone();
    let p = ObjPath::from(path.as_str());
    let mut body = store.get(&p).await.ok()?.bytes().await.ok()?.to_vec();
    if rng.below(2) == 0 && body.len() > 1 {
        body.truncate(body.len() / 2);
    } else {
        for (i, b) in body.iter_mut().enumerate() {
            *b ^= (rng.next() as u8) | ((i == 0) as u8);
        }
    }
    store.put(&p, PutPayload::from(body)).await.ok()?;
    Some((path, None))
}

// ---------------------------------------------------------------------------------------------
// The run.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    TermLeader,
    PauseLeader,
    ApiserverRestart,
    BucketDown,
    Bucket500,
    BucketSlow,
    DamageObject,
    DamageManifest,
    Isolate,
    NewPod,
}

const FAULTS: [Fault; 11] = [
    Fault::KillLeader,
    Fault::TermLeader,
    Fault::PauseLeader,
    Fault::ApiserverRestart,
    Fault::BucketDown,
    Fault::Bucket500,
    Fault::BucketSlow,
    Fault::DamageObject,
    Fault::DamageManifest,
    Fault::Isolate,
    Fault::NewPod,
];

fn parse_duration(text: &str) -> Duration {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("CHAOS_DURATION={text:?}: expected seconds like 120s or 2m"));
    match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => panic!("CHAOS_DURATION={text:?}: expected seconds like 120s or 2m"),
    }
}

struct Cluster {
    replicas: Vec<Replica>,
    watches: Vec<Arc<Watch>>,
    pipes: Vec<Pipe>,
    proxies: Vec<FaultProxy>,
    plane: Arc<Mutex<PrivateTestenv>>,
    log: EventLog,
    /// The windows the queries read.
    queried: [Window; 2],
}

impl Cluster {
    fn up(&self, i: usize) {
        self.watches[i].set(Phase::Up {
            port: self.replicas[i].port,
            since: Instant::now(),
        });
    }

    /// The replica that reports writes enabled, if one does within `within`.
    async fn leader(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if self.watches[i].get().0 != Phase::Out
                    && r.status().await.is_some_and(|s| s.writes_enabled())
                {
                    return Some(i);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn restart(&mut self, i: usize) {
        self.replicas[i].restart().await;
        self.up(i);
        self.log
            .note(format!("{} restarted", self.replicas[i].identity()));
    }

    async fn plane(&self, start: bool) {
        let plane = self.plane.clone();
        tokio::task::spawn_blocking(move || {
            let mut p = plane.lock().unwrap_or_else(|e| e.into_inner());
            if start {
                p.restart();
            } else {
                p.stop();
            }
        })
        .await
        .expect("control plane task");
    }

    fn bucket(&self, mode: Mode) {
        for p in &self.proxies {
            p.set_mode(mode);
        }
    }

    /// Injects one fault and heals it; returns what it did, or `None` when it could not apply.
    async fn inject(
        &mut self,
        fault: Fault,
        rng: &mut Rng,
        admin: &dyn ObjectStore,
        damaged: &Mutex<HashSet<u64>>,
    ) -> Option<String> {
        let t = Timings::FAST;
        match fault {
            Fault::KillLeader | Fault::TermLeader | Fault::PauseLeader => {
                let l = self.leader(Duration::from_secs(10)).await?;
                let id = self.replicas[l].identity().to_string();
                self.watches[l].set(Phase::Out);
                match fault {
                    Fault::KillLeader => {
                        self.replicas[l].kill();
                        self.log.note(format!("kill -9 {id} (leader)"));
                        tokio::time::sleep(rng.millis(1000, 4000)).await;
                        self.restart(l).await;
                    }
                    Fault::TermLeader => {
                        self.replicas[l].signal("TERM");
                        self.log.note(format!("SIGTERM {id} (leader)"));
                        let status = self.replicas[l].wait_exit(Duration::from_secs(40)).await;
                        self.log.note(format!("{id} exited: {status}"));
                        self.restart(l).await;
                    }
                    _ => {
                        let pause = t.lease + t.retry + rng.millis(500, 3000);
                        self.replicas[l].signal("STOP");
                        self.log
                            .note(format!("SIGSTOP {id} (leader) for {pause:?}"));
                        tokio::time::sleep(pause).await;
                        self.replicas[l].signal("CONT");
                        self.log.note(format!("SIGCONT {id}"));
                        tokio::time::sleep(RESUME_GRACE).await;
                        self.up(l);
                    }
                }
                Some(format!("{fault:?} {id}"))
            }
            Fault::ApiserverRestart => {
                let down = rng.millis(1000, 6000);
                self.log.note(format!("apiserver stopping, for {down:?}"));
                self.plane(false).await;
                tokio::time::sleep(down).await;
                self.plane(true).await;
                self.log.note("apiserver started again");
                Some(format!("{fault:?}"))
            }
            Fault::BucketDown | Fault::Bucket500 | Fault::BucketSlow => {
                let (mode, len) = match fault {
                    Fault::BucketDown => (Mode::Down, rng.millis(2000, 8000)),
                    Fault::Bucket500 => (Mode::Error500, rng.millis(2000, 8000)),
                    _ => (Mode::Slow(rng.millis(300, 1500)), rng.millis(3000, 8000)),
                };
                self.bucket(mode);
                self.log.note(format!("bucket {mode:?} for {len:?}"));
                tokio::time::sleep(len).await;
                self.bucket(Mode::Pass);
                self.log.note("bucket back");
                Some(format!("{fault:?}"))
            }
            Fault::DamageObject | Fault::DamageManifest => {
                let target = match (fault, rng.below(2)) {
                    (Fault::DamageManifest, _) => Target::Manifest,
                    (_, 0) => Target::QueriedSet,
                    _ => Target::AnySet,
                };
                let (path, generation) = damage(admin, rng, target, &self.queried).await?;
                if let Some(g) = generation {
                    damaged.lock().unwrap_or_else(|e| e.into_inner()).insert(g);
                }
                self.log.note(format!("damaged {path}"));
                Some(format!("{fault:?} {path}"))
            }
            Fault::NewPod => {
                // A follower replaced by a new pod: `kill -9`, its local store gone, started
                // again; it loads every set from the bucket, damaged ones included.
                let leader = self.leader(Duration::from_secs(5)).await;
                let followers: Vec<usize> = (0..REPLICAS).filter(|i| Some(*i) != leader).collect();
                let i = followers[rng.below(followers.len() as u64) as usize];
                let id = self.replicas[i].identity().to_string();
                self.watches[i].set(Phase::Out);
                self.replicas[i].kill();
                std::fs::remove_dir_all(self.replicas[i].etl_dir())
                    .expect("remove the local store");
                self.log.note(format!("kill -9 {id}, local store removed"));
                // Half the time with a set the queries read damaged just before, so the new
                // pod loads it before the leader's scrub has put it back.
                if rng.below(2) == 0
                    && let Some((path, _)) =
                        damage(admin, rng, Target::QueriedSet, &self.queried).await
                {
                    self.log.note(format!("damaged {path}"));
                }
                self.restart(i).await;
                Some(format!("{fault:?} {id}"))
            }
            Fault::Isolate => {
                let i = rng.below(REPLICAS as u64) as usize;
                let id = self.replicas[i].identity().to_string();
                let len = t.lease + t.retry + rng.millis(500, 4000);
                self.pipes[i].set_cut(true);
                self.proxies[i].set_mode(Mode::Down);
                self.log.note(format!(
                    "{id} cut off from the apiserver and the bucket for {len:?}"
                ));
                tokio::time::sleep(len).await;
                self.pipes[i].set_cut(false);
                self.proxies[i].set_mode(Mode::Pass);
                self.log.note(format!("{id} reconnected"));
                Some(format!("{fault:?} {id}"))
            }
        }
    }
}

fn read_kubeconfig(path: &Path) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(path).expect("kubeconfig");
    serde_yaml_ng::from_str(&text).expect("kubeconfig YAML")
}

/// The apiserver's address in the kubeconfig at `path`.
fn apiserver(path: &Path) -> SocketAddr {
    read_kubeconfig(path)["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server")
        .trim_start_matches("https://")
        .parse()
        .expect("server is https://127.0.0.1:PORT")
}

/// The kubeconfig at `path` with its server's port replaced by `port`, written to `to`.
fn kubeconfig_via(path: &Path, port: u16, to: &Path) {
    let mut kc = read_kubeconfig(path);
    kc["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    std::fs::write(to, serde_yaml_ng::to_string(&kc).expect("YAML")).expect("write kubeconfig");
}

fn summary_path() -> PathBuf {
    repo().join("target/chaos/summary.txt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_under_random_faults_lose_nothing_and_never_serve_wrong_data() {
    let seed: u64 = match std::env::var("CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED={s:?}: expected an unsigned integer")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64,
    };
    let duration = std::env::var("CHAOS_DURATION")
        .map(|d| parse_duration(&d))
        .unwrap_or(Duration::from_secs(45));
    let log = EventLog {
        start: Instant::now(),
        lines: Arc::default(),
    };
    log.note(format!(
        "seed {seed}, {duration:?} of faults (replay: scripts/chaos --seed {seed} --duration {}s)",
        duration.as_secs()
    ));
    let mut rng = Rng(seed);
    let queried = windows(Utc::now());

    // The control plane, the bucket, and each replica's ways to them.
    let plane = tokio::task::spawn_blocking(PrivateTestenv::start)
        .await
        .expect("control plane");
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = stores::minio_bucket().await;
    let admin = stores::minio_store(&bucket);
    let servers = stores::servers();
    let lease = lease_name("chaos");
    let mut pipes = Vec::new();
    let mut proxies = Vec::new();
    let mut specs = Vec::new();
    for i in 1..=REPLICAS {
        let id = format!("r{i}");
        let kubeconfig = dir.path().join(format!("{id}.kubeconfig"));
        let pipe = Pipe::start(apiserver(&plane.env.replica)).await;
        kubeconfig_via(&plane.env.replica, pipe.port, &kubeconfig);
        pipes.push(pipe);
        let proxy = FaultProxy::start(&servers.minio_endpoint);
        let host = proxy.url.trim_start_matches("http://").to_string();
        let secret = dir.path().join(format!("{id}.yaml"));
        std::fs::write(
            &secret,
            format!(
                "type: S3\nconfig:\n  bucket: \"{bucket}\"\n  endpoint: \"{host}\"\n  insecure: true\n  access_key: \"{}\"\n  secret_key: \"{}\"\n  region: {}\n",
                servers.minio_access_key,
                servers.minio_secret_key,
                stores::S3_REGION
            ),
        )
        .expect("secret");
        proxies.push(proxy);
        specs.push(
            ReplicaSpec::new(&id, &lease, &kubeconfig, dir.path())
                .bucket_config(&secret)
                .args(&DEMO)
                .args(&["--scrub-interval", "5s"]),
        );
    }

    // The reference: one standalone replica, undisturbed, on a folder bucket of its own.
    let reference_bucket = dir.path().join("reference-bucket");
    let reference_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("port").port()
    };
    let mut reference = std::process::Command::new(binary())
        .args([
            "--identity",
            "reference",
            "--listen",
            &format!("127.0.0.1:{reference_port}"),
        ])
        .arg("--bucket-dir")
        .arg(&reference_bucket)
        .arg("--etl-dir")
        .arg(dir.path().join("reference-etl"))
        .args(["--backfill", "1d", "--etl-interval", "2s"])
        .args(DEMO)
        .env("RUST_LOG", "warn")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("reference.log")).expect("log"))
        .spawn()
        .expect("start the reference");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reference_guard = KillOnDrop(&mut reference);

    let mut replicas = Vec::new();
    for spec in specs {
        replicas.push(Replica::start(spec).await);
    }
    let watches: Vec<Arc<Watch>> = replicas
        .iter()
        .map(|r| {
            Arc::new(Watch {
                identity: r.identity().to_string(),
                phase: Mutex::new((
                    Phase::Up {
                        port: r.port,
                        since: Instant::now(),
                    },
                    0,
                )),
            })
        })
        .collect();
    let mut cluster = Cluster {
        replicas,
        watches,
        pipes,
        proxies,
        plane: Arc::new(Mutex::new(plane)),
        log: log.clone(),
        queried,
    };
    let first = cluster
        .leader(Duration::from_secs(30))
        .await
        .expect("a first leader within 30 s");
    log.note(format!("{} leads", cluster.replicas[first].identity()));

    // The reference's answers to the two windows (its backfill done first).
    let http = reqwest::Client::builder()
        .timeout(QUERY_BOUND)
        .build()
        .expect("HTTP client");
    let queries: Vec<String> = queried.iter().map(query).collect();
    let mut expected: Vec<BTreeMap<String, u64>> = Vec::new();
    for q in &queries {
        let url = format!("http://127.0.0.1:{reference_port}{q}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let want = loop {
            if let Answer::Totals(t) = ask(&http, &url).await
                && !t.is_empty()
            {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "the reference did not answer {q} within 60 s:\n{}",
                tail(&dir.path().join("reference.log"), 30)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        expected.push(want);
    }
    let expected = Arc::new(expected);
    // Every replica serves them before the faults start (the first leader's backfill is done
    // and every follower has loaded it).
    for r in &cluster.replicas {
        for (q, want) in queries.iter().zip(expected.iter()) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Answer::Totals(t) = ask(&http, &r.url(q)).await
                    && &t == want
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer {q} as the reference does within 60 s",
                    r.identity()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    log.note("every replica answers as the reference does: faults start");

    // The checkers.
    let findings: Shared = Arc::default();
    let damaged: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, w) in cluster.watches.iter().enumerate() {
        {
            let (w, f, log, http, stop) = (
                w.clone(),
                findings.clone(),
                log.clone(),
                http.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let (phase, epoch) = w.get();
                    let Phase::Up { port, since } = phase else {
                        continue;
                    };
                    let sent = Instant::now();
                    let status = http
                        .get(format!("http://127.0.0.1:{port}/model/ha/status"))
                        .send()
                        .await;
                    let status = match status {
                        Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().await.ok(),
                        _ => None,
                    };
                    let answered = Instant::now();
                    if w.get().1 != epoch || sent < since + RESUME_GRACE {
                        continue;
                    }
                    let mut g = f.lock().unwrap_or_else(|e| e.into_inner());
                    g.status_samples += 1;
                    match status {
                        Some(s) if s["writesEnabled"] == true => {
                            let term = s["term"].as_u64().unwrap_or(0);
                            g.writers.push((i, term, sent, answered));
                            g.term_writers
                                .entry(term)
                                .or_default()
                                .insert(w.identity.clone());
                        }
                        Some(_) => {}
                        None => {
                            drop(g);
                            violation(
                                &f,
                                &log,
                                format!("{} gave no status within {QUERY_BOUND:?}", w.identity),
                            );
                        }
                    }
                }
            }));
        }
        let (w, f, log, http, stop, expected) = (
            cluster.watches[i].clone(),
            findings.clone(),
            log.clone(),
            http.clone(),
            stop.clone(),
            expected.clone(),
        );
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            // The process (by its phase's start) that has answered 200.
            let mut loaded: Option<Instant> = None;
            while !stop.is_cancelled() {
                tick.tick().await;
                let (phase, epoch) = w.get();
                let Phase::Up { port, since } = phase else {
                    continue;
                };
                let q = n % queries.len();
                n += 1;
                let sent = Instant::now();
                let answer = ask(&http, &format!("http://127.0.0.1:{port}{}", queries[q])).await;
                let took = sent.elapsed();
                let mut g = f.lock().unwrap_or_else(|e| e.into_inner());
                if w.get().1 != epoch {
                    g.queries_unjudged += 1;
                    continue;
                }
                g.slowest_query = g.slowest_query.max(took);
                let problem = match answer {
                    Answer::Totals(t) if t == expected[q] => {
                        g.queries_equal += 1;
                        loaded = Some(since);
                        None
                    }
                    Answer::Totals(t) => Some(format!(
                        "{} answered {} with totals that differ from the reference: {t:?} vs {:?}",
                        w.identity, queries[q], expected[q]
                    )),
                    Answer::Unavailable => {
                        g.queries_unavailable += 1;
                        loaded = Some(since);
                        None
                    }
                    Answer::NotReady(_) if loaded != Some(since) => {
                        g.queries_not_ready += 1;
                        None
                    }
                    Answer::NotReady(why) => Some(format!(
                        "{} answered 503 after it had answered 200: {why}",
                        w.identity
                    )),
                    Answer::Other(what) => Some(format!("{}: {what} ({took:?})", w.identity)),
                };
                drop(g);
                if let Some(p) = problem {
                    violation(&f, &log, p);
                }
            }
        }));
    }
    {
        let (f, log, stop, admin, damaged) = (
            findings.clone(),
            log.clone(),
            stop.clone(),
            admin.clone(),
            damaged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                check_bucket(admin.as_ref(), &f, &log, &damaged).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }

    // The faults.
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let faults_end = Instant::now() + duration;
    while Instant::now() < faults_end {
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        match cluster
            .inject(fault, &mut rng, admin.as_ref(), &damaged)
            .await
        {
            Some(_) => *injected.entry(fault).or_default() += 1,
            None => log.note(format!("{fault:?}: nothing to apply it to now")),
        }
        tokio::time::sleep(rng.millis(500, 2500)).await;
    }
    log.note("faults over: every fault healed");

    // After the faults: a leader writes, the newest manifest verifies, the sets equal the
    // reference's.
    let leader = cluster.leader(Duration::from_secs(60)).await;
    let mut end_problems = Vec::new();
    let mut compared = 0usize;
    match leader {
        None => end_problems
            .push("no replica had writes enabled within 60 s of the faults' end".to_string()),
        Some(l) => {
            log.note(format!(
                "{} leads after the faults",
                cluster.replicas[l].identity()
            ));
            let reference_store =
                cost_model::storage::bucket::filesystem(reference_bucket.to_str().expect("path"))
                    .expect("reference bucket");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let mut problems = Vec::new();
                match (
                    verify_newest(admin.as_ref()).await,
                    verify_newest(reference_store.as_ref()).await,
                ) {
                    (Some((got, bad)), Some((want, _))) => {
                        if !bad.is_empty() {
                            problems.push(format!("the newest manifest (generation {}) names objects that do not verify: {bad:?}", got.generation));
                        }
                        let cutoff = got.updated.min(want.updated) - TimeDelta::seconds(30);
                        let (got_sets, want_sets) = (complete(&got.files), complete(&want.files));
                        compared = 0;
                        for (slot, (end, sha)) in &want_sets {
                            match got_sets.get(slot) {
                                Some((_, s)) if s == sha => compared += 1,
                                Some(_) => {
                                    problems.push(format!("{slot:?} differs from the reference"))
                                }
                                None if *end <= cutoff => problems.push(format!(
                                    "{slot:?} (complete in the reference) is missing"
                                )),
                                None => {}
                            }
                        }
                    }
                    (got, want) => problems.push(format!(
                        "no readable newest manifest: chaos bucket {}, reference {}",
                        got.is_some(),
                        want.is_some()
                    )),
                }
                if problems.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    end_problems = problems;
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }

    // The verdict.
    let mut g = findings.lock().unwrap_or_else(|e| e.into_inner());
    let writers = std::mem::take(&mut g.writers);
    for a in &writers {
        for b in &writers {
            if a.0 < b.0 && a.2 <= b.3 && b.2 <= a.3 {
                g.violations.push(format!(
                    "{} (term {}) and {} (term {}) reported writesEnabled at overlapping times",
                    cluster.watches[a.0].identity, a.1, cluster.watches[b.0].identity, b.1
                ));
            }
        }
    }
    let doubled: Vec<String> = g
        .term_writers
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(t, ids)| format!("term {t} reported writable by {ids:?}"))
        .collect();
    g.violations.extend(doubled);
    g.violations.extend(end_problems);
    if g.queries_equal == 0 {
        g.violations
            .push("no query answered with data: the run checked nothing".into());
    }
    let faults: Vec<String> = injected.iter().map(|(f, n)| format!("{f:?}×{n}")).collect();
    let total: u32 = injected.values().sum();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "chaos: seed {seed}, {}s: {total} faults ({}); checks: {} status samples ({} writable, terms {:?}), {} queries equal to the reference, {} flagged unavailable, {} not ready, slowest {:.1?}; {} bucket polls, {} manifests; {compared} complete sets equal to the reference; {}",
        duration.as_secs(),
        faults.join(", "),
        g.status_samples,
        writers.len(),
        g.term_writers.keys().collect::<Vec<_>>(),
        g.queries_equal,
        g.queries_unavailable,
        g.queries_not_ready,
        g.slowest_query,
        g.bucket_polls,
        g.manifests.len(),
        if g.violations.is_empty() {
            "every invariant held".to_string()
        } else {
            format!("{} VIOLATIONS", g.violations.len())
        }
    );
    let _ = std::fs::create_dir_all(summary_path().parent().expect("parent"));
    let _ = std::fs::write(summary_path(), format!("{summary}\n"));
    if !g.violations.is_empty() {
        let events = log
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        let shown: Vec<&String> = g.violations.iter().take(30).collect();
        for r in &cluster.replicas {
            eprintln!("---- {} log tail ----\n{}", r.identity(), r.log_tail(40));
        }
        eprintln!("---- events (seed {seed}) ----\n{events}\n---- violations ----");
        for v in shown {
            eprintln!("{v}");
        }
        eprintln!("{summary}");
        panic!("chaos run with seed {seed} broke an invariant (see above)");
    }
    eprintln!("{summary}");
}
