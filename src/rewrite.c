/*-------------------------------------------------------------------------
 *
 * rewrite.c
 *	  RVBBIT statements: planning them (shared by rvbbit.sql() and the
 *	  rewrite) and the post_parse_analyze hook that turns
 *	  SELECT * FROM rvbbit.sql('<statement>') into a call of rvbbit.map()
 *	  with real, typed columns.
 *
 * PostgreSQL's grammar cannot be extended, so an RVBBIT statement travels
 * as the literal argument of rvbbit.sql().  When that call is the whole
 * query, the hook parses the statement, analyzes the USING query to learn
 * its columns (names, types, typmods), and replaces the Query with the
 * analysis of
 *
 *	 SELECT * FROM rvbbit.map(cascade, query, parallel, options)
 *		 AS rvbbit_map(<USING columns>, <result column or typed columns>)
 *
 * so clients see ordinary columns in the row description, for the simple
 * and the extended protocol alike, and the plan cache re-runs the rewrite
 * whenever it re-analyzes.  The same happens for the query inside EXPLAIN,
 * CREATE TABLE AS, DECLARE CURSOR and (through its own analysis) COPY.
 * Anywhere else rvbbit.sql() returns one jsonb object per row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "pgjsonc.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "storage/lockdefs.h"
#include "commands/explain.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parse_relation.h"
#include "parser/parse_type.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/varlena.h"

#include "map.h"
#include "rvbbit.h"
#include "syntax.h"

static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;


/* Is funcid rvbbit.sql(text)? */
static bool
rw_is_sql_function(Oid funcid)
{
	Oid			nsp = get_namespace_oid("rvbbit", true);
	char	   *name;
	bool		is;

	if (!OidIsValid(nsp) || get_func_namespace(funcid) != nsp)
		return false;
	name = get_func_name(funcid);
	is = (name != NULL && strcmp(name, "sql") == 0);
	if (name)
		pfree(name);
	return is;
}

/*
 * Was the one output column of q written as "*" (or "alias.*")?  A column
 * named or renamed (SELECT sql AS x ...) keeps the jsonb result.
 */
static bool
rw_is_star(ParseState *pstate, Query *q)
{
	TargetEntry *te;
	Var		   *v;
	const char *src = pstate ? pstate->p_sourcetext : NULL;
	int			loc;

	if (list_length(q->targetList) != 1 || src == NULL)
		return false;
	te = linitial_node(TargetEntry, q->targetList);
	if (!IsA(te->expr, Var))
		return false;
	v = (Var *) te->expr;
	loc = v->location;
	if (loc < 0 || loc >= (int) strlen(src))
		return false;
	if (src[loc] == '*')
		return true;
	/* alias.* : the location is the alias; look past identifier characters */
	while (src[loc] && (isalnum((unsigned char) src[loc]) || src[loc] == '_' ||
						src[loc] == '"' || src[loc] == '.' || (unsigned char) src[loc] >= 0x80))
	{
		if (src[loc] == '.' && src[loc + 1] == '*')
			return true;
		loc++;
	}
	return false;
}

/*
 * If q is exactly SELECT * FROM rvbbit.sql(<arg>), return the call.
 */
static FuncExpr *
rw_whole_query_call(ParseState *pstate, Query *q)
{
	RangeTblEntry *rte;
	RangeTblFunction *rtf;
	FuncExpr   *fe;

	if (q->commandType != CMD_SELECT || q->utilityStmt != NULL ||
		list_length(q->rtable) != 1)
		return NULL;
	rte = linitial_node(RangeTblEntry, q->rtable);
	if (rte->rtekind != RTE_FUNCTION || list_length(rte->functions) != 1 ||
		rte->funcordinality)
		return NULL;
	rtf = linitial_node(RangeTblFunction, rte->functions);
	if (!IsA(rtf->funcexpr, FuncExpr))
		return NULL;
	fe = (FuncExpr *) rtf->funcexpr;
	if (fe->funcretset == false || list_length(fe->args) != 1 ||
		!rw_is_sql_function(fe->funcid))
		return NULL;
	if (!rw_is_star(pstate, q))
		return NULL;
	if (q->jointree == NULL || q->jointree->quals != NULL ||
		list_length(q->jointree->fromlist) != 1 ||
		q->sortClause || q->groupClause || q->havingQual || q->distinctClause ||
		q->limitCount || q->limitOffset || q->windowClause || q->cteList ||
		q->setOperations || q->hasAggs || q->hasWindowFuncs || q->hasTargetSRFs ||
		q->hasSubLinks || q->rowMarks || list_length(q->targetList) != 1 ||
		!IsA(((TargetEntry *) linitial(q->targetList))->expr, Var))
		return NULL;
	return fe;
}


static void rw_rewrite_planned(Query *q, RvPlannedStatement *ps_, const char *stmt_text,
							   ParseState *pstate);

/*
 * Rewrite q in place when it is SELECT * FROM rvbbit.sql('<statement>');
 * recurse into EXPLAIN, CREATE TABLE AS and DECLARE CURSOR.
 */
static void
rw_rewrite(ParseState *pstate, Query *q)
{
	FuncExpr   *fe;
	Node	   *arg;
	Const	   *c;
	char	   *stmt_text;
	RvPlannedStatement ps;

	if (q->commandType == CMD_UTILITY && q->utilityStmt != NULL)
	{
		Node	   *u = q->utilityStmt;
		Node	   *inner = NULL;

		if (IsA(u, ExplainStmt))
			inner = ((ExplainStmt *) u)->query;
		else if (IsA(u, CreateTableAsStmt))
			inner = ((CreateTableAsStmt *) u)->query;
		else if (IsA(u, DeclareCursorStmt))
			inner = ((DeclareCursorStmt *) u)->query;
		if (inner != NULL && IsA(inner, Query))
			rw_rewrite(pstate, (Query *) inner);
		return;
	}

	fe = rw_whole_query_call(pstate, q);
	if (fe == NULL)
		return;
	rv_require_shared();
	arg = linitial(fe->args);
	while (IsA(arg, RelabelType))
		arg = (Node *) ((RelabelType *) arg)->arg;
	if (!IsA(arg, Const))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the RVBBIT statement must be a literal"),
				 errdetail("The columns of the result depend on the statement, so it cannot be a parameter or an expression."),
				 errhint("Write the statement in the query itself, for example SELECT * FROM rvbbit.sql($$MAP 'extract_brand' USING (SELECT ...)$$)."),
				 parser_errposition(pstate, exprLocation(arg))));
	c = (Const *) arg;
	if (c->constisnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("statement must not be null")));
	stmt_text = TextDatumGetCString(c->constvalue);

	rv_plan_statement(stmt_text, c->location, pstate, &ps);

	/* where the USING query is in the client's text, for error positions */
	rv_stmt_using_at(pstate->p_sourcetext, c->location, stmt_text, &ps);
	PG_TRY();
	{
		rw_rewrite_planned(q, &ps, stmt_text, pstate);
	}
	PG_FINALLY();
	{
		rv_stmt_using_at(NULL, -1, NULL, NULL);
	}
	PG_END_TRY();
}

/* The rest of the rewrite of q, of the planned statement ps. */
static void
rw_rewrite_planned(Query *q, RvPlannedStatement *ps_, const char *stmt_text, ParseState *pstate)
{
	RvPlannedStatement ps = *ps_;
	char	   *sql;
	List	   *raw;
	Query	   *nq;
	ErrorContextCallback errcb;
	List	   *rels = NIL;
	ListCell   *lc;

	/*
	 * The rewritten query reads the USING query's tables only inside
	 * rvbbit.map().  They are added to its range table below, unreferenced
	 * (as view expansion leaves the view), so that a prepared statement or
	 * cached plan is re-analyzed when one of them changes.  Permissions are
	 * checked when the USING query runs, with the caller's privileges.
	 * Analyzed first, so that an error in the USING query points into the
	 * client's text (rv_stmt_parse_errcb), for RUN too.
	 */
	if (!ps.opts.as_table && !ps.is_async)
	{
		StringInfoData dummy;
		List	   *names = NIL;

		initStringInfo(&dummy);
		rw_query_columns_rels(ps.query, &dummy, &names, &rels);
	}

	if (ps.is_async)
		sql = psprintf("SELECT * FROM rvbbit._submit_job(%s)", quote_literal_cstr(stmt_text));
	else if (ps.opts.as_table)
		sql = psprintf("SELECT * FROM rvbbit._as_table(%s)", quote_literal_cstr(stmt_text));
	else
		sql = rv_map_sql(&ps, pstate);

	/* an error in the generated query: an internal position of it */
	errcb.callback = rv_stmt_parse_errcb;
	errcb.arg = sql;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raw = pg_parse_query(sql);
	nq = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
	error_context_stack = errcb.previous;

	foreach(lc, rels)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		rte->rtekind = RTE_RELATION;
		rte->relid = lfirst_oid(lc);
		rte->relkind = get_rel_relkind(rte->relid);
		rte->rellockmode = AccessShareLock;
		rte->inh = false;
		rte->inFromCl = false;
		rv_rte_no_permission_check(nq, rte);
		rte->eref = makeAlias(get_rel_name(rte->relid), NIL);
		nq->rtable = lappend(nq->rtable, rte);
	}
	nq->queryId = q->queryId;
	nq->stmt_location = q->stmt_location;
	nq->stmt_len = q->stmt_len;
	nq->canSetTag = q->canSetTag;
	nq->querySource = q->querySource;
	memcpy(q, nq, sizeof(Query));
}

/*
 * post_parse_analyze_hook: rewrite RVBBIT statements, then call the
 * previous hook.
 */
static void
rv_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	/*
	 * Not the previous hook first, as pg_stat_statements does: the rewrite
	 * replaces the query, and the hooks after it (pg_stat_statements among
	 * them) are to see the query that runs.
	 */
	if (rv_shared != NULL && query != NULL)
		rw_rewrite(pstate, query);
	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
}

void
rv_hooks_init(void)
{
	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = rv_post_parse_analyze;
}
