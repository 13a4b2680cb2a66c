//! File mode and type bits, the `statx`-shaped attribute record, and directory entry types.

use bitflags::bitflags;

/// The type of a file, from the `S_IFMT` bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
}

/// Mask of the type bits in a mode.
pub const S_IFMT: u32 = 0o170000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;
/// Set-user-id.
pub const S_ISUID: u32 = 0o4000;
/// Set-group-id.
pub const S_ISGID: u32 = 0o2000;
/// Sticky.
pub const S_ISVTX: u32 = 0o1000;
/// Group execute.
pub const S_IXGRP: u32 = 0o010;

impl FileType {
    /// Decodes the `S_IFMT` bits of a mode; 0 and unknown values are `None`.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFLNK => FileType::Symlink,
            S_IFCHR => FileType::CharDevice,
            S_IFBLK => FileType::BlockDevice,
            S_IFIFO => FileType::Fifo,
            S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => S_IFREG,
            FileType::Directory => S_IFDIR,
            FileType::Symlink => S_IFLNK,
            FileType::CharDevice => S_IFCHR,
            FileType::BlockDevice => S_IFBLK,
            FileType::Fifo => S_IFIFO,
            FileType::Socket => S_IFSOCK,
        }
    }

    /// The `d_type` of a directory entry of this type.
    pub fn dirent_type(self) -> DirentType {
        match self {
            FileType::Regular => DirentType::Reg,
            FileType::Directory => DirentType::Dir,
            FileType::Symlink => DirentType::Lnk,
            FileType::CharDevice => DirentType::Chr,
            FileType::BlockDevice => DirentType::Blk,
            FileType::Fifo => DirentType::Fifo,
            FileType::Socket => DirentType::Sock,
        }
    }

    /// Whether a device number is meaningful for this type.
    pub fn is_device(self) -> bool {
        matches!(self, FileType::CharDevice | FileType::BlockDevice)
    }
}

/// The `d_type` of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DirentType {
    /// Unknown.
    Unknown = 0,
    /// FIFO.
    Fifo = 1,
    /// Character device.
    Chr = 2,
    /// Directory.
    Dir = 4,
    /// Block device.
    Blk = 6,
    /// Regular file.
    Reg = 8,
    /// Symbolic link.
    Lnk = 10,
    /// Socket.
    Sock = 12,
    /// Whiteout.
    Wht = 14,
}

/// A device number split in major and minor, as `makedev(3)` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct DevId {
    /// Major number (12 bits on Linux, kept wider here).
    pub major: u32,
    /// Minor number (20 bits on Linux).
    pub minor: u32,
}

impl DevId {
    /// Makes a device number.
    pub const fn new(major: u32, minor: u32) -> DevId {
        DevId { major, minor }
    }

    /// The glibc `dev_t` encoding.
    pub fn to_raw(self) -> u64 {
        let (ma, mi) = (self.major as u64, self.minor as u64);
        ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
    }

    /// Decodes the glibc `dev_t` encoding.
    pub fn from_raw(dev: u64) -> DevId {
        let major = ((dev >> 32) & 0xfffff000) | ((dev >> 8) & 0xfff);
        let minor = ((dev >> 12) & 0xffffff00) | (dev & 0xff);
        DevId {
            major: major as u32,
            minor: minor as u32,
        }
    }
}

/// A time stamp with nanoseconds, as in `statx_timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds, 0..1_000_000_000.
    pub nsec: u32,
}

bitflags! {
    /// Which fields of a [`Statx`] are filled (the `STATX_*` mask).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct StatxMask: u32 {
        /// `stx_mode & S_IFMT`.
        const TYPE = 0x1;
        /// `stx_mode & !S_IFMT`.
        const MODE = 0x2;
        /// `stx_nlink`.
        const NLINK = 0x4;
        /// `stx_uid`.
        const UID = 0x8;
        /// `stx_gid`.
        const GID = 0x10;
        /// `stx_atime`.
        const ATIME = 0x20;
        /// `stx_mtime`.
        const MTIME = 0x40;
        /// `stx_ctime`.
        const CTIME = 0x80;
        /// `stx_ino`.
        const INO = 0x100;
        /// `stx_size`.
        const SIZE = 0x200;
        /// `stx_blocks`.
        const BLOCKS = 0x400;
        /// All of the above (`STATX_BASIC_STATS`).
        const BASIC_STATS = 0x7ff;
        /// `stx_btime`.
        const BTIME = 0x800;
        /// `stx_mnt_id`.
        const MNT_ID = 0x1000;
    }
}

/// File attributes in the shape of `struct statx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Statx {
    /// The fields that are filled.
    pub mask: StatxMask,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// Hard link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Type and permission bits.
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub atime: Timespec,
    /// Creation.
    pub btime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Device number of a device file.
    pub rdev: DevId,
    /// Device number of the filesystem.
    pub dev: DevId,
    /// Mount id (`STATX_MNT_ID`).
    pub mnt_id: u64,
}

impl Statx {
    /// The file type, if the mode holds a known one.
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }
}

/// Filesystem statistics in the shape of `struct statfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Statfs {
    /// Filesystem magic number.
    pub fs_type: u64,
    /// Block size.
    pub bsize: u64,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Maximum name length.
    pub namelen: u64,
    /// Mount flags (`ST_*`).
    pub flags: u64,
}

/// Time values for `utimensat`: leave, set to now, or set to a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// `UTIME_OMIT`.
    Omit,
    /// `UTIME_NOW`.
    Now,
    /// An explicit time.
    At(Timespec),
}

/// Changes asked of `setattr`: every field is optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (07777).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timespec>,
    /// New modification time.
    pub mtime: Option<Timespec>,
    /// New change time (set by the VFS when anything changes).
    pub ctime: Option<Timespec>,
}
