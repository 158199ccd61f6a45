//! The bucket layout and the manifest that names the current set of objects.
//!
//! ```text
//! etl/v1/allocations/1d/<start>-<end>.<hash>.parquet    immutable, content-addressed
//! etl/v1/allocations/1d/<start>-<end>.<hash>.json.zst   the same, as releases before Parquet wrote it
//! etl/v1/assets/1h/...
//! etl/v1/manifests/<generation, zero-padded>.json
//! ```
//! A manifest is published by creating the next generation's file with create-if-absent, so of
//! two writers racing for one generation exactly one wins: that is the fencing compare-and-swap.
//!
//! Sets are written as Parquet (`super::parquet`, `docs/bucket-format.md`); objects of the older
//! zstd-compressed JSON form are read as they are, told apart by their first bytes (never by
//! their names), and rewritten as Parquet a few per publish by the leader (`super::backup`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::parquet::Decoded;
use super::snapshot::LoadedSet;
use crate::model::{EtlSet, PodInterner, Resolution, SetKind, StoredAssets};

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

/// File name ending of a set stored as Parquet.
pub const PARQUET_SUFFIX: &str = ".parquet";
/// File name ending of a set stored as zstd-compressed JSON (releases before Parquet).
pub const JSON_ZST_SUFFIX: &str = ".json.zst";

/// Whether `path` names a set object (of either form), as opposed to a manifest or anything else.
pub fn is_set_object(path: &str) -> bool {
    path.ends_with(PARQUET_SUFFIX) || path.ends_with(JSON_ZST_SUFFIX)
}

/// Whether `path` names a set stored in the older JSON form, which the leader rewrites as
/// Parquet over time.
pub fn is_json_zst(path: &str) -> bool {
    path.ends_with(JSON_ZST_SUFFIX)
}

/// The first four bytes of a zstd frame (its magic number, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A set encoded for storage: its path, bytes and manifest entry.
pub struct Encoded {
    /// Object path, relative to the bucket prefix.
    pub path: String,
    /// The bytes to store: Parquet, or zstd-compressed JSON for a set Parquet cannot hold exactly.
    pub body: bytes::Bytes,
    /// The manifest entry naming the object.
    pub entry: FileEntry,
}

/// Encodes a set as Parquet under its content-addressed path (`....<hash16>.parquet`). A set
/// holding a time finer than a microsecond (only sets an older release built while their window
/// was in progress) cannot be Parquet exactly: it is stored as zstd-compressed JSON
/// (`.json.zst`), as before, so nothing is ever rounded.
pub fn encode(set: &EtlSet) -> Result<Encoded, std::io::Error> {
    let (body, suffix) = match super::parquet::encode(set) {
        Ok(body) => (body, PARQUET_SUFFIX),
        Err(super::parquet::EncodeError::Inexact { what, time }) => {
            tracing::debug!(%what, %time, "a set with a sub-microsecond time is stored as JSON");
            (encode_json_zst(set)?, JSON_ZST_SUFFIX)
        }
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let body = bytes::Bytes::from(body);
    let sha = hex::encode(Sha256::digest(&body));
    let w = set.window();
    let path = format!(
        "{OBJECT_DIR}/{}/{}/{}-{}.{}{suffix}",
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

/// The older form: the set's JSON, zstd-compressed at level 3.
fn encode_json_zst(set: &EtlSet) -> Result<Vec<u8>, std::io::Error> {
    let json = serde_json::to_vec(set)?;
    zstd::encode_all(json.as_slice(), 3)
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
    check_sum(entry, body)?;
    let set = if body.starts_with(super::parquet::MAGIC) {
        super::parquet::decode(body).map_err(|e| DecodeError::Format(e.to_string()))?
    } else if body.starts_with(&ZSTD_MAGIC) {
        decode_json_zst(body)?
    } else {
        return Err(not_a_set());
    };
    check_entry(entry, set.kind(), set.resolution(), set.window().start)?;
    Ok(set)
}

/// Verifies and decodes an object fetched for `entry` into the form a snapshot serves (see
/// [`super::parquet::decode_columns`]): the same set [`decode`] gives, in columns.
pub fn decode_loaded(entry: &FileEntry, body: bytes::Bytes) -> Result<LoadedSet, DecodeError> {
    check_sum(entry, &body)?;
    let set = if body.starts_with(super::parquet::MAGIC) {
        match super::parquet::decode_columns(&body, PodInterner::global())
            .map_err(|e| DecodeError::Format(e.to_string()))?
        {
            Decoded::Allocations(c) => LoadedSet::Allocations(Arc::from(c)),
            // Kept as the object's bytes (see `StoredAssets`).
            Decoded::Assets(a) => LoadedSet::Assets(Arc::new(StoredAssets::packed(
                &a,
                body.clone(),
                super::parquet::decode_assets,
            ))),
        }
    } else if body.starts_with(&ZSTD_MAGIC) {
        LoadedSet::from(decode_json_zst(&body)?)
    } else {
        return Err(not_a_set());
    };
    let (kind, resolution, start) = match &set {
        LoadedSet::Allocations(c) => (SetKind::Allocations, c.resolution, c.window.start),
        LoadedSet::Assets(a) => (SetKind::Assets, a.resolution, a.window.start),
    };
    check_entry(entry, kind, resolution, start)?;
    Ok(set)
}

fn check_sum(entry: &FileEntry, body: &[u8]) -> Result<(), DecodeError> {
    let actual = hex::encode(Sha256::digest(body));
    if actual != entry.sha256 {
        return Err(DecodeError::Checksum {
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

fn not_a_set() -> DecodeError {
    DecodeError::Format("neither Parquet (PAR1) nor zstd-compressed JSON".into())
}

fn check_entry(
    entry: &FileEntry,
    kind: SetKind,
    resolution: Resolution,
    start: DateTime<Utc>,
) -> Result<(), DecodeError> {
    if kind != entry.kind || resolution != entry.resolution || start != entry.start {
        return Err(DecodeError::Format(
            "object does not hold the set its manifest entry names".into(),
        ));
    }
    Ok(())
}

/// Decodes the older form. This is all a release before Parquet does with any object (after
/// the sha256 check), so such a release fails here, with [`DecodeError::Format`], on a Parquet
/// object: the set is reported unavailable and fetched again later, never served.
pub fn decode_json_zst(body: &[u8]) -> Result<EtlSet, DecodeError> {
    let json = zstd::decode_all(body).map_err(|e| DecodeError::Format(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| DecodeError::Format(e.to_string()))
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

    /// A day of the demo cluster: both kinds, every kind of row.
    fn demo_sets() -> Vec<EtlSet> {
        use crate::etl::{costing, demo::DemoCluster};
        let w =
            Resolution::Day.window_containing(Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap());
        let (a, s) = costing::price(
            &DemoCluster::new(3, 40).compute(w, w.end),
            Resolution::Day,
            "c",
        );
        vec![EtlSet::Allocations(a), EtlSet::Assets(s)]
    }

    /// What a release before Parquet wrote: the set's JSON, zstd level 3, under `.json.zst`.
    fn old_release_encode(set: &EtlSet) -> (String, FileEntry, Vec<u8>) {
        let body = zstd::encode_all(serde_json::to_vec(set).unwrap().as_slice(), 3).unwrap();
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
        (path, entry, body)
    }

    /// A release before Parquet's `decode`, verbatim: sha256, then zstd JSON, then the entry
    /// check. Kept to show what such a release, following a bucket this one leads, does with a
    /// Parquet object.
    fn old_release_decode(entry: &FileEntry, body: &[u8]) -> Result<EtlSet, DecodeError> {
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

    #[test]
    fn sets_are_written_as_parquet_and_read_back_exactly() {
        for set in demo_sets() {
            let e = encode(&set).unwrap();
            assert!(e.path.ends_with(".parquet"), "{}", e.path);
            assert!(is_set_object(&e.path) && !is_json_zst(&e.path));
            assert!(e.body.starts_with(b"PAR1"));
            assert_eq!(decode(&e.entry, &e.body).unwrap(), set);
        }
    }

    #[test]
    fn objects_an_older_release_wrote_load_unchanged() {
        for set in demo_sets() {
            let (path, entry, body) = old_release_encode(&set);
            assert!(is_set_object(&path) && is_json_zst(&path));
            // Exactly the set that was built (JSON floats are read back to the last bit).
            assert_eq!(decode(&entry, &body).unwrap(), set);
            assert_eq!(old_release_decode(&entry, &body).unwrap(), set);
        }
    }

    #[test]
    fn an_older_release_refuses_a_parquet_object_as_undecodable_never_as_data() {
        for set in demo_sets() {
            let e = encode(&set).unwrap();
            // The sha256 matches, so the old release gets as far as decoding, and fails there:
            // its loader records the set as unavailable (reported, retried with backoff), which
            // is what it does with any object it cannot decode.
            let err = old_release_decode(&e.entry, &e.body).unwrap_err();
            assert!(matches!(err, DecodeError::Format(_)), "{err:?}");
            assert!(matches!(
                crate::storage::snapshot::ObjectProblem::from(err),
                crate::storage::snapshot::ObjectProblem::Format(_)
            ));
            // This release's own JSON branch says the same.
            assert!(matches!(
                decode_json_zst(&e.body),
                Err(DecodeError::Format(_))
            ));
        }
    }

    #[test]
    fn a_set_parquet_cannot_hold_exactly_is_stored_as_json() {
        let EtlSet::Allocations(mut a) = demo_sets().remove(0) else {
            unreachable!()
        };
        // A set an older release built while its window was in progress: `now` to the
        // nanosecond.
        a.data_end = a.window.start + chrono::Duration::nanoseconds(3_600_000_000_123);
        let set = EtlSet::Allocations(a);
        let e = encode(&set).unwrap();
        assert!(e.path.ends_with(".json.zst"), "{}", e.path);
        assert_eq!(decode(&e.entry, &e.body).unwrap(), set);
    }

    #[test]
    fn bytes_of_neither_form_are_a_format_error() {
        let set = set();
        let e = encode(&set).unwrap();
        let body = b"{\"kind\":\"allocations\"}".to_vec();
        let entry = FileEntry {
            sha256: hex::encode(Sha256::digest(&body)),
            bytes: body.len() as u64,
            ..e.entry
        };
        assert!(matches!(decode(&entry, &body), Err(DecodeError::Format(_))));
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
