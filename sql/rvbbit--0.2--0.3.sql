/*
 * rvbbit 0.2 -> 0.3
 *
 * A fresh CREATE EXTENSION runs rvbbit--0.1.sql, rvbbit--0.1--0.2.sql and
 * then this script, so a new install and an upgraded one are the same by
 * construction.  Same rules as the earlier scripts: catalog objects are
 * qualified with pg_catalog, extension objects with rvbbit.
 */

\echo Use "ALTER EXTENSION rvbbit UPDATE TO '0.3'" to load this file. \quit

-- == jobs: the submitting session user ==
-- A job counts against the daily budget of the session user that
-- submitted it, exactly like a synchronous statement (SET ROLE or a
-- SECURITY DEFINER function gives no second budget).  The runner connects
-- as session_role_oid (so its ALTER ROLE settings are in force), takes
-- outer_role_oid as SET ROLE would (the session user must still be a
-- member of it), and runs the statement as role_oid, which still owns the
-- job.  Jobs submitted before 0.3 have NULL here and run as role_oid.
ALTER TABLE rvbbit.job_log
    ADD COLUMN session_role_oid oid,
    ADD COLUMN outer_role_oid oid;
COMMENT ON COLUMN rvbbit.job_log.session_role_oid IS 'The session user that submitted the job: the job runner connects as it and the job counts against its daily budget (NULL: submitted before 0.3, runs as role_oid).';
COMMENT ON COLUMN rvbbit.job_log.outer_role_oid IS 'The role the submitting session had set with SET ROLE (the session user when none); the session user must still be a member of it when the job runs.';
