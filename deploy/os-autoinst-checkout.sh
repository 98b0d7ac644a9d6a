#!/usr/bin/env bash
# Makes a checkout of upstream os-autoinst usable as the test side of a
# worker's Perl jobs on Debian 12, whose own os-autoinst (interface 34) is
# older than what some distributions are written for.
#
# Usage:   deploy/os-autoinst-checkout.sh CHECKOUT
#
# CHECKOUT is a clone of os-autoinst's repository. The script
#   - installs, with apt, the Perl modules its test side needs that Debian
#     12 packages (Feature::Compat::Try);
#   - when the installed Mojolicious is older than the 9.34 it needs
#     (Mojo::File's spew), unpacks
#     Debian 13's package (never installed) into CHECKOUT/.jetqa-perl5;
#   - when the checkout's tinycv bindings are not built, uses the installed
#     os-autoinst package's (Debian 12's has every function the test side
#     calls), placed where os-autoinst's cv::init looks for a build, and
#     makes the Python bindings of the test API (testapi.py) from their
#     template, as a build does;
#   - checks that the test side loads, and prints the worker's environment:
#     JETQA_OS_AUTOINST=CHECKOUT, and PERL5LIB when needed.
# Must run as root (apt-get). Safe to run again.
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $0 CHECKOUT" >&2
    exit 2
fi
co=$(cd "$1" && pwd)
log() { printf '[os-autoinst] %s\n' "$*" >&2; }
[[ -f $co/autotest.pm && -f $co/OpenQA/Isotovideo/Interface.pm ]] ||
    { log "$co is not an os-autoinst checkout (no autotest.pm)"; exit 1; }
iface=$(sed -n 's/^our \$version = \([0-9]*\);.*/\1/p' "$co/OpenQA/Isotovideo/Interface.pm")
log "$co: interface $iface"

if ! perl -MFeature::Compat::Try -e 1 2>/dev/null; then
    apt-get install -y --no-install-recommends libfeature-compat-try-perl ||
        { apt-get update && apt-get install -y --no-install-recommends libfeature-compat-try-perl; }
fi

perl5lib=
# Mojolicious 9.34 added Mojo::File's spew, which os-autoinst uses.
if ! perl -MMojo::File -e 'exit(Mojo::File->can("spew") ? 0 : 1)'; then
    dest=$co/.jetqa-perl5
    if [[ ! -f $dest/usr/share/perl5/Mojolicious.pm ]]; then
        # Debian 13's package, fetched from the mirror this machine's apt
        # already uses, with lists of its own: the system's sources and
        # packages stay as they are.
        uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$2 !~ /security/ {print $2; exit}') || true
        [[ -n $uri ]] || { log "no Debian mirror in apt's sources"; exit 1; }
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        mkdir -p "$tmp/lists/partial"
        echo "deb $uri trixie main" >"$tmp/sources.list"
        apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$tmp/lists")
        apt-get "${apt_opts[@]}" update >&2
        (cd "$tmp" && apt-get "${apt_opts[@]}" download libmojolicious-perl 2>&1 | grep -v unsandboxed >&2)
        mkdir -p "$dest"
        dpkg-deb -x "$tmp"/libmojolicious-perl_*.deb "$dest"
    fi
    perl5lib=$dest/usr/share/perl5
    log "Mojolicious $(sed -n "s/^our \$VERSION *= *'\([0-9.]*\)'.*/\1/p" "$perl5lib/Mojolicious.pm") in $perl5lib"
fi

if [[ ! -f $co/ppmclibs/blib/lib/tinycv.pm ]]; then
    so=$(find /usr/lib -path '*/auto/tinycv/tinycv.so' 2>/dev/null | head -n1)
    [[ -n $so ]] || { log "no tinycv: build the checkout (its README), or install the os-autoinst package"; exit 1; }
    mkdir -p "$co/ppmclibs/blib/lib" "$co/ppmclibs/blib/arch/auto/tinycv"
    cp "$co/ppmclibs/tinycv.pm" "$co/ppmclibs/blib/lib/tinycv.pm"
    cp "$so" "$co/ppmclibs/blib/arch/auto/tinycv/tinycv.so"
    log "tinycv: the bindings of $so"
fi

# The Python bindings of the test API (testapi.py, …), which a build
# makes from a template, for distributions with Python test modules.
if [[ -f $co/cmake/templates/api.py.in ]]; then
    for binding in lockapi mmapi testapi; do
        [[ -f $co/$binding.py ]] || sed "s/@PYTHON_BINDING@/$binding/g" "$co/cmake/templates/api.py.in" >"$co/$binding.py"
    done
fi

PERL5LIB=$perl5lib perl -I"$co" -e '
    use autotest; use testapi; use basetest; use distribution; use needle; use bmwqemu; use myjsonrpc;
    use cv; cv::init(); require tinycv;
    my $img = tinycv::new(2, 2) or die "tinycv does not work\n";
' || { log "os-autoinst's test side in $co does not load (above: what is missing)"; exit 1; }

log "loads; in the worker's environment (for example its systemd unit's Environment=):"
echo "JETQA_OS_AUTOINST=$co"
[[ -z $perl5lib ]] || echo "PERL5LIB=$perl5lib"
