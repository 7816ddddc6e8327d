/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  Asynchronous statements (RUN ASYNC, MAP ... WITH (async = true)):
 *	  submitting a job, cancelling a job, and the job tables' privileges.
 *	  The job runner background worker, and resuming the jobs a server
 *	  restart interrupted, are in jobs_runner.c; this comment describes
 *	  both.
 *
 * Submitting (rv_submit_job(), in the caller's transaction) inserts a row
 * into rvbbit.job_log with the calling role (current user), the session
 * user and the SET ROLE role (outer user; 0.3's columns), its search_path
 * and its rvbbit.* session settings, and registers a dynamic background worker,
 * the job runner, for it.  The runner waits until the submitting
 * transaction ends (XactLockTableWait on its xid), so it never starts work
 * for a job that was rolled back: it then finds no row and exits quietly.
 *
 * The runner connects to the job's database AS THE SUBMITTING SESSION
 * USER (BackgroundWorkerInitializeConnectionByOid with that role), so
 * session_user and its ALTER ROLE ... SET settings, the daily budget among
 * them, are those of the submitting session, exactly like a synchronous
 * statement (opt_budget_role() in options.c: SET ROLE or SECURITY DEFINER
 * gives no second budget).  Before running the statement it takes the
 * submitter's SET ROLE role as SET ROLE would (the session user must still
 * be allowed to; otherwise the job fails) and then the job's role as
 * current user as a SECURITY DEFINER function does
 * (SECURITY_LOCAL_USERID_CHANGE, so the job cannot SET ROLE away from it):
 * every privilege check is the role's own, and nothing of the job's code
 * can reach more rights than the submitting statement had.  A job of a
 * database not updated to 0.3 records no session user and runs connected
 * as its role, as before.  It claims
 * the job (queued -> running, in its own committed transaction, before any
 * user code runs), then, in a new transaction, sets the job's search_path
 * and saved settings and runs SELECT * FROM rvbbit.sql('<statement>')
 * through SPI with rv_in_job_runner (defined in guc.c) set, which makes
 * the statement run synchronously.  The statement's effects (the as_table target), the
 * result row of a RUN without as_table (rvbbit.job_result_log) and the
 * status 'done' commit together.  An error rolls the statement back and
 * records 'failed' with the message.
 *
 * Runner caps.  At most rvbbit.max_job_runners runners (in the whole
 * cluster) and rvbbit.max_job_runners_per_role runners of one session
 * user hold a runner slot (JobsShared.slots) at once; a slot is reserved
 * before a runner is registered and released when it exits.  A job over a
 * cap stays 'queued' with no runner and its database goes on the waiting
 * list (under the slot lock, so no release is missed; a submission marks
 * it again at commit, when the row is visible).  A runner that exits, or a
 * commit that queued a waiting job, takes the waiting list and starts one
 * dispatcher per database (jobs_runner.c), which starts runners for that
 * database's oldest queued jobs that fit.  A job with a slot already held
 * is skipped, and a runner claims its job (queued -> running) before it
 * does anything, so no job runs twice.
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
#include "storage/spin.h"
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

/* Runners that rvbbit.cancel_job() signals when its transaction commits. */
#define JOBS_MAX_PENDING_KILLS 64

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

/* Databases with jobs waiting for a runner slot, remembered at once. */
#define JOBS_MAX_WAITING_DBS 64

/*
 * A runner slot: held from registering a job runner until that runner
 * exits.  rvbbit.max_job_runners (and _per_role, counted by the session
 * user the job counts against) limit how many are held at once.
 */
typedef struct JobsSlot
{
	int64		job_id;			/* 0: free */
	Oid			dboid;
	Oid			budget_role;
	uint32		gen;			/* bumped at every reservation */
} JobsSlot;

/*
 * Shared state: the incarnation of the server's shared memory, the runner
 * slots (max_worker_processes of them: no more runners can exist) and the
 * databases that have queued jobs waiting for a slot.
 */
typedef struct JobsShared
{
	TimestampTz incarnation;
	slock_t		mutex;
	int			nwaiting;
	Oid			waiting[JOBS_MAX_WAITING_DBS];
	int			nslots;
	JobsSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} JobsShared;

static JobsShared *jobs_shared = NULL;

/* submit: a job of this transaction waits for a slot (marked at commit) */
static bool jobs_wait_at_commit = false;
static Oid	jobs_wait_role = InvalidOid;	/* its session user */

/* cancel_job: runners to signal at commit */
static pid_t jobs_kill_pid[JOBS_MAX_PENDING_KILLS];
static int	jobs_kill_level[JOBS_MAX_PENDING_KILLS];
static int	jobs_nkill = 0;
static bool jobs_xact_callbacks_registered = false;

static void jobs_register_xact_callbacks(void);

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
	return MAXALIGN(add_size(offsetof(JobsShared, slots),
							 mul_size(sizeof(JobsSlot), Max(max_worker_processes, 1))));
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

	jobs_shared = ShmemInitStruct("rvbbit jobs", rv_jobs_shmem_size(), &found);
	if (!found)
	{
		memset(jobs_shared, 0, rv_jobs_shmem_size());
		jobs_shared->incarnation = GetCurrentTimestamp();
		SpinLockInit(&jobs_shared->mutex);
		jobs_shared->nslots = Max(max_worker_processes, 1);
	}
}

/* ----------------------------------------------------------------
 * Runner slots: rvbbit.max_job_runners and _per_role
 * ----------------------------------------------------------------
 */

/*
 * Reserve a runner slot for the job args describes (its budget role is
 * the session user it connects as).  Returns 1 when reserved (args->slot
 * and slot_gen set), 0 when a cap is reached (the job's database is then
 * remembered as waiting), -1 when a slot is already
 * held for the job (a runner for it exists or is being registered).
 */
static int
jobs_slot_reserve(JobsRunnerArgs *args)
{
	Oid			brole = jobs_connect_role(args);
	int			total = 0;
	int			mine = 0;
	int			free_slot = -1;
	int			cap = Min(rv_max_job_runners, jobs_shared->nslots);
	int			i;
	int			result = 0;

	SpinLockAcquire(&jobs_shared->mutex);
	for (i = 0; i < jobs_shared->nslots; i++)
	{
		JobsSlot   *sl = &jobs_shared->slots[i];

		if (sl->job_id == 0)
		{
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (sl->job_id == args->job_id && sl->dboid == args->dboid)
		{
			result = -1;
			break;
		}
		total++;
		if (sl->budget_role == brole)
			mine++;
	}
	if (result == 0 && free_slot >= 0 && total < cap && mine < rv_max_job_runners_per_role)
	{
		JobsSlot   *sl = &jobs_shared->slots[free_slot];

		sl->job_id = args->job_id;
		sl->dboid = args->dboid;
		sl->budget_role = brole;
		sl->gen++;
		args->slot = free_slot;
		args->slot_gen = sl->gen;
		result = 1;
	}
	else if (result == 0)
	{
		/*
		 * Waiting: remember the database under the same lock, so that a
		 * runner ending right now dispatches it.
		 */
		for (i = 0; i < jobs_shared->nwaiting; i++)
			if (jobs_shared->waiting[i] == args->dboid)
				break;
		if (i == jobs_shared->nwaiting && jobs_shared->nwaiting < JOBS_MAX_WAITING_DBS)
			jobs_shared->waiting[jobs_shared->nwaiting++] = args->dboid;
	}
	SpinLockRelease(&jobs_shared->mutex);
	return result;
}

/* Release the slot args holds (nothing when it holds none). */
void
jobs_slot_release(const JobsRunnerArgs *args)
{
	if (jobs_shared == NULL || args->slot < 0 || args->slot >= jobs_shared->nslots)
		return;
	SpinLockAcquire(&jobs_shared->mutex);
	if (jobs_shared->slots[args->slot].gen == args->slot_gen)
		jobs_shared->slots[args->slot].job_id = 0;
	SpinLockRelease(&jobs_shared->mutex);
}

/* Remember that database dboid has queued jobs waiting for a slot. */
void
jobs_mark_waiting(Oid dboid)
{
	int			i;

	if (jobs_shared == NULL)
		return;
	SpinLockAcquire(&jobs_shared->mutex);
	for (i = 0; i < jobs_shared->nwaiting; i++)
		if (jobs_shared->waiting[i] == dboid)
			break;
	if (i == jobs_shared->nwaiting && jobs_shared->nwaiting < JOBS_MAX_WAITING_DBS)
		jobs_shared->waiting[jobs_shared->nwaiting++] = dboid;
	SpinLockRelease(&jobs_shared->mutex);
}

/*
 * When databases have jobs waiting and a runner slot is free, take them
 * all off the list and register a dispatcher for each (jobs_runner.c),
 * which starts its database's oldest queued jobs that fit the caps and
 * puts the database back on the list when some still wait.  Called when a
 * runner ends (brole invalid) and when a transaction that queued a
 * waiting job of session user brole commits (only when that role's job
 * could start now: a role at its cap starts no dispatchers by submitting):
 * each such event is one pass, so nothing loops.  Never raises an error.
 */
void
jobs_kick_dispatcher(Oid brole)
{
	Oid			dbs[JOBS_MAX_WAITING_DBS];
	int			ndbs = 0;
	int			used = 0;
	int			mine = 0;
	int			i;

	if (jobs_shared == NULL)
		return;
	SpinLockAcquire(&jobs_shared->mutex);
	for (i = 0; i < jobs_shared->nslots; i++)
		if (jobs_shared->slots[i].job_id != 0)
		{
			used++;
			if (OidIsValid(brole) && jobs_shared->slots[i].budget_role == brole)
				mine++;
		}
	if (jobs_shared->nwaiting > 0 && used < Min(rv_max_job_runners, jobs_shared->nslots) &&
		(!OidIsValid(brole) || mine < rv_max_job_runners_per_role))
	{
		ndbs = jobs_shared->nwaiting;
		memcpy(dbs, jobs_shared->waiting, sizeof(Oid) * ndbs);
		jobs_shared->nwaiting = 0;
	}
	SpinLockRelease(&jobs_shared->mutex);

	for (i = 0; i < ndbs; i++)
	{
		BackgroundWorker worker;
		BackgroundWorkerHandle *handle;

		rv_bgworker_prepare(&worker, BgWorkerStart_RecoveryFinished, BGW_NEVER_RESTART,
							"rv_jobs_dispatch_main", "rvbbit job dispatcher");
		snprintf(worker.bgw_name, BGW_MAXLEN, "rvbbit job dispatcher for database %u", dbs[i]);
		worker.bgw_main_arg = ObjectIdGetDatum(dbs[i]);
		worker.bgw_notify_pid = 0;
		if (!RegisterDynamicBackgroundWorker(&worker, &handle))
			jobs_mark_waiting(dbs[i]);	/* the next runner to end tries again */
	}
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
TimestampTz
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
Oid
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
void
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
void
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
jobs_register_runner(const JobsRunnerArgs *args)
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

/* Register the check runner that args describes (it holds no slot). */
bool
jobs_start_runner_args(const JobsRunnerArgs *args)
{
	JobsRunnerArgs a = *args;

	a.slot = -1;
	return jobs_register_runner(&a);
}

/*
 * Start a (normal) runner for the job args describes, within the caps: a
 * runner slot is reserved and the runner registered with it; over a cap
 * the job's database is remembered as waiting (the caller leaves the job
 * queued).  args->slot is set.
 */
JobsLaunch
jobs_launch(JobsRunnerArgs *args)
{
	int			r;

	args->check = false;
	args->slot = -1;
	r = jobs_slot_reserve(args);
	if (r < 0)
		return JOBS_STARTED;
	if (r == 0)
		return JOBS_WAITING;
	if (!jobs_register_runner(args))
	{
		jobs_slot_release(args);
		return JOBS_NO_WORKER;
	}
	return JOBS_STARTED;
}

/*
 * Register a job runner for job_id of role in database dboid that waits
 * for transaction xid first.  It connects as session_role (the submitting
 * session user; invalid: as role) and takes outer_role and role as the
 * submitting session had them.  Returns false when no background worker
 * slot is free.  The runner is not our child: it outlives this backend.
 */
JobsLaunch
jobs_start_runner(int64 job_id, Oid dboid, Oid role, Oid session_role,
				  Oid outer_role, TransactionId xid)
{
	JobsRunnerArgs args;

	memset(&args, 0, sizeof(args));
	args.job_id = job_id;
	args.dboid = dboid;
	args.role = role;
	args.session_role = session_role;
	args.outer_role = outer_role;
	args.xid = xid;
	args.check = false;
	args.nchecks = 0;
	return jobs_launch(&args);
}

/* The role a runner started with args connects as. */
Oid
jobs_connect_role(const JobsRunnerArgs *args)
{
	return OidIsValid(args->session_role) ? args->session_role : args->role;
}

/*
 * Whether rvbbit.job_log has 0.3's session_role_oid and outer_role_oid
 * columns (a database not yet updated has not).
 */
bool
jobs_log_has_session_role(void)
{
	Oid			rel = jobs_log_relid();

	return OidIsValid(rel) && get_attnum(rel, "session_role_oid") != InvalidAttrNumber &&
		get_attnum(rel, "outer_role_oid") != InvalidAttrNumber;
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
	bool		has_session = jobs_log_has_session_role();
	Oid			session_role = has_session ? GetSessionUserId() : InvalidOid;
	Oid			outer_role = has_session ? GetOuterUserId() : InvalidOid;
	Oid			connect_role = has_session ? session_role : role;
	char	   *search_path = pstrdup(GetConfigOption("search_path", false, false));
	char	   *settings = jobs_capture_settings();
	JobsPriv	priv;
	Oid			types[9] = {OIDOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
	OIDOID, OIDOID};
	Datum		vals[9];
	char		nulls[] = "         ";	/* one per argument (and a NUL) */
	bool		isnull;
	int64		job_id;

	if (RV_BGW_NEEDS_LOGIN)
	{
		/*
		 * The runner is a real connection of the session user (of the
		 * job's role in a database not updated to 0.3); before PostgreSQL
		 * 17 a background worker cannot connect as a role without LOGIN.
		 * A session user normally has LOGIN; SET ROLE to a role without
		 * it is fine.
		 */
		HeapTuple	rtup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(connect_role));
		bool		canlogin;

		if (!HeapTupleIsValid(rtup))
			elog(ERROR, "cache lookup failed for role %u", connect_role);
		canlogin = ((Form_pg_authid) GETSTRUCT(rtup))->rolcanlogin;
		ReleaseSysCache(rtup);
		if (!canlogin)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("role \"%s\" cannot submit jobs because it cannot log in",
							GetUserNameFromId(connect_role, false)),
					 errdetail("A job runs in a background connection of the submitting session user, and this PostgreSQL version refuses such connections for roles without LOGIN."),
					 errhint(has_session ?
							 "Submit the job from a session of a role that has LOGIN (SET ROLE to a role without it is fine)." :
							 "Update the extension with ALTER EXTENSION rvbbit UPDATE, or grant the role LOGIN.")));
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
	vals[7] = ObjectIdGetDatum(session_role);
	vals[8] = ObjectIdGetDatum(outer_role);

	SPI_connect();
	jobs_priv_begin(&priv);
	if (SPI_execute_with_args(has_session ?
							  "INSERT INTO rvbbit.job_log (role_oid, dboid, statement, search_path, "
							  "settings, target, status, server_started_at, session_role_oid, outer_role_oid) "
							  "VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'queued', $7, $8, $9) RETURNING id" :
							  "INSERT INTO rvbbit.job_log (role_oid, dboid, statement, search_path, "
							  "settings, target, status, server_started_at) "
							  "VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'queued', $7) RETURNING id",
							  has_session ? 9 : 7, types, vals, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not insert into rvbbit.job_log");
	job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	jobs_priv_end(&priv);
	SPI_finish();

	switch (jobs_start_runner(job_id, MyDatabaseId, role, session_role, outer_role,
							  GetTopTransactionId()))
	{
		case JOBS_STARTED:
			break;
		case JOBS_WAITING:
			jobs_register_xact_callbacks();
			jobs_wait_at_commit = true;
			jobs_wait_role = connect_role;
			ereport(NOTICE,
					(errmsg("job %lld is queued until a job runner is free", (long long) job_id),
					 errdetail("At most %d job runners run at once (rvbbit.max_job_runners), at most %d for one role (rvbbit.max_job_runners_per_role).",
							   rv_max_job_runners, rv_max_job_runners_per_role)));
			break;
		case JOBS_NO_WORKER:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("could not start a job runner"),
					 errdetail("All background worker slots are in use."),
					 errhint("Wait for running jobs to finish, or raise \"max_worker_processes\" and restart the server.")));
	}
	return job_id;
}

/* the columns of rvbbit._submit_job() */
#define SUBMIT_JOB_COLS 1

/*
 * rvbbit._submit_job(statement text) RETURNS TABLE (job_id bigint): plan
 * the statement (which checks it), find its as_table target, and submit
 * it.  An async MAP must have as_table.  Returns one row.
 */
Datum
rvbbit_submit_job(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *statement;
	char	   *target = NULL;
	RvPlannedStatement ps;
	Datum		values[SUBMIT_JOB_COLS];
	bool		nulls[SUBMIT_JOB_COLS];
	int			i = 0;

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

	/* one bigint column: not a row type, so the expected descriptor */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	memset(nulls, 0, sizeof(nulls));
	values[i++] = Int64GetDatum(rv_submit_job(statement, target));
	Assert(i == SUBMIT_JOB_COLS);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
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
			if (jobs_wait_at_commit)
			{
				/* the waiting job is visible now: a dispatcher can see it */
				jobs_wait_at_commit = false;
				jobs_mark_waiting(MyDatabaseId);
				jobs_kick_dispatcher(jobs_wait_role);
			}
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
			jobs_wait_at_commit = false;
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

/* Register the transaction callbacks once per backend. */
static void
jobs_register_xact_callbacks(void)
{
	if (!jobs_xact_callbacks_registered)
	{
		RegisterXactCallback(jobs_xact_callback, NULL);
		RegisterSubXactCallback(jobs_subxact_callback, NULL);
		jobs_xact_callbacks_registered = true;
	}
}

/* Signal runner pid when the current transaction commits. */
static void
jobs_kill_at_commit(pid_t pid)
{
	jobs_register_xact_callbacks();
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
