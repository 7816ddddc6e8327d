# The worker's HTTP client and the proxy variables of the server's
# environment.  libcurl would look them up for every request; the worker
# looks once, when it starts, and tells its connections "no proxy" when
# none is set (src/http.c).  So: with http_proxy set, requests go through
# the proxy (here the mock, which answers a request whose target is an
# absolute URL, and records its Host header); no_proxy exempts a host; without any, requests go straight
# to the provider.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

delete $ENV{$_} for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY);

my $mock = start_mock();
my $node = new_rv_node('proxy', $mock, "rvbbit.worker_idle_timeout = '1s'\n");
my $echo = inline_echo();

# no proxy variable: straight to the mock
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "direct"}')}), '"re: direct"',
	'without proxy variables the provider is called directly');
my $recs = mock_requests($mock, 1);
is($recs->[0]{host}, "127.0.0.1:$mock->{port}", 'a direct request is for the mock itself');

# restart the server with these variables in its environment (only)
sub restart_with_env
{
	my (%env) = @_;
	$node->stop;
	local @ENV{ keys %env } = values %env;
	$node->start;
}

# http_proxy: the provider's host does not exist; only the proxy can answer
restart_with_env(http_proxy => "http://127.0.0.1:$mock->{port}");
$node->safe_psql('postgres', q{ALTER SYSTEM SET rvbbit.api_base = 'http://llm.rvbbit-proxy-test.invalid/v1'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "via proxy"}')}), '"re: via proxy"',
	'with http_proxy in the environment the request goes through the proxy');
$recs = mock_requests($mock, 1);
is($recs->[0]{host}, 'llm.rvbbit-proxy-test.invalid',
	'the proxy was asked for the provider\'s host');
# many rows through one worker: every request still goes through the proxy
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result #>> '{}' = 're: r' || n) FROM rvbbit.map('$echo',
  \$\$SELECT n, 'r' || n AS text FROM generate_series(1, 50) n\$\$, 5, '{"cache": false}') AS t(n int, text text, result jsonb)}),
	'50', 'every row of a MAP went through the proxy');

# no_proxy: the proxy is a closed port, the provider (the mock) is exempt
restart_with_env(http_proxy => 'http://127.0.0.1:1', no_proxy => '127.0.0.1');
$node->safe_psql('postgres', qq{ALTER SYSTEM SET rvbbit.api_base = 'http://127.0.0.1:$mock->{port}/v1'});
ok(reload_and_wait($node), 'the server reloaded its configuration');
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "exempt"}')}), '"re: exempt"',
	'no_proxy exempts the provider\'s host');
$recs = mock_requests($mock, 1);
is($recs->[0]{host}, "127.0.0.1:$mock->{port}", 'the exempt host was called directly');

# and a proxy that is down fails the call with the connection error
restart_with_env(http_proxy => 'http://127.0.0.1:1');
my ($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT rvbbit.run('$echo', '{"text": "dead proxy"}', '{"max_retries": 0}')});
like($err, qr/could not complete the request to the LLM provider/, 'a proxy that is down fails the call');

$node->stop;
stop_mock($mock);
done_testing();
