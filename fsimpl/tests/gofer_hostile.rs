//! The 9P client against a hostile fake server: truncated, oversized,
//! mistagged and mistyped replies, silence, garbage, and a connection closed
//! in the middle of requests. The client must return errors, keep the other
//! requests intact, release its fids, and neither panic nor hang.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tessera_fsimpl::gofer::wire::{self, getattr, Msg, Qid};
use tessera_fsimpl::gofer::{Attr, Client, ClientOptions, Transport};
use tessera_vfs::Errno;

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Req {
    tag: u16,
    ty: u8,
    fid: Option<u32>,
    newfid: Option<u32>,
}

/// What the script does with a request.
type Script = Box<dyn FnMut(&Req, &mut UnixStream) -> bool + Send>;

fn frame(tag: u16, m: &Msg<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(tag, &mut v).unwrap();
    v
}

fn attr_reply(tag: u16) -> Vec<u8> {
    frame(
        tag,
        &Msg::Rgetattr {
            attr: Attr {
                valid: getattr::BASIC,
                mode: 0o100644,
                size: 42,
                ..Attr::default()
            },
        },
    )
}

/// Answers requests the ordinary way (used by scripts for "the rest").
fn normal(r: &Req, out: &mut UnixStream) {
    let qid = Qid {
        ty: 0,
        version: 0,
        path: 7,
    };
    let f = match r.ty {
        wire::msgtype::TATTACH => frame(r.tag, &Msg::Rattach { qid }),
        wire::msgtype::TWALK => frame(
            r.tag,
            &Msg::Rwalk {
                qids: [qid].into_iter().collect(),
            },
        ),
        wire::msgtype::TGETATTR => attr_reply(r.tag),
        wire::msgtype::TCLUNK => frame(r.tag, &Msg::Rclunk),
        wire::msgtype::TFLUSH => frame(r.tag, &Msg::Rflush),
        _ => frame(r.tag, &Msg::Rlerror { ecode: 95 }),
    };
    let _ = out.write_all(&f);
}

/// Starts a fake server that answers Tversion itself (unless `raw_version`)
/// and hands every other request to `script`; returns the client-side
/// transport and a log of what the server saw. The script returns false to
/// close the connection.
fn fake(mut script: Script, log: mpsc::Sender<Req>) -> (Transport, thread::JoinHandle<()>) {
    let (a, b) = UnixStream::pair().unwrap();
    let h = thread::spawn(move || {
        let mut out = b.try_clone().unwrap();
        let mut input = BufReader::new(b);
        loop {
            let mut hdr = [0u8; 4];
            if input.read_exact(&mut hdr).is_err() {
                return;
            }
            let size = u32::from_le_bytes(hdr) as usize;
            let mut f = hdr.to_vec();
            f.resize(size, 0);
            if input.read_exact(&mut f[4..]).is_err() {
                return;
            }
            let Ok((tag, msg)) = wire::decode(&f, 1 << 24) else {
                return;
            };
            let (fid, newfid) = match &msg {
                Msg::Twalk { fid, newfid, .. } => (Some(*fid), Some(*newfid)),
                Msg::Tattach { fid, .. } | Msg::Tclunk { fid } | Msg::Tgetattr { fid, .. } => {
                    (Some(*fid), None)
                }
                _ => (None, None),
            };
            let req = Req {
                tag,
                ty: msg.type_number(),
                fid,
                newfid,
            };
            let _ = log.send(req.clone());
            if let Msg::Tversion { msize, .. } = msg {
                let _ = out.write_all(&frame(
                    tag,
                    &Msg::Rversion {
                        msize: msize.min(65536),
                        version: wire::VERSION_9P2000L,
                    },
                ));
                continue;
            }
            if !script(&req, &mut out) {
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    });
    (Transport::from_unix_stream(a).unwrap(), h)
}

fn opts(timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        msize: 65536,
        timeout: Some(Duration::from_millis(timeout_ms)),
    }
}

/// Connects and attaches, returning the client, the root fid and the log.
fn start(
    script: Script,
    timeout_ms: u64,
) -> (Arc<Client>, tessera_fsimpl::gofer::Fid, mpsc::Receiver<Req>) {
    let (tx, rx) = mpsc::channel();
    let (t, _h) = fake(script, tx);
    let c = Arc::new(Client::connect(t, opts(timeout_ms)).unwrap());
    let (root, _) = c.attach(b"u", b"/", 0).unwrap();
    (c, root, rx)
}

#[test]
fn truncated_reply_fails_only_its_request() {
    let mut n = 0;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                n += 1;
                if n == 1 {
                    // An Rgetattr whose size field cuts the body short.
                    let mut f = attr_reply(r.tag);
                    f.truncate(40);
                    f[..4].copy_from_slice(&40u32.to_le_bytes());
                    let _ = out.write_all(&f);
                    return true;
                }
            }
            normal(r, out);
            true
        }),
        5000,
    );
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert_eq!(c.getattr(&root, getattr::BASIC).unwrap().size, 42);
    assert!(c.is_connected());
}

#[test]
fn oversize_reply_is_skipped_and_the_next_one_is_read() {
    let mut n = 0;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                n += 1;
                if n == 1 {
                    // 100 KiB frame against a 64 KiB msize.
                    let mut f = vec![0u8; 100 * 1024];
                    let len = f.len() as u32;
                    f[..4].copy_from_slice(&len.to_le_bytes());
                    f[4] = wire::msgtype::RGETATTR;
                    f[5..7].copy_from_slice(&r.tag.to_le_bytes());
                    let _ = out.write_all(&f);
                    return true;
                }
            }
            normal(r, out);
            true
        }),
        5000,
    );
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert_eq!(c.getattr(&root, getattr::BASIC).unwrap().size, 42);
}

#[test]
fn mistyped_and_mistagged_replies() {
    let mut n = 0;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                n += 1;
                match n {
                    // Wrong type for the request.
                    1 => {
                        let _ = out.write_all(&frame(r.tag, &Msg::Rclunk));
                        return true;
                    }
                    // A stray reply for a tag nobody uses, then the real one.
                    2 => {
                        let _ = out.write_all(&attr_reply(r.tag.wrapping_add(77)));
                    }
                    // Garbage error codes.
                    3 => {
                        let _ = out.write_all(&frame(r.tag, &Msg::Rlerror { ecode: 0 }));
                        return true;
                    }
                    4 => {
                        let _ = out.write_all(&frame(r.tag, &Msg::Rlerror { ecode: 999_999 }));
                        return true;
                    }
                    5 => {
                        let _ = out.write_all(&frame(r.tag, &Msg::Rlerror { ecode: 2 }));
                        return true;
                    }
                    _ => {}
                }
            }
            if r.ty == wire::msgtype::TWALK {
                // More qids than names.
                let q = Qid::default();
                let _ = out.write_all(&frame(
                    r.tag,
                    &Msg::Rwalk {
                        qids: [q, q, q].into_iter().collect(),
                    },
                ));
                return true;
            }
            normal(r, out);
            true
        }),
        5000,
    );
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert_eq!(c.getattr(&root, getattr::BASIC).unwrap().size, 42);
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::ENOENT));
    assert_eq!(c.walk(&root, &[b"a"]).map(|_| ()), Err(Errno::EIO));
    assert!(c.is_connected());
}

#[test]
fn silent_server_times_out_flushes_and_the_fid_is_clunked_later() {
    let mut walks = 0;
    let (c, root, log) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TWALK {
                walks += 1;
                if walks == 1 {
                    // Say nothing until the client flushes the walk.
                    return true;
                }
            }
            normal(r, out);
            true
        }),
        1000,
    );
    let t0 = Instant::now();
    assert_eq!(c.walk(&root, &[b"slow"]).map(|_| ()), Err(Errno::ETIMEDOUT));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The server saw the walk and then a Tflush for its tag.
    let seen: Vec<Req> = log.try_iter().collect();
    let walk = seen
        .iter()
        .rev()
        .find(|r| r.ty == wire::msgtype::TWALK)
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = seen;
    while !all.iter().any(|r| r.ty == wire::msgtype::TFLUSH) && Instant::now() < deadline {
        all.extend(log.recv_timeout(Duration::from_millis(100)));
    }
    assert!(all.iter().any(|r| r.ty == wire::msgtype::TFLUSH));
    // A later fid allocation or clunk clunks the fid the abandoned walk may
    // have made (once the client has seen the Rflush).
    let newfid = walk.newfid.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (f, _) = c.walk(&root, &[b"fast"]).unwrap();
        c.clunk(f).unwrap();
        all.extend(log.try_iter());
        let clunked = all
            .iter()
            .any(|r| r.ty == wire::msgtype::TCLUNK && r.fid == Some(newfid));
        if clunked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "abandoned fid {newfid} never clunked: {all:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.live_fids(), 1);
}

#[test]
fn closed_socket_fails_every_request_in_flight() {
    let (tx, started) = mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    let mut pending = 0;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                pending += 1;
                let _ = tx.lock().unwrap().send(());
                // Hold four requests, then hang up on all of them.
                return pending < 4;
            }
            normal(r, out);
            true
        }),
        60_000,
    );
    let root = Arc::new(root);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (c, root) = (c.clone(), root.clone());
            thread::spawn(move || c.getattr(&root, getattr::BASIC))
        })
        .collect();
    for _ in 0..4 {
        started.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let t0 = Instant::now();
    for h in hs {
        assert_eq!(h.join().unwrap(), Err(Errno::EIO));
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!c.is_connected());
    assert_eq!(c.walk(&root, &[b"x"]).map(|_| ()), Err(Errno::EIO));
    c.close();
    assert_eq!(c.live_fids(), 0);
}

#[test]
fn garbage_header_ends_the_connection_cleanly() {
    let (c, root, _) = start(
        Box::new(|r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                let _ = out.write_all(&[3, 0, 0, 0, 1, 2, 3]);
                return true;
            }
            normal(r, out);
            true
        }),
        5000,
    );
    assert_eq!(c.getattr(&root, getattr::BASIC), Err(Errno::EIO));
    assert!(!c.is_connected());
}

#[test]
fn hostile_version_replies() {
    fn version_with(reply: Vec<u8>) -> Result<Client, Errno> {
        let (a, b) = UnixStream::pair().unwrap();
        let h = thread::spawn(move || {
            let mut b = b;
            let mut buf = [0u8; 64];
            let _ = b.read(&mut buf);
            let _ = b.write_all(&reply);
            // Keep the socket open until the client gives up.
            let _ = b.read(&mut buf);
        });
        let r = Client::connect(Transport::from_unix_stream(a).unwrap(), opts(5000));
        if let Ok(c) = &r {
            c.close();
        }
        h.join().unwrap();
        r
    }
    let v = |msize, version: &'static [u8]| frame(wire::NOTAG, &Msg::Rversion { msize, version });
    assert_eq!(
        version_with(v(65536, b"unknown")).map(|_| ()),
        Err(Errno::EPROTONOSUPPORT)
    );
    assert_eq!(
        version_with(v(100, b"9P2000.L")).map(|_| ()),
        Err(Errno::EIO)
    );
    assert_eq!(
        version_with(frame(wire::NOTAG, &Msg::Rlerror { ecode: 22 })).map(|_| ()),
        Err(Errno::EINVAL)
    );
    // A server that offers more than we asked for gets what we asked for.
    let c = version_with(v(1 << 30, b"9P2000.L")).unwrap();
    assert_eq!(c.msize(), 65536);
    // Silence: the connect times out rather than hanging.
    let (a, b) = UnixStream::pair().unwrap();
    let t0 = Instant::now();
    let r = Client::connect(Transport::from_unix_stream(a).unwrap(), opts(300));
    assert_eq!(r.map(|_| ()), Err(Errno::ETIMEDOUT));
    assert!(t0.elapsed() < Duration::from_secs(3));
    drop(b);
}

#[test]
fn random_replies_never_panic_or_hang() {
    // Replies made of deterministic noise with a plausible header.
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TGETATTR {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let len = 7 + (s % 200) as usize;
                let mut f: Vec<u8> = (0..len).map(|i| (s >> (i % 8 * 8)) as u8).collect();
                f[..4].copy_from_slice(&(len as u32).to_le_bytes());
                f[5..7].copy_from_slice(&r.tag.to_le_bytes());
                if s.is_multiple_of(3) {
                    f[4] = wire::msgtype::RGETATTR;
                }
                let _ = out.write_all(&f);
                return true;
            }
            normal(r, out);
            true
        }),
        2000,
    );
    for _ in 0..300 {
        let r = c.getattr(&root, getattr::BASIC);
        assert!(matches!(r, Ok(_) | Err(_)));
    }
    assert!(c.is_connected());
}

#[test]
fn lent_reads_survive_lying_counts() {
    let mut n = 0;
    let (c, root, _) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TREAD {
                n += 1;
                let data = vec![9u8; 20_000];
                let mut f = frame(r.tag, &Msg::Rread { data: &data });
                match n {
                    // count says more than the frame holds.
                    1 => f[7..11].copy_from_slice(&30_000u32.to_le_bytes()),
                    // count says less than the frame holds: the decoder
                    // ignores trailing bytes, so this reads 10 000.
                    2 => f[7..11].copy_from_slice(&10_000u32.to_le_bytes()),
                    // More data than was asked for (the buffer is 16 KiB).
                    3 => {}
                    // A fair reply.
                    _ => {
                        f = frame(
                            r.tag,
                            &Msg::Rread {
                                data: &data[..16_384],
                            },
                        )
                    }
                }
                let _ = out.write_all(&f);
                return true;
            }
            normal(r, out);
            true
        }),
        5000,
    );
    let mut buf = vec![0u8; 16_384];
    assert_eq!(c.read_vec(&root, 0, &mut buf), Err(Errno::EIO));
    assert_eq!(c.read_vec(&root, 0, &mut buf), Ok(10_000));
    assert_eq!(c.read_vec(&root, 0, &mut buf), Err(Errno::EIO));
    assert_eq!(c.read_vec(&root, 0, &mut buf), Ok(16_384));
    assert!(buf.iter().all(|&b| b == 9));
    assert!(c.is_connected());
}

#[test]
fn frames_split_across_read_timeouts_are_resumed() {
    // Replies arrive in pieces with pauses longer than the client's read
    // tick, so whoever reads times out mid-frame and must resume it.
    let (c, root, _) = start(
        Box::new(|r, out| {
            let f = match r.ty {
                wire::msgtype::TGETATTR => attr_reply(r.tag),
                wire::msgtype::TREAD => frame(
                    r.tag,
                    &Msg::Rread {
                        data: &[4u8; 20_000],
                    },
                ),
                _ => {
                    normal(r, out);
                    return true;
                }
            };
            let cut = (f.len() * 3 / 4).max(9);
            for piece in [&f[..3], &f[3..9], &f[9..cut], &f[cut..]] {
                let _ = out.write_all(piece);
                thread::sleep(Duration::from_millis(45));
            }
            true
        }),
        5000,
    );
    assert_eq!(c.getattr(&root, getattr::BASIC).unwrap().size, 42);
    let mut buf = vec![0u8; 20_000];
    assert_eq!(c.read_vec(&root, 0, &mut buf).unwrap(), 20_000);
    assert!(buf.iter().all(|&b| b == 4));
    let mut small = [0u8; 20_000];
    assert_eq!(c.read(&root, 0, &mut small).unwrap(), 20_000);
    assert!(c.is_connected());
}

#[test]
fn reply_that_beats_rflush_completes_the_abandoned_walk() {
    // The walk is answered only when the flush comes, and before the
    // Rflush: by the protocol the walk then happened, so its fid exists on
    // the server and must be clunked, and both tags must come back.
    let (mut held, mut walks): (Option<u16>, u32) = (None, 0);
    let (c, root, log) = start(
        Box::new(move |r, out| {
            if r.ty == wire::msgtype::TWALK {
                walks += 1;
                if walks == 1 {
                    held = Some(r.tag);
                    return true;
                }
            }
            if r.ty == wire::msgtype::TFLUSH {
                if let Some(tag) = held.take() {
                    let q = Qid::default();
                    let _ = out.write_all(&frame(
                        tag,
                        &Msg::Rwalk {
                            qids: [q].into_iter().collect(),
                        },
                    ));
                }
                let _ = out.write_all(&frame(r.tag, &Msg::Rflush));
                return true;
            }
            normal(r, out);
            true
        }),
        300,
    );
    assert_eq!(c.walk(&root, &[b"slow"]).map(|_| ()), Err(Errno::ETIMEDOUT));
    let mut all: Vec<Req> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let abandoned = loop {
        all.extend(log.try_iter());
        if let Some(w) = all.iter().find(|r| r.ty == wire::msgtype::TWALK) {
            break w.newfid.unwrap();
        }
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    };
    // Keep working: tags are reused, and the abandoned fid gets clunked.
    loop {
        for _ in 0..20 {
            let (f, _) = c.walk(&root, &[b"x"]).unwrap();
            assert_eq!(c.getattr(&f, getattr::BASIC).unwrap().size, 42);
            c.clunk(f).unwrap();
        }
        all.extend(log.try_iter());
        if all
            .iter()
            .any(|r| r.ty == wire::msgtype::TCLUNK && r.fid == Some(abandoned))
        {
            break;
        }
        assert!(Instant::now() < deadline, "fid {abandoned} never clunked");
    }
    assert_eq!(c.live_fids(), 1);
}
