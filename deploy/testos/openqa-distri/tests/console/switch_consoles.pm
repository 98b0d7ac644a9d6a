# Switch to the second console and back.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    select_console 'user-console';
    assert_script_run 'tty | grep -q tty2';
    type_string "clear; echo jetqa says hello\n";
    assert_screen 'hello-output';
    select_console 'root-console';
    assert_script_run 'tty | grep -q tty1';
    wait_still_screen 2;
}

1;
