# What real providers do and the mock normally does not: a server that
# holds the connection open and sends nothing (stall), a server that
# answers 503 "Loading model" without Retry-After while it loads, a
# provider that refuses every connection (the circuit breaker), and replies
# cut off at max_tokens (never cached).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('providers', $mock);
my $echo = inline_echo();

sub psql_result
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return ($ret, $out, $err);
}

sub calls_where
{
	my ($cond) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM rvbbit.call_log WHERE $cond");
}

# a stalled request is abandoned after rvbbit.stall_timeout and retried
mock_post($mock, '/reset');
my ($ret, $out, $err) = psql_result(qq{SET rvbbit.stall_timeout = '2s';
SET rvbbit.retry_max_delay = '100ms';
SELECT rvbbit.run('$echo', '{"text": "[[stall:1]] wake up"}')});
is($out, '"re: wake up"', 'a request that stalled once is retried and answered');
is(mock_get($mock, '/stats')->{requests}, 2, 'the stalled request was sent again');
is($node->safe_psql('postgres', q{SELECT string_agg(status || ':' || attempt, ',' ORDER BY id)
  FROM rvbbit.call_log}), 'retry:0,ok:1', 'the call log has the stall as a retry, then attempt 1 ok');
like($node->safe_psql('postgres', q{SELECT error FROM rvbbit.call_log WHERE status = 'retry'}),
	qr/sent nothing for 2000 ms/, 'the stall is named in the call log');

# a server that never answers: the statement fails with the stall error
mock_post($mock, '/reset');
($ret, $out, $err) = psql_result(qq{SET rvbbit.stall_timeout = '1s';
SET rvbbit.retry_max_delay = '100ms';
SELECT rvbbit.run('$echo', '{"text": "[[stall:always]] asleep"}', '{"max_retries": 1}')});
isnt($ret, 0, 'a server that stalls every time fails the statement');
like($err, qr/LLM provider sent nothing for 1000 ms/, 'the error says the provider sent nothing');
like($err, qr/After 2 attempts/, 'after the retry');
is(mock_get($mock, '/stats')->{requests}, 2, 'one try and one retry');

# a model that is loading: 503 without Retry-After for 10 s; waits are
# capped by rvbbit.retry_max_delay (300 ms), and the MAP succeeds.  The
# count of tries is a lower bound loose enough for a loaded machine (a try
# and its wait may take 1.25 s on average): backoff without the cap (waits
# up to 1, 2, 4, 8, 16 s) makes about 5 tries per row in 10 s.
mock_post($mock, '/reset');
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
$out = $node->safe_psql('postgres', qq{SET rvbbit.retry_max_delay = '300ms';
SELECT count(result) FROM rvbbit.map('$echo',
  \$\$SELECT n, '[[loading:10]] loading ' || n AS text FROM generate_series(1, 4) n\$\$, 4,
  '{"max_retries": 100}') AS t(n int, text text, result jsonb)});
is($out, '4', 'every row is answered once the model has loaded');
my $retries = calls_where(q{status = 'retry' AND http_status = 503});
cmp_ok($retries, '>=', 4 * 8,
	'waits of at most rvbbit.retry_max_delay (300 ms): at least 8 tries per row in 10 s');
is(calls_where(q{status = 'ok'}), '4', 'four answered calls');
is($node->safe_psql('postgres', q{SELECT min(attempt) > 0 FROM rvbbit.call_log WHERE status = 'ok'}),
	't', 'attempt counts the transport retries');

# the circuit breaker: a provider whose port is closed
my $dead = start_mock();
my $dead_port = $dead->{port};
stop_mock($dead);
$node->safe_psql('postgres', qq{INSERT INTO rvbbit.providers (prefix, api_base)
  VALUES ('dead', 'http://127.0.0.1:$dead_port/v1')});
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
($ret, $out, $err) = psql_result(qq{SELECT count(result) FROM rvbbit.map('$echo',
  \$\$SELECT n, 'refused ' || n AS text FROM generate_series(1, 40) n\$\$, 5,
  '{"model": "dead:x", "max_retries": 3, "on_error": "fail"}') AS t(n int, text text, result jsonb)});
isnt($ret, 0, 'a MAP against a refused port fails');
like($err, qr/LLM provider at http:\/\/127\.0\.0\.1:$dead_port\/v1 is not reachable/,
	'the error names the unreachable provider');
like($err, qr/requests in a row could not reach it/, 'and says why');
my $sent = calls_where(q{model = 'dead:x'});
cmp_ok($sent, '<=', 5 + 3, "the breaker stopped sending: $sent requests, not 40 rows x 4 tries");
cmp_ok($sent, '>=', 3, 'it opened after three failures in a row');
# the worker's next statement to that provider fails at once, sends at most a probe round
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
($ret, $out, $err) = psql_result(qq{SELECT rvbbit.run('$echo', '{"text": "again"}',
  '{"model": "dead:x"}')});
like($err, qr/is not reachable/, 'the next statement fails with the same clear error');
cmp_ok(calls_where(q{model = 'dead:x'}), '<=', 1, 'sending at most one request');
# other providers are not affected
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "alive"}')}),
	'"re: alive"', 'the default provider still answers');

# replies cut off at max_tokens are never cached
mock_post($mock, '/reset');
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
my $cut = qq{SELECT count(result) FROM rvbbit.map('$echo',
  \$\$SELECT n, '[[needs:5000]] very long answer ' || n AS text FROM generate_series(1, 3) n\$\$, 3)
  AS t(n int, text text, result jsonb)};
is($node->safe_psql('postgres', $cut), '0', 'truncated replies are not results');
is($node->safe_psql('postgres', $cut), '0', 'nor on the second run');
is(mock_get($mock, '/stats')->{requests}, 6, 'the second run asked the provider again');
is(calls_where(q{status = 'truncated' AND finish_reason = 'length'}), '6', 'six truncated calls logged');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.cache WHERE response LIKE '%very long answer%'}),
	'0', 'nothing of them is in the cache');
like($node->safe_psql('postgres', q{SELECT DISTINCT error FROM rvbbit.call_log WHERE status = 'truncated'}),
	qr/^the reply was cut off at max_tokens \(1024\)$/, 'the error names the cap sent');

$node->stop;
done_testing();
