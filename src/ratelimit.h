/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  Request and token rate limits per provider, shared by all backends
 *	  and workers through shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_RATELIMIT_H
#define RV_RATELIMIT_H

#include "storage/lwlock.h"

extern Size rv_ratelimit_shmem_size(void);
extern void rv_ratelimit_shmem_init(LWLock *lock);

/*
 * Ask for one request of about est_tokens tokens against the limits of
 * provider key (rpm requests per minute, tpm tokens per minute; 0 = no
 * limit).  Returns true and consumes when allowed; otherwise false and
 * *wait_ms says when to ask again.
 */
extern bool rv_ratelimit_acquire(const char *key, int rpm, int tpm,
								 int est_tokens, long *wait_ms);

/* Charge tokens used beyond the estimate (may be negative). */
extern void rv_ratelimit_charge(const char *key, int tpm, int extra_tokens);

#endif							/* RV_RATELIMIT_H */
