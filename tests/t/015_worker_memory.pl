# The worker's memory does not grow with the number of requests (issue 8
# item 12): its private memory (RssAnon of /proc/<pid>/status, which
# leaves out the shared buffers it touches) is measured after a MAP of
# 10,000 rows and again after 90,000 more rows in the same worker, against
# the mock at no latency.  Per-request allocations left in a context that
# is never reset (the auth header, the URL, messages after a commit)
# would add tens of megabytes here.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# a provider key of realistic length: it is in a header of every request
my $key = 'sk-test-' . ('k' x 160);
my $node = new_rv_node('memory', $mock, qq{
rvbbit.worker_idle_timeout = 3600
rvbbit.api_key = '$key'
});
my $echo = inline_echo();

sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
}

# private memory of a process in kB
sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or die "cannot read /proc/$pid/status: $!";
	while (my $line = <$fh>)
	{
		return $1 if $line =~ /^RssAnon:\s+(\d+) kB/;
	}
	die "no RssAnon in /proc/$pid/status";
}

# a MAP over rows [from, to], every input distinct; returns the row count
sub map_rows
{
	my ($from, $to) = @_;
	return $node->safe_psql('postgres', qq{
SELECT count(result) FROM rvbbit.map('$echo',
  'SELECT ''row '' || n AS text FROM generate_series($from, $to) n', 50)
  AS t(text text, result jsonb)});
}

is(map_rows(1, 10000), '10000', 'first MAP: 10,000 rows');
my $pid = worker_pid();
like($pid, qr/^\d+$/, 'one worker');
my $at_10k = rss_anon_kb($pid);
is(map_rows(10001, 100000), '90000', 'second MAP: 90,000 more rows');
is(worker_pid(), $pid, 'the same worker served both');
my $at_100k = rss_anon_kb($pid);
my $growth = $at_100k - $at_10k;
note("worker RssAnon: $at_10k kB after 10,000 rows, $at_100k kB after 100,000 rows");
cmp_ok($growth, '<', 10 * 1024, 'the worker\'s private memory grows by less than 10 MB over 90,000 requests');
is(mock_get($mock, '/stats')->{requests}, 100000, 'every row was one request');

$node->stop;
done_testing();
