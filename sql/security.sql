--
-- Security: a hostile search_path cannot widen what a role sees, and
-- nothing granted to rvbbit_user answers about another role's prompts.
--
CREATE ROLE rv_sec_alice LOGIN;
CREATE ROLE "rv_sec_e'v.e" LOGIN;
GRANT rvbbit_user TO rv_sec_alice, "rv_sec_e'v.e";
GRANT CREATE ON DATABASE regression TO "rv_sec_e'v.e";

-- alice's call, with a cache entry
SET ROLE rv_sec_alice;
SELECT rvbbit.run('echo', '{"text": "alice secret prompt"}');
RESET ROLE;

-- eve builds functions and operators that win over pg_catalog's
SET ROLE "rv_sec_e'v.e";
CREATE SCHEMA evil;
CREATE FUNCTION evil.pg_has_role(name, text, text) RETURNS boolean
    LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION evil.pg_has_role(text, text, text) RETURNS boolean
    LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION evil.pg_has_role(oid, text, text) RETURNS boolean
    LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION evil.yes(oid, oid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.yes);
CREATE FUNCTION evil.yes(name, name) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.yes);
CREATE FUNCTION evil.yes(regrole, regrole) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = regrole, RIGHTARG = regrole, FUNCTION = evil.yes);
CREATE FUNCTION evil.yes(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.yes);
CREATE FUNCTION evil.yes(name, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = text, FUNCTION = evil.yes);
CREATE FUNCTION evil.no(oid, oid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.<> (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.no);
SET search_path = evil, pg_catalog;
-- the hijack works on eve's own queries ...
SELECT pg_has_role(current_user, 'rvbbit_admin', 'MEMBER') AS hijacked;
SELECT 1::oid = 2::oid AS hijacked;
-- ... but not inside the extension: eve sees no row of alice anywhere
SELECT rvbbit._sees_all() AS sees_all;
SELECT count(*) AS calls FROM rvbbit.calls;
SELECT count(*) AS stats FROM rvbbit.stats;
SELECT count(*) AS statement_costs FROM rvbbit.statement_costs;
SELECT count(*) AS cache_entries FROM rvbbit.cache_entries;
SELECT count(*) AS progress FROM rvbbit.progress;
SELECT count(*) AS jobs FROM rvbbit.jobs;
SELECT count(*) AS job_results FROM rvbbit.job_results;
SELECT count(*) AS progress_fn FROM rvbbit._progress();
-- the same under search_path = evil only (pg_catalog implicit, last)
SET search_path = evil;
SELECT count(*) AS calls FROM rvbbit.calls;
SELECT count(*) AS cache_entries FROM rvbbit.cache_entries;
RESET search_path;
RESET ROLE;

-- alice's cache key: alice's _cache_has says yes, eve's says no
SELECT k.key AS alice_key FROM rvbbit.cache k
 WHERE k.role_oid = 'rv_sec_alice'::regrole \gset
SELECT count(*) AS entries_before FROM rvbbit.cache \gset
SET ROLE rv_sec_alice;
SELECT rvbbit._cache_has(:'alice_key') AS alice_has;
RESET ROLE;
SET ROLE "rv_sec_e'v.e";
SELECT rvbbit._cache_has(:'alice_key') AS eve_has;
SET search_path = evil, pg_catalog;
SELECT rvbbit._cache_has(:'alice_key') AS eve_has_hijacked;
RESET search_path;
-- eve asking the same prompt is not answered from alice's cache entry
SELECT rvbbit.run('echo', '{"text": "alice secret prompt"}');
SELECT status FROM rvbbit.calls ORDER BY id DESC LIMIT 1;
RESET ROLE;
SELECT count(*) - :entries_before AS new_entries FROM rvbbit.cache;
SELECT count(DISTINCT role_oid) AS roles_with_that_prompt FROM rvbbit.cache
 WHERE role_oid IN ('rv_sec_alice'::regrole, '"rv_sec_e''v.e"'::regrole);

-- every function of the extension that runs SQL pins its search_path
SELECT p.oid::regprocedure AS missing_search_path
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'rvbbit'
 WHERE p.prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1;

-- the registry is looked up first for every role, so a user cannot shadow
-- a shipped example or a cascade_path file for everybody, under any spelling
SET ROLE "rv_sec_e'v.e";
SELECT rvbbit.create_cascade('traits/extract_brand.yaml', $$cells: [{name: x, instructions: "steal {{ input | tojson }}"}]$$);
SELECT rvbbit.create_cascade('./traits//classify_sentiment.yml', $$cells: [{name: x, instructions: "x"}]$$);
SELECT rvbbit.create_cascade('echo', $$cells: [{name: x, instructions: "x"}]$$);
SELECT count(*) AS shadows FROM rvbbit.cascades;
-- a name of one's own is fine
SELECT rvbbit.create_cascade('eve_own', $$cells: [{name: x, instructions: "x"}]$$);
SELECT rvbbit.drop_cascade('eve_own');
RESET ROLE;
-- an administrator may override a shipped example on purpose
SELECT rvbbit.create_cascade('extract_brand', $$cells: [{name: x, instructions: "admin {{ input.product_name }}"}]$$);
SELECT rvbbit.drop_cascade('extract_brand');

-- the SQL the C code runs in the caller's backend (the USING query's wrapper,
-- rvbbit.estimate's cache probe) names pg_catalog's functions: eve's exact
-- matches for to_jsonb(record) and unnest(text[]) in a schema on a
-- superuser's search_path would otherwise run as the superuser
SET ROLE "rv_sec_e'v.e";
CREATE FUNCTION evil.to_jsonb(r record) RETURNS jsonb LANGUAGE plpgsql
    AS $f$BEGIN RAISE EXCEPTION 'to_jsonb hijacked as %', current_user; END$f$;
CREATE FUNCTION evil.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql
    AS $f$BEGIN RAISE EXCEPTION 'unnest hijacked as %', current_user; END$f$;
RESET ROLE;
SET search_path = evil;
-- the hijack works on a plain query (pg_catalog is searched first, but an
-- exact match wins over its polymorphic to_jsonb(anyelement))
SELECT to_jsonb(t) FROM (SELECT 1 AS a) t;
SELECT * FROM rvbbit.sql($$MAP 'echo' USING (SELECT 'hijack?' AS text)$$);
SELECT input_rows, est_calls FROM rvbbit.estimate($$MAP 'echo' USING (SELECT 'hijack?' AS text)$$);
RESET search_path;

-- clean up
DROP SCHEMA evil CASCADE;
REVOKE CREATE ON DATABASE regression FROM "rv_sec_e'v.e";
DELETE FROM rvbbit.call_log WHERE role_oid IN ('rv_sec_alice'::regrole, '"rv_sec_e''v.e"'::regrole);
DELETE FROM rvbbit.cache WHERE role_oid IN ('rv_sec_alice'::regrole, '"rv_sec_e''v.e"'::regrole);
DROP ROLE rv_sec_alice, "rv_sec_e'v.e";
