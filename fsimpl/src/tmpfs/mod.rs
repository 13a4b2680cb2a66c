//! tmpfs: a memory filesystem whose dentries are authoritative.
//!
//! The directory tree itself is the VFS's dentry tree (a miss is `ENOENT`);
//! tmpfs keeps inodes: attributes, link counts, file pages, symlink targets,
//! extended attributes and FIFO buffers, and it accounts for the `size=` and
//! `nr_inodes=` limits.
//!
//! # Locking
//!
//! Each inode has one `meta` lock and, for regular files, one lock of the
//! pages, taken in the order pages → `meta`. The filesystem's counters are
//! atomics. Nothing is held across a call out.
//!
//! `meta` serialises the writers of an inode's attributes and guards its
//! extended attributes; it is taken only to change something
//! ([`TmpInode::write_meta`]) or to read the extended attributes. `stat`
//! takes no lock: taking even a read lock writes the lock word, which two
//! threads stat-ing one file would pass between their cores. It reads the
//! mode and owner from atomics, the link count and times from a sequence
//! lock of atomics ([`SeqAttrs`]) that writers publish to while holding
//! `meta`, and a file's size and page count, or a directory's entry count,
//! from atomics that change only under the lock of what they count.

mod file;

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use tessera_vfs::abi::*;
use tessera_vfs::acl;
use tessera_vfs::fstype::{
    kstrtoull, memparse, parse_size, FilesystemType, FsTypeOptions, MountData, MountRequest,
    NewFilesystem,
};
use tessera_vfs::inode::{Ctx, FileOps, FilesystemOps, Inode, KeptLink, LinkTarget, NewNode};
use tessera_vfs::mgtime::{MgClock, MgInode};
use tessera_vfs::perm::Owner;
use tessera_vfs::pipe;
use tessera_vfs::Clock;

use file::File;
pub use file::PAGE_SIZE;

/// The magic number `statfs` reports.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// The share of the inode space one inode costs (`BOGO_INODE_SIZE`).
const BOGO_INODE_SIZE: u64 = 1024;
/// The fixed part of an extended attribute's cost (`struct simple_xattr`).
const SIMPLE_XATTR_SIZE: usize = 40;
/// The size tmpfs gives each directory entry (`BOGO_DIRENT_SIZE`).
const BOGO_DIRENT_SIZE: u64 = 20;

/// The `tmpfs` filesystem type.
pub struct TmpfsType {
    total_memory: u64,
}

impl TmpfsType {
    /// A tmpfs type that takes `size=N%` as a share of `total_memory` bytes.
    pub fn new(total_memory: u64) -> TmpfsType {
        TmpfsType { total_memory }
    }
}

impl Default for TmpfsType {
    fn default() -> Self {
        TmpfsType::new(8 << 30)
    }
}

/// The `size=` / `nr_blocks=` and `nr_inodes=` limits of one instance: 0 is
/// none. Atomics, so that every create and every page a write adds reads
/// them without a lock word to write; a remount changes them under
/// `TmpfsFs::remount_lock`.
struct Limits {
    /// Most pages of file data.
    max_pages: AtomicU64,
    /// Most inodes.
    max_inodes: AtomicU64,
}

/// The limits a mount gets when it names none: half the memory in pages,
/// and as many inodes (Linux's `shmem_default_max_blocks` and
/// `shmem_default_max_inodes`). `/proc/mounts` shows a limit only when it
/// differs from these.
fn default_limits(total_memory: u64) -> (u64, u64) {
    let half = total_memory / PAGE_SIZE as u64 / 2;
    (half, half)
}

/// `size=` (bytes, or a share of `total_memory` with `%`) and `nr_blocks=`
/// (pages) set the same limit, and the later one given wins; every one given
/// must parse. The limit in pages, if either was given.
fn take_page_limit(d: &mut MountData, total_memory: u64) -> Result<Option<u64>> {
    let mut pages = None;
    for (k, v) in d.take_each(&["size", "nr_blocks"]) {
        let v = v.ok_or(Errno::EINVAL)?;
        pages = Some(if k == "size" {
            parse_size_opt(&v, total_memory)?
        } else {
            parse_blocks_opt(&v)?
        });
    }
    Ok(pages)
}

/// Takes every `key=value` given (each must parse, the last one counts).
fn take_last<T>(
    d: &mut MountData,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    let mut last = None;
    for (_, v) in d.take_each(&[key]) {
        last = Some(v.as_deref().and_then(&parse).ok_or(Errno::EINVAL)?);
    }
    Ok(last)
}

/// Whether the flag `key` was given; a value is `EINVAL`.
fn take_flag(d: &mut MountData, key: &str) -> Result<bool> {
    let given = d.take_each(&[key]);
    if given.iter().any(|(_, v)| v.is_some()) {
        return Err(Errno::EINVAL);
    }
    Ok(!given.is_empty())
}

/// A user or group id (`fsparam_uid`): any base, not -1.
fn parse_id(v: &str) -> Option<u32> {
    kstrtoull(v, 0)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n != u32::MAX)
}

/// `mode=` (octal, the permission bits kept), `uid=` and `gid=`, each
/// checked as `shmem_parse_one` does.
fn take_owner_opts(d: &mut MountData) -> Result<(Option<u32>, Option<u32>, Option<u32>)> {
    let mode = take_last(d, "mode", |v| {
        kstrtoull(v, 8)
            .and_then(|n| u32::try_from(n).ok())
            .map(|m| m & 0o7777)
    })?;
    let uid = take_last(d, "uid", parse_id)?;
    let gid = take_last(d, "gid", parse_id)?;
    Ok((mode, uid, gid))
}

/// The options that change nothing Tessera keeps but must be well formed:
/// `huge=`, `mpol=`, `inode32`, `inode64`, and (not on a remount) `noswap`.
fn take_checked_only(d: &mut MountData, remount: bool) -> Result<()> {
    take_last(d, "huge", |v| {
        matches!(v, "never" | "always" | "within_size" | "advise").then_some(())
    })?;
    take_last(d, "mpol", |v| mpol_ok(v).then_some(()))?;
    take_flag(d, "inode32")?;
    take_flag(d, "inode64")?;
    // Swap cannot be turned off on a remount.
    if take_flag(d, "noswap")? && remount {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Whether `v` is a memory policy `mpol_parse_str` accepts on a machine
/// with one memory node (node 0): `mode[=static|=relative][:nodelist]`.
fn mpol_ok(v: &str) -> bool {
    let (head, nodelist) = match v.split_once(':') {
        Some((h, n)) => (h, Some(n)),
        None => (v, None),
    };
    // A flag may also follow the node list (`bind:0=static`).
    let (mode, flags, nodelist) = match (head.split_once('='), nodelist) {
        (Some((m, f)), n) => (m, Some(f), n),
        (None, Some(n)) => match n.split_once('=') {
            Some((n, f)) => (head, Some(f), Some(n)),
            None => (head, None, Some(n)),
        },
        (None, None) => (head, None, None),
    };
    let nodes = match nodelist.map(nodelist_nodes) {
        Some(None) => return false,
        Some(Some(n)) => n,
        None => 0,
    };
    let flagged = match flags {
        None => false,
        Some("static" | "relative") => true,
        Some(_) => return false,
    };
    match mode {
        // An empty node list only; flags are not looked at.
        "default" => nodelist.is_none(),
        // One node, written as plain digits, or none (local allocation,
        // which takes no flags).
        "prefer" => match nodelist {
            Some(n) => n.bytes().all(|c| c.is_ascii_digit()) && nodes > 0,
            None => !flagged,
        },
        "interleave" | "weighted interleave" => nodelist.is_none() || nodes > 0,
        "local" => nodelist.is_none() && !flagged,
        "bind" | "prefer (many)" => nodelist.is_some() && nodes > 0,
        _ => false,
    }
}

/// The nodes a node list names (`bitmap_parselist`: `N` or `N-M`, comma
/// separated, blanks around), as a count; `None` when it is malformed or
/// names a node other than 0, the only one with memory.
fn nodelist_nodes(list: &str) -> Option<u32> {
    if list.trim().is_empty() {
        return Some(0);
    }
    let mut n = 0;
    for part in list.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
        if a > b || b > 0 || !part.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        n += 1;
    }
    Some(n)
}

/// `size=`: bytes (with a `k`, `m`, `g` … suffix), or a percentage of
/// `total` with `%`, which may exceed 100; in pages, rounded up. As
/// `shmem_parse_one`, in wrapping arithmetic.
fn parse_size_opt(v: &str, total: u64) -> Result<u64> {
    let page = PAGE_SIZE as u64;
    let (mut size, mut rest) = memparse(v);
    if let Some(r) = rest.strip_prefix('%') {
        size = size.wrapping_mul(page).wrapping_mul(total / page) / 100;
        rest = r;
    }
    if v.is_empty() || !rest.is_empty() {
        return Err(Errno::EINVAL);
    }
    Ok(size.wrapping_add(page - 1) / page)
}

/// `nr_blocks=`: pages, at most `LONG_MAX`.
fn parse_blocks_opt(v: &str) -> Result<u64> {
    parse_size(v)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or(Errno::EINVAL)
}

/// `nr_inodes=`: at most what the inode space can count.
fn parse_inodes_opt(v: &str) -> Result<u64> {
    parse_size(v)
        .filter(|&n| n <= u64::MAX / BOGO_INODE_SIZE)
        .ok_or(Errno::EINVAL)
}

impl FilesystemType for TmpfsType {
    fn name(&self) -> &str {
        "tmpfs"
    }

    fn options(&self) -> FsTypeOptions {
        FsTypeOptions {
            allow_user_mount: true,
            allow_user_list: true,
            nodev: true,
        }
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem> {
        let mut d: MountData = req.data.clone();
        d.join_digit_items();
        let pages = take_page_limit(&mut d, self.total_memory)?;
        let inodes = take_last(&mut d, "nr_inodes", |v| parse_inodes_opt(v).ok())?;
        let (mode, uid, gid) = take_owner_opts(&mut d)?;
        take_checked_only(&mut d, false)?;
        d.finish()?;
        let (default_pages, default_inodes) = default_limits(self.total_memory);
        let fs = Arc::new(TmpfsFs {
            limits: Limits {
                max_pages: AtomicU64::new(pages.unwrap_or(default_pages)),
                max_inodes: AtomicU64::new(inodes.unwrap_or(default_inodes)),
            },
            remount_lock: Mutex::new(()),
            total_memory: self.total_memory,
            used_pages: AtomicU64::new(0),
            used_ispace: AtomicU64::new(0),
            orphans: AtomicU64::new(0),
            next_ino: AtomicU64::new(1),
            clock: req.vfs.clock(),
            mg: req.vfs.mg_clock().clone(),
            root_mode: mode.unwrap_or(0o1777) & 0o7777,
            // The root belongs to whoever mounts, unless uid=/gid= say otherwise.
            root_uid: uid.unwrap_or(req.cred.fsuid),
            root_gid: gid.unwrap_or(req.cred.fsgid),
        });
        let node = NewNode {
            ftype: FileType::Directory,
            mode: fs.root_mode,
            uid: fs.root_uid,
            gid: fs.root_gid,
            rdev: DevId::default(),
            target: &[],
        };
        let root = TmpInode::new(&fs, &node, fs.now())?;
        root.write_meta().nlink = 2;
        Ok(NewFilesystem { ops: fs, root })
    }
}

/// One tmpfs instance.
pub struct TmpfsFs {
    limits: Limits,
    /// Serialises remounts: a limit is checked against the use and set in
    /// one step.
    remount_lock: Mutex<()>,
    /// What `size=N%` is a share of.
    total_memory: u64,
    used_pages: AtomicU64,
    used_ispace: AtomicU64,
    /// Inodes with no name left that are still in use (Linux's
    /// `s_remove_count`): a read-only remount must wait for them.
    orphans: AtomicU64,
    next_ino: AtomicU64,
    clock: Arc<dyn Clock>,
    /// The multigrain order shared with the VFS (see `vfs::mgtime`).
    mg: Arc<MgClock>,
    root_mode: u32,
    root_uid: u32,
    root_gid: u32,
}

impl TmpfsFs {
    /// The page and inode limits (0: none).
    fn limits(&self) -> (u64, u64) {
        (
            self.limits.max_pages.load(Ordering::Relaxed),
            self.limits.max_inodes.load(Ordering::Relaxed),
        )
    }

    fn now(&self) -> Timespec {
        self.clock.now()
    }

    /// Takes `n` pages from the size limit; false when it would be exceeded.
    pub(crate) fn reserve_pages(&self, n: u64) -> bool {
        let max = self.limits.max_pages.load(Ordering::Relaxed);
        if max == 0 {
            self.used_pages.fetch_add(n, Ordering::Relaxed);
            return true;
        }
        self.used_pages
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&v| v <= max)
            })
            .is_ok()
    }

    pub(crate) fn release_pages(&self, n: u64) {
        // Most files removed held no page: no write to the shared counter.
        if n != 0 {
            self.used_pages.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Takes `bytes` of the inode space: `nr_inodes` × [`BOGO_INODE_SIZE`],
    /// which inodes, extra names and extended attributes share, as in
    /// Linux's tmpfs (`free_ispace`). Without a limit nothing is counted
    /// against, but the use is still tracked.
    fn reserve_ispace(&self, bytes: u64) -> Result<()> {
        let max = self
            .limits
            .max_inodes
            .load(Ordering::Relaxed)
            .saturating_mul(BOGO_INODE_SIZE);
        if max == 0 {
            self.used_ispace.fetch_add(bytes, Ordering::Relaxed);
            return Ok(());
        }
        self.used_ispace
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&v| v <= max)
            })
            .map(|_| ())
            .map_err(|_| Errno::ENOSPC)
    }

    fn release_ispace(&self, bytes: u64) {
        self.used_ispace.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn reserve_inode(&self) -> Result<()> {
        self.reserve_ispace(BOGO_INODE_SIZE)
    }

    fn release_inode(&self) {
        self.release_ispace(BOGO_INODE_SIZE);
    }

    /// What an extended attribute costs (`simple_xattr_space`), charged
    /// only when the filesystem has an inode limit.
    fn xattr_cost(&self, name: &[u8], value: &[u8]) -> u64 {
        if self.limits.max_inodes.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        (SIMPLE_XATTR_SIZE + value.len() + name.len()) as u64
    }
}

impl FilesystemOps for TmpfsFs {
    fn statfs(&self) -> Result<Statfs> {
        let (max_pages, max_inodes) = self.limits();
        let used = self.used_pages.load(Ordering::Relaxed);
        let iused = self.used_ispace.load(Ordering::Relaxed) / BOGO_INODE_SIZE;
        let (blocks, bfree) = if max_pages == 0 {
            (0, 0)
        } else {
            (max_pages, max_pages.saturating_sub(used))
        };
        let (files, ffree) = if max_inodes == 0 {
            (0, 0)
        } else {
            (max_inodes, max_inodes.saturating_sub(iused))
        };
        Ok(Statfs {
            fs_type: TMPFS_MAGIC,
            bsize: PAGE_SIZE as u64,
            blocks,
            bfree,
            bavail: bfree,
            files,
            ffree,
            namelen: NAME_MAX as u64,
            flags: 0,
        })
    }

    fn busy_for_readonly(&self) -> bool {
        self.orphans.load(Ordering::Acquire) != 0
    }

    fn show_options(&self) -> String {
        let (max_pages, max_inodes) = self.limits();
        let (default_pages, default_inodes) = default_limits(self.total_memory);
        let mut parts = Vec::new();
        if max_pages != default_pages {
            parts.push(format!("size={}k", max_pages * (PAGE_SIZE as u64 / 1024)));
        }
        if max_inodes != default_inodes {
            parts.push(format!("nr_inodes={max_inodes}"));
        }
        if self.root_mode != 0o1777 {
            parts.push(format!("mode={:o}", self.root_mode));
        }
        if self.root_uid != 0 {
            parts.push(format!("uid={}", self.root_uid));
        }
        if self.root_gid != 0 {
            parts.push(format!("gid={}", self.root_gid));
        }
        parts.push("inode64".to_string());
        parts.join(",")
    }

    fn remount(&self, data: &MountData) -> Result<()> {
        let mut d = data.clone();
        d.join_digit_items();
        let pages = take_page_limit(&mut d, self.total_memory)?;
        let inodes = take_last(&mut d, "nr_inodes", |v| parse_inodes_opt(v).ok())?;
        // Parsed (a bad value is EINVAL) but not applied on remount, as in
        // Linux's shmem_reconfigure.
        take_owner_opts(&mut d)?;
        take_checked_only(&mut d, true)?;
        d.finish()?;
        let _held = self.remount_lock.lock();
        let (max_pages, max_inodes) = self.limits();
        // `shmem_reconfigure`: an unlimited instance cannot be given a
        // limit, nor one below what is in use; nothing changes on a refusal.
        if let Some(p) = pages.filter(|&p| p != 0) {
            if max_pages == 0 || p < self.used_pages.load(Ordering::Relaxed) {
                return Err(Errno::EINVAL);
            }
        }
        if let Some(n) = inodes.filter(|&n| n != 0) {
            if max_inodes == 0
                || n.saturating_mul(BOGO_INODE_SIZE) < self.used_ispace.load(Ordering::Relaxed)
            {
                return Err(Errno::EINVAL);
            }
        }
        if let Some(p) = pages {
            self.limits.max_pages.store(p, Ordering::Relaxed);
        }
        if let Some(n) = inodes {
            self.limits.max_inodes.store(n, Ordering::Relaxed);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The attributes of an inode that `stat` reads and writers change, as
/// plain values: a copy of what a [`SeqAttrs`] holds.
#[derive(Clone, Copy)]
struct Attrs {
    nlink: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    /// An `O_TMPFILE` inode that never had a name: linking it is allowed
    /// with a link count of 0, and does not reserve another inode.
    tmpfile: bool,
}

/// The [`Attrs`] of an inode in a sequence lock made only of atomics, so
/// that `stat` reads them without writing anything: the lock word of even a
/// read lock is a shared write, which threads stat-ing one file would pass
/// between their cores. A time is two atomics, seconds and nanoseconds; the
/// 4-byte fields pack together, so the whole takes 48 bytes.
///
/// Writers hold the inode's `meta` lock, so there is only ever one; they
/// go through [`TmpInode::write_meta`], which publishes here. A reader that
/// overlaps a write sees an odd or a changed sequence and reads again.
struct SeqAttrs {
    /// Odd while a write is under way; 2 more after each write.
    seq: AtomicU32,
    nlink: AtomicU32,
    atime_sec: AtomicI64,
    atime_nsec: AtomicU32,
    mtime_sec: AtomicI64,
    mtime_nsec: AtomicU32,
    ctime_sec: AtomicI64,
    ctime_nsec: AtomicU32,
    tmpfile: AtomicBool,
    /// Whether `security.capability` is set: not one of the attributes the
    /// sequence covers, but kept here where the struct has room (a field
    /// of its own would move every inode to a bigger allocation). Changed
    /// under `meta`; each write asks, and most files have none, so the
    /// answer must not take the lock.
    file_caps: AtomicBool,
}

impl SeqAttrs {
    fn new(a: &Attrs) -> SeqAttrs {
        SeqAttrs {
            seq: AtomicU32::new(0),
            nlink: AtomicU32::new(a.nlink),
            atime_sec: AtomicI64::new(a.atime.sec),
            atime_nsec: AtomicU32::new(a.atime.nsec),
            mtime_sec: AtomicI64::new(a.mtime.sec),
            mtime_nsec: AtomicU32::new(a.mtime.nsec),
            ctime_sec: AtomicI64::new(a.ctime.sec),
            ctime_nsec: AtomicU32::new(a.ctime.nsec),
            tmpfile: AtomicBool::new(a.tmpfile),
            file_caps: AtomicBool::new(false),
        }
    }

    /// The fields, loaded one by one: a consistent set only when no write
    /// runs meanwhile (under the writers' lock, or checked by [`SeqAttrs::read`]).
    fn load(&self) -> Attrs {
        let t = |sec: &AtomicI64, nsec: &AtomicU32| Timespec {
            sec: sec.load(Ordering::Relaxed),
            nsec: nsec.load(Ordering::Relaxed),
        };
        Attrs {
            nlink: self.nlink.load(Ordering::Relaxed),
            atime: t(&self.atime_sec, &self.atime_nsec),
            mtime: t(&self.mtime_sec, &self.mtime_nsec),
            ctime: t(&self.ctime_sec, &self.ctime_nsec),
            tmpfile: self.tmpfile.load(Ordering::Relaxed),
        }
    }

    /// The attributes of one write, without a lock.
    fn read(&self) -> Attrs {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let a = self.load();
            // Orders the loads above before the check below: a load that saw
            // a field of a later write makes the check see that write's
            // odd sequence (the writer's release fence pairs with this one).
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return a;
            }
        }
    }

    /// Sets the link count to `nlink(old)` and the ctime (and the mtime
    /// too when `mtime`) to `now`, storing only those: the change every
    /// create, link and removal makes, without the copy of every attribute
    /// a [`MetaGuard`] makes. `_held` is the inode's `meta` lock. Returns
    /// the old link count.
    fn stamp(
        &self,
        _held: &RwLockWriteGuard<'_, Option<Box<Xattrs>>>,
        nlink: impl FnOnce(u32) -> u32,
        mtime: bool,
        now: Timespec,
    ) -> u32 {
        let old = self.nlink.load(Ordering::Relaxed);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.nlink.store(nlink(old), Ordering::Relaxed);
        if mtime {
            self.mtime_sec.store(now.sec, Ordering::Relaxed);
            self.mtime_nsec.store(now.nsec, Ordering::Relaxed);
        }
        self.ctime_sec.store(now.sec, Ordering::Relaxed);
        self.ctime_nsec.store(now.nsec, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
        old
    }

    /// Stores `a`; the caller holds the inode's `meta` lock for writing.
    fn publish(&self, a: &Attrs) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the stores below.
        fence(Ordering::Release);
        let t = |sec: &AtomicI64, nsec: &AtomicU32, v: Timespec| {
            sec.store(v.sec, Ordering::Relaxed);
            nsec.store(v.nsec, Ordering::Relaxed);
        };
        self.nlink.store(a.nlink, Ordering::Relaxed);
        t(&self.atime_sec, &self.atime_nsec, a.atime);
        t(&self.mtime_sec, &self.mtime_nsec, a.mtime);
        t(&self.ctime_sec, &self.ctime_nsec, a.ctime);
        self.tmpfile.store(a.tmpfile, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

/// A writer's hold on an inode's attributes ([`TmpInode::write_meta`]): the
/// `meta` lock, and a copy of the [`Attrs`] (it derefs to it) to change in
/// place, published to the sequence lock when the guard goes, before the
/// lock is released. The copy is loaded under the lock, so it is never
/// stale, and two guards of one inode cannot coexist.
struct MetaGuard<'a> {
    /// The `meta` lock, held (not read) so that this is the only writer.
    _held: RwLockWriteGuard<'a, Option<Box<Xattrs>>>,
    attrs: Attrs,
    seq: &'a SeqAttrs,
}

impl Deref for MetaGuard<'_> {
    type Target = Attrs;

    fn deref(&self) -> &Attrs {
        &self.attrs
    }
}

impl DerefMut for MetaGuard<'_> {
    fn deref_mut(&mut self) -> &mut Attrs {
        &mut self.attrs
    }
}

impl Drop for MetaGuard<'_> {
    fn drop(&mut self) {
        // Runs before the fields are dropped: the lock is still held.
        // Published without comparing: every guard is taken to change an
        // attribute (the extended attributes alone take `meta` directly),
        // and comparing costs about what storing does.
        self.seq.publish(&self.attrs);
    }
}

/// What an inode holds by its type.
enum Data {
    Regular(File),
    Symlink(LinkTarget),
    Fifo(Arc<pipe::Pipe>),
    /// The number of entries (for the size): an atomic for `stat`, as a
    /// file's size is (see [`File`]), written only under `meta`. It is kept
    /// here rather than in [`SeqAttrs`], which then has room for `tmpfile`
    /// in what would be padding: memory per file is one of the figures tmpfs
    /// is judged by.
    Directory(AtomicU32),
    /// A character or block device: its number.
    Device(DevId),
    /// A socket.
    Other,
}

/// Extended attributes by name.
type Xattrs = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// Whether a symbolic link's target is too long to keep in the inode
/// (`SHORT_SYMLINK_LEN`, counting the NUL) and takes a page instead.
fn is_long_link(target: &[u8]) -> bool {
    target.len() + 1 > 128
}

/// The owner ids in one word, so that a reader sees uid and gid of the same `chown`.
fn pack_ids(uid: u32, gid: u32) -> u64 {
    uid as u64 | (gid as u64) << 32
}

/// A tmpfs inode.
pub struct TmpInode {
    /// The filesystem's state, held strongly: it holds no inode, so there
    /// is no cycle, and an inode outliving its mount (an open file) keeps
    /// the counts it gives back when it goes. Upgrading a weak reference
    /// was two atomic writes to one line every inode shares, in every
    /// create, unlink and inode drop.
    fs: Arc<TmpfsFs>,
    ino: u64,
    /// Type and permission bits, and the owner ids (uid low, gid high):
    /// atomics outside `meta` because every path component checks them, so
    /// reading them must not write to a lock word shared by every walker
    /// (as Linux reads `i_mode`/`i_uid` without a lock in `generic_permission`).
    /// Written only with `meta` held, so writers stay serialised.
    mode: AtomicU32,
    ids: AtomicU64,
    /// The ctime in the multigrain order.
    mgt: MgInode,
    /// The link count and times (see [`SeqAttrs`]).
    attrs: SeqAttrs,
    /// The writers' lock of `attrs`, `mode`, `ids` and a directory's entry
    /// count, and the lock of the extended attributes: taken through
    /// [`TmpInode::write_meta`] to change an attribute, directly for the
    /// extended attributes alone.
    meta: RwLock<Option<Box<Xattrs>>>,
    data: Data,
}

/// The file-capability attribute, which writes and chowns remove.
const FILE_CAPS: &[u8] = b"security.capability";

impl TmpInode {
    /// A new inode stamped `now`.
    fn new(fs: &Arc<TmpfsFs>, node: &NewNode<'_>, now: Timespec) -> Result<Arc<TmpInode>> {
        fs.reserve_inode()?;
        // `shmem_symlink` keeps a long target in a page of the file, which
        // the size limit counts.
        if node.ftype == FileType::Symlink && is_long_link(node.target) && !fs.reserve_pages(1) {
            fs.release_inode();
            return Err(Errno::ENOSPC);
        }
        let data = match node.ftype {
            FileType::Regular => Data::Regular(File::new()),
            FileType::Symlink => Data::Symlink(LinkTarget::new(node.target, fs.mg.coarse())),
            FileType::Fifo => Data::Fifo(Arc::new(pipe::Pipe::default())),
            FileType::Directory => Data::Directory(AtomicU32::new(0)),
            _ if node.ftype.is_device() => Data::Device(node.rdev),
            _ => Data::Other,
        };
        Ok(Arc::new(TmpInode {
            fs: fs.clone(),
            ino: fs.next_ino.fetch_add(1, Ordering::Relaxed),
            mode: AtomicU32::new(node.ftype.mode_bits() | (node.mode & 0o7777)),
            ids: AtomicU64::new(pack_ids(node.uid, node.gid)),
            mgt: MgInode::new(&fs.mg),
            attrs: SeqAttrs::new(&Attrs {
                nlink: if node.ftype == FileType::Directory {
                    2
                } else {
                    1
                },
                atime: now,
                mtime: now,
                ctime: now,
                tmpfile: false,
            }),
            meta: RwLock::new(None),
            data,
        }))
    }

    /// Takes the `meta` lock to change the attributes: see [`MetaGuard`].
    fn write_meta(&self) -> MetaGuard<'_> {
        let held = self.meta.write();
        // Under the lock no write runs, so the fields are one write's.
        let attrs = self.attrs.load();
        MetaGuard {
            _held: held,
            attrs,
            seq: &self.attrs,
        }
    }

    /// The file type, kept in the type bits of `mode` (it never changes).
    fn ftype(&self) -> FileType {
        FileType::from_mode(self.mode.load(Ordering::Relaxed)).unwrap_or(FileType::Regular)
    }

    fn fs(&self) -> &Arc<TmpfsFs> {
        &self.fs
    }

    fn now(&self) -> Timespec {
        self.fs.now()
    }

    /// Marks a change of this directory's entries (mtime, ctime, size, link
    /// count) at `now`. The caller passes its filesystem reference and the
    /// time it read once for the whole operation: Linux reads a coarse
    /// clock (one value per tick) for each inode it stamps, a read that
    /// costs a system call here.
    fn dir_changed(&self, fs: &TmpfsFs, entries: i32, links: i32, now: Timespec) {
        self.changed(fs, entries, links, None, now);
    }

    /// [`TmpInode::dir_changed`] whose multigrain ctime is `t`, another
    /// inode's new ctime (`shmem_link`, `shmem_unlink`).
    fn dir_changed_as(&self, fs: &TmpfsFs, entries: i32, links: i32, t: u32, now: Timespec) {
        self.changed(fs, entries, links, Some(t), now);
    }

    fn changed(&self, fs: &TmpfsFs, entries: i32, links: i32, t: Option<u32>, now: Timespec) {
        match t {
            Some(t) => self.mgt.set_ctime_to(t),
            None => {
                self.mgt.set_ctime_current(&fs.mg);
            }
        }
        let held = self.meta.write();
        self.attrs
            .stamp(&held, |n| n.saturating_add_signed(links), true, now);
        if let Data::Directory(n) = &self.data {
            // One update: all its writers hold `meta`.
            let v = n.load(Ordering::Relaxed).saturating_add_signed(entries);
            n.store(v, Ordering::Relaxed);
        }
    }

    /// `inode_set_ctime_current` in the multigrain order; returns the time.
    fn mg_changed(&self) -> u32 {
        self.mgt.set_ctime_current(&self.fs.mg)
    }

    /// A change of the inode itself (a rename, an extended attribute): the
    /// ctime set to `now`.
    fn touch_ctime(&self, now: Timespec) {
        let fs = &self.fs;
        self.mgt.set_ctime_current(&fs.mg);
        let held = self.meta.write();
        self.attrs.stamp(&held, |n| n, false, now);
    }

    /// A change of the data: mtime and ctime set to `now` (stored alone,
    /// as [`SeqAttrs::stamp`] does: every write pays it).
    fn stamp_data_change(&self, now: Timespec) {
        let held = self.meta.write();
        self.attrs.stamp(&held, |n| n, true, now);
    }

    /// Removes one name: the count and the inode reservation of an extra
    /// name change together, under the attribute lock.
    fn drop_link(&self, fs: &TmpfsFs, now: Timespec) -> u32 {
        let t = self.mgt.set_ctime_current(&fs.mg);
        let held = self.meta.write();
        let old = self.attrs.stamp(&held, |n| n.saturating_sub(1), false, now);
        if old > 1 {
            fs.release_inode();
        } else if old == 1 {
            fs.orphans.fetch_add(1, Ordering::AcqRel);
        }
        t
    }

    /// Sets the link count to 0 (a removed directory), counting the orphan.
    fn clear_links(&self, fs: &TmpfsFs, now: Timespec) -> u32 {
        let t = self.mgt.set_ctime_current(&fs.mg);
        let held = self.meta.write();
        if self.attrs.stamp(&held, |_| 0, false, now) != 0 {
            fs.orphans.fetch_add(1, Ordering::AcqRel);
        }
        t
    }

    fn downcast(i: &Arc<dyn Inode>) -> Result<&TmpInode> {
        i.as_any().downcast_ref::<TmpInode>().ok_or(Errno::EXDEV)
    }

    /// The attributes, with the mount's part given: built in one piece, so
    /// that they are written where the caller receives them.
    #[inline(always)]
    fn stat_as(&self, dev: DevId, mnt_id: u64, extra: StatxMask) -> Statx {
        // No lock and no write to the inode (see the module's locking notes).
        let (size, blocks) = self.size_and_blocks();
        let o = self.owner();
        let a = self.attrs.read();
        Statx {
            mask: StatxMask::BASIC_STATS | extra,
            blksize: PAGE_SIZE as u32,
            nlink: a.nlink,
            uid: o.uid,
            gid: o.gid,
            mode: o.mode,
            ino: self.ino,
            size,
            blocks,
            atime: a.atime,
            btime: Timespec::default(),
            ctime: a.ctime,
            mtime: a.mtime,
            rdev: match &self.data {
                Data::Device(d) => *d,
                _ => DevId::default(),
            },
            dev,
            mnt_id,
        }
    }

    /// The size and the 512-byte blocks, without a lock.
    fn size_and_blocks(&self) -> (u64, u64) {
        match &self.data {
            Data::Regular(f) => (f.size(), f.blocks()),
            Data::Symlink(t) => {
                let t = t.bytes();
                let blocks = if is_long_link(t) {
                    PAGE_SIZE as u64 / 512
                } else {
                    0
                };
                (t.len() as u64, blocks)
            }
            Data::Directory(n) => (n.load(Ordering::Relaxed) as u64 * BOGO_DIRENT_SIZE, 0),
            _ => (0, 0),
        }
    }
}

impl Drop for TmpInode {
    fn drop(&mut self) {
        let fs = &self.fs;
        match &mut self.data {
            Data::Regular(f) => fs.release_pages(f.pages_held()),
            Data::Symlink(t) if is_long_link(t.bytes()) => fs.release_pages(1),
            _ => {}
        }
        if let Some(x) = self.meta.get_mut().take() {
            fs.release_ispace(x.iter().map(|(k, v)| fs.xattr_cost(k, v)).sum());
        }
        if *self.attrs.nlink.get_mut() == 0 {
            fs.orphans.fetch_sub(1, Ordering::AcqRel);
        }
        fs.release_inode();
    }
}

impl Inode for TmpInode {
    fn file_type(&self) -> FileType {
        self.ftype()
    }

    fn owner(&self) -> Owner {
        let ids = self.ids.load(Ordering::Acquire);
        Owner {
            mode: self.mode.load(Ordering::Acquire),
            uid: ids as u32,
            gid: (ids >> 32) as u32,
        }
    }

    fn times_queried(&self) {
        self.mgt.query();
    }

    fn touch_atime(&self, clock: &MgClock) {
        if let Data::Symlink(t) = &self.data {
            t.atime().touch(&self.mgt, clock);
            self.write_meta().atime = self.now();
        }
    }

    fn stat(&self) -> Statx {
        self.stat_as(DevId::default(), 0, StatxMask::empty())
    }

    fn stat_for_call(&self, dev: DevId, mnt_id: u64) -> Statx {
        self.times_queried();
        self.stat_as(dev, mnt_id, StatxMask::MNT_ID)
    }

    fn setattr(&self, _ctx: &Ctx<'_>, attr: &SetAttr) -> Result<()> {
        let now = self.now();
        self.mg_changed();
        if let Some(size) = attr.size {
            let Data::Regular(d) = &self.data else {
                return Err(Errno::EINVAL);
            };
            let fs = self.fs();
            d.write().truncate(fs, size);
            let mut m = self.write_meta();
            m.mtime = now;
            m.ctime = now;
        }
        let mut m = self.write_meta();
        if let Some(mode) = attr.mode {
            let old = self.mode.load(Ordering::Acquire);
            self.mode
                .store((old & S_IFMT) | (mode & 0o7777), Ordering::Release);
        }
        if attr.uid.is_some() || attr.gid.is_some() {
            let o = self.owner();
            let ids = pack_ids(attr.uid.unwrap_or(o.uid), attr.gid.unwrap_or(o.gid));
            self.ids.store(ids, Ordering::Release);
        }
        if let Some(t) = attr.atime {
            m.atime = t;
        }
        if let Some(t) = attr.mtime {
            m.mtime = t;
        }
        m.ctime = attr.ctime.unwrap_or(now);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn create(&self, _ctx: &Ctx<'_>, _name: &[u8], new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        let fs = self.fs();
        let now = fs.now();
        let inode = TmpInode::new(fs, new, now)?;
        self.dir_changed(
            fs,
            1,
            if new.ftype == FileType::Directory {
                1
            } else {
                0
            },
            now,
        );
        Ok(inode)
    }

    fn tmpfile(&self, _ctx: &Ctx<'_>, new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        let fs = self.fs();
        let inode = TmpInode::new(fs, new, fs.now())?;
        {
            let mut m = inode.write_meta();
            m.nlink = 0;
            m.tmpfile = true;
        }
        fs.orphans.fetch_add(1, Ordering::AcqRel);
        Ok(inode)
    }

    fn link(&self, _ctx: &Ctx<'_>, _name: &[u8], target: &Arc<dyn Inode>) -> Result<()> {
        let t = Self::downcast(target)?;
        let fs = self.fs();
        let now = fs.now();
        {
            // Count check and update in one critical section: a concurrent
            // unlink of the last name must not be undone (Linux: ENOENT).
            let mut m = t.write_meta();
            if m.nlink == 0 && !m.tmpfile {
                return Err(Errno::ENOENT);
            }
            // Every extra name costs an inode, as in Linux's tmpfs, so
            // nr_inodes bounds dentries; the first name of a tmpfile is
            // paid for already.
            if m.nlink > 0 {
                fs.reserve_inode()?;
            } else {
                fs.orphans.fetch_sub(1, Ordering::AcqRel);
            }
            m.nlink += 1;
            m.tmpfile = false;
            m.ctime = now;
        }
        // `shmem_link`: the directory takes the inode's new ctime.
        self.dir_changed_as(fs, 1, 0, t.mgt.set_ctime_current(&fs.mg), now);
        Ok(())
    }

    fn unlink(&self, _ctx: &Ctx<'_>, _name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        let c = Self::downcast(child)?;
        // `shmem_unlink`: the directory takes the inode's new ctime.
        let fs = self.fs();
        let now = fs.now();
        self.dir_changed_as(fs, -1, 0, c.drop_link(fs, now), now);
        Ok(())
    }

    fn rmdir(&self, _ctx: &Ctx<'_>, _name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        let c = Self::downcast(child)?;
        let fs = self.fs();
        let now = fs.now();
        self.dir_changed_as(fs, -1, -1, c.clear_links(fs, now), now);
        Ok(())
    }

    fn rename(
        &self,
        _ctx: &Ctx<'_>,
        _old_name: &[u8],
        child: &Arc<dyn Inode>,
        new_dir: &Arc<dyn Inode>,
        _new_name: &[u8],
        replaced: Option<&Arc<dyn Inode>>,
        flags: RenameFlags,
    ) -> Result<()> {
        let c = Self::downcast(child)?;
        let nd = Self::downcast(new_dir)?;
        let fs = self.fs();
        let now = fs.now();
        let same = std::ptr::eq(self, nd);
        let c_dir = c.ftype() == FileType::Directory;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let r = Self::downcast(replaced.ok_or(Errno::ENOENT)?)?;
            let r_dir = r.ftype() == FileType::Directory;
            if !same && c_dir != r_dir {
                let d = if c_dir { 1 } else { -1 };
                self.dir_changed(fs, 0, -d, now);
                nd.dir_changed(fs, 0, d, now);
            } else {
                self.dir_changed(fs, 0, 0, now);
                if !same {
                    nd.dir_changed(fs, 0, 0, now);
                }
            }
            c.touch_ctime(now);
            r.touch_ctime(now);
            return Ok(());
        }
        let replaced = replaced.map(Self::downcast).transpose()?;
        if let Some(r) = replaced {
            if r.ftype() == FileType::Directory {
                nd.dir_changed_as(fs, -1, -1, r.clear_links(fs, now), now);
            } else {
                nd.dir_changed_as(fs, -1, 0, r.drop_link(fs, now), now);
            }
        }
        // `simple_rename_timestamp`: both directories, the moved inode, then
        // the replaced one.
        let links = if c_dir { 1 } else { 0 };
        self.dir_changed(fs, -1, -links, now);
        nd.dir_changed(fs, 1, links, now);
        c.touch_ctime(now);
        if let Some(r) = replaced {
            r.mg_changed();
        }
        Ok(())
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        match &self.data {
            Data::Symlink(t) => Ok(t.bytes().to_vec()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn link_target(&self) -> Result<Arc<[u8]>> {
        match &self.data {
            Data::Symlink(t) => Ok(t.bytes().clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn kept_link(&self) -> Option<KeptLink<'_>> {
        match &self.data {
            Data::Symlink(t) => Some(KeptLink {
                target: t,
                ctime: &self.mgt,
            }),
            _ => None,
        }
    }

    fn open(self: Arc<Self>, flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        if let Data::Regular(_) = &self.data {
            return Ok(self);
        }
        match &self.data {
            Data::Fifo(p) => Ok(Arc::new(pipe::PipeEnd::open(p.clone(), flags)?)),
            _ if self.ftype() == FileType::Directory => Ok(Arc::new(DirFile)),
            _ => Err(Errno::ENXIO),
        }
    }

    fn getxattr(&self, name: &[u8]) -> Result<Vec<u8>> {
        self.meta
            .read()
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|v| v.to_vec())
            .ok_or(Errno::ENODATA)
    }

    fn setxattr(&self, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        if let Some(default) = acl::kind(name) {
            match acl::parse(value)? {
                _ if default && self.ftype() != FileType::Directory => return Err(Errno::EACCES),
                // An ACL that says no more than the mode bits becomes them
                // (`posix_acl_equiv_mode`) and is not stored.
                acl::Acl::Mode(bits) if !default => {
                    // `meta` serialises the mode's writers; no attribute
                    // of the sequence lock changes, so none is published.
                    let m = self.meta.write();
                    let old = self.mode.load(Ordering::Acquire);
                    self.mode.store((old & !0o777) | bits, Ordering::Release);
                    drop(m);
                    return self.removexattr(name);
                }
                _ => {}
            }
        }
        let fs = self.fs();
        {
            let mut xattrs = self.meta.write();
            let map = xattrs.get_or_insert_with(Default::default);
            let old = map.get(name).map(|v| fs.xattr_cost(name, v));
            if flags.contains(XattrFlags::XATTR_CREATE) && old.is_some() {
                return Err(Errno::EEXIST);
            }
            if flags.contains(XattrFlags::XATTR_REPLACE) && old.is_none() {
                return Err(Errno::ENODATA);
            }
            fs.reserve_ispace(fs.xattr_cost(name, value))?;
            if let Some(cost) = old {
                fs.release_ispace(cost);
            }
            map.insert(name.into(), value.into());
            if name == FILE_CAPS {
                self.attrs.file_caps.store(true, Ordering::Relaxed);
            }
        }
        self.touch_ctime(self.now());
        Ok(())
    }

    fn drop_file_caps(&self) {
        if self.attrs.file_caps.load(Ordering::Relaxed) {
            let _ = self.removexattr(FILE_CAPS);
        }
    }

    fn listxattr(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .meta
            .read()
            .as_ref()
            .map(|m| m.keys().map(|k| k.to_vec()).collect())
            .unwrap_or_default())
    }

    fn removexattr(&self, name: &[u8]) -> Result<()> {
        {
            let mut xattrs = self.meta.write();
            let removed = xattrs.as_mut().and_then(|m| m.remove(name));
            if name == FILE_CAPS {
                self.attrs.file_caps.store(false, Ordering::Relaxed);
            }
            match removed {
                Some(v) => {
                    let fs = self.fs();
                    fs.release_ispace(fs.xattr_cost(name, &v));
                }
                // Removing an ACL sets "no ACL", which is never an error.
                None if acl::kind(name).is_some() => {}
                None => return Err(Errno::ENODATA),
            }
        }
        self.touch_ctime(self.now());
        Ok(())
    }
}

/// An open directory: the VFS reads authoritative directories itself.
struct DirFile;

impl FileOps for DirFile {
    fn fsync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
