/*-------------------------------------------------------------------------
 *
 * colbuf.h
 *	  Rows collected column by column, handed to SQL as one array per
 *	  column (INSERT ... SELECT FROM unnest($1, $2, ...)).
 *
 * The worker batches its cache and call-log rows this way: building the
 * arrays costs a copy per value, where the JSON text it used before was
 * built with json-c, printed, and parsed again by jsonb_in and
 * jsonb_to_recordset (about a third of the worker's instructions per row).
 * The worker now writes most batches itself from values[] and nulls[]
 * (worker_db.c, wk_write_direct); the arrays are for the INSERT it falls
 * back to.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_COLBUF_H
#define RV_COLBUF_H

#include "postgres.h"

#define RV_COLBUF_MAX_COLS 24

typedef struct RvColBuf
{
	MemoryContext cxt;			/* the values and the arrays; reset by rv_colbuf_reset */
	int			ncols;
	Oid			types[RV_COLBUF_MAX_COLS];	/* TEXTOID, INT4OID, INT8OID, OIDOID, FLOAT8OID */
	int			nrows;
	int			cap;			/* rows the value arrays have room for */
	Datum	   *values[RV_COLBUF_MAX_COLS];
	bool	   *nulls[RV_COLBUF_MAX_COLS];
} RvColBuf;

/* Set up an empty buffer with ncols columns of the given types, in parent. */
extern void rv_colbuf_init(RvColBuf *b, MemoryContext parent, int ncols,
						   const Oid *types);

/* Start a row, every column NULL; returns its number. */
extern int	rv_colbuf_add_row(RvColBuf *b);

/* Set column col of row to a copy of s (NULL: SQL NULL). */
extern void rv_colbuf_set_text(RvColBuf *b, int row, int col, const char *s);

/* Set an integer column (int4, int8 or oid; the value must fit the type). */
extern void rv_colbuf_set_int(RvColBuf *b, int row, int col, int64 v);

extern void rv_colbuf_set_float8(RvColBuf *b, int row, int col, double v);

/*
 * One array per column into args[0..ncols) (in the buffer's context, valid
 * until the next rv_colbuf_reset).
 */
extern void rv_colbuf_arrays(RvColBuf *b, Datum *args);

/* The array types of the columns, for SPI_prepare. */
extern void rv_colbuf_array_types(const RvColBuf *b, Oid *types);

/* Forget every row and free their memory. */
extern void rv_colbuf_reset(RvColBuf *b);

#endif							/* RV_COLBUF_H */
