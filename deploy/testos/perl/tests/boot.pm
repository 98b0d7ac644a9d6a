# GRUB boots the kernel; the banner and the shell prompt appear on tty1.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run { assert_screen 'testos-shell', 120 }

sub test_flags { {fatal => 1} }

1;
