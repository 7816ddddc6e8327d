--
-- Privileges: EXECUTE only for rvbbit_user, rows of other roles hidden,
-- the API key never shown, cascade ownership.
--
CREATE ROLE rv_alice LOGIN;
CREATE ROLE rv_bob LOGIN;
CREATE ROLE rv_nobody LOGIN;
CREATE ROLE rv_boss LOGIN;
GRANT rvbbit_user TO rv_alice, rv_bob;
GRANT rvbbit_admin TO rv_boss;
GRANT SELECT ON mock_cfg TO PUBLIC;

-- without rvbbit_user nothing can be called
SET ROLE rv_nobody;
SELECT rvbbit.run('echo', '{"text": "x"}');
SELECT count(*) FROM rvbbit.calls;
RESET ROLE;

SET ROLE rv_alice;
SELECT rvbbit.run('echo', '{"text": "alice was here"}', '{"cache": false}');
SELECT role, cascade, status FROM rvbbit.calls;
SELECT count(*) FROM rvbbit.call_log;
SELECT prefix FROM rvbbit.providers;
SELECT api_key FROM rvbbit.providers;
SELECT count(*) FROM rvbbit.cache;
SELECT count(*) > 0 AS sees_own_cache FROM rvbbit.cache_entries;
INSERT INTO rvbbit.model_prices VALUES ('x', 1, 1);
SELECT rvbbit.create_cascade('alices', $$cells: [{name: a, instructions: "alice {{ input.text }}"}]$$);
RESET ROLE;

SET ROLE rv_bob;
SELECT rvbbit.run('echo', '{"text": "bob was here"}', '{"cache": false}');
-- bob sees only his own calls, statements and cache entries
SELECT role, cascade, status FROM rvbbit.calls;
SELECT count(*) > 0 AS sees_own_cache,
       count(*) FILTER (WHERE role::text <> 'rv_bob') AS others_cache_entries_seen,
       count(*) FILTER (WHERE response LIKE '%alice%') AS alices_replies_seen
  FROM rvbbit.cache_entries;
SELECT DISTINCT role FROM rvbbit.stats;
-- bob can use alice's cascade but not replace or drop it
SELECT rvbbit.run('alices', '{"text": "x"}');
SELECT rvbbit.create_cascade('alices', $$cells: [{name: a, instructions: "bob"}]$$);
SELECT rvbbit.drop_cascade('alices');
-- the key is hidden (PostgreSQL's wording of the refusal changed in 16)
DO $$
BEGIN
  PERFORM pg_catalog.current_setting('rvbbit.api_key');
  RAISE NOTICE 'shown';
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'refused (%)', SQLSTATE;
END $$;
SELECT count(*) FROM pg_settings WHERE name = 'rvbbit.api_key';
SET rvbbit.api_key = 'sk-bob';
SET rvbbit.api_base = 'http://attacker.invalid/';
RESET ROLE;

-- an admin sees everybody's rows and may manage any cascade
SET ROLE rv_boss;
SELECT DISTINCT role FROM rvbbit.calls WHERE role::text LIKE 'rv_%' ORDER BY 1;
SELECT DISTINCT role FROM rvbbit.cache_entries WHERE role::text LIKE 'rv_%' ORDER BY 1;
SELECT rvbbit.drop_cascade('alices');
RESET ROLE;

-- even a superuser does not see the key's value
SET rvbbit.api_key = 'sk-super-secret-value';
SHOW rvbbit.api_key;
SELECT setting FROM pg_settings WHERE name = 'rvbbit.api_key';
-- and the key is sent to the provider, but not stored or logged
SELECT rvbbit.run('echo', '{"text": "with a key"}', '{"cache": false}');
SELECT r->>'auth' AS auth_header_sent FROM mock('/requests?last=1') AS m(j), jsonb_array_elements(j) AS r;
SELECT count(*) AS key_in_calls FROM rvbbit.call_log WHERE row(call_log.*)::text LIKE '%sk-super%';
RESET rvbbit.api_key;

REVOKE SELECT ON mock_cfg FROM PUBLIC;
DROP ROLE rv_alice, rv_bob, rv_nobody, rv_boss;
