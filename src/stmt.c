/*-------------------------------------------------------------------------
 *
 * stmt.c
 *	  RVBBIT statements: planning one (shared by rvbbit.sql(), the rewrite,
 *	  jobs and the estimate), the query it runs, and rvbbit.sql() when it
 *	  is not rewritten.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include <ctype.h>

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>



#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/timestamp.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "mb/pg_wchar.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parse_relation.h"
#include "parser/parse_type.h"
#include "nodes/makefuncs.h"
#include "storage/lockdefs.h"
#include "tcop/tcopprot.h"
#include "utils/regproc.h"
#include "utils/varlena.h"

#include "cascade.h"
#include "channel.h"
#include "map.h"
#include "rvbbit.h"
#include "syntax.h"

PG_FUNCTION_INFO_V1(rvbbit_sql);

/* The auto-LIMIT of RUN statements (MAP's is rvbbit.default_limit). */
#define RV_RUN_DEFAULT_LIMIT 10000

/*
 * Byte offset in text of the 1-based character position pos (UTF-8).
 */
static int
rw_char_to_byte(const char *text, int pos)
{
	int			b = 0;
	int			c = 1;

	while (text[b] != '\0' && c < pos)
	{
		b += pg_mblen(text + b);
		c++;
	}
	return b;
}

/*
 * Length of the quoting that opens the literal at location in the query
 * source ('...', E'...', $tag$...$tag$), so that positions inside the
 * statement map to positions in the query.
 */
static int
rw_literal_prefix(const char *src, int location)
{
	const char *p;

	if (src == NULL || location < 0)
		return 0;
	p = src + location;
	if (*p == '\'')
		return 1;
	if ((*p == 'E' || *p == 'e') && p[1] == '\'')
		return 2;
	if (*p == '$')
	{
		const char *q = strchr(p + 1, '$');

		if (q != NULL)
			return (int) (q - p) + 1;
	}
	return 0;
}

/* Raise the error of a statement that did not parse. */
static void
rw_syntax_error(const char *text, int location, ParseState *pstate, RvError *err)
{
	int			byte = err->position > 0 ? rw_char_to_byte(text, err->position) : 0;

	if (pstate != NULL && location >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg_internal("%s", err->message),
				 err->detail[0] ? errdetail_internal("%s", err->detail) : 0,
				 err->hint[0] ? errhint("%s", err->hint) : 0,
				 parser_errposition(pstate, location +
									rw_literal_prefix(pstate->p_sourcetext, location) + byte)));
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg_internal("%s", err->message),
			 err->detail[0] ? errdetail_internal("%s", err->detail) : 0,
			 err->hint[0] ? errhint("%s", err->hint) : 0,
			 err->position > 0 ? internalerrposition(err->position) : 0,
			 internalerrquery(text)));
}

/* The options of a statement as a json-c object (caller frees). */
static json_object *
rw_options_object(const RvStatement *stmt)
{
	json_object *obj = json_object_new_object();
	int			i;

	for (i = 0; i < stmt->noptions; i++)
	{
		const RvOption *o = &stmt->options[i];
		json_object *v = NULL;

		switch (o->kind)
		{
			case RV_OPT_STRING:
			case RV_OPT_IDENT:
				v = json_object_new_string(o->value);
				break;
			case RV_OPT_NUMBER:
				if (strpbrk(o->value, ".eE") != NULL)
					v = json_object_new_double(strtod(o->value, NULL));
				else
					v = json_object_new_int64(strtoll(o->value, NULL, 10));
				break;
			case RV_OPT_BOOL:
				v = json_object_new_boolean(strcmp(o->value, "true") == 0);
				break;
			case RV_OPT_NULL:
				v = NULL;
				break;
		}
		json_object_object_add(obj, o->name, v);
	}
	return obj;
}

/*
 * Columns inferred from the output_schema of the cascade's last cell:
 * string -> text, integer -> bigint, number -> double precision,
 * boolean -> boolean, anything else -> jsonb.
 */
static void
rw_infer_columns(const char *ref, RvPlannedStatement *out)
{
	char	   *display;
	char	   *def = rv_resolve_cascade(ref, &display);
	RvCascade  *c = rv_check_cascade(display, def);
	json_object *schema = c->cells[c->ncells - 1].output_schema;
	json_object *props = NULL;
	int			n;

	if (schema == NULL || !json_object_object_get_ex(schema, "properties", &props) ||
		!json_object_is_type(props, json_type_object) || json_object_object_length(props) == 0)
	{
		rv_cascade_free(c);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("infer_schema needs an output_schema with properties on the last cell of cascade \"%s\"",
						display),
				 errhint("Name the columns with AS (col type, ...) instead.")));
	}
	n = json_object_object_length(props);
	out->ncolumns = n;
	out->colnames = palloc(sizeof(char *) * n);
	out->coltypes = palloc(sizeof(char *) * n);
	n = 0;
	{
		json_object_object_foreach(props, key, val)
		{
			json_object *t = NULL;
			const char *type = NULL;
			const char *sqltype = "jsonb";

			if (val && json_object_object_get_ex(val, "type", &t) &&
				json_object_is_type(t, json_type_string))
				type = json_object_get_string(t);
			if (type && strcmp(type, "string") == 0)
				sqltype = "text";
			else if (type && strcmp(type, "integer") == 0)
				sqltype = "bigint";
			else if (type && strcmp(type, "number") == 0)
				sqltype = "double precision";
			else if (type && strcmp(type, "boolean") == 0)
				sqltype = "boolean";
			out->colnames[n] = pstrdup(key);
			out->coltypes[n] = pstrdup(sqltype);
			n++;
		}
	}
	rv_cascade_free(c);
}

/*
 * The statement's WITH options over the defaults into *opts, or an error.
 * The json-c object is freed either way.  (A function of its own rather
 * than a PG_TRY nested in rv_plan_statement's: nested PG_TRY blocks need
 * distinct names from 16 on, and 15's PG_TRY takes none.)
 */
static void
rw_parse_statement_options(const RvStatement *stmt, RvOptions *opts, RvOptWhere where)
{
	json_object *obj;

	rv_default_options(opts);
	obj = rw_options_object(stmt);
	PG_TRY();
	{
		rv_parse_options_json(obj, opts, where);
	}
	PG_FINALLY();
	{
		json_object_put(obj);
	}
	PG_END_TRY();
}

/*
 * Parse and check an RVBBIT statement.  location is the byte offset of the
 * statement literal in pstate's query text (-1 when unknown), for error
 * positions.  Fills *out, or raises an error.
 */
void
rv_plan_statement(const char *text, int location, ParseState *pstate,
				  RvPlannedStatement *out)
{
	RvError		err;
	RvStatement *stmt;
	json_object *mapopts;
	int			i;

	memset(out, 0, sizeof(RvPlannedStatement));
	rv_error_clear(&err);
	stmt = rv_statement_parse(text, &err);
	if (stmt == NULL)
		rw_syntax_error(text, location, pstate, &err);

	PG_TRY();
	{
		out->is_run = (stmt->kind == RV_STMT_RUN);

		out->cascade = pstrdup(stmt->cascade);
		out->query = pstrdup(stmt->query);
		out->query_position = stmt->query_position;
		out->parallel = stmt->parallel == 0 ? 1 :
			stmt->parallel < 0 ? rv_default_parallel : stmt->parallel;

		rw_parse_statement_options(stmt, &out->opts,
								   out->is_run ? RV_OPTS_RUN_STATEMENT : RV_OPTS_MAP_STATEMENT);
		if (out->opts.parallel > 0)
			out->parallel = out->opts.parallel;
		if (stmt->batch > 0 && (out->opts.given & RV_OPT_BIT(RV_OPT_BATCH)))
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("BATCH is given twice"),
					 errdetail("The statement has both BATCH %d and the batch option.", stmt->batch),
					 errhint("Keep one of them.")));
		if (stmt->batch > 0)
			out->opts.batch = stmt->batch;
		if (stmt->distinct)
			out->opts.cache_read = out->opts.cache_write = true;
		if (out->opts.limit < 0)
			out->opts.limit = out->is_run ? RV_RUN_DEFAULT_LIMIT : rv_default_limit;
		out->result_name = pstrdup(stmt->alias ? stmt->alias :
								   out->opts.result_column ? out->opts.result_column : "result");

		if (stmt->ncolumns > 0)
		{
			out->ncolumns = stmt->ncolumns;
			out->colnames = palloc(sizeof(char *) * stmt->ncolumns);
			out->coltypes = palloc(sizeof(char *) * stmt->ncolumns);
			for (i = 0; i < stmt->ncolumns; i++)
			{
				out->colnames[i] = pstrdup(stmt->columns[i].name);
				out->coltypes[i] = pstrdup(stmt->columns[i].type);
			}
		}
		else if (out->opts.infer_schema)
			rw_infer_columns(out->cascade, out);
		out->opts.unpack = out->ncolumns > 0;

		/* RUN ASYNC / async = true: a background job, unless we are its runner */
		out->is_async = (stmt->async || out->opts.async) && !rv_in_job_runner;
		if (out->is_async && !out->is_run && out->opts.as_table == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an async MAP needs the as_table option"),
					 errdetail("A background job has no client to return rows to."),
					 errhint("Add WITH (async = true, as_table = 'results_table').")));
	}
	PG_FINALLY();
	{
		rv_statement_free(stmt);
	}
	PG_END_TRY();

	/* the options rvbbit.map() gets */
	mapopts = json_object_new_object();
	rv_options_pass_json(&out->opts, mapopts);
	out->options_json = pstrdup(json_object_to_json_string_ext(mapopts, JSON_C_TO_STRING_PLAIN));
	json_object_put(mapopts);
}

/* Append "name type" column definitions of the USING query to buf. */
/* query_tree_walker callback: collect the relations a query reads. */
static bool
rw_collect_relations(Node *node, List **rels)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION)
			*rels = list_append_unique_oid(*rels, rte->relid);
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, rw_collect_relations, rels,
								 QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, rw_collect_relations, rels);
}

/*
 * Where the USING query of the statement being rewritten starts in the
 * client's query text (set by the post_parse_analyze hook while it
 * rewrites, rv_stmt_using_at), so that an error in the USING query (a
 * missing table) points at the right character of that text, as an error
 * in a plain SELECT does.
 */
static struct
{
	const char *source;			/* the client's query text */
	int			byte;			/* byte offset of query in source */
	const char *query;			/* the USING query text */
} rw_using_at;

/*
 * Record where ps's USING query is in the client's text src (the statement
 * literal at byte location), when it is there verbatim (a dollar-quoted or
 * escape-free literal); src NULL forgets it.
 */
void
rv_stmt_using_at(const char *src, int location, const char *stmt_text,
				 const RvPlannedStatement *ps)
{
	memset(&rw_using_at, 0, sizeof(rw_using_at));
	if (src != NULL && location >= 0 && ps != NULL && ps->query_position > 0)
	{
		int			at = location + rw_literal_prefix(src, location) +
			rw_char_to_byte(stmt_text, ps->query_position);

		if (at <= (int) strlen(src) && strncmp(src + at, ps->query, strlen(ps->query)) == 0)
		{
			rw_using_at.source = src;
			rw_using_at.byte = at;
			rw_using_at.query = ps->query;
		}
	}
}

/*
 * Error context of parsing text that is not the client's query text: move
 * the error position to where it is in the client's text when known (the
 * USING query, see rv_stmt_using_at), else to an internal position of
 * text, shown as QUERY.
 */
void
rv_stmt_parse_errcb(void *arg)
{
	const char *text = arg;
	int			pos = geterrposition();

	if (pos <= 0)
		return;
	if (rw_using_at.query != NULL && rw_using_at.source != NULL &&
		strcmp(rw_using_at.query, text) == 0)
	{
		int			b = rw_using_at.byte + rw_char_to_byte(text, pos);

		errposition(pg_mbstrlen_with_len(rw_using_at.source, b) + 1);
		return;
	}
	errposition(0);
	internalerrposition(pos);
	internalerrquery(text);
}

/*
 * Append "name type" column definitions of the USING query to buf, and the
 * relations it reads to *rels (for plan invalidation).
 */
void
rw_query_columns_rels(const char *query, StringInfo buf, List **names, List **rels)
{
	List	   *raw;
	Query	   *uq;
	ListCell   *lc;
	int			n = 0;
	ErrorContextCallback errcb;

	errcb.callback = rv_stmt_parse_errcb;
	errcb.arg = unconstify(char *, query);
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raw = pg_parse_query(query);
	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the USING query must be one statement")));
	uq = parse_analyze_fixedparams(linitial_node(RawStmt, raw), query, NULL, 0, NULL);
	error_context_stack = errcb.previous;
	if (uq->commandType != CMD_SELECT || uq->utilityStmt != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("the USING query must be a SELECT, VALUES or TABLE query")));
	foreach(lc, uq->targetList)
	{
		TargetEntry *te = lfirst_node(TargetEntry, lc);
		char	   *name;

		if (te->resjunk)
			continue;
		name = te->resname ? te->resname : psprintf("column%d", n + 1);
		if (n++ > 0)
			appendStringInfoString(buf, ", ");
		appendStringInfo(buf, "%s %s", quote_identifier(name),
						 format_type_with_typemod(exprType((Node *) te->expr),
												  exprTypmod((Node *) te->expr)));
		*names = lappend(*names, name);
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the USING query returns no columns")));
	if (rels != NULL)
		(void) query_tree_walker(uq, rw_collect_relations, rels, QTW_EXAMINE_RTES_BEFORE);
}

/* Append the column definitions of the USING query to buf. */
static void
rw_query_columns(const char *query, StringInfo buf, List **names)
{
	rw_query_columns_rels(query, buf, names, NULL);
}

/*
 * The query a planned statement runs:
 *	 SELECT * FROM rvbbit.map(...) AS rvbbit_map(<columns>)
 * with the USING query's columns (names, types, typmods) and the result
 * column or typed columns.  pstate may be NULL.
 */
char *
rv_map_sql(RvPlannedStatement *ps, ParseState *pstate)
{
	StringInfoData sql;
	List	   *names = NIL;
	ListCell   *lc;
	int			i;

	initStringInfo(&sql);
	if (ps->is_run)
	{
		/*
		 * RUN: all rows (one more than the limit, so that truncation can be
		 * told) aggregated in input order into one call.
		 */
		appendStringInfo(&sql,
						 "SELECT rvbbit._run_rows(%s, coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(_rvbbit_q.*)), '[]'), %s::pg_catalog.jsonb) AS %s "
						 "FROM (SELECT * FROM (%s\n) AS _rvbbit_q0%s) AS _rvbbit_q",
						 quote_literal_cstr(ps->cascade), quote_literal_cstr(ps->options_json),
						 quote_identifier(ps->result_name), ps->query,
						 ps->opts.limit > 0 ? psprintf(" LIMIT %lld", (long long) ps->opts.limit + 1) : "");
		return sql.data;
	}
	appendStringInfo(&sql, "SELECT * FROM rvbbit.map(%s, %s, %d, %s::pg_catalog.jsonb) AS rvbbit_map(",
					 quote_literal_cstr(ps->cascade), quote_literal_cstr(ps->query),
					 ps->parallel, quote_literal_cstr(ps->options_json));
	rw_query_columns(ps->query, &sql, &names);
	if (ps->ncolumns == 0)
		appendStringInfo(&sql, ", %s pg_catalog.jsonb", quote_identifier(ps->result_name));
	for (i = 0; i < ps->ncolumns; i++)
	{
		Oid			typid;
		int32		typmod;

		typenameTypeIdAndMod(pstate, rv_typeStringToTypeName(ps->coltypes[i]), &typid, &typmod);
		appendStringInfo(&sql, ", %s %s", quote_identifier(ps->colnames[i]),
						 format_type_with_typemod(typid, typmod));
	}
	appendStringInfoChar(&sql, ')');

	/* a result column may not repeat a column of the USING query */
	foreach(lc, names)
	{
		const char *n = (const char *) lfirst(lc);
		bool		clash = (ps->ncolumns == 0 && strcmp(n, ps->result_name) == 0);

		for (i = 0; i < ps->ncolumns && !clash; i++)
			clash = (strcmp(n, ps->colnames[i]) == 0);
		if (clash)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" is both in the USING query and a result column", n),
					 errhint("Name the result with AS alias, or rename the query's column.")));
	}
	return sql.data;
}

/*
 * RUN ... WITH (as_table): the result must be an array; its items become
 * rows, with columns from the properties of the output_schema's items
 * (string -> text, integer -> bigint, number -> double precision, boolean
 * -> boolean, else jsonb), or one jsonb column "value".
 */
static char *
rw_run_table_sql(RvPlannedStatement *ps)
{
	char	   *display;
	char	   *def = rv_resolve_cascade(ps->cascade, &display);
	RvCascade  *c = rv_check_cascade(display, def);
	json_object *schema = c->cells[c->ncells - 1].output_schema;
	json_object *items = NULL;
	json_object *props = NULL;
	StringInfoData cols;

	initStringInfo(&cols);
	if (schema && json_object_object_get_ex(schema, "items", &items) && items &&
		json_object_object_get_ex(items, "properties", &props) &&
		json_object_is_type(props, json_type_object) && json_object_object_length(props) > 0)
	{
		json_object_object_foreach(props, key, val)
		{
			json_object *t = NULL;
			const char *type = NULL;

			if (val && json_object_object_get_ex(val, "type", &t) && json_object_is_type(t, json_type_string))
				type = json_object_get_string(t);
			if (cols.len > 0)
				appendStringInfoString(&cols, ", ");
			if (type && strcmp(type, "string") == 0)
				appendStringInfo(&cols, "(_rvbbit_item ->> %s) AS %s", quote_literal_cstr(key), quote_identifier(key));
			else if (type && (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0 ||
							  strcmp(type, "boolean") == 0))
				appendStringInfo(&cols, "(_rvbbit_item OPERATOR(pg_catalog.->>) %s)::%s AS %s", quote_literal_cstr(key),
								 strcmp(type, "integer") == 0 ? "bigint" :
								 strcmp(type, "number") == 0 ? "double precision" : "boolean",
								 quote_identifier(key));
			else
				appendStringInfo(&cols, "(_rvbbit_item OPERATOR(pg_catalog.->) %s) AS %s", quote_literal_cstr(key), quote_identifier(key));
		}
	}
	else
		appendStringInfoString(&cols, "_rvbbit_item AS value");
	rv_cascade_free(c);
	return psprintf("SELECT %s FROM (%s) AS _rvbbit_run, "
					"pg_catalog.jsonb_array_elements(CASE pg_catalog.jsonb_typeof(_rvbbit_run.%s) WHEN 'array' THEN _rvbbit_run.%s "
					"ELSE rvbbit._not_an_array(_rvbbit_run.%s) END) AS _rvbbit_item",
					cols.data, rv_map_sql(ps, NULL), quote_identifier(ps->result_name),
					quote_identifier(ps->result_name), quote_identifier(ps->result_name));
}

/*
 * Run a statement with the as_table option: CREATE TABLE <as_table> AS
 * its query, with the caller's privileges.  Returns the number of rows
 * written and sets *table to the table's name.
 */
int64
rv_as_table(const char *stmt_text, char **table)
{
	RvPlannedStatement ps;
	char	   *sql;
	List	   *names;
	int64		rows;

	rv_plan_statement(stmt_text, -1, NULL, &ps);
	if (ps.opts.as_table == NULL)
		elog(ERROR, "statement has no as_table option");
	names = rv_stringToQualifiedNameList(ps.opts.as_table);
	*table = NameListToQuotedString(names);
	if (ps.is_run)
		sql = psprintf("CREATE TABLE %s AS %s", *table, rw_run_table_sql(&ps));
	else
		sql = psprintf("CREATE TABLE %s AS %s", *table, rv_map_sql(&ps, NULL));
	SPI_connect();
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create table %s", *table);
	rows = (int64) SPI_processed;
	SPI_finish();
	return rows;
}

PG_FUNCTION_INFO_V1(rvbbit_as_table);

/* rvbbit._as_table(statement text, OUT as_table text, OUT rows bigint) */
Datum
rvbbit_as_table(PG_FUNCTION_ARGS)
{
	TupleDesc	td;
	Datum		v[2];
	bool		n[2] = {false, false};
	char	   *table;

	rv_require_shared();
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	v[1] = Int64GetDatum(rv_as_table(text_to_cstring(PG_GETARG_TEXT_PP(0)), &table));
	v[0] = CStringGetTextDatum(table);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), v, n)));
}

/*
 * rvbbit.sql(statement text) returns setof jsonb, when it was not
 * rewritten (it is not the whole query): one jsonb object per row.
 */
Datum
rvbbit_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RvPlannedStatement ps;

	rv_require_shared();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("statement must not be null")));
	rv_plan_statement(text_to_cstring(PG_GETARG_TEXT_PP(0)), -1, NULL, &ps);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (ps.is_async)
	{
		/* a background job: return its id */
		Oid			argtypes[1] = {TEXTOID};
		Datum		args[1];
		Datum		d;
		bool		isnull = false;
		char	   *obj;

		SPI_connect();
		args[0] = PG_GETARG_DATUM(0);
		if (SPI_execute_with_args("SELECT s.job_id FROM rvbbit._submit_job($1) s", 1, argtypes, args,
								  NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not submit the job");
		obj = psprintf("{\"job_id\": %s}", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		SPI_finish();
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(obj));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	if (ps.is_run && ps.opts.as_table == NULL)
	{
		Datum		d;
		bool		isnull;
		StringInfoData buf;

		SPI_connect();
		if (SPI_execute(rv_map_sql(&ps, NULL), true, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "RUN did not return one row");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		escape_json(&buf, ps.result_name);
		appendStringInfoString(&buf, ": ");
		if (isnull)
			appendStringInfoString(&buf, "null");
		else
			(void) JsonbToCString(&buf, &DatumGetJsonbP(d)->root, 0);
		appendStringInfoChar(&buf, '}');
		SPI_finish();
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		isnull = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	if (ps.opts.as_table)
	{
		char	   *table;
		int64		rows = rv_as_table(text_to_cstring(PG_GETARG_TEXT_PP(0)), &table);
		StringInfoData buf;
		Datum		d;
		bool		isnull = false;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"as_table\": ");
		escape_json(&buf, table);
		appendStringInfo(&buf, ", \"rows\": %lld}", (long long) rows);
		d = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
		return (Datum) 0;
	}
	map_run(rsinfo, ps.cascade, ps.query, ps.parallel, &ps.opts, MAP_OUT_JSON,
			ps.result_name);
	return (Datum) 0;
}
