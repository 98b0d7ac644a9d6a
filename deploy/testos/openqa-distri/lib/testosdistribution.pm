# testos as os-autoinst sees it: two shells on virtual terminals.
package testosdistribution;
use base 'distribution';
use strict;
use warnings;
use testapi qw(type_string wait_serial wait_still_screen);

sub init {
    my ($self) = @_;
    $self->SUPER::init();
    $self->add_console('root-console', 'tty-console', {tty => 1});
    $self->add_console('user-console', 'tty-console', {tty => 2});
}

# Called the first time a test selects a console. tty1 is where testos
# boots to, checked by boot_to_shell; tty2 still shows the boot's kernel
# messages, so it is cleared and asked to answer on the serial port.
sub activate_console {
    my ($self, $console) = @_;
    return if $console eq 'root-console';
    type_string "clear; echo $console is ready > /dev/ttyS0\n";
    wait_serial("$console is ready", 30) or die "$console did not answer";
    wait_still_screen 1;
}

1;
