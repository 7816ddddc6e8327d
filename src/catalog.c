/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Cascade resolution: names, the registry, cascade_path and the shipped
 *	  examples, and the checks of a definition.
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

#define MAX_CASCADE_FILE (4 * 1024 * 1024)

#define MAX_CASCADE_FILE (4 * 1024 * 1024)

/* ----------------------------------------------------------------
 * Cascade resolution
 * ----------------------------------------------------------------
 */

/*
 * rv_cascade_name: the normalised form of a cascade name (the rule is
 * rv_cascade_name_normalize() in cascade.c), palloc'd in the current
 * context.  Raises ERRCODE_INVALID_NAME for a name the rule refuses.
 * Every use of a name (create, drop, registry lookup, files) goes through
 * here, so a name finds what was created under it.
 */
char *
rv_cascade_name(const char *name)
{
	char		out[RV_CASCADE_NAME_BUF];
	RvError		err;

	rv_error_clear(&err);
	if (!rv_cascade_name_normalize(name, out, &err))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s", err.message),
				 err.detail[0] ? errdetail("%s", err.detail) : 0,
				 errhint("A cascade name is relative, like \"traits/extract_brand.yaml\"; "
						 "a \".yaml\" or \".yml\" suffix is optional.")));
	return pstrdup(out);
}

/*
 * Read dir/name[.yaml|.yml] if it exists and its real path stays inside
 * dir (symlinks out of the directory are refused).  name is normalised
 * (rv_cascade_name), so it is relative and has no ".." component.
 * Returns palloc'd text or NULL when there is no such file.
 */
char *
map_read_cascade_file(const char *dir, const char *name, bool *refused)
{
	static const char *const suffixes[] = {"", ".yaml", ".yml"};
	char		realdir[PATH_MAX];
	int			i;

	*refused = false;
	if (dir == NULL || dir[0] == '\0')
		return NULL;
	if (realpath(dir, realdir) == NULL)
		return NULL;

	for (i = 0; i < (int) lengthof(suffixes); i++)
	{
		char	   *path = psprintf("%s/%s%s", dir, name, suffixes[i]);
		char		real[PATH_MAX];
		size_t		dl = strlen(realdir);
		struct stat st;
		FILE	   *f;
		char	   *buf;
		size_t		n;

		if (realpath(path, real) == NULL)
			continue;
		if (strncmp(real, realdir, dl) != 0 || real[dl] != '/')
		{
			*refused = true;
			return NULL;
		}
		if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (st.st_size > MAX_CASCADE_FILE)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("cascade file \"%s\" is too large", path)));
		f = AllocateFile(real, "r");
		if (f == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not open cascade file \"%s\": %m", path)));
		buf = palloc(st.st_size + 1);
		n = fread(buf, 1, st.st_size, f);
		FreeFile(f);
		buf[n] = '\0';
		return buf;
	}
	return NULL;
}

/* The directory of the example cascades shipped with the extension. */
char *
map_examples_dir(void)
{
	char		share[MAXPGPATH];

	get_share_path(my_exec_path, share);
	return psprintf("%s/extension/rvbbit_cascades", share);
}

/*
 * Resolve a cascade reference to its YAML text: the registry
 * rvbbit.cascades, then rvbbit.cascade_path, then the shipped examples,
 * then an inline definition.  *display is set to a short name for logs and
 * call records.
 */
char *
rv_resolve_cascade(const char *ref, char **display)
{
	char	   *def = NULL;
	char	   *name;
	bool		refused = false;
	bool		refused2 = false;

	if (rv_cascade_is_inline(ref))
	{
		RvError		err;
		RvCascade  *c;

		rv_error_clear(&err);
		c = rv_cascade_parse(ref, strlen(ref), &err);
		*display = pstrdup(c && c->cascade_id ? c->cascade_id : "inline");
		if (c)
			rv_cascade_free(c);
		return pstrdup(ref);
	}

	name = rv_cascade_name(ref);
	*display = pstrdup(name);

	/* the registry */
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		args[1];

		SPI_connect();
		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT definition FROM rvbbit.cascades WHERE name OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v)
			{
				def = SPI_palloc(strlen(v) + 1);
				strcpy(def, v);
			}
		}
		SPI_finish();
	}
	if (def)
		return def;

	def = map_read_cascade_file(rv_cascade_path, name, &refused);
	if (def)
		return def;
	def = map_read_cascade_file(map_examples_dir(), name, &refused2);
	if (def)
		return def;
	if (refused || refused2)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cascade name \"%s\" is not allowed", ref),
				 errdetail("A cascade file must stay inside its directory."),
				 errhint("Remove links that point outside the directory.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("cascade \"%s\" does not exist", ref),
			 errhint("Create it with rvbbit.create_cascade(), put %s.yaml under rvbbit.cascade_path, "
					 "or pass an inline YAML definition with a \"cells:\" list.", name)));
	return NULL;				/* keep compiler quiet */
}

/*
 * Parse and check a cascade definition; raise a user-facing error with the
 * YAML line and column when it is invalid.  Returns the parsed cascade
 * (caller frees with rv_cascade_free).
 */
RvCascade *
rv_check_cascade(const char *display, const char *def)
{
	RvError		err;
	RvCascade  *c;
	int			i;

	rv_error_clear(&err);
	c = rv_cascade_parse(def, strlen(def), &err);
	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cascade \"%s\": %s", display, err.message),
				 err.line > 0 ? errdetail("At line %d, column %d of the definition.%s%s",
										  err.line, err.column,
										  err.detail[0] ? " " : "", err.detail) :
				 (err.detail[0] ? errdetail("%s", err.detail) : 0),
				 err.hint[0] ? errhint("%s", err.hint) : 0));
	for (i = 0; i < c->ncells; i++)
		if (c->cells[i].candidates > 1)
		{
			char	   *cell = pstrdup(c->cells[i].name);

			rv_cascade_free(c);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cascade \"%s\": candidates are not supported yet (cell \"%s\")",
							display, cell),
					 errhint("Remove the candidates (takes, soundings) section of the cell.")));
		}
	return c;
}

/* ----------------------------------------------------------------
 * Roles
 * ----------------------------------------------------------------
 */

/*
 * May role see every role's calls, cache entries, progress and jobs?
 * Superusers and members of rvbbit_admin may (the rule of
 * rvbbit._sees_all(), evaluated here without SQL, so no search_path is
 * involved).
 */
bool
rv_sees_all(Oid role)
{
	Oid			admin;

	if (superuser_arg(role))
		return true;
	admin = get_role_oid("rvbbit_admin", true);
	return OidIsValid(admin) && is_member_of_role(role, admin);
}
