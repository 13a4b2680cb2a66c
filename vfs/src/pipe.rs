//! Named pipes: a bounded byte buffer shared by the readers and writers of
//! one FIFO inode, with Linux's open and I/O rules (`fs/pipe.c`). Every
//! filesystem that has FIFOs keeps one [`Pipe`] per FIFO inode and opens it
//! with [`PipeEnd::open`].
//!
//! # Locking
//!
//! One mutex per pipe; waits use its condition variable and end when the
//! other side appears, data or room arrives, or the other side goes away.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::abi::*;
use crate::inode::{Ctx, FileOps};
use parking_lot::{Condvar, Mutex};

/// The capacity of a pipe (Linux's default, 16 pages).
const PIPE_CAPACITY: usize = 65536;
/// Writes up to this size are atomic.
const PIPE_BUF: usize = 4096;

#[derive(Default)]
struct State {
    buf: VecDeque<u8>,
    readers: u32,
    writers: u32,
    /// Counts opens, so a blocked open can tell that its peer came and went.
    reader_opens: u64,
    writer_opens: u64,
}

/// The shared state of a FIFO: its buffer and who has it open.
#[derive(Default)]
pub struct Pipe {
    state: Mutex<State>,
    cond: Condvar,
}

/// One open end of a FIFO.
pub struct PipeEnd {
    pipe: Arc<Pipe>,
    read: bool,
    write: bool,
    nonblock: bool,
}

impl PipeEnd {
    /// Opens a FIFO as `fifo_open` does: `O_RDWR` always succeeds; a
    /// non-blocking writer with no reader gets `ENXIO`; a blocking end waits
    /// for the other side.
    pub fn open(pipe: Arc<Pipe>, flags: OpenFlags) -> Result<PipeEnd> {
        let nonblock = flags.contains(OpenFlags::O_NONBLOCK);
        let (read, write) = match flags.access() {
            AccessMode::ReadOnly => (true, false),
            AccessMode::WriteOnly => (false, true),
            AccessMode::ReadWrite => (true, true),
            // Access mode 3 opens neither end (`fifo_open`).
            AccessMode::Invalid => return Err(Errno::EINVAL),
        };
        let mut st = pipe.state.lock();
        if read && write {
            st.readers += 1;
            st.writers += 1;
            st.reader_opens += 1;
            st.writer_opens += 1;
            pipe.cond.notify_all();
        } else if read {
            st.readers += 1;
            st.reader_opens += 1;
            pipe.cond.notify_all();
            if !nonblock && st.writers == 0 {
                let seen = st.writer_opens;
                while st.writer_opens == seen {
                    pipe.cond.wait(&mut st);
                }
            }
        } else {
            if nonblock && st.readers == 0 {
                return Err(Errno::ENXIO);
            }
            st.writers += 1;
            st.writer_opens += 1;
            pipe.cond.notify_all();
            if st.readers == 0 {
                let seen = st.reader_opens;
                while st.reader_opens == seen {
                    pipe.cond.wait(&mut st);
                }
            }
        }
        drop(st);
        Ok(PipeEnd {
            pipe,
            read,
            write,
            nonblock,
        })
    }
}

impl FileOps for PipeEnd {
    fn read(&self, _off: u64, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.pipe.state.lock();
        loop {
            if !st.buf.is_empty() {
                let n = buf.len().min(st.buf.len());
                for (i, b) in st.buf.drain(..n).enumerate() {
                    buf[i] = b;
                }
                self.pipe.cond.notify_all();
                return Ok(n);
            }
            if st.writers == 0 {
                return Ok(0);
            }
            if self.nonblock {
                return Err(Errno::EAGAIN);
            }
            self.pipe.cond.wait(&mut st);
        }
    }

    fn write(&self, _ctx: &Ctx<'_>, _off: u64, buf: &[u8], _append: bool) -> Result<(usize, u64)> {
        let mut st = self.pipe.state.lock();
        let mut done = 0;
        while done < buf.len() {
            if st.readers == 0 {
                return if done > 0 {
                    Ok((done, 0))
                } else {
                    Err(Errno::EPIPE)
                };
            }
            let room = PIPE_CAPACITY - st.buf.len();
            let left = buf.len() - done;
            // Small writes go in whole or wait.
            let fits = if left <= PIPE_BUF {
                room >= left
            } else {
                room > 0
            };
            if fits {
                let n = room.min(left);
                st.buf.extend(&buf[done..done + n]);
                done += n;
                self.pipe.cond.notify_all();
                continue;
            }
            if self.nonblock {
                return if done > 0 {
                    Ok((done, 0))
                } else {
                    Err(Errno::EAGAIN)
                };
            }
            self.pipe.cond.wait(&mut st);
        }
        Ok((done, 0))
    }

    fn seekable(&self) -> bool {
        false
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut st = self.pipe.state.lock();
        if self.read {
            st.readers -= 1;
        }
        if self.write {
            st.writers -= 1;
        }
        if st.readers == 0 && st.writers == 0 {
            st.buf.clear();
        }
        self.pipe.cond.notify_all();
    }
}
