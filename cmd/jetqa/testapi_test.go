package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// testapiModule exercises openQA's testapi on testos: typing at openQA's
// speeds, screen changes, output read through the serial port, keys held
// down, variables, the CD drive, and a shutdown the test asks for.
const testapiModule = `
def run():
    type_string("clear; echo slow typing\n", max_interval=40)
    if not wait_screen_change(lambda: enter_cmd("echo the screen changes"), timeout=10):
        fail("typing a command did not change the screen")
    send_key("ret", wait_screen_change=True)

    out = script_output("echo out1; echo out2 >&2")
    if out != "out1\nout2":
        fail("script_output gave %r" % out)
    validate_script_output("cat /proc/version", "Linux version")
    validate_script_output("echo abc", lambda o: o == "abc")
    if script_output("exit 3", proceed_on_failure=True) != "":
        fail("proceed_on_failure")

    type_string("echo ")
    hold_key("shift")
    send_key("h")
    send_key("i")
    release_key("shift")
    type_string(" > /dev/ttyS0\n")
    if not wait_serial("HI", timeout=30):
        fail("keys typed with shift held did not arrive as HI")
    if wait_serial("HI", timeout=2, expect_not_found=True) == None:
        fail("expect_not_found: HI was found again")
    type_string("echo 'a.b(c' > /dev/ttyS0\n")
    if wait_serial("a.b(c", timeout=30, no_regex=True) != "a.b(c":
        fail("no_regex")
    if not wait_still_screen(stilltime=1, timeout=20, similarity_level=30):
        fail("the idle screen never stood still")

    if not check_var("DISTRI", "testos") or check_var("DISTRI", "other"):
        fail("check_var")
    set_var("SEEN_BY", "testapi")
    if get_required_var("SEEN_BY") != "testapi":
        fail("set_var did not reach get_required_var")
    diag("testapi module done with the console")

    if upload_logs("/proc/cpuinfo", log_name="cpuinfo.txt") != "testapi-cpuinfo.txt":
        fail("upload_logs named the file otherwise")
    upload_logs("/nonexistent/file", failok=True)

    type_string("clear; echo jetqa says hello")
    send_key_until_needlematch("hello-output", "ret", 3)
    eject_cd()
`

const shutdownModule = `
def run():
    enter_cmd("poweroff")
    assert_shutdown(60)
    if not check_shutdown(1):
        fail("check_shutdown after the machine went off")
`

// The testapi calls do what openQA's do, against a real VM; a command
// that times out fails its module, a loop that never waits is stopped by
// cancel, and main.star's loop by its step limit.
func TestTestapiOnARealVM(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "testapi.star"), testapiModule)
		writeFile(t, filepath.Join(dir, "tests", "shutdown.star"), shutdownModule)
		writeFile(t, filepath.Join(dir, "tests", "timeout.star"), "def run():\n    script_run('sleep 120', timeout=3)\n")
		// openQA's module flags: a failure that does not count, and one
		// that stops the job.
		writeFile(t, filepath.Join(dir, "tests", "ignored.star"), "def test_flags():\n    return {'ignore_failure': True}\ndef run():\n    fail('ignored')\n")
		writeFile(t, filepath.Join(dir, "tests", "fatal.star"), "def test_flags():\n    return {'fatal': True}\ndef run():\n    fail('fatal')\n")
		writeFile(t, filepath.Join(dir, "tests", "loop.star"), "def run():\n    while True:\n        pass\n")
		writeFile(t, filepath.Join(dir, "main.star"), "for m in get_var('MODULES').split(','):\n    loadtest(m)\n")
	})
	loopy := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "main.star"), "while True:\n    pass\n")
	})

	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,testapi,shutdown"))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("testapi job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/testapi-cpuinfo.txt?seq=%d", s.api, id, s.finishedAt(id)))
	if err != nil {
		t.Fatal(err)
	}
	cpuinfo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(cpuinfo), "processor") {
		t.Fatalf("the guest's /proc/cpuinfo, uploaded: %s %.200q", resp.Status, cpuinfo)
	}
	// The job's log has every testapi call, and never what was typed.
	resp, err = http.Get(fmt.Sprintf("%s/tests/%d/file/autoinst-log.txt", s.api, id))
	if err != nil {
		t.Fatal(err)
	}
	autoinst, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`call="type_string(<24 characters>, max_interval=40)"`, `call="script_output(\"echo out1; echo out2 >&2\")"`, "module finished"} {
		if !strings.Contains(string(autoinst), want) {
			t.Errorf("autoinst-log.txt lacks %s", want)
		}
	}
	if strings.Contains(string(autoinst), "slow typing") {
		t.Error("autoinst-log.txt shows what type_string typed")
	}

	// A failed module fails the job, and the next ones run, as in openQA,
	// until a fatal one fails.
	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,ignored,timeout,fatal,shutdown"))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultFailed || !strings.Contains(fin.Reason, `timeout: script_run "sleep 120": command timed out`) {
		t.Fatalf("job %d with a command that times out: %s (%s)", id, fin.Result, fin.Reason)
	}
	var results []string
	for _, m := range fin.Modules {
		results = append(results, m.Name+":"+m.Result+strings.Join(m.Flags, "+"))
	}
	if got := strings.Join(results, " "); got != "boot:passed ignored:failedignore_failure timeout:failed fatal:failedfatal shutdown:skipped" {
		t.Errorf("modules %s", got)
	}

	id = s.post(t, demoSettings(testos, "CASEDIR="+loopy))
	fin = s.finish(t, id, time.Minute)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "main.star did not end within") {
		t.Fatalf("job %d whose main.star never ends: %s (%s)", id, fin.Result, fin.Reason)
	}

	// Cancelled while a module spins, the job ends at once, VM and all.
	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,loop"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".module"}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if m, ok := p.(*schemas.ModuleStarted); ok && m.Module == "loop" {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatalf("job %d never started its loop: %v", id, err)
	}
	s.postAction(t, id, "cancel", 200)
	start := time.Now()
	fin = s.finish(t, id, 30*time.Second)
	if fin.Result != schemas.ResultUserCancelled {
		t.Fatalf("job %d cancelled in a loop: %s (%s)", id, fin.Result, fin.Reason)
	}
	t.Logf("the spinning job ended %s after the cancel", time.Since(start).Round(time.Millisecond))
}

// A job's machine follows openQA's settings: two disks, UEFI firmware for
// a kernel booted directly, and a setting the worker refuses.
func TestMachineSettingsReachTheGuest(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	// testos has no disk or network drivers (no kernel modules): the guest
	// counts the devices on its PCI bus, and says whether UEFI booted it.
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "machine.star"), `
def run():
    disks = script_output("grep -c 0x1001 /sys/bus/pci/devices/*/device | grep -c :1 || true")
    if disks != get_var("WANT_DISKS"):
        fail("the guest has %s virtio disks, want %s" % (disks, get_var("WANT_DISKS")))
    efi = script_output("test -d /sys/firmware/efi && echo uefi || echo bios")
    if efi != get_var("WANT_FIRMWARE"):
        fail("the guest booted with %s, want %s" % (efi, get_var("WANT_FIRMWARE")))
`)
		// UEFI's framebuffer is not the VGA text screen testos' needles
		// show: there the shell's prompt is awaited on the serial port.
		writeFile(t, filepath.Join(dir, "tests", "serialboot.star"), "def test_flags():\n    return {'milestone': True}\ndef run():\n    if not wait_serial('testos:~# ', timeout=120):\n        fail('no shell prompt on the serial port')\n")
		writeFile(t, filepath.Join(dir, "main.star"), "loadtest(get_var('BOOT_MODULE', 'boot'))\nloadtest('machine')\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "NUMDISKS=2", "HDDSIZEGB=1", "WANT_DISKS=2", "WANT_FIRMWARE=bios"))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("two-disk job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	uefi := demoSettings(testos, "CASEDIR="+repo, "UEFI=1", "BOOT_MODULE=serialboot", "WANT_DISKS=0", "WANT_FIRMWARE=uefi",
		"KERNEL="+filepath.Join(testos, "vmlinuz"), "INITRD="+filepath.Join(testos, "initrd.img"),
		"APPEND=console=tty0 console=ttyS0,115200 nomodeset consoleblank=0")
	delete(uefi, "ISO")
	id = s.post(t, uefi)
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("UEFI job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	id = s.post(t, demoSettings(testos, "QEMURAM=lots"))
	if fin := s.finish(t, id, time.Minute); fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, `QEMURAM="lots"`) {
		t.Fatalf("job %d with QEMURAM=lots: %s (%s)", id, fin.Result, fin.Reason)
	}
}

// Modules' snapshot flags, as os-autoinst's: the VM saved after a
// milestone comes back after a module with always_rollback and after a
// failed one, so what they wrote in the guest is gone.
func TestSnapshotsRollTheVMBack(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	const checkClean = "    if script_run('test -e /root/mark') != 1:\n        fail('not rolled back: /root/mark is there')\n"
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "bootm.star"), "def test_flags():\n    return {'milestone': True}\ndef run():\n    assert_screen('testos-shell', timeout=120)\n")
		writeFile(t, filepath.Join(dir, "tests", "scribble.star"), "def test_flags():\n    return {'always_rollback': True}\ndef run():\n    assert_script_run('echo scribbled > /root/mark')\n")
		writeFile(t, filepath.Join(dir, "tests", "failing.star"), "def run():\n"+checkClean+"    assert_script_run('echo again > /root/mark')\n    fail('on purpose')\n")
		writeFile(t, filepath.Join(dir, "tests", "clean.star"), "def run():\n"+checkClean)
		writeFile(t, filepath.Join(dir, "main.star"), "for m in ['bootm', 'scribble', 'failing', 'clean']:\n    loadtest(m)\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultFailed || !strings.HasPrefix(fin.Reason, "failing:") || !strings.Contains(fin.Reason, "fail: on purpose") {
		t.Fatalf("job %d: %s (%s), want failed on purpose", id, fin.Result, fin.Reason)
	}
	var got []string
	for _, m := range fin.Modules {
		rolled := ""
		for _, st := range m.Details {
			if strings.HasPrefix(st.Text, "Snapshot\n") {
				rolled = " (" + strings.TrimPrefix(st.Text, "Snapshot\n") + ")"
			}
		}
		got = append(got, m.Name+":"+m.Result+rolled)
	}
	want := "bootm:passed scribble:passed failing:failed (Loaded the snapshot taken after bootm, because scribble has always_rollback) clean:passed (Loaded the snapshot taken after bootm, because failing failed)"
	if strings.Join(got, " ") != want {
		t.Fatalf("modules:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
}

// A click on a needle's click point reaches the guest where the needle
// says, through the USB tablet; testos prints the tablet's reports on the
// serial port.
func TestMouseClicksReachTheGuest(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		png, err := os.ReadFile(filepath.Join(dir, "needles", "testos-shell.png"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "needles", "clickme.png"), string(png))
		// The prompt's area, clicked 20 pixels right and 4 down of its
		// corner, wherever a prompt is found on the screen.
		writeFile(t, filepath.Join(dir, "needles", "clickme.json"), `{"tags": ["clickme"], "area": [
			{"xpos": 0, "ypos": 0, "width": 153, "height": 16, "type": "match"},
			{"xpos": 0, "ypos": 48, "width": 81, "height": 16, "type": "match", "click_point": {"xpos": 20, "ypos": 4}}]}`)
		writeFile(t, filepath.Join(dir, "tests", "click.star"), `
def near(line, x, y):
    f = line.split(" ")
    gx, gy = int(f[1][2:]), int(f[2][2:])
    if gx < x - 60 or gx > x + 60 or gy < y - 60 or gy > y + 60:
        fail("the guest saw %s, want x=%d y=%d" % (line, x, y))

def run():
    assert_script_run("(pointer-events > /dev/ttyS0 &)")
    if not wait_serial("pointer-events: reading", timeout=30):
        fail("the guest has no USB tablet")
    assert_and_click("clickme")
    if not wait_serial("pointer x=\\d+ y=\\d+ left=1", timeout=30):
        fail("the click never reached the guest")
    mouse_set(700, 390)
    mouse_click("right")
    near(wait_serial("pointer x=\\d+ y=\\d+ left=0 right=1", timeout=30), 31901, 32027)
    mouse_hide()
    near(wait_serial("pointer x=32767 y=32767", timeout=30), 32767, 32767)
`)
		writeFile(t, filepath.Join(dir, "main.star"), "loadtest('boot')\nloadtest('click')\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	fin := s.finish(t, id, 5*time.Minute)
	resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/serial0.txt?seq=%d", s.api, id, s.finishedAt(id)))
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s); the guest's serial log:\n%s", id, fin.Result, fin.Reason, serial)
	}
	// Where jetqa says it clicked is where the guest saw the click.
	var clicked string
	for _, m := range fin.Modules {
		for _, st := range m.Details {
			if strings.HasPrefix(st.Text, "assert_and_click: clicked") {
				clicked = st.Text
			}
		}
	}
	var x, y int
	if _, err := fmt.Sscanf(clicked, "assert_and_click: clicked left at %d,%d", &x, &y); err != nil || x != 20 || (y-4)%16 != 0 {
		t.Fatalf("the click step %q: want the click point, 20 right and 4 down of a prompt's line", clicked)
	}
	seen := regexp.MustCompile(`pointer x=(\d+) y=(\d+) left=1`).FindStringSubmatch(string(serial))
	if seen == nil {
		t.Fatalf("the guest saw no left click:\n%s", serial)
	}
	gx, _ := strconv.Atoi(seen[1])
	gy, _ := strconv.Atoi(seen[2])
	if gx != x*0x7fff/719 || gy != y*0x7fff/399 {
		t.Fatalf("clicked at %d,%d of the 720x400 screen, the guest saw %d,%d of 0…32767, want %d,%d", x, y, gx, gy, x*0x7fff/719, y*0x7fff/399)
	}
	t.Logf("%s; the guest saw %s", clicked, seen[0])
}

// The job's screen is recorded every half second: its frames come with the
// results (as a video when ffmpeg is installed), and a screen that does
// not change while the serial port is silent is logged as a stall.
func TestVideoAndStalls(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		// TIMEOUT_SCALE=0.25 below: a stall after 15 s, and a wait of 25 s.
		writeFile(t, filepath.Join(dir, "tests", "bootslow.star"), "def run():\n    assert_screen('testos-shell', timeout=600)\n")
		writeFile(t, filepath.Join(dir, "tests", "idle.star"), "def run():\n    wait_serial('never printed', timeout=100)\n")
		writeFile(t, filepath.Join(dir, "main.star"), "loadtest('bootslow')\nloadtest('idle')\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "TIMEOUT_SCALE=0.25"))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	file := func(name string) []byte {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/%s?seq=%d", s.api, id, name, s.finishedAt(id)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", name, resp.Status, data)
		}
		return data
	}
	if log := file("autoinst-log.txt"); !regexp.MustCompile(`msg="stall: the screen has not changed and the serial port has been silent" for=1\ds module=idle`).Match(log) {
		t.Errorf("autoinst-log.txt has no stall in module idle:\n%s", log)
	}
	if _, err := exec.LookPath("ffmpeg"); err == nil {
		if video := file("video.webm"); len(video) < 1000 {
			t.Fatalf("video.webm has %d bytes", len(video))
		}
		return
	}
	frames, list := 0, ""
	tr := tar.NewReader(bytes.NewReader(file("video-frames.tar")))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		switch {
		case h.Name == "frames.ffconcat":
			list = string(data)
		case strings.HasPrefix(h.Name, "frame-"):
			if _, err := png.DecodeConfig(bytes.NewReader(data)); err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			frames++
		}
	}
	// GRUB's menu, the kernel's and the shell's screens at least; the idle
	// screen of the last 25 s is one frame, shown as long.
	if frames < 3 || strings.Count(list, "file 'frame-") != frames {
		t.Fatalf("%d frames, list:\n%s", frames, list)
	}
	t.Logf("%d frames", frames)
}

// Consoles, as os-autoinst's distributions add them: main.star adds tty
// consoles, select_console switches the guest's virtual terminal, and a
// console type jetqa does not have stops the job before the VM boots.
func TestConsolesSwitchVirtualTerminals(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "consoles.star"), `
def run():
    if current_console() != None:
        fail("a console is selected before any select_console")
    select_console("root-console")
    assert_script_run("tty | grep -qx /dev/tty2")
    select_console("sut")
    assert_script_run("tty | grep -qx /dev/tty1")
    if current_console() != "sut":
        fail("current_console() is %s" % current_console())
`)
		writeFile(t, filepath.Join(dir, "main.star"), `
add_console("sut", "tty-console", tty=1)
add_console("root-console", "tty-console", tty=2)
if get_var("SSH"):
    add_console("root-ssh", "ssh-xterm")
loadtest("boot")
loadtest("consoles")
`)
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "SSH=1"))
	fin := s.finish(t, id, time.Minute)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, `add_console("root-ssh", "ssh-xterm"): not supported`) {
		t.Fatalf("job %d with an ssh-xterm console: %s (%s)", id, fin.Result, fin.Reason)
	}
}

// A serial terminal on the guest's virtio console, os-autoinst's
// virtio-terminal: typing goes to it, wait_serial and commands read it.
func TestVirtioTerminal(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "terminal.star"), `
def run():
    select_console("root-virtio-terminal")
    enter_cmd("tty; echo on-the-terminal")
    if not wait_serial("/dev/hvc0\r?\non-the-terminal", timeout=60):
        fail("the terminal did not answer")
    if script_output("tty") != "/dev/hvc0":
        fail("script_output ran elsewhere")
    assert_script_run("test $(tty) = /dev/hvc0")
    send_key("ctrl-c")
    select_console("sut")
    assert_script_run("tty | grep -qx /dev/tty1")
`)
		writeFile(t, filepath.Join(dir, "main.star"), `
add_console("sut", "tty-console", tty=1)
add_console("root-virtio-terminal", "virtio-terminal")
loadtest("boot")
loadtest("terminal")
`)
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
}

// ARCH=aarch64 runs on qemu-system-aarch64 where it is installed, as
// os-autoinst builds that machine: virt board, UEFI firmware (AAVMF), a
// virtio GPU and a USB keyboard. testos is x86 only, so the firmware finds
// nothing to boot and opens its shell, which takes typed keys. (No NIC:
// the firmware would try network boots for minutes first.)
func TestAarch64Machine(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 is not installed (Debian's qemu-system-arm)")
	}
	if _, err := os.Stat("/usr/share/AAVMF/AAVMF_CODE.fd"); err != nil {
		t.Skip("no AAVMF firmware (Debian's qemu-efi-aarch64)")
	}
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "firmware.star"), `
def run():
    if not wait_serial("UEFI firmware", timeout=300):
        fail("no UEFI firmware on the serial port")
    if not wait_serial("Shell> ", timeout=300):
        fail("the firmware's shell did not open")
    type_string("echo jetqa-on-arm\n")
    if not wait_serial("jetqa-on-arm", timeout=120):
        fail("the shell did not take the typed keys")
    save_screenshot()
`)
		writeFile(t, filepath.Join(dir, "main.star"), "loadtest('firmware')\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "ARCH=aarch64", "NOVIDEO=1", "NICTYPE=none"))
	if fin := s.finish(t, id, 10*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("aarch64 job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
}
