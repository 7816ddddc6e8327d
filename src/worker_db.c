/*-------------------------------------------------------------------------
 *
 * worker_db.c
 *	  The rvbbit worker's database side: a statement's providers, prices
 *	  and daily budget, the cache lookups, and the batched writes of cache
 *	  entries and call records, each in a short transaction of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "budget.h"
#include "colbuf.h"
#include "worker.h"

/*
 * The rows to write to rvbbit.cache / rvbbit.call_log at the next flush,
 * column by column (colbuf.h): the flush hands each column to SQL as an
 * array and unnests them.
 */
enum
{
	WC_KEY, WC_MODEL, WC_CASCADE, WC_CELL, WC_RESPONSE, WC_INPUT_TOKENS,
	WC_OUTPUT_TOKENS, WC_ROLE_OID, WC_NCOLS
};
static const Oid wk_cache_types[WC_NCOLS] = {
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, OIDOID
};

enum
{
	WL_STATEMENT_ID, WL_BACKEND_PID, WL_ROLE_OID, WL_BUDGET_ROLE_OID,
	WL_CASCADE, WL_CELL, WL_MODEL, WL_ATTEMPT, WL_STATUS, WL_HTTP_STATUS,
	WL_INPUT_TOKENS, WL_OUTPUT_TOKENS, WL_COST, WL_LATENCY_MS, WL_ERROR,
	WL_CACHE_KEY, WL_RESPONSE_MODEL, WL_RESPONSE_ID, WL_FINISH_REASON,
	WL_CACHED_TOKENS, WL_NCOLS
};
static const Oid wk_call_types[WL_NCOLS] = {
	INT8OID, INT4OID, OIDOID, OIDOID,
	TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, INT4OID,
	INT8OID, INT8OID, FLOAT8OID, FLOAT8OID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	INT8OID
};

static RvColBuf wk_cache_rows;
static RvColBuf wk_call_rows;

/* the keys of one cache lookup */
static const Oid wk_lookup_types[1] = {TEXTOID};
static RvColBuf wk_lookup_keys;

/* The worker starts with nothing to write. */
void
wk_db_init(void)
{
	rv_colbuf_init(&wk_cache_rows, TopMemoryContext, WC_NCOLS, wk_cache_types);
	rv_colbuf_init(&wk_call_rows, TopMemoryContext, WL_NCOLS, wk_call_types);
	rv_colbuf_init(&wk_lookup_keys, TopMemoryContext, 1, wk_lookup_types);
}

/*
 * Report and clear an error caught from a worker transaction, and abort
 * the transaction.  The worker carries on.
 */
static void
wk_xact_abort(void)
{
	MemoryContextSwitchTo(wk_loop_cxt);
	EmitErrorReport();
	FlushErrorState();
	rv_bgxact_abort();
}

/*
 * Whether rvbbit.call_log has the budget_role_oid column (0.2).  A
 * database still at 0.1 (before ALTER EXTENSION rvbbit UPDATE) has not:
 * calls are recorded without it and the day's spend is read by role_oid.
 * Needs a transaction.
 */
static bool
wk_call_log_has_budget_role(void)
{
	Oid			nsp = get_namespace_oid("rvbbit", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("call_log", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "budget_role_oid") != InvalidAttrNumber;
}

/*
 * The statement's role has a daily budget: make sure the shared table has
 * the role's entry for today, reading what the role spent today from
 * rvbbit.call_log when the entry is new (after a restart).  Runs inside
 * the caller's transaction; raises an error (failing the statement) when
 * the table is full, so the role is refused rather than unlimited.
 */
static void
wk_budget_attach(WkStmt *s)
{
	int32		day = rv_budget_today();
	bool		need_load;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	bool		isnull;
	double		spent;

	if (!rv_budget_attach(s->budget_role, day, &need_load))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many roles have a daily budget in use to track the budget of role \"%s\"",
						s->role_name),
				 errdetail("The shared table for rvbbit.budget_dollars_per_day holds %d roles a day. No call was sent.",
						   rv_max_budget_roles),
				 errhint("Raise rvbbit.max_budget_roles (it needs a restart of the server).")));
	if (!need_load)
		return;
	args[0] = ObjectIdGetDatum(s->budget_role);
	if (SPI_execute_with_args(wk_call_log_has_budget_role() ?
							  "SELECT coalesce(sum(cost), 0)::float8 FROM rvbbit.call_log "
							  "WHERE coalesce(budget_role_oid, role_oid) = $1 AND called_at >= "
							  "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" :
							  "SELECT coalesce(sum(cost), 0)::float8 FROM rvbbit.call_log "
							  "WHERE role_oid = $1 AND called_at >= "
							  "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the day's spend from rvbbit.call_log");
	spent = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	rv_budget_loaded(s->budget_role, day, isnull ? 0 : (uint64) (spent * 1e6));
}

/*
 * Load the providers table and the price table for a statement.  Runs its
 * own transaction; on error the statement fails with the message.
 */
bool
wk_load_config(WkStmt *s, json_object *hdr)
{
	volatile bool ok = true;
	MemoryContext old;

	s->nproviders = 1;
	s->providers = MemoryContextAllocZero(s->cxt, sizeof(WkProvider) * 1);
	s->providers[0].api_base = MemoryContextStrdup(s->cxt, wk_json_str(hdr, "api_base") ? wk_json_str(hdr, "api_base") : "");
	s->providers[0].api_key = MemoryContextStrdup(s->cxt, wk_json_str(hdr, "api_key") ? wk_json_str(hdr, "api_key") : "");
	/* every key this worker sends is masked in its log lines and errors */
	rv_secret_register(s->providers[0].api_key);
	s->providers[0].flavor = (RvFlavor) wk_json_int(hdr, "flavor", 0);
	s->providers[0].rpm = -1;
	s->providers[0].tpm = -1;
	s->prices = json_object_new_object();

	PG_TRY();
	{
		uint64		i;

		rv_bgxact_begin("rvbbit: loading providers");
		if (SPI_execute("SELECT prefix, api_base, api_flavor, api_key, api_key_env, "
						"requests_per_minute, tokens_per_minute FROM rvbbit.providers",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read rvbbit.providers");
		old = MemoryContextSwitchTo(s->cxt);
		s->providers = repalloc(s->providers,
								sizeof(WkProvider) * (1 + SPI_processed));
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			WkProvider *p = &s->providers[s->nproviders++];
			char	   *flavor = SPI_getvalue(tup, td, 3);
			char	   *key = SPI_getvalue(tup, td, 4);
			char	   *env = SPI_getvalue(tup, td, 5);
			char	   *rpm = SPI_getvalue(tup, td, 6);
			char	   *tpm = SPI_getvalue(tup, td, 7);

			p->prefix = SPI_getvalue(tup, td, 1);
			p->api_base = SPI_getvalue(tup, td, 2);
			p->flavor = rv_llm_flavor(flavor);
			if (key == NULL && env != NULL && getenv(env) != NULL)
				key = pstrdup(getenv(env));
			p->api_key = key ? key : pstrdup("");
			rv_secret_register(p->api_key);
			p->rpm = rpm ? atoi(rpm) : 0;
			p->tpm = tpm ? atoi(tpm) : 0;
		}
		MemoryContextSwitchTo(old);

		{
			char	   *rn = GetUserNameFromId(s->budget_role, true);

			s->role_name = MemoryContextStrdup(s->cxt, rn ? rn : "?");
		}
		if (s->budget_day > 0)
			wk_budget_attach(s);

		/* a database still at 0.1 has no cached_input_per_million column */
		if (SPI_execute(wk_call_log_has_budget_role() ?
						"SELECT model, input_per_million::float8 / 1e6, "
						"output_per_million::float8 / 1e6, "
						"coalesce(cached_input_per_million, input_per_million)::float8 / 1e6 "
						"FROM rvbbit.model_prices" :
						"SELECT model, input_per_million::float8 / 1e6, "
						"output_per_million::float8 / 1e6, "
						"input_per_million::float8 / 1e6 "
						"FROM rvbbit.model_prices",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read rvbbit.model_prices");
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			char	   *model = SPI_getvalue(tup, td, 1);
			char	   *pin = SPI_getvalue(tup, td, 2);
			char	   *pout = SPI_getvalue(tup, td, 3);
			char	   *pcached = SPI_getvalue(tup, td, 4);
			json_object *pair = json_object_new_array();

			json_object_array_add(pair, json_object_new_double(pin ? atof(pin) : 0));
			json_object_array_add(pair, json_object_new_double(pout ? atof(pout) : 0));
			json_object_array_add(pair, json_object_new_double(pcached ? atof(pcached) : 0));
			json_object_object_add(s->prices, model, pair);
		}
		rv_bgxact_end(false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(wk_loop_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		rv_bgxact_abort();
		wk_stmt_fatal(s, edata->sqlerrcode, edata->message, edata->detail, edata->hint);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * The cache lookup and the INSERTs of wk_flush_writes(), prepared once per
 * worker with a generic plan and kept (SPI_keepplan): parsing and planning
 * them for every lookup and flush was a tenth of the worker's CPU at 0 ms
 * latency.  The plan cache revalidates them after DDL; a call_log plan for
 * each shape of the table (with and without 0.2's columns).
 */
static SPIPlanPtr wk_lookup_plan = NULL;
static SPIPlanPtr wk_cache_plan = NULL;
static SPIPlanPtr wk_call_plan[2] = {NULL, NULL};

static SPIPlanPtr
wk_kept_plan(SPIPlanPtr *slot, const char *sql, const RvColBuf *args)
{
	if (*slot == NULL)
	{
		Oid			argtypes[RV_COLBUF_MAX_COLS];
		SPIPlanPtr	plan;

		rv_colbuf_array_types(args, argtypes);
		plan = SPI_prepare_cursor(sql, args->ncols, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "could not prepare an rvbbit worker query: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep an rvbbit worker query");
		*slot = plan;
	}
	return *slot;
}

/*
 * Look up every task in the lookup queue in rvbbit.cache, in one
 * transaction.  Hits are answered at once; misses move to the ready
 * queue.  A failed lookup sends everything to the ready queue.
 */
void
wk_cache_lookup(void)
{
	json_object *volatile hits = NULL;
	dlist_mutable_iter it;

	if (dlist_is_empty(&wk_lookup))
		return;

	dlist_foreach_modify(it, &wk_lookup)
	{
		WkTask	   *t = dlist_container(WkTask, node, it.cur);

		rv_colbuf_set_text(&wk_lookup_keys, rv_colbuf_add_row(&wk_lookup_keys), 0, t->key);
	}

	PG_TRY();
	{
		Datum		args[1];
		uint64		i;

		rv_bgxact_begin("rvbbit: cache lookup");
		rv_colbuf_arrays(&wk_lookup_keys, args);
		if (SPI_execute_plan(wk_kept_plan(&wk_lookup_plan,
										  "SELECT key, response, input_tokens, output_tokens, "
										  "extract(epoch FROM now() - created_at)::float8 "
										  "FROM rvbbit.cache WHERE key = ANY ($1)",
										  &wk_lookup_keys),
							 args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read rvbbit.cache");
		hits = json_object_new_object();
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			char	   *age = SPI_getvalue(tup, td, 5);
			json_object *hit = json_object_new_object();
			char	   *tin = SPI_getvalue(tup, td, 3);
			char	   *tout = SPI_getvalue(tup, td, 4);

			json_object_object_add(hit, "response", json_object_new_string(SPI_getvalue(tup, td, 2)));
			json_object_object_add(hit, "in", json_object_new_int64(tin ? atol(tin) : 0));
			json_object_object_add(hit, "out", json_object_new_int64(tout ? atol(tout) : 0));
			json_object_object_add(hit, "age", json_object_new_double(age ? atof(age) : 0));
			json_object_object_add(hits, SPI_getvalue(tup, td, 1), hit);
		}
		rv_bgxact_end(false);
	}
	PG_CATCH();
	{
		wk_xact_abort();
		if (hits)
			json_object_put(hits);
		hits = NULL;
	}
	PG_END_TRY();

	dlist_foreach_modify(it, &wk_lookup)
	{
		WkTask	   *t = dlist_container(WkTask, node, it.cur);
		json_object *hit = NULL;

		dlist_delete(&t->node);
		if (hits && json_object_object_get_ex(hits, t->key, &hit) &&
			(t->stmt->cache_max_age_s < 0 ||
			 json_object_get_double(json_object_object_get(hit, "age")) <= t->stmt->cache_max_age_s))
		{
			const char *r = wk_json_str(hit, "response");
			char	   *content = pstrdup(r ? r : "");

			wk_task_response(t, content, NULL,
							 (long) wk_json_int(hit, "in", 0),
							 (long) wk_json_int(hit, "out", 0), true, 0);
			pfree(content);
		}
		else
		{
			wk_ready_push(t);
		}
	}
	if (hits)
		json_object_put(hits);
	rv_colbuf_reset(&wk_lookup_keys);
}

/* the columns of the two buffers, by their WC_ and WL_ numbers */
static const char *const wk_cache_cols[WC_NCOLS] = {
	"key", "model", "cascade", "cell", "response", "input_tokens",
	"output_tokens", "role_oid"
};
static const char *const wk_call_cols[WL_NCOLS] = {
	"statement_id", "backend_pid", "role_oid", "budget_role_oid",
	"cascade", "cell", "model", "attempt", "status", "http_status",
	"input_tokens", "output_tokens", "cost", "latency_ms", "error",
	"cache_key", "response_model", "response_id", "finish_reason",
	"cached_tokens"
};

/*
 * "INSERT INTO table (c1, c2, ...) SELECT pg_catalog.unnest($1),
 * pg_catalog.unnest($2), ..." for the columns of cols[0..n) whose skip[]
 * is false (skip may be NULL); parameter $i+1 is column i's array.  The
 * set-returning functions in the select list advance in step, one row per
 * array element, without the tuplestore a FROM clause would fill.
 */
static char *
wk_insert_sql(const char *table, const char *const *cols, int n,
			  const bool *skip, const char *tail)
{
	StringInfoData buf;
	bool		first = true;
	int			i;

	initStringInfo(&buf);
	appendStringInfo(&buf, "INSERT INTO %s (", table);
	for (i = 0; i < n; i++)
		if (skip == NULL || !skip[i])
		{
			appendStringInfo(&buf, "%s%s", first ? "" : ", ", cols[i]);
			first = false;
		}
	appendStringInfoString(&buf, ") SELECT ");
	first = true;
	for (i = 0; i < n; i++)
		if (skip == NULL || !skip[i])
		{
			appendStringInfo(&buf, "%spg_catalog.unnest($%d)", first ? "" : ", ", i + 1);
			first = false;
		}
	appendStringInfoString(&buf, tail);
	return buf.data;
}

/*
 * Write the queued cache entries and call records in one transaction.
 * A failure is logged; the results still go to the backends.
 */
void
wk_flush_writes(void)
{
	bool		have_cache = wk_cache_rows.nrows > 0;
	bool		have_calls = wk_call_rows.nrows > 0;

	if (!have_cache && !have_calls)
		return;

	PG_TRY();
	{
		Datum		args[RV_COLBUF_MAX_COLS];

		rv_bgxact_begin("rvbbit: recording calls");
		if (have_cache)
		{
			rv_colbuf_arrays(&wk_cache_rows, args);
			if (wk_cache_plan == NULL)
				wk_kept_plan(&wk_cache_plan,
							 wk_insert_sql("rvbbit.cache", wk_cache_cols, WC_NCOLS, NULL,
										   " ON CONFLICT (key) DO NOTHING"),
							 &wk_cache_rows);
			if (SPI_execute_plan(wk_cache_plan, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not write rvbbit.cache");
		}
		if (have_calls)
		{
			/*
			 * A database still at 0.1 (not yet ALTER EXTENSION ... UPDATE)
			 * has none of 0.2's columns: budget_role_oid and the provider's
			 * reply fields all came with the 0.2 script.
			 */
			bool		has_br = wk_call_log_has_budget_role();

			rv_colbuf_arrays(&wk_call_rows, args);
			if (wk_call_plan[has_br] == NULL)
			{
				bool		skip[WL_NCOLS] = {0};

				if (!has_br)
				{
					skip[WL_BUDGET_ROLE_OID] = true;
					skip[WL_RESPONSE_MODEL] = true;
					skip[WL_RESPONSE_ID] = true;
					skip[WL_FINISH_REASON] = true;
					skip[WL_CACHED_TOKENS] = true;
				}
				wk_kept_plan(&wk_call_plan[has_br],
							 wk_insert_sql("rvbbit.call_log", wk_call_cols, WL_NCOLS, skip, ""),
							 &wk_call_rows);
			}
			if (SPI_execute_plan(wk_call_plan[has_br], args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not write rvbbit.call_log");
		}
		rv_bgxact_end(false);
	}
	PG_CATCH();
	{
		wk_xact_abort();
	}
	PG_END_TRY();

	rv_colbuf_reset(&wk_cache_rows);
	rv_colbuf_reset(&wk_call_rows);
}

/*
 * Queue a call record for the next flush.  attempt is the number of
 * requests sent for the cell before this one (transport retries and
 * schema re-asks alike); a record that is not a cache hit counts one more.
 * Returns the record, for the caller to add the reply's details.
 */
int
wk_record_call(WkTask *t, const char *status, long http_status, long tin,
			   long tout, double cost, double latency_ms, const char *error)
{
	RvColBuf   *b = &wk_call_rows;
	WkStmt	   *s = t->stmt;
	int			r;

	/* per-row counters for the backend (EXPLAIN ANALYZE) */
	if (strcmp(status, "retry") == 0)
		t->retries++;
	if (latency_ms > 0)
		t->latency_ms += latency_ms;

	r = rv_colbuf_add_row(b);
	rv_colbuf_set_int(b, r, WL_STATEMENT_ID, s->seghdr->statement_id);
	rv_colbuf_set_int(b, r, WL_BACKEND_PID, s->seghdr->backend_pid);
	rv_colbuf_set_int(b, r, WL_ROLE_OID, s->seghdr->roleid);
	rv_colbuf_set_int(b, r, WL_BUDGET_ROLE_OID, s->budget_role);
	rv_colbuf_set_text(b, r, WL_CASCADE, s->cascade_name);
	rv_colbuf_set_text(b, r, WL_CELL, s->cascade->cells[t->cell].name);
	rv_colbuf_set_text(b, r, WL_MODEL, t->model_ref ? t->model_ref : "");
	rv_colbuf_set_int(b, r, WL_ATTEMPT, t->cell_tries);
	if (strcmp(status, "cached") != 0)
		t->cell_tries++;
	rv_colbuf_set_text(b, r, WL_STATUS, status);
	if (http_status > 0)
		rv_colbuf_set_int(b, r, WL_HTTP_STATUS, (int) http_status);
	if (tin >= 0)
		rv_colbuf_set_int(b, r, WL_INPUT_TOKENS, tin);
	if (tout >= 0)
		rv_colbuf_set_int(b, r, WL_OUTPUT_TOKENS, tout);
	rv_colbuf_set_float8(b, r, WL_COST, cost);
	rv_colbuf_set_float8(b, r, WL_LATENCY_MS, latency_ms);
	if (error)
		rv_colbuf_set_text(b, r, WL_ERROR, rv_redact_secrets(error));
	rv_colbuf_set_text(b, r, WL_CACHE_KEY, t->key);
	return r;
}

/* Queue a usable reply of a task's current cell for rvbbit.cache. */
void
wk_queue_cache_write(WkTask *t, const char *content, long tin, long tout)
{
	RvColBuf   *b = &wk_cache_rows;
	WkStmt	   *s = t->stmt;
	int			r = rv_colbuf_add_row(b);

	rv_colbuf_set_text(b, r, WC_KEY, t->key);
	rv_colbuf_set_text(b, r, WC_MODEL, t->model_ref);
	rv_colbuf_set_text(b, r, WC_CASCADE, s->cascade_name);
	rv_colbuf_set_text(b, r, WC_CELL, s->cascade->cells[t->cell].name);
	rv_colbuf_set_text(b, r, WC_RESPONSE, content);
	if (tin >= 0)
		rv_colbuf_set_int(b, r, WC_INPUT_TOKENS, tin);
	if (tout >= 0)
		rv_colbuf_set_int(b, r, WC_OUTPUT_TOKENS, tout);
	rv_colbuf_set_int(b, r, WC_ROLE_OID, s->seghdr->roleid);
}

/* Add what the provider said about its reply to call record r. */
void
wk_record_reply(int r, const RvLlmResponse *resp)
{
	RvColBuf   *b = &wk_call_rows;

	if (resp == NULL || r < 0 || r >= b->nrows)
		return;
	if (resp->model)
		rv_colbuf_set_text(b, r, WL_RESPONSE_MODEL, resp->model);
	if (resp->id)
		rv_colbuf_set_text(b, r, WL_RESPONSE_ID, resp->id);
	if (resp->finish_reason)
		rv_colbuf_set_text(b, r, WL_FINISH_REASON, resp->finish_reason);
	if (resp->cached_tokens >= 0)
		rv_colbuf_set_int(b, r, WL_CACHED_TOKENS, resp->cached_tokens);
}
