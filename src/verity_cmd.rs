//! `tessera verity`: fs-verity digests of files, and signing and checking of
//! whole directory trees. The logic lives in
//! `tessera_fsimpl::verity::cli` (where its tests are); this is the
//! command-line edge.

use std::ffi::OsString;
use std::io::Write;

/// Runs `tessera verity` with the arguments after `verity`; returns the exit
/// status (0 all well, 1 a file failed or does not match, 2 usage).
pub fn main(args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    #[cfg(unix)]
    let code = tessera_fsimpl::verity::cli::run(args, &mut out, &mut err);
    #[cfg(not(unix))]
    let code = {
        let _ = (args, writeln!(err, "tessera verity: needs a Unix host"));
        2
    };
    let _ = out.flush();
    code
}

/// The same, in the shape of a row of the command table in `main.rs`
/// (`fn(&[OsString]) -> u8`). Arguments must be UTF-8.
pub fn run(args: &[OsString]) -> u8 {
    let mut strings = Vec::with_capacity(args.len());
    for a in args {
        match a.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                eprintln!("tessera verity: argument {a:?} is not UTF-8");
                return 2;
            }
        }
    }
    u8::try_from(main(&strings)).unwrap_or(1)
}
