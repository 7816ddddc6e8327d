/*-------------------------------------------------------------------------
 *
 * worker_stmt.c
 *	  The rvbbit worker's side of a statement's queues: the header, row and
 *	  batch messages a backend sends (turned into tasks), the results and
 *	  errors queued back to it, and closing a statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include "miscadmin.h"
#include "storage/dsm.h"
#include "utils/memutils.h"

#include "worker.h"

/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/* json_object_object_get for a string value, or NULL. */
const char *
wk_json_str(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int64
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
void
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
void
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
	s->parallel = (int) wk_json_int(hdr, "parallel", 0);
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


/* wk_parse_scope()'s tokener, kept between rows */
static json_tokener *wk_scope_tok = NULL;

/*
 * Parse a row's scope, as json_tokener_parse() does (the same depth, NULL
 * on any error), with one tokener kept for all rows: a new tokener for
 * every row was a few percent of the worker's instructions per row.
 */
static json_object *
wk_parse_scope(const char *text)
{
	json_object *obj;

	if (wk_scope_tok == NULL)
	{
		wk_scope_tok = json_tokener_new();
		if (wk_scope_tok == NULL)
			return NULL;
	}
	json_tokener_reset(wk_scope_tok);
	obj = json_tokener_parse_ex(wk_scope_tok, text, -1);
	if (json_tokener_get_error(wk_scope_tok) != json_tokener_success)
	{
		if (obj != NULL)
			json_object_put(obj);
		obj = NULL;
	}
	json_tokener_reset(wk_scope_tok);
	if (strlen(text) > 256 * 1024)
	{
		/* its string buffer grew with the row: do not keep that */
		json_tokener_free(wk_scope_tok);
		wk_scope_tok = NULL;
	}
	return obj;
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
		scope = wk_parse_scope(pnstrdup(data + off, n));
		off += n;
		if (scope && json_object_object_get_ex(scope, "input", &input) && input)
			json_object_array_add(rows, json_object_get(input));
		else
			json_object_array_add(rows, json_object_new_object());
		if (scope)
			json_object_put(scope);
	}
	if (i == k)
		wk_stmt_admit(wk_batch_task(s, seqs, (int) k, rows, 0), false);
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
	scope = wk_parse_scope(data + sizeof(int64));
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
	wk_stmt_admit(t, false);
}

/*
 * Start a new task (WT_PREPARE) of its statement, or, when the statement
 * already has PARALLEL tasks started, hold it until one of them finishes
 * (wk_task_free).  The backend sends rows ahead so that a finished call's
 * place is refilled here at once.  force: start it whatever the count.
 */
void
wk_stmt_admit(WkTask *t, bool force)
{
	WkStmt	   *s = t->stmt;

	if (!force && s->parallel > 0 && s->admitted >= s->parallel)
	{
		dlist_push_tail(&s->held, &t->node);
		return;
	}
	t->admitted = true;
	s->admitted++;
	dlist_push_tail(&wk_prepare, &t->node);
}

/* Read all available messages of a statement (never blocks). */
void
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
void
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

	/* the rows sent ahead first, so that freeing a task starts none */
	while (!dlist_is_empty(&s->held))
		wk_task_free(dlist_container(WkTask, node, dlist_pop_head_node(&s->held)));
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
				/* abandoned in flight: charged its expected cost, and recorded */
				charged = wk_task_charge_unanswered(t);
				wk_record_call(t, "error", 0, -1, -1, charged, 0,
							   "the statement ended while the request was in flight");
			}
			wk_task_free(t);
		}
	}
}

/* Detach and free a statement. */
void
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
