# Worker lifecycle: started on first use, exits when idle, survives and
# recovers from crashes, aborts the work of a backend that goes away, and
# keeps committed results across a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('worker', $mock);
my $echo = inline_echo();
my $workers = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'};

# started on first use
is($node->safe_psql('postgres', $workers), '0', 'no worker before the first call');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "hi"}')}),
	'"re: hi"', 'first call answered');
is($node->safe_psql('postgres', $workers), '1', 'one worker after the first call');
# exits after rvbbit.worker_idle_timeout (3 s)
ok($node->poll_query_until('postgres', $workers, '0'), 'idle worker exits');

# Ctrl-C during a slow call: the call is cancelled and the worker drops the request
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[latency:60000]] cancel me"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 1 }), 'slow call in flight');
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
my $out = $bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'cancelled call reports the cancel');
my $elapsed = time() - $t0;
diag(sprintf('pg_cancel_backend returned control after %.3f s', $elapsed));
ok($elapsed < 30, 'cancel did not wait for the provider');
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'worker aborted the request');
$bg->{stderr} = '';
is($bg->query_safe(qq{SELECT rvbbit.run('$echo', '{"text": "after cancel"}')}),
	'"re: after cancel"', 'the same session works after the cancel');
$bg->quit;

# backend terminated during a call: no work left behind in the worker
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[latency:60000]] terminate me"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 1 }), 'slow call in flight before terminate');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'worker aborted the terminated backend\'s request');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit.progress'), '0', 'nothing left in rvbbit.progress');
ok($node->poll_query_until('postgres', $workers, '0'), 'no worker left running after the backend went away');
eval { $bg->quit };

# the worker is stopped (SIGTERM) during a call: the caller gets a clear error
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[latency:60000]] worker stops"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 1 }), 'slow call in flight before SIGTERM');
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

# the worker is killed (SIGKILL): PostgreSQL restarts, the next call works
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, qq{SELECT rvbbit.run('$echo', '{"text": "[[latency:60000]] kill -9"}');\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 1 }), 'slow call in flight before SIGKILL');
$wpid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
kill 'KILL', $wpid;
# psql loses its connection (and may exit), so the query itself may die
eval { $bg->query('SELECT 1') };
like($bg->{stderr} . ($@ // ''), qr/terminating connection because of crash of another server process|server closed the connection unexpectedly|connection to server was lost/,
	'caller gets the crash error');
eval { $bg->quit };
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'server accepts connections after the crash');
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
