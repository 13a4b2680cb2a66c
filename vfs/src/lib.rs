//! The core of Tessera: a Linux-compatible virtual filesystem inside a process.
//!
//! # The model
//!
//! A [`Filesystem`](dentry::Filesystem) instance owns a tree of
//! [`Dentry`](dentry::Dentry) values, each naming an [`Inode`](inode::Inode)
//! that the filesystem implements. A [`Mount`](mount::Mount) shows a
//! filesystem's tree from a root dentry, attached at a dentry of a parent
//! mount in a [`MountNamespace`](mount::MountNamespace). A location is a
//! [`VirtualDentry`](mount::VirtualDentry): (mount, dentry). The
//! [`Process`](process::Process) facade holds a root, a working directory,
//! credentials, a umask and a descriptor table, and has one method per
//! system call.
//!
//! Paths are resolved only by [`walk`]; filesystems implement per-directory
//! operations. Credentials are always arguments.
//!
//! # Reference rules
//!
//! Everything is an `Arc`. A dentry holds its parent; a directory holds its
//! named children (see [`dentry`]). A mount holds its filesystem, its root
//! and its parent; a namespace holds its connected mounts (see [`mount`]).
//! An open file holds its (mount, dentry). Dropping the last reference to a
//! filesystem tears its tree down.
//!
//! # Lock order
//!
//! Taken top to bottom, never upwards:
//!
//! 1. `Process` state (root, cwd, credentials: read without a lock, changed
//!    under `Process::update_lock`) and descriptor table: copied out and
//!    released before any VFS call.
//! 2. `Vfs::namespace_lock` (mount topology changes).
//! 3. `Filesystem::rename_lock`.
//! 4. `DirState::op` of directories, two at once in address order.
//! 5. `MountNamespace::mounts`, then `Vfs::mount_table`, then `Mount::link`,
//!    then `Mount::prop`.
//! 6. `DirState::children`, then `Dentry::link`. The walk's lookup cache
//!    (`dcache`) has no lock: it is filled under `children` held for
//!    reading and emptied of a name under it held for writing.
//! 7. Locks inside a filesystem's inodes and open files.
//!
//! `OpenFile::pos` is taken alone. No lock of this crate is held across a
//! call into a device; a filesystem's directory operation runs under that
//! directory's `op` lock only (as under Linux's `i_rwsem`).

pub mod abi;
pub mod acl;
pub mod cred;
mod dcache;
pub mod dentry;
pub mod device;
pub mod file;
pub mod fstype;
pub mod inode;
pub mod invariants;
pub mod mgtime;
pub mod mount;
pub mod pathops;
pub mod perm;
pub mod pipe;
pub mod process;
pub mod walk;

#[cfg(test)]
mod testfs;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use abi::{Errno, Result};
use dentry::{Dentry, NameHasher};
use mount::Mount;

/// A source of time for file timestamps; the embedder may set its own.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> abi::Timespec;
}

/// The host's real-time clock, coarse-grained on Linux (one value per tick,
/// what Linux stamps files with; much cheaper to read).
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now(&self) -> abi::Timespec {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        abi::Timespec {
            sec: t.tv_sec,
            nsec: t.tv_nsec as u32,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> abi::Timespec {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        abi::Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

/// The default limit on mounts per namespace (Linux's `fs.mount-max`).
pub const DEFAULT_MAX_MOUNTS: usize = 100_000;

type MountKey = (u64, usize);

/// The virtual filesystem: filesystem types, devices, and the mount table
/// shared by every namespace.
pub struct Vfs {
    /// Registered filesystem types.
    pub fstypes: fstype::FsTypeRegistry,
    /// Registered devices.
    pub devices: device::DeviceRegistry,
    pub(crate) namespace_lock: Mutex<()>,
    pub(crate) mount_table: RwLock<HashMap<MountKey, Arc<Mount>, BuildHasherDefault<NameHasher>>>,
    clock: RwLock<Arc<dyn Clock>>,
    mg_clock: Arc<mgtime::MgClock>,
    next_anon_minor: AtomicU32,
    pub(crate) next_group_id: AtomicU32,
    max_mounts: AtomicU32,
    protected_hardlinks: std::sync::atomic::AtomicBool,
}

impl Vfs {
    /// A VFS with no filesystem types or devices registered.
    pub fn new() -> Arc<Vfs> {
        Arc::new(Vfs {
            fstypes: Default::default(),
            devices: Default::default(),
            namespace_lock: Mutex::new(()),
            mount_table: RwLock::new(HashMap::default()),
            clock: RwLock::new(Arc::new(SystemClock)),
            mg_clock: Default::default(),
            next_anon_minor: AtomicU32::new(16),
            next_group_id: AtomicU32::new(1),
            max_mounts: AtomicU32::new(DEFAULT_MAX_MOUNTS as u32),
            protected_hardlinks: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Replaces the clock.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write() = clock;
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.read().clone()
    }

    /// The multigrain order of changes that every filesystem of this VFS
    /// shares (see [`mgtime`]).
    pub fn mg_clock(&self) -> &Arc<mgtime::MgClock> {
        &self.mg_clock
    }

    /// The current time by the clock.
    pub fn now(&self) -> abi::Timespec {
        self.clock.read().now()
    }

    /// Sets `fs.protected_hardlinks`: when on (the default, as systemd and
    /// Debian set it), only a file's owner may hard-link a file that the
    /// caller could not read and write, or that is set-id or not regular.
    pub fn set_protected_hardlinks(&self, on: bool) {
        self.protected_hardlinks.store(on, Ordering::Relaxed);
    }

    /// Whether `fs.protected_hardlinks` is on.
    pub fn protected_hardlinks(&self) -> bool {
        self.protected_hardlinks.load(Ordering::Relaxed)
    }

    /// Sets the per-namespace mount limit for namespaces made from now on.
    pub fn set_max_mounts(&self, n: usize) {
        self.max_mounts
            .store(n.min(u32::MAX as usize) as u32, Ordering::Relaxed);
    }

    pub(crate) fn max_mounts(&self) -> usize {
        self.max_mounts.load(Ordering::Relaxed) as usize
    }

    /// A fresh anonymous device number (major 0) for a memory filesystem.
    pub fn anon_dev(&self) -> abi::DevId {
        abi::DevId::new(0, self.next_anon_minor.fetch_add(1, Ordering::Relaxed))
    }

    /// The mount attached at `dentry` in `parent`, if any.
    #[inline]
    pub fn mount_at(&self, parent: &Arc<Mount>, dentry: &Arc<Dentry>) -> Option<Arc<Mount>> {
        self.mount_table
            .read()
            .get(&(parent.id(), Arc::as_ptr(dentry) as usize))
            .cloned()
    }
}
