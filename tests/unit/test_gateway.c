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


/* 1-based character position of byte offset b of s (UTF-8) */
static long
charpos(const char *s, size_t b)
{
	long		c = 1;
	size_t		i;

	for (i = 0; i < b; i++)
		if (((unsigned char) s[i] & 0xC0) != 0x80)
			c++;
	return c;
}

/*
 * Rewrite in, find the nth occurrence (0-based) of needle in the rewritten
 * text, translate its position: is it the nth occurrence's position in in?
 */
static bool
maps_to_same(const char *in, const char *needle, int nth)
{
	GwPosMap	map;
	size_t		n;
	int			flags;
	char	   *out = gw_rewrite_text_map(in, strlen(in), true, true, &n, &flags,
										  &map, GW_ENC_UTF8);
	const char *p = out;
	const char *q = in;
	bool		res;
	int			i;

	if (out == NULL)
		return false;
	for (i = 0; i <= nth; i++)
	{
		p = strstr(i ? p + 1 : p, needle);
		q = strstr(i ? q + 1 : q, needle);
		if (p == NULL || q == NULL)
		{
			free(out);
			gw_posmap_free(&map);
			return false;
		}
	}
	res = gw_map_position(&map, charpos(out, p - out)) == charpos(in, q - in) &&
		map.rw_total == (uint32_t) charpos(out, n) - 1 &&
		map.orig_total == (uint32_t) charpos(in, strlen(in)) - 1;
	free(out);
	gw_posmap_free(&map);
	return res;
}

/* the translated position of the nth occurrence of needle in the rewritten text */
static long
mapped(const char *in, const char *needle, int enc_kind)
{
	GwPosMap	map;
	size_t		n;
	int			flags;
	char	   *out = gw_rewrite_text_map(in, strlen(in), true, true, &n, &flags,
										  &map, enc_kind);
	long		r;

	if (out == NULL)
		return -1;
	r = strstr(out, needle) - out;
	r = gw_map_position(&map, enc_kind == GW_ENC_UTF8 ? charpos(out, (size_t) r) : r + 1);
	free(out);
	gw_posmap_free(&map);
	return r;
}

static void
test_positions(void)
{
	GwPosMap	map;
	size_t		n;
	int			flags;
	char	   *out;
	GwBuf		b = {0};
	uint32_t	blen;
	static const char err[] = "SERROR\0C42P01\0Mrelation \"nope\" does not exist\0P40\0\0";
	static const char err_noP[] = "SERROR\0C42601\0Mx\0\0";

	CHECK(maps_to_same("RVBBIT MAP 'x' USING (SELECT 1)", "USING", 0),
		  "positions: inside the wrapped statement, one to one");
	CHECK(maps_to_same("RVBBIT MAP 'x' USING (SELECT 1)", "RVBBIT", 0),
		  "positions: the RVBBIT keyword itself");
	CHECK(maps_to_same("SELECT 1; RVBBIT MAP 'x' USING (SELECT 1); SELECT nope", "nope", 0),
		  "positions: after the wrapper, shifted back");
	CHECK(maps_to_same("SELECT 'é€'; RVBBIT MAP 'ü' <max_workers> USING (SELECT 'ö'); SELECT 'ß' nope", "<max", 0),
		  "positions: UTF-8 characters before, inside the wrapped statement");
	CHECK(maps_to_same("SELECT 'é€'; RVBBIT MAP 'ü' USING (SELECT 'ö'); SELECT 'ß' nope", "nope", 0),
		  "positions: UTF-8 characters before and inside, after the wrapper");
	CHECK(maps_to_same("RVBBIT MAP 'a' USING (SELECT 1);\nRVBBIT MAP 'b' USING (SELECT 2) x; SELECT 3 y", "USING", 1),
		  "positions: the second of two wrapped statements");
	CHECK(maps_to_same("RVBBIT MAP 'a' USING (SELECT 1);\nRVBBIT MAP 'b' USING (SELECT 2) x; SELECT 3 y", " y", 0),
		  "positions: after two wrappers");
	CHECK(maps_to_same("COPY (RVBBIT MAP 'x' USING (SELECT 1)) TO STDOUT (FORMAT nope)", "nope", 0),
		  "positions: after the wrapper inside COPY's parentheses");
	CHECK(mapped("SELECT 1; RVBBIT MAP 'x' USING (SELECT 1)", "rvbbit.sql", GW_ENC_UTF8) == 11,
		  "positions: in the inserted head: the start of the statement");
	CHECK(mapped("SELECT 1;  CREATE TABLE t AS RVBBIT MAP 'x' USING (SELECT 1) ; SELECT 2", "$rvbbit$)", GW_ENC_UTF8) == 12,
		  "positions: in the inserted tail: the start of the statement (CREATE)");
	CHECK(mapped("SELECT 'ü'; RVBBIT MAP 'x' USING (SELECT 1)", "USING", GW_ENC_SINGLE) ==
		  (long) (strstr("SELECT 'ü'; RVBBIT MAP 'x' USING (SELECT 1)", "USING") -
				  "SELECT 'ü'; RVBBIT MAP 'x' USING (SELECT 1)") + 1,
		  "positions: a single-byte encoding counts bytes");

	out = gw_rewrite_text_map("SELECT 1; RVBBIT MAP 'x' USING (SELECT 1", 40, true, true, &n, &flags,
							  &map, GW_ENC_UTF8);
	CHECK(out != NULL && gw_map_position(&map, (long) n + 1) == 41,
		  "positions: at the end of input: the end of the original");
	CHECK(gw_map_position(&map, 0) == 0,
		  "positions: no position stays none");
	free(out);
	gw_posmap_free(&map);

	out = gw_rewrite_text_map("RVBBIT MAP 'x' USING (SELECT 1)", 31, true, true, &n, &flags,
							  &map, GW_ENC_OTHER);
	CHECK(out != NULL && map.drop && gw_map_position(&map, 5) == 0,
		  "positions: an encoding not counted drops them");
	free(out);
	gw_posmap_free(&map);

	out = gw_rewrite_text_map("SELECT 1", 8, true, true, &n, &flags, &map, GW_ENC_UTF8);
	CHECK(out == NULL && map.nsegs == 0 && !map.drop,
		  "positions: nothing rewritten, no map");
	gw_posmap_free(&map);

	/* the ErrorResponse: 'P' translated, the other fields unchanged */
	out = gw_rewrite_text_map("SELECT 1; RVBBIT MAP 'x' USING (SELECT 1); SELECT nope", 54, true, true,
							  &n, &flags, &map, GW_ENC_UTF8);
	CHECK(out != NULL && gw_translate_error(err, sizeof(err) - 1, &map, &b, &blen) &&
		  blen == b.len && blen == sizeof(err) - 1 &&
		  memcmp(b.data, "SERROR\0C42P01\0Mrelation \"nope\" does not exist\0P", 47) == 0 &&
		  strcmp(b.data + 47, "11") == 0 && b.data[blen - 1] == '\0',
		  "error: the P field is translated, the rest kept");
	b.len = 0;
	CHECK(gw_translate_error(err_noP, sizeof(err_noP) - 1, &map, &b, &blen) &&
		  blen == sizeof(err_noP) - 1 && memcmp(b.data, err_noP, blen) == 0,
		  "error: without a position it is unchanged");
	b.len = 0;
	CHECK(gw_translate_error("SERROR\0P4", 9, &map, &b, &blen) &&
		  blen == 9 && memcmp(b.data, "SERROR\0P4", 9) == 0,
		  "error: a malformed body is passed on unchanged");
	free(out);
	gw_posmap_free(&map);

	map.drop = true;
	b.len = 0;
	CHECK(gw_translate_error(err, sizeof(err) - 1, &map, &b, &blen) &&
		  blen == sizeof(err) - 1 - 4 &&
		  memcmp(b.data, err, 46) == 0 && b.data[46] == '\0' && blen == 47,
		  "error: a dropped map removes the P field");
	gw_posmap_free(&map);
	gw_buf_free(&b);

	CHECK(gw_encoding_kind("UTF8") == GW_ENC_UTF8 && gw_encoding_kind("LATIN1") == GW_ENC_SINGLE &&
		  gw_encoding_kind("SQL_ASCII") == GW_ENC_SINGLE && gw_encoding_kind("EUC_JP") == GW_ENC_OTHER &&
		  gw_encoding_kind("SJIS") == GW_ENC_OTHER,
		  "encoding kinds");
}

int
main(void)
{
	test_rewrite();
	test_positions();
	test_framer();
	return unit_done("gateway");
}
