//! Tree parameters (algorithm, block size, salt) and the tree's geometry.

use super::hash::{BlockHasher, HashAlg, MAX_SALT_SIZE};
use tessera_vfs::{Errno, Result};

/// Smallest block size we build trees for (the kernel's lower limit).
pub const MIN_BLOCK_SIZE: usize = 1024;
/// Largest block size we build trees for.
pub const MAX_BLOCK_SIZE: usize = 65536;
/// fs-verity's default block size, as `fsverity digest` uses it.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// How a tree is built: hash algorithm, block size and salt.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MerkleParams {
    alg: HashAlg,
    log_block_size: u8,
    salt_len: u8,
    salt: [u8; MAX_SALT_SIZE],
}

impl MerkleParams {
    /// Checks and takes the parameters.
    ///
    /// # Errors
    /// `EINVAL` if `block_size` is not a power of two in
    /// [`MIN_BLOCK_SIZE`]..=[`MAX_BLOCK_SIZE`]; `EMSGSIZE` if the salt is
    /// longer than 32 bytes (what `FS_IOC_ENABLE_VERITY` returns).
    pub fn new(alg: HashAlg, block_size: usize, salt: &[u8]) -> Result<MerkleParams> {
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(Errno::EINVAL);
        }
        if salt.len() > MAX_SALT_SIZE {
            return Err(Errno::EMSGSIZE);
        }
        let mut s = [0u8; MAX_SALT_SIZE];
        s[..salt.len()].copy_from_slice(salt);
        Ok(MerkleParams {
            alg,
            log_block_size: block_size.trailing_zeros() as u8,
            salt_len: salt.len() as u8,
            salt: s,
        })
    }

    /// SHA-256, 4096-byte blocks, no salt: what `fsverity digest` does by default.
    pub fn default_sha256() -> MerkleParams {
        MerkleParams {
            alg: HashAlg::Sha256,
            log_block_size: 12,
            salt_len: 0,
            salt: [0; MAX_SALT_SIZE],
        }
    }

    /// The hash algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> usize {
        1usize << self.log_block_size
    }

    /// log2 of the block size, as the descriptor stores it.
    pub fn log_block_size(&self) -> u8 {
        self.log_block_size
    }

    /// The salt (empty for none).
    pub fn salt(&self) -> &[u8] {
        &self.salt[..usize::from(self.salt_len)]
    }

    /// How many digests one tree block holds.
    pub fn hashes_per_block(&self) -> usize {
        self.block_size() / self.alg.digest_size()
    }

    /// A hasher for these parameters.
    pub fn hasher(&self) -> BlockHasher {
        BlockHasher::new(self.alg, self.salt())
    }

    /// The geometry of the tree over `data_size` bytes.
    pub fn layout(&self, data_size: u64) -> TreeLayout {
        TreeLayout::new(self, data_size)
    }
}

/// One level of a tree.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Level {
    /// Blocks in this level.
    pub blocks: u64,
    /// Where the level starts in the tree file, in blocks (levels are stored
    /// top first).
    pub first_block: u64,
}

/// Where every level of a file's tree lies.
///
/// Level 0 holds the hashes of the data blocks; the last level has exactly
/// one block, whose hash is the root hash. A file of at most one block has
/// no levels at all: its root hash is the hash of its only (padded) block.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TreeLayout {
    block_size: u64,
    data_size: u64,
    data_blocks: u64,
    levels: Vec<Level>,
}

impl TreeLayout {
    fn new(params: &MerkleParams, data_size: u64) -> TreeLayout {
        let bs = params.block_size() as u64;
        let per = params.hashes_per_block() as u64;
        let data_blocks = data_size.div_ceil(bs);
        let mut levels = Vec::new();
        if data_blocks > 1 {
            let mut n = data_blocks;
            loop {
                n = n.div_ceil(per);
                levels.push(Level {
                    blocks: n,
                    first_block: 0,
                });
                if n == 1 {
                    break;
                }
            }
        }
        // Top first: each level starts after all the levels above it.
        let mut at = 0;
        for level in levels.iter_mut().rev() {
            level.first_block = at;
            at += level.blocks;
        }
        TreeLayout {
            block_size: bs,
            data_size,
            data_blocks,
            levels,
        }
    }

    /// The data size the layout is for.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Data blocks (the last may be partial).
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// The levels, leaves (level 0) first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Blocks in the whole tree.
    pub fn tree_blocks(&self) -> u64 {
        self.levels.iter().map(|l| l.blocks).sum()
    }

    /// Bytes in the whole tree file.
    pub fn tree_size(&self) -> u64 {
        self.tree_blocks() * self.block_size
    }

    /// Byte offset in the tree file of block `index` of `level`.
    pub fn tree_block_offset(&self, level: usize, index: u64) -> u64 {
        let first = self.levels.get(level).map_or(0, |l| l.first_block);
        (first + index) * self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_params() {
        assert_eq!(
            MerkleParams::new(HashAlg::Sha256, 3000, &[]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            MerkleParams::new(HashAlg::Sha256, 512, &[]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            MerkleParams::new(HashAlg::Sha256, 131072, &[]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            MerkleParams::new(HashAlg::Sha256, 4096, &[0; 33]),
            Err(Errno::EMSGSIZE)
        );
        assert!(MerkleParams::new(HashAlg::Sha512, 65536, &[0; 32]).is_ok());
    }

    #[test]
    fn layout_levels_top_first() {
        let p = MerkleParams::default_sha256();
        assert!(p.layout(0).levels().is_empty());
        assert!(p.layout(4096).levels().is_empty());
        // 129 data blocks: two leaf blocks, then a top block.
        let l = p.layout(128 * 4096 + 1);
        assert_eq!(
            l.levels(),
            &[
                Level {
                    blocks: 2,
                    first_block: 1
                },
                Level {
                    blocks: 1,
                    first_block: 0
                }
            ]
        );
        assert_eq!(l.tree_size(), 3 * 4096);
        assert_eq!(l.tree_block_offset(0, 1), 2 * 4096);
        // Exactly one full leaf block is also the top level.
        assert_eq!(p.layout(128 * 4096).levels().len(), 1);
    }
}
