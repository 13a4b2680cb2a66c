//! Mounts and mount namespaces.
//!
//! # Reference rules
//!
//! A connected mount is held by its namespace's list and by the global mount
//! table. A mount holds its filesystem, its root dentry, and (in `link`) its
//! parent mount and the dentry it is mounted on; a parent does not hold its
//! children, so no cycle forms. A mount that is unmounted is dropped from
//! the list and the table; open files and working directories inside it keep
//! it (and, through its parent link, the detached tree above it) alive until
//! they are gone.
//!
//! # Locking
//!
//! `Vfs::namespace_lock` (Linux's `namespace_sem`) serialises every change of
//! the mount topology: connecting, disconnecting, propagation state. Under
//! it, in order: `MountNamespace::mounts` → `Vfs::mount_table` (write) →
//! `Mount::link` (write) → `Mount::prop`. Path walks take only
//! `Vfs::mount_table` and `Mount::link` for reading, and only when they
//! cross a mount point (a dentry whose `mounts` count is not zero) or climb
//! out of a mount root.

pub mod info;
pub mod ops;
pub mod propagation;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bitflags::bitflags;
use parking_lot::{Mutex, RwLock};

use crate::abi::*;
use crate::dentry::{Dentry, Filesystem};

bitflags! {
    /// Per-mount flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct MntFlags: u32 {
        /// Read-only.
        const RDONLY = 1;
        /// Set-id bits are ignored.
        const NOSUID = 2;
        /// Device files cannot be opened.
        const NODEV = 4;
        /// Programs cannot be executed.
        const NOEXEC = 8;
        /// Access times are not updated.
        const NOATIME = 16;
        /// Directory access times are not updated.
        const NODIRATIME = 32;
        /// Access times are updated relative to modification times.
        const RELATIME = 64;
        /// Symbolic links are not followed.
        const NOSYMFOLLOW = 128;
    }
}

impl MntFlags {
    /// The per-mount flags asked for by `mount(2)` flags (relatime is the default).
    pub fn from_mount_flags(f: MountFlags) -> MntFlags {
        let mut m = MntFlags::empty();
        m.set(MntFlags::RDONLY, f.contains(MountFlags::MS_RDONLY));
        m.set(MntFlags::NOSUID, f.contains(MountFlags::MS_NOSUID));
        m.set(MntFlags::NODEV, f.contains(MountFlags::MS_NODEV));
        m.set(MntFlags::NOEXEC, f.contains(MountFlags::MS_NOEXEC));
        m.set(
            MntFlags::NOSYMFOLLOW,
            f.contains(MountFlags::MS_NOSYMFOLLOW),
        );
        m.set(MntFlags::NODIRATIME, f.contains(MountFlags::MS_NODIRATIME));
        if f.contains(MountFlags::MS_NOATIME) {
            m |= MntFlags::NOATIME;
        } else if !f.contains(MountFlags::MS_STRICTATIME) {
            m |= MntFlags::RELATIME;
        }
        m
    }
}

/// Where a mount is attached.
#[derive(Default)]
pub(crate) struct MountLink {
    pub(crate) parent: Option<Arc<Mount>>,
    pub(crate) mountpoint: Option<Arc<Dentry>>,
    pub(crate) ns: Weak<MountNamespace>,
    /// Connected to a namespace's tree (false before connecting and after unmounting).
    pub(crate) connected: bool,
    /// Unmounted (lazily or not): a detached mount cannot be bound or remounted.
    pub(crate) umounted: bool,
}

/// Propagation state of a mount (see `fs/pnode.c`).
#[derive(Default)]
pub(crate) struct Prop {
    /// Peer group id when shared.
    pub(crate) shared: Option<u32>,
    /// The mount this one receives events from (slave).
    pub(crate) master: Option<Weak<Mount>>,
    /// Mounts that receive this one's events.
    pub(crate) slaves: Vec<Weak<Mount>>,
    /// Cannot be the source of a bind.
    pub(crate) unbindable: bool,
}

const RO_BIT: u64 = 1 << 63;

/// A mount: a view of a filesystem's tree from `root`, attached somewhere.
pub struct Mount {
    id: u64,
    source: Box<str>,
    fs: Arc<Filesystem>,
    root: Arc<Dentry>,
    flags: AtomicU32,
    /// Active writers in the low bits; [`RO_BIT`] when read-only. One word,
    /// so "begin a write" and "become read-only" cannot both win.
    writers: AtomicU64,
    pub(crate) link: RwLock<MountLink>,
    pub(crate) prop: Mutex<Prop>,
    expiry_mark: std::sync::atomic::AtomicBool,
    /// The empty mount under a namespace's root (see `Vfs::new_namespace`).
    ns_base: std::sync::atomic::AtomicBool,
}

static NEXT_MOUNT_ID: AtomicU64 = AtomicU64::new(21);

impl Mount {
    pub(crate) fn new(
        fs: Arc<Filesystem>,
        root: Arc<Dentry>,
        flags: MntFlags,
        source: &str,
    ) -> Arc<Mount> {
        let ro = if flags.contains(MntFlags::RDONLY) {
            RO_BIT
        } else {
            0
        };
        Arc::new(Mount {
            id: NEXT_MOUNT_ID.fetch_add(1, Ordering::Relaxed),
            source: source.into(),
            fs,
            root,
            flags: AtomicU32::new((flags - MntFlags::RDONLY).bits()),
            writers: AtomicU64::new(ro),
            link: RwLock::new(MountLink::default()),
            prop: Mutex::new(Prop::default()),
            expiry_mark: std::sync::atomic::AtomicBool::new(false),
            ns_base: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The mount id (as in `mountinfo` and `statx`'s `stx_mnt_id`).
    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The source string given to `mount(2)` (`none`, a device, a directory).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The filesystem.
    #[inline]
    pub fn fs(&self) -> &Arc<Filesystem> {
        &self.fs
    }

    /// The root dentry of this mount.
    #[inline]
    pub fn root(&self) -> &Arc<Dentry> {
        &self.root
    }

    /// The per-mount flags (read-only included).
    pub fn flags(&self) -> MntFlags {
        let mut f = MntFlags::from_bits_truncate(self.flags.load(Ordering::Acquire));
        f.set(MntFlags::RDONLY, self.is_readonly());
        f
    }

    /// Replaces the flags other than read-only.
    pub(crate) fn set_other_flags(&self, f: MntFlags) {
        self.flags
            .store((f - MntFlags::RDONLY).bits(), Ordering::Release);
    }

    /// Whether the mount or its filesystem is read-only (writes give `EROFS`).
    #[inline]
    pub fn is_write_protected(&self) -> bool {
        self.is_readonly() || self.fs.is_readonly()
    }

    /// Whether the mount itself is read-only (the per-mount flag).
    #[inline]
    pub fn is_readonly(&self) -> bool {
        self.writers.load(Ordering::Acquire) & RO_BIT != 0
    }

    /// Starts a write (`mnt_want_write`): `EROFS` on a read-only mount.
    /// Pair with [`Mount::end_write`].
    pub fn begin_write(&self) -> Result<()> {
        let prev = self.writers.fetch_add(1, Ordering::AcqRel);
        if prev & RO_BIT != 0 || self.fs.is_readonly() {
            self.writers.fetch_sub(1, Ordering::AcqRel);
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// Whether writes are in progress or files are open for writing.
    pub fn has_writers(&self) -> bool {
        self.writer_count() != 0
    }

    /// How many writes are in progress plus files open for writing.
    pub fn writer_count(&self) -> u64 {
        self.writers.load(Ordering::Acquire) & !RO_BIT
    }

    /// Ends a write started by [`Mount::begin_write`].
    pub fn end_write(&self) {
        self.writers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Makes the mount read-only or writable. Read-only needs no active
    /// writers (`EBUSY`), as `mnt_make_readonly`.
    pub fn set_readonly(&self, ro: bool) -> Result<()> {
        if !ro {
            self.writers.fetch_and(!RO_BIT, Ordering::AcqRel);
            return Ok(());
        }
        let mut cur = self.writers.load(Ordering::Acquire);
        loop {
            if cur & RO_BIT != 0 {
                return Ok(());
            }
            if cur != 0 {
                return Err(Errno::EBUSY);
            }
            match self
                .writers
                .compare_exchange(cur, RO_BIT, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(c) => cur = c,
            }
        }
    }

    /// The parent mount and the dentry this mount is attached on.
    pub fn parent(&self) -> Option<(Arc<Mount>, Arc<Dentry>)> {
        let l = self.link.read();
        Some((l.parent.clone()?, l.mountpoint.clone()?))
    }

    /// Whether the mount is attached to no namespace (unmounted, or detached
    /// with `MNT_DETACH`): Linux's `!is_mounted`.
    pub fn is_detached(&self) -> bool {
        !self.link.read().connected
    }

    /// The namespace this mount is connected in.
    pub fn namespace(&self) -> Option<Arc<MountNamespace>> {
        self.link.read().ns.upgrade()
    }

    /// Marks the mount for expiry (`MNT_EXPIRE`); returns whether it was already marked.
    pub fn mark_expiry(&self) -> bool {
        self.expiry_mark.swap(true, Ordering::AcqRel)
    }

    /// A use of the mount ends (Linux's `mntput`): the expiry mark is
    /// cleared, so `MNT_EXPIRE` must mark it again. Only a reference a system
    /// call took and dropped counts, not the walk's own crossings.
    pub fn used(&self) {
        if self.expiry_mark.load(Ordering::Relaxed) {
            self.expiry_mark.store(false, Ordering::Release);
        }
    }

    /// Whether this is the hidden empty mount under a namespace's root.
    pub fn is_namespace_base(&self) -> bool {
        self.ns_base.load(Ordering::Relaxed)
    }

    /// Whether the mount was unmounted.
    pub fn is_umounted(&self) -> bool {
        self.link.read().umounted
    }
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mount({}, {})", self.id, self.fs.fstype())
    }
}

/// A (mount, dentry) pair: a location in the mount tree. Holding one keeps
/// both alive.
#[derive(Clone)]
pub struct VirtualDentry {
    /// The mount.
    pub mount: Arc<Mount>,
    /// The dentry within the mount's filesystem.
    pub dentry: Arc<Dentry>,
}

impl VirtualDentry {
    /// Makes a pair.
    pub fn new(mount: Arc<Mount>, dentry: Arc<Dentry>) -> VirtualDentry {
        VirtualDentry { mount, dentry }
    }

    /// The root of a mount.
    pub fn root_of(mount: &Arc<Mount>) -> VirtualDentry {
        VirtualDentry {
            mount: mount.clone(),
            dentry: mount.root().clone(),
        }
    }

    /// Whether two locations are the same.
    #[inline]
    pub fn same(&self, other: &VirtualDentry) -> bool {
        Arc::ptr_eq(&self.mount, &other.mount) && Arc::ptr_eq(&self.dentry, &other.dentry)
    }

    /// Whether this is the root of its mount.
    #[inline]
    pub fn is_mount_root(&self) -> bool {
        Arc::ptr_eq(&self.dentry, self.mount.root())
    }
}

impl std::fmt::Debug for VirtualDentry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VirtualDentry({:?}, {:?})",
            self.mount,
            String::from_utf8_lossy(&self.dentry.name())
        )
    }
}

static NEXT_NS_ID: AtomicU64 = AtomicU64::new(1);

/// A mount namespace: a tree of mounts with a root.
pub struct MountNamespace {
    id: u64,
    pub(crate) root: RwLock<Arc<Mount>>,
    /// Every connected mount, in the order `mountinfo` lists them.
    pub(crate) mounts: Mutex<Vec<Arc<Mount>>>,
    /// Most mounts this namespace may hold (`ENOSPC` beyond).
    pub(crate) max_mounts: usize,
}

impl MountNamespace {
    /// The namespace id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The root mount.
    pub fn root(&self) -> Arc<Mount> {
        self.root.read().clone()
    }

    /// The root location.
    pub fn root_vd(&self) -> VirtualDentry {
        VirtualDentry::root_of(&self.root())
    }

    /// How many mounts are connected.
    pub fn mount_count(&self) -> usize {
        self.mounts.lock().len()
    }

    pub(crate) fn new(root: Arc<Mount>, max_mounts: usize) -> Arc<MountNamespace> {
        let ns = Arc::new(MountNamespace {
            id: NEXT_NS_ID.fetch_add(1, Ordering::Relaxed),
            root: RwLock::new(root.clone()),
            mounts: Mutex::new(vec![root.clone()]),
            max_mounts,
        });
        {
            let mut l = root.link.write();
            l.ns = Arc::downgrade(&ns);
            l.connected = true;
        }
        ns
    }
}

#[cfg(test)]
mod tests {
    use crate::abi::*;
    use crate::cred::Credentials;
    use crate::mount::VirtualDentry;
    use crate::testfs::process;

    #[test]
    fn mount_limit_is_enospc() {
        let p = process();
        p.vfs().set_max_mounts(4);
        // A namespace made before the change keeps its limit: make a new one.
        let vfs = p.vfs().clone();
        let root = vfs
            .mount_disconnected(
                &Credentials::root(),
                "testfs",
                b"none",
                MountFlags::empty(),
                b"",
            )
            .unwrap();
        let ns = vfs.new_namespace(root).unwrap();
        let q = crate::process::Process::new(vfs, ns, Credentials::root());
        q.mkdirat(AT_FDCWD, b"/m", 0o755).unwrap();
        let mut results = Vec::new();
        for _ in 0..4 {
            results.push(q.mount(b"none", b"/m", b"testfs", MountFlags::empty(), b""));
        }
        assert!(results.contains(&Err(Errno::ENOSPC)), "{results:?}");
    }

    #[test]
    fn disconnected_mounts_connect_later_and_go_read_only() {
        let p = process();
        let vfs = p.vfs().clone();
        let ns = p.namespace();
        p.mkdirat(AT_FDCWD, b"/later", 0o755).unwrap();
        let m = vfs
            .mount_disconnected(
                &Credentials::root(),
                "testfs",
                b"src",
                MountFlags::empty(),
                b"",
            )
            .unwrap();
        let target = vfs.top_of(&ns.root_vd());
        let ctx = crate::pathops::PathCtx {
            cred: &Credentials::root(),
            root: &target,
            umask: 0,
        };
        let at = vfs.lookup(&ctx, &target, b"/later", true, false).unwrap();
        vfs.connect_mount_at(&ns, &m, &at).unwrap();
        assert!(String::from_utf8_lossy(&p.mountinfo()).contains(" /later "));
        // A writer makes read-only busy; without it the switch works both ways.
        m.begin_write().unwrap();
        assert_eq!(m.set_readonly(true), Err(Errno::EBUSY));
        m.end_write();
        m.set_readonly(true).unwrap();
        assert_eq!(p.mkdirat(AT_FDCWD, b"/later/x", 0o755), Err(Errno::EROFS));
        m.set_readonly(false).unwrap();
        assert_eq!(p.mkdirat(AT_FDCWD, b"/later/x", 0o755), Ok(()));
        // Connecting a mount on its own root is refused.
        let own = VirtualDentry::root_of(&m);
        assert_eq!(vfs.connect_mount_at(&ns, &m, &own), Err(Errno::EBUSY));
    }
}
