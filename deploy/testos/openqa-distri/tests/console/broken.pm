# Fails on purpose, after leaving a mark in the guest: testos has no
# desktop. ignore_failure keeps it out of the job's result.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    assert_script_run 'echo broken > /root/mark';
    assert_screen 'graphical-desktop', 5;
}

sub test_flags { {ignore_failure => 1} }

1;
