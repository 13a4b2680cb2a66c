//! The `Process` facade: one method per system call, a descriptor table, a
//! root, a working directory, a umask and credentials.
//!
//! It is thin: it turns descriptors into locations and calls the VFS.
//!
//! # Locking
//!
//! `state` and `fds` are separate leaf locks. Each call copies what it needs
//! out of them (cheap `Arc` clones) and releases them before calling the VFS.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use crate::abi::*;
use crate::cred::{Caps, Credentials};
use crate::file::OpenFile;
use crate::mount::info::{mounts_text, path_of, MountsFormat};
use crate::mount::{MountNamespace, VirtualDentry};
use crate::pathops::PathCtx;
use crate::perm::{self, May};
use crate::Vfs;

/// The default limit on open descriptors (`RLIMIT_NOFILE`'s usual soft limit).
pub const DEFAULT_MAX_FDS: usize = 1024;

#[derive(Clone)]
struct State {
    root: VirtualDentry,
    cwd: VirtualDentry,
    umask: u32,
    cred: Arc<Credentials>,
}

/// The descriptor table: the lowest free number is used first.
#[derive(Default)]
struct FdTable {
    slots: Vec<Option<Arc<OpenFile>>>,
    max: usize,
}

impl FdTable {
    fn insert(&mut self, f: Arc<OpenFile>) -> Result<i32> {
        let idx = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                if self.slots.len() >= self.max {
                    return Err(Errno::EMFILE);
                }
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[idx] = Some(f);
        Ok(idx as i32)
    }

    fn get(&self, fd: i32) -> Result<Arc<OpenFile>> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.clone())
            .ok_or(Errno::EBADF)
    }
}

/// A process as the filesystem sees it.
pub struct Process {
    vfs: Arc<Vfs>,
    ns: RwLock<Arc<MountNamespace>>,
    /// Copy-on-write, read without a lock or a reference count: a call
    /// borrows the current state (`ArcSwap::load`), so calls from several
    /// threads write no shared line to get it.
    state: ArcSwap<State>,
    /// Serialises changes of `state`.
    update_lock: Mutex<()>,
    fds: Mutex<FdTable>,
}

/// Where a path walk starts: the working directory of the call's snapshot
/// (borrowed: no reference counts touched) or a descriptor's location.
enum Start<'s> {
    Cwd(&'s VirtualDentry),
    File(Arc<OpenFile>),
}

impl std::ops::Deref for Start<'_> {
    type Target = VirtualDentry;
    fn deref(&self) -> &VirtualDentry {
        match self {
            Start::Cwd(v) => v,
            Start::File(f) => f.location(),
        }
    }
}

impl Process {
    /// A process in `ns` whose root and working directory are the top of the
    /// namespace's root, with credentials `cred` and umask 022.
    pub fn new(vfs: Arc<Vfs>, ns: Arc<MountNamespace>, cred: Credentials) -> Process {
        let root = vfs.top_of(&ns.root_vd());
        Process {
            vfs,
            ns: RwLock::new(ns),
            state: ArcSwap::from_pointee(State {
                root: root.clone(),
                cwd: root,
                umask: 0o022,
                cred: Arc::new(cred),
            }),
            update_lock: Mutex::new(()),
            fds: Mutex::new(FdTable {
                slots: Vec::new(),
                max: DEFAULT_MAX_FDS,
            }),
        }
    }

    /// The VFS.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// The mount namespace.
    pub fn namespace(&self) -> Arc<MountNamespace> {
        self.ns.read().clone()
    }

    /// The root directory (changed by `chroot` and `pivot_root`).
    pub fn root(&self) -> VirtualDentry {
        self.state.load().root.clone()
    }

    /// The working directory.
    pub fn cwd(&self) -> VirtualDentry {
        self.state.load().cwd.clone()
    }

    /// The credentials.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.state.load().cred.clone()
    }

    /// Replaces the credentials.
    pub fn set_credentials(&self, cred: Credentials) {
        self.update(|s| s.cred = Arc::new(cred));
    }

    /// Sets the descriptor limit.
    pub fn set_max_fds(&self, n: usize) {
        self.fds.lock().max = n;
    }

    /// `setgroups` + `setfsgid` + `setfsuid`, as the ops-script `as` does.
    pub fn set_fs_ids(&self, fsuid: u32, fsgid: u32, groups: &[u32]) {
        self.update(|st| {
            let mut c = (*st.cred).clone();
            c.groups = crate::cred::Groups::new(groups);
            c.fsgid = fsgid;
            c.set_fsuid(fsuid);
            c.renew();
            st.cred = Arc::new(c);
        });
    }

    /// Changes the state: calls in flight keep the copy they started with.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let _g = self.update_lock.lock();
        let mut next = State::clone(&self.state.load());
        let r = f(&mut next);
        self.state.store(Arc::new(next));
        r
    }

    fn snapshot(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// The open file behind `fd`.
    pub fn file(&self, fd: i32) -> Result<Arc<OpenFile>> {
        self.fds.lock().get(fd)
    }

    /// A file that is not `O_PATH` (`fdget`).
    fn io_file(&self, fd: i32) -> Result<Arc<OpenFile>> {
        let f = self.file(fd)?;
        if f.is_path() {
            return Err(Errno::EBADF);
        }
        Ok(f)
    }

    fn start<'s>(&self, st: &'s State, dirfd: i32, path: &[u8]) -> Result<Start<'s>> {
        if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
            return Ok(Start::Cwd(&st.cwd));
        }
        Ok(Start::File(self.file(dirfd)?))
    }

    fn with<T>(
        &self,
        dirfd: i32,
        path: &[u8],
        f: impl FnOnce(&Vfs, &PathCtx<'_>, &VirtualDentry) -> Result<T>,
    ) -> Result<T> {
        let st = self.snapshot();
        let start = self.start(&st, dirfd, path)?;
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        f(&self.vfs, &ctx, &start)
    }

    /// `mkdirat(2)`.
    pub fn mkdirat(&self, dirfd: i32, path: &[u8], mode: u32) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.mkdirat(c, s, path, mode))
    }

    /// `mknodat(2)`.
    pub fn mknodat(&self, dirfd: i32, path: &[u8], mode: u32, dev: DevId) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.mknodat(c, s, path, mode, dev))
    }

    /// `symlinkat(2)`.
    pub fn symlinkat(&self, target: &[u8], dirfd: i32, path: &[u8]) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.symlinkat(c, target, s, path))
    }

    /// `linkat(2)`.
    pub fn linkat(
        &self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: AtFlags,
    ) -> Result<()> {
        let st = self.snapshot();
        let os = self.start(&st, olddirfd, old)?;
        let ns = self.start(&st, newdirfd, new)?;
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        // The walk starts at a descriptor: AT_EMPTY_PATH asks who opened it.
        let opener = if olddirfd != AT_FDCWD && old.first() != Some(&b'/') {
            Some(self.file(olddirfd)?.opener().clone())
        } else {
            None
        };
        self.vfs
            .linkat(&ctx, &os, old, &ns, new, flags, opener.as_ref())
    }

    /// `unlinkat(2)`.
    pub fn unlinkat(&self, dirfd: i32, path: &[u8], flags: AtFlags) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.unlinkat(c, s, path, flags))
    }

    /// `renameat2(2)`.
    pub fn renameat2(
        &self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        let st = self.snapshot();
        let os = self.start(&st, olddirfd, old)?;
        let ns = self.start(&st, newdirfd, new)?;
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        self.vfs.renameat2(&ctx, &os, old, &ns, new, flags)
    }

    /// `readlinkat(2)`.
    pub fn readlinkat(&self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>> {
        self.with(dirfd, path, |v, c, s| v.readlinkat(c, s, path))
    }

    /// `fstatat(2)`.
    pub fn fstatat(&self, dirfd: i32, path: &[u8], flags: AtFlags) -> Result<Statx> {
        self.with(dirfd, path, |v, c, s| v.fstatat(c, s, path, flags))
    }

    /// `stat(2)`.
    pub fn stat(&self, path: &[u8]) -> Result<Statx> {
        self.fstatat(AT_FDCWD, path, AtFlags::empty())
    }

    /// `fstat(2)` (works on `O_PATH` descriptors too).
    pub fn fstat(&self, fd: i32) -> Result<Statx> {
        let f = self.file(fd)?;
        Ok(self.vfs.stat_vd(f.location()))
    }

    /// `faccessat2(2)`.
    pub fn faccessat2(
        &self,
        dirfd: i32,
        path: &[u8],
        mode: AccessFlags,
        flags: AtFlags,
    ) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.faccessat2(c, s, path, mode, flags))
    }

    /// `fchmodat(2)`.
    pub fn fchmodat(&self, dirfd: i32, path: &[u8], mode: u32) -> Result<()> {
        self.with(dirfd, path, |v, c, s| v.fchmodat(c, s, path, mode))
    }

    /// `fchmod(2)`.
    pub fn fchmod(&self, fd: i32, mode: u32) -> Result<()> {
        let f = self.io_file(fd)?;
        self.vfs.chmod_vd(&self.credentials(), f.location(), mode)
    }

    /// `fchownat(2)`; -1 leaves an id as it is.
    pub fn fchownat(
        &self,
        dirfd: i32,
        path: &[u8],
        uid: i64,
        gid: i64,
        flags: AtFlags,
    ) -> Result<()> {
        let (u, g) = (id_arg(uid), id_arg(gid));
        self.with(dirfd, path, |v, c, s| v.fchownat(c, s, path, u, g, flags))
    }

    /// `fchown(2)`.
    pub fn fchown(&self, fd: i32, uid: i64, gid: i64) -> Result<()> {
        let f = self.io_file(fd)?;
        self.vfs
            .chown_vd(&self.credentials(), f.location(), id_arg(uid), id_arg(gid))
    }

    /// `truncate(2)`.
    pub fn truncate(&self, path: &[u8], len: i64) -> Result<()> {
        self.with(AT_FDCWD, path, |v, c, s| v.truncate(c, s, path, len))
    }

    /// `ftruncate(2)`.
    pub fn ftruncate(&self, fd: i32, len: i64) -> Result<()> {
        let f = self.io_file(fd)?;
        if len < 0 {
            return Err(Errno::EINVAL);
        }
        if f.location().dentry.file_type() != FileType::Regular || !f.writable() {
            return Err(Errno::EINVAL);
        }
        self.vfs
            .truncate_vd(&self.credentials(), f.location(), len as u64)
    }

    /// `utimensat(2)`.
    pub fn utimensat(
        &self,
        dirfd: i32,
        path: &[u8],
        atime: TimeSpec,
        mtime: TimeSpec,
        flags: AtFlags,
    ) -> Result<()> {
        self.with(dirfd, path, |v, c, s| {
            v.utimensat(c, s, path, atime, mtime, flags)
        })
    }

    /// `openat(2)`: returns the new descriptor.
    pub fn openat(&self, dirfd: i32, path: &[u8], flags: OpenFlags, mode: u32) -> Result<i32> {
        let f = self.with(dirfd, path, |v, c, s| {
            v.openat(c, s, path, flags, mode, ResolveFlags::empty(), false)
        })?;
        self.fds.lock().insert(f)
    }

    /// `openat2(2)`.
    pub fn openat2(
        &self,
        dirfd: i32,
        path: &[u8],
        flags: OpenFlags,
        mode: u64,
        resolve: ResolveFlags,
    ) -> Result<i32> {
        let mode = u32::try_from(mode).map_err(|_| Errno::EINVAL)?;
        let st = self.snapshot();
        // With a scope, the dirfd is the root even for an absolute path.
        let scoped =
            resolve.intersects(ResolveFlags::RESOLVE_BENEATH | ResolveFlags::RESOLVE_IN_ROOT);
        let start = if scoped && dirfd != AT_FDCWD {
            Start::File(self.file(dirfd)?)
        } else {
            self.start(&st, dirfd, path)?
        };
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        let f = self
            .vfs
            .openat(&ctx, &start, path, flags, mode, resolve, true)?;
        self.fds.lock().insert(f)
    }

    /// `close(2)`.
    pub fn close(&self, fd: i32) -> Result<()> {
        let f = {
            let mut t = self.fds.lock();
            let slot = usize::try_from(fd)
                .ok()
                .and_then(|i| t.slots.get_mut(i))
                .ok_or(Errno::EBADF)?;
            slot.take().ok_or(Errno::EBADF)?
        };
        // The description is dropped here, outside the table lock.
        drop(f);
        Ok(())
    }

    /// `dup(2)`.
    pub fn dup(&self, fd: i32) -> Result<i32> {
        let mut t = self.fds.lock();
        let f = t.get(fd)?;
        t.insert(f)
    }

    /// `read(2)`.
    pub fn read(&self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        self.io_file(fd)?.read(buf)
    }

    /// `pread(2)`.
    pub fn pread(&self, fd: i32, buf: &mut [u8], off: i64) -> Result<usize> {
        self.io_file(fd)?.pread(buf, off)
    }

    /// `write(2)`.
    pub fn write(&self, fd: i32, buf: &[u8]) -> Result<usize> {
        let f = self.io_file(fd)?;
        f.write(&self.credentials(), buf)
    }

    /// `pwrite(2)`.
    pub fn pwrite(&self, fd: i32, buf: &[u8], off: i64) -> Result<usize> {
        let f = self.io_file(fd)?;
        f.pwrite(&self.credentials(), buf, off)
    }

    /// `lseek(2)`.
    pub fn lseek(&self, fd: i32, off: i64, whence: i32) -> Result<i64> {
        self.io_file(fd)?.lseek(off, whence)
    }

    /// `fsync(2)`.
    pub fn fsync(&self, fd: i32) -> Result<()> {
        self.io_file(fd)?.fsync()
    }

    /// `fallocate(2)`.
    pub fn fallocate(&self, fd: i32, mode: FallocFlags, off: i64, len: i64) -> Result<()> {
        let f = self.io_file(fd)?;
        f.fallocate(&self.credentials(), mode, off, len)
    }

    /// `ioctl(2)`.
    pub fn ioctl(&self, fd: i32, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        self.io_file(fd)?.ioctl(cmd, arg)
    }

    /// Reads every directory entry from the descriptor's position to the end.
    pub fn getdents(&self, fd: i32) -> Result<crate::file::Dirents> {
        let f = self.file(fd)?;
        f.read_dirents(&self.credentials())
    }

    fn check_search(cred: &Credentials, vd: &VirtualDentry) -> Result<()> {
        perm::check(cred, vd.dentry.inode().owner(), May::EXEC)
    }

    /// `chdir(2)`.
    pub fn chdir(&self, path: &[u8]) -> Result<()> {
        let vd = self.with(AT_FDCWD, path, |v, c, s| v.lookup_dir(c, s, path))?;
        Self::check_search(&self.credentials(), &vd)?;
        self.update(|s| s.cwd = vd);
        Ok(())
    }

    /// `fchdir(2)`.
    pub fn fchdir(&self, fd: i32) -> Result<()> {
        let f = self.file(fd)?;
        let vd = f.location().clone();
        if !vd.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Self::check_search(&self.credentials(), &vd)?;
        self.update(|s| s.cwd = vd);
        Ok(())
    }

    /// `chroot(2)`.
    pub fn chroot(&self, path: &[u8]) -> Result<()> {
        let vd = self.with(AT_FDCWD, path, |v, c, s| v.lookup_dir(c, s, path))?;
        let cred = self.credentials();
        Self::check_search(&cred, &vd)?;
        if !cred.has(Caps::SYS_CHROOT) {
            return Err(Errno::EPERM);
        }
        self.update(|s| s.root = vd);
        Ok(())
    }

    /// `getcwd(2)`: a working directory outside the root starts with `(unreachable)`.
    pub fn getcwd(&self) -> Result<Vec<u8>> {
        let st = self.snapshot();
        if st.cwd.dentry.is_dead() {
            return Err(Errno::ENOENT);
        }
        let p = path_of(&st.cwd, &st.root);
        // The answer and its NUL must fit in a page.
        if p.path.len() + 1 > PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if p.reachable {
            Ok(p.path)
        } else {
            let mut out = b"(unreachable)".to_vec();
            out.extend_from_slice(&p.path);
            Ok(out)
        }
    }

    /// `umask(2)`: returns the old mask.
    pub fn umask(&self, mask: u32) -> u32 {
        self.update(|st| std::mem::replace(&mut st.umask, mask & 0o777))
    }

    /// `getxattr(2)` (`follow`) or `lgetxattr(2)`.
    pub fn getxattr(&self, path: &[u8], name: &[u8], follow: bool) -> Result<Vec<u8>> {
        self.with(AT_FDCWD, path, |v, c, s| {
            v.getxattr(c, s, path, name, follow)
        })
    }

    /// `setxattr(2)` or `lsetxattr(2)`.
    pub fn setxattr(
        &self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        follow: bool,
    ) -> Result<()> {
        self.with(AT_FDCWD, path, |v, c, s| {
            v.setxattr(c, s, path, name, value, flags, follow)
        })
    }

    /// `listxattr(2)` or `llistxattr(2)`.
    pub fn listxattr(&self, path: &[u8], follow: bool) -> Result<Vec<Vec<u8>>> {
        self.with(AT_FDCWD, path, |v, c, s| v.listxattr(c, s, path, follow))
    }

    /// `removexattr(2)` or `lremovexattr(2)`.
    pub fn removexattr(&self, path: &[u8], name: &[u8], follow: bool) -> Result<()> {
        self.with(AT_FDCWD, path, |v, c, s| {
            v.removexattr(c, s, path, name, follow)
        })
    }

    /// `mount(2)`.
    pub fn mount(
        &self,
        source: &[u8],
        target: &[u8],
        fstype: &[u8],
        flags: MountFlags,
        data: &[u8],
    ) -> Result<()> {
        let st = self.snapshot();
        if !st.cred.has(Caps::SYS_ADMIN) {
            return Err(Errno::EPERM);
        }
        let ns = self.namespace();
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        let tgt = self.vfs.lookup(&ctx, &st.cwd, target, true, false)?;
        let v = &self.vfs;
        if flags.contains(MountFlags::MS_REMOUNT) {
            return v.do_remount(&ns, &tgt, flags, data, flags.contains(MountFlags::MS_BIND));
        }
        if flags.contains(MountFlags::MS_BIND) {
            if source.is_empty() {
                return Err(Errno::EINVAL);
            }
            let src = v.lookup(&ctx, &st.cwd, source, true, false)?;
            return v.do_bind(&ns, &src, &tgt, flags.contains(MountFlags::MS_REC));
        }
        if flags.intersects(MountFlags::PROPAGATION) {
            return v.do_change_type(&ns, &tgt, flags);
        }
        if flags.contains(MountFlags::MS_MOVE) {
            if source.is_empty() {
                return Err(Errno::EINVAL);
            }
            let src = v.lookup(&ctx, &st.cwd, source, true, false)?;
            return v.do_move(&ns, &src, &tgt);
        }
        let fstype = std::str::from_utf8(fstype).map_err(|_| Errno::ENODEV)?;
        v.do_new_mount(
            &ns,
            &st.cred,
            &tgt,
            fstype,
            source,
            flags,
            data,
            Some(crate::fstype::PathBase {
                root: &st.root,
                cwd: &st.cwd,
            }),
        )
    }

    /// `umount2(2)`.
    pub fn umount2(&self, target: &[u8], flags: UmountFlags) -> Result<()> {
        let known = UmountFlags::MNT_FORCE
            | UmountFlags::MNT_DETACH
            | UmountFlags::MNT_EXPIRE
            | UmountFlags::UMOUNT_NOFOLLOW;
        if !(flags - known).is_empty() {
            return Err(Errno::EINVAL);
        }
        let st = self.snapshot();
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        let found = self.vfs.lookup_keep_expiry(
            &ctx,
            &st.cwd,
            target,
            !flags.contains(UmountFlags::UMOUNT_NOFOLLOW),
            false,
        )?;
        // LOOKUP_MOUNTPOINT: the last component, even `.`, is followed onto
        // whatever is mounted on it.
        let vd = self.vfs.top_of(&found);
        if !st.cred.has(Caps::SYS_ADMIN) {
            return Err(Errno::EPERM);
        }
        if !vd.is_mount_root() {
            return Err(Errno::EINVAL);
        }
        {
            // `can_umount`: the mount must be in our namespace.
            let l = vd.mount.link.read();
            if !l.connected
                || !l
                    .ns
                    .upgrade()
                    .is_some_and(|n| Arc::ptr_eq(&n, &self.namespace()))
            {
                return Err(Errno::EINVAL);
            }
        }
        let root_mount = Arc::ptr_eq(&vd.mount, &st.root.mount);
        if flags.contains(UmountFlags::MNT_EXPIRE)
            && (root_mount || flags.intersects(UmountFlags::MNT_FORCE | UmountFlags::MNT_DETACH))
        {
            return Err(Errno::EINVAL);
        }
        let ns = self.namespace();
        // References this call holds itself: the location as resolved and as
        // followed onto the top mount. The state's root and cwd are shared,
        // not copied, so when they are in that mount they make it busy.
        let own = 1 + usize::from(Arc::ptr_eq(&found.mount, &vd.mount));
        // Unmounting the root's mount without MNT_DETACH remounts its
        // filesystem read-only instead (`do_umount_root`), which open
        // writers make busy.
        if root_mount && !flags.contains(UmountFlags::MNT_DETACH) {
            if Vfs::fs_has_writers(&ns, vd.mount.fs()) {
                return Err(Errno::EBUSY);
            }
            vd.mount.fs().set_readonly(true);
            return Ok(());
        }
        self.vfs.do_umount(&ns, &vd, flags, own)
    }

    /// `pivot_root(2)`.
    pub fn pivot_root(&self, new_root: &[u8], put_old: &[u8]) -> Result<()> {
        let st = self.snapshot();
        if !st.cred.has(Caps::SYS_ADMIN) {
            return Err(Errno::EPERM);
        }
        let ctx = PathCtx {
            cred: &st.cred,
            root: &st.root,
            umask: st.umask,
        };
        let new = self.vfs.lookup_dir(&ctx, &st.cwd, new_root)?;
        let old = self.vfs.lookup_dir(&ctx, &st.cwd, put_old)?;
        let ns = self.namespace();
        let new_vd = self.vfs.do_pivot_root(&ns, &st.root, &new, &old)?;
        self.update(|s| {
            if s.root.same(&st.root) {
                s.root = new_vd.clone();
            }
            if s.cwd.same(&st.root) {
                s.cwd = new_vd;
            }
        });
        Ok(())
    }

    /// The text of `/proc/self/mountinfo`.
    pub fn mountinfo(&self) -> Vec<u8> {
        let st = self.snapshot();
        mounts_text(&self.namespace(), &st.root, MountsFormat::MountInfo)
    }

    /// The text of `/proc/self/mounts`.
    pub fn mounts(&self) -> Vec<u8> {
        let st = self.snapshot();
        mounts_text(&self.namespace(), &st.root, MountsFormat::Mounts)
    }
}

fn id_arg(id: i64) -> Option<u32> {
    if id == -1 || id == u32::MAX as i64 {
        None
    } else {
        Some(id as u32)
    }
}
