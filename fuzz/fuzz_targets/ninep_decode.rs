//! The 9P2000.L decoder (`gofer::wire::decode`) on arbitrary bytes: never a
//! panic, whatever a server sends. The first byte picks the negotiated
//! msize (small, diod's 65536, or our default); the rest is the frame. A
//! frame that decodes is encoded again and must decode to the same message
//! (Rreaddir's entries are walked too, as the client walks them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_fsimpl::gofer::wire::{decode, Dirents, Msg};
use tessera_fsimpl::gofer::DEFAULT_MSIZE;

fuzz_target!(|data: &[u8]| {
    // Declared first: the re-decoded message borrows it and is compared with `msg`.
    let mut out = Vec::new();
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let msize = match pick % 4 {
        0 => 4096,
        1 => 8192,
        2 => 65536,
        _ => DEFAULT_MSIZE,
    };
    let Ok((tag, msg)) = decode(frame, msize) else {
        return;
    };
    if let Msg::Rreaddir { data } = &msg {
        for d in Dirents::new(data) {
            if d.is_err() {
                break;
            }
        }
    }
    if msg.encode(tag, &mut out).is_ok() {
        let again = decode(&out, msize.max(out.len() as u32));
        assert_eq!(again.map(|(t, m)| (t, m)), Ok((tag, msg)), "re-encoded frame differs");
    }
});
