//! The gofer filesystem's 9P2000.L side: the wire codec ([`wire`]), the
//! multiplexed client ([`Client`]) and its transports ([`Transport`]).
//!
//! A sandbox reaches its container's files through a gofer process that
//! serves them over 9P2000.L on a connected socket; this module is the
//! client end. Every operation returns `Result<_, Errno>`, with the server's
//! Rlerror codes passed through as Linux errnos and protocol breakage
//! reported as `EIO`.
//!
//! [`fs`] is the `9p` filesystem type on the VFS core.
//!
//! [`memserver`] is a small in-memory 9P server used by the tests and the
//! benchmarks; it is not meant to serve real workloads.

pub mod client;
pub mod diod;
pub mod fs;
pub mod memserver;
pub mod transport;
pub mod wire;

pub use client::{Client, ClientOptions, DirEntry, Fid, Pending, AT_REMOVEDIR, DEFAULT_MSIZE};
pub use fs::{CacheMode, GoferFs, GoferInode, GoferType};
pub use memserver::MemServer;
pub use transport::{MountOptions, Transport, TransportSpec};
pub use wire::{decode, Attr, DecodeError, Msg, Qid, SetAttr, StatFs};
