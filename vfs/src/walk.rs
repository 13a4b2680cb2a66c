//! The one path walker.
//!
//! Every path of every system call is resolved here, so the edge cases of
//! Linux's `fs/namei.c` are written once: `.` and `..` (clamped at the root,
//! crossing mounts both ways), repeated and trailing slashes, symbolic links
//! (40, then `ELOOP`), `NAME_MAX`, and the `openat2` `RESOLVE_*` scopes.
//!
//! The walker keeps a stack of path segments: the caller's path at the
//! bottom, and a symbolic link's target pushed on top when one is followed,
//! so there is no recursion. A link whose target is one plain name (the
//! common `libfoo.so -> libfoo.so.1`) is not pushed: that name is looked up
//! at once, read in place from the link's inode (`Walker::follow_step`),
//! so a chain of such links costs a lookup and the follow checks each. It
//! stops before the last component
//! ([`Walker::walk_to_last`]), which lets create-style calls act on the
//! parent and the name, and lets `open` follow a final link and go on.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::abi::*;
use crate::cred::Credentials;
use crate::dcache;
use crate::dentry::{CachedLookup, Dentry};
use crate::inode::{Coherence, Ctx, KeptLink};
use crate::mount::{MntFlags, Mount, VirtualDentry};
use crate::perm::{self, May};
use crate::Vfs;

/// A name short enough to stay on the stack.
pub type NameBuf = SmallVec<[u8; 32]>;

/// Finds the next name in `bytes` from `pos`: its start and end, and where
/// the slashes after it end. `None` when only slashes remain.
#[inline(always)]
fn scan(bytes: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
    let mut i = pos;
    while i < bytes.len() && bytes[i] == b'/' {
        i += 1;
    }
    if i == bytes.len() {
        return None;
    }
    let start = i;
    while i < bytes.len() && bytes[i] != b'/' {
        i += 1;
    }
    let end = i;
    while i < bytes.len() && bytes[i] == b'/' {
        i += 1;
    }
    Some((start, end, i))
}

/// The kind of the last component of a path. A name is kept in the
/// walker ([`Walker::last`]) rather than returned: a name moved out through
/// a `Result`, written field by field and read back at once by a wider
/// copy, stalled on store forwarding in every create and unlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    /// The path ended at a directory with no final name (`/`, or a symlink to `/`).
    Root,
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// A name: [`Walker::last`].
    Name,
}

/// The last name of a path: borrowed from the caller's path, or, when it
/// came from a symbolic link's target, a part of that target (kept by a
/// reference to it, not copied).
#[derive(Clone, Debug)]
pub enum LastName<'p> {
    /// Part of the caller's path.
    Path(&'p [u8]),
    /// Bytes `start..end` of a link's target.
    Held(Arc<[u8]>, usize, usize),
}

impl std::ops::Deref for LastName<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            LastName::Path(n) => n,
            LastName::Held(t, start, end) => t.get(*start..*end).unwrap_or_default(),
        }
    }
}

/// Where a walk stands: borrowed from the caller (the root or the starting
/// directory) until the walk moves off it, so a walk touches no reference
/// count it does not need. Every reference count a walk writes is a cache
/// line that threads walking the same tree share.
#[derive(Clone)]
pub struct Place<'a> {
    /// The mount.
    pub mount: Cow<'a, Arc<Mount>>,
    /// The dentry within the mount's filesystem.
    pub dentry: DentryRef<'a>,
}

/// A dentry a walk stands on: borrowed from the caller, owned, or lent by
/// the lookup cache (see `dcache`), so a step that hits the cache takes no
/// reference count.
pub struct DentryRef<'a>(DRepr<'a>);

enum DRepr<'a> {
    Borrowed(&'a Arc<Dentry>),
    Owned(Arc<Dentry>),
    Lent(dcache::Lent),
}

impl<'a> DentryRef<'a> {
    /// Borrows `d`.
    #[inline]
    pub fn borrowed(d: &'a Arc<Dentry>) -> DentryRef<'a> {
        DentryRef(DRepr::Borrowed(d))
    }

    /// Owns `d`.
    #[inline]
    pub fn owned(d: Arc<Dentry>) -> DentryRef<'a> {
        DentryRef(DRepr::Owned(d))
    }

    /// The dentry, owned (taking a reference only when it is not owned yet).
    #[inline]
    pub fn into_owned(self) -> Arc<Dentry> {
        match self.0 {
            DRepr::Borrowed(d) => Arc::clone(d),
            DRepr::Owned(d) => d,
            DRepr::Lent(e) => Arc::clone(e.child()),
        }
    }
}

impl std::ops::Deref for DentryRef<'_> {
    type Target = Arc<Dentry>;

    #[inline(always)]
    fn deref(&self) -> &Arc<Dentry> {
        match &self.0 {
            DRepr::Borrowed(d) => d,
            DRepr::Owned(d) => d,
            DRepr::Lent(e) => e.child(),
        }
    }
}

impl Clone for DentryRef<'_> {
    /// A borrowed dentry stays borrowed; an owned or lent one is cloned as
    /// an owned reference (a cache loan is not copied).
    fn clone(&self) -> Self {
        match &self.0 {
            DRepr::Borrowed(d) => DentryRef::borrowed(d),
            _ => DentryRef::owned(Arc::clone(self)),
        }
    }
}

impl<'a> Place<'a> {
    /// A place borrowed from `vd`.
    #[inline]
    pub fn borrowed(vd: &'a VirtualDentry) -> Place<'a> {
        Place {
            mount: Cow::Borrowed(&vd.mount),
            dentry: DentryRef::borrowed(&vd.dentry),
        }
    }

    /// Whether this is the location `vd`.
    #[inline]
    pub fn same(&self, vd: &VirtualDentry) -> bool {
        Arc::ptr_eq(&self.mount, &vd.mount) && Arc::ptr_eq(&self.dentry, &vd.dentry)
    }

    /// Whether this is the root of its mount.
    #[inline]
    pub fn is_mount_root(&self) -> bool {
        Arc::ptr_eq(&self.dentry, self.mount.root())
    }

    /// An owned copy of the location.
    pub fn to_vd(&self) -> VirtualDentry {
        VirtualDentry {
            mount: Arc::clone(&self.mount),
            dentry: Arc::clone(&self.dentry),
        }
    }

    /// The location, owned (cloning only what is still borrowed).
    pub fn into_vd(self) -> VirtualDentry {
        VirtualDentry {
            mount: self.mount.into_owned(),
            dentry: self.dentry.into_owned(),
        }
    }
}

impl From<VirtualDentry> for Place<'_> {
    #[inline]
    fn from(vd: VirtualDentry) -> Self {
        Place {
            mount: Cow::Owned(vd.mount),
            dentry: DentryRef::owned(vd.dentry),
        }
    }
}

/// A followed link's target being walked (shared with the inode, so
/// following a link copies nothing).
struct LinkSeg {
    target: Arc<[u8]>,
    pos: usize,
    /// Putting this link (when its last component is taken) drops a
    /// reference to a detached mount in a blocking walk (see `seq_moved`).
    put_moves_seq: bool,
}

/// Where a component's bytes are kept while the walk looks them up: the
/// link target whose last name it is (moved here as the walk lets the link
/// go), or a copy of a name from the middle of a target.
#[derive(Default)]
pub(crate) struct NameHold {
    target: Option<Arc<[u8]>>,
    buf: NameBuf,
}

/// Options of one walk.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkFlags {
    /// `openat2` scopes.
    pub resolve: ResolveFlags,
}

/// A path walk in progress.
pub struct Walker<'a, 'p> {
    vfs: &'a Vfs,
    cred: &'a Credentials,
    /// The root `..` stops at and absolute paths start from (borrowed: a
    /// walk takes no reference it does not need).
    root: &'a VirtualDentry,
    /// The current directory of the walk.
    pub cur: Place<'a>,
    /// The caller's path and how far the walk has read it: the bottom of
    /// the stack of segments.
    path: &'p [u8],
    pos: usize,
    /// The link target read now, above the path (one slot inline: a link
    /// met as the last name of what is being read replaces that segment).
    link: Option<LinkSeg>,
    /// Targets below `link`, when a target holds a link before its end.
    deeper: Vec<LinkSeg>,
    links: u32,
    resolve: ResolveFlags,
    /// A trailing slash was seen on the final component (of the path or of a
    /// followed link): the result must be a directory.
    pub must_be_dir: bool,
    /// Whether Linux would have looked the root up by now (see `jump_root`).
    root_set: bool,
    /// The last name, once [`Walker::walk_to_last`] answered [`Last::Name`].
    pub last: LastName<'p>,
    /// Whether Linux's walk has left RCU mode and goes on holding references
    /// (after updating a link's access time).
    refwalk: bool,
    /// Whether that blocking walk dropped a reference to a detached mount:
    /// `mntput` then takes `mount_lock`, and a scoped walk's next `..` sees
    /// the sequence move and answers `EAGAIN` ("a mount raced with us").
    seq_moved: bool,
}

impl<'a, 'p> Walker<'a, 'p> {
    /// Starts a walk of `path` from `start`, with `root` as the process root.
    /// Checks the path length and the starting point as `path_init` does.
    #[inline(always)]
    pub fn new(
        vfs: &'a Vfs,
        cred: &'a Credentials,
        root: &'a VirtualDentry,
        start: &'a VirtualDentry,
        path: &'p [u8],
        flags: WalkFlags,
    ) -> Result<Walker<'a, 'p>> {
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let resolve = flags.resolve;
        let scoped =
            resolve.intersects(ResolveFlags::RESOLVE_BENEATH | ResolveFlags::RESOLVE_IN_ROOT);
        let root = if scoped { start } else { root };
        let absolute = path.first() == Some(&b'/');
        // `path_init`: RESOLVE_IN_ROOT starts at its dirfd even for an
        // absolute path, which must then be a directory.
        if absolute && resolve.contains(ResolveFlags::RESOLVE_IN_ROOT) && !start.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if absolute {
            // `jump_root`'s checks, made before anything is cloned: every
            // reference count touched here is a write to a line that other
            // threads walking the same tree share.
            // An absolute path argument may start on another mount than the
            // root even with RESOLVE_NO_XDEV (`nd_jump_root` allows it).
            if resolve.contains(ResolveFlags::RESOLVE_BENEATH) {
                return Err(Errno::EXDEV);
            }
        } else if !path.is_empty() && !start.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let w = Walker {
            vfs,
            cred,
            root,
            cur: Place::borrowed(if absolute { root } else { start }),
            path,
            pos: 0,
            link: None,
            deeper: Vec::new(),
            links: 0,
            resolve,
            must_be_dir: false,
            root_set: absolute || scoped,
            last: LastName::Path(&[]),
            refwalk: false,
            seq_moved: false,
        };
        Ok(w)
    }

    /// The root this walk is confined to.
    pub fn root(&self) -> &VirtualDentry {
        self.root
    }

    fn jump_root(&mut self) -> Result<()> {
        if self.resolve.contains(ResolveFlags::RESOLVE_BENEATH) {
            return Err(Errno::EXDEV);
        }
        // Linux compares with a root it may not have looked up yet (a
        // relative walk sets it at its first `..`), and an unset root counts
        // as another mount.
        if self.resolve.contains(ResolveFlags::RESOLVE_NO_XDEV)
            && (!self.root_set || !Arc::ptr_eq(&self.cur.mount, &self.root.mount))
        {
            return Err(Errno::EXDEV);
        }
        self.leave_cur_mount();
        self.cur = Place::borrowed(self.root);
        self.root_set = true;
        Ok(())
    }

    /// The walk moves off the current mount: a blocking walk drops its
    /// reference to it (see `seq_moved`).
    fn leave_cur_mount(&mut self) {
        if self.refwalk && self.cur.mount.is_detached() {
            self.seq_moved = true;
        }
    }

    /// Whether every remaining segment holds only slashes.
    fn rest_is_empty(&self) -> bool {
        let slashes = |b: &[u8]| b.iter().all(|&c| c == b'/');
        self.link
            .iter()
            .chain(&self.deeper)
            .all(|l| slashes(&l.target[l.pos..]))
            && slashes(&self.path[self.pos..])
    }

    /// Drops every segment: the walk has taken its last component.
    #[inline(always)]
    fn clear_segs(&mut self) {
        self.link = None;
        self.deeper.clear();
        self.pos = self.path.len();
    }

    /// Takes the next component and whether it is the last one. A name
    /// from the caller's path is borrowed from it; one from a link's target
    /// is kept in `hold` (the walk may drop the link meanwhile).
    #[inline(always)]
    fn next_component<'b>(&mut self, hold: &'b mut NameHold) -> Option<(&'b [u8], bool)>
    where
        'p: 'b,
    {
        // The position moves past the slashes after a name too, so each
        // slash is looked at once; the segments below are scanned only when
        // the one above is used up, so a walk stays linear.
        while let Some(l) = self.link.as_mut() {
            let Some((start, end, next)) = scan(&l.target, l.pos) else {
                self.link = self.deeper.pop();
                continue;
            };
            l.pos = next;
            if next < l.target.len() {
                hold.buf = SmallVec::from_slice(&l.target[start..end]);
                return Some((&hold.buf, false));
            }
            // The last name of the target: the link is put now.
            if l.put_moves_seq {
                self.seq_moved = true;
            }
            let slash = end < next;
            let done = self.link.take();
            self.link = self.deeper.pop();
            let last = self.rest_is_empty();
            if last {
                if slash {
                    self.must_be_dir = true;
                }
                self.clear_segs();
            }
            let target = hold.target.insert(done?.target);
            return Some((&target[start..end], last));
        }
        let (start, end, next) = scan(self.path, self.pos)?;
        self.pos = next;
        let last = next == self.path.len();
        if last && end < next {
            self.must_be_dir = true;
        }
        Some((&self.path[start..end], last))
    }

    /// `name` as a part of the caller's path, when it is one (rather than
    /// a part of a link's target).
    #[inline]
    fn path_name(&self, name: &[u8]) -> Option<&'p [u8]> {
        let start = (name.as_ptr() as usize).checked_sub(self.path.as_ptr() as usize)?;
        self.path
            .get(start..start.checked_add(name.len())?)
            .filter(|n| n.as_ptr() == name.as_ptr())
    }

    /// Checks that the current node is a directory we may search.
    #[inline]
    fn may_lookup(&self) -> Result<()> {
        // One dereference: each one matches on how the dentry is held.
        let d: &Dentry = &self.cur.dentry;
        if !d.is_dir() {
            return Err(self.unlazy(Errno::ENOTDIR));
        }
        let o = d.inode().owner();
        // Fast path: search allowed to everyone (tmpfs caches "no ACL" in
        // every inode it makes, so Linux's lock-free check decides too).
        if o.mode & 0o111 == 0o111 {
            return Ok(());
        }
        // A failure in the lock-free walk is checked again after leaving it
        // (`may_lookup`), which RESOLVE_CACHED forbids.
        perm::check(self.cred, o, May::EXEC).map_err(|e| self.unlazy(e))
    }

    /// Walks every component but the last, following links on the way.
    /// Returns the last component; `self.cur` is its directory.
    pub fn walk_to_last(&mut self) -> Result<Last> {
        self.walk_to_last_inner().inspect_err(|&e| self.failed(e))
    }

    /// A walk that failed: Linux leaves its lock-free mode to report nearly
    /// every failure (a cache miss, a permission to check again), and then
    /// puts the reference it took on the mount it stands in, which takes
    /// back that mount's `MNT_EXPIRE` mark (`mntput`). A cached-only walk
    /// never leaves that mode, nor does one refused a link by
    /// `RESOLVE_NO_SYMLINKS`.
    #[cold]
    pub(crate) fn failed(&self, e: Errno) {
        let lock_free = self.resolve.contains(ResolveFlags::RESOLVE_CACHED)
            || (e == Errno::ELOOP && self.resolve.contains(ResolveFlags::RESOLVE_NO_SYMLINKS));
        if !lock_free {
            self.cur.mount.used();
        }
    }

    #[inline(always)]
    fn walk_to_last_inner(&mut self) -> Result<Last> {
        loop {
            let mut hold = NameHold::default();
            let Some((name, last)) = self.next_component(&mut hold) else {
                return Ok(Last::Root);
            };
            self.may_lookup()?;
            if last {
                return Ok(match name {
                    b"." => Last::Dot,
                    b".." => Last::DotDot,
                    _ => {
                        self.last = match self.path_name(name) {
                            Some(n) => LastName::Path(n),
                            None => {
                                let (at, len) = (name.as_ptr() as usize, name.len());
                                held_name(&mut hold, at, len)
                            }
                        };
                        Last::Name
                    }
                });
            }
            match name {
                b"." => {}
                b".." => self.dotdot()?,
                _ => {
                    let mut met = self.step(name, None)?;
                    while let Some(link) = met {
                        met = self.follow_step(link)?;
                    }
                }
            }
        }
    }

    /// Looks `name` up in the current directory (no mount crossing), asking
    /// the filesystem when its cache cannot answer alone.
    #[cold]
    fn lookup_name(&self, name: &[u8]) -> Result<Arc<Dentry>> {
        // A removed directory answers ENOENT before the name is looked at
        // (`__lookup_slow`).
        if self.cur.dentry.is_dead() {
            return Err(self.unlazy(Errno::ENOENT));
        }
        if name.len() > NAME_MAX {
            return Err(self.unlazy(Errno::ENAMETOOLONG));
        }
        // A cached-only walk finds what the cache holds and needs no
        // revalidation; anything else asks the filesystem, which it may not.
        if self.resolve.contains(ResolveFlags::RESOLVE_CACHED) {
            let dir = &self.cur.dentry;
            match dir.coherence() {
                Coherence::Authoritative => {}
                Coherence::Cached => return dir.cached_child(name).ok_or(Errno::EAGAIN),
                Coherence::Revalidate => return Err(Errno::EAGAIN),
            }
        }
        match lookup_in(self.cred, &self.cur.dentry, name) {
            // Linux keeps no negative entry for a name it never looked up, so
            // a cached-only walk gives up on a miss.
            Err(Errno::ENOENT) if self.resolve.contains(ResolveFlags::RESOLVE_CACHED) => {
                Err(Errno::EAGAIN)
            }
            r => r,
        }
    }

    /// Moves `cur` to its child `name` (crossing mounts), unless the child is
    /// a symbolic link, which is returned instead and `cur` stays. The common
    /// step keeps the current mount and only swaps the dentry, so a walk
    /// within one mount touches no mount reference count.
    /// `hash` is the name's hash when the caller has it.
    #[inline(always)]
    fn step(&mut self, name: &[u8], hash: Option<u64>) -> Result<Option<Place<'a>>> {
        let dentry = self.child(name, hash)?;
        let (mountpoint, ftype) = {
            let d: &Dentry = &dentry;
            (d.is_mountpoint(), d.file_type())
        };
        if mountpoint {
            let mut p = Place {
                mount: self.cur.mount.clone(),
                dentry,
            };
            cross_mounts(self.vfs, self.resolve, &mut p)?;
            if p.dentry.file_type() == FileType::Symlink {
                return Ok(Some(p));
            }
            if !Arc::ptr_eq(&p.mount, &self.cur.mount) {
                self.leave_cur_mount();
            }
            self.cur = p;
        } else if ftype == FileType::Symlink {
            return Ok(Some(Place {
                mount: self.cur.mount.clone(),
                dentry,
            }));
        } else {
            self.cur.dentry = dentry;
        }
        Ok(None)
    }

    /// The child `name` of the current directory: from the cache when it
    /// can answer, else from the full lookup.
    #[inline(always)]
    fn child(&self, name: &[u8], hash: Option<u64>) -> Result<DentryRef<'a>> {
        match self.cur.dentry.cached_lookup(name, hash) {
            CachedLookup::Lent(e) => Ok(DentryRef(DRepr::Lent(e))),
            CachedLookup::Hit(d) => Ok(DentryRef::owned(d)),
            CachedLookup::Absent => Err(self.unlazy(Errno::ENOENT)),
            CachedLookup::Ask => self.lookup_name(name).map(DentryRef::owned),
        }
    }

    /// Looks `name` up in the current directory and crosses any mount on it.
    pub fn lookup_child(&self, name: &[u8]) -> Result<VirtualDentry> {
        let dentry = self
            .child(name, None)
            .inspect_err(|&e| self.failed(e))?
            .into_owned();
        let mut vd = VirtualDentry {
            mount: Arc::clone(&self.cur.mount),
            dentry,
        };
        self.follow_mounts(&mut vd)?;
        Ok(vd)
    }

    /// An error Linux only reaches after leaving its lock-free (RCU) walk,
    /// which `RESOLVE_CACHED` forbids: such a walk gives up with `EAGAIN`.
    fn unlazy(&self, e: Errno) -> Errno {
        unlazy(self.resolve, e)
    }

    /// Moves from a mount point to whatever is mounted on it, repeatedly.
    pub fn follow_mounts(&self, vd: &mut VirtualDentry) -> Result<()> {
        while vd.dentry.is_mountpoint() {
            if cached_no_xdev(self.resolve) {
                return Err(Errno::EAGAIN);
            }
            match self.vfs.mount_at(&vd.mount, &vd.dentry) {
                Some(m) => {
                    if self.resolve.contains(ResolveFlags::RESOLVE_NO_XDEV) {
                        return Err(no_xdev_crossing(self.resolve, &m));
                    }
                    vd.dentry = m.root().clone();
                    vd.mount = m;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// `..`: stays at the root, climbs out of mount roots, then goes to the parent.
    pub fn dotdot(&mut self) -> Result<()> {
        self.dotdot_step()?;
        // `handle_dots`: a scoped walk cannot trust a `..` while mounts
        // changed (here: its own reference to a detached mount was dropped).
        if self.seq_moved
            && self
                .resolve
                .intersects(ResolveFlags::RESOLVE_BENEATH | ResolveFlags::RESOLVE_IN_ROOT)
        {
            return Err(Errno::EAGAIN);
        }
        Ok(())
    }

    fn dotdot_step(&mut self) -> Result<()> {
        self.root_set = true;
        let orig = self.cur.clone();
        loop {
            if self.cur.same(self.root) {
                if self.resolve.contains(ResolveFlags::RESOLVE_BENEATH) {
                    return Err(self.unlazy(Errno::EXDEV));
                }
                // `..` stays at the root, then steps onto anything mounted on it.
                return cross_mounts(self.vfs, self.resolve, &mut self.cur);
            }
            if !self.cur.is_mount_root() {
                break;
            }
            // The namespace's hidden base stands for Linux's rootfs: climbing
            // onto it is like having no parent.
            match self
                .cur
                .mount
                .parent()
                .filter(|(pm, _)| !pm.is_namespace_base())
                // `choose_mountpoint` stops below the root: a climb that
                // would land on it stays where `..` began, as at the top.
                .filter(|(pm, mp)| {
                    !(Arc::ptr_eq(pm, &self.root.mount) && Arc::ptr_eq(mp, &self.root.dentry))
                }) {
                Some((pm, mp)) => {
                    if self.resolve.contains(ResolveFlags::RESOLVE_NO_XDEV) {
                        return Err(self.unlazy(Errno::EXDEV));
                    }
                    self.leave_cur_mount();
                    self.cur = VirtualDentry {
                        mount: pm,
                        dentry: mp,
                    }
                    .into();
                }
                None => {
                    // The top of the tree: like the root, `..` stays put.
                    if self.resolve.contains(ResolveFlags::RESOLVE_BENEATH) {
                        return Err(self.unlazy(Errno::EXDEV));
                    }
                    self.cur = orig;
                    return cross_mounts(self.vfs, self.resolve, &mut self.cur);
                }
            }
        }
        if let Some(p) = self.cur.dentry.parent() {
            self.cur.dentry = DentryRef::owned(p);
        }
        cross_mounts(self.vfs, self.resolve, &mut self.cur)
    }

    /// Follows the symbolic link `dentry` on `mount`: pushes its target
    /// (jumping to the root for an absolute one). The current directory
    /// stays the link's directory, so a relative target resolves from there.
    pub fn follow_link(&mut self, mount: &Arc<Mount>, dentry: &Dentry) -> Result<()> {
        let inode = dentry.inode();
        let kept = inode.kept_link();
        self.may_follow(mount, dentry, kept)?;
        let target = match kept {
            Some(k) => k.target.bytes().clone(),
            None => inode.link_target()?,
        };
        self.push_target(mount, target)
    }

    /// The checks of following the link `dentry` on `mount`, counted as a
    /// followed link; touches its access time (see [`link_accessed`]).
    #[inline(always)]
    fn may_follow(
        &mut self,
        mount: &Mount,
        dentry: &Dentry,
        kept: Option<KeptLink<'_>>,
    ) -> Result<()> {
        if self
            .resolve
            .intersects(ResolveFlags::RESOLVE_NO_SYMLINKS | ResolveFlags::RESOLVE_CACHED)
        {
            restricted_follow(self.resolve, self.links, mount, dentry)?;
        }
        if mount.flags().contains(MntFlags::NOSYMFOLLOW) {
            return Err(Errno::ELOOP);
        }
        if self.links >= MAXSYMLINKS {
            return Err(Errno::ELOOP);
        }
        self.links += 1;
        if link_accessed(
            self.vfs,
            mount,
            dentry,
            kept,
            self.resolve.contains(ResolveFlags::RESOLVE_CACHED),
        )? {
            self.refwalk = true;
        }
        Ok(())
    }

    /// Pushes a followed link's target as the segment to read next
    /// (jumping to the root for an absolute one).
    fn push_target(&mut self, mount: &Mount, target: Arc<[u8]>) -> Result<()> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target[0] == b'/' {
            self.jump_root()?;
        }
        let seg = LinkSeg {
            target,
            pos: 0,
            put_moves_seq: self.refwalk && mount.is_detached(),
        };
        if let Some(below) = self.link.replace(seg) {
            self.deeper.push(below);
        }
        Ok(())
    }

    /// Follows `link`, met as a component was looked up, and returns the
    /// link the walk meets next, if any. A target that is one plain name
    /// (`libc.so.6 -> libc-2.36.so`: the common link) is looked up at once
    /// in the link's directory, as the next component would be, read in
    /// place from the link's inode: nothing is pushed, copied, or counted
    /// but the link itself. Any other target is pushed as a segment.
    #[inline(always)]
    fn follow_step(&mut self, link: Place<'a>) -> Result<Option<Place<'a>>> {
        // One dereference: each one matches on how the dentry is held.
        let d: &Dentry = &link.dentry;
        let inode = d.inode();
        let kept = inode.kept_link();
        self.may_follow(&link.mount, d, kept)?;
        let Some(KeptLink { target, .. }) = kept else {
            let target = inode.link_target()?;
            self.push_target(&link.mount, target)?;
            return Ok(None);
        };
        let Some(hash) = target.plain_hash() else {
            self.push_target(&link.mount, target.bytes().clone())?;
            return Ok(None);
        };
        // The link is put as its only name is taken (see `LinkSeg`).
        if self.refwalk && link.mount.is_detached() {
            self.seq_moved = true;
        }
        // The directory is the one the link was just looked up in, with
        // the same credentials: `may_lookup` passed there a moment ago
        // (Linux checks again; only a concurrent chmod could tell, and
        // it may as well have come after this lookup).
        self.step(target.bytes(), Some(hash))
    }

    /// Resolves the whole path. `follow` follows a final symbolic link (a
    /// trailing slash forces it); the result must be a directory when a
    /// trailing slash was given or `must_be_dir` is set.
    pub fn resolve(mut self, follow: bool, must_be_dir: bool) -> Result<VirtualDentry> {
        self.resolve_here(follow, must_be_dir)?;
        Ok(self.cur.into_vd())
    }

    /// [`Walker::resolve`] that leaves the result in `self.cur`, borrowed
    /// when the walk ended where it began, so a caller that only looks at it
    /// (`stat`) takes no reference at all.
    pub fn resolve_here(&mut self, follow: bool, must_be_dir: bool) -> Result<()> {
        self.resolve_here_inner(follow, must_be_dir)
            .inspect_err(|&e| self.failed(e))
    }

    #[inline(always)]
    fn resolve_here_inner(&mut self, follow: bool, must_be_dir: bool) -> Result<()> {
        // One loop for every component: the last one differs only in that a
        // link there is followed on request.
        let mut hold = NameHold::default();
        while let Some((name, last)) = self.next_component(&mut hold) {
            self.may_lookup()?;
            match name {
                b"." => {}
                b".." => self.dotdot()?,
                _ => {
                    let mut met = self.step(name, None)?;
                    while let Some(link) = met {
                        if last && !follow && !self.must_be_dir {
                            self.cur = link;
                            break;
                        }
                        met = self.follow_step(link)?;
                    }
                }
            }
        }
        if (must_be_dir || self.must_be_dir) && !self.cur.dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(())
    }
}

/// The last name of a path read from a link's target, which `hold` keeps
/// (see [`Walker::next_component`]): bytes `at..at + len` of the target,
/// by address.
fn held_name(hold: &mut NameHold, at: usize, len: usize) -> LastName<'static> {
    if let Some(t) = hold.target.take() {
        let base = t.as_ptr() as usize;
        if let Some(start) = at.checked_sub(base).filter(|s| s + len <= t.len()) {
            return LastName::Held(t, start, start + len);
        }
    }
    // A name from the middle of a target is never the last one; were it
    // so, it is in the hold's copy.
    LastName::Held(Arc::from(&hold.buf[..]), 0, hold.buf.len())
}

/// [`Walker::may_follow`]'s rules of `openat2` walks: no link at all under
/// `RESOLVE_NO_SYMLINKS`; under `RESOLVE_CACHED`, none whose target only its
/// filesystem can read (Linux's `get_link` of any filesystem but tmpfs wants
/// to block), once the link checks every walk makes have passed.
#[cold]
fn restricted_follow(
    resolve: ResolveFlags,
    links: u32,
    mount: &Mount,
    dentry: &Dentry,
) -> Result<()> {
    if resolve.contains(ResolveFlags::RESOLVE_NO_SYMLINKS) {
        return Err(Errno::ELOOP);
    }
    if dentry.inode().coherence() != Coherence::Authoritative
        && !mount.flags().contains(MntFlags::NOSYMFOLLOW)
        && links < MAXSYMLINKS
    {
        return Err(Errno::EAGAIN);
    }
    Ok(())
}

/// [`Walker::unlazy`] for code that holds no walker.
#[inline]
fn unlazy(resolve: ResolveFlags, e: Errno) -> Errno {
    if resolve.contains(ResolveFlags::RESOLVE_CACHED) {
        Errno::EAGAIN
    } else {
        e
    }
}

/// Whether a walk is cached-only and may not cross mounts. Linux's lock-free
/// walk leaves at any dentry that is a mount point in some mount when
/// crossing is forbidden (`__follow_mount_rcu`), even where nothing is
/// mounted on it in the walk's mount; a cached-only walk cannot leave it.
#[inline]
fn cached_no_xdev(resolve: ResolveFlags) -> bool {
    resolve.contains(ResolveFlags::RESOLVE_NO_XDEV | ResolveFlags::RESOLVE_CACHED)
}

/// A `RESOLVE_NO_XDEV` walk met mount `m` on its way down: `EXDEV`. Linux
/// finds that out in its blocking walk, holding a reference to `m`, whose
/// put takes back `m`'s `MNT_EXPIRE` mark.
#[cold]
fn no_xdev_crossing(resolve: ResolveFlags, m: &Mount) -> Errno {
    if !resolve.contains(ResolveFlags::RESOLVE_CACHED) {
        m.used();
    }
    unlazy(resolve, Errno::EXDEV)
}

/// Moves `p` from a mount point to whatever is mounted on it, repeatedly.
#[inline]
fn cross_mounts(vfs: &Vfs, resolve: ResolveFlags, p: &mut Place<'_>) -> Result<()> {
    while p.dentry.is_mountpoint() {
        if cached_no_xdev(resolve) {
            return Err(Errno::EAGAIN);
        }
        match vfs.mount_at(&p.mount, &p.dentry) {
            Some(m) => {
                if resolve.contains(ResolveFlags::RESOLVE_NO_XDEV) {
                    return Err(no_xdev_crossing(resolve, &m));
                }
                p.dentry = DentryRef::owned(m.root().clone());
                p.mount = Cow::Owned(m);
            }
            None => break,
        }
    }
    Ok(())
}

/// A symbolic link is followed or read: Linux's `touch_atime`. Under
/// `RESOLVE_CACHED` a link whose access time needs an update ends the walk
/// with `EAGAIN` (the update cannot be made lock-free), which is how the
/// history of stats and changes shows through (see [`crate::mgtime`]).
/// Returns whether the walk had to leave RCU mode for it.
#[inline(always)]
pub(crate) fn link_accessed(
    vfs: &Vfs,
    mount: &Mount,
    link: &Dentry,
    kept: Option<KeptLink<'_>>,
    cached: bool,
) -> Result<bool> {
    let flags = mount.flags();
    // A read-only superblock never needs an update (`IS_NOATIME`); a
    // read-only mount does, but cannot make it.
    if flags.contains(MntFlags::NOATIME) || mount.fs().is_readonly() {
        return Ok(false);
    }
    let relatime = flags.contains(MntFlags::RELATIME);
    let inode = link.inode();
    // A kept target carries the access time: decided here, without a call
    // into the filesystem on every link followed.
    let needs = match kept {
        Some(k) => k
            .target
            .atime()
            .atime_needs_update(k.ctime, vfs.mg_clock(), relatime),
        None => inode.atime_needs_update(vfs.mg_clock(), relatime),
    };
    if !needs {
        return Ok(false);
    }
    if cached {
        return Err(Errno::EAGAIN);
    }
    if !flags.contains(MntFlags::RDONLY) {
        inode.touch_atime(vfs.mg_clock());
    }
    Ok(true)
}

/// Looks `name` up among the children of `dir`, asking the filesystem on a
/// miss unless the directory is authoritative.
pub(crate) fn lookup_in(cred: &Credentials, dir: &Arc<Dentry>, name: &[u8]) -> Result<Arc<Dentry>> {
    let coherence = if let Some(c) = dir.cached_child(name) {
        let coh = dir.coherence();
        if coh != Coherence::Revalidate || dir.inode().revalidate(&Ctx { cred }, name, c.inode()) {
            return Ok(c);
        }
        coh
    } else {
        dir.coherence()
    };
    if coherence == Coherence::Authoritative {
        return Err(Errno::ENOENT);
    }
    let ds = dir.dir()?;
    let _op = ds.op.lock();
    if coherence == Coherence::Revalidate {
        dir.remove_child(name);
    } else if let Some(c) = dir.cached_child(name) {
        return Ok(c);
    }
    let inode = dir.inode().lookup(&Ctx { cred }, name)?;
    dir.insert_child(name, inode)
}

#[cfg(test)]
mod tests {
    use crate::abi::*;
    use crate::testfs::process;

    fn ok_stat(p: &crate::process::Process, path: &[u8]) -> Result<FileType> {
        p.fstatat(AT_FDCWD, path, AtFlags::empty())
            .map(|s| s.file_type().unwrap())
    }

    #[test]
    fn dots_slashes_and_root_clamp() {
        let p = process();
        p.mkdirat(AT_FDCWD, b"/a", 0o755).unwrap();
        p.mkdirat(AT_FDCWD, b"/a/b", 0o755).unwrap();
        assert_eq!(ok_stat(&p, b"//a///b/."), Ok(FileType::Directory));
        assert_eq!(ok_stat(&p, b"/../../a/b/../b"), Ok(FileType::Directory));
        assert_eq!(ok_stat(&p, b""), Err(Errno::ENOENT));
        assert_eq!(ok_stat(&p, b"/a/missing/x"), Err(Errno::ENOENT));
        p.mknodat(AT_FDCWD, b"/a/f", S_IFREG | 0o644, DevId::default())
            .unwrap();
        assert_eq!(ok_stat(&p, b"/a/f/"), Err(Errno::ENOTDIR));
        assert_eq!(ok_stat(&p, b"/a/f/x"), Err(Errno::ENOTDIR));
        assert_eq!(ok_stat(&p, b"/a/f/."), Err(Errno::ENOTDIR));
    }

    #[test]
    fn name_and_path_limits() {
        let p = process();
        let long = vec![b'x'; 256];
        assert_eq!(p.mkdirat(AT_FDCWD, &long, 0o755), Err(Errno::ENAMETOOLONG));
        assert_eq!(p.mkdirat(AT_FDCWD, &long[..255], 0o755), Ok(()));
        let mut path = b"/".to_vec();
        while path.len() < 4096 {
            path.extend_from_slice(b"./");
        }
        path.truncate(4095);
        assert_eq!(ok_stat(&p, &path), Ok(FileType::Directory));
        path.push(b'.');
        assert_eq!(ok_stat(&p, &path), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn forty_links_then_eloop() {
        let p = process();
        p.mkdirat(AT_FDCWD, b"/d", 0o755).unwrap();
        p.symlinkat(b"/d", AT_FDCWD, b"/l0").unwrap();
        for i in 1..=40 {
            let target = format!("/l{}", i - 1);
            p.symlinkat(target.as_bytes(), AT_FDCWD, format!("/l{i}").as_bytes())
                .unwrap();
        }
        // l39 needs 40 follows, l40 needs 41.
        assert_eq!(ok_stat(&p, b"/l39"), Ok(FileType::Directory));
        assert_eq!(ok_stat(&p, b"/l40"), Err(Errno::ELOOP));
        p.symlinkat(b"self", AT_FDCWD, b"/self").unwrap();
        assert_eq!(ok_stat(&p, b"/self"), Err(Errno::ELOOP));
        assert_eq!(
            p.fstatat(AT_FDCWD, b"/self", AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|s| s.file_type()),
            Ok(Some(FileType::Symlink))
        );
        // A trailing slash follows even with NOFOLLOW.
        assert_eq!(
            p.fstatat(AT_FDCWD, b"/l0/", AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|s| s.file_type()),
            Ok(Some(FileType::Directory))
        );
    }

    #[test]
    fn resolve_scopes() {
        let p = process();
        p.mkdirat(AT_FDCWD, b"/r", 0o755).unwrap();
        p.mkdirat(AT_FDCWD, b"/r/in", 0o755).unwrap();
        p.symlinkat(b"/in", AT_FDCWD, b"/r/abs").unwrap();
        p.symlinkat(b"../..", AT_FDCWD, b"/r/up").unwrap();
        let r = p
            .openat(
                AT_FDCWD,
                b"/r",
                OpenFlags::O_PATH | OpenFlags::O_DIRECTORY,
                0,
            )
            .unwrap();
        let dir = OpenFlags::O_DIRECTORY;
        assert_eq!(
            p.openat2(r, b"abs", dir, 0, ResolveFlags::RESOLVE_BENEATH)
                .err(),
            Some(Errno::EXDEV)
        );
        assert!(p
            .openat2(r, b"abs", dir, 0, ResolveFlags::RESOLVE_IN_ROOT)
            .is_ok());
        assert!(p
            .openat2(r, b"up/in", dir, 0, ResolveFlags::RESOLVE_IN_ROOT)
            .is_ok());
        assert_eq!(
            p.openat2(r, b"up", dir, 0, ResolveFlags::RESOLVE_BENEATH)
                .err(),
            Some(Errno::EXDEV)
        );
        assert_eq!(
            p.openat2(r, b"abs", dir, 0, ResolveFlags::RESOLVE_NO_SYMLINKS)
                .err(),
            Some(Errno::ELOOP)
        );
        p.mount(b"none", b"/r/in", b"testfs", MountFlags::empty(), b"")
            .unwrap();
        assert_eq!(
            p.openat2(r, b"in", dir, 0, ResolveFlags::RESOLVE_NO_XDEV)
                .err(),
            Some(Errno::EXDEV)
        );
        assert!(p
            .openat2(r, b"in/..", dir, 0, ResolveFlags::empty())
            .is_ok());
        assert_eq!(
            p.openat2(
                r,
                b"in",
                dir,
                0,
                ResolveFlags::RESOLVE_BENEATH | ResolveFlags::RESOLVE_IN_ROOT
            )
            .err(),
            Some(Errno::EINVAL)
        );
    }

    #[test]
    fn dotdot_crosses_mounts_both_ways() {
        let p = process();
        p.mkdirat(AT_FDCWD, b"/m", 0o755).unwrap();
        p.mount(b"none", b"/m", b"testfs", MountFlags::empty(), b"")
            .unwrap();
        p.mkdirat(AT_FDCWD, b"/m/inner", 0o755).unwrap();
        p.chdir(b"/m/inner").unwrap();
        p.chdir(b"../..").unwrap();
        assert_eq!(p.getcwd().unwrap(), b"/");
        p.chdir(b"m/inner/../../m").unwrap();
        assert_eq!(p.getcwd().unwrap(), b"/m");
    }

    #[test]
    fn search_permission_on_every_directory() {
        let p = process();
        p.mkdirat(AT_FDCWD, b"/a", 0o700).unwrap();
        p.mkdirat(AT_FDCWD, b"/a/b", 0o777).unwrap();
        p.set_fs_ids(1000, 1000, &[]);
        assert_eq!(ok_stat(&p, b"/a/b"), Err(Errno::EACCES));
        assert_eq!(ok_stat(&p, b"/a"), Ok(FileType::Directory));
        p.set_fs_ids(0, 0, &[]);
        assert_eq!(ok_stat(&p, b"/a/b"), Ok(FileType::Directory));
    }
}
