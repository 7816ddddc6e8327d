/*-------------------------------------------------------------------------
 *
 * llm.h
 *	  Provider request and response formats: OpenAI-compatible chat
 *	  completions and the Anthropic Messages API.
 *
 * Pure: no PostgreSQL headers, no libcurl; json-c; malloc'd results;
 * errors in an RvError.  The worker (worker.c) builds a body with
 * rv_llm_build_body(), sends it with http.c, and parses the reply with
 * rv_llm_parse_response() / rv_llm_parse_error().
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_LLM_H
#define RV_LLM_H

#include <json-c/json.h>

#include "rverror.h"

/*
 * The provider flavours: X(id, name), name as rvbbit.api_flavor and the
 * flavor column of rvbbit.providers spell it.  What differs per flavour
 * is in llm.c (rv_llm_flavors: path, key variables, headers; the body and
 * the response).
 */
#define RV_FLAVOR_LIST(X) \
	X(OPENAI, "openai") \
	X(ANTHROPIC, "anthropic")

#define RV_FLAVOR_ID(id, name) RV_FLAVOR_##id,
typedef enum RvFlavor
{
	RV_FLAVOR_LIST(RV_FLAVOR_ID)
	RV_NFLAVORS
} RvFlavor;
#undef RV_FLAVOR_ID

/* One header of a request: name: prefix<API key>, or name: value. */
typedef struct RvLlmHeader
{
	const char *name;
	const char *value;			/* NULL: the API key, after prefix */
	const char *prefix;
	bool		needs_key;		/* only sent when there is a key */
} RvLlmHeader;

typedef struct RvLlmRequest
{
	RvFlavor	flavor;
	const char *model;			/* without any "prefix:" routing part */
	const char *system;			/* NULL or system prompt */
	json_object *messages;		/* array of {"role": "user"|"assistant", "content": "..."} */
	bool		has_temperature;
	double		temperature;
	int			max_tokens;		/* 0: default (openai: omit; anthropic: 1024);
								 * rvbbit always sets it */
	json_object *output_schema; /* NULL or a JSON Schema for the reply */
	const char *schema_name;	/* name for response_format (cell name) */
} RvLlmRequest;

typedef struct RvLlmResponse
{
	char	   *content;		/* malloc'd text of the reply, never NULL on success */
	long		input_tokens;	/* -1 when the provider did not say */
	long		output_tokens;	/* -1 when the provider did not say */
	char	   *finish_reason;	/* malloc'd or NULL (openai finish_reason, anthropic stop_reason) */
	char	   *model;			/* malloc'd or NULL: the model the provider reports */
	char	   *id;				/* malloc'd or NULL: the provider's response id */
	long		cached_tokens;	/* prompt tokens read from the provider's
								 * prompt cache (part of input_tokens), -1
								 * when the provider did not say */
	bool		truncated;		/* the reply was cut off at max_tokens */
} RvLlmResponse;

/* "/chat/completions" or "/messages": appended to the provider's base URL. */
extern const char *rv_llm_path(RvFlavor flavor);
/* The flavour named name; RV_FLAVOR_OPENAI for NULL or another name. */
extern RvFlavor rv_llm_flavor(const char *name);
/* The environment variables that may hold the key, NULL-terminated. */
extern const char *const *rv_llm_key_env(RvFlavor flavor);
/* The authentication headers, ending with a NULL name. */
extern const RvLlmHeader *rv_llm_auth_headers(RvFlavor flavor);

/*
 * Build the JSON request body (malloc'd string).  For openai, with an
 * output_schema: "response_format": {"type": "json_schema", "json_schema":
 * {"name": <schema_name sanitized to [a-zA-Z0-9_-]{1,64}>, "schema": ...,
 * "strict": false}}; the system prompt is the first message.  For
 * anthropic: "system" top-level, "max_tokens" always present, and the
 * schema is described in the system prompt (the Messages API has no
 * response_format): "Reply with only a JSON value that matches this JSON
 * Schema: ...".
 */
extern char *rv_llm_build_body(const RvLlmRequest *req);

/*
 * Parse a 2xx response body.  Returns false with err on malformed or
 * truncated JSON ("provider returned malformed JSON" with the json-c
 * tokener error in detail), on a body without the expected fields
 * ("provider response has no choices[0].message.content"), or on a
 * provider-level error object inside a 200.  Tolerates content given as an
 * array of parts (text parts are concatenated) and missing usage.  On
 * success fills out (free with rv_llm_response_free()).
 */
extern bool rv_llm_parse_response(RvFlavor flavor, const char *body, size_t len,
								  RvLlmResponse *out, RvError *err);

/*
 * The two halves of rv_llm_parse_response(), for the tests that compare
 * them.  rv_llm_scan_response() reads the body in one pass without a
 * json-c tree: it returns true with out filled when the body is a reply of
 * the common successful shape it is sure to read as the other does, and
 * false (out empty) when it cannot tell, and rv_llm_parse_response_tree()
 * (json-c) decides.  Both give the same out for any body the first one
 * takes.
 */
extern bool rv_llm_scan_response(RvFlavor flavor, const char *body, size_t len,
								 RvLlmResponse *out);
extern bool rv_llm_parse_response_tree(RvFlavor flavor, const char *body, size_t len,
									   RvLlmResponse *out, RvError *err);

extern void rv_llm_response_free(RvLlmResponse *resp);

/*
 * Does a finish reason say the reply was cut off by the token limit?
 * OpenAI-compatible servers say "length" (some "max_tokens"), Anthropic
 * "max_tokens".  NULL is not a truncation.
 */
extern bool rv_llm_is_truncation(const char *finish_reason);

/*
 * Extract a human-readable error message from a non-2xx body
 * ({"error": {"message": ...}} for both flavours, or {"error": "..."}, or
 * {"message": ...}); returns a malloc'd string of at most 300 bytes, or a
 * copy of the start of the body when nothing matched (non-printable bytes
 * replaced), or NULL for an empty body.
 */
extern char *rv_llm_error_message(const char *body, size_t len);

/*
 * Extract a JSON value from model output text: the whole text when it
 * parses, else the content of the first ```json ... ``` (or ``` ... ```)
 * fence, else the first balanced {...} or [...] span that parses.
 * Returns a new json_object reference or NULL (err set: "reply is not
 * valid JSON").
 */
extern json_object *rv_llm_extract_json(const char *text, RvError *err);

#endif							/* RV_LLM_H */
