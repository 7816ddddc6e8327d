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
# the server (not the mock) runs under the default limit of 1,024 open
# files; prlimit comes with util-linux (tests/scripts/deps.sh installs it)
my $rc = system('prlimit', '--pid', $$, '--nofile=1024:1024');
is($rc, 0, 'prlimit set the open-file limit of 1,024 for the server')
  or die 'prlimit (util-linux) is missing or failed: the limits cannot be tested';
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

# Memory: the backend's peak RSS after a 10,000-row MAP and again after a
# 100,000-row MAP in the same session.  The rows stream through a bounded
# reorder window and a tuplestore that spills to disk, so the 90,000 more
# rows may not raise the peak by more than 10 MB: a leak of 120 bytes a
# row would.  The MAP checks every row (in order) with one aggregate.
sub mem_map
{
	my ($n) = @_;
	return qq{SELECT count(*), sum(n), bool_and(result #>> '{}' = 're: mem ' || n),
	    bool_and(n = rn)
	  FROM (SELECT t.*, row_number() OVER () AS rn FROM rvbbit.map('$echo',
	    \$\$SELECT n, 'mem ' || n AS text FROM generate_series(1, $n) n\$\$,
	    200, '{"cache": false}') AS t(n int, text text, result jsonb)) s;
SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\\s+(\\d+)'))[1];};
}
my $out = $node->safe_psql('postgres', mem_map(10000) . mem_map(100000));
my ($small, $hwm_small, $big, $hwm_big) = split /\n/, $out;
is($small, '10000|50005000|t|t', 'all 10,000 rows returned in order with their replies');
is($big, '100000|5000050000|t|t', 'all 100,000 rows returned in order with their replies');
diag(sprintf('backend peak RSS: %.1f MB after 10,000 rows, %.1f MB after 100,000 rows',
	$hwm_small / 1024, $hwm_big / 1024));
cmp_ok($hwm_big - $hwm_small, '<', 10 * 1024,
	'the peak RSS grew by less than 10 MB from 10,000 to 100,000 rows');

$node->stop;
stop_mock($mock);
done_testing();
