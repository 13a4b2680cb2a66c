//! The ops-script interpreter: runs parsed lines on a [`Backend`] and prints
//! one result line per operation.
//!
//! The interpreter owns the handle table (handle name -> descriptor) and all
//! formatting, so that two backends are compared on their system calls alone.

use std::collections::HashMap;
use std::io::{self, Write};

use tessera_vfs::Errno;

use super::backend::Backend;
use super::format;
use super::mountinfo;
use super::parse::{parse_script, Dir, Line, Op, Script, ScriptError, AT_FDCWD};

/// The most bytes one `read` or `pread` asks the backend for. A script may ask
/// for any COUNT; the buffer is bounded so that `read f 99999999999` cannot
/// exhaust memory. Both backends see the same bound, so they stay comparable.
pub const MAX_READ: usize = 1 << 20;

/// `O_RDONLY | O_DIRECTORY`, the flags `ls` opens with.
const LS_OPEN_FLAGS: u32 = 0o200000;

/// Why a script stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A script error (printed as `error: line N: reason`).
    #[error("{0}")]
    Script(#[from] ScriptError),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Io(#[from] io::Error),
}

/// What one script run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output: one line per operation that ran.
    pub stdout: Vec<u8>,
    /// The script error that stopped the run, if any.
    pub error: Option<ScriptError>,
}

impl Outcome {
    /// The exit status the runner gives: 0, or 2 after a script error.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            2
        } else {
            0
        }
    }
}

/// Parses and runs a script on `backend`, collecting its output.
pub fn run_source(src: &[u8], backend: &mut dyn Backend) -> Outcome {
    match parse_script(src) {
        Ok(script) => run_collect(&script, backend),
        Err(e) => Outcome {
            stdout: Vec::new(),
            error: Some(e),
        },
    }
}

/// Runs a parsed script on `backend`, collecting its output.
pub fn run_collect(script: &Script, backend: &mut dyn Backend) -> Outcome {
    let mut stdout = Vec::new();
    let error = match run(script, backend, &mut stdout) {
        Ok(()) => None,
        Err(RunError::Script(e)) => Some(e),
        // Writing to a Vec does not fail.
        Err(RunError::Io(_)) => None,
    };
    Outcome { stdout, error }
}

/// Runs a parsed script on `backend`, writing one line per operation to
/// `out` as soon as it has run.
///
/// # Errors
///
/// [`RunError::Script`] for a line that uses an unbound handle (the lines
/// before it have run and been written); [`RunError::Io`] when `out` fails.
pub fn run(
    script: &Script,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let mut runner = Runner {
        backend,
        handles: HashMap::new(),
    };
    for line in &script.lines {
        let result = runner.step(line)?;
        let mut text = line.text.clone();
        text.extend_from_slice(b" => ");
        match result {
            Ok(value) => {
                text.extend_from_slice(b"OK");
                text.extend_from_slice(&value);
            }
            Err(e) => {
                text.extend_from_slice(b"ERR ");
                text.extend_from_slice(e.name().as_bytes());
            }
        }
        text.push(b'\n');
        out.write_all(&text)?;
    }
    out.flush()?;
    Ok(())
}

/// The value after `OK` (empty, or starting with a space), or the errno.
type StepResult = Result<Vec<u8>, Errno>;

struct Runner<'a> {
    backend: &'a mut dyn Backend,
    handles: HashMap<String, i32>,
}

fn unknown_handle(line: &Line, name: &str) -> ScriptError {
    ScriptError {
        line: line.number,
        reason: format!("unknown handle {name}"),
    }
}

fn ok() -> StepResult {
    Ok(Vec::new())
}

fn value(v: impl std::fmt::Display) -> StepResult {
    Ok(format!(" {v}").into_bytes())
}

fn bytes(b: &[u8]) -> StepResult {
    let mut out = vec![b' '];
    format::quote_into(&mut out, b);
    Ok(out)
}

impl Runner<'_> {
    fn fd(&self, line: &Line, name: &str) -> Result<i32, ScriptError> {
        self.handles
            .get(name)
            .copied()
            .ok_or_else(|| unknown_handle(line, name))
    }

    fn dirfd(&self, line: &Line, dir: &Dir) -> Result<i32, ScriptError> {
        match dir {
            Dir::Cwd => Ok(AT_FDCWD),
            Dir::Handle(h) => self.fd(line, h),
        }
    }

    /// Binds `name` to a freshly opened `fd`, closing the descriptor it held.
    fn bind(&mut self, name: &str, fd: i32) {
        if let Some(old) = self.handles.insert(name.to_string(), fd) {
            // The old descriptor is gone either way; its close error is not a
            // result of this line.
            let _ = self.backend.close(old);
        }
    }

    /// Runs one line: `Err` is a script error, `Ok(Err)` an errno result.
    fn step(&mut self, line: &Line) -> Result<StepResult, ScriptError> {
        let b = &mut *self.backend;
        Ok(match &line.op {
            Op::Mkdirat { dir, path, mode } => {
                let d = self.dirfd(line, dir)?;
                self.backend.mkdirat(d, path, *mode).and_then(|()| ok())
            }
            Op::Mknod {
                path,
                mode,
                major,
                minor,
            } => b
                .mknodat(AT_FDCWD, path, *mode, *major, *minor)
                .and_then(|()| ok()),
            Op::Symlink { target, path } => b.symlinkat(target, AT_FDCWD, path).and_then(|()| ok()),
            Op::Linkat {
                olddir,
                old,
                newdir,
                new,
                flags,
            } => {
                let (o, n) = (self.dirfd(line, olddir)?, self.dirfd(line, newdir)?);
                self.backend
                    .linkat(o, old, n, new, *flags)
                    .and_then(|()| ok())
            }
            Op::Unlinkat { dir, path, flags } => {
                let d = self.dirfd(line, dir)?;
                self.backend.unlinkat(d, path, *flags).and_then(|()| ok())
            }
            Op::Renameat2 {
                olddir,
                old,
                newdir,
                new,
                flags,
            } => {
                let (o, n) = (self.dirfd(line, olddir)?, self.dirfd(line, newdir)?);
                self.backend
                    .renameat2(o, old, n, new, *flags)
                    .and_then(|()| ok())
            }
            Op::Readlink { path } => b.readlinkat(AT_FDCWD, path).and_then(|v| bytes(&v)),
            Op::Fstatat { dir, path, flags } => {
                let d = self.dirfd(line, dir)?;
                self.backend
                    .fstatat(d, path, *flags)
                    .and_then(|st| value(format::stat_line(&st)))
            }
            Op::Fstat { handle } => {
                let fd = self.fd(line, handle)?;
                self.backend
                    .fstat(fd)
                    .and_then(|st| value(format::stat_line(&st)))
            }
            Op::Faccessat2 {
                dir,
                path,
                mode,
                flags,
            } => {
                let d = self.dirfd(line, dir)?;
                self.backend
                    .faccessat2(d, path, *mode, *flags)
                    .and_then(|()| ok())
            }
            Op::Chmod { path, mode } => b.fchmodat(AT_FDCWD, path, *mode, 0).and_then(|()| ok()),
            Op::Fchmod { handle, mode } => {
                let fd = self.fd(line, handle)?;
                self.backend.fchmod(fd, *mode).and_then(|()| ok())
            }
            Op::Fchownat {
                path,
                uid,
                gid,
                flags,
            } => b
                .fchownat(AT_FDCWD, path, *uid, *gid, *flags)
                .and_then(|()| ok()),
            Op::Fchown { handle, uid, gid } => {
                let fd = self.fd(line, handle)?;
                self.backend.fchown(fd, *uid, *gid).and_then(|()| ok())
            }
            Op::Truncate { path, length } => b.truncate(path, *length).and_then(|()| ok()),
            Op::Ftruncate { handle, length } => {
                let fd = self.fd(line, handle)?;
                self.backend.ftruncate(fd, *length).and_then(|()| ok())
            }
            Op::Openat {
                handle,
                dir,
                path,
                flags,
                mode,
            } => {
                let d = self.dirfd(line, dir)?;
                match self.backend.openat(d, path, *flags, *mode) {
                    Ok(fd) => {
                        self.bind(handle, fd);
                        ok()
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Openat2 {
                handle,
                dir,
                path,
                flags,
                mode,
                resolve,
            } => {
                let d = self.dirfd(line, dir)?;
                match self.backend.openat2(d, path, *flags, *mode, *resolve) {
                    Ok(fd) => {
                        self.bind(handle, fd);
                        ok()
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Close { handle } => {
                let fd = self.fd(line, handle)?;
                // close(2) releases the descriptor even when it reports an error.
                self.handles.remove(handle);
                self.backend.close(fd).and_then(|()| ok())
            }
            Op::Dup { handle, new } => {
                let fd = self.fd(line, handle)?;
                match self.backend.dup(fd) {
                    Ok(copy) => {
                        self.bind(new, copy);
                        ok()
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Read { handle, count } => {
                let fd = self.fd(line, handle)?;
                let mut buf = vec![0u8; bounded(*count)];
                self.backend
                    .read(fd, &mut buf)
                    .and_then(|n| bytes(buf.get(..n).unwrap_or(&buf)))
            }
            Op::Pread {
                handle,
                count,
                offset,
            } => {
                let fd = self.fd(line, handle)?;
                let mut buf = vec![0u8; bounded(*count)];
                self.backend
                    .pread(fd, &mut buf, *offset)
                    .and_then(|n| bytes(buf.get(..n).unwrap_or(&buf)))
            }
            Op::Write { handle, data } => {
                let fd = self.fd(line, handle)?;
                self.backend.write(fd, data).and_then(value)
            }
            Op::Pwrite {
                handle,
                data,
                offset,
            } => {
                let fd = self.fd(line, handle)?;
                self.backend.pwrite(fd, data, *offset).and_then(value)
            }
            Op::Lseek {
                handle,
                offset,
                whence,
            } => {
                let fd = self.fd(line, handle)?;
                self.backend.lseek(fd, *offset, *whence).and_then(value)
            }
            Op::Fsync { handle } => {
                let fd = self.fd(line, handle)?;
                self.backend.fsync(fd).and_then(|()| ok())
            }
            Op::Getdents { handle } => {
                let fd = self.fd(line, handle)?;
                self.backend.getdents(fd).map(format::listing)
            }
            Op::Ls { path } => match b.openat(AT_FDCWD, path, LS_OPEN_FLAGS, 0) {
                Ok(fd) => {
                    let entries = b.getdents(fd);
                    let closed = b.close(fd);
                    entries.and_then(|e| closed.map(|()| format::listing(e)))
                }
                Err(e) => Err(e),
            },
            Op::Chdir { path } => b.chdir(path).and_then(|()| ok()),
            Op::Fchdir { handle } => {
                let fd = self.fd(line, handle)?;
                self.backend.fchdir(fd).and_then(|()| ok())
            }
            Op::Chroot { path } => b.chroot(path).and_then(|()| ok()),
            Op::Getcwd => b.getcwd().and_then(|v| bytes(&v)),
            Op::Umask { mask } => b.umask(*mask).map(|old| format!(" {old:04o}").into_bytes()),
            Op::As { uid, gid, groups } => b.set_creds(*uid, *gid, groups).and_then(|()| ok()),
            Op::Setxattr {
                path,
                name,
                value,
                flags,
                follow,
            } => b
                .setxattr(path, name, value, *flags, *follow)
                .and_then(|()| ok()),
            Op::Getxattr { path, name, follow } => {
                b.getxattr(path, name, *follow).and_then(|v| bytes(&v))
            }
            Op::Listxattr { path, follow } => b.listxattr(path, *follow).map(format::name_list),
            Op::Removexattr { path, name, follow } => {
                b.removexattr(path, name, *follow).and_then(|()| ok())
            }
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => b
                .mount(source, target, fstype, *flags, data)
                .and_then(|()| ok()),
            Op::Umount { target, flags } => b.umount2(target, *flags).and_then(|()| ok()),
            Op::PivotRoot { new_root, put_old } => {
                b.pivot_root(new_root, put_old).and_then(|()| ok())
            }
            Op::Mounts => b
                .mountinfo()
                .map(|text| mountinfo::format(mountinfo::parse(&text))),
        })
    }
}

fn bounded(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX).min(MAX_READ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backend::Dirent;
    use tessera_vfs::abi::{DirentType, Statx};
    use tessera_vfs::Result;

    /// A backend that opens anything but `/missing`, hands out descriptors
    /// from 3 up, and records the calls the handle logic makes.
    #[derive(Default)]
    struct Fake {
        next_fd: i32,
        open: Vec<i32>,
        log: Vec<String>,
    }

    impl Fake {
        fn open_fd(&mut self, path: &[u8]) -> Result<i32> {
            if path == b"/missing" {
                return Err(Errno::ENOENT);
            }
            let fd = 3 + self.next_fd;
            self.next_fd += 1;
            self.open.push(fd);
            self.log.push(format!("open {fd}"));
            Ok(fd)
        }
        fn known(&self, fd: i32) -> Result<()> {
            if self.open.contains(&fd) {
                Ok(())
            } else {
                Err(Errno::EBADF)
            }
        }
    }

    impl Backend for Fake {
        fn mkdirat(&mut self, _: i32, _: &[u8], _: u32) -> Result<()> {
            Ok(())
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
            Ok(b"t\"\\\x01".to_vec())
        }
        fn fstatat(&mut self, _: i32, _: &[u8], _: u32) -> Result<Statx> {
            Ok(Statx {
                mode: 0o100600,
                nlink: 1,
                size: 3,
                ..Statx::default()
            })
        }
        fn fstat(&mut self, fd: i32) -> Result<Statx> {
            self.known(fd)?;
            Ok(Statx {
                mode: 0o040755,
                nlink: 2,
                ..Statx::default()
            })
        }
        fn faccessat2(&mut self, _: i32, _: &[u8], _: u32, _: u32) -> Result<()> {
            Err(Errno::EACCES)
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
        fn openat(&mut self, _: i32, path: &[u8], _: u32, _: u32) -> Result<i32> {
            self.open_fd(path)
        }
        fn openat2(&mut self, _: i32, path: &[u8], _: u64, _: u64, _: u64) -> Result<i32> {
            self.open_fd(path)
        }
        fn close(&mut self, fd: i32) -> Result<()> {
            self.known(fd)?;
            self.open.retain(|&f| f != fd);
            self.log.push(format!("close {fd}"));
            Ok(())
        }
        fn dup(&mut self, fd: i32) -> Result<i32> {
            self.known(fd)?;
            self.open_fd(b"dup")
        }
        fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize> {
            self.known(fd)?;
            let n = buf.len().min(2);
            buf[..n].fill(0xff);
            Ok(n)
        }
        fn pread(&mut self, _: i32, buf: &mut [u8], _: i64) -> Result<usize> {
            Ok(buf.len())
        }
        fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize> {
            self.known(fd)?;
            Ok(data.len())
        }
        fn pwrite(&mut self, _: i32, _: &[u8], _: i64) -> Result<usize> {
            Err(Errno::ENOSYS)
        }
        fn lseek(&mut self, _: i32, offset: i64, _: i32) -> Result<i64> {
            Ok(offset)
        }
        fn fsync(&mut self, _: i32) -> Result<()> {
            Err(Errno::ENOSYS)
        }
        fn getdents(&mut self, fd: i32) -> Result<Vec<Dirent>> {
            self.known(fd)?;
            Ok(vec![
                (b"..".to_vec(), DirentType::Dir),
                (b"b".to_vec(), DirentType::Reg),
                (b"a b".to_vec(), DirentType::Dir),
            ])
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
            Ok(b"(unreachable)/x".to_vec())
        }
        fn umask(&mut self, _: u32) -> Result<u32> {
            Ok(0o22)
        }
        fn set_creds(&mut self, _: u32, _: u32, _: &[u32]) -> Result<()> {
            Ok(())
        }
        fn setxattr(&mut self, _: &[u8], _: &[u8], _: &[u8], _: u32, _: bool) -> Result<()> {
            Err(Errno::ENOTSUP)
        }
        fn getxattr(&mut self, _: &[u8], _: &[u8], _: bool) -> Result<Vec<u8>> {
            Err(Errno::ENODATA)
        }
        fn listxattr(&mut self, _: &[u8], _: bool) -> Result<Vec<Vec<u8>>> {
            Ok(vec![b"user.z".to_vec(), b"user.a b".to_vec()])
        }
        fn removexattr(&mut self, _: &[u8], _: &[u8], _: bool) -> Result<()> {
            Err(Errno::EAGAIN)
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
            Ok(b"1 0 0:1 / / rw - tmpfs none rw\n2 1 0:2 / /a ro,nodev - tmpfs none ro\n".to_vec())
        }
    }

    fn run_fake(src: &str) -> (Outcome, Fake) {
        let mut fake = Fake::default();
        let out = run_source(src.as_bytes(), &mut fake);
        (out, fake)
    }

    #[test]
    fn script_error_b_runs_the_lines_before_it() {
        let (out, _) = run_fake(
            "# c\nopen f /f O_RDWR|O_CREAT 0644\nclose f\nwrite f \"x\"\nmkdir /never 0755\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "open f /f O_RDWR|O_CREAT 0644 => OK\nclose f => OK\n"
        );
        assert_eq!(
            out.error.map(|e| e.to_string()).as_deref(),
            Some("error: line 4: unknown handle f")
        );
    }

    #[test]
    fn script_error_a_runs_nothing() {
        let (out, fake) = run_fake("open f /f O_RDWR|O_CREATE 0644\nmkdir /never 0755\n");
        assert!(out.stdout.is_empty());
        assert_eq!(out.exit_code(), 2);
        assert!(fake.log.is_empty());
    }

    #[test]
    fn a_failed_open_keeps_the_binding_and_a_rebind_closes_the_old_fd() {
        let (out, fake) =
            run_fake("open f /a O_RDONLY\nopen f /missing O_RDONLY\nread f 5\nopen f /b O_RDONLY\nwrite f x\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "open f /a O_RDONLY => OK\nopen f /missing O_RDONLY => ERR ENOENT\nread f 5 => OK \"\\xff\\xff\"\n\
             open f /b O_RDONLY => OK\nwrite f x => OK 1\n"
        );
        assert_eq!(fake.log, ["open 3", "open 4", "close 3"]);
        assert_eq!(fake.open, [4]);
        assert!(out.error.is_none());
    }

    #[test]
    fn dup_binds_a_new_handle_and_unknown_dirs_are_script_errors() {
        let (out, fake) =
            run_fake("open d /d O_RDONLY\ndup d e\nclose d\nfstat e\nmkdirat d x 0755\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "open d /d O_RDONLY => OK\ndup d e => OK\nclose d => OK\nfstat e => OK type=dir mode=0755 nlink=2 uid=0 gid=0\n"
        );
        assert_eq!(
            out.error.map(|e| (e.line, e.reason)),
            Some((5, "unknown handle d".to_string()))
        );
        assert_eq!(fake.open, [4]);
    }

    #[test]
    fn values_are_formatted_as_the_spec_says() {
        let (out, fake) = run_fake(
            "ls /d\nreadlink /l\ngetcwd\numask 0\nlistxattr /f\nremovexattr /f user.x\nsetxattr /f a b 0\n\
             mounts\nstat /f\naccess /f R_OK\nlseek f 1 SEEK_SET\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ls /d => OK \"a b\":dir b:reg\nreadlink /l => OK \"t\\\"\\\\\\x01\"\ngetcwd => OK \"(unreachable)/x\"\n\
             umask 0 => OK 0022\nlistxattr /f => OK \"user.a b\" user.z\nremovexattr /f user.x => ERR EAGAIN\n\
             setxattr /f a b 0 => ERR EOPNOTSUPP\nmounts => OK /:tmpfs:rw /a:tmpfs:ro,nodev\n\
             stat /f => OK type=reg mode=0600 nlink=1 uid=0 gid=0 size=3\naccess /f R_OK => ERR EACCES\n"
        );
        // ls closes what it opened.
        assert!(fake.open.is_empty());
        assert_eq!(out.error.map(|e| e.line), Some(11));
    }

    #[test]
    fn huge_reads_are_bounded() {
        let (out, _) = run_fake("open f /f O_RDONLY\npread f 99999999999999 0\n");
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default();
        assert_eq!(last.matches("\\x00").count(), MAX_READ);
    }
}
