# Files between the guest and the worker, through the routes os-autoinst's
# worker serves the guest (autoinst_url), as distributions use them: test
# data, a script too long to type, a log and an asset uploaded with curl;
# and the network cable pulled and plugged back in.
use base 'basetest';
use strict;
use warnings;
use testapi;

sub run {
    assert_script_run 'curl -sf ' . data_url('greeting.txt') . ' | grep -qx "hello from the test data"';
    # script_output sends a script of 80 characters or more through
    # current_script, which the guest fetches with curl.
    my $out = script_output 'for word in one two three; do echo "the word is $word"; done; echo "and that is all of them"';
    die "the long script printed '$out'" unless $out =~ /the word is three\nand that is all of them/;
    assert_script_run 'dmesg > /tmp/dmesg.txt';
    upload_logs '/tmp/dmesg.txt';
    assert_script_run 'echo "made by the guest" > /tmp/notes.txt';
    upload_asset '/tmp/notes.txt';
    # With its network cable pulled the guest cannot reach the routes;
    # plugged back in, it can.
    switch_network network_enabled => 0;
    die 'the routes answered with the cable out' if script_run('curl -sf -m 5 ' . autoinst_url('/vars') . ' > /dev/null') == 0;
    switch_network network_enabled => 1;
    assert_script_run 'curl -sf -m 10 ' . autoinst_url('/vars') . ' | grep -q TEST';
    # A frozen machine runs on once resumed.
    freeze_vm;
    resume_vm;
    assert_script_run 'true';
}

1;
