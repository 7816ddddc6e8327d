--
-- Budgets and estimates: rvbbit.estimate's est_calls is the number of
-- requests the statement sends (one per row and cell for MAP, one per
-- batch for MAP BATCH, one per cell for RUN); a statement's budget_dollars
-- reserves each call's expected cost before it is sent, so even at
-- PARALLEL 50 and with several cells the spend stays within it when the
-- estimate holds, and overshoots by at most the calls in flight when not.
--
-- runs a statement; says how it ended
CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE q;
    RETURN 'completed';
EXCEPTION WHEN configuration_limit_exceeded THEN
    RETURN SQLERRM;
END
$f$;
CREATE TABLE est_rows AS SELECT n, 'est row ' || n AS text FROM generate_series(1, 12) n;
SELECT rvbbit.create_cascade('est_batch', $$
cells:
  - name: item
    instructions: "One item per row: {{ rows | tojson }}"
    output_schema:
      type: object
      properties: {v: {type: string}}
      required: [v]
$$);
-- MAP: one request per row
SELECT input_rows, est_calls FROM rvbbit.estimate($$MAP 'echo' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*) FROM rvbbit.sql($$MAP PARALLEL 4 'echo' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
-- MAP BATCH 5 with 12 rows: three requests
SELECT input_rows, est_calls FROM rvbbit.estimate($$MAP BATCH 5 'est_batch' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*) FROM rvbbit.sql($$MAP BATCH 5 'est_batch' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
-- RUN: one request over all rows; with two cells, two
SELECT input_rows, est_calls FROM rvbbit.estimate($$RUN 'summarize_rows' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*) FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
SELECT input_rows, est_calls FROM rvbbit.estimate($$RUN $y$cells: [{name: a, instructions: "{{ row_count }} rows"}, {name: b, instructions: "again {{ outputs.a }}"}]$y$
  USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*) FROM rvbbit.sql($$RUN $y$cells: [{name: a, instructions: "{{ row_count }} rows"}, {name: b, instructions: "again {{ outputs.a }}"}]$y$
  USING (SELECT n, text FROM est_rows) WITH (cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
-- MAP with two cells; equal rows share a call when the cache is on
SELECT input_rows, est_calls FROM rvbbit.estimate($$MAP 'two_step' USING (SELECT 'item ' || (n % 3) AS description FROM generate_series(1, 6) n)$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*) FROM rvbbit.sql($$MAP 'two_step' USING (SELECT 'item ' || (n % 3) AS description FROM generate_series(1, 6) n)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
-- run again: everything is cached, nothing would be sent
SELECT input_rows, cached_rows, est_calls, est_cost FROM rvbbit.estimate($$MAP 'two_step' USING (SELECT 'item ' || (n % 3) AS description FROM generate_series(1, 6) n)$$);

-- budget_dollars at PARALLEL 50, estimate at or above the real cost:
-- the spend never exceeds the budget (without the reservation all 50 rows
-- in flight would be paid)
INSERT INTO rvbbit.model_prices VALUES ('stmt/exact', 10000, 10000), ('stmt/cells', 10000, 10000),
    ('stmt/under', 10000, 10000);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT pg_temp.outcome($q$SELECT count(*) FROM rvbbit.sql($$MAP PARALLEL 50 $y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 20}]$y$
  USING (SELECT 'b ' || n AS text FROM generate_series(1, 200) n)
  WITH (model = 'stmt/exact', cache = false, budget_dollars = 2)$$)$q$);
SELECT count(*) > 0 AS some_calls, count(*) < 200 AS stopped, sum(cost) <= 2 AS within_budget,
       count(*) = (mock('/stats')->>'requests')::int AS all_recorded
  FROM rvbbit.calls WHERE model = 'stmt/exact';
-- the same with two cells: each cell's call reserves
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT pg_temp.outcome($q$SELECT count(*) FROM rvbbit.sql($$MAP PARALLEL 50 $y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 20},
                                                     {name: b, instructions: "again {{ outputs.a }}", max_tokens: 20}]$y$
  USING (SELECT 'c ' || n AS text FROM generate_series(1, 200) n)
  WITH (model = 'stmt/cells', cache = false, budget_dollars = 2)$$)$q$);
SELECT count(*) > 0 AS some_calls, count(*) < 400 AS stopped, sum(cost) <= 2 AS within_budget,
       count(DISTINCT cell) AS cells, count(*) = (mock('/stats')->>'requests')::int AS all_recorded
  FROM rvbbit.calls WHERE model = 'stmt/cells';
-- an estimate below the real cost (max_tokens 1, long replies): the spend
-- exceeds the budget by at most the calls in flight at the last dispatch
-- (50 at PARALLEL 50), each overshooting by less than its cost
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT pg_temp.outcome($q$SELECT count(*) FROM rvbbit.sql($$MAP PARALLEL 50 $y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 1}]$y$
  USING (SELECT 'u ' || n || ' ' || repeat('long reply ', 20) AS text FROM generate_series(1, 400) n)
  WITH (model = 'stmt/under', cache = false, budget_dollars = 3)$$)$q$);
SELECT count(*) < 400 AS stopped, sum(cost) > 3 AS overshot,
       sum(cost) <= 3 + least(count(*), 50) * max(cost) AS within_bound,
       count(*) = (mock('/stats')->>'requests')::int AS all_recorded
  FROM rvbbit.calls WHERE model = 'stmt/under';
SELECT rvbbit.drop_cascade('est_batch');
DROP TABLE est_rows;
