//! The binaries of a package's examples, for tests that run them as a user would.

use crate::newest_file;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// The example `name` of `package`, `target/<profile>/examples/<name>` for the profile of the
/// running test. `cargo test` builds it along with the tests (with the example's required
/// `features`); when it is missing or older than the newest file under `sources`, it is built
/// with `cargo build -p <package> --example <name> --features <features>`. Built at most once per
/// test binary.
pub fn binary(package: &str, name: &str, features: &[&str], sources: &[PathBuf]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let key = format!("{package}/{name}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let test = std::env::current_exe().unwrap();
    let profile_dir = test.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    if is_stale(&path, sources) {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
        command.args(["build", "--quiet", "-p", package, "--example", name]);
        if !features.is_empty() {
            command.args(["--features", &features.join(",")]);
        }
        if profile_dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    built.insert(key, path.clone());
    path
}

/// Whether `path` is missing or older than the newest file under `sources`.
fn is_stale(path: &Path, sources: &[PathBuf]) -> bool {
    let built = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let newest = sources.iter().filter_map(|dir| newest_file(dir)).max();
    built.is_none() || newest > built
}
