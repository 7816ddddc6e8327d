/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  The cascade registry: create, drop, validate.
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

PG_FUNCTION_INFO_V1(rvbbit_create_cascade);
PG_FUNCTION_INFO_V1(rvbbit_drop_cascade);
PG_FUNCTION_INFO_V1(rvbbit_validate_cascade);
PG_FUNCTION_INFO_V1(rvbbit_cascade_name);

/* ----------------------------------------------------------------
 * The cascade registry
 * ----------------------------------------------------------------
 */

/*
 * Is there a cascade file named name under rvbbit.cascade_path or among the
 * shipped examples?  (A refused or unreadable file counts as existing.)
 */
static bool
map_file_cascade_exists(const char *name)
{
	bool		refused = false;
	char	   *def;

	def = map_read_cascade_file(rv_cascade_path, name, &refused);
	if (def == NULL && !refused)
		def = map_read_cascade_file(map_examples_dir(), name, &refused);
	if (def)
		pfree(def);
	return def != NULL || refused;
}

/*
 * May the current outer user change or drop a cascade owned by owner?
 * Its owner, superusers and members of rvbbit_admin may.
 */
static bool
map_may_manage(Oid owner)
{
	Oid			me = GetOuterUserId();
	Oid			admin = get_role_oid("rvbbit_admin", true);

	return me == owner || superuser_arg(me) ||
		(OidIsValid(admin) && has_privs_of_role(me, admin));
}

/*
 * Lock the registry row of name (SPI connected) and set *owner; false when
 * there is none.
 */
static bool
reg_lock_owner(const char *name, Oid *owner)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	args[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT owner::pg_catalog.oid FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read rvbbit.cascades");
	if (SPI_processed != 1)
		return false;
	*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}

/* rvbbit._validate_cascade(definition text) returns void */
Datum
rvbbit_validate_cascade(PG_FUNCTION_ARGS)
{
	char	   *def;

	rv_require_shared();
	def = text_to_cstring(PG_GETARG_TEXT_PP(0));
	rv_cascade_free(rv_check_cascade("definition", def));
	PG_RETURN_VOID();
}

/*
 * rvbbit._cascade_name(name text) returns text: the normalised name
 * (rv_cascade_name).  IMMUTABLE and usable without the preload, because
 * the CHECK constraint of rvbbit.cascades and the 0.2 upgrade call it.
 */
Datum
rvbbit_cascade_name(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(rv_cascade_name(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/*
 * rvbbit.create_cascade(name text, definition text) returns void.
 * SECURITY DEFINER: validates the definition, then inserts or replaces
 * the registry row, recording the calling role as owner.
 */
Datum
rvbbit_create_cascade(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *def;
	Oid			me = GetOuterUserId();
	Oid			argtypes[3] = {TEXTOID, TEXTOID, OIDOID};
	Datum		args[3];
	Oid			owner;

	rv_require_shared();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade name and definition must not be null")));
	name = rv_cascade_name(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	def = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rv_cascade_free(rv_check_cascade(name, def));

	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(def);
	args[2] = ObjectIdGetDatum(me);
	if (reg_lock_owner(name, &owner))
	{
		if (!map_may_manage(owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of cascade \"%s\" to replace it", name),
					 errhint("Ask its owner or a member of rvbbit_admin, or choose another name.")));
		if (SPI_execute_with_args("UPDATE rvbbit.cascades SET definition = $2, updated_at = pg_catalog.now() "
								  "WHERE name OPERATOR(pg_catalog.=) $1", 2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update rvbbit.cascades");
	}
	else if (!map_may_manage(InvalidOid) && map_file_cascade_exists(name))
	{
		/*
		 * The registry is looked up first, for every role: a new registry
		 * row named like a cascade file would silently replace that file
		 * for everybody, so only administrators may do it.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cascade \"%s\" is a cascade file; only rvbbit_admin may override it", name),
				 errdetail("A registry cascade takes precedence over files under rvbbit.cascade_path and the shipped examples, for every role."),
				 errhint("Choose another name.")));
	}
	else if (SPI_execute_with_args("INSERT INTO rvbbit.cascades (name, definition, owner) "
								   "VALUES ($1, $2, $3::pg_catalog.regrole)", 3, argtypes, args, NULL,
								   false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into rvbbit.cascades");
	SPI_finish();
	PG_RETURN_VOID();
}

/* rvbbit.drop_cascade(name text, if_exists boolean) returns void (SECURITY DEFINER) */
Datum
rvbbit_drop_cascade(PG_FUNCTION_ARGS)
{
	char	   *given;
	char	   *name;
	bool		if_exists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	Oid			owner;

	rv_require_shared();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cascade name must not be null")));
	given = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = rv_cascade_name(given);
	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	if (!reg_lock_owner(name, &owner))
	{
		SPI_finish();
		if (if_exists)
		{
			ereport(NOTICE,
					(errmsg("cascade \"%s\" does not exist, skipping", given)));
			PG_RETURN_VOID();
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cascade \"%s\" does not exist", given)));
	}
	if (!map_may_manage(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of cascade \"%s\" to drop it", name)));
	if (SPI_execute_with_args("DELETE FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from rvbbit.cascades");
	SPI_finish();
	PG_RETURN_VOID();
}
