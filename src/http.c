/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl multi driven by an epoll set, for the rvbbit worker.
 *
 * The multi handle's socket callback mirrors curl's sockets into an epoll
 * set; its timer callback records when curl wants to be called back.  The
 * worker waits on the epoll descriptor (through its WaitEventSet) and on
 * the timer, then calls rv_http_drive(), which hands ready sockets and
 * expired timers to curl_multi_socket_action() and collects finished
 * transfers.
 *
 * No PostgreSQL error can be raised in here: the callbacks run inside
 * libcurl, so they use malloc and report failure through return codes,
 * and the functions called by the worker report failure through return
 * values.  CURLOPT_NOSIGNAL is set on every transfer.
 *
 * HTTPS transfers negotiate HTTP/2 (ALPN) and multiplex as streams over
 * few connections (CURLPIPE_MULTIPLEX, CURLOPT_PIPEWAIT); TLS sessions and
 * DNS answers are shared through a share handle.  Plain http:// stays
 * HTTP/1.1, one transfer per connection.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "http.h"

/*
 * Easy handles kept for reuse (curl_easy_reset): creating and freeing one
 * per request was about 4% of the worker's instructions per row.
 */
#define HTTP_SPARE_MAX 256

struct RvHttp
{
	CURLM	   *multi;
	CURLSH	   *share;			/* TLS sessions and DNS, shared by all transfers */
	char	   *ca_file;		/* malloc'd, or NULL: the system's CA store */
	bool		multiplexed;	/* a transfer used HTTP/2 (or 3) */
	/* the first HTTPS transfer goes alone until its TLS handshake is done */
	enum
	{
		HTTP_TLS_UNKNOWN,
		HTTP_TLS_PROBING,
		HTTP_TLS_KNOWN
	}			tls_state;
	CURL	   *probe;			/* that transfer, while probing */
	RvHttpReq  *held_head;		/* HTTPS transfers waiting for it */
	RvHttpReq  *held_tail;
	int			epfd;
	int			in_flight;
	int64		timer_deadline_us;	/* -1: none */
	RvHttpReq  *done_head;
	RvHttpReq  *done_tail;
	/* easy handles of finished transfers, reset, for the next ones */
	CURL	   *spare[HTTP_SPARE_MAX];
	int			nspare;
};

/* Monotonic clock in microseconds. */
static int64
http_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * CURLMOPT_SOCKETFUNCTION: keep the epoll set in step with curl's sockets.
 * socketp is non-NULL once the socket is in the epoll set.
 */
static int
http_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	RvHttp	   *http = (RvHttp *) userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		if (socketp != NULL)
		{
			epoll_ctl(http->epfd, EPOLL_CTL_DEL, s, NULL);
			curl_multi_assign(http->multi, s, NULL);
		}
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;

	if (socketp == NULL)
	{
		if (epoll_ctl(http->epfd, EPOLL_CTL_ADD, s, &ev) != 0 &&
			epoll_ctl(http->epfd, EPOLL_CTL_MOD, s, &ev) != 0)
			return -1;
		curl_multi_assign(http->multi, s, (void *) http);
	}
	else if (epoll_ctl(http->epfd, EPOLL_CTL_MOD, s, &ev) != 0)
		return -1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when curl wants its timer. */
static int
http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	RvHttp	   *http = (RvHttp *) userp;

	if (timeout_ms < 0)
		http->timer_deadline_us = -1;
	else
		http->timer_deadline_us = http_now_us() + (int64) timeout_ms * 1000;
	return 0;
}

/* CURLOPT_WRITEFUNCTION: append to the response buffer (malloc'd). */
static size_t
http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	RvHttpReq  *req = (RvHttpReq *) userdata;
	size_t		n = size * nmemb;

	if (req->resp_len + n > req->resp_limit)
	{
		req->too_big = true;
		return 0;				/* makes curl fail with CURLE_WRITE_ERROR */
	}
	if (req->resp_len + n + 1 > req->resp_cap)
	{
		size_t		cap = Max(req->resp_cap * 2, req->resp_len + n + 1);
		char	   *p;

		cap = Max(cap, 4096);
		p = realloc(req->resp, cap);
		if (p == NULL)
			return 0;
		req->resp = p;
		req->resp_cap = cap;
	}
	memcpy(req->resp + req->resp_len, ptr, n);
	req->resp_len += n;
	req->resp[req->resp_len] = '\0';
	return n;
}

/*
 * CURLOPT_HEADERFUNCTION: pick up Retry-After, in seconds ("120") or as an
 * HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"; a date in the past means
 * now).  Only the last response's header counts (curl calls this for each
 * response of a redirect chain; we follow none).
 */
static size_t
http_header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	RvHttpReq  *req = (RvHttpReq *) userdata;
	size_t		n = size * nitems;
	const char *name = "retry-after:";
	size_t		nl = strlen(name);

	if (n > nl && pg_strncasecmp(buffer, name, nl) == 0)
	{
		char		tmp[128];
		size_t		k = Min(n - nl, sizeof(tmp) - 1);
		char	   *p = tmp;
		char	   *end;
		double		secs;

		memcpy(tmp, buffer + nl, k);
		tmp[k] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		/* trailing CR LF */
		end = p + strlen(p);
		while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
			*--end = '\0';
		secs = strtod(p, &end);
		if (end != p && *end == '\0')
		{
			if (secs >= 0 && secs < 86400)
				req->retry_after_ms = (long) (secs * 1000);
		}
		else if (*p != '\0')
		{
			time_t		when = curl_getdate(p, NULL);

			if (when != (time_t) -1)
			{
				time_t		now = time(NULL);
				double		d = difftime(when, now);

				if (d < 0)
					d = 0;
				if (d < 86400)
					req->retry_after_ms = (long) (d * 1000);
			}
		}
	}
	return n;
}

RvHttp *
rv_http_create(int max_connections, char *errbuf, size_t errlen)
{
	RvHttp	   *http;

	http = calloc(1, sizeof(RvHttp));
	if (http == NULL)
	{
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	http->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (http->epfd < 0)
	{
		snprintf(errbuf, errlen, "epoll_create1 failed: %m");
		free(http);
		return NULL;
	}
	http->multi = curl_multi_init();
	if (http->multi == NULL)
	{
		snprintf(errbuf, errlen, "curl_multi_init failed");
		close(http->epfd);
		free(http);
		return NULL;
	}
	http->timer_deadline_us = -1;
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) max_connections);
	curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, (long) max_connections);

	/*
	 * HTTP/2: many transfers share one connection as streams, so PARALLEL
	 * is bound by the server's stream limit rather than by open files.
	 * (The server's SETTINGS_MAX_CONCURRENT_STREAMS still applies.)
	 */
	curl_multi_setopt(http->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(http->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long) RV_HTTP_STREAMS);

	/*
	 * TLS session tickets and DNS answers are shared by all transfers, so
	 * a new connection resumes the TLS session.  Connections themselves are
	 * already shared through the multi handle's connection cache, which is
	 * what CURLMOPT_MAX_TOTAL_CONNECTIONS counts; a share handle's
	 * connection cache would bypass that limit, so it is not used.  The
	 * worker is single-threaded: no lock callbacks.
	 */
	http->share = curl_share_init();
	if (http->share != NULL)
	{
		curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
		curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	}
	return http;
}

/*
 * Use the CA certificates in path (PEM) to verify servers instead of the
 * system's store; NULL or "" restores the default.  Returns false when out
 * of memory.
 */
bool
rv_http_set_ca_file(RvHttp *http, const char *path)
{
	free(http->ca_file);
	http->ca_file = NULL;
	if (path == NULL || path[0] == '\0')
		return true;
	http->ca_file = strdup(path);
	return http->ca_file != NULL;
}

void
rv_http_destroy(RvHttp *http)
{
	if (http == NULL)
		return;
	while (http->nspare > 0)
		curl_easy_cleanup(http->spare[--http->nspare]);
	curl_multi_cleanup(http->multi);
	if (http->share)
		curl_share_cleanup(http->share);
	free(http->ca_file);
	close(http->epfd);
	free(http);
}

int
rv_http_fd(RvHttp *http)
{
	return http->epfd;
}

/*
 * Reset a request's outcome and give it an easy handle (a kept one when there is one), a copy of the body
 * and the header list.  Returns false (errbuf set, nothing left to free)
 * on failure.
 */
static bool
http_req_init(RvHttp *http, RvHttpReq *req, const char *const *headers, int nheaders,
			  const char *body, size_t body_len, size_t resp_limit)
{
	int			i;

	req->status = 0;
	req->retry_after_ms = -1;
	req->code = CURLE_OK;
	req->errbuf[0] = '\0';
	req->too_big = false;
	req->stalled = false;
	req->connected = false;
	req->sent = false;
	req->closed_early = false;
	req->resp_len = 0;
	req->resp_limit = resp_limit;
	req->next_done = NULL;
	req->in_multi = false;
	req->http = http;

	req->easy = http->nspare > 0 ? http->spare[--http->nspare] : curl_easy_init();
	if (req->easy == NULL)
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "curl_easy_init failed");
		return false;
	}
	req->body = malloc(body_len + 1);
	if (req->body == NULL)
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		return false;
	}
	memcpy(req->body, body, body_len);
	req->body[body_len] = '\0';

	for (i = 0; i < nheaders; i++)
	{
		struct curl_slist *l = curl_slist_append(req->headers, headers[i]);

		if (l == NULL)
		{
			snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
			rv_http_req_release(req);
			return false;
		}
		req->headers = l;
	}
	return true;
}

/* The options of a request's transfer (curl copies the URL). */
static void
http_req_options(RvHttp *http, RvHttpReq *req, const char *url,
				 size_t body_len, long timeout_ms)
{
	curl_easy_setopt(req->easy, CURLOPT_URL, url);
	curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
	curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(req->easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS,
					 Min(timeout_ms, req->stall_ms > 0 ? Min(req->stall_ms, 30000L) : 30000L));
	if (req->stall_ms > 0)
	{
		/* under 1 byte/s for stall_ms (curl counts whole seconds) */
		curl_easy_setopt(req->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(req->easy, CURLOPT_LOW_SPEED_TIME,
						 Max((req->stall_ms + 999) / 1000, 1L));
	}
	curl_easy_setopt(req->easy, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(req->easy, CURLOPT_USERAGENT, "rvbbit/0.1");
	curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/* HTTP/2 over TLS when the server offers it (ALPN), else HTTP/1.1 */
	curl_easy_setopt(req->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	/*
	 * HTTPS: wait for a connection that can multiplex rather than open
	 * another.  Not for http:// (HTTP/1.1 only): there it would hold every
	 * transfer until the first one's reply told that the host does not
	 * multiplex.
	 */
	if (pg_strncasecmp(url, "https://", 8) == 0)
		curl_easy_setopt(req->easy, CURLOPT_PIPEWAIT, 1L);
	if (http->share)
		curl_easy_setopt(req->easy, CURLOPT_SHARE, http->share);
	if (http->ca_file)
		curl_easy_setopt(req->easy, CURLOPT_CAINFO, http->ca_file);
}

bool
rv_http_start(RvHttp *http, RvHttpReq *req, const char *url,
			  const char *const *headers, int nheaders,
			  const char *body, size_t body_len, long timeout_ms,
			  size_t resp_limit)
{
	CURLMcode	mc;

	if (!http_req_init(http, req, headers, nheaders, body, body_len, resp_limit))
		return false;
	http_req_options(http, req, url, body_len, timeout_ms);

	/*
	 * libcurl (7.88) opens a connection per transfer when many start before
	 * the first connection to a host has told whether it multiplexes,
	 * CURLOPT_PIPEWAIT notwithstanding.  So the worker's first HTTPS
	 * transfer goes alone and the others wait here until it is done; by
	 * then its HTTP version is known, and over HTTP/2 they become streams.
	 */
	req->held = false;
	if (http->tls_state != HTTP_TLS_KNOWN && pg_strncasecmp(url, "https://", 8) == 0)
	{
		if (http->tls_state == HTTP_TLS_PROBING)
		{
			req->held = true;
			req->next_done = NULL;
			if (http->held_tail)
				http->held_tail->next_done = req;
			else
				http->held_head = req;
			http->held_tail = req;
			http->in_flight++;
			return true;
		}
		http->tls_state = HTTP_TLS_PROBING;
		http->probe = req->easy;
	}

	mc = curl_multi_add_handle(http->multi, req->easy);
	req->in_multi = (mc == CURLM_OK);
	if (mc != CURLM_OK)
	{
		if (http->probe == req->easy)
		{
			http->probe = NULL;
			http->tls_state = HTTP_TLS_UNKNOWN;
		}
		snprintf(req->errbuf, sizeof(req->errbuf), "%s", curl_multi_strerror(mc));
		rv_http_req_release(req);
		return false;
	}
	http->in_flight++;
	return true;
}

/* Queue a finished (or failed to start) request for rv_http_next_done(). */
static void
http_push_done(RvHttp *http, RvHttpReq *req)
{
	req->next_done = NULL;
	if (http->done_tail)
		http->done_tail->next_done = req;
	else
		http->done_head = req;
	http->done_tail = req;
}

/* The probe ended: start the held transfers. */
static void
http_release_held(RvHttp *http)
{
	RvHttpReq  *req = http->held_head;

	http->tls_state = HTTP_TLS_KNOWN;
	http->probe = NULL;
	http->held_head = http->held_tail = NULL;
	while (req != NULL)
	{
		RvHttpReq  *next = req->next_done;
		CURLMcode	mc;

		req->held = false;
		req->next_done = NULL;
		mc = curl_multi_add_handle(http->multi, req->easy);
		req->in_multi = (mc == CURLM_OK);
		if (mc != CURLM_OK)
		{
			req->code = CURLE_FAILED_INIT;
			snprintf(req->errbuf, sizeof(req->errbuf), "%s", curl_multi_strerror(mc));
			http->in_flight--;
			http_push_done(http, req);
		}
		req = next;
	}
}


void
rv_http_req_release(RvHttpReq *req)
{
	if (req->easy != NULL)
	{
		RvHttp	   *http = req->http;

		/* out of curl's hands: keep it for the next request */
		if (http != NULL && !req->in_multi && http->nspare < HTTP_SPARE_MAX &&
			http->probe != req->easy)
		{
			curl_easy_reset(req->easy);
			http->spare[http->nspare++] = req->easy;
		}
		else
			curl_easy_cleanup(req->easy);
	}
	req->easy = NULL;
	req->in_multi = false;
	if (req->headers != NULL)
		curl_slist_free_all(req->headers);
	req->headers = NULL;
	free(req->body);
	req->body = NULL;
	free(req->resp);
	req->resp = NULL;
	req->resp_len = req->resp_cap = 0;
}

void
rv_http_cancel(RvHttp *http, RvHttpReq *req)
{
	if (req->held)
	{
		RvHttpReq **p = &http->held_head;

		/* not given to curl yet: unlink it */
		http->held_tail = NULL;
		while (*p != NULL)
		{
			if (*p == req)
				*p = req->next_done;
			else
			{
				http->held_tail = *p;
				p = &(*p)->next_done;
			}
		}
		req->held = false;
		req->next_done = NULL;
		http->in_flight--;
		rv_http_req_release(req);
		return;
	}
	if (req->easy != NULL && req->easy == http->probe)
	{
		/* the probe goes away: the held transfers start without it */
		if (curl_multi_remove_handle(http->multi, req->easy) == CURLM_OK)
			req->in_multi = false;
		http->in_flight--;
		http_release_held(http);
		rv_http_req_release(req);
		return;
	}
	if (req->easy != NULL)
	{
		if (curl_multi_remove_handle(http->multi, req->easy) == CURLM_OK)
		{
			req->in_multi = false;
			http->in_flight--;
		}
	}
	rv_http_req_release(req);
}

long
rv_http_timeout(RvHttp *http)
{
	int64		now;

	if (http->timer_deadline_us < 0)
		return -1;
	now = http_now_us();
	if (http->timer_deadline_us <= now)
		return 0;
	return (long) ((http->timer_deadline_us - now + 999) / 1000);
}

/* Move finished transfers from curl to our done list. */
static void
http_collect(RvHttp *http)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(http->multi, &left)) != NULL)
	{
		RvHttpReq  *req = NULL;
		double		total = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		if (req == NULL)
			continue;
		req->code = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &req->status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME, &total);
		{
			long		version = 0;

			curl_easy_getinfo(msg->easy_handle, CURLINFO_HTTP_VERSION, &version);
			if ((version == CURL_HTTP_VERSION_2_0 || version == CURL_HTTP_VERSION_3) &&
				!http->multiplexed)
			{
				/*
				 * From now on a host gets at most RV_HTTP_H2_HOST_CONNECTIONS
				 * connections: transfers beyond their streams wait in curl's
				 * queue for a free stream instead of each opening a
				 * connection of its own while the next one is being set up.
				 */
				http->multiplexed = true;
				curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
								  (long) RV_HTTP_H2_HOST_CONNECTIONS);
			}
		}
		req->latency_ms = total * 1000.0;
		{
			curl_off_t	conn = 0;

			long		reqsize = 0;

			curl_easy_getinfo(msg->easy_handle, CURLINFO_CONNECT_TIME_T, &conn);
			req->connected = (conn > 0 || req->status > 0);
			/* the request went out (also over a reused connection) */
			curl_easy_getinfo(msg->easy_handle, CURLINFO_REQUEST_SIZE, &reqsize);
			req->sent = (reqsize > 0 || req->status > 0);
		}
		/*
		 * A server may send its whole response before it has read the
		 * request body, then reset the stream with NO_ERROR to stop the
		 * upload; the client must not discard that response (RFC 9113,
		 * 8.1).  nginx does so when it answers without reading the body.
		 * libcurl 7.88 reports it as CURLE_HTTP2_STREAM, and the worker
		 * retried a good answer after a backoff, stalling the reorder
		 * window.  A final status whose body arrived whole, as long as its
		 * Content-Length says, is such a response; so is one whose
		 * connection failed only after it (a GOAWAY or a reset racing the
		 * stream's end reports other codes: CURLE_HTTP2, CURLE_RECV_ERROR,
		 * CURLE_SEND_ERROR for the unsent rest of the body).
		 */
		if (req->code != CURLE_OK && req->code != CURLE_WRITE_ERROR &&
			req->code != CURLE_ABORTED_BY_CALLBACK && req->code != CURLE_OPERATION_TIMEDOUT &&
			req->status >= 200 && !req->too_big)
		{
			curl_off_t	clen = -1;
			curl_off_t	got = -1;

			curl_easy_getinfo(msg->easy_handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_SIZE_DOWNLOAD_T, &got);
			if (clen >= 0 && got == clen)
			{
				req->code = CURLE_OK;
				req->errbuf[0] = '\0';
			}
		}
		/*
		 * A server that answers before it has read the request body (nginx
		 * answering from a fixed "return") closes the stream while libcurl
		 * 7.88 is still sending the body in DATA frames; curl then fails
		 * the transfer in its send path (CURLE_HTTP2_STREAM, no message)
		 * before it has read the response waiting in the stream.  No reply
		 * reached us, and the server did not need the body to answer: the
		 * worker retries at once instead of after a backoff that stalls the
		 * reorder window.
		 */
		if (req->code == CURLE_HTTP2_STREAM && req->status == 0 && req->errbuf[0] == '\0')
			req->closed_early = true;
		/* curl reports the low-speed limit as a timeout: "Operation too slow" */
		if (req->code == CURLE_OPERATION_TIMEDOUT && req->stall_ms > 0 &&
			strstr(req->errbuf, "too slow") != NULL)
			req->stalled = true;
		if (curl_multi_remove_handle(http->multi, msg->easy_handle) == CURLM_OK)
			req->in_multi = false;
		http->in_flight--;
		if (msg->easy_handle == http->probe)
			http_release_held(http);
		http_push_done(http, req);
	}
}

void
rv_http_drive(RvHttp *http)
{
	struct epoll_event events[256];
	int			n;
	int			running;
	int			i;

	for (;;)
	{
		n = epoll_wait(http->epfd, events, lengthof(events), 0);
		if (n <= 0)
			break;
		for (i = 0; i < n; i++)
		{
			int			flags = 0;

			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(http->multi, events[i].data.fd, flags, &running);
		}
		if (n < (int) lengthof(events))
			break;
	}
	if (http->timer_deadline_us >= 0 && http->timer_deadline_us <= http_now_us())
	{
		http->timer_deadline_us = -1;
		curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	http_collect(http);
}

RvHttpReq *
rv_http_next_done(RvHttp *http)
{
	RvHttpReq  *req = http->done_head;

	if (req != NULL)
	{
		http->done_head = req->next_done;
		if (http->done_head == NULL)
			http->done_tail = NULL;
		req->next_done = NULL;
	}
	return req;
}

int
rv_http_in_flight(RvHttp *http)
{
	return http->in_flight;
}

/*
 * How many transfers to keep in flight with max_connections connections:
 * one per connection until a transfer came back over HTTP/2, then up to
 * RV_HTTP_STREAMS per connection (curl queues what does not fit and opens
 * no more than max_connections).
 */
int
rv_http_capacity(RvHttp *http, int max_connections)
{
	/* while probing, the transfers wait in http.c, not in connections */
	if (!http->multiplexed && http->tls_state != HTTP_TLS_PROBING)
		return max_connections;
	return (int) Min((int64) max_connections * RV_HTTP_STREAMS, (int64) 100000);
}
