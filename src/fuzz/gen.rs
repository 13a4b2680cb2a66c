//! The random ops-script generator.
//!
//! Scripts are generated as text in the ops-script language, so that the
//! same parser and both backends run them and a difference can be saved and
//! replayed as it is. Generation is a pure function of the seed (its own
//! small PRNG, no platform randomness), so the same seed gives the same
//! scripts on any machine.
//!
//! What is drawn, and why:
//! - paths are built from a tiny alphabet (`a`, `b`, `c`, `.`, `..`, empty
//!   components, names of 255 and 256 bytes) so that names collide, dots are
//!   resolved and limits are hit often;
//! - symbolic links point at relative and absolute paths, at each other, at
//!   `..`, at nothing, and a script sometimes builds a chain of about 40 links
//!   (the kernel's limit) to walk through;
//! - every operation of the spec is drawn, with flags from both the valid and
//!   the invalid combinations;
//! - credentials change with `as`, modes include set-gid and sticky bits;
//! - mounts: tmpfs with options, binds (recursive or not), propagation
//!   changes, moves, remounts, umount with every flag, chroot and
//!   pivot_root, so that `..` crosses mount and chroot roots.
//!
//! Handles: every script starts by binding the handles it uses to `/`, and
//! a `close` is always followed by a rebinding that cannot fail (`open H /
//! O_PATH`), so that a later use of a handle is never a script error. Opens
//! may carry `O_NONBLOCK` because opening a FIFO without it blocks on Linux
//! (and the run would only time out).

use std::fmt::Write as _;

/// splitmix64: tiny, fast, and the same everywhere. Quality is ample for
/// choosing among a handful of options.
///
/// It can also draw from a fixed byte string instead ([`Rng::from_bytes`]):
/// a coverage-guided fuzzer then steers every choice of the generator by
/// mutating bytes, which is the structure-aware way to fuzz a script.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    bytes: Option<(Vec<u8>, usize)>,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed,
            bytes: None,
        }
    }

    /// A source that returns `data`, two bytes per draw, then zeros.
    pub fn from_bytes(data: &[u8]) -> Rng {
        Rng {
            state: 0,
            bytes: Some((data.to_vec(), 0)),
        }
    }

    /// Whether a byte source is used up (a generator then stops early).
    pub fn exhausted(&self) -> bool {
        self.bytes.as_ref().is_some_and(|(b, pos)| *pos >= b.len())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        if let Some((b, pos)) = &mut self.bytes {
            // Two bytes a draw: enough for every weight table here, and
            // cheap for the fuzzer to steer.
            let lo = b.get(*pos).copied().unwrap_or(0);
            let hi = b.get(*pos + 1).copied().unwrap_or(0);
            *pos += 2;
            return u64::from(u16::from_le_bytes([lo, hi]));
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn pct(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// One element of `(weight, item)` pairs, by weight.
    pub fn weighted<T: Clone>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|(w, _)| w).sum();
        let mut r = self.below(total as usize) as u32;
        for (w, item) in items {
            if r < *w {
                return item.clone();
            }
            r -= w;
        }
        items[items.len() - 1].1.clone()
    }
}

/// The seed of script number `index` of a run seeded with `seed`: scripts are
/// independent, so one can be regenerated alone and a parallel run gives the
/// same scripts as a sequential one.
pub fn script_seed(seed: u64, index: u64) -> u64 {
    Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
}

/// The handles every script binds at its start.
const HANDLES: &[&str] = &["d", "p", "f", "g"];

/// Components of generated paths: few, so that names collide.
const COMPONENTS: &[(u32, &str)] = &[
    (30, "a"),
    (22, "b"),
    (12, "c"),
    (8, "."),
    (10, ".."),
    (5, ""),
    (2, "LONG255"),
    (1, "LONG256"),
];

const MODES: &[(u32, &str)] = &[
    (20, "0755"),
    (15, "0644"),
    (8, "0700"),
    (6, "0600"),
    (8, "0777"),
    (4, "0"),
    (4, "01777"),
    (4, "02775"),
    (3, "04755"),
    (3, "0444"),
    (3, "0111"),
    (2, "07777"),
    (2, "0222"),
    (1, "0x1ffff"),
];

/// Operations with their weights; each name is one arm of [`Gen::op`].
const OPS: &[(u32, &str)] = &[
    (14, "mkdir"),
    (3, "mkdirat"),
    (5, "mknod"),
    (10, "symlink"),
    (4, "link"),
    (3, "linkat"),
    (5, "unlink"),
    (4, "rmdir"),
    (3, "unlinkat"),
    (6, "rename"),
    (5, "renameat2"),
    (4, "readlink"),
    (8, "stat"),
    (5, "lstat"),
    (3, "fstat"),
    (4, "fstatat"),
    (3, "access"),
    (3, "faccessat2"),
    (4, "chmod"),
    (2, "fchmod"),
    (3, "chown"),
    (2, "lchown"),
    (2, "fchown"),
    (2, "truncate"),
    (2, "ftruncate"),
    (12, "open"),
    (5, "openat"),
    (6, "openat2"),
    (2, "close"),
    (2, "dup"),
    (3, "read"),
    (2, "pread"),
    (3, "write"),
    (2, "pwrite"),
    (2, "lseek"),
    (1, "fsync"),
    (3, "getdents"),
    (5, "ls"),
    (4, "chdir"),
    (2, "fchdir"),
    (2, "chroot"),
    (3, "getcwd"),
    (1, "umask"),
    (4, "as"),
    (2, "setxattr"),
    (1, "lsetxattr"),
    (2, "getxattr"),
    (1, "lgetxattr"),
    (1, "listxattr"),
    (1, "llistxattr"),
    (1, "removexattr"),
    (1, "lremovexattr"),
    (7, "mount"),
    (4, "umount"),
    (2, "pivot_root"),
    (4, "mounts"),
];

/// Every operation name the generator can emit (for coverage reports).
pub fn operation_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|(_, n)| *n)
}

/// One script being generated.
struct Gen {
    rng: Rng,
    out: String,
    /// Whether this script may make FIFOs (its opens then always carry
    /// `O_NONBLOCK`, see the module documentation).
    fifos: bool,
    /// Whether `as` currently holds a non-zero fsuid.
    unprivileged: bool,
    /// Names of symbolic links made so far, as paths (targets of new links).
    links: Vec<String>,
}

/// Generates one script of about `ops` operations from `seed`.
pub fn generate(seed: u64, ops: usize) -> String {
    let mut out = format!("# tessera fuzz script, seed {seed:#x}\n");
    out.push_str(&generate_with(Rng::new(seed), ops));
    out
}

/// Generates a script whose every choice is read from `data` (for
/// coverage-guided fuzzers): at most `max_ops` random operations, fewer when
/// the bytes run out.
pub fn generate_from_bytes(data: &[u8], max_ops: usize) -> String {
    generate_with(Rng::from_bytes(data), max_ops)
}

/// The script a cargo-fuzz input stands for: the bytes before the first NUL
/// are script text (kept when it parses, so `tests/ops/*.ops` files are
/// seeds as they are), the bytes after it are generator choices
/// ([`generate_from_bytes`]) whose operations are appended.
pub fn script_from_fuzz_input(data: &[u8], max_ops: usize) -> String {
    let (text, choices) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut out = String::new();
    if let Ok(t) = std::str::from_utf8(text) {
        // Only the lines up to the first one that does not parse: a
        // mutated seed still contributes its valid start.
        for line in t.lines() {
            if crate::ops::parse_script(line.as_bytes()).is_err() {
                break;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if !choices.is_empty() {
        out.push_str(&generate_from_bytes(choices, max_ops));
    }
    out
}

fn generate_with(rng: Rng, ops: usize) -> String {
    let mut g = Gen {
        rng,
        out: String::new(),
        fifos: false,
        unprivileged: false,
        links: Vec::new(),
    };
    g.fifos = g.rng.pct(30);
    // Bound before anything can change the root's mode or the
    // credentials, so these cannot fail.
    g.line("open d / O_RDONLY|O_DIRECTORY".into());
    for h in &HANDLES[1..] {
        g.line(format!("open {h} / O_PATH"));
    }
    g.prologue();
    for _ in 0..ops {
        if g.rng.exhausted() {
            break;
        }
        g.op();
    }
    g.out
}

fn long_name(len: usize, salt: u8) -> String {
    let c = (b'k' + salt % 3) as char;
    std::iter::repeat_n(c, len).collect()
}

/// A byte string as a token: bare when it is safe, quoted otherwise.
fn token(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        && !s.starts_with('#');
    if bare {
        s.to_string()
    } else {
        let mut q = String::from("\"");
        for b in s.bytes() {
            match b {
                b'"' => q.push_str("\\\""),
                b'\\' => q.push_str("\\\\"),
                0x20..=0x7e => q.push(b as char),
                _ => {
                    let _ = write!(q, "\\x{b:02x}");
                }
            }
        }
        q.push('"');
        q
    }
}

impl Gen {
    fn line(&mut self, s: String) {
        self.out.push_str(&s);
        self.out.push('\n');
    }

    /// A start that gives the random part something to work on: a few
    /// directories and files, sometimes a mount and a chain of links.
    fn prologue(&mut self) {
        for p in ["/a", "/b", "/a/b"] {
            if self.rng.pct(70) {
                self.line(format!("mkdir {p} 0755"));
            }
        }
        if self.rng.pct(50) {
            self.line("open f /a/c O_RDWR|O_CREAT 0644".into());
            self.line("write f hello".into());
        }
        if self.rng.pct(30) {
            self.line("symlink .. /a/l".into());
            self.links.push("/a/l".into());
        }
        if self.rng.pct(20) {
            self.line("mount none /b tmpfs 0 \"\"".into());
        }
        if self.rng.pct(6) {
            self.chain();
        }
    }

    /// A chain of symbolic links `/z/zN -> zN+1`, ending in a directory, of
    /// a length near the 40 links a walk may follow.
    fn chain(&mut self) {
        let n = 37 + self.rng.below(6);
        self.line("mkdir /z 0755".into());
        self.line(format!("mkdir /z/z{n} 0755"));
        for i in 0..n {
            let target = if self.rng.pct(80) {
                format!("z{}", i + 1)
            } else {
                format!("/z/z{}", i + 1)
            };
            self.line(format!("symlink {target} /z/z{i}"));
        }
        let start = self.rng.below(3);
        self.links.push(format!("/z/z{start}"));
        self.links.push(format!("/z/z{start}/"));
    }

    fn component(&mut self) -> String {
        match self.rng.weighted(COMPONENTS) {
            "LONG255" => long_name(255, self.rng.below(3) as u8),
            "LONG256" => long_name(256, self.rng.below(3) as u8),
            c => c.to_string(),
        }
    }

    /// A path: absolute or relative, 1 to 4 components, sometimes empty,
    /// sometimes with a trailing slash, sometimes through a known link.
    fn path_str(&mut self) -> String {
        if self.rng.pct(3) {
            return String::new();
        }
        if !self.links.is_empty() && self.rng.pct(12) {
            let mut p = self.rng.pick(&self.links);
            if self.rng.pct(50) {
                p.push('/');
                p.push_str(&self.component());
            }
            return p;
        }
        let n = self.rng.weighted(&[(40, 1usize), (35, 2), (18, 3), (7, 4)]);
        let mut p = if self.rng.pct(70) {
            String::from("/")
        } else {
            String::new()
        };
        for i in 0..n {
            if i > 0 {
                p.push('/');
            }
            p.push_str(&self.component());
        }
        if self.rng.pct(8) {
            p.push('/');
        }
        if p.is_empty() {
            p.push('.');
        }
        p
    }

    fn path(&mut self) -> String {
        let p = self.path_str();
        token(&p)
    }

    /// A path for creating something: usually a short fresh-looking name.
    fn new_path(&mut self) -> String {
        if self.rng.pct(60) {
            let dir = self.rng.pick(&["/", "/a/", "/b/", "/a/b/", "", "/c/"]);
            let name = self.rng.weighted(&[
                (30, "a"),
                (20, "b"),
                (20, "c"),
                (10, "x"),
                (5, "."),
                (5, ".."),
            ]);
            token(&format!("{dir}{name}"))
        } else {
            self.path()
        }
    }

    fn symlink_target(&mut self) -> String {
        let t = match self.rng.below(10) {
            0 => "..".to_string(),
            1 => ".".to_string(),
            2 => "/".to_string(),
            3 => "nowhere".to_string(),
            4 if !self.links.is_empty() => self.rng.pick(&self.links),
            5 => "../..".to_string(),
            _ => self.path_str(),
        };
        token(&t)
    }

    fn handle(&mut self) -> &'static str {
        self.rng.pick(HANDLES)
    }

    fn dir(&mut self) -> String {
        if self.rng.pct(40) {
            "AT_FDCWD".into()
        } else {
            self.handle().into()
        }
    }

    fn mode(&mut self) -> &'static str {
        self.rng.weighted(MODES)
    }

    /// `names` joined by `|`, each taken with probability `percent`; `0` when
    /// none is taken.
    fn some_of(&mut self, names: &[&str], percent: u32) -> String {
        let chosen: Vec<&str> = names
            .iter()
            .copied()
            .filter(|_| self.rng.pct(percent))
            .collect();
        if chosen.is_empty() {
            "0".into()
        } else {
            chosen.join("|")
        }
    }

    fn open_flags(&mut self) -> (String, bool) {
        let mut parts: Vec<&str> = vec![self.rng.weighted(&[
            (40, "O_RDONLY"),
            (20, "O_WRONLY"),
            (35, "O_RDWR"),
            (2, "3"),
        ])];
        let special: &[&[&str]] = &[
            &["O_CREAT"],
            &["O_CREAT", "O_EXCL"],
            &["O_PATH"],
            &["O_PATH", "O_NOFOLLOW"],
            &["O_TMPFILE"],
            &["O_TMPFILE", "O_EXCL"],
            &["O_DIRECTORY"],
            &["O_NOFOLLOW"],
            &["O_TRUNC"],
            &["O_CREAT", "O_DIRECTORY"],
            &["O_APPEND"],
        ];
        if self.rng.pct(70) {
            parts.extend_from_slice(self.rng.pick(special));
        }
        for extra in [
            "O_CREAT",
            "O_EXCL",
            "O_TRUNC",
            "O_DIRECTORY",
            "O_NOFOLLOW",
            "O_APPEND",
            "O_NOATIME",
            "O_CLOEXEC",
            "O_SYNC",
            "O_NOCTTY",
        ] {
            if self.rng.pct(4) && !parts.contains(&extra) {
                parts.push(extra);
            }
        }
        if self.fifos || self.rng.pct(20) {
            parts.push("O_NONBLOCK");
        }
        let creates = parts.contains(&"O_CREAT") || parts.contains(&"O_TMPFILE");
        (parts.join("|"), creates)
    }

    fn resolve_flags(&mut self) -> String {
        let mut r = self.some_of(
            &[
                "RESOLVE_NO_XDEV",
                "RESOLVE_NO_MAGICLINKS",
                "RESOLVE_NO_SYMLINKS",
                "RESOLVE_BENEATH",
                "RESOLVE_IN_ROOT",
                "RESOLVE_CACHED",
            ],
            18,
        );
        if self.rng.pct(3) {
            r = "0x40".into();
        }
        r
    }

    fn at_flags(&mut self, allowed: &[&str]) -> String {
        if self.rng.pct(4) {
            return self
                .rng
                .pick(&["AT_REMOVEDIR", "0x10000", "AT_SYMLINK_FOLLOW"])
                .to_string();
        }
        self.some_of(allowed, 30)
    }

    fn id(&mut self) -> &'static str {
        self.rng.weighted(&[
            (30, "0"),
            (30, "1000"),
            (15, "2000"),
            (10, "100"),
            (15, "-1"),
        ])
    }

    fn data(&mut self) -> &'static str {
        self.rng
            .pick(&["hello", "x", "\"\"", "\"\\x00\\xff\"", "0123456789abcdef"])
    }

    /// An offset for pread and pwrite (the language has no negative ones).
    fn offset(&mut self) -> &'static str {
        self.rng
            .pick(&["0", "1", "3", "4096", "9223372036854775807", "100"])
    }

    /// An lseek offset, negative ones included.
    fn seek_offset(&mut self) -> &'static str {
        self.rng
            .pick(&["0", "1", "3", "4096", "-1", "-5", "9223372036854775807"])
    }

    fn xattr_name(&mut self) -> &'static str {
        self.rng.weighted(&[
            (30, "user.a"),
            (15, "user.b"),
            (10, "trusted.t"),
            (5, "security.s"),
            (3, "user."),
            (3, "x.y"),
            (2, "system.posix_acl_access"),
        ])
    }

    fn mount_path(&mut self) -> String {
        if self.rng.pct(70) {
            self.rng
                .pick(&[
                    "/a", "/b", "/a/b", "/b/a", "/", ".", "/c", "/a/l", "a", "..",
                ])
                .to_string()
        } else {
            self.path()
        }
    }

    fn mount(&mut self) -> String {
        let tgt = self.mount_path();
        match self.rng.below(9) {
            0..=2 => {
                let flags = self.some_of(
                    &[
                        "MS_RDONLY",
                        "MS_NOSUID",
                        "MS_NODEV",
                        "MS_NOEXEC",
                        "MS_NOSYMFOLLOW",
                        "MS_NOATIME",
                    ],
                    15,
                );
                let data = self.rng.pick(&[
                    "\"\"",
                    "\"\"",
                    "mode=0700",
                    "mode=01777",
                    "size=8k",
                    "uid=1000,gid=100",
                    "nr_inodes=4",
                    "bogus=1",
                    "mode=0755,size=1m",
                ]);
                format!("mount none {tgt} tmpfs {flags} {data}")
            }
            3 | 4 => {
                let src = self.mount_path();
                let flags = self.rng.pick(&[
                    "MS_BIND",
                    "MS_BIND|MS_REC",
                    "MS_BIND|MS_RDONLY",
                    "MS_BIND|MS_REC|MS_RDONLY",
                ]);
                format!("mount {src} {tgt} none {flags} \"\"")
            }
            5 | 6 => {
                let prop = self.rng.pick(&[
                    "MS_SHARED",
                    "MS_PRIVATE",
                    "MS_SLAVE",
                    "MS_UNBINDABLE",
                    "MS_SHARED|MS_REC",
                    "MS_PRIVATE|MS_REC",
                    "MS_SLAVE|MS_REC",
                    "MS_SHARED|MS_PRIVATE",
                ]);
                format!("mount none {tgt} none {prop} \"\"")
            }
            7 => {
                let src = self.mount_path();
                format!("mount {src} {tgt} none MS_MOVE \"\"")
            }
            _ => {
                let flags = self.rng.pick(&[
                    "MS_REMOUNT",
                    "MS_REMOUNT|MS_RDONLY",
                    "MS_REMOUNT|MS_BIND|MS_RDONLY",
                    "MS_REMOUNT|MS_BIND",
                    "MS_REMOUNT|MS_NOEXEC|MS_NODEV",
                ]);
                let data = self.rng.pick(&["\"\"", "mode=0711", "size=4k"]);
                format!("mount none {tgt} none {flags} {data}")
            }
        }
    }

    /// One random operation (or a `close` and its rebinding).
    fn op(&mut self) {
        let op = self.rng.weighted(OPS);
        let l = match op {
            "mkdir" => format!("mkdir {} {}", self.new_path(), self.mode()),
            "mkdirat" => format!("mkdirat {} {} {}", self.dir(), self.new_path(), self.mode()),
            "mknod" => {
                let kind = self.rng.weighted(&[
                    (30, "S_IFREG|0644"),
                    (15, "0600"),
                    (if self.fifos { 25 } else { 0 }, "S_IFIFO|0644"),
                    (10, "S_IFSOCK|0755"),
                    (10, "S_IFCHR|0666 1 3"),
                    (6, "S_IFCHR|0666 1 5"),
                    (6, "S_IFCHR 0 0"),
                    (4, "S_IFBLK|0600 250 1"),
                    (3, "S_IFDIR|0755"),
                    (2, "S_IFCHR|02755 1 7"),
                ]);
                format!("mknod {} {kind}", self.new_path())
            }
            "symlink" => {
                let target = self.symlink_target();
                let p = self.new_path();
                if self.links.len() < 8 && !p.starts_with('"') {
                    self.links.push(p.clone());
                }
                format!("symlink {target} {p}")
            }
            "link" | "linkat" if self.unprivileged => {
                // fs.protected_hardlinks differs between hosts: an
                // unprivileged link to another user's file depends on it.
                format!("stat {}", self.path())
            }
            "link" => format!("link {} {}", self.path(), self.new_path()),
            "linkat" => {
                let flags = self.at_flags(&["AT_SYMLINK_FOLLOW", "AT_EMPTY_PATH"]);
                let old = if flags.contains("AT_EMPTY_PATH") && self.rng.pct(60) {
                    "\"\"".to_string()
                } else {
                    self.path()
                };
                format!(
                    "linkat {} {old} {} {} {flags}",
                    self.dir(),
                    self.dir(),
                    self.new_path()
                )
            }
            "unlink" => format!("unlink {}", self.path()),
            "rmdir" => format!("rmdir {}", self.path()),
            "unlinkat" => {
                let flags = self.rng.pick(&["0", "AT_REMOVEDIR", "AT_REMOVEDIR", "0x1"]);
                format!("unlinkat {} {} {flags}", self.dir(), self.path())
            }
            "rename" => format!("rename {} {}", self.path(), self.new_path()),
            "renameat2" => {
                let flags = self.rng.weighted(&[
                    (25, "0"),
                    (25, "RENAME_NOREPLACE"),
                    (30, "RENAME_EXCHANGE"),
                    (8, "RENAME_WHITEOUT"),
                    (4, "RENAME_NOREPLACE|RENAME_EXCHANGE"),
                    (4, "RENAME_WHITEOUT|RENAME_EXCHANGE"),
                    (4, "0x8"),
                ]);
                format!(
                    "renameat2 {} {} {} {} {flags}",
                    self.dir(),
                    self.path(),
                    self.dir(),
                    self.path()
                )
            }
            "readlink" => format!("readlink {}", self.path()),
            "stat" | "lstat" => format!("{op} {}", self.path()),
            "fstat" => format!("fstat {}", self.handle()),
            "fstatat" => {
                let flags = self.at_flags(&["AT_SYMLINK_NOFOLLOW", "AT_EMPTY_PATH"]);
                let p = if flags.contains("AT_EMPTY_PATH") && self.rng.pct(60) {
                    "\"\"".to_string()
                } else {
                    self.path()
                };
                format!("fstatat {} {p} {flags}", self.dir())
            }
            "access" => format!("access {} {}", self.path(), self.access_mode()),
            "faccessat2" => {
                let flags = self.at_flags(&["AT_EACCESS", "AT_SYMLINK_NOFOLLOW", "AT_EMPTY_PATH"]);
                let p = if flags.contains("AT_EMPTY_PATH") && self.rng.pct(60) {
                    "\"\"".to_string()
                } else {
                    self.path()
                };
                format!(
                    "faccessat2 {} {p} {} {flags}",
                    self.dir(),
                    self.access_mode()
                )
            }
            "chmod" => format!("chmod {} {}", self.path(), self.mode()),
            "fchmod" => format!("fchmod {} {}", self.handle(), self.mode()),
            "chown" | "lchown" => format!("{op} {} {} {}", self.path(), self.id(), self.id()),
            "fchown" => format!("fchown {} {} {}", self.handle(), self.id(), self.id()),
            "truncate" => format!("truncate {} {}", self.path(), self.length()),
            "ftruncate" => format!("ftruncate {} {}", self.handle(), self.length()),
            "open" => {
                let (flags, creates) = self.open_flags();
                let h = self.handle();
                let p = self.path();
                if creates {
                    format!("open {h} {p} {flags} {}", self.mode())
                } else {
                    format!("open {h} {p} {flags}")
                }
            }
            "openat" => {
                let (flags, creates) = self.open_flags();
                let h = self.handle();
                let d = self.dir();
                let p = self.path();
                if creates {
                    format!("openat {h} {d} {p} {flags} {}", self.mode())
                } else {
                    format!("openat {h} {d} {p} {flags}")
                }
            }
            "openat2" => {
                let (flags, creates) = self.open_flags();
                let h = self.handle();
                let d = self.dir();
                let p = self.path();
                let mode = if creates || self.rng.pct(5) {
                    self.mode()
                } else {
                    "0"
                };
                let r = self.resolve_flags();
                format!("openat2 {h} {d} {p} {flags} {mode} {r}")
            }
            "close" => {
                let h = self.handle();
                self.line(format!("close {h}"));
                format!("open {h} / O_PATH")
            }
            "dup" => format!("dup {} {}", self.handle(), self.handle()),
            "read" => format!(
                "read {} {}",
                self.handle(),
                self.rng.pick(&["0", "3", "100"])
            ),
            "pread" => format!(
                "pread {} {} {}",
                self.handle(),
                self.rng.pick(&["0", "4", "100"]),
                self.offset()
            ),
            "write" => format!("write {} {}", self.handle(), self.data()),
            "pwrite" => format!("pwrite {} {} {}", self.handle(), self.data(), self.offset()),
            "lseek" => format!(
                "lseek {} {} {}",
                self.handle(),
                self.seek_offset(),
                self.rng.pick(&[
                    "SEEK_SET",
                    "SEEK_CUR",
                    "SEEK_END",
                    "SEEK_DATA",
                    "SEEK_HOLE",
                    "7"
                ])
            ),
            "fsync" => format!("fsync {}", self.handle()),
            "getdents" => format!("getdents {}", self.handle()),
            "ls" => format!("ls {}", self.path()),
            "chdir" => format!("chdir {}", self.path()),
            "fchdir" => format!("fchdir {}", self.handle()),
            "chroot" => format!("chroot {}", self.path()),
            "getcwd" => "getcwd".into(),
            "umask" => format!("umask {}", self.rng.pick(&["0", "022", "077", "0777"])),
            "as" => {
                let (uid, gid, groups) = self.rng.weighted(&[
                    (30, ("0", "0", "")),
                    (25, ("1000", "1000", "")),
                    (15, ("1000", "100", " 1000,2000")),
                    (15, ("2000", "2000", " 100")),
                    (10, ("1000", "2000", "")),
                ]);
                self.unprivileged = uid != "0";
                format!("as {uid} {gid}{groups}")
            }
            "setxattr" | "lsetxattr" => {
                let flags = self
                    .rng
                    .pick(&["0", "XATTR_CREATE", "XATTR_REPLACE", "0x4"]);
                format!(
                    "{op} {} {} {} {flags}",
                    self.path(),
                    self.xattr_name(),
                    self.data()
                )
            }
            "getxattr" | "lgetxattr" | "removexattr" | "lremovexattr" => {
                format!("{op} {} {}", self.path(), self.xattr_name())
            }
            "listxattr" | "llistxattr" => format!("{op} {}", self.path()),
            "mount" => self.mount(),
            "umount" => {
                let flags = self.rng.weighted(&[
                    (40, "0"),
                    (25, "MNT_DETACH"),
                    (10, "MNT_EXPIRE"),
                    (8, "UMOUNT_NOFOLLOW"),
                    (5, "MNT_FORCE"),
                    (4, "MNT_DETACH|UMOUNT_NOFOLLOW"),
                    (4, "MNT_EXPIRE|MNT_DETACH"),
                    (4, "0x10"),
                ]);
                format!("umount {} {flags}", self.mount_path())
            }
            "pivot_root" => {
                let (n, o) = self.rng.pick(&[
                    ("/b", "/b/a"),
                    ("/a", "/a/b"),
                    ("/b", "/b"),
                    (".", "."),
                    ("/", "/a"),
                    ("/a", "/b"),
                ]);
                if self.rng.pct(70) {
                    format!("pivot_root {n} {o}")
                } else {
                    format!("pivot_root {} {}", self.mount_path(), self.mount_path())
                }
            }
            "mounts" => "mounts".into(),
            other => unreachable!("operation {other} has no generator arm"),
        };
        self.line(l);
    }

    fn access_mode(&mut self) -> &'static str {
        self.rng.pick(&[
            "F_OK",
            "R_OK",
            "W_OK",
            "X_OK",
            "R_OK|W_OK",
            "R_OK|X_OK",
            "0x8",
        ])
    }

    fn length(&mut self) -> &'static str {
        self.rng
            .pick(&["0", "2", "5", "4096", "9223372036854775807"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_script_and_every_script_parses() {
        for i in 0..300 {
            let s = generate(script_seed(7, i), 40);
            assert_eq!(s, generate(script_seed(7, i), 40));
            if let Err(e) = crate::ops::parse_script(s.as_bytes()) {
                panic!("generated script does not parse: {e}\n{s}");
            }
        }
        assert_ne!(
            generate(script_seed(7, 0), 40),
            generate(script_seed(7, 1), 40)
        );
    }

    #[test]
    fn byte_driven_scripts_parse() {
        let mut r = Rng::new(5);
        for len in [0usize, 1, 7, 64, 500] {
            let data: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
            let s = generate_from_bytes(&data, 50);
            assert!(crate::ops::parse_script(s.as_bytes()).is_ok(), "{s}");
            let mut input = b"mkdir /q 0755\nbogus line\n".to_vec();
            input.push(0);
            input.extend_from_slice(&data);
            let s = script_from_fuzz_input(&input, 50);
            assert!(
                s.starts_with("mkdir /q 0755\n") && !s.contains("bogus"),
                "{s}"
            );
            assert!(crate::ops::parse_script(s.as_bytes()).is_ok(), "{s}");
        }
    }

    #[test]
    fn tokens_quote_what_is_not_bare() {
        assert_eq!(token("a/b"), "a/b");
        assert_eq!(token(""), "\"\"");
        assert_eq!(token("#x"), "\"#x\"");
        assert_eq!(token("a\"b"), "\"a\\\"b\"");
    }
}
