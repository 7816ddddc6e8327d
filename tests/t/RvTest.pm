# Helpers for the rvbbit TAP tests: the mock provider and a node with the
# library preloaded and pointed at it.
package RvTest;

use strict;
use warnings;
use Exporter 'import';
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use POSIX ":sys_wait_h";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_mock stop_mock mock_get mock_post new_rv_node wait_until
  inline_echo mock_release mock_hold mock_requests wait_for_log log_position
  set_server_conf reload_and_wait psql_as new_gateway_node gateway_psql rv_base_conf
  $wait_secs);

# the deadline of every condition wait: generous, so that a slow or loaded
# machine only makes a test slower (PG_TEST_TIMEOUT_DEFAULT, 180 s default)
our $wait_secs = $PostgreSQL::Test::Utils::timeout_default;

my $root = $ENV{RV_ROOT} or die "RV_ROOT is not set";

# RV_PORT_SLICE=N (tests/scripts/test.sh, per PostgreSQL major): this test's
# TCP ports come from N .. N+7499, starting at a random point of the first
# 7,000 (a test file takes a few dozen at most, one after the other), so
# that suites of different majors running side by side on one network never
# pick the same port.  Cluster's own INIT block picks a random start in the
# whole range; this one runs after it.
INIT
{
	if (($ENV{RV_PORT_SLICE} // '') =~ /^([0-9]+)$/)
	{
		$PostgreSQL::Test::Cluster::last_port_assigned =
		  $1 + int(rand(7000));
	}
}

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

# POST to a mock control endpoint, with an optional JSON body (a hash or
# array reference); dies unless the mock answers 2xx.
sub mock_post
{
	my ($mock, $path, $body) = @_;
	my %opts;
	if (defined $body)
	{
		%opts = (
			content => encode_json($body),
			headers => { 'Content-Type' => 'application/json' });
	}
	my $r = HTTP::Tiny->new(timeout => 30)
	  ->post("http://127.0.0.1:$mock->{port}$path", \%opts);
	die "mock POST $path failed: $r->{status}" unless $r->{success};
	return $r;
}

# Answer the mock's requests held by [[hold:NAME]] (now and later, until
# the next /reset or mock_hold); without a name, every name.
sub mock_release
{
	my ($mock, $name) = @_;
	return mock_post($mock, '/release', defined $name ? { name => $name } : undef);
}

# Hold NAME again (without a name: every name, as after /reset).
sub mock_hold
{
	my ($mock, $name) = @_;
	return mock_post($mock, '/hold', defined $name ? { name => $name } : undef);
}

# The mock's records of the last $n LLM requests (all it keeps without $n),
# oldest first: t (start), end, prompt, status, held, aborted, ...
sub mock_requests
{
	my ($mock, $n) = @_;
	return mock_get($mock, defined $n ? "/requests?last=$n" : '/requests');
}

# The postgresql.conf lines of every test node: rvbbit preloaded, its
# provider the mock.
sub rv_base_conf
{
	my ($mock) = @_;
	return qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$mock->{port}/v1'
rvbbit.default_model = 'mock/tap'
};
}

# A started node with rvbbit preloaded, talking to the mock.
sub new_rv_node
{
	my ($name, $mock, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', rv_base_conf($mock) . qq{rvbbit.worker_idle_timeout = 3
# tests hold requests in the mock for as long as they need; a stall is
# only what a test asks for (030 sets its own)
rvbbit.stall_timeout = '10min'
# and a held request must not hit the per-request timeout however slow the
# run (a test that needs a timeout sets its own)
rvbbit.request_timeout = '1h'
max_worker_processes = 32
restart_after_crash = on
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION rvbbit');
	return $node;
}

# Run sql through psql (unaligned, tuples only, stop on error) connected to
# node's postgres database as role.  Returns (exit status, stdout without
# its last newline, stderr).  The psql of node's installation is looked up
# once per node.
my %psql_of;
sub psql_as
{
	my ($node, $role, $sql) = @_;
	my ($out, $err) = ('', '');
	$psql_of{ $node->name } //= $node->config_data('--bindir') . '/psql';
	IPC::Run::run([ $psql_of{ $node->name }, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr('postgres') . " user=$role", '-c', $sql ],
		'>', \$out, '2>', \$err);
	chomp $out;
	return ($? >> 8, $out, $err);
}

# A started node whose supervisor runs rvbbit-gateway on a free port of
# 127.0.0.1 in front of it, talking to the mock.  Options: ssl => DIR
# (ssl = on with a fresh self-signed certificate for localhost written to
# DIR/server.crt and DIR/server.key, and rvbbit.gateway_ssl = on), conf =>
# more postgresql.conf lines, hba => the whole pg_hba.conf (initdb's file
# trusts loopback connections, which a gateway test must choose itself),
# sql => run as postgres after CREATE EXTENSION.  Returns ($node, $gwport).
sub new_gateway_node
{
	my ($name, $mock, %o) = @_;
	my $ssl = '';
	if (defined $o{ssl})
	{
		my ($so, $se) = ('', '');
		IPC::Run::run([
				'openssl', 'req', '-new', '-x509', '-nodes', '-days', '2',
				'-subj', '/CN=localhost', '-newkey', 'rsa:2048',
				'-keyout', "$o{ssl}/server.key", '-out', "$o{ssl}/server.crt" ],
			'>', \$so, '2>', \$se)
		  or die "openssl failed: $se";
		chmod 0600, "$o{ssl}/server.key";
		$ssl = qq{ssl = on
ssl_cert_file = '$o{ssl}/server.crt'
ssl_key_file = '$o{ssl}/server.key'
rvbbit.gateway_ssl = on
};
	}
	my $gwport = PostgreSQL::Test::Cluster::get_free_port();
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', rv_base_conf($mock) . qq{max_worker_processes = 32
listen_addresses = '127.0.0.1'
rvbbit.gateway_port = $gwport
rvbbit.gateway_listen_addresses = '127.0.0.1'
} . $ssl . ($o{conf} // ''));
	if (defined $o{hba})
	{
		open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die;
		print $hba $o{hba};
		close($hba);
	}
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION rvbbit');
	$node->safe_psql('postgres', $o{sql}) if defined $o{sql};
	return ($node, $gwport);
}

# Run sql through psql (unaligned, tuples only, stop on error) connected to
# a gateway on 127.0.0.1.  Options: port (required), user (postgres),
# password (PGPASSWORD when given), sslmode (disable), stdin => 1 (sql on
# standard input instead of -c, for several statements and \copy).
# Returns (exit status, stdout without its last newline, stderr).
sub gateway_psql
{
	my ($sql, %o) = @_;
	my $conn = sprintf('host=127.0.0.1 port=%d dbname=postgres user=%s sslmode=%s',
		$o{port}, $o{user} // 'postgres', $o{sslmode} // 'disable');
	local %ENV = %ENV;
	$ENV{PGPASSWORD} = $o{password} if defined $o{password};
	my ($out, $err) = ('', '');
	my @cmd = ('psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $conn);
	push @cmd, ('-c', $sql) unless $o{stdin};
	IPC::Run::run(\@cmd, '<', \($o{stdin} ? $sql : ''), '>', \$out, '2>', \$err);
	chomp $out;
	return ($? >> 8, $out, $err);
}

# Call $check->() every 100 ms until it returns true or $secs pass
# (default: $wait_secs).
sub wait_until
{
	my ($check, $secs) = @_;
	my $deadline = time() + ($secs // $wait_secs);
	while (time() < $deadline)
	{
		return 1 if $check->();
		usleep(100_000);
	}
	return 0;
}

# ALTER SYSTEM SET $name = $value (RESET with $value undef), reload, and
# wait until the server has the new value: until a new session shows it,
# which happens once the postmaster has reloaded and so has signalled every
# process (an rvbbit worker reloads before it takes its next statement).
# A sleep instead would depend on how fast the machine is.
sub set_server_conf
{
	my ($node, $name, $value) = @_;
	$node->{rv_conf_orig}{$name} //=
	  $node->safe_psql('postgres', "SELECT coalesce(current_setting('$name', true), '')");
	$node->safe_psql('postgres',
		defined $value ? "ALTER SYSTEM SET $name = '$value'" : "ALTER SYSTEM RESET $name");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	my $want = $value // $node->{rv_conf_orig}{$name};
	return wait_until(
		sub { $node->safe_psql('postgres', "SELECT coalesce(current_setting('$name', true), '')") eq $want });
}

# Reload the configuration and wait until the server has reloaded it: a
# marker setting changed in the same ALTER SYSTEM file is shown by a new
# session (see set_server_conf), so every change made before is in effect.
# The marker is commit_siblings, which does nothing while commit_delay is 0
# (ALTER SYSTEM refuses a placeholder such as tap.x in PostgreSQL 15).
my $reload_seq = 0;
sub reload_and_wait
{
	my ($node) = @_;
	$reload_seq++;
	return set_server_conf($node, 'commit_siblings', 100 + $reload_seq % 900);
}

# The current end of a node's server log, for wait_for_log.
sub log_position
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

# Wait until the node's server log, from byte $offset on (see
# log_position), matches $re; up to $secs (default $wait_secs).
sub wait_for_log
{
	my ($node, $re, $offset, $secs) = @_;
	return wait_until(
		sub {
			my $log = slurp_file($node->logfile, $offset // 0);
			return $log =~ $re;
		},
		$secs);
}

1;
