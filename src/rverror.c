/*-------------------------------------------------------------------------
 *
 * rverror.c
 *	  The RvError record used by the pure parsers; see rverror.h.
 *
 * No PostgreSQL headers: this file is linked into the extension, the unit
 * tests and the fuzz targets alike.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include "rverror.h"

void
rv_error_clear(RvError *err)
{
	memset(err, 0, sizeof(RvError));
}

void
rv_error_set(RvError *err, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || err->set)
		return;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	err->set = true;
}

void
rv_error_detail(RvError *err, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
	va_end(ap);
}

void
rv_error_hint(RvError *err, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(err->hint, sizeof(err->hint), fmt, ap);
	va_end(ap);
}

void
rv_error_locate(RvError *err, const char *text, size_t offset)
{
	size_t		i;
	int			line = 1;
	int			col = 1;
	int			chars = 1;

	if (err == NULL || text == NULL)
		return;
	for (i = 0; i < offset && text[i] != '\0'; i++)
	{
		unsigned char c = (unsigned char) text[i];

		/* count only the first byte of each UTF-8 sequence */
		if ((c & 0xC0) == 0x80)
			continue;
		chars++;
		if (c == '\n')
		{
			line++;
			col = 1;
		}
		else
			col++;
	}
	err->position = chars;
	err->line = line;
	err->column = col;
}
