/*-------------------------------------------------------------------------
 *
 * mapscan.c
 *	  "Custom Scan (RVBBIT Map)": rvbbit.map() in FROM as an executor node
 *	  that returns rows as they finish.
 *
 * A set_rel_pathlist hook replaces the function scan of a call of
 * rvbbit.map(cascade, query, parallel, options) with a custom path (the
 * RVBBIT MAP statements are rewritten into such a call, see rewrite.c).
 * The node drives the map executor of map.c one row per ExecProcNode
 * call instead of materialising the whole result in a tuplestore: a row
 * leaves as soon as it and every row before it are done, so psql (also
 * with FETCH_COUNT), cursors, COPY (...) TO and CREATE TABLE AS see the
 * first rows while later ones are still being answered.  Input is read
 * and sent only while rows are asked for: a LIMIT above the node, a
 * cursor that is not fetched from, or a cursor closed early stops the
 * scheduling of new calls at once.  When the node ends early it waits
 * for the calls already in flight (at most PARALLEL), so their results
 * reach the cache; an error or a cancel detaches from the worker, which
 * abandons them.
 *
 * The function's arguments must not refer to other relations (no
 * LATERAL); otherwise, and for rvbbit.sql() used as a function, the
 * function scan stays (it materialises).
 *
 * No backward scan and no mark/restore: PostgreSQL puts a Material node
 * on top for SCROLL cursors and merge joins.  A rescan runs the MAP again
 * from the start; the worker's cache answers the calls already made.
 *
 * EXPLAIN ANALYZE shows the node's LLM calls, cache hits, retries, failed
 * rows, tokens, cost and (unless TIMING OFF) the p50/p99 of the rows'
 * call latency (the summed HTTP time of a row's calls, from a histogram
 * with 2 % buckets).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/extensible.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "utils/lsyscache.h"

#include "rvbbit.h"
#include "map.h"

typedef struct MapScanState
{
	CustomScanState css;
	List	   *args;			/* ExprStates of the function's arguments */
	RvMapStream *ms;			/* NULL before the first row and after a rescan */
	RvMapCounters total;		/* of the runs before a rescan */
} MapScanState;

static set_rel_pathlist_hook_type prev_set_rel_pathlist_hook = NULL;

static Plan *mapscan_plan(PlannerInfo *root, RelOptInfo *rel,
						  struct CustomPath *best_path, List *tlist,
						  List *clauses, List *custom_plans);
static Node *mapscan_create_state(CustomScan *cscan);
static void mapscan_begin(CustomScanState *node, EState *estate, int eflags);
static TupleTableSlot *mapscan_exec(CustomScanState *node);
static void mapscan_end(CustomScanState *node);
static void mapscan_rescan(CustomScanState *node);
static void mapscan_explain(CustomScanState *node, List *ancestors,
							ExplainState *es);

static const CustomPathMethods mapscan_path_methods = {
	.CustomName = "RVBBIT Map",
	.PlanCustomPath = mapscan_plan,
};

static const CustomScanMethods mapscan_plan_methods = {
	.CustomName = "RVBBIT Map",
	.CreateCustomScanState = mapscan_create_state,
};

static const CustomExecMethods mapscan_exec_methods = {
	.CustomName = "RVBBIT Map",
	.BeginCustomScan = mapscan_begin,
	.ExecCustomScan = mapscan_exec,
	.EndCustomScan = mapscan_end,
	.ReScanCustomScan = mapscan_rescan,
	.ExplainCustomScan = mapscan_explain,
};

/* ----------------------------------------------------------------
 * Counters
 * ----------------------------------------------------------------
 */

/*
 * The p-quantile (0 < p <= 1) of the latency histogram in ms: the middle
 * of the bucket holding the row of rank ceil(p * n); 0 when empty.
 */
double
rv_map_counters_percentile(const RvMapCounters *c, double p)
{
	int64		rank = (int64) ceil(p * (double) c->nlatency);
	int64		seen = 0;
	int			i;

	if (c->nlatency == 0)
		return 0.0;
	rank = Max(rank, 1);
	for (i = 0; i < RV_LAT_BUCKETS; i++)
	{
		seen += c->latency[i];
		if (seen >= rank)
			break;
	}
	return RV_LAT_MIN * pow(RV_LAT_STEP, (double) i + 0.5);
}

/* Add the counters of b to a. */
static void
mapscan_counters_merge(RvMapCounters *a, const RvMapCounters *b)
{
	int			i;

	a->results += b->results;
	a->llm_calls += b->llm_calls;
	a->cache_hits += b->cache_hits;
	a->retries += b->retries;
	a->failures += b->failures;
	a->tokens_in += b->tokens_in;
	a->tokens_out += b->tokens_out;
	a->cost += b->cost;
	a->nlatency += b->nlatency;
	for (i = 0; i < RV_LAT_BUCKETS; i++)
		a->latency[i] += b->latency[i];
}

/* ----------------------------------------------------------------
 * Planning
 * ----------------------------------------------------------------
 */

/* Is funcid rvbbit.map(text, text, int, jsonb)? */
static bool
mapscan_is_map(Oid funcid)
{
	char	   *name = get_func_name(funcid);
	char	   *nsp;

	if (name == NULL || strcmp(name, "map") != 0)
		return false;
	nsp = get_namespace_name(get_func_namespace(funcid));
	return nsp != NULL && strcmp(nsp, "rvbbit") == 0;
}

/* Do the Vars of the expressions all name real columns (no whole row)? */
static bool
mapscan_plain_vars(List *exprs)
{
	List	   *vars = pull_var_clause((Node *) exprs,
									   PVC_RECURSE_AGGREGATES |
									   PVC_RECURSE_WINDOWFUNCS |
									   PVC_INCLUDE_PLACEHOLDERS);
	ListCell   *lc;

	foreach(lc, vars)
	{
		Var		   *v = (Var *) lfirst(lc);

		if (!IsA(v, Var) || v->varattno <= 0)
			return false;
	}
	return true;
}

/*
 * set_rel_pathlist_hook: a function scan of rvbbit.map() with a column
 * definition list and arguments that do not refer to other relations
 * becomes the streaming custom scan (its only path).
 */
static void
mapscan_set_rel_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti,
						 RangeTblEntry *rte)
{
	RangeTblFunction *rtfunc;
	FuncExpr   *fexpr;
	CustomPath *cpath;
	List	   *quals = NIL;
	ListCell   *lc;
	Cost		total;

	if (prev_set_rel_pathlist_hook)
		prev_set_rel_pathlist_hook(root, rel, rti, rte);

	if (rte->rtekind != RTE_FUNCTION || list_length(rte->functions) != 1 ||
		rte->funcordinality || rel->reloptkind != RELOPT_BASEREL ||
		rel->lateral_relids != NULL || rel->pathlist == NIL)
		return;
	rtfunc = linitial_node(RangeTblFunction, rte->functions);
	if (!IsA(rtfunc->funcexpr, FuncExpr) || rtfunc->funccoltypes == NIL)
		return;
	fexpr = (FuncExpr *) rtfunc->funcexpr;
	if (list_length(fexpr->args) != 4 || !mapscan_is_map(fexpr->funcid) ||
		contain_var_clause((Node *) fexpr->args))
		return;
	foreach(lc, rel->baserestrictinfo)
		quals = lappend(quals, ((RestrictInfo *) lfirst(lc))->clause);
	if (!mapscan_plain_vars(rel->reltarget->exprs) || !mapscan_plain_vars(quals))
		return;

	total = ((Path *) linitial(rel->pathlist))->total_cost;
	cpath = makeNode(CustomPath);
	cpath->path.pathtype = T_CustomScan;
	cpath->path.parent = rel;
	cpath->path.pathtarget = rel->reltarget;
	cpath->path.param_info = NULL;
	cpath->path.parallel_aware = false;
	cpath->path.parallel_safe = false;
	cpath->path.parallel_workers = 0;
	cpath->path.rows = rel->rows;
	/* the first row comes after about one row's share of the work */
	cpath->path.startup_cost = rel->rows > 1 ? total / rel->rows : total;
	cpath->path.total_cost = total;
	cpath->path.pathkeys = NIL;
	cpath->flags = 0;			/* no backward scan, no mark/restore */
	cpath->custom_paths = NIL;
	cpath->custom_private = NIL;
	cpath->methods = &mapscan_path_methods;

	rel->pathlist = NIL;
	rel->partial_pathlist = NIL;
	add_path(rel, &cpath->path);
}

/*
 * PlanCustomPath: a CustomScan with no scan relation whose scan tuple is
 * the column definition list (custom_scan_tlist, Vars of the function's
 * range table entry); the function's arguments go in custom_exprs.
 */
static Plan *
mapscan_plan(PlannerInfo *root, RelOptInfo *rel, struct CustomPath *best_path,
			 List *tlist, List *clauses, List *custom_plans)
{
	RangeTblEntry *rte = planner_rt_fetch(rel->relid, root);
	RangeTblFunction *rtfunc = linitial_node(RangeTblFunction, rte->functions);
	FuncExpr   *fexpr = (FuncExpr *) rtfunc->funcexpr;
	CustomScan *cscan = makeNode(CustomScan);
	List	   *scan_tlist = NIL;
	ListCell   *lt;
	ListCell   *lm;
	ListCell   *lc;
	ListCell   *ln;
	AttrNumber	attno = 0;

	forfour(lt, rtfunc->funccoltypes, lm, rtfunc->funccoltypmods,
			lc, rtfunc->funccolcollations, ln, rte->eref->colnames)
	{
		Var		   *v;

		attno++;
		v = makeVar(rel->relid, attno, lfirst_oid(lt), lfirst_int(lm),
					lfirst_oid(lc), 0);
		scan_tlist = lappend(scan_tlist,
							 makeTargetEntry((Expr *) v, attno,
											 pstrdup(strVal(lfirst(ln))), false));
	}

	cscan->scan.plan.targetlist = tlist;
	cscan->scan.plan.qual = extract_actual_clauses(clauses, false);
	cscan->scan.scanrelid = 0;
	cscan->flags = best_path->flags;
	cscan->custom_plans = NIL;
	cscan->custom_exprs = copyObject(fexpr->args);
	cscan->custom_private = NIL;
	cscan->custom_scan_tlist = scan_tlist;
	cscan->custom_relids = NULL;
	cscan->methods = &mapscan_plan_methods;
	return &cscan->scan.plan;
}

/* ----------------------------------------------------------------
 * Execution
 * ----------------------------------------------------------------
 */

static Node *
mapscan_create_state(CustomScan *cscan)
{
	MapScanState *mss = (MapScanState *) newNode(sizeof(MapScanState), T_CustomScanState);

	mss->css.methods = &mapscan_exec_methods;
	return (Node *) mss;
}

/* Prepare the arguments; the MAP itself starts at the first row asked for. */
static void
mapscan_begin(CustomScanState *node, EState *estate, int eflags)
{
	MapScanState *mss = (MapScanState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	mss->args = ExecInitExprList(cscan->custom_exprs, &node->ss.ps);
}

/* Evaluate the arguments and open the stream of rows. */
static void
mapscan_start(MapScanState *mss)
{
	EState	   *estate = mss->css.ss.ps.state;
	ExprContext *econtext = mss->css.ss.ps.ps_ExprContext;
	MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
	Datum		args[4];
	bool		nulls[4];
	ListCell   *lc;
	int			i = 0;

	foreach(lc, mss->args)
	{
		args[i] = ExecEvalExpr((ExprState *) lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	mss->ms = rv_map_stream_open(args, nulls,
								 mss->css.ss.ss_ScanTupleSlot->tts_tupleDescriptor);
	MemoryContextSwitchTo(old);
}

/* ExecScan access method: the next row of the MAP into the scan slot. */
static TupleTableSlot *
mapscan_next(ScanState *ss)
{
	MapScanState *mss = (MapScanState *) ss;
	TupleTableSlot *slot = ss->ss_ScanTupleSlot;
	int			natts = slot->tts_tupleDescriptor->natts;
	Datum	   *values;
	bool	   *nulls;
	bool		more;

	if (mss->ms == NULL)
		mapscan_start(mss);
	ExecClearTuple(slot);
	more = rv_map_stream_next(mss->ms, &values, &nulls);
	if (!more)
		return slot;
	memcpy(slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
	return ExecStoreVirtualTuple(slot);
}

/* ExecScan recheck method: there is nothing to recheck. */
static bool
mapscan_recheck(ScanState *ss, TupleTableSlot *slot)
{
	return true;
}

static TupleTableSlot *
mapscan_exec(CustomScanState *node)
{
	return ExecScan(&node->ss, mapscan_next, mapscan_recheck);
}

/* End the stream (early or not) and keep its counters. */
static void
mapscan_stop(MapScanState *mss)
{
	MemoryContext old;

	if (mss->ms == NULL)
		return;
	old = MemoryContextSwitchTo(mss->css.ss.ps.state->es_query_cxt);
	rv_map_stream_close(mss->ms);
	mapscan_counters_merge(&mss->total, rv_map_stream_counters(mss->ms));
	mss->ms = NULL;
	MemoryContextSwitchTo(old);
}

static void
mapscan_end(CustomScanState *node)
{
	mapscan_stop((MapScanState *) node);
}

/* A rescan runs the MAP again (finished calls come from the cache). */
static void
mapscan_rescan(CustomScanState *node)
{
	mapscan_stop((MapScanState *) node);
	ExecScanReScan(&node->ss);
}

/* EXPLAIN ANALYZE: what the rows cost. */
static void
mapscan_explain(CustomScanState *node, List *ancestors, ExplainState *es)
{
	MapScanState *mss = (MapScanState *) node;
	RvMapCounters c = mss->total;

	if (!es->analyze)
		return;
	if (mss->ms)
		mapscan_counters_merge(&c, rv_map_stream_counters(mss->ms));
	ExplainPropertyInteger("LLM Calls", NULL, c.llm_calls, es);
	ExplainPropertyInteger("Cache Hits", NULL, c.cache_hits, es);
	ExplainPropertyInteger("Retries", NULL, c.retries, es);
	ExplainPropertyInteger("Failed Rows", NULL, c.failures, es);
	ExplainPropertyInteger("Input Tokens", NULL, c.tokens_in, es);
	ExplainPropertyInteger("Output Tokens", NULL, c.tokens_out, es);
	ExplainPropertyFloat("LLM Cost", "USD", c.cost, 6, es);
	/* latencies are timings: not with TIMING OFF */
	if (c.nlatency > 0 && es->timing)
	{
		ExplainPropertyFloat("Call Latency p50", "ms",
							 rv_map_counters_percentile(&c, 0.50), 1, es);
		ExplainPropertyFloat("Call Latency p99", "ms",
							 rv_map_counters_percentile(&c, 0.99), 1, es);
	}
}

/* Install the planner hook (from _PG_init). */
void
rv_mapscan_init(void)
{
	RegisterCustomScanMethods(&mapscan_plan_methods);
	prev_set_rel_pathlist_hook = set_rel_pathlist_hook;
	set_rel_pathlist_hook = mapscan_set_rel_pathlist;
}
