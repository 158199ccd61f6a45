//! An immutable, loaded view of one manifest generation: what queries read.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::manifest::{FileEntry, Manifest};
use crate::model::{AllocationSet, AssetSet, EtlSet, Resolution, SetKind};

/// One loaded set.
#[derive(Clone, Debug)]
pub enum LoadedSet {
    Allocations(Arc<AllocationSet>),
    Assets(Arc<AssetSet>),
}

impl From<EtlSet> for LoadedSet {
    fn from(set: EtlSet) -> Self {
        match set {
            EtlSet::Allocations(s) => LoadedSet::Allocations(Arc::new(s)),
            EtlSet::Assets(s) => LoadedSet::Assets(Arc::new(s)),
        }
    }
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
    /// Path to (entry, set) of every set loaded.
    pub files: BTreeMap<String, (FileEntry, LoadedSet)>,
    /// Allocation sets by resolution and window start.
    pub allocations: BTreeMap<(Resolution, DateTime<Utc>), Arc<AllocationSet>>,
    /// Asset sets by resolution and window start.
    pub assets: BTreeMap<(Resolution, DateTime<Utc>), Arc<AssetSet>>,
    /// Objects the manifest names that could not be loaded, with the reason: reported, never
    /// served.
    pub problems: Vec<String>,
    /// Manifest entries whose objects could not be loaded. They stay in every manifest written
    /// on top of this snapshot (a reader's failure must never drop data from the backup), and
    /// the next load of the same generation fetches them again.
    pub missing: BTreeMap<String, FileEntry>,
}

impl Snapshot {
    /// Whether any generation has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.generation > 0
    }

    /// Builds a snapshot from a manifest and its loaded sets.
    pub fn build(
        manifest: &Manifest,
        files: BTreeMap<String, (FileEntry, LoadedSet)>,
        problems: Vec<String>,
    ) -> Self {
        let mut allocations = BTreeMap::new();
        let mut assets = BTreeMap::new();
        for (entry, set) in files.values() {
            match set {
                LoadedSet::Allocations(s) => {
                    allocations.insert((entry.resolution, entry.start), s.clone());
                }
                LoadedSet::Assets(s) => {
                    assets.insert((entry.resolution, entry.start), s.clone());
                }
            }
        }
        let missing = manifest
            .files
            .iter()
            .filter(|(p, _)| !files.contains_key(*p))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        Self {
            missing,
            generation: manifest.generation,
            term: manifest.term,
            writer: manifest.writer.clone(),
            updated: Some(manifest.updated),
            files,
            allocations,
            assets,
            problems,
        }
    }

    /// The manifest this snapshot was loaded from, as far as its files go.
    pub fn file_entries(&self) -> BTreeMap<String, FileEntry> {
        let loaded = self.files.iter().map(|(p, (e, _))| (p.clone(), e.clone()));
        loaded
            .chain(self.missing.iter().map(|(p, e)| (p.clone(), e.clone())))
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
