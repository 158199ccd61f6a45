//! The bucket layout and the manifest that names the current set of objects.
//!
//! ```text
//! etl/v1/allocations/1d/<start>-<end>.<hash>.json.zst   immutable, content-addressed
//! etl/v1/assets/1h/...
//! etl/v1/manifests/<generation, zero-padded>.json
//! ```
//! A manifest is published by creating the next generation's file with create-if-absent, so of
//! two writers racing for one generation exactly one wins: that is the fencing compare-and-swap.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{EtlSet, Resolution, SetKind};

/// Directory of manifests, relative to the bucket prefix.
pub const MANIFEST_DIR: &str = "etl/v1/manifests";
/// Directory of set objects.
pub const OBJECT_DIR: &str = "etl/v1";

/// One object a manifest references.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Hex sha256 of the stored (compressed) bytes.
    pub sha256: String,
    /// Size of the stored bytes.
    pub bytes: u64,
    /// What the object holds, so readers need not parse paths.
    pub kind: SetKind,
    /// Resolution of the set.
    pub resolution: Resolution,
    /// Start of the set's window.
    pub start: DateTime<Utc>,
    /// End of the set's window.
    pub end: DateTime<Utc>,
    /// How far the set's data reaches (`end` once the window is complete).
    pub data_end: DateTime<Utc>,
}

impl FileEntry {
    /// The slot this file fills: one set per kind, resolution and window start.
    pub fn slot(&self) -> (SetKind, Resolution, DateTime<Utc>) {
        (self.kind, self.resolution, self.start)
    }
}

/// The manifest of one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// This manifest's generation, the number in its file name: one more than the manifest it
    /// was built on.
    pub generation: u64,
    /// The writer's fencing token.
    pub term: u64,
    /// The writer's identity.
    pub writer: String,
    /// When the writer published it.
    pub updated: DateTime<Utc>,
    /// The writer's cluster id (`--cluster-id`): a manifest of another cluster is never merged
    /// into this one's lineage. Empty in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Object path (relative to the bucket prefix) to entry.
    pub files: BTreeMap<String, FileEntry>,
}

/// Path of the manifest of `generation`.
pub fn manifest_path(generation: u64) -> Path {
    Path::from(format!("{MANIFEST_DIR}/{generation:020}.json"))
}

/// The generation a manifest path names, if it is one.
pub fn parse_manifest_path(path: &Path) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A set encoded for storage: its path, bytes and manifest entry.
pub struct Encoded {
    /// Object path, relative to the bucket prefix.
    pub path: String,
    /// The zstd-compressed JSON to store.
    pub body: bytes::Bytes,
    /// The manifest entry naming the object.
    pub entry: FileEntry,
}

/// Encodes a set as zstd-compressed JSON under its content-addressed path.
pub fn encode(set: &EtlSet) -> Result<Encoded, std::io::Error> {
    let json = serde_json::to_vec(set)?;
    let body = bytes::Bytes::from(zstd::encode_all(json.as_slice(), 3)?);
    let sha = hex::encode(Sha256::digest(&body));
    let w = set.window();
    let path = format!(
        "{OBJECT_DIR}/{}/{}/{}-{}.{}.json.zst",
        set.kind().as_str(),
        set.resolution(),
        w.start.timestamp(),
        w.end.timestamp(),
        &sha[..16]
    );
    let entry = FileEntry {
        sha256: sha,
        bytes: body.len() as u64,
        kind: set.kind(),
        resolution: set.resolution(),
        start: w.start,
        end: w.end,
        data_end: set.data_end(),
    };
    Ok(Encoded { path, body, entry })
}

/// Why a stored object could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not hash to what the manifest says: corrupt or tampered with.
    #[error("sha256 mismatch: manifest says {expected}, object hashes to {actual}")]
    Checksum {
        /// Hex sha256 the manifest entry gives.
        expected: String,
        /// Hex sha256 of the fetched bytes.
        actual: String,
    },
    /// The bytes hash right but do not decode.
    #[error("undecodable set: {0}")]
    Format(String),
}

/// Whether `body` hashes to what `entry` says.
pub fn verify(entry: &FileEntry, body: &[u8]) -> bool {
    hex::encode(Sha256::digest(body)) == entry.sha256
}

/// Verifies and decodes an object fetched for `entry`.
pub fn decode(entry: &FileEntry, body: &[u8]) -> Result<EtlSet, DecodeError> {
    let actual = hex::encode(Sha256::digest(body));
    if actual != entry.sha256 {
        return Err(DecodeError::Checksum {
            expected: entry.sha256.clone(),
            actual,
        });
    }
    let json = zstd::decode_all(body).map_err(|e| DecodeError::Format(e.to_string()))?;
    let set: EtlSet =
        serde_json::from_slice(&json).map_err(|e| DecodeError::Format(e.to_string()))?;
    if set.kind() != entry.kind
        || set.resolution() != entry.resolution
        || set.window().start != entry.start
    {
        return Err(DecodeError::Format(
            "object does not hold the set its manifest entry names".into(),
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocationSet, Window};
    use chrono::TimeZone;

    fn set() -> EtlSet {
        let s = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let w = Window::new(s, s + chrono::Duration::hours(1));
        EtlSet::Allocations(AllocationSet {
            window: w,
            resolution: Resolution::Hour,
            data_end: w.end,
            allocations: vec![],
        })
    }

    #[test]
    fn manifest_paths_round_trip() {
        assert_eq!(parse_manifest_path(&manifest_path(42)), Some(42));
        assert_eq!(
            parse_manifest_path(&Path::from("etl/v1/manifests/42.json")),
            None
        );
        assert_eq!(
            parse_manifest_path(&Path::from("etl/v1/manifests/0000000000000000004x.json")),
            None
        );
    }

    #[test]
    fn encode_decode_round_trip_and_detect_corruption() {
        let e = encode(&set()).unwrap();
        assert!(
            e.path
                .starts_with("etl/v1/allocations/1h/1795132800-1795136400.")
        );
        assert_eq!(decode(&e.entry, &e.body).unwrap(), set());
        let mut bad = e.body.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode(&e.entry, &bad),
            Err(DecodeError::Checksum { .. })
        ));
    }
}
