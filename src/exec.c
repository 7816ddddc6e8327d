/*-------------------------------------------------------------------------
 *
 * exec.c
 *	  The executor shared by run and map: the reorder window, de-duplication,
 *	  the dedupe_by memo and the statement budget.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>



#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "tcop/tcopprot.h"
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

/* ----------------------------------------------------------------
 * The executor shared by run and map
 * ----------------------------------------------------------------
 */

/* Add one result's counters (from the worker's result header). */
void
rv_map_counters_add(RvMapCounters *c, const RvResultHead *head)
{
	c->results++;
	c->llm_calls += head->llm_calls;
	c->cache_hits += head->cache_hits;
	c->retries += head->retries;
	c->tokens_in += head->tokens_in;
	c->tokens_out += head->tokens_out;
	c->cost += head->cost;
	if (head->llm_calls > 0 && head->latency_ms > 0)
	{
		int			i = 0;

		if (head->latency_ms > RV_LAT_MIN)
			i = (int) floor(log(head->latency_ms / RV_LAT_MIN) / log(RV_LAT_STEP));
		i = Max(0, Min(i, RV_LAT_BUCKETS - 1));
		c->latency[i]++;
		c->nlatency++;
	}
}

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
	to->budget = from->budget;
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

/* A row sent to the worker was answered: it is no longer in flight. */
static void
map_slot_answered(MapExec *ex, MapSlot *s)
{
	ex->inflight--;
	ex->inflight_bytes -= s->sent_bytes;
	s->sent_bytes = 0;
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
	map_slot_answered(ex, s);
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
		s->oc.budget = (head.flags & (RV_RESULT_BUDGET_STMT | RV_RESULT_BUDGET_DAY)) != 0;
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
void
map_exec_start(MapExec *ex, MapNextRow next_row, void *arg)
{
	HASHCTL		hctl;
	MemoryContext old = MemoryContextSwitchTo(ex->cxt->parent);

	ex->next_row = next_row;
	ex->next_arg = arg;
	ex->batch = ex->opts->batch > 0 ? ex->opts->batch : 0;
	/*
	 * Rows are sent ahead: PARALLEL and a quarter more are with the worker,
	 * which starts at most PARALLEL of them at once (the header says how
	 * many) and starts the next one as soon as a call finishes, without
	 * waiting for this backend to read the result and send another row.
	 * The quarter is what an early stop (LIMIT, a closed cursor) can cost
	 * beyond the calls in flight: rows the worker started before it knew.
	 */
	ex->max_inflight = (ex->parallel + (ex->parallel + 3) / 4) * (ex->batch > 0 ? ex->batch : 1);

	/*
	 * rvbbit.max_bytes_in_flight: no new row is read while the rows with
	 * the worker add up to this much (always at least one row or batch in
	 * flight), so PARALLEL x row size no longer decides the worker's memory.
	 */
	ex->max_inflight_bytes = (int64) rv_max_bytes_in_flight_kb * 1024;
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

/* Send the row read last; false when the channel is full. */
static bool
map_send_row(MapExec *ex, bool *progress)
{
	MapSlot    *s = &ex->slots[(ex->next_seq - 1) % ex->window];

	Size		n = strlen(s->scope) + 1;

	if (!rv_channel_try_send(ex->ch, RV_MSG_ROW, ex->next_seq - 1, s->scope, n))
		return false;
	s->sent_bytes = n;
	ex->inflight_bytes += n;
	pfree(s->scope);
	s->scope = NULL;
	ex->need_send = false;
	ex->inflight++;
	*progress = true;
	return true;
}

/* Send the batch being filled (its row count first); false when full. */
static bool
map_send_batch(MapExec *ex, bool *progress)
{
	memcpy(ex->bbuf.data, &ex->bk, sizeof(uint32));
	if (!rv_channel_try_send(ex->ch, RV_MSG_BATCH, 0, ex->bbuf.data, ex->bbuf.len))
		return false;
	ex->inflight += ex->bk;
	ex->inflight_bytes += ex->batch_bytes;
	ex->batch_bytes = 0;
	ex->bk = 0;
	ex->batch_ready = false;
	*progress = true;
	return true;
}

/*
 * Read the next input row into its slot of the window (the row's scope
 * and the key identical rows are recognised by); NULL at the end of the
 * input.
 */
static MapSlot *
map_read_row(MapExec *ex)
{
	HeapTuple	tup = NULL;
	MemoryContext old;
	MapSlot    *s;

	resetStringInfo(&ex->scope);
	if (!ex->next_row(ex->next_arg, &ex->scope, &tup))
	{
		ex->input_eof = true;
		return NULL;
	}
	s = &ex->slots[ex->next_seq % ex->window];
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
	return s;
}

/*
 * Is row s (number ex->next_seq) answered without a request of its own:
 * by the dedupe_by memo of a key that already finished (done now), or by
 * an identical row in flight (s follows it)?  Otherwise s becomes the row
 * in flight for its key.
 */
static bool
map_answered(MapExec *ex, MapSlot *s)
{
	bool		found;
	DedupEntry *e;

	if (ex->memo)
	{
		MemoEntry  *m = hash_search(ex->memo, &s->hash, HASH_FIND, &found);

		if (found && strcmp(m->dkey, s->dkey) == 0)
		{
			s->done = true;
			map_outcome_copy(ex->cxt, &m->oc, &s->oc);
			if (ex->ch->progress)
			{
				pg_atomic_fetch_add_u64(&ex->ch->progress->rows_done, 1);
				if (s->oc.failed)
					pg_atomic_fetch_add_u64(&ex->ch->progress->rows_failed, 1);
			}
			return true;
		}
	}

	e = hash_search(ex->dedup, &s->hash, HASH_ENTER, &found);
	if (found)
	{
		MapSlot    *l = &ex->slots[e->seq % ex->window];

		if (e->seq >= ex->emitted && !l->done && l->dkey &&
			strcmp(l->dkey, s->dkey) == 0)
		{
			s->leader = e->seq;
			l->nfollowers++;
			return true;
		}
	}
	e->seq = ex->next_seq;
	return false;
}

/* MAP BATCH: append row s (number seq) to the batch being filled. */
static void
map_batch_add(MapExec *ex, MapSlot *s, int64 seq)
{
	uint32		n = (uint32) strlen(s->scope);

	if (ex->bk == 0)
	{
		resetStringInfo(&ex->bbuf);
		appendBinaryStringInfo(&ex->bbuf, (char *) &ex->bk, sizeof(uint32));
	}
	appendBinaryStringInfo(&ex->bbuf, (char *) &seq, sizeof(int64));
	appendBinaryStringInfo(&ex->bbuf, (char *) &n, sizeof(uint32));
	appendBinaryStringInfo(&ex->bbuf, s->scope, n);
	s->sent_bytes = n;
	ex->batch_bytes += n;
	pfree(s->scope);
	s->scope = NULL;
	if (++ex->bk >= (uint32) ex->batch)
		ex->batch_ready = true;
}

/*
 * Read input rows and send them while the window and PARALLEL allow.
 * Sets *progress when something moved.  Each turn does one thing: send
 * what waits to be sent, or stop, or read one row (answered at once,
 * added to the batch, or left to be sent next turn).
 */
static void
map_fill(MapExec *ex, bool *progress)
{
	while (!ex->input_eof)
	{
		MapSlot    *s;
		int64		seq = ex->next_seq;

		if (ex->need_send)
		{
			if (!map_send_row(ex, progress))
				break;
			continue;
		}
		if (ex->batch_ready)
		{
			if (!map_send_batch(ex, progress))
				break;
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
		if (ex->bk == 0 && ex->inflight + Max(ex->batch, 1) > ex->max_inflight)
			break;
		/* nor more bytes than rvbbit.max_bytes_in_flight (beyond one row) */
		if (ex->bk == 0 && ex->inflight > 0 && ex->inflight_bytes >= ex->max_inflight_bytes)
			break;
		/* budget_dollars: schedule nothing more once the spend reached it */
		if (ex->over_budget)
		{
			HeapTuple	dummy = NULL;

			resetStringInfo(&ex->scope);
			ex->stopped_early = ex->next_row(ex->next_arg, &ex->scope, &dummy);
			ex->input_eof = true;
			break;
		}

		s = map_read_row(ex);
		if (s == NULL)
			break;
		if (map_answered(ex, s))
		{
			pfree(s->scope);
			s->scope = NULL;
			ex->next_seq++;
			*progress = true;
			continue;
		}
		ex->next_seq++;
		if (ex->batch > 0)
			map_batch_add(ex, s, seq);
		else
			ex->need_send = true;
	}
	/* the last, partly filled batch */
	if (ex->input_eof && ex->bk > 0)
		(void) map_send_batch(ex, progress);
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
MapSlot *
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

		/*
		 * Rows already returned wait in libpq's send buffer until it fills
		 * or the statement ends, so a client that reads rows as they come
		 * (psql 17's FETCH_COUNT, libpq's single-row and chunked modes)
		 * would see none until the end.  Push them out before sleeping;
		 * this never blocks, and is a no-op with nothing buffered.
		 */
		if (whereToSendOutput == DestRemote)
			pq_flush_if_writable();
		rv_channel_wait(ex->ch);
	}
}

/*
 * Stop early (a LIMIT, a closed cursor): schedule nothing more, and wait
 * for the calls in flight so that their results reach the cache; their
 * rows are dropped.  Not done outside a normal transaction state (commit,
 * abort), where the channel is simply closed.
 */
void
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
				map_slot_answered(ex, &ex->slots[head.seq % ex->window]);
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
void
map_execute(MapExec *ex, MapNextRow next_row, MapEmitRow emit, void *arg)
{
	MapSlot    *s;

	map_exec_start(ex, next_row, arg);
	while ((s = map_step(ex)) != NULL)
		emit(arg, s);
}

/* == end stream == */

/* Set up the executor for a statement. */
void
map_exec_init(MapExec *ex, const char *kind, const char *display,
			  const char *def, const RvOptions *opts, int parallel)
{
	char	   *hdr = rv_header_json(display, def, opts, parallel);

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

/*
 * Raise the budget error when a budget refused a call (or the statement's
 * budget was used up and scheduling stopped early); return otherwise.
 */
static void
map_budget_error(MapExec *ex)
{
	if (ex->refused_flags & RV_RESULT_BUDGET_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s", ex->day_error ? ex->day_error : "daily budget reached"),
				 ex->day_detail && ex->day_detail[0] ? errdetail("%s", ex->day_detail) : 0,
				 ex->day_hint && ex->day_hint[0] ? errhint("%s", ex->day_hint) : 0));
	if ((ex->refused_flags & RV_RESULT_BUDGET_STMT) || (ex->over_budget && ex->stopped_early))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("budget of $%.4f of the statement reached", ex->opts->budget_dollars),
				 errdetail("$%.4f was spent. A call is held to its largest possible cost until it is answered, "
						   "so the next one could have gone past the budget; it was not sent. "
						   "The rows that were answered are cached, so running the statement again pays only for the rest.",
						   ex->spent),
				 errhint("Raise budget_dollars, or add a LIMIT to the USING query.")));
}

/* Finish: close the channel and warn about failed rows. */
void
map_exec_finish(MapExec *ex, bool warn)
{
	rv_channel_close(ex->ch);
	map_budget_error(ex);
	if (warn && ex->nfailed > 0)
		ereport(WARNING,
				(errcode(ex->first_sqlstate ? ex->first_sqlstate : ERRCODE_WARNING),
				 errmsg("%lld of %lld rows failed and returned NULL",
						(long long) ex->nfailed, (long long) ex->nrows),
				 ex->first_error_detail && ex->first_error_detail[0] ?
				 errdetail("The first error was: %s. %s", ex->first_error, ex->first_error_detail) :
				 errdetail("The first error was: %s.", ex->first_error ? ex->first_error : "?"),
				 errhint("Add WITH (on_error = fail) to the statement (\"on_error\": \"fail\" in rvbbit.map's options) to stop at the first failure. rvbbit.calls has the error of every call that was sent; a row that failed before its call (a template error) has none.")));
	MemoryContextDelete(ex->cxt);
}

/* The jsonb value of a finished slot by on_error mode; *isnull if NULL. */
Datum
map_slot_value(MapExec *ex, MapSlot *s, bool *isnull)
{
	*isnull = false;
	if (!s->oc.failed)
		return DirectFunctionCall1(jsonb_in, CStringGetDatum(s->oc.result));
	/*
	 * A row a budget refused is never returned (as NULL): the statement
	 * fails at it.  The calls still in flight are waited for first, so that
	 * when the error arrives they are paid, cached and in rvbbit.calls, as
	 * when a budget error ends a statement at its end.
	 */
	if (s->oc.budget)
	{
		map_exec_drain(ex);
		map_budget_error(ex);
	}
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
