# RVBBIT statements through real client libraries and protocols:
#  - Parse + Describe without Execute (psql's \gdesc) sees the rewritten,
#    typed columns;
#  - Perl DBD::Pg: statements prepared on the server (Parse), executed
#    repeatedly, run through the plan cache (EXECUTE, DISCARD PLANS),
#    a placeholder in place of the statement (the literal error), and a
#    call that is not the whole query (one jsonb column) through
#    Parse/Bind/Describe/Execute;
#  - pgbench -M extended / -M prepared: Parse/Bind/Describe/Execute of the
#    literal statement itself, unnamed and named, several times;
#  - Python psycopg2 (tests/clients/psycopg2_client.py).
#
# Note on DBD::Pg: it sends a statement without placeholders with PQexec
# (the simple protocol) even with pg_server_prepare = 1, and it only knows a
# statement's columns after execute (it never sends Describe for a prepared
# statement).  So the DBD::Pg part prepares with pg_prepare_now = 1 (a Parse
# message creating a named server-side statement) and checks that statement
# through SQL EXECUTE and EXPLAIN EXECUTE, while Bind/Execute of the literal
# statement is driven by pgbench, and Describe-before-Execute by \gdesc.
use strict;
use warnings;
use DBI qw(:sql_types);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

BEGIN
{
	eval { require DBD::Pg; 1 }
	  or die "DBD::Pg is missing: install libdbd-pg-perl (tests/scripts/deps.sh)\n";
}

my $mock = start_mock('--fixtures', "$ENV{RV_ROOT}/tests/mock/fixtures/demo.json");
my $mock_stopped = 0;
my $dbh;

# whatever happens, do not leave the mock behind (the nodes are torn down
# by PostgreSQL::Test::Cluster itself); keep the script's exit status
END
{
	local $?;
	$dbh->disconnect if $dbh;
	stop_mock($mock) if $mock && !$mock_stopped;
}

my $node = new_rv_node('clients', $mock);
my $user = $node->safe_psql('postgres', 'SELECT current_user');

sub requests { mock_get($mock, '/stats')->{requests} }

# the server log written since $offset
sub log_since
{
	my ($offset) = @_;
	return slurp_file($node->logfile, $offset);
}

my $typed_stmt = q{MAP 'extract_brand' AS (brand text) USING (SELECT 1::int AS id, 'Apple iPhone 15'::varchar(40) AS product_name)};
my $alias_stmt = q{MAP 'extract_brand' AS brand USING (SELECT 1::int AS id, 'Apple iPhone 15'::varchar(40) AS product_name)};
my $typed = "SELECT * FROM rvbbit.sql(\$\$$typed_stmt\$\$)";
my $alias = "SELECT * FROM rvbbit.sql(\$\$$alias_stmt\$\$)";
my $literal_error = qr/the RVBBIT statement must be a literal/;

###########################################################################
# Parse + Describe, no Execute: psql's \gdesc sends Parse of the unnamed
# statement and Describe of it, and shows the row description.
###########################################################################
my $before = requests();
my ($ret, $out, $err) = $node->psql('postgres', "$typed \\gdesc");
is($ret, 0, '\gdesc of AS (brand text) succeeds');
is($out, "id|integer\nproduct_name|character varying(40)\nbrand|text",
	'Describe of the prepared statement: id integer, product_name varchar(40), brand text');
($ret, $out, $err) = $node->psql('postgres', "$alias \\gdesc");
is($out, "id|integer\nproduct_name|character varying(40)\nbrand|jsonb",
	'Describe with AS brand: the last column is brand jsonb');
is(requests(), $before, 'Parse and Describe sent nothing to the provider');
($ret, $out, $err) = $node->psql('postgres', 'SELECT * FROM rvbbit.sql($1) \gdesc');
isnt($ret, 0, '\gdesc of rvbbit.sql($1) fails');
like($err, $literal_error, 'Parse of rvbbit.sql($1) reports the literal error');

###########################################################################
# DBD::Pg
###########################################################################
$dbh = DBI->connect(
	'dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
	$user, '', { RaiseError => 0, PrintError => 0, AutoCommit => 1 });
ok($dbh, 'DBD::Pg connects') or diag($DBI::errstr);
is($dbh->{pg_server_prepare}, 1, 'DBD::Pg prepares on the server (the default)');
$dbh->do(q{SET log_statement = 'all'});

# check a DBD::Pg statement's description after execute, and its rows
sub check_sth
{
	my ($sth, $what, $names, $types, $rows) = @_;
	is_deeply($sth->{NAME}, $names, "$what: column names @$names");
	is_deeply($sth->{pg_type}, $types, "$what: column types @$types");
	my $got = $sth->fetchall_arrayref;
	if (defined $rows)
	{
		is_deeply($got, $rows, "$what: rows")
		  or diag(explain($got));
	}
	else
	{
		is(scalar(@$got), 1, "$what: one row");
	}
	return $got;
}

# (a) AS (brand text): Parse at prepare time (pg_prepare_now), then executed
# twice through the same statement handle
my $sth = eval { $dbh->prepare($typed, { pg_prepare_now => 1 }) };
ok($sth, 'prepare (Parse) of the AS (brand text) statement succeeds')
  or diag($@ || $dbh->errstr);
my $pname = $sth->{pg_prepare_name};
ok($pname, "DBD::Pg named the server-side statement ($pname)");
is( $dbh->selectrow_array(
		'SELECT statement FROM pg_prepared_statements WHERE name = ? AND NOT from_sql',
		undef, $pname),
	$typed,
	'the Parse message created the server-side prepared statement');

$before = requests();
my $plan = join("\n",
	map { $_->[0] } @{ $dbh->selectall_arrayref("EXPLAIN (VERBOSE, COSTS OFF) EXECUTE $pname") });
like($plan, qr/Custom Scan \(RVBBIT Map\)/,
	'the prepared statement\'s plan streams rvbbit.map (the custom scan)');
like($plan, qr/Output: (?:rvbbit_map\.)?id, (?:rvbbit_map\.)?product_name, (?:rvbbit_map\.)?brand$/m,
	'the prepared statement\'s plan has the rewritten output columns');
is(requests(), $before, 'EXPLAIN EXECUTE sent nothing to the provider');

for my $run (1 .. 2)
{
	ok($sth->execute, "AS (brand text): execute #$run") or diag($sth->errstr);
	check_sth($sth, "AS (brand text) execute #$run",
		[qw(id product_name brand)], [qw(int4 varchar text)],
		[ [ 1, 'Apple iPhone 15', 'Apple' ] ]);
	is_deeply([ @{ $sth->{TYPE} }[ 0, 1 ] ], [ SQL_INTEGER, SQL_VARCHAR ],
		"AS (brand text) execute #$run: DBI TYPE of id and product_name");
	# DBD::Pg reports the raw typmod of varchar: 40 + the 4-byte header
	is($sth->{PRECISION}->[1], 44,
		"AS (brand text) execute #$run: product_name keeps its typmod (varchar(40))");
}

# (b) the server-side statement created by Parse, run through the plan cache
for my $run (1 .. 2)
{
	my $e = $dbh->prepare("EXECUTE $pname");
	ok($e->execute, "EXECUTE of the Parse'd statement #$run") or diag($e->errstr);
	check_sth($e, "EXECUTE of the Parse'd statement #$run",
		[qw(id product_name brand)], [qw(int4 varchar text)],
		[ [ 1, 'Apple iPhone 15', 'Apple' ] ]);
}
ok($dbh->do('DISCARD PLANS'), 'DISCARD PLANS (the next EXECUTE re-analyzes)');
{
	my $e = $dbh->prepare("EXECUTE $pname");
	ok($e->execute, 'EXECUTE after DISCARD PLANS') or diag($e->errstr);
	check_sth($e, 'EXECUTE after DISCARD PLANS',
		[qw(id product_name brand)], [qw(int4 varchar text)],
		[ [ 1, 'Apple iPhone 15', 'Apple' ] ]);
}
cmp_ok(
	$dbh->selectrow_array(
		'SELECT generic_plans + custom_plans FROM pg_prepared_statements WHERE name = ?',
		undef, $pname),
	'>=', 3,
	'the plan cache ran the statement three times');
$sth->finish;
undef $sth;

# (c) AS brand, the default (deferred) prepare: jsonb result column
$sth = $dbh->prepare($alias);
ok($sth, 'prepare of the AS brand statement');
for my $run (1 .. 2)
{
	ok($sth->execute, "AS brand: execute #$run") or diag($sth->errstr);
	my $rows = check_sth($sth, "AS brand execute #$run",
		[qw(id product_name brand)], [qw(int4 varchar jsonb)],
		[ [ 1, 'Apple iPhone 15', '{"brand": "Apple"}' ] ]);
	is_deeply(decode_json($rows->[0][2] // 'null'), { brand => 'Apple' },
		"AS brand execute #$run: the jsonb value");
}
undef $sth;

# (d) a placeholder in place of the statement
my $log_offset = -s $node->logfile;
$sth = eval { $dbh->prepare('SELECT * FROM rvbbit.sql(?)', { pg_prepare_now => 1 }) };
ok(!$sth, 'prepare (Parse) of rvbbit.sql(?) fails');
like($@ || $dbh->errstr // '', $literal_error, 'Parse of rvbbit.sql(?) reports the literal error');

$sth = $dbh->prepare('SELECT * FROM rvbbit.sql(?)');
for my $run (1 .. 2)
{
	# #1 goes through PQexecParams (unnamed), #2 through PQprepare (named)
	my $rv = $sth->execute($alias_stmt);
	ok(!$rv, "execute #$run of rvbbit.sql(?) with a bound statement fails");
	like($sth->errstr // '', $literal_error, "execute #$run of rvbbit.sql(?): the literal error");
	is($sth->state, '0A000', "execute #$run of rvbbit.sql(?): SQLSTATE 0A000");
}
$sth = $dbh->prepare('SELECT * FROM rvbbit.sql($1)');
ok(!$sth->execute($alias_stmt), 'execute of rvbbit.sql($1) fails');
like($sth->errstr // '', $literal_error, 'rvbbit.sql($1): the literal error');
undef $sth;
is($dbh->selectrow_array('SELECT 1'), 1, 'the connection works after the errors');
unlike(log_since($log_offset), qr/execute [^:]*: SELECT \* FROM rvbbit\.sql/,
	'no statement with a parameter for the RVBBIT statement was executed');

# (e) not the whole query: one jsonb column named sql, through
# Parse/Bind/Describe/Execute (LIMIT ? makes DBD::Pg use the extended
# protocol: unnamed on the first execute, a named statement afterwards)
my $expect_obj = { id => 1, product_name => 'Apple iPhone 15', brand => { brand => 'Apple' } };
$log_offset = -s $node->logfile;
$sth = $dbh->prepare("SELECT sql FROM rvbbit.sql(\$\$$alias_stmt\$\$) LIMIT ?");
for my $run (1 .. 3)
{
	ok($sth->execute(10), "LIMIT ?: execute #$run") or diag($sth->errstr);
	my $rows = check_sth($sth, "LIMIT ? execute #$run", ['sql'], ['jsonb'],
		undef);
	is_deeply(decode_json($rows->[0][0] // 'null'), $expect_obj,
		"LIMIT ? execute #$run: the object holds the input and the result");
}
undef $sth;
my $log = log_since($log_offset);
like($log, qr/execute <unnamed>: SELECT sql FROM rvbbit\.sql/,
	'LIMIT ?: executed as the unnamed statement (extended protocol)');
like($log, qr/execute dbdpg_\w+: SELECT sql FROM rvbbit\.sql/,
	'LIMIT ?: executed as a named prepared statement (extended protocol)');

$sth = $dbh->prepare("SELECT sql FROM rvbbit.sql(\$\$$alias_stmt\$\$) LIMIT 10");
ok($sth->execute, 'LIMIT 10: execute') or diag($sth->errstr);
is_deeply($sth->{NAME}, ['sql'], 'LIMIT 10: one column named sql');
is_deeply($sth->{pg_type}, ['jsonb'], 'LIMIT 10: of type jsonb');
my $r = $sth->fetchall_arrayref;
is(scalar(@$r), 1, 'LIMIT 10: one row');
is_deeply(decode_json($r->[0][0] // 'null'), $expect_obj, 'LIMIT 10: the object');
undef $sth;

# (f) a server-side statement over a table, then the table changes: the
# statement must fail rather than return rows under the old description
$dbh->do(q{CREATE TABLE products (id int, product_name text)});
$dbh->do(q{INSERT INTO products VALUES (1, 'Apple iPhone 15'), (2, 'Samsung Galaxy S24')});
$sth = eval {
	$dbh->prepare(
		q{SELECT * FROM rvbbit.sql($$MAP 'extract_brand' AS (brand text) USING (SELECT * FROM products ORDER BY id)$$)},
		{ pg_prepare_now => 1 });
};
ok($sth, 'prepare (Parse) of a statement over a table') or diag($@);
$pname = $sth->{pg_prepare_name};
my $e = $dbh->prepare("EXECUTE $pname");
ok($e->execute, 'EXECUTE of the statement over a table');
check_sth($e, 'EXECUTE of the statement over a table',
	[qw(id product_name brand)], [qw(int4 text text)],
	[ [ 1, 'Apple iPhone 15', 'Apple' ], [ 2, 'Samsung Galaxy S24', 'Samsung' ] ]);
$dbh->do(q{ALTER TABLE products ADD COLUMN price numeric DEFAULT 9});
$e = $dbh->prepare("EXECUTE $pname");
ok(!$e->execute, 'EXECUTE after a column was added to the USING table fails');
like($e->errstr // '',
	qr/cached plan must not change result type|column definition list/,
	'... with an error about the changed columns');
undef $e;
undef $sth;
is($dbh->selectrow_array('SELECT 1'), 1, 'the connection still works');

$dbh->disconnect;
undef $dbh;

###########################################################################
# pgbench: Parse/Bind/Describe/Execute of the literal statement itself,
# unnamed (-M extended) and named (-M prepared), three times each; the
# columns are read by name (\gset) and stored in a table through the same
# protocol.
###########################################################################
my $tmp = PostgreSQL::Test::Utils::tempdir();
$node->safe_psql('postgres',
	q{CREATE TABLE seen (mode text, id int, product_name text, brand text)});

sub write_script
{
	my ($name, $text) = @_;
	my $f = File::Spec->catfile($tmp, $name);
	open(my $fh, '>', $f) or die "cannot write $f: $!";
	print $fh $text;
	close($fh);
	return $f;
}

sub pgbench
{
	my ($mode, $script, @extra) = @_;
	local $ENV{PGOPTIONS} = '-c log_statement=all';
	my ($stdout, $stderr) = ('', '');
	IPC::Run::run(
		[
			'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-U', $user,
			'-M', $mode, '-c', '1', '-t', '3', @extra, '-f', $script, 'postgres'
		],
		'>', \$stdout, '2>', \$stderr);
	return ($? >> 8, $stdout, $stderr);
}

my $store = "INSERT INTO seen VALUES (:label, :id, :product_name, :brand);\n";
my %scripts = (
	typed => write_script('typed.sql', "$typed \\gset\n$store"),
	alias => write_script('alias.sql', "$alias \\gset\n$store"),
	discard => write_script('discard.sql', "DISCARD PLANS;\n$typed \\gset\n$store"),
	param => write_script('param.sql', "SELECT * FROM rvbbit.sql(:stmt);\n"),
);

for my $case (
	[ 'extended', 'typed', 'extended' ],
	[ 'prepared', 'typed', 'prepared' ],
	[ 'prepared', 'alias', 'prepared-jsonb' ],
	[ 'prepared', 'discard', 'prepared-discard' ])
{
	my ($mode, $script, $label) = @$case;
	$log_offset = -s $node->logfile;
	my ($rc, $so, $se) = pgbench($mode, $scripts{$script}, '-D', "label=$label");
	is($rc, 0, "pgbench -M $mode ($label) runs the statement three times")
	  or diag("stdout:\n$so\nstderr:\n$se");
	like($so, qr/number of transactions actually processed: 3\/3/,
		"pgbench -M $mode ($label): 3 of 3 transactions");
	my $brand = $script eq 'alias' ? '{"brand": "Apple"}' : 'Apple';
	is( $node->safe_psql('postgres',
			qq{SELECT count(*), string_agg(DISTINCT concat_ws('|', id, product_name, brand), ',')
			   FROM seen WHERE mode = '$label'}),
		"3|1|Apple iPhone 15|$brand",
		"pgbench -M $mode ($label): every run saw id, product_name and brand");
	my $name = $mode eq 'extended' ? '<unnamed>' : 'P_\d+';
	my @runs = (log_since($log_offset) =~ /execute $name: SELECT \* FROM rvbbit\.sql/g);
	is(scalar(@runs), 3,
		"pgbench -M $mode ($label): the server executed the statement 3 times as $name");
}

for my $mode (qw(extended prepared))
{
	my ($rc, $so, $se) = pgbench($mode, $scripts{param}, '-D', "stmt=$alias_stmt");
	isnt($rc, 0, "pgbench -M $mode with rvbbit.sql(:stmt) fails");
	like($se, $literal_error, "pgbench -M $mode with rvbbit.sql(:stmt): the literal error");
}

###########################################################################
# psycopg2 (simple protocol; Debian's python, which has psycopg2)
###########################################################################
{
	my $py = -x '/usr/bin/python3' ? '/usr/bin/python3' : ($ENV{PYTHON} || 'python3');
	my ($stdout, $stderr) = ('', '');
	IPC::Run::run(
		[
			$py, "$ENV{RV_ROOT}/tests/clients/psycopg2_client.py",
			'--host', $node->host, '--port', $node->port,
			'--user', $user, '--dbname', 'postgres'
		],
		'>', \$stdout, '2>', \$stderr);
	my $rc = $? >> 8;
	note("psycopg2 client output:\n$stdout$stderr");
	is($rc, 0, 'psycopg2 client exits 0');
	like($stdout, qr/^psycopg2 client: (\d+) passed, 0 failed$/m, 'psycopg2 client: no check failed');
	unlike($stdout, qr/^not ok/m, 'psycopg2 client: no "not ok" line');
	for my $check (
		'seed: column names product_name, brand',
		'seed: column types text (25), jsonb (3802)',
		'seed: rows in the USING order with the brands',
		'PARALLEL 5: column names product_name, brand',
		'PARALLEL 5: column types text (25), jsonb (3802)',
		'PARALLEL 5: rows in the USING order with the brands',
		'AS (brand text): types int4, varchar, text',
		'AS (brand text): product_name keeps its typmod varchar(40)',
		'with LIMIT: one jsonb column named sql',
		'named cursor: columns product_name text, brand jsonb')
	{
		like($stdout, qr/^ok \d+ - \Q$check\E$/m, "psycopg2 client: $check");
	}
}

$node->stop;
stop_mock($mock);
$mock_stopped = 1;
done_testing();
