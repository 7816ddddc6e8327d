# Security (issue 8, items 1, 3 and 4): jobs and pg_cron runs execute as
# the submitting role for real (session_user, ALTER ROLE ... SET, no way
# to superuser through deferred triggers or SECURITY DEFINER functions);
# the pool worker, which runs as the bootstrap superuser, never executes a
# user's functions or operators; rvbbit._progress() shows a role only its
# own statements; API keys (GUC, server environment, rvbbit.providers)
# never reach the server log, client errors or rvbbit.calls, even when the
# provider echoes the request headers; a dropped role fails its job.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $env_key = 'sk-tap-env-secret-4711';
my $guc_key = 'sk-tap-guc-secret-0815';
my $prov_key = 'sk-tap-provider-secret-1234';
$ENV{RVBBIT_API_KEY} = $env_key;

my $mock = start_mock();
my $node = new_rv_node('security', $mock, qq{shared_preload_libraries = 'rvbbit,pg_cron'
cron.database_name = 'postgres'
log_statement = 'all'
log_min_messages = debug1
});
$node->append_conf('postgresql.conf', "cron.host = '" . $node->host . "'\n");
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my $echo = inline_echo();
my ($ret, $out, $err);
my $summ = q{cells: [{name: s, instructions: "{{ row_count }} rows: {{ rows | tojson }}"}]};

$node->safe_psql('postgres', q{
  CREATE ROLE alice LOGIN;
  CREATE ROLE bob LOGIN;
  GRANT rvbbit_user TO alice, bob;
  GRANT CREATE ON SCHEMA public TO alice;
  GRANT USAGE ON SCHEMA cron TO alice;
  CREATE TABLE public.pwned (who text, how text);
  GRANT INSERT, SELECT ON public.pwned TO PUBLIC;
});

sub is_super
{
	my ($role) = @_;
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

sub job_status
{
	my ($id) = @_;
	return $node->safe_psql('postgres', "SELECT status FROM rvbbit.jobs WHERE job_id = $id");
}

sub wait_job
{
	my ($id) = @_;
	return wait_until(sub { job_status($id) =~ /^(done|failed|cancelled)$/ });
}

sub as_alice
{
	my ($sql) = @_;
	# a session of alice (not SET ROLE: a job runs for its session user)
	return $node->safe_psql('postgres', $sql, connstr => $node->connstr('postgres') . ' user=alice');
}

# ---- the pool worker (bootstrap superuser) never runs alice's objects
# A database default search_path puts public first; alice's functions and
# operators there shadow the ones the worker's queries use.
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET search_path = public, pg_catalog});
as_alice(q{
  CREATE FUNCTION public.rv_trap() RETURNS boolean LANGUAGE plpgsql AS $f$
  BEGIN
    INSERT INTO public.pwned VALUES (current_user, 'worker');
    BEGIN EXECUTE 'ALTER ROLE alice SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN true;
  END $f$;
  CREATE FUNCTION public.jsonb_array_elements_text(jsonb) RETURNS SETOF text
    LANGUAGE sql AS $f$ SELECT x FROM pg_catalog.jsonb_array_elements_text($1) x WHERE public.rv_trap() $f$;
  CREATE FUNCTION public.rv_eq(text, text) RETURNS boolean LANGUAGE sql
    AS $f$ SELECT public.rv_trap() AND pg_catalog.texteq($1, $2) $f$;
  CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.rv_eq);
  CREATE FUNCTION public.rv_oideq(oid, oid) RETURNS boolean LANGUAGE sql
    AS $f$ SELECT public.rv_trap() AND pg_catalog.oideq($1, $2) $f$;
  CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.rv_oideq);
});
is(as_alice(q{SET search_path = pg_catalog; SELECT rvbbit.run('} . $echo . q{', '{"text": "worker trap"}')}),
	'"re: worker trap"', 'a call works with the hostile objects in place');
is($node->safe_psql('postgres', q{SELECT count(*) FROM public.pwned WHERE how = 'worker'}), '0',
	'the worker executed none of the user\'s functions or operators');
is(is_super('alice'), 'f', 'alice is not a superuser');
$node->safe_psql('postgres', q{ALTER DATABASE postgres RESET search_path;
  DROP OPERATOR public.= (text, text); DROP OPERATOR public.= (oid, oid);
  DROP FUNCTION public.jsonb_array_elements_text(jsonb)});

# ---- a deferred constraint trigger on a table the job writes
as_alice(q{
  CREATE TABLE public.alice_log (x text);
  CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$
  BEGIN
    INSERT INTO public.pwned VALUES (current_user || '/' || session_user, 'trigger');
    EXECUTE 'ALTER ROLE alice SUPERUSER';
    RETURN NULL;
  END $f$;
  CREATE CONSTRAINT TRIGGER escalate AFTER INSERT ON public.alice_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.escalate();
  CREATE FUNCTION public.touch(t text) RETURNS text LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO public.alice_log VALUES (t); RETURN t; END $f$;
});
my $id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT public.touch('deferred') AS text)\$\$)});
like($id, qr/^\d+$/, 'alice submitted a job whose USING query fires a deferred trigger');
ok(wait_job($id), 'the job ended');
is(job_status($id), 'failed', 'the job failed: the trigger ran at commit without the right to ALTER ROLE');
like($node->safe_psql('postgres', "SELECT error FROM rvbbit.jobs WHERE job_id = $id"),
	qr/permission denied|must be superuser|insufficient privilege/i, 'with a permission error');
is(is_super('alice'), 'f', 'alice is still not a superuser after the deferred trigger');
is($node->safe_psql('postgres', q{SELECT count(*) FROM public.pwned WHERE how = 'trigger'}), '0',
	'the trigger\'s work was rolled back with the job');
as_alice(q{DROP TRIGGER escalate ON public.alice_log});

# ---- an as_table target: a deferred trigger on an event trigger-free path
# (the job's own CREATE TABLE AS, then alice's SECURITY DEFINER trap)
as_alice(q{
  CREATE FUNCTION public.definer_trap(t text) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $f$
  BEGIN
    INSERT INTO public.pwned VALUES (current_user || '/' || session_user, 'definer');
    BEGIN EXECUTE 'ALTER ROLE alice SUPERUSER'; EXCEPTION WHEN insufficient_privilege THEN NULL; END;
    RETURN t;
  END $f$;
});
$id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$MAP '$echo' USING (SELECT public.definer_trap('definer') AS text)
  WITH (async = true, as_table = 'alice_out')\$\$)});
ok(wait_job($id), 'the job calling a SECURITY DEFINER function ended');
is(job_status($id), 'done', 'it is done');
is($node->safe_psql('postgres', q{SELECT who FROM public.pwned WHERE how = 'definer'}), 'alice/alice',
	'inside the job current_user and session_user are alice');
is(is_super('alice'), 'f', 'the SECURITY DEFINER function did not make alice a superuser');
is($node->safe_psql('postgres', q{SELECT tableowner FROM pg_tables WHERE tablename = 'alice_out'}), 'alice',
	'the job\'s as_table belongs to alice');

# ---- session_user inside a job, through the job's result
$id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT session_user::text AS s, current_user::text AS c)\$\$)});
ok(wait_job($id), 'a job reading session_user ended');
like($node->safe_psql('postgres', "SELECT result::text FROM rvbbit.job_results WHERE job_id = $id"),
	qr/\\"c\\":\\"alice\\",\\"s\\":\\"alice\\"/, 'session_user and current_user in the job are alice');

# ---- ALTER ROLE alice SET applies inside alice's jobs
$node->safe_psql('postgres', q{ALTER ROLE alice SET rvbbit.budget_dollars_per_day = 0.000001});
is($node->safe_psql('postgres', 'SHOW rvbbit.budget_dollars_per_day', connstr => $node->connstr('postgres') . ' user=alice'),
	'1e-06', 'a session of alice has the setting');
# (a budget needs the model's price: at $0 the call fits the tiny budget)
$node->safe_psql('postgres', q{INSERT INTO rvbbit.model_prices VALUES ('mock/tap', 0, 0)});
$id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT current_setting('rvbbit.budget_dollars_per_day') AS b, 'never sent' AS text)\$\$)});
ok(wait_job($id), 'a job reading the setting ended');
like($node->safe_psql('postgres', "SELECT result::text FROM rvbbit.job_results WHERE job_id = $id"),
	qr/1e-06/, 'the job sees alice\'s ALTER ROLE ... SET value');
$node->safe_psql('postgres', q{UPDATE rvbbit.model_prices SET input_per_million = 1000000, output_per_million = 1000000 WHERE model = 'mock/tap'});
$id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'over budget' AS text) WITH (on_error = 'fail')\$\$)});
ok(wait_job($id), 'a job of a role with a tiny daily budget ended');
is(job_status($id), 'failed', 'it failed');
like($node->safe_psql('postgres', "SELECT error FROM rvbbit.jobs WHERE job_id = $id"),
	qr/budget/i, "because of alice's ALTER ROLE ... SET rvbbit.budget_dollars_per_day");
$node->safe_psql('postgres', q{ALTER ROLE alice RESET rvbbit.budget_dollars_per_day;
  DELETE FROM rvbbit.model_prices WHERE model = 'mock/tap'});

# ---- pg_cron: a schedule of alice runs as alice
$node->safe_psql('postgres', q{GRANT SELECT ON public.pwned TO alice;
  CREATE TABLE public.cron_who (who text); GRANT INSERT, SELECT ON public.cron_who TO alice});
as_alice(q{CREATE FUNCTION public.cron_mark(t text) RETURNS text LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO public.cron_who VALUES (session_user || '/' || current_user); RETURN t; END $f$});
my $cmd = qq{SELECT * FROM rvbbit.sql(\$\$MAP '$echo' USING (SELECT public.cron_mark('cron ' || n) AS text FROM generate_series(1, 2) n) WITH (as_table = 'alice_cron')\$\$)};
as_alice(qq{SELECT cron.schedule('alice-rvbbit', '* * * * *', \$cron\$$cmd\$cron\$)});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	   WHERE j.jobname = 'alice-rvbbit' AND d.status IN ('succeeded', 'failed')}),
	'pg_cron ran alice\'s scheduled statement');
as_alice(q{SELECT cron.unschedule('alice-rvbbit')});
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT who, ',') FROM public.cron_who}), 'alice/alice',
	'the scheduled statement ran as alice');
is($node->safe_psql('postgres', q{SELECT tableowner FROM pg_tables WHERE tablename = 'alice_cron'}), 'alice',
	'its as_table belongs to alice');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT role::text, ',') FROM rvbbit.calls WHERE cascade = 'inline' AND statement_id IN
    (SELECT statement_id FROM rvbbit.calls c WHERE c.called_at > now() - interval '10 minutes') AND role::text = 'alice'}), 'alice',
	'its calls are recorded for alice');

# ---- rvbbit._progress() and rvbbit.progress: bob does not see alice's
# statement.  The mock holds its reply, so the job is still running while
# the test looks, however slow the machine.
$id = as_alice(qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT '[[hold:progress]] slow' AS text)\$\$)});
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), "alice's job has its request held by the mock");
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit._progress() WHERE role_oid = 'alice'::regrole}), '1',
	'alice\'s job shows in rvbbit._progress() for a superuser');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) FROM rvbbit._progress()}), '0',
	'bob sees nothing of it in rvbbit._progress()');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) FROM rvbbit.progress}), '0',
	'nor in rvbbit.progress');
is($node->safe_psql('postgres', q{SET ROLE alice; SELECT count(*) FROM rvbbit._progress()}), '1',
	'alice sees her own');
mock_release($mock, 'progress');
ok(wait_job($id), 'the slow job ended');
is(job_status($id), 'done', 'and is done once its reply is released');

# ---- a role dropped before its job runs fails the job cleanly
$id = $node->safe_psql('postgres', q{BEGIN;
  CREATE ROLE ghost LOGIN; GRANT rvbbit_user TO ghost;
  SET ROLE ghost;
  SELECT * FROM rvbbit.sql($$RUN ASYNC '} . $summ . q{' USING (SELECT 'ghost' AS text)$$);
  RESET ROLE;
  DROP ROLE ghost;
  COMMIT;});
like($id, qr/^\d+$/, 'a job of a role dropped in the submitting transaction');
ok(wait_until(sub { $node->safe_psql('postgres', "SELECT status FROM rvbbit.job_log WHERE id = $id") eq 'failed' }),
	'the job failed');
is($node->safe_psql('postgres', "SELECT error FROM rvbbit.job_log WHERE id = $id"),
	'the role that submitted the job no longer exists', 'with a clear error');

# ---- a role that cannot log in: SET ROLE to it, then RUN ASYNC, works on
# every version (the runner connects as the session user, which can log
# in).  Before PostgreSQL 17 a session user without LOGIN (SET SESSION
# AUTHORIZATION) cannot submit a job: no runner could connect as it.
$node->safe_psql('postgres', q{CREATE ROLE nologin_role NOLOGIN; GRANT rvbbit_user TO nologin_role});
($ret, $out, $err) = $node->psql('postgres',
	qq{SET ROLE nologin_role; SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 1 AS x)\$\$)});
$out = (split /\n/, $out)[-1] // '';
like($out, qr/^\d+$/, 'SET ROLE to a NOLOGIN role, then a job is submitted');
ok(wait_until(sub { $node->safe_psql('postgres', "SELECT status FROM rvbbit.job_log WHERE id = " . ($out =~ /^(\d+)$/ ? $1 : 0)) eq 'done' }),
	'and its job runs to the end');
is($node->safe_psql('postgres', "SELECT role_oid::regrole FROM rvbbit.job_log WHERE id = " . ($out =~ /^(\d+)$/ ? $1 : 0)),
	'nologin_role', 'as that role\'s job');
($ret, $out, $err) = $node->psql('postgres',
	qq{SET SESSION AUTHORIZATION nologin_role; SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 1 AS x)\$\$)});
if ($node->safe_psql('postgres', 'SHOW server_version_num') < 170000) {
	like($err, qr/role "nologin_role" cannot submit jobs because it cannot log in/,
		'a session user without LOGIN is refused at submission with a clear error');
} else {
	$out = (split /\n/, $out)[-1] // '';
	ok(wait_until(sub { $node->safe_psql('postgres', "SELECT status FROM rvbbit.job_log WHERE id = " . ($out =~ /^(\d+)$/ ? $1 : 0)) eq 'done' }),
		'a session user without LOGIN submits a job that runs to the end');
}

# ---- keys: environment, provider table, GUC; never in logs, errors, calls
($ret, $out, $err) = $node->psql('postgres',
	qq{SET ROLE alice; SELECT rvbbit.run('$echo', '{"text": "[[fault:echoheaders]] env key"}')});
like($err, qr/Provider said: .*authorization: Bearer \*{8}/i, 'the env-var key is masked in the client error');
unlike($err, qr/\Q$env_key\E/, 'the client error does not contain the env-var key');

$node->safe_psql('postgres', qq{INSERT INTO rvbbit.providers (prefix, api_base, api_key)
  VALUES ('keyed', 'http://127.0.0.1:$mock->{port}/v1', '$prov_key')});
($ret, $out, $err) = $node->psql('postgres',
	qq{SET ROLE alice; SELECT rvbbit.run('$echo', '{"text": "[[fault:echoheaders]] provider key"}', '{"model": "keyed:m"}')});
like($err, qr/authorization: Bearer \*{8}/i, 'the provider key is masked in the client error');
unlike($err, qr/\Q$prov_key\E/, 'the client error does not contain the provider key');

# a key written without naming the column
$node->safe_psql('postgres', q{INSERT INTO rvbbit.providers VALUES ('unnamed', 'http://127.0.0.1:9/v1', 'openai', 'sk-tap-unnamed-column-5555')});
$node->safe_psql('postgres', qq{ALTER SYSTEM SET rvbbit.api_key = '$guc_key'; SELECT pg_reload_conf()});
ok(wait_until(sub { $node->safe_psql('postgres', q{SHOW rvbbit.api_key}) eq '(set)' }), 'the GUC key is set');
($ret, $out, $err) = $node->psql('postgres',
	qq{SET ROLE alice; SELECT rvbbit.run('$echo', '{"text": "[[fault:echoheaders]] guc key"}')});
like($err, qr/authorization: Bearer \*{8}/i, 'the GUC key is masked in the client error');
unlike($err, qr/\Q$guc_key\E/, 'the client error does not contain the GUC key');
($ret, $out, $err) = $node->psql('postgres', qq{SET ROLE bob; SET rvbbit.api_key = 'sk-bob-tries-9999'});
like($err, qr/permission denied to set parameter "rvbbit\.api_key"$/m,
	'a client error mentioning api_key reaches the client unchanged');

my $calls = $node->safe_psql('postgres', q{SELECT string_agg(coalesce(error, ''), ' | ') FROM rvbbit.call_log});
like($calls, qr/Bearer \*{8}/, 'rvbbit.calls keeps the provider error, masked');
my $all_calls = $node->safe_psql('postgres', q{SELECT string_agg(row(call_log.*)::text, E'\n') FROM rvbbit.call_log});
for my $k ($env_key, $prov_key, $guc_key)
{
	unlike($all_calls, qr/\Q$k\E/, "rvbbit.calls holds no trace of key $k");
}
$node->safe_psql('postgres', q{ALTER SYSTEM RESET rvbbit.api_key; SELECT pg_reload_conf()});
my $log = slurp_file($node->logfile);
for my $k ($env_key, $prov_key, $guc_key, 'sk-bob-tries-9999', 'sk-tap-unnamed-column-5555')
{
	unlike($log, qr/\Q$k\E/, "the server log does not contain $k");
}
like($log, qr/rvbbit\.api_key \.\.\. \(hidden by rvbbit\)/, 'the server log has the cut copy of the api_key message');

$node->stop;
stop_mock($mock);
done_testing();
