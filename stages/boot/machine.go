package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// machineSetting is one job setting that shapes the VM, as openQA names
// it: its default, and what a value must be. A value QEMU would refuse is
// refused here, naming the setting, before the VM starts.
type machineSetting struct {
	name, def, doc string
	check          func(v string) error // nil: anything
	apply          func(m *machine, v string) error
}

// machine is a VM being described by the settings.
type machine struct {
	cfg       qemu.Config
	ready     *schemas.JobReady
	dir       string // the VM's directory: blank disks, UEFI variables
	numDisks  int
	sizeGB    int
	arch      string
	uefi      bool
	uefiCode  string
	uefiVars  string
	noKVM     bool
	qemuExtra []string
}

var (
	cpuModel   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$`)
	vgaModels  = []string{"std", "cirrus", "vmware", "qxl", "virtio", "none"}
	archBinary = map[string]string{"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
	// OVMF's code and its pristine variables, as Debian's ovmf installs them.
	aavmfCandidates = [][2]string{
		{"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"},
	}
	// firmwareDir holds the firmware a job may name (UEFI_PFLASH_CODE).
	firmwareDir    = "/usr/share/"
	ovmfCandidates = [][2]string{
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	}
)

func between(lo, hi int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("give a whole number from %d to %d", lo, hi)
		}
		return nil
	}
}

// optional lets an empty value through: the setting's default is "none".
func optional(check func(string) error) func(string) error {
	return func(v string) error {
		if v == "" {
			return nil
		}
		return check(v)
	}
}

func oneOf(values ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(values, v) {
			return fmt.Errorf("use one of %s", strings.Join(values, ", "))
		}
		return nil
	}
}

func zeroOrOne(v string) error {
	if v != "0" && v != "1" && v != "" {
		return errors.New("give 0 or 1")
	}
	return nil
}

// machineSettings is the one table of settings that reach QEMU.
var machineSettings = []machineSetting{
	{"ARCH", "x86_64", "the guest's architecture", oneOf("x86_64", "aarch64"), func(m *machine, v string) error {
		bin := archBinary[v]
		m.arch = v
		if v != "x86_64" {
			if _, err := exec.LookPath(bin); err != nil {
				return fmt.Errorf("%s is not installed on this worker", bin)
			}
			m.cfg.Binary = bin
		}
		return nil
	}},
	{"QEMUCPU", "", "the -cpu model", func(v string) error {
		if v != "" && !cpuModel.MatchString(v) {
			return errors.New("give a CPU model such as qemu64, host or Haswell")
		}
		return nil
	}, func(m *machine, v string) error { m.cfg.CPU = v; return nil }},
	{"QEMUCPUS", "1", "virtual CPUs", between(1, 256), func(m *machine, v string) error {
		m.cfg.CPUs, _ = strconv.Atoi(v)
		return nil
	}},
	{"QEMURAM", "1024", "memory in MiB", between(64, 1<<20), func(m *machine, v string) error {
		m.cfg.MemoryMiB, _ = strconv.Atoi(v)
		return nil
	}},
	{"QEMUVGA", "std", "the graphics card", oneOf(vgaModels...), func(m *machine, v string) error { m.cfg.VGA = v; return nil }},
	{"HDDMODEL", "virtio-blk", "the disks' device", oneOf(qemu.HDDModels...), func(m *machine, v string) error {
		m.cfg.HDDModel = v
		return nil
	}},
	{"CDMODEL", "ide-cd", "the CD-ROM's device", oneOf(qemu.CDModels...), func(m *machine, v string) error {
		m.cfg.CDModel = v
		return nil
	}},
	{"NUMDISKS", "", "disks, blank ones added after HDD_1…n (default: one when there is none)", optional(between(0, 16)), func(m *machine, v string) error {
		m.numDisks = -1
		if v != "" {
			m.numDisks, _ = strconv.Atoi(v)
		}
		return nil
	}},
	{"HDDSIZEGB", "10", "the size of each blank disk in GiB", between(1, 4096), func(m *machine, v string) error {
		m.sizeGB, _ = strconv.Atoi(v)
		return nil
	}},
	{"BOOT_HDD_IMAGE", "0", "boot from the first disk, not the CD-ROM", zeroOrOne, func(m *machine, v string) error {
		if v == "1" {
			m.cfg.BootFrom = "c"
		}
		return nil
	}},
	{"NICTYPE", "user", "the network: user (QEMU's user network) or none", oneOf("user", "none"), func(m *machine, v string) error {
		if v == "none" {
			m.cfg.NICModel = ""
		}
		return nil
	}},
	{"NICMODEL", "virtio-net", "the network card", oneOf(qemu.NICModels...), func(m *machine, v string) error {
		if m.ready.Settings["NICTYPE"] != "none" {
			m.cfg.NICModel = v
		}
		return nil
	}},
	{"UEFI", "0", "boot with UEFI firmware (OVMF)", zeroOrOne, func(m *machine, v string) error { m.uefi = v == "1"; return nil }},
	{"UEFI_PFLASH_CODE", "", "the UEFI firmware code (default: OVMF's)", nil, func(m *machine, v string) error {
		m.uefiCode = v
		return nil
	}},
	{"UEFI_PFLASH_VARS", "", "the UEFI variable store to start from (default: OVMF's; an HDD-like asset)", nil, func(m *machine, v string) error {
		if p, ok := m.ready.Assets["UEFI_PFLASH_VARS"]; ok {
			v = p
		}
		m.uefiVars = v
		return nil
	}},
	{"KERNEL", "", "a kernel to boot directly", nil, func(m *machine, _ string) error {
		m.cfg.Kernel = m.ready.Assets["KERNEL"]
		return nil
	}},
	{"INITRD", "", "its initrd", nil, func(m *machine, _ string) error { m.cfg.Initrd = m.ready.Assets["INITRD"]; return nil }},
	{"APPEND", "", "its command line", nil, func(m *machine, v string) error { m.cfg.Append = v; return nil }},
	{"QEMU_NO_KVM", "0", "run under TCG even where KVM works", zeroOrOne, func(m *machine, v string) error {
		m.noKVM = v == "1"
		return nil
	}},
	{"QEMU_NO_TABLET", "0", "no USB tablet: no pointer for mouse_set and assert_and_click", zeroOrOne, func(m *machine, v string) error {
		m.cfg.NoTablet = v == "1"
		return nil
	}},
	{"QEMU_DISABLE_SNAPSHOTS", "0", "never save the VM after a milestone module (so no rollbacks)", zeroOrOne, func(*machine, string) error { return nil }},
	{"QEMU_APPEND", "", `more QEMU options, as openQA: "device virtio-rng-pci -smbios type=1"`, nil, func(m *machine, v string) error {
		for i, opt := range strings.Split(v, " -") {
			fields := strings.Fields(opt)
			if len(fields) == 0 {
				continue
			}
			if i == 0 {
				fields[0] = strings.TrimPrefix(fields[0], "-")
			}
			fields[0] = "-" + fields[0]
			m.qemuExtra = append(m.qemuExtra, fields...)
		}
		return nil
	}},
}

// MachineSettingNames are the settings machineSettings reads, for docs
// and for the worker's list of settings a job may not use.
func MachineSettingNames() []string {
	names := make([]string, len(machineSettings))
	for i, s := range machineSettings {
		names[i] = s.name
	}
	return names
}

// armMachine makes an aarch64 machine as os-autoinst does: QEMU's virt
// board, the emulator's best CPU unless QEMUCPU names one, UEFI firmware
// (AAVMF; there is no BIOS), a virtio GPU and a USB keyboard (virt has no
// VGA and no PS/2), and the CD-ROM on SCSI (no IDE either), unless the job
// sets these.
func (m *machine) armMachine(st map[string]string) {
	m.cfg.Machine = "virt,gic-version=max"
	if m.cfg.CPU == "" {
		m.cfg.CPU = "max"
	}
	m.uefi = true
	if st["QEMUVGA"] == "" {
		m.cfg.VGA = "virtio"
	}
	m.cfg.USBKeyboard = true
	if st["CDMODEL"] == "" {
		m.cfg.CDModel = "scsi-cd"
	}
}

// machineConfig turns a job's settings into its VM: every setting of the
// table checked, blank disks made, the UEFI variable store copied. A
// setting the worker forbids, or a value QEMU would refuse, is an error
// naming it.
func machineConfig(ctx context.Context, cfg Config, ready *schemas.JobReady, dir string, log *slog.Logger) (qemu.Config, error) {
	st := ready.Settings
	m := &machine{ready: ready, dir: dir, cfg: qemu.Config{
		Binary: cfg.QEMU, Dir: dir, Accel: cfg.Accel, Log: log, ISO: ready.Assets["ISO"],
	}}
	for _, name := range cfg.Forbidden {
		if v, ok := st[name]; ok && v != "" {
			return m.cfg, fmt.Errorf("%s=%s: this worker does not let jobs set %s", name, v, name)
		}
	}
	for _, s := range machineSettings {
		v, ok := st[s.name]
		if !ok || v == "" {
			v = s.def
		}
		if s.check != nil {
			if err := s.check(v); err != nil {
				return m.cfg, fmt.Errorf("%s=%q: %v", s.name, v, err)
			}
		}
		if err := s.apply(m, v); err != nil {
			return m.cfg, fmt.Errorf("%s=%q: %v", s.name, v, err)
		}
	}
	if m.noKVM {
		m.cfg.Accel = "tcg"
	}
	if m.arch == "aarch64" {
		m.armMachine(st)
	}
	for i := 1; ; i++ {
		p, ok := ready.Assets["HDD_"+strconv.Itoa(i)]
		if !ok {
			break
		}
		m.cfg.HDDs = append(m.cfg.HDDs, p)
	}
	if err := m.blankDisks(ctx); err != nil {
		return m.cfg, err
	}
	if err := m.firmware(); err != nil {
		return m.cfg, err
	}
	m.cfg.ExtraArgs = append(m.cfg.ExtraArgs, m.qemuExtra...)
	if m.cfg.ISO == "" && m.cfg.Kernel == "" && len(m.cfg.HDDs) == 0 {
		return m.cfg, errors.New("nothing to boot: set ISO, HDD_1 or KERNEL (with INITRD and APPEND)")
	}
	if m.cfg.Kernel == "" && (st["INITRD"] != "" || st["APPEND"] != "") {
		return m.cfg, errors.New("INITRD and APPEND need KERNEL")
	}
	return m.cfg, nil
}

// blankDisks adds empty qcow2 disks of HDDSIZEGB up to NUMDISKS; with no
// NUMDISKS, one when the job has no disk and boots a CD-ROM, as openQA's
// installers expect a disk to install to.
func (m *machine) blankDisks(ctx context.Context) error {
	want := m.numDisks
	if want < 0 {
		want = len(m.cfg.HDDs)
		if want == 0 && m.cfg.ISO != "" {
			want = 1
		}
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return err
	}
	for i := len(m.cfg.HDDs); i < want; i++ {
		p := filepath.Join(m.dir, fmt.Sprintf("blank-%d.qcow2", i+1))
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", p, strconv.Itoa(m.sizeGB)+"G").CombinedOutput()
		if err != nil {
			return fmt.Errorf("NUMDISKS: qemu-img create %s: %v: %s", p, err, strings.TrimSpace(string(out)))
		}
		m.cfg.HDDs = append(m.cfg.HDDs, p)
	}
	return nil
}

// firmware picks the UEFI code and copies the variable store into the
// VM's directory: the machine writes its own.
func (m *machine) firmware() error {
	if !m.uefi {
		if m.uefiCode != "" {
			return errors.New("UEFI_PFLASH_CODE is set, but UEFI is not: set UEFI=1")
		}
		return nil
	}
	code, vars := m.uefiCode, m.uefiVars
	candidates := ovmfCandidates
	if m.arch == "aarch64" {
		candidates = aavmfCandidates
	}
	if code == "" {
		for _, c := range candidates {
			if _, err := os.Stat(c[0]); err == nil {
				code = c[0]
				if vars == "" {
					vars = c[1]
				}
				break
			}
		}
	}
	if code == "" {
		pkg := "ovmf"
		if m.arch == "aarch64" {
			pkg = "qemu-efi-aarch64"
		}
		return fmt.Errorf("UEFI=1: no UEFI firmware on this worker: install the %s package, or set UEFI_PFLASH_CODE", pkg)
	}
	if vars == "" {
		return fmt.Errorf("UEFI=1: no variable store for %s: set UEFI_PFLASH_VARS", code)
	}
	for _, f := range []struct{ name, path string }{{"UEFI_PFLASH_CODE", code}, {"UEFI_PFLASH_VARS", vars}} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s=%s: %v", f.name, f.path, err)
		}
	}
	// The firmware is given to the VM, whose tests could read it back: a
	// job may name the firmware of the host's packages only, never another
	// file of the host. (A variable store the job names is an asset: the
	// fetch stage brought it, from where this worker lets jobs name files.)
	if real, err := filepath.EvalSymlinks(code); err != nil || !strings.HasPrefix(real, firmwareDir) {
		return fmt.Errorf("UEFI_PFLASH_CODE=%s: give a firmware file of this worker's packages (under %s); other files of the host are refused", code, firmwareDir)
	}
	// The job's own variable store, in qcow2 so that the VM can be saved
	// as a snapshot (every writable disk must be qcow2 for that).
	own := filepath.Join(m.dir, "uefi-vars.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", vars, own).CombinedOutput(); err != nil {
		return fmt.Errorf("UEFI_PFLASH_VARS=%s: qemu-img convert: %v: %s", vars, err, strings.TrimSpace(string(out)))
	}
	m.cfg.UEFICode, m.cfg.UEFIVars = code, own
	return nil
}
