--
-- MAP BATCH n: up to n rows in one request (the template sees rows); the
-- reply, an array of exactly that many items, is split back to the rows;
-- a wrong or invalid reply splits the batch in halves down to single rows.
--
SELECT rvbbit.create_cascade('brands_batch', $$
cells:
  - name: brands
    instructions: "For each product, its brand: {{ rows | tojson }}"
    output_schema:
      type: object
      properties: {brand: {type: string}}
      required: [brand]
$$);
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$MAP BATCH 5 'brands_batch' AS (brand text)
    USING (SELECT n, 'product ' || n AS product_name FROM generate_series(1, 12) n ORDER BY n)
    WITH (cache = false)$$);
-- 12 rows in batches of 5: three requests; each asked for an array of exactly that many items
SELECT (mock('/stats')->>'requests')::int AS requests_for_12_rows;
SELECT r->'body'->'response_format'->'json_schema'->'schema'->>'type' AS reply_type,
       r->'body'->'response_format'->'json_schema'->'schema'->>'minItems' AS min_items,
       r->'body'->'response_format'->'json_schema'->'schema'->>'maxItems' AS max_items
  FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
-- an invalid reply for a batch splits it: [1-4] -> [1-2], [3-4] -> [1], [2]; [1] is re-asked
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
SELECT * FROM rvbbit.sql($$MAP BATCH 4 PARALLEL 2 'brands_batch' AS (brand text)
    USING (SELECT n, CASE WHEN n = 1 THEN '[[invalid:1]] ' ELSE '' END || 'item ' || n AS product_name
           FROM generate_series(1, 12) n ORDER BY n)
    WITH (cache = false)$$);
SELECT (mock('/stats')->>'requests')::int AS requests;
SELECT status, count(*) FROM rvbbit.calls WHERE cascade = 'brands_batch'
   AND statement_id = (SELECT max(statement_id) FROM rvbbit.calls)
 GROUP BY status ORDER BY status;
-- batches come from the cache like single rows
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
CREATE TEMP TABLE batch_first AS SELECT * FROM rvbbit.sql($$MAP BATCH 5 'brands_batch' AS (brand text)
    USING (SELECT n, 'cached ' || n AS product_name FROM generate_series(1, 10) n ORDER BY n)$$);
CREATE TEMP TABLE batch_again AS SELECT * FROM rvbbit.sql($$MAP BATCH 5 'brands_batch' AS (brand text)
    USING (SELECT n, 'cached ' || n AS product_name FROM generate_series(1, 10) n ORDER BY n)$$);
SELECT count(*) AS same_rows FROM batch_first JOIN batch_again USING (n, product_name, brand);
SELECT (mock('/stats')->>'requests')::int AS requests;
-- rvbbit.map takes it as an option
SELECT count(brand) FROM rvbbit.map('brands_batch', 'SELECT n, ''m'' || n AS product_name FROM generate_series(1, 100) n',
                                    4, '{"batch": 20, "unpack": true}') AS t(n int, product_name text, brand text);
-- BATCH needs one cell with an output_schema
SELECT * FROM rvbbit.sql($$MAP BATCH 2 'echo' USING (SELECT 'x' AS text)$$);
SELECT * FROM rvbbit.sql($$MAP BATCH 2 'two_step' USING (SELECT 'x' AS description)$$);
SELECT * FROM rvbbit.map('echo', 'SELECT 1', 1, '{"batch": 0}') AS t(a int, r jsonb);
SELECT rvbbit.drop_cascade('brands_batch');
