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

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "catalog/pg_index.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

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

/*
 * Beside each queued cache entry: whether the cache lookup of its request
 * found no entry (WkTask.key_absent with rvbbit.cache on), so the direct
 * write skips the ON CONFLICT pre-check for it (see wk_write_direct).
 */
static bool *wk_cache_absent = NULL;
static int	wk_cache_absent_cap = 0;

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
		t->key_absent = hits != NULL && !json_object_object_get_ex(hits, t->key, NULL);
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
 * The direct writes.  An INSERT ... SELECT unnest(...) through SPI cost
 * about 77,000 instructions per row (cache entry and call record): the
 * executor's start-up for every batch, the set-returning functions, the
 * ON CONFLICT machinery.  For the tables as the extension creates them the
 * worker writes the rows itself, the way COPY FROM does: one tuple slot a
 * row, table_multi_insert, then the index entries with the executor's own
 * ExecInsertIndexTuples (so the unique checks, and any index an
 * administrator added, work as for an INSERT).  What the INSERT did, this
 * does too:
 *
 *	- columns without a value get their default (call_log.id its nextval,
 *	  called_at and created_at now()), evaluated row by row in the buffer's
 *	  order, so call_log ids are in the same order as before;
 *	- NOT NULL and CHECK constraints (ExecConstraints raises the same
 *	  errors), and a bigint value for an int column is range-checked like
 *	  the assignment cast ("integer out of range");
 *	- the cache's ON CONFLICT (key) DO NOTHING: a key that comes twice in
 *	  the batch is written once (its first row).  A row whose request the
 *	  worker looked up and did not find (the usual case: the reply was
 *	  paid for because the key was not there) goes straight in.  Any other
 *	  row (rvbbit.cache off, or an entry too old to use) is checked against
 *	  the table first (ExecCheckIndexConstraints, the pre-check of INSERT
 *	  ... ON CONFLICT: it waits for a transaction still inserting the key)
 *	  and skipped when the key is there.  If another worker committed the
 *	  key since the lookup or the check, the unique index raises
 *	  unique_violation (waiting first for a transaction still inserting it)
 *	  and wk_flush_writes() writes the whole batch again with the INSERT
 *	  statements, whose ON CONFLICT skips the row.  The pre-check of every
 *	  row cost about 10,000 instructions; a batch written twice is rare
 *	  (the backend already sends a statement's identical requests once).
 *
 * Only a plain table qualifies: a table with a trigger, a rule or a stored
 * generated column (none of which the extension creates; an administrator
 * could), a column of another type than the buffer's, or, for the cache, a
 * unique index other than the primary key on (key), is written with the
 * INSERT statement instead.  Row-level security does not apply (the worker
 * is the bootstrap superuser, see rv_worker_main), nor do privileges.  The
 * tuples are WAL-logged like any insert.
 */

/* What a direct write knows about its table, for one batch. */
typedef struct WkDirect
{
	Relation	rel;
	TupleDesc	td;
	EState	   *estate;
	ResultRelInfo *rri;
	int			natts;
	int		   *col_of_att;		/* [natts]: buffer column, or -1 */
	bool	   *narrow;			/* [natts]: int8 buffer value to an int4 column */
	ExprState **defexpr;		/* [natts]: the default of a column without a
								 * buffer column, or NULL */
	List	   *arbiters;		/* the cache: its unique index on (key) */
} WkDirect;

/*
 * Whether rel can be written directly (see above) with the columns of b
 * named by cols; fills d's column map.  Needs the indexes open (for
 * on_conflict: the one unique index, on the buffer's column 0).  Runs in
 * the batch's executor memory.
 */
static bool
wk_direct_setup(WkDirect *d, const RvColBuf *b, const char *const *cols,
				bool on_conflict)
{
	Relation	rel = d->rel;
	TupleDesc	td = d->td;
	int			i;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->trigdesc != NULL ||
		rel->rd_rules != NULL)
		return false;

	d->natts = td->natts;
	d->col_of_att = palloc(sizeof(int) * td->natts);
	d->narrow = palloc0(sizeof(bool) * td->natts);
	d->defexpr = palloc0(sizeof(ExprState *) * td->natts);
	for (i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);
		int			c;

		d->col_of_att[i] = -1;
		if (att->attisdropped)
			continue;
		if (att->attgenerated != '\0')
			return false;		/* a generated column (stored or virtual) */
		for (c = 0; c < b->ncols; c++)
			if (strcmp(NameStr(att->attname), cols[c]) == 0)
				break;
		if (c < b->ncols)
		{
			if (att->atttypid == INT4OID && b->types[c] == INT8OID)
				d->narrow[i] = true;
			else if (att->atttypid != b->types[c])
				return false;
			d->col_of_att[i] = c;
		}
		else
		{
			Expr	   *def = (Expr *) build_column_default(rel, i + 1);

			if (def != NULL)
				d->defexpr[i] = ExecPrepareExpr(def, d->estate);
		}
	}

	d->arbiters = NIL;
	for (i = 0; i < d->rri->ri_NumIndices; i++)
	{
		Relation	ind = d->rri->ri_IndexRelationDescs[i];
		Form_pg_index fi = ind->rd_index;

		if (!fi->indisunique && !fi->indisexclusion)
			continue;
		if (!on_conflict)
			continue;			/* an INSERT's unique check: the same */
		if (d->arbiters != NIL || fi->indisexclusion || fi->indnkeyatts != 1 ||
			fi->indkey.values[0] == 0 || d->col_of_att[fi->indkey.values[0] - 1] != 0 ||
			d->rri->ri_IndexRelationInfo[i]->ii_Predicate != NIL)
			return false;
		d->arbiters = list_make1_oid(RelationGetRelid(ind));
	}
	if (on_conflict && d->arbiters == NIL)
		return false;
	return true;
}

/* Fill slot with row r of b (and the defaults), checking the constraints. */
static void
wk_direct_fill(WkDirect *d, const RvColBuf *b, int r, TupleTableSlot *slot)
{
	ExprContext *econtext = GetPerTupleExprContext(d->estate);
	bool		check = d->td->constr != NULL && d->td->constr->num_check > 0;
	int			i;

	ExecClearTuple(slot);
	for (i = 0; i < d->natts; i++)
	{
		int			c = d->col_of_att[i];

		if (c >= 0)
		{
			slot->tts_isnull[i] = b->nulls[c][r];
			slot->tts_values[i] = b->values[c][r];
			if (d->narrow[i] && !b->nulls[c][r])
			{
				int64		v = DatumGetInt64(b->values[c][r]);

				if (v < PG_INT32_MIN || v > PG_INT32_MAX)
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("integer out of range")));
				slot->tts_values[i] = Int32GetDatum((int32) v);
			}
		}
		else if (d->defexpr[i] != NULL)
			slot->tts_values[i] = ExecEvalExpr(d->defexpr[i], econtext,
											   &slot->tts_isnull[i]);
		else
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		if (slot->tts_isnull[i] && TupleDescAttr(d->td, i)->attnotnull)
			check = true;
	}
	ExecStoreVirtualTuple(slot);
	if (check)
		ExecConstraints(d->rri, slot, d->estate);
}

/* The order of the cache rows by key, then by row number. */
static int
wk_key_cmp(const void *a, const void *b, void *arg)
{
	const RvColBuf *buf = (const RvColBuf *) arg;
	int			ra = *(const int *) a;
	int			rb = *(const int *) b;
	text	   *ka = (text *) DatumGetPointer(buf->values[WC_KEY][ra]);
	text	   *kb = (text *) DatumGetPointer(buf->values[WC_KEY][rb]);
	int			la = VARSIZE_ANY_EXHDR(ka);
	int			lb = VARSIZE_ANY_EXHDR(kb);
	int			cmp = memcmp(VARDATA_ANY(ka), VARDATA_ANY(kb), Min(la, lb));

	if (cmp == 0 && la != lb)
		cmp = la < lb ? -1 : 1;
	if (cmp == 0)
		cmp = ra < rb ? -1 : ra > rb ? 1 : 0;
	return cmp;
}

/*
 * For the cache: which rows to write, in buffer order: the first row of
 * each key (the key column is never NULL: wk_queue_cache_write sets it).
 */
static bool *
wk_first_of_key(const RvColBuf *b)
{
	bool	   *first = palloc(sizeof(bool) * b->nrows);
	int		   *order = palloc(sizeof(int) * b->nrows);
	int			i;

	for (i = 0; i < b->nrows; i++)
		order[i] = i;
	if (b->nrows > 1)
		qsort_arg(order, b->nrows, sizeof(int), wk_key_cmp, (void *) b);
	for (i = 0; i < b->nrows; i++)
	{
		text	   *k = (text *) DatumGetPointer(b->values[WC_KEY][order[i]]);
		text	   *prev = i > 0 ? (text *) DatumGetPointer(b->values[WC_KEY][order[i - 1]]) : NULL;

		first[order[i]] = prev == NULL ||
			VARSIZE_ANY_EXHDR(k) != VARSIZE_ANY_EXHDR(prev) ||
			memcmp(VARDATA_ANY(k), VARDATA_ANY(prev), VARSIZE_ANY_EXHDR(k)) != 0;
	}
	pfree(order);
	return first;
}

/*
 * Insert the rows of b into rvbbit.relname directly (see above); for the
 * cache (on_conflict) the rows whose key is there already are skipped,
 * checked first unless absent[row] says the lookup found no entry.
 * Returns false, having written nothing, when the table is not of a shape
 * this handles: the caller runs the INSERT statement then.  Runs in the
 * caller's transaction; errors are raised (unique_violation when another
 * worker committed a cache key after the check).
 */
static bool
wk_write_direct(RvColBuf *b, const char *relname, const char *const *cols,
				bool on_conflict, const bool *absent)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid("rvbbit", false));
	MemoryContext old;
	WkDirect	d;
	TupleTableSlot **slots;
	bool	   *first = NULL;
	int			nslots = 0;
	int			r;

	if (!OidIsValid(relid))
		return false;
	memset(&d, 0, sizeof(d));
	d.estate = CreateExecutorState();
	old = MemoryContextSwitchTo(d.estate->es_query_cxt);
	d.estate->es_output_cid = GetCurrentCommandId(true);
	d.rel = table_open(relid, RowExclusiveLock);
	d.td = RelationGetDescr(d.rel);
	d.rri = makeNode(ResultRelInfo);
	InitResultRelInfo(d.rri, d.rel, 0, NULL, 0);
	ExecOpenIndices(d.rri, on_conflict);

	if (!wk_direct_setup(&d, b, cols, on_conflict))
	{
		ExecCloseIndices(d.rri);
		table_close(d.rel, NoLock);
		MemoryContextSwitchTo(old);
		FreeExecutorState(d.estate);
		return false;
	}

	if (on_conflict)
		first = wk_first_of_key(b);
	slots = palloc(sizeof(TupleTableSlot *) * b->nrows);
	for (r = 0; r < b->nrows; r++)
	{
		TupleTableSlot *slot;

		if (first != NULL && !first[r])
			continue;
		slot = table_slot_create(d.rel, &d.estate->es_tupleTable);
		wk_direct_fill(&d, b, r, slot);
		if (on_conflict && !absent[r])
		{
			ItemPointerData conflict_tid;
			ItemPointerData invalid_tid;

			ItemPointerSetInvalid(&invalid_tid);
			if (!rv_ExecCheckIndexConstraints(d.rri, slot, d.estate, &conflict_tid,
											  &invalid_tid, d.arbiters))
				continue;		/* the key is there: DO NOTHING */
		}
		slots[nslots++] = slot;
	}

	if (nslots > 0)
	{
		int			i;

		table_multi_insert(d.rel, slots, nslots, d.estate->es_output_cid, 0, NULL);
		for (i = 0; i < nslots; i++)
		{
			List	   *recheck;

			ResetPerTupleExprContext(d.estate);
			recheck = rv_ExecInsertIndexTuples(d.rri, slots[i], d.estate);
			Assert(recheck == NIL);
			(void) recheck;
		}
	}

	ExecResetTupleTable(d.estate->es_tupleTable, false);
	ExecCloseIndices(d.rri);
	table_close(d.rel, NoLock);
	MemoryContextSwitchTo(old);
	FreeExecutorState(d.estate);
	return true;
}

/* The INSERT statement writing the cache entries. */
static void
wk_write_cache_sql(void)
{
	Datum		args[RV_COLBUF_MAX_COLS];

	rv_colbuf_arrays(&wk_cache_rows, args);
	if (wk_cache_plan == NULL)
		wk_kept_plan(&wk_cache_plan,
					 wk_insert_sql("rvbbit.cache", wk_cache_cols, WC_NCOLS, NULL,
								   " ON CONFLICT (key) DO NOTHING"),
					 &wk_cache_rows);
	if (SPI_execute_plan(wk_cache_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write rvbbit.cache");
}

/* The INSERT statement writing the call records. */
static void
wk_write_calls_sql(void)
{
	/*
	 * A database still at 0.1 (not yet ALTER EXTENSION ... UPDATE) has none
	 * of 0.2's columns: budget_role_oid and the provider's reply fields all
	 * came with the 0.2 script.
	 */
	bool		has_br = wk_call_log_has_budget_role();
	Datum		args[RV_COLBUF_MAX_COLS];

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

/*
 * One transaction writing the queued rows: directly, or (by_sql, or when
 * a table is not of the shape for that) with the INSERT statements.
 */
static void
wk_flush_xact(bool by_sql)
{
	rv_bgxact_begin("rvbbit: recording calls");
	if (wk_cache_rows.nrows > 0 &&
		(by_sql || !wk_write_direct(&wk_cache_rows, "cache", wk_cache_cols, true,
									 wk_cache_absent)))
		wk_write_cache_sql();
	if (wk_call_rows.nrows > 0 &&
		(by_sql || !wk_write_direct(&wk_call_rows, "call_log", wk_call_cols, false,
									 NULL)))
		wk_write_calls_sql();
	rv_bgxact_end(false);
}

/*
 * Write the queued cache entries and call records in one transaction.  A
 * unique_violation on rvbbit.cache in the direct writes (another
 * transaction committed a key since the lookup or the check) makes it
 * write them once more with the INSERT statements, whose ON CONFLICT
 * skips that entry; any other failure is logged.  The results still go to
 * the backends.
 */
void
wk_flush_writes(void)
{
	volatile bool again = false;

	if (wk_cache_rows.nrows == 0 && wk_call_rows.nrows == 0)
		return;

	PG_TRY();
	{
		wk_flush_xact(false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(wk_loop_cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION &&
			edata->table_name != NULL && strcmp(edata->table_name, "cache") == 0)
		{
			FlushErrorState();
			rv_bgxact_abort();
			elog(DEBUG1, "rvbbit worker: a cache entry of this batch was written by another transaction; writing the batch again with INSERT");
			again = true;
		}
		else
			wk_xact_abort();
		FreeErrorData(edata);
	}
	PG_END_TRY();

	if (again)
	{
		PG_TRY();
		{
			wk_flush_xact(true);
		}
		PG_CATCH();
		{
			wk_xact_abort();
		}
		PG_END_TRY();
	}

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

	if (r >= wk_cache_absent_cap)
	{
		int			cap = Max(64, 2 * wk_cache_absent_cap);

		wk_cache_absent = wk_cache_absent == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(bool) * cap) :
			repalloc(wk_cache_absent, sizeof(bool) * cap);
		wk_cache_absent_cap = cap;
	}
	wk_cache_absent[r] = s->cache_read && t->key_absent;
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
