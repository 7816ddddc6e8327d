/*-------------------------------------------------------------------------
 *
 * syntax.h
 *	  Parser for RVBBIT statements (the text given to rvbbit.sql()).
 *
 * Pure: no PostgreSQL headers; malloc'd AST freed by rv_statement_free();
 * errors in an RvError whose position is the 1-based character offset of
 * the offending token in the statement text.
 *
 * Grammar (keywords case-insensitive):
 *
 *   [RVBBIT] MAP [PARALLEL [n]] [BATCH n] [DISTINCT] 'cascade'
 *            [AS alias | AS (col type, ...) | RETURNING (col type, ...)]
 *            USING ( query ) [WITH ( option = value, ... )] [;]
 *   [RVBBIT] RUN [ASYNC] 'cascade' [AS alias] USING ( query )
 *            [WITH ( option = value, ... )] [;]
 *
 * 'cascade' is a single-quoted or dollar-quoted string, or a bare or
 * double-quoted identifier.  The query inside USING ( ... ) is copied
 * verbatim; the tokenizer understands single-quoted strings (with ''
 * and E'\'' escapes), dollar quotes ($$ and $tag$), double-quoted
 * identifiers, -- and nested C-style comments, and nested parentheses.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_SYNTAX_H
#define RV_SYNTAX_H

#include "rverror.h"

typedef enum RvStmtKind
{
	RV_STMT_MAP,
	RV_STMT_RUN
} RvStmtKind;

typedef enum RvOptKind
{
	RV_OPT_STRING,				/* 'text' or $$text$$ */
	RV_OPT_NUMBER,				/* 10, 2.5, -1 */
	RV_OPT_BOOL,				/* true / false (also on / off) */
	RV_OPT_IDENT,				/* bare word such as fail, null, value */
	RV_OPT_NULL					/* NULL keyword */
} RvOptKind;

typedef struct RvOption
{
	char	   *name;			/* lower-cased */
	char	   *value;			/* text of the value (unquoted); "true"/"false" for bools */
	RvOptKind	kind;
	int			position;		/* 1-based position of the option name */
} RvOption;

typedef struct RvColumnDef
{
	char	   *name;			/* identifier, lower-cased unless double-quoted */
	char	   *type;			/* type text as written, e.g. "numeric(10,2)", "text[]",
								 * "double precision", "timestamp with time zone" */
	int			position;
} RvColumnDef;

typedef struct RvStatement
{
	RvStmtKind	kind;
	bool		async;			/* RUN ASYNC */
	int			parallel;		/* 0: not given; -1: PARALLEL without n; else n >= 1 */
	int			batch;			/* 0: not given; else n >= 1 */
	bool		distinct;
	char	   *cascade;		/* the cascade reference (unquoted) */
	int			cascade_position;
	char	   *alias;			/* AS alias, or NULL */
	int			ncolumns;		/* AS (...) / RETURNING (...) columns, 0 if none */
	RvColumnDef *columns;
	char	   *query;			/* text between USING ( and the matching ), trimmed */
	int			query_position; /* 1-based position of the first character of query */
	int			noptions;
	RvOption   *options;
} RvStatement;

/*
 * Parse one statement.  Returns NULL with err on a syntax error; the
 * message names what was expected ("syntax error at or near \"FOO\"",
 * detail "Expected USING."), and err->position points at the offending
 * token (or one past the end for "unexpected end of statement").  Checks:
 * n in PARALLEL/BATCH is a positive integer (at most 100000); the USING
 * query is not empty; option names are known (the rows of optlist.h with
 * a place in the with column) and appear once, with a hint listing the
 * valid names for an unknown one; column names in AS (...)
 * are unique; RUN takes no PARALLEL/BATCH/DISTINCT/column list.
 */
extern RvStatement *rv_statement_parse(const char *text, RvError *err);

extern void rv_statement_free(RvStatement *stmt);

/* Option value lookup helpers: NULL when the option is absent. */
extern const RvOption *rv_statement_option(const RvStatement *stmt, const char *name);

#endif							/* RV_SYNTAX_H */
