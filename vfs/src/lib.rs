//! The core of Tessera: a Linux-compatible virtual filesystem inside a process.
//!
//! (The model, reference rules and lock order are documented as the modules land.)

pub mod abi;

pub use abi::{Errno, Result};
