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
#include "http1.h"
#include "rvbbit.h"

/*
 * Easy handles kept for reuse: creating and freeing one per request was
 * about 4% of the worker's instructions per row, and resetting one and
 * setting its two dozen options again most of the rest of libcurl's set-up
 * cost.  A kept handle keeps its options: those that never change are set
 * once (http_handle_configure), and a request sets only what differs from the
 * handle's last one (http_req_options).
 */
#define HTTP_SPARE_MAX 256

typedef struct HttpHeaders HttpHeaders;

/* An easy handle and the options it was last given. */
typedef struct HttpHandle
{
	CURL	   *easy;
	int			gen;			/* RvHttp.gen it was configured for */
	char	   *url;			/* malloc'd copy of its CURLOPT_URL, or NULL */
	long		timeout_ms;
	long		connect_ms;
	long		low_speed_time; /* 0: no low-speed limit */
	bool		pipewait;
	struct curl_slist *list;	/* the header list it was given */
	RvHttpReq  *req;			/* the request it carries (CURLOPT_PRIVATE
								 * is the handle) */
} HttpHandle;

/*
 * A request's header lines (the caller's, then User-Agent) as the curl list
 * the handle is given.  The last list made is kept: the next request with
 * the same lines (the same provider and key: nearly always) shares it
 * instead of copying them into a new list.  Counted references; the lines
 * (an API key among them) are zeroed when the last one goes.
 */
struct HttpHeaders
{
	int			refs;
	int			n;				/* the caller's lines */
	size_t		len;			/* of text */
	char	   *text;			/* the caller's lines, each NUL-terminated */
	struct curl_slist *list;
};

#define HTTP_USER_AGENT "User-Agent: rvbbit/0.1"

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
	RvHttpReq  *complete;		/* bodies received whole (http_write_cb),
								 * looked at by rv_http_drive */
	RvHttpReq  *held_head;		/* HTTPS transfers waiting for it */
	RvHttpReq  *held_tail;
	int			epfd;
	int			in_flight;
	int64		timer_deadline_us;	/* -1: none */
	RvHttpReq  *done_head;
	RvHttpReq  *done_tail;
	/* easy handles of finished transfers, for the next ones */
	HttpHandle *spare[HTTP_SPARE_MAX];
	int			nspare;
	int			gen;			/* bumped when a handle-wide option changes */
	bool		no_proxy_env;	/* no proxy variable in the environment */
	HttpHeaders *last_headers;	/* the last header list made, or NULL */
	H1Pool	   *h1;				/* rvbbit's own HTTP/1.1 client (http1.c) */
};

/* Monotonic clock in microseconds. */
int64
rv_http_now_us(void)
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
	ev.data.u64 = (uint64) (uint32) s;	/* untagged: curl's (http1.c tags its own) */
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
		http->timer_deadline_us = rv_http_now_us() + (int64) timeout_ms * 1000;
	return 0;
}

/*
 * The reply's body came whole: as many bytes as its Content-Length (curl
 * counts both as received, before any decoding).  False without one.
 */
static bool
http_reply_whole(CURL *easy)
{
	curl_off_t	clen = -1;
	curl_off_t	got = -1;

	curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
	curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
	return clen >= 0 && got == clen;
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
	/* the whole body as announced: rv_http_drive may end a stuck transfer */
	if (!req->on_complete && req->http != NULL && http_reply_whole(req->easy))
	{
		req->on_complete = true;
		req->next_complete = req->http->complete;
		req->http->complete = req;
	}
	return n;
}

/*
 * A Retry-After value in milliseconds: seconds ("120") or an HTTP-date
 * ("Wed, 21 Oct 2026 07:28:00 GMT"; a date in the past means now).  -1
 * when it is neither, or a day or more away.
 */
long
rv_http_retry_after(const char *value, size_t len)
{
	char		tmp[128];
	size_t		k = Min(len, sizeof(tmp) - 1);
	char	   *p = tmp;
	char	   *end;
	double		secs;

	memcpy(tmp, value, k);
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
			return (long) (secs * 1000);
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
				return (long) (d * 1000);
		}
	}
	return -1;
}

/*
 * CURLOPT_HEADERFUNCTION: pick up Retry-After.  Only the last response's
 * header counts (curl calls this for each response of a redirect chain;
 * we follow none).
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
		long		ms = rv_http_retry_after(buffer + nl, n - nl);

		if (ms >= 0)
			req->retry_after_ms = ms;
	}
	return n;
}

/* Drop a reference to a header list; the last one zeroes and frees it. */
static void
http_headers_unref(HttpHeaders *h)
{
	struct curl_slist *l;

	if (h == NULL || --h->refs > 0)
		return;
	for (l = h->list; l != NULL; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(h->list);
	explicit_bzero(h->text, h->len);
	free(h->text);
	free(h);
}

/*
 * The header list of a request with these lines (a new reference): the
 * last one made when its lines are the same, else a new one.  NULL when
 * out of memory.
 */
static HttpHeaders *
http_headers_get(RvHttp *http, const char *const *headers, int nheaders)
{
	HttpHeaders *h = http->last_headers;
	struct curl_slist *l;
	size_t		len = 0;
	char	   *p;
	int			i;

	if (h != NULL && h->n == nheaders)
	{
		const char *t = h->text;

		for (i = 0; i < nheaders; i++)
		{
			if (strcmp(t, headers[i]) != 0)
				break;
			t += strlen(t) + 1;
		}
		if (i == nheaders)
		{
			h->refs++;
			return h;
		}
	}

	for (i = 0; i < nheaders; i++)
		len += strlen(headers[i]) + 1;
	h = calloc(1, sizeof(HttpHeaders));
	if (h == NULL)
		return NULL;
	h->refs = 1;
	h->n = nheaders;
	h->len = len;
	h->text = malloc(Max(len, 1));
	if (h->text == NULL)
	{
		free(h);
		return NULL;
	}
	p = h->text;
	for (i = 0; i < nheaders; i++)
	{
		size_t		k = strlen(headers[i]) + 1;

		memcpy(p, headers[i], k);
		p += k;
		l = curl_slist_append(h->list, headers[i]);
		if (l == NULL)
		{
			http_headers_unref(h);
			return NULL;
		}
		h->list = l;
	}
	/* a header line, not CURLOPT_USERAGENT: curl formats that per request */
	l = curl_slist_append(h->list, HTTP_USER_AGENT);
	if (l == NULL)
	{
		http_headers_unref(h);
		return NULL;
	}
	h->list = l;

	/* the new list is the one kept for the next request */
	http_headers_unref(http->last_headers);
	h->refs++;
	http->last_headers = h;
	return h;
}

static void
http_handle_free(HttpHandle *hh)
{
	if (hh == NULL)
		return;
	if (hh->easy != NULL)
		curl_easy_cleanup(hh->easy);
	free(hh->url);
	free(hh);
}

/*
 * Give a handle the options that are the same for every request (again,
 * after a reset, when a handle-wide option changed).
 */
static void
http_handle_configure(RvHttp *http, HttpHandle *hh)
{
	CURL	   *e = hh->easy;

	hh->gen = http->gen;
	free(hh->url);
	hh->url = NULL;
	hh->timeout_ms = hh->connect_ms = -1;
	hh->low_speed_time = 0;
	hh->pipewait = false;
	hh->list = NULL;
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(e, CURLOPT_PRIVATE, hh);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	/* HTTP/2 over TLS when the server offers it (ALPN), else HTTP/1.1 */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	if (http->no_proxy_env)
	{
		/* no proxy, and no environment lookups for one (rv_http_create) */
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	}
	if (http->share)
		curl_easy_setopt(e, CURLOPT_SHARE, http->share);
	if (http->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, http->ca_file);
}

/* A kept handle (configured again if need be), or a new one; NULL: no memory. */
static HttpHandle *
http_handle_get(RvHttp *http)
{
	HttpHandle *hh;

	if (http->nspare > 0)
	{
		hh = http->spare[--http->nspare];
		if (hh->gen != http->gen)
		{
			curl_easy_reset(hh->easy);
			http_handle_configure(http, hh);
		}
		return hh;
	}
	hh = calloc(1, sizeof(HttpHandle));
	if (hh == NULL)
		return NULL;
	hh->easy = curl_easy_init();
	if (hh->easy == NULL)
	{
		free(hh);
		return NULL;
	}
	http_handle_configure(http, hh);
	return hh;
}

static void http_push_done(RvHttp *http, RvHttpReq *req);

/* http1.c ended a request */
static void
http_h1_done(void *arg, RvHttpReq *req)
{
	RvHttp	   *http = (RvHttp *) arg;

	http->in_flight--;
	http_push_done(http, req);
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
	http->h1 = rv_h1_create(http->epfd, max_connections, http_h1_done, http);
	if (http->h1 == NULL)
	{
		snprintf(errbuf, errlen, "out of memory");
		curl_multi_cleanup(http->multi);
		close(http->epfd);
		free(http);
		return NULL;
	}

	/*
	 * libcurl looks up the proxy variables (http_proxy, no_proxy, ...) in
	 * the environment for every transfer: a dozen getenv() scans of the
	 * worker's environment each.  The environment of a running worker
	 * does not change, so when none is set the handles are told "no
	 * proxy" once (http_handle_configure); when one is, libcurl goes on looking
	 * them up and honours them as before.
	 */
	{
		static const char *const vars[] = {
			"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
			"all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
			"socks_proxy", "SOCKS_PROXY"
		};
		int			i;

		http->no_proxy_env = true;
		for (i = 0; i < (int) lengthof(vars); i++)
			if (getenv(vars[i]) != NULL)
				http->no_proxy_env = false;
	}
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
	http->gen++;				/* kept handles are configured again */
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
		http_handle_free(http->spare[--http->nspare]);
	http_headers_unref(http->last_headers);
	http->last_headers = NULL;
	rv_h1_destroy(http->h1);
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
 * Reset a request's outcome and give it an easy handle (a kept one when
 * there is one), a copy of the body and the header list.  Returns false
 * (errbuf set, nothing left to free) on failure.
 */
static bool
http_req_init(RvHttp *http, RvHttpReq *req, const char *const *headers, int nheaders,
			  const char *body, size_t body_len, size_t resp_limit)
{
	req->handle = NULL;
	req->headers = NULL;
	req->body = NULL;
	req->status = 0;
	req->retry_after_ms = -1;
	req->code = CURLE_OK;
	req->errbuf[0] = '\0';
	req->too_big = false;
	req->stalled = false;
	req->connected = false;
	req->sent = false;
	req->closed_early = false;
	req->on_complete = false;
	req->next_complete = NULL;
	req->resp_len = 0;
	req->resp_limit = resp_limit;
	req->next_done = NULL;
	req->in_multi = false;
	req->http = http;
	req->h1 = false;
	req->h1_conn = NULL;
	req->h1_out = NULL;

	req->handle = http_handle_get(http);
	if (req->handle == NULL)
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "curl_easy_init failed");
		return false;
	}
	req->easy = req->handle->easy;
	req->handle->req = req;
	req->body = malloc(body_len + 1);
	if (req->body == NULL)
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
		rv_http_req_release(req);
		return false;
	}
	memcpy(req->body, body, body_len);
	req->body[body_len] = '\0';

	req->headers = http_headers_get(http, headers, nheaders);
	if (req->headers == NULL)
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
		rv_http_req_release(req);
		return false;
	}
	return true;
}

/*
 * The options of a request's transfer: those that differ from the handle's
 * last request (curl copies the URL).  Returns false when out of memory.
 */
static bool
http_req_options(RvHttp *http, RvHttpReq *req, const char *url,
				 size_t body_len, long timeout_ms)
{
	HttpHandle *hh = req->handle;
	CURL	   *e = hh->easy;
	long		connect_ms;
	long		low_speed_time;
	bool		pipewait;

	if (hh->url == NULL || strcmp(hh->url, url) != 0)
	{
		free(hh->url);
		hh->url = strdup(url);
		if (hh->url == NULL)
			return false;
		if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
		{
			free(hh->url);
			hh->url = NULL;
			return false;
		}
	}
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
	if (hh->list != req->headers->list)
	{
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers->list);
		hh->list = req->headers->list;
	}
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	if (hh->timeout_ms != timeout_ms)
	{
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
		hh->timeout_ms = timeout_ms;
	}
	connect_ms = Min(timeout_ms, req->stall_ms > 0 ? Min(req->stall_ms, 30000L) : 30000L);
	if (hh->connect_ms != connect_ms)
	{
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
		hh->connect_ms = connect_ms;
	}
	/* under 1 byte/s for stall_ms (curl counts whole seconds); 0: none */
	low_speed_time = req->stall_ms > 0 ? Max((req->stall_ms + 999) / 1000, 1L) : 0;
	if (hh->low_speed_time != low_speed_time)
	{
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, low_speed_time > 0 ? 1L : 0L);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, low_speed_time);
		hh->low_speed_time = low_speed_time;
	}

	/*
	 * HTTPS: wait for a connection that can multiplex rather than open
	 * another.  Not for http:// (HTTP/1.1 only): there it would hold every
	 * transfer until the first one's reply told that the host does not
	 * multiplex.
	 */
	pipewait = pg_strncasecmp(url, "https://", 8) == 0;
	if (hh->pipewait != pipewait)
	{
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, pipewait ? 1L : 0L);
		hh->pipewait = pipewait;
	}
	return true;
}

bool
rv_http_start(RvHttp *http, RvHttpReq *req, const char *url,
			  const char *const *headers, int nheaders,
			  const char *body, size_t body_len, long timeout_ms,
			  size_t resp_limit)
{
	CURLMcode	mc;

	/*
	 * Plain http:// to an IP address, no proxy: rvbbit's own HTTP/1.1
	 * client (http1.c), at a fraction of curl's cost per request.
	 */
	if (rv_builtin_http && http->no_proxy_env && rv_h1_parse_url(req, url))
	{
		req->handle = NULL;
		req->easy = NULL;
		req->headers = NULL;
		req->body = NULL;
		req->resp_len = 0;
		req->status = 0;
		req->retry_after_ms = -1;
		req->code = CURLE_OK;
		req->errbuf[0] = '\0';
		req->too_big = req->stalled = req->connected = req->sent = false;
		req->closed_early = req->on_complete = req->held = req->in_multi = false;
		req->next_complete = req->next_done = NULL;
		req->http = http;
		http->in_flight++;		/* first: the request may end at once */
		if (!rv_h1_start(http->h1, req, url, headers, nheaders, HTTP_USER_AGENT,
						 body, body_len, timeout_ms, resp_limit))
		{
			http->in_flight--;
			req->h1 = false;
			return false;
		}
		return true;
	}

	if (!http_req_init(http, req, headers, nheaders, body, body_len, resp_limit))
		return false;
	if (!http_req_options(http, req, url, body_len, timeout_ms))
	{
		snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
		rv_http_req_release(req);
		return false;
	}

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
	HttpHandle *hh = req->handle;

	if (hh != NULL)
	{
		RvHttp	   *http = req->http;

		hh->req = NULL;
		/*
		 * Out of curl's hands: keep it for the next request.  It keeps
		 * pointers to this request's body, header list and error buffer,
		 * which curl reads only during a transfer; the next request sets
		 * its own before it starts.
		 */
		if (http != NULL && !req->in_multi && http->nspare < HTTP_SPARE_MAX &&
			http->probe != hh->easy)
		{
			curl_easy_setopt(hh->easy, CURLOPT_ERRORBUFFER, NULL);
			http->spare[http->nspare++] = hh;
		}
		else
			http_handle_free(hh);	/* curl_easy_cleanup leaves the multi */
	}
	req->handle = NULL;
	req->easy = NULL;
	req->in_multi = false;
	req->h1 = false;
	http_headers_unref(req->headers);
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
	if (req->h1)
	{
		if (rv_h1_cancel(http->h1, req))
			http->in_flight--;
		rv_http_req_release(req);
		return;
	}
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
	int64		at = http->timer_deadline_us;
	int64		h1 = rv_h1_next_timer(http->h1);

	if (h1 >= 0 && (at < 0 || h1 < at))
		at = h1;
	if (at < 0)
		return -1;
	now = rv_http_now_us();
	if (at <= now)
		return 0;
	return (long) ((at - now + 999) / 1000);
}

/*
 * A transfer ended (its outcome is set): out of the multi handle, the held
 * transfers started if it was the probe, onto the done list.
 */
static void
http_finish(RvHttp *http, RvHttpReq *req)
{
	if (curl_multi_remove_handle(http->multi, req->easy) == CURLM_OK)
		req->in_multi = false;
	http->in_flight--;
	if (req->easy == http->probe)
		http_release_held(http);
	http_push_done(http, req);
}

/* A transfer used this HTTP version. */
static void
http_saw_version(RvHttp *http, long version)
{
	if ((version == CURL_HTTP_VERSION_2_0 || version == CURL_HTTP_VERSION_3) &&
		!http->multiplexed)
	{
		/*
		 * From now on a host gets at most RV_HTTP_H2_HOST_CONNECTIONS
		 * connections: transfers beyond their streams wait in curl's queue
		 * for a free stream instead of each opening a connection of its own
		 * while the next one is being set up.
		 */
		http->multiplexed = true;
		curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
						  (long) RV_HTTP_H2_HOST_CONNECTIONS);
	}
}

/*
 * HTTP/2 transfers whose final reply arrived whole (as long as its
 * Content-Length) but which curl has not ended.  A server that answers
 * before it has read the request body (nginx's fixed "return") closes the
 * stream; a large body then waits for flow-control window the server will
 * never give, and libcurl 7.88 keeps the transfer open, uploading nothing,
 * until the stall timeout, then reports a reply it has in full as "sent
 * nothing".  The reply is complete, so the transfer ends here, as done.
 * HTTP/1.1 transfers are left alone: curl ends them when the body is in, and
 * removing one early would close its connection.
 */
static void
http_end_complete(RvHttp *http)
{
	while (http->complete != NULL)
	{
		RvHttpReq  *req = http->complete;
		long		version = 0;
		long		status = 0;
		double		total = 0;

		http->complete = req->next_complete;
		req->next_complete = NULL;
		req->on_complete = false;
		if (!req->in_multi || req->easy == NULL)
			continue;			/* curl ended it (http_collect) */
		curl_easy_getinfo(req->easy, CURLINFO_HTTP_VERSION, &version);
		if (version != CURL_HTTP_VERSION_2_0 && version != CURL_HTTP_VERSION_3)
			continue;
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status < 200)
			continue;
		http_saw_version(http, version);
		curl_easy_getinfo(req->easy, CURLINFO_TOTAL_TIME, &total);
		req->status = status;
		req->code = CURLE_OK;
		req->errbuf[0] = '\0';
		req->latency_ms = total * 1000.0;
		req->connected = true;
		req->sent = true;
		http_finish(http, req);
	}
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
		HttpHandle *hh = NULL;
		double		total = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &hh);
		req = hh ? hh->req : NULL;
		if (req == NULL)
			continue;
		req->code = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &req->status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME, &total);
		{
			long		version = 0;

			curl_easy_getinfo(msg->easy_handle, CURLINFO_HTTP_VERSION, &version);
			http_saw_version(http, version);
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
			if (http_reply_whole(msg->easy_handle))
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
		http_finish(http, req);
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

			if (events[i].data.u64 & RV_H1_TAG)
			{
				rv_h1_event(http->h1, (int) (uint32) events[i].data.u64, events[i].events);
				continue;
			}
			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(http->multi, (curl_socket_t) (uint32) events[i].data.u64,
									 flags, &running);
		}
		if (n < (int) lengthof(events))
			break;
	}
	if (http->timer_deadline_us >= 0 && http->timer_deadline_us <= rv_http_now_us())
	{
		http->timer_deadline_us = -1;
		curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	{
		int64		h1 = rv_h1_next_timer(http->h1);

		if (h1 >= 0 && h1 <= rv_http_now_us())
			rv_h1_timers(http->h1, rv_http_now_us());
	}
	http_collect(http);
	http_end_complete(http);
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
