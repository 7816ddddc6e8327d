/*
 * rvbbit 0.3 -> 0.4
 *
 * A fresh CREATE EXTENSION runs rvbbit--0.1.sql and the upgrade scripts up
 * to this one, so a new install and an upgraded one are the same by
 * construction.  Same rules as the earlier scripts: catalog objects are
 * qualified with pg_catalog, extension objects with rvbbit.
 */

\echo Use "ALTER EXTENSION rvbbit UPDATE TO '0.4'" to load this file. \quit

-- == cache: keys compared byte by byte ==
-- A cache key is a hex digest of the request.  Compared under the
-- database's collation (strcoll), the keys were a good part of what the
-- worker spends on writing a cache entry and looking one up (the primary
-- key's index).  Under "C" the comparison is memcmp: the same keys are
-- equal as before; only an ORDER BY key sorts bytewise.  A column a view
-- uses cannot change, so rvbbit.cache_entries is made again around it,
-- the same as 0.2 made it, with its privileges; the primary key index is
-- rebuilt (the update holds the table's lock while it is).
DROP VIEW rvbbit.cache_entries;

ALTER TABLE rvbbit.cache ALTER COLUMN key TYPE pg_catalog.text COLLATE pg_catalog."C";

CREATE VIEW rvbbit.cache_entries WITH (security_barrier) AS
SELECT k.key, k.model, k.cascade, k.cell, k.response, k.input_tokens,
       k.output_tokens, k.role_oid::pg_catalog.regrole AS role, k.created_at
  FROM rvbbit.cache k
 WHERE k.role_oid OPERATOR(pg_catalog.=) (SELECT rvbbit._my_role())
    OR (SELECT rvbbit._sees_all());
GRANT SELECT ON rvbbit.cache_entries TO rvbbit_user;
