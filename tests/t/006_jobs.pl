# Async jobs: RUN ASYNC and MAP ... WITH (async = true) return a job id at
# once and run in a background worker; the job survives its client,
# rvbbit.cancel_job() stops it, a restart (fast, immediate or a crash)
# resumes it without paying twice for completed calls, and a user sees
# and cancels only their own jobs.
#
# A job that must still be going when the test looks has its replies held
# by the mock ([[hold:NAME]]) until the test releases them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# held requests must not hit the per-request timeout however slow the run
my $node = new_rv_node('jobs', $mock,
	"rvbbit.max_concurrency = 1000\nrvbbit.request_timeout = '1h'\n");
my $echo = inline_echo();
# a RUN cascade: the rows as JSON in the prompt
my $summ = q{cells: [{name: s, instructions: "{{ row_count }} rows: {{ rows | tojson }}"}]};
my $runners = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'rvbbit job runner'};

sub in_flight { mock_get($mock, '/stats')->{in_flight} }
sub held { mock_get($mock, '/stats')->{held} }

sub job_field
{
	my ($id, $field) = @_;
	return $node->safe_psql('postgres', "SELECT $field FROM rvbbit.jobs WHERE job_id = $id");
}

# poll until the job has one of the statuses (a regex), up to $secs; a
# failing connection (the server restarting) counts as not yet
sub wait_status
{
	my ($id, $re, $secs) = @_;
	return wait_until(
		sub {
			my ($r, $o) = $node->psql('postgres', "SELECT status FROM rvbbit.jobs WHERE job_id = $id");
			return $r == 0 && $o =~ /^(?:$re)$/;
		},
		$secs // $wait_secs);
}

# ---- RUN ASYNC: a job id at once, running, then done with its result
mock_post($mock, '/reset');
my $run_stmt = qq{RUN '$summ' USING (SELECT '[[hold:run]] async run' AS text)};
my $id = $node->safe_psql('postgres', qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT '[[hold:run]] async run' AS text)\$\$)});
like($id, qr/^\d+$/, 'RUN ASYNC returns a job id');
like(job_field($id, 'status'), qr/^(queued|running)$/, 'the job is not done when its id comes back');
ok(wait_status($id, 'running'), 'rvbbit.jobs shows the job running');
is(job_field($id, 'role::text || statement'), "postgres" . qq{RUN ASYNC '$summ' USING (SELECT '[[hold:run]] async run' AS text)},
	'rvbbit.jobs shows the role and the statement');
ok(wait_until(sub { held() == 1 }), 'its request is held by the mock');
is(job_field($id, 'status'), 'running', 'the job is running while its reply is held');
mock_release($mock, 'run');
ok(wait_status($id, 'done'), 'the job ends done');
is(job_field($id, 'rows, error IS NULL, attempts, finished_at >= started_at'),
	'1|t|1|t', 'one row, no error, one attempt');
my $sync = $node->safe_psql('postgres', qq{SELECT * FROM rvbbit.sql(\$\$$run_stmt\$\$)});
is($node->safe_psql('postgres', "SELECT result FROM rvbbit.job_results WHERE job_id = $id"),
	$sync, 'rvbbit.job_results has the result (the same as the synchronous RUN)');
is(mock_get($mock, '/stats')->{requests}, 1, 'the synchronous re-run came from the cache');

# outside a whole query, rvbbit.sql() returns the job id as a JSON object
my $json = $node->safe_psql('postgres',
	qq{SELECT r->>'job_id' FROM (SELECT rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'as json' AS text)\$\$) AS r) s});
like($json, qr/^\d+$/, 'rvbbit.sql() as an expression returns {"job_id": ...}');
ok(wait_status($json, 'done'), 'that job is done too');

# the job runs with the session's rvbbit.* settings at submission
my $model_job = $node->safe_psql('postgres', qq{SET rvbbit.default_model = 'mock/job-model';
  SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'model test' AS text)\$\$)});
ok(wait_status($model_job, 'done'), 'a job submitted with another default model is done');
is($node->safe_psql('postgres', qq{SELECT string_agg(DISTINCT c.model, ',') FROM rvbbit.call_log c
    JOIN rvbbit.job_log j ON c.backend_pid = j.runner_pid AND c.called_at >= j.started_at
   WHERE j.id = $model_job}), 'mock/job-model', "it used the session's rvbbit.default_model");

# ---- MAP ... WITH (async = true, as_table) fills the table
$id = $node->safe_psql('postgres', qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 20 '$echo'
  USING (SELECT n, '[[hold:map]] map ' || n AS text FROM generate_series(1, 20) n)
  WITH (async = true, as_table = 'async_map')\$\$)});
like($id, qr/^\d+$/, 'async MAP returns a job id');
ok(wait_until(sub { held() == 20 }), 'its 20 requests are held by the mock');
is($node->safe_psql('postgres', q{SELECT to_regclass('async_map') IS NULL}), 't',
	'the table does not exist while the job runs');
mock_release($mock, 'map');
ok(wait_status($id, 'done'), 'the async MAP job ends done');
is($node->safe_psql('postgres', q{SELECT count(*), count(result), min(n), max(n) FROM async_map}),
	'20|20|1|20', 'the as_table target has every row');
is($node->safe_psql('postgres', q{SELECT result FROM async_map WHERE n = 7}), '"re: map 7"',
	'with the results');
is(job_field($id, 'rows, target'), '20|async_map', 'rvbbit.jobs shows rows and target');

# ---- async MAP without as_table is an error, and no job is made
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit.jobs');
my ($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT * FROM rvbbit.sql(\$\$MAP '$echo' USING (SELECT 'x' AS text) WITH (async = true)\$\$)});
isnt($ret, 0, 'async MAP without as_table fails');
like($err, qr/an async MAP needs the as_table option/, 'and says why');
($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT * FROM rvbbit.sql(\$\$MAP '$echo' USING (SELECT 'x' AS text) WITH (async = true, as_table = 'async_map')\$\$)});
like($err, qr/relation "async_map" already exists/, 'an existing as_table target is refused at once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit.jobs'), $before, 'no job was made');

# ---- a job submitted in a transaction that rolls back never runs
mock_post($mock, '/reset');
$node->safe_psql('postgres', qq{BEGIN;
  SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'rolled back' AS text)\$\$);
  ROLLBACK;});
ok($node->poll_query_until('postgres', $runners, '0'), 'its runner exits');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit.jobs'), $before, 'no job row');
is(mock_get($mock, '/stats')->{requests}, 0, 'no LLM request was made');

# ---- the client disconnecting does not stop the job
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$id = $bg->query_safe(qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 5 '$echo'
  USING (SELECT n, '[[hold:disconnect]] disconnect ' || n AS text FROM generate_series(1, 5) n)
  WITH (async = true, as_table = 'after_disconnect')\$\$)});
$bg->quit;
like(job_field($id, 'status'), qr/^(queued|running)$/, 'the job is still going after the client quit');
ok(wait_until(sub { held() == 5 }), 'its 5 requests reach the mock after the client quit');
mock_release($mock, 'disconnect');
ok(wait_status($id, 'done'), 'the job of a disconnected client ends done');
is($node->safe_psql('postgres', q{SELECT string_agg(n || '=' || (result #>> '{}'), '|' ORDER BY n) FROM after_disconnect}),
	join('|', map { "$_=re: disconnect $_" } 1 .. 5), 'and wrote its table, every row with its reply');

# ---- rvbbit.cancel_job stops a job with 100 requests in flight
mock_post($mock, '/reset');
$id = $node->safe_psql('postgres', qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 100 '$echo'
  USING (SELECT n, '[[hold:cancel]] cancel ' || n AS text FROM generate_series(1, 100) n)
  WITH (async = true, as_table = 'cancelled_map')\$\$)});
ok(wait_until(sub { held() == 100 }), '100 requests of the job in flight');
ok($node->poll_query_until('postgres', "SELECT status, in_flight FROM rvbbit.jobs WHERE job_id = $id",
	'running|100'), 'rvbbit.jobs shows the requests in flight');
is($node->safe_psql('postgres', "SELECT rvbbit.cancel_job($id)"), 't', 'cancel_job returns true');
is(job_field($id, 'status, error'), 'cancelled|cancelled by postgres', 'the job is cancelled');
ok(wait_until(sub { in_flight() == 0 }), 'the worker dropped all 100 requests');
is_deeply(mock_get($mock, '/stats')->{by_status}, {}, 'none of them was answered');
ok($node->poll_query_until('postgres', $runners, '0'), 'the runner exited');
is(job_field($id, 'status'), 'cancelled', 'the status stays cancelled after the runner died');
is($node->safe_psql('postgres', q{SELECT to_regclass('cancelled_map') IS NULL}), 't',
	'the cancelled job left no table');
is($node->safe_psql('postgres', "SELECT rvbbit.cancel_job($id)"), 'f',
	'cancelling an ended job returns false');
($ret, $out, $err) = $node->psql('postgres', 'SELECT rvbbit.cancel_job(999999)');
like($err, qr/job 999999 does not exist/, 'cancelling an unknown job is an error');

# ---- interruptions: fast restart, immediate stop, crash restart, the
# rvbbit worker exiting, the worker exiting before the runner in a fast
# shutdown.  Five fast rows complete before the interruption; the three
# slow ones are held in flight.  Once the interruption has ended those
# three requests, the hold is released; the resumed job gets the fast rows
# from the cache and asks only for the slow ones again, so each of the 8
# calls is paid exactly once.
my $n_restart = 0;
sub interrupted_job
{
	my ($how, $interrupt) = @_;
	$n_restart++;
	my $tab = "resumed_$n_restart";
	my $calls_before = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM rvbbit.call_log');
	my $jid = $node->safe_psql('postgres', qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 8 '$echo'
  USING (SELECT n, CASE WHEN n <= 5 THEN '' ELSE '[[hold:$tab]] ' END || '$how ' || n AS text
         FROM generate_series(1, 8) n)
  WITH (async = true, as_table = '$tab')\$\$)});
	ok($node->poll_query_until('postgres', qq{SELECT count(*) FROM rvbbit.call_log c
	    JOIN rvbbit.job_log j ON c.backend_pid = j.runner_pid AND c.called_at >= j.started_at
	   WHERE j.id = $jid AND c.status = 'ok'}, '5'), "$how: the fast rows are done");
	ok(wait_until(sub { held() == 3 }), "$how: the slow rows are in flight");
	mock_post($mock, '/reset');
	$interrupt->($jid);
	ok(wait_until(sub { mock_get($mock, '/stats')->{aborted} == 3 }),
		"$how: the interruption ended the three requests in flight");
	mock_release($mock, $tab);
	ok(wait_status($jid, 'done|failed', $wait_secs), "$how: the job ends (it does not stay running)");
	is(job_field($jid, 'status, attempts'), 'done|2', "$how: the job was resumed and is done");
	is($node->safe_psql('postgres', qq{SELECT string_agg(n || '=' || (result #>> '{}'), '|' ORDER BY n) FROM $tab}),
		join('|', map { "$_=re: $how $_" } 1 .. 8), "$how: all rows written with their replies");
	is(mock_get($mock, '/stats')->{requests}, 3, "$how: only the 3 unfinished calls were sent again");
	is($node->safe_psql('postgres', qq{SELECT count(*), count(DISTINCT cache_key) FROM rvbbit.call_log
	   WHERE id > $calls_before AND status = 'ok'}), '8|8', "$how: each of the 8 calls was paid once");
	return $jid;
}

sub worker_pids
{
	return split /\n/, $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
}

# the state letter of a process (R, S, T for stopped, ...) from /proc
sub proc_state
{
	my ($pid) = @_;
	my $stat = eval { slurp_file("/proc/$pid/stat") } // '';
	return $stat =~ /^\d+ \(.*\) (\S)/s ? $1 : '';
}

# whether a SIGTERM is pending (sent, not yet handled) for the process
sub sigterm_pending
{
	my ($pid) = @_;
	my $status = eval { slurp_file("/proc/$pid/status") } // '';
	my $pending = 0;
	$pending |= hex($1) while $status =~ /^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/mg;
	return ($pending >> 14) & 1;    # bit 15 - 1
}

interrupted_job('fast restart', sub { $node->restart });
interrupted_job('immediate stop', sub { $node->stop('immediate'); $node->start });
interrupted_job('crash restart', sub {
	my ($jid) = @_;
	my $pid = $node->safe_psql('postgres', "SELECT runner_pid FROM rvbbit.job_log WHERE id = $jid");
	kill 'KILL', $pid;
	# the postmaster restarts every process; wait_status polls through it
});
like(slurp_file($node->logfile), qr/resuming rvbbit job \d+ after a server restart/,
	'the server log says the job was resumed');

# The rvbbit worker serving the job exits (pg_terminate_backend) while the
# runner gets no signal: the runner sees "rvbbit worker exited while the
# statement was running" with no SIGTERM of its own, which is what a fast
# shutdown does to a runner when the postmaster's SIGTERM reaches the
# worker first.  That is an interruption, not the job's failure: the job
# goes back to queued and a new runner resumes it at once.
my $log_pos = log_position($node);
my $wjob = interrupted_job('worker exit', sub {
	my @w = worker_pids();
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($_)") for @w;
});
ok(wait_for_log($node, qr/rvbbit job $wjob was interrupted and will resume/, $log_pos),
	'worker exit: the server log says the job resumes');

# The same in a fast shutdown, with the order forced: the runner is
# stopped (SIGSTOP), the worker terminated and gone, then the fast stop
# sends the runner its SIGTERM, and only then does the runner continue.
# The job must be left queued, and the recovery after the restart resumes
# it.
$log_pos = log_position($node);
my $sjob = interrupted_job('worker gone before the runner in a fast stop', sub {
	my ($jid) = @_;
	my $rpid = $node->safe_psql('postgres', "SELECT runner_pid FROM rvbbit.job_log WHERE id = $jid");
	kill 'STOP', $rpid;
	ok(wait_until(sub { proc_state($rpid) eq 'T' }), 'the runner is stopped');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($_)") for worker_pids();
	ok(wait_until(sub { worker_pids() == 0 }), 'the rvbbit worker is gone');
	my ($out, $err) = ('', '');
	my $stop = IPC::Run::start([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', 'stop' ],
		'>', \$out, '2>', \$err);
	ok(wait_until(sub { sigterm_pending($rpid) }), "the fast stop sent the runner SIGTERM");
	kill 'CONT', $rpid;
	ok($stop->finish, 'the fast stop completes') or diag("pg_ctl: $out $err");
	$node->_update_pid(0);
	$node->start;
});
ok(wait_for_log($node, qr/resuming rvbbit job $sjob after a server restart/, $log_pos),
	'worker gone before the runner: the restart resumed the job');

# ---- a job interrupted more often than it may be resumed fails with the reason
$node->safe_psql('postgres', q{INSERT INTO rvbbit.job_log (role_oid, dboid, statement, status,
    attempts, started_at, runner_pid, server_started_at)
  SELECT 10, d.oid, 'RUN ''x'' USING (SELECT 1)', 'running', 3, now(), 1, '2000-01-01'
    FROM pg_database d WHERE datname = current_database()});
$node->restart;
ok($node->poll_query_until('postgres',
	q{SELECT status || ': ' || error FROM rvbbit.job_log WHERE server_started_at = '2000-01-01'},
	'failed: interrupted by a server restart; not resumed after 3 attempts'),
	'a job started too often fails with the reason');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.job_log WHERE status IN ('queued', 'running')}),
	'0', 'no job is left queued or running');

# ---- two roles: each sees and cancels only their own jobs; rvbbit_admin sees all
$node->safe_psql('postgres', q{
  CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
  GRANT rvbbit_user TO alice, bob; GRANT rvbbit_admin TO carol;
  CREATE SCHEMA alice_s AUTHORIZATION alice;
  CREATE TABLE secret AS SELECT 'top secret' AS text;
  CREATE TABLE public_words AS SELECT 'hello ' || n AS text FROM generate_series(1, 3) n;
  GRANT SELECT ON public_words TO alice, bob;});

sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

sub as_role_err
{
	my ($role, $sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return $e;
}

my $alice_job = as_role('alice', qq{SET search_path = alice_s, public;
  SELECT * FROM rvbbit.sql(\$\$MAP '$echo' USING (SELECT text FROM public_words)
    WITH (async = true, as_table = 'alice_map')\$\$)});
my $alice_slow = as_role('alice', qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ'
  USING (SELECT '[[hold:alice]] alice slow' AS text)\$\$)});
my $bob_job = as_role('bob', qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ'
  USING (SELECT text FROM public_words)\$\$)});
my $bob_secret = as_role('bob', qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ'
  USING (SELECT text FROM secret)\$\$)});
ok(wait_status($alice_job, 'done'), "alice's MAP job is done");
ok(wait_status($bob_job, 'done'), "bob's RUN job is done");
is($node->safe_psql('postgres', q{SELECT tableowner, count(*) FROM pg_tables t, alice_s.alice_map m
  WHERE t.schemaname = 'alice_s' AND t.tablename = 'alice_map' GROUP BY 1}), 'alice|3',
	"alice's job ran as alice with her search_path (alice_s.alice_map, owned by alice)");
ok(wait_status($bob_secret, 'failed'), "bob's job on a table he may not read fails");
like(job_field($bob_secret, 'error'), qr/permission denied for table secret/,
	'with the permission error: the job runs with its role\'s privileges');

is(as_role('alice', 'SELECT string_agg(job_id::text, \',\' ORDER BY job_id) FROM rvbbit.jobs'),
	"$alice_job,$alice_slow", 'alice sees only her jobs');
is(as_role('bob', 'SELECT string_agg(job_id::text, \',\' ORDER BY job_id) FROM rvbbit.jobs'),
	"$bob_job,$bob_secret", 'bob sees only his jobs');
is(as_role('alice', "SELECT count(*) FROM rvbbit.job_results WHERE job_id = $bob_job"), '0',
	"alice does not see bob's results");
is(as_role('bob', "SELECT count(*) FROM rvbbit.job_results WHERE job_id = $bob_job"), '1',
	'bob sees his result');
like(as_role_err('alice', 'SELECT * FROM rvbbit.job_log'), qr/permission denied for table job_log/,
	'the job table itself is not readable');
like(as_role_err('alice', 'UPDATE rvbbit.job_log SET status = \'done\''), qr/permission denied for table job_log/,
	'nor writable');
{
	# another role's job looks exactly like a job that does not exist
	my $foreign = as_role_err('bob', "SELECT rvbbit.cancel_job($alice_slow)");
	like($foreign, qr/ERROR:  job $alice_slow does not exist/, "bob cannot cancel alice's job");
	unlike($foreign, qr/permission/, 'and is not told that it exists');
	my $missing = as_role_err('bob', 'SELECT rvbbit.cancel_job(987654321)');
	(my $fe = $foreign) =~ s/\b$alice_slow\b/N/g;
	(my $me = $missing) =~ s/\b987654321\b/N/g;
	is($fe, $me, "the error for alice's job is the same as for a nonexistent job");
}
ok(wait_until(sub { held() == 1 }), "alice's slow job has its request held");
is(job_field($alice_slow, 'status'), 'running', "alice's job is still running");
ok(as_role('carol', 'SELECT count(*) FROM rvbbit.jobs') >= 4, 'rvbbit_admin sees everybody\'s jobs');
is(as_role('carol', "SELECT rvbbit.cancel_job($alice_slow)"), 't', "rvbbit_admin can cancel alice's job");
is(job_field($alice_slow, 'status, error'), 'cancelled|cancelled by carol', 'it is cancelled by carol');
ok($node->poll_query_until('postgres', $runners, '0'), 'no runner left');
ok(wait_until(sub { in_flight() == 0 }), 'nothing in flight');

# a role without rvbbit_user cannot submit jobs
$node->safe_psql('postgres', 'CREATE ROLE dave LOGIN');
like(as_role_err('dave', q{SELECT * FROM rvbbit._submit_job('RUN ''x'' USING (SELECT 1)')}),
	qr/permission denied for (function|schema)/, 'a role without rvbbit_user cannot submit');
like(as_role_err('dave', 'SELECT rvbbit.cancel_job(1)'), qr/permission denied for (function|schema)/,
	'nor cancel');

$node->stop;
stop_mock($mock);
done_testing();
