//! The ETL: data sources, the cost math, and the `EtlWriter` actor that builds sets on the leader
//! and hands them to storage.

pub mod costing;
pub mod demo;
pub mod source;
mod writer;

pub use writer::{EtlConfig, EtlWriter};
