/*-------------------------------------------------------------------------
 *
 * test_gateway.c
 *	  Unit tests of rvbbit-gateway's pure parts: the RVBBIT rewriter
 *	  (src/gateway/gw_rewrite.c) and the wire-protocol framer
 *	  (src/gateway/gw_buf.c).
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"
#include "unit.h"

/* rewrite text; returns a static copy: the input when nothing changed */
static const char *
rw(const char *in, bool scs)
{
	static char *last = NULL;
	size_t		n;
	int			flags;
	char	   *out;

	free(last);
	out = gw_rewrite_text(in, strlen(in), scs, true, &n, &flags);
	last = out ? out : strdup(in);
	return last;
}

static int
flags_of(const char *in)
{
	size_t		n;
	int			flags;
	char	   *out = gw_rewrite_text(in, strlen(in), true, true, &n, &flags);

	free(out);
	return flags;
}

static void
test_rewrite(void)
{
	CHECK_STR(rw("RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "a lone RVBBIT statement is wrapped");
	CHECK_STR(rw("rvbbit run 'x' USING (SELECT 1);", true),
			  "SELECT * FROM rvbbit.sql($rvbbit$rvbbit run 'x' USING (SELECT 1)$rvbbit$);",
			  "lower case, the semicolon stays outside");
	CHECK_STR(rw("  /* lead */ -- c\n RVBBIT MAP 'x' USING (SELECT 1) -- tail\n", true),
			  "  /* lead */ -- c\n SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$) -- tail\n",
			  "comments before and after stay outside the wrapper");
	CHECK_STR(rw("SELECT 1; RVBBIT MAP 'a;b' USING (SELECT ';'); SELECT 'RVBBIT'", true),
			  "SELECT 1; SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'a;b' USING (SELECT ';')$rvbbit$); SELECT 'RVBBIT'",
			  "several statements: only the RVBBIT one is rewritten, quoted semicolons do not split");
	CHECK_STR(rw("RVBBIT MAP $q$x$rvbbit$y$q$ USING (SELECT 1)", true),
			  "SELECT * FROM rvbbit.sql($rvbbit1$RVBBIT MAP $q$x$rvbbit$y$q$ USING (SELECT 1)$rvbbit1$)",
			  "a tag that occurs in the text is not used");
	CHECK_STR(rw("RVBBIT MAP 'x' USING (SELECT '$rvbbit')", true),
			  "SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT '$rvbbit')$rvbbit$)",
			  "text ending in the tag's prefix, but no clash");
	CHECK_STR(rw("RVBBIT MAP 'x' USING (SELECT 1) $rvbbit", true),
			  "SELECT * FROM rvbbit.sql($rvbbit1$RVBBIT MAP 'x' USING (SELECT 1) $rvbbit$rvbbit1$)",
			  "a body ending in $rvbbit would clash with the closing tag");
	CHECK_STR(rw("EXPLAIN ANALYZE RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "EXPLAIN ANALYZE SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "EXPLAIN ANALYZE RVBBIT");
	CHECK_STR(rw("explain (costs off, verbose) RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "explain (costs off, verbose) SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "EXPLAIN (options) RVBBIT");
	CHECK_STR(rw("CREATE TEMP TABLE \"My T\" AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "CREATE TEMP TABLE \"My T\" AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "CREATE TEMP TABLE name AS RVBBIT");
	CHECK_STR(rw("CREATE TABLE IF NOT EXISTS s.t (a, b) AS RVBBIT RUN 'x' USING (SELECT 1)", true),
			  "CREATE TABLE IF NOT EXISTS s.t (a, b) AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT RUN 'x' USING (SELECT 1)$rvbbit$)",
			  "CREATE TABLE IF NOT EXISTS qualified name with columns AS RVBBIT");

	/* COPY, DECLARE CURSOR, PREPARE, views, EXPLAIN of those */
	CHECK_STR(rw("COPY (RVBBIT MAP 'x' USING (SELECT ')' AS p, (1))) TO STDOUT", true),
			  "COPY (SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT ')' AS p, (1))$rvbbit$)) TO STDOUT",
			  "COPY (RVBBIT ...) TO: the wrapper ends at the matching parenthesis");
	CHECK_STR(rw("copy /* c */ ( -- x\n rvbbit map 'x' USING (SELECT 1) /* in */ ) TO STDOUT WITH (FORMAT csv); SELECT 1", true),
			  "copy /* c */ ( -- x\n SELECT * FROM rvbbit.sql($rvbbit$rvbbit map 'x' USING (SELECT 1)$rvbbit$) /* in */ ) TO STDOUT WITH (FORMAT csv); SELECT 1",
			  "COPY with comments: they stay outside the wrapper");
	CHECK_STR(rw("COPY (RVBBIT MAP 'x' USING (SELECT 1) TO STDOUT", true),
			  "COPY (RVBBIT MAP 'x' USING (SELECT 1) TO STDOUT",
			  "COPY with an unbalanced parenthesis is left to the server");
	CHECK_STR(rw("COPY t FROM STDIN; COPY (SELECT 'RVBBIT') TO STDOUT", true),
			  "COPY t FROM STDIN; COPY (SELECT 'RVBBIT') TO STDOUT",
			  "plain COPY is left alone");
	CHECK_STR(rw("DECLARE c CURSOR FOR RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "DECLARE c CURSOR FOR SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "DECLARE CURSOR FOR RVBBIT");
	CHECK_STR(rw("declare \"C\" binary no scroll /* x */ cursor with hold for rvbbit map 'x' USING (SELECT 1);", true),
			  "declare \"C\" binary no scroll /* x */ cursor with hold for SELECT * FROM rvbbit.sql($rvbbit$rvbbit map 'x' USING (SELECT 1)$rvbbit$);",
			  "DECLARE BINARY NO SCROLL CURSOR WITH HOLD, with a comment");
	CHECK_STR(rw("DECLARE c INSENSITIVE SCROLL CURSOR WITHOUT HOLD FOR RVBBIT RUN 'x' USING (SELECT 1)", true),
			  "DECLARE c INSENSITIVE SCROLL CURSOR WITHOUT HOLD FOR SELECT * FROM rvbbit.sql($rvbbit$RVBBIT RUN 'x' USING (SELECT 1)$rvbbit$)",
			  "DECLARE INSENSITIVE SCROLL CURSOR WITHOUT HOLD");
	CHECK_STR(rw("DECLARE c NO CURSOR FOR RVBBIT MAP 'x'", true), "DECLARE c NO CURSOR FOR RVBBIT MAP 'x'",
			  "NO without SCROLL is not the grammar: left alone");
	CHECK_STR(rw("PREPARE p (int, text) AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "PREPARE p (int, text) AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "PREPARE name (types) AS RVBBIT");
	CHECK_STR(rw("prepare p as rvbbit map 'x' USING (SELECT 1)", true),
			  "prepare p as SELECT * FROM rvbbit.sql($rvbbit$rvbbit map 'x' USING (SELECT 1)$rvbbit$)",
			  "PREPARE name AS RVBBIT");
	CHECK_STR(rw("CREATE OR REPLACE TEMP VIEW v WITH (security_barrier) AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "CREATE OR REPLACE TEMP VIEW v WITH (security_barrier) AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "CREATE OR REPLACE TEMP VIEW ... AS RVBBIT");
	CHECK_STR(rw("CREATE MATERIALIZED VIEW IF NOT EXISTS m (a) AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "CREATE MATERIALIZED VIEW IF NOT EXISTS m (a) AS RVBBIT MAP 'x' USING (SELECT 1)",
			  "CREATE MATERIALIZED VIEW ... AS RVBBIT is not rewritten (the server cannot store it)");
	CHECK_STR(rw("CREATE UNLOGGED TABLE t (a, b GENERATED ALWAYS AS (1)) WITH (fillfactor = 70) TABLESPACE x AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "CREATE UNLOGGED TABLE t (a, b GENERATED ALWAYS AS (1)) WITH (fillfactor = 70) TABLESPACE x AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "CREATE TABLE with options: the AS outside parentheses");
	CHECK_STR(rw("EXPLAIN ANALYZE CREATE TABLE t AS RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "EXPLAIN ANALYZE CREATE TABLE AS RVBBIT");
	CHECK_STR(rw("EXPLAIN (COSTS OFF) DECLARE c CURSOR FOR RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "EXPLAIN (COSTS OFF) DECLARE c CURSOR FOR SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "EXPLAIN DECLARE ... FOR RVBBIT");
	CHECK_STR(rw("EXPLAIN EXPLAIN RVBBIT MAP 'x'; EXPLAIN COPY (RVBBIT MAP 'x') TO STDOUT", true),
			  "EXPLAIN EXPLAIN RVBBIT MAP 'x'; EXPLAIN COPY (RVBBIT MAP 'x') TO STDOUT",
			  "EXPLAIN EXPLAIN and EXPLAIN COPY are not statements: left alone");
	CHECK_STR(rw("CREATE FUNCTION f() RETURNS int AS 'RVBBIT' LANGUAGE sql; CREATE TABLE t (a int)", true),
			  "CREATE FUNCTION f() RETURNS int AS 'RVBBIT' LANGUAGE sql; CREATE TABLE t (a int)",
			  "CREATE FUNCTION and CREATE TABLE without AS are left alone");
	CHECK_STR(rw("COPY (RVBBIT MAP $$)$$ USING (SELECT $t$ ) $rvbbit$ $t$)) TO STDOUT", true),
			  "COPY (SELECT * FROM rvbbit.sql($rvbbit1$RVBBIT MAP $$)$$ USING (SELECT $t$ ) $rvbbit$ $t$)$rvbbit1$)) TO STDOUT",
			  "COPY: parentheses and tags inside dollar quotes");

	{
		/* 20,000 tags in the text: picking one stays linear */
		GwBuf		b = {0};
		char		num[32];
		int			i;
		size_t		n;
		int			fl;
		char	   *o;

		gw_buf_append(&b, "RVBBIT MAP 'x' USING (SELECT $rvbbit$", 37);
		for (i = 1; i <= 20000; i++)
		{
			snprintf(num, sizeof(num), " $rvbbit%d$", i);
			gw_buf_append(&b, num, strlen(num));
		}
		gw_buf_append(&b, "$rvbbit$)", 9);
		o = gw_rewrite_text(b.data, b.len, true, true, &n, &fl);
		CHECK(o != NULL && strncmp(o, "SELECT * FROM rvbbit.sql($rvbbit20001$", 38) == 0 &&
			  strcmp(o + n - 14, "$rvbbit20001$)") == 0,
			  "a text holding $rvbbit$ to $rvbbit20000$ gets $rvbbit20001$");
		free(o);
		gw_buf_free(&b);
	}

	/* never rewritten */
	CHECK_STR(rw("SELECT 'RVBBIT MAP'", true), "SELECT 'RVBBIT MAP'", "RVBBIT inside a string");
	CHECK_STR(rw("SELECT $$; RVBBIT MAP$$", true), "SELECT $$; RVBBIT MAP$$", "RVBBIT inside a dollar quote");
	CHECK_STR(rw("SELECT $a$ $b$; RVBBIT $b$ $a$", true), "SELECT $a$ $b$; RVBBIT $b$ $a$", "nested dollar tags");
	CHECK_STR(rw("/* a /* nested */ ; RVBBIT */ SELECT 1", true), "/* a /* nested */ ; RVBBIT */ SELECT 1",
			  "RVBBIT inside a nested comment");
	CHECK_STR(rw("-- ; RVBBIT MAP\nSELECT 1", true), "-- ; RVBBIT MAP\nSELECT 1", "RVBBIT inside a line comment");
	CHECK_STR(rw("SELECT \"a;\"\"\"; \"RVBBIT\" MAP", true), "SELECT \"a;\"\"\"; \"RVBBIT\" MAP",
			  "a quoted identifier RVBBIT is not the keyword");
	CHECK_STR(rw("SELECT E'\\'; RVBBIT MAP'", true), "SELECT E'\\'; RVBBIT MAP'",
			  "E'' string with an escaped quote");
	CHECK_STR(rw("SELECT '\\'; RVBBIT MAP 'x' USING (SELECT 1)", true),
			  "SELECT '\\'; SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "standard_conforming_strings on: a backslash does not escape");
	CHECK_STR(rw("SELECT '\\'; RVBBIT MAP 'x' USING (SELECT 1)", false),
			  "SELECT '\\'; RVBBIT MAP 'x' USING (SELECT 1)",
			  "standard_conforming_strings off: the backslash escapes, all one string");
	CHECK_STR(rw("SELECT U&'\\'; RVBBIT MAP 'x' USING (SELECT 1)", false),
			  "SELECT U&'\\'; SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)",
			  "U&'' strings never take backslash escapes");
	CHECK_STR(rw("RVBBITX MAP", true), "RVBBITX MAP", "a longer identifier is not the keyword");
	CHECK_STR(rw("SELECT 1 AS rvbbit", true), "SELECT 1 AS rvbbit", "RVBBIT not at the start");
	CHECK_STR(rw("EXPLAIN SELECT 1; CREATE TABLE t AS SELECT 1", true),
			  "EXPLAIN SELECT 1; CREATE TABLE t AS SELECT 1", "EXPLAIN and CREATE TABLE AS of plain SQL");
	CHECK_STR(rw("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; RVBBIT MAP 'x'; END; SELECT 2", true),
			  "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; RVBBIT MAP 'x'; END; SELECT 2",
			  "semicolons inside BEGIN ATOMIC do not end the statement");
	CHECK_STR(rw("SELECT $1; RVBBIT", true), "SELECT $1; SELECT * FROM rvbbit.sql($rvbbit$RVBBIT$rvbbit$)",
			  "a parameter is not a dollar quote");
	CHECK_STR(rw("SELECT 'unterminated; RVBBIT MAP", true), "SELECT 'unterminated; RVBBIT MAP",
			  "an unterminated string runs to the end");
	CHECK_STR(rw("", true), "", "empty text");

	CHECK((flags_of("SET client_encoding TO 'SJIS'") & GW_RW_RISKY) != 0, "SET client_encoding is risky");
	CHECK((flags_of("set names 'BIG5'") & GW_RW_RISKY) != 0, "SET NAMES is risky");
	CHECK((flags_of("RESET ALL") & GW_RW_RISKY) != 0, "RESET ALL is risky");
	CHECK((flags_of("SELECT 1") & GW_RW_RISKY) == 0, "SELECT is not risky");
	CHECK(gw_encoding_is_unsafe("SJIS") && gw_encoding_is_unsafe("gb18030") &&
		  !gw_encoding_is_unsafe("UTF8") && !gw_encoding_is_unsafe("EUC_JP"),
		  "unsafe client encodings");
}

/* framer callbacks: collect 'Q' and 'P', count messages */
static int	nmsgs;

static int
t_want(void *arg, char type, uint32_t len)
{
	(void) arg;
	(void) len;
	nmsgs++;
	if (type == 'X')
		return GW_WANT_ABORT;
	return type == 'Q' || type == 'P' ? GW_WANT_COLLECT : GW_WANT_STREAM;
}

static bool
t_msg(void *arg, char type, const char *body, uint32_t len, GwBuf *out)
{
	(void) arg;
	return gw_rewrite_message(type, body, len, true, true, out) >= 0;
}

static const GwFrameOps t_ops = {t_want, t_msg};

static void
add_msg(GwBuf *b, char type, const char *body, size_t len)
{
	gw_frame_append_header(b, type, (uint32_t) len);
	gw_buf_append(b, body, len);
}

static void
test_framer(void)
{
	GwBuf		in = {0};
	GwBuf		out = {0};
	GwBuf		want = {0};
	GwFramer	f = {0};
	const char	q[] = "RVBBIT MAP 'x' USING (SELECT 1)";
	const char	nq[] = "SELECT * FROM rvbbit.sql($rvbbit$RVBBIT MAP 'x' USING (SELECT 1)$rvbbit$)";
	char		p[256];
	char		np[256];
	size_t		plen;
	size_t		nplen;
	size_t		i;
	int			r = 0;

	/* in: Parse (named, 1 param type), Query, CopyData, Sync */
	plen = 0;
	memcpy(p, "s1", 3);
	plen = 3;
	memcpy(p + plen, q, sizeof(q));
	plen += sizeof(q);
	memcpy(p + plen, "\0\1\0\0\0\x17", 6);
	plen += 6;
	nplen = 0;
	memcpy(np, "s1", 3);
	nplen = 3;
	memcpy(np + nplen, nq, sizeof(nq));
	nplen += sizeof(nq);
	memcpy(np + nplen, "\0\1\0\0\0\x17", 6);
	nplen += 6;

	add_msg(&in, 'P', p, plen);
	add_msg(&in, 'Q', "SELECT 1", 9);
	add_msg(&in, 'd', "abc\0def", 7);
	add_msg(&in, 'S', "", 0);
	add_msg(&want, 'P', np, nplen);
	add_msg(&want, 'Q', "SELECT 1", 9);
	add_msg(&want, 'd', "abc\0def", 7);
	add_msg(&want, 'S', "", 0);

	/* byte by byte: messages split anywhere */
	nmsgs = 0;
	for (i = 0; i < in.len && r == 0; i++)
		r = gw_frame_feed(&f, in.data + i, 1, &out, &t_ops, NULL);
	CHECK(r == 0 && nmsgs == 4, "framer: four messages fed byte by byte");
	CHECK(out.len == want.len && memcmp(out.data, want.data, want.len) == 0,
		  "framer: Parse rewritten (length adjusted, parameter types kept), others verbatim");
	gw_buf_free(&out);

	/* all at once */
	gw_frame_reset(&f);
	r = gw_frame_feed(&f, in.data, in.len, &out, &t_ops, NULL);
	CHECK(r == 0 && out.len == want.len && memcmp(out.data, want.data, want.len) == 0,
		  "framer: the same in one piece");
	gw_buf_free(&out);

	/* a bad length */
	gw_frame_reset(&f);
	r = gw_frame_feed(&f, "Q\0\0\0\3", 5, &out, &t_ops, NULL);
	CHECK(r == GW_FRAME_BADLEN, "framer: a length below 4 is an error");
	gw_frame_reset(&f);
	r = gw_frame_feed(&f, "Q\x7f\xff\xff\xff", 5, &out, &t_ops, NULL);
	CHECK(r == GW_FRAME_BADLEN, "framer: a length over the server's limit is an error");
	gw_buf_free(&out);

	/* a malformed Parse passes unchanged */
	gw_buf_free(&in);
	gw_frame_reset(&f);
	add_msg(&in, 'P', "s1\0RVBBIT x\0\0\5", 14);
	r = gw_frame_feed(&f, in.data, in.len, &out, &t_ops, NULL);
	CHECK(r == 0 && out.len == in.len && memcmp(out.data, in.data, in.len) == 0,
		  "framer: a Parse whose parameter count does not match passes unchanged");
	gw_buf_free(&out);
	gw_buf_free(&in);
	gw_frame_reset(&f);
	add_msg(&in, 'Q', "RVBBIT x", 8);
	r = gw_frame_feed(&f, in.data, in.len, &out, &t_ops, NULL);
	CHECK(r == 0 && out.len == in.len && memcmp(out.data, in.data, in.len) == 0,
		  "framer: a Query without its NUL passes unchanged");
	gw_buf_free(&out);
	gw_buf_free(&in);
	gw_frame_reset(&f);
	add_msg(&in, 'S', "", 0);
	add_msg(&in, 'X', "", 0);
	add_msg(&in, 'S', "", 0);
	r = gw_frame_feed(&f, in.data, in.len, &out, &t_ops, NULL);
	CHECK(r == GW_FRAME_ABORT && out.len == 5,
		  "framer: want says abort: the feed stops there, what came before went on");
	gw_buf_free(&out);
	gw_buf_free(&in);
	gw_buf_free(&want);
	gw_frame_reset(&f);
}

int
main(void)
{
	test_rewrite();
	test_framer();
	return unit_done("gateway");
}
