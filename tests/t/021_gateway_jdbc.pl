# pgJDBC (Debian's libpostgresql-jdbc-java) through rvbbit-gateway: a
# literal RVBBIT statement as a PreparedStatement, with prepareThreshold=1
# (a named server-side statement from the second execution on) and a
# fetch size of 1 (Execute with a row limit: portal suspension), three
# times; typed columns and rows in order.
use strict;
use warnings;
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $jar = '/usr/share/java/postgresql.jar';
die "pgJDBC is missing: install libpostgresql-jdbc-java (tests/scripts/deps.sh)\n" unless -f $jar;

my $mock = start_mock('--fixtures', "$ENV{RV_ROOT}/tests/mock/fixtures/demo.json");
my $tmp = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());
my ($node, $gwport) = new_gateway_node('gateway_jdbc', $mock,
	conf => qq{password_encryption = 'scram-sha-256'
log_statement = 'all'
},
	hba => "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
	sql => q{CREATE ROLE alice LOGIN PASSWORD 'secret' IN ROLE rvbbit_user;});

IPC::Run::run([ 'javac', '-d', $tmp, '-cp', $jar, "$ENV{RV_ROOT}/tests/clients/GatewayJdbc.java" ],
	'>', \my $jo, '2>', \my $je);
is($? >> 8, 0, 'the JDBC client compiles') or diag($je);

ok( wait_until(sub {
			my ($rc) = gateway_psql('SELECT 1', port => $gwport, user => 'alice',
				password => 'secret', sslmode => 'prefer');
			$rc == 0;
		}),
	'the gateway is up');

my $offset = -s $node->logfile;
IPC::Run::run([ 'java', '-cp', "$jar:$tmp", 'GatewayJdbc', $gwport, 'secret' ],
	'>', \my $out, '2>', \my $err);
is($? >> 8, 0, 'the JDBC client ran') or diag($err);
my $row = 'product_name:text brand:text Apple iPhone 15=Apple; Samsung Galaxy S24=Samsung; Sony WH-1000XM5=Sony; ';
is($out, join('', map { "run $_: $row\n" } 0 .. 2),
	'three runs: typed columns and the rows in the USING order');
my $log = slurp_file($node->logfile, $offset);
my @runs = ($log =~ /execute (S_\d+)\/C_\d+: SELECT \* FROM rvbbit\.sql\(\$rvbbit\$RVBBIT MAP PARALLEL 5/g);
is(scalar(@runs), 3, 'the rewritten statement was executed three times through named portals');
is(scalar(keys %{ { map { $_ => 1 } @runs } }), 1, '... of one named server-side statement');
like($log, qr/execute fetch from S_\d+\/C_\d+: SELECT \* FROM rvbbit\.sql/,
	'... fetched in pieces (portal suspension)');

$node->stop;
stop_mock($mock);
done_testing();
