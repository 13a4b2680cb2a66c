//! Regular file data: sparse, page-aligned pages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tessera_vfs::abi::*;
use tessera_vfs::inode::{Ctx, FileOps};

use super::{Data, TmpInode, TmpfsFs};

/// The page size of file data.
pub const PAGE_SIZE: usize = 4096;

/// One page of file data, aligned to a page so copies run at full speed.
#[repr(C, align(4096))]
pub(crate) struct Page([u8; PAGE_SIZE]);

impl Page {
    fn zeroed() -> Box<Page> {
        Box::new(Page([0; PAGE_SIZE]))
    }
}

/// The pages of a regular file by index: a missing page is a hole that
/// reads as zeros.
type Pages = BTreeMap<u64, Box<Page>>;

/// A regular file: its pages under a lock, and its size and page count as
/// atomics beside them, which `stat` reads without the lock (a read lock's
/// acquire and release write the lock word, which threads stat-ing one file
/// would pass between their cores). The atomics are the only record of the
/// size and the count, and change only with the lock held for writing (see
/// [`FileWrite`]), so under the lock they are exact.
pub(crate) struct File {
    pages: RwLock<Pages>,
    size: AtomicU64,
    /// The number of pages held: `pages.len()`.
    held: AtomicU64,
}

/// The pages of a file for reading, with its size.
pub(crate) struct FileRead<'a> {
    pages: RwLockReadGuard<'a, Pages>,
    size: u64,
}

/// The pages of a file for writing, with its size to change in place; the
/// size and page count are published to the file's atomics when this goes,
/// before the lock is released.
pub(crate) struct FileWrite<'a> {
    pages: RwLockWriteGuard<'a, Pages>,
    size: u64,
    file: &'a File,
}

/// The index of the page that ends at 2^63.
const LAST_PAGE: u64 = (1u64 << 63) / PAGE_SIZE as u64 - 1;

/// The largest file size (`MAX_LFS_FILESIZE`).
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

impl File {
    /// An empty file.
    pub(crate) fn new() -> File {
        File {
            pages: RwLock::new(Pages::new()),
            size: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// The size, read without the lock.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// The 512-byte blocks of the pages held, read without the lock.
    pub(crate) fn blocks(&self) -> u64 {
        self.held.load(Ordering::Relaxed) * (PAGE_SIZE as u64 / 512)
    }

    /// The number of pages held (for accounting on drop).
    pub(crate) fn pages_held(&mut self) -> u64 {
        self.pages.get_mut().len() as u64
    }

    /// Takes the lock to read the pages.
    pub(crate) fn read(&self) -> FileRead<'_> {
        let pages = self.pages.read();
        // Under the lock: the last writer stored it before releasing.
        let size = self.size.load(Ordering::Relaxed);
        FileRead { pages, size }
    }

    /// Takes the lock to change the pages or the size.
    pub(crate) fn write(&self) -> FileWrite<'_> {
        let pages = self.pages.write();
        let size = self.size.load(Ordering::Relaxed);
        FileWrite {
            pages,
            size,
            file: self,
        }
    }
}

impl Drop for FileWrite<'_> {
    fn drop(&mut self) {
        // Runs before the fields are dropped: the lock is still held.
        self.file.size.store(self.size, Ordering::Relaxed);
        self.file
            .held
            .store(self.pages.len() as u64, Ordering::Relaxed);
    }
}

impl FileRead<'_> {
    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> usize {
        if off >= self.size {
            return 0;
        }
        let end = (off + buf.len() as u64).min(self.size);
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE_SIZE as u64;
            let in_page = (pos % PAGE_SIZE as u64) as usize;
            let n = ((PAGE_SIZE - in_page) as u64).min(end - pos) as usize;
            let dst = &mut buf[(pos - off) as usize..(pos - off) as usize + n];
            match self.pages.get(&idx) {
                Some(p) => dst.copy_from_slice(&p.0[in_page..in_page + n]),
                None => dst.fill(0),
            }
            pos += n as u64;
        }
        (end - off) as usize
    }

    pub(crate) fn seek_data_hole(&self, off: u64, data: bool) -> Result<u64> {
        if off >= self.size {
            return Err(Errno::ENXIO);
        }
        let mut idx = off / PAGE_SIZE as u64;
        let last = (self.size - 1) / PAGE_SIZE as u64;
        while idx <= last {
            // Linux computes the end of the page holding the offset as a
            // signed 64-bit value; for the very last page it wraps, and
            // SEEK_DATA never sees that page's data.
            let present = self.pages.contains_key(&idx) && !(data && idx == LAST_PAGE);
            if present == data {
                let at = (idx * PAGE_SIZE as u64).max(off);
                return Ok(at.min(self.size));
            }
            // Jump over runs quickly: the next present page, or the next gap.
            idx = if data {
                match self
                    .pages
                    .range(idx..)
                    .map(|(&i, _)| i)
                    .find(|&i| i != LAST_PAGE)
                {
                    Some(i) => i,
                    None => return Err(Errno::ENXIO),
                }
            } else {
                idx + 1
            };
        }
        if data {
            Err(Errno::ENXIO)
        } else {
            Ok(self.size)
        }
    }
}

impl FileWrite<'_> {
    /// Writes `buf` at `off`, allocating pages within the size limit. A write
    /// that runs out of space stops at the last whole page it could get and
    /// reports what it wrote; nothing is lost.
    pub(crate) fn write(&mut self, fs: &TmpfsFs, off: u64, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            // A write of nothing changes nothing, not even a far size.
            return Ok(0);
        }
        let end = off.checked_add(buf.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE_SIZE as u64;
            let in_page = (pos % PAGE_SIZE as u64) as usize;
            let n = ((PAGE_SIZE - in_page) as u64).min(end - pos) as usize;
            let page = match self.pages.get_mut(&idx) {
                Some(p) => p,
                None => {
                    if !fs.reserve_pages(1) {
                        break;
                    }
                    self.pages.entry(idx).or_insert_with(Page::zeroed)
                }
            };
            page.0[in_page..in_page + n]
                .copy_from_slice(&buf[(pos - off) as usize..(pos - off) as usize + n]);
            pos += n as u64;
        }
        let written = (pos - off) as usize;
        if written == 0 && !buf.is_empty() {
            return Err(Errno::ENOSPC);
        }
        self.size = self.size.max(pos);
        Ok(written)
    }

    pub(crate) fn truncate(&mut self, fs: &TmpfsFs, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE_SIZE as u64);
            let gone = self.pages.split_off(&first_gone);
            fs.release_pages(gone.len() as u64);
            // Zero the tail of the last partial page so a later extension reads zeros.
            let in_page = (size % PAGE_SIZE as u64) as usize;
            if in_page != 0 {
                if let Some(p) = self.pages.get_mut(&(size / PAGE_SIZE as u64)) {
                    p.0[in_page..].fill(0);
                }
            }
        }
        self.size = size;
    }

    fn allocate(&mut self, fs: &TmpfsFs, off: u64, len: u64, keep_size: bool) -> Result<()> {
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let first = off / PAGE_SIZE as u64;
        let last = (end - 1) / PAGE_SIZE as u64;
        let mut added = Vec::new();
        for idx in first..=last {
            if !self.pages.contains_key(&idx) {
                if !fs.reserve_pages(1) {
                    // All or nothing, as shmem_fallocate undoes a failed allocation.
                    for i in &added {
                        self.pages.remove(i);
                    }
                    fs.release_pages(added.len() as u64);
                    return Err(Errno::ENOSPC);
                }
                self.pages.insert(idx, Page::zeroed());
                added.push(idx);
            }
        }
        if !keep_size {
            self.size = self.size.max(end);
        }
        Ok(())
    }

    fn punch_hole(&mut self, fs: &TmpfsFs, off: u64, len: u64) {
        let end = off.saturating_add(len).min(self.size.max(off));
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE_SIZE as u64;
            let in_page = (pos % PAGE_SIZE as u64) as usize;
            let n = ((PAGE_SIZE - in_page) as u64).min(end - pos) as usize;
            if n == PAGE_SIZE {
                if self.pages.remove(&idx).is_some() {
                    fs.release_pages(1);
                }
            } else if let Some(p) = self.pages.get_mut(&idx) {
                p.0[in_page..in_page + n].fill(0);
            }
            pos += n as u64;
        }
    }
}

impl TmpInode {
    fn file_data(&self) -> Result<&File> {
        match &self.data {
            Data::Regular(d) => Ok(d),
            // `open` serves only regular inodes as their own open files.
            _ => Err(Errno::EBADF),
        }
    }
}

/// An open regular file is served by its inode itself: opening one then
/// allocates nothing.
impl FileOps for TmpInode {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        Ok(self.file_data()?.read().read(off, buf))
    }

    fn write(&self, _ctx: &Ctx<'_>, off: u64, buf: &[u8], append: bool) -> Result<(usize, u64)> {
        let fs = self.fs();
        let mut d = self.file_data()?.write();
        let at = if append { d.size } else { off };
        let n = d.write(fs, at, buf)?;
        drop(d);
        if n > 0 {
            self.mgt.set_ctime_current(&fs.mg);
            let now = fs.now();
            self.stamp_data_change(now);
        }
        Ok((n, at + n as u64))
    }

    fn size(&self) -> u64 {
        self.file_data().map_or(0, File::size)
    }

    fn fsync(&self) -> Result<()> {
        // Memory is as durable as tmpfs gets.
        Ok(())
    }

    fn seek_data_hole(&self, off: u64, data: bool) -> Result<u64> {
        self.file_data()?.read().seek_data_hole(off, data)
    }

    fn allocate(&self, _ctx: &Ctx<'_>, mode: FallocFlags, off: u64, len: u64) -> Result<()> {
        let fs = self.fs();
        let keep = mode.contains(FallocFlags::FALLOC_FL_KEEP_SIZE);
        if !(mode - FallocFlags::FALLOC_FL_KEEP_SIZE - FallocFlags::FALLOC_FL_PUNCH_HOLE).is_empty()
        {
            return Err(Errno::EOPNOTSUPP);
        }
        let mut d = self.file_data()?.write();
        if mode.contains(FallocFlags::FALLOC_FL_PUNCH_HOLE) {
            if !keep {
                return Err(Errno::EOPNOTSUPP);
            }
            d.punch_hole(fs, off, len);
        } else {
            d.allocate(fs, off, len, keep)?;
        }
        drop(d);
        self.mgt.set_ctime_current(&fs.mg);
        let now = fs.now();
        self.stamp_data_change(now);
        Ok(())
    }
}
