//! The 9P client against a real server, diod, started by the tests: on one
//! end of a socketpair (the gofer model, `-r 0 -w 0`), on a unix socket and
//! on TCP. Skipped, with a note, when diod is not installed.
//!
//! Every diod runs with a scratch cwd (it may drop a core file when fids are
//! left open; we clunk everything, and check that none appeared), is waited
//! for or killed by its PID, and its directory is removed afterwards.

use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tessera_fsimpl::gofer::wire::{getattr, setattr, Flock};
use tessera_fsimpl::gofer::{Client, ClientOptions, SetAttr, Transport, AT_REMOVEDIR};
use tessera_vfs::Errno;

fn diod_binary() -> Option<&'static str> {
    let found = ["/usr/sbin/diod", "/usr/bin/diod"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_DIOD").is_none(),
            "TESSERA_REQUIRE_DIOD is set but diod is not installed"
        );
        eprintln!("note: diod is not installed; skipping (apt-get install diod)");
    }
    found
}

struct Diod {
    child: Child,
    dir: PathBuf,
    export: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Diod {
    fn scratch() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "tessera-gofer-diod-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let export = dir.join("export");
        std::fs::create_dir_all(export.join("sub")).unwrap();
        std::fs::write(export.join("hello.txt"), b"hello from diod\n").unwrap();
        std::fs::write(export.join("sub/deep.txt"), b"deep").unwrap();
        (dir, export)
    }

    /// Starts diod with `args` (`{dir}` stands for its scratch directory);
    /// `stdin` is its end of a socketpair for the fd mode.
    fn spawn(bin: &str, args: &str, stdin: Stdio) -> Diod {
        let (dir, export) = Diod::scratch();
        let args = args.replace("{dir}", &dir.to_string_lossy());
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "ulimit -S -c 0; exec {bin} -f -n -N {args} -e {} -L {}/diod.log",
                export.display(),
                dir.display()
            ))
            .current_dir(&dir)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Diod { child, dir, export }
    }

    /// diod on one end of a socketpair, as a gofer would be.
    fn fd() -> Option<(Diod, Client)> {
        let bin = diod_binary()?;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let d = Diod::spawn(
            bin,
            "-r 0 -w 0",
            Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        );
        let t = Transport::from_fd(ours.into()).unwrap();
        let c = Client::connect(t, ClientOptions::default()).unwrap();
        Some((d, c))
    }

    /// Waits (bounded) for a listener to accept connections.
    fn connect_retry(mut f: impl FnMut() -> std::io::Result<Transport>) -> Transport {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match f() {
                Ok(t) => return t,
                Err(e) if Instant::now() > deadline => panic!("diod did not listen: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn aname(&self) -> Vec<u8> {
        self.export.to_string_lossy().into_owned().into_bytes()
    }

    /// Waits for diod to exit by itself; true if it did, with status 0.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn core_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("core"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Diod {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn fd_transport_full_tour() {
    let Some((mut d, c)) = Diod::fd() else {
        return;
    };
    assert_eq!(c.msize(), 65536, "diod caps msize at 64 KiB");
    let (root, rq) = c.attach(b"root", &d.aname(), 0).unwrap();
    assert!(rq.is_dir());
    assert_eq!(c.statfs(&root).unwrap().namelen, 255);
    let a = c.getattr(&root, getattr::ALL).unwrap();
    assert_eq!(a.mode & 0o170000, 0o040000);

    // Read a file.
    let (f, _) = c.walk(&root, &[b"hello.txt"]).unwrap();
    c.lopen(&f, 0).unwrap();
    let mut buf = [0u8; 100];
    let n = c.read(&f, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello from diod\n");
    c.clunk(f).unwrap();

    // Create and write more than one msize, then read it back.
    let (nf, _) = c.walk(&root, &[]).unwrap();
    c.lcreate(&nf, b"big", 2, 0o644, 0).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(c.write(&nf, 0, &data).unwrap(), data.len());
    c.fsync(&nf, false).unwrap();
    let mut back = vec![0u8; 250_000];
    assert_eq!(c.read(&nf, 0, &mut back).unwrap(), data.len());
    assert_eq!(&back[..data.len()], &data[..]);
    let sa = SetAttr {
        valid: setattr::SIZE,
        size: 1000,
        ..SetAttr::default()
    };
    c.setattr(&nf, &sa).unwrap();
    assert_eq!(c.getattr(&nf, getattr::SIZE).unwrap().size, 1000);
    // Locks: diod behaves like flock, but an uncontended lock succeeds.
    let lk = Flock {
        ty: 1,
        flags: 0,
        start: 0,
        length: 10,
        proc_id: 1,
        client_id: b"tessera",
    };
    assert_eq!(c.lock(&nf, &lk).unwrap(), 0);
    c.clunk(nf).unwrap();
    assert_eq!(std::fs::metadata(d.export.join("big")).unwrap().len(), 1000);

    // Directory operations.
    c.mkdir(&root, b"dir", 0o755, 0).unwrap();
    c.symlink(&root, b"ln", b"hello.txt", 0).unwrap();
    let (l, q) = c.walk(&root, &[b"ln"]).unwrap();
    assert!(q[0].is_symlink());
    assert_eq!(c.readlink(&l).unwrap(), b"hello.txt");
    c.clunk(l).unwrap();
    c.mknod(&root, b"fifo", 0o010644, 0, 0, 0).unwrap();
    assert!(std::fs::metadata(d.export.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let (h, _) = c.walk(&root, &[b"hello.txt"]).unwrap();
    c.link(&root, &h, b"hard").unwrap();
    assert_eq!(c.getattr(&h, getattr::NLINK).unwrap().nlink, 2);

    // Extended attributes: set through a cloned fid, read back.
    let (x, _) = c.walk(&h, &[]).unwrap();
    c.xattrcreate(&x, b"user.tessera", 3, 0).unwrap();
    assert_eq!(c.write(&x, 0, b"bar").unwrap(), 3);
    c.clunk(x).unwrap();
    let (xr, size) = c.xattrwalk(&h, b"user.tessera").unwrap();
    assert_eq!(size, 3);
    let mut xb = [0u8; 3];
    assert_eq!(c.read(&xr, 0, &mut xb).unwrap(), 3);
    assert_eq!(&xb, b"bar");
    c.clunk(xr).unwrap();
    assert_eq!(
        c.xattrwalk(&h, b"user.missing").map(|_| ()),
        Err(Errno::ENODATA)
    );
    c.clunk(h).unwrap();

    // readdir.
    let (rd, _) = c.walk(&root, &[]).unwrap();
    c.lopen(&rd, 0o200000).unwrap();
    let mut names = Vec::new();
    let mut off = 0;
    loop {
        let ents = c.readdir(&rd, off, 256).unwrap();
        let Some(last) = ents.last() else { break };
        off = last.offset;
        names.extend(ents.into_iter().map(|e| e.name));
    }
    c.clunk(rd).unwrap();
    for want in [
        &b"hello.txt"[..],
        b"sub",
        b"big",
        b"dir",
        b"ln",
        b"fifo",
        b"hard",
    ] {
        assert!(names.iter().any(|n| n == want), "{want:?} in {names:?}");
    }

    // diod answers Trenameat/Tunlinkat with EOPNOTSUPP: the fallbacks run.
    c.renameat(&root, b"big", &root, b"moved").unwrap();
    assert!(d.export.join("moved").exists() && !d.export.join("big").exists());
    let (sub, _) = c.walk(&root, &[b"sub"]).unwrap();
    c.renameat(&root, b"moved", &sub, b"moved2").unwrap();
    assert!(d.export.join("sub/moved2").exists());
    assert_eq!(c.unlinkat(&root, b"dir", 0), Err(Errno::EISDIR));
    assert_eq!(
        c.unlinkat(&root, b"hard", AT_REMOVEDIR),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(c.unlinkat(&root, b"nope", 0), Err(Errno::ENOENT));
    c.unlinkat(&root, b"dir", AT_REMOVEDIR).unwrap();
    c.unlinkat(&root, b"hard", 0).unwrap();
    c.unlinkat(&sub, b"moved2", 0).unwrap();
    assert!(!d.export.join("dir").exists() && !d.export.join("hard").exists());

    // Partial walk: diod makes newfid anyway; we clunk it and leak nothing.
    let before = c.live_fids();
    assert_eq!(
        c.walk(&root, &[b"sub", b"nope"]).map(|_| ()),
        Err(Errno::ENOENT)
    );
    assert_eq!(c.live_fids(), before);
    // `..` would escape the export on diod: it is never sent.
    assert_eq!(c.walk(&sub, &[b".."]).map(|_| ()), Err(Errno::EINVAL));
    assert_eq!(
        c.walk(&root, &[b"sub/deep.txt"]).map(|_| ()),
        Err(Errno::EINVAL)
    );
    c.clunk(sub).unwrap();

    // Many threads, one connection.
    let c = Arc::new(c);
    let root = Arc::new(root);
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let (c, root) = (c.clone(), root.clone());
            thread::spawn(move || {
                for _ in 0..200 {
                    let (f, _) = c.walk(&root, &[b"hello.txt"]).unwrap();
                    assert_eq!(c.getattr(&f, getattr::SIZE).unwrap().size, 16);
                    c.clunk(f).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(c.live_fids(), 1);

    // Shutdown clunks the root; diod then exits cleanly, leaving no core.
    c.close();
    assert_eq!(c.live_fids(), 0);
    assert!(
        d.wait_exit(),
        "diod exits with status 0 once the connection closes"
    );
    assert!(
        d.core_files().is_empty(),
        "core files: {:?}",
        d.core_files()
    );
}

#[test]
fn close_with_fids_still_open_clunks_them() {
    let Some((mut d, c)) = Diod::fd() else {
        return;
    };
    let (root, _) = c.attach(b"root", &d.aname(), 0).unwrap();
    let held: Vec<_> = (0..10)
        .map(|_| c.walk(&root, &[b"sub", b"deep.txt"]).unwrap().0)
        .collect();
    assert_eq!(c.live_fids(), 11);
    drop(held);
    drop(c); // Drop closes, clunking all eleven.
    assert!(d.wait_exit());
    assert!(d.core_files().is_empty());
}

#[test]
fn unix_socket_transport() {
    let Some(bin) = diod_binary() else {
        return;
    };
    let d = Diod::spawn(bin, "-l {dir}/diod.sock", Stdio::null());
    let sock = d.dir.join("diod.sock");
    let t = Diod::connect_retry(|| Transport::unix(&sock));
    let c = Client::connect(t, ClientOptions::default()).unwrap();
    let (root, _) = c.attach(b"root", &d.aname(), 0).unwrap();
    let (f, _) = c.walk(&root, &[b"sub", b"deep.txt"]).unwrap();
    c.lopen(&f, 0).unwrap();
    let mut b = [0u8; 10];
    assert_eq!(c.read(&f, 0, &mut b).unwrap(), 4);
    assert_eq!(&b[..4], b"deep");
    c.clunk(f).unwrap();
    c.close();
    assert_eq!(c.live_fids(), 0);
    drop(d);
}

#[test]
fn tcp_transport() {
    let Some(bin) = diod_binary() else {
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Diod::spawn(bin, &format!("-l 127.0.0.1:{port}"), Stdio::null());
    let t = Diod::connect_retry(|| Transport::tcp(("127.0.0.1", port)));
    let c = Client::connect(t, ClientOptions::default()).unwrap();
    let (root, _) = c.attach(b"root", &d.aname(), 0).unwrap();
    let (f, _) = c.walk(&root, &[b"hello.txt"]).unwrap();
    assert_eq!(c.getattr(&f, getattr::SIZE).unwrap().size, 16);
    c.clunk(f).unwrap();
    c.close();
    drop(d);
}

#[test]
fn attach_outside_the_export_is_refused() {
    let Some((mut d, c)) = Diod::fd() else {
        return;
    };
    assert_eq!(c.attach(b"root", b"/etc", 0).map(|_| ()), Err(Errno::EPERM));
    assert_eq!(c.live_fids(), 0);
    c.close();
    assert!(d.wait_exit());
}

#[test]
fn pipe_pair_transport() {
    // rfdno != wfdno: diod reads requests from a pipe and writes replies to
    // another. Pipes have no read timeout, so only the reader thread reads.
    let Some(bin) = diod_binary() else {
        return;
    };
    let (dir, export) = Diod::scratch();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "ulimit -S -c 0; exec {bin} -f -n -N -r 0 -w 1 -e {} -L {}/diod.log",
            export.display(),
            dir.display()
        ))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let to_server = std::os::fd::OwnedFd::from(child.stdin.take().unwrap());
    let from_server = std::os::fd::OwnedFd::from(child.stdout.take().unwrap());
    let mut d = Diod { child, dir, export };
    let t = Transport::from_fd_pair(from_server, to_server).unwrap();
    let c = Arc::new(Client::connect(t, ClientOptions::default()).unwrap());
    let (root, _) = c.attach(b"root", &d.aname(), 0).unwrap();
    let root = Arc::new(root);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (c, root) = (c.clone(), root.clone());
            thread::spawn(move || {
                for _ in 0..50 {
                    let (f, _) = c.walk(&root, &[b"hello.txt"]).unwrap();
                    assert_eq!(c.getattr(&f, getattr::SIZE).unwrap().size, 16);
                    c.clunk(f).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    c.close();
    assert_eq!(c.live_fids(), 0);
    assert!(d.wait_exit(), "diod exits once its input pipe closes");
    assert!(d.core_files().is_empty());
}
