--
-- Setup for the rvbbit regression tests: the extension, and a helper that
-- asks the mock provider for its counters (through curl, so the tests can
-- check what was really sent over HTTP).
--
CREATE EXTENSION rvbbit;
SELECT extname, extversion, extrelocatable, extnamespace::regnamespace
  FROM pg_extension WHERE extname = 'rvbbit';
-- the roles the extension script creates
SELECT rolname, rolcanlogin FROM pg_roles
 WHERE rolname IN ('rvbbit_user', 'rvbbit_admin') ORDER BY 1;
-- the objects of the SQL surface
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS result
  FROM pg_proc p WHERE p.pronamespace = 'rvbbit'::regnamespace
   AND p.proname NOT LIKE '\_%'
 ORDER BY 1, 2;
SELECT c.relname, c.relkind FROM pg_class c
 WHERE c.relnamespace = 'rvbbit'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY 1;
-- the GUCs, with their contexts
SELECT name, setting <> '' AS is_set, context FROM pg_settings
 WHERE name LIKE 'rvbbit.%' AND name NOT IN ('rvbbit.api_base', 'rvbbit.cascade_path')
 ORDER BY 1;

\getenv mock_port MOCK_PORT
CREATE TABLE mock_cfg AS SELECT :'mock_port'::int AS port;
CREATE FUNCTION mock(path text, method text DEFAULT 'GET') RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    IF to_regclass('pg_temp._mock_out') IS NULL THEN
        CREATE TEMP TABLE _mock_out (line text);
    END IF;
    TRUNCATE _mock_out;
    EXECUTE format('COPY _mock_out FROM PROGRAM %L WITH (FORMAT csv, QUOTE E''\x01'', DELIMITER E''\x02'')',
                   format('curl -s -X %s http://127.0.0.1:%s%s', method,
                          (SELECT port FROM mock_cfg), path));
    SELECT string_agg(line, E'\n')::jsonb INTO r FROM _mock_out;
    RETURN r;
END
$$;
-- wait until the mock has no request in flight (for at most 10 seconds)
CREATE FUNCTION mock_wait_idle() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1..100 LOOP
        n := (mock('/stats')->>'in_flight')::bigint;
        EXIT WHEN n = 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN n;
END
$$;
SELECT (mock('/stats')->>'requests') IS NOT NULL AS mock_has_stats;
