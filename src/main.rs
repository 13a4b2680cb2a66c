//! The `tessera` command.
//!
//! Subcommands are rows of [`COMMANDS`]: adding one (`tessera verity ...`,
//! `tessera fuzz ...`) is one row pointing at a `fn(&[OsString]) -> u8`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tessera::ops::{self, linux, Outcome, Script};

/// One subcommand: its name, a one-line summary for `--help`, and its entry
/// point, which gets the arguments after the name and returns the exit status.
struct Command {
    name: &'static str,
    summary: &'static str,
    run: fn(&[OsString]) -> u8,
}

/// Every subcommand of `tessera`.
const COMMANDS: &[Command] = &[
    Command {
        name: "run",
        summary: "run ops scripts on Tessera (or on Linux with --linux)",
        run: cmd_run,
    },
    Command {
        name: "fuzz",
        summary: "random ops scripts on both backends; minimised differences",
        run: tessera::fuzz::command,
    },
    Command {
        name: "diff",
        summary: "run ops scripts on both backends and print where they differ",
        run: cmd_diff,
    },
    Command {
        name: "verity",
        summary: "fs-verity digests; sign and check directory trees",
        run: tessera::verity_cmd::run,
    },
];

const RUN_HELP: &str = "\
usage: tessera run [--linux [--write-out] | --root 9p:DIR] [--timeout SECS] SCRIPT...

Runs each ops script (shared/spec/ops-script.md) and prints its output.
  --linux       run on the host kernel, in a throw-away mount namespace with a
                fresh tmpfs root (user namespace when not root)
  --write-out   with --linux: write SCRIPT.out beside each SCRIPT (its .ops
                suffix replaced) instead of printing
  --timeout S   kill a Linux run after S seconds (default 20)
  --root 9p:DIR run on a `9p` root: DIR (empty) served by a diod started on
                a socketpair for each script, emptied again after it
Exit status: 0; 2 after a script error (`error: line N: reason` on stderr);
1 when a script cannot be run.
";

const DIFF_HELP: &str = "\
usage: tessera diff [--timeout SECS] SCRIPT...

Runs each script on Tessera and on Linux and prints every output line where
they differ, as SCRIPT:LINE: linux: ... / SCRIPT:LINE: tessera: ...
Exit status: 0 when all agree, 1 when any differs or cannot run, 2 after a
script error.
";

fn usage() -> String {
    let mut s = String::from("usage: tessera COMMAND [ARGS...]\n\ncommands:\n");
    for c in COMMANDS {
        s.push_str(&format!("  {:<8}{}\n", c.name, c.summary));
    }
    s.push_str("\n`tessera COMMAND --help` describes a command.\n");
    s
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(first) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    if first == "--help" || first == "-h" || first == "help" {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    match COMMANDS.iter().find(|c| first == c.name) {
        Some(c) => ExitCode::from((c.run)(&args[1..])),
        None => {
            eprintln!(
                "error: unknown command {}\n\n{}",
                first.to_string_lossy(),
                usage()
            );
            ExitCode::from(2)
        }
    }
}

/// Options shared by `run` and `diff`.
#[derive(Default)]
struct Options {
    linux: bool,
    write_out: bool,
    timeout: Option<Duration>,
    /// `--root 9p:DIR`: the directory a diod serves as the root.
    root_9p: Option<PathBuf>,
    scripts: Vec<PathBuf>,
}

/// Parses options; `Err` is the exit status to return (help printed, or a
/// usage error reported).
fn parse_options(args: &[OsString], help: &str, allow_linux: bool) -> Result<Options, u8> {
    let mut o = Options::default();
    let mut it = args.iter();
    let mut only_files = false;
    while let Some(a) = it.next() {
        if only_files {
            o.scripts.push(PathBuf::from(a));
            continue;
        }
        match a.to_str() {
            Some("--help" | "-h") => {
                print!("{help}");
                return Err(0);
            }
            Some("--linux") if allow_linux => o.linux = true,
            Some("--write-out") if allow_linux => o.write_out = true,
            Some("--root") if allow_linux => match it.next().and_then(|v| v.to_str()) {
                Some(v) if v.starts_with("9p:") && v.len() > 3 => {
                    o.root_9p = Some(PathBuf::from(&v[3..]))
                }
                _ => {
                    eprintln!("error: --root takes 9p:DIR\n\n{help}");
                    return Err(2);
                }
            },
            Some("--timeout") => {
                let secs = it
                    .next()
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<f64>().ok());
                match secs {
                    Some(s) if s > 0.0 && s.is_finite() => {
                        o.timeout = Some(Duration::from_secs_f64(s))
                    }
                    _ => {
                        eprintln!("error: --timeout takes a positive number of seconds\n\n{help}");
                        return Err(2);
                    }
                }
            }
            Some("--") => only_files = true,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                eprintln!("error: unknown option {s}\n\n{help}");
                return Err(2);
            }
            _ => o.scripts.push(PathBuf::from(a)),
        }
    }
    if o.scripts.is_empty() {
        eprintln!("error: no script given\n\n{help}");
        return Err(2);
    }
    if o.root_9p.is_some() && o.linux {
        eprintln!("error: --root and --linux exclude each other");
        return Err(2);
    }
    if o.write_out && !o.linux {
        eprintln!("error: --write-out writes Linux's output: it needs --linux");
        return Err(2);
    }
    Ok(o)
}

/// Reads and parses a script; reports and returns the exit status on failure.
fn load(path: &Path, many: bool) -> Result<Script, u8> {
    let src = std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        1u8
    })?;
    ops::parse_script(&src).map_err(|e| {
        report_script_error(&e, path, many);
        2u8
    })
}

/// Prints `error: line N: reason`, naming the script when several run.
fn report_script_error(e: &ops::ScriptError, path: &Path, many: bool) {
    if many {
        eprintln!("{e} (in {})", path.display());
    } else {
        eprintln!("{e}");
    }
}

fn run_linux(script: &Script, o: &Options, path: &Path) -> Result<Outcome, u8> {
    linux::run_script(script, o.timeout.unwrap_or(linux::DEFAULT_TIMEOUT)).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        1u8
    })
}

fn run_tessera(script: &Script) -> Result<Outcome, u8> {
    match ops::tessera_backend() {
        Ok(mut backend) => Ok(ops::run_collect(script, backend.as_mut())),
        Err(msg) => {
            eprintln!("error: {msg}");
            Err(1)
        }
    }
}

/// `SCRIPT.out` beside `SCRIPT`, its `.ops` suffix replaced.
fn out_path(script: &Path) -> PathBuf {
    if script.extension().is_some_and(|e| e == "ops") {
        script.with_extension("out")
    } else {
        let mut s = script.as_os_str().to_owned();
        s.push(".out");
        PathBuf::from(s)
    }
}

fn cmd_run(args: &[OsString]) -> u8 {
    let o = match parse_options(args, RUN_HELP, true) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if o.linux {
        if let Some(note) = linux::userns_note() {
            eprintln!("{note}");
        }
    }
    let many = o.scripts.len() > 1;
    let mut status = 0u8;
    let stdout = std::io::stdout();
    for path in &o.scripts {
        let script = match load(path, many) {
            Ok(s) => s,
            Err(code) => {
                status = status.max(code);
                continue;
            }
        };
        let outcome = if o.linux {
            run_linux(&script, &o, path)
        } else if let Some(dir) = &o.root_9p {
            ops::tessera::with_9p_root(dir, "fscache", |b| ops::run_collect(&script, b)).map_err(
                |e| {
                    eprintln!("error: {}: {e}", path.display());
                    1u8
                },
            )
        } else {
            run_tessera(&script)
        };
        let outcome = match outcome {
            Ok(out) => out,
            Err(code) => {
                status = status.max(code);
                // Without Tessera's backend no script can run: say it once.
                if !o.linux {
                    return status;
                }
                continue;
            }
        };
        if o.write_out {
            if let Some(e) = &outcome.error {
                report_script_error(e, path, true);
                eprintln!("not written: {}", out_path(path).display());
                status = status.max(2);
                continue;
            }
            let dest = out_path(path);
            if let Err(e) = std::fs::write(&dest, &outcome.stdout) {
                eprintln!("error: cannot write {}: {e}", dest.display());
                status = status.max(1);
            } else {
                eprintln!("wrote {}", dest.display());
            }
            continue;
        }
        {
            let mut lock = stdout.lock();
            if lock
                .write_all(&outcome.stdout)
                .and_then(|()| lock.flush())
                .is_err()
            {
                return 1;
            }
        }
        if let Some(e) = &outcome.error {
            report_script_error(e, path, many);
            status = status.max(2);
        }
    }
    status
}

fn cmd_diff(args: &[OsString]) -> u8 {
    let o = match parse_options(args, DIFF_HELP, false) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Some(note) = linux::userns_note() {
        eprintln!("{note}");
    }
    let many = o.scripts.len() > 1;
    let mut status = 0u8;
    let stdout = std::io::stdout();
    for path in &o.scripts {
        let script = match load(path, many) {
            Ok(s) => s,
            Err(code) => {
                status = status.max(code);
                continue;
            }
        };
        let theirs = match run_tessera(&script) {
            Ok(out) => out,
            Err(code) => return status.max(code),
        };
        let linux = match run_linux(&script, &o, path) {
            Ok(out) => out,
            Err(code) => {
                status = status.max(code);
                continue;
            }
        };
        let report = diff_report(&script, path, &linux, &theirs);
        if !report.is_empty() {
            status = status.max(1);
            let mut lock = stdout.lock();
            if lock.write_all(&report).and_then(|()| lock.flush()).is_err() {
                return 1;
            }
        }
    }
    status
}

/// The lines where two outcomes of one script differ, each named by the
/// script and the line number of the operation that printed it.
fn diff_report(script: &Script, path: &Path, linux: &Outcome, tessera: &Outcome) -> Vec<u8> {
    let split = |b: &[u8]| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
        if v.last().is_some_and(Vec::is_empty) {
            v.pop();
        }
        v
    };
    let (l, t) = (split(&linux.stdout), split(&tessera.stdout));
    let mut out = Vec::new();
    let name = path.display().to_string();
    for i in 0..l.len().max(t.len()) {
        let (a, b) = (l.get(i), t.get(i));
        if a == b {
            continue;
        }
        let number = script
            .lines
            .get(i)
            .map_or_else(|| "?".to_string(), |line| line.number.to_string());
        for (who, line) in [("linux:  ", a), ("tessera:", b)] {
            out.extend_from_slice(format!("{name}:{number}: {who} ").as_bytes());
            match line {
                Some(text) => out.extend_from_slice(text),
                None => out.extend_from_slice(b"(no line)"),
            }
            out.push(b'\n');
        }
    }
    if linux.error != tessera.error {
        let show = |e: &Option<ops::ScriptError>| {
            e.as_ref()
                .map_or_else(|| "no error".to_string(), |e| e.to_string())
        };
        out.extend_from_slice(
            format!(
                "{name}: linux:   {}\n{name}: tessera: {}\n",
                show(&linux.error),
                show(&tessera.error)
            )
            .as_bytes(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_report_names_script_lines() {
        let script = ops::parse_script(b"# c\nmkdir /a 0755\nstat /a\n").expect("parses");
        let linux = Outcome {
            stdout: b"mkdir /a 0755 => OK\nstat /a => OK x\n".to_vec(),
            error: None,
        };
        let same = diff_report(&script, Path::new("s.ops"), &linux, &linux.clone());
        assert!(same.is_empty());
        let theirs = Outcome {
            stdout: b"mkdir /a 0755 => OK\nstat /a => ERR ENOENT\n".to_vec(),
            error: None,
        };
        let report = String::from_utf8(diff_report(&script, Path::new("s.ops"), &linux, &theirs))
            .expect("text");
        assert_eq!(
            report,
            "s.ops:3: linux:   stat /a => OK x\ns.ops:3: tessera: stat /a => ERR ENOENT\n"
        );
    }

    #[test]
    fn out_files_sit_beside_their_scripts() {
        assert_eq!(
            out_path(Path::new("t/01-a.ops")),
            PathBuf::from("t/01-a.out")
        );
        assert_eq!(
            out_path(Path::new("t/script")),
            PathBuf::from("t/script.out")
        );
    }
}
