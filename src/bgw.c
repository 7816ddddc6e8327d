/*-------------------------------------------------------------------------
 *
 * bgw.c
 *	  What every rvbbit background process shares: filling in its
 *	  BackgroundWorker, its signal handlers, and the bracket of a short
 *	  background transaction (SPI, a snapshot, pg_stat_activity).
 *
 * The processes are the pooled workers (worker.c), the job runners, check
 * runners, recovery workers and the jobs launcher (jobs_runner.c) and the
 * gateway supervisor (gateway_sup.c).
 *
 * A background transaction, as worker_spi runs one, reports its activity
 * in pg_stat_activity and sets debug_query_string to it, so that an error
 * inside it is logged with the statement (log_min_error_statement) and a
 * crash report names it.  Committing leaves TopMemoryContext current, so
 * the bracket switches back to the memory context of its caller, on
 * commit and on abort alike.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"

#include "rvbbit.h"

/*
 * Fill a BackgroundWorker for one of rvbbit's background processes: a
 * database-connected worker of this library running function, shown as
 * type (bgw_name is set to type too; callers may overwrite it, and the
 * flags, for a process without a database connection).
 */
void
rv_bgworker_prepare(BackgroundWorker *worker, BgWorkerStartTime start,
					int restart_time, const char *function, const char *type)
{
	memset(worker, 0, sizeof(BackgroundWorker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = start;
	worker->bgw_restart_time = restart_time;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "rvbbit");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
}

/*
 * The signal handlers of a background process: sigterm for SIGTERM (die,
 * or a handler that records the signal first), a configuration reload on
 * SIGHUP; then unblock signals, which the postmaster started us with
 * blocked.  Handlers of other signals are set before this call.
 */
void
rv_bgworker_signals(void (*sigterm) (SIGNAL_ARGS))
{
	pqsignal(SIGTERM, sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
}

/* The memory context current when rv_bgxact_begin() was called. */
static MemoryContext bgxact_caller_cxt = NULL;

/*
 * Start a short transaction with SPI and a snapshot in a background
 * process, reporting activity in pg_stat_activity and as
 * debug_query_string (activity must stay valid until the transaction
 * ends).  End it with rv_bgxact_end(), or after an error with
 * rv_bgxact_abort().
 */
void
rv_bgxact_begin(const char *activity)
{
	bgxact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	debug_query_string = activity;
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Back to idle and to the caller's memory context. */
static void
rv_bgxact_idle(void)
{
	debug_query_string = NULL;
	pgstat_report_activity(STATE_IDLE, NULL);
	if (bgxact_caller_cxt != NULL)
		MemoryContextSwitchTo(bgxact_caller_cxt);
	bgxact_caller_cxt = NULL;
}

/* Commit (or, when abort, roll back) a transaction of rv_bgxact_begin(). */
void
rv_bgxact_end(bool abort)
{
	SPI_finish();
	PopActiveSnapshot();
	if (abort)
		AbortCurrentTransaction();
	else
		CommitTransactionCommand();
	pgstat_report_stat(false);
	rv_bgxact_idle();
}

/*
 * Roll back a transaction of rv_bgxact_begin() after an error was caught
 * in it (the caller has copied or reported the error and flushed the
 * error state).  The abort also ends SPI and pops the snapshot.
 */
void
rv_bgxact_abort(void)
{
	AbortCurrentTransaction();
	rv_bgxact_idle();
}
