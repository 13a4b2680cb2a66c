//! A small 9P2000.L server over an in-memory tree, answering at once.
//!
//! It exists so that the client can be tested and measured without a
//! server process: the benchmark compares the client against a raw socket
//! ping-pong through this server's I/O pattern, and the behaviour tests use
//! it for operations diod lacks (Trenameat, Tunlinkat). It implements
//! version, attach, walk, getattr, setattr (mode, size), lopen, lcreate,
//! read, write, readdir, mkdir, symlink, mknod, readlink, rename, renameat,
//! unlinkat, remove, statfs, fsync, flush and clunk; everything else gets
//! `EOPNOTSUPP`. Permissions are not checked.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;
use smallvec::SmallVec;
use tessera_vfs::Errno;

use super::transport::Transport;
use super::wire::{
    decode, encode_dirent, getattr, setattr, Attr, Dirent, Msg, Qid, StatFs, HEADER_SIZE, QTDIR,
    QTFILE, QTSYMLINK,
};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

enum Kind {
    Dir(BTreeMap<Vec<u8>, u64>),
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Other,
}

struct Node {
    kind: Kind,
    mode: u32,
    parent: u64,
    nlink: u64,
}

struct Tree {
    nodes: HashMap<u64, Node>,
    next: u64,
}

const ROOT: u64 = 1;

impl Tree {
    fn qid(&self, id: u64) -> Qid {
        let ty = match self.nodes.get(&id).map(|n| &n.kind) {
            Some(Kind::Dir(_)) => QTDIR,
            Some(Kind::Symlink(_)) => QTSYMLINK,
            _ => QTFILE,
        };
        Qid {
            ty,
            version: 0,
            path: id,
        }
    }

    fn dir(&mut self, id: u64) -> Result<&mut BTreeMap<Vec<u8>, u64>, Errno> {
        match self.nodes.get_mut(&id).map(|n| &mut n.kind) {
            Some(Kind::Dir(d)) => Ok(d),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ESTALE),
        }
    }

    fn create(&mut self, dir: u64, name: &[u8], kind: Kind, mode: u32) -> Result<u64, Errno> {
        let id = self.next;
        let d = self.dir(dir)?;
        if d.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        d.insert(name.to_vec(), id);
        self.next += 1;
        self.nodes.insert(
            id,
            Node {
                kind,
                mode,
                parent: dir,
                nlink: 1,
            },
        );
        Ok(id)
    }

    fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<u64, Errno> {
        self.dir(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn unlink(&mut self, dir: u64, name: &[u8], rmdir: bool) -> Result<(), Errno> {
        let id = self.lookup(dir, name)?;
        match self.nodes.get(&id).map(|n| &n.kind) {
            Some(Kind::Dir(d)) if !rmdir => {
                let _ = d;
                return Err(Errno::EISDIR);
            }
            Some(Kind::Dir(d)) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
            Some(Kind::Dir(_)) | None => {}
            Some(_) if rmdir => return Err(Errno::ENOTDIR),
            Some(_) => {}
        }
        self.dir(dir)?.remove(name);
        self.nodes.remove(&id);
        Ok(())
    }

    fn rename(&mut self, od: u64, on: &[u8], nd: u64, nn: &[u8]) -> Result<(), Errno> {
        let id = self.lookup(od, on)?;
        self.dir(nd)?;
        if let Ok(old) = self.lookup(nd, nn) {
            if old == id {
                return Ok(());
            }
            let rmdir = matches!(self.nodes.get(&old).map(|n| &n.kind), Some(Kind::Dir(_)));
            self.unlink(nd, nn, rmdir)?;
        }
        self.dir(od)?.remove(on);
        self.dir(nd)?.insert(nn.to_vec(), id);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.parent = nd;
        }
        Ok(())
    }
}

/// An in-memory 9P2000.L server; clone it to serve the same tree on several
/// connections.
#[derive(Clone)]
pub struct MemServer {
    tree: Arc<Mutex<Tree>>,
}

impl Default for MemServer {
    fn default() -> Self {
        MemServer::new()
    }
}

impl std::fmt::Debug for MemServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemServer")
    }
}

struct FidState {
    node: u64,
}

impl MemServer {
    /// A server whose tree is an empty root directory.
    pub fn new() -> MemServer {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir(BTreeMap::new()),
                mode: S_IFDIR | 0o755,
                parent: ROOT,
                nlink: 2,
            },
        );
        MemServer {
            tree: Arc::new(Mutex::new(Tree { nodes, next: 2 })),
        }
    }

    /// Adds a regular file at the root.
    pub fn add_file(&self, name: &str, data: Vec<u8>) -> Result<(), Errno> {
        self.tree
            .lock()
            .create(ROOT, name.as_bytes(), Kind::File(data), S_IFREG | 0o644)
            .map(|_| ())
    }

    /// The contents of the regular file `name` at the root.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let mut t = self.tree.lock();
        let id = t.lookup(ROOT, name.as_bytes()).ok()?;
        match &t.nodes.get(&id)?.kind {
            Kind::File(d) => Some(d.clone()),
            _ => None,
        }
    }

    /// Serves one connection on its own thread until the peer closes it.
    pub fn serve(&self, stream: UnixStream) -> thread::JoinHandle<()> {
        let me = self.clone();
        thread::spawn(move || {
            if let Err(e) = me.serve_conn(stream) {
                log::debug!("memserver: connection ended: {e}");
            }
        })
    }

    /// Makes a socketpair, serves one end and returns a transport on the other.
    pub fn connect(&self) -> io::Result<(Transport, thread::JoinHandle<()>)> {
        let (a, b) = UnixStream::pair()?;
        let h = self.serve(b);
        Ok((Transport::from_unix_stream(a)?, h))
    }

    fn serve_conn(&self, stream: UnixStream) -> io::Result<()> {
        let mut out = stream.try_clone()?;
        let mut input = BufReader::with_capacity(64 * 1024, stream);
        let mut msize: u32 = 8192;
        let mut fids: HashMap<u32, FidState> = HashMap::new();
        let mut frame = Vec::new();
        let mut reply = Vec::new();
        loop {
            let mut hdr = [0u8; 4];
            input.read_exact(&mut hdr)?;
            let size = u32::from_le_bytes(hdr) as usize;
            if !(HEADER_SIZE..=(1 << 24)).contains(&size) {
                return Err(io::ErrorKind::InvalidData.into());
            }
            frame.clear();
            frame.extend_from_slice(&hdr);
            frame.resize(HEADER_SIZE, 0);
            input.read_exact(&mut frame[4..])?;
            if frame[4] == super::wire::msgtype::TWRITE && size >= 23 {
                // Receive the data straight into the file, as a server that
                // answers from memory would, rather than through a frame copy.
                let tag = u16::from_le_bytes([frame[5], frame[6]]);
                let mut h = [0u8; 16];
                input.read_exact(&mut h)?;
                let fid = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                let mut off = [0u8; 8];
                off.copy_from_slice(&h[4..12]);
                let offset = u64::from_le_bytes(off);
                let count = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
                if count != size - 23 {
                    return Err(io::ErrorKind::InvalidData.into());
                }
                let r = self.write_in_place(&mut input, &fids, fid, offset, count)?;
                reply.clear();
                let m = match r {
                    Ok(n) => Msg::Rwrite { count: n },
                    Err(e) => Msg::Rlerror {
                        ecode: e.raw() as u32,
                    },
                };
                let _ = m.encode(tag, &mut reply);
                out.write_all(&reply)?;
                continue;
            }
            frame.resize(size, 0);
            input.read_exact(&mut frame[HEADER_SIZE..])?;
            let Ok((tag, msg)) = decode(&frame, 1 << 24) else {
                return Err(io::ErrorKind::InvalidData.into());
            };
            reply.clear();
            let mut tree = self.tree.lock();
            let r = handle(&mut tree, &mut fids, &mut msize, &msg);
            let tail: &[u8] = match &r {
                Ok(Reply::Msg(m)) => m.encode_head(tag, &mut reply).unwrap_or(&[]),
                Ok(Reply::Read(node, off, count)) => {
                    let data: &[u8] = match tree.nodes.get(node).map(|n| &n.kind) {
                        Some(Kind::File(d)) => {
                            let s = (*off).min(d.len());
                            &d[s..d.len().min(s + count)]
                        }
                        _ => &[],
                    };
                    (Msg::Rread { data })
                        .encode_head(tag, &mut reply)
                        .unwrap_or(&[])
                }
                Ok(Reply::Owned(bytes)) => {
                    reply.extend_from_slice(bytes);
                    reply[5..7].copy_from_slice(&tag.to_le_bytes());
                    &[]
                }
                Err(e) => {
                    let _ = (Msg::Rlerror {
                        ecode: e.raw() as u32,
                    })
                    .encode(tag, &mut reply);
                    &[]
                }
            };
            let mut bufs = [IoSlice::new(&reply), IoSlice::new(tail)];
            let mut bufs: &mut [IoSlice<'_>] = &mut bufs;
            while !bufs.is_empty() && bufs.iter().any(|b| !b.is_empty()) {
                let n = out.write_vectored(bufs)?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut bufs, n);
            }
        }
    }
}

impl MemServer {
    /// Reads `count` bytes of Twrite data from `input` into the file `fid`
    /// names; the outer error is the connection's, the inner one the reply's.
    fn write_in_place(
        &self,
        input: &mut impl Read,
        fids: &HashMap<u32, FidState>,
        fid: u32,
        offset: u64,
        count: usize,
    ) -> io::Result<Result<u32, Errno>> {
        let mut tree = self.tree.lock();
        let target = match fids.get(&fid) {
            None => Err(Errno::EBADF),
            Some(f) => match tree.nodes.get_mut(&f.node).map(|n| &mut n.kind) {
                Some(Kind::File(d)) => match usize::try_from(offset) {
                    Ok(off) if off.saturating_add(count) <= 1 << 32 => Ok((d, off)),
                    _ => Err(Errno::EFBIG),
                },
                Some(Kind::Dir(_)) => Err(Errno::EISDIR),
                _ => Err(Errno::EINVAL),
            },
        };
        match target {
            Ok((d, off)) => {
                if d.len() < off + count {
                    d.resize(off + count, 0);
                }
                input.read_exact(&mut d[off..off + count])?;
                Ok(Ok(count as u32))
            }
            Err(e) => {
                drop(tree);
                io::copy(&mut input.take(count as u64), &mut io::sink())?;
                Ok(Err(e))
            }
        }
    }
}

enum Reply {
    Msg(Box<Msg<'static>>),
    /// An Rread of (node, offset, count), sent from the tree without a copy.
    Read(u64, usize, usize),
    /// A whole pre-encoded frame (the tag is patched in).
    Owned(Vec<u8>),
}

fn msg(m: Msg<'static>) -> Reply {
    Reply::Msg(Box::new(m))
}

fn owned(m: Msg<'_>) -> Reply {
    let mut v = Vec::new();
    let _ = m.encode(0, &mut v);
    Reply::Owned(v)
}

fn handle(
    t: &mut Tree,
    fids: &mut HashMap<u32, FidState>,
    msize: &mut u32,
    req: &Msg<'_>,
) -> Result<Reply, Errno> {
    let node = |fids: &HashMap<u32, FidState>, fid: u32| -> Result<u64, Errno> {
        fids.get(&fid).map(|f| f.node).ok_or(Errno::EBADF)
    };
    Ok(match *req {
        Msg::Tversion { msize: m, version } => {
            *msize = m.min(1 << 24);
            fids.clear();
            let v: &'static [u8] = if version == b"9P2000.L" {
                b"9P2000.L"
            } else {
                b"unknown"
            };
            msg(Msg::Rversion {
                msize: *msize,
                version: v,
            })
        }
        Msg::Tattach { fid, .. } => {
            if fids.contains_key(&fid) {
                return Err(Errno::EBADF);
            }
            fids.insert(fid, FidState { node: ROOT });
            msg(Msg::Rattach { qid: t.qid(ROOT) })
        }
        Msg::Tflush { .. } => msg(Msg::Rflush),
        Msg::Twalk {
            fid,
            newfid,
            ref names,
        } => {
            let mut cur = node(fids, fid)?;
            if newfid != fid && fids.contains_key(&newfid) {
                return Err(Errno::EBADF);
            }
            let mut qids = SmallVec::new();
            for (i, n) in names.iter().enumerate() {
                let next = if *n == b".." {
                    t.nodes.get(&cur).map(|n| n.parent).ok_or(Errno::ESTALE)
                } else {
                    t.lookup(cur, n)
                };
                match next {
                    Ok(id) => {
                        cur = id;
                        qids.push(t.qid(id));
                    }
                    Err(e) if i == 0 => return Err(e),
                    Err(_) => return Ok(msg(Msg::Rwalk { qids })),
                }
            }
            fids.insert(newfid, FidState { node: cur });
            msg(Msg::Rwalk { qids })
        }
        Msg::Tclunk { fid } => {
            fids.remove(&fid).ok_or(Errno::EBADF)?;
            msg(Msg::Rclunk)
        }
        Msg::Tremove { fid } => {
            let id = fids.remove(&fid).ok_or(Errno::EBADF)?.node;
            let parent = t.nodes.get(&id).map(|n| n.parent).ok_or(Errno::ESTALE)?;
            let name = t
                .dir(parent)?
                .iter()
                .find(|(_, &v)| v == id)
                .map(|(k, _)| k.clone())
                .ok_or(Errno::ESTALE)?;
            let is_dir = matches!(t.nodes.get(&id).map(|n| &n.kind), Some(Kind::Dir(_)));
            t.unlink(parent, &name, is_dir)?;
            msg(Msg::Rremove)
        }
        Msg::Tgetattr { fid, .. } => {
            let id = node(fids, fid)?;
            let n = t.nodes.get(&id).ok_or(Errno::ESTALE)?;
            let size = match &n.kind {
                Kind::File(d) => d.len() as u64,
                Kind::Symlink(s) => s.len() as u64,
                _ => 0,
            };
            msg(Msg::Rgetattr {
                attr: Attr {
                    valid: getattr::BASIC,
                    qid: t.qid(id),
                    mode: n.mode,
                    nlink: n.nlink,
                    size,
                    blksize: 4096,
                    blocks: size.div_ceil(512),
                    ..Attr::default()
                },
            })
        }
        Msg::Tsetattr { fid, attr } => {
            let id = node(fids, fid)?;
            let n = t.nodes.get_mut(&id).ok_or(Errno::ESTALE)?;
            if attr.valid & setattr::MODE != 0 {
                n.mode = (n.mode & S_IFMT) | (attr.mode & 0o7777);
            }
            if attr.valid & setattr::SIZE != 0 {
                match &mut n.kind {
                    // Files are capped at 4 GiB so a client cannot make us
                    // allocate without bound.
                    Kind::File(d) if attr.size <= 1 << 32 => d.resize(attr.size as usize, 0),
                    Kind::File(_) => return Err(Errno::EFBIG),
                    Kind::Dir(_) => return Err(Errno::EISDIR),
                    _ => return Err(Errno::EINVAL),
                }
            }
            msg(Msg::Rsetattr)
        }
        Msg::Tlopen { fid, .. } => msg(Msg::Rlopen {
            qid: t.qid(node(fids, fid)?),
            iounit: 0,
        }),
        Msg::Tlcreate {
            fid, name, mode, ..
        } => {
            let dir = node(fids, fid)?;
            let id = t.create(dir, name, Kind::File(Vec::new()), S_IFREG | (mode & 0o7777))?;
            fids.insert(fid, FidState { node: id });
            msg(Msg::Rlcreate {
                qid: t.qid(id),
                iounit: 0,
            })
        }
        Msg::Tread { fid, offset, count } => {
            let id = node(fids, fid)?;
            let count = (count as usize).min(msize.saturating_sub(24) as usize);
            match t.nodes.get(&id).map(|n| &n.kind) {
                Some(Kind::File(_)) => {}
                Some(Kind::Dir(_)) => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            Reply::Read(id, usize::try_from(offset).unwrap_or(usize::MAX), count)
        }
        Msg::Twrite { fid, offset, data } => {
            let id = node(fids, fid)?;
            let Some(Kind::File(d)) = t.nodes.get_mut(&id).map(|n| &mut n.kind) else {
                return Err(Errno::EINVAL);
            };
            let off = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
            let end = off.checked_add(data.len()).ok_or(Errno::EFBIG)?;
            if end > 1 << 32 {
                return Err(Errno::EFBIG);
            }
            if d.len() < end {
                d.resize(end, 0);
            }
            d[off..end].copy_from_slice(data);
            msg(Msg::Rwrite {
                count: data.len() as u32,
            })
        }
        Msg::Treaddir { fid, offset, count } => {
            let id = node(fids, fid)?;
            let parent = t.nodes.get(&id).map(|n| n.parent).ok_or(Errno::ESTALE)?;
            let (qself, qparent) = (t.qid(id), t.qid(parent));
            let entries: Vec<(Vec<u8>, Qid)> = t
                .dir(id)?
                .iter()
                .map(|(k, &v)| (k.clone(), v))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(k, v)| (k, t.qid(v)))
                .collect();
            let all = [(b".".to_vec(), qself), (b"..".to_vec(), qparent)]
                .into_iter()
                .chain(entries);
            let mut data = Vec::new();
            for (i, (name, qid)) in all.enumerate().skip(offset as usize) {
                let mut one = Vec::new();
                let ty = if qid.ty & QTDIR != 0 {
                    4
                } else if qid.ty & QTSYMLINK != 0 {
                    10
                } else {
                    8
                };
                let _ = encode_dirent(
                    &Dirent {
                        qid,
                        offset: i as u64 + 1,
                        ty,
                        name: &name,
                    },
                    &mut one,
                );
                if data.len() + one.len() > count as usize {
                    break;
                }
                data.extend_from_slice(&one);
            }
            owned(Msg::Rreaddir { data: &data })
        }
        Msg::Tmkdir {
            dfid, name, mode, ..
        } => {
            let dir = node(fids, dfid)?;
            let id = t.create(
                dir,
                name,
                Kind::Dir(BTreeMap::new()),
                S_IFDIR | (mode & 0o7777),
            )?;
            msg(Msg::Rmkdir { qid: t.qid(id) })
        }
        Msg::Tsymlink {
            fid, name, target, ..
        } => {
            let dir = node(fids, fid)?;
            let id = t.create(dir, name, Kind::Symlink(target.to_vec()), S_IFLNK | 0o777)?;
            msg(Msg::Rsymlink { qid: t.qid(id) })
        }
        Msg::Tmknod {
            dfid, name, mode, ..
        } => {
            let dir = node(fids, dfid)?;
            let id = t.create(dir, name, Kind::Other, mode)?;
            msg(Msg::Rmknod { qid: t.qid(id) })
        }
        Msg::Treadlink { fid } => {
            let id = node(fids, fid)?;
            match t.nodes.get(&id).map(|n| &n.kind) {
                Some(Kind::Symlink(s)) => owned(Msg::Rreadlink { target: s }),
                _ => return Err(Errno::EINVAL),
            }
        }
        Msg::Trename { fid, dfid, name } => {
            let id = node(fids, fid)?;
            let nd = node(fids, dfid)?;
            let parent = t.nodes.get(&id).map(|n| n.parent).ok_or(Errno::ESTALE)?;
            let old = t
                .dir(parent)?
                .iter()
                .find(|(_, &v)| v == id)
                .map(|(k, _)| k.clone())
                .ok_or(Errno::ESTALE)?;
            t.rename(parent, &old, nd, name)?;
            msg(Msg::Rrename)
        }
        Msg::Trenameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => {
            let (od, nd) = (node(fids, olddirfid)?, node(fids, newdirfid)?);
            t.rename(od, oldname, nd, newname)?;
            msg(Msg::Rrenameat)
        }
        Msg::Tunlinkat {
            dirfid,
            name,
            flags,
        } => {
            let dir = node(fids, dirfid)?;
            t.unlink(dir, name, flags & 0x200 != 0)?;
            msg(Msg::Runlinkat)
        }
        Msg::Tstatfs { fid } => {
            node(fids, fid)?;
            msg(Msg::Rstatfs {
                statfs: StatFs {
                    ty: 0x0102_1997,
                    bsize: 4096,
                    namelen: 255,
                    files: t.nodes.len() as u64,
                    ..StatFs::default()
                },
            })
        }
        Msg::Tfsync { fid, .. } => {
            node(fids, fid)?;
            msg(Msg::Rfsync)
        }
        _ => return Err(Errno::EOPNOTSUPP),
    })
}
