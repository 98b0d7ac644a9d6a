# After broken failed, the machine is back at the snapshot taken after
# boot_to_shell: the mark broken left is gone.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    die 'the machine was not rolled back: /root/mark is there' unless script_run('test -e /root/mark') == 1;
}

1;
