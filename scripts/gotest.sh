#!/usr/bin/env bash
# gotest.sh ARGS...: `go test -v ARGS`, with a summary a person (and CI) can
# read at a glance: the names of failures, "N passed, N failed, N skipped" as
# the closing line, and the integration tests that skipped (SKIP-ROOT: not
# root; SKIP-DEP: a tool the test needs is missing).
#
# The exit status is go test's own: any failed test, panic, timeout or test
# binary that does not build fails the run. With MESHD_REQUIRE_INTEGRATION=1
# (set by `make test` as root and by .ci/run) an integration skip fails it too.
#
# scripts/gotest_test.go proves this on a throwaway module: change this file,
# run `go test ./scripts`.
set -uo pipefail
log=$(mktemp /tmp/meshd-gotest.XXXXXX)
trap 'rm -f "$log"' EXIT

# No `|| true` here: grep finding nothing must not hide go test's status, and
# PIPESTATUS is read on the very next line, before anything else runs.
go test -v "$@" 2>&1 | tee "$log" | grep -E --line-buffered '^(ok|FAIL|---|panic:|\?)|SKIP-ROOT|SKIP-DEP|\[(build|setup) failed\]'
rc=${PIPESTATUS[0]}

passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
# A package that did not build, or whose binary died before reporting a test
# (panic in init, timeout, os.Exit), has no "--- FAIL" line: count it by its
# package line so the closing count never says 0 failed on a red run.
broken=$(grep -E '^FAIL\s+\S+\s+\[(build|setup) failed\]|^FAIL\s+\S+\s+[0-9.]+s$' "$log" | awk '{print $2}' | sort -u)
failednames=$(grep -E '^\s*--- FAIL' "$log" | sed -E 's/^\s*--- FAIL: ([^ ]+).*/\1/' | sort -u)
integskips=$(grep -cE 'SKIP-ROOT|SKIP-DEP' "$log")

if [ "$rc" -ne 0 ]; then
	echo
	echo "== failing output (last 150 lines) =="
	tail -n 150 "$log"
	echo
	# Each failed test's own output, so a CI log says why and not only
	# which (the tail above may belong to later packages). Bounded per test.
	for name in $failednames; do
		case $name in */*) continue ;; esac # subtests show inside their parent
		echo
		echo "== output of $name (last 60 lines) =="
		awk -v n="$name" '$0 ~ "^=== RUN   "n"$" {on=1} on {print} $0 ~ "^--- FAIL: "n" " {on=0}' "$log" |
			grep -vE '^\s*$' | tail -n 60
	done
	echo
	echo "== failed =="
	[ -n "$failednames" ] && printf '  %s\n' $failednames
	[ -n "$broken" ] && printf '  package %s\n' $broken
	if [ "$failed" -eq 0 ]; then
		failed=$(echo "$broken" | grep -c .)
		[ "$failed" -eq 0 ] && failed=1
	fi
fi
if [ "$integskips" -gt 0 ]; then
	echo "WARNING: $integskips integration test(s) skipped (SKIP-ROOT: need root; SKIP-DEP: a tool is missing):"
	grep -hoE '(SKIP-ROOT|SKIP-DEP).*' "$log" | sort | uniq -c
	if [ "${MESHD_REQUIRE_INTEGRATION:-0}" = 1 ]; then
		echo "integration tests are required here (MESHD_REQUIRE_INTEGRATION=1): failing"
		[ "$rc" -eq 0 ] && rc=1
	fi
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
