/*-------------------------------------------------------------------------
 *
 * test_syntax.c
 *	  Unit tests for the RVBBIT statement parser (src/syntax.c).
 *
 * Every grammar form and combination, the tokenizer (quotes, E-strings,
 * dollar quotes, comments, nested parentheses), positions counted in
 * characters, every error message with its detail and position, and
 * large inputs (which must parse in linear time without deep recursion).
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "syntax.h"
#include "unit.h"

/*
 * Parse text that must be valid; one check.  Prints the error when the
 * parse fails so a failure is easy to diagnose.
 */
static RvStatement *
parse_ok(const char *text, const char *desc)
{
	RvError		err;
	RvStatement *stmt = rv_statement_parse(text, &err);

	CHECK(stmt != NULL && !err.set, desc);
	if (stmt == NULL)
		printf("#   error: %s (%s) at %d\n", err.message, err.detail, err.position);
	return stmt;
}

/*
 * Parse text that must fail with the given message, detail (NULL: not
 * checked; "" : must be empty) and 1-based character position; three
 * checks (two when detail is NULL).
 */
static void
parse_err(const char *text, const char *message, const char *detail,
		  int position, const char *desc)
{
	RvError		err;
	RvStatement *stmt = rv_statement_parse(text, &err);
	char		d[256];

	snprintf(d, sizeof(d), "%s: message", desc);
	CHECK_STR(stmt == NULL && err.set ? err.message : "(parsed)", message, d);
	if (detail != NULL)
	{
		snprintf(d, sizeof(d), "%s: detail", desc);
		CHECK_STR(err.detail, detail, d);
	}
	snprintf(d, sizeof(d), "%s: position", desc);
	CHECK(err.position == position, d);
	if (err.position != position)
		printf("#   position %d, want %d\n", err.position, position);
	rv_statement_free(stmt);
}

/* Same as parse_err, also checking the hint. */
static void
parse_err_hint(const char *text, const char *message, const char *hint,
			   int position, const char *desc)
{
	RvError		err;
	RvStatement *stmt = rv_statement_parse(text, &err);
	char		d[256];

	parse_err(text, message, NULL, position, desc);
	snprintf(d, sizeof(d), "%s: hint", desc);
	CHECK_STR(err.hint, hint, d);
	rv_statement_free(stmt);
}

/* The basic forms of MAP and RUN. */
static void
test_forms(void)
{
	RvStatement *s;

	s = parse_ok("MAP 'extract_brand' USING (SELECT * FROM products)", "plain MAP");
	if (s)
	{
		CHECK(s->kind == RV_STMT_MAP && !s->async && s->parallel == 0 &&
			  s->batch == 0 && !s->distinct && s->alias == NULL &&
			  s->ncolumns == 0 && s->noptions == 0, "plain MAP: defaults");
		CHECK_STR(s->cascade, "extract_brand", "plain MAP: cascade");
		CHECK(s->cascade_position == 5, "plain MAP: cascade position");
		CHECK_STR(s->query, "SELECT * FROM products", "plain MAP: query");
		CHECK(s->query_position == 28, "plain MAP: query position");
		rv_statement_free(s);
	}

	s = parse_ok("RVBBIT MAP 'x' USING (select 1)", "leading RVBBIT");
	if (s)
		CHECK(s->kind == RV_STMT_MAP && s->cascade_position == 12, "leading RVBBIT: kind, position");
	rv_statement_free(s);

	s = parse_ok("rvbbit map parallel 8 'x' using (select 1)", "lower-case keywords");
	if (s)
		CHECK(s->parallel == 8, "lower-case keywords: parallel 8");
	rv_statement_free(s);

	s = parse_ok("Map PaRaLLeL 4 'x' As y UsInG (select 1) WiTh (LiMiT = 5)", "mixed-case keywords");
	if (s)
		CHECK(s->parallel == 4 && strcmp(s->alias, "y") == 0 && s->noptions == 1 &&
			  strcmp(s->options[0].name, "limit") == 0, "mixed-case keywords: fields");
	rv_statement_free(s);

	s = parse_ok("MAP PARALLEL 'x' USING (select 1)", "PARALLEL without n");
	if (s)
		CHECK(s->parallel == -1, "PARALLEL without n is -1");
	rv_statement_free(s);

	s = parse_ok("MAP BATCH 5 DISTINCT PARALLEL 3 'x' USING (select 1)", "BATCH DISTINCT PARALLEL");
	if (s)
		CHECK(s->batch == 5 && s->distinct && s->parallel == 3, "BATCH DISTINCT PARALLEL: fields");
	rv_statement_free(s);

	s = parse_ok("MAP DISTINCT PARALLEL BATCH 1000 'x' USING (select 1)", "DISTINCT PARALLEL BATCH max");
	if (s)
		CHECK(s->batch == 1000 && s->distinct && s->parallel == -1, "DISTINCT PARALLEL BATCH: fields");
	rv_statement_free(s);

	s = parse_ok("MAP PARALLEL 00012 'x' USING (select 1)", "PARALLEL with leading zeros");
	if (s)
		CHECK(s->parallel == 12, "PARALLEL 00012 is 12");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' AS brand USING (select 1)", "AS alias");
	if (s)
		CHECK_STR(s->alias, "brand", "AS alias: alias");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' AS \"Brand \"\"X\"\"\" USING (select 1)", "AS quoted alias");
	if (s)
		CHECK_STR(s->alias, "Brand \"X\"", "AS quoted alias keeps case and quotes");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' AS \"using\" USING (select 1)", "quoted keyword as alias");
	if (s)
		CHECK_STR(s->alias, "using", "quoted keyword alias");
	rv_statement_free(s);

	s = parse_ok("RUN 'summarize' USING (select * from t)", "plain RUN");
	if (s)
		CHECK(s->kind == RV_STMT_RUN && !s->async && s->parallel == 0 &&
			  strcmp(s->cascade, "summarize") == 0 &&
			  strcmp(s->query, "select * from t") == 0, "plain RUN: fields");
	rv_statement_free(s);

	s = parse_ok("RVBBIT RUN ASYNC 'summarize' AS summary USING (select 1) WITH (model = 'gpt-4o');",
				 "RUN ASYNC AS alias WITH;");
	if (s)
		CHECK(s->kind == RV_STMT_RUN && s->async && strcmp(s->alias, "summary") == 0 &&
			  s->noptions == 1 && strcmp(s->options[0].value, "gpt-4o") == 0,
			  "RUN ASYNC: fields");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (select 1);", "trailing semicolon");
	rv_statement_free(s);
	s = parse_ok("  \n\tMAP 'x' USING (select 1) ; -- done\n  ", "whitespace and comment around");
	rv_statement_free(s);
}

/* The forms of the cascade reference. */
static void
test_cascade_forms(void)
{
	RvStatement *s;

	s = parse_ok("MAP extract_Brand USING (select 1)", "bare cascade name");
	if (s)
		CHECK_STR(s->cascade, "extract_brand", "bare cascade name is lower-cased");
	rv_statement_free(s);

	s = parse_ok("MAP \"My Cascade\" USING (select 1)", "quoted-identifier cascade");
	if (s)
		CHECK_STR(s->cascade, "My Cascade", "quoted-identifier cascade kept verbatim");
	rv_statement_free(s);

	s = parse_ok("MAP 'it''s' USING (select 1)", "cascade with '' escape");
	if (s)
		CHECK_STR(s->cascade, "it's", "'' becomes '");
	rv_statement_free(s);

	s = parse_ok("MAP $$cells:\n  - name: a\n$$ USING (select 1)", "dollar-quoted cascade");
	if (s)
		CHECK_STR(s->cascade, "cells:\n  - name: a\n", "dollar-quoted cascade body");
	rv_statement_free(s);

	s = parse_ok("MAP $yaml$ it's \"q\" $$ $ya $yaml$ USING (select 1)", "tagged dollar quote with other quotes");
	if (s)
		CHECK_STR(s->cascade, " it's \"q\" $$ $ya ", "tagged dollar quote body");
	rv_statement_free(s);

	s = parse_ok("MAP E'a\\'b\\\\c\\nd\\te''f' USING (select 1)", "E-string cascade");
	if (s)
		CHECK_STR(s->cascade, "a'b\\c\nd\te'f", "E-string escapes");
	rv_statement_free(s);

	s = parse_ok("MAP e'\\x41\\101\\u00e9\\U0001F600\\uD83D\\uDE00\\q' USING (select 1)", "E-string hex/octal/unicode");
	if (s)
		CHECK_STR(s->cascade, "AA\xc3\xa9\xf0\x9f\x98\x80\xf0\x9f\x98\x80q", "E-string hex/octal/unicode values");
	rv_statement_free(s);

	s = parse_ok("MAP 'caf\xc3\xa9' USING (select 1)", "unicode cascade");
	if (s)
		CHECK(strcmp(s->cascade, "caf\xc3\xa9") == 0 && s->query_position == 19,
			  "unicode cascade: value and query position in characters");
	rv_statement_free(s);
}

/* Column lists: AS ( ... ) and RETURNING ( ... ). */
static void
test_columns(void)
{
	RvStatement *s;

	s = parse_ok("MAP 'x' AS (brand text, price numeric(10,2), tags varchar(20)[],\n"
				 "  ts timestamp   with /* tz */ time\tzone, score double precision,"
				 " \"Mixed Case\" \"MyType\") USING (select 1)", "AS column list");
	if (s)
	{
		CHECK(s->ncolumns == 6 && s->alias == NULL, "AS column list: six columns");
		if (s->ncolumns == 6)
		{
			CHECK(strcmp(s->columns[0].name, "brand") == 0 &&
				  strcmp(s->columns[0].type, "text") == 0, "column text");
			CHECK_STR(s->columns[1].type, "numeric(10,2)", "numeric(10,2) keeps its comma");
			CHECK_STR(s->columns[2].type, "varchar(20)[]", "varchar(20)[]");
			CHECK_STR(s->columns[3].type, "timestamp with time zone", "timestamp with time zone normalized");
			CHECK_STR(s->columns[4].type, "double precision", "double precision");
			CHECK(strcmp(s->columns[5].name, "Mixed Case") == 0 &&
				  strcmp(s->columns[5].type, "\"MyType\"") == 0, "quoted column name and type");
			CHECK(s->columns[0].position == 13 && s->columns[1].position == 25,
				  "column positions");
		}
	}
	rv_statement_free(s);

	s = parse_ok("MAP DISTINCT 'x' RETURNING (Brand TEXT, n int) USING (select 1)", "RETURNING column list");
	if (s)
		CHECK(s->ncolumns == 2 && strcmp(s->columns[0].name, "brand") == 0 &&
			  strcmp(s->columns[0].type, "TEXT") == 0 && s->distinct,
			  "RETURNING: names lower-cased, type as written");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' AS (a text, \"A\" text) USING (select 1)", "a and \"A\" are different columns");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' AS (\"using\" text, with int) USING (select 1)", "keyword-like column names");
	if (s)
		CHECK(s->ncolumns == 2 && strcmp(s->columns[1].name, "with") == 0, "column named with");
	rv_statement_free(s);
}

/* The USING ( query ) scan. */
static void
test_using(void)
{
	RvStatement *s;

	s = parse_ok("MAP 'x' USING (select f(')', '(') from (select 1) t where a = (\"b)\") -- )\n"
				 " and c = $$)$$ and d = $q$(($q$ /* ) /* ( */ ) */ and e = E'\\')' )",
				 "parentheses inside strings, quotes, dollar quotes and comments");
	if (s)
		CHECK_STR(s->query, "select f(')', '(') from (select 1) t where a = (\"b)\") -- )\n"
				  " and c = $$)$$ and d = $q$(($q$ /* ) /* ( */ ) */ and e = E'\\')'",
				  "query copied verbatim");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (\n\t  select ((((1))))  \n ) WITH (limit = 0)", "query trimmed, nested parens");
	if (s)
		CHECK(strcmp(s->query, "select ((((1))))") == 0 && s->query_position == 20,
			  "trimmed query and its position");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (/* leading */ select 1 /* trailing */)", "comments kept inside query");
	if (s)
		CHECK_STR(s->query, "/* leading */ select 1", "comments in query kept, after its last token dropped");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (select 'caf\xc3\xa9', $1, a$b, 1.5e3, .5 from t)", "other tokens in query");
	if (s)
		CHECK_STR(s->query, "select 'caf\xc3\xa9', $1, a$b, 1.5e3, .5 from t", "other tokens copied");
	rv_statement_free(s);

	s = parse_ok("/*c*/MAP/*c*/PARALLEL/*c*/2/*c*/BATCH--c\n3/*c*/DISTINCT/*c*/'x'/*c*/AS/*c*/(/*c*/a"
				 "/*c*/int/*c*/,b/*c*/text/*c*/)/*c*/USING/*c*/(select 1)/*c*/WITH/*c*/(/*c*/limit"
				 "/*c*/=/*c*/5/*c*/)/*c*/;/*c*/",
				 "comments between every token");
	if (s)
		CHECK(s->parallel == 2 && s->batch == 3 && s->distinct && s->ncolumns == 2 &&
			  strcmp(s->columns[0].type, "int") == 0 && s->noptions == 1 &&
			  strcmp(s->options[0].value, "5") == 0, "comments between tokens: fields");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' /* outer /* inner */ still outer */ USING (select 1)", "nested comment");
	rv_statement_free(s);
}

/* WITH ( options ): every value kind. */
static void
test_options(void)
{
	RvStatement *s;
	const RvOption *o;

	s = parse_ok("MAP 'x' USING (select 1) WITH (model = 'gpt-4o', limit = 10, budget_dollars = 2.5,"
				 " timeout = -1, cache = true, async = OFF, on_error = NULL, dedupe_by = Name,"
				 " as_table = \"Out Table\", result_column = $$r$$, infer_schema = on,"
				 " max_retries = E'3\\n', parallel = 1e2)", "all option value kinds");
	if (s)
	{
		CHECK(s->noptions == 13, "thirteen options");
		o = rv_statement_option(s, "model");
		CHECK(o && o->kind == RV_OPT_STRING && strcmp(o->value, "gpt-4o") == 0, "string option");
		o = rv_statement_option(s, "limit");
		CHECK(o && o->kind == RV_OPT_NUMBER && strcmp(o->value, "10") == 0, "integer option");
		o = rv_statement_option(s, "budget_dollars");
		CHECK(o && o->kind == RV_OPT_NUMBER && strcmp(o->value, "2.5") == 0, "decimal option");
		o = rv_statement_option(s, "timeout");
		CHECK(o && o->kind == RV_OPT_NUMBER && strcmp(o->value, "-1") == 0, "negative option");
		o = rv_statement_option(s, "cache");
		CHECK(o && o->kind == RV_OPT_BOOL && strcmp(o->value, "true") == 0, "true option");
		o = rv_statement_option(s, "async");
		CHECK(o && o->kind == RV_OPT_BOOL && strcmp(o->value, "false") == 0, "OFF option");
		o = rv_statement_option(s, "infer_schema");
		CHECK(o && o->kind == RV_OPT_BOOL && strcmp(o->value, "true") == 0, "on option");
		o = rv_statement_option(s, "on_error");
		CHECK(o && o->kind == RV_OPT_NULL && strcmp(o->value, "null") == 0, "NULL option");
		o = rv_statement_option(s, "dedupe_by");
		CHECK(o && o->kind == RV_OPT_IDENT && strcmp(o->value, "name") == 0, "identifier option lower-cased");
		o = rv_statement_option(s, "as_table");
		CHECK(o && o->kind == RV_OPT_IDENT && strcmp(o->value, "Out Table") == 0, "quoted identifier option");
		o = rv_statement_option(s, "result_column");
		CHECK(o && o->kind == RV_OPT_STRING && strcmp(o->value, "r") == 0, "dollar-quoted option");
		o = rv_statement_option(s, "max_retries");
		CHECK(o && o->kind == RV_OPT_STRING && strcmp(o->value, "3\n") == 0, "E-string option");
		o = rv_statement_option(s, "parallel");
		CHECK(o && o->kind == RV_OPT_NUMBER && strcmp(o->value, "1e2") == 0, "exponent option");
		o = rv_statement_option(s, "limit");
		CHECK(o && o->position == 50, "option position");
		CHECK(rv_statement_option(s, "nope") == NULL && rv_statement_option(NULL, "limit") == NULL,
			  "absent option is NULL");
	}
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (select 1) WITH (on_error = fail, LIMIT = - 5)", "ident value, minus with space");
	if (s)
	{
		o = rv_statement_option(s, "on_error");
		CHECK(o && o->kind == RV_OPT_IDENT && strcmp(o->value, "fail") == 0, "on_error = fail");
		o = rv_statement_option(s, "limit");
		CHECK(o && strcmp(o->value, "-5") == 0, "- 5 is -5");
	}
	rv_statement_free(s);
}

/* Syntax errors with message, detail and position. */
static void
test_syntax_errors(void)
{
	parse_err("", "syntax error at end of statement", "Expected MAP or RUN.", 1, "empty statement");
	parse_err("   -- nothing\n", "syntax error at end of statement", "Expected MAP or RUN.", 15,
			  "only a comment");
	parse_err("SELECT 1", "syntax error at or near \"SELECT\"", "Expected MAP or RUN.", 1, "not RVBBIT");
	parse_err("RVBBIT", "syntax error at end of statement", "Expected MAP or RUN.", 7, "RVBBIT alone");
	parse_err("RVBBIT 'x'", "syntax error at or near \"'x'\"", "Expected MAP or RUN.", 8, "RVBBIT then string");
	parse_err("MAP USING (select 1)", "syntax error at or near \"USING\"",
			  "Expected a cascade name in quotes.", 5, "missing cascade");
	parse_err("MAP PARALLEL 4 (select 1)", "syntax error at or near \"(\"",
			  "Expected a cascade name in quotes.", 16, "missing cascade after PARALLEL n");
	parse_err("MAP", "syntax error at end of statement", "Expected a cascade name in quotes.", 4,
			  "MAP alone");
	parse_err("MAP 'x'", "syntax error at end of statement", "Expected AS, RETURNING or USING.", 8,
			  "missing USING at end");
	parse_err("MAP 'x' (select 1)", "syntax error at or near \"(\"", "Expected AS, RETURNING or USING.", 9,
			  "missing USING");
	parse_err("RUN 'x' FROM (select 1)", "syntax error at or near \"FROM\"", "Expected AS or USING.", 9,
			  "RUN missing USING");
	parse_err("MAP 'x' AS y (select 1)", "syntax error at or near \"(\"", "Expected USING.", 14,
			  "missing USING after alias");
	parse_err("MAP 'x' USING select 1", "syntax error at or near \"select\"",
			  "Expected \"(\" after USING.", 15, "missing ( after USING");
	parse_err("MAP 'x' USING (select 1) LIMIT 5", "syntax error at or near \"LIMIT\"",
			  "Expected WITH or end of statement.", 26, "junk after USING");
	parse_err("MAP 'x' USING (select 1); select 2", "syntax error at or near \"select\"",
			  "Only one statement is allowed; nothing may follow the \";\".", 27, "text after semicolon");
	parse_err("MAP 'x' USING (select 1);;", "syntax error at or near \";\"",
			  NULL, 26, "double semicolon");
	parse_err("MAP 'x' USING (select 1) WITH (limit = 1) x", "syntax error at or near \"x\"",
			  "Expected end of statement.", 43, "junk after WITH");
	parse_err("MAP 'x' AS USING (select 1)", "syntax error at or near \"USING\"",
			  "Expected an alias or a column list after AS.", 12, "AS without alias");
	parse_err("RUN 'x' AS 5 USING (select 1)", "syntax error at or near \"5\"",
			  "Expected an alias after AS.", 12, "RUN AS without alias");
	parse_err("MAP 'x' RETURNING a text USING (select 1)", "syntax error at or near \"a\"",
			  "Expected \"(\" after RETURNING.", 19, "RETURNING without (");
	parse_err("MAP BATCH 'x' USING (select 1)", "syntax error at or near \"'x'\"",
			  "Expected a number of rows after BATCH.", 11, "BATCH without n");
	parse_err("MAP 'x' USING (select 1) WITH limit = 1", "syntax error at or near \"limit\"",
			  "Expected \"(\" after WITH.", 31, "WITH without (");
	parse_err("MAP 'x' USING (select 1) WITH ()", "syntax error at or near \")\"",
			  "Expected an option name.", 32, "empty WITH ()");
	parse_err("MAP 'x' USING (select 1) WITH (limit 10)", "syntax error at or near \"10\"",
			  "Expected \"=\" after option name \"limit\".", 38, "option without =");
	parse_err("MAP 'x' USING (select 1) WITH (limit = )", "syntax error at or near \")\"",
			  "Expected a value for option \"limit\".", 40, "option without value");
	parse_err("MAP 'x' USING (select 1) WITH (cache = 1h)", "syntax error at or near \"h\"",
			  "Expected \",\" or \")\" after the value of option \"cache\".", 41, "option value junk");
	parse_err("MAP 'x' USING (select 1) WITH (limit = 1", "syntax error at end of statement",
			  "Expected \",\" or \")\" after the value of option \"limit\".", 41, "unclosed WITH");
	parse_err("MAP 'x' USING (select 1) WITH (limit = 1,)", "syntax error at or near \")\"",
			  "Expected an option name.", 42, "trailing comma in WITH");

	/* position counts characters, not bytes */
	parse_err("MAP 'caf\xc3\xa9' USING (select 1) foo", "syntax error at or near \"foo\"",
			  "Expected WITH or end of statement.", 29, "position after unicode");
	parse_err("MAP 'x'\nUSING (select 1)\n  bad", "syntax error at or near \"bad\"",
			  NULL, 28, "position across lines");
	{
		RvError		err;

		rv_statement_parse("MAP 'x'\nUSING (select 1)\n  bad", &err);
		CHECK(err.line == 3 && err.column == 3, "line and column of error");
	}
}

/* Lexical errors: unterminated constructs, bad escapes. */
static void
test_lexical_errors(void)
{
	parse_err("MAP 'x USING (select 1)", "unterminated quoted string", NULL, 5, "unterminated string");
	parse_err("MAP 'x' USING (select 'a)", "unterminated quoted string", NULL, 23,
			  "unterminated string inside USING");
	parse_err("MAP E'x\\' USING (select 1)", "unterminated quoted string", NULL, 5,
			  "unterminated E-string (escaped quote)");
	parse_err("MAP $$x USING (select 1)", "unterminated dollar-quoted string", NULL, 5,
			  "unterminated dollar quote");
	parse_err("MAP 'x' USING (select $a$ ) $b$ )", "unterminated dollar-quoted string", NULL, 23,
			  "unterminated tagged dollar quote");
	parse_err("MAP 'x' /* a /* b */ USING (select 1)", "unterminated /* comment", NULL, 9,
			  "unterminated nested comment");
	parse_err("MAP \"x USING (select 1)", "unterminated quoted identifier", NULL, 5,
			  "unterminated quoted identifier");
	parse_err("MAP 'x' USING (select (1)", "unterminated USING (...)", NULL, 15, "unterminated USING");
	parse_err("MAP 'x' USING (select 1 -- )", "unterminated USING (...)", NULL, 15,
			  "USING close paren inside line comment");
	parse_err("MAP 'x' USING ()", "USING query is empty", "", 15, "empty USING");
	parse_err("MAP 'x' USING ( /* nothing */ -- here\n )", "USING query is empty", NULL, 15,
			  "comment-only USING");
	parse_err("MAP E'\\u00' USING (select 1)", "invalid Unicode escape", NULL, 7, "short \\u escape");
	parse_err("MAP E'ab\\u0000' USING (select 1)", "invalid Unicode escape value", NULL, 9,
			  "\\u0000");
	parse_err("MAP E'\\uD800x' USING (select 1)", "invalid Unicode surrogate pair", NULL, 7,
			  "lone high surrogate");
	parse_err("MAP E'\\0' USING (select 1)", "null character not permitted", NULL, 7, "\\0 escape");
	parse_err("MAP '' USING (select 1)", "cascade name must not be empty", NULL, 5, "empty cascade");
	parse_err("MAP 'x' AS \"\" USING (select 1)", "zero-length delimited identifier", NULL, 12,
			  "empty quoted alias");
}

/* PARALLEL / BATCH counts and modifier rules. */
static void
test_modifiers(void)
{
	parse_err("MAP PARALLEL 0 'x' USING (select 1)", "PARALLEL must be between 1 and 100000", NULL, 14,
			  "PARALLEL 0");
	parse_err("MAP PARALLEL 100001 'x' USING (select 1)", "PARALLEL must be between 1 and 100000", NULL, 14,
			  "PARALLEL 100001");
	parse_err("MAP PARALLEL 99999999999999999999999 'x' USING (select 1)",
			  "PARALLEL must be between 1 and 100000", NULL, 14, "PARALLEL huge");
	parse_err("MAP PARALLEL -3 'x' USING (select 1)", "PARALLEL must be between 1 and 100000", NULL, 14,
			  "PARALLEL negative");
	parse_err("MAP PARALLEL 2.5 'x' USING (select 1)", "PARALLEL must be an integer", NULL, 14,
			  "PARALLEL decimal");
	parse_err("MAP BATCH 0 'x' USING (select 1)", "BATCH must be between 1 and 1000", NULL, 11, "BATCH 0");
	/* the same bound as WITH (batch = n), optlist.h */
	parse_err("MAP BATCH 1001 'x' USING (select 1)", "BATCH must be between 1 and 1000", NULL, 11, "BATCH 1001");
	parse_err("MAP PARALLEL 2 BATCH 3 PARALLEL 4 'x' USING (select 1)", "PARALLEL specified more than once",
			  NULL, 24, "PARALLEL twice");
	parse_err("MAP BATCH 2 BATCH 3 'x' USING (select 1)", "BATCH specified more than once", NULL, 13,
			  "BATCH twice");
	parse_err("MAP DISTINCT DISTINCT 'x' USING (select 1)", "DISTINCT specified more than once", NULL, 14,
			  "DISTINCT twice");
	parse_err_hint("MAP ASYNC 'x' USING (select 1)", "MAP does not accept ASYNC",
				   "Use WITH (async = true) to run a MAP statement in the background.", 5, "MAP ASYNC");
	parse_err("RUN ASYNC async 'x' USING (select 1)", "ASYNC specified more than once", NULL, 11,
			  "ASYNC twice");
	parse_err_hint("RUN PARALLEL 4 'x' USING (select 1)", "RUN does not accept PARALLEL",
				   "PARALLEL, BATCH and DISTINCT apply only to MAP.", 5, "RUN PARALLEL");
	parse_err("RUN ASYNC BATCH 4 'x' USING (select 1)", "RUN does not accept BATCH", NULL, 11, "RUN BATCH");
	parse_err("RUN distinct 'x' USING (select 1)", "RUN does not accept DISTINCT", NULL, 5, "RUN DISTINCT");
	parse_err("RUN 'x' AS (a int) USING (select 1)", "RUN does not accept a column list", NULL, 12,
			  "RUN AS (cols)");
	parse_err("RUN 'x' RETURNING (a int) USING (select 1)", "RUN does not accept a column list", NULL, 9,
			  "RUN RETURNING");
}

/* Column-list errors. */
static void
test_column_errors(void)
{
	parse_err("MAP 'x' AS (a, b text) USING (select 1)", "syntax error at or near \",\"",
			  "Expected a type for column \"a\".", 14, "missing type before comma");
	parse_err("MAP 'x' AS (a text, b) USING (select 1)", "syntax error at or near \")\"",
			  "Expected a type for column \"b\".", 22, "missing type before )");
	parse_err("MAP 'x' AS () USING (select 1)", "syntax error at or near \")\"",
			  "Expected a column name.", 13, "empty column list");
	parse_err("MAP 'x' AS (a text,) USING (select 1)", "syntax error at or near \")\"",
			  "Expected a column name.", 20, "trailing comma in column list");
	parse_err("MAP 'x' AS ('a' text) USING (select 1)", "syntax error at or near \"'a'\"",
			  "Expected a column name.", 13, "string as column name");
	parse_err("MAP 'x' AS (a text, B int, a date) USING (select 1)", "column \"a\" specified more than once",
			  "", 28, "duplicate column");
	parse_err("MAP 'x' AS (a text, A int) USING (select 1)", "column \"a\" specified more than once",
			  NULL, 21, "duplicate column differing in case");
	parse_err("MAP 'x' AS (a text USING (select 1)", "syntax error at or near \"USING\"",
			  "Expected \",\" or \")\" in the column list.", 20, "unclosed column list");
	parse_err("MAP 'x' AS (a numeric(10,2", "syntax error at end of statement",
			  "Expected \",\" or \")\" in the column list.", 27, "unclosed type parens");
	parse_err("MAP 'x' AS (a", "syntax error at end of statement",
			  "Expected a type for column \"a\".", 14, "column list ends after name");
}

/* Option errors. */
static void
test_option_errors(void)
{
	parse_err_hint("MAP 'x' USING (select 1) WITH (paralel = 4)", "unknown option \"paralel\"",
				   "Valid options are: parallel, limit, batch, cache, budget_dollars, on_error, model, "
				   "as_table, result_column, dedupe_by, infer_schema, timeout, max_retries, async.",
				   32, "unknown option");
	{
		RvStatement *s = parse_ok("MAP 'x' USING (select 1) WITH (batch = 5)", "batch option");

		if (s)
			CHECK(s->noptions == 1 && strcmp(s->options[0].name, "batch") == 0 &&
				  strcmp(s->options[0].value, "5") == 0, "batch option: fields");
		rv_statement_free(s);
	}
	parse_err("MAP 'caf\xc3\xa9' USING (select 1) WITH (bogus = 1)", "unknown option \"bogus\"", NULL, 35,
			  "unknown option after unicode");
	parse_err("MAP 'x' USING (select 1) WITH (limit = 1, Limit = 2)",
			  "option \"limit\" specified more than once", NULL, 43, "duplicate option");
	parse_err("MAP 'x' USING (select 1) WITH (\"Limit\" = 1)", "unknown option \"Limit\"", NULL, 32,
			  "quoted option name is case-sensitive");
}

/* Less common tokens: more escapes, exponents, a lone "$", lexing errors met while peeking. */
static void
test_tokens_more(void)
{
	RvStatement *s;

	s = parse_ok("MAP E'\\b\\f\\r\\u0041\\u20ac\\x4' USING (select 1e-3, 2E+5, $ x, a$ from t)",
				 "more escapes and tokens");
	if (s)
	{
		CHECK_STR(s->cascade, "\b\f\rA\xe2\x82\xac\x04", "\\b \\f \\r \\u0041 \\u20ac \\x4");
		CHECK_STR(s->query, "select 1e-3, 2E+5, $ x, a$ from t", "exponents and lone $ in query");
	}
	rv_statement_free(s);

	/* the "-" is not followed by a number: the lexing error is reported later */
	parse_err("MAP PARALLEL - $$x", "syntax error at or near \"-\"",
			  "Expected a cascade name in quotes.", 14, "minus before an unterminated dollar quote");
	parse_err("MAP 'x' AS (\"\" int) USING (select 1)", "zero-length delimited identifier", NULL, 13,
			  "empty quoted column name");
	parse_err("MAP 'x' USING (select 1) WITH (limit = \"\")", "zero-length delimited identifier", NULL, 40,
			  "empty quoted option value");
	parse_err("MAP 'x' USING (select 1) WITH (limit = 'a", "unterminated quoted string", NULL, 40,
			  "unterminated option value");
	parse_err("MAP 'x' AS (a \"int) USING (select 1)", "unterminated quoted identifier", NULL, 15,
			  "unterminated quoted type");
}

/* Miscellaneous API behaviour and long token text in messages. */
static void
test_api(void)
{
	RvError		err;
	RvStatement *s;
	char	   *big;
	size_t		k;

	s = rv_statement_parse("MAP 'x' USING (select 1)", NULL);
	CHECK(s != NULL, "NULL error record is accepted");
	rv_statement_free(s);
	CHECK(rv_statement_parse("bogus", NULL) == NULL, "failure with NULL error record");
	s = rv_statement_parse(NULL, &err);
	CHECK(s == NULL && err.set && strcmp(err.message, "statement must not be null") == 0,
		  "NULL statement text");
	rv_statement_free(NULL);

	/* a stale error record is cleared */
	err.set = true;
	s = rv_statement_parse("MAP 'x' USING (select 1)", &err);
	CHECK(s != NULL && !err.set, "error record cleared on success");
	rv_statement_free(s);

	/* a huge offending token is quoted, cut, in the message */
	big = malloc(5000);
	memcpy(big, "MAP 'x' USING (select 1) ", 25);
	for (k = 25; k < 4000; k++)
		big[k] = 'a';
	strcpy(big + 4000, " x");
	s = rv_statement_parse(big, &err);
	CHECK(s == NULL && strlen(err.message) < 300 &&
		  strncmp(err.message, "syntax error at or near \"aaaa", 29) == 0 &&
		  strcmp(err.message + strlen(err.message) - 4, "...\"") == 0, "long token cut in message");
	free(big);
}

/* Parse a malloc'd text and report the time taken (measured, not asserted). */
static RvStatement *
timed_parse(const char *text, RvError *err, const char *what)
{
	clock_t		t0 = clock();
	RvStatement *s = rv_statement_parse(text, err);

	printf("# %s: %zu bytes in %.1f ms\n", what, strlen(text),
		   (double) (clock() - t0) * 1000.0 / CLOCKS_PER_SEC);
	return s;
}

/* Large inputs: linear time, no recursion. */
static void
test_limits(void)
{
	size_t		n = 1024 * 1024;
	char	   *t = malloc(n * 8 + 64);
	RvError		err;
	RvStatement *s;
	size_t		k;
	size_t		off;

	/* a 1 MB query */
	off = (size_t) sprintf(t, "MAP 'x' USING (select '");
	for (k = 0; k < n; k++)
		t[off++] = (k % 7 == 0) ? ')' : 'q';
	off += (size_t) sprintf(t + off, "')");
	s = timed_parse(t, &err, "1 MB query");
	CHECK(s != NULL && strlen(s->query) == n + 9, "1 MB query parses");
	rv_statement_free(s);

	/* 500k nested parentheses */
	off = (size_t) sprintf(t, "MAP 'x' USING (");
	for (k = 0; k < n / 2; k++)
		t[off++] = '(';
	t[off++] = '1';
	for (k = 0; k < n / 2; k++)
		t[off++] = ')';
	t[off++] = ')';
	t[off] = '\0';
	s = timed_parse(t, &err, "deep parentheses");
	CHECK(s != NULL && strlen(s->query) == n + 1, "deeply nested parentheses");
	rv_statement_free(s);

	/* deeply nested comments, unterminated */
	off = (size_t) sprintf(t, "MAP 'x' ");
	for (k = 0; k < n / 2; k++)
	{
		t[off++] = '/';
		t[off++] = '*';
	}
	t[off] = '\0';
	s = timed_parse(t, &err, "nested comments");
	CHECK(s == NULL && strcmp(err.message, "unterminated /* comment") == 0 && err.position == 9,
		  "deeply nested unterminated comment");

	/* a dollar quote with a long tag and many near-miss delimiters */
	off = (size_t) sprintf(t, "MAP $");
	for (k = 0; k < 1000; k++)
		t[off++] = 'a';
	t[off++] = '$';
	for (k = 0; k < n / 1000; k++)
	{
		memset(t + off, 'a', 1000);
		t[off] = '$';
		off += 1000;
	}
	t[off] = '\0';
	s = timed_parse(t, &err, "dollar-quote near misses");
	CHECK(s == NULL && strcmp(err.message, "unterminated dollar-quoted string") == 0,
		  "long dollar tag with near misses");

	/* 100k columns with a duplicate at the end */
	off = (size_t) sprintf(t, "MAP 'x' AS (");
	for (k = 0; k < 100000; k++)
		off += (size_t) sprintf(t + off, "c%zu int, ", k);
	off += (size_t) sprintf(t + off, "c7 text) USING (select 1)");
	s = timed_parse(t, &err, "100k columns");
	CHECK(s == NULL && strcmp(err.message, "column \"c7\" specified more than once") == 0,
		  "duplicate found among 100k columns");
	t[off - strlen("c7 text) USING (select 1)")] = '\0';
	strcat(t, "last text) USING (select 1)");
	s = rv_statement_parse(t, &err);
	CHECK(s != NULL && s->ncolumns == 100001 &&
		  strcmp(s->columns[100000].name, "last") == 0, "100001 distinct columns");
	rv_statement_free(s);

	/* a long run of multibyte characters before an error position */
	off = (size_t) sprintf(t, "MAP '");
	for (k = 0; k < 100000; k++)
	{
		t[off++] = '\xc3';
		t[off++] = '\xa9';
	}
	off += (size_t) sprintf(t + off, "' USING (select 1) WITH (x = 1)");
	s = rv_statement_parse(t, &err);
	CHECK(s == NULL && err.position == 5 + 100000 + 25 + 1, "unicode position after 100k characters");
	free(t);
}

/*
 * Comments at the end of the USING query (issue 8 item 8): the query ends
 * with its last token, so no trailing comment can swallow what the query
 * is wrapped in; the seed's examples verbatim, with their comments.
 */
static void
test_using_comments(void)
{
	RvStatement *s;

	s = parse_ok("MAP 'x' USING (\n  SELECT 1 AS a\n  -- the last line is a comment\n)",
				 "USING ending with a line comment");
	if (s)
		CHECK_STR(s->query, "SELECT 1 AS a", "trailing line comment dropped");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (SELECT 1 AS a -- same line\n) WITH (limit = 5) -- after\n",
				 "USING with a line comment before the closing parenthesis");
	if (s)
		CHECK(strcmp(s->query, "SELECT 1 AS a") == 0 && s->noptions == 1,
			  "line comment before ): query and options");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (SELECT 1 AS a /* block */ -- line\n /* and */\n)",
				 "USING ending with mixed comments");
	if (s)
		CHECK_STR(s->query, "SELECT 1 AS a", "mixed trailing comments dropped");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (-- leading\nSELECT a -- the column\nFROM t -- the table ( not a paren\n"
				 "WHERE a = '--' /* ) */ -- end\n)",
				 "line comments inside USING");
	if (s)
		CHECK_STR(s->query, "-- leading\nSELECT a -- the column\nFROM t -- the table ( not a paren\n"
				  "WHERE a = '--'", "inner comments kept with their newlines");
	rv_statement_free(s);

	s = parse_ok("MAP 'x' USING (SELECT $$ -- not a comment $$ AS a -- but this is\n)",
				 "comment text inside a dollar quote");
	if (s)
		CHECK_STR(s->query, "SELECT $$ -- not a comment $$ AS a", "dollar quote kept whole");
	rv_statement_free(s);

	s = parse_ok("-- Only 3 concurrent calls to expensive/rate-limited endpoint\n"
				 "RVBBIT MAP PARALLEL 3 'cascades/gpt4_analysis.yaml' AS analysis\n"
				 "USING (\n"
				 "  SELECT * FROM high_value_customers LIMIT 50\n"
				 ");", "seed: conservative example");
	if (s)
		CHECK(s->parallel == 3 && strcmp(s->cascade, "cascades/gpt4_analysis.yaml") == 0 &&
			  strcmp(s->alias, "analysis") == 0 &&
			  strcmp(s->query, "SELECT * FROM high_value_customers LIMIT 50") == 0,
			  "seed: conservative example fields");
	rv_statement_free(s);

	s = parse_ok("-- Sequential (slow)\n"
				 "RVBBIT MAP 'traits/extract_brand.yaml' AS brand\n"
				 "USING (\n"
				 "  SELECT * FROM (VALUES\n"
				 "    ('Apple iPhone 15'),\n"
				 "    ('Samsung Galaxy S24'),\n"
				 "    ('Sony WH-1000XM5'),\n"
				 "    ('Google Pixel 8'),\n"
				 "    ('OnePlus 12')\n"
				 "  ) AS t(product_name)\n"
				 ");\n"
				 "\n"
				 "-- Parallel (5 concurrent - faster!)\n",
				 "seed: sequential example with comments before and after");
	if (s)
		CHECK(s->parallel == 0 && strcmp(s->alias, "brand") == 0 &&
			  strncmp(s->query, "SELECT * FROM (VALUES", 21) == 0 &&
			  strcmp(s->query + strlen(s->query) - 20, ") AS t(product_name)") == 0,
			  "seed: sequential example fields");
	rv_statement_free(s);

	s = parse_ok("RVBBIT MAP 'x' USING (SELECT a FROM t LIMIT 10)\n\n"
				 "-- Rewrites to row-by-row:\n", "seed: comment after the statement");
	rv_statement_free(s);

	s = parse_ok("RVBBIT MAP PARALLEL 3 'expensive' USING (\n"
				 "  -- OpenRouter limits: 200 req/min = ~3 req/sec\n"
				 "  SELECT 1\n"
				 "  -- trailing\n"
				 ")", "seed-style comments inside USING");
	if (s)
		CHECK_STR(s->query, "-- OpenRouter limits: 200 req/min = ~3 req/sec\n  SELECT 1",
				  "seed-style comments: query");
	rv_statement_free(s);
}

int
main(void)
{
	test_forms();
	test_cascade_forms();
	test_columns();
	test_using();
	test_using_comments();
	test_options();
	test_syntax_errors();
	test_lexical_errors();
	test_tokens_more();
	test_modifiers();
	test_column_errors();
	test_option_errors();
	test_api();
	test_limits();
	return unit_done("syntax");
}
