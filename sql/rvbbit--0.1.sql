-- rvbbit 0.1: LLM workflows (cascades) from SQL.
\echo Use "CREATE EXTENSION rvbbit" to load this file. \quit

-- Roles: rvbbit_user may call the entry points; rvbbit_admin also sees
-- everybody's calls, cache entries, progress and cascades.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rvbbit_user') THEN
        CREATE ROLE rvbbit_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rvbbit_admin') THEN
        CREATE ROLE rvbbit_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT rvbbit_user TO rvbbit_admin;

REVOKE ALL ON SCHEMA rvbbit FROM PUBLIC;
GRANT USAGE ON SCHEMA rvbbit TO rvbbit_user;

-- The cascade registry.
CREATE TABLE rvbbit.cascades (
    name        text PRIMARY KEY,
    definition  text NOT NULL,
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rvbbit.cascades IS 'Cascades defined with rvbbit.create_cascade().';

-- Providers reached by model prefix: 'prefix:model-name'.
CREATE TABLE rvbbit.providers (
    prefix              text PRIMARY KEY CHECK (prefix ~ '^[A-Za-z0-9_.-]+$'),
    api_base            text NOT NULL,
    api_flavor          text NOT NULL DEFAULT 'openai'
                        CHECK (api_flavor IN ('openai', 'anthropic')),
    api_key             text,
    api_key_env         text,
    requests_per_minute int CHECK (requests_per_minute >= 0),
    tokens_per_minute   int CHECK (tokens_per_minute >= 0)
);
COMMENT ON TABLE rvbbit.providers IS 'LLM providers selected by a "prefix:" in the model name.';

-- Prices in dollars per million tokens, used for every call's cost.
CREATE TABLE rvbbit.model_prices (
    model               text PRIMARY KEY,
    input_per_million   numeric NOT NULL CHECK (input_per_million >= 0),
    output_per_million  numeric NOT NULL CHECK (output_per_million >= 0)
);

-- Completed LLM replies, keyed by a hash of the provider and request body.
CREATE TABLE rvbbit.cache (
    key            text PRIMARY KEY,
    model          text,
    cascade        text,
    cell           text,
    response       text NOT NULL,
    input_tokens   int,
    output_tokens  int,
    role_oid       oid,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per LLM call (and per cache hit), written by the workers.
CREATE TABLE rvbbit.call_log (
    id             bigserial PRIMARY KEY,
    called_at      timestamptz NOT NULL DEFAULT now(),
    statement_id   bigint,
    backend_pid    int,
    role_oid       oid,
    cascade        text,
    cell           text,
    model          text,
    attempt        int,
    status         text,
    http_status    int,
    input_tokens   int,
    output_tokens  int,
    cost           double precision,
    latency_ms     double precision,
    error          text,
    cache_key      text
);
CREATE INDEX call_log_called_at ON rvbbit.call_log (called_at);

SELECT pg_catalog.pg_extension_config_dump('rvbbit.cascades', '');
SELECT pg_catalog.pg_extension_config_dump('rvbbit.providers', '');
SELECT pg_catalog.pg_extension_config_dump('rvbbit.model_prices', '');
SELECT pg_catalog.pg_extension_config_dump('rvbbit.cache', '');
SELECT pg_catalog.pg_extension_config_dump('rvbbit.call_log', '');
SELECT pg_catalog.pg_extension_config_dump('rvbbit.call_log_id_seq', '');

-- Is the current user allowed to see other roles' rows?
CREATE FUNCTION rvbbit._sees_all() RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT pg_has_role(current_user, 'rvbbit_admin', 'MEMBER') $$;

CREATE VIEW rvbbit.calls WITH (security_barrier) AS
SELECT c.id, c.called_at, c.statement_id, c.backend_pid,
       c.role_oid::regrole AS role, c.cascade, c.cell, c.model, c.attempt,
       c.status, c.http_status, c.input_tokens, c.output_tokens, c.cost,
       c.latency_ms, c.error
  FROM rvbbit.call_log c
 WHERE c.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();
COMMENT ON VIEW rvbbit.calls IS 'One row per LLM call or cache hit; your own unless you are in rvbbit_admin.';

CREATE VIEW rvbbit.stats WITH (security_barrier) AS
SELECT c.role, c.cascade, c.model,
       count(*) FILTER (WHERE c.status <> 'cached')  AS calls,
       count(*) FILTER (WHERE c.status = 'ok')       AS ok,
       count(*) FILTER (WHERE c.status IN ('error', 'invalid')) AS errors,
       count(*) FILTER (WHERE c.status = 'retry')    AS retries,
       count(*) FILTER (WHERE c.status = 'cached')   AS cache_hits,
       coalesce(sum(c.input_tokens) FILTER (WHERE c.status <> 'cached'), 0)  AS input_tokens,
       coalesce(sum(c.output_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS output_tokens,
       coalesce(sum(c.cost), 0)::numeric(20, 6)     AS cost,
       round(avg(c.latency_ms) FILTER (WHERE c.status = 'ok')::numeric, 1) AS avg_latency_ms,
       min(c.called_at) AS first_call,
       max(c.called_at) AS last_call
  FROM rvbbit.calls c
 GROUP BY c.role, c.cascade, c.model;
COMMENT ON VIEW rvbbit.stats IS 'Totals of rvbbit.calls per role, cascade and model.';

CREATE VIEW rvbbit.statement_costs WITH (security_barrier) AS
SELECT c.statement_id, c.role,
       min(c.called_at) AS first_call, max(c.called_at) AS last_call,
       string_agg(DISTINCT c.cascade, ', ') AS cascades,
       string_agg(DISTINCT c.model, ', ') AS models,
       count(*) FILTER (WHERE c.status <> 'cached') AS calls,
       count(*) FILTER (WHERE c.status = 'cached') AS cache_hits,
       count(*) FILTER (WHERE c.status IN ('error', 'invalid')) AS errors,
       coalesce(sum(c.input_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS input_tokens,
       coalesce(sum(c.output_tokens) FILTER (WHERE c.status <> 'cached'), 0) AS output_tokens,
       coalesce(sum(c.cost), 0)::numeric(20, 6) AS cost
  FROM rvbbit.calls c
 GROUP BY c.statement_id, c.role;
COMMENT ON VIEW rvbbit.statement_costs IS 'Calls, tokens and cost of each statement.';

CREATE VIEW rvbbit.cache_entries WITH (security_barrier) AS
SELECT k.key, k.model, k.cascade, k.cell, k.response, k.input_tokens,
       k.output_tokens, k.role_oid::regrole AS role, k.created_at
  FROM rvbbit.cache k
 WHERE k.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();

-- Entry points.
CREATE FUNCTION rvbbit.run(cascade text, input jsonb, options jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'rvbbit_run'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rvbbit.run(text, jsonb, jsonb) IS 'Runs a cascade on one input and returns its result.';

CREATE FUNCTION rvbbit.map(cascade text, query text, parallel int DEFAULT 10,
                           options jsonb DEFAULT '{}')
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rvbbit_map'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rvbbit.map(text, text, int, jsonb) IS 'Runs a cascade on every row of a query, up to parallel rows at a time, in input order.';

CREATE FUNCTION rvbbit.sql(statement text)
RETURNS SETOF jsonb
AS 'MODULE_PATHNAME', 'rvbbit_sql'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rvbbit.sql(text) IS 'Runs an RVBBIT statement (MAP ...); as the whole query it returns typed columns.';

CREATE FUNCTION rvbbit._run_rows(cascade text, rows jsonb, options jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'rvbbit_run_rows'
LANGUAGE C VOLATILE;

CREATE FUNCTION rvbbit._not_an_array(v jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'RUN with as_table needs an array result, but the cascade returned %',
        coalesce(jsonb_typeof(v), 'null')
        USING ERRCODE = 'datatype_mismatch',
              HINT = 'Give the last cell an output_schema of type array.';
END
$$;

CREATE FUNCTION rvbbit._as_table(statement text, OUT as_table text, OUT rows bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rvbbit_as_table'
LANGUAGE C VOLATILE;

CREATE FUNCTION rvbbit.estimate(statement text,
    OUT input_rows bigint, OUT cached_rows bigint, OUT calls_per_row int,
    OUT models text[], OUT est_input_tokens bigint, OUT est_output_tokens bigint,
    OUT est_cost numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'rvbbit_estimate'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION rvbbit.estimate(text) IS 'Rows, cached rows, models, tokens and cost an RVBBIT statement would use, without calling any LLM.';

-- Is a request in the cache?  (For rvbbit.estimate(); reveals nothing but
-- whether the caller's own request was answered before.)
CREATE FUNCTION rvbbit._cache_has(key text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM rvbbit.cache c WHERE c.key = $1) $$;

CREATE FUNCTION rvbbit.create_cascade(name text, definition text)
RETURNS void
AS 'MODULE_PATHNAME', 'rvbbit_create_cascade'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION rvbbit.drop_cascade(name text, if_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'rvbbit_drop_cascade'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION rvbbit.validate_cascade(definition text)
RETURNS void
AS 'MODULE_PATHNAME', 'rvbbit_validate_cascade'
LANGUAGE C STABLE;

CREATE FUNCTION rvbbit._progress(
    OUT pid int, OUT statement_id bigint, OUT datid oid, OUT role_oid oid,
    OUT started_at timestamptz, OUT kind text, OUT cascade text,
    OUT parallel int, OUT rows_read bigint, OUT rows_done bigint,
    OUT in_flight bigint, OUT rows_failed bigint, OUT cache_hits bigint,
    OUT llm_calls bigint, OUT tokens bigint, OUT cost double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rvbbit_progress'
LANGUAGE C VOLATILE;

CREATE VIEW rvbbit.progress WITH (security_barrier) AS
SELECT p.pid, p.statement_id, d.datname, p.role_oid::regrole AS role,
       p.started_at, now() - p.started_at AS running_for, p.kind, p.cascade,
       p.parallel, p.rows_read, p.rows_done, p.in_flight, p.rows_failed,
       p.cache_hits, p.llm_calls, p.tokens, p.cost::numeric(20, 6) AS cost
  FROM rvbbit._progress() p
  LEFT JOIN pg_database d ON d.oid = p.datid
 WHERE p.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();
COMMENT ON VIEW rvbbit.progress IS 'One row per running rvbbit statement.';

-- Privileges: calling an LLM costs money.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rvbbit FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rvbbit.run(text, jsonb, jsonb),
                          rvbbit.map(text, text, int, jsonb),
                          rvbbit.sql(text),
                          rvbbit._as_table(text),
                          rvbbit._run_rows(text, jsonb, jsonb),
                          rvbbit._not_an_array(jsonb),
                          rvbbit.estimate(text),
                          rvbbit._cache_has(text),
                          rvbbit.create_cascade(text, text),
                          rvbbit.drop_cascade(text, boolean),
                          rvbbit.validate_cascade(text),
                          rvbbit._progress(),
                          rvbbit._sees_all()
   TO rvbbit_user;
GRANT SELECT ON rvbbit.cascades, rvbbit.calls, rvbbit.stats, rvbbit.statement_costs,
                rvbbit.cache_entries, rvbbit.progress, rvbbit.model_prices
   TO rvbbit_user;
GRANT INSERT, UPDATE, DELETE ON rvbbit.model_prices TO rvbbit_admin;
-- the routing columns of the providers, not their keys
GRANT SELECT (prefix, api_base, api_flavor, requests_per_minute, tokens_per_minute)
   ON rvbbit.providers TO rvbbit_user;

-- Jobs (jobs.c)
-- Asynchronous statements: RUN ASYNC and MAP ... WITH (async = true).  One
-- row per job, written only by rvbbit._submit_job(), the job runners and
-- rvbbit.cancel_job(); users read their own through rvbbit.jobs.  The job
-- tables are not dumped: a job's role is an OID of this cluster.
CREATE TABLE rvbbit.job_log (
    id                 bigserial PRIMARY KEY,
    role_oid           oid NOT NULL,
    dboid              oid NOT NULL,
    statement          text NOT NULL,
    search_path        text,
    settings           jsonb,
    target             text,
    status             text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    submitted_at       timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    rows               bigint,
    spent              double precision,
    error              text,
    runner_pid         int,
    attempts           int NOT NULL DEFAULT 0,
    server_started_at  timestamptz
);
CREATE INDEX job_log_unfinished ON rvbbit.job_log (id)
    WHERE status IN ('queued', 'running');
COMMENT ON TABLE rvbbit.job_log IS 'Async jobs; read them through rvbbit.jobs.';
COMMENT ON COLUMN rvbbit.job_log.server_started_at IS 'When the server''s shared memory was created (start or crash restart) as the job was last submitted, resumed or started; an older value means a restart interrupted it.';

-- The result of a RUN ASYNC without as_table.
CREATE TABLE rvbbit.job_result_log (
    job_id      bigint PRIMARY KEY REFERENCES rvbbit.job_log (id) ON DELETE CASCADE,
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW rvbbit.jobs WITH (security_barrier) AS
SELECT j.id AS job_id, j.role_oid::regrole AS role, j.status, j.statement,
       j.target, j.submitted_at, j.started_at, j.finished_at,
       CASE WHEN j.status = 'running' THEN p.rows_done ELSE j.rows END AS rows,
       p.in_flight,
       (coalesce(j.spent, 0) + coalesce(live.cost, 0))::numeric(20, 6) AS spent,
       j.error, j.attempts, j.runner_pid
  FROM rvbbit.job_log j
  LEFT JOIN rvbbit._progress() p
         ON j.status = 'running' AND p.pid = j.runner_pid AND p.datid = j.dboid
  LEFT JOIN LATERAL (
        SELECT sum(c.cost) AS cost
          FROM rvbbit.call_log c
         WHERE j.status = 'running' AND c.backend_pid = j.runner_pid
           AND c.called_at >= j.started_at) live ON true
 WHERE j.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();
COMMENT ON VIEW rvbbit.jobs IS 'Async jobs (RUN ASYNC, MAP ... WITH (async = true)); your own unless you are in rvbbit_admin.';

CREATE VIEW rvbbit.job_results WITH (security_barrier) AS
SELECT r.job_id, r.result, r.created_at
  FROM rvbbit.job_result_log r
  JOIN rvbbit.job_log j ON j.id = r.job_id
 WHERE j.role_oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    OR rvbbit._sees_all();
COMMENT ON VIEW rvbbit.job_results IS 'Results of RUN ASYNC jobs without as_table.';

CREATE FUNCTION rvbbit._submit_job(statement text) RETURNS TABLE (job_id bigint)
AS 'MODULE_PATHNAME', 'rvbbit_submit_job'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION rvbbit._submit_job(text) IS 'Submits an async RVBBIT statement as a background job and returns its id.';

CREATE FUNCTION rvbbit.cancel_job(job_id bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'rvbbit_cancel_job'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION rvbbit.cancel_job(bigint) IS 'Cancels a queued or running job; false if it had already ended.';

REVOKE ALL ON FUNCTION rvbbit._submit_job(text), rvbbit.cancel_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rvbbit._submit_job(text), rvbbit.cancel_job(bigint) TO rvbbit_user;
GRANT SELECT ON rvbbit.jobs, rvbbit.job_results TO rvbbit_user;
