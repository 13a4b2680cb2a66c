//! The `9p` filesystem type on the VFS core: mount options, the basic
//! operations through a `Process`, `..` kept on the client, the `dcache=`
//! bound and fid accounting. Against the in-process `MemServer`, and against
//! diod when it is installed (the ops scripts on diod are in
//! `tests/ops_9p.rs` of the `tessera` crate).

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_fsimpl::gofer::diod::Diod;
use tessera_fsimpl::gofer::{GoferFs, GoferType, MemServer};
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::process::Process;
use tessera_vfs::Vfs;

/// A process whose root is a `9p` mount with `extra` options over a
/// connection whose other end is `theirs`' server; returns it with the fs.
fn mount(ours: UnixStream, extra: &str) -> Result<(Process, Arc<tessera_vfs::dentry::Filesystem>)> {
    let vfs = Vfs::new();
    vfs.fstypes.register(Arc::new(GoferType))?;
    let fd = ours.into_raw_fd();
    let data = format!("trans=fd,rfdno={fd},wfdno={fd}{extra}");
    let root = vfs.mount_disconnected(
        &Credentials::root(),
        "9p",
        b"test",
        MountFlags::empty(),
        data.as_bytes(),
    )?;
    let fs = root.fs().clone();
    let ns = vfs.new_namespace(root)?;
    Ok((Process::new(vfs, ns, Credentials::root()), fs))
}

fn gofer(fs: &tessera_vfs::dentry::Filesystem) -> &GoferFs {
    fs.ops().as_any().downcast_ref::<GoferFs>().unwrap()
}

fn mem() -> (MemServer, UnixStream, std::thread::JoinHandle<()>) {
    let server = MemServer::new();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let h = server.serve(theirs);
    (server, ours, h)
}

#[test]
fn unknown_options_and_bad_transports_are_einval() {
    let vfs = Vfs::new();
    vfs.fstypes.register(Arc::new(GoferType)).unwrap();
    for data in [
        &b"trans=fd,rfdno=1000,wfdno=1000,bogus=1"[..],
        b"trans=fd,rfdno=1000",
        b"trans=fd,rfdno=1000,wfdno=1000,cache=mmap",
        b"trans=virtio",
        b"",
    ] {
        let r = vfs.mount_disconnected(&Credentials::root(), "9p", b"x", MountFlags::empty(), data);
        assert_eq!(
            r.err(),
            Some(Errno::EINVAL),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn sandboxed_mount_of_9p_is_refused() {
    // trans=fd names fds of this process: only the embedder may mount 9p.
    let (_s, ours, _h) = mem();
    let (p, _fs) = mount(ours, "").unwrap();
    p.mkdirat(AT_FDCWD, b"/m", 0o755).unwrap();
    let r = p.mount(
        b"none",
        b"/m",
        b"9p",
        MountFlags::empty(),
        b"trans=fd,rfdno=0,wfdno=1",
    );
    assert_eq!(r, Err(Errno::ENODEV));
}

#[test]
fn basic_operations_on_memserver() {
    let (server, ours, _h) = mem();
    server.add_file("hello", b"hi there".to_vec()).unwrap();
    let (p, fs) = mount(ours, ",cache=fscache").unwrap();
    let st = p.fstatat(AT_FDCWD, b"/hello", AtFlags::empty()).unwrap();
    assert_eq!(st.size, 8);
    let fd = p
        .openat(AT_FDCWD, b"/hello", OpenFlags::O_RDONLY, 0)
        .unwrap();
    let mut buf = [0u8; 16];
    let f = p.file(fd).unwrap();
    assert_eq!(f.read(&mut buf).unwrap(), 8);
    assert_eq!(&buf[..8], b"hi there");
    p.close(fd).unwrap();
    p.mkdirat(AT_FDCWD, b"/d", 0o750).unwrap();
    let st = p.fstatat(AT_FDCWD, b"/d", AtFlags::empty()).unwrap();
    assert_eq!(st.mode & 0o7777, 0o750);
    p.symlinkat(b"../hello", AT_FDCWD, b"/d/l").unwrap();
    assert_eq!(p.readlinkat(AT_FDCWD, b"/d/l").unwrap(), b"../hello");
    p.renameat2(AT_FDCWD, b"/d", AT_FDCWD, b"/e", RenameFlags::empty())
        .unwrap();
    // Below a renamed directory the fids are walked again.
    assert_eq!(p.readlinkat(AT_FDCWD, b"/e/l").unwrap(), b"../hello");
    assert_eq!(
        p.unlinkat(AT_FDCWD, b"/e", AtFlags::AT_REMOVEDIR),
        Err(Errno::ENOTEMPTY)
    );
    p.unlinkat(AT_FDCWD, b"/e/l", AtFlags::empty()).unwrap();
    p.unlinkat(AT_FDCWD, b"/e", AtFlags::AT_REMOVEDIR).unwrap();
    assert_eq!(
        p.fstatat(AT_FDCWD, b"/e", AtFlags::empty()).err(),
        Some(Errno::ENOENT)
    );
    // `..` of the root is the root: the server is never asked for it.
    let a = p.fstatat(AT_FDCWD, b"/..", AtFlags::empty()).unwrap();
    let b = p.fstatat(AT_FDCWD, b"/", AtFlags::empty()).unwrap();
    assert_eq!(a.ino, b.ino);
    let client = gofer(&fs).client().clone();
    drop(p);
    drop(fs);
    client.close();
    assert_eq!(client.live_fids(), 0);
}

#[test]
fn dcache_bound_prunes_unused_dentries() {
    let (_server, ours, _h) = mem();
    let (p, fs) = mount(ours, ",dcache=16").unwrap();
    let g = gofer(&fs);
    g.attach_root(fs.root());
    p.mkdirat(AT_FDCWD, b"/d", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/d/e", 0o755).unwrap();
    for i in 0..200 {
        // Some at the root, most two levels down: the prune reaches the whole tree.
        let name = if i % 4 == 0 {
            format!("/f{i}")
        } else {
            format!("/d/e/f{i}")
        };
        let fd = p
            .openat(
                AT_FDCWD,
                name.as_bytes(),
                OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                0o644,
            )
            .unwrap();
        p.close(fd).unwrap();
    }
    // A miss (a lookup) finds the bound passed and prunes.
    assert!(p.fstatat(AT_FDCWD, b"/missing", AtFlags::empty()).is_err());
    assert!(g.live_inodes() <= 17, "{} inodes alive", g.live_inodes());
    // Pruned names are looked up again.
    assert!(p.fstatat(AT_FDCWD, b"/d/e/f7", AtFlags::empty()).is_ok());
    assert!(p.fstatat(AT_FDCWD, b"/f8", AtFlags::empty()).is_ok());
    assert!(
        g.client().live_fids() < 40,
        "{} fids",
        g.client().live_fids()
    );
}

fn diod_export() -> Option<(PathBuf, PathBuf)> {
    let bin = Diod::binary()?;
    let d = std::env::temp_dir().join(format!("tessera-gofer-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("export")).unwrap();
    std::fs::create_dir_all(d.join("outside")).unwrap();
    Some((bin, d))
}

#[test]
fn diod_dotdot_stays_inside_and_shutdown_is_clean() {
    let Some((bin, d)) = diod_export() else {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_DIOD").is_none(),
            "diod is not installed"
        );
        eprintln!("note: diod is not installed; skipping");
        return;
    };
    let export = d.join("export");
    let (server, ours) = Diod::start(&bin, &export).unwrap();
    let aname = format!(",aname={}", export.display());
    let (p, fs) = mount(ours, &aname).unwrap();
    p.mkdirat(AT_FDCWD, b"/sub", 0o755).unwrap();
    // diod would let `..` out of the export; the VFS keeps it in.
    assert_eq!(
        p.fstatat(AT_FDCWD, b"/sub/../../outside", AtFlags::empty())
            .err(),
        Some(Errno::ENOENT)
    );
    assert_eq!(
        p.fstatat(AT_FDCWD, b"/../outside", AtFlags::empty()).err(),
        Some(Errno::ENOENT)
    );
    let fd = p
        .openat(
            AT_FDCWD,
            b"/sub/f",
            OpenFlags::O_CREAT | OpenFlags::O_RDWR,
            0o640,
        )
        .unwrap();
    let f = p.file(fd).unwrap();
    let data = vec![7u8; 200_000];
    assert_eq!(f.write(&Credentials::root(), &data).unwrap(), data.len());
    let mut back = vec![0u8; 300_000];
    assert_eq!(f.pread(&mut back, 0).unwrap(), data.len());
    assert_eq!(&back[..data.len()], &data[..]);
    drop(f);
    p.close(fd).unwrap();
    p.fchownat(AT_FDCWD, b"/sub/f", 1000, 1000, AtFlags::empty())
        .unwrap();
    let host = std::fs::metadata(export.join("sub/f")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&host),
        1000,
        "the server made the owner the VFS asked for"
    );
    let client = gofer(&fs).client().clone();
    drop(p);
    drop(fs);
    client.close();
    drop(client);
    let st = server.stop(Duration::from_secs(10)).unwrap();
    assert!(st.success(), "diod exited with {st}");
    let _ = std::fs::remove_dir_all(&d);
}
