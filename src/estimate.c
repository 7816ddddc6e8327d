/*-------------------------------------------------------------------------
 *
 * estimate.c
 *	  rvbbit.estimate(statement): what an RVBBIT statement would cost,
 *	  without calling any LLM.
 *
 * It plans the statement as rvbbit.sql() would, reads the USING query
 * (with its auto-LIMIT) with the caller's privileges, renders every
 * cell's request for every row exactly as the worker would (request.c),
 * and looks the first cell's requests up in the cache.  Token counts are
 * estimates: a request body's length / 4 for input, and the cell's
 * max_tokens (rvbbit.default_max_tokens when it has none) for output;
 * later cells are rendered with the earlier cells' outputs empty.  Cost uses rvbbit.model_prices.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "map.h"
#include "request.h"
#include "rvbbit.h"

/*
 * The estimated cost as numeric.  It is a sum of float8 products
 * (tokens * price per token), so its last digits are noise: 29.2 would show
 * as 29.2000000000001.  Twelve significant digits are far more than an
 * estimate has and far fewer than a double's 15-17, so the noise goes away
 * and the value stays exact where it can be (the numeric has only the
 * digits it needs: 0.0116, 29.2, 0).
 */
static Datum
est_cost_numeric(double cost)
{
	char		buf[64];

	if (isnan(cost) || isinf(cost))
		return DirectFunctionCall1(float8_numeric, Float8GetDatum(cost));
	snprintf(buf, sizeof(buf), "%.12g", cost);
	return DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

PG_FUNCTION_INFO_V1(rvbbit_estimate);


typedef struct EstProvider
{
	char	   *prefix;
	char	   *api_base;
	RvFlavor	flavor;
} EstProvider;

/* rv_route() callback: the prefix of provider i. */
static const char *
est_prefix_of(const void *providers, int i)
{
	return ((const EstProvider *) providers)[i].prefix;
}

/* The provider a model goes to (the worker's rule, rv_route()). */
static EstProvider *
est_route(EstProvider *p, int n, const char *model_ref, const char **model)
{
	return &p[rv_route(model_ref, n, est_prefix_of, p, model)];
}

/* Price per token of a model from rvbbit.model_prices (0 when unknown). */
static void
est_price(const char *model, double *pin, double *pout)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	*pin = *pout = 0;
	args[0] = CStringGetTextDatum(model);
	if (SPI_execute_with_args("SELECT input_per_million::pg_catalog.float8 OPERATOR(pg_catalog./) 1e6, "
							  "output_per_million::pg_catalog.float8 OPERATOR(pg_catalog./) 1e6 "
							  "FROM rvbbit.model_prices WHERE model OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		*pin = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		*pout = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
}

/* What the estimate needs to price one request's rows. */
/* the columns of rvbbit.estimate() (0.2) */
#define ESTIMATE_COLS 8

typedef struct EstState
{
	RvCascade  *c;
	RvPlannedStatement *ps;
	EstProvider *prov;
	int			nprov;
	double	   *pin;			/* price per input token of each cell */
	double	   *pout;
	MemoryContext cxt;			/* for units */
	List	   *units;			/* EstUnit, in input order */
} EstState;

/*
 * The calls for one unit of work the worker gets: a row (MAP), a batch of
 * rows (MAP BATCH) or all rows (RUN).
 */
typedef struct EstUnit
{
	char		key[65];		/* cache key of its first request */
	int64		rows;
	int			calls;			/* requests it sends (when not cached) */
	int64		tin;
	int64		tout;
	double		cost;
	bool		cached;
} EstUnit;

/* An input seen before (rows that share a call), by hash. */
typedef struct EstSeen
{
	uint64		hash;
	char	   *text;			/* the first input with this hash */
} EstSeen;

/*
 * Whether an equal input was seen before: the whole row, or its dedupe_by
 * column.  Remembers the input otherwise (its text allocated in cxt).
 */
static bool
est_seen(HTAB *seen, MemoryContext cxt, json_object *input, const char *dedupe_by)
{
	const char *text;
	json_object *v = NULL;
	uint64		h;
	bool		found;
	EstSeen    *e;

	if (dedupe_by != NULL)
	{
		if (!json_object_object_get_ex(input, dedupe_by, &v))
			v = NULL;
		text = v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "\x01";
	}
	else
		text = json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN);
	h = hash_bytes_extended((const unsigned char *) text, strlen(text), 0);
	e = hash_search(seen, &h, HASH_ENTER, &found);
	if (found)
		return strcmp(e->text, text) == 0;	/* a different input: priced */
	e->text = MemoryContextStrdup(cxt, text);
	return false;
}

/*
 * Price one unit: render each cell's request the way the worker does
 * (request.c) and count its tokens and cost.  what is one row's input, or
 * (as_rows) the array of the rows of a batch or of a RUN, whose template
 * sees rows and row_count; a batch asks for an array of exactly that many
 * items of the cell's output_schema.  Later cells are rendered with the
 * earlier cells' outputs empty.  Re-asks after invalid replies are not
 * counted.
 */
static void
est_unit(EstState *est, json_object *what, bool as_rows)
{
	RvCascade  *c = est->c;
	EstUnit    *u = MemoryContextAllocZero(est->cxt, sizeof(EstUnit));
	json_object *scope = json_object_new_object();
	json_object *schema = NULL;
	int			ncells = c->ncells;
	int			k;

	if (as_rows)
	{
		int			n = (int) json_object_array_length(what);

		json_object_object_add(scope, "rows", json_object_get(what));
		json_object_object_add(scope, "row_count", json_object_new_int(n));
		json_object_object_add(scope, "input", json_object_new_object());
		u->rows = n;
		if (!est->ps->is_run)
		{
			/* MAP BATCH (one cell, checked by the caller) */
			ncells = 1;
			schema = json_object_new_object();
			json_object_object_add(schema, "type", json_object_new_string("array"));
			json_object_object_add(schema, "minItems", json_object_new_int(n));
			json_object_object_add(schema, "maxItems", json_object_new_int(n));
			json_object_object_add(schema, "items", json_object_get(c->cells[0].output_schema));
		}
	}
	else
	{
		json_object_object_add(scope, "input", json_object_get(what));
		u->rows = 1;
	}
	json_object_object_add(scope, "outputs", json_object_new_object());
	json_object_object_add(scope, "state", json_object_new_object());

	for (k = 0; k < ncells; k++)
	{
		const char *model_ref = rv_cell_model(c, k, est->ps->opts.model, rv_default_model);
		const char *model;
		EstProvider *p = est_route(est->prov, est->nprov, model_ref, &model);
		json_object *messages = NULL;
		RvError		err;
		const char *part;
		char	   *body;
		int64		in,
					out;

		rv_error_clear(&err);
		body = rv_cell_request(&c->cells[k], scope, false, p->flavor, model,
							   schema, &messages, &err, &part);
		if (messages)
			json_object_put(messages);
		if (body == NULL)
			continue;
		in = (int64) strlen(body) / 4 + 1;
		out = c->cells[k].max_tokens > 0 ? c->cells[k].max_tokens : rv_default_max_tokens;
		u->calls++;
		u->tin += in;
		u->tout += out;
		u->cost += in * est->pin[k] + out * est->pout[k];
		if (k == 0)
			rv_call_key(GetUserId(), p->api_base, body, strlen(body), u->key);
		free(body);
	}
	json_object_put(scope);
	if (schema)
		json_object_put(schema);
	/*
	 * The list, like the units, must outlive SPI_finish(): the caller
	 * reads it after that, and SPI's procedure context (current here) is
	 * freed then.
	 */
	{
		MemoryContext old = MemoryContextSwitchTo(est->cxt);

		est->units = lappend(est->units, u);
		MemoryContextSwitchTo(old);
	}
}

/* The default provider, then rvbbit.providers (SPI connected), in cxt. */
static EstProvider *
est_providers(MemoryContext cxt, int *nprov)
{
	EstProvider *prov;
	uint64		i;

	/* the key columns are not readable, and not needed */
	if (SPI_execute("SELECT prefix, api_base, api_flavor FROM rvbbit.providers",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.providers");
	prov = MemoryContextAllocZero(cxt, sizeof(EstProvider) * (SPI_processed + 1));
	prov[0].api_base = rv_api_base ? rv_api_base : "";
	prov[0].flavor = (RvFlavor) rv_api_flavor;
	*nprov = 1;
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *fl = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);

		prov[*nprov].prefix = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		prov[*nprov].api_base = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		prov[*nprov].flavor = rv_llm_flavor(fl);
		(*nprov)++;
	}
	return prov;
}

/* Each cell's model and prices into est; the distinct models into *models. */
static void
est_prices(EstState *est, List **models)
{
	int			k;

	est->pin = MemoryContextAllocZero(est->cxt, sizeof(double) * est->c->ncells);
	est->pout = MemoryContextAllocZero(est->cxt, sizeof(double) * est->c->ncells);
	for (k = 0; k < est->c->ncells; k++)
	{
		const char *m = rv_cell_model(est->c, k, est->ps->opts.model, rv_default_model);
		MemoryContext old;

		est_price(m, &est->pin[k], &est->pout[k]);
		old = MemoryContextSwitchTo(est->cxt);
		*models = list_append_unique(*models, makeString(pstrdup(m)));
		MemoryContextSwitchTo(old);
	}
}

/*
 * Rows that share a call (the statement answers them from another row's):
 * equal inputs when the cache is on, or equal dedupe_by keys.  NULL when
 * every row makes its own.
 */
static HTAB *
est_dedup_table(EstState *est)
{
	const RvPlannedStatement *ps = est->ps;
	HASHCTL		hctl;

	if (ps->is_run || (ps->opts.dedupe_by == NULL &&
					   !(ps->opts.cache_read && ps->opts.cache_write)))
		return NULL;
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(uint64);
	hctl.entrysize = sizeof(EstSeen);
	hctl.hcxt = est->cxt;
	return hash_create("rvbbit estimate inputs", 1024, &hctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Read the rows of the USING query (SPI connected) and price them in
 * units: one per row, one per batch of rows (batch > 0), or one for all
 * rows (RUN).  *pending holds the rows of the unit being filled (freed by
 * the caller).  Returns the number of rows.
 */
static int64
est_scan(EstState *est, int batch, json_object *volatile *pending)
{
	const RvPlannedStatement *ps = est->ps;
	HTAB	   *dedup = est_dedup_table(est);
	int64		nrows = 0;
	Portal		portal;
	char	   *sql;
	uint64		i;

	sql = psprintf("SELECT pg_catalog.to_jsonb(_rvbbit_q.*) FROM (%s\n) AS _rvbbit_q%s",
				   ps->query, ps->opts.limit > 0 ? psprintf(" LIMIT %lld", (long long) ps->opts.limit) : "");
	portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 500);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			char	   *row = isnull ? "{}" : JsonbToCString(NULL, &DatumGetJsonbP(d)->root, 0);
			json_object *input = json_tokener_parse(row);

			nrows++;
			if (input == NULL)
				input = json_object_new_object();
			if (ps->is_run)
			{
				/* RUN: one request per cell over all rows */
				json_object_array_add(*pending, input);
				continue;
			}
			/* rows the statement answers from another row's call */
			if (dedup != NULL && est_seen(dedup, est->cxt, input, ps->opts.dedupe_by))
			{
				json_object_put(input);
				continue;
			}
			if (batch > 0)
			{
				/* MAP BATCH: one request per batch of rows */
				json_object_array_add(*pending, input);
				if ((int) json_object_array_length(*pending) >= batch)
				{
					est_unit(est, *pending, true);
					json_object_put(*pending);
					*pending = json_object_new_array();
				}
				continue;
			}
			est_unit(est, input, false);
			json_object_put(input);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	if (ps->is_run || json_object_array_length(*pending) > 0)
		est_unit(est, *pending, ps->is_run || batch > 0);
	return nrows;
}

/* Mark the units whose first request is cached (through a function that sees the cache). */
static void
est_mark_cached(EstState *est)
{
	Datum	   *kd = palloc(sizeof(Datum) * list_length(est->units));
	ListCell   *lc;
	int			n = 0;
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	uint64		i;

	foreach(lc, est->units)
		kd[n++] = CStringGetTextDatum(((EstUnit *) lfirst(lc))->key);
	args[0] = PointerGetDatum(construct_array(kd, n, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT i::pg_catalog.int4 FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(k, i) "
							  "WHERE rvbbit._cache_has(k) ORDER BY i",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the cache");
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int			idx = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 1, &isnull));

		((EstUnit *) list_nth(est->units, idx - 1))->cached = true;
	}
}

/* A text[] of the models. */
static Datum
est_models_array(List *models)
{
	Datum	   *md = palloc(sizeof(Datum) * Max(1, list_length(models)));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, models)
		md[n++] = CStringGetTextDatum(strVal(lfirst(lc)));
	return PointerGetDatum(construct_array(md, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * rvbbit.estimate(statement text, OUT input_rows bigint, OUT cached_rows
 * bigint, OUT calls_per_row int, OUT models text[], OUT est_input_tokens
 * bigint, OUT est_output_tokens bigint, OUT est_cost numeric, OUT est_calls
 * bigint): what the statement would send.  MAP sends a request per cell
 * per row, MAP BATCH n one per batch of n rows, RUN one per cell; rows
 * equal to an earlier row (or with its dedupe_by key) share its calls
 * when the cache is on or dedupe_by is given; requests found in the cache
 * cost nothing.  Tokens and cost are for the requests not in the cache.
 */
/* What est_collect() frees, on success and on error alike. */
static void
est_collect_free(EstState *est, json_object *pending)
{
	if (pending)
		json_object_put(pending);
	rv_cascade_free(est->c);
}

/*
 * Read the providers and prices and price the statement's input rows into
 * est->units; the cascade est->c is freed in every case.  Returns the
 * number of input rows.  Its own function, so that no local of
 * rvbbit_estimate() lives across the PG_TRY's setjmp; PG_CATCH rather
 * than PG_FINALLY, whose flag gcc's -Wclobbered flags.
 */
static int64
est_collect(EstState *est, int batch, List **models)
{
	json_object *volatile pending = NULL;
	int64		nrows;

	PG_TRY();
	{
		SPI_connect();
		est->prov = est_providers(est->cxt, &est->nprov);
		est_prices(est, models);
		pending = json_object_new_array();
		nrows = est_scan(est, batch, &pending);
		if (est->units != NIL && est->ps->opts.cache_read)
			est_mark_cached(est);
		SPI_finish();
	}
	PG_CATCH();
	{
		est_collect_free(est, pending);
		PG_RE_THROW();
	}
	PG_END_TRY();
	est_collect_free(est, pending);
	return nrows;
}

Datum
rvbbit_estimate(PG_FUNCTION_ARGS)
{
	RvPlannedStatement ps;
	char	   *display;
	char	   *def;
	RvCascade  *c;
	TupleDesc	td;
	int64		nrows = 0;
	int64		tin = 0;
	int64		tout = 0;
	double		cost = 0;
	int64		cached = 0;
	int64		calls = 0;
	List	   *models = NIL;
	int			ncells;
	int			batch;
	EstState	est;
	ListCell   *lc;
	Datum		values[ESTIMATE_COLS];
	bool		nulls[ESTIMATE_COLS] = {0};
	int			col = 0;
	MemoryContext fn_cxt = CurrentMemoryContext;

	rv_require_shared();
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("statement must not be null")));
	rv_plan_statement(text_to_cstring(PG_GETARG_TEXT_PP(0)), -1, NULL, &ps);
	def = rv_resolve_cascade(ps.cascade, &display);
	c = rv_check_cascade(display, def);
	ncells = c->ncells;
	batch = ps.is_run ? 0 : ps.opts.batch;
	if (batch > 0 && (c->ncells != 1 || c->cells[0].output_schema == NULL))
		batch = 0;				/* the statement fails at once; price it per row */

	memset(&est, 0, sizeof(est));
	est.c = c;
	est.ps = &ps;
	est.cxt = fn_cxt;
	nrows = est_collect(&est, batch, &models);

	/* what would be sent: the requests not in the cache */
	foreach(lc, est.units)
	{
		EstUnit    *u = (EstUnit *) lfirst(lc);

		if (u->cached)
		{
			cached += u->rows;
			continue;
		}
		calls += u->calls;
		tin += u->tin;
		tout += u->tout;
		cost += u->cost;
	}

	values[col++] = Int64GetDatum(nrows);
	values[col++] = Int64GetDatum(cached);
	values[col++] = Int32GetDatum(ncells);
	values[col++] = est_models_array(models);
	values[col++] = Int64GetDatum(tin);
	values[col++] = Int64GetDatum(tout);
	values[col++] = est_cost_numeric(Max(cost, 0));
	values[col++] = Int64GetDatum(calls);
	Assert(col == ESTIMATE_COLS);
	/* (the 0.1 definition has no est_calls column: heap_form_tuple takes natts) */
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}
