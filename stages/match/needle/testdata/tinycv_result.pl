# What tinycv_search.pl, tinycv_bench.pl and tinycv_decide.pl share: how
# they print one search (the best needle's name, "" for none, and every
# candidate, best first, with the position, similarity and verdict of each
# of its areas), and how the last two load their decisions.
use Mojo::Base -strict;
use Mojo::JSON;
use Mojo::File;

sub search_result {
    my ($best, $failed) = @_;
    my @all = ($best ? ($best) : (), @{$failed // []});
    my $bool = sub { $_[0] ? Mojo::JSON::true : Mojo::JSON::false };
    return (
        best => $best ? $best->{needle}{name} : '',
        all => [map {
            my $c = $_;
            {
                needle => $c->{needle}{name},
                ok => $bool->($c->{ok}),
                error => $c->{error},
                areas => [map { {x => $_->{x}, y => $_->{y}, similarity => $_->{similarity}, ok => $bool->($_->{result} eq 'ok')} } @{$c->{area}}],
            }
        } @all],
    );
}

# load_decisions starts tinycv as os-autoinst's backend does (nproc - 1
# OpenCV threads, at least 1), reads the decisions file of
# tinycv_bench.pl and tinycv_decide.pl, and loads each needle once, as
# os-autoinst's needle cache does for a job: the decisions and the needles
# by name.
sub load_decisions {
    my ($file) = @_;
    cv::init();
    require tinycv;
    tinycv::create_threads();
    my $input = Mojo::JSON::decode_json(Mojo::File::path($file)->slurp);
    my $dir = $input->{needles_dir};
    needle::set_needles_dir($dir);
    my %needles;
    for my $d (@{$input->{decisions}}) {
        for my $name (@{$d->{needles}}) {
            $needles{$name} //= needle->new("$dir/$name.json") // die "os-autoinst refuses needle $name\n";
        }
    }
    return ($input, \%needles);
}

1;
