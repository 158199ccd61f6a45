//! Storage: the ETL file store, the bucket backup, the loaded snapshot, and the leader/follower
//! rules that guard them (the `Storage` actor), plus the follower's `BackupPoller`.

pub mod backup;
pub mod bucket;
mod controller;
#[cfg(feature = "test-support")]
pub mod faulty;
pub mod filestore;
pub mod group;
pub mod manifest;
mod parallel;
pub mod parquet;
mod poller;
pub mod readiness;
pub mod snapshot;

pub use controller::{
    AwaitWritable, Coverage, CurrentSnapshot, Drain, ElectionEvents, GetStorageStatus,
    MissingObject, NotWritable, PollBase, ServingSnapshot, SnapshotReady, Storage, StorageConfig,
    StorageStatus, WriteOutcome, WriteSets,
};
#[cfg(feature = "test-support")]
pub use controller::{CollectGarbageNow, ReadBackup, ScrubNow};
pub use poller::BackupPoller;
#[cfg(feature = "test-support")]
pub use poller::PollNow;
pub use readiness::NotReady;
pub use snapshot::Snapshot;
