# Runs os-autoinst's own needle search (Debian's os-autoinst package) and
# prints its result as JSON, for TestAgreesWithOsAutoinst.
# Usage: perl tinycv_search.pl NEEDLES_DIR SCREEN_PNG THRESHOLD RATIO NEEDLE...
use Mojo::Base -strict;
use lib '/usr/lib/os-autoinst';
use Mojo::JSON qw(encode_json);
use FindBin;
use bmwqemu;
use needle;
use cv;
require "$FindBin::Bin/tinycv_result.pl";

cv::init();
require tinycv;
tinycv::create_threads(1);

my ($dir, $screen, $threshold, $ratio, @names) = @ARGV;
needle::set_needles_dir($dir);
my @needles = map { needle->new("$dir/$_.json") // die "os-autoinst refuses needle $_\n" } @names;
# Needle images stay cached, and prepared, across the checks of an
# assert_screen; search once so the result is that of the later checks,
# each on a fresh screenshot.
(tinycv::read($screen) // die "cannot read $screen\n")->search(\@needles, $threshold, $ratio);
my $img = tinycv::read($screen);
my ($best, $failed) = $img->search(\@needles, $threshold, $ratio);
print encode_json({search_result($best, $failed)}), "\n";
