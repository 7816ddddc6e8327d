/*-------------------------------------------------------------------------
 *
 * llm.c
 *	  Provider request and response formats: OpenAI-compatible chat
 *	  completions and the Anthropic Messages API; see llm.h.
 *
 * Everything here is pure: no PostgreSQL headers, no libcurl, no global
 * state.  Results are malloc'd (or json-c references) and failures are
 * reported in an RvError, so the file links into the extension, the unit
 * tests and the fuzz target alike.
 *
 * Every body is parsed with a depth-limited strict json_tokener that must
 * consume the whole input, except a 2xx reply of the common shape, which
 * the reply scanner reads in one pass without building a tree (and gives up
 * on anything else, for the tokener to decide); provider bodies may be
 * several megabytes, so no function here does more than a small constant
 * number of passes over its input.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm.h"
#include "rvtext.h"

/* maximum nesting accepted in any JSON text */
#define LLM_JSON_DEPTH 64

/* rv_llm_error_message() returns at most this many bytes, NUL included */
#define LLM_ERRMSG_MAX 300

/* excerpts of a body shown in err->detail */
#define LLM_EXCERPT_MAX 200

/* Anthropic requires max_tokens; this is used when the caller gave none */
#define LLM_ANTHROPIC_MAX_TOKENS 1024

/* balanced {...} / [...] spans tried by rv_llm_extract_json() */
#define LLM_MAX_SPANS 8

/* longest response_format schema name OpenAI accepts */
#define LLM_SCHEMA_NAME_MAX 64

/*
 * Copy n bytes of s into a new NUL-terminated malloc'd string.  Returns NULL
 * when out of memory.
 */
static char *
llm_strndup(const char *s, size_t n)
{
	char	   *r;

	if (n == SIZE_MAX)
		return NULL;
	r = malloc(n + 1);
	if (r == NULL)
		return NULL;
	if (n > 0)
		memcpy(r, s, n);
	r[n] = '\0';
	return r;
}

/*
 * Make provider text fit for an error message: runs of whitespace and
 * control characters become one space, bytes that are not valid UTF-8
 * become '?', leading and trailing space is dropped, and the result is cut
 * on a character boundary to at most max - 1 bytes (ending in "..." when
 * cut).  Reads only as much of s as the output needs.  Returns a malloc'd
 * string (possibly empty), or NULL when out of memory.
 */
static char *
llm_sanitize(const char *s, size_t len, size_t max)
{
	const unsigned char *p = (const unsigned char *) s;
	char	   *out;
	size_t		o = 0;
	size_t		i = 0;
	size_t		limit;
	bool		pending_space = false;
	bool		cut = false;

	if (max < 8)
		max = 8;
	limit = max - 1;
	out = malloc(max);
	if (out == NULL)
		return NULL;

	while (i < len)
	{
		size_t		n;

		if (p[i] < 0x20 || p[i] == 0x7F || p[i] == ' ')
		{
			pending_space = (o > 0);
			i++;
			continue;
		}
		n = rv_utf8_valid_len(p + i, len - i);
		if (o + (pending_space ? 1 : 0) + (n ? n : 1) > limit)
		{
			cut = true;
			break;
		}
		if (pending_space)
		{
			out[o++] = ' ';
			pending_space = false;
		}
		if (n == 0)
		{
			out[o++] = '?';
			i++;
		}
		else
		{
			memcpy(out + o, p + i, n);
			o += n;
			i += n;
		}
	}

	if (cut)
	{
		/* back off to a character boundary that leaves room for "..." */
		while (o > 0 && o + 3 > limit)
		{
			o--;
			while (o > 0 && ((unsigned char) out[o] & 0xC0) == 0x80)
				o--;
		}
		while (o > 0 && out[o - 1] == ' ')
			o--;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* llm_parse()'s tokener, kept between calls */
static json_tokener *llm_tok = NULL;

/* a tokener that parsed more than this is freed, not kept */
#define LLM_TOK_KEEP_MAX (256 * 1024)

/*
 * Parse text[0..len) as exactly one JSON value with a strict, UTF-8
 * validating tokener limited to LLM_JSON_DEPTH levels.  On success stores
 * the value in *out (NULL for a JSON null) and returns true.  On failure
 * returns false and writes a description ("json-c: <error> at offset N")
 * into why when it is not NULL.
 */
static bool
llm_parse(const char *text, size_t len, json_object **out, char *why,
		  size_t whylen)
{
	json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;
	size_t		end;

	*out = NULL;
	if (len > (size_t) INT_MAX)
	{
		if (why != NULL)
			snprintf(why, whylen, "json-c: input of %zu bytes is too large", len);
		return false;
	}
	/*
	 * One tokener per process, reset before each use: allocating and
	 * clearing a 64-level tokener for every reply was a tenth of the
	 * worker's per-row instructions.  json-c never longjmps, so a parse
	 * always comes back here and the tokener cannot be left in use.
	 */
	if (llm_tok == NULL)
	{
		llm_tok = json_tokener_new_ex(LLM_JSON_DEPTH);
		if (llm_tok == NULL)
		{
			if (why != NULL)
				snprintf(why, whylen, "json-c: out of memory");
			return false;
		}
		json_tokener_set_flags(llm_tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	}
	tok = llm_tok;
	json_tokener_reset(tok);
	obj = json_tokener_parse_ex(tok, text != NULL ? text : "", (int) len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);

	/*
	 * A number at the top level (or a truncated document) leaves the
	 * tokener waiting for more input; a NUL byte tells it the input ended.
	 * The offset of interest stays the one from the first call.
	 */
	if (obj == NULL && jerr == json_tokener_continue)
	{
		obj = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		if (jerr == json_tokener_error_parse_eof)
			jerr = json_tokener_continue;
	}
	json_tokener_reset(tok);
	/*
	 * Not kept: a tokener whose string buffer grew with a large input, and
	 * one that failed, since json_tokener_reset() leaves a pending \u high
	 * surrogate behind (a body cut after "\ud83d\u") and the next body's
	 * first \u escape would be decoded as if it followed it.
	 */
	if (len > LLM_TOK_KEEP_MAX || jerr != json_tokener_success)
	{
		json_tokener_free(tok);
		llm_tok = NULL;
	}

	if (jerr != json_tokener_success)
	{
		if (obj != NULL)
			json_object_put(obj);
		if (why != NULL)
			snprintf(why, whylen, "json-c: %s at offset %zu",
					 jerr == json_tokener_continue ?
					 "unexpected end of data" : json_tokener_error_desc(jerr),
					 end);
		return false;
	}

	/* the tokener stops at a NUL byte; anything left must be whitespace */
	while (end < len && (text[end] == ' ' || text[end] == '\t' ||
						 text[end] == '\n' || text[end] == '\r'))
		end++;
	if (end < len)
	{
		if (obj != NULL)
			json_object_put(obj);
		if (why != NULL)
			snprintf(why, whylen, "json-c: unexpected data after the value at offset %zu",
					 end);
		return false;
	}
	*out = obj;
	return true;
}

/* The member key of object o, or NULL when o is not an object or lacks it. */
static json_object *
llm_get(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (o == NULL || !json_object_is_type(o, json_type_object))
		return NULL;
	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/*
 * The string member key of object o, with its length in *len when len is
 * not NULL; NULL when absent or not a string.
 */
static const char *
llm_get_str(json_object *o, const char *key, size_t *len)
{
	json_object *v = llm_get(o, key);

	if (v == NULL || !json_object_is_type(v, json_type_string))
		return NULL;
	if (len != NULL)
		*len = (size_t) json_object_get_string_len(v);
	return json_object_get_string(v);
}

/*
 * A token count: the non-negative integer member key of o, or -1 when it is
 * absent, negative or not a number.  Integral doubles are accepted (some
 * servers print counts as 12.0); values are capped at LONG_MAX.
 */
static long
llm_get_count(json_object *o, const char *key)
{
	json_object *v = llm_get(o, key);

	if (v == NULL)
		return -1;
	if (json_object_is_type(v, json_type_int))
	{
		int64_t		n = json_object_get_int64(v);

		if (n < 0)
			return -1;
		if ((uint64_t) n > (uint64_t) LONG_MAX)
			return LONG_MAX;
		return (long) n;
	}
	if (json_object_is_type(v, json_type_double))
	{
		double		d = json_object_get_double(v);

		if (!isfinite(d) || d < 0 || d != floor(d))
			return -1;
		if (d >= (double) LONG_MAX)
			return LONG_MAX;
		return (long) d;
	}
	return -1;
}

/* Copy of the string member key of o (malloc'd), or NULL. */
static char *
llm_dup_str(json_object *o, const char *key)
{
	size_t		len;
	const char *s = llm_get_str(o, key, &len);

	return s != NULL ? llm_strndup(s, len) : NULL;
}

/*
 * The human-readable message of a provider error document:
 * {"error": {"message": ...}}, {"error": "..."}, {"message": "..."} or
 * {"detail": "..."}.  Returns a sanitized malloc'd string, or NULL when the
 * document has none (or it is blank).
 */
static char *
llm_error_text(json_object *root)
{
	json_object *e = llm_get(root, "error");
	const char *s = NULL;
	size_t		len = 0;
	char	   *r;

	if (e != NULL && json_object_is_type(e, json_type_object))
		s = llm_get_str(e, "message", &len);
	else if (e != NULL && json_object_is_type(e, json_type_string))
	{
		s = json_object_get_string(e);
		len = (size_t) json_object_get_string_len(e);
	}
	if (s == NULL)
		s = llm_get_str(root, "message", &len);
	if (s == NULL)
		s = llm_get_str(root, "detail", &len);
	if (s == NULL)
		return NULL;
	r = llm_sanitize(s, len, LLM_ERRMSG_MAX);
	if (r != NULL && r[0] == '\0')
	{
		free(r);
		r = NULL;
	}
	return r;
}

/*
 * The "error" member of o when it is an error object or a non-empty string;
 * NULL otherwise (servers may send "error": null on success).
 */
static json_object *
llm_error_member(json_object *o)
{
	json_object *e = llm_get(o, "error");

	if (e == NULL)
		return NULL;
	if (json_object_is_type(e, json_type_object))
		return e;
	if (json_object_is_type(e, json_type_string) &&
		json_object_get_string_len(e) > 0)
		return e;
	return NULL;
}

/*
 * Put the start of a response body into err->detail, for errors where the
 * body did not have the expected shape.
 */
static void
llm_detail_excerpt(RvError *err, const char *body, size_t len)
{
	char	   *ex = llm_sanitize(body, len, LLM_EXCERPT_MAX);

	if (ex != NULL)
		rv_error_detail(err, "The response body starts with: %s", ex);
	free(ex);
}

/*
 * Record a provider-level error found in a 2xx body: e is the error member
 * (an object or a string), root the whole document.  The provider's message
 * goes into the primary message; its type and code into the detail.
 */
static void
llm_report_provider_error(json_object *root, json_object *e,
						  const char *body, size_t len, RvError *err)
{
	json_object *wrapper;
	char	   *msg;
	const char *type = NULL;
	json_object *code = NULL;

	/* llm_error_text() expects the error under "error" */
	wrapper = json_object_new_object();
	if (wrapper != NULL)
	{
		json_object_object_add(wrapper, "error", json_object_get(e));
		msg = llm_error_text(wrapper);
		json_object_put(wrapper);
	}
	else
		msg = NULL;
	if (msg == NULL)
		msg = llm_error_text(root);
	if (msg == NULL)
		msg = llm_sanitize(body, len, LLM_ERRMSG_MAX);
	rv_error_set(err, "provider returned an error: %s",
				 msg != NULL ? msg : "(no message)");
	free(msg);

	if (json_object_is_type(e, json_type_object))
	{
		type = llm_get_str(e, "type", NULL);
		code = llm_get(e, "code");
		if (code != NULL && !json_object_is_type(code, json_type_string) &&
			!json_object_is_type(code, json_type_int))
			code = NULL;
	}
	if (type != NULL || code != NULL)
	{
		char	   *t = type ? llm_sanitize(type, strlen(type), 64) : NULL;
		char	   *c = code ? llm_sanitize(json_object_get_string(code),
											strlen(json_object_get_string(code)),
											64) : NULL;
		size_t		rawlen = 0;
		const char *raw = llm_get_str(llm_get(e, "metadata"), "raw", &rawlen);
		char	   *r = raw ? llm_sanitize(raw, rawlen, LLM_EXCERPT_MAX) : NULL;

		/* OpenRouter passes the upstream provider's own text in metadata.raw */
		if (t != NULL && c != NULL)
			rv_error_detail(err, "The provider reported error type \"%s\", code \"%s\".", t, c);
		else if (t != NULL)
			rv_error_detail(err, "The provider reported error type \"%s\".", t);
		else if (c != NULL && r != NULL && r[0] != '\0')
			rv_error_detail(err, "The provider reported error code \"%s\": %s", c, r);
		else if (c != NULL)
			rv_error_detail(err, "The provider reported error code \"%s\".", c);
		free(t);
		free(c);
		free(r);
	}
}

/*
 * The text of one content part: its "text" member when that is a string and
 * its "type" is one of types (a NULL-terminated list), or absent when
 * allow_untyped.  NULL when the part does not count.
 */
static const char *
llm_part_text(json_object *part, const char *const *types,
			  bool allow_untyped, size_t *len)
{
	json_object *tv = llm_get(part, "type");
	bool		match = false;
	int			k;

	if (tv == NULL)
		match = allow_untyped;
	else if (json_object_is_type(tv, json_type_string))
	{
		const char *type = json_object_get_string(tv);

		for (k = 0; types[k] != NULL && !match; k++)
			match = (strcmp(type, types[k]) == 0);
	}
	if (!match)
		return NULL;
	return llm_get_str(part, "text", len);
}

/*
 * Concatenate the text parts of an array of content parts (see
 * llm_part_text()).  Returns a malloc'd string, or NULL when no part counted
 * or, with *oom set, when out of memory.
 */
static char *
llm_concat_parts(json_object *arr, const char *const *types,
				 bool allow_untyped, bool *oom)
{
	size_t		n = json_object_array_length(arr);
	size_t		i;
	bool		any = false;
	RvBuf		r = RV_BUF_INIT;

	*oom = false;
	for (i = 0; i < n; i++)
	{
		size_t		len;
		const char *text = llm_part_text(json_object_array_get_idx(arr, i),
										 types, allow_untyped, &len);

		if (text == NULL)
			continue;
		any = true;
		if (!rv_buf_append(&r, text, len))
		{
			rv_buf_free(&r);
			*oom = true;
			return NULL;
		}
	}
	return any ? r.data : NULL;
}

/* What differs per flavour besides the body and the response. */
typedef struct LlmFlavor
{
	const char *name;
	const char *path;			/* appended to the provider's api_base */
	const char *key_env[3];		/* after RVBBIT_API_KEY, NULL-terminated */
	RvLlmHeader headers[3];		/* ending with a NULL name */
} LlmFlavor;

static const LlmFlavor llm_flavors[RV_NFLAVORS] = {
	[RV_FLAVOR_OPENAI] = {
		"openai", "/chat/completions", {"OPENROUTER_API_KEY", "OPENAI_API_KEY", NULL},
		{{"Authorization", NULL, "Bearer ", true}, {NULL, NULL, NULL, false}}
	},
	[RV_FLAVOR_ANTHROPIC] = {
		"anthropic", "/messages", {"ANTHROPIC_API_KEY", NULL},
		{{"x-api-key", NULL, "", false}, {"anthropic-version", "2023-06-01", NULL, false},
		 {NULL, NULL, NULL, false}}
	},
};

static const LlmFlavor *
llm_flavor(RvFlavor flavor)
{
	return &llm_flavors[(int) flavor >= 0 && flavor < RV_NFLAVORS ? flavor : RV_FLAVOR_OPENAI];
}

RvFlavor
rv_llm_flavor(const char *name)
{
	int			i;

	for (i = 0; name != NULL && i < RV_NFLAVORS; i++)
		if (strcmp(llm_flavors[i].name, name) == 0)
			return (RvFlavor) i;
	return RV_FLAVOR_OPENAI;
}

const char *
rv_llm_path(RvFlavor flavor)
{
	return llm_flavor(flavor)->path;
}

const char *const *
rv_llm_key_env(RvFlavor flavor)
{
	return llm_flavor(flavor)->key_env;
}

const RvLlmHeader *
rv_llm_auth_headers(RvFlavor flavor)
{
	return llm_flavor(flavor)->headers;
}

/*
 * Write name reduced to [a-zA-Z0-9_-]{1,64} into out (LLM_SCHEMA_NAME_MAX + 1
 * bytes): every other character (a whole UTF-8 sequence counts as one)
 * becomes '_'; an empty or NULL name becomes "reply".
 */
static void
llm_schema_name(const char *name, char *out)
{
	const unsigned char *p = (const unsigned char *) (name ? name : "");
	size_t		o = 0;

	while (*p != '\0' && o < LLM_SCHEMA_NAME_MAX)
	{
		if (isascii(*p) && (isalnum(*p) || *p == '_' || *p == '-'))
			out[o++] = (char) *p++;
		else
		{
			out[o++] = '_';
			p++;
			/* skip the continuation bytes of a multibyte character */
			while ((*p & 0xC0) == 0x80)
				p++;
		}
	}
	out[o] = '\0';
	if (o == 0)
		strcpy(out, "reply");
}

/*
 * The request body is written directly, byte for byte as json-c writes the
 * tree the earlier code built (JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE): members in the order they were added,
 * strings escaped as json_escape_str() escapes them.  The body is what the
 * cache key is computed from, so that is no detail: tests/fuzz/llm_diff.h
 * keeps a copy of the tree builder, and the unit tests and the fuzz target
 * compare the two.
 */
#define LLM_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* trees nested deeper than this are written by json-c itself */
#define LLM_WRITE_DEPTH 64

/* Append the NUL-terminated s. */
static bool
llm_put(RvBuf *b, const char *s)
{
	return rv_buf_append(b, s, strlen(s));
}

/*
 * Append s[0..n) as a JSON string, as json-c's json_escape_str() writes it:
 * '"', '\\' and the control characters \b \f \n \r \t with a backslash,
 * other bytes below 0x20 (NUL included) as \u00xx, '/' and every other
 * byte as they are.
 */
static bool
llm_put_str(RvBuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t		start = 0;
	size_t		i;

	if (!rv_buf_reserve(b, n + 2))
		return false;
	b->data[b->len++] = '"';
	for (i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];
		char		esc[7];
		size_t		elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		esc[0] = '\\';
		switch (c)
		{
			case '\b':
				esc[1] = 'b';
				break;
			case '\f':
				esc[1] = 'f';
				break;
			case '\n':
				esc[1] = 'n';
				break;
			case '\r':
				esc[1] = 'r';
				break;
			case '\t':
				esc[1] = 't';
				break;
			case '"':
			case '\\':
				esc[1] = (char) c;
				break;
			default:
				memcpy(esc + 1, "u00", 3);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				elen = 6;
				break;
		}
		if (!rv_buf_append(b, s + start, i - start) || !rv_buf_append(b, esc, elen))
			return false;
		start = i + 1;
	}
	return rv_buf_append(b, s + start, n - start) && rv_buf_append(b, "\"", 1);
}

/* Append a member name and its colon: ,"name": (no comma before the first). */
static bool
llm_put_key(RvBuf *b, bool *first, const char *name)
{
	if (!*first && !rv_buf_append(b, ",", 1))
		return false;
	*first = false;
	return llm_put_str(b, name, strlen(name)) && rv_buf_append(b, ":", 1);
}

/*
 * Append the JSON text of v (NULL: null) as json-c's
 * json_object_to_json_string_ext(v, LLM_JSON_FLAGS) writes it.  Numbers
 * with a fraction are left to json-c (a double keeps the text it was
 * parsed from, or is printed with json-c's own format), and so are trees
 * nested deeper than LLM_WRITE_DEPTH.
 */
static bool
llm_put_json(RvBuf *b, json_object *v, int depth)
{
	char		num[32];

	if (depth > LLM_WRITE_DEPTH && v != NULL)
	{
		const char *s = json_object_to_json_string_ext(v, LLM_JSON_FLAGS);

		return s != NULL && llm_put(b, s);
	}
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return rv_buf_append(b, "null", 4);
		case json_type_boolean:
			return json_object_get_boolean(v) ? rv_buf_append(b, "true", 4) :
				rv_buf_append(b, "false", 5);
		case json_type_int:
			{
				int64_t		n = json_object_get_int64(v);

				/* an unsigned value above INT64_MAX reads as INT64_MAX */
				if (n == INT64_MAX)
					snprintf(num, sizeof(num), "%" PRIu64, json_object_get_uint64(v));
				else
					snprintf(num, sizeof(num), "%" PRId64, n);
				return llm_put(b, num);
			}
		case json_type_string:
			return llm_put_str(b, json_object_get_string(v),
							   (size_t) json_object_get_string_len(v));
		case json_type_array:
			{
				size_t		n = json_object_array_length(v);
				size_t		i;

				if (!rv_buf_append(b, "[", 1))
					return false;
				for (i = 0; i < n; i++)
					if ((i > 0 && !rv_buf_append(b, ",", 1)) ||
						!llm_put_json(b, json_object_array_get_idx(v, i), depth + 1))
						return false;
				return rv_buf_append(b, "]", 1);
			}
		case json_type_object:
			{
				json_object_iter it;
				bool		first = true;

				if (!rv_buf_append(b, "{", 1))
					return false;
				json_object_object_foreachC(v, it)
				{
					if (!llm_put_key(b, &first, it.key) ||
						!llm_put_json(b, it.val, depth + 1))
						return false;
				}
				return rv_buf_append(b, "}", 1);
			}
		case json_type_double:
		default:
			{
				const char *s = json_object_to_json_string_ext(v, LLM_JSON_FLAGS);

				return s != NULL && llm_put(b, s);
			}
	}
}

/* Append a decimal integer. */
static bool
llm_put_int(RvBuf *b, int n)
{
	char		num[16];

	snprintf(num, sizeof(num), "%d", n);
	return llm_put(b, num);
}

/*
 * The OpenAI messages array: the system prompt first (when there is one),
 * then the caller's messages (when they are an array).
 */
static bool
llm_put_openai_messages(RvBuf *b, const RvLlmRequest *req)
{
	bool		any = false;

	if (!rv_buf_append(b, "[", 1))
		return false;
	if (req->system != NULL)
	{
		if (!llm_put(b, "{\"role\":\"system\",\"content\":") ||
			!llm_put_str(b, req->system, strlen(req->system)) ||
			!rv_buf_append(b, "}", 1))
			return false;
		any = true;
	}
	if (req->messages != NULL && json_object_is_type(req->messages, json_type_array))
	{
		size_t		n = json_object_array_length(req->messages);
		size_t		i;

		for (i = 0; i < n; i++)
		{
			if ((any && !rv_buf_append(b, ",", 1)) ||
				!llm_put_json(b, json_object_array_get_idx(req->messages, i), 1))
				return false;
			any = true;
		}
	}
	return rv_buf_append(b, "]", 1);
}

/*
 * The OpenAI response_format member's value for an output schema:
 * {"type":"json_schema","json_schema":{"name":...,"schema":...,"strict":false}}.
 */
static bool
llm_put_response_format(RvBuf *b, const RvLlmRequest *req)
{
	char		name[LLM_SCHEMA_NAME_MAX + 1];

	llm_schema_name(req->schema_name, name);
	return llm_put(b, "{\"type\":\"json_schema\",\"json_schema\":{\"name\":") &&
		llm_put_str(b, name, strlen(name)) &&
		llm_put(b, ",\"schema\":") &&
		llm_put_json(b, req->output_schema, 2) &&
		llm_put(b, ",\"strict\":false}}");
}

/*
 * The Anthropic system prompt: the caller's, followed by the instruction to
 * reply with JSON matching the output schema when there is one.  Returns a
 * malloc'd string, or NULL when there is no system prompt at all; *oom is
 * set when out of memory.
 */
static char *
llm_anthropic_system(const RvLlmRequest *req, bool *oom)
{
	static const char instr[] =
	"Reply with only a JSON value that matches this JSON Schema: ";
	RvBuf		r = RV_BUF_INIT;
	bool		ok;

	*oom = false;
	if (req->output_schema == NULL)
	{
		char	   *s;

		if (req->system == NULL)
			return NULL;
		s = llm_strndup(req->system, strlen(req->system));
		*oom = (s == NULL);
		return s;
	}
	ok = rv_buf_reserve(&r, 0);
	if (ok && req->system != NULL && req->system[0] != '\0')
		ok = llm_put(&r, req->system) && llm_put(&r, "\n\n");
	ok = ok && llm_put(&r, instr) && llm_put_json(&r, req->output_schema, 0);
	if (!ok)
	{
		rv_buf_free(&r);
		*oom = true;
		return NULL;
	}
	return r.data;
}

char *
rv_llm_build_body(const RvLlmRequest *req)
{
	RvBuf		b = RV_BUF_INIT;
	bool		first = true;
	bool		ok;

	if (req == NULL)
		return NULL;
	/* one allocation for most bodies */
	ok = rv_buf_reserve(&b, 512) && rv_buf_append(&b, "{", 1);
	if (ok && req->model != NULL)
		ok = llm_put_key(&b, &first, "model") &&
			llm_put_str(&b, req->model, strlen(req->model));

	if (req->flavor == RV_FLAVOR_ANTHROPIC)
	{
		bool		oom = false;
		char	   *system = ok ? llm_anthropic_system(req, &oom) : NULL;

		ok = ok && !oom &&
			llm_put_key(&b, &first, "max_tokens") &&
			llm_put_int(&b, req->max_tokens > 0 ? req->max_tokens : LLM_ANTHROPIC_MAX_TOKENS);
		if (ok && system != NULL)
			ok = llm_put_key(&b, &first, "system") &&
				llm_put_str(&b, system, strlen(system));
		free(system);
		ok = ok && llm_put_key(&b, &first, "messages") &&
			(req->messages != NULL ? llm_put_json(&b, req->messages, 1) :
			 rv_buf_append(&b, "[]", 2));
	}
	else
	{
		ok = ok && llm_put_key(&b, &first, "messages") &&
			llm_put_openai_messages(&b, req);
		if (ok && req->max_tokens > 0)
			ok = llm_put_key(&b, &first, "max_tokens") && llm_put_int(&b, req->max_tokens);
		if (ok && req->output_schema != NULL)
			ok = llm_put_key(&b, &first, "response_format") &&
				llm_put_response_format(&b, req);
	}

	/*
	 * The temperature with at most 15 significant digits, so that 0.7 goes
	 * out as 0.7; left out when it is NaN or infinite.
	 */
	if (ok && req->has_temperature && isfinite(req->temperature))
	{
		char		num[64];

		snprintf(num, sizeof(num), "%.15g", req->temperature);
		ok = llm_put_key(&b, &first, "temperature") && llm_put(&b, num);
	}
	ok = ok && rv_buf_append(&b, "}", 1);
	if (!ok)
	{
		rv_buf_free(&b);
		return NULL;
	}
	return b.data;
}

/*
 * Fill out from an OpenAI chat.completion document.  Returns false with err
 * set when it carries an error or lacks choices[0].message.content.
 */
static bool
llm_parse_openai(json_object *root, const char *body, size_t len,
				 RvLlmResponse *out, RvError *err)
{
	static const char *const text_types[] = {"text", "output_text", NULL};
	json_object *e = llm_error_member(root);
	json_object *choices;
	json_object *choice;
	json_object *message;
	json_object *content;
	json_object *usage;
	bool		oom = false;

	if (e != NULL)
	{
		llm_report_provider_error(root, e, body, len, err);
		return false;
	}
	choices = llm_get(root, "choices");
	choice = (choices != NULL && json_object_is_type(choices, json_type_array) &&
			  json_object_array_length(choices) > 0) ?
		json_object_array_get_idx(choices, 0) : NULL;

	/* OpenRouter reports a failure of the upstream model inside the choice */
	e = llm_error_member(choice);
	if (e != NULL)
	{
		llm_report_provider_error(root, e, body, len, err);
		return false;
	}

	message = llm_get(choice, "message");
	if (message == NULL || !json_object_is_type(message, json_type_object) ||
		!json_object_object_get_ex(message, "content", &content))
	{
		rv_error_set(err, "provider response has no choices[0].message.content");
		llm_detail_excerpt(err, body, len);
		rv_error_hint(err, "Check that the provider's API flavour (openai or anthropic) matches its base URL.");
		return false;
	}

	if (content != NULL && json_object_is_type(content, json_type_string))
		out->content = llm_strndup(json_object_get_string(content),
								   (size_t) json_object_get_string_len(content));
	else if (content != NULL && json_object_is_type(content, json_type_array))
	{
		out->content = llm_concat_parts(content, text_types, true, &oom);
		if (out->content == NULL && !oom)
		{
			/* a refusal part keeps its text in "refusal", not "text" */
			size_t		i;

			for (i = 0; i < json_object_array_length(content); i++)
			{
				json_object *part = json_object_array_get_idx(content, i);
				const char *type = llm_get_str(part, "type", NULL);

				if (type != NULL && strcmp(type, "refusal") == 0 &&
					(out->content = llm_dup_str(part, "refusal")) != NULL)
					break;
			}
		}
		if (out->content == NULL && !oom)
		{
			rv_error_set(err, "provider returned an empty reply");
			rv_error_detail(err, "The reply's content has no text parts.");
			return false;
		}
	}
	else if (content == NULL)
	{
		/* the model refused, or called a tool */
		out->content = llm_dup_str(message, "refusal");
		if (out->content == NULL)
		{
			const char *fr = llm_get_str(choice, "finish_reason", NULL);

			rv_error_set(err, "provider returned an empty reply");
			if (fr != NULL)
			{
				char	   *f = llm_sanitize(fr, strlen(fr), 64);

				if (f != NULL)
					rv_error_detail(err, "The finish reason is \"%s\".", f);
				free(f);
			}
			return false;
		}
	}
	else
	{
		rv_error_set(err, "provider response has no choices[0].message.content");
		rv_error_detail(err, "The content is a JSON %s, not a string.",
						json_type_to_name(json_object_get_type(content)));
		return false;
	}
	if (out->content == NULL)
	{
		rv_error_set(err, "out of memory");
		return false;
	}

	out->finish_reason = llm_dup_str(choice, "finish_reason");
	out->truncated = rv_llm_is_truncation(out->finish_reason);
	out->model = llm_dup_str(root, "model");
	out->id = llm_dup_str(root, "id");
	usage = llm_get(root, "usage");
	out->input_tokens = llm_get_count(usage, "prompt_tokens");
	out->output_tokens = llm_get_count(usage, "completion_tokens");
	/* OpenAI: usage.prompt_tokens_details.cached_tokens; some servers flat */
	out->cached_tokens = llm_get_count(llm_get(usage, "prompt_tokens_details"),
									   "cached_tokens");
	if (out->cached_tokens < 0)
		out->cached_tokens = llm_get_count(usage, "cached_tokens");
	if (out->cached_tokens >= 0 && out->input_tokens >= 0 &&
		out->cached_tokens > out->input_tokens)
		out->cached_tokens = out->input_tokens;
	return true;
}

/*
 * Fill out from an Anthropic message document.  Returns false with err set
 * when it is an error document or has no content.  input_tokens includes
 * the prompt tokens written to or read from the prompt cache, so that it
 * counts the whole prompt as OpenAI's prompt_tokens does.
 */
static bool
llm_parse_anthropic(json_object *root, const char *body, size_t len,
					RvLlmResponse *out, RvError *err)
{
	static const char *const text_types[] = {"text", NULL};
	const char *type = llm_get_str(root, "type", NULL);
	json_object *e = llm_error_member(root);
	json_object *content;
	json_object *usage;
	bool		oom = false;

	if (e != NULL || (type != NULL && strcmp(type, "error") == 0))
	{
		llm_report_provider_error(root, e != NULL ? e : root, body, len, err);
		return false;
	}

	content = llm_get(root, "content");
	if (content != NULL && json_object_is_type(content, json_type_array))
	{
		out->content = llm_concat_parts(content, text_types, false, &oom);
		if (out->content == NULL && !oom)
		{
			const char *sr = llm_get_str(root, "stop_reason", NULL);

			rv_error_set(err, "provider returned an empty reply");
			if (sr != NULL)
			{
				char	   *s = llm_sanitize(sr, strlen(sr), 64);

				if (s != NULL)
					rv_error_detail(err, "The stop reason is \"%s\".", s);
				free(s);
			}
			return false;
		}
	}
	else if (content != NULL && json_object_is_type(content, json_type_string))
		out->content = llm_strndup(json_object_get_string(content),
								   (size_t) json_object_get_string_len(content));
	else
	{
		rv_error_set(err, "provider response has no content");
		llm_detail_excerpt(err, body, len);
		rv_error_hint(err, "Check that the provider's API flavour (openai or anthropic) matches its base URL.");
		return false;
	}
	if (out->content == NULL)
	{
		rv_error_set(err, "out of memory");
		return false;
	}

	out->finish_reason = llm_dup_str(root, "stop_reason");
	out->truncated = rv_llm_is_truncation(out->finish_reason);
	out->model = llm_dup_str(root, "model");
	out->id = llm_dup_str(root, "id");
	usage = llm_get(root, "usage");
	out->cached_tokens = llm_get_count(usage, "cache_read_input_tokens");
	out->input_tokens = llm_get_count(usage, "input_tokens");
	out->output_tokens = llm_get_count(usage, "output_tokens");
	if (out->input_tokens >= 0)
	{
		long		c1 = llm_get_count(usage, "cache_creation_input_tokens");
		long		c2 = llm_get_count(usage, "cache_read_input_tokens");

		if (c1 > 0)
			out->input_tokens = (c1 > LONG_MAX - out->input_tokens) ?
				LONG_MAX : out->input_tokens + c1;
		if (c2 > 0)
			out->input_tokens = (c2 > LONG_MAX - out->input_tokens) ?
				LONG_MAX : out->input_tokens + c2;
	}
	return true;
}

/* ----------------------------------------------------------------
 * The reply scanner
 *
 * A 2xx reply is read here in one pass, without a json-c tree (building
 * and freeing one cost an eighth of the worker's instructions per row):
 * the scanner validates the whole text and records where the members
 * that llm_parse_openai() and llm_parse_anthropic() read are; only those
 * strings are then decoded.  It answers only when it is sure to give what
 * the json-c path gives: a reply of the common successful shape in a text
 * json-c's strict tokener reads the same way.  For anything else
 * (malformed JSON, an error object, a refusal, content parts in an OpenAI
 * reply, a token count with a fraction, deep nesting, an escaped member
 * name where members are looked up) it gives up, and the json-c path
 * decides, with its error messages.
 *
 * What it accepts is RFC 8259 JSON, within what json-c accepts:
 * - white space: space, tab, LF and CR, as json-c;
 * - strings: raw control characters 0x01-0x1F are taken as they are (not
 *   valid JSON, but json-c takes them); a NUL byte ends json-c's input, so
 *   the scanner gives up on one; other bytes must be well-formed UTF-8
 *   (json-c's own check is looser); escapes are RFC 8259's, decoded as
 *   json-c decodes them, unpaired surrogates becoming U+FFFD;
 * - numbers: RFC 8259's grammar; integers of at most 18 digits (json-c
 *   rejects some longer ones);
 * - nesting: at most LLM_SCAN_DEPTH containers (json-c: LLM_JSON_DEPTH);
 * - duplicate member names: the last one wins, as in json-c (whose object
 *   add replaces the value), and what was recorded under an earlier one is
 *   forgotten.
 * ----------------------------------------------------------------
 */

/* containers nested in a reply the scanner reads (json-c takes a few more) */
#define LLM_SCAN_DEPTH (LLM_JSON_DEPTH - 4)

/* integers the scanner reads itself: up to 18 digits fit an int64_t */
#define LLM_SCAN_INT_DIGITS 18

/* What the scanner recorded of one JSON value. */
typedef enum LlmKind
{
	LV_ABSENT = 0,				/* the member is not there */
	LV_NULL,
	LV_BOOL,
	LV_INT,						/* an integer: num */
	LV_NUMBER,					/* a number with a fraction or exponent */
	LV_STRING,					/* raw text at off, len bytes, between the quotes */
	LV_ARRAY,					/* num elements */
	LV_OBJECT
} LlmKind;

typedef struct LlmVal
{
	LlmKind		kind;
	bool		escaped;		/* LV_STRING: has a backslash escape */
	size_t		off;
	size_t		len;
	int64_t		num;
} LlmVal;

/*
 * The members the scanner records, for both flavours, in the order of the
 * key tables below: every member's slot comes before those of what is
 * under it, so that "what is under slot k" is the range [k, end).
 */
typedef enum LlmSlot
{
	/* openai */
	LS_O_ERROR,
	LS_O_CHOICES,
	LS_O_CHOICE,				/* choices[0] */
	LS_O_CH_ERROR,
	LS_O_CH_FINISH,
	LS_O_MESSAGE,
	LS_O_CONTENT,
	LS_O_MODEL,
	LS_O_ID,
	LS_O_USAGE,
	LS_O_PROMPT,
	LS_O_COMPLETION,
	LS_O_CACHED,
	LS_O_DETAILS,
	LS_O_DETAILS_CACHED,
	/* anthropic */
	LS_A_TYPE,
	LS_A_ERROR,
	LS_A_CONTENT,
	LS_A_PART_TYPE,				/* of the content part being read */
	LS_A_PART_TEXT,
	LS_A_STOP,
	LS_A_MODEL,
	LS_A_ID,
	LS_A_USAGE,
	LS_A_IN,
	LS_A_OUT,
	LS_A_CACHE_WRITE,
	LS_A_CACHE_READ,
	LS_NSLOTS
} LlmSlot;

/* How a looked-up member's value is read. */
typedef enum LlmKeyMode
{
	LK_VALUE,					/* recorded as it is */
	LK_OBJECT,					/* an object: its members are looked up in sub */
	LK_FIRST,					/* an array: element 0 goes to slot + 1, its
								 * members looked up in sub */
	LK_PARTS					/* an array of content parts: each part's
								 * members are looked up in sub ("type" to
								 * slot + 1, "text" to slot + 2), and the
								 * text of each "text" part is appended to
								 * LlmScan.parts */
} LlmKeyMode;

typedef struct LlmKey
{
	const char *name;			/* NULL ends a table */
	unsigned char len;
	unsigned char slot;
	unsigned char end;			/* one past the last slot under this one */
	unsigned char mode;			/* LlmKeyMode */
	const struct LlmKey *sub;
} LlmKey;

#define LLM_KEY(name, slot, end, mode, sub) {name, sizeof(name) - 1, slot, end, mode, sub}
#define LLM_VALUE(name, slot) LLM_KEY(name, slot, (slot) + 1, LK_VALUE, NULL)
#define LLM_KEYS_END {NULL, 0, 0, 0, 0, NULL}

static const LlmKey llm_o_details_keys[] = {
	LLM_VALUE("cached_tokens", LS_O_DETAILS_CACHED),
	LLM_KEYS_END
};

static const LlmKey llm_o_usage_keys[] = {
	LLM_VALUE("prompt_tokens", LS_O_PROMPT),
	LLM_VALUE("completion_tokens", LS_O_COMPLETION),
	LLM_VALUE("cached_tokens", LS_O_CACHED),
	LLM_KEY("prompt_tokens_details", LS_O_DETAILS, LS_O_DETAILS_CACHED + 1,
			LK_OBJECT, llm_o_details_keys),
	LLM_KEYS_END
};

static const LlmKey llm_o_message_keys[] = {
	LLM_VALUE("content", LS_O_CONTENT),
	LLM_KEYS_END
};

static const LlmKey llm_o_choice_keys[] = {
	LLM_VALUE("error", LS_O_CH_ERROR),
	LLM_VALUE("finish_reason", LS_O_CH_FINISH),
	LLM_KEY("message", LS_O_MESSAGE, LS_O_CONTENT + 1, LK_OBJECT, llm_o_message_keys),
	LLM_KEYS_END
};

static const LlmKey llm_o_root_keys[] = {
	LLM_VALUE("error", LS_O_ERROR),
	LLM_KEY("choices", LS_O_CHOICES, LS_O_CONTENT + 1, LK_FIRST, llm_o_choice_keys),
	LLM_VALUE("model", LS_O_MODEL),
	LLM_VALUE("id", LS_O_ID),
	LLM_KEY("usage", LS_O_USAGE, LS_O_DETAILS_CACHED + 1, LK_OBJECT, llm_o_usage_keys),
	LLM_KEYS_END
};

static const LlmKey llm_a_part_keys[] = {
	LLM_VALUE("type", LS_A_PART_TYPE),
	LLM_VALUE("text", LS_A_PART_TEXT),
	LLM_KEYS_END
};

static const LlmKey llm_a_usage_keys[] = {
	LLM_VALUE("input_tokens", LS_A_IN),
	LLM_VALUE("output_tokens", LS_A_OUT),
	LLM_VALUE("cache_creation_input_tokens", LS_A_CACHE_WRITE),
	LLM_VALUE("cache_read_input_tokens", LS_A_CACHE_READ),
	LLM_KEYS_END
};

static const LlmKey llm_a_root_keys[] = {
	LLM_VALUE("type", LS_A_TYPE),
	LLM_VALUE("error", LS_A_ERROR),
	LLM_KEY("content", LS_A_CONTENT, LS_A_PART_TEXT + 1, LK_PARTS, llm_a_part_keys),
	LLM_VALUE("stop_reason", LS_A_STOP),
	LLM_VALUE("model", LS_A_MODEL),
	LLM_VALUE("id", LS_A_ID),
	LLM_KEY("usage", LS_A_USAGE, LS_A_CACHE_READ + 1, LK_OBJECT, llm_a_usage_keys),
	LLM_KEYS_END
};

typedef struct LlmScan
{
	const unsigned char *p;		/* the body */
	size_t		len;
	size_t		i;				/* the next byte to read */
	int			depth;			/* containers open */
	LlmVal		slot[LS_NSLOTS];
	RvBuf		parts;			/* LK_PARTS: the text of the "text" parts */
	bool		any_part;		/* ... and whether there was one */
} LlmScan;

static bool llm_scan_value(LlmScan *s, LlmVal *v);
static bool llm_scan_object(LlmScan *s, const LlmKey *keys);

/* Skip JSON white space. */
static inline void
llm_scan_ws(LlmScan *s)
{
	while (s->i < s->len)
	{
		unsigned char c = s->p[s->i];

		if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
			break;
		s->i++;
	}
}

/*
 * After a member of an array or an object: skip white space, then either
 * the closing byte (*done set) or a comma and the white space after it.
 * False when neither follows.
 */
static inline bool
llm_scan_next(LlmScan *s, char close, bool *done)
{
	llm_scan_ws(s);
	if (s->i >= s->len)
		return false;
	*done = s->p[s->i] == close;
	if (!*done && s->p[s->i] != ',')
		return false;
	s->i++;
	if (!*done)
		llm_scan_ws(s);
	return true;
}

static inline bool
llm_is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of the four hex digits at p (checked by llm_scan_string()). */
static uint32_t
llm_hex4(const unsigned char *p)
{
	uint32_t	v = 0;
	int			k;

	for (k = 0; k < 4; k++)
	{
		unsigned char c = p[k];

		v = (v << 4) | (uint32_t) (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/*
 * Decode the raw text src[0..len) of a JSON string (checked by
 * llm_scan_string()) into dst, which has room for len bytes, as json-c's
 * tokener decodes it: a \u escape of a high surrogate followed by one of a
 * low surrogate is one character; a high surrogate followed by anything
 * else becomes U+FFFD (and a \u escape after it is decoded on its own), as
 * does a lone low surrogate; \u0000 is a NUL byte.  Returns the number of
 * bytes written.
 */
static size_t
llm_unescape(const unsigned char *src, size_t len, char *dst)
{
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		unsigned char c = src[i];
		uint32_t	cp;

		if (c != '\\')
		{
			dst[o++] = (char) c;
			i++;
			continue;
		}
		c = src[i + 1];
		i += 2;
		switch (c)
		{
			case 'b':
				dst[o++] = '\b';
				continue;
			case 'f':
				dst[o++] = '\f';
				continue;
			case 'n':
				dst[o++] = '\n';
				continue;
			case 'r':
				dst[o++] = '\r';
				continue;
			case 't':
				dst[o++] = '\t';
				continue;
			case 'u':
				break;
			default:
				dst[o++] = (char) c;	/* '"', '\\', '/' */
				continue;
		}
		cp = llm_hex4(src + i);
		i += 4;
		while ((cp & 0xFC00) == 0xD800)
		{
			uint32_t	lo;

			if (i + 1 >= len || src[i] != '\\' || src[i + 1] != 'u')
			{
				cp = 0xFFFD;
				break;
			}
			lo = llm_hex4(src + i + 2);
			i += 6;
			if ((lo & 0xFC00) == 0xDC00)
			{
				cp = (((cp & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000;
				break;
			}
			o += rv_utf8_encode(0xFFFD, dst + o);
			cp = lo;
		}
		if ((cp & 0xFC00) == 0xDC00)
			cp = 0xFFFD;
		o += rv_utf8_encode(cp, dst + o);
	}
	return o;
}

/*
 * Read the string at s->i (its opening quote); record it in v (kind, raw
 * text, whether it has escapes).  False when it is not a string the
 * scanner takes.
 */
static bool
llm_scan_string(LlmScan *s, LlmVal *v)
{
	const unsigned char *p = s->p;
	size_t		len = s->len;
	size_t		i = s->i + 1;
	bool		escaped = false;

	for (;;)
	{
		unsigned char c;

		if (i >= len)
			return false;
		c = p[i];
		if (c == '"')
			break;
		if (c == '\\')
		{
			escaped = true;
			if (i + 1 >= len)
				return false;
			switch (p[i + 1])
			{
				case '"':
				case '\\':
				case '/':
				case 'b':
				case 'f':
				case 'n':
				case 'r':
				case 't':
					i += 2;
					break;
				case 'u':
					if (len - i < 6 || !llm_is_hex(p[i + 2]) || !llm_is_hex(p[i + 3]) ||
						!llm_is_hex(p[i + 4]) || !llm_is_hex(p[i + 5]))
						return false;
					i += 6;
					break;
				default:
					return false;
			}
		}
		else if (c >= 0x80)
		{
			size_t		n = rv_utf8_valid_len(p + i, len - i);

			if (n == 0)
				return false;
			i += n;
		}
		else if (c == '\0')
			return false;
		else
			i++;
	}
	if (v != NULL)
	{
		v->kind = LV_STRING;
		v->escaped = escaped;
		v->off = s->i + 1;
		v->len = i - s->i - 1;
	}
	s->i = i + 1;
	return true;
}

/* Read the number at s->i into v (LV_INT or LV_NUMBER). */
static bool
llm_scan_number(LlmScan *s, LlmVal *v)
{
	const unsigned char *p = s->p;
	size_t		len = s->len;
	size_t		i = s->i;
	size_t		digits;
	bool		neg = false;
	bool		integer = true;
	int64_t		n = 0;

	if (p[i] == '-')
	{
		neg = true;
		i++;
	}
	digits = i;
	if (i < len && p[i] == '0')
		i++;
	else if (i < len && p[i] >= '1' && p[i] <= '9')
	{
		while (i < len && rv_is_digit((char) p[i]))
			i++;
	}
	else
		return false;
	digits = i - digits;
	if (i < len && p[i] == '.')
	{
		integer = false;
		i++;
		if (i >= len || !rv_is_digit((char) p[i]))
			return false;
		while (i < len && rv_is_digit((char) p[i]))
			i++;
	}
	if (i < len && (p[i] == 'e' || p[i] == 'E'))
	{
		integer = false;
		i++;
		if (i < len && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= len || !rv_is_digit((char) p[i]))
			return false;
		while (i < len && rv_is_digit((char) p[i]))
			i++;
	}
	if (integer)
	{
		size_t		k;
		size_t		start = s->i + (neg ? 1 : 0);

		if (digits > LLM_SCAN_INT_DIGITS)
			return false;
		for (k = start; k < i; k++)
			n = n * 10 + (p[k] - '0');
	}
	if (v != NULL)
	{
		v->kind = integer ? LV_INT : LV_NUMBER;
		v->num = neg ? -n : n;
	}
	s->i = i;
	return true;
}

/* Read the literal word (true, false, null) at s->i as kind. */
static bool
llm_scan_word(LlmScan *s, const char *word, size_t n, LlmKind kind, LlmVal *v)
{
	if (s->len - s->i < n || memcmp(s->p + s->i, word, n) != 0)
		return false;
	s->i += n;
	if (v != NULL)
		v->kind = kind;
	return true;
}

/*
 * Read the array at s->i (its '['), recording it in v (or nothing when v is
 * NULL); k is the member it is the value of, for LK_FIRST and LK_PARTS,
 * else NULL.
 */
static bool
llm_scan_array(LlmScan *s, LlmVal *v, const LlmKey *k)
{
	int64_t		n = 0;

	if (++s->depth > LLM_SCAN_DEPTH)
		return false;
	s->i++;
	if (k != NULL && k->mode == LK_PARTS)
	{
		s->parts.len = 0;
		if (s->parts.data != NULL)
			s->parts.data[0] = '\0';
		s->any_part = false;
	}
	llm_scan_ws(s);
	if (s->i < s->len && s->p[s->i] == ']')
		s->i++;
	else
	{
		for (;;)
		{
			bool		ok;
			bool		done;

			if (s->i >= s->len)
				return false;
			if (k != NULL && k->mode == LK_FIRST && n == 0)
			{
				LlmVal	   *e = &s->slot[k->slot + 1];

				if (s->p[s->i] == '{')
				{
					e->kind = LV_OBJECT;
					ok = llm_scan_object(s, k->sub);
				}
				else
					ok = llm_scan_value(s, e);
			}
			else if (k != NULL && k->mode == LK_PARTS && s->p[s->i] == '{')
			{
				LlmVal	   *type = &s->slot[k->slot + 1];
				LlmVal	   *text = &s->slot[k->slot + 2];

				memset(type, 0, 2 * sizeof(LlmVal));
				ok = llm_scan_object(s, k->sub);
				/* the json-c path: llm_part_text() with allow_untyped false */
				if (ok && type->kind == LV_STRING)
				{
					if (type->escaped)
						return false;	/* it compares the decoded type */
					if (type->len == 4 && memcmp(s->p + type->off, "text", 4) == 0 &&
						text->kind == LV_STRING)
					{
						if (!rv_buf_reserve(&s->parts, text->len))
							return false;
						s->parts.len += llm_unescape(s->p + text->off, text->len,
													 s->parts.data + s->parts.len);
						s->parts.data[s->parts.len] = '\0';
						s->any_part = true;
					}
				}
			}
			else
				ok = llm_scan_value(s, NULL);
			if (!ok)
				return false;
			n++;
			if (!llm_scan_next(s, ']', &done))
				return false;
			if (done)
				break;
		}
	}
	s->depth--;
	if (v != NULL)
	{
		v->kind = LV_ARRAY;
		v->num = n;
	}
	return true;
}

/*
 * Read the object at s->i (its '{'), looking its members up in keys (NULL:
 * none).  A looked-up member's slots are cleared before its value is
 * read, so that the last of duplicate names wins.
 */
static bool
llm_scan_object(LlmScan *s, const LlmKey *keys)
{
	if (++s->depth > LLM_SCAN_DEPTH)
		return false;
	s->i++;
	llm_scan_ws(s);
	if (s->i < s->len && s->p[s->i] == '}')
		s->i++;
	else
	{
		for (;;)
		{
			LlmVal		name;
			const LlmKey *k = NULL;
			bool		ok;
			bool		done;

			if (s->i >= s->len || s->p[s->i] != '"' || !llm_scan_string(s, &name))
				return false;
			llm_scan_ws(s);
			if (s->i >= s->len || s->p[s->i] != ':')
				return false;
			s->i++;
			llm_scan_ws(s);
			if (s->i >= s->len)
				return false;
			if (keys != NULL)
			{
				/* json-c looks names up decoded and cut at a NUL */
				if (name.escaped)
					return false;
				for (k = keys; k->name != NULL; k++)
					if (k->len == name.len && memcmp(k->name, s->p + name.off, name.len) == 0)
						break;
				if (k->name == NULL)
					k = NULL;
			}
			if (k == NULL)
				ok = llm_scan_value(s, NULL);
			else
			{
				LlmVal	   *v = &s->slot[k->slot];
				unsigned char c = s->p[s->i];

				memset(v, 0, (size_t) (k->end - k->slot) * sizeof(LlmVal));
				if (c == '{' && k->mode == LK_OBJECT)
				{
					v->kind = LV_OBJECT;
					ok = llm_scan_object(s, k->sub);
				}
				else if (c == '[' && (k->mode == LK_FIRST || k->mode == LK_PARTS))
					ok = llm_scan_array(s, v, k);
				else
					ok = llm_scan_value(s, v);
			}
			if (!ok)
				return false;
			if (!llm_scan_next(s, '}', &done))
				return false;
			if (done)
				break;
		}
	}
	s->depth--;
	return true;
}

/* Read the value at s->i (there is a byte there), recording it in v or not. */
static bool
llm_scan_value(LlmScan *s, LlmVal *v)
{
	switch (s->p[s->i])
	{
		case '{':
			if (v != NULL)
				v->kind = LV_OBJECT;
			return llm_scan_object(s, NULL);
		case '[':
			return llm_scan_array(s, v, NULL);
		case '"':
			return llm_scan_string(s, v);
		case 't':
			return llm_scan_word(s, "true", 4, LV_BOOL, v);
		case 'f':
			return llm_scan_word(s, "false", 5, LV_BOOL, v);
		case 'n':
			return llm_scan_word(s, "null", 4, LV_NULL, v);
		case '-':
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7':
		case '8':
		case '9':
			return llm_scan_number(s, v);
		default:
			return false;
	}
}

/*
 * A token count as llm_get_count() reads it: false when the scanner cannot
 * tell (a number with a fraction or exponent).
 */
static bool
llm_scan_count(const LlmVal *v, long *out)
{
	if (v->kind == LV_NUMBER)
		return false;
	*out = (v->kind == LV_INT && v->num >= 0) ? (long) v->num : -1;
	return true;
}

/* Is v absent or null (what an "error" member may be in a success)? */
static bool
llm_scan_no_error(const LlmVal *v)
{
	return v->kind == LV_ABSENT || v->kind == LV_NULL;
}

/* The decoded string v as a malloc'd copy; NULL when v is no string or out of memory. */
static char *
llm_scan_dup(const LlmScan *s, const LlmVal *v)
{
	char	   *r;
	size_t		n;

	if (v->kind != LV_STRING)
		return NULL;
	r = malloc(v->len + 1);
	if (r == NULL)
		return NULL;
	if (!v->escaped)
	{
		memcpy(r, s->p + v->off, v->len);
		n = v->len;
	}
	else
		n = llm_unescape(s->p + v->off, v->len, r);
	r[n] = '\0';
	return r;
}

/* Fill out from the slots of an OpenAI reply, as llm_parse_openai() does. */
static bool
llm_scan_openai(const LlmScan *s, RvLlmResponse *out)
{
	const LlmVal *v = s->slot;
	long		in;
	long		outt;
	long		cached;
	long		flat;

	if (!llm_scan_no_error(&v[LS_O_ERROR]) ||
		v[LS_O_CHOICES].kind != LV_ARRAY || v[LS_O_CHOICES].num == 0 ||
		v[LS_O_CHOICE].kind != LV_OBJECT || !llm_scan_no_error(&v[LS_O_CH_ERROR]) ||
		v[LS_O_MESSAGE].kind != LV_OBJECT || v[LS_O_CONTENT].kind != LV_STRING)
		return false;
	if (!llm_scan_count(&v[LS_O_PROMPT], &in) ||
		!llm_scan_count(&v[LS_O_COMPLETION], &outt) ||
		!llm_scan_count(&v[LS_O_DETAILS_CACHED], &cached) ||
		!llm_scan_count(&v[LS_O_CACHED], &flat))
		return false;
	out->content = llm_scan_dup(s, &v[LS_O_CONTENT]);
	if (out->content == NULL)
		return false;
	out->finish_reason = llm_scan_dup(s, &v[LS_O_CH_FINISH]);
	out->truncated = rv_llm_is_truncation(out->finish_reason);
	out->model = llm_scan_dup(s, &v[LS_O_MODEL]);
	out->id = llm_scan_dup(s, &v[LS_O_ID]);
	out->input_tokens = in;
	out->output_tokens = outt;
	out->cached_tokens = cached >= 0 ? cached : flat;
	if (out->cached_tokens >= 0 && out->input_tokens >= 0 &&
		out->cached_tokens > out->input_tokens)
		out->cached_tokens = out->input_tokens;
	return true;
}

/* Fill out from the slots of an Anthropic reply, as llm_parse_anthropic() does. */
static bool
llm_scan_anthropic(LlmScan *s, RvLlmResponse *out)
{
	const LlmVal *v = s->slot;
	const LlmVal *type = &v[LS_A_TYPE];
	long		c1;
	long		c2;

	if (type->kind == LV_STRING &&
		(type->escaped ||
		 (type->len == 5 && memcmp(s->p + type->off, "error", 5) == 0)))
		return false;
	if (!llm_scan_no_error(&v[LS_A_ERROR]))
		return false;
	if (!llm_scan_count(&v[LS_A_IN], &out->input_tokens) ||
		!llm_scan_count(&v[LS_A_OUT], &out->output_tokens) ||
		!llm_scan_count(&v[LS_A_CACHE_WRITE], &c1) ||
		!llm_scan_count(&v[LS_A_CACHE_READ], &c2))
		return false;
	if (v[LS_A_CONTENT].kind == LV_ARRAY && s->any_part)
	{
		out->content = s->parts.data;
		s->parts.data = NULL;
		s->parts.len = s->parts.cap = 0;
	}
	else if (v[LS_A_CONTENT].kind == LV_STRING)
		out->content = llm_scan_dup(s, &v[LS_A_CONTENT]);
	if (out->content == NULL)
		return false;
	out->finish_reason = llm_scan_dup(s, &v[LS_A_STOP]);
	out->truncated = rv_llm_is_truncation(out->finish_reason);
	out->model = llm_scan_dup(s, &v[LS_A_MODEL]);
	out->id = llm_scan_dup(s, &v[LS_A_ID]);
	out->cached_tokens = c2;
	if (out->input_tokens >= 0)
	{
		if (c1 > 0)
			out->input_tokens = (c1 > LONG_MAX - out->input_tokens) ?
				LONG_MAX : out->input_tokens + c1;
		if (c2 > 0)
			out->input_tokens = (c2 > LONG_MAX - out->input_tokens) ?
				LONG_MAX : out->input_tokens + c2;
	}
	return true;
}

bool
rv_llm_scan_response(RvFlavor flavor, const char *body, size_t len,
					 RvLlmResponse *out)
{
	LlmScan		s;
	bool		ok;

	memset(out, 0, sizeof(RvLlmResponse));
	out->input_tokens = -1;
	out->output_tokens = -1;
	out->cached_tokens = -1;
	if (body == NULL || len > (size_t) INT_MAX)
		return false;

	memset(&s, 0, sizeof(s));
	s.p = (const unsigned char *) body;
	s.len = len;
	llm_scan_ws(&s);
	ok = s.i < s.len && s.p[s.i] == '{' &&
		llm_scan_object(&s, flavor == RV_FLAVOR_ANTHROPIC ? llm_a_root_keys : llm_o_root_keys);
	if (ok)
	{
		llm_scan_ws(&s);
		ok = (s.i == s.len);
	}
	if (ok)
		ok = flavor == RV_FLAVOR_ANTHROPIC ? llm_scan_anthropic(&s, out) :
			llm_scan_openai(&s, out);
	rv_buf_free(&s.parts);
	if (!ok)
	{
		rv_llm_response_free(out);
		return false;
	}
	return true;
}

bool
rv_llm_parse_response(RvFlavor flavor, const char *body, size_t len,
					  RvLlmResponse *out, RvError *err)
{
	if (rv_llm_scan_response(flavor, body, len, out))
		return true;
	return rv_llm_parse_response_tree(flavor, body, len, out, err);
}

bool
rv_llm_parse_response_tree(RvFlavor flavor, const char *body, size_t len,
						   RvLlmResponse *out, RvError *err)
{
	json_object *root;
	char		why[160];
	bool		ok;

	memset(out, 0, sizeof(RvLlmResponse));
	out->input_tokens = -1;
	out->output_tokens = -1;
	out->cached_tokens = -1;
	if (body == NULL)
		len = 0;

	if (!llm_parse(body, len, &root, why, sizeof(why)))
	{
		rv_error_set(err, "provider returned malformed JSON");
		rv_error_detail(err, "%s", why);
		return false;
	}
	if (root == NULL || !json_object_is_type(root, json_type_object))
	{
		rv_error_set(err, "provider response is not a JSON object");
		llm_detail_excerpt(err, body, len);
		json_object_put(root);
		return false;
	}

	if (flavor == RV_FLAVOR_ANTHROPIC)
		ok = llm_parse_anthropic(root, body, len, out, err);
	else
		ok = llm_parse_openai(root, body, len, out, err);
	json_object_put(root);
	if (!ok)
		rv_llm_response_free(out);
	return ok;
}

void
rv_llm_response_free(RvLlmResponse *resp)
{
	if (resp == NULL)
		return;
	free(resp->content);
	free(resp->finish_reason);
	free(resp->model);
	free(resp->id);
	resp->content = NULL;
	resp->finish_reason = NULL;
	resp->model = NULL;
	resp->id = NULL;
	resp->input_tokens = -1;
	resp->output_tokens = -1;
	resp->cached_tokens = -1;
	resp->truncated = false;
}

bool
rv_llm_is_truncation(const char *finish_reason)
{
	if (finish_reason == NULL)
		return false;
	return strcmp(finish_reason, "length") == 0 ||
		strcmp(finish_reason, "max_tokens") == 0 ||
		strcmp(finish_reason, "model_length") == 0;
}

char *
rv_llm_error_message(const char *body, size_t len)
{
	json_object *root;
	char	   *msg = NULL;
	size_t		i;

	if (body == NULL)
		return NULL;
	for (i = 0; i < len; i++)
		if (!isspace((unsigned char) body[i]))
			break;
	if (i == len)
		return NULL;

	if (llm_parse(body, len, &root, NULL, 0))
	{
		msg = llm_error_text(root);
		json_object_put(root);
	}
	if (msg == NULL)
		msg = llm_sanitize(body + i, len - i, LLM_ERRMSG_MAX);
	return msg;
}

/*
 * Is the parsed value v fit to be returned as a reply?  Rejects a top-level
 * JSON null (json-c represents it as NULL, which our callers take for
 * failure) and the NaN / Infinity literals json-c accepts even in strict
 * mode, which no other JSON reader (jsonb included) takes back.
 */
static bool
llm_json_fit(json_object *v, int depth)
{
	if (v == NULL)
		return depth > 0;
	if (depth > LLM_JSON_DEPTH)
		return false;
	switch (json_object_get_type(v))
	{
		case json_type_double:
			{
				const char *s = json_object_to_json_string(v);

				if (s == NULL)
					return false;
				if (*s == '-')
					s++;
				return isdigit((unsigned char) *s) != 0;
			}
		case json_type_array:
			{
				size_t		n = json_object_array_length(v);
				size_t		i;

				for (i = 0; i < n; i++)
					if (!llm_json_fit(json_object_array_get_idx(v, i), depth + 1))
						return false;
				return true;
			}
		case json_type_object:
			{
				json_object_iter it;

				json_object_object_foreachC(v, it)
				{
					if (!llm_json_fit(it.val, depth + 1))
						return false;
				}
				return true;
			}
		default:
			return true;
	}
}

/*
 * Try text[0..len) as a reply: returns the value when it parses and is fit
 * (see llm_json_fit()), else NULL.
 */
static json_object *
llm_try_reply(const char *text, size_t len, char *why, size_t whylen)
{
	json_object *v;

	if (!llm_parse(text, len, &v, why, whylen))
		return NULL;
	if (!llm_json_fit(v, 0))
	{
		if (why != NULL)
			snprintf(why, whylen, "the reply is JSON null, NaN or Infinity");
		json_object_put(v);
		return NULL;
	}
	return v;
}

/* Is c a JSON whitespace character? */
static bool
llm_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Find the first occurrence of needle (lower case) in text[from..len),
 * ignoring ASCII case.  Returns its offset or len.
 */
static size_t
llm_find_ci(const char *text, size_t len, size_t from, const char *needle)
{
	size_t		nlen = strlen(needle);
	size_t		i;

	if (nlen > len)
		return len;
	for (i = from; i + nlen <= len; i++)
	{
		if (tolower((unsigned char) text[i]) == needle[0] &&
			strncasecmp(text + i, needle, nlen) == 0)
			return i;
	}
	return len;
}

/*
 * Locate the content of a code fence opening at text[open] ("```"):
 * skips an info string ("json", or any word ended by a line break) and
 * ends at the next "```" or at the end of the text.  Sets *start and *end.
 */
static void
llm_fence_content(const char *text, size_t len, size_t open,
				  size_t *start, size_t *end)
{
	size_t		p = open + 3;
	size_t		w = p;
	size_t		close;

	while (w < len && (isalnum((unsigned char) text[w]) ||
					   text[w] == '_' || text[w] == '-' || text[w] == '+' ||
					   text[w] == '.'))
		w++;
	if (w - p == 4 && strncasecmp(text + p, "json", 4) == 0)
		p = w;
	else if (w > p)
	{
		size_t		q = w;

		while (q < len && (text[q] == ' ' || text[q] == '\t'))
			q++;
		if (q == len || text[q] == '\n' || text[q] == '\r')
			p = q;
	}
	close = llm_find_ci(text, len, p, "```");
	*start = p;
	*end = close;
}

/*
 * Find the end of the balanced {...} or [...] span starting at text[from]
 * in one pass that skips over JSON strings (with their escapes).  Returns
 * the offset just past the closing bracket, or 0 when the span does not
 * close before the end of the text.
 */
static size_t
llm_span_end(const char *text, size_t len, size_t from)
{
	size_t		i;
	size_t		depth = 0;
	bool		in_string = false;

	for (i = from; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
		{
			if (--depth == 0)
				return i + 1;
		}
	}
	return 0;
}

/* Offset of the next '{' or '[' in text[from..len), or len. */
static size_t
llm_next_open(const char *text, size_t len, size_t from)
{
	size_t		i;

	for (i = from; i < len; i++)
		if (text[i] == '{' || text[i] == '[')
			return i;
	return len;
}

json_object *
rv_llm_extract_json(const char *text, RvError *err)
{
	size_t		len;
	size_t		b = 0;
	size_t		e;
	size_t		fence;
	size_t		start;
	size_t		end;
	size_t		json_fence = SIZE_MAX;
	size_t		pos;
	int			tries;
	json_object *v;
	char		why[160];

	if (text == NULL)
	{
		rv_error_set(err, "reply is not valid JSON");
		rv_error_detail(err, "The reply is empty.");
		return NULL;
	}
	len = strlen(text);
	e = len;
	while (b < e && llm_is_ws(text[b]))
		b++;
	while (e > b && llm_is_ws(text[e - 1]))
		e--;
	if (b == e)
	{
		rv_error_set(err, "reply is not valid JSON");
		rv_error_detail(err, "The reply is empty.");
		return NULL;
	}

	/* the whole text (the tokener skips the same whitespace we trimmed) */
	v = llm_try_reply(text, len, why, sizeof(why));
	if (v != NULL)
		return v;

	/* the first ```json fence, then the first fence of any kind */
	fence = llm_find_ci(text, len, 0, "```json");
	if (fence < len)
	{
		json_fence = fence;
		llm_fence_content(text, len, fence, &start, &end);
		v = llm_try_reply(text + start, end - start, NULL, 0);
		if (v != NULL)
			return v;
	}
	fence = llm_find_ci(text, len, 0, "```");
	if (fence < len && fence != json_fence)
	{
		llm_fence_content(text, len, fence, &start, &end);
		v = llm_try_reply(text + start, end - start, NULL, 0);
		if (v != NULL)
			return v;
	}

	/* the first few balanced spans */
	pos = llm_next_open(text, len, 0);
	for (tries = 0; tries < LLM_MAX_SPANS && pos < len; tries++)
	{
		end = llm_span_end(text, len, pos);
		if (end == 0)
		{
			pos = llm_next_open(text, len, pos + 1);
			continue;
		}
		v = llm_try_reply(text + pos, end - pos, NULL, 0);
		if (v != NULL)
			return v;
		pos = llm_next_open(text, len, end);
	}

	rv_error_set(err, "reply is not valid JSON");
	rv_error_detail(err, "%s", why);
	return NULL;
}
