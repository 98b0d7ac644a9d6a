#!/usr/bin/env bash
# Checks that os-autoinst, whose test side runs openQA's Perl distributions
# and which the test suite compares needle matching with, really loads: its Perl modules, OpenCV through tinycv, and
# the QEMU backend. Debian's package does not declare every Perl module it
# uses, so an install with --no-install-recommends can leave one out; this
# names the module and the Debian package that has it, before any test runs.
set -euo pipefail

lib=/usr/lib/os-autoinst
if [ ! -f "$lib/needle.pm" ]; then
  echo "os-autoinst is not installed: run 'bash deploy/install-deps.sh'" >&2
  exit 1
fi

# What the tests use (needle, tinycv), what jetqa's driver of the test
# side loads (stages/boot/perl), and what isotovideo's QEMU backend loads.
if out=$(cd / && perl -e '
  use lib "'"$lib"'";
  use bmwqemu; use needle; use cv;
  use autotest; use testapi; use distribution; use myjsonrpc;
  use OpenQA::Isotovideo::Utils; use OpenQA::Isotovideo::Interface;
  cv::init(); require tinycv; tinycv::create_threads(1);
  require backend::qemu;
' 2>&1); then
  exit 0
fi

module=$(sed -n 's/^Can.t locate \([^ ]*\)\.pm in @INC.*/\1/p' <<<"$out" | head -1)
if [ -z "$module" ]; then
  echo "os-autoinst does not load:" >&2
  echo "$out" >&2
  exit 1
fi
module=${module//\//::}
# Debian names a Perl module's package lib<module, lower case, :: as ->-perl.
package="lib$(tr 'A-Z' 'a-z' <<<"${module//::/-}")-perl"
if command -v dpkg-query >/dev/null && apt-cache show "$package" >/dev/null 2>&1; then
  where="Debian's package $package has it"
else
  where="its Debian package is probably $package (look it up with 'apt-cache search')"
fi
cat >&2 <<EOF
os-autoinst does not load: the Perl module $module is missing.
$where: apt-get install --no-install-recommends $package
and add it to the test packages in deploy/install-deps.sh.
EOF
exit 1
