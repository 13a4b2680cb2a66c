//! A multiplexed 9P2000.L client: many requests from many threads in flight
//! on one connection, one reader at a time handing replies to their callers.
//!
//! # How a request travels
//!
//! A caller takes a free tag, encodes its T-message, writes the frame under
//! the writer lock (held for that one write only) and waits for the reply.
//! Replies are read by whoever holds the connection's read half: a value
//! kept in the shared state and *taken out* by its reader, so exactly one
//! thread reads at a time and no lock is held while it does.
//!
//! * A caller whose reply has not come, finding the read half free, takes it
//!   and reads for everyone (leader/follower): each frame goes to its tag's
//!   entry and wakes that caller; it stops when its own reply is in, puts
//!   the read half back and wakes one caller that was waiting for it. With
//!   one or a few requests in flight this needs no thread hand-off at all,
//!   which on a small machine is most of the cost of a round trip.
//! * The reader thread takes the read half when no caller has waited for
//!   [`RX_GRACE`] (or when the read half has lain unused for [`RX_TICK`]
//!   while callers wait, a safety net), so that a closed connection or a
//!   late reply is noticed while the client is idle; it hands the read half
//!   over as soon as a caller waits.
//! * Reads time out every [`RX_TICK`] (the socket's read timeout), so a
//!   reading caller also keeps its own deadline, and a frame cut by a
//!   timeout is finished by the next reader. Transports without read
//!   timeouts (pipes) are read by the reader thread alone.
//!
//! Each caller decodes its own frame (decoding runs on the callers' threads)
//! and checks that the reply is the type it asked for.
//!
//! A reply that breaks the protocol fails only the request whose tag it
//! carries, with `EIO`: oversize frames are skipped without being buffered,
//! truncated or mistyped bodies fail their decode, replies to tags not in
//! flight are dropped. Only a frame too short to hold its own header, or the
//! end of the stream, ends the connection; then every waiter gets `EIO`.
//!
//! A caller that gives up (the per-request timeout) sends Tflush and leaves
//! its tag "abandoned" until the server answers either the request or the
//! flush; a fid that the abandoned request may have created is clunked later
//! instead of being reused.
//!
//! # Locking
//!
//! Three locks, never nested except as written: `state` (tags, waiters,
//! the read half when free, connection status), `writer` (the socket's
//! write half; taken with no other lock held, for one frame), `fids` (the
//! fid allocator; leaf). The buffer `pool` is a leaf too. No lock is held
//! while a thread reads the socket or waits for a reply.

use std::collections::HashSet;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use smallvec::SmallVec;
use tessera_vfs::Errno;

use super::transport::Transport;
use super::wire::{
    self, decode, peek_header, Attr, DecodeError, Dirents, Flock, Msg, Qid, SetAttr, StatFs,
    HEADER_SIZE, IOHDRSZ, MAXWELEM, NOFID, NOTAG,
};

type Result<T> = std::result::Result<T, Errno>;

/// The msize we ask for unless told otherwise: a 1 MiB read fits in one message.
pub const DEFAULT_MSIZE: u32 = (1 << 20) + 4096;
/// The smallest msize we accept from a server: enough for any reply header
/// and a full-length name.
pub const MIN_MSIZE: u32 = 4096;
/// Rread replies larger than this go straight into a buffer lent with
/// [`Client::read_vec`]; smaller ones are not worth the extra lock.
const LEND_MIN: usize = 4096;
/// How many Treads one [`Client::read`] keeps in flight when the read is
/// larger than one message.
pub const READ_AHEAD: usize = 8;
/// `AT_REMOVEDIR` for [`Client::unlinkat`].
pub const AT_REMOVEDIR: u32 = 0x200;

/// Tunables for [`Client::connect`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The msize to propose; the server may lower it.
    pub msize: u32,
    /// How long a request may wait for its reply before it is flushed and
    /// fails with `ETIMEDOUT`. `None` waits until the reply or the end of
    /// the connection.
    pub timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            msize: DEFAULT_MSIZE,
            timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// A fid: the client's handle on one file of the server.
///
/// Not `Clone`: give it back with [`Client::clunk`] (or [`Client::remove`]).
/// Fids still held when the client closes are clunked then.
#[derive(Debug)]
pub struct Fid {
    num: u32,
    iounit: AtomicU32,
}

impl Fid {
    /// The fid number on the wire.
    pub fn number(&self) -> u32 {
        self.num
    }
    /// The iounit the server gave when the fid was opened (0: none given).
    pub fn iounit(&self) -> u32 {
        self.iounit.load(Ordering::Relaxed)
    }
}

/// A request in flight whose reply has not been collected: lets one thread
/// keep several requests outstanding on the connection.
///
/// Dropping it without [`Pending::wait`] abandons the request (the reply is
/// discarded when it comes; no Tflush is sent).
pub struct Pending<'c, T> {
    client: &'c Client,
    ticket: Option<Ticket>,
    parse: fn(Msg<'_>) -> Option<T>,
}

impl<T> std::fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("tag", &self.ticket.as_ref().map(|t| t.tag))
            .finish()
    }
}

impl<T> Pending<'_, T> {
    /// Waits for the reply (bounded by the client's timeout).
    ///
    /// # Errors
    ///
    /// As the blocking call would: the server's errno, `EIO` for a broken
    /// reply or connection, `ETIMEDOUT`.
    pub fn wait(mut self) -> Result<T> {
        let Some(t) = self.ticket.take() else {
            return Err(Errno::EIO);
        };
        let parse = self.parse;
        self.client.finish(self.client.shared.wait_reply(t), |m| {
            parse(m).ok_or(Errno::EIO)
        })
    }
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.client.shared.abandon(t);
        }
    }
}

/// One directory entry from [`Client::readdir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's qid.
    pub qid: Qid,
    /// The offset to continue reading after this entry.
    pub offset: u64,
    /// `DT_*` type; 0 if the server does not say.
    pub ty: u8,
    /// The name.
    pub name: Vec<u8>,
}

enum TagState {
    Free,
    Waiting,
    Ready(Result<Vec<u8>>),
    /// The caller left; clunk `fid` (if any) once the server is done with the tag.
    Abandoned {
        fid: Option<u32>,
    },
    /// A Tflush we sent for `oldtag` (generation `gen`); nobody waits on it.
    Flush {
        oldtag: u16,
        gen: u32,
    },
}

struct TagEntry {
    state: TagState,
    gen: u32,
    cv: Arc<Condvar>,
    /// A buffer the caller lent for the data of an Rread, which the reader
    /// fills straight from the socket.
    lend: Option<Vec<u8>>,
    /// How many bytes of `lend` the reply filled.
    lent_count: Option<usize>,
}

impl TagEntry {
    fn new() -> Self {
        TagEntry {
            state: TagState::Free,
            gen: 0,
            cv: Arc::new(Condvar::new()),
            lend: None,
            lent_count: None,
        }
    }
}

struct State {
    tags: Vec<TagEntry>,
    free_tags: Vec<u16>,
    /// Tversion's entry (tag NOTAG).
    notag: TagEntry,
    dead: bool,
    /// Fids whose server state is unknown after an abandoned request.
    to_clunk: Vec<u32>,
    /// The read half, when nobody is reading it: whoever takes it is the
    /// one reader until it puts it back.
    rx: Option<FrameReader>,
    /// Callers parked until the read half comes back (their tags).
    wanting: Vec<u16>,
    /// Callers inside a wait for their reply.
    callers: usize,
    /// When `callers` last dropped to zero.
    idle_since: Instant,
    /// When `rx` was last put back.
    rx_since: Instant,
}

impl State {
    fn entry_ready(&self, tag: u16) -> bool {
        let e = if tag == NOTAG {
            Some(&self.notag)
        } else {
            self.tags.get(tag as usize)
        };
        e.is_some_and(|e| matches!(e.state, TagState::Ready(_)))
    }

    fn entry(&mut self, tag: u16) -> Option<&mut TagEntry> {
        if tag == NOTAG {
            Some(&mut self.notag)
        } else {
            self.tags.get_mut(tag as usize)
        }
    }

    fn release(&mut self, tag: u16) {
        if let Some(e) = self.entry(tag) {
            e.state = TagState::Free;
            e.lend = None;
            e.lent_count = None;
            if tag != NOTAG {
                self.free_tags.push(tag);
            }
        }
    }
}

/// A request on the wire whose reply has not been collected yet.
struct Ticket {
    tag: u16,
    gen: u32,
    cv: Arc<Condvar>,
    fid: Option<u32>,
    deadline: Option<Instant>,
}

struct FidTable {
    next: u32,
    free: Vec<u32>,
    live: HashSet<u32>,
}

struct Shared {
    state: Mutex<State>,
    tag_free: Condvar,
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    fids: Mutex<FidTable>,
    pool: Mutex<Vec<Vec<u8>>>,
    msize: AtomicU32,
    timeout: Option<Duration>,
    closer: Box<dyn Fn() + Send + Sync>,
    has_to_clunk: AtomicBool,
    no_renameat: AtomicBool,
    no_unlinkat: AtomicBool,
    /// Wakes the reader thread when the read half is free.
    reader_cv: Condvar,
    /// Whether callers may read the socket themselves (the transport has
    /// read timeouts, so that a caller's read is bounded).
    callers_read: bool,
}

/// A 9P2000.L client on one connection. `Send + Sync`: share it with `Arc`.
pub struct Client {
    shared: Arc<Shared>,
    reader_done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("msize", &self.msize())
            .finish_non_exhaustive()
    }
}

/// Buffers kept for reuse: many small ones, few large ones, so that the
/// pool holds at most about `POOL_LARGE` msizes of memory.
const POOL_SMALL: usize = 32;
const POOL_LARGE: usize = 4;
const SMALL_BUF: usize = 64 * 1024;

impl Shared {
    fn buffer(&self) -> Vec<u8> {
        self.buffer_for(0)
    }

    /// A pooled buffer, preferring one that already holds `size` bytes (so
    /// large replies reuse large buffers and small ones leave them alone).
    fn buffer_for(&self, size: usize) -> Vec<u8> {
        let mut p = self.pool.lock();
        let pos = if size > SMALL_BUF {
            p.iter().rposition(|b| b.capacity() >= size)
        } else {
            p.iter().rposition(|b| b.capacity() <= SMALL_BUF)
        };
        match pos {
            Some(i) => p.swap_remove(i),
            None => p.pop().unwrap_or_default(),
        }
    }

    fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut p = self.pool.lock();
        let large = p.iter().filter(|b| b.capacity() > SMALL_BUF).count();
        let keep = if buf.capacity() > SMALL_BUF {
            large < POOL_LARGE
        } else {
            p.len() - large < POOL_SMALL
        };
        if keep {
            p.push(buf);
        }
    }

    /// Marks the connection dead and wakes everyone; safe to call twice.
    fn fail_all(&self) {
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            if !st.dead {
                st.dead = true;
                for e in st.tags.iter_mut().chain(std::iter::once(&mut st.notag)) {
                    if matches!(e.state, TagState::Waiting) {
                        e.state = TagState::Ready(Err(Errno::EIO));
                    }
                    e.cv.notify_all();
                }
            }
        }
        self.tag_free.notify_all();
        self.reader_cv.notify_all();
        (self.closer)();
    }

    fn alloc_tag(&self, lend: Option<Vec<u8>>) -> Result<(u16, u32, Arc<Condvar>)> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut st = self.state.lock();
        loop {
            if st.dead {
                return Err(Errno::EIO);
            }
            let tag = match st.free_tags.pop() {
                Some(t) => Some(t),
                None if st.tags.len() < NOTAG as usize => {
                    st.tags.push(TagEntry::new());
                    Some((st.tags.len() - 1) as u16)
                }
                None => None,
            };
            if let Some(tag) = tag {
                let e = &mut st.tags[tag as usize];
                e.state = TagState::Waiting;
                e.gen = e.gen.wrapping_add(1);
                e.lend = lend;
                return Ok((tag, e.gen, e.cv.clone()));
            }
            if wait(&self.tag_free, &mut st, deadline) {
                return Err(Errno::ETIMEDOUT);
            }
        }
    }

    fn send(&self, head: &[u8], tail: &[u8]) -> Result<()> {
        let res = {
            let mut w = self.writer.lock();
            match w.as_mut() {
                None => return Err(Errno::EIO),
                Some(w) => write_all2(w.as_mut(), head, tail).and_then(|_| w.flush()),
            }
        };
        if let Err(e) = res {
            log::warn!("9p: write failed: {e}");
            self.fail_all();
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// Sends `req` and waits for the reply frame. `fid` is a fid the request
    /// would create or destroy: if the request is abandoned, it is clunked
    /// later rather than reused.
    fn rpc(&self, req: &Msg<'_>, fid: Option<u32>) -> Result<Vec<u8>> {
        let t = self.submit(req, fid)?;
        self.wait_reply(t)
    }

    /// Takes a tag and sends `req`; the reply is collected with
    /// [`Shared::wait_reply`] or dropped with [`Shared::abandon`].
    fn submit(&self, req: &Msg<'_>, fid: Option<u32>) -> Result<Ticket> {
        self.submit_lend(req, fid, None)
    }

    /// [`Shared::submit`], lending `lend` for the data of an Rread reply.
    fn submit_lend(
        &self,
        req: &Msg<'_>,
        fid: Option<u32>,
        lend: Option<Vec<u8>>,
    ) -> Result<Ticket> {
        let notag = matches!(req, Msg::Tversion { .. });
        let (tag, gen, cv) = if notag {
            let mut st = self.state.lock();
            if st.dead {
                return Err(Errno::EIO);
            }
            st.notag.state = TagState::Waiting;
            (NOTAG, 0, st.notag.cv.clone())
        } else {
            self.alloc_tag(lend)?
        };
        let mut buf = self.buffer();
        let res = match req.encode_head(tag, &mut buf) {
            Err(_) => Err(Errno::EINVAL),
            Ok(tail) if buf.len() + tail.len() > self.msize.load(Ordering::Relaxed) as usize => {
                Err(Errno::EMSGSIZE)
            }
            Ok(tail) => self.send(&buf, tail),
        };
        self.recycle(buf);
        if let Err(e) = res {
            self.state.lock().release(tag);
            self.tag_free.notify_one();
            return Err(e);
        }
        Ok(Ticket {
            tag,
            gen,
            cv,
            fid,
            deadline: self.timeout.map(|t| Instant::now() + t),
        })
    }

    /// Waits for the reply to a submitted request.
    fn wait_reply(&self, t: Ticket) -> Result<Vec<u8>> {
        self.wait_reply_lent(t).0
    }

    /// Waits for the reply; also returns the lent buffer (if it came back)
    /// and how much of it an Rread filled.
    fn wait_reply_lent(&self, t: Ticket) -> (Result<Vec<u8>>, Option<Vec<u8>>, Option<usize>) {
        let mut st = self.state.lock();
        st.callers += 1;
        let r = self.wait_locked(&t, &mut st);
        st.callers -= 1;
        st.wanting.retain(|&w| w != t.tag);
        if st.callers == 0 {
            st.idle_since = Instant::now();
        }
        r
    }

    fn wait_locked(
        &self,
        t: &Ticket,
        st: &mut MutexGuard<'_, State>,
    ) -> (Result<Vec<u8>>, Option<Vec<u8>>, Option<usize>) {
        loop {
            let dead = st.dead;
            let Some(e) = st.entry(t.tag) else {
                return (Err(Errno::EIO), None, None);
            };
            if let TagState::Ready(_) = e.state {
                let TagState::Ready(r) = std::mem::replace(&mut e.state, TagState::Free) else {
                    return (Err(Errno::EIO), None, None);
                };
                let (lend, count) = (e.lend.take(), e.lent_count.take());
                st.release(t.tag);
                self.tag_free.notify_one();
                return (r, lend, count);
            }
            if dead {
                let lend = e.lend.take();
                st.release(t.tag);
                return (Err(Errno::EIO), lend, None);
            }
            if self.callers_read && !dead {
                if let Some(mut rx) = st.rx.take() {
                    // Nobody is reading: read for everyone until our reply is in.
                    let ok = MutexGuard::unlocked(st, || self.lead(&mut rx, t.tag, t.deadline));
                    if ok {
                        st.rx = Some(rx);
                        st.rx_since = Instant::now();
                        self.pass_reader(st);
                    }
                    if t.deadline.is_none_or(|d| Instant::now() < d) || !ok {
                        continue;
                    }
                }
            }
            if self.callers_read && !st.wanting.contains(&t.tag) {
                st.wanting.push(t.tag);
            }
            if wait(&t.cv, st, t.deadline) {
                // Still waiting after the deadline: give the tag up.
                if let Some(e) = st.entry(t.tag) {
                    if matches!(e.state, TagState::Waiting) {
                        e.state = TagState::Abandoned { fid: t.fid };
                        let (tag, gen) = (t.tag, t.gen);
                        MutexGuard::unlocked(st, || {
                            if tag != NOTAG {
                                self.flush(tag, gen);
                            }
                        });
                        return (Err(Errno::ETIMEDOUT), None, None);
                    }
                }
            }
        }
    }

    /// Reads and delivers frames until `tag` has its reply, or a read times
    /// out after `deadline`. Returns false if the connection died (the read
    /// half is then dropped).
    fn lead(&self, rx: &mut FrameReader, tag: u16, deadline: Option<Instant>) -> bool {
        loop {
            match rx.next(self.msize.load(Ordering::Relaxed), self) {
                Ok(frame) => {
                    if self.deliver_frame(frame) == Some(tag) {
                        return true;
                    }
                }
                Err(e) if is_tick(&e) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return true;
                    }
                    let st = self.state.lock();
                    if st.dead || st.entry_ready(tag) {
                        return !st.dead;
                    }
                }
                Err(e) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        log::warn!("9p: connection lost: {e}");
                    }
                    self.fail_all();
                    return false;
                }
            }
        }
    }

    /// The read half is back: wake a caller that wants it. The reader thread
    /// is not woken: it polls every [`RX_GRACE`], which costs less than a
    /// wake-up per request.
    fn pass_reader(&self, st: &mut State) {
        while let Some(w) = st.wanting.pop() {
            if let Some(e) = st.entry(w) {
                if matches!(e.state, TagState::Waiting) {
                    e.cv.notify_one();
                    return;
                }
            }
        }
    }

    /// Hands a frame from the reader to its tag; returns that tag.
    fn deliver_frame(&self, frame: Frame) -> Option<u16> {
        match frame {
            Frame::Whole(f) => {
                let tag = peek_header(&f).map(|h| h.2).unwrap_or(NOTAG);
                self.deliver(tag, Ok(f));
                Some(tag)
            }
            Frame::Oversize(tag) => {
                log::warn!("9p: oversize reply for tag {tag}");
                self.deliver(tag, Err(Errno::EIO));
                Some(tag)
            }
            Frame::Lent(tag, lend, count) => {
                self.deliver_lent(tag, lend, count);
                Some(tag)
            }
        }
    }

    /// Gives up on a submitted request without flushing it: the server
    /// still answers, and the reader frees the tag then.
    fn abandon(&self, t: Ticket) {
        let mut st = self.state.lock();
        let frame = match st.entry(t.tag) {
            Some(e) if matches!(e.state, TagState::Waiting) => {
                e.state = TagState::Abandoned { fid: t.fid };
                return;
            }
            Some(e) if matches!(e.state, TagState::Ready(_)) => {
                let TagState::Ready(r) = std::mem::replace(&mut e.state, TagState::Free) else {
                    return;
                };
                st.release(t.tag);
                if let Some(f) = t.fid {
                    // We never looked at the reply: treat the fid as unknown.
                    st.to_clunk.push(f);
                    self.has_to_clunk.store(true, Ordering::Relaxed);
                }
                r
            }
            _ => return,
        };
        drop(st);
        self.tag_free.notify_one();
        if let Ok(f) = frame {
            self.recycle(f);
        }
    }

    /// Sends Tflush for an abandoned tag without waiting for Rflush.
    fn flush(&self, oldtag: u16, gen: u32) {
        let tag = {
            let mut st = self.state.lock();
            if st.dead {
                return;
            }
            let Some(tag) = st.free_tags.pop().or_else(|| {
                (st.tags.len() < NOTAG as usize).then(|| {
                    st.tags.push(TagEntry::new());
                    (st.tags.len() - 1) as u16
                })
            }) else {
                // No tag to flush with: the old tag stays abandoned until
                // its reply comes.
                return;
            };
            let e = &mut st.tags[tag as usize];
            e.state = TagState::Flush { oldtag, gen };
            e.gen = e.gen.wrapping_add(1);
            tag
        };
        let mut buf = self.buffer();
        if (Msg::Tflush { oldtag }).encode(tag, &mut buf).is_ok() {
            let _ = self.send(&buf, &[]);
        }
        self.recycle(buf);
    }

    /// Takes the buffer lent for `tag`'s Rread if it can hold `count` bytes.
    fn take_lend(&self, tag: u16, count: usize) -> Option<Vec<u8>> {
        let mut st = self.state.lock();
        let e = st.entry(tag)?;
        match (&e.state, &e.lend) {
            (TagState::Waiting, Some(b)) if b.len() >= count => e.lend.take(),
            _ => None,
        }
    }

    /// Hands a lent buffer, filled with `count` bytes of Rread data, back
    /// to its caller (called by the reader thread).
    fn deliver_lent(&self, tag: u16, lend: Vec<u8>, count: usize) {
        let mut st = self.state.lock();
        if let Some(e) = st.entry(tag) {
            if let TagState::Waiting = e.state {
                e.lend = Some(lend);
                e.lent_count = Some(count);
                e.state = TagState::Ready(Ok(Vec::new()));
                e.cv.notify_one();
                return;
            }
        }
        drop(st);
        // The caller gave up meanwhile: settle the tag as for any reply.
        self.deliver(tag, Err(Errno::EIO));
    }

    /// Hands one reply frame to its tag (called by the reader thread).
    fn deliver(&self, tag: u16, frame: Result<Vec<u8>>) {
        let mut st = self.state.lock();
        let Some(e) = st.entry(tag) else {
            log::warn!("9p: reply with tag {tag} that is not in flight");
            return;
        };
        match std::mem::replace(&mut e.state, TagState::Free) {
            TagState::Waiting => {
                e.state = TagState::Ready(frame);
                e.cv.notify_one();
                return;
            }
            TagState::Abandoned { fid } => {
                if let Some(f) = fid {
                    st.to_clunk.push(f);
                    self.has_to_clunk.store(true, Ordering::Relaxed);
                }
                st.release(tag);
            }
            TagState::Flush { oldtag, gen } => {
                st.release(tag);
                // The flush is answered: if the old request never was,
                // the server has forgotten it and its tag is free again.
                if let Some(old) = st.entry(oldtag) {
                    if old.gen == gen {
                        if let TagState::Abandoned { fid } = old.state {
                            if let Some(f) = fid {
                                st.to_clunk.push(f);
                                self.has_to_clunk.store(true, Ordering::Relaxed);
                            }
                            st.release(oldtag);
                        }
                    }
                }
            }
            other @ (TagState::Free | TagState::Ready(_)) => {
                e.state = other;
                log::warn!("9p: reply with tag {tag} that is not in flight");
                return;
            }
        }
        drop(st);
        self.tag_free.notify_all();
        if let Ok(f) = frame {
            self.recycle(f);
        }
    }
}

/// Waits on `cv` until notified or `deadline`; returns true on timeout.
fn wait(cv: &Condvar, g: &mut MutexGuard<'_, State>, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            cv.wait(g);
            false
        }
        Some(d) => cv.wait_until(g, d).timed_out(),
    }
}

fn write_all2(w: &mut dyn Write, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let (mut a, mut b) = (head, tail);
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            w.write(b)?
        } else if b.is_empty() {
            w.write(a)?
        } else {
            w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// Buffered frame reader: small frames come many to a `read`, large ones go
/// straight into their own buffer.
///
/// Reads may time out (the transport's read timeout lets a caller that
/// reads for everyone stop in time); a frame cut by a timeout is kept in
/// `partial` and finished by the next call, whoever makes it.
struct FrameReader {
    src: Box<dyn Read + Send>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    partial: Option<Partial>,
}

/// A frame being received.
enum Partial {
    /// Into a frame buffer of the final size, `filled` bytes so far.
    Whole { frame: Vec<u8>, filled: usize },
    /// Rread data into a lent buffer.
    Lent {
        tag: u16,
        buf: Vec<u8>,
        count: usize,
        filled: usize,
    },
    /// Over msize: `left` bytes still to discard.
    Skip { tag: u16, left: usize },
}

enum Frame {
    /// A whole frame of at most msize bytes.
    Whole(Vec<u8>),
    /// A frame over msize, skipped; only its tag is known.
    Oversize(u16),
    /// An Rread whose data went into the buffer its caller lent:
    /// (tag, buffer, count).
    Lent(u16, Vec<u8>, usize),
}

/// Whether an I/O error is a read timeout rather than a failure.
fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl FrameReader {
    /// Makes at least `want` bytes available in `buf[start..end]`.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.end - self.start >= want {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < want {
            let n = self.src.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
        Ok(())
    }

    /// Copies buffered bytes into `dst`, then reads the rest from the
    /// source; `filled` tracks progress across timeouts.
    fn receive(&mut self, dst: &mut [u8], filled: &mut usize) -> io::Result<()> {
        let have = (self.end - self.start).min(dst.len() - *filled);
        dst[*filled..*filled + have].copy_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        *filled += have;
        while *filled < dst.len() {
            let n = self.src.read(&mut dst[*filled..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            *filled += n;
        }
        Ok(())
    }

    fn resume(&mut self, p: Partial) -> io::Result<Frame> {
        match p {
            Partial::Whole {
                mut frame,
                mut filled,
            } => match self.receive(&mut frame, &mut filled) {
                Ok(()) => Ok(Frame::Whole(frame)),
                Err(e) => {
                    self.partial = Some(Partial::Whole { frame, filled });
                    Err(e)
                }
            },
            Partial::Lent {
                tag,
                mut buf,
                count,
                mut filled,
            } => match self.receive(&mut buf[..count], &mut filled) {
                Ok(()) => Ok(Frame::Lent(tag, buf, count)),
                Err(e) => {
                    self.partial = Some(Partial::Lent {
                        tag,
                        buf,
                        count,
                        filled,
                    });
                    Err(e)
                }
            },
            Partial::Skip { tag, mut left } => {
                while left > 0 {
                    if let Err(e) = self.fill(1) {
                        self.partial = Some(Partial::Skip { tag, left });
                        return Err(e);
                    }
                    let n = left.min(self.end - self.start);
                    self.start += n;
                    left -= n;
                }
                Ok(Frame::Oversize(tag))
            }
        }
    }

    fn next(&mut self, msize: u32, shared: &Shared) -> io::Result<Frame> {
        if let Some(p) = self.partial.take() {
            return self.resume(p);
        }
        self.fill(HEADER_SIZE)?;
        let (size, ty, tag) =
            peek_header(&self.buf[self.start..self.end]).ok_or(io::ErrorKind::InvalidData)?;
        let size = size as usize;
        if size < HEADER_SIZE {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if size > msize as usize {
            // Skip it without buffering: a lying size cannot make us allocate.
            return self.resume(Partial::Skip { tag, left: size });
        }
        if ty == wire::msgtype::RREAD && size > LEND_MIN {
            self.fill(HEADER_SIZE + 4)?;
            let c = &self.buf[self.start + HEADER_SIZE..self.start + HEADER_SIZE + 4];
            let count = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
            if count + HEADER_SIZE + 4 == size {
                if let Some(buf) = shared.take_lend(tag, count) {
                    self.start += HEADER_SIZE + 4;
                    return self.resume(Partial::Lent {
                        tag,
                        buf,
                        count,
                        filled: 0,
                    });
                }
            }
        }
        let mut frame = shared.buffer_for(size);
        frame.resize(size, 0);
        self.resume(Partial::Whole { frame, filled: 0 })
    }
}

/// How long one read of the socket may block, so that whoever reads
/// (a caller or the reader thread) can look up and hand over in time.
pub const RX_TICK: Duration = Duration::from_millis(20);
/// How long the connection must be idle (no caller waiting) before the
/// reader thread takes the read half; until then a caller that comes back
/// quickly reads its reply itself, with no thread hand-off.
pub const RX_GRACE: Duration = Duration::from_millis(2);

/// The reader thread: reads when no caller does, so that connection loss is
/// noticed and stray frames are drained; with a transport without read
/// timeouts it is the only reader.
fn reader_loop(shared: Arc<Shared>, done: mpsc::Sender<()>) {
    'outer: loop {
        let mut rx = {
            let mut st = shared.state.lock();
            loop {
                if st.dead {
                    break 'outer;
                }
                if st.rx.is_some() {
                    let idle = st.callers == 0 && st.wanting.is_empty();
                    let waited = st.idle_since.elapsed();
                    // The last clause is a safety net: a read half left
                    // unused while callers wait is taken up again.
                    if !shared.callers_read
                        || (idle && waited >= RX_GRACE)
                        || st.rx_since.elapsed() >= RX_TICK
                    {
                        if let Some(rx) = st.rx.take() {
                            break rx;
                        }
                    }
                    let left = RX_GRACE
                        .saturating_sub(waited)
                        .max(Duration::from_micros(100));
                    shared.reader_cv.wait_for(&mut st, left);
                } else {
                    shared.reader_cv.wait_for(&mut st, RX_GRACE);
                }
            }
        };
        loop {
            match rx.next(shared.msize.load(Ordering::Relaxed), &shared) {
                Ok(frame) => {
                    shared.deliver_frame(frame);
                }
                Err(e) if is_tick(&e) => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        log::warn!("9p: connection lost: {e}");
                    }
                    break 'outer;
                }
            }
            if shared.callers_read {
                let mut st = shared.state.lock();
                if st.dead {
                    break 'outer;
                }
                if st.callers > 0 {
                    // Hand over to the callers, who read for themselves.
                    st.rx = Some(rx);
                    st.rx_since = Instant::now();
                    shared.pass_reader(&mut st);
                    continue 'outer;
                }
            }
        }
    }
    shared.fail_all();
    let _ = done.send(());
}

/// Maps an Rlerror code to an errno; nonsense codes become `EIO`.
fn lerror(ecode: u32) -> Errno {
    match i32::try_from(ecode) {
        Ok(n) if (1..4096).contains(&n) => Errno::from_raw(n),
        _ => Errno::EIO,
    }
}

/// Refuses names a server must never see: the client resolves `.` and `..`
/// itself (servers such as diod let `..` climb out of the export) and a `/`
/// would let one name walk several steps.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > tessera_vfs::abi::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

macro_rules! expect {
    ($frame:expr, $pat:pat => $val:expr) => {
        match $frame {
            $pat => Ok($val),
            _ => Err(Errno::EIO),
        }
    };
}

impl Client {
    /// Negotiates the version and msize over `transport` and starts the
    /// reader thread.
    ///
    /// # Errors
    ///
    /// `EIO` if the connection fails or the server answers nonsense,
    /// `EPROTONOSUPPORT` if it does not speak 9P2000.L, the server's errno if
    /// it refuses with Rlerror, `ETIMEDOUT` if it says nothing in time.
    pub fn connect(transport: Transport, opts: ClientOptions) -> Result<Client> {
        let Transport {
            reader,
            writer,
            closer,
            read_timeout,
        } = transport;
        let callers_read = read_timeout.is_some_and(|set| set(Some(RX_TICK)).is_ok());
        let msize = opts.msize.max(MIN_MSIZE);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tags: Vec::new(),
                free_tags: Vec::new(),
                notag: TagEntry::new(),
                dead: false,
                to_clunk: Vec::new(),
                rx: Some(FrameReader {
                    src: reader,
                    buf: vec![0u8; 64 * 1024].into_boxed_slice(),
                    start: 0,
                    end: 0,
                    partial: None,
                }),
                wanting: Vec::new(),
                callers: 0,
                idle_since: Instant::now(),
                rx_since: Instant::now(),
            }),
            tag_free: Condvar::new(),
            writer: Mutex::new(Some(writer)),
            fids: Mutex::new(FidTable {
                next: 0,
                free: Vec::new(),
                live: HashSet::new(),
            }),
            pool: Mutex::new(Vec::new()),
            msize: AtomicU32::new(msize),
            timeout: opts.timeout,
            closer,
            has_to_clunk: AtomicBool::new(false),
            no_renameat: AtomicBool::new(false),
            no_unlinkat: AtomicBool::new(false),
            reader_cv: Condvar::new(),
            callers_read,
        });
        let (tx, rx) = mpsc::channel();
        let s2 = shared.clone();
        thread::Builder::new()
            .name("9p-reader".into())
            .spawn(move || reader_loop(s2, tx))
            .map_err(|_| Errno::EAGAIN)?;
        let client = Client {
            shared,
            reader_done: Mutex::new(Some(rx)),
        };
        let frame = client.shared.rpc(
            &Msg::Tversion {
                msize,
                version: wire::VERSION_9P2000L,
            },
            None,
        )?;
        let negotiated = match decode(&frame, msize) {
            Ok((_, Msg::Rversion { msize: m, version })) => {
                if version != wire::VERSION_9P2000L {
                    Err(Errno::EPROTONOSUPPORT)
                } else if m < MIN_MSIZE {
                    Err(Errno::EIO)
                } else {
                    Ok(m.min(msize))
                }
            }
            Ok((_, Msg::Rlerror { ecode })) => Err(lerror(ecode)),
            _ => Err(Errno::EIO),
        };
        client.shared.recycle(frame);
        client.shared.msize.store(negotiated?, Ordering::Relaxed);
        Ok(client)
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.shared.msize.load(Ordering::Relaxed)
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        !self.shared.state.lock().dead
    }

    /// Sends `req` and decodes the reply with `f`, which returns `None` when
    /// the reply is the wrong type.
    fn call<T>(
        &self,
        req: &Msg<'_>,
        fid: Option<u32>,
        f: impl FnOnce(Msg<'_>) -> Result<T>,
    ) -> Result<T> {
        self.finish(self.shared.rpc(req, fid), f)
    }

    /// Decodes a reply frame: Rlerror becomes its errno, anything `f`
    /// rejects becomes `EIO`.
    fn finish<T>(&self, frame: Result<Vec<u8>>, f: impl FnOnce(Msg<'_>) -> Result<T>) -> Result<T> {
        let frame = frame?;
        let res = match decode(&frame, self.msize()) {
            Ok((_, Msg::Rlerror { ecode })) => Err(lerror(ecode)),
            Ok((_, msg)) => f(msg),
            Err(e) => {
                log::warn!("9p: bad reply: {e}");
                Err(Errno::EIO)
            }
        };
        self.shared.recycle(frame);
        res
    }

    fn alloc_fid(&self) -> Result<Fid> {
        if self.shared.has_to_clunk.load(Ordering::Relaxed) {
            self.drain_clunks();
        }
        let mut t = self.shared.fids.lock();
        let num = match t.free.pop() {
            Some(n) => n,
            None => {
                if t.next == NOFID {
                    return Err(Errno::EMFILE);
                }
                t.next += 1;
                t.next - 1
            }
        };
        t.live.insert(num);
        Ok(Fid {
            num,
            iounit: AtomicU32::new(0),
        })
    }

    /// Returns a fid number to the allocator (the server no longer knows it).
    fn free_fid(&self, num: u32) {
        let mut t = self.shared.fids.lock();
        if t.live.remove(&num) {
            t.free.push(num);
        }
    }

    /// Forgets a fid number whose server state is unknown: it is clunked
    /// before it is reused.
    fn quarantine_fid(&self, num: u32) {
        self.shared.state.lock().to_clunk.push(num);
        self.shared.has_to_clunk.store(true, Ordering::Relaxed);
    }

    fn drain_clunks(&self) {
        let list = {
            let mut st = self.shared.state.lock();
            self.shared.has_to_clunk.store(false, Ordering::Relaxed);
            std::mem::take(&mut st.to_clunk)
        };
        for num in list {
            self.clunk_num(num);
        }
    }

    fn clunk_num(&self, num: u32) {
        match self.call(
            &Msg::Tclunk { fid: num },
            Some(num),
            |m| expect!(m, Msg::Rclunk => ()),
        ) {
            Err(Errno::ETIMEDOUT) => {} // requeued when its reply or Rflush comes
            _ => self.free_fid(num),
        }
    }

    /// Attaches to the tree `aname` as `uname` / `n_uname` (use
    /// [`wire::NONUNAME`] to go by name), without authentication.
    pub fn attach(&self, uname: &[u8], aname: &[u8], n_uname: u32) -> Result<(Fid, Qid)> {
        let fid = self.alloc_fid()?;
        let r = self.call(
            &Msg::Tattach {
                fid: fid.num,
                afid: NOFID,
                uname,
                aname,
                n_uname,
            },
            Some(fid.num),
            |m| expect!(m, Msg::Rattach { qid } => qid),
        );
        self.finish_new_fid(fid, r)
    }

    fn finish_new_fid<T>(&self, fid: Fid, r: Result<T>) -> Result<(Fid, T)> {
        match r {
            Ok(v) => Ok((fid, v)),
            Err(e) => Err(self.fail_new_fid(fid, e)),
        }
    }

    /// Settles a fid whose creating request failed with `e`.
    fn fail_new_fid(&self, fid: Fid, e: Errno) -> Errno {
        match e {
            // Abandoned: queued for clunking when the server answers.
            Errno::ETIMEDOUT => {}
            // The server may or may not hold the fid now.
            Errno::EIO => self.quarantine_fid(fid.num),
            _ => self.free_fid(fid.num),
        }
        e
    }

    /// Walks from `fid` through `names` to a new fid; no names clones `fid`.
    ///
    /// Walks longer than 16 names are sent as several Twalks. A walk that
    /// stops early fails with `ENOENT` (or the server's error) and leaves no
    /// fid behind.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `.`, `..`, empty names or names with `/` or NUL, which
    /// are never sent; `ENAMETOOLONG` for a name over 255 bytes.
    pub fn walk(&self, fid: &Fid, names: &[&[u8]]) -> Result<(Fid, Vec<Qid>)> {
        for n in names {
            check_name(n)?;
        }
        let newfid = self.alloc_fid()?;
        let mut qids = Vec::with_capacity(names.len());
        if names.is_empty() {
            let r = self.walk_once(fid.num, newfid.num, &[]);
            return self.finish_new_fid(newfid, r);
        }
        for (i, chunk) in names.chunks(MAXWELEM).enumerate() {
            let from = if i == 0 { fid.num } else { newfid.num };
            match self.walk_once(from, newfid.num, chunk) {
                Ok(q) => qids.extend_from_slice(&q),
                Err(e) if i == 0 => return Err(self.fail_new_fid(newfid, e)),
                Err(Errno::ETIMEDOUT) => return Err(Errno::ETIMEDOUT),
                Err(e) => {
                    // newfid is live from the earlier chunks.
                    self.clunk_num(newfid.num);
                    return Err(e);
                }
            }
        }
        Ok((newfid, qids))
    }

    fn walk_once(&self, from: u32, newfid: u32, names: &[&[u8]]) -> Result<Vec<Qid>> {
        let req = Msg::Twalk {
            fid: from,
            newfid,
            names: names.iter().copied().collect::<SmallVec<_>>(),
        };
        let qids = self.call(
            &req,
            Some(newfid),
            |m| expect!(m, Msg::Rwalk { qids } => qids),
        )?;
        if qids.len() == names.len() {
            return Ok(qids.to_vec());
        }
        // A short walk: the protocol says newfid was not made, but some
        // servers (diod) make it anyway, so clunk it before reuse.
        let c = self.call(&Msg::Tclunk { fid: newfid }, Some(newfid), |_| Ok(()));
        if c == Err(Errno::ETIMEDOUT) {
            return Err(Errno::ETIMEDOUT);
        }
        if qids.len() > names.len() {
            return Err(Errno::EIO);
        }
        Err(Errno::ENOENT)
    }

    /// Gives a fid back to the server. The fid number is reused afterwards
    /// whatever the server answers (a failed Tclunk still ends the fid).
    pub fn clunk(&self, fid: Fid) -> Result<()> {
        let r = self.call(
            &Msg::Tclunk { fid: fid.num },
            Some(fid.num),
            |m| expect!(m, Msg::Rclunk => ()),
        );
        if r != Err(Errno::ETIMEDOUT) {
            self.free_fid(fid.num);
        }
        if self.shared.has_to_clunk.load(Ordering::Relaxed) {
            self.drain_clunks();
        }
        r
    }

    /// Removes the file `fid` names and clunks the fid (even on failure).
    pub fn remove(&self, fid: Fid) -> Result<()> {
        let r = self.call(
            &Msg::Tremove { fid: fid.num },
            Some(fid.num),
            |m| expect!(m, Msg::Rremove => ()),
        );
        if r != Err(Errno::ETIMEDOUT) {
            self.free_fid(fid.num);
        }
        r
    }

    /// Reads the attributes in `mask` (`wire::getattr::*`).
    pub fn getattr(&self, fid: &Fid, mask: u64) -> Result<Attr> {
        self.call(
            &Msg::Tgetattr { fid: fid.num, mask },
            None,
            |m| expect!(m, Msg::Rgetattr { attr } => attr),
        )
    }

    /// Sends Tgetattr without waiting: collect the answer with
    /// [`Pending::wait`]. Lets one thread keep many requests in flight.
    pub fn getattr_start(&self, fid: &Fid, mask: u64) -> Result<Pending<'_, Attr>> {
        let t = self
            .shared
            .submit(&Msg::Tgetattr { fid: fid.num, mask }, None)?;
        Ok(Pending {
            client: self,
            ticket: Some(t),
            parse: |m| match m {
                Msg::Rgetattr { attr } => Some(attr),
                _ => None,
            },
        })
    }

    /// Changes the attributes `attr.valid` selects.
    pub fn setattr(&self, fid: &Fid, attr: &SetAttr) -> Result<()> {
        self.call(
            &Msg::Tsetattr {
                fid: fid.num,
                attr: *attr,
            },
            None,
            |m| expect!(m, Msg::Rsetattr => ()),
        )
    }

    /// Opens `fid` with Linux open flags; returns the qid and iounit.
    pub fn lopen(&self, fid: &Fid, flags: u32) -> Result<(Qid, u32)> {
        let (q, io) = self.call(
            &Msg::Tlopen {
                fid: fid.num,
                flags,
            },
            None,
            |m| expect!(m, Msg::Rlopen { qid, iounit } => (qid, iounit)),
        )?;
        fid.iounit.store(io, Ordering::Relaxed);
        Ok((q, io))
    }

    /// Creates and opens `name` in the directory `fid`; `fid` then names the
    /// new, open file.
    pub fn lcreate(
        &self,
        fid: &Fid,
        name: &[u8],
        flags: u32,
        mode: u32,
        gid: u32,
    ) -> Result<(Qid, u32)> {
        check_name(name)?;
        let req = Msg::Tlcreate {
            fid: fid.num,
            name,
            flags,
            mode,
            gid,
        };
        let (q, io) = self.call(
            &req,
            None,
            |m| expect!(m, Msg::Rlcreate { qid, iounit } => (qid, iounit)),
        )?;
        fid.iounit.store(io, Ordering::Relaxed);
        Ok((q, io))
    }

    /// The most bytes one Tread or Twrite on `fid` may move.
    fn io_chunk(&self, fid: &Fid) -> usize {
        let max = self.msize().saturating_sub(IOHDRSZ).max(1);
        match fid.iounit() {
            0 => max as usize,
            n => n.min(max) as usize,
        }
    }

    /// Reads into `buf` from `offset`, in as many Treads as msize and iounit
    /// require, keeping up to [`READ_AHEAD`] of them in flight; stops early
    /// at a short read (end of file).
    pub fn read(&self, fid: &Fid, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let chunk = self.io_chunk(fid);
        let mut queue: std::collections::VecDeque<(usize, usize, Ticket)> =
            std::collections::VecDeque::new();
        let (mut next, mut done) = (0usize, 0usize);
        let mut failed = None;
        loop {
            while failed.is_none() && queue.len() < READ_AHEAD && next < buf.len() {
                let want = (buf.len() - next).min(chunk);
                let req = Msg::Tread {
                    fid: fid.num,
                    offset: offset.wrapping_add(next as u64),
                    count: want as u32,
                };
                match self.shared.submit(&req, None) {
                    Ok(t) => queue.push_back((next, want, t)),
                    Err(e) => failed = Some(e),
                }
                next += want;
            }
            let Some((start, want, t)) = queue.pop_front() else {
                break;
            };
            let dst = &mut buf[start..start + want];
            let got = self.finish(self.shared.wait_reply(t), |m| match m {
                Msg::Rread { data } if data.len() <= want => {
                    dst[..data.len()].copy_from_slice(data);
                    Ok(data.len())
                }
                _ => Err(Errno::EIO),
            });
            match got {
                Ok(n) => {
                    done = start + n;
                    if n < want {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for (_, _, t) in queue {
            self.shared.abandon(t);
        }
        match failed {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Reads into `buf` from `offset` like [`Client::read`], but when the
    /// read fits in one message the reader thread receives the data straight
    /// into `buf` (which is lent to it meanwhile), saving a copy of the whole
    /// reply. `buf` keeps its length; bytes past the returned count are
    /// unspecified.
    pub fn read_vec(&self, fid: &Fid, offset: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let want = buf.len();
        if want > self.io_chunk(fid) || want <= LEND_MIN {
            return self.read(fid, offset, buf);
        }
        let req = Msg::Tread {
            fid: fid.num,
            offset,
            count: want as u32,
        };
        let t = self
            .shared
            .submit_lend(&req, None, Some(std::mem::take(buf)))?;
        let (frame, lend, count) = self.shared.wait_reply_lent(t);
        match lend {
            Some(b) => *buf = b,
            None => *buf = vec![0; want],
        }
        if let (Ok(_), Some(n)) = (&frame, count) {
            return if n <= want { Ok(n) } else { Err(Errno::EIO) };
        }
        // Not delivered into the lent buffer: an ordinary (or error) reply.
        self.finish(frame, |m| match m {
            Msg::Rread { data } if data.len() <= want => {
                buf[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
            _ => Err(Errno::EIO),
        })
    }

    /// Writes `data` at `offset`, in as many Twrites as msize and iounit
    /// require; stops early at a short write.
    pub fn write(&self, fid: &Fid, offset: u64, data: &[u8]) -> Result<usize> {
        let chunk = self.io_chunk(fid);
        let mut done = 0;
        while done < data.len() {
            let part = &data[done..data.len().min(done + chunk)];
            let req = Msg::Twrite {
                fid: fid.num,
                offset: offset.wrapping_add(done as u64),
                data: part,
            };
            let got = self.call(&req, None, |m| match m {
                Msg::Rwrite { count } if count as usize <= part.len() => Ok(count as usize),
                _ => Err(Errno::EIO),
            });
            let got = match got {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => return Ok(done),
            };
            done += got;
            if got < part.len() {
                break;
            }
        }
        Ok(done)
    }

    /// Reads directory entries of the open directory `fid` from the cookie
    /// `offset`, at most `count` bytes of them (clamped to what msize allows).
    /// `.` and `..` come back as the server sends them.
    pub fn readdir(&self, fid: &Fid, offset: u64, count: u32) -> Result<Vec<DirEntry>> {
        let count = count.min(self.io_chunk(fid) as u32);
        let req = Msg::Treaddir {
            fid: fid.num,
            offset,
            count,
        };
        self.call(&req, None, |m| match m {
            Msg::Rreaddir { data } if data.len() <= count as usize => Dirents::new(data)
                .map(|d| {
                    d.map(|d| DirEntry {
                        qid: d.qid,
                        offset: d.offset,
                        ty: d.ty,
                        name: d.name.to_vec(),
                    })
                    .map_err(|_: DecodeError| Errno::EIO)
                })
                .collect(),
            _ => Err(Errno::EIO),
        })
    }

    /// Makes a directory `name` in `dfid`.
    pub fn mkdir(&self, dfid: &Fid, name: &[u8], mode: u32, gid: u32) -> Result<Qid> {
        check_name(name)?;
        let req = Msg::Tmkdir {
            dfid: dfid.num,
            name,
            mode,
            gid,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rmkdir { qid } => qid))
    }

    /// Makes a symbolic link `name` -> `target` in `dfid`.
    pub fn symlink(&self, dfid: &Fid, name: &[u8], target: &[u8], gid: u32) -> Result<Qid> {
        check_name(name)?;
        let req = Msg::Tsymlink {
            fid: dfid.num,
            name,
            target,
            gid,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rsymlink { qid } => qid))
    }

    /// Makes a device, fifo or socket node `name` in `dfid`.
    pub fn mknod(
        &self,
        dfid: &Fid,
        name: &[u8],
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    ) -> Result<Qid> {
        check_name(name)?;
        let req = Msg::Tmknod {
            dfid: dfid.num,
            name,
            mode,
            major,
            minor,
            gid,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rmknod { qid } => qid))
    }

    /// Makes a hard link `name` in `dfid` to the file `fid`.
    pub fn link(&self, dfid: &Fid, fid: &Fid, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let req = Msg::Tlink {
            dfid: dfid.num,
            fid: fid.num,
            name,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rlink => ()))
    }

    /// Renames `olddir/oldname` to `newdir/newname`; with servers that
    /// answer Trenameat with `EOPNOTSUPP` (diod), walks to the file and
    /// sends Trename instead, and remembers to do so from then on.
    pub fn renameat(
        &self,
        olddir: &Fid,
        oldname: &[u8],
        newdir: &Fid,
        newname: &[u8],
    ) -> Result<()> {
        check_name(oldname)?;
        check_name(newname)?;
        if !self.shared.no_renameat.load(Ordering::Relaxed) {
            let req = Msg::Trenameat {
                olddirfid: olddir.num,
                oldname,
                newdirfid: newdir.num,
                newname,
            };
            match self.call(&req, None, |m| expect!(m, Msg::Rrenameat => ())) {
                Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
                    self.shared.no_renameat.store(true, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        let (f, _) = self.walk(olddir, &[oldname])?;
        let req = Msg::Trename {
            fid: f.num,
            dfid: newdir.num,
            name: newname,
        };
        let r = self.call(&req, None, |m| expect!(m, Msg::Rrename => ()));
        let _ = self.clunk(f);
        r
    }

    /// Removes `name` from `dir`: a non-directory, or with [`AT_REMOVEDIR`]
    /// an empty directory. Falls back to walk + Tremove where Tunlinkat is
    /// not supported, checking the file type itself so that the errors are
    /// Linux's (`EISDIR`, `ENOTDIR`).
    pub fn unlinkat(&self, dir: &Fid, name: &[u8], flags: u32) -> Result<()> {
        check_name(name)?;
        if !self.shared.no_unlinkat.load(Ordering::Relaxed) {
            let req = Msg::Tunlinkat {
                dirfid: dir.num,
                name,
                flags,
            };
            match self.call(&req, None, |m| expect!(m, Msg::Runlinkat => ())) {
                Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
                    self.shared.no_unlinkat.store(true, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        let (f, qids) = self.walk(dir, &[name])?;
        let is_dir = qids.first().is_some_and(|q| q.is_dir());
        let wrong = if flags & AT_REMOVEDIR != 0 {
            (!is_dir).then_some(Errno::ENOTDIR)
        } else {
            is_dir.then_some(Errno::EISDIR)
        };
        if let Some(e) = wrong {
            let _ = self.clunk(f);
            return Err(e);
        }
        self.remove(f)
    }

    /// Reads the target of the symbolic link `fid`.
    pub fn readlink(&self, fid: &Fid) -> Result<Vec<u8>> {
        self.call(
            &Msg::Treadlink { fid: fid.num },
            None,
            |m| expect!(m, Msg::Rreadlink { target } => target.to_vec()),
        )
    }

    /// Opens the extended attribute `name` of `fid` (or, with an empty
    /// name, the list of names) for reading as a new fid; returns its size.
    pub fn xattrwalk(&self, fid: &Fid, name: &[u8]) -> Result<(Fid, u64)> {
        let newfid = self.alloc_fid()?;
        let req = Msg::Txattrwalk {
            fid: fid.num,
            newfid: newfid.num,
            name,
        };
        let r = self.call(
            &req,
            Some(newfid.num),
            |m| expect!(m, Msg::Rxattrwalk { size } => size),
        );
        self.finish_new_fid(newfid, r)
    }

    /// Turns `fid` into a fid that sets the extended attribute `name` to
    /// the `size` bytes written to it before it is clunked.
    pub fn xattrcreate(&self, fid: &Fid, name: &[u8], size: u64, flags: u32) -> Result<()> {
        let req = Msg::Txattrcreate {
            fid: fid.num,
            name,
            size,
            flags,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rxattrcreate => ()))
    }

    /// Filesystem statistics.
    pub fn statfs(&self, fid: &Fid) -> Result<StatFs> {
        self.call(
            &Msg::Tstatfs { fid: fid.num },
            None,
            |m| expect!(m, Msg::Rstatfs { statfs } => statfs),
        )
    }

    /// Flushes the open file `fid` to stable storage.
    pub fn fsync(&self, fid: &Fid, datasync: bool) -> Result<()> {
        let req = Msg::Tfsync {
            fid: fid.num,
            datasync: datasync as u32,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rfsync => ()))
    }

    /// Takes or releases a POSIX lock; returns the server's status
    /// (`0` success, `1` blocked, `2` error, `3` grace).
    pub fn lock(&self, fid: &Fid, lock: &Flock<'_>) -> Result<u8> {
        let req = Msg::Tlock {
            fid: fid.num,
            lock: *lock,
        };
        self.call(&req, None, |m| expect!(m, Msg::Rlock { status } => status))
    }

    /// Tests for a conflicting lock; returns the answer with its owner
    /// (type `2`, unlocked, when there is none).
    pub fn getlock(&self, fid: &Fid, lock: &Flock<'_>) -> Result<(u8, u64, u64, u32, Vec<u8>)> {
        let req = Msg::Tgetlock {
            fid: fid.num,
            lock: *lock,
        };
        self.call(&req, None, |m| {
            expect!(m, Msg::Rgetlock { lock: l } =>
                (l.ty, l.start, l.length, l.proc_id, l.client_id.to_vec()))
        })
    }

    /// Gives a fid back without waiting: its Tclunk is sent before the next
    /// fid is allocated, or at [`Client::close`]. For owners that let go of
    /// fids where a round trip must not happen (a `Drop` under a caller's lock).
    pub fn clunk_deferred(&self, fid: Fid) {
        self.quarantine_fid(fid.num);
    }

    /// How many fids the client holds (for tests and leak checks).
    pub fn live_fids(&self) -> usize {
        self.shared.fids.lock().live.len()
    }

    /// Clunks every fid still held, closes the connection and waits (a
    /// bounded time) for the reader thread to end. Called by `Drop` too.
    pub fn close(&self) {
        let dead = self.shared.state.lock().dead;
        let live: Vec<u32> = {
            let mut t = self.shared.fids.lock();
            if dead {
                // The server is gone and its fids with it.
                let FidTable { live, free, .. } = &mut *t;
                free.extend(live.drain());
                Vec::new()
            } else {
                t.live.iter().copied().collect()
            }
        };
        // Queued fids are still live, so the loop below clunks them once.
        self.shared.state.lock().to_clunk.clear();
        for num in live {
            let _ = self.call(&Msg::Tclunk { fid: num }, None, |_| Ok(()));
            self.free_fid(num);
        }
        // Dropping the write half tells a pipe or socket server we are done.
        drop(self.shared.writer.lock().take());
        self.shared.fail_all();
        if let Some(rx) = self.reader_done.lock().take() {
            if rx.recv_timeout(Duration::from_secs(5)).is_err() {
                log::warn!("9p: reader thread did not stop; leaving it");
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
