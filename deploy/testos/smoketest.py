#!/usr/bin/env python3
"""Boot testos under QEMU (TCG) and check that both consoles give a shell.

Usage: smoketest.py [--mode iso|kernel] [--keep] OUTDIR [WORKDIR]

OUTDIR is the directory build.sh wrote (testos.iso, vmlinuz, initrd.img).
The script
  * starts qemu-system-x86_64 -accel tcg -m 512 -vga std -display none with a
    QMP socket and the serial port on a socket (logged to WORKDIR/serial.log),
  * takes QMP screendumps while booting and reports every screen size seen,
  * measures the time from QEMU start to the shell prompt on the serial log,
  * types `echo hello` + Enter on the VGA console with QMP send-key,
  * types `echo hi-from-tty1 > /dev/ttyS0` on tty1 and waits for it on serial,
  * sends `echo serial-ok` to the serial shell and waits for the answer,
  * leaves WORKDIR/final.png (the final screen) for a human to look at,
  * checks that the idle screen is stable (identical screendumps),
  * powers the guest off with `poweroff` on the serial shell.
Exit status 0 when every check passed. Only the python3 stdlib is used.
"""
import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PROMPT = b"testos:~# "

KEYS = {
    " ": ["spc"], "\n": ["ret"], "-": ["minus"], ".": ["dot"], "/": ["slash"],
    ">": ["shift", "dot"], "_": ["shift", "minus"], "=": ["equal"],
    "|": ["shift", "backslash"], ":": ["shift", "semicolon"], "'": ["apostrophe"],
}


def keys_for(ch):
    if ch in KEYS:
        return KEYS[ch]
    if "a" <= ch <= "z" or "0" <= ch <= "9":
        return [ch]
    if "A" <= ch <= "Z":
        return ["shift", ch.lower()]
    raise ValueError("no qcode for %r" % ch)


class QMP:
    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.sock.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("QMP closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.f.write(json.dumps(req).encode() + b"\n")
        self.f.flush()
        resp = self._read()
        if "error" in resp:
            raise RuntimeError("%s: %s" % (name, resp["error"]))
        return resp.get("return")

    def screendump(self, path):
        self.cmd("screendump", filename=path, format="png")
        with open(path, "rb") as fh:
            head = fh.read(24)
        return struct.unpack(">II", head[16:24])

    def type(self, text, delay=0.05):
        for ch in text:
            self.cmd("send-key", keys=[{"type": "qcode", "data": k} for k in keys_for(ch)])
            time.sleep(delay)


def wait_for(path, needle, timeout, start=0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            idx = data.find(needle, start)
            if idx >= 0:
                return idx
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            return -1
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["iso", "kernel"], default="iso")
    ap.add_argument("--keep", action="store_true", help="keep WORKDIR")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("outdir")
    ap.add_argument("workdir", nargs="?")
    a = ap.parse_args()

    out = os.path.abspath(a.outdir)
    work = a.workdir or tempfile.mkdtemp(prefix="testos-smoke.")
    os.makedirs(work, exist_ok=True)
    serial_log = os.path.join(work, "serial.log")
    qmp_sock = os.path.join(work, "qmp.sock")
    ser_sock = os.path.join(work, "serial.sock")
    for p in (serial_log, qmp_sock, ser_sock):
        if os.path.exists(p):
            os.unlink(p)

    qemu = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-display", "none",
            "-vga", "std", "-no-reboot",
            "-chardev", "socket,id=ser0,path=%s,server=on,wait=off,logfile=%s" % (ser_sock, serial_log),
            "-serial", "chardev:ser0",
            "-qmp", "unix:%s,server=on,wait=off" % qmp_sock]
    if a.mode == "iso":
        qemu += ["-cdrom", os.path.join(out, "testos.iso")]
    else:
        qemu += ["-kernel", os.path.join(out, "vmlinuz"), "-initrd", os.path.join(out, "initrd.img"),
                 "-append", "console=tty0 console=ttyS0,115200"]

    ok = True
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu)
    try:
        q = QMP(qmp_sock)
        ser = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ser.connect(ser_sock)
        # Drain the serial socket (the logfile= of the chardev is what we read):
        # a client that never reads stalls the guest's serial console.
        threading.Thread(target=lambda: [None for _ in iter(lambda: ser.recv(65536), b"")],
                         daemon=True).start()
        sizes = []
        shot = os.path.join(work, "boot.png")
        deadline = t0 + a.timeout
        prompt_at = None
        while time.monotonic() < deadline:
            size = q.screendump(shot)
            if not sizes or sizes[-1][1] != size:
                sizes.append((round(time.monotonic() - t0, 2), size))
            if prompt_at is None and wait_for(serial_log, PROMPT, 0) >= 0:
                prompt_at = time.monotonic() - t0
                break
            time.sleep(0.1)
        if prompt_at is None:
            print("FAIL: no prompt on serial within %.0fs" % a.timeout)
            return 1
        print("mode=%s: prompt on serial after %.2fs" % (a.mode, prompt_at))
        print("screen sizes seen during boot (t, (w,h)):", sizes)

        time.sleep(1.0)
        q.type("echo hello\n")
        q.type("echo hi-from-tty1 > /dev/ttyS0\n")
        if wait_for(serial_log, b"hi-from-tty1", 15) < 0:
            print("FAIL: tty1 -> /dev/ttyS0 did not reach the serial log")
            ok = False
        else:
            print("ok: tty1 shell answered (wrote to /dev/ttyS0)")
        mark = os.path.getsize(serial_log)
        ser.sendall(b"echo serial-$((40+2))\n")
        if wait_for(serial_log, b"serial-42", 15, mark) < 0:
            print("FAIL: serial shell did not answer")
            ok = False
        else:
            print("ok: serial shell answered")
        time.sleep(1.0)
        final = os.path.join(work, "final.png")
        size = q.screendump(final)
        print("final screen %dx%d: %s" % (size[0], size[1], final))
        # Cursor blink check: compare a few dumps of the idle screen.
        digests = set()
        for i in range(8):
            p = os.path.join(work, "idle%d.png" % i)
            q.screendump(p)
            with open(p, "rb") as fh:
                digests.add(fh.read())
            time.sleep(0.13)
        print("distinct idle screendumps over ~1s: %d" % len(digests))
        if len(digests) != 1:
            print("FAIL: idle screen is not stable")
            ok = False
        t1 = time.monotonic()
        ser.sendall(b"poweroff\n")
        try:
            proc.wait(timeout=30)
            print("ok: poweroff stopped QEMU after %.2fs" % (time.monotonic() - t1))
        except subprocess.TimeoutExpired:
            print("FAIL: poweroff did not stop QEMU")
            ok = False
            q.cmd("quit")
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
