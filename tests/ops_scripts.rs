//! The ops-script harness: every `*.ops` in `tests/ops/` and in
//! `../shared/spec/examples/` (when that folder exists) is run and compared
//! with the `.out` beside it.
//!
//! - On Tessera's backend, once it is wired (`tessera::ops::tessera_backend`
//!   returns `Ok`); until then that half says loudly that it is skipped.
//! - On Linux, when the Linux backend can run here (root, or user
//!   namespaces): a disagreement means the `.out` is stale. As root this
//!   fails the test; in a user namespace some results legitimately differ
//!   (see `linux::userns_note`), so differences are only printed.
//!
//! The two script-error cases of `examples/README.md` are checked on the
//! built binary: exit status, standard error and standard output.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera::ops::{self, linux, Outcome};

fn script_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![root.join("tests/ops"), root.join("../shared/spec/examples")]
}

/// Every `(script, expected output)` pair; a script without `.out` is listed
/// with `None`.
fn scripts() -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut all = Vec::new();
    for dir in script_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("note: {} is absent; its scripts are skipped", dir.display());
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ops"))
            .collect();
        found.sort();
        for p in found {
            let expected = std::fs::read(p.with_extension("out")).ok();
            all.push((p, expected));
        }
    }
    all
}

/// A readable account of how `got` differs from `want`, line by line.
fn describe_diff(script: &Path, want: &[u8], got: &Outcome) -> String {
    let want = String::from_utf8_lossy(want);
    let have = String::from_utf8_lossy(&got.stdout);
    let (w, h): (Vec<&str>, Vec<&str>) = (want.lines().collect(), have.lines().collect());
    let mut s = format!("--- {} (expected .out) vs. run\n", script.display());
    for i in 0..w.len().max(h.len()) {
        let (a, b) = (w.get(i), h.get(i));
        if a != b {
            s.push_str(&format!(
                "  output line {}:\n    want: {}\n    got:  {}\n",
                i + 1,
                a.unwrap_or(&"(none)"),
                b.unwrap_or(&"(none)")
            ));
        }
    }
    if let Some(e) = &got.error {
        s.push_str(&format!("  script error: {e}\n"));
    }
    s
}

fn check_all(
    label: &str,
    attempts: usize,
    mut run: impl FnMut(&ops::Script) -> Result<Outcome, String>,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (path, expected) in scripts() {
        let Some(expected) = expected else {
            failures.push(format!(
                "{}: no .out beside it (make it with `tessera run --linux --write-out`)",
                path.display()
            ));
            continue;
        };
        let src = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let script = match ops::parse_script(&src) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        ran += 1;
        // Only a consistent difference counts: Linux itself answers ELOOP
        // instead of ENOENT at exactly 40 links when a busy host makes its
        // lock-free walk restart (see FUZZING.md).
        let mut last = None;
        for _ in 0..attempts {
            match run(&script) {
                Ok(out) if out.stdout == expected && out.error.is_none() => {
                    last = None;
                    break;
                }
                Ok(out) => last = Some(describe_diff(&path, &expected, &out)),
                Err(e) => last = Some(format!("{}: {label} could not run it: {e}", path.display())),
            }
        }
        failures.extend(last);
    }
    (ran, failures)
}

#[test]
fn tessera_backend_matches_the_out_files() {
    if let Err(why) = ops::tessera_backend() {
        eprintln!("\n**************************************************************");
        eprintln!("SKIPPED: the Tessera half of the ops-script harness: {why}");
        eprintln!("**************************************************************\n");
        return;
    }
    // Three attempts here too: a followed link's access time is compared
    // with the coarse clock, so whether a script crosses a clock tick
    // between making a link and following it (fuzz-33's `RESOLVE_CACHED`:
    // `EAGAIN` or not) changes its answer, on Linux and on Tessera alike.
    let (ran, failures) = check_all("Tessera", 3, |script| {
        let mut backend = ops::tessera_backend()?;
        Ok(ops::run_collect(script, backend.as_mut()))
    });
    assert!(
        failures.is_empty(),
        "{} of {ran} scripts differ on Tessera:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn linux_agrees_with_the_out_files() {
    if let Err(e) = linux::available() {
        eprintln!("SKIPPED: the Linux backend cannot run here: {e}");
        return;
    }
    let (ran, failures) = check_all("Linux", 3, |script| {
        linux::run_script(script, linux::DEFAULT_TIMEOUT).map_err(|e| e.to_string())
    });
    if let Some(note) = linux::userns_note() {
        eprintln!("{note}");
        for f in &failures {
            eprintln!("(not failing in a user namespace) {f}");
        }
        return;
    }
    assert!(ran > 0 || failures.is_empty());
    assert!(
        failures.is_empty(),
        "{} of {ran} .out files disagree with Linux (stale?):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A scratch directory for this test process, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tessera-ops-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write script");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CASE_A: &str =
    "# An unknown flag name is a script error; nothing runs.\nopen f /f O_RDWR|O_CREATE 0644\nmkdir /never 0755\n";
const CASE_B: &str = "# Lines before a script error run and print; a closed handle is unbound.\n\
open f /f O_RDWR|O_CREAT 0644\nclose f\nwrite f \"x\"\nmkdir /never 0755\n";

fn tessera(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run the tessera binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The backends the binary can run here, as `run` arguments.
fn runnable_backends() -> Vec<Vec<&'static str>> {
    let mut v = Vec::new();
    if linux::available().is_ok() {
        v.push(vec!["run", "--linux"]);
    }
    if ops::tessera_backend().is_ok() {
        v.push(vec!["run"]);
    }
    v
}

fn stderr_error_line(stderr: &str) -> &str {
    // In a user namespace the runner prints a note first.
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("")
}

#[test]
fn script_error_a_unknown_flag_name() {
    let dir = Scratch::new("a");
    let script = dir.file("a.ops", CASE_A);
    // A parse error stops the script before any backend is needed.
    let mut modes = runnable_backends();
    modes.push(vec!["run"]);
    for mode in modes {
        let mut args: Vec<&std::ffi::OsStr> = mode.iter().map(std::ffi::OsStr::new).collect();
        args.push(script.as_os_str());
        let (code, stdout, stderr) = tessera(&args);
        assert_eq!(code, 2, "{mode:?}: {stderr}");
        assert_eq!(stdout, "", "{mode:?}");
        assert_eq!(
            stderr_error_line(&stderr),
            "error: line 2: unknown flag name O_CREATE",
            "{mode:?}"
        );
    }
}

#[test]
fn script_error_b_handle_used_after_close() {
    let dir = Scratch::new("b");
    let script = dir.file("b.ops", CASE_B);
    let modes = runnable_backends();
    if modes.is_empty() {
        eprintln!("SKIPPED: no backend can run here (Linux unavailable, Tessera not wired)");
    }
    for mode in modes {
        let mut args: Vec<&std::ffi::OsStr> = mode.iter().map(std::ffi::OsStr::new).collect();
        args.push(script.as_os_str());
        let (code, stdout, stderr) = tessera(&args);
        assert_eq!(code, 2, "{mode:?}: {stderr}");
        assert_eq!(
            stdout, "open f /f O_RDWR|O_CREAT 0644 => OK\nclose f => OK\n",
            "{mode:?}"
        );
        assert_eq!(
            stderr_error_line(&stderr),
            "error: line 4: unknown handle f",
            "{mode:?}"
        );
    }
}

#[test]
fn write_out_writes_the_linux_output_beside_the_script() {
    if linux::available().is_err() {
        eprintln!("SKIPPED: the Linux backend cannot run here");
        return;
    }
    let dir = Scratch::new("w");
    let script = dir.file("w.ops", "# x\nmkdir /d 0755\nstat /d\nls /\numask 0\n");
    let (code, stdout, stderr) = tessera(&[
        "run".as_ref(),
        "--linux".as_ref(),
        "--write-out".as_ref(),
        script.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    let written = std::fs::read_to_string(dir.0.join("w.out")).expect("w.out written");
    assert_eq!(
        written,
        "mkdir /d 0755 => OK\nstat /d => OK type=dir mode=0755 nlink=2 uid=0 gid=0\nls / => OK d:dir\numask 0 => OK 0022\n"
    );
}

#[test]
fn a_blocking_script_is_killed_at_the_time_limit() {
    if linux::available().is_err() {
        eprintln!("SKIPPED: the Linux backend cannot run here");
        return;
    }
    // Opening a FIFO for reading with no writer blocks forever on Linux.
    let script = ops::parse_script(b"mknod /p S_IFIFO|0600\nopen f /p O_RDONLY\n").expect("parses");
    match linux::run_script(&script, std::time::Duration::from_millis(300)) {
        Err(linux::LinuxError::Timeout(_, partial)) => {
            assert_eq!(String::from_utf8_lossy(&partial), "");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tessera(&[]).0, 2);
    assert_eq!(tessera(&["bogus".as_ref()]).0, 2);
    assert_eq!(tessera(&["run".as_ref()]).0, 2);
    assert_eq!(
        tessera(&["run".as_ref(), "--write-out".as_ref(), "x.ops".as_ref()]).0,
        2
    );
    let (code, stdout, _) = tessera(&["--help".as_ref()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("run") && stdout.contains("diff"));
}

#[test]
fn the_command_prints_every_example_as_its_out_file() {
    if linux::available().is_err() || linux::userns_note().is_some() {
        eprintln!("SKIPPED: needs the Linux backend as root");
        return;
    }
    let pairs: Vec<(PathBuf, Vec<u8>)> = scripts()
        .into_iter()
        .filter_map(|(p, out)| out.map(|o| (p, o)))
        .collect();
    if pairs.is_empty() {
        eprintln!("SKIPPED: no scripts with .out files here");
        return;
    }
    let want: Vec<u8> = pairs.iter().flat_map(|(_, o)| o.iter().copied()).collect();
    // Three tries: a busy host can make Linux itself answer differently
    // (see `check_all`).
    let mut last = None;
    for _ in 0..3 {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("run")
            .arg("--linux")
            .args(pairs.iter().map(|(p, _)| p.as_os_str()))
            .output()
            .expect("run the tessera binary");
        if out.status.code() == Some(0) && out.stdout == want {
            return;
        }
        last = Some(out);
    }
    let out = last.expect("three runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    panic!("`tessera run --linux` output differs from the concatenated .out files");
}
