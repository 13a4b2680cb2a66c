//! Every path system call, with Linux's checks in Linux's order
//! (`fs/namei.c`, `fs/open.c`, `fs/stat.c`, `fs/xattr.c`).
//!
//! Each takes a [`PathCtx`] (who asks, from which root, with which umask)
//! and a starting location for relative paths; the facade turns a dirfd into
//! that start.

use std::sync::Arc;

use crate::abi::*;
use crate::cred::{Caps, Credentials};
use crate::dentry::Dentry;
use crate::device::DeviceKind;
use crate::file::OpenFile;
use crate::inode::{Coherence, Ctx, NewNode};
use crate::mount::{MntFlags, Mount, VirtualDentry};
use crate::perm::{self, May};
use crate::walk::{Last, WalkFlags, Walker};
use crate::Vfs;

/// Who asks, and from where.
pub struct PathCtx<'a> {
    /// Credentials of the caller.
    pub cred: &'a Credentials,
    /// The caller's root (chroot).
    pub root: &'a VirtualDentry,
    /// The caller's umask.
    pub umask: u32,
}

/// The largest extended attribute value (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// The longest list of extended attribute names `listxattr` returns.
pub const XATTR_LIST_MAX: usize = 65536;
/// The longest extended attribute name.
pub const XATTR_NAME_MAX: usize = 255;

/// Ends a mount write when dropped.
struct WriteGuard<'a>(&'a Mount);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.0.end_write();
    }
}

fn begin_write(vd: &VirtualDentry) -> Result<WriteGuard<'_>> {
    begin_write_on(&vd.mount)
}

fn begin_write_on(mount: &Mount) -> Result<WriteGuard<'_>> {
    mount.begin_write()?;
    Ok(WriteGuard(mount))
}

/// The child `name` of `dir`, asking the filesystem if needed; the caller
/// holds the directory's `op` lock.
fn child_locked(cred: &Credentials, dir: &Arc<Dentry>, name: &[u8]) -> Result<Option<Arc<Dentry>>> {
    // A removed directory holds nothing and can get nothing (`IS_DEADDIR`
    // in `lookup_one_qstr_excl`), before any existence check and before
    // the filesystem's lookup would find the name too long.
    if dir.is_dead() {
        return Err(Errno::ENOENT);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let coherence = dir.inode().coherence();
    if let Some(c) = dir.cached_child(name) {
        if coherence != Coherence::Revalidate
            || dir.inode().revalidate(&Ctx { cred }, name, c.inode())
        {
            return Ok(Some(c));
        }
        dir.remove_child(name);
    }
    if coherence == Coherence::Authoritative {
        return Ok(None);
    }
    match dir.inode().lookup(&Ctx { cred }, name) {
        Ok(inode) => Ok(Some(dir.insert_child(name, inode)?)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file-capability attribute (`XATTR_NAME_CAPS`).
const FILE_CAPS: &[u8] = b"security.capability";
/// Sizes of a version-2 and a version-3 (namespaced, with a root id) value.
const CAPS_V2_SIZE: usize = 20;
const CAPS_V3_SIZE: usize = 24;
const CAPS_REVISION_MASK: u32 = 0xff00_0000;
const CAPS_REVISION_2: u32 = 0x0200_0000;
const CAPS_REVISION_3: u32 = 0x0300_0000;

/// `cap_convert_nscap`: a file-capability value must be a whole version 2
/// or version 3 record, the latter with a valid root id, and setting one
/// takes `CAP_SETFCAP`. (Checked before the namespace's own rules.)
fn check_file_caps(cred: &Credentials, value: &[u8]) -> Result<()> {
    let magic = value
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & CAPS_REVISION_MASK);
    match (value.len(), magic) {
        (CAPS_V2_SIZE, Some(CAPS_REVISION_2)) => {}
        (CAPS_V3_SIZE, Some(CAPS_REVISION_3)) => {
            if value[20..24] == [0xff; 4] {
                return Err(Errno::EINVAL);
            }
        }
        _ => return Err(Errno::EINVAL),
    }
    if !cred.has(Caps::SETFCAP) {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// `cap_inode_getsecurity`: a stored file-capability value as a reader in
/// the initial namespace sees it. An empty one is `EINVAL`; a version 3
/// record whose root is 0 reads as version 2.
fn file_caps_as_read(mut value: Vec<u8>) -> Result<Vec<u8>> {
    if value.is_empty() {
        return Err(Errno::EINVAL);
    }
    if value.len() == CAPS_V3_SIZE && value[20..24] == [0; 4] {
        value.truncate(CAPS_V2_SIZE);
        // The revision byte (the magic is little-endian), keeping the
        // effective flag in the low bits.
        value[3] = (CAPS_REVISION_2 >> 24) as u8;
    }
    Ok(value)
}

/// `may_delete`: permission to remove `child` from `dir`.
fn may_delete(
    cred: &Credentials,
    dir: &Arc<Dentry>,
    child: &Arc<Dentry>,
    is_dir: bool,
) -> Result<()> {
    let dir_owner = dir.inode().owner();
    perm::check(cred, dir_owner, May::WRITE | May::EXEC)?;
    if !perm::may_delete_sticky(cred, dir_owner, child.inode().owner()) {
        return Err(Errno::EPERM);
    }
    if is_dir && !child.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if !is_dir && child.is_dir() {
        return Err(Errno::EISDIR);
    }
    if dir.is_dead() {
        return Err(Errno::ENOENT);
    }
    Ok(())
}

/// `inode_permission`: a read-only filesystem refuses writes to regular
/// files, directories and links with `EROFS` before the mode bits are asked.
fn inode_permission(cred: &Credentials, vd: &VirtualDentry, want: May) -> Result<()> {
    if want.contains(May::WRITE)
        && vd.mount.fs().is_readonly()
        && matches!(
            vd.dentry.file_type(),
            FileType::Regular | FileType::Directory | FileType::Symlink
        )
    {
        return Err(Errno::EROFS);
    }
    perm::check(cred, vd.dentry.inode().owner(), want)
}

/// Marks `victim` dead unless something is mounted on it (`EBUSY`); see
/// `Dentry::set_dead` for why this cannot miss a concurrent mount.
fn claim_victim(victim: &Dentry) -> Result<()> {
    victim.set_dead();
    if victim.is_mountpoint() {
        victim.clear_dead();
        return Err(Errno::EBUSY);
    }
    Ok(())
}

/// Runs a removal for a claimed victim, reviving it if the removal fails.
fn remove_claimed(victim: &Dentry, f: impl FnOnce() -> Result<()>) -> Result<()> {
    f().inspect_err(|_| victim.clear_dead())
}

/// The node of a new regular file in `dir`: the umask, then the owner,
/// group and set-gid rules of `perm::new_owner`.
fn new_file_node(ctx: &PathCtx<'_>, dir: &Arc<Dentry>, mode: u32) -> NewNode<'static> {
    let (uid, gid, mode) = perm::new_owner(
        ctx.cred,
        dir.inode().owner(),
        FileType::Regular,
        mode & !ctx.umask,
    );
    NewNode {
        ftype: FileType::Regular,
        mode,
        uid,
        gid,
        rdev: DevId::default(),
        target: &[],
    }
}

/// `may_linkat` under `fs.protected_hardlinks`: only the owner (or
/// `CAP_FOWNER`) may link a file that is not a safe source: a regular file
/// without set-uid, without executable set-gid, that the caller may read
/// and write.
fn may_linkat(cred: &Credentials, src: &VirtualDentry) -> Result<()> {
    let o = src.dentry.inode().owner();
    let safe = o.mode & S_IFMT == S_IFREG
        && o.mode & S_ISUID == 0
        && o.mode & (S_ISGID | S_IXGRP) != (S_ISGID | S_IXGRP)
        && inode_permission(cred, src, May::READ | May::WRITE).is_ok();
    if safe || perm::is_owner_or_capable(cred, o) {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// What `stat` answers for `dentry` on `mount` (see [`Inode::stat_for_call`]).
#[inline]
fn stat_at(mount: &Mount, dentry: &Dentry) -> Statx {
    dentry.inode().stat_for_call(mount.fs().dev(), mount.id())
}

/// `may_create`: permission to add a name to `dir`.
fn may_create(cred: &Credentials, dir: &Arc<Dentry>) -> Result<()> {
    if dir.is_dead() {
        return Err(Errno::ENOENT);
    }
    perm::check(cred, dir.inode().owner(), May::WRITE | May::EXEC)
}

fn is_empty_dir(cred: &Credentials, d: &Arc<Dentry>) -> Result<bool> {
    if d.inode().coherence() == Coherence::Authoritative {
        Ok(d.has_no_children())
    } else {
        d.inode().is_empty_dir(&Ctx { cred })
    }
}

/// Locks the `op` locks of two directories in address order.
fn lock_two<'a>(
    a: &'a Arc<Dentry>,
    b: &'a Arc<Dentry>,
) -> Result<(
    parking_lot::MutexGuard<'a, ()>,
    Option<parking_lot::MutexGuard<'a, ()>>,
)> {
    let (da, db) = (a.dir()?, b.dir()?);
    if Arc::ptr_eq(a, b) {
        return Ok((da.op.lock(), None));
    }
    // An ancestor before its descendant (as `lock_rename`), since removals
    // lock a parent and then the child; unrelated directories by address.
    // The caller holds the filesystem's rename lock, so ancestry is stable.
    let a_first = if b.is_descendant_of(a) {
        true
    } else if a.is_descendant_of(b) {
        false
    } else {
        Arc::as_ptr(a) < Arc::as_ptr(b)
    };
    if a_first {
        let ga = da.op.lock();
        Ok((ga, Some(db.op.lock())))
    } else {
        let gb = db.op.lock();
        Ok((da.op.lock(), Some(gb)))
    }
}

/// Walks `w` to the parent of its last name (kept in `w.last`); the
/// call's use of the parent's mount ends with it (see [`Vfs::lookup`]).
#[inline(always)]
fn parent_last(w: &mut Walker<'_, '_>) -> Result<Last> {
    let last = w.walk_to_last()?;
    w.cur.mount.used();
    Ok(last)
}

impl Vfs {
    #[inline(always)]
    fn walker<'a, 'p>(
        &'a self,
        ctx: &'a PathCtx<'_>,
        start: &'a VirtualDentry,
        path: &'p [u8],
        resolve: ResolveFlags,
    ) -> Result<Walker<'a, 'p>> {
        Walker::new(self, ctx.cred, ctx.root, start, path, WalkFlags { resolve })
    }

    /// Resolves `path` to a location. An empty path is `ENOENT` unless
    /// `empty_ok`, when it means `start` itself.
    pub fn lookup(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        follow: bool,
        empty_ok: bool,
    ) -> Result<VirtualDentry> {
        let vd = self.lookup_keep_expiry(ctx, start, path, follow, empty_ok)?;
        // The call's reference is dropped when it ends (`path_put`).
        vd.mount.used();
        Ok(vd)
    }

    /// [`Vfs::lookup`] that leaves the mount's expiry mark alone: `umount`
    /// drops its reference with `mntput_no_expire`.
    pub fn lookup_keep_expiry(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        follow: bool,
        empty_ok: bool,
    ) -> Result<VirtualDentry> {
        if path.is_empty() {
            return if empty_ok {
                Ok(start.clone())
            } else {
                Err(Errno::ENOENT)
            };
        }
        self.walker(ctx, start, path, ResolveFlags::empty())?
            .resolve(follow, false)
    }

    /// Resolves the path of an `*at` call whose flags may hold only
    /// `allowed` (`EINVAL` otherwise), honouring `AT_SYMLINK_NOFOLLOW` and
    /// `AT_EMPTY_PATH`.
    pub fn lookup_at(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        flags: AtFlags,
        allowed: AtFlags,
    ) -> Result<VirtualDentry> {
        if !(flags - allowed).is_empty() {
            return Err(Errno::EINVAL);
        }
        self.lookup(
            ctx,
            start,
            path,
            !flags.contains(AtFlags::AT_SYMLINK_NOFOLLOW),
            flags.contains(AtFlags::AT_EMPTY_PATH),
        )
    }

    /// Resolves a directory (for chdir, chroot, mount targets ...).
    pub fn lookup_dir(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
    ) -> Result<VirtualDentry> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let vd = self
            .walker(ctx, start, path, ResolveFlags::empty())?
            .resolve(true, true)?;
        vd.mount.used();
        Ok(vd)
    }

    /// A walker for the parent of `path`'s last name: `ENOENT` for an empty
    /// path. Used with [`parent_last`]; the two are apart so that the walker
    /// lives in its caller's frame and is not copied out of a `Result` (a
    /// copy of a structure just written stalls on store forwarding).
    #[inline(always)]
    fn parent_walker<'a, 'p>(
        &'a self,
        ctx: &'a PathCtx<'_>,
        start: &'a VirtualDentry,
        path: &'p [u8],
    ) -> Result<Walker<'a, 'p>> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        self.walker(ctx, start, path, ResolveFlags::empty())
    }

    /// `filename_create`: resolves the parent of a new name, then under the
    /// parent's lock checks in Linux's order that the name is free
    /// (`EEXIST`), that a trailing slash asks for a directory (`ENOENT`) and
    /// that the mount is writable (`EROFS`), and runs `make`.
    fn filename_create<T>(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        want_dir: bool,
        make: impl FnOnce(&VirtualDentry, &[u8]) -> Result<T>,
    ) -> Result<T> {
        let mut w = self.parent_walker(ctx, start, path)?;
        if parent_last(&mut w)? != Last::Name {
            return Err(Errno::EEXIST);
        }
        let trailing = w.must_be_dir;
        let parent = w.cur.into_vd();
        let name: &[u8] = &w.last;
        let dir = parent.dentry.dir()?;
        let _op = dir.op.lock();
        if child_locked(ctx.cred, &parent.dentry, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        if trailing && !want_dir {
            return Err(Errno::ENOENT);
        }
        let _w = begin_write(&parent)?;
        make(&parent, name)
    }

    /// The shared part of mkdir, mknod and symlink (`filename_create` + `vfs_*`).
    fn create_at(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        node: NewNode<'_>,
    ) -> Result<()> {
        let want_dir = node.ftype == FileType::Directory;
        self.filename_create(ctx, start, path, want_dir, |parent, name| {
            may_create(ctx.cred, &parent.dentry)?;
            if node.ftype.is_device()
                && !(node.ftype == FileType::CharDevice && node.rdev == DevId::default())
                && !ctx.cred.has(Caps::MKNOD)
            {
                return Err(Errno::EPERM);
            }
            let (uid, gid, mode) = perm::new_owner(
                ctx.cred,
                parent.dentry.inode().owner(),
                node.ftype,
                node.mode,
            );
            let node = NewNode {
                uid,
                gid,
                mode,
                ..node
            };
            let inode = parent
                .dentry
                .inode()
                .create(&Ctx { cred: ctx.cred }, name, &node)?;
            parent.dentry.insert_child(name, inode)?;
            Ok(())
        })
    }

    /// `mkdirat(2)`.
    pub fn mkdirat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        mode: u32,
    ) -> Result<()> {
        let mode = mode & (0o777 | S_ISVTX) & !ctx.umask;
        self.create_at(
            ctx,
            start,
            path,
            NewNode {
                ftype: FileType::Directory,
                mode,
                uid: 0,
                gid: 0,
                rdev: DevId::default(),
                target: &[],
            },
        )
    }

    /// `mknodat(2)`.
    pub fn mknodat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        mode: u32,
        dev: DevId,
    ) -> Result<()> {
        let ftype = match mode & S_IFMT {
            0 => FileType::Regular,
            S_IFDIR => return Err(Errno::EPERM),
            t => match FileType::from_mode(t) {
                Some(FileType::Symlink) | None => return Err(Errno::EINVAL),
                Some(ft) => ft,
            },
        };
        let rdev = if ftype.is_device() {
            dev
        } else {
            DevId::default()
        };
        let perm_bits = mode & 0o7777 & !ctx.umask;
        self.create_at(
            ctx,
            start,
            path,
            NewNode {
                ftype,
                mode: perm_bits,
                uid: 0,
                gid: 0,
                rdev,
                target: &[],
            },
        )
    }

    /// `symlinkat(2)`.
    pub fn symlinkat(
        &self,
        ctx: &PathCtx<'_>,
        target: &[u8],
        start: &VirtualDentry,
        path: &[u8],
    ) -> Result<()> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.create_at(
            ctx,
            start,
            path,
            NewNode {
                ftype: FileType::Symlink,
                mode: 0o777,
                uid: 0,
                gid: 0,
                rdev: DevId::default(),
                target,
            },
        )
    }

    /// `linkat(2)`. `opener` is the credentials that opened the old
    /// descriptor when the old path is walked from one, for `AT_EMPTY_PATH`.
    #[allow(clippy::too_many_arguments)]
    pub fn linkat(
        &self,
        ctx: &PathCtx<'_>,
        old_start: &VirtualDentry,
        old: &[u8],
        new_start: &VirtualDentry,
        new: &[u8],
        flags: AtFlags,
        opener: Option<&Credentials>,
    ) -> Result<()> {
        if !(flags - AtFlags::AT_SYMLINK_FOLLOW - AtFlags::AT_EMPTY_PATH).is_empty() {
            return Err(Errno::EINVAL);
        }
        // With AT_EMPTY_PATH a walk from a descriptor (an empty path links
        // the open file itself) is allowed only to whoever opened it, with
        // the very same credentials, or with CAP_DAC_READ_SEARCH; otherwise
        // ENOENT before anything else about the path (`path_init`).
        let empty = flags.contains(AtFlags::AT_EMPTY_PATH);
        if let Some(o) = opener.filter(|_| empty) {
            if !ctx.cred.has(Caps::DAC_READ_SEARCH) && !o.is_same_set(ctx.cred) {
                return Err(Errno::ENOENT);
            }
        }
        let src = self.lookup(
            ctx,
            old_start,
            old,
            flags.contains(AtFlags::AT_SYMLINK_FOLLOW),
            empty,
        )?;
        self.filename_create(ctx, new_start, new, false, |parent, name| {
            if !Arc::ptr_eq(&src.mount, &parent.mount) {
                return Err(Errno::EXDEV);
            }
            if self.protected_hardlinks() {
                may_linkat(ctx.cred, &src)?;
            }
            may_create(ctx.cred, &parent.dentry)?;
            if src.dentry.is_dir() {
                return Err(Errno::EPERM);
            }
            if src.dentry.is_dead()
                && !src.dentry.is_linkable()
                && src.dentry.inode().stat().nlink == 0
            {
                return Err(Errno::ENOENT);
            }
            parent
                .dentry
                .inode()
                .link(&Ctx { cred: ctx.cred }, name, src.dentry.inode())?;
            parent
                .dentry
                .insert_child(name, src.dentry.inode().clone())?;
            Ok(())
        })
    }

    /// `unlinkat(2)`, and `rmdir(2)` with `AT_REMOVEDIR`.
    pub fn unlinkat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        flags: AtFlags,
    ) -> Result<()> {
        if !(flags - AtFlags::AT_REMOVEDIR).is_empty() {
            return Err(Errno::EINVAL);
        }
        let is_dir = flags.contains(AtFlags::AT_REMOVEDIR);
        let mut w = self.parent_walker(ctx, start, path)?;
        let last = parent_last(&mut w)?;
        let trailing = w.must_be_dir;
        match last {
            Last::Name => {}
            Last::DotDot if is_dir => return Err(Errno::ENOTEMPTY),
            Last::Dot if is_dir => return Err(Errno::EINVAL),
            Last::Root if is_dir => return Err(Errno::EBUSY),
            _ => return Err(Errno::EISDIR),
        };
        let name: &[u8] = &w.last;
        // The parent is read where the walk stands (no references taken).
        let (mount, parent) = (&w.cur.mount, &w.cur.dentry);
        let _w = begin_write_on(mount)?;
        let dir = parent.dir()?;
        let _op = dir.op.lock();
        let child = child_locked(ctx.cred, parent, name)?.ok_or(Errno::ENOENT)?;
        if !is_dir && trailing {
            return Err(if child.is_dir() {
                Errno::EISDIR
            } else {
                Errno::ENOTDIR
            });
        }
        may_delete(ctx.cred, parent, &child, is_dir)?;
        let c = Ctx { cred: ctx.cred };
        if is_dir {
            // Hold the victim's own lock so nothing is created in it meanwhile.
            let _victim_op = child.dir()?.op.lock();
            claim_victim(&child)?;
            remove_claimed(&child, || {
                if !is_empty_dir(ctx.cred, &child)? {
                    return Err(Errno::ENOTEMPTY);
                }
                parent.inode().rmdir(&c, name, child.inode())
            })?;
        } else {
            claim_victim(&child)?;
            remove_claimed(&child, || parent.inode().unlink(&c, name, child.inode()))?;
        }
        parent.remove_child(name);
        Ok(())
    }

    /// `renameat2(2)`.
    pub fn renameat2(
        &self,
        ctx: &PathCtx<'_>,
        old_start: &VirtualDentry,
        old: &[u8],
        new_start: &VirtualDentry,
        new: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        let known = RenameFlags::RENAME_NOREPLACE
            | RenameFlags::RENAME_EXCHANGE
            | RenameFlags::RENAME_WHITEOUT;
        if !(flags - known).is_empty() {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            && flags.intersects(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let mut ow = self.parent_walker(ctx, old_start, old)?;
        let olast = parent_last(&mut ow)?;
        let old_trailing = ow.must_be_dir;
        let old_dir = ow.cur.into_vd();
        let mut nw = self.parent_walker(ctx, new_start, new)?;
        let nlast = parent_last(&mut nw)?;
        let new_trailing = nw.must_be_dir;
        let new_dir = nw.cur.into_vd();
        if !Arc::ptr_eq(&old_dir.mount, &new_dir.mount) {
            return Err(Errno::EXDEV);
        }
        if olast != Last::Name {
            return Err(Errno::EBUSY);
        }
        if nlast != Last::Name {
            return Err(if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                Errno::EEXIST
            } else {
                Errno::EBUSY
            });
        }
        let (oname, nname): (&[u8], &[u8]) = (&ow.last, &nw.last);
        let _w = begin_write(&old_dir)?;
        let fs = old_dir.mount.fs().clone();
        let same_dir = Arc::ptr_eq(&old_dir.dentry, &new_dir.dentry);
        let _rename = (!same_dir).then(|| fs.rename_lock.lock());
        let _ops = lock_two(&old_dir.dentry, &new_dir.dentry)?;
        let src = child_locked(ctx.cred, &old_dir.dentry, oname)?.ok_or(Errno::ENOENT)?;
        let dst = child_locked(ctx.cred, &new_dir.dentry, nname)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if exchange {
            let d = dst.as_ref().ok_or(Errno::ENOENT)?;
            if !d.is_dir() && new_trailing {
                return Err(Errno::ENOTDIR);
            }
        }
        if !src.is_dir() && (old_trailing || (!exchange && new_trailing)) {
            return Err(Errno::ENOTDIR);
        }
        // The "trap" of lock_rename: a directory may not move below itself,
        // and the target may not be an ancestor of the source.
        if !same_dir {
            if new_dir.dentry.is_descendant_of(&src) {
                return Err(Errno::EINVAL);
            }
            if let Some(d) = &dst {
                if old_dir.dentry.is_descendant_of(d) {
                    return Err(if exchange {
                        Errno::EINVAL
                    } else {
                        Errno::ENOTEMPTY
                    });
                }
            }
        }
        if let Some(d) = &dst {
            if Arc::ptr_eq(d.inode(), src.inode()) {
                return Ok(());
            }
        }
        let is_dir = src.is_dir();
        may_delete(ctx.cred, &old_dir.dentry, &src, is_dir)?;
        match &dst {
            None => may_create(ctx.cred, &new_dir.dentry)?,
            Some(d) => {
                let d_is_dir = if exchange { d.is_dir() } else { is_dir };
                may_delete(ctx.cred, &new_dir.dentry, d, d_is_dir)?;
            }
        }
        if is_dir && !same_dir {
            perm::check(ctx.cred, src.inode().owner(), May::WRITE)?;
        }
        if exchange && !same_dir {
            if let Some(d) = dst.as_ref().filter(|d| d.is_dir()) {
                perm::check(ctx.cred, d.inode().owner(), May::WRITE)?;
            }
        }
        if src.is_mountpoint() || dst.as_ref().is_some_and(|d| d.is_mountpoint()) {
            return Err(Errno::EBUSY);
        }
        old_dir.dentry.inode().rename_precheck(src.inode(), flags)?;
        // A replaced directory is locked, checked empty and claimed like an rmdir victim.
        let replaced = dst.as_ref().filter(|_| !exchange);
        let _victim_op = match replaced.filter(|d| d.is_dir()) {
            Some(d) => Some(d.dir()?.op.lock()),
            None => None,
        };
        if let Some(d) = replaced {
            if d.is_dir() && !is_empty_dir(ctx.cred, d)? {
                return Err(Errno::ENOTEMPTY);
            }
            claim_victim(d)?;
        }
        let c = Ctx { cred: ctx.cred };
        let renamed = old_dir.dentry.inode().rename(
            &c,
            oname,
            src.inode(),
            new_dir.dentry.inode(),
            nname,
            dst.as_ref().map(|d| d.inode()),
            flags,
        );
        if let Err(e) = renamed {
            if let Some(d) = replaced {
                d.clear_dead();
            }
            return Err(e);
        }
        // The filesystem has moved the names; now move the dentries. Linux's
        // directory offsets: a replaced entry's offset goes to the entry that
        // replaces it, an exchange keeps the offsets where the names are, and
        // a moved entry goes to the head of its directory's list (the
        // exchanged one first). A whiteout is made, and placed, first.
        let whiteout_pos = flags
            .contains(RenameFlags::RENAME_WHITEOUT)
            .then(|| old_dir.dentry.dir().map(crate::dentry::reserve_slot))
            .transpose()?;
        let src_offset = src.dir_offset();
        old_dir.dentry.remove_child(oname);
        let new_ds = new_dir.dentry.dir()?;
        let mut offset = None;
        if let Some(d) = &dst {
            offset = Some(d.dir_offset());
            new_dir.dentry.remove_child(nname);
            if exchange {
                d.link.write().parent = Some(old_dir.dentry.clone());
                crate::dentry::attach(old_dir.dentry.dir()?, d, oname, Some(src_offset));
            }
        }
        src.link.write().parent = Some(new_dir.dentry.clone());
        crate::dentry::attach(new_ds, &src, nname, offset);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            // A whiteout is a character device 0:0 owned by the caller.
            let node = NewNode {
                ftype: FileType::CharDevice,
                mode: 0,
                uid: ctx.cred.fsuid,
                gid: ctx.cred.fsgid,
                rdev: DevId::default(),
                target: &[],
            };
            let inode = match old_dir.dentry.inode().create(&c, oname, &node) {
                Ok(inode) => inode,
                Err(e) => {
                    if whiteout_pos.is_some() {
                        crate::dentry::release_slot(old_dir.dentry.dir()?);
                    }
                    return Err(e);
                }
            };
            match whiteout_pos {
                Some(pos) => old_dir.dentry.insert_child_at(oname, inode, pos)?,
                None => old_dir.dentry.insert_child(oname, inode)?,
            };
        }
        Ok(())
    }

    /// `readlinkat(2)`.
    pub fn readlinkat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
    ) -> Result<Vec<u8>> {
        let vd = self.lookup(ctx, start, path, false, true)?;
        if vd.dentry.file_type() != FileType::Symlink {
            return Err(if path.is_empty() {
                Errno::ENOENT
            } else {
                Errno::EINVAL
            });
        }
        crate::walk::link_accessed(
            self,
            &vd.mount,
            &vd.dentry,
            vd.dentry.inode().kept_link(),
            false,
        )?;
        vd.dentry.inode().readlink()
    }

    /// The attributes of a location, with the mount's device and id.
    pub fn stat_vd(&self, vd: &VirtualDentry) -> Statx {
        stat_at(&vd.mount, &vd.dentry)
    }

    /// `fstatat(2)` / `statx(2)`.
    pub fn fstatat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        flags: AtFlags,
    ) -> Result<Statx> {
        let allowed =
            AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH | AtFlags::AT_NO_AUTOMOUNT;
        if path.is_empty() {
            let vd = self.lookup_at(ctx, start, path, flags, allowed)?;
            return Ok(stat_at(&vd.mount, &vd.dentry));
        }
        if !(flags - allowed).is_empty() {
            return Err(Errno::EINVAL);
        }
        // The walk is put down at the end of the block (returning a cache
        // loan is a locked instruction, which drains the store buffer)
        // before the answer, just written field by field, is copied out:
        // read back at once it would wait on store forwarding.
        let st = {
            // `lookup_at` without taking the result: a walk that ends on a
            // borrowed place (or keeps only its own reference) is read in
            // place.
            let mut w = self.walker(ctx, start, path, ResolveFlags::empty())?;
            w.resolve_here(!flags.contains(AtFlags::AT_SYMLINK_NOFOLLOW), false)?;
            w.cur.mount.used();
            stat_at(&w.cur.mount, &w.cur.dentry)
        };
        Ok(st)
    }

    /// `faccessat2(2)`.
    pub fn faccessat2(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        mode: AccessFlags,
        flags: AtFlags,
    ) -> Result<()> {
        if !(mode - AccessFlags::R_OK - AccessFlags::W_OK - AccessFlags::X_OK).is_empty() {
            return Err(Errno::EINVAL);
        }
        let allowed = AtFlags::AT_EACCESS | AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH;
        if !(flags - allowed).is_empty() {
            return Err(Errno::EINVAL);
        }
        let cred = if flags.contains(AtFlags::AT_EACCESS) {
            ctx.cred.clone()
        } else {
            ctx.cred.for_access()
        };
        let actx = PathCtx {
            cred: &cred,
            root: ctx.root,
            umask: ctx.umask,
        };
        let vd = self.lookup_at(&actx, start, path, flags, allowed)?;
        if mode.is_empty() {
            return Ok(());
        }
        let want = May::from_bits_truncate(mode.bits());
        inode_permission(&cred, &vd, want)?;
        if want.contains(May::EXEC)
            && vd.dentry.file_type() == FileType::Regular
            && vd.mount.flags().contains(MntFlags::NOEXEC)
        {
            return Err(Errno::EACCES);
        }
        let ft = vd.dentry.file_type();
        if want.contains(May::WRITE)
            && matches!(
                ft,
                FileType::Regular | FileType::Directory | FileType::Symlink
            )
            && vd.mount.is_write_protected()
        {
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// Applies `attr` to `vd` after the checks every setattr shares.
    fn setattr_vd(&self, cred: &Credentials, vd: &VirtualDentry, attr: SetAttr) -> Result<()> {
        vd.dentry.inode().setattr(&Ctx { cred }, &attr)
    }

    /// `chmod` on a location.
    pub fn chmod_vd(&self, cred: &Credentials, vd: &VirtualDentry, mode: u32) -> Result<()> {
        let _w = begin_write(vd)?;
        let o = vd.dentry.inode().owner();
        let m = perm::check_chmod(cred, o, mode)?;
        self.setattr_vd(
            cred,
            vd,
            SetAttr {
                mode: Some(m),
                ..Default::default()
            },
        )
    }

    /// `fchmodat(2)` (follows symbolic links).
    pub fn fchmodat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        mode: u32,
    ) -> Result<()> {
        let vd = self.lookup(ctx, start, path, true, false)?;
        self.chmod_vd(ctx.cred, &vd, mode)
    }

    /// `chown` on a location; `None` leaves an id as it is.
    pub fn chown_vd(
        &self,
        cred: &Credentials,
        vd: &VirtualDentry,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let _w = begin_write(vd)?;
        let o = vd.dentry.inode().owner();
        perm::check_chown(cred, o, uid, gid)?;
        let mut attr = SetAttr {
            uid: uid.filter(|&u| u != o.uid),
            gid: gid.filter(|&g| g != o.gid),
            ..Default::default()
        };
        if o.mode & S_IFMT != S_IFDIR {
            let mut m = o.mode & !S_ISUID;
            if m & S_ISGID != 0
                && (m & S_IXGRP != 0 || (!cred.in_group(o.gid) && !cred.has(Caps::FSETID)))
            {
                m &= !S_ISGID;
            }
            if m != o.mode {
                // Clearing the bits is a chmod (`setattr_prepare`), which
                // only the owner may make, even for chown(-1, -1).
                if !perm::is_owner_or_capable(cred, o) {
                    return Err(Errno::EPERM);
                }
                attr.mode = Some(m & 0o7777);
            }
        }
        if uid.is_some() || gid.is_some() || attr.mode.is_some() {
            attr.ctime = Some(self.now());
        }
        if o.mode & S_IFMT != S_IFDIR {
            vd.dentry.inode().drop_file_caps();
        }
        self.setattr_vd(cred, vd, attr)
    }

    /// `fchownat(2)`.
    pub fn fchownat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        uid: Option<u32>,
        gid: Option<u32>,
        flags: AtFlags,
    ) -> Result<()> {
        let vd = self.lookup_at(
            ctx,
            start,
            path,
            flags,
            AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH,
        )?;
        self.chown_vd(ctx.cred, &vd, uid, gid)
    }

    /// Truncates a regular file (`do_truncate`), clearing set-id bits.
    pub fn truncate_vd(&self, cred: &Credentials, vd: &VirtualDentry, len: u64) -> Result<()> {
        let mut attr = SetAttr {
            size: Some(len),
            ..Default::default()
        };
        let o = vd.dentry.inode().owner();
        if let Some(m) = perm::mode_after_write(cred, o) {
            attr.mode = Some(m & 0o7777);
        }
        vd.dentry.inode().drop_file_caps();
        self.setattr_vd(cred, vd, attr)
    }

    /// `truncate(2)`.
    pub fn truncate(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        len: i64,
    ) -> Result<()> {
        if len < 0 {
            return Err(Errno::EINVAL);
        }
        let vd = self.lookup(ctx, start, path, true, false)?;
        match vd.dentry.file_type() {
            FileType::Directory => return Err(Errno::EISDIR),
            FileType::Regular => {}
            _ => return Err(Errno::EINVAL),
        }
        // `vfs_truncate`: permission (a read-only superblock answers
        // `EROFS` there) before write access to the mount.
        inode_permission(ctx.cred, &vd, May::WRITE)?;
        let _w = begin_write(&vd)?;
        self.truncate_vd(ctx.cred, &vd, len as u64)
    }

    /// `utimensat(2)`.
    pub fn utimensat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        atime: TimeSpec,
        mtime: TimeSpec,
        flags: AtFlags,
    ) -> Result<()> {
        let vd = self.lookup_at(
            ctx,
            start,
            path,
            flags,
            AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH,
        )?;
        self.utimes_vd(ctx.cred, &vd, atime, mtime)
    }

    /// Sets the times of a location.
    pub fn utimes_vd(
        &self,
        cred: &Credentials,
        vd: &VirtualDentry,
        atime: TimeSpec,
        mtime: TimeSpec,
    ) -> Result<()> {
        if atime == TimeSpec::Omit && mtime == TimeSpec::Omit {
            return Ok(());
        }
        let _w = begin_write(vd)?;
        let explicit = matches!(atime, TimeSpec::At(_)) || matches!(mtime, TimeSpec::At(_));
        perm::check_utimes(cred, vd.dentry.inode().owner(), explicit)?;
        let now = self.now();
        let pick = |t: TimeSpec| match t {
            TimeSpec::Omit => None,
            TimeSpec::Now => Some(now),
            TimeSpec::At(t) => Some(t),
        };
        self.setattr_vd(
            cred,
            vd,
            SetAttr {
                atime: pick(atime),
                mtime: pick(mtime),
                ctime: Some(now),
                ..Default::default()
            },
        )
    }

    fn xattr_name(name: &[u8]) -> Result<()> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno::ERANGE);
        }
        Ok(())
    }

    /// A namespace prefix with nothing after it names no attribute
    /// (`xattr_resolve_name`); the filesystem answers `EINVAL` after the
    /// permission checks.
    fn xattr_suffix(name: &[u8]) -> Result<()> {
        if [&b"user."[..], b"trusted.", b"security.", b"system."].contains(&name) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `getxattr(2)` / `lgetxattr(2)`.
    pub fn getxattr(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        name: &[u8],
        follow: bool,
    ) -> Result<Vec<u8>> {
        Self::xattr_name(name)?;
        let vd = self.lookup(ctx, start, path, follow, false)?;
        self.getxattr_vd(ctx.cred, &vd, name)
    }

    /// Reads an extended attribute of a location.
    pub fn getxattr_vd(
        &self,
        cred: &Credentials,
        vd: &VirtualDentry,
        name: &[u8],
    ) -> Result<Vec<u8>> {
        Self::acl_target(vd, name)?;
        perm::check_xattr(cred, vd.dentry.inode().owner(), name, false)?;
        Self::xattr_suffix(name)?;
        let value = vd.dentry.inode().getxattr(name)?;
        if name == FILE_CAPS {
            return file_caps_as_read(value);
        }
        Ok(value)
    }

    /// `setxattr(2)` / `lsetxattr(2)`.
    #[allow(clippy::too_many_arguments)]
    pub fn setxattr(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        follow: bool,
    ) -> Result<()> {
        if !(flags - XattrFlags::XATTR_CREATE - XattrFlags::XATTR_REPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        Self::xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        let vd = self.lookup(ctx, start, path, follow, false)?;
        self.setxattr_vd(ctx.cred, &vd, name, value, flags)
    }

    /// Sets an extended attribute of a location.
    pub fn setxattr_vd(
        &self,
        cred: &Credentials,
        vd: &VirtualDentry,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        let _w = begin_write(vd)?;
        // An ACL value is checked right after EROFS (`do_set_acl` parses it
        // before anything else), and an empty one means "no ACL", which
        // removing gives too.
        if crate::acl::kind(name).is_some() {
            let acl = crate::acl::parse(value)?;
            Self::acl_target(vd, name)?;
            if acl == crate::acl::Acl::Empty {
                return self.removexattr_vd(cred, vd, name);
            }
        }
        if name == FILE_CAPS && !value.is_empty() {
            check_file_caps(cred, value)?;
        }
        perm::check_xattr(cred, vd.dentry.inode().owner(), name, true)?;
        Self::xattr_suffix(name)?;
        vd.dentry.inode().setxattr(name, value, flags)
    }

    /// `listxattr(2)` / `llistxattr(2)`: `trusted.*` names are shown only to `CAP_SYS_ADMIN`.
    pub fn listxattr(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        follow: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let vd = self.lookup(ctx, start, path, follow, false)?;
        self.listxattr_vd(ctx.cred, &vd)
    }

    /// Lists the extended attributes of a location.
    pub fn listxattr_vd(&self, cred: &Credentials, vd: &VirtualDentry) -> Result<Vec<Vec<u8>>> {
        let mut names = match vd.dentry.inode().listxattr() {
            Ok(n) => n,
            Err(Errno::EOPNOTSUPP) => Vec::new(),
            Err(e) => return Err(e),
        };
        if !cred.has(Caps::SYS_ADMIN) {
            names.retain(|n| !n.starts_with(b"trusted."));
        }
        // The list, each name with its NUL, must fit in XATTR_LIST_MAX.
        if names.iter().map(|n| n.len() + 1).sum::<usize>() > XATTR_LIST_MAX {
            return Err(Errno::E2BIG);
        }
        Ok(names)
    }

    /// `removexattr(2)` / `lremovexattr(2)`.
    pub fn removexattr(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        name: &[u8],
        follow: bool,
    ) -> Result<()> {
        Self::xattr_name(name)?;
        let vd = self.lookup(ctx, start, path, follow, false)?;
        self.removexattr_vd(ctx.cred, &vd, name)
    }

    /// Removes an extended attribute of a location.
    pub fn removexattr_vd(
        &self,
        cred: &Credentials,
        vd: &VirtualDentry,
        name: &[u8],
    ) -> Result<()> {
        // `removexattr` takes write access to the mount first (`EROFS`),
        // then refuses an ACL of a link whoever asks.
        let _w = begin_write(vd)?;
        Self::acl_target(vd, name)?;
        perm::check_xattr(cred, vd.dentry.inode().owner(), name, true)?;
        Self::xattr_suffix(name)?;
        vd.dentry.inode().removexattr(name)
    }

    /// Symbolic links have no ACLs (`EOPNOTSUPP`), whoever asks.
    fn acl_target(vd: &VirtualDentry, name: &[u8]) -> Result<()> {
        if crate::acl::kind(name).is_some() && vd.dentry.file_type() == FileType::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(())
    }

    /// `openat2(2)`, which `open` and `openat` also use (with `strict`
    /// false: unknown flags ignored, mode ignored without `O_CREAT`).
    #[allow(clippy::too_many_arguments)]
    pub fn openat(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        flags: OpenFlags,
        mode: u32,
        resolve: ResolveFlags,
        strict: bool,
    ) -> Result<Arc<OpenFile>> {
        let mut flags = flags;
        let mut creating = flags.intersects(OpenFlags::O_CREAT | OpenFlags::__O_TMPFILE);
        if strict {
            if !(flags - OpenFlags::VALID).is_empty() {
                return Err(Errno::EINVAL);
            }
            if !(resolve - ResolveFlags::KNOWN).is_empty() {
                return Err(Errno::EINVAL);
            }
            if resolve.contains(ResolveFlags::RESOLVE_BENEATH | ResolveFlags::RESOLVE_IN_ROOT) {
                return Err(Errno::EINVAL);
            }
            if (!creating && mode != 0) || mode & !0o7777 != 0 {
                return Err(Errno::EINVAL);
            }
            if flags.contains(OpenFlags::O_PATH)
                && !(flags
                    - (OpenFlags::O_PATH
                        | OpenFlags::O_DIRECTORY
                        | OpenFlags::O_NOFOLLOW
                        | OpenFlags::O_CLOEXEC))
                    .is_empty()
            {
                return Err(Errno::EINVAL);
            }
        } else {
            flags &= OpenFlags::VALID;
            if flags.contains(OpenFlags::O_PATH) {
                // open(2) keeps only what O_PATH allows (`build_open_how`).
                flags &= OpenFlags::O_PATH
                    | OpenFlags::O_DIRECTORY
                    | OpenFlags::O_NOFOLLOW
                    | OpenFlags::O_CLOEXEC;
                creating = false;
            }
        }
        let mode = if creating { mode & 0o7777 } else { 0 };
        if flags.contains(OpenFlags::O_CREAT) && flags.contains(OpenFlags::O_DIRECTORY) {
            return Err(Errno::EINVAL);
        }

        if flags.contains(OpenFlags::__O_SYNC) {
            flags |= OpenFlags::O_DSYNC;
        }
        // Access mode 3 asks for write too (`ACC_MODE`).
        if flags.contains(OpenFlags::__O_TMPFILE)
            && (!flags.contains(OpenFlags::O_DIRECTORY)
                || flags.contains(OpenFlags::O_CREAT)
                || flags.access() == AccessMode::ReadOnly)
        {
            return Err(Errno::EINVAL);
        }
        if resolve.contains(ResolveFlags::RESOLVE_CACHED)
            && flags.intersects(OpenFlags::O_TRUNC | OpenFlags::O_CREAT | OpenFlags::__O_TMPFILE)
        {
            return Err(Errno::EAGAIN);
        }
        if flags.contains(OpenFlags::__O_TMPFILE) {
            return self.open_tmpfile(ctx, start, path, flags, mode, resolve);
        }
        if flags.contains(OpenFlags::O_PATH) {
            flags &= OpenFlags::O_DIRECTORY | OpenFlags::O_NOFOLLOW | OpenFlags::O_PATH;
            if path.is_empty() {
                return Err(Errno::ENOENT);
            }
            let w = self.walker(ctx, start, path, resolve)?;
            let vd = w.resolve(
                !flags.contains(OpenFlags::O_NOFOLLOW),
                flags.contains(OpenFlags::O_DIRECTORY),
            )?;
            return Ok(OpenFile::new(vd, flags, None, ctx.cred.clone(), false));
        }
        if flags.contains(OpenFlags::O_CREAT) && flags.contains(OpenFlags::O_EXCL) {
            flags |= OpenFlags::O_NOFOLLOW;
        }
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let follow = !flags.contains(OpenFlags::O_NOFOLLOW);
        let mut w = self.walker(ctx, start, path, resolve)?;
        // Whatever fails after the walk began puts the walk's reference on
        // the mount it stands in (`path_put` on the way out).
        let res = self.open_walked(ctx, &mut w, flags, mode, follow);
        if let Err(e) = &res {
            // A create's trailing-slash check comes before the walk takes
            // its references (Linux 6.18).
            let slash_create =
                *e == Errno::EISDIR && flags.contains(OpenFlags::O_CREAT) && w.must_be_dir;
            if !slash_create {
                w.failed(*e);
            }
        }
        res
    }

    /// The part of [`Vfs::openat`] after its walker is made, apart so that
    /// any failure in it can be seen by the caller, which holds the walker.
    #[inline(always)]
    fn open_walked(
        &self,
        ctx: &PathCtx<'_>,
        w: &mut Walker<'_, '_>,
        mut flags: OpenFlags,
        mode: u32,
        follow: bool,
    ) -> Result<Arc<OpenFile>> {
        let mut created = false;
        // Whether a create took write access to the mount and kept it: it
        // is handed on to the new file when that is opened for writing (one
        // count kept instead of dropped and taken again), else given back.
        let mut create_write = false;
        let target = loop {
            let last = w.walk_to_last()?;
            let name = match last {
                Last::Root => break w.cur.to_vd(),
                Last::Dot => break w.cur.to_vd(),
                Last::DotDot => {
                    w.dotdot()?;
                    break w.cur.to_vd();
                }
                Last::Name => &w.last,
            };
            if !flags.contains(OpenFlags::O_CREAT) {
                let child = w.lookup_child(name)?;
                if child.dentry.file_type() == FileType::Symlink && (follow || w.must_be_dir) {
                    w.follow_link(&child.mount, &child.dentry)?;
                    continue;
                }
                break child;
            }
            if w.must_be_dir {
                return Err(Errno::EISDIR);
            }
            // The parent is read where the walk stands (no references taken).
            let (mount, parent) = (&w.cur.mount, &w.cur.dentry);
            let dir = parent.dir()?;
            let op = dir.op.lock();
            let mut child = match child_locked(ctx.cred, parent, name)? {
                Some(c) => {
                    drop(op);
                    VirtualDentry::new(Arc::clone(mount), c)
                }
                None => {
                    let wr = begin_write_on(mount)?;
                    may_create(ctx.cred, parent)?;
                    let node = new_file_node(ctx, parent, mode);
                    let inode = parent
                        .inode()
                        .create(&Ctx { cred: ctx.cred }, name, &node)?;
                    let d = parent.insert_child(name, inode)?;
                    created = true;
                    std::mem::forget(wr);
                    create_write = true;
                    break VirtualDentry::new(Arc::clone(mount), d);
                }
            };
            w.follow_mounts(&mut child)?;
            if child.dentry.file_type() == FileType::Symlink && follow {
                w.follow_link(&child.mount, &child.dentry)?;
                continue;
            }
            break child;
        };
        let held = create_write.then(|| WriteGuard(&target.mount));
        if flags.contains(OpenFlags::O_CREAT) {
            if flags.contains(OpenFlags::O_EXCL) && !created {
                return Err(Errno::EEXIST);
            }
            if target.dentry.is_dir() {
                return Err(Errno::EISDIR);
            }
        }
        if (flags.contains(OpenFlags::O_DIRECTORY) || w.must_be_dir) && !target.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        // `do_open` takes the count over (or gives it back).
        let held = held.map(std::mem::forget).is_some();
        let mut want = perm::may_for_open(flags);
        let mut truncate = false;
        if created {
            want = May::empty();
            flags -= OpenFlags::O_TRUNC;
        } else if flags.contains(OpenFlags::O_TRUNC)
            && target.dentry.file_type() == FileType::Regular
        {
            target.mount.begin_write()?;
            target.mount.end_write();
            truncate = true;
        }
        self.do_open(ctx.cred, target, flags, want, truncate, held)
    }

    /// `may_open` + `vfs_open`: the checks on the file itself, then the open.
    fn do_open(
        &self,
        cred: &Credentials,
        vd: VirtualDentry,
        flags: OpenFlags,
        want: May,
        truncate: bool,
        held_write: bool,
    ) -> Result<Arc<OpenFile>> {
        // A count of write access the caller took (a create) and hands
        // over: given back on any failure below.
        let held = held_write.then(|| WriteGuard(&vd.mount));
        let ft = vd.dentry.file_type();
        let special = matches!(
            ft,
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket
        );
        match ft {
            FileType::Symlink => return Err(Errno::ELOOP),
            FileType::Directory if want.contains(May::WRITE) => return Err(Errno::EISDIR),
            FileType::CharDevice | FileType::BlockDevice
                if vd.mount.flags().contains(MntFlags::NODEV) =>
            {
                return Err(Errno::EACCES);
            }
            _ => {}
        }
        let inode = vd.dentry.inode();
        inode_permission(cred, &vd, want)?;
        if flags.contains(OpenFlags::O_NOATIME) && !perm::is_owner_or_capable(cred, inode.owner()) {
            return Err(Errno::EPERM);
        }
        let writes = flags.writable() && !special;
        if writes {
            // A held count stays with the file (its release ends it).
            if held.map(std::mem::forget).is_none() {
                vd.mount.begin_write()?;
            }
        } else {
            drop(held);
        }
        let res = (|| {
            let ops = match ft {
                FileType::CharDevice | FileType::BlockDevice => {
                    let kind = if ft == FileType::CharDevice {
                        DeviceKind::Char
                    } else {
                        DeviceKind::Block
                    };
                    self.devices.open(kind, inode.stat().rdev, flags)?
                }
                FileType::Socket => return Err(Errno::ENXIO),
                _ => inode.clone().open(flags)?,
            };
            if truncate {
                self.truncate_vd(cred, &vd, 0)?;
            }
            Ok(ops)
        })();
        match res {
            Ok(ops) => Ok(OpenFile::new(vd, flags, Some(ops), cred.clone(), writes)),
            Err(e) => {
                if writes {
                    vd.mount.end_write();
                }
                Err(e)
            }
        }
    }

    fn open_tmpfile(
        &self,
        ctx: &PathCtx<'_>,
        start: &VirtualDentry,
        path: &[u8],
        flags: OpenFlags,
        mode: u32,
        resolve: ResolveFlags,
    ) -> Result<Arc<OpenFile>> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let dir = self
            .walker(ctx, start, path, resolve)?
            .resolve(!flags.contains(OpenFlags::O_NOFOLLOW), true)?;
        let _wr = begin_write(&dir)?;
        // No dead-directory check: Linux makes unnamed files even in a removed directory.
        perm::check(ctx.cred, dir.dentry.inode().owner(), May::WRITE | May::EXEC)?;
        let node = new_file_node(ctx, &dir.dentry, mode);
        let inode = dir.dentry.inode().tmpfile(&Ctx { cred: ctx.cred }, &node)?;
        let d = Dentry::new(inode, Some(dir.dentry.clone()), b"#tmpfile"[..].into());
        d.set_dead();
        if !flags.contains(OpenFlags::O_EXCL) {
            d.set_linkable();
        }
        let vd = VirtualDentry::new(dir.mount.clone(), d);
        self.do_open(
            ctx.cred,
            vd,
            flags - OpenFlags::__O_TMPFILE - OpenFlags::O_DIRECTORY,
            May::empty(),
            false,
            false,
        )
    }
}
