//! The `verity` filesystem type over a tmpfs lower tree, all through the
//! VFS `Process` API: reads, tamper detection, block-boundary reads,
//! `EROFS` on every change, the fs-verity ioctls and mount options.
#![cfg(unix)]

use std::sync::Arc;

use parking_lot::Mutex;
use tessera_fsimpl::tmpfs::TmpfsType;
use tessera_fsimpl::verity::build_tree;
use tessera_fsimpl::verity::dir::{EntryKind, Manifest};
use tessera_fsimpl::verity::fs::{
    sign_lower, VerityType, ENABLE_ARG_SIZE, FS_IOC_ENABLE_VERITY, FS_IOC_GETFLAGS,
    FS_IOC_MEASURE_VERITY, FS_VERITY_FL,
};
use tessera_fsimpl::verity::{HashAlg, MerkleParams};
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::process::Process;
use tessera_vfs::Vfs;

const RO: OpenFlags = OpenFlags::O_RDONLY;

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Contents of the lower tree's files.
struct Files {
    a: Vec<u8>,
    big: Vec<u8>,
    huge: Vec<u8>,
}

fn files() -> Files {
    Files {
        a: b"hello, verity\n".to_vec(),
        big: pattern(100_000, 1),
        // Over 128 blocks of 4 KiB: two tree levels with SHA-256.
        huge: pattern(600_000, 2),
    }
}

struct Setup {
    p: Process,
    manifest: Manifest,
    files: Files,
    violations: Arc<Mutex<Vec<String>>>,
}

fn process(violations: &Arc<Mutex<Vec<String>>>) -> Process {
    let vfs = Vfs::new();
    vfs.fstypes
        .register(Arc::new(TmpfsType::default()))
        .unwrap();
    let seen = violations.clone();
    vfs.fstypes
        .register(Arc::new(VerityType::with_violation_hook(Arc::new(
            move |what: &str| seen.lock().push(what.to_string()),
        ))))
        .unwrap();
    let root = vfs
        .mount_disconnected(
            &Credentials::root(),
            "tmpfs",
            b"none",
            MountFlags::empty(),
            b"mode=0755",
        )
        .unwrap();
    let ns = vfs.new_namespace(root).unwrap();
    let p = Process::new(vfs, ns, Credentials::root());
    p.umask(0);
    p
}

fn write_file(p: &Process, path: &[u8], data: &[u8], mode: u32) {
    let fd = p
        .openat(
            AT_FDCWD,
            path,
            OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_TRUNC,
            mode,
        )
        .unwrap();
    let mut done = 0;
    while done < data.len() {
        done += p.pwrite(fd, &data[done..], done as i64).unwrap();
    }
    p.close(fd).unwrap();
}

/// `dir/`: `a.txt`, `big.bin`, `huge.bin`, `exec.sh` (0755), `fifo`,
/// `sub/empty`, `sub/link -> ../a.txt`, `sub/deeper/`, `sub2/`.
fn make_tree(p: &Process, dir: &str, f: &Files) {
    let at = |s: &str| format!("{dir}/{s}").into_bytes();
    p.mkdirat(AT_FDCWD, dir.as_bytes(), 0o755).unwrap();
    for d in ["sub", "sub/deeper", "sub2"] {
        p.mkdirat(AT_FDCWD, &at(d), 0o755).unwrap();
    }
    write_file(p, &at("a.txt"), &f.a, 0o644);
    write_file(p, &at("big.bin"), &f.big, 0o644);
    write_file(p, &at("huge.bin"), &f.huge, 0o600);
    write_file(p, &at("exec.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write_file(p, &at("sub/empty"), b"", 0o644);
    p.symlinkat(b"../a.txt", AT_FDCWD, &at("sub/link")).unwrap();
    p.mknodat(AT_FDCWD, &at("fifo"), S_IFIFO | 0o644, DevId::default())
        .unwrap();
}

fn sign(p: &Process, dir: &str, params: MerkleParams) -> Manifest {
    let fd = p
        .openat(AT_FDCWD, dir.as_bytes(), RO | OpenFlags::O_DIRECTORY, 0)
        .unwrap();
    let vd = p.file(fd).unwrap().location().clone();
    p.close(fd).unwrap();
    sign_lower(p.vfs(), &vd, params).unwrap()
}

fn hash_of(m: &Manifest) -> String {
    format!("{}:{}", m.params.alg().name(), m.root_hash().to_hex())
}

fn mount(p: &Process, target: &str, data: &str) -> Result<()> {
    let _ = p.mkdirat(AT_FDCWD, target.as_bytes(), 0o755);
    p.mount(
        b"none",
        target.as_bytes(),
        b"verity",
        MountFlags::empty(),
        data.as_bytes(),
    )
}

/// A signed tree at `/lower` mounted at `/v` with `extra` options.
fn setup_with(params: MerkleParams, extra: &str) -> Setup {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let p = process(&violations);
    let files = files();
    make_tree(&p, "/lower", &files);
    let manifest = sign(&p, "/lower", params);
    mount(
        &p,
        "/v",
        &format!("lower_path=/lower,root_hash={}{extra}", hash_of(&manifest)),
    )
    .unwrap();
    Setup {
        p,
        manifest,
        files,
        violations,
    }
}

fn setup() -> Setup {
    setup_with(MerkleParams::default_sha256(), "")
}

fn read_all(p: &Process, path: &str) -> Result<Vec<u8>> {
    let fd = p.openat(AT_FDCWD, path.as_bytes(), RO, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let res = loop {
        match p.read(fd, &mut buf) {
            Ok(0) => break Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    p.close(fd).unwrap();
    res
}

fn pread(p: &Process, fd: i32, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = p.pread(fd, &mut buf[done..], (off + done as u64) as i64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn names(p: &Process, path: &str) -> Result<Vec<Vec<u8>>> {
    let fd = p.openat(AT_FDCWD, path.as_bytes(), RO | OpenFlags::O_DIRECTORY, 0)?;
    let r = p.getdents(fd);
    p.close(fd).unwrap();
    let mut v: Vec<Vec<u8>> = r?.iter().map(|(n, _)| n.to_vec()).collect();
    v.sort();
    Ok(v)
}

fn flip(p: &Process, path: &str, off: u64) {
    let fd = p
        .openat(AT_FDCWD, path.as_bytes(), OpenFlags::O_RDWR, 0)
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(p.pread(fd, &mut b, off as i64).unwrap(), 1, "{path}@{off}");
    b[0] ^= 0x10;
    p.pwrite(fd, &b, off as i64).unwrap();
    p.close(fd).unwrap();
}

fn object(m: &Manifest, file: &str, ext: &str) -> String {
    let path: Vec<Vec<u8>> = file.split('/').map(|c| c.as_bytes().to_vec()).collect();
    let e = m.entries.iter().find(|e| e.path == path).unwrap();
    let EntryKind::File { digest, .. } = &e.kind else {
        panic!("{file} is not a file");
    };
    format!("/lower/.tessera-verity/objects/{}.{ext}", digest.to_hex())
}

/// What must still work after a tamper of something else.
fn untouched_ok(s: &Setup) {
    assert_eq!(read_all(&s.p, "/v/a.txt").unwrap(), s.files.a);
}

#[test]
fn reads_everything_as_signed() {
    let s = setup();
    let p = &s.p;
    let top: Vec<&[u8]> = vec![
        b".",
        b"..",
        b"a.txt",
        b"big.bin",
        b"exec.sh",
        b"fifo",
        b"huge.bin",
        b"sub",
        b"sub2",
    ];
    assert_eq!(names(p, "/v").unwrap(), top);
    let sub: Vec<&[u8]> = vec![b".", b"..", b"deeper", b"empty", b"link"];
    assert_eq!(names(p, "/v/sub").unwrap(), sub);
    assert_eq!(names(p, "/v/sub2").unwrap().len(), 2);
    assert_eq!(read_all(p, "/v/a.txt").unwrap(), s.files.a);
    assert_eq!(read_all(p, "/v/big.bin").unwrap(), s.files.big);
    assert_eq!(read_all(p, "/v/huge.bin").unwrap(), s.files.huge);
    assert_eq!(read_all(p, "/v/sub/empty").unwrap(), b"");
    assert_eq!(read_all(p, "/v/sub/link").unwrap(), s.files.a);
    assert_eq!(p.readlinkat(AT_FDCWD, b"/v/sub/link").unwrap(), b"../a.txt");
    // The store is hidden, whatever the way in.
    assert_eq!(p.stat(b"/v/.tessera-verity").unwrap_err(), Errno::ENOENT);
    let st = p.stat(b"/v/huge.bin").unwrap();
    assert_eq!(st.mode, S_IFREG | 0o600);
    assert_eq!(st.size, s.files.huge.len() as u64);
    assert_eq!(p.stat(b"/v/exec.sh").unwrap().mode, S_IFREG | 0o755);
    assert_eq!(p.stat(b"/v").unwrap().mode, S_IFDIR | 0o755);
    let l = p
        .fstatat(AT_FDCWD, b"/v/sub/link", AtFlags::AT_SYMLINK_NOFOLLOW)
        .unwrap();
    assert_eq!((l.mode & S_IFMT, l.size), (S_IFLNK, 8));
    assert_eq!(p.stat(b"/v/fifo").unwrap().mode, S_IFIFO | 0o644);
    // lseek(SEEK_END) uses the signed size.
    let fd = p.openat(AT_FDCWD, b"/v/big.bin", RO, 0).unwrap();
    assert_eq!(p.lseek(fd, 0, 2).unwrap(), 100_000);
    assert!(s.violations.lock().is_empty());
    assert!(String::from_utf8_lossy(&p.mountinfo()).contains(&hash_of(&s.manifest)));
}

#[test]
fn reads_at_block_boundaries() {
    for (params, file) in [
        (MerkleParams::default_sha256(), "huge.bin"),
        (
            MerkleParams::new(HashAlg::Sha512, 1024, b"NaCl").unwrap(),
            "big.bin",
        ),
    ] {
        let s = setup_with(params, "");
        let data = if file == "huge.bin" {
            &s.files.huge
        } else {
            &s.files.big
        };
        let bs = params.block_size() as u64;
        let size = data.len() as u64;
        let per = (params.block_size() / params.alg().digest_size()) as u64;
        let fd =
            s.p.openat(AT_FDCWD, format!("/v/{file}").as_bytes(), RO, 0)
                .unwrap();
        let mut offs = vec![0, size - 1, size, size + 1, size / 2];
        for k in [1, 2, 3, per - 1, per, per + 1, size / bs] {
            for d in [-1i64, 0, 1] {
                offs.push((k * bs).saturating_add_signed(d));
            }
        }
        let lens = [
            0usize,
            1,
            2,
            bs as usize - 1,
            bs as usize,
            bs as usize + 1,
            2 * bs as usize + 3,
        ];
        for &off in &offs {
            for &len in &lens {
                let got = pread(&s.p, fd, off, len).unwrap();
                let want = &data[(off.min(size) as usize)..((off + len as u64).min(size) as usize)];
                assert_eq!(got, want, "{file} off {off} len {len}");
            }
        }
    }
}

#[test]
fn data_block_flip_is_caught_where_it_is_read() {
    let s = setup();
    let fd = s.p.openat(AT_FDCWD, b"/v/huge.bin", RO, 0).unwrap();
    // Read once first: the tree blocks are now cached, the data is not.
    assert_eq!(pread(&s.p, fd, 0, 600_000).unwrap(), s.files.huge);
    flip(&s.p, "/lower/huge.bin", 3 * 4096 + 7);
    assert_eq!(pread(&s.p, fd, 3 * 4096, 1), Err(Errno::EIO));
    assert_eq!(pread(&s.p, fd, 3 * 4096 + 4000, 10), Err(Errno::EIO));
    // The blocks around it still verify.
    assert_eq!(
        pread(&s.p, fd, 0, 3 * 4096).unwrap(),
        s.files.huge[..3 * 4096]
    );
    assert_eq!(
        pread(&s.p, fd, 4 * 4096, 4096).unwrap(),
        s.files.huge[4 * 4096..5 * 4096]
    );
    // A fresh open reads the same way.
    assert_eq!(read_all(&s.p, "/v/huge.bin"), Err(Errno::EIO));
    untouched_ok(&s);
    assert_eq!(read_all(&s.p, "/v/big.bin").unwrap(), s.files.big);
}

#[test]
fn tree_block_flip_is_caught_on_first_read() {
    let s = setup();
    // huge.bin: 147 data blocks; the tree is the top block, then two
    // level-0 blocks. Corrupt the second level-0 block (data blocks 128..).
    flip(&s.p, &object(&s.manifest, "huge.bin", "tree"), 2 * 4096 + 5);
    let fd = s.p.openat(AT_FDCWD, b"/v/huge.bin", RO, 0).unwrap();
    assert_eq!(pread(&s.p, fd, 0, 4096).unwrap(), s.files.huge[..4096]);
    assert_eq!(pread(&s.p, fd, 130 * 4096, 1), Err(Errno::EIO));
    // And the top block.
    let s = setup();
    flip(&s.p, &object(&s.manifest, "huge.bin", "tree"), 100);
    assert_eq!(read_all(&s.p, "/v/huge.bin"), Err(Errno::EIO));
    untouched_ok(&s);
}

#[test]
fn descriptor_flip_is_caught_at_open() {
    let s = setup();
    flip(&s.p, &object(&s.manifest, "big.bin", "desc"), 20);
    assert_eq!(s.p.openat(AT_FDCWD, b"/v/big.bin", RO, 0), Err(Errno::EIO));
    untouched_ok(&s);
    // A missing descriptor too.
    let s = setup();
    s.p.unlinkat(
        AT_FDCWD,
        object(&s.manifest, "big.bin", "desc").as_bytes(),
        AtFlags::empty(),
    )
    .unwrap();
    assert_eq!(read_all(&s.p, "/v/big.bin"), Err(Errno::EIO));
    untouched_ok(&s);
}

#[test]
fn manifest_flip_fails_the_mount() {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let p = process(&violations);
    make_tree(&p, "/lower", &files());
    let m = sign(&p, "/lower", MerkleParams::default_sha256());
    flip(&p, "/lower/.tessera-verity/manifest", 70);
    let data = format!("lower_path=/lower,root_hash={}", hash_of(&m));
    assert_eq!(mount(&p, "/v", &data), Err(Errno::EIO));
    assert!(violations.lock().is_empty(), "action=error calls no hook");
    assert_eq!(
        mount(&p, "/v", &format!("{data},action=panic")),
        Err(Errno::EIO)
    );
    assert_eq!(violations.lock().len(), 1);
}

#[test]
fn added_removed_renamed_files_are_caught() {
    // Added.
    let s = setup();
    write_file(&s.p, b"/lower/sub2/new", b"x", 0o644);
    assert_eq!(names(&s.p, "/v/sub2"), Err(Errno::EIO));
    assert_eq!(s.p.stat(b"/v/sub2/new").unwrap_err(), Errno::EIO);
    untouched_ok(&s);
    // Removed.
    let s = setup();
    s.p.unlinkat(AT_FDCWD, b"/lower/sub/empty", AtFlags::empty())
        .unwrap();
    assert_eq!(names(&s.p, "/v/sub"), Err(Errno::EIO));
    assert_eq!(s.p.stat(b"/v/sub/empty").unwrap_err(), Errno::EIO);
    assert_eq!(
        s.p.readlinkat(AT_FDCWD, b"/v/sub/link").unwrap(),
        b"../a.txt"
    );
    untouched_ok(&s);
    // Renamed, after the old name was looked up and cached.
    let s = setup();
    assert_eq!(read_all(&s.p, "/v/big.bin").unwrap(), s.files.big);
    s.p.renameat2(
        AT_FDCWD,
        b"/lower/big.bin",
        AT_FDCWD,
        b"/lower/big2.bin",
        RenameFlags::empty(),
    )
    .unwrap();
    assert_eq!(s.p.stat(b"/v/big.bin").unwrap_err(), Errno::EIO);
    assert_eq!(s.p.stat(b"/v/big2.bin").unwrap_err(), Errno::EIO);
    assert_eq!(names(&s.p, "/v"), Err(Errno::EIO));
    untouched_ok(&s);
    // Swapped for a copy with other contents but the same attributes.
    let s = setup();
    assert_eq!(read_all(&s.p, "/v/big.bin").unwrap(), s.files.big);
    let mut other = s.files.big.clone();
    other[99_999] ^= 1;
    write_file(&s.p, b"/lower/big.tmp", &other, 0o644);
    s.p.renameat2(
        AT_FDCWD,
        b"/lower/big.tmp",
        AT_FDCWD,
        b"/lower/big.bin",
        RenameFlags::empty(),
    )
    .unwrap();
    assert_eq!(read_all(&s.p, "/v/big.bin"), Err(Errno::EIO));
    untouched_ok(&s);
}

#[test]
fn symlink_target_mode_and_owner_changes_are_caught() {
    let s = setup();
    s.p.unlinkat(AT_FDCWD, b"/lower/sub/link", AtFlags::empty())
        .unwrap();
    s.p.symlinkat(b"../big.bin", AT_FDCWD, b"/lower/sub/link")
        .unwrap();
    assert_eq!(s.p.readlinkat(AT_FDCWD, b"/v/sub/link"), Err(Errno::EIO));
    assert_eq!(read_all(&s.p, "/v/sub/link"), Err(Errno::EIO));
    untouched_ok(&s);

    let s = setup();
    // Looked up (and cached) before the change: revalidation compares again.
    assert_eq!(s.p.stat(b"/v/exec.sh").unwrap().mode, S_IFREG | 0o755);
    s.p.fchmodat(AT_FDCWD, b"/lower/exec.sh", 0o4755).unwrap();
    assert_eq!(s.p.stat(b"/v/exec.sh").unwrap_err(), Errno::EIO);
    assert_eq!(read_all(&s.p, "/v/exec.sh"), Err(Errno::EIO));
    untouched_ok(&s);

    let s = setup();
    s.p.fchownat(AT_FDCWD, b"/lower/sub", 1000, -1, AtFlags::empty())
        .unwrap();
    assert_eq!(names(&s.p, "/v/sub"), Err(Errno::EIO));
    assert_eq!(s.p.stat(b"/v/sub/empty").unwrap_err(), Errno::EIO);
    untouched_ok(&s);
}

#[test]
fn truncated_and_extended_files_are_caught() {
    for change in ["truncate", "extend"] {
        // Changed before any access: the lookup sees the size.
        let s = setup();
        let fd_early = s.p.openat(AT_FDCWD, b"/v/big.bin", RO, 0).unwrap();
        match change {
            "truncate" => s.p.truncate(b"/lower/big.bin", 50_000).unwrap(),
            _ => {
                let fd =
                    s.p.openat(
                        AT_FDCWD,
                        b"/lower/big.bin",
                        OpenFlags::O_WRONLY | OpenFlags::O_APPEND,
                        0,
                    )
                    .unwrap();
                s.p.write(fd, b"more").unwrap();
            }
        }
        assert_eq!(s.p.stat(b"/v/big.bin").unwrap_err(), Errno::EIO, "{change}");
        // A descriptor opened before the change: the read that reaches
        // the change fails, the data before it still verifies.
        assert_eq!(
            pread(&s.p, fd_early, 0, 4096).unwrap(),
            s.files.big[..4096],
            "{change}"
        );
        assert_eq!(
            pread(&s.p, fd_early, 0, 200_000),
            Err(Errno::EIO),
            "{change}"
        );
        untouched_ok(&s);
    }
}

#[test]
fn action_panic_calls_the_hook() {
    let s = setup_with(MerkleParams::default_sha256(), ",action=panic");
    assert_eq!(read_all(&s.p, "/v/big.bin").unwrap(), s.files.big);
    assert!(s.violations.lock().is_empty());
    flip(&s.p, "/lower/big.bin", 12_345);
    assert_eq!(read_all(&s.p, "/v/big.bin"), Err(Errno::EIO));
    let v = s.violations.lock().clone();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("/big.bin") && v[0].contains("data block 3"),
        "{v:?}"
    );
}

#[test]
fn every_change_is_erofs() {
    let s = setup();
    let p = &s.p;
    let rofs: Result<()> = Err(Errno::EROFS);
    assert_eq!(p.mkdirat(AT_FDCWD, b"/v/newdir", 0o755), rofs);
    assert_eq!(
        p.mknodat(AT_FDCWD, b"/v/newnode", S_IFIFO | 0o644, DevId::default()),
        rofs
    );
    assert_eq!(p.symlinkat(b"x", AT_FDCWD, b"/v/newlink"), rofs);
    assert_eq!(
        p.linkat(
            AT_FDCWD,
            b"/v/a.txt",
            AT_FDCWD,
            b"/v/hard",
            AtFlags::empty()
        ),
        rofs
    );
    assert_eq!(p.unlinkat(AT_FDCWD, b"/v/a.txt", AtFlags::empty()), rofs);
    assert_eq!(
        p.unlinkat(AT_FDCWD, b"/v/sub2", AtFlags::AT_REMOVEDIR),
        rofs
    );
    assert_eq!(
        p.renameat2(
            AT_FDCWD,
            b"/v/a.txt",
            AT_FDCWD,
            b"/v/b.txt",
            RenameFlags::empty()
        ),
        rofs
    );
    for flags in [
        OpenFlags::O_WRONLY,
        OpenFlags::O_RDWR,
        OpenFlags::O_RDONLY | OpenFlags::O_TRUNC,
        OpenFlags::O_WRONLY | OpenFlags::O_APPEND,
    ] {
        assert_eq!(
            p.openat(AT_FDCWD, b"/v/a.txt", flags, 0),
            Err(Errno::EROFS),
            "{flags:?}"
        );
    }
    assert_eq!(
        p.openat(
            AT_FDCWD,
            b"/v/created",
            OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
            0o644
        ),
        Err(Errno::EROFS)
    );
    assert_eq!(p.fchmodat(AT_FDCWD, b"/v/a.txt", 0o600), rofs);
    assert_eq!(
        p.fchownat(AT_FDCWD, b"/v/a.txt", 5, 5, AtFlags::empty()),
        rofs
    );
    assert_eq!(p.truncate(b"/v/a.txt", 0), rofs);
    assert_eq!(
        p.utimensat(
            AT_FDCWD,
            b"/v/a.txt",
            TimeSpec::Now,
            TimeSpec::Now,
            AtFlags::empty()
        ),
        rofs
    );
    assert_eq!(
        p.setxattr(b"/v/a.txt", b"user.x", b"1", XattrFlags::empty(), true),
        rofs
    );
    assert_eq!(p.removexattr(b"/v/a.txt", b"user.x", true), rofs);
    let fd = p.openat(AT_FDCWD, b"/v/a.txt", RO, 0).unwrap();
    assert_eq!(p.fchmod(fd, 0o600), rofs);
    // Nothing changed below.
    assert_eq!(names(p, "/v").unwrap().len(), 9);
    assert_eq!(read_all(p, "/v/a.txt").unwrap(), s.files.a);
    assert!(s.violations.lock().is_empty());
}

fn measure(p: &Process, fd: i32, cap: u16) -> Result<(u16, Vec<u8>)> {
    let mut arg = vec![0u8; 4 + 64];
    arg[2..4].copy_from_slice(&cap.to_ne_bytes());
    p.ioctl(fd, FS_IOC_MEASURE_VERITY, &mut arg)?;
    let alg = u16::from_ne_bytes([arg[0], arg[1]]);
    let size = u16::from_ne_bytes([arg[2], arg[3]]) as usize;
    Ok((alg, arg[4..4 + size].to_vec()))
}

fn getflags(p: &Process, fd: i32) -> u32 {
    let mut arg = [0u8; 8];
    p.ioctl(fd, FS_IOC_GETFLAGS, &mut arg).unwrap();
    u32::from_ne_bytes([arg[0], arg[1], arg[2], arg[3]])
}

/// The digest `fsverity digest` prints for `data`, if the tool is there.
fn tool_digest(data: &[u8], params: &MerkleParams) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("tessera-verity-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("f-{}", data.len()));
    std::fs::write(&path, data).ok()?;
    let out = std::process::Command::new("fsverity")
        .arg("digest")
        .arg(format!("--hash-alg={}", params.alg().name()))
        .arg(format!("--block-size={}", params.block_size()))
        .arg(&path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    // Absent tool: nothing to compare with. Present but failing: a bug.
    let out = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        other => other.unwrap(),
    };
    assert!(out.status.success(), "fsverity digest failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.split_whitespace().next().unwrap().to_string())
}

#[test]
fn measure_and_getflags() {
    for params in [
        MerkleParams::default_sha256(),
        MerkleParams::new(HashAlg::Sha512, 1024, b"").unwrap(),
    ] {
        let s = setup_with(params, "");
        let p = &s.p;
        for (name, data) in [
            ("big.bin", &s.files.big),
            ("huge.bin", &s.files.huge),
            ("a.txt", &s.files.a),
        ] {
            let fd = p
                .openat(AT_FDCWD, format!("/v/{name}").as_bytes(), RO, 0)
                .unwrap();
            let (alg, digest) = measure(p, fd, 64).unwrap();
            assert_eq!(alg, u16::from(params.alg().fsverity_id()));
            let want = build_tree(params, data).digest();
            assert_eq!(digest, want.as_bytes(), "{name}");
            if let Some(tool) = tool_digest(data, &params) {
                assert_eq!(
                    tool,
                    format!("{}:{}", params.alg().name(), want.to_hex()),
                    "{name}"
                );
            }
            assert_eq!(getflags(p, fd) & FS_VERITY_FL, FS_VERITY_FL);
            let small = params.alg().digest_size() as u16 - 1;
            assert_eq!(measure(p, fd, small), Err(Errno::EOVERFLOW));
            let mut arg = vec![0u8; ENABLE_ARG_SIZE];
            arg[0] = 1;
            arg[4] = 1;
            arg[9] = 0x10;
            assert_eq!(
                p.ioctl(fd, FS_IOC_ENABLE_VERITY, &mut arg),
                Err(Errno::EEXIST)
            );
            assert_eq!(p.ioctl(fd, 0x1234, &mut arg), Err(Errno::ENOTTY));
        }
        let fd = p
            .openat(AT_FDCWD, b"/v/sub", RO | OpenFlags::O_DIRECTORY, 0)
            .unwrap();
        assert_eq!(getflags(p, fd), 0);
        assert_eq!(measure(p, fd, 64), Err(Errno::ENODATA));
    }
}

fn enable_arg(alg: u8, block_size: u32, salt: &[u8]) -> Vec<u8> {
    let mut arg = vec![0u8; ENABLE_ARG_SIZE];
    arg[0..4].copy_from_slice(&1u32.to_ne_bytes());
    arg[4..8].copy_from_slice(&u32::from(alg).to_ne_bytes());
    arg[8..12].copy_from_slice(&block_size.to_ne_bytes());
    arg[12..16].copy_from_slice(&(salt.len() as u32).to_ne_bytes());
    arg.extend_from_slice(salt);
    arg
}

#[test]
fn enable_verity_signs_the_lower_tree() {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let p = process(&violations);
    let f = files();
    make_tree(&p, "/lower", &f);
    mount(&p, "/v", "lower_path=/lower").unwrap();
    // Unverified: the lower tree as it is, the store hidden.
    write_file(&p, b"/lower/late.txt", b"late", 0o644);
    assert_eq!(names(&p, "/v").unwrap().len(), 10);
    assert_eq!(read_all(&p, "/v/late.txt").unwrap(), b"late");
    let fd = p.openat(AT_FDCWD, b"/v/big.bin", RO, 0).unwrap();
    assert_eq!(getflags(&p, fd), 0);
    assert_eq!(measure(&p, fd, 64), Err(Errno::ENODATA));
    assert_eq!(p.mkdirat(AT_FDCWD, b"/v/x", 0o755), Err(Errno::EROFS));
    // Bad arguments change nothing.
    for (arg, e) in [
        (enable_arg(1, 4096, &[]).split_off(1), Errno::EFAULT),
        (enable_arg(9, 4096, &[]), Errno::EINVAL),
        (enable_arg(1, 3000, &[]), Errno::EINVAL),
        (enable_arg(1, 4096, &[7; 33]), Errno::EMSGSIZE),
    ] {
        let mut arg = arg;
        assert_eq!(p.ioctl(fd, FS_IOC_ENABLE_VERITY, &mut arg), Err(e));
    }
    let dirfd = p
        .openat(AT_FDCWD, b"/v/sub", RO | OpenFlags::O_DIRECTORY, 0)
        .unwrap();
    let mut arg = enable_arg(2, 2048, b"salt");
    assert_eq!(
        p.ioctl(dirfd, FS_IOC_ENABLE_VERITY, &mut arg),
        Err(Errno::EISDIR)
    );
    assert_eq!(p.ioctl(fd, FS_IOC_ENABLE_VERITY, &mut arg), Ok(0));
    assert_eq!(
        p.ioctl(fd, FS_IOC_ENABLE_VERITY, &mut arg),
        Err(Errno::EEXIST)
    );
    // Verified from now on, through the descriptor opened before.
    let params = MerkleParams::new(HashAlg::Sha512, 2048, b"salt").unwrap();
    assert_eq!(getflags(&p, fd), FS_VERITY_FL);
    let (_, d) = measure(&p, fd, 64).unwrap();
    assert_eq!(d, build_tree(params, &f.big).digest().as_bytes());
    assert_eq!(pread(&p, fd, 0, 200_000).unwrap(), f.big);
    // The root hash is shown, and mounts the same tree verified.
    let info = String::from_utf8_lossy(&p.mountinfo()).into_owned();
    let hash = info
        .split([',', ' ', '\n'])
        .find_map(|w| w.strip_prefix("root_hash="))
        .unwrap()
        .to_string();
    assert!(hash.starts_with("sha512:"), "{hash}");
    mount(&p, "/w", &format!("lower_path=/lower,root_hash={hash}")).unwrap();
    assert_eq!(read_all(&p, "/w/late.txt").unwrap(), b"late");
    assert_eq!(read_all(&p, "/w/huge.bin").unwrap(), f.huge);
    // Tampering is now caught by both.
    flip(&p, "/lower/big.bin", 5000);
    assert_eq!(pread(&p, fd, 4096, 10), Err(Errno::EIO));
    assert_eq!(read_all(&p, "/w/big.bin"), Err(Errno::EIO));
    assert_eq!(read_all(&p, "/v/a.txt").unwrap(), f.a);
}

#[test]
fn mount_options() {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let p = process(&violations);
    make_tree(&p, "/lower", &files());
    let m = sign(&p, "/lower", MerkleParams::default_sha256());
    let hex = m.root_hash().to_hex();
    let ok = format!("lower_path=/lower,root_hash={hex}");
    for (data, e) in [
        (format!("{ok},bogus=1"), Errno::EINVAL),
        (format!("{ok},action=reboot"), Errno::EINVAL),
        (format!("{ok},alg=md5"), Errno::EINVAL),
        (format!("{ok},alg=sha512"), Errno::EINVAL),
        (
            format!("lower_path=/lower,root_hash=sha512:{hex}"),
            Errno::EINVAL,
        ),
        ("lower_path=/lower,root_hash=zz".to_string(), Errno::EINVAL),
        (format!("root_hash={hex}"), Errno::EINVAL),
        (format!("lower_path=/nope,root_hash={hex}"), Errno::ENOENT),
        (
            format!("lower_path=/lower/a.txt,root_hash={hex}"),
            Errno::ENOTDIR,
        ),
        (
            format!("lower_path=/lower,root_hash={}", "0".repeat(64)),
            Errno::EIO,
        ),
    ] {
        assert_eq!(mount(&p, "/v", &data), Err(e), "{data}");
    }
    mount(&p, "/v", &format!("{ok},alg=sha256,action=error")).unwrap();
    assert_eq!(read_all(&p, "/v/a.txt").unwrap(), b"hello, verity\n");
    // A relative lower path is resolved from the mounter's directory.
    p.chdir(b"/").unwrap();
    mount(
        &p,
        "/v2",
        &format!("lower_path=lower,root_hash=sha256:{hex}"),
    )
    .unwrap();
    assert_eq!(names(&p, "/v2").unwrap().len(), 9);
}

/// Throughput of verified sequential reads through the VFS next to raw
/// hashing of the same bytes (run with `--release --ignored --nocapture`).
#[test]
#[ignore]
fn throughput_of_verified_reads() {
    use std::time::Instant;
    let violations = Arc::new(Mutex::new(Vec::new()));
    let p = process(&violations);
    let size = 256usize << 20;
    let data = pattern(size, 9);
    p.mkdirat(AT_FDCWD, b"/lower", 0o755).unwrap();
    write_file(&p, b"/lower/f", &data, 0o644);
    let t = Instant::now();
    let m = sign(&p, "/lower", MerkleParams::default_sha256());
    let build = t.elapsed();
    mount(
        &p,
        "/v",
        &format!("lower_path=/lower,root_hash={}", hash_of(&m)),
    )
    .unwrap();
    let fd = p.openat(AT_FDCWD, b"/v/f", RO, 0).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let lower = p.openat(AT_FDCWD, b"/lower/f", RO, 0).unwrap();
    // First pass fills the tree cache; the later ones are the measured ones.
    for pass in 0..3 {
        let t = Instant::now();
        let _ = HashAlg::Sha256.hash(&data);
        let raw = t.elapsed();
        let t = Instant::now();
        let mut off = 0;
        while off < size {
            off += p.pread(lower, &mut buf, off as i64).unwrap();
        }
        let plain = t.elapsed();
        let t = Instant::now();
        let mut off = 0;
        while off < size {
            off += p.pread(fd, &mut buf, off as i64).unwrap();
        }
        let read = t.elapsed();
        let mib = (size >> 20) as f64;
        println!(
            "pass {pass}: raw sha256 {:.0} MiB/s, plain tmpfs read {:.0} MiB/s, sign (through the VFS) {:.0} MiB/s, verified read {:.0} MiB/s ({:.0}% of raw)",
            mib / raw.as_secs_f64(),
            mib / plain.as_secs_f64(),
            mib / build.as_secs_f64(),
            mib / read.as_secs_f64(),
            100.0 * raw.as_secs_f64() / read.as_secs_f64()
        );
    }
}
