#!/usr/bin/env bash
# Publishes testos' tests and needles (main.star, tests/, needles/ beside
# this script) as a git repository at DIR, the CASEDIR of the demo jobs.
# Each run commits what changed, so a job always names the commit it ran.
set -euo pipefail
dir=${1:?usage: make-repo.sh DIR}
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
git=(git -C "$dir" -c user.name=jetqa -c user.email=jetqa@localhost -c init.defaultBranch=main)
[ -d "$dir/.git" ] || "${git[@]}" init -q
find "$dir" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
cp -r "$src/main.star" "$src/tests" "$src/needles" "$dir/"
"${git[@]}" add -A
if ! "${git[@]}" diff --cached --quiet; then
  "${git[@]}" commit -q -m "testos tests and needles"
fi
echo "testos tests: $dir at $("${git[@]}" rev-parse --short HEAD)"
