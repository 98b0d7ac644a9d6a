#!/bin/sh
# Checks the systemd units in deploy/systemd with `systemd-analyze verify`:
# any warning or error fails. The units' /usr/local/bin/jetqa is replaced
# by a stand-in, since verify wants the executable to exist, and the
# template jetqa-worker@.service is checked as instance 1. The units they
# name among themselves (Wants=, After=, ...) must all be here.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
units="$here/systemd"

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "check-units: systemd-analyze not found; it is in the systemd package (Debian: apt-get install systemd)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
printf '#!/bin/sh\nexit 0\n' >"$tmp/jetqa"
chmod 755 "$tmp/jetqa"

checked=""
for unit in "$units"/*.service "$units"/*.target; do
	[ -e "$unit" ] || continue
	name=$(basename "$unit")
	case $name in
	*@.service) name="${name%@.service}@1.service" ;;
	esac
	sed "s#/usr/local/bin/jetqa#$tmp/jetqa#g" "$unit" >"$tmp/$name"
	checked="$checked $name"
done
if [ -z "$checked" ]; then
	echo "check-units: no units in $units" >&2
	exit 1
fi

status=0
# A Wants= or After= naming a unit that does not exist is no error to
# systemd; among our own units it is a typo.
for ref in $(sed -n 's/^\(Wants\|Requires\|BindsTo\|After\|Before\|PartOf\)=//p' "$tmp"/*.service | tr ' ' '\n' | grep '^jetqa' | sort -u); do
	if [ ! -e "$units/$ref" ]; then
		echo "FAIL  $ref is named by a unit but is not in $units"
		status=1
	fi
done
for name in $checked; do
	# verify loads the units these depend on from the same directory first.
	if out=$(cd "$tmp" && SYSTEMD_UNIT_PATH="$tmp:" systemd-analyze verify --man=no "$tmp/$name" 2>&1) && [ -z "$out" ]; then
		echo "ok    $name"
	else
		echo "FAIL  $name"
		printf '%s\n' "$out" | sed "s#$tmp/##g; s#^#      #"
		status=1
	fi
done
echo "$(systemd-analyze --version | head -n 1): $(echo $checked | wc -w) unit(s) checked"
exit $status
