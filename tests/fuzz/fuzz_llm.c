/*-------------------------------------------------------------------------
 *
 * fuzz_llm.c
 *	  Fuzz target for llm.c: the input is taken as a provider response body
 *	  (both flavours), as an error body, and as model output to extract JSON
 *	  from; it also goes into a request body as the system prompt and the
 *	  schema name.  The reply scanner is checked against the json-c path
 *	  (llm_diff.h): whenever it takes a body, both must read the same
 *	  fields.
 *
 * Build with tests/unit/Makefile (fuzz_llm), under libFuzzer or driver.c.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "llm_diff.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RvLlmResponse resp;
	RvError		err;
	RvLlmRequest req;
	json_object *v;
	json_object *msg;
	char	   *text;
	char	   *s;
	int			f;
	char		why[256];

	for (f = RV_FLAVOR_OPENAI; f <= RV_FLAVOR_ANTHROPIC; f++)
	{
		rv_error_clear(&err);
		if (rv_llm_parse_response((RvFlavor) f, (const char *) data, size, &resp, &err))
		{
			/* success always yields a NUL-terminated content */
			if (resp.content == NULL || err.set)
				abort();
			(void) strlen(resp.content);
		}
		else if (!err.set || resp.content != NULL)
			abort();
		rv_llm_response_free(&resp);
		if (llm_diff_reply((RvFlavor) f, (const char *) data, size, why, sizeof(why)) < 0)
		{
			fprintf(stderr, "fuzz_llm: %s\n", why);
			abort();
		}
	}

	s = rv_llm_error_message((const char *) data, size);
	if (s != NULL && strlen(s) >= 300)
		abort();
	free(s);

	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	rv_error_clear(&err);
	v = rv_llm_extract_json(text, &err);
	if (v == NULL && !err.set)
		abort();
	if (v != NULL)
	{
		/* what we return must serialize and parse back */
		const char *out = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
		json_object *back = json_tokener_parse(out);

		if (back == NULL)
			abort();
		json_object_put(back);
	}

	/*
	 * The input as the texts of a request, and the JSON found in it (if
	 * any) as a message and as the output schema: the body must be the
	 * one the json-c tree builder writes.
	 */
	memset(&req, 0, sizeof(req));
	req.flavor = (size > 0 && (data[0] & 1)) ? RV_FLAVOR_ANTHROPIC : RV_FLAVOR_OPENAI;
	req.model = (size > 0 && (data[0] & 2)) ? text : "m";
	req.system = (size > 0 && (data[0] & 4)) ? NULL : text;
	req.schema_name = text;
	req.has_temperature = (size > 1);
	req.temperature = size > 1 ? (double) data[1] / 7.0 : 0.0;
	req.max_tokens = (int) size;
	req.messages = json_object_new_array();
	msg = json_object_new_object();
	json_object_object_add(msg, "role", json_object_new_string("user"));
	json_object_object_add(msg, "content", json_object_new_string_len(text, (int) size));
	json_object_array_add(req.messages, msg);
	if (v != NULL)
		json_object_array_add(req.messages, json_object_get(v));
	req.output_schema = v != NULL ? v : json_object_new_object();
	if (!llm_diff_body(&req, why, sizeof(why)))
	{
		fprintf(stderr, "fuzz_llm: %s\n", why);
		abort();
	}
	json_object_put(req.messages);
	json_object_put(req.output_schema);

	free(text);
	return 0;
}
