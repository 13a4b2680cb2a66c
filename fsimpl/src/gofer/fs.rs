//! The `9p` filesystem type: Tessera's VFS core on a 9P2000.L server.
//!
//! Every inode and file operation the core offers becomes 9P calls on the
//! [`Client`]: lookup is Twalk + Tgetattr; create is Tmknod (Tlcreate where a
//! server refuses regular files by mknod), Tmkdir or Tsymlink; link is Tlink;
//! unlink and rmdir are Tunlinkat (the client falls back to Tremove);
//! rename is Trenameat (fallback Trename); readlink, setattr (Tsetattr),
//! xattrs (Txattrwalk / Txattrcreate), readdir (Treaddir with the server's
//! offsets), fsync and statfs map one to one. Reads and writes are split at
//! iounit/msize by the client.
//!
//! # Mount options
//!
//! `trans=fd,rfdno=N,wfdno=N` (the fds are taken over by the instance),
//! `trans=unix` with the socket path as source, `trans=tcp[,port=N]` with the
//! host as source (tests); `aname=`, `uname=`, `msize=`,
//! `cache=fscache|remote_revalidating` ([`Coherence::Cached`] or
//! [`Coherence::Revalidate`]), `dfltuid=` / `dfltgid=` (owners shown for
//! files the server reports with no owner, `-1`), `dcache=N` (bound on the
//! cached inodes that no dentry, file or cwd uses; see
//! [`GoferFs::attach_root`]). Any other option is `EINVAL`. Because
//! `trans=fd` takes over fd numbers of this process, the type refuses
//! `mount(2)` from a sandboxed process: only the embedder mounts it.
//!
//! # Names the server never sees
//!
//! `..` and names with `/` are never sent: the client refuses them, and the
//! VFS resolves `..` from its own dentries and keeps its own root, so a
//! server that lets `..` escape its export (diod does) is never asked.
//!
//! # Owners
//!
//! The VFS decides every permission from [`Inode::owner`] and gives new
//! nodes their owner in [`NewNode`]. Servers run operations as the attached
//! user (diod `-N`: attach as uid 0) and several ignore the gid argument or
//! apply their own umask, so after each create the node's owner and mode
//! are set to what the VFS asked, with one Tsetattr each where they differ.
//!
//! # Fids
//!
//! Each inode holds one unopened fid for walks and path operations, and
//! each open file its own opened fid (a server may refuse to walk from an
//! open fid). Servers such as diod name a fid by its path, so a fid goes
//! stale when the file or one of its ancestors is renamed: the inode keeps
//! the names it is known by (parent, name), and a rename of a directory
//! bumps a generation that makes every inode walk again from the root on
//! its next use. Attributes of an unlinked file are read through one of its
//! open fids. Fids are given back when their owner is dropped, by
//! [`Client::clunk_deferred`], so a `Drop` never waits for a round trip.
//!
//! # Locking
//!
//! `Shared::inodes` (the table of inodes by qid path) → `GoferInode::st`
//! (one inode's cached attributes, fid, names and open handles) → the
//! client's own locks. Two inodes' `st` are never held together, and no
//! lock of this module is held across a round trip: a call copies what it
//! needs (an `Arc` of a fid) out of `st` and releases it first. The VFS may
//! hold a directory's `op` lock across these calls (as Linux holds
//! `i_rwsem`); `Drop` of a fid takes only the client's leaf state lock.

use std::any::Any;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tessera_vfs::abi::*;
use tessera_vfs::dentry::Dentry;
use tessera_vfs::fstype::{
    parse_number, FilesystemType, FsTypeOptions, MountData, MountRequest, NewFilesystem,
};
use tessera_vfs::inode::{Coherence, Ctx, DirEntry, FileOps, FilesystemOps, Inode, NewNode};
use tessera_vfs::perm::Owner;

use super::client::{Client, ClientOptions, Fid, AT_REMOVEDIR};
use super::transport::{Transport, TransportSpec};
use super::wire::{self, getattr, setattr, Attr};

use tessera_vfs::pipe;

/// The owner shown for files the server reports without one (`-1`), unless
/// `dfltuid=` / `dfltgid=` say otherwise (Linux v9fs's and gVisor's default).
pub const DEFAULT_UID: u32 = 65534;
/// See [`DEFAULT_UID`].
pub const DEFAULT_GID: u32 = 65534;

/// The magic number `statfs` reports when the server gives none.
pub const V9FS_MAGIC: u64 = 0x0102_1997;

/// The largest extended attribute value accepted from a server.
const XATTR_SIZE_MAX: u64 = 65536;
/// The most directory entries one directory may show before we call the
/// server broken (it keeps answering with offsets that never end).
const MAX_DIR_ENTRIES: usize = 1 << 24;
/// Longest chain of parents followed to rebuild a path.
const MAX_DEPTH: usize = 4096;

/// Linux open flags for Tlopen.
const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;
const O_DIRECTORY: u32 = 0o200000;

/// How the VFS may cache this instance's dentries and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// `cache=fscache`: dentries and attributes are cached and trusted;
    /// only changes made through this instance refresh them.
    Fscache,
    /// `cache=remote_revalidating`: every walk asks the server again, and
    /// every `stat` reads fresh attributes.
    RemoteRevalidating,
}

/// The `9p` filesystem type.
#[derive(Default)]
pub struct GoferType;

/// The options of one instance, parsed.
#[derive(Clone, Debug)]
struct Options {
    transport: TransportSpec,
    aname: String,
    uname: String,
    msize: Option<u32>,
    cache: CacheMode,
    dfltuid: u32,
    dfltgid: u32,
    dcache: Option<usize>,
}

fn parse_options(source: &[u8], d: &MountData) -> Result<Options> {
    let mut d = d.clone();
    let num = |v: Option<String>| -> Result<Option<u64>> {
        v.map(|v| parse_number(&v).ok_or(Errno::EINVAL)).transpose()
    };
    let trans = d.take_value("trans")?;
    let rfd = num(d.take_value("rfdno")?)?;
    let wfd = num(d.take_value("wfdno")?)?;
    let port = num(d.take_value("port")?)?;
    let aname = d.take_value("aname")?.unwrap_or_default();
    let uname = d.take_value("uname")?.unwrap_or_default();
    let msize = num(d.take_value("msize")?)?;
    let cache = match d.take_value("cache")?.as_deref() {
        None | Some("fscache") => CacheMode::Fscache,
        Some("remote_revalidating") => CacheMode::RemoteRevalidating,
        Some(_) => return Err(Errno::EINVAL),
    };
    let id = |v: Option<u64>, dflt: u32| -> Result<u32> {
        match v {
            None => Ok(dflt),
            Some(n) => u32::try_from(n).map_err(|_| Errno::EINVAL),
        }
    };
    let dfltuid = id(num(d.take_value("dfltuid")?)?, DEFAULT_UID)?;
    let dfltgid = id(num(d.take_value("dfltgid")?)?, DEFAULT_GID)?;
    let dcache = num(d.take_value("dcache")?)?.map(|n| n as usize);
    if let Some(v) = d.take_value("version")? {
        if !v.eq_ignore_ascii_case("9p2000.L") {
            return Err(Errno::EINVAL);
        }
    }
    d.finish()?;
    let fd = |n: Option<u64>| -> Result<i32> {
        n.and_then(|n| i32::try_from(n).ok()).ok_or(Errno::EINVAL)
    };
    let source = std::str::from_utf8(source).map_err(|_| Errno::EINVAL)?;
    let transport = match trans.as_deref() {
        Some("fd") => TransportSpec::Fd {
            rfd: fd(rfd)?,
            wfd: fd(wfd)?,
        },
        Some("unix") if !source.is_empty() => TransportSpec::Unix(source.to_string()),
        Some("tcp") if !source.is_empty() => TransportSpec::Tcp(
            source.to_string(),
            u16::try_from(port.unwrap_or(564)).map_err(|_| Errno::EINVAL)?,
        ),
        _ => return Err(Errno::EINVAL),
    };
    let msize = msize
        .map(|m| u32::try_from(m).map_err(|_| Errno::EINVAL))
        .transpose()?;
    Ok(Options {
        transport,
        aname,
        uname,
        msize,
        cache,
        dfltuid,
        dfltgid,
        dcache,
    })
}

impl FilesystemType for GoferType {
    fn name(&self) -> &str {
        "9p"
    }

    fn options(&self) -> FsTypeOptions {
        FsTypeOptions {
            // trans=fd names fds of this process: only the embedder may do that.
            allow_user_mount: false,
            allow_user_list: true,
            nodev: true,
        }
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem> {
        // Every option is checked before any fd is taken over.
        let o = parse_options(req.source, req.data)?;
        // SAFETY: the embedder hands the fds of trans=fd to this instance
        // (see the module docs); the other transports own what they open.
        let transport = unsafe { Transport::connect(&o.transport) }.map_err(|e| {
            log::debug!("9p: cannot reach the server: {e}");
            Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO.raw()))
        })?;
        let mut copts = ClientOptions::default();
        if let Some(m) = o.msize {
            copts.msize = m;
        }
        let client = Arc::new(Client::connect(transport, copts)?);
        let fs = GoferFs::attach(client, &o, req.cred.fsuid)?;
        let root = fs.root_inode()?;
        Ok(NewFilesystem {
            ops: Arc::new(fs),
            root,
        })
    }
}

/// A fid this module owns: clunked (deferred) when dropped.
struct OwnedFid {
    client: Arc<Client>,
    fid: ManuallyDrop<Fid>,
}

impl OwnedFid {
    fn new(client: &Arc<Client>, fid: Fid) -> OwnedFid {
        OwnedFid {
            client: client.clone(),
            fid: ManuallyDrop::new(fid),
        }
    }

    /// Clunks now and returns the server's answer (xattr writes commit here).
    fn clunk(self) -> Result<()> {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the fid is taken exactly once.
        let fid = unsafe { ManuallyDrop::take(&mut me.fid) };
        // SAFETY: as above, for the client handle.
        let client = unsafe { std::ptr::read(&me.client) };
        client.clunk(fid)
    }
}

impl std::ops::Deref for OwnedFid {
    type Target = Fid;
    fn deref(&self) -> &Fid {
        &self.fid
    }
}

impl Drop for OwnedFid {
    fn drop(&mut self) {
        // SAFETY: drop runs once; the fid is not used afterwards.
        let fid = unsafe { ManuallyDrop::take(&mut self.fid) };
        self.client.clunk_deferred(fid);
    }
}

/// What every inode of an instance shares.
struct Shared {
    client: Arc<Client>,
    cache: CacheMode,
    dfltuid: u32,
    dfltgid: u32,
    options_text: String,
    root_fid: Arc<OwnedFid>,
    /// Bumped when a directory is renamed: every fid may name a stale path.
    gen: AtomicU64,
    /// Inodes by qid path, so that every name of a file shares one inode.
    inodes: Mutex<InodeTable>,
    /// Live inodes (the dcache bound counts these).
    live: AtomicUsize,
    dcache: Option<usize>,
    root_dentry: Mutex<Weak<Dentry>>,
    root: Mutex<Weak<GoferInode>>,
}

#[derive(Default)]
struct InodeTable {
    map: HashMap<u64, Weak<GoferInode>>,
    /// Purge dead entries when the map grows past this.
    purge_at: usize,
}

/// One `9p` instance (its superblock operations).
pub struct GoferFs {
    sh: Arc<Shared>,
}

impl GoferFs {
    fn attach(client: Arc<Client>, o: &Options, fsuid: u32) -> Result<GoferFs> {
        let uname = if o.uname.is_empty() && fsuid == 0 {
            "root"
        } else {
            o.uname.as_str()
        };
        let (fid, _qid) = client.attach(uname.as_bytes(), o.aname.as_bytes(), fsuid)?;
        let root_fid = Arc::new(OwnedFid::new(&client, fid));
        let mut text = match &o.transport {
            TransportSpec::Fd { rfd, wfd } => format!("trans=fd,rfdno={rfd},wfdno={wfd}"),
            TransportSpec::Unix(_) => "trans=unix".to_string(),
            TransportSpec::Tcp(_, port) => format!("trans=tcp,port={port}"),
        };
        if !o.aname.is_empty() {
            text.push_str(&format!(",aname={}", o.aname));
        }
        text.push_str(&format!(",msize={}", client.msize()));
        text.push_str(match o.cache {
            CacheMode::Fscache => ",cache=fscache",
            CacheMode::RemoteRevalidating => ",cache=remote_revalidating",
        });
        if let Some(n) = o.dcache {
            text.push_str(&format!(",dcache={n}"));
        }
        Ok(GoferFs {
            sh: Arc::new(Shared {
                client,
                cache: o.cache,
                dfltuid: o.dfltuid,
                dfltgid: o.dfltgid,
                options_text: text,
                root_fid,
                gen: AtomicU64::new(0),
                inodes: Mutex::new(InodeTable {
                    map: HashMap::new(),
                    purge_at: 64,
                }),
                live: AtomicUsize::new(0),
                dcache: o.dcache,
                root_dentry: Mutex::new(Weak::new()),
                root: Mutex::new(Weak::new()),
            }),
        })
    }

    fn root_inode(&self) -> Result<Arc<GoferInode>> {
        let c = &self.sh.client;
        let a = c.getattr(&self.sh.root_fid, getattr::BASIC)?;
        let ftype = FileType::from_mode(a.mode).ok_or(Errno::EIO)?;
        let root = GoferInode::new(&self.sh, ftype, &a, Some(self.sh.root_fid.clone()), None);
        *self.sh.root.lock() = Arc::downgrade(&root);
        Ok(root)
    }

    /// The client, for embedders that stop the server themselves (close it
    /// first: that clunks every fid).
    pub fn client(&self) -> &Arc<Client> {
        &self.sh.client
    }

    /// The cache mode of the instance.
    pub fn cache_mode(&self) -> CacheMode {
        self.sh.cache
    }

    /// How many inodes are alive (dentries, open files and working
    /// directories hold them).
    pub fn live_inodes(&self) -> usize {
        self.sh.live.load(Ordering::Relaxed)
    }

    /// Tells the instance its root dentry, so that it can enforce `dcache=`
    /// by pruning unused dentries from the VFS's cache when a lookup would
    /// pass the bound. The VFS does not give a filesystem its dentries, so
    /// the embedder that mounted the instance calls this once.
    pub fn attach_root(&self, root: &Arc<Dentry>) {
        *self.sh.root_dentry.lock() = Arc::downgrade(root);
    }

    /// Prunes the unused dentries under the root now; returns how many went.
    pub fn prune(&self) -> usize {
        self.sh.prune()
    }
}

impl Shared {
    fn prune(&self) -> usize {
        let Some(root) = self.root_dentry.lock().upgrade() else {
            return 0;
        };
        root.prune_unused_tree()
    }

    fn maybe_prune(&self) {
        if let Some(bound) = self.dcache {
            if self.live.load(Ordering::Relaxed) > bound {
                self.prune();
            }
        }
    }

    fn statx(&self, ftype: FileType, a: &Attr) -> Statx {
        let ts = |sec: u64, nsec: u64| Timespec {
            sec: sec as i64,
            nsec: nsec.min(999_999_999) as u32,
        };
        Statx {
            mask: StatxMask::BASIC_STATS,
            blksize: a.blksize.min(u32::MAX as u64) as u32,
            nlink: a.nlink.min(u32::MAX as u64) as u32,
            uid: if a.uid == u32::MAX {
                self.dfltuid
            } else {
                a.uid
            },
            gid: if a.gid == u32::MAX {
                self.dfltgid
            } else {
                a.gid
            },
            // The type is the inode's for its whole life, whatever a server says later.
            mode: ftype.mode_bits() | (a.mode & 0o7777),
            ino: a.qid.path,
            size: a.size,
            blocks: a.blocks,
            atime: ts(a.atime_sec, a.atime_nsec),
            btime: Timespec::default(),
            ctime: ts(a.ctime_sec, a.ctime_nsec),
            mtime: ts(a.mtime_sec, a.mtime_nsec),
            rdev: DevId::from_raw(a.rdev),
            dev: DevId::default(),
            mnt_id: 0,
        }
    }

    /// The inode for a file just walked to from `parent` as `name`: the
    /// live one with that qid path, or a new one. `fid` (walked at
    /// generation `gen`) becomes its path fid if it needs one.
    fn inode_for(
        self: &Arc<Self>,
        a: &Attr,
        fid: OwnedFid,
        parent: &Weak<GoferInode>,
        name: &[u8],
        gen: u64,
    ) -> Result<Arc<GoferInode>> {
        let ftype = FileType::from_mode(a.mode).ok_or(Errno::EIO)?;
        let mut spare = None;
        let found = {
            let mut t = self.inodes.lock();
            let existing = t
                .map
                .get(&a.qid.path)
                .and_then(Weak::upgrade)
                .filter(|i| i.ftype == ftype && !i.is_root);
            match existing {
                Some(i) => {
                    {
                        let mut st = i.st.lock();
                        i.absorb_locked(&mut st, a);
                        if !st
                            .names
                            .iter()
                            .any(|(p, n)| Weak::ptr_eq(p, parent) && &**n == name)
                        {
                            st.names.push((parent.clone(), name.into()));
                        }
                        if st.stale || st.fid.is_none() || st.fid_gen != gen {
                            spare = st.fid.replace(Arc::new(fid));
                            st.fid_gen = gen;
                            st.stale = false;
                        } else {
                            spare = Some(Arc::new(fid));
                        }
                    }
                    i
                }
                None => {
                    let i = GoferInode::new(
                        self,
                        ftype,
                        a,
                        Some(Arc::new(fid)),
                        Some((parent.clone(), name.into())),
                    );
                    i.st.lock().fid_gen = gen;
                    if t.map.len() >= t.purge_at {
                        t.map.retain(|_, w| w.strong_count() > 0);
                        t.purge_at = (t.map.len() * 2).max(64);
                    }
                    t.map.insert(a.qid.path, Arc::downgrade(&i));
                    i
                }
            }
        };
        // Dropped outside the table lock: a fid's drop takes the client's lock.
        drop(spare);
        Ok(found)
    }

    /// Forgets an inode that has no name left, so a new file that reuses
    /// its inode number gets an inode of its own.
    fn forget(&self, inode: &GoferInode) {
        let mut t = self.inodes.lock();
        if let Some(w) = t.map.get(&inode.qid_path) {
            if std::ptr::eq(w.as_ptr(), inode) {
                t.map.remove(&inode.qid_path);
            }
        }
    }
}

impl FilesystemOps for GoferFs {
    fn statfs(&self) -> Result<Statfs> {
        let s = self.sh.client.statfs(&self.sh.root_fid)?;
        Ok(Statfs {
            fs_type: if s.ty == 0 { V9FS_MAGIC } else { s.ty as u64 },
            bsize: s.bsize as u64,
            blocks: s.blocks,
            bfree: s.bfree,
            bavail: s.bavail,
            files: s.files,
            ffree: s.ffree,
            namelen: s.namelen as u64,
            flags: 0,
        })
    }

    fn show_options(&self) -> String {
        self.sh.options_text.clone()
    }

    fn remount(&self, data: &MountData) -> Result<()> {
        // The connection cannot change on remount; the options are checked
        // and otherwise kept (as v9fs keeps them).
        let mut d = data.clone();
        for k in [
            "trans", "rfdno", "wfdno", "port", "aname", "uname", "msize", "cache", "dfltuid",
            "dfltgid", "dcache", "version",
        ] {
            d.take(k);
        }
        d.finish()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A fid opened with Tlopen, shared by an open file and the inode's list
/// (attributes of an unlinked file come through it).
struct Handle {
    fid: OwnedFid,
    writable: bool,
}

struct InodeState {
    attr: Statx,
    /// The unopened fid for walks and path operations.
    fid: Option<Arc<OwnedFid>>,
    /// The generation `fid` was walked at.
    fid_gen: u64,
    /// `fid` names a path that no longer leads here.
    stale: bool,
    /// The names this inode is known by: (parent, name).
    names: Vec<(Weak<GoferInode>, Box<[u8]>)>,
    /// Open fids on this file.
    opens: Vec<Weak<Handle>>,
}

/// An inode of a `9p` instance.
pub struct GoferInode {
    sh: Arc<Shared>,
    me: Weak<GoferInode>,
    qid_path: u64,
    ftype: FileType,
    is_root: bool,
    /// Mode and owner ids, read without a lock by every permission check.
    mode: AtomicU32,
    ids: AtomicU64,
    /// Attributes changed through us since they were read.
    dirty: AtomicBool,
    st: Mutex<InodeState>,
    pipe: Option<Arc<pipe::Pipe>>,
}

fn pack_ids(uid: u32, gid: u32) -> u64 {
    uid as u64 | (gid as u64) << 32
}

impl GoferInode {
    fn new(
        sh: &Arc<Shared>,
        ftype: FileType,
        a: &Attr,
        fid: Option<Arc<OwnedFid>>,
        name: Option<(Weak<GoferInode>, Box<[u8]>)>,
    ) -> Arc<GoferInode> {
        let is_root = name.is_none();
        let attr = sh.statx(ftype, a);
        sh.live.fetch_add(1, Ordering::Relaxed);
        Arc::new_cyclic(|me| GoferInode {
            sh: sh.clone(),
            me: me.clone(),
            qid_path: a.qid.path,
            ftype,
            is_root,
            mode: AtomicU32::new(attr.mode),
            ids: AtomicU64::new(pack_ids(attr.uid, attr.gid)),
            dirty: AtomicBool::new(false),
            st: Mutex::new(InodeState {
                attr,
                fid,
                fid_gen: 0,
                stale: false,
                names: name.into_iter().collect(),
                opens: Vec::new(),
            }),
            pipe: (ftype == FileType::Fifo).then(|| Arc::new(pipe::Pipe::default())),
        })
    }

    fn client(&self) -> &Arc<Client> {
        &self.sh.client
    }

    fn downcast(i: &Arc<dyn Inode>) -> Result<&GoferInode> {
        i.as_any().downcast_ref::<GoferInode>().ok_or(Errno::EXDEV)
    }

    /// Takes fresh attributes from the server (if they are this file's).
    fn absorb_locked(&self, st: &mut InodeState, a: &Attr) {
        if a.qid.path != self.qid_path {
            return;
        }
        st.attr = self.sh.statx(self.ftype, a);
        self.mode.store(st.attr.mode, Ordering::Release);
        self.ids
            .store(pack_ids(st.attr.uid, st.attr.gid), Ordering::Release);
    }

    fn absorb(&self, a: &Attr) {
        let mut st = self.st.lock();
        self.absorb_locked(&mut st, a);
        self.dirty.store(false, Ordering::Release);
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn is_orphan(&self) -> bool {
        !self.is_root && self.st.lock().names.is_empty()
    }

    /// An open fid of this file, preferring a writable one if asked.
    fn open_handle(&self, writable: bool) -> Option<Arc<Handle>> {
        let st = self.st.lock();
        st.opens
            .iter()
            .rev()
            .filter_map(Weak::upgrade)
            .find(|h| h.writable || !writable)
    }

    /// The names from the root down to this inode.
    fn path_names(&self) -> Result<Vec<Box<[u8]>>> {
        let mut names = Vec::new();
        let (mut parent, name) = {
            let st = self.st.lock();
            st.names.first().cloned().ok_or(Errno::ENOENT)?
        };
        names.push(name);
        loop {
            let p = parent.upgrade().ok_or(Errno::ENOENT)?;
            if p.is_root {
                break;
            }
            if names.len() > MAX_DEPTH {
                return Err(Errno::ELOOP);
            }
            let (pp, n) = {
                let st = p.st.lock();
                st.names.first().cloned().ok_or(Errno::ENOENT)?
            };
            names.push(n);
            parent = pp;
        }
        names.reverse();
        Ok(names)
    }

    /// The fid for path operations, walking again from the root when it
    /// may name a stale path.
    fn path_fid(&self) -> Result<Arc<OwnedFid>> {
        if self.is_root {
            return Ok(self.sh.root_fid.clone());
        }
        let gen = self.sh.gen.load(Ordering::Acquire);
        let (old, orphan) = {
            let st = self.st.lock();
            match &st.fid {
                Some(f) if !st.stale && st.fid_gen == gen => return Ok(f.clone()),
                f => (f.clone(), st.names.is_empty()),
            }
        };
        if orphan {
            // Its path now names nothing, or another file.
            return Err(Errno::ENOENT);
        }
        match self.rewalk() {
            Ok(f) => {
                let f = Arc::new(f);
                let prev = {
                    let mut st = self.st.lock();
                    st.fid_gen = gen;
                    st.stale = false;
                    st.fid.replace(f.clone())
                };
                drop(prev);
                Ok(f)
            }
            Err(e) => old.ok_or(e),
        }
    }

    fn rewalk(&self) -> Result<OwnedFid> {
        let names = self.path_names()?;
        let refs: Vec<&[u8]> = names.iter().map(|n| &**n).collect();
        let c = self.client();
        let (f, qids) = c.walk(&self.sh.root_fid, &refs)?;
        let f = OwnedFid::new(c, f);
        if qids.last().map(|q| q.path) != Some(self.qid_path) {
            return Err(Errno::ESTALE);
        }
        Ok(f)
    }

    /// Fresh attributes: through an open fid when there is one (it names
    /// this very file even after unlink or rename), else the path fid.
    fn fetch_attr(&self) -> Result<Attr> {
        let c = self.client();
        if let Some(h) = self.open_handle(false) {
            if let Ok(a) = c.getattr(&h.fid, getattr::BASIC) {
                return Ok(a);
            }
        }
        if self.is_orphan() {
            return Err(Errno::ENOENT);
        }
        let f = self.path_fid()?;
        c.getattr(&f, getattr::BASIC)
    }

    fn refresh(&self) -> Result<()> {
        let a = self.fetch_attr()?;
        self.absorb(&a);
        Ok(())
    }

    fn remove_name(&self, parent: &Weak<GoferInode>, name: &[u8], dir: bool) {
        let orphan = {
            let mut st = self.st.lock();
            st.names
                .retain(|(p, n)| !(Weak::ptr_eq(p, parent) && &**n == name));
            // The fid may have been walked by the removed name.
            st.stale = true;
            let orphan = st.names.is_empty();
            if orphan {
                st.attr.nlink = if dir {
                    0
                } else {
                    st.attr.nlink.saturating_sub(1)
                };
            }
            orphan
        };
        if orphan {
            self.sh.forget(self);
        }
        self.mark_dirty();
    }

    /// Sets owner and mode of a node just made to what the VFS asked.
    fn fix_new_owner(&self, fid: &Fid, a: &Attr, new: &NewNode<'_>) -> bool {
        let c = self.client();
        let mut changed = false;
        if a.uid != new.uid || a.gid != new.gid {
            let attr = wire::SetAttr {
                valid: setattr::UID | setattr::GID,
                uid: new.uid,
                gid: new.gid,
                ..Default::default()
            };
            if let Err(e) = c.setattr(fid, &attr) {
                log::debug!("9p: cannot give a new node its owner: {e}");
            }
            changed = true;
        }
        // Symbolic links have no mode of their own (and a server's chmod follows them).
        if new.ftype != FileType::Symlink && (changed || a.mode & 0o7777 != new.mode & 0o7777) {
            let attr = wire::SetAttr {
                valid: setattr::MODE,
                mode: new.mode & 0o7777,
                ..Default::default()
            };
            if let Err(e) = c.setattr(fid, &attr) {
                log::debug!("9p: cannot give a new node its mode: {e}");
            }
            changed = true;
        }
        changed
    }

    /// Makes the node on the server (without owner fixes).
    fn make_node(&self, dfid: &Fid, name: &[u8], new: &NewNode<'_>) -> Result<()> {
        let c = self.client();
        let mode = new.mode & 0o7777;
        match new.ftype {
            FileType::Directory => c.mkdir(dfid, name, mode, new.gid).map(drop),
            FileType::Symlink => c.symlink(dfid, name, new.target, new.gid).map(drop),
            FileType::Regular => {
                match c.mknod(dfid, name, S_IFREG | mode, 0, 0, new.gid) {
                    Err(Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EACCES) => {}
                    r => return r.map(drop),
                }
                // A server that makes regular files only by Tlcreate: on a
                // clone of the directory fid, which the create opens.
                let (f, _) = c.walk(dfid, &[])?;
                let f = OwnedFid::new(c, f);
                c.lcreate(&f, name, O_RDWR, mode, new.gid)?;
                f.clunk()
            }
            t => c
                .mknod(
                    dfid,
                    name,
                    t.mode_bits() | mode,
                    new.rdev.major,
                    new.rdev.minor,
                    new.gid,
                )
                .map(drop),
        }
    }

    fn open_fid(&self, flags: u32) -> Result<OwnedFid> {
        let pf = self.path_fid()?;
        let c = self.client();
        let (f, _) = c.walk(&pf, &[])?;
        let f = OwnedFid::new(c, f);
        c.lopen(&f, flags)?;
        Ok(f)
    }

    fn register(&self, h: &Arc<Handle>) {
        let mut st = self.st.lock();
        st.opens.retain(|w| w.strong_count() > 0);
        st.opens.push(Arc::downgrade(h));
    }
}

impl Drop for GoferInode {
    fn drop(&mut self) {
        self.sh.live.fetch_sub(1, Ordering::Relaxed);
    }
}

fn to_wire_time(t: Timespec) -> (u64, u64) {
    (t.sec.max(0) as u64, t.nsec as u64)
}

impl Inode for GoferInode {
    fn file_type(&self) -> FileType {
        self.ftype
    }

    fn owner(&self) -> Owner {
        let ids = self.ids.load(Ordering::Acquire);
        Owner {
            mode: self.mode.load(Ordering::Acquire),
            uid: ids as u32,
            gid: (ids >> 32) as u32,
        }
    }

    fn stat(&self) -> Statx {
        let fresh = self.sh.cache == CacheMode::RemoteRevalidating
            || self.dirty.load(Ordering::Acquire)
            || self.open_handle(false).is_some();
        if fresh {
            if let Err(e) = self.refresh() {
                log::debug!("9p: getattr failed, showing cached attributes: {e}");
            }
        }
        self.st.lock().attr
    }

    fn setattr(&self, _ctx: &Ctx<'_>, attr: &SetAttr) -> Result<()> {
        let c = self.client();
        // Owner first, then the rest: a chown clears set-id bits that the
        // VFS's mode (computed for after the chown) already accounts for.
        let mut msgs = Vec::new();
        if attr.uid.is_some() || attr.gid.is_some() {
            let mut s = wire::SetAttr::default();
            if let Some(u) = attr.uid {
                s.valid |= setattr::UID;
                s.uid = u;
            }
            if let Some(g) = attr.gid {
                s.valid |= setattr::GID;
                s.gid = g;
            }
            msgs.push(s);
        }
        let mut s = wire::SetAttr::default();
        if let Some(m) = attr.mode {
            s.valid |= setattr::MODE;
            s.mode = m & 0o7777;
        }
        if let Some(sz) = attr.size {
            if self.ftype != FileType::Regular {
                return Err(Errno::EINVAL);
            }
            s.valid |= setattr::SIZE;
            s.size = sz;
        }
        if let Some(t) = attr.atime {
            s.valid |= setattr::ATIME | setattr::ATIME_SET;
            (s.atime_sec, s.atime_nsec) = to_wire_time(t);
        }
        if let Some(t) = attr.mtime {
            s.valid |= setattr::MTIME | setattr::MTIME_SET;
            (s.mtime_sec, s.mtime_nsec) = to_wire_time(t);
        }
        if s.valid != 0 {
            msgs.push(s);
        } else if attr.ctime.is_some() && msgs.is_empty() {
            // 9P cannot set ctime; it can ask the server to touch it.
            msgs.push(wire::SetAttr {
                valid: setattr::CTIME,
                ..Default::default()
            });
        }
        if msgs.is_empty() {
            return Ok(());
        }
        // An unlinked file is reached through an open fid (truncation needs
        // one open for writing).
        let handle = if self.is_orphan() {
            self.open_handle(attr.size.is_some())
        } else {
            None
        };
        let pf;
        let fid: &Fid = match &handle {
            Some(h) => &h.fid,
            None => {
                pf = self.path_fid()?;
                &pf
            }
        };
        let mut res = Ok(());
        for m in &msgs {
            res = c.setattr(fid, m);
            if res.is_err() {
                break;
            }
        }
        if res.is_ok() {
            // Kept here too: a server that serves attributes by path
            // (diod) cannot show them for an unlinked file.
            let mut st = self.st.lock();
            let a = &mut st.attr;
            if let Some(m) = attr.mode {
                a.mode = (a.mode & S_IFMT) | (m & 0o7777);
            }
            a.uid = attr.uid.unwrap_or(a.uid);
            a.gid = attr.gid.unwrap_or(a.gid);
            a.size = attr.size.unwrap_or(a.size);
            a.atime = attr.atime.unwrap_or(a.atime);
            a.mtime = attr.mtime.unwrap_or(a.mtime);
            a.ctime = attr.ctime.unwrap_or(a.ctime);
            self.mode.store(a.mode, Ordering::Release);
            self.ids.store(pack_ids(a.uid, a.gid), Ordering::Release);
        }
        self.mark_dirty();
        // The owner atomics must show the change at once: permission checks read them.
        let _ = self.refresh();
        res
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn coherence(&self) -> Coherence {
        match self.sh.cache {
            CacheMode::Fscache => Coherence::Cached,
            CacheMode::RemoteRevalidating => Coherence::Revalidate,
        }
    }

    fn lookup(&self, _ctx: &Ctx<'_>, name: &[u8]) -> Result<Arc<dyn Inode>> {
        self.sh.maybe_prune();
        let gen = self.sh.gen.load(Ordering::Acquire);
        let dfid = self.path_fid()?;
        let c = self.client();
        let (f, _) = c.walk(&dfid, &[name])?;
        let f = OwnedFid::new(c, f);
        let a = c.getattr(&f, getattr::BASIC)?;
        let i = self.sh.inode_for(&a, f, &self.me, name, gen)?;
        Ok(i)
    }

    fn revalidate(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> bool {
        let Ok(ch) = Self::downcast(child) else {
            return false;
        };
        let gen = self.sh.gen.load(Ordering::Acquire);
        let Ok(dfid) = self.path_fid() else {
            return false;
        };
        let c = self.client();
        let Ok((f, qids)) = c.walk(&dfid, &[name]) else {
            return false;
        };
        let f = OwnedFid::new(c, f);
        if qids.first().map(|q| q.path) != Some(ch.qid_path) {
            return false;
        }
        let Ok(a) = c.getattr(&f, getattr::BASIC) else {
            return false;
        };
        if FileType::from_mode(a.mode) != Some(ch.ftype) {
            return false;
        }
        let spare = {
            let mut st = ch.st.lock();
            ch.absorb_locked(&mut st, &a);
            if st.stale || st.fid_gen != gen || st.fid.is_none() {
                st.stale = false;
                st.fid_gen = gen;
                st.fid.replace(Arc::new(f))
            } else {
                Some(Arc::new(f))
            }
        };
        drop(spare);
        true
    }

    fn create(&self, _ctx: &Ctx<'_>, name: &[u8], new: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        let gen = self.sh.gen.load(Ordering::Acquire);
        let dfid = self.path_fid()?;
        let c = self.client();
        self.make_node(&dfid, name, new)?;
        self.mark_dirty();
        let (f, _) = c.walk(&dfid, &[name])?;
        let f = OwnedFid::new(c, f);
        let mut a = c.getattr(&f, getattr::BASIC)?;
        if self.fix_new_owner(&f, &a, new) {
            a = c.getattr(&f, getattr::BASIC)?;
        }
        let i = self.sh.inode_for(&a, f, &self.me, name, gen)?;
        Ok(i)
    }

    fn link(&self, _ctx: &Ctx<'_>, name: &[u8], target: &Arc<dyn Inode>) -> Result<()> {
        let t = Self::downcast(target)?;
        let dfid = self.path_fid()?;
        let tfid = t.path_fid()?;
        self.client().link(&dfid, &tfid, name)?;
        {
            let mut st = t.st.lock();
            let revived = st.names.is_empty();
            st.names.push((self.me.clone(), name.into()));
            if revived {
                st.stale = true;
            }
        }
        t.mark_dirty();
        self.mark_dirty();
        Ok(())
    }

    fn unlink(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        let dfid = self.path_fid()?;
        self.client().unlinkat(&dfid, name, 0)?;
        self.mark_dirty();
        if let Ok(ch) = Self::downcast(child) {
            ch.remove_name(&self.me, name, false);
        }
        Ok(())
    }

    fn rmdir(&self, _ctx: &Ctx<'_>, name: &[u8], child: &Arc<dyn Inode>) -> Result<()> {
        let dfid = self.path_fid()?;
        self.client().unlinkat(&dfid, name, AT_REMOVEDIR)?;
        self.mark_dirty();
        if let Ok(ch) = Self::downcast(child) {
            ch.remove_name(&self.me, name, true);
        }
        Ok(())
    }

    fn is_empty_dir(&self, _ctx: &Ctx<'_>) -> Result<bool> {
        let f = self.open_fid(O_RDONLY | O_DIRECTORY)?;
        let c = self.client();
        let mut off = 0;
        let mut seen = 0usize;
        loop {
            let batch = c.readdir(&f, off, u32::MAX)?;
            let Some(last) = batch.last() else {
                return Ok(true);
            };
            if batch.iter().any(|e| e.name != b"." && e.name != b"..") {
                return Ok(false);
            }
            seen += batch.len();
            if seen > 16 || last.offset == off {
                // Only dots keep coming: a server that does not end its listing.
                return Ok(true);
            }
            off = last.offset;
        }
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
        // 9P has no exchange or whiteout; NOREPLACE the VFS has checked.
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let nd = Self::downcast(new_dir)?;
        let ch = Self::downcast(child)?;
        let ofid = self.path_fid()?;
        let nfid = nd.path_fid()?;
        self.client().renameat(&ofid, old_name, &nfid, new_name)?;
        self.mark_dirty();
        nd.mark_dirty();
        if let Some(r) = replaced.and_then(|r| Self::downcast(r).ok()) {
            r.remove_name(&nd.me, new_name, r.ftype == FileType::Directory);
        }
        {
            let mut st = ch.st.lock();
            st.names
                .retain(|(p, n)| !(Weak::ptr_eq(p, &self.me) && &**n == old_name));
            st.names.insert(0, (nd.me.clone(), new_name.into()));
            // The server's fid names the old path.
            st.stale = true;
        }
        ch.mark_dirty();
        if ch.ftype == FileType::Directory {
            // Every fid below it names an old path too.
            self.sh.gen.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        if self.ftype != FileType::Symlink {
            return Err(Errno::EINVAL);
        }
        let f = self.path_fid()?;
        self.client().readlink(&f)
    }

    fn open(self: Arc<Self>, flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        match self.ftype {
            FileType::Fifo => {
                let p = self.pipe.clone().ok_or(Errno::ENXIO)?;
                Ok(Arc::new(pipe::PipeEnd::open(p, flags)?))
            }
            FileType::Directory => {
                let f = self.open_fid(O_RDONLY | O_DIRECTORY)?;
                let h = Arc::new(Handle {
                    fid: f,
                    writable: false,
                });
                self.register(&h);
                Ok(Arc::new(DirFile {
                    inode: self.clone(),
                    h,
                }))
            }
            FileType::Regular => {
                let (lflags, writable) = match flags.access() {
                    AccessMode::WriteOnly => (O_WRONLY, true),
                    AccessMode::ReadWrite => (O_RDWR, true),
                    _ => (O_RDONLY, false),
                };
                let f = self.open_fid(lflags)?;
                let h = Arc::new(Handle { fid: f, writable });
                self.register(&h);
                Ok(Arc::new(RegFile {
                    inode: self.clone(),
                    h,
                }))
            }
            _ => Err(Errno::ENXIO),
        }
    }

    fn getxattr(&self, name: &[u8]) -> Result<Vec<u8>> {
        let pf = self.path_fid()?;
        let c = self.client();
        let (xf, size) = c.xattrwalk(&pf, name)?;
        let xf = OwnedFid::new(c, xf);
        if size > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        let mut buf = vec![0u8; size as usize];
        let n = if size == 0 {
            0
        } else {
            c.read(&xf, 0, &mut buf)?
        };
        buf.truncate(n);
        Ok(buf)
    }

    fn setxattr(&self, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        let pf = self.path_fid()?;
        let c = self.client();
        let (f, _) = c.walk(&pf, &[])?;
        let f = OwnedFid::new(c, f);
        c.xattrcreate(&f, name, value.len() as u64, flags.bits())?;
        if !value.is_empty() && c.write(&f, 0, value)? != value.len() {
            return Err(Errno::EIO);
        }
        self.mark_dirty();
        // The server sets the attribute when the fid is clunked.
        f.clunk()
    }

    fn listxattr(&self) -> Result<Vec<Vec<u8>>> {
        let raw = self.getxattr(b"")?;
        Ok(raw
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_vec())
            .collect())
    }

    fn removexattr(&self, name: &[u8]) -> Result<()> {
        // As v9fs: an attribute "set" with no value and XATTR_REPLACE.
        let pf = self.path_fid()?;
        let c = self.client();
        let (f, _) = c.walk(&pf, &[])?;
        let f = OwnedFid::new(c, f);
        c.xattrcreate(&f, name, 0, XattrFlags::XATTR_REPLACE.bits())?;
        self.mark_dirty();
        f.clunk()
    }
}

/// An open regular file.
struct RegFile {
    inode: Arc<GoferInode>,
    h: Arc<Handle>,
}

impl FileOps for RegFile {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.inode.client().read(&self.h.fid, off, buf)
    }

    fn write(&self, _ctx: &Ctx<'_>, off: u64, buf: &[u8], append: bool) -> Result<(usize, u64)> {
        let c = self.inode.client();
        let at = if append {
            c.getattr(&self.h.fid, getattr::SIZE)?.size
        } else {
            off
        };
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > i64::MAX as u64)
        {
            return Err(Errno::EFBIG);
        }
        let n = c.write(&self.h.fid, at, buf)?;
        {
            let mut st = self.inode.st.lock();
            st.attr.size = st.attr.size.max(at + n as u64);
        }
        self.inode.mark_dirty();
        Ok((n, at + n as u64))
    }

    fn size(&self) -> u64 {
        match self.inode.client().getattr(&self.h.fid, getattr::BASIC) {
            Ok(a) => {
                self.inode.absorb(&a);
                a.size
            }
            Err(_) => self.inode.st.lock().attr.size,
        }
    }

    fn fsync(&self) -> Result<()> {
        self.inode.client().fsync(&self.h.fid, false)
    }
}

/// An open directory: entries come from Treaddir, with the server's offsets.
struct DirFile {
    inode: Arc<GoferInode>,
    h: Arc<Handle>,
}

fn dirent_type(ty: u8, qid: &wire::Qid) -> DirentType {
    match ty {
        1 => DirentType::Fifo,
        2 => DirentType::Chr,
        4 => DirentType::Dir,
        6 => DirentType::Blk,
        8 => DirentType::Reg,
        10 => DirentType::Lnk,
        12 => DirentType::Sock,
        _ if qid.is_dir() => DirentType::Dir,
        _ if qid.is_symlink() => DirentType::Lnk,
        _ => DirentType::Unknown,
    }
}

impl FileOps for DirFile {
    fn readdir(&self, _ctx: &Ctx<'_>, off: u64) -> Result<Vec<DirEntry>> {
        let entries = self.inode.client().readdir(&self.h.fid, off, u32::MAX)?;
        if entries.len() > MAX_DIR_ENTRIES {
            return Err(Errno::EIO);
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            // A server that sends the offset it was asked for would loop forever.
            if e.offset == off && !out.is_empty() {
                return Err(Errno::EIO);
            }
            out.push(DirEntry {
                dtype: dirent_type(e.ty, &e.qid),
                ino: e.qid.path,
                next_off: e.offset,
                name: e.name,
            });
        }
        if out.last().is_some_and(|e| e.next_off == off) {
            return Err(Errno::EIO);
        }
        Ok(out)
    }

    fn fsync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_unknown_is_einval() {
        let d = MountData::parse(b"trans=fd,rfdno=5,wfdno=6,aname=/x,cache=remote_revalidating,dfltuid=7,dcache=100,msize=65536").unwrap();
        let o = parse_options(b"none", &d).unwrap();
        assert_eq!(o.transport, TransportSpec::Fd { rfd: 5, wfd: 6 });
        assert_eq!(o.cache, CacheMode::RemoteRevalidating);
        assert_eq!(o.dfltuid, 7);
        assert_eq!(o.dfltgid, DEFAULT_GID);
        assert_eq!(o.dcache, Some(100));
        assert_eq!(o.msize, Some(65536));
        for bad in [
            &b"trans=fd,rfdno=5,wfdno=6,bogus"[..],
            b"trans=fd,rfdno=5",
            b"trans=fd,rfdno=5,wfdno=6,cache=loose",
            b"trans=virtio",
            b"trans=fd,rfdno=5,wfdno=6,dfltuid=99999999999",
            b"trans=fd,rfdno=5,wfdno=6,version=9p2000.u",
        ] {
            let d = MountData::parse(bad).unwrap();
            assert_eq!(parse_options(b"none", &d).err(), Some(Errno::EINVAL));
        }
        let d = MountData::parse(b"trans=unix").unwrap();
        assert_eq!(parse_options(b"", &d).err(), Some(Errno::EINVAL));
    }
}
