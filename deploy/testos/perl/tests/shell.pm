# Type a command and check its output on the screen and on the serial
# console; run commands and check their exit status.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    type_string "clear; echo jetqa says hello\n";
    assert_screen 'hello-output', 30;

    type_string "echo jetqa says hello over serial > /dev/ttyS0\n";
    wait_serial('jetqa says hello over serial', 30) or die 'the echo did not reach the serial console';

    assert_script_run 'grep -q testos /proc/sys/kernel/hostname';
    die 'script_run did not return the exit status of false' unless script_run('false') == 1;
    save_screenshot;
}

sub test_flags { {fatal => 1} }

1;
