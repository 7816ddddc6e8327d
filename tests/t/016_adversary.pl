# A hostile rvbbit_user against budgets and other roles (findings of the
# adversarial review):
# - a request that was sent but never answered (timed out by the `timeout`
#   option, or abandoned by a cancel) is charged at its expected cost, so
#   timing out or cancelling calls cannot spend past a daily budget;
# - the circuit breaker is per role: one role's stalls (with its own tiny
#   rvbbit.stall_timeout) do not fail another role's rows;
# - spend made while a role had no budget counts once a budget is set
#   later the same day.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# one worker: every statement of the database shares it (and its breakers)
my $node = new_rv_node('adversary', $mock, "rvbbit.workers_per_database = 1\n");

# $0.001 per token: a call's estimate is about $0.07
my $cascade = q{cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]};
$node->safe_psql('postgres', qq{
INSERT INTO rvbbit.model_prices VALUES ('adv/model', 1000, 1000), ('big/model', 100000, 100000);
CREATE ROLE tina LOGIN; CREATE ROLE cora LOGIN; CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN; CREATE ROLE una LOGIN;
GRANT rvbbit_user TO tina, cora, alice, bob, una;
ALTER ROLE tina SET rvbbit.budget_dollars_per_day = 1;
ALTER ROLE cora SET rvbbit.budget_dollars_per_day = 100;
ALTER ROLE una SET rvbbit.budget_dollars_per_day = 1;
});

sub as_role { return psql_as($node, @_) }

sub map_sql
{
	my ($parallel, $n, $prefix, $opts) = @_;
	$opts //= '';
	return qq{SELECT count(result) FROM rvbbit.map('$cascade',
	  \$\$SELECT n, '$prefix ' || n AS text FROM generate_series(1, $n) n\$\$,
	  $parallel, '{"cache": false, "model": "adv/model" $opts}') AS t(n int, text text, result jsonb)};
}

sub spent
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT coalesce(sum(cost), 0) FROM rvbbit.calls WHERE role::text = '$role'});
}

# --- timed-out calls are charged: 40 held requests, each given up after
# 200 ms, stop at the $1 budget instead of costing nothing
my ($rc, $o, $e) = as_role('tina', map_sql(1, 40, '[[hold:tina]] t', ', "timeout": 200, "max_retries": 0'));
like($e, qr/daily budget of \$1\.0000 for role "tina" reached/, 'timed-out calls use up the daily budget');
my $sent = scalar grep { $_->{prompt} =~ /^\[\[hold:tina\]\]/ } @{ mock_requests($mock) };
ok($sent > 0 && $sent < 40, "only $sent of 40 timed-out requests were sent");
my $tspent = spent('tina');
ok($tspent > 0 && $tspent <= 1.0 + 1e-9, "the timed-out calls were charged \$$tspent, within \$1");
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'tina' AND status = 'error' AND cost > 0}),
	$sent, 'each timed-out request is recorded with its charge');

# --- calls abandoned by a cancel are charged and recorded
my $bg = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'cora' ]);
$bg->query_until(qr/^$/, map_sql(3, 3, '[[hold:cora]] c') . ";\n");
ok(wait_until(sub { mock_get($mock, '/stats')->{held} >= 3 }), "cora's 3 calls are in flight");
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'cora' AND state = 'active'});
ok(wait_until(sub {
	$node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'cora'}) >= 3 }),
	'the abandoned calls are recorded');
$bg->quit;
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'cora'
  AND status = 'error' AND cost > 0 AND error = 'the statement ended while the request was in flight'}),
	'3', 'each abandoned call is charged its expected cost');

# --- the same without any budget: the calls are still charged their expected
# cost and recorded (they count towards the role's day), so a daily budget
# set later that day sees them
$node->safe_psql('postgres', 'CREATE ROLE nora LOGIN; GRANT rvbbit_user TO nora');
($rc, $o, $e) = as_role('nora', map_sql(2, 2, '[[hold:nora]] t', ', "timeout": 200, "max_retries": 0'));
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'nora' AND status = 'error' AND cost > 0}),
	'2', 'without a budget, timed-out calls are recorded at their expected cost');
$bg = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'nora' ]);
$bg->query_until(qr/^$/, map_sql(3, 3, '[[hold:nora2]] c') . ";\n");
ok(wait_until(sub { mock_get($mock, '/stats')->{held} >= 3 }), "nora's 3 calls are in flight");
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'nora' AND state = 'active'});
ok(wait_until(sub {
	$node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'nora'
	  AND error = 'the statement ended while the request was in flight'}) >= 3 }),
	'without a budget, calls abandoned by a cancel are recorded');
$bg->quit;
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'nora'
  AND error = 'the statement ended while the request was in flight' AND cost > 0}),
	'3', '... each at its expected cost');
my $nspent = spent('nora');
$node->safe_psql('postgres', sprintf(q{ALTER ROLE nora SET rvbbit.budget_dollars_per_day = %.6f}, $nspent * 0.9));
($rc, $o, $e) = as_role('nora', qq{SELECT rvbbit.run('$cascade', '{"text": "nora after"}', '{"model": "adv/model", "cache": false}')});
like($e, qr/daily budget of \$[0-9.]+ for role "nora" reached/,
	"a daily budget set later counts the unanswered calls made without one (\$$nspent)");

# --- the breaker is per role: bob's stalls do not fail alice's rows
my $pos = log_position($node);
($rc, $o, $e) = as_role('bob', "SET rvbbit.stall_timeout = '1s'; "
	  . map_sql(3, 3, '[[hold:bob]] b', ', "max_retries": 0'));
like($e, qr/could not be answered|not reachable|sent nothing/, "bob's rows stalled") or diag($e);
ok(wait_for_log($node, qr/LLM provider at \S+ is not reachable; not sending to it/, $pos),
	"bob's stalls opened his breaker");
($rc, $o, $e) = as_role('alice', qq{SELECT rvbbit.run('$cascade', '{"text": "alice after bob"}', '{"cache": false}')});
is($o, '"re: alice after bob"', "alice's call is sent while bob's breaker is open") or diag($e);

# --- spend made without a budget counts when a budget is set later that day
($rc, $o, $e) = as_role('una', map_sql(1, 1, 'u0'));
is($o, '1', 'una calls with a $1 budget (her budget entry is loaded)') or diag($e);
$node->safe_psql('postgres', 'ALTER ROLE una RESET rvbbit.budget_dollars_per_day');
($rc, $o, $e) = as_role('una', map_sql(5, 10, 'u', ', "model": "big/model"'));
is($o, '10', 'una spends more than $1 without a budget') or diag($e);
ok(spent('una') > 1, 'una spent more than $1 today');
$node->safe_psql('postgres', 'ALTER ROLE una SET rvbbit.budget_dollars_per_day = 1');
($rc, $o, $e) = as_role('una', qq{SELECT rvbbit.run('$cascade', '{"text": "una again"}', '{"model": "adv/model", "cache": false}')});
like($e, qr/daily budget of \$1\.0000 for role "una" reached/, 'the budget set later counts what una spent before');

mock_release($mock);
$node->stop;
done_testing();
