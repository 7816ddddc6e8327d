# Fair sharing of a worker between statements: when the worker's
# connections are the limit, a statement that arrives behind another's
# backlog alternates with it (start-time fair queuing in wk_ready) instead
# of waiting until the first statement's rows are all sent.
#
# Deterministic, from the order of the mock's request log: one worker with
# two connections; statement A's first two requests are held in the mock
# while A's other rows and all of B's wait in the worker; then the mock
# answers everything, and the order in which the remaining requests reach
# the mock is the order the worker sent them in.  Nothing depends on time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('fair', $mock, qq{rvbbit.workers_per_database = 1
rvbbit.max_connections_per_worker = 2
rvbbit.max_concurrency = 1000
});
my $echo = inline_echo();
my $n = 20;

sub map_sql
{
	my ($tag) = @_;
	return qq{SELECT count(*), count(*) FILTER (WHERE result IS NULL) FROM rvbbit.map('$echo',
	  \$\$SELECT n, '[[hold:fair]] $tag row ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $n, '{"cache": false}') AS t(n int, text text, result jsonb)};
}

# rows_read of the running MAP whose prompts carry $tag
sub rows_read
{
	my ($tag) = @_;
	return $node->safe_psql('postgres', qq{SELECT coalesce(sum(p.rows_read), 0) FROM rvbbit.progress p
	  JOIN pg_stat_activity a USING (pid) WHERE a.query LIKE '%$tag row%' AND a.query NOT LIKE '%rvbbit.progress%'});
}

sub run_pair
{
	my ($label) = @_;
	mock_post($mock, '/reset');
	my $a = $node->background_psql('postgres', on_error_stop => 0);
	my $b = $node->background_psql('postgres', on_error_stop => 0);
	$a->query_until(qr/started/, "\\echo started\n" . map_sql('afair') . ";\n");
	ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 2 }),
		"$label: A's first two requests fill the worker's two connections and are held");
	# A read all its rows (every one but the last is then in the queue to
	# the worker, which reads them all before it sends the next request)
	ok(wait_until(sub { rows_read('afair') == $n }), "$label: A sent its $n rows");
	$b->query_until(qr/started/, "\\echo started\n" . map_sql('bfair') . ";\n");
	ok(wait_until(sub { rows_read('bfair') == $n }), "$label: B sent its $n rows");
	is(mock_get($mock, '/stats')->{requests}, 2, "$label: nothing more was sent meanwhile");
	mock_release($mock);
	is($a->query_safe('SELECT 1'), "$n|0\n1", "$label: A got all its rows");
	is($b->query_safe('SELECT 1'), "$n|0\n1", "$label: B got all its rows");
	$a->quit;
	$b->quit;
	return [map { $_->{prompt} =~ /(afair|bfair) row/ ? substr($1, 0, 1) : '?' }
		  @{ mock_requests($mock) }];
}

my $order = run_pair('first run');
note 'order at the mock: ' . join('', @$order);
is(scalar(@$order), 2 * $n, 'the mock saw every row once');
is(join('', @$order[0 .. 1]), 'aa', 'the two held requests were A\'s');

# after the two held ones, every prefix of the sequence has as many of A's
# as of B's, within 2 (two requests go out at once when both connections
# free up, and may reach the mock in either order), until A has none left
my ($na, $nb, $worst) = (0, 0, 0);
for my $i (2 .. $#$order)
{
	$order->[$i] eq 'a' ? $na++ : $nb++;
	last if $na == $n - 2;
	my $d = abs($na - $nb);
	$worst = $d if $d > $worst;
}
cmp_ok($worst, '<=', 2, "A and B alternate once both wait (largest lead $worst)");
my $b_before_last_a = grep { $_ eq 'b' } @$order[0 .. (grep { $order->[$_] eq 'a' } 0 .. $#$order)[-1]];
cmp_ok($b_before_last_a, '>=', $n - 4,
	"B did not wait for A's backlog: $b_before_last_a of B's $n requests went before A's last");

done_testing();
