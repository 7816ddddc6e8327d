# The seed's MAP PARALLEL example against a real llama.cpp llama-server
# (make test-real-server starts it and sets RVBBIT_REAL_SERVER_URL).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = $ENV{RVBBIT_REAL_SERVER_URL}
  or BAIL_OUT('RVBBIT_REAL_SERVER_URL is not set: run make test-real-server');

my $node = PostgreSQL::Test::Cluster->new('real');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = '$url/v1'
rvbbit.default_model = 'local-model'
rvbbit.request_timeout = '600s'
rvbbit.stall_timeout = '600s'
max_worker_processes = 32
});
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION rvbbit;
CREATE TABLE products (id int, product_name text);
INSERT INTO products VALUES (1, 'Apple iPhone 15 Pro'), (2, 'Samsung Galaxy S24'),
  (3, 'Sony WH-1000XM5 headphones'), (4, 'Nike Air Max 90'), (5, 'Dyson V15 Detect'),
  (6, 'LEGO Star Wars Millennium Falcon'), (7, 'Bosch PSB 1800 drill'), (8, 'Levi''s 501 jeans')});

# the seed's example: MAP PARALLEL 10 'extract_brand' AS brand USING (...),
# as the whole query so that the result has real columns
my $map = q{SELECT * FROM rvbbit.sql($$
  RVBBIT MAP PARALLEL 10 'extract_brand' AS brand
  USING (SELECT * FROM products ORDER BY id LIMIT 200) $$)};
for my $run (1, 2)
{
	my @rows = split /\n/, $node->safe_psql('postgres', $map);
	is(join(',', map { (split /\|/)[0] } @rows), '1,2,3,4,5,6,7,8',
		"run $run: MAP PARALLEL returns every row in input order");
	is(scalar(grep { /\|\{"brand": "[^"]+"\}$/ } @rows), 8,
		"run $run: every row has a brand string (response_format honoured)");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE status = 'ok'}),
	'8', 'eight calls were made, the second MAP was served from the cache');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE status = 'cached'}),
	'8', 'eight cache hits');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM rvbbit.calls WHERE status = 'ok' AND response_model IS NOT NULL
	    AND response_id IS NOT NULL AND finish_reason = 'stop' AND input_tokens > 0 AND output_tokens > 0}),
	'8', 'the call log has the answering model, the response id, the finish reason and tokens');

# a reply cut off at max_tokens is an error that says so, and is not cached
my ($ret, $o, $err) = $node->psql('postgres',
	q{SELECT rvbbit.run($$cells: [{name: c, instructions: "Name a brand.", max_tokens: 3,
	  output_schema: {type: object, properties: {brand: {type: string}}, required: [brand]}}]$$, '{}')});
like($err, qr/the reply was cut off at max_tokens \(3\)/, 'truncation by the real server is reported');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.calls WHERE status = 'truncated' AND finish_reason = 'length'}),
	'1', 'logged as truncated with finish_reason length');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rvbbit.cache WHERE cell = 'c'}),
	'0', 'and not cached');

$node->stop;
done_testing();
