/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  The per-database pool of rvbbit workers, and the progress entries of
 *	  running statements.
 *
 * A backend with a statement to run creates a DSM segment (channel.c) and
 * hands its handle to rv_pool_submit(), which picks the least loaded live
 * worker of the database, or registers a new dynamic background worker
 * when the database has fewer than rvbbit.workers_per_database, and puts
 * the handle in the shared inbox for that worker.  The worker takes it
 * from the inbox and attaches.  Each worker slot has a generation number
 * that changes whenever the slot is freed or reused, so a backend can tell
 * that "its" worker went away (rv_pool_worker_alive()).
 *
 * Locking: everything here but the progress counters is protected by
 * rv_shared->lock.  Progress entries are claimed with an atomic
 * compare-and-exchange and updated with atomics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "rvbbit.h"

/*
 * Give worker slot w to database dboid, or free it (InvalidOid), under a
 * new generation: whoever held the old one sees that its worker is gone.
 * Caller holds rv_shared->lock exclusively.
 */
void
rv_pool_slot_reset(RvWorkerSlot *w, Oid dboid)
{
	w->dboid = dboid;
	w->pid = 0;
	w->latch = NULL;
	w->exiting = false;
	w->nstatements = 0;
	w->generation++;
}

/*
 * Register a dynamic background worker for slot index idx.  Caller holds
 * the lock exclusively.  Returns false when no background worker slot is
 * free.
 */
static bool
pool_start_worker(int idx)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	uint64		gen = rv_shared->workers[idx].generation;

	rv_bgworker_prepare(&worker, BgWorkerStart_ConsistentState, BGW_NEVER_RESTART,
						"rv_worker_main", "rvbbit worker");
	snprintf(worker.bgw_name, BGW_MAXLEN, "rvbbit worker %d for database %u",
			 idx, MyDatabaseId);
	worker.bgw_main_arg = Int32GetDatum(idx);
	memcpy(worker.bgw_extra, &gen, sizeof(gen));
	worker.bgw_notify_pid = 0;

	return RegisterDynamicBackgroundWorker(&worker, &handle);
}

/*
 * Hand a statement segment to a worker of this database, starting one if
 * needed.  Returns the worker index and sets *generation.  Raises an error
 * when no worker can be started or the inbox is full.
 */
int
rv_pool_submit(dsm_handle handle, uint64 *generation)
{
	int			best = -1;
	int			nlive = 0;
	int			freeslot = -1;
	int			i;
	int			p;

	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < RV_MAX_WORKERS; i++)
	{
		RvWorkerSlot *w = &rv_shared->workers[i];

		if (w->dboid == InvalidOid)
		{
			if (freeslot < 0)
				freeslot = i;
			continue;
		}
		if (w->dboid != MyDatabaseId || w->exiting)
			continue;
		nlive++;
		if (best < 0 || w->nstatements < rv_shared->workers[best].nstatements)
			best = i;
	}

	/* start another worker when all are busy and the pool may grow */
	if ((best < 0 || rv_shared->workers[best].nstatements > 0) &&
		nlive < rv_workers_per_database && freeslot >= 0)
	{
		RvWorkerSlot *w = &rv_shared->workers[freeslot];

		rv_pool_slot_reset(w, MyDatabaseId);
		w->started_at = GetCurrentTimestamp();
		if (pool_start_worker(freeslot))
			best = freeslot;
		else
		{
			rv_pool_slot_reset(w, InvalidOid);
			if (best < 0)
			{
				LWLockRelease(rv_shared->lock);
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						 errmsg("could not start an rvbbit worker"),
						 errdetail("All background worker slots are in use."),
						 errhint("Raise \"max_worker_processes\" and restart the server.")));
			}
		}
	}
	if (best < 0)
	{
		LWLockRelease(rv_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start an rvbbit worker"),
				 errdetail("All %d rvbbit worker slots are in use.", RV_MAX_WORKERS),
				 errhint("Lower \"rvbbit.workers_per_database\" or run fewer databases' statements at once.")));
	}

	for (p = 0; p < RV_MAX_PENDING; p++)
		if (!rv_shared->pending[p].used)
			break;
	if (p == RV_MAX_PENDING)
	{
		LWLockRelease(rv_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("too many rvbbit statements are waiting for a worker"),
				 errhint("Try again in a moment.")));
	}
	rv_shared->pending[p].used = true;
	rv_shared->pending[p].worker = best;
	rv_shared->pending[p].handle = handle;
	rv_shared->workers[best].nstatements++;
	*generation = rv_shared->workers[best].generation;
	if (rv_shared->workers[best].latch != NULL)
		SetLatch(rv_shared->workers[best].latch);
	LWLockRelease(rv_shared->lock);

	return best;
}

/*
 * Is worker idx still the one we were assigned (same generation), and has
 * it either started or been starting for less than 60 seconds?
 */
bool
rv_pool_worker_alive(int worker, uint64 generation)
{
	bool		alive;
	RvWorkerSlot *w = &rv_shared->workers[worker];

	LWLockAcquire(rv_shared->lock, LW_SHARED);
	alive = (w->generation == generation && w->dboid != InvalidOid);
	if (alive && w->pid == 0 &&
		TimestampDifferenceExceeds(w->started_at, GetCurrentTimestamp(), 60000))
		alive = false;
	LWLockRelease(rv_shared->lock);
	return alive;
}

/*
 * The backend's statement is over: drop its count on the worker (if the
 * worker is still the same), and remove its inbox entry if the worker
 * never took it.
 */
void
rv_pool_release(int worker, uint64 generation)
{
	RvWorkerSlot *w = &rv_shared->workers[worker];

	LWLockAcquire(rv_shared->lock, LW_EXCLUSIVE);
	if (w->generation == generation && w->nstatements > 0)
		w->nstatements--;
	if (w->latch != NULL && w->generation == generation)
		SetLatch(w->latch);
	LWLockRelease(rv_shared->lock);
}

/*
 * Claim a progress entry for a statement of this backend.  Returns -1 when
 * all are in use (the statement then runs without one).
 */
int
rv_progress_acquire(const char *kind, const char *cascade, int parallel,
					int64 statement_id)
{
	int			i;

	for (i = 0; i < RV_MAX_PROGRESS; i++)
	{
		RvProgress *p = &rv_shared->progress[i];
		uint32		expected = 0;

		if (pg_atomic_read_u32(&p->used) != 0)
			continue;
		if (!pg_atomic_compare_exchange_u32(&p->used, &expected, 2))
			continue;
		p->pid = MyProcPid;
		p->dboid = MyDatabaseId;
		p->roleid = GetUserId();
		p->statement_id = statement_id;
		p->started_at = GetCurrentTimestamp();
		p->parallel = parallel;
		strlcpy(p->kind, kind, sizeof(p->kind));
		strlcpy(p->cascade, cascade, sizeof(p->cascade));
		pg_atomic_write_u64(&p->rows_read, 0);
		pg_atomic_write_u64(&p->rows_done, 0);
		pg_atomic_write_u64(&p->rows_failed, 0);
		pg_atomic_write_u64(&p->in_flight, RV_PROGRESS_TAG(statement_id));
		pg_atomic_write_u64(&p->cache_hits, 0);
		pg_atomic_write_u64(&p->llm_calls, 0);
		pg_atomic_write_u64(&p->tokens_in, 0);
		pg_atomic_write_u64(&p->tokens_out, 0);
		pg_atomic_write_u64(&p->cost_micros, 0);
		pg_atomic_write_u64(&p->owner, (uint64) statement_id);
		pg_write_barrier();
		pg_atomic_write_u32(&p->used, 1);
		return i;
	}
	return -1;
}

/*
 * Free the progress entry of a statement.  Only its owner's release frees
 * it, so releasing twice (or late) cannot free another statement's entry.
 */
void
rv_progress_release(int index, int64 statement_id)
{
	RvProgress *p;
	uint64		expected = (uint64) statement_id;

	if (index < 0 || index >= RV_MAX_PROGRESS)
		return;
	p = &rv_shared->progress[index];
	if (!pg_atomic_compare_exchange_u64(&p->owner, &expected, 0))
		return;
	pg_atomic_write_u64(&p->in_flight, 0);
	pg_write_barrier();
	pg_atomic_write_u32(&p->used, 0);
}

/*
 * Add delta to one counter of a progress entry if the entry still belongs
 * to statement_id (the worker's updates for a statement whose backend has
 * gone are dropped).  The owner check and the add are two steps: an update
 * racing with the release and the next claim can still land, which is why
 * in_flight, the one counter that goes down, is tagged instead.
 */
void
rv_progress_add(RvProgress *p, int64 statement_id, pg_atomic_uint64 *counter,
				uint64 delta)
{
	if (p == NULL)
		return;
	if (pg_atomic_read_u64(&p->owner) != (uint64) statement_id)
		return;
	pg_atomic_fetch_add_u64(counter, delta);
}

/*
 * Change in_flight of a statement's progress entry by delta (+1 or -1),
 * atomically with the check that the entry carries the statement's tag;
 * a stale update (the entry was released, maybe claimed again) is
 * ignored, and the count never goes below zero.
 */
void
rv_progress_in_flight(RvProgress *p, int64 statement_id, int delta)
{
	uint64		tag = RV_PROGRESS_TAG(statement_id);
	uint64		v;

	if (p == NULL)
		return;
	v = pg_atomic_read_u64(&p->in_flight);
	for (;;)
	{
		uint64		n = RV_PROGRESS_COUNT(v);

		if ((v & ~UINT64CONST(0xFFFFFFFF)) != tag)
			return;
		if (delta < 0 && n == 0)
			return;
		if (delta > 0 && n == UINT64CONST(0xFFFFFFFF))
			return;
		if (pg_atomic_compare_exchange_u64(&p->in_flight, &v,
										   tag | (delta < 0 ? n - 1 : n + 1)))
			return;
	}
}

RvProgress *
rv_progress_get(int index)
{
	if (index < 0 || index >= RV_MAX_PROGRESS)
		return NULL;
	return &rv_shared->progress[index];
}
