//! A minimal authoritative in-memory filesystem for the unit tests of this
//! crate (the real filesystems live in `tessera-fsimpl`, which depends on us).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::abi::*;
use crate::cred::Credentials;
use crate::fstype::{FilesystemType, FsTypeOptions, MountRequest, NewFilesystem};
use crate::inode::{Ctx, FileOps, FilesystemOps, Inode, NewNode};
use crate::perm::Owner;
use crate::process::Process;
use crate::Vfs;

static INO: AtomicU64 = AtomicU64::new(1);

struct Node {
    ino: u64,
    ftype: FileType,
    meta: Mutex<Owner>,
    target: Box<[u8]>,
}

impl Inode for Node {
    fn file_type(&self) -> FileType {
        self.ftype
    }
    fn owner(&self) -> Owner {
        *self.meta.lock()
    }
    fn stat(&self) -> Statx {
        let o = self.owner();
        Statx {
            mode: o.mode,
            uid: o.uid,
            gid: o.gid,
            ino: self.ino,
            nlink: 1,
            size: self.target.len() as u64,
            ..Default::default()
        }
    }
    fn setattr(&self, _ctx: &Ctx<'_>, attr: &SetAttr) -> Result<()> {
        let mut m = self.meta.lock();
        if let Some(mode) = attr.mode {
            m.mode = (m.mode & S_IFMT) | mode;
        }
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn create(&self, _ctx: &Ctx<'_>, _name: &[u8], n: &NewNode<'_>) -> Result<Arc<dyn Inode>> {
        Ok(node(n.ftype, n.mode, n.uid, n.gid, n.target))
    }
    fn link(&self, _ctx: &Ctx<'_>, _name: &[u8], _target: &Arc<dyn Inode>) -> Result<()> {
        Ok(())
    }
    fn unlink(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Ok(())
    }
    fn rmdir(&self, _ctx: &Ctx<'_>, _name: &[u8], _child: &Arc<dyn Inode>) -> Result<()> {
        Ok(())
    }
    fn rename(
        &self,
        _ctx: &Ctx<'_>,
        _o: &[u8],
        _c: &Arc<dyn Inode>,
        _nd: &Arc<dyn Inode>,
        _n: &[u8],
        _r: Option<&Arc<dyn Inode>>,
        _f: RenameFlags,
    ) -> Result<()> {
        Ok(())
    }
    fn readlink(&self) -> Result<Vec<u8>> {
        if self.ftype == FileType::Symlink {
            Ok(self.target.to_vec())
        } else {
            Err(Errno::EINVAL)
        }
    }
    fn open(self: Arc<Self>, _flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        struct F;
        impl FileOps for F {}
        Ok(Arc::new(F))
    }
}

fn node(ftype: FileType, mode: u32, uid: u32, gid: u32, target: &[u8]) -> Arc<dyn Inode> {
    Arc::new(Node {
        ino: INO.fetch_add(1, Ordering::Relaxed),
        ftype,
        meta: Mutex::new(Owner {
            mode: ftype.mode_bits() | mode,
            uid,
            gid,
        }),
        target: target.into(),
    })
}

struct Fs;

impl FilesystemOps for Fs {
    fn statfs(&self) -> Result<Statfs> {
        Ok(Statfs::default())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct TestFsType;

impl FilesystemType for TestFsType {
    fn name(&self) -> &str {
        "testfs"
    }
    fn options(&self) -> FsTypeOptions {
        FsTypeOptions {
            allow_user_mount: true,
            allow_user_list: true,
            nodev: true,
        }
    }
    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem> {
        req.data.finish()?;
        Ok(NewFilesystem {
            ops: Arc::new(Fs),
            root: node(FileType::Directory, 0o755, 0, 0, b""),
        })
    }
}

/// A root process on a fresh `testfs` root, with `testfs` registered for submounts.
pub(crate) fn process() -> Process {
    let vfs = Vfs::new();
    vfs.fstypes.register(Arc::new(TestFsType)).unwrap();
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
    Process::new(vfs, ns, Credentials::root())
}
