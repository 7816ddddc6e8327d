/*-------------------------------------------------------------------------
 *
 * rverror.h
 *	  Error record shared by the pure parsers (template, JSON Schema, YAML,
 *	  cascade, provider responses, statement syntax).
 *
 * The pure modules never include PostgreSQL headers and never raise
 * errors: they fill an RvError and return a failure value.  The server side
 * (rvbbit.c, worker.c, map.c) turns an RvError into an ereport().  This keeps
 * the parsers linkable into unit tests and fuzz targets without a server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RVERROR_H
#define RVERROR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define RV_ERRMSG_LEN 512

typedef struct RvError
{
	bool		set;			/* true once an error was recorded */
	char		message[RV_ERRMSG_LEN]; /* lower case, no final period */
	char		detail[RV_ERRMSG_LEN];	/* full sentence or empty */
	char		hint[RV_ERRMSG_LEN];	/* full sentence or empty */
	int			line;			/* 1-based line in the source text, 0 if n/a */
	int			column;			/* 1-based column, 0 if n/a */
	int			position;		/* 1-based character offset, 0 if n/a */
} RvError;

/* Reset an error record to "no error". */
extern void rv_error_clear(RvError *err);

/* Record a message (printf-style).  Only the first error is kept. */
extern void rv_error_set(RvError *err, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* Add or replace the detail / hint of an error (printf-style). */
extern void rv_error_detail(RvError *err, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void rv_error_hint(RvError *err, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/*
 * Record the location of an error from a 0-based byte offset into text:
 * sets position (1-based character count, UTF-8 aware), line and column.
 */
extern void rv_error_locate(RvError *err, const char *text, size_t offset);

#endif							/* RVERROR_H */
