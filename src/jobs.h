/*-------------------------------------------------------------------------
 *
 * jobs.h
 *	  What jobs.c (submit, cancel) and jobs_runner.c (the runner, recovery
 *	  and launcher workers) share.  See the header comment of jobs.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_JOBS_H
#define RV_JOBS_H

#include "access/transam.h"
#include "utils/timestamp.h"

/* How often a job may be started before an interruption fails it. */
#define JOBS_MAX_ATTEMPTS	3

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

/* What a job runner is started with (bgw_extra). */
typedef struct JobsRunnerArgs
{
	int64		job_id;
	Oid			dboid;
	Oid			role;			/* the job's role (current user at submission) */
	Oid			session_role;	/* the submitting session user, connected as;
								 * invalid: connect as role (jobs before 0.3) */
	Oid			outer_role;		/* the submitter's SET ROLE role (or invalid) */
	TransactionId xid;			/* wait until it ends; invalid: don't */
	bool		check;			/* a check runner (see the header comment) */
	int			nchecks;		/* check runners started for this job so far */
	int			slot;			/* its runner slot (jobs_launch), or -1 */
	uint32		slot_gen;		/* that slot's generation when reserved */
} JobsRunnerArgs;

/* What jobs_launch() did. */
typedef enum JobsLaunch
{
	JOBS_STARTED,				/* a runner was registered (or one exists) */
	JOBS_WAITING,				/* over rvbbit.max_job_runners(_per_role):
								 * the job stays queued */
	JOBS_NO_WORKER				/* no background worker slot was free */
} JobsLaunch;

/* Saved identity while acting as the owner of the job tables. */
typedef struct JobsPriv
{
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
} JobsPriv;

extern TimestampTz jobs_incarnation(void);
extern Oid	jobs_log_relid(void);
extern void jobs_priv_begin(JobsPriv *priv);
extern void jobs_priv_end(JobsPriv *priv);
extern bool jobs_start_runner_args(const JobsRunnerArgs *args);
extern JobsLaunch jobs_start_runner(int64 job_id, Oid dboid, Oid role, Oid session_role,
									Oid outer_role, TransactionId xid);
extern JobsLaunch jobs_launch(JobsRunnerArgs *args);
extern void jobs_slot_release(const JobsRunnerArgs *args);
extern void jobs_mark_waiting(Oid dboid);
extern void jobs_kick_dispatcher(Oid brole);
extern bool jobs_log_has_session_role(void);
extern Oid	jobs_connect_role(const JobsRunnerArgs *args);

#endif							/* RV_JOBS_H */
