//! Differential target: the script decoded from the fuzzer's bytes (as in
//! `walker`) runs on Tessera and on the host kernel; any difference in the
//! outputs, an invariant violation or a panic is a crash. Needs root (or
//! user namespaces) for the Linux backend; without it, it checks Tessera
//! alone.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera::fuzz::{evaluate, gen, Kind};

/// Whether the Linux backend runs here, asked once (it forks a child).
static LINUX: OnceLock<bool> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let script = gen::script_from_fuzz_input(data, 24);
    let linux = *LINUX.get_or_init(|| tessera::ops::linux::available().is_ok());
    let e = evaluate(script.as_bytes(), linux, std::time::Duration::from_secs(10));
    let Some(kind) = e.finding else { return };
    // Linux can change its answer between runs of one script (a walk near
    // 40 links that restarts, a clock tick between two calls): a difference
    // counts only if a whole second evaluation shows it again.
    if kind == Kind::Difference
        && evaluate(script.as_bytes(), linux, std::time::Duration::from_secs(10)).finding
            != Some(Kind::Difference)
    {
        return;
    }
    let show = |o: &Option<tessera::ops::Outcome>| {
        o.as_ref()
            .map_or_else(String::new, |o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match kind {
        Kind::Difference => panic!(
            "Tessera and Linux differ on:\n{script}\n--- linux\n{}\n--- tessera\n{}",
            show(&e.linux),
            show(&e.tessera)
        ),
        Kind::Invariant(m) => panic!("invariant violation: {m}\n{script}"),
        Kind::Panic(m) => panic!("Tessera panicked: {m}\n{script}"),
    }
});
