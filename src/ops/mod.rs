//! The ops-script runner: a small language of filesystem system calls, run on
//! Tessera's VFS or on the host kernel so that every result can be compared.
//!
//! The language is specified in `shared/spec/ops-script.md`. The pieces:
//! - [`parse`]: the script text to typed [`parse::Op`]s;
//! - [`backend`]: the [`Backend`] trait, one method per system call;
//! - [`run`]: the interpreter (handles, output lines);
//! - [`format`](mod@format) and [`mountinfo`]: how results are printed;
//! - [`linux`]: the host-kernel backend, run in a throw-away mount namespace.

pub mod backend;
pub mod format;
pub mod linux;
pub mod mountinfo;
pub mod parse;
pub mod run;

pub use backend::Backend;
pub use parse::{parse_script, Script, ScriptError};
pub use run::{run_collect, run_source, Outcome};

// The lead wires Tessera's own backend here: add `pub mod tessera;` above and
// make `tessera_backend` below return it.

/// A fresh Tessera backend in the spec's starting state (empty tmpfs root with
/// mode 0755, umask 0022, all ids 0, no descriptors).
///
/// # Errors
///
/// A message when Tessera's backend is not available in this build.
///
/// >>> PLACEHOLDER: until `src/ops/tessera.rs` exists this always returns
/// >>> `Err`. This is the single function to change when it lands.
pub fn tessera_backend() -> Result<Box<dyn Backend>, String> {
    Err("Tessera backend not wired yet (src/ops/mod.rs: tessera_backend)".to_string())
}
