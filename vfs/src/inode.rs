//! The traits a filesystem implements: per-inode operations, per-open-file
//! operations and per-filesystem operations.
//!
//! Filesystems never walk paths. The VFS resolves every path itself and calls
//! a filesystem with one directory and one name at a time. Every optional
//! method has a default that answers what Linux answers for a filesystem
//! without that feature.

use std::any::Any;
use std::sync::Arc;

use crate::abi::*;
use crate::cred::Credentials;
use crate::mgtime::{MgInode, MgLink};
use crate::perm::Owner;

/// A symbolic link's target as a filesystem keeps it: the bytes, and, when
/// the target is one name to look up in the link's own directory (not
/// empty, no slash, not `.` or `..`: the common `libc.so.6 ->
/// libc-2.36.so`), that name's hash; with the link's access time. Made once
/// when the link is made, so that following the link starts its lookup
/// without reading the target, and decides on the access time without a
/// call into the filesystem.
#[derive(Debug)]
pub struct LinkTarget {
    bytes: Arc<[u8]>,
    plain: Option<u64>,
    atime: MgLink,
}

impl LinkTarget {
    /// The target `bytes` of a link made at multigrain time `created`.
    pub fn new(bytes: &[u8], created: u32) -> LinkTarget {
        let plain = (!matches!(bytes, b"" | b"." | b"..") && !bytes.contains(&b'/'))
            .then(|| crate::dentry::name_hash(bytes));
        LinkTarget {
            bytes: bytes.into(),
            plain,
            atime: MgLink::new(created),
        }
    }

    /// The target.
    #[inline]
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The link's access time in the multigrain order.
    #[inline]
    pub fn atime(&self) -> &MgLink {
        &self.atime
    }

    /// The hash of the target when it is one plain name.
    #[inline]
    pub(crate) fn plain_hash(&self) -> Option<u64> {
        self.plain
    }
}

/// What [`Inode::kept_link`] lends: the target, and the link's ctime, which
/// the access-time rule compares with.
#[derive(Clone, Copy, Debug)]
pub struct KeptLink<'a> {
    /// The target and the access time.
    pub target: &'a LinkTarget,
    /// The link inode's ctime.
    pub ctime: &'a MgInode,
}

/// What a new node should be: the arguments of create, mkdir, mknod and symlink.
#[derive(Clone, Copy, Debug)]
pub struct NewNode<'a> {
    /// Its type.
    pub ftype: FileType,
    /// Permission bits (07777), already reduced by the umask and set-gid rules.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: DevId,
    /// Target of a symbolic link.
    pub target: &'a [u8],
}

/// How the VFS may treat the cached children of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coherence {
    /// The VFS's dentries are the directory (tmpfs): a name not cached does not exist.
    Authoritative,
    /// Cached dentries may be kept; a miss asks the filesystem (`lookup`).
    Cached,
    /// Every walk asks the filesystem again (remote filesystems shared with others, proc).
    Revalidate,
}

/// One entry returned by a directory read of a non-authoritative filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Type.
    pub dtype: DirentType,
    /// Inode number.
    pub ino: u64,
    /// The offset at which the entry after this one starts.
    pub next_off: u64,
}

/// The context of a call into a filesystem: who asks.
pub struct Ctx<'a> {
    /// The caller's credentials.
    pub cred: &'a Credentials,
}

/// Operations on one inode. The VFS has already checked search permission
/// on the path, the permission asked for by the call, and the per-mount
/// flags; the inode applies the change and keeps its own attributes (link
/// counts, times, sizes) right.
pub trait Inode: Send + Sync + 'static {
    /// The type, fixed for the life of the inode.
    fn file_type(&self) -> FileType;

    /// Mode, owner and group: what permission checks need.
    fn owner(&self) -> Owner;

    /// All attributes.
    fn stat(&self) -> Statx;

    /// What a `stat` system call answers: [`Inode::stat`] with the mount's
    /// device and id, and the times marked read ([`Inode::times_queried`]).
    /// A filesystem that builds the whole answer at once lets it be written
    /// where the caller receives it: patching a copy means reading back a
    /// structure just written field by field, which stalls the processor
    /// (store forwarding) for about as long as a walk step.
    fn stat_for_call(&self, dev: DevId, mnt_id: u64) -> Statx {
        self.times_queried();
        let st = self.stat();
        Statx {
            dev,
            mnt_id,
            mask: st.mask | StatxMask::MNT_ID,
            ..st
        }
    }

    /// A `stat` system call read the times: a filesystem with multigrain
    /// timestamps marks the ctime queried (see [`crate::mgtime`]).
    fn times_queried(&self) {}

    /// Whether following this symbolic link now would update its access
    /// time (Linux's `atime_needs_update`, given `relatime` of the mount):
    /// a lock-free walk gives up on such a link. By default the rule is
    /// applied to the access time a kept target carries
    /// ([`Inode::kept_link`]); a link without one never needs an update.
    fn atime_needs_update(&self, clock: &crate::mgtime::MgClock, relatime: bool) -> bool {
        self.kept_link().is_some_and(|k| {
            k.target
                .atime()
                .atime_needs_update(k.ctime, clock, relatime)
        })
    }

    /// Updates the access time of this symbolic link (`touch_atime`).
    fn touch_atime(&self, _clock: &crate::mgtime::MgClock) {}

    /// Applies attribute changes whose permission the VFS has checked.
    fn setattr(&self, _ctx: &Ctx<'_>, _attr: &SetAttr) -> Result<()> {
        Err(Errno::EPERM)
    }

    /// Access to the concrete type for filesystems that need it (rename, link).
    fn as_any(&self) -> &dyn Any;

    /// How the VFS may cache this directory's children.
    fn coherence(&self) -> Coherence {
        Coherence::Authoritative
    }

    /// Looks a name up in this directory (non-authoritative filesystems).
    fn lookup(&self, _ctx: &Ctx<'_>, _name: &[u8]) -> Result<Arc<dyn Inode>> {
        Err(Errno::ENOENT)
    }

    /// Whether a cached child is still valid (for `Coherence::Revalidate`).
    fn revalidate(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> bool {
        true
    }

    /// Creates a node of any type in this directory.
    fn create(&self, _ctx: &Ctx<'_>, _name: &[u8], _new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        Err(Errno::EPERM)
    }

    /// Creates an unnamed regular file (`O_TMPFILE`) in this directory.
    fn tmpfile(&self, _ctx: &Ctx<'_>, _new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        Err(Errno::EOPNOTSUPP)
    }

    /// Adds a hard link `name` to `target` in this directory.
    fn link(&self, _ctx: &Ctx<'_>, _name: &[u8], _target: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EPERM)
    }

    /// Removes the non-directory `child`, called `name`, from this directory.
    fn unlink(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EPERM)
    }

    /// Removes the empty directory `child`, called `name`.
    fn rmdir(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EPERM)
    }

    /// Whether this directory has no entries (asked of non-authoritative filesystems).
    fn is_empty_dir(&self, _ctx: &Ctx<'_>) -> Result<bool> {
        Ok(true)
    }

    /// Moves `child` from `old_name` here to `new_name` in `new_dir`, replacing
    /// `replaced` if given (or swapping with it when `flags` has `RENAME_EXCHANGE`).
    #[allow(clippy::too_many_arguments)]
    fn rename(
        &self,
        _ctx: &Ctx<'_>,
        _old_name: &[u8],
        _child: &Arc<dyn Inode>,
        _new_dir: &Arc<dyn Inode>,
        _new_name: &[u8],
        _replaced: Option<&Arc<dyn Inode>>,
        _flags: RenameFlags,
    ) -> Result<()> {
        Err(Errno::EPERM)
    }

    /// Refuses a rename of `child` out of this directory that the
    /// filesystem cannot make whatever the target is, before the VFS checks
    /// that a replaced directory is empty (overlayfs answers `EXDEV` for a
    /// directory that exists in a lower layer before `ENOTEMPTY`).
    fn rename_precheck(&self, _child: &Arc<dyn Inode>, _flags: RenameFlags) -> Result<()> {
        Ok(())
    }

    /// The target of a symbolic link.
    fn readlink(&self) -> Result<Vec<u8>> {
        Err(Errno::EINVAL)
    }

    /// The target of a symbolic link for the walker to follow: a filesystem
    /// that keeps it shared hands out a reference instead of a copy.
    fn link_target(&self) -> Result<Arc<[u8]>> {
        self.readlink().map(Arc::from)
    }

    /// A symbolic link's target kept in the inode and never changed (as
    /// Linux's are not): the walker reads it in place while it holds the
    /// link, touching no reference count. `None` makes it ask
    /// [`Inode::link_target`].
    fn kept_link(&self) -> Option<KeptLink<'_>> {
        None
    }

    /// Opens this inode. Device files are opened through the device registry
    /// by the VFS and never reach here. Shared, so that an inode that serves
    /// its open files itself hands out a reference instead of allocating.
    fn open(self: Arc<Self>, _flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        Err(Errno::ENXIO)
    }

    /// Reads an extended attribute.
    fn getxattr(&self, _name: &[u8]) -> Result<Vec<u8>> {
        Err(Errno::EOPNOTSUPP)
    }

    /// Sets an extended attribute.
    fn setxattr(&self, _name: &[u8], _value: &[u8], _flags: XattrFlags) -> Result<()> {
        Err(Errno::EOPNOTSUPP)
    }

    /// Lists extended attribute names.
    fn listxattr(&self) -> Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }

    /// Removes an extended attribute.
    fn removexattr(&self, _name: &[u8]) -> Result<()> {
        Err(Errno::EOPNOTSUPP)
    }

    /// A write, truncate or chown takes away the file's capabilities
    /// (`security_inode_killpriv` removes `security.capability`). A
    /// filesystem that keeps that attribute itself removes it here, cheaply
    /// when there is none: every write calls this.
    fn drop_file_caps(&self) {}
}

/// Operations of an open file description. Offsets are the caller's: the VFS
/// keeps the file position.
pub trait FileOps: Send + Sync {
    /// Reads at `off` into `buf`; returns the count (0 at end of file).
    fn read(&self, _off: u64, _buf: &mut [u8]) -> Result<usize> {
        Err(Errno::EINVAL)
    }

    /// Writes `buf` at `off`, or at the end when `append`; returns the count
    /// and the offset just past the written bytes.
    fn write(&self, _ctx: &Ctx<'_>, _off: u64, _buf: &[u8], _append: bool) -> Result<(usize, u64)> {
        Err(Errno::EINVAL)
    }

    /// Whether the file has a position (`false`: pipes, sockets, most devices: `ESPIPE` on seek).
    fn seekable(&self) -> bool {
        true
    }

    /// A device's own `lseek` (`null_lseek`, `noop_llseek`): `Some` answer
    /// replaces the generic computation from `cur`, the file position.
    fn llseek(&self, _cur: u64, _off: i64, _whence: Whence) -> Option<Result<i64>> {
        None
    }

    /// The size used by `SEEK_END`, `SEEK_DATA` and `SEEK_HOLE`.
    fn size(&self) -> u64 {
        0
    }

    /// `SEEK_DATA` / `SEEK_HOLE` from `off`. The default treats the whole file as data.
    fn seek_data_hole(&self, off: u64, data: bool) -> Result<u64> {
        let size = self.size();
        if off >= size {
            return Err(Errno::ENXIO);
        }
        Ok(if data { off } else { size })
    }

    /// Reads directory entries from offset `off` (non-authoritative filesystems).
    fn readdir(&self, _ctx: &Ctx<'_>, _off: u64) -> Result<Vec<DirEntry>> {
        Err(Errno::ENOTDIR)
    }

    /// `fallocate(2)`.
    fn allocate(&self, _ctx: &Ctx<'_>, _mode: FallocFlags, _off: u64, _len: u64) -> Result<()> {
        Err(Errno::EOPNOTSUPP)
    }

    /// `fsync(2)`. Files with nothing to flush say so; the default, like
    /// a Linux file without `fsync`, is `EINVAL` (pipes, most devices).
    fn fsync(&self) -> Result<()> {
        Err(Errno::EINVAL)
    }

    /// A device-specific control call. `arg` is the in/out buffer of the call.
    fn ioctl(&self, _cmd: u32, _arg: &mut [u8]) -> Result<i64> {
        Err(Errno::ENOTTY)
    }
}

/// Operations of a whole filesystem instance (a superblock).
pub trait FilesystemOps: Send + Sync + 'static {
    /// `statfs(2)`.
    fn statfs(&self) -> Result<Statfs>;

    /// The filesystem-specific options shown in `mountinfo` (`size=64k,mode=700`).
    fn show_options(&self) -> String {
        String::new()
    }

    /// Whether the filesystem can never be written (verity): its superblock
    /// is read-only whatever the mount flags say, so writes fail with `EROFS`
    /// before any other check.
    fn is_readonly(&self) -> bool {
        false
    }

    /// Whether the filesystem cannot become read-only now because files
    /// without names are still open (Linux's `s_remove_count`: `EBUSY`).
    fn busy_for_readonly(&self) -> bool {
        false
    }

    /// Whether a remount that asks for read-write must fail with `EROFS`
    /// (an overlay without an upper layer can never be written).
    fn refuses_rw_remount(&self) -> bool {
        false
    }

    /// Applies new mount data on `MS_REMOUNT`.
    fn remount(&self, _data: &crate::fstype::MountData) -> Result<()> {
        Ok(())
    }

    /// Access to the concrete type.
    fn as_any(&self) -> &dyn Any;
}

#[cfg(test)]
mod tests {
    use super::LinkTarget;
    use crate::dentry::name_hash;

    #[test]
    fn only_one_plain_name_gets_a_hash() {
        for t in [&b"libc-2.36.so"[..], b"x", b"...", b".hidden", b"a b"] {
            assert_eq!(
                LinkTarget::new(t, 0).plain_hash(),
                Some(name_hash(t)),
                "{t:?}"
            );
        }
        for t in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"/x",
            b"x/",
            b"a/b",
            b"../x",
            b"./x",
        ] {
            assert_eq!(LinkTarget::new(t, 0).plain_hash(), None, "{t:?}");
        }
        assert_eq!(&**LinkTarget::new(b"a/b", 0).bytes(), b"a/b");
    }
}
