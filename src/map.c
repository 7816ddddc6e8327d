/*-------------------------------------------------------------------------
 *
 * map.c
 *	  The backend side of running cascades: cascade resolution, options,
 *	  rvbbit.run(), the rvbbit.map() set-returning function, the cascade
 *	  registry functions and the progress function.
 *
 * rvbbit.map() reads its input query through an SPI cursor in batches,
 * with the caller's privileges, and streams rows to an rvbbit worker over
 * the statement channel (channel.c), keeping at most `parallel` rows in
 * flight.  Results come back in completion order and wait in a reorder
 * window until every earlier row is done; rows leave the window in input
 * order, one per map_step() call: the custom scan (mapscan.c) returns
 * each to the executor as it leaves, rvbbit.map() and rvbbit.sql() called
 * as plain functions put them into their output tuplestore, which spills
 * to disk.  The input cursor is fetched from with SPI connected only for
 * the fetch, so the scan can return between rows.  The window is
 * bounded (2 x parallel + 16 rows), so backend memory does not grow with
 * the number of input rows.  Identical inputs in flight at the same time
 * are sent once and the result is fanned out; the worker's cache answers
 * identical inputs that come later.
 *
 * rvbbit.run() is the same machinery over one input row.
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

PG_FUNCTION_INFO_V1(rvbbit_run);
PG_FUNCTION_INFO_V1(rvbbit_map);
PG_FUNCTION_INFO_V1(rvbbit_sql);
PG_FUNCTION_INFO_V1(rvbbit_run_rows);
PG_FUNCTION_INFO_V1(rvbbit_create_cascade);
PG_FUNCTION_INFO_V1(rvbbit_drop_cascade);
PG_FUNCTION_INFO_V1(rvbbit_progress);
PG_FUNCTION_INFO_V1(rvbbit_validate_cascade);
PG_FUNCTION_INFO_V1(rvbbit_cascade_name);

#define MAP_FETCH_BATCH 500
#define MAX_CASCADE_FILE (4 * 1024 * 1024)

/* ----------------------------------------------------------------
 * Cascade resolution
 * ----------------------------------------------------------------
 */

/*
 * rv_cascade_name: the normalised form of a cascade name (the rule is
 * rv_cascade_name_normalize() in cascade.c), palloc'd in the current
 * context.  Raises ERRCODE_INVALID_NAME for a name the rule refuses.
 * Every use of a name (create, drop, registry lookup, files) goes through
 * here, so a name finds what was created under it.
 */
char *
rv_cascade_name(const char *name)
{
	char		out[RV_CASCADE_NAME_BUF];
	RvError		err;

	rv_error_clear(&err);
	if (!rv_cascade_name_normalize(name, out, &err))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s", err.message),
				 err.detail[0] ? errdetail("%s", err.detail) : 0,
				 errhint("A cascade name is relative, like \"traits/extract_brand.yaml\"; "
						 "a \".yaml\" or \".yml\" suffix is optional.")));
	return pstrdup(out);
}

/*
 * Read dir/name[.yaml|.yml] if it exists and its real path stays inside
 * dir (symlinks out of the directory are refused).  name is normalised
 * (rv_cascade_name), so it is relative and has no ".." component.
 * Returns palloc'd text or NULL when there is no such file.
 */
static char *
map_read_cascade_file(const char *dir, const char *name, bool *refused)
{
	static const char *const suffixes[] = {"", ".yaml", ".yml"};
	char		realdir[PATH_MAX];
	int			i;

	*refused = false;
	if (dir == NULL || dir[0] == '\0')
		return NULL;
	if (realpath(dir, realdir) == NULL)
		return NULL;

	for (i = 0; i < (int) lengthof(suffixes); i++)
	{
		char	   *path = psprintf("%s/%s%s", dir, name, suffixes[i]);
		char		real[PATH_MAX];
		size_t		dl = strlen(realdir);
		struct stat st;
		FILE	   *f;
		char	   *buf;
		size_t		n;

		if (realpath(path, real) == NULL)
			continue;
		if (strncmp(real, realdir, dl) != 0 || real[dl] != '/')
		{
			*refused = true;
			return NULL;
		}
		if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (st.st_size > MAX_CASCADE_FILE)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("cascade file \"%s\" is too large", path)));
		f = AllocateFile(real, "r");
		if (f == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not open cascade file \"%s\": %m", path)));
		buf = palloc(st.st_size + 1);
		n = fread(buf, 1, st.st_size, f);
		FreeFile(f);
		buf[n] = '\0';
		return buf;
	}
	return NULL;
}

/* The directory of the example cascades shipped with the extension. */
static char *
map_examples_dir(void)
{
	char		share[MAXPGPATH];

	get_share_path(my_exec_path, share);
	return psprintf("%s/extension/rvbbit_cascades", share);
}

/*
 * Resolve a cascade reference to its YAML text: the registry
 * rvbbit.cascades, then rvbbit.cascade_path, then the shipped examples,
 * then an inline definition.  *display is set to a short name for logs and
 * call records.
 */
char *
rv_resolve_cascade(const char *ref, char **display)
{
	char	   *def = NULL;
	char	   *name;
	bool		refused = false;
	bool		refused2 = false;

	if (rv_cascade_is_inline(ref))
	{
		RvError		err;
		RvCascade  *c;

		rv_error_clear(&err);
		c = rv_cascade_parse(ref, strlen(ref), &err);
		*display = pstrdup(c && c->cascade_id ? c->cascade_id : "inline");
		if (c)
			rv_cascade_free(c);
		return pstrdup(ref);
	}

	name = rv_cascade_name(ref);
	*display = pstrdup(name);

	/* the registry */
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		args[1];

		SPI_connect();
		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT definition FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v)
			{
				def = SPI_palloc(strlen(v) + 1);
				strcpy(def, v);
			}
		}
		SPI_finish();
	}
	if (def)
		return def;

	def = map_read_cascade_file(rv_cascade_path, name, &refused);
	if (def)
		return def;
	def = map_read_cascade_file(map_examples_dir(), name, &refused2);
	if (def)
		return def;
	if (refused || refused2)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cascade name \"%s\" is not allowed", ref),
				 errdetail("A cascade file must stay inside its directory."),
				 errhint("Remove links that point outside the directory.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("cascade \"%s\" does not exist", ref),
			 errhint("Create it with rvbbit.create_cascade(), put %s.yaml under rvbbit.cascade_path, "
					 "or pass an inline YAML definition with a \"cells:\" list.", name)));
	return NULL;				/* keep compiler quiet */
}

/*
 * Parse and check a cascade definition; raise a user-facing error with the
 * YAML line and column when it is invalid.  Returns the parsed cascade
 * (caller frees with rv_cascade_free).
 */
RvCascade *
rv_check_cascade(const char *display, const char *def)
{
	RvError		err;
	RvCascade  *c;
	int			i;

	rv_error_clear(&err);
	c = rv_cascade_parse(def, strlen(def), &err);
	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cascade \"%s\": %s", display, err.message),
				 err.line > 0 ? errdetail("At line %d, column %d of the definition.%s%s",
										  err.line, err.column,
										  err.detail[0] ? " " : "", err.detail) :
				 (err.detail[0] ? errdetail("%s", err.detail) : 0),
				 err.hint[0] ? errhint("%s", err.hint) : 0));
	for (i = 0; i < c->ncells; i++)
		if (c->cells[i].candidates > 1)
		{
			char	   *cell = pstrdup(c->cells[i].name);

			rv_cascade_free(c);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cascade \"%s\": candidates are not supported yet (cell \"%s\")",
							display, cell),
					 errhint("Remove the candidates (takes, soundings) section of the cell.")));
		}
	return c;
}

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

/* The API key of the default provider: the GUC, else the environment. */
static const char *
map_api_key(void)
{
	const char *k;

	if (rv_api_key && rv_api_key[0])
		return rv_api_key;
	k = getenv("RVBBIT_API_KEY");
	if (k && k[0])
		return k;
	k = getenv(rv_api_flavor == 1 ? "ANTHROPIC_API_KEY" : "OPENROUTER_API_KEY");
	if (k && k[0])
		return k;
	if (rv_api_flavor == 0)
	{
		k = getenv("OPENAI_API_KEY");
		if (k && k[0])
			return k;
	}
	return "";
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
static char *
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

/* ----------------------------------------------------------------
 * The executor shared by run and map
 * ----------------------------------------------------------------
 */

/* How a row ended: its result, or its error. */
typedef struct MapOutcome
{
	bool		failed;
	int			sqlstate;
	char	   *result;			/* JSON text of the result */
	char	   *error;			/* the error message of a failed row */
	char	   *error_detail;
} MapOutcome;

typedef struct MapSlot
{
	bool		used;
	bool		done;
	int64		leader;			/* seq of the row this one copies, or -1 */
	int			nfollowers;
	uint64		hash;
	HeapTuple	input;			/* map: the input row */
	char	   *scope;			/* the JSON to send, until sent */
	char	   *dkey;			/* what identical rows are recognised by */
	MapOutcome	oc;
} MapSlot;

typedef struct DedupEntry
{
	uint64		hash;			/* key */
	int64		seq;
} DedupEntry;

/* dedupe_by: the outcome of a finished key, fanned out to later rows */
typedef struct MemoEntry
{
	uint64		hash;			/* key */
	char	   *dkey;
	MapOutcome	oc;
} MemoEntry;

/* Row supplier: fills *scope (the JSON scope) and *tuple; false at the end. */
typedef bool (*MapNextRow) (void *arg, StringInfo scope, HeapTuple *tuple);
/* Row consumer: called in input order. */
typedef void (*MapEmitRow) (void *arg, MapSlot *slot);

typedef struct MapExec
{
	RvChannel  *ch;
	int			parallel;
	int			window;
	MapSlot    *slots;
	HTAB	   *dedup;			/* rows in flight, by dkey hash */
	HTAB	   *memo;			/* dedupe_by: finished outcomes, by dkey hash */
	const char *next_key;		/* dedupe_by: the key of the row just read */
	double		spent;			/* dollars, from the results so far */
	bool		over_budget;
	bool		stopped_early;	/* input left unread because of the budget */
	int64		nrefused;		/* rows whose call a budget refused */
	int			refused_flags;	/* RV_RESULT_BUDGET_* seen */
	char	   *day_error;		/* the first daily-budget refusal: message, */
	char	   *day_detail;		/* detail and hint */
	char	   *day_hint;
	MemoryContext cxt;			/* window data */
	const RvOptions *opts;
	int64		nrows;
	int64		nfailed;
	int64		ncached;
	char	   *first_error;
	char	   *first_error_detail;
	int			first_sqlstate;
	/* == stream: the state of the incremental loop (map_step) == */
	MapNextRow	next_row;
	void	   *next_arg;
	int64		next_seq;		/* rows read */
	int64		emitted;		/* rows handed out */
	int			inflight;		/* rows sent and not answered */
	bool		input_eof;
	bool		end_sent;
	bool		need_send;		/* the last row read waits to be sent */
	bool		finished;		/* every row handed out */
	StringInfoData scope;
	StringInfoData bbuf;		/* MAP BATCH: the batch being filled */
	uint32		bk;				/* rows in it */
	bool		batch_ready;
	int			batch;
	int			max_inflight;
	MapSlot    *returned;		/* handed out by map_step, cleared at the next call */
	RvMapCounters counters;		/* EXPLAIN ANALYZE */
	/* == end stream == */
} MapExec;

/* Free a slot's data. */
static void
map_slot_clear(MapSlot *s)
{
	if (s->input)
		heap_freetuple(s->input);
	if (s->scope)
		pfree(s->scope);
	if (s->dkey)
		pfree(s->dkey);
	if (s->oc.result)
		pfree(s->oc.result);
	if (s->oc.error)
		pfree(s->oc.error);
	if (s->oc.error_detail)
		pfree(s->oc.error_detail);
	memset(s, 0, sizeof(MapSlot));
}

/* Copy a finished slot's outcome into a follower. */
static void
map_outcome_copy(MemoryContext cxt, const MapOutcome *from, MapOutcome *to)
{
	to->failed = from->failed;
	to->sqlstate = from->sqlstate;
	to->result = from->result ? MemoryContextStrdup(cxt, from->result) : NULL;
	to->error = from->error ? MemoryContextStrdup(cxt, from->error) : NULL;
	to->error_detail = from->error_detail ? MemoryContextStrdup(cxt, from->error_detail) : NULL;
}

/* A follower row gets its leader's outcome. */
static void
map_copy_outcome(MapExec *ex, MapSlot *from, MapSlot *to)
{
	to->done = true;
	map_outcome_copy(ex->cxt, &from->oc, &to->oc);
}

/* Remember a finished key's outcome (dedupe_by). */
static void
map_memo_store(MapExec *ex, MapSlot *s)
{
	bool		found;
	MemoEntry  *m;

	if (ex->memo == NULL)
		return;
	m = hash_search(ex->memo, &s->hash, HASH_ENTER, &found);
	if (found)
		return;
	m->dkey = MemoryContextStrdup(ex->cxt->parent, s->dkey);
	map_outcome_copy(ex->cxt->parent, &s->oc, &m->oc);
}

/*
 * Handle one message from the worker: fill the row's slot (and those of
 * the rows waiting for the same input), update the counters.
 */
static void
map_handle_message(MapExec *ex, char *data, Size len)
{
	int64		next_seq = ex->next_seq;
	int64		emitted = ex->emitted;
	RvResultHead head;
	MapSlot    *s;
	MemoryContext old;
	char		type = data[0];

	if (type == RV_MSG_FATAL)
		rv_channel_raise(data, len, ERROR);
	if ((type != RV_MSG_RESULT && type != RV_MSG_ROWERR) || len < 1 + sizeof(head))
		elog(ERROR, "unexpected message from rvbbit worker");
	memcpy(&head, data + 1, sizeof(head));
	if (head.seq < emitted || head.seq >= next_seq)
		elog(ERROR, "rvbbit worker returned row %lld outside the window",
			 (long long) head.seq);
	s = &ex->slots[head.seq % ex->window];
	if (s->done)
		return;
	ex->inflight--;
	rv_map_counters_add(&ex->counters, &head);
	if (ex->ch->progress)
	{
		pg_atomic_fetch_add_u64(&ex->ch->progress->rows_done, 1 + s->nfollowers);
		if (type == RV_MSG_ROWERR)
			pg_atomic_fetch_add_u64(&ex->ch->progress->rows_failed, 1 + s->nfollowers);
	}
	if (head.cache_hits > 0 && head.llm_calls == 0)
		ex->ncached++;
	ex->spent += head.cost;
	if (ex->opts->budget_dollars >= 0 && ex->spent >= ex->opts->budget_dollars)
		ex->over_budget = true;

	if (type == RV_MSG_ROWERR)
	{
		const char *msg = data + 1 + sizeof(head);
		const char *detail = msg + strnlen(msg, data + len - msg) + 1;

		if (head.flags & (RV_RESULT_BUDGET_STMT | RV_RESULT_BUDGET_DAY))
		{
			/* a budget refused the call: schedule nothing more, fail at the end */
			ex->over_budget = true;
			ex->nrefused += 1 + s->nfollowers;
			ex->refused_flags |= head.flags;
			if ((head.flags & RV_RESULT_BUDGET_DAY) && ex->day_error == NULL)
			{
				const char *hint = detail < data + len ?
					detail + strnlen(detail, data + len - detail) + 1 : data + len;

				old = MemoryContextSwitchTo(ex->cxt->parent);
				ex->day_error = pstrdup(msg);
				ex->day_detail = detail < data + len ? pnstrdup(detail, data + len - detail) : NULL;
				ex->day_hint = hint < data + len ? pnstrdup(hint, data + len - hint) : NULL;
				MemoryContextSwitchTo(old);
			}
		}
		else if (ex->opts->on_error == RV_ON_ERROR_FAIL)
			rv_channel_raise(data, len, ERROR);
		old = MemoryContextSwitchTo(ex->cxt);
		s->oc.failed = true;
		s->oc.sqlstate = head.sqlstate;
		s->oc.error = pstrdup(msg);
		s->oc.error_detail = detail < data + len ? pstrdup(detail) : NULL;
		MemoryContextSwitchTo(old);
		if (ex->first_error == NULL)
		{
			old = MemoryContextSwitchTo(ex->cxt->parent);
			ex->first_error = pstrdup(msg);
			ex->first_error_detail = s->oc.error_detail ? pstrdup(s->oc.error_detail) : NULL;
			ex->first_sqlstate = head.sqlstate;
			MemoryContextSwitchTo(old);
		}
	}
	else
	{
		old = MemoryContextSwitchTo(ex->cxt);
		s->oc.result = pstrdup(data + 1 + sizeof(head));
		MemoryContextSwitchTo(old);
	}
	s->done = true;
	map_memo_store(ex, s);
	if (ex->dedup)
	{
		bool		found;
		DedupEntry *e = hash_search(ex->dedup, &s->hash, HASH_FIND, &found);

		if (found && e->seq == head.seq)
			hash_search(ex->dedup, &s->hash, HASH_REMOVE, NULL);
	}
	if (s->nfollowers > 0)
	{
		int64		q;

		for (q = head.seq + 1; q < next_seq; q++)
		{
			MapSlot    *f = &ex->slots[q % ex->window];

			if (f->leader == head.seq && !f->done)
				map_copy_outcome(ex, s, f);
		}
	}
}

/* == stream: the incremental executor == */

/*
 * Get ready to pull rows from next_row (called once, before map_step).
 */
static void
map_exec_start(MapExec *ex, MapNextRow next_row, void *arg)
{
	HASHCTL		hctl;
	MemoryContext old = MemoryContextSwitchTo(ex->cxt->parent);

	ex->next_row = next_row;
	ex->next_arg = arg;
	ex->batch = ex->opts->batch > 0 ? ex->opts->batch : 0;
	ex->max_inflight = ex->parallel * (ex->batch > 0 ? ex->batch : 1);
	initStringInfo(&ex->scope);
	initStringInfo(&ex->bbuf);
	MemoryContextSwitchTo(old);
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(uint64);
	hctl.entrysize = sizeof(DedupEntry);
	hctl.hcxt = ex->cxt;
	ex->dedup = hash_create("rvbbit map dedup", Max(64, ex->window), &hctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (ex->opts->dedupe_by)
	{
		hctl.entrysize = sizeof(MemoEntry);
		hctl.hcxt = ex->cxt->parent;
		ex->memo = hash_create("rvbbit map dedupe_by", 1024, &hctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
}

/*
 * Read input rows and send them while the window and PARALLEL allow.
 * Sets *progress when something moved.
 */
static void
map_fill(MapExec *ex, bool *progress)
{
	MapNextRow	next_row = ex->next_row;
	void	   *arg = ex->next_arg;
	int			batch = ex->batch;

	while (!ex->input_eof)
	{
		MapSlot    *s;

		if (ex->need_send)
		{
			s = &ex->slots[(ex->next_seq - 1) % ex->window];
			if (!rv_channel_try_send(ex->ch, RV_MSG_ROW, ex->next_seq - 1,
									 s->scope, strlen(s->scope) + 1))
				break;
			pfree(s->scope);
			s->scope = NULL;
			ex->need_send = false;
			ex->inflight++;
			*progress = true;
			continue;
		}
		if (ex->batch_ready)
		{
			memcpy(ex->bbuf.data, &ex->bk, sizeof(uint32));
			if (!rv_channel_try_send(ex->ch, RV_MSG_BATCH, 0, ex->bbuf.data, ex->bbuf.len))
				break;
			ex->inflight += ex->bk;
			ex->bk = 0;
			ex->batch_ready = false;
			*progress = true;
			continue;
		}
		if (ex->next_seq - ex->emitted >= ex->window)
		{
			/* the reorder window is full: send what the batch has */
			if (ex->bk > 0)
			{
				ex->batch_ready = true;
				continue;
			}
			break;
		}
		/* a new request only when it fits: a whole batch, or one row */
		if (ex->bk == 0 && ex->inflight + Max(batch, 1) > ex->max_inflight)
			break;
		/* budget_dollars: schedule nothing more once the spend reached it */
		if (ex->over_budget)
		{
			HeapTuple	dummy = NULL;

			resetStringInfo(&ex->scope);
			ex->stopped_early = next_row(arg, &ex->scope, &dummy);
			ex->input_eof = true;
			break;
		}

		{
			HeapTuple	tup = NULL;
			MemoryContext old;
			bool		found;
			DedupEntry *e;
			int64		next_seq = ex->next_seq;

			resetStringInfo(&ex->scope);
			if (!next_row(arg, &ex->scope, &tup))
			{
				ex->input_eof = true;
				break;
			}
			s = &ex->slots[next_seq % ex->window];
			old = MemoryContextSwitchTo(ex->cxt);
			s->used = true;
			s->leader = -1;
			s->input = tup ? heap_copytuple(tup) : NULL;
			s->scope = pstrdup(ex->scope.data);
			s->dkey = pstrdup(ex->memo ? (ex->next_key ? ex->next_key : "") : ex->scope.data);
			MemoryContextSwitchTo(old);
			s->hash = hash_bytes_extended((const unsigned char *) s->dkey, strlen(s->dkey), 0);
			ex->nrows++;
			if (ex->ch->progress)
				pg_atomic_fetch_add_u64(&ex->ch->progress->rows_read, 1);

			/* dedupe_by: a key that already finished */
			if (ex->memo)
			{
				MemoEntry  *m = hash_search(ex->memo, &s->hash, HASH_FIND, &found);

				if (found && strcmp(m->dkey, s->dkey) == 0)
				{
					s->done = true;
					map_outcome_copy(ex->cxt, &m->oc, &s->oc);
					/* answered from the memo: done (or failed) now */
					if (ex->ch->progress)
					{
						pg_atomic_fetch_add_u64(&ex->ch->progress->rows_done, 1);
						if (s->oc.failed)
							pg_atomic_fetch_add_u64(&ex->ch->progress->rows_failed, 1);
					}
					pfree(s->scope);
					s->scope = NULL;
					ex->next_seq++;
					*progress = true;
					continue;
				}
			}

			/* the same input already in flight */
			e = hash_search(ex->dedup, &s->hash, HASH_ENTER, &found);
			if (found)
			{
				MapSlot    *l = &ex->slots[e->seq % ex->window];

				if (e->seq >= ex->emitted && !l->done && l->dkey &&
					strcmp(l->dkey, s->dkey) == 0)
				{
					s->leader = e->seq;
					l->nfollowers++;
					pfree(s->scope);
					s->scope = NULL;
					ex->next_seq++;
					*progress = true;
					continue;
				}
			}
			e->seq = next_seq;
			if (batch > 0)
			{
				uint32		n = (uint32) strlen(s->scope);

				if (ex->bk == 0)
				{
					resetStringInfo(&ex->bbuf);
					appendBinaryStringInfo(&ex->bbuf, (char *) &ex->bk, sizeof(uint32));
				}
				appendBinaryStringInfo(&ex->bbuf, (char *) &next_seq, sizeof(int64));
				appendBinaryStringInfo(&ex->bbuf, (char *) &n, sizeof(uint32));
				appendBinaryStringInfo(&ex->bbuf, s->scope, n);
				pfree(s->scope);
				s->scope = NULL;
				ex->next_seq++;
				if (++ex->bk >= (uint32) batch)
					ex->batch_ready = true;
				continue;
			}
			ex->next_seq++;
			ex->need_send = true;
		}
	}
	/* the last, partly filled batch */
	if (ex->input_eof && ex->bk > 0)
	{
		memcpy(ex->bbuf.data, &ex->bk, sizeof(uint32));
		if (rv_channel_try_send(ex->ch, RV_MSG_BATCH, 0, ex->bbuf.data, ex->bbuf.len))
		{
			ex->inflight += ex->bk;
			ex->bk = 0;
			ex->batch_ready = false;
			*progress = true;
		}
	}
	if (ex->input_eof && !ex->need_send && ex->bk == 0 && !ex->end_sent)
	{
		if (rv_channel_try_send(ex->ch, RV_MSG_END, 0, NULL, 0))
		{
			ex->end_sent = true;
			*progress = true;
		}
	}
}

/*
 * The next row in input order, once it and every row before it are done;
 * NULL after the last.  Input is read and sent only as far as the window
 * and PARALLEL allow, and only while the caller asks for rows, so a
 * consumer that stops calling (a LIMIT, a cursor that is not fetched
 * from) stops the scheduling of new calls.  The slot returned stays valid
 * until the next call.
 */
static MapSlot *
map_step(MapExec *ex)
{
	if (ex->returned)
	{
		map_slot_clear(ex->returned);
		ex->returned = NULL;
		ex->emitted++;
	}
	if (ex->finished)
		return NULL;

	for (;;)
	{
		bool		progress = false;
		char	   *data;
		Size		len;

		/* a row ready in input order leaves at once */
		if (ex->emitted < ex->next_seq && ex->slots[ex->emitted % ex->window].done)
		{
			MapSlot    *s = &ex->slots[ex->emitted % ex->window];

			if (s->oc.failed)
				ex->nfailed++;
			ex->returned = s;
			return s;
		}
		if (ex->input_eof && ex->end_sent && ex->emitted == ex->next_seq)
		{
			ex->finished = true;
			return NULL;
		}

		map_fill(ex, &progress);

		/* take what the worker finished */
		while (rv_channel_try_receive(ex->ch, &data, &len))
		{
			map_handle_message(ex, data, len);
			progress = true;
		}
		if (progress)
			continue;
		if (ex->ch->worker_done)
			rv_channel_worker_exited();
		rv_channel_wait(ex->ch);
	}
}

/*
 * Stop early (a LIMIT, a closed cursor): schedule nothing more, and wait
 * for the calls in flight so that their results reach the cache; their
 * rows are dropped.  Not done outside a normal transaction state (commit,
 * abort), where the channel is simply closed.
 */
static void
map_exec_drain(MapExec *ex)
{
	char	   *data;
	Size		len;

	if (ex->returned)
	{
		map_slot_clear(ex->returned);
		ex->returned = NULL;
		ex->emitted++;
	}
	if (ex->finished || ex->ch->seg == NULL || ex->ch->worker_done ||
		!IsTransactionState())
		return;
	/* the partial batch is dropped: it was never sent */
	ex->bk = 0;
	ex->batch_ready = false;
	if (ex->need_send)
	{
		MapSlot    *s = &ex->slots[(ex->next_seq - 1) % ex->window];

		/* a row read but not sent yet: it is not sent */
		if (s->scope)
		{
			pfree(s->scope);
			s->scope = NULL;
		}
		ex->need_send = false;
	}
	while (!ex->end_sent)
	{
		if (rv_channel_try_send(ex->ch, RV_MSG_END, 0, NULL, 0))
			ex->end_sent = true;
		else
			rv_channel_wait(ex->ch);
	}
	while (ex->inflight > 0 && !ex->ch->worker_done)
	{
		bool		got = false;

		while (rv_channel_try_receive(ex->ch, &data, &len))
		{
			RvResultHead head;

			got = true;
			if (len < 1 + sizeof(head) || (data[0] != RV_MSG_RESULT && data[0] != RV_MSG_ROWERR))
				return;
			memcpy(&head, data + 1, sizeof(head));
			if (head.seq >= ex->emitted && head.seq < ex->next_seq &&
				!ex->slots[head.seq % ex->window].done)
			{
				ex->slots[head.seq % ex->window].done = true;
				ex->inflight--;
				rv_map_counters_add(&ex->counters, &head);
				ex->spent += head.cost;
			}
		}
		if (!got)
			rv_channel_wait(ex->ch);
	}
}

/*
 * Run the statement to the end: pull rows from next_row, keep up to
 * `parallel` in flight, hand finished rows to emit in input order.
 */
static void
map_execute(MapExec *ex, MapNextRow next_row, MapEmitRow emit, void *arg)
{
	MapSlot    *s;

	map_exec_start(ex, next_row, arg);
	while ((s = map_step(ex)) != NULL)
		emit(arg, s);
}

/* == end stream == */

/* Set up the executor for a statement. */
static void
map_exec_init(MapExec *ex, const char *kind, const char *display,
			  const char *def, const RvOptions *opts, int parallel)
{
	char	   *hdr = map_header_json(display, def, opts);

	memset(ex, 0, sizeof(MapExec));
	ex->opts = opts;
	ex->parallel = parallel;
	ex->window = 2 * parallel * Max(opts->batch, 1) + 16;
	ex->cxt = AllocSetContextCreate(CurrentMemoryContext, "rvbbit map window",
									ALLOCSET_DEFAULT_SIZES);
	ex->slots = MemoryContextAllocZero(ex->cxt, sizeof(MapSlot) * ex->window);
	ex->ch = rv_channel_open(kind, display, parallel, hdr);
	pfree(hdr);
}

/* Finish: close the channel and warn about failed rows. */
static void
map_exec_finish(MapExec *ex, bool warn)
{
	rv_channel_close(ex->ch);
	if (ex->refused_flags & RV_RESULT_BUDGET_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s", ex->day_error ? ex->day_error : "daily budget reached"),
				 ex->day_detail && ex->day_detail[0] ? errdetail("%s", ex->day_detail) : 0,
				 ex->day_hint && ex->day_hint[0] ? errhint("%s", ex->day_hint) : 0));
	if ((ex->refused_flags & RV_RESULT_BUDGET_STMT) || (ex->over_budget && ex->stopped_early))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("budget of $%.4f reached: spent $%.4f, %lld rows done",
						ex->opts->budget_dollars, ex->spent, (long long) (ex->nrows - ex->nrefused)),
				 errdetail("The rows done are cached, so running the statement again pays only for the rest."),
				 errhint("Raise budget_dollars, or add a LIMIT to the USING query.")));
	if (warn && ex->nfailed > 0)
		ereport(WARNING,
				(errcode(ex->first_sqlstate ? ex->first_sqlstate : ERRCODE_WARNING),
				 errmsg("%lld of %lld rows failed and returned NULL",
						(long long) ex->nfailed, (long long) ex->nrows),
				 ex->first_error_detail && ex->first_error_detail[0] ?
				 errdetail("The first error was: %s. %s", ex->first_error, ex->first_error_detail) :
				 errdetail("The first error was: %s.", ex->first_error ? ex->first_error : "?"),
				 errhint("Query rvbbit.calls for each call's error, or use on_error => 'fail' to stop at the first one.")));
	MemoryContextDelete(ex->cxt);
}

/* The jsonb value of a finished slot by on_error mode; *isnull if NULL. */
static Datum
map_slot_value(MapExec *ex, MapSlot *s, bool *isnull)
{
	*isnull = false;
	if (!s->oc.failed)
		return DirectFunctionCall1(jsonb_in, CStringGetDatum(s->oc.result));
	if (ex->opts->on_error == RV_ON_ERROR_VALUE)
	{
		json_object *o = json_object_new_object();
		Datum		d;
		char		code[6];
		int			i;
		int			sc = s->oc.sqlstate;

		for (i = 0; i < 5; i++)
		{
			code[i] = PGUNSIXBIT(sc);
			sc = sc >> 6;
		}
		code[5] = '\0';
		json_object_object_add(o, "error", json_object_new_string(s->oc.error ? s->oc.error : ""));
		if (s->oc.error_detail && s->oc.error_detail[0])
			json_object_object_add(o, "detail", json_object_new_string(s->oc.error_detail));
		json_object_object_add(o, "sqlstate", json_object_new_string(code));
		d = DirectFunctionCall1(jsonb_in,
								CStringGetDatum(pstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN))));
		json_object_put(o);
		return d;
	}
	*isnull = true;
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * rvbbit.run(cascade text, input jsonb, options jsonb) returns jsonb
 * ----------------------------------------------------------------
 */

typedef struct RunState
{
	const char *input;
	const char *scope;			/* the whole scope (RUN statements), or NULL */
	bool		given;
	MapExec    *ex;
	Datum		result;
	bool		isnull;
	bool		failed;
} RunState;

static bool
run_next(void *arg, StringInfo scope, HeapTuple *tuple)
{
	RunState   *st = (RunState *) arg;

	if (st->given)
		return false;
	st->given = true;
	if (st->scope)
		appendStringInfoString(scope, st->scope);
	else
	{
		appendStringInfoString(scope, "{\"input\":");
		appendStringInfoString(scope, st->input);
		appendStringInfoChar(scope, '}');
	}
	*tuple = NULL;
	return true;
}

static void
run_emit(void *arg, MapSlot *s)
{
	RunState   *st = (RunState *) arg;

	st->failed = s->oc.failed;
	st->result = map_slot_value(st->ex, s, &st->isnull);
}

Datum
rvbbit_run(PG_FUNCTION_ARGS)
{
	char	   *ref;
	Jsonb	   *input;
	RvOptions	opts;
	char	   *display;
	char	   *def;
	RvCascade  *c;
	MapExec		ex;
	RunState	st;

	rv_require_shared();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade must not be null")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	input = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	rv_parse_options(PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2), &opts, RV_OPTS_RUN_FUNCTION);
	if (!opts.on_error_given)
		opts.on_error = RV_ON_ERROR_FAIL;

	def = rv_resolve_cascade(ref, &display);
	c = rv_check_cascade(display, def);
	rv_cascade_free(c);

	memset(&st, 0, sizeof(st));
	st.input = input ? JsonbToCString(NULL, &input->root, VARSIZE(input)) : "{}";
	map_exec_init(&ex, "run", display, def, &opts, 1);
	st.ex = &ex;
	map_execute(&ex, run_next, run_emit, &st);
	map_exec_finish(&ex, false);
	if (st.isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(st.result);
}

/*
 * rvbbit._run_rows(cascade text, rows jsonb, options jsonb) returns jsonb:
 * the RUN statement's call, once over all rows.  The template sees rows
 * (the array) and row_count.  rows holds one more element than the limit
 * when the input was longer, so truncation can be reported.
 */
Datum
rvbbit_run_rows(PG_FUNCTION_ARGS)
{
	char	   *ref;
	Jsonb	   *rows;
	RvOptions	opts;
	char	   *display;
	char	   *def;
	MapExec		ex;
	RunState	st;
	json_object *arr;
	json_object *scope;
	int			n;

	rv_require_shared();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade and rows must not be null")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	rows = PG_GETARG_JSONB_P(1);
	rv_parse_options(PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2), &opts, RV_OPTS_RUN_ROWS);
	def = rv_resolve_cascade(ref, &display);
	rv_cascade_free(rv_check_cascade(display, def));

	arr = json_tokener_parse(JsonbToCString(NULL, &rows->root, VARSIZE(rows)));
	if (arr == NULL || !json_object_is_type(arr, json_type_array))
	{
		if (arr)
			json_object_put(arr);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rows must be a JSON array")));
	}
	n = (int) json_object_array_length(arr);
	if (opts.limit > 0 && n > opts.limit)
	{
		json_object_array_del_idx(arr, (size_t) opts.limit, n - (size_t) opts.limit);
		n = (int) opts.limit;
		ereport(NOTICE,
				(errmsg("input truncated to %lld rows by the limit", (long long) opts.limit),
				 errhint("Set the limit option (0 for none).")));
	}
	scope = json_object_new_object();
	json_object_object_add(scope, "rows", arr);
	json_object_object_add(scope, "row_count", json_object_new_int(n));
	json_object_object_add(scope, "input", json_object_new_object());

	memset(&st, 0, sizeof(st));
	st.scope = pstrdup(json_object_to_json_string_ext(scope, JSON_C_TO_STRING_PLAIN));
	json_object_put(scope);
	map_exec_init(&ex, "run", display, def, &opts, 1);
	st.ex = &ex;
	map_execute(&ex, run_next, run_emit, &st);
	map_exec_finish(&ex, opts.on_error == RV_ON_ERROR_NULL);
	if (st.isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(st.result);
}

/* ----------------------------------------------------------------
 * rvbbit.map(cascade, query, parallel, options) returns setof record
 * ----------------------------------------------------------------
 */

/* How rows leave a MAP. */
typedef enum MapOutput
{
	MAP_OUT_RESULT,				/* query columns, then the result (jsonb) */
	MAP_OUT_UNPACK,				/* query columns, then typed columns from result keys */
	MAP_OUT_JSON				/* one jsonb object per row */
} MapOutput;

typedef struct MapState
{
	Portal		portal;
	char	   *portal_name;	/* to find it at the end, if it still exists */
	HeapTuple  *batch;			/* copies of the rows of the last fetch */
	uint64		batch_n;
	uint64		batch_pos;
	MemoryContext batch_cxt;	/* holds them */
	TupleDesc	spi_desc;		/* copy */
	int			ncols;			/* query columns (without the jsonb) */
	int64		limit;			/* -1 none */
	int64		nread;
	bool		truncated;
	bool		eof;
	MapExec    *ex;
	MapOutput	output;
	const char *result_name;	/* MAP_OUT_JSON: the key of the result */
	TupleDesc	out_desc;
	Datum	   *values;
	bool	   *nulls;
	FmgrInfo   *in_funcs;		/* MAP_OUT_UNPACK: input functions */
	Oid		   *in_ioparams;
	int64		nunconverted;	/* values that did not convert */
	char	   *first_unconverted;
	MemoryContext row_cxt;		/* reset for every emitted row */
	int			dedupe_col;		/* dedupe_by: attribute number, 0 if none */
	char	   *dedupe_key;		/* dedupe_by: the key of the last row read */
	MemoryContext next_cxt;		/* per-row temporaries of reading, reset per row */
} MapState;

static bool
mapfn_next(void *arg, StringInfo scope, HeapTuple *tuple)
{
	MapState   *st = (MapState *) arg;
	HeapTuple	tup;
	bool		isnull;
	Datum		d;
	MemoryContext old;

	if (st->eof)
		return false;
	if (st->batch == NULL || st->batch_pos >= st->batch_n)
	{
		uint64		i;

		/*
		 * SPI is connected only for the fetch: the rows are copied out, so
		 * that the custom scan can return between fetches.
		 */
		MemoryContextReset(st->batch_cxt);
		st->batch = NULL;
		st->portal = GetPortalByName(st->portal_name);
		if (!PortalIsValid(st->portal))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_CURSOR_STATE),
					 errmsg("the input cursor of the MAP was closed before its end"),
					 errdetail("The transaction that opened it ended.")));
		SPI_connect();
		SPI_cursor_fetch(st->portal, true, MAP_FETCH_BATCH);
		st->batch_n = SPI_processed;
		if (st->batch_n > 0)
		{
			old = MemoryContextSwitchTo(st->batch_cxt);
			st->batch = palloc(sizeof(HeapTuple) * st->batch_n);
			for (i = 0; i < st->batch_n; i++)
				st->batch[i] = heap_copytuple(SPI_tuptable->vals[i]);
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
		SPI_finish();
		if (st->batch_n == 0)
		{
			st->eof = true;
			return false;
		}
		st->batch_pos = 0;
	}
	if (st->limit > 0 && st->nread >= st->limit)
	{
		st->truncated = true;
		st->eof = true;
		return false;
	}
	tup = st->batch[st->batch_pos++];
	st->nread++;

	/* detoasting and printing allocate: keep it out of the SPI context */
	MemoryContextReset(st->next_cxt);
	old = MemoryContextSwitchTo(st->next_cxt);
	if (st->dedupe_col > 0)
	{
		st->dedupe_key = SPI_getvalue(tup, st->spi_desc, st->dedupe_col);
		/* NULL keys are all one key, apart from any text value */
		st->ex->next_key = st->dedupe_key ? st->dedupe_key : "\x01";
	}
	d = heap_getattr(tup, st->ncols + 1, st->spi_desc, &isnull);
	appendStringInfoString(scope, "{\"input\":");
	if (isnull)
		appendStringInfoString(scope, "{}");
	else
	{
		Jsonb	   *jb = DatumGetJsonbP(d);

		(void) JsonbToCString(scope, &jb->root, VARSIZE(jb));
	}
	appendStringInfoChar(scope, '}');
	MemoryContextSwitchTo(old);
	*tuple = tup;
	return true;
}

/*
 * Convert one value of a result object to the type of an output column.
 * Returns false (and leaves *out unset) when it does not convert; errors
 * of the type's input function are caught in a subtransaction.
 */
static bool
map_convert(MapState *st, int col, json_object *v, Datum *out)
{
	Form_pg_attribute att = TupleDescAttr(st->out_desc, col);
	const char *text;
	volatile bool ok = true;
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (att->atttypid == JSONBOID)
	{
		*out = DirectFunctionCall1(jsonb_in,
								   CStringGetDatum(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN)));
		return true;
	}
	text = json_object_is_type(v, json_type_string) ? json_object_get_string(v) :
		json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	if (att->atttypid == TEXTOID)
	{
		*out = CStringGetTextDatum(text);
		return true;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*out = InputFunctionCall(&st->in_funcs[col], (char *) text,
								 st->in_ioparams[col], att->atttypmod);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (st->first_unconverted == NULL)
			st->first_unconverted = MemoryContextStrdup(st->ex->cxt->parent,
														psprintf("column \"%s\": %s",
																 NameStr(att->attname),
																 edata->message));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Fill the typed columns after the query's from the keys of a result. */
static void
map_unpack(MapState *st, MapSlot *s)
{
	json_object *obj = NULL;
	int			i;

	if (!s->oc.failed && s->oc.result)
		obj = json_tokener_parse(s->oc.result);
	for (i = st->ncols; i < st->out_desc->natts; i++)
	{
		json_object *v = NULL;
		Form_pg_attribute att = TupleDescAttr(st->out_desc, i);

		st->nulls[i] = true;
		if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
			!json_object_object_get_ex(obj, NameStr(att->attname), &v) || v == NULL)
			continue;
		if (map_convert(st, i, v, &st->values[i]))
			st->nulls[i] = false;
		else
		{
			st->nunconverted++;
			if (st->ex->opts->on_error == RV_ON_ERROR_FAIL)
			{
				json_object_put(obj);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("result value does not convert to the column type"),
						 errdetail("%s", st->first_unconverted)));
			}
		}
	}
	if (obj)
		json_object_put(obj);
}

/*
 * Build the jsonb object of a row: its input columns (the to_jsonb() of
 * the input row the query computed) plus the result under result_name.
 */
static Datum
map_json_row(MapState *st, MapSlot *s)
{
	Datum		result;
	bool		isnull;
	bool		rownull;
	Datum		row;
	StringInfoData buf;

	result = map_slot_value(st->ex, s, &isnull);
	row = heap_getattr(s->input, st->ncols + 1, st->spi_desc, &rownull);
	initStringInfo(&buf);
	if (!rownull)
	{
		Jsonb	   *jb = DatumGetJsonbP(row);

		(void) JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	}
	/* reopen the object: drop its closing brace */
	while (buf.len > 0 && buf.data[buf.len - 1] != '}')
		buf.len--;
	if (buf.len > 0)
		buf.data[--buf.len] = '\0';
	else
		appendStringInfoChar(&buf, '{');
	if (buf.len > 1)
		appendStringInfoString(&buf, ", ");
	escape_json(&buf, st->result_name);
	appendStringInfoString(&buf, ": ");
	if (isnull)
		appendStringInfoString(&buf, "null");
	else
		(void) JsonbToCString(&buf, &DatumGetJsonbP(result)->root, 0);
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/*
 * Fill st->values and st->nulls with the output row of a finished slot,
 * allocating in row_cxt (reset before the next row).
 */
static void
mapfn_fill(MapState *st, MapSlot *s)
{
	MemoryContext old = MemoryContextSwitchTo(st->row_cxt);
	bool		isnull;

	if (st->output == MAP_OUT_JSON)
	{
		st->values[0] = map_json_row(st, s);
		st->nulls[0] = false;
	}
	else
	{
		heap_deform_tuple(s->input, st->spi_desc, st->values, st->nulls);
		if (st->output == MAP_OUT_UNPACK)
			map_unpack(st, s);
		else
		{
			st->values[st->ncols] = map_slot_value(st->ex, s, &isnull);
			st->nulls[st->ncols] = isnull;
		}
	}
	MemoryContextSwitchTo(old);
}

/*
 * Check the column definition list against the query: the query's
 * columns with the same types, then one jsonb column for the result (or,
 * when unpacking, one or more typed columns named like result keys).
 */
static void
map_check_columns(TupleDesc out, TupleDesc q, int ncols, bool unpack)
{
	int			i;

	if (unpack ? out->natts <= ncols : out->natts != ncols + 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column definition list has %d columns, but the query returns %d columns and the result needs %s",
						out->natts, ncols, unpack ? "at least one more" : "one more"),
				 errhint("List the query's columns with their types, followed by %s.",
						 unpack ? "the result columns" : "one jsonb column for the result")));
	for (i = 0; i < ncols; i++)
	{
		Oid			want = TupleDescAttr(out, i)->atttypid;
		Oid			got = TupleDescAttr(q, i)->atttypid;

		if (want != got)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column %d (\"%s\") of the column definition list has type %s, but the query returns %s",
							i + 1, NameStr(TupleDescAttr(out, i)->attname),
							format_type_be(want), format_type_be(got)),
					 errhint("Use the query's column types in the column definition list, or cast in the query.")));
	}
	if (!unpack && TupleDescAttr(out, ncols)->atttypid != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the last column of the column definition list must be of type jsonb"),
				 errdetail("It has type %s.", format_type_be(TupleDescAttr(out, ncols)->atttypid)),
				 errhint("Use the option unpack => true to fill typed columns from the keys of the result.")));
}

/* == stream: a MAP as a stream of rows (the SRF and the custom scan) == */

struct RvMapStream
{
	MapState	st;
	MapExec		ex;
	RvOptions	opts;
	bool		closed;
};

/*
 * Start a MAP: resolve and check the cascade, open the input cursor with
 * the caller's privileges (SPI is connected only while the cursor is
 * opened and fetched from), and open the channel to a worker.  Rows come
 * from map_stream_next() in out_desc's layout.  Everything lives in the
 * current memory context.
 */
static RvMapStream *
map_stream_begin(const char *ref, const char *query, int parallel,
				 const RvOptions *opts, MapOutput output, const char *result_name,
				 TupleDesc out_desc)
{
	char	   *display;
	char	   *def;
	RvCascade  *c;
	RvMapStream *ms;
	MapState   *st;
	SPIPlanPtr	plan;
	char	   *sql;
	MemoryContext fn_cxt = CurrentMemoryContext;
	int			i;

	if (parallel < 1 || parallel > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parallel must be between 1 and 100000")));
	def = rv_resolve_cascade(ref, &display);
	c = rv_check_cascade(display, def);
	rv_cascade_free(c);

	ms = palloc0(sizeof(RvMapStream));
	ms->opts = *opts;
	opts = &ms->opts;
	st = &ms->st;
	st->out_desc = out_desc;
	st->output = output;
	st->result_name = result_name;
	st->limit = opts->limit > 0 ? opts->limit : 0;
	st->row_cxt = AllocSetContextCreate(fn_cxt, "rvbbit map row", ALLOCSET_DEFAULT_SIZES);
	st->next_cxt = AllocSetContextCreate(fn_cxt, "rvbbit map input row", ALLOCSET_DEFAULT_SIZES);
	st->batch_cxt = AllocSetContextCreate(fn_cxt, "rvbbit map input batch", ALLOCSET_DEFAULT_SIZES);

	SPI_connect();
	sql = psprintf("SELECT _rvbbit_q.*, pg_catalog.to_jsonb(_rvbbit_q.*) FROM (%s\n) AS _rvbbit_q", query);
	/*
	 * A holdable cursor: a CURSOR WITH HOLD over the custom scan is
	 * persisted at commit, after which this one must still be readable
	 * (commit may drop a plain cursor first).  It is closed at the end of
	 * the MAP.
	 */
	plan = SPI_prepare_cursor(sql, 0, NULL, CURSOR_OPT_HOLD | CURSOR_OPT_NO_SCROLL);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("could not prepare the input query: %s", SPI_result_code_string(SPI_result))));
	st->portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
	{
		MemoryContext old = MemoryContextSwitchTo(fn_cxt);

		st->spi_desc = CreateTupleDescCopy(st->portal->tupDesc);
		st->portal_name = pstrdup(st->portal->name);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	st->ncols = st->spi_desc->natts - 1;
	if (opts->dedupe_by)
	{
		for (i = 0; i < st->ncols; i++)
			if (strcmp(NameStr(TupleDescAttr(st->spi_desc, i)->attname), opts->dedupe_by) == 0)
				st->dedupe_col = i + 1;
		if (st->dedupe_col == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("dedupe_by column \"%s\" is not a column of the query", opts->dedupe_by)));
	}
	if (output != MAP_OUT_JSON)
		map_check_columns(st->out_desc, st->spi_desc, st->ncols, output == MAP_OUT_UNPACK);
	st->values = MemoryContextAlloc(fn_cxt, sizeof(Datum) * Max(st->out_desc->natts, st->spi_desc->natts));
	st->nulls = MemoryContextAlloc(fn_cxt, sizeof(bool) * Max(st->out_desc->natts, st->spi_desc->natts));
	if (output == MAP_OUT_UNPACK)
	{
		st->in_funcs = MemoryContextAlloc(fn_cxt, sizeof(FmgrInfo) * st->out_desc->natts);
		st->in_ioparams = MemoryContextAlloc(fn_cxt, sizeof(Oid) * st->out_desc->natts);
		for (i = st->ncols; i < st->out_desc->natts; i++)
		{
			Oid			infunc;

			getTypeInputInfo(TupleDescAttr(st->out_desc, i)->atttypid, &infunc,
							 &st->in_ioparams[i]);
			fmgr_info_cxt(infunc, &st->in_funcs[i], fn_cxt);
		}
	}

	map_exec_init(&ms->ex, "map", display, def, opts, parallel);
	st->ex = &ms->ex;
	map_exec_start(&ms->ex, mapfn_next, st);
	return ms;
}

/*
 * End a MAP: when it stopped early, schedule nothing more and let the
 * calls in flight finish into the cache; close the input cursor and the
 * channel; report failed rows, unconverted values and truncation.
 */
static void
map_stream_end(RvMapStream *ms)
{
	MapState   *st = &ms->st;
	Portal		portal;

	if (ms->closed)
		return;
	ms->closed = true;
	map_exec_drain(&ms->ex);
	/* the cursor may be gone already when the transaction ends first */
	portal = GetPortalByName(st->portal_name);
	if (PortalIsValid(portal))
		SPI_cursor_close(portal);
	st->portal = NULL;
	map_exec_finish(&ms->ex, ms->opts.on_error == RV_ON_ERROR_NULL);
	if (st->nunconverted > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("%lld result values did not convert to their column types and were set to NULL",
						(long long) st->nunconverted),
				 errdetail("The first was %s.", st->first_unconverted)));
	if (st->truncated)
		ereport(NOTICE,
				(errmsg("input truncated to %lld rows by the limit", (long long) st->limit),
				 errhint("Set the limit option (0 for none) or rvbbit.default_limit.")));
}

/*
 * The next output row in input order: true with *values and *nulls (valid
 * until the next call), false after the last row (the stream is then
 * ended).
 */
static bool
map_stream_next(RvMapStream *ms, Datum **values, bool **nulls)
{
	MapSlot    *s;

	if (ms->closed)
		return false;
	MemoryContextReset(ms->st.row_cxt);
	s = map_step(&ms->ex);
	if (s == NULL)
	{
		map_stream_end(ms);
		return false;
	}
	mapfn_fill(&ms->st, s);
	*values = ms->st.values;
	*nulls = ms->st.nulls;
	return true;
}

/*
 * Run a whole MAP into the tuplestore of rsinfo (rvbbit.map() and
 * rvbbit.sql() called as functions).
 */
static void
map_run(ReturnSetInfo *rsinfo, const char *ref, const char *query,
		int parallel, RvOptions *opts, MapOutput output, const char *result_name)
{
	RvMapStream *ms = map_stream_begin(ref, query, parallel, opts, output,
									   result_name, rsinfo->setDesc);
	Datum	   *values;
	bool	   *nulls;

	while (map_stream_next(ms, &values, &nulls))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * The arguments of rvbbit.map(cascade, query, parallel, options), checked,
 * into a stream of rows in out_desc's layout (the column definition list).
 * Shared by the function and the custom scan (mapscan.c).
 */
RvMapStream *
rv_map_stream_open(Datum *args, bool *argnulls, TupleDesc out_desc)
{
	char	   *ref;
	char	   *query;
	int			parallel;
	RvOptions	opts;

	rv_require_shared();
	if (argnulls[0] || argnulls[1])
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade and query must not be null")));
	ref = TextDatumGetCString(args[0]);
	query = TextDatumGetCString(args[1]);
	parallel = argnulls[2] ? rv_default_parallel : DatumGetInt32(args[2]);
	rv_parse_options(argnulls[3] ? NULL : DatumGetJsonbP(args[3]), &opts, RV_OPTS_MAP_FUNCTION);
	if (opts.parallel > 0)
		parallel = opts.parallel;
	return map_stream_begin(ref, query, parallel, &opts,
							opts.unpack ? MAP_OUT_UNPACK : MAP_OUT_RESULT, NULL, out_desc);
}

/* The next row of the stream; false after the last. */
bool
rv_map_stream_next(RvMapStream *ms, Datum **values, bool **nulls)
{
	return map_stream_next(ms, values, nulls);
}

/* End the stream, early or not (idempotent). */
void
rv_map_stream_close(RvMapStream *ms)
{
	map_stream_end(ms);
}

/* The counters so far, for EXPLAIN ANALYZE. */
const RvMapCounters *
rv_map_stream_counters(RvMapStream *ms)
{
	ms->ex.counters.failures = ms->ex.nfailed;
	return &ms->ex.counters;
}

/* == end stream == */

Datum
rvbbit_map(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		args[4];
	bool		argnulls[4];
	RvMapStream *ms;
	Datum	   *values;
	bool	   *nulls;
	int			i;

	for (i = 0; i < 4; i++)
	{
		argnulls[i] = PG_ARGISNULL(i);
		args[i] = argnulls[i] ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) || rsinfo->expectedDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("rvbbit.map must be called with a column definition list"),
				 errhint("Write SELECT * FROM rvbbit.map(...) AS t(col1 type1, ..., result jsonb), "
						 "or use rvbbit.sql() with an RVBBIT MAP statement.")));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	ms = rv_map_stream_open(args, argnulls, rsinfo->setDesc);
	while (rv_map_stream_next(ms, &values, &nulls))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/*
 * rvbbit.sql(statement text) returns setof jsonb, when it was not
 * rewritten (it is not the whole query): one jsonb object per row.
 */
Datum
rvbbit_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RvPlannedStatement ps;

	rv_require_shared();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("statement must not be null")));
	rv_plan_statement(text_to_cstring(PG_GETARG_TEXT_PP(0)), -1, NULL, &ps);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (ps.is_async)
	{
		/* a background job: return its id */
		Oid			argtypes[1] = {TEXTOID};
		Datum		args[1];
		Datum		d;
		bool		isnull = false;
		char	   *obj;

		SPI_connect();
		args[0] = PG_GETARG_DATUM(0);
		if (SPI_execute_with_args("SELECT s.job_id FROM rvbbit._submit_job($1) s", 1, argtypes, args,
								  NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not submit the job");
		obj = psprintf("{\"job_id\": %s}", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		SPI_finish();
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(obj));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	if (ps.is_run && ps.opts.as_table == NULL)
	{
		Datum		d;
		bool		isnull;
		StringInfoData buf;

		SPI_connect();
		if (SPI_execute(rv_map_sql(&ps, NULL), true, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "RUN did not return one row");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		escape_json(&buf, ps.result_name);
		appendStringInfoString(&buf, ": ");
		if (isnull)
			appendStringInfoString(&buf, "null");
		else
			(void) JsonbToCString(&buf, &DatumGetJsonbP(d)->root, 0);
		appendStringInfoChar(&buf, '}');
		SPI_finish();
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		isnull = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	if (ps.opts.as_table)
	{
		char	   *table;
		int64		rows = rv_as_table(text_to_cstring(PG_GETARG_TEXT_PP(0)), &table);
		StringInfoData buf;
		Datum		d;
		bool		isnull = false;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"as_table\": ");
		escape_json(&buf, table);
		appendStringInfo(&buf, ", \"rows\": %lld}", (long long) rows);
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	map_run(rsinfo, ps.cascade, ps.query, ps.parallel, &ps.opts, MAP_OUT_JSON,
			ps.result_name);
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * The cascade registry
 * ----------------------------------------------------------------
 */

/*
 * Is there a cascade file named name under rvbbit.cascade_path or among the
 * shipped examples?  (A refused or unreadable file counts as existing.)
 */
static bool
map_file_cascade_exists(const char *name)
{
	bool		refused = false;
	char	   *def;

	def = map_read_cascade_file(rv_cascade_path, name, &refused);
	if (def == NULL && !refused)
		def = map_read_cascade_file(map_examples_dir(), name, &refused);
	if (def)
		pfree(def);
	return def != NULL || refused;
}

/*
 * May the current outer user change or drop a cascade owned by owner?
 * Its owner, superusers and members of rvbbit_admin may.
 */
static bool
map_may_manage(Oid owner)
{
	Oid			me = GetOuterUserId();
	Oid			admin = get_role_oid("rvbbit_admin", true);

	return me == owner || superuser_arg(me) ||
		(OidIsValid(admin) && has_privs_of_role(me, admin));
}

/* rvbbit._validate_cascade(definition text) returns void */
Datum
rvbbit_validate_cascade(PG_FUNCTION_ARGS)
{
	char	   *def;

	rv_require_shared();
	def = text_to_cstring(PG_GETARG_TEXT_PP(0));
	rv_cascade_free(rv_check_cascade("definition", def));
	PG_RETURN_VOID();
}

/*
 * rvbbit._cascade_name(name text) returns text: the normalised name
 * (rv_cascade_name).  IMMUTABLE and usable without the preload, because
 * the CHECK constraint of rvbbit.cascades and the 0.2 upgrade call it.
 */
Datum
rvbbit_cascade_name(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(rv_cascade_name(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/*
 * rvbbit.create_cascade(name text, definition text) returns void.
 * SECURITY DEFINER: validates the definition, then inserts or replaces
 * the registry row, recording the calling role as owner.
 */
Datum
rvbbit_create_cascade(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *def;
	Oid			me = GetOuterUserId();
	Oid			argtypes[3] = {TEXTOID, TEXTOID, OIDOID};
	Datum		args[3];

	rv_require_shared();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade name and definition must not be null")));
	name = rv_cascade_name(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	def = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rv_cascade_free(rv_check_cascade(name, def));

	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(def);
	args[2] = ObjectIdGetDatum(me);
	if (SPI_execute_with_args("SELECT owner::pg_catalog.oid FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.cascades");
	if (SPI_processed == 1)
	{
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));

		if (!map_may_manage(owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of cascade \"%s\" to replace it", name),
					 errhint("Ask its owner or a member of rvbbit_admin, or choose another name.")));
		if (SPI_execute_with_args("UPDATE rvbbit.cascades SET definition = $2, updated_at = pg_catalog.now() "
								  "WHERE name OPERATOR(pg_catalog.=) $1", 2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update rvbbit.cascades");
	}
	else if (!map_may_manage(InvalidOid) && map_file_cascade_exists(name))
	{
		/*
		 * The registry is looked up first, for every role: a new registry
		 * row named like a cascade file would silently replace that file
		 * for everybody, so only administrators may do it.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cascade \"%s\" is a cascade file; only rvbbit_admin may override it", name),
				 errdetail("A registry cascade takes precedence over files under rvbbit.cascade_path and the shipped examples, for every role."),
				 errhint("Choose another name.")));
	}
	else if (SPI_execute_with_args("INSERT INTO rvbbit.cascades (name, definition, owner) "
								   "VALUES ($1, $2, $3::pg_catalog.regrole)", 3, argtypes, args, NULL,
								   false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into rvbbit.cascades");
	SPI_finish();
	PG_RETURN_VOID();
}

/* rvbbit.drop_cascade(name text, if_exists boolean) returns void (SECURITY DEFINER) */
Datum
rvbbit_drop_cascade(PG_FUNCTION_ARGS)
{
	char	   *given;
	char	   *name;
	bool		if_exists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	rv_require_shared();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade name must not be null")));
	given = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = rv_cascade_name(given);
	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT owner::pg_catalog.oid FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.cascades");
	if (SPI_processed == 0)
	{
		SPI_finish();
		if (if_exists)
		{
			ereport(NOTICE,
					(errmsg("cascade \"%s\" does not exist, skipping", given)));
			PG_RETURN_VOID();
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cascade \"%s\" does not exist", given)));
	}
	{
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));

		if (!map_may_manage(owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of cascade \"%s\" to drop it", name)));
	}
	if (SPI_execute_with_args("DELETE FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from rvbbit.cascades");
	SPI_finish();
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * rvbbit._progress(): the rows of rvbbit.progress
 * ----------------------------------------------------------------
 */

/*
 * The running statements the current user may see: its own, or all of
 * them for superusers and members of rvbbit_admin (rv_sees_all()).  The
 * filter is here, not only in the view, because the function itself is
 * granted to rvbbit_user.
 */
Datum
rvbbit_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			me = GetUserId();
	bool		all;
	int			i;

	rv_require_shared();
	all = rv_sees_all(me);
	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < RV_MAX_PROGRESS; i++)
	{
		RvProgress *p = &rv_shared->progress[i];
		Datum		v[16];
		bool		n[16];

		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		pg_read_barrier();
		if (!all && p->roleid != me)
			continue;
		memset(n, 0, sizeof(n));
		v[0] = Int32GetDatum(p->pid);
		v[1] = Int64GetDatum(p->statement_id);
		v[2] = ObjectIdGetDatum(p->dboid);
		v[3] = ObjectIdGetDatum(p->roleid);
		v[4] = TimestampTzGetDatum(p->started_at);
		v[5] = CStringGetTextDatum(p->kind);
		v[6] = CStringGetTextDatum(p->cascade);
		v[7] = Int32GetDatum(p->parallel);
		v[8] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_read));
		v[9] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_done));
		v[10] = Int64GetDatum((int64) RV_PROGRESS_COUNT(pg_atomic_read_u64(&p->in_flight)));
		v[11] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_failed));
		v[12] = Int64GetDatum((int64) pg_atomic_read_u64(&p->cache_hits));
		v[13] = Int64GetDatum((int64) pg_atomic_read_u64(&p->llm_calls));
		v[14] = Int64GetDatum((int64) (pg_atomic_read_u64(&p->tokens_in) + pg_atomic_read_u64(&p->tokens_out)));
		v[15] = Float8GetDatum((double) pg_atomic_read_u64(&p->cost_micros) / 1e6);
		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
}
