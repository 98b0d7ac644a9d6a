# Commands and their exit status and output, as distributions run them.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    assert_script_run 'grep -q testos /proc/sys/kernel/hostname';
    die 'script_run did not return the exit status of false' unless script_run('false') == 1;
    my $kernel = script_output 'uname -r';
    die "uname -r gave '$kernel'" unless $kernel =~ /^\d+\.\d+/;
    record_info 'Kernel', $kernel;
}

1;
