//! The `verity` filesystem type: a read-only layer over a lower directory
//! whose every name, attribute, symlink target and data byte is checked
//! against one root hash.
//!
//! # Mounting
//!
//! ```text
//! mount -t verity none /v -o lower_path=/lower,root_hash=sha256:<hex>[,alg=sha256|sha512][,action=error|panic]
//! ```
//!
//! The lower directory carries the layout [`dir`](super::dir) documents:
//! `.tessera-verity/manifest` (the listing of the whole tree: paths, types,
//! modes, owners, sizes, file digests, symlink targets, device numbers) and
//! `.tessera-verity/objects/HEX.desc` / `HEX.tree` (each file's fs-verity
//! descriptor and Merkle tree). `tessera verity sign DIR` or [`sign_lower`]
//! writes it; the root hash is the hash of the manifest. At mount the
//! manifest is read and checked against `root_hash`; from then on the
//! manifest, not the lower layer, answers every question about names and
//! attributes, and the lower layer is only compared with it:
//!
//! - a lookup of a name the manifest lists finds the lower entry and
//!   compares its type, mode, owner, size, symlink target and device number;
//!   a listed name missing below, or a name present below but not listed, is
//!   a violation. Directories are [`Coherence::Revalidate`], so a cached
//!   entry is compared again on every walk: a lower file removed, renamed,
//!   replaced or chmod-ed after it was first looked up is caught on the next
//!   access, not only on the first;
//! - a directory read lists exactly the manifest's entries (the
//!   `.tessera-verity` store is never shown), after checking that the lower
//!   directory holds the same names;
//! - a regular file is read through a [`Verifier`] over the lower file and
//!   its stored tree, built once per inode (so the verified tree blocks are
//!   cached across opens); every byte returned has been hashed up to the
//!   file digest in the manifest;
//! - `stat` reports the manifest's mode, owner, group and size.
//!
//! A violation is `EIO` with `action=error` (the default). With
//! `action=panic` the type's violation hook runs first — the embedder's
//! abort path ([`VerityType::with_violation_hook`]); the default hook
//! aborts the process, as a kernel would panic — and the call then fails
//! with `EIO` in case the hook returns.
//!
//! Every change through the mount is `EROFS`.
//!
//! # Without a root hash
//!
//! Mounted without `root_hash`, the layer shows the lower directory as it
//! is (read-only, unchecked, the store still hidden). `FS_IOC_ENABLE_VERITY`
//! on any open file then signs the whole lower tree with the parameters the
//! ioctl names — writing the store into the lower layer, so the lower mount
//! must be writable — and from then on the mount behaves exactly as if it
//! had been mounted with the resulting root hash, which
//! [`VerityFs::root_hash`] and the mount options (`mountinfo`) show.
//!
//! # Ioctls
//!
//! Linux's numbers and argument layouts: `FS_IOC_ENABLE_VERITY` (see
//! above; the salt, which Linux passes by pointer, follows the 128-byte
//! `fsverity_enable_arg` in the argument buffer), `FS_IOC_MEASURE_VERITY`
//! (`struct fsverity_digest`: `u16` algorithm, `u16` size, the digest; the
//! same digest `fsverity digest` prints) and `FS_IOC_GETFLAGS`
//! (`FS_VERITY_FL` on verified regular files).
//!
//! # Credentials
//!
//! The lower layer is read (and, for `FS_IOC_ENABLE_VERITY`, written) with
//! the mounter's credentials, as overlayfs does: the caller's own
//! permission is checked against the manifest's modes by the VFS first.
//!
//! # Locking
//!
//! The filesystem's state (sealed or not) is behind one `RwLock`, each
//! inode's verifier and open lower file behind a mutex of the inode; none of
//! them is held across a call into the lower filesystem. `enable_lock`
//! serialises `FS_IOC_ENABLE_VERITY` and is held across the signing, which
//! calls into the lower filesystem but never back into this one.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::file::OpenFile;
use tessera_vfs::fstype::{FilesystemType, FsTypeOptions, MountData, MountRequest, NewFilesystem};
use tessera_vfs::inode::{Coherence, Ctx, DirEntry, FileOps, FilesystemOps, Inode, NewNode};
use tessera_vfs::mount::VirtualDentry;
use tessera_vfs::pathops::PathCtx;
use tessera_vfs::perm::Owner;
use tessera_vfs::Vfs;

use super::build::TreeBuilder;
use super::dir::{parse_root_hash, Entry, EntryKind, Manifest, META_DIR};
use super::hash::{Digest, HashAlg, MAX_SALT_SIZE};
use super::params::MerkleParams;
use super::source::ReadAt;
use super::verify::{Verifier, VerityError};

/// `FS_IOC_ENABLE_VERITY`: `_IOW('f', 133, struct fsverity_enable_arg)`.
pub const FS_IOC_ENABLE_VERITY: u32 = 0x4080_6685;
/// `FS_IOC_MEASURE_VERITY`: `_IOWR('f', 134, struct fsverity_digest)`.
pub const FS_IOC_MEASURE_VERITY: u32 = 0xc004_6686;
/// `FS_IOC_GETFLAGS`: `_IOR('f', 1, long)` on 64-bit Linux.
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
/// The inode flag of a verity file (`FS_VERITY_FL`).
pub const FS_VERITY_FL: u32 = 0x0010_0000;
/// Bytes in `struct fsverity_enable_arg`.
pub const ENABLE_ARG_SIZE: usize = 128;

/// The largest manifest a mount reads (about four million entries): a
/// bound, so that a corrupt lower layer cannot make the mount allocate
/// without limit.
const MAX_MANIFEST_SIZE: u64 = 256 << 20;
/// How much of a read is verified at a time (see `VerityInode::read`).
const READ_CHUNK: usize = 64 << 10;
/// The block size `statfs` reports when the lower layer cannot say.
const STATFS_BSIZE: u64 = 4096;
/// `ST_RDONLY` in `statfs`'s flags.
const ST_RDONLY: u64 = 1;

/// What an embedder's abort path receives: a description of the violation.
pub type ViolationHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What a mount does on a mismatch (`action=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `EIO`.
    Error,
    /// The violation hook, then `EIO`.
    Panic,
}

/// The `verity` filesystem type.
pub struct VerityType {
    hook: ViolationHook,
}

impl VerityType {
    /// A type whose `action=panic` mounts abort the process on a violation.
    pub fn new() -> VerityType {
        VerityType::with_violation_hook(Arc::new(|what: &str| {
            log::error!("verity violation, aborting: {what}");
            std::process::abort();
        }))
    }

    /// A type whose `action=panic` mounts call `hook` on a violation (the
    /// call then fails with `EIO` if the hook returns).
    pub fn with_violation_hook(hook: ViolationHook) -> VerityType {
        VerityType { hook }
    }
}

impl Default for VerityType {
    fn default() -> Self {
        VerityType::new()
    }
}

impl FilesystemType for VerityType {
    fn name(&self) -> &str {
        "verity"
    }

    fn options(&self) -> FsTypeOptions {
        FsTypeOptions {
            allow_user_mount: true,
            allow_user_list: true,
            nodev: true,
        }
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem> {
        let mut d: MountData = req.data.clone();
        let lower_path = d.take_value("lower_path")?.ok_or(Errno::EINVAL)?;
        let alg_opt = d
            .take_value("alg")?
            .map(|v| HashAlg::from_name(&v).ok_or(Errno::EINVAL))
            .transpose()?;
        let action = match d.take_value("action")?.as_deref() {
            None | Some("error") => Action::Error,
            Some("panic") => Action::Panic,
            Some(_) => return Err(Errno::EINVAL),
        };
        let root_hash = d
            .take_value("root_hash")?
            .map(|v| parse_hash_option(&v, alg_opt))
            .transpose()?;
        d.finish()?;
        let lower_root = req.lookup(lower_path.as_bytes())?;
        if !lower_root.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let fs = Arc::new(VerityFs {
            vfs: Arc::downgrade(req.vfs),
            cred: req.cred.clone(),
            lower_root: lower_root.clone(),
            lower_path,
            alg_opt,
            action,
            hook: self.hook.clone(),
            sealed: RwLock::new(None),
            enable_lock: Mutex::new(()),
        });
        if let Some((alg, hash)) = root_hash {
            let bytes = fs.read_store_file(b"manifest", MAX_MANIFEST_SIZE)?;
            if alg.hash(&bytes) != hash {
                return Err(fs.violation("manifest does not match the root hash".into()));
            }
            let manifest = match Manifest::parse(&bytes) {
                Ok(m) if m.params.alg() == alg => m,
                _ => return Err(fs.violation("manifest is malformed".into())),
            };
            let sealed = Sealed::new(manifest, hash).map_err(|why| fs.violation(why))?;
            *fs.sealed.write() = Some(Arc::new(sealed));
        }
        let root = Arc::new(VerityInode {
            fs: fs.clone(),
            path: Vec::new(),
            lower: lower_root,
            lower_parent: None,
            ftype: FileType::Directory,
            verifier: Mutex::new(None),
            lower_file: Mutex::new(None),
        });
        root.check_meta()?;
        Ok(NewFilesystem { ops: fs, root })
    }
}

/// Parses `root_hash=`: `alg:hex`, or bare hex of the `alg=` algorithm (or
/// of the one its length says). A prefix that disagrees with `alg=` is
/// `EINVAL`.
fn parse_hash_option(v: &str, alg_opt: Option<HashAlg>) -> Result<(HashAlg, Digest)> {
    let parsed = match (v.contains(':'), alg_opt) {
        (false, Some(alg)) => Digest::from_hex(alg, v).map(|d| (alg, d)),
        _ => parse_root_hash(v),
    };
    let (alg, hash) = parsed.ok_or(Errno::EINVAL)?;
    if alg_opt.is_some_and(|a| a != alg) {
        return Err(Errno::EINVAL);
    }
    Ok((alg, hash))
}

/// A signed tree: the trusted manifest, indexed.
struct Sealed {
    manifest: Manifest,
    root_hash: Digest,
    /// Path to entry index.
    index: HashMap<Vec<Vec<u8>>, usize>,
    /// A directory's entry index to its children's names and entry indexes.
    children: HashMap<usize, BTreeMap<Vec<u8>, usize>>,
}

impl Sealed {
    /// Indexes a manifest whose hash has been checked. A manifest that
    /// hashes right but does not describe a tree (no root directory, an
    /// entry below a non-directory) is refused with the reason.
    fn new(manifest: Manifest, root_hash: Digest) -> std::result::Result<Sealed, String> {
        let mut index = HashMap::with_capacity(manifest.entries.len());
        let mut children: HashMap<usize, BTreeMap<Vec<u8>, usize>> = HashMap::new();
        for (i, e) in manifest.entries.iter().enumerate() {
            if let EntryKind::Dir = e.kind {
                children.insert(i, BTreeMap::new());
            }
            if let Some((name, parent)) = e.path.split_last() {
                let Some(&p) = index.get(parent) else {
                    return Err(format!("{}: no parent directory", e.display_path()));
                };
                let Some(list) = children.get_mut(&p) else {
                    return Err(format!("{}: parent is not a directory", e.display_path()));
                };
                list.insert(name.clone(), i);
            } else if !matches!(e.kind, EntryKind::Dir) {
                return Err("the top is not a directory".into());
            }
            index.insert(e.path.clone(), i);
        }
        if !index.contains_key(&Vec::new()) {
            return Err("the top directory is not listed".into());
        }
        Ok(Sealed {
            manifest,
            root_hash,
            index,
            children,
        })
    }

    fn find(&self, path: &[Vec<u8>]) -> Option<(usize, &Entry)> {
        let i = *self.index.get(path)?;
        Some((i, self.manifest.entries.get(i)?))
    }
}

/// One `verity` instance.
pub struct VerityFs {
    /// Weak: the VFS holds this filesystem through its mounts.
    vfs: Weak<Vfs>,
    cred: Credentials,
    lower_root: VirtualDentry,
    lower_path: String,
    alg_opt: Option<HashAlg>,
    action: Action,
    hook: ViolationHook,
    sealed: RwLock<Option<Arc<Sealed>>>,
    enable_lock: Mutex<()>,
}

impl VerityFs {
    /// The root hash as `tessera verity sign` prints it (`sha256:<hex>`),
    /// once the mount is verified (mounted with one, or after
    /// `FS_IOC_ENABLE_VERITY`).
    pub fn root_hash(&self) -> Option<String> {
        let s = self.sealed.read().clone()?;
        Some(format!(
            "{}:{}",
            s.manifest.params.alg().name(),
            s.root_hash.to_hex()
        ))
    }

    fn sealed(&self) -> Option<Arc<Sealed>> {
        self.sealed.read().clone()
    }

    fn vfs(&self) -> Result<Arc<Vfs>> {
        self.vfs.upgrade().ok_or(Errno::EIO)
    }

    fn ctx(&self) -> PathCtx<'_> {
        PathCtx {
            cred: &self.cred,
            root: &self.lower_root,
            umask: 0,
        }
    }

    /// Reports a mismatch and returns the errno for it.
    fn violation(&self, what: String) -> Errno {
        log::warn!("verity violation under {}: {what}", self.lower_path);
        if self.action == Action::Panic {
            (self.hook)(&what);
        }
        Errno::EIO
    }

    /// The errno of a failed verified read: the source's own for an I/O
    /// error, a violation for a mismatch.
    fn read_error(&self, path: &str, e: VerityError) -> Errno {
        match e {
            VerityError::Io(errno) => errno,
            _ => self.violation(format!("{path}: {e}")),
        }
    }

    /// Reads `.tessera-verity/<name>` of the lower layer whole (at most
    /// `max` bytes: more is a violation).
    fn read_store_file(&self, name: &[u8], max: u64) -> Result<Vec<u8>> {
        let vfs = self.vfs()?;
        let mut path = META_DIR.as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(name);
        let ctx = self.ctx();
        let f = match open_lower(&vfs, &ctx, &self.lower_root, &path) {
            Ok(f) => f,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                return Err(self.violation(format!("{} is missing", String::from_utf8_lossy(&path))))
            }
            Err(e) => return Err(e),
        };
        let bytes = read_all(&f, max)?;
        match bytes {
            Some(b) => Ok(b),
            None => Err(self.violation(format!("{} is too large", String::from_utf8_lossy(&path)))),
        }
    }

    /// Looks `name` up in a lower directory, not following a final symlink.
    fn lower_child(&self, dir: &VirtualDentry, name: &[u8]) -> Result<VirtualDentry> {
        let vfs = self.vfs()?;
        vfs.lookup(&self.ctx(), dir, name, false, false)
    }

    /// The names in a lower directory, without `.`, `..` and (at the top)
    /// the store.
    fn lower_names(&self, dir: &VirtualDentry, top: bool) -> Result<Vec<(Vec<u8>, DirentType)>> {
        let vfs = self.vfs()?;
        let f = vfs.openat(
            &self.ctx(),
            dir,
            b".",
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
            0,
            ResolveFlags::empty(),
            false,
        )?;
        let mut out = f.getdents(&self.cred)?;
        out.retain(|(n, _)| n != b"." && n != b".." && !(top && n == META_DIR.as_bytes()));
        Ok(out)
    }

    /// Signs the lower tree and switches to verified mode.
    fn enable(&self, params: MerkleParams) -> Result<()> {
        let _g = self.enable_lock.lock();
        if self.sealed().is_some() {
            return Err(Errno::EEXIST);
        }
        let vfs = self.vfs()?;
        let manifest = sign_lower_with(&vfs, &self.cred, &self.lower_root, params)?;
        let hash = manifest.root_hash();
        let sealed = Sealed::new(manifest, hash).map_err(|why| self.violation(why))?;
        log::info!(
            "verity: {} signed, root hash {}:{}",
            self.lower_path,
            params.alg().name(),
            hash.to_hex()
        );
        *self.sealed.write() = Some(Arc::new(sealed));
        Ok(())
    }
}

impl FilesystemOps for VerityFs {
    fn is_readonly(&self) -> bool {
        true
    }

    fn statfs(&self) -> Result<Statfs> {
        let mut st = self.lower_root.mount.fs().ops().statfs().unwrap_or(Statfs {
            bsize: STATFS_BSIZE,
            namelen: NAME_MAX as u64,
            ..Default::default()
        });
        st.flags |= ST_RDONLY;
        Ok(st)
    }

    fn show_options(&self) -> String {
        let mut s = format!("lower_path={}", self.lower_path);
        if let Some(h) = self.root_hash() {
            s.push_str(",root_hash=");
            s.push_str(&h);
        } else if let Some(a) = self.alg_opt {
            s.push_str(",alg=");
            s.push_str(a.name());
        }
        if self.action == Action::Panic {
            s.push_str(",action=panic");
        }
        s
    }

    fn remount(&self, data: &MountData) -> Result<()> {
        // Nothing can change on a live mount: another root hash would be
        // another filesystem.
        data.finish()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

type LowerVerifier = Verifier<LowerFile, Box<dyn ReadAt + Send + Sync>>;

/// Positioned reads of a lower file through its open file description.
struct LowerFile(Arc<OpenFile>);

impl ReadAt for LowerFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Ok(off) = i64::try_from(offset) else {
            return Ok(0);
        };
        // The VFS refuses ranges that end past i64::MAX; nothing is there.
        let room = (i64::MAX - off) as u64;
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.0.pread(&mut buf[..n], off)
    }
}

/// One inode of a verity mount: a location in the lower layer and, once
/// verified, the manifest entry at the same path.
pub struct VerityInode {
    fs: Arc<VerityFs>,
    /// Components below the mount's root.
    path: Vec<Vec<u8>>,
    lower: VirtualDentry,
    /// The lower directory holding `lower` (`None` at the top): files are
    /// opened by name from it.
    lower_parent: Option<VirtualDentry>,
    ftype: FileType,
    /// Built on the first verified open, kept for the inode's life so its
    /// tree-block cache serves every open.
    verifier: Mutex<Option<Arc<LowerVerifier>>>,
    /// The lower file for unverified reads (no root hash yet).
    lower_file: Mutex<Option<Arc<OpenFile>>>,
}

impl VerityInode {
    fn display(&self) -> String {
        if self.path.is_empty() {
            return "/".into();
        }
        let mut s = String::new();
        for c in &self.path {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(c));
        }
        s
    }

    /// This inode's manifest entry, when the mount is verified. A path the
    /// manifest does not hold (an inode looked up before
    /// `FS_IOC_ENABLE_VERITY` of a file that was gone when the tree was
    /// signed) is a violation.
    fn entry(&self) -> Result<Option<(Arc<Sealed>, usize)>> {
        let Some(s) = self.fs.sealed() else {
            return Ok(None);
        };
        match s.find(&self.path) {
            Some((i, _)) => Ok(Some((s, i))),
            None => Err(self
                .fs
                .violation(format!("{}: not in the signed tree", self.display()))),
        }
    }

    /// Compares the lower entry with the manifest (when verified).
    fn check_meta(&self) -> Result<()> {
        let Some((s, i)) = self.entry()? else {
            return Ok(());
        };
        let e = &s.manifest.entries[i];
        match compare_meta(e, &self.lower) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(self.fs.violation(format!("{}: {why}", self.display()))),
            Err(errno) => Err(errno),
        }
    }

    /// Looks up a child, comparing it with the manifest when verified.
    fn lookup_child(&self, name: &[u8]) -> Result<Arc<VerityInode>> {
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(Errno::ENOENT);
        }
        let top = self.path.is_empty();
        if top && name == META_DIR.as_bytes() {
            return Err(Errno::ENOENT);
        }
        let mut path = self.path.clone();
        path.push(name.to_vec());
        let child_path = || {
            let mut s = self.display();
            if !top {
                s.push('/');
            }
            s.push_str(&String::from_utf8_lossy(name));
            s
        };
        let sealed = self.entry()?;
        let listed = match &sealed {
            Some((s, i)) => {
                let kids = s.children.get(i).ok_or(Errno::ENOTDIR)?;
                Some(kids.contains_key(name))
            }
            None => None,
        };
        let lower = match self.fs.lower_child(&self.lower, name) {
            Ok(l) => l,
            Err(Errno::ENOENT) if listed == Some(true) => {
                return Err(self.fs.violation(format!("{}: missing", child_path())));
            }
            Err(e) => return Err(e),
        };
        if listed == Some(false) {
            return Err(self
                .fs
                .violation(format!("{}: not in the signed tree", child_path())));
        }
        let child = Arc::new(VerityInode {
            fs: self.fs.clone(),
            path,
            ftype: lower.dentry.file_type(),
            lower,
            lower_parent: Some(self.lower.clone()),
            verifier: Mutex::new(None),
            lower_file: Mutex::new(None),
        });
        child.check_meta()?;
        Ok(child)
    }

    /// The verifier of a regular file, built on first use.
    fn verifier(&self, s: &Sealed, i: usize) -> Result<Arc<LowerVerifier>> {
        if let Some(v) = self.verifier.lock().clone() {
            return Ok(v);
        }
        let EntryKind::File { size, digest } = &s.manifest.entries[i].kind else {
            return Err(Errno::EINVAL);
        };
        let vfs = self.fs.vfs()?;
        let ctx = self.fs.ctx();
        let name = digest.to_hex();
        let desc = self
            .fs
            .read_store_file(format!("objects/{name}.desc").as_bytes(), 4096)?;
        let tree_path = format!("{META_DIR}/objects/{name}.tree").into_bytes();
        let tree: Box<dyn ReadAt + Send + Sync> =
            match open_lower(&vfs, &ctx, &self.fs.lower_root, &tree_path) {
                Ok(f) => Box::new(LowerFile(f)),
                // A file of at most one block has no tree; if one was
                // needed, its absence shows as a bad tree block on read.
                Err(Errno::ENOENT) => Box::new(Vec::new()),
                Err(e) => return Err(e),
            };
        let data = LowerFile(self.open_lower_file()?);
        let v = Verifier::with_digest(digest, &desc, data, tree)
            .map_err(|e| self.fs.read_error(&self.display(), e))?;
        if v.data_size() != *size {
            return Err(self.fs.violation(format!(
                "{}: descriptor size disagrees with the manifest",
                self.display()
            )));
        }
        let v = Arc::new(v);
        // Two first opens may race to build; the first stored wins, so all
        // share one cache.
        let mut slot = self.verifier.lock();
        Ok(slot.get_or_insert(v).clone())
    }

    fn open_lower_file(&self) -> Result<Arc<OpenFile>> {
        let parent = self.lower_parent.as_ref().ok_or(Errno::EISDIR)?;
        let name = self.path.last().ok_or(Errno::EISDIR)?;
        let vfs = self.fs.vfs()?;
        open_lower(&vfs, &self.fs.ctx(), parent, name)
    }

    /// The lower file for unverified reads, opened once.
    fn unverified_file(&self) -> Result<Arc<OpenFile>> {
        if let Some(f) = self.lower_file.lock().clone() {
            return Ok(f);
        }
        let f = self.open_lower_file()?;
        Ok(self.lower_file.lock().get_or_insert(f).clone())
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        match self.entry()? {
            Some((s, i)) => {
                let v = self.verifier(&s, i)?;
                // In chunks that stay in the CPU cache between the copy from
                // the lower file and the hashing: the lower layer cannot lend
                // its bytes in place, so each byte is copied, then hashed.
                // Chunks end on block boundaries, so no block is hashed twice.
                let bs = s.manifest.params.block_size() as u64;
                let chunk = READ_CHUNK.max(bs as usize) as u64;
                let mut done = 0;
                while done < buf.len() {
                    let pos = off.saturating_add(done as u64);
                    let stop = pos.saturating_add(chunk) / bs * bs;
                    let want = (buf.len() - done).min((stop - pos) as usize);
                    let n = v
                        .read_at(pos, &mut buf[done..done + want])
                        .map_err(|e| self.fs.read_error(&self.display(), e))?;
                    done += n;
                    if n < want {
                        break;
                    }
                }
                Ok(done)
            }
            None => {
                let off = i64::try_from(off).map_err(|_| Errno::EINVAL)?;
                self.unverified_file()?.pread(buf, off)
            }
        }
    }

    fn size(&self) -> u64 {
        if let Ok(Some((s, i))) = self.entry() {
            if let EntryKind::File { size, .. } = s.manifest.entries[i].kind {
                return size;
            }
        }
        self.lower.dentry.inode().stat().size
    }

    /// The directory's entries after `.` and `..`, each with its inode
    /// number.
    fn list(&self) -> Result<Vec<(Vec<u8>, DirentType, u64)>> {
        let top = self.path.is_empty();
        let Some((s, i)) = self.entry()? else {
            let vfs = self.fs.vfs()?;
            let ctx = self.fs.ctx();
            let mut out = Vec::new();
            for (name, dt) in self.fs.lower_names(&self.lower, top)? {
                let ino = vfs
                    .lookup(&ctx, &self.lower, &name, false, false)
                    .map(|vd| vd.dentry.inode().stat().ino)
                    .unwrap_or(0);
                out.push((name, dt, ino));
            }
            return Ok(out);
        };
        self.check_meta()?;
        let kids = s.children.get(&i).ok_or(Errno::ENOTDIR)?;
        let found: BTreeSet<Vec<u8>> = self
            .fs
            .lower_names(&self.lower, top)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some(n) = kids.keys().find(|n| !found.contains(*n)) {
            return Err(self.fs.violation(format!(
                "{}: {} is missing",
                self.display(),
                String::from_utf8_lossy(n)
            )));
        }
        if let Some(n) = found.iter().find(|n| !kids.contains_key(*n)) {
            return Err(self.fs.violation(format!(
                "{}: {} is not in the signed tree",
                self.display(),
                String::from_utf8_lossy(n)
            )));
        }
        Ok(kids
            .iter()
            .map(|(name, &k)| {
                let ft = FileType::from_mode(s.manifest.entries[k].mode);
                let dt = ft.map_or(DirentType::Unknown, FileType::dirent_type);
                (name.clone(), dt, k as u64 + 1)
            })
            .collect())
    }

    fn ino(&self) -> u64 {
        match self.entry() {
            Ok(Some((_, i))) => i as u64 + 1,
            _ => self.lower.dentry.inode().stat().ino,
        }
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        match cmd {
            FS_IOC_GETFLAGS => {
                let out = arg.get_mut(..4).ok_or(Errno::EFAULT)?;
                let verity = self.ftype == FileType::Regular && self.entry()?.is_some();
                let flags = if verity { FS_VERITY_FL } else { 0 };
                out.copy_from_slice(&flags.to_ne_bytes());
                Ok(0)
            }
            FS_IOC_MEASURE_VERITY => {
                if arg.len() < 4 {
                    return Err(Errno::EFAULT);
                }
                let Some((s, i)) = self.entry()? else {
                    return Err(Errno::ENODATA);
                };
                let EntryKind::File { digest, .. } = &s.manifest.entries[i].kind else {
                    return Err(Errno::ENODATA);
                };
                // Open verifies the descriptor; measuring a file whose
                // stored descriptor does not match would report a digest
                // its data cannot be read under.
                self.verifier(&s, i)?;
                let alg = s.manifest.params.alg();
                let size = alg.digest_size();
                let cap = usize::from(u16::from_ne_bytes([arg[2], arg[3]]));
                if cap < size || arg.len() < 4 + size {
                    return Err(Errno::EOVERFLOW);
                }
                arg[..2].copy_from_slice(&u16::from(alg.fsverity_id()).to_ne_bytes());
                arg[2..4].copy_from_slice(&(size as u16).to_ne_bytes());
                arg[4..4 + size].copy_from_slice(digest.as_bytes());
                Ok(0)
            }
            FS_IOC_ENABLE_VERITY => {
                match self.ftype {
                    FileType::Directory => return Err(Errno::EISDIR),
                    FileType::Regular => {}
                    _ => return Err(Errno::EINVAL),
                }
                let params = parse_enable_arg(arg)?;
                if self.fs.alg_opt.is_some_and(|a| a != params.alg()) {
                    return Err(Errno::EINVAL);
                }
                self.fs.enable(params)?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }
}

/// Decodes `struct fsverity_enable_arg`; the salt follows it in `arg`.
fn parse_enable_arg(arg: &[u8]) -> Result<MerkleParams> {
    let head = arg.get(..ENABLE_ARG_SIZE).ok_or(Errno::EFAULT)?;
    let u32_at =
        |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let (version, alg, block_size, salt_size) = (u32_at(0), u32_at(4), u32_at(8), u32_at(12));
    let sig_size = u32_at(24);
    // The reserved words must be zero, as Linux checks; pointers are
    // ignored (the salt comes after the struct here).
    if version != 1 || u32_at(28) != 0 || head[40..].iter().any(|&b| b != 0) {
        return Err(Errno::EINVAL);
    }
    if sig_size != 0 {
        // Built-in signatures are not supported.
        return Err(Errno::EINVAL);
    }
    let alg = u8::try_from(alg)
        .ok()
        .and_then(HashAlg::from_fsverity_id)
        .ok_or(Errno::EINVAL)?;
    let salt_size = salt_size as usize;
    if salt_size > MAX_SALT_SIZE {
        return Err(Errno::EMSGSIZE);
    }
    let salt = arg
        .get(ENABLE_ARG_SIZE..ENABLE_ARG_SIZE + salt_size)
        .ok_or(Errno::EFAULT)?;
    MerkleParams::new(alg, block_size as usize, salt)
}

/// Compares a lower location with its manifest entry; `Some(reason)` on a
/// mismatch.
fn compare_meta(e: &Entry, lower: &VirtualDentry) -> Result<Option<String>> {
    let st = lower.dentry.inode().stat();
    let kind_ok = match (&e.kind, lower.dentry.file_type()) {
        (EntryKind::Dir, FileType::Directory)
        | (EntryKind::File { .. }, FileType::Regular)
        | (EntryKind::Symlink { .. }, FileType::Symlink) => true,
        (EntryKind::Other { .. }, t) => !matches!(
            t,
            FileType::Directory | FileType::Regular | FileType::Symlink
        ),
        _ => false,
    };
    if !kind_ok {
        return Ok(Some("file type changed".into()));
    }
    if st.mode != e.mode {
        return Ok(Some(format!(
            "mode changed from {:o} to {:o}",
            e.mode, st.mode
        )));
    }
    if (st.uid, st.gid) != (e.uid, e.gid) {
        return Ok(Some("owner or group changed".into()));
    }
    match &e.kind {
        EntryKind::File { size, .. } if st.size != *size => {
            Ok(Some(format!("size changed from {size} to {}", st.size)))
        }
        EntryKind::Symlink { target } => {
            let found = lower.dentry.inode().readlink()?;
            Ok((found != *target).then(|| "symlink target changed".into()))
        }
        EntryKind::Other { rdev } if st.rdev.to_raw() != *rdev => {
            Ok(Some("device number changed".into()))
        }
        _ => Ok(None),
    }
}

impl Inode for VerityInode {
    fn file_type(&self) -> FileType {
        self.ftype
    }

    fn owner(&self) -> Owner {
        Owner::of_stat(&self.stat())
    }

    fn stat(&self) -> Statx {
        let mut st = self.lower.dentry.inode().stat();
        // `stat` cannot fail: a path the manifest lost shows the lower
        // attributes here and fails on every other call.
        if let Ok(Some((s, i))) = self.entry() {
            let e = &s.manifest.entries[i];
            st.mode = e.mode;
            st.uid = e.uid;
            st.gid = e.gid;
            st.ino = i as u64 + 1;
            match &e.kind {
                EntryKind::File { size, .. } => st.size = *size,
                EntryKind::Symlink { target } => st.size = target.len() as u64,
                EntryKind::Other { rdev } => st.rdev = DevId::from_raw(*rdev),
                EntryKind::Dir => {}
            }
        }
        st
    }

    fn setattr(&self, _ctx: &Ctx<'_>, _attr: &SetAttr) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn coherence(&self) -> Coherence {
        Coherence::Revalidate
    }

    fn lookup(&self, _ctx: &Ctx<'_>, name: &[u8]) -> Result<Arc<dyn Inode>> {
        if self.ftype != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.lookup_child(name)?)
    }

    fn revalidate(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> bool {
        let Some(child) = child.as_any().downcast_ref::<VerityInode>() else {
            return false;
        };
        // The same lower entry as before, and (verified) still matching the
        // manifest; else the VFS looks the name up again, which reports
        // what changed.
        match self.fs.lower_child(&self.lower, name) {
            Ok(l) if l.same(&child.lower) => child.check_meta().is_ok(),
            _ => false,
        }
    }

    fn create(&self, _ctx: &Ctx<'_>, _name: &[u8], _new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        Err(Errno::EROFS)
    }

    fn tmpfile(&self, _ctx: &Ctx<'_>, _new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        Err(Errno::EROFS)
    }

    fn link(&self, _ctx: &Ctx<'_>, _name: &[u8], _target: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn unlink(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn rmdir(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn is_empty_dir(&self, _ctx: &Ctx<'_>) -> Result<bool> {
        Ok(self.list()?.is_empty())
    }

    fn rename(
        &self,
        _ctx: &Ctx<'_>,
        _old_name: &[u8],
        _child: &Arc<dyn Inode>,
        _new_dir: &Arc<dyn Inode>,
        _new_name: &[u8],
        _replaced: Option<&Arc<dyn Inode>>,
        _flags: RenameFlags,
    ) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        if self.ftype != FileType::Symlink {
            return Err(Errno::EINVAL);
        }
        let found = self.lower.dentry.inode().readlink()?;
        match self.entry()? {
            None => Ok(found),
            Some((s, i)) => match &s.manifest.entries[i].kind {
                EntryKind::Symlink { target } if *target == found => Ok(found),
                _ => Err(self
                    .fs
                    .violation(format!("{}: symlink target changed", self.display()))),
            },
        }
    }

    fn open(self: Arc<Self>, flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        if flags.writable() || flags.contains(OpenFlags::O_TRUNC) {
            return Err(Errno::EROFS);
        }
        match self.ftype {
            FileType::Directory => Ok(Arc::new(VerityDir { inode: self })),
            FileType::Regular => {
                self.check_meta()?;
                if let Some((s, i)) = self.entry()? {
                    // The descriptor is checked at open, as Linux checks
                    // a verity file's descriptor (and signature) there.
                    self.verifier(&s, i)?;
                }
                Ok(Arc::new(VerityFile { inode: self }))
            }
            // FIFOs, sockets and devices are listed and checked but not
            // opened through the layer.
            _ => Err(Errno::ENXIO),
        }
    }

    fn getxattr(&self, _name: &[u8]) -> Result<Vec<u8>> {
        // Extended attributes are not covered by the root hash, so none is
        // shown.
        Err(Errno::EOPNOTSUPP)
    }

    fn setxattr(&self, _name: &[u8], _value: &[u8], _flags: XattrFlags) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn removexattr(&self, _name: &[u8]) -> Result<()> {
        Err(Errno::EROFS)
    }
}

/// An open regular file.
struct VerityFile {
    inode: Arc<VerityInode>,
}

impl FileOps for VerityFile {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.inode.read(off, buf)
    }

    fn write(&self, _ctx: &Ctx<'_>, _off: u64, _buf: &[u8], _append: bool) -> Result<(usize, u64)> {
        Err(Errno::EROFS)
    }

    fn size(&self) -> u64 {
        self.inode.size()
    }

    fn allocate(&self, _ctx: &Ctx<'_>, _mode: FallocFlags, _off: u64, _len: u64) -> Result<()> {
        Err(Errno::EROFS)
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        self.inode.ioctl(cmd, arg)
    }
}

/// An open directory. Offsets: 0 is `.`, 1 is `..`, `2 + k` the k-th entry.
struct VerityDir {
    inode: Arc<VerityInode>,
}

impl FileOps for VerityDir {
    fn readdir(&self, _ctx: &Ctx<'_>, off: u64) -> Result<Vec<DirEntry>> {
        let list = self.inode.list()?;
        let end = list.len() as u64 + 2;
        if off >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let me = self.inode.ino();
        for (at, name) in [(0u64, &b"."[..]), (1, &b".."[..])] {
            if off <= at {
                out.push(DirEntry {
                    name: name.to_vec(),
                    dtype: DirentType::Dir,
                    // `..`'s number is the parent's, which the layer does
                    // not hold; 0 is what readdir reports for unknown.
                    ino: if at == 0 { me } else { 0 },
                    next_off: at + 1,
                });
            }
        }
        let skip = off.saturating_sub(2) as usize;
        for (k, (name, dtype, ino)) in list.into_iter().enumerate().skip(skip) {
            out.push(DirEntry {
                name,
                dtype,
                ino,
                next_off: k as u64 + 3,
            });
        }
        Ok(out)
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        self.inode.ioctl(cmd, arg)
    }
}

/// Opens a lower file read-only, not following a final symlink.
fn open_lower(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    start: &VirtualDentry,
    path: &[u8],
) -> Result<Arc<OpenFile>> {
    vfs.openat(
        ctx,
        start,
        path,
        OpenFlags::O_RDONLY | OpenFlags::O_NOFOLLOW,
        0,
        ResolveFlags::empty(),
        false,
    )
}

/// Reads a whole file, or `None` if it holds more than `max` bytes.
fn read_all(f: &OpenFile, max: u64) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.pread(&mut buf, out.len() as i64)?;
        if n == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(&buf[..n.min(buf.len())]);
        if out.len() as u64 > max {
            return Ok(None);
        }
    }
}

/// Signs a lower tree through the VFS, as [`sign_dir`](super::dir::sign_dir)
/// signs a host directory: writes every regular file's descriptor and tree
/// and the manifest into `lower/.tessera-verity/` and returns the manifest,
/// whose [`Manifest::root_hash`] a `verity` mount of `lower` takes. Uses
/// root credentials; stale objects of an earlier signing are left (they are
/// named by content, so they never mislead).
///
/// # Errors
/// The first lower operation that fails.
pub fn sign_lower(vfs: &Vfs, lower: &VirtualDentry, params: MerkleParams) -> Result<Manifest> {
    sign_lower_with(vfs, &Credentials::root(), lower, params)
}

fn sign_lower_with(
    vfs: &Vfs,
    cred: &Credentials,
    lower: &VirtualDentry,
    params: MerkleParams,
) -> Result<Manifest> {
    let ctx = PathCtx {
        cred,
        root: lower,
        umask: 0,
    };
    // Hash everything first, so that nothing is written if a file cannot
    // be read; the trees are kept until then.
    let mut entries = Vec::new();
    let mut objects: Vec<(Digest, Vec<u8>, Vec<u8>)> = Vec::new();
    // An explicit worklist: a deep tree cannot overflow the stack.
    let mut work: Vec<(Vec<Vec<u8>>, VirtualDentry, Option<VirtualDentry>)> =
        vec![(Vec::new(), lower.clone(), None)];
    while let Some((comps, vd, parent)) = work.pop() {
        let st = vd.dentry.inode().stat();
        let kind = match vd.dentry.file_type() {
            FileType::Directory => {
                let f = vfs.openat(
                    &ctx,
                    &vd,
                    b".",
                    OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
                    0,
                    ResolveFlags::empty(),
                    false,
                )?;
                for (name, _) in f.getdents(cred)? {
                    if name == b"."
                        || name == b".."
                        || (comps.is_empty() && name == META_DIR.as_bytes())
                    {
                        continue;
                    }
                    let child = vfs.lookup(&ctx, &vd, &name, false, false)?;
                    let mut c = comps.clone();
                    c.push(name);
                    work.push((c, child, Some(vd.clone())));
                }
                EntryKind::Dir
            }
            FileType::Regular => {
                let (parent, name) = parent.as_ref().zip(comps.last()).ok_or(Errno::EINVAL)?;
                let f = open_lower(vfs, &ctx, parent, name)?;
                let mut b = TreeBuilder::new(params);
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0i64;
                loop {
                    let n = f.pread(&mut buf, off)?;
                    if n == 0 {
                        break;
                    }
                    b.update(&buf[..n.min(buf.len())]);
                    off += n as i64;
                }
                let tree = b.finish();
                let digest = tree.digest();
                let size = tree.descriptor().data_size;
                let desc = tree.descriptor().to_bytes().to_vec();
                objects.push((digest, desc, tree.into_tree_bytes()));
                EntryKind::File { size, digest }
            }
            FileType::Symlink => EntryKind::Symlink {
                target: vd.dentry.inode().readlink()?,
            },
            _ => EntryKind::Other {
                rdev: st.rdev.to_raw(),
            },
        };
        entries.push(Entry {
            path: comps,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            kind,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let meta = ensure_dir(vfs, &ctx, lower, META_DIR.as_bytes())?;
    let objdir = ensure_dir(vfs, &ctx, &meta, b"objects")?;
    for (digest, desc, tree) in &objects {
        let hex = digest.to_hex();
        write_lower(vfs, &ctx, &objdir, format!("{hex}.desc").as_bytes(), desc)?;
        if !tree.is_empty() {
            write_lower(vfs, &ctx, &objdir, format!("{hex}.tree").as_bytes(), tree)?;
        }
    }
    let manifest = Manifest { params, entries };
    write_lower(vfs, &ctx, &meta, b"manifest", &manifest.to_bytes())?;
    Ok(manifest)
}

/// The directory `name` in `dir`, made if missing; a non-directory there
/// is removed first.
fn ensure_dir(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    dir: &VirtualDentry,
    name: &[u8],
) -> Result<VirtualDentry> {
    match vfs.lookup(ctx, dir, name, false, false) {
        Ok(vd) if vd.dentry.is_dir() => return Ok(vd),
        Ok(_) => vfs.unlinkat(ctx, dir, name, AtFlags::empty())?,
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    vfs.mkdirat(ctx, dir, name, 0o755)?;
    vfs.lookup(ctx, dir, name, false, false)
}

/// Replaces the contents of the file `name` in `dir` with `bytes`.
fn write_lower(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    dir: &VirtualDentry,
    name: &[u8],
    bytes: &[u8],
) -> Result<()> {
    let f = vfs.openat(
        ctx,
        dir,
        name,
        OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_TRUNC | OpenFlags::O_NOFOLLOW,
        0o644,
        ResolveFlags::empty(),
        false,
    )?;
    let mut done = 0;
    while done < bytes.len() {
        let n = f.pwrite(ctx.cred, &bytes[done..], done as i64)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        done += n;
    }
    Ok(())
}
