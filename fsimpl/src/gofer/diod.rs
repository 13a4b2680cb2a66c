//! Starting and stopping diod, the 9P2000.L server from Debian, the way a
//! gofer runs: on one end of a socketpair (`-r FD -w FD`), serving one
//! export to that single connection and exiting when it closes.
//!
//! diod raises its own core-file limit, so `ulimit -c 0` stops it from
//! starting; it runs under `ulimit -S -c 0` instead, with a scratch working
//! directory of its own, because diod 1.0.24 may crash on exit when a
//! client leaves fids unclunked (close the client first: it clunks them).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A diod process serving one connection, with its scratch directory.
#[derive(Debug)]
pub struct Diod {
    child: Option<Child>,
    scratch: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Diod {
    /// Where diod is installed, if it is.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/sbin/diod", "/usr/bin/diod", "/usr/local/sbin/diod"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Starts `bin` exporting `export` (an absolute path is made of it) on
    /// one end of a new socketpair; returns the server and our end.
    pub fn start(bin: &Path, export: &Path) -> io::Result<(Diod, UnixStream)> {
        let export = std::path::absolute(export)?;
        let scratch = std::env::temp_dir().join(format!(
            "tessera-diod-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&scratch)?;
        let (ours, theirs) = UnixStream::pair()?;
        // The paths go as positional parameters, so nothing in them is shell syntax.
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"ulimit -S -c 0; exec "$0" -f -n -N -r 0 -w 0 -e "$1" -L "$2""#)
            .arg(bin)
            .arg(&export)
            .arg(scratch.join("diod.log"))
            .current_dir(&scratch)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Ok((
                Diod {
                    child: Some(child),
                    scratch,
                },
                ours,
            )),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    /// The server's log so far (for error reports).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.join("diod.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` for diod to exit by itself (our end of the
    /// socket must be closed by then); kills it, by its PID, if it does not.
    /// Returns its exit status, or an error when it had to be killed or
    /// left a core file.
    pub fn stop(mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("diod already stopped"));
        };
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "diod did not exit when the connection closed",
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if self.scratch.join("core").exists() {
            return Err(io::Error::other("diod crashed and left a core file"));
        }
        Ok(status)
    }
}

impl Drop for Diod {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
