/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of the backends and the rvbbit workers: the only
 *	  shmem request and startup hooks, which size and initialise each
 *	  subsystem's part.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "lib/stringinfo.h"

#include "rvbbit.h"
#include "budget.h"
#include "ratelimit.h"

RvShared   *rv_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void rv_shmem_request(void);
static void rv_shmem_startup(void);

/* Chain the shared-memory hooks (from _PG_init, when preloaded). */
void
rv_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rv_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rv_shmem_startup;
}

/* shmem_request_hook: reserve the shared struct and its lock. */
static void
rv_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RvShared)));
	RequestAddinShmemSpace(rv_ratelimit_shmem_size());
	RequestNamedLWLockTranche("rvbbit", 2);
	rv_budget_shmem_request();
	RequestAddinShmemSpace(rv_jobs_shmem_size());
}

/*
 * shmem_startup_hook: create or attach the shared struct.  Runs in the
 * postmaster at start and after a crash restart (which wipes all state:
 * worker slots, pending statements and progress entries start empty).
 */
static void
rv_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rv_shared = ShmemInitStruct("rvbbit", sizeof(RvShared), &found);
	if (!found)
	{
		memset(rv_shared, 0, sizeof(RvShared));
		rv_shared->lock = &(GetNamedLWLockTranche("rvbbit"))[0].lock;
		pg_atomic_init_u64(&rv_shared->next_statement_id, 1);
		pg_atomic_init_u32(&rv_shared->http_in_flight, 0);
		for (i = 0; i < RV_MAX_PROGRESS; i++)
		{
			RvProgress *p = &rv_shared->progress[i];

			pg_atomic_init_u32(&p->used, 0);
			pg_atomic_init_u64(&p->owner, 0);
			pg_atomic_init_u64(&p->rows_read, 0);
			pg_atomic_init_u64(&p->rows_done, 0);
			pg_atomic_init_u64(&p->rows_failed, 0);
			pg_atomic_init_u64(&p->in_flight, 0);
			pg_atomic_init_u64(&p->cache_hits, 0);
			pg_atomic_init_u64(&p->llm_calls, 0);
			pg_atomic_init_u64(&p->tokens_in, 0);
			pg_atomic_init_u64(&p->tokens_out, 0);
			pg_atomic_init_u64(&p->cost_micros, 0);
		}
	}
	rv_ratelimit_shmem_init(&(GetNamedLWLockTranche("rvbbit"))[1].lock);
	rv_budget_shmem_startup();
	rv_jobs_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Raise an error unless the library was preloaded (and shared memory
 * exists).  Every SQL-callable entry point calls this first.
 */
void
rv_require_shared(void)
{
	if (rv_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rvbbit must be loaded via \"shared_preload_libraries\""),
				 errhint("Add rvbbit to \"shared_preload_libraries\" in postgresql.conf "
						 "(or run ALTER SYSTEM SET shared_preload_libraries = 'rvbbit') "
						 "and restart the server.")));
}

