//! The Tessera backend of the ops-script runner: every call goes to a
//! [`Process`] of Tessera's own VFS.

use std::sync::Arc;

use tessera_fsimpl::tmpfs::TmpfsType;
use tessera_vfs::abi::*;
use tessera_vfs::cred::Credentials;
use tessera_vfs::process::Process;
use tessera_vfs::{Result, Vfs};

use super::backend::{Backend, Dirent};

/// A process in the spec's starting state: an empty tmpfs root mounted with
/// `mode=0755`, umask 0022, every id 0 with all capabilities.
pub fn starting_process() -> Result<Process> {
    starting_process_on("tmpfs", b"none", b"mode=0755")
}

/// A process in the spec's starting state on a root of another type
/// (`9p` with its mount data): the root is made mode 0755, owned by 0:0.
pub fn starting_process_on(fstype: &str, source: &[u8], data: &[u8]) -> Result<Process> {
    let vfs = Vfs::new();
    vfs.fstypes.register(Arc::new(TmpfsType::default()))?;
    #[cfg(unix)]
    vfs.fstypes
        .register(Arc::new(tessera_fsimpl::verity::fs::VerityType::default()))?;
    vfs.fstypes
        .register(Arc::new(tessera_fsimpl::gofer::GoferType))?;
    vfs.fstypes
        .register(Arc::new(tessera_fsimpl::overlay::OverlayType))?;
    tessera_devices::memdev::register(&vfs.devices)?;
    let root = vfs.mount_disconnected(
        &Credentials::root(),
        fstype,
        source,
        MountFlags::empty(),
        data,
    )?;
    let ns = vfs.new_namespace(root)?;
    let p = Process::new(vfs, ns, Credentials::root());
    if fstype != "tmpfs" {
        p.fchownat(AT_FDCWD, b"/", 0, 0, AtFlags::empty())?;
        p.fchmodat(AT_FDCWD, b"/", 0o755)?;
    }
    Ok(p)
}

/// The backend: a thin adapter from raw Linux arguments to [`Process`].
pub struct TesseraBackend {
    p: Process,
}

impl TesseraBackend {
    /// A backend in the starting state.
    pub fn new() -> Result<TesseraBackend> {
        Ok(TesseraBackend {
            p: starting_process()?,
        })
    }

    /// The process, for embedders and tests that want to look inside.
    pub fn process(&self) -> &Process {
        &self.p
    }
}

/// Runs `f` on a backend whose root is a `9p` mount of `dir` (which must
/// be an empty directory), served by a diod started for this run on a
/// socketpair; then unmounts (every fid clunked), stops diod and empties
/// `dir` again. `cache` is the `cache=` option.
pub fn with_9p_root<T>(
    dir: &std::path::Path,
    cache: &str,
    f: impl FnOnce(&mut dyn Backend) -> T,
) -> std::result::Result<T, String> {
    use std::os::fd::IntoRawFd;
    use tessera_fsimpl::gofer::{diod::Diod, GoferFs};
    let show = dir.display();
    match std::fs::read_dir(dir).map(|mut it| it.next().is_none()) {
        Ok(true) => {}
        Ok(false) => return Err(format!("{show} is not empty")),
        Err(e) => return Err(format!("{show}: {e}")),
    }
    let bin = Diod::binary().ok_or("diod is not installed (apt-get install diod)")?;
    let (server, ours) = Diod::start(&bin, dir).map_err(|e| format!("cannot start diod: {e}"))?;
    // diod serves only an aname that names its export.
    let export = std::path::absolute(dir).map_err(|e| format!("{show}: {e}"))?;
    let aname = export.to_str().filter(|a| !a.contains(','));
    let aname = aname.ok_or_else(|| format!("{show}: a 9p aname must be UTF-8 without commas"))?;
    // The mount takes the fd over (closed with the client).
    let fd = ours.into_raw_fd();
    let data = format!("trans=fd,rfdno={fd},wfdno={fd},aname={aname},cache={cache}");
    let p = starting_process_on("9p", b"diod", data.as_bytes()).map_err(|e| {
        format!(
            "cannot mount 9p on {show}: {e}; diod says: {}",
            server.log()
        )
    })?;
    let root = p
        .openat(AT_FDCWD, b"/", OpenFlags::O_PATH, 0)
        .and_then(|fd| {
            let f = p.file(fd);
            p.close(fd)?;
            f
        })
        .map_err(|e| format!("cannot open the 9p root: {e}"))?;
    let fs = root.location().mount.fs().clone();
    drop(root);
    let client = match fs.ops().as_any().downcast_ref::<GoferFs>() {
        Some(g) => {
            g.attach_root(fs.root());
            g.client().clone()
        }
        None => return Err("the root is not a 9p mount".into()),
    };
    drop(fs);
    let mut backend = TesseraBackend { p };
    let out = f(&mut backend);
    drop(backend);
    // Clunk everything before the server goes: diod may crash otherwise.
    client.close();
    drop(client);
    let stopped = server.stop(std::time::Duration::from_secs(10));
    let emptied = empty_dir(dir);
    stopped.map_err(|e| format!("diod: {e}"))?;
    emptied.map_err(|e| format!("cannot empty {show}: {e}"))?;
    Ok(out)
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn id(v: u32) -> i64 {
    if v == u32::MAX {
        -1
    } else {
        v as i64
    }
}

impl Backend for TesseraBackend {
    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> Result<()> {
        self.p.mkdirat(dirfd, path, mode)
    }
    fn mknodat(
        &mut self,
        dirfd: i32,
        path: &[u8],
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.p.mknodat(dirfd, path, mode, DevId::new(major, minor))
    }
    fn symlinkat(&mut self, target: &[u8], newdirfd: i32, path: &[u8]) -> Result<()> {
        self.p.symlinkat(target, newdirfd, path)
    }
    fn linkat(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.p.linkat(
            olddirfd,
            old,
            newdirfd,
            new,
            AtFlags::from_bits_retain(flags),
        )
    }
    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<()> {
        self.p
            .unlinkat(dirfd, path, AtFlags::from_bits_retain(flags))
    }
    fn renameat2(
        &mut self,
        olddirfd: i32,
        old: &[u8],
        newdirfd: i32,
        new: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.p.renameat2(
            olddirfd,
            old,
            newdirfd,
            new,
            RenameFlags::from_bits_retain(flags),
        )
    }
    fn readlinkat(&mut self, dirfd: i32, path: &[u8]) -> Result<Vec<u8>> {
        self.p.readlinkat(dirfd, path)
    }
    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: u32) -> Result<Statx> {
        self.p
            .fstatat(dirfd, path, AtFlags::from_bits_retain(flags))
    }
    fn fstat(&mut self, fd: i32) -> Result<Statx> {
        self.p.fstat(fd)
    }
    fn faccessat2(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()> {
        self.p.faccessat2(
            dirfd,
            path,
            AccessFlags::from_bits_retain(mode),
            AtFlags::from_bits_retain(flags),
        )
    }
    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: u32) -> Result<()> {
        if flags & !AtFlags::AT_SYMLINK_NOFOLLOW.bits() != 0 {
            return Err(Errno::EINVAL);
        }
        if flags != 0 {
            // fchmodat2 with AT_SYMLINK_NOFOLLOW: symlinks have no mode to change.
            let st = self.p.fstatat(dirfd, path, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if st.file_type() == Some(FileType::Symlink) {
                return Err(Errno::EOPNOTSUPP);
            }
        }
        self.p.fchmodat(dirfd, path, mode)
    }
    fn fchmod(&mut self, fd: i32, mode: u32) -> Result<()> {
        self.p.fchmod(fd, mode)
    }
    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: u32) -> Result<()> {
        self.p.fchownat(
            dirfd,
            path,
            id(uid),
            id(gid),
            AtFlags::from_bits_retain(flags),
        )
    }
    fn fchown(&mut self, fd: i32, uid: u32, gid: u32) -> Result<()> {
        self.p.fchown(fd, id(uid), id(gid))
    }
    fn truncate(&mut self, path: &[u8], length: i64) -> Result<()> {
        self.p.truncate(path, length)
    }
    fn ftruncate(&mut self, fd: i32, length: i64) -> Result<()> {
        self.p.ftruncate(fd, length)
    }
    fn openat(&mut self, dirfd: i32, path: &[u8], flags: u32, mode: u32) -> Result<i32> {
        self.p
            .openat(dirfd, path, OpenFlags::from_bits_retain(flags), mode)
    }
    fn openat2(
        &mut self,
        dirfd: i32,
        path: &[u8],
        flags: u64,
        mode: u64,
        resolve: u64,
    ) -> Result<i32> {
        let flags = u32::try_from(flags).map_err(|_| Errno::EINVAL)?;
        self.p.openat2(
            dirfd,
            path,
            OpenFlags::from_bits_retain(flags),
            mode,
            ResolveFlags::from_bits_retain(resolve),
        )
    }
    fn close(&mut self, fd: i32) -> Result<()> {
        self.p.close(fd)
    }
    fn dup(&mut self, fd: i32) -> Result<i32> {
        self.p.dup(fd)
    }
    fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        self.p.read(fd, buf)
    }
    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> Result<usize> {
        self.p.pread(fd, buf, offset)
    }
    fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize> {
        self.p.write(fd, data)
    }
    fn pwrite(&mut self, fd: i32, data: &[u8], offset: i64) -> Result<usize> {
        self.p.pwrite(fd, data, offset)
    }
    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> Result<i64> {
        self.p.lseek(fd, offset, whence)
    }
    fn fsync(&mut self, fd: i32) -> Result<()> {
        self.p.fsync(fd)
    }
    fn getdents(&mut self, fd: i32) -> Result<Vec<Dirent>> {
        self.p.getdents(fd).map(|d| d.into_vec())
    }
    fn chdir(&mut self, path: &[u8]) -> Result<()> {
        self.p.chdir(path)
    }
    fn fchdir(&mut self, fd: i32) -> Result<()> {
        self.p.fchdir(fd)
    }
    fn chroot(&mut self, path: &[u8]) -> Result<()> {
        self.p.chroot(path)
    }
    fn getcwd(&mut self) -> Result<Vec<u8>> {
        self.p.getcwd()
    }
    fn umask(&mut self, mask: u32) -> Result<u32> {
        Ok(self.p.umask(mask))
    }
    fn set_creds(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
        self.p.set_fs_ids(uid, gid, groups);
        Ok(())
    }
    fn setxattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: u32,
        follow: bool,
    ) -> Result<()> {
        self.p.setxattr(
            path,
            name,
            value,
            XattrFlags::from_bits_retain(flags),
            follow,
        )
    }
    fn getxattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<Vec<u8>> {
        self.p.getxattr(path, name, follow)
    }
    fn listxattr(&mut self, path: &[u8], follow: bool) -> Result<Vec<Vec<u8>>> {
        self.p.listxattr(path, follow)
    }
    fn removexattr(&mut self, path: &[u8], name: &[u8], follow: bool) -> Result<()> {
        self.p.removexattr(path, name, follow)
    }
    fn mount(
        &mut self,
        source: &[u8],
        target: &[u8],
        fstype: &[u8],
        flags: u64,
        data: &[u8],
    ) -> Result<()> {
        self.p.mount(
            source,
            target,
            fstype,
            MountFlags::from_bits_retain(flags),
            data,
        )
    }
    fn umount2(&mut self, target: &[u8], flags: u32) -> Result<()> {
        self.p.umount2(target, UmountFlags::from_bits_retain(flags))
    }
    fn pivot_root(&mut self, new_root: &[u8], put_old: &[u8]) -> Result<()> {
        self.p.pivot_root(new_root, put_old)
    }
    fn mountinfo(&mut self) -> Result<Vec<u8>> {
        Ok(self.p.mountinfo())
    }
}
