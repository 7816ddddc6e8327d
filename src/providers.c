/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  The default provider: its API key.
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

/* The API key of the default provider: the GUC, else the environment. */
const char *
map_api_key(void)
{
	const char *k;

	if (rv_api_key && rv_api_key[0])
		return rv_api_key;
	k = getenv("RVBBIT_API_KEY");
	if (k && k[0])
		return k;
	k = getenv(rv_api_flavor == 1 ? "ANTHROPIC_API_KEY" : "OPENROUTER_API_KEY");
	if (k && k[0])
		return k;
	if (rv_api_flavor == 0)
	{
		k = getenv("OPENAI_API_KEY");
		if (k && k[0])
			return k;
	}
	return "";
}
