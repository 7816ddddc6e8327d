# rvbbit.max_bytes_in_flight: a statement reads no further input row while
# the rows it has sent to the worker and not yet had answered add up to the
# setting, so PARALLEL x row size no longer decides how much memory the
# worker (and the backend) hold.  Rows of 1 MiB at PARALLEL 10: with 4 MB,
# exactly 4 are in flight; without the cap, 10 are (a mock barrier that
# answers only once 10 requests wait shows it).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('bytes', $mock, '');
my $echo = inline_echo();
sub stats { mock_get($mock, '/stats') }

# 20 rows of 1 MiB (and the directive), PARALLEL 10
sub map_big
{
	my ($directive) = @_;
	return qq{SELECT count(*) FILTER (WHERE result #>> '{}' LIKE 're: %xxxx%') || '|' || count(*)
FROM rvbbit.map('$echo',
  \$\$SELECT n, '$directive ' || repeat('x', 1048576) AS text FROM generate_series(1, 20) n\$\$,
  10, '{"cache": false}') AS t(n int, text text, result jsonb)};
}

is($node->safe_psql('postgres', 'SHOW rvbbit.max_bytes_in_flight'), '256MB', 'the default is 256 MB');

# capped: the replies are held until 4 requests wait, then released
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{SET rvbbit.max_bytes_in_flight = '4MB'});
$bg->query_until(qr/^$/, map_big('[[hold:cap]]') . ";\n");
ok(wait_until(sub { stats()->{held} == 4 }), 'four 1 MiB rows are in flight');
mock_release($mock, 'cap');
is($bg->query_safe('SELECT 1'), "20|20\n1", 'every row is answered, once the replies are released');
$bg->quit;
is(stats()->{max_in_flight}, 4, 'never more than 4 MB of rows in flight, although PARALLEL is 10');
is(stats()->{requests}, 20, 'one request per row');

# not capped: all 10 of PARALLEL are in flight together (the barrier
# answers only once 10 requests wait)
mock_post($mock, '/reset');
is($node->safe_psql('postgres', map_big('[[hold:all:10]]')), '20|20',
	'without the cap the 1 MiB rows go 10 at a time');
is(stats()->{max_in_flight}, 10, 'PARALLEL 10 in flight');

# the cap is the DBA's: a role that is not superuser cannot raise it
$node->safe_psql('postgres', 'CREATE ROLE alice LOGIN; GRANT rvbbit_user TO alice');
my ($rc, $out, $err) = psql_as($node, 'alice', q{SET rvbbit.max_bytes_in_flight = '10GB'});
isnt($rc, 0, 'rvbbit_user cannot set rvbbit.max_bytes_in_flight');
like($err, qr/permission denied to set parameter "rvbbit.max_bytes_in_flight"/, '... with PostgreSQL\'s error');

# the smallest row still goes: a cap below one row's size lets one through
mock_post($mock, '/reset');
is($node->safe_psql('postgres', q{SET rvbbit.max_bytes_in_flight = '64kB';} . map_big('small cap')), '20|20',
	'a cap below one row lets one row at a time through');
is(stats()->{max_in_flight}, 1, 'one row in flight');

$node->stop;
stop_mock($mock);
done_testing();
