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
