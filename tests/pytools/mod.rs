//! The venv of `scripts/pytools` (pinned Python tools), shared by the tests that drive them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The venv (installed if missing, once per test process); each of `tools` must be in its
/// `bin/`.
pub fn venv(tools: &[&str]) -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    let path = VENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pytools");
        let out = Command::new(script)
            .arg("path")
            .output()
            .expect("run scripts/pytools path");
        assert!(
            out.status.success(),
            "scripts/pytools path failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .expect("scripts/pytools path printed a path"),
        )
    });
    for tool in tools {
        assert!(
            path.join("bin").join(tool).is_file(),
            "{path:?} lacks {tool}"
        );
    }
    path
}
