# rvbbit-gateway on the wire, from raw sockets: the first packets
# (GSSENCRequest, SSLRequest with TLS on and off, a direct TLS start with
# ALPN "postgresql", protocol 3.2 and _pq_ options answered by the
# server's NegotiateProtocolVersion, protocol 4.0), hostile bytes
# (lengths below 4 and over 1 GB, a 10 MB startup packet, truncated
# packets, slow startups, a Sync flood, interleaved extended-protocol
# messages, a 100 MB statement), a CancelRequest stopping an RVBBIT
# statement whose provider reply the mock holds, and the rewritten forms
# COPY (RVBBIT ...) TO STDOUT, DECLARE ... CURSOR FOR RVBBIT, PREPARE,
# EXPLAIN and CREATE VIEW through psql.  After every hostile client the
# gateway must still serve a normal psql session.
use strict;
use warnings;
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

$SIG{PIPE} = 'IGNORE';

my $mock = start_mock('--fixtures', "$ENV{RV_ROOT}/tests/mock/fixtures/demo.json");
my $tmp = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());

IPC::Run::run([
		'openssl', 'req', '-new', '-x509', '-nodes', '-days', '2',
		'-subj', '/CN=localhost', '-newkey', 'rsa:2048',
		'-keyout', "$tmp/server.key", '-out', "$tmp/server.crt" ],
	'>', \my $so, '2>', \my $se_)
  or die "openssl failed";
chmod 0600, "$tmp/server.key";

# the supervised gateway: TLS on; a standalone one beside it: TLS off
my $gwport = PostgreSQL::Test::Cluster::get_free_port();
my $gw2port = PostgreSQL::Test::Cluster::get_free_port();
my $node = PostgreSQL::Test::Cluster->new('gateway_wire');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$mock->{port}/v1'
rvbbit.default_model = 'mock/tap'
rvbbit.stall_timeout = '10min'
max_worker_processes = 32
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$tmp/server.crt'
ssl_key_file = '$tmp/server.key'
# the gateway gives a client as long for its startup packet
authentication_timeout = '2s'
# the 100 MB statements below stay out of the log
log_statement = none
log_min_error_statement = fatal
rvbbit.gateway_port = $gwport
rvbbit.gateway_listen_addresses = '127.0.0.1'
rvbbit.gateway_ssl = on
# raw sessions below log in without a password
rvbbit.gateway_allow_trust = on
});
open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die;
print $hba "local all all trust\nhost all all 127.0.0.1/32 trust\n";
close($hba);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rvbbit');

my $gwbin = $node->config_data('--bindir') . '/rvbbit-gateway';
my $gw2 = IPC::Run::start(
	[ $gwbin, '--listen', "127.0.0.1:$gw2port", '--upstream', '127.0.0.1:' . $node->port,
	  '--allow-trust' ],
	'>', "$tmp/gw2.log", '2>&1');
# and one that refuses the trust server
my $gw3port = PostgreSQL::Test::Cluster::get_free_port();
my $gw3 = IPC::Run::start(
	[ $gwbin, '--listen', "127.0.0.1:$gw3port", '--upstream', '127.0.0.1:' . $node->port ],
	'>', "$tmp/gw3.log", '2>&1');

# psql through a gateway; returns (exit code, stdout, stderr)
sub gw_psql
{
	my ($sql, %o) = @_;
	my $conn = sprintf('host=127.0.0.1 port=%d dbname=postgres user=postgres sslmode=%s',
		$o{port} // $gwport, $o{sslmode} // 'disable');
	my ($out, $err) = ('', '');
	my @cmd = ('psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $conn);
	push @cmd, ('-c', $sql) unless $o{stdin};
	IPC::Run::run(\@cmd, '<', \($o{stdin} ? $sql : ''), '>', \$out, '2>', \$err);
	chomp $out;
	return ($? >> 8, $out, $err);
}

my ($rc, $out, $err);
ok(wait_until(sub { ($rc) = gw_psql('SELECT 1'); $rc == 0 }), 'the supervised gateway is up');
ok(wait_until(sub { ($rc) = gw_psql('SELECT 1', port => $gw2port); $rc == 0 }),
	'the standalone gateway is up');
ok(wait_until(sub { ($rc, $out, $err) = gw_psql('SELECT 1', port => $gw3port); $err =~ /refuses a server/ }),
	'the standalone gateway without --allow-trust is up and refuses the trust server');

# the gateways still serve a normal session
sub still_serving
{
	my ($what) = @_;
	my ($r, $o, $e) = gw_psql(q{SELECT 'still ' || 'here'});
	is($o, 'still here', "after $what: the gateway still serves a psql session") or diag($e);
}

###########################################################################
# raw protocol helpers
###########################################################################
sub connect_gw
{
	my ($port) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port // $gwport,
		Proto => 'tcp')
	  or die "connect: $!";
	binmode($s);
	return $s;
}

sub send_all
{
	my ($s, $data) = @_;
	my $off = 0;
	while ($off < length($data))
	{
		my $w = syswrite($s, $data, length($data) - $off, $off);
		return 0 unless defined $w;
		$off += $w;
	}
	return 1;
}

# read exactly $n bytes (undef at EOF or after the deadline)
sub read_n
{
	my ($s, $n, $secs) = @_;
	my $buf = '';
	my $sel = IO::Select->new($s);
	my $deadline = time() + ($secs // $wait_secs);
	while (length($buf) < $n)
	{
		my $left = $deadline - time();
		return undef if $left <= 0;
		# TLS: bytes already decrypted do not show in select
		next unless ($s->can('pending') && $s->pending) || $sel->can_read($left);
		my $r = sysread($s, $buf, $n - length($buf), length($buf));
		return undef unless $r;
	}
	return $buf;
}

# does the peer close the connection (EOF or reset) within the deadline,
# sending nothing, or only what matches $allowed?
sub closes
{
	my ($s, $allowed) = @_;
	my $sel = IO::Select->new($s);
	my $deadline = time() + $wait_secs;
	my $got = '';
	while (time() < $deadline)
	{
		next unless $sel->can_read(1);
		my $buf;
		my $r = sysread($s, $buf, 65536);
		return ($allowed ? $got =~ $allowed : $got eq '') if !$r;
		$got .= $buf;
	}
	return 0;
}

# one backend message: (type, body)
sub read_msg
{
	my ($s) = @_;
	my $h = read_n($s, 5);
	return () unless defined $h;
	my ($type, $len) = unpack('a N', $h);
	my $body = $len > 4 ? read_n($s, $len - 4) : '';
	return () unless defined $body;
	return ($type, $body);
}

sub startup_packet
{
	my ($version, @kv) = @_;
	my $body = pack('N', $version) . join('', map { "$_\0" } ('user', 'postgres', 'database', 'postgres', @kv)) . "\0";
	return pack('N', length($body) + 4) . $body;
}

sub msg { my ($t, $body) = @_; return $t . pack('N', length($body) + 4) . $body; }
sub query_msg { return msg('Q', "$_[0]\0"); }

# read messages until ReadyForQuery; returns a hash: rows (arrays of
# text values), errors (messages), types (every type in order), v (the
# NegotiateProtocolVersion body), key (pid, secret)
sub until_ready
{
	my ($s) = @_;
	my %r = (rows => [], errors => [], types => '');
	while (1)
	{
		my ($t, $b) = read_msg($s);
		if (!defined $t) { $r{eof} = 1; last; }
		$r{types} .= $t;
		if ($t eq 'D')
		{
			my $n = unpack('n', $b);
			my $off = 2;
			my @vals;
			for (1 .. $n)
			{
				my $l = unpack('N', substr($b, $off, 4));
				$off += 4;
				if ($l == 0xffffffff) { push @vals, undef; next; }
				push @vals, substr($b, $off, $l);
				$off += $l;
			}
			push @{ $r{rows} }, \@vals;
		}
		elsif ($t eq 'E')
		{
			my %f = map { substr($_, 0, 1) => substr($_, 1) } grep { length } split /\0/, $b;
			push @{ $r{errors} }, "$f{C}: $f{M}";
		}
		elsif ($t eq 'v') { $r{v} = $b; }
		elsif ($t eq 'K') { $r{key} = [ unpack('N N', $b) ]; }
		last if $t eq 'Z';
	}
	return \%r;
}

# a logged-in raw session (through the supervised gateway unless $port)
sub raw_session
{
	my ($port) = @_;
	my $s = connect_gw($port);
	send_all($s, startup_packet(196608));
	my $r = until_ready($s);
	die "raw login failed: @{$r->{errors}}" if @{ $r->{errors} } || $r->{eof};
	return ($s, $r);
}

###########################################################################
# first packets
###########################################################################
{
	my $s = connect_gw($gw2port);
	send_all($s, pack('N N', 8, 80877104));
	is(read_n($s, 1), 'N', 'GSSENCRequest is answered N');
	send_all($s, pack('N N', 8, 80877103));
	is(read_n($s, 1), 'N', '... then SSLRequest, TLS off: N');
	send_all($s, startup_packet(196608));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [], '... then the StartupMessage logs in');
	like($r->{types}, qr/^R.*K.*Z$/, '... AuthenticationOk, BackendKeyData, ReadyForQuery');
	send_all($s, query_msg(q{SELECT 'gss then ssl then startup'}));
	$r = until_ready($s);
	is($r->{rows}[0][0], 'gss then ssl then startup', '... and the session runs a query');
	close($s);
}
{
	my $s = connect_gw();
	send_all($s, pack('N N', 8, 80877104));
	is(read_n($s, 1), 'N', 'TLS on: GSSENCRequest is answered N');
	send_all($s, pack('N N', 8, 80877103));
	is(read_n($s, 1), 'S', '... then SSLRequest is answered S');
	ok(IO::Socket::SSL->start_SSL($s, SSL_verify_mode => SSL_VERIFY_NONE, SSL_hostname => 'localhost'),
		'... the TLS handshake completes') or diag($IO::Socket::SSL::SSL_ERROR);
	like($s->get_sslversion // '', qr/^TLSv1_[23]$/, '... TLS 1.2 or newer');
	send_all($s, startup_packet(196608));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [], '... the StartupMessage over TLS logs in');
	send_all($s, query_msg(q{SELECT 'over tls'}));
	$r = until_ready($s);
	is($r->{rows}[0][0], 'over tls', '... and a query runs over TLS');
	close($s);
}
{
	my $s = connect_gw();
	send_all($s, startup_packet(196608));
	my $r = until_ready($s);
	send_all($s, query_msg('SELECT 2'));
	$r = until_ready($s);
	is($r->{rows}[0][0], '2', 'TLS on: a plaintext StartupMessage is relayed too (pg_hba decides)');
	close($s);
}

# direct TLS (PostgreSQL 17's sslnegotiation=direct): a ClientHello with ALPN postgresql
{
	IPC::Run::run([ 'openssl', 's_client', '-connect', "127.0.0.1:$gwport", '-alpn', 'postgresql',
			'-servername', 'localhost' ],
		'<', \'', '>', \my $o, '2>', \my $e, IPC::Run::timeout($wait_secs));
	isnt($? >> 8, 0, 'a direct TLS start fails its handshake');
	unlike($o, qr/BEGIN CERTIFICATE/, '... the gateway sent no certificate');
	my $s = connect_gw();
	send_all($s, "\x16\x03\x01\x00\x40" . ("\0" x 64));
	ok(closes($s), '... a raw TLS record as the first bytes: closed, nothing sent');
	close($s);
	still_serving('direct TLS starts');
}

# protocol 3.2 with _pq_ options: the server's NegotiateProtocolVersion is relayed
{
	my $s = connect_gw();
	send_all($s, startup_packet(196610, '_pq_.rvbbit_test', 'x'));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [], 'a StartupMessage asking for 3.2 with a _pq_ option logs in');
	ok(defined $r->{v}, '... the server answered NegotiateProtocolVersion through the gateway');
	if (defined $r->{v})
	{
		my ($minor, $n) = unpack('N N', $r->{v});
		my @opts = split /\0/, substr($r->{v}, 8);
		# 18 speaks protocol 3.2 itself (its newest), older servers 3.0
		my $newest = $node->safe_psql('postgres', 'SHOW server_version_num') >= 180000 ? 196610 : 196608;
		is_deeply([ $minor, $n, @opts ], [ $newest, 1, '_pq_.rvbbit_test' ],
			'... the server\'s newest version (3.0, or 3.2 on 18), the unrecognized option named');
	}
	send_all($s, query_msg(q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Sony WH-1000XM5' AS product_name)}));
	$r = until_ready($s);
	is_deeply($r->{rows}, [ [ 'Sony WH-1000XM5', 'Sony' ] ], '... and an RVBBIT statement runs in the session');
	close($s);
}
{
	my $s = connect_gw();
	send_all($s, startup_packet(262144));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [ '0A000: unsupported frontend protocol 4.0: server supports 3.0 to 3.0' ],
		'protocol 4.0 is refused with the server\'s error');
	ok($r->{eof}, '... and the connection closed');
	close($s);
}

# one SSLRequest and one GSSENCRequest at most
for my $code (80877103, 80877104)
{
	my $s = connect_gw($gw2port);
	send_all($s, pack('N N', 8, $code));
	is(read_n($s, 1), 'N', "request $code answered N");
	send_all($s, pack('N N', 8, $code) x 1000);
	ok(closes($s), '... the same request again: closed without another answer');
	close($s);
}

# messages pipelined after the StartupMessage wait for the session to be accepted
{
	my $s = connect_gw($gw3port);
	send_all($s, startup_packet(196608) . query_msg('CREATE TABLE pipelined_past_refusal ()'));
	my $r = until_ready($s);
	like($r->{errors}[0] // '', qr/^28000: the rvbbit gateway refuses a server that lets the session in without authentication/,
		'a Query pipelined after the StartupMessage to a refused trust session: the refusal');
	ok($r->{eof}, '... the connection closed');
	close($s);
	is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_class WHERE relname = 'pipelined_past_refusal'}),
		'0', '... and the server never ran the pipelined statement');

	$s = connect_gw();
	send_all($s, startup_packet(196608) . query_msg(q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Sony WH-1000XM5' AS product_name)}));
	$r = until_ready($s);
	is_deeply($r->{errors}, [], 'an accepted session: the pipelined Query goes on after the login');
	$r = until_ready($s);
	is_deeply($r->{rows}, [ [ 'Sony WH-1000XM5', 'Sony' ] ], '... rewritten as usual');
	close($s);

	$s = connect_gw($gw3port);
	send_all($s, startup_packet(196608) . query_msg('SELECT ' . ('1' x 70000)));
	$r = until_ready($s);
	is_deeply($r->{errors}, [ '08P01: too much data from the client before authentication completed' ],
		'over 64 kB pipelined before the login: the gateway\'s error');
	close($s);
	still_serving('pipelined messages');
}

###########################################################################
# malformed first packets
###########################################################################
for my $case (
	[ 'a startup length below 4', pack('N', 2) ],
	[ 'a startup length of 4', pack('N N', 4, 196608) ],
	[ 'a startup length over 1 GB', pack('N N', 0x7fffffff, 196608) ],
	[ 'a CancelRequest of the wrong length', pack('N N N', 12, 80877102, 1) ],
	[ 'an SSLRequest of the wrong length', pack('N N N', 12, 80877103, 0) ])
{
	my ($what, $bytes) = @$case;
	my $s = connect_gw();
	send_all($s, $bytes);
	ok(closes($s), "$what: closed without an answer");
	close($s);
}
{
	# 10 MB of startup packet: refused at its length, before the body
	my $s = connect_gw();
	my $big = pack('N N', 10 * 1024 * 1024, 196608) . ('x' x (10 * 1024 * 1024 - 8));
	send_all($s, $big);
	ok(closes($s), 'a 10 MB startup packet: closed without an answer');
	close($s);
}
{
	my $s = connect_gw();
	my $p = startup_packet(196608);
	send_all($s, substr($p, 0, 10));
	close($s);
	$s = connect_gw();
	send_all($s, substr($p, 0, 3));
	close($s);
	still_serving('truncated startup packets');
}

# slow startups: the gateway closes them after authentication_timeout
{
	my @slow;
	for (1 .. 500)
	{
		my $s = connect_gw();
		send_all($s, substr(startup_packet(196608), 0, 6));
		push @slow, $s;
	}
	still_serving('500 half-sent startup packets');
	my $closed = grep { closes($_) } @slow;
	is($closed, 500, 'the half-sent startup packets are closed (authentication_timeout)');
	close($_) for @slow;
	like(slurp_file($node->logfile), qr/closed \d+ connections? that sent no startup packet within 2 s/,
		'... and the gateway logged it');
}

###########################################################################
# malformed messages after the startup
###########################################################################
for my $case (
	[ 'a message length below 4', 'Q' . pack('N', 2) ],
	[ 'a message length over 1 GB', 'Q' . pack('N', 0x40000004) ])
{
	my ($what, $bytes) = @$case;
	my ($s) = raw_session();
	send_all($s, $bytes);
	my $r = until_ready($s);
	is_deeply($r->{errors}, [ '08P01: invalid message length from the client' ],
		"$what: the gateway's error");
	ok($r->{eof}, '... and the connection closed');
	close($s);
}
{
	my ($s) = raw_session();
	send_all($s, 'Q' . pack('N', 1000) . 'SELECT ');
	close($s);
	($s) = raw_session();
	send_all($s, 'P' . pack('N', 1000) . "RVBBIT MAP");
	close($s);
	still_serving('truncated messages then close');
}

###########################################################################
# the extended protocol: interleaved messages, a Sync flood
###########################################################################
{
	my ($s) = raw_session();
	my $rv = q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Samsung Galaxy S24' AS product_name)};
	send_all($s,
		msg('P', "s1\0$rv\0" . pack('n', 0))
		  . msg('P', "s2\0SELECT \$1::int + 1\0" . pack('n', 1) . pack('N', 23))
		  . msg('B', "p1\0s1\0" . pack('n n n', 0, 0, 0))
		  . msg('B', "p2\0s2\0" . pack('n n N a* n', 0, 1, 2, '41', 0))
		  . msg('D', "Pp1\0")
		  . msg('E', "p2\0" . pack('N', 0))
		  . msg('E', "p1\0" . pack('N', 0))
		  . msg('S', '')
		  . msg('H', ''));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [], 'interleaved Parse/Bind/Describe/Execute of an RVBBIT and a plain statement');
	is($r->{types}, '1122TDCDCZ', '... answered in order');
	is_deeply($r->{rows}, [ ['42'], [ 'Samsung Galaxy S24', 'Samsung' ] ],
		'... the plain one with its parameter, the RVBBIT one rewritten');

	# 100,000 Syncs in one write, then a query
	send_all($s, msg('S', '') x 100_000 . query_msg('SELECT 3'));
	my $z = 0;
	my $last;
	while (1)
	{
		$last = until_ready($s);
		last if $last->{eof} || @{ $last->{rows} };
		$z++;
	}
	is($z, 100_000, 'a flood of 100,000 Syncs gets 100,000 ReadyForQuery');
	is_deeply($last->{rows}, [ ['3'] ], '... and the query after it runs');
	close($s);
}

###########################################################################
# big statements: 10 MB rewritten, 100 MB relayed without being looked at
###########################################################################
{
	my ($s) = raw_session();
	my $pad = 'x' x (10 * 1024 * 1024);
	send_all($s, query_msg(qq{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Apple iPhone 15' AS product_name, length('$pad') AS n)}));
	my $r = until_ready($s);
	is_deeply($r->{errors}, [], 'a 10 MB RVBBIT statement') or diag("@{$r->{errors}}");
	is_deeply($r->{rows}, [ [ 'Apple iPhone 15', 10 * 1024 * 1024, 'Apple' ] ], '... is rewritten and runs');

	$pad = 'x' x (100 * 1024 * 1024);
	send_all($s, query_msg(qq{SELECT length('$pad')}));
	$r = until_ready($s);
	is_deeply($r->{rows}, [ [ 100 * 1024 * 1024 ] ], 'a 100 MB statement is relayed whole');
	send_all($s, query_msg(qq{RVBBIT MAP '$pad'}));
	$r = until_ready($s);
	like($r->{errors}[0] // '', qr/^42601: syntax error at or near "RVBBIT"/,
		'a 100 MB RVBBIT statement (over the 64 MB inspected) reaches the server as it is');
	undef $pad;
	close($s);
	still_serving('100 MB statements');
}

###########################################################################
# CancelRequest through the gateway stops an RVBBIT statement
###########################################################################
{
	my ($s, $login) = raw_session();
	ok($login->{key}, 'BackendKeyData reached the client');
	my $held0 = mock_get($mock, '/stats')->{held};
	send_all($s, query_msg(q{RVBBIT MAP 'cells: [{name: say, instructions: "{{ input.text }}"}]' USING (SELECT '[[hold:gwcancel]] row ' || g AS text FROM generate_series(1, 3) g)}));
	ok(wait_until(sub { mock_get($mock, '/stats')->{held} > $held0 }),
		'the RVBBIT statement waits on a held provider reply');
	my $c = connect_gw();
	send_all($c, pack('N N N N', 16, 80877102, @{ $login->{key} }));
	ok(closes($c), 'the CancelRequest connection is closed with nothing sent back');
	my $r = until_ready($s);
	is_deeply($r->{errors}, [ '57014: canceling statement due to user request' ],
		'the statement was cancelled through the gateway');
	send_all($s, query_msg('SELECT 4'));
	$r = until_ready($s);
	is($r->{rows}[0][0], '4', '... and the session goes on');
	close($s);
	mock_release($mock, 'gwcancel');
}

###########################################################################
# rewritten forms through psql
###########################################################################
my $rvq = q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Apple iPhone 15' AS product_name)};

($rc, $out, $err) = gw_psql(qq{COPY (/* c */ $rvq -- x
) TO STDOUT WITH (FORMAT csv)});
is($out, 'Apple iPhone 15,Apple', 'COPY (RVBBIT ...) TO STDOUT, with comments') or diag($err);

($rc, $out, $err) = gw_psql(qq{BEGIN; DECLARE c NO SCROLL CURSOR FOR $rvq; FETCH ALL c; COMMIT});
is($out, "BEGIN\nDECLARE CURSOR\nApple iPhone 15|Apple\nCOMMIT", 'DECLARE c NO SCROLL CURSOR FOR RVBBIT') or diag($err);

($rc, $out, $err) = gw_psql(qq{DECLARE c SCROLL CURSOR WITH HOLD FOR $rvq; FETCH ALL c; FETCH FIRST c; CLOSE c});
is($out, "DECLARE CURSOR\nApple iPhone 15|Apple\nApple iPhone 15|Apple\nCLOSE CURSOR",
	'DECLARE c SCROLL CURSOR WITH HOLD FOR RVBBIT outside a transaction') or diag($err);

($rc, $out, $err) = gw_psql(qq{BEGIN; DECLARE c BINARY CURSOR FOR $rvq; FETCH ALL c; COMMIT});
is($out, "BEGIN\nDECLARE CURSOR\nApple iPhone 15|Apple\nCOMMIT", 'DECLARE c BINARY CURSOR FOR RVBBIT (text in binary is its bytes)') or diag($err);

($rc, $out, $err) = gw_psql(qq{PREPARE p AS $rvq; EXECUTE p; EXECUTE p});
is($out, "PREPARE\nApple iPhone 15|Apple\nApple iPhone 15|Apple", 'PREPARE p AS RVBBIT, EXECUTE p twice') or diag($err);

($rc, $out, $err) = gw_psql(qq{EXPLAIN (COSTS OFF) DECLARE c CURSOR FOR $rvq});
like($out, qr/rvbbit/i, 'EXPLAIN DECLARE ... FOR RVBBIT') or diag($err);

($rc, $out, $err) = gw_psql(qq{CREATE VIEW brand_v AS $rvq; SELECT * FROM brand_v});
is($out, "CREATE VIEW\nApple iPhone 15|Apple", 'CREATE VIEW ... AS RVBBIT') or diag($err);
($rc, $out, $err) = gw_psql(qq{CREATE MATERIALIZED VIEW brand_m AS $rvq});
isnt($rc, 0, 'CREATE MATERIALIZED VIEW ... AS RVBBIT is not rewritten');
like($err, qr/syntax error at or near "RVBBIT"/, '... the server reports the syntax error');

($rc, $out, $err) = gw_psql(q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT $$Apple iPhone 15 $rvbbit$ x$$ || E'\\'' || $t$$$$t$ /* /* nested RVBBIT */ */ AS product_name)});
is($out, q{Apple iPhone 15 $rvbbit$ x'$$|Apple}, 'dollar quotes, a $rvbbit$ tag, E\'\' and nested comments inside an RVBBIT statement') or diag($err);

($rc, $out, $err) = gw_psql(qq{SELECT * FROM ($rvq) s});
isnt($rc, 0, 'RVBBIT as a subquery is not rewritten');
like($err, qr/syntax error at or near/, '... the server reports the syntax error');

###########################################################################
# error positions: the server's 'P' points into the rewritten text; the
# gateway translates it back to the client's text (characters, not bytes)
###########################################################################
$node->safe_psql('postgres', q{CREATE DATABASE u8 ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'});
$node->safe_psql('u8', 'CREATE EXTENSION rvbbit');
{
	use Encode qw(encode decode);

	# the 1-based character position of the first $tok in $text (or after
	# the nth, with $nth)
	my $charpos = sub {
		my ($text, $tok, $nth) = @_;
		my $i = -1;
		$i = index($text, $tok, $i + 1) for 0 .. ($nth // 0);
		die "no $tok" if $i < 0;
		return $i + 1;
	};
	# read until ReadyForQuery, recording each ErrorResponse's fields
	my $answers = sub {
		my ($s) = @_;
		my @e;
		while (1)
		{
			my ($t, $b) = read_msg($s);
			die 'connection closed' unless defined $t;
			push @e, { map { substr($_, 0, 1) => substr($_, 1) } grep { length } split /\0/, $b }
			  if $t eq 'E';
			return \@e if $t eq 'Z';
		}
	};
	my $login = sub {
		my ($db) = @_;
		my $s = connect_gw($gw2port);
		my $body = pack('N', 196608) . join('', map { "$_\0" } ('user', 'postgres', 'database', $db,
				'client_encoding', 'UTF8')) . "\0";
		send_all($s, pack('N', length($body) + 4) . $body);
		my $r = $answers->($s);
		die "raw login failed" if @$r;
		return $s;
	};

	for my $db ('u8', 'postgres')
	{
		my $enc = $node->safe_psql($db, 'SHOW server_encoding');
		my $s = $login->($db);
		# a SQL_ASCII server counts bytes
		my $len = $enc eq 'SQL_ASCII' ? sub { encode('UTF-8', $_[0]) } : sub { $_[0] };
		my $cp = sub { my ($t, $tok, $n) = @_; return $charpos->($len->($t), $len->($tok), $n); };

		my $q1 = "SELECT 'h\x{e9}llo \x{20ac}' AS a; RVBBIT MAP PARALLEL <max_workers> 'extract_brand' AS brand USING (SELECT 1)";
		my $q2 = 'SELECT * FROM high_value_customers';
		my $q3 = "RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT '\x{fc}' AS product_name WHERE false);\nSELECT '\x{df}\x{df}', * FROM high_value_customers";
		my $q4 = "SELECT '\x{e9}';  RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT product_name FROM high_value_customers)";
		# four Queries in one write: their answers come in order
		send_all($s, join('', map { query_msg(encode('UTF-8', $_)) } ($q1, $q2, $q3, $q4)));
		my @e = map { @{ $answers->($s) } } 1 .. 4;
		is(scalar(@e), 4, "$db ($enc): four pipelined Queries, four errors");
		is($e[0]{P}, $cp->($q1, '<max_workers>'),
			"$db: a syntax error inside a rewritten RVBBIT statement points at the token in the client's text")
		  or diag(explain($e[0]));
		is($e[1]{P}, 15, "$db: a Query without RVBBIT keeps its position") or diag(explain($e[1]));
		is($e[2]{P}, $cp->($q3, 'high_value_customers'),
			"$db: a missing table after a rewritten statement, on the next line") or diag(explain($e[2]));
		is($e[3]{P}, $cp->($q4, 'high_value_customers'),
			"$db: a missing table inside the USING query") or diag(explain($e[3]));

		# the same statement sent by hand, wrapped, straight to the server,
		# points at the same token of its own text
		{
			my $wrapped = "SELECT '\x{e9}';  SELECT * FROM rvbbit.sql(\$rvbbit\$RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT product_name FROM high_value_customers)\$rvbbit\$)";
			my $d = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $node->port, Proto => 'tcp')
			  or die "connect: $!";
			binmode($d);
			my $body = pack('N', 196608) . join('', map { "$_\0" } ('user', 'postgres', 'database', $db,
					'client_encoding', 'UTF8')) . "\0";
			send_all($d, pack('N', length($body) + 4) . $body);
			$answers->($d);
			send_all($d, query_msg(encode('UTF-8', $wrapped)));
			my $de = $answers->($d);
			is($de->[0]{P}, $cp->($wrapped, 'high_value_customers'),
				"$db: rvbbit.sql() straight to the server points at the same token") or diag(explain($de));
			close($d);
		}

		# the extended protocol: a rewritten Parse's Sync group loses the
		# position; a plain Parse keeps it
		send_all($s, msg('P', "x1\0" . encode('UTF-8', $q1) . "\0" . pack('n', 0)) . msg('S', '')
			  . msg('P', "x2\0$q2\0" . pack('n', 0)) . msg('S', ''));
		my $p1 = $answers->($s);
		my $p2 = $answers->($s);
		ok(@$p1 == 1 && !defined $p1->[0]{P} && $p1->[0]{M} =~ /\S/,
			"$db: the error of a rewritten Parse comes without a position") or diag(explain($p1));
		is($p2->[0]{P}, 15, "$db: a plain Parse in the next Sync group keeps it") or diag(explain($p2));

		# and the session goes on
		send_all($s, query_msg(q{SELECT 'after positions'}));
		is_deeply($answers->($s), [], "$db: the session still answers");
		close($s);
	}

	# psql's caret, through the gateway
	my $sql = "SELECT 1 AS one;\nRVBBIT MAP 'extract_brand' AS (brand text)\n  USING (SELECT product_name FROM high_value_customers)";
	($rc, $out, $err) = gw_psql($sql, port => $gw2port);
	my ($line, $text) = $err =~ /^LINE (\d+): (.*)$/m;
	my ($caret) = $err =~ /^( *)\^$/m;
	is($line, 3, 'psql through the gateway: the error is on the third line') or diag($err);
	ok(defined $caret && defined $text &&
		  substr($text, length($caret) - length("LINE $line: ")) =~ /^high_value_customers/,
		'... and the caret is under high_value_customers') or diag($err);
}

still_serving('everything above');
($rc, $out, $err) = gw_psql('SELECT 5', port => $gw2port);
is($out, '5', 'the standalone gateway too') or diag($err);
$gw2->kill_kill;
$gw3->kill_kill;
$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal|rvbbit gateway \(pid \d+\) exited with/,
	'no server process and no gateway crashed');
stop_mock($mock);
done_testing();
