//! Tessera's filesystems, built on the `tessera-vfs` traits.
pub mod gofer;
pub mod tmpfs;
pub mod verity;
