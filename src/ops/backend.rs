//! The system-call interface the ops-script runner drives.
//!
//! One method per system call, with the raw Linux values: descriptors are
//! `i32` (`AT_FDCWD` is -100), flags are the numbers the parser produced,
//! paths and names are byte strings without NUL. A backend returns exactly
//! what the system call would: a value, or the [`Errno`] Linux would give.
//! Two backends exist: the host kernel ([`super::linux::LinuxBackend`]) and
//! Tessera's own VFS. The runner does everything else (handle names,
//! formatting, sorting), so that both backends are compared on the calls alone.
//!
//! A backend is a single process in the spec's starting state: an empty
//! tmpfs root with mode 0755, umask 0022, every id 0, all capabilities, no
//! open descriptors.

use tessera_vfs::abi::{DirentType, Statx};
use tessera_vfs::{Errno, Result};

/// One directory entry as `getdents64(2)` returns it: its name and `d_type`.
pub type Dirent = (Vec<u8>, DirentType);

/// The system calls of one process, as the ops-script runner uses them.
///
/// Each method mirrors the Linux system call of the same name. Unless a
/// method says otherwise, `dirfd` is an open descriptor or `AT_FDCWD`, and a
/// failure is the errno Linux returns for the same call in the same state.
pub trait Backend {
    /// `mkdirat(2)`: makes a directory; the umask applies to `mode`.
    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> Result<()>;

    /// `mknodat(2)`: makes a file of the type in `mode`'s `S_IFMT` bits (a
    /// regular file when they are 0), with device number `major:minor` for
    /// character and block devices.
    fn mknodat(&mut self, dirfd: i32, path: &[u8], mode: u32, major: u32, minor: u32)
        -> Result<()>;

    /// `symlinkat(2)`: makes `path` a symbolic link holding `target`.
    fn symlinkat(&mut self, target: &[u8], newdirfd: i32, path: &[u8]) -> Result<()>;

    /// `linkat(2)`: makes `new` a hard link to `old` (`AT_SYMLINK_FOLLOW`,
    /// `AT_EMPTY_PATH` in `flags`).
    fn linkat(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()>;

    /// `unlinkat(2)`: removes a name, or an empty directory with `AT_REMOVEDIR`.
    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<()>;

    /// `renameat2(2)` with `RENAME_*` flags (0 is `rename(2)`).
    fn renameat2(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()>;

    /// `readlinkat(2)`: the whole contents of a symbolic link.
    fn readlinkat(&mut self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>>;

    /// `fstatat(2)` (`AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH` in `flags`). The
    /// runner reads the type, mode, nlink, uid, gid, size and rdev.
    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<Statx>;

    /// `fstat(2)`.
    fn fstat(&mut self, fd: i32) -> Result<Statx>;

    /// `faccessat2(2)`: `mode` is `F_OK` or `R_OK|W_OK|X_OK` bits; without
    /// `AT_EACCESS` the check uses the real ids, as `access(2)` does.
    fn faccessat2(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()>;

    /// `fchmodat(2)`.
    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()>;

    /// `fchmod(2)`.
    fn fchmod(&mut self, fd: i32, mode: u32) -> Result<()>;

    /// `fchownat(2)`; `u32::MAX` (-1) leaves an id unchanged.
    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: u32) -> Result<()>;

    /// `fchown(2)`; `u32::MAX` (-1) leaves an id unchanged.
    fn fchown(&mut self, fd: i32, uid: u32, gid: u32) -> Result<()>;

    /// `truncate(2)`.
    fn truncate(&mut self, path: &[u8], length: i64) -> Result<()>;

    /// `ftruncate(2)`.
    fn ftruncate(&mut self, fd: i32, length: i64) -> Result<()>;

    /// `openat(2)`: the new descriptor.
    fn openat(&mut self, dirfd: i32, path: &[u8], flags: u32, mode: u32) -> Result<i32>;

    /// `openat2(2)` with `struct open_how { flags, mode, resolve }`.
    fn openat2(
        &mut self,
        dirfd: i32,
        path: &[u8],
        flags: u64,
        mode: u64,
        resolve: u64,
    ) -> Result<i32>;

    /// `close(2)`. The descriptor is released even when an error is returned.
    fn close(&mut self, fd: i32) -> Result<()>;

    /// `dup(2)`: the lowest free descriptor, sharing the file and its offset.
    fn dup(&mut self, fd: i32) -> Result<i32>;

    /// `read(2)` into `buf`: one call, returning the byte count.
    fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize>;

    /// `pread(2)` into `buf` at `offset`.
    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> Result<usize>;

    /// `write(2)`: one call, returning the byte count.
    fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize>;

    /// `pwrite(2)` at `offset`.
    fn pwrite(&mut self, fd: i32, data: &[u8], offset: i64) -> Result<usize>;

    /// `lseek(2)` with a raw `whence` (`SEEK_SET` 0 .. `SEEK_HOLE` 4): the new offset.
    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> Result<i64>;

    /// `fsync(2)`.
    fn fsync(&mut self, fd: i32) -> Result<()>;

    /// `getdents64(2)` called until it returns 0: every entry from the
    /// descriptor's current offset to the end (`.` and `..` included when the
    /// filesystem returns them), in the filesystem's order. The offset moves to
    /// the end.
    fn getdents(&mut self, fd: i32) -> Result<Vec<Dirent>>;

    /// `chdir(2)`.
    fn chdir(&mut self, path: &[u8]) -> Result<()>;

    /// `fchdir(2)`.
    fn fchdir(&mut self, fd: i32) -> Result<()>;

    /// `chroot(2)`.
    fn chroot(&mut self, path: &[u8]) -> Result<()>;

    /// The `getcwd(2)` system call (not the C library's): a working directory
    /// outside the process root starts with `(unreachable)`.
    fn getcwd(&mut self) -> Result<Vec<u8>>;

    /// `umask(2)`: sets the mask, returns the old one.
    fn umask(&mut self, mask: u32) -> Result<u32>;

    /// Sets the filesystem credentials as `setgroups(2)`, `setfsgid(2)` and
    /// `setfsuid(2)` do: while the fsuid is not 0 the filesystem capabilities
    /// (CAP_CHOWN, CAP_MKNOD, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
    /// CAP_FOWNER, CAP_FSETID, CAP_LINUX_IMMUTABLE, CAP_MAC_OVERRIDE) are not
    /// effective; the others (CAP_SYS_ADMIN among them) stay. The real and
    /// effective ids stay 0, so `access(2)` still checks as root.
    /// `set_creds(0, 0, &[])` restores the starting credentials.
    fn set_creds(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<()>;

    /// `setxattr(2)`, or `lsetxattr(2)` when `follow` is false.
    fn setxattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: u32,
        follow: bool,
    ) -> Result<()>;

    /// `getxattr(2)`, or `lgetxattr(2)` when `follow` is false: the whole value.
    fn getxattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<Vec<u8>>;

    /// `listxattr(2)`, or `llistxattr(2)` when `follow` is false: the names
    /// (without their NUL terminators), in any order.
    fn listxattr(&mut self, path: &[u8], follow: bool) -> Result<Vec<Vec<u8>>>;

    /// `removexattr(2)`, or `lremovexattr(2)` when `follow` is false.
    fn removexattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<()>;

    /// `mount(2)`. `source` is passed as is; an empty `data` means no data
    /// (a NULL pointer on Linux).
    fn mount(
        &mut self,
        source: &[u8],
        target: &[u8],
        fstype: &[u8],
        flags: u64,
        data: &[u8],
    ) -> Result<()>;

    /// `umount2(2)`.
    fn umount2(&mut self, target: &[u8], flags: u32) -> Result<()>;

    /// `pivot_root(2)`.
    fn pivot_root(&mut self, new_root: &[u8], put_old: &[u8]) -> Result<()>;

    /// The text of `/proc/self/mountinfo` as this process would read it now
    /// (paths relative to its root, mounts outside its root left out). The
    /// runner parses it with [`super::mountinfo::parse`].
    fn mountinfo(&mut self) -> Result<Vec<u8>>;
}

/// A backend that is not there: every call fails with `ENOSYS`.
///
/// Useful in tests of the runner's own logic (handle errors, echo) where no
/// real filesystem is needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn mkdirat(&mut self, _: i32, _: &[u8], _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn mknodat(&mut self, _: i32, _: &[u8], _: u32, _: u32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn symlinkat(&mut self, _: &[u8], _: i32, _: &[u8]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn linkat(&mut self, _: i32, _: &[u8], _: i32, _: &[u8], _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn unlinkat(&mut self, _: i32, _: &[u8], _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn renameat2(&mut self, _: i32, _: &[u8], _: i32, _: &[u8], _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn readlinkat(&mut self, _: i32, _: &[u8]) -> Result<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    fn fstatat(&mut self, _: i32, _: &[u8], _: u32) -> Result<Statx> {
        Err(Errno::ENOSYS)
    }
    fn fstat(&mut self, _: i32) -> Result<Statx> {
        Err(Errno::ENOSYS)
    }
    fn faccessat2(&mut self, _: i32, _: &[u8], _: u32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn fchmodat(&mut self, _: i32, _: &[u8], _: u32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn fchmod(&mut self, _: i32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn fchownat(&mut self, _: i32, _: &[u8], _: u32, _: u32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn fchown(&mut self, _: i32, _: u32, _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn truncate(&mut self, _: &[u8], _: i64) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn ftruncate(&mut self, _: i32, _: i64) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn openat(&mut self, _: i32, _: &[u8], _: u32, _: u32) -> Result<i32> {
        Err(Errno::ENOSYS)
    }
    fn openat2(&mut self, _: i32, _: &[u8], _: u64, _: u64, _: u64) -> Result<i32> {
        Err(Errno::ENOSYS)
    }
    fn close(&mut self, _: i32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn dup(&mut self, _: i32) -> Result<i32> {
        Err(Errno::ENOSYS)
    }
    fn read(&mut self, _: i32, _: &mut [u8]) -> Result<usize> {
        Err(Errno::ENOSYS)
    }
    fn pread(&mut self, _: i32, _: &mut [u8], _: i64) -> Result<usize> {
        Err(Errno::ENOSYS)
    }
    fn write(&mut self, _: i32, _: &[u8]) -> Result<usize> {
        Err(Errno::ENOSYS)
    }
    fn pwrite(&mut self, _: i32, _: &[u8], _: i64) -> Result<usize> {
        Err(Errno::ENOSYS)
    }
    fn lseek(&mut self, _: i32, _: i64, _: i32) -> Result<i64> {
        Err(Errno::ENOSYS)
    }
    fn fsync(&mut self, _: i32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn getdents(&mut self, _: i32) -> Result<Vec<Dirent>> {
        Err(Errno::ENOSYS)
    }
    fn chdir(&mut self, _: &[u8]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn fchdir(&mut self, _: i32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn chroot(&mut self, _: &[u8]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn getcwd(&mut self) -> Result<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    fn umask(&mut self, _: u32) -> Result<u32> {
        Err(Errno::ENOSYS)
    }
    fn set_creds(&mut self, _: u32, _: u32, _: &[u32]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn setxattr(&mut self, _: &[u8], _: &[u8], _: &[u8], _: u32, _: bool) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn getxattr(&mut self, _: &[u8], _: &[u8], _: bool) -> Result<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    fn listxattr(&mut self, _: &[u8], _: bool) -> Result<Vec<Vec<u8>>> {
        Err(Errno::ENOSYS)
    }
    fn removexattr(&mut self, _: &[u8], _: &[u8], _: bool) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn mount(&mut self, _: &[u8], _: &[u8], _: &[u8], _: u64, _: &[u8]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn umount2(&mut self, _: &[u8], _: u32) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn pivot_root(&mut self, _: &[u8], _: &[u8]) -> Result<()> {
        Err(Errno::ENOSYS)
    }
    fn mountinfo(&mut self) -> Result<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
}
