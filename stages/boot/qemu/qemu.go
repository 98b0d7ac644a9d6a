// Package qemu runs the one virtual machine a boot stage tests: it starts
// QEMU with the job's media, controls it over QMP (screenshots, keys) and
// keeps everything the guest writes to its serial port, so test modules can
// wait for it.
package qemu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// AccelEnv names the environment variable that picks the accelerator when
// Config.Accel is empty: "auto", "kvm" or "tcg". Workers whose /dev/kvm
// looks fine but stalls guests (some nested setups) set it to "tcg".
const AccelEnv = "JETQA_QEMU_ACCEL"

// Files that Start creates in Config.Dir.
const (
	// SerialLogFile records everything the guest wrote to its first serial
	// port (ttyS0), written by QEMU itself, so it survives a crash of ours.
	SerialLogFile = "serial0.log"
	// StderrLogFile holds what QEMU printed on stdout and stderr.
	StderrLogFile = "qemu.log"

	qmpSocket    = "qmp.sock"
	serialSocket = "serial0.sock"
)

// maxSocketPath is the longest path a unix socket address can hold on
// Linux (sun_path is 108 bytes, one of them the terminating NUL).
const maxSocketPath = 107

// Config says what machine to build. Only Dir is required; the rest have
// defaults that boot an ISO or disk image on a plain PC. The machine gets
// no network card unless ExtraArgs adds one (-nic user,model=virtio-net-pci).
type Config struct {
	// Binary is the emulator to run; default qemu-system-x86_64.
	Binary string
	// Dir is the run directory; Start creates it and puts the QMP and
	// serial sockets, SerialLogFile, StderrLogFile and screendumps there.
	Dir string
	// Accel is "auto" (KVM if KVMUsable, else TCG), "kvm" or "tcg". Empty
	// means the value of AccelEnv, or "auto" if that is unset.
	Accel string
	// CPU is the -cpu model (openQA's QEMUCPU); empty keeps QEMU's default.
	CPU string
	// CPUs is the number of virtual CPUs; default 1.
	CPUs int
	// MemoryMiB is the guest RAM (openQA's QEMURAM); default 1024.
	MemoryMiB int
	// ISO is attached as the CD-ROM.
	ISO string
	// HDDs are attached in order as disks on HDDInterface. They are used
	// as they are: snapshots and overlays are the caller's business. Each
	// is opened as qcow2 if it starts with the qcow2 magic, else as raw.
	HDDs []string
	// HDDInterface is the bus of the HDDs: "virtio" (default) or "ide".
	HDDInterface string
	// Kernel, Initrd and Append boot a Linux kernel directly
	// (-kernel, -initrd, -append); Initrd and Append need Kernel.
	Kernel, Initrd, Append string
	// VGA is the -vga card; default "std".
	VGA string
	// ExtraArgs are appended to the command line as they are.
	ExtraArgs []string
	// KeyHold is how long each key of SendKey and TypeString stays
	// pressed, and how long QEMU waits after releasing it; default 20ms.
	KeyHold time.Duration
	// StartTimeout bounds how long Start waits for QEMU to connect its
	// QMP and serial sockets and answer the handshake; default 30s.
	StartTimeout time.Duration
	// Log receives QEMU's lifecycle and QMP events; default discards.
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Binary == "" {
		c.Binary = "qemu-system-x86_64"
	}
	if c.Accel == "" {
		c.Accel = os.Getenv(AccelEnv)
	}
	if c.Accel == "" {
		c.Accel = "auto"
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.HDDInterface == "" {
		c.HDDInterface = "virtio"
	}
	if c.VGA == "" {
		c.VGA = "std"
	}
	if c.KeyHold == 0 {
		c.KeyHold = 20 * time.Millisecond
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Dir != "" {
		// QEMU and we must agree on every path whatever our working
		// directories, so pin them down once.
		if abs, err := filepath.Abs(c.Dir); err == nil {
			c.Dir = abs
		}
	}
	return c
}

func (c Config) validate() error {
	if c.Dir == "" {
		return errors.New("qemu: Config.Dir is required")
	}
	if p := filepath.Join(c.Dir, serialSocket); len(p) > maxSocketPath {
		return fmt.Errorf("qemu: run directory %s is too long: socket path %s exceeds %d bytes", c.Dir, p, maxSocketPath)
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("qemu: accel %q: use auto, kvm or tcg", c.Accel)
	}
	switch c.HDDInterface {
	case "virtio", "ide":
	default:
		return fmt.Errorf("qemu: HDD interface %q: use virtio or ide", c.HDDInterface)
	}
	if c.CPUs < 1 {
		return fmt.Errorf("qemu: CPUs %d: need at least 1", c.CPUs)
	}
	if c.MemoryMiB < 16 {
		return fmt.Errorf("qemu: memory %d MiB: need at least 16", c.MemoryMiB)
	}
	if c.Kernel == "" && (c.Initrd != "" || c.Append != "") {
		return errors.New("qemu: Initrd and Append need Kernel")
	}
	if c.KeyHold < time.Millisecond {
		return fmt.Errorf("qemu: key hold %s: QMP counts whole milliseconds, need at least 1ms", c.KeyHold)
	}
	return nil
}

// disk is one HDD as QEMU will open it.
type disk struct {
	path   string
	format string // "qcow2" or "raw"
}

// media checks that every file the machine boots from exists, so the error
// names the setting, and finds each HDD's format: QEMU would probe it too,
// but refuses writes to sector 0 of a probed raw image, which installers need.
func (c Config) media() ([]disk, error) {
	for _, f := range []struct{ name, path string }{
		{"ISO", c.ISO}, {"kernel", c.Kernel}, {"initrd", c.Initrd},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("qemu: %s: %w", f.name, err)
		}
	}
	disks := make([]disk, 0, len(c.HDDs))
	for i, path := range c.HDDs {
		format, err := diskFormat(path)
		if err != nil {
			return nil, fmt.Errorf("qemu: HDD %d: %w", i+1, err)
		}
		disks = append(disks, disk{path: path, format: format})
	}
	return disks, nil
}

// qcow2Magic opens every qcow2 image ("QFI" and 0xfb).
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

func diskFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, len(qcow2Magic))
	n, _ := f.Read(head)
	if n == len(head) && string(head) == string(qcow2Magic) {
		return "qcow2", nil
	}
	return "raw", nil
}

// commandLine is QEMU's argument list for cfg (after withDefaults) with
// the chosen accelerator. QEMU connects to our sockets as a client, so
// both exist before it starts and nothing the guest prints is lost.
func commandLine(cfg Config, accel string, disks []disk) []string {
	dir := cfg.Dir
	args := []string{
		// Only the devices asked for below: a default NIC would make
		// SeaBIOS try a slow network boot, a default monitor wants a
		// display.
		"-nodefaults",
		"-display", "none",
		// A guest reboot ends the VM, as in openQA: the test decides
		// what comes next.
		"-no-reboot",
		"-accel", accel,
	}
	if cfg.CPU != "" {
		args = append(args, "-cpu", cfg.CPU)
	}
	args = append(args,
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-vga", cfg.VGA,
		"-chardev", "socket,id=qmp,path="+optValue(filepath.Join(dir, qmpSocket)),
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path="+optValue(filepath.Join(dir, serialSocket))+
			",logfile="+optValue(filepath.Join(dir, SerialLogFile)),
		"-serial", "chardev:serial0",
	)
	if cfg.ISO != "" {
		args = append(args, "-drive", "file="+optValue(cfg.ISO)+",media=cdrom,readonly=on,id="+cdDrive)
	}
	for _, d := range disks {
		args = append(args, "-drive", "file="+optValue(d.path)+",format="+d.format+",if="+cfg.HDDInterface)
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if cfg.Append != "" {
		args = append(args, "-append", cfg.Append)
	}
	return append(args, cfg.ExtraArgs...)
}

// cdDrive is the CD-ROM's drive id, for eject.
const cdDrive = "cd0"

// optValue escapes a value inside QEMU's comma-separated options, where a
// literal comma is written twice.
func optValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}
