/*-------------------------------------------------------------------------
 *
 * gw.h
 *	  Declarations shared by the parts of rvbbit-gateway: growable byte
 *	  buffers, the wire-protocol framer and the RVBBIT statement rewriter.
 *
 * The gateway is a plain C program: it includes no PostgreSQL server
 * header.  gw_buf.c, gw_frame.c and gw_rewrite.c are pure (no sockets, no
 * globals) so the unit tests and the fuzz target link them directly;
 * gw_main.c holds the event loop, the sockets and TLS.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RVBBIT_GW_H
#define RVBBIT_GW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* protocol codes of the first packet (PostgreSQL's pqcomm.h) */
#define GW_PROTO_V3			196608	/* 3.0 */
#define GW_CANCEL_CODE		80877102
#define GW_SSL_CODE			80877103
#define GW_GSSENC_CODE		80877104
#define GW_MAX_STARTUP		10000	/* as the server: MAX_STARTUP_PACKET_LENGTH */

/* Query and Parse messages up to this size are inspected and rewritten */
#define GW_MAX_INSPECT		(64 * 1024 * 1024)
/* the server's own limit on a message (PQ_LARGE_MESSAGE_LIMIT) */
#define GW_MAX_MESSAGE		(0x3fffffff)

/* A growable byte buffer; bytes [off, len) are pending. */
typedef struct GwBuf
{
	char	   *data;
	size_t		off;
	size_t		len;
	size_t		cap;
} GwBuf;

extern bool gw_buf_append(GwBuf *b, const void *p, size_t n);
extern bool gw_buf_reserve(GwBuf *b, size_t n);
extern void gw_buf_consume(GwBuf *b, size_t n);
extern void gw_buf_free(GwBuf *b);
#define gw_buf_pending(b) ((b)->len - (b)->off)

/*
 * One direction of a framed message stream (every message after the first
 * packet: a type byte, a 4-byte big-endian length counting itself, the
 * body).  Messages the owner wants to see are collected whole and handed
 * to on_message; every other message is copied to the output as its bytes
 * arrive, without waiting for the end of it.
 */
typedef struct GwFramer
{
	unsigned char hdr[5];
	int			hdr_len;
	uint32_t	stream_left;	/* body bytes still to copy through */
	bool		collecting;
	char		type;
	uint32_t	body_len;
	GwBuf		msg;			/* the body being collected */
} GwFramer;

/*
 * want: should the message of this type and body length be collected?
 * GW_WANT_STREAM copies it through, GW_WANT_COLLECT collects it,
 * GW_WANT_ABORT ends the feed with GW_FRAME_ABORT.
 * on_message: a collected message; append what goes on (the message itself
 * or a replacement) to out; return false to end the session.
 */
#define GW_WANT_STREAM		0
#define GW_WANT_COLLECT		1
#define GW_WANT_ABORT		(-1)

typedef struct GwFrameOps
{
	int			(*want) (void *arg, char type, uint32_t body_len);
	bool		(*on_message) (void *arg, char type, const char *body,
							   uint32_t body_len, GwBuf *out);
} GwFrameOps;

#define GW_FRAME_OK			0
#define GW_FRAME_BADLEN		(-1)	/* a length below 4 or over the limit */
#define GW_FRAME_ABORT		(-2)	/* on_message returned false, or want
									 * GW_WANT_ABORT */
#define GW_FRAME_NOMEM		(-3)

extern int	gw_frame_feed(GwFramer *f, const char *data, size_t len,
						  GwBuf *out, const GwFrameOps *ops, void *arg);
extern void gw_frame_reset(GwFramer *f);
extern bool gw_frame_append_header(GwBuf *out, char type, uint32_t body_len);

/* ---- the rewriter (gw_rewrite.c) ---- */

/* flags of gw_rewrite_text */
#define GW_RW_REWROTE		0x01	/* at least one statement was rewritten */
#define GW_RW_RISKY			0x02	/* the text may change client_encoding or
									 * standard_conforming_strings */

extern char *gw_rewrite_text(const char *text, size_t len, bool std_strings,
							 bool do_rewrite, size_t *out_len, int *flags);
extern int	gw_rewrite_message(char type, const char *body, uint32_t len,
							   bool std_strings, bool do_rewrite, GwBuf *out);
extern bool gw_encoding_is_unsafe(const char *name);

/*
 * Error positions.  The server's ErrorResponse 'P' field is a 1-based
 * character index into the text it received, which for a rewritten Query
 * is the rewritten text.  A GwPosMap says, segment by segment, where each
 * character of the rewritten text came from (positions in characters,
 * 0-based): a copied run maps one to one, text the gateway inserted maps to
 * the start of its statement.  drop: the positions cannot be translated
 * (an encoding whose characters the gateway does not count): the 'P' field
 * is removed rather than shown pointing at the wrong place.
 */
typedef struct GwSeg
{
	uint32_t	rw;				/* first character in the rewritten text */
	uint32_t	orig;			/* its character in the original (inserted:
								 * the start of the statement) */
	uint32_t	len;			/* characters */
	bool		inserted;
} GwSeg;

typedef struct GwPosMap
{
	GwSeg	   *segs;
	int			nsegs;
	int			cap;
	uint32_t	rw_total;		/* characters of the rewritten text */
	uint32_t	orig_total;		/* characters of the original text */
	bool		drop;
} GwPosMap;

/* how the client encoding's characters are counted */
#define GW_ENC_UTF8			0
#define GW_ENC_SINGLE		1	/* one byte, one character */
#define GW_ENC_OTHER		2	/* not counted: positions are dropped */

extern int	gw_encoding_kind(const char *name);
extern char *gw_rewrite_text_map(const char *text, size_t len, bool std_strings,
								 bool do_rewrite, size_t *out_len, int *flags,
								 GwPosMap *map, int enc_kind);
extern int	gw_rewrite_message_map(char type, const char *body, uint32_t len,
								   bool std_strings, bool do_rewrite, GwBuf *out,
								   GwPosMap *map, int enc_kind);
extern long gw_map_position(const GwPosMap *map, long pos);
extern bool gw_translate_error(const char *body, uint32_t len,
							   const GwPosMap *map, GwBuf *out, uint32_t *out_len);
extern void gw_posmap_free(GwPosMap *map);

#endif							/* RVBBIT_GW_H */
