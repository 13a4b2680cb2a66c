# fuzz: a short `tessera fuzz` run (200 scripts, about 10 s). It always runs
# Tessera with the VFS invariants checked after every call; as root it also
# compares with Linux. Differences are printed for the log but do not fail CI:
# the regression scripts in tests/ops/fuzz-* fail `cargo test` instead, and a
# loaded CI host makes Linux itself change answers now and then (FUZZING.md);
# an invariant violation or a panic of Tessera fails CI.
echo "fuzz: tessera fuzz --seed 1 --count 200"
cargo build --release --quiet --bin tessera
fuzz_log=$(mktemp)
"${CARGO_TARGET_DIR:-target}"/release/tessera fuzz --seed 1 --count 200 --jobs 2 > "$fuzz_log" 2>&1 || true
tail -n 1 "$fuzz_log"
if grep -E '^== script [0-9]+: (invariant violation|panic)' "$fuzz_log"; then
    echo "fuzz: Tessera broke an invariant or panicked (above)"
    rm -f "$fuzz_log"
    false
fi
rm -f "$fuzz_log"
