//! The 9P2000.L wire format: every message Linux's v9fs client and a gofer
//! exchange, encoded and decoded by hand.
//!
//! A frame is `size[4] type[1] tag[2] body`, little-endian, where `size`
//! counts the whole frame. Strings are `len[2] bytes`; we keep them as byte
//! slices because Linux file names are bytes, not UTF-8.
//!
//! Decoding is total and borrows: [`decode`] takes one frame and returns a
//! [`Msg`] whose names and data point into the input, or a [`DecodeError`].
//! It never panics and never allocates (walk names and qids, at most 16 each,
//! live in inline arrays), so the only memory a peer can make us spend is the
//! frame buffer itself, which the caller bounds by the negotiated msize.
//!
//! Decoding is lenient about bytes after the last field (servers in the wild
//! pad some replies, and Tfsync comes with and without its `datasync` word)
//! and strict about everything that is missing.

use smallvec::SmallVec;
use std::fmt;

/// Bytes of the frame header: size, type, tag.
pub const HEADER_SIZE: usize = 7;
/// The bytes of an Rread or Twrite frame that are not data (`P9_IOHDRSZ`);
/// a read or write may move at most `msize - IOHDRSZ` bytes.
pub const IOHDRSZ: u32 = 24;
/// The tag of Tversion.
pub const NOTAG: u16 = 0xffff;
/// "No fid": the afid of an unauthenticated attach.
pub const NOFID: u32 = 0xffff_ffff;
/// "No uid": `n_uname` when the server should use `uname`.
pub const NONUNAME: u32 = 0xffff_ffff;
/// The most names a single Twalk may carry (and qids an Rwalk may return).
pub const MAXWELEM: usize = 16;
/// The protocol version this codec speaks.
pub const VERSION_9P2000L: &[u8] = b"9P2000.L";

/// Qid type bit: directory.
pub const QTDIR: u8 = 0x80;
/// Qid type bit: append-only file.
pub const QTAPPEND: u8 = 0x40;
/// Qid type bit: exclusive-use file.
pub const QTEXCL: u8 = 0x20;
/// Qid type bit: authentication file.
pub const QTAUTH: u8 = 0x08;
/// Qid type bit: symbolic link.
pub const QTSYMLINK: u8 = 0x02;
/// Qid type: plain file.
pub const QTFILE: u8 = 0x00;

/// `Tgetattr` request mask bits (`P9_GETATTR_*`).
pub mod getattr {
    /// Mode.
    pub const MODE: u64 = 0x0000_0001;
    /// Link count.
    pub const NLINK: u64 = 0x0000_0002;
    /// Owner.
    pub const UID: u64 = 0x0000_0004;
    /// Group.
    pub const GID: u64 = 0x0000_0008;
    /// Device number.
    pub const RDEV: u64 = 0x0000_0010;
    /// Access time.
    pub const ATIME: u64 = 0x0000_0020;
    /// Modification time.
    pub const MTIME: u64 = 0x0000_0040;
    /// Change time.
    pub const CTIME: u64 = 0x0000_0080;
    /// Inode number (the qid path).
    pub const INO: u64 = 0x0000_0100;
    /// Size.
    pub const SIZE: u64 = 0x0000_0200;
    /// Block count.
    pub const BLOCKS: u64 = 0x0000_0400;
    /// Birth time.
    pub const BTIME: u64 = 0x0000_0800;
    /// Generation.
    pub const GEN: u64 = 0x0000_1000;
    /// Data version.
    pub const DATA_VERSION: u64 = 0x0000_2000;
    /// What `stat(2)` needs.
    pub const BASIC: u64 = 0x0000_07ff;
    /// Everything.
    pub const ALL: u64 = 0x0000_3fff;
}

/// `Tsetattr` valid bits (`P9_SETATTR_*`).
pub mod setattr {
    /// Set the mode.
    pub const MODE: u32 = 0x0000_0001;
    /// Set the owner.
    pub const UID: u32 = 0x0000_0002;
    /// Set the group.
    pub const GID: u32 = 0x0000_0004;
    /// Truncate or extend.
    pub const SIZE: u32 = 0x0000_0008;
    /// Set the access time (to now unless `ATIME_SET`).
    pub const ATIME: u32 = 0x0000_0010;
    /// Set the modification time (to now unless `MTIME_SET`).
    pub const MTIME: u32 = 0x0000_0020;
    /// Update the change time.
    pub const CTIME: u32 = 0x0000_0040;
    /// Use the given access time.
    pub const ATIME_SET: u32 = 0x0000_0080;
    /// Use the given modification time.
    pub const MTIME_SET: u32 = 0x0000_0100;
}

/// Message type numbers.
pub mod msgtype {
    #![allow(missing_docs)]
    pub const RLERROR: u8 = 7;
    pub const TSTATFS: u8 = 8;
    pub const RSTATFS: u8 = 9;
    pub const TLOPEN: u8 = 12;
    pub const RLOPEN: u8 = 13;
    pub const TLCREATE: u8 = 14;
    pub const RLCREATE: u8 = 15;
    pub const TSYMLINK: u8 = 16;
    pub const RSYMLINK: u8 = 17;
    pub const TMKNOD: u8 = 18;
    pub const RMKNOD: u8 = 19;
    pub const TRENAME: u8 = 20;
    pub const RRENAME: u8 = 21;
    pub const TREADLINK: u8 = 22;
    pub const RREADLINK: u8 = 23;
    pub const TGETATTR: u8 = 24;
    pub const RGETATTR: u8 = 25;
    pub const TSETATTR: u8 = 26;
    pub const RSETATTR: u8 = 27;
    pub const TXATTRWALK: u8 = 30;
    pub const RXATTRWALK: u8 = 31;
    pub const TXATTRCREATE: u8 = 32;
    pub const RXATTRCREATE: u8 = 33;
    pub const TREADDIR: u8 = 40;
    pub const RREADDIR: u8 = 41;
    pub const TFSYNC: u8 = 50;
    pub const RFSYNC: u8 = 51;
    pub const TLOCK: u8 = 52;
    pub const RLOCK: u8 = 53;
    pub const TGETLOCK: u8 = 54;
    pub const RGETLOCK: u8 = 55;
    pub const TLINK: u8 = 70;
    pub const RLINK: u8 = 71;
    pub const TMKDIR: u8 = 72;
    pub const RMKDIR: u8 = 73;
    pub const TRENAMEAT: u8 = 74;
    pub const RRENAMEAT: u8 = 75;
    pub const TUNLINKAT: u8 = 76;
    pub const RUNLINKAT: u8 = 77;
    pub const TVERSION: u8 = 100;
    pub const RVERSION: u8 = 101;
    pub const TAUTH: u8 = 102;
    pub const RAUTH: u8 = 103;
    pub const TATTACH: u8 = 104;
    pub const RATTACH: u8 = 105;
    pub const TFLUSH: u8 = 108;
    pub const RFLUSH: u8 = 109;
    pub const TWALK: u8 = 110;
    pub const RWALK: u8 = 111;
    pub const TREAD: u8 = 116;
    pub const RREAD: u8 = 117;
    pub const TWRITE: u8 = 118;
    pub const RWRITE: u8 = 119;
    pub const TCLUNK: u8 = 120;
    pub const RCLUNK: u8 = 121;
    pub const TREMOVE: u8 = 122;
    pub const RREMOVE: u8 = 123;
}
use msgtype::*;

/// The server's identity for a file: type bits, version and a unique path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Qid {
    /// `QT*` bits.
    pub ty: u8,
    /// Changes when the file changes (servers differ in what they put here).
    pub version: u32,
    /// Unique per file on the server; the inode number for most servers.
    pub path: u64,
}

impl Qid {
    /// Whether the qid names a directory.
    pub fn is_dir(&self) -> bool {
        self.ty & QTDIR != 0
    }
    /// Whether the qid names a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.ty & QTSYMLINK != 0
    }
}

/// The body of `Rgetattr`: a `statx`-like record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    /// Which fields the server filled in (`getattr::*`).
    pub valid: u64,
    /// The file's qid.
    pub qid: Qid,
    /// Mode with type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
    /// Device number (Linux encoding).
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O size.
    pub blksize: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Access time, seconds.
    pub atime_sec: u64,
    /// Access time, nanoseconds.
    pub atime_nsec: u64,
    /// Modification time, seconds.
    pub mtime_sec: u64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u64,
    /// Change time, seconds.
    pub ctime_sec: u64,
    /// Change time, nanoseconds.
    pub ctime_nsec: u64,
    /// Birth time, seconds.
    pub btime_sec: u64,
    /// Birth time, nanoseconds.
    pub btime_nsec: u64,
    /// Generation number.
    pub gen: u64,
    /// Data version.
    pub data_version: u64,
}

/// The body of `Tsetattr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Which fields to apply (`setattr::*`).
    pub valid: u32,
    /// New mode (permission bits).
    pub mode: u32,
    /// New owner.
    pub uid: u32,
    /// New group.
    pub gid: u32,
    /// New size.
    pub size: u64,
    /// Access time, seconds (with `ATIME_SET`).
    pub atime_sec: u64,
    /// Access time, nanoseconds.
    pub atime_nsec: u64,
    /// Modification time, seconds (with `MTIME_SET`).
    pub mtime_sec: u64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u64,
}

/// The body of `Rstatfs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    /// Filesystem type magic.
    pub ty: u32,
    /// Block size.
    pub bsize: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks free for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Filesystem id.
    pub fsid: u64,
    /// Longest name.
    pub namelen: u32,
}

/// A byte-range lock request or answer (`Tlock`, `Tgetlock`, `Rgetlock`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flock<'a> {
    /// `P9_LOCK_TYPE_RDLCK` (0), `WRLCK` (1) or `UNLCK` (2).
    pub ty: u8,
    /// `P9_LOCK_FLAGS_*` (Tlock only; 0 elsewhere).
    pub flags: u32,
    /// First byte.
    pub start: u64,
    /// Length; 0 means to the end.
    pub length: u64,
    /// The owner's process id.
    pub proc_id: u32,
    /// The owner's client name.
    pub client_id: &'a [u8],
}

/// One 9P2000.L message, T or R, borrowing names and data from a frame.
#[allow(missing_docs)] // fields are named after the protocol's own
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Tversion {
        msize: u32,
        version: &'a [u8],
    },
    Rversion {
        msize: u32,
        version: &'a [u8],
    },
    Tauth {
        afid: u32,
        uname: &'a [u8],
        aname: &'a [u8],
        n_uname: u32,
    },
    Rauth {
        aqid: Qid,
    },
    Tattach {
        fid: u32,
        afid: u32,
        uname: &'a [u8],
        aname: &'a [u8],
        n_uname: u32,
    },
    Rattach {
        qid: Qid,
    },
    Rlerror {
        ecode: u32,
    },
    Tflush {
        oldtag: u16,
    },
    Rflush,
    Twalk {
        fid: u32,
        newfid: u32,
        names: SmallVec<[&'a [u8]; MAXWELEM]>,
    },
    Rwalk {
        qids: SmallVec<[Qid; MAXWELEM]>,
    },
    Tread {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Rread {
        data: &'a [u8],
    },
    Twrite {
        fid: u32,
        offset: u64,
        data: &'a [u8],
    },
    Rwrite {
        count: u32,
    },
    Tclunk {
        fid: u32,
    },
    Rclunk,
    Tremove {
        fid: u32,
    },
    Rremove,
    Tstatfs {
        fid: u32,
    },
    Rstatfs {
        statfs: StatFs,
    },
    Tlopen {
        fid: u32,
        flags: u32,
    },
    Rlopen {
        qid: Qid,
        iounit: u32,
    },
    Tlcreate {
        fid: u32,
        name: &'a [u8],
        flags: u32,
        mode: u32,
        gid: u32,
    },
    Rlcreate {
        qid: Qid,
        iounit: u32,
    },
    Tsymlink {
        fid: u32,
        name: &'a [u8],
        target: &'a [u8],
        gid: u32,
    },
    Rsymlink {
        qid: Qid,
    },
    Tmknod {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    },
    Rmknod {
        qid: Qid,
    },
    Trename {
        fid: u32,
        dfid: u32,
        name: &'a [u8],
    },
    Rrename,
    Treadlink {
        fid: u32,
    },
    Rreadlink {
        target: &'a [u8],
    },
    Tgetattr {
        fid: u32,
        mask: u64,
    },
    Rgetattr {
        attr: Attr,
    },
    Tsetattr {
        fid: u32,
        attr: SetAttr,
    },
    Rsetattr,
    Txattrwalk {
        fid: u32,
        newfid: u32,
        name: &'a [u8],
    },
    Rxattrwalk {
        size: u64,
    },
    Txattrcreate {
        fid: u32,
        name: &'a [u8],
        size: u64,
        flags: u32,
    },
    Rxattrcreate,
    Treaddir {
        fid: u32,
        offset: u64,
        count: u32,
    },
    /// The entries, still encoded; walk them with [`Dirents`].
    Rreaddir {
        data: &'a [u8],
    },
    Tfsync {
        fid: u32,
        datasync: u32,
    },
    Rfsync,
    Tlock {
        fid: u32,
        lock: Flock<'a>,
    },
    Rlock {
        status: u8,
    },
    Tgetlock {
        fid: u32,
        lock: Flock<'a>,
    },
    Rgetlock {
        lock: Flock<'a>,
    },
    Tlink {
        dfid: u32,
        fid: u32,
        name: &'a [u8],
    },
    Rlink,
    Tmkdir {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        gid: u32,
    },
    Rmkdir {
        qid: Qid,
    },
    Trenameat {
        olddirfid: u32,
        oldname: &'a [u8],
        newdirfid: u32,
        newname: &'a [u8],
    },
    Rrenameat,
    Tunlinkat {
        dirfid: u32,
        name: &'a [u8],
        flags: u32,
    },
    Runlinkat,
}

/// Why a byte sequence is not a valid 9P2000.L frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 7 header bytes, or a field runs past the end of the frame.
    #[error("truncated 9P frame")]
    Truncated,
    /// The size field does not match the bytes given.
    #[error("9P size field {declared} does not match the {actual} bytes given")]
    SizeMismatch {
        /// The size the frame declares.
        declared: u32,
        /// The bytes handed to the decoder.
        actual: usize,
    },
    /// The frame is larger than the negotiated msize.
    #[error("9P frame of {size} bytes exceeds msize {msize}")]
    Oversize {
        /// The frame's size.
        size: u32,
        /// The negotiated limit.
        msize: u32,
    },
    /// A type number that 9P2000.L does not define (or one we never exchange).
    #[error("unknown 9P message type {0}")]
    UnknownType(u8),
    /// A walk with more than [`MAXWELEM`] names or qids.
    #[error("9P walk with {0} elements")]
    TooManyElements(u16),
}

/// Why a message cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string longer than 65535 bytes.
    #[error("9P string too long")]
    StringTooLong,
    /// A walk with more than [`MAXWELEM`] names or qids.
    #[error("too many walk elements")]
    TooManyElements,
    /// The frame would not fit in a 32-bit size or a 32-bit count.
    #[error("9P frame too large")]
    TooLarge,
}

/// Reads the size and tag of a frame from its first [`HEADER_SIZE`] bytes.
///
/// Returns `(size, type, tag)`; `None` if fewer than seven bytes are given.
pub fn peek_header(bytes: &[u8]) -> Option<(u32, u8, u16)> {
    let h = bytes.get(..HEADER_SIZE)?;
    Some((
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        h[4],
        u16::from_le_bytes([h[5], h[6]]),
    ))
}

/// Decodes exactly one frame, checking it against the negotiated `msize`.
///
/// Returns the tag and the message. Total: every input yields `Ok` or `Err`.
pub fn decode(bytes: &[u8], msize: u32) -> Result<(u16, Msg<'_>), DecodeError> {
    let (size, ty, tag) = peek_header(bytes).ok_or(DecodeError::Truncated)?;
    if size > msize {
        return Err(DecodeError::Oversize { size, msize });
    }
    if size as usize != bytes.len() {
        return Err(DecodeError::SizeMismatch {
            declared: size,
            actual: bytes.len(),
        });
    }
    let mut r = Reader {
        buf: &bytes[HEADER_SIZE..],
    };
    let msg = decode_body(ty, &mut r)?;
    Ok((tag, msg))
}

/// A cursor over a frame body; every read checks the remaining length.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn qid(&mut self) -> Result<Qid, DecodeError> {
        Ok(Qid {
            ty: self.u8()?,
            version: self.u32()?,
            path: self.u64()?,
        })
    }
    fn counted(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn decode_body<'a>(ty: u8, r: &mut Reader<'a>) -> Result<Msg<'a>, DecodeError> {
    Ok(match ty {
        TVERSION => Msg::Tversion {
            msize: r.u32()?,
            version: r.str()?,
        },
        RVERSION => Msg::Rversion {
            msize: r.u32()?,
            version: r.str()?,
        },
        TAUTH => Msg::Tauth {
            afid: r.u32()?,
            uname: r.str()?,
            aname: r.str()?,
            n_uname: r.u32()?,
        },
        RAUTH => Msg::Rauth { aqid: r.qid()? },
        TATTACH => Msg::Tattach {
            fid: r.u32()?,
            afid: r.u32()?,
            uname: r.str()?,
            aname: r.str()?,
            n_uname: r.u32()?,
        },
        RATTACH => Msg::Rattach { qid: r.qid()? },
        RLERROR => Msg::Rlerror { ecode: r.u32()? },
        TFLUSH => Msg::Tflush { oldtag: r.u16()? },
        RFLUSH => Msg::Rflush,
        TWALK => {
            let fid = r.u32()?;
            let newfid = r.u32()?;
            let n = r.u16()?;
            if n as usize > MAXWELEM {
                return Err(DecodeError::TooManyElements(n));
            }
            let mut names = SmallVec::new();
            for _ in 0..n {
                names.push(r.str()?);
            }
            Msg::Twalk { fid, newfid, names }
        }
        RWALK => {
            let n = r.u16()?;
            if n as usize > MAXWELEM {
                return Err(DecodeError::TooManyElements(n));
            }
            let mut qids = SmallVec::new();
            for _ in 0..n {
                qids.push(r.qid()?);
            }
            Msg::Rwalk { qids }
        }
        TREAD => Msg::Tread {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREAD => Msg::Rread { data: r.counted()? },
        TWRITE => Msg::Twrite {
            fid: r.u32()?,
            offset: r.u64()?,
            data: r.counted()?,
        },
        RWRITE => Msg::Rwrite { count: r.u32()? },
        TCLUNK => Msg::Tclunk { fid: r.u32()? },
        RCLUNK => Msg::Rclunk,
        TREMOVE => Msg::Tremove { fid: r.u32()? },
        RREMOVE => Msg::Rremove,
        TSTATFS => Msg::Tstatfs { fid: r.u32()? },
        RSTATFS => Msg::Rstatfs {
            statfs: StatFs {
                ty: r.u32()?,
                bsize: r.u32()?,
                blocks: r.u64()?,
                bfree: r.u64()?,
                bavail: r.u64()?,
                files: r.u64()?,
                ffree: r.u64()?,
                fsid: r.u64()?,
                namelen: r.u32()?,
            },
        },
        TLOPEN => Msg::Tlopen {
            fid: r.u32()?,
            flags: r.u32()?,
        },
        RLOPEN => Msg::Rlopen {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TLCREATE => Msg::Tlcreate {
            fid: r.u32()?,
            name: r.str()?,
            flags: r.u32()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RLCREATE => Msg::Rlcreate {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TSYMLINK => Msg::Tsymlink {
            fid: r.u32()?,
            name: r.str()?,
            target: r.str()?,
            gid: r.u32()?,
        },
        RSYMLINK => Msg::Rsymlink { qid: r.qid()? },
        TMKNOD => Msg::Tmknod {
            dfid: r.u32()?,
            name: r.str()?,
            mode: r.u32()?,
            major: r.u32()?,
            minor: r.u32()?,
            gid: r.u32()?,
        },
        RMKNOD => Msg::Rmknod { qid: r.qid()? },
        TRENAME => Msg::Trename {
            fid: r.u32()?,
            dfid: r.u32()?,
            name: r.str()?,
        },
        RRENAME => Msg::Rrename,
        TREADLINK => Msg::Treadlink { fid: r.u32()? },
        RREADLINK => Msg::Rreadlink { target: r.str()? },
        TGETATTR => Msg::Tgetattr {
            fid: r.u32()?,
            mask: r.u64()?,
        },
        RGETATTR => Msg::Rgetattr {
            attr: Attr {
                valid: r.u64()?,
                qid: r.qid()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                nlink: r.u64()?,
                rdev: r.u64()?,
                size: r.u64()?,
                blksize: r.u64()?,
                blocks: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
                ctime_sec: r.u64()?,
                ctime_nsec: r.u64()?,
                btime_sec: r.u64()?,
                btime_nsec: r.u64()?,
                gen: r.u64()?,
                data_version: r.u64()?,
            },
        },
        TSETATTR => Msg::Tsetattr {
            fid: r.u32()?,
            attr: SetAttr {
                valid: r.u32()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                size: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
            },
        },
        RSETATTR => Msg::Rsetattr,
        TXATTRWALK => Msg::Txattrwalk {
            fid: r.u32()?,
            newfid: r.u32()?,
            name: r.str()?,
        },
        RXATTRWALK => Msg::Rxattrwalk { size: r.u64()? },
        TXATTRCREATE => Msg::Txattrcreate {
            fid: r.u32()?,
            name: r.str()?,
            size: r.u64()?,
            flags: r.u32()?,
        },
        RXATTRCREATE => Msg::Rxattrcreate,
        TREADDIR => Msg::Treaddir {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREADDIR => Msg::Rreaddir { data: r.counted()? },
        TFSYNC => {
            let fid = r.u32()?;
            // Older clients send no datasync word.
            let datasync = if r.buf.len() >= 4 { r.u32()? } else { 0 };
            Msg::Tfsync { fid, datasync }
        }
        RFSYNC => Msg::Rfsync,
        TLOCK => Msg::Tlock {
            fid: r.u32()?,
            lock: Flock {
                ty: r.u8()?,
                flags: r.u32()?,
                start: r.u64()?,
                length: r.u64()?,
                proc_id: r.u32()?,
                client_id: r.str()?,
            },
        },
        RLOCK => Msg::Rlock { status: r.u8()? },
        TGETLOCK => Msg::Tgetlock {
            fid: r.u32()?,
            lock: getlock_body(r)?,
        },
        RGETLOCK => Msg::Rgetlock {
            lock: getlock_body(r)?,
        },
        TLINK => Msg::Tlink {
            dfid: r.u32()?,
            fid: r.u32()?,
            name: r.str()?,
        },
        RLINK => Msg::Rlink,
        TMKDIR => Msg::Tmkdir {
            dfid: r.u32()?,
            name: r.str()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RMKDIR => Msg::Rmkdir { qid: r.qid()? },
        TRENAMEAT => Msg::Trenameat {
            olddirfid: r.u32()?,
            oldname: r.str()?,
            newdirfid: r.u32()?,
            newname: r.str()?,
        },
        RRENAMEAT => Msg::Rrenameat,
        TUNLINKAT => Msg::Tunlinkat {
            dirfid: r.u32()?,
            name: r.str()?,
            flags: r.u32()?,
        },
        RUNLINKAT => Msg::Runlinkat,
        other => return Err(DecodeError::UnknownType(other)),
    })
}

fn getlock_body<'a>(r: &mut Reader<'a>) -> Result<Flock<'a>, DecodeError> {
    Ok(Flock {
        ty: r.u8()?,
        flags: 0,
        start: r.u64()?,
        length: r.u64()?,
        proc_id: r.u32()?,
        client_id: r.str()?,
    })
}

/// One entry of an `Rreaddir` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent<'a> {
    /// The entry's qid.
    pub qid: Qid,
    /// The cookie to pass as the next Treaddir offset to continue after this entry.
    pub offset: u64,
    /// `DT_*` type (servers may send 0, DT_UNKNOWN).
    pub ty: u8,
    /// The name.
    pub name: &'a [u8],
}

/// Walks the entries of an `Rreaddir` body; a malformed entry yields one
/// `Err` and ends the iteration.
#[derive(Clone, Debug)]
pub struct Dirents<'a> {
    r: Reader<'a>,
}

impl Clone for Reader<'_> {
    fn clone(&self) -> Self {
        Reader { buf: self.buf }
    }
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({} bytes)", self.buf.len())
    }
}

impl<'a> Dirents<'a> {
    /// Iterates over `data`, the body of an Rreaddir.
    pub fn new(data: &'a [u8]) -> Self {
        Dirents {
            r: Reader { buf: data },
        }
    }
}

impl<'a> Iterator for Dirents<'a> {
    type Item = Result<Dirent<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.buf.is_empty() {
            return None;
        }
        let r = &mut self.r;
        let res = (|| {
            Ok(Dirent {
                qid: r.qid()?,
                offset: r.u64()?,
                ty: r.u8()?,
                name: r.str()?,
            })
        })();
        if res.is_err() {
            self.r.buf = &[];
        }
        Some(res)
    }
}

/// Appends one encoded directory entry (for servers and tests).
pub fn encode_dirent(d: &Dirent<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut w = Writer { out };
    w.qid(&d.qid);
    w.u64(d.offset);
    w.u8(d.ty);
    w.str(d.name)
}

struct Writer<'b> {
    out: &'b mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        let n = u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong)?;
        self.u16(n);
        self.out.extend_from_slice(s);
        Ok(())
    }
    fn qid(&mut self, q: &Qid) {
        self.u8(q.ty);
        self.u32(q.version);
        self.u64(q.path);
    }
    fn count(&mut self, n: usize) -> Result<(), EncodeError> {
        self.u32(u32::try_from(n).map_err(|_| EncodeError::TooLarge)?);
        Ok(())
    }
    fn flock(&mut self, l: &Flock<'_>, with_flags: bool) -> Result<(), EncodeError> {
        self.u8(l.ty);
        if with_flags {
            self.u32(l.flags);
        }
        self.u64(l.start);
        self.u64(l.length);
        self.u32(l.proc_id);
        self.str(l.client_id)
    }
}

impl<'a> Msg<'a> {
    /// The message's type number.
    pub fn type_number(&self) -> u8 {
        match self {
            Msg::Tversion { .. } => TVERSION,
            Msg::Rversion { .. } => RVERSION,
            Msg::Tauth { .. } => TAUTH,
            Msg::Rauth { .. } => RAUTH,
            Msg::Tattach { .. } => TATTACH,
            Msg::Rattach { .. } => RATTACH,
            Msg::Rlerror { .. } => RLERROR,
            Msg::Tflush { .. } => TFLUSH,
            Msg::Rflush => RFLUSH,
            Msg::Twalk { .. } => TWALK,
            Msg::Rwalk { .. } => RWALK,
            Msg::Tread { .. } => TREAD,
            Msg::Rread { .. } => RREAD,
            Msg::Twrite { .. } => TWRITE,
            Msg::Rwrite { .. } => RWRITE,
            Msg::Tclunk { .. } => TCLUNK,
            Msg::Rclunk => RCLUNK,
            Msg::Tremove { .. } => TREMOVE,
            Msg::Rremove => RREMOVE,
            Msg::Tstatfs { .. } => TSTATFS,
            Msg::Rstatfs { .. } => RSTATFS,
            Msg::Tlopen { .. } => TLOPEN,
            Msg::Rlopen { .. } => RLOPEN,
            Msg::Tlcreate { .. } => TLCREATE,
            Msg::Rlcreate { .. } => RLCREATE,
            Msg::Tsymlink { .. } => TSYMLINK,
            Msg::Rsymlink { .. } => RSYMLINK,
            Msg::Tmknod { .. } => TMKNOD,
            Msg::Rmknod { .. } => RMKNOD,
            Msg::Trename { .. } => TRENAME,
            Msg::Rrename => RRENAME,
            Msg::Treadlink { .. } => TREADLINK,
            Msg::Rreadlink { .. } => RREADLINK,
            Msg::Tgetattr { .. } => TGETATTR,
            Msg::Rgetattr { .. } => RGETATTR,
            Msg::Tsetattr { .. } => TSETATTR,
            Msg::Rsetattr => RSETATTR,
            Msg::Txattrwalk { .. } => TXATTRWALK,
            Msg::Rxattrwalk { .. } => RXATTRWALK,
            Msg::Txattrcreate { .. } => TXATTRCREATE,
            Msg::Rxattrcreate => RXATTRCREATE,
            Msg::Treaddir { .. } => TREADDIR,
            Msg::Rreaddir { .. } => RREADDIR,
            Msg::Tfsync { .. } => TFSYNC,
            Msg::Rfsync => RFSYNC,
            Msg::Tlock { .. } => TLOCK,
            Msg::Rlock { .. } => RLOCK,
            Msg::Tgetlock { .. } => TGETLOCK,
            Msg::Rgetlock { .. } => RGETLOCK,
            Msg::Tlink { .. } => TLINK,
            Msg::Rlink => RLINK,
            Msg::Tmkdir { .. } => TMKDIR,
            Msg::Rmkdir { .. } => RMKDIR,
            Msg::Trenameat { .. } => TRENAMEAT,
            Msg::Rrenameat => RRENAMEAT,
            Msg::Tunlinkat { .. } => TUNLINKAT,
            Msg::Runlinkat => RUNLINKAT,
        }
    }

    /// Appends the whole frame to `out`.
    pub fn encode(&self, tag: u16, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let tail = self.encode_head(tag, out)?;
        out.extend_from_slice(tail);
        Ok(())
    }

    /// Appends the frame without its trailing payload (the data of Twrite or
    /// Rread, empty for other messages) and returns that payload, so a
    /// transport can send it from the caller's buffer without copying. The
    /// size field already counts the payload.
    pub fn encode_head(&self, tag: u16, out: &mut Vec<u8>) -> Result<&'a [u8], EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, self.type_number()]);
        out.extend_from_slice(&tag.to_le_bytes());
        let mut w = Writer { out };
        let mut tail: &'a [u8] = &[];
        match *self {
            Msg::Tversion { msize, version } | Msg::Rversion { msize, version } => {
                w.u32(msize);
                w.str(version)?;
            }
            Msg::Tauth {
                afid,
                uname,
                aname,
                n_uname,
            } => {
                w.u32(afid);
                w.str(uname)?;
                w.str(aname)?;
                w.u32(n_uname);
            }
            Msg::Rauth { aqid: qid }
            | Msg::Rattach { qid }
            | Msg::Rsymlink { qid }
            | Msg::Rmknod { qid }
            | Msg::Rmkdir { qid } => w.qid(&qid),
            Msg::Tattach {
                fid,
                afid,
                uname,
                aname,
                n_uname,
            } => {
                w.u32(fid);
                w.u32(afid);
                w.str(uname)?;
                w.str(aname)?;
                w.u32(n_uname);
            }
            Msg::Rlerror { ecode } => w.u32(ecode),
            Msg::Tflush { oldtag } => w.u16(oldtag),
            Msg::Rflush
            | Msg::Rclunk
            | Msg::Rremove
            | Msg::Rrename
            | Msg::Rsetattr
            | Msg::Rxattrcreate
            | Msg::Rfsync
            | Msg::Rlink
            | Msg::Rrenameat
            | Msg::Runlinkat => {}
            Msg::Twalk {
                fid,
                newfid,
                ref names,
            } => {
                if names.len() > MAXWELEM {
                    return Err(EncodeError::TooManyElements);
                }
                w.u32(fid);
                w.u32(newfid);
                w.u16(names.len() as u16);
                for n in names {
                    w.str(n)?;
                }
            }
            Msg::Rwalk { ref qids } => {
                if qids.len() > MAXWELEM {
                    return Err(EncodeError::TooManyElements);
                }
                w.u16(qids.len() as u16);
                for q in qids {
                    w.qid(q);
                }
            }
            Msg::Tread { fid, offset, count } | Msg::Treaddir { fid, offset, count } => {
                w.u32(fid);
                w.u64(offset);
                w.u32(count);
            }
            Msg::Rread { data } | Msg::Rreaddir { data } => {
                w.count(data.len())?;
                tail = data;
            }
            Msg::Twrite { fid, offset, data } => {
                w.u32(fid);
                w.u64(offset);
                w.count(data.len())?;
                tail = data;
            }
            Msg::Rwrite { count } => w.u32(count),
            Msg::Tclunk { fid }
            | Msg::Tremove { fid }
            | Msg::Tstatfs { fid }
            | Msg::Treadlink { fid } => w.u32(fid),
            Msg::Rstatfs { statfs: s } => {
                w.u32(s.ty);
                w.u32(s.bsize);
                w.u64(s.blocks);
                w.u64(s.bfree);
                w.u64(s.bavail);
                w.u64(s.files);
                w.u64(s.ffree);
                w.u64(s.fsid);
                w.u32(s.namelen);
            }
            Msg::Tlopen { fid, flags } => {
                w.u32(fid);
                w.u32(flags);
            }
            Msg::Rlopen { qid, iounit } | Msg::Rlcreate { qid, iounit } => {
                w.qid(&qid);
                w.u32(iounit);
            }
            Msg::Tlcreate {
                fid,
                name,
                flags,
                mode,
                gid,
            } => {
                w.u32(fid);
                w.str(name)?;
                w.u32(flags);
                w.u32(mode);
                w.u32(gid);
            }
            Msg::Tsymlink {
                fid,
                name,
                target,
                gid,
            } => {
                w.u32(fid);
                w.str(name)?;
                w.str(target)?;
                w.u32(gid);
            }
            Msg::Tmknod {
                dfid,
                name,
                mode,
                major,
                minor,
                gid,
            } => {
                w.u32(dfid);
                w.str(name)?;
                w.u32(mode);
                w.u32(major);
                w.u32(minor);
                w.u32(gid);
            }
            Msg::Trename { fid, dfid, name } => {
                w.u32(fid);
                w.u32(dfid);
                w.str(name)?;
            }
            Msg::Rreadlink { target } => w.str(target)?,
            Msg::Tgetattr { fid, mask } => {
                w.u32(fid);
                w.u64(mask);
            }
            Msg::Rgetattr { attr: a } => {
                w.u64(a.valid);
                w.qid(&a.qid);
                w.u32(a.mode);
                w.u32(a.uid);
                w.u32(a.gid);
                for v in [
                    a.nlink,
                    a.rdev,
                    a.size,
                    a.blksize,
                    a.blocks,
                    a.atime_sec,
                    a.atime_nsec,
                    a.mtime_sec,
                    a.mtime_nsec,
                    a.ctime_sec,
                    a.ctime_nsec,
                    a.btime_sec,
                    a.btime_nsec,
                    a.gen,
                    a.data_version,
                ] {
                    w.u64(v);
                }
            }
            Msg::Tsetattr { fid, attr: a } => {
                w.u32(fid);
                w.u32(a.valid);
                w.u32(a.mode);
                w.u32(a.uid);
                w.u32(a.gid);
                w.u64(a.size);
                w.u64(a.atime_sec);
                w.u64(a.atime_nsec);
                w.u64(a.mtime_sec);
                w.u64(a.mtime_nsec);
            }
            Msg::Txattrwalk { fid, newfid, name } => {
                w.u32(fid);
                w.u32(newfid);
                w.str(name)?;
            }
            Msg::Rxattrwalk { size } => w.u64(size),
            Msg::Txattrcreate {
                fid,
                name,
                size,
                flags,
            } => {
                w.u32(fid);
                w.str(name)?;
                w.u64(size);
                w.u32(flags);
            }
            Msg::Tfsync { fid, datasync } => {
                w.u32(fid);
                w.u32(datasync);
            }
            Msg::Tlock { fid, ref lock } => {
                w.u32(fid);
                w.flock(lock, true)?;
            }
            Msg::Rlock { status } => w.u8(status),
            Msg::Tgetlock { fid, ref lock } => {
                w.u32(fid);
                w.flock(lock, false)?;
            }
            Msg::Rgetlock { ref lock } => w.flock(lock, false)?,
            Msg::Tlink { dfid, fid, name } => {
                w.u32(dfid);
                w.u32(fid);
                w.str(name)?;
            }
            Msg::Tmkdir {
                dfid,
                name,
                mode,
                gid,
            } => {
                w.u32(dfid);
                w.str(name)?;
                w.u32(mode);
                w.u32(gid);
            }
            Msg::Trenameat {
                olddirfid,
                oldname,
                newdirfid,
                newname,
            } => {
                w.u32(olddirfid);
                w.str(oldname)?;
                w.u32(newdirfid);
                w.str(newname)?;
            }
            Msg::Tunlinkat {
                dirfid,
                name,
                flags,
            } => {
                w.u32(dirfid);
                w.str(name)?;
                w.u32(flags);
            }
        }
        let total = out.len() - start + tail.len();
        let size = u32::try_from(total).map_err(|_| EncodeError::TooLarge)?;
        out[start..start + 4].copy_from_slice(&size.to_le_bytes());
        Ok(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn samples() -> Vec<Msg<'static>> {
        let q = Qid {
            ty: QTDIR,
            version: 7,
            path: 0x1122_3344_5566_7788,
        };
        let lock = Flock {
            ty: 1,
            flags: 1,
            start: 5,
            length: 10,
            proc_id: 42,
            client_id: b"host",
        };
        let glock = Flock { flags: 0, ..lock };
        vec![
            Msg::Tversion {
                msize: 65536,
                version: VERSION_9P2000L,
            },
            Msg::Rversion {
                msize: 8192,
                version: VERSION_9P2000L,
            },
            Msg::Tauth {
                afid: 1,
                uname: b"root",
                aname: b"/x",
                n_uname: 0,
            },
            Msg::Rauth { aqid: q },
            Msg::Tattach {
                fid: 0,
                afid: NOFID,
                uname: b"",
                aname: b"/srv",
                n_uname: 1000,
            },
            Msg::Rattach { qid: q },
            Msg::Rlerror { ecode: 2 },
            Msg::Tflush { oldtag: 9 },
            Msg::Rflush,
            Msg::Twalk {
                fid: 1,
                newfid: 2,
                names: smallvec![&b"a"[..], &b"bc"[..]],
            },
            Msg::Rwalk {
                qids: smallvec![q, q],
            },
            Msg::Tread {
                fid: 3,
                offset: 1 << 40,
                count: 100,
            },
            Msg::Rread { data: b"hello" },
            Msg::Twrite {
                fid: 3,
                offset: 8,
                data: b"world",
            },
            Msg::Rwrite { count: 5 },
            Msg::Tclunk { fid: 3 },
            Msg::Rclunk,
            Msg::Tremove { fid: 3 },
            Msg::Rremove,
            Msg::Tstatfs { fid: 1 },
            Msg::Rstatfs {
                statfs: StatFs {
                    ty: 0x01021997,
                    bsize: 4096,
                    blocks: 1,
                    bfree: 2,
                    bavail: 3,
                    files: 4,
                    ffree: 5,
                    fsid: 6,
                    namelen: 255,
                },
            },
            Msg::Tlopen { fid: 1, flags: 2 },
            Msg::Rlopen { qid: q, iounit: 0 },
            Msg::Tlcreate {
                fid: 1,
                name: b"f",
                flags: 0o102,
                mode: 0o644,
                gid: 0,
            },
            Msg::Rlcreate { qid: q, iounit: 4 },
            Msg::Tsymlink {
                fid: 1,
                name: b"l",
                target: b"../t",
                gid: 0,
            },
            Msg::Rsymlink { qid: q },
            Msg::Tmknod {
                dfid: 1,
                name: b"p",
                mode: 0o10644,
                major: 1,
                minor: 3,
                gid: 5,
            },
            Msg::Rmknod { qid: q },
            Msg::Trename {
                fid: 2,
                dfid: 1,
                name: b"n",
            },
            Msg::Rrename,
            Msg::Treadlink { fid: 2 },
            Msg::Rreadlink { target: b"/abs" },
            Msg::Tgetattr {
                fid: 2,
                mask: getattr::ALL,
            },
            Msg::Rgetattr {
                attr: Attr {
                    valid: getattr::BASIC,
                    qid: q,
                    mode: 0o40755,
                    uid: 1,
                    gid: 2,
                    nlink: 3,
                    size: 4096,
                    data_version: 9,
                    ..Attr::default()
                },
            },
            Msg::Tsetattr {
                fid: 2,
                attr: SetAttr {
                    valid: setattr::SIZE,
                    size: 10,
                    ..SetAttr::default()
                },
            },
            Msg::Rsetattr,
            Msg::Txattrwalk {
                fid: 2,
                newfid: 3,
                name: b"user.x",
            },
            Msg::Rxattrwalk { size: 3 },
            Msg::Txattrcreate {
                fid: 3,
                name: b"user.x",
                size: 3,
                flags: 0,
            },
            Msg::Rxattrcreate,
            Msg::Treaddir {
                fid: 2,
                offset: 0,
                count: 4096,
            },
            Msg::Rreaddir { data: b"" },
            Msg::Tfsync {
                fid: 2,
                datasync: 1,
            },
            Msg::Rfsync,
            Msg::Tlock { fid: 2, lock },
            Msg::Rlock { status: 0 },
            Msg::Tgetlock {
                fid: 2,
                lock: glock,
            },
            Msg::Rgetlock { lock: glock },
            Msg::Tlink {
                dfid: 1,
                fid: 2,
                name: b"h",
            },
            Msg::Rlink,
            Msg::Tmkdir {
                dfid: 1,
                name: b"d",
                mode: 0o755,
                gid: 0,
            },
            Msg::Rmkdir { qid: q },
            Msg::Trenameat {
                olddirfid: 1,
                oldname: b"a",
                newdirfid: 1,
                newname: b"b",
            },
            Msg::Rrenameat,
            Msg::Tunlinkat {
                dirfid: 1,
                name: b"a",
                flags: 0x200,
            },
            Msg::Runlinkat,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for (i, m) in samples().iter().enumerate() {
            let mut buf = Vec::new();
            m.encode(i as u16, &mut buf).unwrap();
            let (tag, back) = decode(&buf, 1 << 20).unwrap();
            assert_eq!(tag, i as u16);
            // Msg is invariant in its lifetime (SmallVec), so compare renderings.
            assert_eq!(format!("{back:?}"), format!("{m:?}"), "message {i}");
        }
    }

    #[test]
    fn every_prefix_is_an_error_never_a_panic() {
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(1, &mut buf).unwrap();
            for cut in 0..buf.len() {
                let mut short = buf[..cut].to_vec();
                // Keep the size field honest so the body parser is exercised too.
                if cut >= 4 {
                    short[..4].copy_from_slice(&(cut as u32).to_le_bytes());
                }
                let r = decode(&short, 1 << 20);
                // A shorter body is only fine where the trailing field is optional.
                if let Ok((_, msg)) = &r {
                    assert!(
                        matches!(msg, Msg::Tfsync { .. }) || buf.len() == cut,
                        "decoded a truncated {m:?} as {msg:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn size_and_msize_are_checked() {
        let mut buf = Vec::new();
        Msg::Rread { data: &[7u8; 100] }
            .encode(3, &mut buf)
            .unwrap();
        assert_eq!(
            decode(&buf, 64),
            Err(DecodeError::Oversize {
                size: buf.len() as u32,
                msize: 64
            })
        );
        let mut longer = buf.clone();
        longer.push(0);
        assert!(matches!(
            decode(&longer, 1 << 20),
            Err(DecodeError::SizeMismatch { .. })
        ));
        // A count that claims more data than the frame holds.
        let mut lying = buf.clone();
        lying[7..11].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode(&lying, 1 << 20), Err(DecodeError::Truncated));
        assert_eq!(decode(&[], 100), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[7, 0, 0, 0, 200, 0, 0], 100),
            Err(DecodeError::UnknownType(200))
        );
    }

    #[test]
    fn walks_longer_than_sixteen_are_refused() {
        let mut buf = Vec::new();
        Msg::Rwalk {
            qids: SmallVec::new(),
        }
        .encode(0, &mut buf)
        .unwrap();
        buf[7..9].copy_from_slice(&17u16.to_le_bytes());
        assert_eq!(decode(&buf, 1000), Err(DecodeError::TooManyElements(17)));
        let names: SmallVec<[&[u8]; MAXWELEM]> = (0..17).map(|_| &b"x"[..]).collect();
        let m = Msg::Twalk {
            fid: 0,
            newfid: 1,
            names,
        };
        assert_eq!(
            m.encode(0, &mut Vec::new()),
            Err(EncodeError::TooManyElements)
        );
    }

    #[test]
    fn dirents_parse_and_stop_on_garbage() {
        let mut data = Vec::new();
        for (i, name) in [&b"."[..], b"..", b"file"].iter().enumerate() {
            encode_dirent(
                &Dirent {
                    qid: Qid::default(),
                    offset: i as u64 + 1,
                    ty: 4,
                    name,
                },
                &mut data,
            )
            .unwrap();
        }
        let names: Vec<_> = Dirents::new(&data).map(|d| d.unwrap().name).collect();
        assert_eq!(names, vec![&b"."[..], b"..", b"file"]);
        data.push(1);
        let last = Dirents::new(&data).last().unwrap();
        assert_eq!(last, Err(DecodeError::Truncated));
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        // A small deterministic generator: the fuzz target covers the rest.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let len = (s % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (s >> (i % 8 * 8)) as u8).collect();
            if len >= 7 {
                buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
                buf[4] = (s >> 40) as u8 % 130;
            }
            let _ = decode(&buf, 8192);
        }
    }

    #[test]
    fn head_and_tail_split_for_zero_copy_writes() {
        let data = [1u8; 10];
        let m = Msg::Twrite {
            fid: 1,
            offset: 0,
            data: &data,
        };
        let mut head = Vec::new();
        let tail = m.encode_head(5, &mut head).unwrap();
        assert_eq!(tail.len(), 10);
        let (size, ty, tag) = peek_header(&head).unwrap();
        assert_eq!(size as usize, head.len() + 10);
        assert_eq!((ty, tag), (TWRITE, 5));
        assert_eq!(head.len(), IOHDRSZ as usize - 1);
    }
}
