/*-------------------------------------------------------------------------
 *
 * options.c
 *	  The options of rvbbit.run(), rvbbit.map(), rvbbit._run_rows() and the
 *	  statements' WITH (...) list, and the statement header the worker reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>



#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/timestamp.h"
#include "access/xact.h"

#include "cascade.h"
#include "channel.h"
#include "map.h"
#include "rvbbit.h"

/* ----------------------------------------------------------------
 * Options
 * ----------------------------------------------------------------
 */

/* Parse a duration given as a number of seconds or an interval string. */
static double
map_duration_seconds(const char *opt, json_object *v)
{
	if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
		return json_object_get_double(v);
	if (json_object_is_type(v, json_type_string))
	{
		Datum		iv;
		Interval   *itv;

		iv = DirectFunctionCall3(interval_in,
								 CStringGetDatum(json_object_get_string(v)),
								 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		itv = DatumGetIntervalP(iv);
		return (double) itv->time / 1e6 + itv->day * 86400.0 +
			itv->month * 30.0 * 86400.0;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("option \"%s\" must be a number of seconds or an interval such as '1 hour'", opt)));
	return 0;
}

/*
 * Parse the options object of rvbbit.run() / rvbbit.map() (a jsonb
 * object, or the WITH (...) list of a statement converted to one).
 * Unknown options are errors.
 */
/* The options of a call that gives none. */
void
rv_default_options(RvOptions *o)
{
	memset(o, 0, sizeof(RvOptions));
	o->on_error = RV_ON_ERROR_NULL;
	o->timeout_ms = rv_request_timeout_ms;
	o->max_retries = rv_max_retries;
	o->cache_read = true;
	o->cache_write = true;
	o->cache_max_age_s = -1;
	o->parallel = -1;
	o->limit = -1;
	o->budget_dollars = -1;
}

/* The option names, in RvOptId order. */
static const char *const map_option_names[RV_NOPTIONS] = {
	"model", "cache", "timeout", "max_retries", "on_error", "budget_dollars",
	"parallel", "limit", "batch", "dedupe_by", "unpack", "as_table",
	"result_column", "infer_schema", "async"
};

#define OPT(id) (1u << (id))
#define MAP_OPTS_CALL (OPT(RV_OPT_MODEL) | OPT(RV_OPT_CACHE) | OPT(RV_OPT_TIMEOUT) | \
					   OPT(RV_OPT_MAX_RETRIES) | OPT(RV_OPT_ON_ERROR) | \
					   OPT(RV_OPT_BUDGET_DOLLARS))

/*
 * The options each place accepts.  rvbbit.run() runs one input once, so
 * nothing about many rows applies; RUN runs once over all rows, so
 * nothing about per-row concurrency, batching or de-duplication does.
 * unpack is what the rewrite passes for typed columns; statements spell
 * it as a column list.
 */
static uint32
map_options_allowed(RvOptWhere where)
{
	switch (where)
	{
		case RV_OPTS_RUN_FUNCTION:
			return MAP_OPTS_CALL;
		case RV_OPTS_MAP_FUNCTION:
			return MAP_OPTS_CALL | OPT(RV_OPT_PARALLEL) | OPT(RV_OPT_LIMIT) |
				OPT(RV_OPT_BATCH) | OPT(RV_OPT_DEDUPE_BY) | OPT(RV_OPT_UNPACK);
		case RV_OPTS_RUN_ROWS:
			return MAP_OPTS_CALL | OPT(RV_OPT_LIMIT) | OPT(RV_OPT_UNPACK);
		case RV_OPTS_MAP_STATEMENT:
			return MAP_OPTS_CALL | OPT(RV_OPT_PARALLEL) | OPT(RV_OPT_LIMIT) |
				OPT(RV_OPT_BATCH) | OPT(RV_OPT_DEDUPE_BY) | OPT(RV_OPT_AS_TABLE) |
				OPT(RV_OPT_RESULT_COLUMN) | OPT(RV_OPT_INFER_SCHEMA) | OPT(RV_OPT_ASYNC);
		case RV_OPTS_RUN_STATEMENT:
			return MAP_OPTS_CALL | OPT(RV_OPT_LIMIT) | OPT(RV_OPT_AS_TABLE) |
				OPT(RV_OPT_RESULT_COLUMN) | OPT(RV_OPT_INFER_SCHEMA) | OPT(RV_OPT_ASYNC);
	}
	return 0;
}

/* Where options are used, for messages. */
static const char *
map_options_place(RvOptWhere where)
{
	switch (where)
	{
		case RV_OPTS_RUN_FUNCTION:
			return "rvbbit.run()";
		case RV_OPTS_MAP_FUNCTION:
			return "rvbbit.map()";
		case RV_OPTS_RUN_ROWS:
			return "rvbbit._run_rows()";
		case RV_OPTS_MAP_STATEMENT:
			return "a MAP statement";
		case RV_OPTS_RUN_STATEMENT:
			return "a RUN statement";
	}
	return "";
}

/* "a, b, c": the options accepted at where, palloc'd. */
static char *
map_options_list(RvOptWhere where)
{
	uint32		allowed = map_options_allowed(where);
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < RV_NOPTIONS; i++)
		if (allowed & OPT(i))
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", map_option_names[i]);
	return buf.data;
}

/*
 * Check that an option key is known and applies at where; return its id
 * or raise ERRCODE_INVALID_PARAMETER_VALUE naming it, with a hint listing
 * the options that do apply.
 */
static RvOptId
map_option_id(const char *k, RvOptWhere where)
{
	int			i;

	for (i = 0; i < RV_NOPTIONS; i++)
		if (strcmp(map_option_names[i], k) == 0)
			break;
	if (i == RV_NOPTIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown option \"%s\"", k),
				 errhint("Valid options for %s are: %s.", map_options_place(where),
						 map_options_list(where))));
	if (!(map_options_allowed(where) & OPT(i)))
	{
		const char *why = NULL;

		if (where == RV_OPTS_RUN_FUNCTION)
			why = "rvbbit.run() runs the cascade once on one input.";
		else if (where == RV_OPTS_RUN_STATEMENT || where == RV_OPTS_RUN_ROWS)
			why = "RUN runs the cascade once over all rows.";
		else if (i == RV_OPT_UNPACK)
			why = "A statement gets typed columns from AS (col type, ...).";
		else
			why = "It applies only to RVBBIT statements run with rvbbit.sql().";
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" does not apply to %s", k, map_options_place(where)),
				 errdetail("%s", why),
				 errhint("Valid options for %s are: %s.", map_options_place(where),
						 map_options_list(where))));
	}
	return (RvOptId) i;
}

/*
 * Parse the options object of rvbbit.run() / rvbbit.map() /
 * rvbbit._run_rows() (a jsonb object).  Unknown options and options that
 * do not apply at where are errors.
 */
void
rv_parse_options(Jsonb *jb, RvOptions *o, RvOptWhere where)
{
	char	   *text;
	json_object *obj;

	rv_default_options(o);
	if (jb == NULL)
		return;
	text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	obj = json_tokener_parse(text);
	if (obj == NULL || !json_object_is_type(obj, json_type_object))
	{
		if (obj)
			json_object_put(obj);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object"),
				 errhint("Write options like '{\"model\": \"openai/gpt-4o-mini\", \"cache\": false}'.")));
	}
	PG_TRY();
	{
		rv_parse_options_json(obj, o, where);
	}
	PG_FINALLY();
	{
		json_object_put(obj);
	}
	PG_END_TRY();
}

/*
 * Parse options given as a json-c object into o (which the caller set to
 * defaults with rv_default_options()); each option must apply at where
 * (map_option_id).  The caller frees obj.
 */
void
rv_parse_options_json(json_object *obj, RvOptions *o, RvOptWhere where)
{
	struct json_object_iterator it;
	struct json_object_iterator end;

	{
		it = json_object_iter_begin(obj);
		end = json_object_iter_end(obj);
		while (!json_object_iter_equal(&it, &end))
		{
			const char *k = json_object_iter_peek_name(&it);
			json_object *v = json_object_iter_peek_value(&it);
			bool		isnum = json_object_is_type(v, json_type_int) ||
				json_object_is_type(v, json_type_double);

			o->given |= OPT(map_option_id(k, where));
			if (strcmp(k, "model") == 0)
			{
				if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"model\" must be a non-empty string")));
				o->model = pstrdup(json_object_get_string(v));
			}
			else if (strcmp(k, "cache") == 0)
			{
				if (json_object_is_type(v, json_type_boolean))
					o->cache_read = json_object_get_boolean(v);
				else
				{
					o->cache_max_age_s = (long) map_duration_seconds(k, v);
					if (o->cache_max_age_s < 0)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("option \"cache\" must not be negative")));
				}
			}
			else if (strcmp(k, "timeout") == 0)
			{
				double		ms = json_object_is_type(v, json_type_string) ?
				map_duration_seconds(k, v) * 1000.0 : (isnum ? json_object_get_double(v) : -1);

				if (ms < 1 || ms > 3600 * 1000.0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"timeout\" must be between 1 ms and 1 hour"),
							 errhint("Give milliseconds as a number or an interval such as '30 seconds'.")));
				o->timeout_ms = (long) ms;
			}
			else if (strcmp(k, "batch") == 0)
			{
				int64		n = json_object_get_int64(v);

				if (!json_object_is_type(v, json_type_int) || n < 1 || n > 1000)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"batch\" must be an integer between 1 and 1000")));
				o->batch = (int) n;
			}
			else if (strcmp(k, "max_retries") == 0 || strcmp(k, "parallel") == 0 ||
					 strcmp(k, "limit") == 0)
			{
				int64		n = json_object_get_int64(v);

				if (!json_object_is_type(v, json_type_int) || n < 0 || n > INT_MAX ||
					(strcmp(k, "parallel") == 0 && (n < 1 || n > 100000)) ||
					(strcmp(k, "max_retries") == 0 && n > 100))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"%s\" must be %s", k,
									strcmp(k, "parallel") == 0 ? "an integer between 1 and 100000" :
									strcmp(k, "max_retries") == 0 ? "an integer between 0 and 100" :
									"a non-negative integer")));
				if (k[0] == 'm')
					o->max_retries = (int) n;
				else if (k[0] == 'p')
					o->parallel = (int) n;
				else
					o->limit = n;
			}
			else if (strcmp(k, "on_error") == 0)
			{
				const char *s = json_object_is_type(v, json_type_null) ? "null" :
				json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";

				if (strcmp(s, "null") == 0)
					o->on_error = RV_ON_ERROR_NULL;
				else if (strcmp(s, "fail") == 0)
					o->on_error = RV_ON_ERROR_FAIL;
				else if (strcmp(s, "value") == 0)
					o->on_error = RV_ON_ERROR_VALUE;
				else
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"on_error\" must be null, fail or value")));
				o->on_error_given = true;
			}
			else if (strcmp(k, "unpack") == 0 || strcmp(k, "infer_schema") == 0)
			{
				if (!json_object_is_type(v, json_type_boolean))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"%s\" must be true or false", k)));
				if (k[0] == 'u')
					o->unpack = json_object_get_boolean(v);
				else
					o->infer_schema = json_object_get_boolean(v);
			}
			else if (strcmp(k, "result_column") == 0)
			{
				if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"result_column\" must be a non-empty string")));
				o->result_column = pstrdup(json_object_get_string(v));
			}
			else if (strcmp(k, "budget_dollars") == 0)
			{
				if (!isnum || json_object_get_double(v) < 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"budget_dollars\" must be a non-negative number")));
				o->budget_dollars = json_object_get_double(v);
			}
			else if (strcmp(k, "dedupe_by") == 0 || strcmp(k, "as_table") == 0)
			{
				if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"%s\" must be a non-empty string", k)));
				if (k[0] == 'd')
					o->dedupe_by = pstrdup(json_object_get_string(v));
				else
					o->as_table = pstrdup(json_object_get_string(v));
			}
			else if (strcmp(k, "async") == 0)
			{
				if (!json_object_is_type(v, json_type_boolean))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"async\" must be true or false")));
				o->async = json_object_get_boolean(v);
			}
			else
				elog(ERROR, "option \"%s\" has no parser", k);
			json_object_iter_next(&it);
		}
	}
}

/*
 * The role whose daily budget a call counts against: the session user,
 * whose ALTER ROLE ... SET settings (rvbbit.budget_dollars_per_day among
 * them) are the ones in force, so SET ROLE or a SECURITY DEFINER function
 * does not give a role a second budget.  A job runner runs as the job's
 * submitting role (the current user it set up), which is then also the
 * session user once the runner connects as that role.
 */
static Oid
map_budget_role(void)
{
	return rv_in_job_runner ? GetUserId() : GetSessionUserId();
}

/* Build the statement header the worker reads (JSON text). */
char *
map_header_json(const char *display, const char *def, const RvOptions *o)
{
	json_object *h = json_object_new_object();
	char	   *out;

	json_object_object_add(h, "cascade", json_object_new_string(display));
	json_object_object_add(h, "definition", json_object_new_string(def));
	json_object_object_add(h, "api_base", json_object_new_string(rv_api_base ? rv_api_base : ""));
	json_object_object_add(h, "api_key", json_object_new_string(map_api_key()));
	json_object_object_add(h, "flavor", json_object_new_int(rv_api_flavor));
	json_object_object_add(h, "default_model", json_object_new_string(rv_default_model ? rv_default_model : ""));
	if (o->model)
		json_object_object_add(h, "model", json_object_new_string(o->model));
	json_object_object_add(h, "timeout_ms", json_object_new_int64(o->timeout_ms));
	json_object_object_add(h, "max_retries", json_object_new_int(o->max_retries));
	json_object_object_add(h, "stall_timeout_ms", json_object_new_int(rv_stall_timeout_ms));
	json_object_object_add(h, "retry_max_delay_ms", json_object_new_int(rv_retry_max_delay_ms));
	json_object_object_add(h, "default_max_tokens", json_object_new_int(rv_default_max_tokens));
	json_object_object_add(h, "cache_read", json_object_new_boolean(o->cache_read));
	json_object_object_add(h, "cache_write", json_object_new_boolean(o->cache_write));
	json_object_object_add(h, "cache_max_age_s", json_object_new_int64(o->cache_max_age_s));
	json_object_object_add(h, "budget_day", json_object_new_double(rv_budget_dollars_per_day));
	json_object_object_add(h, "budget_role", json_object_new_int64(map_budget_role()));
	if (o->budget_dollars >= 0)
		json_object_object_add(h, "budget_dollars", json_object_new_double(o->budget_dollars));
	if (o->batch > 0)
		json_object_object_add(h, "batch", json_object_new_int(o->batch));
	out = pstrdup(json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN));
	json_object_put(h);
	return out;
}
