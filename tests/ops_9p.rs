//! The ops scripts on a `9p` root served by diod (`tessera run --root 9p:DIR`):
//! every script of `tests/ops/` that mounts nothing itself must print its
//! `.out`, except those listed with a reason in `tests/ops-9p-exceptions.txt`.
//! Run in both cache modes (`fscache` and `remote_revalidating`).
//!
//! Skipped, with a note, when diod is not installed (`TESSERA_REQUIRE_DIOD=1`
//! makes that a failure) or when not running as root (diod `-N` runs our
//! operations as the attached uid, and the scripts need root's chown).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera::ops;
use tessera_fsimpl::gofer::diod::Diod;

fn exceptions(root: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join("tests/ops-9p-exceptions.txt"))
        .expect("tests/ops-9p-exceptions.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(' ') {
            Some((name, why)) => (name.to_string(), why.trim().to_string()),
            None => panic!("exception without a reason: {l}"),
        })
        .collect()
}

/// The scripts that mount nothing themselves (and print no mount table).
fn scripts(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("tests/ops"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ops"))
        .filter(|p| {
            let src = std::fs::read_to_string(p).unwrap_or_default();
            !["mount", "pivot_root"].iter().any(|w| src.contains(w))
        })
        .collect();
    v.sort();
    v
}

fn scratch_dir() -> PathBuf {
    // A tmpfs export makes the host's answers those of the Linux the .out
    // files came from (directory sizes, xattr namespaces).
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("tessera-ops-9p-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn ops_scripts_match_linux_on_a_9p_root() {
    if Diod::binary().is_none() {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_DIOD").is_none(),
            "TESSERA_REQUIRE_DIOD is set but diod is not installed"
        );
        eprintln!("note: diod is not installed; skipping (apt-get install diod)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root; the 9p ops scripts need root's chown on the export: skipped");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exc = exceptions(root);
    let all = scripts(root);
    for name in exc.keys() {
        assert!(
            all.iter()
                .any(|p| p.file_name().is_some_and(|n| n == name.as_str())),
            "{name} is listed in ops-9p-exceptions.txt but is not a 9p-runnable script"
        );
    }
    let dir = scratch_dir();
    let mut failures = Vec::new();
    let (mut matched, mut excepted) = (0, 0);
    for cache in ["fscache", "remote_revalidating"] {
        for path in &all {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let want = std::fs::read(path.with_extension("out")).unwrap_or_default();
            let script = ops::parse_script(&std::fs::read(path).unwrap()).unwrap();
            let got = ops::tessera::with_9p_root(&dir, cache, |b| ops::run_collect(&script, b));
            let ok = match &got {
                Ok(out) => out.stdout == want && out.error.is_none(),
                Err(_) => false,
            };
            match (ok, exc.get(&name)) {
                (true, None) => matched += 1,
                (true, Some(_)) => {
                    eprintln!("note: {name} matches with cache={cache} though it is an exception")
                }
                (false, Some(_)) => excepted += 1,
                (false, None) => {
                    let detail = match got {
                        Ok(out) => {
                            let (w, h) = (
                                String::from_utf8_lossy(&want),
                                String::from_utf8_lossy(&out.stdout),
                            );
                            let first = w
                                .lines()
                                .zip(h.lines().chain(std::iter::repeat("(none)")))
                                .find(|(a, b)| a != b)
                                .map(|(a, b)| format!("want: {a}\n    got:  {b}"))
                                .unwrap_or_else(|| format!("{:?}", out.error));
                            first
                        }
                        Err(e) => e,
                    };
                    failures.push(format!("{name} (cache={cache}):\n    {detail}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "9p ops scripts: {} scripts x 2 cache modes: {matched} matched, {excepted} listed exceptions, {} failed",
        all.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
