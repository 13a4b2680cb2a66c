use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::inode::{Inode, NewNode};
use tessera_vfs::process::Process;
use tessera_vfs::Vfs;

use super::{TmpInode, TmpfsType};

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
        b"size=+1",
        b"nr_inodes=1%",
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
/// costs it 8 bytes and saves the name's own allocation; its copy of the
/// directory's cache id takes it from 80 to 88 bytes, 104 with the `Arc`
/// counts, which glibc serves from the same 112-byte chunks as 96.)
#[test]
fn inode_and_dentry_stay_small() {
    assert!(std::mem::size_of::<super::TmpInode>() <= 152);
    assert!(std::mem::size_of::<tessera_vfs::dentry::Dentry>() <= 88);
    assert!(std::mem::size_of::<tessera_vfs::dentry::Name>() <= 24);
}

/// `stat` reads the link count and times without a lock (`SeqAttrs`): it
/// must never see part of one write and part of another. The writer sets
/// the link count, the seconds of mtime and ctime and (but for the size of
/// a second) their nanoseconds of each write to the same k, under the lock
/// as every writer does; a torn read shows two different ones.
#[test]
fn stat_never_sees_half_a_write() {
    let vfs = Vfs::new();
    vfs.fstypes
        .register(Arc::new(TmpfsType::default()))
        .unwrap();
    let mount = vfs
        .mount_disconnected(
            &Credentials::root(),
            "tmpfs",
            b"none",
            MountFlags::empty(),
            b"",
        )
        .unwrap();
    let root = mount.root().inode().clone();
    let fs = TmpInode::downcast(&root).unwrap().fs();
    let node = NewNode {
        ftype: FileType::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        rdev: DevId::default(),
        target: &[],
    };
    let file = TmpInode::new(fs, &node, fs.now()).unwrap();
    let set = |k: i64| {
        let t = Timespec {
            sec: k,
            nsec: (k % 1_000_000_000) as u32,
        };
        let mut m = file.write_meta();
        m.nlink = k as u32;
        m.mtime = t;
        m.ctime = t;
    };
    set(1);
    // The writer runs at least `WRITES` writes and until the reader has
    // read `READS` times and seen `SEEN` different writes, so the two
    // overlap whatever the scheduler (or a loaded machine) does.
    const WRITES: i64 = 100_000;
    const READS: u64 = 100_000;
    const SEEN: u64 = 1_000;
    let (done, read_enough) = (AtomicBool::new(false), AtomicBool::new(false));
    let (reads, seen) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut seen, mut last) = (0u64, 0u64, 0);
            while !done.load(Ordering::Acquire) {
                let st = file.stat();
                assert_eq!(st.mtime, st.ctime);
                assert_eq!(st.mtime.nsec as i64, st.mtime.sec % 1_000_000_000);
                assert_eq!(st.nlink as i64, st.mtime.sec);
                assert!(st.mtime.sec >= last, "went back");
                seen += u64::from(st.mtime.sec != last);
                last = st.mtime.sec;
                reads += 1;
                if reads >= READS && seen >= SEEN {
                    read_enough.store(true, Ordering::Release);
                }
            }
            (reads, seen)
        });
        let mut k = 1;
        // (A reader that failed has finished: its panic is reported below.)
        while k < WRITES || !(read_enough.load(Ordering::Acquire) || reader.is_finished()) {
            k += 1;
            set(k);
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert!(reads >= READS && seen >= SEEN);
    let st = file.stat();
    assert!(st.nlink as i64 >= WRITES);
    assert_eq!(st.nlink as i64, st.mtime.sec);
}

/// The size and block count `stat` reads from atomics follow every change
/// of the pages: write, truncate, allocate, punch a hole.
#[test]
fn stat_follows_size_and_blocks() {
    let p = proc_with(b"");
    let fd = p
        .openat(
            AT_FDCWD,
            b"/f",
            OpenFlags::O_RDWR | OpenFlags::O_CREAT,
            0o644,
        )
        .unwrap();
    let sb = |p: &Process| {
        let st = p.fstat(fd).unwrap();
        (st.size, st.blocks)
    };
    assert_eq!(sb(&p), (0, 0));
    assert_eq!(p.pwrite(fd, &[1; 5000], 0).unwrap(), 5000);
    assert_eq!(sb(&p), (5000, 16));
    assert_eq!(p.pwrite(fd, b"x", 10 * 4096).unwrap(), 1);
    assert_eq!(sb(&p), (10 * 4096 + 1, 24));
    p.ftruncate(fd, 4096).unwrap();
    assert_eq!(sb(&p), (4096, 8));
    p.fallocate(fd, FallocFlags::empty(), 0, 3 * 4096).unwrap();
    assert_eq!(sb(&p), (3 * 4096, 24));
    p.fallocate(fd, FallocFlags::FALLOC_FL_KEEP_SIZE, 20 * 4096, 4096)
        .unwrap();
    assert_eq!(sb(&p), (3 * 4096, 32));
    let punch = FallocFlags::FALLOC_FL_PUNCH_HOLE | FallocFlags::FALLOC_FL_KEEP_SIZE;
    p.fallocate(fd, punch, 4096, 4096).unwrap();
    assert_eq!(sb(&p), (3 * 4096, 24));
    // An append goes at the size, which `stat` then reports moved on.
    let afd = p
        .openat(
            AT_FDCWD,
            b"/f",
            OpenFlags::O_WRONLY | OpenFlags::O_APPEND,
            0,
        )
        .unwrap();
    assert_eq!(p.write(afd, b"yz").unwrap(), 2);
    assert_eq!(sb(&p), (3 * 4096 + 2, 32));
    p.ftruncate(fd, 0).unwrap();
    assert_eq!(sb(&p), (0, 0));
    // A directory's size counts its entries.
    p.mkdirat(AT_FDCWD, b"/d", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/d/a", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/d/b", 0o755).unwrap();
    let st = p.stat(b"/d").unwrap();
    assert_eq!((st.size, st.nlink), (40, 4));
    p.unlinkat(AT_FDCWD, b"/d/a", AtFlags::AT_REMOVEDIR)
        .unwrap();
    let st = p.stat(b"/d").unwrap();
    assert_eq!((st.size, st.nlink), (20, 3));
}
