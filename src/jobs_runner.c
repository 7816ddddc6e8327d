/*-------------------------------------------------------------------------
 *
 * jobs_runner.c
 *	  The background workers of asynchronous statements: the job runner
 *	  (claims a job, runs it as the submitting role, records the outcome),
 *	  the check runner, the per-database recovery worker and the static
 *	  launcher that resumes interrupted jobs after a (crash) restart.
 *	  The design, with the restart rule, is described in jobs.c.
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

#include "jobs.h"
#include "map.h"
#include "rvbbit.h"

/* A claimed job, in jobs_context. */
typedef struct JobsJob
{
	int64		id;
	Oid			role;
	char	   *statement;
	char	   *search_path;
	char	   *target;
} JobsJob;

/* runner state, for the exit callback */
static volatile sig_atomic_t jobs_got_sigterm = false;
/* the job's statement failed because the rvbbit worker serving it exited */
static bool jobs_worker_lost = false;
static int64 jobs_runner_job = 0;
static JobsRunnerArgs jobs_runner_args;
static bool jobs_runner_connected = false;
static bool jobs_runner_claimed = false;
static bool jobs_runner_finished = false;
/* the exit callback put the job back to the queue over a runner cap */
static bool jobs_runner_requeued_waiting = false;

pg_noreturn static void jobs_check_main(JobsRunnerArgs *args);
static MemoryContext jobs_context = NULL;

PGDLLEXPORT void rv_jobs_runner_main(Datum main_arg);
PGDLLEXPORT void rv_jobs_recover_main(Datum main_arg);
PGDLLEXPORT void rv_jobs_launcher_main(Datum main_arg);
PGDLLEXPORT void rv_jobs_dispatch_main(Datum main_arg);

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

	/* this runner's slot is free (a new runner for the job reserves anew) */
	jobs_slot_release(&jobs_runner_args);

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
		bool		no_worker = false;
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
		if (requeued)
		{
			JobsLaunch	l = jobs_start_runner(jobs_runner_job, MyDatabaseId, jobs_runner_args.role,
											  jobs_runner_args.session_role,
											  jobs_runner_args.outer_role,
											  GetTopTransactionId());

			/* over a cap: it stays queued for a dispatcher (after commit) */
			jobs_runner_requeued_waiting = (l == JOBS_WAITING);
			no_worker = (l == JOBS_NO_WORKER);
		}
		if (no_worker &&
			SPI_execute_with_args("UPDATE rvbbit.job_log SET status = 'failed', finished_at = now(), "
								  "error = 'the job runner was terminated and no background worker "
								  "slot was free to restart it' WHERE id = $1",
								  1, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update rvbbit.job_log");
		if (requeued && !no_worker)
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
 * The last exit callback of a runner (registered first, so it runs after
 * jobs_runner_exit): its runner slot is free; when jobs wait for one,
 * start a dispatcher.
 */
static void
jobs_runner_final_exit(int code, Datum arg)
{
	jobs_slot_release(&jobs_runner_args);
	if (!PostmasterIsAlive())
		return;
	if (jobs_runner_requeued_waiting)
		jobs_mark_waiting(MyDatabaseId);
	jobs_kick_dispatcher(InvalidOid);
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
 * Take the job's identity, in the runner connected as the submitting
 * session user: SET ROLE to the submitter's outer role (the session user
 * must still be allowed to, as for SET ROLE), then the job's role as the
 * current user the way a SECURITY DEFINER function does
 * (SECURITY_LOCAL_USERID_CHANGE: the job cannot SET ROLE or SET SESSION
 * AUTHORIZATION away from it).  Session user, and so the daily budget and
 * the ALTER ROLE settings, stay the submitter's; no role gains a right its
 * submitting session did not have.
 */
static void
jobs_take_role(JobsJob *job)
{
	Oid			session = jobs_connect_role(&jobs_runner_args);
	Oid			outer = jobs_runner_args.outer_role;
	Oid			cur;
	int			sec;

	/* the runner is connected as the session user; check it, never assume */
	if (GetSessionUserId() != session || GetUserId() != session)
		elog(ERROR, "job runner is connected as role %u, not as the job's session user %u",
			 GetSessionUserId(), session);
	if (!OidIsValid(jobs_runner_args.session_role))
		return;					/* a job from before 0.3: connected as its role */
	if (OidIsValid(outer) && outer != session)
	{
		bool		may;

		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(outer)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the role the job was submitted with SET ROLE no longer exists")));
#if PG_VERSION_NUM >= 160000
		may = member_can_set_role(session, outer);
#else
		may = is_member_of_role(session, outer);
#endif
		if (!may)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" that submitted the job may no longer set role \"%s\"",
							GetUserNameFromId(session, false), GetUserNameFromId(outer, false)),
					 errdetail("The job was submitted after SET ROLE %s, and the membership was revoked since.",
							   quote_identifier(GetUserNameFromId(outer, false))),
					 errhint("Submit the job again from a session that may set that role.")));
		SetCurrentRoleId(outer, superuser_arg(outer));
	}
	if (job->role != GetUserId())
	{
		GetUserIdAndSecContext(&cur, &sec);
		SetUserIdAndSecContext(job->role, sec | SECURITY_LOCAL_USERID_CHANGE);
	}
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
	char		nulls[] = "   ";	/* one per argument (and a NUL) */
	Oid			rtypes[2] = {INT8OID, JSONBOID};
	Datum		rvals[2];
	char		rnulls[] = "  ";	/* one per argument (and a NUL) */
	char	  **names;
	char	  **values;
	int			nsettings;
	int			i;
	int			nestlevel;
	int64		rows;
	bool		isnull;
	bool		cancelled;
	TupleDesc	td;

	rv_bgxact_begin(job->statement);	/* also debug_query_string */

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
	jobs_take_role(job);

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

	rv_bgworker_signals(die);
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
		else if (args->role != jobs_connect_role(args))
		{
			ReleaseSysCache(rtup);
			rtup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(jobs_connect_role(args)));
			if (!HeapTupleIsValid(rtup))
				fail = "the session user that submitted the job no longer exists";
		}
		if (fail == NULL)
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
			if (jobs_launch(&again) == JOBS_NO_WORKER)
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
 * Run the claimed job; when it fails, roll back and record the failure (an
 * interruption exits instead, for the exit callback to resume the job).
 * Its own function, so that no local of the runner's main function lives
 * across the PG_TRY's setjmp.
 */
static void
jobs_run_or_record(JobsJob *job)
{
	PG_TRY();
	{
		jobs_run(job);
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
		jobs_record_failure(job->id, message);
	}
	PG_END_TRY();
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
	rv_bgworker_signals(jobs_sigterm);
	before_shmem_exit(jobs_runner_final_exit, (Datum) 0);
	before_shmem_exit(jobs_runner_exit, (Datum) 0);

	/*
	 * Connect as the submitting session user (the job's role for a job from
	 * before 0.3): from here on this process has that role's rights and
	 * settings and no others (FATAL when the role is gone; the exit
	 * callback then starts a check runner).  jobs_take_role() then takes
	 * the job's role as the submitting session had it.
	 */
	if (!OidIsValid(args.role))
		elog(FATAL, "job runner started without a role");
	rv_BackgroundWorkerConnectAsRole(args.dboid, jobs_connect_role(&args));
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

	jobs_run_or_record(&job);
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
	Oid		   *sroles;
	Oid		   *oroles;
	bool		has_session;
	int			n;
	int			i;

	rv_bgworker_signals(die);
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
	has_session = jobs_log_has_session_role();
	vals[0] = TimestampTzGetDatum(incarnation);
	if (SPI_execute_with_args(has_session ?
							  "SELECT id, attempts, dboid, role_oid, session_role_oid, outer_role_oid "
							  "FROM rvbbit.job_log WHERE status IN ('queued', 'running') "
							  "AND server_started_at IS DISTINCT FROM $1 ORDER BY id FOR UPDATE" :
							  "SELECT id, attempts, dboid, role_oid, 0::oid, 0::oid FROM rvbbit.job_log "
							  "WHERE status IN ('queued', 'running') "
							  "AND server_started_at IS DISTINCT FROM $1 ORDER BY id FOR UPDATE",
							  1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	attempts = palloc(sizeof(int) * (n + 1));
	dbs = palloc(sizeof(Oid) * (n + 1));
	roles = palloc(sizeof(Oid) * (n + 1));
	sroles = palloc(sizeof(Oid) * (n + 1));
	oroles = palloc(sizeof(Oid) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		d;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		attempts[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		dbs[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		roles[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 5, &isnull);
		sroles[i] = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 6, &isnull);
		oroles[i] = isnull ? InvalidOid : DatumGetObjectId(d);
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
			switch (jobs_start_runner(ids[i], MyDatabaseId, roles[i], sroles[i], oroles[i],
									  GetTopTransactionId()))
			{
				case JOBS_STARTED:
					ereport(LOG,
							(errmsg("resuming rvbbit job %lld after a server restart",
									(long long) ids[i])));
					break;
				case JOBS_WAITING:
					ereport(LOG,
							(errmsg("rvbbit job %lld resumes after a server restart when a job runner is free",
									(long long) ids[i])));
					break;
				case JOBS_NO_WORKER:
					fail = "interrupted by a server restart; no background worker slot was free to resume it";
					break;
			}
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
 * Entry point of a dispatcher (dynamic, started by jobs_kick_dispatcher()
 * when a runner slot is free and jobs wait for one): start runners for the
 * queued jobs of this database, oldest first, that fit the caps.  A job
 * that has a runner already (or one being registered) holds a slot and is
 * skipped; a runner claims its job (queued -> running) before anything
 * else, so no job runs twice.  Connected as the bootstrap superuser, it
 * runs only this fixed code.
 */
void
rv_jobs_dispatch_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	JobsPriv	priv;
	Oid			types[1] = {OIDOID};
	Datum		vals[1];
	bool		has_session;
	bool		waiting = false;
	int			n;
	int			i;
	JobsRunnerArgs *jobs;

	rv_bgworker_signals(die);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_USERSET, PGC_S_SESSION);

	rv_bgxact_begin("rvbbit: starting queued jobs");
	if (!OidIsValid(jobs_log_relid()))
	{
		rv_bgxact_end(false);
		proc_exit(0);
	}
	jobs_priv_begin(&priv);
	has_session = jobs_log_has_session_role();
	vals[0] = ObjectIdGetDatum(MyDatabaseId);
	if (SPI_execute_with_args(has_session ?
							  "SELECT id, role_oid, session_role_oid, outer_role_oid FROM rvbbit.job_log "
							  "WHERE status = 'queued' AND dboid = $1 ORDER BY id" :
							  "SELECT id, role_oid, NULL::oid, NULL::oid FROM rvbbit.job_log "
							  "WHERE status = 'queued' AND dboid = $1 ORDER BY id",
							  1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.job_log");
	n = (int) SPI_processed;
	jobs = palloc0(sizeof(JobsRunnerArgs) * (n + 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		jobs[i].job_id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		jobs[i].dboid = MyDatabaseId;
		jobs[i].role = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
		d = SPI_getbinval(tup, td, 3, &isnull);
		jobs[i].session_role = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(tup, td, 4, &isnull);
		jobs[i].outer_role = isnull ? InvalidOid : DatumGetObjectId(d);
		jobs[i].xid = InvalidTransactionId;
	}
	jobs_priv_end(&priv);
	rv_bgxact_end(false);

	for (i = 0; i < n; i++)
	{
		JobsLaunch	l = jobs_launch(&jobs[i]);

		if (l == JOBS_WAITING)
			waiting = true;		/* others (of other roles) may still fit */
		else if (l == JOBS_NO_WORKER)
		{
			jobs_mark_waiting(MyDatabaseId);
			break;
		}
	}
	/* the next runner to end (or job to be queued) dispatches again */
	if (waiting)
		jobs_mark_waiting(MyDatabaseId);
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

	rv_bgworker_signals(die);
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
