//! Concurrency behaviour test: several threads hammer one VFS with random
//! path operations, then the tree is checked for consistency.
//!
//! Six workers run for about three seconds, each from a fixed seed (a tiny
//! splitmix64 generator, so a run is reproducible up to thread scheduling).
//! Three of them share one [`Process`] (one descriptor table, one working
//! directory); the other three have a process of their own in the same VFS
//! and mount namespace, and also `chdir` and use relative paths. The
//! operations: mkdir, rmdir, create/open/write/read/close (some descriptors
//! are kept open across other operations), unlink, rename (plain,
//! `RENAME_NOREPLACE`, `RENAME_EXCHANGE`) across four top directories, link,
//! symlink, stat, getdents, chmod, ftruncate, `*at` calls on directory
//! descriptors, and mount/umount of small tmpfs instances and bind mounts.
//! Errors the calls return (`ENOENT`, `EEXIST`, `ENOTEMPTY`, `EBUSY`, ...)
//! are expected; `EIO`, `ENOSPC` (but from a mount past the mount limit),
//! and `EBADF` on a descriptor the thread owns are not.
//!
//! A watchdog fails the test if the workers (or the final check) have not
//! finished after 60 seconds: a probable deadlock, reported with the
//! operation each worker was in.
//!
//! Afterwards, with everything quiet:
//! - every mount in mountinfo sits where its path says (a mount whose mount
//!   point was removed would not);
//! - each process's `getcwd` works and names its working directory;
//! - every descriptor was closed;
//! - after unmounting everything, a walk of `/` with getdents + fstatat finds
//!   no name twice, every listed name stats, every directory has
//!   `nlink == 2 + subdirectories` and appears once, every other inode has
//!   `nlink ==` the number of names found for it;
//! - the root tmpfs (mounted with `nr_inodes`) counts exactly as many used
//!   inodes as the walk found names (tmpfs charges one per name), so no
//!   subtree was orphaned and no count was lost;
//! - no worker panicked.
//!
//! `targeted_*` tests below run two threads on one race each, for the bugs
//! written up in `tests/conc-findings.md`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_fsimpl::tmpfs::TmpfsType;
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::process::Process;
use tessera_vfs::Vfs;

/// The root tmpfs's inode limit: far above what the run uses, but set so
/// that `statfs` reports the used count.
const NR_INODES: u64 = 10_000_000;
/// How long the workers run.
const RUN_FOR: Duration = Duration::from_secs(3);
/// After this long the test reports a probable deadlock.
const WATCHDOG: Duration = Duration::from_secs(60);
const WORKERS: usize = 6;
/// Workers `0..SHARED` use the shared process; the others have their own.
const SHARED: usize = 3;
const TOPS: [&str; 4] = ["/d0", "/d1", "/d2", "/d3"];
/// The namespaces' mount limit: recursive binds reach it within the run
/// (Linux's default, 100,000, would spend the run copying mount trees).
const MAX_MOUNTS: usize = 4096;

/// A starting process like `tessera::ops::tessera::starting_process`, whose
/// root tmpfs also has an inode limit (so that statfs counts inodes).
fn new_process() -> Process {
    let vfs = Vfs::new();
    vfs.set_max_mounts(MAX_MOUNTS);
    vfs.fstypes
        .register(Arc::new(TmpfsType::default()))
        .unwrap();
    let data = format!("mode=0755,nr_inodes={NR_INODES}");
    let root = vfs
        .mount_disconnected(
            &Credentials::root(),
            "tmpfs",
            b"none",
            MountFlags::empty(),
            data.as_bytes(),
        )
        .unwrap();
    let ns = vfs.new_namespace(root).unwrap();
    Process::new(vfs, ns, Credentials::root())
}

/// A process in the same VFS and mount namespace as `p`.
fn sibling(p: &Process) -> Process {
    Process::new(p.vfs().clone(), p.namespace(), Credentials::root())
}

/// Inodes in use in the filesystem of `path`, by its `statfs`.
fn used_inodes(p: &Process, path: &[u8]) -> u64 {
    let fd = p.openat(AT_FDCWD, path, OpenFlags::O_PATH, 0).unwrap();
    let sf = p
        .file(fd)
        .unwrap()
        .location()
        .mount
        .fs()
        .ops()
        .statfs()
        .unwrap();
    p.close(fd).unwrap();
    assert_eq!(
        sf.files,
        NR_INODES,
        "statfs of {} does not report the inode limit",
        String::from_utf8_lossy(path)
    );
    sf.files - sf.ffree
}

/// splitmix64: small, and good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// Names at depth 2 (`/dX/<name>`): `n*` for anything, `m*` also mount slots.
const NAMES2: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "m0", "m1", "m2"];
const MOUNT_SLOTS: [&str; 3] = ["m0", "m1", "m2"];
/// Names at depth 3 (`/dX/<name2>/<name3>`).
const NAMES3: [&str; 3] = ["f0", "f1", "f2"];

/// A path of depth 2 or 3 below one of the top directories.
fn rand_path(r: &mut Rng) -> String {
    let top = r.pick(&TOPS);
    let n2 = r.pick(&NAMES2);
    if r.below(3) == 0 {
        format!("{top}/{n2}/{}", r.pick(&NAMES3))
    } else {
        format!("{top}/{n2}")
    }
}

/// A directory likely to exist: a top directory or a depth-2 path.
fn rand_dir(r: &mut Rng) -> String {
    let top = r.pick(&TOPS);
    if r.below(2) == 0 {
        top.to_string()
    } else {
        format!("{top}/{}", r.pick(&NAMES2))
    }
}

/// The operations, by number, for the watchdog's report.
const OP_NAMES: [&str; 24] = [
    "idle",
    "mkdir",
    "rmdir",
    "create",
    "open-read",
    "unlink",
    "rename",
    "rename-noreplace",
    "rename-exchange",
    "link",
    "symlink",
    "stat",
    "getdents",
    "chmod",
    "mount-tmpfs",
    "mount-bind",
    "umount",
    "dirfd-ops",
    "chdir-relative",
    "close-held",
    "use-held",
    "ftruncate",
    "done",
    "check",
];

#[derive(Default)]
struct Report {
    ops: u64,
    ok: u64,
    errnos: HashMap<(&'static str, Errno), u64>,
    failures: Vec<String>,
}

impl Report {
    fn note<T>(&mut self, op: &'static str, what: &str, r: Result<T>) -> Option<T> {
        self.ops += 1;
        match r {
            Ok(v) => {
                self.ok += 1;
                Some(v)
            }
            Err(e) => {
                // Recursive binds of a tree into itself double its mounts:
                // the namespace's mount limit (`MAX_MOUNTS`) is reached, and
                // a mount past it is ENOSPC, as on Linux.
                let mount_limit = e == Errno::ENOSPC && op.starts_with("mount");
                if matches!(e, Errno::EIO | Errno::ENOSPC | Errno::EFAULT) && !mount_limit {
                    self.failures.push(format!("{op} {what}: unexpected {e:?}"));
                }
                *self.errnos.entry((op, e)).or_default() += 1;
                None
            }
        }
    }
}

struct Worker<'a> {
    p: &'a Process,
    own_process: bool,
    r: Rng,
    held: Vec<(i32, bool)>,
    rep: Report,
    state: &'a AtomicU8,
}

impl Worker<'_> {
    fn set(&self, op: usize) -> &'static str {
        self.state.store(op as u8, Ordering::Relaxed);
        OP_NAMES[op]
    }

    fn hold(&mut self, fd: i32, is_dir: bool) {
        if self.held.len() >= 8 {
            let (old, _) = self.held.remove(0);
            let r = self.p.close(old);
            self.rep.note(
                "close",
                "held fd",
                r.map_err(|e| if e == Errno::EBADF { Errno::EIO } else { e }),
            );
        }
        self.held.push((fd, is_dir));
    }

    fn step(&mut self) {
        let p = self.p;
        let op = match self.r.below(100) {
            0..=8 => 1,
            9..=13 => 2,
            14..=25 => 3,
            26..=30 => 4,
            31..=37 => 5,
            38..=44 => 6,
            45..=47 => 7,
            48..=52 => 8,
            53..=57 => 9,
            58..=60 => 10,
            61..=66 => 11,
            67..=70 => 12,
            71..=72 => 13,
            73..=75 => 14,
            76..=78 => 15,
            79..=83 => 16,
            84..=88 => 17,
            89..=91 => 18,
            92..=94 => 19,
            95..=97 => 20,
            _ => 21,
        };
        let name = self.set(op);
        match op {
            1 => {
                let path = rand_path(&mut self.r);
                let r = p.mkdirat(AT_FDCWD, path.as_bytes(), 0o755);
                self.rep.note(name, &path, r);
            }
            2 => {
                let path = rand_path(&mut self.r);
                let r = p.unlinkat(AT_FDCWD, path.as_bytes(), AtFlags::AT_REMOVEDIR);
                self.rep.note(name, &path, r);
            }
            3 => {
                let path = rand_path(&mut self.r);
                let excl = if self.r.below(2) == 0 {
                    OpenFlags::O_EXCL
                } else {
                    OpenFlags::empty()
                };
                let r = p.openat(
                    AT_FDCWD,
                    path.as_bytes(),
                    OpenFlags::O_CREAT | OpenFlags::O_RDWR | excl,
                    0o644,
                );
                if let Some(fd) = self.rep.note(name, &path, r) {
                    let data = [self.r.below(256) as u8; 100];
                    let w = p.pwrite(fd, &data, self.r.below(8192) as i64);
                    if self
                        .rep
                        .note("pwrite", &path, w)
                        .is_some_and(|n| n != data.len())
                    {
                        self.rep.failures.push(format!("short pwrite on {path}"));
                    }
                    let mut buf = [0u8; 64];
                    let rd = p.pread(fd, &mut buf, 0);
                    self.rep.note(
                        "pread",
                        &path,
                        rd.map_err(|e| if e == Errno::EBADF { Errno::EIO } else { e }),
                    );
                    if self.r.below(3) == 0 {
                        self.hold(fd, false);
                    } else {
                        let c = p.close(fd);
                        self.rep.note("close", &path, c.map_err(|_| Errno::EIO));
                    }
                }
            }
            4 => {
                let path = rand_path(&mut self.r);
                let r = p.openat(AT_FDCWD, path.as_bytes(), OpenFlags::O_RDONLY, 0);
                if let Some(fd) = self.rep.note(name, &path, r) {
                    let st = p.fstat(fd).unwrap();
                    let is_dir = st.file_type() == Some(FileType::Directory);
                    if !is_dir {
                        let mut buf = [0u8; 256];
                        let rd = p.read(fd, &mut buf);
                        self.rep.note("read", &path, rd);
                    }
                    if self.r.below(2) == 0 {
                        self.hold(fd, is_dir);
                    } else {
                        let c = p.close(fd);
                        self.rep.note("close", &path, c.map_err(|_| Errno::EIO));
                    }
                }
            }
            5 => {
                let path = rand_path(&mut self.r);
                let r = p.unlinkat(AT_FDCWD, path.as_bytes(), AtFlags::empty());
                self.rep.note(name, &path, r);
            }
            6..=8 => {
                let a = rand_path(&mut self.r);
                let b = rand_path(&mut self.r);
                let flags = match op {
                    6 => RenameFlags::empty(),
                    7 => RenameFlags::RENAME_NOREPLACE,
                    _ => RenameFlags::RENAME_EXCHANGE,
                };
                let r = p.renameat2(AT_FDCWD, a.as_bytes(), AT_FDCWD, b.as_bytes(), flags);
                self.rep.note(name, &format!("{a} -> {b}"), r);
            }
            9 => {
                let a = rand_path(&mut self.r);
                let b = rand_path(&mut self.r);
                let r = p.linkat(
                    AT_FDCWD,
                    a.as_bytes(),
                    AT_FDCWD,
                    b.as_bytes(),
                    AtFlags::empty(),
                );
                self.rep.note(name, &format!("{a} -> {b}"), r);
            }
            10 => {
                // Targets are single names: a sibling, or nothing.
                let target = if self.r.below(4) == 0 {
                    "nowhere"
                } else {
                    self.r.pick(&NAMES2)
                };
                let path = rand_path(&mut self.r);
                let r = p.symlinkat(target.as_bytes(), AT_FDCWD, path.as_bytes());
                self.rep.note(name, &path, r);
            }
            11 => {
                let path = rand_path(&mut self.r);
                let flags = if self.r.below(2) == 0 {
                    AtFlags::AT_SYMLINK_NOFOLLOW
                } else {
                    AtFlags::empty()
                };
                let r = p.fstatat(AT_FDCWD, path.as_bytes(), flags);
                if let Some(st) = self.rep.note(name, &path, r) {
                    if st.file_type() == Some(FileType::Directory) && st.nlink < 2 {
                        // A live directory always has at least 2 (an rmdir racing
                        // with the stat may show 0, which is fine).
                        if st.nlink != 0 {
                            self.rep
                                .failures
                                .push(format!("stat {path}: directory with nlink {}", st.nlink));
                        }
                    }
                }
            }
            12 => {
                let path = rand_dir(&mut self.r);
                let r = p.openat(
                    AT_FDCWD,
                    path.as_bytes(),
                    OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                    0,
                );
                if let Some(fd) = self.rep.note(name, &path, r) {
                    let ents = p.getdents(fd).map(|d| d.into_vec());
                    if let Some(ents) = self.rep.note("getdents", &path, ents) {
                        let mut seen = HashSet::new();
                        for (n, _) in &ents {
                            if !seen.insert(n.clone()) {
                                self.rep.failures.push(format!(
                                    "getdents {path}: {} listed twice",
                                    String::from_utf8_lossy(n)
                                ));
                            }
                        }
                    }
                    let c = p.close(fd);
                    self.rep.note("close", &path, c.map_err(|_| Errno::EIO));
                }
            }
            13 => {
                let path = rand_path(&mut self.r);
                let mode = [0o755, 0o700, 0o644, 0o1777][self.r.below(4)];
                let r = p.fchmodat(AT_FDCWD, path.as_bytes(), mode);
                self.rep.note(name, &path, r);
            }
            14 => {
                let path = format!("{}/{}", self.r.pick(&TOPS), self.r.pick(&MOUNT_SLOTS));
                let r = p.mount(
                    b"tmp",
                    path.as_bytes(),
                    b"tmpfs",
                    MountFlags::empty(),
                    b"size=1m",
                );
                self.rep.note(name, &path, r);
            }
            15 => {
                let src = rand_dir(&mut self.r);
                let path = format!("{}/{}", self.r.pick(&TOPS), self.r.pick(&MOUNT_SLOTS));
                let rec = if self.r.below(4) == 0 {
                    MountFlags::MS_REC
                } else {
                    MountFlags::empty()
                };
                let r = p.mount(
                    src.as_bytes(),
                    path.as_bytes(),
                    b"",
                    MountFlags::MS_BIND | rec,
                    b"",
                );
                self.rep.note(name, &format!("{src} -> {path}"), r);
            }
            16 => {
                let path = format!("{}/{}", self.r.pick(&TOPS), self.r.pick(&MOUNT_SLOTS));
                let flags = if self.r.below(2) == 0 {
                    UmountFlags::MNT_DETACH
                } else {
                    UmountFlags::empty()
                };
                let r = p.umount2(path.as_bytes(), flags);
                self.rep.note(name, &path, r);
            }
            17 => {
                let dir = rand_dir(&mut self.r);
                let r = p.openat(
                    AT_FDCWD,
                    dir.as_bytes(),
                    OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                    0,
                );
                if let Some(fd) = self.rep.note(name, &dir, r) {
                    for _ in 0..4 {
                        let n = self.r.pick(&NAMES3);
                        let r = match self.r.below(5) {
                            0 => p.mkdirat(fd, n.as_bytes(), 0o755),
                            1 => p
                                .openat(
                                    fd,
                                    n.as_bytes(),
                                    OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                                    0o600,
                                )
                                .and_then(|f| p.close(f)),
                            2 => p.unlinkat(fd, n.as_bytes(), AtFlags::empty()),
                            3 => p.unlinkat(fd, n.as_bytes(), AtFlags::AT_REMOVEDIR),
                            _ => p.renameat2(
                                fd,
                                n.as_bytes(),
                                fd,
                                self.r.pick(&NAMES3).as_bytes(),
                                RenameFlags::empty(),
                            ),
                        };
                        self.rep.note(name, &format!("{dir}/{n}"), r);
                    }
                    let c = p.close(fd);
                    self.rep.note("close", &dir, c.map_err(|_| Errno::EIO));
                }
            }
            18 => {
                if !self.own_process {
                    return;
                }
                // Only into directories of the root tmpfs: a top directory, or
                // a depth-2 `n*` name that is a directory (not a symlink).
                let top = self.r.pick(&TOPS);
                let dir = if self.r.below(2) == 0 {
                    top.to_string()
                } else {
                    format!("{top}/{}", self.r.pick(&NAMES2[..5]))
                };
                let is_dir = p
                    .fstatat(AT_FDCWD, dir.as_bytes(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| s.file_type() == Some(FileType::Directory));
                if is_dir && self.rep.note(name, &dir, p.chdir(dir.as_bytes())).is_some() {
                    let n = self.r.pick(&NAMES3);
                    let r = match self.r.below(3) {
                        0 => p.mkdirat(AT_FDCWD, n.as_bytes(), 0o755),
                        1 => p.unlinkat(AT_FDCWD, n.as_bytes(), AtFlags::AT_REMOVEDIR),
                        _ => p.fstatat(AT_FDCWD, b"..", AtFlags::empty()).map(|_| ()),
                    };
                    self.rep.note(name, &format!("{dir} + {n}"), r);
                    let g = p.getcwd();
                    self.rep.note("getcwd", &dir, g);
                }
            }
            19 => {
                if !self.held.is_empty() {
                    let i = self.r.below(self.held.len());
                    let (fd, _) = self.held.remove(i);
                    let c = p.close(fd);
                    self.rep.note(name, "held fd", c.map_err(|_| Errno::EIO));
                }
            }
            20 => {
                if !self.held.is_empty() {
                    let (fd, is_dir) = self.held[self.r.below(self.held.len())];
                    let st = p.fstat(fd);
                    self.rep
                        .note(name, "fstat held fd", st.map_err(|_| Errno::EIO));
                    if is_dir {
                        let _ = p.lseek(fd, 0, 0);
                        // A held directory may have been removed since: ENOENT is fine.
                        let r = p.getdents(fd).map(|d| d.into_vec());
                        self.rep.note(
                            name,
                            "getdents held fd",
                            r.map_err(|e| if e == Errno::EBADF { Errno::EIO } else { e }),
                        );
                    } else {
                        let mut buf = [0u8; 128];
                        let r = p.pread(fd, &mut buf, 0);
                        self.rep.note(
                            name,
                            "pread held fd",
                            r.map_err(|e| if e == Errno::EBADF { Errno::EIO } else { e }),
                        );
                    }
                }
            }
            _ => {
                if let Some(&(fd, false)) = self.held.last() {
                    let r = p.ftruncate(fd, self.r.below(10000) as i64);
                    // Files opened read-only give EINVAL; EBADF would be a bug.
                    self.rep.note(
                        name,
                        "ftruncate held fd",
                        r.map_err(|e| if e == Errno::EBADF { Errno::EIO } else { e }),
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        for (fd, _) in std::mem::take(&mut self.held) {
            let c = self.p.close(fd);
            self.rep
                .note("close", "held fd at end", c.map_err(|_| Errno::EIO));
        }
        if self.own_process {
            // Leave the working directory where the check can find it.
            let _ = self.p.chdir(b"/");
        }
        self.set(22);
    }
}

/// One line of mountinfo: (id, parent id, mount point).
fn mounts(p: &Process) -> Vec<(u64, u64, String)> {
    String::from_utf8(p.mountinfo())
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[4].to_string(),
            )
        })
        .collect()
}

/// Whether `prefix` is a proper ancestor path of `path`.
fn is_proper_prefix(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path != "/";
    }
    path.len() > prefix.len() && path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'/'
}

/// Checks that every mount is where mountinfo says, then unmounts all but the root.
fn check_and_clear_mounts(p: &Process, failures: &mut Vec<String>) -> usize {
    let list = mounts(p);
    let root_id = list[0].0;
    let n = list.len();
    for (id, _, path) in &list[1..] {
        let at_path: Vec<u64> = list.iter().filter(|m| &m.2 == path).map(|m| m.0).collect();
        // A mount at an ancestor path (other than the root) may legitimately hide this one.
        let shadowed = list
            .iter()
            .any(|m| m.0 != root_id && is_proper_prefix(&m.2, path));
        match p.stat(path.as_bytes()) {
            Ok(st) if at_path.contains(&st.mnt_id) => {}
            _ if shadowed => {}
            Ok(st) => failures.push(format!("mount {id} listed at {path}, but {path} is in mount {} (its mount point is gone?)", st.mnt_id)),
            Err(e) => failures.push(format!("mount {id} listed at {path}, but stat({path}) gives {e:?} (mounted on a removed directory?)")),
        }
    }
    for _round in 0..1000 {
        let mut list = mounts(p);
        if list.len() <= 1 {
            break;
        }
        list.retain(|m| m.0 != root_id);
        list.sort_by_key(|m| std::cmp::Reverse(m.2.len()));
        for (_, _, path) in &list {
            let _ = p.umount2(path.as_bytes(), UmountFlags::MNT_DETACH);
        }
    }
    let left = mounts(p);
    if left.len() != 1 || left[0].0 != root_id {
        failures.push(format!("after unmounting everything but the root by path, mountinfo still lists {} mounts, e.g. {:?}", left.len(), &left[..left.len().min(4)]));
    }
    n
}

/// Walks the root tmpfs: (total names, failures appended).
fn check_tree(p: &Process, failures: &mut Vec<String>) -> u64 {
    let root_st = p.stat(b"/").unwrap();
    let root_mnt = root_st.mnt_id;
    let mut names = 0u64;
    // ino -> (nlink, names found, a path)
    let mut others: HashMap<u64, (u32, u32, String)> = HashMap::new();
    let mut dirs: HashMap<u64, String> = HashMap::new();
    dirs.insert(root_st.ino, "/".into());
    let mut stack = vec![("/".to_string(), root_st)];
    while let Some((dir, st)) = stack.pop() {
        let fd = match p.openat(
            AT_FDCWD,
            dir.as_bytes(),
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) => {
                failures.push(format!("open {dir}: {e:?}"));
                continue;
            }
        };
        let ents = p.getdents(fd).map(|d| d.into_vec()).unwrap();
        p.close(fd).unwrap();
        let mut seen = HashSet::new();
        let mut subdirs = 0;
        for (n, _) in ents {
            if !seen.insert(n.clone()) {
                failures.push(format!(
                    "{dir}: {} listed twice",
                    String::from_utf8_lossy(&n)
                ));
                continue;
            }
            if n == b"." || n == b".." {
                continue;
            }
            names += 1;
            let path = if dir == "/" {
                format!("/{}", String::from_utf8_lossy(&n))
            } else {
                format!("{dir}/{}", String::from_utf8_lossy(&n))
            };
            let cst = match p.fstatat(AT_FDCWD, path.as_bytes(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{path} is listed but stat gives {e:?}"));
                    continue;
                }
            };
            if cst.mnt_id != root_mnt {
                failures.push(format!(
                    "{path} is in mount {} after every mount was removed",
                    cst.mnt_id
                ));
            }
            if cst.file_type() == Some(FileType::Directory) {
                subdirs += 1;
                if let Some(other) = dirs.insert(cst.ino, path.clone()) {
                    failures.push(format!(
                        "directory inode {} has two names: {other} and {path}",
                        cst.ino
                    ));
                    continue;
                }
                stack.push((path, cst));
            } else {
                let e = others.entry(cst.ino).or_insert((cst.nlink, 0, path));
                e.1 += 1;
            }
        }
        if st.nlink != 2 + subdirs {
            failures.push(format!(
                "directory {dir}: nlink {} but {subdirs} subdirectories",
                st.nlink
            ));
        }
    }
    for (ino, (nlink, found, path)) in &others {
        if nlink != found {
            failures.push(format!(
                "inode {ino} ({path}): nlink {nlink} but {found} names found"
            ));
        }
    }
    names
}

fn run_random(seed_base: u64) -> Vec<String> {
    let main = Arc::new(new_process());
    for t in TOPS {
        main.mkdirat(AT_FDCWD, t.as_bytes(), 0o755).unwrap();
    }
    let own: Vec<Arc<Process>> = (SHARED..WORKERS)
        .map(|_| Arc::new(sibling(&main)))
        .collect();
    let states: Arc<Vec<AtomicU8>> = Arc::new((0..WORKERS).map(|_| AtomicU8::new(0)).collect());
    let scenario = {
        let main = main.clone();
        let own = own.clone();
        let states = states.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + RUN_FOR;
            let handles: Vec<_> = (0..WORKERS)
                .map(|i| {
                    let p = if i < SHARED {
                        main.clone()
                    } else {
                        own[i - SHARED].clone()
                    };
                    let states = states.clone();
                    std::thread::Builder::new()
                        .name(format!("worker{i}"))
                        .spawn(move || {
                            let mut w = Worker {
                                p: &p,
                                own_process: i >= SHARED,
                                r: Rng(seed_base ^ (0x1234_5678 * (i as u64 + 1))),
                                held: Vec::new(),
                                rep: Report::default(),
                                state: &states[i],
                            };
                            while Instant::now() < deadline {
                                for _ in 0..64 {
                                    w.step();
                                }
                            }
                            w.finish();
                            w.rep
                        })
                        .unwrap()
                })
                .collect();
            let mut failures = Vec::new();
            let mut total = Report::default();
            for (i, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(rep) => {
                        eprintln!("worker{i}: {} ops, {} ok", rep.ops, rep.ok);
                        total.ops += rep.ops;
                        total.ok += rep.ok;
                        for (k, v) in rep.errnos {
                            *total.errnos.entry(k).or_default() += v;
                        }
                        failures
                            .extend(rep.failures.into_iter().map(|f| format!("worker{i}: {f}")));
                    }
                    Err(_) => failures.push(format!("worker{i} panicked")),
                }
            }
            let mut errs: Vec<_> = total.errnos.into_iter().collect();
            errs.sort_by_key(|e| std::cmp::Reverse(e.1));
            eprintln!(
                "total: {} ops, {} ok; most common errors: {:?}",
                total.ops,
                total.ok,
                &errs[..errs.len().min(12)]
            );
            states[0].store(23, Ordering::Relaxed);

            // getcwd of every process names its working directory (all went back to "/").
            for (i, p) in std::iter::once(&main).chain(own.iter()).enumerate() {
                match p.getcwd() {
                    Ok(c) if c == b"/" => {}
                    other => failures.push(format!(
                        "process {i}: getcwd gives {other:?}, expected \"/\""
                    )),
                }
            }
            let n_mounts = check_and_clear_mounts(&main, &mut failures);
            eprintln!("{n_mounts} mounts at the end of the run");
            let names = check_tree(&main, &mut failures);
            let used = used_inodes(&main, b"/");
            eprintln!("{names} names in the tree, {used} inodes in use");
            if used != names + 1 {
                failures.push(format!("root tmpfs counts {used} inodes in use, but the tree has {names} names + the root: lost or orphaned inodes"));
            }
            // Every descriptor was closed.
            for (i, p) in std::iter::once(&main).chain(own.iter()).enumerate() {
                let open: Vec<i32> = (0..2048).filter(|&fd| p.file(fd).is_ok()).collect();
                if !open.is_empty() {
                    failures.push(format!("process {i}: descriptors still open: {open:?}"));
                }
            }
            failures
        })
    };
    let states2 = states.clone();
    let r = wait_or_deadlock(scenario, move || {
        let doing: Vec<&str> = states2
            .iter()
            .map(|s| OP_NAMES[s.load(Ordering::Relaxed) as usize])
            .collect();
        format!("workers were in: {doing:?}")
    });
    r.unwrap_or_else(|_| panic!("the final check panicked (see above)"))
}

/// Joins `h`, or fails the test as a probable deadlock if it has not
/// finished within [`WATCHDOG`]. Returns the thread's result (`Err` if it panicked).
fn wait_or_deadlock<T>(
    h: std::thread::JoinHandle<T>,
    what: impl Fn() -> String,
) -> std::thread::Result<T> {
    let start = Instant::now();
    while !h.is_finished() {
        if start.elapsed() > WATCHDOG {
            panic!(
                "probable deadlock: not finished after {WATCHDOG:?}; {}",
                what()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    h.join()
}

fn assert_clean(failures: Vec<String>) {
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(30).collect();
        panic!(
            "{} failures:\n{}",
            failures.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The random run described at the top of the file.
#[test]
fn random_operations_keep_the_tree_consistent() {
    assert_clean(run_random(0x7e55_e7a0));
}

/// Runs `a` and `b` on two threads for `RUN_FOR`, under the watchdog.
fn race(p: &Arc<Process>, a: fn(&Process, u64), b: fn(&Process, u64)) {
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = [a, b]
        .into_iter()
        .map(|f| {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    f(&p, i);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(RUN_FOR);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        wait_or_deadlock(h, || "a racing thread did not stop".into())
            .unwrap_or_else(|_| panic!("a racing thread panicked (see above)"));
    }
}

/// rmdir of a directory racing with a create inside it: afterwards, with
/// everything removed, the root tmpfs must count only its root inode.
#[test]
fn targeted_rmdir_vs_create_inside() {
    let p = Arc::new(new_process());
    race(
        &p,
        |p, _| {
            let _ = p.mkdirat(AT_FDCWD, b"/d", 0o755);
            let _ = p.unlinkat(AT_FDCWD, b"/d", AtFlags::AT_REMOVEDIR);
        },
        |p, _| {
            if p.mkdirat(AT_FDCWD, b"/d/sub", 0o755).is_ok() {
                let _ = p.unlinkat(AT_FDCWD, b"/d/sub", AtFlags::AT_REMOVEDIR);
            }
        },
    );
    let _ = p.unlinkat(AT_FDCWD, b"/d/sub", AtFlags::AT_REMOVEDIR);
    let _ = p.unlinkat(AT_FDCWD, b"/d", AtFlags::AT_REMOVEDIR);
    let mut failures = Vec::new();
    let names = check_tree(&p, &mut failures);
    assert_eq!(names, 0);
    let used = used_inodes(&p, b"/");
    if used != 1 {
        failures.push(format!("{} inodes still in use after removing everything: directories created inside a directory being removed were orphaned", used - 1));
    }
    assert_clean(failures);
}

/// A mount racing with the rmdir of its mount point: no mount may end up on
/// a removed directory.
#[test]
fn targeted_mount_vs_rmdir() {
    let p = Arc::new(new_process());
    race(
        &p,
        |p, _| {
            let _ = p.mkdirat(AT_FDCWD, b"/m", 0o755);
            let _ = p.unlinkat(AT_FDCWD, b"/m", AtFlags::AT_REMOVEDIR);
        },
        |p, _| {
            if p.mount(b"tmp", b"/m", b"tmpfs", MountFlags::empty(), b"")
                .is_ok()
            {
                let _ = p.umount2(b"/m", UmountFlags::MNT_DETACH);
            }
        },
    );
    let mut failures = Vec::new();
    let _ = p.umount2(b"/m", UmountFlags::MNT_DETACH);
    let list = mounts(&p);
    if list.len() != 1 {
        failures.push(format!(
            "{} mounts left on removed directories, e.g. {:?}",
            list.len() - 1,
            &list[1..list.len().min(4)]
        ));
    }
    check_and_clear_mounts(&p, &mut failures);
    assert_clean(failures);
}

/// link of a file racing with unlink of its other name (in another
/// directory): the inode count of the tmpfs must come back to the root alone.
#[test]
fn targeted_link_vs_unlink() {
    let p = Arc::new(new_process());
    for d in [b"/a", b"/b"] {
        p.mkdirat(AT_FDCWD, d, 0o755).unwrap();
    }
    race(
        &p,
        |p, _| {
            if let Ok(fd) = p.openat(
                AT_FDCWD,
                b"/a/f",
                OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                0o644,
            ) {
                p.close(fd).unwrap();
            }
            let _ = p.unlinkat(AT_FDCWD, b"/a/f", AtFlags::empty());
        },
        |p, _| {
            let _ = p.linkat(AT_FDCWD, b"/a/f", AT_FDCWD, b"/b/g", AtFlags::empty());
            let _ = p.unlinkat(AT_FDCWD, b"/b/g", AtFlags::empty());
        },
    );
    let _ = p.unlinkat(AT_FDCWD, b"/a/f", AtFlags::empty());
    let _ = p.unlinkat(AT_FDCWD, b"/b/g", AtFlags::empty());
    let mut failures = Vec::new();
    let names = check_tree(&p, &mut failures);
    let used = used_inodes(&p, b"/");
    if used != names + 1 {
        failures.push(format!("{used} inodes in use for {names} names + the root: the per-name inode charge of tmpfs was lost or doubled"));
    }
    assert_clean(failures);
}

/// getdents racing with `RENAME_EXCHANGE` inside the same directory: one
/// `getdents` call (which reads to the end) must not list a name twice.
#[test]
fn targeted_getdents_vs_rename_in_same_dir() {
    static DUPLICATES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let p = Arc::new(new_process());
    p.mkdirat(AT_FDCWD, b"/d", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/d/x", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/d/y", 0o755).unwrap();
    race(
        &p,
        |p, _| {
            let _ = p.renameat2(
                AT_FDCWD,
                b"/d/x",
                AT_FDCWD,
                b"/d/y",
                RenameFlags::RENAME_EXCHANGE,
            );
        },
        |p, _| {
            let fd = p
                .openat(
                    AT_FDCWD,
                    b"/d",
                    OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                    0,
                )
                .unwrap();
            let ents = p.getdents(fd).map(|d| d.into_vec()).unwrap();
            p.close(fd).unwrap();
            let names: HashSet<_> = ents.iter().map(|e| e.0.clone()).collect();
            if names.len() != ents.len() {
                DUPLICATES.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    let n = DUPLICATES.load(Ordering::Relaxed);
    assert_eq!(n, 0, "{n} getdents calls listed a name twice");
}

/// The walk's lookup cache racing with removals: a thread that removes or
/// renames a name and then looks it up must see the change, however often
/// another thread walks through that name meanwhile (a cache entry put in
/// after its name was removed would still answer).
#[test]
fn targeted_walk_cache_vs_unlink_and_rename() {
    static STALE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let p = Arc::new(new_process());
    p.mkdirat(AT_FDCWD, b"/t", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/t/d", 0o755).unwrap();
    race(
        &p,
        |p, i| {
            if i % 2 == 0 {
                let fd = p
                    .openat(
                        AT_FDCWD,
                        b"/t/d/f",
                        OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                        0o644,
                    )
                    .unwrap();
                p.close(fd).unwrap();
                let ino = p.stat(b"/t/d/f").unwrap().ino;
                p.renameat2(
                    AT_FDCWD,
                    b"/t/d/f",
                    AT_FDCWD,
                    b"/t/d/g",
                    RenameFlags::empty(),
                )
                .unwrap();
                if p.stat(b"/t/d/f") != Err(Errno::ENOENT)
                    || p.stat(b"/t/d/g").map(|s| s.ino) != Ok(ino)
                {
                    STALE.fetch_add(1, Ordering::Relaxed);
                }
                p.unlinkat(AT_FDCWD, b"/t/d/g", AtFlags::empty()).unwrap();
                if p.stat(b"/t/d/g") != Err(Errno::ENOENT) {
                    STALE.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                // A directory replaced by a rename over it, then removed.
                p.mkdirat(AT_FDCWD, b"/t/d/x", 0o755).unwrap();
                p.mkdirat(AT_FDCWD, b"/t/d/y", 0o755).unwrap();
                let ino = p.stat(b"/t/d/x").unwrap().ino;
                p.renameat2(
                    AT_FDCWD,
                    b"/t/d/x",
                    AT_FDCWD,
                    b"/t/d/y",
                    RenameFlags::empty(),
                )
                .unwrap();
                if p.stat(b"/t/d/y/.").map(|s| s.ino) != Ok(ino) {
                    STALE.fetch_add(1, Ordering::Relaxed);
                }
                p.unlinkat(AT_FDCWD, b"/t/d/y", AtFlags::AT_REMOVEDIR)
                    .unwrap();
                if p.stat(b"/t/d/y/.") != Err(Errno::ENOENT) {
                    STALE.fetch_add(1, Ordering::Relaxed);
                }
            }
        },
        |p, i| {
            let name: &[u8] = match i % 4 {
                0 => b"/t/d/f",
                1 => b"/t/d/g",
                2 => b"/t/d/x/.",
                _ => b"/t/d/y/.",
            };
            let _ = p.stat(name);
        },
    );
    let n = STALE.load(Ordering::Relaxed);
    assert_eq!(
        n, 0,
        "{n} lookups after a removal or rename saw the old name"
    );
}

/// A name the walk cached is let go with its removal: the inode of an
/// unlinked file, a directory removed or renamed over, is free again as
/// soon as the call returns (tmpfs counts it in `statfs`).
#[test]
fn targeted_walked_names_are_released_at_once() {
    let p = new_process();
    p.mkdirat(AT_FDCWD, b"/a", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/a/b", 0o755).unwrap();
    let base = used_inodes(&p, b"/");
    let fd = p
        .openat(
            AT_FDCWD,
            b"/a/b/f",
            OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
            0o644,
        )
        .unwrap();
    p.close(fd).unwrap();
    p.mkdirat(AT_FDCWD, b"/a/b/c", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/a/b/e", 0o755).unwrap();
    for _ in 0..3 {
        for path in [&b"/a/b/f"[..], b"/a/b/c/.", b"/a/b/e/."] {
            p.stat(path).unwrap();
        }
    }
    assert_eq!(used_inodes(&p, b"/"), base + 3);
    p.unlinkat(AT_FDCWD, b"/a/b/f", AtFlags::empty()).unwrap();
    assert_eq!(used_inodes(&p, b"/"), base + 2, "unlink kept the inode");
    p.renameat2(
        AT_FDCWD,
        b"/a/b/e",
        AT_FDCWD,
        b"/a/b/c",
        RenameFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        used_inodes(&p, b"/"),
        base + 1,
        "the directory renamed over was kept"
    );
    p.stat(b"/a/b/c/.").unwrap();
    p.unlinkat(AT_FDCWD, b"/a/b/c", AtFlags::AT_REMOVEDIR)
        .unwrap();
    assert_eq!(used_inodes(&p, b"/"), base, "rmdir kept the inode");
}
