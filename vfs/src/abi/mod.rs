//! The Linux ABI: error numbers, flag sets, mode bits and attribute records.

pub mod errno;
pub mod flags;
pub mod stat;

pub use errno::{Errno, Result};
pub use flags::*;
pub use stat::*;

/// The longest name of one path component, in bytes.
pub const NAME_MAX: usize = 255;
/// The longest path, in bytes, including the terminating NUL.
pub const PATH_MAX: usize = 4096;
/// The number of symbolic links a walk may follow before `ELOOP`.
pub const MAXSYMLINKS: u32 = 40;
