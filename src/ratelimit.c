/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Token buckets per provider in shared memory.
 *
 * Each provider key (the base URL of a provider, or "default") has two
 * buckets: requests per minute and tokens per minute.  A bucket holds a
 * burst of one second's allowance (at least one request) and refills at
 * (limit - burst) per minute, so that no sliding 60-second window ever sees
 * more than the limit: burst + refill over 60 s = limit.
 * All workers of the cluster draw from the same buckets, so the limit is
 * for the cluster, not for a session.  The buckets are protected by their
 * own LWLock, held only for the arithmetic.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "ratelimit.h"

#define RL_MAX_KEYS 64
#define RL_KEY_LEN 128

typedef struct RlBucket
{
	char		key[RL_KEY_LEN];
	double		requests;		/* available requests */
	double		tokens;			/* available tokens */
	int			rpm;			/* limits the buckets were last used with */
	int			tpm;
	TimestampTz last;
} RlBucket;

typedef struct RlShared
{
	LWLock	   *lock;
	int			nkeys;
	RlBucket	buckets[RL_MAX_KEYS];
} RlShared;

static RlShared *rl_shared = NULL;

Size
rv_ratelimit_shmem_size(void)
{
	return MAXALIGN(sizeof(RlShared));
}

/* Create or attach the shared buckets; caller holds AddinShmemInitLock. */
void
rv_ratelimit_shmem_init(LWLock *lock)
{
	bool		found;

	rl_shared = ShmemInitStruct("rvbbit ratelimit", sizeof(RlShared), &found);
	if (!found)
	{
		memset(rl_shared, 0, sizeof(RlShared));
		rl_shared->lock = lock;
	}
}

/* The burst size of a bucket with a per-minute limit. */
static double
rl_burst(int limit)
{
	return Max(1.0, floor(limit / 60.0));
}

/* Find or create the bucket of key; caller holds the lock exclusively. */
static RlBucket *
rl_find(const char *key, int rpm, int tpm, TimestampTz now)
{
	int			i;
	RlBucket   *b;

	for (i = 0; i < rl_shared->nkeys; i++)
		if (strncmp(rl_shared->buckets[i].key, key, RL_KEY_LEN - 1) == 0)
			return &rl_shared->buckets[i];
	if (rl_shared->nkeys < RL_MAX_KEYS)
		b = &rl_shared->buckets[rl_shared->nkeys++];
	else
		b = &rl_shared->buckets[RL_MAX_KEYS - 1];	/* share the last one */
	memset(b, 0, sizeof(RlBucket));
	strlcpy(b->key, key, RL_KEY_LEN);
	b->requests = rl_burst(rpm);
	b->tokens = rl_burst(tpm);
	b->rpm = rpm;
	b->tpm = tpm;
	b->last = now;
	return b;
}

/* Refill a bucket for the time since it was last used. */
static void
rl_refill(RlBucket *b, int rpm, int tpm, TimestampTz now)
{
	double		secs = (double) (now - b->last) / 1000000.0;

	if (secs < 0)
		secs = 0;
	b->rpm = rpm;
	b->tpm = tpm;
	b->requests = Min(rl_burst(rpm),
					  b->requests + secs * (rpm - rl_burst(rpm)) / 60.0);
	b->tokens = Min(rl_burst(tpm),
					b->tokens + secs * (tpm - rl_burst(tpm)) / 60.0);
	b->last = now;
}

bool
rv_ratelimit_acquire(const char *key, int rpm, int tpm, int est_tokens,
					 long *wait_ms)
{
	TimestampTz now;
	RlBucket   *b;
	double		need_wait = 0;

	*wait_ms = 0;
	if ((rpm <= 0 && tpm <= 0) || rl_shared == NULL)
		return true;
	if (rpm <= 0)
		rpm = INT_MAX / 2;
	if (tpm <= 0)
		tpm = INT_MAX / 2;

	now = GetCurrentTimestamp();
	LWLockAcquire(rl_shared->lock, LW_EXCLUSIVE);
	b = rl_find(key, rpm, tpm, now);
	rl_refill(b, rpm, tpm, now);
	if (b->requests < 1.0)
		need_wait = (1.0 - b->requests) * 60000.0 /
			Max(1.0, rpm - rl_burst(rpm));
	if (b->tokens < est_tokens && b->tokens < rl_burst(tpm))
		need_wait = Max(need_wait, (Min(est_tokens, rl_burst(tpm)) - b->tokens) *
						60000.0 / Max(1.0, tpm - rl_burst(tpm)));
	if (need_wait <= 0)
	{
		b->requests -= 1.0;
		b->tokens -= est_tokens;
	}
	LWLockRelease(rl_shared->lock);

	if (need_wait > 0)
	{
		*wait_ms = (long) need_wait + 1;
		return false;
	}
	return true;
}

void
rv_ratelimit_charge(const char *key, int tpm, int extra_tokens)
{
	int			i;

	if (tpm <= 0 || rl_shared == NULL || extra_tokens == 0)
		return;
	LWLockAcquire(rl_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < rl_shared->nkeys; i++)
	{
		RlBucket   *b = &rl_shared->buckets[i];

		if (strncmp(b->key, key, RL_KEY_LEN - 1) == 0)
		{
			b->tokens -= extra_tokens;
			break;
		}
	}
	LWLockRelease(rl_shared->lock);
}
