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

# several sessions at once share the workers
mock_post($mock, '/reset');
my @sessions;
for my $s (1 .. 3)
{
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/^$/, map_sql(10, "[[latency:4000]] s$s", 10, '{"cache": false}') . ";\n");
	push @sessions, $bg;
}
ok(wait_until(sub { in_flight() == 30 }, 30), 'three sessions have 30 requests in flight together');
for my $bg (@sessions)
{
	is($bg->query_safe('SELECT 1'), "10\n1", 'each session gets all its rows');
	$bg->quit;
}
is(mock_get($mock, '/stats')->{max_in_flight}, 30, 'never more in flight than the sessions\' PARALLEL');

# Ctrl-C with 300 rows in flight
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(300, '[[latency:60000]] cancel', 300) . ";\n");
ok(wait_until(sub { in_flight() == 300 }, 60), '300 requests in flight');
is($node->safe_psql('postgres', 'SELECT rows_read, in_flight, rows_done FROM rvbbit.progress'),
	'300|300|0', 'rvbbit.progress shows the statement');
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
my $elapsed = time() - $t0;
like($bg->{stderr}, qr/canceling statement due to user request/, 'MAP cancelled');
diag(sprintf('cancel of a MAP with 300 in flight returned after %.3f s', $elapsed));
ok($elapsed < 30, 'cancel did not wait for the provider');
ok(wait_until(sub { in_flight() == 0 }, 30), 'the worker stopped all 300 requests');
is(mock_get($mock, '/stats')->{max_in_flight}, 300, 'max in flight was exactly PARALLEL');
$bg->{stderr} = '';

# statement_timeout with 200 in flight
$bg->query_safe(q{SET statement_timeout = '3s'});
$bg->query(map_sql(200, '[[latency:60000]] timeout', 200));
like($bg->{stderr}, qr/canceling statement due to statement timeout/, 'statement_timeout stops a MAP');
ok(wait_until(sub { in_flight() == 0 }, 30), 'the worker stopped the requests after statement_timeout');
$bg->{stderr} = '';
$bg->query_safe(q{RESET statement_timeout});

# re-running a cancelled MAP pays only for the rows that never completed
mock_post($mock, '/reset');
sub mixed_sql
{
	my ($timeout) = @_;
	return qq{SELECT count(result) FROM rvbbit.map('$echo',
  \$\$SELECT n, CASE WHEN n <= 10 THEN 'fast ' ELSE '[[latency:60000]] slow ' END || n AS text
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
ok(wait_until(sub { in_flight() == 0 }, 30), 'nothing in flight after the cancel');
mock_post($mock, '/reset');
my $rerun = $bg->query(mixed_sql(1000));
is($rerun, '10', 'the re-run returns the ten completed rows (the slow ones time out)');
is(mock_get($mock, '/stats')->{requests}, 10, 'the re-run sent only the ten rows that never completed');
$bg->{stderr} = '';
$bg->quit;

# a worker stopped mid-MAP: the statement fails clearly, the next one works
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, map_sql(50, '[[latency:60000]] worker', 50) . ";\n");
ok(wait_until(sub { in_flight() == 50 }, 30), '50 in flight before the worker stops');
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
$bg->query('SELECT 1');
like($bg->{stderr}, qr/rvbbit worker exited while the statement was running/, 'MAP fails with a clear error');
$bg->{stderr} = '';
ok(wait_until(sub { in_flight() == 0 }, 30), 'no request left in flight');
is($bg->query_safe(map_sql(5, 'after worker', 5)), '5', 'the next MAP works');
$bg->quit;

# a backend terminated mid-MAP leaves no work in the worker
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(50, '[[latency:60000]] backend', 50) . ";\n");
ok(wait_until(sub { in_flight() == 50 }, 30), '50 in flight before the backend is terminated');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(sub { in_flight() == 0 }, 30), 'the worker dropped the terminated backend\'s requests');
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM rvbbit.progress', '0'), 'no statement left in rvbbit.progress');
eval { $bg->quit };

# the shared rate limit: 120 requests per minute
$node->safe_psql('postgres', 'ALTER SYSTEM SET rvbbit.requests_per_minute = 120');
$node->reload;
mock_post($mock, '/reset');
is($node->safe_psql('postgres', map_sql(40, 'limited', 40, '{"cache": false}')), '40', 'rate-limited MAP completes');
my $reqs = mock_get($mock, '/requests?last=40');
my @t = sort { $a <=> $b } map { $_->{t} } @$reqs;
my $most = 0;
for my $i (0 .. $#t)
{
	my $n = grep { $_ >= $t[$i] && $_ < $t[$i] + 10 } @t;
	$most = $n if $n > $most;
}
diag("at most $most requests in any 10 s window (limit 120/min: burst 2 + 118/min)");
ok($most <= 22, 'no 10-second window had more than the limit allows');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET rvbbit.requests_per_minute');
$node->reload;

$node->stop;
stop_mock($mock);
done_testing();
