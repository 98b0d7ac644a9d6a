package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestKeysForStringUsesAUSKeyboard(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a", []string{"a"}},
		{"A", []string{"shift-a"}},
		{"Zz9", []string{"shift-z", "z", "9"}},
		{"ls -l\n", []string{"l", "s", "spc", "minus", "l", "ret"}},
		{"\t", []string{"tab"}},
		{"|", []string{"shift-backslash"}},
		{">", []string{"shift-dot"}},
		{"<", []string{"shift-comma"}},
		{`"`, []string{"shift-apostrophe"}},
		{"'", []string{"apostrophe"}},
		{"~", []string{"shift-grave_accent"}},
		{"`", []string{"grave_accent"}},
		{"_", []string{"shift-minus"}},
		{":", []string{"shift-semicolon"}},
		{";", []string{"semicolon"}},
		{"$", []string{"shift-4"}},
		{"!@#%^&*()", []string{"shift-1", "shift-2", "shift-3", "shift-5", "shift-6", "shift-7", "shift-8", "shift-9", "shift-0"}},
		{"=+", []string{"equal", "shift-equal"}},
		{"[]{}", []string{"bracket_left", "bracket_right", "shift-bracket_left", "shift-bracket_right"}},
		{`\/?`, []string{"backslash", "slash", "shift-slash"}},
		{",.", []string{"comma", "dot"}},
		{"", []string{}},
	} {
		got, err := keysForString(tc.in)
		if err != nil {
			t.Errorf("keysForString(%q): %v", tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("keysForString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestKeysForStringRefusesWhatNoKeyTypes(t *testing.T) {
	for _, in := range []string{"é", "\r", "\x00", "ok\x7f", "日本"} {
		if keys, err := keysForString(in); err == nil {
			t.Errorf("keysForString(%q) = %q, want an error", in, keys)
		}
	}
}

// Every printable ASCII character must reach QEMU as valid qcodes.
func TestEveryPrintableCharacterHasQCodes(t *testing.T) {
	for r := rune(' '); r <= '~'; r++ {
		key, ok := keyForChar(r)
		if !ok {
			t.Errorf("no key for %q", r)
			continue
		}
		codes, err := qcodes(key)
		if err != nil {
			t.Errorf("%q → %q: %v", r, key, err)
			continue
		}
		if shifted := r >= 'A' && r <= 'Z' || strings.ContainsRune(`~!@#$%^&*()_+{}|:"<>?`, r); shifted != (codes[0] == "shift") {
			t.Errorf("%q → %q: shifted is %v", r, codes, shifted)
		}
	}
}

func TestQCodesOfKeyNames(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want []string
	}{
		{"ret", []string{"ret"}},
		{"esc", []string{"esc"}},
		{"spc", []string{"spc"}},
		{"backspace", []string{"backspace"}},
		{"ctrl-alt-delete", []string{"ctrl", "alt", "delete"}},
		{"alt-f2", []string{"alt", "f2"}},
		{"f12", []string{"f12"}},
		{"a", []string{"a"}},
		{"A", []string{"shift", "a"}},
		{"ctrl-A", []string{"ctrl", "shift", "a"}},
		{"ctrl-c", []string{"ctrl", "c"}},
		{"-", []string{"minus"}},
		{"minus", []string{"minus"}},
		{"alt-minus", []string{"alt", "minus"}},
		{"|", []string{"shift", "backslash"}},
		{" ", []string{"spc"}},
		{"\n", []string{"ret"}},
		{"shift-tab", []string{"shift", "tab"}},
		{"super", []string{"meta_l"}},
		{"altgr-q", []string{"alt_r", "q"}},
		{"caps", []string{"caps_lock"}},
		{"kp_enter", []string{"kp_enter"}},
		{"ctrl-alt-f1", []string{"ctrl", "alt", "f1"}},
	} {
		got, err := qcodes(tc.key)
		if err != nil {
			t.Errorf("qcodes(%q): %v", tc.key, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("qcodes(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestQCodesRefusesUnknownNames(t *testing.T) {
	for _, key := range []string{"", "f13", "f0", "ctrl-", "ctrl--", "-ctrl", "enter", "RET", "é", "ctrl-é"} {
		if got, err := qcodes(key); err == nil {
			t.Errorf("qcodes(%q) = %q, want an error", key, got)
		}
	}
}

// Key names come from test scripts: no input may panic, and whatever is
// accepted must be a qcode QEMU knows.
func FuzzQCodes(f *testing.F) {
	for _, seed := range []string{"ret", "ctrl-alt-delete", "A", "-", "ctrl--", "alt-f2", "é", "shift-|"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, key string) {
		codes, err := qcodes(key)
		if err != nil {
			return
		}
		if len(codes) == 0 {
			t.Fatalf("qcodes(%q) accepted no codes", key)
		}
		for _, c := range codes {
			if !isQCode(c) {
				t.Fatalf("qcodes(%q) = %q: %q is no qcode", key, codes, c)
			}
		}
	})
}

func isQCode(c string) bool {
	if len(c) == 1 && (c[0] >= 'a' && c[0] <= 'z' || c[0] >= '0' && c[0] <= '9') {
		return true
	}
	return namedQCodes[c] || isFunctionKey(c)
}

func TestCommandLine(t *testing.T) {
	cfg := Config{
		Dir:    "/run/jetqa/job 7",
		CPU:    "host",
		CPUs:   2,
		ISO:    "/assets/install,dvd.iso",
		HDDs:   []string{"/pool/hdd1.qcow2"},
		Kernel: "/assets/vmlinuz", Initrd: "/assets/initrd", Append: "console=ttyS0 quiet",
		ExtraArgs: []string{"-nic", "user,model=virtio-net-pci"},
	}.withDefaults()
	got := commandLine(cfg, "kvm", []disk{{path: "/pool/hdd1.qcow2", format: "qcow2"}})
	want := []string{
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", "kvm",
		"-cpu", "host", "-smp", "2", "-m", "1024", "-vga", "std",
		"-chardev", "socket,id=qmp,path=/run/jetqa/job 7/qmp.sock",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path=/run/jetqa/job 7/serial0.sock,logfile=/run/jetqa/job 7/serial0.log",
		"-serial", "chardev:serial0",
		"-drive", "file=/assets/install,,dvd.iso,media=cdrom,readonly=on,if=none,id=cd0", "-device", "ide-cd,drive=cd0",
		"-drive", "file=/pool/hdd1.qcow2,format=qcow2,if=none,id=hd0", "-device", "virtio-blk-pci,drive=hd0",
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=upload0,server=on,wait=off,path=/run/jetqa/job 7/upload.sock", "-device", "virtserialport,chardev=upload0,name=org.jetqa.upload",
		"-device", "qemu-xhci,id=xhci", "-device", "usb-tablet,bus=xhci.0",
		"-kernel", "/assets/vmlinuz", "-initrd", "/assets/initrd", "-append", "console=ttyS0 quiet",
		"-nic", "user,model=virtio-net-pci",
	}
	if !slices.Equal(got, want) {
		t.Errorf("commandLine =\n%q\nwant\n%q", got, want)
	}
}

func TestDiskFormatByMagic(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"qcow2", "QFI\xfb\x00\x00\x00\x03rest", "qcow2"},
		{"raw", "\xfa\x31\xc0 boot sector", "raw"},
		{"short", "QF", "raw"},
		{"empty", "", "raw"},
	} {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := diskFormat(path); err != nil || got != tc.want {
			t.Errorf("diskFormat(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestCommandLineOfOpenQAsMachineSettings(t *testing.T) {
	cfg := Config{
		Dir: "/vm", ISO: "/a/i.iso", HDDs: []string{"/a/h.qcow2"}, HDDModel: "scsi-hd", CDModel: "scsi-cd",
		NICModel: "e1000", UEFICode: "/fw/CODE.fd", UEFIVars: "/vm/vars.fd", BootFrom: "c",
		GuestCommand: []string{"/usr/bin/jetqa", "guest-bridge", "/run/a,b c/it's"},
	}.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(commandLine(cfg, "tcg", []disk{{path: "/a/h.qcow2", format: "qcow2"}}), " ")
	for _, want := range []string{
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd -drive if=pflash,format=raw,unit=1,file=/vm/vars.fd",
		"-device virtio-scsi-pci,id=scsi0",
		"-device scsi-cd,drive=cd0,bootindex=2",
		"-device scsi-hd,drive=hd0,bootindex=1",
		`-netdev user,id=qanet0,guestfwd=tcp:10.0.2.100:20013-cmd:'/usr/bin/jetqa' 'guest-bridge' '/run/a,,b c/it'\''s' -device e1000,netdev=qanet0,romfile=`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("command line lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []Config{{Dir: "/vm", HDDModel: "floppy"}, {Dir: "/vm", NICModel: "ne2k"}, {Dir: "/vm", UEFICode: "/fw"}, {Dir: "/vm", BootFrom: "n"}} {
		if err := bad.withDefaults().validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
