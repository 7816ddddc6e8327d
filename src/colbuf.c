/*-------------------------------------------------------------------------
 *
 * colbuf.c
 *	  Rows collected column by column, handed to SQL as one array per
 *	  column (see colbuf.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "colbuf.h"

void
rv_colbuf_init(RvColBuf *b, MemoryContext parent, int ncols, const Oid *types)
{
	Assert(ncols > 0 && ncols <= RV_COLBUF_MAX_COLS);
	memset(b, 0, sizeof(RvColBuf));
	b->cxt = AllocSetContextCreate(parent, "rvbbit column buffer",
								   ALLOCSET_DEFAULT_SIZES);
	b->ncols = ncols;
	memcpy(b->types, types, sizeof(Oid) * ncols);
}

int
rv_colbuf_add_row(RvColBuf *b)
{
	int			c;

	if (b->nrows >= b->cap)
	{
		int			cap = b->cap > 0 ? b->cap * 2 : 64;

		for (c = 0; c < b->ncols; c++)
		{
			if (b->cap == 0)
			{
				b->values[c] = MemoryContextAlloc(b->cxt, sizeof(Datum) * cap);
				b->nulls[c] = MemoryContextAlloc(b->cxt, sizeof(bool) * cap);
			}
			else
			{
				b->values[c] = repalloc(b->values[c], sizeof(Datum) * cap);
				b->nulls[c] = repalloc(b->nulls[c], sizeof(bool) * cap);
			}
		}
		b->cap = cap;
	}
	for (c = 0; c < b->ncols; c++)
	{
		b->values[c][b->nrows] = (Datum) 0;
		b->nulls[c][b->nrows] = true;
	}
	return b->nrows++;
}

void
rv_colbuf_set_text(RvColBuf *b, int row, int col, const char *s)
{
	MemoryContext old;

	Assert(row < b->nrows && col < b->ncols && b->types[col] == TEXTOID);
	if (s == NULL)
	{
		b->nulls[col][row] = true;
		return;
	}
	old = MemoryContextSwitchTo(b->cxt);
	b->values[col][row] = PointerGetDatum(cstring_to_text(s));
	MemoryContextSwitchTo(old);
	b->nulls[col][row] = false;
}

void
rv_colbuf_set_int(RvColBuf *b, int row, int col, int64 v)
{
	MemoryContext old;

	Assert(row < b->nrows && col < b->ncols);
	old = MemoryContextSwitchTo(b->cxt);
	switch (b->types[col])
	{
		case INT4OID:
			b->values[col][row] = Int32GetDatum((int32) v);
			break;
		case OIDOID:
			b->values[col][row] = ObjectIdGetDatum((Oid) v);
			break;
		case INT8OID:
			b->values[col][row] = Int64GetDatum(v);
			break;
		default:
			elog(ERROR, "rvbbit column buffer: column %d is not an integer", col);
	}
	MemoryContextSwitchTo(old);
	b->nulls[col][row] = false;
}

void
rv_colbuf_set_float8(RvColBuf *b, int row, int col, double v)
{
	MemoryContext old;

	Assert(row < b->nrows && col < b->ncols && b->types[col] == FLOAT8OID);
	old = MemoryContextSwitchTo(b->cxt);
	b->values[col][row] = Float8GetDatum(v);
	MemoryContextSwitchTo(old);
	b->nulls[col][row] = false;
}

void
rv_colbuf_arrays(RvColBuf *b, Datum *args)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int			dims[1];
	int			lbs[1] = {1};
	int			c;

	dims[0] = b->nrows;
	for (c = 0; c < b->ncols; c++)
	{
		int			len;
		bool		byval;
		char		align;

		switch (b->types[c])
		{
			case TEXTOID:
				len = -1;
				byval = false;
				align = TYPALIGN_INT;
				break;
			case INT4OID:
			case OIDOID:
				len = 4;
				byval = true;
				align = TYPALIGN_INT;
				break;
			case INT8OID:
			case FLOAT8OID:
				len = 8;
				byval = FLOAT8PASSBYVAL;
				align = TYPALIGN_DOUBLE;
				break;
			default:
				elog(ERROR, "rvbbit column buffer: unsupported type %u", b->types[c]);
		}
		if (b->nrows == 0)
			args[c] = PointerGetDatum(construct_empty_array(b->types[c]));
		else
			args[c] = PointerGetDatum(construct_md_array(b->values[c], b->nulls[c], 1,
														 dims, lbs, b->types[c],
														 len, byval, align));
	}
	MemoryContextSwitchTo(old);
}

void
rv_colbuf_array_types(const RvColBuf *b, Oid *types)
{
	int			c;

	for (c = 0; c < b->ncols; c++)
	{
		switch (b->types[c])
		{
			case TEXTOID:
				types[c] = TEXTARRAYOID;
				break;
			case INT4OID:
				types[c] = INT4ARRAYOID;
				break;
			case INT8OID:
				types[c] = INT8ARRAYOID;
				break;
			case OIDOID:
				types[c] = OIDARRAYOID;
				break;
			case FLOAT8OID:
				types[c] = FLOAT8ARRAYOID;
				break;
			default:
				elog(ERROR, "rvbbit column buffer: unsupported type %u", b->types[c]);
		}
	}
}

void
rv_colbuf_reset(RvColBuf *b)
{
	int			c;

	MemoryContextReset(b->cxt);
	for (c = 0; c < b->ncols; c++)
	{
		b->values[c] = NULL;
		b->nulls[c] = NULL;
	}
	b->nrows = 0;
	b->cap = 0;
}
