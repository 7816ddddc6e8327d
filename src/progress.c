/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  rvbbit._progress(): the rows of rvbbit.progress.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>



#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
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
#include "map.h"
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
	int			i;

	rv_require_shared();
	all = rv_sees_all(me);
	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < RV_MAX_PROGRESS; i++)
	{
		RvProgress *p = &rv_shared->progress[i];
		Datum		v[RV_PROGRESS_COLS];
		bool		n[RV_PROGRESS_COLS];
		int			c = 0;

		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		pg_read_barrier();
		if (!all && p->roleid != me)
			continue;
		memset(n, 0, sizeof(n));
		v[c++] = Int32GetDatum(p->pid);
		v[c++] = Int64GetDatum(p->statement_id);
		v[c++] = ObjectIdGetDatum(p->dboid);
		v[c++] = ObjectIdGetDatum(p->roleid);
		v[c++] = TimestampTzGetDatum(p->started_at);
		v[c++] = CStringGetTextDatum(p->kind);
		v[c++] = CStringGetTextDatum(p->cascade);
		v[c++] = Int32GetDatum(p->parallel);
		v[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_read));
		v[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_done));
		v[c++] = Int64GetDatum((int64) RV_PROGRESS_COUNT(pg_atomic_read_u64(&p->in_flight)));
		v[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->rows_failed));
		v[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->cache_hits));
		v[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&p->llm_calls));
		v[c++] = Int64GetDatum((int64) (pg_atomic_read_u64(&p->tokens_in) + pg_atomic_read_u64(&p->tokens_out)));
		v[c++] = Float8GetDatum((double) pg_atomic_read_u64(&p->cost_micros) / 1e6);
		Assert(c == RV_PROGRESS_COLS);
		if (pg_atomic_read_u32(&p->used) != 1)
			continue;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
}
