--
-- rvbbit.map(): every row of a query, in input order, up to `parallel`
-- rows in flight; per-row errors; dedup; type checks.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
CREATE TABLE products (id int, product_name text, price numeric(8,2));
INSERT INTO products VALUES
  (1, 'Apple iPhone 15', 799.00),
  (2, 'Samsung Galaxy S24', 699.50),
  (3, 'Sony WH-1000XM5 headphones', 349.99),
  (4, 'Nike Air Max 90', 129.00),
  (5, 'Dyson V15 Detect vacuum', 649.00),
  (6, 'LEGO Star Wars Millennium Falcon', 169.99);

-- sequential (parallel 1)
SELECT id, product_name, price, result->>'brand' AS brand
  FROM rvbbit.map('extract_brand', 'SELECT id, product_name, price FROM products ORDER BY id', 1)
       AS t(id int, product_name text, price numeric, result jsonb);
-- parallel: results in input order even when later rows finish first.  The
-- mock holds each request until all ten wait together (a barrier), then
-- answers later rows sooner.
SELECT n, result
  FROM rvbbit.map('echo',
         $$SELECT n, format('[[hold:order:10]] [[latency:%s]] row %s', (11 - n) * 30, n) AS text
             FROM generate_series(1, 10) n ORDER BY n$$, 10)
       AS t(n int, text text, result jsonb);
SELECT (mock('/stats')->>'max_in_flight')::int AS max_in_flight;
-- descending input order is kept too
SELECT n FROM rvbbit.map('echo', 'SELECT n, n::text AS text FROM generate_series(1, 5) n ORDER BY n DESC', 3)
       AS t(n int, text text, result jsonb);
-- a query with no rows
SELECT count(*) FROM rvbbit.map('echo', 'SELECT 1 AS n, ''x''::text AS text WHERE false', 5)
       AS t(n int, text text, result jsonb);

-- identical inputs are called once
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT count(*), count(DISTINCT result) FROM rvbbit.map('echo',
         $$SELECT 'same text [[latency:200]]' AS text FROM generate_series(1, 20)$$, 20)
       AS t(text text, result jsonb);
SELECT mock('/stats')->'requests' AS http_requests;
-- and rows seen before come from the cache
SELECT count(*) FROM rvbbit.map('echo',
         $$SELECT 'same text [[latency:200]]' AS text FROM generate_series(1, 5)$$, 5)
       AS t(text text, result jsonb);
SELECT mock('/stats')->'requests' AS http_requests;

-- per-row errors: on_error => null (default) warns at the end
SELECT n, result FROM rvbbit.map('echo',
         $$SELECT n, CASE WHEN n % 2 = 0 THEN '[[fault:404]] even ' || n ELSE 'odd ' || n END AS text
             FROM generate_series(1, 4) n ORDER BY n$$, 4)
       AS t(n int, text text, result jsonb);
-- on_error => value returns the error as the result
SELECT n, result FROM rvbbit.map('echo',
         $$SELECT n, CASE WHEN n = 2 THEN '[[fault:401]] two' ELSE 'fine ' || n END AS text
             FROM generate_series(1, 3) n ORDER BY n$$, 3, '{"on_error": "value"}')
       AS t(n int, text text, result jsonb);
-- on_error => fail raises the first error
SELECT n, result FROM rvbbit.map('echo',
         $$SELECT n, CASE WHEN n = 2 THEN '[[fault:401]] two' ELSE 'fine ' || n END AS text
             FROM generate_series(1, 3) n ORDER BY n$$, 3, '{"on_error": "fail"}')
       AS t(n int, text text, result jsonb);
-- a row missing the field the template needs
SELECT n, result FROM rvbbit.map('echo', 'SELECT 1 AS n', 1) AS t(n int, result jsonb);

-- the limit option
SELECT count(*) FROM rvbbit.map('echo', 'SELECT n::text AS text FROM generate_series(1, 10) n', 5,
                                '{"limit": 3}') AS t(text text, result jsonb);

-- the column definition list is checked against the query
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n, ''x''::text AS text', 1) AS t(n bigint, text text, result jsonb);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n, ''x''::text AS text', 1) AS t(n int, result jsonb);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n, ''x''::text AS text', 1) AS t(n int, text text, result text);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n, ''x''::text AS text', 1);
SELECT * FROM rvbbit.map('echo', 'SELEC 1', 1) AS t(n int, result jsonb);
SELECT * FROM rvbbit.map('echo', 'SELECT 1 AS n', 0) AS t(n int, result jsonb);
-- the input query runs with the caller's privileges
CREATE ROLE rv_mapper LOGIN;
GRANT rvbbit_user TO rv_mapper;
SET ROLE rv_mapper;
SELECT * FROM rvbbit.map('extract_brand', 'SELECT product_name FROM products', 2)
       AS t(product_name text, result jsonb);
RESET ROLE;
DROP ROLE rv_mapper;
-- progress is empty when nothing runs
SELECT count(*) FROM rvbbit.progress;
