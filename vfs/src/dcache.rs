//! The walk's lock-free lookup cache: which child a name stands for in an
//! authoritative directory, read without writing anything that another
//! thread reads.
//!
//! A directory's map of names sits under a lock whose word every lookup
//! writes, and a found child is returned with its reference count raised:
//! two threads walking the same path write the same cache lines at every
//! step and take turns at them. This table is read instead. Each slot holds
//! an immutable entry (directory id, name, child) behind an [`ArcSwap`],
//! whose `load` lends the entry by writing only to the reading thread's own
//! debt list, so a walk that hits the cache at every step shares every line
//! it touches read-only, as Linux's RCU walk does.
//!
//! # Exactness
//!
//! An entry is put in only while its directory's `children` lock is held
//! for reading and the child is in the map ([`install`]); every removal or
//! replacement of a name in a map happens under that lock held for writing
//! and takes the name's entry out ([`evict`]). So an entry is in the table
//! only while its name names its child, and a hit answers what the map
//! would. Taking the entry out at once also keeps release prompt: the
//! table never holds a removed dentry (and through it an inode, whose
//! space a tmpfs would count as used) past the call that removed it, except
//! for the length of a walk that borrowed it, as a walk holding a reference
//! would.
//!
//! Only directories whose filesystem is authoritative (tmpfs) use the
//! table: the others must ask their filesystem or revalidate.

use std::sync::{Arc, LazyLock};

use arc_swap::{ArcSwap, Guard};

use crate::abi::*;
use crate::dentry::{names_equal, Dentry, Name};
use crate::inode::Inode;
use crate::perm::Owner;

/// One cached lookup.
pub(crate) struct Entry {
    /// The directory's id ([`crate::dentry::DirState`]); 0 in no entry.
    dir: u64,
    name: Name,
    child: Arc<Dentry>,
}

impl Entry {
    /// The child.
    #[inline]
    pub(crate) fn child(&self) -> &Arc<Dentry> {
        &self.child
    }
}

/// An entry lent by the table to a walk.
pub(crate) type Lent = Guard<Arc<Entry>>;

/// Slots in the table: a power of two. Collisions only cost a miss (the
/// lookup goes to the directory's map and puts its answer in the slot).
const SLOTS: usize = 1 << 13;

struct Table {
    /// A fixed length, so that a slot's index needs no bounds check.
    slots: Box<[ArcSwap<Entry>; SLOTS]>,
    /// What an empty slot holds: an entry no directory matches (ids start
    /// at 1), so a lookup is one comparison whether a slot is used or not.
    empty: Arc<Entry>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let empty = Arc::new(Entry {
        dir: 0,
        name: Name::default(),
        child: Dentry::new(Arc::new(Nothing), None, Name::default()),
    });
    Table {
        slots: Box::new(std::array::from_fn(|_| ArcSwap::new(empty.clone()))),
        empty,
    }
});

/// The inode of the empty entry's dentry, which no walk reaches.
struct Nothing;

impl Inode for Nothing {
    fn file_type(&self) -> FileType {
        FileType::Regular
    }
    fn owner(&self) -> Owner {
        Owner {
            mode: 0,
            uid: 0,
            gid: 0,
        }
    }
    fn stat(&self) -> Statx {
        Statx::default()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The slot of `name` (hashed as [`crate::dentry::name_hash`]) in directory `dir`.
#[inline(always)]
fn slot(dir: u64, hash: u64) -> &'static ArcSwap<Entry> {
    let h = (hash ^ dir.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    &TABLE.slots[(h >> (64 - SLOTS.trailing_zeros())) as usize]
}

/// The cached child `name` of directory `dir`, lent without a reference count.
#[inline(always)]
pub(crate) fn find(dir: u64, hash: u64, name: &[u8]) -> Option<Lent> {
    let e = slot(dir, hash).load();
    (e.dir == dir && names_equal(&e.name, name)).then_some(e)
}

/// Caches `child` as `name` in directory `dir`. The caller holds the
/// directory's `children` lock (for reading at least) and found the child
/// in its map under that lock.
pub(crate) fn install(dir: u64, hash: u64, name: &Name, child: &Arc<Dentry>) {
    slot(dir, hash).store(Arc::new(Entry {
        dir,
        name: name.clone(),
        child: child.clone(),
    }));
}

/// Takes the entry for `name` in directory `dir` out of the table, if it
/// is there. The caller holds the directory's `children` lock for writing
/// and is removing or replacing the name.
pub(crate) fn evict(dir: u64, hash: u64, name: &[u8]) {
    let s = slot(dir, hash);
    let cur = s.load();
    if cur.dir == dir && names_equal(&cur.name, name) {
        // Only another directory's entry can replace it meanwhile (this
        // directory's installs wait for the lock), which evicts it as well.
        s.compare_and_swap(&cur, TABLE.empty.clone());
    }
}

/// Every entry in the table: (directory id, name, child). For the
/// invariant checks, which run while nothing changes the directories they
/// look at.
pub(crate) fn entries() -> Vec<(u64, Name, Arc<Dentry>)> {
    TABLE
        .slots
        .iter()
        .map(|s| s.load())
        .filter(|e| e.dir != 0)
        .map(|e| (e.dir, e.name.clone(), e.child.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dentry::name_hash;

    fn leaf() -> Arc<Dentry> {
        Dentry::new(Arc::new(Nothing), None, Name::default())
    }

    /// A hit needs the same directory and the same name; eviction leaves
    /// another directory's entry alone and drops the evicted child at once.
    #[test]
    fn find_install_evict() {
        let (a, b) = (leaf(), leaf());
        let h = name_hash(b"x");
        install(1_000_001, h, &Name::new(b"x"), &a);
        assert!(Arc::ptr_eq(
            find(1_000_001, h, b"x").expect("cached").child(),
            &a
        ));
        assert!(find(1_000_002, h, b"x").is_none());
        assert!(find(1_000_001, name_hash(b"y"), b"y").is_none());
        assert_eq!(Arc::strong_count(&a), 2);
        // Evicting another directory's name leaves the entry.
        evict(1_000_002, h, b"x");
        assert!(find(1_000_001, h, b"x").is_some());
        evict(1_000_001, h, b"x");
        assert!(find(1_000_001, h, b"x").is_none());
        assert_eq!(Arc::strong_count(&a), 1, "the table let the child go");
        // A lent entry keeps its child while the walk holds it.
        install(1_000_001, h, &Name::new(b"x"), &b);
        let lent = find(1_000_001, h, b"x").expect("cached");
        evict(1_000_001, h, b"x");
        assert_eq!(Arc::strong_count(&b), 2);
        drop(lent);
        assert_eq!(Arc::strong_count(&b), 1);
    }
}
