# What tinycv_search.pl and tinycv_bench.pl print of one search: the best
# needle's name ("" for none) and every candidate, best first, with the
# position, similarity and verdict of each of its areas.
use Mojo::Base -strict;
use Mojo::JSON;

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

1;
