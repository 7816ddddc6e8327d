# The daily budget holds for async jobs: a job runs for its submitting
# role, so its calls count against that role's budget; a job of a role
# over budget fails with the budget reason without sending a call;
# concurrent jobs of one role stay within its budget together.
#
# The budget here is set for every role in postgresql.conf, which is in
# force in the job runner whatever role it connects as; ALTER ROLE ... SET
# inside jobs depends on the runner connecting as the role (issue 8 item 1).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('budget_jobs', $mock, "rvbbit.budget_dollars_per_day = 2\n");
my $cascade = q{cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]};
$node->safe_psql('postgres', q{
INSERT INTO rvbbit.model_prices VALUES ('job/model', 10000, 10000);
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
GRANT rvbbit_user TO alice, bob, carol;
GRANT CREATE ON SCHEMA public TO alice, bob, carol;
});

sub as_role { return psql_as($node, @_) }

sub submit
{
	my ($role, $table, $from, $to) = @_;
	my ($rc, $id, $err) = as_role($role, qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 20 '$cascade'
	  USING (SELECT n, '[[latency:50]] j ' || n AS text FROM generate_series($from, $to) n)
	  WITH (async = true, as_table = '$table', model = 'job/model', cache = false)\$\$)});
	die "submit failed: $err" unless $id =~ /^\d+$/;
	return $id;
}

sub wait_final
{
	my ($id) = @_;
	return wait_until(sub {
		$node->safe_psql('postgres', "SELECT status FROM rvbbit.job_log WHERE id = $id") =~ /^(done|failed|cancelled)$/;
	});
}

sub job
{
	my ($id, $what) = @_;
	return $node->safe_psql('postgres', "SELECT $what FROM rvbbit.job_log WHERE id = $id");
}

sub spent
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT coalesce(sum(cost), 0) FROM rvbbit.calls WHERE role::text = '$role'});
}

# a job within the budget completes, and its calls are the role's
my $id = submit('bob', 'bob_rows', 1, 5);
ok(wait_final($id), 'bob\'s job finished');
is(job($id, 'status'), 'done', 'a job within the budget is done');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'bob'}), '5',
	'its calls are recorded for bob');

# alice spends her day in a session (one call at a time, so that nothing
# is reserved when she is refused), then her job is refused
my ($rc, $o, $e) = as_role('alice', qq{SELECT count(result) FROM rvbbit.map('$cascade',
  \$\$SELECT n, 'spend ' || n AS text FROM generate_series(1, 60) n\$\$, 1,
  '{"model": "job/model", "cache": false}') AS t(n int, text text, result jsonb)});
like($e, qr/daily budget of \$2\.0000 for role "alice" reached/, 'alice reached her budget in a session');
mock_post($mock, '/reset');
$id = submit('alice', 'alice_rows', 1, 20);
ok(wait_final($id), 'alice\'s job finished');
is(job($id, 'status'), 'failed', 'the job of a role over budget fails');
like(job($id, 'error'), qr/daily budget of \$2\.0000 for role "alice" reached/, 'with the budget reason');
is(mock_get($mock, '/stats')->{requests}, 0, 'and sent no request');
ok(spent('alice') <= 2.0 + 1e-9, 'alice stayed within her budget');

# three jobs of carol at once: together within her budget
mock_post($mock, '/reset');
my @ids = map { submit('carol', "carol_$_", $_ * 100, $_ * 100 + 39) } (1 .. 3);
ok(wait_final($_), "carol's job $_ finished") for @ids;
my @status = map { job($_, 'status') } @ids;
ok((grep { $_ eq 'failed' } @status) >= 1, 'at least one of carol\'s jobs hit the budget: ' . join(',', @status));
like(join("\n", map { job($_, "coalesce(error, '')") } @ids), qr/daily budget of \$2\.0000 for role "carol" reached/,
	'with the budget reason');
my $carol = spent('carol');
diag("carol: \$$carol");
ok($carol <= 2.0 + 1e-9, 'the jobs together stayed within the budget');
is(mock_get($mock, '/stats')->{requests},
	$node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE role::text = 'carol'}),
	'every request the mock saw is recorded for carol');

# a database still at 0.1 (no budget_role_oid column yet): the budget
# still applies and calls are still recorded, then survive the update
$node->safe_psql('postgres', 'CREATE DATABASE old01');
$node->safe_psql('old01', q{CREATE EXTENSION rvbbit VERSION '0.1';
INSERT INTO rvbbit.model_prices VALUES ('job/model', 10000, 10000)});
is($node->safe_psql('old01', qq{SELECT rvbbit.run('$cascade', '{"text": "old"}', '{"model": "job/model", "cache": false}')}),
	'"re: old"', 'a call with a budget works in a database at 0.1');
ok(wait_until(sub { $node->safe_psql('old01', 'SELECT count(*) FROM rvbbit.call_log') eq '1' }),
	'and is recorded in its call log');
$node->safe_psql('old01', 'ALTER EXTENSION rvbbit UPDATE');
is($node->safe_psql('old01', 'SELECT count(*), count(budget_role_oid) FROM rvbbit.call_log'), '1|0',
	'the update keeps the call (without a budget role)');
$node->safe_psql('old01', qq{SELECT rvbbit.run('$cascade', '{"text": "new"}', '{"model": "job/model", "cache": false}')});
ok(wait_until(sub { $node->safe_psql('old01', q{SELECT count(*) FROM rvbbit.call_log WHERE budget_role_oid = 'postgres'::regrole}) eq '1' }),
	'after the update calls record the role whose budget they count against');

$node->stop;
stop_mock($mock);
done_testing();
