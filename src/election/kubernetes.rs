//! The `kubernetes` backend: a `coordination.k8s.io/v1` Lease.

use super::ElectionBackend;
use crate::config::Config;

/// Builds the Lease backend from the configuration.
pub async fn backend(_cfg: &Config, _identity: &str) -> anyhow::Result<Box<dyn ElectionBackend>> {
    anyhow::bail!("--election kubernetes: not built yet")
}
