#!/usr/bin/env bash
# Installs the Debian packages jetqa needs to build, to run VMs and to build
# the testos demo image — only those that are missing. Safe to run again.
# `install-deps.sh test` adds what the test suite compares against:
# openQA's clients (openqa-cli, openqa_client) for the API, QEMU for
# aarch64 guests, and headless Chromium for the web UI's tests.
set -euo pipefail

packages=(
  gcc g++ pkg-config          # cgo, for OpenCV through gocv
  libopencv-dev               # needle matching
  libdeflate-dev              # needle matching: decoding screenshots
  qemu-system-x86 qemu-utils  # the VMs
  ovmf                        # UEFI guests (UEFI=1)
  git curl                    # test and needle repositories; the demo script
  grub-pc-bin grub-common xorriso mtools busybox-static cpio  # the testos image
  # openQA's Perl test distributions (main.pm) run on os-autoinst's own test
  # side. Its package does not declare every Perl module it uses: needle.pm
  # and bmwqemu.pm need Cpanel::JSON::XS, the QEMU backend List::MoreUtils
  # and Mojo::IOLoop::ReadWriteProcess (with Time::Moment and
  # JSON::Validator). deploy/check-os-autoinst.sh checks that it loads.
  os-autoinst libcpanel-json-xs-perl liblist-moreutils-perl
  libmojo-ioloop-readwriteprocess-perl libtime-moment-perl libjson-validator-perl
)

if [ "${1:-}" = test ]; then
  # openQA's own clients, run against jetqa's API by the tests.
  packages+=(openqa-client python3-openqa-client)
  # aarch64 machines (ARCH=aarch64): the emulator and its UEFI firmware,
  # optional for workers, so that their test runs.
  packages+=(qemu-system-arm qemu-efi-aarch64)
  # The web UI's tests drive a real headless browser (stages/api/browser).
  # fonts-liberation is only recommended by chromium-common: the fonts
  # metric-compatible with Arial, Times New Roman and Courier New that pages
  # name, so the screenshots lay text out as other browsers do.
  packages+=(chromium fonts-liberation)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
