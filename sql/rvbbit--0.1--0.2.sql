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
