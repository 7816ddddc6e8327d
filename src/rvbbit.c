/*-------------------------------------------------------------------------
 *
 * rvbbit.c
 *	  Module entry point: _PG_init, delegating to each part (the GUCs in
 *	  guc.c, shared memory in shmem.c, the log hook in providers.c, the
 *	  rewrite, the custom scan and the jobs launcher).
 *
 * The library must be loaded through shared_preload_libraries: shared
 * memory and the worker pool exist only then.  Loaded any other way (for
 * instance by CREATE EXTENSION in a server without the setting), the GUCs
 * are defined but every entry point raises an error whose hint says how to
 * fix the configuration (rv_require_shared()).
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

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * _PG_init: define the GUCs; when preloaded, ask for shared memory and
 * chain the shared-memory hooks and the query hooks.
 */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	rv_define_gucs();

	/*
	 * Settings that size shared memory or start processes are
	 * PGC_POSTMASTER, which PostgreSQL lets a library define only while it
	 * is preloaded (otherwise the backend exits with FATAL).  A library
	 * loaded late raises the preload error at every entry point anyway.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		rv_budget_define_gucs();
		rv_gateway_init();
	}

	MarkGUCPrefixReserved("rvbbit");

	rv_log_hook_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	rv_shmem_init();
	rv_hooks_init();
	rv_mapscan_init();
	rv_jobs_init();
}
