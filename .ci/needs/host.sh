# CI needs of mountns::host (issue 7), sourced by .ci/run from the repo root.
#
# The Windows backend's system-call edge (mountns/src/host/windows/sys.rs) is
# compiled only for Windows, so check and lint it for the Windows GNU target.
# Neither step links, so no mingw toolchain is needed (only the target's std).
# The backend's behaviour is tested on Linux by the ordinary `cargo test` run:
# mountns/tests/host_windows_sim.rs (simulated Windows host) and
# mountns/tests/host_linux.rs (real mounts; needs root, which CI has, and
# skips with a note otherwise).
set -euo pipefail

host_windows_target=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$host_windows_target"; then
    rustup target add "$host_windows_target" || rustup target add "$host_windows_target"
fi

echo "== mountns::host: cargo check/clippy for $host_windows_target"
cargo check -p tessera-mountns --all-targets --target "$host_windows_target"
cargo clippy -p tessera-mountns --all-targets --target "$host_windows_target" -- -D warnings
