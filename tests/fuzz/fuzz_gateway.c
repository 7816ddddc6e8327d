/*-------------------------------------------------------------------------
 *
 * fuzz_gateway.c
 *	  Fuzz target for rvbbit-gateway's framer and rewriter
 *	  (src/gateway/gw_buf.c, src/gateway/gw_rewrite.c).
 *
 * The first byte picks the settings (standard_conforming_strings, chunk
 * size); the rest is fed to the framer as a client's message stream in
 * chunks, with Query and Parse messages collected and rewritten.  Besides
 * the sanitizers, it aborts when:
 *	- the output of a stream without any RVBBIT keyword differs from the
 *	  input (nothing else is ever changed);
 *	- a rewritten text, with its wrappers removed, is not the input text;
 *	- the same input fed whole gives another output than fed in chunks.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gw.h"

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fz_scs;

static int
fz_want(void *arg, char type, uint32_t len)
{
	(void) arg;
	return (type == 'Q' || type == 'P') && len <= 65536 ? GW_WANT_COLLECT : GW_WANT_STREAM;
}

static bool
fz_msg(void *arg, char type, const char *body, uint32_t len, GwBuf *out)
{
	(void) arg;
	return gw_rewrite_message(type, body, len, fz_scs, true, out) >= 0;
}

static const GwFrameOps fz_ops = {fz_want, fz_msg};

/* does the text mention rvbbit (any case)? */
static bool
fz_mentions(const uint8_t *d, size_t n)
{
	size_t		i;

	for (i = 0; i + 6 <= n; i++)
		if (strncasecmp((const char *) d + i, "rvbbit", 6) == 0)
			return true;
	return false;
}

/* remove every "SELECT * FROM rvbbit.sql($tag$" ... "$tag$)" pair */
static size_t
fz_unwrap(char *s, size_t n)
{
	static const char head[] = "SELECT * FROM rvbbit.sql($rvbbit";
	size_t		hl = sizeof(head) - 1;
	size_t		i = 0;

	while (i + hl <= n)
	{
		if (memcmp(s + i, head, hl) == 0)
		{
			size_t		j = i + hl;
			size_t		tl;
			char		tag[32];
			size_t		k;

			while (j < n && s[j] != '$')
				j++;
			if (j >= n)
				abort();
			/* tag is "$rvbbit...$" */
			tl = j + 1 - (i + hl - 7);
			if (tl >= sizeof(tag))
				abort();
			memcpy(tag, s + i + hl - 7, tl);
			/* find the closing tag + ")" */
			for (k = j + 1; k + tl + 1 <= n; k++)
				if (memcmp(s + k, tag, tl) == 0 && s[k + tl] == ')')
					break;
			if (k + tl + 1 > n)
				abort();
			/* drop closing tag and ')' then the head and opening tag */
			memmove(s + k, s + k + tl + 1, n - (k + tl + 1));
			n -= tl + 1;
			memmove(s + i, s + j + 1, n - (j + 1));
			n -= j + 1 - i;
			i = k - (j + 1 - i);
		}
		else
			i++;
	}
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	GwFramer	f = {0};
	GwBuf		out1 = {0};
	GwBuf		out2 = {0};
	size_t		chunk;
	size_t		i;
	int			r1 = 0;
	int			r2;
	char	   *t;
	size_t		tl;
	int			flags;

	if (size < 1)
		return 0;
	fz_scs = (data[0] & 1) != 0;
	chunk = 1 + (data[0] >> 1);
	data++;
	size--;

	for (i = 0; i < size && r1 == 0; i += chunk)
		r1 = gw_frame_feed(&f, (const char *) data + i,
						   size - i < chunk ? size - i : chunk, &out1, &fz_ops, NULL);
	gw_frame_reset(&f);
	r2 = gw_frame_feed(&f, (const char *) data, size, &out2, &fz_ops, NULL);
	gw_frame_reset(&f);
	if (r1 != r2)
		abort();
	if (r1 == 0 && (out1.len != out2.len ||
					 (out1.len > 0 && memcmp(out1.data, out2.data, out1.len) != 0)))
		abort();
	/* with no message cut off and no RVBBIT, the stream is unchanged */
	if (r1 == 0 && !fz_mentions(data, size) && out1.len > size)
		abort();
	if (r1 == 0 && !fz_mentions(data, size) && out1.len > 0 &&
		memcmp(out1.data, data, out1.len) != 0)
		abort();
	gw_buf_free(&out1);
	gw_buf_free(&out2);

	/* the input as one SQL text: unwrapping the rewrite gives it back */
	t = gw_rewrite_text((const char *) data, size, fz_scs, true, &tl, &flags);
	if (t != NULL)
	{
		if (!(flags & GW_RW_REWROTE) || t[tl] != '\0')
			abort();
		if (!fz_mentions(data, size))
			abort();
		tl = fz_unwrap(t, tl);
		if (tl != size || (size > 0 && memcmp(t, data, size) != 0))
			abort();
		free(t);
	}

	/*
	 * Error positions (single-byte counting, so a character is a byte):
	 * every position of the rewritten text maps into the original, a copied
	 * byte to the same byte, and the map covers the rewritten text exactly.
	 */
	{
		GwPosMap	map;
		long		p;

		t = gw_rewrite_text_map((const char *) data, size, fz_scs, true, &tl, &flags,
								&map, GW_ENC_SINGLE);
		if (t != NULL)
		{
			uint32_t	covered = 0;
			int			k;

			if (map.drop || map.rw_total != tl || map.orig_total != size)
				abort();
			for (k = 0; k < map.nsegs; k++)
			{
				if (map.segs[k].rw != covered)
					abort();
				covered += map.segs[k].len;
			}
			if (covered != tl)
				abort();
			for (p = 1; p <= (long) tl + 1; p++)
			{
				long		o = gw_map_position(&map, p);

				if (o < 1 || o > (long) size + 1)
					abort();
				if (p <= (long) tl && o <= (long) size &&
					t[p - 1] != (char) data[o - 1])
				{
					/* only inserted text may differ */
					int			lo = 0;

					while (lo + 1 < map.nsegs && (long) map.segs[lo + 1].rw <= p - 1)
						lo++;
					if (!map.segs[lo].inserted)
						abort();
				}
			}
			free(t);
			gw_posmap_free(&map);
		}
	}
	return 0;
}
