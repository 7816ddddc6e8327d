/*-------------------------------------------------------------------------
 *
 * gw_main.c
 *	  rvbbit-gateway: a PostgreSQL v3 wire-protocol relay that lets any
 *	  client send literal RVBBIT statements.
 *
 * Each client connection is paired with one upstream connection to the
 * server over TCP loopback for the whole session (no pooling).  Every byte
 * is relayed unchanged except Query ('Q') and Parse ('P') messages holding
 * RVBBIT statements, which gw_rewrite.c wraps into rvbbit.sql() calls.
 *
 * One process, one epoll set, non-blocking sockets, level-triggered.  A
 * side is read only while its peer's output buffer is below GW_HIGH_WATER
 * (back-pressure); idle sessions hold no buffer memory and never time out.
 *
 * First packet (as the server's ProcessStartupPacket): SSLRequest is
 * answered 'S' (TLS terminated here with OpenSSL) when a certificate is
 * configured, else 'N'; GSSENCRequest is answered 'N'; CancelRequest is
 * forwarded verbatim on a fresh upstream connection; a 3.x StartupMessage
 * is forwarded verbatim (the server itself answers newer minor versions
 * with NegotiateProtocolVersion, which passes through); a direct TLS start
 * (first byte 0x16) is closed.  Exactly the bytes of the first packet are
 * read, so no plaintext can be buffered across the start of TLS.  A client
 * has --startup-timeout seconds (the server's authentication_timeout under
 * the supervisor) to get its StartupMessage or CancelRequest through;
 * after that the server's own timeout covers authentication, and a
 * session never times out once it is relaying.
 *
 * Authentication is relayed byte for byte (SCRAM runs end to end between
 * the client and the server).  A server that sends AuthenticationOk with
 * no challenge before it (trust, or peer-like methods) is refused with a
 * FATAL error unless --allow-trust, so the gateway never turns a loopback
 * trust line of pg_hba.conf into access for remote clients.
 *
 * Run by the rvbbit supervisor background worker (src/gateway_sup.c),
 * which passes --parent-fd: the gateway exits when that pipe reports EOF
 * (the supervisor, hence the postmaster, is gone), and PR_SET_PDEATHSIG
 * backs that up.  Standalone: rvbbit-gateway --listen HOST:PORT --upstream
 * HOST:PORT.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gw.h"

#define GW_VERSION		"0.2"
#define GW_HIGH_WATER	(256 * 1024)	/* stop reading the peer above this */
#define GW_READ_CHUNK	(64 * 1024)
#define GW_MAX_LISTEN	32

typedef enum
{
	EP_LISTEN,
	EP_PARENT,
	EP_CONN
} EpKind;

/* what an epoll event points at: a listening socket, the parent pipe or a connection */
typedef struct EpItem
{
	EpKind		kind;
	int			fd;
} EpItem;

typedef enum
{
	S_FIRST,					/* reading the first packet */
	S_TLS,						/* TLS handshake under way */
	S_RELAY,					/* startup forwarded: relaying */
	S_CANCEL					/* forwarding a CancelRequest */
} SessState;

struct Session;

typedef struct Conn
{
	EpItem		ep;				/* must be first */
	struct Session *sess;
	bool		is_client;
	SSL		   *ssl;
	GwBuf		out;			/* bytes to write to this connection */
	bool		readable;		/* epoll said so and no EAGAIN since */
	bool		wblocked;		/* last write would block: wait for EPOLLOUT */
	bool		eof;			/* read side saw EOF */
	bool		shut_wr;		/* we shut down our write side */
	bool		connecting;		/* non-blocking connect() under way */
	bool		tls_wants_write;	/* an SSL call needs the socket writable */
	bool		tls_wants_read; /* an SSL_write needs the socket readable */
	uint32_t	mask;			/* registered epoll events */
	bool		registered;		/* in the epoll set */
} Conn;

/*
 * The position map of a rewritten Query or Parse, waiting for the answer
 * to it: the messages the server sends before its ReadyForQuery number
 * group (the ReadyForQuery that ends the Query, or the Sync after the
 * Parse).  Only rewritten messages have one; any other answer has its
 * positions right already.
 */
typedef struct PosWait
{
	uint64_t	group;
	GwPosMap	map;
	struct PosWait *next;
} PosWait;

typedef struct Session
{
	Conn		cli;
	Conn		up;
	SessState	state;
	unsigned char *first;		/* the first packet (GW_MAX_STARTUP bytes),
								 * freed once the startup is forwarded */
	uint32_t	first_have;
	bool		tls_done;
	bool		ssl_asked;		/* an SSLRequest was answered */
	bool		gss_asked;		/* a GSSENCRequest was answered */
	GwFramer	from_cli;
	GwFramer	from_up;
	bool		challenge_seen; /* an authentication request before Ok */
	bool		auth_ok;
	GwBuf		held;			/* client messages held until auth_ok */
	bool		holding;		/* held has (or is collecting) a message */
	bool		held_overflow;	/* over GW_MAX_HELD: the session ends */
	bool		std_strings;
	bool		unsafe_encoding;
	int			enc_kind;		/* GW_ENC_*: how the server counts characters */
	int			client_enc_kind;	/* GW_ENC_* of client_encoding */
	bool		server_sql_ascii;	/* server_encoding is SQL_ASCII */
	PosWait    *pos_head;		/* maps of rewritten messages, oldest first */
	PosWait    *pos_tail;
	uint64_t	msg_syncs;		/* client_syncs as of the message in cli_message */
	bool		copy_in;		/* the server is in COPY FROM STDIN */
	uint64_t	client_syncs;	/* Query, Sync, FunctionCall sent */
	uint64_t	server_syncs;	/* ReadyForQuery received */
	uint64_t	unsure_until;	/* no rewriting before this many ReadyForQuery */
	bool		closing;		/* flush the client, then close */
	bool		dead;
	struct Session *next_dead;
	/* on the startup list (no StartupMessage or CancelRequest yet) */
	bool		in_startup;
	int64_t		startup_deadline;	/* CLOCK_MONOTONIC, ms */
	struct Session *st_prev;
	struct Session *st_next;
} Session;

/* configuration */
static char *listen_specs[GW_MAX_LISTEN];
static int	nlisten_specs;
static struct sockaddr_storage upstream_addr;
static socklen_t upstream_addrlen;
static char *upstream_spec = "127.0.0.1:5432";
static bool allow_trust = false;
static char *ssl_cert = NULL;
static char *ssl_key = NULL;
static int	parent_fd = -1;
static SSL_CTX *ssl_ctx = NULL;
static int	startup_timeout = 60;	/* seconds; 0: none */

/* state */
static int	epfd = -1;
static EpItem listeners[GW_MAX_LISTEN * 4];
static int	nlisteners;
static EpItem parent_item;
static int	spare_fd = -1;
static Session *dead_list = NULL;

/*
 * Sessions that have not sent their StartupMessage (or CancelRequest) yet,
 * oldest first: every deadline is its accept time plus the same timeout,
 * so the list is in deadline order.  A client that sends its first packets
 * slowly, or never, is closed at its deadline, as the server does with
 * authentication_timeout; afterwards the server's own timeout applies.
 */
static Session *startup_head = NULL;
static Session *startup_tail = NULL;
static long nsessions = 0;
static volatile sig_atomic_t got_term = 0;
static volatile sig_atomic_t got_trust = -1;
static char scratch[GW_READ_CHUNK];

static void session_pump(Session *s);

/* Log a line to stderr, which the supervisor leaves pointing at the server's log. */
static void
gw_log(const char *level, const char *fmt,...)
{
	va_list		ap;
	char		line[1024];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "rvbbit-gateway[%d]: %s:  %s\n", (int) getpid(), level, line);
}

static void
on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_trust = 1;
	else if (sig == SIGUSR2)
		got_trust = 0;
	else
		got_term = 1;
}

/* ----------------------------------------------------------------
 * Messages the gateway itself sends
 * ----------------------------------------------------------------
 */

/* Append one field of an ErrorResponse. */
static void
err_field(GwBuf *b, char code, const char *value)
{
	if (value == NULL)
		return;
	gw_buf_append(b, &code, 1);
	gw_buf_append(b, value, strlen(value) + 1);
}

/*
 * Append a FATAL ErrorResponse to out (the session ends after it).
 * detail and hint may be NULL.
 */
static void
send_fatal(GwBuf *out, const char *sqlstate, const char *msg,
		   const char *detail, const char *hint)
{
	GwBuf		body = {0};

	err_field(&body, 'S', "FATAL");
	err_field(&body, 'V', "FATAL");
	err_field(&body, 'C', sqlstate);
	err_field(&body, 'M', msg);
	err_field(&body, 'D', detail);
	err_field(&body, 'H', hint);
	gw_buf_append(&body, "", 1);
	gw_frame_append_header(out, 'E', (uint32_t) body.len);
	gw_buf_append(out, body.data, body.len);
	gw_buf_free(&body);
}

/* ----------------------------------------------------------------
 * Connections
 * ----------------------------------------------------------------
 */

/* Register or update a connection's epoll events (0: registered, none wanted). */
static void
conn_set_mask(Conn *c, uint32_t mask)
{
	struct epoll_event ev;

	if (c->ep.fd < 0 || (c->registered && mask == c->mask))
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = mask;
	ev.data.ptr = &c->ep;
	if (epoll_ctl(epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
				  c->ep.fd, &ev) == 0)
	{
		c->registered = true;
		c->mask = mask;
	}
}

static void
conn_close(Conn *c)
{
	if (c->ssl)
	{
		if (!c->eof && !c->shut_wr)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->ep.fd >= 0)
	{
		int			i;

		/*
		 * Read what the peer already sent (bounded): closing a socket with
		 * unread bytes resets the connection instead of closing it.
		 */
		for (i = 0; i < 4 && recv(c->ep.fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0; i++)
			;
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->ep.fd, NULL);
		close(c->ep.fd);
		c->ep.fd = -1;
	}
	c->mask = 0;
	c->registered = false;
	gw_buf_free(&c->out);
}

/*
 * Read up to cap bytes.  Returns the count, 0 at EOF, -1 when nothing is
 * available now, -2 on an error.
 */
static ssize_t
conn_read(Conn *c, char *buf, size_t cap)
{
	ssize_t		r;

	if (c->ssl)
	{
		int			n = SSL_read(c->ssl, buf, (int) cap);
		int			e;

		if (n > 0)
			return n;
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
		{
			c->readable = false;
			return -1;
		}
		if (e == SSL_ERROR_WANT_WRITE)
		{
			c->tls_wants_write = true;
			return -1;
		}
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		ERR_clear_error();
		return -2;
	}
	r = recv(c->ep.fd, buf, cap, 0);
	if (r >= 0)
		return r;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
	{
		c->readable = false;
		return -1;
	}
	if (errno == EINTR)
		return -1;
	return -2;
}

/* Write what is pending.  Returns false on an error (the session ends). */
static bool
conn_flush(Conn *c)
{
	while (gw_buf_pending(&c->out) > 0 && !c->wblocked && !c->connecting)
	{
		size_t		n = gw_buf_pending(&c->out);

		if (c->ssl)
		{
			int			w;
			int			e;

			c->tls_wants_read = false;
			w = SSL_write(c->ssl, c->out.data + c->out.off,
						  (int) (n > (1 << 20) ? (1 << 20) : n));
			if (w > 0)
			{
				gw_buf_consume(&c->out, w);
				continue;
			}
			e = SSL_get_error(c->ssl, w);
			if (e == SSL_ERROR_WANT_WRITE)
				c->wblocked = true;
			else if (e == SSL_ERROR_WANT_READ)
			{
				c->tls_wants_read = true;
				return true;
			}
			else
			{
				ERR_clear_error();
				return false;
			}
		}
		else
		{
			ssize_t		w = send(c->ep.fd, c->out.data + c->out.off, n,
								 MSG_NOSIGNAL);

			if (w >= 0)
				gw_buf_consume(&c->out, w);
			else if (errno == EAGAIN || errno == EWOULDBLOCK)
				c->wblocked = true;
			else if (errno != EINTR)
				return false;
		}
	}
	return true;
}

/* Set the usual options of a relayed socket. */
static void
tune_socket(int fd, bool keepalive)
{
	int			one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (keepalive)
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

/*
 * Start the non-blocking connection to the upstream server.  Returns false
 * (after queueing an error for the client) when it cannot even start.
 */
static bool
upstream_connect(Session *s)
{
	int			fd;

	fd = socket(upstream_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	tune_socket(fd, false);
	s->up.ep.fd = fd;
	if (connect(fd, (struct sockaddr *) &upstream_addr, upstream_addrlen) != 0)
	{
		if (errno != EINPROGRESS)
			goto fail;
		s->up.connecting = true;
		s->up.wblocked = true;	/* wait for EPOLLOUT */
	}
	conn_set_mask(&s->up, EPOLLOUT);
	return true;

fail:
	{
		char		detail[256];

		snprintf(detail, sizeof(detail), "Connecting to %s failed: %s.",
				 upstream_spec, strerror(errno));
		if (s->state != S_CANCEL)
			send_fatal(&s->cli.out, "08006",
					   "the rvbbit gateway could not connect to the server",
					   detail, NULL);
		gw_log("LOG", "could not connect to the server at %s: %s",
			   upstream_spec, strerror(errno));
	}
	return false;
}

/* ----------------------------------------------------------------
 * Sessions
 * ----------------------------------------------------------------
 */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Put a new session at the end of the startup list. */
static void
startup_list_add(Session *s)
{
	if (startup_timeout <= 0)
		return;
	s->in_startup = true;
	s->startup_deadline = now_ms() + (int64_t) startup_timeout * 1000;
	s->st_prev = startup_tail;
	s->st_next = NULL;
	if (startup_tail)
		startup_tail->st_next = s;
	else
		startup_head = s;
	startup_tail = s;
}

/* Take a session off the startup list (its first packets are done). */
static void
startup_list_remove(Session *s)
{
	if (!s->in_startup)
		return;
	if (s->st_prev)
		s->st_prev->st_next = s->st_next;
	else
		startup_head = s->st_next;
	if (s->st_next)
		s->st_next->st_prev = s->st_prev;
	else
		startup_tail = s->st_prev;
	s->in_startup = false;
	s->st_prev = s->st_next = NULL;
}

/* Close both connections; the memory is freed after the event batch. */
static void
session_kill(Session *s)
{
	if (s->dead)
		return;
	startup_list_remove(s);
	conn_close(&s->cli);
	conn_close(&s->up);
	gw_buf_free(&s->held);
	while (s->pos_head != NULL)
	{
		PosWait    *w = s->pos_head;

		s->pos_head = w->next;
		gw_posmap_free(&w->map);
		free(w);
	}
	s->pos_tail = NULL;
	free(s->first);
	s->first = NULL;
	gw_frame_reset(&s->from_cli);
	gw_frame_reset(&s->from_up);
	s->dead = true;
	s->next_dead = dead_list;
	dead_list = s;
	nsessions--;
}

/*
 * End the session after the client has been sent what is queued for it
 * (an error, the server's last messages): the upstream is closed now.
 */
static void
session_finish(Session *s)
{
	s->closing = true;
	conn_close(&s->up);
}

/* ---- upstream -> client ---- */

/*
 * The map for the answer the server is sending now (before ReadyForQuery
 * number server_syncs + 1), or NULL; maps of answers already ended are
 * dropped on the way.
 */
static PosWait *
pos_current(Session *s)
{
	while (s->pos_head != NULL && s->pos_head->group <= s->server_syncs)
	{
		PosWait    *w = s->pos_head;

		s->pos_head = w->next;
		if (s->pos_head == NULL)
			s->pos_tail = NULL;
		gw_posmap_free(&w->map);
		free(w);
	}
	if (s->pos_head != NULL && s->pos_head->group == s->server_syncs + 1)
		return s->pos_head;
	return NULL;
}

static int
up_want(void *arg, char type, uint32_t len)
{
	Session    *s = arg;
	bool		collect;

	switch (type)
	{
		case 'E':				/* ErrorResponse, NoticeResponse: their */
		case 'N':				/* position may need translating */
			collect = len <= GW_MAX_INSPECT && pos_current(s) != NULL;
			break;
		case 'R':				/* Authentication* */
		case 'S':				/* ParameterStatus */
		case 'G':				/* CopyInResponse */
		case 'W':				/* CopyBothResponse */
			collect = len <= 65536;
			break;
		case 'Z':				/* ReadyForQuery */
			collect = len == 1;
			break;
		default:
			collect = false;
	}
	return collect ? GW_WANT_COLLECT : GW_WANT_STREAM;
}

static bool cli_message(void *arg, char type, const char *body, uint32_t len,
						GwBuf *out);

/*
 * The server let the session in and the gateway accepts it: send on the
 * client messages held back until now (rewritten as usual).
 */
static bool
release_held(Session *s)
{
	size_t		off = s->held.off;
	bool		ok = true;
	uint64_t	nsync = 0;

	/* cli_want counted the held messages' syncs already: count them again */
	while (off + 5 <= s->held.len)
	{
		const char *m = s->held.data + off;
		uint32_t	l = ((uint32_t) (unsigned char) m[1] << 24) |
		((uint32_t) (unsigned char) m[2] << 16) |
		((uint32_t) (unsigned char) m[3] << 8) | (uint32_t) (unsigned char) m[4];

		if (m[0] == 'Q' || m[0] == 'F' || m[0] == 'S')
			nsync++;
		off += 1 + l;
	}
	s->msg_syncs = s->client_syncs >= nsync ? s->client_syncs - nsync : 0;
	off = s->held.off;

	s->holding = false;
	while (ok && off + 5 <= s->held.len)
	{
		const char *m = s->held.data + off;
		uint32_t	l = ((uint32_t) (unsigned char) m[1] << 24) |
		((uint32_t) (unsigned char) m[2] << 16) |
		((uint32_t) (unsigned char) m[3] << 8) | (uint32_t) (unsigned char) m[4];

		if (m[0] == 'Q' || m[0] == 'F' || m[0] == 'S')
			s->msg_syncs++;
		ok = cli_message(s, m[0], m + 5, l - 4, &s->up.out);
		off += 1 + l;
	}
	s->msg_syncs = s->client_syncs;
	gw_buf_free(&s->held);
	return ok;
}

static bool
up_message(void *arg, char type, const char *body, uint32_t len, GwBuf *out)
{
	Session    *s = arg;

	switch (type)
	{
		case 'R':
			if (len >= 4)
			{
				uint32_t	code = ((uint32_t) (unsigned char) body[0] << 24) |
				((uint32_t) (unsigned char) body[1] << 16) |
				((uint32_t) (unsigned char) body[2] << 8) |
				(uint32_t) (unsigned char) body[3];

				if (code != 0)
				{
					/* real authentication: the server judges what follows */
					s->challenge_seen = true;
					if (s->holding && !release_held(s))
						return false;
				}
				else if (!s->challenge_seen && !allow_trust)
				{
					send_fatal(out, "28000",
							   "the rvbbit gateway refuses a server that lets the session in without authentication",
							   "The server accepted the connection from the gateway without asking for a password (a trust line of pg_hba.conf), so every client of the gateway would be let in.",
							   "Make pg_hba.conf ask for a password on host connections from the loopback address, for example scram-sha-256, or allow it with rvbbit.gateway_allow_trust = on (--allow-trust).");
					gw_log("LOG", "refused a session: the server authenticated it without a challenge (trust)");
					return false;
				}
				else
				{
					s->auth_ok = true;
					if (s->holding && !release_held(s))
						return false;
				}
			}
			break;
		case 'S':
			{
				const char *name = body;
				const char *nul = memchr(body, '\0', len);

				if (nul != NULL && memchr(nul + 1, '\0', len - (nul + 1 - body)) != NULL)
				{
					const char *value = nul + 1;

					if (strcmp(name, "client_encoding") == 0)
					{
						s->unsafe_encoding = gw_encoding_is_unsafe(value);
						s->client_enc_kind = gw_encoding_kind(value);
					}
					else if (strcmp(name, "server_encoding") == 0)
						s->server_sql_ascii = strcasecmp(value, "SQL_ASCII") == 0;
					else if (strcmp(name, "standard_conforming_strings") == 0)
						s->std_strings = strcmp(value, "on") == 0;

					/*
					 * The server counts characters in its encoding; a
					 * conversion keeps their number, but a SQL_ASCII server
					 * converts nothing and counts bytes.
					 */
					s->enc_kind = s->server_sql_ascii ? GW_ENC_SINGLE : s->client_enc_kind;
				}
			}
			break;
		case 'G':
		case 'W':
			s->copy_in = true;
			break;
		case 'Z':
			s->server_syncs++;
			if (s->server_syncs > s->client_syncs)
				s->client_syncs = s->server_syncs;
			s->copy_in = false;
			(void) pos_current(s);	/* frees the maps of ended answers */
			break;
		case 'E':
		case 'N':
			{
				PosWait    *w = pos_current(s);

				if (w != NULL)
				{
					GwBuf		nb = {0};
					uint32_t	nlen;
					bool		ok;

					ok = gw_translate_error(body, len, &w->map, &nb, &nlen) &&
						gw_frame_append_header(out, type, nlen) &&
						gw_buf_append(out, nb.data, nlen);
					gw_buf_free(&nb);
					return ok;
				}
			}
			break;
	}
	if (!gw_frame_append_header(out, type, len) || !gw_buf_append(out, body, len))
		return false;
	return true;
}

static const GwFrameOps up_ops = {up_want, up_message};

/* ---- client -> upstream ---- */

/*
 * Until the server has either asked for authentication or let the session
 * in (and the gateway has accepted that: no trust unless allowed), only
 * authentication messages ('p') go on to the server.  Anything else a
 * client pipelines after its StartupMessage is held back, up to
 * GW_MAX_HELD bytes, and sent, in order, once the server asks for a
 * password (it then rejects them itself, as when connected directly) or
 * the session is accepted.  A refused session never reaches the server
 * with them, so a trust server cannot be made to run a statement for a
 * client the gateway turns away.
 */
#define GW_MAX_HELD		65536

static int
cli_want(void *arg, char type, uint32_t len)
{
	Session    *s = arg;

	if (type == 'Q' || type == 'F' || (type == 'S' && !s->copy_in))
		s->client_syncs++;
	s->msg_syncs = s->client_syncs;
	if (type == 'c' || type == 'f')
		s->copy_in = false;
	if (!s->auth_ok && !s->challenge_seen && (s->holding || type != 'p'))
	{
		if (gw_buf_pending(&s->held) + 5 + (size_t) len > GW_MAX_HELD)
		{
			s->held_overflow = true;
			return GW_WANT_ABORT;
		}
		s->holding = true;
		return GW_WANT_COLLECT;
	}
	return s->auth_ok && (type == 'Q' || type == 'P') && len <= GW_MAX_INSPECT ?
		GW_WANT_COLLECT : GW_WANT_STREAM;
}

static bool
cli_message(void *arg, char type, const char *body, uint32_t len, GwBuf *out)
{
	Session    *s = arg;
	bool		do_rewrite;
	int			flags;
	GwPosMap	map;

	if (s->holding)
		return gw_frame_append_header(&s->held, type, len) &&
			gw_buf_append(&s->held, body, len);

	do_rewrite = !s->unsafe_encoding && s->server_syncs >= s->unsure_until;
	flags = gw_rewrite_message_map(type, body, len, s->std_strings, do_rewrite,
								   out, &map, type == 'Q' ? s->enc_kind : GW_ENC_OTHER);
	if (flags < 0)
		return false;
	if (flags & GW_RW_REWROTE)
	{
		/*
		 * The server's error positions will point into the rewritten text:
		 * keep the map to translate them.  A Query is answered up to its
		 * own ReadyForQuery; a Parse by the messages up to the next Sync's,
		 * which may answer other messages too, so its errors lose their
		 * position (GW_ENC_OTHER: drop) rather than show a wrong one.
		 */
		PosWait    *w = calloc(1, sizeof(PosWait));

		if (w == NULL)
		{
			gw_posmap_free(&map);
			return false;
		}
		w->group = s->msg_syncs + (type == 'P' ? 1 : 0);
		w->map = map;
		if (s->pos_tail != NULL)
			s->pos_tail->next = w;
		else
			s->pos_head = w;
		s->pos_tail = w;
	}
	if (flags & GW_RW_RISKY)
	{
		/* the answer to this message may change how text must be read */
		s->unsure_until = s->client_syncs + (type == 'P' ? 1 : 0);
	}
	return true;
}

static const GwFrameOps cli_ops = {cli_want, cli_message};

/* Relay bytes read from the client. Returns false when the session must end. */
static bool
from_client(Session *s, const char *data, size_t n)
{
	int			r = gw_frame_feed(&s->from_cli, data, n, &s->up.out, &cli_ops, s);

	if (r == GW_FRAME_BADLEN)
	{
		send_fatal(&s->cli.out, "08P01", "invalid message length from the client",
				   NULL, NULL);
		session_finish(s);
		return false;
	}
	if (r == GW_FRAME_ABORT && s->held_overflow)
	{
		send_fatal(&s->cli.out, "08P01",
				   "too much data from the client before authentication completed",
				   "The gateway holds back up to 64 kB of messages other than authentication until the server has let the session in.",
				   NULL);
		session_finish(s);
		return false;
	}
	if (r != GW_FRAME_OK)
	{
		gw_log("LOG", "out of memory; closing a session");
		session_kill(s);
		return false;
	}
	return true;
}

/* Relay bytes read from the server. */
static bool
from_upstream(Session *s, const char *data, size_t n)
{
	int			r = gw_frame_feed(&s->from_up, data, n, &s->cli.out, &up_ops, s);

	if (r == GW_FRAME_ABORT)
	{
		/* refused: the error is queued for the client */
		session_finish(s);
		return false;
	}
	if (r != GW_FRAME_OK)
	{
		gw_log("LOG", "invalid message from the server; closing the session");
		session_kill(s);
		return false;
	}
	return true;
}

static uint32_t
be32(const unsigned char *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

/*
 * Act on a whole first packet.  Returns false when the session was ended.
 */
static bool
first_packet(Session *s)
{
	uint32_t	len = be32(s->first);
	uint32_t	code = be32(s->first + 4);
	bool		ok;

	s->first_have = 0;
	if (code == GW_SSL_CODE)
	{
		/* one SSLRequest and one GSSENCRequest at most, as the server */
		if (len != 8 || s->tls_done || s->ssl_asked)
			goto bad;
		s->ssl_asked = true;
		if (ssl_ctx == NULL)
			return gw_buf_append(&s->cli.out, "N", 1);
		/* 'S' goes out in plaintext before the handshake starts */
		if (send(s->cli.ep.fd, "S", 1, MSG_NOSIGNAL) != 1)
			goto bad;
		s->cli.ssl = SSL_new(ssl_ctx);
		if (s->cli.ssl == NULL || SSL_set_fd(s->cli.ssl, s->cli.ep.fd) != 1)
			goto bad;
		s->state = S_TLS;
		return true;
	}
	if (code == GW_GSSENC_CODE)
	{
		if (len != 8 || s->tls_done || s->gss_asked)
			goto bad;
		s->gss_asked = true;
		return gw_buf_append(&s->cli.out, "N", 1);
	}
	if (code == GW_CANCEL_CODE)
	{
		if (len != 16)
			goto bad;
		s->state = S_CANCEL;
		startup_list_remove(s);
		conn_close(&s->cli);
		ok = gw_buf_append(&s->up.out, s->first, 16);
		free(s->first);
		s->first = NULL;
		if (!ok || !upstream_connect(s))
		{
			session_kill(s);
			return false;
		}
		return true;
	}
	if ((code >> 16) == 3)
	{
		s->state = S_RELAY;
		startup_list_remove(s);
		ok = gw_buf_append(&s->up.out, s->first, len);
		free(s->first);
		s->first = NULL;
		if (!ok)
			goto bad;
		if (!upstream_connect(s))
		{
			session_finish(s);
			return false;
		}
		return true;
	}
	{
		char		msg[128];

		snprintf(msg, sizeof(msg),
				 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
				 code >> 16, code & 0xffff);
		send_fatal(&s->cli.out, "0A000", msg, NULL, NULL);
		session_finish(s);
		return false;
	}

bad:
	session_kill(s);
	return false;
}

/*
 * Read the first packet, exactly its bytes.  Returns true when something
 * was read (progress).
 */
static bool
read_first(Session *s)
{
	uint32_t	need;
	ssize_t		n;

	if (s->first_have < 4)
		need = 4 - s->first_have;
	else
	{
		uint32_t	len = be32(s->first);

		need = len - s->first_have;
	}
	n = conn_read(&s->cli, (char *) s->first + s->first_have, need);
	if (n == -1)
		return false;
	if (n <= 0)
	{
		session_kill(s);
		return false;
	}
	if (s->first_have == 0 && s->first[0] == 0x16)
	{
		/* a direct TLS start: this gateway negotiates TLS by SSLRequest */
		session_kill(s);
		return false;
	}
	s->first_have += n;
	if (s->first_have == 4)
	{
		uint32_t	len = be32(s->first);

		if (len < 8 || len > GW_MAX_STARTUP)
		{
			session_kill(s);
			return false;
		}
	}
	if (s->first_have >= 8 && s->first_have == be32(s->first))
		first_packet(s);
	return true;
}

/* Drive the TLS handshake.  Returns true on progress. */
static bool
tls_step(Session *s)
{
	int			r;
	int			e;

	s->cli.tls_wants_write = false;
	r = SSL_accept(s->cli.ssl);
	if (r == 1)
	{
		s->tls_done = true;
		s->state = S_FIRST;
		return true;
	}
	e = SSL_get_error(s->cli.ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		s->cli.readable = false;
	else if (e == SSL_ERROR_WANT_WRITE)
		s->cli.tls_wants_write = true;
	else
	{
		unsigned long le = ERR_get_error();

		gw_log("LOG", "TLS handshake with a client failed: %s",
			   le ? ERR_reason_error_string(le) : "connection closed");
		ERR_clear_error();
		session_kill(s);
	}
	return false;
}

static bool
tls_pending(Conn *c)
{
	return c->ssl != NULL && SSL_has_pending(c->ssl);
}

/* Update the epoll events of both connections of a live session. */
static void
session_masks(Session *s)
{
	uint32_t	m;

	if (s->cli.ep.fd >= 0)
	{
		m = 0;
		if (!s->closing && !s->cli.eof &&
			(s->state == S_FIRST || s->state == S_TLS ||
			 gw_buf_pending(&s->up.out) < GW_HIGH_WATER))
			m |= EPOLLIN;
		if (s->cli.tls_wants_read)
			m |= EPOLLIN;
		if ((gw_buf_pending(&s->cli.out) > 0 && s->cli.wblocked) ||
			s->cli.tls_wants_write)
			m |= EPOLLOUT;
		conn_set_mask(&s->cli, m);
	}
	if (s->up.ep.fd >= 0)
	{
		m = 0;
		if (!s->up.eof && s->state == S_RELAY &&
			gw_buf_pending(&s->cli.out) < GW_HIGH_WATER)
			m |= EPOLLIN;
		if (s->up.connecting ||
			(gw_buf_pending(&s->up.out) > 0 && s->up.wblocked))
			m |= EPOLLOUT;
		conn_set_mask(&s->up, m);
	}
}

/* what a step of session_pump() says to do next */
typedef enum PumpStep
{
	PUMP_GO,					/* on with the next step */
	PUMP_SKIP,					/* skip the rest of this turn */
	PUMP_STOP,					/* stop pumping, set the epoll events */
	PUMP_KILLED					/* the session is gone: touch nothing */
} PumpStep;

/*
 * Has the upstream connect completed?  On a failure the client gets a
 * FATAL error and the session closes (a forwarded cancel is just ended).
 * Returns false when the session was killed.
 */
static bool
pump_connect(Session *s, bool *progress)
{
	int			err = 0;
	socklen_t	el = sizeof(err);

	if (!s->up.connecting || s->up.wblocked)
		return true;
	if (getsockopt(s->up.ep.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return true;
	if (err == 0)
	{
		s->up.connecting = false;
		*progress = true;
		return true;
	}
	gw_log("LOG", "could not connect to the server at %s: %s",
		   upstream_spec, strerror(err));
	if (s->state == S_CANCEL)
	{
		session_kill(s);
		return false;
	}
	{
		char		detail[256];

		snprintf(detail, sizeof(detail), "Connecting to %s failed: %s.",
				 upstream_spec, strerror(err));
		send_fatal(&s->cli.out, "08006",
				   "the rvbbit gateway could not connect to the server",
				   detail, NULL);
	}
	session_finish(s);
	return true;
}

/* Write what is pending on c; false when a write error killed s. */
static bool
pump_flush_conn(Session *s, Conn *c, bool *progress)
{
	size_t		before = gw_buf_pending(&c->out);

	if (!conn_flush(c))
	{
		session_kill(s);
		return false;
	}
	if (gw_buf_pending(&c->out) != before)
		*progress = true;
	return true;
}

/*
 * Write what is pending to the server (once connected) and to the client
 * (once past the TLS handshake).  Returns false when the session was
 * killed by a write error.
 */
static bool
pump_flush(Session *s, bool *progress)
{
	if (s->up.ep.fd >= 0 && gw_buf_pending(&s->up.out) > 0 && !s->up.connecting &&
		!pump_flush_conn(s, &s->up, progress))
		return false;
	if (s->cli.ep.fd >= 0 && gw_buf_pending(&s->cli.out) > 0 && s->state != S_TLS &&
		!pump_flush_conn(s, &s->cli, progress))
		return false;
	return true;
}

/*
 * The ends of a session: a forwarded cancel is done once written, a
 * closing session once the client has everything; a client's half-close
 * is passed on once its bytes are out, and ends a session not yet
 * relaying.
 */
static PumpStep
pump_ending(Session *s)
{
	if (s->state == S_CANCEL)
	{
		if (s->up.ep.fd >= 0 && !s->up.connecting && gw_buf_pending(&s->up.out) == 0)
		{
			session_kill(s);
			return PUMP_KILLED;
		}
		return PUMP_STOP;
	}
	if (s->closing)
	{
		if (s->cli.ep.fd < 0 || gw_buf_pending(&s->cli.out) == 0)
		{
			session_kill(s);
			return PUMP_KILLED;
		}
		return PUMP_STOP;
	}
	if (s->cli.eof && !s->up.shut_wr && s->up.ep.fd >= 0 &&
		!s->up.connecting && gw_buf_pending(&s->up.out) == 0)
	{
		shutdown(s->up.ep.fd, SHUT_WR);
		s->up.shut_wr = true;
	}
	if (s->cli.eof && s->state != S_RELAY)
	{
		session_kill(s);
		return PUMP_KILLED;
	}
	return PUMP_GO;
}

/*
 * Read the client: its first packets, or (below the high-water mark of
 * what waits for the server) messages to frame and pass on.  PUMP_SKIP
 * when the messages ended the turn.
 */
static PumpStep
pump_read_client(Session *s, bool *progress)
{
	ssize_t		n;

	if (s->cli.eof || s->cli.ep.fd < 0 || !(s->cli.readable || tls_pending(&s->cli)))
		return PUMP_GO;
	if (s->state == S_FIRST)
	{
		*progress |= read_first(s);
		return PUMP_GO;
	}
	if (gw_buf_pending(&s->up.out) >= GW_HIGH_WATER)
		return PUMP_GO;
	n = conn_read(&s->cli, scratch, sizeof(scratch));
	if (n > 0)
	{
		*progress = true;
		if (!from_client(s, scratch, n))
			return PUMP_SKIP;
	}
	else if (n == 0)
	{
		s->cli.eof = true;
		*progress = true;
	}
	else if (n == -2)
	{
		session_kill(s);
		return PUMP_KILLED;
	}
	return PUMP_GO;
}

/*
 * Read the server (while relaying, below the high-water mark of what waits
 * for the client).  When the server ends the session, the client gets the
 * rest.
 */
static void
pump_read_server(Session *s, bool *progress)
{
	ssize_t		n;

	if (s->state != S_RELAY || s->dead || s->closing || s->up.ep.fd < 0 ||
		s->up.connecting || !s->up.readable ||
		gw_buf_pending(&s->cli.out) >= GW_HIGH_WATER)
		return;
	n = conn_read(&s->up, scratch, sizeof(scratch));
	if (n > 0)
	{
		*progress = true;
		(void) from_upstream(s, scratch, n);
	}
	else if (n == 0 || n == -2)
	{
		s->up.eof = true;
		session_finish(s);
		*progress = true;
	}
}

/*
 * Do all the work a session can do now: finish a connect, flush both
 * sides, read what may be read.  Loops until nothing moves, then sets the
 * epoll events.  May end (kill) the session.
 */
static void
session_pump(Session *s)
{
	bool		progress;

	do
	{
		PumpStep	st;

		progress = false;
		if (s->dead)
			return;
		if (!pump_connect(s, &progress) || !pump_flush(s, &progress))
			return;
		st = pump_ending(s);
		if (st == PUMP_KILLED)
			return;
		if (st == PUMP_STOP)
			break;
		if (s->state == S_TLS)
		{
			/* the handshake first; nothing is read until it is done */
			if (s->cli.readable || s->cli.tls_wants_write)
				progress |= tls_step(s);
			continue;
		}
		st = pump_read_client(s, &progress);
		if (st == PUMP_KILLED)
			return;
		if (st == PUMP_SKIP)
			continue;
		pump_read_server(s, &progress);
	} while (progress);

	if (!s->dead)
		session_masks(s);
}

/* Handle an epoll event on a connection. */
static void
conn_event(Conn *c, uint32_t events)
{
	Session    *s = c->sess;

	if (s->dead)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
	{
		c->readable = true;
		c->tls_wants_read = false;
	}
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
	{
		c->wblocked = false;
		c->tls_wants_write = false;
	}
	if (c->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		c->wblocked = false;
	session_pump(s);
}

/* Accept every pending connection of a listening socket. */
static void
accept_clients(int lfd)
{
	int			i;

	for (i = 0; i < 256; i++)
	{
		int			fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		Session    *s;

		if (fd < 0)
		{
			if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0)
			{
				/* out of descriptors: take the connection and close it */
				close(spare_fd);
				fd = accept(lfd, NULL, NULL);
				if (fd >= 0)
					close(fd);
				spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				gw_log("WARNING", "out of file descriptors: a connection was refused");
				continue;
			}
			return;
		}
		s = calloc(1, sizeof(Session));
		if (s != NULL)
			s->first = malloc(GW_MAX_STARTUP);
		if (s == NULL || s->first == NULL)
		{
			free(s);
			close(fd);
			continue;
		}
		tune_socket(fd, true);
		s->cli.ep.kind = EP_CONN;
		s->cli.ep.fd = fd;
		s->cli.sess = s;
		s->cli.is_client = true;
		s->cli.readable = true;
		s->up.ep.kind = EP_CONN;
		s->up.ep.fd = -1;
		s->up.sess = s;
		s->std_strings = true;
		s->enc_kind = GW_ENC_OTHER;	/* until the server says client_encoding */
		s->client_enc_kind = GW_ENC_OTHER;
		s->state = S_FIRST;
		nsessions++;
		startup_list_add(s);
		conn_set_mask(&s->cli, EPOLLIN);
		session_pump(s);
	}
}

/*
 * Close the sessions whose first packets did not arrive in time; returns
 * the epoll timeout until the next deadline (-1: none).
 */
static int
expire_startups(void)
{
	int64_t		now = now_ms();
	long		n = 0;

	while (startup_head && startup_head->startup_deadline <= now)
	{
		session_kill(startup_head);
		n++;
	}
	if (n > 0)
		gw_log("LOG", "closed %ld connection%s that sent no startup packet within %d s",
			   n, n == 1 ? "" : "s", startup_timeout);
	if (startup_head == NULL)
		return -1;
	return (int) (startup_head->startup_deadline - now) + 1;
}

/* Free the sessions ended during the last event batch. */
static void
reap_dead(void)
{
	while (dead_list)
	{
		Session    *s = dead_list;

		dead_list = s->next_dead;
		free(s);
	}
}

/* ----------------------------------------------------------------
 * Start-up
 * ----------------------------------------------------------------
 */

/*
 * Split HOST:PORT ([v6]:PORT too) into host and port strings (modifies
 * spec).  Returns false when malformed.
 */
static bool
split_hostport(char *spec, char **host, char **port)
{
	char	   *colon;

	if (spec[0] == '[')
	{
		char	   *end = strchr(spec, ']');

		if (end == NULL || end[1] != ':')
			return false;
		*end = '\0';
		*host = spec + 1;
		*port = end + 2;
		return **port != '\0';
	}
	colon = strrchr(spec, ':');
	if (colon == NULL || colon[1] == '\0')
		return false;
	*colon = '\0';
	*host = spec;
	*port = colon + 1;
	return true;
}

static bool
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) sa)->sin6_addr);
	return false;
}

/* Resolve the upstream; it must be a loopback address. */
static void
setup_upstream(void)
{
	char	   *spec = strdup(upstream_spec);
	char	   *host;
	char	   *port;
	struct addrinfo hints;
	struct addrinfo *res;
	int			rc;

	if (spec == NULL || !split_hostport(spec, &host, &port))
	{
		gw_log("FATAL", "invalid --upstream \"%s\": expected HOST:PORT", upstream_spec);
		exit(2);
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		gw_log("FATAL", "could not resolve the upstream \"%s\": %s", upstream_spec,
			   gai_strerror(rc));
		exit(2);
	}
	if (!is_loopback(res->ai_addr))
	{
		gw_log("FATAL", "the upstream \"%s\" is not a loopback address: the gateway only connects to a server on this machine over TCP loopback",
			   upstream_spec);
		exit(2);
	}
	memcpy(&upstream_addr, res->ai_addr, res->ai_addrlen);
	upstream_addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	free(spec);
}

/* Bind and listen on one HOST:PORT (every address it resolves to). */
static void
setup_listen(const char *spec0)
{
	char	   *spec = strdup(spec0);
	char	   *host;
	char	   *port;
	struct addrinfo hints;
	struct addrinfo *res;
	struct addrinfo *ai;
	int			rc;

	if (spec == NULL || !split_hostport(spec, &host, &port))
	{
		gw_log("FATAL", "invalid --listen \"%s\": expected HOST:PORT", spec0);
		exit(2);
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (rc != 0)
	{
		gw_log("WARNING", "could not resolve \"%s\": %s", spec0, gai_strerror(rc));
		free(spec);
		return;
	}
	for (ai = res; ai && nlisteners < GW_MAX_LISTEN * 4; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int			one = 1;
		char		addr[INET6_ADDRSTRLEN] = "?";
		struct epoll_event ev;

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (ai->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *) ai->ai_addr)->sin_addr, addr, sizeof(addr));
		else if (ai->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr, addr, sizeof(addr));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0)
		{
			gw_log("WARNING", "could not listen on %s port %s: %s", addr, port, strerror(errno));
			close(fd);
			continue;
		}
		listeners[nlisteners].kind = EP_LISTEN;
		listeners[nlisteners].fd = fd;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = &listeners[nlisteners];
		epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
		nlisteners++;
		gw_log("LOG", "listening on %s port %s", addr, port);
	}
	freeaddrinfo(res);
	free(spec);
}

/* Load the certificate and key; exits on failure. */
static void
setup_tls(void)
{
	SSL_CTX    *ctx;

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
	{
		gw_log("FATAL", "could not create the TLS context");
		exit(2);
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
						SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, ssl_cert) != 1)
	{
		gw_log("FATAL", "could not load the TLS certificate \"%s\": %s", ssl_cert,
			   ERR_reason_error_string(ERR_get_error()));
		exit(2);
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, ssl_key, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_check_private_key(ctx) != 1)
	{
		gw_log("FATAL", "could not load the TLS key \"%s\": %s", ssl_key,
			   ERR_reason_error_string(ERR_get_error()));
		exit(2);
	}
	ssl_ctx = ctx;
}

static void
usage(FILE *f)
{
	fprintf(f,
			"rvbbit-gateway: a PostgreSQL wire-protocol relay that runs literal RVBBIT statements\n\n"
			"Usage: rvbbit-gateway --listen HOST:PORT [--listen ...] --upstream HOST:PORT [options]\n\n"
			"  --listen HOST:PORT     address to accept clients on (\"*\" for all, [v6]:PORT)\n"
			"  --upstream HOST:PORT   the PostgreSQL server, over TCP loopback (default 127.0.0.1:5432)\n"
			"  --ssl-cert FILE        terminate TLS with this certificate (PEM chain)\n"
			"  --ssl-key FILE         ... and this key\n"
			"  --allow-trust          let through sessions the server accepts without authentication\n"
			"  --startup-timeout S    close a client whose startup packet has not arrived in S seconds\n"
			"                         (default 60, 0: never)\n"
			"  --parent-fd N          exit when this pipe reports EOF (used by the supervisor)\n"
			"  --version, --help\n");
}

/*
 * Read the command line into the settings.  Returns -1 to go on, or the
 * exit status: 0 after --help and --version, 2 for a bad command line.
 */
static int
parse_args(int argc, char **argv)
{
	int			i;

	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (strcmp(a, "--version") == 0)
		{
			printf("rvbbit-gateway %s\n", GW_VERSION);
			return 0;
		}
		else if (strcmp(a, "--allow-trust") == 0)
			allow_trust = true;
		else if (v != NULL && strcmp(a, "--listen") == 0 && nlisten_specs < GW_MAX_LISTEN)
			listen_specs[nlisten_specs++] = argv[++i];
		else if (v != NULL && strcmp(a, "--upstream") == 0)
			upstream_spec = argv[++i];
		else if (v != NULL && strcmp(a, "--ssl-cert") == 0)
			ssl_cert = argv[++i];
		else if (v != NULL && strcmp(a, "--ssl-key") == 0)
			ssl_key = argv[++i];
		else if (v != NULL && strcmp(a, "--startup-timeout") == 0)
			startup_timeout = atoi(argv[++i]);
		else if (v != NULL && strcmp(a, "--parent-fd") == 0)
			parent_fd = atoi(argv[++i]);
		else
		{
			fprintf(stderr, "rvbbit-gateway: invalid argument \"%s\"\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (nlisten_specs == 0)
	{
		fprintf(stderr, "rvbbit-gateway: --listen is required\n");
		usage(stderr);
		return 2;
	}
	if ((ssl_cert == NULL) != (ssl_key == NULL))
	{
		fprintf(stderr, "rvbbit-gateway: --ssl-cert and --ssl-key go together\n");
		return 2;
	}
	return -1;
}

/*
 * Handlers for SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (SIGPIPE ignored).  The
 * four are blocked except inside epoll_pwait, so that none is missed
 * between a check of the flags and the wait: *waitmask is the mask to wait
 * with.
 */
static void
setup_signals(sigset_t *waitmask)
{
	static const int handled[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
	struct sigaction sa;
	sigset_t	block;
	size_t		k;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	for (k = 0; k < sizeof(handled) / sizeof(handled[0]); k++)
	{
		sigaction(handled[k], &sa, NULL);
		sigaddset(&block, handled[k]);
	}
	sigprocmask(SIG_BLOCK, &block, waitmask);
	for (k = 0; k < sizeof(handled) / sizeof(handled[0]); k++)
		sigdelset(waitmask, handled[k]);
}

/* Watch the supervisor's pipe (--parent-fd); false when it cannot be. */
static bool
watch_parent(void)
{
	struct epoll_event ev;

	parent_item.kind = EP_PARENT;
	parent_item.fd = parent_fd;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = &parent_item;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, parent_fd, &ev) != 0)
	{
		gw_log("FATAL", "cannot watch the supervisor's pipe: %s", strerror(errno));
		return false;
	}
	return true;
}

/* The supervisor's pipe is readable: EOF (or an error) means it is gone. */
static void
parent_event(void)
{
	char		b[64];
	ssize_t		r = read(parent_fd, b, sizeof(b));

	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
	{
		gw_log("LOG", "the supervisor is gone; exiting");
		got_term = 1;
	}
}

/*
 * The event loop, until SIGTERM, SIGINT or the supervisor's end: signals
 * (SIGUSR1/2 switch trust sessions), new clients, the pipe, session
 * sockets; closed sessions are freed after each turn.  Returns the exit
 * status.
 */
static int
event_loop(const sigset_t *waitmask)
{
	struct epoll_event events[256];

	while (!got_term)
	{
		int			n = epoll_pwait(epfd, events, 256, expire_startups(), waitmask);
		int			k;

		if (got_trust >= 0)
		{
			allow_trust = got_trust == 1;
			got_trust = -1;
			gw_log("LOG", "trust upstream sessions are now %s",
				   allow_trust ? "allowed" : "refused");
		}
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			gw_log("FATAL", "epoll_wait: %s", strerror(errno));
			return 1;
		}
		for (k = 0; k < n; k++)
		{
			EpItem	   *it = events[k].data.ptr;

			if (it->kind == EP_LISTEN)
				accept_clients(it->fd);
			else if (it->kind == EP_PARENT)
				parent_event();
			else
				conn_event((Conn *) it, events[k].events);
		}
		reap_dead();
	}
	gw_log("LOG", "shutting down (%ld sessions open)", nsessions);
	return 0;
}

int
main(int argc, char **argv)
{
	int			i;
	int			rc;
	sigset_t	waitmask;
	struct rlimit rl;

	rc = parse_args(argc, argv);
	if (rc >= 0)
		return rc;
	setvbuf(stderr, NULL, _IOLBF, 0);

	/* the supervisor's end of the pipe closes when it dies */
	if (parent_fd >= 0)
	{
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			return 0;
	}

	/* thousands of sessions: two descriptors each */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	setup_signals(&waitmask);

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
	{
		gw_log("FATAL", "epoll_create1: %s", strerror(errno));
		return 1;
	}
	setup_upstream();
	if (ssl_cert != NULL)
		setup_tls();
	for (i = 0; i < nlisten_specs; i++)
		setup_listen(listen_specs[i]);
	if (nlisteners == 0)
	{
		gw_log("FATAL", "could not listen on any address");
		return 1;
	}
	if (parent_fd >= 0 && !watch_parent())
		return 1;
	gw_log("LOG", "relaying to %s%s%s", upstream_spec,
		   ssl_ctx ? ", TLS on" : "", allow_trust ? ", trust allowed" : "");
	return event_loop(&waitmask);
}
