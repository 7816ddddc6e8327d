# The upgrade path: a database created with rvbbit 0.1 keeps all its data
# through ALTER EXTENSION rvbbit UPDATE, ends at the default version,
# works (a run, a job), and has exactly the objects of a fresh CREATE
# EXTENSION rvbbit: same members, function definitions (with their
# SECURITY DEFINER and SET search_path), view definitions, columns (with
# their collations) and privileges.  Generic: whatever later sections of
# the upgrade scripts add is compared too.  The same for a database
# created at 0.2 and one created at 0.3, each updated to the default
# version; the 0.3 one keeps its cache entries through 0.4's change of
# the cache key's collation to "C".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', rv_base_conf($mock) . qq{rvbbit.worker_idle_timeout = 3
max_worker_processes = 32
});
$node->start;
my $default = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'rvbbit'});

$node->safe_psql('postgres', q{CREATE EXTENSION rvbbit VERSION '0.1'});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	'0.1', 'installed as 0.1');

# data made under 0.1
my $echo = inline_echo();
my $summ = q{cells: [{name: s, instructions: "{{ row_count }} rows: {{ rows | tojson }}"}]};
$node->safe_psql('postgres', q{
  CREATE ROLE up_user LOGIN; GRANT rvbbit_user TO up_user;
  SELECT rvbbit.create_cascade('old_reg', $$cells: [{name: a, instructions: "old {{ input.text }}"}]$$);
  INSERT INTO rvbbit.model_prices VALUES ('mock/tap', 1, 2);
});
is($node->safe_psql('postgres', q{SELECT rvbbit.run('old_reg', '{"text": "before"}')}),
	'"re: old before"', 'a registry cascade runs under 0.1');
$node->safe_psql('postgres', qq{SET ROLE up_user; SELECT rvbbit.run('$echo', '{"text": "by up_user"}')});
my $job = $node->safe_psql('postgres',
	qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'job before' AS text)\$\$)});
ok(wait_until(sub { $node->safe_psql('postgres', "SELECT status FROM rvbbit.jobs WHERE job_id = $job") eq 'done' }),
	'an async job completes under 0.1');

# Every old row, compared on the columns it had under 0.1 (0.2 may add
# columns; it must not change or lose what was there).
sub cols_of
{
	my ($rel) = @_;
	return $node->safe_psql('postgres', qq{SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
	  FROM pg_attribute WHERE attrelid = '$rel'::regclass AND attnum > 0 AND NOT attisdropped});
}
my %c = map { $_ => cols_of("rvbbit.$_") } qw(call_log cache job_log job_result_log model_prices);
my $snapshot = qq{SELECT (SELECT string_agg(name || '=' || md5(definition) || '/' || owner::text, ',' ORDER BY name) FROM rvbbit.cascades)
  || '|' || (SELECT count(*) FROM rvbbit.call_log) || '|' || (SELECT string_agg(md5(row($c{call_log})::text), ',' ORDER BY id) FROM rvbbit.call_log c)
  || '|' || (SELECT string_agg(md5(row($c{cache})::text), ',' ORDER BY key COLLATE "C") FROM rvbbit.cache k)
  || '|' || (SELECT string_agg(md5(row($c{job_log})::text), ',' ORDER BY id) FROM rvbbit.job_log j)
  || '|' || (SELECT string_agg(md5(row($c{job_result_log})::text), ',' ORDER BY job_id) FROM rvbbit.job_result_log r)
  || '|' || (SELECT string_agg(md5(row($c{model_prices})::text), ',' ORDER BY model) FROM rvbbit.model_prices m)};
my $before = $node->safe_psql('postgres', $snapshot);
my $counts = q{SELECT (SELECT count(*) FROM rvbbit.cascades) || ' ' || (SELECT count(*) FROM rvbbit.call_log) || ' '
  || (SELECT count(*) FROM rvbbit.cache) || ' ' || (SELECT count(*) FROM rvbbit.job_log) || ' ' || (SELECT count(*) FROM rvbbit.job_result_log)};
my $counts_before = $node->safe_psql('postgres', $counts);
like($counts_before, qr/^1 [1-9]\d* [1-9]\d* 1 1$/, "data exists before the update ($counts_before)");

# the update
$node->safe_psql('postgres', q{ALTER EXTENSION rvbbit UPDATE});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	$default, "updated to the default version $default");
is($node->safe_psql('postgres', $counts), $counts_before, 'no row lost (counts)');
is($node->safe_psql('postgres', $snapshot), $before, 'every old row unchanged (contents)');
is($node->safe_psql('postgres', q{SELECT rvbbit.run('old_reg', '{"text": "after"}')}),
	'"re: old after"', 'the old registry cascade runs after the update');
is($node->safe_psql('postgres', q{SET ROLE up_user; SELECT count(*) FROM rvbbit.calls WHERE role::text = 'up_user'}),
	'1', 'the old calls are visible to their role through the new views');
is($node->safe_psql('postgres', qq{SELECT result FROM rvbbit.job_results WHERE job_id = $job}) ne '', 1,
	'the old job result is still there');
my $job2 = $node->safe_psql('postgres',
	qq{SET ROLE up_user; SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'job after' AS text)\$\$)});
ok(wait_until(sub { $node->safe_psql('postgres', "SELECT status FROM rvbbit.jobs WHERE job_id = $job2") eq 'done' }),
	'a new job completes after the update');

# a fresh install in another database has the same objects
$node->safe_psql('postgres', q{CREATE DATABASE fresh});
$node->safe_psql('fresh', q{CREATE EXTENSION rvbbit});
my $catalog = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'rvbbit'),
members AS (
  SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, d.objsubid) AS what
    FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT 'member ' || what FROM members
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '')
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
 WHERE p.prokind <> 'a'
UNION ALL
SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || coalesce(array_to_string(c.reloptions, ','), '')
       || ' acl=' || coalesce(c.relacl::text, '') || ' view=' || coalesce(pg_get_viewdef(c.oid), '')
  FROM pg_class c WHERE c.relnamespace = 'rvbbit'::regnamespace
UNION ALL
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') || ' acl=' || coalesce(a.attacl::text, '')
       || ' collation=' || coalesce(nullif(a.attcollation, 0)::regcollation::text, '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE c.relnamespace = 'rvbbit'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'rvbbit'::regnamespace
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE c.relnamespace = 'rvbbit'::regnamespace
UNION ALL
SELECT 'config ' || extconfig::regclass[]::text || ' ' || coalesce(array_to_string(extcondition, ','), '')
  FROM pg_extension WHERE extname = 'rvbbit'
UNION ALL
SELECT 'schema acl=' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'rvbbit'
ORDER BY 1};
my $upgraded = $node->safe_psql('postgres', $catalog);
my $fresh = $node->safe_psql('fresh', $catalog);
cmp_ok(scalar(split /\n/, $upgraded), '>', 50, 'the catalog comparison covers the extension\'s objects');
is($upgraded, $fresh, 'the upgraded extension has exactly the objects of a fresh install');
if ($upgraded ne $fresh)
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %u = map { $_ => 1 } split /\n/, $upgraded;
	diag("only after the update: $_") for grep { !$f{$_} } split /\n/, $upgraded;
	diag("only in a fresh install: $_") for grep { !$u{$_} } split /\n/, $fresh;
}
is($node->safe_psql('fresh', q{SELECT rvbbit.run('} . $echo . q{', '{"text": "fresh"}')}),
	'"re: fresh"', 'the fresh install works');

# 0.2 -> the default version: a database created at 0.2 (with a job of
# 0.2, which has no session user recorded) updates to the same objects,
# and its old job row is kept; a new job records its session user
$node->safe_psql('postgres', q{CREATE DATABASE from02});
$node->safe_psql('from02', q{CREATE EXTENSION rvbbit VERSION '0.2'});
is($node->safe_psql('from02', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	'0.2', 'installed as 0.2');
my $job02 = $node->safe_psql('from02',
	qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'job at 0.2' AS text)\$\$)});
ok(wait_until(sub { $node->safe_psql('from02', "SELECT status FROM rvbbit.jobs WHERE job_id = $job02") eq 'done' }),
	'an async job completes under 0.2');
my $cols02 = $node->safe_psql('from02', q{SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = 'rvbbit.job_log'::regclass AND attnum > 0 AND NOT attisdropped});
my $rows02 = qq{SELECT string_agg(md5(row($cols02)::text), ',' ORDER BY id) FROM rvbbit.job_log j};
my $before02 = $node->safe_psql('from02', $rows02);
$node->safe_psql('from02', q{ALTER EXTENSION rvbbit UPDATE});
is($node->safe_psql('from02', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	$default, "0.2 updated to the default version $default");
is($node->safe_psql('from02', $rows02), $before02, 'the 0.2 job row is unchanged');
my $upgraded02 = $node->safe_psql('from02', $catalog);
is($upgraded02, $fresh, 'the extension updated from 0.2 has exactly the objects of a fresh install');
if ($upgraded02 ne $fresh)
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	diag("only after the update from 0.2: $_") for grep { !$f{$_} } split /\n/, $upgraded02;
}
my $job03 = $node->safe_psql('from02',
	qq{SELECT * FROM rvbbit.sql(\$\$RUN ASYNC '$summ' USING (SELECT 'job after 0.2' AS text)\$\$)});
ok(wait_until(sub { $node->safe_psql('from02', "SELECT status FROM rvbbit.jobs WHERE job_id = $job03") eq 'done' }),
	'a new job completes after the update from 0.2');
is($node->safe_psql('from02', "SELECT session_role_oid::regrole FROM rvbbit.job_log WHERE id = $job03"),
	'postgres', 'and records its session user');
is($node->safe_psql('postgres', "SELECT session_role_oid::regrole || ' ' || outer_role_oid::regrole FROM rvbbit.job_log WHERE id = $job2"),
	'postgres up_user', 'the job after the update from 0.1 records session user and SET ROLE role');

# 0.3 -> the default version: a database created at 0.3 with cache
# entries and calls; 0.4 compares the cache keys under "C" (the view on
# the table made again, the primary key rebuilt), and keeps every entry,
# which is still found by the next run of the same request
$node->safe_psql('postgres', q{CREATE DATABASE from03});
$node->safe_psql('from03', q{CREATE EXTENSION rvbbit VERSION '0.3'});
is($node->safe_psql('from03', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	'0.3', 'installed as 0.3');
$node->safe_psql('from03', qq{SELECT rvbbit.run('$echo', '{"text": "at 0.3"}')});
$node->safe_psql('from03', qq{SET ROLE up_user; SELECT rvbbit.run('$echo', '{"text": "at 0.3 by up_user"}')});
my $cols03 = $node->safe_psql('from03', q{SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = 'rvbbit.cache'::regclass AND attnum > 0 AND NOT attisdropped});
my $cache03 = qq{SELECT count(*) || ' ' || string_agg(md5(row($cols03)::text), ',' ORDER BY key COLLATE "C") FROM rvbbit.cache k};
my $before03 = $node->safe_psql('from03', $cache03);
like($before03, qr/^2 /, 'two cache entries made under 0.3');
$node->safe_psql('from03', q{ALTER EXTENSION rvbbit UPDATE});
is($node->safe_psql('from03', q{SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'}),
	$default, "0.3 updated to the default version $default");
is($node->safe_psql('from03', $cache03), $before03, 'every cache entry of 0.3 unchanged');
is($node->safe_psql('from03', q{SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
  WHERE a.attrelid = 'rvbbit.cache'::regclass AND a.attname = 'key'}), 'C', 'the cache key is compared under "C"');
is($node->safe_psql('from03', q{SET enable_seqscan = off; EXPLAIN (COSTS OFF)
  SELECT key FROM rvbbit.cache WHERE key = ANY ('{a,b}'::text[])}) =~ /cache_pkey/ ? 1 : 0,
	1, 'the worker\'s lookup (key = ANY of a text array) uses the primary key');
my $upgraded03 = $node->safe_psql('from03', $catalog);
is($upgraded03, $fresh, 'the extension updated from 0.3 has exactly the objects of a fresh install');
if ($upgraded03 ne $fresh)
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	diag("only after the update from 0.3: $_") for grep { !$f{$_} } split /\n/, $upgraded03;
}
is($node->safe_psql('from03', qq{SET ROLE up_user; SELECT rvbbit.run('$echo', '{"text": "at 0.3 by up_user"}')}),
	'"re: at 0.3 by up_user"', 'a request cached under 0.3 is answered after the update');
is($node->safe_psql('from03', q{SELECT status || ' ' || role_oid::regrole FROM rvbbit.call_log ORDER BY id DESC LIMIT 1}),
	'cached up_user', 'from the cache');
is($node->safe_psql('from03', q{SET ROLE up_user; SELECT count(*) FROM rvbbit.cache_entries}),
	'1', 'the remade rvbbit.cache_entries shows a role its own entries');
$node->safe_psql('from03', qq{SELECT rvbbit.run('$echo', '{"text": "after 0.3"}')});
is($node->safe_psql('from03', q{SELECT count(*) FROM rvbbit.cache}), '3', 'a new entry is written after the update');

$node->stop;
stop_mock($mock);
done_testing();
