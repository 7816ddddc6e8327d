/*-------------------------------------------------------------------------
 *
 * http1.c
 *	  rvbbit's own HTTP/1.1 client, for plain http:// to an IP address.
 *
 * Local model servers (llama.cpp, vLLM, Ollama, a gateway next to the
 * database) speak plain HTTP/1.1, and there libcurl's multi interface was
 * the worker's largest cost: make profile counted 88,000 of its 199,000
 * instructions per row inside curl_multi_socket_action (URL parsing,
 * formatting the request with printf, a poll() per reused connection to
 * see that it is alive), for a request of one send() and a reply of one
 * recv().  This client does only that: one request per connection at a
 * time, connections kept alive and reused, the reply read as its
 * Content-Length, chunks or the connection's end say.  Its sockets share
 * curl's epoll set (tagged RV_H1_TAG) and http.c's interface: a request's
 * outcome is reported in the same fields, with curl's codes, so the worker
 * cannot tell the two apart.
 *
 * http.c routes a request here only when nothing of curl's is needed: the
 * URL is http:// to an IP address (no name to resolve, no TLS, no user
 * name), no proxy variable is set, and rvbbit.builtin_http is on.  HTTPS
 * (and HTTP/2) stay with curl.
 *
 * As in http.c, nothing here raises a PostgreSQL error: memory is malloc'd
 * and failures are reported in the request.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http1.h"

#define H1_IN_SIZE		16384	/* receive buffer of a connection */
#define H1_HEAD_MAX		(64 * 1024) /* a reply's header block */
#define H1_PREALLOC_MAX (64 * 1024) /* body room taken before it arrives */
#define H1_LINE_MAX		1024	/* a chunk-size line */
#define H1_IDLE_MAX_US	(115 * (int64) 1000000) /* curl's 118 s, less */

typedef enum H1State
{
	H1_CONNECTING,
	H1_SENDING,
	H1_RECEIVING,
	H1_IDLE
} H1State;

/* where the reply's parser is */
typedef enum H1Parse
{
	P_HEAD,
	P_LENGTH,					/* Content-Length bytes of body */
	P_CHUNK_SIZE,
	P_CHUNK_DATA,
	P_CHUNK_END,				/* the CR LF after a chunk's data */
	P_TRAILER,
	P_TO_EOF,					/* the body ends with the connection */
	P_DONE
} H1Parse;

typedef struct H1Conn
{
	int			fd;
	H1State		state;
	uint32		events;			/* as registered with epoll */
	RvHttpReq  *req;			/* the request it carries, or NULL (idle) */
	int			served;			/* requests answered on it */
	int64		idle_since_us;
	struct H1Conn *next_idle;
	socklen_t	addrlen;
	struct sockaddr_storage addr;
	/* the reply */
	H1Parse		ps;
	size_t		out_off;		/* bytes of the request sent */
	char	   *in;
	size_t		in_cap;
	size_t		in_len;
	size_t		in_off;			/* parsed up to here */
	size_t		scan;			/* P_HEAD: searched for the blank line up to here */
	int64		remain;			/* P_LENGTH, P_CHUNK_DATA: bytes left */
	bool		keepalive;
} H1Conn;

struct H1Pool
{
	int			epfd;
	int			max_conns;
	int			nconns;
	H1Conn	  **byfd;			/* the open connections, by descriptor */
	int			byfd_len;
	H1Conn	   *idle;			/* idle connections, the last used first */
	RvHttpReq  *queue_head;		/* requests waiting for a connection */
	RvHttpReq  *queue_tail;
	int			active;			/* requests started and not finished */
	int64		next_timer_us;	/* no deadline is earlier; -1: none */
	bool		serving;		/* in h1_serve_queue, or holding it off */
	RvH1DoneFn	done;
	void	   *done_arg;
};

static void h1_assign(H1Pool *pool, RvHttpReq *req);
static void h1_serve_queue(H1Pool *pool);

/* A deadline at t: the timer checks no later. */
static void
h1_timer_at(H1Pool *pool, int64 t)
{
	if (pool->next_timer_us < 0 || t < pool->next_timer_us)
		pool->next_timer_us = t;
}

H1Pool *
rv_h1_create(int epfd, int max_connections, RvH1DoneFn done, void *arg)
{
	H1Pool	   *pool = calloc(1, sizeof(H1Pool));

	if (pool == NULL)
		return NULL;
	pool->epfd = epfd;
	pool->max_conns = Max(max_connections, 1);
	pool->next_timer_us = -1;
	pool->done = done;
	pool->done_arg = arg;
	return pool;
}

/* Close a connection and forget it (its request, if any, is the caller's). */
static void
h1_close(H1Pool *pool, H1Conn *c)
{
	H1Conn	  **p;

	for (p = &pool->idle; *p != NULL; p = &(*p)->next_idle)
		if (*p == c)
		{
			*p = c->next_idle;
			break;
		}
	if (c->fd >= 0)
	{
		if (c->fd < pool->byfd_len)
			pool->byfd[c->fd] = NULL;
		close(c->fd);			/* also leaves the epoll set */
	}
	if (c->req != NULL)
		c->req->h1_conn = NULL;
	pool->nconns--;
	free(c->in);
	free(c);
}

void
rv_h1_destroy(H1Pool *pool)
{
	int			i;

	if (pool == NULL)
		return;
	for (i = 0; i < pool->byfd_len; i++)
		if (pool->byfd[i] != NULL)
			h1_close(pool, pool->byfd[i]);
	free(pool->byfd);
	free(pool);
}

/*
 * http://IP[:port][/path]: an IPv4 address or a bracketed IPv6 one, no user
 * name, no fragment, a path of printable characters without spaces.
 */
bool
rv_h1_parse_url(RvHttpReq *req, const char *url)
{
	const char *p;
	const char *host;
	size_t		hlen;
	char		hbuf[INET6_ADDRSTRLEN + 1];
	long		port = 80;
	bool		v6 = false;
	const char *q;

	if (pg_strncasecmp(url, "http://", 7) != 0)
		return false;
	host = url + 7;
	if (*host == '[')
	{
		p = strchr(host, ']');
		if (p == NULL)
			return false;
		host++;
		hlen = p - host;
		p++;
		v6 = true;
	}
	else
	{
		p = host;
		while (*p != '\0' && *p != ':' && *p != '/')
		{
			if (!((*p >= '0' && *p <= '9') || *p == '.'))
				return false;	/* a name (or a user name): curl's */
			p++;
		}
		hlen = p - host;
	}
	if (hlen == 0 || hlen >= sizeof(hbuf))
		return false;
	memcpy(hbuf, host, hlen);
	hbuf[hlen] = '\0';
	if (*p == ':')
	{
		char	   *end;

		p++;
		if (*p < '0' || *p > '9')
			return false;
		port = strtol(p, &end, 10);
		if (port < 1 || port > 65535)
			return false;
		p = end;
	}
	if (*p != '\0' && *p != '/')
		return false;
	for (q = p; *q != '\0'; q++)
		if ((unsigned char) *q <= ' ' || (unsigned char) *q >= 127 || *q == '#')
			return false;

	memset(&req->h1_addr, 0, sizeof(req->h1_addr));
	if (v6)
	{
		struct sockaddr_in6 *a = (struct sockaddr_in6 *) &req->h1_addr;

		if (inet_pton(AF_INET6, hbuf, &a->sin6_addr) != 1)
			return false;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16) port);
		req->h1_addrlen = sizeof(*a);
	}
	else
	{
		struct sockaddr_in *a = (struct sockaddr_in *) &req->h1_addr;

		if (inet_pton(AF_INET, hbuf, &a->sin_addr) != 1)
			return false;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16) port);
		req->h1_addrlen = sizeof(*a);
	}
	/* Host: as written, with the port unless it is the default */
	if (port == 80)
		snprintf(req->h1_host, sizeof(req->h1_host), v6 ? "[%s]" : "%s", hbuf);
	else
		snprintf(req->h1_host, sizeof(req->h1_host), v6 ? "[%s]:%ld" : "%s:%ld", hbuf, port);
	req->h1_path_off = (int) (p - url);
	return true;
}

/* Append to a malloc'd buffer; false when out of memory. */
static bool
h1_put(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n > *cap)
	{
		size_t		c = Max(*cap * 2, *len + n);
		char	   *p = malloc(c);

		if (p == NULL)
			return false;
		if (*len > 0)
			memcpy(p, *buf, *len);
		if (*buf != NULL)
		{
			explicit_bzero(*buf, *len);
			free(*buf);
		}
		*buf = p;
		*cap = c;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	return true;
}

bool
rv_h1_start(H1Pool *pool, RvHttpReq *req, const char *url,
			const char *const *headers, int nheaders, const char *user_agent,
			const char *body, size_t body_len, long timeout_ms, size_t resp_limit)
{
	const char *path = url + req->h1_path_off;
	char	   *out = NULL;
	size_t		len = 0;
	size_t		cap = 512 + body_len;
	char		num[64];
	bool		ok = true;
	int			i;

	req->h1 = true;
	req->h1_queued = false;
	req->h1_fresh = false;
	req->h1_got = false;
	req->h1_conn = NULL;
	req->h1_next = NULL;
	req->resp_limit = resp_limit;
	req->h1_timeout_ms = timeout_ms;
	/* as curl's connect timeout (http.c) */
	req->h1_connect_ms = Min(timeout_ms, req->stall_ms > 0 ? Min(req->stall_ms, 30000L) : 30000L);

	for (i = 0; i < nheaders; i++)
		if (strpbrk(headers[i], "\r\n") != NULL)
		{
			snprintf(req->errbuf, sizeof(req->errbuf),
					 "a request header contains a line break");
			return false;
		}

	out = malloc(cap);
	if (out == NULL)
		goto oom;
	ok &= h1_put(&out, &len, &cap, "POST ", 5);
	ok &= h1_put(&out, &len, &cap, *path ? path : "/", *path ? strlen(path) : 1);
	ok &= h1_put(&out, &len, &cap, " HTTP/1.1\r\nHost: ", 17);
	ok &= h1_put(&out, &len, &cap, req->h1_host, strlen(req->h1_host));
	ok &= h1_put(&out, &len, &cap, "\r\n", 2);
	for (i = 0; i < nheaders; i++)
	{
		ok &= h1_put(&out, &len, &cap, headers[i], strlen(headers[i]));
		ok &= h1_put(&out, &len, &cap, "\r\n", 2);
	}
	ok &= h1_put(&out, &len, &cap, user_agent, strlen(user_agent));
	snprintf(num, sizeof(num), "\r\nAccept: */*\r\nContent-Length: %zu\r\n\r\n", body_len);
	ok &= h1_put(&out, &len, &cap, num, strlen(num));
	if (!ok)
		goto oom;
	req->h1_head_len = len;
	if (!h1_put(&out, &len, &cap, body, body_len))
		goto oom;
	req->h1_out = out;
	req->h1_out_len = len;
	req->h1_start_us = req->h1_progress_us = rv_http_now_us();

	pool->active++;
	h1_timer_at(pool, req->h1_start_us + (int64) timeout_ms * 1000);
	h1_assign(pool, req);
	return true;

oom:
	if (out != NULL)
	{
		explicit_bzero(out, len);
		free(out);
	}
	snprintf(req->errbuf, sizeof(req->errbuf), "out of memory");
	return false;
}

/* Free what the request holds of this client (the head holds the key). */
static void
h1_req_free(RvHttpReq *req)
{
	if (req->h1_out != NULL)
	{
		explicit_bzero(req->h1_out, req->h1_head_len);
		free(req->h1_out);
	}
	req->h1_out = NULL;
	req->h1_out_len = req->h1_head_len = 0;
}

/* Register the events a connection waits for (no call when unchanged). */
static void
h1_want(H1Pool *pool, H1Conn *c, uint32 events)
{
	struct epoll_event ev;

	if (c->events == events)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.u64 = RV_H1_TAG | (uint64) (uint32) c->fd;
	if (epoll_ctl(pool->epfd, c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = events;
}

/*
 * The request ended with this code (its other fields set): hand it back,
 * and keep its connection for the next one when the exchange ended cleanly.
 */
static void
h1_finish(H1Pool *pool, RvHttpReq *req, CURLcode code)
{
	H1Conn	   *c = req->h1_conn;

	req->code = code;
	req->latency_ms = (rv_http_now_us() - req->h1_start_us) / 1000.0;
	req->h1_conn = NULL;
	h1_req_free(req);
	if (c != NULL)
	{
		c->req = NULL;
		if (code == CURLE_OK && c->keepalive && c->state == H1_RECEIVING &&
			c->ps == P_DONE && c->in_off == c->in_len)
		{
			c->served++;
			c->state = H1_IDLE;
			c->in_len = c->in_off = c->scan = 0;
			c->idle_since_us = rv_http_now_us();
			c->next_idle = pool->idle;
			pool->idle = c;
			h1_want(pool, c, EPOLLIN);	/* to see it close */
		}
		else
			h1_close(pool, c);
	}
	pool->active--;
	pool->done(pool->done_arg, req);
	h1_serve_queue(pool);
}

/* Fail the request with curl's code and a message. */
static void
h1_fail(H1Pool *pool, RvHttpReq *req, CURLcode code, const char *fmt,...) pg_attribute_printf(4, 5);

static void
h1_fail(H1Pool *pool, RvHttpReq *req, CURLcode code, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(req->errbuf, sizeof(req->errbuf), fmt, ap);
	va_end(ap);
	h1_finish(pool, req, code);
}

/*
 * A reused connection died before any byte of the reply (the server closed
 * it while idle, and the request crossed that): send the request again on
 * a new connection, as curl does.  False when that is not the case.
 */
static bool
h1_resend(H1Pool *pool, H1Conn *c)
{
	RvHttpReq  *req = c->req;

	if (req == NULL || c->served == 0 || req->h1_got || req->h1_fresh)
		return false;
	req->h1_conn = NULL;
	c->req = NULL;
	h1_close(pool, c);
	req->h1_fresh = true;
	h1_assign(pool, req);
	return true;
}

/* Append reply body bytes; false (the request failed) when too big. */
static bool
h1_body(H1Pool *pool, RvHttpReq *req, const char *p, size_t n)
{
	if (req->resp_len + n > req->resp_limit)
	{
		req->too_big = true;
		h1_fail(pool, req, CURLE_WRITE_ERROR, "the reply is larger than %zu bytes", req->resp_limit);
		return false;
	}
	if (req->resp_len + n + 1 > req->resp_cap)
	{
		size_t		cap = Max(Max(req->resp_cap * 2, req->resp_len + n + 1), 4096);
		char	   *r = realloc(req->resp, cap);

		if (r == NULL)
		{
			h1_fail(pool, req, CURLE_OUT_OF_MEMORY, "out of memory");
			return false;
		}
		req->resp = r;
		req->resp_cap = cap;
	}
	memcpy(req->resp + req->resp_len, p, n);
	req->resp_len += n;
	req->resp[req->resp_len] = '\0';
	return true;
}

/* Does the header value hold this token (comma-separated, any case)? */
static bool
h1_has_token(const char *v, size_t len, const char *tok)
{
	size_t		tl = strlen(tok);
	size_t		i = 0;

	while (i < len)
	{
		size_t		s,
					e;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && pg_strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

/*
 * Parse the header block in[from, end) (end just past the blank line).
 * Sets the parser's state for the body; false (request failed) on a reply
 * that is not HTTP/1.x.
 */
static bool
h1_head(H1Pool *pool, H1Conn *c, const char *h, size_t n)
{
	RvHttpReq  *req = c->req;
	const char *end = h + n;
	const char *p = h;
	const char *eol;
	int			minor;
	long		status;
	int64		clen = -1;
	bool		chunked = false;
	bool		close_conn = false;
	bool		keep = false;

	/* HTTP/1.x NNN reason */
	if (n < 12 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ' ||
		h[9] < '1' || h[9] > '5' || h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' ||
		(n > 12 && h[12] != ' ' && h[12] != '\r' && h[12] != '\n'))
	{
		h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY, "the server's reply is not HTTP/1.1");
		return false;
	}
	minor = h[7] - '0';
	status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	eol = memchr(p, '\n', end - p);
	p = eol ? eol + 1 : end;
	while (p < end)
	{
		const char *colon;
		const char *v;
		const char *ve;

		eol = memchr(p, '\n', end - p);
		if (eol == NULL)
			eol = end;
		ve = eol;
		if (ve > p && ve[-1] == '\r')
			ve--;
		if (ve == p)
			break;				/* the blank line */
		colon = memchr(p, ':', ve - p);
		if (colon == NULL || colon == p)
		{
			h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY, "the server's reply has a malformed header line");
			return false;
		}
		v = colon + 1;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
#define H1_NAME(s) ((size_t) (colon - p) == sizeof(s) - 1 && pg_strncasecmp(p, s, sizeof(s) - 1) == 0)
		if (H1_NAME("content-length"))
		{
			int64		x = 0;
			const char *d;

			if (v == ve)
				goto bad_length;
			for (d = v; d < ve; d++)
			{
				if (*d < '0' || *d > '9' || x > (PG_INT64_MAX - 9) / 10)
					goto bad_length;
				x = x * 10 + (*d - '0');
			}
			if (clen >= 0 && clen != x)
				goto bad_length;
			clen = x;
		}
		else if (H1_NAME("transfer-encoding"))
		{
			/* chunked must be the last coding; we asked for no other */
			if (!h1_has_token(v, ve - v, "chunked"))
			{
				h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
						"the server's reply has an unsupported Transfer-Encoding");
				return false;
			}
			chunked = true;
		}
		else if (H1_NAME("connection"))
		{
			close_conn |= h1_has_token(v, ve - v, "close");
			keep |= h1_has_token(v, ve - v, "keep-alive");
		}
		else if (H1_NAME("retry-after"))
			req->retry_after_ms = rv_http_retry_after(v, ve - v);
#undef H1_NAME
		p = eol + 1;
	}

	if (status < 200)
	{
		if (status == 101)
		{
			h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY, "the server switched protocols");
			return false;
		}
		/* 100 Continue, 103 Early Hints: the reply is yet to come */
		req->retry_after_ms = -1;
		c->ps = P_HEAD;
		return true;
	}
	req->status = status;
	c->keepalive = minor == 1 ? !close_conn : (keep && !close_conn);
	if (status == 204 || status == 304)
		c->ps = P_DONE;
	else if (chunked)
		c->ps = P_CHUNK_SIZE;
	else if (clen >= 0)
	{
		if ((uint64) clen > req->resp_limit)
		{
			req->too_big = true;
			h1_fail(pool, req, CURLE_WRITE_ERROR, "the reply is larger than %zu bytes", req->resp_limit);
			return false;
		}
		c->remain = clen;
		c->ps = clen > 0 ? P_LENGTH : P_DONE;
		/* room for the announced body, up to a bound: it grows as it comes */
		if (clen > 0 && (size_t) Min(clen, H1_PREALLOC_MAX) + 1 > req->resp_cap)
		{
			size_t		want = (size_t) Min(clen, H1_PREALLOC_MAX) + 1;
			char	   *r = realloc(req->resp, want);

			if (r != NULL)
			{
				req->resp = r;
				req->resp_cap = want;
			}
		}
	}
	else
	{
		c->ps = P_TO_EOF;
		c->keepalive = false;
	}
	return true;

bad_length:
	h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY, "the server's reply has an invalid Content-Length");
	return false;
}

/*
 * Parse what arrived.  Returns false when the request ended (finished or
 * failed; c may be gone), true when more is needed.
 */
static bool
h1_parse(H1Pool *pool, H1Conn *c)
{
	RvHttpReq  *req = c->req;

	while (c->in_off < c->in_len || c->ps == P_DONE)
	{
		char	   *p = c->in + c->in_off;
		size_t		avail = c->in_len - c->in_off;

		switch (c->ps)
		{
			case P_HEAD:
				{
					char	   *s = c->in + Max(c->scan, c->in_off);
					char	   *e = NULL;

					/* the blank line: CR LF CR LF (or LF LF) */
					for (; s < c->in + c->in_len; s++)
						if (*s == '\n' &&
							((s >= c->in + c->in_off + 1 && s[-1] == '\n') ||
							 (s >= c->in + c->in_off + 3 && s[-1] == '\r' && s[-2] == '\n')))
						{
							e = s + 1;
							break;
						}
					if (e == NULL)
					{
						c->scan = c->in_len;
						if (avail > H1_HEAD_MAX)
						{
							h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
									"the server's reply headers are longer than %d bytes", H1_HEAD_MAX);
							return false;
						}
						return true;
					}
					if ((size_t) (e - p) > H1_HEAD_MAX)
					{
						h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
								"the server's reply headers are longer than %d bytes", H1_HEAD_MAX);
						return false;
					}
					c->in_off = e - c->in;
					c->scan = c->in_off;
					if (!h1_head(pool, c, p, e - p))
						return false;
					break;
				}
			case P_LENGTH:
			case P_CHUNK_DATA:
				{
					size_t		k = Min((uint64) avail, (uint64) c->remain);

					if (!h1_body(pool, req, p, k))
						return false;
					c->in_off += k;
					c->remain -= k;
					if (c->remain == 0)
						c->ps = c->ps == P_LENGTH ? P_DONE : P_CHUNK_END;
					break;
				}
			case P_CHUNK_SIZE:
			case P_CHUNK_END:
			case P_TRAILER:
				{
					char	   *nl = memchr(p, '\n', avail);
					size_t		ll;

					if (nl == NULL)
					{
						if (avail > H1_LINE_MAX)
						{
							h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
									"the server's reply has a malformed chunk");
							return false;
						}
						return true;
					}
					ll = nl - p;
					if (ll > 0 && p[ll - 1] == '\r')
						ll--;
					c->in_off += (nl - p) + 1;
					if (c->ps == P_CHUNK_END)
					{
						if (ll != 0)
						{
							h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
									"the server's reply has a malformed chunk");
							return false;
						}
						c->ps = P_CHUNK_SIZE;
					}
					else if (c->ps == P_TRAILER)
					{
						if (ll == 0)
							c->ps = P_DONE;
					}
					else
					{
						int64		size = 0;
						size_t		i;
						int			digits = 0;

						for (i = 0; i < ll; i++)
						{
							char		ch = p[i];
							int			d;

							if (ch >= '0' && ch <= '9')
								d = ch - '0';
							else if (ch >= 'a' && ch <= 'f')
								d = ch - 'a' + 10;
							else if (ch >= 'A' && ch <= 'F')
								d = ch - 'A' + 10;
							else
								break;
							if (++digits > 15)
								break;
							size = size * 16 + d;
						}
						if (digits == 0 || digits > 15 ||
							(i < ll && p[i] != ';' && p[i] != ' ' && p[i] != '\t'))
						{
							h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
									"the server's reply has a malformed chunk");
							return false;
						}
						if (size == 0)
							c->ps = P_TRAILER;
						else
						{
							c->remain = size;
							c->ps = P_CHUNK_DATA;
						}
					}
					break;
				}
			case P_TO_EOF:
				if (!h1_body(pool, req, p, avail))
					return false;
				c->in_off = c->in_len;
				break;
			case P_DONE:
				/* a reply that came before the body was sent: not reused */
				if (c->state == H1_SENDING)
					c->keepalive = false;
				h1_finish(pool, req, CURLE_OK);
				return false;
		}
	}
	/* all parsed: reuse the buffer from its start */
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = c->scan = 0;
	return true;
}

/* Read what the socket has; false when the request ended. */
static bool
h1_read(H1Pool *pool, H1Conn *c)
{
	RvHttpReq  *req = c->req;

	for (;;)
	{
		ssize_t		n;
		size_t		room;

		/* a header block (or line) split over reads: move it to the front */
		if (c->in_off > 0 && c->in_len == c->in_cap)
		{
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->scan -= Min(c->scan, c->in_off);
			c->in_off = 0;
		}
		if (c->in_len == c->in_cap)
		{
			/* first use, or a header block larger than the buffer */
			size_t		cap = c->in_cap == 0 ? H1_IN_SIZE : c->in_cap * 2;
			char	   *b;

			if (cap > 2 * H1_HEAD_MAX)
			{
				h1_fail(pool, req, CURLE_WEIRD_SERVER_REPLY,
						"the server's reply headers are longer than %d bytes", H1_HEAD_MAX);
				return false;
			}
			b = realloc(c->in, cap);
			if (b == NULL)
			{
				h1_fail(pool, req, CURLE_OUT_OF_MEMORY, "out of memory");
				return false;
			}
			c->in = b;
			c->in_cap = cap;
		}
		room = c->in_cap - c->in_len;
		n = recv(c->fd, c->in + c->in_len, room, 0);
		if (n > 0)
		{
			req->h1_got = true;
			req->h1_progress_us = rv_http_now_us();
			c->in_len += n;
			if (!h1_parse(pool, c))
				return false;
			if ((size_t) n < room)
				return true;	/* drained (epoll tells when more comes) */
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		/* the connection ended or failed */
		if (n == 0 && c->ps == P_TO_EOF)
		{
			c->ps = P_DONE;
			c->keepalive = false;
			return h1_parse(pool, c);
		}
		if (h1_resend(pool, c))
			return false;
		if (n < 0)
			h1_fail(pool, req, CURLE_RECV_ERROR, "Recv failure: %s", strerror(errno));
		else if (!req->h1_got)
			h1_fail(pool, req, CURLE_GOT_NOTHING, "Empty reply from server");
		else if (c->ps == P_LENGTH)
			h1_fail(pool, req, CURLE_PARTIAL_FILE,
					"transfer closed with " INT64_FORMAT " bytes remaining to read", c->remain);
		else
			h1_fail(pool, req, CURLE_PARTIAL_FILE, "the connection closed before the reply was complete");
		return false;
	}
}

/* Send what is left of the request; false when the request ended. */
static bool
h1_write(H1Pool *pool, H1Conn *c)
{
	RvHttpReq  *req = c->req;
	ssize_t		n;

	while (c->state == H1_SENDING)
	{
		n = send(c->fd, req->h1_out + c->out_off, req->h1_out_len - c->out_off, MSG_NOSIGNAL);
		if (n > 0)
		{
			req->sent = true;
			req->h1_progress_us = rv_http_now_us();
			c->out_off += n;
			if (c->out_off == req->h1_out_len)
			{
				c->state = H1_RECEIVING;
				h1_want(pool, c, EPOLLIN);
				return true;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		{
			h1_want(pool, c, EPOLLIN | EPOLLOUT);
			return true;
		}
		if (h1_resend(pool, c))
			return false;
		h1_fail(pool, req, CURLE_SEND_ERROR, "Send failure: %s", strerror(errno));
		return false;
	}
	return true;
}

/* Start sending req on connection c (connected, idle). */
static void
h1_begin(H1Pool *pool, H1Conn *c, RvHttpReq *req)
{
	c->req = req;
	req->h1_conn = c;
	req->connected = true;
	c->state = H1_SENDING;
	c->ps = P_HEAD;
	c->in_len = c->in_off = c->scan = 0;
	c->out_off = 0;
	c->remain = 0;
	c->keepalive = true;
	req->h1_progress_us = rv_http_now_us();
	if (req->stall_ms > 0)
		h1_timer_at(pool, req->h1_progress_us + (int64) req->stall_ms * 1000);
	(void) h1_write(pool, c);
}

/* A new connection for req; false when there is no descriptor for one. */
static bool
h1_connect(H1Pool *pool, RvHttpReq *req)
{
	H1Conn	   *c;
	int			fd;
	int			one = 1;

	fd = socket(req->h1_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		if ((errno == EMFILE || errno == ENFILE) && pool->nconns > 0)
		{
			/* no descriptor: wait for a connection to free one */
			pool->max_conns = Max(pool->nconns, 1);
			return false;
		}
		h1_fail(pool, req, CURLE_COULDNT_CONNECT, "could not create a socket: %s", strerror(errno));
		return true;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	if (fd >= pool->byfd_len)
	{
		int			n = Max(fd + 1, pool->byfd_len * 2);
		H1Conn	  **b = realloc(pool->byfd, n * sizeof(H1Conn *));

		if (b == NULL)
		{
			close(fd);
			h1_fail(pool, req, CURLE_OUT_OF_MEMORY, "out of memory");
			return true;
		}
		memset(b + pool->byfd_len, 0, (n - pool->byfd_len) * sizeof(H1Conn *));
		pool->byfd = b;
		pool->byfd_len = n;
	}
	c = calloc(1, sizeof(H1Conn));
	if (c == NULL)
	{
		close(fd);
		h1_fail(pool, req, CURLE_OUT_OF_MEMORY, "out of memory");
		return true;
	}
	c->fd = fd;
	c->addr = req->h1_addr;
	c->addrlen = req->h1_addrlen;
	pool->byfd[fd] = c;
	pool->nconns++;
	c->req = req;
	req->h1_conn = c;
	if (connect(fd, (struct sockaddr *) &req->h1_addr, req->h1_addrlen) == 0)
	{
		c->req = NULL;
		h1_begin(pool, c, req);
		return true;
	}
	if (errno == EINPROGRESS)
	{
		c->state = H1_CONNECTING;
		/* the connect and the stall clocks start now, not when queued */
		req->h1_connect_us = req->h1_progress_us = rv_http_now_us();
		h1_timer_at(pool, req->h1_connect_us + (int64) req->h1_connect_ms * 1000);
		h1_want(pool, c, EPOLLOUT);
		return true;
	}
	h1_fail(pool, req, CURLE_COULDNT_CONNECT, "Failed to connect to %s: %s",
			req->h1_host, strerror(errno));
	return true;
}

/*
 * Has an idle connection nothing to read?  Bytes the server sent past the
 * last reply (still in the kernel when that reply ended at a buffer's end,
 * or come since) or its close make it unusable: a request sent on it would
 * take those bytes for its answer.
 */
static bool
h1_quiet(const H1Conn *c)
{
	char		b;
	ssize_t		n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static bool
h1_same_addr(const H1Conn *c, const RvHttpReq *req)
{
	return c->addrlen == req->h1_addrlen && memcmp(&c->addr, &req->h1_addr, c->addrlen) == 0;
}

/*
 * Give req a connection: an idle one to its server, a new one, or (none
 * to be had) a place in the queue.
 */
static void
h1_assign(H1Pool *pool, RvHttpReq *req)
{
	H1Conn	  **p;
	int64		now = 0;

	if (!req->h1_fresh)
	{
		for (p = &pool->idle; *p != NULL;)
		{
			H1Conn	   *c = *p;

			if (!h1_same_addr(c, req))
			{
				p = &c->next_idle;
				continue;
			}
			if (now == 0)
				now = rv_http_now_us();
			*p = c->next_idle;
			c->next_idle = NULL;
			if (now - c->idle_since_us > H1_IDLE_MAX_US || !h1_quiet(c))
			{
				h1_close(pool, c);	/* too old to trust, closed, or not quiet */
				continue;
			}
			h1_begin(pool, c, req);
			return;
		}
	}
	if (pool->nconns >= pool->max_conns && pool->idle != NULL)
	{
		/* an idle connection to another server makes room */
		H1Conn	  **last = &pool->idle;

		while ((*last)->next_idle != NULL)
			last = &(*last)->next_idle;
		h1_close(pool, *last);
	}
	if (pool->nconns < pool->max_conns && h1_connect(pool, req))
		return;
	req->h1_queued = true;
	req->h1_next = NULL;
	if (pool->queue_tail)
		pool->queue_tail->h1_next = req;
	else
		pool->queue_head = req;
	pool->queue_tail = req;
}

/* Connections came free: start what waits for one. */
static void
h1_serve_queue(H1Pool *pool)
{
	if (pool->serving)
		return;					/* the loop below (or the caller) goes on */
	pool->serving = true;
	while (pool->queue_head != NULL &&
		   (pool->idle != NULL || pool->nconns < pool->max_conns))
	{
		RvHttpReq  *req = pool->queue_head;

		pool->queue_head = req->h1_next;
		if (pool->queue_head == NULL)
			pool->queue_tail = NULL;
		req->h1_next = NULL;
		req->h1_queued = false;
		h1_assign(pool, req);
		if (req->h1_queued)
			break;				/* back in the queue: no connection after all */
	}
	pool->serving = false;
}

static void
h1_unqueue(H1Pool *pool, RvHttpReq *req)
{
	RvHttpReq **p = &pool->queue_head;

	pool->queue_tail = NULL;
	while (*p != NULL)
	{
		if (*p == req)
			*p = req->h1_next;
		else
		{
			pool->queue_tail = *p;
			p = &(*p)->h1_next;
		}
	}
	req->h1_queued = false;
	req->h1_next = NULL;
}

bool
rv_h1_cancel(H1Pool *pool, RvHttpReq *req)
{
	if (req->h1_queued)
		h1_unqueue(pool, req);
	else if (req->h1_conn != NULL)
	{
		H1Conn	   *c = req->h1_conn;

		c->req = NULL;
		req->h1_conn = NULL;
		h1_close(pool, c);		/* mid-exchange: not reusable */
	}
	else
		return false;			/* finished already */
	h1_req_free(req);
	pool->active--;
	h1_serve_queue(pool);
	return true;
}

void
rv_h1_event(H1Pool *pool, int fd, uint32 events)
{
	H1Conn	   *c;

	if (fd < 0 || fd >= pool->byfd_len || (c = pool->byfd[fd]) == NULL)
		return;
	switch (c->state)
	{
		case H1_IDLE:
			{
				char		b[64];
				ssize_t		n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

				/* closed by the server, or it sent what nobody asked for */
				if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
					h1_close(pool, c);
				return;
			}
		case H1_CONNECTING:
			{
				int			err = 0;
				socklen_t	len = sizeof(err);
				RvHttpReq  *req = c->req;

				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
					err = errno;
				if (err == EINPROGRESS || err == EALREADY)
					return;
				if (err != 0)
				{
					h1_fail(pool, req, CURLE_COULDNT_CONNECT, "Failed to connect to %s: %s",
							req->h1_host, strerror(err));
					return;
				}
				c->req = NULL;
				h1_begin(pool, c, req);
				return;
			}
		case H1_SENDING:
			/* a reply (or a refusal) may come before the body is all sent */
			if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !h1_read(pool, c))
				return;
			if (c->state == H1_SENDING && (events & (EPOLLOUT | EPOLLERR)))
				(void) h1_write(pool, c);
			return;
		case H1_RECEIVING:
			(void) h1_read(pool, c);
			return;
	}
}

int64
rv_h1_next_timer(H1Pool *pool)
{
	return pool->active > 0 ? pool->next_timer_us : -1;
}

/* The request's earliest deadline, and whether (which) one has passed. */
static int64
h1_deadline(const RvHttpReq *req, int64 now, int *which)
{
	int64		total = req->h1_start_us + (int64) req->h1_timeout_ms * 1000;
	int64		d = total;

	*which = 0;
	if (req->h1_conn != NULL && req->h1_conn->state == H1_CONNECTING)
		d = Min(d, req->h1_connect_us + (int64) req->h1_connect_ms * 1000);
	if (req->stall_ms > 0 && !req->h1_queued)
		d = Min(d, req->h1_progress_us + (int64) req->stall_ms * 1000);
	if (d <= now)
	{
		if (total <= now)
			*which = 1;
		else if (req->h1_conn != NULL && req->h1_conn->state == H1_CONNECTING &&
				 req->h1_connect_us + (int64) req->h1_connect_ms * 1000 <= now)
			*which = 2;
		else
			*which = 3;
	}
	return d;
}

/* End what is past a deadline; find the next one. */
void
rv_h1_timers(H1Pool *pool, int64 now)
{
	int64		next = -1;
	int			i;
	RvHttpReq  *req;
	RvHttpReq  *expired = NULL;

	if (pool->next_timer_us < 0 || now < pool->next_timer_us)
		return;
	/* collect first: failing one may start (or end) others */
	for (i = 0; i < pool->byfd_len; i++)
	{
		H1Conn	   *c = pool->byfd[i];
		int			which;
		int64		d;

		if (c == NULL || c->req == NULL)
			continue;
		d = h1_deadline(c->req, now, &which);
		if (which != 0)
		{
			c->req->next_done = expired;
			expired = c->req;
		}
		else if (next < 0 || d < next)
			next = d;
	}
	for (req = pool->queue_head; req != NULL; req = req->h1_next)
	{
		int			which;
		int64		d = h1_deadline(req, now, &which);

		if (which != 0)
		{
			req->next_done = expired;
			expired = req;
		}
		else if (next < 0 || d < next)
			next = d;
	}
	pool->next_timer_us = next;
	/* no queued request starts (and no list changes) while these end */
	pool->serving = true;
	while (expired != NULL)
	{
		int			which;
		RvHttpReq  *r = expired;

		expired = r->next_done;
		r->next_done = NULL;
		(void) h1_deadline(r, now, &which);
		if (r->h1_queued)
			h1_unqueue(pool, r);
		if (which == 1)
			h1_fail(pool, r, CURLE_OPERATION_TIMEDOUT,
					"Operation timed out after %ld milliseconds with %zu bytes received",
					r->h1_timeout_ms, r->resp_len);
		else if (which == 2)
			h1_fail(pool, r, CURLE_OPERATION_TIMEDOUT,
					"Connection timed out after %ld milliseconds", r->h1_connect_ms);
		else
		{
			r->stalled = true;
			h1_fail(pool, r, CURLE_OPERATION_TIMEDOUT,
					"Operation too slow: nothing sent or received for %ld ms", r->stall_ms);
		}
	}
	pool->serving = false;
	h1_serve_queue(pool);
}
