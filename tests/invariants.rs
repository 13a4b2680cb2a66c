//! Every ops script of `tests/ops/` run on Tessera with the VFS invariants
//! checked after each call (as the `walker` fuzz target does): a script
//! that once broke them, kept in `tests/ops/`, must not break them again.

use std::path::Path;
use std::time::Duration;

use tessera::fuzz::{evaluate, Kind};

#[test]
fn ops_scripts_keep_the_vfs_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ops")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ops"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    let mut broken = Vec::new();
    for p in &scripts {
        let src = std::fs::read(p).expect("readable script");
        match evaluate(&src, false, Duration::from_secs(60)).finding {
            None | Some(Kind::Difference) => {}
            Some(Kind::Invariant(m)) => broken.push(format!("{}: {m}", p.display())),
            Some(Kind::Panic(m)) => broken.push(format!("{}: panic: {m}", p.display())),
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
