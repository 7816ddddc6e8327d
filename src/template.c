/*-------------------------------------------------------------------------
 *
 * template.c
 *	  The Jinja-subset template engine used for cell instructions; see
 *	  template.h for the language and the rendering rules.
 *
 * Compilation runs in two passes.  The lexer splits the source into text
 * runs, tag delimiters and expression tokens; whitespace control ({%- -%}
 * and friends), comments and {% raw %} blocks are resolved there, so the
 * text runs it emits are final.  The parser then builds a tree of nodes
 * (text, output, if, for) whose expressions are small trees of TplExpr.
 * Rendering walks that tree against a json-c scope object.
 *
 * Runtime values are TplVal: a json-c object reference (NULL for JSON
 * null) plus a "missing" flag, since Jinja distinguishes an undefined name
 * from a null one ("is defined", "default", strict input checks).
 *
 * Everything is bounded so that any byte sequence can be compiled and
 * rendered without crashing or running away: block nesting and expression
 * nesting (TPL_MAX_DEPTH), the size of every string built, the output
 * included (TPL_MAX_SIZE), and the total work of one rendering
 * (TPL_MAX_WORK: loop iterations, expression evaluations and bytes
 * copied).  Recursion in the parser, the evaluator, the renderer and the
 * free functions is limited by those depths.
 *
 * Pure: no PostgreSQL headers, memory from malloc, no global mutable
 * state, errors recorded in an RvError and reported by return value.
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"
#include "rvtext.h"

/* nesting limit for blocks, and separately for expressions */
#define TPL_MAX_DEPTH 64
/* limit on the output and on every intermediate string, in bytes */
#define TPL_MAX_SIZE (16 * 1024 * 1024)
/* limit on the work units of one rendering */
#define TPL_MAX_WORK 20000000
/* longest token text quoted in an error message, in bytes */
#define TPL_SNIPPET_MAX 40

#define TPL_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ----------------------------------------------------------------
 * Tokens
 * ----------------------------------------------------------------
 */
typedef enum TplTokKind
{
	TPL_T_TEXT,
	TPL_T_VAR_BEGIN,
	TPL_T_VAR_END,
	TPL_T_BLOCK_BEGIN,
	TPL_T_BLOCK_END,
	TPL_T_NAME,
	TPL_T_STRING,
	TPL_T_INT,
	TPL_T_FLOAT,
	TPL_T_PUNCT,
	TPL_T_EOF
} TplTokKind;

typedef enum TplPunct
{
	TPL_P_NONE,
	TPL_P_EQ,
	TPL_P_NE,
	TPL_P_LE,
	TPL_P_GE,
	TPL_P_LT,
	TPL_P_GT,
	TPL_P_PLUS,
	TPL_P_MINUS,
	TPL_P_STAR,
	TPL_P_SLASH,
	TPL_P_DSLASH,
	TPL_P_PERCENT,
	TPL_P_TILDE,
	TPL_P_PIPE,
	TPL_P_DOT,
	TPL_P_COMMA,
	TPL_P_LPAREN,
	TPL_P_RPAREN,
	TPL_P_LBRACKET,
	TPL_P_RBRACKET,
	TPL_P_ASSIGN
} TplPunct;

typedef struct TplToken
{
	TplTokKind	kind;
	TplPunct	punct;			/* for TPL_T_PUNCT */
	size_t		pos;			/* byte offset in the source */
	size_t		len;			/* byte length in the source */
	char	   *str;			/* decoded literal (TPL_T_STRING), malloc'd */
	size_t		slen;
	int64_t		ival;			/* TPL_T_INT */
	double		dval;			/* TPL_T_FLOAT */
} TplToken;

/* ----------------------------------------------------------------
 * Syntax tree
 * ----------------------------------------------------------------
 */
typedef enum TplExprKind
{
	TPL_E_LITERAL,				/* lit (NULL for none) */
	TPL_E_NAME,					/* name */
	TPL_E_ATTR,					/* a.name */
	TPL_E_INDEX,				/* a[b] */
	TPL_E_METHOD,				/* a.items() / keys() / values() */
	TPL_E_LIST,					/* [args...] */
	TPL_E_NOT,					/* not a */
	TPL_E_NEG,					/* -a */
	TPL_E_AND,					/* a and b */
	TPL_E_OR,					/* a or b */
	TPL_E_BINARY,				/* a op b */
	TPL_E_FILTER,				/* a | name(args...) */
	TPL_E_TEST,					/* a is [not] name */
	TPL_E_COND					/* b if a else c */
} TplExprKind;

typedef enum TplOp
{
	TPL_OP_EQ,
	TPL_OP_NE,
	TPL_OP_LT,
	TPL_OP_GT,
	TPL_OP_LE,
	TPL_OP_GE,
	TPL_OP_IN,
	TPL_OP_NOTIN,
	TPL_OP_CONCAT,
	TPL_OP_ADD,
	TPL_OP_SUB,
	TPL_OP_MUL,
	TPL_OP_DIV,
	TPL_OP_FLOORDIV,
	TPL_OP_MOD
} TplOp;

typedef enum TplFilterId
{
	TPL_F_TOJSON,
	TPL_F_DEFAULT,
	TPL_F_UPPER,
	TPL_F_LOWER,
	TPL_F_TRIM,
	TPL_F_LENGTH,
	TPL_F_JOIN,
	TPL_F_FIRST,
	TPL_F_LAST,
	TPL_F_STRING,
	TPL_F_INT,
	TPL_F_FLOAT,
	TPL_F_ROUND
} TplFilterId;

typedef enum TplTestId
{
	TPL_X_DEFINED,
	TPL_X_UNDEFINED,
	TPL_X_NONE,
	TPL_X_STRING,
	TPL_X_NUMBER,
	TPL_X_INTEGER,
	TPL_X_FLOAT,
	TPL_X_BOOLEAN,
	TPL_X_MAPPING,
	TPL_X_SEQUENCE,
	TPL_X_TRUE,
	TPL_X_FALSE,
	TPL_X_ODD,
	TPL_X_EVEN
} TplTestId;

typedef enum TplMethodId
{
	TPL_M_ITEMS,
	TPL_M_KEYS,
	TPL_M_VALUES
} TplMethodId;

typedef struct TplExpr
{
	TplExprKind kind;
	int			op;				/* TplOp, TplFilterId, TplTestId or
								 * TplMethodId */
	bool		negate;			/* "is not" */
	bool		on_input;		/* ATTR/INDEX whose base is the name "input" */
	int			depth;			/* height of this subtree */
	size_t		pos;			/* byte offset of the token, for errors */
	json_object *lit;			/* literal value, NULL for none */
	char	   *name;			/* name, attribute, filter or test name */
	struct TplExpr *a;
	struct TplExpr *b;
	struct TplExpr *c;
	struct TplExpr **args;		/* list items; filter arguments by slot */
	int			nargs;
} TplExpr;

typedef enum TplNodeKind
{
	TPL_N_TEXT,
	TPL_N_OUTPUT,
	TPL_N_IF,
	TPL_N_FOR
} TplNodeKind;

typedef struct TplBranch
{
	TplExpr    *cond;			/* NULL for the else branch */
	struct TplNode *body;
	struct TplBranch *next;
} TplBranch;

typedef struct TplNode
{
	TplNodeKind kind;
	size_t		pos;			/* text: start offset; others: tag offset */
	size_t		len;			/* text: length */
	TplExpr    *expr;			/* output expression, loop iterable */
	TplBranch  *branches;		/* if */
	char	   *vars[2];		/* for: loop variable names */
	int			nvars;
	struct TplNode *body;		/* for body */
	struct TplNode *else_body;	/* for else */
	struct TplNode *next;
} TplNode;

struct RvTemplate
{
	char	   *src;			/* NUL-terminated copy of the source */
	size_t		len;
	TplNode    *body;
};

/* ----------------------------------------------------------------
 * Compile-time state
 * ----------------------------------------------------------------
 */
typedef struct TplLexer
{
	const char *src;
	size_t		len;
	TplToken   *toks;
	size_t		ntoks;
	size_t		cap;
	RvError    *err;
} TplLexer;

typedef struct TplParser
{
	const char *src;
	TplToken   *toks;
	size_t		i;				/* current token; never moves past EOF */
	int			rdepth;			/* expression recursion depth */
	RvError    *err;
} TplParser;

/* ----------------------------------------------------------------
 * Render-time state
 * ----------------------------------------------------------------
 */
typedef struct TplVal
{
	bool		missing;		/* undefined (as opposed to null) */
	json_object *j;				/* owned reference; NULL for null/missing */
} TplVal;

typedef struct TplFrame
{
	const char *names[2];
	int			nnames;
	TplVal		vals[2];
	size_t		index0;
	size_t		length;
} TplFrame;

typedef struct TplCtx
{
	const RvTemplate *tmpl;
	json_object *scope;
	bool		strict;
	RvError    *err;
	uint64_t	work;
	RvBuf		out;
	TplFrame	frames[TPL_MAX_DEPTH + 1];
	int			nframes;
} TplCtx;

/* ----------------------------------------------------------------
 * Filter and test tables
 * ----------------------------------------------------------------
 */
typedef struct TplFilterDef
{
	const char *name;
	TplFilterId id;
	int			nparams;
	/* keyword names of each parameter: Jinja's name, then an alias */
	const char *params[2][2];
} TplFilterDef;

static const TplFilterDef tpl_filters[] = {
	{"tojson", TPL_F_TOJSON, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"default", TPL_F_DEFAULT, 2, {{"default_value", "value"}, {"boolean", NULL}}},
	{"d", TPL_F_DEFAULT, 2, {{"default_value", "value"}, {"boolean", NULL}}},
	{"upper", TPL_F_UPPER, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"lower", TPL_F_LOWER, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"trim", TPL_F_TRIM, 1, {{"chars", NULL}, {NULL, NULL}}},
	{"length", TPL_F_LENGTH, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"count", TPL_F_LENGTH, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"join", TPL_F_JOIN, 2, {{"d", "sep"}, {"attribute", NULL}}},
	{"first", TPL_F_FIRST, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"last", TPL_F_LAST, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"string", TPL_F_STRING, 0, {{NULL, NULL}, {NULL, NULL}}},
	{"int", TPL_F_INT, 1, {{"default", NULL}, {NULL, NULL}}},
	{"float", TPL_F_FLOAT, 1, {{"default", NULL}, {NULL, NULL}}},
	{"round", TPL_F_ROUND, 2, {{"precision", "ndigits"}, {"method", NULL}}},
	{NULL, TPL_F_TOJSON, 0, {{NULL, NULL}, {NULL, NULL}}}
};

typedef struct TplTestDef
{
	const char *name;
	TplTestId	id;
} TplTestDef;

static const TplTestDef tpl_tests[] = {
	{"defined", TPL_X_DEFINED},
	{"undefined", TPL_X_UNDEFINED},
	{"none", TPL_X_NONE},
	{"None", TPL_X_NONE},
	{"string", TPL_X_STRING},
	{"number", TPL_X_NUMBER},
	{"integer", TPL_X_INTEGER},
	{"float", TPL_X_FLOAT},
	{"boolean", TPL_X_BOOLEAN},
	{"mapping", TPL_X_MAPPING},
	{"sequence", TPL_X_SEQUENCE},
	{"iterable", TPL_X_SEQUENCE},
	{"true", TPL_X_TRUE},
	{"True", TPL_X_TRUE},
	{"false", TPL_X_FALSE},
	{"False", TPL_X_FALSE},
	{"odd", TPL_X_ODD},
	{"even", TPL_X_EVEN},
	{NULL, TPL_X_DEFINED}
};

/* names that cannot be used as loop variables or plain names */
static const char *const tpl_keywords[] = {
	"and", "or", "not", "in", "is", "if", "else",
	"true", "false", "none", "True", "False", "None", NULL
};

/* forward declarations for the mutually recursive parts */
static TplExpr *tpl_parse_expr(TplParser *p);
static TplExpr *tpl_parse_or(TplParser *p);
static TplExpr *tpl_parse_compare(TplParser *p);
static TplExpr *tpl_parse_math1(TplParser *p);
static TplExpr *tpl_parse_unary(TplParser *p, bool with_filter);
static bool tpl_parse_body(TplParser *p, int depth, TplNode **head);
static void tpl_nodes_free(TplNode *n);
static bool tpl_eval(TplCtx *c, const TplExpr *e, bool strict, TplVal *out);
static bool tpl_render_nodes(TplCtx *c, const TplNode *n, int depth);
static void tpl_verror(RvError *err, const char *src, size_t pos,
					   const char *fmt, va_list ap)
			__attribute__((format(printf, 4, 0)));
static void tpl_perror(TplParser *p, size_t pos, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
static void tpl_lerror(TplLexer *lx, size_t pos, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
static void tpl_rerror(TplCtx *c, size_t pos, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/* ----------------------------------------------------------------
 * Small helpers: errors, characters, buffers
 * ----------------------------------------------------------------
 */

/*
 * Record an error message (first error wins) and, when src is given, its
 * location from a byte offset into src.
 */
static void
tpl_verror(RvError *err, const char *src, size_t pos, const char *fmt,
		   va_list ap)
{
	char		buf[RV_ERRMSG_LEN];

	if (err == NULL || err->set)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	rv_error_set(err, "%s", buf);
	if (src != NULL)
		rv_error_locate(err, src, pos);
}

/* Record a compile error located at byte offset pos of the source. */
static void
tpl_perror(TplParser *p, size_t pos, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	tpl_verror(p->err, p->src, pos, fmt, ap);
	va_end(ap);
}

/* Record a lexer error located at byte offset pos of the source. */
static void
tpl_lerror(TplLexer *lx, size_t pos, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	tpl_verror(lx->err, lx->src, pos, fmt, ap);
	va_end(ap);
}

/* Record a rendering error located at byte offset pos of the template. */
static void
tpl_rerror(TplCtx *c, size_t pos, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	tpl_verror(c->err, c->tmpl->src, pos, fmt, ap);
	va_end(ap);
}

/*
 * Length to quote of the source text s[0..n) in an error message: at most
 * TPL_SNIPPET_MAX bytes, never cutting a UTF-8 character.
 */
static int
tpl_snippet_len(const char *s, size_t n)
{
	size_t		k = n;

	if (k > TPL_SNIPPET_MAX)
	{
		k = TPL_SNIPPET_MAX;
		while (k > 0 && (((unsigned char) s[k]) & 0xC0) == 0x80)
			k--;
	}
	return (int) k;
}

/* ----------------------------------------------------------------
 * Lexer
 * ----------------------------------------------------------------
 */

/* Append a token; NULL (error recorded) when out of memory. */
static TplToken *
tpl_lex_push(TplLexer *lx, TplTokKind kind, size_t pos, size_t len)
{
	TplToken   *t;

	if (lx->ntoks == lx->cap)
	{
		size_t		ncap = lx->cap ? lx->cap * 2 : 64;
		TplToken   *toks = realloc(lx->toks, ncap * sizeof(TplToken));

		if (toks == NULL)
		{
			tpl_lerror(lx, pos, "out of memory");
			return NULL;
		}
		lx->toks = toks;
		lx->cap = ncap;
	}
	t = &lx->toks[lx->ntoks++];
	memset(t, 0, sizeof(TplToken));
	t->kind = kind;
	t->pos = pos;
	t->len = len;
	return t;
}

/*
 * Emit the text run src[start..end), less leading whitespace when lstrip
 * and trailing whitespace when rstrip (whitespace control).  Empty runs
 * are dropped.
 */
static bool
tpl_lex_text(TplLexer *lx, size_t start, size_t end, bool lstrip, bool rstrip)
{
	if (lstrip)
		while (start < end && rv_is_space(lx->src[start]))
			start++;
	if (rstrip)
		while (end > start && rv_is_space(lx->src[end - 1]))
			end--;
	if (end == start)
		return true;
	return tpl_lex_push(lx, TPL_T_TEXT, start, end - start) != NULL;
}

/* Identify the punctuation at s[p]; sets *plen; TPL_P_NONE if invalid. */
static TplPunct
tpl_lex_punct(const char *s, size_t n, size_t p, size_t *plen)
{
	char		ch = s[p];
	char		next = p + 1 < n ? s[p + 1] : '\0';

	*plen = 2;
	if (ch == '=' && next == '=')
		return TPL_P_EQ;
	if (ch == '!' && next == '=')
		return TPL_P_NE;
	if (ch == '<' && next == '=')
		return TPL_P_LE;
	if (ch == '>' && next == '=')
		return TPL_P_GE;
	if (ch == '/' && next == '/')
		return TPL_P_DSLASH;
	*plen = 1;
	switch (ch)
	{
		case '<':
			return TPL_P_LT;
		case '>':
			return TPL_P_GT;
		case '+':
			return TPL_P_PLUS;
		case '-':
			return TPL_P_MINUS;
		case '*':
			return TPL_P_STAR;
		case '/':
			return TPL_P_SLASH;
		case '%':
			return TPL_P_PERCENT;
		case '~':
			return TPL_P_TILDE;
		case '|':
			return TPL_P_PIPE;
		case '.':
			return TPL_P_DOT;
		case ',':
			return TPL_P_COMMA;
		case '(':
			return TPL_P_LPAREN;
		case ')':
			return TPL_P_RPAREN;
		case '[':
			return TPL_P_LBRACKET;
		case ']':
			return TPL_P_RBRACKET;
		case '=':
			return TPL_P_ASSIGN;
		default:
			return TPL_P_NONE;
	}
}

/* Value of the hex digit ch, or -1. */
static int
tpl_hex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Read 4 hex digits at s[p..p+4), or return -1. */
static long
tpl_hex4(const char *s, size_t n, size_t p)
{
	long		v = 0;
	int			k;

	if (p + 4 > n)
		return -1;
	for (k = 0; k < 4; k++)
	{
		int			h = tpl_hex(s[p + k]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* Encode code point cp as UTF-8 into out (4 bytes); returns the length. */
static int
tpl_utf8_encode(long cp, char *out)
{
	if (cp <= 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
		cp = 0xFFFD;			/* no NUL bytes, no lone surrogates */
	return (int) rv_utf8_encode((uint32_t) cp, out);
}

/*
 * Decode the escape at the backslash s[*pp] (s has n bytes, and a byte
 * follows the backslash) into enc (at least 4 bytes); returns its length
 * and moves *pp past it.  \n \t \r \b \f \\ \' \" \/ give the character,
 * \uXXXX a code point as UTF-8 (a surrogate pair written as two escapes
 * combined); any other backslash is kept as written, as Python does, and
 * the byte after it is read as plain text.
 */
static int
tpl_lex_escape(const char *s, size_t n, size_t *pp, char *enc)
{
	size_t		p = *pp;
	int			enclen = 0;

	switch (s[p + 1])
	{
		case 'n':
			enc[0] = '\n';
			enclen = 1;
			break;
		case 't':
			enc[0] = '\t';
			enclen = 1;
			break;
		case 'r':
			enc[0] = '\r';
			enclen = 1;
			break;
		case 'b':
			enc[0] = '\b';
			enclen = 1;
			break;
		case 'f':
			enc[0] = '\f';
			enclen = 1;
			break;
		case '\\':
		case '\'':
		case '"':
		case '/':
			enc[0] = s[p + 1];
			enclen = 1;
			break;
		case 'u':
			{
				long		cp = tpl_hex4(s, n, p + 2);

				if (cp < 0)
					break;
				p += 4;
				if (cp >= 0xD800 && cp <= 0xDBFF && p + 7 < n &&
					s[p + 2] == '\\' && s[p + 3] == 'u')
				{
					long		lo = tpl_hex4(s, n, p + 4);

					if (lo >= 0xDC00 && lo <= 0xDFFF)
					{
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						p += 6;
					}
				}
				enclen = tpl_utf8_encode(cp, enc);
				break;
			}
		default:
			break;
	}
	if (enclen == 0)
	{
		/* unknown escape: keep the backslash, the next byte follows */
		enc[0] = '\\';
		enclen = 1;
		p += 1;
	}
	else
		p += 2;
	*pp = p;
	return enclen;
}

/*
 * Lex a quoted string literal starting at the quote src[*pp]; decodes the
 * escapes of tpl_lex_escape().  Fails on an unterminated literal and on
 * one longer than TPL_MAX_SIZE.
 */
static bool
tpl_lex_string(TplLexer *lx, size_t *pp)
{
	const char *s = lx->src;
	size_t		n = lx->len;
	size_t		start = *pp;
	size_t		p = start + 1;
	char		quote = s[start];
	RvBuf		b = RV_BUF_INIT;
	TplToken   *t;

	for (;;)
	{
		char		enc[8];
		int			enclen;
		size_t		run = p;

		/* copy a run of plain characters in one go */
		while (p < n && s[p] != quote && s[p] != '\\')
			p++;
		if (!rv_buf_append(&b, s + run, p - run))
			goto oom;
		if (p < n && s[p] == quote)
		{
			p++;
			break;
		}
		/* the end of the text, or a backslash at its last byte */
		if (p + 1 >= n)
		{
			rv_buf_free(&b);
			tpl_lerror(lx, start, "unterminated string literal");
			return false;
		}
		enclen = tpl_lex_escape(s, n, &p, enc);
		if (!rv_buf_append(&b, enc, (size_t) enclen))
			goto oom;
	}
	if (b.len > TPL_MAX_SIZE)
	{
		rv_buf_free(&b);
		tpl_lerror(lx, start, "string literal exceeds the limit of 16 MB");
		return false;
	}
	t = tpl_lex_push(lx, TPL_T_STRING, start, p - start);
	if (t == NULL)
	{
		rv_buf_free(&b);
		return false;
	}
	t->str = b.data;
	t->slen = b.len;
	*pp = p;
	return true;

oom:
	rv_buf_free(&b);
	tpl_lerror(lx, start, "out of memory");
	return false;
}

/*
 * Lex a number at src[*pp].  Right after a "." only digits are taken (so
 * "a.0.1" is two attribute steps).  Integers that overflow become floats;
 * a float literal that overflows is an error.
 */
static bool
tpl_lex_number(TplLexer *lx, size_t *pp, bool after_dot)
{
	const char *s = lx->src;
	size_t		n = lx->len;
	size_t		start = *pp;
	size_t		p = start;
	bool		is_float = false;
	int64_t		ival = 0;
	double		dval = 0;
	TplToken   *t;

	while (p < n && rv_is_digit(s[p]))
		p++;
	if (!after_dot)
	{
		if (p + 1 < n && s[p] == '.' && rv_is_digit(s[p + 1]))
		{
			p++;
			while (p < n && rv_is_digit(s[p]))
				p++;
			is_float = true;
		}
		if (p < n && (s[p] == 'e' || s[p] == 'E'))
		{
			size_t		q = p + 1;

			if (q < n && (s[q] == '+' || s[q] == '-'))
				q++;
			if (q < n && rv_is_digit(s[q]))
			{
				p = q;
				while (p < n && rv_is_digit(s[p]))
					p++;
				is_float = true;
			}
		}
	}
	if (!is_float)
	{
		size_t		k;

		for (k = start; k < p; k++)
		{
			int			dig = s[k] - '0';

			if (ival > (INT64_MAX - dig) / 10)
			{
				is_float = true;
				break;
			}
			ival = ival * 10 + dig;
		}
	}
	if (is_float)
	{
		char	   *copy = malloc(p - start + 1);

		if (copy == NULL)
		{
			tpl_lerror(lx, start, "out of memory");
			return false;
		}
		memcpy(copy, s + start, p - start);
		copy[p - start] = '\0';
		dval = strtod(copy, NULL);
		free(copy);
		if (!isfinite(dval))
		{
			tpl_lerror(lx, start, "numeric literal out of range");
			return false;
		}
	}
	t = tpl_lex_push(lx, is_float ? TPL_T_FLOAT : TPL_T_INT, start, p - start);
	if (t == NULL)
		return false;
	t->ival = ival;
	t->dval = dval;
	*pp = p;
	return true;
}

/*
 * After "{% raw %}" ending at *pp: find the matching "{% endraw %}" and
 * emit everything in between as one text run.  lstrip is the whitespace
 * control of the raw tag's end; *lstrip_out gets the endraw's.
 */
static bool
tpl_lex_raw(TplLexer *lx, size_t rawpos, size_t *pp, bool lstrip,
			bool *lstrip_out)
{
	const char *s = lx->src;
	size_t		n = lx->len;
	size_t		start = *pp;
	size_t		j;

	for (j = start; j + 1 < n; j++)
	{
		size_t		q;
		bool		rs = false;
		bool		ls = false;

		if (s[j] != '{' || s[j + 1] != '%')
			continue;
		q = j + 2;
		if (q < n && s[q] == '-')
		{
			rs = true;
			q++;
		}
		while (q < n && rv_is_space(s[q]))
			q++;
		if (q + 6 > n || memcmp(s + q, "endraw", 6) != 0)
			continue;
		q += 6;
		if (q < n && rv_is_name_char(s[q]))
			continue;
		while (q < n && rv_is_space(s[q]))
			q++;
		if (q < n && s[q] == '-')
		{
			ls = true;
			q++;
		}
		if (q + 1 < n && s[q] == '%' && s[q + 1] == '}')
		{
			if (!tpl_lex_text(lx, start, j, lstrip, rs))
				return false;
			*pp = q + 2;
			*lstrip_out = ls;
			return true;
		}
	}
	tpl_lerror(lx, rawpos, "unexpected end of template, expected \"endraw\"");
	return false;
}

/*
 * Lex one {{ ... }} or {% ... %} tag whose opener is at src[k]: emits the
 * begin token, the expression tokens and the end token, and handles
 * {% raw %}.  On return *pp is past the tag and *lstrip_out tells whether
 * the following text loses its leading whitespace.
 */
static bool
tpl_lex_tag(TplLexer *lx, size_t k, bool is_var, size_t *pp,
			bool *lstrip_out)
{
	const char *s = lx->src;
	size_t		n = lx->len;
	size_t		p = k + 2;
	size_t		first;
	char		closer = is_var ? '}' : '%';

	if (p < n && (s[p] == '-' || (!is_var && s[p] == '+')))
		p++;
	if (tpl_lex_push(lx, is_var ? TPL_T_VAR_BEGIN : TPL_T_BLOCK_BEGIN,
					 k, p - k) == NULL)
		return false;
	first = lx->ntoks;
	for (;;)
	{
		size_t		plen;
		TplPunct	punct;
		TplToken   *t;

		while (p < n && rv_is_space(s[p]))
			p++;
		if (p >= n)
		{
			tpl_lerror(lx, k, "unclosed \"%s\"", is_var ? "{{" : "{%");
			return false;
		}
		/* the closer, with or without whitespace control */
		if ((s[p] == '-' && p + 2 < n && s[p + 1] == closer && s[p + 2] == '}') ||
			(s[p] == closer && p + 1 < n && s[p + 1] == '}'))
		{
			bool		strip = s[p] == '-';
			size_t		clen = strip ? 3 : 2;

			/* {% raw %}: the rest up to {% endraw %} is plain text */
			if (!is_var && lx->ntoks == first + 1 &&
				lx->toks[first].kind == TPL_T_NAME &&
				lx->toks[first].len == 3 &&
				memcmp(s + lx->toks[first].pos, "raw", 3) == 0)
			{
				size_t		rawpos = lx->toks[first].pos;

				lx->ntoks -= 2;
				*pp = p + clen;
				return tpl_lex_raw(lx, rawpos, pp, strip, lstrip_out);
			}
			if (tpl_lex_push(lx, is_var ? TPL_T_VAR_END : TPL_T_BLOCK_END,
							 p, clen) == NULL)
				return false;
			*pp = p + clen;
			*lstrip_out = strip;
			return true;
		}
		if (rv_is_name_start(s[p]))
		{
			size_t		q = p;

			while (q < n && rv_is_name_char(s[q]))
				q++;
			if (tpl_lex_push(lx, TPL_T_NAME, p, q - p) == NULL)
				return false;
			p = q;
			continue;
		}
		if (rv_is_digit(s[p]))
		{
			bool		after_dot = false;

			if (lx->ntoks > first)
			{
				t = &lx->toks[lx->ntoks - 1];
				after_dot = t->kind == TPL_T_PUNCT && t->punct == TPL_P_DOT;
			}
			if (!tpl_lex_number(lx, &p, after_dot))
				return false;
			continue;
		}
		if (s[p] == '\'' || s[p] == '"')
		{
			if (!tpl_lex_string(lx, &p))
				return false;
			continue;
		}
		punct = tpl_lex_punct(s, n, p, &plen);
		if (punct == TPL_P_NONE)
		{
			size_t		cl = rv_utf8_charlen(s, n, p);

			tpl_lerror(lx, p, "syntax error in expression at \"%.*s\"",
					   (int) cl, s + p);
			return false;
		}
		t = tpl_lex_push(lx, TPL_T_PUNCT, p, plen);
		if (t == NULL)
			return false;
		t->punct = punct;
		p += plen;
	}
}

/*
 * Split the whole source into tokens, ending with TPL_T_EOF.  Comments
 * disappear here, and whitespace control is applied to the text runs.
 */
static bool
tpl_lex(TplLexer *lx)
{
	const char *s = lx->src;
	size_t		n = lx->len;
	size_t		pos = 0;
	bool		lstrip = false;

	while (pos < n)
	{
		size_t		k = pos;
		char		kind;
		bool		rstrip;

		while (k + 1 < n &&
			   !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')))
			k++;
		if (k + 1 >= n)
		{
			if (!tpl_lex_text(lx, pos, n, lstrip, false))
				return false;
			pos = n;
			break;
		}
		kind = s[k + 1];
		rstrip = k + 2 < n && s[k + 2] == '-';
		if (!tpl_lex_text(lx, pos, k, lstrip, rstrip))
			return false;
		lstrip = false;
		if (kind == '#')
		{
			size_t		body = k + 2 + (rstrip ? 1 : 0);
			size_t		j = body;

			while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}'))
				j++;
			if (j + 1 >= n)
			{
				tpl_lerror(lx, k, "unclosed \"{#\"");
				return false;
			}
			lstrip = j > body && s[j - 1] == '-';
			pos = j + 2;
			continue;
		}
		if (!tpl_lex_tag(lx, k, kind == '{', &pos, &lstrip))
			return false;
	}
	return tpl_lex_push(lx, TPL_T_EOF, n, 0) != NULL;
}

static void
tpl_tokens_free(TplToken *toks, size_t ntoks)
{
	size_t		i;

	for (i = 0; i < ntoks; i++)
		free(toks[i].str);
	free(toks);
}

/* ----------------------------------------------------------------
 * Syntax tree construction and destruction
 * ----------------------------------------------------------------
 */

/* Free an expression tree (its height is bounded by TPL_MAX_DEPTH). */
static void
tpl_expr_free(TplExpr *e)
{
	int			i;

	if (e == NULL)
		return;
	tpl_expr_free(e->a);
	tpl_expr_free(e->b);
	tpl_expr_free(e->c);
	for (i = 0; i < e->nargs; i++)
		tpl_expr_free(e->args[i]);
	free(e->args);
	free(e->name);
	json_object_put(e->lit);
	free(e);
}

/* Free a list of branches of an if node. */
static void
tpl_branches_free(TplBranch *br)
{
	while (br != NULL)
	{
		TplBranch  *next = br->next;

		tpl_expr_free(br->cond);
		tpl_nodes_free(br->body);
		free(br);
		br = next;
	}
}

/* Free a list of nodes (and, recursively, their bodies). */
static void
tpl_nodes_free(TplNode *n)
{
	while (n != NULL)
	{
		TplNode    *next = n->next;

		tpl_expr_free(n->expr);
		tpl_branches_free(n->branches);
		free(n->vars[0]);
		free(n->vars[1]);
		tpl_nodes_free(n->body);
		tpl_nodes_free(n->else_body);
		free(n);
		n = next;
	}
}

/*
 * Compute the height of e from its children; beyond TPL_MAX_DEPTH, free e
 * and fail.  Returns e or NULL.
 */
static TplExpr *
tpl_expr_done(TplParser *p, TplExpr *e)
{
	int			d = 0;
	int			i;

	if (e->a != NULL && e->a->depth > d)
		d = e->a->depth;
	if (e->b != NULL && e->b->depth > d)
		d = e->b->depth;
	if (e->c != NULL && e->c->depth > d)
		d = e->c->depth;
	for (i = 0; i < e->nargs; i++)
		if (e->args[i] != NULL && e->args[i]->depth > d)
			d = e->args[i]->depth;
	e->depth = d + 1;
	if (e->depth > TPL_MAX_DEPTH)
	{
		tpl_perror(p, e->pos, "expression nesting exceeds the maximum depth of %d",
				   TPL_MAX_DEPTH);
		tpl_expr_free(e);
		return NULL;
	}
	return e;
}

/*
 * Make an expression node owning the children a, b, c.  On failure the
 * children are freed too and NULL is returned with the error recorded.
 */
static TplExpr *
tpl_new_expr(TplParser *p, TplExprKind kind, size_t pos,
			 TplExpr *a, TplExpr *b, TplExpr *c)
{
	TplExpr    *e = calloc(1, sizeof(TplExpr));

	if (e == NULL)
	{
		tpl_expr_free(a);
		tpl_expr_free(b);
		tpl_expr_free(c);
		tpl_perror(p, pos, "out of memory");
		return NULL;
	}
	e->kind = kind;
	e->pos = pos;
	e->a = a;
	e->b = b;
	e->c = c;
	return tpl_expr_done(p, e);
}

/* Make a literal node owning lit (NULL is the literal none). */
static TplExpr *
tpl_new_lit(TplParser *p, size_t pos, json_object *lit)
{
	TplExpr    *e = tpl_new_expr(p, TPL_E_LITERAL, pos, NULL, NULL, NULL);

	if (e == NULL)
	{
		json_object_put(lit);
		return NULL;
	}
	e->lit = lit;
	return e;
}

/* malloc'd NUL-terminated copy of s[0..n), or NULL */
static char *
tpl_strndup(const char *s, size_t n)
{
	char	   *r = malloc(n + 1);

	if (r != NULL)
	{
		memcpy(r, s, n);
		r[n] = '\0';
	}
	return r;
}

/*
 * Format a finite double the way Python's repr() does: the shortest text
 * that reads back as the same value, always with a "." or an exponent
 * (0.1, 2.0, 1e+16, 1.5e-07).  buf must hold at least 40 bytes.
 */
static void
tpl_format_double(double d, char *buf, size_t size)
{
	char		tmp[40];
	char		digits[24];
	int			ndig = 0;
	int			exp10;
	int			prec;
	const char *q;
	size_t		o = 0;
	int			i;

	if (d == 0)
	{
		snprintf(buf, size, "%s", signbit(d) ? "-0.0" : "0.0");
		return;
	}
	for (prec = 1; prec < 17; prec++)
	{
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
	q = tmp;
	if (*q == '-')
	{
		buf[o++] = '-';
		q++;
	}
	while (*q && *q != 'e' && ndig < (int) sizeof(digits) - 1)
	{
		if (rv_is_digit(*q))
			digits[ndig++] = *q;
		q++;
	}
	digits[ndig] = '\0';
	exp10 = (*q == 'e') ? atoi(q + 1) : 0;
	if (exp10 >= -4 && exp10 < 16)
	{
		if (exp10 >= 0)
		{
			for (i = 0; i <= exp10; i++)
				buf[o++] = i < ndig ? digits[i] : '0';
			buf[o++] = '.';
			if (ndig > exp10 + 1)
				for (i = exp10 + 1; i < ndig; i++)
					buf[o++] = digits[i];
			else
				buf[o++] = '0';
		}
		else
		{
			buf[o++] = '0';
			buf[o++] = '.';
			for (i = 0; i < -exp10 - 1; i++)
				buf[o++] = '0';
			for (i = 0; i < ndig; i++)
				buf[o++] = digits[i];
		}
		buf[o] = '\0';
	}
	else
	{
		buf[o++] = digits[0];
		if (ndig > 1)
		{
			buf[o++] = '.';
			for (i = 1; i < ndig; i++)
				buf[o++] = digits[i];
		}
		snprintf(buf + o, size - o, "e%c%02d", exp10 < 0 ? '-' : '+',
				 exp10 < 0 ? -exp10 : exp10);
	}
}

/* A new json-c double (finite d) that serializes in the shortest form. */
static json_object *
tpl_new_double(double d)
{
	char		buf[64];

	tpl_format_double(d, buf, sizeof(buf));
	return json_object_new_double_s(d, buf);
}

/* ----------------------------------------------------------------
 * Parser: tokens
 * ----------------------------------------------------------------
 */
static const TplToken *
tpl_peek(TplParser *p)
{
	return &p->toks[p->i];
}

/* The token after the current one (EOF stays EOF). */
static const TplToken *
tpl_peek2(TplParser *p)
{
	if (p->toks[p->i].kind == TPL_T_EOF)
		return &p->toks[p->i];
	return &p->toks[p->i + 1];
}

static void
tpl_advance(TplParser *p)
{
	if (p->toks[p->i].kind != TPL_T_EOF)
		p->i++;
}

static bool
tpl_tok_is_name(TplParser *p, const TplToken *t, const char *name)
{
	size_t		n = strlen(name);

	return t->kind == TPL_T_NAME && t->len == n &&
		memcmp(p->src + t->pos, name, n) == 0;
}

static bool
tpl_tok_is_punct(const TplToken *t, TplPunct punct)
{
	return t->kind == TPL_T_PUNCT && t->punct == punct;
}

static bool
tpl_is_keyword(TplParser *p, const TplToken *t)
{
	int			i;

	for (i = 0; tpl_keywords[i] != NULL; i++)
		if (tpl_tok_is_name(p, t, tpl_keywords[i]))
			return true;
	return false;
}

/*
 * Record "syntax error in <where> at "<token>"" for token t; where is
 * "expression" or a tag description such as "\"for\" tag".
 */
static void
tpl_syntax_error(TplParser *p, const TplToken *t, const char *where)
{
	if (t->kind == TPL_T_EOF)
		tpl_perror(p, t->pos, "syntax error in %s at end of template", where);
	else
		tpl_perror(p, t->pos, "syntax error in %s at \"%.*s\"", where,
				   tpl_snippet_len(p->src + t->pos, t->len), p->src + t->pos);
}

/* Enter one level of expression recursion; fails beyond TPL_MAX_DEPTH. */
static bool
tpl_enter(TplParser *p)
{
	if (p->rdepth >= TPL_MAX_DEPTH)
	{
		tpl_perror(p, tpl_peek(p)->pos,
				   "expression nesting exceeds the maximum depth of %d",
				   TPL_MAX_DEPTH);
		return false;
	}
	p->rdepth++;
	return true;
}

/* ----------------------------------------------------------------
 * Parser: expressions (lowest precedence first)
 * ----------------------------------------------------------------
 */

/* expr: or_expr [ "if" or_expr [ "else" expr ] ] */
static TplExpr *
tpl_parse_expr(TplParser *p)
{
	TplExpr    *e;

	if (!tpl_enter(p))
		return NULL;
	e = tpl_parse_or(p);
	if (e != NULL && tpl_tok_is_name(p, tpl_peek(p), "if"))
	{
		size_t		pos = tpl_peek(p)->pos;
		TplExpr    *cond;
		TplExpr    *alt = NULL;

		tpl_advance(p);
		cond = tpl_parse_or(p);
		if (cond == NULL)
		{
			tpl_expr_free(e);
			e = NULL;
		}
		else if (tpl_tok_is_name(p, tpl_peek(p), "else"))
		{
			tpl_advance(p);
			alt = tpl_parse_expr(p);
			if (alt == NULL)
			{
				tpl_expr_free(e);
				tpl_expr_free(cond);
				e = NULL;
			}
		}
		if (e != NULL)
			e = tpl_new_expr(p, TPL_E_COND, pos, cond, e, alt);
	}
	p->rdepth--;
	return e;
}

/* not_expr: "not" not_expr | comparison */
static TplExpr *
tpl_parse_not(TplParser *p)
{
	if (tpl_tok_is_name(p, tpl_peek(p), "not"))
	{
		size_t		pos = tpl_peek(p)->pos;
		TplExpr    *a;

		if (!tpl_enter(p))
			return NULL;
		tpl_advance(p);
		a = tpl_parse_not(p);
		p->rdepth--;
		if (a == NULL)
			return NULL;
		return tpl_new_expr(p, TPL_E_NOT, pos, a, NULL, NULL);
	}
	return tpl_parse_compare(p);
}

/*
 * One level of left-associative boolean operators: operand { word operand },
 * each occurrence of word joining the two sides into an expression of kind.
 */
static TplExpr *
tpl_parse_left_assoc(TplParser *p, const char *word, TplExprKind kind,
					 TplExpr *(*operand) (TplParser *p))
{
	TplExpr    *left = operand(p);

	while (left != NULL && tpl_tok_is_name(p, tpl_peek(p), word))
	{
		size_t		pos = tpl_peek(p)->pos;
		TplExpr    *right;

		tpl_advance(p);
		right = operand(p);
		if (right == NULL)
		{
			tpl_expr_free(left);
			return NULL;
		}
		left = tpl_new_expr(p, kind, pos, left, right, NULL);
	}
	return left;
}

/* and_expr: not_expr { "and" not_expr } */
static TplExpr *
tpl_parse_and(TplParser *p)
{
	return tpl_parse_left_assoc(p, "and", TPL_E_AND, tpl_parse_not);
}

/* or_expr: and_expr { "or" and_expr } */
static TplExpr *
tpl_parse_or(TplParser *p)
{
	return tpl_parse_left_assoc(p, "or", TPL_E_OR, tpl_parse_and);
}

/*
 * If the current token(s) form a comparison operator, return it and set
 * *ntoks to the number of tokens it takes; otherwise return -1.
 */
static int
tpl_compare_op(TplParser *p, int *ntoks)
{
	const TplToken *t = tpl_peek(p);

	*ntoks = 1;
	if (t->kind == TPL_T_PUNCT)
	{
		switch (t->punct)
		{
			case TPL_P_EQ:
				return TPL_OP_EQ;
			case TPL_P_NE:
				return TPL_OP_NE;
			case TPL_P_LT:
				return TPL_OP_LT;
			case TPL_P_GT:
				return TPL_OP_GT;
			case TPL_P_LE:
				return TPL_OP_LE;
			case TPL_P_GE:
				return TPL_OP_GE;
			default:
				return -1;
		}
	}
	if (tpl_tok_is_name(p, t, "in"))
		return TPL_OP_IN;
	if (tpl_tok_is_name(p, t, "not") && tpl_tok_is_name(p, tpl_peek2(p), "in"))
	{
		*ntoks = 2;
		return TPL_OP_NOTIN;
	}
	return -1;
}

/*
 * comparison: math1 [ op math1 ] with op one of == != < > <= >= in
 * "not in".  Chained comparisons (a < b < c) are rejected.
 */
static TplExpr *
tpl_parse_compare(TplParser *p)
{
	TplExpr    *left = tpl_parse_math1(p);
	TplExpr    *right;
	int			op;
	int			ntoks;
	size_t		pos;

	if (left == NULL)
		return NULL;
	op = tpl_compare_op(p, &ntoks);
	if (op < 0)
		return left;
	pos = tpl_peek(p)->pos;
	tpl_advance(p);
	if (ntoks == 2)
		tpl_advance(p);
	right = tpl_parse_math1(p);
	if (right == NULL)
	{
		tpl_expr_free(left);
		return NULL;
	}
	left = tpl_new_expr(p, TPL_E_BINARY, pos, left, right, NULL);
	if (left == NULL)
		return NULL;
	left->op = op;
	if (tpl_compare_op(p, &ntoks) >= 0)
	{
		tpl_syntax_error(p, tpl_peek(p), "expression");
		tpl_expr_free(left);
		return NULL;
	}
	return left;
}

/*
 * Parse a left-associative chain of binary operators: operands come from
 * next(), operators are the puncts in ops mapped to the TplOps in tops.
 */
static TplExpr *
tpl_parse_chain(TplParser *p, TplExpr *(*next) (TplParser *),
				const TplPunct *ops, const TplOp *tops, int nops)
{
	TplExpr    *left = next(p);

	while (left != NULL)
	{
		const TplToken *t = tpl_peek(p);
		int			k;
		size_t		pos = t->pos;
		TplExpr    *right;

		for (k = 0; k < nops; k++)
			if (tpl_tok_is_punct(t, ops[k]))
				break;
		if (k == nops)
			break;
		tpl_advance(p);
		right = next(p);
		if (right == NULL)
		{
			tpl_expr_free(left);
			return NULL;
		}
		left = tpl_new_expr(p, TPL_E_BINARY, pos, left, right, NULL);
		if (left != NULL)
			left->op = tops[k];
	}
	return left;
}

/* unary with filters and tests, as an operand of the binary operators */
static TplExpr *
tpl_parse_operand(TplParser *p)
{
	return tpl_parse_unary(p, true);
}

/* math2: unary { ("*" | "/" | "//" | "%") unary } */
static TplExpr *
tpl_parse_math2(TplParser *p)
{
	static const TplPunct ops[] = {TPL_P_STAR, TPL_P_SLASH, TPL_P_DSLASH, TPL_P_PERCENT};
	static const TplOp tops[] = {TPL_OP_MUL, TPL_OP_DIV, TPL_OP_FLOORDIV, TPL_OP_MOD};

	return tpl_parse_chain(p, tpl_parse_operand, ops, tops, 4);
}

/* concat: math2 { "~" math2 } (binds tighter than + and -, as in Jinja) */
static TplExpr *
tpl_parse_concat(TplParser *p)
{
	static const TplPunct ops[] = {TPL_P_TILDE};
	static const TplOp tops[] = {TPL_OP_CONCAT};

	return tpl_parse_chain(p, tpl_parse_math2, ops, tops, 1);
}

/* math1: concat { ("+" | "-") concat } */
static TplExpr *
tpl_parse_math1(TplParser *p)
{
	static const TplPunct ops[] = {TPL_P_PLUS, TPL_P_MINUS};
	static const TplOp tops[] = {TPL_OP_ADD, TPL_OP_SUB};

	return tpl_parse_chain(p, tpl_parse_concat, ops, tops, 2);
}

/* Expect the punctuation punct and consume it; else a syntax error. */
static bool
tpl_expect_punct(TplParser *p, TplPunct punct)
{
	if (!tpl_tok_is_punct(tpl_peek(p), punct))
	{
		tpl_syntax_error(p, tpl_peek(p), "expression");
		return false;
	}
	tpl_advance(p);
	return true;
}

/* list: "[" [ expr { "," expr } [","] ] "]"  (the "[" is current) */
static TplExpr *
tpl_parse_list(TplParser *p)
{
	TplExpr    *e = tpl_new_expr(p, TPL_E_LIST, tpl_peek(p)->pos, NULL, NULL, NULL);
	int			cap = 0;

	if (e == NULL)
		return NULL;
	tpl_advance(p);
	while (!tpl_tok_is_punct(tpl_peek(p), TPL_P_RBRACKET))
	{
		TplExpr    *item;

		if (e->nargs == cap)
		{
			int			ncap = cap ? cap * 2 : 4;
			TplExpr   **args = realloc(e->args, (size_t) ncap * sizeof(TplExpr *));

			if (args == NULL)
			{
				tpl_perror(p, tpl_peek(p)->pos, "out of memory");
				tpl_expr_free(e);
				return NULL;
			}
			e->args = args;
			cap = ncap;
		}
		item = tpl_parse_expr(p);
		if (item == NULL)
		{
			tpl_expr_free(e);
			return NULL;
		}
		e->args[e->nargs++] = item;
		if (tpl_tok_is_punct(tpl_peek(p), TPL_P_COMMA))
			tpl_advance(p);
		else if (!tpl_tok_is_punct(tpl_peek(p), TPL_P_RBRACKET))
		{
			tpl_syntax_error(p, tpl_peek(p), "expression");
			tpl_expr_free(e);
			return NULL;
		}
	}
	tpl_advance(p);
	return tpl_expr_done(p, e);
}

/* primary: literal | name | "(" expr ")" | list */
static TplExpr *
tpl_parse_primary(TplParser *p)
{
	const TplToken *t = tpl_peek(p);
	TplExpr    *e;

	switch (t->kind)
	{
		case TPL_T_NAME:
			if (tpl_tok_is_name(p, t, "true") || tpl_tok_is_name(p, t, "True"))
			{
				tpl_advance(p);
				return tpl_new_lit(p, t->pos, json_object_new_boolean(1));
			}
			if (tpl_tok_is_name(p, t, "false") || tpl_tok_is_name(p, t, "False"))
			{
				tpl_advance(p);
				return tpl_new_lit(p, t->pos, json_object_new_boolean(0));
			}
			if (tpl_tok_is_name(p, t, "none") || tpl_tok_is_name(p, t, "None"))
			{
				tpl_advance(p);
				return tpl_new_lit(p, t->pos, NULL);
			}
			if (tpl_is_keyword(p, t))
				break;
			e = tpl_new_expr(p, TPL_E_NAME, t->pos, NULL, NULL, NULL);
			if (e == NULL)
				return NULL;
			e->name = tpl_strndup(p->src + t->pos, t->len);
			if (e->name == NULL)
			{
				tpl_perror(p, t->pos, "out of memory");
				tpl_expr_free(e);
				return NULL;
			}
			tpl_advance(p);
			return e;
		case TPL_T_STRING:
			tpl_advance(p);
			return tpl_new_lit(p, t->pos,
							   json_object_new_string_len(t->str, (int) t->slen));
		case TPL_T_INT:
			tpl_advance(p);
			return tpl_new_lit(p, t->pos, json_object_new_int64(t->ival));
		case TPL_T_FLOAT:
			tpl_advance(p);
			return tpl_new_lit(p, t->pos, tpl_new_double(t->dval));
		case TPL_T_PUNCT:
			if (t->punct == TPL_P_LPAREN)
			{
				tpl_advance(p);
				e = tpl_parse_expr(p);
				if (e != NULL && !tpl_expect_punct(p, TPL_P_RPAREN))
				{
					tpl_expr_free(e);
					return NULL;
				}
				return e;
			}
			if (t->punct == TPL_P_LBRACKET)
				return tpl_parse_list(p);
			break;
		default:
			break;
	}
	tpl_syntax_error(p, t, "expression");
	return NULL;
}

/*
 * postfix: { "." name [ "(" ")" ] | "." integer | "[" expr "]" } applied
 * to e.  The only calls are the methods items(), keys() and values().
 */
static TplExpr *
tpl_parse_postfix(TplParser *p, TplExpr *e)
{
	while (e != NULL)
	{
		const TplToken *t = tpl_peek(p);

		if (tpl_tok_is_punct(t, TPL_P_DOT))
		{
			const TplToken *nt;
			bool		on_input = e->kind == TPL_E_NAME &&
				strcmp(e->name, "input") == 0;

			tpl_advance(p);
			nt = tpl_peek(p);
			if (nt->kind != TPL_T_NAME && nt->kind != TPL_T_INT)
			{
				tpl_syntax_error(p, nt, "expression");
				tpl_expr_free(e);
				return NULL;
			}
			tpl_advance(p);
			if (nt->kind == TPL_T_NAME && tpl_tok_is_punct(tpl_peek(p), TPL_P_LPAREN))
			{
				int			m;

				if (tpl_tok_is_name(p, nt, "items"))
					m = TPL_M_ITEMS;
				else if (tpl_tok_is_name(p, nt, "keys"))
					m = TPL_M_KEYS;
				else if (tpl_tok_is_name(p, nt, "values"))
					m = TPL_M_VALUES;
				else
				{
					tpl_perror(p, nt->pos, "unknown method \"%.*s\"",
							   tpl_snippet_len(p->src + nt->pos, nt->len),
							   p->src + nt->pos);
					tpl_expr_free(e);
					return NULL;
				}
				tpl_advance(p);
				if (!tpl_expect_punct(p, TPL_P_RPAREN))
				{
					tpl_expr_free(e);
					return NULL;
				}
				e = tpl_new_expr(p, TPL_E_METHOD, nt->pos, e, NULL, NULL);
				if (e != NULL)
					e->op = m;
				continue;
			}
			e = tpl_new_expr(p, TPL_E_ATTR, nt->pos, e, NULL, NULL);
			if (e == NULL)
				return NULL;
			e->on_input = on_input;
			e->name = tpl_strndup(p->src + nt->pos, nt->len);
			if (e->name == NULL)
			{
				tpl_perror(p, nt->pos, "out of memory");
				tpl_expr_free(e);
				return NULL;
			}
		}
		else if (tpl_tok_is_punct(t, TPL_P_LBRACKET))
		{
			TplExpr    *idx;
			bool		on_input = e->kind == TPL_E_NAME &&
				strcmp(e->name, "input") == 0;

			tpl_advance(p);
			idx = tpl_parse_expr(p);
			if (idx == NULL || !tpl_expect_punct(p, TPL_P_RBRACKET))
			{
				tpl_expr_free(idx);
				tpl_expr_free(e);
				return NULL;
			}
			e = tpl_new_expr(p, TPL_E_INDEX, t->pos, e, idx, NULL);
			if (e != NULL)
				e->on_input = on_input;
		}
		else
			break;
	}
	return e;
}

/*
 * Parse the argument list of filter f (the "(" is current) into the slots
 * of e->args: positional arguments first, then name=value.
 */
static bool
tpl_parse_filter_args(TplParser *p, TplExpr *e, const TplFilterDef *f)
{
	int			npos = 0;
	bool		seen_keyword = false;

	tpl_advance(p);
	while (!tpl_tok_is_punct(tpl_peek(p), TPL_P_RPAREN))
	{
		const TplToken *t = tpl_peek(p);
		int			slot;
		TplExpr    *arg;

		if (t->kind == TPL_T_NAME && tpl_tok_is_punct(tpl_peek2(p), TPL_P_ASSIGN))
		{
			for (slot = 0; slot < f->nparams; slot++)
				if ((f->params[slot][0] && tpl_tok_is_name(p, t, f->params[slot][0])) ||
					(f->params[slot][1] && tpl_tok_is_name(p, t, f->params[slot][1])))
					break;
			if (slot == f->nparams)
			{
				tpl_perror(p, t->pos, "unknown argument \"%.*s\" for filter \"%s\"",
						   tpl_snippet_len(p->src + t->pos, t->len),
						   p->src + t->pos, e->name);
				return false;
			}
			if (e->args[slot] != NULL)
			{
				tpl_perror(p, t->pos, "duplicate argument \"%.*s\" for filter \"%s\"",
						   tpl_snippet_len(p->src + t->pos, t->len),
						   p->src + t->pos, e->name);
				return false;
			}
			tpl_advance(p);
			tpl_advance(p);
			seen_keyword = true;
		}
		else
		{
			if (seen_keyword)
			{
				tpl_syntax_error(p, t, "expression");
				return false;
			}
			if (npos >= f->nparams)
			{
				if (f->nparams == 0)
					tpl_perror(p, t->pos, "filter \"%s\" takes no arguments", e->name);
				else
					tpl_perror(p, t->pos, "too many arguments for filter \"%s\"", e->name);
				return false;
			}
			slot = npos++;
		}
		arg = tpl_parse_expr(p);
		if (arg == NULL)
			return false;
		e->args[slot] = arg;
		if (tpl_tok_is_punct(tpl_peek(p), TPL_P_COMMA))
			tpl_advance(p);
		else if (!tpl_tok_is_punct(tpl_peek(p), TPL_P_RPAREN))
		{
			tpl_syntax_error(p, tpl_peek(p), "expression");
			return false;
		}
	}
	tpl_advance(p);
	return true;
}

/*
 * The name token of a filter or a test (after "|" or "is [not]"); NULL,
 * with a syntax error and e freed, when the current token is no name.
 */
static const TplToken *
tpl_expect_name(TplParser *p, TplExpr *e)
{
	const TplToken *t = tpl_peek(p);

	if (t->kind == TPL_T_NAME)
		return t;
	tpl_syntax_error(p, t, "expression");
	tpl_expr_free(e);
	return NULL;
}

/* Report 'unknown <what> "<name>"' at the name t, free e; NULL. */
static TplExpr *
tpl_unknown_name(TplParser *p, const TplToken *t, const char *what, TplExpr *e)
{
	tpl_perror(p, t->pos, "unknown %s \"%.*s\"", what,
			   tpl_snippet_len(p->src + t->pos, t->len), p->src + t->pos);
	tpl_expr_free(e);
	return NULL;
}

/* One filter application "| name [ (args) ]" to e (the "|" is current). */
static TplExpr *
tpl_parse_filter(TplParser *p, TplExpr *e)
{
	const TplToken *t;
	const TplFilterDef *f;

	tpl_advance(p);
	t = tpl_expect_name(p, e);
	if (t == NULL)
		return NULL;
	for (f = tpl_filters; f->name != NULL; f++)
		if (tpl_tok_is_name(p, t, f->name))
			break;
	if (f->name == NULL)
		return tpl_unknown_name(p, t, "filter", e);
	tpl_advance(p);
	e = tpl_new_expr(p, TPL_E_FILTER, t->pos, e, NULL, NULL);
	if (e == NULL)
		return NULL;
	e->op = f->id;
	e->name = tpl_strndup(f->name, strlen(f->name));
	if (f->nparams > 0)
	{
		e->args = calloc((size_t) f->nparams, sizeof(TplExpr *));
		e->nargs = f->nparams;
	}
	if (e->name == NULL || (f->nparams > 0 && e->args == NULL))
	{
		e->nargs = 0;
		tpl_perror(p, t->pos, "out of memory");
		tpl_expr_free(e);
		return NULL;
	}
	if (tpl_tok_is_punct(tpl_peek(p), TPL_P_LPAREN) &&
		!tpl_parse_filter_args(p, e, f))
	{
		tpl_expr_free(e);
		return NULL;
	}
	return tpl_expr_done(p, e);
}

/* One test "is [not] name" applied to e (the "is" is current). */
static TplExpr *
tpl_parse_test(TplParser *p, TplExpr *e)
{
	const TplToken *t;
	const TplTestDef *x;
	bool		negate = false;

	tpl_advance(p);
	if (tpl_tok_is_name(p, tpl_peek(p), "not"))
	{
		negate = true;
		tpl_advance(p);
	}
	t = tpl_expect_name(p, e);
	if (t == NULL)
		return NULL;
	for (x = tpl_tests; x->name != NULL; x++)
		if (tpl_tok_is_name(p, t, x->name))
			break;
	if (x->name == NULL)
		return tpl_unknown_name(p, t, "test", e);
	tpl_advance(p);
	e = tpl_new_expr(p, TPL_E_TEST, t->pos, e, NULL, NULL);
	if (e != NULL)
	{
		e->op = x->id;
		e->negate = negate;
	}
	return e;
}

/*
 * unary: "-" unary | primary postfix; then, when with_filter, any number
 * of "| filter" and "is [not] test".  As in Jinja, "-x | f" is (-x) | f.
 */
static TplExpr *
tpl_parse_unary(TplParser *p, bool with_filter)
{
	TplExpr    *e;

	if (tpl_tok_is_punct(tpl_peek(p), TPL_P_MINUS))
	{
		size_t		pos = tpl_peek(p)->pos;

		if (!tpl_enter(p))
			return NULL;
		tpl_advance(p);
		e = tpl_parse_unary(p, false);
		p->rdepth--;
		if (e == NULL)
			return NULL;
		e = tpl_new_expr(p, TPL_E_NEG, pos, e, NULL, NULL);
	}
	else
		e = tpl_parse_postfix(p, tpl_parse_primary(p));
	while (e != NULL && with_filter)
	{
		if (tpl_tok_is_punct(tpl_peek(p), TPL_P_PIPE))
			e = tpl_parse_filter(p, e);
		else if (tpl_tok_is_name(p, tpl_peek(p), "is"))
			e = tpl_parse_test(p, e);
		else
			break;
	}
	return e;
}

/* ----------------------------------------------------------------
 * Parser: tags and bodies
 * ----------------------------------------------------------------
 */

/* Expect the end of a block tag; else "syntax error in "<tag>" tag". */
static bool
tpl_expect_block_end(TplParser *p, const char *tag)
{
	char		where[32];

	if (tpl_peek(p)->kind == TPL_T_BLOCK_END)
	{
		tpl_advance(p);
		return true;
	}
	snprintf(where, sizeof(where), "\"%s\" tag", tag);
	tpl_syntax_error(p, tpl_peek(p), where);
	return false;
}

/* Expect the end of a tag right after an expression. */
static bool
tpl_expect_end_after_expr(TplParser *p, TplTokKind kind)
{
	if (tpl_peek(p)->kind == kind)
	{
		tpl_advance(p);
		return true;
	}
	tpl_syntax_error(p, tpl_peek(p), "expression");
	return false;
}

/*
 * The name token of the block tag at the current position (a
 * TPL_T_BLOCK_BEGIN), which parse_body left in place.
 */
static const TplToken *
tpl_tag_name(TplParser *p)
{
	return tpl_peek2(p);
}

/* Record "unexpected "<name>"[, expected "<want>"]" at tag name t. */
static void
tpl_unexpected_tag(TplParser *p, const TplToken *t, const char *want)
{
	int			n = tpl_snippet_len(p->src + t->pos, t->len);

	if (want == NULL)
		tpl_perror(p, t->pos, "unexpected \"%.*s\"", n, p->src + t->pos);
	else
		tpl_perror(p, t->pos, "unexpected \"%.*s\", expected \"%s\"",
				   n, p->src + t->pos, want);
}

/*
 * {% if %} ... {% elif %} ... {% else %} ... {% endif %}; the current
 * token follows "if", whose position is tagpos.
 */
static TplNode *
tpl_parse_if(TplParser *p, int depth, size_t tagpos)
{
	TplNode    *node = calloc(1, sizeof(TplNode));
	TplBranch **tail;
	bool		is_else = false;

	if (node == NULL)
	{
		tpl_perror(p, tagpos, "out of memory");
		return NULL;
	}
	node->kind = TPL_N_IF;
	node->pos = tagpos;
	tail = &node->branches;
	for (;;)
	{
		TplBranch  *br = calloc(1, sizeof(TplBranch));
		const TplToken *nt;

		if (br == NULL)
		{
			tpl_perror(p, tagpos, "out of memory");
			goto fail;
		}
		*tail = br;
		tail = &br->next;
		if (is_else)
		{
			if (!tpl_expect_block_end(p, "else"))
				goto fail;
		}
		else
		{
			br->cond = tpl_parse_expr(p);
			if (br->cond == NULL ||
				!tpl_expect_end_after_expr(p, TPL_T_BLOCK_END))
				goto fail;
		}
		if (!tpl_parse_body(p, depth + 1, &br->body))
			goto fail;
		if (tpl_peek(p)->kind == TPL_T_EOF)
		{
			tpl_perror(p, tagpos, "unexpected end of template, expected \"endif\"");
			goto fail;
		}
		nt = tpl_tag_name(p);
		if (!is_else && tpl_tok_is_name(p, nt, "elif"))
		{
			tpl_advance(p);
			tpl_advance(p);
			continue;
		}
		if (!is_else && tpl_tok_is_name(p, nt, "else"))
		{
			tpl_advance(p);
			tpl_advance(p);
			is_else = true;
			continue;
		}
		if (tpl_tok_is_name(p, nt, "endif"))
		{
			tpl_advance(p);
			tpl_advance(p);
			if (!tpl_expect_block_end(p, "endif"))
				goto fail;
			return node;
		}
		tpl_unexpected_tag(p, nt, "endif");
		goto fail;
	}

fail:
	tpl_nodes_free(node);
	return NULL;
}

/* Copy the name token t as a loop variable, rejecting keywords. */
static char *
tpl_loop_var(TplParser *p, const TplToken *t)
{
	char	   *name;

	if (t->kind != TPL_T_NAME || tpl_is_keyword(p, t))
	{
		tpl_syntax_error(p, t, "\"for\" tag");
		return NULL;
	}
	name = tpl_strndup(p->src + t->pos, t->len);
	if (name == NULL)
		tpl_perror(p, t->pos, "out of memory");
	else
		tpl_advance(p);
	return name;
}

/*
 * {% for x in expr %} ... [{% else %} ...] {% endfor %}, also with two
 * names "for k, v in ..."; the current token follows "for" (at tagpos).
 */
static TplNode *
tpl_parse_for(TplParser *p, int depth, size_t tagpos)
{
	TplNode    *node = calloc(1, sizeof(TplNode));
	const TplToken *nt;

	if (node == NULL)
	{
		tpl_perror(p, tagpos, "out of memory");
		return NULL;
	}
	node->kind = TPL_N_FOR;
	node->pos = tagpos;
	node->vars[0] = tpl_loop_var(p, tpl_peek(p));
	if (node->vars[0] == NULL)
		goto fail;
	node->nvars = 1;
	if (tpl_tok_is_punct(tpl_peek(p), TPL_P_COMMA))
	{
		tpl_advance(p);
		node->vars[1] = tpl_loop_var(p, tpl_peek(p));
		if (node->vars[1] == NULL)
			goto fail;
		node->nvars = 2;
	}
	if (!tpl_tok_is_name(p, tpl_peek(p), "in"))
	{
		tpl_syntax_error(p, tpl_peek(p), "\"for\" tag");
		goto fail;
	}
	tpl_advance(p);
	node->expr = tpl_parse_or(p);
	if (node->expr == NULL)
		goto fail;
	if (tpl_peek(p)->kind != TPL_T_BLOCK_END)
	{
		tpl_syntax_error(p, tpl_peek(p),
						 tpl_tok_is_name(p, tpl_peek(p), "if") ? "\"for\" tag" : "expression");
		goto fail;
	}
	tpl_advance(p);
	if (!tpl_parse_body(p, depth + 1, &node->body))
		goto fail;
	for (;;)
	{
		if (tpl_peek(p)->kind == TPL_T_EOF)
		{
			tpl_perror(p, tagpos, "unexpected end of template, expected \"endfor\"");
			goto fail;
		}
		nt = tpl_tag_name(p);
		if (tpl_tok_is_name(p, nt, "else") && node->else_body == NULL)
		{
			tpl_advance(p);
			tpl_advance(p);
			if (!tpl_expect_block_end(p, "else") ||
				!tpl_parse_body(p, depth + 1, &node->else_body))
				goto fail;
			if (node->else_body == NULL)
			{
				/* an empty else: remember that it was seen */
				node->else_body = calloc(1, sizeof(TplNode));
				if (node->else_body == NULL)
				{
					tpl_perror(p, tagpos, "out of memory");
					goto fail;
				}
				node->else_body->kind = TPL_N_TEXT;
			}
			continue;
		}
		if (tpl_tok_is_name(p, nt, "endfor"))
		{
			tpl_advance(p);
			tpl_advance(p);
			if (!tpl_expect_block_end(p, "endfor"))
				goto fail;
			return node;
		}
		tpl_unexpected_tag(p, nt, "endfor");
		goto fail;
	}

fail:
	tpl_nodes_free(node);
	return NULL;
}

/*
 * Parse nodes into *head until the end of the template or a block tag
 * that ends a body (elif, else, endif, endfor), which is left current for
 * the caller.  depth is the block nesting of the body.
 */
static bool
tpl_parse_body(TplParser *p, int depth, TplNode **head)
{
	TplNode   **tail = head;

	*head = NULL;
	for (;;)
	{
		const TplToken *t = tpl_peek(p);
		TplNode    *node = NULL;

		if (t->kind == TPL_T_EOF)
			return true;
		if (t->kind == TPL_T_TEXT)
		{
			node = calloc(1, sizeof(TplNode));
			if (node == NULL)
				goto oom;
			node->kind = TPL_N_TEXT;
			node->pos = t->pos;
			node->len = t->len;
			tpl_advance(p);
		}
		else if (t->kind == TPL_T_VAR_BEGIN)
		{
			TplExpr    *e;

			tpl_advance(p);
			e = tpl_parse_expr(p);
			if (e == NULL)
				goto fail;
			if (!tpl_expect_end_after_expr(p, TPL_T_VAR_END))
			{
				tpl_expr_free(e);
				goto fail;
			}
			node = calloc(1, sizeof(TplNode));
			if (node == NULL)
			{
				tpl_expr_free(e);
				goto oom;
			}
			node->kind = TPL_N_OUTPUT;
			node->pos = t->pos;
			node->expr = e;
		}
		else if (t->kind == TPL_T_BLOCK_BEGIN)
		{
			const TplToken *nt = tpl_tag_name(p);
			bool		is_if = tpl_tok_is_name(p, nt, "if");

			if (tpl_tok_is_name(p, nt, "elif") || tpl_tok_is_name(p, nt, "else") ||
				tpl_tok_is_name(p, nt, "endif") || tpl_tok_is_name(p, nt, "endfor"))
				return true;
			if (nt->kind != TPL_T_NAME)
			{
				tpl_syntax_error(p, nt, "tag");
				goto fail;
			}
			if (!is_if && !tpl_tok_is_name(p, nt, "for"))
			{
				tpl_perror(p, nt->pos, "unknown tag \"%.*s\"",
						   tpl_snippet_len(p->src + nt->pos, nt->len),
						   p->src + nt->pos);
				goto fail;
			}
			if (depth >= TPL_MAX_DEPTH)
			{
				tpl_perror(p, nt->pos,
						   "block nesting exceeds the maximum depth of %d",
						   TPL_MAX_DEPTH);
				goto fail;
			}
			tpl_advance(p);
			tpl_advance(p);
			node = is_if ? tpl_parse_if(p, depth, nt->pos) :
				tpl_parse_for(p, depth, nt->pos);
			if (node == NULL)
				goto fail;
		}
		else
		{
			/* cannot happen: the lexer only emits tags and text here */
			tpl_syntax_error(p, t, "template");
			goto fail;
		}
		*tail = node;
		tail = &node->next;
	}

oom:
	tpl_perror(p, tpl_peek(p)->pos, "out of memory");
fail:
	tpl_nodes_free(*head);
	*head = NULL;
	return false;
}

/* ----------------------------------------------------------------
 * Runtime values
 * ----------------------------------------------------------------
 */
static TplVal
tpl_missing(void)
{
	TplVal		v = {true, NULL};

	return v;
}

/* A value that owns the reference j (NULL meaning JSON null). */
static TplVal
tpl_take(json_object *j)
{
	TplVal		v = {false, j};

	return v;
}

/* A value holding a new reference to j. */
static TplVal
tpl_ref(json_object *j)
{
	return tpl_take(json_object_get(j));
}

/* A second reference to the value v. */
static TplVal
tpl_copy(TplVal v)
{
	v.j = json_object_get(v.j);
	return v;
}

static void
tpl_val_free(TplVal *v)
{
	json_object_put(v->j);
	v->j = NULL;
	v->missing = true;
}

/* missing or null: prints as empty, false in a test */
static bool
tpl_is_null(TplVal v)
{
	return v.missing || v.j == NULL;
}

static json_type
tpl_type(TplVal v)
{
	return v.j == NULL ? json_type_null : json_object_get_type(v.j);
}

static bool
tpl_is_number(TplVal v)
{
	json_type	t = tpl_type(v);

	return t == json_type_int || t == json_type_double;
}

/* "a string", "an array"...: the type of v for error messages */
static const char *
tpl_type_name(TplVal v)
{
	if (v.missing)
		return "an undefined value";
	switch (tpl_type(v))
	{
		case json_type_null:
			return "null";
		case json_type_boolean:
			return "a boolean";
		case json_type_int:
		case json_type_double:
			return "a number";
		case json_type_string:
			return "a string";
		case json_type_array:
			return "an array";
		case json_type_object:
			return "an object";
	}
	return "a value";
}

typedef struct TplNum
{
	bool		is_int;
	int64_t		i;
	double		d;				/* set for integers too */
} TplNum;

/*
 * The numeric value of a json-c int or double.  Integers above INT64_MAX
 * (json-c keeps those as uint64) are treated as doubles.
 */
static TplNum
tpl_num(json_object *j)
{
	TplNum		n = {false, 0, 0.0};

	if (json_object_is_type(j, json_type_int))
	{
		n.is_int = true;
		n.i = json_object_get_int64(j);
		n.d = (double) n.i;
		if (n.i == INT64_MAX)
		{
			uint64_t	u = json_object_get_uint64(j);

			if (u > (uint64_t) INT64_MAX)
			{
				n.is_int = false;
				n.d = (double) u;
			}
		}
	}
	else
		n.d = json_object_get_double(j);
	return n;
}

/*
 * Count units of work; fails once the rendering has done more than
 * TPL_MAX_WORK (so that no template runs away, whatever its loops).
 */
static bool
tpl_charge(TplCtx *c, uint64_t units, size_t pos)
{
	c->work += units;
	if (c->work > TPL_MAX_WORK)
	{
		tpl_rerror(c, pos, "template rendering exceeds the limit of %d steps",
				   TPL_MAX_WORK);
		return false;
	}
	return true;
}

/* Set *out to the new json-c object j, failing when j is NULL (OOM). */
static bool
tpl_result(TplCtx *c, size_t pos, json_object *j, TplVal *out)
{
	if (j == NULL)
	{
		tpl_rerror(c, pos, "out of memory");
		return false;
	}
	*out = tpl_take(j);
	return true;
}

static bool
tpl_result_bool(TplCtx *c, size_t pos, bool b, TplVal *out)
{
	return tpl_result(c, pos, json_object_new_boolean(b ? 1 : 0), out);
}

static bool
tpl_result_int(TplCtx *c, size_t pos, int64_t i, TplVal *out)
{
	return tpl_result(c, pos, json_object_new_int64(i), out);
}

/* A double result; infinities and NaN are errors. */
static bool
tpl_result_double(TplCtx *c, size_t pos, double d, TplVal *out)
{
	if (!isfinite(d))
	{
		tpl_rerror(c, pos, "numeric result out of range");
		return false;
	}
	return tpl_result(c, pos, tpl_new_double(d), out);
}

/* A string result copied from s[0..n). */
static bool
tpl_result_str(TplCtx *c, size_t pos, const char *s, size_t n, TplVal *out)
{
	if (n > TPL_MAX_SIZE)
	{
		tpl_rerror(c, pos, "template output exceeds the limit of 16 MB");
		return false;
	}
	return tpl_result(c, pos, json_object_new_string_len(n ? s : "", (int) n), out);
}

/*
 * Append s[0..n) to b, enforcing the 16 MB limit on every string built
 * and charging the work.
 */
static bool
tpl_put(TplCtx *c, RvBuf *b, const char *s, size_t n, size_t pos)
{
	if (n > TPL_MAX_SIZE - b->len)
	{
		tpl_rerror(c, pos, "template output exceeds the limit of 16 MB");
		return false;
	}
	if (!tpl_charge(c, 1 + n / 16, pos))
		return false;
	if (!rv_buf_append(b, s, n))
	{
		tpl_rerror(c, pos, "out of memory");
		return false;
	}
	return true;
}

/*
 * Append the printed form of v to b: strings raw, numbers and booleans as
 * JSON, null and missing as nothing, arrays and objects as compact JSON.
 */
static bool
tpl_put_val(TplCtx *c, RvBuf *b, TplVal v, size_t pos)
{
	const char *s;
	size_t		n;

	if (tpl_is_null(v))
		return true;
	switch (json_object_get_type(v.j))
	{
		case json_type_string:
			return tpl_put(c, b, json_object_get_string(v.j),
						   (size_t) json_object_get_string_len(v.j), pos);
		case json_type_boolean:
			s = json_object_get_boolean(v.j) ? "true" : "false";
			return tpl_put(c, b, s, strlen(s), pos);
		default:
			s = json_object_to_json_string_length(v.j, TPL_JSON_FLAGS, &n);
			if (s == NULL)
			{
				tpl_rerror(c, pos, "out of memory");
				return false;
			}
			return tpl_put(c, b, s, n, pos);
	}
}

/* Jinja truthiness: empty, zero, false, null and missing are false. */
static bool
tpl_truthy(TplVal v)
{
	TplNum		n;

	if (tpl_is_null(v))
		return false;
	switch (json_object_get_type(v.j))
	{
		case json_type_boolean:
			return json_object_get_boolean(v.j) != 0;
		case json_type_int:
		case json_type_double:
			n = tpl_num(v.j);
			return n.is_int ? n.i != 0 : n.d != 0.0;
		case json_type_string:
			return json_object_get_string_len(v.j) > 0;
		case json_type_array:
			return json_object_array_length(v.j) > 0;
		case json_type_object:
			return json_object_object_length(v.j) > 0;
		default:
			return false;
	}
}

/*
 * Equality: numbers compare by value (1 == 1.0), other types must match;
 * arrays and objects compare deeply; missing equals only missing.
 */
static bool
tpl_equal(TplVal a, TplVal b)
{
	json_type	ta;

	if (a.missing || b.missing)
		return a.missing && b.missing;
	if (tpl_is_number(a) && tpl_is_number(b))
	{
		TplNum		x = tpl_num(a.j);
		TplNum		y = tpl_num(b.j);

		if (x.is_int && y.is_int)
			return x.i == y.i;
		return x.d == y.d;
	}
	ta = tpl_type(a);
	if (ta != tpl_type(b))
		return false;
	switch (ta)
	{
		case json_type_null:
			return true;
		case json_type_boolean:
			return json_object_get_boolean(a.j) == json_object_get_boolean(b.j);
		case json_type_string:
			return json_object_get_string_len(a.j) == json_object_get_string_len(b.j) &&
				memcmp(json_object_get_string(a.j), json_object_get_string(b.j),
					   (size_t) json_object_get_string_len(a.j)) == 0;
		default:
			return json_object_equal(a.j, b.j) == 1;
	}
}

/*
 * Ordering comparison (< > <= >=) of numbers or of strings (bytewise,
 * which is code point order in UTF-8).  A null or missing operand makes
 * the comparison false; other mixed types are an error.
 */
static bool
tpl_order(TplCtx *c, const TplExpr *e, TplVal a, TplVal b, TplVal *out)
{
	int			cmp;
	bool		r;

	if (tpl_is_null(a) || tpl_is_null(b))
		return tpl_result_bool(c, e->pos, false, out);
	if (tpl_is_number(a) && tpl_is_number(b))
	{
		TplNum		x = tpl_num(a.j);
		TplNum		y = tpl_num(b.j);

		if (x.is_int && y.is_int)
			cmp = (x.i > y.i) - (x.i < y.i);
		else if (isnan(x.d) || isnan(y.d))
			return tpl_result_bool(c, e->pos, false, out);
		else
			cmp = (x.d > y.d) - (x.d < y.d);
	}
	else if (tpl_type(a) == json_type_string && tpl_type(b) == json_type_string)
	{
		size_t		la = (size_t) json_object_get_string_len(a.j);
		size_t		lb = (size_t) json_object_get_string_len(b.j);
		int			m = memcmp(json_object_get_string(a.j),
							   json_object_get_string(b.j), la < lb ? la : lb);

		cmp = m != 0 ? (m > 0) - (m < 0) : (la > lb) - (la < lb);
		if (!tpl_charge(c, (la < lb ? la : lb) / 16, e->pos))
			return false;
	}
	else
	{
		tpl_rerror(c, e->pos, "cannot compare %s with %s",
				   tpl_type_name(a), tpl_type_name(b));
		return false;
	}
	switch (e->op)
	{
		case TPL_OP_LT:
			r = cmp < 0;
			break;
		case TPL_OP_GT:
			r = cmp > 0;
			break;
		case TPL_OP_LE:
			r = cmp <= 0;
			break;
		default:
			r = cmp >= 0;
			break;
	}
	return tpl_result_bool(c, e->pos, r, out);
}

/* Whether needle[0..nn) occurs in hay[0..hn), charging the work. */
static bool
tpl_find(TplCtx *c, size_t pos, const char *hay, size_t hn,
		 const char *needle, size_t nn, bool *found)
{
	size_t		i;
	uint64_t	acc = 0;

	*found = nn == 0;
	if (nn == 0 || nn > hn)
		return true;
	for (i = 0; i + nn <= hn; i++)
	{
		acc += 1 + nn / 16;
		if (acc > 4096)
		{
			if (!tpl_charge(c, acc / 16, pos))
				return false;
			acc = 0;
		}
		if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
		{
			*found = true;
			break;
		}
	}
	return tpl_charge(c, acc / 16, pos);
}

/*
 * "needle in hay": element of an array, key of an object, substring of a
 * string.  A null or missing hay contains nothing.
 */
static bool
tpl_contains(TplCtx *c, const TplExpr *e, TplVal needle, TplVal hay,
			 bool *res)
{
	size_t		i;
	size_t		n;

	*res = false;
	if (tpl_is_null(hay))
		return true;
	switch (json_object_get_type(hay.j))
	{
		case json_type_array:
			n = json_object_array_length(hay.j);
			for (i = 0; i < n; i++)
			{
				TplVal		elem = {false, json_object_array_get_idx(hay.j, i)};

				if (!tpl_charge(c, 1, e->pos))
					return false;
				if (tpl_equal(needle, elem))
				{
					*res = true;
					break;
				}
			}
			return true;
		case json_type_object:
			if (tpl_type(needle) == json_type_string && !needle.missing)
				*res = json_object_object_get_ex(hay.j,
												 json_object_get_string(needle.j),
												 NULL) != 0;
			return true;
		case json_type_string:
			if (needle.missing || tpl_type(needle) != json_type_string)
			{
				tpl_rerror(c, e->pos, "cannot search for %s in a string",
						   tpl_type_name(needle));
				return false;
			}
			return tpl_find(c, e->pos, json_object_get_string(hay.j),
							(size_t) json_object_get_string_len(hay.j),
							json_object_get_string(needle.j),
							(size_t) json_object_get_string_len(needle.j), res);
		default:
			tpl_rerror(c, e->pos, "cannot search in %s", tpl_type_name(hay));
			return false;
	}
}

/* a ~ b: both operands printed and concatenated. */
static bool
tpl_concat(TplCtx *c, size_t pos, TplVal a, TplVal b, TplVal *out)
{
	RvBuf		buf = RV_BUF_INIT;
	bool		ok;

	ok = tpl_put_val(c, &buf, a, pos) && tpl_put_val(c, &buf, b, pos) &&
		tpl_result_str(c, pos, buf.data, buf.len, out);
	rv_buf_free(&buf);
	return ok;
}

/* Symbol of an arithmetic operator, for error messages. */
static const char *
tpl_op_symbol(int op)
{
	switch (op)
	{
		case TPL_OP_ADD:
			return "+";
		case TPL_OP_SUB:
			return "-";
		case TPL_OP_MUL:
			return "*";
		case TPL_OP_DIV:
			return "/";
		case TPL_OP_FLOORDIV:
			return "//";
		default:
			return "%";
	}
}

/*
 * Arithmetic + - * / // % on numbers (integers stay integers unless they
 * overflow; / always gives a float, as in Python), plus string and array
 * concatenation with +.
 */
static bool
tpl_arith(TplCtx *c, const TplExpr *e, TplVal a, TplVal b, TplVal *out)
{
	TplNum		x;
	TplNum		y;
	int64_t		r;

	if (e->op == TPL_OP_ADD && tpl_type(a) == json_type_string &&
		tpl_type(b) == json_type_string && !a.missing && !b.missing)
		return tpl_concat(c, e->pos, a, b, out);
	if (e->op == TPL_OP_ADD && tpl_type(a) == json_type_array &&
		tpl_type(b) == json_type_array && !a.missing && !b.missing)
	{
		size_t		na = json_object_array_length(a.j);
		size_t		nb = json_object_array_length(b.j);
		size_t		i;
		json_object *arr;

		if (!tpl_charge(c, na + nb, e->pos))
			return false;
		arr = json_object_new_array_ext((int) (na + nb));
		if (arr == NULL)
			return tpl_result(c, e->pos, NULL, out);
		for (i = 0; i < na + nb; i++)
			json_object_array_add(arr, json_object_get(i < na ?
													   json_object_array_get_idx(a.j, i) :
													   json_object_array_get_idx(b.j, i - na)));
		return tpl_result(c, e->pos, arr, out);
	}
	if (a.missing || b.missing || !tpl_is_number(a) || !tpl_is_number(b))
	{
		tpl_rerror(c, e->pos, "cannot apply \"%s\" to %s and %s",
				   tpl_op_symbol(e->op), tpl_type_name(a), tpl_type_name(b));
		return false;
	}
	x = tpl_num(a.j);
	y = tpl_num(b.j);
	switch (e->op)
	{
		case TPL_OP_ADD:
			if (x.is_int && y.is_int && !__builtin_add_overflow(x.i, y.i, &r))
				return tpl_result_int(c, e->pos, r, out);
			return tpl_result_double(c, e->pos, x.d + y.d, out);
		case TPL_OP_SUB:
			if (x.is_int && y.is_int && !__builtin_sub_overflow(x.i, y.i, &r))
				return tpl_result_int(c, e->pos, r, out);
			return tpl_result_double(c, e->pos, x.d - y.d, out);
		case TPL_OP_MUL:
			if (x.is_int && y.is_int && !__builtin_mul_overflow(x.i, y.i, &r))
				return tpl_result_int(c, e->pos, r, out);
			return tpl_result_double(c, e->pos, x.d * y.d, out);
		default:
			break;
	}
	if ((y.is_int && y.i == 0) || (!y.is_int && y.d == 0.0))
	{
		tpl_rerror(c, e->pos, "division by zero");
		return false;
	}
	if (e->op == TPL_OP_DIV)
		return tpl_result_double(c, e->pos, x.d / y.d, out);
	if (e->op == TPL_OP_FLOORDIV)
	{
		if (!x.is_int || !y.is_int || (x.i == INT64_MIN && y.i == -1))
			return tpl_result_double(c, e->pos, floor(x.d / y.d), out);
		r = x.i / y.i;
		if (x.i % y.i != 0 && ((x.i < 0) != (y.i < 0)))
			r--;
		return tpl_result_int(c, e->pos, r, out);
	}
	/* modulo, with the sign of the divisor as in Python */
	if (x.is_int && y.is_int)
	{
		r = y.i == -1 ? 0 : x.i % y.i;
		if (r != 0 && ((r < 0) != (y.i < 0)))
			r += y.i;
		return tpl_result_int(c, e->pos, r, out);
	}
	else
	{
		double		m = fmod(x.d, y.d);

		if (m != 0.0 && ((m < 0) != (y.d < 0)))
			m += y.d;
		return tpl_result_double(c, e->pos, m, out);
	}
}

/* -a on a number. */
static bool
tpl_negate(TplCtx *c, const TplExpr *e, TplVal a, TplVal *out)
{
	TplNum		x;

	if (a.missing || !tpl_is_number(a))
	{
		tpl_rerror(c, e->pos, "cannot negate %s", tpl_type_name(a));
		return false;
	}
	x = tpl_num(a.j);
	if (x.is_int && x.i != INT64_MIN)
		return tpl_result_int(c, e->pos, -x.i, out);
	return tpl_result_double(c, e->pos, -x.d, out);
}

/* Parse a decimal index made of digits only; false if not one. */
static bool
tpl_parse_index(const char *s, int64_t *res)
{
	size_t		n = strlen(s);
	size_t		k;
	int64_t		v = 0;

	if (n == 0 || n > 18)
		return false;
	for (k = 0; k < n; k++)
	{
		if (!rv_is_digit(s[k]))
			return false;
		v = v * 10 + (s[k] - '0');
	}
	*res = v;
	return true;
}

/* base.name: an object's field, or an array element for "a.0". */
static TplVal
tpl_get_attr(TplVal base, const char *name)
{
	json_object *j;
	int64_t		idx;

	if (tpl_is_null(base))
		return tpl_missing();
	if (json_object_is_type(base.j, json_type_object))
	{
		if (json_object_object_get_ex(base.j, name, &j))
			return tpl_ref(j);
	}
	else if (json_object_is_type(base.j, json_type_array) &&
			 tpl_parse_index(name, &idx) &&
			 (size_t) idx < json_object_array_length(base.j))
		return tpl_ref(json_object_array_get_idx(base.j, (size_t) idx));
	return tpl_missing();
}

/*
 * base[idx]: object by string key, array by integer (negative counts from
 * the end), string by character.  Anything else is missing.
 */
static bool
tpl_get_index(TplCtx *c, const TplExpr *e, TplVal base, TplVal idx,
			  TplVal *out)
{
	json_type	bt;
	int64_t		i;
	int64_t		n;

	*out = tpl_missing();
	if (tpl_is_null(base) || tpl_is_null(idx))
		return true;
	bt = json_object_get_type(base.j);
	if (bt == json_type_object)
	{
		json_object *j;

		if (json_object_is_type(idx.j, json_type_string) &&
			json_object_object_get_ex(base.j, json_object_get_string(idx.j), &j))
			*out = tpl_ref(j);
		return true;
	}
	if (!json_object_is_type(idx.j, json_type_int) || !tpl_num(idx.j).is_int)
		return true;
	i = tpl_num(idx.j).i;
	if (bt == json_type_array)
	{
		n = (int64_t) json_object_array_length(base.j);
		if (i < 0 && i >= -n)
			i += n;
		if (i >= 0 && i < n)
			*out = tpl_ref(json_object_array_get_idx(base.j, (size_t) i));
		return true;
	}
	if (bt == json_type_string)
	{
		const char *s = json_object_get_string(base.j);
		size_t		len = (size_t) json_object_get_string_len(base.j);
		size_t		p = 0;
		int64_t		k;

		if (!tpl_charge(c, len / 16, e->pos))
			return false;
		n = (int64_t) rv_utf8_count(s, len);
		if (i < 0 && i >= -n)
			i += n;
		if (i < 0 || i >= n)
			return true;
		for (k = 0; k < i; k++)
			p += rv_utf8_charlen(s, len, p);
		return tpl_result_str(c, e->pos, s + p, rv_utf8_charlen(s, len, p), out);
	}
	return true;
}

/*
 * An array made from an object: its keys, its values, or [key, value]
 * pairs (mode TPL_M_KEYS / VALUES / ITEMS), in the object's order.
 */
static bool
tpl_object_to_array(TplCtx *c, size_t pos, json_object *obj, int mode,
					TplVal *out)
{
	struct json_object_iterator it = json_object_iter_begin(obj);
	struct json_object_iterator end = json_object_iter_end(obj);
	json_object *arr = json_object_new_array();

	if (arr == NULL)
		return tpl_result(c, pos, NULL, out);
	while (!json_object_iter_equal(&it, &end))
	{
		const char *key = json_object_iter_peek_name(&it);
		json_object *val = json_object_iter_peek_value(&it);
		json_object *elem;

		if (!tpl_charge(c, 1, pos))
		{
			json_object_put(arr);
			return false;
		}
		if (mode == TPL_M_VALUES)
			elem = json_object_get(val);
		else
		{
			elem = json_object_new_string(key);
			if (elem != NULL && mode == TPL_M_ITEMS)
			{
				json_object *pair = json_object_new_array_ext(2);

				if (pair != NULL)
				{
					json_object_array_add(pair, elem);
					json_object_array_add(pair, json_object_get(val));
				}
				else
					json_object_put(elem);
				elem = pair;
			}
			if (elem == NULL)
			{
				json_object_put(arr);
				return tpl_result(c, pos, NULL, out);
			}
		}
		json_object_array_add(arr, elem);
		json_object_iter_next(&it);
	}
	return tpl_result(c, pos, arr, out);
}

/* base.items() / keys() / values() */
static bool
tpl_method(TplCtx *c, const TplExpr *e, TplVal base, TplVal *out)
{
	static const char *const names[] = {"items", "keys", "values"};

	*out = tpl_missing();
	if (tpl_is_null(base))
		return true;
	if (!json_object_is_type(base.j, json_type_object))
	{
		tpl_rerror(c, e->pos, "cannot call \"%s\" on %s", names[e->op],
				   tpl_type_name(base));
		return false;
	}
	return tpl_object_to_array(c, e->pos, base.j, e->op, out);
}

/* The loop object (loop.index etc.) of frame f. */
static TplVal
tpl_loop_object(TplFrame *f)
{
	json_object *o = json_object_new_object();
	int64_t		i0 = (int64_t) f->index0;
	int64_t		len = (int64_t) f->length;

	if (o == NULL)
		return tpl_missing();
	json_object_object_add(o, "index", json_object_new_int64(i0 + 1));
	json_object_object_add(o, "index0", json_object_new_int64(i0));
	json_object_object_add(o, "revindex", json_object_new_int64(len - i0));
	json_object_object_add(o, "revindex0", json_object_new_int64(len - i0 - 1));
	json_object_object_add(o, "first", json_object_new_boolean(i0 == 0));
	json_object_object_add(o, "last", json_object_new_boolean(i0 + 1 == len));
	json_object_object_add(o, "length", json_object_new_int64(len));
	return tpl_take(o);
}

/* Whether a loop variable called name is in scope. */
static bool
tpl_frame_has(TplCtx *c, const char *name)
{
	int			i;
	int			k;

	for (i = 0; i < c->nframes; i++)
		for (k = 0; k < c->frames[i].nnames; k++)
			if (strcmp(c->frames[i].names[k], name) == 0)
				return true;
	return false;
}

/*
 * The value of a name: loop variables (innermost first), then "loop" for
 * the innermost loop, then the scope object.
 */
static TplVal
tpl_lookup(TplCtx *c, const char *name)
{
	int			i;
	int			k;
	json_object *j;

	for (i = c->nframes - 1; i >= 0; i--)
	{
		TplFrame   *f = &c->frames[i];

		for (k = 0; k < f->nnames; k++)
			if (strcmp(f->names[k], name) == 0)
				return tpl_copy(f->vals[k]);
		if (strcmp(name, "loop") == 0)
			return tpl_loop_object(f);
	}
	if (c->scope != NULL && json_object_is_type(c->scope, json_type_object) &&
		json_object_object_get_ex(c->scope, name, &j))
		return tpl_ref(j);
	return tpl_missing();
}

/*
 * The strict input error for a missing first-level field of "input", with
 * a hint on how to fix it.  Always returns false.
 */
static bool
tpl_strict_fail(TplCtx *c, const TplExpr *e, const char *field, size_t flen)
{
	int			n = tpl_snippet_len(field, flen);
	bool		ident = flen > 0 && rv_is_name_start(field[0]);
	bool		was_set = c->err != NULL && c->err->set;
	size_t		k;

	for (k = 0; k < flen && ident; k++)
		ident = rv_is_name_char(field[k]);
	tpl_rerror(c, e->a->pos, "input has no field \"%.*s\"", n, field);
	if (c->err != NULL && !was_set)
	{
		if (ident)
			rv_error_hint(c->err, "Add a column named \"%.*s\" to the USING query, or write {{ input.%.*s | default('') }} in the template.",
						  n, field, n, field);
		else
			rv_error_hint(c->err, "Add a column named \"%.*s\" to the USING query, or write {{ input[\"%.*s\"] | default('') }} in the template.",
						  n, field, n, field);
	}
	return false;
}

/* Record "filter "x" cannot be applied to <type>"; returns false. */
static bool
tpl_filter_type_error(TplCtx *c, const TplExpr *e, TplVal v)
{
	tpl_rerror(c, e->pos, "filter \"%s\" cannot be applied to %s", e->name,
			   tpl_type_name(v));
	return false;
}

/* Whether the UTF-8 character ch[0..cl) is one of the characters of set. */
static bool
tpl_char_in_set(const char *ch, size_t cl, const char *set, size_t sn)
{
	size_t		i = 0;

	while (i < sn)
	{
		size_t		k = rv_utf8_charlen(set, sn, i);

		if (k == cl && memcmp(set + i, ch, cl) == 0)
			return true;
		i += k;
	}
	return false;
}

/*
 * upper, lower, trim(chars) and string: print the value, then transform
 * (ASCII case mapping; trimming whole UTF-8 characters).
 */
static bool
tpl_filter_text(TplCtx *c, const TplExpr *e, TplVal v, const TplVal *args,
				TplVal *out)
{
	RvBuf		b = RV_BUF_INIT;
	RvBuf		set = RV_BUF_INIT;
	size_t		s = 0;
	size_t		end;
	size_t		i;
	bool		ok = true;

	if (e->op != TPL_F_STRING && !tpl_is_null(v) &&
		(tpl_type(v) == json_type_array || tpl_type(v) == json_type_object))
		return tpl_filter_type_error(c, e, v);
	if (e->op == TPL_F_STRING && !v.missing && tpl_type(v) == json_type_string)
	{
		*out = tpl_copy(v);
		return true;
	}
	if (!tpl_put_val(c, &b, v, e->pos))
	{
		rv_buf_free(&b);
		return false;
	}
	end = b.len;
	if (e->op == TPL_F_UPPER || e->op == TPL_F_LOWER)
	{
		for (i = 0; i < b.len; i++)
		{
			if (e->op == TPL_F_UPPER && b.data[i] >= 'a' && b.data[i] <= 'z')
				b.data[i] = (char) (b.data[i] - 'a' + 'A');
			else if (e->op == TPL_F_LOWER && b.data[i] >= 'A' && b.data[i] <= 'Z')
				b.data[i] = (char) (b.data[i] - 'A' + 'a');
		}
	}
	else if (e->op == TPL_F_TRIM)
	{
		if (e->args[0] != NULL && !tpl_is_null(args[0]))
			ok = tpl_put_val(c, &set, args[0], e->pos);
		else
			ok = tpl_put(c, &set, " \t\n\r\f\v", 6, e->pos);
		while (ok && s < end)
		{
			size_t		cl = rv_utf8_charlen(b.data, end, s);

			ok = tpl_charge(c, 1 + set.len / 16, e->pos);
			if (!ok || !tpl_char_in_set(b.data + s, cl, set.data, set.len))
				break;
			s += cl;
		}
		while (ok && end > s)
		{
			size_t		j = end - 1;

			while (j > s && (((unsigned char) b.data[j]) & 0xC0) == 0x80)
				j--;
			ok = tpl_charge(c, 1 + set.len / 16, e->pos);
			if (!ok || !tpl_char_in_set(b.data + j, end - j, set.data, set.len))
				break;
			end = j;
		}
	}
	if (ok)
		ok = tpl_result_str(c, e->pos, b.data ? b.data + s : "", end - s, out);
	rv_buf_free(&b);
	rv_buf_free(&set);
	return ok;
}

/*
 * Resolve a join attribute: a dotted path of field names or array
 * indexes, applied to elem.
 */
static TplVal
tpl_attr_path(json_object *elem, const char *path)
{
	TplVal		cur = tpl_ref(elem);
	char		part[256];
	const char *p = path;

	while (!cur.missing)
	{
		const char *dot = strchr(p, '.');
		size_t		n = dot ? (size_t) (dot - p) : strlen(p);
		TplVal		next;

		if (n >= sizeof(part))
		{
			tpl_val_free(&cur);
			break;
		}
		memcpy(part, p, n);
		part[n] = '\0';
		next = tpl_get_attr(cur, part);
		tpl_val_free(&cur);
		cur = next;
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	return cur;
}

/* join(sep, attribute): the printed elements separated by sep. */
static bool
tpl_filter_join(TplCtx *c, const TplExpr *e, TplVal v, const TplVal *args,
				TplVal *out)
{
	RvBuf		b = RV_BUF_INIT;
	RvBuf		sep = RV_BUF_INIT;
	const char *attr = NULL;
	bool		ok = true;
	size_t		i;
	size_t		n;

	if (!tpl_is_null(v) && tpl_type(v) != json_type_array &&
		tpl_type(v) != json_type_string && tpl_type(v) != json_type_object)
		return tpl_filter_type_error(c, e, v);
	if (e->args[1] != NULL && !tpl_is_null(args[1]))
	{
		if (tpl_type(args[1]) != json_type_string)
		{
			tpl_rerror(c, e->pos, "join attribute must be a string");
			return false;
		}
		attr = json_object_get_string(args[1].j);
	}
	if (e->args[0] != NULL && !tpl_put_val(c, &sep, args[0], e->pos))
		return false;
	if (tpl_is_null(v))
	{
		/* joining nothing gives the empty string */
	}
	else if (tpl_type(v) == json_type_array)
	{
		n = json_object_array_length(v.j);
		for (i = 0; ok && i < n; i++)
		{
			json_object *elem = json_object_array_get_idx(v.j, i);

			if (i > 0)
				ok = tpl_put(c, &b, sep.data, sep.len, e->pos);
			if (ok && attr != NULL)
			{
				TplVal		item = tpl_attr_path(elem, attr);

				ok = tpl_put_val(c, &b, item, e->pos);
				tpl_val_free(&item);
			}
			else if (ok)
			{
				TplVal		item = {false, elem};

				ok = tpl_put_val(c, &b, item, e->pos);
			}
		}
	}
	else if (tpl_type(v) == json_type_string)
	{
		const char *s = json_object_get_string(v.j);
		size_t		len = (size_t) json_object_get_string_len(v.j);

		for (i = 0; ok && i < len;)
		{
			size_t		cl = rv_utf8_charlen(s, len, i);

			if (i > 0)
				ok = tpl_put(c, &b, sep.data, sep.len, e->pos);
			if (ok)
				ok = tpl_put(c, &b, s + i, cl, e->pos);
			i += cl;
		}
	}
	else
	{
		struct json_object_iterator it = json_object_iter_begin(v.j);
		struct json_object_iterator end = json_object_iter_end(v.j);

		for (i = 0; ok && !json_object_iter_equal(&it, &end); i++)
		{
			const char *key = json_object_iter_peek_name(&it);

			if (i > 0)
				ok = tpl_put(c, &b, sep.data, sep.len, e->pos);
			if (ok)
				ok = tpl_put(c, &b, key, strlen(key), e->pos);
			json_object_iter_next(&it);
		}
	}
	if (ok)
		ok = tpl_result_str(c, e->pos, b.data, b.len, out);
	rv_buf_free(&b);
	rv_buf_free(&sep);
	return ok;
}

/* first / last: element of an array, character of a string. */
static bool
tpl_filter_first_last(TplCtx *c, const TplExpr *e, TplVal v, TplVal *out)
{
	bool		first = e->op == TPL_F_FIRST;

	*out = tpl_missing();
	if (tpl_is_null(v))
		return true;
	if (tpl_type(v) == json_type_array)
	{
		size_t		n = json_object_array_length(v.j);

		if (n > 0)
			*out = tpl_ref(json_object_array_get_idx(v.j, first ? 0 : n - 1));
		return true;
	}
	if (tpl_type(v) == json_type_string)
	{
		const char *s = json_object_get_string(v.j);
		size_t		len = (size_t) json_object_get_string_len(v.j);
		size_t		j;

		if (len == 0)
			return true;
		if (first)
			return tpl_result_str(c, e->pos, s, rv_utf8_charlen(s, len, 0), out);
		j = len - 1;
		while (j > 0 && (((unsigned char) s[j]) & 0xC0) == 0x80 && len - j < 4)
			j--;
		return tpl_result_str(c, e->pos, s + j, len - j, out);
	}
	return tpl_filter_type_error(c, e, v);
}

/* Parse s (after optional whitespace) as a whole decimal integer. */
static bool
tpl_str_to_int(const char *s, size_t len, int64_t *res)
{
	size_t		i = 0;
	size_t		end = len;
	bool		neg = false;
	int64_t		v = 0;

	while (i < end && rv_is_space(s[i]))
		i++;
	while (end > i && rv_is_space(s[end - 1]))
		end--;
	if (i < end && (s[i] == '+' || s[i] == '-'))
		neg = s[i++] == '-';
	if (i == end)
		return false;
	for (; i < end; i++)
	{
		int			dig;

		if (!rv_is_digit(s[i]))
			return false;
		dig = s[i] - '0';
		/* accumulate negatively so that INT64_MIN fits */
		if (v < (INT64_MIN + dig) / 10)
			return false;
		v = v * 10 - dig;
	}
	if (!neg)
	{
		if (v == INT64_MIN)
			return false;
		v = -v;
	}
	*res = v;
	return true;
}

/* Parse the whole string s (NUL-terminated, length len) as a finite double. */
static bool
tpl_str_to_double(const char *s, size_t len, double *res)
{
	char	   *endp;
	double		d;
	size_t		i = 0;

	while (i < len && rv_is_space(s[i]))
		i++;
	if (i == len || strlen(s) != len)
		return false;
	d = strtod(s + i, &endp);
	if (endp == s + i)
		return false;
	while (*endp != '\0' && rv_is_space(*endp))
		endp++;
	if (*endp != '\0' || !isfinite(d))
		return false;
	*res = d;
	return true;
}

/* Truncate d to an int64 when it fits. */
static bool
tpl_double_to_int(double d, int64_t *res)
{
	if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
		return false;
	*res = (int64_t) d;
	return true;
}

/* int(default=0) and float(default=0.0) */
static bool
tpl_filter_number(TplCtx *c, const TplExpr *e, TplVal v, const TplVal *args,
				  TplVal *out)
{
	bool		to_int = e->op == TPL_F_INT;
	int64_t		i = 0;
	double		d = 0;
	bool		have = false;

	if (!tpl_is_null(v))
	{
		switch (json_object_get_type(v.j))
		{
			case json_type_int:
			case json_type_double:
				{
					TplNum		n = tpl_num(v.j);

					if (to_int && n.is_int)
					{
						*out = tpl_copy(v);
						return true;
					}
					d = n.d;
					have = isfinite(d) && (!to_int || tpl_double_to_int(d, &i));
					break;
				}
			case json_type_boolean:
				i = json_object_get_boolean(v.j) ? 1 : 0;
				d = (double) i;
				have = true;
				break;
			case json_type_string:
				{
					const char *s = json_object_get_string(v.j);
					size_t		len = (size_t) json_object_get_string_len(v.j);

					if (!tpl_charge(c, len / 16, e->pos))
						return false;
					if (to_int && tpl_str_to_int(s, len, &i))
						have = true;
					else if (tpl_str_to_double(s, len, &d))
						have = !to_int || tpl_double_to_int(d, &i);
					break;
				}
			default:
				break;
		}
	}
	if (!have)
	{
		if (e->args[0] != NULL)
		{
			*out = tpl_copy(args[0]);
			return true;
		}
		return to_int ? tpl_result_int(c, e->pos, 0, out) :
			tpl_result_double(c, e->pos, 0.0, out);
	}
	return to_int ? tpl_result_int(c, e->pos, i, out) :
		tpl_result_double(c, e->pos, d, out);
}

/* Round x to an integer with method 0 common (half away from zero), 1 ceil, 2 floor. */
static double
tpl_round_method(double x, int method)
{
	if (method == 1)
		return ceil(x);
	if (method == 2)
		return floor(x);
	return round(x);
}

/* Round x to prec decimal digits (prec may be negative). */
static double
tpl_round_double(double x, int64_t prec, int method)
{
	double		scale;
	double		y;

	if (prec > 308)
		return x;
	if (prec < -308)
		return 0.0;
	if (prec >= 0)
	{
		scale = pow(10.0, (double) prec);
		y = x * scale;
		if (!isfinite(y))
			return x;
		return tpl_round_method(y, method) / scale;
	}
	scale = pow(10.0, (double) -prec);
	return tpl_round_method(x / scale, method) * scale;
}

/* round(precision=0, method="common") */
static bool
tpl_filter_round(TplCtx *c, const TplExpr *e, TplVal v, const TplVal *args,
				 TplVal *out)
{
	int64_t		prec = 0;
	int			method = 0;
	TplNum		x;
	double		r;
	int64_t		ri;

	*out = tpl_missing();
	if (tpl_is_null(v))
		return true;
	if (!tpl_is_number(v))
		return tpl_filter_type_error(c, e, v);
	if (e->args[0] != NULL)
	{
		if (args[0].missing || tpl_type(args[0]) != json_type_int ||
			!tpl_num(args[0].j).is_int)
		{
			tpl_rerror(c, e->pos, "round precision must be an integer");
			return false;
		}
		prec = tpl_num(args[0].j).i;
	}
	if (e->args[1] != NULL)
	{
		const char *m = tpl_type(args[1]) == json_type_string && !args[1].missing ?
		json_object_get_string(args[1].j) : "";

		if (strcmp(m, "common") == 0)
			method = 0;
		else if (strcmp(m, "ceil") == 0)
			method = 1;
		else if (strcmp(m, "floor") == 0)
			method = 2;
		else
		{
			tpl_rerror(c, e->pos, "round method must be \"common\", \"ceil\" or \"floor\"");
			return false;
		}
	}
	x = tpl_num(v.j);
	if (x.is_int)
	{
		if (prec >= 0)
		{
			*out = tpl_copy(v);
			return true;
		}
		r = tpl_round_double(x.d, prec, method);
		if (tpl_double_to_int(r, &ri))
			return tpl_result_int(c, e->pos, ri, out);
		return tpl_result_double(c, e->pos, r, out);
	}
	return tpl_result_double(c, e->pos, tpl_round_double(x.d, prec, method), out);
}

/*
 * Apply filter e (already parsed and checked) to v with evaluated
 * arguments args (slots whose e->args entry is NULL were not given).
 */
static bool
tpl_filter(TplCtx *c, const TplExpr *e, TplVal v, const TplVal *args,
		   TplVal *out)
{
	const char *s;
	size_t		n;

	*out = tpl_missing();
	switch ((TplFilterId) e->op)
	{
		case TPL_F_DEFAULT:
			{
				bool		use;

				if (e->args[1] != NULL && tpl_truthy(args[1]))
					use = !tpl_truthy(v);
				else
					use = tpl_is_null(v);
				if (!use)
					*out = tpl_copy(v);
				else if (e->args[0] != NULL)
					*out = tpl_copy(args[0]);
				else
					return tpl_result_str(c, e->pos, "", 0, out);
				return true;
			}
		case TPL_F_TOJSON:
			if (tpl_is_null(v))
				return tpl_result_str(c, e->pos, "null", 4, out);
			s = json_object_to_json_string_length(v.j, TPL_JSON_FLAGS, &n);
			if (s == NULL)
				return tpl_result(c, e->pos, NULL, out);
			if (!tpl_charge(c, n / 16, e->pos))
				return false;
			return tpl_result_str(c, e->pos, s, n, out);
		case TPL_F_UPPER:
		case TPL_F_LOWER:
		case TPL_F_TRIM:
		case TPL_F_STRING:
			return tpl_filter_text(c, e, v, args, out);
		case TPL_F_LENGTH:
			if (tpl_is_null(v))
				return tpl_result_int(c, e->pos, 0, out);
			switch (json_object_get_type(v.j))
			{
				case json_type_string:
					n = (size_t) json_object_get_string_len(v.j);
					if (!tpl_charge(c, n / 16, e->pos))
						return false;
					return tpl_result_int(c, e->pos, (int64_t)
										  rv_utf8_count(json_object_get_string(v.j), n), out);
				case json_type_array:
					return tpl_result_int(c, e->pos,
										  (int64_t) json_object_array_length(v.j), out);
				case json_type_object:
					return tpl_result_int(c, e->pos,
										  (int64_t) json_object_object_length(v.j), out);
				default:
					return tpl_filter_type_error(c, e, v);
			}
		case TPL_F_JOIN:
			return tpl_filter_join(c, e, v, args, out);
		case TPL_F_FIRST:
		case TPL_F_LAST:
			return tpl_filter_first_last(c, e, v, out);
		case TPL_F_INT:
		case TPL_F_FLOAT:
			return tpl_filter_number(c, e, v, args, out);
		case TPL_F_ROUND:
			return tpl_filter_round(c, e, v, args, out);
	}
	return true;
}

/* Evaluate the test "v is <id>" (before negation). */
static bool
tpl_test(int id, TplVal v)
{
	json_type	t = tpl_type(v);

	if (v.missing)
		return id == TPL_X_UNDEFINED;
	switch ((TplTestId) id)
	{
		case TPL_X_DEFINED:
			return true;
		case TPL_X_UNDEFINED:
			return false;
		case TPL_X_NONE:
			return t == json_type_null;
		case TPL_X_STRING:
			return t == json_type_string;
		case TPL_X_NUMBER:
			return t == json_type_int || t == json_type_double;
		case TPL_X_INTEGER:
			return t == json_type_int;
		case TPL_X_FLOAT:
			return t == json_type_double;
		case TPL_X_BOOLEAN:
			return t == json_type_boolean;
		case TPL_X_MAPPING:
			return t == json_type_object;
		case TPL_X_SEQUENCE:
			return t == json_type_array || t == json_type_string;
		case TPL_X_TRUE:
			return t == json_type_boolean && json_object_get_boolean(v.j);
		case TPL_X_FALSE:
			return t == json_type_boolean && !json_object_get_boolean(v.j);
		case TPL_X_ODD:
		case TPL_X_EVEN:
			if (t != json_type_int || !tpl_num(v.j).is_int)
				return false;
			return ((tpl_num(v.j).i % 2) != 0) == (id == TPL_X_ODD);
	}
	return false;
}

/* Evaluate a binary operator node: comparisons, in, ~ and arithmetic. */
static bool
tpl_eval_binary(TplCtx *c, const TplExpr *e, bool strict, TplVal *out)
{
	TplVal		a;
	TplVal		b;
	bool		ok;
	bool		r;

	if (!tpl_eval(c, e->a, strict, &a))
		return false;
	if (!tpl_eval(c, e->b, strict, &b))
	{
		tpl_val_free(&a);
		return false;
	}
	switch ((TplOp) e->op)
	{
		case TPL_OP_EQ:
		case TPL_OP_NE:
			ok = tpl_result_bool(c, e->pos, tpl_equal(a, b) == (e->op == TPL_OP_EQ), out);
			break;
		case TPL_OP_LT:
		case TPL_OP_GT:
		case TPL_OP_LE:
		case TPL_OP_GE:
			ok = tpl_order(c, e, a, b, out);
			break;
		case TPL_OP_IN:
		case TPL_OP_NOTIN:
			ok = tpl_contains(c, e, a, b, &r) &&
				tpl_result_bool(c, e->pos, r == (e->op == TPL_OP_IN), out);
			break;
		case TPL_OP_CONCAT:
			ok = tpl_concat(c, e->pos, a, b, out);
			break;
		default:
			ok = tpl_arith(c, e, a, b, out);
			break;
	}
	tpl_val_free(&a);
	tpl_val_free(&b);
	return ok;
}

/* Evaluate a filter node: the operand, the arguments, then the filter. */
static bool
tpl_eval_filter(TplCtx *c, const TplExpr *e, bool strict, TplVal *out)
{
	TplVal		v;
	TplVal		args[2];
	bool		ok = true;
	int			k;

	args[0] = args[1] = tpl_missing();
	/* "default" protects its operand from the strict input check */
	if (!tpl_eval(c, e->a, e->op == TPL_F_DEFAULT ? false : strict, &v))
		return false;
	/*
	 * The arguments of "default" are checked strictly only when the fallback
	 * is what gets printed: {{ input.a | default(input.b) }} needs input.b
	 * only when input.a is missing or null.
	 */
	for (k = 0; ok && k < e->nargs && k < 2; k++)
		if (e->args[k] != NULL)
			ok = tpl_eval(c, e->args[k],
						  e->op == TPL_F_DEFAULT ? (strict && v.j == NULL) : strict,
						  &args[k]);
	if (ok)
		ok = tpl_filter(c, e, v, args, out);
	tpl_val_free(&v);
	tpl_val_free(&args[0]);
	tpl_val_free(&args[1]);
	return ok;
}

/*
 * Evaluate expression e into *out (a new reference; missing on failure).
 * strict asks for the strict input check: a path input.<field> whose
 * field is absent is an error.  It is off under "default", in tests and
 * conditions.  Recursion is bounded by the height of the tree.
 */
static bool
tpl_eval(TplCtx *c, const TplExpr *e, bool strict, TplVal *out)
{
	TplVal		a;
	TplVal		b;
	bool		ok;

	*out = tpl_missing();
	if (!tpl_charge(c, 1, e->pos))
		return false;
	switch (e->kind)
	{
		case TPL_E_LITERAL:
			*out = tpl_ref(e->lit);
			return true;
		case TPL_E_NAME:
			*out = tpl_lookup(c, e->name);
			return true;
		case TPL_E_ATTR:
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			*out = tpl_get_attr(a, e->name);
			tpl_val_free(&a);
			if (out->missing && strict && e->on_input && !tpl_frame_has(c, "input"))
				return tpl_strict_fail(c, e, e->name, strlen(e->name));
			return true;
		case TPL_E_INDEX:
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			if (!tpl_eval(c, e->b, strict, &b))
			{
				tpl_val_free(&a);
				return false;
			}
			ok = tpl_get_index(c, e, a, b, out);
			if (ok && out->missing && strict && e->on_input &&
				!b.missing && tpl_type(b) == json_type_string &&
				!tpl_frame_has(c, "input"))
				ok = tpl_strict_fail(c, e, json_object_get_string(b.j),
									 (size_t) json_object_get_string_len(b.j));
			tpl_val_free(&a);
			tpl_val_free(&b);
			return ok;
		case TPL_E_METHOD:
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			ok = tpl_method(c, e, a, out);
			tpl_val_free(&a);
			return ok;
		case TPL_E_LIST:
			{
				json_object *arr = json_object_new_array_ext(e->nargs > 0 ? e->nargs : 1);
				int			k;

				if (arr == NULL)
					return tpl_result(c, e->pos, NULL, out);
				for (k = 0; k < e->nargs; k++)
				{
					if (!tpl_eval(c, e->args[k], strict, &a))
					{
						json_object_put(arr);
						return false;
					}
					json_object_array_add(arr, a.j);
				}
				*out = tpl_take(arr);
				return true;
			}
		case TPL_E_NOT:
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			ok = tpl_result_bool(c, e->pos, !tpl_truthy(a), out);
			tpl_val_free(&a);
			return ok;
		case TPL_E_NEG:
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			ok = tpl_negate(c, e, a, out);
			tpl_val_free(&a);
			return ok;
		case TPL_E_AND:
		case TPL_E_OR:
			/* Python semantics: the value of the deciding operand */
			if (!tpl_eval(c, e->a, strict, &a))
				return false;
			if (tpl_truthy(a) == (e->kind == TPL_E_OR))
			{
				*out = a;
				return true;
			}
			tpl_val_free(&a);
			return tpl_eval(c, e->b, strict, out);
		case TPL_E_BINARY:
			return tpl_eval_binary(c, e, strict, out);
		case TPL_E_FILTER:
			return tpl_eval_filter(c, e, strict, out);
		case TPL_E_TEST:
			if (!tpl_eval(c, e->a, false, &a))
				return false;
			ok = tpl_result_bool(c, e->pos, tpl_test(e->op, a) != e->negate, out);
			tpl_val_free(&a);
			return ok;
		case TPL_E_COND:
			if (!tpl_eval(c, e->a, false, &a))
				return false;
			ok = tpl_truthy(a);
			tpl_val_free(&a);
			if (ok)
				return tpl_eval(c, e->b, strict, out);
			if (e->c != NULL)
				return tpl_eval(c, e->c, strict, out);
			return true;
	}
	return true;
}

/* ----------------------------------------------------------------
 * Rendering
 * ----------------------------------------------------------------
 */

/*
 * Render a for node: loop over an array (or an object's keys, or its
 * [key, value] pairs with two loop variables), or render the else body
 * when there is nothing to loop over.
 */
static bool
tpl_render_for(TplCtx *c, const TplNode *n, int depth)
{
	TplVal		it;
	TplVal		list = tpl_missing();
	TplFrame   *f;
	size_t		len = 0;
	size_t		i;
	bool		ok = true;

	if (!tpl_eval(c, n->expr, false, &it))
		return false;
	if (tpl_is_null(it))
	{
		/* nothing to loop over */
	}
	else if (tpl_type(it) == json_type_array)
		list = tpl_copy(it);
	else if (tpl_type(it) == json_type_object)
		ok = tpl_object_to_array(c, n->expr->pos, it.j,
								 n->nvars == 2 ? TPL_M_ITEMS : TPL_M_KEYS, &list);
	else
	{
		tpl_rerror(c, n->expr->pos, "cannot loop over %s", tpl_type_name(it));
		ok = false;
	}
	tpl_val_free(&it);
	if (!ok)
		return false;
	if (!tpl_is_null(list))
		len = json_object_array_length(list.j);
	if (len == 0)
	{
		tpl_val_free(&list);
		return tpl_render_nodes(c, n->else_body, depth + 1);
	}
	if (c->nframes > TPL_MAX_DEPTH)
	{
		/* cannot happen: the parser limits block nesting */
		tpl_val_free(&list);
		tpl_rerror(c, n->pos, "block nesting exceeds the maximum depth of %d",
				   TPL_MAX_DEPTH);
		return false;
	}

	f = &c->frames[c->nframes++];
	memset(f, 0, sizeof(TplFrame));
	f->names[0] = n->vars[0];
	f->names[1] = n->vars[1];
	f->nnames = n->nvars;
	f->vals[0] = f->vals[1] = tpl_missing();
	f->length = len;
	for (i = 0; ok && i < len; i++)
	{
		json_object *item = json_object_array_get_idx(list.j, i);

		f->index0 = i;
		tpl_val_free(&f->vals[0]);
		tpl_val_free(&f->vals[1]);
		if (!tpl_charge(c, 1, n->pos))
		{
			ok = false;
			break;
		}
		if (n->nvars == 1)
			f->vals[0] = tpl_ref(item);
		else if (json_object_is_type(item, json_type_array) &&
				 json_object_array_length(item) == 2)
		{
			f->vals[0] = tpl_ref(json_object_array_get_idx(item, 0));
			f->vals[1] = tpl_ref(json_object_array_get_idx(item, 1));
		}
		else
		{
			TplVal		view = {false, item};

			if (json_object_is_type(item, json_type_array))
				tpl_rerror(c, n->expr->pos,
						   "cannot unpack an array of %zu elements into 2 loop variables",
						   json_object_array_length(item));
			else
				tpl_rerror(c, n->expr->pos, "cannot unpack %s into 2 loop variables",
						   tpl_type_name(view));
			ok = false;
			break;
		}
		ok = tpl_render_nodes(c, n->body, depth + 1);
	}
	tpl_val_free(&f->vals[0]);
	tpl_val_free(&f->vals[1]);
	c->nframes--;
	tpl_val_free(&list);
	return ok;
}

/* Render a list of nodes into c->out; depth is the block nesting. */
static bool
tpl_render_nodes(TplCtx *c, const TplNode *n, int depth)
{
	for (; n != NULL; n = n->next)
	{
		TplVal		v;
		bool		ok = true;
		const TplBranch *br;

		if (!tpl_charge(c, 1, n->pos))
			return false;
		switch (n->kind)
		{
			case TPL_N_TEXT:
				ok = tpl_put(c, &c->out, c->tmpl->src + n->pos, n->len, n->pos);
				break;
			case TPL_N_OUTPUT:
				if (!tpl_eval(c, n->expr, c->strict, &v))
					return false;
				ok = tpl_put_val(c, &c->out, v, n->pos);
				tpl_val_free(&v);
				break;
			case TPL_N_IF:
				for (br = n->branches; br != NULL; br = br->next)
				{
					bool		take = true;

					if (br->cond != NULL)
					{
						if (!tpl_eval(c, br->cond, false, &v))
							return false;
						take = tpl_truthy(v);
						tpl_val_free(&v);
					}
					if (take)
					{
						ok = tpl_render_nodes(c, br->body, depth + 1);
						break;
					}
				}
				break;
			case TPL_N_FOR:
				ok = tpl_render_for(c, n, depth);
				break;
		}
		if (!ok)
			return false;
	}
	return true;
}

/* ----------------------------------------------------------------
 * Compile / free
 * ----------------------------------------------------------------
 */
RvTemplate *
rv_template_compile(const char *src, size_t len, RvError *err)
{
	RvTemplate *tmpl;
	TplLexer	lx;
	TplParser	p;
	const char *nul;
	bool		ok;

	if (src == NULL && len > 0)
	{
		rv_error_set(err, "template source is missing");
		return NULL;
	}
	tmpl = calloc(1, sizeof(RvTemplate));
	if (tmpl == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}
	tmpl->src = malloc(len + 1);
	if (tmpl->src == NULL)
	{
		free(tmpl);
		rv_error_set(err, "out of memory");
		return NULL;
	}
	if (len > 0)
		memcpy(tmpl->src, src, len);
	tmpl->src[len] = '\0';
	tmpl->len = len;

	nul = memchr(tmpl->src, '\0', len);
	if (nul != NULL)
	{
		if (err != NULL && !err->set)
		{
			rv_error_set(err, "template contains a null byte");
			rv_error_locate(err, tmpl->src, (size_t) (nul - tmpl->src));
		}
		rv_template_free(tmpl);
		return NULL;
	}

	memset(&lx, 0, sizeof(lx));
	lx.src = tmpl->src;
	lx.len = len;
	lx.err = err;
	ok = tpl_lex(&lx);
	if (ok)
	{
		memset(&p, 0, sizeof(p));
		p.src = tmpl->src;
		p.toks = lx.toks;
		p.err = err;
		ok = tpl_parse_body(&p, 0, &tmpl->body);
		if (ok && tpl_peek(&p)->kind != TPL_T_EOF)
		{
			/* a stray elif / else / endif / endfor at top level */
			tpl_unexpected_tag(&p, tpl_tag_name(&p), NULL);
			ok = false;
		}
	}
	tpl_tokens_free(lx.toks, lx.ntoks);
	if (!ok)
	{
		rv_template_free(tmpl);
		return NULL;
	}
	return tmpl;
}

void
rv_template_free(RvTemplate *tmpl)
{
	if (tmpl == NULL)
		return;
	tpl_nodes_free(tmpl->body);
	free(tmpl->src);
	free(tmpl);
}

char *
rv_template_render(const RvTemplate *tmpl, json_object *scope,
				   bool strict_input, RvError *err)
{
	TplCtx	   *c;
	char	   *result;
	bool		ok;

	if (tmpl == NULL)
	{
		rv_error_set(err, "template is missing");
		return NULL;
	}
	/*
	 * The context holds the loop frames: keep it off the stack.  Only the
	 * fields before them are cleared; a frame is set up when a loop pushes
	 * it (clearing all 65 of them cost more than rendering a short prompt).
	 */
	c = malloc(sizeof(TplCtx));
	if (c == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}
	memset(c, 0, offsetof(TplCtx, frames));
	c->nframes = 0;
	c->tmpl = tmpl;
	c->scope = scope;
	c->strict = strict_input;
	c->err = err;
	ok = rv_buf_reserve(&c->out, 0);
	if (!ok)
		rv_error_set(err, "out of memory");
	else
	{
		c->out.data[0] = '\0';
		ok = tpl_render_nodes(c, tmpl->body, 0);
	}
	result = c->out.data;
	if (!ok)
	{
		free(result);
		result = NULL;
	}
	free(c);
	return result;
}
