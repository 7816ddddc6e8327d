#!/usr/bin/python3
"""Client check of RVBBIT statements through psycopg2 (Debian's python3-psycopg2).

psycopg2 sends every statement with the simple query protocol and puts its
parameters into the text itself, so the rewrite of
SELECT * FROM rvbbit.sql($$ ... $$) is what gives the cursor typed columns.

Usage: psycopg2_client.py [--host H] [--port P] [--user U] [--dbname D]
(each defaults to libpq's environment: PGHOST, PGPORT, PGUSER, PGDATABASE).
Needs a server with rvbbit whose provider answers the demo fixtures
({"brand": "Apple"} for "Apple iPhone 15", {"brand": "Samsung"} for
"Samsung Galaxy S24").

Prints one line per check, "ok N - ..." or "not ok N - ...", then
"psycopg2 client: P passed, F failed"; exits 1 when a check failed.
"""
import argparse
import sys
import traceback

import psycopg2

TEXT_OID = 25
VARCHAR_OID = 1043
INT4_OID = 23
JSONB_OID = 3802

SEED = ("MAP 'extract_brand' AS brand USING (SELECT * FROM (VALUES "
        "('Apple iPhone 15'), ('Samsung Galaxy S24')) AS t(product_name))")
SEED_PARALLEL = ("MAP PARALLEL 5 'extract_brand' AS brand USING (SELECT * FROM (VALUES "
                 "('Apple iPhone 15'), ('Samsung Galaxy S24')) AS t(product_name))")
TYPED = ("MAP 'extract_brand' AS (brand text) USING (SELECT 1::int AS id, "
         "'Apple iPhone 15'::varchar(40) AS product_name)")
SEED_ROWS = [('Apple iPhone 15', {'brand': 'Apple'}),
             ('Samsung Galaxy S24', {'brand': 'Samsung'})]

passed = 0
failed = 0


def check(cond, name, detail=None):
    global passed, failed
    n = passed + failed + 1
    if cond:
        passed += 1
        print(f"ok {n} - {name}", flush=True)
    else:
        failed += 1
        print(f"not ok {n} - {name}", flush=True)
        if detail is not None:
            print(f"#   got: {detail!r}", flush=True)


def describe(cur):
    return ([c.name for c in cur.description], [c.type_code for c in cur.description])


def whole(stmt):
    return "SELECT * FROM rvbbit.sql($$" + stmt + "$$)"


def run_checks(conn):
    cur = conn.cursor()

    # the seed example of the README
    cur.execute(whole(SEED))
    names, oids = describe(cur)
    check(names == ['product_name', 'brand'], 'seed: column names product_name, brand', names)
    check(oids == [TEXT_OID, JSONB_OID], 'seed: column types text (25), jsonb (3802)', oids)
    rows = cur.fetchall()
    check(rows == SEED_ROWS, 'seed: rows in the USING order with the brands', rows)

    # the same with PARALLEL 5
    cur.execute(whole(SEED_PARALLEL))
    names, oids = describe(cur)
    check(names == ['product_name', 'brand'], 'PARALLEL 5: column names product_name, brand', names)
    check(oids == [TEXT_OID, JSONB_OID], 'PARALLEL 5: column types text (25), jsonb (3802)', oids)
    rows = cur.fetchall()
    check(rows == SEED_ROWS, 'PARALLEL 5: rows in the USING order with the brands', rows)

    # typed result columns; the query's own types and typmods
    cur.execute(whole(TYPED))
    names, oids = describe(cur)
    check(names == ['id', 'product_name', 'brand'], 'AS (brand text): column names id, product_name, brand', names)
    check(oids == [INT4_OID, VARCHAR_OID, TEXT_OID], 'AS (brand text): types int4, varchar, text', oids)
    size = cur.description[1].internal_size
    check(size == 40, 'AS (brand text): product_name keeps its typmod varchar(40)', size)
    rows = cur.fetchall()
    check(rows == [(1, 'Apple iPhone 15', 'Apple')], 'AS (brand text): the row', rows)

    # psycopg2 interpolates parameters on the client: the statement arrives as a literal
    cur.execute("SELECT * FROM rvbbit.sql(%s)", (SEED,))
    names, oids = describe(cur)
    check(names == ['product_name', 'brand'] and oids == [TEXT_OID, JSONB_OID],
          'client-side parameter (a literal on the wire) is rewritten', (names, oids))
    rows = cur.fetchall()
    check(rows == SEED_ROWS, 'client-side parameter: rows', rows)

    # not the whole query: one jsonb column named sql
    cur.execute("SELECT sql FROM rvbbit.sql($$" + SEED + "$$) LIMIT 10")
    names, oids = describe(cur)
    check(names == ['sql'] and oids == [JSONB_OID], 'with LIMIT: one jsonb column named sql', (names, oids))
    rows = cur.fetchall()
    check(rows == [({'product_name': p, 'brand': b},) for p, b in SEED_ROWS],
          'with LIMIT: one object per row', rows)

    # a server-side (named) cursor: DECLARE ... CURSOR is rewritten too
    conn.autocommit = False
    named = conn.cursor(name='rv_client_cursor')
    named.execute(whole(SEED))
    first = named.fetchmany(1)
    names, oids = describe(named)
    check(names == ['product_name', 'brand'] and oids == [TEXT_OID, JSONB_OID],
          'named cursor: columns product_name text, brand jsonb', (names, oids))
    rest = named.fetchall()
    check(first + rest == SEED_ROWS, 'named cursor: rows', first + rest)
    named.close()
    conn.rollback()
    conn.autocommit = True

    # an error leaves the connection usable
    try:
        cur.execute(whole("MAP 'extract_brand' USIN (SELECT 1)"))
        check(False, 'syntax error in the statement is reported')
    except psycopg2.Error as e:
        check(e.pgcode == '42601' and 'USIN' in str(e),
              'syntax error in the statement is reported', (e.pgcode, str(e)))
    cur.execute("SELECT 1")
    check(cur.fetchall() == [(1,)], 'connection usable after the error')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--host')
    ap.add_argument('--port')
    ap.add_argument('--user')
    ap.add_argument('--dbname')
    args = ap.parse_args()
    params = {k: v for k, v in vars(args).items() if v is not None}
    try:
        conn = psycopg2.connect(**params)
        conn.autocommit = True
        try:
            run_checks(conn)
        finally:
            conn.close()
    except Exception:
        check(False, 'psycopg2 client ran without an exception')
        for line in traceback.format_exc().splitlines():
            print('# ' + line, flush=True)
    print(f"psycopg2 client: {passed} passed, {failed} failed", flush=True)
    return 1 if failed or passed == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
