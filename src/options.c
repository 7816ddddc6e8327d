/*-------------------------------------------------------------------------
 *
 * options.c
 *	  The options of rvbbit.run(), rvbbit.map(), rvbbit._run_rows() and the
 *	  statements' WITH (...) list: one table built from optlist.h, read by
 *	  the JSON parser, the defaults, the options a statement passes on to
 *	  rvbbit.map() and the statement header the worker reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "map.h"
#include "options.h"
#include "rvbbit.h"

/* How an option's value is parsed and written (the type column). */
typedef enum RvOptType
{
	RV_OT_STRING,
	RV_OT_BOOL,
	RV_OT_INT,
	RV_OT_INT64,
	RV_OT_MONEY,
	RV_OT_DURATION_MS,
	RV_OT_CACHE,
	RV_OT_ON_ERROR
} RvOptType;

typedef struct RvOptDef
{
	const char *name;
	RvOptType	type;
	size_t		offset;			/* of its field in RvOptions */
	int64		lo;
	int64		hi;
	uint32		places;			/* RV_AT(RvOptWhere) bits */
	bool		pass;
	const char *header;
} RvOptDef;

#define RV_OPTION(id, name, type, field, lo, hi, dflt, with, places, pass, header) \
	{name, RV_OT_##type, offsetof(RvOptions, field), lo, hi, places, pass, header},
static const RvOptDef rv_option_defs[RV_NOPTIONS] = {
#include "optlist.h"
};
#undef RV_OPTION

#define OPT_FIELD(o, d, ctype) ((ctype *) ((char *) (o) + (d)->offset))
#define OPT_CFIELD(o, d, ctype) ((const ctype *) ((const char *) (o) + (d)->offset))

/* The options of a call that gives none: the dflt column. */
void
rv_default_options(RvOptions *o)
{
	memset(o, 0, sizeof(RvOptions));
#define RV_OPTION(id, name, type, field, lo, hi, dflt, with, places, pass, header) \
	o->field = (dflt);
#include "optlist.h"
#undef RV_OPTION
	o->cache_write = true;
	o->cache_max_age_s = -1;
}

/* Parse a duration given as a number of seconds or an interval string. */
static double
opt_duration_seconds(const char *opt, json_object *v)
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

/* Where options are used, for messages. */
static const char *
opt_place(RvOptWhere where)
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
opt_list(RvOptWhere where)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < RV_NOPTIONS; i++)
		if (rv_option_defs[i].places & RV_AT(where))
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", rv_option_defs[i].name);
	return buf.data;
}

/*
 * Check that an option key is known and applies at where; return its id
 * or raise ERRCODE_INVALID_PARAMETER_VALUE naming it, with a hint listing
 * the options that do apply.
 */
static RvOptId
opt_id(const char *k, RvOptWhere where)
{
	int			i;
	const char *why;

	for (i = 0; i < RV_NOPTIONS; i++)
		if (strcmp(rv_option_defs[i].name, k) == 0)
			break;
	if (i == RV_NOPTIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown option \"%s\"", k),
				 errhint("Valid options for %s are: %s.", opt_place(where), opt_list(where))));
	if (rv_option_defs[i].places & RV_AT(where))
		return (RvOptId) i;

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
			 errmsg("option \"%s\" does not apply to %s", k, opt_place(where)),
			 errdetail("%s", why),
			 errhint("Valid options for %s are: %s.", opt_place(where), opt_list(where))));
	return RV_NOPTIONS;			/* keep compiler quiet */
}

/* cache: false (no reads), true, or the oldest age read, in seconds */
static void
opt_parse_cache(const RvOptDef *d, json_object *v, RvOptions *o)
{
	if (json_object_is_type(v, json_type_boolean))
	{
		o->cache_read = json_object_get_boolean(v);
		return;
	}
	o->cache_max_age_s = (long) opt_duration_seconds(d->name, v);
	if (o->cache_max_age_s < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must not be negative", d->name)));
}

/* milliseconds as a number, or an interval; lo and hi are 1 ms and 1 hour */
static void
opt_parse_duration_ms(const RvOptDef *d, json_object *v, RvOptions *o)
{
	bool		isnum = json_object_is_type(v, json_type_int) ||
		json_object_is_type(v, json_type_double);
	double		ms = json_object_is_type(v, json_type_string) ?
		opt_duration_seconds(d->name, v) * 1000.0 : (isnum ? json_object_get_double(v) : -1);

	if (ms < d->lo || ms > d->hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be between 1 ms and 1 hour", d->name),
				 errhint("Give milliseconds as a number or an interval such as '30 seconds'.")));
	*OPT_FIELD(o, d, long) = (long) ms;
}

static void
opt_parse_on_error(const RvOptDef *d, json_object *v, RvOptions *o)
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
				 errmsg("option \"%s\" must be null, fail or value", d->name)));
}

/* an integer between lo and hi; [0, INT_MAX] reads "a non-negative integer" */
static void
opt_parse_integer(const RvOptDef *d, json_object *v, RvOptions *o)
{
	int64		n = json_object_get_int64(v);

	if (!json_object_is_type(v, json_type_int) || n < d->lo || n > d->hi)
	{
		if (d->lo == 0 && d->hi == INT_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" must be a non-negative integer", d->name)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be an integer between %lld and %lld", d->name,
						(long long) d->lo, (long long) d->hi)));
	}
	if (d->type == RV_OT_INT)
		*OPT_FIELD(o, d, int) = (int) n;
	else
		*OPT_FIELD(o, d, int64) = n;
}

/* One option's value into o, by its type. */
static void
opt_parse_value(const RvOptDef *d, json_object *v, RvOptions *o)
{
	switch (d->type)
	{
		case RV_OT_STRING:
			if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"%s\" must be a non-empty string", d->name)));
			*OPT_FIELD(o, d, char *) = pstrdup(json_object_get_string(v));
			break;
		case RV_OT_BOOL:
			if (!json_object_is_type(v, json_type_boolean))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"%s\" must be true or false", d->name)));
			*OPT_FIELD(o, d, bool) = json_object_get_boolean(v);
			break;
		case RV_OT_INT:
		case RV_OT_INT64:
			opt_parse_integer(d, v, o);
			break;
		case RV_OT_MONEY:
			if (!(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) ||
				json_object_get_double(v) < 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"%s\" must be a non-negative number", d->name)));
			*OPT_FIELD(o, d, double) = json_object_get_double(v);
			break;
		case RV_OT_DURATION_MS:
			opt_parse_duration_ms(d, v, o);
			break;
		case RV_OT_CACHE:
			opt_parse_cache(d, v, o);
			break;
		case RV_OT_ON_ERROR:
			opt_parse_on_error(d, v, o);
			break;
	}
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
 * (opt_id).  The caller frees obj.
 */
void
rv_parse_options_json(json_object *obj, RvOptions *o, RvOptWhere where)
{
	struct json_object_iterator it = json_object_iter_begin(obj);
	struct json_object_iterator end = json_object_iter_end(obj);

	while (!json_object_iter_equal(&it, &end))
	{
		RvOptId		id = opt_id(json_object_iter_peek_name(&it), where);

		o->given |= RV_OPT_BIT(id);
		opt_parse_value(&rv_option_defs[id], json_object_iter_peek_value(&it), o);
		json_object_iter_next(&it);
	}
}

/*
 * Add option d of o to obj under key, when it is set: a string that is
 * there, a true bool, a number at least lo; the others always.  header:
 * for the worker's header rather than for rvbbit.map().
 */
static void
opt_add_json(json_object *obj, const char *key, const RvOptDef *d, const RvOptions *o,
			 bool header)
{
	json_object *v = NULL;

	switch (d->type)
	{
		case RV_OT_STRING:
			if (*OPT_CFIELD(o, d, char *))
				v = json_object_new_string(*OPT_CFIELD(o, d, char *));
			break;
		case RV_OT_BOOL:
			if (*OPT_CFIELD(o, d, bool))
				v = json_object_new_boolean(true);
			break;
		case RV_OT_INT:
			if (*OPT_CFIELD(o, d, int) >= d->lo)
				v = json_object_new_int(*OPT_CFIELD(o, d, int));
			break;
		case RV_OT_INT64:
			if (*OPT_CFIELD(o, d, int64) >= d->lo)
				v = json_object_new_int64(*OPT_CFIELD(o, d, int64));
			break;
		case RV_OT_MONEY:
			if (*OPT_CFIELD(o, d, double) >= d->lo)
				v = json_object_new_double(*OPT_CFIELD(o, d, double));
			break;
		case RV_OT_DURATION_MS:
			v = json_object_new_int64(*OPT_CFIELD(o, d, long));
			break;
		case RV_OT_ON_ERROR:
			v = json_object_new_string(o->on_error == RV_ON_ERROR_FAIL ? "fail" :
									   o->on_error == RV_ON_ERROR_VALUE ? "value" : "null");
			break;
		case RV_OT_CACHE:
			/* as options: false, or an age; the worker gets all three */
			if (header)
			{
				json_object_object_add(obj, "cache_read", json_object_new_boolean(o->cache_read));
				json_object_object_add(obj, "cache_write", json_object_new_boolean(o->cache_write));
				json_object_object_add(obj, "cache_max_age_s", json_object_new_int64(o->cache_max_age_s));
			}
			else if (!o->cache_read)
				v = json_object_new_boolean(false);
			else if (o->cache_max_age_s >= 0)
				v = json_object_new_int64(o->cache_max_age_s);
			break;
	}
	if (v)
		json_object_object_add(obj, key, v);
}

/*
 * The options a planned statement passes on to rvbbit.map() or
 * rvbbit._run_rows() (the pass column), added to obj.
 */
void
rv_options_pass_json(const RvOptions *o, json_object *obj)
{
	int			i;

	for (i = 0; i < RV_NOPTIONS; i++)
		if (rv_option_defs[i].pass)
			opt_add_json(obj, rv_option_defs[i].name, &rv_option_defs[i], o, false);
}

/*
 * The role whose daily budget a call counts against: the session user,
 * whose ALTER ROLE ... SET settings (rvbbit.budget_dollars_per_day among
 * them) are the ones in force, so SET ROLE or a SECURITY DEFINER function
 * does not give a role a second budget.  A job runner connects as the
 * session user that submitted the job (jobs_runner.c), so a job counts
 * against that session user too, whatever role it runs as.
 */
static Oid
opt_budget_role(void)
{
	return GetSessionUserId();
}

/*
 * Build the statement header the worker reads (JSON text): the settings
 * in force, and the options with a header column.
 */
char *
rv_header_json(const char *display, const char *def, const RvOptions *o, int parallel)
{
	json_object *h = json_object_new_object();
	char	   *out;
	int			i;

	json_object_object_add(h, "cascade", json_object_new_string(display));
	json_object_object_add(h, "definition", json_object_new_string(def));
	json_object_object_add(h, "api_base", json_object_new_string(rv_api_base ? rv_api_base : ""));
	json_object_object_add(h, "api_key", json_object_new_string(map_api_key()));
	json_object_object_add(h, "flavor", json_object_new_int(rv_api_flavor));
	json_object_object_add(h, "default_model", json_object_new_string(rv_default_model ? rv_default_model : ""));
	json_object_object_add(h, "stall_timeout_ms", json_object_new_int(rv_stall_timeout_ms));
	json_object_object_add(h, "retry_max_delay_ms", json_object_new_int(rv_retry_max_delay_ms));
	json_object_object_add(h, "default_max_tokens", json_object_new_int(rv_default_max_tokens));
	json_object_object_add(h, "budget_day", json_object_new_double(rv_budget_dollars_per_day));
	json_object_object_add(h, "budget_role", json_object_new_int64(opt_budget_role()));
	/* the worker starts at most this many of the statement's tasks at once */
	json_object_object_add(h, "parallel", json_object_new_int(parallel));
	for (i = 0; i < RV_NOPTIONS; i++)
		if (rv_option_defs[i].header)
			opt_add_json(h, rv_option_defs[i].header, &rv_option_defs[i], o, true);
	out = pstrdup(json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN));
	json_object_put(h);
	return out;
}
