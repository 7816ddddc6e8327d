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
#include "exec.h"
#include "map.h"
#include "rvbbit.h"

PG_FUNCTION_INFO_V1(rvbbit_run);
PG_FUNCTION_INFO_V1(rvbbit_map);
PG_FUNCTION_INFO_V1(rvbbit_run_rows);

#define MAP_FETCH_BATCH 500
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
	if (!(opts.given & RV_OPT_BIT(RV_OPT_ON_ERROR)))
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
void
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
