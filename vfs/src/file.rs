//! Open file descriptions: what a descriptor points at.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::abi::*;
use crate::cred::Credentials;
use crate::inode::{Coherence, Ctx, FileOps};
use crate::mount::VirtualDentry;
use crate::perm;

/// The status flags `fcntl(F_SETFL)` may change.
pub const SETTABLE_FLAGS: OpenFlags = OpenFlags::O_APPEND
    .union(OpenFlags::O_NONBLOCK)
    .union(OpenFlags::O_NOATIME)
    .union(OpenFlags::O_ASYNC)
    .union(OpenFlags::O_DIRECT);

/// The directory position after the last entry was read: entries added
/// later are not returned until the directory is rewound (Linux's
/// `DIR_OFFSET_EOD` for tmpfs's stable offsets).
pub const DIR_OFFSET_EOD: u64 = i32::MAX as u64;

/// `rw_verify_area`: the range `pos..pos+len` must fit in a signed offset.
fn verify_area(pos: u64, len: usize) -> Result<()> {
    let end = (pos as i64).checked_add(len as i64);
    if pos > i64::MAX as u64 || end.is_none() {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// An open file description (`struct file`).
pub struct OpenFile {
    vd: VirtualDentry,
    flags: AtomicU32,
    readable: bool,
    writable: bool,
    /// Holds a write reference on the mount (released on drop).
    mount_write: bool,
    pos: Mutex<u64>,
    ops: Option<Arc<dyn FileOps>>,
    cred: Credentials,
}

/// Directory entries read by one `getdents`: the names packed in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirents {
    names: Vec<u8>,
    /// Where each name ends in `names`, and its type.
    ends: Vec<(usize, DirentType)>,
}

impl Dirents {
    /// Appends an entry.
    pub fn push(&mut self, name: &[u8], t: DirentType) {
        self.names.extend_from_slice(name);
        self.ends.push((self.names.len(), t));
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries in order: name and type.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], DirentType)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(end, t)| {
            let name = &self.names[start..end];
            start = end;
            (name, t)
        })
    }

    /// The entries as separate vectors.
    pub fn into_vec(self) -> Vec<(Vec<u8>, DirentType)> {
        self.iter().map(|(n, t)| (n.to_vec(), t)).collect()
    }

    pub(crate) fn reserve(&mut self, entries: usize) {
        self.ends.reserve(entries);
        self.names.reserve(entries * 8);
    }
}

impl OpenFile {
    pub(crate) fn new(
        vd: VirtualDentry,
        flags: OpenFlags,
        ops: Option<Arc<dyn FileOps>>,
        cred: Credentials,
        mount_write: bool,
    ) -> Arc<OpenFile> {
        let path = flags.contains(OpenFlags::O_PATH);
        let (r, w) = match flags.access() {
            AccessMode::ReadOnly => (true, false),
            AccessMode::WriteOnly => (false, true),
            AccessMode::ReadWrite => (true, true),
            AccessMode::Invalid => (false, false),
        };
        let kept = flags
            - OpenFlags::O_CREAT
            - OpenFlags::O_EXCL
            - OpenFlags::O_NOCTTY
            - OpenFlags::O_TRUNC
            - OpenFlags::O_CLOEXEC;
        Arc::new(OpenFile {
            vd,
            flags: AtomicU32::new(kept.bits()),
            readable: r && !path,
            writable: w && !path,
            mount_write,
            pos: Mutex::new(0),
            ops,
            cred,
        })
    }

    /// The location that was opened.
    pub fn location(&self) -> &VirtualDentry {
        &self.vd
    }

    /// The status flags.
    pub fn flags(&self) -> OpenFlags {
        OpenFlags::from_bits_retain(self.flags.load(Ordering::Acquire))
    }

    /// Changes the settable status flags (`F_SETFL`).
    pub fn set_flags(&self, f: OpenFlags) {
        let keep = self.flags() - SETTABLE_FLAGS;
        self.flags
            .store((keep | (f & SETTABLE_FLAGS)).bits(), Ordering::Release);
    }

    /// Whether this is an `O_PATH` descriptor.
    pub fn is_path(&self) -> bool {
        self.flags().contains(OpenFlags::O_PATH)
    }

    /// Whether the description was opened for reading.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether the description was opened for writing.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The credentials of the opener.
    pub fn opener(&self) -> &Credentials {
        &self.cred
    }

    fn ops(&self) -> Result<&dyn FileOps> {
        self.ops.as_deref().ok_or(Errno::EBADF)
    }

    /// `read(2)` at the file position.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if !self.readable {
            return Err(Errno::EBADF);
        }
        let ops = self.ops()?;
        if !ops.seekable() {
            return ops.read(0, buf);
        }
        let mut pos = self.pos.lock();
        verify_area(*pos, buf.len())?;
        if self.vd.dentry.is_dir() {
            return Err(Errno::EISDIR);
        }
        let n = ops.read(*pos, buf)?;
        *pos += n as u64;
        Ok(n)
    }

    /// `pread(2)`.
    pub fn pread(&self, buf: &mut [u8], off: i64) -> Result<usize> {
        if self.ops.as_deref().is_some_and(|o| !o.seekable()) {
            return Err(Errno::ESPIPE);
        }
        if !self.readable {
            return Err(Errno::EBADF);
        }
        if off < 0 {
            return Err(Errno::EINVAL);
        }
        let ops = self.ops()?;
        if !ops.seekable() {
            return Err(Errno::ESPIPE);
        }
        verify_area(off as u64, buf.len())?;
        if self.vd.dentry.is_dir() {
            return Err(Errno::EISDIR);
        }
        ops.read(off as u64, buf)
    }

    fn after_write(&self, cred: &Credentials) {
        // Writing clears set-id bits (`file_remove_privs`). The data is
        // already written, so a filesystem that cannot change the mode must
        // not turn the write into a failure.
        let inode = self.vd.dentry.inode();
        inode.drop_file_caps();
        if let Some(mode) = perm::mode_after_write(cred, inode.owner()) {
            let _ = inode.setattr(
                &Ctx { cred },
                &SetAttr {
                    mode: Some(mode & 0o7777),
                    ..Default::default()
                },
            );
        }
    }

    /// `write(2)` at the file position (at the end with `O_APPEND`).
    pub fn write(&self, cred: &Credentials, buf: &[u8]) -> Result<usize> {
        if !self.writable {
            return Err(Errno::EBADF);
        }
        let ops = self.ops()?;
        let append = self.flags().contains(OpenFlags::O_APPEND);
        if !ops.seekable() {
            return ops.write(&Ctx { cred }, 0, buf, false).map(|r| r.0);
        }
        let mut pos = self.pos.lock();
        if !append {
            verify_area(*pos, buf.len())?;
        }
        let (n, end) = ops.write(&Ctx { cred }, *pos, buf, append)?;
        *pos = end;
        drop(pos);
        if n > 0 {
            self.after_write(cred);
        }
        Ok(n)
    }

    /// `pwrite(2)`. As on Linux, `O_APPEND` makes it write at the end.
    pub fn pwrite(&self, cred: &Credentials, buf: &[u8], off: i64) -> Result<usize> {
        // FMODE_PWRITE is checked before the access mode.
        if self.ops.as_deref().is_some_and(|o| !o.seekable()) {
            return Err(Errno::ESPIPE);
        }
        if !self.writable {
            return Err(Errno::EBADF);
        }
        if off < 0 {
            return Err(Errno::EINVAL);
        }
        let ops = self.ops()?;
        if !ops.seekable() {
            return Err(Errno::ESPIPE);
        }
        let append = self.flags().contains(OpenFlags::O_APPEND);
        verify_area(off as u64, buf.len())?;
        let (n, _) = ops.write(&Ctx { cred }, off as u64, buf, append)?;
        if n > 0 {
            self.after_write(cred);
        }
        Ok(n)
    }

    /// `lseek(2)`.
    pub fn lseek(&self, off: i64, whence: i32) -> Result<i64> {
        let ops = self.ops()?;
        let whence = Whence::from_raw(whence).ok_or(Errno::EINVAL)?;
        if !ops.seekable() {
            return Err(Errno::ESPIPE);
        }
        let mut pos = self.pos.lock();
        if let Some(r) = ops.llseek(*pos, off, whence) {
            let new = r?;
            *pos = new as u64;
            return Ok(new);
        }
        let is_dir = self.vd.dentry.is_dir();
        let new = match whence {
            Whence::Set => off,
            Whence::Cur => (*pos as i64).checked_add(off).ok_or(Errno::EINVAL)?,
            Whence::End => {
                if is_dir {
                    return Err(Errno::EINVAL);
                }
                let size = ops.size() as i64;
                size.checked_add(off).ok_or(Errno::EINVAL)?
            }
            Whence::Data | Whence::Hole => {
                if is_dir {
                    return Err(Errno::EINVAL);
                }
                if off < 0 {
                    return Err(Errno::ENXIO);
                }
                ops.seek_data_hole(off as u64, whence == Whence::Data)? as i64
            }
        };
        if new < 0 {
            return Err(Errno::EINVAL);
        }
        *pos = new as u64;
        Ok(new)
    }

    /// `getdents(2)`: the entries from the current offset to the end, `.`
    /// and `..` included; the offset moves to the end.
    pub fn getdents(&self, cred: &Credentials) -> Result<Vec<(Vec<u8>, DirentType)>> {
        self.read_dirents(cred).map(Dirents::into_vec)
    }

    /// [`OpenFile::getdents`] into one buffer, without an allocation per name.
    pub fn read_dirents(&self, cred: &Credentials) -> Result<Dirents> {
        if self.is_path() {
            return Err(Errno::EBADF);
        }
        let d = &self.vd.dentry;
        if !d.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if d.is_dead() {
            return Err(Errno::ENOENT);
        }
        let mut pos = self.pos.lock();
        let mut out = Dirents::default();
        if d.coherence() == Coherence::Authoritative {
            // Positions 0 and 1 are `.` and `..`.
            if *pos == 0 {
                out.push(b".", DirentType::Dir);
                *pos = 1;
            }
            if *pos == 1 {
                out.push(b"..", DirentType::Dir);
                *pos = 2;
            }
            // The end is DIR_OFFSET_EOD. One snapshot under one lock, so a
            // concurrent rename cannot show an entry twice in a single call.
            if *pos != DIR_OFFSET_EOD {
                d.children_from(*pos, &mut out);
            }
            *pos = DIR_OFFSET_EOD;
            return Ok(out);
        }
        let ops = self.ops()?;
        loop {
            let batch = ops.readdir(&Ctx { cred }, *pos)?;
            if batch.is_empty() {
                break;
            }
            for e in batch {
                *pos = e.next_off;
                out.push(&e.name, e.dtype);
            }
        }
        Ok(out)
    }

    /// `fsync(2)`.
    pub fn fsync(&self) -> Result<()> {
        if self.is_path() {
            return Err(Errno::EBADF);
        }
        self.ops()?.fsync()
    }

    /// `fallocate(2)`.
    pub fn fallocate(
        &self,
        cred: &Credentials,
        mode: FallocFlags,
        off: i64,
        len: i64,
    ) -> Result<()> {
        if off < 0 || len <= 0 {
            return Err(Errno::EINVAL);
        }
        if !self.writable {
            return Err(Errno::EBADF);
        }
        if self.vd.dentry.is_dir() {
            return Err(Errno::EISDIR);
        }
        if self.vd.dentry.file_type() != FileType::Regular {
            return Err(Errno::ENODEV);
        }
        self.ops()?
            .allocate(&Ctx { cred }, mode, off as u64, len as u64)
    }

    /// A device control call.
    pub fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        if self.is_path() {
            return Err(Errno::EBADF);
        }
        self.ops()?.ioctl(cmd, arg)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if self.mount_write {
            self.vd.mount.end_write();
        }
        self.vd.mount.used();
    }
}
