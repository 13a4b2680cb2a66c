# ops: the ops-script runner and its Linux backend (`tessera run --linux`).
# Nothing to install: it needs only the Rust toolchain and the libc crate.
# Its tests (tests/ops_scripts.rs, run by `cargo test`) use the Linux backend
# when CI runs as root (or user namespaces are allowed) and skip that half
# otherwise, saying so on stderr. Say which mode CI is in, for the log.
if [ "$(id -u)" = 0 ]; then
    echo "ops: root: the Linux half of the ops-script harness will run"
else
    echo "ops: not root: the Linux half runs in a user namespace (differences only printed)"
fi
