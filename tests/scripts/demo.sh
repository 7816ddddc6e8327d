#!/usr/bin/env bash
# make demo: install what is missing, build and install rvbbit, start a
# throwaway PostgreSQL 15 with the library preloaded, and run the seed
# examples.  Uses a real provider when an API key is in the environment
# (RVBBIT_API_KEY or OPENROUTER_API_KEY: OpenRouter; OPENAI_API_KEY: OpenAI;
# ANTHROPIC_API_KEY: Anthropic), the bundled mock provider otherwise.
# The server and the mock keep running; "bash tests/scripts/demo.sh stop"
# (or "make demo-stop") stops them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
DEMO=${RVBBIT_DEMO_DIR:-/tmp/rvbbit-demo}
PORT=${RVBBIT_DEMO_PORT:-5499}

stop_demo() {
  . "$here/common.sh"
  pg_stop "$DEMO/pg"
  if [ -f "$DEMO/mock/mock.pid" ]; then
    pid=$(cat "$DEMO/mock/mock.pid")
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$DEMO/mock/mock.pid"
}

if [ "${1:-}" = "stop" ]; then
  stop_demo
  echo "rvbbit demo stopped."
  exit 0
fi

bash "$here/deps.sh"
. "$here/common.sh"
[ -d "$DEMO" ] && stop_demo
echo "== building and installing rvbbit"
build_install

mkdir -p "$DEMO/mock"
chmod 755 "$DEMO"
if ! "$PYTHON" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$PORT" 2>/dev/null; then
  PORT=$(free_port)
fi
# the gateway: literal RVBBIT statements from any client, on RVBBIT's port
GWPORT=15432
if ! "$PYTHON" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$GWPORT" 2>/dev/null; then
  GWPORT=$(free_port)
fi
conf="rvbbit.worker_idle_timeout = 300
password_encryption = 'scram-sha-256'
rvbbit.gateway_port = $GWPORT
rvbbit.gateway_listen_addresses = 'localhost'"
keyvar=""
if [ -n "${RVBBIT_API_KEY:-}${OPENROUTER_API_KEY:-}" ]; then
  provider="OpenRouter (real LLM calls)"
  keyvar=$([ -n "${RVBBIT_API_KEY:-}" ] && echo RVBBIT_API_KEY || echo OPENROUTER_API_KEY)
  conf="$conf
rvbbit.default_model = 'openai/gpt-4o-mini'"
elif [ -n "${OPENAI_API_KEY:-}" ]; then
  provider="OpenAI (real LLM calls)"
  keyvar=OPENAI_API_KEY
  conf="$conf
rvbbit.api_base = 'https://api.openai.com/v1'
rvbbit.default_model = 'gpt-4o-mini'"
elif [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  provider="Anthropic (real LLM calls)"
  keyvar=ANTHROPIC_API_KEY
  conf="$conf
rvbbit.api_base = 'https://api.anthropic.com/v1'
rvbbit.api_flavor = 'anthropic'
rvbbit.default_model = 'claude-3-5-haiku-latest'"
else
  provider="the bundled mock provider (no API key in the environment)"
  rm -f "$DEMO/mock/mock.port"
  setsid "$PYTHON" "$RV_ROOT/tests/mock/mock_llm.py" --host 127.0.0.1 --port 0 \
      --port-file "$DEMO/mock/mock.port" --pid-file "$DEMO/mock/mock.pid" \
      --latency-ms 300 --fixtures "$RV_ROOT/tests/mock/fixtures/demo.json" \
      >"$DEMO/mock/mock.log" 2>&1 < /dev/null &
  for i in $(seq 1 100); do [ -s "$DEMO/mock/mock.port" ] && break; sleep 0.1; done
  MOCK_PORT=$(cat "$DEMO/mock/mock.port")
  conf="$conf
rvbbit.api_base = 'http://127.0.0.1:$MOCK_PORT/v1'
rvbbit.default_model = 'mock/demo'"
fi

echo "== starting PostgreSQL 15 in $DEMO/pg (port $PORT, gateway $GWPORT) with $provider"
pg_init "$DEMO/pg" "$PORT" "$conf"
# the gateway refuses trust: ask for a password on host connections
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n' \
  >"$DEMO/pg/data/pg_hba.conf"
if [ -n "$keyvar" ]; then
  # the key reaches the server through its environment, never a file or a log
  as_pg env "RVBBIT_API_KEY=${!keyvar}" "$PG_BINDIR/pg_ctl" -D "$DEMO/pg/data" \
      -l "$DEMO/pg/server.log" -w -t 60 start >/dev/null
else
  pg_start "$DEMO/pg"
fi

PSQL=("$PG_BINDIR/psql" -X -h "$DEMO/pg" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -q -c "CREATE EXTENSION rvbbit"
"${PSQL[@]}" -q -c "ALTER ROLE postgres PASSWORD 'rvbbit'"

# the literal statements go through the gateway
GW_PSQL=(env PGPASSWORD=rvbbit "$PG_BINDIR/psql" -X -h 127.0.0.1 -p "$GWPORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
for i in $(seq 1 100); do "${GW_PSQL[@]}" -qAt -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done

run() {
  echo
  echo "rvbbit=# $1"
  "${PSQL[@]}" -c "$1"
}

gw_run() {
  echo
  echo "rvbbit (gateway :$GWPORT)=# $1"
  "${GW_PSQL[@]}" -c "$1"
}

gw_run "RVBBIT MAP PARALLEL 5 'traits/extract_brand.yaml' AS brand
USING (
  SELECT * FROM (VALUES
    ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Sony WH-1000XM5'),
    ('Google Pixel 8'), ('OnePlus 12')
  ) AS t(product_name)
);"

gw_run "RVBBIT MAP PARALLEL 5 'traits/extract_brand.yaml' AS (brand text)
USING (SELECT * FROM (VALUES (1, 'Apple iPhone 15'), (2, 'Samsung Galaxy S24'),
                             (3, 'Sony WH-1000XM5 headphones'), (4, 'Nike Air Max 90'),
                             (5, 'Dyson V15 Detect vacuum'), (6, 'LEGO Star Wars Millennium Falcon'))
       AS t(id, product_name));"

run "SELECT rvbbit.run('traits/classify_sentiment.yaml', '{\"review_text\": \"I love it, works great\"}');"

run "SELECT cascade, model, calls, cache_hits, input_tokens, output_tokens, avg_latency_ms FROM rvbbit.stats;"

cat <<MSG

The server keeps running.  Literal RVBBIT statements work through the gateway
(user postgres, password rvbbit):

    psql "host=localhost port=$GWPORT user=postgres dbname=postgres"
    DBeaver / JDBC:  jdbc:postgresql://localhost:$GWPORT/postgres  (user postgres, password rvbbit)

and try, for example:

    RVBBIT MAP PARALLEL 10 'traits/extract_brand.yaml' AS (brand text)
    USING (SELECT 'Levi''s 501 jeans' AS product_name);

Directly (no gateway), wrap the statement in rvbbit.sql():

    psql -h $DEMO/pg -p $PORT -U postgres
    SELECT * FROM rvbbit.sql(\$\$ MAP 'extract_brand' USING (SELECT 'Levi''s 501 jeans' AS product_name) \$\$);
    SELECT * FROM rvbbit.calls ORDER BY id DESC LIMIT 5;

Stop it with:  make demo-stop
MSG
