//! Linux's multigrain timestamps, kept as an order of events rather than as
//! times, for the one place they change what a system call answers.
//!
//! Linux stamps inodes with a coarse clock (one value per tick) and hands out
//! a fine-grained time only when someone has read an inode's ctime since its
//! last change (`I_CTIME_QUERIED`) and the coarse time would not move it.
//! Such a fine time also raises a global floor under the coarse clock.
//! Whether a symbolic link's access time "needs an update" follows from
//! those values, and a lock-free walk (`RESOLVE_CACHED`) gives up with
//! `EAGAIN` on a link that needs one. So what an `openat2` answers depends on
//! the history of stats and changes before it.
//!
//! Here the coarse clock never ticks (a script runs well within one tick):
//! "now" is the floor, and every fine-grained time is the next number. The
//! real timestamps that `stat` reports are kept apart, by the filesystem.
//! Values are 30-bit and compared with wrap-around, as only recent values
//! are ever compared with each other.

use std::sync::atomic::{AtomicU32, Ordering};

/// The bits of a stamp.
pub const STAMP_MASK: u32 = (1 << 30) - 1;
/// Set in [`MgInode`] when the ctime was read since its last change.
const QUERIED: u32 = 1 << 31;

/// The clock shared by every filesystem of one [`Vfs`](crate::Vfs), like
/// Linux's global floor.
#[derive(Debug, Default)]
pub struct MgClock {
    floor: AtomicU32,
    last: AtomicU32,
}

impl MgClock {
    /// The coarse time: what a change gets when nobody looked.
    #[inline]
    pub fn coarse(&self) -> u32 {
        self.floor.load(Ordering::Acquire)
    }

    /// A fine-grained time that leaves the floor alone (`current_time` of a
    /// queried inode).
    pub fn fine(&self) -> u32 {
        self.last.fetch_add(1, Ordering::AcqRel).wrapping_add(1) & STAMP_MASK
    }

    /// A fine-grained time that raises the floor (`inode_set_ctime_current`
    /// of a queried inode).
    fn fine_floor(&self) -> u32 {
        let v = self.fine();
        self.floor.store(v, Ordering::Release);
        v
    }
}

/// Whether stamp `a` is later than stamp `b`.
#[inline]
pub fn after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b) & STAMP_MASK;
    d != 0 && d < 1 << 29
}

/// An inode's ctime in the multigrain order, with the queried flag: one
/// word per inode.
#[derive(Debug, Default)]
pub struct MgInode(AtomicU32);

impl MgInode {
    /// A new inode stamped now (`simple_inode_init_ts`).
    pub fn new(clock: &MgClock) -> MgInode {
        MgInode(AtomicU32::new(clock.coarse()))
    }

    /// The ctime stamp.
    #[inline]
    pub fn ctime(&self) -> u32 {
        self.0.load(Ordering::Acquire) & STAMP_MASK
    }

    /// `stat` read the ctime: the next change must get a distinct time.
    pub fn query(&self) {
        // Only the first stat after a change writes: repeated stats of one
        // file from several threads then share the line read-only.
        if self.0.load(Ordering::Relaxed) & QUERIED == 0 {
            self.0.fetch_or(QUERIED, Ordering::AcqRel);
        }
    }

    /// `inode_set_ctime_current`: stamps a change and returns its time.
    pub fn set_ctime_current(&self, clock: &MgClock) -> u32 {
        let cur = self.0.load(Ordering::Acquire);
        let mut now = clock.coarse();
        if cur & QUERIED != 0 && !after(now, cur & STAMP_MASK) {
            now = clock.fine_floor();
        }
        self.set_ctime_to(now);
        now
    }

    /// `inode_set_ctime_to_ts`: takes another inode's change time.
    pub fn set_ctime_to(&self, t: u32) {
        self.0.store(t & STAMP_MASK, Ordering::Release);
    }

    /// `current_time`: the time a change made now would read, fine-grained
    /// when the ctime was queried and the coarse time equals it.
    #[inline]
    pub fn current_time(&self, clock: &MgClock) -> u32 {
        let cur = self.0.load(Ordering::Acquire);
        let now = clock.coarse();
        if cur & QUERIED != 0 && now == cur & STAMP_MASK {
            clock.fine()
        } else {
            now
        }
    }
}

/// The access time of a symbolic link in the multigrain order (its mtime
/// never changes after creation).
#[derive(Debug, Default)]
pub struct MgLink {
    atime: AtomicU32,
    mtime: u32,
}

impl MgLink {
    /// A link created now, with the ctime `created` got.
    pub fn new(created: u32) -> MgLink {
        MgLink {
            atime: AtomicU32::new(created),
            mtime: created,
        }
    }

    /// `atime_needs_update` of a link: relative atime (`relatime`) updates
    /// only an atime not later than the mtime or ctime; then the current
    /// time must differ from the atime.
    #[inline]
    pub fn atime_needs_update(&self, inode: &MgInode, clock: &MgClock, relatime: bool) -> bool {
        let atime = self.atime.load(Ordering::Acquire);
        if relatime && after(atime, self.mtime) && after(atime, inode.ctime()) {
            return false;
        }
        inode.current_time(clock) != atime
    }

    /// `touch_atime`, when [`MgLink::atime_needs_update`] said so.
    pub fn touch(&self, inode: &MgInode, clock: &MgClock) {
        self.atime
            .store(inode.current_time(clock), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_then_a_change_raises_the_floor() {
        let c = MgClock::default();
        let dir = MgInode::new(&c);
        let t0 = c.coarse();
        // Nobody looked: the change takes the coarse time.
        assert_eq!(dir.set_ctime_current(&c), t0);
        dir.query();
        let t1 = dir.set_ctime_current(&c);
        assert!(after(t1, t0));
        assert_eq!(c.coarse(), t1);
    }

    #[test]
    fn a_new_link_needs_no_update_until_the_floor_moves() {
        let c = MgClock::default();
        let dir = MgInode::new(&c);
        let l = MgInode::new(&c);
        let link = MgLink::new(l.ctime());
        assert!(!link.atime_needs_update(&l, &c, true));
        dir.query();
        dir.set_ctime_current(&c);
        assert!(link.atime_needs_update(&l, &c, true));
        link.touch(&l, &c);
        assert!(!link.atime_needs_update(&l, &c, true));
    }

    #[test]
    fn a_queried_link_reads_a_fine_time() {
        let c = MgClock::default();
        let l = MgInode::new(&c);
        let link = MgLink::new(l.ctime());
        l.query();
        assert!(link.atime_needs_update(&l, &c, true));
        link.touch(&l, &c);
        // The atime is now later than mtime and ctime: relatime skips it.
        assert!(!link.atime_needs_update(&l, &c, true));
    }

    #[test]
    fn wrap_around_order() {
        assert!(after(1, STAMP_MASK));
        assert!(!after(STAMP_MASK, 1));
        assert!(!after(5, 5));
    }
}
