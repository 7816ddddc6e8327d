/*-------------------------------------------------------------------------
 *
 * options.h
 *	  The options of rvbbit.run(), rvbbit.map(), rvbbit._run_rows() and the
 *	  statements (one table, built from optlist.h; options.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_OPTIONS_H
#define RV_OPTIONS_H

#include "utils/jsonb.h"

/* json-c, after pgjsonc.h in the including file */

typedef enum RvOnError
{
	RV_ON_ERROR_NULL,
	RV_ON_ERROR_FAIL,
	RV_ON_ERROR_VALUE
} RvOnError;

/* The C type of each option type of optlist.h. */
#define RV_OT_CTYPE_STRING		char *
#define RV_OT_CTYPE_BOOL		bool
#define RV_OT_CTYPE_INT			int
#define RV_OT_CTYPE_INT64		int64
#define RV_OT_CTYPE_MONEY		double
#define RV_OT_CTYPE_DURATION_MS long
#define RV_OT_CTYPE_CACHE		bool
#define RV_OT_CTYPE_ON_ERROR	RvOnError

/* The options, one bit each in RvOptions.given, in optlist.h's order. */
#define RV_OPTION(id, name, type, field, lo, hi, dflt, with, places, pass, header) \
	RV_OPT_##id,
typedef enum RvOptId
{
#include "optlist.h"
	RV_NOPTIONS
} RvOptId;
#undef RV_OPTION

#define RV_OPT_BIT(id) (1u << (id))

/*
 * An option's value: one field per row of optlist.h (a NULL string, a
 * negative number: not given, unless its row's default says otherwise),
 * and what the cache option sets beside cache_read.
 */
#define RV_OPTION(id, name, type, field, lo, hi, dflt, with, places, pass, header) \
	RV_OT_CTYPE_##type field;
typedef struct RvOptions
{
#include "optlist.h"
	bool		cache_write;
	long		cache_max_age_s;	/* -1: any age */
	uint32		given;			/* RV_OPT_BIT(RvOptId) per option given */
} RvOptions;
#undef RV_OPTION

/*
 * Where options are used; each place accepts a subset of them, and any
 * other option is an error there (never silently ignored).
 */
typedef enum RvOptWhere
{
	RV_OPTS_RUN_FUNCTION,		/* rvbbit.run(): one input */
	RV_OPTS_MAP_FUNCTION,		/* rvbbit.map() */
	RV_OPTS_RUN_ROWS,			/* rvbbit._run_rows(), what a RUN statement calls */
	RV_OPTS_MAP_STATEMENT,		/* MAP ... WITH (...) */
	RV_OPTS_RUN_STATEMENT		/* RUN ... WITH (...) */
} RvOptWhere;

/*
 * The places column of optlist.h.  rvbbit.run() runs one input once, so
 * nothing about many rows applies; RUN runs once over all rows, so
 * nothing about per-row concurrency, batching or de-duplication does.
 * unpack is what the rewrite passes for typed columns; statements spell
 * it as a column list.
 */
#define RV_AT(where) (1u << (where))
#define RV_AT_STATEMENTS (RV_AT(RV_OPTS_MAP_STATEMENT) | RV_AT(RV_OPTS_RUN_STATEMENT))
#define RV_AT_CALLS (RV_AT(RV_OPTS_RUN_FUNCTION) | RV_AT(RV_OPTS_MAP_FUNCTION) | \
					 RV_AT(RV_OPTS_RUN_ROWS) | RV_AT_STATEMENTS)
#define RV_AT_MAPS (RV_AT(RV_OPTS_MAP_FUNCTION) | RV_AT(RV_OPTS_MAP_STATEMENT))
#define RV_AT_ROWS (RV_AT(RV_OPTS_MAP_FUNCTION) | RV_AT(RV_OPTS_RUN_ROWS) | RV_AT_STATEMENTS)
#define RV_AT_FUNCTION_ROWS (RV_AT(RV_OPTS_MAP_FUNCTION) | RV_AT(RV_OPTS_RUN_ROWS))

extern void rv_default_options(RvOptions *o);
extern void rv_parse_options(Jsonb *jb, RvOptions *o, RvOptWhere where);
extern void rv_parse_options_json(json_object *obj, RvOptions *o, RvOptWhere where);
extern void rv_options_pass_json(const RvOptions *o, json_object *obj);
extern char *rv_header_json(const char *display, const char *def, const RvOptions *o,
							 int parallel);

#endif							/* RV_OPTIONS_H */
