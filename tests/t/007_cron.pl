# Scheduling with pg_cron: a MAP statement with as_table, scheduled with
# cron.schedule(), fills its table when the schedule fires.  pg_cron must
# be installed (tests/scripts/deps.sh installs postgresql-15-cron); when it
# is missing this test fails rather than skips.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = new_rv_node('cron', $mock, qq{shared_preload_libraries = 'rvbbit,pg_cron'
cron.database_name = 'postgres'
});
# pg_cron runs its jobs over libpq; the test node listens on a Unix socket only
$node->append_conf('postgresql.conf', "cron.host = '" . $node->host . "'\n");
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
like($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'}),
	qr/^\d+\.\d+/, 'pg_cron is installed next to rvbbit');

# the mock replies exactly what [[reply:...]] says
$node->safe_psql('postgres', q{CREATE TABLE products AS
  SELECT * FROM (VALUES (1, '[[reply:{"brand": "Apple"}]] Apple iPhone 15 Pro'),
                        (2, '[[reply:{"brand": "Lego"}]] Lego Technic 42115'),
                        (3, '[[reply:{"brand": "Sony"}]] Sony WH-1000XM5 headphones'))
    AS t(id, product_name)});

my $command = q{SELECT * FROM rvbbit.sql($$MAP 'extract_brand' AS (brand text)
  USING (SELECT id, product_name FROM products ORDER BY id)
  WITH (as_table = 'cron_brands')$$)};
# pg_cron 1.4 schedules by the minute (second intervals came in 1.5)
my $jobid = $node->safe_psql('postgres',
	qq{SELECT cron.schedule('rvbbit-brands', '* * * * *', \$cron\$$command\$cron\$)});
like($jobid, qr/^\d+$/, 'the MAP statement is scheduled');

ok($node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	   WHERE j.jobname = 'rvbbit-brands' AND d.status = 'succeeded'}),
	'pg_cron ran the statement and it succeeded');
is($node->safe_psql('postgres', q{SELECT cron.unschedule('rvbbit-brands')}), 't', 'unscheduled');
is($node->safe_psql('postgres', q{SELECT id || ' ' || brand FROM cron_brands ORDER BY id}),
	"1 Apple\n2 Lego\n3 Sony", 'the scheduled statement wrote the table with the typed result column');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE cascade = 'extract_brand' AND status = 'ok'}),
	'3', 'one LLM call per row, recorded in rvbbit.calls');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname = 'rvbbit-brands'}),
	'0', 'no job left scheduled');

$node->stop;
stop_mock($mock);
done_testing();
