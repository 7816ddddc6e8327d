--
-- rvbbit.run(): calls through the worker, the cache, call records,
-- schemas and re-asks, multi-cell cascades, providers.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
TRUNCATE rvbbit.cache;
TRUNCATE rvbbit.call_log;
SELECT rvbbit.run('echo', '{"text": "hello world"}');
-- the same call again is answered from the cache: no second HTTP request
SELECT rvbbit.run('echo', '{"text": "hello world"}');
SELECT mock('/stats')->'requests' AS http_requests;
SELECT cascade, cell, model, status, http_status, attempt,
       input_tokens > 0 AS has_in, output_tokens > 0 AS has_out,
       latency_ms >= 0 AS has_latency, error, role
  FROM rvbbit.calls ORDER BY id;
-- cache => false calls again
SELECT rvbbit.run('echo', '{"text": "hello world"}', '{"cache": false}');
SELECT mock('/stats')->'requests' AS http_requests;
-- a cache age limit: '1 hour' accepts the entry, 0 seconds does not
SELECT rvbbit.run('echo', '{"text": "hello world"}', '{"cache": "1 hour"}');
SELECT mock('/stats')->'requests' AS http_requests;
SELECT rvbbit.run('echo', '{"text": "hello world"}', '{"cache": 0}');
SELECT mock('/stats')->'requests' AS http_requests;

-- a result survives the caller's rollback: the worker committed it
BEGIN;
SELECT rvbbit.run('echo', '{"text": "rolled back"}');
ROLLBACK;
SELECT count(*) AS cached_entries FROM rvbbit.cache WHERE response = 're: rolled back';
SELECT count(*) AS call_records FROM rvbbit.calls WHERE status = 'ok' AND cascade = 'echo';
SELECT rvbbit.run('echo', '{"text": "rolled back"}');
SELECT mock('/stats')->'requests' AS http_requests;

-- output_schema: the request carries response_format, the reply is parsed
SELECT rvbbit.run('extract_brand', '{"product_name": "Sony WH-1000XM5 headphones"}');
SELECT r->'body'->'response_format'->>'type' AS response_format,
       r->'body'->'response_format'->'json_schema'->>'name' AS schema_name,
       r->'body'->'messages'->0->>'role' AS first_role,
       r->'body'->>'temperature' AS temperature,
       r->'body'->>'max_tokens' AS max_tokens,
       r->>'model' AS model
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
-- a reply that fails the schema is re-asked with the validation error
SELECT rvbbit.run('extract_brand', '{"product_name": "Gadget [[invalid:1]]"}') ? 'brand' AS has_brand;
SELECT status, attempt, error IS NOT NULL AS has_error FROM rvbbit.calls
 WHERE cascade = 'extract_brand' ORDER BY id DESC LIMIT 2;
SELECT jsonb_array_length(r->'body'->'messages') AS messages,
       r->'body'->'messages'->3->>'content' LIKE 'Your reply did not match the required JSON schema: $: missing required property "brand"%' AS reask_names_error
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
-- and fails after max_attempts
SELECT rvbbit.run('extract_brand', '{"product_name": "Gadget [[invalid:always]]"}');
SELECT count(*) AS attempts FROM rvbbit.calls
 WHERE cascade = 'extract_brand' AND status = 'invalid';

-- two cells: the second sees outputs of the first
SELECT rvbbit.run('two_step', '{"description": "[[reply:{\"brand\": \"Bosch\", \"category\": \"kettle\"}]] a kettle"}');
SELECT r->'body'->'messages'->0->>'content' LIKE '%advertising a kettle%made by Bosch%' AS second_cell_used_first
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
-- a system prompt, temperature and max_tokens reach the provider
SELECT rvbbit.run('system_prompt', '{"text": "hi", "who": "Ada"}');
SELECT r->'body'->'messages'->0 AS system_message, r->'body'->>'temperature' AS temperature,
       r->'body'->>'max_tokens' AS max_tokens
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;

-- the model: cascade default, then rvbbit.default_model, then the option
SELECT rvbbit.run('echo', '{"text": "which model"}', '{"model": "other/model"}');
SELECT r->>'model' AS model FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
SET rvbbit.default_model = 'session/model';
SELECT rvbbit.run('echo', '{"text": "session model"}');
SELECT r->>'model' AS model FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
RESET rvbbit.default_model;

-- the Anthropic Messages API through a provider prefix
INSERT INTO rvbbit.providers (prefix, api_base, api_flavor)
SELECT 'anth', format('http://127.0.0.1:%s/v1', port), 'anthropic' FROM mock_cfg;
SELECT rvbbit.run('system_prompt', '{"text": "hello claude", "who": "Bob"}', '{"model": "anth:claude-test"}');
SELECT r->>'path' AS path, r->>'model' AS model, r->'body'->>'system' AS system,
       r->'body'->>'max_tokens' AS max_tokens
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
SELECT rvbbit.run('extract_brand', '{"product_name": "Nike Air Max 90"}', '{"model": "anth:claude-test"}');
SELECT model, status FROM rvbbit.calls ORDER BY id DESC LIMIT 1;

-- prices: cost = tokens x price
INSERT INTO rvbbit.model_prices VALUES ('priced/model', 1000000, 2000000);
SELECT rvbbit.run('echo', '{"text": "what does it cost"}', '{"model": "priced/model"}');
SELECT cost = input_tokens * 1.0 + output_tokens * 2.0 AS cost_from_prices, cost > 0 AS paid
  FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
SELECT cascade, model, calls, ok, cache_hits, cost > 0 AS has_cost FROM rvbbit.stats
 WHERE model = 'priced/model';
