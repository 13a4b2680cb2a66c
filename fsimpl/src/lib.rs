//! Tessera's filesystems, built on the `tessera-vfs` traits.
// The gofer speaks over Unix sockets and inherited fds.
#[cfg(unix)]
pub mod gofer;
pub mod overlay;
pub mod tmpfs;
pub mod verity;
