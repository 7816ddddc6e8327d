/*-------------------------------------------------------------------------
 *
 * rvbbit.c
 *	  Module entry point: _PG_init, the GUC variables, and the shared
 *	  memory the backends and the rvbbit workers share.
 *
 * The library must be loaded through shared_preload_libraries: shared
 * memory and the worker pool exist only then.  Loaded any other way (for
 * instance by CREATE EXTENSION in a server without the setting), the GUCs
 * are defined but every entry point raises an error whose hint says how to
 * fix the configuration (rv_require_shared()).
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

#include "rvbbit.h"
#include "budget.h"
#include "ratelimit.h"

PG_MODULE_MAGIC;

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
int			rv_max_connections_per_worker = 900;
char	   *rv_ca_file = NULL;
int			rv_requests_per_minute = 0;
int			rv_tokens_per_minute = 0;
double		rv_budget_dollars_per_day = 0.0;
int			rv_stall_timeout_ms = 30000;
int			rv_retry_max_delay_ms = 30000;
int			rv_default_max_tokens = 1024;

RvShared   *rv_shared = NULL;

/* set by a job runner (jobs.c) while it runs an async statement */
bool		rv_in_job_runner = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static const struct config_enum_entry rv_flavor_options[] = {
	{"openai", 0, false},
	{"anthropic", 1, false},
	{NULL, 0, false}
};

void		_PG_init(void);
static void rv_shmem_request(void);
static void rv_shmem_startup(void);
static const char *rv_show_api_key(void);
static void rv_emit_log(ErrorData *edata);

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

/* Environment variables of the server that may hold a provider key. */
static const char *const rv_env_keys[] = {
	"RVBBIT_API_KEY", "OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", NULL
};

/*
 * Keys this process has come to know besides the GUC and the environment
 * variables above (a worker registers the keys of rvbbit.providers and of
 * their api_key_env variables).  malloc'd, never freed; at most
 * RV_MAX_SECRETS, further ones are masked only where rv_redact_secrets()
 * is given them.
 */
#define RV_MAX_SECRETS 64
static char *rv_secrets[RV_MAX_SECRETS];
static int	rv_nsecrets = 0;

/*
 * Remember key as a secret of this process, to be masked in every log
 * line and error message (rv_emit_log, rv_redact_secrets).  Keys shorter
 * than 4 bytes are not masked (they would mask ordinary text).
 */
void
rv_secret_register(const char *key)
{
	int			i;
	char	   *copy;

	if (key == NULL || strlen(key) < 4)
		return;
	for (i = 0; i < rv_nsecrets; i++)
		if (strcmp(rv_secrets[i], key) == 0)
			return;
	if (rv_nsecrets >= RV_MAX_SECRETS)
		return;
	copy = strdup(key);
	if (copy == NULL)
		return;
	rv_secrets[rv_nsecrets++] = copy;
}

/*
 * Replace every occurrence of secret in *field with asterisks; the new
 * text is palloc'd in the current memory context.
 */
static void
rv_redact_value(char **field, const char *secret)
{
	StringInfoData buf;
	const char *p;
	const char *hit;
	size_t		n;

	if (*field == NULL || secret == NULL)
		return;
	n = strlen(secret);
	if (n < 4 || strstr(*field, secret) == NULL)
		return;
	initStringInfo(&buf);
	for (p = *field; (hit = strstr(p, secret)) != NULL; p = hit + n)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, "********");
	}
	appendStringInfoString(&buf, p);
	*field = buf.data;
}

/* Mask every key this process knows in *field (see rv_redact_secrets). */
static void
rv_redact_field(char **field)
{
	int			i;

	if (*field == NULL)
		return;
	if (rv_api_key && rv_api_key[0])
		rv_redact_value(field, rv_api_key);
	for (i = 0; rv_env_keys[i] != NULL; i++)
		rv_redact_value(field, getenv(rv_env_keys[i]));
	for (i = 0; i < rv_nsecrets; i++)
		rv_redact_value(field, rv_secrets[i]);
}

/*
 * A copy of text (palloc'd in the current memory context) with every key
 * this process knows masked: the GUC rvbbit.api_key, the server's key
 * environment variables and the keys registered with
 * rv_secret_register().  NULL for NULL.  Used on provider error bodies
 * before they are stored in rvbbit.calls or sent to a backend.
 */
char *
rv_redact_secrets(const char *text)
{
	char	   *out;

	if (text == NULL)
		return NULL;
	out = pstrdup(text);
	rv_redact_field(&out);
	return out;
}

/*
 * The first place in text where a key may follow: "api_key" (the GUC, the
 * column, SET and ALTER SYSTEM statements) or "providers" (statements on
 * rvbbit.providers, whose key column may be written without its name),
 * ignoring case.  NULL when there is none; *len is the marker's length.
 */
static const char *
rv_key_marker(const char *text, int *len)
{
	static const char *const markers[] = {"api_key", "providers", NULL};
	const char *best = NULL;
	const char *p;
	int			i;

	if (text == NULL)
		return NULL;
	for (i = 0; markers[i] != NULL; i++)
	{
		size_t		n = strlen(markers[i]);

		for (p = text; *p; p++)
			if (pg_strncasecmp(p, markers[i], n) == 0)
			{
				if (best == NULL || p < best)
				{
					best = p;
					*len = (int) n;
				}
				break;
			}
	}
	return best;
}

/*
 * emit_log_hook: keep API keys out of the server log without changing
 * what the client sees.
 *
 * Key values (the GUC, the environment keys, registered provider keys)
 * are masked in every field, for the client too: no client needs them.
 * PostgreSQL also logs "parameter ... changed to ..." on reload and, with
 * log_statement, the text of SET, ALTER SYSTEM and INSERT statements; the
 * statement of a message is hidden when it mentions api_key or providers
 * (rv_key_marker), and a message that mentions one is cut after it in
 * the server log only: when it also
 * goes to the client, the client gets it unchanged and the server log a
 * LOG_SERVER_ONLY copy that is cut (reported from here, with this hook
 * bypassed), and the original is not written to the server log.
 */
static void
rv_emit_log(ErrorData *edata)
{
	static bool in_hook = false;
	MemoryContext old;
	const char *k;
	int			klen = 0;

	if (in_hook)
	{
		if (prev_emit_log_hook)
			prev_emit_log_hook(edata);
		return;
	}
	old = MemoryContextSwitchTo(ErrorContext);
	rv_redact_field(&edata->message);
	rv_redact_field(&edata->detail);
	rv_redact_field(&edata->detail_log);
	rv_redact_field(&edata->hint);
	rv_redact_field(&edata->context);
	if (rv_key_marker(debug_query_string, &klen) != NULL)
		edata->hide_stmt = true;
	if ((k = rv_key_marker(edata->message, &klen)) != NULL)
	{
		char	   *cut = psprintf("%.*s ... (hidden by rvbbit)",
								   (int) (k - edata->message) + klen, edata->message);

		if (edata->output_to_client)
		{
			int			sqlerrcode = edata->sqlerrcode;
			int			elevel = edata->elevel;

			edata->output_to_server = false;
			MemoryContextSwitchTo(old);
			in_hook = true;
			PG_TRY();
			{
				ereport(LOG_SERVER_ONLY,
						(errcode(sqlerrcode),
						 errmsg_internal("%s (a message of level %s sent to the client; cut here by rvbbit)",
										 cut, elevel >= ERROR ? "ERROR" :
										 elevel >= WARNING ? "WARNING" : "NOTICE"),
						 errhidestmt(true),
						 errhidecontext(true)));
			}
			PG_FINALLY();
			{
				in_hook = false;
			}
			PG_END_TRY();
			return;
		}
		edata->message = cut;
	}
	MemoryContextSwitchTo(old);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * _PG_init: define the GUCs; when preloaded, ask for shared memory and
 * chain the shared-memory hooks and the query hooks.
 */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	DefineCustomStringVariable("rvbbit.api_base",
							   "Sets the base URL of the default LLM provider.",
							   "The chat completions (or messages) path is appended to it.",
							   &rv_api_base,
							   "https://openrouter.ai/api/v1",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("rvbbit.api_key",
							   "Sets the API key of the default LLM provider.",
							   "When empty, the server's environment variable RVBBIT_API_KEY is used, "
							   "then OPENROUTER_API_KEY, OPENAI_API_KEY or ANTHROPIC_API_KEY by flavor.",
							   &rv_api_key,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, rv_show_api_key);
	DefineCustomEnumVariable("rvbbit.api_flavor",
							 "Sets the API format of the default LLM provider.",
							 "openai (chat completions) or anthropic (messages).",
							 &rv_api_flavor,
							 0, rv_flavor_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("rvbbit.default_model",
							   "Sets the model used when a cascade names none.",
							   NULL,
							   &rv_default_model,
							   "openai/gpt-4o-mini",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.request_timeout",
							"Sets the time limit of one LLM request.",
							NULL,
							&rv_request_timeout_ms,
							60000, 100, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("rvbbit.cascade_path",
							   "Sets the directory cascade files are read from.",
							   "Cascade names are resolved relative to it and may not escape it.",
							   &rv_cascade_path,
							   "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.max_concurrency",
							"Sets the maximum number of LLM requests in flight in the whole cluster.",
							NULL,
							&rv_max_concurrency,
							200, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.workers_per_database",
							"Sets the maximum number of rvbbit workers per database.",
							NULL,
							&rv_workers_per_database,
							2, 1, RV_MAX_WORKERS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.worker_idle_timeout",
							"Sets how long an idle rvbbit worker waits before exiting.",
							NULL,
							&rv_worker_idle_timeout_s,
							60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.max_connections_per_worker",
							"Sets the maximum number of HTTP requests one worker keeps in flight.",
							"The worker lowers it further to fit its open-file limit.",
							&rv_max_connections_per_worker,
							900, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("rvbbit.ca_file",
							   "Sets a PEM file of CA certificates that HTTPS providers are verified against.",
							   "Empty: the system's CA store.  Read by a worker when it starts.",
							   &rv_ca_file,
							   "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.max_retries",
							"Sets how often a request failing with 429, 5xx or a network error is retried.",
							NULL,
							&rv_max_retries,
							3, 0, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.default_parallel",
							"Sets the number of rows in flight for MAP PARALLEL without a number.",
							NULL,
							&rv_default_parallel,
							10, 1, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.default_limit",
							"Sets the automatic LIMIT on the input of RVBBIT MAP statements.",
							"0 means no limit.",
							&rv_default_limit,
							1000, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.requests_per_minute",
							"Sets the default provider's request rate limit, shared by all sessions.",
							"0 means no limit.",
							&rv_requests_per_minute,
							0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.tokens_per_minute",
							"Sets the default provider's token rate limit, shared by all sessions.",
							"0 means no limit.",
							&rv_tokens_per_minute,
							0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("rvbbit.budget_dollars_per_day",
							 "Sets the most each role may spend on LLM calls per day (UTC).",
							 "0 means no limit.  Set it per role with ALTER ROLE ... SET.",
							 &rv_budget_dollars_per_day,
							 0.0, 0.0, 1e12,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("rvbbit.stall_timeout",
							"Sets how long an LLM request may go without receiving a byte.",
							"A stalled request is abandoned and retried like a 5xx reply.",
							&rv_stall_timeout_ms,
							30000, 1000, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.retry_max_delay",
							"Sets the longest wait before retrying a failed LLM request.",
							"Retries wait a random time up to an exponentially growing ceiling capped by this; a Retry-After header takes precedence.",
							&rv_retry_max_delay_ms,
							30000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("rvbbit.default_max_tokens",
							"Sets max_tokens sent for cells that set none.",
							NULL,
							&rv_default_max_tokens,
							1024, 1, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);

	/*
	 * Settings that size shared memory or start processes are
	 * PGC_POSTMASTER, which PostgreSQL lets a library define only while it
	 * is preloaded (otherwise the backend exits with FATAL).  A library
	 * loaded late raises the preload error at every entry point anyway.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		rv_budget_define_gucs();
		rv_gateway_init();
	}

	MarkGUCPrefixReserved("rvbbit");

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = rv_emit_log;

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rv_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rv_shmem_startup;

	rv_hooks_init();
	rv_mapscan_init();
	rv_jobs_init();
}

/* shmem_request_hook: reserve the shared struct and its lock. */
static void
rv_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RvShared)));
	RequestAddinShmemSpace(rv_ratelimit_shmem_size());
	RequestNamedLWLockTranche("rvbbit", 2);
	rv_budget_shmem_request();
}

/*
 * shmem_startup_hook: create or attach the shared struct.  Runs in the
 * postmaster at start and after a crash restart (which wipes all state:
 * worker slots, pending statements and progress entries start empty).
 */
static void
rv_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rv_shared = ShmemInitStruct("rvbbit", sizeof(RvShared), &found);
	if (!found)
	{
		memset(rv_shared, 0, sizeof(RvShared));
		rv_shared->lock = &(GetNamedLWLockTranche("rvbbit"))[0].lock;
		pg_atomic_init_u64(&rv_shared->next_statement_id, 1);
		pg_atomic_init_u32(&rv_shared->http_in_flight, 0);
		for (i = 0; i < RV_MAX_PROGRESS; i++)
		{
			RvProgress *p = &rv_shared->progress[i];

			pg_atomic_init_u32(&p->used, 0);
			pg_atomic_init_u64(&p->owner, 0);
			pg_atomic_init_u64(&p->rows_read, 0);
			pg_atomic_init_u64(&p->rows_done, 0);
			pg_atomic_init_u64(&p->rows_failed, 0);
			pg_atomic_init_u64(&p->in_flight, 0);
			pg_atomic_init_u64(&p->cache_hits, 0);
			pg_atomic_init_u64(&p->llm_calls, 0);
			pg_atomic_init_u64(&p->tokens_in, 0);
			pg_atomic_init_u64(&p->tokens_out, 0);
			pg_atomic_init_u64(&p->cost_micros, 0);
		}
	}
	rv_ratelimit_shmem_init(&(GetNamedLWLockTranche("rvbbit"))[1].lock);
	rv_budget_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Raise an error unless the library was preloaded (and shared memory
 * exists).  Every SQL-callable entry point calls this first.
 */
void
rv_require_shared(void)
{
	if (rv_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rvbbit must be loaded via \"shared_preload_libraries\""),
				 errhint("Add rvbbit to \"shared_preload_libraries\" in postgresql.conf "
						 "(or run ALTER SYSTEM SET shared_preload_libraries = 'rvbbit') "
						 "and restart the server.")));
}

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
