//! The performance of the core (issue 3): Tessera through the `Process`
//! facade, next to its peers on the same work in the same run.
//!
//! - **tessera**: [`Process`] on an empty tmpfs root (`starting_process`).
//! - **limit**: a minimal tree of nested hash maps of `Arc` nodes under
//!   `parking_lot` locks, written here, doing the same walk with no VFS
//!   semantics. Tessera divided by it is the distance to the limit.
//! - **linux**: the same calls as system calls on a fresh tmpfs mount in a
//!   private mount namespace (root), else on a directory under `/dev/shm`.
//! - **rust-vfs**: the `vfs` crate's `MemoryFS`, where its API has the call.
//!
//! `cargo bench --bench core` prints criterion's lines, then a summary of
//! every figure of the issue with its ratios and its target.
//!
//! Why criterion and not divan: criterion is already the harness of the
//! other benches of this package (one tool, one output format), and its
//! `iter_custom` hands us each sample's (iterations, time), which we keep
//! to compute the ratios between peers at the end of the same run; divan
//! gives no programmatic access to its results. Every figure below is the
//! median of the per-iteration times of criterion's samples.
//!
//! Memory per empty file is measured in child processes (this binary run
//! again with `TESSERA_BENCH_MEM` set) so that the resident-set delta
//! (`/proc/self/statm`) is not blurred by the allocations of the benches.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex as StdMutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use parking_lot::{Mutex, RwLock};
use tessera::ops::tessera::starting_process;
use tessera_vfs::abi::*;
use tessera_vfs::process::Process;
use vfs::FileSystem;

// ---------------------------------------------------------------------------
// Recording criterion's samples.

/// Per benchmark id: the (iterations, time) of every call of the routine.
static SAMPLES: StdMutex<BTreeMap<String, Vec<(u64, Duration)>>> = StdMutex::new(BTreeMap::new());

/// Samples criterion takes per benchmark (the last this many calls are the
/// measurement; the earlier ones were the warm-up).
const SAMPLE_SIZE: usize = 20;

fn record(id: &str, iters: u64, d: Duration) {
    SAMPLES
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .push((iters, d));
}

/// The median time per iteration of `id`'s measurement samples, in ns.
fn median_ns(id: &str) -> Option<f64> {
    let m = SAMPLES.lock().unwrap();
    let s = m.get(id)?;
    let from = s.len().saturating_sub(SAMPLE_SIZE);
    let mut v: Vec<f64> = s[from..]
        .iter()
        .map(|(i, d)| d.as_nanos() as f64 / *i as f64)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Benchmarks `f` under `id` (also the criterion name).
fn bench<M: criterion::measurement::Measurement<Value = Duration>>(
    g: &mut BenchmarkGroup<'_, M>,
    id: &str,
    mut f: impl FnMut(),
) {
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            let d = t.elapsed();
            record(id, iters, d);
            d
        })
    });
}

// ---------------------------------------------------------------------------
// The limit: nested hash maps of `Arc` nodes under `parking_lot` locks.

/// FxHash, as the core uses for names: the limit must not lose on hashing.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<Fx>>;

enum LKind {
    Dir(RwLock<FxMap<Arc<LNode>>>),
    File(RwLock<Vec<u8>>),
    Link(Box<[u8]>),
}

struct LNode {
    ino: u64,
    mode: u32,
    kind: LKind,
}

/// What `stat` returns in the limit (only ever given to `black_box`).
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct LStat {
    ino: u64,
    mode: u32,
    size: u64,
}

/// An open file of the limit.
struct LHandle {
    _node: Arc<LNode>,
    _pos: Mutex<u64>,
}

struct Limit {
    root: Arc<LNode>,
    next: AtomicU64,
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

impl Limit {
    fn new() -> Limit {
        Limit {
            root: Arc::new(LNode {
                ino: 1,
                mode: 0o40755,
                kind: LKind::Dir(RwLock::new(FxMap::default())),
            }),
            next: AtomicU64::new(2),
        }
    }

    fn node(&self, kind: LKind, mode: u32) -> Arc<LNode> {
        Arc::new(LNode {
            ino: self.next.fetch_add(1, Ordering::Relaxed),
            mode,
            kind,
        })
    }

    /// Walks `path` from `dir`, following links (relative targets resolve
    /// from the link's directory) except a final one when `!follow`.
    fn walk_from(
        &self,
        dir: &Arc<LNode>,
        path: &[u8],
        follow: bool,
        depth: u32,
    ) -> Option<Arc<LNode>> {
        if depth > 40 {
            return None;
        }
        let mut cur = dir.clone();
        let mut it = components(path).peekable();
        while let Some(name) = it.next() {
            let LKind::Dir(ch) = &cur.kind else {
                return None;
            };
            let next = ch.read().get(name)?.clone();
            let last = it.peek().is_none();
            cur = match &next.kind {
                LKind::Link(t) if follow || !last => self.walk_from(&cur, t, true, depth + 1)?,
                _ => next,
            };
        }
        Some(cur)
    }

    fn walk(&self, path: &[u8]) -> Option<Arc<LNode>> {
        self.walk_from(&self.root, path, true, 0)
    }

    fn stat(&self, path: &[u8]) -> Option<LStat> {
        let n = self.walk(path)?;
        let size = match &n.kind {
            LKind::File(d) => d.read().len() as u64,
            LKind::Link(t) => t.len() as u64,
            LKind::Dir(_) => 0,
        };
        Some(LStat {
            ino: n.ino,
            mode: n.mode,
            size,
        })
    }

    fn open(&self, path: &[u8]) -> Option<Arc<LHandle>> {
        let n = self.walk(path)?;
        Some(Arc::new(LHandle {
            _node: n,
            _pos: Mutex::new(0),
        }))
    }

    fn split(path: &[u8]) -> (&[u8], &[u8]) {
        match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&[], path),
        }
    }

    fn insert(&self, path: &[u8], kind: LKind, mode: u32) -> bool {
        let (dir, name) = Self::split(path);
        let Some(d) = self.walk(dir) else {
            return false;
        };
        let LKind::Dir(ch) = &d.kind else {
            return false;
        };
        let n = self.node(kind, mode);
        let mut m = ch.write();
        if m.contains_key(name) {
            return false;
        }
        m.insert(name.into(), n);
        true
    }

    fn mkdir(&self, path: &[u8]) -> bool {
        self.insert(path, LKind::Dir(RwLock::new(FxMap::default())), 0o40755)
    }

    fn create(&self, path: &[u8]) -> Option<Arc<LHandle>> {
        let (dir, name) = Self::split(path);
        let d = self.walk(dir)?;
        let LKind::Dir(ch) = &d.kind else {
            return None;
        };
        let n = self.node(LKind::File(RwLock::new(Vec::new())), 0o100644);
        ch.write().insert(name.into(), n.clone());
        Some(Arc::new(LHandle {
            _node: n,
            _pos: Mutex::new(0),
        }))
    }

    fn symlink(&self, target: &[u8], path: &[u8]) -> bool {
        self.insert(path, LKind::Link(target.into()), 0o120777)
    }

    fn remove(&self, path: &[u8]) -> bool {
        let (dir, name) = Self::split(path);
        let Some(d) = self.walk(dir) else {
            return false;
        };
        let LKind::Dir(ch) = &d.kind else {
            return false;
        };
        let removed = ch.write().remove(name);
        removed.is_some()
    }

    /// Renames within one directory.
    fn rename(&self, dir: &[u8], from: &[u8], to: &[u8]) -> bool {
        let Some(d) = self.walk(dir) else {
            return false;
        };
        let LKind::Dir(ch) = &d.kind else {
            return false;
        };
        let mut m = ch.write();
        match m.remove(from) {
            Some(n) => {
                m.insert(to.into(), n);
                true
            }
            None => false,
        }
    }

    fn readdir(&self, path: &[u8]) -> Vec<(Vec<u8>, u32)> {
        match self.walk(path).as_deref() {
            Some(LNode {
                kind: LKind::Dir(ch),
                ..
            }) => ch
                .read()
                .iter()
                .map(|(k, v)| (k.to_vec(), v.mode))
                .collect(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Linux: system calls on a fresh tmpfs.

struct Linux {
    base: String,
    /// Mount points to unmount at the end, innermost last.
    mounts: Vec<CString>,
    /// Whether the base is a tmpfs of our own (mount crossings are possible).
    own_mount: bool,
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL in bench paths")
}

impl Linux {
    /// Enters a private mount namespace and mounts a tmpfs, or falls back
    /// to a directory under `/dev/shm`. Must run while single-threaded.
    fn new() -> Linux {
        let base = format!("/tmp/tessera-bench-{}", std::process::id());
        let _ = std::fs::create_dir_all(&base);
        let b = cs(&base);
        // SAFETY: plain system calls on valid NUL-terminated strings.
        let own = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    c"tmpfs".as_ptr(),
                    b.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"mode=0755".as_ptr().cast(),
                ) == 0
        };
        if own {
            return Linux {
                base,
                mounts: vec![b],
                own_mount: true,
            };
        }
        let _ = std::fs::remove_dir(&base);
        let base = format!("/dev/shm/tessera-bench-{}", std::process::id());
        std::fs::create_dir_all(&base).expect("a directory under /dev/shm");
        Linux {
            base,
            mounts: Vec::new(),
            own_mount: false,
        }
    }

    fn p(&self, path: &str) -> CString {
        cs(&format!("{}{}", self.base, path))
    }

    fn mkdir(&self, path: &str) {
        std::fs::create_dir(format!("{}{}", self.base, path)).expect("mkdir on the Linux tmpfs");
    }

    fn mount_tmpfs(&mut self, path: &str) {
        let p = self.p(path);
        // SAFETY: valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                p.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs on {path}");
        self.mounts.push(p);
    }
}

impl Drop for Linux {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            // SAFETY: a valid NUL-terminated string.
            unsafe { libc::umount2(m.as_ptr(), libc::MNT_DETACH) };
        }
        if self.own_mount {
            let _ = std::fs::remove_dir(&self.base);
        } else {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

fn lstat(p: &CString) -> i32 {
    // SAFETY: `st` is written by the kernel; `p` is NUL-terminated.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::stat(p.as_ptr(), &mut st)
    }
}

// ---------------------------------------------------------------------------
// Page-aligned buffers (the issue: misaligned memcpy can be 27x slower).

struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is uniquely owned plain memory.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        AlignedBuf { ptr, len }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

// ---------------------------------------------------------------------------
// The tree every peer holds.

const DEPTHS: [usize; 5] = [1, 2, 4, 8, 16];
const FILE_SIZE: usize = 64 << 20;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// `/d1/d2/.../dk`.
fn chain(prefix: &str, k: usize) -> String {
    (1..=k).map(|i| format!("/{prefix}{i}")).collect()
}

/// Random page-aligned offsets into the 64 MiB file (xorshift: repeatable).
fn random_pages() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (FILE_SIZE / PAGE) as u64) * PAGE as u64
        })
        .collect()
}

/// Builds the shared layout: two 16-deep directory chains (`d`, `e`) with a
/// file `f8` in `d1/../d7`, the symlink directory `/s` (`l1 -> l2 ... l8 -> t`),
/// mount-free twins of the mount paths (`/n1/x`, `/n1/n2/n3/x`), the
/// workspace `/w` and the 1,000-entry directory `/r`.
struct Layout;

impl Layout {
    fn dirs() -> Vec<String> {
        let mut v = Vec::new();
        for p in ["d", "e"] {
            for k in 1..=16 {
                v.push(chain(p, k));
            }
        }
        v.extend(
            [
                "/s",
                "/w",
                "/r",
                "/n1",
                "/n1/x",
                "/n1/n2",
                "/n1/n2/n3",
                "/n1/n2/n3/x",
            ]
            .map(String::from),
        );
        v
    }
    fn files() -> Vec<String> {
        let mut v = vec![format!("{}/f8", chain("d", 7)), "/s/t".into()];
        v.extend((0..1000).map(|i| format!("/r/f{i:04}")));
        v
    }
    fn links() -> Vec<(String, String)> {
        (1..=8)
            .map(|i| {
                let t = if i == 8 {
                    "t".to_string()
                } else {
                    format!("l{}", i + 1)
                };
                (t, format!("/s/l{i}"))
            })
            .collect()
    }
}

fn tessera_setup() -> Process {
    let p = starting_process().expect("starting process");
    for d in Layout::dirs() {
        p.mkdirat(AT_FDCWD, d.as_bytes(), 0o755).unwrap();
    }
    for f in Layout::files() {
        let fd = p
            .openat(
                AT_FDCWD,
                f.as_bytes(),
                OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                0o644,
            )
            .unwrap();
        p.close(fd).unwrap();
    }
    for (t, l) in Layout::links() {
        p.symlinkat(t.as_bytes(), AT_FDCWD, l.as_bytes()).unwrap();
    }
    // Mounts: /m1 (x), /m1/m2/m3 (x), each a tmpfs.
    p.mkdirat(AT_FDCWD, b"/m1", 0o755).unwrap();
    p.mount(b"none", b"/m1", b"tmpfs", MountFlags::empty(), b"")
        .unwrap();
    p.mkdirat(AT_FDCWD, b"/m1/x", 0o755).unwrap();
    p.mkdirat(AT_FDCWD, b"/m1/m2", 0o755).unwrap();
    p.mount(b"none", b"/m1/m2", b"tmpfs", MountFlags::empty(), b"")
        .unwrap();
    p.mkdirat(AT_FDCWD, b"/m1/m2/m3", 0o755).unwrap();
    p.mount(b"none", b"/m1/m2/m3", b"tmpfs", MountFlags::empty(), b"")
        .unwrap();
    p.mkdirat(AT_FDCWD, b"/m1/m2/m3/x", 0o755).unwrap();
    // The 64 MiB file.
    let fd = p
        .openat(
            AT_FDCWD,
            b"/big",
            OpenFlags::O_CREAT | OpenFlags::O_RDWR,
            0o644,
        )
        .unwrap();
    let chunk = vec![0x5au8; MIB];
    for i in 0..FILE_SIZE / MIB {
        p.pwrite(fd, &chunk, (i * MIB) as i64).unwrap();
    }
    p.close(fd).unwrap();
    p
}

fn limit_setup() -> Limit {
    let l = Limit::new();
    for d in Layout::dirs() {
        assert!(l.mkdir(d.as_bytes()));
    }
    for f in Layout::files() {
        l.create(f.as_bytes()).unwrap();
    }
    for (t, p) in Layout::links() {
        assert!(l.symlink(t.as_bytes(), p.as_bytes()));
    }
    l
}

fn linux_setup(lx: &mut Linux) -> i32 {
    for d in Layout::dirs() {
        lx.mkdir(&d);
    }
    for f in Layout::files() {
        std::fs::File::create(format!("{}{}", lx.base, f)).unwrap();
    }
    for (t, l) in Layout::links() {
        std::os::unix::fs::symlink(t, format!("{}{}", lx.base, l)).unwrap();
    }
    if lx.own_mount {
        lx.mkdir("/m1");
        lx.mount_tmpfs("/m1");
        lx.mkdir("/m1/x");
        lx.mkdir("/m1/m2");
        lx.mount_tmpfs("/m1/m2");
        lx.mkdir("/m1/m2/m3");
        lx.mount_tmpfs("/m1/m2/m3");
        lx.mkdir("/m1/m2/m3/x");
    }
    let big = lx.p("/big");
    // SAFETY: valid path; the descriptor is closed by `Drop` of nothing:
    // it stays open for the whole run and dies with the process.
    let fd = unsafe { libc::open(big.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o644) };
    assert!(fd >= 0);
    let chunk = vec![0x5au8; MIB];
    for i in 0..FILE_SIZE / MIB {
        // SAFETY: `chunk` is MIB readable bytes.
        let n = unsafe { libc::pwrite(fd, chunk.as_ptr().cast(), MIB, (i * MIB) as i64) };
        assert_eq!(n, MIB as isize);
    }
    fd
}

fn rustvfs_setup() -> vfs::MemoryFS {
    let fs = vfs::MemoryFS::new();
    for d in Layout::dirs() {
        fs.create_dir(&d).unwrap();
    }
    for f in Layout::files() {
        drop(fs.create_file(&f).unwrap());
    }
    let mut w = fs.create_file("/big").unwrap();
    w.write_all(&vec![0x5au8; FILE_SIZE]).unwrap();
    drop(w);
    fs
}

/// Adds 100,000 entries elsewhere (100 directories of 1,000 files).
fn grow(p: &Process, l: &Limit, lx: &Linux, rv: &vfs::MemoryFS) {
    for g in 0..100 {
        let dir = format!("/g{g:03}");
        p.mkdirat(AT_FDCWD, dir.as_bytes(), 0o755).unwrap();
        l.mkdir(dir.as_bytes());
        lx.mkdir(&dir);
        rv.create_dir(&dir).unwrap();
        for i in 0..1000 - 1 {
            let f = format!("{dir}/f{i:04}");
            p.mknodat(AT_FDCWD, f.as_bytes(), 0o100644, DevId::default())
                .unwrap();
            l.create(f.as_bytes()).unwrap();
            std::fs::File::create(format!("{}{}", lx.base, f)).unwrap();
            drop(rv.create_file(&f).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------
// The benches.

fn getdents_linux(path: &CString, buf: &mut [u8]) -> usize {
    // SAFETY: valid path; `buf` is writable for its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(fd >= 0);
        let mut n = 0;
        loop {
            let r = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
            if r <= 0 {
                break;
            }
            let mut off = 0usize;
            while off < r as usize {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                off += reclen;
                n += 1;
            }
        }
        libc::close(fd);
        n
    }
}

struct Peers {
    p: Process,
    l: Limit,
    lx: Linux,
    lx_big: i32,
    rv: vfs::MemoryFS,
}

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    g
}

fn bench_walks(c: &mut Criterion, x: &Peers) {
    let mut g = group(c, "walk");
    for k in DEPTHS {
        let path = chain("d", k);
        let (pb, cp) = (path.as_bytes(), x.lx.p(&path));
        bench(&mut g, &format!("stat{k}/tessera"), || {
            black_box(x.p.stat(black_box(pb)).unwrap());
        });
        bench(&mut g, &format!("stat{k}/limit"), || {
            black_box(x.l.stat(black_box(pb)).unwrap());
        });
        bench(&mut g, &format!("stat{k}/linux"), || {
            assert_eq!(lstat(black_box(&cp)), 0);
        });
        bench(&mut g, &format!("stat{k}/rust-vfs"), || {
            black_box(x.rv.metadata(black_box(&path)).unwrap());
        });
    }
    // Mount crossings against the same depth without mounts.
    for (id, path) in [
        ("nomount1", "/n1/x"),
        ("mount1", "/m1/x"),
        ("nomount3", "/n1/n2/n3/x"),
        ("mount3", "/m1/m2/m3/x"),
    ] {
        let cp = x.lx.p(path);
        bench(&mut g, &format!("{id}/tessera"), || {
            black_box(x.p.stat(black_box(path.as_bytes())).unwrap());
        });
        if x.lx.own_mount || id.starts_with("no") {
            bench(&mut g, &format!("{id}/linux"), || {
                assert_eq!(lstat(black_box(&cp)), 0);
            });
        }
    }
    // Symlink chain and its target.
    for (id, path) in [("target", "/s/t"), ("links8", "/s/l1")] {
        let cp = x.lx.p(path);
        bench(&mut g, &format!("{id}/tessera"), || {
            black_box(x.p.stat(black_box(path.as_bytes())).unwrap());
        });
        bench(&mut g, &format!("{id}/limit"), || {
            black_box(x.l.stat(black_box(path.as_bytes())).unwrap());
        });
        bench(&mut g, &format!("{id}/linux"), || {
            assert_eq!(lstat(black_box(&cp)), 0);
        });
    }
    // ENOENT at depth 8.
    let miss = format!("{}/missing", chain("d", 7));
    let cp = x.lx.p(&miss);
    bench(&mut g, "enoent8/tessera", || {
        assert!(x.p.stat(black_box(miss.as_bytes())).is_err());
    });
    bench(&mut g, "enoent8/limit", || {
        assert!(x.l.stat(black_box(miss.as_bytes())).is_none());
    });
    bench(&mut g, "enoent8/linux", || {
        assert_eq!(lstat(black_box(&cp)), -1);
    });
    bench(&mut g, "enoent8/rust-vfs", || {
        assert!(x.rv.metadata(black_box(&miss)).is_err());
    });
    // open+close of the file at depth 8, and stat of that file.
    let f8 = format!("{}/f8", chain("d", 7));
    let cp = x.lx.p(&f8);
    bench(&mut g, "statf8/tessera", || {
        black_box(x.p.stat(black_box(f8.as_bytes())).unwrap());
    });
    bench(&mut g, "open8/tessera", || {
        tessera_open_close(&x.p, black_box(f8.as_bytes()))
    });
    bench(&mut g, "open8/limit", || {
        black_box(x.l.open(black_box(f8.as_bytes())).unwrap());
    });
    bench(&mut g, "open8/linux", || {
        // SAFETY: a valid path.
        unsafe {
            let fd = libc::open(cp.as_ptr(), libc::O_RDONLY);
            assert!(fd >= 0);
            libc::close(fd);
        }
    });
    bench(&mut g, "open8/rust-vfs", || {
        black_box(x.rv.open_file(black_box(&f8)).unwrap());
    });
    g.finish();
}

/// Tessera's create+close+unlink of `/w/c`.
fn tessera_create(p: &Process) {
    let fd = p
        .openat(
            AT_FDCWD,
            b"/w/c",
            OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
            0o644,
        )
        .unwrap();
    p.close(fd).unwrap();
    p.unlinkat(AT_FDCWD, b"/w/c", AtFlags::empty()).unwrap();
}

/// rust-vfs's create (and drop of the writer) and remove of `/w/c`.
fn rustvfs_create(rv: &vfs::MemoryFS) {
    drop(rv.create_file("/w/c").unwrap());
    rv.remove_file("/w/c").unwrap();
}

/// Tessera's open+close of `path` for reading.
fn tessera_open_close(p: &Process, path: &[u8]) {
    let fd = p.openat(AT_FDCWD, path, OpenFlags::O_RDONLY, 0).unwrap();
    p.close(fd).unwrap();
}

fn bench_changes(c: &mut Criterion, x: &Peers) {
    let mut g = group(c, "change");
    let (cf, cd) = (x.lx.p("/w/c"), x.lx.p("/w/c"));
    bench(&mut g, "create/tessera", || tessera_create(&x.p));
    bench(&mut g, "create/limit", || {
        drop(x.l.create(b"/w/c").unwrap());
        assert!(x.l.remove(b"/w/c"));
    });
    bench(&mut g, "create/linux", || {
        // SAFETY: a valid path.
        unsafe {
            let fd = libc::open(cf.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            assert!(fd >= 0);
            libc::close(fd);
            assert_eq!(libc::unlink(cf.as_ptr()), 0);
        }
    });
    bench(&mut g, "create/rust-vfs", || rustvfs_create(&x.rv));
    bench(&mut g, "mkdir/tessera", || {
        x.p.mkdirat(AT_FDCWD, b"/w/c", 0o755).unwrap();
        x.p.unlinkat(AT_FDCWD, b"/w/c", AtFlags::AT_REMOVEDIR)
            .unwrap();
    });
    bench(&mut g, "mkdir/limit", || {
        assert!(x.l.mkdir(b"/w/c"));
        assert!(x.l.remove(b"/w/c"));
    });
    bench(&mut g, "mkdir/linux", || {
        // SAFETY: a valid path.
        unsafe {
            assert_eq!(libc::mkdir(cd.as_ptr(), 0o755), 0);
            assert_eq!(libc::rmdir(cd.as_ptr()), 0);
        }
    });
    bench(&mut g, "mkdir/rust-vfs", || {
        x.rv.create_dir("/w/c").unwrap();
        x.rv.remove_dir("/w/c").unwrap();
    });
    // rename: one rename per iteration, back and forth.
    let fd =
        x.p.openat(
            AT_FDCWD,
            b"/w/ra",
            OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
            0o644,
        )
        .unwrap();
    x.p.close(fd).unwrap();
    x.l.create(b"/w/ra").unwrap();
    std::fs::File::create(format!("{}/w/ra", x.lx.base)).unwrap();
    let names: [&[u8]; 2] = [b"/w/ra", b"/w/rb"];
    let mut at = 0usize;
    bench(&mut g, "rename/tessera", || {
        x.p.renameat2(
            AT_FDCWD,
            names[at],
            AT_FDCWD,
            names[at ^ 1],
            RenameFlags::empty(),
        )
        .unwrap();
        at ^= 1;
    });
    let lnames: [&[u8]; 2] = [b"ra", b"rb"];
    let mut at = 0usize;
    bench(&mut g, "rename/limit", || {
        assert!(x.l.rename(b"/w", lnames[at], lnames[at ^ 1]));
        at ^= 1;
    });
    let cnames = [x.lx.p("/w/ra"), x.lx.p("/w/rb")];
    let mut at = 0usize;
    bench(&mut g, "rename/linux", || {
        // SAFETY: both paths are valid NUL-terminated strings.
        let r = unsafe { libc::rename(cnames[at].as_ptr(), cnames[at ^ 1].as_ptr()) };
        assert_eq!(r, 0);
        at ^= 1;
    });
    g.finish();
}

fn bench_readdir(c: &mut Criterion, x: &Peers, tag: &str) {
    let mut g = group(c, "readdir");
    g.sampling_mode(SamplingMode::Flat);
    let cp = x.lx.p("/r");
    let mut buf = vec![0u8; 32 << 10];
    bench(&mut g, &format!("{tag}/tessera"), || {
        let fd =
            x.p.openat(
                AT_FDCWD,
                b"/r",
                OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                0,
            )
            .unwrap();
        assert_eq!(x.p.getdents(fd).unwrap().len(), 1002);
        x.p.close(fd).unwrap();
    });
    bench(&mut g, &format!("{tag}/limit"), || {
        assert_eq!(x.l.readdir(b"/r").len(), 1000);
    });
    bench(&mut g, &format!("{tag}/linux"), || {
        assert_eq!(getdents_linux(&cp, &mut buf), 1002);
    });
    bench(&mut g, &format!("{tag}/rust-vfs"), || {
        assert_eq!(x.rv.read_dir("/r").unwrap().count(), 1000);
    });
    g.finish();
}

fn bench_io(c: &mut Criterion, x: &Peers) {
    let mut g = group(c, "io");
    let offs = random_pages();
    let src = AlignedBuf::new(FILE_SIZE);
    let mut dst = AlignedBuf::new(MIB);
    let fd = x.p.openat(AT_FDCWD, b"/big", OpenFlags::O_RDWR, 0).unwrap();
    let mut rvf = x.rv.open_file("/big").unwrap();
    let mut i = 0usize;
    let mut next = move || {
        i = (i + 1) & 4095;
        offs[i]
    };
    bench(&mut g, "memcpy4k", || {
        let o = next() as usize;
        dst.as_mut()[..PAGE].copy_from_slice(&src.as_slice()[o..o + PAGE]);
        black_box(dst.as_slice()[0]);
    });
    bench(&mut g, "pread4k/tessera", || {
        let o = next();
        assert_eq!(
            x.p.pread(fd, &mut dst.as_mut()[..PAGE], o as i64).unwrap(),
            PAGE
        );
    });
    bench(&mut g, "pwrite4k/tessera", || {
        let o = next();
        assert_eq!(
            x.p.pwrite(fd, &src.as_slice()[..PAGE], o as i64).unwrap(),
            PAGE
        );
    });
    bench(&mut g, "pread4k/linux", || {
        let o = next();
        // SAFETY: `dst` is writable for PAGE bytes.
        let n = unsafe { libc::pread(x.lx_big, dst.as_mut().as_mut_ptr().cast(), PAGE, o as i64) };
        assert_eq!(n, PAGE as isize);
    });
    bench(&mut g, "pwrite4k/linux", || {
        let o = next();
        // SAFETY: `src` is readable for PAGE bytes.
        let n = unsafe { libc::pwrite(x.lx_big, src.as_slice().as_ptr().cast(), PAGE, o as i64) };
        assert_eq!(n, PAGE as isize);
    });
    bench(&mut g, "pread4k/rust-vfs", || {
        let o = next();
        rvf.seek(SeekFrom::Start(o)).unwrap();
        rvf.read_exact(&mut dst.as_mut()[..PAGE]).unwrap();
    });
    // Sequential 1 MiB: the file read (or written) 1 MiB at a time, in order.
    let mut s = 0usize;
    let mut seq = move || {
        s = (s + 1) % (FILE_SIZE / MIB);
        s * MIB
    };
    bench(&mut g, "memcpy1m", || {
        let o = seq();
        dst.as_mut().copy_from_slice(&src.as_slice()[o..o + MIB]);
        black_box(dst.as_slice()[0]);
    });
    bench(&mut g, "read1m/tessera", || {
        let o = seq();
        assert_eq!(x.p.pread(fd, dst.as_mut(), o as i64).unwrap(), MIB);
    });
    bench(&mut g, "write1m/tessera", || {
        let o = seq();
        assert_eq!(
            x.p.pwrite(fd, &src.as_slice()[..MIB], o as i64).unwrap(),
            MIB
        );
    });
    bench(&mut g, "read1m/linux", || {
        let o = seq();
        // SAFETY: `dst` is writable for MIB bytes.
        let n = unsafe { libc::pread(x.lx_big, dst.as_mut().as_mut_ptr().cast(), MIB, o as i64) };
        assert_eq!(n, MIB as isize);
    });
    bench(&mut g, "write1m/linux", || {
        let o = seq();
        // SAFETY: `src` is readable for MIB bytes.
        let n = unsafe { libc::pwrite(x.lx_big, src.as_slice().as_ptr().cast(), MIB, o as i64) };
        assert_eq!(n, MIB as isize);
    });
    bench(&mut g, "read1m/rust-vfs", || {
        let o = seq();
        rvf.seek(SeekFrom::Start(o as u64)).unwrap();
        rvf.read_exact(dst.as_mut()).unwrap();
    });
    g.finish();
    x.p.close(fd).unwrap();
}

// ---------------------------------------------------------------------------
// Paired ratios: the two sides of a ratio target timed in alternation.

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Two operations timed in alternation, and their ratio.
#[derive(Clone, Copy)]
struct Pair {
    a: f64,
    b: f64,
    ratio: f64,
}

/// Times `a` and `b` in 41 rounds, each a block of about 1 ms of one then
/// of the other (which goes first flips every round): the medians of each
/// side, in ns, and the median of the rounds' ratios a/b. The host's noise
/// comes in bursts longer than a round, so the two sides of one round run
/// under one weather; criterion's medians, taken minutes apart, can put a
/// burst on one side of a ratio only (the same binary measured depth-8
/// stats of 210 and 410 ns a minute apart).
fn paired(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> Pair {
    let per_op = |f: &mut dyn FnMut()| {
        let (mut n, t) = (0u64, Instant::now());
        while t.elapsed() < Duration::from_millis(2) {
            f();
            n += 1;
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let (na, nb) = ((1e6 / per_op(a)) as u64 + 1, (1e6 / per_op(b)) as u64 + 1);
    let block = |f: &mut dyn FnMut(), n: u64| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let rounds: Vec<(f64, f64)> = (0..41)
        .map(|r| {
            if r % 2 == 0 {
                let ta = block(a, na);
                (ta, block(b, nb))
            } else {
                let tb = block(b, nb);
                (block(a, na), tb)
            }
        })
        .collect();
    Pair {
        a: median(rounds.iter().map(|r| r.0).collect()),
        b: median(rounds.iter().map(|r| r.1).collect()),
        ratio: median(rounds.iter().map(|r| r.0 / r.1).collect()),
    }
}

/// (target id) → its paired figures.
type PairFigures = Vec<(&'static str, Pair)>;

/// The paired ratios of the single-thread ratio targets.
fn bench_pairs(x: &Peers) -> PairFigures {
    let d8 = chain("d", 8);
    let f8 = format!("{}/f8", chain("d", 7));
    let miss = format!("{}/missing", chain("d", 7));
    let stat = |path: &[u8]| {
        black_box(x.p.stat(black_box(path)).unwrap());
    };
    let mut out = vec![
        (
            "stat8/limit",
            paired(&mut || stat(d8.as_bytes()), &mut || {
                black_box(x.l.stat(black_box(d8.as_bytes())).unwrap());
            }),
        ),
        (
            "links8/target",
            paired(&mut || stat(b"/s/l1"), &mut || stat(b"/s/t")),
        ),
        (
            "enoent8/stat8",
            paired(
                &mut || assert!(x.p.stat(black_box(miss.as_bytes())).is_err()),
                &mut || stat(d8.as_bytes()),
            ),
        ),
        (
            "open8/stat8",
            paired(
                &mut || tessera_open_close(&x.p, black_box(f8.as_bytes())),
                &mut || stat(d8.as_bytes()),
            ),
        ),
        (
            "create/rust-vfs",
            paired(&mut || tessera_create(&x.p), &mut || rustvfs_create(&x.rv)),
        ),
    ];
    let offs = random_pages();
    let src = AlignedBuf::new(FILE_SIZE);
    let (mut dst, mut rdst) = (AlignedBuf::new(PAGE), AlignedBuf::new(PAGE));
    let fd = x.p.openat(AT_FDCWD, b"/big", OpenFlags::O_RDWR, 0).unwrap();
    // Plain cells, not atomics: a locked instruction on each side would
    // pull the ratio towards 1.
    let i = std::cell::Cell::new(0usize);
    let next = || {
        i.set((i.get() + 1) & 4095);
        offs[i.get()]
    };
    let mut memcpy = || {
        let o = next() as usize;
        dst.as_mut().copy_from_slice(&src.as_slice()[o..o + PAGE]);
        black_box(dst.as_slice()[0]);
    };
    let pr = paired(
        &mut || {
            let o = next() as i64;
            assert_eq!(x.p.pread(fd, rdst.as_mut(), o).unwrap(), PAGE);
        },
        &mut memcpy,
    );
    let pw = paired(
        &mut || {
            let o = next() as i64;
            assert_eq!(x.p.pwrite(fd, &src.as_slice()[..PAGE], o).unwrap(), PAGE);
        },
        &mut memcpy,
    );
    out.push(("pread4k/memcpy4k", pr));
    out.push(("pwrite4k/memcpy4k", pw));
    x.p.close(fd).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Threads: throughput of 1 and 2 threads (manual timing: criterion has no
// multi-threaded mode).

const THREAD_OPS: usize = 400_000;

/// Total stats per second of `n` threads, thread `t` running `f(t)`
/// `THREAD_OPS` times.
fn throughput(n: usize, f: &(dyn Fn(usize) + Sync)) -> f64 {
    let bar = Barrier::new(n + 1);
    let t = std::thread::scope(|s| {
        for t in 0..n {
            let bar = &bar;
            s.spawn(move || {
                pin_to_cpu(t);
                bar.wait();
                for _ in 0..THREAD_OPS {
                    f(t);
                }
            });
        }
        bar.wait();
        Instant::now()
    });
    (n * THREAD_OPS) as f64 / t.elapsed().as_secs_f64()
}

/// Pins the calling thread to CPU `t` (modulo the CPUs there are), so the
/// one-thread run always uses the CPU that thread 0 of the two-thread run
/// uses: on a guest whose second vCPU is taken by the host part of the
/// time, a one-thread figure from whichever CPU the scheduler picked would
/// swing the ratio either way.
fn pin_to_cpu(t: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: `set` is a plain bit set owned here; CPU_ZERO/CPU_SET only
    // write into it, and sched_setaffinity reads `size_of` bytes of it for
    // the calling thread (pid 0). A failure leaves the thread unpinned.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(t % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// 1-thread and 2-thread throughput over 7 pairs of runs, each pair run
/// back to back: the medians of each, and the median of the pairs' ratios.
/// The host's noise comes in bursts; the ratio of a pair is measured under
/// one weather, where two blocks of runs one after the other would let a
/// burst fall on one side only.
fn scaling(f: &(dyn Fn(usize) + Sync)) -> Scaling {
    let pairs: Vec<(f64, f64)> = (0..7)
        .map(|_| (throughput(1, f), throughput(2, f)))
        .collect();
    Scaling {
        one: median(pairs.iter().map(|p| p.0).collect()),
        two: median(pairs.iter().map(|p| p.1).collect()),
        ratio: median(pairs.iter().map(|p| p.1 / p.0).collect()),
    }
}

/// Throughput of 1 and of 2 threads (ops/s), and how much 2 threads gain.
#[derive(Clone, Copy)]
struct Scaling {
    one: f64,
    two: f64,
    ratio: f64,
}

/// (peer, mode) → its scaling.
type ThreadFigures = Vec<(String, Scaling)>;

fn bench_threads(x: &Peers) -> ThreadFigures {
    let d8 = [chain("d", 8), chain("e", 8)];
    let c8 = [x.lx.p(&d8[0]), x.lx.p(&d8[1])];
    let mut out = Vec::new();
    // The control: pure computation, no shared memory. On a machine whose
    // second core is busy with other work it shows how far 2 threads can go.
    let cpu = |_t: usize| {
        let mut v = 1u64;
        for i in 0..64u64 {
            v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        black_box(v);
    };
    let c = scaling(&cpu);
    println!("threads/control (pure computation): x{:.2}", c.ratio);
    out.push(("control/cpu".to_string(), c));
    for (mode, pick) in [("different", 1usize), ("same", 0usize)] {
        let path = |t: usize| d8[t & pick].as_bytes();
        let tess = |t: usize| {
            black_box(x.p.stat(path(t)).unwrap());
        };
        let lim = |t: usize| {
            black_box(x.l.stat(path(t)).unwrap());
        };
        let lin = |t: usize| {
            assert_eq!(lstat(&c8[t & pick]), 0);
        };
        let peers: [(&str, &(dyn Fn(usize) + Sync)); 3] =
            [("tessera", &tess), ("limit", &lim), ("linux", &lin)];
        for (peer, f) in peers {
            let c = scaling(f);
            println!(
                "threads/{mode}/{peer}: 1 thread {:.2} M stat/s, 2 threads {:.2} M stat/s, x{:.2}",
                c.one / 1e6,
                c.two / 1e6,
                c.ratio
            );
            out.push((format!("{mode}/{peer}"), c));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Memory per empty file (child processes).

const MEM_FILES: usize = 1_000_000;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn meminfo_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Runs in a child: makes 1,000,000 empty files in 1,000 directories and
/// prints the bytes per file.
fn mem_child(which: &str) {
    let name = |d: usize, f: usize| format!("/m{d:03}/f{f:04}");
    let dir = |d: usize| format!("/m{d:03}");
    let per = MEM_FILES / 1000;
    let bytes = match which {
        "tessera" => {
            let p = starting_process().unwrap();
            let before = rss_bytes();
            for d in 0..1000 {
                p.mkdirat(AT_FDCWD, dir(d).as_bytes(), 0o755).unwrap();
                for f in 0..per {
                    let fd = p
                        .openat(
                            AT_FDCWD,
                            name(d, f).as_bytes(),
                            OpenFlags::O_CREAT | OpenFlags::O_WRONLY,
                            0o644,
                        )
                        .unwrap();
                    p.close(fd).unwrap();
                }
            }
            let after = rss_bytes();
            black_box(&p);
            after.saturating_sub(before)
        }
        "limit" => {
            let l = Limit::new();
            let before = rss_bytes();
            for d in 0..1000 {
                l.mkdir(dir(d).as_bytes());
                for f in 0..per {
                    drop(l.create(name(d, f).as_bytes()));
                }
            }
            let after = rss_bytes();
            black_box(&l);
            after.saturating_sub(before)
        }
        "rust-vfs" => {
            let fs = vfs::MemoryFS::new();
            let before = rss_bytes();
            for d in 0..1000 {
                fs.create_dir(&dir(d)).unwrap();
                for f in 0..per {
                    drop(fs.create_file(&name(d, f)).unwrap());
                }
            }
            let after = rss_bytes();
            black_box(&fs);
            after.saturating_sub(before)
        }
        "linux" => {
            let base = format!("/dev/shm/tessera-mem-{}", std::process::id());
            std::fs::create_dir_all(&base).unwrap();
            let slab = || meminfo_kib("Slab:") + meminfo_kib("Shmem:");
            let before = slab();
            for d in 0..1000 {
                std::fs::create_dir(format!("{base}{}", dir(d))).unwrap();
                for f in 0..per {
                    std::fs::File::create(format!("{base}{}", name(d, f))).unwrap();
                }
            }
            let after = slab();
            std::fs::remove_dir_all(&base).unwrap();
            after.saturating_sub(before) * 1024
        }
        _ => 0,
    };
    println!("BYTES_PER_FILE {:.1}", bytes as f64 / MEM_FILES as f64);
}

fn memory() -> Vec<(String, Option<f64>)> {
    let exe = std::env::current_exe().unwrap();
    ["tessera", "limit", "linux", "rust-vfs"]
        .iter()
        .map(|w| {
            let out = std::process::Command::new(&exe)
                .env("TESSERA_BENCH_MEM", w)
                .output()
                .ok();
            let v = out.and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("BYTES_PER_FILE ")?.parse().ok())
            });
            println!(
                "memory/{w}: {} bytes per empty file",
                v.map_or("n/a".into(), |v: f64| format!("{v:.0}"))
            );
            (w.to_string(), v)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The summary.

fn fmt_ns(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} µs", v / 1000.0),
        Some(v) => format!("{v:.1} ns"),
        None => "n/a".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

fn summary(pairs: &PairFigures, threads: &ThreadFigures, mem: &[(String, Option<f64>)]) {
    let m = |id: &str| median_ns(id);
    let peers = ["tessera", "limit", "linux", "rust-vfs"];
    println!("\n=== core: medians per operation (Tessera / peer ratios) ===");
    println!(
        "{:<28} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "work", "tessera", "limit", "linux", "rust-vfs", "T/limit", "T/linux", "T/rvfs"
    );
    let row = |label: &str, base: &str| {
        let v: Vec<Option<f64>> = peers.iter().map(|p| m(&format!("{base}/{p}"))).collect();
        println!(
            "{:<28} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
            label,
            fmt_ns(v[0]),
            fmt_ns(v[1]),
            fmt_ns(v[2]),
            fmt_ns(v[3]),
            ratio(v[0], v[1]),
            ratio(v[0], v[2]),
            ratio(v[0], v[3])
        );
        v
    };
    let mut stat = BTreeMap::new();
    for k in DEPTHS {
        stat.insert(k, row(&format!("stat depth {k}"), &format!("stat{k}")));
    }
    // Slope per extra component: least squares over the depths.
    let slope = |i: usize| -> Option<f64> {
        let pts: Vec<(f64, f64)> = DEPTHS
            .iter()
            .filter_map(|k| Some((*k as f64, stat[k][i]?)))
            .collect();
        if pts.len() < 2 {
            return None;
        }
        let n = pts.len() as f64;
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        let (mx, my) = (sx / n, sy / n);
        let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        Some(num / den)
    };
    let slopes: Vec<Option<f64>> = (0..4).map(slope).collect();
    println!(
        "{:<28} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "per extra component",
        fmt_ns(slopes[0]),
        fmt_ns(slopes[1]),
        fmt_ns(slopes[2]),
        fmt_ns(slopes[3]),
        ratio(slopes[0], slopes[1]),
        ratio(slopes[0], slopes[2]),
        ratio(slopes[0], slopes[3])
    );
    let n1 = row("stat /n1/x (no mount)", "nomount1");
    let m1 = row("stat /m1/x (1 crossing)", "mount1");
    let n3 = row("stat /n1/n2/n3/x (no mount)", "nomount3");
    let m3 = row("stat /m1/m2/m3/x (3 cross.)", "mount3");
    let extra = |a: Option<f64>, b: Option<f64>, k: f64| Some((a? - b?) / k);
    let x1 = [extra(m1[0], n1[0], 1.0), extra(m1[2], n1[2], 1.0)];
    let x3 = [extra(m3[0], n3[0], 3.0), extra(m3[2], n3[2], 3.0)];
    println!(
        "{:<28} {:>11} {:>11} {:>11}   (per crossing, from 1 / from 3)",
        "mount crossing extra",
        format!("{}/{}", fmt_ns(x1[0]), fmt_ns(x3[0])),
        "",
        format!("{}/{}", fmt_ns(x1[1]), fmt_ns(x3[1]))
    );
    let tgt = row("stat /s/t (link target)", "target");
    let l8 = row("stat via 8 symlinks", "links8");
    let e8 = row("ENOENT depth 8", "enoent8");
    let f8 = m("statf8/tessera");
    let o8 = row("open+close depth 8", "open8");
    let cr = row("create+close+unlink", "create");
    let md = row("mkdir+rmdir", "mkdir");
    let rn = row("rename (one dir)", "rename");
    let rd = row("readdir 1,000", "small");
    let rdb = row("readdir 1,000 (+100,000 fs)", "big");
    let memcpy4 = m("memcpy4k");
    let memcpy1 = m("memcpy1m");
    let pr = row("pread 4 KiB random", "pread4k");
    let pw = row("pwrite 4 KiB random", "pwrite4k");
    let r1 = row("read 1 MiB sequential", "read1m");
    let w1 = row("write 1 MiB sequential", "write1m");
    println!(
        "memcpy 4 KiB {}, memcpy 1 MiB {} ({:.2} GB/s)",
        fmt_ns(memcpy4),
        fmt_ns(memcpy1),
        memcpy1.map_or(0.0, |t| MIB as f64 / t)
    );
    let gbs = |t: Option<f64>| t.map_or("n/a".into(), |t| format!("{:.2} GB/s", MIB as f64 / t));
    println!(
        "read 1 MiB: tessera {} linux {} rust-vfs {}; write 1 MiB: tessera {} linux {}",
        gbs(r1[0]),
        gbs(r1[2]),
        gbs(r1[3]),
        gbs(w1[0]),
        gbs(w1[2])
    );
    println!("\n=== paired ratios (41 alternating rounds of ~1 ms a side) ===");
    for (id, q) in pairs {
        println!(
            "{:<28} {:>11} {:>11} {:>8.2}",
            id,
            fmt_ns(Some(q.a)),
            fmt_ns(Some(q.b)),
            q.ratio
        );
    }
    let pair = |id: &str| pairs.iter().find(|p| p.0 == id).map(|p| p.1);
    // A ratio target's verdict is the paired ratio's; the criterion
    // medians' ratio is shown beside it.
    let both = |a: Option<f64>, b: Option<f64>, id: &str| {
        format!(
            "{} (criterion {})",
            pair(id).map_or("n/a".into(), |q| format!("{:.2}", q.ratio)),
            ratio(a, b)
        )
    };
    let pr_le = |id: &str, lim: f64| pair(id).map(|q| q.ratio <= lim);
    println!("\n=== targets ===");
    let t = |label: &str, value: String, target: &str, ok: Option<bool>| {
        println!("{:<40} {:<34} {:<30} {}", label, value, target, verdict(ok));
    };
    let s8 = stat[&8].clone();
    let r = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let le = |v: Option<f64>, lim: f64| v.map(|v| v <= lim);
    let ge = |v: Option<f64>, lim: f64| v.map(|v| v >= lim);
    t(
        "stat depth 8 / limit",
        both(s8[0], s8[1], "stat8/limit"),
        "<= 1.3",
        pr_le("stat8/limit", 1.3),
    );
    t(
        "stat depth 8: linux / tessera",
        ratio(s8[2], s8[0]),
        ">= 8",
        ge(r(s8[2], s8[0]), 8.0),
    );
    t(
        "cost per extra component",
        fmt_ns(slopes[0]),
        "<= 25 ns",
        le(slopes[0], 25.0),
    );
    let worst_x = match (x1[0], x3[0]) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    t(
        "one mount crossing, extra",
        format!("{} / {}", fmt_ns(x1[0]), fmt_ns(x3[0])),
        "<= 40 ns",
        le(worst_x, 40.0),
    );
    t(
        "8 symlinks / target directly",
        both(l8[0], tgt[0], "links8/target"),
        "<= 3",
        pr_le("links8/target", 3.0),
    );
    t(
        "ENOENT depth 8 / stat depth 8",
        both(e8[0], s8[0], "enoent8/stat8"),
        "<= 1",
        pr_le("enoent8/stat8", 1.0),
    );
    t(
        "open+close depth 8 / stat depth 8",
        format!(
            "{}, / stat of the file {}",
            both(o8[0], s8[0], "open8/stat8"),
            ratio(o8[0], f8)
        ),
        "<= 2",
        pr_le("open8/stat8", 2.0),
    );
    for (label, v) in [
        ("create+close+unlink", &cr),
        ("mkdir+rmdir", &md),
        ("rename", &rn),
    ] {
        // create is close to rust-vfs: its comparison is the paired one.
        let paired = (label == "create+close+unlink")
            .then(|| pair("create/rust-vfs"))
            .flatten();
        let ok = match (v[0], v[3], paired) {
            (Some(a), _, Some(q)) => Some(a <= 1000.0 && q.ratio < 1.0),
            (Some(a), Some(b), None) => Some(a <= 1000.0 && a < b),
            (Some(a), None, None) => Some(a <= 1000.0),
            _ => None,
        };
        let value = match paired {
            Some(q) => format!(
                "{} (rust-vfs {}; paired ratio {:.2})",
                fmt_ns(v[0]),
                fmt_ns(v[3]),
                q.ratio
            ),
            None => format!("{} (rust-vfs {})", fmt_ns(v[0]), fmt_ns(v[3])),
        };
        t(label, value, "<= 1 µs and < rust-vfs", ok);
    }
    t(
        "readdir 1,000",
        format!("{} / {} with +100,000", fmt_ns(rd[0]), fmt_ns(rdb[0])),
        "<= 30 µs, unchanged (<= +10%)",
        match (rd[0], rdb[0]) {
            (Some(a), Some(b)) => Some(a <= 30_000.0 && b <= 30_000.0 && b <= a * 1.1),
            _ => None,
        },
    );
    t(
        "pread 4 KiB / memcpy 4 KiB",
        both(pr[0], memcpy4, "pread4k/memcpy4k"),
        "<= 3",
        pr_le("pread4k/memcpy4k", 3.0),
    );
    t(
        "pwrite 4 KiB / memcpy 4 KiB",
        both(pw[0], memcpy4, "pwrite4k/memcpy4k"),
        "<= 3",
        pr_le("pwrite4k/memcpy4k", 3.0),
    );
    t(
        "read 1 MiB: share of memcpy bandwidth",
        ratio(memcpy1, r1[0]),
        ">= 0.5",
        ge(r(memcpy1, r1[0]), 0.5),
    );
    t(
        "write 1 MiB: share of memcpy bandwidth",
        ratio(memcpy1, w1[0]),
        "(no target)",
        None,
    );
    for (key, c) in threads {
        if key.ends_with("/tessera") {
            t(
                &format!("stat 2 threads / 1, {}", key.trim_end_matches("/tessera")),
                format!(
                    "{:.2} ({:.2} → {:.2} M/s)",
                    c.ratio,
                    c.one / 1e6,
                    c.two / 1e6
                ),
                ">= 1.8",
                Some(c.ratio >= 1.8),
            );
        }
    }
    for (w, v) in mem {
        if w == "tessera" {
            t(
                "memory per empty file",
                v.map_or("n/a".into(), |v| format!("{v:.0} B")),
                "<= 400 B",
                v.map(|v| v <= 400.0),
            );
        }
    }
    println!(
        "memory per empty file, peers: {}",
        mem.iter()
            .map(|(w, v)| format!("{w} {}", v.map_or("n/a".into(), |v| format!("{v:.0} B"))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = threads;
}

/// How many times the profile loop runs: `TESSERA_BENCH_ITERS`, else
/// 100,000 (enough for callgrind; `perf` wants more).
fn prof_iters() -> u64 {
    std::env::var("TESSERA_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// `TESSERA_BENCH_PROFILE=<work>`: runs one Tessera operation 100,000
/// times and nothing else, for `valgrind --tool=callgrind` or `perf`.
fn profile_loop(what: &str) {
    let p = tessera_setup();
    let l = limit_setup();
    let rv = if what.starts_with("rv") {
        Some(rustvfs_setup())
    } else {
        None
    };
    let d8 = chain("d", 8);
    let f8 = format!("{}/f8", chain("d", 7));
    let miss = format!("{}/missing", chain("d", 7));
    let fd = p.openat(AT_FDCWD, b"/big", OpenFlags::O_RDWR, 0).unwrap();
    let mut buf = AlignedBuf::new(PAGE);
    let begun = Instant::now();
    for i in 0..prof_iters() {
        match what {
            "stat1" => drop(black_box(p.stat(b"/d1").unwrap())),
            "stat8" => drop(black_box(p.stat(d8.as_bytes()).unwrap())),
            "limit1" => drop(black_box(l.stat(b"/d1").unwrap())),
            "limit8" => drop(black_box(l.stat(d8.as_bytes()).unwrap())),
            "enoent8" => assert!(p.stat(miss.as_bytes()).is_err()),
            "links8" => drop(black_box(p.stat(b"/s/l1").unwrap())),
            "target" => drop(black_box(p.stat(b"/s/t").unwrap())),
            "open8" => tessera_open_close(&p, f8.as_bytes()),
            "create" => tessera_create(&p),
            "rvcreate" => {
                if let Some(rv) = &rv {
                    rustvfs_create(rv);
                }
            }
            "mkdir" => {
                p.mkdirat(AT_FDCWD, b"/w/c", 0o755).unwrap();
                p.unlinkat(AT_FDCWD, b"/w/c", AtFlags::AT_REMOVEDIR)
                    .unwrap();
            }
            "rename" => {
                let (a, b): (&[u8], &[u8]) = if i % 2 == 0 {
                    (b"/s/t", b"/s/u")
                } else {
                    (b"/s/u", b"/s/t")
                };
                p.renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::empty())
                    .unwrap();
            }
            "readdir" if i < 2000 => {
                let fd = p
                    .openat(
                        AT_FDCWD,
                        b"/r",
                        OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                        0,
                    )
                    .unwrap();
                black_box(p.getdents(fd).unwrap());
                p.close(fd).unwrap();
            }
            "pread" => {
                let o = (i * 7919 % 16384) * PAGE as u64;
                p.pread(fd, buf.as_mut(), o as i64).unwrap();
            }
            "pwrite" => {
                let o = (i * 7919 % 16384) * PAGE as u64;
                p.pwrite(fd, buf.as_mut(), o as i64).unwrap();
            }
            _ => {}
        }
    }
    // The loop's own time, without the setup, for quick comparisons of
    // two builds (criterion's figures are the ones to report).
    if std::env::var_os("TESSERA_BENCH_TIME").is_some() {
        let ns = begun.elapsed().as_nanos() as f64 / prof_iters() as f64;
        eprintln!("{what} {ns:.1} ns/op");
    }
}

fn main() {
    if let Ok(which) = std::env::var("TESSERA_BENCH_MEM") {
        mem_child(&which);
        return;
    }
    if let Ok(what) = std::env::var("TESSERA_BENCH_PROFILE") {
        profile_loop(&what);
        return;
    }
    // First, while single-threaded: the Linux peer's private namespace.
    let mut lx = Linux::new();
    eprintln!(
        "linux peer: {} ({})",
        lx.base,
        if lx.own_mount {
            "fresh tmpfs in a private mount namespace"
        } else {
            "directory under /dev/shm: no mount crossings"
        }
    );
    let lx_big = linux_setup(&mut lx);
    let x = Peers {
        p: tessera_setup(),
        l: limit_setup(),
        lx,
        lx_big,
        rv: rustvfs_setup(),
    };
    // `TESSERA_BENCH_THREADS=1`: only the thread figures (they take seconds,
    // the whole run minutes).
    if std::env::var_os("TESSERA_BENCH_THREADS").is_some() {
        bench_threads(&x);
        return;
    }
    // `TESSERA_BENCH_PAIRS=1`: only the paired ratios.
    if std::env::var_os("TESSERA_BENCH_PAIRS").is_some() {
        for (id, q) in bench_pairs(&x) {
            println!("{id:<20} {:>9.1} ns {:>9.1} ns {:>6.2}", q.a, q.b, q.ratio);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_walks(&mut c, &x);
    bench_changes(&mut c, &x);
    bench_readdir(&mut c, &x, "small");
    bench_io(&mut c, &x);
    grow(&x.p, &x.l, &x.lx, &x.rv);
    bench_readdir(&mut c, &x, "big");
    c.final_summary();
    let pairs = bench_pairs(&x);
    let threads = bench_threads(&x);
    let mem = memory();
    summary(&pairs, &threads, &mem);
}
