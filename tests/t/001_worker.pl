# Worker lifecycle: started on first use, exits when idle, survives and
# recovers from crashes, aborts the work of a backend that goes away, and
# keeps committed results across a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('worker', $mock);
my $echo = inline_echo();
my $workers = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'};

# started on first use: the call and the worker count in one statement, so
# the idle timeout cannot end the worker between the two
is($node->safe_psql('postgres', $workers), '0', 'no worker before the first call');
is($node->safe_psql('postgres', qq{WITH c AS MATERIALIZED (SELECT rvbbit.run('$echo', '{"text": "hi"}') AS r)
  SELECT r, ($workers) FROM c}),
	'"re: hi"|1', 'first call answered by the one worker it started');
# exits after rvbbit.worker_idle_timeout (3 s)
ok($node->poll_query_until('postgres', $workers, '0'), 'idle worker exits');

# Ctrl-C during a call whose reply the mock holds: the call is cancelled
# and the worker drops the request.  The reply is never released, so the
# cancel returning at all shows it did not wait for the provider.
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[hold:cancel]] cancel me"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), 'call held by the mock');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'cancelled call reports the cancel');
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'worker aborted the request');
my $rec = mock_requests($mock)->[-1];
ok($rec->{aborted} && !defined $rec->{status},
	'the provider never answered: the cancel did not wait for it');
$bg->{stderr} = '';
is($bg->query_safe(qq{SELECT rvbbit.run('$echo', '{"text": "after cancel"}')}),
	'"re: after cancel"', 'the same session works after the cancel');
$bg->quit;

# backend terminated during a call: no work left behind in the worker
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[hold:terminate]] terminate me"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), 'call held before terminate');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'worker aborted the terminated backend\'s request');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit.progress'), '0', 'nothing left in rvbbit.progress');
ok($node->poll_query_until('postgres', $workers, '0'), 'no worker left running after the backend went away');
eval { $bg->quit };

# the worker is stopped (SIGTERM) during a call: the caller gets a clear
# error (the caller's session stays up, so what it reads is deterministic)
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[hold:sigterm]] worker stops"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), 'call held before SIGTERM');
my $wpid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($wpid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/rvbbit worker exited while the statement was running/,
	'caller told the worker exited');
$bg->{stderr} = '';
is($bg->query_safe(qq{SELECT rvbbit.run('$echo', '{"text": "after sigterm"}')}),
	'"re: after sigterm"', 'next call starts a new worker');
$bg->quit;

# the worker is killed (SIGKILL): PostgreSQL restarts, the next call works.
# What the dying psql prints depends on a race; the server log and a fresh
# connection do not.
$bg = $node->background_psql('postgres', on_error_stop => 0);
my $caller = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[hold:kill]] kill -9"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), 'call held before SIGKILL');
$wpid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
my $logpos = log_position($node);
kill 'KILL', $wpid;
ok(wait_for_log($node, qr/background worker "rvbbit worker" \(PID $wpid\) was terminated by signal 9/, $logpos),
	'the server log shows the worker killed');
ok(wait_for_log($node, qr/all server processes terminated; reinitializing/, $logpos),
	'the server log shows the crash restart');
eval { $bg->quit };
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'server accepts connections after the crash');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $caller"), '0',
	"the caller's backend is gone");
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'nothing in flight after the crash');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "after kill"}')}),
	'"re: after kill"', 'call works after the crash restart');

# committed results survive a restart: the cache answers without HTTP
my $before = mock_get($mock, '/stats')->{requests};
$node->restart;
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "after kill"}')}),
	'"re: after kill"', 'cached answer after restart');
is(mock_get($mock, '/stats')->{requests}, $before, 'no HTTP request for the cached call');
is($node->safe_psql('postgres', q{SELECT status FROM rvbbit.calls ORDER BY id DESC LIMIT 1}),
	'cached', 'the call record says cached');

$node->stop;
stop_mock($mock);
done_testing();
