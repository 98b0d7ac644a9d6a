#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each (FUZZTIME,
# default 10s) and prints the executions per target and in all. A crash
# fails the run; Go saves its input under the package's testdata/fuzz/,
# where the next `go test` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${FUZZTIME:-10s}
total=0
targets=0
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  log=$(mktemp)
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" "$pkg" >"$log" 2>&1; then
    cat "$log"
    echo "fuzz: $name in $pkg failed" >&2
    rm -f "$log"
    exit 1
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  rm -f "$log"
  printf 'fuzz: %-28s %-28s %10s executions in %s\n' "$name" "$pkg" "${execs:-0}" "$time"
  total=$((total + ${execs:-0}))
  targets=$((targets + 1))
done < <(git grep -o -E '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' | sed 's/:func /:/')
echo "fuzz: $targets targets, $total executions, no failure"
