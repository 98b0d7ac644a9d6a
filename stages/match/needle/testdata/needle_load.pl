# Loads needles with os-autoinst (Debian's os-autoinst package) and
# searches for each as a job would, for TestNeedleCorpus: does os-autoinst
# accept the needle, and if so, what does it decide on each screen?
# Usage: perl needle_load.pl NEEDLES_DIR JOBS < VARIANTS_JSON
# VARIANTS_JSON is a list of {"name", "companion", "searches": [{"screen",
# "ratio"}]}: NAME.json in NEEDLES_DIR is searched beside the plain needle
# COMPANION.json, so that ranking compares them (and, on a tie, asks for
# their workaround property). Prints one JSON object, by name: {"loaded":
# false, "reason"} when os-autoinst refuses the needle, dies using it or
# crashes (each needle is tried in a process of its own, JOBS at once),
# else {"loaded": true, "searches": [...]}, one search_result per search.
use Mojo::Base -strict;
use lib '/usr/lib/os-autoinst';
use Mojo::File qw(tempdir);
use Mojo::JSON qw(decode_json encode_json);
use FindBin;
use POSIX ();
use bmwqemu;
use needle;
use cv;
use ocr;    # what a job's basetest loads: a matched needle's ocr areas are read
require "$FindBin::Bin/tinycv_result.pl";

cv::init();
require tinycv;
tinycv::create_threads(1);

my ($dir, $jobs) = @ARGV;
$jobs ||= 1;
needle::set_needles_dir($dir);
my $variants = decode_json(do { local $/; <STDIN> });
my $scratch = tempdir;

# Each needle is tried in a process of its own, as many at once as asked.
my (%results, %running);
my @todo = @$variants;
while (@todo || %running) {
    if (@todo && keys %running < $jobs) {
        my $v = shift @todo;
        my $work = $scratch->child($v->{name})->make_path;
        my $pid = fork // die "fork: $!\n";
        if (!$pid) {
            chdir $work or die;    # where OCR writes its files
            open STDOUT, '>', $work->child('out') or die;
            open STDERR, '>', $work->child('err') or die;
            print encode_json(try_needle($v));
            close STDOUT;
            POSIX::_exit(0);    # no destructors: the parent's temporary files stay
        }
        $running{$pid} = $v->{name};
        next;
    }
    my $pid = waitpid -1, 0;
    my $status = $?;
    my $name = delete $running{$pid} // next;
    my $work = $scratch->child($name);
    if ($status == 0) {
        $results{$name} = decode_json($work->child('out')->slurp);
        next;
    }
    # OpenCV's exceptions are uncaught: "terminate called after throwing
    # an instance of 'cv::Exception'", then abort.
    my $stderr = $work->child('err')->slurp;
    my ($what) = $stderr =~ /(what\(\):.*)/;
    $results{$name} = {
        loaded => Mojo::JSON::false,
        reason => ($status & 127 ? 'os-autoinst crashed, signal ' . ($status & 127) : 'os-autoinst exited with status ' . ($status >> 8))
          . ': ' . ($what // $stderr),
    };
}
print encode_json(\%results), "\n";

sub try_needle {
    my ($v) = @_;
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $refused = sub {
        chomp(my $reason = join '', @_, @warnings);
        return {loaded => Mojo::JSON::false, reason => $reason};
    };
    my $needle = eval { needle->new("$dir/$v->{name}.json") };
    return $refused->("needle->new died: $@") if $@;
    return $refused->('needle->new returned no needle. ') unless $needle;
    # testapi asks a matched needle for its workaround property, and
    # ranking asks on a tie: both die where properties are not a list.
    eval { $needle->has_property('workaround'); 1 } or return $refused->("has_property died: $@");
    my $plain = needle->new("$dir/$v->{companion}.json") // die "os-autoinst refuses the companion $v->{companion}\n";
    my @searches;
    for my $s (@{$v->{searches}}) {
        # As tinycv_search.pl: the first search prepares the cached needle
        # images, the second is what an assert_screen's later checks see.
        my @found = eval {
            (tinycv::read($s->{screen}) // die "cannot read $s->{screen}\n")->search([$needle, $plain], 0, $s->{ratio});
            tinycv::read($s->{screen})->search([$needle, $plain], 0, $s->{ratio});
        };
        return $refused->("search on $s->{screen} died: $@") if $@;
        push @searches, {search_result(@found)};
    }
    return {loaded => Mojo::JSON::true, searches => \@searches};
}
