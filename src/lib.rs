//! Tessera: a Linux-compatible virtual filesystem inside a process. This
//! crate is the command and the facade; the VFS itself is `tessera-vfs`.

pub mod fuzz;
pub mod ops;
#[cfg(unix)]
pub mod verity_cmd;
