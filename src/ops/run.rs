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
