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
pub mod tessera;

pub use backend::Backend;
pub use parse::{parse_script, Script, ScriptError};
pub use run::{run_collect, run_source, Outcome};

/// A fresh Tessera backend in the spec's starting state (empty tmpfs root with
/// mode 0755, umask 0022, all ids 0, no descriptors).
///
/// # Errors
///
/// A message when the starting state cannot be built.
pub fn tessera_backend() -> Result<Box<dyn Backend>, String> {
    tessera::TesseraBackend::new()
        .map(|b| Box::new(b) as Box<dyn Backend>)
        .map_err(|e| format!("cannot build Tessera's starting state: {e}"))
}
