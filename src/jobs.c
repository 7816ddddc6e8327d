/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  Asynchronous statements (RUN ASYNC, MAP ... WITH (async = true)):
 *	  submitting a job, the job runner background worker, cancelling a
 *	  job, and resuming the jobs a server restart interrupted.
 *
 * Submitting (rv_submit_job(), in the caller's transaction) inserts a row
 * into rvbbit.job_log with the calling role, its search_path and its
 * rvbbit.* session settings, and registers a dynamic background worker,
 * the job runner, for it.  The runner waits until the submitting
 * transaction ends (XactLockTableWait on its xid), so it never starts work
 * for a job that was rolled back: it then finds no row and exits quietly.
 *
 * The runner connects to the job's database AS THE SUBMITTING ROLE
 * (BackgroundWorkerInitializeConnectionByOid with the role), so
 * session_user, the role's ALTER ROLE ... SET settings and every privilege
 * check are the role's own, exactly as in a session of that role; nothing
 * of the job's code can reach more rights than the role has.  It claims
 * the job (queued -> running, in its own committed transaction, before any
 * user code runs), then, in a new transaction, sets the job's search_path
 * and saved settings and runs SELECT * FROM rvbbit.sql('<statement>')
 * through SPI with rv_in_job_runner (defined in rvbbit.c) set, which makes
 * the statement run synchronously.  The statement's effects (the as_table target), the
 * result row of a RUN without as_table (rvbbit.job_result_log) and the
 * status 'done' commit together.  An error rolls the statement back and
 * records 'failed' with the message.
 *
 * rvbbit.cancel_job() marks a job cancelled and, when its transaction
 * commits, sends SIGTERM to the job's runner; the rvbbit worker serving the
 * runner's statement drops its HTTP requests when the runner detaches.
 * Every status change is an UPDATE ... WHERE status = <expected>, so a
 * runner that dies or finishes late never overwrites 'cancelled'.
 *
 * Restarts.  Each start of shared memory (server start and crash restart)
 * gets a new "incarnation" timestamp (jobs_shared->incarnation); a job row
 * records the incarnation that last submitted, resumed or ran it
 * (server_started_at).  The rule, applied by a short-lived recovery worker
 * per database that the static jobs launcher starts once per incarnation:
 *
 *	 a job that is 'queued' or 'running' with an older incarnation was
 *	 interrupted.  It is resumed (status 'queued', a new runner, error note
 *	 'resumed after restart') unless it was already started
 *	 JOBS_MAX_ATTEMPTS times, in which case it is marked 'failed' with
 *	 'interrupted by a server restart'.  Resuming pays nothing twice: every
 *	 LLM call that completed before the restart is in the cache.
 *
 * A runner terminated with SIGTERM while its job runs (fast or smart
 * shutdown, pg_terminate_backend) puts the job back to 'queued' in an
 * exit callback and registers a new runner; during a shutdown the
 * postmaster never starts it and the recovery worker resumes the job after
 * the restart.  The same holds when the rvbbit worker serving the job's
 * statement exits first ("rvbbit worker exited while the statement was
 * running"): that is an interruption, not the job's failure.  In a fast
 * shutdown the postmaster sends SIGTERM to the worker and to the runner
 * in turn, and the runner may see the worker gone before its own SIGTERM
 * arrives; outside a shutdown (the worker terminated or failed) the new
 * runner resumes the job at once.  Either way the job is started at most
 * JOBS_MAX_ATTEMPTS times.  Any other exit of a runner marks its job
 * 'failed'.  So no job stays 'running' after its runner is gone.
 *
 * Privileges: rvbbit.job_log and rvbbit.job_result_log are not readable by
 * users; rvbbit.jobs and rvbbit.job_results show a user their own jobs
 * (superusers and members of rvbbit_admin see all).  The functions here
 * are not SECURITY DEFINER: they act as the calling role and switch to the
 * owner of rvbbit.job_log (with search_path pg_catalog, pg_temp) only
 * around their own fixed statements on the extension's job tables
 * (jobs_priv_begin/end), which reference no user object and never run
 * with user code on the stack: a job's statement, and the deferred
 * triggers that fire when its transaction commits, run as the role.
 *
 * A role dropped before its runner connects makes the connection fail
 * (FATAL); the runner's exit callback then starts a "check" runner,
 * connected as the bootstrap superuser and running only the fixed code of
 * jobs_check_main(), which marks the job failed when the role is gone (or
 * starts a normal runner again when it exists after all, for a role
 * created by the still-open submitting transaction).  The recovery worker
 * fails interrupted jobs of dropped roles the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "map.h"
#include "rvbbit.h"

/* How often a job may be started before an interruption fails it. */
#define JOBS_MAX_ATTEMPTS	3

/* Runners that rvbbit.cancel_job() signals when its transaction commits. */
#define JOBS_MAX_PENDING_KILLS 64

/* The bgw_type of the job runners (cancel_job checks it). */
#define JOBS_RUNNER_TYPE	"rvbbit job runner"

/*
 * The spend of the current run of a job (row alias j): the cost of the
 * calls its runner made since it started.  Call records are committed by
 * the rvbbit worker before the results reach the runner.
 */
#define JOBS_RUN_SPENT \
	"coalesce((SELECT sum(c.cost) FROM rvbbit.call_log c " \
	"WHERE c.backend_pid = j.runner_pid AND c.called_at >= j.started_at), 0)"

/* The rvbbit.* settings of the submitting session a job runs with. */
static const char *const jobs_saved_settings[] = {
	"rvbbit.default_model",
	"rvbbit.request_timeout",
	"rvbbit.max_retries",
	"rvbbit.default_parallel",
	"rvbbit.default_limit",
	"rvbbit.stall_timeout",
	"rvbbit.retry_max_delay",
	"rvbbit.default_max_tokens",
	NULL
};

/* Shared state: the incarnation of the server's shared memory. */
typedef struct JobsShared
{
	TimestampTz incarnation;
} JobsShared;

/* What a job runner is started with (bgw_extra). */
typedef struct JobsRunnerArgs
{
	int64		job_id;
	Oid			dboid;
	Oid			role;			/* the submitting role, connected as */
	TransactionId xid;			/* wait until it ends; invalid: don't */
	bool		check;			/* a check runner (see the header comment) */
	int			nchecks;		/* check runners started for this job so far */
} JobsRunnerArgs;

/* A claimed job, in jobs_context. */
typedef struct JobsJob
{
	int64		id;
	Oid			role;
	char	   *statement;
	char	   *search_path;
	char	   *target;
} JobsJob;

/* Saved identity while acting as the owner of the job tables. */
typedef struct JobsPriv
{
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
} JobsPriv;

static JobsShared *jobs_shared = NULL;

/* runner state, for the exit callback */
static volatile sig_atomic_t jobs_got_sigterm = false;
/* the job's statement failed because the rvbbit worker serving it exited */
static bool jobs_worker_lost = false;
static int64 jobs_runner_job = 0;
static JobsRunnerArgs jobs_runner_args;
static bool jobs_runner_connected = false;
static bool jobs_runner_claimed = false;
static bool jobs_runner_finished = false;

pg_noreturn static void jobs_check_main(JobsRunnerArgs *args);
static MemoryContext jobs_context = NULL;

/* cancel_job: runners to signal at commit */
static pid_t jobs_kill_pid[JOBS_MAX_PENDING_KILLS];
static int	jobs_kill_level[JOBS_MAX_PENDING_KILLS];
static int	jobs_nkill = 0;
static bool jobs_xact_callbacks_registered = false;

PGDLLEXPORT void rv_jobs_runner_main(Datum main_arg);
PGDLLEXPORT void rv_jobs_recover_main(Datum main_arg);
PGDLLEXPORT void rv_jobs_launcher_main(Datum main_arg);

PG_FUNCTION_INFO_V1(rvbbit_submit_job);
PG_FUNCTION_INFO_V1(rvbbit_cancel_job);

/* ----------------------------------------------------------------
 * Shared memory and the static launcher
 * ----------------------------------------------------------------
 */

/* The shared memory jobs need (shmem.c requests it). */
Size
rv_jobs_shmem_size(void)
{
	return MAXALIGN(sizeof(JobsShared));
}

/*
 * Create JobsShared with a new incarnation (shmem.c, holding
 * AddinShmemInitLock).  Runs in the postmaster at start and after every
 * crash restart (shared memory is created anew then, so found is false).
 */
void
rv_jobs_shmem_init(void)
{
	bool		found;

	jobs_shared = ShmemInitStruct("rvbbit jobs", sizeof(JobsShared), &found);
	if (!found)
		jobs_shared->incarnation = GetCurrentTimestamp();
}

/*
 * Called from _PG_init when the library is preloaded: register the static
 * jobs launcher, which resumes interrupted jobs once per server start and
 * crash restart.
 */
void
rv_jobs_init(void)
{
	BackgroundWorker worker;

	/* restarted after a crash restart (and 10 s after an error exit) */
	rv_bgworker_prepare(&worker, BgWorkerStart_RecoveryFinished, 10,
						"rv_jobs_launcher_main", "rvbbit jobs launcher");
	RegisterBackgroundWorker(&worker);
}

/* The incarnation of shared memory; raises an error when not preloaded. */
static TimestampTz
jobs_incarnation(void)
{
	rv_require_shared();
	if (jobs_shared == NULL)
		elog(ERROR, "rvbbit jobs shared memory is not initialized");
	return jobs_shared->incarnation;
}

/* ----------------------------------------------------------------
 * Acting as the owner of the job tables
 * ----------------------------------------------------------------
 */

/* OID of rvbbit.job_log, or InvalidOid when it does not exist. */
static Oid
jobs_log_relid(void)
{
	Oid			nsp = get_namespace_oid("rvbbit", true);

	if (!OidIsValid(nsp))
		return InvalidOid;
	return get_relname_relid("job_log", nsp);
}

/*
 * Switch to the owner of rvbbit.job_log with search_path pg_catalog,
 * pg_temp, for our own statements on the job tables.  Must be inside a
 * transaction; an error before jobs_priv_end() is undone by the
 * transaction's abort, which restores the user and the GUC nest level.
 */
static void
jobs_priv_begin(JobsPriv *priv)
{
	Oid			relid = jobs_log_relid();
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rvbbit jobs are not installed in this database"),
				 errhint("Update the extension with ALTER EXTENSION rvbbit UPDATE.")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&priv->save_userid, &priv->save_sec_context);
	SetUserIdAndSecContext(owner, priv->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	priv->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/* Undo jobs_priv_begin(). */
static void
jobs_priv_end(JobsPriv *priv)
{
	AtEOXact_GUC(true, priv->nestlevel);
	SetUserIdAndSecContext(priv->save_userid, priv->save_sec_context);
}

/*
 * May role me cancel (and see) a job of role owner?  Its owner, superusers
 * and members of rvbbit_admin may, like rvbbit._sees_all().
 */
static bool
jobs_may_manage(Oid me, Oid owner)
{
	Oid			admin = get_role_oid("rvbbit_admin", true);

	return me == owner || superuser_arg(me) ||
		(OidIsValid(admin) && is_member_of_role(me, admin));
}

/* ----------------------------------------------------------------
 * Starting background workers
 * ----------------------------------------------------------------
 */

/*
 * Register the job runner (or check runner) that args describes.  Returns
 * false when no background worker slot is free.
 */
static bool
jobs_start_runner_args(const JobsRunnerArgs *args)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	rv_bgworker_prepare(&worker, BgWorkerStart_RecoveryFinished, BGW_NEVER_RESTART,
						"rv_jobs_runner_main", JOBS_RUNNER_TYPE);
	snprintf(worker.bgw_name, BGW_MAXLEN, "rvbbit job %s for job %lld",
			 args->check ? "check" : "runner", (long long) args->job_id);
	/* the job id travels in bgw_extra; main_arg is only informative */
	worker.bgw_main_arg = Int32GetDatum((int32) args->job_id);
	StaticAssertStmt(sizeof(JobsRunnerArgs) <= BGW_EXTRALEN, "bgw_extra too small");
	memcpy(worker.bgw_extra, args, sizeof(JobsRunnerArgs));
	worker.bgw_notify_pid = 0;

	return RegisterDynamicBackgroundWorker(&worker, &handle);
}

/*
 * Register a job runner for job_id of role in database dboid that waits
 * for transaction xid first.  Returns false when no background worker
 * slot is free.  The runner is not our child: it outlives this backend.
 */
static bool
jobs_start_runner(int64 job_id, Oid dboid, Oid role, TransactionId xid)
{
	JobsRunnerArgs args;

	memset(&args, 0, sizeof(args));
	args.job_id = job_id;
	args.dboid = dboid;
	args.role = role;
	args.xid = xid;
	args.check = false;
	args.nchecks = 0;
	return jobs_start_runner_args(&args);
}

/* ----------------------------------------------------------------
 * Submitting
 * ----------------------------------------------------------------
 */

/* The saved rvbbit.* settings of this session as a JSON object text. */
static char *
jobs_capture_settings(void)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; jobs_saved_settings[i] != NULL; i++)
	{
		const char *v = GetConfigOption(jobs_saved_settings[i], true, false);

		if (v == NULL)
			continue;
		if (buf.len > 1)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, jobs_saved_settings[i]);
		appendStringInfoString(&buf, ": ");
		escape_json(&buf, v);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Submit an async statement as a job of the current role in the current
 * database; target is the as_table name or NULL (the result then goes to
 * rvbbit.job_results).  Runs in the caller's transaction: the job exists,
 * and its runner starts work, only if that transaction commits.  Returns
 * the job id.  Raises an error when the target table exists already or
 * no background worker slot is free.
 */
int64
rv_submit_job(const char *statement, const char *target)
{
	TimestampTz incarnation = jobs_incarnation();
	Oid			role = GetUserId();
	char	   *search_path = pstrdup(GetConfigOption("search_path", false, false));
	char	   *settings = jobs_capture_settings();
	JobsPriv	priv;
	Oid			types[7] = {OIDOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		vals[7];
	char		nulls[7] = "       ";
	bool		isnull;
	int64		job_id;

	if (RV_BGW_NEEDS_LOGIN)
	{
		/*
		 * The runner is a real connection of the role; before PostgreSQL 17
		 * a background worker cannot connect as a role without LOGIN.
		 */
		HeapTuple	rtup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
		bool		canlogin;

		if (!HeapTupleIsValid(rtup))
			elog(ERROR, "cache lookup failed for role %u", role);
		canlogin = ((Form_pg_authid) GETSTRUCT(rtup))->rolcanlogin;
		ReleaseSysCache(rtup);
		if (!canlogin)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("role \"%s\" cannot submit jobs because it cannot log in",
							GetUserNameFromId(role, false)),
					 errdetail("A job runs in a background connection of the submitting role, and this PostgreSQL version refuses such connections for roles without LOGIN."),
					 errhint("Grant the role LOGIN, or submit the job as a role that has it.")));
	}

	if (target != NULL)
	{
		RangeVar   *rv;

		Oid			nsp;

		rv = makeRangeVarFromNameList(rv_stringToQualifiedNameList(target));
		nsp = RangeVarGetCreationNamespace(rv);
		if (isAnyTempNamespace(nsp))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("an async job cannot create the temporary table \"%s\"", rv->relname),
					 errdetail("A job runs in its own background session, and a temporary table would vanish when that session ends."),
					 errhint("Give as_table a regular table name, or run the statement without async.")));
		if (OidIsValid(get_relname_relid(rv->relname, nsp)))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_TABLE),
					 errmsg("relation \"%s\" already exists", rv->relname),
					 errhint("The job creates its as_table; choose another name or drop the table.")));
	}

	vals[0] = ObjectIdGetDatum(role);
	vals[1] = ObjectIdGetDatum(MyDatabaseId);
	vals[2] = CStringGetTextDatum(statement);
	vals[3] = CStringGetTextDatum(search_path);
	vals[4] = CStringGetTextDatum(settings);
	if (target != NULL)
		vals[5] = CStringGetTextDatum(target);
	else
	{
		vals[5] = (Datum) 0;
		nulls[5] = 'n';
	}
	vals[6] = TimestampTzGetDatum(incarnation);

	SPI_connect();
	jobs_priv_begin(&priv);
	if (SPI_execute_with_args("INSERT INTO rvbbit.job_log (role_oid, dboid, statement, search_path, "
							  "settings, target, status, server_started_at) "
							  "VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'queued', $7) RETURNING id",
							  7, types, vals, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not insert into rvbbit.job_log");
	job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	jobs_priv_end(&priv);
	SPI_finish();

	if (!jobs_start_runner(job_id, MyDatabaseId, role, GetTopTransactionId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a job runner"),
				 errdetail("All background worker slots are in use."),
				 errhint("Wait for running jobs to finish, or raise \"max_worker_processes\" and restart the server.")));
	return job_id;
}

/*
 * rvbbit._submit_job(statement text) RETURNS TABLE (job_id bigint): plan
 * the statement (which checks it), find its as_table target, and submit
 * it.  An async MAP must have as_table.  Returns one row.
 */
Datum
rvbbit_submit_job(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;

	if (SRF_IS_FIRSTCALL())
	{
		char	   *statement;
		char	   *target = NULL;
		RvPlannedStatement ps;
		MemoryContext old;
		int64	   *id;

		funcctx = SRF_FIRSTCALL_INIT();
		rv_require_shared();
		if (PG_ARGISNULL(0))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("statement must not be null")));
		statement = text_to_cstring(PG_GETARG_TEXT_PP(0));
		rv_plan_statement(statement, -1, NULL, &ps);
		if (ps.opts.as_table != NULL)
			target = NameListToQuotedString(rv_stringToQualifiedNameList(ps.opts.as_table));
		else if (!ps.is_run)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("an async MAP needs the as_table option"),
					 errdetail("A job writes the rows of a MAP into a new table."),
					 errhint("Add as_table = 'table_name' to the WITH options.")));

		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		id = palloc(sizeof(int64));
		MemoryContextSwitchTo(old);
		*id = rv_submit_job(statement, target);
		funcctx->user_fctx = id;
		funcctx->max_calls = 1;
	}
	funcctx = SRF_PERCALL_SETUP();
	if (funcctx->call_cntr < funcctx->max_calls)
		SRF_RETURN_NEXT(funcctx, Int64GetDatum(*(int64 *) funcctx->user_fctx));
	SRF_RETURN_DONE(funcctx);
}

/* ----------------------------------------------------------------
 * Cancelling
 * ----------------------------------------------------------------
 */

/*
 * Transaction callback: signal the runners of the jobs cancelled in the
 * committed transaction; forget them on abort.  Only a live process
 * connected to this database is signalled (the pid was checked to be a job
 * runner, in pg_stat_activity, when the job was cancelled).
 */
static void
jobs_xact_callback(XactEvent event, void *arg)
{
	int			i;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
			for (i = 0; i < jobs_nkill; i++)
			{
				PGPROC	   *proc = BackendPidGetProc(jobs_kill_pid[i]);

				if (proc != NULL && proc->databaseId == MyDatabaseId)
					(void) kill(jobs_kill_pid[i], SIGTERM);
			}
			jobs_nkill = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			jobs_nkill = 0;
			break;
		default:
			break;
	}
}

/* Subtransaction callback: keep the pending signals in step with savepoints. */
static void
jobs_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			i;
	int			n = 0;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		for (i = 0; i < jobs_nkill; i++)
			if (jobs_kill_level[i] < level)
			{
				jobs_kill_pid[n] = jobs_kill_pid[i];
				jobs_kill_level[n++] = jobs_kill_level[i];
			}
		jobs_nkill = n;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < jobs_nkill; i++)
			if (jobs_kill_level[i] >= level)
				jobs_kill_level[i] = level - 1;
	}
}

/* Signal runner pid when the current transaction commits. */
static void
jobs_kill_at_commit(pid_t pid)
{
	if (!jobs_xact_callbacks_registered)
	{
		RegisterXactCallback(jobs_xact_callback, NULL);
		RegisterSubXactCallback(jobs_subxact_callback, NULL);
		jobs_xact_callbacks_registered = true;
	}
	if (jobs_nkill >= JOBS_MAX_PENDING_KILLS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot cancel more than %d running jobs in one transaction",
						JOBS_MAX_PENDING_KILLS)));
	jobs_kill_pid[jobs_nkill] = pid;
	jobs_kill_level[jobs_nkill++] = GetCurrentTransactionNestLevel();
}

/*
 * rvbbit.cancel_job(job_id bigint) RETURNS boolean: cancel a queued or
 * running job of the caller (any job for superusers and rvbbit_admin).
 * Returns false when the job had already ended.  The job's runner is sent
 * SIGTERM when this transaction commits.
 */
Datum
rvbbit_cancel_job(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	Oid			me = GetUserId();
	char	   *myname = GetUserNameFromId(me, false);
	JobsPriv	priv;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		vals[2];
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	char	   *status;
	int32		pid = 0;
	bool		cancelled = false;

	rv_require_shared();
	vals[0] = Int64GetDatum(job_id);
	vals[1] = CStringGetTextDatum(psprintf("cancelled by %s", myname));

	SPI_connect();
	jobs_priv_begin(&priv);

	/*
	 * Whose job is it?  Read without a lock first: a job of another role
	 * that the caller may not manage must look exactly like a job that does
	 * not exist (same error, and no waiting on its row lock), so that
	 * cancel_job cannot be used to probe for other roles' jobs.  The owner
	 * of a job never changes, so checking it before locking is safe.
	 */
	if (SPI_execute_with_args("SELECT role_oid FROM rvbbit.job_log WHERE id = $1",
							  1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	if (SPI_processed == 0 ||
		!jobs_may_manage(me, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc,
															1, &isnull))))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id),
				 errhint("A role sees and cancels only its own jobs (see rvbbit.jobs); superusers and members of rvbbit_admin see all.")));

	if (SPI_execute_with_args("SELECT role_oid, status, runner_pid FROM rvbbit.job_log "
							  "WHERE id = $1 FOR UPDATE",
							  1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	if (SPI_processed == 0)		/* deleted meanwhile */
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id),
				 errhint("A role sees and cancels only its own jobs (see rvbbit.jobs); superusers and members of rvbbit_admin see all.")));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	status = SPI_getvalue(tup, td, 2);
	{
		Datum		d = SPI_getbinval(tup, td, 3, &isnull);

		if (!isnull)
			pid = DatumGetInt32(d);
	}

	if (strcmp(status, "queued") == 0 || strcmp(status, "running") == 0)
	{
		if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET status = 'cancelled', "
								  "finished_at = now(), error = $2, "
								  "spent = CASE WHEN j.status = 'running' THEN coalesce(j.spent, 0) + "
								  JOBS_RUN_SPENT " ELSE j.spent END "
								  "WHERE j.id = $1",
								  2, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update rvbbit.job_log");
		cancelled = true;

		if (strcmp(status, "running") == 0 && pid > 0)
		{
			Oid			ptypes[1] = {INT4OID};
			Datum		pvals[1];

			pvals[0] = Int32GetDatum(pid);
			if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_stat_activity "
									  "WHERE pid = $1 AND backend_type = '" JOBS_RUNNER_TYPE "'",
									  1, ptypes, pvals, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read pg_stat_activity");
			if (SPI_processed == 1)
				jobs_kill_at_commit((pid_t) pid);
		}
	}
	jobs_priv_end(&priv);
	SPI_finish();
	PG_RETURN_BOOL(cancelled);
}

/* ----------------------------------------------------------------
 * The job runner
 * ----------------------------------------------------------------
 */

/* SIGTERM of a runner: remember it (for the exit callback), then die. */
static void
jobs_sigterm(SIGNAL_ARGS)
{
	jobs_got_sigterm = true;
	die(postgres_signal_arg);
}


/*
 * Exit callback of a runner (before_shmem_exit, so it runs before the
 * backend's own shutdown, with interrupts held off: a SIGTERM arriving now
 * does not stop it): if its job is still 'running' under this runner, the
 * runner is going away without having recorded an outcome.  After SIGTERM
 * or the exit of the rvbbit worker serving the statement, the job goes
 * back to 'queued' with a new runner (which never starts during a
 * shutdown; the recovery after the restart resumes it), unless it was
 * started JOBS_MAX_ATTEMPTS times; after anything else (but the
 * postmaster's death) it fails.  A job that was cancelled, or whose
 * outcome was recorded, does not match the UPDATE and is left alone.
 */
static void
jobs_runner_exit(int code, Datum arg)
{
	JobsPriv	priv;
	Oid			types[3] = {INT8OID, INT4OID, INT4OID};
	Datum		vals[3];

	/* without a postmaster, leave the job to the recovery after the restart */
	if (!PostmasterIsAlive())
		return;

	/*
	 * The connection as the job's role failed (the role was dropped, or is
	 * not yet visible): a check runner decides what becomes of the job.
	 */
	if (!jobs_runner_connected)
	{
		JobsRunnerArgs check = jobs_runner_args;

		if (!check.check && check.nchecks < JOBS_MAX_ATTEMPTS)
		{
			check.check = true;
			check.nchecks++;
			(void) jobs_start_runner_args(&check);
		}
		return;
	}
	if (!jobs_runner_claimed || jobs_runner_finished)
		return;
	AbortOutOfAnyTransaction();
	vals[0] = Int64GetDatum(jobs_runner_job);
	vals[1] = Int32GetDatum(MyProcPid);
	vals[2] = Int32GetDatum(JOBS_MAX_ATTEMPTS);

	rv_bgxact_begin("rvbbit: job runner exiting");
	jobs_priv_begin(&priv);
	if (jobs_got_sigterm || jobs_worker_lost)
	{
		bool		requeued;
		Oid			rtypes[4] = {INT8OID, INT4OID, INT4OID, TEXTOID};
		Datum		rvals[4];

		rvals[0] = vals[0];
		rvals[1] = vals[1];
		rvals[2] = vals[2];
		rvals[3] = CStringGetTextDatum(jobs_got_sigterm ? "the job runner was terminated" :
									   "the rvbbit worker exited while the job was running");
		if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET "
								  "status = CASE WHEN j.attempts >= $3 THEN 'failed' ELSE 'queued' END, "
								  "finished_at = CASE WHEN j.attempts >= $3 THEN now() END, "
								  "error = CASE WHEN j.attempts >= $3 THEN $4 || '; not resumed after ' || $3 || ' attempts' "
								  "ELSE $4 || '; the job resumes' END, "
								  "spent = coalesce(j.spent, 0) + " JOBS_RUN_SPENT ", "
								  "runner_pid = CASE WHEN j.attempts >= $3 THEN j.runner_pid END "
								  "WHERE j.id = $1 AND j.status = 'running' AND j.runner_pid = $2 "
								  "RETURNING j.status",
								  4, rtypes, rvals, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not update rvbbit.job_log");
		requeued = (SPI_processed == 1 &&
					strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "queued") == 0);
		if (requeued &&
			!jobs_start_runner(jobs_runner_job, MyDatabaseId, jobs_runner_args.role,
							   GetTopTransactionId()) &&
			SPI_execute_with_args("UPDATE rvbbit.job_log SET status = 'failed', finished_at = now(), "
								  "error = 'the job runner was terminated and no background worker "
								  "slot was free to restart it' WHERE id = $1",
								  1, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update rvbbit.job_log");
		if (requeued)
			ereport(LOG,
					(errmsg("rvbbit job %lld was interrupted and will resume",
							(long long) jobs_runner_job)));
	}
	else if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET status = 'failed', "
								   "finished_at = now(), "
								   "error = 'the job runner exited unexpectedly; see the server log', "
								   "spent = coalesce(j.spent, 0) + " JOBS_RUN_SPENT " "
								   "WHERE j.id = $1 AND j.status = 'running' AND j.runner_pid = $2",
								   2, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update rvbbit.job_log");
	jobs_priv_end(&priv);
	rv_bgxact_end(false);
}

/*
 * Claim the job: queued -> running under this runner, in a committed
 * transaction.  Fills *job (in jobs_context) and returns true, or returns
 * false when the job is gone, cancelled, or run by someone else.
 */
static bool
jobs_claim(int64 job_id, JobsJob *job)
{
	bool		claimed = false;
	JobsPriv	priv;
	Oid			types[4] = {INT8OID, INT4OID, TIMESTAMPTZOID, OIDOID};
	Datum		vals[4];

	rv_bgxact_begin("rvbbit: starting a job");
	if (OidIsValid(jobs_log_relid()))
	{
		vals[0] = Int64GetDatum(job_id);
		vals[1] = Int32GetDatum(MyProcPid);
		vals[2] = TimestampTzGetDatum(jobs_incarnation());
		vals[3] = ObjectIdGetDatum(MyDatabaseId);
		jobs_priv_begin(&priv);
		if (SPI_execute_with_args("UPDATE rvbbit.job_log SET status = 'running', started_at = now(), "
								  "runner_pid = $2, server_started_at = $3, attempts = attempts + 1 "
								  "WHERE id = $1 AND status = 'queued' AND dboid = $4 "
								  "RETURNING role_oid, statement, search_path, target",
								  4, types, vals, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not update rvbbit.job_log");
		if (SPI_processed == 1)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *sp = SPI_getvalue(tup, td, 3);
			char	   *target = SPI_getvalue(tup, td, 4);

			job->id = job_id;
			job->role = DatumGetObjectId(SPI_getbinval(tup, td, 1, &isnull));
			job->statement = MemoryContextStrdup(jobs_context, SPI_getvalue(tup, td, 2));
			job->search_path = sp ? MemoryContextStrdup(jobs_context, sp) : NULL;
			job->target = target ? MemoryContextStrdup(jobs_context, target) : NULL;
			claimed = true;
		}
		jobs_priv_end(&priv);
	}
	rv_bgxact_end(false);
	return claimed;
}

/*
 * Run the claimed job: as its role, with its search_path and settings, run
 * SELECT * FROM rvbbit.sql('<statement>'), store the result of a RUN
 * without target, and mark the job done, all in one transaction.  When the
 * job was cancelled meanwhile, everything is rolled back.  Errors
 * propagate to the caller with the transaction still open.
 */
static void
jobs_run(JobsJob *job)
{
	JobsPriv	priv;
	Oid			types[3] = {INT8OID, INT8OID, INT4OID};
	Datum		vals[3];
	char		nulls[3] = "   ";
	Oid			rtypes[2] = {INT8OID, JSONBOID};
	Datum		rvals[2];
	char		rnulls[2] = "  ";
	char	  **names;
	char	  **values;
	int			nsettings;
	int			i;
	int			nestlevel;
	int64		rows;
	bool		isnull;
	bool		cancelled;
	TupleDesc	td;

	rv_bgxact_begin(job->statement);
	debug_query_string = job->statement;

	/* the session settings saved at submission */
	vals[0] = Int64GetDatum(job->id);
	jobs_priv_begin(&priv);
	if (SPI_execute_with_args("SELECT s.key, s.value FROM rvbbit.job_log j, "
							  "jsonb_each_text(coalesce(j.settings, '{}')) s WHERE j.id = $1",
							  1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	nsettings = (int) SPI_processed;
	names = palloc(sizeof(char *) * (nsettings + 1));
	values = palloc(sizeof(char *) * (nsettings + 1));
	for (i = 0; i < nsettings; i++)
	{
		names[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		values[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	jobs_priv_end(&priv);

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that submitted the job no longer exists")));
	/* the runner is connected as the job's role; check it, never assume */
	if (GetSessionUserId() != job->role || GetUserId() != job->role)
		elog(ERROR, "job runner is connected as role %u, not as the job's role %u",
			 GetSessionUserId(), job->role);

	/* the job's search_path and saved settings, as the role itself */
	nestlevel = NewGUCNestLevel();
	if (job->search_path != NULL)
		(void) set_config_option("search_path", job->search_path,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	for (i = 0; i < nsettings; i++)
		if (names[i] != NULL && values[i] != NULL)
			(void) set_config_option(names[i], values[i],
									 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
									 true, 0, false);

	if (SPI_execute(psprintf("SELECT * FROM rvbbit.sql(%s)", quote_literal_cstr(job->statement)),
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "the job's statement did not return rows");
	td = SPI_tuptable->tupdesc;
	rows = (int64) SPI_processed;
	if (job->target != NULL)
	{
		int			col = SPI_fnumber(td, "rows");

		if (SPI_processed == 1 && col > 0 && SPI_gettypeid(td, col) == INT8OID)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], td, col, &isnull);

			if (!isnull)
				rows = DatumGetInt64(d);
		}
	}
	else
	{
		if (SPI_processed != 1 || td->natts != 1 || SPI_gettypeid(td, 1) != JSONBOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("the job's statement did not return one jsonb result"),
					 errhint("Give an async MAP the as_table option.")));
		rvals[1] = SPI_getbinval(SPI_tuptable->vals[0], td, 1, &isnull);
		if (isnull)
			rnulls[1] = 'n';
	}
	AtEOXact_GUC(true, nestlevel);

	/*
	 * Record the outcome in the same transaction.  The job's statement has
	 * returned; what of it still runs at commit (deferred triggers, ON
	 * COMMIT actions) runs as the role, after jobs_priv_end().
	 */
	jobs_priv_begin(&priv);
	if (job->target == NULL)
	{
		rvals[0] = Int64GetDatum(job->id);
		if (SPI_execute_with_args("INSERT INTO rvbbit.job_result_log (job_id, result) VALUES ($1, $2) "
								  "ON CONFLICT (job_id) DO UPDATE SET result = excluded.result, "
								  "created_at = now()",
								  2, rtypes, rvals, rnulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into rvbbit.job_result_log");
	}
	vals[1] = Int64GetDatum(rows);
	vals[2] = Int32GetDatum(MyProcPid);
	if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET status = 'done', finished_at = now(), "
							  "rows = $2, error = NULL, spent = coalesce(j.spent, 0) + " JOBS_RUN_SPENT " "
							  "WHERE j.id = $1 AND j.status = 'running' AND j.runner_pid = $3",
							  3, types, vals, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update rvbbit.job_log");
	cancelled = (SPI_processed == 0);
	jobs_priv_end(&priv);
	rv_bgxact_end(cancelled);
	debug_query_string = NULL;
}

/*
 * Record that the job failed with message, unless it was cancelled (or is
 * no longer run by this runner).
 */
static void
jobs_record_failure(int64 job_id, const char *message)
{
	JobsPriv	priv;
	Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
	Datum		vals[3];

	vals[0] = Int64GetDatum(job_id);
	vals[1] = CStringGetTextDatum(message);
	vals[2] = Int32GetDatum(MyProcPid);
	rv_bgxact_begin("rvbbit: recording a failed job");
	jobs_priv_begin(&priv);
	if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET status = 'failed', finished_at = now(), "
							  "error = $2, spent = coalesce(j.spent, 0) + " JOBS_RUN_SPENT " "
							  "WHERE j.id = $1 AND j.status = 'running' AND j.runner_pid = $3",
							  3, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update rvbbit.job_log");
	jobs_priv_end(&priv);
	rv_bgxact_end(false);
}

/*
 * A check runner (args->check): the normal runner of the job could not
 * connect as the job's role.  Connected as the bootstrap superuser, it
 * runs only this fixed code: wait for the submitting transaction, then
 * mark the job failed when its role does not exist, or start a normal
 * runner again when it does.  Never returns.
 */
static void
jobs_check_main(JobsRunnerArgs *args)
{
	JobsPriv	priv;
	Oid			types[3] = {INT8OID, OIDOID, TEXTOID};
	Datum		vals[3];

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(args->dboid, InvalidOid, 0);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);

	if (TransactionIdIsValid(args->xid))
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		XactLockTableWait(args->xid, NULL, NULL, XLTW_None);
		CommitTransactionCommand();
	}

	rv_bgxact_begin("rvbbit: checking a job's role");
	if (OidIsValid(jobs_log_relid()))
	{
		HeapTuple	rtup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(args->role));
		const char *fail = NULL;

		if (!HeapTupleIsValid(rtup))
			fail = "the role that submitted the job no longer exists";
		else
		{
			if (RV_BGW_NEEDS_LOGIN && !((Form_pg_authid) GETSTRUCT(rtup))->rolcanlogin)
				fail = "the role that submitted the job cannot log in, so no job runner can connect as it";
			ReleaseSysCache(rtup);
			if (fail == NULL && args->nchecks >= JOBS_MAX_ATTEMPTS)
				fail = "no job runner could connect as the role that submitted the job; see the server log";
		}
		if (fail == NULL)
		{
			JobsRunnerArgs again = *args;

			again.check = false;
			again.xid = InvalidTransactionId;
			if (!jobs_start_runner_args(&again))
				ereport(LOG,
						(errmsg("could not restart the runner of rvbbit job %lld: no background worker slot is free",
								(long long) args->job_id)));
		}
		else
		{
			vals[0] = Int64GetDatum(args->job_id);
			vals[1] = ObjectIdGetDatum(args->role);
			vals[2] = CStringGetTextDatum(fail);
			jobs_priv_begin(&priv);
			if (SPI_execute_with_args("UPDATE rvbbit.job_log SET status = 'failed', finished_at = now(), "
									  "error = $3 "
									  "WHERE id = $1 AND role_oid = $2 AND status = 'queued'",
									  3, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update rvbbit.job_log");
			jobs_priv_end(&priv);
		}
	}
	rv_bgxact_end(false);
	proc_exit(0);
}

/*
 * Entry point of a job runner (dynamic background worker, never
 * restarted).  bgw_extra holds JobsRunnerArgs.  Waits for the submitting
 * transaction, claims the job, runs it and records the outcome, then
 * exits.  SIGTERM (cancel_job, shutdown) ends it through die(); the exit
 * callback then sees to the job's status.
 */
void
rv_jobs_runner_main(Datum main_arg)
{
	JobsRunnerArgs args;
	JobsJob		job;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	jobs_runner_args = args;
	if (args.check)
		jobs_check_main(&args);
	pqsignal(SIGTERM, jobs_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	before_shmem_exit(jobs_runner_exit, (Datum) 0);

	/*
	 * Connect as the submitting role: from here on this process has that
	 * role's rights and settings and no others (FATAL when the role is
	 * gone; the exit callback then starts a check runner).
	 */
	if (!OidIsValid(args.role))
		elog(FATAL, "job runner started without a role");
	rv_BackgroundWorkerConnectAsRole(args.dboid, args.role);
	jobs_runner_connected = true;

	rv_in_job_runner = true;
	jobs_runner_job = args.job_id;
	jobs_context = AllocSetContextCreate(TopMemoryContext, "rvbbit job runner",
										 ALLOCSET_DEFAULT_SIZES);
	SetConfigOption("application_name", psprintf("rvbbit job %lld", (long long) args.job_id),
					PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_USERSET, PGC_S_SESSION);

	/* start no work before the submitting transaction has committed */
	if (TransactionIdIsValid(args.xid))
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		pgstat_report_activity(STATE_RUNNING, "rvbbit: waiting for the submitting transaction");
		XactLockTableWait(args.xid, NULL, NULL, XLTW_None);
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}

	/* from here on the exit callback looks after a job left running */
	jobs_runner_claimed = true;
	if (!jobs_claim(args.job_id, &job))
	{
		jobs_runner_finished = true;
		proc_exit(0);
	}

	PG_TRY();
	{
		jobs_run(&job);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char	   *message;

		MemoryContextSwitchTo(jobs_context);
		EmitErrorReport();
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		debug_query_string = NULL;

		/*
		 * An interruption, not the job's failure: the worker serving the
		 * statement exited (in a fast shutdown it may go before this
		 * runner's own SIGTERM arrives), or this runner got SIGTERM while
		 * the error was raised.  The exit callback puts the job back to
		 * 'queued' and registers a new runner.
		 */
		if (jobs_got_sigterm ||
			(rv_worker_exited && edata->sqlerrcode == ERRCODE_CONNECTION_FAILURE))
		{
			jobs_worker_lost = true;
			proc_exit(1);
		}
		message = edata->detail ?
			psprintf("%s\nDETAIL: %s", edata->message, edata->detail) :
			pstrdup(edata->message);
		jobs_record_failure(job.id, message);
	}
	PG_END_TRY();

	jobs_runner_finished = true;
	proc_exit(0);
}

/* ----------------------------------------------------------------
 * Resuming after a restart
 * ----------------------------------------------------------------
 */

/*
 * Entry point of a recovery worker (dynamic, one per database, started by
 * the launcher): apply the restart rule of the header comment to the jobs
 * of this database, in one transaction.  New runners wait for it to
 * commit.  Does nothing in a database without rvbbit jobs.
 */
void
rv_jobs_recover_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	TimestampTz incarnation;
	JobsPriv	priv;
	Oid			types[3] = {TIMESTAMPTZOID, INT8OID, INT4OID};
	Datum		vals[3];
	int64	   *ids;
	int		   *attempts;
	Oid		   *dbs;
	Oid		   *roles;
	int			n;
	int			i;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_USERSET, PGC_S_SESSION);
	incarnation = jobs_incarnation();

	rv_bgxact_begin("rvbbit: resuming interrupted jobs");
	if (!OidIsValid(jobs_log_relid()))
	{
		rv_bgxact_end(false);
		proc_exit(0);
	}
	jobs_priv_begin(&priv);
	vals[0] = TimestampTzGetDatum(incarnation);
	if (SPI_execute_with_args("SELECT id, attempts, dboid, role_oid FROM rvbbit.job_log "
							  "WHERE status IN ('queued', 'running') "
							  "AND server_started_at IS DISTINCT FROM $1 ORDER BY id FOR UPDATE",
							  1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	attempts = palloc(sizeof(int) * (n + 1));
	dbs = palloc(sizeof(Oid) * (n + 1));
	roles = palloc(sizeof(Oid) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		attempts[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		dbs[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		roles[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
	}

	for (i = 0; i < n; i++)
	{
		const char *fail = NULL;

		vals[1] = Int64GetDatum(ids[i]);
		if (dbs[i] != MyDatabaseId)
			fail = "interrupted by a server restart; the job belongs to another database";
		else if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(roles[i])))
			fail = "the role that submitted the job no longer exists";
		else if (attempts[i] >= JOBS_MAX_ATTEMPTS)
			fail = psprintf("interrupted by a server restart; not resumed after %d attempts",
							JOBS_MAX_ATTEMPTS);
		else
		{
			/* the spend of the interrupted run: its calls before the restart */
			if (SPI_execute_with_args("UPDATE rvbbit.job_log AS j SET status = 'queued', "
									  "spent = coalesce(j.spent, 0) + coalesce((SELECT sum(c.cost) "
									  "FROM rvbbit.call_log c WHERE c.backend_pid = j.runner_pid "
									  "AND c.called_at >= j.started_at AND c.called_at < $1), 0), "
									  "runner_pid = NULL, server_started_at = $1, "
									  "error = 'resumed after restart' WHERE j.id = $2",
									  2, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update rvbbit.job_log");
			if (jobs_start_runner(ids[i], MyDatabaseId, roles[i], GetTopTransactionId()))
				ereport(LOG,
						(errmsg("resuming rvbbit job %lld after a server restart",
								(long long) ids[i])));
			else
				fail = "interrupted by a server restart; no background worker slot was free to resume it";
		}
		if (fail != NULL)
		{
			Oid			ftypes[2] = {INT8OID, TEXTOID};
			Datum		fvals[2];

			fvals[0] = Int64GetDatum(ids[i]);
			fvals[1] = CStringGetTextDatum(fail);
			if (SPI_execute_with_args("UPDATE rvbbit.job_log SET status = 'failed', "
									  "finished_at = now(), error = $2 WHERE id = $1",
									  2, ftypes, fvals, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update rvbbit.job_log");
			ereport(LOG,
					(errmsg("rvbbit job %lld failed: %s", (long long) ids[i], fail)));
		}
	}
	jobs_priv_end(&priv);
	rv_bgxact_end(false);
	proc_exit(0);
}

/*
 * The databases a recovery worker should visit: those that allow
 * connections and are not templates (connecting to template1 would block
 * CREATE DATABASE).  Reads pg_database directly, as the launcher has no
 * database.  The list is allocated in the caller's memory context.
 */
static List *
jobs_database_list(void)
{
	List	   *dbs = NIL;
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (rv_database_is_invalid(db))
			continue;
		old = MemoryContextSwitchTo(caller);
		dbs = lappend_oid(dbs, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

/*
 * Run a recovery worker for database dboid and wait until it exits.
 * Retries for a minute while no background worker slot is free.
 */
static void
jobs_recover_database(Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	int			tries;

	rv_bgworker_prepare(&worker, BgWorkerStart_RecoveryFinished, BGW_NEVER_RESTART,
						"rv_jobs_recover_main", "rvbbit job recovery");
	snprintf(worker.bgw_name, BGW_MAXLEN, "rvbbit job recovery for database %u", dboid);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	for (tries = 0; !RegisterDynamicBackgroundWorker(&worker, &handle); tries++)
	{
		if (tries >= 60)
		{
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("could not start the rvbbit job recovery for database %u", dboid),
					 errdetail("All background worker slots are in use."),
					 errhint("Interrupted jobs of that database stay queued until the next restart; "
							 "raise \"max_worker_processes\".")));
			return;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (WaitForBackgroundWorkerShutdown(handle) == BGWH_POSTMASTER_DIED)
		proc_exit(1);
}

/*
 * Entry point of the static jobs launcher.  Once per server start or crash
 * restart (the postmaster starts it again after a crash), it runs the
 * recovery of every database, one at a time, then sleeps until shutdown
 * so that it is not started again before the next crash restart.
 */
void
rv_jobs_launcher_main(Datum main_arg)
{
	List	   *dbs;
	ListCell   *lc;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	dbs = jobs_database_list();
	foreach(lc, dbs)
	{
		CHECK_FOR_INTERRUPTS();
		jobs_recover_database(lfirst_oid(lc));
	}
	list_free(dbs);

	for (;;)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
