#!/usr/bin/env bash
# gotest.sh ARGS...: `go test -v ARGS`, with a summary a person (and CI) can
# read at a glance: "N passed, N failed, N skipped", the names of failures,
# and the integration tests that skipped for want of root (SKIP-ROOT).
# With MESHD_REQUIRE_INTEGRATION=1 (set by .ci/run) any such skip fails the run.
set -uo pipefail
log=$(mktemp /tmp/meshd-gotest.XXXXXX)
trap 'rm -f "$log"' EXIT

go test -v "$@" 2>&1 | tee "$log" | grep -E --line-buffered '^(ok|FAIL|---|panic:|\?)|SKIP-ROOT' || true
rc=${PIPESTATUS[0]}

passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
rootskips=$(grep -c 'SKIP-ROOT' "$log")

if [ "$rc" -ne 0 ]; then
	echo
	echo "== failing output (last 150 lines) =="
	tail -n 150 "$log"
fi
if [ "$rootskips" -gt 0 ]; then
	echo "WARNING: $rootskips integration test(s) skipped: they need root (SKIP-ROOT)"
	if [ "${MESHD_REQUIRE_INTEGRATION:-0}" = 1 ]; then
		echo "integration tests are required here (MESHD_REQUIRE_INTEGRATION=1): failing"
		rc=1
	fi
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
