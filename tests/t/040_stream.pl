# Streaming MAP (Custom Scan (RVBBIT Map)): rows reach cursors, psql with
# FETCH_COUNT and COPY TO before the last request is sent; a cursor closed
# early and a LIMIT stop the scheduling of new calls (the calls in flight
# still reach the cache); EXPLAIN ANALYZE counters match the mock exactly.
# No timing is asserted: "streamed" means "a row arrived while the mock
# had not yet seen all requests", and the later rows are held by the mock
# until the test has looked, so it never has.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('stream', $mock, "rvbbit.max_concurrency = 1000\n");
my $echo = inline_echo();

# rvbbit.map over rows 1..n whose prompts are "<directive> <tag> row <n>"
sub map_call
{
	my ($n, $directive, $tag, $parallel, $opts) = @_;
	$opts //= '{}';
	return qq{rvbbit.map('$echo',
	  \$\$SELECT n, '$directive $tag row ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $parallel, '$opts') AS t(n int, text text, result jsonb)};
}

# the same with rows 1..10 answered at once and the others held by the mock
# (under the hold NAME) until the test releases them: at PARALLEL P the
# mock sees exactly 10 + P requests until then, however slow the machine
sub held_map_call
{
	my ($n, $name, $parallel, $opts) = @_;
	$opts //= '{}';
	return qq{rvbbit.map('$echo',
	  \$\$SELECT n, CASE WHEN n <= 10 THEN '' ELSE '[[hold:$name]]' END || ' $name row ' || n AS text
	    FROM generate_series(1, $n) n\$\$,
	  $parallel, '$opts') AS t(n int, text text, result jsonb)};
}

sub stats { mock_get($mock, '/stats') }
sub requests { stats()->{requests} }
sub quiet { wait_until(sub { stats()->{in_flight} == 0 }) }

# the plan
like($node->safe_psql('postgres', 'EXPLAIN (COSTS OFF) SELECT * FROM ' . map_call(3, '', 'plan', 2)),
	qr/^Custom Scan \(RVBBIT Map\)$/, 'rvbbit.map in FROM is the streaming custom scan');
like($node->safe_psql('postgres', 'EXPLAIN (COSTS OFF) DECLARE c SCROLL CURSOR FOR SELECT * FROM ' . map_call(3, '', 'plan', 2)),
	qr/^Materialize\n\s+->  Custom Scan \(RVBBIT Map\)$/, 'a SCROLL cursor gets a Materialize node on top');

# a cursor: FETCH 1 returns before the last request was sent; closing it
# after 10 rows sends nothing more: the mock saw at most 10 + PARALLEL
# requests (the scan sends only while it is asked for rows, so how many of
# rows 11-15 went out depends on when row 10 arrived; none of them is
# answered before the release).  CLOSE waits for the calls in flight
# (their results go to the cache), so the replies are released once CLOSE
# was sent.
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_safe('BEGIN');
$bg->query_safe('DECLARE c NO SCROLL CURSOR FOR SELECT n, result FROM '
	  . held_map_call(200, 'cursor', 5));
is($bg->query_safe('FETCH 1 FROM c'), qq{1|"re: cursor row 1"}, 'FETCH 1 returns the first row');
my $at_first = requests();
cmp_ok($at_first, '<=', 10 + 5, "first row received before the last request was sent ($at_first of 200 sent)");
my $ten = $bg->query_safe('FETCH 9 FROM c');
is(scalar(split /\n/, $ten), 9, 'FETCH 9 returns the next nine rows');
like($ten, qr/^10\|"re: cursor row 10"$/m, 'in input order');
$bg->query_until(qr/^$/, "CLOSE c;\n");
mock_release($mock, 'cursor');
is($bg->query_safe('SELECT 3'), '3', 'CLOSE returned once the calls in flight were answered');
ok(quiet(), 'nothing in flight after CLOSE');
my $sent = requests();
# at most: the 10 rows, PARALLEL in flight, and the quarter of PARALLEL the
# backend sends ahead, which the worker may start before it learns of the close
cmp_ok($sent, '<=', 10 + 5 + 2, "closing the cursor after 10 rows stopped the calls ($sent sent, PARALLEL 5)");
$bg->query_safe('COMMIT');
$node->safe_psql('postgres', 'SELECT count(*) FROM ' . held_map_call($sent, 'cursor', 5));
is(requests(), $sent, 'the calls in flight at CLOSE were cached: running those rows again sends nothing');

# psql with FETCH_COUNT prints the first rows while later ones are pending
mock_post($mock, '/reset');
$bg->query_safe('\set FETCH_COUNT 5');
$bg->query_until(qr/"re: fetchcount row 5"/,
	'SELECT n, result FROM ' . held_map_call(60, 'fetchcount', 5, '{"cache": false}') . ";\n");
my $at_fc = requests();
cmp_ok($at_fc, '<=', 10 + 5, "psql FETCH_COUNT printed rows before the last request was sent ($at_fc of 60)");
mock_release($mock, 'fetchcount');
$bg->query_safe('\unset FETCH_COUNT');
is($bg->query_safe('SELECT 1'), '1', 'the statement finished');
ok(quiet(), 'quiet');

# a libpq client in single-row mode (how psql 17+ implements FETCH_COUNT,
# and what drivers use to stream) gets the first rows while later ones are
# pending: the backend pushes out buffered rows before it waits for the
# next one, instead of keeping them until its 8 kB send buffer fills
my $srdir = PostgreSQL::Test::Utils::tempdir();
my $srbin = "$srdir/single_row";
my ($ccout, $ccerr) = ('', '');
my $pqflags = `pkg-config --cflags --libs libpq`;
chomp $pqflags;
IPC::Run::run([ 'cc', '-o', $srbin, "$ENV{RV_ROOT}/tests/clients/single_row.c", split(' ', $pqflags) ],
	'>', \$ccout, '2>', \$ccerr);
ok(-x $srbin, 'the single-row libpq client builds') or diag($ccerr);
mock_post($mock, '/reset');
my ($srout, $srerr) = ('', '');
my $sr = IPC::Run::start([ $srbin, $node->connstr('postgres'),
		'SELECT n, result FROM ' . held_map_call(60, 'singlerow', 5, '{"cache": false}') ],
	'>', \$srout, '2>', \$srerr);
ok(wait_until(sub { $sr->pump_nb; $srout =~ /re: singlerow row 5"/ }),
	'single-row mode received row 5 while later calls were held') or diag("out: $srout\nerr: $srerr");
my $at_sr = requests();
cmp_ok($at_sr, '<=', 10 + 5, "and before the last request was sent ($at_sr of 60)");
mock_release($mock, 'singlerow');
ok(wait_until(sub { $sr->pump_nb; $srout =~ /^done$/m }), 'the single-row statement finished');
$sr->finish;
my @srrows = grep { /^\d+\t/ } split /\n/, $srout;
is(scalar(@srrows), 60, 'single-row mode got all 60 rows');
is(join(',', map { (split /\t/)[0] } @srrows), join(',', 1 .. 60), 'in input order');
ok(quiet(), 'quiet');

# COPY (...) TO STDOUT streams too (rows of 4 kB, so that the server's
# and psql's output buffers pass them on before the end)
mock_post($mock, '/reset');
$bg->query_until(qr/re: copy row 5/,
	'COPY (SELECT n, repeat($$x$$, 4000), result FROM ' . held_map_call(60, 'copy', 5, '{"cache": false}') . ") TO STDOUT;\n");
my $at_copy = requests();
cmp_ok($at_copy, '<=', 10 + 5, "COPY TO sent rows before the last request was sent ($at_copy of 60)");
mock_release($mock, 'copy');
like($bg->query_safe('SELECT 2'), qr/re: copy row 60"\n2$/, 'the COPY finished with the last row');
$bg->quit;
ok(quiet(), 'quiet');

# LIMIT 5 over 1000 rows sends at most 5 + PARALLEL + PARALLEL/4 (rounded up)
# requests
mock_post($mock, '/reset');
is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT * FROM '
		  . map_call(1000, '[[latency:100]]', 'limit', 3, '{"cache": false}') . ' LIMIT 5) s'),
	'5', 'LIMIT 5 returns 5 rows');
ok(quiet(), 'quiet');
$sent = requests();
cmp_ok($sent, '<=', 5 + 3 + 1, "LIMIT 5 over 1000 rows stopped the calls ($sent sent, PARALLEL 3 and 1 row ahead)");

# CREATE TABLE AS through the custom scan
$node->safe_psql('postgres', 'CREATE TABLE streamed AS SELECT n, result FROM '
	  . map_call(20, '', 'ctas', 4));
is($node->safe_psql('postgres', "SELECT count(*), min(n), max(n), bool_and(result = to_jsonb('re: ctas row ' || n)) FROM streamed"),
	'20|1|20|t', 'CREATE TABLE AS gets every row');

# EXPLAIN ANALYZE counters, exact against the mock: 3 rows cached, 2 rows
# retried once after a 500, 1 row failed with a 400, 4 plain rows
$node->safe_psql('postgres', q{INSERT INTO rvbbit.model_prices VALUES ('mock/tap', 1000000, 2000000)});
$node->safe_psql('postgres', 'SELECT count(*) FROM ' . map_call(3, '', 'counted', 2));
mock_post($mock, '/reset');
my $rows = q{SELECT n, CASE WHEN n IN (4, 5) THEN '[[fail:1:500]]' WHEN n = 6 THEN '[[fault:400]]' ELSE '' END
	  || ' counted row ' || n AS text FROM generate_series(1, 10) n};
my $plan = $node->safe_psql('postgres', qq{SET client_min_messages = error;
EXPLAIN (ANALYZE, COSTS OFF, SUMMARY OFF)
SELECT * FROM rvbbit.map('$echo', \$\$$rows\$\$, 3, '{"max_retries": 2}') AS t(n int, text text, result jsonb)});
ok(quiet(), 'quiet');
my $st = stats();
note $plan;
my %c = $plan =~ /^\s+([A-Z][A-Za-z0-9 ]+): (\S+)/mg;
like($plan, qr/Custom Scan \(RVBBIT Map\) \(actual time=\S+ rows=10(?:\.00)? loops=1\)/, 'ten rows');
is($c{'LLM Calls'}, $st->{by_status}{200}, 'LLM Calls: the 200 replies of the mock (' . $st->{by_status}{200} . ')');
is($c{'LLM Calls'}, 6, 'LLM Calls: 6 (10 rows - 3 cached - 1 failed)');
is($c{'Cache Hits'}, 3, 'Cache Hits: 3');
is($c{'Retries'}, $st->{by_status}{500}, 'Retries: the 500 replies of the mock');
is($c{'Retries'}, 2, 'Retries: 2');
is($c{'Failed Rows'}, 1, 'Failed Rows: 1');
is($c{'Input Tokens'}, $st->{tokens}{prompt}, "Input Tokens: the mock's prompt tokens");
is($c{'Output Tokens'}, $st->{tokens}{completion}, "Output Tokens: the mock's completion tokens");
is(sprintf('%.6f', $c{'LLM Cost'}), sprintf('%.6f', $st->{tokens}{prompt} * 1 + $st->{tokens}{completion} * 2),
	'LLM Cost: tokens at the price of mock/tap');
like($plan, qr/Call Latency p50: [0-9.]+ ms\n\s+Call Latency p99: [0-9.]+ ms/, 'call latency percentiles');
unlike($node->safe_psql('postgres', 'EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) SELECT * FROM ' . map_call(2, '', 'counted', 2)),
	qr/Latency/, 'no latencies with TIMING OFF');

done_testing();
