# rvbbit.progress at the edges (issue 8 item 10): an entry is given back
# when a statement cannot be handed to a worker, and rows answered from
# the dedupe_by memo count as done; and the registry functions, like
# every entry point, need the library preloaded (item 9).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $echo = inline_echo();

# --- no worker can start: the statement fails and leaves no progress entry
# (max_worker_processes = 2: the logical replication launcher and the
# rvbbit jobs launcher take both slots)
my $node = new_rv_node('names', $mock, "max_worker_processes = 2\n");
my ($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT rvbbit.run('$echo', '{"text": "no worker"}')});
like($err, qr/could not start an rvbbit worker/, 'run fails when no worker can start');
for my $i (1 .. 3)
{
	($rc, $out, $err) = $node->psql('postgres',
		qq{SELECT * FROM rvbbit.sql(\$\$MAP PARALLEL 4 '$echo' USING (SELECT 'r' || n AS text FROM generate_series(1, 8) n)\$\$)});
	like($err, qr/could not start an rvbbit worker/, "MAP $i fails when no worker can start");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit._progress()'), '0',
	'no progress entry is left behind by the failed submits');
# the shared table is not used up: more failed statements than it has entries
$node->safe_psql('postgres', q{
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        BEGIN
            PERFORM rvbbit.run('cells: [{name: a, instructions: x}]', '{}');
        EXCEPTION WHEN insufficient_resources THEN NULL;
        END;
    END LOOP;
END $$});
is($node->safe_psql('postgres', 'SELECT count(*) FROM rvbbit._progress()'), '0',
	'300 failed submits leave rvbbit.progress empty');
$node->stop;

# with worker slots the same statements run, and progress is empty after
$node->append_conf('postgresql.conf', "max_worker_processes = 32\n");
$node->start;
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "a worker"}')}),
	'"re: a worker"', 'run works once a worker can start');

# --- dedupe_by: rows answered from the memo count in rows_done
# 40 rows with the key 'same' (the first is sent, the others are answered
# from the memo once it is done), then one slow row, held by the mock, that
# keeps the statement running while rvbbit.progress is read
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/^$/, qq{SELECT count(*) FROM rvbbit.map('$echo',
  \$q\$SELECT n, CASE WHEN n <= 40 THEN 'same' ELSE '[[hold:slow]] slow' END AS text
     FROM generate_series(1, 41) n ORDER BY n\$q\$, 1, '{"dedupe_by": "text", "cache": false}')
  AS t(n int, text text, result jsonb);\n});
ok($node->poll_query_until('postgres',
		'SELECT rows_read = 41 AND in_flight = 1 FROM rvbbit.progress', 't'),
	'the slow row is in flight');
is($node->safe_psql('postgres', 'SELECT rows_read, rows_done, in_flight, rows_failed, llm_calls FROM rvbbit.progress'),
	'41|40|1|0|1', 'rows answered from the dedupe_by memo count as done');
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM rvbbit.progress');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'slow MAP cancelled');
$bg->quit;
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM rvbbit.progress', '0'),
	'the cancelled statement leaves rvbbit.progress');

# --- a released entry claimed again is not changed by the old statement's
# requests: cancel a statement with 5 requests in flight and start another
# at once; its in_flight counts only its own requests
mock_post($mock, '/reset');
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/^$/, qq{SELECT count(*) FROM rvbbit.sql(\$\$MAP PARALLEL 5 '$echo'
  USING (SELECT '[[hold]] old ' || n AS text FROM generate_series(1, 5) n) WITH (cache = false)\$\$);\n});
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 5 }), 'old statement: 5 requests in flight');
my $bg2 = $node->background_psql('postgres', on_error_stop => 0);
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg2->query_until(qr/^$/, qq{SELECT count(*) FROM rvbbit.sql(\$\$MAP PARALLEL 3 '$echo'
  USING (SELECT '[[hold]] new ' || n AS text FROM generate_series(1, 3) n) WITH (cache = false)\$\$);\n});
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM rvbbit.progress WHERE in_flight = 3", '1'),
	'new statement: 3 in flight');
ok(wait_until(sub { mock_get($mock, '/stats')->{in_flight} == 3 }),
	'the old statement\'s requests are aborted');
is($node->safe_psql('postgres', 'SELECT count(*), sum(in_flight) FROM rvbbit.progress'), '1|3',
	'in_flight of the new statement is its own');
# the mock holds the replies until released (however long the test takes)
mock_release($mock);
$bg->quit;
$bg2->quit;
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM rvbbit.progress', '0'),
	'rvbbit.progress is empty at the end');
$node->stop;

# --- registry names stored by 0.1 (with suffixes, "./", "//") are
# normalised by ALTER EXTENSION ... UPDATE and still found; two names that
# become one stop the update, naming both, and nothing is lost
$node->start;
$node->safe_psql('postgres', q{
CREATE DATABASE up1;
CREATE DATABASE up2;
});
for my $db ('up1', 'up2')
{
	$node->safe_psql($db, q{
CREATE EXTENSION rvbbit VERSION '0.1';
INSERT INTO rvbbit.cascades (name, definition) VALUES
  ('traits/old_brand.yaml', 'cells: [{name: a, instructions: "old brand {{ input.text }}"}]'),
  ('./legacy//nested.yml', 'cells: [{name: a, instructions: "legacy {{ input.text }}"}]'),
  ('plain', 'cells: [{name: a, instructions: "plain {{ input.text }}"}]');
});
}
$node->safe_psql('up2', q{INSERT INTO rvbbit.cascades (name, definition) VALUES
  ('plain.yaml', 'cells: [{name: a, instructions: "shadowed {{ input.text }}"}]')});
$node->safe_psql('up1', 'ALTER EXTENSION rvbbit UPDATE');
is($node->safe_psql('up1', q{SELECT string_agg(name, ',' ORDER BY name COLLATE "C") FROM rvbbit.cascades}),
	'legacy/nested,plain,traits/old_brand', '0.1 names normalised by the update');
is($node->safe_psql('up1', q{SELECT rvbbit.run('traits/old_brand.yaml', '{"text": "x"}')}),
	'"re: old brand x"', 'a 0.1 cascade is found under the name it was created with');
is($node->safe_psql('up1', q{SELECT rvbbit.run('./legacy//nested.yml', '{"text": "y"}')}),
	'"re: legacy y"', 'and under its normalised name\'s other spellings');
($rc, $out, $err) = $node->psql('up2', 'ALTER EXTENSION rvbbit UPDATE');
like($err, qr/cascades "plain.yaml" and "plain" have the same name in rvbbit 0.2/,
	'a name collision stops the update with both names');
is($node->safe_psql('up2', q{SELECT extversion || ':' || (SELECT count(*) FROM rvbbit.cascades) FROM pg_extension WHERE extname = 'rvbbit'}),
	'0.1:4', 'nothing changed by the stopped update');
$node->safe_psql('up2', q{DELETE FROM rvbbit.cascades WHERE name = 'plain.yaml'});
$node->safe_psql('up2', 'ALTER EXTENSION rvbbit UPDATE');
is($node->safe_psql('up2', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}), '0.4',
	'the update goes through once one of the two is gone');
$node->stop;

# --- without the preload every entry point raises the same error, the
# registry functions included
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION rvbbit');
for my $call (
	q{SELECT rvbbit.create_cascade('x', 'cells: [{name: a, instructions: x}]')},
	q{SELECT rvbbit.drop_cascade('x', true)},
	q{SELECT rvbbit.validate_cascade('cells: [{name: a, instructions: x}]')},
	q{SELECT rvbbit.run('x', '{}')},
	q{SELECT * FROM rvbbit.progress})
{
	($rc, $out, $err) = $plain->psql('postgres', $call);
	like($err, qr/rvbbit must be loaded via "shared_preload_libraries"/, "preload error: $call");
}
is($plain->safe_psql('postgres', q{SELECT rvbbit._cascade_name('traits/x.yaml')}), 'traits/x',
	'the name rule (used by the CHECK constraint) needs no preload');
$plain->stop;

done_testing();
