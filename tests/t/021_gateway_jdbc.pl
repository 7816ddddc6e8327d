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
my $gwport = PostgreSQL::Test::Cluster::get_free_port();
my $node = PostgreSQL::Test::Cluster->new('gateway_jdbc');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$mock->{port}/v1'
rvbbit.default_model = 'mock/tap'
max_worker_processes = 32
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
log_statement = 'all'
rvbbit.gateway_port = $gwport
rvbbit.gateway_listen_addresses = '127.0.0.1'
});
open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die;
print $hba "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
close($hba);
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION rvbbit;
CREATE ROLE alice LOGIN PASSWORD 'secret' IN ROLE rvbbit_user;
});

IPC::Run::run([ 'javac', '-d', $tmp, '-cp', $jar, "$ENV{RV_ROOT}/tests/clients/GatewayJdbc.java" ],
	'>', \my $jo, '2>', \my $je);
is($? >> 8, 0, 'the JDBC client compiles') or diag($je);

ok( wait_until(sub {
			local $ENV{PGPASSWORD} = 'secret';
			IPC::Run::run([ 'psql', '-X', '-d', "host=127.0.0.1 port=$gwport dbname=postgres user=alice", '-c', 'SELECT 1' ],
				'>', \my $o, '2>', \my $e);
			$? == 0;
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
