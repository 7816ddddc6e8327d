/*-------------------------------------------------------------------------
 *
 * rvtext.c
 *	  Text helpers shared by the pure modules (rvtext.h): UTF-8 and the
 *	  growable buffer.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "rvtext.h"

#define RV_UTF8_CONT(c) ((((unsigned char) (c)) & 0xC0) == 0x80)

size_t
rv_utf8_count(const char *s, size_t n)
{
	size_t		i;
	size_t		count = 0;

	for (i = 0; i < n; i++)
		if (!RV_UTF8_CONT(s[i]))
			count++;
	return count;
}

size_t
rv_utf8_charlen(const char *s, size_t n, size_t i)
{
	size_t		k = 1;

	while (i + k < n && k < 4 && RV_UTF8_CONT(s[i + k]))
		k++;
	return k;
}

size_t
rv_utf8_valid_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	size_t		n;
	size_t		i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (avail < n)
		return 0;
	for (i = 1; i < n; i++)
		if (!RV_UTF8_CONT(s[i]))
			return 0;
	if (c == 0xE0 && s[1] < 0xA0)
		return 0;
	if (c == 0xED && s[1] > 0x9F)
		return 0;
	if (c == 0xF0 && s[1] < 0x90)
		return 0;
	if (c == 0xF4 && s[1] > 0x8F)
		return 0;
	return n;
}

size_t
rv_utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80)
	{
		out[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		out[0] = (char) (0xC0 | (cp >> 6));
		out[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		out[0] = (char) (0xE0 | (cp >> 12));
		out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char) (0xF0 | (cp >> 18));
	out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

bool
rv_buf_reserve(RvBuf *buf, size_t n)
{
	size_t		need;
	size_t		cap;
	char	   *d;

	if (n > SIZE_MAX - 1 - buf->len)
		return false;
	need = buf->len + n + 1;
	if (need <= buf->cap)
		return true;
	cap = buf->cap ? buf->cap : 64;
	while (cap < need)
	{
		if (cap > SIZE_MAX / 2)
		{
			cap = need;
			break;
		}
		cap *= 2;
	}
	d = realloc(buf->data, cap);
	if (d == NULL)
		return false;
	buf->data = d;
	buf->cap = cap;
	return true;
}

bool
rv_buf_append(RvBuf *buf, const char *s, size_t n)
{
	if (!rv_buf_reserve(buf, n))
		return false;
	if (n > 0)
		memcpy(buf->data + buf->len, s, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return true;
}

bool
rv_buf_append_utf8(RvBuf *buf, uint32_t cp)
{
	char		b[4];

	return rv_buf_append(buf, b, rv_utf8_encode(cp, b));
}

void
rv_buf_free(RvBuf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = buf->cap = 0;
}

size_t
rv_sql_comment_end(const char *s, size_t n, size_t i)
{
	int			depth = 1;

	i += 2;
	while (depth > 0)
	{
		if (i >= n)
			return (size_t) -1;
		if (i + 1 < n && s[i] == '/' && s[i + 1] == '*')
		{
			depth++;
			i += 2;
		}
		else if (i + 1 < n && s[i] == '*' && s[i + 1] == '/')
		{
			depth--;
			i += 2;
		}
		else
			i++;
	}
	return i;
}
