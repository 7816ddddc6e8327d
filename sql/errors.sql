--
-- Errors from bad input, provider failures, timeouts and cancellation.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
\set VERBOSITY default
-- an input without a field the template prints
SELECT rvbbit.run('echo', '{"other": 1}');
SELECT rvbbit.run('echo', NULL);
-- options
SELECT rvbbit.run('echo', '{"text": "x"}', '{"modle": "x"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '[1]');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"timeout": -5}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"max_retries": "many"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"on_error": "explode"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"cache": "forever"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"async": true}');

-- provider HTTP errors
SELECT rvbbit.run('echo', '{"text": "[[fault:401]] who am I"}');
SELECT rvbbit.run('echo', '{"text": "hello"}', '{"model": "nonexistent-model"}');
SELECT rvbbit.run('echo', '{"text": "[[fault:500]] always broken"}', '{"max_retries": 1}');
SELECT status, http_status, error FROM rvbbit.calls ORDER BY id DESC LIMIT 2;
-- 429 with Retry-After is retried (the mock fails twice, then answers)
SELECT rvbbit.run('echo', '{"text": "[[fail:2:429:1]] busy"}');
SELECT status, http_status, error FROM rvbbit.calls ORDER BY id DESC LIMIT 3;
-- 500 once, then fine
SELECT rvbbit.run('echo', '{"text": "[[fail:1:500]] flaky"}', '{"max_retries": 2}');
-- 429 for good: gives up after max_retries
SELECT rvbbit.run('echo', '{"text": "[[fault:429:0]] rate limited"}', '{"max_retries": 2}');
SELECT count(*) AS attempts FROM rvbbit.call_log
 WHERE cache_key = (SELECT cache_key FROM rvbbit.call_log ORDER BY id DESC LIMIT 1);
-- broken bodies
SELECT rvbbit.run('echo', '{"text": "[[fault:malformed]] x"}');
-- (libcurl's own wording of a truncated body, in the detail, varies by release)
\set VERBOSITY terse
SELECT rvbbit.run('echo', '{"text": "[[fault:truncated]] x"}', '{"max_retries": 0}');
\set VERBOSITY default
SELECT rvbbit.run('echo', '{"text": "[[fault:empty]] x"}');
SELECT rvbbit.run('echo', '{"text": "[[fault:close]] x"}', '{"max_retries": 0}');
-- a 6 MB reply is fine
SELECT length(rvbbit.run('echo', '{"text": "[[fault:huge]] x"}') #>> '{}') > 6000000 AS huge_ok;
-- nothing that failed is cached
SELECT count(*) AS cached_without_success FROM rvbbit.cache c
 WHERE NOT EXISTS (SELECT FROM rvbbit.call_log l WHERE l.cache_key = c.key AND l.status = 'ok');
SELECT count(*) AS failed_calls FROM rvbbit.call_log WHERE status = 'error';

-- a request that takes longer than the timeout (the mock never answers it)
SELECT rvbbit.run('echo', '{"text": "[[fault:timeout]] slow"}', '{"timeout": 300}');
SET rvbbit.request_timeout = '200ms';
SELECT rvbbit.run('echo', '{"text": "[[fault:timeout]] slow again"}');
RESET rvbbit.request_timeout;
-- statement_timeout (and Ctrl-C) interrupt a call, and the worker drops it
SET statement_timeout = '500ms';
SELECT rvbbit.run('echo', '{"text": "[[fault:timeout]] never answers"}');
RESET statement_timeout;
SELECT mock_wait_idle() AS in_flight_after_cancel;
-- the next call works
SELECT rvbbit.run('echo', '{"text": "after the cancel"}');
