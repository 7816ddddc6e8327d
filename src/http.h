/*-------------------------------------------------------------------------
 *
 * http.h
 *	  Concurrent HTTP requests with libcurl multi, for the rvbbit worker.
 *
 * Only the worker includes this.  The multi handle reports its sockets to
 * an epoll set of its own; the worker adds that epoll descriptor to its
 * WaitEventSet (readable when any socket is ready), so one wait covers the
 * latch, postmaster death and every HTTP connection.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_HTTP_H
#define RV_HTTP_H

#include <sys/socket.h>

#include <curl/curl.h>

typedef struct RvHttp RvHttp;

typedef struct RvHttpReq
{
	/* set by the caller */
	void	   *owner;			/* caller's object, returned with the result */
	long		stall_ms;		/* > 0: abandon the transfer when no byte
								 * arrives for this long (curl's low-speed
								 * limit: under 1 byte/s for stall_ms) */

	/* owned by http.c, valid after completion */
	CURL	   *easy;
	struct HttpHandle *handle;	/* the easy handle and its options */
	struct HttpHeaders *headers;	/* the header list (shared) */
	char	   *body;			/* request body (malloc'd copy) */
	char	   *resp;			/* response body (malloc'd, NUL-terminated) */
	size_t		resp_len;
	size_t		resp_cap;
	size_t		resp_limit;		/* larger responses fail */
	bool		too_big;
	long		status;			/* HTTP status, 0 if none */
	long		retry_after_ms; /* from Retry-After (seconds or HTTP-date),
								 * -1 if none */
	CURLcode	code;			/* CURLE_OK or the transfer error */
	bool		stalled;		/* code is CURLE_OPERATION_TIMEDOUT because
								 * of stall_ms, not the total timeout */
	bool		connected;		/* a connection to the server was made */
	bool		sent;			/* the request was written to the server */
	bool		on_complete;	/* on http.c's list of whole bodies */
	struct RvHttpReq *next_complete;
	bool		closed_early;	/* HTTP/2: the server closed the stream while
								 * the body was still being sent (see
								 * http_collect) */
	char		errbuf[CURL_ERROR_SIZE];
	double		latency_ms;		/* from curl's total time */
	bool		held;			/* waiting for the first TLS handshake (http.c) */
	bool		in_multi;		/* easy is added to the multi handle (http.c) */
	struct RvHttp *http;		/* the context that started it (http.c) */
	struct RvHttpReq *next_done;	/* also links the held requests */

	/* rvbbit's own HTTP/1.1 client (http1.c) */
	bool		h1;				/* carried by http1.c, not by curl */
	bool		h1_queued;		/* waiting for a connection */
	bool		h1_fresh;		/* needs a new connection: a reused one died */
	bool		h1_got;			/* a byte of the reply arrived */
	struct H1Conn *h1_conn;		/* the connection carrying it */
	struct RvHttpReq *h1_next;	/* the queue waiting for connections */
	char	   *h1_out;			/* the request: head, then body */
	size_t		h1_out_len;
	size_t		h1_head_len;	/* zeroed when freed: it holds the key */
	int64		h1_start_us;
	int64		h1_progress_us; /* when a byte was last sent or received */
	int64		h1_connect_us;	/* when the current connect began */
	long		h1_timeout_ms;
	long		h1_connect_ms;
	int			h1_path_off;	/* where the path starts in the URL */
	socklen_t	h1_addrlen;
	struct sockaddr_storage h1_addr;
	char		h1_host[64];	/* "127.0.0.1:8080", "[::1]:8080": Host */
} RvHttpReq;

/*
 * Create the multi context.  max_connections caps open connections.
 * Returns NULL (with a message in errbuf) on failure.
 */
extern RvHttp *rv_http_create(int max_connections, char *errbuf, size_t errlen);
extern void rv_http_destroy(RvHttp *http);

/* CA certificates (PEM file) for verifying servers; NULL: the system's. */
extern bool rv_http_set_ca_file(RvHttp *http, const char *path);

/* The epoll descriptor to wait on (readable when curl has work). */
extern int	rv_http_fd(RvHttp *http);

/*
 * Start a POST.  headers is an array of "Name: value" strings; body is
 * copied.  Returns false (message in req->errbuf) when the transfer could
 * not be set up; req is then not in flight and may be freed.
 */
extern bool rv_http_start(RvHttp *http, RvHttpReq *req, const char *url,
						  const char *const *headers, int nheaders,
						  const char *body, size_t body_len, long timeout_ms,
						  size_t resp_limit);

/* Abort a request in flight (or do nothing if done) and release curl state. */
extern void rv_http_cancel(RvHttp *http, RvHttpReq *req);

/* Free a request's buffers (after completion or cancel). */
extern void rv_http_req_release(RvHttpReq *req);

/* Milliseconds until curl needs its timer, or -1. */
extern long rv_http_timeout(RvHttp *http);

/*
 * Process ready sockets and expired timers; completed requests are queued
 * and returned by rv_http_next_done().  Never blocks.
 */
extern void rv_http_drive(RvHttp *http);

extern RvHttpReq *rv_http_next_done(RvHttp *http);

/* Number of requests in flight. */
extern int	rv_http_in_flight(RvHttp *http);

/* HTTP/2 streams per connection (at most; the server may allow fewer) */
#define RV_HTTP_STREAMS 100
/* connections per host once a transfer used HTTP/2 */
#define RV_HTTP_H2_HOST_CONNECTIONS 32

/* Transfers to keep in flight with that many connections (HTTP/2 aware). */
extern int	rv_http_capacity(RvHttp *http, int max_connections);

#endif							/* RV_HTTP_H */
