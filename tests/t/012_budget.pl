# The daily budget (rvbbit.budget_dollars_per_day) under attack: 10
# concurrent sessions at PARALLEL 20 stay within it; calls deferred by
# rvbbit.max_concurrency or a rate limit hold no reservation; a worker that
# exits mid-call releases what it reserved; the spend survives a crash
# restart; more roles than rvbbit.max_budget_roles are refused (fail
# closed); a user can neither lift the budget nor get a second one by SET
# ROLE or a SECURITY DEFINER function.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('budget', $mock,
	"rvbbit.max_budget_roles = 4\nrvbbit.workers_per_database = 4\n");
my $psql = $node->config_data('--bindir') . '/psql';

# $0.01 per token; a call of "d N" costs about $0.05..0.10, and its
# estimate (request length / 4 in, max_tokens 5 out) is never below it
my $cascade = q{cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]};
$node->safe_psql('postgres', qq{
INSERT INTO rvbbit.model_prices VALUES ('day/model', 10000, 10000);
CREATE ROLE team;
GRANT rvbbit_user TO team;
CREATE ROLE alice LOGIN IN ROLE team;
CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN; CREATE ROLE frank LOGIN;
CREATE ROLE dave LOGIN; CREATE ROLE erin LOGIN;
GRANT rvbbit_user TO alice, bob, carol, frank, dave, erin;
ALTER ROLE alice SET rvbbit.budget_dollars_per_day = 3;
ALTER ROLE bob SET rvbbit.budget_dollars_per_day = 20;
ALTER ROLE carol SET rvbbit.budget_dollars_per_day = 20;
ALTER ROLE frank SET rvbbit.budget_dollars_per_day = 1;
ALTER ROLE dave SET rvbbit.budget_dollars_per_day = 5;
});

sub as_role { return psql_as($node, @_) }

sub map_sql
{
	my ($parallel, $from, $to, $extra) = @_;
	$extra //= '';
	return qq{SELECT count(result) FROM rvbbit.map('$cascade',
	  \$\$SELECT n, '$extra d ' || n AS text FROM generate_series($from, $to) n\$\$,
	  $parallel, '{"model": "day/model", "cache": false}') AS t(n int, text text, result jsonb)};
}

# --- 10 sessions at once, PARALLEL 20, $3 a day: the total stays within
mock_post($mock, '/reset');
my @h;
my @out;
my @err;
for my $i (0 .. 9)
{
	my $sql = map_sql(20, $i * 100, $i * 100 + 39, '[[latency:100]]');
	($out[$i], $err[$i]) = ('', '');
	push @h, IPC::Run::start([ $psql, '-X', '-A', '-t',
		'-d', $node->connstr('postgres') . ' user=alice', '-c', $sql ],
		'>', \$out[$i], '2>', \$err[$i]);
}
$_->finish for @h;
my $refused = grep { /daily budget of \$3\.0000 for role "alice" reached/ } @err;
ok($refused >= 1, "sessions were stopped by the daily budget ($refused of 10)");
my ($calls, $spent) = split /\|/, $node->safe_psql('postgres',
	q{SELECT count(*), sum(cost) FROM rvbbit.calls WHERE role::text = 'alice'});
diag("alice: $calls calls, \$$spent");
ok($calls > 0, 'some calls were made');
ok($spent <= 3.0 + 1e-9, 'the total spend is within the budget (estimates at or above the cost: no overshoot)');
is(mock_get($mock, '/stats')->{requests}, $calls, 'every request the mock saw is recorded');

# --- SET ROLE and SECURITY DEFINER do not give alice a second budget
my ($rc, $o, $e) = as_role('alice', 'SET ROLE team; ' . map_sql(20, 5000, 5039));
like($e, qr/daily budget of \$3\.0000 for role "alice" reached/, 'SET ROLE keeps the session user\'s budget');
my $sql = map_sql(20, 6000, 6039);
$node->safe_psql('postgres', qq{
CREATE FUNCTION public.spend_as_owner() RETURNS bigint LANGUAGE sql SECURITY DEFINER
  AS \$f\$ $sql \$f\$;
ALTER FUNCTION public.spend_as_owner() OWNER TO team;
});
($rc, $o, $e) = as_role('alice', 'SELECT public.spend_as_owner()');
like($e, qr/daily budget of \$3\.0000 for role "alice" reached/, 'a SECURITY DEFINER function keeps the caller\'s budget');
my $total = $node->safe_psql('postgres',
	q{SELECT sum(cost) FROM rvbbit.calls WHERE role::text IN ('alice', 'team')});
diag("alice and team: \$$total");
ok($total <= 3.0 + 1e-9, 'calls as team count against alice\'s budget: the total stays within $3');

# --- alice cannot lift or raise her budget
for my $try (
	'SET rvbbit.budget_dollars_per_day = 1000',
	'SET rvbbit.budget_dollars_per_day = 0',
	'RESET rvbbit.budget_dollars_per_day',
	q{SELECT set_config('rvbbit.budget_dollars_per_day', '0', false)},
	'BEGIN; SET LOCAL rvbbit.budget_dollars_per_day = 0; COMMIT',
	'ALTER ROLE alice SET rvbbit.budget_dollars_per_day = 0',
	'ALTER ROLE alice RESET rvbbit.budget_dollars_per_day',
	q{CREATE FUNCTION public.lift() RETURNS void LANGUAGE sql SET rvbbit.budget_dollars_per_day = 0 AS 'SELECT'})
{
	($rc, $o, $e) = as_role('alice', $try);
	like($e, qr/permission denied/, "refused: $try");
}
{
	local $ENV{PGOPTIONS} = '-c rvbbit.budget_dollars_per_day=0';
	($rc, $o, $e) = as_role('alice', 'SELECT 1');
	like($e, qr/permission denied/, 'refused: the budget as a connection option');
}
is($node->safe_psql('postgres', q{SELECT setconfig::text FROM pg_db_role_setting WHERE setrole = 'alice'::regrole}),
	'{rvbbit.budget_dollars_per_day=3}', 'alice\'s setting is unchanged');

# --- deferred by max_concurrency: no reservation is held while waiting
ok(set_server_conf($node, 'rvbbit.max_concurrency', '1'), 'rvbbit.max_concurrency = 1 is in effect');
mock_post($mock, '/reset');
($rc, $o, $e) = as_role('bob', map_sql(20, 1, 40, '[[latency:50]]'));
is($o, '40', 'bob: 40 calls deferred by max_concurrency = 1 all ran within $20') or diag($e);
ok(mock_get($mock, '/stats')->{max_in_flight} <= 1, 'max_concurrency held');
($rc, $o, $e) = as_role('bob', qq{SELECT rvbbit.run('$cascade', '{"text": "still fits"}', '{"model": "day/model", "cache": false}')});
is($o, '"re: still fits"', 'a call that fits still runs after the deferred ones') or diag($e);
ok(set_server_conf($node, 'rvbbit.max_concurrency', undef), 'rvbbit.max_concurrency reset');

# --- deferred by a rate limit: the same
ok(set_server_conf($node, 'rvbbit.requests_per_minute', '600'), 'rvbbit.requests_per_minute = 600 is in effect');
($rc, $o, $e) = as_role('carol', map_sql(20, 1, 30));
is($o, '30', 'carol: 30 calls held back by the rate limit all ran within $20') or diag($e);
($rc, $o, $e) = as_role('carol', qq{SELECT rvbbit.run('$cascade', '{"text": "fits too"}', '{"model": "day/model", "cache": false}')});
is($o, '"re: fits too"', 'a call that fits still runs after the rate-limited ones') or diag($e);
ok(set_server_conf($node, 'rvbbit.requests_per_minute', undef), 'rvbbit.requests_per_minute reset');

# --- a worker that exits with calls in flight releases their reservations
mock_post($mock, '/reset');
my $bg = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'frank' ]);
$bg->query_until(qr/^$/, map_sql(20, 1, 20, '[[fault:timeout]]') . ";\n");
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} >= 2 }), 'frank\'s calls are in flight, holding his budget');
my $before = mock_get($mock, '/stats')->{in_flight};
ok($before < 20, "the budget let only $before of 20 calls go");
$node->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 0 }), 'the worker is gone');
$bg->quit;
($rc, $o, $e) = as_role('frank', qq{SELECT rvbbit.run('$cascade', '{"text": "after exit"}', '{"model": "day/model", "cache": false}')});
is($o, '"re: after exit"', 'the exited worker released frank\'s reservations') or diag($e);

# --- more roles with a budget than the table holds: refused, not unlimited
($rc, $o, $e) = as_role('dave', qq{SELECT rvbbit.run('$cascade', '{"text": "dave"}', '{"model": "day/model", "cache": false}')});
like($e, qr/too many roles have a daily budget in use to track the budget of role "dave"/, 'the fifth role is refused');
like($e, qr/HINT:  Raise rvbbit.max_budget_roles/, 'the hint names the GUC');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'dave'}), '0', 'no call was sent for dave');
($rc, $o, $e) = as_role('erin', qq{SELECT rvbbit.run('$cascade', '{"text": "no budget"}', '{"model": "day/model", "cache": false}')});
is($o, '"re: no budget"', 'a role without a budget is not affected') or diag($e);

# --- a statement's budget_dollars at PARALLEL 1000 (erin has no daily budget)
$node->safe_psql('postgres', q{INSERT INTO rvbbit.model_prices VALUES ('wide/model', 10000, 10000)});
mock_post($mock, '/reset');
($rc, $o, $e) = as_role('erin', qq{SELECT count(result) FROM rvbbit.map('$cascade',
  \$\$SELECT n, '[[latency:20]] w ' || n AS text FROM generate_series(1, 3000) n\$\$,
  1000, '{"model": "wide/model", "cache": false, "budget_dollars": 5}') AS t(n int, text text, result jsonb)});
like($e, qr/budget of \$5\.0000 of the statement reached/, 'PARALLEL 1000 stops at the statement budget');
my ($wcalls, $wspent) = split /\|/, $node->safe_psql('postgres',
	q{SELECT count(*), sum(cost) FROM rvbbit.calls WHERE model = 'wide/model'});
diag("PARALLEL 1000: $wcalls calls, \$$wspent");
ok($wcalls > 0 && $wcalls < 3000, 'some calls were made, not all');
ok($wspent <= 5.0 + 1e-9, 'the spend is within budget_dollars at PARALLEL 1000');
is(mock_get($mock, '/stats')->{requests}, $wcalls, 'every request is recorded');

# --- a crash restart: the day's spend is read back from the call log
my $wpid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker' LIMIT 1});
if ($wpid eq '')
{
	as_role('erin', qq{SELECT rvbbit.run('$cascade', '{"text": "wake"}', '{"model": "day/model", "cache": false}')});
	$wpid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker' LIMIT 1});
}
kill 'KILL', $wpid;
ok(wait_until(sub { my ($r) = as_role('erin', 'SELECT 1'); $r == 0 }), 'the server restarted after the crash');
($rc, $o, $e) = as_role('alice', 'SET ROLE team; ' . map_sql(20, 7000, 7039));
like($e, qr/daily budget of \$3\.0000 for role "alice" reached/, 'after a crash alice is still held to her budget');
$total = $node->safe_psql('postgres',
	q{SELECT sum(cost) FROM rvbbit.calls WHERE role::text IN ('alice', 'team')});
ok($total <= 3.0 + 1e-9, "after a crash the spend read back from the call log includes the calls as team (\$$total)");

$node->stop;
stop_mock($mock);
done_testing();
