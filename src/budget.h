/*-------------------------------------------------------------------------
 *
 * budget.h
 *	  The per-role daily budget (rvbbit.budget_dollars_per_day): spend and
 *	  reservations per role and UTC day in shared memory, checked and
 *	  reserved in one step under a lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_BUDGET_H
#define RV_BUDGET_H

/* rvbbit.max_budget_roles: entries of the shared table (POSTMASTER) */
extern int	rv_max_budget_roles;

/*
 * A reservation: which entry holds it and how much.  It is held while
 * roleid is valid (a zeroed hold holds nothing) and settled (or released)
 * exactly once, which zeroes it.
 */
typedef struct RvBudgetHold
{
	int			index;			/* entry of the shared table */
	Oid			roleid;			/* InvalidOid: nothing held */
	int32		day;
	uint64		micros;			/* dollars x 1e6 */
} RvBudgetHold;

typedef enum RvBudgetResult
{
	RV_BUDGET_OK,				/* reserved */
	RV_BUDGET_EXCEEDED,			/* the call does not fit into today's budget */
	RV_BUDGET_FULL,				/* no entry left for the role (fail closed) */
	RV_BUDGET_WAIT				/* the entry is being loaded; ask again soon */
} RvBudgetResult;

extern void rv_budget_define_gucs(void);
extern void rv_budget_shmem_request(void);
extern void rv_budget_shmem_startup(void);

extern int32 rv_budget_today(void);
extern bool rv_budget_attach(Oid roleid, int32 day, bool *need_load);
extern void rv_budget_loaded(Oid roleid, int32 day, uint64 micros);
extern RvBudgetResult rv_budget_reserve(Oid roleid, double limit, uint64 est,
										RvBudgetHold *hold, uint64 *used);
extern void rv_budget_settle(RvBudgetHold *hold, uint64 actual);
extern void rv_budget_add_unbudgeted(Oid roleid, uint64 actual);

#endif							/* RV_BUDGET_H */
