# MAP under concurrency and faults: several sessions at once, cancel and
# statement_timeout with hundreds of rows in flight, re-running after a
# cancel pays only for what never completed, a worker or backend dying
# mid-MAP, and the shared rate limit.
#
# Nothing here depends on timing: requests that must stay in flight are
# held by the mock ([[hold:NAME]]) until the test releases them or the
# client goes away, waits poll with generous deadlines, and the rate limit
# is checked against the mock's clock and its records of when each request
# started.
use strict;
use warnings;
use POSIX qw(floor);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# held requests must not hit the per-request timeout however slow the run
my $node = new_rv_node('map', $mock,
	"rvbbit.max_concurrency = 1000\nrvbbit.request_timeout = '1h'\n");
my $echo = inline_echo();

# A MAP over n rows whose prompts are "$directive row N"; it returns every
# row as "N=reply" in output order, joined by "|" (NULL results as "null").
sub map_sql
{
	my ($n, $directive, $parallel, $opts) = @_;
	$opts //= '{}';
	return qq{SELECT string_agg(n || '=' || coalesce(result #>> '{}', 'null'), '|')
	  FROM rvbbit.map('$echo',
	  \$\$SELECT n, '$directive row ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $parallel, '$opts') AS t(n int, text text, result jsonb)};
}

# What map_sql returns when every row is answered: the mock replies
# "re: " and the prompt without its directives, rows in input order.
sub map_expected
{
	my ($n, $directive) = @_;
	(my $words = $directive) =~ s/\[\[[^\]]*\]\]\s*//g;
	return join('|', map { "$_=re: $words row $_" } 1 .. $n);
}

sub stats { mock_get($mock, '/stats') }
sub in_flight { stats()->{in_flight} }
sub held { stats()->{held} }

# several sessions at once share the workers: their 30 requests are held
# until all 30 are in flight together, then released
mock_post($mock, '/reset');
my @sessions;
for my $s (1 .. 3)
{
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/^$/, map_sql(10, "[[hold:sessions]] s$s", 10, '{"cache": false}') . ";\n");
	push @sessions, $bg;
}
ok(wait_until(sub { held() == 30 }), 'three sessions have 30 requests in flight together');
mock_release($mock, 'sessions');
for my $s (1 .. 3)
{
	my $bg = $sessions[ $s - 1 ];
	is($bg->query_safe('SELECT 1'), map_expected(10, "s$s") . "\n1",
		"session $s gets its own 10 rows, each with its reply, in order");
	$bg->quit;
}
is(stats()->{max_in_flight}, 30, 'never more in flight than the sessions\' PARALLEL');
is(stats()->{requests}, 30, 'one request per row');

# Ctrl-C with 300 rows in flight.  The replies are never released, so the
# cancel returning at all shows it did not wait for the provider.
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(300, '[[hold:cancel]] cancel', 300) . ";\n");
ok(wait_until(sub { held() == 300 }), '300 requests in flight');
is($node->safe_psql('postgres', 'SELECT rows_read, in_flight, rows_done FROM rvbbit.progress'),
	'300|300|0', 'rvbbit.progress shows the statement');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'MAP cancelled');
ok(wait_until(sub { in_flight() == 0 }), 'the worker stopped all 300 requests');
is_deeply([ stats()->{by_status}, stats()->{aborted} ], [ {}, 300 ],
	'the provider answered none of them: the cancel did not wait for it');
is(stats()->{max_in_flight}, 300, 'max in flight was exactly PARALLEL');
$bg->{stderr} = '';

# statement_timeout with 200 held requests in flight
mock_post($mock, '/reset');
$bg->query_safe(q{SET statement_timeout = '3s'});
$bg->query(map_sql(200, '[[hold:timeout]] timeout', 200));
like($bg->{stderr}, qr/canceling statement due to statement timeout/, 'statement_timeout stops a MAP');
ok(wait_until(sub { in_flight() == 0 }), 'the worker stopped the requests after statement_timeout');
is_deeply(stats()->{by_status}, {}, 'none of them was answered');
$bg->{stderr} = '';
$bg->query_safe(q{RESET statement_timeout});

# re-running a cancelled MAP pays only for the rows that never completed:
# rows 1-10 are answered, rows 11-20 held
mock_post($mock, '/reset');
sub mixed_sql
{
	my ($timeout) = @_;
	return qq{SELECT string_agg(n || '=' || coalesce(result #>> '{}', 'null'), '|')
	  FROM rvbbit.map('$echo',
  \$\$SELECT n, CASE WHEN n <= 10 THEN 'fast ' ELSE '[[hold:slow]] slow ' END || n AS text
      FROM generate_series(1, 20) n\$\$, 20, '{"timeout": $timeout, "max_retries": 0}')
  AS t(n int, text text, result jsonb)};
}
my $last_call = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM rvbbit.call_log');
$bg->query_until(qr/^$/, mixed_sql(3600000) . ";\n");
ok(wait_until(sub { my $s = stats(); $s->{requests} == 20 && $s->{held} == 10 && $s->{in_flight} == 10 }),
	'fast rows done, slow rows in flight');
ok($node->poll_query_until('postgres',
	qq{SELECT count(*) FROM rvbbit.call_log WHERE status = 'ok' AND id > $last_call}, '10'),
	'the ten completed calls are committed');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement/, 'mixed MAP cancelled');
$bg->{stderr} = '';
ok(wait_until(sub { in_flight() == 0 }), 'nothing in flight after the cancel');
mock_post($mock, '/reset');
# the slow rows are held again and time out after 1 s each
my $rerun = $bg->query(mixed_sql(1000));
is($rerun, join('|', (map { "$_=re: fast $_" } 1 .. 10), (map { "$_=null" } 11 .. 20)),
	'the re-run returns the ten completed rows in order (the slow ones time out)');
is(stats()->{requests}, 10, 'the re-run sent only the ten rows that never completed');
is_deeply([ sort map { $_->{prompt} } @{ mock_requests($mock) } ],
	[ sort map { "[[hold:slow]] slow $_" } 11 .. 20 ], 'and those are the slow rows');
$bg->{stderr} = '';
$bg->quit;

# a worker stopped mid-MAP: the statement fails clearly, the next one works
mock_post($mock, '/reset');
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, map_sql(50, '[[hold:worker]] worker', 50) . ";\n");
ok(wait_until(sub { held() == 50 }), '50 in flight before the worker stops');
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
$bg->query('SELECT 1');
like($bg->{stderr}, qr/rvbbit worker exited while the statement was running/, 'MAP fails with a clear error');
$bg->{stderr} = '';
ok(wait_until(sub { in_flight() == 0 }), 'no request left in flight');
is($bg->query_safe(map_sql(5, 'after worker', 5)), map_expected(5, 'after worker'),
	'the next MAP returns every row in order');
$bg->quit;

# a backend terminated mid-MAP leaves no work in the worker
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, map_sql(50, '[[hold:backend]] backend', 50) . ";\n");
ok(wait_until(sub { held() == 50 }), '50 in flight before the backend is terminated');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(sub { in_flight() == 0 }), 'the worker dropped the terminated backend\'s requests');
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM rvbbit.progress', '0'), 'no statement left in rvbbit.progress');
eval { $bg->quit };

# The shared rate limit: 120 requests per minute is a bucket of burst 2
# (one second's allowance) refilled at 118 per minute, so in any T seconds
# at most burst + T * refill requests are granted.  Checked on the mock's
# clock: $t0 is the mock's time before the statement starts (so before the
# first grant), and a request reaches the mock only after it was granted.
# Hence whenever the mock is asked, it has seen at most
# burst + (now - $t0) * refill requests, and the last of the 40 arrives no
# sooner than $t0 + (40 - burst) / refill.  A slow machine or a slow mock
# only lowers the counts and delays the arrivals: it cannot break either.
my ($rpm, $nreq) = (120, 40);
my $burst = floor($rpm / 60);
my $refill = ($rpm - $burst) / 60;
ok(set_server_conf($node, 'rvbbit.requests_per_minute', $rpm), "rvbbit.requests_per_minute = $rpm is in effect");
mock_post($mock, '/reset');
my $t0 = stats()->{now};
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, map_sql($nreq, 'limited', $nreq, '{"cache": false}') . ";\n");
my ($samples, $over) = (0, '');
my $deadline = time() + $wait_secs;
while (time() < $deadline)
{
	my $s = stats();
	my $allowed = floor($burst + ($s->{now} - $t0) * $refill + 1e-6);
	$samples++;
	$over ||= sprintf('%d requests %.2f s after the start (at most %d allowed)', $s->{requests}, $s->{now} - $t0, $allowed)
	  if $s->{requests} > $allowed;
	last if $s->{requests} >= $nreq;
	usleep(200_000);
}
is($over, '', "the mock never saw more requests than the limit allows ($samples samples)");
is($bg->query_safe('SELECT 1'), map_expected($nreq, 'limited') . "\n1", 'rate-limited MAP returns every row in order');
$bg->quit;
my @t = sort { $a <=> $b } map { $_->{t} } @{ mock_requests($mock) };
is(scalar @t, $nreq, 'one request per row');
my $min_span = ($nreq - $burst) / $refill;
diag(sprintf('%d requests, the last %.1f s after the start (at least %.1f)', $nreq, $t[-1] - $t0, $min_span));
ok($t[-1] - $t0 >= $min_span - 1e-6, 'the requests were spread as the limit demands');
ok(set_server_conf($node, 'rvbbit.requests_per_minute', undef), 'rvbbit.requests_per_minute reset');

$node->stop;
stop_mock($mock);
done_testing();
