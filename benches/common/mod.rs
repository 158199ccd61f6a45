//! What the benches that run the real binary share: knobs from the environment, a replica
//! process (its log, RSS and CPU time from `/proc`, its ordered stop), and polling its API.
#![allow(dead_code, reason = "each bench uses part of it")]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cost-model");

/// A knob from the environment: its value, or `default` when unset; a clear error when set to
/// something that does not parse.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?}: not a valid value")),
        Err(_) => Ok(default),
    }
}

/// A comma list knob.
pub fn list_knob<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<Vec<T>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={text:?}: {s:?} is not a valid value"))
        })
        .collect()
}

/// A replica process with its log in a file; killed if dropped while running.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub pid: u32,
}

impl Proc {
    pub fn spawn(args: &[String], log: PathBuf, nice: bool) -> anyhow::Result<Proc> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = if nice {
            let mut c = Command::new("nice");
            c.args(["-n", "10", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("LEADER_FOLLOWER_ENABLED")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| log.display().to_string())?)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot start {BIN}"))?;
        let pid = child.id().context("the child has no pid")?;
        Ok(Proc {
            child,
            port,
            log,
            pid,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails (with the log's tail) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the replica exited ({status}); log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// `VmRSS` and `VmHWM` in bytes.
    pub fn rss(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the replica's /proc status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Resets `VmHWM` to the current RSS (Linux's `clear_refs` value 5), so the next peak read
    /// is the peak since now.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid);
        std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .context("reading the replica's /proc stat")?;
        // Fields after the command name (which may hold spaces, so after its closing paren):
        // state is field 3, utime 14 and stime 15, in clock ticks (USER_HZ, 100 on Linux).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(u), Some(s)) => Ok(Duration::from_millis((u + s) * 10)),
            _ => bail!("cannot read utime and stime of {}", self.pid),
        }
    }

    /// SIGTERM, then waits for the exit (its ordered shutdown).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => bail!("replica {} did not exit within 120 s of SIGTERM", self.pid),
        }
    }
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// Polls `path` every `every` until `ok` accepts the JSON, for at most `within`; fails early if
/// the process dies.
pub async fn wait_json(
    p: &mut Proc,
    client: &reqwest::Client,
    path: &str,
    every: Duration,
    within: Duration,
    mut ok: impl FnMut(u16, &serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Some((status, body)) = get_json(client, &p.url(path)).await
            && ok(status, &body)
        {
            return Ok(body);
        }
        p.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "timed out after {within:?} waiting on {path}; log {}:\n{}",
                p.log.display(),
                p.log_tail()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// A sample from the follower's `/metrics`, or 0.
pub async fn metric(client: &reqwest::Client, p: &Proc, sample: &str) -> anyhow::Result<f64> {
    let text = client.get(p.url("/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)
}

pub fn sha256_file(path: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
