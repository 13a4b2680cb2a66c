//! The Linux backend: the host kernel's own system calls, in a throw-away
//! mount namespace.
//!
//! [`run_script`] forks a child for each script. The child leaves the host's
//! mount namespace (`unshare(CLONE_NEWNS)`, and `CLONE_NEWUSER` too when not
//! root), makes every mount private so nothing propagates back, mounts a fresh
//! tmpfs with `mode=0755` and makes it the root of the namespace with
//! `pivot_root(".", ".")` followed by a lazy unmount of the old root. That is
//! the spec's starting state exactly: `..` at `/` stays at `/`, `mounts`
//! lists the one tmpfs, and a script's own `pivot_root` behaves as in a fresh
//! namespace. When the child exits its namespace, and every mount in it,
//! goes away; nothing is left on the host.
//!
//! An fd to the host's `/proc`, opened before the pivot, stays usable after
//! it: `mounts` reads `self/mountinfo` through it, so the text is the
//! kernel's own view for the child's current root.
//!
//! The child writes its output to a pipe that the parent reads with a time
//! limit, so a script that blocks (opening a FIFO with no writer, say) is
//! killed rather than hanging the runner.
//!
//! The `libc` crate is used for the system calls: it is the plain binding,
//! and several calls here (`openat2`, `faccessat2`, the `getcwd` system call,
//! `pivot_root`) are only reachable as raw system calls anyway.

use std::ffi::CString;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use tessera_vfs::abi::{DevId, DirentType, Statx, StatxMask};
use tessera_vfs::{Errno, Result};

use super::backend::{Backend, Dirent};
use super::parse::{Script, ScriptError};
use super::run::{self, Outcome, RunError};

/// The time one script may take before its child is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Child exit status: the script ran to its end.
const EXIT_OK: i32 = 0;
/// Child exit status: a script error; stderr holds `N\treason`.
const EXIT_SCRIPT_ERROR: i32 = 2;
/// Child exit status: the sandbox could not be set up; stderr says why.
const EXIT_SETUP: i32 = 3;

/// Why the Linux backend could not run a script.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// The sandbox (namespaces, tmpfs root) could not be set up.
    #[error("cannot set up the Linux sandbox: {0}")]
    Setup(String),
    /// The script ran longer than the time limit; its child was killed.
    #[error("the script did not finish within {0:?} (a blocking call?); it was killed")]
    Timeout(Duration, Vec<u8>),
    /// The child ended in an unexpected way.
    #[error("the Linux runner child failed: {0}")]
    Child(String),
    /// A system call of the parent failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The one-line note to print when the Linux backend runs without root: the
/// user namespace it uses then changes a few results.
pub fn userns_note() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        None
    } else {
        Some(
            "note: not root: the Linux backend runs in a user namespace (uid 0 mapped to you only), \
             so trusted.* xattrs, mknod of devices, chown or `as` to other ids and setgroups fail \
             with EPERM/EINVAL where root would succeed",
        )
    }
}

/// Whether the Linux backend can run here (root, or user namespaces allowed):
/// it runs an empty script.
pub fn available() -> std::result::Result<(), LinuxError> {
    run_script(&Script::default(), DEFAULT_TIMEOUT).map(|_| ())
}

fn last_errno() -> Errno {
    Errno::from_raw(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL),
    )
}

/// Turns a `-1`-on-error return into a `Result`.
fn check<T: Copy + PartialOrd + Default>(ret: T) -> Result<T> {
    if ret < T::default() {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

fn cstr(bytes: &[u8]) -> Result<CString> {
    // The parser refuses NUL in paths, so this only fails for a caller that
    // bypassed it; EINVAL is what a C caller would get for a bad argument.
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

fn to_statx(st: &libc::stat) -> Statx {
    Statx {
        mask: StatxMask::BASIC_STATS,
        blksize: st.st_blksize as u32,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode,
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        rdev: DevId::from_raw(st.st_rdev),
        dev: DevId::from_raw(st.st_dev),
        ..Statx::default()
    }
}

fn dirent_type(d_type: u8) -> DirentType {
    match d_type {
        1 => DirentType::Fifo,
        2 => DirentType::Chr,
        4 => DirentType::Dir,
        6 => DirentType::Blk,
        8 => DirentType::Reg,
        10 => DirentType::Lnk,
        12 => DirentType::Sock,
        14 => DirentType::Wht,
        _ => DirentType::Unknown,
    }
}

/// Decodes a buffer of `struct linux_dirent64` records.
fn parse_dirents(buf: &[u8], out: &mut Vec<Dirent>) {
    // d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
    let mut pos = 0;
    while let Some(head) = buf.get(pos..pos + 19) {
        let reclen = usize::from(u16::from_ne_bytes([head[16], head[17]]));
        if reclen < 19 {
            break;
        }
        let Some(rec) = buf.get(pos..pos + reclen) else {
            break;
        };
        let name = &rec[19..];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push((name[..len].to_vec(), dirent_type(head[18])));
        pos += reclen;
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The host kernel as a [`Backend`]: every method is the system call of the
/// same name on the calling process.
///
/// It acts on the process that holds it (its mounts, root, credentials), so it
/// is meant to be used inside a sandbox such as the child [`run_script`]
/// makes; using it in an ordinary process changes that process for real.
#[derive(Debug)]
pub struct LinuxBackend {
    proc_fd: i32,
    userns: bool,
}

impl LinuxBackend {
    /// A backend for the calling process. `proc_fd` is a descriptor of a
    /// procfs directory (opened before any `chroot`) through which `mounts`
    /// reads `self/mountinfo`; `userns` says the process runs in a user
    /// namespace where `setgroups` is denied.
    pub fn new(proc_fd: i32, userns: bool) -> LinuxBackend {
        LinuxBackend { proc_fd, userns }
    }

    /// Calls a getxattr-shaped function until the buffer is large enough.
    fn sized_read(mut call: impl FnMut(*mut u8, usize) -> isize) -> Result<Vec<u8>> {
        for _ in 0..8 {
            let size = check(call(std::ptr::null_mut(), 0))? as usize;
            let mut buf = vec![0u8; size.max(1)];
            match check(call(buf.as_mut_ptr(), buf.len())) {
                Ok(n) => {
                    buf.truncate(n as usize);
                    return Ok(buf);
                }
                // The value grew between the two calls: ask again.
                Err(Errno::ERANGE) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Errno::ERANGE)
    }
}

impl Backend for LinuxBackend {
    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::mkdirat(dirfd, p.as_ptr(), mode) }).map(drop)
    }

    fn mknodat(
        &mut self,
        dirfd: i32,
        path: &[u8],
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let p = cstr(path)?;
        let dev = DevId::new(major, minor).to_raw();
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::mknodat(dirfd, p.as_ptr(), mode, dev) }).map(drop)
    }

    fn symlinkat(&mut self, target: &[u8], newdirfd: i32, path: &[u8]) -> Result<()> {
        let (t, p) = (cstr(target)?, cstr(path)?);
        // SAFETY: both strings are valid and NUL-terminated for the call.
        check(unsafe { libc::symlinkat(t.as_ptr(), newdirfd, p.as_ptr()) }).map(drop)
    }

    fn linkat(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()> {
        let (o, n) = (cstr(old)?, cstr(new)?);
        // SAFETY: both strings are valid and NUL-terminated for the call.
        check(unsafe { libc::linkat(olddirfd, o.as_ptr(), newdirfd, n.as_ptr(), flags as i32) })
            .map(drop)
    }

    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::unlinkat(dirfd, p.as_ptr(), flags as i32) }).map(drop)
    }

    fn renameat2(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()> {
        let (o, n) = (cstr(old)?, cstr(new)?);
        // SAFETY: raw renameat2 with valid NUL-terminated strings and plain integers.
        check(unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                olddirfd,
                o.as_ptr(),
                newdirfd,
                n.as_ptr(),
                flags as libc::c_uint,
            )
        })
        .map(drop)
    }

    fn readlinkat(&mut self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>> {
        let p = cstr(path)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: buf is writable for buf.len() bytes; p is NUL-terminated.
        let n = check(unsafe {
            libc::readlinkat(dirfd, p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        buf.truncate(n as usize);
        Ok(buf)
    }

    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<Statx> {
        let p = cstr(path)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: st is a writable stat buffer; p is NUL-terminated.
        check(unsafe { libc::fstatat(dirfd, p.as_ptr(), st.as_mut_ptr(), flags as i32) })?;
        // SAFETY: zero-initialised, and filled by the successful call.
        Ok(to_statx(unsafe { &st.assume_init() }))
    }

    fn fstat(&mut self, fd: i32) -> Result<Statx> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: st is a writable stat buffer.
        check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
        // SAFETY: zero-initialised, and filled by the successful call.
        Ok(to_statx(unsafe { &st.assume_init() }))
    }

    fn faccessat2(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: raw faccessat2 (the C library may emulate the flags) with a
        // NUL-terminated path and plain integers.
        check(unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                dirfd,
                p.as_ptr(),
                mode as i32,
                flags as i32,
            )
        })
        .map(drop)
    }

    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::fchmodat(dirfd, p.as_ptr(), mode, flags as i32) }).map(drop)
    }

    fn fchmod(&mut self, fd: i32, mode: u32) -> Result<()> {
        // SAFETY: plain integers.
        check(unsafe { libc::fchmod(fd, mode) }).map(drop)
    }

    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::fchownat(dirfd, p.as_ptr(), uid, gid, flags as i32) }).map(drop)
    }

    fn fchown(&mut self, fd: i32, uid: u32, gid: u32) -> Result<()> {
        // SAFETY: plain integers.
        check(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
    }

    fn truncate(&mut self, path: &[u8], length: i64) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::truncate(p.as_ptr(), length) }).map(drop)
    }

    fn ftruncate(&mut self, fd: i32, length: i64) -> Result<()> {
        // SAFETY: plain integers.
        check(unsafe { libc::ftruncate(fd, length) }).map(drop)
    }

    fn openat(&mut self, dirfd: i32, path: &[u8], flags: u32, mode: u32) -> Result<i32> {
        let p = cstr(path)?;
        // SAFETY: p is NUL-terminated; the mode is passed as the variadic
        // argument the C prototype expects.
        check(unsafe { libc::openat(dirfd, p.as_ptr(), flags as i32, mode as libc::c_uint) })
    }

    fn openat2(
        &mut self,
        dirfd: i32,
        path: &[u8],
        flags: u64,
        mode: u64,
        resolve: u64,
    ) -> Result<i32> {
        let p = cstr(path)?;
        let how = OpenHow {
            flags,
            mode,
            resolve,
        };
        // SAFETY: `how` is a live open_how of the size passed; p is NUL-terminated.
        let fd = check(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                p.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        })?;
        i32::try_from(fd).map_err(|_| Errno::EOVERFLOW)
    }

    fn close(&mut self, fd: i32) -> Result<()> {
        // SAFETY: closes a descriptor the script owns; nothing in this
        // process holds it otherwise.
        check(unsafe { libc::close(fd) }).map(drop)
    }

    fn dup(&mut self, fd: i32) -> Result<i32> {
        // SAFETY: plain integer.
        check(unsafe { libc::dup(fd) })
    }

    fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize)
    }

    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        check(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) })
            .map(|n| n as usize)
    }

    fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize> {
        // SAFETY: data is readable for data.len() bytes.
        check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) }).map(|n| n as usize)
    }

    fn pwrite(&mut self, fd: i32, data: &[u8], offset: i64) -> Result<usize> {
        // SAFETY: data is readable for data.len() bytes.
        check(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset) })
            .map(|n| n as usize)
    }

    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> Result<i64> {
        // SAFETY: plain integers.
        check(unsafe { libc::lseek(fd, offset, whence) })
    }

    fn fsync(&mut self, fd: i32) -> Result<()> {
        // SAFETY: plain integer.
        check(unsafe { libc::fsync(fd) }).map(drop)
    }

    fn getdents(&mut self, fd: i32) -> Result<Vec<Dirent>> {
        let mut buf = vec![0u8; 32 * 1024];
        let mut out = Vec::new();
        loop {
            // SAFETY: buf is writable for buf.len() bytes.
            let n = check(unsafe {
                libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len())
            })?;
            if n == 0 {
                return Ok(out);
            }
            parse_dirents(buf.get(..n as usize).unwrap_or(&buf), &mut out);
        }
    }

    fn chdir(&mut self, path: &[u8]) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::chdir(p.as_ptr()) }).map(drop)
    }

    fn fchdir(&mut self, fd: i32) -> Result<()> {
        // SAFETY: plain integer.
        check(unsafe { libc::fchdir(fd) }).map(drop)
    }

    fn chroot(&mut self, path: &[u8]) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: p is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::chroot(p.as_ptr()) }).map(drop)
    }

    fn getcwd(&mut self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: the raw system call (the C library turns "(unreachable)"
        // into ENOENT) writing at most buf.len() bytes into buf.
        let n = check(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })?
            as usize;
        buf.truncate(n);
        // The count includes the terminating NUL.
        if buf.last() == Some(&0) {
            buf.pop();
        }
        Ok(buf)
    }

    fn umask(&mut self, mask: u32) -> Result<u32> {
        // SAFETY: umask cannot fail.
        Ok(unsafe { libc::umask(mask & 0o777) })
    }

    fn set_creds(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
        // SAFETY: groups is readable for groups.len() gid_t values.
        let r = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        if r < 0 {
            let e = last_errno();
            // In a user namespace setgroups is denied; an empty list there is
            // the starting state already, so it is not a failure.
            if !(self.userns && groups.is_empty() && e == Errno::EPERM) {
                return Err(e);
            }
        }
        // setfsgid/setfsuid report no error; asking with an invalid id (-1)
        // returns the current value, which tells whether the change took.
        // SAFETY: plain integers; these calls only change this thread's creds,
        // and the sandbox child has one thread.
        unsafe {
            libc::setfsgid(gid);
            if libc::setfsgid(u32::MAX) as u32 != gid {
                return Err(Errno::EPERM);
            }
            libc::setfsuid(uid);
            if libc::setfsuid(u32::MAX) as u32 != uid {
                return Err(Errno::EPERM);
            }
        }
        Ok(())
    }

    fn setxattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: u32,
        follow: bool,
    ) -> Result<()> {
        let (p, n) = (cstr(path)?, cstr(name)?);
        // SAFETY: strings are NUL-terminated; value is readable for its length.
        check(unsafe {
            if follow {
                libc::setxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags as i32,
                )
            } else {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags as i32,
                )
            }
        })
        .map(drop)
    }

    fn getxattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<Vec<u8>> {
        let (p, n) = (cstr(path)?, cstr(name)?);
        Self::sized_read(|buf, len| {
            // SAFETY: strings are NUL-terminated; buf is null with len 0, or
            // writable for len bytes.
            unsafe {
                if follow {
                    libc::getxattr(p.as_ptr(), n.as_ptr(), buf.cast(), len)
                } else {
                    libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.cast(), len)
                }
            }
        })
    }

    fn listxattr(&mut self, path: &[u8], follow: bool) -> Result<Vec<Vec<u8>>> {
        let p = cstr(path)?;
        let list = Self::sized_read(|buf, len| {
            // SAFETY: p is NUL-terminated; buf is null with len 0, or writable
            // for len bytes.
            unsafe {
                if follow {
                    libc::listxattr(p.as_ptr(), buf.cast(), len)
                } else {
                    libc::llistxattr(p.as_ptr(), buf.cast(), len)
                }
            }
        })?;
        Ok(list
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn removexattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<()> {
        let (p, n) = (cstr(path)?, cstr(name)?);
        // SAFETY: both strings are valid and NUL-terminated for the call.
        check(unsafe {
            if follow {
                libc::removexattr(p.as_ptr(), n.as_ptr())
            } else {
                libc::lremovexattr(p.as_ptr(), n.as_ptr())
            }
        })
        .map(drop)
    }

    fn mount(
        &mut self,
        source: &[u8],
        target: &[u8],
        fstype: &[u8],
        flags: u64,
        data: &[u8],
    ) -> Result<()> {
        let (s, t, f) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
        let d = cstr(data)?;
        let data_ptr = if data.is_empty() {
            std::ptr::null()
        } else {
            d.as_ptr().cast()
        };
        // SAFETY: all strings are NUL-terminated and live; data may be null.
        check(unsafe {
            libc::mount(
                s.as_ptr(),
                t.as_ptr(),
                f.as_ptr(),
                flags as libc::c_ulong,
                data_ptr,
            )
        })
        .map(drop)
    }

    fn umount2(&mut self, target: &[u8], flags: u32) -> Result<()> {
        let t = cstr(target)?;
        // SAFETY: t is a valid NUL-terminated string for the call's duration.
        check(unsafe { libc::umount2(t.as_ptr(), flags as i32) }).map(drop)
    }

    fn pivot_root(&mut self, new_root: &[u8], put_old: &[u8]) -> Result<()> {
        let (n, o) = (cstr(new_root)?, cstr(put_old)?);
        // SAFETY: raw pivot_root with two NUL-terminated strings.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(drop)
    }

    fn mountinfo(&mut self) -> Result<Vec<u8>> {
        let fd = check(
            // SAFETY: opens a file relative to our procfs descriptor with a
            // static NUL-terminated path.
            unsafe {
                libc::openat(
                    self.proc_fd,
                    c"self/mountinfo".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            },
        )?;
        let mut text = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let result = loop {
            // SAFETY: buf is writable for buf.len() bytes.
            match check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
                Ok(0) => break Ok(text),
                Ok(n) => text.extend_from_slice(buf.get(..n as usize).unwrap_or(&buf)),
                Err(e) => break Err(e),
            }
        };
        // SAFETY: fd was opened above and is closed once.
        unsafe { libc::close(fd) };
        result
    }
}

/// Writes to a raw descriptor (the child's stdout and stderr) without the
/// standard library's locks, which a forked child must not rely on.
struct FdWriter(i32);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is readable for buf.len() bytes.
            let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pipe() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

fn close_fd(fd: i32) {
    // SAFETY: closes a descriptor this module opened, once.
    unsafe { libc::close(fd) };
}

/// Runs a script on the host kernel in a fresh sandbox (see the module
/// documentation) and collects its output.
///
/// # Errors
///
/// [`LinuxError`] when the sandbox cannot be made, the script outlives
/// `timeout`, or the child dies. A script error is not an error here: it is
/// in [`Outcome::error`].
pub fn run_script(script: &Script, timeout: Duration) -> std::result::Result<Outcome, LinuxError> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            close_fd(out_r);
            close_fd(out_w);
            return Err(e.into());
        }
    };
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let userns = uid != 0;
    // SAFETY: the child only makes system calls, allocates (the C library's
    // allocator is fork-safe) and ends with _exit; it never returns here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        for fd in [out_r, out_w, err_r, err_w] {
            close_fd(fd);
        }
        return Err(e.into());
    }
    if pid == 0 {
        let code = match child_setup(out_w, err_w, userns, uid, gid) {
            Ok(proc_fd) => child_run(script, proc_fd, userns),
            Err(msg) => {
                let _ = FdWriter(2).write_all(msg.as_bytes());
                EXIT_SETUP
            }
        };
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    close_fd(out_w);
    close_fd(err_w);
    let collected = collect(out_r, err_r, timeout);
    close_fd(out_r);
    close_fd(err_r);
    if collected.is_err() {
        // SAFETY: kills the child this function forked, by its pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; status is a writable int.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    let (stdout, stderr) = match collected {
        Ok(v) => v,
        Err(partial) => return Err(LinuxError::Timeout(timeout, partial)),
    };
    let text = String::from_utf8_lossy(&stderr).into_owned();
    if libc::WIFSIGNALED(status) {
        return Err(LinuxError::Child(format!(
            "killed by signal {}: {text}",
            libc::WTERMSIG(status)
        )));
    }
    match libc::WEXITSTATUS(status) {
        EXIT_OK => Ok(Outcome {
            stdout,
            error: None,
        }),
        EXIT_SCRIPT_ERROR => {
            let (line, reason) = text.split_once('\t').unwrap_or(("0", text.as_str()));
            let line = line.trim().parse().unwrap_or(0);
            Ok(Outcome {
                stdout,
                error: Some(ScriptError {
                    line,
                    reason: reason.trim_end().to_string(),
                }),
            })
        }
        EXIT_SETUP => Err(LinuxError::Setup(text.trim_end().to_string())),
        other => Err(LinuxError::Child(format!("exit status {other}: {text}"))),
    }
}

/// Reads the child's two pipes to their ends, or until the deadline (then
/// `Err` with the output so far).
fn collect(
    out_r: i32,
    err_r: i32,
    timeout: Duration,
) -> std::result::Result<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut bufs = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    let fds = [out_r, err_r];
    let mut chunk = vec![0u8; 64 * 1024];
    while open[0] || open[1] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::mem::take(&mut bufs[0]));
        }
        let mut pfds: Vec<libc::pollfd> = (0..2)
            .filter(|&i| open[i])
            .map(|i| libc::pollfd {
                fd: fds[i],
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: pfds is a writable array of pfds.len() pollfd records.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(std::mem::take(&mut bufs[0]));
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            let i = if p.fd == out_r { 0 } else { 1 };
            // SAFETY: chunk is writable for chunk.len() bytes.
            let r = unsafe { libc::read(p.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if r > 0 {
                bufs[i].extend_from_slice(chunk.get(..r as usize).unwrap_or(&chunk));
            } else if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                open[i] = false;
            }
        }
    }
    let [out, err] = bufs;
    Ok((out, err))
}

/// Directories the sandbox's tmpfs may be mounted on. The mount is made in the
/// child's private namespace, so the host never sees it and nothing is created.
const SCRATCH_DIRS: &[&std::ffi::CStr] = &[c"/tmp", c"/mnt", c"/var/tmp", c"/root"];

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// In the child: moves the pipes to stdout/stderr, enters fresh namespaces and
/// the tmpfs root. Returns the procfs descriptor.
fn child_setup(
    out_w: i32,
    err_w: i32,
    userns: bool,
    uid: u32,
    gid: u32,
) -> std::result::Result<i32, String> {
    // SAFETY: every call below is a plain system call on this single-threaded
    // child, with NUL-terminated static strings or integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::dup2(out_w, 1) < 0 || libc::dup2(err_w, 2) < 0 {
            return Err(os_err("dup2"));
        }
        // Descriptors inherited from the parent (other tests' pipes, say) must
        // not stay open here: they would keep those pipes from ending.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) < 0 {
            for fd in 3..1024 {
                libc::close(fd);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        if userns {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) < 0 {
                return Err(os_err("unshare(CLONE_NEWUSER|CLONE_NEWNS)"));
            }
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", format!("0 {uid} 1").as_bytes())?;
            write_file(c"/proc/self/gid_map", format!("0 {gid} 1").as_bytes())?;
        } else if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return Err(os_err("unshare(CLONE_NEWNS)"));
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return Err(os_err("making / private"));
        }
        let proc_fd = libc::open(
            c"/proc".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if proc_fd < 0 {
            return Err(os_err("opening /proc"));
        }
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        let scratch = SCRATCH_DIRS
            .iter()
            .find(|d| {
                libc::stat(d.as_ptr(), st.as_mut_ptr()) == 0
                    && (*st.as_ptr()).st_mode & libc::S_IFMT == libc::S_IFDIR
            })
            .ok_or_else(|| {
                "no scratch directory (/tmp, /mnt, ...) to mount the tmpfs root on".to_string()
            })?;
        if libc::mount(
            c"none".as_ptr(),
            scratch.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=0755".as_ptr().cast(),
        ) < 0
        {
            return Err(os_err("mounting the tmpfs root"));
        }
        if libc::chdir(scratch.as_ptr()) < 0 {
            return Err(os_err("chdir to the tmpfs root"));
        }
        // The old root is stacked on the new one, then lazily unmounted: the
        // tmpfs becomes the namespace root with no host mounts left in it.
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
            return Err(os_err("pivot_root to the tmpfs root"));
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
            return Err(os_err("detaching the old root"));
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return Err(os_err("chdir /"));
        }
        if !userns && libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(os_err("setgroups"));
        }
        libc::umask(0o022);
        Ok(proc_fd)
    }
}

fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::result::Result<(), String> {
    // SAFETY: path is NUL-terminated; data is readable for its length; the fd
    // is closed once.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(os_err(&format!("opening {path:?}")));
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = os_err(&format!("writing {path:?}"));
        libc::close(fd);
        if n < 0 || n as usize != data.len() {
            return Err(err);
        }
    }
    Ok(())
}

/// In the child, inside the sandbox: runs the script, output to fd 1.
fn child_run(script: &Script, proc_fd: i32, userns: bool) -> i32 {
    let mut backend = LinuxBackend::new(proc_fd, userns);
    let mut out = io::BufWriter::with_capacity(64 * 1024, FdWriter(1));
    match run::run(script, &mut backend, &mut out) {
        Ok(()) => EXIT_OK,
        Err(RunError::Script(e)) => {
            let _ = out.flush();
            let _ = writeln!(FdWriter(2), "{}\t{}", e.line, e.reason);
            EXIT_SCRIPT_ERROR
        }
        Err(RunError::Io(e)) => {
            let _ = writeln!(FdWriter(2), "writing the output: {e}");
            EXIT_SETUP + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_records_decode_and_stop_on_garbage() {
        let mut buf = Vec::new();
        for (name, t) in [(&b"."[..], 4u8), (b"file", 8)] {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            let mut rec = vec![0u8; reclen];
            rec[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            rec[18] = t;
            rec[19..19 + name.len()].copy_from_slice(name);
            buf.extend_from_slice(&rec);
        }
        buf.extend_from_slice(&[0u8; 10]);
        let mut out = Vec::new();
        parse_dirents(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                (b".".to_vec(), DirentType::Dir),
                (b"file".to_vec(), DirentType::Reg)
            ]
        );
        let mut none = Vec::new();
        parse_dirents(&[0u8; 40], &mut none);
        assert!(none.is_empty());
    }
}
