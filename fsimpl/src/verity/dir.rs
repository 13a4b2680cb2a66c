//! One root hash for a whole directory tree: `tessera verity sign` and
//! `check`.
//!
//! # What the root hash covers
//!
//! Every entry under the directory, the directory itself included: its path,
//! type, full `st_mode` (type and permission bits, setuid and sticky
//! included), owner and group, and
//! - for a regular file, its size and its fs-verity file digest (so each
//!   file can later be checked block by block as it is read);
//! - for a symlink, its target bytes;
//! - for a device, FIFO or socket, its `st_rdev`;
//! - for a directory, nothing more: its listing is exactly the set of entries
//!   whose path is directly below it, all of which are listed.
//!
//! So no file can be added, removed, renamed, retargeted, chmod-ed, chown-ed
//! or changed without changing the root hash. Timestamps, link counts and
//! inode numbers are not covered: copying a tree changes them and they do
//! not change what a reader sees in the files. Extended attributes are not
//! covered yet.
//!
//! # On-disk layout
//!
//! Everything lives in one hidden directory at the top of the signed tree,
//! which the signing itself skips (and the future `verity` filesystem will
//! hide from listings):
//!
//! ```text
//! DIR/.tessera-verity/manifest            the directory descriptor below
//! DIR/.tessera-verity/objects/HEX.desc    a file's 256-byte fs-verity descriptor
//! DIR/.tessera-verity/objects/HEX.tree    its Merkle tree (absent if it has none)
//! ```
//!
//! `HEX` is the file's fs-verity digest in hex. Naming trees by content
//! rather than by path means identical files share one tree, a renamed file
//! keeps its tree, and no name in the signed tree can collide with a tree's
//! name (a per-file sibling such as `a.tree` could be a real file).
//!
//! # The manifest (format version 1)
//!
//! All integers little-endian. The root hash is the manifest's hash with the
//! manifest's algorithm, printed as `sha256:<hex>`.
//!
//! ```text
//! magic        8 bytes  "TSVDIR\0\x01"
//! hash_alg     u8       1 = SHA-256, 2 = SHA-512 (fs-verity's numbers)
//! log2 block   u8       the files' tree block size
//! salt_size    u8       0..=32
//! reserved     5 bytes  zero
//! salt         32 bytes zero-padded
//! count        u64      number of entries
//! entries, sorted by path compared component by component (so a parent
//! comes before its children and siblings are in byte order), no duplicates:
//!   path_len   u32, then the path: components joined by '/', relative to
//!              DIR; the empty path is DIR itself
//!   kind       u8       1 directory, 2 regular file, 3 symlink, 4 other
//!   mode       u32      st_mode
//!   uid, gid   u32, u32
//!   regular:   u64 size, then the file digest (digest-size bytes)
//!   symlink:   u32 target_len, then the target bytes
//!   other:     u64 rdev
//! ```
//!
//! The parser refuses anything that is not in this canonical form, so one
//! tree has exactly one manifest.

use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::build::build_tree_from_reader;
use super::hash::{Digest, HashAlg};
use super::params::MerkleParams;
use super::source::io_errno;
use super::verify::{Verifier, VerityError};
use tessera_vfs::Errno;

/// The hidden directory that holds the manifest and the trees.
pub const META_DIR: &str = ".tessera-verity";

const MAGIC: &[u8; 8] = b"TSVDIR\0\x01";
const HEADER_SIZE: usize = 8 + 8 + 32 + 8;

/// A failure to read or write the tree, with the path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {errno}", path.display())]
pub struct PathError {
    /// The path that failed.
    pub path: PathBuf,
    /// Why.
    pub errno: Errno,
}

fn at(path: &Path) -> impl Fn(std::io::Error) -> PathError + '_ {
    move |e| PathError {
        path: path.to_path_buf(),
        errno: io_errno(&e),
    }
}

/// What a manifest entry says beyond path, mode and owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes with fs-verity digest `digest`.
    File {
        /// Size in bytes.
        size: u64,
        /// The file's fs-verity digest.
        digest: Digest,
    },
    /// A symbolic link.
    Symlink {
        /// The target, as stored.
        target: Vec<u8>,
    },
    /// A device, FIFO or socket.
    Other {
        /// `st_rdev`.
        rdev: u64,
    },
}

/// One entry of a signed tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path components below the signed directory (empty for itself).
    pub path: Vec<Vec<u8>>,
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Type-specific contents.
    pub kind: EntryKind,
}

impl Entry {
    /// The path as `check` prints it: `.` for the top, else `a/b/c`.
    pub fn display_path(&self) -> String {
        display_path(&self.path)
    }
}

fn display_path(path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    String::from_utf8_lossy(&path.join(&b'/')).into_owned()
}

/// A decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// How the files' trees were built.
    pub params: MerkleParams,
    /// The entries, in canonical order.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let p = &self.params;
        let mut b = Vec::with_capacity(HEADER_SIZE + 64 * self.entries.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&[
            p.alg().fsverity_id(),
            p.log_block_size(),
            p.salt().len() as u8,
        ]);
        b.extend_from_slice(&[0; 5]);
        let mut salt = [0u8; 32];
        salt[..p.salt().len()].copy_from_slice(p.salt());
        b.extend_from_slice(&salt);
        b.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            let path = e.path.join(&b'/');
            b.extend_from_slice(&(path.len() as u32).to_le_bytes());
            b.extend_from_slice(&path);
            let kind = match e.kind {
                EntryKind::Dir => 1u8,
                EntryKind::File { .. } => 2,
                EntryKind::Symlink { .. } => 3,
                EntryKind::Other { .. } => 4,
            };
            b.push(kind);
            for v in [e.mode, e.uid, e.gid] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            match &e.kind {
                EntryKind::Dir => {}
                EntryKind::File { size, digest } => {
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(digest.as_bytes());
                }
                EntryKind::Symlink { target } => {
                    b.extend_from_slice(&(target.len() as u32).to_le_bytes());
                    b.extend_from_slice(target);
                }
                EntryKind::Other { rdev } => b.extend_from_slice(&rdev.to_le_bytes()),
            }
        }
        b
    }

    /// The root hash: the manifest's bytes hashed with its algorithm.
    pub fn root_hash(&self) -> Digest {
        self.params.alg().hash(&self.to_bytes())
    }

    /// Decodes canonical manifest bytes.
    ///
    /// # Errors
    /// `EINVAL` for anything malformed or not canonical.
    pub fn parse(b: &[u8]) -> Result<Manifest, Errno> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(Errno::EINVAL);
        }
        let head = r.take(8)?;
        let alg = HashAlg::from_fsverity_id(head[0]).ok_or(Errno::EINVAL)?;
        let block_size = 1usize
            .checked_shl(u32::from(head[1]))
            .ok_or(Errno::EINVAL)?;
        let salt_len = usize::from(head[2]);
        let salt = r.take(32)?;
        if head[3..] != [0; 5] || salt_len > 32 || salt[salt_len..].iter().any(|&x| x != 0) {
            return Err(Errno::EINVAL);
        }
        let params =
            MerkleParams::new(alg, block_size, &salt[..salt_len]).map_err(|_| Errno::EINVAL)?;
        let count = r.u64()?;
        let mut entries: Vec<Entry> = Vec::new();
        for _ in 0..count {
            let len = r.u32()? as usize;
            let raw = r.take(len)?;
            let path: Vec<Vec<u8>> = if raw.is_empty() {
                Vec::new()
            } else {
                raw.split(|&c| c == b'/').map(<[u8]>::to_vec).collect()
            };
            if path
                .iter()
                .any(|c| c.is_empty() || c == b"." || c == b".." || c.contains(&0))
            {
                return Err(Errno::EINVAL);
            }
            let kind = r.u8()?;
            let (mode, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
            let kind = match kind {
                1 => EntryKind::Dir,
                2 => EntryKind::File {
                    size: r.u64()?,
                    digest: Digest::from_slice(r.take(alg.digest_size())?),
                },
                3 => {
                    let n = r.u32()? as usize;
                    EntryKind::Symlink {
                        target: r.take(n)?.to_vec(),
                    }
                }
                4 => EntryKind::Other { rdev: r.u64()? },
                _ => return Err(Errno::EINVAL),
            };
            if let Some(prev) = entries.last() {
                if prev.path >= path {
                    return Err(Errno::EINVAL);
                }
            }
            entries.push(Entry {
                path,
                mode,
                uid,
                gid,
                kind,
            });
        }
        if r.at != b.len() {
            return Err(Errno::EINVAL);
        }
        Ok(Manifest { params, entries })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Errno> {
        let end = self.at.checked_add(n).ok_or(Errno::EINVAL)?;
        let s = self.b.get(self.at..end).ok_or(Errno::EINVAL)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Errno> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Errno> {
        let mut v = [0u8; 4];
        v.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(v))
    }
    fn u64(&mut self) -> Result<u64, Errno> {
        let mut v = [0u8; 8];
        v.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(v))
    }
}

fn full_path(root: &Path, comps: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// Lists the tree under `root` (without following symlinks, skipping the
/// top-level [`META_DIR`]), in canonical order. Regular files get a zero
/// digest here; signing fills it in.
fn scan(root: &Path, alg: HashAlg) -> Result<Vec<Entry>, PathError> {
    let mut out = Vec::new();
    // An explicit worklist rather than recursion: a deep tree cannot
    // overflow the stack.
    let mut work: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    while let Some(comps) = work.pop() {
        let path = full_path(root, &comps);
        let md = fs::symlink_metadata(&path).map_err(at(&path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            for child in fs::read_dir(&path).map_err(at(&path))? {
                let child = child.map_err(at(&path))?;
                let name = child.file_name().as_bytes().to_vec();
                if comps.is_empty() && name == META_DIR.as_bytes() {
                    continue;
                }
                let mut c = comps.clone();
                c.push(name);
                work.push(c);
            }
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File {
                size: md.len(),
                digest: Digest::zero(alg),
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(at(&path))?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else {
            EntryKind::Other { rdev: md.rdev() }
        };
        out.push(Entry {
            path: comps,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            kind,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn object_path(meta: &Path, digest: &Digest, ext: &str) -> PathBuf {
    meta.join("objects")
        .join(format!("{}.{ext}", digest.to_hex()))
}

/// Signs the tree under `root`: writes every regular file's descriptor and
/// Merkle tree and the manifest into `root/.tessera-verity/` (replacing a
/// previous signing), and returns the manifest, whose
/// [`Manifest::root_hash`] is the tree's root hash.
///
/// # Errors
/// The first path that could not be read or written.
pub fn sign_dir(root: &Path, params: MerkleParams) -> Result<Manifest, PathError> {
    let meta = root.join(META_DIR);
    match fs::symlink_metadata(&meta) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(&meta).map_err(at(&meta))?,
        Ok(_) => fs::remove_file(&meta).map_err(at(&meta))?,
        Err(_) => {}
    }
    let mut entries = scan(root, params.alg())?;
    let objects = meta.join("objects");
    fs::create_dir_all(&objects).map_err(at(&objects))?;
    for e in &mut entries {
        if let EntryKind::File { size, digest } = &mut e.kind {
            let path = full_path(root, &e.path);
            let file = fs::File::open(&path).map_err(at(&path))?;
            let tree = build_tree_from_reader(params, file).map_err(|errno| PathError {
                path: path.clone(),
                errno,
            })?;
            // The file may have changed since it was listed; the manifest
            // records what was hashed.
            *size = tree.descriptor().data_size;
            *digest = tree.digest();
            let desc = object_path(&meta, digest, "desc");
            fs::write(&desc, tree.descriptor().to_bytes()).map_err(at(&desc))?;
            if !tree.tree_bytes().is_empty() {
                let t = object_path(&meta, digest, "tree");
                fs::write(&t, tree.tree_bytes()).map_err(at(&t))?;
            }
        }
    }
    let manifest = Manifest { params, entries };
    let path = meta.join("manifest");
    let mut f = fs::File::create(&path).map_err(at(&path))?;
    f.write_all(&manifest.to_bytes()).map_err(at(&path))?;
    f.sync_all().map_err(at(&path))?;
    Ok(manifest)
}

/// What `check` found wrong with one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The manifest does not hash to the expected root hash (or cannot be
    /// read or decoded): nothing else can be trusted.
    Manifest(String),
    /// Listed in the manifest but not there.
    Missing,
    /// There but not listed.
    Unexpected,
    /// A different type of file.
    Kind,
    /// Different `st_mode` bits.
    Mode {
        /// Signed mode.
        signed: u32,
        /// Found mode.
        found: u32,
    },
    /// A different owner or group.
    Owner,
    /// A symlink points elsewhere.
    Target,
    /// A device number changed.
    Rdev,
    /// A regular file's size differs.
    Size {
        /// Signed size.
        signed: u64,
        /// Found size.
        found: u64,
    },
    /// A regular file's contents, descriptor or tree does not verify.
    Content(VerityError),
    /// The file, its descriptor or its tree could not be read.
    Unreadable(Errno),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Manifest(why) => write!(f, "manifest: {why}"),
            Problem::Missing => f.write_str("missing"),
            Problem::Unexpected => f.write_str("not in the signed tree"),
            Problem::Kind => f.write_str("file type changed"),
            Problem::Mode { signed, found } => {
                write!(f, "mode changed from {signed:o} to {found:o}")
            }
            Problem::Owner => f.write_str("owner or group changed"),
            Problem::Target => f.write_str("symlink target changed"),
            Problem::Rdev => f.write_str("device number changed"),
            Problem::Size { signed, found } => {
                write!(f, "size changed from {signed} to {found}")
            }
            Problem::Content(e) => write!(f, "{e}"),
            Problem::Unreadable(e) => write!(f, "cannot read: {e}"),
        }
    }
}

/// One finding of `check`: a path (as [`Entry::display_path`] prints it)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The path, relative to the checked directory (`.` for itself).
    pub path: String,
    /// What does not match.
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Parses a root hash as `sign` prints it (`sha256:<hex>`), or bare hex
/// whose length says the algorithm.
pub fn parse_root_hash(s: &str) -> Option<(HashAlg, Digest)> {
    let (alg, hex) = match s.split_once(':') {
        Some((name, hex)) => (HashAlg::from_name(name)?, hex),
        None => match s.len() {
            64 => (HashAlg::Sha256, s),
            128 => (HashAlg::Sha512, s),
            _ => return None,
        },
    };
    Some((alg, Digest::from_hex(alg, hex)?))
}

/// Checks the tree under `root` against `root_hash`: the manifest, then
/// every entry's metadata, then every regular file's contents through its
/// stored descriptor and tree. Returns every finding (empty: all matches).
///
/// # Errors
/// A path that could not be listed (a missing or unreadable tree is a
/// finding, not an error).
pub fn check_dir(root: &Path, alg: HashAlg, root_hash: &Digest) -> Result<Vec<Finding>, PathError> {
    let meta = root.join(META_DIR);
    let manifest_path = meta.join("manifest");
    let whole = |why: String| {
        vec![Finding {
            path: ".".to_string(),
            problem: Problem::Manifest(why),
        }]
    };
    let bytes = match fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) => return Ok(whole(format!("cannot read: {}", io_errno(&e)))),
    };
    if alg.hash(&bytes) != *root_hash {
        return Ok(whole("does not match the root hash".to_string()));
    }
    let manifest = match Manifest::parse(&bytes) {
        Ok(m) if m.params.alg() == alg => m,
        _ => return Ok(whole("malformed".to_string())),
    };
    let found = scan(root, alg)?;
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let signed = &manifest.entries;
    while i < signed.len() || j < found.len() {
        let order = match (signed.get(i), found.get(j)) {
            (Some(s), Some(f)) => s.path.cmp(&f.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                out.push(Finding {
                    path: signed[i].display_path(),
                    problem: Problem::Missing,
                });
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(Finding {
                    path: found[j].display_path(),
                    problem: Problem::Unexpected,
                });
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                for problem in compare(root, &meta, &signed[i], &found[j]) {
                    out.push(Finding {
                        path: signed[i].display_path(),
                        problem,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(out)
}

fn compare(root: &Path, meta: &Path, s: &Entry, f: &Entry) -> Vec<Problem> {
    let mut out = Vec::new();
    if std::mem::discriminant(&s.kind) != std::mem::discriminant(&f.kind) {
        out.push(Problem::Kind);
        return out;
    }
    if s.mode != f.mode {
        out.push(Problem::Mode {
            signed: s.mode,
            found: f.mode,
        });
    }
    if (s.uid, s.gid) != (f.uid, f.gid) {
        out.push(Problem::Owner);
    }
    match (&s.kind, &f.kind) {
        (EntryKind::Symlink { target: a }, EntryKind::Symlink { target: b }) if a != b => {
            out.push(Problem::Target)
        }
        (EntryKind::Other { rdev: a }, EntryKind::Other { rdev: b }) if a != b => {
            out.push(Problem::Rdev)
        }
        (EntryKind::File { size, digest }, EntryKind::File { size: found, .. }) => {
            if size != found {
                out.push(Problem::Size {
                    signed: *size,
                    found: *found,
                });
            }
            if let Err(p) = verify_file(&full_path(root, &s.path), meta, digest) {
                out.push(p);
            }
        }
        _ => {}
    }
    out
}

/// Reads a whole file through its stored descriptor and tree.
fn verify_file(path: &Path, meta: &Path, digest: &Digest) -> Result<(), Problem> {
    let unreadable = |e: std::io::Error| Problem::Unreadable(io_errno(&e));
    let desc = fs::read(object_path(meta, digest, "desc")).map_err(unreadable)?;
    let data = fs::File::open(path).map_err(unreadable)?;
    if !data.metadata().map_err(unreadable)?.is_file() {
        return Err(Problem::Kind);
    }
    let tree: Box<dyn super::ReadAt> = match fs::File::open(object_path(meta, digest, "tree")) {
        Ok(t) => Box::new(t),
        // A file of at most one block has no tree; if one was needed, its
        // absence shows up as a bad tree block.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Box::new(Vec::new()),
        Err(e) => return Err(unreadable(e)),
    };
    let v = Verifier::with_digest(digest, &desc, data, tree).map_err(Problem::Content)?;
    v.verify_all().map_err(Problem::Content)
}
