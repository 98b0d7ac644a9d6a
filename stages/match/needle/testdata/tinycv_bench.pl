# Times os-autoinst's own needle search (Debian's os-autoinst package) on a
# list of decisions, for BenchmarkAgainstTinycv.
# Usage: perl tinycv_bench.pl DECISIONS_JSON
#
# Before each decision it reads a line from stdin, so that the caller can
# take turns with it and both see the same load on the machine (give it
# </dev/null to run straight through).
#
# DECISIONS_JSON: {"needles_dir": DIR, "decisions": [{"id": ID,
#   "screen": PNG, "needles": [NAME...], "threshold": T, "ratio": R,
#   "reps": N}...]}
# Prints one JSON line per decision: its id, the best needle ("" for none),
# every candidate best first with its areas, and ns_per_decision, the mean
# over reps of reading the screen's PNG into a fresh image (tinycv keeps
# what it prepared inside the image) and searching it.
use Mojo::Base -strict;
use lib '/usr/lib/os-autoinst';
use Mojo::JSON qw(encode_json);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
use FindBin;
use bmwqemu;
use needle;
use cv;
require "$FindBin::Bin/tinycv_result.pl";

my ($input, $needles) = load_decisions($ARGV[0]);
my %needles = %$needles;

$| = 1;
for my $d (@{$input->{decisions}}) {
    <STDIN>;
    my @list = map { $needles{$_} } @{$d->{needles}};
    my ($screen, $threshold, $ratio) = @{$d}{qw(screen threshold ratio)};
    # The first search of a needle cuts and blurs its areas, once per job.
    (tinycv::read($screen) // die "cannot read $screen\n")->search(\@list, $threshold, $ratio);

    my ($best, $failed);
    my $reps = $d->{reps} || 1;
    my $start = clock_gettime(CLOCK_MONOTONIC);
    for (1 .. $reps) {
        my $img = tinycv::read($screen);
        ($best, $failed) = $img->search(\@list, $threshold, $ratio);
    }
    my $elapsed = clock_gettime(CLOCK_MONOTONIC) - $start;

    print encode_json({id => $d->{id}, search_result($best, $failed), ns_per_decision => $elapsed * 1e9 / $reps}), "\n";
}
