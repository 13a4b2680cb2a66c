//! `tessera fuzz`: random differential testing of Tessera against Linux.
//!
//! Each generated script ([`gen`]) runs on Tessera, with the VFS invariants
//! checked after every call ([`check`]), and on the host kernel (the ops
//! runner's Linux backend). A script is a finding when
//! - the two outputs differ (a *difference*),
//! - an invariant of the VFS breaks (an *invariant* finding), or
//! - Tessera panics (a *panic*).
//!
//! Each finding is shrunk by delta debugging over its lines ([`minimize`])
//! to a script that still shows the same kind of finding, printed, and, with
//! `--keep DIR`, saved there with both outputs. `FUZZING.md` at the top of
//! the repository is the user's guide.

pub mod check;
pub mod gen;
pub mod minimize;
pub mod stats;

use std::collections::HashMap;
use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::ops::{self, linux, Outcome};

const HELP: &str = "\
usage: tessera fuzz --seed S --count N [--ops K] [--keep DIR] [--stats]
                    [--jobs J] [--prefix FILE] [--no-linux] [--start I]
                    [--print] [--timeout SECS]

Generates N random ops scripts of about K operations each (default 40) from
seed S, runs each on Tessera (checking the VFS invariants after every call)
and on Linux, and reports every script whose outputs differ, that breaks an
invariant, or that makes Tessera panic, minimised by delta debugging over
its lines. Ends with: `N scripts, M ops, D differences`.
  --keep DIR     write each minimised finding to DIR as NAME.ops, with the
                 outputs NAME.linux and NAME.tessera, and the numbers of the
                 scripts Linux answered differently on reruns to unstable.txt
  --stats        print how often each operation and each (operation, errno)
                 pair appeared (from the Linux outputs)
  --jobs J       run J scripts at a time (default: the number of CPUs)
  --prefix FILE  start every script with the lines of FILE (your own
                 scenario: the random operations then run on it)
  --no-linux     run Tessera only: invariants and panics, no differences
  --start I      number the scripts from I (script I of seed S is the same
                 script whatever N is: rerun one finding with --start I --count 1)
  --print        print the generated scripts instead of running them
  --timeout S    kill a Linux run after S seconds (default 10)
Exit status: 0 when nothing was found, 1 when something was, 2 on a usage
error.
";

/// What `tessera fuzz` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The run's seed.
    pub seed: u64,
    /// How many scripts.
    pub count: u64,
    /// The number of the first script.
    pub start: u64,
    /// About how many random operations each script has.
    pub ops: usize,
    /// Where minimised findings are written.
    pub keep: Option<PathBuf>,
    /// Print the coverage table.
    pub stats: bool,
    /// Scripts run at a time.
    pub jobs: usize,
    /// Lines put before the random part of every script.
    pub prefix: Vec<u8>,
    /// Compare with Linux (otherwise Tessera alone: invariants and panics).
    pub linux: bool,
    /// Only print the scripts.
    pub print: bool,
    /// Time limit of one Linux run.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            seed: 0,
            count: 0,
            start: 0,
            ops: 40,
            keep: None,
            stats: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefix: Vec::new(),
            linux: true,
            print: false,
            timeout: Duration::from_secs(10),
        }
    }
}

fn parse_number(v: Option<&OsString>) -> Option<u64> {
    let s = v?.to_str()?;
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses the command line; `Err` is the exit status (help printed, or a
/// usage error reported).
fn parse_options(args: &[OsString]) -> Result<Options, u8> {
    let mut o = Options::default();
    let (mut seed, mut count) = (None, None);
    let mut it = args.iter();
    let usage_error = |msg: &str| {
        eprintln!("error: {msg}\n\n{HELP}");
        2u8
    };
    while let Some(a) = it.next() {
        match a.to_str().unwrap_or("") {
            "--help" | "-h" => {
                print!("{HELP}");
                return Err(0);
            }
            "--seed" => {
                seed = Some(
                    parse_number(it.next()).ok_or_else(|| usage_error("--seed takes a number"))?,
                )
            }
            "--count" => {
                count = Some(
                    parse_number(it.next()).ok_or_else(|| usage_error("--count takes a number"))?,
                )
            }
            "--start" => {
                o.start =
                    parse_number(it.next()).ok_or_else(|| usage_error("--start takes a number"))?
            }
            "--ops" => {
                o.ops = parse_number(it.next())
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n <= 100_000)
                    .ok_or_else(|| usage_error("--ops takes a number up to 100000"))?
            }
            "--jobs" => {
                o.jobs = parse_number(it.next())
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| usage_error("--jobs takes a number from 1 to 256"))?
            }
            "--timeout" => {
                let s = it
                    .next()
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| usage_error("--timeout takes a positive number of seconds"))?;
                o.timeout = Duration::from_secs_f64(s);
            }
            "--keep" => {
                o.keep = Some(
                    it.next()
                        .map(PathBuf::from)
                        .ok_or_else(|| usage_error("--keep takes a directory"))?,
                )
            }
            "--prefix" => {
                let p = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| usage_error("--prefix takes a file"))?;
                o.prefix = std::fs::read(&p).map_err(|e| {
                    eprintln!("error: cannot read {}: {e}", p.display());
                    1u8
                })?;
                if let Err(e) = ops::parse_script(&o.prefix) {
                    eprintln!("{e} (in {})", p.display());
                    return Err(2);
                }
                if !o.prefix.is_empty() && !o.prefix.ends_with(b"\n") {
                    o.prefix.push(b'\n');
                }
            }
            "--stats" => o.stats = true,
            "--no-linux" => o.linux = false,
            "--print" => o.print = true,
            other => return Err(usage_error(&format!("unknown argument {other}"))),
        }
    }
    o.seed = seed.ok_or_else(|| usage_error("--seed is required"))?;
    o.count = count.ok_or_else(|| usage_error("--count is required"))?;
    Ok(o)
}

/// The entry point of `tessera fuzz` (a row of the command table).
pub fn command(args: &[OsString]) -> u8 {
    let o = match parse_options(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if o.print {
        for i in o.start..o.start + o.count {
            print!("{}", script_text(&o, i));
        }
        return 0;
    }
    if o.linux {
        if let Some(note) = linux::userns_note() {
            eprintln!("{note}");
        }
        if let Err(e) = linux::available() {
            eprintln!("error: the Linux backend cannot run here ({e}); use --no-linux");
            return 1;
        }
    }
    if let Some(dir) = &o.keep {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: cannot create {}: {e}", dir.display());
            return 1;
        }
    }
    let summary = run(&o);
    if o.stats {
        print!("{}", summary.stats.table());
    }
    if summary.skipped > 0 {
        eprintln!(
            "note: {} scripts could not run on Linux (time limit or sandbox) and were not compared",
            summary.skipped
        );
    }
    if summary.unstable > 0 {
        eprintln!(
            "note: {} scripts differed but Linux gave different answers on reruns (not counted)",
            summary.unstable
        );
        if let Some(dir) = &o.keep {
            // Their numbers, to look at with `--start I --count 1 --print`.
            let mut ids = summary.unstable_ids.clone();
            ids.sort_unstable();
            let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
            if let Err(e) = std::fs::write(dir.join("unstable.txt"), text) {
                eprintln!("error: cannot write unstable.txt: {e}");
            }
        }
    }
    println!(
        "{} scripts, {} ops, {} differences",
        summary.scripts, summary.ops, summary.findings
    );
    u8::from(summary.findings > 0)
}

/// The text of script number `index` of the run: the prefix, then the
/// generated lines.
pub fn script_text(o: &Options, index: u64) -> String {
    let mut s = String::from_utf8_lossy(&o.prefix).into_owned();
    s.push_str(&format!(
        "# tessera fuzz --seed {} --start {index} --count 1\n",
        o.seed
    ));
    s.push_str(&gen::generate(gen::script_seed(o.seed, index), o.ops));
    s
}

/// What a whole run found.
#[derive(Default)]
pub struct Summary {
    /// Scripts run.
    pub scripts: u64,
    /// Operation lines in them.
    pub ops: u64,
    /// Findings (differences, invariant violations, panics), each script
    /// counted once; only the first of each signature is minimised.
    pub findings: u64,
    /// Scripts whose Linux run failed (not compared).
    pub skipped: u64,
    /// Scripts that differed but on which Linux itself gave two answers.
    pub unstable: u64,
    /// Their script numbers.
    pub unstable_ids: Vec<u64>,
    /// Coverage.
    pub stats: stats::Stats,
}

/// The kind of a finding; minimisation keeps the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The outputs differ.
    Difference,
    /// A VFS invariant broke (the message).
    Invariant(String),
    /// Tessera panicked (the message).
    Panic(String),
}

/// One script's runs.
pub struct Evaluation {
    /// Tessera's outcome (`None` after a panic).
    pub tessera: Option<Outcome>,
    /// Linux's outcome (`None` when not run or when it failed).
    pub linux: Option<Outcome>,
    /// Why Linux could not run it.
    pub linux_error: Option<String>,
    /// What is wrong, if anything.
    pub finding: Option<Kind>,
    /// Linux gave different outputs for the same script (not a finding).
    pub linux_unstable: bool,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// Runs one script on both sides and classifies the result.
pub fn evaluate(src: &[u8], with_linux: bool, timeout: Duration) -> Evaluation {
    let script = match ops::parse_script(src) {
        Ok(s) => s,
        Err(e) => {
            // The generator only writes valid lines; a user's prefix was
            // checked. This is a bug of the generator: report it as Tessera's.
            return Evaluation {
                tessera: None,
                linux: None,
                linux_error: None,
                finding: Some(Kind::Panic(format!("generated script does not parse: {e}"))),
                linux_unstable: false,
            };
        }
    };
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut b = check::CheckingBackend::new()?;
        let out = ops::run_collect(&script, &mut b);
        Ok::<_, String>((out, b.violation().map(str::to_string)))
    }));
    let (tessera, violation) = match ran {
        Ok(Ok((out, v))) => (Some(out), v),
        Ok(Err(msg)) => (None, Some(msg)),
        Err(p) => {
            return Evaluation {
                tessera: None,
                linux: None,
                linux_error: None,
                finding: Some(Kind::Panic(panic_message(p.as_ref()))),
                linux_unstable: false,
            }
        }
    };
    let mut e = Evaluation {
        tessera,
        linux: None,
        linux_error: None,
        finding: violation.map(Kind::Invariant),
        linux_unstable: false,
    };
    if with_linux {
        match linux::run_script(&script, timeout) {
            Ok(out) => e.linux = Some(out),
            Err(err) => e.linux_error = Some(err.to_string()),
        }
    }
    if e.finding.is_none() {
        if let (Some(l), Some(t)) = (&e.linux, &e.tessera) {
            if l != t {
                e.finding = Some(Kind::Difference);
            }
        }
    }
    if e.finding == Some(Kind::Difference) {
        // Linux itself is not always deterministic: a path walk that drops
        // out of RCU mode because of mount activity anywhere on the host
        // restarts without resetting its symlink count, so a chain near 40
        // links can give ELOOP once and ENOENT the next time. A difference
        // counts only when Linux repeats its answer.
        for _ in 0..LINUX_REPEATS {
            let again = linux::run_script(&script, timeout).ok();
            if again.as_ref() != e.linux.as_ref() {
                e.finding = None;
                e.linux_unstable = true;
                break;
            }
        }
    }
    e
}

/// How many more times Linux runs a script that differs, to check that its
/// answer is stable.
const LINUX_REPEATS: usize = 2;

/// Whether a candidate of the minimiser still shows a finding of `kind`.
fn still_shows(kind: &Kind, src: &[u8], o: &Options) -> bool {
    let e = evaluate(src, o.linux && *kind == Kind::Difference, o.timeout);
    match (kind, &e.finding) {
        // A candidate that became a script error (a handle whose binding line
        // was removed) differs for an uninteresting reason.
        (Kind::Difference, Some(Kind::Difference)) => {
            let clean = |out: &Option<Outcome>| out.as_ref().is_some_and(|x| x.error.is_none());
            clean(&e.linux) && clean(&e.tessera)
        }
        (Kind::Invariant(_), Some(Kind::Invariant(_))) => true,
        (Kind::Panic(a), Some(Kind::Panic(b))) => {
            // The same panic site: compare the message before any values.
            let head = |s: &str| s.split([':', '`']).next().unwrap_or("").to_string();
            head(a) == head(b)
        }
        _ => false,
    }
}

/// Shrinks a finding's script; returns the minimal script text.
fn minimise(kind: &Kind, src: &str, o: &Options) -> (String, usize) {
    let lines: Vec<&str> = src
        .lines()
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect();
    let join = |ls: &[&str]| {
        let mut s = ls.join("\n");
        s.push('\n');
        s
    };
    let (min, tests) = minimize::ddmin(lines, |cand| still_shows(kind, join(cand).as_bytes(), o));
    (join(&min), tests)
}

/// A readable report of one minimised finding.
fn describe(kind: &Kind, index: u64, original: usize, min: &str, e: &Evaluation) -> String {
    let what = match kind {
        Kind::Difference => "difference".to_string(),
        Kind::Invariant(m) => format!("invariant violation: {m}"),
        Kind::Panic(m) => format!("panic: {m}"),
    };
    let mut s = format!(
        "== script {index}: {what}\n   minimised from {original} to {} lines:\n",
        min.lines().count()
    );
    for l in min.lines() {
        s.push_str(&format!("   | {l}\n"));
    }
    if let (Some(l), Some(t)) = (&e.linux, &e.tessera) {
        let (ll, tl): (Vec<&[u8]>, Vec<&[u8]>) = (
            l.stdout.split(|&b| b == b'\n').collect(),
            t.stdout.split(|&b| b == b'\n').collect(),
        );
        for i in 0..ll.len().max(tl.len()) {
            let (a, b) = (ll.get(i), tl.get(i));
            if a != b {
                let show = |x: Option<&&[u8]>| {
                    x.map_or("(no line)".to_string(), |v| {
                        String::from_utf8_lossy(v).into_owned()
                    })
                };
                s.push_str(&format!(
                    "   linux:   {}\n   tessera: {}\n",
                    show(a),
                    show(b)
                ));
            }
        }
        if l.error != t.error {
            s.push_str(&format!(
                "   linux error: {:?}\n   tessera error: {:?}\n",
                l.error.as_ref().map(|e| e.to_string()),
                t.error.as_ref().map(|e| e.to_string())
            ));
        }
    }
    s
}

/// Saves a minimised finding as NAME.ops, NAME.linux and NAME.tessera.
fn keep(dir: &std::path::Path, name: &str, header: &str, min: &str, e: &Evaluation) {
    let mut text = String::new();
    for l in header.lines() {
        text.push_str(&format!("# {l}\n"));
    }
    text.push_str(min);
    let mut files = vec![(format!("{name}.ops"), text.into_bytes())];
    if let Some(l) = &e.linux {
        files.push((format!("{name}.linux"), l.stdout.clone()));
    }
    if let Some(t) = &e.tessera {
        files.push((format!("{name}.tessera"), t.stdout.clone()));
    }
    for (f, bytes) in files {
        let p = dir.join(f);
        if let Err(err) = std::fs::write(&p, bytes) {
            eprintln!("error: cannot write {}: {err}", p.display());
        }
    }
}

/// A short name for the cause of a finding: for a difference, the operation
/// and both results of the first line that differs; for the others, the
/// message up to its first detail.
pub fn signature(kind: &Kind, e: &Evaluation) -> String {
    match kind {
        Kind::Invariant(m) | Kind::Panic(m) => {
            let m = m.split_once("): ").map_or(m.as_str(), |(_, rest)| rest);
            m.split(['"', '{']).next().unwrap_or("").trim().to_string()
        }
        Kind::Difference => {
            let (Some(l), Some(t)) = (&e.linux, &e.tessera) else {
                return "difference".into();
            };
            let lines = |o: &Outcome| -> Vec<String> {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            };
            let (ll, tl) = (lines(l), lines(t));
            let result = |x: Option<&String>| {
                x.map_or("(no line)".to_string(), |s| {
                    let r = s.rsplit_once(" => ").map_or("", |(_, r)| r);
                    // Values (stat lines, listings) vary; keep OK/ERR and the errno.
                    r.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
                })
            };
            for i in 0..ll.len().max(tl.len()) {
                if ll.get(i) != tl.get(i) {
                    let line = ll.get(i).or(tl.get(i)).map_or("", |s| s.as_str());
                    let op = line.split_whitespace().next().unwrap_or("");
                    let (a, b) = (result(ll.get(i)), result(tl.get(i)));
                    return format!("{op}: linux {a}, tessera {b}");
                }
            }
            format!(
                "script error: linux {:?}, tessera {:?}",
                l.error.as_ref().map(|e| e.line),
                t.error.as_ref().map(|e| e.line)
            )
        }
    }
}

/// Runs the whole fuzzing session (no printing of the summary line).
pub fn run(o: &Options) -> Summary {
    // Panics are findings, caught and reported with their script; the
    // default hook would print each one again, minimisation runs included.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Summary::default());
    let stdout = Mutex::new(());
    let signatures: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..o.jobs.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as u64;
                if k >= o.count {
                    break;
                }
                let index = o.start + k;
                let src = script_text(o, index);
                let e = evaluate(src.as_bytes(), o.linux, o.timeout);
                let n_ops = ops::parse_script(src.as_bytes()).map_or(0, |s| s.lines.len()) as u64;
                {
                    let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                    t.scripts += 1;
                    t.ops += n_ops;
                    if e.linux_error.is_some() {
                        t.skipped += 1;
                    }
                    if e.linux_unstable {
                        t.unstable += 1;
                        t.unstable_ids.push(index);
                    }
                    match (&e.linux, &e.tessera) {
                        (Some(out), _) | (None, Some(out)) => t.stats.add(&out.stdout),
                        _ => {}
                    }
                }
                if let Some(err) = &e.linux_error {
                    let _g = stdout.lock();
                    eprintln!("note: script {index}: Linux run failed: {err}");
                }
                let Some(kind) = e.finding.clone() else {
                    continue;
                };
                // A difference that does not come back when the whole script
                // runs again was Linux changing its mind between runs (the
                // repeats above can all agree by chance): not a finding.
                if kind == Kind::Difference && !still_shows(&kind, src.as_bytes(), o) {
                    let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                    t.unstable += 1;
                    t.unstable_ids.push(index);
                    continue;
                }
                total.lock().unwrap_or_else(|p| p.into_inner()).findings += 1;
                // One cause usually shows up in many scripts: minimise the
                // first script of each signature only, so that a run with
                // many findings stays bounded, and name the others.
                let sig = signature(&kind, &e);
                let first = {
                    let mut seen = signatures.lock().unwrap_or_else(|p| p.into_inner());
                    match seen.get(&sig) {
                        Some(&earlier) => Some(earlier),
                        None => {
                            seen.insert(sig.clone(), index);
                            None
                        }
                    }
                };
                if let Some(earlier) = first {
                    let _g = stdout.lock();
                    println!("== script {index}: same signature as script {earlier}: {sig}");
                    continue;
                }
                let (min, _) = minimise(&kind, &src, o);
                // Run the minimal script once more for its outputs; if
                // minimisation hit its budget the result still shows `kind`.
                let me = evaluate(min.as_bytes(), o.linux, o.timeout);
                let original = src.lines().filter(|l| !l.starts_with('#')).count();
                let report = describe(&kind, index, original, &min, &me);
                if let Some(dir) = &o.keep {
                    let name = format!("fuzz-s{}-{index}", o.seed);
                    keep(dir, &name, &report, &min, &me);
                }
                let _g = stdout.lock();
                print!("{report}");
            });
        }
    });
    panic::set_hook(hook);
    total.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_require_seed_and_count() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let o = parse_options(&args(&["--seed", "0x10", "--count", "5", "--ops", "7"]))
            .unwrap_or_else(|code| panic!("does not parse: exit {code}"));
        assert_eq!((o.seed, o.count, o.ops), (16, 5, 7));
        assert!(parse_options(&args(&["--count", "5"])).is_err());
        assert!(parse_options(&args(&["--seed", "1", "--count", "x"])).is_err());
    }

    #[test]
    fn tessera_alone_finds_no_invariant_violation_in_a_few_scripts() {
        let o = Options {
            seed: 3,
            count: 20,
            linux: false,
            jobs: 1,
            ..Options::default()
        };
        let s = run(&o);
        assert_eq!(s.scripts, 20);
        assert_eq!(s.findings, 0);
    }
}
