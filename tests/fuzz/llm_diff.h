/*-------------------------------------------------------------------------
 *
 * llm_diff.h
 *	  The differential oracle for llm.c's fast paths, shared by the unit
 *	  tests (tests/unit/test_llm.c) and the fuzz target (fuzz_llm.c).
 *
 * Replies: rv_llm_scan_response() (the one-pass scanner) against
 * rv_llm_parse_response_tree() (json-c): whenever the scanner takes a body,
 * both must succeed with the same fields.
 *
 * Request bodies: rv_llm_build_body() (written directly) against
 * llm_ref_build_body() below, a copy of the json-c tree builder it
 * replaced: the two must be byte for byte the same, since the body is
 * what the cache key is computed from.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_LLM_DIFF_H
#define RV_LLM_DIFF_H

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"

/* LLM_SCAN_DEPTH in llm.c: the deepest nesting the scanner reads */
#define LLM_DIFF_SCAN_DEPTH 60

/* Are two optional strings the same? */
static inline bool
llm_diff_same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/*
 * Parse body both ways.  Returns 0 when the scanner gave up (and then
 * checks nothing), 1 when it took the body and the json-c path agrees, -1
 * when they differ (why says how).
 */
static inline int
llm_diff_reply(RvFlavor flavor, const char *body, size_t len, char *why, size_t whylen)
{
	RvLlmResponse fast;
	RvLlmResponse tree;
	RvError		err;
	bool		tree_ok;
	int			r = 1;

	why[0] = '\0';
	if (!rv_llm_scan_response(flavor, body, len, &fast))
	{
		if (fast.content != NULL || fast.model != NULL || fast.id != NULL ||
			fast.finish_reason != NULL || fast.input_tokens != -1 ||
			fast.output_tokens != -1 || fast.cached_tokens != -1)
		{
			snprintf(why, whylen, "the scanner gave up but left fields set");
			rv_llm_response_free(&fast);
			return -1;
		}
		return 0;
	}
	rv_error_clear(&err);
	tree_ok = rv_llm_parse_response_tree(flavor, body, len, &tree, &err);
	if (!tree_ok)
	{
		snprintf(why, whylen, "the scanner took a body json-c refuses: %.160s", err.message);
		rv_llm_response_free(&fast);
		return -1;
	}
	if (!llm_diff_same_str(fast.content, tree.content))
		snprintf(why, whylen, "content differs: \"%.60s\" vs \"%.60s\"",
				 fast.content ? fast.content : "(null)", tree.content ? tree.content : "(null)");
	else if (!llm_diff_same_str(fast.finish_reason, tree.finish_reason))
		snprintf(why, whylen, "finish_reason differs");
	else if (!llm_diff_same_str(fast.model, tree.model))
		snprintf(why, whylen, "model differs");
	else if (!llm_diff_same_str(fast.id, tree.id))
		snprintf(why, whylen, "id differs");
	else if (fast.input_tokens != tree.input_tokens)
		snprintf(why, whylen, "input_tokens %ld vs %ld", fast.input_tokens, tree.input_tokens);
	else if (fast.output_tokens != tree.output_tokens)
		snprintf(why, whylen, "output_tokens %ld vs %ld", fast.output_tokens, tree.output_tokens);
	else if (fast.cached_tokens != tree.cached_tokens)
		snprintf(why, whylen, "cached_tokens %ld vs %ld", fast.cached_tokens, tree.cached_tokens);
	else if (fast.truncated != tree.truncated)
		snprintf(why, whylen, "truncated differs");
	if (why[0] != '\0')
		r = -1;
	rv_llm_response_free(&fast);
	rv_llm_response_free(&tree);
	return r;
}

/* ---- the json-c tree builder rv_llm_build_body() replaced ---- */

#define LLM_REF_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static inline bool
llm_ref_add(json_object *obj, const char *key, json_object *value)
{
	if (value == NULL)
		return false;
	if (json_object_object_add(obj, key, value) != 0)
	{
		json_object_put(value);
		return false;
	}
	return true;
}

static inline void
llm_ref_schema_name(const char *name, char *out)
{
	const unsigned char *p = (const unsigned char *) (name ? name : "");
	size_t		o = 0;

	while (*p != '\0' && o < 64)
	{
		if (isascii(*p) && (isalnum(*p) || *p == '_' || *p == '-'))
			out[o++] = (char) *p++;
		else
		{
			out[o++] = '_';
			p++;
			while ((*p & 0xC0) == 0x80)
				p++;
		}
	}
	out[o] = '\0';
	if (o == 0)
		strcpy(out, "reply");
}

static inline char *
llm_ref_build_body(const RvLlmRequest *req)
{
	json_object *root = json_object_new_object();
	char	   *result = NULL;

	if (req->model != NULL)
		llm_ref_add(root, "model", json_object_new_string(req->model));
	if (req->flavor == RV_FLAVOR_ANTHROPIC)
	{
		char	   *system = NULL;

		if (req->output_schema != NULL)
		{
			static const char instr[] =
			"Reply with only a JSON value that matches this JSON Schema: ";
			const char *schema = json_object_to_json_string_ext(req->output_schema, LLM_REF_FLAGS);
			size_t		slen = req->system != NULL ? strlen(req->system) : 0;
			size_t		total = slen + 2 + strlen(instr) + strlen(schema) + 1;

			system = malloc(total);
			if (slen > 0)
				snprintf(system, total, "%s\n\n%s%s", req->system, instr, schema);
			else
				snprintf(system, total, "%s%s", instr, schema);
		}
		else if (req->system != NULL)
			system = strdup(req->system);
		llm_ref_add(root, "max_tokens",
					json_object_new_int(req->max_tokens > 0 ? req->max_tokens : 1024));
		if (system != NULL)
			llm_ref_add(root, "system", json_object_new_string(system));
		free(system);
		llm_ref_add(root, "messages", req->messages != NULL ?
					json_object_get(req->messages) : json_object_new_array());
	}
	else
	{
		json_object *arr = json_object_new_array();

		if (req->system != NULL)
		{
			json_object *m = json_object_new_object();

			llm_ref_add(m, "role", json_object_new_string("system"));
			llm_ref_add(m, "content", json_object_new_string(req->system));
			json_object_array_add(arr, m);
		}
		if (req->messages != NULL && json_object_is_type(req->messages, json_type_array))
		{
			size_t		i;

			for (i = 0; i < json_object_array_length(req->messages); i++)
				json_object_array_add(arr, json_object_get(json_object_array_get_idx(req->messages, i)));
		}
		llm_ref_add(root, "messages", arr);
		if (req->max_tokens > 0)
			llm_ref_add(root, "max_tokens", json_object_new_int(req->max_tokens));
		if (req->output_schema != NULL)
		{
			json_object *rf = json_object_new_object();
			json_object *js = json_object_new_object();
			char		name[65];

			llm_ref_schema_name(req->schema_name, name);
			llm_ref_add(rf, "type", json_object_new_string("json_schema"));
			llm_ref_add(rf, "json_schema", js);
			llm_ref_add(js, "name", json_object_new_string(name));
			llm_ref_add(js, "schema", json_object_get(req->output_schema));
			llm_ref_add(js, "strict", json_object_new_boolean(0));
			llm_ref_add(root, "response_format", rf);
		}
	}
	if (req->has_temperature && isfinite(req->temperature))
	{
		char		buf[64];

		snprintf(buf, sizeof(buf), "%.15g", req->temperature);
		llm_ref_add(root, "temperature", json_object_new_double_s(req->temperature, buf));
	}
	result = strdup(json_object_to_json_string_ext(root, LLM_REF_FLAGS));
	json_object_put(root);
	return result;
}

/*
 * Build req both ways.  Returns true when the bodies are the same (why
 * empty), false with why saying where they part.
 */
static inline bool
llm_diff_body(const RvLlmRequest *req, char *why, size_t whylen)
{
	char	   *a = rv_llm_build_body(req);
	char	   *b = llm_ref_build_body(req);
	bool		same = (a != NULL && b != NULL && strcmp(a, b) == 0);

	why[0] = '\0';
	if (!same)
	{
		size_t		k = 0;

		while (a != NULL && b != NULL && a[k] != '\0' && a[k] == b[k])
			k++;
		snprintf(why, whylen, "bodies differ at byte %zu: \"%.40s\" vs \"%.40s\"", k,
				 a ? a + k : "(null)", b ? b + k : "(null)");
	}
	free(a);
	free(b);
	return same;
}

#endif							/* RV_LLM_DIFF_H */
