//! The 9P client against the in-process memory server: every operation the
//! gofer filesystem needs, concurrency on one connection, fid recycling and
//! shutdown.

use std::sync::Arc;
use std::thread;

use tessera_fsimpl::gofer::wire::{getattr, setattr, NONUNAME};
use tessera_fsimpl::gofer::{Client, ClientOptions, MemServer, SetAttr, AT_REMOVEDIR};
use tessera_vfs::Errno;

fn setup() -> (MemServer, Client, thread::JoinHandle<()>) {
    let srv = MemServer::new();
    srv.add_file("hello", b"hello world".to_vec()).unwrap();
    let (t, h) = srv.connect().unwrap();
    let c = Client::connect(t, ClientOptions::default()).unwrap();
    (srv, c, h)
}

#[test]
fn basic_operations() {
    let (srv, c, h) = setup();
    let (root, rq) = c.attach(b"root", b"/", NONUNAME).unwrap();
    assert!(rq.is_dir());
    let (f, qids) = c.walk(&root, &[b"hello"]).unwrap();
    assert_eq!(qids.len(), 1);
    assert!(!qids[0].is_dir());
    let a = c.getattr(&f, getattr::BASIC).unwrap();
    assert_eq!(a.size, 11);
    c.lopen(&f, 0).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(c.read(&f, 6, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    c.clunk(f).unwrap();

    // Create, write, truncate.
    let (d, _) = c.walk(&root, &[]).unwrap();
    c.lcreate(&d, b"new", 0o2, 0o644, 0).unwrap();
    assert_eq!(c.write(&d, 0, b"abcdef").unwrap(), 6);
    let sa = SetAttr {
        valid: setattr::SIZE,
        size: 3,
        ..SetAttr::default()
    };
    c.setattr(&d, &sa).unwrap();
    c.fsync(&d, false).unwrap();
    c.clunk(d).unwrap();
    assert_eq!(srv.file("new").unwrap(), b"abc");

    // Directories, symlinks, readdir.
    c.mkdir(&root, b"dir", 0o755, 0).unwrap();
    assert_eq!(c.mkdir(&root, b"dir", 0o755, 0), Err(Errno::EEXIST));
    c.symlink(&root, b"ln", b"dir/x", 0).unwrap();
    let (l, _) = c.walk(&root, &[b"ln"]).unwrap();
    assert_eq!(c.readlink(&l).unwrap(), b"dir/x");
    c.clunk(l).unwrap();
    let (rd, _) = c.walk(&root, &[]).unwrap();
    c.lopen(&rd, 0).unwrap();
    let names: Vec<Vec<u8>> = c
        .readdir(&rd, 0, 4096)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![
            b".".to_vec(),
            b"..".to_vec(),
            b"dir".to_vec(),
            b"hello".to_vec(),
            b"ln".to_vec(),
            b"new".to_vec()
        ]
    );
    c.clunk(rd).unwrap();

    // Renameat and unlinkat, natively supported here.
    c.renameat(&root, b"new", &root, b"renamed").unwrap();
    assert!(srv.file("renamed").is_some());
    assert_eq!(c.unlinkat(&root, b"dir", 0), Err(Errno::EISDIR));
    assert_eq!(
        c.unlinkat(&root, b"renamed", AT_REMOVEDIR),
        Err(Errno::ENOTDIR)
    );
    c.unlinkat(&root, b"dir", AT_REMOVEDIR).unwrap();
    c.unlinkat(&root, b"renamed", 0).unwrap();
    assert_eq!(c.walk(&root, &[b"renamed"]).map(|_| ()), Err(Errno::ENOENT));
    assert_eq!(c.statfs(&root).unwrap().namelen, 255);

    c.clunk(root).unwrap();
    assert_eq!(c.live_fids(), 0);
    drop(c);
    h.join().unwrap();
}

#[test]
fn dotdot_and_slashes_are_never_sent() {
    let (_srv, c, _h) = setup();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    for bad in [&b".."[..], b".", b"a/b", b"", b"x\0y"] {
        assert_eq!(c.walk(&root, &[bad]).map(|_| ()), Err(Errno::EINVAL));
        assert_eq!(c.mkdir(&root, bad, 0o755, 0), Err(Errno::EINVAL));
        assert_eq!(c.unlinkat(&root, bad, 0), Err(Errno::EINVAL));
        assert_eq!(c.renameat(&root, b"hello", &root, bad), Err(Errno::EINVAL));
    }
    let long = vec![b'a'; 256];
    assert_eq!(
        c.walk(&root, &[&long[..]]).map(|_| ()),
        Err(Errno::ENAMETOOLONG)
    );
    // Only the root fid is live: no refused call leaked one.
    assert_eq!(c.live_fids(), 1);
}

#[test]
fn walks_longer_than_sixteen_names_are_chained() {
    let (_srv, c, _h) = setup();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let (mut d, _) = c.walk(&root, &[]).unwrap();
    for _ in 0..20 {
        c.mkdir(&d, b"d", 0o755, 0).unwrap();
        let (n, _) = c.walk(&d, &[b"d"]).unwrap();
        c.clunk(d).unwrap();
        d = n;
    }
    c.clunk(d).unwrap();
    let names: Vec<&[u8]> = vec![&b"d"[..]; 20];
    let (deep, qids) = c.walk(&root, &names).unwrap();
    assert_eq!(qids.len(), 20);
    c.clunk(deep).unwrap();
    let mut bad = names.clone();
    bad[18] = b"missing";
    assert_eq!(c.walk(&root, &bad).map(|_| ()), Err(Errno::ENOENT));
    assert_eq!(c.live_fids(), 1);
}

#[test]
fn fid_numbers_are_recycled() {
    let (_srv, c, _h) = setup();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let (f, _) = c.walk(&root, &[b"hello"]).unwrap();
        seen.insert(f.number());
        c.clunk(f).unwrap();
    }
    assert_eq!(seen.len(), 1, "a clunked fid number is reused");
}

#[test]
fn many_threads_share_one_connection() {
    let (srv, c, _h) = setup();
    let c = Arc::new(c);
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let root = Arc::new(root);
    let mut hs = Vec::new();
    for t in 0..8u8 {
        let (c, root) = (c.clone(), root.clone());
        hs.push(thread::spawn(move || {
            let name = format!("f{t}");
            let (f, _) = c.walk(&root, &[]).unwrap();
            c.lcreate(&f, name.as_bytes(), 2, 0o644, 0).unwrap();
            let data: Vec<u8> = (0..10_000u32).map(|i| (i as u8) ^ t).collect();
            for round in 0..50u64 {
                assert_eq!(c.write(&f, round * 7, &data).unwrap(), data.len());
                let a = c.getattr(&f, getattr::SIZE).unwrap();
                assert!(a.size >= round * 7 + data.len() as u64);
                let mut back = vec![0u8; data.len()];
                assert_eq!(c.read(&f, round * 7, &mut back).unwrap(), data.len());
                assert_eq!(back, data);
            }
            c.clunk(f).unwrap();
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(srv.file("f3").unwrap().len(), 49 * 7 + 10_000);
}

#[test]
fn reads_and_writes_split_at_msize() {
    let srv = MemServer::new();
    let (t, _h) = srv.connect().unwrap();
    let c = Client::connect(
        t,
        ClientOptions {
            msize: 8192,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(c.msize(), 8192);
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let (f, _) = c.walk(&root, &[]).unwrap();
    c.lcreate(&f, b"big", 2, 0o644, 0).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write(&f, 0, &data).unwrap(), data.len());
    let mut back = vec![0u8; 120_000];
    assert_eq!(c.read(&f, 0, &mut back).unwrap(), data.len());
    assert_eq!(&back[..data.len()], &data[..]);
}

#[test]
fn close_clunks_every_fid_and_ends_the_connection() {
    let (_srv, c, h) = setup();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let held: Vec<_> = (0..5)
        .map(|_| c.walk(&root, &[b"hello"]).unwrap().0)
        .collect();
    assert_eq!(c.live_fids(), 6);
    c.close();
    assert_eq!(c.live_fids(), 0);
    assert!(!c.is_connected());
    assert_eq!(c.getattr(&held[0], getattr::BASIC), Err(Errno::EIO));
    // The server saw the connection end.
    h.join().unwrap();
}

#[test]
fn one_thread_keeps_many_requests_in_flight() {
    let (_srv, c, _h) = setup();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let (f, _) = c.walk(&root, &[b"hello"]).unwrap();
    for _ in 0..50 {
        let pending: Vec<_> = (0..8)
            .map(|_| c.getattr_start(&f, getattr::SIZE).unwrap())
            .collect();
        // Abandon one without waiting: its reply is discarded when it comes.
        let mut it = pending.into_iter();
        drop(it.next());
        for p in it {
            assert_eq!(p.wait().unwrap().size, 11);
        }
    }
    // Abandoned tags came back: the connection still works and is not wedged.
    assert_eq!(c.getattr(&f, getattr::SIZE).unwrap().size, 11);
    c.clunk(f).unwrap();
}

#[test]
fn read_vec_receives_into_the_callers_buffer() {
    let srv = MemServer::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    srv.add_file("big", data.clone()).unwrap();
    let (t, _h) = srv.connect().unwrap();
    let c = Client::connect(t, ClientOptions::default()).unwrap();
    let (root, _) = c.attach(b"", b"/", 0).unwrap();
    let (f, _) = c.walk(&root, &[b"big"]).unwrap();
    c.lopen(&f, 0).unwrap();
    let mut buf = vec![0u8; 100_000];
    assert_eq!(c.read_vec(&f, 1000, &mut buf).unwrap(), 100_000);
    assert_eq!(&buf[..], &data[1000..101_000]);
    // A short read at the end of the file.
    assert_eq!(c.read_vec(&f, 250_000, &mut buf).unwrap(), 50_000);
    assert_eq!(&buf[..50_000], &data[250_000..]);
    assert_eq!(buf.len(), 100_000);
    // Past the end, and a read too big for one message (falls back).
    assert_eq!(c.read_vec(&f, 400_000, &mut buf).unwrap(), 0);
    let mut huge = vec![0u8; 2 << 20];
    assert_eq!(c.read_vec(&f, 0, &mut huge).unwrap(), data.len());
    assert_eq!(&huge[..data.len()], &data[..]);
    // An error reply leaves the buffer usable.
    let (d, _) = c.walk(&root, &[]).unwrap();
    assert_eq!(c.read_vec(&d, 0, &mut buf), Err(Errno::EISDIR));
    assert_eq!(buf.len(), 100_000);
}

#[test]
fn mount_options_lead_to_a_working_connection() {
    use std::os::fd::IntoRawFd;
    use tessera_fsimpl::gofer::{MountOptions, Transport};
    let srv = MemServer::new();
    srv.add_file("hello", b"hi".to_vec()).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let _h = srv.serve(theirs);
    let fd = ours.into_raw_fd();
    let o =
        MountOptions::parse("none", &format!("trans=fd,rfdno={fd},wfdno={fd},aname=/")).unwrap();
    // SAFETY: `fd` came from into_raw_fd just above and nothing else owns it.
    let t = unsafe { Transport::connect(&o.transport) }.unwrap();
    let c = Client::connect(t, ClientOptions::default()).unwrap();
    let (root, _) = c.attach(o.uname.as_bytes(), o.aname.as_bytes(), 0).unwrap();
    let (f, _) = c.walk(&root, &[b"hello"]).unwrap();
    assert_eq!(c.getattr(&f, getattr::SIZE).unwrap().size, 2);
}
