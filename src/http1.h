/*-------------------------------------------------------------------------
 *
 * http1.h
 *	  rvbbit's own HTTP/1.1 client, for plain http:// to an IP address.
 *
 * Private to http.c, which routes a request here when it can (see
 * rv_h1_parse_url) and hands the events of this client's sockets, which
 * share its epoll set, to rv_h1_event.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_HTTP1_H
#define RV_HTTP1_H

#include "http.h"

typedef struct H1Pool H1Pool;

/* epoll data of this client's sockets: the tag and the descriptor */
#define RV_H1_TAG ((uint64) 1 << 40)

/* a finished request: http.c takes it off its count and queues it */
typedef void (*RvH1DoneFn) (void *arg, RvHttpReq *req);

extern H1Pool *rv_h1_create(int epfd, int max_connections, RvH1DoneFn done, void *arg);
extern void rv_h1_destroy(H1Pool *pool);

/*
 * Whether url is http://IP[:port]/path that this client serves (no user
 * name, no fragment, nothing that needs escaping).  Fills req's address.
 */
extern bool rv_h1_parse_url(RvHttpReq *req, const char *url);

/* Start req (its address parsed); false with req->errbuf set on failure. */
extern bool rv_h1_start(H1Pool *pool, RvHttpReq *req, const char *url,
						const char *const *headers, int nheaders,
						const char *user_agent,
						const char *body, size_t body_len, long timeout_ms,
						size_t resp_limit);
/* true when req was in flight (it no longer is) */
extern bool rv_h1_cancel(H1Pool *pool, RvHttpReq *req);
extern void rv_h1_event(H1Pool *pool, int fd, uint32 events);

/* Deadline (monotonic µs) of the next timer check, -1: none; and the check */
extern int64 rv_h1_next_timer(H1Pool *pool);
extern void rv_h1_timers(H1Pool *pool, int64 now_us);

/* shared with http.c */
extern int64 rv_http_now_us(void);
extern long rv_http_retry_after(const char *value, size_t len);

#endif							/* RV_HTTP1_H */
