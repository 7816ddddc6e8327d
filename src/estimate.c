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

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "map.h"
#include "request.h"
#include "rvbbit.h"

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

/*
 * rvbbit.estimate(statement text, OUT input_rows bigint, OUT cached_rows
 * bigint, OUT calls_per_row int, OUT models text[], OUT est_input_tokens
 * bigint, OUT est_output_tokens bigint, OUT est_cost numeric)
 */
Datum
rvbbit_estimate(PG_FUNCTION_ARGS)
{
	RvPlannedStatement ps;
	char	   *display;
	char	   *def;
	RvCascade  *c;
	TupleDesc	td;
	EstProvider *prov;
	int			nprov = 1;
	uint64		i;
	int			k;
	Portal		portal;
	char	   *sql;
	int64		nrows = 0;
	int64		tin = 0;
	int64		tout = 0;
	double		cost = 0;
	double		first_cost = 0;
	int64		cached = 0;
	List	   *keys = NIL;
	List	   *row_first_cost = NIL;
	List	   *models = NIL;
	double	   *pin;
	double	   *pout;
	int			ncells;
	Datum		values[7];
	bool		nulls[7] = {false, false, false, false, false, false, false};
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

	PG_TRY();
	{
		SPI_connect();

		/* providers (the key columns are not readable, and not needed) */
		if (SPI_execute("SELECT prefix, api_base, api_flavor FROM rvbbit.providers",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read rvbbit.providers");
		prov = MemoryContextAllocZero(fn_cxt, sizeof(EstProvider) * (SPI_processed + 1));
		prov[0].api_base = rv_api_base ? rv_api_base : "";
		prov[0].flavor = (RvFlavor) rv_api_flavor;
		for (i = 0; i < SPI_processed; i++)
		{
			char	   *fl = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);

			prov[nprov].prefix = MemoryContextStrdup(fn_cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
			prov[nprov].api_base = MemoryContextStrdup(fn_cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
			prov[nprov].flavor = (fl && strcmp(fl, "anthropic") == 0) ? RV_FLAVOR_ANTHROPIC : RV_FLAVOR_OPENAI;
			nprov++;
		}

		/* models and prices per cell */
		pin = MemoryContextAllocZero(fn_cxt, sizeof(double) * c->ncells);
		pout = MemoryContextAllocZero(fn_cxt, sizeof(double) * c->ncells);
		for (k = 0; k < c->ncells; k++)
		{
			const char *m = rv_cell_model(c, k, ps.opts.model, rv_default_model);
			MemoryContext old;

			est_price(m, &pin[k], &pout[k]);
			old = MemoryContextSwitchTo(fn_cxt);
			models = list_append_unique(models, makeString(pstrdup(m)));
			MemoryContextSwitchTo(old);
		}

		sql = psprintf("SELECT to_jsonb(_rvbbit_q.*) FROM (%s\n) AS _rvbbit_q%s",
					   ps.query, ps.opts.limit > 0 ? psprintf(" LIMIT %lld", (long long) ps.opts.limit) : "");
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
				char	   *scopetext = psprintf("{\"input\": %s, \"outputs\": {}, \"state\": {}}", row);
				json_object *scope = json_tokener_parse(scopetext);
				double		row0 = 0;

				nrows++;
				for (k = 0; k < c->ncells; k++)
				{
					const char *model_ref = rv_cell_model(c, k, ps.opts.model, rv_default_model);
					const char *model;
					EstProvider *p = est_route(prov, nprov, model_ref, &model);
					json_object *messages = NULL;
					RvError		err;
					const char *what;
					char	   *body;
					int64		in,
								out;

					rv_error_clear(&err);
					body = rv_cell_request(&c->cells[k], scope, false, p->flavor, model,
										   NULL, &messages, &err, &what);
					if (messages)
						json_object_put(messages);
					if (body == NULL)
						continue;
					in = (int64) strlen(body) / 4 + 1;
					out = c->cells[k].max_tokens > 0 ? c->cells[k].max_tokens : rv_default_max_tokens;
					tin += in;
					tout += out;
					cost += in * pin[k] + out * pout[k];
					if (k == 0)
					{
						char		key[65];
						MemoryContext old;

						rv_call_key(GetUserId(), p->api_base, body, strlen(body), key);
						row0 = in * pin[k] + out * pout[k];
						old = MemoryContextSwitchTo(fn_cxt);
						keys = lappend(keys, makeString(pstrdup(key)));
						row_first_cost = lappend(row_first_cost, makeFloat(psprintf("%.12g", row0)));
						MemoryContextSwitchTo(old);
					}
					free(body);
				}
				if (scope)
					json_object_put(scope);
			}
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);

		/* which first calls are cached (through a function that sees the cache) */
		if (keys != NIL)
		{
			Datum	   *kd = palloc(sizeof(Datum) * list_length(keys));
			ListCell   *lc;
			int			n = 0;
			Oid			argtypes[1] = {TEXTARRAYOID};
			Datum		args[1];

			foreach(lc, keys)
				kd[n++] = CStringGetTextDatum(strVal(lfirst(lc)));
			args[0] = PointerGetDatum(construct_array(kd, n, TEXTOID, -1, false, TYPALIGN_INT));
			if (SPI_execute_with_args("SELECT k FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(k, i) "
									  "WHERE rvbbit._cache_has(k) ORDER BY i",
									  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read the cache");
			cached = (int64) SPI_processed;
			/* cached first calls cost nothing */
			if (cached > 0)
			{
				uint64		j;

				for (j = 0; j < SPI_processed; j++)
				{
					char	   *hit = SPI_getvalue(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1);
					ListCell   *kc;
					ListCell   *cc;

					forboth(kc, keys, cc, row_first_cost)
						if (strcmp(strVal(lfirst(kc)), hit) == 0)
						{
							first_cost += floatVal(lfirst(cc));
							break;
						}
				}
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		rv_cascade_free(c);
	}
	PG_END_TRY();

	values[0] = Int64GetDatum(nrows);
	values[1] = Int64GetDatum(cached);
	values[2] = Int32GetDatum(ncells);
	{
		Datum	   *md = palloc(sizeof(Datum) * Max(1, list_length(models)));
		ListCell   *lc;
		int			n = 0;

		foreach(lc, models)
			md[n++] = CStringGetTextDatum(strVal(lfirst(lc)));
		values[3] = PointerGetDatum(construct_array(md, n, TEXTOID, -1, false, TYPALIGN_INT));
	}
	values[4] = Int64GetDatum(tin);
	values[5] = Int64GetDatum(tout);
	values[6] = DirectFunctionCall1(float8_numeric, Float8GetDatum(Max(cost - first_cost, 0)));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}
