//! The local ETL file store: a folder with the bucket's layout, written atomically (temp file,
//! fsync, rename, fsync of the directory), so a crash leaves either the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::manifest::{MANIFEST_DIR, Manifest};

/// The local ETL folder.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `body` at `rel` atomically.
    pub fn write(&self, rel: &str, body: &[u8]) -> std::io::Result<()> {
        let path = self.root.join(rel);
        let dir = path.parent().expect("store paths have a parent directory");
        std::fs::create_dir_all(dir)?;
        // Unique per process and write: two writes of one path at once (a restore and a
        // mend) must not share a temp file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object"),
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    }

    /// Creates the folder if needed, then writes and removes a probe file: whether this store
    /// can be written at all, found before the first write needs it.
    pub fn probe_writable(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let probe = self
            .root
            .join(format!(".write-probe.tmp-{}", std::process::id()));
        std::fs::write(&probe, b"probe")?;
        std::fs::remove_file(&probe)
    }

    /// Whether the file at `rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).is_file()
    }

    /// Removes the file at `rel`; one already gone is fine.
    pub fn remove(&self, rel: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.root.join(rel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The staged lineage (`etl/v1/staged.json`), if there is one.
    pub fn staged(&self) -> std::io::Result<Option<Manifest>> {
        let body = match std::fs::read(self.root.join(super::backup::STAGED)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Removes the temporary files an interrupted write left behind (a `kill -9` between the
    /// write and the rename); returns how many. Run at start, before anything writes.
    pub fn remove_temp_files(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        let mut stack = vec![self.root.join("etl")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                } else if entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
                {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Reads the file at `rel`.
    pub fn read(&self, rel: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.root.join(rel))
    }

    /// The newest manifest in the folder that parses, if any; ones that do not are skipped (with
    /// a warning), as a reader of the bucket skips them.
    pub fn latest_manifest(&self) -> std::io::Result<Option<Manifest>> {
        let dir = self.root.join(MANIFEST_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(g) = name.to_str().and_then(|n| {
                super::manifest::parse_manifest_path(&object_store::path::Path::from(n))
            }) {
                found.push((g, entry.path()));
            }
        }
        found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        for (g, path) in found {
            match serde_json::from_slice::<Manifest>(&std::fs::read(&path)?) {
                Ok(m) if m.generation == g => return Ok(Some(m)),
                Ok(_) | Err(_) => {
                    tracing::warn!(path = %path.display(), "skipping a local manifest that does not parse");
                }
            }
        }
        Ok(None)
    }

    /// Removes every set object (`.parquet` or `.json.zst`) under the ETL folders that `keep`
    /// does not name, and manifests older than `keep_manifest`, but never a file modified within
    /// `grace` (a publish may have written it after `keep` was taken). Best effort: the local store is a cache of the bucket.
    pub fn retain(
        &self,
        keep: &std::collections::BTreeSet<String>,
        keep_manifest: u64,
        grace: std::time::Duration,
    ) -> std::io::Result<usize> {
        let cutoff = std::time::SystemTime::now() - grace;
        let mut removed = 0;
        // What the staged lineage names is kept too: sets built while leading that no bucket
        // manifest names yet.
        let mut keep = keep.clone();
        if let Ok(Some(staged)) = self.staged() {
            keep.extend(staged.files.into_keys());
        }
        let mut stack = vec![self.root.join("etl")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().replace('\\', "/");
                let stale = match super::manifest::parse_manifest_path(
                    &object_store::path::Path::from(rel.as_str()),
                ) {
                    Some(g) => g < keep_manifest,
                    None => super::manifest::is_set_object(&rel) && !keep.contains(&rel),
                };
                let recent = entry.metadata()?.modified()? > cutoff;
                if stale && !recent {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStore::new(dir.path());
        fs.write("etl/v1/a/b.json.zst", b"one").unwrap();
        fs.write("etl/v1/a/b.json.zst", b"two").unwrap();
        assert_eq!(fs.read("etl/v1/a/b.json.zst").unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etl/v1/a"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}
