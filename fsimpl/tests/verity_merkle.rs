//! Behaviour of the Merkle-tree library: verified reads return the right
//! bytes, touch only what they must, and catch every kind of tampering on the
//! first read of what changed.

use std::sync::atomic::{AtomicU64, Ordering};

use tessera_fsimpl::verity::{
    build_tree, Descriptor, HashAlg, MerkleParams, MerkleTree, ReadAt, Verifier, VerityError,
};
use tessera_vfs::{Errno, Result};

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// 40 blocks of 1 KiB with SHA-512 (16 hashes a block): three leaf tree
/// blocks under one top block, and a partial last data block.
fn small() -> (MerkleParams, Vec<u8>, MerkleTree) {
    let p = MerkleParams::new(HashAlg::Sha512, 1024, b"pepper").unwrap();
    let d = data(39 * 1024 + 300, 1);
    let t = build_tree(p, &d);
    (p, d, t)
}

fn verifier<'a>(t: &MerkleTree, d: &'a [u8], tree: &'a [u8]) -> Verifier<&'a [u8], &'a [u8]> {
    Verifier::new(*t.descriptor(), d, tree)
}

fn read(v: &Verifier<impl ReadAt, impl ReadAt>, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    let n = v.read_at(off, &mut b).map_err(Errno::from)?;
    b.truncate(n);
    Ok(b)
}

fn read_err(v: &Verifier<impl ReadAt, impl ReadAt>, off: u64, len: usize) -> VerityError {
    let mut b = vec![0u8; len];
    v.read_at(off, &mut b).expect_err("read should fail")
}

#[test]
fn reads_near_every_block_boundary_return_the_data() {
    let (p, d, t) = small();
    let bs = p.block_size();
    for cache in [0, 1, 64] {
        let v = verifier(&t, &d, t.tree_bytes()).with_cache_blocks(cache);
        for k in 0..=d.len() / bs + 1 {
            for delta in [-2i64, -1, 0, 1, 2] {
                let off = (k * bs) as i64 + delta;
                if off < 0 {
                    continue;
                }
                let off = off as usize;
                for len in [0, 1, 2, bs - 1, bs, bs + 1, 2 * bs + 3, d.len()] {
                    let got = read(&v, off as u64, len).unwrap();
                    let want = d.get(off..).map_or(&[][..], |s| &s[..s.len().min(len)]);
                    assert_eq!(got, want, "cache {cache} off {off} len {len}");
                }
            }
        }
    }
}

#[test]
fn whole_file_verifies_and_small_files_work() {
    for size in [0usize, 1, 1023, 1024, 1025] {
        let p = MerkleParams::new(HashAlg::Sha256, 1024, &[]).unwrap();
        let d = data(size, 3);
        let t = build_tree(p, &d);
        let v = verifier(&t, &d, t.tree_bytes());
        v.verify_all().unwrap();
        assert_eq!(read(&v, 0, 5000).unwrap(), d);
        assert_eq!(read(&v, size as u64, 10).unwrap(), Vec::<u8>::new());
    }
}

#[test]
fn flipped_data_bit_is_caught_in_its_block_only() {
    let (p, d, t) = small();
    let bs = p.block_size() as u64;
    for bad in [0u64, 5, 16, 38, 39] {
        let mut d2 = d.clone();
        let at = (bad * bs + 17).min(d.len() as u64 - 1) as usize;
        d2[at] ^= 0x10;
        let v = verifier(&t, &d2, t.tree_bytes());
        assert_eq!(
            read_err(&v, at as u64, 1),
            VerityError::DataBlock { index: bad }
        );
        // A range starting before it names it as the first bad block.
        if bad > 0 {
            assert_eq!(
                read_err(&v, 0, d.len()),
                VerityError::DataBlock { index: bad }
            );
        }
        // Every other block still reads.
        for k in (0..40).filter(|&k| k != bad) {
            let got = read(&v, k * bs, bs as usize).unwrap();
            let end = ((k + 1) * bs).min(d.len() as u64) as usize;
            assert_eq!(got, &d[(k * bs) as usize..end]);
        }
        assert_eq!(v.verify_all(), Err(VerityError::DataBlock { index: bad }));
    }
}

#[test]
fn flipped_tree_bit_is_caught_for_the_data_it_covers() {
    let (p, d, t) = small();
    let bs = p.block_size();
    let layout = p.layout(d.len() as u64);
    assert_eq!(layout.levels().len(), 2);
    // Leaf block 1 covers data blocks 16..32.
    let mut tree = t.tree_bytes().to_vec();
    tree[layout.tree_block_offset(0, 1) as usize + 70] ^= 1;
    let v = verifier(&t, &d, &tree);
    assert_eq!(
        read_err(&v, 16 * bs as u64, 1),
        VerityError::TreeBlock { level: 0, index: 1 }
    );
    assert_eq!(
        read_err(&v, 31 * bs as u64 + 5, 1),
        VerityError::TreeBlock { level: 0, index: 1 }
    );
    assert_eq!(read(&v, 0, 16 * bs).unwrap(), &d[..16 * bs]);
    assert_eq!(read(&v, 32 * bs as u64, 10 * bs).unwrap(), &d[32 * bs..]);

    // Zero padding at the end of the last leaf block is hashed too.
    let mut tree = t.tree_bytes().to_vec();
    let last_leaf_end = layout.tree_block_offset(0, 2) as usize + bs;
    tree[last_leaf_end - 1] ^= 0x80;
    let v = verifier(&t, &d, &tree);
    assert_eq!(
        read_err(&v, 35 * bs as u64, 1),
        VerityError::TreeBlock { level: 0, index: 2 }
    );

    // The top block guards everything.
    let mut tree = t.tree_bytes().to_vec();
    tree[3] ^= 4;
    let v = verifier(&t, &d, &tree);
    for off in [0u64, 20_000, 39_000] {
        assert_eq!(
            read_err(&v, off, 1),
            VerityError::TreeBlock { level: 1, index: 0 }
        );
    }

    // A short tree is caught like a bad block.
    let tree = &t.tree_bytes()[..t.tree_bytes().len() - 1];
    let v = verifier(&t, &d, tree);
    assert_eq!(
        read_err(&v, 39 * bs as u64, 1),
        VerityError::TreeBlock { level: 0, index: 2 }
    );
    assert_eq!(read(&v, 0, 10).unwrap(), &d[..10]);
}

#[test]
fn tampered_descriptor_is_refused() {
    let (_, d, t) = small();
    let digest = t.digest();
    let good = t.descriptor().to_bytes();
    assert!(Verifier::with_digest(&digest, &good, &d[..], t.tree_bytes()).is_ok());
    for at in [0, 1, 2, 3, 8, 9, 15, 16, 79, 80, 100, 255] {
        let mut bad = good;
        bad[at] ^= 1;
        assert_eq!(
            Verifier::with_digest(&digest, &bad, &d[..], t.tree_bytes()).err(),
            Some(VerityError::Descriptor),
            "byte {at}"
        );
    }
    assert!(Verifier::with_digest(&digest, &good[..200], &d[..], t.tree_bytes()).is_err());
    // A different (valid) descriptor, e.g. claiming a shorter file, does not
    // hash to the trusted digest.
    let shorter = Descriptor {
        data_size: 1024,
        ..*t.descriptor()
    };
    assert_eq!(
        Verifier::with_digest(&digest, &shorter.to_bytes(), &d[..], t.tree_bytes()).err(),
        Some(VerityError::Descriptor)
    );
}

#[test]
fn truncation_is_caught_where_the_data_ends() {
    let (p, d, t) = small();
    let bs = p.block_size();
    for cut in [39 * bs + 299, 39 * bs, 20 * bs + 1, 20 * bs, 1] {
        let v = verifier(&t, &d[..cut], t.tree_bytes());
        let first_short = (cut / bs) as u64;
        assert_eq!(
            read_err(&v, cut as u64, 1),
            VerityError::DataBlock { index: first_short },
            "cut {cut}"
        );
        if first_short > 0 {
            let ok = first_short as usize * bs;
            assert_eq!(read(&v, 0, ok).unwrap(), &d[..ok]);
        }
    }
}

#[test]
fn extension_is_caught_at_the_end() {
    let (p, mut d, t) = small();
    let bs = p.block_size();
    let n = d.len();
    d.push(0);
    let v = verifier(&t, &d, t.tree_bytes());
    assert_eq!(read_err(&v, n as u64 - 1, 1), VerityError::Extended);
    assert_eq!(read_err(&v, n as u64, 1), VerityError::Extended);
    assert_eq!(read(&v, 0, 39 * bs).unwrap(), &d[..39 * bs]);

    // An empty file and a file of exactly one block, extended.
    let p0 = MerkleParams::default_sha256();
    let t0 = build_tree(p0, &[]);
    let v0 = verifier(&t0, b"x", &[]);
    assert_eq!(read_err(&v0, 0, 1), VerityError::Extended);
    let one = data(4096, 9);
    let t1 = build_tree(p0, &one);
    let mut longer = one.clone();
    longer.push(1);
    let v1 = verifier(&t1, &longer, &[]);
    assert_eq!(read_err(&v1, 0, 10), VerityError::Extended);
    assert_eq!(v1.verify_all(), Err(VerityError::Extended));
}

#[test]
fn single_block_file_tamper() {
    let p = MerkleParams::default_sha256();
    let mut d = data(100, 5);
    let t = build_tree(p, &d);
    d[99] ^= 1;
    let v = verifier(&t, &d, &[]);
    assert_eq!(read_err(&v, 0, 1), VerityError::DataBlock { index: 0 });
}

/// A source that counts the bytes read from it.
struct Counting<'a> {
    bytes: &'a [u8],
    read: AtomicU64,
    calls: AtomicU64,
}

impl<'a> Counting<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Counting {
            bytes,
            read: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }
    fn take(&self) -> (u64, u64) {
        (
            self.read.swap(0, Ordering::SeqCst),
            self.calls.swap(0, Ordering::SeqCst),
        )
    }
}

impl ReadAt for Counting<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.bytes.read_at(offset, buf)?;
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn reads_touch_only_their_blocks_and_a_path_of_tree_blocks() {
    // 1 KiB blocks of SHA-256: 32 hashes a block, 3 levels over 2000 blocks.
    let p = MerkleParams::new(HashAlg::Sha256, 1024, &[]).unwrap();
    let d = data(2000 * 1024, 11);
    let t = build_tree(p, &d);
    let levels = p.layout(d.len() as u64).levels().len() as u64;
    assert_eq!(levels, 3);
    let data_src = Counting::new(&d);
    let tree_src = Counting::new(t.tree_bytes());
    let v = Verifier::new(*t.descriptor(), &data_src, &tree_src);

    // A cold one-byte read: one data block, one tree block per level.
    assert_eq!(read(&v, 777_777, 1).unwrap(), &d[777_777..777_778]);
    assert_eq!(data_src.take().0, 1024);
    assert_eq!(tree_src.take().0, levels * 1024);
    // A neighbour under the same leaf: no tree reads at all.
    read(&v, 777_777 + 2048, 1).unwrap();
    assert_eq!(tree_src.take().0, 0);
    assert_eq!(data_src.take().0, 1024);
    // A range of three blocks reads exactly those three.
    read(&v, 10 * 1024 + 5, 2 * 1024).unwrap();
    assert_eq!(data_src.take().0, 3 * 1024);

    // A sequential read of everything reads each tree block once.
    let v = Verifier::new(*t.descriptor(), &data_src, &tree_src);
    tree_src.take();
    let mut buf = vec![0u8; 64 * 1024 + 7];
    let mut at = 0u64;
    while at < d.len() as u64 {
        at += v.read_at(at, &mut buf).unwrap() as u64;
    }
    assert_eq!(tree_src.take().0, t.tree_bytes().len() as u64);
}

#[test]
fn verification_errors_become_eio() {
    assert_eq!(Errno::from(VerityError::DataBlock { index: 3 }), Errno::EIO);
    assert_eq!(Errno::from(VerityError::Io(Errno::ENOENT)), Errno::ENOENT);
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn random_reads_and_random_single_byte_tampering() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..40 {
        let alg = if round % 2 == 0 {
            HashAlg::Sha256
        } else {
            HashAlg::Sha512
        };
        let bs = 1024 << rng.below(3);
        let salt: Vec<u8> = (0..rng.below(33)).map(|i| i as u8).collect();
        let p = MerkleParams::new(alg, bs, &salt).unwrap();
        let size = match round % 4 {
            0 => rng.below(3 * bs as u64) as usize,
            _ => rng.below(200 * bs as u64) as usize,
        };
        let d = data(size, round);
        let t = build_tree(p, &d);
        let v = verifier(&t, &d, t.tree_bytes()).with_cache_blocks(rng.below(4) as usize);
        for _ in 0..30 {
            let off = rng.below(size as u64 + 10);
            let len = rng.below(4 * bs as u64) as usize;
            let got = read(&v, off, len).unwrap();
            let want = d
                .get(off as usize..)
                .map_or(&[][..], |s| &s[..s.len().min(len)]);
            assert_eq!(got, want, "round {round} off {off} len {len}");
        }
        if size == 0 {
            continue;
        }
        // Any data byte changed: the read of its block names that block.
        let at = rng.below(size as u64) as usize;
        let mut d2 = d.clone();
        d2[at] ^= 1 << rng.below(8);
        let v = verifier(&t, &d2, t.tree_bytes());
        assert_eq!(
            v.verify_all(),
            Err(VerityError::DataBlock {
                index: (at / bs) as u64
            }),
            "round {round}"
        );
        // Any tree byte changed, padding included: some tree block fails.
        if !t.tree_bytes().is_empty() {
            let mut tree = t.tree_bytes().to_vec();
            let at = rng.below(tree.len() as u64) as usize;
            tree[at] ^= 0x40;
            let v = verifier(&t, &d, &tree);
            assert!(
                matches!(v.verify_all(), Err(VerityError::TreeBlock { .. })),
                "round {round} tree byte {at}"
            );
        }
    }
}

#[test]
fn concurrent_readers_share_one_verifier() {
    let (_, d, t) = small();
    let v = verifier(&t, &d, t.tree_bytes()).with_cache_blocks(2);
    std::thread::scope(|s| {
        for k in 0..4u64 {
            let (v, d) = (&v, &d);
            s.spawn(move || {
                for i in 0..200u64 {
                    let off = (i * 997 + k * 4099) % d.len() as u64;
                    let got = read(v, off, 3000).unwrap();
                    let o = off as usize;
                    assert_eq!(got, &d[o..(o + 3000).min(d.len())]);
                }
            });
        }
    });
}

#[test]
fn absurd_sizes_fail_cleanly() {
    for params in [
        MerkleParams::default_sha256(),
        MerkleParams::new(HashAlg::Sha512, 1024, &[1; 32]).unwrap(),
        MerkleParams::new(HashAlg::Sha256, 65536, &[]).unwrap(),
    ] {
        let desc = Descriptor {
            params,
            data_size: u64::MAX,
            root_hash: HashAlg::Sha256.hash(b""),
        };
        let v = Verifier::new(desc, &[][..], &[][..]);
        for off in [0, 1 << 40, u64::MAX - 5, u64::MAX - 1, u64::MAX] {
            let mut b = [0u8; 10];
            assert!(v.read_at(off, &mut b).is_err() || off == u64::MAX);
        }
        assert!(v.verify_range(u64::MAX - 100, 1000).is_err());
    }
}
