# The seed's MAP PARALLEL examples against a real llama.cpp llama-server
# (make test-real-server starts it and sets RVBBIT_REAL_SERVER_URL and
# RVBBIT_REAL_SERVER_PID; the server runs as the user running this test, so
# that the test can freeze it with SIGSTOP and wake it with SIGCONT).
#
# It checks mechanics, not answer quality: rows in input order, replies that
# satisfy the cascade's schema (the server's grammar-constrained
# response_format), the call log (answering model, response id, finish
# reason, tokens), a re-run served from the cache, a reply cut off at
# max_tokens reported and never cached, and a server that stops answering in
# the middle of a MAP failing the statement with the stall / circuit-breaker
# error long before rvbbit.request_timeout.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $url = $ENV{RVBBIT_REAL_SERVER_URL}
  or BAIL_OUT('RVBBIT_REAL_SERVER_URL is not set: run make test-real-server');
my $server_pid = $ENV{RVBBIT_REAL_SERVER_PID}
  or BAIL_OUT('RVBBIT_REAL_SERVER_PID is not set: run make test-real-server');
BAIL_OUT("cannot signal llama-server (pid $server_pid)") unless kill 0, $server_pid;

# request_timeout is long on purpose: the stall test shows that a server
# that stops answering costs seconds (stall_timeout, the breaker), not this
my $node = PostgreSQL::Test::Cluster->new('real');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = '$url/v1'
rvbbit.default_model = 'local-model'
rvbbit.request_timeout = '600s'
rvbbit.stall_timeout = '600s'
max_worker_processes = 32
});
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION rvbbit;
CREATE TABLE products (id int, product_name text);
INSERT INTO products VALUES (1, 'Apple iPhone 15 Pro'), (2, 'Samsung Galaxy S24 Ultra'),
  (3, 'Sony WH-1000XM5 headphones'), (4, 'Nike Air Max 90'), (5, 'Dyson V15 Detect'),
  (6, 'LEGO Star Wars Millennium Falcon'), (7, 'Bosch PSB 1800 drill'), (8, 'Levi''s 501 jeans');
CREATE TABLE reviews (id int, review_text text);
INSERT INTO reviews VALUES (1, 'I love it, works great'), (2, 'It broke after a week'),
  (3, 'Arrived on time, does what it says'), (4, 'Great sound, terrible battery')});

sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub calls { return q1("SELECT count(*) FROM rvbbit.call_log WHERE $_[0]"); }

# {"brand": "<at least one character>"} and nothing else: the cascade's schema
sub brand_ok
{
	my ($json) = @_;
	my $v = eval { decode_json($json) };
	return ref $v eq 'HASH' && join(',', keys %$v) eq 'brand'
	  && !ref $v->{brand} && defined $v->{brand} && length $v->{brand} >= 1;
}

# the seed's example, pasted as it is (comment, trailing semicolon)
my @rows = split /\n/, q1(q{SELECT * FROM rvbbit.sql($$
-- Parallel (5 concurrent - faster!)
RVBBIT MAP PARALLEL 5 'traits/extract_brand.yaml' AS brand
USING (
  SELECT * FROM (VALUES
    ('Apple iPhone 15'),
    ('Samsung Galaxy S24')
  ) AS t(product_name)
);
$$)});
is(join(',', map { (split /\|/)[0] } @rows), 'Apple iPhone 15,Samsung Galaxy S24',
	"the seed's example: both rows, in order");
is(scalar(grep { brand_ok((split /\|/, $_, 2)[1]) } @rows), 2,
	"the seed's example: each brand satisfies the cascade's output_schema");
note("seed example: $_") for @rows;

# the same statement over a table, twice: the second run is the cache's
q1('TRUNCATE rvbbit.call_log');
my $map = q{SELECT * FROM rvbbit.sql($$
  RVBBIT MAP PARALLEL 5 'traits/extract_brand.yaml' AS brand
  USING (SELECT * FROM products ORDER BY id) $$)};
my @first;
for my $run (1, 2)
{
	@rows = split /\n/, q1($map);
	is(join(',', map { (split /\|/)[0] } @rows), '1,2,3,4,5,6,7,8',
		"run $run: MAP PARALLEL 5 returns every row in input order");
	is(scalar(grep { brand_ok((split /\|/, $_, 3)[2]) } @rows), 8,
		"run $run: every brand satisfies the output_schema (response_format honoured)");
	if ($run == 1) { @first = @rows; }
	else { is_deeply(\@rows, \@first, 'run 2: the same results as run 1'); }
}
is(calls(q{status = 'ok'}), '8', 'eight calls were sent, all in run 1');
is(calls(q{status = 'cached'}), '8', 'run 2 was served from the cache: eight cache hits');
is(calls(q{status = 'ok' AND response_model IS NOT NULL AND response_id IS NOT NULL
	AND finish_reason = 'stop' AND input_tokens > 0 AND output_tokens > 0}),
	'8', 'the call log has the answering model, the response id, the finish reason and tokens');
is(q1(q{SELECT count(DISTINCT response_id) FROM rvbbit.call_log WHERE status = 'ok'}), '8',
	'one response id per call');
note('call log: ' . q1(q{SELECT string_agg(format('%s in=%s out=%s cached=%s %s', response_model,
  input_tokens, output_tokens, cached_tokens, finish_reason), '; ' ORDER BY id)
  FROM rvbbit.call_log WHERE status = 'ok'}));

# the README's sentiment example: typed columns from the schema's properties
q1('TRUNCATE rvbbit.call_log');
@rows = split /\n/, q1(q{SELECT * FROM rvbbit.sql($$
  RVBBIT MAP PARALLEL 20 'classify_sentiment' AS (sentiment text, confidence float8)
  USING (SELECT id, review_text FROM reviews ORDER BY id) $$)});
is(join(',', map { (split /\|/)[0] } @rows), '1,2,3,4', 'sentiment: every row, in order');
is(scalar(grep {
	my (undef, undef, $s, $c) = split /\|/;
	$s =~ /^(positive|negative|neutral|mixed)$/ && $c =~ /^-?[0-9.e+-]+$/ && $c >= 0 && $c <= 1
} @rows), 4, 'sentiment: each row has an allowed sentiment and a confidence between 0 and 1');
note("sentiment: $_") for @rows;
is(calls(q{status = 'ok' AND finish_reason = 'stop' AND output_tokens > 0}), '4',
	'sentiment: four answered calls');

# a reply cut off at max_tokens is an error that says so, and is not cached:
# the second run asks again
q1('TRUNCATE rvbbit.call_log');
for my $run (1, 2)
{
	my ($ret, $o, $err) = $node->psql('postgres',
		q{SELECT rvbbit.run($$cells: [{name: c, instructions: "Name a brand.", max_tokens: 3,
		  output_schema: {type: object, properties: {brand: {type: string}}, required: [brand]}}]$$, '{}')});
	like($err, qr/the reply was cut off at max_tokens \(3\)/,
		"run $run: truncation by the real server is reported");
}
is(calls(q{status = 'truncated' AND finish_reason = 'length'}), '2',
	'both runs were sent and logged as truncated with finish_reason length');
is(q1(q{SELECT count(*) FROM rvbbit.cache WHERE cell = 'c'}), '0', 'nothing was cached');

# llama-server stops answering in the middle of a MAP.  The provider 'slow'
# is the same server at 120 requests per minute, so that the 30 rows take
# at least 15 s whatever the machine's speed and the server is frozen
# (SIGSTOP: its socket still accepts connections, nothing is answered)
# while the statement is running.
q1(qq{INSERT INTO rvbbit.providers (prefix, api_base, requests_per_minute)
  VALUES ('slow', '$url/v1', 120)});
q1('TRUNCATE rvbbit.call_log');
my $stall_map = q{SELECT * FROM rvbbit.sql($$
  RVBBIT MAP PARALLEL 5 'traits/extract_brand.yaml' AS brand
  USING (SELECT n AS id, 'Gadget model ' || n AS product_name FROM generate_series(1, 30) n)
  WITH (model = 'slow:local-model', on_error = fail) $$)};
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{SET rvbbit.stall_timeout = '5s'});
$bg->query_safe(q{SET rvbbit.retry_max_delay = '200ms'});
$bg->query_until(qr/^$/, "$stall_map;\n");
ok(wait_until(sub { calls(q{status = 'ok'}) >= 2 }), 'the MAP is running: two rows answered');
is(calls(q{status = 'ok'}) < 30 ? 'running' : 'done', 'running', 'and not finished (rate-limited)');
kill 'STOP', $server_pid;
my $t0 = time();
$bg->query('SELECT 1');
my $elapsed = time() - $t0;
kill 'CONT', $server_pid;
like($bg->{stderr}, qr/is not reachable|sent nothing for 5000 ms/,
	'the MAP fails with the breaker or the stall error');
note('error: ' . $bg->{stderr});
note(sprintf('failed %.1f s after the server was frozen', $elapsed));
cmp_ok($elapsed, '<', 300,
	'long before rvbbit.request_timeout (600 s): stalls are detected after stall_timeout (5 s)');
cmp_ok(calls(q{status = 'retry' AND error LIKE '%sent nothing for 5000 ms%'}), '>=', 1,
	'the call log names the stalls');
# without the breaker each of the rows not answered would be tried 4 times
my $done = calls(q{status = 'ok'});
my $sent = calls(q{status <> 'cached'});
cmp_ok($sent - $done, '<=', 5 * 4,
	"the breaker stopped sending: $done answered, then " . ($sent - $done)
	  . ' requests for the 5 rows in flight, not ' . ((30 - $done) * 4) . ' for every remaining row');
$bg->quit;

# awake again: once the breaker lets requests through, a re-run pays only
# for the rows that were not answered before the freeze
ok(wait_until(sub {
	my ($ret) = $node->psql('postgres',
		q{SELECT rvbbit.run('extract_brand', '{"product_name": "probe after the freeze"}')});
	$ret == 0 }), 'the server answers again after SIGCONT');
q1('TRUNCATE rvbbit.call_log');
@rows = split /\n/, q1($stall_map);
is(join(',', map { (split /\|/)[0] } @rows), join(',', 1 .. 30), 're-run: all 30 rows, in order');
is(calls(q{status = 'cached'}), $done, "re-run: the $done rows answered before the freeze come from the cache");
is(calls(q{status = 'ok'}), 30 - $done, 're-run: only the other rows are sent');

$node->stop;
done_testing();
