/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the files of the rvbbit worker share (worker.c, worker_stmt.c,
 *	  worker_task.c, worker_db.c): a statement attached to the worker, a
 *	  task (one row or one MAP BATCH in its cascade), the task queues and
 *	  the worker-wide state.  Only the worker process uses these.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_WORKER_H
#define RV_WORKER_H

#include "pgjsonc.h"

#include "lib/ilist.h"
#include "storage/dsm.h"
#include "storage/shm_mq.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "budget.h"
#include "cascade.h"
#include "http.h"
#include "llm.h"
#include "request.h"
#include "rvbbit.h"

/* A provider a model can be routed to. */
typedef struct WkProvider
{
	char	   *prefix;			/* NULL for the default provider */
	char	   *api_base;
	char	   *api_key;
	RvFlavor	flavor;
	int			rpm;			/* -1: use the GUC */
	int			tpm;
} WkProvider;

/* One statement attached to this worker. */
typedef struct WkStmt
{
	dlist_node	node;
	MemoryContext cxt;
	dsm_segment *seg;
	shm_mq_handle *inq;			/* requests: backend -> worker */
	shm_mq_handle *outq;		/* results: worker -> backend */
	RvSegmentHeader *seghdr;
	RvProgress *progress;		/* or NULL */
	bool		got_header;
	bool		input_done;
	bool		closing;		/* backend gone or fatal error queued */
	bool		detached;		/* the backend went away */
	int			ntasks;			/* tasks not yet finished */
	dlist_head	outbox;			/* WkMsg waiting to be sent */

	/* from the header */
	char	   *cascade_name;
	RvCascade  *cascade;
	char	   *default_model;
	char	   *model_override; /* or NULL */
	long		timeout_ms;
	long		stall_ms;		/* rvbbit.stall_timeout of the session */
	long		retry_max_delay_ms; /* rvbbit.retry_max_delay */
	int			default_max_tokens; /* rvbbit.default_max_tokens */
	int			max_retries;
	bool		cache_read;
	bool		cache_write;
	long		cache_max_age_s;	/* -1: any age */
	int			nproviders;		/* [0] is the default provider */
	WkProvider *providers;
	json_object *prices;		/* model -> [input, output, cached input]
								 * dollars per token */
	double		budget_day;		/* rvbbit.budget_dollars_per_day of the role, 0: none */
	Oid			budget_role;	/* the role the daily budget is kept for */
	char	   *role_name;		/* for messages (looked up in a transaction) */
	double		budget_stmt;	/* budget_dollars of the statement, < 0: none */
	uint64		stmt_spent;		/* its calls' actual cost so far, micros */
	uint64		stmt_reserved;	/* expected cost of its calls in flight, micros */
	int			batch;			/* MAP BATCH n, 0 when not batching */
	uint64		fair_tag;		/* fair-queuing tag of its last ready task */
	int			parallel;		/* at most this many tasks started, 0: no cap */
	int			admitted;		/* tasks started and not yet finished */
	dlist_head	held;			/* tasks sent ahead, waiting for a place */
} WkStmt;

/* A message waiting in a statement's outbox. */
typedef struct WkMsg
{
	dlist_node	node;
	Size		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} WkMsg;

typedef enum WkTaskState
{
	WT_PREPARE,					/* render the next request */
	WT_LOOKUP,					/* look the request up in the cache */
	WT_READY,					/* waiting for a slot to send */
	WT_RETRY,					/* waiting for retry_at */
	WT_HTTP						/* in flight */
} WkTaskState;

/* One row being run through the cascade. */
typedef struct WkTask
{
	dlist_node	node;			/* in exactly one of the worker's queues */
	WkStmt	   *stmt;
	WkTaskState state;
	int64		seq;
	json_object *scope;			/* input, outputs, state, rows, row_count */
	int			cell;			/* index of the current cell */
	int			attempt;		/* schema attempts made for this cell */
	int			tries;			/* HTTP tries for the current request */
	int			cell_tries;		/* requests sent for this cell, retries and
								 * re-asks included (rvbbit.calls.attempt) */
	RvSend		send;			/* max_tokens and temperature sent */
	int			grow_cap;		/* > 0: max_tokens of the one retry after a
								 * truncated schema reply */
	bool		grown;			/* that retry was made */
	json_object *messages;		/* the conversation for the current cell */
	char	   *body;			/* malloc'd request body */
	size_t		body_len;
	char		key[65];		/* cache key of the request */
	bool		key_absent;		/* its cache lookup found no entry (a hint for
								 * wk_flush_writes; worker_db.c) */
	const char *model;			/* model name sent (no prefix) */
	char	   *model_ref;		/* malloc'd model as written (with prefix) */
	WkProvider *provider;
	TimestampTz retry_at;
	uint64		fair_tag;		/* its place in wk_ready (wk_ready_push) */
	RvHttpReq	req;
	bool		in_http;
	bool		counted;		/* holds a cluster-wide concurrency slot */
	bool		admitted;		/* counted in its statement's admitted */
	RvBudgetHold hold;			/* daily budget reserved for the call in flight */
	uint64		stmt_reserved;	/* statement budget reserved for it, micros */
	/* MAP BATCH: the task answers several rows with one request */
	int			nbatch;			/* rows in the batch, 0 for a single-row task */
	int64	   *seqs;			/* their sequence numbers */
	json_object *batch_rows;	/* their inputs (array) */
	json_object *batch_schema;	/* array of exactly nbatch cell items */
	/* accumulated for the row */
	int			calls;
	int			hits;
	int64		tokens_in;
	int64		tokens_out;
	double		cost;
	int			retries;		/* HTTP attempts that were retried */
	double		latency_ms;		/* HTTP time of the row's calls */
} WkTask;

/* worker.c: the process */
extern MemoryContext wk_loop_cxt;
extern ResourceOwner wk_resowner;
extern RvHttp *wk_http;
extern int	wk_max_conn;
extern int	wk_counted;

/* worker_task.c: the task queues (a task is in exactly one) */
extern dlist_head wk_prepare;
extern dlist_head wk_lookup;
extern dlist_head wk_ready;
extern dlist_head wk_retry;
extern dlist_head wk_inflight;
extern long wk_ratelimit_wait_ms;

extern void wk_task_prepare(WkTask *t);
extern void wk_task_response(WkTask *t, const char *content,
							 const RvLlmResponse *resp, long tin, long tout,
							 bool cached, double latency_ms);
extern void wk_task_fail(WkTask *t, int sqlstate, const char *msg,
						 const char *detail, const char *hint);
extern void wk_task_free(WkTask *t);
extern double wk_task_charge_unanswered(WkTask *t);
extern WkTask *wk_batch_task(WkStmt *s, const int64 *seqs, int k, json_object *rows, int from);
extern void wk_stmt_admit(WkTask *t, bool force);
extern void wk_ready_push(WkTask *t);
extern void wk_dispatch(void);
extern void wk_http_done(RvHttpReq *req);

/* worker_stmt.c: a statement's messages */
extern const char *wk_json_str(json_object *obj, const char *key);
extern int64 wk_json_int(json_object *obj, const char *key, int64 dflt);
extern void wk_queue_msg(WkStmt *s, char type, const RvResultHead *head,
						 const char *const *parts, int nparts);
extern void wk_stmt_fatal(WkStmt *s, int sqlstate, const char *msg,
						  const char *detail, const char *hint);
extern void wk_stmt_receive(WkStmt *s);
extern void wk_stmt_send(WkStmt *s);
extern void wk_stmt_close(WkStmt *s);

/* worker_db.c: the database side */
extern void wk_db_init(void);
extern bool wk_load_config(WkStmt *s, json_object *hdr);
extern void wk_cache_lookup(void);
extern void wk_queue_cache_write(WkTask *t, const char *content, long tin, long tout);
extern int	wk_record_call(WkTask *t, const char *status, long http_status,
						   long tin, long tout, double cost,
						   double latency_ms, const char *error);
extern void wk_record_reply(int r, const RvLlmResponse *resp);
extern void wk_flush_writes(void);

#endif							/* RV_WORKER_H */
