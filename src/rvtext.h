/*-------------------------------------------------------------------------
 *
 * rvtext.h
 *	  Text helpers shared by the pure modules (syntax, template, JSON
 *	  Schema, cascade, provider formats): UTF-8, a growable byte buffer and
 *	  the ASCII character classes of their lexers, one copy of each.  The
 *	  gateway (src/gateway) uses the SQL lexing part too.
 *
 * Pure: no PostgreSQL headers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_TEXT_H
#define RV_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Number of UTF-8 characters in s[0..n) (bytes that are no continuation). */
extern size_t rv_utf8_count(const char *s, size_t n);

/*
 * Byte length of the character starting at s[i] of s[0..n): 1 plus the
 * continuation bytes that follow (at most 4 in all).
 */
extern size_t rv_utf8_charlen(const char *s, size_t n, size_t i);

/*
 * Length of the well-formed UTF-8 sequence at s (at most avail bytes), or
 * 0 when the bytes there are not one (overlong forms, surrogates and code
 * points above U+10FFFF are rejected).
 */
extern size_t rv_utf8_valid_len(const unsigned char *s, size_t avail);

/* Encode code point cp (below 0x110000) into out (4 bytes); the length. */
extern size_t rv_utf8_encode(uint32_t cp, char *out);

/*
 * A growable byte buffer, kept NUL-terminated once anything was appended
 * (data is NULL before).  Memory is malloc'd; the functions that allocate
 * return false when out of memory (or when the size would overflow),
 * leaving the buffer as it was.  Initialise with RV_BUF_INIT, release with
 * rv_buf_free(), or take data over and free() it.
 */
typedef struct RvBuf
{
	char	   *data;
	size_t		len;			/* bytes used, without the NUL */
	size_t		cap;			/* bytes allocated */
} RvBuf;

#define RV_BUF_INIT {NULL, 0, 0}

/* Make room for n more bytes plus a NUL. */
extern bool rv_buf_reserve(RvBuf *buf, size_t n);

/* Append n bytes of s (which may hold NULs). */
extern bool rv_buf_append(RvBuf *buf, const char *s, size_t n);

/* Append code point cp (below 0x110000) as UTF-8. */
extern bool rv_buf_append_utf8(RvBuf *buf, uint32_t cp);

extern void rv_buf_free(RvBuf *buf);

/*
 * ASCII character classes, independent of the locale (the server's
 * LC_CTYPE is the database's): the white space of C's isspace() in the C
 * locale, decimal digits, and the characters of a name ([A-Za-z_] first,
 * then digits too).  Bytes of non-ASCII characters are in none of them.
 */
static inline bool
rv_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
		c == '\f' || c == '\v';
}

static inline bool
rv_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
rv_is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static inline bool
rv_is_name_char(char c)
{
	return rv_is_name_start(c) || rv_is_digit(c);
}

/*
 * SQL identifiers as PostgreSQL's lexer reads them (scan.l): first an
 * ASCII letter, '_' or any byte of a non-ASCII character; then digits and
 * '$' too.
 */
static inline bool
rv_is_ident_start(char c)
{
	return rv_is_name_start(c) || ((unsigned char) c) >= 0x80;
}

static inline bool
rv_is_ident_char(char c)
{
	return rv_is_ident_start(c) || rv_is_digit(c) || c == '$';
}

/*
 * The end of the SQL block comment that starts at s[i] (with its opening
 * slash and star): the index just after its closing, comments nesting as in
 * PostgreSQL; (size_t) -1 when the text ends inside it.
 */
extern size_t rv_sql_comment_end(const char *s, size_t n, size_t i);

#endif							/* RV_TEXT_H */
