/*-------------------------------------------------------------------------
 *
 * syntax.c
 *	  Tokenizer and parser for RVBBIT statements (see syntax.h).
 *
 * The statement text is scanned by a small SQL-aware tokenizer that knows
 * bare and double-quoted identifiers, single-quoted strings (with ''
 * escapes), E'...' strings (with backslash escapes), dollar quotes ($$ and
 * $tag$), numbers, punctuation, -- line comments and nested block
 * comments.  The parser walks that token stream with one token of
 * lookahead (and an occasional one-token peek).  Nothing in here recurses
 * and every scan is linear in the input (nesting is counted, duplicate
 * column names are found with a hash set), so a statement of any size and
 * shape is parsed in bounded stack space and linear time.
 *
 * Pure: no PostgreSQL headers.  All memory is malloc'd; the statement is
 * released by rv_statement_free().  Errors are recorded in an RvError whose
 * position is the 1-based character offset (UTF-8 aware) of the offending
 * token, or one past the end of the text for "end of statement" errors.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rvtext.h"
#include "syntax.h"

/*
 * PARALLEL n must lie in 1 .. SYN_MAX_PARALLEL and BATCH n in
 * 1 .. SYN_MAX_BATCH: the bounds of the parallel and batch options in
 * optlist.h, so that MAP BATCH n and WITH (batch = n) accept the same n
 * (test_syntax checks both edges).
 */
#define SYN_MAX_PARALLEL 100000
#define SYN_MAX_BATCH 1000

/* token text quoted in a syntax error is cut to about this many bytes */
#define SYN_MAX_NEAR 200

typedef enum SynTokKind
{
	SYN_EOF,
	SYN_IDENT,					/* bare word (keyword or identifier) */
	SYN_QIDENT,					/* "double-quoted identifier" */
	SYN_STRING,					/* 'string' */
	SYN_ESTRING,				/* E'string' */
	SYN_DOLLAR,					/* $$string$$ or $tag$string$tag$ */
	SYN_NUMBER,					/* 12, 1.5, .5, 1e3 */
	SYN_LPAREN,
	SYN_RPAREN,
	SYN_COMMA,
	SYN_EQUALS,
	SYN_SEMI,
	SYN_OTHER					/* any other single character, or $n */
} SynTokKind;

typedef struct SynToken
{
	SynTokKind	kind;
	size_t		start;			/* byte offset of the first byte */
	size_t		end;			/* byte offset one past the last byte */
	size_t		body;			/* dollar quotes: offset of the content */
	size_t		body_end;		/* dollar quotes: offset one past content */
} SynToken;

typedef struct SynParser
{
	const char *text;
	size_t		len;
	size_t		pos;			/* lexer cursor: where the next token starts */
	SynToken	tok;			/* current (lookahead) token */
	RvError    *err;
	RvStatement *stmt;
	size_t		cp_byte;		/* character-position cache: byte offset */
	int			cp_chars;		/* ... and its 1-based character position */
	/* duplicate-column detection: open-addressing set of column indexes */
	int		   *colset;
	size_t		colset_size;	/* power of two, 0 when not allocated */
	int			colcap;			/* allocated length of stmt->columns */
} SynParser;

/* growable byte buffer */
typedef struct SynBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} SynBuf;

/*
 * Option names accepted in WITH ( ... ) (optlist.h: the rows with a
 * place in the hint), and that place.
 */
typedef struct SynOptionName
{
	const char *name;
	int			with;
} SynOptionName;

#define RV_OPTION(id, name, type, field, lo, hi, dflt, with, places, pass, header) \
	{name, with},
static const SynOptionName syn_option_names[] = {
#include "optlist.h"
};
#undef RV_OPTION

#define SYN_NOPTIONS ((int) (sizeof(syn_option_names) / sizeof(syn_option_names[0])))

/* ----------------------------------------------------------------
 * Character classes and small helpers
 * ----------------------------------------------------------------
 */

static bool
syn_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
		c == '\f' || c == '\v';
}

static bool
syn_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* First character of an identifier (or of a dollar-quote tag). */
static bool
syn_is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
		((unsigned char) c) >= 0x80;
}

/* Later character of a dollar-quote tag (no '$'). */
static bool
syn_is_tag_char(char c)
{
	return syn_is_ident_start(c) || syn_is_digit(c);
}

/* Later character of a bare identifier ('$' allowed, as in PostgreSQL). */
static bool
syn_is_ident_char(char c)
{
	return syn_is_tag_char(c) || c == '$';
}

static int
syn_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char
syn_ascii_lower(char c)
{
	if (c >= 'A' && c <= 'Z')
		return (char) (c - 'A' + 'a');
	return c;
}

/* ----------------------------------------------------------------
 * Error reporting
 * ----------------------------------------------------------------
 */

/*
 * Record an error message located at byte offset "offset" of the text.
 * Only the first error is kept (rv_error_set's rule); the location is set
 * only when this call recorded the message.
 */
static void syn_error_at(SynParser *p, size_t offset, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
syn_error_at(SynParser *p, size_t offset, const char *fmt,...)
{
	va_list		ap;
	char		buf[RV_ERRMSG_LEN];

	if (p->err->set)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rv_error_set(p->err, "%s", buf);
	rv_error_locate(p->err, p->text, offset);
}

/* Record an allocation failure. */
static void
syn_oom(SynParser *p)
{
	rv_error_set(p->err, "out of memory");
}

/*
 * Report a syntax error at the current token: "syntax error at or near
 * "tok"" (the token text is cut at a character boundary when very long),
 * or "syntax error at end of statement", with the given detail (what was
 * expected).
 */
static void syn_syntax_error(SynParser *p, const char *detail_fmt,...)
			__attribute__((format(printf, 2, 3)));

static void
syn_syntax_error(SynParser *p, const char *detail_fmt,...)
{
	va_list		ap;
	char		detail[RV_ERRMSG_LEN];
	const SynToken *t = &p->tok;

	if (p->err->set)
		return;
	va_start(ap, detail_fmt);
	vsnprintf(detail, sizeof(detail), detail_fmt, ap);
	va_end(ap);

	if (t->kind == SYN_EOF)
		syn_error_at(p, p->len, "syntax error at end of statement");
	else
	{
		size_t		n = t->end - t->start;
		const char *more = "";

		if (n > SYN_MAX_NEAR)
		{
			n = SYN_MAX_NEAR;
			/* back up to the start of a UTF-8 character */
			while (n > 0 &&
				   (((unsigned char) p->text[t->start + n]) & 0xC0) == 0x80)
				n--;
			more = "...";
		}
		syn_error_at(p, t->start, "syntax error at or near \"%.*s%s\"",
					 (int) n, p->text + t->start, more);
	}
	rv_error_detail(p->err, "%s", detail);
}

/*
 * 1-based character position of byte offset "off".  Positions are asked
 * for in increasing order while parsing, so a cached (byte, character)
 * pair makes the total cost linear; an earlier offset restarts the count.
 * Counts exactly as rv_error_locate() does.
 */
static int
syn_charpos(SynParser *p, size_t off)
{
	if (off < p->cp_byte)
	{
		p->cp_byte = 0;
		p->cp_chars = 1;
	}
	while (p->cp_byte < off && p->cp_byte < p->len)
	{
		if ((((unsigned char) p->text[p->cp_byte]) & 0xC0) != 0x80)
			p->cp_chars++;
		p->cp_byte++;
	}
	return p->cp_chars;
}

/* ----------------------------------------------------------------
 * Growable buffer
 * ----------------------------------------------------------------
 */

/* Append n bytes to buf, keeping it NUL-terminated; false on OOM. */
static bool
syn_buf_append(SynBuf *buf, const char *s, size_t n)
{
	if (buf->len + n + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap : 32;
		char	   *d;

		while (cap < buf->len + n + 1)
			cap *= 2;
		d = realloc(buf->data, cap);
		if (d == NULL)
			return false;
		buf->data = d;
		buf->cap = cap;
	}
	if (n > 0)
		memcpy(buf->data + buf->len, s, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return true;
}

/* Copy n bytes of s into a new NUL-terminated string; NULL on OOM. */
static char *
syn_strndup(SynParser *p, const char *s, size_t n)
{
	char	   *d = malloc(n + 1);

	if (d == NULL)
	{
		syn_oom(p);
		return NULL;
	}
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* ----------------------------------------------------------------
 * Tokenizer
 * ----------------------------------------------------------------
 */

/*
 * Skip a quoted string or identifier opening at text[*i] (quote is its
 * quote character, doubled inside): *i moves past the closing quote.
 * False with err set to what (located at start) when it does not close.
 */
static bool
syn_skip_quoted(const char *text, size_t len, size_t *i, char quote,
				const char *what, size_t start, RvError *err)
{
	size_t		j = *i + 1;

	for (;;)
	{
		if (j >= len)
		{
			rv_error_set(err, "%s", what);
			rv_error_locate(err, text, start);
			return false;
		}
		if (text[j] == quote)
		{
			if (text[j + 1] != quote)
				break;
			j += 2;
		}
		else
			j++;
	}
	*i = j + 1;
	return true;
}

/*
 * Scan the next token starting at *pos, skipping whitespace and comments,
 * into *tok, and advance *pos past it.  On an unterminated comment, string,
 * quoted identifier or dollar quote, records the error in err (which may
 * be NULL for a silent peek) located where the construct starts, and
 * returns false.  Linear in the length of the token and the skipped text.
 */
static bool
syn_lex(const char *text, size_t len, size_t *pos, SynToken *tok, RvError *err)
{
	size_t		i = *pos;
	size_t		start;
	char		c;

	memset(tok, 0, sizeof(SynToken));

	/* whitespace and comments */
	for (;;)
	{
		c = text[i];
		if (syn_is_space(c))
			i++;
		else if (c == '-' && text[i + 1] == '-')
		{
			while (i < len && text[i] != '\n')
				i++;
		}
		else if (c == '/' && text[i + 1] == '*')
		{
			int			depth = 1;
			size_t		cstart = i;

			i += 2;
			while (depth > 0)
			{
				if (i >= len)
				{
					rv_error_set(err, "unterminated /* comment");
					rv_error_locate(err, text, cstart);
					return false;
				}
				if (text[i] == '/' && text[i + 1] == '*')
				{
					depth++;
					i += 2;
				}
				else if (text[i] == '*' && text[i + 1] == '/')
				{
					depth--;
					i += 2;
				}
				else
					i++;
			}
		}
		else
			break;
	}

	start = i;
	tok->start = start;
	c = text[i];

	if (i >= len)
	{
		tok->kind = SYN_EOF;
		tok->start = len;
		tok->end = len;
		*pos = len;
		return true;
	}

	switch (c)
	{
		case '(':
			tok->kind = SYN_LPAREN;
			i++;
			break;
		case ')':
			tok->kind = SYN_RPAREN;
			i++;
			break;
		case ',':
			tok->kind = SYN_COMMA;
			i++;
			break;
		case '=':
			tok->kind = SYN_EQUALS;
			i++;
			break;
		case ';':
			tok->kind = SYN_SEMI;
			i++;
			break;
		case '\'':
			tok->kind = SYN_STRING;
			if (!syn_skip_quoted(text, len, &i, '\'', "unterminated quoted string", start, err))
				return false;
			break;
		case '"':
			tok->kind = SYN_QIDENT;
			if (!syn_skip_quoted(text, len, &i, '"', "unterminated quoted identifier", start, err))
				return false;
			break;
		case '$':
			{
				size_t		j = i + 1;

				if (syn_is_digit(text[j]))
				{
					/* positional parameter $n: not meaningful here */
					while (syn_is_digit(text[j]))
						j++;
					tok->kind = SYN_OTHER;
					i = j;
					break;
				}
				if (syn_is_ident_start(text[j]))
				{
					j++;
					while (syn_is_tag_char(text[j]))
						j++;
				}
				if (text[j] != '$')
				{
					tok->kind = SYN_OTHER;
					i++;
					break;
				}
				else
				{
					/* dollar quote with delimiter text[i .. j] */
					size_t		dlen = j - i + 1;
					size_t		q = j + 1;
					bool		found = false;

					/*
					 * Look for the closing delimiter at each '$'.  A tag
					 * holds no '$', so a partial match starting at one '$'
					 * never extends past the next '$': the scan is linear.
					 */
					while (q < len)
					{
						const char *d = memchr(text + q, '$', len - q);

						if (d == NULL)
							break;
						q = (size_t) (d - text);
						if (len - q >= dlen &&
							memcmp(text + q, text + i, dlen) == 0)
						{
							found = true;
							break;
						}
						q++;
					}
					if (!found)
					{
						rv_error_set(err, "unterminated dollar-quoted string");
						rv_error_locate(err, text, start);
						return false;
					}
					tok->kind = SYN_DOLLAR;
					tok->body = j + 1;
					tok->body_end = q;
					i = q + dlen;
				}
			}
			break;
		default:
			if ((c == 'E' || c == 'e') && text[i + 1] == '\'')
			{
				tok->kind = SYN_ESTRING;
				i += 2;
				for (;;)
				{
					if (i >= len)
					{
						rv_error_set(err, "unterminated quoted string");
						rv_error_locate(err, text, start);
						return false;
					}
					if (text[i] == '\\')
						i += (i + 1 < len) ? 2 : 1;
					else if (text[i] == '\'')
					{
						if (text[i + 1] == '\'')
							i += 2;
						else
						{
							i++;
							break;
						}
					}
					else
						i++;
				}
			}
			else if (syn_is_ident_start(c))
			{
				tok->kind = SYN_IDENT;
				i++;
				while (syn_is_ident_char(text[i]))
					i++;
			}
			else if (syn_is_digit(c) || (c == '.' && syn_is_digit(text[i + 1])))
			{
				tok->kind = SYN_NUMBER;
				while (syn_is_digit(text[i]))
					i++;
				if (text[i] == '.' && text[i + 1] != '.')
				{
					i++;
					while (syn_is_digit(text[i]))
						i++;
				}
				if ((text[i] == 'e' || text[i] == 'E') &&
					(syn_is_digit(text[i + 1]) ||
					 ((text[i + 1] == '+' || text[i + 1] == '-') &&
					  syn_is_digit(text[i + 2]))))
				{
					i += 2;
					while (syn_is_digit(text[i]))
						i++;
				}
			}
			else
			{
				tok->kind = SYN_OTHER;
				i++;
			}
			break;
	}

	tok->end = i;
	*pos = i;
	return true;
}

/* Advance to the next token; false (error recorded) on a lexical error. */
static bool
syn_next(SynParser *p)
{
	return syn_lex(p->text, p->len, &p->pos, &p->tok, p->err);
}

/*
 * The token after the current one, without consuming anything.  A lexical
 * error there is not reported here (it will be when the token is reached);
 * it gives an EOF token.
 */
static SynToken
syn_peek(SynParser *p)
{
	size_t		pos = p->pos;
	SynToken	t;

	if (!syn_lex(p->text, p->len, &pos, &t, NULL))
	{
		t.kind = SYN_EOF;
		t.start = t.end = p->len;
	}
	return t;
}

/* Is the current token the bare keyword kw (given in lower case)? */
static bool
syn_is_kw(SynParser *p, const char *kw)
{
	size_t		n = p->tok.end - p->tok.start;
	size_t		k;

	if (p->tok.kind != SYN_IDENT || strlen(kw) != n)
		return false;
	for (k = 0; k < n; k++)
		if (syn_ascii_lower(p->text[p->tok.start + k]) != kw[k])
			return false;
	return true;
}

/*
 * Words that cannot be a bare cascade name or alias, because they would
 * make the statement ambiguous; double-quote them to use them as names.
 */
static bool
syn_is_reserved(SynParser *p)
{
	return syn_is_kw(p, "using") || syn_is_kw(p, "as") ||
		syn_is_kw(p, "returning") || syn_is_kw(p, "with");
}

/* ----------------------------------------------------------------
 * Token values
 * ----------------------------------------------------------------
 */

/* Append code point cp as UTF-8. */
static bool
syn_buf_utf8(SynBuf *buf, uint32_t cp)
{
	char		b[4];

	return syn_buf_append(buf, b, rv_utf8_encode(cp, b));
}

/*
 * Read exactly ndigits hex digits at text[*i]; returns the value, or -1
 * when there are fewer.  Advances *i past them on success.
 */
static long
syn_read_hex(const char *text, size_t *i, int ndigits)
{
	long		v = 0;
	int			k;

	for (k = 0; k < ndigits; k++)
	{
		int			h = syn_hex_value(text[*i + k]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	*i += ndigits;
	return v;
}

/*
 * Decode the body of an E'...' string token into buf: '' and \' give a
 * quote; \b \f \n \r \t; \ooo octal and \xhh hex bytes; \uXXXX and
 * \UXXXXXXXX code points (UTF-16 surrogate pairs combined); any other
 * escaped character stands for itself.  A NUL character or an invalid
 * Unicode escape is an error at the backslash.
 */
static bool
syn_decode_estring(SynParser *p, const SynToken *t, SynBuf *buf)
{
	const char *text = p->text;
	size_t		i = t->start + 2;
	size_t		stop = t->end - 1;	/* the closing quote */

	while (i < stop)
	{
		char		c = text[i];
		size_t		esc = i;

		if (c == '\'')
		{
			/* a doubled quote inside the string */
			if (!syn_buf_append(buf, "'", 1))
				goto oom;
			i += 2;
			continue;
		}
		if (c != '\\')
		{
			size_t		j = i;

			/* copy a run of plain bytes at once */
			while (j < stop && text[j] != '\\' && text[j] != '\'')
				j++;
			if (!syn_buf_append(buf, text + i, j - i))
				goto oom;
			i = j;
			continue;
		}

		c = text[i + 1];
		i += 2;
		switch (c)
		{
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case '0':
			case '1':
			case '2':
			case '3':
			case '4':
			case '5':
			case '6':
			case '7':
				{
					int			v = c - '0';
					int			k;

					for (k = 0; k < 2 && text[i] >= '0' && text[i] <= '7'; k++)
						v = v * 8 + (text[i++] - '0');
					c = (char) (v & 0xFF);
				}
				break;
			case 'x':
				if (syn_hex_value(text[i]) >= 0)
				{
					int			v = syn_hex_value(text[i++]);

					if (syn_hex_value(text[i]) >= 0)
						v = v * 16 + syn_hex_value(text[i++]);
					c = (char) v;
				}
				break;
			case 'u':
			case 'U':
				{
					long		cp = syn_read_hex(text, &i, c == 'u' ? 4 : 8);

					if (cp < 0)
					{
						syn_error_at(p, esc, "invalid Unicode escape");
						rv_error_hint(p->err, "Unicode escapes must be \\uXXXX or \\UXXXXXXXX.");
						return false;
					}
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						long		lo = -1;

						/* a high surrogate must be followed by a low one */
						if (text[i] == '\\' && (text[i + 1] == 'u' || text[i + 1] == 'U'))
						{
							size_t		k = i + 2;

							lo = syn_read_hex(text, &k, text[i + 1] == 'u' ? 4 : 8);
							if (lo >= 0xDC00 && lo <= 0xDFFF)
								i = k;
							else
								lo = -1;
						}
						if (lo < 0)
						{
							syn_error_at(p, esc, "invalid Unicode surrogate pair");
							return false;
						}
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0 ||
							 cp > 0x10FFFF)
					{
						syn_error_at(p, esc, "invalid Unicode escape value");
						return false;
					}
					if (!syn_buf_utf8(buf, (uint32_t) cp))
						goto oom;
					continue;
				}
			default:
				/* \\, \', and any other character: itself */
				break;
		}
		if (c == '\0')
		{
			syn_error_at(p, esc, "null character not permitted");
			return false;
		}
		if (!syn_buf_append(buf, &c, 1))
			goto oom;
	}
	return true;

oom:
	syn_oom(p);
	return false;
}

/*
 * Append the body of a quoted token delimited by quote characters at
 * text[from - 1] and text[to], turning each doubled quote into one.
 */
static bool
syn_decode_doubled(const char *text, size_t from, size_t to, char quote,
				   SynBuf *buf)
{
	size_t		i = from;

	while (i < to)
	{
		const char *q = memchr(text + i, quote, to - i);
		size_t		j = q ? (size_t) (q - text) : to;

		if (!syn_buf_append(buf, text + i, j - i))
			return false;
		if (j >= to)
			break;
		/* a doubled quote: keep one */
		if (!syn_buf_append(buf, &quote, 1))
			return false;
		i = j + 2;
	}
	return true;
}

/*
 * The value of the current token as a new malloc'd string: strings and
 * quoted identifiers unquoted and unescaped, bare identifiers lower-cased
 * (ASCII only, as PostgreSQL does for UTF-8), anything else verbatim.
 * NULL with the error recorded on a bad escape or out of memory.
 */
static char *
syn_token_value(SynParser *p)
{
	const SynToken *t = &p->tok;
	SynBuf		buf = {NULL, 0, 0};
	bool		ok = true;

	switch (t->kind)
	{
		case SYN_STRING:
			ok = syn_decode_doubled(p->text, t->start + 1, t->end - 1, '\'', &buf);
			break;
		case SYN_QIDENT:
			ok = syn_decode_doubled(p->text, t->start + 1, t->end - 1, '"', &buf);
			break;
		case SYN_ESTRING:
			if (!syn_decode_estring(p, t, &buf))
			{
				free(buf.data);
				return NULL;
			}
			break;
		case SYN_DOLLAR:
			ok = syn_buf_append(&buf, p->text + t->body, t->body_end - t->body);
			break;
		case SYN_IDENT:
			ok = syn_buf_append(&buf, p->text + t->start, t->end - t->start);
			if (ok)
			{
				size_t		k;

				for (k = 0; k < buf.len; k++)
					buf.data[k] = syn_ascii_lower(buf.data[k]);
			}
			break;
		default:
			ok = syn_buf_append(&buf, p->text + t->start, t->end - t->start);
			break;
	}
	/* an empty body still needs a string */
	if (ok && buf.data == NULL)
		ok = syn_buf_append(&buf, "", 0);
	if (!ok)
	{
		free(buf.data);
		syn_oom(p);
		return NULL;
	}
	return buf.data;
}

/*
 * The value of the current token, which must be an identifier (bare or
 * double-quoted), as a new string; a zero-length quoted identifier is an
 * error, as in PostgreSQL.
 */
static char *
syn_ident_value(SynParser *p)
{
	if (p->tok.kind == SYN_QIDENT && p->tok.end - p->tok.start == 2)
	{
		syn_error_at(p, p->tok.start, "zero-length delimited identifier");
		return NULL;
	}
	return syn_token_value(p);
}

/* ----------------------------------------------------------------
 * Grammar
 * ----------------------------------------------------------------
 */

/*
 * The count after PARALLEL or BATCH (what names the keyword): the current
 * token is a number, or "-" before a number.  Stores the count in *out and
 * consumes it.  Errors: not an integer, or outside 1 .. max.
 */
static bool
syn_parse_count(SynParser *p, const char *what, int max, int *out)
{
	size_t		k;
	long		v = 0;

	if (p->tok.kind != SYN_NUMBER)
	{
		/* "-" followed by a number: negative */
		syn_error_at(p, p->tok.start, "%s must be between 1 and %d",
					 what, max);
		return false;
	}
	for (k = p->tok.start; k < p->tok.end; k++)
	{
		if (!syn_is_digit(p->text[k]))
		{
			syn_error_at(p, p->tok.start, "%s must be an integer", what);
			return false;
		}
		if (v <= max)
			v = v * 10 + (p->text[k] - '0');
	}
	if (v < 1 || v > max)
	{
		syn_error_at(p, p->tok.start, "%s must be between 1 and %d",
					 what, max);
		return false;
	}
	*out = (int) v;
	return syn_next(p);
}

/* Is the current token "-" directly followed by a number token? */
static bool
syn_at_negative_number(SynParser *p)
{
	return p->tok.kind == SYN_OTHER && p->tok.end - p->tok.start == 1 &&
		p->text[p->tok.start] == '-' && syn_peek(p).kind == SYN_NUMBER;
}

/*
 * MAP modifiers: PARALLEL [n], BATCH n, DISTINCT in any order, each at
 * most once.  ASYNC is rejected with a hint to use WITH (async = true).
 */
static bool
syn_parse_map_modifiers(SynParser *p)
{
	RvStatement *stmt = p->stmt;

	for (;;)
	{
		if (syn_is_kw(p, "parallel"))
		{
			if (stmt->parallel != 0)
			{
				syn_error_at(p, p->tok.start, "PARALLEL specified more than once");
				return false;
			}
			if (!syn_next(p))
				return false;
			if (p->tok.kind == SYN_NUMBER || syn_at_negative_number(p))
			{
				if (!syn_parse_count(p, "PARALLEL", SYN_MAX_PARALLEL, &stmt->parallel))
					return false;
			}
			else
				stmt->parallel = -1;
		}
		else if (syn_is_kw(p, "batch"))
		{
			if (stmt->batch != 0)
			{
				syn_error_at(p, p->tok.start, "BATCH specified more than once");
				return false;
			}
			if (!syn_next(p))
				return false;
			if (p->tok.kind != SYN_NUMBER && !syn_at_negative_number(p))
			{
				syn_syntax_error(p, "Expected a number of rows after BATCH.");
				return false;
			}
			if (!syn_parse_count(p, "BATCH", SYN_MAX_BATCH, &stmt->batch))
				return false;
		}
		else if (syn_is_kw(p, "distinct"))
		{
			if (stmt->distinct)
			{
				syn_error_at(p, p->tok.start, "DISTINCT specified more than once");
				return false;
			}
			stmt->distinct = true;
			if (!syn_next(p))
				return false;
		}
		else if (syn_is_kw(p, "async"))
		{
			syn_error_at(p, p->tok.start, "MAP does not accept ASYNC");
			rv_error_hint(p->err, "Use WITH (async = true) to run a MAP statement in the background.");
			return false;
		}
		else
			return true;
	}
}

/* RUN modifiers: ASYNC at most once; PARALLEL, BATCH, DISTINCT rejected. */
static bool
syn_parse_run_modifiers(SynParser *p)
{
	for (;;)
	{
		if (syn_is_kw(p, "async"))
		{
			if (p->stmt->async)
			{
				syn_error_at(p, p->tok.start, "ASYNC specified more than once");
				return false;
			}
			p->stmt->async = true;
			if (!syn_next(p))
				return false;
		}
		else if (syn_is_kw(p, "parallel") || syn_is_kw(p, "batch") ||
				 syn_is_kw(p, "distinct"))
		{
			const char *kw = syn_is_kw(p, "parallel") ? "PARALLEL" :
			syn_is_kw(p, "batch") ? "BATCH" : "DISTINCT";

			syn_error_at(p, p->tok.start, "RUN does not accept %s", kw);
			rv_error_hint(p->err, "PARALLEL, BATCH and DISTINCT apply only to MAP.");
			return false;
		}
		else
			return true;
	}
}

/* The cascade reference: a string, dollar quote, or identifier. */
static bool
syn_parse_cascade(SynParser *p)
{
	SynTokKind	k = p->tok.kind;

	if (!(k == SYN_STRING || k == SYN_ESTRING || k == SYN_DOLLAR ||
		  k == SYN_QIDENT || (k == SYN_IDENT && !syn_is_reserved(p))))
	{
		syn_syntax_error(p, "Expected a cascade name in quotes.");
		return false;
	}
	p->stmt->cascade = syn_token_value(p);
	if (p->stmt->cascade == NULL)
		return false;
	if (p->stmt->cascade[0] == '\0')
	{
		syn_error_at(p, p->tok.start, "cascade name must not be empty");
		return false;
	}
	p->stmt->cascade_position = syn_charpos(p, p->tok.start);
	return syn_next(p);
}

/* FNV-1a hash of a NUL-terminated string. */
static uint32_t
syn_hash(const char *s)
{
	uint32_t	h = 2166136261u;

	while (*s)
	{
		h ^= (unsigned char) *s++;
		h *= 16777619u;
	}
	return h;
}

/*
 * Add column index idx (already stored in stmt->columns) to the set of
 * column names; returns the index of an earlier column with the same name,
 * -1 when the name is new, or -2 when out of memory.  The set is an open
 * addressing table kept at most half full, so the check is linear overall.
 */
static int
syn_colset_add(SynParser *p, int idx)
{
	RvColumnDef *cols = p->stmt->columns;
	size_t		mask;
	size_t		h;

	if ((size_t) (idx + 1) * 2 > p->colset_size)
	{
		size_t		size = p->colset_size ? p->colset_size * 2 : 16;
		int		   *set;
		int			k;

		while ((size_t) (idx + 1) * 2 > size)
			size *= 2;
		set = malloc(size * sizeof(int));
		if (set == NULL)
			return -2;
		for (h = 0; h < size; h++)
			set[h] = -1;
		free(p->colset);
		p->colset = set;
		p->colset_size = size;
		/* re-insert the earlier columns (all distinct) */
		for (k = 0; k < idx; k++)
		{
			h = syn_hash(cols[k].name) & (size - 1);
			while (set[h] >= 0)
				h = (h + 1) & (size - 1);
			set[h] = k;
		}
	}
	mask = p->colset_size - 1;
	h = syn_hash(cols[idx].name) & mask;
	while (p->colset[h] >= 0)
	{
		if (strcmp(cols[p->colset[h]].name, cols[idx].name) == 0)
			return p->colset[h];
		h = (h + 1) & mask;
	}
	p->colset[h] = idx;
	return -1;
}

/*
 * The type of a column: the tokens up to the next top-level "," or ")",
 * joined with single spaces where the text had whitespace or comments
 * between them.  Stores a new string in *type, or NULL when there was no
 * type at all (the caller reports it); false on an error.
 */
static bool
syn_parse_type(SynParser *p, const char *colname, char **type)
{
	SynBuf		buf = {NULL, 0, 0};
	int			depth = 0;
	size_t		last_end = 0;

	*type = NULL;
	for (;;)
	{
		const SynToken *t = &p->tok;

		if (t->kind == SYN_EOF || (depth == 0 &&
								   (t->kind == SYN_SEMI || syn_is_kw(p, "using"))))
		{
			if (buf.len == 0)
				syn_syntax_error(p, "Expected a type for column \"%s\".", colname);
			else
				syn_syntax_error(p, "Expected \",\" or \")\" in the column list.");
			free(buf.data);
			return false;
		}
		if (depth == 0 && (t->kind == SYN_COMMA || t->kind == SYN_RPAREN))
			break;
		if (t->kind == SYN_LPAREN)
			depth++;
		else if (t->kind == SYN_RPAREN)
			depth--;
		if ((buf.len > 0 && t->start > last_end && !syn_buf_append(&buf, " ", 1)) ||
			!syn_buf_append(&buf, p->text + t->start, t->end - t->start))
		{
			free(buf.data);
			syn_oom(p);
			return false;
		}
		last_end = t->end;
		if (!syn_next(p))
		{
			free(buf.data);
			return false;
		}
	}
	*type = buf.data;
	return true;
}

/*
 * A column list "( name type, ... )"; the current token is the "(".
 * Column names must be unique.
 */
static bool
syn_parse_columns(SynParser *p)
{
	RvStatement *stmt = p->stmt;

	if (!syn_next(p))
		return false;
	for (;;)
	{
		RvColumnDef *col;
		int			dup;
		size_t		name_start = p->tok.start;

		if (p->tok.kind != SYN_IDENT && p->tok.kind != SYN_QIDENT)
		{
			syn_syntax_error(p, "Expected a column name.");
			return false;
		}
		if (stmt->ncolumns == p->colcap)
		{
			int			cap = p->colcap ? p->colcap * 2 : 4;
			RvColumnDef *cols;

			if (cap > INT32_MAX / 2 / (int) sizeof(RvColumnDef))
			{
				syn_oom(p);
				return false;
			}
			cols = realloc(stmt->columns, (size_t) cap * sizeof(RvColumnDef));
			if (cols == NULL)
			{
				syn_oom(p);
				return false;
			}
			stmt->columns = cols;
			p->colcap = cap;
		}
		col = &stmt->columns[stmt->ncolumns];
		memset(col, 0, sizeof(RvColumnDef));
		col->name = syn_ident_value(p);
		if (col->name == NULL)
			return false;
		col->position = syn_charpos(p, name_start);
		stmt->ncolumns++;

		dup = syn_colset_add(p, stmt->ncolumns - 1);
		if (dup == -2)
		{
			syn_oom(p);
			return false;
		}
		if (dup >= 0)
		{
			syn_error_at(p, name_start, "column \"%s\" specified more than once",
						 col->name);
			return false;
		}

		if (!syn_next(p))
			return false;
		if (!syn_parse_type(p, col->name, &col->type))
			return false;
		if (col->type == NULL)
		{
			syn_syntax_error(p, "Expected a type for column \"%s\".", col->name);
			return false;
		}

		if (p->tok.kind == SYN_RPAREN)
			return syn_next(p);
		/* a comma: another column follows */
		if (!syn_next(p))
			return false;
	}
}

/*
 * The result shape after the cascade: AS alias, AS ( columns ), or
 * RETURNING ( columns ); RUN takes only AS alias.  Nothing is also fine.
 */
static bool
syn_parse_shape(SynParser *p)
{
	bool		is_run = (p->stmt->kind == RV_STMT_RUN);

	if (syn_is_kw(p, "as"))
	{
		if (!syn_next(p))
			return false;
		if (p->tok.kind == SYN_LPAREN)
		{
			if (is_run)
			{
				syn_error_at(p, p->tok.start, "RUN does not accept a column list");
				rv_error_hint(p->err, "Use MAP to return typed columns, or AS alias to name the result column.");
				return false;
			}
			return syn_parse_columns(p);
		}
		if (p->tok.kind == SYN_QIDENT ||
			(p->tok.kind == SYN_IDENT && !syn_is_reserved(p)))
		{
			p->stmt->alias = syn_ident_value(p);
			if (p->stmt->alias == NULL)
				return false;
			return syn_next(p);
		}
		syn_syntax_error(p, is_run ? "Expected an alias after AS." :
						 "Expected an alias or a column list after AS.");
		return false;
	}
	if (syn_is_kw(p, "returning"))
	{
		if (is_run)
		{
			syn_error_at(p, p->tok.start, "RUN does not accept a column list");
			rv_error_hint(p->err, "Use MAP to return typed columns, or AS alias to name the result column.");
			return false;
		}
		if (!syn_next(p))
			return false;
		if (p->tok.kind != SYN_LPAREN)
		{
			syn_syntax_error(p, "Expected \"(\" after RETURNING.");
			return false;
		}
		return syn_parse_columns(p);
	}
	return true;
}

/*
 * USING ( query ): find the matching ")" by counting parentheses over
 * tokens (so those inside strings, quoted identifiers, dollar quotes and
 * comments do not count) and copy the text in between, trimmed of
 * surrounding whitespace.  "expected" is the syntax-error detail when the
 * current token is not USING.
 */
static bool
syn_parse_using(SynParser *p, const char *expected)
{
	size_t		open;
	size_t		s;
	size_t		e;
	size_t		last_end = 0;
	long		depth = 0;
	bool		any = false;

	if (!syn_is_kw(p, "using"))
	{
		syn_syntax_error(p, "%s", expected);
		return false;
	}
	if (!syn_next(p))
		return false;
	if (p->tok.kind != SYN_LPAREN)
	{
		syn_syntax_error(p, "Expected \"(\" after USING.");
		return false;
	}
	open = p->tok.start;
	for (;;)
	{
		if (!syn_next(p))
			return false;
		if (p->tok.kind == SYN_EOF)
		{
			syn_error_at(p, open, "unterminated USING (...)");
			rv_error_detail(p->err, "The query has no matching \")\".");
			return false;
		}
		if (p->tok.kind == SYN_LPAREN)
			depth++;
		else if (p->tok.kind == SYN_RPAREN)
		{
			if (depth == 0)
				break;
			depth--;
		}
		any = true;
		last_end = p->tok.end;
	}
	if (!any)
	{
		syn_error_at(p, open, "USING query is empty");
		return false;
	}

	/*
	 * The query runs from the first character after "(" (comments before
	 * its first token are kept: they end with a newline or are block
	 * comments) to the end of its last token: whitespace and comments
	 * after it are dropped, so a trailing "-- comment" cannot swallow what
	 * the query is wrapped in.
	 */
	s = open + 1;
	e = last_end;
	while (s < e && syn_is_space(p->text[s]))
		s++;
	p->stmt->query = syn_strndup(p, p->text + s, e - s);
	if (p->stmt->query == NULL)
		return false;
	p->stmt->query_position = syn_charpos(p, s);
	return syn_next(p);
}

/* Index of an option name a statement may give in syn_option_names, or -1. */
static int
syn_option_index(const char *name)
{
	int			k;

	for (k = 0; k < SYN_NOPTIONS; k++)
		if (syn_option_names[k].with > 0 && strcmp(syn_option_names[k].name, name) == 0)
			return k;
	return -1;
}

/*
 * "Valid options are: a, b, c." in the order of the with column, built
 * once (the list is constant).
 */
static const char *
syn_options_hint(void)
{
	static char hint[512];
	size_t		len;
	size_t		start;
	int			place;
	int			k;

	if (hint[0] != '\0')
		return hint;
	len = start = (size_t) snprintf(hint, sizeof(hint), "Valid options are: ");
	for (place = 1; place <= SYN_NOPTIONS; place++)
		for (k = 0; k < SYN_NOPTIONS; k++)
			if (syn_option_names[k].with == place && len < sizeof(hint))
				len += (size_t) snprintf(hint + len, sizeof(hint) - len, "%s%s",
										 len > start ? ", " : "", syn_option_names[k].name);
	if (len < sizeof(hint))
		snprintf(hint + len, sizeof(hint) - len, ".");
	return hint;
}

/*
 * The value of an option (current token onwards) into opt: a string or
 * dollar quote, a number (optionally negative), true/false/on/off, NULL,
 * or an identifier.  Consumes the value.
 */
static bool
syn_parse_option_value(SynParser *p, RvOption *opt)
{
	switch (p->tok.kind)
	{
		case SYN_STRING:
		case SYN_ESTRING:
		case SYN_DOLLAR:
			opt->kind = RV_OPT_STRING;
			opt->value = syn_token_value(p);
			break;
		case SYN_NUMBER:
			opt->kind = RV_OPT_NUMBER;
			opt->value = syn_token_value(p);
			break;
		case SYN_QIDENT:
			opt->kind = RV_OPT_IDENT;
			opt->value = syn_ident_value(p);
			break;
		case SYN_IDENT:
			if (syn_is_kw(p, "true") || syn_is_kw(p, "on"))
			{
				opt->kind = RV_OPT_BOOL;
				opt->value = syn_strndup(p, "true", 4);
			}
			else if (syn_is_kw(p, "false") || syn_is_kw(p, "off"))
			{
				opt->kind = RV_OPT_BOOL;
				opt->value = syn_strndup(p, "false", 5);
			}
			else if (syn_is_kw(p, "null"))
			{
				opt->kind = RV_OPT_NULL;
				opt->value = syn_strndup(p, "null", 4);
			}
			else
			{
				opt->kind = RV_OPT_IDENT;
				opt->value = syn_token_value(p);
			}
			break;
		default:
			if (syn_at_negative_number(p))
			{
				SynBuf		buf = {NULL, 0, 0};

				if (!syn_next(p))
					return false;
				if (!syn_buf_append(&buf, "-", 1) ||
					!syn_buf_append(&buf, p->text + p->tok.start,
									p->tok.end - p->tok.start))
				{
					free(buf.data);
					syn_oom(p);
					return false;
				}
				opt->kind = RV_OPT_NUMBER;
				opt->value = buf.data;
				break;
			}
			syn_syntax_error(p, "Expected a value for option \"%s\".", opt->name);
			return false;
	}
	if (opt->value == NULL)
		return false;
	return syn_next(p);
}

/* WITH ( name = value, ... ); the current token is WITH. */
static bool
syn_parse_options(SynParser *p)
{
	RvStatement *stmt = p->stmt;

	if (!syn_next(p))
		return false;
	if (p->tok.kind != SYN_LPAREN)
	{
		syn_syntax_error(p, "Expected \"(\" after WITH.");
		return false;
	}
	if (!syn_next(p))
		return false;

	stmt->options = calloc(SYN_NOPTIONS, sizeof(RvOption));
	if (stmt->options == NULL)
	{
		syn_oom(p);
		return false;
	}
	for (;;)
	{
		RvOption   *opt;
		size_t		name_start = p->tok.start;
		char	   *name;
		int			k;

		if (p->tok.kind != SYN_IDENT && p->tok.kind != SYN_QIDENT)
		{
			syn_syntax_error(p, "Expected an option name.");
			return false;
		}
		name = syn_ident_value(p);
		if (name == NULL)
			return false;
		if (syn_option_index(name) < 0)
		{
			syn_error_at(p, name_start, "unknown option \"%s\"", name);
			rv_error_hint(p->err, "%s", syn_options_hint());
			free(name);
			return false;
		}
		for (k = 0; k < stmt->noptions; k++)
		{
			if (strcmp(stmt->options[k].name, name) == 0)
			{
				syn_error_at(p, name_start, "option \"%s\" specified more than once",
							 name);
				free(name);
				return false;
			}
		}
		/* known and distinct, so at most SYN_NOPTIONS of them */
		opt = &stmt->options[stmt->noptions++];
		opt->name = name;
		opt->position = syn_charpos(p, name_start);

		if (!syn_next(p))
			return false;
		if (p->tok.kind != SYN_EQUALS)
		{
			syn_syntax_error(p, "Expected \"=\" after option name \"%s\".", name);
			return false;
		}
		if (!syn_next(p))
			return false;
		if (!syn_parse_option_value(p, opt))
			return false;

		if (p->tok.kind == SYN_RPAREN)
			return syn_next(p);
		if (p->tok.kind != SYN_COMMA)
		{
			syn_syntax_error(p, "Expected \",\" or \")\" after the value of option \"%s\".",
							 name);
			return false;
		}
		if (!syn_next(p))
			return false;
	}
}

/* ----------------------------------------------------------------
 * Entry points
 * ----------------------------------------------------------------
 */

/*
 * Parse one RVBBIT statement; see syntax.h.  Returns a malloc'd statement,
 * or NULL with err set (err may be NULL if the caller does not want the
 * error).  The error record is cleared first.
 */
RvStatement *
rv_statement_parse(const char *text, RvError *err)
{
	RvError		local;
	SynParser	p;
	RvStatement *stmt;
	bool		ok = false;

	if (err == NULL)
		err = &local;
	rv_error_clear(err);
	if (text == NULL)
	{
		rv_error_set(err, "statement must not be null");
		return NULL;
	}
	stmt = calloc(1, sizeof(RvStatement));
	if (stmt == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}

	memset(&p, 0, sizeof(p));
	p.text = text;
	p.len = strlen(text);
	p.err = err;
	p.stmt = stmt;
	p.cp_chars = 1;

	do
	{
		if (!syn_next(&p))
			break;
		if (syn_is_kw(&p, "rvbbit") && !syn_next(&p))
			break;
		if (syn_is_kw(&p, "map"))
		{
			stmt->kind = RV_STMT_MAP;
			if (!syn_next(&p) || !syn_parse_map_modifiers(&p))
				break;
		}
		else if (syn_is_kw(&p, "run"))
		{
			stmt->kind = RV_STMT_RUN;
			if (!syn_next(&p) || !syn_parse_run_modifiers(&p))
				break;
		}
		else
		{
			syn_syntax_error(&p, "Expected MAP or RUN.");
			break;
		}

		if (!syn_parse_cascade(&p))
			break;
		if (!syn_is_kw(&p, "using") && !syn_is_kw(&p, "as") &&
			!syn_is_kw(&p, "returning"))
		{
			syn_syntax_error(&p, stmt->kind == RV_STMT_MAP ?
							 "Expected AS, RETURNING or USING." :
							 "Expected AS or USING.");
			break;
		}
		if (!syn_parse_shape(&p))
			break;
		if (!syn_parse_using(&p, "Expected USING."))
			break;

		if (syn_is_kw(&p, "with"))
		{
			if (!syn_parse_options(&p))
				break;
		}
		else if (p.tok.kind != SYN_SEMI && p.tok.kind != SYN_EOF)
		{
			syn_syntax_error(&p, "Expected WITH or end of statement.");
			break;
		}

		if (p.tok.kind == SYN_SEMI)
		{
			if (!syn_next(&p))
				break;
			if (p.tok.kind != SYN_EOF)
			{
				syn_syntax_error(&p, "Only one statement is allowed; nothing may follow the \";\".");
				break;
			}
		}
		if (p.tok.kind != SYN_EOF)
		{
			syn_syntax_error(&p, "Expected end of statement.");
			break;
		}
		ok = true;
	} while (0);

	free(p.colset);
	if (!ok)
	{
		if (!err->set)
			rv_error_set(err, "could not parse statement");
		rv_statement_free(stmt);
		return NULL;
	}
	return stmt;
}

/* Free a statement returned by rv_statement_parse (NULL is fine). */
void
rv_statement_free(RvStatement *stmt)
{
	int			k;

	if (stmt == NULL)
		return;
	free(stmt->cascade);
	free(stmt->alias);
	for (k = 0; k < stmt->ncolumns; k++)
	{
		free(stmt->columns[k].name);
		free(stmt->columns[k].type);
	}
	free(stmt->columns);
	free(stmt->query);
	for (k = 0; k < stmt->noptions; k++)
	{
		free(stmt->options[k].name);
		free(stmt->options[k].value);
	}
	free(stmt->options);
	free(stmt);
}

/* The option called name (lower case) in stmt, or NULL when absent. */
const RvOption *
rv_statement_option(const RvStatement *stmt, const char *name)
{
	int			k;

	if (stmt == NULL || name == NULL)
		return NULL;
	for (k = 0; k < stmt->noptions; k++)
		if (strcmp(stmt->options[k].name, name) == 0)
			return &stmt->options[k];
	return NULL;
}
