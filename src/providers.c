/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  Provider keys: the default provider's API key, and keeping every key
 *	  this process knows out of messages and the server log.
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
#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "cascade.h"
#include "channel.h"
#include "llm.h"
#include "map.h"
#include "rvbbit.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

static void rv_emit_log(ErrorData *edata);

/* The API key of the default provider: the GUC, else the environment. */
const char *
map_api_key(void)
{
	const char *k;
	const char *const *env;

	if (rv_api_key && rv_api_key[0])
		return rv_api_key;
	k = getenv("RVBBIT_API_KEY");
	if (k && k[0])
		return k;
	for (env = rv_llm_key_env((RvFlavor) rv_api_flavor); *env != NULL; env++)
	{
		k = getenv(*env);
		if (k && k[0])
			return k;
	}
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

	/*
	 * The previous hook last, not first as pg_stat_statements calls its
	 * predecessors: it is to see the message with the keys masked (a hook
	 * that ships log lines elsewhere must never get a key).
	 */
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Install the emit_log_hook that masks keys (from _PG_init). */
void
rv_log_hook_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = rv_emit_log;
}
