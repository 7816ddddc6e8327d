/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The GUC variables of the backends and the workers, each defined once
 *	  here (rvbbit.max_budget_roles and rvbbit.gateway_* are defined by
 *	  budget.c and gateway_sup.c, only while preloaded).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "lib/stringinfo.h"

#include "llm.h"
#include "rvbbit.h"
#include "budget.h"
#include "ratelimit.h"


/* GUC variables */
char	   *rv_api_base = NULL;
char	   *rv_api_key = NULL;
int			rv_api_flavor = 0;
char	   *rv_default_model = NULL;
int			rv_request_timeout_ms = 60000;
char	   *rv_cascade_path = NULL;
int			rv_max_concurrency = 200;
int			rv_workers_per_database = 2;
int			rv_worker_idle_timeout_s = 60;
int			rv_max_retries = 3;
int			rv_default_parallel = 10;
int			rv_default_limit = 1000;
int			rv_max_bytes_in_flight_kb = 256 * 1024;
int			rv_max_connections_per_worker = 900;
bool		rv_builtin_http = true;
char	   *rv_ca_file = NULL;
int			rv_requests_per_minute = 0;
int			rv_max_job_runners = 4;
int			rv_max_job_runners_per_role = 2;
int			rv_tokens_per_minute = 0;
double		rv_budget_dollars_per_day = 0.0;
int			rv_stall_timeout_ms = 30000;
int			rv_retry_max_delay_ms = 30000;
int			rv_default_max_tokens = 1024;

/* set by a job runner (jobs_runner.c) while it runs an async statement */
bool		rv_in_job_runner = false;

#define RV_FLAVOR_ENTRY(id, name) {name, RV_FLAVOR_##id, false},
static const struct config_enum_entry rv_flavor_options[] = {
	RV_FLAVOR_LIST(RV_FLAVOR_ENTRY)
	{NULL, 0, false}
};
#undef RV_FLAVOR_ENTRY



/*
 * Show hook of rvbbit.api_key: the key itself is never shown, not even to
 * superusers; SHOW says only whether one is set.
 */
static const char *
rv_show_api_key(void)
{
	if (rv_api_key != NULL && rv_api_key[0] != '\0')
		return "(set)";
	return "";
}

/*
 * The integer and string GUCs, in three groups: the default provider
 * (where calls go, with which key and model), cascades and the workers
 * (where cascades are found, how many workers and connections), and calls
 * (retries, defaults of statements, rate limits, timeouts).  The boot
 * values are those of the variables above.
 */
typedef struct GucInt
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	int		   *var;
	int			boot;
	int			min;
	int			max;
	GucContext	context;
	int			flags;
} GucInt;

typedef struct GucString
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	char	  **var;
	const char *boot;
	GucContext	context;
	int			flags;
	GucShowHook show;
} GucString;

static const GucString guc_strings[] = {
	/* the default provider */
	{
		"rvbbit.api_base",
		"Sets the base URL of the default LLM provider.",
		"The chat completions (or messages) path is appended to it.",
		&rv_api_base, "https://openrouter.ai/api/v1", PGC_SUSET, 0, NULL
	},
	{
		"rvbbit.api_key",
		"Sets the API key of the default LLM provider.",
		"When empty, the server's environment variable RVBBIT_API_KEY is used, "
		"then OPENROUTER_API_KEY, OPENAI_API_KEY or ANTHROPIC_API_KEY by flavor.",
		&rv_api_key, "", PGC_SUSET,
		GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE, rv_show_api_key
	},
	{
		"rvbbit.default_model",
		"Sets the model used when a cascade names none.",
		NULL,
		&rv_default_model, "openai/gpt-4o-mini", PGC_USERSET, 0, NULL
	},
	/* cascades and the workers */
	{
		"rvbbit.cascade_path",
		"Sets the directory cascade files are read from.",
		"Cascade names are resolved relative to it and may not escape it.",
		&rv_cascade_path, "", PGC_SUSET, 0, NULL
	},
	{
		"rvbbit.ca_file",
		"Sets a PEM file of CA certificates that HTTPS providers are verified against.",
		"Empty: the system's CA store.  Read by a worker when it starts.",
		&rv_ca_file, "", PGC_SIGHUP, 0, NULL
	},
};

static const GucInt guc_ints[] = {
	/* the default provider */
	{
		"rvbbit.request_timeout",
		"Sets the time limit of one LLM request.",
		NULL,
		&rv_request_timeout_ms, 60000, 100, 3600 * 1000, PGC_USERSET, GUC_UNIT_MS
	},
	/* cascades and the workers */
	{
		"rvbbit.max_concurrency",
		"Sets the maximum number of LLM requests in flight in the whole cluster.",
		NULL,
		&rv_max_concurrency, 200, 1, 100000, PGC_SIGHUP, 0
	},
	{
		"rvbbit.workers_per_database",
		"Sets the maximum number of rvbbit workers per database.",
		NULL,
		&rv_workers_per_database, 2, 1, RV_MAX_WORKERS, PGC_SIGHUP, 0
	},
	{
		"rvbbit.worker_idle_timeout",
		"Sets how long an idle rvbbit worker waits before exiting.",
		NULL,
		&rv_worker_idle_timeout_s, 60, 1, 86400, PGC_SIGHUP, GUC_UNIT_S
	},
	{
		"rvbbit.max_connections_per_worker",
		"Sets the maximum number of HTTP requests one worker keeps in flight.",
		"The worker lowers it further to fit its open-file limit.",
		&rv_max_connections_per_worker, 900, 1, 100000, PGC_SIGHUP, 0
	},
	/* calls */
	{
		"rvbbit.max_retries",
		"Sets how often a request failing with 429, 5xx or a network error is retried.",
		NULL,
		&rv_max_retries, 3, 0, 100, PGC_USERSET, 0
	},
	{
		"rvbbit.default_parallel",
		"Sets the number of rows in flight for MAP PARALLEL without a number.",
		NULL,
		&rv_default_parallel, 10, 1, 100000, PGC_USERSET, 0
	},
	{
		"rvbbit.default_limit",
		"Sets the automatic LIMIT on the input of RVBBIT MAP statements.",
		"0 means no limit.",
		&rv_default_limit, 1000, 0, INT_MAX, PGC_USERSET, 0
	},
	{
		"rvbbit.max_bytes_in_flight",
		"Sets how many bytes of input rows one statement keeps with the worker.",
		"A statement reads no further input row while the rows sent and not yet answered add up to this much; one row or batch is always let through.",
		&rv_max_bytes_in_flight_kb, 256 * 1024, 64, INT_MAX, PGC_SUSET, GUC_UNIT_KB
	},
	{
		"rvbbit.requests_per_minute",
		"Sets the default provider's request rate limit, shared by all sessions.",
		"0 means no limit.",
		&rv_requests_per_minute, 0, 0, INT_MAX, PGC_SIGHUP, 0
	},
	{
		"rvbbit.tokens_per_minute",
		"Sets the default provider's token rate limit, shared by all sessions.",
		"0 means no limit.",
		&rv_tokens_per_minute, 0, 0, INT_MAX, PGC_SIGHUP, 0
	},
	{
		"rvbbit.stall_timeout",
		"Sets how long an LLM request may go without receiving a byte.",
		"A stalled request is abandoned and retried like a 5xx reply.",
		&rv_stall_timeout_ms, 30000, 1000, 3600 * 1000, PGC_USERSET, GUC_UNIT_MS
	},
	{
		"rvbbit.retry_max_delay",
		"Sets the longest wait before retrying a failed LLM request.",
		"Retries wait a random time up to an exponentially growing ceiling capped by this; a Retry-After header takes precedence.",
		&rv_retry_max_delay_ms, 30000, 0, 3600 * 1000, PGC_USERSET, GUC_UNIT_MS
	},
	{
		"rvbbit.max_job_runners",
		"Sets how many async job runners may run at once, in all databases.",
		"A job over the limit stays queued and starts when a runner ends.",
		&rv_max_job_runners, 4, 1, 1024, PGC_SIGHUP, 0
	},
	{
		"rvbbit.max_job_runners_per_role",
		"Sets how many async job runners may run at once for one role.",
		"The role is the session user that submitted the job (whose daily budget it counts against). A job over the limit stays queued.",
		&rv_max_job_runners_per_role, 2, 1, 1024, PGC_SIGHUP, 0
	},
	{
		"rvbbit.default_max_tokens",
		"Sets max_tokens sent for cells that set none.",
		NULL,
		&rv_default_max_tokens, 1024, 1, 1000000, PGC_USERSET, 0
	},
};

/* Define the GUCs (from _PG_init). */
void
rv_define_gucs(void)
{
	int			i;

	for (i = 0; i < (int) lengthof(guc_strings); i++)
	{
		const GucString *g = &guc_strings[i];

		DefineCustomStringVariable(g->name, g->short_desc, g->long_desc, g->var,
								   g->boot, g->context, g->flags, NULL, NULL, g->show);
	}
	for (i = 0; i < (int) lengthof(guc_ints); i++)
	{
		const GucInt *g = &guc_ints[i];

		DefineCustomIntVariable(g->name, g->short_desc, g->long_desc, g->var,
								g->boot, g->min, g->max, g->context, g->flags,
								NULL, NULL, NULL);
	}
	DefineCustomEnumVariable("rvbbit.api_flavor",
							 "Sets the API format of the default LLM provider.",
							 "openai (chat completions) or anthropic (messages).",
							 &rv_api_flavor,
							 0, rv_flavor_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("rvbbit.budget_dollars_per_day",
							 "Sets the most each role may spend on LLM calls per day (UTC).",
							 "0 means no limit.  Set it per role with ALTER ROLE ... SET.",
							 &rv_budget_dollars_per_day,
							 0.0, 0.0, 1e12,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("rvbbit.builtin_http",
							 "Sends plain http:// requests to an IP address with rvbbit's own HTTP/1.1 client.",
							 "Off: libcurl sends them, as it sends every other request.",
							 &rv_builtin_http, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}
