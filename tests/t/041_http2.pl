# HTTP/2 over TLS against Debian's nginx serving a fixed chat completion:
# PARALLEL 2000 under a 1,024 open-file limit returns every row over few
# connections (streams multiplexed), the CA comes from rvbbit.ca_file and
# is needed; plain HTTP/1.1 still works.
use strict;
use warnings;
use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{RV_ROOT} . '/tests/t';
use RvTest;

my $nginx = -x '/usr/sbin/nginx' ? '/usr/sbin/nginx' : undef;
die 'nginx is not installed: tests/scripts/deps.sh installs it' unless $nginx;

my $dir = tempdir(CLEANUP => 1);

# a self-signed certificate for 127.0.0.1, which is also its own CA
system_or_bail('openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-nodes', '-keyout', "$dir/key.pem", '-out', "$dir/cert.pem", '-days', '2',
	'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost');

my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $plain_port = PostgreSQL::Test::Cluster::get_free_port();
my $reply = '{"id":"fixed","object":"chat.completion","created":1,"model":"m",'
  . '"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
  . '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}';
mkdir "$dir/tmp";
open(my $fh, '>', "$dir/nginx.conf") or die;
print $fh <<"EOF";
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    log_format conns '\$connection \$server_protocol \$status \$ssl_session_reused';
    access_log $dir/access.log conns;
    client_max_body_size 10m;
    client_body_buffer_size 1m;
    server {
        listen 127.0.0.1:$tls_port ssl http2;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        http2_max_concurrent_streams 256;
        # a connection serves 500 requests, then the client opens another
        keepalive_requests 500;
        location / { default_type application/json; return 200 '$reply'; }
    }
    server {
        listen 127.0.0.1:$plain_port;
        keepalive_requests 100000;
        location / { default_type application/json; return 200 '$reply'; }
    }
}
EOF
close($fh);
my $ngx_pid = fork();
die "fork failed" unless defined $ngx_pid;
if ($ngx_pid == 0)
{
	open(STDOUT, '>', "$dir/nginx.out");
	open(STDERR, '>&', \*STDOUT);
	exec($nginx, '-e', "$dir/error.log", '-p', $dir, '-c', "$dir/nginx.conf") or die "exec: $!";
}
END { if ($ngx_pid) { kill 'TERM', $ngx_pid; waitpid($ngx_pid, 0); } }

# the server (and so the worker) runs with a 1,024 open-file limit, soft
# and hard: pg_ctl is wrapped to set it
my ($real_pg_ctl) = grep { -x "$_/pg_ctl" } split /:/, $ENV{PATH};
die 'pg_ctl not found' unless $real_pg_ctl;
mkdir "$dir/bin";
open($fh, '>', "$dir/bin/pg_ctl") or die;
print $fh "#!/bin/sh\nulimit -n 1024\nexec '$real_pg_ctl/pg_ctl' \"\$@\"\n";
close($fh);
chmod 0755, "$dir/bin/pg_ctl";
$ENV{PATH} = "$dir/bin:$ENV{PATH}";
chmod 0755, $dir;
chmod 0644, "$dir/cert.pem";

my $mock = start_mock();    # not used for the calls; new_rv_node wants one
my $node = new_rv_node('http2', $mock, qq{
rvbbit.ca_file = '$dir/cert.pem'
rvbbit.max_concurrency = 5000
});
my $limit = $node->safe_psql('postgres',
	q{SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/limits'), 'Max open files +(\d+) +(\d+)'))::text});
is($limit, '{1024,1024}', 'the server runs with a 1,024 open-file limit');

my $echo = inline_echo();
sub map_n
{
	my ($base, $n, $parallel) = @_;
	return qq{SET rvbbit.api_base = '$base';
SELECT count(*), count(*) FILTER (WHERE result = '"ok"') FROM rvbbit.map('$echo',
  \$\$SELECT n, 'row ' || n AS text FROM generate_series(1, $n) n\$\$, $parallel, '{"cache": false}')
  AS t(n int, text text, result jsonb)};
}

sub log_lines
{
	open(my $l, '<', "$dir/access.log") or return ();
	my @lines = <$l>;
	close($l);
	truncate("$dir/access.log", 0);
	return @lines;
}

ok(wait_until(sub { -s "$dir/nginx.pid" }), 'nginx started');

# TLS + HTTP/2, PARALLEL 2000
log_lines();
my ($out, $err);
$node->psql('postgres', map_n("https://127.0.0.1:$tls_port/v1", 2000, 2000),
	stdout => \$out, stderr => \$err);
is($out, '2000|2000', 'PARALLEL 2000 over HTTP/2: every row answered') or diag $err;
is($err, '', 'no warnings or errors');
my @lines = log_lines();
# a stream reset when nginx closes a connection (GOAWAY) is retried, so
# nginx may have seen a request twice
cmp_ok(scalar(@lines), '>=', 2000, 'nginx answered every request (' . scalar(@lines) . ')');
is(scalar(grep { / HTTP\/2\.0 200 / } @lines), scalar(@lines), 'all over HTTP/2');
my %conns = map { (split / /)[0] => 1 } @lines;
my $nconn = scalar(keys %conns);
note "HTTP/2: 2000 requests over $nconn connections";
cmp_ok($nconn, '<=', 40, "few connections for 2000 streams ($nconn; nginx closes one after 500 requests)");
# TLS session resumption is configured (curl share handle) but not
# asserted: with TLS 1.3 it was not observed here (see the README)
my $reused = grep { / r$/ } @lines;
note "requests on resumed TLS sessions: $reused";

# nginx's `return 200` answers before it has read the request body, then
# resets the stream with NO_ERROR (RFC 9113 8.1); libcurl 7.88 calls that
# a stream error.  The complete answer is kept, not retried after a backoff
# (which stalled the reorder window: 2,000 rows at PARALLEL 10 took 24 s
# instead of 2 s).  A few streams do not complete on a connection nginx
# ends: those (no status) are still retried.
my $bare_q = q{SELECT count(*) FILTER (WHERE error = 'Stream error in the HTTP/2 framing layer') || '|' ||
	  count(*) FILTER (WHERE error LIKE 'the provider closed the HTTP/2 stream before%') FROM rvbbit.calls};
my $bare_p2000 = $node->safe_psql('postgres', $bare_q);
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
$node->psql('postgres', map_n("https://127.0.0.1:$tls_port/v1", 500, 10),
	stdout => \$out, stderr => \$err);
is($out, '500|500', 'PARALLEL 10 over HTTP/2: every row answered') or diag $err;
# (a stream whose connection nginx ends after the status line but before
# the body is complete is retried, rightly; under load that happened once in
# many runs, so the check allows 1%: the bug retried nearly every reply)
my ($okn, $retried200) = split /\|/, $node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE status = 'ok') || '|' ||
	  count(*) FILTER (WHERE status = 'retry' AND http_status = 200) FROM rvbbit.calls});
is($okn, '500', 'every row answered once');
cmp_ok($retried200, '<=', 5, "no complete 200 reply was thrown away and retried ($retried200 retries after a 200)");
# when nginx closes a stream while libcurl is still sending the body, curl
# fails the transfer without a message or a status: the worker names that
# case (and retries it at once: 20,000 rows at PARALLEL 200 took 21 s with
# a backoff, 2.8 s without).  No retry is left with curl's bare message.
# (counted over this run and the PARALLEL 2000 one above)
my ($bare, $early) = split /\|/, $node->safe_psql('postgres', $bare_q);
my ($bare2, $early2) = split /\|/, $bare_p2000;
is($bare + $bare2, 0, 'a stream closed while its body was being sent is recognised');
note 'retries of streams closed before their body was sent: ' . ($early + $early2);

# large bodies (60 kB to 500 kB, beyond the stream's flow-control window):
# nginx answers before it has read them and closes the stream; a reply
# that came whole used to wait, unfinished by libcurl 7.88, for the stall
# timeout, and was then thrown away as "sent nothing" (and counted against
# the circuit breaker).  Now a whole reply ends the transfer.
$node->safe_psql('postgres', 'TRUNCATE rvbbit.call_log');
$node->psql('postgres', q{SET rvbbit.stall_timeout = '5s';} . (map_n("https://127.0.0.1:$tls_port/v1", 30, 5)
	=~ s/'row ' \|\| n/repeat('y', (ARRAY[60000, 200000, 500000])[1 + n % 3]) || n/r
	=~ s/"cache": false/"cache": false, "max_retries": 10/r),
	stdout => \$out, stderr => \$err);
my ($lost200, $stalls, $okbig) = split /\|/, $node->safe_psql('postgres', q{SELECT
	  count(*) FILTER (WHERE http_status = 200 AND status <> 'ok') || '|' ||
	  count(*) FILTER (WHERE error LIKE 'LLM provider sent nothing%') || '|' ||
	  count(*) FILTER (WHERE status = 'ok') FROM rvbbit.calls});
is($lost200, '0', 'no whole 200 reply to a large body is thrown away');
is($stalls, '0', 'no transfer with a large body waits for the stall timeout');
cmp_ok($okbig, '>', 0, "large bodies are answered ($okbig of 30; nginx may close a stream before the body is sent, see the README)");
log_lines();

# plain http:// stays HTTP/1.1
$node->psql('postgres', map_n("http://127.0.0.1:$plain_port/v1", 300, 50),
	stdout => \$out, stderr => \$err);
is($out, '300|300', 'HTTP/1.1: every row answered') or diag $err;
@lines = log_lines();
is(scalar(grep { / HTTP\/1\.1 200 / } @lines), 300, 'all over HTTP/1.1');
%conns = map { (split / /)[0] => 1 } @lines;
cmp_ok(scalar(keys %conns), '<=', 50, 'at most PARALLEL connections over HTTP/1.1');

# without the CA the certificate is refused
$node->append_conf('postgresql.conf', "rvbbit.ca_file = ''\n");
$node->restart;
$node->psql('postgres', map_n("https://127.0.0.1:$tls_port/v1", 1, 1) =~ s/"cache": false/"cache": false, "on_error": "fail", "max_retries": 0/r,
	stdout => \$out, stderr => \$err);
like($err, qr/certificate|SSL/i, 'without rvbbit.ca_file the self-signed certificate is refused');

done_testing();
