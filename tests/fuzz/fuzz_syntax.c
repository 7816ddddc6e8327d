/*-------------------------------------------------------------------------
 *
 * fuzz_syntax.c
 *	  Fuzz target for the RVBBIT statement parser (src/syntax.c).
 *
 * Parses the input (cut at its first NUL byte) and, besides relying on the
 * sanitizers, aborts when a result breaks an invariant:
 *	- a failure leaves an error message and a position inside the text
 *	  (1 .. characters + 1);
 *	- a success has a non-empty cascade name and query; the query is the
 *	  input text at query_position, with no surrounding whitespace; the
 *	  counts are in range; column names and types are non-empty and the
 *	  names distinct; option names are distinct and have values;
 *	- parsing the same text again gives the same result.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "syntax.h"

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Does the query appear in text at 1-based character position pos?  A
 * character position names the byte after the (pos - 1)th UTF-8 lead
 * byte; in invalid UTF-8 continuation bytes follow it without counting,
 * so every byte offset with that position is tried.
 */
static int
fz_query_at(const char *text, size_t len, int pos, const char *query)
{
	size_t		i;
	size_t		qlen = strlen(query);
	int			chars = 1;		/* position of the byte at offset i */

	for (i = 0; i <= len; i++)
	{
		if (chars == pos && i + qlen <= len &&
			memcmp(text + i, query, qlen) == 0)
			return 1;
		if (chars > pos || i == len)
			break;
		if ((((unsigned char) text[i]) & 0xC0) != 0x80)
			chars++;
	}
	return 0;
}

/* Number of characters in text (UTF-8 lead bytes). */
static int
fz_chars(const char *text, size_t len)
{
	size_t		i;
	int			n = 0;

	for (i = 0; i < len; i++)
		if ((((unsigned char) text[i]) & 0xC0) != 0x80)
			n++;
	return n;
}

static int
fz_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Abort unless a successful parse of text satisfies the invariants. */
static void
fz_check(const char *text, size_t len, const RvStatement *s)
{
	size_t		qlen;
	int			i,
				j;

	if (s->kind != RV_STMT_MAP && s->kind != RV_STMT_RUN)
		abort();
	if (s->cascade == NULL || s->cascade[0] == '\0')
		abort();
	if (s->cascade_position < 1 || s->cascade_position > fz_chars(text, len))
		abort();
	if (s->query == NULL || s->query[0] == '\0')
		abort();
	qlen = strlen(s->query);
	if (!fz_query_at(text, len, s->query_position, s->query))
		abort();
	if (fz_space(s->query[0]) || fz_space(s->query[qlen - 1]))
		abort();
	if (s->parallel < -1 || s->parallel > 100000 ||
		s->batch < 0 || s->batch > 100000)
		abort();
	if (s->kind == RV_STMT_RUN &&
		(s->parallel != 0 || s->batch != 0 || s->distinct || s->ncolumns != 0))
		abort();
	if (s->kind == RV_STMT_MAP && s->async)
		abort();
	if (s->alias != NULL && (s->alias[0] == '\0' || s->ncolumns != 0))
		abort();
	if (s->ncolumns < 0 || (s->ncolumns > 0 && s->columns == NULL))
		abort();
	/* pairwise only for small lists, to keep each run fast */
	for (i = 0; i < s->ncolumns; i++)
	{
		if (s->columns[i].name == NULL || s->columns[i].name[0] == '\0' ||
			s->columns[i].type == NULL || s->columns[i].type[0] == '\0' ||
			s->columns[i].position < 1)
			abort();
		for (j = 0; j < i && s->ncolumns <= 200; j++)
			if (strcmp(s->columns[i].name, s->columns[j].name) == 0)
				abort();
	}
	if (s->noptions < 0 || s->noptions > 13)
		abort();
	for (i = 0; i < s->noptions; i++)
	{
		if (s->options[i].name == NULL || s->options[i].value == NULL ||
			s->options[i].position < 1)
			abort();
		if (rv_statement_option(s, s->options[i].name) != &s->options[i])
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = malloc(size + 1);
	size_t		len;
	RvError		err;
	RvError		err2;
	RvStatement *s;
	RvStatement *s2;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	len = strlen(text);

	s = rv_statement_parse(text, &err);
	if (s == NULL)
	{
		if (!err.set || err.message[0] == '\0' ||
			err.position < 1 || err.position > fz_chars(text, len) + 1)
			abort();
	}
	else
	{
		if (err.set)
			abort();
		fz_check(text, len, s);
	}

	/* deterministic */
	s2 = rv_statement_parse(text, &err2);
	if ((s == NULL) != (s2 == NULL) ||
		(s == NULL && (strcmp(err.message, err2.message) != 0 ||
					   err.position != err2.position)) ||
		(s != NULL && strcmp(s->query, s2->query) != 0))
		abort();

	rv_statement_free(s);
	rv_statement_free(s2);
	free(text);
	return 0;
}
