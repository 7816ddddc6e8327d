# Helpers for the rvbbit TAP tests: the mock provider and a node with the
# library preloaded and pointed at it.
package RvTest;

use strict;
use warnings;
use Exporter 'import';
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX ":sys_wait_h";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_mock stop_mock mock_get mock_post new_rv_node wait_until
  inline_echo mock_release mock_wait_held);

my $root = $ENV{RV_ROOT} or die "RV_ROOT is not set";

# mocks this test started, stopped at exit even when the test dies
my @started_mocks;
my $parent_pid = $$;

END
{
	if ($$ == $parent_pid)
	{
		for my $m (@started_mocks)
		{
			next unless $m->{pid};
			kill 'TERM', $m->{pid};
			waitpid($m->{pid}, 0);
			$m->{pid} = 0;
		}
	}
}

# An inline cascade that sends input.text as the prompt.
sub inline_echo
{
	return q{cells: [{name: say, instructions: "{{ input.text }}"}]};
}

# Start the mock provider on an ephemeral port; extra arguments go to it.
sub start_mock
{
	my (@args) = @_;
	my $dir = tempdir(CLEANUP => 1);
	my $py = $ENV{PYTHON} || 'python3';
	my $pid = fork();
	die "fork failed" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', "$dir/mock.log");
		open(STDERR, '>&', \*STDOUT);
		exec($py, "$root/tests/mock/mock_llm.py", '--host', '127.0.0.1',
			'--port', '0', '--port-file', "$dir/port", @args)
		  or die "exec failed: $!";
	}
	for (1 .. 400)
	{
		last if -s "$dir/port";
		usleep(50_000);
	}
	open(my $fh, '<', "$dir/port") or die "mock did not start";
	my $port = <$fh>;
	close($fh);
	chomp $port;
	my $mock = { pid => $pid, port => $port, dir => $dir };
	push @started_mocks, $mock;
	return $mock;
}

sub stop_mock
{
	my ($mock) = @_;
	return unless $mock->{pid};
	kill 'TERM', $mock->{pid};
	waitpid($mock->{pid}, 0);
	$mock->{pid} = 0;
}

sub mock_get
{
	my ($mock, $path) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)
	  ->get("http://127.0.0.1:$mock->{port}$path");
	die "mock GET $path failed: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub mock_post
{
	my ($mock, $path) = @_;
	HTTP::Tiny->new(timeout => 30)
	  ->post("http://127.0.0.1:$mock->{port}$path");
}

# Answer every request the mock holds for a [[hold]] directive; returns
# how many it released.
sub mock_release
{
	my ($mock) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)
	  ->post("http://127.0.0.1:$mock->{port}/release");
	die "mock POST /release failed: $r->{status}" unless $r->{success};
	return decode_json($r->{content})->{released};
}

# Wait (generously: a slow machine only makes this slower) until the mock
# holds exactly $n requests.
sub mock_wait_held
{
	my ($mock, $n, $secs) = @_;
	return wait_until(sub { mock_get($mock, '/stats')->{held} == $n }, $secs // 180);
}

# A started node with rvbbit preloaded, talking to the mock.
sub new_rv_node
{
	my ($name, $mock, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$mock->{port}/v1'
rvbbit.default_model = 'mock/tap'
rvbbit.worker_idle_timeout = 3
# tests hold requests in the mock for as long as they need; a stall is
# only what a test asks for (030 sets its own)
rvbbit.stall_timeout = '10min'
max_worker_processes = 32
restart_after_crash = on
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION rvbbit');
	return $node;
}

# Call $check->() every 100 ms until it returns true or $secs pass.
sub wait_until
{
	my ($check, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	while (time() < $deadline)
	{
		return 1 if $check->();
		usleep(100_000);
	}
	return 0;
}

1;
