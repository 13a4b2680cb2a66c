//! Linux flag sets for the path and mount system calls, with the x86_64 values.

use bitflags::bitflags;

bitflags! {
    /// `open(2)` flags. The access mode is the low two bits (see [`OpenFlags::access`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct OpenFlags: u32 {
        /// Open for writing only.
        const O_WRONLY = 0o1;
        /// Open for reading and writing.
        const O_RDWR = 0o2;
        /// Create the file if it does not exist.
        const O_CREAT = 0o100;
        /// With `O_CREAT`: fail with `EEXIST` if the name exists.
        const O_EXCL = 0o200;
        /// Do not make a terminal the controlling terminal.
        const O_NOCTTY = 0o400;
        /// Truncate a regular file to length 0.
        const O_TRUNC = 0o1000;
        /// Every write goes to the end of the file.
        const O_APPEND = 0o2000;
        /// Non-blocking I/O.
        const O_NONBLOCK = 0o4000;
        /// Synchronised data writes.
        const O_DSYNC = 0o10000;
        /// Signal-driven I/O.
        const O_ASYNC = 0o20000;
        /// Direct I/O.
        const O_DIRECT = 0o40000;
        /// Large-file offsets (always on for 64-bit).
        const O_LARGEFILE = 0o100000;
        /// Fail with `ENOTDIR` unless the file is a directory.
        const O_DIRECTORY = 0o200000;
        /// Do not follow a symbolic link in the last component.
        const O_NOFOLLOW = 0o400000;
        /// Do not update the access time.
        const O_NOATIME = 0o1000000;
        /// Close on exec.
        const O_CLOEXEC = 0o2000000;
        /// `O_SYNC` without its `O_DSYNC` part.
        const __O_SYNC = 0o4000000;
        /// Synchronised file writes (includes `O_DSYNC`).
        const O_SYNC = 0o4010000;
        /// A location-only descriptor.
        const O_PATH = 0o10000000;
        /// `O_TMPFILE` without its `O_DIRECTORY` part.
        const __O_TMPFILE = 0o20000000;
        /// An unnamed temporary file in the given directory (includes `O_DIRECTORY`).
        const O_TMPFILE = 0o20200000;
        /// Any other bit: kept so that unknown bits can be rejected or ignored as Linux does.
        const _ = !0;
    }
}

/// The access mode of an open: the low two bits of the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// `O_RDONLY` (0).
    ReadOnly,
    /// `O_WRONLY` (1).
    WriteOnly,
    /// `O_RDWR` (2).
    ReadWrite,
    /// The value 3: Linux accepts it and grants neither read nor write.
    Invalid,
}

impl OpenFlags {
    /// `O_RDONLY`, which is the absence of the two access bits.
    pub const O_RDONLY: OpenFlags = OpenFlags::empty();

    /// The flags open(2) accepts; the other bits are ignored by open and rejected by openat2.
    pub const VALID: OpenFlags = OpenFlags::from_bits_retain(
        0o3 | 0o100
            | 0o200
            | 0o400
            | 0o1000
            | 0o2000
            | 0o4000
            | 0o10000
            | 0o20000
            | 0o40000
            | 0o100000
            | 0o200000
            | 0o400000
            | 0o1000000
            | 0o2000000
            | 0o4000000
            | 0o10000000
            | 0o20000000,
    );

    /// The access mode bits.
    pub fn access(self) -> AccessMode {
        match self.bits() & 3 {
            0 => AccessMode::ReadOnly,
            1 => AccessMode::WriteOnly,
            2 => AccessMode::ReadWrite,
            _ => AccessMode::Invalid,
        }
    }

    /// Whether the open asks for read access.
    pub fn readable(self) -> bool {
        matches!(self.access(), AccessMode::ReadOnly | AccessMode::ReadWrite)
    }

    /// Whether the open asks for write access.
    pub fn writable(self) -> bool {
        matches!(self.access(), AccessMode::WriteOnly | AccessMode::ReadWrite)
    }
}

bitflags! {
    /// The `AT_*` flags of the `*at` system calls.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct AtFlags: u32 {
        /// Do not follow a final symbolic link.
        const AT_SYMLINK_NOFOLLOW = 0x100;
        /// `unlinkat`: remove a directory. (Same bit as `AT_EACCESS`.)
        const AT_REMOVEDIR = 0x200;
        /// `faccessat2`: check with the effective ids.
        const AT_EACCESS = 0x200;
        /// `linkat`: follow a final symbolic link of the old path.
        const AT_SYMLINK_FOLLOW = 0x400;
        /// Do not trigger an automount.
        const AT_NO_AUTOMOUNT = 0x800;
        /// An empty path means the directory descriptor itself.
        const AT_EMPTY_PATH = 0x1000;
        /// Any other bit.
        const _ = !0;
    }
}

/// The directory-descriptor value meaning "the working directory".
pub const AT_FDCWD: i32 = -100;

bitflags! {
    /// `openat2(2)` `RESOLVE_*` flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ResolveFlags: u64 {
        /// Do not cross a mount point.
        const RESOLVE_NO_XDEV = 0x01;
        /// Do not follow magic links (`/proc/<pid>/fd/N`).
        const RESOLVE_NO_MAGICLINKS = 0x02;
        /// Do not follow any symbolic link.
        const RESOLVE_NO_SYMLINKS = 0x04;
        /// Stay beneath the starting directory; escaping gives `EXDEV`.
        const RESOLVE_BENEATH = 0x08;
        /// Treat the starting directory as the root.
        const RESOLVE_IN_ROOT = 0x10;
        /// Only succeed from cached state; otherwise `EAGAIN`.
        const RESOLVE_CACHED = 0x20;
        /// Any other bit.
        const _ = !0;
    }
}

impl ResolveFlags {
    /// The flags Linux knows; any other bit is `EINVAL`.
    pub const KNOWN: ResolveFlags = ResolveFlags::from_bits_retain(0x3f);
}

bitflags! {
    /// `renameat2(2)` flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct RenameFlags: u32 {
        /// Fail with `EEXIST` if the new name exists.
        const RENAME_NOREPLACE = 1;
        /// Swap the two names atomically.
        const RENAME_EXCHANGE = 2;
        /// Leave a whiteout (char device 0:0) at the old name.
        const RENAME_WHITEOUT = 4;
        /// Any other bit.
        const _ = !0;
    }
}

bitflags! {
    /// `mount(2)` flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct MountFlags: u64 {
        /// Read-only.
        const MS_RDONLY = 1;
        /// Ignore set-uid and set-gid bits.
        const MS_NOSUID = 2;
        /// Do not open device files.
        const MS_NODEV = 4;
        /// Do not execute programs.
        const MS_NOEXEC = 8;
        /// Synchronous writes.
        const MS_SYNCHRONOUS = 16;
        /// Change the flags of an existing mount.
        const MS_REMOUNT = 32;
        /// Mandatory locking (obsolete).
        const MS_MANDLOCK = 64;
        /// Synchronous directory changes.
        const MS_DIRSYNC = 128;
        /// Do not follow symlinks.
        const MS_NOSYMFOLLOW = 256;
        /// Do not update access times.
        const MS_NOATIME = 1024;
        /// Do not update directory access times.
        const MS_NODIRATIME = 2048;
        /// A bind mount.
        const MS_BIND = 4096;
        /// Move a mount.
        const MS_MOVE = 8192;
        /// Recursive (with bind or a propagation change).
        const MS_REC = 16384;
        /// Quiet.
        const MS_SILENT = 32768;
        /// POSIX ACLs (superblock flag).
        const MS_POSIXACL = 1 << 16;
        /// Make unbindable.
        const MS_UNBINDABLE = 1 << 17;
        /// Make private.
        const MS_PRIVATE = 1 << 18;
        /// Make a slave.
        const MS_SLAVE = 1 << 19;
        /// Make shared.
        const MS_SHARED = 1 << 20;
        /// Update access times relative to modification times.
        const MS_RELATIME = 1 << 21;
        /// Internal mount (kernel only).
        const MS_KERNMOUNT = 1 << 22;
        /// Update inode I_version.
        const MS_I_VERSION = 1 << 23;
        /// Always update access times.
        const MS_STRICTATIME = 1 << 24;
        /// Update times lazily.
        const MS_LAZYTIME = 1 << 25;
        /// Any other bit.
        const _ = !0;
    }
}

impl MountFlags {
    /// The propagation-type flags; at most one may be given.
    pub const PROPAGATION: MountFlags =
        MountFlags::from_bits_retain((1 << 17) | (1 << 18) | (1 << 19) | (1 << 20));
}

bitflags! {
    /// `umount2(2)` flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct UmountFlags: u32 {
        /// Force the unmount (not supported for local filesystems: `EINVAL` here).
        const MNT_FORCE = 1;
        /// Detach now, release when unused.
        const MNT_DETACH = 2;
        /// Mark for expiry.
        const MNT_EXPIRE = 4;
        /// Do not follow a final symbolic link.
        const UMOUNT_NOFOLLOW = 8;
        /// Any other bit.
        const _ = !0;
    }
}

bitflags! {
    /// `setxattr(2)` flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct XattrFlags: u32 {
        /// Fail with `EEXIST` if the attribute exists.
        const XATTR_CREATE = 1;
        /// Fail with `ENODATA` unless the attribute exists.
        const XATTR_REPLACE = 2;
        /// Any other bit.
        const _ = !0;
    }
}

bitflags! {
    /// `access(2)` modes; `F_OK` is the empty set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct AccessFlags: u32 {
        /// Execute (search, for a directory).
        const X_OK = 1;
        /// Write.
        const W_OK = 2;
        /// Read.
        const R_OK = 4;
        /// Any other bit.
        const _ = !0;
    }
}

impl AccessFlags {
    /// Existence only.
    pub const F_OK: AccessFlags = AccessFlags::empty();
}

/// `lseek(2)` whence values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// From the start.
    Set,
    /// From the current offset.
    Cur,
    /// From the end.
    End,
    /// The next data at or after the offset.
    Data,
    /// The next hole at or after the offset.
    Hole,
}

impl Whence {
    /// Decodes the raw value; unknown values are `None` (the caller answers `EINVAL`).
    pub fn from_raw(n: i32) -> Option<Whence> {
        Some(match n {
            0 => Whence::Set,
            1 => Whence::Cur,
            2 => Whence::End,
            3 => Whence::Data,
            4 => Whence::Hole,
            _ => return None,
        })
    }

    /// The raw value.
    pub fn raw(self) -> i32 {
        match self {
            Whence::Set => 0,
            Whence::Cur => 1,
            Whence::End => 2,
            Whence::Data => 3,
            Whence::Hole => 4,
        }
    }
}

bitflags! {
    /// `fallocate(2)` modes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct FallocFlags: u32 {
        /// Do not change the file size.
        const FALLOC_FL_KEEP_SIZE = 1;
        /// Deallocate the range (needs `KEEP_SIZE`).
        const FALLOC_FL_PUNCH_HOLE = 2;
        /// Zero the range.
        const FALLOC_FL_ZERO_RANGE = 0x10;
        /// Any other bit.
        const _ = !0;
    }
}
