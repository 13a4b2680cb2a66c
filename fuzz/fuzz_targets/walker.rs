//! The path walker and every operation behind it, driven by op sequences
//! decoded from the fuzzer's bytes (each byte pair is one choice of the
//! script generator of `tessera fuzz`). Runs on Tessera alone with the VFS
//! invariants checked after every call: a violation or a panic is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::fuzz::{evaluate, gen, Kind};

fuzz_target!(|data: &[u8]| {
    let script = gen::script_from_fuzz_input(data, 64);
    let e = evaluate(script.as_bytes(), false, std::time::Duration::from_secs(10));
    match e.finding {
        None | Some(Kind::Difference) => {}
        Some(Kind::Invariant(m)) => panic!("invariant violation: {m}\n{script}"),
        Some(Kind::Panic(m)) => panic!("Tessera panicked: {m}\n{script}"),
    }
});
