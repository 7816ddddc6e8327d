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

-- == cascade names ==
-- One normalisation rule for cascade names (rv_cascade_name_normalize in
-- src/cascade.c), used by create_cascade, drop_cascade and every lookup:
-- "./" components, repeated slashes and one trailing ".yaml"/".yml" are
-- not part of a name; empty, absolute and ".." names are refused.  The
-- registry stores names normalised, which a CHECK constraint keeps true.
CREATE FUNCTION rvbbit._cascade_name(name text) RETURNS text
AS 'MODULE_PATHNAME', 'rvbbit_cascade_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION rvbbit._cascade_name(text) FROM PUBLIC;
COMMENT ON FUNCTION rvbbit._cascade_name(text) IS
    'The normalised form of a cascade name, as stored in rvbbit.cascades.';

-- Names stored by 0.1 (which kept suffixes and "./") are normalised; two
-- rows that become the same name, or a name 0.2 refuses, stop the update
-- with the names to fix, so nothing is dropped silently.
DO $cascade_names$
DECLARE
    r record;
    n text;
BEGIN
    FOR r IN SELECT c.name FROM rvbbit.cascades c ORDER BY c.name COLLATE "C" LOOP
        BEGIN
            n := rvbbit._cascade_name(r.name);
        EXCEPTION WHEN invalid_name THEN
            RAISE EXCEPTION 'cascade name "%" is not valid in rvbbit 0.2', r.name
                USING ERRCODE = 'invalid_name',
                      DETAIL = SQLERRM,
                      HINT = 'Rename or delete that row of rvbbit.cascades as a superuser, then update again.';
        END;
        IF n OPERATOR(pg_catalog.<>) r.name THEN
            IF EXISTS (SELECT FROM rvbbit.cascades c WHERE c.name OPERATOR(pg_catalog.=) n) THEN
                RAISE EXCEPTION 'cascades "%" and "%" have the same name in rvbbit 0.2', r.name, n
                    USING ERRCODE = 'unique_violation',
                          DETAIL = 'From 0.2 on a ".yaml" or ".yml" suffix, "." components and repeated slashes are not part of a cascade name.',
                          HINT = 'Rename or delete one of the two rows of rvbbit.cascades as a superuser, then update again.';
            END IF;
            UPDATE rvbbit.cascades c SET name = n WHERE c.name OPERATOR(pg_catalog.=) r.name;
        END IF;
    END LOOP;
END
$cascade_names$;

ALTER TABLE rvbbit.cascades ADD CONSTRAINT cascades_name_normalised
    CHECK (name OPERATOR(pg_catalog.=) rvbbit._cascade_name(name));

-- == providers: what the provider said, token classes, truncation ==
-- The call log keeps what the provider reported about each reply: the
-- model that answered (a llama.cpp server answers any model name with its
-- own), its response id, the finish reason, and the prompt tokens it read
-- from its prompt cache (part of input_tokens, priced separately).
-- attempt now counts every request made for a cell: transport retries and
-- schema re-asks alike (0 for the first).  status 'truncated' marks a
-- reply cut off at max_tokens: never cached, never a success.
ALTER TABLE rvbbit.call_log
    ADD COLUMN response_model text,
    ADD COLUMN response_id    text,
    ADD COLUMN finish_reason  text,
    ADD COLUMN cached_tokens  int;

-- Price of prompt tokens read from the provider's prompt cache; NULL means
-- the input price.
ALTER TABLE rvbbit.model_prices
    ADD COLUMN cached_input_per_million numeric
        CHECK (cached_input_per_million >= 0);

-- (the views rvbbit.calls, stats and statement_costs with these columns are
-- in the security section below, which re-creates every view qualified)

-- == security: search_path, visibility, cache ==
-- Every function body below names catalog objects with pg_catalog. and
-- extension objects with rvbbit., uses OPERATOR(pg_catalog.=) for its
-- comparisons, and runs with SET search_path = pg_catalog, pg_temp, so no
-- object a user creates (a pg_has_role, an = operator on oid, name or
-- regrole in a schema before pg_catalog) is ever picked up.  The views
-- are re-created the same way (their operators were bound when 0.1 was
-- installed; qualifying them keeps that true for every later CREATE OR
-- REPLACE).

-- Is the current user allowed to see other roles' rows?  (Superusers and
-- members of rvbbit_admin.)
CREATE OR REPLACE FUNCTION rvbbit._sees_all() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.pg_has_role(CURRENT_USER, 'rvbbit_admin', 'MEMBER') $$;

-- The OID of the current user (the filter of every view below).
CREATE FUNCTION rvbbit._my_role() RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER $$;

CREATE OR REPLACE VIEW rvbbit.calls WITH (security_barrier) AS
SELECT c.id, c.called_at, c.statement_id, c.backend_pid,
       c.role_oid::pg_catalog.regrole AS role, c.cascade, c.cell, c.model, c.attempt,
       c.status, c.http_status, c.input_tokens, c.output_tokens, c.cost,
       c.latency_ms, c.error,
       c.response_model, c.response_id, c.finish_reason, c.cached_tokens
  FROM rvbbit.call_log c
 WHERE c.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());

CREATE OR REPLACE VIEW rvbbit.stats WITH (security_barrier) AS
SELECT c.role, c.cascade, c.model,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached')  AS calls,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'ok')       AS ok,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) ANY ('{error,invalid,truncated}'::pg_catalog.text[])) AS errors,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'retry')    AS retries,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'cached')   AS cache_hits,
       coalesce(pg_catalog.sum(c.input_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0)  AS input_tokens,
       coalesce(pg_catalog.sum(c.output_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0) AS output_tokens,
       coalesce(pg_catalog.sum(c.cost), 0)::pg_catalog.numeric(20, 6)     AS cost,
       pg_catalog.round(pg_catalog.avg(c.latency_ms) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'ok')::pg_catalog.numeric, 1) AS avg_latency_ms,
       pg_catalog.min(c.called_at) AS first_call,
       pg_catalog.max(c.called_at) AS last_call,
       coalesce(pg_catalog.sum(c.cached_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0) AS cached_tokens
  FROM rvbbit.calls c
 GROUP BY c.role, c.cascade, c.model;

CREATE OR REPLACE VIEW rvbbit.statement_costs WITH (security_barrier) AS
SELECT c.statement_id, c.role,
       pg_catalog.min(c.called_at) AS first_call, pg_catalog.max(c.called_at) AS last_call,
       pg_catalog.string_agg(DISTINCT c.cascade, ', ') AS cascades,
       pg_catalog.string_agg(DISTINCT c.model, ', ') AS models,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached') AS calls,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'cached') AS cache_hits,
       pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) ANY ('{error,invalid,truncated}'::pg_catalog.text[])) AS errors,
       coalesce(pg_catalog.sum(c.input_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0) AS input_tokens,
       coalesce(pg_catalog.sum(c.output_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0) AS output_tokens,
       coalesce(pg_catalog.sum(c.cost), 0)::pg_catalog.numeric(20, 6) AS cost,
       coalesce(pg_catalog.sum(c.cached_tokens) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'cached'), 0) AS cached_tokens
  FROM rvbbit.calls c
 GROUP BY c.statement_id, c.role;

CREATE OR REPLACE VIEW rvbbit.cache_entries WITH (security_barrier) AS
SELECT k.key, k.model, k.cascade, k.cell, k.response, k.input_tokens,
       k.output_tokens, k.role_oid::pg_catalog.regrole AS role, k.created_at
  FROM rvbbit.cache k
 WHERE k.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());

-- Is a request in the cache?  Answers only for the entries the caller may
-- see (rvbbit.cache_entries), and cache keys include the role they were
-- made for, so it never tells whether another role sent a prompt.  Not
-- SECURITY DEFINER any more: the view gives it exactly the caller's rows.
CREATE OR REPLACE FUNCTION rvbbit._cache_has(key text) RETURNS boolean
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM rvbbit.cache_entries c WHERE c.key OPERATOR(pg_catalog.=) $1) $$;

CREATE OR REPLACE FUNCTION rvbbit._not_an_array(v jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'RUN with as_table needs an array result, but the cascade returned %',
        coalesce(pg_catalog.jsonb_typeof(v), 'null')
        USING ERRCODE = 'datatype_mismatch',
              HINT = 'Give the last cell an output_schema of type array.';
END
$$;

CREATE OR REPLACE VIEW rvbbit.progress WITH (security_barrier) AS
SELECT p.pid, p.statement_id, d.datname, p.role_oid::pg_catalog.regrole AS role,
       p.started_at, pg_catalog.now() OPERATOR(pg_catalog.-) p.started_at AS running_for,
       p.kind, p.cascade,
       p.parallel, p.rows_read, p.rows_done, p.in_flight, p.rows_failed,
       p.cache_hits, p.llm_calls, p.tokens, p.cost::pg_catalog.numeric(20, 6) AS cost
  FROM rvbbit._progress() p
  LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) p.datid
 WHERE p.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());

CREATE OR REPLACE VIEW rvbbit.jobs WITH (security_barrier) AS
SELECT j.id AS job_id, j.role_oid::pg_catalog.regrole AS role, j.status, j.statement,
       j.target, j.submitted_at, j.started_at, j.finished_at,
       CASE WHEN j.status OPERATOR(pg_catalog.=) 'running' THEN p.rows_done ELSE j.rows END AS rows,
       p.in_flight,
       (coalesce(j.spent, 0) OPERATOR(pg_catalog.+) coalesce(live.cost, 0))::pg_catalog.numeric(20, 6) AS spent,
       j.error, j.attempts, j.runner_pid
  FROM rvbbit.job_log j
  LEFT JOIN rvbbit._progress() p
         ON j.status OPERATOR(pg_catalog.=) 'running'
        AND p.pid OPERATOR(pg_catalog.=) j.runner_pid
        AND p.datid OPERATOR(pg_catalog.=) j.dboid
  LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(c.cost) AS cost
          FROM rvbbit.call_log c
         WHERE j.status OPERATOR(pg_catalog.=) 'running'
           AND c.backend_pid OPERATOR(pg_catalog.=) j.runner_pid
           AND c.called_at OPERATOR(pg_catalog.>=) j.started_at) live ON true
 WHERE j.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());

CREATE OR REPLACE VIEW rvbbit.job_results WITH (security_barrier) AS
SELECT r.job_id, r.result, r.created_at
  FROM rvbbit.job_result_log r
  JOIN rvbbit.job_log j ON j.id OPERATOR(pg_catalog.=) r.job_id
 WHERE j.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());

REVOKE ALL ON FUNCTION rvbbit._my_role() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rvbbit._my_role() TO rvbbit_user;

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
