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
 * The loop is rv_worker_main() below, one named step per line.  The
 * other files of the worker: worker_stmt.c (a statement's messages),
 * worker_task.c (the task state machine: prepare, reply, retry, breaker,
 * ready queue, dispatch), worker_db.c (configuration, cache lookups and
 * the batched writes); worker.h is what they share.
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

#include <sys/resource.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shm_toc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "budget.h"
#include "worker.h"

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
MemoryContext wk_loop_cxt = NULL;
ResourceOwner wk_resowner = NULL;
RvHttp *wk_http = NULL;
int	wk_max_conn = 100;
int	wk_counted = 0;		/* cluster-wide slots this worker holds */
static dlist_head wk_stmts = DLIST_STATIC_INIT(wk_stmts);

/*
 * Find the header and the two queues in a statement segment through its
 * table of contents.  A segment whose magic number or entries are wrong
 * (not made by this version of rvbbit's channel.c) is reported and
 * ignored: returns false.
 */
static bool
wk_segment_lookup(dsm_segment *seg, RvSegmentHeader **hdr, shm_mq **req, shm_mq **res)
{
	shm_toc    *toc = shm_toc_attach(RV_SHM_MAGIC, dsm_segment_address(seg));

	if (toc != NULL)
	{
		*hdr = shm_toc_lookup(toc, RV_TOC_HEADER, true);
		*req = shm_toc_lookup(toc, RV_TOC_REQUESTS, true);
		*res = shm_toc_lookup(toc, RV_TOC_RESULTS, true);
		if (*hdr != NULL && *req != NULL && *res != NULL)
			return true;
	}
	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("rvbbit worker ignored a statement segment with a bad magic number or layout"),
			 errdetail("Dynamic shared memory segment %u was not made by this version of the rvbbit library.",
					   dsm_segment_handle(seg)),
			 errhint("After installing a new rvbbit library, restart the server; the statement that sent the segment waits until it is cancelled.")));
	return false;
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
		if (!wk_segment_lookup(seg, &hdr, &req, &res))
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
		dlist_init(&s->held);
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
		rv_pool_slot_reset(&rv_shared->workers[wk_slot], InvalidOid);
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
 * Claim our slot in the pool (the generation must still be the one we were
 * started for) and return the database to connect to; exit if the slot
 * was given up meanwhile.
 */
static Oid
wk_claim_slot(void)
{
	Oid			dboid;

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
	return dboid;
}

/* The worker's memory contexts, resource owner and HTTP client. */
static void
wk_init(void)
{
	char		errbuf[256];

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
	wk_db_init();
}

/* ----------------------------------------------------------------
 * The steps of one turn of the main loop
 * ----------------------------------------------------------------
 */

/* Read what the backends sent. */
static void
wk_receive_all(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &wk_stmts)
		wk_stmt_receive(dlist_container(WkStmt, node, it.cur));
}

/* Move the tasks whose retry time came to the ready queue. */
static void
wk_wake_retries(void)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &wk_retry)
	{
		WkTask	   *tk = dlist_container(WkTask, node, it.cur);

		if (tk->retry_at <= now)
		{
			dlist_delete(&tk->node);
			wk_ready_push(tk);
		}
	}
}

/*
 * Render the requests of the tasks to prepare and look them up in the
 * cache; cache hits may move tasks to their next cell, so repeat until
 * both queues are empty.  The misses are in the ready queue then.
 */
static void
wk_prepare_all(void)
{
	do
	{
		while (!dlist_is_empty(&wk_prepare))
		{
			WkTask	   *tk = dlist_container(WkTask, node, dlist_head_node(&wk_prepare));

			dlist_delete(&tk->node);
			wk_task_prepare(tk);
		}
		wk_cache_lookup();
	} while (!dlist_is_empty(&wk_prepare) || !dlist_is_empty(&wk_lookup));
}

/* Let curl work and handle the transfers that finished. */
static void
wk_collect_http(void)
{
	RvHttpReq  *done;

	rv_http_drive(wk_http);
	while ((done = rv_http_next_done(wk_http)) != NULL)
		wk_http_done(done);
}

/*
 * Send the statements' results (after wk_flush_writes committed what they
 * report), and close the statements that are finished or gone.
 */
static void
wk_send_all(void)
{
	dlist_mutable_iter it;

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
}

/*
 * Whether to leave the pool: no statement for rvbbit.worker_idle_timeout
 * and none pending for us.  *idle_since is when the worker last had work.
 */
static bool
wk_idle_exit(TimestampTz *idle_since)
{
	static bool busy = false;

	if (!dlist_is_empty(&wk_stmts))
	{
		*idle_since = GetCurrentTimestamp();
		busy = true;
		return false;
	}
	if (busy && TimestampDifferenceExceeds(*idle_since, GetCurrentTimestamp(), 1000))
	{
		/*
		 * No statement for a second: give the heap that the transfers used
		 * back to the system (a PARALLEL 5,000 statement over HTTP/2 leaves
		 * some 300 MB of freed libcurl buffers that glibc would keep).  Not
		 * at the end of every statement: with short statements one after
		 * the other (rvbbit.run per row from an application), trimming,
		 * its madvise and TLB flushes were most of the worker's time.  The
		 * worker's wait lasts at most a second, so this runs within two.
		 */
		busy = false;
#ifdef __GLIBC__
		malloc_trim(0);
#endif
	}
	return TimestampDifferenceExceeds(*idle_since, GetCurrentTimestamp(),
									  rv_worker_idle_timeout_s * 1000) &&
		wk_try_retire();
}

/*
 * How long the worker may sleep: until curl's next timeout, a rate limit's
 * wait or the next retry, at most a second; not at all when there is work
 * it can do now.
 */
static long
wk_sleep_ms(void)
{
	long		timeout = 1000;
	long		t = rv_http_timeout(wk_http);

	if (t >= 0)
		timeout = Min(timeout, t);
	if (wk_ratelimit_wait_ms >= 0)
		timeout = Min(timeout, wk_ratelimit_wait_ms);
	if (!dlist_is_empty(&wk_retry))
	{
		TimestampTz now = GetCurrentTimestamp();
		dlist_iter	it;

		dlist_foreach(it, &wk_retry)
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
	return timeout;
}

/* SIGTERM (die) and postmaster death end the worker here; SIGHUP reloads. */
static void
wk_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
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

	wk_slot = DatumGetInt32(main_arg);
	memcpy(&wk_generation, MyBgworkerEntry->bgw_extra, sizeof(uint64));

	rv_bgworker_signals(die);

	dboid = wk_claim_slot();
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

	wk_init();

	wes = rv_CreateWaitEventSet(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, rv_http_fd(wk_http), NULL, NULL);

	idle_since = GetCurrentTimestamp();
	wk_interrupts();
	for (;;)
	{
		long		timeout;

		/* a fresh per-turn context (see wk_loop_cxt) */
		MemoryContextSwitchTo(wk_loop_cxt);
		MemoryContextReset(wk_loop_cxt);

		wk_take_pending();		/* attach new statements */
		wk_receive_all();		/* their rows become tasks */
		wk_wake_retries();
		wk_prepare_all();		/* render, look up in the cache */
		wk_dispatch();			/* send the misses while the caps allow */
		wk_collect_http();		/* handle what finished */
		/* refill the places those calls left before the commit below */
		wk_prepare_all();
		wk_dispatch();
		wk_flush_writes();		/* commit cache entries and call records */
		wk_send_all();			/* then tell the backends */
		if (wk_idle_exit(&idle_since))
			break;

		/* worker_spi's order: wait, reset the latch, interrupts, reload */
		timeout = wk_sleep_ms();
		if (timeout > 0)
		{
			WaitEvent	ev;

			(void) WaitEventSetWait(wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		wk_interrupts();
	}

	rv_http_destroy(wk_http);
	proc_exit(0);
}
