//! An immutable, loaded view of one manifest generation: what queries read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use std::time::Instant;

use super::manifest::{DecodeError, FileEntry, Manifest};
use crate::model::{
    AllocationColumns, EtlSet, PodInterner, Resolution, SetKind, StoredAssets, Window,
};

/// One loaded set.
#[derive(Clone, Debug)]
pub enum LoadedSet {
    /// An allocation set, in columns.
    Allocations(Arc<AllocationColumns>),
    /// An asset set.
    Assets(Arc<StoredAssets>),
}

impl LoadedSet {
    /// The set as stored (a copy).
    pub fn to_etl(&self) -> EtlSet {
        match self {
            LoadedSet::Allocations(s) => EtlSet::Allocations(s.to_set()),
            LoadedSet::Assets(s) => EtlSet::Assets((*s.set()).clone()),
        }
    }
}

impl From<EtlSet> for LoadedSet {
    fn from(set: EtlSet) -> Self {
        match set {
            EtlSet::Allocations(s) => LoadedSet::Allocations(Arc::new(
                AllocationColumns::from_set(s, PodInterner::global()),
            )),
            EtlSet::Assets(s) => LoadedSet::Assets(Arc::new(StoredAssets::decoded(s))),
        }
    }
}

/// Where a snapshot's sets were read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// From the bucket (or published to it by this replica): the bucket vouches for every set.
    #[default]
    Bucket,
    /// From this replica's local file store only: a follower serves it only once the bucket's
    /// manifest vouches for it.
    Local,
}

/// Why an object a manifest names could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectProblem {
    /// The object is not there.
    #[error("missing")]
    Missing,
    /// The bytes do not hash to what the manifest says: corrupt or truncated.
    #[error("sha256 mismatch: manifest says {expected}, object hashes to {actual}")]
    Checksum {
        /// The manifest's sha256.
        expected: String,
        /// The object's.
        actual: String,
    },
    /// The bytes hash right but do not decode.
    #[error("undecodable: {0}")]
    Format(String),
    /// The local file could not be read.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl From<DecodeError> for ObjectProblem {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Checksum { expected, actual } => {
                ObjectProblem::Checksum { expected, actual }
            }
            DecodeError::Format(m) => ObjectProblem::Format(m),
        }
    }
}

/// A set the manifest names that could not be loaded: never served, reported, and fetched again
/// only once `retry_at` has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The manifest entry: what the set is and what its bytes must hash to.
    pub entry: FileEntry,
    /// Why the last attempt failed.
    pub problem: ObjectProblem,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Not fetched again before this.
    pub retry_at: Instant,
}

/// A loaded generation. Cheap to share (`Arc<Snapshot>`), never mutated once built.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The manifest generation loaded (0: nothing loaded yet).
    pub generation: u64,
    /// Term of the writer of that generation.
    pub term: u64,
    /// Identity of that writer.
    pub writer: String,
    /// When that generation was published.
    pub updated: Option<DateTime<Utc>>,
    /// Where the sets were read from.
    pub origin: Origin,
    /// Path to (entry, set) of every set loaded.
    pub files: BTreeMap<String, (FileEntry, LoadedSet)>,
    /// Allocation sets by resolution and window start.
    pub allocations: BTreeMap<(Resolution, DateTime<Utc>), Arc<AllocationColumns>>,
    /// Asset sets by resolution and window start.
    pub assets: BTreeMap<(Resolution, DateTime<Utc>), Arc<StoredAssets>>,
    /// Sets the manifest names that could not be loaded, by path. They stay in every manifest
    /// written on top of this snapshot (a reader's failure must never drop data from the
    /// backup), queries that cover their windows say so, and they are fetched again with
    /// backoff.
    pub missing: BTreeMap<String, Missing>,
    /// Sets built by this replica (as leader) and kept in its local store, that no bucket
    /// manifest names yet: the backup has not caught up.
    pub pending: BTreeSet<String>,
    /// When the oldest pending set was built (`None` when nothing is pending).
    pub staged_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// Whether anything has been loaded or built: a generation, or sets staged by a leader
    /// whose bucket has never taken a generation.
    pub fn is_loaded(&self) -> bool {
        self.generation > 0 || !self.pending.is_empty()
    }

    /// Builds a snapshot from a manifest, the sets loaded and the ones that could not be.
    pub fn build(
        manifest: &Manifest,
        files: BTreeMap<String, (FileEntry, LoadedSet)>,
        missing: BTreeMap<String, Missing>,
        origin: Origin,
    ) -> Self {
        let mut s = Self {
            generation: manifest.generation,
            term: manifest.term,
            writer: manifest.writer.clone(),
            updated: Some(manifest.updated),
            origin,
            files,
            allocations: BTreeMap::new(),
            assets: BTreeMap::new(),
            missing,
            pending: BTreeSet::new(),
            staged_at: None,
        };
        s.rebuild_index();
        s
    }

    /// Recomputes the by-window indexes from `files`.
    pub fn rebuild_index(&mut self) {
        self.allocations.clear();
        self.assets.clear();
        for (entry, set) in self.files.values() {
            match set {
                LoadedSet::Allocations(s) => {
                    self.allocations
                        .insert((entry.resolution, entry.start), s.clone());
                }
                LoadedSet::Assets(s) => {
                    self.assets
                        .insert((entry.resolution, entry.start), s.clone());
                }
            }
        }
    }

    /// Whether the bucket vouches for every set: loaded from it (or published to it), with
    /// nothing pending. A follower serves only a vouched snapshot.
    pub fn vouched(&self) -> bool {
        self.origin == Origin::Bucket && self.pending.is_empty()
    }

    /// Whether this snapshot can answer anything: it is loaded, and unless its manifest names
    /// no set at all, at least one of its sets loaded.
    pub fn servable(&self) -> bool {
        self.is_loaded() && (!self.files.is_empty() || self.missing.is_empty())
    }

    /// The windows of sets of `kind` at `resolution` that the manifest names, overlap `window`,
    /// and could not be loaded: data that exists but that this replica cannot serve.
    pub fn unavailable(
        &self,
        kind: SetKind,
        resolution: Resolution,
        window: Window,
    ) -> Vec<Window> {
        let mut out: Vec<Window> = self
            .missing
            .values()
            .map(|m| &m.entry)
            .filter(|e| e.kind == kind && e.resolution == resolution)
            .map(|e| Window::new(e.start, e.end))
            .filter(|w| w.intersect(&window).is_some())
            .collect();
        out.sort();
        out
    }

    /// Every entry of the manifest this snapshot was loaded from, loaded or not.
    pub fn file_entries(&self) -> BTreeMap<String, FileEntry> {
        let loaded = self.files.iter().map(|(p, (e, _))| (p.clone(), e.clone()));
        loaded
            .chain(
                self.missing
                    .iter()
                    .map(|(p, m)| (p.clone(), m.entry.clone())),
            )
            .collect()
    }

    /// First start and last data end of the sets of one kind and resolution, and their count.
    pub fn coverage(
        &self,
        kind: SetKind,
        resolution: Resolution,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>, usize)> {
        let entries: Vec<&FileEntry> = self
            .files
            .values()
            .map(|(e, _)| e)
            .filter(|e| e.kind == kind && e.resolution == resolution)
            .collect();
        let start = entries.iter().map(|e| e.start).min()?;
        let end = entries.iter().map(|e| e.data_end).max()?;
        Some((start, end, entries.len()))
    }

    /// The stretches between the first and the last set of one kind and resolution that no set
    /// covers (entries that could not be loaded count as covering: they are reported apart).
    pub fn gaps(&self, kind: SetKind, resolution: Resolution) -> Vec<Window> {
        let starts: BTreeSet<DateTime<Utc>> = self
            .file_entries()
            .into_values()
            .filter(|e| e.kind == kind && e.resolution == resolution)
            .map(|e| e.start)
            .collect();
        let (Some(first), Some(last)) = (starts.first().copied(), starts.last().copied()) else {
            return Vec::new();
        };
        let step = resolution.duration();
        let mut gaps: Vec<Window> = Vec::new();
        let mut t = first;
        while t < last {
            if !starts.contains(&t) {
                match gaps.last_mut() {
                    Some(g) if g.end == t => g.end = t + step,
                    _ => gaps.push(Window::new(t, t + step)),
                }
            }
            t += step;
        }
        gaps
    }

    /// Whether the slot holds a complete set.
    pub fn has_complete(
        &self,
        kind: SetKind,
        resolution: Resolution,
        start: DateTime<Utc>,
    ) -> bool {
        self.files
            .values()
            .any(|(e, _)| e.slot() == (kind, resolution, start) && e.data_end >= e.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(kind: SetKind, day: u32) -> FileEntry {
        let start = Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap();
        FileEntry {
            sha256: format!("{day:064}"),
            bytes: 1,
            kind,
            resolution: Resolution::Day,
            start,
            end: start + chrono::Duration::days(1),
            data_end: start + chrono::Duration::days(1),
        }
    }

    #[test]
    fn gaps_are_the_stretches_no_set_covers_missing_sets_included() {
        let mut s = Snapshot::default();
        for day in [10, 11, 14, 17] {
            let e = entry(SetKind::Allocations, day);
            s.missing.insert(
                format!("p{day}"),
                Missing {
                    entry: e,
                    problem: ObjectProblem::Missing,
                    failures: 1,
                    retry_at: Instant::now(),
                },
            );
        }
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap();
        assert_eq!(
            s.gaps(SetKind::Allocations, Resolution::Day),
            vec![Window::new(day(12), day(14)), Window::new(day(15), day(17))]
        );
        assert!(s.gaps(SetKind::Assets, Resolution::Day).is_empty());
        assert!(s.gaps(SetKind::Allocations, Resolution::Hour).is_empty());
    }
}
