//! The byte streams a 9P client runs over: a connected fd handed to the
//! sandbox (`trans=fd,rfdno=N,wfdno=N`), a unix socket path, or TCP (tests).
//!
//! A [`Transport`] is split into a read half (owned by the client's reader
//! thread), a write half (behind the client's writer lock) and a way to
//! shut the connection down so that a reader blocked in `read` wakes up.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use tessera_vfs::Errno;

/// A connected byte stream to a 9P server, ready to hand to
/// [`Client::connect`](super::Client::connect).
pub struct Transport {
    pub(crate) reader: Box<dyn Read + Send>,
    pub(crate) writer: Box<dyn Write + Send>,
    pub(crate) closer: Box<dyn Fn() + Send + Sync>,
    /// Sets a timeout on reads of `reader`, where the stream supports it
    /// (sockets). With it, a caller waiting for its reply may read the
    /// socket itself for a bounded time; without it only the reader thread
    /// reads.
    pub(crate) read_timeout: Option<ReadTimeout>,
}

/// Sets the read timeout of a transport's read half.
pub(crate) type ReadTimeout =
    Box<dyn Fn(Option<std::time::Duration>) -> io::Result<()> + Send + Sync>;

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

impl Transport {
    /// Uses a connected unix stream socket (for instance one end of a socketpair).
    pub fn from_unix_stream(stream: UnixStream) -> io::Result<Transport> {
        let reader = stream.try_clone()?;
        let closer = stream.try_clone()?;
        let timer = stream.try_clone()?;
        Ok(Transport {
            reader: Box::new(reader),
            writer: Box::new(stream),
            closer: Box::new(move || {
                let _ = closer.shutdown(Shutdown::Both);
            }),
            read_timeout: Some(Box::new(move |d| timer.set_read_timeout(d))),
        })
    }

    /// Connects to a server listening on a unix socket path.
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Transport> {
        Transport::from_unix_stream(UnixStream::connect(path)?)
    }

    /// Connects to a server over TCP (meant for tests; disables Nagle so
    /// small requests are not held back).
    pub fn tcp(addr: impl ToSocketAddrs) -> io::Result<Transport> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let reader = stream.try_clone()?;
        let closer = stream.try_clone()?;
        let timer = stream.try_clone()?;
        Ok(Transport {
            reader: Box::new(reader),
            writer: Box::new(stream),
            closer: Box::new(move || {
                let _ = closer.shutdown(Shutdown::Both);
            }),
            read_timeout: Some(Box::new(move |d| timer.set_read_timeout(d))),
        })
    }

    /// Uses one connected, bidirectional fd (`rfdno == wfdno`), typically a
    /// socket the sandbox inherited.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Transport> {
        if is_socket(&fd)? {
            // std's UnixStream only issues read/write/recv/send/shutdown,
            // which work on any connected stream socket, TCP included.
            Transport::from_unix_stream(UnixStream::from(fd))
        } else {
            let w = File::from(fd);
            let r = w.try_clone()?;
            Ok(Transport {
                reader: Box::new(r),
                writer: Box::new(w),
                closer: Box::new(|| {}),
                read_timeout: None,
            })
        }
    }

    /// Uses a pair of fds: one to read replies from, one to write requests to
    /// (for instance two pipes). A reader blocked on a pipe only wakes when
    /// the server closes its end, which it does once our write end closes.
    pub fn from_fd_pair(rfd: OwnedFd, wfd: OwnedFd) -> io::Result<Transport> {
        let r_sock = if is_socket(&rfd)? {
            Some(UnixStream::from(rfd.try_clone()?))
        } else {
            None
        };
        let read_timeout: Option<ReadTimeout> = match &r_sock {
            Some(s) => {
                let timer = s.try_clone()?;
                Some(Box::new(move |d| timer.set_read_timeout(d)))
            }
            None => None,
        };
        Ok(Transport {
            reader: Box::new(File::from(rfd)),
            writer: Box::new(File::from(wfd)),
            closer: Box::new(move || {
                if let Some(s) = &r_sock {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }),
            read_timeout,
        })
    }

    /// Takes ownership of raw fd numbers, as given by `rfdno=`/`wfdno=`
    /// mount options.
    ///
    /// # Safety
    ///
    /// The fds must be open and owned by nobody else: the transport closes
    /// them when the client shuts down.
    pub unsafe fn from_raw_fds(rfd: RawFd, wfd: RawFd) -> io::Result<Transport> {
        if rfd < 0 || wfd < 0 {
            return Err(io::Error::from_raw_os_error(Errno::EBADF.raw()));
        }
        if rfd == wfd {
            // SAFETY: the caller hands us sole ownership of this open fd.
            let fd = unsafe { OwnedFd::from_raw_fd(rfd) };
            Transport::from_fd(fd)
        } else {
            // SAFETY: as above, for two distinct open fds.
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(rfd), OwnedFd::from_raw_fd(wfd)) };
            Transport::from_fd_pair(r, w)
        }
    }

    /// Connects to the server a [`TransportSpec`] names.
    ///
    /// # Safety
    ///
    /// For [`TransportSpec::Fd`] the fds are taken over as by
    /// [`Transport::from_raw_fds`]: they must be open and owned by nobody
    /// else. The other kinds are safe.
    pub unsafe fn connect(spec: &TransportSpec) -> io::Result<Transport> {
        match spec {
            // SAFETY: forwarded from this function's contract.
            TransportSpec::Fd { rfd, wfd } => unsafe { Transport::from_raw_fds(*rfd, *wfd) },
            TransportSpec::Unix(path) => Transport::unix(path),
            TransportSpec::Tcp(host, port) => Transport::tcp((host.as_str(), *port)),
        }
    }

    /// Builds a transport from any reader and writer, with a function that
    /// makes a blocked read on `reader` return (tests, custom channels).
    pub fn from_parts(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        closer: Box<dyn Fn() + Send + Sync>,
    ) -> Transport {
        Transport {
            reader,
            writer,
            closer,
            read_timeout: None,
        }
    }
}

fn is_socket(fd: &OwnedFd) -> io::Result<bool> {
    let f = File::from(fd.try_clone()?);
    Ok(f.metadata()?.file_type().is_socket())
}

/// How to reach the server, from the mount options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportSpec {
    /// `trans=fd,rfdno=N,wfdno=N`.
    Fd {
        /// The fd replies are read from.
        rfd: RawFd,
        /// The fd requests are written to.
        wfd: RawFd,
    },
    /// `trans=unix`, the mount source being the socket path.
    Unix(String),
    /// `trans=tcp[,port=N]`, the mount source being the host.
    Tcp(String, u16),
}

/// The 9P mount options we understand (a subset of Linux v9fs's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Where the server is.
    pub transport: TransportSpec,
    /// The msize to ask for, if given.
    pub msize: Option<u32>,
    /// The tree to attach to.
    pub aname: String,
    /// The user name to attach as.
    pub uname: String,
    /// The numeric uid to attach as, if given.
    pub uid: Option<u32>,
}

impl MountOptions {
    /// Parses a comma-separated option string such as
    /// `trans=fd,rfdno=3,wfdno=3,aname=/,msize=65536`. `source` is the mount
    /// source, used as the path or host for `unix` and `tcp`.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a missing or malformed transport, a bad number, or a
    /// version other than 9P2000.L. Unknown options are ignored, as Linux does.
    pub fn parse(source: &str, options: &str) -> Result<MountOptions, Errno> {
        let mut trans = None;
        let (mut rfd, mut wfd, mut port) = (None, None, 564u16);
        let mut o = MountOptions {
            transport: TransportSpec::Unix(String::new()),
            msize: None,
            aname: String::new(),
            uname: String::new(),
            uid: None,
        };
        fn num<T: std::str::FromStr>(v: Option<&str>) -> Result<T, Errno> {
            v.and_then(|v| v.parse().ok()).ok_or(Errno::EINVAL)
        }
        for opt in options.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match k {
                "trans" => trans = Some(v.ok_or(Errno::EINVAL)?.to_string()),
                "rfdno" => rfd = Some(num::<RawFd>(v)?),
                "wfdno" => wfd = Some(num::<RawFd>(v)?),
                "port" => port = num(v)?,
                "msize" => o.msize = Some(num(v)?),
                "aname" => o.aname = v.unwrap_or("").to_string(),
                "uname" => o.uname = v.unwrap_or("").to_string(),
                "dfltuid" | "uid" => o.uid = Some(num(v)?),
                "version" if v != Some("9p2000.L") && v != Some("9P2000.L") => {
                    return Err(Errno::EINVAL);
                }
                _ => {}
            }
        }
        o.transport = match trans.as_deref() {
            Some("fd") => match (rfd, wfd) {
                (Some(r), Some(w)) if r >= 0 && w >= 0 => TransportSpec::Fd { rfd: r, wfd: w },
                _ => return Err(Errno::EINVAL),
            },
            Some("unix") if !source.is_empty() => TransportSpec::Unix(source.to_string()),
            Some("tcp") if !source.is_empty() => TransportSpec::Tcp(source.to_string(), port),
            _ => return Err(Errno::EINVAL),
        };
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_gofer_options() {
        let o = MountOptions::parse(
            "none",
            "trans=fd,rfdno=5,wfdno=6,aname=/root,msize=65536,cache=none",
        )
        .unwrap();
        assert_eq!(o.transport, TransportSpec::Fd { rfd: 5, wfd: 6 });
        assert_eq!(o.msize, Some(65536));
        assert_eq!(o.aname, "/root");
        let u = MountOptions::parse("/run/g.sock", "trans=unix").unwrap();
        assert_eq!(u.transport, TransportSpec::Unix("/run/g.sock".into()));
        let t = MountOptions::parse("127.0.0.1", "trans=tcp,port=5640").unwrap();
        assert_eq!(t.transport, TransportSpec::Tcp("127.0.0.1".into(), 5640));
    }

    #[test]
    fn rejects_bad_options() {
        for bad in [
            "",
            "trans=fd,rfdno=3",
            "trans=fd,rfdno=x,wfdno=3",
            "trans=fd,rfdno=-1,wfdno=3",
            "trans=virtio",
            "trans=fd,rfdno=3,wfdno=3,version=9p2000.u",
            "trans=fd,rfdno=3,wfdno=3,msize=big",
        ] {
            assert_eq!(MountOptions::parse("x", bad), Err(Errno::EINVAL), "{bad}");
        }
        assert_eq!(MountOptions::parse("", "trans=unix"), Err(Errno::EINVAL));
    }

    #[test]
    fn negative_raw_fds_are_refused() {
        // SAFETY: negative numbers are rejected before anything takes ownership.
        let r = unsafe { Transport::from_raw_fds(-1, 3) };
        assert!(r.is_err());
    }
}
