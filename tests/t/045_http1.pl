# rvbbit's own HTTP/1.1 client (src/http1.c), which the worker uses for
# plain http:// to an IP address (every other suite's provider is such a
# mock, so they all run through it; this one looks at the wire):
# - replies framed every way HTTP/1.1 allows are read whole: chunked (with
#   an extension and a trailer), to the connection's end, trickled 7 bytes
#   at a time, after 100 Continue and 103 Early Hints, with bare LF line
#   ends, HTTP/1.0;
# - a connection the server closed after a keep-alive reply is not a lost
#   row: the next request goes on a new connection;
# - a reply with bytes nobody asked for behind it (in the kernel when the
#   reply filled the receive buffer) does not answer the next row;
# - malformed replies fail the call with what was wrong, and never crash;
# - connections are kept alive: a MAP of 300 rows at PARALLEL 10 opens at
#   most 10;
# - rvbbit.builtin_http = off hands the same requests to libcurl (it sends
#   Accept-Encoding, which this client does not), and on hands them back;
# - a closed port fails the call as unreachable; a handshake that never
#   completes fails as a connect timeout.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

delete $ENV{$_} for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY);

my $mock = start_mock();
my $node = new_rv_node('http1', $mock);
my $echo = inline_echo();

sub run_echo
{
	my ($text, $opts) = @_;
	$opts //= '{"max_retries": 0, "cache": false}';
	return $node->psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "$text"}', '$opts')});
}

# --- every good framing gives the reply
for my $mode (qw(chunked eof trickle continue lf http10 drop))
{
	my ($rc, $out, $err) = run_echo("[[fault:wire:$mode]] framed $mode");
	is($out, qq{"re: framed $mode"}, "a reply framed as $mode is read whole") or diag($err);
}
my $recs = mock_requests($mock, 1);
is($recs->[0]{accept_encoding}, undef, 'the built-in client sends no Accept-Encoding');
like($recs->[0]{user_agent} // '', qr{^rvbbit/}, 'and says it is rvbbit');

# a server that closes each connection after its keep-alive reply: every row
# still gets its one answer (a request that meets a closed connection is
# sent again on a new one)
mock_post($mock, '/reset');
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result #>> '{}' = 're: d' || n)
  FROM rvbbit.map('$echo', \$\$SELECT n, '[[fault:wire:drop]] d' || n AS text FROM generate_series(1, 60) n\$\$, 4,
  '{"cache": false, "max_retries": 0}') AS t(n int, text text, result jsonb)}),
	'60', 'connections closed after every reply lose no row');
is(mock_get($mock, '/stats')->{by_status}{200}, 60, 'and each row was answered once');

# a chunked MAP in many rows, at once
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result #>> '{}' = 're: c' || n)
  FROM rvbbit.map('$echo', \$\$SELECT n, '[[fault:wire:chunked]] c' || n AS text FROM generate_series(1, 100) n\$\$, 20,
  '{"cache": false}') AS t(n int, text text, result jsonb)}),
	'100', 'a MAP of chunked replies has every row');

# a reply that ends exactly where the 16 kB receive buffer does, with a
# second reply nobody asked for behind it in the kernel: the connection is
# not reused, so no row takes that reply for its answer
mock_post($mock, '/reset');
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result #>> '{}' = 're: s' || n)
  FROM rvbbit.map('$echo', \$\$SELECT n, CASE WHEN n % 2 = 0 THEN '[[fault:wire:stale16k]] s' ELSE 's' END || n AS text
  FROM generate_series(1, 60) n\$\$, 4,
  '{"cache": false, "max_retries": 0}') AS t(n int, text text, result jsonb)}),
	'60', 'rows after a reply with unasked-for bytes behind it get their own answers');
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result #>> '{}' = 're: s' || n)
  FROM rvbbit.map('$echo', \$\$SELECT n, '[[fault:wire:stale16k]] s' || n AS text FROM generate_series(1, 60) n\$\$, 4,
  '{"cache": false, "max_retries": 0}') AS t(n int, text text, result jsonb)}),
	'60', 'every row of a MAP of such replies has its own answer');

# --- malformed replies: a clear error, the worker lives on
my %bad = (
	badstatus  => qr/not HTTP\/1\.1/,
	badchunk   => qr/malformed chunk/,
	badlength  => qr/invalid Content-Length/,
	bigheaders => qr/headers are longer than/,
	midheaders => qr/headers are longer than/,
	truncated  => qr/bytes remaining to read/,
	close      => qr/Empty reply from server/);
for my $mode (sort keys %bad)
{
	my $dir = $mode =~ /^(truncated|close)$/ ? "fault:$mode" : "fault:wire:$mode";
	my ($rc, $out, $err) = run_echo("[[$dir]] bad $mode");
	isnt($rc, 0, "a $mode reply fails the call");
	like($err, qr/could not complete the request to the LLM provider/, "with the transfer error ($mode)");
	like($err, $bad{$mode}, "naming what was wrong ($mode)") or diag($err);
}
is($node->safe_psql('postgres', qq{SELECT rvbbit.run('$echo', '{"text": "still here"}')}), '"re: still here"',
	'the worker answers after the malformed replies');

# --- keep-alive: 300 rows at PARALLEL 10 over at most 10 connections
mock_post($mock, '/reset');
is($node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE result IS NOT NULL)
  FROM rvbbit.map('$echo', \$\$SELECT n, 'ka ' || n AS text FROM generate_series(1, 300) n\$\$, 10,
  '{"cache": false}') AS t(n int, text text, result jsonb)}), '300', '300 rows answered');
my $conns = mock_get($mock, '/stats')->{connections};
ok($conns >= 1 && $conns <= 10, "connections are kept alive ($conns for 300 requests)");

# --- rvbbit.builtin_http = off: libcurl sends them
set_server_conf($node, 'rvbbit.builtin_http', 'off');
ok(reload_and_wait($node), 'the server reloaded its configuration');
my ($rc, $out, $err) = run_echo('[[fault:wire:chunked]] through curl');
is($out, '"re: through curl"', 'with builtin_http off the call is answered') or diag($err);
$recs = mock_requests($mock, 1);
ok(defined $recs->[0]{accept_encoding}, 'by libcurl (it sends Accept-Encoding)');
set_server_conf($node, 'rvbbit.builtin_http', 'on');
ok(reload_and_wait($node), 'the server reloaded its configuration');
run_echo('back again');
$recs = mock_requests($mock, 1);
is($recs->[0]{accept_encoding}, undef, 'with builtin_http on again the built-in client sends them');

# --- a closed port: unreachable
my ($rc2, $out2, $err2) = $node->psql('postgres',
	qq{SET rvbbit.api_base = 'http://127.0.0.1:1/v1'; SELECT rvbbit.run('$echo', '{"text": "nobody"}', '{"max_retries": 0}')});
isnt($rc2, 0, 'a closed port fails the call');
like($err2, qr/Failed to connect to 127\.0\.0\.1:1: Connection refused/, 'naming the address and the refusal') or diag($err2);

# --- a server that never completes the handshake: its accept queue is full
# (a backlog of 1 holds two connections; these are established first and
# never accepted), so the kernel drops the next SYNs.  The connect attempt
# has its own timeout and says so.  (IO::Socket::INET takes Listen => 0 for
# its default of 5.)
my $full = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
  or die "listen: $!";
my $fport = $full->sockport;
my @fill = map {
	IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $fport, Proto => 'tcp') or die "connect: $!"
} 1 .. 2;
my ($rc3, $out3, $err3) = $node->psql('postgres',
	qq{SET rvbbit.api_base = 'http://127.0.0.1:$fport/v1'; SET rvbbit.stall_timeout = '1s';
	   SELECT rvbbit.run('$echo', '{"text": "handshake"}', '{"max_retries": 0}')});
isnt($rc3, 0, 'a connection that is never accepted fails the call');
like($err3, qr/could not connect to the LLM provider in time/, 'as a connect timeout') or diag($err3);
like($err3, qr/Connection timed out after 1000 milliseconds/, 'after the connect timeout (the stall timeout, 1 s)')
  or diag($err3);
close($_) for @fill;
close($full);

$node->stop;
stop_mock($mock);
done_testing();
