/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  rvbbit._progress(): the rows of rvbbit.progress.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "rvbbit.h"

PG_FUNCTION_INFO_V1(rvbbit_progress);

/* the columns of rvbbit._progress() */
#define RV_PROGRESS_COLS 16

/* ----------------------------------------------------------------
 * rvbbit._progress(): the rows of rvbbit.progress
 * ----------------------------------------------------------------
 */

/*
 * The running statements the current user may see: its own, or all of
 * them for superusers and members of rvbbit_admin (rv_sees_all()).  The
 * filter is here, not only in the view, because the function itself is
 * granted to rvbbit_user.
 */
Datum
rvbbit_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			me = GetUserId();
	bool		all;
	int			slot;

	rv_require_shared();
	all = rv_sees_all(me);
	InitMaterializedSRF(fcinfo, 0);
	for (slot = 0; slot < RV_MAX_PROGRESS; slot++)
	{
		RvProgress *p = &rv_shared->progress[slot];
		Datum		values[RV_PROGRESS_COLS];
		bool		nulls[RV_PROGRESS_COLS];
		int			i = 0;

		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		pg_read_barrier();
		if (!all && p->roleid != me)
			continue;
		memset(values, 0, sizeof(values));
		memset(nulls, 0, sizeof(nulls));
		values[i++] = Int32GetDatum(p->pid);
		values[i++] = Int64GetDatum(p->statement_id);
		values[i++] = ObjectIdGetDatum(p->dboid);
		values[i++] = ObjectIdGetDatum(p->roleid);
		values[i++] = TimestampTzGetDatum(p->started_at);
		values[i++] = CStringGetTextDatum(p->kind);
		values[i++] = CStringGetTextDatum(p->cascade);
		values[i++] = Int32GetDatum(p->parallel);
		values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_read));
		values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_done));
		values[i++] = Int64GetDatum((int64) RV_PROGRESS_COUNT(pg_atomic_read_u64(&p->in_flight)));
		values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_failed));
		values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->cache_hits));
		values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->llm_calls));
		values[i++] = Int64GetDatum((int64) (pg_atomic_read_u64(&p->tokens_in) +
											 pg_atomic_read_u64(&p->tokens_out)));
		values[i++] = Float8GetDatum((double) pg_atomic_read_u64(&p->cost_micros) / 1e6);
		Assert(i == RV_PROGRESS_COLS);

		/* the entry was released (and maybe reused) while we read it */
		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
