--
-- The seed's own statements, pasted as users paste them (comments,
-- 'traits/...yaml' names), and the one rule for cascade names used by
-- create_cascade, drop_cascade and every lookup (registry and files);
-- USING queries with comments; WITH (batch = n); options that do not
-- apply where they are given.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
CREATE TEMP TABLE products (product_name text);
INSERT INTO products VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Nike Air Max 90');
CREATE TEMP TABLE reviews (review_text text);
INSERT INTO reviews VALUES ('I love it, works great'), ('It broke after a week');

-- the seed's examples verbatim: shipped cascades under traits/, comments
-- before and after the statement, the trailing semicolon; the first two
-- share their USING query, written once (psql variables, so that each
-- statement is still one literal)
\set seed_using '\nUSING (\n  SELECT * FROM (VALUES\n    (''Apple iPhone 15''),\n    (''Samsung Galaxy S24''),\n    (''Sony WH-1000XM5''),\n    (''Google Pixel 8''),\n    (''OnePlus 12'')\n  ) AS t(product_name)\n);\n'
\set seed_sequential '\n-- Sequential (slow)\nRVBBIT MAP ''traits/extract_brand.yaml'' AS brand' :seed_using
\set seed_parallel '\n-- Parallel (5 concurrent - faster!)\nRVBBIT MAP PARALLEL 5 ''traits/extract_brand.yaml'' AS brand' :seed_using
SELECT * FROM rvbbit.sql(:'seed_sequential');
SELECT * FROM rvbbit.sql(:'seed_parallel');
SELECT * FROM rvbbit.sql($$
-- 10 concurrent calls (reasonable for most APIs)
RVBBIT MAP PARALLEL 10 'traits/extract_brand.yaml' AS brand
USING (
  SELECT * FROM products LIMIT 200
);
$$);
SELECT * FROM rvbbit.sql($$
-- 50 concurrent calls for fast classification
RVBBIT MAP PARALLEL 50 'traits/classify_sentiment.yaml' AS sentiment
USING (
  SELECT review_text FROM reviews LIMIT 1000
);
$$);
-- the same cascade under every spelling of its name; the rows above came
-- from the provider, these from the cache (same definition, same input)
SELECT n, rvbbit.run(n, '{"product_name": "Apple iPhone 15"}')->>'brand' AS brand
  FROM unnest(ARRAY['traits/extract_brand.yaml', 'traits/extract_brand.yml', 'traits/extract_brand',
                    './traits//extract_brand.yaml', 'extract_brand.yaml', 'extract_brand']) AS n;
SELECT DISTINCT cascade FROM rvbbit.calls WHERE cascade LIKE '%extract_brand%' ORDER BY 1;
-- RUN with a traits/ name, and a comment as its last USING line
SELECT * FROM rvbbit.sql($$
RVBBIT RUN 'summarize_rows.yaml' AS summary
USING (
  SELECT * FROM reviews
  -- every review
)
$$);

-- USING queries ending with comments (they used to swallow the parenthesis)
SELECT * FROM rvbbit.sql($$MAP 'traits/extract_brand.yaml' AS brand USING (
  SELECT product_name FROM products -- the catalogue
  WHERE product_name LIKE 'Apple%' -- only one
  -- and the last line is a comment
) WITH (limit = 5) -- trailing$$);
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' USING (SELECT 'Apple iPhone 15' AS product_name /* block */ -- line
)$$);
-- a -- inside a string or a dollar quote is no comment
SELECT * FROM rvbbit.sql($$MAP 'extract_brand' USING (SELECT 'Apple -- iPhone' AS product_name, $d$ -- ) $d$ AS d)$$);
-- the query of rvbbit.map() and rvbbit.estimate() may end with a comment too
SELECT * FROM rvbbit.map('extract_brand', 'SELECT ''Apple iPhone 15'' AS product_name -- one row', 1)
  AS t(product_name text, result jsonb);
SELECT input_rows, calls_per_row FROM rvbbit.estimate($$MAP 'extract_brand' USING (SELECT 'x' AS product_name -- c
)$$);
-- EXPLAIN and CREATE TABLE AS of a statement with comments
CREATE TEMP TABLE brands AS SELECT * FROM rvbbit.sql($$
  -- a comment first
  MAP 'traits/extract_brand' AS brand USING (SELECT * FROM products -- all
  ) -- done
$$);
SELECT product_name, brand->>'brand' AS brand FROM brands ORDER BY 1;

-- registry names: created, run, mapped and dropped under any spelling
SELECT rvbbit.create_cascade('traits/mine.yaml', $$
cells:
  - name: say
    instructions: "mine: {{ input.text }}"
$$);
SELECT name FROM rvbbit.cascades WHERE name LIKE 'traits/%';
SELECT rvbbit.run('traits/mine.yaml', '{"text": "a"}') AS yaml_suffix,
       rvbbit.run('traits/mine', '{"text": "a"}') AS no_suffix,
       rvbbit.run('traits/mine.yml', '{"text": "a"}') AS yml_suffix;
SELECT * FROM rvbbit.sql($$RVBBIT MAP 'traits/mine.yaml' USING (SELECT 'b' AS text)$$);
SELECT * FROM rvbbit.sql($$RVBBIT MAP PARALLEL 2 'traits/mine' USING (SELECT 'c' AS text)$$);
SELECT rvbbit.create_cascade('traits/count.yml', 'cells: [{name: a, instructions: "{{ row_count }} rows"}]');
SELECT * FROM rvbbit.sql($$RVBBIT RUN 'traits/count.yaml' USING (SELECT 'd' AS text)$$);
SELECT rvbbit.drop_cascade('traits/count');
-- replacing under another spelling replaces the same row
SELECT rvbbit.create_cascade('./traits/mine', $$
cells:
  - name: say
    instructions: "mine v2: {{ input.text }}"
$$);
SELECT count(*) FROM rvbbit.cascades WHERE name LIKE 'traits/mine%';
SELECT rvbbit.run('traits/mine.yaml', '{"text": "e"}');
SELECT rvbbit.drop_cascade('traits/mine.yml');
SELECT rvbbit.drop_cascade('traits/mine.yaml', if_exists => true);
SELECT rvbbit.run('traits/mine.yaml', '{"text": "f"}');
-- a registry entry shadows the shipped example of the same name, under any spelling
SELECT rvbbit.create_cascade('traits/extract_brand', $$
cells:
  - name: say
    instructions: "shadow: {{ input.product_name }}"
$$);
SELECT rvbbit.run('traits/extract_brand.yaml', '{"product_name": "x"}') AS registry,
       rvbbit.run('extract_brand', '{"product_name": "Apple iPhone 15"}')->>'brand' AS shipped;
SELECT rvbbit.drop_cascade('traits/extract_brand.yaml');
-- quotes, spaces, dots, non-ASCII letters and case are kept
SELECT rvbbit.create_cascade($$it's "v1.2" café$$, 'cells: [{name: a, instructions: "q {{ input.text }}"}]');
SELECT rvbbit.create_cascade('Mine', 'cells: [{name: a, instructions: "upper {{ input.text }}"}]');
SELECT rvbbit.create_cascade('mine', 'cells: [{name: a, instructions: "lower {{ input.text }}"}]');
SELECT name FROM rvbbit.cascades WHERE name IN ($$it's "v1.2" café$$, 'Mine', 'mine') ORDER BY name COLLATE "C";
SELECT * FROM rvbbit.sql($$MAP 'it''s "v1.2" café.yaml' USING (SELECT 'g' AS text)$$);
SELECT rvbbit.run('Mine.yaml', '{"text": "h"}') AS upper_case, rvbbit.run('mine', '{"text": "h"}') AS lower_case;
SELECT rvbbit.run('MINE', '{}');
SELECT rvbbit.drop_cascade($$it's "v1.2" café.yml$$), rvbbit.drop_cascade('Mine'), rvbbit.drop_cascade('mine.yaml');
-- files under rvbbit.cascade_path follow the same rule
SELECT rvbbit.run('./sub//nested.yml', '{"text": "below"}');
SELECT rvbbit.run('sub/nested.yaml', '{"text": "below"}');

-- names the rule refuses, on create, drop and lookup alike
SELECT rvbbit.create_cascade('', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade('../up', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade('/abs/x.yaml', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade('traits/.yaml', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade(' padded ', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade(E'two\nlines', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade('back\slash', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade(repeat('a', 201), 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade(repeat('é', 101), 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.create_cascade(repeat('a', 200) || '.yaml', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.drop_cascade(repeat('a', 200));
SELECT rvbbit.drop_cascade('a/../b');
SELECT rvbbit.run('traits/../../etc/passwd', '{}');
SELECT rvbbit.run(repeat('x/', 100000), '{}');
SELECT * FROM rvbbit.sql($$MAP '..' USING (SELECT 1 AS a)$$);
SELECT * FROM rvbbit.sql($$MAP 'traits/no_such.yaml' USING (SELECT 1 AS a)$$);
-- the registry holds only normalised names, also for direct writes
\set VERBOSITY terse
INSERT INTO rvbbit.cascades (name, definition) VALUES ('direct.yaml', 'cells: [{name: a, instructions: x}]');
INSERT INTO rvbbit.cascades (name, definition) VALUES ('../direct', 'cells: [{name: a, instructions: x}]');
\set VERBOSITY default
SELECT rvbbit._cascade_name('./traits//extract_brand.yaml');
SELECT rvbbit.create_cascade(E'caf\u00e9\tx', 'cells: [{name: a, instructions: x}]');

-- WITH (batch = n) is BATCH n
SELECT rvbbit.create_cascade('names_batch', $$
cells:
  - name: brands
    instructions: "For each product, its brand: {{ rows | tojson }}"
    output_schema:
      type: object
      properties: {brand: {type: string}}
      required: [brand]
$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$MAP 'names_batch' AS (brand text)
    USING (SELECT n, 'product ' || n AS product_name FROM generate_series(1, 6) n ORDER BY n)
    WITH (batch = 3, cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests_for_6_rows_in_3s;
SELECT * FROM rvbbit.sql($$MAP BATCH 3 'names_batch' USING (SELECT 1 AS n) WITH (batch = 3)$$);
SELECT * FROM rvbbit.sql($$MAP 'names_batch' USING (SELECT 1 AS n) WITH (batch = 0)$$);
SELECT * FROM rvbbit.sql($$MAP 'names_batch' USING (SELECT 1 AS n) WITH (batch = 'three')$$);
SELECT rvbbit.drop_cascade('names_batch');

-- options that do not apply where they are given are errors, not ignored
SELECT rvbbit.run('echo', '{"text": "x"}', '{"parallel": 4}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"limit": 1}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"unpack": true}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"dedupe_by": "text"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"batch": 2}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"as_table": "t"}');
SELECT rvbbit.run('echo', '{"text": "x"}', '{"bogus": 1}');
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS a', 1, '{"as_table": "t"}') AS t(a int, r jsonb);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS a', 1, '{"async": true}') AS t(a int, r jsonb);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS a', 1, '{"paralel": 2}') AS t(a int, r jsonb);
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS a) WITH (parallel = 4)$$);
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS a) WITH (dedupe_by = 'a')$$);
SELECT * FROM rvbbit.sql($$RUN 'summarize_rows' USING (SELECT 1 AS a) WITH (batch = 2)$$);
SELECT rvbbit._run_rows('summarize_rows', '[]', '{"parallel": 2}');
-- and what does apply still works (a budget needs the model's price)
INSERT INTO rvbbit.model_prices VALUES ('mock/other', 0, 0);
SELECT rvbbit.run('echo', '{"text": "ok"}', '{"model": "mock/other", "cache": false, "timeout": 5000, "max_retries": 1, "on_error": "fail", "budget_dollars": 10}');
SELECT * FROM rvbbit.map('echo', 'SELECT ''ok'' AS text', 1, '{"parallel": 2, "limit": 5, "dedupe_by": "text"}') AS t(text text, r jsonb);
