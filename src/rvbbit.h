/*-------------------------------------------------------------------------
 *
 * rvbbit.h
 *	  Declarations shared by the server-side parts of rvbbit: GUC
 *	  variables, the shared-memory state (worker slots, the statement inbox,
 *	  progress entries), and the backend <-> worker channel protocol.
 *
 * The pure parsers (template, jsonschema, cascade, llm, syntax) do not
 * include this file; see rverror.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RVBBIT_H
#define RVBBIT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/lwlock.h"
#include "storage/shm_mq.h"

#include "compat.h"

/* Limits of the shared-memory arrays. */
#define RV_MAX_WORKERS		32	/* worker slots, all databases */
#define RV_MAX_PENDING		64	/* statements waiting for a worker to attach */
#define RV_MAX_PROGRESS		128 /* running statements shown in rvbbit.progress */
#define RV_NAME_LEN			64

/* Size of each shm_mq ring in a statement's DSM segment. */
#define RV_QUEUE_SIZE		(256 * 1024)

/*
 * Magic number of the statement DSM segment's table of contents (a
 * shm_toc; see RvSegmentHeader).  A new layout gets a new number.
 */
#define RV_SHM_MAGIC		0x52565432	/* "RVT2" */

/* GUC variables (guc.c). */
extern char *rv_api_base;
extern char *rv_api_key;
extern int	rv_api_flavor;
extern char *rv_default_model;
extern int	rv_request_timeout_ms;
extern char *rv_cascade_path;
extern int	rv_max_concurrency;
extern int	rv_workers_per_database;
extern int	rv_worker_idle_timeout_s;
extern int	rv_max_retries;
extern int	rv_default_parallel;
extern int	rv_default_limit;
extern int	rv_max_bytes_in_flight_kb;
extern int	rv_max_connections_per_worker;
extern bool rv_builtin_http;
extern char *rv_ca_file;
extern int	rv_requests_per_minute;
extern int	rv_max_job_runners;
extern int	rv_max_job_runners_per_role;
extern int	rv_tokens_per_minute;
extern double rv_budget_dollars_per_day;
extern int	rv_stall_timeout_ms;
extern int	rv_retry_max_delay_ms;
extern int	rv_default_max_tokens;

/* One pooled worker.  Protected by RvShared->lock. */
typedef struct RvWorkerSlot
{
	Oid			dboid;			/* InvalidOid: slot free */
	pid_t		pid;			/* 0 while starting */
	bool		exiting;		/* taking no new statements */
	uint64		generation;		/* changes each time the slot is reused */
	int			nstatements;	/* statements assigned (pending or attached) */
	Latch	   *latch;			/* the worker's process latch, once running */
	TimestampTz started_at;
} RvWorkerSlot;

/* A statement waiting for its worker to attach.  Protected by lock. */
typedef struct RvPending
{
	bool		used;
	int			worker;			/* index into workers[] */
	dsm_handle	handle;
} RvPending;

/* Live counters of one running statement (rvbbit.progress). */
/*
 * in_flight holds the owner's tag (the low 32 bits of its statement id) in
 * its high half and the count in its low half, so that a worker's update
 * for a statement whose entry was released and claimed again is ignored
 * (rv_progress_in_flight).  The other counters are updated by the worker
 * only while owner is its statement (rv_progress_add).
 */
#define RV_PROGRESS_TAG(statement_id) ((uint64) (uint32) (statement_id) << 32)
#define RV_PROGRESS_COUNT(v) ((v) & UINT64CONST(0xFFFFFFFF))

typedef struct RvProgress
{
	pg_atomic_uint32 used;		/* 0 free, 1 in use */
	pg_atomic_uint64 owner;		/* statement id of the owner, 0: none */
	pid_t		pid;
	Oid			dboid;
	Oid			roleid;
	int64		statement_id;
	TimestampTz started_at;
	char		cascade[RV_NAME_LEN];
	char		kind[16];		/* "map", "run" */
	int			parallel;
	pg_atomic_uint64 rows_read;
	pg_atomic_uint64 rows_done;
	pg_atomic_uint64 rows_failed;
	pg_atomic_uint64 in_flight;
	pg_atomic_uint64 cache_hits;
	pg_atomic_uint64 llm_calls;
	pg_atomic_uint64 tokens_in;
	pg_atomic_uint64 tokens_out;
	pg_atomic_uint64 cost_micros;	/* dollars x 1e6 */
} RvProgress;

typedef struct RvShared
{
	LWLock	   *lock;
	pg_atomic_uint64 next_statement_id;
	pg_atomic_uint32 http_in_flight;	/* cluster-wide, for max_concurrency */
	RvWorkerSlot workers[RV_MAX_WORKERS];
	RvPending	pending[RV_MAX_PENDING];
	RvProgress	progress[RV_MAX_PROGRESS];
	/* rate limiter (ratelimit.c) and daily budgets (budget.c) have their own */
} RvShared;

extern RvShared *rv_shared;

/* guc.c */
extern void rv_define_gucs(void);
/* shmem.c */
extern void rv_shmem_init(void);
extern void rv_require_shared(void);
/* catalog.c */
extern bool rv_sees_all(Oid role);
/* providers.c */
extern void rv_log_hook_init(void);
extern void rv_secret_register(const char *key);
extern char *rv_redact_secrets(const char *text);

/*
 * guc.c: true in a job runner (jobs_runner.c sets it), which executes the
 * statement of an async job (RUN ASYNC, MAP ... WITH (async = true))
 * synchronously.
 */
extern bool rv_in_job_runner;
/*
 * channel.c: set when "rvbbit worker exited while the statement was
 * running" is raised (a job runner resumes its job instead of failing it)
 */
extern bool rv_worker_exited;
/* jobs.c: submit an async statement; returns the job id */
extern int64 rv_submit_job(const char *statement, const char *target);
/* jobs.c: shared memory and the jobs launcher (from _PG_init, preloaded) */
extern void rv_jobs_init(void);
extern Size rv_jobs_shmem_size(void);
extern void rv_jobs_shmem_init(void);

/* gateway_sup.c: the rvbbit.gateway_* GUCs and the gateway's supervisor */
extern void rv_gateway_init(void);

/*
 * Channel protocol.  Each statement has a DSM segment with two shm_mq rings:
 * requests (backend -> worker) and results (worker -> backend).  Every
 * message starts with one type byte.
 *
 * Backend -> worker:
 *	 'H' header: JSON object (rv_header_json() in options.c writes it,
 *		 wk_stmt_header() in worker_stmt.c reads it)
 *	 'R' row: int64 seq, then the scope JSON text (NUL-terminated)
 *	 'B' batch (MAP BATCH): uint32 k, then k times (int64 seq, uint32 len,
 *		 the scope JSON of len bytes)
 *	 'E' end of input
 * Worker -> backend:
 *	 'O' result: RvResultHead, then the result JSON text (NUL-terminated)
 *	 'X' error of one row: RvResultHead, then message\0detail\0hint\0
 *	 'F' fatal error of the statement: RvResultHead (seq -1), then
 *		 message\0detail\0hint\0
 */
#define RV_MSG_HEADER	'H'
#define RV_MSG_ROW		'R'
#define RV_MSG_BATCH	'B'
#define RV_MSG_END		'E'
#define RV_MSG_RESULT	'O'
#define RV_MSG_ROWERR	'X'
#define RV_MSG_FATAL	'F'

typedef struct RvResultHead
{
	int64		seq;
	int32		sqlstate;		/* for errors */
	int32		llm_calls;		/* HTTP calls made for this row */
	int32		cache_hits;		/* calls answered from the cache */
	int32		flags;			/* RV_RESULT_* */
	int32		retries;		/* HTTP attempts retried for this row */
	int64		tokens_in;
	int64		tokens_out;
	double		cost;
	double		latency_ms;		/* the row's HTTP calls, summed */
} RvResultHead;

/* RvResultHead.flags: the row was refused, not sent, because of a budget */
#define RV_RESULT_BUDGET_STMT	0x1 /* the statement's budget_dollars */
#define RV_RESULT_BUDGET_DAY	0x2 /* the role's rvbbit.budget_dollars_per_day */

/*
 * A statement segment is laid out by a shm_toc with magic RV_SHM_MAGIC
 * (channel.c creates it, the worker attaches), with three entries: the
 * statement's header, and the two queues of RV_QUEUE_SIZE bytes.
 */
#define RV_TOC_HEADER		1	/* RvSegmentHeader */
#define RV_TOC_REQUESTS		2	/* shm_mq: backend -> worker */
#define RV_TOC_RESULTS		3	/* shm_mq: worker -> backend */
#define RV_TOC_KEYS			3

typedef struct RvSegmentHeader
{
	int			progress_index; /* -1 when none */
	Oid			roleid;
	Oid			dboid;
	pid_t		backend_pid;
	int64		statement_id;
} RvSegmentHeader;

/* worker.c: the pooled worker's entry point */
extern PGDLLEXPORT void rv_worker_main(Datum main_arg);

/* bgw.c: what rvbbit's background processes share */
extern void rv_bgworker_prepare(BackgroundWorker *worker, BgWorkerStartTime start,
								int restart_time, const char *function,
								const char *type);
extern void rv_bgworker_signals(void (*sigterm) (SIGNAL_ARGS));
extern void rv_bgxact_begin(const char *activity);
extern void rv_bgxact_end(bool abort);
extern void rv_bgxact_abort(void);

/* pool.c: assigning statements to workers */
extern int	rv_pool_submit(dsm_handle handle, uint64 *generation);
extern bool rv_pool_worker_alive(int worker, uint64 generation);
extern void rv_pool_release(int worker, uint64 generation);
extern void rv_pool_slot_reset(RvWorkerSlot *w, Oid dboid);

/* pool.c: the progress entries (rvbbit._progress() in progress.c reads them) */
extern int	rv_progress_acquire(const char *kind, const char *cascade, int parallel,
								int64 statement_id);
extern void rv_progress_release(int index, int64 statement_id);
extern RvProgress *rv_progress_get(int index);
extern void rv_progress_add(RvProgress *p, int64 statement_id,
							pg_atomic_uint64 *counter, uint64 delta);
extern void rv_progress_in_flight(RvProgress *p, int64 statement_id, int delta);

/* rewrite.c: the post_parse_analyze hook */
extern void rv_hooks_init(void);
extern void rv_mapscan_init(void);	/* mapscan.c */

#endif							/* RVBBIT_H */
