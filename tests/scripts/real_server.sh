#!/usr/bin/env bash
# make test-real-server: the seed's MAP PARALLEL example against a real
# llama.cpp llama-server (not part of make test).
#
# 1. llama-server is built from the llama.cpp source that npm's
#    node-llama-cpp package carries (llama/gitRelease.bundle), with cmake,
#    in build/real-server/ (ignored by git; kept between runs).  The first
#    build takes 10-20 minutes on a loaded 2-core machine.
# 2. The model: RVBBIT_GGUF=/path/to/model.gguf, else the first *.gguf
#    under build/real-server/models/ or shipped by an installed Debian
#    package (/usr/share).  Debian 12 and the npm registry ship no trained
#    GGUF model (llama.cpp's ggml-vocab-*.gguf are tokenizers without
#    weights), so by default tests/real/make_tiny_gguf.py constructs a tiny
#    one from the same source (gguf-py and the LLaMA tokenizer; needs
#    python3-numpy): it answers the shortest JSON a schema allows.
# 3. llama-server listens on a free loopback port, as the postgres user
#    when run as root (the TAP test, which runs as that user, freezes it
#    with SIGSTOP and wakes it with SIGCONT); a few raw replies are recorded
#    as fixtures (build/real-server/recorded/); then
#    tests/real/010_llama_server.pl runs through tests/scripts/test.sh.
# Prints how long each step took (build, model, run).
set -u
. "$(dirname "$0")/common.sh"

NLC_VERSION="${NLC_VERSION:-3.22.1}"
cache="$RV_ROOT/build/real-server"
src="$cache/llama.cpp"
bin="$src/build/bin/llama-server"
mkdir -p "$cache"
t0=$(date +%s)

if [ ! -x "$bin" ]; then
  echo "== building llama-server from node-llama-cpp@$NLC_VERSION's llama.cpp source"
  if [ ! -d "$src/.git" ]; then
    (cd "$cache" && rm -rf package && npm pack --silent "node-llama-cpp@$NLC_VERSION" >/dev/null &&
      tar xzf "node-llama-cpp-$NLC_VERSION.tgz") || { echo "npm pack node-llama-cpp failed"; exit 1; }
    git clone -q "$cache/package/llama/gitRelease.bundle" "$src" || { echo "cannot clone the bundled llama.cpp"; exit 1; }
  fi
  command -v cmake >/dev/null || apt-get install -y -qq cmake g++ >/dev/null
  (cd "$src" && nice cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$cache/cmake.log" 2>&1 &&
    nice cmake --build build --target llama-server -j2 >"$cache/build.log" 2>&1) ||
    { tail -30 "$cache/build.log" 2>/dev/null || tail -30 "$cache/cmake.log"; exit 1; }
fi
t_build=$(( $(date +%s) - t0 ))
echo "llama-server: $bin (${t_build}s)"
t0=$(date +%s)

model="${RVBBIT_GGUF:-}"
if [ -z "$model" ]; then
  model=$(find "$cache/models" /usr/share -name '*.gguf' ! -name 'ggml-vocab-*' \
    ! -name 'rvbbit-tiny-test.gguf' -size +1M 2>/dev/null | head -1)
fi
tiny="$cache/models/rvbbit-tiny-test.gguf"
if [ -z "$model" ] && [ -f "$tiny" ] && [ "$tiny" -nt "$RV_ROOT/tests/real/make_tiny_gguf.py" ]; then
  model="$tiny"   # constructed by an earlier run, from the same script
fi
if [ -z "$model" ]; then
  # no package ships trained weights: construct a tiny model from llama.cpp's
  # gguf-py and its LLaMA tokenizer file (tests/real/make_tiny_gguf.py)
  echo "no GGUF model given or packaged; writing the constructed test model"
  /usr/bin/python3 -c 'import numpy' 2>/dev/null || apt-get install -y -qq python3-numpy >/dev/null
  mkdir -p "$cache/models"
  model="$tiny"
  /usr/bin/python3 "$RV_ROOT/tests/real/make_tiny_gguf.py" "$src" "$model" >/dev/null ||
    { echo "cannot write $model"; exit 1; }
fi
if [ ! -f "$model" ]; then
  echo "no GGUF model at $model"
  exit 2
fi
t_model=$(( $(date +%s) - t0 ))
echo "model: $model (${t_model}s)"
t0=$(date +%s)

port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# as postgres (setpriv execs, so $! is the server's own pid), so that the
# test can signal it; the log is opened by this shell
as_server=()
[ "$(id -u)" -eq 0 ] && as_server=(setpriv --reuid=postgres --regid=postgres --init-groups)
"${as_server[@]}" "$bin" -m "$model" --host 127.0.0.1 --port "$port" -c 4096 -np 4 -t 2 \
  >"$cache/llama-server.log" 2>&1 &
server_pid=$!
# SIGCONT first: a server the test left frozen would not act on SIGTERM
trap 'kill -CONT "$server_pid" 2>/dev/null; kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  curl -sf "$url/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { tail -20 "$cache/llama-server.log"; exit 1; }
  sleep 1
done
curl -sf "$url/health" >/dev/null || { echo "llama-server did not become healthy"; exit 1; }

# record raw replies in the mock's fixture format (tests/mock/fixtures/replies/)
mkdir -p "$cache/recorded"
record() {
  local name="$1" body="$2"
  curl -s -o "$cache/recorded/body" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "$body" "$url/v1/chat/completions" >"$cache/recorded/status"
  "$PYTHON" - "$cache/recorded" "$name" <<'PY'
import json, sys
d, name = sys.argv[1], sys.argv[2]
status = int(open(d + "/status").read() or 0)
raw = open(d + "/body").read()
try:
    body = json.loads(raw)
except ValueError:
    body = raw
json.dump({"status": status, "body": body}, open("%s/llama_server_recorded_%s.json" % (d, name), "w"), indent=1)
PY
}
record chat '{"model": "any-name", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32, "temperature": 0}'
record schema '{"model": "any-name", "messages": [{"role": "user", "content": "Brand of: Nike Air Max 90"}], "max_tokens": 100, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "extract", "schema": {"type": "object", "properties": {"brand": {"type": "string", "minLength": 1}}, "required": ["brand"], "additionalProperties": false}, "strict": false}}}'
record length '{"model": "any-name", "messages": [{"role": "user", "content": "Brand of: Nike Air Max 90"}], "max_tokens": 3, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "extract", "schema": {"type": "object", "properties": {"brand": {"type": "string"}}, "required": ["brand"]}, "strict": false}}}'
record sentiment '{"model": "any-name", "messages": [{"role": "system", "content": "You are a careful sentiment analyst. Answer only with JSON."}, {"role": "user", "content": "Classify the sentiment of this text.\n\nText: I love it, works great"}], "max_tokens": 100, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "classify", "schema": {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative", "neutral", "mixed"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["sentiment", "confidence"], "additionalProperties": false}, "strict": false}}}'
echo "recorded replies: $(ls "$cache/recorded"/*.json | tr '\n' ' ')"
t_start=$(( $(date +%s) - t0 ))
t0=$(date +%s)

RVBBIT_REAL_SERVER_URL="$url" RVBBIT_REAL_SERVER_PID="$server_pid" RVBBIT_SUITES=tap \
  RVBBIT_TAP=tests/real/010_llama_server.pl bash "$RV_ROOT/tests/scripts/test.sh"
rc=$?
echo "timings: llama-server build ${t_build}s (0: cached), model ${t_model}s," \
  "server start and recording ${t_start}s, test run $(( $(date +%s) - t0 ))s"
exit $rc
