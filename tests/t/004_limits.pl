# Limits: PARALLEL far above the open-file limit completes every row, and
# the backend's memory does not grow with the number of input rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# the server (not the mock) runs under the default limit of 1,024 open files
system('prlimit', '--pid', $$, '--nofile=1024:1024') == 0
  or plan skip_all => 'prlimit is not available';
my $node = new_rv_node('limits', $mock,
	"rvbbit.max_concurrency = 5000\nrvbbit.max_connections_per_worker = 5000\n");
my $echo = inline_echo();

is($node->safe_psql('postgres', qq{SELECT count(result) FROM rvbbit.map('$echo',
	\$\$SELECT n, '[[latency:500]] fd ' || n AS text FROM generate_series(1, 2000) n\$\$,
	2000, '{"cache": false}') AS t(n int, text text, result jsonb)}),
	'2000', 'PARALLEL 2000 under a 1,024-file limit completes every row');
my $max = mock_get($mock, '/stats')->{max_in_flight};
diag("max in flight: $max (capped to fit the worker's open-file limit)");
ok($max < 1024, 'the worker kept its connections under the file limit');

# 100,000 rows with zero latency: the backend's peak RSS stays small
my $out = $node->safe_psql('postgres', qq{
SELECT count(result) FROM rvbbit.map('$echo',
	\$\$SELECT n, 'mem ' || n AS text FROM generate_series(1, 100000) n\$\$,
	200, '{"cache": false}') AS t(n int, text text, result jsonb);
SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\\s+(\\d+)'))[1];
});
my ($rows, $hwm) = split /\n/, $out;
is($rows, '100000', 'all 100,000 rows returned');
diag(sprintf('backend peak RSS after 100,000 rows: %.1f MB', $hwm / 1024));
ok($hwm < 200 * 1024, 'backend peak RSS under 200 MB');

$node->stop;
stop_mock($mock);
done_testing();
