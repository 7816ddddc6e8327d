# The worker's writes of cache entries and call records (worker_db.c):
# written without an INSERT statement for the tables as the extension
# makes them, they must be the rows the INSERT wrote.  A cache key another
# transaction writes meanwhile (committed before the flush, or still in
# progress during it and then committed or rolled back) neither fails the
# batch nor makes a second entry: ON CONFLICT (key) DO NOTHING as before.
# A table with a trigger goes through the INSERT statement (the trigger
# fires); an index an administrator added is kept up to date, and amcheck
# finds every index consistent with its table.
#
# Nothing depends on timing: the request whose key is written meanwhile is
# held by the mock until the test releases it, and the worker waiting for
# the other transaction is seen in pg_stat_activity.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock();
# debug1: the worker says when it writes a batch again with INSERT
my $node = new_rv_node('writes', $mock, "log_min_messages = debug1\n");
my $echo = inline_echo();
sub held { mock_get($mock, '/stats')->{held} }

# one call, its cache entry and its call record, by the direct writes;
# then the same request again with a no-op trigger on both tables, which
# sends the writes through the INSERT statements: the same rows
my $call_cols = q{cascade, cell, model, attempt, status, http_status, input_tokens, output_tokens,
  cost, error, cache_key, response_model, finish_reason, cached_tokens, role_oid, budget_role_oid,
  called_at = (SELECT max(called_at) FROM rvbbit.call_log), latency_ms > 0};
my $cache_cols = q{key, model, cascade, cell, response, input_tokens, output_tokens, role_oid,
  created_at > now() - interval '1 hour'};
my $rows = qq{SELECT (SELECT string_agg(row($call_cols)::text, ';' ORDER BY id) FROM rvbbit.call_log)
  || ' / ' || (SELECT string_agg(row($cache_cols)::text, ';' ORDER BY key COLLATE "C") FROM rvbbit.cache)};
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "same rows"}')}),
	'"re: same rows"', 'a call through the direct writes');
my $direct = $node->safe_psql('postgres', $rows);
like($direct, qr/ok,200,.* \/ \(.*"re: same rows"/, "its call record and cache entry ($direct)");
$node->safe_psql('postgres', q{
  TRUNCATE rvbbit.cache, rvbbit.call_log;
  CREATE TABLE public.fired (tbl text, n int);
  CREATE FUNCTION public.note_insert() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN INSERT INTO public.fired VALUES (TG_TABLE_NAME, 1); RETURN NEW; END $$;
  CREATE TRIGGER note AFTER INSERT ON rvbbit.call_log FOR EACH ROW EXECUTE FUNCTION public.note_insert();
  CREATE TRIGGER note AFTER INSERT ON rvbbit.cache FOR EACH ROW EXECUTE FUNCTION public.note_insert();
});
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "same rows"}')}),
	'"re: same rows"', 'the same call with triggers on the tables');
is($node->safe_psql('postgres', $rows), $direct, 'the INSERT statements wrote the same rows');
is($node->safe_psql('postgres', q{SELECT string_agg(tbl || ':' || n, ',' ORDER BY tbl) FROM public.fired}),
	'cache:1,call_log:1', 'the triggers fired: a table with a trigger is written with INSERT');
$node->safe_psql('postgres', q{
  DROP TRIGGER note ON rvbbit.call_log;
  DROP TRIGGER note ON rvbbit.cache;
  TRUNCATE rvbbit.cache, rvbbit.call_log;
});

# The key of a request whose reply the mock holds ([[hold:k]] is part of
# the prompt, so of the key): made once with the hold released, then the
# entry removed.
my $prompt = '{"text": "[[hold:k]] written meanwhile"}';
my $run = qq{SELECT rvbbit.run('$echo', '$prompt');\n};
mock_release($mock, 'k');
$node->safe_psql('postgres', $run);
my $key = $node->safe_psql('postgres', q{SELECT key FROM rvbbit.cache});
like($key, qr/^[0-9a-f]{64}$/, 'the request\'s cache key');
my $entry = q{SELECT count(*) || ' ' || string_agg(response, ',') FROM rvbbit.cache};
my $last_call = q{SELECT status || ' ' || cache_key FROM rvbbit.call_log ORDER BY id DESC LIMIT 1};
my $by_hand = qq{INSERT INTO rvbbit.cache (key, response, role_oid) VALUES ('$key', 'by hand', 10)};

# Start the held request (looked up: not in the cache), return its session.
sub start_held
{
	$node->safe_psql('postgres', 'DELETE FROM rvbbit.cache');
	mock_hold($mock, 'k');
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/^$/, $run);
	ok(wait_until(sub { held() == 1 }), 'the request is in flight, its key not in the cache');
	return $bg;
}

# committed before the worker writes: the worker's entry is not written
my $pos = log_position($node);
my $bg = start_held();
$node->safe_psql('postgres', $by_hand);
mock_release($mock, 'k');
is($bg->query_safe('SELECT 1'), qq{"re: written meanwhile"\n1}, 'the statement gets its reply');
$bg->quit;
is($node->safe_psql('postgres', $entry), '1 by hand', 'one cache entry: the one written meanwhile');
is($node->safe_psql('postgres', $last_call), "ok $key", 'the call is recorded');
ok(wait_for_log($node, qr/writing the batch again with INSERT/, $pos),
	'the worker wrote its batch again with INSERT ... ON CONFLICT');

# in progress while the worker writes, then committed: the worker waits
# for it, then leaves the entry alone
$bg = start_held();
my $other = $node->background_psql('postgres', on_error_stop => 1);
$other->query_safe("BEGIN; $by_hand");
mock_release($mock, 'k');
ok(wait_until(sub {
	$node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
	  WHERE backend_type = 'rvbbit worker' AND wait_event = 'transactionid'}) eq '1' }),
	'the worker waits for the transaction inserting the same key');
$other->query_safe('COMMIT');
is($bg->query_safe('SELECT 1'), qq{"re: written meanwhile"\n1}, 'the statement gets its reply');
$bg->quit;
is($node->safe_psql('postgres', $entry), '1 by hand', 'one cache entry: the one committed meanwhile');
is($node->safe_psql('postgres', $last_call), "ok $key", 'the call is recorded');

# in progress, then rolled back: the worker's entry is written
$bg = start_held();
$other->query_safe("BEGIN; $by_hand");
mock_release($mock, 'k');
ok(wait_until(sub {
	$node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
	  WHERE backend_type = 'rvbbit worker' AND wait_event = 'transactionid'}) eq '1' }),
	'the worker waits for the transaction inserting the same key');
$other->query_safe('ROLLBACK');
is($bg->query_safe('SELECT 1'), qq{"re: written meanwhile"\n1}, 'the statement gets its reply');
$bg->quit;
$other->quit;
is($node->safe_psql('postgres', $entry), '1 re: written meanwhile',
	'the worker\'s entry is written once the other transaction rolled back');

# cache = false with the entry there: the call is made and recorded, the
# entry is left as it is, nothing is written twice
$node->safe_psql('postgres', qq{UPDATE rvbbit.cache SET response = 'kept'});
$pos = log_position($node);
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '$prompt', '{"cache": false}')}),
	'"re: written meanwhile"', 'cache = false calls the provider');
is($node->safe_psql('postgres', $entry), '1 kept', 'and leaves the entry there alone');
is($node->safe_psql('postgres', $last_call), "ok $key", 'the call is recorded');
ok(slurp_file($node->logfile, $pos) !~ /writing the batch again|duplicate key/,
	'checked before the insert: no batch written twice, no error');

# an index an administrator added (a partial one too) is kept up to date,
# and every index of the two tables agrees with its table (amcheck)
$node->safe_psql('postgres', q{
  CREATE INDEX call_log_status ON rvbbit.call_log (status);
  CREATE INDEX cache_model ON rvbbit.cache (lower(model)) WHERE cell IS NOT NULL;
});
is($node->safe_psql('postgres', qq{SELECT count(*) FROM rvbbit.map('$echo',
	  \$\$SELECT n, 'indexed ' || n AS text FROM generate_series(1, 200) n\$\$, 50)
	  AS t(n int, text text, result jsonb) WHERE result IS NOT NULL}), '200', 'a MAP of 200 rows');
is($node->safe_psql('postgres', q{SET enable_seqscan = off; SET enable_bitmapscan = off;
  SELECT count(*) FROM rvbbit.call_log WHERE status = 'ok'}),
	$node->safe_psql('postgres', q{SET enable_indexscan = off; SET enable_bitmapscan = off;
  SELECT count(*) FROM rvbbit.call_log WHERE status = 'ok'}), 'the added index finds every call');
$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
is($node->safe_psql('postgres', q{SELECT string_agg(c.relname || '=' || (SELECT 'ok' FROM bt_index_check(c.oid, true)), ',' ORDER BY c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid IN ('rvbbit.cache'::regclass, 'rvbbit.call_log'::regclass)}),
	'cache_model=ok,cache_pkey=ok,call_log_called_at=ok,call_log_pkey=ok,call_log_status=ok',
	'amcheck: every index holds exactly the table\'s rows');
is($node->safe_psql('postgres', q{SELECT count(*) = count(DISTINCT id) AND max(id) - min(id) + 1 = count(*)
  FROM rvbbit.call_log}), 't', 'call ids without gaps or duplicates');

$node->stop;
stop_mock($mock);
done_testing();
