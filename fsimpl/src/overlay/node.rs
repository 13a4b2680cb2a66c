//! The overlay's superblock, inodes and open files (see the module doc of
//! [`super`] for the rules and the locking).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::dentry::Dentry;
use tessera_vfs::fstype::{MountRequest, NewFilesystem};
use tessera_vfs::inode::{Coherence, Ctx, DirEntry, FileOps, FilesystemOps, Inode, NewNode};
use tessera_vfs::mount::{MntFlags, Mount, VirtualDentry};
use tessera_vfs::pathops::PathCtx;
use tessera_vfs::perm::Owner;
use tessera_vfs::Vfs;

/// The prefix of the attributes overlayfs keeps for itself.
const TRUSTED_PREFIX: &[u8] = b"trusted.overlay.";
/// The prefix with `userxattr`.
const USER_PREFIX: &[u8] = b"user.overlay.";
const OPAQUE: &[u8] = b"opaque";
const ORIGIN: &[u8] = b"origin";
const IMPURE: &[u8] = b"impure";
const UUID: &[u8] = b"uuid";
/// The mark of an index directory: the upper root it indexes.
const UPPER: &[u8] = b"upper";
/// The index directory made in `workdir=` with `index=on`.
const INDEX_NAME: &[u8] = b"index";
/// The directory a `volatile` mount leaves in the work directory, and the
/// one in it that makes later mounts refuse the work directory.
const INCOMPAT: &[u8] = b"incompat";
const VOLATILE: &[u8] = b"volatile";

/// The names of the attributes overlayfs keeps for itself: under
/// `trusted.overlay.`, or `user.overlay.` with `userxattr`.
#[derive(Clone, Copy)]
struct Marks(&'static [u8]);

impl Marks {
    fn name(self, what: &[u8]) -> Vec<u8> {
        [self.0, what].concat()
    }

    fn is_private(self, name: &[u8]) -> bool {
        name.starts_with(self.0)
    }

    /// The layer name of an attribute named through the overlay: the
    /// overlay's own names are stored one level down
    /// (`trusted.overlay.overlay.X` for `trusted.overlay.X`), so that no
    /// caller can forge or read the real marks.
    fn escape(self, name: &[u8]) -> Vec<u8> {
        match name.strip_prefix(self.0) {
            Some(rest) => [self.0, b"overlay.", rest].concat(),
            None => name.to_vec(),
        }
    }

    /// The name a layer attribute is listed under through the overlay: an
    /// escaped one without its escape, a real mark not at all.
    fn unescape(self, name: Vec<u8>) -> Option<Vec<u8>> {
        match name.strip_prefix(self.0) {
            Some(rest) => rest.strip_prefix(b"overlay.").map(|r| [self.0, r].concat()),
            None => Some(name),
        }
    }

    /// Whether a layer directory is marked opaque.
    fn is_opaque(self, vd: &VirtualDentry) -> bool {
        vd.dentry
            .inode()
            .getxattr(&self.name(OPAQUE))
            .is_ok_and(|v| v.as_slice() == b"y")
    }
}
/// The name of the directory made in `workdir=`.
const WORK_NAME: &[u8] = b"work";
/// How deep a stale work directory is emptied before it is made again:
/// its entries, and the entries of its directories (deeper ones are
/// removed only when empty).
const CLEANUP_DEPTH: usize = 2;
/// Copy-up moves data in chunks of this size.
const COPY_CHUNK: usize = 64 << 10;
/// Options that take a value from a fixed set and change nothing here
/// (the features they switch are not implemented; their default is what
/// this overlay does).
const ENUM_OPTIONS: [(&str, &[&str]); 7] = [
    ("redirect_dir", &["on", "off", "follow", "nofollow"]),
    ("index", &["on", "off"]),
    ("xino", &["on", "off", "auto"]),
    ("metacopy", &["on", "off"]),
    ("nfs_export", &["on", "off"]),
    ("uuid", &["on", "off", "null", "auto"]),
    ("verity", &["on", "off", "require"]),
];

/// One overlay instance: its layers (private clones) and the mounter.
pub struct OverlayFs {
    /// Weak: the VFS holds this filesystem through its mounts.
    vfs: Weak<Vfs>,
    /// The mounter, whose credentials reach the layers.
    cred: Credentials,
    /// The upper layer's root, on the clone shared with `work`.
    upper: Option<VirtualDentry>,
    /// Where temporary entries and the shared whiteout are made:
    /// `workdir/work`, or `workdir/index` with `index=on`; `None` when the
    /// work directory could not be made (the overlay is read-only).
    work: Option<VirtualDentry>,
    /// The lower layers looked up in, top first.
    lowers: Vec<VirtualDentry>,
    /// The options as given, for `mountinfo`.
    shown: String,
    /// Where the overlay's own attributes live.
    marks: Marks,
    /// Temporary names in the work directory (`#N`).
    next_temp: AtomicU64,
    /// The whiteout every removal links to, once made.
    whiteout: Mutex<Option<VirtualDentry>>,
}

/// Resolves a layer path option: a directory, or `EINVAL`.
fn layer_dir(req: &MountRequest<'_>, path: &str) -> Result<VirtualDentry> {
    if path.is_empty() {
        return Err(Errno::EINVAL);
    }
    let vd = req.lookup(path.as_bytes())?;
    if !vd.dentry.is_dir() {
        return Err(Errno::EINVAL);
    }
    Ok(vd)
}

/// Splits a `lowerdir=` value into layers: `(path, data_only)`. `\`
/// escapes the next byte; `::` starts the data-only layers; an empty layer
/// is `EINVAL`.
fn split_lowers(v: &str) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut data = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => {
                if cur.is_empty() {
                    return Err(Errno::EINVAL);
                }
                out.push((std::mem::take(&mut cur), data));
                if chars.peek() == Some(&':') {
                    chars.next();
                    data = true;
                }
            }
            c => cur.push(c),
        }
    }
    if cur.is_empty() {
        return Err(Errno::EINVAL);
    }
    out.push((cur, data));
    Ok(out)
}

/// A private clone of the mount holding `vd`, rooted at that mount's root,
/// and `vd` on it.
fn clone_layer(vfs: &Vfs, vd: &VirtualDentry, flags: MntFlags) -> VirtualDentry {
    let whole = VirtualDentry::new(vd.mount.clone(), vd.mount.root().clone());
    let m = vfs.new_disconnected_mount(&whole, flags);
    VirtualDentry::new(m, vd.dentry.clone())
}

/// Whether `a` is `b` or below it in their filesystem's tree.
fn is_at_or_below(a: &Arc<Dentry>, b: &Arc<Dentry>) -> bool {
    let mut cur = Some(a.clone());
    while let Some(d) = cur {
        if Arc::ptr_eq(&d, b) {
            return true;
        }
        cur = d.parent();
    }
    false
}

/// A directory's identity for the overlap checks (Linux's trap inodes).
fn inode_key(d: &Arc<Dentry>) -> *const () {
    Arc::as_ptr(d.inode()) as *const ()
}

/// Builds an overlay from the mount request (see the module doc).
pub(super) fn mount(req: &MountRequest<'_>) -> Result<NewFilesystem> {
    let mut d = req.data.clone();
    let mut keys = vec![
        "lowerdir",
        "lowerdir+",
        "datadir+",
        "upperdir",
        "workdir",
        "userxattr",
        "volatile",
        "default_permissions",
    ];
    keys.extend(ENUM_OPTIONS.iter().map(|(k, _)| *k));
    let opts = d.take_each(&keys);
    d.finish()?;
    // Paths are resolved as each option is parsed, as Linux's parser does.
    let mut lowers: Vec<(VirtualDentry, bool)> = Vec::new();
    let mut upper = None;
    let mut work = None;
    let mut shown = Vec::new();
    let mut uuid = true;
    let mut marks = Marks(TRUSTED_PREFIX);
    let mut volatile = false;
    let mut index = false;
    for (k, v) in &opts {
        match k.as_str() {
            "userxattr" | "volatile" | "default_permissions" => {
                if v.is_some() {
                    return Err(Errno::EINVAL);
                }
                match k.as_str() {
                    "userxattr" => marks = Marks(USER_PREFIX),
                    "volatile" => volatile = true,
                    // Permission is always checked on the overlay inode.
                    _ => {}
                }
            }
            "lowerdir" => {
                let v = v.as_deref().ok_or(Errno::EINVAL)?;
                lowers.clear();
                for (path, data) in split_lowers(v)? {
                    lowers.push((layer_dir(req, &path)?, data));
                }
                shown.push(format!("lowerdir={v}"));
            }
            "lowerdir+" | "datadir+" => {
                let v = v.as_deref().ok_or(Errno::EINVAL)?;
                let data = k == "datadir+";
                if !data && lowers.iter().any(|(_, d)| *d) {
                    return Err(Errno::EINVAL);
                }
                lowers.push((layer_dir(req, v)?, data));
                shown.push(format!("{k}={v}"));
            }
            "upperdir" | "workdir" => {
                let v = v.as_deref().ok_or(Errno::EINVAL)?;
                let vd = layer_dir(req, v)?;
                if k == "upperdir" {
                    upper = Some(vd);
                } else {
                    work = Some(vd);
                }
                shown.push(format!("{k}={v}"));
            }
            k => {
                if k == "uuid" {
                    uuid = matches!(v.as_deref(), Some("on" | "auto"));
                }
                if k == "index" {
                    index = v.as_deref() == Some("on");
                }
                let allowed = ENUM_OPTIONS
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map_or(&[][..], |(_, a)| *a);
                if !v.as_deref().is_some_and(|v| allowed.contains(&v)) {
                    return Err(Errno::EINVAL);
                }
            }
        }
    }
    if lowers.is_empty() || lowers.first().is_some_and(|(_, d)| *d) {
        return Err(Errno::EINVAL);
    }
    match (&upper, &work) {
        (Some(_), None) | (None, Some(_)) => return Err(Errno::EINVAL),
        (None, None) if lowers.len() < 2 => return Err(Errno::EINVAL),
        _ => {}
    }
    let vfs = req.vfs;
    let cred = req.cred.clone();
    let mut traps: Vec<*const ()> = Vec::new();
    let mut fs_upper = None;
    let mut fs_work = None;
    let mut work_base = None;
    if let (Some(u), Some(w)) = (&upper, &work) {
        if u.mount.is_readonly() {
            return Err(Errno::EINVAL);
        }
        if !Arc::ptr_eq(&u.mount, &w.mount) {
            return Err(Errno::EINVAL);
        }
        if is_at_or_below(&u.dentry, &w.dentry) || is_at_or_below(&w.dentry, &u.dentry) {
            return Err(Errno::EINVAL);
        }
        traps.push(inode_key(&u.dentry));
        traps.push(inode_key(&w.dentry));
        let uc = clone_layer(vfs, u, u.mount.flags());
        let wc = VirtualDentry::new(uc.mount.clone(), w.dentry.clone());
        // A work directory that cannot be made leaves the overlay
        // read-only (its upper layer still shown), as Linux mounts it;
        // only a refused one (a volatile mount's leftovers) fails.
        match make_workdir(vfs, &cred, &uc, &wc, volatile) {
            Ok(made) => {
                probe_workdir(vfs, &cred, &uc, &made)?;
                if uuid && !req.flags.contains(MountFlags::MS_RDONLY) {
                    set_uuid(marks, &uc);
                }
                traps.push(inode_key(&made.dentry));
                fs_work = Some(made);
                work_base = Some(wc.clone());
            }
            Err(Errno::EINVAL) => return Err(Errno::EINVAL),
            Err(e) => log::warn!("overlay: cannot make the work directory ({e}); read-only"),
        }
        fs_upper = Some(uc);
    }
    for (l, _) in &lowers {
        let key = inode_key(&l.dentry);
        if traps.contains(&key) {
            return Err(Errno::ELOOP);
        }
        traps.push(key);
    }
    // No lower layer may lie below another layer (Linux's
    // `ovl_check_overlapping_layers`): its ancestors are compared with
    // every layer root, the work directories and the upper root.
    for (l, _) in &lowers {
        let mut cur = l.dentry.parent();
        while let Some(p) = cur {
            if traps.contains(&inode_key(&p)) {
                return Err(Errno::ELOOP);
            }
            cur = p.parent();
        }
    }
    if let (true, Some(base), Some(uc)) = (index, &work_base, &fs_upper) {
        // The index directory doubles as the place for temporary entries
        // and the shared whiteout, as in Linux; one that cannot be made
        // only turns indexing off.
        match make_indexdir(vfs, &cred, marks, uc, base) {
            Ok(ix) => fs_work = Some(ix),
            Err(e) => log::warn!("overlay: cannot make the index directory ({e})"),
        }
    }
    let lower_flags = MntFlags::RDONLY | MntFlags::NOATIME;
    let lookup_lowers: Vec<VirtualDentry> = lowers
        .iter()
        .filter(|(_, data)| !data)
        .map(|(l, _)| clone_layer(vfs, l, lower_flags))
        .collect();
    let fs = Arc::new(OverlayFs {
        vfs: Arc::downgrade(vfs),
        cred,
        upper: fs_upper.clone(),
        work: fs_work,
        lowers: lookup_lowers.clone(),
        shown: shown.join(","),
        marks,
        next_temp: AtomicU64::new(1),
        whiteout: Mutex::new(None),
    });
    let root = OverlayInode::build(
        fs.clone(),
        FileType::Directory,
        State {
            upper: fs_upper,
            lowers: lookup_lowers,
            parent: None,
        },
    );
    Ok(NewFilesystem { ops: fs, root })
}

/// Gives the upper root a `trusted.overlay.uuid` when it has none (Linux
/// keeps a random one there to tell this overlay's file handles apart); a
/// failure only loses the mark.
fn set_uuid(marks: Marks, upper: &VirtualDentry) {
    use std::hash::{BuildHasher, Hasher};
    let inode = upper.dentry.inode();
    if inode.getxattr(&marks.name(UUID)).is_ok() {
        return;
    }
    let mut bytes = Vec::with_capacity(16);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(bytes.len() as u64);
        bytes.extend_from_slice(&h.finish().to_ne_bytes());
    }
    let _ = inode.setxattr(&marks.name(UUID), &bytes, XattrFlags::empty());
}

/// Makes `workdir/work` afresh: whatever was there is removed first, and
/// the new directory has mode 0.
fn make_workdir(
    vfs: &Vfs,
    cred: &Credentials,
    upper: &VirtualDentry,
    base: &VirtualDentry,
    volatile: bool,
) -> Result<VirtualDentry> {
    let ctx = PathCtx {
        cred,
        root: upper,
        umask: 0,
    };
    match vfs.lookup(&ctx, base, WORK_NAME, false, false) {
        Ok(old) => {
            // A volatile mount that was not unmounted cleanly may have
            // lost writes: its work directory is refused until emptied.
            let marked = vfs
                .lookup(&ctx, &old, INCOMPAT, false, false)
                .and_then(|inc| vfs.lookup(&ctx, &inc, VOLATILE, false, false));
            if old.dentry.is_dir() && marked.is_ok() {
                return Err(Errno::EINVAL);
            }
            remove_tree(vfs, &ctx, base, WORK_NAME, &old, CLEANUP_DEPTH)?
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let w = mkdir_mode0(vfs, &ctx, base, WORK_NAME)?;
    if volatile {
        let inc = mkdir_mode0(vfs, &ctx, &w, INCOMPAT)?;
        let vol = mkdir_mode0(vfs, &ctx, &inc, VOLATILE)?;
        vfs.openat(
            &ctx,
            &vol,
            b"dirty",
            OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_EXCL,
            0,
            ResolveFlags::empty(),
            false,
        )?;
    }
    Ok(w)
}

/// Makes `workdir/index` (mode 0) when it is not there (an existing one
/// is kept, with what it holds), marks it with the upper root it belongs to,
/// and marks the upper root with its origin, as Linux's `index=on` does.
fn make_indexdir(
    vfs: &Vfs,
    cred: &Credentials,
    marks: Marks,
    upper: &VirtualDentry,
    base: &VirtualDentry,
) -> Result<VirtualDentry> {
    let ctx = PathCtx {
        cred,
        root: upper,
        umask: 0,
    };
    let ix = match vfs.lookup(&ctx, base, INDEX_NAME, false, false) {
        Ok(ix) if ix.dentry.is_dir() => ix,
        Ok(_) => return Err(Errno::EEXIST),
        Err(Errno::ENOENT) => mkdir_mode0(vfs, &ctx, base, INDEX_NAME)?,
        Err(e) => return Err(e),
    };
    let root = upper.dentry.inode();
    let ino = root.stat().ino;
    let handle = format!("tessera:{ino:x}");
    if root.getxattr(&marks.name(ORIGIN)).is_err() {
        root.setxattr(&marks.name(ORIGIN), handle.as_bytes(), XattrFlags::empty())?;
    }
    let ixi = ix.dentry.inode();
    if ixi.getxattr(&marks.name(UPPER)).is_err() {
        ixi.setxattr(&marks.name(UPPER), handle.as_bytes(), XattrFlags::empty())?;
    }
    Ok(ix)
}

/// Checks that the mounter can make and remove entries in the new work
/// directory, as Linux's feature probes there do: an overlay whose copy-ups
/// and whiteouts could never be made is refused (`EACCES` for a mounter
/// without the right to write there).
fn probe_workdir(
    vfs: &Vfs,
    cred: &Credentials,
    upper: &VirtualDentry,
    work: &VirtualDentry,
) -> Result<()> {
    let ctx = PathCtx {
        cred,
        root: upper,
        umask: 0,
    };
    let name = b"#probe";
    vfs.mkdirat(&ctx, work, name, 0)?;
    vfs.unlinkat(&ctx, work, name, AtFlags::AT_REMOVEDIR)
}

/// Makes a directory of mode 0 (whatever the umask), as Linux makes its
/// work directories.
fn mkdir_mode0(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    dir: &VirtualDentry,
    name: &[u8],
) -> Result<VirtualDentry> {
    vfs.mkdirat(ctx, dir, name, 0)?;
    let w = vfs.lookup(ctx, dir, name, false, false)?;
    w.dentry.inode().setattr(
        &Ctx { cred: ctx.cred },
        &SetAttr {
            mode: Some(0),
            ..Default::default()
        },
    )?;
    Ok(w)
}

/// Removes `name` (found as `vd`) from `dir`. A directory that is not
/// empty is emptied first, entry by entry, when `depth` allows; below that
/// each entry gets one removal. Everything that can go goes; the first
/// failure is returned (Linux's cleanup of a stale work directory, which
/// then mounts the overlay read-only).
fn remove_tree(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    dir: &VirtualDentry,
    name: &[u8],
    vd: &VirtualDentry,
    depth: usize,
) -> Result<()> {
    if !vd.dentry.is_dir() {
        return vfs.unlinkat(ctx, dir, name, AtFlags::empty());
    }
    match vfs.unlinkat(ctx, dir, name, AtFlags::AT_REMOVEDIR) {
        Err(Errno::ENOTEMPTY) if depth > 0 => {}
        done => return done,
    }
    let mut first = Ok(());
    for (n, _) in list_layer(vfs, ctx, vd)? {
        let gone = vfs
            .lookup(ctx, vd, &n, false, false)
            .and_then(|child| remove_tree(vfs, ctx, vd, &n, &child, depth - 1));
        if first.is_ok() {
            first = gone;
        }
    }
    first?;
    vfs.unlinkat(ctx, dir, name, AtFlags::AT_REMOVEDIR)
}

/// The entries of a layer directory, without `.` and `..`, in its order.
fn list_layer(
    vfs: &Vfs,
    ctx: &PathCtx<'_>,
    dir: &VirtualDentry,
) -> Result<Vec<(Vec<u8>, DirentType)>> {
    let f = vfs.openat(
        ctx,
        dir,
        b".",
        OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
        0,
        ResolveFlags::empty(),
        false,
    )?;
    let mut out = f.getdents(ctx.cred)?;
    out.retain(|(n, _)| n != b"." && n != b"..");
    Ok(out)
}

/// Whether a layer entry is a whiteout (a character device 0:0).
fn is_whiteout(vd: &VirtualDentry) -> bool {
    vd.dentry.file_type() == FileType::CharDevice
        && vd.dentry.inode().stat().rdev == DevId::default()
}

impl OverlayFs {
    fn vfs(&self) -> Result<Arc<Vfs>> {
        self.vfs.upgrade().ok_or(Errno::EIO)
    }

    fn ctx<'a>(&'a self, root: &'a VirtualDentry) -> PathCtx<'a> {
        PathCtx {
            cred: &self.cred,
            root,
            umask: 0,
        }
    }

    fn upper_root(&self) -> Result<&VirtualDentry> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    fn work(&self) -> Result<&VirtualDentry> {
        self.work.as_ref().ok_or(Errno::EROFS)
    }

    /// Looks one name up in a layer directory, not following a symlink;
    /// `None` when absent.
    fn child(&self, dir: &VirtualDentry, name: &[u8]) -> Result<Option<VirtualDentry>> {
        let vfs = self.vfs()?;
        match vfs.lookup(&self.ctx(dir), dir, name, false, false) {
            Ok(vd) => Ok(Some(vd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn temp_name(&self) -> Vec<u8> {
        format!("#{:x}", self.next_temp.fetch_add(1, Ordering::Relaxed)).into_bytes()
    }

    /// Makes a whiteout at `name` in the upper directory `dir` of its own
    /// (what a rename leaves, as `RENAME_WHITEOUT` makes it).
    fn make_own_whiteout(&self, dir: &VirtualDentry, name: &[u8]) -> Result<()> {
        let vfs = self.vfs()?;
        vfs.mknodat(&self.ctx(dir), dir, name, S_IFCHR, DevId::default())
    }

    /// Makes a whiteout at `name` in the upper directory `dir`: a link to
    /// the shared whiteout, or a new one if linking fails.
    fn make_whiteout(&self, dir: &VirtualDentry, name: &[u8]) -> Result<()> {
        let vfs = self.vfs()?;
        let work = self.work()?;
        let ctx = self.ctx(work);
        let shared = self.whiteout.lock().clone();
        let shared = match shared {
            Some(s) => s,
            None => {
                let tmp = self.temp_name();
                vfs.mknodat(&ctx, work, &tmp, S_IFCHR, DevId::default())?;
                let vd = vfs.lookup(&ctx, work, &tmp, false, false)?;
                let mut slot = self.whiteout.lock();
                slot.get_or_insert(vd).clone()
            }
        };
        let linked = vfs.linkat(&ctx, &shared, b"", dir, name, AtFlags::AT_EMPTY_PATH, None);
        match linked {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => Err(Errno::EEXIST),
            Err(_) => {
                // The shared one is gone or full: a whiteout of its own.
                vfs.mknodat(&ctx, dir, name, S_IFCHR, DevId::default())
            }
        }
    }

    /// Marks the upper directory `dir` impure when `entry`, now in it, was
    /// copied up (has an origin), as Linux marks a directory that may hold
    /// entries from below; a failure only loses the mark.
    fn mark_impure_for(&self, dir: &VirtualDentry, entry: &VirtualDentry) {
        let origin = self.marks.name(ORIGIN);
        if entry.dentry.inode().getxattr(&origin).is_ok() {
            let impure = self.marks.name(IMPURE);
            let _ = dir
                .dentry
                .inode()
                .setxattr(&impure, b"y", XattrFlags::empty());
        }
    }

    /// Removes whatever whiteout sits at `name` in the upper `dir`;
    /// whether there was one.
    fn clear_whiteout(&self, dir: &VirtualDentry, name: &[u8]) -> Result<bool> {
        match self.child(dir, name)? {
            Some(vd) if is_whiteout(&vd) => {
                let vfs = self.vfs()?;
                vfs.unlinkat(&self.ctx(dir), dir, name, AtFlags::empty())?;
                Ok(true)
            }
            Some(_) => Err(Errno::EEXIST),
            None => Ok(false),
        }
    }
}

impl FilesystemOps for OverlayFs {
    fn statfs(&self) -> Result<Statfs> {
        let top = self
            .upper
            .as_ref()
            .or(self.lowers.first())
            .ok_or(Errno::EIO)?;
        let mut st = top.mount.fs().ops().statfs()?;
        // OVERLAYFS_SUPER_MAGIC.
        st.fs_type = 0x794c_7630;
        Ok(st)
    }

    fn show_options(&self) -> String {
        self.shown.clone()
    }

    fn is_readonly(&self) -> bool {
        self.work.is_none()
    }

    fn refuses_rw_remount(&self) -> bool {
        self.work.is_none()
    }

    fn remount(&self, _data: &tessera_vfs::fstype::MountData) -> Result<()> {
        // Linux ignores every option of a mount(2) remount of an overlay,
        // malformed or not: the layers cannot change on a live overlay.
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What an overlay inode shows: its layers, and where it sits (for copy-up).
#[derive(Clone)]
struct State {
    upper: Option<VirtualDentry>,
    /// A directory's lower directories that merge (top first), or a
    /// non-directory's one lower file.
    lowers: Vec<VirtualDentry>,
    /// The parent and the name in it; `None` for the root.
    parent: Option<(Arc<OverlayInode>, Vec<u8>)>,
}

/// One overlay inode: the union of one name's layers.
pub struct OverlayInode {
    fs: Arc<OverlayFs>,
    ftype: FileType,
    /// Itself, for the calls that hand it on (a child's parent link).
    me: Weak<OverlayInode>,
    state: Mutex<State>,
}

impl OverlayInode {
    fn state(&self) -> State {
        self.state.lock().clone()
    }

    fn upper(&self) -> Option<VirtualDentry> {
        self.state.lock().upper.clone()
    }

    /// The inode that answers questions: the upper one, else the top lower.
    fn real(&self) -> Result<VirtualDentry> {
        let s = self.state.lock();
        s.upper
            .clone()
            .or_else(|| s.lowers.first().cloned())
            .ok_or(Errno::EIO)
    }

    fn is_merged(s: &State) -> bool {
        s.upper.is_some() as usize + s.lowers.len() > 1
    }

    /// Looks `name` up through the layers of this directory.
    fn lookup_child(self: &Arc<Self>, name: &[u8]) -> Result<Arc<OverlayInode>> {
        let s = self.state();
        let fs = &self.fs;
        let mut upper = None;
        let mut lowers: Vec<VirtualDentry> = Vec::new();
        let mut ftype = None;
        let mut stop = false;
        if let Some(u) = &s.upper {
            if let Some(vd) = fs.child(u, name)? {
                if is_whiteout(&vd) {
                    return Err(Errno::ENOENT);
                }
                let t = vd.dentry.file_type();
                stop = t != FileType::Directory || fs.marks.is_opaque(&vd);
                ftype = Some(t);
                upper = Some(vd);
            }
        }
        if !stop {
            for l in &s.lowers {
                let Some(vd) = fs.child(l, name)? else {
                    continue;
                };
                if is_whiteout(&vd) {
                    break;
                }
                let t = vd.dentry.file_type();
                match ftype {
                    None => ftype = Some(t),
                    Some(FileType::Directory) if t == FileType::Directory => {}
                    // A non-directory below a directory is hidden, and so is
                    // everything under it.
                    Some(_) => break,
                }
                let opaque = t == FileType::Directory && fs.marks.is_opaque(&vd);
                lowers.push(vd);
                if t != FileType::Directory || opaque {
                    break;
                }
            }
        }
        let ftype = ftype.ok_or(Errno::ENOENT)?;
        Ok(OverlayInode::build(
            fs.clone(),
            ftype,
            State {
                upper,
                lowers,
                parent: Some((self.clone(), name.to_vec())),
            },
        ))
    }

    /// Whether `name` exists (not as a whiteout) in this directory's lower
    /// layers, so that removing it from the upper layer needs a whiteout.
    fn lower_positive(&self, name: &[u8]) -> Result<bool> {
        for l in self.state().lowers {
            match self.fs.child(&l, name)? {
                None => continue,
                Some(vd) => return Ok(!is_whiteout(&vd)),
            }
        }
        Ok(false)
    }

    /// Makes sure this inode and its parents are in the upper layer;
    /// returns the upper location.
    fn copy_up(self: &Arc<Self>) -> Result<VirtualDentry> {
        // Every change goes through here: `ovl_want_write`, EROFS when the
        // upper layer's mount or filesystem became read-only (a remount, or
        // an unmount of a root that remounts it read-only).
        if self.fs.upper_root()?.mount.is_write_protected() {
            return Err(Errno::EROFS);
        }
        if let Some(u) = self.upper() {
            return Ok(u);
        }
        // The ancestors without an upper copy, nearest first.
        let mut chain = vec![self.clone()];
        loop {
            let Some((p, _)) = chain.last().and_then(|n| n.state().parent) else {
                break;
            };
            if p.upper().is_some() {
                break;
            }
            chain.push(p);
        }
        for n in chain.iter().rev() {
            n.copy_up_one()?;
        }
        self.upper().ok_or(Errno::EIO)
    }

    /// Copies this inode up; its parent is in the upper layer already.
    fn copy_up_one(&self) -> Result<()> {
        let s = self.state();
        if s.upper.is_some() {
            return Ok(());
        }
        let (parent, name) = s.parent.clone().ok_or(Errno::EIO)?;
        let pupper = parent.upper().ok_or(Errno::EIO)?;
        let lower = s.lowers.first().cloned().ok_or(Errno::EIO)?;
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let work = fs.work()?;
        let ctx = fs.ctx(work);
        let st = lower.dentry.inode().stat();
        let tmp = fs.temp_name();
        match self.ftype {
            FileType::Directory => vfs.mkdirat(&ctx, work, &tmp, 0o700)?,
            FileType::Regular => {
                let out = vfs.openat(
                    &ctx,
                    work,
                    &tmp,
                    OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_EXCL,
                    0o600,
                    ResolveFlags::empty(),
                    false,
                )?;
                let copied = copy_data(&lower, &out, &fs.cred);
                if let Err(e) = copied {
                    let _ = vfs.unlinkat(&ctx, work, &tmp, AtFlags::empty());
                    return Err(e);
                }
            }
            FileType::Symlink => {
                let target = lower.dentry.inode().readlink()?;
                vfs.symlinkat(&ctx, &target, work, &tmp)?;
            }
            t => vfs.mknodat(&ctx, work, &tmp, t.mode_bits() | 0o600, st.rdev)?,
        }
        let flags = if self.ftype == FileType::Directory {
            AtFlags::AT_REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let finish = || -> Result<()> {
            let t = vfs.lookup(&ctx, work, &tmp, false, false)?;
            copy_meta(&fs.cred, fs.marks, &lower, &t, &st)?;
            vfs.renameat2(
                &ctx,
                work,
                &tmp,
                &pupper,
                &name,
                RenameFlags::RENAME_NOREPLACE,
            )
        };
        if let Err(e) = finish() {
            let _ = vfs.unlinkat(&ctx, work, &tmp, flags);
            // Someone else's copy won the race: use it.
            if e != Errno::EEXIST || self.upper().is_some() {
                return if self.upper().is_some() {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            let found = fs.child(&pupper, &name)?.ok_or(Errno::EIO)?;
            self.state.lock().upper.get_or_insert(found);
            return Ok(());
        }
        // The parent may now hold entries with an origin (Linux's
        // "impure" mark); failing to mark it loses nothing visible.
        let _ = pupper
            .dentry
            .inode()
            .setxattr(&fs.marks.name(IMPURE), b"y", XattrFlags::empty());
        let up = fs.child(&pupper, &name)?.ok_or(Errno::EIO)?;
        self.state.lock().upper.get_or_insert(up);
        Ok(())
    }

    /// This directory's upper copy, made if needed: where entries made in
    /// it go.
    fn parent_upper(self: &Arc<Self>) -> Result<VirtualDentry> {
        self.copy_up()
    }

    /// Creates `new` at `name` in the upper layer of this directory, over
    /// a whiteout if there is one (a directory made there is opaque).
    fn create_upper(self: &Arc<Self>, name: &[u8], new: &NewNode<'_>) -> Result<VirtualDentry> {
        if new.ftype == FileType::CharDevice && new.rdev == DevId::default() {
            // Nobody may make a whiteout through the overlay.
            return Err(Errno::EPERM);
        }
        let dir = self.parent_upper()?;
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let ctx = fs.ctx(&dir);
        let over_whiteout = fs.clear_whiteout(&dir, name)?;
        match new.ftype {
            FileType::Directory => vfs.mkdirat(&ctx, &dir, name, new.mode)?,
            FileType::Regular => {
                vfs.openat(
                    &ctx,
                    &dir,
                    name,
                    OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_EXCL,
                    new.mode,
                    ResolveFlags::empty(),
                    false,
                )?;
            }
            FileType::Symlink => vfs.symlinkat(&ctx, new.target, &dir, name)?,
            t => vfs.mknodat(&ctx, &dir, name, t.mode_bits() | new.mode, new.rdev)?,
        }
        let vd = fs.child(&dir, name)?.ok_or(Errno::EIO)?;
        let inode = vd.dentry.inode();
        let o = inode.owner();
        let attr = SetAttr {
            uid: (o.uid != new.uid).then_some(new.uid),
            gid: (o.gid != new.gid).then_some(new.gid),
            mode: (new.ftype != FileType::Symlink && o.mode & 0o7777 != new.mode)
                .then_some(new.mode),
            ..Default::default()
        };
        let fixed = if attr.uid.is_some() || attr.gid.is_some() || attr.mode.is_some() {
            inode.setattr(&Ctx { cred: &fs.cred }, &attr)
        } else {
            Ok(())
        };
        let marked = if over_whiteout && new.ftype == FileType::Directory {
            inode.setxattr(&fs.marks.name(OPAQUE), b"y", XattrFlags::empty())
        } else {
            Ok(())
        };
        if let Err(e) = fixed.and(marked) {
            let flags = if new.ftype == FileType::Directory {
                AtFlags::AT_REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let _ = vfs.unlinkat(&ctx, &dir, name, flags);
            return Err(e);
        }
        Ok(vd)
    }

    fn new_child(
        self: &Arc<Self>,
        name: &[u8],
        ftype: FileType,
        upper: VirtualDentry,
    ) -> Arc<OverlayInode> {
        OverlayInode::build(
            self.fs.clone(),
            ftype,
            State {
                upper: Some(upper),
                lowers: Vec::new(),
                parent: Some((self.clone(), name.to_vec())),
            },
        )
    }

    /// The merged listing of this directory: names, types and numbers,
    /// in Linux's order (the lowest layer's entries first, then the rest
    /// of the upper layers'), without whiteouts. A directory of one layer
    /// lists its whiteouts, as Linux shows the real directory, unless
    /// `hide_all_whiteouts` (the emptiness check).
    fn list(&self, hide_all_whiteouts: bool) -> Result<Listing> {
        let s = self.state();
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let layers: Vec<VirtualDentry> = s.upper.iter().chain(s.lowers.iter()).cloned().collect();
        let Some((lowest, rest)) = layers.split_last() else {
            return Err(Errno::EIO);
        };
        struct Ent {
            name: Vec<u8>,
            dtype: DirentType,
            ino: u64,
            whiteout: bool,
        }
        let entry = |dir: &VirtualDentry, name: Vec<u8>, dtype: DirentType| -> Result<Ent> {
            let (whiteout, ino) = match fs.child(dir, &name)? {
                Some(vd) => (is_whiteout(&vd), vd.dentry.inode().stat().ino),
                None => (false, 0),
            };
            Ok(Ent {
                name,
                dtype,
                ino,
                whiteout,
            })
        };
        let mut upper_part: Vec<Option<Ent>> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for dir in rest {
            for (name, dt) in list_layer(&vfs, &fs.ctx(dir), dir)? {
                if index.contains_key(&name) {
                    continue;
                }
                index.insert(name.clone(), upper_part.len());
                upper_part.push(Some(entry(dir, name, dt)?));
            }
        }
        let mut out = Vec::new();
        for (name, dt) in list_layer(&vfs, &fs.ctx(lowest), lowest)? {
            let e = match index.get(&name) {
                Some(&i) => upper_part.get_mut(i).and_then(Option::take),
                None if rest.is_empty() && !hide_all_whiteouts => Some(Ent {
                    name,
                    dtype: dt,
                    ino: 0,
                    whiteout: false,
                }),
                None => Some(entry(lowest, name, dt)?),
            };
            out.extend(e);
        }
        out.extend(upper_part.into_iter().flatten());
        Ok(out
            .into_iter()
            .filter(|e| !e.whiteout)
            .map(|e| {
                let ino = if e.ino == 0 {
                    crate_ino(&e.name)
                } else {
                    e.ino
                };
                (e.name, e.dtype, ino)
            })
            .collect())
    }

    /// Removes the whiteouts left in this (empty-looking) directory's upper
    /// copy, so the upper directory itself can go.
    fn clear_upper_whiteouts(&self) -> Result<()> {
        let Some(u) = self.upper() else {
            return Ok(());
        };
        let vfs = self.fs.vfs()?;
        let ctx = self.fs.ctx(&u);
        for (name, _) in list_layer(&vfs, &ctx, &u)? {
            if let Some(vd) = self.fs.child(&u, &name)? {
                if is_whiteout(&vd) {
                    vfs.unlinkat(&ctx, &u, &name, AtFlags::empty())?;
                } else {
                    return Err(Errno::ENOTEMPTY);
                }
            }
        }
        Ok(())
    }

    /// unlink and rmdir: the name goes from the upper layer, and a whiteout
    /// takes its place when a lower layer has it.
    fn remove(self: &Arc<Self>, name: &[u8], child: &Arc<dyn Inode>, dir: bool) -> Result<()> {
        let child = child
            .as_any()
            .downcast_ref::<OverlayInode>()
            .ok_or(Errno::EXDEV)?;
        let pu = self.parent_upper()?;
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let ctx = fs.ctx(&pu);
        let cs = child.state();
        // Decided by the name, not the inode: a hard link made through the
        // overlay shares an inode whose lower file is under another name.
        let need_whiteout = self.lower_positive(name)?;
        if cs.upper.is_some() {
            // A directory only in the upper layer keeps its whiteouts and
            // so is not empty there (Linux removes it as it is).
            if dir && need_whiteout {
                child.clear_upper_whiteouts()?;
            }
            let flags = if dir {
                AtFlags::AT_REMOVEDIR
            } else {
                AtFlags::empty()
            };
            vfs.unlinkat(&ctx, &pu, name, flags)?;
        }
        if need_whiteout {
            fs.make_whiteout(&pu, name)?;
        }
        Ok(())
    }
}

/// A stand-in inode number for a listed name no layer could say more of.
fn crate_ino(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1
}

/// Copies a lower file's bytes into the open upper copy.
fn copy_data(
    lower: &VirtualDentry,
    out: &tessera_vfs::file::OpenFile,
    cred: &Credentials,
) -> Result<()> {
    let src = lower.dentry.inode().clone().open(OpenFlags::O_RDONLY)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut off = 0u64;
    loop {
        let n = src.read(off, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let chunk = buf.get(..n).ok_or(Errno::EIO)?;
        let mut done = 0;
        while done < chunk.len() {
            let at = i64::try_from(off + done as u64).map_err(|_| Errno::EFBIG)?;
            let w = out.pwrite(cred, &chunk[done..], at)?;
            if w == 0 {
                return Err(Errno::EIO);
            }
            done += w;
        }
        off += n as u64;
    }
}

/// Gives a fresh upper copy the lower inode's extended attributes, owner,
/// mode and times, and an origin mark.
fn copy_meta(
    cred: &Credentials,
    marks: Marks,
    lower: &VirtualDentry,
    up: &VirtualDentry,
    st: &Statx,
) -> Result<()> {
    let li = lower.dentry.inode();
    let ui = up.dentry.inode();
    let names = match li.listxattr() {
        Ok(n) => n,
        Err(Errno::EOPNOTSUPP) => Vec::new(),
        Err(e) => return Err(e),
    };
    for n in names.iter().filter(|n| !marks.is_private(n)) {
        match li.getxattr(n) {
            Ok(v) => ui.setxattr(n, &v, XattrFlags::empty())?,
            Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    // Linux stores a file handle of the lower inode here; its bytes are
    // Linux's own, so this one only names the lower inode number.
    let origin = format!("tessera:{:x}", st.ino);
    let _ = ui.setxattr(&marks.name(ORIGIN), origin.as_bytes(), XattrFlags::empty());
    let c = Ctx { cred };
    ui.setattr(
        &c,
        &SetAttr {
            uid: Some(st.uid),
            gid: Some(st.gid),
            ..Default::default()
        },
    )?;
    if up.dentry.file_type() != FileType::Symlink {
        ui.setattr(
            &c,
            &SetAttr {
                mode: Some(st.mode & 0o7777),
                ..Default::default()
            },
        )?;
    }
    ui.setattr(
        &c,
        &SetAttr {
            atime: Some(st.atime),
            mtime: Some(st.mtime),
            ..Default::default()
        },
    )
}

impl Inode for OverlayInode {
    fn file_type(&self) -> FileType {
        self.ftype
    }

    fn owner(&self) -> Owner {
        Owner::of_stat(&self.stat())
    }

    fn stat(&self) -> Statx {
        let s = self.state();
        let Some(real) = s.upper.as_ref().or(s.lowers.first()) else {
            return Statx::default();
        };
        let mut st = real.dentry.inode().stat();
        if self.ftype == FileType::Directory && Self::is_merged(&s) {
            // Linux cannot count a merged directory's subdirectories.
            st.nlink = 1;
        }
        st
    }

    fn setattr(&self, _ctx: &Ctx<'_>, attr: &SetAttr) -> Result<()> {
        let me = self.arc()?;
        let up = me.copy_up()?;
        up.dentry.inode().setattr(
            &Ctx {
                cred: &self.fs.cred,
            },
            attr,
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn coherence(&self) -> Coherence {
        Coherence::Cached
    }

    fn lookup(&self, _ctx: &Ctx<'_>, name: &[u8]) -> Result<Arc<dyn Inode>> {
        if self.ftype != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.arc()?.lookup_child(name)?)
    }

    fn create(&self, _ctx: &Ctx<'_>, name: &[u8], new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        let me = self.arc()?;
        let vd = me.create_upper(name, new)?;
        Ok(me.new_child(name, new.ftype, vd))
    }

    fn tmpfile(&self, _ctx: &Ctx<'_>, new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        let me = self.arc()?;
        let dir = me.copy_up()?;
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let f = vfs.openat(
            &fs.ctx(&dir),
            &dir,
            b".",
            OpenFlags::O_TMPFILE | OpenFlags::O_RDWR,
            new.mode,
            ResolveFlags::empty(),
            false,
        )?;
        // The unnamed upper file lives on in its location (linkable, as
        // it was opened without O_EXCL) after this descriptor closes.
        let vd = f.location().clone();
        let inode = vd.dentry.inode();
        let o = inode.owner();
        if (o.uid, o.gid) != (new.uid, new.gid) || o.mode & 0o7777 != new.mode {
            inode.setattr(
                &Ctx { cred: &fs.cred },
                &SetAttr {
                    uid: Some(new.uid),
                    gid: Some(new.gid),
                    mode: Some(new.mode),
                    ..Default::default()
                },
            )?;
        }
        Ok(OverlayInode::build(
            fs.clone(),
            FileType::Regular,
            State {
                upper: Some(vd),
                lowers: Vec::new(),
                parent: Some((me, b"#tmpfile".to_vec())),
            },
        ))
    }

    fn link(&self, _ctx: &Ctx<'_>, name: &[u8], target: &Arc<dyn Inode>) -> Result<()> {
        let t = target
            .as_any()
            .downcast_ref::<OverlayInode>()
            .ok_or(Errno::EXDEV)?
            .arc()?;
        let me = self.arc()?;
        let src = t.copy_up()?;
        let dir = me.parent_upper()?;
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        fs.clear_whiteout(&dir, name)?;
        vfs.linkat(
            &fs.ctx(&dir),
            &src,
            b"",
            &dir,
            name,
            AtFlags::AT_EMPTY_PATH,
            None,
        )?;
        fs.mark_impure_for(&dir, &src);
        Ok(())
    }

    fn unlink(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        self.arc()?.remove(name, child, false)
    }

    fn rmdir(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        self.arc()?.remove(name, child, true)
    }

    fn is_empty_dir(&self, _ctx: &Ctx<'_>) -> Result<bool> {
        // Whiteouts never count, even in a directory of one layer, whose
        // listing shows them (Linux's `ovl_check_empty_dir`).
        Ok(self.list(true)?.is_empty())
    }

    fn rename(
        &self,
        _ctx: &Ctx<'_>,
        old_name: &[u8],
        child: &Arc<dyn Inode>,
        new_dir: &Arc<dyn Inode>,
        new_name: &[u8],
        replaced: Option<&Arc<dyn Inode>>,
        flags: RenameFlags,
    ) -> Result<()> {
        if !(flags - RenameFlags::RENAME_NOREPLACE - RenameFlags::RENAME_EXCHANGE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let down = |i: &Arc<dyn Inode>| -> Result<Arc<OverlayInode>> {
            i.as_any()
                .downcast_ref::<OverlayInode>()
                .ok_or(Errno::EXDEV)?
                .arc()
        };
        let me = self.arc()?;
        let src = down(child)?;
        let ndir = down(new_dir)?;
        let dst = replaced.map(down).transpose()?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        // A directory that exists below cannot move without redirects.
        let pinned =
            |n: &OverlayInode| n.ftype == FileType::Directory && !n.state().lowers.is_empty();
        if pinned(&src) || (exchange && dst.as_deref().is_some_and(pinned)) {
            return Err(Errno::EXDEV);
        }
        let fs = &self.fs;
        let vfs = fs.vfs()?;
        let src_up = src.copy_up()?;
        if let Some(d) = dst.as_ref().filter(|_| exchange) {
            d.copy_up()?;
        }
        let old_up = me.parent_upper()?;
        let new_up = ndir.parent_upper()?;
        let ctx = fs.ctx(&old_up);
        let src_is_dir = src.ftype == FileType::Directory;
        let mut opaque = false;
        if !exchange {
            match &dst {
                Some(d) => {
                    if d.ftype == FileType::Directory {
                        opaque = !d.state().lowers.is_empty();
                        if opaque {
                            d.clear_upper_whiteouts()?;
                        }
                    }
                    if d.upper().is_none() {
                        // Only below: the upper name is free.
                        opaque |= src_is_dir;
                    }
                }
                None => {
                    if fs.clear_whiteout(&new_up, new_name)? {
                        opaque = src_is_dir;
                    }
                }
            }
            if src_is_dir && !opaque {
                opaque = ndir.lower_positive(new_name)?;
            }
        }
        // Decided by the name, not the inode (see `remove`).
        let old_whiteout = !exchange && me.lower_positive(old_name)?;
        if opaque {
            src_up
                .dentry
                .inode()
                .setxattr(&fs.marks.name(OPAQUE), b"y", XattrFlags::empty())?;
        }
        let upper_flags = if exchange {
            RenameFlags::RENAME_EXCHANGE
        } else {
            RenameFlags::empty()
        };
        vfs.renameat2(&ctx, &old_up, old_name, &new_up, new_name, upper_flags)?;
        if old_whiteout {
            fs.make_own_whiteout(&old_up, old_name)?;
        }
        if !Arc::ptr_eq(&me, &ndir) {
            fs.mark_impure_for(&new_up, &src_up);
            if let Some(du) = dst.as_ref().filter(|_| exchange).and_then(|d| d.upper()) {
                fs.mark_impure_for(&old_up, &du);
            }
        }
        let moved = |n: &OverlayInode, dir: &Arc<OverlayInode>, name: &[u8]| {
            let up = fs.child(
                if Arc::ptr_eq(dir, &ndir) {
                    &new_up
                } else {
                    &old_up
                },
                name,
            );
            let mut s = n.state.lock();
            s.parent = Some((dir.clone(), name.to_vec()));
            if let Ok(Some(u)) = up {
                s.upper = Some(u);
            }
            if n.ftype != FileType::Directory {
                s.lowers.clear();
            }
        };
        moved(&src, &ndir, new_name);
        if let Some(d) = dst.as_ref().filter(|_| exchange) {
            moved(d, &me, old_name);
        }
        Ok(())
    }

    fn rename_precheck(&self, child: &Arc<dyn Inode>, flags: RenameFlags) -> Result<()> {
        if !(flags - RenameFlags::RENAME_NOREPLACE - RenameFlags::RENAME_EXCHANGE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let c = child
            .as_any()
            .downcast_ref::<OverlayInode>()
            .ok_or(Errno::EXDEV)?;
        if c.ftype == FileType::Directory && !c.state().lowers.is_empty() {
            return Err(Errno::EXDEV);
        }
        Ok(())
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        if self.ftype != FileType::Symlink {
            return Err(Errno::EINVAL);
        }
        self.real()?.dentry.inode().readlink()
    }

    fn open(self: Arc<Self>, flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        match self.ftype {
            FileType::Directory => Ok(Arc::new(OverlayDir {
                inode: self,
                cache: Mutex::new(None),
            })),
            FileType::Regular => {
                let writes = flags.writable() || flags.contains(OpenFlags::O_TRUNC);
                let real = if writes {
                    self.copy_up()?
                } else {
                    self.real()?
                };
                let ops = real.dentry.inode().clone().open(flags)?;
                let on_upper = self.upper().is_some_and(|u| u.same(&real));
                // The real file open for writing holds write access to the
                // upper layer's mount, as Linux's backing file does: making
                // that filesystem read-only is then busy.
                let write_access = if flags.writable() {
                    real.mount.begin_write()?;
                    Some(real.mount.clone())
                } else {
                    None
                };
                Ok(Arc::new(OverlayFile {
                    inode: self,
                    flags,
                    real: Mutex::new((on_upper, ops)),
                    write_access,
                }))
            }
            _ => self.real()?.dentry.inode().clone().open(flags),
        }
    }

    fn getxattr(&self, name: &[u8]) -> Result<Vec<u8>> {
        self.real()?
            .dentry
            .inode()
            .getxattr(&self.fs.marks.escape(name))
    }

    fn setxattr(&self, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        let up = self.arc()?.copy_up()?;
        up.dentry
            .inode()
            .setxattr(&self.fs.marks.escape(name), value, flags)
    }

    fn listxattr(&self) -> Result<Vec<Vec<u8>>> {
        let names = self.real()?.dentry.inode().listxattr()?;
        Ok(names
            .into_iter()
            .filter_map(|n| self.fs.marks.unescape(n))
            .collect())
    }

    fn removexattr(&self, name: &[u8]) -> Result<()> {
        let name = self.fs.marks.escape(name);
        // Nothing to copy up for an attribute that is not there; an upper
        // inode answers for itself (removing a missing ACL is no error).
        if self.upper().is_none() {
            self.real()?.dentry.inode().getxattr(&name)?;
        }
        let up = self.arc()?.copy_up()?;
        up.dentry.inode().removexattr(&name)
    }

    fn drop_file_caps(&self) {
        // Called only as a write, truncate or chown is about to change the
        // file, which copies it up anyway; copying up first lets the copy
        // lose the capabilities it takes from below. A copy-up that fails
        // here fails again, and is reported, in the change itself.
        // Only a regular file carries capabilities; a device written
        // through the overlay is not copied up.
        let up = match self.upper() {
            Some(u) => Some(u),
            None if self.ftype == FileType::Regular => self.arc().and_then(|me| me.copy_up()).ok(),
            None => None,
        };
        if let Some(u) = up {
            u.dentry.inode().drop_file_caps();
        }
    }
}

impl OverlayInode {
    /// This inode as shared: through the parent's child or the VFS's
    /// dentry, which hold it. Every overlay inode lives in an `Arc`, so the
    /// strong count is never zero while a method runs.
    fn arc(&self) -> Result<Arc<OverlayInode>> {
        self.me.upgrade().ok_or(Errno::EIO)
    }

    fn build(fs: Arc<OverlayFs>, ftype: FileType, state: State) -> Arc<OverlayInode> {
        Arc::new_cyclic(|me| OverlayInode {
            fs,
            ftype,
            me: me.clone(),
            state: Mutex::new(state),
        })
    }
}

/// An open regular file: the real file, opened again on the upper copy
/// when the file is copied up after this open (as Linux's overlay does).
struct OverlayFile {
    inode: Arc<OverlayInode>,
    flags: OpenFlags,
    /// Whether the real file is the upper one, and its operations.
    real: Mutex<(bool, Arc<dyn FileOps>)>,
    /// The upper mount whose write access this open holds, if it writes.
    write_access: Option<Arc<Mount>>,
}

impl Drop for OverlayFile {
    fn drop(&mut self) {
        if let Some(m) = &self.write_access {
            m.end_write();
        }
    }
}

impl OverlayFile {
    fn real(&self) -> Result<Arc<dyn FileOps>> {
        let (on_upper, ops) = self.real.lock().clone();
        if on_upper {
            return Ok(ops);
        }
        let Some(up) = self.inode.upper() else {
            return Ok(ops);
        };
        let fresh = up
            .dentry
            .inode()
            .clone()
            .open(self.flags - OpenFlags::O_TRUNC)?;
        *self.real.lock() = (true, fresh.clone());
        Ok(fresh)
    }
}

impl FileOps for OverlayFile {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.real()?.read(off, buf)
    }

    fn write(&self, ctx: &Ctx<'_>, off: u64, buf: &[u8], append: bool) -> Result<(usize, u64)> {
        self.real()?.write(ctx, off, buf, append)
    }

    fn seekable(&self) -> bool {
        self.real().is_ok_and(|r| r.seekable())
    }

    fn llseek(&self, cur: u64, off: i64, whence: Whence) -> Option<Result<i64>> {
        match self.real() {
            Ok(r) => r.llseek(cur, off, whence),
            Err(e) => Some(Err(e)),
        }
    }

    fn size(&self) -> u64 {
        self.real().map_or(0, |r| r.size())
    }

    fn seek_data_hole(&self, off: u64, data: bool) -> Result<u64> {
        self.real()?.seek_data_hole(off, data)
    }

    fn allocate(&self, ctx: &Ctx<'_>, mode: FallocFlags, off: u64, len: u64) -> Result<()> {
        self.real()?.allocate(ctx, mode, off, len)
    }

    fn fsync(&self) -> Result<()> {
        self.real()?.fsync()
    }

    fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<i64> {
        self.real()?.ioctl(cmd, arg)
    }
}

/// A merged listing: names, types and inode numbers.
type Listing = Vec<(Vec<u8>, DirentType, u64)>;

/// An open directory. Offsets: 0 is `.`, 1 is `..`, `2 + k` the k-th
/// entry of the listing, which is read afresh at offset 0 and kept for the
/// reads after it.
struct OverlayDir {
    inode: Arc<OverlayInode>,
    cache: Mutex<Option<Arc<Listing>>>,
}

impl FileOps for OverlayDir {
    fn fsync(&self) -> Result<()> {
        // A directory's entries live in its layers, whose own syncs have
        // nothing pending here (Linux syncs the upper directory, if any).
        Ok(())
    }

    fn readdir(&self, _ctx: &Ctx<'_>, off: u64) -> Result<Vec<DirEntry>> {
        let cached = if off == 0 {
            None
        } else {
            self.cache.lock().clone()
        };
        let list = match cached {
            Some(l) => l,
            None => {
                let l = Arc::new(self.inode.list(false)?);
                *self.cache.lock() = Some(l.clone());
                l
            }
        };
        let end = list.len() as u64 + 2;
        if off >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let me = self.inode.stat().ino;
        for (at, name) in [(0u64, &b"."[..]), (1, &b".."[..])] {
            if off <= at {
                out.push(DirEntry {
                    name: name.to_vec(),
                    dtype: DirentType::Dir,
                    ino: if at == 0 { me } else { crate_ino(b"..") },
                    next_off: at + 1,
                });
            }
        }
        let skip = off.saturating_sub(2) as usize;
        for (k, (name, dtype, ino)) in list.iter().enumerate().skip(skip) {
            out.push(DirEntry {
                name: name.clone(),
                dtype: *dtype,
                ino: *ino,
                next_off: k as u64 + 3,
            });
        }
        Ok(out)
    }
}
