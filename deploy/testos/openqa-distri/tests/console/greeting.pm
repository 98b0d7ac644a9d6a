# Type a command and check its output on the screen and on the serial
# console, with Perl's regular expressions.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    type_string "clear; echo jetqa says hello\n";
    assert_screen 'hello-output';
    die 'check_screen found a desktop on a text console' if check_screen 'graphical-desktop', 1;

    type_string "echo jetqa says hello over serial > /dev/$serialdev\n";
    wait_serial('jetqa says hello over serial', 30) or die 'the echo did not reach the serial console';
    # A backreference and a lookbehind, which real tests use.
    type_string "echo tick-tock tick-tock id=42 > /dev/$serialdev\n";
    wait_serial(qr/(tick-tock) \1/, 30) or die 'no repeated word on the serial console';
    my $out = wait_serial(qr/(?<=id=)\d+/, 30) or die 'no id on the serial console';
    my ($id) = $out =~ /id=(\d+)/;
    record_info 'Hello', "the screen and the serial console both answered ($id)";
    save_screenshot;
}

1;
