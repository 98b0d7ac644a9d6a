# The testos demo in os-autoinst's Perl, the same modules as ../main.star:
# the reference `make bench` runs under isotovideo to compare jetqa's wall
# time with (BenchmarkDemoAgainstIsotovideo). The needles are ../needles.
use strict;
use warnings;
use testapi;
use autotest;
use distribution;

testapi::set_distribution(distribution->new());
autotest::loadtest("tests/boot.pm");
autotest::loadtest("tests/shell.pm");
1;
