/*-------------------------------------------------------------------------
 *
 * budget.c
 *	  The per-role daily budget, rvbbit.budget_dollars_per_day.
 *
 * Shared memory holds one entry per role and UTC day with what the role
 * spent (settled calls) and what it has reserved (calls in flight), in
 * dollars x 1e6.  Before a worker sends a call it asks rv_budget_reserve()
 * for the call's expected cost: the check "spent + reserved + expected <=
 * budget" and the reservation are one step under the table's LWLock, so
 * concurrent workers and sessions cannot overshoot together.  When the
 * call ends the worker settles the reservation to the actual cost
 * (rv_budget_settle); a call that is not sent after all (deferred by
 * rvbbit.max_concurrency or a rate limit, failed to start), answered with
 * an HTTP error, or whose worker exits settles with cost 0, which releases
 * it; a call sent but never answered (timed out, stalled, abandoned by its
 * statement) settles at its expected cost (the provider may bill it).
 *
 * The table has rvbbit.max_budget_roles entries.  An entry of an earlier
 * day with nothing reserved is reused; when none is free the call is
 * refused (RV_BUDGET_FULL): a role is never silently unlimited.  A new
 * entry starts unloaded: the first statement of the role that day adds
 * what rvbbit.call_log says the role spent today (after a restart), then
 * marks it loaded; reservations wait for that.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "budget.h"

int			rv_max_budget_roles = 256;

typedef struct BgEntry
{
	Oid			roleid;			/* InvalidOid: never used */
	int32		day;			/* days since 2000-01-01, UTC */
	bool		loaded;			/* today's spend from call_log was added */
	uint64		spent;			/* settled calls */
	uint64		reserved;		/* calls in flight */
} BgEntry;

typedef struct BgShared
{
	LWLock	   *lock;
	int			nentries;
	BgEntry		entries[FLEXIBLE_ARRAY_MEMBER];
} BgShared;

static BgShared *bg_shared = NULL;

/* Size of the shared table for rvbbit.max_budget_roles entries. */
static Size
bg_shmem_size(void)
{
	return add_size(offsetof(BgShared, entries),
					mul_size(sizeof(BgEntry), rv_max_budget_roles));
}

/* Define rvbbit.max_budget_roles (from _PG_init). */
void
rv_budget_define_gucs(void)
{
	DefineCustomIntVariable("rvbbit.max_budget_roles",
							"Sets how many roles can have a daily budget in use on the same day.",
							"A role over this number is refused calls while rvbbit.budget_dollars_per_day is set for it.",
							&rv_max_budget_roles,
							256, 1, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/* shmem_request_hook part: the table and its lock. */
void
rv_budget_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(bg_shmem_size()));
	RequestNamedLWLockTranche("rvbbit budget", 1);
}

/*
 * shmem_startup_hook part: create or attach the table; the caller holds
 * AddinShmemInitLock.  After a crash restart the table starts empty and
 * each role's spend is read back from rvbbit.call_log.
 */
void
rv_budget_shmem_startup(void)
{
	bool		found;

	bg_shared = ShmemInitStruct("rvbbit budget", bg_shmem_size(), &found);
	if (!found)
	{
		memset(bg_shared, 0, bg_shmem_size());
		bg_shared->lock = &(GetNamedLWLockTranche("rvbbit budget"))[0].lock;
		bg_shared->nentries = rv_max_budget_roles;
	}
}

/* Today, as days since 2000-01-01 UTC (timestamps are UTC). */
int32
rv_budget_today(void)
{
	return (int32) (GetCurrentTimestamp() / USECS_PER_DAY);
}

/*
 * The entry of (roleid, day), claiming a free one when there is none; a
 * claimed entry starts with nothing spent, loaded as the caller says.
 * Returns its index, or -1 when the table is full.  Caller holds the lock
 * exclusively.
 */
static int
bg_find(Oid roleid, int32 day, bool claim_loaded)
{
	int			i;
	int			free_i = -1;
	BgEntry    *e;

	for (i = 0; i < bg_shared->nentries; i++)
	{
		e = &bg_shared->entries[i];
		if (e->roleid == roleid && e->day == day)
			return i;
		if (free_i < 0 &&
			(e->roleid == InvalidOid || (e->day != day && e->reserved == 0)))
			free_i = i;
	}
	if (free_i < 0)
		return -1;
	e = &bg_shared->entries[free_i];
	e->roleid = roleid;
	e->day = day;
	e->loaded = claim_loaded;
	e->spent = 0;
	e->reserved = 0;
	return free_i;
}

/*
 * Make sure the role has an entry for the day (a statement of the role is
 * starting).  Returns false when the table is full.  *need_load says the
 * caller must read the role's spend of the day from rvbbit.call_log and
 * pass it to rv_budget_loaded().
 */
bool
rv_budget_attach(Oid roleid, int32 day, bool *need_load)
{
	int			i;

	*need_load = false;
	if (bg_shared == NULL)
		return false;
	LWLockAcquire(bg_shared->lock, LW_EXCLUSIVE);
	i = bg_find(roleid, day, false);
	if (i >= 0)
		*need_load = !bg_shared->entries[i].loaded;
	LWLockRelease(bg_shared->lock);
	return i >= 0;
}

/*
 * Add what the role spent on the day before the table knew it, once: when
 * two statements load the same entry, the first one to finish counts.
 */
void
rv_budget_loaded(Oid roleid, int32 day, uint64 micros)
{
	int			i;

	if (bg_shared == NULL)
		return;
	LWLockAcquire(bg_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < bg_shared->nentries; i++)
	{
		BgEntry    *e = &bg_shared->entries[i];

		if (e->roleid == roleid && e->day == day)
		{
			if (!e->loaded)
			{
				e->spent += micros;
				e->loaded = true;
			}
			break;
		}
	}
	LWLockRelease(bg_shared->lock);
}

/*
 * Check that a call of expected cost est (micros) fits into the role's
 * budget of limit dollars for today, and reserve it, in one step under the
 * lock.  On RV_BUDGET_OK *hold holds the reservation; otherwise nothing is
 * held.  *used is what the role had spent and reserved today.  A call that
 * costs nothing still needs the role to be within its budget.  Never
 * raises an error.
 */
RvBudgetResult
rv_budget_reserve(Oid roleid, double limit, uint64 est, RvBudgetHold *hold,
				  uint64 *used)
{
	int32		day = rv_budget_today();
	int			i;
	BgEntry    *e;
	RvBudgetResult res;

	memset(hold, 0, sizeof(RvBudgetHold));
	*used = 0;
	if (bg_shared == NULL)
		return RV_BUDGET_FULL;
	LWLockAcquire(bg_shared->lock, LW_EXCLUSIVE);
	/* a statement that began yesterday claims today's entry, loaded */
	i = bg_find(roleid, day, true);
	if (i < 0)
		res = RV_BUDGET_FULL;
	else if (!(e = &bg_shared->entries[i])->loaded)
		res = RV_BUDGET_WAIT;
	else
	{
		*used = e->spent + e->reserved;
		if ((double) *used + (double) est > limit * 1e6)
			res = RV_BUDGET_EXCEEDED;
		else
		{
			e->reserved += est;
			hold->index = i;
			hold->roleid = roleid;
			hold->day = day;
			hold->micros = est;
			res = RV_BUDGET_OK;
		}
	}
	LWLockRelease(bg_shared->lock);
	return res;
}

/*
 * Settle a reservation to the call's actual cost (micros; 0 releases it)
 * and zero the hold.  An entry with a reservation is never reused, so the
 * hold's entry is still the role's; should it not be, the cost goes to the
 * role's entry of that day if one can be had.  Never raises an error, so
 * it can run in error cleanup and at process exit.
 */
void
rv_budget_settle(RvBudgetHold *hold, uint64 actual)
{
	BgEntry    *e;

	if (hold->roleid == InvalidOid || bg_shared == NULL)
	{
		memset(hold, 0, sizeof(RvBudgetHold));
		return;
	}
	LWLockAcquire(bg_shared->lock, LW_EXCLUSIVE);
	e = (hold->index >= 0 && hold->index < bg_shared->nentries) ?
		&bg_shared->entries[hold->index] : NULL;
	if (e != NULL && e->roleid == hold->roleid && e->day == hold->day)
	{
		e->reserved -= Min(e->reserved, hold->micros);
		e->spent += actual;
	}
	else if (actual > 0)
	{
		int			i = bg_find(hold->roleid, hold->day, true);

		if (i >= 0)
			bg_shared->entries[i].spent += actual;
	}
	LWLockRelease(bg_shared->lock);
	memset(hold, 0, sizeof(RvBudgetHold));
}

/*
 * Count the cost (micros) of a call made without a daily budget in the
 * role's entry of today, if the table already has a loaded one: spend made
 * while the role had no budget counts once a budget is set later that day
 * (an entry not yet loaded will read it from rvbbit.call_log).  Never
 * claims an entry, never raises an error.
 */
void
rv_budget_add_unbudgeted(Oid roleid, uint64 actual)
{
	int32		day = rv_budget_today();
	int			i;

	if (bg_shared == NULL || actual == 0 || roleid == InvalidOid)
		return;
	LWLockAcquire(bg_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < bg_shared->nentries; i++)
	{
		BgEntry    *e = &bg_shared->entries[i];

		if (e->roleid == roleid && e->day == day)
		{
			if (e->loaded)
				e->spent += actual;
			break;
		}
	}
	LWLockRelease(bg_shared->lock);
}
