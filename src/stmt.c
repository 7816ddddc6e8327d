/*-------------------------------------------------------------------------
 *
 * stmt.c
 *	  rvbbit.sql() when it is not rewritten.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

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

#include "cascade.h"
#include "channel.h"
#include "map.h"
#include "rvbbit.h"

PG_FUNCTION_INFO_V1(rvbbit_sql);

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
