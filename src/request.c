/*-------------------------------------------------------------------------
 *
 * request.c
 *	  A cell's provider request and cache key (see request.h).
 *
 * The worker and rvbbit.estimate() both call these, so the requests the
 * estimate looks up in the cache are byte for byte the ones the worker
 * would send.  Template rendering and body building are the pure modules';
 * only the hash uses PostgreSQL (pg_cryptohash).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pgjsonc.h"

#include "common/cryptohash.h"

#include "request.h"
#include "rvbbit.h"

const char *
rv_cell_model(const RvCascade *c, int cell, const char *override, const char *dflt)
{
	if (override != NULL)
		return override;
	if (c->cells[cell].model != NULL)
		return c->cells[cell].model;
	if (c->model != NULL)
		return c->model;
	return dflt;
}

void
rv_cell_send(const RvCell *cell, int default_max_tokens, int reask, RvSend *out)
{
	out->max_tokens = cell->max_tokens > 0 ? cell->max_tokens : default_max_tokens;
	if (cell->has_temperature)
		out->temperature = cell->temperature;
	else if (reask > 0)
		out->temperature = Min(RV_REASK_TEMPERATURE_STEP * reask, 1.0);
	else
		out->temperature = 0.0;
}

char *
rv_cell_request(const RvCell *cell, json_object *scope, bool strict,
				RvFlavor flavor, const char *model, json_object *schema,
				json_object **messages, RvError *err, const char **what)
{
	RvSend		send;

	rv_cell_send(cell, rv_default_max_tokens, 0, &send);
	return rv_cell_request_ex(cell, scope, strict, flavor, model, schema, &send,
							  messages, err, what);
}

char *
rv_cell_request_ex(const RvCell *cell, json_object *scope, bool strict,
				   RvFlavor flavor, const char *model, json_object *schema,
				   const RvSend *send, json_object **messages, RvError *err,
				   const char **what)
{
	RvLlmRequest lreq;
	char	   *system = NULL;
	char	   *body;

	if (*messages == NULL)
	{
		char	   *prompt = rv_template_render(cell->tmpl_instructions, scope, strict, err);
		json_object *m;

		if (prompt == NULL)
		{
			*what = "instructions";
			return NULL;
		}
		*messages = json_object_new_array();
		m = json_object_new_object();
		json_object_object_add(m, "role", json_object_new_string("user"));
		json_object_object_add(m, "content", json_object_new_string(prompt));
		json_object_array_add(*messages, m);
		free(prompt);
	}
	if (cell->tmpl_system)
	{
		system = rv_template_render(cell->tmpl_system, scope, strict, err);
		if (system == NULL)
		{
			*what = "system prompt";
			return NULL;
		}
	}

	memset(&lreq, 0, sizeof(lreq));
	lreq.flavor = flavor;
	lreq.model = model;
	lreq.system = system;
	lreq.messages = *messages;
	lreq.has_temperature = true;
	lreq.temperature = send->temperature;
	lreq.max_tokens = send->max_tokens;
	lreq.output_schema = schema ? schema : cell->output_schema;
	lreq.schema_name = cell->name;
	body = rv_llm_build_body(&lreq);
	free(system);
	return body;
}

int
rv_route(const char *model_ref, int nproviders,
		 const char *(*prefix_of) (const void *providers, int i),
		 const void *providers, const char **model)
{
	const char *colon = strchr(model_ref, ':');
	int			i;

	*model = model_ref;
	if (colon == NULL)
		return 0;
	for (i = 1; i < nproviders; i++)
	{
		const char *prefix = prefix_of(providers, i);
		size_t		n = strlen(prefix);

		if ((size_t) (colon - model_ref) == n && strncmp(model_ref, prefix, n) == 0)
		{
			*model = colon + 1;
			return i;
		}
	}
	return 0;
}

void
rv_call_key(Oid role, const char *api_base, const char *body, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const char *tag = "rvbbit-call-v2";
	char		rolebuf[16];
	pg_cryptohash_ctx *ctx;
	uint8		digest[32];
	int			i;

	snprintf(rolebuf, sizeof(rolebuf), "%u", role);
	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) tag, strlen(tag) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) rolebuf, strlen(rolebuf) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) api_base, strlen(api_base) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) body, len) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) "", 1) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute SHA-256");
	pg_cryptohash_free(ctx);
	for (i = 0; i < 32; i++)
	{
		out[2 * i] = hex[digest[i] >> 4];
		out[2 * i + 1] = hex[digest[i] & 15];
	}
	out[64] = '\0';
}
