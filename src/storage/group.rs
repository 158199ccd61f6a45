//! The group: every replica writes a small heartbeat into the bucket
//! (`etl/v1/replicas/<identity>.json`) every poll interval, and reads the others', so any
//! replica can show the whole group (role, generation, data age, last seen) on its status page
//! without more RBAC than the Lease needs. Heartbeats are never read by the backup protocol.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::backup::BackupError;

/// Where heartbeats live, relative to the bucket prefix.
pub const REPLICAS_DIR: &str = "etl/v1/replicas";

/// Heartbeats older than this are removed by the leader: the replica is long gone.
pub const FORGET_AFTER: chrono::Duration = chrono::Duration::days(1);

/// What one replica says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Its identity.
    pub identity: String,
    /// `leader` or `follower`.
    pub role: String,
    /// Its term, when leading.
    pub term: Option<u64>,
    /// The generation it serves.
    pub generation: u64,
    /// When the data it serves was last updated.
    pub data_updated: Option<DateTime<Utc>>,
    /// Whether it can answer queries.
    pub ready: bool,
    /// Why not, when it cannot.
    pub not_ready_reason: Option<String>,
    /// Its version.
    pub version: String,
    /// When it wrote this heartbeat.
    pub seen: DateTime<Utc>,
    /// How often it writes one, in seconds: a heartbeat older than a few of these is late.
    pub interval_seconds: u64,
}

fn path_of(identity: &str) -> Path {
    // Identities are pod names or hostnames; anything else is made path-safe.
    let safe: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::from(format!("{REPLICAS_DIR}/{safe}.json"))
}

fn store_err(op: &'static str, path: &Path) -> impl FnOnce(object_store::Error) -> BackupError {
    let path = path.to_string();
    move |source| BackupError::Store {
        op,
        path,
        source: std::sync::Arc::new(source),
    }
}

/// Writes this replica's heartbeat.
pub async fn beat(store: &dyn ObjectStore, hb: &Heartbeat) -> Result<(), BackupError> {
    let path = path_of(&hb.identity);
    let body = serde_json::to_vec(hb).expect("a heartbeat always serialises");
    store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(store_err("put", &path))?;
    Ok(())
}

/// Reads every heartbeat in the bucket (ones that do not parse are skipped), newest first by
/// identity order; with `forget`, removes those older than [`FORGET_AFTER`].
pub async fn members(
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
    forget: bool,
) -> Result<Vec<Heartbeat>, BackupError> {
    let dir = Path::from(REPLICAS_DIR);
    let metas: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store_err("list", &dir))?;
    let mut out = Vec::new();
    for meta in metas {
        let body = match store.get(&meta.location).await {
            Ok(r) => r.bytes().await.map_err(store_err("get", &meta.location))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store_err("get", &meta.location)(e)),
        };
        let Ok(hb) = serde_json::from_slice::<Heartbeat>(&body) else {
            continue;
        };
        if forget && hb.seen < now - FORGET_AFTER {
            let _ = store.delete(&meta.location).await;
            continue;
        }
        out.push(hb);
    }
    out.sort_by(|a, b| a.identity.cmp(&b.identity));
    Ok(out)
}
