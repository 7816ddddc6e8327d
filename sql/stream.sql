--
-- Streaming MAP: which calls become Custom Scan (RVBBIT Map), cursors
-- (forward, SCROLL, WITH HOLD), LIMIT, rescans, and the fallbacks to the
-- materialising function scan.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
-- rvbbit.map in FROM, also under a WHERE, a join and a LIMIT
EXPLAIN (COSTS OFF)
SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''s'' || n AS text FROM generate_series(1, 3) n', 2)
       AS t(n int, text text, result jsonb) WHERE n > 1 LIMIT 1;
SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''s'' || n AS text FROM generate_series(1, 3) n', 2)
       AS t(n int, text text, result jsonb) WHERE n > 1 LIMIT 1;
-- the whole row of the call, and arguments from another table, keep the function scan
EXPLAIN (COSTS OFF)
SELECT t FROM rvbbit.map('echo', 'SELECT 1 AS n, ''w'' AS text', 1) AS t(n int, text text, result jsonb);
SELECT t FROM rvbbit.map('echo', 'SELECT 1 AS n, ''w'' AS text', 1) AS t(n int, text text, result jsonb);
CREATE TABLE stream_queries (c text);
INSERT INTO stream_queries VALUES ('SELECT 1 AS n, ''lat'' AS text');
EXPLAIN (COSTS OFF)
SELECT q.c, t.result FROM stream_queries q,
       LATERAL rvbbit.map('echo', q.c, 1) AS t(n int, text text, result jsonb);
SELECT q.c, t.result FROM stream_queries q,
       LATERAL rvbbit.map('echo', q.c, 1) AS t(n int, text text, result jsonb);
DROP TABLE stream_queries;
-- a rescan runs the MAP again (here: the inner side of a nested loop)
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SET enable_material = off;
EXPLAIN (COSTS OFF)
SELECT g, t.n FROM generate_series(1, 2) g,
       rvbbit.map('echo', 'SELECT n, ''r'' || n AS text FROM generate_series(1, 2) n', 2) AS t(n int, text text, result jsonb)
 WHERE t.n >= g ORDER BY 1, 2;
SELECT g, t.n FROM generate_series(1, 2) g,
       rvbbit.map('echo', 'SELECT n, ''r'' || n AS text FROM generate_series(1, 2) n', 2) AS t(n int, text text, result jsonb)
 WHERE t.n >= g ORDER BY 1, 2;
RESET enable_hashjoin;
RESET enable_mergejoin;
RESET enable_material;
-- cursors: forward only, SCROLL (materialised), WITH HOLD
BEGIN;
DECLARE c NO SCROLL CURSOR FOR
  SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''c'' || n AS text FROM generate_series(1, 5) n', 2)
         AS t(n int, text text, result jsonb);
FETCH 2 FROM c;
FETCH 2 FROM c;
FETCH BACKWARD 1 FROM c;
ROLLBACK;
BEGIN;
DECLARE c SCROLL CURSOR FOR
  SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''c'' || n AS text FROM generate_series(1, 5) n', 2)
         AS t(n int, text text, result jsonb);
FETCH 3 FROM c;
FETCH BACKWARD 2 FROM c;
FETCH ALL FROM c;
COMMIT;
BEGIN;
DECLARE h CURSOR WITH HOLD FOR
  SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''h'' || n AS text FROM generate_series(1, 4) n', 2)
         AS t(n int, text text, result jsonb);
FETCH 1 FROM h;
COMMIT;
FETCH ALL FROM h;
CLOSE h;
-- EXPLAIN without ANALYZE runs nothing
SELECT (mock('/stats')->>'requests')::int AS before \gset
EXPLAIN (COSTS OFF) SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n, ''never'' AS text', 1)
       AS t(n int, text text, result jsonb);
SELECT (mock('/stats')->>'requests')::int - :before AS requests_by_explain;
-- a row a budget refused is never returned (as NULL): the statement fails
-- at it, after the rows before it have gone out
INSERT INTO rvbbit.model_prices VALUES ('stream/budget', 100000, 100000);
SET rvbbit.default_max_tokens = 5;
COPY (SELECT n, result FROM rvbbit.map('echo', 'SELECT n, ''b'' || n AS text FROM generate_series(1, 6) n', 1,
      '{"model": "stream/budget", "cache": false, "budget_dollars": 4}') AS t(n int, text text, result jsonb)) TO STDOUT;
RESET rvbbit.default_max_tokens;
DELETE FROM rvbbit.model_prices WHERE model = 'stream/budget';
