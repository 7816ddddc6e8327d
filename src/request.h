/*-------------------------------------------------------------------------
 *
 * request.h
 *	  Building a cell's provider request and its cache key; shared by the
 *	  worker (which sends it) and rvbbit.estimate() (which only counts).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_REQUEST_H
#define RV_REQUEST_H

#include "cascade.h"
#include "llm.h"

/* The model a cell uses: the override, the cell's, the cascade's, the default. */
extern const char *rv_cell_model(const RvCascade *c, int cell, const char *override,
								 const char *dflt);

/*
 * What a request sends besides the conversation: the token cap and the
 * temperature.  rvbbit always sends both (see rv_cell_send()).
 */
typedef struct RvSend
{
	int			max_tokens;
	double		temperature;
} RvSend;

/* The temperature step added per re-ask when the cell sets none. */
#define RV_REASK_TEMPERATURE_STEP 0.2

/*
 * The parameters of a cell's request: max_tokens is the cell's, else
 * default_max_tokens (rvbbit.default_max_tokens); the temperature is the
 * cell's, else 0 for the first attempt and RV_REASK_TEMPERATURE_STEP times
 * reask (capped at 1) for the reask-th schema re-ask, so that a re-ask of
 * a deterministic request does not get the same invalid reply again.
 */
extern void rv_cell_send(const RvCell *cell, int default_max_tokens, int reask,
						 RvSend *out);

/*
 * Render the request body of a cell (malloc'd JSON) with the parameters in
 * send.  *messages is NULL
 * for a first attempt: the instructions are rendered into a new
 * conversation returned there; for re-asks it is the conversation so far.
 * schema, when not NULL, replaces the cell's output_schema (MAP BATCH asks
 * for an array of items).  On a template error returns NULL with err set
 * and *what naming the part ("instructions" or "system prompt").
 */
extern char *rv_cell_request_ex(const RvCell *cell, json_object *scope, bool strict,
								RvFlavor flavor, const char *model, json_object *schema,
								const RvSend *send, json_object **messages,
								RvError *err, const char **what);

/* rv_cell_request_ex() for a first attempt with this session's defaults. */
extern char *rv_cell_request(const RvCell *cell, json_object *scope, bool strict,
							 RvFlavor flavor, const char *model, json_object *schema,
							 json_object **messages, RvError *err, const char **what);

/*
 * Which provider a model reference ("prefix:model" or "model") goes to:
 * the index i >= 1 of the provider whose prefix (prefix_of(providers, i))
 * matches, with *model set to the name after the colon; else 0, the
 * default provider, with *model the whole reference.
 */
extern int	rv_route(const char *model_ref, int nproviders,
					 const char *(*prefix_of) (const void *providers, int i),
					 const void *providers, const char **model);

/*
 * The cache key of a request: hex SHA-256 over a version tag, the role the
 * call is made for, the provider's base URL and the body.  The role is
 * part of the key so that a role's lookups hit only its own entries: no
 * role learns from a cache hit (its cost, its latency, rvbbit._cache_has)
 * that another role sent the same prompt.  Needs CurrentResourceOwner set.
 */
extern void rv_call_key(Oid role, const char *api_base, const char *body, size_t len, char *out);

#endif							/* RV_REQUEST_H */
