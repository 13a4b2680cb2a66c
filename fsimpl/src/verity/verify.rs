//! Verified reads: every byte returned has been checked against the root hash.
//!
//! A read hashes each data block it touches and compares the result with the
//! block's entry in level 0 of the tree. A tree block is itself checked
//! against its parent's entry, up to the top block, which is checked against
//! the root hash. Verified tree blocks are cached, so a sequential read
//! hashes every tree block once and a random read costs at most one block per
//! level (O(log n)) on a miss.
//!
//! # Locking
//! One mutex guards the tree-block cache. It is never held while reading
//! from a [`ReadAt`] source or while hashing: two readers may then verify the
//! same tree block at once, which is harmless.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use super::hash::{BlockHasher, Digest};
use super::params::TreeLayout;
use super::source::{read_full, ReadAt};
use tessera_vfs::Errno;

/// Why a verified read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerityError {
    /// A data block's hash does not match the tree, or the block is shorter
    /// than the descriptor's size says (the file was truncated).
    #[error("data block {index} does not match its hash")]
    DataBlock {
        /// Index of the block (offset / block size).
        index: u64,
    },
    /// A tree block does not match its parent's entry (or the root hash), or
    /// the tree file is too short to hold it.
    #[error("tree block {index} of level {level} does not match its hash")]
    TreeBlock {
        /// Level, 0 being the one just above the data.
        level: u32,
        /// Index of the block within its level.
        index: u64,
    },
    /// The data continues past the size the descriptor records.
    #[error("data is longer than the descriptor's size")]
    Extended,
    /// The descriptor's hash is not the expected file digest, or it is
    /// malformed.
    #[error("descriptor does not match the file digest")]
    Descriptor,
    /// Reading from a source failed.
    #[error("read failed: {0}")]
    Io(Errno),
}

impl VerityError {
    /// The errno a system call reports: `EIO` for any mismatch, as Linux's
    /// fs-verity does, and the source's own errno for a failed read.
    pub fn errno(self) -> Errno {
        match self {
            VerityError::Io(e) => e,
            _ => Errno::EIO,
        }
    }
}

impl From<VerityError> for Errno {
    fn from(e: VerityError) -> Errno {
        e.errno()
    }
}

/// Default bound on cached tree-block bytes.
const DEFAULT_CACHE_BYTES: usize = 8 << 20;

/// Verified tree blocks, evicted by the CLOCK rule (a block used since the
/// hand last passed gets a second chance). Unlike an exact LRU it needs no
/// scan to evict, and the upper levels, which every read passes through,
/// stay in.
struct TreeCache {
    /// Tree-file offset of a block to its slot.
    index: HashMap<u64, usize>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

struct Slot {
    key: u64,
    block: Arc<[u8]>,
    used: bool,
}

impl TreeCache {
    fn new(capacity: usize) -> TreeCache {
        TreeCache {
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            capacity,
        }
    }

    fn get(&mut self, key: u64) -> Option<Arc<[u8]>> {
        let slot = self.slots.get_mut(*self.index.get(&key)?)?;
        slot.used = true;
        Some(slot.block.clone())
    }

    fn insert(&mut self, key: u64, block: Arc<[u8]>) {
        if self.capacity == 0 || self.index.contains_key(&key) {
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(Slot {
                key,
                block,
                used: false,
            });
            return;
        }
        // At most two turns of the hand: the first clears every mark.
        loop {
            let at = self.hand % self.slots.len();
            self.hand = at + 1;
            let slot = &mut self.slots[at];
            if slot.used {
                slot.used = false;
                continue;
            }
            self.index.remove(&slot.key);
            *slot = Slot {
                key,
                block,
                used: false,
            };
            self.index.insert(key, at);
            return;
        }
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        if self.slots.len() > capacity {
            self.slots.truncate(capacity);
            self.index.clear();
            for (i, s) in self.slots.iter().enumerate() {
                self.index.insert(s.key, i);
            }
        }
    }
}

/// Reads a file's data through its tree, checking every block it returns.
pub struct Verifier<D, T> {
    desc: Descriptor,
    layout: TreeLayout,
    hasher: BlockHasher,
    data: D,
    tree: T,
    cache: Mutex<TreeCache>,
}

impl<D: ReadAt, T: ReadAt> Verifier<D, T> {
    /// A verifier for a file described by a trusted descriptor.
    pub fn new(desc: Descriptor, data: D, tree: T) -> Verifier<D, T> {
        let capacity = DEFAULT_CACHE_BYTES / desc.params.block_size();
        Verifier {
            layout: desc.params.layout(desc.data_size),
            hasher: desc.params.hasher(),
            desc,
            data,
            tree,
            cache: Mutex::new(TreeCache::new(capacity)),
        }
    }

    /// A verifier for a file whose digest (the hash of its descriptor) is
    /// trusted, given the untrusted descriptor bytes stored beside it.
    ///
    /// # Errors
    /// [`VerityError::Descriptor`] if the bytes are malformed or do not hash
    /// to `digest`.
    pub fn with_digest(
        digest: &Digest,
        descriptor: &[u8],
        data: D,
        tree: T,
    ) -> Result<Verifier<D, T>, VerityError> {
        if descriptor.len() != DESCRIPTOR_SIZE {
            return Err(VerityError::Descriptor);
        }
        let desc = Descriptor::parse(descriptor).map_err(|_| VerityError::Descriptor)?;
        if desc.params.alg().hash(descriptor) != *digest {
            return Err(VerityError::Descriptor);
        }
        Ok(Verifier::new(desc, data, tree))
    }

    /// Bounds the tree-block cache to `blocks` blocks (0 disables it).
    pub fn with_cache_blocks(self, blocks: usize) -> Verifier<D, T> {
        self.cache.lock().set_capacity(blocks);
        self
    }

    /// The descriptor the verifier checks against.
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// The file's size as the descriptor records it.
    pub fn data_size(&self) -> u64 {
        self.desc.data_size
    }

    /// Reads verified bytes at `offset`; returns how many (fewer than asked
    /// only at the end of the file).
    ///
    /// # Errors
    /// The first bad block the range touches, in file order.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, VerityError> {
        let size = self.desc.data_size;
        if buf.is_empty() {
            return Ok(0);
        }
        if offset >= size {
            self.check_not_extended()?;
            return Ok(0);
        }
        let bs = self.desc.params.block_size() as u64;
        let end = size.min(offset.saturating_add(buf.len() as u64));
        let (first, last) = (offset / bs, (end - 1) / bs);
        // Only the first and the last block can be partly wanted.
        let whole = |k: u64| k * bs >= offset && size.min((k + 1).saturating_mul(bs)) <= end;
        let mut scratch: Vec<u8> = Vec::new();
        // The level-0 tree block in use: consecutive data blocks share it.
        let mut leaf: Option<(u64, Arc<[u8]>)> = None;
        let mut index = first;
        while index <= last {
            let block_start = index * bs;
            if whole(index) {
                // A run of wanted blocks is hashed where the store keeps it
                // and then copied, or else read straight into the caller's
                // buffer with one call and hashed there.
                let mut run_end = index + 1;
                while run_end <= last && whole(run_end) {
                    run_end += 1;
                }
                let span = (block_start - offset) as usize
                    ..(size.min(run_end.saturating_mul(bs)) - offset) as usize;
                if let Some(src) = self.data.peek(block_start, span.len()) {
                    for k in index..run_end {
                        let at = ((k - index) * bs) as usize;
                        let len = (size - k * bs).min(bs) as usize;
                        let Some(block) = src.get(at..at + len) else {
                            return Err(VerityError::DataBlock { index: k });
                        };
                        self.check_data_block(k, block, &mut leaf)?;
                        buf[span.start + at..span.start + at + len].copy_from_slice(block);
                    }
                } else {
                    let got = read_full(&self.data, block_start, &mut buf[span.clone()])
                        .map_err(VerityError::Io)?;
                    for k in index..run_end {
                        let at = ((k - index) * bs) as usize;
                        let len = (size - k * bs).min(bs) as usize;
                        if got < at + len {
                            return Err(VerityError::DataBlock { index: k });
                        }
                        let block = &buf[span.start + at..span.start + at + len];
                        self.check_data_block(k, block, &mut leaf)?;
                    }
                }
                index = run_end;
            } else {
                let block_len = (size - block_start).min(bs) as usize;
                scratch.resize(block_len, 0);
                let got =
                    read_full(&self.data, block_start, &mut scratch).map_err(VerityError::Io)?;
                if got != block_len {
                    return Err(VerityError::DataBlock { index });
                }
                self.check_data_block(index, &scratch, &mut leaf)?;
                let from = offset.max(block_start);
                let to = end.min(block_start + block_len as u64);
                let skip = (from - block_start) as usize;
                let n = (to - from) as usize;
                let dst = (from - offset) as usize;
                buf[dst..dst + n].copy_from_slice(&scratch[skip..skip + n]);
                index += 1;
            }
        }
        if last + 1 == self.layout.data_blocks() {
            self.check_not_extended()?;
        }
        Ok((end - offset) as usize)
    }

    /// Checks data block `index` (unpadded) against its tree entry; `leaf`
    /// carries the last level-0 block used between calls.
    fn check_data_block(
        &self,
        index: u64,
        block: &[u8],
        leaf: &mut Option<(u64, Arc<[u8]>)>,
    ) -> Result<(), VerityError> {
        let bs = self.desc.params.block_size();
        let ds = self.desc.params.alg().digest_size();
        let per = self.desc.params.hashes_per_block() as u64;
        let actual = self.hasher.hash_block(block, bs);
        let ok = if self.layout.levels().is_empty() {
            actual == self.desc.root_hash
        } else {
            let leaf_index = index / per;
            let tb = match leaf {
                Some((i, b)) if *i == leaf_index => b.clone(),
                _ => {
                    let b = self.tree_block(0, leaf_index)?;
                    *leaf = Some((leaf_index, b.clone()));
                    b
                }
            };
            let at = (index % per) as usize * ds;
            tb.get(at..at + ds) == Some(actual.as_bytes())
        };
        if ok {
            Ok(())
        } else {
            Err(VerityError::DataBlock { index })
        }
    }

    /// Verifies `len` bytes from `offset` without keeping them.
    ///
    /// # Errors
    /// As [`Verifier::read_at`].
    pub fn verify_range(&self, offset: u64, len: u64) -> Result<(), VerityError> {
        let bs = self.desc.params.block_size();
        let mut buf = vec![0u8; (256 * bs).min(len.max(1) as usize)];
        let mut at = offset;
        let end = offset.saturating_add(len).min(self.desc.data_size);
        while at < end {
            let want = buf.len().min((end - at) as usize);
            let n = self.read_at(at, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            at += n as u64;
        }
        if len > 0 && offset.saturating_add(len) > self.desc.data_size {
            self.check_not_extended()?;
        }
        Ok(())
    }

    /// Verifies the whole file (and that it does not continue past its size).
    ///
    /// # Errors
    /// As [`Verifier::read_at`].
    pub fn verify_all(&self) -> Result<(), VerityError> {
        self.verify_range(0, self.desc.data_size.saturating_add(1))
    }

    fn check_not_extended(&self) -> Result<(), VerityError> {
        let mut probe = [0u8; 1];
        match self.data.read_at(self.desc.data_size, &mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(VerityError::Extended),
            Err(e) => Err(VerityError::Io(e)),
        }
    }

    /// The verified block `index` of tree level `level`.
    fn tree_block(&self, level: usize, index: u64) -> Result<Arc<[u8]>, VerityError> {
        let levels = self.layout.levels();
        let per = self.desc.params.hashes_per_block() as u64;
        let ds = self.desc.params.alg().digest_size();
        let bs = self.desc.params.block_size();
        // Climb until a cached (already verified) ancestor, or past the top.
        let mut missing: smallvec::SmallVec<[(usize, u64); 16]> = smallvec::SmallVec::new();
        let mut parent: Option<Arc<[u8]>> = None;
        let (mut l, mut i) = (level, index);
        {
            let mut cache = self.cache.lock();
            while l < levels.len() {
                if let Some(b) = cache.get(self.layout.tree_block_offset(l, i)) {
                    parent = Some(b);
                    break;
                }
                missing.push((l, i));
                l += 1;
                i /= per;
            }
        }
        // Come back down, checking each block against its parent's entry.
        for &(l, i) in missing.iter().rev() {
            let mut block = vec![0u8; bs];
            let key = self.layout.tree_block_offset(l, i);
            let bad = VerityError::TreeBlock {
                level: l as u32,
                index: i,
            };
            let got = read_full(&self.tree, key, &mut block).map_err(VerityError::Io)?;
            if got != bs {
                return Err(bad);
            }
            let actual = self.hasher.hash_block(&block, bs);
            let ok = match &parent {
                None => actual == self.desc.root_hash,
                Some(p) => {
                    let at = (i % per) as usize * ds;
                    p.get(at..at + ds) == Some(actual.as_bytes())
                }
            };
            if !ok {
                return Err(bad);
            }
            let block: Arc<[u8]> = block.into();
            self.cache.lock().insert(key, block.clone());
            parent = Some(block);
        }
        parent.ok_or(VerityError::TreeBlock {
            level: level as u32,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u8) -> Arc<[u8]> {
        vec![n; 4].into()
    }

    #[test]
    fn clock_cache_keeps_its_bound_and_its_hot_blocks() {
        let mut c = TreeCache::new(3);
        for k in 0..3 {
            c.insert(k, block(k as u8));
        }
        // Block 0 is in use (like a top-level block); 1 and 2 are not.
        assert!(c.get(0).is_some());
        c.insert(10, block(10));
        assert_eq!(c.slots.len(), 3);
        assert!(c.get(0).is_some(), "a used block gets a second chance");
        assert!(c.get(1).is_none(), "the first unused block goes");
        for k in 20..100 {
            assert!(c.get(0).is_some());
            c.insert(k, block(k as u8));
            assert_eq!(c.slots.len(), 3);
            assert_eq!(c.index.len(), 3);
            assert_eq!(c.get(k).as_deref(), Some(&[k as u8; 4][..]));
        }
        assert!(c.get(0).is_some());
        c.set_capacity(1);
        assert_eq!((c.slots.len(), c.index.len()), (1, 1));
        c.set_capacity(0);
        c.insert(5, block(5));
        assert!(c.get(5).is_none());
    }
}
