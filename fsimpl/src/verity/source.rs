//! Where a verifier's bytes come from.
//!
//! The verifier reads the file's data and its tree through [`ReadAt`] and
//! does not care whether they live in memory, in a host file or (later) in a
//! lower filesystem of the VFS. Nothing read through it is trusted.

use std::sync::Arc;

use tessera_vfs::{Errno, Result};

/// Positioned reads of an immutable byte store.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read,
    /// 0 at or past the end. A short count does not mean end of file: callers
    /// that need a whole range call again.
    ///
    /// # Errors
    /// Whatever the store fails with.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(src) = self.get(start..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match FileExt::read_at(self, buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_errno(&e)),
            }
        }
    }
}

/// Reads until `buf` is full or the store ends; returns the count.
///
/// # Errors
/// The store's error.
pub fn read_full(src: &(impl ReadAt + ?Sized), offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = src.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        // A store that claims more than it was given is broken; stop rather
        // than index out of bounds.
        done += n.min(buf.len() - done);
    }
    Ok(done)
}

/// The errno of a host I/O error (`EIO` when it carries none).
pub fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}
