/*-------------------------------------------------------------------------
 *
 * map.h
 *	  Options and cascade resolution shared by run, map and the statement
 *	  rewrite.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_MAP_H
#define RV_MAP_H

#include "parser/parse_node.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"
#include "cascade.h"

/* json-c, after pgjsonc.h in the including file */

typedef enum RvOnError
{
	RV_ON_ERROR_NULL,
	RV_ON_ERROR_FAIL,
	RV_ON_ERROR_VALUE
} RvOnError;

typedef struct RvOptions
{
	char	   *model;			/* or NULL */
	bool		cache_read;
	bool		cache_write;
	long		cache_max_age_s;	/* -1: any age */
	long		timeout_ms;
	int			max_retries;
	RvOnError	on_error;
	bool		on_error_given;
	int			parallel;		/* -1: not given */
	int64		limit;			/* -1: not given; 0: none */
	bool		unpack;			/* fill typed columns from result keys */
	char	   *result_column;	/* statements: name of the result column */
	bool		infer_schema;	/* statements: columns from output_schema */
	double		budget_dollars; /* stop scheduling at this spend; < 0: none */
	char	   *dedupe_by;		/* column whose equal values share one call */
	char	   *as_table;		/* statements: write the rows into this new table */
	bool		async;			/* statements: run as a background job */
	int			batch;			/* MAP BATCH n: rows per request, 0: none */
	uint32		given;			/* bit (1 << RvOptId) per option given */
} RvOptions;

/*
 * The options, one bit each in RvOptions.given; RV_OPTION_NAMES in map.c
 * spells them in this order.
 */
typedef enum RvOptId
{
	RV_OPT_MODEL,
	RV_OPT_CACHE,
	RV_OPT_TIMEOUT,
	RV_OPT_MAX_RETRIES,
	RV_OPT_ON_ERROR,
	RV_OPT_BUDGET_DOLLARS,
	RV_OPT_PARALLEL,
	RV_OPT_LIMIT,
	RV_OPT_BATCH,
	RV_OPT_DEDUPE_BY,
	RV_OPT_UNPACK,
	RV_OPT_AS_TABLE,
	RV_OPT_RESULT_COLUMN,
	RV_OPT_INFER_SCHEMA,
	RV_OPT_ASYNC,
	RV_NOPTIONS
} RvOptId;

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

/* An RVBBIT statement checked and ready to run (rewrite.c). */
typedef struct RvPlannedStatement
{
	bool		is_run;			/* RUN: once over all rows */
	bool		is_async;		/* RUN ASYNC or async = true (and not in a job runner) */
	char	   *cascade;
	char	   *query;
	int			query_position; /* 1-based character of query in the statement */
	int			parallel;
	RvOptions	opts;
	char	   *options_json;	/* the options for rvbbit.map(), as JSON text */
	char	   *result_name;	/* the result column (MAP ... AS alias) */
	int			ncolumns;		/* typed result columns, 0 for one jsonb column */
	char	  **colnames;
	char	  **coltypes;
} RvPlannedStatement;

/* == stream: a MAP as a stream of rows, and its counters == */

/* Call latency histogram: bucket i holds [RV_LAT_MIN * RV_LAT_STEP^i, ...) ms */
#define RV_LAT_BUCKETS	1200
#define RV_LAT_MIN		0.01
#define RV_LAT_STEP		1.02

/* What the rows of a MAP cost so far (EXPLAIN ANALYZE). */
typedef struct RvMapCounters
{
	int64		results;		/* rows answered by the worker */
	int64		llm_calls;
	int64		cache_hits;
	int64		retries;
	int64		failures;		/* rows that failed */
	int64		tokens_in;
	int64		tokens_out;
	double		cost;
	int64		nlatency;		/* rows with HTTP calls, in the histogram */
	uint32		latency[RV_LAT_BUCKETS];
} RvMapCounters;

typedef struct RvMapStream RvMapStream;

struct RvResultHead;
extern void rv_map_counters_add(RvMapCounters *c, const struct RvResultHead *head);
extern double rv_map_counters_percentile(const RvMapCounters *c, double p);
extern RvMapStream *rv_map_stream_open(Datum *args, bool *argnulls, TupleDesc out_desc);
extern bool rv_map_stream_next(RvMapStream *ms, Datum **values, bool **nulls);
extern void rv_map_stream_close(RvMapStream *ms);
extern const RvMapCounters *rv_map_stream_counters(RvMapStream *ms);

/* == end stream == */

extern void rv_default_options(RvOptions *o);
extern void rv_parse_options(Jsonb *jb, RvOptions *o, RvOptWhere where);
extern void rv_parse_options_json(json_object *obj, RvOptions *o, RvOptWhere where);
extern void rv_plan_statement(const char *text, int location, ParseState *pstate,
							  RvPlannedStatement *out);
extern char *rv_map_sql(RvPlannedStatement *ps, ParseState *pstate);
extern int64 rv_as_table(const char *stmt_text, char **table);
extern char *rv_resolve_cascade(const char *ref, char **display);
extern char *rv_cascade_name(const char *name);
extern RvCascade *rv_check_cascade(const char *display, const char *def);

#endif							/* RV_MAP_H */
