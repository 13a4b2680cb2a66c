//! The checking Tessera backend: runs every call on Tessera's VFS and then
//! checks the VFS's invariants ([`tessera_vfs::process::Process::check_invariants`]).
//!
//! The first violation is kept (with the call that preceded it) and checking
//! stops there: what follows a broken invariant is not informative.

use tessera_vfs::abi::Statx;
use tessera_vfs::Result;

use crate::ops::backend::{Backend, Dirent};
use crate::ops::tessera::TesseraBackend;

/// A Tessera backend that checks the invariants after every call.
pub struct CheckingBackend {
    inner: TesseraBackend,
    calls: usize,
    violation: Option<String>,
}

impl CheckingBackend {
    /// A checking backend in the spec's starting state.
    ///
    /// # Errors
    ///
    /// A message when the starting state cannot be built.
    pub fn new() -> std::result::Result<CheckingBackend, String> {
        let inner = TesseraBackend::new()
            .map_err(|e| format!("cannot build Tessera's starting state: {e}"))?;
        Ok(CheckingBackend {
            inner,
            calls: 0,
            violation: None,
        })
    }

    /// The first invariant violation seen: the call after which it was found
    /// and what was wrong.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    fn after(&mut self, call: &str) {
        self.calls += 1;
        if self.violation.is_some() {
            return;
        }
        if let Err(e) = self.inner.process().check_invariants() {
            self.violation = Some(format!("after call {} ({call}): {e}", self.calls));
        }
    }
}

/// Delegates each listed method to the inner backend, then checks.
macro_rules! checked {
    ($( fn $name:ident(&mut self $(, $arg:ident : $ty:ty)* ) -> $ret:ty; )*) => {
        $(
            fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                let r = self.inner.$name($($arg),*);
                self.after(stringify!($name));
                r
            }
        )*
    };
}

impl Backend for CheckingBackend {
    checked! {
        fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> Result<()>;
        fn mknodat(&mut self, dirfd: i32, path: &[u8], mode: u32, major: u32, minor: u32) -> Result<()>;
        fn symlinkat(&mut self, target: &[u8], newdirfd: i32, path: &[u8]) -> Result<()>;
        fn linkat(&mut self, olddirfd: i32, old: &[u8], newdirfd: i32, new: &[u8], flags: u32) -> Result<()>;
        fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<()>;
        fn renameat2(&mut self, olddirfd: i32, old: &[u8], newdirfd: i32, new: &[u8], flags: u32) -> Result<()>;
        fn readlinkat(&mut self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>>;
        fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<Statx>;
        fn fstat(&mut self, fd: i32) -> Result<Statx>;
        fn faccessat2(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()>;
        fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()>;
        fn fchmod(&mut self, fd: i32, mode: u32) -> Result<()>;
        fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: u32) -> Result<()>;
        fn fchown(&mut self, fd: i32, uid: u32, gid: u32) -> Result<()>;
        fn truncate(&mut self, path: &[u8], length: i64) -> Result<()>;
        fn ftruncate(&mut self, fd: i32, length: i64) -> Result<()>;
        fn openat(&mut self, dirfd: i32, path: &[u8], flags: u32, mode: u32) -> Result<i32>;
        fn openat2(&mut self, dirfd: i32, path: &[u8], flags: u64, mode: u64, resolve: u64) -> Result<i32>;
        fn close(&mut self, fd: i32) -> Result<()>;
        fn dup(&mut self, fd: i32) -> Result<i32>;
        fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize>;
        fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> Result<usize>;
        fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize>;
        fn pwrite(&mut self, fd: i32, data: &[u8], offset: i64) -> Result<usize>;
        fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> Result<i64>;
        fn fsync(&mut self, fd: i32) -> Result<()>;
        fn getdents(&mut self, fd: i32) -> Result<Vec<Dirent>>;
        fn chdir(&mut self, path: &[u8]) -> Result<()>;
        fn fchdir(&mut self, fd: i32) -> Result<()>;
        fn chroot(&mut self, path: &[u8]) -> Result<()>;
        fn getcwd(&mut self) -> Result<Vec<u8>>;
        fn umask(&mut self, mask: u32) -> Result<u32>;
        fn set_creds(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<()>;
        fn setxattr(&mut self, path: &[u8], name: &[u8], value: &[u8], flags: u32, follow: bool) -> Result<()>;
        fn getxattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<Vec<u8>>;
        fn listxattr(&mut self, path: &[u8], follow: bool) -> Result<Vec<Vec<u8>>>;
        fn removexattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<()>;
        fn mount(&mut self, source: &[u8], target: &[u8], fstype: &[u8], flags: u64, data: &[u8]) -> Result<()>;
        fn umount2(&mut self, target: &[u8], flags: u32) -> Result<()>;
        fn pivot_root(&mut self, new_root: &[u8], put_old: &[u8]) -> Result<()>;
        fn mountinfo(&mut self) -> Result<Vec<u8>>;
    }
}
