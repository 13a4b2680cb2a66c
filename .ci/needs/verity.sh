# verity (issue 5): the real `fsverity` tool, for the cross-check test
# fsimpl/tests/verity_fsverity.rs, which must not skip in CI.
# Sourced by .ci/run from the repo root; idempotent.
set -euo pipefail
if ! command -v fsverity >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq fsverity; } ||
        { sleep 5; apt-get update -qq && apt-get install -y -qq fsverity; }
fi
# Makes the cross-check fail rather than skip if the tool is missing.
export TESSERA_REQUIRE_FSVERITY=1
