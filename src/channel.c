/*-------------------------------------------------------------------------
 *
 * channel.c
 *	  The backend's end of a statement channel (see rvbbit.h for the
 *	  message protocol).
 *
 * The backend creates a DSM segment holding a small header and two
 * shm_mq rings, laid out by a shm_toc (rvbbit.h), submits it to the worker pool, and then talks to the
 * worker without ever blocking in shm_mq: sends and receives use nowait,
 * and rv_channel_wait() sleeps on the process latch, which shm_mq sets
 * whenever the worker writes, reads or detaches.  Every wait checks for
 * interrupts (so Ctrl-C and statement_timeout act at once) and checks that
 * the assigned worker still exists.
 *
 * The segment is attached under the transaction's resource owner: on
 * error or cancel it is detached during abort, which detaches both queues;
 * the worker notices and abandons the statement's requests.  An
 * on_dsm_detach callback returns the progress entry and the worker's
 * statement count in every case.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shm_toc.h"
#include "utils/memutils.h"

#include "channel.h"

/* see rv_channel_worker_exited() */
bool		rv_worker_exited = false;

/* The size of a statement segment: its table of contents and entries. */
static Size
ch_segment_size(void)
{
	shm_toc_estimator e;

	shm_toc_initialize_estimator(&e);
	shm_toc_estimate_chunk(&e, sizeof(RvSegmentHeader));
	shm_toc_estimate_chunk(&e, RV_QUEUE_SIZE);
	shm_toc_estimate_chunk(&e, RV_QUEUE_SIZE);
	shm_toc_estimate_keys(&e, RV_TOC_KEYS);
	return shm_toc_estimate(&e);
}

/* Allocate a queue of RV_QUEUE_SIZE in the segment under key. */
static shm_mq *
ch_create_queue(shm_toc *toc, uint64 key)
{
	shm_mq	   *mq = shm_mq_create(shm_toc_allocate(toc, RV_QUEUE_SIZE), RV_QUEUE_SIZE);

	shm_toc_insert(toc, key, mq);
	return mq;
}

/* on_dsm_detach callback: give back the progress entry and worker count. */
static void
ch_on_detach(dsm_segment *seg, Datum arg)
{
	RvChannel  *ch = (RvChannel *) DatumGetPointer(arg);

	rv_progress_release(ch->progress_index, ch->statement_id);
	ch->progress_index = -1;
	ch->progress = NULL;
	if (ch->worker >= 0)
		rv_pool_release(ch->worker, ch->generation);
	ch->seg = NULL;
}

RvChannel *
rv_channel_open(const char *kind, const char *cascade, int parallel,
				const char *header_json)
{
	RvChannel  *ch;
	Size		size = ch_segment_size();
	shm_toc    *toc;
	RvSegmentHeader *hdr;
	shm_mq	   *req;
	shm_mq	   *res;
	MemoryContext old;

	old = MemoryContextSwitchTo(TopTransactionContext);
	ch = palloc0(sizeof(RvChannel));
	initStringInfo(&ch->pending);
	ch->statement_id = (int64) pg_atomic_fetch_add_u64(&rv_shared->next_statement_id, 1);
	ch->progress_index = -1;
	ch->worker = -1;

	/*
	 * The detach callback is registered before anything it gives back is
	 * taken: whatever fails from here on (no worker can be started, the
	 * submit is refused, the header cannot be sent), the abort detaches the
	 * segment and the callback returns the progress entry (and the worker's
	 * statement count once there is a worker).
	 */
	ch->seg = dsm_create(size, 0);
	on_dsm_detach(ch->seg, ch_on_detach, PointerGetDatum(ch));
	ch->progress_index = rv_progress_acquire(kind, cascade, parallel, ch->statement_id);
	ch->progress = rv_progress_get(ch->progress_index);

	/* the layout: a table of contents the worker checks the magic of */
	toc = shm_toc_create(RV_SHM_MAGIC, dsm_segment_address(ch->seg), size);
	hdr = shm_toc_allocate(toc, sizeof(RvSegmentHeader));
	hdr->progress_index = ch->progress_index;
	hdr->roleid = GetUserId();
	hdr->dboid = MyDatabaseId;
	hdr->backend_pid = MyProcPid;
	hdr->statement_id = ch->statement_id;
	shm_toc_insert(toc, RV_TOC_HEADER, hdr);
	req = ch_create_queue(toc, RV_TOC_REQUESTS);
	res = ch_create_queue(toc, RV_TOC_RESULTS);
	shm_mq_set_sender(req, MyProc);
	shm_mq_set_receiver(res, MyProc);
	ch->req = shm_mq_attach(req, ch->seg, NULL);
	ch->res = shm_mq_attach(res, ch->seg, NULL);
	MemoryContextSwitchTo(old);

	ch->worker = rv_pool_submit(dsm_segment_handle(ch->seg), &ch->generation);

	/* the header goes first; the queue is empty, so this cannot block long */
	while (!rv_channel_try_send(ch, RV_MSG_HEADER, -1, header_json, strlen(header_json) + 1))
		rv_channel_wait(ch);
	return ch;
}

bool
rv_channel_try_send(RvChannel *ch, char type, int64 seq, const char *payload,
					Size len)
{
	shm_mq_result r;

	if (!ch->has_pending)
	{
		resetStringInfo(&ch->pending);
		appendStringInfoChar(&ch->pending, type);
		if (type == RV_MSG_ROW)
			appendBinaryStringInfo(&ch->pending, (char *) &seq, sizeof(int64));
		if (payload != NULL)
			appendBinaryStringInfo(&ch->pending, payload, len);
		ch->has_pending = true;
	}
	r = shm_mq_send(ch->req, ch->pending.len, ch->pending.data, true, true);
	if (r == SHM_MQ_WOULD_BLOCK)
		return false;
	ch->has_pending = false;

	/*
	 * A worker that stopped reading may have left an error for us in the
	 * result queue (a statement it refused): the receive side reports it, or
	 * that the worker went away.  The message is dropped.
	 */
	return true;
}

bool
rv_channel_try_receive(RvChannel *ch, char **data, Size *len)
{
	shm_mq_result r;
	void	   *p;

	if (ch->worker_done)
		return false;
	r = shm_mq_receive(ch->res, len, &p, true);
	if (r == SHM_MQ_WOULD_BLOCK)
		return false;
	if (r == SHM_MQ_DETACHED)
	{
		ch->worker_done = true;
		return false;
	}
	*data = (char *) p;
	return true;
}

void
rv_channel_wait(RvChannel *ch)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   1000L, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if ((rc & WL_TIMEOUT) && !rv_pool_worker_alive(ch->worker, ch->generation))
		rv_channel_worker_exited();
}

/*
 * The worker serving the statement went away before it was done: raise
 * the error, and note in rv_worker_exited that this error is the worker's
 * exit (a job runner treats it as an interruption, not as the job's
 * failure; the error code alone is shared with provider connection
 * failures).
 */
void
rv_channel_worker_exited(void)
{
	rv_worker_exited = true;
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("rvbbit worker exited while the statement was running"),
			 errhint("Check the server log for the reason, then run the statement again; "
					 "completed calls are answered from the cache.")));
}

void
rv_channel_raise(const char *data, Size len, int elevel)
{
	RvResultHead head;
	const char *msg;
	const char *detail;
	const char *hint;
	const char *end = data + len;

	memcpy(&head, data + 1, sizeof(head));
	msg = data + 1 + sizeof(head);
	detail = msg + strnlen(msg, end - msg) + 1;
	hint = detail < end ? detail + strnlen(detail, end - detail) + 1 : end;
	if (detail >= end)
		detail = "";
	if (hint >= end)
		hint = "";
	ereport(elevel,
			(errcode(head.sqlstate ? head.sqlstate : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg_internal("%s", msg),
			 detail[0] ? errdetail_internal("%s", detail) : 0,
			 hint[0] ? errhint("%s", hint) : 0));
}

void
rv_channel_close(RvChannel *ch)
{
	if (ch->seg != NULL)
		dsm_detach(ch->seg);
}
