//! Building a file's Merkle tree from a byte stream.

use std::io::Read;

use super::descriptor::Descriptor;
use super::hash::{BlockHasher, Digest};
use super::params::{MerkleParams, TreeLayout};
use super::source::io_errno;
use tessera_vfs::Result;

/// A built tree: what `fsverity digest --out-merkle-tree` writes, and the
/// descriptor's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    descriptor: Descriptor,
    tree: Vec<u8>,
}

impl MerkleTree {
    /// The descriptor (parameters, size, root hash).
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The root hash.
    pub fn root_hash(&self) -> Digest {
        self.descriptor.root_hash
    }

    /// The file digest (hash of the descriptor).
    pub fn digest(&self) -> Digest {
        self.descriptor.digest()
    }

    /// The tree file: every level padded to whole blocks, top level first.
    /// Empty for files of at most one block.
    pub fn tree_bytes(&self) -> &[u8] {
        &self.tree
    }

    /// Takes the tree file's bytes.
    pub fn into_tree_bytes(self) -> Vec<u8> {
        self.tree
    }
}

/// Builds a tree incrementally: feed the data in chunks of any size.
///
/// Only the level-0 hashes are kept while the data streams through (about
/// 1/128 of the data for SHA-256 and 4 KiB blocks); the upper levels are
/// built from them at [`TreeBuilder::finish`]. Whole blocks are hashed
/// straight from the caller's buffer, so nothing is copied on the hot path.
pub struct TreeBuilder {
    params: MerkleParams,
    hasher: BlockHasher,
    data_size: u64,
    /// Bytes of an unfinished data block.
    partial: Vec<u8>,
    /// Digests of the finished data blocks, back to back.
    leaves: Vec<u8>,
}

impl TreeBuilder {
    /// A builder for `params`.
    pub fn new(params: MerkleParams) -> TreeBuilder {
        TreeBuilder {
            params,
            hasher: params.hasher(),
            data_size: 0,
            partial: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// Appends `data` to the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let bs = self.params.block_size();
        let ds = self.params.alg().digest_size();
        self.data_size += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (bs - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < bs {
                return;
            }
            let at = self.leaves.len();
            self.leaves.resize(at + ds, 0);
            self.hasher
                .hash_block_into(&self.partial, bs, &mut self.leaves[at..]);
            self.partial.clear();
        }
        let whole = data.len() / bs;
        let at = self.leaves.len();
        self.leaves.resize(at + whole * ds, 0);
        for (block, out) in data
            .chunks_exact(bs)
            .zip(self.leaves[at..].chunks_exact_mut(ds))
        {
            self.hasher.hash_block_into(block, bs, out);
        }
        self.partial.extend_from_slice(&data[whole * bs..]);
    }

    /// Finishes the stream and builds the upper levels.
    pub fn finish(mut self) -> MerkleTree {
        let bs = self.params.block_size();
        let ds = self.params.alg().digest_size();
        if !self.partial.is_empty() {
            let at = self.leaves.len();
            self.leaves.resize(at + ds, 0);
            self.hasher
                .hash_block_into(&self.partial, bs, &mut self.leaves[at..]);
        }
        let layout = self.params.layout(self.data_size);
        let (root_hash, tree) = if self.data_size == 0 {
            (Digest::zero(self.params.alg()), Vec::new())
        } else if layout.levels().is_empty() {
            // One data block: its hash is the root, and there is no tree.
            (Digest::from_slice(&self.leaves), Vec::new())
        } else {
            let leaves = std::mem::take(&mut self.leaves);
            self.upper_levels(&layout, leaves)
        };
        MerkleTree {
            descriptor: Descriptor {
                params: self.params,
                data_size: self.data_size,
                root_hash,
            },
            tree,
        }
    }

    fn upper_levels(&self, layout: &TreeLayout, leaves: Vec<u8>) -> (Digest, Vec<u8>) {
        let bs = self.params.block_size();
        let ds = self.params.alg().digest_size();
        let mut tree = vec![0u8; usize::try_from(layout.tree_size()).unwrap_or(usize::MAX)];
        // Each level is its hashes, zero-padded to whole blocks; it is hashed
        // block by block into the level above it.
        let mut hashes = leaves;
        let mut root = Digest::zero(self.params.alg());
        for (i, level) in layout.levels().iter().enumerate() {
            let start = usize::try_from(layout.tree_block_offset(i, 0)).unwrap_or(usize::MAX);
            let len = (level.blocks as usize) * bs;
            let dst = &mut tree[start..start + len];
            dst[..hashes.len()].copy_from_slice(&hashes);
            let mut next = vec![0u8; level.blocks as usize * ds];
            for (block, out) in dst.chunks_exact(bs).zip(next.chunks_exact_mut(ds)) {
                self.hasher.hash_block_into(block, bs, out);
            }
            if level.blocks == 1 {
                root = Digest::from_slice(&next);
            }
            hashes = next;
        }
        (root, tree)
    }
}

/// Builds the tree of the whole of `data`.
pub fn build_tree(params: MerkleParams, data: &[u8]) -> MerkleTree {
    let mut b = TreeBuilder::new(params);
    b.update(data);
    b.finish()
}

/// Builds the tree of everything `reader` yields.
///
/// # Errors
/// The reader's error, as an errno (`EIO` if it has none).
pub fn build_tree_from_reader(params: MerkleParams, mut reader: impl Read) -> Result<MerkleTree> {
    let mut b = TreeBuilder::new(params);
    // A multiple of every block size, so only the file's tail is ever copied
    // into the builder's partial block.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => b.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::HashAlg;

    #[test]
    fn empty_file_has_zero_root_and_no_tree() {
        let t = build_tree(MerkleParams::default_sha256(), &[]);
        assert_eq!(t.root_hash(), Digest::zero(HashAlg::Sha256));
        assert!(t.tree_bytes().is_empty());
        // Known value from `fsverity digest` of an empty file.
        assert_eq!(
            t.digest().to_hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
    }

    #[test]
    fn chunking_does_not_change_the_tree() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let p = MerkleParams::new(HashAlg::Sha512, 1024, b"s").unwrap();
        let whole = build_tree(p, &data);
        for chunk in [1, 7, 1023, 1024, 1025, 4096] {
            let mut b = TreeBuilder::new(p);
            for c in data.chunks(chunk) {
                b.update(c);
            }
            assert_eq!(b.finish(), whole, "chunk {chunk}");
        }
        let r = build_tree_from_reader(p, &data[..]).unwrap();
        assert_eq!(r, whole);
    }

    #[test]
    fn single_block_root_is_block_hash() {
        let p = MerkleParams::default_sha256();
        let t = build_tree(p, b"hello");
        assert!(t.tree_bytes().is_empty());
        assert_eq!(t.root_hash(), p.hasher().hash_block(b"hello", 4096));
    }
}
