# rvbbit-gateway through its supervisor: literal RVBBIT statements from
# psql (simple protocol, several statements in one Query, \gdesc, \copy of
# 100 MB with a checksum), psycopg2, SCRAM with a wrong and a right
# password, a trust upstream refused, sslmode=require and prefer (TLS
# terminated by the gateway with the server's certificate), and the
# gateway SIGKILLed: restarted by the supervisor while PostgreSQL and its
# other sessions go on.
use strict;
use warnings;
use DBI;
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $mock = start_mock('--fixtures', "$ENV{RV_ROOT}/tests/mock/fixtures/demo.json");
my $tmp = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());

# TLS terminated by the gateway with the server's certificate; initdb's
# pg_hba.conf trusts loopback connections: replaced
my ($node, $gwport) = new_gateway_node('gateway', $mock,
	ssl => $tmp,
	conf => qq{max_connections = 260
password_encryption = 'scram-sha-256'
},
	hba => "local all all trust\nhost all trusty 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
	sql => q{
CREATE ROLE alice LOGIN PASSWORD 'secret' IN ROLE rvbbit_user;
CREATE ROLE trusty LOGIN;
GRANT CREATE ON SCHEMA public TO alice;
});

# psql through the gateway, as alice by default; returns (exit code,
# stdout, stderr)
sub gw_psql
{
	my ($sql, %o) = @_;
	return gateway_psql($sql, port => $gwport, user => 'alice', password => 'secret', %o);
}

my ($rc, $out, $err);
ok( wait_until(sub { ($rc) = gw_psql('SELECT 1'); $rc == 0 }),
	'the supervisor started the gateway and a client connects through it');

###########################################################################
# authentication
###########################################################################
($rc, $out, $err) = gw_psql('SELECT current_user', password => 'wrong');
isnt($rc, 0, 'SCRAM with a wrong password fails');
like($err, qr/password authentication failed for user "alice"/, '... with the server\'s own error');
($rc, $out, $err) = gw_psql('SELECT current_user, inet_client_addr()');
is($out, 'alice|127.0.0.1', 'SCRAM with the right password: alice, seen from loopback');

($rc, $out, $err) = gw_psql('SELECT 1', user => 'trusty');
isnt($rc, 0, 'a session the server trusts without a challenge is refused');
like($err, qr/FATAL:  the rvbbit gateway refuses a server that lets the session in without authentication/,
	'... with the gateway\'s error');
like($err, qr/HINT:  .*scram-sha-256.*rvbbit\.gateway_allow_trust/, '... and its hint');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'trusty'}),
	'0', 'the refused session is gone from the server');

###########################################################################
# literal RVBBIT statements
###########################################################################
my $seed = q{RVBBIT MAP PARALLEL 5 'extract_brand' AS brand
USING (
  SELECT * FROM (VALUES
    ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Sony WH-1000XM5'),
    ('Google Pixel 8'), ('OnePlus 12')
  ) AS t(product_name)
);};
($rc, $out, $err) = gw_psql($seed);
is($rc, 0, 'the seed statement, literally, through the gateway') or diag($err);
my @rows = split /\n/, $out;
is(scalar(@rows), 5, 'five rows');
like($rows[0], qr/^Apple iPhone 15\|\{"brand": "Apple"\}$/, 'first row: product_name and the brand jsonb');
like($rows[1], qr/^Samsung Galaxy S24\|/, 'rows in the USING order');

($rc, $out, $err) = gw_psql(q{SELECT 'a' AS x; rvbbit map 'extract_brand' AS (brand text) USING (SELECT 'Apple iPhone 15' AS product_name, ';RVBBIT' AS q); SELECT 'RVBBIT MAP' AS y /* RVBBIT */});
is($rc, 0, 'one Query with three statements, one of them RVBBIT') or diag($err);
is($out, "a\nApple iPhone 15|;RVBBIT|Apple\nRVBBIT MAP", 'each statement ran; only the RVBBIT one was rewritten');

($rc, $out, $err) = gw_psql("RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 1::int AS id, 'Apple iPhone 15'::varchar(40) AS product_name) \\gdesc\n", stdin => 1);
is($out, "id|integer\nproduct_name|character varying(40)\nbrand|text",
	'\gdesc (Parse + Describe) of a literal RVBBIT statement: typed columns');

($rc, $out, $err) = gw_psql(q{CREATE TABLE brands AS RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Apple iPhone 15' AS product_name); SELECT * FROM brands});
is($out, "SELECT 1\nApple iPhone 15|Apple", 'CREATE TABLE ... AS RVBBIT');
($rc, $out, $err) = gw_psql(q{EXPLAIN (COSTS OFF) RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 1 AS p)});
like($out, qr/rvbbit/i, 'EXPLAIN RVBBIT shows the rewritten plan');

($rc, $out, $err) = gw_psql(q{SELECT $$RVBBIT MAP$$, 'it''s', E'\\' RVBBIT', current_user AS "RVBBIT"});
is($out, 'RVBBIT MAP|it\'s|\' RVBBIT|alice', 'quotes that look like RVBBIT are left alone') or diag($err);

###########################################################################
# psycopg2
###########################################################################
{
	my $py = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
	my $script = <<"PY";
import psycopg2
c = psycopg2.connect(host='127.0.0.1', port=$gwport, dbname='postgres', user='alice', password='secret')
cur = c.cursor()
cur.execute("RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Apple iPhone 15'::text AS product_name)")
print([d.name for d in cur.description], [d.type_code for d in cur.description], cur.fetchall())
PY
	IPC::Run::run([ $py, '-c', $script ], '>', \my $pout, '2>', \my $perr);
	is($pout, "['product_name', 'brand'] [25, 25] [('Apple iPhone 15', 'Apple')]\n",
		'psycopg2: typed columns and the row') or diag($perr);
}

###########################################################################
# TLS
###########################################################################
# psql's \conninfo: "SSL connection (protocol: TLSv1.3, ...)" up to 17, a
# table with the line "SSL Protocol|TLSv1.3" from 18 on
my $tls_re = qr/SSL connection \(protocol: TLS|^SSL Protocol\|TLS/m;
($rc, $out, $err) = gw_psql('\conninfo', sslmode => 'require');
is($rc, 0, 'sslmode=require connects through the gateway') or diag($err);
like($out, $tls_re, '... over TLS');
($rc, $out, $err) = gw_psql('\conninfo', sslmode => 'prefer');
like($out, $tls_re, 'sslmode=prefer gets TLS');
($rc, $out, $err) = gw_psql(q{RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT 'Sony WH-1000XM5' AS product_name)}, sslmode => 'require');
is($out, 'Sony WH-1000XM5|Sony', 'a literal RVBBIT statement over TLS');

###########################################################################
# 100 MB through \copy, both ways, checksums compared
###########################################################################
{
	my $in = "$tmp/big.in";
	open(my $fh, '>', $in) or die;
	my $line = ('x' x 990);
	for my $i (1 .. 100_000) { printf $fh "%d\t%s\n", $i, $line; }
	close($fh);
	($rc, $out, $err) = gw_psql("CREATE TABLE big (id int, t text);\n\\copy big FROM '$in'\n\\copy (SELECT * FROM big ORDER BY id) TO '$tmp/big.out'\n", stdin => 1);
	is($rc, 0, '\copy of 100 MB in and out through the gateway') or diag($err);
	is($node->safe_psql('postgres', 'SELECT count(*), sum(length(t)) FROM big'),
		'100000|99000000', 'the server has every row');
	my $md5 = sub {
		IPC::Run::run([ 'md5sum', $_[0] ], '>', \my $o);
		return (split / /, $o)[0];
	};
	is($md5->("$tmp/big.out"), $md5->($in), 'what came back is what went in (md5)');
}

###########################################################################
# Ctrl-C: psql sends a CancelRequest to the gateway, which forwards it.
# The mock holds the replies, so the MAP is provably still running when
# psql is interrupted, and only the cancel can end it.
###########################################################################
{
	my $slow = q{RVBBIT MAP 'cells: [{name: say, instructions: "{{ input.text }}"}]' USING (SELECT '[[hold:gwcancel]] row ' || g AS text FROM generate_series(1, 40) g)};
	my $before = mock_get($mock, '/stats')->{requests};
	local $ENV{PGPASSWORD} = 'secret';
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', "host=127.0.0.1 port=$gwport dbname=postgres user=alice sslmode=disable", '-c', $slow ],
		'>', \$o, '2>', \$e);
	ok(wait_until(sub { mock_get($mock, '/stats')->{requests} > $before }),
		'the slow MAP through the gateway is calling the provider');
	$h->signal('INT');
	$h->finish;
	like($e, qr/canceling statement due to user request/, 'Ctrl-C cancelled it through the gateway');
	my $after = mock_get($mock, '/stats')->{requests};
	cmp_ok($after - $before, '<', 40, 'the provider saw fewer requests than rows');
	ok(wait_until(sub {
				$node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%hold:gwcancel%' AND state = 'active' AND pid <> pg_backend_pid()}) eq '0';
			}),
		'the statement is no longer running');
	is(mock_get($mock, '/stats')->{requests}, $after, 'no request reached the provider after the cancel');
}

###########################################################################
# 200 concurrent sessions, each running a MAP
###########################################################################
{
	local $ENV{PGPASSWORD} = 'secret';
	my @h;
	my @out;
	for my $i (0 .. 199)
	{
		$out[$i] = '';
		push @h, IPC::Run::start(
			[ 'psql', '-X', '-A', '-t', '-d', "host=127.0.0.1 port=$gwport dbname=postgres user=alice sslmode=disable",
			  '-c', "RVBBIT MAP 'extract_brand' AS (brand text) USING (SELECT $i AS i, 'Apple iPhone 15' AS product_name)" ],
			'>', \$out[$i], '2>&1');
	}
	$_->finish for @h;
	my $good = grep { $out[$_] eq "$_|Apple iPhone 15|Apple\n" } 0 .. 199;
	is($good, 200, '200 concurrent sessions through the gateway each got their MAP row')
	  or diag(join('', grep { !/Apple$/ } @out[0 .. 199]));
}

###########################################################################
# the gateway SIGKILLed: restarted, PostgreSQL not restarted
###########################################################################
{
	my $dbh = DBI->connect('dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
		'', '', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
	my $start_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
	my $pm_pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit gateway supervisor'});
	my $log = slurp_file($node->logfile);
	my @pids = ($log =~ /rvbbit gateway started on port \d+ \(pid (\d+)\)/g);
	my $gw_pid = $pids[-1];
	ok($gw_pid && kill(0, $gw_pid), "the gateway runs (pid $gw_pid)");
	kill 'KILL', $gw_pid;
	ok( wait_until(sub {
				my @p = (slurp_file($node->logfile) =~ /rvbbit gateway started on port \d+ \(pid (\d+)\)/g);
				@p && $p[-1] != $gw_pid;
			}),
		'the supervisor started a new gateway');
	like(slurp_file($node->logfile), qr/rvbbit gateway \(pid $gw_pid\) was terminated by signal 9/,
		'the supervisor logged the death');
	ok(wait_until(sub { ($rc) = gw_psql('SELECT 1'); $rc == 0 }), 'clients connect through the new gateway');
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $start_time,
		'PostgreSQL was not restarted');
	is($node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit gateway supervisor'}),
		$pm_pid, 'the same supervisor');
	is($dbh->selectrow_array('SELECT 42'), 42, 'a direct session opened before is unaffected');
	$dbh->disconnect;
}

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal 11|server process .* was terminated/,
	'no server process crashed');
stop_mock($mock);
done_testing();
