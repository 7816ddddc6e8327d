/*
 * rvbbit 0.1 -> 0.2
 *
 * A fresh CREATE EXTENSION runs rvbbit--0.1.sql and then this script, so a
 * new install and an upgraded one are the same by construction (the way
 * pg_stat_statements ships its versions).  Every SQL change of 0.2 lives
 * here, one section per topic.
 *
 * Rules for every object (PostgreSQL's "Security Considerations for
 * Extension Scripts"): catalog objects are qualified with pg_catalog,
 * extension objects with rvbbit, and every function that runs SQL has
 * SET search_path = pg_catalog, pg_temp.
 */

\echo Use "ALTER EXTENSION rvbbit UPDATE TO '0.2'" to load this file. \quit

-- == budgets ==
-- The daily budget is kept for the session user (the role whose
-- ALTER ROLE ... SET settings are in force), which is not always the
-- role a call is recorded for (role_oid, the current user): record it, so
-- that after a restart a role's spend of the day is read back whole.
ALTER TABLE rvbbit.call_log ADD COLUMN budget_role_oid oid;

-- rvbbit.estimate says how many requests the statement would send
-- (est_calls): one per batch for MAP BATCH, one per cell for RUN.
DROP FUNCTION rvbbit.estimate(text);
CREATE FUNCTION rvbbit.estimate(statement text,
    OUT input_rows bigint, OUT cached_rows bigint, OUT calls_per_row int,
    OUT models text[], OUT est_input_tokens bigint, OUT est_output_tokens bigint,
    OUT est_cost numeric, OUT est_calls bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rvbbit_estimate'
LANGUAGE C VOLATILE;
-- (no SET search_path: the USING query runs with the caller's search_path,
-- as in rvbbit.map; the function's own queries are qualified)
COMMENT ON FUNCTION rvbbit.estimate(text) IS 'Rows, cached rows, models, tokens, cost and requests an RVBBIT statement would use, without calling any LLM.';
REVOKE ALL ON FUNCTION rvbbit.estimate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rvbbit.estimate(text) TO rvbbit_user;
