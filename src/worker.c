/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The rvbbit background worker: runs cascades for the statements of
 *	  one database, many statements and many HTTP requests at a time.
 *
 * A worker is started on demand by pool.c, connects to its database as the
 * bootstrap superuser and loops:
 *
 *	1. take new statement segments from the shared inbox and attach;
 *	2. read header / row / end messages from each statement's request queue
 *	   (never blocking) and turn rows into tasks;
 *	3. render each task's next cell, build the provider request, and look
 *	   the request up in rvbbit.cache (one transaction for all new tasks);
 *	4. start HTTP requests for cache misses while the caps allow (per
 *	   worker, cluster-wide rvbbit.max_concurrency, rate limits);
 *	5. let libcurl progress, handle finished requests: retry 429/5xx with
 *	   backoff, validate against the cell's output_schema and re-ask, move
 *	   to the next cell, or finish the row;
 *	6. commit the cache entries and call records of everything that
 *	   completed in one transaction, then send the results to the backends;
 *	7. wait on one WaitEventSet: the latch (new statements, rows, detached
 *	   queues, SIGTERM, SIGHUP), postmaster death, and curl's epoll set.
 *
 * A statement whose backend detached (finished, cancelled, or died) has its
 * requests aborted at once.  The worker exits after
 * rvbbit.worker_idle_timeout with nothing to do, on SIGTERM, or with the
 * postmaster.
 *
 * Memory: statement state lives in a per-statement memory context; cascade
 * and template state, JSON values (json-c) and HTTP buffers are malloc'd by
 * the pure modules and freed explicitly.  Nothing here runs inside a
 * transaction except the short cache/call-log transactions, which catch
 * their own errors so that a failed write never loses the results in
 * hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <ctype.h>
#include <math.h>
#include <sys/resource.h>



#include "access/xact.h"
#include "common/cryptohash.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "budget.h"
#include "cascade.h"
#include "http.h"
#include "jsonschema.h"
#include "llm.h"
#include "ratelimit.h"
#include "request.h"
#include "rvbbit.h"

/* A provider a model can be routed to. */
typedef struct WkProvider
{
	char	   *prefix;			/* NULL for the default provider */
	char	   *api_base;
	char	   *api_key;
	RvFlavor	flavor;
	int			rpm;			/* -1: use the GUC */
	int			tpm;
} WkProvider;

/* One statement attached to this worker. */
typedef struct WkStmt
{
	dlist_node	node;
	MemoryContext cxt;
	dsm_segment *seg;
	shm_mq_handle *inq;			/* requests: backend -> worker */
	shm_mq_handle *outq;		/* results: worker -> backend */
	RvSegmentHeader *seghdr;
	RvProgress *progress;		/* or NULL */
	bool		got_header;
	bool		input_done;
	bool		closing;		/* backend gone or fatal error queued */
	bool		detached;		/* the backend went away */
	int			ntasks;			/* tasks not yet finished */
	dlist_head	outbox;			/* WkMsg waiting to be sent */

	/* from the header */
	char	   *cascade_name;
	RvCascade  *cascade;
	char	   *default_model;
	char	   *model_override; /* or NULL */
	long		timeout_ms;
	long		stall_ms;		/* rvbbit.stall_timeout of the session */
	long		retry_max_delay_ms; /* rvbbit.retry_max_delay */
	int			default_max_tokens; /* rvbbit.default_max_tokens */
	int			max_retries;
	bool		cache_read;
	bool		cache_write;
	long		cache_max_age_s;	/* -1: any age */
	int			nproviders;		/* [0] is the default provider */
	WkProvider *providers;
	json_object *prices;		/* model -> [input, output, cached input]
								 * dollars per token */
	double		budget_day;		/* rvbbit.budget_dollars_per_day of the role, 0: none */
	Oid			budget_role;	/* the role the daily budget is kept for */
	char	   *role_name;		/* for messages (looked up in a transaction) */
	double		budget_stmt;	/* budget_dollars of the statement, < 0: none */
	uint64		stmt_spent;		/* its calls' actual cost so far, micros */
	uint64		stmt_reserved;	/* expected cost of its calls in flight, micros */
	int			batch;			/* MAP BATCH n, 0 when not batching */
	uint64		fair_tag;		/* fair-queuing tag of its last ready task */
} WkStmt;

/* A message waiting in a statement's outbox. */
typedef struct WkMsg
{
	dlist_node	node;
	Size		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} WkMsg;

typedef enum WkTaskState
{
	WT_PREPARE,					/* render the next request */
	WT_LOOKUP,					/* look the request up in the cache */
	WT_READY,					/* waiting for a slot to send */
	WT_RETRY,					/* waiting for retry_at */
	WT_HTTP						/* in flight */
} WkTaskState;

/* One row being run through the cascade. */
typedef struct WkTask
{
	dlist_node	node;			/* in exactly one of the worker's queues */
	WkStmt	   *stmt;
	WkTaskState state;
	int64		seq;
	json_object *scope;			/* input, outputs, state, rows, row_count */
	int			cell;			/* index of the current cell */
	int			attempt;		/* schema attempts made for this cell */
	int			tries;			/* HTTP tries for the current request */
	int			cell_tries;		/* requests sent for this cell, retries and
								 * re-asks included (rvbbit.calls.attempt) */
	RvSend		send;			/* max_tokens and temperature sent */
	int			grow_cap;		/* > 0: max_tokens of the one retry after a
								 * truncated schema reply */
	bool		grown;			/* that retry was made */
	json_object *messages;		/* the conversation for the current cell */
	char	   *body;			/* malloc'd request body */
	size_t		body_len;
	char		key[65];		/* cache key of the request */
	const char *model;			/* model name sent (no prefix) */
	char	   *model_ref;		/* malloc'd model as written (with prefix) */
	WkProvider *provider;
	TimestampTz retry_at;
	uint64		fair_tag;		/* its place in wk_ready (wk_ready_push) */
	RvHttpReq	req;
	bool		in_http;
	bool		counted;		/* holds a cluster-wide concurrency slot */
	RvBudgetHold hold;			/* daily budget reserved for the call in flight */
	uint64		stmt_reserved;	/* statement budget reserved for it, micros */
	/* MAP BATCH: the task answers several rows with one request */
	int			nbatch;			/* rows in the batch, 0 for a single-row task */
	int64	   *seqs;			/* their sequence numbers */
	json_object *batch_rows;	/* their inputs (array) */
	json_object *batch_schema;	/* array of exactly nbatch cell items */
	/* accumulated for the row */
	int			calls;
	int			hits;
	int64		tokens_in;
	int64		tokens_out;
	double		cost;
	int			retries;		/* HTTP attempts that were retried */
	double		latency_ms;		/* HTTP time of the row's calls */
} WkTask;

/* A row to write to rvbbit.cache / rvbbit.call_log at the next flush. */
static json_object *wk_cache_rows = NULL;	/* array */
static json_object *wk_call_rows = NULL;	/* array */

static int	wk_slot = -1;
static uint64 wk_generation = 0;
static MemoryContext wk_cxt = NULL;

/*
 * Everything one turn of the main loop allocates without naming a context
 * (prompts, URLs, auth headers, messages, SPI copies) goes here; it is
 * reset at the start of every turn, so the worker's memory does not grow
 * with the number of requests.  What outlives a turn is allocated in a
 * statement's context or wk_cxt explicitly.
 */
static MemoryContext wk_loop_cxt = NULL;
static ResourceOwner wk_resowner = NULL;
static RvHttp *wk_http = NULL;
static int	wk_max_conn = 100;
static int	wk_counted = 0;		/* cluster-wide slots this worker holds */
static dlist_head wk_stmts = DLIST_STATIC_INIT(wk_stmts);
static dlist_head wk_prepare = DLIST_STATIC_INIT(wk_prepare);
static dlist_head wk_lookup = DLIST_STATIC_INIT(wk_lookup);
static dlist_head wk_ready = DLIST_STATIC_INIT(wk_ready);
static uint64 wk_fair_clock = 0;	/* fair_tag of the task sent last */
static dlist_head wk_retry = DLIST_STATIC_INIT(wk_retry);
static dlist_head wk_inflight = DLIST_STATIC_INIT(wk_inflight);
static long wk_ratelimit_wait_ms = -1;

/*
 * The circuit breaker: per provider base URL and role, shared by the role's
 * statements in this worker (per role, so that one role's failures -- with
 * its own rvbbit.stall_timeout, say -- cannot fail other roles' rows).  A
 * request that could not reach the server (connection
 * refused, no route, connect timeout) or that stalled (nothing received
 * for rvbbit.stall_timeout) counts as a failure; any HTTP reply resets the
 * count.  A request that only ran out of rvbbit.request_timeout does not
 * count: the server was busy answering.  After
 * WK_BREAKER_THRESHOLD failures in a row the breaker opens: for
 * WK_BREAKER_OPEN_MS nothing is sent to that provider, and the rows
 * waiting for it fail at once with an error saying so.  After that the
 * next requests go out again; one more failure reopens it.
 */
#define WK_BREAKER_THRESHOLD	3
#define WK_BREAKER_OPEN_MS		10000
#define WK_BREAKER_MAX			32

typedef struct WkBreaker
{
	char		api_base[256];
	Oid			role;			/* the role the calls are made for */
	int			failures;		/* unreachable in a row */
	TimestampTz open_until;		/* 0: closed */
	char		last_error[256];
} WkBreaker;

static WkBreaker wk_breakers[WK_BREAKER_MAX];
static int	wk_nbreakers = 0;

static void wk_task_done(WkTask *t, json_object *result);
static void wk_task_fail(WkTask *t, int sqlstate, const char *msg,
						 const char *detail, const char *hint);
static void wk_task_fail_flags(WkTask *t, int flags, int sqlstate, const char *msg,
							   const char *detail, const char *hint);
static void wk_task_prepare(WkTask *t);
static void wk_ready_push(WkTask *t);
static void wk_batch_task(WkStmt *s, const int64 *seqs, int k, json_object *rows, int from);
static void wk_task_response(WkTask *t, const char *content,
							 const RvLlmResponse *resp, long tin, long tout,
							 bool cached, double latency_ms);

/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/* json_object_object_get for a string value, or NULL. */
static const char *
wk_json_str(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64
wk_json_int(json_object *obj, const char *key, int64 dflt)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return dflt;
	return json_object_get_int64(v);
}

static bool
wk_json_bool(json_object *obj, const char *key, bool dflt)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return dflt;
	return json_object_get_boolean(v);
}


/* Queue a message (type byte + head + payload parts) for the backend. */
static void
wk_queue_msg(WkStmt *s, char type, const RvResultHead *head,
			 const char *const *parts, int nparts)
{
	Size		len = 1 + sizeof(RvResultHead);
	WkMsg	   *m;
	char	   *p;
	int			i;

	for (i = 0; i < nparts; i++)
		len += strlen(parts[i] ? parts[i] : "") + 1;
	m = MemoryContextAlloc(s->cxt, offsetof(WkMsg, data) + len);
	m->len = len;
	p = m->data;
	*p++ = type;
	memcpy(p, head, sizeof(RvResultHead));
	p += sizeof(RvResultHead);
	for (i = 0; i < nparts; i++)
	{
		size_t		k = strlen(parts[i] ? parts[i] : "");

		memcpy(p, parts[i] ? parts[i] : "", k + 1);
		p += k + 1;
	}
	dlist_push_tail(&s->outbox, &m->node);
}

/* Send a fatal statement error and stop taking its rows. */
static void
wk_stmt_fatal(WkStmt *s, int sqlstate, const char *msg, const char *detail,
			  const char *hint)
{
	RvResultHead head;
	const char *parts[3];

	memset(&head, 0, sizeof(head));
	head.seq = -1;
	head.sqlstate = sqlstate;
	/* provider error bodies end up here: never any key text */
	parts[0] = rv_redact_secrets(msg);
	parts[1] = rv_redact_secrets(detail);
	parts[2] = rv_redact_secrets(hint);
	wk_queue_msg(s, RV_MSG_FATAL, &head, parts, 3);
	/* nothing more of this statement runs; the message still goes out */
	s->closing = true;
}

/* ----------------------------------------------------------------
 * Database access: cache lookups and the batched writes
 * ----------------------------------------------------------------
 */


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
	AbortCurrentTransaction();
	MemoryContextSwitchTo(wk_loop_cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
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
static bool
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
		AbortCurrentTransaction();
		MemoryContextSwitchTo(wk_loop_cxt);
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
wk_kept_plan(SPIPlanPtr *slot, const char *sql)
{
	if (*slot == NULL)
	{
		Oid			argtypes[1] = {TEXTOID};
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, 1, argtypes, CURSOR_OPT_GENERIC_PLAN);

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
static void
wk_cache_lookup(void)
{
	json_object *keys;
	json_object *volatile hits = NULL;
	dlist_mutable_iter it;

	if (dlist_is_empty(&wk_lookup))
		return;

	keys = json_object_new_array();
	dlist_foreach_modify(it, &wk_lookup)
	{
		WkTask	   *t = dlist_container(WkTask, node, it.cur);

		json_object_array_add(keys, json_object_new_string(t->key));
	}

	PG_TRY();
	{
		Datum		args[1];
		uint64		i;

		rv_bgxact_begin("rvbbit: cache lookup");
		args[0] = CStringGetTextDatum(json_object_to_json_string_ext(keys, JSON_C_TO_STRING_PLAIN));
		if (SPI_execute_plan(wk_kept_plan(&wk_lookup_plan,
										  "SELECT key, response, input_tokens, output_tokens, "
										  "extract(epoch FROM now() - created_at)::float8 "
										  "FROM rvbbit.cache WHERE key = ANY (ARRAY("
										  "SELECT jsonb_array_elements_text($1::jsonb)))"),
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
	json_object_put(keys);
}

/*
 * Write the queued cache entries and call records in one transaction.
 * A failure is logged; the results still go to the backends.
 */
static void
wk_flush_writes(void)
{
	bool		have_cache = json_object_array_length(wk_cache_rows) > 0;
	bool		have_calls = json_object_array_length(wk_call_rows) > 0;

	if (!have_cache && !have_calls)
		return;

	PG_TRY();
	{
		Datum		args[1];

		rv_bgxact_begin("rvbbit: recording calls");
		if (have_cache)
		{
			args[0] = CStringGetTextDatum(json_object_to_json_string_ext(wk_cache_rows, JSON_C_TO_STRING_PLAIN));
			if (SPI_execute_plan(wk_kept_plan(&wk_cache_plan,
											  "INSERT INTO rvbbit.cache (key, model, cascade, cell, response, "
											  "input_tokens, output_tokens, role_oid) "
											  "SELECT key, model, cascade, cell, response, input_tokens, "
											  "output_tokens, role_oid FROM jsonb_to_recordset($1::jsonb) AS x("
											  "key text, model text, cascade text, cell text, response text, "
											  "input_tokens int, output_tokens int, role_oid oid) "
											  "ON CONFLICT (key) DO NOTHING"),
								 args, NULL, false, 0) != SPI_OK_INSERT)
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
			const char *v02 = has_br ? ", response_model, response_id, finish_reason, cached_tokens" : "";

			args[0] = CStringGetTextDatum(json_object_to_json_string_ext(wk_call_rows, JSON_C_TO_STRING_PLAIN));
			if (wk_call_plan[has_br] == NULL)
				wk_kept_plan(&wk_call_plan[has_br],
							 psprintf("INSERT INTO rvbbit.call_log (statement_id, backend_pid, role_oid, "
									  "%s"
									  "cascade, cell, model, attempt, status, http_status, input_tokens, "
									  "output_tokens, cost, latency_ms, error, cache_key%s) "
									  "SELECT statement_id, backend_pid, role_oid, %scascade, cell, model, "
									  "attempt, status, http_status, input_tokens, output_tokens, cost, "
									  "latency_ms, error, cache_key%s "
									  "FROM pg_catalog.jsonb_to_recordset($1::pg_catalog.jsonb) AS x("
									  "statement_id int8, backend_pid int, role_oid oid, budget_role_oid oid, cascade text, "
									  "cell text, model text, attempt int, status text, http_status int, "
									  "input_tokens int, output_tokens int, cost float8, latency_ms float8, "
									  "error text, cache_key text, response_model text, response_id text, "
									  "finish_reason text, cached_tokens int)",
									  has_br ? "budget_role_oid, " : "", v02,
									  has_br ? "budget_role_oid, " : "", v02));
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

	json_object_put(wk_cache_rows);
	json_object_put(wk_call_rows);
	wk_cache_rows = json_object_new_array();
	wk_call_rows = json_object_new_array();
}

/*
 * Queue a call record for the next flush.  attempt is the number of
 * requests sent for the cell before this one (transport retries and
 * schema re-asks alike); a record that is not a cache hit counts one more.
 * Returns the record, for the caller to add the reply's details.
 */
static json_object *
wk_record_call(WkTask *t, const char *status, long http_status, long tin,
			   long tout, double cost, double latency_ms, const char *error)
{
	json_object *r;
	WkStmt	   *s = t->stmt;

	/* per-row counters for the backend (EXPLAIN ANALYZE) */
	if (strcmp(status, "retry") == 0)
		t->retries++;
	if (latency_ms > 0)
		t->latency_ms += latency_ms;

	r = json_object_new_object();
	json_object_object_add(r, "statement_id", json_object_new_int64(s->seghdr->statement_id));
	json_object_object_add(r, "backend_pid", json_object_new_int(s->seghdr->backend_pid));
	json_object_object_add(r, "role_oid", json_object_new_int64(s->seghdr->roleid));
	json_object_object_add(r, "budget_role_oid", json_object_new_int64(s->budget_role));
	json_object_object_add(r, "cascade", json_object_new_string(s->cascade_name));
	json_object_object_add(r, "cell", json_object_new_string(s->cascade->cells[t->cell].name));
	json_object_object_add(r, "model", json_object_new_string(t->model_ref ? t->model_ref : ""));
	json_object_object_add(r, "attempt", json_object_new_int(t->cell_tries));
	if (strcmp(status, "cached") != 0)
		t->cell_tries++;
	json_object_object_add(r, "status", json_object_new_string(status));
	if (http_status > 0)
		json_object_object_add(r, "http_status", json_object_new_int((int) http_status));
	if (tin >= 0)
		json_object_object_add(r, "input_tokens", json_object_new_int64(tin));
	if (tout >= 0)
		json_object_object_add(r, "output_tokens", json_object_new_int64(tout));
	json_object_object_add(r, "cost", json_object_new_double(cost));
	json_object_object_add(r, "latency_ms", json_object_new_double(latency_ms));
	if (error)
		json_object_object_add(r, "error", json_object_new_string(rv_redact_secrets(error)));
	json_object_object_add(r, "cache_key", json_object_new_string(t->key));
	json_object_array_add(wk_call_rows, r);
	return r;
}

/* Add what the provider said about its reply to a call record. */
static void
wk_record_reply(json_object *r, const RvLlmResponse *resp)
{
	if (resp == NULL)
		return;
	if (resp->model)
		json_object_object_add(r, "response_model", json_object_new_string(resp->model));
	if (resp->id)
		json_object_object_add(r, "response_id", json_object_new_string(resp->id));
	if (resp->finish_reason)
		json_object_object_add(r, "finish_reason", json_object_new_string(resp->finish_reason));
	if (resp->cached_tokens >= 0)
		json_object_object_add(r, "cached_tokens", json_object_new_int64(resp->cached_tokens));
}

/* ----------------------------------------------------------------
 * Tasks: the cascade state machine of one row
 * ----------------------------------------------------------------
 */

/*
 * Settle what a task reserved for its call (daily and statement budget) to
 * the call's actual cost in micros; 0 releases the reservations of a call
 * that was not sent, was retried, failed or was cancelled.
 */
static void
wk_task_settle(WkTask *t, uint64 actual)
{
	WkStmt	   *s = t->stmt;

	if (t->hold.roleid == InvalidOid)
		rv_budget_add_unbudgeted(s->budget_role, actual);
	rv_budget_settle(&t->hold, actual);
	s->stmt_reserved -= Min(s->stmt_reserved, t->stmt_reserved);
	t->stmt_reserved = 0;
	s->stmt_spent += actual;
}

/* Give back the budget a task reserved for a call that cost nothing. */
static void
wk_task_unreserve(WkTask *t)
{
	wk_task_settle(t, 0);
}

/*
 * A request that was sent but got no reply (it timed out, stalled, lost its
 * connection, or its statement ended while it was in flight) may still be
 * billed by the provider, which usually finishes the answer: settle its
 * reservation at the expected cost instead of giving it back, so that
 * cancelling or timing out calls cannot spend past a budget.  Returns the
 * dollars charged (0 when no budget asked for an estimate).
 */
static double
wk_task_charge_unanswered(WkTask *t)
{
	uint64		est = Max(t->hold.micros, t->stmt_reserved);

	wk_task_settle(t, est);
	t->cost += est / 1e6;
	return est / 1e6;
}

/* Free a task's request state (not the task). */
static void
wk_task_clear_request(WkTask *t)
{
	if (t->in_http)
	{
		rv_http_cancel(wk_http, &t->req);
		t->in_http = false;
	}
	rv_http_req_release(&t->req);
	wk_task_unreserve(t);
	if (t->counted)
	{
		pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
		wk_counted--;
		t->counted = false;
		rv_progress_in_flight(t->stmt->progress, t->stmt->seghdr->statement_id, -1);
	}
	free(t->body);
	t->body = NULL;
}

/* Free a task entirely; it must not be in any queue. */
static void
wk_task_free(WkTask *t)
{
	wk_task_clear_request(t);
	if (t->scope)
		json_object_put(t->scope);
	if (t->messages)
		json_object_put(t->messages);
	if (t->batch_rows)
		json_object_put(t->batch_rows);
	if (t->batch_schema)
		json_object_put(t->batch_schema);
	if (t->seqs)
		pfree(t->seqs);
	free(t->model_ref);
	t->stmt->ntasks--;
	pfree(t);
}

/*
 * Cost of a call in dollars from the statement's price table: fresh input
 * tokens at the input price, tcached input tokens (read from the
 * provider's prompt cache, part of tin) at the cached-input price, output
 * tokens at the output price.
 */
static double
wk_cost(WkStmt *s, const char *model_ref, long tin, long tout, long tcached)
{
	json_object *pair;
	long		fresh;

	if (model_ref == NULL || !json_object_object_get_ex(s->prices, model_ref, &pair))
		return 0.0;
	tin = Max(tin, 0);
	tcached = Min(Max(tcached, 0), tin);
	fresh = tin - tcached;
	return fresh * json_object_get_double(json_object_array_get_idx(pair, 0)) +
		tcached * json_object_get_double(json_object_array_get_idx(pair, 2)) +
		Max(tout, 0) * json_object_get_double(json_object_array_get_idx(pair, 1));
}

/* The row is done: queue its result for the backend and free it. */
static void
wk_task_done(WkTask *t, json_object *result)
{
	RvResultHead head;
	const char *parts[1];

	memset(&head, 0, sizeof(head));
	head.seq = t->seq;
	head.llm_calls = t->calls;
	head.cache_hits = t->hits;
	head.tokens_in = t->tokens_in;
	head.tokens_out = t->tokens_out;
	head.cost = t->cost;
	head.retries = t->retries;
	head.latency_ms = t->latency_ms;
	if (t->nbatch > 0)
	{
		int			i;

		/* MAP BATCH: item i of the validated array answers row i */
		for (i = 0; i < t->nbatch; i++)
		{
			head.seq = t->seqs[i];
			parts[0] = json_object_to_json_string_ext(json_object_array_get_idx(result, i),
													  JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
			wk_queue_msg(t->stmt, RV_MSG_RESULT, &head, parts, 1);
			head.llm_calls = head.cache_hits = 0;
			head.tokens_in = head.tokens_out = 0;
			head.cost = 0;
			head.retries = 0;
			head.latency_ms = 0;
		}
		wk_task_free(t);
		return;
	}
	parts[0] = json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	wk_queue_msg(t->stmt, RV_MSG_RESULT, &head, parts, 1);
	wk_task_free(t);
}

/* The row failed: queue the error for the backend and free it. */
static void
wk_task_fail(WkTask *t, int sqlstate, const char *msg, const char *detail,
			 const char *hint)
{
	wk_task_fail_flags(t, 0, sqlstate, msg, detail, hint);
}

/* wk_task_fail() with RV_RESULT_* flags on the rows' results. */
static void
wk_task_fail_flags(WkTask *t, int flags, int sqlstate, const char *msg,
				   const char *detail, const char *hint)
{
	RvResultHead head;
	const char *parts[3];

	memset(&head, 0, sizeof(head));
	head.seq = t->seq;
	head.flags = flags;
	head.sqlstate = sqlstate;
	head.llm_calls = t->calls;
	head.cache_hits = t->hits;
	head.tokens_in = t->tokens_in;
	head.tokens_out = t->tokens_out;
	head.cost = t->cost;
	head.retries = t->retries;
	head.latency_ms = t->latency_ms;
	/* provider error bodies end up here: never any key text */
	parts[0] = rv_redact_secrets(msg);
	parts[1] = rv_redact_secrets(detail);
	parts[2] = rv_redact_secrets(hint);
	if (t->nbatch > 0)
	{
		int			i;

		for (i = 0; i < t->nbatch; i++)
		{
			head.seq = t->seqs[i];
			wk_queue_msg(t->stmt, RV_MSG_ROWERR, &head, parts, 3);
			/* the batch's calls and cost are counted on its first row */
			head.llm_calls = head.cache_hits = 0;
			head.tokens_in = head.tokens_out = 0;
			head.cost = 0;
			head.retries = 0;
			head.latency_ms = 0;
		}
	}
	else
		wk_queue_msg(t->stmt, RV_MSG_ROWERR, &head, parts, 3);
	wk_task_free(t);
}

/* rv_route() callback: the prefix of provider i. */
static const char *
wk_prefix_of(const void *providers, int i)
{
	return ((const WkProvider *) providers)[i].prefix;
}

/* Pick the provider for a model reference; sets *model to the bare name. */
static WkProvider *
wk_route(WkStmt *s, const char *model_ref, const char **model)
{
	return &s->providers[rv_route(model_ref, s->nproviders, wk_prefix_of,
								  s->providers, model)];
}

/*
 * Render the current cell's request for a task (first attempt), or build
 * the request from the conversation so far (re-asks), compute its cache
 * key, and queue the task for lookup or sending.  Template errors fail the
 * row.
 */
static void
wk_task_prepare(WkTask *t)
{
	WkStmt	   *s = t->stmt;
	RvCell	   *cell = &s->cascade->cells[t->cell];
	RvError		err;
	const char *what = "";
	ResourceOwner save = CurrentResourceOwner;

	rv_error_clear(&err);
	if (t->attempt == 0 && t->messages)
	{
		json_object_put(t->messages);
		t->messages = NULL;
	}
	free(t->model_ref);
	t->model_ref = strdup(rv_cell_model(s->cascade, t->cell, s->model_override,
										s->default_model));
	if (t->model_ref == NULL)
	{
		wk_task_fail(t, ERRCODE_OUT_OF_MEMORY, "out of memory", NULL, NULL);
		return;
	}
	t->provider = wk_route(s, t->model_ref, &t->model);

	rv_cell_send(cell, s->default_max_tokens, t->attempt, &t->send);
	if (t->grow_cap > 0)
		t->send.max_tokens = t->grow_cap;
	free(t->body);
	t->body = rv_cell_request_ex(cell, t->scope, true, t->provider->flavor, t->model,
								 t->batch_schema, &t->send, &t->messages, &err, &what);
	if (t->body == NULL)
	{
		if (err.set)
			wk_task_fail(t, strncmp(err.message, "input has no field", 18) == 0 ?
						 ERRCODE_UNDEFINED_COLUMN : ERRCODE_DATA_EXCEPTION,
						 err.message,
						 psprintf("While rendering the %s of cell \"%s\".", what, cell->name),
						 err.hint[0] ? err.hint : NULL);
		else
			wk_task_fail(t, ERRCODE_OUT_OF_MEMORY, "could not build the provider request",
						 NULL, NULL);
		return;
	}
	t->body_len = strlen(t->body);
	t->tries = 0;

	/* cryptohash contexts belong to a resource owner; outside a transaction, ours */
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = wk_resowner;
	rv_call_key(s->seghdr->roleid, t->provider->api_base, t->body, t->body_len, t->key);
	CurrentResourceOwner = save;

	if (s->cache_read)
	{
		t->state = WT_LOOKUP;
		dlist_push_tail(&wk_lookup, &t->node);
	}
	else
		wk_ready_push(t);
}

/* Text of a non-schema cell's reply as a JSON value: parsed if JSON. */
static json_object *
wk_text_value(const char *content)
{
	json_tokener *tok = json_tokener_new_ex(64);
	json_object *v = NULL;
	size_t		len = strlen(content);
	const char *p = content;

	while (len > 0 && isspace((unsigned char) *p))
	{
		p++;
		len--;
	}
	while (len > 0 && isspace((unsigned char) p[len - 1]))
		len--;
	if (tok != NULL && len > 0 && (*p == '{' || *p == '['))
	{
		v = json_tokener_parse_ex(tok, p, (int) len);
		if (v != NULL && json_tokener_get_parse_end(tok) != len)
		{
			json_object_put(v);
			v = NULL;
		}
	}
	if (tok)
		json_tokener_free(tok);
	if (v == NULL)
		v = json_object_new_string(content);
	return v;
}

/*
 * A reply for the task's current request (from HTTP, with the provider's
 * parsed response in resp, or from the cache, resp NULL).  Validates it,
 * records it, and moves on: re-ask, next cell, or done.  A reply cut off at
 * max_tokens is never cached and never a success: MAP BATCH splits the
 * batch, a schema cell whose rules allow it is asked once more with a
 * larger cap, anything else fails the row.
 */
static void
wk_task_response(WkTask *t, const char *content, const RvLlmResponse *resp,
				 long tin, long tout, bool cached, double latency_ms)
{
	WkStmt	   *s = t->stmt;
	RvCell	   *cell = &s->cascade->cells[t->cell];
	json_object *value = NULL;
	RvError		err;
	double		cost = cached ? 0.0 :
		wk_cost(s, t->model_ref, tin, tout, resp ? resp->cached_tokens : -1);
	bool		usable = true;
	bool		truncated = (!cached && resp != NULL && resp->truncated);

	rv_error_clear(&err);
	if (cached)
	{
		t->hits++;
		rv_progress_add(s->progress, s->seghdr->statement_id, &s->progress->cache_hits, 1);
	}
	else
	{
		t->calls++;
		t->tokens_in += Max(tin, 0);
		t->tokens_out += Max(tout, 0);
		t->cost += cost;
		wk_task_settle(t, (uint64) (cost * 1e6));
		if (s->progress)
		{
			int64		sid = s->seghdr->statement_id;

			rv_progress_add(s->progress, sid, &s->progress->llm_calls, 1);
			rv_progress_add(s->progress, sid, &s->progress->tokens_in, Max(tin, 0));
			rv_progress_add(s->progress, sid, &s->progress->tokens_out, Max(tout, 0));
			rv_progress_add(s->progress, sid, &s->progress->cost_micros, (uint64) (cost * 1e6));
		}
	}

	if (truncated)
	{
		char	   *why = psprintf("the reply was cut off at max_tokens (%d)",
								   t->send.max_tokens);
		json_object *r = wk_record_call(t, "truncated", 200, tin, tout, cost,
										latency_ms, why);

		wk_record_reply(r, resp);
		free(t->body);
		t->body = NULL;
		if (t->nbatch > 1)
		{
			/* MAP BATCH: fewer rows need fewer tokens */
			int			half = t->nbatch / 2;

			wk_batch_task(s, t->seqs, half, t->batch_rows, 0);
			wk_batch_task(s, t->seqs + half, t->nbatch - half, t->batch_rows, half);
			wk_task_free(t);
			return;
		}
		if (cell->output_schema != NULL && cell->grow_max_tokens != 0 && !t->grown)
		{
			int			cap = cell->grow_max_tokens > 0 ? cell->grow_max_tokens :
				(t->send.max_tokens > 500000 ? 1000000 : t->send.max_tokens * 2);

			if (cap > t->send.max_tokens)
			{
				/* the same request once more with the larger cap */
				t->grown = true;
				t->grow_cap = cap;
				wk_task_prepare(t);
				return;
			}
		}
		wk_task_fail(t, ERRCODE_DATA_EXCEPTION, why,
					 psprintf("Cell \"%s\" of cascade \"%s\": the provider's finish reason is \"%s\"%s.",
							  cell->name, s->cascade_name,
							  resp->finish_reason ? resp->finish_reason : "?",
							  t->grown ? ", also after the retry with the larger cap" : ""),
					 cell->output_schema != NULL ?
					 "Raise the cell's max_tokens (or rvbbit.default_max_tokens), or set rules.grow_max_tokens to retry once with a larger cap." :
					 "Raise the cell's max_tokens (or rvbbit.default_max_tokens).");
		return;
	}

	if (cell->output_schema != NULL)
	{
		json_object *schema = t->batch_schema ? t->batch_schema : cell->output_schema;

		value = rv_llm_extract_json(content, &err);
		if (value != NULL && !rv_schema_validate(schema, value, &err))
		{
			json_object_put(value);
			value = NULL;
		}
		usable = (value != NULL);
	}
	else
		value = wk_text_value(content);

	if (!cached)
	{
		json_object *rec = wk_record_call(t, usable ? "ok" : "invalid", 200, tin, tout,
										  cost, latency_ms, usable ? NULL : err.message);

		wk_record_reply(rec, resp);
		if (usable && s->cache_write)
		{
			json_object *r = json_object_new_object();

			json_object_object_add(r, "key", json_object_new_string(t->key));
			json_object_object_add(r, "model", json_object_new_string(t->model_ref));
			json_object_object_add(r, "cascade", json_object_new_string(s->cascade_name));
			json_object_object_add(r, "cell", json_object_new_string(cell->name));
			json_object_object_add(r, "response", json_object_new_string(content));
			if (tin >= 0)
				json_object_object_add(r, "input_tokens", json_object_new_int64(tin));
			if (tout >= 0)
				json_object_object_add(r, "output_tokens", json_object_new_int64(tout));
			json_object_object_add(r, "role_oid", json_object_new_int64(s->seghdr->roleid));
			json_object_array_add(wk_cache_rows, r);
		}
	}
	else
		wk_record_call(t, "cached", 0, tin, tout, 0.0, 0.0, NULL);

	free(t->body);
	t->body = NULL;

	if (value == NULL && t->nbatch > 1)
	{
		/* MAP BATCH: a wrong length or an invalid item splits the batch in halves */
		int			half = t->nbatch / 2;

		wk_batch_task(s, t->seqs, half, t->batch_rows, 0);
		wk_batch_task(s, t->seqs + half, t->nbatch - half, t->batch_rows, half);
		wk_task_free(t);
		return;
	}
	if (value == NULL)
	{
		/* schema failure: re-ask with the error, or give up */
		t->attempt++;
		if (t->attempt < cell->max_attempts)
		{
			json_object *m = json_object_new_object();
			char	   *msg;

			json_object_object_add(m, "role", json_object_new_string("assistant"));
			json_object_object_add(m, "content", json_object_new_string(content));
			json_object_array_add(t->messages, m);
			m = json_object_new_object();
			msg = psprintf("Your reply did not match the required JSON schema: %s. "
						   "Reply again with only a JSON value that matches the schema.",
						   err.message);
			json_object_object_add(m, "role", json_object_new_string("user"));
			json_object_object_add(m, "content", json_object_new_string(msg));
			json_object_array_add(t->messages, m);
			pfree(msg);
			wk_task_prepare(t);
		}
		else
			wk_task_fail(t, ERRCODE_DATA_EXCEPTION,
						 psprintf("reply of cell \"%s\" does not match its output_schema", cell->name),
						 psprintf("After %d attempts: %s.", cell->max_attempts, err.message),
						 "Check the cell's instructions and output_schema, or raise rules.max_attempts.");
		return;
	}

	/* the cell is done */
	{
		json_object *outputs;

		if (!json_object_object_get_ex(t->scope, "outputs", &outputs) ||
			!json_object_is_type(outputs, json_type_object))
		{
			outputs = json_object_new_object();
			json_object_object_add(t->scope, "outputs", outputs);
		}
		t->cell++;
		t->attempt = 0;
		t->cell_tries = 0;
		t->grow_cap = 0;
		t->grown = false;
		if (t->cell >= s->cascade->ncells)
		{
			wk_task_done(t, value);
			json_object_put(value);
			return;
		}
		json_object_object_add(outputs, cell->name, value);
		wk_task_prepare(t);
	}
}

/* Can a failed HTTP transfer be retried? */
static bool
wk_transfer_retryable(const RvHttpReq *req)
{
	switch (req->code)
	{
		case CURLE_COULDNT_CONNECT:
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_OPERATION_TIMEDOUT:
		case CURLE_HTTP2:		/* HTTP/2 framing error (stream) */
		case CURLE_HTTP2_STREAM:	/* stream reset, e.g. after GOAWAY */
			return true;
		default:
			return false;
	}
}

/*
 * Schedule a retry.  A Retry-After from the provider takes precedence (up
 * to the larger of rvbbit.retry_max_delay and a minute); otherwise capped
 * exponential backoff with full jitter: a uniformly random wait between 0
 * and min(rvbbit.retry_max_delay, 1 s * 2^tries).
 */
static void
wk_task_retry_later(WkTask *t, long retry_after_ms)
{
	long		max_delay = t->stmt->retry_max_delay_ms;
	long		delay;

	if (retry_after_ms >= 0)
		delay = Min(retry_after_ms, Max(max_delay, 60000L));
	else
	{
		double		ceiling = 1000.0 * pow(2.0, Min(t->tries, 30));

		ceiling = Min(ceiling, (double) max_delay);
		delay = (long) (ceiling * pg_prng_double(&pg_global_prng_state));
	}
	t->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
	t->state = WT_RETRY;
	dlist_push_tail(&wk_retry, &t->node);
}

/* The circuit breaker of a provider base URL for a role (created closed). */
static WkBreaker *
wk_breaker(const char *api_base, Oid role)
{
	int			i;
	WkBreaker  *b;

	for (i = 0; i < wk_nbreakers; i++)
		if (wk_breakers[i].role == role &&
			strncmp(wk_breakers[i].api_base, api_base, sizeof(wk_breakers[i].api_base) - 1) == 0)
			return &wk_breakers[i];
	if (wk_nbreakers < WK_BREAKER_MAX)
		b = &wk_breakers[wk_nbreakers++];
	else
	{
		/* reuse the first closed one; all open is unlikely with 32 */
		b = &wk_breakers[0];
		for (i = 0; i < WK_BREAKER_MAX; i++)
			if (wk_breakers[i].open_until == 0)
			{
				b = &wk_breakers[i];
				break;
			}
	}
	memset(b, 0, sizeof(WkBreaker));
	strlcpy(b->api_base, api_base, sizeof(b->api_base));
	b->role = role;
	return b;
}

/* Is the provider's breaker open now? */
static bool
wk_breaker_open(WkBreaker *b, TimestampTz now)
{
	return b->open_until != 0 && now < b->open_until;
}

/* Fail a row because its provider's breaker is open. */
static void
wk_task_fail_breaker(WkTask *t, WkBreaker *b)
{
	wk_task_fail(t, ERRCODE_CONNECTION_FAILURE,
				 psprintf("LLM provider at %s is not reachable", b->api_base),
				 psprintf("%d requests in a row could not reach it (last: %s); rvbbit sends nothing to it for %d s.",
						  b->failures, b->last_error, WK_BREAKER_OPEN_MS / 1000),
				 "Check that the server is running and that rvbbit.api_base (or rvbbit.providers) points to it, then run the statement again.");
}

/*
 * Count a request that could not reach its provider; after
 * WK_BREAKER_THRESHOLD in a row open the breaker and fail every row waiting
 * to be sent or retried to that provider.  Returns true when the breaker
 * is open.
 */
static bool
wk_breaker_failure(WkBreaker *b, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_head *queues[] = {&wk_ready, &wk_retry};
	int			q;

	b->failures++;
	strlcpy(b->last_error, error ? error : "?", sizeof(b->last_error));
	if (b->failures < WK_BREAKER_THRESHOLD)
		return false;
	if (!wk_breaker_open(b, now))
	{
		b->open_until = TimestampTzPlusMilliseconds(now, WK_BREAKER_OPEN_MS);
		ereport(LOG,
				(errmsg("rvbbit: LLM provider at %s is not reachable; not sending to it for %d s",
						b->api_base, WK_BREAKER_OPEN_MS / 1000),
				 errdetail("%d requests in a row failed, the last with: %s.", b->failures, b->last_error)));
	}
	for (q = 0; q < lengthof(queues); q++)
	{
		dlist_mutable_iter it;

		dlist_foreach_modify(it, queues[q])
		{
			WkTask	   *tk = dlist_container(WkTask, node, it.cur);

			if (tk->stmt->seghdr->roleid == b->role &&
				strcmp(tk->provider->api_base, b->api_base) == 0)
			{
				dlist_delete(&tk->node);
				wk_task_fail_breaker(tk, b);
			}
		}
	}
	return true;
}

/* Handle a finished HTTP transfer. */
static void
wk_http_done(RvHttpReq *req)
{
	WkTask	   *t = (WkTask *) req->owner;
	WkStmt	   *s = t->stmt;
	long		status = req->status;
	char	   *errmsg = NULL;
	bool		retry = false;
	int			sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	char	   *msg = NULL;
	char	   *hint = NULL;
	WkBreaker  *b = wk_breaker(t->provider->api_base, s->seghdr->roleid);
	double		charged = 0;

	dlist_delete(&t->node);
	t->in_http = false;
	/*
	 * A reply settles the reservation to its cost; an HTTP error or a server
	 * never reached releases it; a request sent but not answered is charged.
	 */
	if (req->code != CURLE_OK && req->sent)
		charged = wk_task_charge_unanswered(t);
	else if (req->code != CURLE_OK || status < 200 || status >= 300)
		wk_task_unreserve(t);
	if (t->counted)
	{
		pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
		wk_counted--;
		t->counted = false;
		rv_progress_in_flight(s->progress, s->seghdr->statement_id, -1);
	}
	t->tries++;

	if (req->code != CURLE_OK)
	{
		bool		unreachable = false;

		if (req->too_big)
		{
			msg = psprintf("provider response is larger than %zu bytes", req->resp_limit);
			errmsg = msg;
		}
		else if (req->stalled)
		{
			sqlstate = ERRCODE_CONNECTION_FAILURE;
			msg = psprintf("LLM provider sent nothing for %ld ms", s->stall_ms);
			hint = "Check the provider; raise rvbbit.stall_timeout for a server that is slow to start its reply.";
			errmsg = msg;
			retry = true;
			unreachable = true;
		}
		else if (req->code == CURLE_OPERATION_TIMEDOUT)
		{
			sqlstate = ERRCODE_CONNECTION_FAILURE;
			msg = psprintf("LLM request timed out after %ld ms", s->timeout_ms);
			hint = "Raise rvbbit.request_timeout or the timeout option.";
			errmsg = msg;
			retry = true;
			/* a slow reply is not an unreachable server */
		}
		else
		{
			sqlstate = ERRCODE_CONNECTION_FAILURE;
			msg = psprintf("could not complete the request to the LLM provider");
			errmsg = psprintf("%s", req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->code));
			retry = wk_transfer_retryable(req);
			unreachable = !req->connected;
		}
		if (unreachable && wk_breaker_failure(b, errmsg))
		{
			wk_record_call(t, "error", status, -1, -1, charged, req->latency_ms, errmsg);
			rv_http_req_release(req);
			wk_task_fail_breaker(t, b);
			return;
		}
		wk_record_call(t, retry && t->tries <= s->max_retries ? "retry" : "error",
					   status, -1, -1, charged, req->latency_ms, errmsg);
		if (retry && t->tries <= s->max_retries)
		{
			rv_http_req_release(req);
			wk_task_retry_later(t, -1);
			return;
		}
		rv_http_req_release(req);
		if (retry && t->tries > 1)
			wk_task_fail(t, sqlstate, msg,
						 errmsg != msg ? psprintf("%s (after %d attempts).", errmsg, t->tries) :
						 psprintf("After %d attempts.", t->tries), hint);
		else
			wk_task_fail(t, sqlstate, msg, errmsg != msg ? psprintf("%s.", errmsg) : NULL, hint);
		return;
	}

	/* the server answered: it is reachable */
	b->failures = 0;
	b->open_until = 0;

	if (status == 429 || status >= 500)
	{
		char	   *pmsg = rv_llm_error_message(req->resp, req->resp_len);

		wk_record_call(t, t->tries <= s->max_retries ? "retry" : "error", status,
					   -1, -1, 0, req->latency_ms, pmsg);
		if (t->tries <= s->max_retries)
		{
			long		ra = req->retry_after_ms;

			free(pmsg);
			rv_http_req_release(req);
			wk_task_retry_later(t, ra);
			return;
		}
		msg = psprintf("LLM provider returned HTTP %ld after %d attempts", status, t->tries);
		rv_http_req_release(req);
		wk_task_fail(t, status == 429 ? ERRCODE_CONFIGURATION_LIMIT_EXCEEDED : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
					 msg, pmsg ? psprintf("Provider said: %s", pmsg) : NULL,
					 status == 429 ? "Lower PARALLEL, set rvbbit.requests_per_minute, or raise max_retries." :
					 "Raise max_retries, or try again later.");
		free(pmsg);
		return;
	}
	if (status < 200 || status >= 300)
	{
		char	   *pmsg = rv_llm_error_message(req->resp, req->resp_len);

		wk_record_call(t, "error", status, -1, -1, 0, req->latency_ms, pmsg);
		rv_http_req_release(req);
		if (status == 401 || status == 403)
			wk_task_fail(t, ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
						 psprintf("LLM provider rejected the request with HTTP %ld", status),
						 pmsg ? psprintf("Provider said: %s", pmsg) : NULL,
						 "Check rvbbit.api_key (or the provider's key in rvbbit.providers).");
		else if (status == 404)
			wk_task_fail(t, ERRCODE_UNDEFINED_OBJECT,
						 psprintf("LLM provider returned HTTP 404 for model \"%s\"", t->model_ref),
						 pmsg ? psprintf("Provider said: %s", pmsg) : NULL,
						 "Check the model name and rvbbit.api_base.");
		else
			wk_task_fail(t, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
						 psprintf("LLM provider returned HTTP %ld", status),
						 pmsg ? psprintf("Provider said: %s", pmsg) : NULL, NULL);
		free(pmsg);
		return;
	}

	/* 2xx */
	{
		RvLlmResponse resp;
		RvError		err;

		memset(&resp, 0, sizeof(resp));
		rv_error_clear(&err);
		if (!rv_llm_parse_response(t->provider->flavor, req->resp ? req->resp : "",
								   req->resp_len, &resp, &err))
		{
			wk_record_call(t, "error", status, -1, -1, 0, req->latency_ms, err.message);
			rv_http_req_release(req);
			wk_task_fail(t, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, err.message,
						 err.detail[0] ? err.detail : NULL, NULL);
			return;
		}
		{
			int			tpm = t->provider->tpm >= 0 ? t->provider->tpm : rv_tokens_per_minute;
			long		used = Max(resp.input_tokens, 0) + Max(resp.output_tokens, 0);

			rv_ratelimit_charge(t->provider->api_base, tpm, (int) (used - (long) (t->body_len / 4)));
		}
		{
			double		lat = req->latency_ms;

			rv_http_req_release(req);
			wk_task_response(t, resp.content, &resp, resp.input_tokens,
							 resp.output_tokens, false, lat);
		}
		rv_llm_response_free(&resp);
	}
}

typedef enum WkReserve
{
	WK_RESERVE_OK,				/* reserved (or no budget applies) */
	WK_RESERVE_REFUSED,			/* the task was failed and freed */
	WK_RESERVE_WAIT				/* ask again soon; nothing reserved */
} WkReserve;

/*
 * Reserve the expected cost of a ready task's call against the statement's
 * budget_dollars and the role's daily budget.  The expected cost is the
 * request's length / 4 input tokens and the max_tokens actually sent
 * (rvbbit.default_max_tokens when the cell sets none) output tokens at the
 * model's price.  A call that does not fit
 * is not sent: the task is taken off the ready queue and fails with the
 * budget flag on its rows, which makes the backend stop scheduling and end
 * the statement with the budget error.  The daily check and reservation
 * are one step under the budget table's lock (rv_budget_reserve); the
 * statement's are this worker's alone (a statement has one worker).
 */
static WkReserve
wk_task_reserve(WkTask *t)
{
	WkStmt	   *s = t->stmt;
	double		est;
	uint64		est_micros;
	uint64		used;

	if (s->budget_stmt < 0 && s->budget_day <= 0)
		return WK_RESERVE_OK;
	est = wk_cost(s, t->model_ref, (long) (t->body_len / 4) + 1,
				  t->send.max_tokens, 0);
	est_micros = (uint64) (est * 1e6);

	if (s->budget_stmt >= 0)
	{
		used = s->stmt_spent + s->stmt_reserved;
		if ((double) used + (double) est_micros > s->budget_stmt * 1e6)
		{
			dlist_delete(&t->node);
			wk_task_fail_flags(t, RV_RESULT_BUDGET_STMT, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
							   psprintf("budget of $%.4f of the statement reached", s->budget_stmt),
							   psprintf("$%.4f was spent or is in flight; this call would cost about $%.4f. It was not sent.",
										used / 1e6, est),
							   "Raise budget_dollars, or add a LIMIT to the USING query.");
			return WK_RESERVE_REFUSED;
		}
		s->stmt_reserved += est_micros;
		t->stmt_reserved = est_micros;
	}
	if (s->budget_day > 0)
	{
		switch (rv_budget_reserve(s->budget_role, s->budget_day, est_micros, &t->hold, &used))
		{
			case RV_BUDGET_OK:
				break;
			case RV_BUDGET_WAIT:
				wk_task_unreserve(t);
				return WK_RESERVE_WAIT;
			case RV_BUDGET_EXCEEDED:
				wk_task_unreserve(t);
				dlist_delete(&t->node);
				wk_task_fail_flags(t, RV_RESULT_BUDGET_DAY, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
								   psprintf("daily budget of $%.4f for role \"%s\" reached",
											s->budget_day, s->role_name),
								   psprintf("$%.4f was spent or is in flight today; this call would cost about $%.4f. It was not sent.",
											used / 1e6, est),
								   "Ask a superuser to raise rvbbit.budget_dollars_per_day for the role, or wait for tomorrow (UTC).");
				return WK_RESERVE_REFUSED;
			case RV_BUDGET_FULL:
				wk_task_unreserve(t);
				dlist_delete(&t->node);
				wk_task_fail_flags(t, RV_RESULT_BUDGET_DAY, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
								   psprintf("too many roles have a daily budget in use to track the budget of role \"%s\"",
											s->role_name),
								   psprintf("The shared table for rvbbit.budget_dollars_per_day holds %d roles a day. It was not sent.",
											rv_max_budget_roles),
								   "Raise rvbbit.max_budget_roles (it needs a restart of the server).");
				return WK_RESERVE_REFUSED;
		}
	}
	return WK_RESERVE_OK;
}

/*
 * Free the request headers built by wk_dispatch() (palloc'd), wiping them
 * first: they carry the API key.
 */
static void
wk_free_headers(char **headers, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		explicit_bzero(headers[i], strlen(headers[i]));
		pfree(headers[i]);
	}
}

/*
 * Queue a task to be sent.  wk_ready is kept in start-time fair queuing
 * order, so that statements sharing this worker get equal shares of its
 * connections when the caps hold requests back: a task's tag is one more
 * than the larger of its statement's last tag and the tag of the request
 * sent last, and the queue is sorted by tag (ties in arrival order).  A
 * statement's tasks keep their order; a statement that arrives behind
 * another's backlog alternates with it instead of waiting for all of it;
 * an idle statement earns no credit.  Inserting scans from the tail over
 * the tasks with a larger tag: one step per other backlogged statement.
 */
static void
wk_ready_push(WkTask *t)
{
	WkStmt	   *s = t->stmt;
	dlist_iter	it;

	t->fair_tag = Max(wk_fair_clock, s->fair_tag) + 1;
	s->fair_tag = t->fair_tag;
	t->state = WT_READY;
	dlist_reverse_foreach(it, &wk_ready)
	{
		WkTask	   *o = dlist_container(WkTask, node, it.cur);

		if (o->fair_tag <= t->fair_tag)
		{
			dlist_insert_after(it.cur, &t->node);
			return;
		}
	}
	dlist_push_head(&wk_ready, &t->node);
}

/*
 * Start requests from the ready queue while the caps allow: this worker's
 * connections, the cluster-wide rvbbit.max_concurrency, and the rate
 * limits.  Sets wk_ratelimit_wait_ms when a rate limit holds requests back.
 */
static void
wk_dispatch(void)
{
	wk_ratelimit_wait_ms = -1;
	while (!dlist_is_empty(&wk_ready))
	{
		WkTask	   *t = dlist_container(WkTask, node, dlist_head_node(&wk_ready));
		WkStmt	   *s = t->stmt;
		char	   *headers[4];
		const RvLlmHeader *ah;
		int			nh = 0;
		char	   *url;
		long		wait_ms;
		int			rpm,
					tpm;
		uint32		prev;

		if (rv_http_in_flight(wk_http) >= rv_http_capacity(wk_http, wk_max_conn))
			break;

		/* the provider's circuit breaker is open: fail the row, send nothing */
		{
			WkBreaker  *b = wk_breaker(t->provider->api_base, t->stmt->seghdr->roleid);

			if (wk_breaker_open(b, GetCurrentTimestamp()))
			{
				dlist_delete(&t->node);
				wk_task_fail_breaker(t, b);
				continue;
			}
		}

		/* budgets: the call's expected cost, checked and reserved */
		switch (wk_task_reserve(t))
		{
			case WK_RESERVE_OK:
				break;
			case WK_RESERVE_REFUSED:
				continue;		/* the task failed and is gone */
			case WK_RESERVE_WAIT:
				wk_ratelimit_wait_ms = 10;
				return;
		}
		prev = pg_atomic_fetch_add_u32(&rv_shared->http_in_flight, 1);
		if ((int) prev >= rv_max_concurrency)
		{
			/* deferred: the call holds no budget while it waits */
			pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
			wk_task_unreserve(t);
			wk_ratelimit_wait_ms = 10;
			break;
		}
		rpm = t->provider->rpm >= 0 ? t->provider->rpm : rv_requests_per_minute;
		tpm = t->provider->tpm >= 0 ? t->provider->tpm : rv_tokens_per_minute;
		if (!rv_ratelimit_acquire(t->provider->api_base, rpm, tpm,
								  (int) (t->body_len / 4) + 1, &wait_ms))
		{
			pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
			wk_task_unreserve(t);
			wk_ratelimit_wait_ms = Max(wait_ms, 1);
			break;
		}
		t->counted = true;
		wk_counted++;
		rv_progress_in_flight(s->progress, s->seghdr->statement_id, 1);

		dlist_delete(&t->node);
		wk_fair_clock = Max(wk_fair_clock, t->fair_tag);
		url = psprintf("%s%s", t->provider->api_base, rv_llm_path(t->provider->flavor));
		headers[nh++] = pstrdup("Content-Type: application/json");
		for (ah = rv_llm_auth_headers(t->provider->flavor); ah->name != NULL; ah++)
			if (!ah->needs_key || t->provider->api_key[0] != '\0')
				headers[nh++] = ah->value ? psprintf("%s: %s", ah->name, ah->value) :
					psprintf("%s: %s%s", ah->name, ah->prefix, t->provider->api_key);

		memset(&t->req, 0, sizeof(t->req));
		t->req.owner = t;
		t->req.stall_ms = s->stall_ms;
		if (!rv_http_start(wk_http, &t->req, url, (const char *const *) headers, nh, t->body, t->body_len,
						   s->timeout_ms, 64 * 1024 * 1024))
		{
			char		errbuf[CURL_ERROR_SIZE];

			strlcpy(errbuf, t->req.errbuf, sizeof(errbuf));
			pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
			wk_counted--;
			t->counted = false;
			rv_progress_in_flight(s->progress, s->seghdr->statement_id, -1);
			wk_free_headers(headers, nh);
			wk_task_unreserve(t);
			wk_task_fail(t, ERRCODE_CONNECTION_FAILURE,
						 "could not start the request to the LLM provider",
						 psprintf("%s.", errbuf), NULL);
			pfree(url);
			continue;
		}
		/* curl copied the URL and the headers */
		wk_free_headers(headers, nh);
		pfree(url);
		t->in_http = true;
		t->state = WT_HTTP;
		dlist_push_tail(&wk_inflight, &t->node);
	}
}

/* ----------------------------------------------------------------
 * Statements
 * ----------------------------------------------------------------
 */

/* Parse a statement header; on error send a fatal message. */
static void
wk_stmt_header(WkStmt *s, const char *json, Size len)
{
	json_object *hdr = json_tokener_parse(json);
	const char *def;
	RvError		err;

	s->got_header = true;
	if (hdr == NULL)
	{
		wk_stmt_fatal(s, ERRCODE_INTERNAL_ERROR, "malformed rvbbit statement header", NULL, NULL);
		s->closing = true;
		return;
	}
	s->cascade_name = MemoryContextStrdup(s->cxt, wk_json_str(hdr, "cascade") ? wk_json_str(hdr, "cascade") : "?");
	s->default_model = MemoryContextStrdup(s->cxt, wk_json_str(hdr, "default_model") ? wk_json_str(hdr, "default_model") : "");
	if (wk_json_str(hdr, "model"))
		s->model_override = MemoryContextStrdup(s->cxt, wk_json_str(hdr, "model"));
	s->timeout_ms = (long) wk_json_int(hdr, "timeout_ms", 60000);
	s->max_retries = (int) wk_json_int(hdr, "max_retries", 3);
	s->stall_ms = (long) wk_json_int(hdr, "stall_timeout_ms", 30000);
	s->retry_max_delay_ms = (long) wk_json_int(hdr, "retry_max_delay_ms", 30000);
	s->default_max_tokens = (int) wk_json_int(hdr, "default_max_tokens", 1024);
	s->cache_read = wk_json_bool(hdr, "cache_read", true);
	s->cache_write = wk_json_bool(hdr, "cache_write", true);
	s->cache_max_age_s = (long) wk_json_int(hdr, "cache_max_age_s", -1);
	{
		json_object *b;

		if (json_object_object_get_ex(hdr, "budget_day", &b) && b)
			s->budget_day = json_object_get_double(b);
		s->budget_stmt = -1;
		if (json_object_object_get_ex(hdr, "budget_dollars", &b) && b)
			s->budget_stmt = json_object_get_double(b);
		s->budget_role = (Oid) wk_json_int(hdr, "budget_role", s->seghdr->roleid);
	}

	def = wk_json_str(hdr, "definition");
	rv_error_clear(&err);
	s->cascade = def ? rv_cascade_parse(def, strlen(def), &err) : NULL;
	if (s->cascade == NULL)
	{
		wk_stmt_fatal(s, ERRCODE_INVALID_PARAMETER_VALUE,
					  err.set ? err.message : "cascade definition missing", NULL, NULL);
		s->closing = true;
		json_object_put(hdr);
		return;
	}
	s->batch = (int) wk_json_int(hdr, "batch", 0);
	if (s->batch > 0 && (s->cascade->ncells != 1 || s->cascade->cells[0].output_schema == NULL))
	{
		wk_stmt_fatal(s, ERRCODE_FEATURE_NOT_SUPPORTED,
					  "MAP BATCH needs a cascade with one cell that has an output_schema",
					  "The reply, an array with one item per row, is split back to the rows by position and checked against the schema.",
					  "Use a one-cell cascade whose output_schema describes the answer for one row.");
		s->closing = true;
		json_object_put(hdr);
		return;
	}
	if (!wk_load_config(s, hdr))
		s->closing = true;
	json_object_put(hdr);
	(void) len;
}

/*
 * Make a MAP BATCH task for k rows: seqs[0..k) whose inputs are
 * rows[from..from+k).  The template sees rows and row_count; the request
 * asks for an array of exactly k items of the cell's output_schema.
 */
static void
wk_batch_task(WkStmt *s, const int64 *seqs, int k, json_object *rows, int from)
{
	WkTask	   *t = MemoryContextAllocZero(s->cxt, sizeof(WkTask));
	json_object *mine = json_object_new_array();
	int			i;

	for (i = 0; i < k; i++)
		json_object_array_add(mine, json_object_get(json_object_array_get_idx(rows, from + i)));
	t->stmt = s;
	t->nbatch = k;
	t->seqs = MemoryContextAlloc(s->cxt, sizeof(int64) * k);
	memcpy(t->seqs, seqs, sizeof(int64) * k);
	t->seq = seqs[0];
	t->batch_rows = mine;
	t->scope = json_object_new_object();
	json_object_object_add(t->scope, "rows", json_object_get(mine));
	json_object_object_add(t->scope, "row_count", json_object_new_int(k));
	json_object_object_add(t->scope, "input", json_object_new_object());
	json_object_object_add(t->scope, "outputs", json_object_new_object());
	json_object_object_add(t->scope, "state", json_object_new_object());
	t->batch_schema = json_object_new_object();
	json_object_object_add(t->batch_schema, "type", json_object_new_string("array"));
	json_object_object_add(t->batch_schema, "minItems", json_object_new_int(k));
	json_object_object_add(t->batch_schema, "maxItems", json_object_new_int(k));
	json_object_object_add(t->batch_schema, "items",
						   json_object_get(s->cascade->cells[0].output_schema));
	s->ntasks++;
	t->state = WT_PREPARE;
	dlist_push_tail(&wk_prepare, &t->node);
}

/* A batch message: one task for its rows. */
static void
wk_stmt_batch(WkStmt *s, const char *data, Size len)
{
	uint32		k;
	uint32		i;
	Size		off = sizeof(uint32);
	int64	   *seqs;
	json_object *rows;

	if (len < sizeof(uint32))
		return;
	memcpy(&k, data, sizeof(uint32));
	if (k == 0 || k > 100000)
		return;
	seqs = palloc(sizeof(int64) * k);
	rows = json_object_new_array();
	for (i = 0; i < k; i++)
	{
		uint32		n;
		json_object *scope;
		json_object *input = NULL;

		if (off + sizeof(int64) + sizeof(uint32) > len)
			break;
		memcpy(&seqs[i], data + off, sizeof(int64));
		off += sizeof(int64);
		memcpy(&n, data + off, sizeof(uint32));
		off += sizeof(uint32);
		if (off + n > len)
			break;
		scope = json_tokener_parse(pnstrdup(data + off, n));
		off += n;
		if (scope && json_object_object_get_ex(scope, "input", &input) && input)
			json_object_array_add(rows, json_object_get(input));
		else
			json_object_array_add(rows, json_object_new_object());
		if (scope)
			json_object_put(scope);
	}
	if (i == k)
		wk_batch_task(s, seqs, (int) k, rows, 0);
	json_object_put(rows);
	pfree(seqs);
}

/* A row message: make a task. */
static void
wk_stmt_row(WkStmt *s, const char *data, Size len)
{
	WkTask	   *t;
	int64		seq;
	json_object *scope;

	if (len < sizeof(int64) + 1)
		return;
	memcpy(&seq, data, sizeof(int64));
	scope = json_tokener_parse(data + sizeof(int64));
	t = MemoryContextAllocZero(s->cxt, sizeof(WkTask));
	t->stmt = s;
	t->seq = seq;
	s->ntasks++;
	if (scope == NULL || !json_object_is_type(scope, json_type_object))
	{
		if (scope)
			json_object_put(scope);
		t->scope = json_object_new_object();
		wk_task_fail(t, ERRCODE_INTERNAL_ERROR, "malformed rvbbit row message", NULL, NULL);
		return;
	}
	t->scope = scope;
	if (!json_object_object_get_ex(scope, "outputs", NULL))
		json_object_object_add(scope, "outputs", json_object_new_object());
	if (!json_object_object_get_ex(scope, "state", NULL))
		json_object_object_add(scope, "state", json_object_new_object());
	t->state = WT_PREPARE;
	dlist_push_tail(&wk_prepare, &t->node);
}

/* Read all available messages of a statement (never blocks). */
static void
wk_stmt_receive(WkStmt *s)
{
	for (;;)
	{
		Size		len;
		void	   *data;
		shm_mq_result res;

		/*
		 * Keep polling after the end of input too: that is how we learn that
		 * the backend went away (cancel, error, exit) while rows are in
		 * flight.
		 */
		if (s->closing)
			return;
		res = shm_mq_receive(s->inq, &len, &data, true);
		if (res == SHM_MQ_WOULD_BLOCK)
			return;
		if (res == SHM_MQ_DETACHED)
		{
			s->closing = true;
			s->detached = true;
			return;
		}
		if (len < 1)
			continue;
		switch (((char *) data)[0])
		{
			case RV_MSG_HEADER:
				wk_stmt_header(s, (char *) data + 1, len - 1);
				break;
			case RV_MSG_ROW:
				if (s->got_header && !s->closing)
					wk_stmt_row(s, (char *) data + 1, len - 1);
				break;
			case RV_MSG_BATCH:
				if (s->got_header && !s->closing)
					wk_stmt_batch(s, (char *) data + 1, len - 1);
				break;
			case RV_MSG_END:
				s->input_done = true;
				break;
			default:
				break;
		}
	}
}

/* Send what is in a statement's outbox (never blocks). */
static void
wk_stmt_send(WkStmt *s)
{
	while (!dlist_is_empty(&s->outbox))
	{
		WkMsg	   *m = dlist_container(WkMsg, node, dlist_head_node(&s->outbox));
		shm_mq_result res;

		res = shm_mq_send(s->outq, m->len, m->data, true, true);
		if (res == SHM_MQ_WOULD_BLOCK)
			return;
		dlist_delete(&m->node);
		pfree(m);
		if (res == SHM_MQ_DETACHED)
		{
			s->closing = true;
			s->detached = true;
			return;
		}
	}
}

/* Remove every task of a statement from the worker's queues. */
static void
wk_stmt_abort_tasks(WkStmt *s)
{
	dlist_head *queues[] = {&wk_prepare, &wk_lookup, &wk_ready, &wk_retry, &wk_inflight};
	int			q;

	for (q = 0; q < (int) lengthof(queues); q++)
	{
		dlist_mutable_iter it;

		dlist_foreach_modify(it, queues[q])
		{
			WkTask	   *t = dlist_container(WkTask, node, it.cur);

			if (t->stmt != s)
				continue;
			dlist_delete(&t->node);
			if (t->in_http)
			{
				double		charged;

				rv_http_cancel(wk_http, &t->req);
				t->in_http = false;
				/* abandoned in flight: charged (and recorded) when budgeted */
				charged = wk_task_charge_unanswered(t);
				if (charged > 0)
					wk_record_call(t, "error", 0, -1, -1, charged, 0,
								   "the statement ended while the request was in flight");
			}
			wk_task_free(t);
		}
	}
}

/* Detach and free a statement. */
static void
wk_stmt_close(WkStmt *s)
{
	wk_stmt_abort_tasks(s);
	dlist_delete(&s->node);
	if (s->cascade)
		rv_cascade_free(s->cascade);
	if (s->prices)
		json_object_put(s->prices);
	dsm_detach(s->seg);
	MemoryContextDelete(s->cxt);
}

/* Take this worker's statements from the shared inbox and attach. */
static void
wk_take_pending(void)
{
	dsm_handle	handles[RV_MAX_PENDING];
	int			n = 0;
	int			i;

	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < RV_MAX_PENDING; i++)
	{
		RvPending  *p = &rv_shared->pending[i];

		if (p->used && p->worker == wk_slot)
		{
			handles[n++] = p->handle;
			p->used = false;
		}
	}
	LWLockRelease(rv_shared->lock);

	for (i = 0; i < n; i++)
	{
		dsm_segment *seg;
		WkStmt	   *s;
		MemoryContext cxt;
		MemoryContext old;
		RvSegmentHeader *hdr;
		shm_mq	   *req;
		shm_mq	   *res;

		seg = dsm_attach(handles[i]);
		if (seg == NULL)
			continue;			/* the backend is already gone */
		hdr = dsm_segment_address(seg);
		if (hdr->magic != RV_SHM_MAGIC)
		{
			dsm_detach(seg);
			continue;
		}
		cxt = AllocSetContextCreate(wk_cxt, "rvbbit statement", ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(cxt);
		s = palloc0(sizeof(WkStmt));
		s->cxt = cxt;
		s->seg = seg;
		s->seghdr = hdr;
		s->progress = hdr->progress_index >= 0 ? rv_progress_get(hdr->progress_index) : NULL;
		dlist_init(&s->outbox);
		req = (shm_mq *) ((char *) hdr + RV_SEG_REQ_OFFSET);
		res = (shm_mq *) ((char *) hdr + RV_SEG_RES_OFFSET);
		shm_mq_set_receiver(req, MyProc);
		shm_mq_set_sender(res, MyProc);
		s->inq = shm_mq_attach(req, seg, NULL);
		s->outq = shm_mq_attach(res, seg, NULL);
		MemoryContextSwitchTo(old);
		dlist_push_tail(&wk_stmts, &s->node);
	}
}

/* before_shmem_exit: free our slot and drop statements waiting for us. */
static void
wk_on_exit(int code, Datum arg)
{
	int			i;
	dlist_iter	it;

	/* calls in flight will not be settled: release their budget */
	dlist_foreach(it, &wk_inflight)
	{
		WkTask	   *t = dlist_container(WkTask, node, it.cur);

		rv_budget_settle(&t->hold, 0);
	}
	if (wk_counted > 0 && rv_shared != NULL)
		pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, wk_counted);
	wk_counted = 0;
	if (wk_slot < 0 || rv_shared == NULL)
		return;
	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	if (rv_shared->workers[wk_slot].generation == wk_generation)
	{
		RvWorkerSlot *w = &rv_shared->workers[wk_slot];

		w->dboid = InvalidOid;
		w->pid = 0;
		w->latch = NULL;
		w->exiting = false;
		w->nstatements = 0;
		w->generation++;
		for (i = 0; i < RV_MAX_PENDING; i++)
			if (rv_shared->pending[i].used && rv_shared->pending[i].worker == wk_slot)
				rv_shared->pending[i].used = false;
	}
	LWLockRelease(rv_shared->lock);
}

/*
 * Leave the pool if idle: under the lock, no statement pending for us.
 * Returns true when the worker should exit.
 */
static bool
wk_try_retire(void)
{
	bool		retire = true;
	int			i;

	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < RV_MAX_PENDING; i++)
		if (rv_shared->pending[i].used && rv_shared->pending[i].worker == wk_slot)
			retire = false;
	if (retire && rv_shared->workers[wk_slot].generation == wk_generation)
		rv_shared->workers[wk_slot].exiting = true;
	LWLockRelease(rv_shared->lock);
	return retire;
}

/* Raise the soft open-file limit and size the connection cap to fit it. */
static void
wk_size_connections(void)
{
	struct rlimit rl;
	int			cap = rv_max_connections_per_worker;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		if (rl.rlim_cur < rl.rlim_max)
		{
			rlim_t		want = Min(rl.rlim_max, (rlim_t) 65536);

			if (want > rl.rlim_cur)
			{
				rl.rlim_cur = want;
				(void) setrlimit(RLIMIT_NOFILE, &rl);
				(void) getrlimit(RLIMIT_NOFILE, &rl);
			}
		}
		/* leave room for the files PostgreSQL itself opens */
		if (rl.rlim_cur != RLIM_INFINITY)
			cap = Min(cap, Max(1, (int) rl.rlim_cur - 200));
	}
	wk_max_conn = cap;
}

/*
 * Entry point of an rvbbit worker.  main_arg is the worker slot index;
 * bgw_extra carries the slot generation it was started for.
 */
void
rv_worker_main(Datum main_arg)
{
	WaitEventSet *wes;
	TimestampTz idle_since;
	Oid			dboid;
	char		errbuf[256];

	wk_slot = DatumGetInt32(main_arg);
	memcpy(&wk_generation, MyBgworkerEntry->bgw_extra, sizeof(uint64));

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	if (rv_shared->workers[wk_slot].generation != wk_generation ||
		rv_shared->workers[wk_slot].dboid == InvalidOid)
	{
		LWLockRelease(rv_shared->lock);
		proc_exit(0);
	}
	rv_shared->workers[wk_slot].pid = MyProcPid;
	rv_shared->workers[wk_slot].latch = MyLatch;
	dboid = rv_shared->workers[wk_slot].dboid;
	LWLockRelease(rv_shared->lock);
	before_shmem_exit(wk_on_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("rvbbit worker");

	/*
	 * The worker runs as the bootstrap superuser: every statement it runs
	 * resolves names in pg_catalog first (and functions and operators only
	 * there or schema-qualified), so no object a user created can be picked
	 * up and executed with its rights.  The tables it touches are the
	 * extension's own, where users cannot create triggers or rules.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	wk_cxt = AllocSetContextCreate(TopMemoryContext, "rvbbit worker", ALLOCSET_DEFAULT_SIZES);
	wk_loop_cxt = AllocSetContextCreate(wk_cxt, "rvbbit worker loop", ALLOCSET_DEFAULT_SIZES);
	wk_resowner = ResourceOwnerCreate(NULL, "rvbbit worker");
	MemoryContextSwitchTo(wk_cxt);

	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libcurl")));
	wk_size_connections();
	wk_http = rv_http_create(wk_max_conn, errbuf, sizeof(errbuf));
	if (wk_http == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize the HTTP client"),
				 errdetail("%s", errbuf)));
	if (!rv_http_set_ca_file(wk_http, rv_ca_file))
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	wk_cache_rows = json_object_new_array();
	wk_call_rows = json_object_new_array();

	wes = rv_CreateWaitEventSet(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, rv_http_fd(wk_http), NULL, NULL);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		dlist_mutable_iter it;
		long		timeout;
		long		t;
		WaitEvent	ev;
		TimestampTz now;

		/* a fresh per-turn context (see wk_loop_cxt) */
		MemoryContextSwitchTo(wk_loop_cxt);
		MemoryContextReset(wk_loop_cxt);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		wk_take_pending();

		/* read what the backends sent */
		dlist_foreach_modify(it, &wk_stmts)
		{
			WkStmt	   *s = dlist_container(WkStmt, node, it.cur);

			wk_stmt_receive(s);
		}

		/* tasks whose retry time came */
		now = GetCurrentTimestamp();
		dlist_foreach_modify(it, &wk_retry)
		{
			WkTask	   *tk = dlist_container(WkTask, node, it.cur);

			if (tk->retry_at <= now)
			{
				dlist_delete(&tk->node);
				wk_ready_push(tk);
			}
		}

		/* render requests, look them up, send the misses */
		while (!dlist_is_empty(&wk_prepare))
		{
			WkTask	   *tk = dlist_container(WkTask, node, dlist_head_node(&wk_prepare));

			dlist_delete(&tk->node);
			wk_task_prepare(tk);
		}
		wk_cache_lookup();
		/* cache hits may have moved tasks to their next cell */
		while (!dlist_is_empty(&wk_prepare) || !dlist_is_empty(&wk_lookup))
		{
			while (!dlist_is_empty(&wk_prepare))
			{
				WkTask	   *tk = dlist_container(WkTask, node, dlist_head_node(&wk_prepare));

				dlist_delete(&tk->node);
				wk_task_prepare(tk);
			}
			wk_cache_lookup();
		}
		wk_dispatch();

		/* let curl work and collect what finished */
		rv_http_drive(wk_http);
		{
			RvHttpReq  *done;

			while ((done = rv_http_next_done(wk_http)) != NULL)
				wk_http_done(done);
		}

		/* commit, then tell the backends */
		wk_flush_writes();
		dlist_foreach_modify(it, &wk_stmts)
		{
			WkStmt	   *s = dlist_container(WkStmt, node, it.cur);

			if (!s->detached)
				wk_stmt_send(s);
			if (s->detached ||
				(s->closing && dlist_is_empty(&s->outbox)) ||
				(s->input_done && s->ntasks == 0 && dlist_is_empty(&s->outbox)))
				wk_stmt_close(s);
		}

		/* idle: leave after the timeout */
		if (dlist_is_empty(&wk_stmts))
		{
			if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(),
										   rv_worker_idle_timeout_s * 1000) &&
				wk_try_retire())
				break;
		}
		else
			idle_since = GetCurrentTimestamp();

		/* how long may we sleep? */
		timeout = 1000;
		t = rv_http_timeout(wk_http);
		if (t >= 0)
			timeout = Min(timeout, t);
		if (wk_ratelimit_wait_ms >= 0)
			timeout = Min(timeout, wk_ratelimit_wait_ms);
		if (!dlist_is_empty(&wk_retry))
		{
			now = GetCurrentTimestamp();
			dlist_foreach_modify(it, &wk_retry)
			{
				WkTask	   *tk = dlist_container(WkTask, node, it.cur);
				long		ms = (long) ((tk->retry_at - now) / 1000);

				timeout = Min(timeout, Max(ms, 0));
			}
		}
		if (!dlist_is_empty(&wk_ready) &&
			rv_http_in_flight(wk_http) < rv_http_capacity(wk_http, wk_max_conn) &&
			wk_ratelimit_wait_ms < 0)
			timeout = 0;
		if (!dlist_is_empty(&wk_prepare) || !dlist_is_empty(&wk_lookup))
			timeout = 0;

		if (timeout > 0)
		{
			(void) WaitEventSetWait(wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}

	rv_http_destroy(wk_http);
	proc_exit(0);
}
