//! The ops-script parser and interpreter on arbitrary bytes: never a panic,
//! and memory bounded (run with `-rss_limit_mb` / `-malloc_limit_mb`). The
//! parsed script is run on the null backend, so the interpreter's own code
//! (handles, formatting, bounded reads) is covered too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::ops::backend::NullBackend;
use tessera::ops::{parse_script, run_collect};

fuzz_target!(|data: &[u8]| {
    if let Ok(script) = parse_script(data) {
        let _ = run_collect(&script, &mut NullBackend);
    }
});
