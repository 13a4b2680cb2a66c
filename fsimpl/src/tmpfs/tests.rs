use std::sync::Arc;

use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::process::Process;
use tessera_vfs::Vfs;

use super::TmpfsType;

fn proc_with(data: &[u8]) -> Process {
    let vfs = Vfs::new();
    vfs.fstypes
        .register(Arc::new(TmpfsType::default()))
        .unwrap();
    let root = vfs
        .mount_disconnected(
            &Credentials::root(),
            "tmpfs",
            b"none",
            MountFlags::empty(),
            data,
        )
        .unwrap();
    let ns = vfs.new_namespace(root).unwrap();
    Process::new(vfs, ns, Credentials::root())
}

#[test]
fn sparse_files_and_holes() {
    let p = proc_with(b"mode=0755");
    let fd = p
        .openat(
            AT_FDCWD,
            b"/f",
            OpenFlags::O_RDWR | OpenFlags::O_CREAT,
            0o644,
        )
        .unwrap();
    assert_eq!(p.pwrite(fd, b"x", 3 * 4096 + 10).unwrap(), 1);
    assert_eq!(p.lseek(fd, 0, 3).unwrap(), 3 * 4096);
    assert_eq!(p.lseek(fd, 0, 4).unwrap(), 0);
    assert_eq!(p.lseek(fd, 3 * 4096 + 11, 3).unwrap_err(), Errno::ENXIO);
    let mut b = [9u8; 4];
    assert_eq!(p.pread(fd, &mut b, 4096).unwrap(), 4);
    assert_eq!(b, [0; 4]);
}

#[test]
fn size_limit_gives_partial_write_then_enospc() {
    let p = proc_with(b"size=8k");
    let fd = p
        .openat(
            AT_FDCWD,
            b"/f",
            OpenFlags::O_RDWR | OpenFlags::O_CREAT,
            0o644,
        )
        .unwrap();
    let big = vec![7u8; 10000];
    assert_eq!(p.write(fd, &big).unwrap(), 8192);
    assert_eq!(p.write(fd, b"more").unwrap_err(), Errno::ENOSPC);
    let mut back = vec![0u8; 8192];
    assert_eq!(p.pread(fd, &mut back, 0).unwrap(), 8192);
    assert!(back.iter().all(|&b| b == 7));
    p.ftruncate(fd, 0).unwrap();
    assert_eq!(p.write(fd, b"again").unwrap(), 5);
}

#[test]
fn inode_limit() {
    let p = proc_with(b"nr_inodes=3");
    p.mkdirat(AT_FDCWD, b"/a", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/b", 0o755).unwrap();
    assert_eq!(
        p.mkdirat(AT_FDCWD, b"/c", 0o755).unwrap_err(),
        Errno::ENOSPC
    );
    p.unlinkat(AT_FDCWD, b"/a", AtFlags::AT_REMOVEDIR).unwrap();
    p.mkdirat(AT_FDCWD, b"/c", 0o755).unwrap();
}

#[test]
fn bad_options_are_einval() {
    let vfs = Vfs::new();
    vfs.fstypes
        .register(Arc::new(TmpfsType::default()))
        .unwrap();
    for bad in [
        &b"bogus=1"[..],
        b"size=12q",
        b"mode=99",
        b"size",
        b"uid=x",
        b"size=200%",
    ] {
        let r = vfs.mount_disconnected(
            &Credentials::root(),
            "tmpfs",
            b"none",
            MountFlags::empty(),
            bad,
        );
        assert_eq!(
            r.err(),
            Some(Errno::EINVAL),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Memory per empty file is a target of the core (≤ 400 bytes, see
/// BENCHMARKS.md): a bigger inode or dentry moves every file to the next
/// allocator size class. (The dentry keeps a short name inline, which
/// costs it 8 bytes and saves the name's own allocation.)
#[test]
fn inode_and_dentry_stay_small() {
    assert!(std::mem::size_of::<super::TmpInode>() <= 152);
    assert!(std::mem::size_of::<tessera_vfs::dentry::Dentry>() <= 80);
    assert!(std::mem::size_of::<tessera_vfs::dentry::Name>() <= 24);
}
