# MAP under concurrency and faults: several sessions at once, cancel and
# statement_timeout with hundreds of rows in flight, re-running after a
# cancel pays only for what never completed, a worker or backend dying
# mid-MAP, and the shared rate limit.
use strict;
use warnings;
use List::Util qw(max);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# the slow rows here send nothing for a minute on purpose: not a stall
my $node = new_rv_node('map', $mock, "rvbbit.max_concurrency = 1000\nrvbbit.stall_timeout = '10min'\n");
my $echo = inline_echo();

# a MAP over n rows whose prompts carry a mock directive
sub map_sql
{
	my ($n, $directive, $parallel, $opts) = @_;
	$opts //= '{}';
	return qq{SELECT count(result) FROM rvbbit.map('$echo',
	  \$\$SELECT n, '$directive row ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $parallel, '$opts') AS t(n int, text text, result jsonb)};
}

sub in_flight { mock_get($mock, '/stats')->{in_flight} }

# the same MAP, returning every row as "n=reply" joined in output order, and
# what that must be: each row's content and the input order are checked
sub rows_sql
{
	my ($n, $directive, $parallel, $opts) = @_;
	$opts //= '{}';
	return qq{SELECT string_agg(n || '=' || (result #>> '{}'), ',') FROM rvbbit.map('$echo',
	  \$\$SELECT n, '$directive row ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $parallel, '$opts') AS t(n int, text text, result jsonb)};
}

sub rows_expected
{
	my ($n, $tag) = @_;
	return join(',', map { "$_=re: $tag row $_" } 1 .. $n);
}

# several sessions at once share the workers
mock_post($mock, '/reset');
my @sessions;
for my $s (1 .. 3)
{
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/^$/, rows_sql(10, "[[hold]] s$s", 10, '{"cache": false}') . ";\n");
	push @sessions, $bg;
}
# the mock holds every reply, so all 30 are in flight together however slow
ok(mock_wait_held($mock, 30), 'three sessions have 30 requests in flight together');
is(mock_release($mock), 30, 'the 30 held requests are released');
for my $s (1 .. 3)
{
	my $bg = $sessions[$s - 1];
	is($bg->query_safe('SELECT 1'), rows_expected(10, "s$s") . "\n1",
		"session $s gets each of its rows, in input order");
	$bg->quit;
}
is(mock_get($mock, '/stats')->{max_in_flight}, 30, 'never more in flight than the sessions\' PARALLEL');

# Ctrl-C with 300 rows in flight
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(300, '[[hold]] cancel', 300) . ";\n");
ok(mock_wait_held($mock, 300), '300 requests in flight');
is($node->safe_psql('postgres', 'SELECT rows_read, in_flight, rows_done FROM rvbbit.progress'),
	'300|300|0', 'rvbbit.progress shows the statement');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'MAP cancelled');
ok(wait_until(sub { in_flight() == 0 }, 180), 'the worker stopped all 300 requests');
is(mock_get($mock, '/stats')->{aborted}, 300,
	'the provider answered none of them: all 300 were aborted, not awaited');
is(mock_get($mock, '/stats')->{max_in_flight}, 300, 'max in flight was exactly PARALLEL');
$bg->{stderr} = '';

# statement_timeout with 200 in flight
$bg->query_safe(q{SET statement_timeout = '3s'});
$bg->query(map_sql(200, '[[hold]] timeout', 200));
like($bg->{stderr}, qr/canceling statement due to statement timeout/, 'statement_timeout stops a MAP');
ok(wait_until(sub { in_flight() == 0 }, 180), 'the worker stopped the requests after statement_timeout');
$bg->{stderr} = '';
$bg->query_safe(q{RESET statement_timeout});

# re-running a cancelled MAP pays only for the rows that never completed
mock_post($mock, '/reset');
sub mixed_sql
{
	my ($timeout) = @_;
	return qq{SELECT count(result) FROM rvbbit.map('$echo',
  \$\$SELECT n, CASE WHEN n <= 10 THEN 'fast ' ELSE '[[hold]] slow ' END || n AS text
      FROM generate_series(1, 20) n\$\$, 20, '{"timeout": $timeout, "max_retries": 0}')
  AS t(n int, text text, result jsonb)};
}
$bg->query_until(qr/^$/, mixed_sql(120000) . ";\n");
ok(wait_until(sub { my $s = mock_get($mock, '/stats'); $s->{requests} == 20 && $s->{in_flight} == 10 }, 30),
	'fast rows done, slow rows in flight');
ok($node->poll_query_until('postgres',
	q{SELECT count(*) FROM rvbbit.call_log WHERE status = 'ok' AND called_at > now() - interval '1 minute'}, '10'),
	'the ten completed calls are committed');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement/, 'mixed MAP cancelled');
$bg->{stderr} = '';
ok(wait_until(sub { in_flight() == 0 }, 180), 'nothing in flight after the cancel');
mock_post($mock, '/reset');
my $rerun = $bg->query(mixed_sql(1000));
is($rerun, '10', 'the re-run returns the ten completed rows (the slow ones time out)');
is(mock_get($mock, '/stats')->{requests}, 10, 'the re-run sent only the ten rows that never completed');
$bg->{stderr} = '';
$bg->quit;

# a worker stopped mid-MAP: the statement fails clearly, the next one works
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, map_sql(50, '[[hold]] worker', 50) . ";\n");
ok(mock_wait_held($mock, 50), '50 in flight before the worker stops');
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
$bg->query('SELECT 1');
like($bg->{stderr}, qr/rvbbit worker exited while the statement was running/, 'MAP fails with a clear error');
$bg->{stderr} = '';
ok(wait_until(sub { in_flight() == 0 }, 180), 'no request left in flight');
is($bg->query_safe(map_sql(5, 'after worker', 5)), '5', 'the next MAP works');
$bg->quit;

# a backend terminated mid-MAP leaves no work in the worker
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(50, '[[hold]] backend', 50) . ";\n");
ok(mock_wait_held($mock, 50), '50 in flight before the backend is terminated');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(sub { in_flight() == 0 }, 180), 'the worker dropped the terminated backend\'s requests');
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM rvbbit.progress', '0'), 'no statement left in rvbbit.progress');
eval { $bg->quit };

# the shared rate limit: 120 requests per minute
$node->safe_psql('postgres', 'ALTER SYSTEM SET rvbbit.requests_per_minute = 120');
$node->reload;
mock_post($mock, '/reset');
# The bucket holds at most a burst of 2 and refills at 118/min.  So the k-th
# request cannot reach the provider before t0 + (k - 2) / (118/60) s, where
# t0 is a moment before the statement began.  A slow machine can only
# make requests later, so this bound holds however loaded the machine is.
my $t0 = time();
is($node->safe_psql('postgres', map_sql(40, 'limited', 40, '{"cache": false}')), '40', 'rate-limited MAP completes');
my $reqs = mock_get($mock, '/requests?last=40');
my @t = sort { $a <=> $b } map { $_->{wall} } @$reqs;
is(scalar(@t), 40, 'the mock saw 40 requests');
my $early = 0;
for my $k (1 .. @t)
{
	my $not_before = $t0 + ($k - 2) / (118 / 60.0) - 0.01;
	if ($t[$k - 1] < $not_before)
	{
		diag(sprintf('request %d came %.3f s too early', $k, $not_before - $t[$k - 1]));
		$early++;
	}
}
is($early, 0, 'no request reached the provider before the rate limit allowed it');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET rvbbit.requests_per_minute');
$node->reload;

$node->stop;
stop_mock($mock);
done_testing();
