# GRUB boots the kernel; the banner and the shell prompt appear on tty1.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    assert_screen 'testos-shell', 120;
    # main.pm's cleanup handler unregistered the needle for FLAVOR=other.
    die 'a needle of another flavor matched' if check_screen 'testos-shell-other-flavor', 0;
    select_console 'root-console';
}

sub test_flags { {fatal => 1, milestone => 1} }

1;
