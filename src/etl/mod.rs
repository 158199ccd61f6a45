//! The ETL: data sources, the cost math, and the `EtlWriter` actor that builds sets on the leader
//! and hands them to storage.

pub mod costing;
pub mod costmetrics;
pub mod demo;
pub mod pricing;
pub mod prometheus;
pub mod source;
pub mod status;
mod writer;

pub use writer::{EtlConfig, EtlWriter, Repair, RepairRefused};
