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

    /// Lends up to `len` bytes at `offset` in place, for a store that holds
    /// them in memory; `None` (the default) means "use `read_at`". Shorter
    /// than `len` only at the end of the store.
    ///
    /// The verifier then hashes the bytes where they lie and copies them out
    /// while they are still in the CPU cache, instead of copying from main
    /// memory first: that saves most of a copy's cost on every read. The
    /// bytes must not change while lent (which `&self` guarantees unless the
    /// store uses interior mutability), or the caller could be handed bytes
    /// other than those that were verified.
    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
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

    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let src = self.get(usize::try_from(offset).ok()?..)?;
        Some(&src[..src.len().min(len)])
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.as_slice().read_at(offset, buf)
    }

    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.as_slice().peek(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }

    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).peek(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }

    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).peek(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }

    fn peek(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).peek(offset, len)
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

#[cfg(windows)]
impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::os::windows::fs::FileExt;
        // `seek_read` moves the file position; a verifier's sources are only
        // ever read at explicit offsets, so that is harmless here.
        FileExt::seek_read(self, buf, offset).map_err(|e| io_errno(&e))
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
