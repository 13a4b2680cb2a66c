//! Dentries: the named tree of a filesystem instance, shared by every mount
//! of it.
//!
//! # Reference rules
//!
//! A dentry holds its inode and, through `link`, its parent. A directory's
//! dentry holds its children in `children`, so a child is reachable from its
//! parent for as long as it has a name. Unlinking a name removes the child
//! from its parent; the child lives on while open files, working directories
//! or mounts hold it. The cycle parent ⇄ child in a live tree is broken when
//! the filesystem instance is dropped (see [`Filesystem`]'s `Drop`).
//!
//! For a non-authoritative filesystem the children map is a cache: an entry
//! that only the map holds is unreferenced and [`Dentry::prune_unused`] frees it.
//!
//! # Locking
//!
//! `DirState::op` (like Linux's `i_rwsem`) serialises changes to one
//! directory's names and is held across the filesystem call that makes the
//! change. `children` and `link` are held only for a map operation and never
//! across a call out. Order: `Filesystem::rename_lock` → `op` of the two
//! directories (by address) → `children` → `link`.
//!
//! The walk's lookup cache (`dcache`) takes no lock: its entries
//! are put in under `children` held for reading and taken out under it held
//! for writing, which is what keeps them exact.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::abi::*;
use crate::dcache;
use crate::fstype::FsTypeOptions;
use crate::inode::{Coherence, FilesystemOps, Inode};

/// A name of one path component. Most names are short and kept inline
/// (no allocation, and a lookup compares them where the map keeps its key
/// instead of chasing a pointer); a longer one is shared on the heap.
#[derive(Clone)]
pub struct Name(NameRepr);

/// How many bytes a [`Name`] keeps inline: with its length and the enum's
/// tag, the same 24 bytes as a `Vec`.
const INLINE_NAME: usize = 22;

#[derive(Clone)]
enum NameRepr {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Heap(Arc<[u8]>),
}

impl Name {
    /// A name holding `bytes`.
    pub fn new(bytes: &[u8]) -> Name {
        if bytes.len() <= INLINE_NAME {
            let mut inline = [0u8; INLINE_NAME];
            inline[..bytes.len()].copy_from_slice(bytes);
            Name(NameRepr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            })
        } else {
            Name(NameRepr::Heap(bytes.into()))
        }
    }
}

impl Default for Name {
    /// The empty name (the root's).
    fn default() -> Name {
        Name(NameRepr::Inline {
            len: 0,
            bytes: [0; INLINE_NAME],
        })
    }
}

impl From<&[u8]> for Name {
    fn from(bytes: &[u8]) -> Name {
        Name::new(bytes)
    }
}

impl std::ops::Deref for Name {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            NameRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            NameRepr::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl PartialEq for Name {
    #[inline]
    fn eq(&self, other: &Name) -> bool {
        names_equal(self, other)
    }
}

impl Eq for Name {}

/// A name hashes as one word, [`name_hash`] (a directory's map keys on
/// names and passes that word through).
impl Hash for Name {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(name_hash(self));
    }
}

/// FxHash: names are short and not attacker-chosen in a way that matters for
/// a per-directory map, so a fast non-keyed hash beats SipHash here.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of a name in a directory's map: FxHash over whole words (a
/// byte at a time only for the tail), with the high bits folded down, since
/// the table picks its bucket from the low bits and a multiply leaves them
/// blind to the upper bytes of a word.
#[inline]
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (name.len() as u64).wrapping_mul(K);
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut w = 0u64;
        for (i, &b) in tail.iter().enumerate() {
            w |= u64::from(b) << (8 * i);
        }
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    h ^ (h >> 32)
}

/// Whether two names are equal, compared inline: names are short, and a
/// call to `memcmp` costs more than the comparison.
#[inline]
pub(crate) fn names_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A name to find in a directory's map, borrowed from the path.
pub(crate) struct NameQuery<'a>(pub(crate) &'a [u8]);

impl Hash for NameQuery<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(name_hash(self.0));
    }
}

impl hashbrown::Equivalent<Name> for NameQuery<'_> {
    #[inline]
    fn equivalent(&self, key: &Name) -> bool {
        names_equal(self.0, key)
    }
}

/// The hasher of the name maps: keys hash themselves ([`name_hash`]) into
/// one word, which this passes through.
#[derive(Default, Clone, Copy)]
pub(crate) struct PassHasher(u64);

impl Hasher for PassHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not reached (keys write one word); kept correct anyway.
        self.0 = name_hash(bytes) ^ self.0.rotate_left(5);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type NameMap<V> = hashbrown::HashMap<Name, V, BuildHasherDefault<PassHasher>>;

/// Where a dentry hangs in its tree: its parent and name. (Its place in
/// the parent's list is in [`Dentry::pos`] and [`Dentry::offset`].)
pub(crate) struct Link {
    pub(crate) parent: Option<Arc<Dentry>>,
    pub(crate) name: Name,
}

/// The children of a directory.
#[derive(Default)]
pub(crate) struct Children {
    pub(crate) by_name: NameMap<Arc<Dentry>>,
    /// The list order (by `Link::pos`): `getdents` reads newest first.
    pub(crate) order: Order,
    pub(crate) next_pos: u32,
    /// The next directory offset to hand out (cyclic, as `mtree_alloc_cyclic`).
    pub(crate) next_offset: u32,
    /// Slots handed out by [`reserve_slot`] and not filled yet: positions
    /// are not packed while one is out, since its holder keeps the number.
    reserved: u32,
}

/// The entries of a directory by list position. Positions only grow, so a
/// new entry goes at the back of a deque and one that leaves is a hole
/// there: no allocation or tree rebalancing per entry, as a `BTreeMap`
/// would cost for the common create-and-remove. Holes at the ends are
/// dropped at once; when holes outnumber entries the positions are packed,
/// so the deque stays within twice the entries.
#[derive(Default)]
pub(crate) struct Order {
    /// The position of `slots[0]`.
    base: u32,
    slots: VecDeque<Option<Arc<Dentry>>>,
    live: usize,
}

impl Order {
    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The entry at `pos`.
    pub(crate) fn get(&self, pos: u32) -> Option<&Arc<Dentry>> {
        let i = pos.checked_sub(self.base)?;
        self.slots.get(i as usize)?.as_ref()
    }

    fn insert(&mut self, pos: u32, d: Arc<Dentry>) {
        if self.slots.is_empty() {
            self.base = pos;
        }
        // A reserved slot may lie before the first entry left.
        while pos < self.base {
            self.slots.push_front(None);
            self.base -= 1;
        }
        let i = (pos - self.base) as usize;
        self.live += 1;
        if i == self.slots.len() {
            self.slots.push_back(Some(d));
            return;
        }
        if i > self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace(d).is_some() {
            self.live -= 1;
        }
    }

    fn remove(&mut self, pos: u32) -> Option<Arc<Dentry>> {
        let i = pos.checked_sub(self.base)? as usize;
        let d = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        while matches!(self.slots.back(), Some(None)) {
            self.slots.pop_back();
        }
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(d)
    }

    /// The entries with their positions, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Dentry>)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, d)| Some((base + i as u32, d.as_ref()?)))
    }

    /// The entries at `pos` and before, newest first.
    fn down_from(&self, pos: u32) -> impl Iterator<Item = &Arc<Dentry>> {
        let end = match pos.checked_sub(self.base) {
            Some(i) => (i as usize).saturating_add(1).min(self.slots.len()),
            None => 0,
        };
        self.slots.range(..end).rev().filter_map(Option::as_ref)
    }

    /// The position after the newest entry.
    fn end(&self) -> Option<u32> {
        (!self.slots.is_empty()).then(|| self.base + self.slots.len() as u32)
    }

    fn holes(&self) -> usize {
        self.slots.len() - self.live
    }
}

/// A place in a directory: list position and offset.
#[derive(Clone, Copy, Debug)]
struct Slot {
    pos: u32,
    offset: u32,
}

/// A list position kept for an entry made later (see [`reserve_slot`]).
#[derive(Debug)]
pub(crate) struct ReservedPos(u32);

/// The first offset handed out: 0, 1 and 2 are `.`, `..` and "the first
/// entry" (`DIR_OFFSET_FIRST`).
const FIRST_OFFSET: u32 = 3;
/// The last one: below `DIR_OFFSET_EOD` (`i32::MAX`).
const LAST_OFFSET: u32 = i32::MAX as u32 - 1;

impl Children {
    /// A new slot at the head of the list, with the given offset or the next one.
    fn new_slot(&mut self, offset: Option<u32>) -> Slot {
        let pos = self.new_pos();
        let offset = offset.unwrap_or_else(|| self.new_offset());
        Slot { pos, offset }
    }

    /// A new position at the head of the list.
    fn new_pos(&mut self) -> u32 {
        // The positions after the newest entry left are free again (unless
        // a reserved slot holds one): reusing them keeps the list dense.
        if self.reserved == 0 {
            self.next_pos = self.order.end().unwrap_or(FIRST_POS);
        }
        if self.next_pos == u32::MAX {
            self.renumber();
        }
        let pos = self.next_pos;
        self.next_pos += 1;
        pos
    }

    /// The next directory offset.
    fn new_offset(&mut self) -> u32 {
        let o = self.next_offset;
        self.next_offset = if o >= LAST_OFFSET {
            FIRST_OFFSET
        } else {
            o + 1
        };
        o
    }

    /// Packs the list positions: after four billion insertions, or when
    /// removals left more holes than entries.
    fn renumber(&mut self) {
        let old = std::mem::take(&mut self.order.slots);
        let mut next = FIRST_POS;
        self.order.base = next;
        for d in old.into_iter().flatten() {
            d.pos.store(next, Ordering::Relaxed);
            self.order.slots.push_back(Some(d));
            next += 1;
        }
        self.next_pos = next;
    }

    /// Takes the entry at `pos` out of the list order.
    fn unlist(&mut self, pos: u32) {
        self.order.remove(pos);
        if self.reserved == 0 && self.order.holes() > self.order.len() + 32 {
            self.renumber();
        }
    }
}

/// The answer of [`Dentry::cached_lookup`].
pub(crate) enum CachedLookup {
    /// The child.
    Hit(Arc<Dentry>),
    /// The child, lent by the lookup cache.
    Lent(dcache::Lent),
    /// No such name (`ENOENT`).
    Absent,
    /// The cache cannot tell: look the name up in full.
    Ask,
}

/// Per-directory state.
pub(crate) struct DirState {
    /// Names the directory in the lookup cache ([`dcache`]): unique for the
    /// life of the process, unlike an address.
    pub(crate) id: u64,
    pub(crate) op: Mutex<()>,
    /// The inode's `coherence()`, asked once: every walk step needs it.
    pub(crate) coherence: Coherence,
    pub(crate) children: RwLock<Children>,
}

impl DirState {
    /// The lookup cache missed `name` (hashed as [`name_hash`]) in this live
    /// authoritative directory: the map answers, and a hit goes into the
    /// cache while the map's lock still vouches for it.
    #[inline(never)]
    fn map_lookup(&self, hash: u64, name: &[u8]) -> CachedLookup {
        let ch = self.children.read();
        if let Some((n, c)) = ch.by_name.get_key_value(&NameQuery(name)) {
            c.mark_cached();
            dcache::install(self.id, hash, n, c);
            return CachedLookup::Hit(c.clone());
        }
        if name.len() <= NAME_MAX {
            CachedLookup::Absent
        } else {
            CachedLookup::Ask
        }
    }
}

/// A named reference to an inode within one filesystem instance.
pub struct Dentry {
    inode: Arc<dyn Inode>,
    ftype: FileType,
    pub(crate) link: RwLock<Link>,
    /// Position in the parent's list of entries (higher is newer: Linux
    /// puts a new or moved dentry at the head of `d_children`). Written
    /// only under the parent's `children` lock, and read under it: outside
    /// `link`, so that a removal reads it without taking another lock.
    pub(crate) pos: AtomicU32,
    /// The directory offset (`simple_offset_add`): where `lseek` finds the
    /// entry. A rename over another entry takes that entry's offset, and an
    /// exchange keeps both, so offsets and list order can disagree. Under
    /// the parent's `children` lock, as `pos`.
    pub(crate) offset: AtomicU32,
    pub(crate) dir: Option<Box<DirState>>,
    /// The directory's id in the lookup cache when its filesystem is
    /// authoritative (its `DirState::id`), else 0: a copy, so the walk's
    /// common step reads the dentry's own line and not the state's too
    /// (a free 8 bytes: the allocation's size class stays the same).
    cache_id: u64,
    /// How many mounts use this dentry as their mount point: the walker's
    /// lock-free "is anything mounted here" test.
    pub(crate) mounts: AtomicU32,
    state: AtomicU8,
}

/// The next directory id (0 is no directory's: see [`dcache`]).
static NEXT_DIR_ID: AtomicU64 = AtomicU64::new(1);

const DEAD: u8 = 1;
/// An `O_TMPFILE` file opened without `O_EXCL`: it may get a name with `linkat`.
const LINKABLE: u8 = 2;
/// The walk's lookup cache was given this dentry (see `dcache`): its
/// removal must look there. Most files are never walked through (a create
/// and an unlink look their last name up in the map), and their removal
/// then skips the cache.
const CACHED: u8 = 4;

/// The first position handed out in a directory: 0, 1 and 2 are `.`, `..` and the start.
const FIRST_POS: u32 = 3;

impl Dentry {
    pub(crate) fn new(
        inode: Arc<dyn Inode>,
        parent: Option<Arc<Dentry>>,
        name: Name,
    ) -> Arc<Dentry> {
        Dentry::new_at(inode, Link { parent, name }, Slot { pos: 0, offset: 0 })
    }

    /// A new dentry already placed by `link`: a child made under its
    /// directory's lock gets its place before it is shared, so its `link`
    /// lock is not taken to set it.
    fn new_at(inode: Arc<dyn Inode>, link: Link, slot: Slot) -> Arc<Dentry> {
        let ftype = inode.file_type();
        let dir: Option<Box<DirState>> = (ftype == FileType::Directory).then(|| {
            Box::new(DirState {
                id: NEXT_DIR_ID.fetch_add(1, Ordering::Relaxed),
                op: Mutex::new(()),
                coherence: inode.coherence(),
                children: RwLock::new(Children {
                    next_pos: FIRST_POS,
                    next_offset: FIRST_OFFSET,
                    ..Default::default()
                }),
            })
        });
        let cache_id = dir
            .as_ref()
            .filter(|d| d.coherence == Coherence::Authoritative)
            .map_or(0, |d| d.id);
        Arc::new(Dentry {
            inode,
            ftype,
            link: RwLock::new(link),
            pos: AtomicU32::new(slot.pos),
            offset: AtomicU32::new(slot.offset),
            dir,
            cache_id,
            mounts: AtomicU32::new(0),
            state: AtomicU8::new(0),
        })
    }

    /// The inode.
    #[inline]
    pub fn inode(&self) -> &Arc<dyn Inode> {
        &self.inode
    }

    /// The file type.
    #[inline]
    pub fn file_type(&self) -> FileType {
        self.ftype
    }

    /// Whether this is a directory.
    #[inline]
    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// The parent, or `None` at the root of the filesystem.
    pub fn parent(&self) -> Option<Arc<Dentry>> {
        self.link.read().parent.clone()
    }

    /// The current name.
    pub fn name(&self) -> Name {
        self.link.read().name.clone()
    }

    /// Whether the dentry was unlinked or removed.
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.state.load(Ordering::SeqCst) & DEAD != 0
    }

    // SeqCst: removal marks the dentry dead and then looks for mounts, while
    // attaching a mount counts it and then looks for death; with a single
    // total order one of the two always sees the other.
    pub(crate) fn set_dead(&self) {
        self.state.fetch_or(DEAD, Ordering::SeqCst);
    }

    /// Notes that the lookup cache holds (or held) this dentry; the caller
    /// holds its parent's `children` lock, as its removal will.
    fn mark_cached(&self) {
        if self.state.load(Ordering::Relaxed) & CACHED == 0 {
            self.state.fetch_or(CACHED, Ordering::Relaxed);
        }
    }

    /// Takes the entry of this dentry, called `name` in `dir`, out of the
    /// lookup cache, if it was ever put there. The caller holds the
    /// directory's `children` lock for writing.
    fn evict(&self, dir: &DirState, name: &[u8]) {
        if self.state.load(Ordering::Relaxed) & CACHED != 0 {
            dcache::evict(dir.id, name_hash(name), name);
        }
    }

    pub(crate) fn clear_dead(&self) {
        self.state.fetch_and(!DEAD, Ordering::SeqCst);
    }

    /// Whether an unlinked file may be linked again (`O_TMPFILE` without `O_EXCL`).
    pub fn is_linkable(&self) -> bool {
        self.state.load(Ordering::Acquire) & LINKABLE != 0
    }

    pub(crate) fn set_linkable(&self) {
        self.state.fetch_or(LINKABLE, Ordering::AcqRel);
    }

    /// Whether something is mounted here.
    #[inline]
    pub fn is_mountpoint(&self) -> bool {
        self.mounts.load(Ordering::SeqCst) != 0
    }

    /// How the children of this directory may be cached (fixed per inode).
    #[inline]
    pub fn coherence(&self) -> Coherence {
        self.dir
            .as_ref()
            .map_or_else(|| self.inode.coherence(), |d| d.coherence)
    }

    pub(crate) fn dir(&self) -> Result<&DirState> {
        self.dir.as_deref().ok_or(Errno::ENOTDIR)
    }

    /// What the cache alone says of `name`: the walk's common step. In an
    /// authoritative directory the lookup cache answers first, writing
    /// nothing shared; else one read lock and one hash probe. A live
    /// directory whose filesystem needs no revalidation answers from the
    /// cache; an authoritative one also answers a miss (a name too long for
    /// any entry is left to the full lookup, which names the error).
    /// `hash` is the name's [`name_hash`] when the caller has it.
    #[inline(always)]
    pub(crate) fn cached_lookup(&self, name: &[u8], hash: Option<u64>) -> CachedLookup {
        if self.cache_id != 0 && !self.is_dead() {
            let hash = hash.unwrap_or_else(|| name_hash(name));
            if let Some(e) = dcache::find(self.cache_id, hash, name) {
                return CachedLookup::Lent(e);
            }
            if let Some(ds) = self.dir.as_deref() {
                return ds.map_lookup(hash, name);
            }
        }
        match self.dir.as_deref() {
            Some(ds) => self.cached_lookup_slow(ds, name),
            None => CachedLookup::Ask,
        }
    }

    /// [`Dentry::cached_lookup`] in a directory that is not authoritative or is dead.
    #[inline(never)]
    fn cached_lookup_slow(&self, ds: &DirState, name: &[u8]) -> CachedLookup {
        if ds.coherence == Coherence::Revalidate || self.is_dead() {
            return CachedLookup::Ask;
        }
        if let Some(c) = ds.children.read().by_name.get(&NameQuery(name)) {
            return CachedLookup::Hit(c.clone());
        }
        if ds.coherence == Coherence::Authoritative && name.len() <= NAME_MAX {
            CachedLookup::Absent
        } else {
            CachedLookup::Ask
        }
    }

    /// The cached child called `name`.
    #[inline]
    pub(crate) fn cached_child(&self, name: &[u8]) -> Option<Arc<Dentry>> {
        self.dir
            .as_ref()?
            .children
            .read()
            .by_name
            .get(&NameQuery(name))
            .cloned()
    }

    /// Inserts a child under `name` (the caller holds `op`). Returns it.
    pub(crate) fn insert_child(
        self: &Arc<Self>,
        name: &[u8],
        inode: Arc<dyn Inode>,
    ) -> Result<Arc<Dentry>> {
        let dir = self.dir()?;
        let name = Name::new(name);
        let mut ch = dir.children.write();
        let slot = ch.new_slot(None);
        let child = Dentry::new_at(
            inode,
            Link {
                parent: Some(self.clone()),
                name: name.clone(),
            },
            slot,
        );
        enter(dir, &mut ch, &child, name, slot.pos);
        Ok(child)
    }

    /// [`Dentry::insert_child`] at a list position reserved earlier.
    pub(crate) fn insert_child_at(
        self: &Arc<Self>,
        name: &[u8],
        inode: Arc<dyn Inode>,
        pos: ReservedPos,
    ) -> Result<Arc<Dentry>> {
        let dir = self.dir()?;
        let child = Dentry::new(inode, Some(self.clone()), Name::default());
        attach_reserved(dir, &child, Name::new(name), pos);
        Ok(child)
    }

    /// Removes the child `name` from the map and returns it (the caller holds `op`).
    pub(crate) fn remove_child(&self, name: &[u8]) -> Option<Arc<Dentry>> {
        let dir = self.dir.as_ref()?;
        let mut ch = dir.children.write();
        let d = ch.by_name.remove(&NameQuery(name))?;
        d.evict(dir, name);
        ch.unlist(d.pos.load(Ordering::Relaxed));
        Some(d)
    }

    /// Whether the directory has no cached children (authoritative: is empty).
    pub(crate) fn has_no_children(&self) -> bool {
        self.dir
            .as_ref()
            .is_none_or(|d| d.children.read().by_name.is_empty())
    }

    /// The entries a tmpfs directory reads from offset `offset` (Linux's
    /// `offset_iterate_dir`): from the entry with the greatest offset not
    /// above it (the newest entry when there is none, or at offset 2), then
    /// on down the list, newest first.
    pub(crate) fn children_from(&self, offset: u64, out: &mut crate::file::Dirents) {
        let Some(dir) = self.dir.as_ref() else {
            return;
        };
        let ch = dir.children.read();
        let start = if offset == 2 {
            None
        } else {
            ch.order
                .iter()
                .filter_map(|(pos, d)| {
                    let o = d.offset.load(Ordering::Relaxed);
                    (u64::from(o) <= offset).then_some((o, pos))
                })
                .max()
                .map(|(_, pos)| pos)
        };
        out.reserve(ch.by_name.len());
        for d in ch.order.down_from(start.unwrap_or(u32::MAX)) {
            out.push(&d.link.read().name, d.ftype.dirent_type());
        }
    }

    /// The offset of this entry in its directory.
    pub(crate) fn dir_offset(&self) -> u32 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Number of cached children.
    pub fn cached_children(&self) -> usize {
        self.dir
            .as_ref()
            .map_or(0, |d| d.children.read().by_name.len())
    }

    /// Drops cached children that nothing but this directory references, in
    /// a directory of a non-authoritative filesystem. Returns how many were freed.
    pub fn prune_unused(&self) -> usize {
        let Some(dir) = self.dir.as_ref() else {
            return 0;
        };
        if self.inode.coherence() == Coherence::Authoritative {
            return 0;
        }
        let mut ch = dir.children.write();
        // Held by by_name and order: two references means nobody else has it.
        let victims: Vec<Name> = ch
            .by_name
            .iter()
            .filter(|(_, d)| {
                Arc::strong_count(d) == 2 && d.cached_children() == 0 && !d.is_mountpoint()
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in &victims {
            if let Some(d) = ch.by_name.remove(&NameQuery(n)) {
                d.evict(dir, n);
                ch.unlist(d.pos.load(Ordering::Relaxed));
            }
        }
        victims.len()
    }

    /// [`Dentry::prune_unused`] over the whole cached tree below this
    /// directory, deepest directories first so that a directory emptied of
    /// unused children is freed with them. Returns how many were freed.
    pub fn prune_unused_tree(self: &Arc<Self>) -> usize {
        // Breadth-first, so every directory comes after its ancestors; each
        // is pruned and let go before its parent, whose count it would raise.
        let mut dirs = vec![self.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Some(ds) = dirs[i].dir.as_ref() {
                let ch = ds.children.read();
                let sub: Vec<_> = ch
                    .by_name
                    .values()
                    .filter(|c| c.is_dir())
                    .cloned()
                    .collect();
                drop(ch);
                dirs.extend(sub);
            }
            i += 1;
        }
        let mut freed = 0;
        while let Some(d) = dirs.pop() {
            freed += d.prune_unused();
        }
        freed
    }

    /// Whether `self` is `anc` or below it, following parents.
    pub fn is_descendant_of(self: &Arc<Self>, anc: &Arc<Dentry>) -> bool {
        let mut cur = self.clone();
        loop {
            if Arc::ptr_eq(&cur, anc) {
                return true;
            }
            match cur.parent() {
                Some(p) => cur = p,
                None => return false,
            }
        }
    }
}

/// Puts `child` into `dir` under `name` at the head of the list, with the
/// directory offset `offset` (a rename keeps one) or a new one.
pub(crate) fn attach(dir: &DirState, child: &Arc<Dentry>, name: &[u8], offset: Option<u32>) {
    attach_name(dir, child, name.into(), offset);
}

/// Reserves a list place for an entry made later that Linux lists before
/// the moved one (the whiteout of a rename); its offset comes when it is
/// filled, after the moved entry's.
pub(crate) fn reserve_slot(dir: &DirState) -> ReservedPos {
    let mut ch = dir.children.write();
    ch.reserved += 1;
    ReservedPos(ch.new_pos())
}

/// Gives back a slot from [`reserve_slot`] that will not be filled.
pub(crate) fn release_slot(dir: &DirState) {
    let mut ch = dir.children.write();
    ch.reserved = ch.reserved.saturating_sub(1);
}

/// [`attach`] with a name already shared.
fn attach_name(dir: &DirState, child: &Arc<Dentry>, shared: Name, offset: Option<u32>) {
    let mut ch = dir.children.write();
    let slot = ch.new_slot(offset);
    place(dir, &mut ch, child, shared, slot);
}

fn attach_reserved(dir: &DirState, child: &Arc<Dentry>, shared: Name, pos: ReservedPos) {
    let mut ch = dir.children.write();
    ch.reserved = ch.reserved.saturating_sub(1);
    // The list place was kept; the offset is taken now, after the moved
    // entry's (Linux 6.18's shmem_rename2 renames, then makes the whiteout).
    let slot = Slot {
        pos: pos.0,
        offset: ch.new_offset(),
    };
    place(dir, &mut ch, child, shared, slot);
}

fn place(dir: &DirState, ch: &mut Children, child: &Arc<Dentry>, shared: Name, slot: Slot) {
    child.pos.store(slot.pos, Ordering::Relaxed);
    child.offset.store(slot.offset, Ordering::Relaxed);
    child.link.write().name = shared.clone();
    enter(dir, ch, child, shared, slot.pos);
}

/// Enters `child`, already named `name` and placed at `pos`, in the list
/// and the map of `dir`.
fn enter(dir: &DirState, ch: &mut Children, child: &Arc<Dentry>, name: Name, pos: u32) {
    ch.order.insert(pos, child.clone());
    if let Some(old) = ch.by_name.insert(name, child.clone()) {
        old.evict(dir, &child.link.read().name);
    }
}

static NEXT_FS_ID: AtomicU64 = AtomicU64::new(1);

/// A filesystem instance (a superblock): its operations and its dentry tree.
pub struct Filesystem {
    id: u64,
    fstype: String,
    type_opts: FsTypeOptions,
    dev: DevId,
    ops: Arc<dyn FilesystemOps>,
    root: Arc<Dentry>,
    /// Serialises renames across directories, so that the ancestry check
    /// and the move are atomic (Linux's `s_vfs_rename_mutex`).
    pub(crate) rename_lock: Mutex<()>,
    /// The superblock is read-only (`MS_RDONLY` on a new mount or a
    /// non-bind remount), whatever its mounts say.
    readonly: std::sync::atomic::AtomicBool,
}

impl Filesystem {
    /// Wraps a filesystem's operations and root inode.
    pub fn new(
        fstype: &str,
        type_opts: FsTypeOptions,
        dev: DevId,
        ops: Arc<dyn FilesystemOps>,
        root: Arc<dyn Inode>,
    ) -> Arc<Filesystem> {
        let root = Dentry::new(root, None, Name::new(b""));
        Arc::new(Filesystem {
            id: NEXT_FS_ID.fetch_add(1, Ordering::Relaxed),
            fstype: fstype.to_string(),
            type_opts,
            dev,
            ops,
            root,
            rename_lock: Mutex::new(()),
            readonly: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The type name.
    pub fn fstype(&self) -> &str {
        &self.fstype
    }

    /// The type's options.
    pub fn type_options(&self) -> FsTypeOptions {
        self.type_opts
    }

    /// The device number of the instance (anonymous for memory filesystems).
    pub fn dev(&self) -> DevId {
        self.dev
    }

    /// The operations.
    pub fn ops(&self) -> &Arc<dyn FilesystemOps> {
        &self.ops
    }

    /// The root dentry.
    pub fn root(&self) -> &Arc<Dentry> {
        &self.root
    }

    /// Whether the filesystem instance is read-only.
    pub fn is_readonly(&self) -> bool {
        self.readonly.load(Ordering::Acquire)
    }

    /// Makes the instance read-only or writable.
    pub fn set_readonly(&self, ro: bool) {
        self.readonly.store(ro, Ordering::Release);
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        // Break the parent ⇄ child cycles of the tree, iteratively so a deep
        // tree cannot overflow the stack. Nothing else can reach the tree
        // now, so these locks are uncontended.
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            if let Some(dir) = d.dir.as_ref() {
                let mut ch = dir.children.write();
                let ch = std::mem::take(&mut *ch);
                for (name, c) in &ch.by_name {
                    c.evict(dir, name);
                }
                stack.extend(ch.by_name.into_values());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::abi::*;
    use crate::testfs;

    /// The list order stays within twice the entries (plus the packing
    /// slack) whatever the pattern of changes: renames at the head, removals
    /// in the middle, a long-lived first entry.
    #[test]
    fn list_order_stays_dense() {
        let p = testfs::process();
        p.mkdirat(AT_FDCWD, b"/d", 0o755).unwrap();
        p.chdir(b"/d").unwrap();
        let d = p.cwd().dentry;
        let bound = |live: usize| 2 * live + 33;
        let check = |want_live: usize| {
            let ch = d.dir.as_ref().unwrap().children.read();
            assert_eq!(ch.order.len(), want_live);
            assert_eq!(ch.by_name.len(), want_live);
            assert!(
                ch.order.slots.len() <= bound(want_live),
                "{} slots for {} entries",
                ch.order.slots.len(),
                want_live
            );
        };
        p.mkdirat(AT_FDCWD, b"keep", 0o755).unwrap();
        for i in 0..5000 {
            let (a, b): (&[u8], &[u8]) = if i % 2 == 0 {
                (b"t", b"u")
            } else {
                (b"u", b"t")
            };
            if i == 0 {
                p.mkdirat(AT_FDCWD, a, 0o755).unwrap();
            }
            p.renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::empty())
                .unwrap();
            check(2);
        }
        for round in 0..50 {
            for i in 0..40 {
                p.mkdirat(AT_FDCWD, format!("x{round}-{i}").as_bytes(), 0o755)
                    .unwrap();
            }
            // Every other one goes, leaving holes between those that stay.
            for i in (0..40).step_by(2) {
                p.unlinkat(
                    AT_FDCWD,
                    format!("x{round}-{i}").as_bytes(),
                    AtFlags::AT_REMOVEDIR,
                )
                .unwrap();
            }
            check(2 + 20 * (round + 1));
        }
        // Newest first, oldest ("keep") last, whatever was packed.
        let ch = d.dir.as_ref().unwrap().children.read();
        let names: Vec<Vec<u8>> = ch.order.iter().map(|(_, c)| c.name().to_vec()).collect();
        assert_eq!(names.first().map(Vec::as_slice), Some(&b"keep"[..]));
        assert_eq!(names.last().map(Vec::as_slice), Some(&b"x49-39"[..]));
        let positions: Vec<u32> = ch.order.iter().map(|(pos, _)| pos).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }
}
