# gofer (issue 6): the 9P2000.L client's tests against a real server.
# fsimpl/tests/gofer_diod.rs starts diod itself (socketpair, unix socket,
# TCP on 127.0.0.1); with TESSERA_REQUIRE_DIOD=1 it fails instead of
# skipping when diod is missing. Sourced by .ci/run from the repo root;
# idempotent. The benchmark (benches/gofer.rs) is compiled by clippy
# --all-targets but not run: timings on a shared CI machine mean little.
set -euo pipefail
if ! command -v diod >/dev/null 2>&1 && [ ! -x /usr/sbin/diod ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq diod; } ||
        { sleep 5; apt-get update -qq && apt-get install -y -qq diod; }
fi
export TESSERA_REQUIRE_DIOD=1
