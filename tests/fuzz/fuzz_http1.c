/*-------------------------------------------------------------------------
 *
 * fuzz_http1.c
 *	  Fuzz target for the reply parser of rvbbit's HTTP/1.1 client
 *	  (src/http1.c, compiled into this file).
 *
 * The first byte picks the reply size limit and how the rest is cut into
 * reads; the rest is the server's reply.  It is written into one end of a
 * socket pair, piece by piece, and the client's own read path (h1_read,
 * with its buffer handling and parser) reads it from the other end, as
 * from a server; then the server end closes.  Besides the sanitizers, it
 * aborts when:
 *	- the request did not end (every reply ends at its end or the close);
 *	- it ended well with a body larger than the limit, or a body that is not
 *	  NUL-terminated;
 *	- the outcome (code, status, and the body of a good reply) differs from
 *	  that of the same reply read in one piece.
 *
 *-------------------------------------------------------------------------
 */
#include "../../src/http1.c"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* http.c's, which this target does not link */
int64
rv_http_now_us(void)
{
	return 0;
}

long
rv_http_retry_after(const char *value, size_t len)
{
	return len > 0 && value[0] >= '0' && value[0] <= '9' ? (value[0] - '0') * 1000L : -1;
}

typedef struct FzOutcome
{
	bool		ended;
	CURLcode	code;
	long		status;
	bool		too_big;
	size_t		len;
	char	   *body;
} FzOutcome;

static void
fz_done(void *arg, RvHttpReq *req)
{
	FzOutcome  *o = (FzOutcome *) arg;

	o->ended = true;
	o->code = req->code;
	o->status = req->status;
	o->too_big = req->too_big;
	o->len = req->resp_len;
	if (req->code == CURLE_OK)
	{
		if (req->resp_len > req->resp_limit)
			abort();
		if (req->resp != NULL && req->resp[req->resp_len] != '\0')
			abort();
	}
	if (req->resp_len > 0)
	{
		o->body = malloc(req->resp_len);
		if (o->body == NULL)
			abort();
		memcpy(o->body, req->resp, req->resp_len);
	}
}

/* Read the reply through the client, cut into pieces of step bytes (0: whole). */
static void
fz_run(const uint8_t *data, size_t size, size_t limit, size_t step, FzOutcome *o)
{
	int			sv[2];
	H1Pool	   *pool;
	H1Conn	   *c;
	RvHttpReq  *req;
	size_t		off = 0;

	memset(o, 0, sizeof(*o));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		abort();
	{
		int			big = 1 << 20;

		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	pool = rv_h1_create(-1, 4, fz_done, o);
	c = calloc(1, sizeof(H1Conn));
	req = calloc(1, sizeof(RvHttpReq));
	if (pool == NULL || c == NULL || req == NULL)
		abort();
	req->resp_limit = limit;
	req->retry_after_ms = -1;
	req->h1 = true;
	req->h1_conn = c;
	c->fd = sv[1];
	c->state = H1_RECEIVING;
	c->ps = P_HEAD;
	c->keepalive = true;
	c->req = req;
	pool->byfd = calloc(sv[1] + 1, sizeof(H1Conn *));
	if (pool->byfd == NULL)
		abort();
	pool->byfd_len = sv[1] + 1;
	pool->byfd[sv[1]] = c;
	pool->nconns = 1;
	pool->active = 1;

	while (!o->ended && off < size)
	{
		size_t		k = step == 0 ? size - off : Min(step, size - off);
		ssize_t		n = send(sv[0], data + off, k, MSG_NOSIGNAL);

		if (n <= 0)
			abort();
		off += n;
		if (!h1_read(pool, c))
			break;
	}
	if (!o->ended)
	{
		close(sv[0]);
		sv[0] = -1;
		(void) h1_read(pool, c);
	}
	if (!o->ended)
		abort();				/* the close ends every reply */
	if (sv[0] >= 0)
		close(sv[0]);
	free(req->resp);
	free(req);
	/* closes the connection if it went back to the idle list */
	rv_h1_destroy(pool);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = {0, 16, 300, 100000};
	FzOutcome	whole,
				cut;
	size_t		limit;
	size_t		step;

	if (size < 1)
		return 0;
	limit = limits[data[0] & 3];
	step = 1 + (data[0] >> 2);	/* 1 to 64 bytes a read */
	data++;
	size--;

	fz_run(data, size, limit, 0, &whole);
	fz_run(data, size, limit, step, &cut);
	/* the body counts when the reply was good (a failed one is dropped) */
	if (whole.code != cut.code || whole.status != cut.status || whole.too_big != cut.too_big ||
		(whole.code == CURLE_OK &&
		 (whole.len != cut.len || (whole.len > 0 && memcmp(whole.body, cut.body, whole.len) != 0))))
	{
		fprintf(stderr, "outcome differs: whole %d/%ld/%zu, in pieces of %zu %d/%ld/%zu\n",
				whole.code, whole.status, whole.len, step, cut.code, cut.status, cut.len);
		abort();
	}
	free(whole.body);
	free(cut.body);
	return 0;
}
