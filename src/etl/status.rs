//! What the ETL writer reports about its source, for `/model/etl/status` and the status page:
//! whether the source answers, since when it fails and why, the windows it holds no data for,
//! and the work still queued.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The ETL's progress, shared between the writer and the API.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `demo` or `prometheus`.
    pub source: String,
    /// Whether this replica builds (it leads and writes are enabled).
    pub building: bool,
    /// When a batch was last built and written.
    pub last_success: Option<DateTime<Utc>>,
    /// Why the last batch failed, while it keeps failing.
    pub last_error: Option<String>,
    /// Since when batches fail.
    pub failing_since: Option<DateTime<Utc>>,
    /// Windows (`<resolution> <start>`) the source answered for with no data, so nothing was
    /// published for them: a gap in coverage, not zero cost.
    pub windows_without_data: std::collections::BTreeSet<String>,
    /// Backfill batches (days) still to build in the current run.
    pub backfill_pending: usize,
    /// Repair batches (days) queued.
    pub repairs_pending: usize,
    /// Queries the source has issued (retries included).
    pub queries_issued: u64,
}

/// A handle on the shared progress.
#[derive(Clone, Debug, Default)]
pub struct EtlProgress(Arc<Mutex<Progress>>);

impl EtlProgress {
    /// Progress of a writer reading `source`.
    pub fn new(source: &str) -> Self {
        Self(Arc::new(Mutex::new(Progress {
            source: source.to_string(),
            ..Progress::default()
        })))
    }

    /// A copy of the progress now.
    pub fn get(&self) -> Progress {
        self.0.lock().expect("progress lock").clone()
    }

    /// Changes the progress.
    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.0.lock().expect("progress lock"));
    }

    /// A batch was written.
    pub fn succeeded(&self) {
        self.update(|p| {
            p.last_success = Some(Utc::now());
            p.last_error = None;
            p.failing_since = None;
        });
    }

    /// A batch failed.
    pub fn failed(&self, error: &str) {
        self.update(|p| {
            p.last_error = Some(error.to_string());
            p.failing_since.get_or_insert_with(Utc::now);
        });
    }

    /// The source had no data for these windows.
    pub fn without_data(&self, windows: impl IntoIterator<Item = String>) {
        self.update(|p| {
            p.windows_without_data.extend(windows);
        });
    }

    /// The source now has data for this window.
    pub fn has_data(&self, window: &str) {
        self.update(|p| {
            p.windows_without_data.remove(window);
        });
    }
}
