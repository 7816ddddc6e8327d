/*-------------------------------------------------------------------------
 *
 * gw_rewrite.c
 *	  The RVBBIT statement rewriter of rvbbit-gateway: a tokenizer over the
 *	  client's SQL text that splits it into statements the way the server's
 *	  lexer does, and wraps only the statements that start with the keyword
 *	  RVBBIT into SELECT * FROM rvbbit.sql($tag$...$tag$).
 *
 * Forms rewritten (keywords case-insensitive, whitespace and comments
 * anywhere between them; the full list at rvbbit_start):
 *	  RVBBIT ...                           -> SELECT * FROM rvbbit.sql($t$RVBBIT ...$t$)
 *	  EXPLAIN ... RVBBIT, CREATE TABLE/VIEW ... AS RVBBIT,
 *	  DECLARE ... CURSOR ... FOR RVBBIT, PREPARE name AS RVBBIT and
 *	  COPY (RVBBIT ...) TO ...
 * In all but the first only the RVBBIT part is wrapped.  Every byte outside the
 * wrapped statements, and every statement of another form, is left as it
 * was: a text with no RVBBIT statement comes back unchanged.
 *
 * The tokenizer knows what the server's lexer knows about where a
 * statement ends: single-quoted strings (with backslash escapes in E''
 * strings, and in plain strings when standard_conforming_strings is off),
 * U&'' and B''/X''/N'' strings, dollar quotes, quoted identifiers,
 * -- comments and nested block comments, and the BEGIN ... END bodies of
 * CREATE FUNCTION/PROCEDURE (as psql tracks them), whose semicolons do not
 * end the statement.  It assumes an encoding in which an ASCII byte is
 * always an ASCII character; the caller does not rewrite under the client
 * encodings where that is false (gw_encoding_is_unsafe).
 *
 * Pure code: no sockets, no globals; memory is malloc'd.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"
#include "../rvtext.h"

typedef enum
{
	TK_EOF,
	TK_IDENT,					/* unquoted identifier or keyword */
	TK_QIDENT,					/* "quoted" identifier */
	TK_STRING,					/* any string constant, dollar quotes too */
	TK_NUMBER,
	TK_PARAM,					/* $n */
	TK_SEMI,
	TK_LPAREN,
	TK_RPAREN,
	TK_DOT,
	TK_OTHER					/* operators, commas, anything else */
} TokKind;

typedef struct Tok
{
	TokKind		kind;
	size_t		start;
	size_t		end;
} Tok;

typedef struct Lexer
{
	const char *s;
	size_t		n;
	size_t		pos;
	bool		std_strings;
} Lexer;

/* Skip whitespace and comments (nested block comments; unterminated: to the end). */
static void
lex_skip(Lexer *lx)
{
	const char *s = lx->s;
	size_t		n = lx->n;
	size_t		i = lx->pos;

	for (;;)
	{
		if (i < n && rv_is_space(s[i]))
			i++;
		else if (i + 1 < n && s[i] == '-' && s[i + 1] == '-')
		{
			while (i < n && s[i] != '\n' && s[i] != '\r')
				i++;
		}
		else if (i + 1 < n && s[i] == '/' && s[i + 1] == '*')
		{
			i = rv_sql_comment_end(s, n, i);
			if (i == (size_t) -1)
				i = n;
		}
		else
			break;
	}
	lx->pos = i;
}

/*
 * Scan a quoted run starting at i (the opening quote): the quote char is
 * doubled to escape it; with backslashes, a backslash escapes the next
 * byte.  Returns the position after the closing quote (n when unterminated).
 */
static size_t
scan_quoted(const char *s, size_t n, size_t i, char q, bool backslashes)
{
	i++;
	while (i < n)
	{
		if (backslashes && s[i] == '\\')
		{
			i += 2;
			continue;
		}
		if (s[i] == q)
		{
			if (i + 1 < n && s[i + 1] == q)
			{
				i += 2;
				continue;
			}
			return i + 1;
		}
		i++;
	}
	return n;
}

/*
 * Length of a dollar-quote delimiter ($tag$ or $$) at i, or 0 when the '$'
 * at i does not start one.
 */
static size_t
dollar_tag_len(const char *s, size_t n, size_t i)
{
	size_t		j = i + 1;

	if (j < n && s[j] == '$')
		return 2;
	if (j >= n || !rv_is_ident_start(s[j]))
		return 0;
	while (j < n && rv_is_ident_char(s[j]) && s[j] != '$')
		j++;
	if (j < n && s[j] == '$')
		return j - i + 1;
	return 0;
}

/* The next token after whitespace and comments. */
static Tok
lex_next(Lexer *lx)
{
	const char *s = lx->s;
	size_t		n = lx->n;
	size_t		i;
	unsigned char c;
	Tok			t;

	lex_skip(lx);
	i = lx->pos;
	t.start = i;
	t.kind = TK_OTHER;
	if (i >= n)
	{
		t.kind = TK_EOF;
		t.end = n;
		return t;
	}
	c = (unsigned char) s[i];

	/* string prefixes: E'', U&'', U&"", B'', X'', N'' */
	if ((c == 'e' || c == 'E') && i + 1 < n && s[i + 1] == '\'')
	{
		t.kind = TK_STRING;
		t.end = scan_quoted(s, n, i + 1, '\'', true);
	}
	else if ((c == 'u' || c == 'U') && i + 2 < n && s[i + 1] == '&' &&
			 (s[i + 2] == '\'' || s[i + 2] == '"'))
	{
		t.kind = s[i + 2] == '\'' ? TK_STRING : TK_QIDENT;
		t.end = scan_quoted(s, n, i + 2, s[i + 2], false);
	}
	else if ((c == 'b' || c == 'B' || c == 'x' || c == 'X') &&
			 i + 1 < n && s[i + 1] == '\'')
	{
		t.kind = TK_STRING;
		t.end = scan_quoted(s, n, i + 1, '\'', false);
	}
	else if ((c == 'n' || c == 'N') && i + 1 < n && s[i + 1] == '\'')
	{
		t.kind = TK_STRING;
		t.end = scan_quoted(s, n, i + 1, '\'', !lx->std_strings);
	}
	else if (c == '\'')
	{
		t.kind = TK_STRING;
		t.end = scan_quoted(s, n, i, '\'', !lx->std_strings);
	}
	else if (c == '"')
	{
		t.kind = TK_QIDENT;
		t.end = scan_quoted(s, n, i, '"', false);
	}
	else if (c == '$')
	{
		size_t		tl = dollar_tag_len(s, n, i);

		if (tl > 0)
		{
			size_t		j = i + tl;

			t.kind = TK_STRING;
			t.end = n;
			for (; j + tl <= n; j++)
			{
				if (s[j] == '$' && memcmp(s + j, s + i, tl) == 0)
				{
					t.end = j + tl;
					break;
				}
			}
		}
		else if (i + 1 < n && rv_is_digit(s[i + 1]))
		{
			size_t		j = i + 1;

			while (j < n && rv_is_digit(s[j]))
				j++;
			t.kind = TK_PARAM;
			t.end = j;
		}
		else
			t.end = i + 1;
	}
	else if (rv_is_ident_start(c))
	{
		size_t		j = i + 1;

		while (j < n && rv_is_ident_char(s[j]))
			j++;
		t.kind = TK_IDENT;
		t.end = j;
	}
	else if (rv_is_digit(c) || (c == '.' && i + 1 < n && rv_is_digit(s[i + 1])))
	{
		size_t		j = i;

		while (j < n && rv_is_digit(s[j]))
			j++;
		if (j < n && s[j] == '.')
		{
			j++;
			while (j < n && rv_is_digit(s[j]))
				j++;
		}
		if (j < n && (s[j] == 'e' || s[j] == 'E'))
		{
			size_t		k = j + 1;

			if (k < n && (s[k] == '+' || s[k] == '-'))
				k++;
			if (k < n && rv_is_digit(s[k]))
			{
				j = k;
				while (j < n && rv_is_digit(s[j]))
					j++;
			}
		}
		t.kind = TK_NUMBER;
		t.end = j;
	}
	else
	{
		t.end = i + 1;
		if (c == ';')
			t.kind = TK_SEMI;
		else if (c == '(')
			t.kind = TK_LPAREN;
		else if (c == ')')
			t.kind = TK_RPAREN;
		else if (c == '.')
			t.kind = TK_DOT;
	}
	lx->pos = t.end;
	return t;
}

/* Is the token the (unquoted, case-insensitive) keyword kw? */
static bool
tok_is(const Lexer *lx, const Tok *t, const char *kw)
{
	size_t		l = strlen(kw);

	return t->kind == TK_IDENT && t->end - t->start == l &&
		strncasecmp(lx->s + t->start, kw, l) == 0;
}

/*
 * Skip a balanced parenthesized group whose '(' was just read; false when
 * the text ends (or a ';' comes) first.
 */
static bool
skip_parens(Lexer *lx)
{
	int			depth = 1;

	for (;;)
	{
		Tok			t = lex_next(lx);

		if (t.kind == TK_EOF || t.kind == TK_SEMI)
			return false;
		if (t.kind == TK_LPAREN)
			depth++;
		else if (t.kind == TK_RPAREN && --depth == 0)
			return true;
	}
}

/*
 * After the '(' of COPY ( ... ): when the next token is the keyword RVBBIT,
 * return its start and set *end to the end of the last token before the
 * matching ')' (comments before that ')' stay outside the wrapper); else
 * (size_t) -1.  A text that ends, or a ';' outside parentheses, before the
 * matching ')' is not rewritten (the server reports the syntax error).
 */
static size_t
rvbbit_in_parens(Lexer *lx, size_t *end)
{
	Tok			t = lex_next(lx);
	size_t		start;
	size_t		last;
	int			depth = 1;

	if (!tok_is(lx, &t, "rvbbit"))
		return (size_t) -1;
	start = t.start;
	last = t.end;
	for (;;)
	{
		t = lex_next(lx);
		if (t.kind == TK_EOF || (t.kind == TK_SEMI && depth == 1))
			return (size_t) -1;
		if (t.kind == TK_LPAREN)
			depth++;
		else if (t.kind == TK_RPAREN && --depth == 0)
			break;
		last = t.end;
	}
	*end = last;
	return start;
}

/* The start of the next token when it is RVBBIT, else (size_t) -1. */
static size_t
rvbbit_next(Lexer *lx)
{
	Tok			t = lex_next(lx);

	return tok_is(lx, &t, "rvbbit") ? t.start : (size_t) -1;
}

/*
 * After CREATE: [OR REPLACE] [TEMP|TEMPORARY|LOCAL TEMP|GLOBAL TEMP|
 * UNLOGGED] {TABLE | VIEW} ... AS RVBBIT; see rvbbit_start().
 */
static size_t
rvbbit_after_create(Lexer *lx)
{
	Tok			t = lex_next(lx);
	int			depth = 0;

	if (tok_is(lx, &t, "or"))
	{
		t = lex_next(lx);
		if (!tok_is(lx, &t, "replace"))
			return (size_t) -1;
		t = lex_next(lx);
	}
	if (tok_is(lx, &t, "local") || tok_is(lx, &t, "global"))
	{
		t = lex_next(lx);
		if (!tok_is(lx, &t, "temp") && !tok_is(lx, &t, "temporary"))
			return (size_t) -1;
		t = lex_next(lx);
	}
	else if (tok_is(lx, &t, "temp") || tok_is(lx, &t, "temporary") ||
			 tok_is(lx, &t, "unlogged"))
		t = lex_next(lx);
	/*
	 * Not MATERIALIZED VIEW: the server's rewrite of rvbbit.sql() does not
	 * reach the rule a materialized view stores.
	 */
	if (!tok_is(lx, &t, "table") && !tok_is(lx, &t, "view"))
		return (size_t) -1;

	/*
	 * Then the name, a column list, WITH (...), USING, TABLESPACE, ON
	 * COMMIT ...: the first AS outside parentheses starts the query.
	 */
	for (;;)
	{
		t = lex_next(lx);
		if (t.kind == TK_EOF || t.kind == TK_SEMI)
			return (size_t) -1;
		if (t.kind == TK_LPAREN)
			depth++;
		else if (t.kind == TK_RPAREN)
			depth--;
		else if (depth == 0 && tok_is(lx, &t, "as"))
			break;
	}
	return rvbbit_next(lx);
}

/*
 * After DECLARE: name [BINARY|ASENSITIVE|INSENSITIVE|[NO] SCROLL]...
 * CURSOR [{WITH|WITHOUT} HOLD] FOR RVBBIT; see rvbbit_start().
 */
static size_t
rvbbit_after_declare(Lexer *lx)
{
	Tok			t = lex_next(lx);

	if (t.kind != TK_IDENT && t.kind != TK_QIDENT)
		return (size_t) -1;
	for (;;)
	{
		t = lex_next(lx);
		if (tok_is(lx, &t, "no"))
		{
			t = lex_next(lx);
			if (!tok_is(lx, &t, "scroll"))
				return (size_t) -1;
		}
		else if (!tok_is(lx, &t, "binary") && !tok_is(lx, &t, "scroll") &&
				 !tok_is(lx, &t, "insensitive") &&
				 !tok_is(lx, &t, "asensitive"))
			break;
	}
	if (!tok_is(lx, &t, "cursor"))
		return (size_t) -1;
	t = lex_next(lx);
	if (tok_is(lx, &t, "with") || tok_is(lx, &t, "without"))
	{
		t = lex_next(lx);
		if (!tok_is(lx, &t, "hold"))
			return (size_t) -1;
		t = lex_next(lx);
	}
	if (!tok_is(lx, &t, "for"))
		return (size_t) -1;
	return rvbbit_next(lx);
}

/* After PREPARE: name [(types)] AS RVBBIT; see rvbbit_start(). */
static size_t
rvbbit_after_prepare(Lexer *lx)
{
	Tok			t = lex_next(lx);

	if (t.kind != TK_IDENT && t.kind != TK_QIDENT)
		return (size_t) -1;
	t = lex_next(lx);
	if (t.kind == TK_LPAREN)
	{
		if (!skip_parens(lx))
			return (size_t) -1;
		t = lex_next(lx);
	}
	if (!tok_is(lx, &t, "as"))
		return (size_t) -1;
	return rvbbit_next(lx);
}

/*
 * Given the first token of a statement, return the start of the RVBBIT
 * keyword when the statement is one of the rewritten forms, else
 * (size_t) -1.  *end is left alone when the RVBBIT part runs to the end of
 * the statement and set when it ends earlier (inside COPY's parentheses).
 * Reads tokens from a copy of the lexer.  nested: inside EXPLAIN, where
 * only RVBBIT, CREATE ... AS and DECLARE may follow.
 *
 * The forms are the server's (gram.y), with every option it accepts
 * before the query:
 *	  RVBBIT ...
 *	  EXPLAIN [ANALYZE] [VERBOSE] | EXPLAIN (options)   followed by a form
 *	  CREATE [OR REPLACE] [TEMP|TEMPORARY|LOCAL TEMP|GLOBAL TEMP|UNLOGGED]
 *		  {TABLE | VIEW} ... AS RVBBIT ...
 *	  DECLARE name [BINARY|ASENSITIVE|INSENSITIVE|[NO] SCROLL]... CURSOR
 *		  [{WITH|WITHOUT} HOLD] FOR RVBBIT ...
 *	  PREPARE name [(types)] AS RVBBIT ...
 *	  COPY (RVBBIT ...) TO ...
 */
static size_t
rvbbit_start(const Lexer *lx0, Tok first, size_t *end, bool nested)
{
	Lexer		lx = *lx0;
	Tok			t = first;

	if (tok_is(&lx, &t, "rvbbit"))
		return t.start;
	if (tok_is(&lx, &t, "explain") && !nested)
	{
		t = lex_next(&lx);
		if (t.kind == TK_LPAREN)
		{
			if (!skip_parens(&lx))
				return (size_t) -1;
			t = lex_next(&lx);
		}
		else
		{
			if (tok_is(&lx, &t, "analyze") || tok_is(&lx, &t, "analyse"))
				t = lex_next(&lx);
			if (tok_is(&lx, &t, "verbose"))
				t = lex_next(&lx);
		}
		return rvbbit_start(&lx, t, end, true);
	}
	if (tok_is(&lx, &t, "create"))
		return rvbbit_after_create(&lx);
	if (tok_is(&lx, &t, "declare"))
		return rvbbit_after_declare(&lx);
	if (nested)
		return (size_t) -1;
	if (tok_is(&lx, &t, "prepare"))
		return rvbbit_after_prepare(&lx);
	if (tok_is(&lx, &t, "copy"))
	{
		t = lex_next(&lx);
		if (t.kind != TK_LPAREN)
			return (size_t) -1;
		return rvbbit_in_parens(&lx, end);
	}
	return (size_t) -1;
}

/* Does needle (nlen bytes) occur in hay (hlen bytes)? */
static bool
contains(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	size_t		i;

	if (nlen > hlen)
		return false;
	for (i = 0; i + nlen <= hlen; i++)
		if (hay[i] == needle[0] && memcmp(hay + i, needle, nlen) == 0)
			return true;
	return false;
}

/*
 * Pick a dollar-quote tag for body: "$rvbbit$", else "$rvbbit<n>$" with n
 * above every such number in body, such that the first occurrence of the
 * tag in body + tag is the closing one.
 */
static bool
tag_clashes(const char *body, size_t len, const char *tag)
{
	size_t		tl = strlen(tag);
	size_t		tail;

	if (contains(body, len, tag, tl))
		return true;
	/* an occurrence straddling the end of body and the closing tag */
	for (tail = 1; tail < tl && tail <= len; tail++)
		if (memcmp(body + len - tail, tag, tail) == 0 &&
			memcmp(tag + tail, tag, tl - tail) == 0)
			return true;
	return false;
}

static void
pick_tag(const char *body, size_t len, char *tag, size_t tagsize)
{
	unsigned long next = 1;
	unsigned long k;
	size_t		i;

	snprintf(tag, tagsize, "$rvbbit$");
	if (!tag_clashes(body, len, tag))
		return;

	/*
	 * In one pass, the smallest number above every $rvbbit<digits> in the
	 * text, so that a text full of tags costs two passes, not one per tag.
	 */
	for (i = 0; i + 7 <= len; i++)
	{
		if (body[i] == '$' && memcmp(body + i, "$rvbbit", 7) == 0)
		{
			size_t		j = i + 7;

			k = 0;
			while (j < len && rv_is_digit(body[j]) && k < 100000000UL)
				k = k * 10 + (unsigned long) (body[j++] - '0');
			if (k < 100000000UL && k + 1 > next)
				next = k + 1;
		}
	}
	for (k = next;; k++)
	{
		snprintf(tag, tagsize, "$rvbbit%lu$", k);
		if (!tag_clashes(body, len, tag))
			return;
	}
}

/* Append helper that remembers a failure. */
static void
app(GwBuf *b, bool *ok, const void *p, size_t n)
{
	if (*ok && !gw_buf_append(b, p, n))
		*ok = false;
}

/*
 * Does the statement [first.start, end) possibly change client_encoding or
 * standard_conforming_strings?  Such a statement makes the caller stop
 * rewriting until the server has answered it (its ParameterStatus).
 */
static bool
stmt_is_risky(const Lexer *lx0, Tok first, size_t end)
{
	const char *s = lx0->s + first.start;
	size_t		len = end - first.start;
	static const char *const names[] = {"client_encoding",
	"standard_conforming_strings"};
	size_t		i;
	size_t		k;

	if (tok_is(lx0, &first, "reset") || tok_is(lx0, &first, "discard"))
		return true;
	if (tok_is(lx0, &first, "set"))
	{
		Lexer		lx = *lx0;
		Tok			t = lex_next(&lx);

		if (tok_is(&lx, &t, "session") || tok_is(&lx, &t, "local"))
			t = lex_next(&lx);
		if (tok_is(&lx, &t, "names"))
			return true;
	}
	for (k = 0; k < 2; k++)
	{
		size_t		nl = strlen(names[k]);

		for (i = 0; i + nl <= len; i++)
			if (strncasecmp(s + i, names[k], nl) == 0)
				return true;
	}
	return false;
}

/*
 * Rewrite the RVBBIT statements of a SQL text (len bytes, no NUL needed).
 * With do_rewrite false nothing is rewritten, only the flags computed.
 * Returns a malloc'd NUL-terminated copy with the statements wrapped and
 * sets *out_len, or NULL when nothing was rewritten (or out of memory:
 * then *out_len is (size_t) -1).  *flags gets GW_RW_REWROTE and
 * GW_RW_RISKY (a statement that may change the lexer's settings).
 */
char *
gw_rewrite_text(const char *text, size_t len, bool std_strings,
				bool do_rewrite, size_t *out_len, int *flags)
{
	return gw_rewrite_text_map(text, len, std_strings, do_rewrite, out_len,
							   flags, NULL, GW_ENC_OTHER);
}

/* Characters in s[0, n) (GW_ENC_UTF8: bytes that start a character). */
static uint32_t
count_chars(const char *s, size_t n, int enc_kind)
{
	uint32_t	c = 0;
	size_t		i;

	if (enc_kind != GW_ENC_UTF8)
		return (uint32_t) n;
	for (i = 0; i < n; i++)
		if (((unsigned char) s[i] & 0xC0) != 0x80)
			c++;
	return c;
}

/* Add a segment to map (a no-op without a map or once it failed). */
static void
map_add(GwPosMap *map, bool *ok, uint32_t rw, uint32_t orig, uint32_t len,
		bool inserted)
{
	if (map == NULL || map->drop || len == 0)
		return;
	if (map->nsegs == map->cap)
	{
		int			ncap = map->cap ? map->cap * 2 : 8;
		GwSeg	   *n = realloc(map->segs, sizeof(GwSeg) * (size_t) ncap);

		if (n == NULL)
		{
			*ok = false;
			return;
		}
		map->segs = n;
		map->cap = ncap;
	}
	map->segs[map->nsegs].rw = rw;
	map->segs[map->nsegs].orig = orig;
	map->segs[map->nsegs].len = len;
	map->segs[map->nsegs].inserted = inserted;
	map->nsegs++;
}

void
gw_posmap_free(GwPosMap *map)
{
	free(map->segs);
	memset(map, 0, sizeof(*map));
}

/*
 * Lex to the end of the statement that starts with first, as the server's
 * lexer and psql do: at a semicolon outside the BEGIN ... END of a CREATE
 * FUNCTION or PROCEDURE body, or at the end of the text.  Returns the end
 * of the statement's last token; *stop is the token that ended it (TK_SEMI
 * or TK_EOF).
 */
static size_t
stmt_end(Lexer *lx, Tok first, Tok *stop)
{
	size_t		last_end = first.end;
	Tok			t = first;
	int			begin_depth = 0;
	int			nident = 0;
	char		idents[4] = {0, 0, 0, 0};

	for (;;)
	{
		if (t.kind == TK_IDENT)
		{
			char		c0 = lx->s[t.start] | 0x20;

			if (tok_is(lx, &t, "begin") || tok_is(lx, &t, "case"))
			{
				if (idents[0] == 'c' &&
					(idents[1] == 'f' || idents[1] == 'p' ||
					 (idents[1] == 'o' && idents[2] == 'r' &&
					  (idents[3] == 'f' || idents[3] == 'p'))))
					begin_depth++;
			}
			else if (tok_is(lx, &t, "end"))
			{
				if (begin_depth > 0)
					begin_depth--;
			}
			if (nident < 4)
				idents[nident] = c0;
			nident++;
		}
		last_end = t.end;
		t = lex_next(lx);
		if (t.kind == TK_EOF)
			break;
		if (t.kind == TK_SEMI && begin_depth == 0)
			break;
	}
	*stop = t;
	return last_end;
}

/* the rewritten text being built, and its position map */
typedef struct RwOut
{
	GwBuf		out;
	bool		ok;				/* false once out of memory */
	size_t		copied;			/* text[0, copied) is in out */
	uint32_t	rwc;			/* characters in out */
	uint32_t	origc;			/* characters in text[0, copied) */
	GwPosMap   *map;			/* NULL, or the map to fill */
	int			enc_kind;
} RwOut;

/*
 * Copy the text up to rv, then SELECT * FROM rvbbit.sql($tag$...$tag$)
 * around text[rv, rv_end), mapping the inserted characters to the start
 * of the statement (stmt_start) and the copied ones to where they were.
 */
static void
emit_rewrite(RwOut *o, const char *text, size_t stmt_start, size_t rv, size_t rv_end)
{
	static const char head[] = "SELECT * FROM rvbbit.sql(";
	char		tag[32];

	pick_tag(text + rv, rv_end - rv, tag, sizeof(tag));
	app(&o->out, &o->ok, text + o->copied, rv - o->copied);
	app(&o->out, &o->ok, head, sizeof(head) - 1);
	app(&o->out, &o->ok, tag, strlen(tag));
	app(&o->out, &o->ok, text + rv, rv_end - rv);
	app(&o->out, &o->ok, tag, strlen(tag));
	app(&o->out, &o->ok, ")", 1);
	if (o->map != NULL && !o->map->drop)
	{
		uint32_t	before = count_chars(text + o->copied, rv - o->copied, o->enc_kind);
		uint32_t	stmt = o->origc + count_chars(text + o->copied,
												  stmt_start - o->copied, o->enc_kind);
		uint32_t	body = count_chars(text + rv, rv_end - rv, o->enc_kind);
		uint32_t	taglen = (uint32_t) strlen(tag);

		map_add(o->map, &o->ok, o->rwc, o->origc, before, false);
		o->rwc += before;
		o->origc += before;
		map_add(o->map, &o->ok, o->rwc, stmt, (uint32_t) (sizeof(head) - 1) + taglen, true);
		o->rwc += (uint32_t) (sizeof(head) - 1) + taglen;
		map_add(o->map, &o->ok, o->rwc, o->origc, body, false);
		o->rwc += body;
		o->origc += body;
		map_add(o->map, &o->ok, o->rwc, stmt, taglen + 1, true);
		o->rwc += taglen + 1;
	}
	o->copied = rv_end;
}

/*
 * As gw_rewrite_text; when map is given, also fill it (see GwPosMap) for a
 * text that was rewritten: positions counted as enc_kind says, or
 * map->drop for GW_ENC_OTHER.
 */
char *
gw_rewrite_text_map(const char *text, size_t len, bool std_strings,
					bool do_rewrite, size_t *out_len, int *flags,
					GwPosMap *map, int enc_kind)
{
	Lexer		lx;
	RwOut		o;

	memset(&o, 0, sizeof(o));
	o.ok = true;
	o.map = map;
	o.enc_kind = enc_kind;
	if (map != NULL)
	{
		memset(map, 0, sizeof(*map));
		map->drop = enc_kind == GW_ENC_OTHER;
	}

	*flags = 0;
	*out_len = 0;
	lx.s = text;
	lx.n = len;
	lx.pos = 0;
	lx.std_strings = std_strings;

	for (;;)
	{
		Tok			first = lex_next(&lx);
		Tok			stop;
		size_t		last_end;
		size_t		rv;
		size_t		rv_end;
		Lexer		at_first;

		if (first.kind == TK_EOF)
			break;
		if (first.kind == TK_SEMI)
			continue;
		at_first = lx;
		last_end = stmt_end(&lx, first, &stop);

		if (stmt_is_risky(&at_first, first, last_end))
			*flags |= GW_RW_RISKY;

		rv = (size_t) -1;
		rv_end = last_end;
		if (do_rewrite)
			rv = rvbbit_start(&at_first, first, &rv_end, false);
		if (rv != (size_t) -1)
		{
			emit_rewrite(&o, text, first.start, rv, rv_end);
			*flags |= GW_RW_REWROTE;
		}
		if (stop.kind == TK_EOF)
			break;
	}

	if (!(*flags & GW_RW_REWROTE))
	{
		gw_buf_free(&o.out);
		if (map != NULL)
			gw_posmap_free(map);
		return NULL;
	}
	app(&o.out, &o.ok, text + o.copied, len - o.copied);
	app(&o.out, &o.ok, "", 1);
	if (map != NULL && !map->drop)
	{
		uint32_t	tail = count_chars(text + o.copied, len - o.copied, enc_kind);

		map_add(map, &o.ok, o.rwc, o.origc, tail, false);
		map->rw_total = o.rwc + tail;
		map->orig_total = o.origc + tail;
	}
	if (!o.ok)
	{
		gw_buf_free(&o.out);
		if (map != NULL)
			gw_posmap_free(map);
		*out_len = (size_t) -1;
		return NULL;
	}
	*out_len = o.out.len - 1;
	return o.out.data;
}

/*
 * Append a client message to out, rewritten when it is a Query ('Q') or
 * Parse ('P') holding RVBBIT statements and do_rewrite is set; any other
 * message, a malformed one (the server will report it), or one with
 * nothing to rewrite is appended byte for byte.  Returns the flags of
 * gw_rewrite_text, or -1 when out of memory.
 */
int
gw_rewrite_message(char type, const char *body, uint32_t len,
				   bool std_strings, bool do_rewrite, GwBuf *out)
{
	return gw_rewrite_message_map(type, body, len, std_strings, do_rewrite,
								  out, NULL, GW_ENC_OTHER);
}

/*
 * As gw_rewrite_message; when the message was rewritten (GW_RW_REWROTE in
 * the result) and map is given, map is filled as by gw_rewrite_text_map;
 * otherwise it is left empty.
 */
int
gw_rewrite_message_map(char type, const char *body, uint32_t len,
					   bool std_strings, bool do_rewrite, GwBuf *out,
					   GwPosMap *map, int enc_kind)
{
	const char *query;
	size_t		qlen;
	const char *rest = NULL;	/* what follows the query's NUL */
	size_t		rest_len = 0;
	const char *name = NULL;
	size_t		name_len = 0;
	char	   *nq;
	size_t		nlen;
	int			flags = 0;
	bool		ok = true;
	const char *nul;

	if (map != NULL)
		memset(map, 0, sizeof(*map));
	if (type == 'Q')
	{
		nul = len > 0 ? memchr(body, '\0', len) : NULL;
		if (nul == NULL || (size_t) (nul - body) != len - 1)
			goto verbatim;
		query = body;
		qlen = len - 1;
	}
	else if (type == 'P')
	{
		const char *q;
		uint32_t	nparams;

		nul = len > 0 ? memchr(body, '\0', len) : NULL;
		if (nul == NULL)
			goto verbatim;
		name = body;
		name_len = nul - body + 1;
		q = nul + 1;
		nul = memchr(q, '\0', len - name_len);
		if (nul == NULL)
			goto verbatim;
		query = q;
		qlen = nul - q;
		rest = nul + 1;
		rest_len = len - name_len - qlen - 1;
		if (rest_len < 2)
			goto verbatim;
		nparams = ((unsigned char) rest[0] << 8) | (unsigned char) rest[1];
		if (rest_len != 2 + 4 * (size_t) nparams)
			goto verbatim;
	}
	else
		goto verbatim;

	nq = gw_rewrite_text_map(query, qlen, std_strings, do_rewrite, &nlen, &flags,
							 map, enc_kind);
	if (nq == NULL)
	{
		if (nlen == (size_t) -1)
			return -1;
		goto verbatim;
	}
	if (nlen + 1 + name_len + rest_len > GW_MAX_MESSAGE - 4)
	{
		/* too long for the server: let it see the original */
		free(nq);
		if (map != NULL)
			gw_posmap_free(map);
		flags &= ~GW_RW_REWROTE;
		goto verbatim;
	}
	if (!gw_frame_append_header(out, type, (uint32_t) (name_len + nlen + 1 + rest_len)))
		ok = false;
	app(out, &ok, name, name_len);
	app(out, &ok, nq, nlen + 1);
	app(out, &ok, rest, rest_len);
	free(nq);
	return ok ? flags : -1;

verbatim:
	if (!gw_frame_append_header(out, type, len))
		return -1;
	app(out, &ok, body, len);
	return ok ? flags : -1;
}

/*
 * Client encodings in which the second byte of a character can be an
 * ASCII quote or backslash: the tokenizer cannot split their text, so the
 * gateway rewrites nothing under them.  Names as the server reports them.
 */
bool
gw_encoding_is_unsafe(const char *name)
{
	static const char *const unsafe[] = {
		"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "GB18030", "UHC", "JOHAB",
		"WIN932", "WIN936", "WIN949", "WIN950", "MSKANJI", "SHIFTJIS",
		NULL
	};
	int			i;

	for (i = 0; unsafe[i]; i++)
		if (strcasecmp(name, unsafe[i]) == 0)
			return true;
	return false;
}

/*
 * How the characters of a client encoding are counted for error positions
 * (names as the server reports them; the server counts characters, which a
 * conversion to the server encoding does not change).
 */
int
gw_encoding_kind(const char *name)
{
	static const char *const multi[] = {
		"EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004",
		"MULE_INTERNAL", NULL
	};
	int			i;

	if (strcasecmp(name, "UTF8") == 0 || strcasecmp(name, "UNICODE") == 0)
		return GW_ENC_UTF8;
	if (gw_encoding_is_unsafe(name))
		return GW_ENC_OTHER;
	for (i = 0; multi[i]; i++)
		if (strcasecmp(name, multi[i]) == 0)
			return GW_ENC_OTHER;
	return GW_ENC_SINGLE;		/* SQL_ASCII, LATIN*, WIN125*, KOI8*, ISO_8859_* */
}

/*
 * The 1-based character position pos of the rewritten text as a position
 * of the original, or 0 when map->drop (the field should be left out).  A
 * position in inserted text is the start of its statement; one past the
 * end (the server's "at end of input") is one past the original's end.
 */
long
gw_map_position(const GwPosMap *map, long pos)
{
	long		c = pos - 1;
	int			lo = 0;
	int			hi;

	if (map->drop)
		return 0;
	if (map->nsegs == 0 || pos < 1)
		return pos;
	if (c >= (long) map->rw_total)
		return (long) map->orig_total + 1;
	hi = map->nsegs - 1;
	while (lo < hi)				/* the last segment starting at or before c */
	{
		int			mid = (lo + hi + 1) / 2;

		if ((long) map->segs[mid].rw <= c)
			lo = mid;
		else
			hi = mid - 1;
	}
	if (map->segs[lo].inserted)
		return (long) map->segs[lo].orig + 1;
	return (long) map->segs[lo].orig + (c - (long) map->segs[lo].rw) + 1;
}

/*
 * Append to out the body of an ErrorResponse or NoticeResponse (len bytes)
 * with its 'P' field translated through map (or left out when map->drop or
 * the field is not a number); *out_len gets the new body's length.  A body
 * that is not a well-formed list of fields is appended unchanged.  Returns
 * false when out of memory.
 */
bool
gw_translate_error(const char *body, uint32_t len, const GwPosMap *map,
				   GwBuf *out, uint32_t *out_len)
{
	size_t		start = out->len;
	size_t		i = 0;
	bool		ok = true;

	/* well-formed: fields "<code><text>\0", then a terminating \0 */
	while (i < len && body[i] != '\0')
	{
		const char *nul = memchr(body + i + 1, '\0', len - i - 1);

		if (i + 1 >= len || nul == NULL)
			goto verbatim;
		i = (size_t) (nul - body) + 1;
	}
	if (i != len - 1 || len == 0)
		goto verbatim;

	i = 0;
	while (body[i] != '\0')
	{
		const char *val = body + i + 1;
		size_t		vlen = strlen(val);

		if (body[i] == 'P')
		{
			char	   *end;
			long		pos = strtol(val, &end, 10);

			if (vlen > 0 && *end == '\0' && vlen < 12)
			{
				long		np = gw_map_position(map, pos);

				if (np > 0)
				{
					char		num[24];

					snprintf(num, sizeof(num), "%ld", np);
					app(out, &ok, "P", 1);
					app(out, &ok, num, strlen(num) + 1);
				}
			}
		}
		else
			app(out, &ok, body + i, vlen + 2);
		i += vlen + 2;
	}
	app(out, &ok, "", 1);
	*out_len = (uint32_t) (out->len - start);
	return ok;

verbatim:
	app(out, &ok, body, len);
	*out_len = len;
	return ok;
}
