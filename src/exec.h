/*-------------------------------------------------------------------------
 *
 * exec.h
 *	  The executor shared by rvbbit.run(), rvbbit._run_rows() and
 *	  rvbbit.map() (exec.c): the slots of the reorder window and the state
 *	  of one statement.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_EXEC_H
#define RV_EXEC_H

#include "access/htup.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"

#include "channel.h"
#include "map.h"

/* How a row ended: its result, or its error. */
typedef struct MapOutcome
{
	bool		failed;
	bool		budget;			/* a budget refused it: the statement fails there */
	int			sqlstate;
	char	   *result;			/* JSON text of the result */
	char	   *error;			/* the error message of a failed row */
	char	   *error_detail;
} MapOutcome;

typedef struct MapSlot
{
	bool		used;
	bool		done;
	int64		leader;			/* seq of the row this one copies, or -1 */
	int			nfollowers;
	uint64		hash;
	HeapTuple	input;			/* map: the input row */
	char	   *scope;			/* the JSON to send, until sent */
	char	   *dkey;			/* what identical rows are recognised by */
	Size		sent_bytes;		/* of its scope, while sent and not answered */
	MapOutcome	oc;
} MapSlot;

typedef struct DedupEntry
{
	uint64		hash;			/* key */
	int64		seq;
} DedupEntry;

/* dedupe_by: the outcome of a finished key, fanned out to later rows */
typedef struct MemoEntry
{
	uint64		hash;			/* key */
	char	   *dkey;
	MapOutcome	oc;
} MemoEntry;

/* Row supplier: fills *scope (the JSON scope) and *tuple; false at the end. */
typedef bool (*MapNextRow) (void *arg, StringInfo scope, HeapTuple *tuple);
/* Row consumer: called in input order. */
typedef void (*MapEmitRow) (void *arg, MapSlot *slot);

typedef struct MapExec
{
	RvChannel  *ch;
	int			parallel;
	int			window;
	MapSlot    *slots;
	HTAB	   *dedup;			/* rows in flight, by dkey hash */
	HTAB	   *memo;			/* dedupe_by: finished outcomes, by dkey hash */
	const char *next_key;		/* dedupe_by: the key of the row just read */
	double		spent;			/* dollars, from the results so far */
	bool		over_budget;
	bool		stopped_early;	/* input left unread because of the budget */
	int64		nrefused;		/* rows whose call a budget refused */
	int			refused_flags;	/* RV_RESULT_BUDGET_* seen */
	char	   *day_error;		/* the first daily-budget refusal: message, */
	char	   *day_detail;		/* detail and hint */
	char	   *day_hint;
	MemoryContext cxt;			/* window data */
	const RvOptions *opts;
	int64		nrows;
	int64		nfailed;
	int64		ncached;
	char	   *first_error;
	char	   *first_error_detail;
	int			first_sqlstate;
	/* == stream: the state of the incremental loop (map_step) == */
	MapNextRow	next_row;
	void	   *next_arg;
	int64		next_seq;		/* rows read */
	int64		emitted;		/* rows handed out */
	int			inflight;		/* rows sent and not answered */
	int64		inflight_bytes; /* their scopes' bytes */
	int64		max_inflight_bytes; /* rvbbit.max_bytes_in_flight */
	int64		batch_bytes;	/* scopes' bytes of the batch being filled */
	bool		input_eof;
	bool		end_sent;
	bool		need_send;		/* the last row read waits to be sent */
	bool		finished;		/* every row handed out */
	StringInfoData scope;
	StringInfoData bbuf;		/* MAP BATCH: the batch being filled */
	uint32		bk;				/* rows in it */
	bool		batch_ready;
	int			batch;
	int			max_inflight;
	MapSlot    *returned;		/* handed out by map_step, cleared at the next call */
	RvMapCounters counters;		/* EXPLAIN ANALYZE */
	/* == end stream == */
} MapExec;

extern void map_exec_init(MapExec *ex, const char *kind, const char *display,
						  const char *def, const RvOptions *opts, int parallel);
extern void map_exec_start(MapExec *ex, MapNextRow next_row, void *arg);
extern MapSlot *map_step(MapExec *ex);
extern void map_exec_drain(MapExec *ex);
extern void map_execute(MapExec *ex, MapNextRow next_row, MapEmitRow emit, void *arg);
extern void map_exec_finish(MapExec *ex, bool warn);
extern Datum map_slot_value(MapExec *ex, MapSlot *s, bool *isnull);

#endif							/* RV_EXEC_H */
