#!/usr/bin/env python3
"""Self-test of the mock LLM provider (tests/mock/mock_llm.py).

Starts the mock on ephemeral ports (read back through --port-file) and
exercises every endpoint and directive: both API flavours, auth, unknown
models, faults (checked at the socket level where the HTTP framing is the
point), fail/invalid counting, JSON Schema replies and batches, fixtures
(with regex groups and hot reload), chunked and 100-continue requests,
keep-alive, statistics, request log, cancellation (a client that goes away
takes its request out of flight) and concurrency (300 and 2,000 requests
in flight at once).

Nothing asserts a duration: waits poll with generous deadlines, and the
concurrency tests hold every request in flight (headers sent, last body
byte withheld) until the server reports them all before releasing them.

Run: python3 tests/mock/test_mock.py   (exit status 0 when all pass)
"""

import atexit
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "mock_llm.py")
KEY = "sk-mock-secret-KEY-4711"
MARKER = "Reply with only a JSON value that matches this JSON Schema:"

SERVERS = []
WORKDIR = tempfile.mkdtemp(prefix="mock_llm_test_")


def scratch_dir(prefix):
    """Return a new directory under this run's scratch directory."""
    return tempfile.mkdtemp(prefix=prefix, dir=WORKDIR)


class MockServer:
    """A mock_llm.py subprocess on an ephemeral port."""

    def __init__(self, *extra):
        """Start the server with extra arguments and wait for its port."""
        self.dir = scratch_dir("server_")
        self.port_file = os.path.join(self.dir, "port")
        self.pid_file = os.path.join(self.dir, "pid")
        self.stderr_path = os.path.join(self.dir, "stderr")
        cmd = [sys.executable, MOCK, "--port", "0", "--port-file", self.port_file,
               "--pid-file", self.pid_file] + list(extra)
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        SERVERS.append(self)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None:
                raise RuntimeError("mock exited: " + self.read_stderr())
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mock did not write its port file")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())

    def read_stderr(self):
        """Return what the server wrote to stderr."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """Stop the server by its pid (SIGTERM, then SIGKILL); return rc."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.stderr.close()
        return self.proc.returncode


def stop_all():
    """Stop every server this test started and remove the scratch files
    (runs at exit as well)."""
    for srv in SERVERS:
        try:
            srv.stop()
        except Exception:
            pass
    shutil.rmtree(WORKDIR, ignore_errors=True)


atexit.register(stop_all)


# ---------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=60):
    """Do one HTTP request; return (status, headers dict, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw
    finally:
        conn.close()


def chat(port, prompt, model="gpt-4o", system=None, path="/v1/chat/completions",
         headers=None, **extra):
    """POST an OpenAI chat request with one user message."""
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    body = {"model": model, "messages": messages}
    body.update(extra)
    return request(port, "POST", path, body, headers)


def chat_json(port, prompt, **kw):
    """Like chat(), expecting 200; return the parsed response."""
    status, _, raw = chat(port, prompt, **kw)
    assert status == 200, (status, raw[:300])
    return json.loads(raw)


def content_of(resp):
    """Return the assistant content of an OpenAI response."""
    return resp["choices"][0]["message"]["content"]


def anthropic(port, prompt, system=None, model="claude-3-5-haiku", headers=None,
              messages=None):
    """POST an Anthropic messages request; return (status, headers, raw)."""
    body = {"model": model, "max_tokens": 100,
            "messages": messages or [{"role": "user", "content": prompt}]}
    if system is not None:
        body["system"] = system
    return request(port, "POST", "/v1/messages", body, headers)


def stats(port):
    """Return the /stats document."""
    status, _, raw = request(port, "GET", "/stats")
    assert status == 200
    return json.loads(raw)


def reset(port):
    """POST /reset."""
    status, _, _ = request(port, "POST", "/reset", b"")
    assert status == 200


def wait_for(pred, timeout=30, what="condition"):
    """Poll pred() until true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def raw_post(path, body, extra_headers=b""):
    """Return the bytes of a POST request with a Content-Length body."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: mock\r\n"
            b"Content-Type: application/json\r\n" + extra_headers +
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def read_head(f):
    """Read a response head from a binary file; return (status, headers)."""
    line = f.readline()
    if not line:
        return None, {}
    status = int(line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_response(f):
    """Read one Content-Length framed response; return (status, headers, body)."""
    status, headers = read_head(f)
    if status is None:
        return None, {}, b""
    body = f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def llm_body(prompt, model="gpt-4o"):
    """Return the JSON bytes of a one-message OpenAI request."""
    return json.dumps({"model": model,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def held_requests(port, count, prompt):
    """Send count requests on count connections, all held in flight.

    Each connection sends its headers and all but the last body byte; once
    /stats shows count requests in flight, the last bytes are sent.  Return
    (statuses, max_in_flight seen by the server)."""
    body = llm_body(prompt)
    req = raw_post("/v1/chat/completions", body)
    go = threading.Event()
    results = [None] * count
    errors = []

    def worker(i):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=120)
            try:
                s.sendall(req[:-1])
                if not go.wait(120):
                    raise RuntimeError("never released")
                s.sendall(req[-1:])
                f = s.makefile("rb")
                status, _, raw = read_response(f)
                results[i] = (status, raw)
                f.close()
            finally:
                s.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
            go.set()

    old = threading.stack_size(256 * 1024)
    threads = []
    try:
        for i in range(count):
            t = threading.Thread(target=worker, args=(i,), daemon=True)
            t.start()
            threads.append(t)
    finally:
        threading.stack_size(old)
    try:
        wait_for(lambda: errors or stats(port)["in_flight"] >= count, 60,
                 "%d requests in flight" % count)
        if errors:
            raise AssertionError("client errors: %s" % errors[:3])
        peak = stats(port)["max_in_flight"]
    finally:
        go.set()
        for t in threads:
            t.join(120)
    if errors:
        raise AssertionError("client errors: %s" % errors[:3])
    return results, peak


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

FIXTURES = {"rules": [
    {"match": "Apple iPhone 15", "reply": "{\"brand\":\"Apple\"}"},
    {"regex": "colou?r of (\\w+) (\\w+)", "reply": "\\2 is \\1"},
    {"match": "please be unavailable", "reply": "down for maintenance", "status": 503},
    {"match": "slow fixture", "reply": "slow reply", "latency_ms": 60000},
]}


class MockTest(unittest.TestCase):
    """Tests against one shared server (fixtures, no key)."""

    @classmethod
    def setUpClass(cls):
        """Start the shared server."""
        cls.tmp = scratch_dir("fixtures_")
        cls.fixtures = os.path.join(cls.tmp, "fixtures.json")
        with open(cls.fixtures, "w") as f:
            json.dump(FIXTURES, f)
        cls.log = os.path.join(cls.tmp, "mock.log")
        cls.srv = MockServer("--fixtures", cls.fixtures, "--log", cls.log)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        """Stop the shared server."""
        cls.srv.stop()

    def setUp(self):
        """Every test starts from zeroed counters and default latency."""
        request(self.port, "POST", "/config", {"latency_ms": 0})
        reset(self.port)

    # -- basics -------------------------------------------------------------

    def test_health_and_unknown(self):
        """GET /health is "ok"; unknown paths 404; wrong methods 405."""
        status, _, raw = request(self.port, "GET", "/health")
        self.assertEqual((status, raw), (200, b"ok"))
        self.assertEqual(request(self.port, "GET", "/nope")[0], 404)
        self.assertEqual(request(self.port, "GET", "/v1/chat/completions")[0], 404)
        self.assertEqual(request(self.port, "POST", "/stats", b"")[0], 405)

    def test_openai_shape_and_usage(self):
        """OpenAI reply shape, default text reply and token usage."""
        system = "You are terse."
        prompt = "  hello \n\n   world\t again  "
        status, headers, raw = chat(self.port, prompt, system=system)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        r = json.loads(raw)
        self.assertTrue(r["id"].startswith("mock-"))
        self.assertEqual(r["object"], "chat.completion")
        self.assertIsInstance(r["created"], int)
        self.assertEqual(r["model"], "gpt-4o")
        self.assertEqual(r["choices"][0]["index"], 0)
        self.assertEqual(r["choices"][0]["finish_reason"], "stop")
        self.assertEqual(r["choices"][0]["message"]["role"], "assistant")
        reply = "re: hello world again"
        self.assertEqual(content_of(r), reply)
        whole = system + "\n" + prompt
        p, c = math.ceil(len(whole) / 4), math.ceil(len(reply) / 4)
        self.assertEqual(r["usage"], {"prompt_tokens": p, "completion_tokens": c,
                                      "total_tokens": p + c})
        # Same prompt, same reply.
        self.assertEqual(content_of(chat_json(self.port, prompt, system=system)), reply)

    def test_reply_truncated_to_200(self):
        """The default text reply keeps at most 200 prompt characters."""
        r = chat_json(self.port, "x" * 500)
        self.assertEqual(content_of(r), "re: " + "x" * 200)

    def test_prompt_is_last_user_message(self):
        """Only the last user message is the prompt; parts are concatenated."""
        body = {"model": "m", "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second "},
                                         {"type": "image_url", "image_url": {"url": "x"}},
                                         {"type": "text", "text": "question"}]}]}
        status, _, raw = request(self.port, "POST", "/v1/chat/completions", body)
        self.assertEqual(status, 200)
        r = json.loads(raw)
        self.assertEqual(content_of(r), "re: second question")
        whole = "first question\nan answer\nsecond question"
        self.assertEqual(r["usage"]["prompt_tokens"], math.ceil(len(whole) / 4))

    def test_anthropic_shape_and_usage(self):
        """Anthropic reply shape and usage (system counts as input)."""
        status, _, raw = anthropic(self.port, "hi there", system="Be brief.")
        self.assertEqual(status, 200)
        r = json.loads(raw)
        self.assertTrue(r["id"].startswith("msg_mock_"))
        self.assertEqual((r["type"], r["role"], r["model"], r["stop_reason"]),
                         ("message", "assistant", "claude-3-5-haiku", "end_turn"))
        self.assertEqual(r["content"], [{"type": "text", "text": "re: hi there"}])
        self.assertEqual(r["usage"], {
            "input_tokens": math.ceil(len("Be brief.\nhi there") / 4),
            "output_tokens": math.ceil(len("re: hi there") / 4)})
        # system given as a list of blocks
        status, _, raw = anthropic(self.port, "hi", system=[{"type": "text", "text": "A"},
                                                            {"type": "text", "text": "B"}])
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(raw)["usage"]["input_tokens"], math.ceil(len("AB\nhi") / 4))

    def test_real_server_directives(self):
        """needs (truncation), cached tokens, loading, fixture replay, HTTP-date Retry-After."""
        r = chat_json(self.port, "[[needs:50]] a long answer", max_tokens=5)
        self.assertEqual(r["choices"][0]["finish_reason"], "length")
        self.assertEqual(r["usage"]["completion_tokens"], 5)
        r = chat_json(self.port, "[[needs:50]] a long answer", max_tokens=500)
        self.assertEqual(r["choices"][0]["finish_reason"], "stop")
        body = {"model": "c", "max_tokens": 2,
                "messages": [{"role": "user", "content": "[[needs:50]] [[cached:2]] long"}]}
        status, _, raw = request(self.port, "POST", "/v1/messages", body)
        a = json.loads(raw)
        self.assertEqual((status, a["stop_reason"], a["usage"]["cache_read_input_tokens"]),
                         (200, "max_tokens", 2))
        r = chat_json(self.port, "[[cached:3]] cache")
        self.assertEqual(r["usage"]["prompt_tokens_details"], {"cached_tokens": 3})
        status, headers, raw = chat(self.port, "[[loading:60]] model")
        self.assertEqual(status, 503)
        self.assertNotIn("retry-after", headers)
        self.assertEqual(json.loads(raw)["error"]["message"], "Loading model")
        status, _, raw = chat(self.port, "[[fixture:anthropic_overloaded]] x")
        self.assertEqual((status, json.loads(raw)["error"]["type"]), (529, "overloaded_error"))
        status, _, raw = chat(self.port, "[[fixture:no_such_fixture]] x")
        self.assertEqual(status, 500)
        status, headers, _ = chat(self.port, "[[fail:1:503:d30]] later")
        self.assertEqual(status, 503)
        self.assertTrue(headers["retry-after"].endswith(" GMT"), headers.get("retry-after"))

    def test_stall_holds_then_answers(self):
        """[[stall:1]]: the first request gets nothing, the second an answer."""
        with self.assertRaises(OSError):
            request(self.port, "POST", "/v1/chat/completions",
                    llm_body("[[stall:1]] sleepy"), timeout=1)
        self.assertEqual(content_of(chat_json(self.port, "[[stall:1]] sleepy")), "re: sleepy")

    def test_minimum_one_token(self):
        """Empty prompt and reply still count one token each."""
        r = chat_json(self.port, "[[reply:]]")
        self.assertEqual(content_of(r), "")
        self.assertEqual(r["usage"]["completion_tokens"], 1)

    def test_nonexistent_model(self):
        """Models named nonexistent* get 404 in both flavours."""
        status, _, raw = chat(self.port, "hi", model="nonexistent-x")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(raw)["error"]["message"], "model nonexistent-x not found")
        status, _, raw = anthropic(self.port, "hi", model="nonexistent-claude")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(raw)["error"]["message"],
                         "model nonexistent-claude not found")

    def test_bad_json_body(self):
        """A body that is not a JSON object gets 400."""
        status, _, raw = request(self.port, "POST", "/v1/chat/completions", b"{nope")
        self.assertEqual(status, 400)
        self.assertIn("error", json.loads(raw))

    # -- faults ---------------------------------------------------------------

    def test_fault_statuses(self):
        """[[fault:CODE]] answers CODE; 429 carries Retry-After."""
        status, headers, raw = chat(self.port, "[[fault:429]] x")
        self.assertEqual(status, 429)
        self.assertEqual(headers.get("retry-after"), "1")
        self.assertEqual(json.loads(raw)["error"]["message"], "rate limited")
        status, headers, _ = chat(self.port, "[[fault:429:7]] x")
        self.assertEqual((status, headers.get("retry-after")), (429, "7"))
        status, _, raw = chat(self.port, "[[fault:500]] x")
        self.assertEqual((status, json.loads(raw)["error"]["message"]), (500, "internal error"))
        self.assertEqual(chat(self.port, "[[fault:503]] x")[0], 503)
        status, _, raw = chat(self.port, "[[fault:401]] x")
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(raw)["error"],
                         {"message": "invalid api key", "type": "invalid_request_error"})
        status, _, raw = chat(self.port, "[[fault:404]] x", model="gpt-x")
        self.assertEqual((status, json.loads(raw)["error"]["message"]),
                         (404, "model gpt-x not found"))
        status, headers, raw = anthropic(self.port, "[[fault:429:3]]")
        self.assertEqual((status, headers.get("retry-after")), (429, "3"))
        self.assertEqual(json.loads(raw)["error"]["message"], "rate limited")
        s = stats(self.port)
        self.assertEqual(s["by_status"], {"401": 1, "404": 1, "429": 3, "500": 1, "503": 1})

    def test_fault_malformed_socket(self):
        """[[fault:malformed]]: 200, invalid JSON, correct Content-Length."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:malformed]]")))
            f = s.makefile("rb")
            status, headers, body = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(body, b'{"choices": [ {"message": ')
            self.assertEqual(int(headers["content-length"]), len(body))
            with self.assertRaises(ValueError):
                json.loads(body)
            # The connection stays usable.
            s.sendall(raw_post("/v1/chat/completions", llm_body("after")))
            status, _, body = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(content_of(json.loads(body)), "re: after")

    def test_fault_truncated_socket(self):
        """[[fault:truncated]]: claims 1000 bytes, sends 100, closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:truncated]]")))
            f = s.makefile("rb")
            status, headers = read_head(f)
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-length"], "1000")
            rest = f.read()  # until the server closes
            self.assertEqual(len(rest), 100)
            self.assertTrue(rest.startswith(b"{"))

    def test_fault_huge(self):
        """[[fault:huge]]: a valid reply whose content is 6 MB."""
        status, _, raw = chat(self.port, "[[fault:huge]]")
        self.assertEqual(status, 200)
        content = content_of(json.loads(raw))
        self.assertEqual(len(content), 6 * 1024 * 1024)

    def test_fault_empty(self):
        """[[fault:empty]]: 200 with an empty body."""
        status, headers, raw = chat(self.port, "[[fault:empty]]")
        self.assertEqual((status, raw, headers["content-length"]), (200, b"", "0"))

    def test_fault_wire_good(self):
        """[[fault:wire:MODE]]: the same reply, framed as MODE."""
        for mode in ("chunked", "eof", "trickle", "lf", "http10", "drop"):
            status, headers, raw = chat(self.port, "[[fault:wire:%s]] w" % mode)
            self.assertEqual(status, 200, mode)
            self.assertEqual(content_of(json.loads(raw)), "re: w", mode)
            if mode == "chunked":
                self.assertIn("chunked", headers.get("transfer-encoding", ""))
            if mode == "eof":
                self.assertNotIn("content-length", headers)

    def test_fault_wire_continue_socket(self):
        """[[fault:wire:continue]]: 100 and 103 come before the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:continue]] c")))
            f = s.makefile("rb")
            self.assertEqual(read_head(f)[0], 100)
            self.assertEqual(read_head(f)[0], 103)
            status, _, body = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(content_of(json.loads(body)), "re: c")

    def test_fault_wire_stale16k_socket(self):
        """[[fault:wire:stale16k]]: a 16,384-byte reply, then a second one."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:stale16k]] k")))
            f = s.makefile("rb")
            status, headers, body = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(content_of(json.loads(body)), "re: k")
            self.assertIn("x-pad", headers)
            status, _, body = read_response(f)
            self.assertEqual(content_of(json.loads(body)), "STALE ANSWER")
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:stale16k]] k")))
            data = b""
            while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.assertEqual(data.index(b"HTTP/1.1 200", 1), 16384)

    def test_fault_wire_bad(self):
        """[[fault:wire:badstatus]] and the others are malformed on purpose."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:badstatus]] b")))
            self.assertTrue(s.makefile("rb").readline().startswith(b"HTTP/1.1 2x0"))
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:bigheaders]] b")))
            self.assertGreater(len(s.makefile("rb").read()), 200000)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:wire:midheaders]] b")))
            self.assertGreater(len(s.makefile("rb").read()), 100000)

    def test_fault_close_socket(self):
        """[[fault:close]]: the connection closes without a byte."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:close]]")))
            self.assertEqual(s.makefile("rb").read(), b"")
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight 0")

    def test_timeout_fault_disconnect(self):
        """A client leaving during [[fault:timeout]] takes it out of flight."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:timeout]] wait")))
            wait_for(lambda: stats(self.port)["in_flight"] == 1, what="in_flight 1")
        finally:
            s.close()
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight back to 0")
        st = stats(self.port)
        self.assertEqual(st["aborted"], 1)
        self.assertEqual(st["max_in_flight"], 1)
        _, _, raw = request(self.port, "GET", "/requests?last=1")
        rec = json.loads(raw)[0]
        self.assertIsNone(rec["status"])
        self.assertTrue(rec.get("aborted"))

    def test_latency_disconnect(self):
        """A client leaving during a [[latency:N]] sleep is aborted too."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[latency:600000]] zz")))
            wait_for(lambda: stats(self.port)["in_flight"] == 1, what="in_flight 1")
        finally:
            s.close()
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight back to 0")
        self.assertEqual(stats(self.port)["aborted"], 1)

    def test_latency_directive_answers(self):
        """[[latency:N]] still answers, with the directive-free reply."""
        r = chat_json(self.port, "[[latency:50]] hello")
        self.assertEqual(content_of(r), "re: hello")

    def test_config_latency(self):
        """POST /config changes the default latency (seen as a held request)."""
        status, _, raw = request(self.port, "POST", "/config", {"latency_ms": 600000})
        self.assertEqual((status, json.loads(raw)), (200, {"latency_ms": 600000}))
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            s.sendall(raw_post("/v1/chat/completions", llm_body("held by config")))
            wait_for(lambda: stats(self.port)["in_flight"] == 1, what="in_flight 1")
        finally:
            s.close()
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight back to 0")
        request(self.port, "POST", "/config", {"latency_ms": 0})
        self.assertEqual(chat(self.port, "fast again")[0], 200)
        self.assertEqual(request(self.port, "POST", "/config", {"latency": 1})[0], 400)

    # -- fail / reply / echo / invalid ----------------------------------------

    def test_fail_k(self):
        """[[fail:K:CODE]] fails the first K sightings of a prompt."""
        p = "[[fail:2:500]] flaky"
        self.assertEqual([chat(self.port, p)[0] for _ in range(4)], [500, 500, 200, 200])
        self.assertEqual(content_of(chat_json(self.port, p)), "re: flaky")
        status, headers, _ = chat(self.port, "[[fail:1:429:4]] throttled")
        self.assertEqual((status, headers.get("retry-after")), (429, "4"))
        self.assertEqual(chat(self.port, "[[fail:1:429:4]] throttled")[0], 200)
        status, headers, _ = chat(self.port, "[[fail:1:429]] other")
        self.assertEqual((status, headers.get("retry-after")), (429, "1"))
        # Reset forgets what was seen.
        reset(self.port)
        self.assertEqual(chat(self.port, p)[0], 500)

    def test_reply_and_echo(self):
        """[[reply:TEXT]] is exact; [[echo]] returns the prompt."""
        text = 'exact [text] with {"json": 1}\n and ] brackets'
        r = chat_json(self.port, "ignored [[reply:%s]] also ignored" % text)
        self.assertEqual(content_of(r), text)
        r = chat_json(self.port, "[[echo]] say  this\nback")
        self.assertEqual(content_of(r), "say  this\nback")
        status, _, raw = anthropic(self.port, "[[reply:from claude]]")
        self.assertEqual(json.loads(raw)["content"][0]["text"], "from claude")

    def test_directives_removed(self):
        """Directives do not change the default reply or the schema hash."""
        a = content_of(chat_json(self.port, "[[latency:5]] hello"))
        b = content_of(chat_json(self.port, "hello"))
        self.assertEqual(a, b)
        system = MARKER + ' {"type":"object","properties":{"x":{"type":"string"},' \
                          '"n":{"type":"integer"}}}'
        a = content_of(chat_json(self.port, "[[latency:1]] same", system=system))
        b = content_of(chat_json(self.port, "same", system=system))
        self.assertEqual(a, b)

    def test_invalid_k(self):
        """[[invalid:K]]: first K replies of a conversation break the schema."""
        schema = {"type": "object", "properties": {"name": {"type": "string"}},
                  "required": ["name"]}
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        first = "[[invalid:2]] extract the name"
        messages = [{"role": "user", "content": first}]
        replies = []
        for _ in range(3):
            body = {"model": "m", "messages": messages, "response_format": rf}
            status, _, raw = request(self.port, "POST", "/v1/chat/completions", body)
            self.assertEqual(status, 200)
            content = content_of(json.loads(raw))
            replies.append(json.loads(content))
            # The retry appends the bad answer and a correction.
            messages = messages + [{"role": "assistant", "content": content},
                                   {"role": "user", "content": "fix it"}]
        self.assertEqual(replies[0], {"unexpected": True})
        self.assertEqual(replies[1], {"unexpected": True})
        self.assertIn("name", replies[2])
        for _ in range(3):
            r = chat_json(self.port, "[[invalid:always]] never", response_format=rf)
            self.assertEqual(json.loads(content_of(r)), {"unexpected": True})

    # -- JSON Schema ----------------------------------------------------------

    SCHEMA = {
        "type": "object",
        "properties": {
            "brand": {"type": "string"},
            "short": {"type": "string", "maxLength": 4},
            "long": {"type": "string", "minLength": 40},
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "count": {"type": "integer"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "three": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
            "one": {"type": "array", "items": {"type": "integer"}, "maxItems": 1},
            "nothing": {"type": "null"},
            "maybe": {"type": ["string", "null"]},
            "nested": {"type": "object", "properties": {"inner": {"type": "string"}}},
        },
        "required": ["brand"],
    }

    def check_schema_value(self, v):
        """Assert that v conforms to SCHEMA."""
        self.assertEqual(set(v), set(self.SCHEMA["properties"]))
        self.assertTrue(v["brand"].startswith("mock-"))
        self.assertEqual(len(v["brand"]), 13)
        self.assertLessEqual(len(v["short"]), 4)
        self.assertGreaterEqual(len(v["long"]), 40)
        self.assertIn(v["sentiment"], ["positive", "negative", "neutral"])
        self.assertIn(v["stars"], range(1, 6))
        self.assertIn(v["count"], range(0, 101))
        self.assertIsInstance(v["confidence"], float)
        self.assertTrue(0 <= v["confidence"] <= 1)
        self.assertEqual(round(v["confidence"], 1), v["confidence"])
        self.assertTrue(0 <= v["score"] <= 100)
        self.assertIsInstance(v["ok"], bool)
        self.assertEqual(len(v["tags"]), 2)
        self.assertTrue(all(isinstance(t, str) for t in v["tags"]))
        self.assertEqual(len(v["three"]), 3)
        self.assertEqual(len(v["one"]), 1)
        self.assertIsNone(v["nothing"])
        self.assertIsInstance(v["maybe"], str)
        self.assertIsInstance(v["nested"]["inner"], str)

    def test_json_schema_openai(self):
        """response_format json_schema gives a conforming, stable value."""
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": self.SCHEMA}}
        a = content_of(chat_json(self.port, "Apple thing", response_format=rf))
        self.assertNotIn(" ", a)  # compact JSON
        self.check_schema_value(json.loads(a))
        self.assertEqual(a, content_of(chat_json(self.port, "Apple thing",
                                                 response_format=rf)))
        values = {content_of(chat_json(self.port, "prompt %d" % i, response_format=rf))
                  for i in range(5)}
        self.assertGreater(len(values), 1)

    def test_json_schema_marker(self):
        """The marker line in system or prompt carries the schema."""
        schema_text = json.dumps(self.SCHEMA, indent=2)
        system = "Be useful.\n" + MARKER + "\n" + schema_text + "\nNo prose."
        status, _, raw = anthropic(self.port, "some text", system=system)
        self.assertEqual(status, 200)
        self.check_schema_value(json.loads(json.loads(raw)["content"][0]["text"]))
        prompt = "Classify this.\n" + MARKER + " " + json.dumps(self.SCHEMA)
        v = json.loads(content_of(chat_json(self.port, prompt)))
        self.check_schema_value(v)
        # Marker not at the start of a line: plain text reply.
        r = chat_json(self.port, "see: " + MARKER + ' {"type":"integer"}')
        self.assertTrue(content_of(r).startswith("re: "))

    def test_json_object(self):
        """response_format json_object gives a JSON object."""
        r = chat_json(self.port, "anything", response_format={"type": "json_object"})
        self.assertIsInstance(json.loads(content_of(r)), dict)

    def test_batch(self):
        """[[batch:N]] gives N items for array schemas."""
        arr = {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "label": {"type": "string"}}}}
        rf = {"type": "json_schema", "json_schema": {"name": "b", "schema": arr}}
        v = json.loads(content_of(chat_json(self.port, "[[batch:5]] rows",
                                            response_format=rf)))
        self.assertEqual(len(v), 5)
        self.assertTrue(all(set(x) == {"id", "label"} for x in v))
        self.assertEqual(len({x["label"] for x in v}), 5)
        wrapped = {"type": "object", "properties": {"results": arr}}
        rf = {"type": "json_schema", "json_schema": {"name": "b", "schema": wrapped}}
        v = json.loads(content_of(chat_json(self.port, "[[batch:7]] rows",
                                            response_format=rf)))
        self.assertEqual(len(v["results"]), 7)
        v = json.loads(content_of(chat_json(self.port, "no batch", response_format=rf)))
        self.assertEqual(len(v["results"]), 2)

    # -- fixtures -------------------------------------------------------------

    def test_fixtures(self):
        """Substring and regex rules (with groups), status and latency rules."""
        r = chat_json(self.port, "Extract the brand of: Apple iPhone 15 Pro")
        self.assertEqual(content_of(r), '{"brand":"Apple"}')
        r = chat_json(self.port, "what is the colour of ripe bananas?")
        self.assertEqual(content_of(r), "bananas is ripe")
        status, _, raw = chat(self.port, "please be unavailable")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(raw)["error"]["message"], "down for maintenance")
        # A fixture's latency holds the request; a directive overrides it.
        self.assertEqual(content_of(chat_json(self.port, "[[latency:0]] slow fixture")),
                         "slow reply")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            s.sendall(raw_post("/v1/chat/completions", llm_body("slow fixture")))
            wait_for(lambda: stats(self.port)["in_flight"] == 1, what="in_flight 1")
        finally:
            s.close()
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight 0")

    def test_fixtures_batch_rows(self):
        """A MAP BATCH request (array schema, rows as JSON in the prompt):
        one item per row, the matching fixture's reply or a generated one."""
        arr = {"type": "array", "items": {"type": "object", "properties": {
            "brand": {"type": "string"}}, "required": ["brand"]}}
        rf = {"type": "json_schema", "json_schema": {"name": "b", "schema": arr}}
        rows = [{"id": 1, "product_name": "Apple iPhone 15"},
                {"id": 2, "product_name": "Unknown Gadget"},
                {"id": 3, "product_name": "Apple iPhone 15 Pro"}]
        prompt = "For each product, in order, its brand: " + json.dumps(rows)
        v = json.loads(content_of(chat_json(self.port, prompt, response_format=rf)))
        self.assertEqual(len(v), 3)
        self.assertEqual(v[0], {"brand": "Apple"})
        self.assertEqual(v[2], {"brand": "Apple"})
        self.assertIsInstance(v[1].get("brand"), str)
        # no row matches a rule: the usual generated array
        prompt = "Brands: " + json.dumps([{"product_name": "Nothing Known"}])
        v = json.loads(content_of(chat_json(self.port, prompt, response_format=rf)))
        self.assertIsInstance(v, list)

    def test_fixtures_reload(self):
        """Changing the fixtures file is picked up without a restart."""
        rules = {"rules": [{"match": "reload probe", "reply": "reloaded"}] + FIXTURES["rules"]}
        try:
            with open(self.fixtures, "w") as f:
                json.dump(rules, f)
            future = time.time() + 5
            os.utime(self.fixtures, (future, future))
            wait_for(lambda: content_of(chat_json(self.port, "reload probe")) == "reloaded",
                     20, "fixtures reload")
        finally:
            with open(self.fixtures, "w") as f:
                json.dump(FIXTURES, f)
            os.utime(self.fixtures, (time.time() + 10, time.time() + 10))
        wait_for(lambda: content_of(chat_json(self.port, "reload probe")) == "re: reload probe",
                 20, "fixtures reload back")

    # -- HTTP framing ---------------------------------------------------------

    def test_chunked_and_expect_continue(self):
        """Chunked request bodies and Expect: 100-continue."""
        body = llm_body("chunky monkey")
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            f = s.makefile("rb")
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n"
                      b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            status, _ = read_head(f)
            self.assertEqual(status, 100)
            chunks = b""
            for i in range(0, len(body), 7):
                piece = body[i:i + 7]
                chunks += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
            s.sendall(chunks + b"0\r\nX-Trailer: y\r\n\r\n")
            status, _, raw = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(content_of(json.loads(raw)), "re: chunky monkey")
            # Expect with Content-Length, same connection.
            head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n"
                    b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
            s.sendall(head)
            self.assertEqual(read_head(f)[0], 100)
            s.sendall(body)
            status, _, raw = read_response(f)
            self.assertEqual(status, 200)

    def test_keep_alive_and_http10(self):
        """Several requests share one connection; HTTP/1.0 closes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            socks = set()
            for i in range(5):
                conn.request("POST", "/v1/chat/completions", body=llm_body("ka %d" % i),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                self.assertEqual(content_of(json.loads(resp.read())), "re: ka %d" % i)
                socks.add(id(conn.sock))
            self.assertEqual(len(socks), 1)
        finally:
            conn.close()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            body = llm_body("old")
            s.sendall(b"POST /chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            data = s.makefile("rb").read()
            self.assertTrue(data.startswith(b"HTTP/1.1 200"))
            self.assertIn(b"Connection: close", data)

    # -- stats, reset, requests -----------------------------------------------

    def test_stats_requests_reset(self):
        """/stats counters, /requests records and /reset."""
        chat(self.port, "one", system="sys")
        chat(self.port, "[[fault:500]] two")
        anthropic(self.port, "three", headers={"x-api-key": "whatever"})
        request(self.port, "GET", "/health")
        st = stats(self.port)
        self.assertEqual(st["requests"], 3)
        self.assertEqual(st["in_flight"], 0)
        self.assertEqual(st["max_in_flight"], 1)
        self.assertEqual(st["by_status"], {"200": 2, "500": 1})
        self.assertEqual(st["max_per_minute"], 3)
        self.assertEqual(st["aborted"], 0)
        self.assertEqual(st["tokens"], {
            "prompt": math.ceil(len("sys\none") / 4) + math.ceil(len("three") / 4),
            "completion": math.ceil(len("re: one") / 4) + math.ceil(len("re: three") / 4)})
        status, _, raw = request(self.port, "GET", "/requests?last=2")
        self.assertEqual(status, 200)
        recs = json.loads(raw)
        self.assertEqual(len(recs), 2)
        self.assertEqual(recs[0]["path"], "/v1/chat/completions")
        self.assertEqual(recs[0]["model"], "gpt-4o")
        self.assertEqual(recs[0]["status"], 500)
        self.assertFalse(recs[0]["auth"])
        self.assertEqual(recs[0]["body"]["messages"][0]["content"], "[[fault:500]] two")
        self.assertEqual(recs[1]["path"], "/v1/messages")
        self.assertTrue(recs[1]["auth"])
        self.assertEqual(recs[1]["status"], 200)
        self.assertEqual(len(json.loads(request(self.port, "GET", "/requests")[2])), 3)
        reset(self.port)
        st = stats(self.port)
        now = st.pop("now")
        self.assertIsInstance(now, float)
        self.assertGreaterEqual(now, recs[-1]["t"])
        self.assertEqual(st, {"requests": 0, "in_flight": 0, "held": 0, "max_in_flight": 0,
                              "by_status": {}, "max_per_minute": 0,
                              "tokens": {"prompt": 0, "completion": 0}, "aborted": 0,
                              "connections": 1})  # the /stats request's own
        self.assertEqual(json.loads(request(self.port, "GET", "/requests?last=5")[2]), [])

    def test_requests_keeps_1000(self):
        """The request log keeps the last 1000 records."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for i in range(1005):
                conn.request("POST", "/v1/chat/completions", body=llm_body("n%d" % i))
                conn.getresponse().read()
        finally:
            conn.close()
        recs = json.loads(request(self.port, "GET", "/requests?last=5000")[2])
        self.assertEqual(len(recs), 1000)
        self.assertEqual(recs[-1]["body"]["messages"][0]["content"], "n1004")
        self.assertEqual(recs[0]["body"]["messages"][0]["content"], "n5")
        self.assertEqual(stats(self.port)["requests"], 1005)

    # -- hold / release -------------------------------------------------------

    def start_chats(self, prompts):
        """Send each prompt on its own thread; return (threads, results)."""
        results = [None] * len(prompts)

        def one(i, prompt):
            results[i] = chat(self.port, prompt)

        threads = [threading.Thread(target=one, args=(i, p), daemon=True)
                   for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        return threads, results

    def test_hold_release(self):
        """[[hold:NAME]] answers only after POST /release of NAME; the
        requests of other names stay held; a released name stays released
        until /hold or /reset re-arms it."""
        threads, results = self.start_chats(
            ["[[hold:a]] first a", "[[hold:a]] second a", "[[hold:b]] only b"])
        wait_for(lambda: stats(self.port)["held"] == 3, what="3 held")
        st = stats(self.port)
        self.assertEqual((st["in_flight"], st["by_status"]), (3, {}))
        self.assertEqual(results, [None, None, None])
        status, _, raw = request(self.port, "POST", "/release", {"name": "a"})
        self.assertEqual((status, json.loads(raw)["ok"]), (200, True))
        for t in threads[:2]:
            t.join(60)
        self.assertEqual(content_of(json.loads(results[0][2])), "re: first a")
        self.assertEqual(content_of(json.loads(results[1][2])), "re: second a")
        wait_for(lambda: stats(self.port)["held"] == 1, what="b still held")
        self.assertIsNone(results[2])
        recs = json.loads(request(self.port, "GET", "/requests")[2])
        self.assertEqual(sorted(r["held"] for r in recs), ["a", "a", "b"])
        for r in recs:
            self.assertTrue(r["prompt"].startswith("[[hold:%s]]" % r["held"]))
            if r["held"] == "a":
                self.assertEqual(r["status"], 200)
                self.assertGreaterEqual(r["end"], r["t"])
            else:
                self.assertNotIn("end", r)
        # a released name answers at once from now on
        self.assertEqual(content_of(chat_json(self.port, "[[hold:a]] later a")), "re: later a")
        # /hold re-arms it
        self.assertEqual(request(self.port, "POST", "/hold", {"name": "a"})[0], 200)
        t2, r2 = self.start_chats(["[[hold:a]] rearmed"])
        wait_for(lambda: stats(self.port)["held"] == 2, what="rearmed a held")
        # no body: every name
        self.assertEqual(request(self.port, "POST", "/release", b"")[0], 200)
        for t in [threads[2]] + t2:
            t.join(60)
        self.assertEqual(content_of(json.loads(results[2][2])), "re: only b")
        self.assertEqual(content_of(json.loads(r2[0][2])), "re: rearmed")
        self.assertEqual(stats(self.port)["held"], 0)
        # /reset holds every name again; [[hold]] is the name ""
        reset(self.port)
        t3, r3 = self.start_chats(["[[hold]] unnamed"])
        wait_for(lambda: stats(self.port)["held"] == 1, what="unnamed held")
        self.assertEqual(request(self.port, "POST", "/release", {"name": ""})[0], 200)
        t3[0].join(60)
        self.assertEqual(content_of(json.loads(r3[0][2])), "re: unnamed")
        self.assertEqual(request(self.port, "POST", "/release", {"name": 5})[0], 400)
        self.assertEqual(request(self.port, "GET", "/release")[0], 405)

    def test_hold_barrier(self):
        """[[hold:NAME:K]] holds until K requests wait, then answers them
        all; the barrier then stays released until /reset."""
        threads, results = self.start_chats(["[[hold:bar:3]] b%d" % i for i in range(2)])
        wait_for(lambda: stats(self.port)["held"] == 2, what="2 held")
        self.assertEqual(results, [None, None])
        t2, r2 = self.start_chats(["[[hold:bar:3]] b2"])
        for t in threads + t2:
            t.join(60)
        self.assertEqual([content_of(json.loads(r[2])) for r in results + r2],
                         ["re: b0", "re: b1", "re: b2"])
        self.assertEqual(stats(self.port)["max_in_flight"], 3)
        self.assertEqual(content_of(chat_json(self.port, "[[hold:bar:3]] after")), "re: after")

    def test_hold_disconnect(self):
        """A client leaving while held is aborted and no longer held."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            s.sendall(raw_post("/v1/chat/completions", llm_body("[[hold:gone]] bye")))
            wait_for(lambda: stats(self.port)["held"] == 1, what="held 1")
        finally:
            s.close()
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight back to 0")
        st = stats(self.port)
        self.assertEqual((st["held"], st["aborted"]), (0, 1))
        rec = json.loads(request(self.port, "GET", "/requests?last=1")[2])[0]
        self.assertTrue(rec.get("aborted"))
        self.assertIsNone(rec["status"])
        self.assertGreaterEqual(rec["end"], rec["t"])

    # -- concurrency ----------------------------------------------------------

    def test_300_in_flight(self):
        """300 concurrent [[latency:200]] requests: max_in_flight is 300."""
        results, peak = held_requests(self.port, 300, "[[latency:200]] together")
        self.assertEqual(peak, 300)
        self.assertEqual([r[0] for r in results], [200] * 300)
        self.assertEqual(content_of(json.loads(results[0][1])), "re: together")
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight 0")
        st = stats(self.port)
        self.assertEqual((st["max_in_flight"], st["requests"]), (300, 300))

    def test_2000_connections(self):
        """2,000 concurrent connections ([[latency:500]]) are all answered."""
        results, peak = held_requests(self.port, 2000, "[[latency:500]] crowd")
        self.assertEqual(peak, 2000)
        self.assertEqual(sum(1 for r in results if r and r[0] == 200), 2000)
        wait_for(lambda: stats(self.port)["in_flight"] == 0, what="in_flight 0")
        self.assertEqual(stats(self.port)["by_status"], {"200": 2000})


class AuthTest(unittest.TestCase):
    """Tests against a server started with --require-key."""

    @classmethod
    def setUpClass(cls):
        """Start a server that requires KEY."""
        cls.tmp = scratch_dir("auth_")
        cls.log = os.path.join(cls.tmp, "auth.log")
        cls.srv = MockServer("--require-key", KEY, "--log", cls.log)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        """Stop it."""
        cls.srv.stop()

    def test_openai_auth(self):
        """OpenAI requests need Authorization: Bearer KEY."""
        status, _, raw = chat(self.port, "hi")
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(raw), {"error": {"message": "invalid api key",
                                                     "type": "invalid_request_error"}})
        status, _, raw = chat(self.port, "hi", headers={"Authorization": "Bearer wrong-key"})
        self.assertEqual(status, 401)
        self.assertNotIn(b"wrong-key", raw)
        self.assertEqual(chat(self.port, "hi", headers={"x-api-key": KEY})[0], 401)
        status, _, raw = chat(self.port, "hi", headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(status, 200)
        self.assertNotIn(KEY.encode(), raw)
        # auth is checked before the model.
        self.assertEqual(chat(self.port, "hi", model="nonexistent-x")[0], 401)

    def test_anthropic_auth(self):
        """Anthropic requests need x-api-key: KEY."""
        self.assertEqual(anthropic(self.port, "hi")[0], 401)
        self.assertEqual(anthropic(self.port, "hi",
                                   headers={"Authorization": "Bearer " + KEY})[0], 401)
        status, _, raw = anthropic(self.port, "hi", headers={"x-api-key": KEY})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(raw)["content"][0]["text"], "re: hi")

    def test_key_never_exposed(self):
        """Neither /requests, /stats nor the log contain the key."""
        chat(self.port, "logged", headers={"Authorization": "Bearer " + KEY})
        anthropic(self.port, "logged", headers={"x-api-key": "another-secret-x"})
        recs = request(self.port, "GET", "/requests")[2]
        self.assertNotIn(KEY.encode(), recs)
        self.assertNotIn(b"another-secret-x", recs)
        self.assertTrue(all(r["auth"] for r in json.loads(recs)[-2:]))
        self.assertNotIn(KEY.encode(), request(self.port, "GET", "/stats")[2])
        wait_for(lambda: os.path.exists(self.log) and os.path.getsize(self.log) > 0,
                 what="log written")
        with open(self.log, "rb") as f:
            log = f.read()
        self.assertIn(b"/v1/chat/completions", log)
        self.assertNotIn(KEY.encode(), log)
        self.assertNotIn(b"another-secret-x", log)
        self.assertNotIn(KEY.encode(), self.srv.read_stderr().encode())


class LifecycleTest(unittest.TestCase):
    """Start-up files and clean shutdown."""

    def test_sigterm_exits_zero(self):
        """pid/port files are written; SIGTERM with open connections exits 0."""
        srv = MockServer()
        try:
            with open(srv.pid_file) as f:
                self.assertEqual(int(f.read()), srv.proc.pid)
            held = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            held.sendall(raw_post("/v1/chat/completions", llm_body("[[fault:timeout]]")))
            wait_for(lambda: stats(srv.port)["in_flight"] == 1, what="in_flight 1")
            os.kill(srv.proc.pid, signal.SIGTERM)
            self.assertEqual(srv.proc.wait(20), 0)
            held.close()
            self.assertFalse(os.path.exists(srv.port_file))
            self.assertNotIn("Traceback", srv.read_stderr())
        finally:
            srv.stop()

    def test_bad_fixtures_fail_start(self):
        """A broken fixtures file makes start-up fail."""
        path = os.path.join(scratch_dir("bad_"), "bad.json")
        with open(path, "w") as f:
            f.write("{not json")
        with self.assertRaises(RuntimeError):
            MockServer("--fixtures", path)

    def test_demo_fixtures(self):
        """fixtures/demo.json loads and answers the demo prompts."""
        srv = MockServer("--fixtures", os.path.join(HERE, "fixtures", "demo.json"))
        try:
            for product, brand in [("Apple iPhone 15", "Apple"),
                                   ("Samsung Galaxy S24", "Samsung"),
                                   ("Sony WH-1000XM5 headphones", "Sony"),
                                   ("Nike Air Max 90", "Nike"),
                                   ("Dyson V15 Detect vacuum", "Dyson"),
                                   ("LEGO Star Wars Millennium Falcon", "LEGO")]:
                r = chat_json(srv.port, "What brand makes this product?\n" + product)
                self.assertEqual(json.loads(content_of(r)), {"brand": brand})
            r = chat_json(srv.port, "Review: Great sound, I love it!")
            self.assertEqual(json.loads(content_of(r))["sentiment"], "positive")
            r = chat_json(srv.port, "Review: The strap broke after two weeks.")
            self.assertEqual(json.loads(content_of(r))["sentiment"], "negative")
        finally:
            srv.stop()


def on_signal(signum, _frame):
    """Stop the servers (by pid) when the test itself is terminated."""
    for srv in SERVERS:
        if srv.proc.poll() is None:
            try:
                os.kill(srv.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(WORKDIR, ignore_errors=True)
    os._exit(128 + signum)


def main():
    """Run the suite, print the summary line and exit non-zero on failure."""
    started = time.monotonic()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        if failed:
            for srv in SERVERS:
                srv.stop()
                print("--- stderr of mock on port %d ---\n%s" % (srv.port if hasattr(srv, "port")
                                                                else 0, srv.read_stderr()))
    finally:
        stop_all()
    passed = result.testsRun - failed - len(result.skipped)
    print("runtime: %.1f s" % (time.monotonic() - started))
    print("mock: %d passed, %d failed" % (passed, failed))
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
