/*-------------------------------------------------------------------------
 *
 * gw_buf.c
 *	  Growable byte buffers of rvbbit-gateway and the wire-protocol framer
 *	  (one direction of a session's framed messages).
 *
 * Pure code: no sockets, no globals.  Memory is malloc'd; every function
 * that allocates reports failure by its return value.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "gw.h"

/*
 * Make room for n more bytes after len, moving pending bytes to the front
 * first when that frees enough.  Returns false when out of memory.
 */
bool
gw_buf_reserve(GwBuf *b, size_t n)
{
	size_t		need;
	size_t		cap;
	char	   *p;

	if (b->off > 0 && b->cap - b->len < n)
	{
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->cap - b->len >= n)
		return true;
	need = b->len + n;
	if (need < b->len)
		return false;
	cap = b->cap ? b->cap : 1024;
	while (cap < need)
	{
		if (cap > SIZE_MAX / 2)
			return false;
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if (p == NULL)
		return false;
	b->data = p;
	b->cap = cap;
	return true;
}

/* Append n bytes; false when out of memory. */
bool
gw_buf_append(GwBuf *b, const void *p, size_t n)
{
	if (n == 0)
		return true;
	if (!gw_buf_reserve(b, n))
		return false;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return true;
}

/*
 * Drop n pending bytes from the front.  An emptied buffer over 64 kB is
 * freed, so thousands of idle sessions hold no buffer memory.
 */
void
gw_buf_consume(GwBuf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
	{
		b->off = b->len = 0;
		if (b->cap > 65536)
			gw_buf_free(b);
	}
}

void
gw_buf_free(GwBuf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

/* ----------------------------------------------------------------
 * The framer
 * ----------------------------------------------------------------
 */

/* Forget any partial message (the buffer is freed). */
void
gw_frame_reset(GwFramer *f)
{
	gw_buf_free(&f->msg);
	memset(f, 0, sizeof(*f));
}

/* Append a message header: type, then the length (body_len + 4). */
bool
gw_frame_append_header(GwBuf *out, char type, uint32_t body_len)
{
	unsigned char h[5];
	uint32_t	l = body_len + 4;

	h[0] = (unsigned char) type;
	h[1] = (l >> 24) & 0xff;
	h[2] = (l >> 16) & 0xff;
	h[3] = (l >> 8) & 0xff;
	h[4] = l & 0xff;
	return gw_buf_append(out, h, 5);
}

/*
 * Feed bytes of one direction.  Messages that ops->want selects are
 * collected and passed to ops->on_message once whole; all others are
 * copied to out as they arrive.  All of data is consumed unless an error
 * is returned: GW_FRAME_BADLEN for a length below 4 or above the server's
 * message limit, GW_FRAME_ABORT when on_message says so, GW_FRAME_NOMEM.
 */
int
gw_frame_feed(GwFramer *f, const char *data, size_t len, GwBuf *out,
			  const GwFrameOps *ops, void *arg)
{
	while (len > 0)
	{
		if (f->stream_left > 0)
		{
			size_t		n = len < f->stream_left ? len : f->stream_left;

			if (!gw_buf_append(out, data, n))
				return GW_FRAME_NOMEM;
			f->stream_left -= n;
			data += n;
			len -= n;
		}
		else if (f->collecting)
		{
			size_t		have = gw_buf_pending(&f->msg);
			size_t		n = f->body_len - have;

			if (n > len)
				n = len;
			if (!gw_buf_append(&f->msg, data, n))
				return GW_FRAME_NOMEM;
			data += n;
			len -= n;
			if (gw_buf_pending(&f->msg) == f->body_len)
			{
				bool		ok;

				f->collecting = false;
				ok = ops->on_message(arg, f->type,
									 f->msg.data ? f->msg.data + f->msg.off : "",
									 f->body_len, out);
				gw_buf_free(&f->msg);
				if (!ok)
					return GW_FRAME_ABORT;
			}
		}
		else
		{
			uint32_t	l;
			int			w;

			f->hdr[f->hdr_len++] = (unsigned char) *data;
			data++;
			len--;
			if (f->hdr_len < 5)
				continue;
			f->hdr_len = 0;
			l = ((uint32_t) f->hdr[1] << 24) | ((uint32_t) f->hdr[2] << 16) |
				((uint32_t) f->hdr[3] << 8) | (uint32_t) f->hdr[4];
			if (l < 4 || l > GW_MAX_MESSAGE)
				return GW_FRAME_BADLEN;
			f->type = (char) f->hdr[0];
			f->body_len = l - 4;
			w = ops->want(arg, f->type, f->body_len);
			if (w == GW_WANT_ABORT)
				return GW_FRAME_ABORT;
			if (w == GW_WANT_COLLECT)
			{
				f->collecting = true;
				if (f->body_len == 0)
				{
					/* nothing more to read: handle it now */
					f->collecting = false;
					if (!ops->on_message(arg, f->type, "", 0, out))
						return GW_FRAME_ABORT;
				}
			}
			else
			{
				if (!gw_buf_append(out, f->hdr, 5))
					return GW_FRAME_NOMEM;
				f->stream_left = f->body_len;
			}
		}
	}
	return GW_FRAME_OK;
}
