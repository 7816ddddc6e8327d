--
-- What real providers send back: recorded replies (OpenAI, Anthropic,
-- llama-server) replayed by the mock, truncation, cached prompt tokens,
-- what is sent by default, definition-time schema checks.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
\set VERBOSITY default
INSERT INTO rvbbit.providers (prefix, api_base, api_flavor)
SELECT 'claude', format('http://127.0.0.1:%s/v1', port), 'anthropic' FROM mock_cfg;
INSERT INTO rvbbit.model_prices (model, input_per_million, output_per_million, cached_input_per_million)
VALUES ('gpt-4o-mini', 1000000, 2000000, 100000),
       ('claude:claude-test', 1000000, 2000000, 100000);

-- what is sent by default: max_tokens = rvbbit.default_max_tokens, temperature 0
SELECT rvbbit.run($$cells: [{name: say, instructions: "defaults {{ input.x }}"}]$$, '{"x": 1}');
SELECT r->'body'->>'max_tokens' AS max_tokens, r->'body'->>'temperature' AS temperature
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
SET rvbbit.default_max_tokens = 77;
SELECT rvbbit.run($$cells: [{name: say, instructions: "defaults {{ input.x }}"}]$$, '{"x": 2}');
SELECT r->'body'->>'max_tokens' AS max_tokens
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
RESET rvbbit.default_max_tokens;
-- the cell's own values win
SELECT rvbbit.run($$cells: [{name: say, instructions: "own {{ input.x }}", max_tokens: 9, temperature: 0.5}]$$, '{"x": 1}');
SELECT r->'body'->>'max_tokens' AS max_tokens, r->'body'->>'temperature' AS temperature
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;

-- OpenAI's documented reply: the answering model, id, finish reason and
-- cached prompt tokens are logged; cached tokens cost the cached price
SELECT rvbbit.run('echo', '{"text": "[[fixture:openai_chat]] hi"}', '{"model": "gpt-4o-mini"}');
SELECT model, response_model, response_id, finish_reason, input_tokens, cached_tokens,
       output_tokens, round(cost::numeric, 6) AS cost -- (1919 - 1792) x 1 + 1792 x 0.1 + 10 x 2
  FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
-- Anthropic's documented reply: cache reads are prompt tokens too
SELECT rvbbit.run('echo', '{"text": "[[fixture:anthropic_message]] hi"}', '{"model": "claude:claude-test"}');
SELECT response_model, response_id, finish_reason, input_tokens, cached_tokens, output_tokens,
       round(cost::numeric, 6) AS cost -- 21 x 1 + 1888 x 0.1 + 12 x 2
  FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
-- the mock's own usage reports (both flavours)
SELECT rvbbit.run('echo', '{"text": "[[cached:3]] cache me"}');
SELECT cached_tokens FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
SELECT rvbbit.run('echo', '{"text": "[[cached:3]] cache me"}', '{"model": "claude:claude-test"}');
SELECT cached_tokens, finish_reason FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
-- a refusal is the reply's text
SELECT rvbbit.run('echo', '{"text": "[[fixture:openai_refusal]] hi"}');
-- llama-server answers any model name with its own
SELECT rvbbit.run('extract_brand', '{"product_name": "[[fixture:llama_server_chat]] x"}', '{"model": "whatever"}');
SELECT model, response_model, finish_reason, status FROM rvbbit.calls ORDER BY id DESC LIMIT 1;

-- replies recorded from a real llama-server (make test-real-server)
SELECT rvbbit.run('extract_brand', '{"product_name": "[[fixture:llama_server_recorded_schema]] x"}');
SELECT response_model, finish_reason, input_tokens, cached_tokens, output_tokens, status
  FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
SELECT rvbbit.run('extract_brand', '{"product_name": "[[fixture:llama_server_recorded_length]] x"}');

-- truncated replies: an error that says so, status truncated, never cached
SELECT rvbbit.run('echo', '{"text": "[[fixture:openai_length]] long"}', '{"max_retries": 0}');
SELECT rvbbit.run('echo', '{"text": "[[fixture:openai_length]] long"}', '{"max_retries": 0}');
SELECT status, finish_reason, error FROM rvbbit.calls ORDER BY id DESC LIMIT 2;
SELECT count(*) AS cached_truncations FROM rvbbit.cache WHERE response LIKE '%The product is a%';
SELECT rvbbit.run('echo', '{"text": "[[fixture:anthropic_max_tokens]] long"}', '{"model": "claude:claude-test"}');
SELECT rvbbit.run('extract_brand', '{"product_name": "[[fixture:llama_server_length]] x"}');
-- a schema cell cut off: no re-asks at the same cap, one with rules.grow_max_tokens
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT rvbbit.run($$cells: [{name: brand, instructions: "[[needs:150]] {{ input.p }}", max_tokens: 100,
                  output_schema: {type: object, properties: {brand: {type: string}}, required: [brand]}}]$$,
                  '{"p": "no growth"}');
SELECT mock('/stats')->'requests' AS requests;
SELECT rvbbit.run($$cells: [{name: brand, instructions: "[[needs:150]] {{ input.p }}", max_tokens: 100,
                  rules: {grow_max_tokens: true},
                  output_schema: {type: object, properties: {brand: {type: string}}, required: [brand]}}]$$,
                  '{"p": "grows"}') ? 'brand' AS has_brand;
SELECT r->'body'->>'max_tokens' AS max_tokens
  FROM mock('/requests?last=2') AS m(j), jsonb_array_elements(j) AS r;
SELECT status, attempt, finish_reason FROM rvbbit.calls ORDER BY id DESC LIMIT 2;
-- a fixed larger cap that is still too small
SELECT rvbbit.run($$cells: [{name: brand, instructions: "[[needs:500]] {{ input.p }}", max_tokens: 100,
                  rules: {grow_max_tokens: 200},
                  output_schema: {type: object, properties: {brand: {type: string}}, required: [brand]}}]$$,
                  '{"p": "too small"}');
SELECT rvbbit.run($$cells: [{name: b, instructions: "x", rules: {grow_max_tokens: "lots"}}]$$, '{}');

-- re-asks of a cell without a temperature raise it a little
SELECT rvbbit.run('extract_brand', '{"product_name": "Gadget [[invalid:1]]"}', '{"cache": false}') ? 'brand' AS has_brand;
SELECT r->'body'->>'temperature' AS temperature_of_extract_brand
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
SELECT rvbbit.run($$cells: [{name: b, instructions: "[[invalid:2]] {{ input.p }}",
                  output_schema: {type: object, properties: {b: {type: string}}, required: [b]}}]$$,
                  '{"p": "reask"}') ? 'b' AS has_b;
SELECT r->'body'->>'temperature' AS temperature
  FROM mock('/requests?last=3') AS m(j), jsonb_array_elements(j) AS r;

-- overloaded (Anthropic 529) and loading (llama-server 503) are retried
SELECT rvbbit.run('echo', '{"text": "[[fixture:anthropic_overloaded]] busy"}',
                  '{"model": "claude:claude-test", "max_retries": 1}');
SELECT status, http_status, error FROM rvbbit.calls ORDER BY id DESC LIMIT 2;
SET rvbbit.retry_max_delay = '50ms';
SELECT rvbbit.run('echo', '{"text": "[[fixture:llama_server_loading]] busy"}', '{"max_retries": 2}');
SELECT attempt, status, http_status FROM rvbbit.calls ORDER BY id DESC LIMIT 3;
-- Retry-After as an HTTP-date takes precedence over rvbbit.retry_max_delay
SELECT rvbbit.run('echo', '{"text": "[[fail:1:503:d3]] come back later"}');
SELECT max(called_at) - min(called_at) >= interval '1 second' AS waited_for_retry_after
  FROM (SELECT called_at FROM rvbbit.call_log ORDER BY id DESC LIMIT 2) c;
RESET rvbbit.retry_max_delay;

-- schemas no reply can satisfy, or that rvbbit cannot check, are refused
-- when the cascade is defined, before anything is paid for
SELECT rvbbit.create_cascade('bad_items', $$cells: [{name: c, instructions: x,
  output_schema: {type: array, minItems: 3, maxItems: 2}}]$$);
SELECT rvbbit.create_cascade('bad_required', $$cells: [{name: c, instructions: x,
  output_schema: {type: object, properties: {a: {type: string}}, required: [a, b], additionalProperties: false}}]$$);
SELECT rvbbit.create_cascade('bad_bounds', $$cells: [{name: c, instructions: x,
  output_schema: {type: object, properties: {n: {type: number, minimum: 5, maximum: 1}}}}]$$);
SELECT rvbbit.create_cascade('bad_enum', $$cells: [{name: c, instructions: x,
  output_schema: {type: string, enum: []}}]$$);
SELECT rvbbit.create_cascade('bad_ref', $$cells: [{name: c, instructions: x,
  output_schema: {anyOf: [{type: string}, {type: integer}]}}]$$);
SELECT rvbbit.create_cascade('bad_format', $$cells: [{name: c, instructions: x,
  output_schema: {type: string, format: credit-card}}]$$);
SELECT rvbbit.create_cascade('bad_pattern', $$cells: [{name: c, instructions: x,
  output_schema: {type: string, pattern: "^(?=a)b"}}]$$);
SELECT rvbbit.run($$cells: [{name: c, instructions: x, output_schema: {type: string, minLength: 4, maxLength: 2}}]$$, '{}');
-- pattern and format are checked in replies (re-asked with the error)
SELECT rvbbit.run($$cells: [{name: c, instructions: "[[reply:{\"code\": \"ab-12\"}]] x",
  output_schema: {type: object, properties: {code: {type: string, pattern: "^[a-z]{2}-\\d{3}$"}}, required: [code]},
  rules: {max_attempts: 1}}]$$, '{}');
SELECT rvbbit.run($$cells: [{name: c, instructions: "[[reply:{\"day\": \"2026-02-30\"}]] x",
  output_schema: {type: object, properties: {day: {type: string, format: date}}},
  rules: {max_attempts: 1}}]$$, '{}');
SELECT rvbbit.run($$cells: [{name: c, instructions: "[[reply:{\"day\": \"2028-02-29\", \"code\": \"ab-123\"}]] x",
  output_schema: {type: object, properties: {day: {type: string, format: date},
                  code: {type: string, pattern: "^[a-z]{2}-\\d{3}$"}}}}]$$, '{}');
-- draft-4 exclusiveMinimum: true is sent in the current form
SELECT rvbbit.run($$cells: [{name: c, instructions: "draft4",
  output_schema: {type: object, properties: {n: {type: integer, minimum: 0, exclusiveMinimum: true}}, required: [n]}}]$$, '{}') ? 'n' AS has_n;
SELECT r->'body'->'response_format'->'json_schema'->'schema'->'properties'->'n' AS sent
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;

DELETE FROM rvbbit.providers WHERE prefix = 'claude';
DELETE FROM rvbbit.model_prices WHERE model IN ('gpt-4o-mini', 'claude:claude-test');
