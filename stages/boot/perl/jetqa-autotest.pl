#!/usr/bin/perl
# jetqa's driver for os-autoinst's Perl test side. The worker starts it in
# a working directory holding vars.json, with a socket to the worker as
# file descriptor 3, and plays isotovideo on the other end of that socket.
#
# It does what isotovideo's prepare and autotest::start_process do, with
# os-autoinst's own code: it loads the distribution's main.pm (its
# loadtest, set_distribution and add_console calls run here), runs
# needle::init (and with it the distribution's $needle::cleanuphandler),
# tells the worker which needles stay registered and which consoles the
# distribution added, and runs the scheduled modules with autotest::run_all.
# Results are written by os-autoinst into testresults/, as under isotovideo.
use Mojo::Base -strict, -signatures;

my $os_autoinst;
BEGIN {
    $os_autoinst = $ENV{JETQA_OS_AUTOINST} || '/usr/lib/os-autoinst';
    die "jetqa: no os-autoinst in $os_autoinst: install the os-autoinst package, or point JETQA_OS_AUTOINST at a checkout\n"
      unless -e "$os_autoinst/autotest.pm";
    unshift @INC, $os_autoinst;
}

use IO::Handle;
use log;
use bmwqemu ();
use testapi ();
use autotest ();
use needle ();
use distribution ();
use myjsonrpc ();
use cv ();
use OpenQA::Isotovideo::Interface ();
use OpenQA::Isotovideo::Utils ();

{
    # Older os-autoinst reads it; newer ones do not have it.
    no warnings 'once';
    $bmwqemu::scriptdir = $os_autoinst;
}
# The worker logs what the test side prints as the job's log.
$log::direct_output = 1;
STDOUT->autoflush(1);
STDERR->autoflush(1);

open(my $worker, '+<&=', 3) or die "jetqa: no socket to the worker on file descriptor 3: $!\n";
$worker->autoflush(1);
$autotest::isotovideo = $worker;

sub ask ($cmd, %args) {
    myjsonrpc::send_json($worker, {cmd => $cmd, %args});
    my $rsp = myjsonrpc::read_json($worker);
    die "jetqa: the worker closed the connection\n" unless $rsp;
    die "jetqa: $rsp->{error}\n" if $rsp->{error};
    return $rsp->{ret};
}

# What isotovideo's prepare does, without checking out code (the worker
# has it) and without a command server (the worker serves the guest).
bmwqemu::init();
$testapi::distri = distribution->new;
OpenQA::Isotovideo::Utils::load_test_schedule();
testapi::init();
needle::init();
bmwqemu::save_vars();

my %consoles;
for my $name (sort keys %{$testapi::distri->{consoles} // {}}) {
    my $c = $testapi::distri->{consoles}->{$name};
    $consoles{$name} = {class => ref $c, args => $c->{args} // {}};
}
# The needles the distribution keeps registered, which the worker matches.
sub registered () { [sort map { $_->{file} } grep { !$_->{unregistered} } needle::all()] }

ask(jetqa_schedule => (
        interface => $OpenQA::Isotovideo::Interface::version,
        needles_dir => needle::needles_dir(),
        needles => registered(),
        consoles => \%consoles,
        tests => [map { $_->{fullname} } @autotest::testorder]));

# set_var(…, reload_needles => 1) re-runs needle::init and with it the
# cleanup handler. isotovideo does that in its backend process; the
# worker cannot run Perl, so it is done here and the worker told the
# result.
my $query = \&autotest::query_isotovideo;
my $reloading = sub ($cmd, $args = undef) {
    if ($cmd eq 'backend_reload_needles') {
        bmwqemu::load_vars();
        $_->unregister() for needle::all();
        needle::init();
        $args = {%{$args // {}}, needles => registered()};
    }
    return $query->($cmd, $args);
};
{
    no warnings 'redefine';
    *autotest::query_isotovideo = $reloading;
    *testapi::query_isotovideo = $reloading;
}

# What the test process does after isotovideo's "GO".
cv::init();
require tinycv;
tinycv::create_threads();
bmwqemu::load_vars();
autotest::run_all();
