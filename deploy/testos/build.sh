#!/usr/bin/env bash
# testos - the tiny demo distribution that jetqa tests run against
# =================================================================
#
# Usage:   deploy/testos/build.sh OUTDIR
#
# Builds, from stock Debian packages only (no compiling):
#
#   OUTDIR/vmlinuz      Debian's kernel (linux-image-<abi>-amd64, the version the
#                       linux-image-amd64 metapackage currently points at). It is
#                       fetched with `apt-get download` and unpacked with
#                       `dpkg-deb -x`; nothing is installed on the host.
#   OUTDIR/initrd.img   gzip'd newc cpio (reproducible): a static busybox plus
#                       an /init that mounts proc/sys/devtmpfs, sets the
#                       hostname "testos", quiets the kernel log on the consoles
#                       (dmesg -n 1), clears the VGA screen, and hands over to
#                       busybox init, which runs a root shell (no login) on
#                       tty1 and tty2 (VGA; ctrl-alt-f2 switches), ttyS0
#                       (serial) and hvc0 (a virtio console, when the machine
#                       has one), respawned on exit.
#                       Each shell prints the banner ("Welcome to testos" plus a
#                       version line) and uses the prompt "testos:~# ".
#                       On tty1 the shell clears the screen first and switches to
#                       a non-blinking software cursor, so an idle screen gives
#                       identical screendumps. 8250 serial, vgacon, i8042/atkbd
#                       and devtmpfs are built into the Debian kernel (checked
#                       against its config); the only modules are those of a
#                       USB tablet (xhci, usbhid, hid-generic, evdev), of
#                       the virtio console, of virtio disks (/dev/vda…) and
#                       of virtio-net and e1000 cards, loaded by /init; with
#                       a card, eth0 gets QEMU's user-network address
#                       (10.0.2.15). Debian's curl, with the libraries it
#                       loads, for os-autoinst's upload_logs and data_url. `pointer-events > /dev/ttyS0 &` prints the
#                       tablet's reports ("pointer x=X y=Y left=0|1 right=0|1",
#                       x and y from 0 to 32767), so a test sees its clicks.
#   OUTDIR/testos.iso   BIOS (i386-pc) bootable ISO made with grub-mkrescue. GRUB
#                       stays in VGA text mode, shows a one-entry menu "testos
#                       1.0" (timeout $GRUB_TIMEOUT, default 1 s) and boots the
#                       kernel with $TESTOS_CMDLINE (see below) with
#                       gfxpayload=text: 80x25 text, a 720x400 screen in QEMU.
#   OUTDIR/cmdline      the kernel command line the ISO uses (one line)
#
# The same vmlinuz + initrd.img also boot directly:
#   qemu-system-x86_64 -accel tcg -m 512 -vga std \
#     -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img \
#     -append "console=tty0 console=ttyS0,115200"
# deploy/testos/smoketest.py OUTDIR boots the result under QEMU and checks it.
#
# Re-running is cheap: if all outputs exist and are newer than this script,
# nothing is done (FORCE=1 rebuilds anyway, e.g. after changing a knob below or
# to pick up a newer Debian kernel). Downloaded .debs are kept in OUTDIR/.cache.
# Missing host tools are installed with apt-get; apt is the only network
# access needed. Must run as root (apt-get, mknod).
#
# Quirk: busybox ash's line editor sends ESC[6n (cursor position query) right
# after each prompt; on the serial console nobody answers it, so the serial log
# shows "testos:~# \e[6n". Match the prompt as a substring.
#
# Environment knobs:
#   FORCE=1            rebuild even if outputs are up to date
#   GRUB_TIMEOUT=N     GRUB menu timeout in seconds (default 1)
#   TESTOS_VERSION=X   version string shown in the banner (default 1.0)
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

TESTOS_VERSION=${TESTOS_VERSION:-1.0}
GRUB_TIMEOUT=${GRUB_TIMEOUT:-1}
# console=tty0 first, ttyS0 last: kernel messages go to both, /dev/console is
# the serial port. The shells are started on tty1 and ttyS0 explicitly by init.
# nomodeset keeps the VGA text mode (no DRM driver switch; GRUB itself passes
# gfxpayload=text so vesafb never binds, and vga=normal would only make GRUB
# print a deprecation warning);
# consoleblank=0 keeps the screen from blanking during long tests.
TESTOS_CMDLINE="console=tty0 console=ttyS0,115200 nomodeset consoleblank=0"

log() { printf '[testos] %s\n' "$*" >&2; }

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

up_to_date() {
    local f
    for f in vmlinuz initrd.img testos.iso; do
        [[ -s $OUT/$f && $OUT/$f -nt $SCRIPT ]] || return 1
    done
}
if [[ ${FORCE:-0} != 1 ]] && up_to_date; then
    log "outputs in $OUT are newer than $(basename "$SCRIPT"); nothing to do (FORCE=1 rebuilds)"
    exit 0
fi

# ---------------------------------------------------------------- host tools
need_pkgs=()
command -v apt-get >/dev/null || { log "apt-get is required"; exit 1; }
command -v dpkg-deb >/dev/null || { log "dpkg-deb is required"; exit 1; }
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v gzip >/dev/null || need_pkgs+=(gzip)
command -v grub-mkrescue >/dev/null || need_pkgs+=(grub-common)
[[ -d /usr/lib/grub/i386-pc ]] || need_pkgs+=(grub-pc-bin)
command -v xorriso >/dev/null || need_pkgs+=(xorriso)
command -v mformat >/dev/null || need_pkgs+=(mtools)
if ((${#need_pkgs[@]})); then
    log "installing missing host packages: ${need_pkgs[*]}"
    if ! apt-get install -y --no-install-recommends "${need_pkgs[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${need_pkgs[@]}"
    fi
fi

# apt-get wrappers: refresh the package lists once if a lookup fails.
apt_refreshed=0
apt_refresh() {
    if ((apt_refreshed == 0)); then
        log "running apt-get update"
        apt-get update >&2
        apt_refreshed=1
        return 0
    fi
    return 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/testos-build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
CACHE=$OUT/.cache
mkdir -p "$CACHE"

# download_deb PKG: prints the path of PKG's .deb (candidate version), cached
# in $CACHE as PKG_VERSION.deb (epoch colon replaced by "_").
download_deb() {
    local pkg=$1 ver deb dl
    while :; do
        ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        [[ -n $ver && $ver != "(none)" ]] && break
        apt_refresh || { log "package $pkg not found in apt"; return 1; }
    done
    deb=$CACHE/${pkg}_${ver//:/_}.deb
    if [[ -s $deb ]]; then
        log "using cached $(basename "$deb")"
    else
        log "downloading $pkg $ver"
        dl=$(mktemp -d "$TMP/dl.XXXXXX")
        # apt's "download is performed unsandboxed" notice is noise here.
        (cd "$dl" && apt-get download "$pkg=$ver" 2>&1 | grep -v unsandboxed >&2) || true
        set -- "$dl"/*.deb
        [[ $# -eq 1 && -s $1 ]] || { log "apt-get download $pkg=$ver failed"; return 1; }
        mv "$1" "$deb.part" && mv "$deb.part" "$deb"
    fi
    printf '%s\n' "$deb"
}

# ---------------------------------------------------------------- kernel
kpkg=""
while :; do
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ {print $2; exit}')
    [[ -n $kpkg ]] && break
    apt_refresh || { log "cannot resolve linux-image-amd64"; exit 1; }
done
KVER=${kpkg#linux-image-}
log "kernel package: $kpkg"
kdeb=$(download_deb "$kpkg")
mkdir -p "$TMP/kernel"
dpkg-deb -x "$kdeb" "$TMP/kernel"
kconfig=$TMP/kernel/boot/config-$KVER
[[ -f $TMP/kernel/boot/vmlinuz-$KVER && -f $kconfig ]] || { log "unexpected layout in $kdeb"; exit 1; }
# Everything the image relies on must be built in, since we ship no modules.
for opt in BLK_DEV_INITRD RD_GZIP DEVTMPFS SERIAL_8250 SERIAL_8250_CONSOLE \
    VGA_CONSOLE VT_CONSOLE SERIO_I8042 KEYBOARD_ATKBD; do
    grep -qx "CONFIG_$opt=y" "$kconfig" || { log "kernel lacks built-in CONFIG_$opt"; exit 1; }
done

# ---------------------------------------------------------------- busybox
if [[ -x /bin/busybox ]] && dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    BUSYBOX=/bin/busybox
    log "busybox: host's busybox-static ($BUSYBOX)"
else
    bbdeb=$(download_deb busybox-static)
    mkdir -p "$TMP/bb"
    dpkg-deb -x "$bbdeb" "$TMP/bb"
    BUSYBOX=$TMP/bb/bin/busybox
    log "busybox: extracted from $(basename "$bbdeb")"
fi
BBVER=$("$BUSYBOX" 2>&1 | head -n1 | awk '{print $2}' || true)

# ---------------------------------------------------------------- initramfs
R=$TMP/root
log "assembling initramfs (testos $TESTOS_VERSION, kernel $KVER, busybox $BBVER)"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var/log,mnt}
chmod 1777 "$R/tmp"
chmod 700 "$R/root"
install -m 0755 "$BUSYBOX" "$R/bin/busybox"
"$BUSYBOX" --list-full | while read -r applet; do
    [[ $applet == bin/busybox || -e $R/$applet ]] && continue
    mkdir -p "$R/$(dirname "$applet")"
    ln -s /bin/busybox "$R/$applet"
done
# bash, as os-autoinst's script_output runs its scripts with it
# ("bash -eox pipefail script"): busybox's ash takes the same options.
printf '#!/bin/sh\nexec /bin/sh "$@"\n' >"$R/bin/bash"
chmod 0755 "$R/bin/bash"
# The modules of the USB tablet, the virtio console and virtio disks
# (/dev/vda…), in load order (each after those it needs); /init loads them all.
MODULES="usb-common usbcore xhci-hcd xhci-pci hid usbhid hid-generic evdev
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console virtio_blk
    failover net_failover virtio_net e1000"
mkdir -p "$R/lib/modules"
for m in $MODULES; do
    ko=$(find "$TMP/kernel/lib/modules/$KVER" -name "$m.ko" | head -n1)
    [[ -n $ko ]] || { log "kernel $KVER has no module $m.ko"; exit 1; }
    install -m 0644 "$ko" "$R/lib/modules/$m.ko"
done

echo $MODULES >"$R/lib/modules/order"

# curl, Debian's, with the libraries it loads: os-autoinst's upload_logs,
# upload_asset and data_url type curl commands into the guest. The
# packages are unpacked, never installed on the host; the staged dynamic
# loader lists what curl needs, found in the staged tree alone.
CURL=$TMP/curl
mkdir -p "$CURL"
curl_pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends curl | grep -v '^ ' | sort -u)
[[ -n $curl_pkgs ]] || { log "cannot resolve curl's dependencies"; exit 1; }
for pkg in $curl_pkgs; do
    dpkg-deb -x "$(download_deb "$pkg")" "$CURL"
done
LDSO=$CURL/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libpath=$CURL/lib/x86_64-linux-gnu:$CURL/usr/lib/x86_64-linux-gnu
needed=$("$LDSO" --library-path "$libpath" --list "$CURL/usr/bin/curl" | awk '$2 == "=>" {print $3}')
install -D -m 0755 "$CURL/usr/bin/curl" "$R/usr/bin/curl"
install -D -m 0755 "$LDSO" "$R/lib64/ld-linux-x86-64.so.2"
for lib in $needed; do
    [[ $lib == "$CURL"/* ]] || { log "curl needs $lib, which is not in its packages"; exit 1; }
    install -D -m 0644 "$(readlink -f "$lib")" "$R/${lib#"$CURL"/}"
done


cat >"$R/bin/pointer-events" <<'EOF'
#!/bin/sh
# pointer-events: one line per report of the USB tablet,
# "pointer x=X y=Y left=0|1 right=0|1", x and y from 0 to 32767.
dev=
for d in /sys/class/input/event*; do
    grep -q Tablet "$d/device/name" 2>/dev/null && dev=/dev/input/${d##*/}
done
[ -n "$dev" ] || { echo "pointer-events: no USB tablet"; exit 1; }
x=0 y=0 left=0 right=0
exec 3<"$dev"
echo "pointer-events: reading $dev"
# struct input_event: 16 bytes of time, then type, code (u16) and value.
while set -- $(dd bs=24 count=1 <&3 2>/dev/null | od -An -v -tu2) && [ $# -ge 12 ]; do
    value=$((${11} + ${12} * 65536))
    case "$9:${10}" in
    3:0) x=$value ;;
    3:1) y=$value ;;
    1:272) left=$value ;;
    1:273) right=$value ;;
    0:0) echo "pointer x=$x y=$y left=$left right=$right" ;;
    esac
done
EOF
chmod 0755 "$R/bin/pointer-events"

# The console nodes must exist before devtmpfs is mounted (kernel opens
# /dev/console for init's stdio).
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3

cat >"$R/init" <<'EOF'
#!/bin/sh
# testos /init: minimal setup, then busybox init (see /etc/inittab).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
hostname testos
# Keep late kernel messages off the consoles so the screens stay clean.
dmesg -n 1
# The USB tablet (QEMU's usb-tablet on qemu-xhci) and the virtio console
# (hvc0), when the machine has them.
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko 2>/dev/null
done
# A shell on the virtio console too, when the machine has one: a port
# named org.openqa.console.* of its virtio-serial device (which may have
# only other ports, such as jetqa's upload port). The ports show up
# shortly after the module loads.
if grep -qs -e 0x1003 -e 0x1043 /sys/bus/pci/devices/*/device; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        grep -qs . /sys/class/virtio-ports/*/name && break
        sleep 0.2
    done
    if grep -qs org.openqa.console /sys/class/virtio-ports/*/name; then
        echo "hvc0::respawn:-/bin/sh" >>/etc/inittab
    fi
fi
# The network card, when the machine has one, as QEMU's user network
# gives it (what its DHCP server would answer): 10.0.2.15, the host
# 10.0.2.2, DNS 10.0.2.3.
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip addr add 10.0.2.15/24 dev eth0
    ip link set eth0 up
    ip route add default via 10.0.2.2
    echo "nameserver 10.0.2.3" >/etc/resolv.conf
fi
# Clear the VGA console: the screen then shows only the banner and the prompt.
printf '\033[H\033[J' >/dev/tty1
echo "testos: /init done, starting shells on tty1 and ttyS0" >/dev/console
exec /sbin/init
EOF
chmod 0755 "$R/init"

cat >"$R/etc/inittab" <<'EOF'
# busybox init: a root shell (no login) on the VGA console and the serial port
::sysinit:/bin/true
tty1::respawn:-/bin/sh
tty2::respawn:-/bin/sh
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
EOF

cat >"$R/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root USER=root LOGNAME=root
export PS1='testos:\w# '
cd "$HOME"
case "$(tty)" in
/dev/ttyS* | /dev/hvc*)
    export TERM=vt100
    ;;
*)
    export TERM=linux
    # VGA console: start from a clean screen (hides ash's own banner) and use
    # a non-blinking software cursor (inverted cell) instead of the blinking
    # hardware cursor, so screenshots of an idle screen are identical.
    printf '\033[H\033[J\033[?17;127;0c'
    ;;
esac
cat /etc/motd
EOF

{
    echo "Welcome to testos"
    echo "testos version $TESTOS_VERSION (Linux $KVER, BusyBox $BBVER)"
    echo
} >"$R/etc/motd"

cat >"$R/etc/os-release" <<EOF
NAME="testos"
ID=testos
VERSION_ID="$TESTOS_VERSION"
PRETTY_NAME="testos $TESTOS_VERSION"
EOF
echo testos >"$R/etc/hostname"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
printf '127.0.0.1\tlocalhost testos\n' >"$R/etc/hosts"
printf '%s\n' /bin/sh >"$R/etc/shells"

# Fixed timestamps and sorted names: same inputs give the same initrd.img.
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
    gzip -9n >"$TMP/initrd.img"

# ---------------------------------------------------------------- ISO
log "building testos.iso with grub-mkrescue (i386-pc)"
ISO=$TMP/iso
mkdir -p "$ISO/boot/grub"
cp "$TMP/kernel/boot/vmlinuz-$KVER" "$ISO/boot/vmlinuz"
cp "$TMP/initrd.img" "$ISO/boot/initrd.img"
cat >"$ISO/boot/grub/grub.cfg" <<EOF
# testos: VGA text mode all the way (80x25, 720x400 in QEMU)
terminal_output console
set timeout=$GRUB_TIMEOUT
set timeout_style=menu
set default=0
menuentry "testos $TESTOS_VERSION" {
    set gfxpayload=text
    linux /boot/vmlinuz $TESTOS_CMDLINE
    initrd /boot/initrd.img
}
EOF
grub-mkrescue --compress=xz --locales= --themes= --fonts= -o "$TMP/testos.iso" "$ISO" >"$TMP/mkrescue.log" 2>&1 || {
    cat "$TMP/mkrescue.log" >&2
    exit 1
}

# ---------------------------------------------------------------- install
cp "$TMP/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp" && mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv -f "$TMP/initrd.img" "$OUT/initrd.img"
mv -f "$TMP/testos.iso" "$OUT/testos.iso"
printf '%s\n' "$TESTOS_CMDLINE" >"$OUT/cmdline"
log "done:"
ls -l "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/testos.iso" "$OUT/cmdline" >&2
log "kernel $KVER; command line: $TESTOS_CMDLINE"
