/*-------------------------------------------------------------------------
 *
 * channel.h
 *	  The backend's end of a statement channel: a DSM segment with two
 *	  shm_mq rings shared with an rvbbit worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_CHANNEL_H
#define RV_CHANNEL_H

#include "lib/stringinfo.h"
#include "rvbbit.h"

typedef struct RvChannel
{
	dsm_segment *seg;
	shm_mq_handle *req;			/* we send */
	shm_mq_handle *res;			/* we receive */
	int			worker;
	uint64		generation;
	int			progress_index;
	RvProgress *progress;
	int64		statement_id;
	bool		worker_done;	/* the worker detached from the result queue */
	/* a message partly sent (shm_mq nowait semantics) */
	StringInfoData pending;
	bool		has_pending;
} RvChannel;

/*
 * Create the segment, hand it to a worker, and queue the header message.
 * kind is "run" or "map".  The channel is freed with the segment at the
 * end of the transaction (also on error); rv_channel_close() frees it
 * earlier.
 */
extern RvChannel *rv_channel_open(const char *kind, const char *cascade,
								  int parallel, const char *header_json);

/*
 * Try to send a message: the type byte, the sequence number for rows, then
 * the payload.  Returns false when the queue is full: call again later with the same arguments.
 */
extern bool rv_channel_try_send(RvChannel *ch, char type, int64 seq,
								const char *payload, Size len);

/*
 * Try to receive a message.  Returns true with *data and *len (valid until the
 * next call), false when there is none now or the worker detached.  Once
 * the worker detached, ch->worker_done is set and every call returns
 * false: the caller, having handled what it received, raises
 * rv_channel_worker_exited() if it still expected results.
 */
extern bool rv_channel_try_receive(RvChannel *ch, char **data, Size *len);

/* Sleep until the latch is set or a second passes; checks for interrupts. */
extern void rv_channel_wait(RvChannel *ch);

/*
 * Raise "rvbbit worker exited while the statement was running" and set
 * rv_worker_exited (rvbbit.h).
 */
pg_noreturn extern void rv_channel_worker_exited(void);

/* Raise the error carried by an 'X' or 'F' message. */
extern void rv_channel_raise(const char *data, Size len, int elevel);

extern void rv_channel_close(RvChannel *ch);

#endif							/* RV_CHANNEL_H */
