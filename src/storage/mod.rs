//! Storage: the ETL file store, the bucket backup, the loaded snapshot, and the leader/follower
//! rules that guard them (the `Storage` actor), plus the follower's `BackupPoller`.

pub mod backup;
pub mod bucket;
mod controller;
pub mod faulty;
pub mod filestore;
pub mod manifest;
mod poller;
pub mod snapshot;

pub use controller::{
    AwaitWritable, CurrentSnapshot, Drain, Fenced, GetStorageStatus, NotWritable, OnFenced,
    ReadBackup, SnapshotReady, Storage, StorageConfig, StorageStatus, WriteOutcome, WriteSets,
};
pub use poller::{BackupPoller, PollNow};
pub use snapshot::Snapshot;
