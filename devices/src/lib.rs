//! Tessera's devices: the memory devices (more drivers plug into the same
//! [`tessera_vfs::device::DeviceRegistry`]).
//!
//! `getrandom` supplies `/dev/random` and `/dev/urandom`: the OS's secure
//! generator, without writing one of our own.

pub mod memdev;
