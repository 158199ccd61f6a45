//! Why a replica cannot answer queries: the one typed reason behind `/readyz`, the
//! `notReadyReason` of `/model/ha/status`, the status page's banner and every 503 a query gets
//! for want of data. Decided by `Storage`, which alone knows what it can serve.

use std::sync::Arc;

use super::backup::{BackupError, PublishError};

/// The local file store's generation when it is held back because the bucket has not vouched
/// for it; prints as the sentence that says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBack(pub Option<u64>);

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(g) => write!(
                f,
                "; the local file store (generation {g}) is not served until the bucket vouches for it"
            ),
            None => Ok(()),
        }
    }
}

/// The local file store could not be written when probed at start.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the ETL file store (--etl-dir {path}) cannot be written: {source}")]
pub struct EtlDirError {
    /// The folder.
    pub path: String,
    /// What the file system said.
    pub source: Arc<std::io::Error>,
}

/// Why this replica cannot answer queries now.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NotReady {
    /// A generation is loaded but none of its sets could be.
    #[error(
        "none of the {sets} sets named by generation {generation} could be loaded (first: {first}); retrying"
    )]
    Unloadable {
        /// The generation.
        generation: u64,
        /// How many sets it names.
        sets: usize,
        /// The first set's path and problem.
        first: String,
    },
    /// Leading, but the bucket has not been read since promotion, and the local store is not
    /// this replica's own: what it would answer could miss what the bucket holds.
    #[error(
        "leading, but the bucket has not been read since promotion, so answers could miss what it holds (building into the local store meanwhile; followers answer): {0}"
    )]
    Unreconciled(PublishError),
    /// Leading, reading the bucket before enabling writes.
    #[error("leading: reading the bucket before enabling writes")]
    Promoting,
    /// Leading, but no ETL set could be written yet.
    #[error("leading, but no ETL set could be written yet{}: {error}", .etl_dir.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    WritesFailing {
        /// The last write's error.
        error: PublishError,
        /// Why the local store cannot be written, if that was found at start.
        etl_dir: Option<EtlDirError>,
    },
    /// Leading, the first sets not built yet.
    #[error("leading: building the first ETL sets")]
    Building,
    /// Following, but the bucket cannot be read.
    #[error("following, but the bucket cannot be read: {error}{held_back}")]
    FollowerCannotReadBucket {
        /// The last poll's error.
        error: BackupError,
        /// The local store held back.
        held_back: HeldBack,
    },
    /// Following, and the bucket holds no manifest at all.
    #[error("following, but the bucket holds no backup yet{held_back}")]
    BucketEmpty {
        /// The local store held back.
        held_back: HeldBack,
    },
    /// Following, the first poll not done yet.
    #[error("following: waiting for the first bucket poll{held_back}")]
    FirstPoll {
        /// The local store held back.
        held_back: HeldBack,
    },
}

impl NotReady {
    /// A short, fixed name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            NotReady::Unloadable { .. } => "unloadable",
            NotReady::Unreconciled(_) | NotReady::FollowerCannotReadBucket { .. } => {
                "bucket_unreadable"
            }
            NotReady::Promoting => "promoting",
            NotReady::WritesFailing { .. } => "writes_failing",
            NotReady::Building => "building",
            NotReady::BucketEmpty { .. } => "bucket_empty",
            NotReady::FirstPoll { .. } => "first_poll",
        }
    }
}
