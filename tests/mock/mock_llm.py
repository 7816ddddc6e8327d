#!/usr/bin/env python3
"""Deterministic mock LLM provider for the rvbbit tests, demo and benchmark.

The server speaks enough HTTP/1.1 (keep-alive, Content-Length and chunked
request bodies, ``Expect: 100-continue``) to stand in for an
OpenAI-compatible endpoint (``POST .../chat/completions``) and an
Anthropic-compatible one (``POST .../messages``).  Replies are derived only
from the request, so the same prompt always gets the same answer.  Only the
Python 3.11 standard library is used; everything runs on one asyncio event
loop.

Usage::

    python3 tests/mock/mock_llm.py [--host 127.0.0.1] [--port 0]
        [--port-file FILE] [--pid-file FILE] [--latency-ms N]
        [--fixtures FILE] [--require-key KEY] [--log FILE]

With ``--port 0`` an ephemeral port is bound; ``--port-file`` receives the
port number (written atomically once the socket listens).  The server runs
until SIGTERM or SIGINT and then exits 0.

The "prompt" of a request is the text of its last ``user`` message.
Directives embedded in the prompt steer the answer:

    [[latency:N]]          sleep N ms before answering
    [[fault:CODE]]         answer with HTTP CODE (429 carries Retry-After: 1)
    [[fault:429:S]]        429 with Retry-After: S
    [[fault:timeout]]      never answer (until the client goes away)
    [[fault:malformed]]    200 with an invalid JSON body
    [[fault:truncated]]    200 claiming 1000 bytes, send 100, then close
    [[fault:huge]]         200 with a 6 MB reply
    [[fault:empty]]        200 with an empty body
    [[fault:close]]        close the connection without answering
    [[fault:wire:MODE]]    a normal reply framed another way on the wire
                           (tests the worker's HTTP/1.1 client): chunked (in
                           chunks, with an extension and a trailer), eof (no
                           Content-Length, ends with the connection), trickle
                           (7 bytes at a time), continue (after 100 Continue
                           and 103 Early Hints), lf (bare LF line ends),
                           http10 (HTTP/1.0, closes), drop (keep-alive said,
                           the connection closed after the reply);
                           stale16k (a reply of exactly 16 kB, then a
                           second reply nobody asked for);
                           malformed: badstatus, badchunk, badlength,
                           bigheaders (200 kB of header lines), midheaders
                           (100 kB, in one write)
    [[fault:echoheaders]]  401 whose error message repeats the request headers
                           (Authorization, x-api-key: tests that keys never
                           reach logs, errors or rvbbit.calls)
    [[fail:K:CODE[:S]]]    the first K times this prompt is seen, answer CODE
                           (429 with Retry-After: S; S written dN: any CODE with
                           Retry-After as an HTTP-date N seconds from now)
    [[reply:TEXT]]         reply with TEXT exactly
    [[invalid:K]]          first K JSON replies of this conversation violate
                           the schema ([[invalid:always]]: all of them); may
                           also sit in the conversation's first user message
    [[echo]]               reply with the prompt (directives removed)
    [[batch:N]]            schema replies: produce N array items
    [[stall:K]]            the first K times this prompt is seen, hold the
                           connection open and send nothing (until the
                           client goes away); [[stall:always]]: every time
    [[loading:S]]          for S seconds after this prompt is first seen,
                           answer 503 "Loading model" without Retry-After
                           (llama-server while it loads a model)
    [[needs:N]]            the reply needs N output tokens: when the request's
                           max_tokens is lower, the reply is cut off
                           (finish_reason "length", Anthropic stop_reason
                           "max_tokens", half the content)
    [[cached:N]]           usage reports N prompt tokens read from the
                           provider's prompt cache (OpenAI
                           prompt_tokens_details.cached_tokens, Anthropic
                           cache_read_input_tokens)
    [[fixture:NAME]]       replay the recorded reply fixtures/replies/NAME.json:
                           {"status": 200, "headers": {...}, "body": {...}}
    [[hold]], [[hold:NAME]]  answer only once NAME (default "") is released
                           (POST /release); the client going away still
                           ends the request at once
    [[hold:NAME:K]]        a barrier: NAME is released by itself once K
                           requests wait on it (then [[latency:N]] applies)

Without a directive the reply comes from the fixtures file (first matching
rule), else from the requested JSON Schema (a deterministic conforming
value), else it is ``"re: " + <prompt with whitespace collapsed>``.

Control endpoints: ``GET /health``, ``GET /stats``, ``POST /reset``,
``GET /requests?last=N``, ``POST /config`` (``{"latency_ms": N}``),
``POST /release`` (``{"name": NAME}`` releases the requests held under
NAME, now and later; no body releases every name) and ``POST /hold``
(``{"name": NAME}`` holds NAME again; no body: every name).  ``/stats``
counts the requests waiting on a hold in ``held`` and gives the mock's
clock in ``now`` (the clock of the records' ``t``); ``/reset`` re-arms
every hold.  Each record of ``/requests`` carries ``t`` (monotonic start,
when the request head was read), ``end`` (when it finished or was
abandoned), the ``prompt`` (last user message) and ``held`` (the hold name,
if any).
The API key given with ``--require-key`` is never logged or echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import functools
import hashlib
import http
import json
import math
import os
import re
import resource
import signal
import sys
import time
import traceback
import urllib.parse

OPENAI = "openai"
ANTHROPIC = "anthropic"

SCHEMA_MARKER = "Reply with only a JSON value that matches this JSON Schema:"

# Directive names and the pattern finding them.  TEXT in [[reply:TEXT]] may
# contain anything except "]]", hence the lazy match up to the first "]]".
_DIRECTIVE_NAMES = "latency|fault|fail|reply|invalid|echo|batch|stall|loading|needs|cached|fixture|hold"
DIRECTIVE_RE = re.compile(r"\[\[(%s)(?::(.*?))?\]\]" % _DIRECTIVE_NAMES, re.S)
# Same, plus the blanks that follow, for removing directives from the prompt
# so that "[[latency:5]] hello" and "hello" are the same prompt.
DIRECTIVE_STRIP_RE = re.compile(
    r"\[\[(?:%s)(?::.*?)?\]\][ \t]*" % _DIRECTIVE_NAMES, re.S)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_RECORDS = 1000
HUGE_CONTENT_CHARS = 6 * 1024 * 1024
TIMEOUT_FAULT_SECONDS = 3600.0
REPLY_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "replies")
READ_CHUNK = 256 * 1024
SMALL_WRITE = 64 * 1024

REASONS = {s.value: s.phrase for s in http.HTTPStatus}
REASONS[529] = "Overloaded"

# status -> (message, error type); 404's message names the model.
ERRORS = {
    400: ("bad request", "invalid_request_error"),
    401: ("invalid api key", "invalid_request_error"),
    403: ("forbidden", "permission_error"),
    404: (None, "not_found_error"),
    408: ("request timeout", "timeout_error"),
    413: ("request too large", "request_too_large"),
    429: ("rate limited", "rate_limit_error"),
    500: ("internal error", "api_error"),
    502: ("bad gateway", "api_error"),
    503: ("service unavailable", "overloaded_error"),
    504: ("gateway timeout", "api_error"),
    529: ("overloaded", "overloaded_error"),
}


def compact(value) -> str:
    """Return the compact JSON text of value (no blanks, UTF-8 kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sha1_hex(text: str) -> str:
    """Return the hex SHA-1 of text (UTF-8)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def sha256_hex(text: str) -> str:
    """Return the hex SHA-256 of text (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=1)
def huge_content() -> str:
    """Return the 6 MB reply content used by [[fault:huge]] (built once)."""
    return ("0123456789abcdef" * (HUGE_CONTENT_CHARS // 16 + 1))[:HUGE_CONTENT_CHARS]


# ---------------------------------------------------------------------------
# Request text extraction
# ---------------------------------------------------------------------------

def content_text(content) -> str:
    """Return the text of a message content: a string, or a list of parts
    whose text parts are concatenated (images and other parts ignored)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
        return "".join(out)
    if content is None:
        return ""
    return str(content)


def extract_texts(flavour: str, body: dict):
    """Split a chat request into (prompt, first_user, system, whole).

    prompt is the last user message, first_user the first one, system the
    system instructions (Anthropic top-level "system", or OpenAI
    system/developer messages) and whole all message texts plus system,
    joined by newlines (the basis of the prompt token count)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    texts = []
    system_parts = []
    if flavour == ANTHROPIC and body.get("system") is not None:
        system_parts.append(content_text(body.get("system")))
        texts.append(system_parts[0])
    prompt = None
    first_user = None
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        text = content_text(msg.get("content"))
        texts.append(text)
        role = msg.get("role")
        if role == "user":
            prompt = text
            if first_user is None:
                first_user = text
        elif role in ("system", "developer"):
            system_parts.append(text)
    if prompt is None:
        prompt = ""
        first_user = ""
    return prompt, first_user, "\n".join(system_parts), "\n".join(texts)


def token_count(text_len: int) -> int:
    """Return the mock token count for a text length: ceil(len/4), >= 1."""
    return max(1, math.ceil(text_len / 4))


class Directives:
    """The [[...]] directives found in a prompt (first of each kind wins)."""

    __slots__ = ("latency_ms", "fault", "fail", "reply", "invalid", "echo",
                 "batch", "stall", "loading", "needs", "cached", "fixture", "hold")

    def __init__(self):
        """Start with no directive set."""
        self.latency_ms = None   # float
        self.fault = None        # str, e.g. "429:3", "timeout"
        self.fail = None         # (k, code, retry_after)
        self.reply = None        # str
        self.invalid = None      # int, -1 for always
        self.echo = False
        self.batch = None        # int
        self.stall = None        # int, -1 for always
        self.loading = None      # float seconds
        self.needs = None        # int
        self.cached = None       # int
        self.fixture = None      # str
        self.hold = None         # (name, barrier count or None)


NO_DIRECTIVES = Directives()


def parse_directives(prompt: str) -> Directives:
    """Parse the directives of prompt; malformed values are ignored."""
    if "[[" not in prompt:
        return NO_DIRECTIVES
    d = Directives()
    for m in DIRECTIVE_RE.finditer(prompt):
        name, arg = m.group(1), m.group(2)
        try:
            if name == "latency" and d.latency_ms is None and arg is not None:
                d.latency_ms = max(0.0, float(arg))
            elif name == "fault" and d.fault is None and arg:
                d.fault = arg.strip().lower()
            elif name == "fail" and d.fail is None and arg:
                parts = arg.split(":")
                k = int(parts[0])
                code = int(parts[1]) if len(parts) > 1 else 500
                retry = parts[2] if len(parts) > 2 else "1"
                if retry.startswith("d"):
                    d.fail = (k, code, "d%d" % int(retry[1:]))
                else:
                    d.fail = (k, code, str(int(retry)))
            elif name == "reply" and d.reply is None and arg is not None:
                d.reply = arg
            elif name == "invalid" and d.invalid is None and arg:
                d.invalid = -1 if arg.strip() == "always" else int(arg)
            elif name == "echo":
                d.echo = True
            elif name == "batch" and d.batch is None and arg:
                d.batch = max(0, int(arg))
            elif name == "stall" and d.stall is None and arg:
                d.stall = -1 if arg.strip() == "always" else int(arg)
            elif name == "loading" and d.loading is None and arg:
                d.loading = max(0.0, float(arg))
            elif name == "needs" and d.needs is None and arg:
                d.needs = max(0, int(arg))
            elif name == "cached" and d.cached is None and arg:
                d.cached = max(0, int(arg))
            elif name == "fixture" and d.fixture is None and arg:
                if re.fullmatch(r"[A-Za-z0-9_.-]+", arg) and ".." not in arg:
                    d.fixture = arg
            elif name == "hold" and d.hold is None:
                hname, sep, k = (arg or "").strip().rpartition(":")
                if sep and k.isdigit():
                    d.hold = (hname, int(k))
                else:
                    d.hold = ((arg or "").strip(), None)
        except ValueError:
            continue
    return d


def clean_prompt(prompt: str) -> str:
    """Return prompt without its directives, stripped of outer whitespace."""
    if "[[" not in prompt:
        return prompt.strip()
    return DIRECTIVE_STRIP_RE.sub("", prompt).strip()


def text_reply(cleaned: str) -> str:
    """Return the default text reply for a (directive-free) prompt."""
    return "re: " + " ".join(cleaned.split())[:200]


# ---------------------------------------------------------------------------
# JSON Schema handling
# ---------------------------------------------------------------------------

def first_balanced_object(text: str, start: int):
    """Return the first balanced {...} substring of text at or after start,
    honouring JSON strings, or None."""
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    in_str = False
    esc = False
    for j in range(i, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j + 1]
    return None


@functools.lru_cache(maxsize=512)
def schema_from_text(text: str):
    """Find the marker line in text and return the JSON Schema after it.

    Returns the parsed schema (a dict), or None when there is no marker at
    the start of a line or no parsable {...} after it.  Cached, since the
    same instructions arrive with every row of a query."""
    pos = 0
    while True:
        idx = text.find(SCHEMA_MARKER, pos)
        if idx < 0:
            return None
        line_start = text.rfind("\n", 0, idx) + 1
        if text[line_start:idx].strip() == "":
            candidate = first_balanced_object(text, idx + len(SCHEMA_MARKER))
            if candidate is not None:
                try:
                    schema = json.loads(candidate)
                except ValueError:
                    schema = None
                if isinstance(schema, dict):
                    return schema
        pos = idx + len(SCHEMA_MARKER)


def detect_schema(flavour: str, body: dict, system: str, prompt: str):
    """Return (wants_json, schema) for a request; schema may be None when
    JSON is asked for without one (OpenAI json_object)."""
    wants = False
    if flavour == OPENAI:
        rf = body.get("response_format")
        if isinstance(rf, dict):
            kind = rf.get("type")
            if kind == "json_schema":
                js = rf.get("json_schema")
                if isinstance(js, dict) and isinstance(js.get("schema"), dict):
                    return True, js["schema"]
                wants = True
            elif kind == "json_object":
                wants = True
    for text in (system, prompt):
        if text and SCHEMA_MARKER in text:
            schema = schema_from_text(text)
            if schema is not None:
                return True, schema
    return wants, None


class SchemaValue:
    """Deterministic generator of a value conforming to a JSON Schema.

    h = sha256(seed) drives enums, numbers and booleans; strings hash the
    seed together with the property path so each property differs."""

    def __init__(self, seed: str, root: dict):
        """Prepare a generator for seed (the cleaned prompt) and schema root."""
        self.seed = seed
        self.root = root
        self.h = int(sha256_hex(seed), 16)

    def resolve(self, schema):
        """Follow local $ref pointers ("#/$defs/x") in schema."""
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
            ref = schema["$ref"]
            if not ref.startswith("#"):
                return {}
            target = self.root
            for token in ref[1:].split("/"):
                if token == "":
                    continue
                token = token.replace("~1", "/").replace("~0", "~")
                if isinstance(target, dict) and token in target:
                    target = target[token]
                else:
                    return {}
            schema = target
            seen += 1
        return schema

    def kind(self, schema) -> str:
        """Return the effective type name of a (resolved) schema."""
        t = schema.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            t = non_null[0] if non_null else "null"
        if isinstance(t, str):
            return t
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def value(self, schema, path: str = "", depth: int = 0):
        """Return a value conforming to schema at the given property path."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or depth > 32:
            return None
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[self.h % len(enum)]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                pick = options[0]
                for opt in options:
                    opt_r = self.resolve(opt)
                    if isinstance(opt_r, dict) and opt_r.get("type") != "null":
                        pick = opt_r
                        break
                return self.value(pick, path, depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            props = dict(merged.get("properties") or {})
            for part in all_of:
                part = self.resolve(part)
                if isinstance(part, dict):
                    for k, v in part.items():
                        if k == "properties" and isinstance(v, dict):
                            props.update(v)
                        else:
                            merged.setdefault(k, v)
            if props:
                merged["properties"] = props
            return self.value(merged, path, depth + 1)
        t = self.kind(schema)
        if t == "object":
            return self.object_value(schema, path, depth)
        if t == "array":
            return self.array_value(schema, path, depth)
        if t == "integer":
            return self.integer_value(schema)
        if t == "number":
            return self.number_value(schema)
        if t == "boolean":
            return bool(self.h & 1)
        if t == "null":
            return None
        return self.string_value(schema, path)

    def object_value(self, schema, path, depth):
        """Return an object with every property (and every required name)."""
        out = {}
        props = schema.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                out[name] = self.value(sub, path + "." + name if path else name, depth + 1)
        required = schema.get("required")
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in out:
                    out[name] = self.string_value({}, path + "." + name if path else name)
        return out

    def array_count(self, schema) -> int:
        """Return 2 clamped to the schema's minItems/maxItems."""
        n = 2
        lo = schema.get("minItems")
        hi = schema.get("maxItems")
        if isinstance(hi, int) and n > hi:
            n = hi
        if isinstance(lo, int) and n < lo:
            n = lo
        return max(0, n)

    def array_value(self, schema, path, depth):
        """Return an array of array_count() items of the items schema."""
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        n = self.array_count(schema)
        out = []
        for i in range(n):
            if isinstance(prefix, list) and i < len(prefix):
                sub = prefix[i]
            elif isinstance(items, list):
                sub = items[i] if i < len(items) else {}
            elif isinstance(items, dict):
                sub = items
            else:
                sub = {"type": "string"}
            if schema.get("uniqueItems"):
                gen = SchemaValue(self.seed + str(i), self.root)
                out.append(gen.value(sub, path + "." + str(i) if path else str(i), depth + 1))
            else:
                out.append(self.value(sub, path + "." + str(i) if path else str(i), depth + 1))
        return out

    def _bounds(self, schema, scale: int):
        """Return integer bounds (lo, hi) of schema in units of 1/scale."""
        mn, mx = schema.get("minimum"), schema.get("maximum")
        xmn, xmx = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        lo = hi = None
        if isinstance(mn, (int, float)) and not isinstance(mn, bool):
            lo = math.ceil(mn * scale - 1e-9)
        if isinstance(xmn, (int, float)) and not isinstance(xmn, bool):
            v = math.floor(xmn * scale + 1e-9) + 1
            lo = v if lo is None else max(lo, v)
        if isinstance(mx, (int, float)) and not isinstance(mx, bool):
            hi = math.floor(mx * scale + 1e-9)
        if isinstance(xmx, (int, float)) and not isinstance(xmx, bool):
            v = math.ceil(xmx * scale - 1e-9) - 1
            hi = v if hi is None else min(hi, v)
        if lo is None and hi is None:
            lo, hi = 0, 100 * scale
        elif lo is None:
            lo = 0 if hi >= 0 else hi - 100 * scale
            if lo > hi:
                lo = hi
        elif hi is None:
            hi = lo + 100 * scale
        return lo, hi

    def integer_value(self, schema) -> int:
        """Return minimum + h % range within the schema bounds (0..100)."""
        lo, hi = self._bounds(schema, 1)
        if hi < lo:
            return lo
        return lo + self.h % (hi - lo + 1)

    def number_value(self, schema) -> float:
        """Return a number with one decimal within the schema bounds."""
        lo, hi = self._bounds(schema, 10)
        if hi < lo:
            return round(lo / 10, 1)
        return round((lo + self.h % (hi - lo + 1)) / 10, 1)

    def string_value(self, schema, path) -> str:
        """Return "mock-" + 8 hex of sha256(seed + path), honouring
        minLength/maxLength and a few common formats."""
        digest = sha256_hex(self.seed + path)
        fmt = schema.get("format") if isinstance(schema, dict) else None
        if fmt == "date":
            return "2024-01-%02d" % (int(digest[:4], 16) % 28 + 1)
        if fmt == "date-time":
            return "2024-01-%02dT12:00:00Z" % (int(digest[:4], 16) % 28 + 1)
        if fmt == "time":
            return "12:00:00"
        if fmt == "email":
            return "mock-%s@example.com" % digest[:8]
        if fmt in ("uri", "url"):
            return "https://example.com/mock-%s" % digest[:8]
        if fmt == "uuid":
            return "%s-%s-4%s-8%s-%s" % (digest[:8], digest[8:12], digest[13:16],
                                         digest[17:20], digest[20:32])
        s = "mock-" + digest[:8]
        lo = schema.get("minLength") if isinstance(schema, dict) else None
        hi = schema.get("maxLength") if isinstance(schema, dict) else None
        if isinstance(lo, int) and len(s) < lo:
            pad = digest * (lo // len(digest) + 1)
            s = (s + pad)[:lo]
        if isinstance(hi, int) and hi >= 0 and len(s) > hi:
            s = s[:hi]
        return s


def generate_json(schema, cleaned: str, batch) -> object:
    """Return the deterministic default JSON value for a schema request.

    With [[batch:N]] an array schema (or the top-level array properties of
    an object schema) gets exactly N items, item i derived from
    sha256(prompt + str(i)).  Without a schema an object {"result": text}
    is produced."""
    if not isinstance(schema, dict):
        return {"result": text_reply(cleaned)}
    gen = SchemaValue(cleaned, schema)
    if batch is None:
        return gen.value(schema)
    root = gen.resolve(schema)
    if isinstance(root, dict) and gen.kind(root) == "array":
        return batch_items(root, cleaned, schema, batch)
    value = gen.value(schema)
    if isinstance(root, dict) and isinstance(value, dict):
        props = root.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                sub_r = gen.resolve(sub)
                if isinstance(sub_r, dict) and gen.kind(sub_r) == "array":
                    value[name] = batch_items(sub_r, cleaned, schema, batch)
    return value


def batch_items(array_schema: dict, cleaned: str, root: dict, n: int) -> list:
    """Return n items of array_schema's items, item i seeded by prompt + i."""
    items = array_schema.get("items")
    if not isinstance(items, dict):
        items = {"type": "string"}
    return [SchemaValue(cleaned + str(i), root).value(items) for i in range(n)]


def prompt_rows(cleaned: str):
    """Return the first JSON array of objects written in the prompt (the
    rows of a MAP BATCH request, `{{ rows | tojson }}`), or None."""
    dec = json.JSONDecoder()
    pos = cleaned.find("[")
    while pos >= 0:
        try:
            value, _ = dec.raw_decode(cleaned, pos)
        except ValueError:
            value = None
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
        pos = cleaned.find("[", pos + 1)
    return None


def fixture_rows_reply(fixtures, schema, cleaned: str):
    """A MAP BATCH request (an array schema, rows in the prompt): one item
    per row, from the fixture rule that matches the row (its JSON reply),
    else generated from the items schema.  None when the request is not
    such a batch or no row matches a rule (the caller's usual reply)."""
    if not isinstance(schema, dict):
        return None
    gen = SchemaValue(cleaned, schema)
    root = gen.resolve(schema)
    if not isinstance(root, dict) or gen.kind(root) != "array":
        return None
    rows = prompt_rows(cleaned)
    if rows is None:
        return None
    items = root.get("items") if isinstance(root.get("items"), dict) else {}
    out = []
    matched = False
    for i, row in enumerate(rows):
        text = json.dumps(row, ensure_ascii=False)
        fx = fixtures.match(text)
        item = None
        if fx is not None and fx[1] == 200:
            try:
                item = json.loads(fx[0])
                matched = True
            except ValueError:
                item = None
        if item is None:
            item = SchemaValue(text + str(i), schema).value(items)
        out.append(item)
    return out if matched else None


def invalid_json(schema):
    """Return a value that violates schema: an object missing every required
    property, or a wrong-typed value when an object would pass."""
    if isinstance(schema, dict):
        t = schema.get("type")
        is_object = t == "object" or (t is None and "properties" in schema)
        closed = schema.get("additionalProperties") is False
        if is_object and not schema.get("required") and not closed:
            return "unexpected"
    return {"unexpected": True}


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

class Fixtures:
    """Reply rules loaded from a JSON file, reloaded when its mtime changes.

    File format: {"rules": [{"match": "substring" | "regex": "pattern",
    "reply": "text, \\1 group refs for regex", "status": 200,
    "latency_ms": N}]}.  The first matching rule wins."""

    def __init__(self, path: str):
        """Load the file at path; a broken file at start-up is fatal."""
        self.path = path
        self.rules = []
        self.mtime = None
        self.checked = time.monotonic()
        self.load(fatal=True)

    def load(self, fatal: bool = False):
        """(Re)read the rules; on error keep the old ones (or raise)."""
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            rules = []
            for i, rule in enumerate(data.get("rules", [])):
                if not isinstance(rule, dict):
                    raise ValueError("rule %d is not an object" % i)
                reply = rule.get("reply", "")
                if not isinstance(reply, str):
                    reply = compact(reply)
                status = int(rule.get("status", 200))
                latency = rule.get("latency_ms")
                latency = None if latency is None else float(latency)
                if "regex" in rule:
                    rules.append((re.compile(rule["regex"]), None, reply, status, latency))
                elif "match" in rule:
                    rules.append((None, str(rule["match"]), reply, status, latency))
                else:
                    raise ValueError("rule %d has neither match nor regex" % i)
        except (OSError, ValueError, TypeError, AttributeError, re.error) as e:
            if fatal:
                raise SystemExit("mock_llm: cannot load fixtures %s: %s" % (self.path, e))
            print("mock_llm: keeping old fixtures, cannot reload %s: %s" % (self.path, e),
                  file=sys.stderr, flush=True)
            return
        self.rules = rules
        self.mtime = st.st_mtime_ns

    def maybe_reload(self):
        """Stat the file at most once a second and reload it if changed."""
        now = time.monotonic()
        if now - self.checked < 1.0:
            return
        self.checked = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        if mtime != self.mtime:
            self.load()

    def match(self, prompt: str):
        """Return (reply, status, latency_ms) of the first matching rule."""
        self.maybe_reload()
        for regex, sub, reply, status, latency in self.rules:
            if regex is not None:
                m = regex.search(prompt)
                if m is not None:
                    return m.expand(reply), status, latency
            elif sub in prompt:
                return reply, status, latency
        return None


# ---------------------------------------------------------------------------
# Server state and request planning
# ---------------------------------------------------------------------------

class Plan:
    """What to answer to one LLM request, decided before any sleep."""

    __slots__ = ("status", "body", "headers", "delay", "action", "tokens")

    def __init__(self, status, body=b"", headers=(), delay=0.0, action="reply",
                 tokens=(0, 0)):
        """action: reply, truncated, close or timeout."""
        self.status = status
        self.body = body
        self.headers = headers
        self.delay = delay
        self.action = action
        self.tokens = tokens


def error_body(flavour: str, status: int, model=None, message=None) -> bytes:
    """Return the JSON error body for an HTTP status in a flavour's style."""
    msg, kind = ERRORS.get(status, (None, "api_error"))
    if message is None:
        message = msg
    if message is None:
        if status == 404:
            message = "model %s not found" % (model if model is not None else "")
        else:
            message = "mock error %d" % status
    err = {"message": message, "type": kind}
    if flavour == ANTHROPIC:
        return compact({"type": "error", "error": err}).encode()
    return compact({"error": err}).encode()


class State:
    """Counters, request log and configuration shared by all connections."""

    def __init__(self, args):
        """Initialise from the parsed command line."""
        self.latency_ms = float(args.latency_ms)
        self.require_key = args.require_key
        self.fixtures = Fixtures(args.fixtures) if args.fixtures else None
        self.log = open(args.log, "a", buffering=1, encoding="utf-8") if args.log else None
        self.conns = set()
        self.seq = 0
        self.in_flight = 0
        self.held = 0
        self.hold_waiters = collections.defaultdict(set)
        self.reset()

    def reset(self):
        """Zero the counters, the fail/invalid memory and the request log."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.by_status = collections.Counter()
        self.window = collections.deque()
        self.max_per_minute = 0
        self.tok_prompt = 0
        self.tok_completion = 0
        self.aborted = 0
        self.connections = 0
        self.fail_counts = {}
        self.invalid_counts = {}
        self.stall_counts = {}
        self.loading_since = {}
        self.records = collections.deque(maxlen=MAX_RECORDS)
        self.seq = 0
        self.hold()

    def begin(self):
        """Account for an LLM request whose headers were just read."""
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        now = time.monotonic()
        w = self.window
        w.append(now)
        cutoff = now - 60.0
        while w[0] <= cutoff:
            w.popleft()
        if len(w) > self.max_per_minute:
            self.max_per_minute = len(w)

    def hold(self, name=None):
        """Hold the requests carrying [[hold:name]] until released again;
        with name None, every name (the state after start and /reset)."""
        if name is None:
            self.release_all = False
            self.released = set()
            self.rearmed = set()
        else:
            self.released.discard(name)
            self.rearmed.add(name)

    def release(self, name=None):
        """Answer the requests held under name, now and later; with name
        None, under every name."""
        if name is None:
            self.release_all = True
            self.rearmed.clear()
            names = list(self.hold_waiters)
        else:
            self.released.add(name)
            self.rearmed.discard(name)
            names = [name]
        for n in names:
            for fut in list(self.hold_waiters.get(n, ())):
                if not fut.done():
                    fut.set_result(None)

    def is_released(self, name: str) -> bool:
        """Whether a request held under name may be answered."""
        return name in self.released or (self.release_all and name not in self.rearmed)

    async def wait_released(self, name: str, conn, barrier=None) -> bool:
        """Wait until name is released or the client goes away; return
        True if the client went away.  With barrier K, name is released
        once K requests wait on it."""
        waiters = self.hold_waiters[name]
        fut = None
        if barrier is not None and not self.is_released(name) and len(waiters) + 1 >= barrier:
            self.release(name)

        def wake(_=None):
            if fut is not None and not fut.done():
                fut.set_result(None)

        conn.closed.add_done_callback(wake)
        self.held += 1
        try:
            # loop: a /hold may re-arm the name before this task runs again
            while not (self.is_released(name) or conn.closed.done()):
                fut = conn.loop.create_future()
                waiters.add(fut)
                try:
                    await fut
                finally:
                    waiters.discard(fut)
        finally:
            self.held -= 1
            if not waiters:
                self.hold_waiters.pop(name, None)
            conn.closed.remove_done_callback(wake)
        return conn.closed.done()

    def stats(self) -> dict:
        """Return the /stats document."""
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "held": self.held,
            "max_in_flight": self.max_in_flight,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "max_per_minute": self.max_per_minute,
            "tokens": {"prompt": self.tok_prompt, "completion": self.tok_completion},
            "aborted": self.aborted,
            "connections": self.connections,
            "now": time.monotonic(),
        }

    def log_request(self, rec: dict, started: float):
        """Append one line about a finished request to the --log file."""
        if self.log is None:
            return
        status = rec.get("status")
        outcome = "aborted" if rec.get("aborted") else (status if status is not None else "closed")
        try:
            self.log.write("%s %s model=%s status=%s ms=%d\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%S"), rec.get("path"),
                json.dumps(rec.get("model")), outcome,
                (time.monotonic() - started) * 1000))
        except (OSError, ValueError):
            pass

    def authorised(self, flavour: str, headers: dict) -> bool:
        """Check the API key header of a request against --require-key."""
        key = self.require_key
        if key is None:
            return True
        if flavour == OPENAI:
            value = headers.get("authorization", "")
            scheme, _, token = value.partition(" ")
            return scheme.lower() == "bearer" and token.strip() == key
        return headers.get("x-api-key") == key

    def plan_llm(self, flavour: str, path: str, headers: dict, raw: bytes, rec: dict) -> Plan:
        """Decide the answer to an LLM request (no I/O, no sleeping)."""
        self.seq += 1
        n = self.seq
        default_delay = self.latency_ms / 1000.0
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return Plan(400, error_body(flavour, 400, message="request body is not a JSON object"),
                        delay=default_delay)
        rec["body"] = body
        model = body.get("model")
        rec["model"] = model
        model_name = model if isinstance(model, str) else ("" if model is None else str(model))
        if not self.authorised(flavour, headers):
            return Plan(401, error_body(flavour, 401), delay=default_delay)
        if model_name.startswith("nonexistent"):
            return Plan(404, error_body(flavour, 404, model_name), delay=default_delay)

        prompt, first_user, system, whole = extract_texts(flavour, body)
        rec["prompt"] = prompt
        d = parse_directives(prompt)
        if d.hold is not None:
            rec["held"], rec["barrier"] = d.hold
        delay = default_delay if d.latency_ms is None else d.latency_ms / 1000.0

        if d.fail is not None:
            k, code, retry = d.fail
            key = sha1_hex(prompt)
            seen = self.fail_counts.get(key, 0) + 1
            self.fail_counts[key] = seen
            if seen <= k:
                return self.error_plan(flavour, code, model_name, delay, retry)

        if d.stall is not None:
            key = sha1_hex(prompt)
            seen = self.stall_counts.get(key, 0) + 1
            self.stall_counts[key] = seen
            if d.stall < 0 or seen <= d.stall:
                return Plan(0, delay=TIMEOUT_FAULT_SECONDS, action="timeout")

        if d.loading is not None:
            key = sha1_hex(prompt)
            since = self.loading_since.setdefault(key, time.monotonic())
            if time.monotonic() - since < d.loading:
                err = {"error": {"code": 503, "message": "Loading model",
                                 "type": "unavailable_error"}}
                return Plan(503, compact(err).encode(), delay=delay)

        if d.fixture is not None:
            try:
                with open(os.path.join(REPLY_FIXTURES, d.fixture + ".json"), "rb") as f:
                    fx = json.loads(f.read())
                hdrs = tuple((str(k), str(v)) for k, v in fx.get("headers", {}).items())
                fbody = fx.get("body", "")
                fbody = fbody if isinstance(fbody, str) else compact(fbody)
                return Plan(int(fx.get("status", 200)), fbody.encode("utf-8"), hdrs,
                            delay, tokens=(0, 0))
            except (OSError, ValueError) as e:
                return Plan(500, error_body(flavour, 500, message="no fixture %s: %s" % (d.fixture, e)),
                            delay=delay)

        fault = d.fault
        if fault is not None:
            if fault == "timeout":
                return Plan(0, delay=max(delay, TIMEOUT_FAULT_SECONDS), action="timeout")
            if fault == "close":
                return Plan(0, delay=delay, action="close")
            if fault == "malformed":
                return Plan(200, b'{"choices": [ {"message": ', delay=delay)
            if fault == "empty":
                return Plan(200, b"", delay=delay)
            if fault == "echoheaders":
                echoed = "; ".join("%s: %s" % (k, v) for k, v in sorted(headers.items()))
                return Plan(401, error_body(flavour, 401, message="bad request headers: " + echoed),
                            delay=delay)
            if fault not in ("truncated", "huge") and not fault.startswith("wire:"):
                parts = fault.split(":")
                try:
                    code = int(parts[0])
                except ValueError:
                    code = None
                if code is not None:
                    retry = parts[1] if len(parts) > 1 and parts[1].isdigit() else "1"
                    return self.error_plan(flavour, code, model_name, delay, retry)

        cleaned = clean_prompt(prompt)
        status = 200
        if fault == "huge":
            content = huge_content()
        elif d.reply is not None:
            content = d.reply
        elif d.echo:
            content = cleaned
        else:
            wants_json, schema = detect_schema(flavour, body, system, prompt)
            invalid = False
            invalid_k = d.invalid
            if invalid_k is None and "[[invalid:" in first_user:
                # A retry's last message is the correction; the directive
                # sits in the conversation's first user message.
                invalid_k = parse_directives(first_user).invalid
            if invalid_k is not None and wants_json:
                key = sha1_hex(first_user)
                count = self.invalid_counts.get(key, 0) + 1
                self.invalid_counts[key] = count
                invalid = invalid_k < 0 or count <= invalid_k
            fx = None
            if invalid:
                content = compact(invalid_json(schema))
            else:
                rows_reply = None
                if self.fixtures is not None and wants_json:
                    rows_reply = fixture_rows_reply(self.fixtures, schema, cleaned)
                fx = None
                if rows_reply is None and self.fixtures is not None:
                    fx = self.fixtures.match(cleaned)
                if rows_reply is not None:
                    content = compact(rows_reply)
                elif fx is not None:
                    content, status, fx_latency = fx
                    if fx_latency is not None and d.latency_ms is None:
                        delay = fx_latency / 1000.0
                elif wants_json:
                    content = compact(generate_json(schema, cleaned, d.batch))
                else:
                    content = text_reply(cleaned)
            if status != 200:
                return self.error_plan(flavour, status, model_name, delay, "1",
                                       message=content or None)

        p = token_count(len(whole))
        c = token_count(len(content))
        cut = False
        if d.needs is not None:
            cap = body.get("max_tokens")
            if isinstance(cap, int) and cap < d.needs:
                cut = True
                content = content[:len(content) // 2]
                c = cap
        if flavour == ANTHROPIC:
            usage = {"input_tokens": p, "output_tokens": c}
            if d.cached is not None:
                # Anthropic's input_tokens excludes the cache reads
                cr = min(d.cached, p)
                usage = {"input_tokens": p - cr, "cache_read_input_tokens": cr,
                         "cache_creation_input_tokens": 0, "output_tokens": c}
            doc = {"id": "msg_mock_%d" % n, "type": "message", "role": "assistant",
                   "model": model, "content": [{"type": "text", "text": content}],
                   "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
                   "usage": usage}
        else:
            usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            if d.cached is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": min(d.cached, p)}
            doc = {"id": "mock-%d" % n, "object": "chat.completion",
                   "created": int(time.time()), "model": model,
                   "choices": [{"index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "length" if cut else "stop"}],
                   "usage": usage}
        out = compact(doc).encode("utf-8", "surrogatepass")
        if fault == "truncated":
            return Plan(200, out, delay=delay, action="truncated", tokens=(p, c))
        if fault is not None and fault.startswith("wire:"):
            return Plan(200, out, delay=delay, action=fault, tokens=(p, c))
        return Plan(200, out, delay=delay, tokens=(p, c))

    def error_plan(self, flavour, code, model_name, delay, retry, message=None) -> Plan:
        """Return the plan of an error answer (429 carries Retry-After; a
        retry written dN is an HTTP-date N seconds ahead, for any code)."""
        if retry.startswith("d"):
            when = email.utils.formatdate(time.time() + int(retry[1:]), usegmt=True)
            headers = (("Retry-After", when),)
        else:
            headers = (("Retry-After", retry),) if code == 429 else ()
        return Plan(code, error_body(flavour, code, model_name, message), headers, delay)


# ---------------------------------------------------------------------------
# Minimal HTTP/1.1 on asyncio streams
# ---------------------------------------------------------------------------

class PeerGone(Exception):
    """The client closed the connection (or it broke)."""


class BadRequest(Exception):
    """The request cannot be parsed; answer with status and close."""

    def __init__(self, status: int, message: str):
        """Remember the status and message to send."""
        super().__init__(message)
        self.status = status
        self.message = message


class Conn:
    """One client connection: a pump task moves bytes from the StreamReader
    into buf and notices end-of-file at once, so that requests sleeping in
    the server can see their client go away."""

    __slots__ = ("reader", "writer", "buf", "eof", "closed", "waiter", "loop", "pump_task",
                 "task")

    def __init__(self, reader, writer):
        """Wrap the stream pair; call start() to begin reading."""
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.eof = False
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        self.waiter = None
        self.pump_task = None
        self.task = asyncio.current_task()

    def start(self):
        """Start the pump task."""
        self.pump_task = self.loop.create_task(self.pump())

    async def pump(self):
        """Read from the socket until EOF or error, waking any reader."""
        reader = self.reader
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self.buf += data
                w = self.waiter
                if w is not None and not w.done():
                    w.set_result(None)
        except Exception:
            pass
        finally:
            self.eof = True
            if not self.closed.done():
                self.closed.set_result(None)
            w = self.waiter
            if w is not None and not w.done():
                w.set_result(None)

    async def more(self):
        """Wait for more bytes; raise PeerGone at end of input."""
        if self.eof:
            raise PeerGone()
        w = self.waiter = self.loop.create_future()
        try:
            await w
        finally:
            self.waiter = None

    async def read_until(self, sep: bytes, limit: int) -> bytes:
        """Return the bytes up to and including sep (at most limit bytes)."""
        buf = self.buf
        scan = 0
        while True:
            i = buf.find(sep, scan)
            if i >= 0:
                end = i + len(sep)
                out = bytes(buf[:end])
                del buf[:end]
                return out
            if len(buf) > limit:
                raise BadRequest(431, "request header too large")
            scan = max(0, len(buf) - len(sep) + 1)
            await self.more()

    async def read_exactly(self, n: int) -> bytes:
        """Return exactly n bytes."""
        buf = self.buf
        while len(buf) < n:
            await self.more()
        out = bytes(buf[:n])
        del buf[:n]
        return out

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes away; True if it did."""
        if self.closed.done():
            return True
        if seconds <= 0:
            return False
        fut = self.loop.create_future()

        def wake(_=None):
            if not fut.done():
                fut.set_result(None)

        handle = self.loop.call_later(seconds, wake)
        self.closed.add_done_callback(wake)
        try:
            await fut
        finally:
            handle.cancel()
            self.closed.remove_done_callback(wake)
        return self.closed.done()

    def close(self):
        """Close the socket and stop the pump."""
        try:
            self.writer.close()
        except Exception:
            pass
        if self.pump_task is not None:
            self.pump_task.cancel()


def response_head(status: int, length: int, keep_alive: bool, headers=(),
                  content_type: str = "application/json") -> bytes:
    """Return the status line and headers of a response."""
    lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Unknown")),
             "Content-Type: " + content_type,
             "Content-Length: %d" % length]
    for name, value in headers:
        lines.append("%s: %s" % (name, value))
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send(conn: Conn, head: bytes, body: bytes = b""):
    """Write a response and wait until it is handed to the kernel."""
    w = conn.writer
    if len(body) <= SMALL_WRITE:
        w.write(head + body)
    else:
        w.write(head)
        w.write(body)
    await w.drain()


async def read_body(conn: Conn, headers: dict) -> bytes:
    """Read the request body (Content-Length or chunked)."""
    te = headers.get("transfer-encoding")
    chunked = te is not None and "chunked" in te.lower()
    length = 0
    if not chunked:
        cl = headers.get("content-length")
        if cl:
            try:
                length = int(cl)
            except ValueError:
                raise BadRequest(400, "bad Content-Length")
            if length < 0:
                raise BadRequest(400, "bad Content-Length")
            if length > MAX_BODY_BYTES:
                raise BadRequest(413, "request too large")
    if (chunked or length > 0) and headers.get("expect", "").lower() == "100-continue":
        conn.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if not chunked:
        return await conn.read_exactly(length) if length else b""
    parts = []
    total = 0
    while True:
        line = await conn.read_until(b"\r\n", 4096)
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, "bad chunk size")
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = await conn.read_until(b"\r\n", MAX_HEADER_BYTES)
                if trailer == b"\r\n":
                    break
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise BadRequest(413, "request too large")
        parts.append(await conn.read_exactly(size))
        if await conn.read_exactly(2) != b"\r\n":
            raise BadRequest(400, "bad chunk terminator")


async def send_wire(conn: Conn, mode: str, body: bytes, keep: bool) -> bool:
    """Send a 200 reply framed as mode ([[fault:wire:MODE]]); return whether
    the connection stays open."""
    w = conn.writer
    ka = "Connection: keep-alive" if keep else "Connection: close"
    ctype = "Content-Type: application/json"

    def head(*lines, status="HTTP/1.1 200 OK", eol="\r\n"):
        return (eol.join((status,) + lines) + eol + eol).encode("latin-1")

    if mode == "chunked" or mode == "badchunk":
        out = [head(ctype, "Transfer-Encoding: chunked", ka)]
        third = max(1, len(body) // 3)
        pieces = [body[:third], body[third:2 * third], body[2 * third:]]
        for i, piece in enumerate(x for x in pieces if x):
            size = b"zz" if mode == "badchunk" else b"%x" % len(piece)
            ext = b";note=1" if i == 0 else b""
            out.append(size + ext + b"\r\n" + piece + b"\r\n")
        out.append(b"0\r\nX-Trailer: yes\r\n\r\n")
        w.write(b"".join(out))
        await w.drain()
        return keep and mode == "chunked"
    if mode == "eof":
        w.write(head(ctype, "Connection: close") + body)
        await w.drain()
        return False
    if mode == "trickle":
        data = head(ctype, "Content-Length: %d" % len(body), ka) + body
        for i in range(0, len(data), 7):
            w.write(data[i:i + 7])
            await w.drain()
            await asyncio.sleep(0.002)
        return keep
    if mode == "continue":
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        w.write(head(ctype, "Content-Length: %d" % len(body), ka) + body)
        await w.drain()
        return keep
    if mode == "lf":
        w.write(head(ctype, "Content-Length: %d" % len(body), ka, eol="\n") + body)
        await w.drain()
        return keep
    if mode == "http10":
        w.write(head(ctype, "Content-Length: %d" % len(body), status="HTTP/1.0 200 OK") + body)
        await w.drain()
        return False
    if mode == "drop":
        w.write(head(ctype, "Content-Length: %d" % len(body), "Connection: keep-alive") + body)
        await w.drain()
        return False
    if mode == "badstatus":
        w.write(head(ctype, "Content-Length: %d" % len(body), ka, status="HTTP/1.1 2x0 OK") + body)
        await w.drain()
        return False
    if mode == "badlength":
        w.write(head(ctype, "Content-Length: %d" % len(body), "Content-Length: 7", ka) + body)
        await w.drain()
        return False
    if mode == "stale16k":
        # the reply fills a 16 kB receive buffer exactly, and a second,
        # unasked-for reply follows in the same write: a client that reuses
        # the connection without looking takes it for the next answer
        def reply(text, pad=""):
            lines = [ctype, "Content-Length: %d" % len(text), ka]
            if pad:
                lines.append("X-Pad: " + pad)
            return head(*lines) + text
        first = reply(body, "p")
        pad = 16384 - len(first) + 1
        if pad < 1:
            raise BadRequest(400, "stale16k: the reply is longer than 16 kB")
        first = reply(body, "p" * pad)
        stale = json.loads(body)
        stale["choices"][0]["message"]["content"] = "STALE ANSWER"
        w.write(first + reply(json.dumps(stale).encode("utf-8")))
        await w.drain()
        return keep
    if mode == "midheaders":
        # 100 kB of header lines, sent at once: over the 64 kB limit even
        # when the whole block is in one read
        filler = tuple("X-Filler-%d: %s" % (i, "f" * 1000) for i in range(100))
        w.write(head(*((ctype, "Content-Length: %d" % len(body), ka) + filler)) + body)
        await w.drain()
        return False
    if mode == "bigheaders":
        filler = tuple("X-Filler-%d: %s" % (i, "f" * 1000) for i in range(200))
        w.write(head(*((ctype, "Content-Length: %d" % len(body), ka) + filler)) + body)
        await w.drain()
        return False
    w.write(head("Content-Length: 0", "Connection: close", status="HTTP/1.1 500 Unknown wire mode"))
    await w.drain()
    return False


def parse_head(head: bytes):
    """Parse a request head into (method, target, version, headers)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "bad request line")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


class Server:
    """The HTTP front end: accepts connections and routes requests."""

    def __init__(self, state: State):
        """Serve with the given shared state."""
        self.state = state

    async def handle(self, reader, writer):
        """Serve one connection: requests in sequence until close."""
        conn = Conn(reader, writer)
        st = self.state
        st.conns.add(conn)
        st.connections += 1
        conn.start()
        try:
            while True:
                try:
                    head = await conn.read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
                except PeerGone:
                    return
                head = head.lstrip(b"\r\n")
                if not head:
                    continue
                if not await self.serve_one(conn, head):
                    return
        except BadRequest as e:
            try:
                body = compact({"error": {"message": e.message,
                                          "type": "invalid_request_error"}}).encode()
                await send(conn, response_head(e.status, len(body), False), body)
            except Exception:
                pass
        except (PeerGone, ConnectionError, OSError):
            pass
        except Exception:
            traceback.print_exc()
        finally:
            st.conns.discard(conn)
            conn.close()

    async def serve_one(self, conn: Conn, head: bytes) -> bool:
        """Serve one request; return whether the connection stays open."""
        method, target, version, headers = parse_head(head)
        conn_hdr = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep = "keep-alive" in conn_hdr
        else:
            keep = "close" not in conn_hdr
        path, _, query = target.partition("?")
        if path.startswith("http://") or path.startswith("https://"):
            path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
        if method == "POST" and path.endswith("/chat/completions"):
            return await self.serve_llm(conn, OPENAI, path, headers, keep)
        if method == "POST" and path.endswith("/messages"):
            return await self.serve_llm(conn, ANTHROPIC, path, headers, keep)
        raw = await read_body(conn, headers)
        status, body, ctype = self.control(method, path, query, raw)
        await send(conn, response_head(status, len(body), keep, content_type=ctype), body)
        return keep

    def control(self, method: str, path: str, query: str, raw: bytes):
        """Answer a control endpoint: return (status, body, content type)."""
        st = self.state
        js = "application/json"
        if path == "/health":
            if method in ("GET", "HEAD"):
                return 200, b"ok", "text/plain"
        elif path == "/stats":
            if method == "GET":
                return 200, compact(st.stats()).encode(), js
        elif path == "/reset":
            if method == "POST":
                st.reset()
                return 200, b'{"ok":true}', js
        elif path == "/requests":
            if method == "GET":
                records = list(st.records)
                params = urllib.parse.parse_qs(query)
                if "last" in params:
                    try:
                        last = int(params["last"][0])
                    except ValueError:
                        return 400, b'{"error":{"message":"last must be an integer"}}', js
                    records = records[-last:] if last > 0 else []
                return 200, compact(records).encode(), js
        elif path in ("/hold", "/release"):
            if method == "POST":
                name = None
                if raw.strip():
                    try:
                        cfg = json.loads(raw)
                        name = cfg["name"]
                        if not isinstance(name, str):
                            raise TypeError
                    except (ValueError, TypeError, KeyError):
                        return 400, b'{"error":{"message":"expected {\\"name\\": NAME} or no body"}}', js
                if path == "/hold":
                    st.hold(name)
                else:
                    st.release(name)
                return 200, compact({"ok": True, "held": st.held}).encode(), js
        elif path == "/config":
            if method == "POST":
                try:
                    cfg = json.loads(raw)
                    latency = float(cfg["latency_ms"])
                    if latency < 0:
                        raise ValueError
                except (ValueError, TypeError, KeyError):
                    return 400, b'{"error":{"message":"expected {\\"latency_ms\\": N}"}}', js
                st.latency_ms = latency
                return 200, compact({"latency_ms": latency}).encode(), js
        else:
            return 404, b'{"error":{"message":"not found","type":"not_found_error"}}', js
        return 405, b'{"error":{"message":"method not allowed"}}', js

    async def serve_llm(self, conn: Conn, flavour: str, path: str, headers: dict,
                        keep: bool) -> bool:
        """Serve a chat request: plan, sleep (watching the client), answer."""
        st = self.state
        st.begin()
        started = time.monotonic()
        rec = {"path": path, "model": None, "body": None,
               "auth": "authorization" in headers or "x-api-key" in headers,
               "host": headers.get("host"),
               "accept_encoding": headers.get("accept-encoding"),
               "user_agent": headers.get("user-agent"),
               "status": None, "t": round(started, 4)}
        st.records.append(rec)
        try:
            try:
                raw = await read_body(conn, headers)
            except PeerGone:
                st.aborted += 1
                rec["aborted"] = True
                return False
            try:
                plan = st.plan_llm(flavour, path, headers, raw, rec)
            except Exception as e:  # a bug in the mock: say so, keep serving
                traceback.print_exc()
                plan = Plan(500, error_body(flavour, 500, message="mock internal error: %r" % e))
            if rec.get("held") is not None and await st.wait_released(
                    rec["held"], conn, rec.get("barrier")):
                st.aborted += 1
                rec["aborted"] = True
                return False
            if plan.delay > 0 and await conn.sleep(plan.delay):
                st.aborted += 1
                rec["aborted"] = True
                return False
            if plan.action == "timeout":
                return False
            if plan.action == "close":
                return False
            st.by_status[plan.status] += 1
            rec["status"] = plan.status
            if plan.action == "truncated":
                head = response_head(plan.status, 1000, False, plan.headers)
                await send(conn, head, plan.body[:100])
                return False
            if plan.action.startswith("wire:"):
                p, c = plan.tokens
                st.tok_prompt += p
                st.tok_completion += c
                try:
                    return await send_wire(conn, plan.action[5:], plan.body, keep)
                except (ConnectionError, OSError):
                    st.aborted += 1
                    rec["aborted"] = True
                    return False
            head = response_head(plan.status, len(plan.body), keep, plan.headers)
            p, c = plan.tokens
            st.tok_prompt += p
            st.tok_completion += c
            try:
                await send(conn, head, plan.body)
            except (ConnectionError, OSError):
                st.aborted += 1
                rec["aborted"] = True
                return False
            return keep
        finally:
            st.in_flight -= 1
            rec["end"] = round(time.monotonic(), 4)
            st.log_request(rec, started)


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------

def raise_nofile_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit (best effort)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    targets = [hard] if hard != resource.RLIM_INFINITY else []
    targets += [1 << 20, 65536]
    for target in targets:
        if soft != resource.RLIM_INFINITY and target <= soft:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return
        except (ValueError, OSError):
            continue


def write_atomically(path: str, text: str):
    """Write text to path through a temporary file and a rename."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_if_ours(path: str, text: str):
    """Remove path if it still holds text (our port or pid)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                os.unlink(path)
    except OSError:
        pass


async def serve(args) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit code."""
    state = State(args)
    server = Server(state)
    loop = asyncio.get_running_loop()
    listener = await asyncio.start_server(server.handle, args.host, args.port,
                                          backlog=4096, reuse_address=True,
                                          limit=1 << 20)
    port = listener.sockets[0].getsockname()[1]
    port_text = "%d\n" % port
    if args.port_file:
        write_atomically(args.port_file, port_text)
    print("mock_llm: listening on %s:%d" % (args.host, port), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    # Drop every connection; the handlers see their clients go and finish
    # on their own (cancelling them would make asyncio log noise).
    tasks = [conn.task for conn in state.conns if conn.task is not None]
    for conn in list(state.conns):
        try:
            conn.writer.transport.abort()
        except Exception:
            pass
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    if args.port_file:
        remove_if_ours(args.port_file, port_text)
    if state.log is not None:
        state.log.close()
    return 0


def parse_args(argv=None):
    """Parse the command line."""
    ap = argparse.ArgumentParser(description="Deterministic mock LLM provider (OpenAI and "
                                             "Anthropic compatible) for rvbbit tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--pid-file", help="write the server pid here")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="default latency before each answer")
    ap.add_argument("--fixtures", help="JSON file of reply rules")
    ap.add_argument("--require-key", help="API key that requests must carry")
    ap.add_argument("--log", help="append one line per LLM request to this file")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Entry point."""
    args = parse_args(argv)
    raise_nofile_limit()
    pid_text = "%d\n" % os.getpid()
    if args.pid_file:
        write_atomically(args.pid_file, pid_text)
    try:
        return asyncio.run(serve(args))
    finally:
        if args.pid_file:
            remove_if_ours(args.pid_file, pid_text)


if __name__ == "__main__":
    sys.exit(main())
