/*-------------------------------------------------------------------------
 *
 * jsonschema.c
 *	  Checking and applying the JSON Schema subset used for cell
 *	  output_schema; see jsonschema.h for the supported keywords.
 *
 * rv_schema_check() runs when a cascade is loaded and tells the author what
 * is wrong with a schema ("properties.score.minimum" must be a number).
 * rv_schema_validate() runs on every model answer; its message names the
 * JSON path of the first problem ($.items[2].name: expected string, got 5)
 * and is written so that it can be sent back to the model when re-asking.
 *
 * Pure: no PostgreSQL headers, no global state, no allocation of our own
 * beyond what json-c does when printing a value.  Recursion is bounded by
 * JS_MAX_DEPTH for schemas and for the values compared by enum/const.
 * rv_schema_validate() never crashes on a schema that did not pass
 * rv_schema_check(): keywords of the wrong type are ignored.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"
#include "rvtext.h"

/* nesting limit for schemas and for values compared by enum/const */
#define JS_MAX_DEPTH 64

/* longest path kept for messages; longer paths are cut */
#define JS_PATH_LEN 256

/* longest rendering of a value inside a message */
#define JS_SHOW_LEN 80

/* longest rendering of an enum's list of values */
#define JS_LIST_LEN 240

/* the path of the current node: "$.a[2]" for values, "a.b" for schemas */
typedef struct JsPath
{
	char		buf[JS_PATH_LEN];
	size_t		len;
} JsPath;

static const char *const js_type_names[] = {
	"object", "array", "string", "number", "integer", "boolean", "null"
};

#define JS_NTYPES ((int) (sizeof(js_type_names) / sizeof(js_type_names[0])))

#define JS_TYPE_LIST "object, array, string, number, integer, boolean, null"

/* keywords that change what a schema means and that we do not implement */
static const char *const js_unsupported[] = {
	"$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
	"patternProperties", "dependencies", "dependentSchemas",
	"dependentRequired", "propertyNames", "prefixItems", "contains",
	"unevaluatedProperties", "unevaluatedItems", "multipleOf", "uniqueItems",
	"additionalItems", "contentEncoding", "contentMediaType", "$defs",
	"definitions", "$dynamicRef"
};

#define JS_NUNSUPPORTED ((int) (sizeof(js_unsupported) / sizeof(js_unsupported[0])))

/*
 * Append formatted text to a path, cutting it at the buffer size.  Returns
 * the previous length so the caller can restore it with js_path_pop().
 */
static size_t
js_path_push(JsPath *path, const char *fmt, const char *arg)
{
	size_t		old = path->len;
	size_t		room = sizeof(path->buf) - path->len;
	int			n;

	n = snprintf(path->buf + path->len, room, fmt, arg);
	if (n < 0)
		n = 0;
	if ((size_t) n >= room)
		n = (int) room - 1;
	path->len += (size_t) n;
	return old;
}

/* Restore a path to an earlier length. */
static void
js_path_pop(JsPath *path, size_t old)
{
	path->len = old;
	path->buf[old] = '\0';
}

/* True when a property name can be written as $.name in a path. */
static bool
js_is_identifier(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	if (*p == '\0' || (*p >= '0' && *p <= '9'))
		return false;
	for (; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	}
	return true;
}

/*
 * Copy src into dst (size bytes) as a JSON string literal with quotes,
 * escaping quotes, backslashes and control characters.  Long strings are
 * cut at a UTF-8 character boundary and end in "...".
 */
static void
js_quote(char *dst, size_t size, const char *src, size_t srclen, size_t maxlen)
{
	size_t		o = 0;
	size_t		i;

	if (size < 16)
	{
		if (size > 0)
			dst[0] = '\0';
		return;
	}
	/* room for a cut UTF-8 sequence, "...", the quotes and the NUL */
	if (maxlen > size - 12)
		maxlen = size - 12;
	dst[o++] = '"';
	for (i = 0; i < srclen; i++)
	{
		unsigned char c = (unsigned char) src[i];
		char		esc[8];
		size_t		n;

		if (c == '"' || c == '\\')
		{
			esc[0] = '\\';
			esc[1] = (char) c;
			n = 2;
		}
		else if (c == '\n')
		{
			memcpy(esc, "\\n", 2);
			n = 2;
		}
		else if (c == '\t')
		{
			memcpy(esc, "\\t", 2);
			n = 2;
		}
		else if (c < 0x20 || c == 0x7f)
		{
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			n = 6;
		}
		else
		{
			esc[0] = (char) c;
			n = 1;
		}
		/*
		 * Stop before a character that would not fit, at a character
		 * boundary; a continuation byte may use up to 3 bytes of slack, so
		 * that invalid UTF-8 (long runs of them) still stops in time.
		 */
		if (o + n > maxlen + 1 && ((c & 0xC0) != 0x80 || o + n > maxlen + 4))
		{
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, esc, n);
		o += n;
	}
	dst[o++] = '"';
	dst[o] = '\0';
}

/* Format a double the way a person writes it: 10, 0.1, 1e+300, NaN. */
static void
js_format_double(char *buf, size_t size, double d)
{
	if (isnan(d))
		snprintf(buf, size, "NaN");
	else if (isinf(d))
		snprintf(buf, size, d > 0 ? "Infinity" : "-Infinity");
	else if (d == floor(d) && fabs(d) < 1e15)
		snprintf(buf, size, "%.0f", d);
	else
	{
		snprintf(buf, size, "%.15g", d);
		if (strtod(buf, NULL) != d)
			snprintf(buf, size, "%.17g", d);
	}
}

/*
 * Render a value for a message: numbers and literals as JSON, strings
 * quoted and cut, objects and arrays as compact JSON when full is true,
 * else as "an object" / "an array".
 */
static void
js_show(char *buf, size_t size, json_object *v, bool full)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			snprintf(buf, size, "null");
			break;
		case json_type_boolean:
			snprintf(buf, size, json_object_get_boolean(v) ? "true" : "false");
			break;
		case json_type_int:
			snprintf(buf, size, "%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
			break;
		case json_type_double:
			js_format_double(buf, size, json_object_get_double(v));
			break;
		case json_type_string:
			js_quote(buf, size, json_object_get_string(v),
					 (size_t) json_object_get_string_len(v), JS_SHOW_LEN);
			break;
		case json_type_object:
		case json_type_array:
			if (!full)
				snprintf(buf, size, json_object_is_type(v, json_type_object) ?
						 "an object" : "an array");
			else
			{
				const char *s;
				size_t		n;

				s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
												   JSON_C_TO_STRING_NOSLASHESCAPE);
				n = strlen(s);
				if (n > JS_SHOW_LEN && size > JS_SHOW_LEN + 4)
				{
					/* cut at a character boundary */
					n = JS_SHOW_LEN;
					while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
						n--;
					snprintf(buf, size, "%.*s...", (int) n, s);
				}
				else
					snprintf(buf, size, "%s", s);
			}
			break;
	}
}

/* Is v a finite number (int, or double that is not NaN or infinite)? */
static bool
js_is_number(json_object *v)
{
	if (json_object_is_type(v, json_type_int))
		return true;
	if (json_object_is_type(v, json_type_double))
		return isfinite(json_object_get_double(v));
	return false;
}

/* Is v an integer: an int, or a finite double with an integral value? */
static bool
js_is_integer(json_object *v)
{
	double		d;

	if (json_object_is_type(v, json_type_int))
		return true;
	if (!json_object_is_type(v, json_type_double))
		return false;
	d = json_object_get_double(v);
	return isfinite(d) && d == floor(d);
}

/*
 * Compare two numbers: -1, 0 or 1, or 2 when they are unordered (NaN).
 * Two ints compare exactly; anything else compares as doubles.
 */
static int
js_num_cmp(json_object *a, json_object *b)
{
	double		x,
				y;

	if (json_object_is_type(a, json_type_int) && json_object_is_type(b, json_type_int))
	{
		int64_t		i = json_object_get_int64(a);
		int64_t		j = json_object_get_int64(b);

		/* json-c clamps values above INT64_MAX; compare those unsigned */
		if (i == INT64_MAX && j == INT64_MAX)
		{
			uint64_t	u = json_object_get_uint64(a);
			uint64_t	w = json_object_get_uint64(b);

			return u < w ? -1 : (u > w ? 1 : 0);
		}
		return i < j ? -1 : (i > j ? 1 : 0);
	}
	x = json_object_get_double(a);
	y = json_object_get_double(b);
	if (x < y)
		return -1;
	if (x > y)
		return 1;
	if (x == y)
		return 0;
	return 2;
}

/*
 * JSON equality as JSON Schema defines it: numbers by value (1 == 1.0),
 * strings byte-wise, arrays element-wise, objects by key set.  Values
 * nested deeper than JS_MAX_DEPTH compare unequal.
 */
static bool
js_equal(json_object *a, json_object *b, int depth)
{
	json_type	ta = json_object_get_type(a);
	json_type	tb = json_object_get_type(b);

	if (depth > JS_MAX_DEPTH)
		return false;
	if ((ta == json_type_int || ta == json_type_double) &&
		(tb == json_type_int || tb == json_type_double))
		return js_num_cmp(a, b) == 0;
	if (ta != tb)
		return false;
	switch (ta)
	{
		case json_type_null:
			return true;
		case json_type_boolean:
			return json_object_get_boolean(a) == json_object_get_boolean(b);
		case json_type_string:
			{
				int			la = json_object_get_string_len(a);

				return la == json_object_get_string_len(b) &&
					memcmp(json_object_get_string(a), json_object_get_string(b), (size_t) la) == 0;
			}
		case json_type_array:
			{
				size_t		n = json_object_array_length(a);
				size_t		i;

				if (n != json_object_array_length(b))
					return false;
				for (i = 0; i < n; i++)
				{
					if (!js_equal(json_object_array_get_idx(a, i),
								  json_object_array_get_idx(b, i), depth + 1))
						return false;
				}
				return true;
			}
		case json_type_object:
			{
				struct json_object_iter it;

				if (json_object_object_length(a) != json_object_object_length(b))
					return false;
				json_object_object_foreachC(a, it)
				{
					json_object *other;

					if (!json_object_object_get_ex(b, it.key, &other))
						return false;
					if (!js_equal(it.val, other, depth + 1))
						return false;
				}
				return true;
			}
		default:
			return false;
	}
}

/* ----------------------------------------------------------------
 *		Checking a schema
 * ----------------------------------------------------------------
 */

/*
 * The name of keyword kw at schema path for messages: "enum" at the root,
 * "properties.sentiment.enum" below it.
 */
static const char *
js_kw(char *buf, size_t size, const JsPath *path, const char *kw)
{
	if (path->len == 0)
		snprintf(buf, size, "%s", kw);
	else
		snprintf(buf, size, "%s.%s", path->buf, kw);
	return buf;
}

/* Is name one of the type names? */
static bool
js_known_type(const char *name)
{
	int			i;

	for (i = 0; i < JS_NTYPES; i++)
	{
		if (strcmp(name, js_type_names[i]) == 0)
			return true;
	}
	return false;
}

/* Is v a non-negative integer that fits an int64? */
static bool
js_is_count(json_object *v)
{
	if (json_object_is_type(v, json_type_int))
		return json_object_get_int64(v) >= 0;
	if (js_is_integer(v))
	{
		double		d = json_object_get_double(v);

		return d >= 0 && d < 9.2e18;
	}
	return false;
}

/* ----------------------------------------------------------------
 *		pattern and format
 * ----------------------------------------------------------------
 */

/* a pattern being translated: the output buffer and how much is used */
typedef struct JsPatOut
{
	char	   *out;
	size_t		outlen;
	size_t		o;
	const char **why;
} JsPatOut;

/* Append str to the translation; false (why set) when out is too small. */
static bool
js_pat_emit(JsPatOut *po, const char *str)
{
	size_t		l = strlen(str);

	if (po->o + l + 1 > po->outlen)
	{
		*po->why = "it is too long";
		return false;
	}
	memcpy(po->out + po->o, str, l);
	po->o += l;
	return true;
}

/*
 * The POSIX text for the escape \e inside a bracket expression (\d \w \s
 * become their ranges, another character stands for itself, in c1), or
 * NULL with why set for what POSIX brackets cannot express.
 */
static const char *
js_pat_bracket_escape(char e, char *c1, const char **why)
{
	if (e == 'd')
		return "0-9";
	if (e == 'w')
		return "A-Za-z0-9_";
	if (e == 's')
		return "[:space:]";
	if (e == 'D' || e == 'W' || e == 'S')
	{
		*why = "negated class escapes inside brackets are not supported";
		return NULL;
	}
	if (e == ']' || e == '\\' || e == '-' || e == '^')
	{
		/* POSIX has no escapes in brackets */
		*why = "escaped \"]\", \"\\\", \"-\" or \"^\" inside brackets are not supported; put \"]\" first or \"-\" last";
		return NULL;
	}
	c1[0] = e;
	c1[1] = '\0';
	return c1;
}

/*
 * The POSIX text for the escape \e outside brackets: a class escape
 * becomes a bracket expression, \n and \t the character, an escaped
 * punctuation character stays escaped (in esc, 3 bytes).  NULL with why
 * set for word boundaries, backreferences and other letter escapes.
 */
static const char *
js_pat_escape(char e, char *esc, const char **why)
{
	switch (e)
	{
		case 'd':
			return "[0-9]";
		case 'D':
			return "[^0-9]";
		case 'w':
			return "[A-Za-z0-9_]";
		case 'W':
			return "[^A-Za-z0-9_]";
		case 's':
			return "[[:space:]]";
		case 'S':
			return "[^[:space:]]";
		case 'n':
			return "\n";
		case 't':
			return "\t";
		default:
			break;
	}
	if (e == 'b' || e == 'B' || (e >= '1' && e <= '9'))
	{
		*why = "word boundaries and backreferences are not supported";
		return NULL;
	}
	if (isalnum((unsigned char) e))
	{
		*why = "this escape is not supported";
		return NULL;
	}
	esc[0] = '\\';
	esc[1] = e;
	esc[2] = '\0';
	return esc;
}

/*
 * Translate a JSON Schema pattern (ECMA-262 syntax) into a POSIX extended
 * regular expression: the class escapes \d \D \w \W \s \S become bracket
 * expressions (inside brackets, \d \w \s become their ranges).  Returns
 * false with why set for what POSIX cannot express: lookaround and other
 * "(?" groups, backreferences, \b, lazy quantifiers.  out has outlen bytes.
 */
static bool
js_pattern_translate(const char *p, char *out, size_t outlen, const char **why)
{
	JsPatOut	po = {out, outlen, 0, why};
	bool		in_bracket = false;

	for (; *p; p++)
	{
		char		c1[3] = {0, 0, 0};
		const char *rep;

		if (*p == '\\' && p[1] != '\0')
		{
			p++;
			rep = in_bracket ? js_pat_bracket_escape(*p, c1, why) : js_pat_escape(*p, c1, why);
			if (rep == NULL || !js_pat_emit(&po, rep))
				return false;
			continue;
		}
		if (in_bracket)
		{
			if (*p == ']')
				in_bracket = false;
			c1[0] = *p;
			if (!js_pat_emit(&po, c1))
				return false;
			continue;
		}
		if (*p == '[')
		{
			in_bracket = true;
			if (!js_pat_emit(&po, "["))
				return false;
			/* a leading ^ and a leading ] belong to the bracket */
			if (p[1] == '^')
			{
				if (!js_pat_emit(&po, "^"))
					return false;
				p++;
			}
			if (p[1] == ']')
			{
				if (!js_pat_emit(&po, "]"))
					return false;
				p++;
			}
			continue;
		}
		if (*p == '(' && p[1] == '?')
		{
			*why = "\"(?\" groups (lookaround, non-capturing, named) are not supported";
			return false;
		}
		if ((*p == '*' || *p == '+' || *p == '?' || *p == '}') && p[1] == '?')
		{
			*why = "lazy quantifiers are not supported";
			return false;
		}
		c1[0] = *p;
		if (!js_pat_emit(&po, c1))
			return false;
	}
	if (in_bracket)
	{
		*why = "a bracket expression is not closed";
		return false;
	}
	out[po.o] = '\0';
	return true;
}

/*
 * Compile a pattern into re (regfree() it).  Returns false with why set
 * (a static message, or the regerror() text in whybuf).
 */
static bool
js_pattern_compile(const char *pattern, regex_t *re, char *whybuf, size_t whylen,
				   const char **why)
{
	char		posix[1024];
	int			rc;

	if (!js_pattern_translate(pattern, posix, sizeof(posix), why))
		return false;
	rc = regcomp(re, posix, REG_EXTENDED | REG_NOSUB);
	if (rc != 0)
	{
		regerror(rc, re, whybuf, whylen);
		regfree(re);
		*why = whybuf;
		return false;
	}
	return true;
}

/* The formats of "format" that are checked. */
static const char *const js_formats[] = {
	"date", "date-time", "time", "email", "uuid", "uri", "ipv4"
};

#define JS_NFORMATS ((int) (sizeof(js_formats) / sizeof(js_formats[0])))
#define JS_FORMAT_LIST "date, date-time, time, email, uuid, uri and ipv4"

/* n decimal digits at s? */
static bool
js_digits(const char *s, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/* Parse YYYY-MM-DD at s (a real calendar date); returns the length or 0. */
static int
js_date_len(const char *s)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			y,
				m,
				d;

	if (!js_digits(s, 4) || s[4] != '-' || !js_digits(s + 5, 2) || s[7] != '-' ||
		!js_digits(s + 8, 2))
		return 0;
	y = atoi(s);
	m = (s[5] - '0') * 10 + (s[6] - '0');
	d = (s[8] - '0') * 10 + (s[9] - '0');
	if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return 0;
	if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 0;
	return 10;
}

/*
 * Parse an RFC 3339 full-time at s: HH:MM:SS[.frac](Z|+HH:MM|-HH:MM).
 * Returns true when it spans the whole rest of s.
 */
static bool
js_time_ok(const char *s)
{
	if (!js_digits(s, 2) || s[2] != ':' || !js_digits(s + 3, 2) || s[5] != ':' ||
		!js_digits(s + 6, 2))
		return false;
	if (atoi(s) > 23 || atoi(s + 3) > 59 || atoi(s + 6) > 60)
		return false;
	s += 8;
	if (*s == '.')
	{
		s++;
		if (!isdigit((unsigned char) *s))
			return false;
		while (isdigit((unsigned char) *s))
			s++;
	}
	if (*s == 'Z' || *s == 'z')
		return s[1] == '\0';
	if (*s == '+' || *s == '-')
		return js_digits(s + 1, 2) && s[3] == ':' && js_digits(s + 4, 2) &&
			s[6] == '\0' && atoi(s + 1) <= 23 && atoi(s + 4) <= 59;
	return false;
}

/* Does string s (len bytes, no NUL inside) have format fmt? */
static bool
js_format_ok(const char *fmt, const char *s, size_t len)
{
	size_t		i;

	if (strlen(s) != len)
		return false;
	if (strcmp(fmt, "date") == 0)
		return len == 10 && js_date_len(s) == 10;
	if (strcmp(fmt, "date-time") == 0)
		return len > 11 && js_date_len(s) == 10 &&
			(s[10] == 'T' || s[10] == 't' || s[10] == ' ') && js_time_ok(s + 11);
	if (strcmp(fmt, "time") == 0)
		return js_time_ok(s);
	if (strcmp(fmt, "uuid") == 0)
	{
		if (len != 36)
			return false;
		for (i = 0; i < 36; i++)
		{
			if (i == 8 || i == 13 || i == 18 || i == 23)
			{
				if (s[i] != '-')
					return false;
			}
			else if (!isxdigit((unsigned char) s[i]))
				return false;
		}
		return true;
	}
	if (strcmp(fmt, "email") == 0)
	{
		const char *at = strchr(s, '@');
		const char *dot;

		if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
			return false;
		for (i = 0; i < len; i++)
			if (isspace((unsigned char) s[i]) || iscntrl((unsigned char) s[i]))
				return false;
		dot = strrchr(at + 1, '.');
		return dot != NULL && dot > at + 1 && dot[1] != '\0';
	}
	if (strcmp(fmt, "uri") == 0)
	{
		/* scheme ":" then something, no spaces (RFC 3986 absolute URI) */
		if (!isalpha((unsigned char) s[0]))
			return false;
		for (i = 1; i < len && s[i] != ':'; i++)
			if (!isalnum((unsigned char) s[i]) && s[i] != '+' && s[i] != '-' && s[i] != '.')
				return false;
		if (i >= len - 1)
			return false;
		for (; i < len; i++)
			if (isspace((unsigned char) s[i]) || iscntrl((unsigned char) s[i]) ||
				s[i] == '"' || s[i] == '<' || s[i] == '>')
				return false;
		return true;
	}
	if (strcmp(fmt, "ipv4") == 0)
	{
		int			parts = 0;
		const char *p = s;

		while (parts < 4)
		{
			int			n = 0;
			int			digits = 0;

			while (isdigit((unsigned char) *p) && digits < 4)
			{
				n = n * 10 + (*p++ - '0');
				digits++;
			}
			if (digits == 0 || digits > 3 || n > 255 || (digits > 1 && p[-digits] == '0'))
				return false;
			parts++;
			if (parts < 4 && *p++ != '.')
				return false;
		}
		return *p == '\0';
	}
	return true;
}

/* ----------------------------------------------------------------
 *		Satisfiability
 * ----------------------------------------------------------------
 */

/* The number member key of o as a double; false when absent or not a number. */
static bool
js_num_member(json_object *o, const char *key, double *out)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !js_is_number(v))
		return false;
	*out = json_object_get_double(v);
	return true;
}

/*
 * Reject a schema node no value can satisfy: a minimum above its maximum
 * (minItems/maxItems, minLength/maxLength, minimum/maximum with their
 * exclusive forms), or required names missing from properties when
 * additionalProperties is false.
 */
static bool
js_check_satisfiable(json_object *schema, JsPath *path, RvError *err)
{
	static const char *const pairs[][2] = {
		{"minItems", "maxItems"}, {"minLength", "maxLength"}, {"minProperties", "maxProperties"}
	};
	char		kw[JS_PATH_LEN + 32];
	double		lo = 0,
				hi = 0;
	bool		lo_excl = false,
				hi_excl = false;
	bool		has_lo,
				has_hi;
	json_object *v;
	int			i;

	for (i = 0; i < (int) (sizeof(pairs) / sizeof(pairs[0])); i++)
	{
		if (js_num_member(schema, pairs[i][0], &lo) &&
			js_num_member(schema, pairs[i][1], &hi) && lo > hi)
		{
			rv_error_set(err, "\"%s\" is greater than %s: no value can match",
						 js_kw(kw, sizeof(kw), path, pairs[i][0]), pairs[i][1]);
			rv_error_detail(err, "%s is %.0f and %s is %.0f.", pairs[i][0], lo, pairs[i][1], hi);
			return false;
		}
	}

	/* numeric bounds, draft 4 booleans and later numbers alike */
	has_lo = js_num_member(schema, "minimum", &lo);
	has_hi = js_num_member(schema, "maximum", &hi);
	if (json_object_object_get_ex(schema, "exclusiveMinimum", &v))
	{
		if (json_object_is_type(v, json_type_boolean))
			lo_excl = has_lo && json_object_get_boolean(v);
		else if (js_is_number(v) && (!has_lo || json_object_get_double(v) >= lo))
		{
			lo = json_object_get_double(v);
			has_lo = lo_excl = true;
		}
	}
	if (json_object_object_get_ex(schema, "exclusiveMaximum", &v))
	{
		if (json_object_is_type(v, json_type_boolean))
			hi_excl = has_hi && json_object_get_boolean(v);
		else if (js_is_number(v) && (!has_hi || json_object_get_double(v) <= hi))
		{
			hi = json_object_get_double(v);
			has_hi = hi_excl = true;
		}
	}
	if (has_lo && has_hi && (lo > hi || (lo == hi && (lo_excl || hi_excl))))
	{
		char		a[64],
					b[64];

		js_format_double(a, sizeof(a), lo);
		js_format_double(b, sizeof(b), hi);
		rv_error_set(err, "\"%s\" leaves no number between its bounds",
					 js_kw(kw, sizeof(kw), path, "minimum"));
		rv_error_detail(err, "The lower bound is %s (%s) and the upper bound %s (%s).",
						a, lo_excl ? "exclusive" : "inclusive",
						b, hi_excl ? "exclusive" : "inclusive");
		return false;
	}

	/* required names that additionalProperties: false forbids */
	if (json_object_object_get_ex(schema, "additionalProperties", &v) &&
		json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v) &&
		json_object_object_get_ex(schema, "required", &v) &&
		json_object_is_type(v, json_type_array))
	{
		json_object *props = NULL;
		size_t		n = json_object_array_length(v);
		size_t		j;

		if (!json_object_object_get_ex(schema, "properties", &props) ||
			!json_object_is_type(props, json_type_object))
			props = NULL;
		for (j = 0; j < n; j++)
		{
			const char *name = json_object_get_string(json_object_array_get_idx(v, j));
			json_object *dummy;

			if (props == NULL || !json_object_object_get_ex(props, name, &dummy))
			{
				char		q[JS_SHOW_LEN + 8];

				js_quote(q, sizeof(q), name, strlen(name), JS_SHOW_LEN);
				rv_error_set(err, "\"%s\" names %s, which additionalProperties: false forbids",
							 js_kw(kw, sizeof(kw), path, "required"), q);
				rv_error_detail(err, "A required property must be listed in properties when additionalProperties is false.");
				return false;
			}
		}
	}
	return true;
}

/*
 * Check one schema node at path (depth levels deep) and, recursively, the
 * schemas below it.  Returns false with err set on the first problem.
 */
static bool js_check_node(json_object *schema, JsPath *path, int depth, RvError *err);

/* type: a known type name, or a non-empty list of them. */
static bool
js_check_type(const char *key, json_object *val, JsPath *path, RvError *err)
{
	char		kw[JS_PATH_LEN + 32];
	bool		ok = false;

	if (json_object_is_type(val, json_type_string))
		ok = js_known_type(json_object_get_string(val));
	else if (json_object_is_type(val, json_type_array) &&
			 json_object_array_length(val) > 0)
	{
		size_t		n = json_object_array_length(val);
		size_t		j;

		ok = true;
		for (j = 0; j < n && ok; j++)
		{
			json_object *t = json_object_array_get_idx(val, j);

			ok = json_object_is_type(t, json_type_string) &&
				js_known_type(json_object_get_string(t));
		}
	}
	if (!ok)
	{
		char		shown[JS_SHOW_LEN + 8];

		js_show(shown, sizeof(shown), val, true);
		rv_error_set(err, "\"%s\" must be one of " JS_TYPE_LIST " or a list of them",
					 js_kw(kw, sizeof(kw), path, key));
		rv_error_detail(err, "The value given was %s.", shown);
		return false;
	}
	return true;
}

/* pattern: a regular expression of the supported kind. */
static bool
js_check_pattern(const char *key, json_object *val, JsPath *path, RvError *err)
{
	char		kw[JS_PATH_LEN + 32];
	regex_t		re;
	char		whybuf[128];
	const char *why = NULL;

	if (!json_object_is_type(val, json_type_string))
	{
		rv_error_set(err, "\"%s\" must be a string",
					 js_kw(kw, sizeof(kw), path, key));
		return false;
	}
	if (!js_pattern_compile(json_object_get_string(val), &re, whybuf,
							sizeof(whybuf), &why))
	{
		rv_error_set(err, "\"%s\" is not a supported regular expression: %s",
					 js_kw(kw, sizeof(kw), path, key), why);
		rv_error_hint(err, "Patterns are POSIX extended regular expressions, plus \\d, \\w and \\s.");
		return false;
	}
	regfree(&re);
	return true;
}

/* format: one of the supported formats. */
static bool
js_check_format(const char *key, json_object *val, JsPath *path, RvError *err)
{
	char		kw[JS_PATH_LEN + 32];
	int			i;
	bool		known = false;

	for (i = 0; json_object_is_type(val, json_type_string) && i < JS_NFORMATS; i++)
		known = known || strcmp(json_object_get_string(val), js_formats[i]) == 0;
	if (!known)
	{
		char		shown[JS_SHOW_LEN + 8];

		js_show(shown, sizeof(shown), val, true);
		rv_error_set(err, "\"%s\" %s is not supported",
					 js_kw(kw, sizeof(kw), path, key), shown);
		rv_error_hint(err, "The supported formats are " JS_FORMAT_LIST ".");
		return false;
	}
	return true;
}

/* properties: an object of subschemas, each checked. */
static bool
js_check_properties(const char *key, json_object *val, JsPath *path, int depth,
					RvError *err)
{
	char		kw[JS_PATH_LEN + 32];

	struct json_object_iter pit;

	if (!json_object_is_type(val, json_type_object))
	{
		rv_error_set(err, "\"%s\" must be an object mapping property names to schemas",
					 js_kw(kw, sizeof(kw), path, key));
		return false;
	}
	json_object_object_foreachC(val, pit)
	{
		size_t		old;

		old = js_path_push(path, path->len ? ".properties.%s" : "properties.%s", pit.key);
		if (!js_check_node(pit.val, path, depth + 1, err))
			return false;
		js_path_pop(path, old);
	}
	return true;
}

/*
 * One keyword of a schema object: supported, and its value of the right
 * kind (subschemas checked in turn).
 */
static bool
js_check_keyword(const char *key, json_object *val, JsPath *path, int depth,
				 RvError *err)
{
	char		kw[JS_PATH_LEN + 32];
	int			i;

	for (i = 0; i < JS_NUNSUPPORTED; i++)
	{
		if (strcmp(key, js_unsupported[i]) == 0)
		{
			rv_error_set(err, "\"%s\" is not supported", js_kw(kw, sizeof(kw), path, key));
			rv_error_hint(err, "The supported keywords are type, properties, required, additionalProperties, enum, const, items, minItems, maxItems, minProperties, maxProperties, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern and format.");
			return false;
		}
	}

	if (strcmp(key, "type") == 0)
	{
		if (!js_check_type(key, val, path, err))
			return false;
	}
	else if (strcmp(key, "properties") == 0)
	{
		if (!js_check_properties(key, val, path, depth, err))
			return false;
	}
	else if (strcmp(key, "required") == 0)
	{
		bool		ok = json_object_is_type(val, json_type_array);
		size_t		j;

		for (j = 0; ok && j < json_object_array_length(val); j++)
			ok = json_object_is_type(json_object_array_get_idx(val, j), json_type_string);
		if (!ok)
		{
			rv_error_set(err, "\"%s\" must be an array of property names",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
	}
	else if (strcmp(key, "additionalProperties") == 0 ||
			 strcmp(key, "items") == 0)
	{
		size_t		old;

		if (!json_object_is_type(val, json_type_object) &&
			!json_object_is_type(val, json_type_boolean))
		{
			rv_error_set(err, "\"%s\" must be a schema object or a boolean",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
		old = js_path_push(path, path->len ? ".%s" : "%s", key);
		if (!js_check_node(val, path, depth + 1, err))
			return false;
		js_path_pop(path, old);
	}
	else if (strcmp(key, "enum") == 0)
	{
		if (!json_object_is_type(val, json_type_array) ||
			json_object_array_length(val) == 0)
		{
			rv_error_set(err, "\"%s\" must be a non-empty array",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
	}
	else if (strcmp(key, "minItems") == 0 || strcmp(key, "maxItems") == 0 ||
			 strcmp(key, "minLength") == 0 || strcmp(key, "maxLength") == 0 ||
			 strcmp(key, "minProperties") == 0 || strcmp(key, "maxProperties") == 0)
	{
		if (!js_is_count(val))
		{
			rv_error_set(err, "\"%s\" must be a non-negative integer",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
	}
	else if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0)
	{
		if (!js_is_number(val))
		{
			rv_error_set(err, "\"%s\" must be a number",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
	}
	else if (strcmp(key, "exclusiveMinimum") == 0 ||
			 strcmp(key, "exclusiveMaximum") == 0)
	{
		/* a number (draft 6 and later) or a boolean (draft 4) */
		if (!js_is_number(val) && !json_object_is_type(val, json_type_boolean))
		{
			rv_error_set(err, "\"%s\" must be a number",
						 js_kw(kw, sizeof(kw), path, key));
			return false;
		}
	}
	else if (strcmp(key, "pattern") == 0)
	{
		if (!js_check_pattern(key, val, path, err))
			return false;
	}
	else if (strcmp(key, "format") == 0)
	{
		if (!js_check_format(key, val, path, err))
			return false;
	}
	/* const takes any value; other keywords are annotations */
	return true;
}

static bool
js_check_node(json_object *schema, JsPath *path, int depth, RvError *err)
{
	struct json_object_iter it;

	if (depth > JS_MAX_DEPTH)
	{
		rv_error_set(err, "schema is nested too deeply");
		rv_error_detail(err, "Schemas may be nested at most %d levels deep.", JS_MAX_DEPTH);
		return false;
	}
	if (json_object_is_type(schema, json_type_boolean))
		return true;
	if (!json_object_is_type(schema, json_type_object))
	{
		if (path->len == 0)
			rv_error_set(err, "schema must be an object");
		else
			rv_error_set(err, "\"%s\" must be an object", path->buf);
		return false;
	}

	json_object_object_foreachC(schema, it)
	{
		if (!js_check_keyword(it.key, it.val, path, depth, err))
			return false;
	}
	return js_check_satisfiable(schema, path, err);
}

/*
 * Rewrite draft-4 forms in place into the forms current servers accept:
 * "exclusiveMinimum": true with "minimum": m becomes "exclusiveMinimum": m
 * (and likewise for the maximum); "exclusiveMinimum": false is dropped.
 */
static void
js_normalize_node(json_object *schema, int depth)
{
	static const char *const bounds[][2] = {
		{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}
	};
	struct json_object_iter it;
	int			i;

	if (depth > JS_MAX_DEPTH || !json_object_is_type(schema, json_type_object))
		return;
	for (i = 0; i < 2; i++)
	{
		json_object *flag;
		json_object *bound;

		if (!json_object_object_get_ex(schema, bounds[i][0], &flag) ||
			!json_object_is_type(flag, json_type_boolean))
			continue;
		if (json_object_get_boolean(flag) &&
			json_object_object_get_ex(schema, bounds[i][1], &bound) && js_is_number(bound))
		{
			json_object_object_add(schema, bounds[i][0], json_object_get(bound));
			json_object_object_del(schema, bounds[i][1]);
		}
		else
			json_object_object_del(schema, bounds[i][0]);
	}
	json_object_object_foreachC(schema, it)
	{
		if (strcmp(it.key, "properties") == 0 && json_object_is_type(it.val, json_type_object))
		{
			struct json_object_iter pit;

			json_object_object_foreachC(it.val, pit)
				js_normalize_node(pit.val, depth + 1);
		}
		else if (strcmp(it.key, "items") == 0 || strcmp(it.key, "additionalProperties") == 0)
			js_normalize_node(it.val, depth + 1);
	}
}

void
rv_schema_normalize(json_object *schema)
{
	if (schema != NULL)
		js_normalize_node(schema, 0);
}

/*
 * Check that schema uses the supported subset correctly.  Messages name
 * the keyword by its path inside the schema, e.g.
 * "\"properties.sentiment.enum\" must be a non-empty array".
 */
bool
rv_schema_check(json_object *schema, RvError *err)
{
	JsPath		path;

	path.buf[0] = '\0';
	path.len = 0;
	if (schema != NULL && !json_object_is_type(schema, json_type_object) &&
		!json_object_is_type(schema, json_type_boolean))
	{
		rv_error_set(err, "schema must be an object");
		return false;
	}
	if (schema == NULL)
		return true;
	return js_check_node(schema, &path, 0, err);
}

/* ----------------------------------------------------------------
 *		Validating a value
 * ----------------------------------------------------------------
 */

/* Does value v have type name t? */
static bool
js_has_type(json_object *v, const char *t)
{
	json_type	vt = json_object_get_type(v);

	if (strcmp(t, "object") == 0)
		return vt == json_type_object;
	if (strcmp(t, "array") == 0)
		return vt == json_type_array;
	if (strcmp(t, "string") == 0)
		return vt == json_type_string;
	if (strcmp(t, "number") == 0)
		return js_is_number(v);
	if (strcmp(t, "integer") == 0)
		return js_is_integer(v);
	if (strcmp(t, "boolean") == 0)
		return vt == json_type_boolean;
	if (strcmp(t, "null") == 0)
		return vt == json_type_null;
	return false;
}

/*
 * Check the "type" keyword.  Returns false with "expected string or null,
 * got 5" when value matches none of the types.  A malformed "type" is
 * ignored.
 */
static bool
js_validate_type(json_object *type, json_object *value, JsPath *path, RvError *err)
{
	char		expected[200];
	char		shown[JS_SHOW_LEN + 8];
	size_t		n,
				i;

	if (json_object_is_type(type, json_type_string))
	{
		if (js_has_type(value, json_object_get_string(type)))
			return true;
		snprintf(expected, sizeof(expected), "%s", json_object_get_string(type));
	}
	else if (json_object_is_type(type, json_type_array) &&
			 (n = json_object_array_length(type)) > 0)
	{
		size_t		o = 0;

		for (i = 0; i < n; i++)
		{
			json_object *t = json_object_array_get_idx(type, i);

			if (!json_object_is_type(t, json_type_string))
				return true;
			if (js_has_type(value, json_object_get_string(t)))
				return true;
		}
		expected[0] = '\0';
		for (i = 0; i < n && o < sizeof(expected); i++)
		{
			const char *sep = i == 0 ? "" : (i == n - 1 ? " or " : ", ");
			int			w;

			w = snprintf(expected + o, sizeof(expected) - o, "%s%.20s", sep,
						 json_object_get_string(json_object_array_get_idx(type, i)));
			if (w < 0)
				break;
			o += (size_t) w;
		}
	}
	else
		return true;

	js_show(shown, sizeof(shown), value, false);
	rv_error_set(err, "%s: expected %s, got %s", path->buf, expected, shown);
	return false;
}

/* Check "enum": value must equal one of the listed values. */
static bool
js_validate_enum(json_object *list, json_object *value, JsPath *path, RvError *err)
{
	char		shown[JS_SHOW_LEN + 8];
	char		all[JS_LIST_LEN + 8];
	size_t		n = json_object_array_length(list);
	size_t		o = 0;
	size_t		i;

	for (i = 0; i < n; i++)
	{
		if (js_equal(json_object_array_get_idx(list, i), value, 0))
			return true;
	}
	all[0] = '\0';
	for (i = 0; i < n; i++)
	{
		char		one[JS_SHOW_LEN + 8];
		size_t		w;

		js_show(one, sizeof(one), json_object_array_get_idx(list, i), true);
		w = strlen(one) + (i ? 2 : 0);
		if (o + w > JS_LIST_LEN)
		{
			snprintf(all + o, sizeof(all) - o, ", ...");
			break;
		}
		snprintf(all + o, sizeof(all) - o, "%s%s", i ? ", " : "", one);
		o += w;
	}
	js_show(shown, sizeof(shown), value, true);
	rv_error_set(err, "%s: %s is not one of %s", path->buf, shown, all);
	return false;
}

/* Check minimum, maximum and the exclusive forms against a number. */
static bool
js_validate_number(json_object *schema, json_object *value, JsPath *path, RvError *err)
{
	json_object *bound;
	json_object *flag;
	char		shown[JS_SHOW_LEN + 8];
	char		lim[JS_SHOW_LEN + 8];
	bool		excl;

	js_show(shown, sizeof(shown), value, false);

	if (json_object_object_get_ex(schema, "minimum", &bound) && js_is_number(bound))
	{
		int			c = js_num_cmp(value, bound);

		/* draft 4: "exclusiveMinimum": true makes "minimum" exclusive */
		excl = json_object_object_get_ex(schema, "exclusiveMinimum", &flag) &&
			json_object_is_type(flag, json_type_boolean) &&
			json_object_get_boolean(flag);
		js_show(lim, sizeof(lim), bound, false);
		if (c == 2 || c < 0 || (excl && c == 0))
		{
			if (excl)
				rv_error_set(err, "%s: %s is not greater than the exclusive minimum %s",
							 path->buf, shown, lim);
			else
				rv_error_set(err, "%s: %s is less than the minimum %s", path->buf, shown, lim);
			return false;
		}
	}
	if (json_object_object_get_ex(schema, "maximum", &bound) && js_is_number(bound))
	{
		int			c = js_num_cmp(value, bound);

		excl = json_object_object_get_ex(schema, "exclusiveMaximum", &flag) &&
			json_object_is_type(flag, json_type_boolean) &&
			json_object_get_boolean(flag);
		js_show(lim, sizeof(lim), bound, false);
		if (c == 2 || c > 0 || (excl && c == 0))
		{
			if (excl)
				rv_error_set(err, "%s: %s is not less than the exclusive maximum %s",
							 path->buf, shown, lim);
			else
				rv_error_set(err, "%s: %s is greater than the maximum %s", path->buf, shown, lim);
			return false;
		}
	}
	if (json_object_object_get_ex(schema, "exclusiveMinimum", &bound) && js_is_number(bound))
	{
		int			c = js_num_cmp(value, bound);

		if (c == 2 || c <= 0)
		{
			js_show(lim, sizeof(lim), bound, false);
			rv_error_set(err, "%s: %s is not greater than the exclusive minimum %s",
						 path->buf, shown, lim);
			return false;
		}
	}
	if (json_object_object_get_ex(schema, "exclusiveMaximum", &bound) && js_is_number(bound))
	{
		int			c = js_num_cmp(value, bound);

		if (c == 2 || c >= 0)
		{
			js_show(lim, sizeof(lim), bound, false);
			rv_error_set(err, "%s: %s is not less than the exclusive maximum %s",
						 path->buf, shown, lim);
			return false;
		}
	}
	return true;
}

/*
 * Check a count (string length or array size) against the min and max
 * keywords named minkw / maxkw.  unit is "character" or "item".
 */
static bool
js_validate_count(json_object *schema, int64_t count, const char *minkw,
				  const char *maxkw, const char *unit, JsPath *path, RvError *err)
{
	json_object *bound;

	if (json_object_object_get_ex(schema, minkw, &bound) && js_is_count(bound))
	{
		int64_t		min = json_object_get_int64(bound);

		if (count < min)
		{
			rv_error_set(err, "%s: expected at least %lld %s%s, got %lld",
						 path->buf, (long long) min, unit, min == 1 ? "" : "s",
						 (long long) count);
			return false;
		}
	}
	if (json_object_object_get_ex(schema, maxkw, &bound) && js_is_count(bound))
	{
		int64_t		max = json_object_get_int64(bound);

		if (count > max)
		{
			rv_error_set(err, "%s: expected at most %lld %s%s, got %lld",
						 path->buf, (long long) max, unit, max == 1 ? "" : "s",
						 (long long) count);
			return false;
		}
	}
	return true;
}

static bool js_validate_node(json_object *schema, json_object *value,
							 JsPath *path, int depth, RvError *err);

/* Push a property name onto a value path: $.name or $["odd name"]. */
static size_t
js_path_push_key(JsPath *path, const char *key)
{
	char		quoted[JS_SHOW_LEN + 8];

	if (js_is_identifier(key))
		return js_path_push(path, ".%s", key);
	js_quote(quoted, sizeof(quoted), key, strlen(key), JS_SHOW_LEN);
	return js_path_push(path, "[%s]", quoted);
}

/*
 * Validate an object value: required, properties, additionalProperties,
 * in that order.
 */
static bool
js_validate_object(json_object *schema, json_object *value, JsPath *path,
				   int depth, RvError *err)
{
	json_object *required;
	json_object *props = NULL;
	json_object *addl;
	size_t		i;

	if (json_object_object_get_ex(schema, "required", &required) &&
		json_object_is_type(required, json_type_array))
	{
		for (i = 0; i < json_object_array_length(required); i++)
		{
			json_object *name = json_object_array_get_idx(required, i);
			char		quoted[JS_SHOW_LEN + 8];

			if (!json_object_is_type(name, json_type_string))
				continue;
			if (json_object_object_get_ex(value, json_object_get_string(name), NULL))
				continue;
			js_quote(quoted, sizeof(quoted), json_object_get_string(name),
					 strlen(json_object_get_string(name)), JS_SHOW_LEN);
			rv_error_set(err, "%s: missing required property %s", path->buf, quoted);
			return false;
		}
	}

	if (json_object_object_get_ex(schema, "properties", &props) &&
		json_object_is_type(props, json_type_object))
	{
		struct json_object_iter it;

		json_object_object_foreachC(props, it)
		{
			json_object *member;
			size_t		old;

			if (!json_object_object_get_ex(value, it.key, &member))
				continue;
			old = js_path_push_key(path, it.key);
			if (!js_validate_node(it.val, member, path, depth + 1, err))
				return false;
			js_path_pop(path, old);
		}
	}
	else
		props = NULL;

	if (json_object_object_get_ex(schema, "additionalProperties", &addl) &&
		(json_object_is_type(addl, json_type_object) ||
		 (json_object_is_type(addl, json_type_boolean) && !json_object_get_boolean(addl))))
	{
		struct json_object_iter it;

		json_object_object_foreachC(value, it)
		{
			size_t		old;

			if (props != NULL && json_object_object_get_ex(props, it.key, NULL))
				continue;
			if (json_object_is_type(addl, json_type_boolean))
			{
				char		quoted[JS_SHOW_LEN + 8];

				js_quote(quoted, sizeof(quoted), it.key, strlen(it.key), JS_SHOW_LEN);
				rv_error_set(err, "%s: unexpected property %s", path->buf, quoted);
				if (props != NULL && json_object_object_length(props) > 0)
				{
					char		names[JS_LIST_LEN + 8];
					size_t		o = 0;
					struct json_object_iter pit;

					names[0] = '\0';
					json_object_object_foreachC(props, pit)
					{
						int			w;

						w = snprintf(names + o, sizeof(names) - o, "%s%s",
									 o ? ", " : "", pit.key);
						if (w < 0 || (size_t) w >= sizeof(names) - o)
							break;
						o += (size_t) w;
					}
					rv_error_detail(err, "The allowed properties are: %s.", names);
				}
				else
					rv_error_detail(err, "No properties are allowed here.");
				return false;
			}
			old = js_path_push_key(path, it.key);
			if (!js_validate_node(addl, it.val, path, depth + 1, err))
				return false;
			js_path_pop(path, old);
		}
	}
	return true;
}

/* Validate an array value: minItems, maxItems, then each item. */
static bool
js_validate_array(json_object *schema, json_object *value, JsPath *path,
				  int depth, RvError *err)
{
	json_object *items;
	size_t		n = json_object_array_length(value);
	size_t		i;

	if (!js_validate_count(schema, (int64_t) n, "minItems", "maxItems", "item", path, err))
		return false;
	if (json_object_object_get_ex(schema, "items", &items) &&
		(json_object_is_type(items, json_type_object) ||
		 json_object_is_type(items, json_type_boolean)))
	{
		for (i = 0; i < n; i++)
		{
			char		idx[32];
			size_t		old;

			snprintf(idx, sizeof(idx), "%zu", i);
			old = js_path_push(path, "[%s]", idx);
			if (!js_validate_node(items, json_object_array_get_idx(value, i), path,
								  depth + 1, err))
				return false;
			js_path_pop(path, old);
		}
	}
	return true;
}

/* Check pattern and format against a string value. */
static bool
js_validate_string(json_object *schema, json_object *value, JsPath *path, RvError *err)
{
	json_object *kw;
	const char *s = json_object_get_string(value);
	size_t		len = (size_t) json_object_get_string_len(value);
	char		got[JS_SHOW_LEN + 8];

	if (json_object_object_get_ex(schema, "pattern", &kw) &&
		json_object_is_type(kw, json_type_string))
	{
		regex_t		re;
		char		whybuf[128];
		const char *why = NULL;

		/* an unchecked schema may hold a bad pattern: then it matches nothing */
		if (!js_pattern_compile(json_object_get_string(kw), &re, whybuf, sizeof(whybuf), &why) ||
			strlen(s) != len || regexec(&re, s, 0, NULL, 0) != 0)
		{
			char		want[JS_SHOW_LEN + 8];

			if (why == NULL)
				regfree(&re);
			js_show(got, sizeof(got), value, false);
			js_show(want, sizeof(want), kw, true);
			rv_error_set(err, "%s: %s does not match the pattern %s", path->buf, got, want);
			return false;
		}
		regfree(&re);
	}
	if (json_object_object_get_ex(schema, "format", &kw) &&
		json_object_is_type(kw, json_type_string) &&
		!js_format_ok(json_object_get_string(kw), s, len))
	{
		js_show(got, sizeof(got), value, false);
		rv_error_set(err, "%s: %s is not a valid %s", path->buf, got, json_object_get_string(kw));
		return false;
	}
	return true;
}

/*
 * Validate value against one schema node; path is the value's JSON path.
 * Keywords apply in a fixed order: type, const, enum, then the keywords of
 * the value's own type.
 */
static bool
js_validate_node(json_object *schema, json_object *value, JsPath *path,
				 int depth, RvError *err)
{
	json_object *kw;

	if (depth > JS_MAX_DEPTH)
	{
		rv_error_set(err, "%s: schema is nested too deeply", path->buf);
		rv_error_detail(err, "Schemas may be nested at most %d levels deep.", JS_MAX_DEPTH);
		return false;
	}
	if (json_object_is_type(schema, json_type_boolean))
	{
		if (json_object_get_boolean(schema))
			return true;
		rv_error_set(err, "%s: no value is allowed here", path->buf);
		return false;
	}
	if (!json_object_is_type(schema, json_type_object))
		return true;

	if (json_object_object_get_ex(schema, "type", &kw) &&
		!js_validate_type(kw, value, path, err))
		return false;

	if (json_object_object_get_ex(schema, "const", &kw) && !js_equal(kw, value, 0))
	{
		char		want[JS_SHOW_LEN + 8];
		char		got[JS_SHOW_LEN + 8];

		js_show(want, sizeof(want), kw, true);
		js_show(got, sizeof(got), value, true);
		rv_error_set(err, "%s: expected %s, got %s", path->buf, want, got);
		return false;
	}

	if (json_object_object_get_ex(schema, "enum", &kw) &&
		json_object_is_type(kw, json_type_array) &&
		json_object_array_length(kw) > 0 &&
		!js_validate_enum(kw, value, path, err))
		return false;

	switch (json_object_get_type(value))
	{
		case json_type_object:
			return js_validate_object(schema, value, path, depth, err);
		case json_type_array:
			return js_validate_array(schema, value, path, depth, err);
		case json_type_string:
			if (!js_validate_count(schema,
								   (int64_t) rv_utf8_count(json_object_get_string(value),
												 (size_t) json_object_get_string_len(value)),
								   "minLength", "maxLength", "character", path, err))
				return false;
			return js_validate_string(schema, value, path, err);
		case json_type_int:
		case json_type_double:
			return js_validate_number(schema, value, path, err);
		default:
			return true;
	}
}

/*
 * Validate value against schema.  On failure err->message names the JSON
 * path of the first problem ("$.items[2].name: expected string, got 5").
 * A NULL schema accepts everything.
 */
bool
rv_schema_validate(json_object *schema, json_object *value, RvError *err)
{
	JsPath		path;

	strcpy(path.buf, "$");
	path.len = 1;
	if (schema == NULL)
		return true;
	return js_validate_node(schema, value, &path, 0, err);
}
