# testos' tests as an openQA test distribution: os-autoinst's Perl, laid
# out and written the way real distributions are (main.pm schedules with
# loadtest, a distribution class in lib/ adds the consoles, a cleanup
# handler keeps out the needles of other flavors). jetqa runs it with
# os-autoinst's own test side, as isotovideo does; so does isotovideo.
use strict;
use warnings;
use testapi qw(get_var);
use needle;
use testosdistribution;

testapi::set_distribution(testosdistribution->new());

# As openSUSE's main.pm: a needle tagged ENV-FLAVOR-<flavor> is only for
# jobs of that FLAVOR.
$needle::cleanuphandler = sub {
    my $flavor = get_var('FLAVOR', '');
    for my $n (needle::all()) {
        for my $tag (@{$n->{tags}}) {
            next unless $tag =~ /^ENV-FLAVOR-(.+)$/ && $1 ne $flavor;
            $n->unregister("for flavor $1");
            last;
        }
    }
};

sub loadtest {
    my ($test) = @_;
    autotest::loadtest("tests/$test.pm");
}

loadtest 'boot/boot_to_shell';
loadtest 'console/tablet_click';
loadtest 'console/greeting';
loadtest 'console/shell_commands';
loadtest 'console/guest_files';
loadtest 'console/switch_consoles';
unless (get_var('NO_FAILURES')) {
    # A module that fails, and does not fail the job; after it the machine
    # rolls back to the snapshot taken after boot_to_shell.
    loadtest 'console/broken';
    loadtest 'console/rolled_back';
}
1;
