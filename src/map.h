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
#include "nodes/execnodes.h"
#include "cascade.h"
#include "options.h"

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

extern void rv_plan_statement(const char *text, int location, ParseState *pstate,
							  RvPlannedStatement *out);
extern char *rv_map_sql(RvPlannedStatement *ps, ParseState *pstate);
extern void rw_query_columns_rels(const char *query, StringInfo buf, List **names, List **rels);
extern void rv_stmt_using_at(const char *src, int location, const char *stmt_text,
							 const RvPlannedStatement *ps);
extern void rv_stmt_parse_errcb(void *arg);
extern int64 rv_as_table(const char *stmt_text, char **table);
extern char *rv_resolve_cascade(const char *ref, char **display);
extern char *rv_cascade_name(const char *name);
extern RvCascade *rv_check_cascade(const char *display, const char *def);

/* == between the files that were map.c == */

/* What rvbbit.map() returns (map.c) */
typedef enum MapOutput
{
	MAP_OUT_RESULT,				/* query columns, then the result (jsonb) */
	MAP_OUT_UNPACK,				/* query columns, then typed columns from result keys */
	MAP_OUT_JSON				/* one jsonb object per row */
} MapOutput;

extern void map_run(ReturnSetInfo *rsinfo, const char *ref, const char *query,
					int parallel, RvOptions *opts, MapOutput output, const char *result_name);
/* catalog.c */
extern char *map_read_cascade_file(const char *dir, const char *name, bool *refused);
extern char *map_examples_dir(void);
/* providers.c */
extern const char *map_api_key(void);

#endif							/* RV_MAP_H */
