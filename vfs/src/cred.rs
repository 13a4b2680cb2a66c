//! Credentials: the ids and capabilities every operation is checked against.
//!
//! Credentials are always arguments: no operation reads an ambient "current
//! task". The facade ([`crate::process::Process`]) owns one set and passes it
//! down.

use bitflags::bitflags;
use std::sync::Arc;

bitflags! {
    /// Linux capabilities that the filesystem layer checks (bit = capability number).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Caps: u64 {
        /// Change file owners and groups.
        const CHOWN = 1 << 0;
        /// Bypass read, write and execute checks.
        const DAC_OVERRIDE = 1 << 1;
        /// Bypass read checks, and search checks on directories.
        const DAC_READ_SEARCH = 1 << 2;
        /// Act as the owner of any file.
        const FOWNER = 1 << 3;
        /// Keep set-id bits on change; set set-gid for any group.
        const FSETID = 1 << 4;
        /// Send signals (not used by the filesystem).
        const KILL = 1 << 5;
        /// Set the group id.
        const SETGID = 1 << 6;
        /// Set the user id.
        const SETUID = 1 << 7;
        /// Modify immutable and append-only attributes.
        const LINUX_IMMUTABLE = 1 << 9;
        /// Mount, pivot_root, `trusted.*` xattrs and other administration.
        const SYS_ADMIN = 1 << 21;
        /// chroot.
        const SYS_CHROOT = 1 << 18;
        /// Create device nodes.
        const MKNOD = 1 << 27;
        /// Set file capabilities (`security.capability`).
        const SETFCAP = 1 << 31;
        /// Override MAC (not used).
        const MAC_OVERRIDE = 1 << 32;
        /// Every capability Linux defines (0..=40).
        const ALL = (1 << 41) - 1;
    }
}

impl Caps {
    /// The capabilities Linux drops while the fsuid is not 0 (see `setfsuid(2)`).
    pub const FS_MASK: Caps = Caps::CHOWN
        .union(Caps::DAC_OVERRIDE)
        .union(Caps::DAC_READ_SEARCH)
        .union(Caps::FOWNER)
        .union(Caps::FSETID)
        .union(Caps::LINUX_IMMUTABLE)
        .union(Caps::MKNOD)
        .union(Caps::MAC_OVERRIDE);
}

/// Supplementary groups, shared: every open file keeps its opener's
/// credentials, and copying a list per `open` showed in its profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Groups(Option<Arc<[u32]>>);

impl Groups {
    /// The groups `ids`.
    pub fn new(ids: &[u32]) -> Groups {
        Groups((!ids.is_empty()).then(|| Arc::from(ids)))
    }

    /// The groups as a list.
    pub fn as_slice(&self) -> &[u32] {
        self.0.as_deref().unwrap_or_default()
    }

    /// Whether `gid` is one of them.
    pub fn contains(&self, gid: u32) -> bool {
        self.as_slice().contains(&gid)
    }
}

/// The credentials of a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Effective group id.
    pub egid: u32,
    /// Filesystem user id: what owner checks and new files use.
    pub fsuid: u32,
    /// Filesystem group id.
    pub fsgid: u32,
    /// Supplementary groups.
    pub groups: Groups,
    /// Effective capabilities.
    pub caps: Caps,
    /// Which set of credentials this is. Linux compares a file's opener
    /// with the caller by identity (`f_cred != current_cred()`), and every
    /// change of credentials makes a new set, even to the same ids.
    serial: u64,
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Credentials {
    /// Root with every capability.
    pub fn root() -> Credentials {
        Credentials {
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            fsuid: 0,
            fsgid: 0,
            groups: Groups::default(),
            caps: Caps::ALL,
            serial: next_serial(),
        }
    }

    /// An unprivileged user with no capabilities.
    pub fn user(uid: u32, gid: u32) -> Credentials {
        Credentials {
            uid,
            gid,
            euid: uid,
            egid: gid,
            fsuid: uid,
            fsgid: gid,
            groups: Groups::default(),
            caps: Caps::empty(),
            serial: next_serial(),
        }
    }

    /// Makes these a new set of credentials (see [`Credentials::is_same_set`]).
    pub fn renew(&mut self) {
        self.serial = next_serial();
    }

    /// Whether `other` is this very set of credentials, not only equal ids.
    pub fn is_same_set(&self, other: &Credentials) -> bool {
        self.serial == other.serial
    }

    /// Whether `cap` is effective.
    #[inline]
    pub fn has(&self, cap: Caps) -> bool {
        self.caps.contains(cap)
    }

    /// Whether the caller is in group `gid` (fsgid or a supplementary group).
    pub fn in_group(&self, gid: u32) -> bool {
        self.fsgid == gid || self.groups.contains(gid)
    }

    /// Sets the fsuid as `setfsuid(2)` does: filesystem capabilities drop when
    /// it moves away from 0 and come back (from the permitted set, here all)
    /// when it returns to 0.
    pub fn set_fsuid(&mut self, fsuid: u32) {
        let was_root = self.fsuid == 0;
        self.fsuid = fsuid;
        if was_root && fsuid != 0 {
            self.caps.remove(Caps::FS_MASK);
        } else if !was_root && fsuid == 0 {
            self.caps.insert(Caps::FS_MASK);
        }
    }

    /// The credentials `faccessat` checks with when `AT_EACCESS` is not given:
    /// the real ids, and no capabilities unless the real uid is 0.
    pub fn for_access(&self) -> Credentials {
        let mut c = self.clone();
        c.fsuid = self.uid;
        c.fsgid = self.gid;
        if self.uid != 0 {
            c.caps = Caps::empty();
        } else {
            c.caps = self.caps.union(Caps::FS_MASK);
        }
        c
    }
}
