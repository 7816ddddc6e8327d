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

CREATE OR REPLACE VIEW rvbbit.calls WITH (security_barrier) AS
SELECT c.id, c.called_at, c.statement_id, c.backend_pid,
       c.role_oid::regrole AS role, c.cascade, c.cell, c.model, c.attempt,
       c.status, c.http_status, c.input_tokens, c.output_tokens, c.cost,
       c.latency_ms, c.error,
       c.response_model, c.response_id, c.finish_reason, c.cached_tokens
  FROM rvbbit.call_log c
 WHERE c.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();
COMMENT ON VIEW rvbbit.calls IS 'One row per LLM call or cache hit; your own unless you are in rvbbit_admin.';

-- stats and statement_costs count truncated replies with the errors
CREATE OR REPLACE VIEW rvbbit.stats WITH (security_barrier) AS
SELECT c.role, c.cascade, c.model,
       count(*) FILTER (WHERE c.status <> 'cached')  AS calls,
       count(*) FILTER (WHERE c.status = 'ok')       AS ok,
       count(*) FILTER (WHERE c.status IN ('error', 'invalid', 'truncated')) AS errors,
       count(*) FILTER (WHERE c.status = 'retry')    AS retries,
       count(*) FILTER (WHERE c.status = 'cached')   AS cache_hits,
       coalesce(sum(c.input_tokens) FILTER (WHERE c.status <> 'cached'), 0)  AS input_tokens,
       coalesce(sum(c.output_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS output_tokens,
       coalesce(sum(c.cost), 0)::numeric(20, 6)     AS cost,
       round(avg(c.latency_ms) FILTER (WHERE c.status = 'ok')::numeric, 1) AS avg_latency_ms,
       min(c.called_at) AS first_call,
       max(c.called_at) AS last_call,
       coalesce(sum(c.cached_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS cached_tokens
  FROM rvbbit.calls c
 GROUP BY c.role, c.cascade, c.model;
COMMENT ON VIEW rvbbit.stats IS 'Totals of rvbbit.calls per role, cascade and model.';

CREATE OR REPLACE VIEW rvbbit.statement_costs WITH (security_barrier) AS
SELECT c.statement_id, c.role,
       min(c.called_at) AS first_call, max(c.called_at) AS last_call,
       string_agg(DISTINCT c.cascade, ', ') AS cascades,
       string_agg(DISTINCT c.model, ', ') AS models,
       count(*) FILTER (WHERE c.status <> 'cached') AS calls,
       count(*) FILTER (WHERE c.status = 'cached') AS cache_hits,
       count(*) FILTER (WHERE c.status IN ('error', 'invalid', 'truncated')) AS errors,
       coalesce(sum(c.input_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS input_tokens,
       coalesce(sum(c.output_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS output_tokens,
       coalesce(sum(c.cost), 0)::numeric(20, 6) AS cost,
       coalesce(sum(c.cached_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS cached_tokens
  FROM rvbbit.calls c
 GROUP BY c.statement_id, c.role;
COMMENT ON VIEW rvbbit.statement_costs IS 'Calls, tokens and cost of each statement.';
