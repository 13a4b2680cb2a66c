//! Cross-check against the real `fsverity digest` (Debian package
//! `fsverity`): our digests, trees and descriptors must be byte-identical.
//!
//! Skipped, with a note on stderr, when the tool is not installed; CI
//! installs it (`.ci/needs/verity.sh`) and sets `TESSERA_REQUIRE_FSVERITY=1`
//! so that a missing tool fails instead of skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_fsimpl::verity::{build_tree, HashAlg, MerkleParams};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: plenty for test contents.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn tool_present() -> bool {
    let present = Command::new("fsverity")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_FSVERITY").is_none(),
            "TESSERA_REQUIRE_FSVERITY is set but `fsverity` is not installed"
        );
        eprintln!("skipping: `fsverity` is not installed (apt-get install fsverity)");
    }
    present
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tessera-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tool_args(p: &MerkleParams) -> Vec<String> {
    let mut a = vec![
        "digest".to_string(),
        format!("--hash-alg={}", p.alg().name()),
        format!("--block-size={}", p.block_size()),
    ];
    if !p.salt().is_empty() {
        a.push(format!("--salt={}", hex(p.salt())));
    }
    a
}

/// The sizes the issue names: empty, one byte, around one block, around one
/// full leaf level, and a few MiB. A full level with 64 KiB blocks is 64 or
/// 128 MiB; those are in [`full_level_with_64k_blocks`], one file at a time.
fn sizes(p: &MerkleParams) -> Vec<usize> {
    let bs = p.block_size();
    let level = bs * p.hashes_per_block();
    let mut v = vec![0, 1, bs - 1, bs, bs + 1, 3 * bs + 5, (3 << 20) + 17];
    if level <= 8 << 20 {
        v.extend([level, level + 1, level - 1]);
    }
    let two_levels = level * p.hashes_per_block();
    if two_levels <= 4 << 20 {
        v.extend([two_levels, two_levels + 1]);
    }
    v
}

#[test]
fn digests_trees_and_descriptors_match_fsverity() {
    if !tool_present() {
        return;
    }
    let dir = TempDir::new("verity-xcheck");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files = 0;
    for alg in [HashAlg::Sha256, HashAlg::Sha512] {
        for bs in [1024, 4096, 16384, 65536] {
            let salt_len = (rng.next() % 31) as usize + 1;
            let salts = [Vec::new(), rng.bytes(salt_len), rng.bytes(32)];
            for salt in salts {
                let p = MerkleParams::new(alg, bs, &salt).unwrap();
                let mut paths = Vec::new();
                let mut ours = Vec::new();
                for (i, size) in sizes(&p).into_iter().enumerate() {
                    let data = rng.bytes(size);
                    let path = dir.0.join(format!("f{i}-{size}"));
                    std::fs::write(&path, &data).unwrap();
                    let tree = build_tree(p, &data);
                    ours.push(format!(
                        "{}:{} {}",
                        alg.name(),
                        tree.digest().to_hex(),
                        path.display()
                    ));
                    // Whole tree and descriptor bytes, for a few sizes.
                    if size == bs + 1 || size == (3 << 20) + 17 || size == 0 {
                        check_tree_files(&p, &path, &tree);
                    }
                    paths.push(path);
                }
                let out = Command::new("fsverity")
                    .args(tool_args(&p))
                    .args(&paths)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let theirs: Vec<String> = String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect();
                assert_eq!(ours, theirs, "{p:?}");
                files += paths.len();
                for path in paths {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
    }
    assert!(files >= 200, "only {files} files");
}

fn check_tree_files(p: &MerkleParams, path: &Path, tree: &tessera_fsimpl::verity::MerkleTree) {
    let t = path.with_extension("tree");
    let d = path.with_extension("desc");
    let out = Command::new("fsverity")
        .args(tool_args(p))
        .arg(format!("--out-merkle-tree={}", t.display()))
        .arg(format!("--out-descriptor={}", d.display()))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::read(&t).unwrap() == tree.tree_bytes(),
        "tree of {path:?}"
    );
    assert_eq!(
        std::fs::read(&d).unwrap(),
        tree.descriptor().to_bytes().to_vec(),
        "descriptor of {path:?}"
    );
    std::fs::remove_file(t).unwrap();
    std::fs::remove_file(d).unwrap();
}

/// One full leaf level with 64 KiB blocks (64 MiB for SHA-512, 128 MiB for
/// SHA-256), written and checked one file at a time. Runs in optimized
/// builds (CI tests with `--release`), or when `TESSERA_VERITY_BIG` is set.
#[test]
fn full_level_with_64k_blocks() {
    if cfg!(debug_assertions) && std::env::var_os("TESSERA_VERITY_BIG").is_none() {
        eprintln!("skipping in a debug build (set TESSERA_VERITY_BIG=1 to run)");
        return;
    }
    if !tool_present() {
        return;
    }
    let dir = TempDir::new("verity-xcheck-big");
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    for (alg, salt) in [(HashAlg::Sha512, &b""[..]), (HashAlg::Sha256, b"big salt")] {
        let p = MerkleParams::new(alg, 65536, salt).unwrap();
        let level = 65536 * p.hashes_per_block();
        for size in [level, level + 1] {
            let data = rng.bytes(size);
            let path = dir.0.join(format!("big-{size}"));
            std::fs::write(&path, &data).unwrap();
            let tree = build_tree(p, &data);
            drop(data);
            check_tree_files(&p, &path, &tree);
            std::fs::remove_file(path).unwrap();
        }
    }
}
