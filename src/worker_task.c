/*-------------------------------------------------------------------------
 *
 * worker_task.c
 *	  The rvbbit worker's task state machine: one row (or one MAP BATCH)
 *	  run through its cascade.  A task is prepared (request rendered, cache
 *	  key computed), looked up, queued ready in fair order, dispatched under
 *	  the caps and budgets, and its HTTP reply handled: retried with backoff,
 *	  re-asked on a schema failure, moved to the next cell, or finished.
 *	  A circuit breaker per provider and role stops sending to a server that
 *	  cannot be reached.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <ctype.h>
#include <math.h>

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "budget.h"
#include "jsonschema.h"
#include "ratelimit.h"
#include "request.h"
#include "worker.h"

dlist_head wk_prepare = DLIST_STATIC_INIT(wk_prepare);
dlist_head wk_lookup = DLIST_STATIC_INIT(wk_lookup);
dlist_head wk_ready = DLIST_STATIC_INIT(wk_ready);
static uint64 wk_fair_clock = 0;	/* fair_tag of the task sent last */
dlist_head wk_retry = DLIST_STATIC_INIT(wk_retry);
dlist_head wk_inflight = DLIST_STATIC_INIT(wk_inflight);
long wk_ratelimit_wait_ms = -1;

static void wk_task_done(WkTask *t, json_object *result);
static void wk_task_fail_flags(WkTask *t, int flags, int sqlstate, const char *msg,
							   const char *detail, const char *hint);

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

static double wk_cost(WkStmt *s, const char *model_ref, long tin, long tout, long tcached);

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
 * cancelling or timing out calls cannot spend past a budget.  Without a
 * budget nothing was reserved: the expected cost is worked out here, so
 * that the call is recorded at it and counts towards the role's day (a
 * daily budget set later that day sees it).  Returns the dollars charged
 * (0 for a model without a price).
 */
double
wk_task_charge_unanswered(WkTask *t)
{
	uint64		est = Max(t->hold.micros, t->stmt_reserved);

	if (est == 0)
		est = (uint64) (wk_cost(t->stmt, t->model_ref, (long) (t->body_len / 4) + 1,
								t->send.max_tokens, 0) * 1e6);
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
void
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
	if (t->admitted)
	{
		WkStmt	   *s = t->stmt;

		s->admitted--;
		/* a place is free: start the next row sent ahead */
		if (!s->closing && !dlist_is_empty(&s->held) &&
			(s->parallel <= 0 || s->admitted < s->parallel))
		{
			WkTask	   *n = dlist_container(WkTask, node, dlist_pop_head_node(&s->held));

			wk_stmt_admit(n, true);
		}
	}
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

/* The head of a message about the task's row: what the row cost. */
static void
wk_task_head(WkTask *t, RvResultHead *head)
{
	memset(head, 0, sizeof(RvResultHead));
	head->seq = t->seq;
	head->llm_calls = t->calls;
	head->cache_hits = t->hits;
	head->tokens_in = t->tokens_in;
	head->tokens_out = t->tokens_out;
	head->cost = t->cost;
	head->retries = t->retries;
	head->latency_ms = t->latency_ms;
}

/* MAP BATCH: the batch's calls and cost are counted on its first row only. */
static void
wk_head_after_first(RvResultHead *head)
{
	head->llm_calls = head->cache_hits = 0;
	head->tokens_in = head->tokens_out = 0;
	head->cost = 0;
	head->retries = 0;
	head->latency_ms = 0;
}

/* The row is done: queue its result for the backend and free it. */
static void
wk_task_done(WkTask *t, json_object *result)
{
	RvResultHead head;
	const char *parts[1];

	wk_task_head(t, &head);
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
			wk_head_after_first(&head);
		}
		wk_task_free(t);
		return;
	}
	parts[0] = json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	wk_queue_msg(t->stmt, RV_MSG_RESULT, &head, parts, 1);
	wk_task_free(t);
}

/* The row failed: queue the error for the backend and free it. */
void
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

	wk_task_head(t, &head);
	head.flags = flags;
	head.sqlstate = sqlstate;
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
			wk_head_after_first(&head);
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
void
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
	json_tokener *tok = NULL;
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
	/* a tokener only for what may be JSON: most replies are plain text */
	if (len > 0 && (*p == '{' || *p == '[') &&
		(tok = json_tokener_new_ex(64)) != NULL)
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

/* Count a reply on the task's row and in the statement's progress. */
static void
wk_task_count(WkTask *t, long tin, long tout, bool cached, double cost)
{
	WkStmt	   *s = t->stmt;

	if (cached)
	{
		t->hits++;
		rv_progress_add(s->progress, s->seghdr->statement_id, &s->progress->cache_hits, 1);
		return;
	}
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

/* MAP BATCH: run the batch's rows as two batches of half the size. */
static void
wk_task_split_batch(WkTask *t)
{
	int			half = t->nbatch / 2;

	/* the two halves take the batch's place at once, past the cap */
	wk_stmt_admit(wk_batch_task(t->stmt, t->seqs, half, t->batch_rows, 0), true);
	wk_stmt_admit(wk_batch_task(t->stmt, t->seqs + half, t->nbatch - half, t->batch_rows, half), true);
	wk_task_free(t);
}

/*
 * A reply cut off at max_tokens: MAP BATCH splits the batch (fewer rows
 * need fewer tokens), a schema cell whose rules allow it is asked once
 * more with a larger cap, anything else fails the row.
 */
static void
wk_task_truncated(WkTask *t, const RvLlmResponse *resp, long tin, long tout,
				  double cost, double latency_ms)
{
	WkStmt	   *s = t->stmt;
	RvCell	   *cell = &s->cascade->cells[t->cell];
	char	   *why = psprintf("the reply was cut off at max_tokens (%d)",
							   t->send.max_tokens);
	int			r = wk_record_call(t, "truncated", 200, tin, tout, cost,
									latency_ms, why);

	wk_record_reply(r, resp);
	free(t->body);
	t->body = NULL;
	if (t->nbatch > 1)
	{
		wk_task_split_batch(t);
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
}

/*
 * The reply did not match the cell's output_schema: re-ask with the error
 * appended to the conversation, or fail the row after max_attempts.
 */
static void
wk_task_reask(WkTask *t, const char *content, const RvError *err)
{
	RvCell	   *cell = &t->stmt->cascade->cells[t->cell];
	json_object *m;
	char	   *msg;

	t->attempt++;
	if (t->attempt >= cell->max_attempts)
	{
		wk_task_fail(t, ERRCODE_DATA_EXCEPTION,
					 psprintf("reply of cell \"%s\" does not match its output_schema", cell->name),
					 psprintf("After %d attempts: %s.", cell->max_attempts, err->message),
					 "Check the cell's instructions and output_schema, or raise rules.max_attempts.");
		return;
	}
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "content", json_object_new_string(content));
	json_object_array_add(t->messages, m);
	m = json_object_new_object();
	msg = psprintf("Your reply did not match the required JSON schema: %s. "
				   "Reply again with only a JSON value that matches the schema.",
				   err->message);
	json_object_object_add(m, "role", json_object_new_string("user"));
	json_object_object_add(m, "content", json_object_new_string(msg));
	json_object_array_add(t->messages, m);
	pfree(msg);
	wk_task_prepare(t);
}

/*
 * The current cell answered with value (taken over): store it in the
 * row's outputs and prepare the next cell, or finish the row after the
 * last one.
 */
static void
wk_task_next_cell(WkTask *t, json_object *value)
{
	WkStmt	   *s = t->stmt;
	RvCell	   *cell = &s->cascade->cells[t->cell];
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

/*
 * A reply for the task's current request (from HTTP, with the provider's
 * parsed response in resp, or from the cache, resp NULL).  Validates it,
 * records it, and moves on: re-ask, next cell, or done.  A reply cut off at
 * max_tokens is never cached and never a success (wk_task_truncated).
 */
void
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

	rv_error_clear(&err);
	wk_task_count(t, tin, tout, cached, cost);
	if (!cached && resp != NULL && resp->truncated)
	{
		wk_task_truncated(t, resp, tin, tout, cost, latency_ms);
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
		int			rec = wk_record_call(t, usable ? "ok" : "invalid", 200, tin, tout,
										  cost, latency_ms, usable ? NULL : err.message);

		wk_record_reply(rec, resp);
		if (usable && s->cache_write)
			wk_queue_cache_write(t, content, tin, tout);
	}
	else
		wk_record_call(t, "cached", 0, tin, tout, 0.0, 0.0, NULL);

	free(t->body);
	t->body = NULL;

	if (value == NULL && t->nbatch > 1)
		wk_task_split_batch(t); /* a wrong length or an invalid item */
	else if (value == NULL)
		wk_task_reask(t, content, &err);
	else
		wk_task_next_cell(t, value);
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
	for (q = 0; q < (int) lengthof(queues); q++)
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

/*
 * Settle what a finished request reserved and give back its cluster-wide
 * slot.  A reply settles the reservation to its cost later (in
 * wk_task_response); an HTTP error or a server never reached releases it;
 * a request sent but not answered is charged.  Returns the dollars
 * charged.
 */
static double
wk_http_settle(WkTask *t, const RvHttpReq *req)
{
	WkStmt	   *s = t->stmt;
	double		charged = 0;

	if (req->code != CURLE_OK && req->sent)
		charged = wk_task_charge_unanswered(t);
	else if (req->code != CURLE_OK || req->status < 200 || req->status >= 300)
		wk_task_unreserve(t);
	if (t->counted)
	{
		pg_atomic_fetch_sub_u32(&rv_shared->http_in_flight, 1);
		wk_counted--;
		t->counted = false;
		rv_progress_in_flight(s->progress, s->seghdr->statement_id, -1);
	}
	return charged;
}

/*
 * The transfer failed (no HTTP reply): count an unreachable server against
 * its breaker, then retry with backoff or fail the row.
 */
static void
wk_http_transport_error(WkTask *t, RvHttpReq *req, WkBreaker *b, double charged)
{
	WkStmt	   *s = t->stmt;
	long		status = req->status;
	char	   *errmsg = NULL;
	bool		retry = false;
	bool		unreachable = false;
	bool		now = false;	/* retry without a backoff */
	int			sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	char	   *msg = NULL;
	char	   *hint = NULL;

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
		/* any HTTP answer means the server is there (README: breaker) */
		unreachable = (req->status == 0);
	}
	else if (req->code == CURLE_OPERATION_TIMEDOUT && !req->connected && !req->sent)
	{
		/* no connection in time: not a slow answer */
		sqlstate = ERRCODE_CONNECTION_FAILURE;
		msg = psprintf("could not connect to the LLM provider in time");
		errmsg = psprintf("%s", req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->code));
		hint = "Check that the provider's host and port are reachable from the database server.";
		retry = true;
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
	else if (req->closed_early)
	{
		sqlstate = ERRCODE_CONNECTION_FAILURE;
		msg = psprintf("could not complete the request to the LLM provider");
		errmsg = psprintf("the provider closed the HTTP/2 stream before the request body was sent");
		retry = true;
		now = true;
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
	rv_http_req_release(req);
	if (retry && t->tries <= s->max_retries)
		wk_task_retry_later(t, now ? 0 : -1);
	else if (retry && t->tries > 1)
		wk_task_fail(t, sqlstate, msg,
					 errmsg != msg ? psprintf("%s (after %d attempts).", errmsg, t->tries) :
					 psprintf("After %d attempts.", t->tries), hint);
	else
		wk_task_fail(t, sqlstate, msg, errmsg != msg ? psprintf("%s.", errmsg) : NULL, hint);
}

/* HTTP 429 or 5xx: retry (after Retry-After, if given) or fail the row. */
static void
wk_http_busy(WkTask *t, RvHttpReq *req)
{
	WkStmt	   *s = t->stmt;
	long		status = req->status;
	char	   *pmsg = rv_llm_error_message(req->resp, req->resp_len);
	char	   *msg;

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
}

/* Any other status outside 2xx: the row fails, with a hint for 401/403/404. */
static void
wk_http_refused(WkTask *t, RvHttpReq *req)
{
	long		status = req->status;
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
}

/*
 * A 2xx reply: parse it in the provider's flavour, correct the token rate
 * limit by what the call really used, and hand the content to the task.
 */
static void
wk_http_reply(WkTask *t, RvHttpReq *req)
{
	RvLlmResponse resp;
	RvError		err;
	int			tpm = t->provider->tpm >= 0 ? t->provider->tpm : rv_tokens_per_minute;
	long		used;
	double		lat;

	memset(&resp, 0, sizeof(resp));
	rv_error_clear(&err);
	if (!rv_llm_parse_response(t->provider->flavor, req->resp ? req->resp : "",
							   req->resp_len, &resp, &err))
	{
		wk_record_call(t, "error", req->status, -1, -1, 0, req->latency_ms, err.message);
		rv_http_req_release(req);
		wk_task_fail(t, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, err.message,
					 err.detail[0] ? err.detail : NULL, NULL);
		return;
	}
	used = Max(resp.input_tokens, 0) + Max(resp.output_tokens, 0);
	rv_ratelimit_charge(t->provider->api_base, tpm, (int) (used - (long) (t->body_len / 4)));
	lat = req->latency_ms;
	rv_http_req_release(req);
	wk_task_response(t, resp.content, &resp, resp.input_tokens,
					 resp.output_tokens, false, lat);
	rv_llm_response_free(&resp);
}

/* Handle a finished HTTP transfer: settle it, then one of the cases above. */
void
wk_http_done(RvHttpReq *req)
{
	WkTask	   *t = (WkTask *) req->owner;
	long		status = req->status;
	WkBreaker  *b = wk_breaker(t->provider->api_base, t->stmt->seghdr->roleid);
	double		charged;

	dlist_delete(&t->node);
	t->in_http = false;
	charged = wk_http_settle(t, req);
	t->tries++;

	if (req->code != CURLE_OK)
	{
		wk_http_transport_error(t, req, b, charged);
		return;
	}

	/* the server answered: it is reachable */
	b->failures = 0;
	b->open_until = 0;

	if (status == 429 || status >= 500)
		wk_http_busy(t, req);
	else if (status < 200 || status >= 300)
		wk_http_refused(t, req);
	else
		wk_http_reply(t, req);
}

/*
 * Make a MAP BATCH task for k rows: seqs[0..k) whose inputs are
 * rows[from..from+k).  The template sees rows and row_count; the request
 * asks for an array of exactly k items of the cell's output_schema.
 * The caller hands the new task (state WT_PREPARE) to wk_stmt_admit().
 */
WkTask *
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
	return t;
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

	/*
	 * Fail closed: without a price a call would count as $0 and no budget
	 * could hold it.  The refusal travels with the daily-budget flag, whose
	 * message, detail and hint the backend raises as the worker wrote them.
	 */
	if (t->model_ref == NULL || !json_object_object_get_ex(s->prices, t->model_ref, NULL))
	{
		dlist_delete(&t->node);
		wk_task_fail_flags(t, RV_RESULT_BUDGET_DAY, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
						   psprintf("model \"%s\" has no price, so a budget cannot hold its calls",
									t->model_ref ? t->model_ref : ""),
						   psprintf("%s applies and rvbbit.model_prices of this database has no row for the model. The call was not sent.",
									s->budget_stmt >= 0 ? "The statement's budget_dollars" :
									psprintf("The daily budget of role \"%s\"", s->role_name)),
						   psprintf("Ask a superuser or a member of rvbbit_admin to add its price: "
									"INSERT INTO rvbbit.model_prices (model, input_per_million, output_per_million) "
									"VALUES (%s, ..., ...);", quote_literal_cstr(t->model_ref ? t->model_ref : "")));
		return WK_RESERVE_REFUSED;
	}
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
void
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
void
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
