/*-------------------------------------------------------------------------
 *
 * optlist.h
 *	  The options of rvbbit.run(), rvbbit.map(), rvbbit._run_rows() and the
 *	  statements' WITH ( ... ) list: one row each.
 *
 * No include guard: each includer defines RV_OPTION(...) to pick the
 * columns it needs, includes this file and undefines the macro, as
 * PostgreSQL's access/rmgrlist.h is used.  The parser of statements
 * (syntax.c, pure) uses name and with; the options table (options.c)
 * builds RvOptId, the fields of RvOptions, the defaults, the JSON parser,
 * the options passed on to rvbbit.map() and the worker's header from the
 * rest.  Adding an option is adding a row here (and reading it where it
 * takes effect).
 *
 * Columns:
 *	 id		RV_OPT_<id>, and the bit (1 << RV_OPT_<id>) in RvOptions.given
 *	 name	the option's name in JSON and in WITH ( ... )
 *	 type	how its value is parsed and written (options.c, RvOptType):
 *			STRING (non-empty), BOOL, INT and INT64 (between lo and hi),
 *			MONEY (a non-negative number), DURATION_MS (milliseconds or an
 *			interval, between lo and hi ms), CACHE, ON_ERROR
 *	 field	its field in RvOptions, of the C type of the option type
 *	 lo, hi	the range of INT, INT64 and DURATION_MS values
 *	 dflt	the value when it is not given (an expression, read per call)
 *	 with	its place in the hint listing the WITH ( ... ) options, 1-based;
 *			0 when a statement cannot give it
 *	 places	where it applies (RV_AT_* in options.h); anywhere else it is an
 *			error naming where it does
 *	 pass	passed on from a statement to rvbbit.map() / rvbbit._run_rows()
 *			in their options JSON (when set: STRING, BOOL true, numbers
 *			>= lo, always for the others)
 *	 header	its key in the header the worker reads, or NULL (same rule)
 *
 * The order of the rows is the order of the hint of rvbbit.run(),
 * rvbbit.map() and rvbbit._run_rows() ("Valid options for ... are").
 *
 *-------------------------------------------------------------------------
 */

/*		   id			   name				 type		  field			  lo  hi	   dflt					  with places			  pass	 header */
RV_OPTION(MODEL,		  "model",		   STRING,	  model,		  0,  0,	   NULL,				  7,   RV_AT_CALLS,		  true,  "model")
RV_OPTION(CACHE,		  "cache",		   CACHE,		  cache_read,	  0,  0,	   true,				  4,   RV_AT_CALLS,		  true,  "cache_read")
RV_OPTION(TIMEOUT,		  "timeout",	   DURATION_MS, timeout_ms,	  1,  3600000, rv_request_timeout_ms, 12,  RV_AT_CALLS,		  true,  "timeout_ms")
RV_OPTION(MAX_RETRIES,	  "max_retries",   INT,		  max_retries,	  0,  100,	   rv_max_retries,		  13,  RV_AT_CALLS,		  true,  "max_retries")
RV_OPTION(ON_ERROR,		  "on_error",	   ON_ERROR,	  on_error,		  0,  0,	   RV_ON_ERROR_NULL,	  6,   RV_AT_CALLS,		  true,  NULL)
RV_OPTION(BUDGET_DOLLARS, "budget_dollars", MONEY,		  budget_dollars, 0,  0,	   -1,					  5,   RV_AT_CALLS,		  true,  "budget_dollars")
RV_OPTION(PARALLEL,		  "parallel",	   INT,		  parallel,		  1,  100000,  -1,					  1,   RV_AT_MAPS,		  false, NULL)
RV_OPTION(LIMIT,		  "limit",		   INT64,		  limit,		  0,  INT_MAX, -1,					  2,   RV_AT_ROWS,		  true,  NULL)
RV_OPTION(BATCH,		  "batch",		   INT,		  batch,		  1,  1000,    0,					  3,   RV_AT_MAPS,		  true,  "batch")
RV_OPTION(DEDUPE_BY,	  "dedupe_by",	   STRING,	  dedupe_by,	  0,  0,	   NULL,				  10,  RV_AT_MAPS,		  true,  NULL)
RV_OPTION(UNPACK,		  "unpack",		   BOOL,		  unpack,		  0,  0,	   false,				  0,   RV_AT_FUNCTION_ROWS, true,  NULL)
RV_OPTION(AS_TABLE,		  "as_table",	   STRING,	  as_table,		  0,  0,	   NULL,				  8,   RV_AT_STATEMENTS,  false, NULL)
RV_OPTION(RESULT_COLUMN,  "result_column", STRING,	  result_column,  0,  0,	   NULL,				  9,   RV_AT_STATEMENTS,  false, NULL)
RV_OPTION(INFER_SCHEMA,	  "infer_schema",  BOOL,		  infer_schema,	  0,  0,	   false,				  11,  RV_AT_STATEMENTS,  false, NULL)
RV_OPTION(ASYNC,		  "async",		   BOOL,		  async,		  0,  0,	   false,				  14,  RV_AT_STATEMENTS,  false, NULL)
