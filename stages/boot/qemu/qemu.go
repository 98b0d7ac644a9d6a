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
	"slices"
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

	// VirtioLogFile records what the guest wrote to its virtio console.
	VirtioLogFile = "virtio_console.log"

	qmpSocket    = "qmp.sock"
	serialSocket = "serial0.sock"
	virtioSocket = "virtio_console.sock"
	uploadSocket = "upload.sock"
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
	// HDDs are attached in order as disks of HDDModel. They are used as
	// they are: snapshots and overlays are the caller's business. Each is
	// opened as qcow2 if it starts with the qcow2 magic, else as raw.
	HDDs []string
	// HDDModel is the disks' device, as openQA's HDDMODEL: virtio-blk
	// (default), ide-hd, scsi-hd or nvme.
	HDDModel string
	// CDModel is the CD-ROM's device, as openQA's CDMODEL: ide-cd
	// (default) or scsi-cd.
	CDModel string
	// NICModel, when set, gives the machine a network card of that model
	// (virtio-net, e1000, …) on QEMU's user network, as openQA's NICTYPE
	// user; empty: no network.
	NICModel string
	// UEFICode and UEFIVars are the UEFI firmware (OVMF's code, read-only)
	// and the machine's own copy of its variable store; empty for BIOS.
	UEFICode, UEFIVars string
	// BootFrom is "c" to boot the first disk, "d" the CD-ROM, or empty
	// for the firmware's order.
	BootFrom string
	// Kernel, Initrd and Append boot a Linux kernel directly
	// (-kernel, -initrd, -append); Initrd and Append need Kernel.
	Kernel, Initrd, Append string
	// VGA is the -vga card; default "std". "virtio" is virtio-gpu-pci as a
	// device, which machines without VGA (aarch64's virt) take.
	VGA string
	// Machine is the -machine type with its options, e.g. "virt" for
	// aarch64; empty keeps QEMU's default (pc on x86_64).
	Machine string
	// USBKeyboard gives the machine a USB keyboard: machines without a PS/2
	// controller (aarch64's virt) need it for keys.
	USBKeyboard bool
	// NoTablet leaves out the USB tablet the mouse functions move, as
	// openQA's QEMU_NO_TABLET.
	NoTablet bool
	// VirtioConsole gives the machine a virtio console (the guest's hvc0),
	// os-autoinst's virtio_console: a serial terminal a test can select.
	VirtioConsole bool
	// GuestCommand, with a network card, is run by QEMU for each TCP
	// connection the guest opens to GuestAddr:GuestPort, with the
	// connection on its standard input and output: how the worker serves
	// the guest (os-autoinst's autoinst_url) while nothing listens on the
	// host. Empty: no such address.
	GuestCommand []string
	// NoUploadPort leaves out the virtio-serial port the guest sends files
	// on (UploadPortName); without it uploads cross the serial port.
	NoUploadPort bool
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
	if c.HDDModel == "" {
		c.HDDModel = "virtio-blk"
	}
	if c.CDModel == "" {
		c.CDModel = "ide-cd"
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
	if !slices.Contains(HDDModels, c.HDDModel) {
		return fmt.Errorf("qemu: HDD model %q: use one of %s", c.HDDModel, strings.Join(HDDModels, ", "))
	}
	if !slices.Contains(CDModels, c.CDModel) {
		return fmt.Errorf("qemu: CD model %q: use one of %s", c.CDModel, strings.Join(CDModels, ", "))
	}
	if c.NICModel != "" && !slices.Contains(NICModels, c.NICModel) {
		return fmt.Errorf("qemu: NIC model %q: use one of %s", c.NICModel, strings.Join(NICModels, ", "))
	}
	if (c.UEFICode == "") != (c.UEFIVars == "") {
		return errors.New("qemu: UEFI needs both the firmware code and a variable store")
	}
	switch c.BootFrom {
	case "", "c", "d":
	default:
		return fmt.Errorf("qemu: boot from %q: use c (disk) or d (CD-ROM)", c.BootFrom)
	}
	if c.CPUs < 1 {
		return fmt.Errorf("qemu: CPUs %d: need at least 1", c.CPUs)
	}
	if c.MemoryMiB < 16 {
		return fmt.Errorf("qemu: memory %d MiB: need at least 16", c.MemoryMiB)
	}
	for _, a := range c.GuestCommand {
		if strings.ContainsAny(a, "\x00\n") {
			return fmt.Errorf("qemu: guest command argument %q holds a NUL or a newline", a)
		}
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
	if cfg.Machine != "" {
		args = append(args, "-machine", cfg.Machine)
	}
	display := []string{"-vga", cfg.VGA}
	if cfg.Machine != "" && cfg.VGA == "virtio" {
		display = []string{"-device", "virtio-gpu-pci"}
	}
	args = append(args, "-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB))
	args = append(args, display...)
	args = append(args,
		"-chardev", "socket,id=qmp,path="+optValue(filepath.Join(dir, qmpSocket)),
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path="+optValue(filepath.Join(dir, serialSocket))+
			",logfile="+optValue(filepath.Join(dir, SerialLogFile)),
		"-serial", "chardev:serial0",
	)
	if cfg.UEFICode != "" {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+optValue(cfg.UEFICode),
			"-drive", "if=pflash,format="+formatOf(cfg.UEFIVars)+",unit=1,file="+optValue(cfg.UEFIVars))
	}
	if cfg.HDDModel == "scsi-hd" || cfg.CDModel == "scsi-cd" {
		args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
	}
	// Boot order by device: UEFI's firmware honours bootindex, not -boot.
	cdIndex, hdIndex := 2, 1
	if cfg.BootFrom == "d" {
		cdIndex, hdIndex = 1, 2
	}
	if cfg.ISO != "" {
		args = append(args, "-drive", "file="+optValue(cfg.ISO)+",media=cdrom,readonly=on,if=none,id="+cdDrive,
			"-device", cfg.CDModel+",drive="+cdDrive+bootIndex(cfg.BootFrom, cdIndex))
	}
	for i, d := range disks {
		id := "hd" + strconv.Itoa(i)
		dev := qemuDevice(cfg.HDDModel) + ",drive=" + id
		if cfg.HDDModel == "nvme" {
			dev += ",serial=" + id
		}
		if i == 0 {
			dev += bootIndex(cfg.BootFrom, hdIndex)
		}
		args = append(args, "-drive", "file="+optValue(d.path)+",format="+d.format+",if=none,id="+id, "-device", dev)
	}
	if cfg.VirtioConsole || !cfg.NoUploadPort {
		args = append(args, "-device", "virtio-serial-pci,id=vser0")
	}
	// QEMU listens on these sockets; the VM connects once QEMU runs.
	if cfg.VirtioConsole {
		args = append(args,
			"-chardev", "socket,id=virtcon0,server=on,wait=off,path="+optValue(filepath.Join(dir, virtioSocket))+
				",logfile="+optValue(filepath.Join(dir, VirtioLogFile)),
			"-device", "virtconsole,chardev=virtcon0,name=org.openqa.console.virtio_console")
	}
	if !cfg.NoUploadPort {
		args = append(args,
			"-chardev", "socket,id=upload0,server=on,wait=off,path="+optValue(filepath.Join(dir, uploadSocket)),
			"-device", "virtserialport,chardev=upload0,name="+UploadPortName)
	}
	if !cfg.NoTablet || cfg.USBKeyboard {
		args = append(args, "-device", "qemu-xhci,id=xhci")
	}
	if cfg.USBKeyboard {
		args = append(args, "-device", "usb-kbd,bus=xhci.0")
	}
	if !cfg.NoTablet {
		// An absolute pointer, as os-autoinst gives every machine: a click
		// lands where the test says, whatever the guest's acceleration.
		args = append(args, "-device", "usb-tablet,bus=xhci.0")
	}
	if cfg.NICModel != "" {
		// No option ROM: the firmware never tries to boot from the
		// network, and no iPXE package is needed.
		netdev := "user,id=" + NetworkName
		if len(cfg.GuestCommand) > 0 {
			netdev += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:%s", GuestAddr, GuestPort, guestCommandLine(cfg.GuestCommand))
		}
		args = append(args, "-netdev", netdev, "-device", qemuDevice(cfg.NICModel)+",netdev="+NetworkName+",romfile=")
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

// UploadPortName is the virtio-serial port the guest writes files to:
// /sys/class/virtio-ports/*/name holds it, udev links it as
// /dev/virtio-ports/org.jetqa.upload.
const UploadPortName = "org.jetqa.upload"

// The device models the machine may have, by openQA's names.
var (
	HDDModels = []string{"virtio-blk", "ide-hd", "scsi-hd", "nvme"}
	CDModels  = []string{"ide-cd", "scsi-cd"}
	NICModels = []string{"virtio-net", "e1000", "e1000e", "rtl8139"}
)

// qemuDevice is the -device name of a model: openQA's virtio names are
// QEMU's PCI devices.
// NetworkName is the machine's network (-netdev), named as os-autoinst
// names it, which switch_network's network_link_name defaults to.
const NetworkName = "qanet0"

// GuestAddr and GuestPort are where the guest reaches GuestCommand on
// QEMU's user network. The host's own address there (10.0.2.2) cannot
// be forwarded, so it is another of the network's; the port is
// os-autoinst's for a first worker instance (QEMUPORT 20012, plus 1).
const (
	GuestAddr = "10.0.2.100"
	GuestPort = 20013
)

// guestCommandLine is argv as QEMU takes a guestfwd command: split as a
// shell would (each argument in single quotes), in an option value where
// a comma is written twice.
func guestCommandLine(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.ReplaceAll(strings.Join(quoted, " "), ",", ",,")
}

func qemuDevice(model string) string {
	switch model {
	case "virtio-blk", "virtio-net":
		return model + "-pci"
	}
	return model
}

// bootIndex orders a boot device when the test chose what to boot.
func bootIndex(bootFrom string, index int) string {
	if bootFrom == "" {
		return ""
	}
	return ",bootindex=" + strconv.Itoa(index)
}

// formatOf is qcow2 for a qcow2 image, else raw.
func formatOf(path string) string {
	if f, err := diskFormat(path); err == nil {
		return f
	}
	return "raw"
}

// optValue escapes a value inside QEMU's comma-separated options, where a
// literal comma is written twice.
func optValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}
