# rvbbit.max_job_runners and rvbbit.max_job_runners_per_role: one role
# cannot fill every background worker slot with job runners.  A job over
# a cap stays queued (the submission succeeds with a NOTICE) and starts
# when a runner ends; nothing is lost or run twice.  The mock holds the
# jobs' requests, so what runs is what the test looks at, however slow
# the machine.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('job_caps', $mock,
	"rvbbit.max_job_runners = 2\nrvbbit.max_job_runners_per_role = 1\n");
my $summ = q{cells: [{name: s, instructions: "{{ rows | tojson }}"}]};
my $echo = inline_echo();
$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN; CREATE ROLE alice LOGIN; CREATE ROLE carol LOGIN;
GRANT rvbbit_user TO mallory, alice, carol;
INSERT INTO rvbbit.model_prices VALUES ('mock/tap', 1, 1);
});

sub submit
{
	my ($role, $hold, $text) = @_;
	my ($rc, $out, $err) = psql_as($node, $role,
		qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT '[[hold:$hold]] $text' AS text) WITH (cache = false)\$\$)});
	die "submit failed: $err" unless $rc == 0 && $out =~ /^\d+$/;
	return ($out, $err);
}

sub status_counts
{
	my ($role) = @_;
	return $node->safe_psql('postgres', qq{SELECT coalesce(string_agg(status || '=' || n, ' ' ORDER BY status), '')
	  FROM (SELECT status, count(*) n FROM rvbbit.job_log WHERE role_oid = '$role'::regrole GROUP BY status) s});
}

# four jobs of mallory: one runs, three wait
my @ids;
my @notices;
for my $i (1 .. 4)
{
	my ($id, $err) = submit('mallory', 'mal', "mallory $i");
	push @ids, $id;
	push @notices, $err;
}
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 1 }), 'one request of mallory is held');
ok(wait_until(sub { status_counts('mallory') eq 'queued=3 running=1' }), 'one job of mallory runs, three are queued')
  or diag(status_counts('mallory'));
unlike($notices[0], qr/queued until/, 'the first job started at once');
like($notices[$_], qr/NOTICE:  job $ids[$_] is queued until a job runner is free/, "job $_ got the waiting notice")
  for (1 .. 3);
is(scalar(grep { /rvbbit job runner/ } split /\n/, $node->safe_psql('postgres',
	q{SELECT backend_type FROM pg_stat_activity WHERE backend_type = 'rvbbit job runner'})), 1,
	'one job runner process exists');

# another role's job still runs
my ($aid) = submit('alice', 'ali', 'alice 1');
ok(wait_until(sub { mock_get($mock, '/stats')->{held} == 2 }), 'alice\'s request is held too');
ok(wait_until(sub { status_counts('alice') eq 'running=1' }), 'alice\'s job runs beside mallory\'s');

# the global cap: carol's job waits too
my ($cid, $cerr) = submit('carol', 'car', 'carol 1');
like($cerr, qr/queued until a job runner is free/, 'with two runners a third role\'s job waits');
is(status_counts('carol'), 'queued=1', 'carol\'s job is queued');

# rvbbit.run in another database still works while jobs are capped
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION rvbbit');
is($node->safe_psql('other', qq{SELECT rvbbit.run('$echo', '{"text": "elsewhere"}')}), '"re: elsewhere"',
	'rvbbit.run in another database works while the job runners are capped');
# and a job of that database waits for the same caps, then runs
my $oid = $node->safe_psql('other',
	qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT '[[hold:oth]] other db' AS text) WITH (cache = false)\$\$)});
is($node->safe_psql('other', "SELECT status FROM rvbbit.job_log WHERE id = $oid"), 'queued',
	'a job of another database is queued under the same caps');

# release everything: all finish done, each paid once
mock_release($mock, 'mal');
mock_release($mock, 'ali');
mock_release($mock, 'car');
mock_release($mock, 'oth');
ok(wait_until(sub { status_counts('mallory') eq 'done=4' }), 'all four jobs of mallory are done')
  or diag(status_counts('mallory'));
ok(wait_until(sub { status_counts('alice') eq 'done=1' && status_counts('carol') eq 'done=1' }),
	'alice\'s and carol\'s jobs are done');
ok(wait_until(sub { $node->safe_psql('other', "SELECT status FROM rvbbit.job_log WHERE id = $oid") eq 'done' }),
	'the job of the other database is done');
is($node->safe_psql('postgres', q{SELECT string_agg(attempts::text, ',' ORDER BY id) FROM rvbbit.job_log}),
	'1,1,1,1,1,1', 'each job was started once');
my @prompts = map { $_->{prompt} } @{ mock_requests($mock) };
for my $t ('mallory 1', 'mallory 2', 'mallory 3', 'mallory 4', 'alice 1', 'carol 1', 'other db')
{
	is(scalar(grep { /\Q$t\E/ } @prompts), 1, "the request of '$t' was sent once");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.call_log}), '6', 'six calls recorded (each paid once)');

$node->stop;
stop_mock($mock);
done_testing();
