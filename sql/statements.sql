--
-- RVBBIT statements through rvbbit.sql(): the rewrite to typed columns,
-- the grammar, options, errors with positions, and the places the rewrite
-- applies (EXPLAIN, CREATE TABLE AS, COPY, cursors, prepared statements).
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
-- the seed's examples
SELECT * FROM rvbbit.sql($$
  RVBBIT MAP 'extract_brand' AS brand
  USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24')) AS t(product_name))
$$);
SELECT * FROM rvbbit.sql($$
  RVBBIT MAP PARALLEL 5 'extract_brand' AS brand
  USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Nike Air Max 90'),
                               ('Dyson V15 Detect vacuum'), ('LEGO Star Wars Millennium Falcon')) AS t(product_name))
$$);
-- the leading RVBBIT is optional, keywords are case-insensitive, default column "result"
SELECT * FROM rvbbit.sql($$map 'extract_brand' using (select 'Sony WH-1000XM5 headphones' as product_name)$$);
-- typed columns from the keys of the result: AS (...) and RETURNING (...)
SELECT * FROM rvbbit.sql($$MAP PARALLEL 3 'classify_sentiment' AS (sentiment text, confidence numeric(4,2))
  USING (SELECT id, review_text FROM (VALUES (1, 'I love it'), (2, 'It broke after a week'), (3, 'It does the job'))
         AS r(id, review_text))
  WITH (on_error = fail)$$);
SELECT * FROM rvbbit.sql($$MAP 'classify_sentiment' RETURNING (sentiment text)
  USING (SELECT 'waste of money' AS review_text)$$);
-- columns inferred from the output_schema
SELECT * FROM rvbbit.sql($$MAP 'classify_sentiment' USING (SELECT 'I love it' AS review_text)
  WITH (infer_schema = true)$$);
-- the column types of the USING query are kept, typmods included
CREATE TEMP TABLE typed_out AS SELECT * FROM rvbbit.sql($$
  MAP 'extract_brand' USING (SELECT 1::smallint AS n, 'Apple iPhone 15'::varchar(40) AS product_name,
                                    now()::date AS seen)$$);
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'typed_out'::regclass AND attnum > 0 ORDER BY attnum;
SELECT n, product_name, result FROM typed_out;
-- a value that does not convert is NULL under on_error = null
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' AS (brand int) USING (SELECT 'Apple iPhone 15' AS product_name)$$);
-- and an error under on_error = fail
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' AS (brand int) USING (SELECT 'Apple iPhone 15' AS product_name)
  WITH (on_error = 'fail')$$);
-- comments, strings with parentheses and dollar quotes inside USING
SELECT * FROM rvbbit.sql($q$
  -- a comment
  MAP /* another */ 'echo' AS answer
  USING (SELECT ')(' || $x$ ) $x$ || 'text' AS text /* ) */)
$q$);
-- the auto-LIMIT, and the limit option
SET rvbbit.default_limit = 3;
SELECT count(*) FROM (SELECT * FROM rvbbit.sql($$MAP PARALLEL 'echo' USING (SELECT n::text AS text FROM generate_series(1, 10) n)$$)) s;
SELECT * FROM rvbbit.sql($$MAP PARALLEL 'echo' USING (SELECT n::text AS text FROM generate_series(1, 10) n)$$);
SELECT count(*) FROM (SELECT * FROM rvbbit.sql($$MAP PARALLEL 'echo' USING (SELECT n::text AS text FROM generate_series(1, 10) n) WITH (limit = 0)$$)) s;
RESET rvbbit.default_limit;
-- DISTINCT: each distinct input is called once
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$MAP PARALLEL 4 DISTINCT 'echo' USING (SELECT (n % 2)::text || ' distinct' AS text FROM generate_series(1, 8) n ORDER BY n) WITH (cache = false)$$);
-- two distinct inputs: exactly two requests, one per distinct input
SELECT (mock('/stats')->>'requests')::int AS requests;
-- options: model, cache, result_column
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'opts' AS text) WITH (model = 'stmt/model', cache = false, result_column = 'reply')$$);
SELECT r->>'model' AS model FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;

-- EXPLAIN shows the rewritten plan
EXPLAIN (COSTS OFF) SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text)$$);
-- (18 prints row counts with two decimals: explain_filter drops ".00")
CREATE FUNCTION explain_filter(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE
  l text;
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) ' || q LOOP
    RETURN NEXT regexp_replace(l, 'rows=(\d+)\.00 ', 'rows=\1 ');
  END LOOP;
END $f$;
SELECT explain_filter($q$SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text)$$)$q$);
DROP FUNCTION explain_filter(text);
-- COPY (...) TO and cursors
COPY (SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 1 AS id, 'copy me' AS text)$$)) TO STDOUT;
BEGIN;
DECLARE cur CURSOR FOR SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 2 AS id, 'cursor' AS text)$$);
FETCH ALL FROM cur;
COMMIT;
-- prepared statements keep their columns
PREPARE brands AS SELECT * FROM rvbbit.sql($$MAP 'extract_brand' AS (brand text) USING (SELECT 'Nike Air Max 90' AS product_name)$$);
EXECUTE brands;
EXECUTE brands;
DEALLOCATE brands;
-- a prepared statement depends on the USING query's tables: a change is noticed
CREATE TABLE prep_src (text text);
INSERT INTO prep_src VALUES ('prepared');
PREPARE prep AS SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT * FROM prep_src)$$);
EXECUTE prep;
ALTER TABLE prep_src ADD COLUMN extra int;
EXECUTE prep;
DEALLOCATE prep;
-- only "*" is rewritten: a named or renamed column keeps the jsonb rows
SELECT sql AS renamed FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'renamed' AS text)$$);
SELECT s.* FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'alias star' AS text)$$) s;
-- anywhere else rvbbit.sql() returns one jsonb object per row
SELECT sql FROM rvbbit.sql($$MAP 'echo' USING (SELECT 7 AS id, 'as json' AS text)$$) LIMIT 5;
SELECT count(*) FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'counted' AS text)$$);
WITH x AS (SELECT * FROM rvbbit.sql($$MAP 'echo' AS reply USING (SELECT 'in a cte' AS text)$$))
SELECT sql->>'text' AS text, sql->>'reply' AS reply FROM x;

-- errors carry the position of the offending token
SELECT * FROM rvbbit.sql($$MAP 'echo' USIN (SELECT 1)$$);
SELECT * FROM rvbbit.sql('MAP PARALLEL 0 ''echo'' USING (SELECT 1)');
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (paralel = 3)$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING ()$$);
SELECT * FROM rvbbit.sql($$FROB 'echo'$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS result)$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (budget_dollars = 1)$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (async = true)$$);
-- a job's temporary table would vanish with the job's session: refused at submission
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (async = true, as_table = 'pg_temp.job_out')$$);
SET search_path = pg_temp, public;
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (async = true, as_table = 'job_out')$$);
RESET search_path;
SELECT * FROM rvbbit.sql($$MAP BATCH 5 'echo' USING (SELECT 'x' AS text)$$);
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (INSERT INTO typed_out DEFAULT VALUES)$$);
SELECT * FROM rvbbit.sql(NULL);
SELECT * FROM rvbbit.sql('MAP ''echo'' USING (SELECT ''x'' AS text)' || '');
PREPARE p(text) AS SELECT * FROM rvbbit.sql($1);

-- as_table writes the rows into a new table and returns a summary
SELECT * FROM rvbbit.sql($$MAP PARALLEL 3 'extract_brand' AS (brand text)
  USING (SELECT id, product_name FROM (VALUES (1, 'Apple iPhone 15'), (2, 'Nike Air Max 90')) AS p(id, product_name))
  WITH (as_table = 'brand_table')$$);
SELECT * FROM brand_table ORDER BY id;
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' USING (SELECT 'x' AS product_name) WITH (as_table = 'brand_table')$$);
SELECT sql FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'into' AS text) WITH (as_table = 'public.echo_table')$$) LIMIT 1;
SELECT * FROM echo_table;

-- budget_dollars stops scheduling calls once the spend reaches it: each
-- call reserves its expected cost (request length / 4 input tokens and the
-- 5 max_tokens sent, at $0.10 a token) before it is sent
INSERT INTO rvbbit.model_prices VALUES ('budget/model', 100000, 100000);
SET rvbbit.default_max_tokens = 5;
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'spend ' || n AS text FROM generate_series(1, 10) n)
  WITH (model = 'budget/model', cache = false, budget_dollars = 5.7)$$);
SELECT count(*) AS calls_made FROM rvbbit.calls WHERE model = 'budget/model';
-- a budget the statement stays within
SELECT count(*) FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'cheap' AS text) WITH (model = 'budget/model', budget_dollars = 100)$$);
RESET rvbbit.default_max_tokens;

-- dedupe_by: rows with the same key share one call (the first row's)
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$MAP PARALLEL 3 'echo' USING (SELECT n, (n % 3)::text AS k, 'key ' || (n % 3) || ' row ' || n AS text
  FROM generate_series(1, 9) n ORDER BY n) WITH (dedupe_by = 'k', cache = false)$$);
SELECT mock('/stats')->'requests' AS http_requests;
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'x' AS text) WITH (dedupe_by = 'nope')$$);

-- rvbbit.estimate: rows, cached rows, models, tokens and cost, without calling the LLM
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
INSERT INTO rvbbit.model_prices VALUES ('estimate/model', 1, 2);
SELECT input_rows, cached_rows, calls_per_row, models, est_input_tokens > 0 AS has_in,
       est_output_tokens, est_cost > 0 AS has_cost
  FROM rvbbit.estimate($$MAP 'extract_brand' USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Est only')) AS t(product_name))
  WITH (model = 'estimate/model')$$);
-- an error in the USING query points at its token in this text (LINE and caret);
-- at run time (rvbbit.map) it is a position in the QUERY that runs it
SELECT 1 AS one, * FROM rvbbit.sql($$MAP 'extract_brand'
  USING (SELECT product_name FROM no_such_table)$$) AS m;
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT * FROM no_such_table)$$);
-- a literal with escapes does not hold the USING query verbatim: QUERY shows it
SELECT * FROM rvbbit.sql('RUN ''summarize_rows'' USING (SELECT * FROM no_such_table)');
-- est_cost has no float noise: 3 rows * 100 output tokens at $0.1 per million
-- is 0.00003 (summed in float8: 3.0000000000000004e-05)
INSERT INTO rvbbit.model_prices VALUES ('estimate/noise', 0, 0.1);
SELECT est_output_tokens, est_cost, est_cost::text AS est_cost_text
  FROM rvbbit.estimate($$MAP 'extract_brand' USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Est only')) AS t(product_name))
  WITH (model = 'estimate/noise')$$);
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' USING (SELECT 'Apple iPhone 15' AS product_name) WITH (model = 'estimate/model')$$);
SELECT input_rows, cached_rows
  FROM rvbbit.estimate($$MAP 'extract_brand' USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Est only')) AS t(product_name))
  WITH (model = 'estimate/model')$$);
SELECT calls_per_row, models FROM rvbbit.estimate($$MAP 'two_step' USING (SELECT 'kettle' AS description)$$);
-- more distinct rows than a list's first allocation holds (the units
-- outlive the SPI connection they were read in: this crashed the server)
SELECT input_rows, cached_rows, est_output_tokens
  FROM rvbbit.estimate($$MAP 'extract_brand' USING (SELECT 'p' || g AS product_name FROM generate_series(1, 1000) g)
  WITH (model = 'estimate/model')$$);
-- the estimates made no HTTP request
SELECT mock('/stats')->'requests' AS http_requests;

-- RUN: the cascade once over the whole result set (rows, row_count)
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$RUN $y$cells: [{name: c, instructions: "{{ row_count }} rows: {{ rows | tojson }}"}]$y$ AS summary
  USING (SELECT n, 'v' || n AS v FROM generate_series(1, 3) n ORDER BY n)$$);
SELECT mock('/stats')->'requests' AS http_requests;
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name))$$);
-- the auto-LIMIT of RUN is 10000 rows; the limit option changes it
SELECT * FROM rvbbit.sql($$RUN $y$cells: [{name: c, instructions: "{{ row_count }}"}]$y$ USING (SELECT n FROM generate_series(1, 10001) n)$$);
SELECT * FROM rvbbit.sql($$RUN $y$cells: [{name: c, instructions: "{{ row_count }}"}]$y$ USING (SELECT n FROM generate_series(1, 5) n) WITH (limit = 2)$$);
-- an empty input is a call with no rows
SELECT * FROM rvbbit.sql($$RUN $y$cells: [{name: c, instructions: "{{ row_count }} rows"}]$y$ USING (SELECT 1 AS n WHERE false)$$);
-- RUN with as_table: an array result becomes rows, columns from the output_schema's items
SELECT * FROM rvbbit.sql($$RUN $y$
cells:
  - name: list
    instructions: "List two items for {{ row_count }} rows [[batch:2]]"
    output_schema:
      type: array
      items:
        type: object
        properties:
          n: {type: integer, minimum: 1, maximum: 9}
          label: {type: string}
        required: [n, label]
$y$ USING (SELECT 1 AS x) WITH (as_table = 'run_items')$$);
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'run_items'::regclass AND attnum > 0 ORDER BY attnum;
SELECT count(*) AS items FROM run_items;
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS x) WITH (as_table = 'run_not_array')$$);
-- and elsewhere RUN returns one jsonb object
SELECT sql ? 'result' AS has_result FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS x)$$) LIMIT 1;
EXPLAIN (COSTS OFF) SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS x)$$);
