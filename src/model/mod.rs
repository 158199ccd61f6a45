//! Pure cost data: windows, allocations, assets and their sets. Imports nothing of ours; no I/O.

mod allocation;
mod asset;
pub mod columns;
mod window;

pub use allocation::{
    Allocation, AllocationProperties, AllocationSet, IDLE, LbAllocation, Props, PvAllocation,
    SharedCostBreakdown, UNALLOCATED, UNMOUNTED,
};
pub use asset::{Asset, AssetSet, Breakdown, StoredAssets, Unpack};
pub use columns::{AllocationColumns, PodInterner, SetCache};
pub use window::{Resolution, Window};

/// One stored ETL set: allocations or assets of one window at one resolution.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "set", rename_all = "camelCase")]
pub enum EtlSet {
    /// An allocation set.
    Allocations(AllocationSet),
    /// An asset set.
    Assets(AssetSet),
}

impl EtlSet {
    /// `allocations` or `assets`: the directory name in the store.
    pub fn kind(&self) -> SetKind {
        match self {
            EtlSet::Allocations(_) => SetKind::Allocations,
            EtlSet::Assets(_) => SetKind::Assets,
        }
    }
    /// The set's ETL window.
    pub fn window(&self) -> Window {
        match self {
            EtlSet::Allocations(s) => s.window,
            EtlSet::Assets(s) => s.window,
        }
    }
    /// The set's resolution.
    pub fn resolution(&self) -> Resolution {
        match self {
            EtlSet::Allocations(s) => s.resolution,
            EtlSet::Assets(s) => s.resolution,
        }
    }
    /// How far the set's data reaches.
    pub fn data_end(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            EtlSet::Allocations(s) => s.data_end,
            EtlSet::Assets(s) => s.data_end,
        }
    }
}

/// Which kind of set a stored file holds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum SetKind {
    /// Allocation sets.
    Allocations,
    /// Asset sets.
    Assets,
}

impl SetKind {
    /// The directory name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Allocations => "allocations",
            SetKind::Assets => "assets",
        }
    }
}
