# An async job counts against the daily budget of the SESSION user that
# submitted it, exactly like a synchronous statement: SET ROLE or a
# SECURITY DEFINER function gives no second budget.  The job still runs
# as, and belongs to, the role that submitted it (rvbbit.jobs, as_table
# owner).  SET ROLE to a role without LOGIN, then RUN ASYNC, works on
# every version (the runner connects as the session user).  A session
# user that lost the membership before the job ran makes it fail.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('job_session', $mock);
my $cascade = q{cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]};
my $summ = q{cells: [{name: s, instructions: "{{ row_count }} rows"}]};
$node->safe_psql('postgres', qq{
INSERT INTO rvbbit.model_prices VALUES ('job/model', 10000, 10000);
CREATE ROLE mallory LOGIN; CREATE ROLE team LOGIN; CREATE ROLE alice LOGIN;
CREATE ROLE nl NOLOGIN; CREATE ROLE definer NOLOGIN;
GRANT team TO mallory; GRANT nl TO alice;
GRANT rvbbit_user TO mallory, team, alice, nl, definer;
GRANT CREATE ON SCHEMA public TO mallory, team, alice, nl, definer;
ALTER ROLE mallory SET rvbbit.budget_dollars_per_day = 1;
CREATE FUNCTION public.definer_job(t text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS \$f\$ SELECT job_id FROM rvbbit._submit_job(format(\$s\$MAP '$cascade' USING (SELECT n, 'def ' || n AS text FROM generate_series(1, 3) n) WITH (async = true, as_table = %L, model = 'job/model', cache = false)\$s\$, t)) \$f\$;
ALTER FUNCTION public.definer_job(text) OWNER TO definer;
GRANT EXECUTE ON FUNCTION public.definer_job(text) TO mallory, alice;
});

sub job
{
	my ($id, $what) = @_;
	return $node->safe_psql('postgres', "SELECT $what FROM rvbbit.job_log WHERE id = $id");
}

sub wait_final
{
	my ($id) = @_;
	return wait_until(sub { job($id, 'status') =~ /^(done|failed|cancelled)$/ });
}

sub submit_as
{
	my ($role, $sql) = @_;
	my $id = q_as($role, $sql);
	die "submit failed: $id" unless $id =~ /^\d+$/;
	return $id;
}

# the last line psql printed for sql run as role (psql 15 prints the tag
# of a SET before it); dies on an error
sub q_as
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = psql_as($node, $role, $sql);
	die "psql as $role failed: $err" unless $rc == 0;
	my @lines = split /\n/, $out;
	return $lines[-1] // '';
}

# mallory spends her day in a session (one call at a time)
my ($rc, $o, $e) = psql_as($node, 'mallory', qq{SELECT count(result) FROM rvbbit.map('$cascade',
  \$\$SELECT n, 'spend ' || n AS text FROM generate_series(1, 60) n\$\$, 1,
  '{"model": "job/model", "cache": false}') AS t(n int, text text, result jsonb)});
like($e, qr/daily budget of \$1\.0000 for role "mallory" reached/, 'mallory reached her budget in a session');
($rc, $o, $e) = psql_as($node, 'mallory', qq{SET ROLE team; SELECT count(result) FROM rvbbit.map('$cascade',
  \$\$SELECT n, 'spend ' || n AS text FROM generate_series(1, 60) n\$\$, 1,
  '{"model": "job/model", "cache": false}') AS t(n int, text text, result jsonb)});
like($e, qr/daily budget of \$1\.0000 for role "mallory" reached/, 'SET ROLE team: a synchronous call is refused');
mock_post($mock, '/reset');

# the finding: SET ROLE team, then an async MAP
my $id = submit_as('mallory', qq{SET ROLE team; SELECT * FROM rvbbit.sql(\$\$MAP '$cascade'
  USING (SELECT n, 'team ' || n AS text FROM generate_series(1, 20) n)
  WITH (async = true, as_table = 'public.team_tab', model = 'job/model', cache = false)\$\$)});
ok(wait_final($id), 'the SET ROLE job finished');
is(job($id, 'status'), 'failed', 'a job submitted after SET ROLE by a session user over budget fails');
like(job($id, 'error'), qr/daily budget of \$1\.0000 for role "mallory" reached/, 'with the session user\'s budget reason');
is(mock_get($mock, '/stats')->{requests}, 0, 'and sent no request');
is(job($id, 'role_oid::regrole || \' \' || session_role_oid::regrole || \' \' || outer_role_oid::regrole'),
	'team mallory team', 'the job is team\'s, submitted by session user mallory');
is(q_as('team', qq{SELECT count(*) FROM rvbbit.jobs WHERE job_id = $id}), 1, 'team sees the job');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.call_log WHERE role_oid = 'team'::regrole}), '0',
	'team spent nothing');

# a SECURITY DEFINER function that submits a job: the caller's budget
$id = submit_as('mallory', q{SELECT public.definer_job('public.def_mallory')});
ok(wait_final($id), 'the definer job of mallory finished');
is(job($id, 'status'), 'failed', 'a SECURITY DEFINER submission counts against the caller');
like(job($id, 'error'), qr/daily budget of \$1\.0000 for role "mallory" reached/, 'with the caller\'s budget reason');
ok($node->safe_psql('postgres', q{SELECT coalesce(sum(cost), 0) FROM rvbbit.call_log WHERE budget_role_oid = 'mallory'::regrole}) <= 1.0 + 1e-9,
	'mallory stayed within her budget');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.call_log WHERE role_oid = 'definer'::regrole AND budget_role_oid IS DISTINCT FROM 'mallory'::regrole}),
	'0', 'what the definer job of mallory sent counts against mallory');

$id = submit_as('alice', q{SELECT public.definer_job('public.def_alice')});
ok(wait_final($id), 'the definer job of alice finished');
is(job($id, 'status'), 'done', 'alice (no budget) runs the definer job');
is($node->safe_psql('postgres', q{SELECT tableowner FROM pg_tables WHERE tablename = 'def_alice'}), 'definer',
	'its as_table belongs to the definer (the job\'s role)');
is($node->safe_psql('postgres', qq{SELECT count(*) || ' ' || string_agg(DISTINCT c.role_oid::regrole::text, ',') || ' '
  || string_agg(DISTINCT budget_role_oid::regrole::text, ',') FROM rvbbit.call_log c, rvbbit.job_log j
  WHERE j.id = $id AND c.backend_pid = j.runner_pid AND c.called_at >= j.started_at}),
	'3 definer alice', 'its calls run as definer and count against alice');

# SET ROLE to a role without LOGIN, then RUN ASYNC: works on every version
$id = submit_as('alice', qq{SET ROLE nl; SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 1 AS i)\$\$)});
ok(wait_final($id), 'the NOLOGIN job finished');
is(job($id, 'status'), 'done', 'SET ROLE to a NOLOGIN role, then RUN ASYNC, is done');
is(q_as('alice', qq{SET ROLE nl; SELECT count(*) FROM rvbbit.job_results WHERE job_id = $id}), 1,
	'nl sees its result');
is($node->safe_psql('postgres', qq{SELECT c.role_oid::regrole || ' ' || c.budget_role_oid::regrole FROM rvbbit.call_log c, rvbbit.job_log j
  WHERE j.id = $id AND c.backend_pid = j.runner_pid AND c.called_at >= j.started_at}),
	'nl alice', 'rvbbit.call_log: role nl, budget role alice (the session user)');
is(q_as('alice', qq{SET ROLE nl; SELECT count(*) FROM rvbbit.calls WHERE role::text = 'nl'}), 1,
	'rvbbit.calls shows nl the call');

# the session user lost the membership before the job ran: it fails
$id = $node->safe_psql('postgres', qq{BEGIN; SET SESSION AUTHORIZATION alice; SET ROLE nl;
  SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 2 AS i)\$\$);
  RESET ROLE; RESET SESSION AUTHORIZATION; REVOKE nl FROM alice; COMMIT;});
ok(wait_final($id), 'the job after the REVOKE finished');
is(job($id, 'status'), 'failed', 'a job whose session user lost the membership fails');
like(job($id, 'error'), qr/role "alice" that submitted the job may no longer set role "nl"/, 'with a clear error');

$node->stop;
stop_mock($mock);
done_testing();
