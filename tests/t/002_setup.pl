# Configuration errors and secrets: without shared_preload_libraries every
# entry point explains how to fix it; the API key never reaches the log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

# not preloaded
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION rvbbit');
for my $call (q{SELECT rvbbit.run('x', '{}')},
	q{SELECT * FROM rvbbit.map('x', 'SELECT 1', 1) AS t(a int, r jsonb)},
	q{SELECT * FROM rvbbit.progress})
{
	my ($ret, $out, $err) = $plain->psql('postgres', $call);
	isnt($ret, 0, "fails without preload: $call");
	like($err, qr/rvbbit must be loaded via "shared_preload_libraries"/, 'message says what is wrong');
	like($err, qr/HINT:  Add rvbbit to "shared_preload_libraries"/, 'hint says how to fix it');
}
$plain->stop;

# the API key: a wrong key gets a clear error, and the key is never logged
my $mock = start_mock('--require-key', 'sk-right-key');
# the server's default logging (the test framework logs every statement)
my $node = new_rv_node('secrets', $mock,
	"rvbbit.api_key = 'sk-wrong-secret-4711'\nlog_statement = none\n");
my $echo = inline_echo();
my ($ret, $out, $err) = $node->psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "hi"}')});
like($err, qr/LLM provider rejected the request with HTTP 401/, '401 is reported');
like($err, qr/HINT:  Check rvbbit.api_key/, 'hint points at the key');
unlike($err, qr/sk-wrong/, 'the key is not in the error');
is($node->safe_psql('postgres', 'SHOW rvbbit.api_key'), '(set)', 'SHOW hides the key');
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_key = 'sk-right-key'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "hi"}')}), '"re: hi"',
	'the right key works');
# and a wrong key again: the worker keeps the last request's header lines for
# the next one, and must notice that the key changed
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_key = 'sk-wrong-again-0815'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
($ret, $out, $err) = $node->psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "hi again"}')});
like($err, qr/LLM provider rejected the request with HTTP 401/, 'the changed key is sent, not the last one');
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_key = 'sk-right-key'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "hi 3"}')}), '"re: hi 3"',
	'the right key works again');
# a key from the server's environment (used when rvbbit.api_key is empty)
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_key = ''});
$node->stop;
$ENV{RVBBIT_API_KEY} = 'sk-right-key';
$node->start;
delete $ENV{RVBBIT_API_KEY};
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "from env"}')}), '"re: from env"',
	'a key from the environment works');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.call_log WHERE row(call_log.*)::text LIKE '%sk-%'}),
	'0', 'no key in the call records');
# even with every statement logged, SET and ALTER SYSTEM of the key are hidden
$node->safe_psql('postgres', q{ALTER SYSTEM SET log_statement = 'all'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
$node->safe_psql('postgres', q{SET rvbbit.api_key = 'sk-set-in-session'; SELECT 1});
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_key = 'sk-set-by-alter-system'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
$node->safe_psql('postgres', q{SELECT 1});
$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/sk-wrong-secret-4711|sk-wrong-again-0815|sk-right-key|sk-set-in-session|sk-set-by-alter-system/,
	'no key in the server log');
like($log, qr/api_key \.\.\. \(hidden by rvbbit\)/, 'the log says what was hidden');
stop_mock($mock);
done_testing();
