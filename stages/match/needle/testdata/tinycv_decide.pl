# Makes a list of decisions with os-autoinst's own needle search (Debian's
# os-autoinst package), for TestRealNeedlesAgreeWithOsAutoinst.
# Usage: perl tinycv_decide.pl DECISIONS_JSON
#
# DECISIONS_JSON is what tinycv_bench.pl reads (reps is ignored):
#   {"needles_dir": DIR, "decisions": [{"id": ID, "screen": PNG,
#   "needles": [NAME...], "threshold": T, "ratio": R}...]}
# Prints one JSON line per decision: its id, the best needle ("" for none)
# and every candidate best first with its areas.
use Mojo::Base -strict;
use lib '/usr/lib/os-autoinst';
use Mojo::JSON qw(encode_json);
use FindBin;
use bmwqemu;
use needle;
use cv;
require "$FindBin::Bin/tinycv_result.pl";

my ($input, $needles) = load_decisions($ARGV[0]);
my %needles = %$needles;

$| = 1;
my %searched;
for my $d (@{$input->{decisions}}) {
    my @list = map { $needles{$_} } @{$d->{needles}};
    my ($screen, $threshold, $ratio) = @{$d}{qw(screen threshold ratio)};
    # A needle's first search cuts and blurs its areas, once per job, and
    # what it blurs then stays as it is: search once, as tinycv_search.pl
    # does, the first time a needle comes up (not for every decision, as
    # tinycv_bench.pl does, which doubles the time and changes nothing).
    if (grep { !$searched{$_}++ } @{$d->{needles}}) {
        (tinycv::read($screen) // die "cannot read $screen\n")->search(\@list, $threshold, $ratio);
    }
    my $img = tinycv::read($screen) // die "cannot read $screen\n";
    my ($best, $failed) = $img->search(\@list, $threshold, $ratio);
    print encode_json({id => $d->{id}, search_result($best, $failed)}), "\n";
}
