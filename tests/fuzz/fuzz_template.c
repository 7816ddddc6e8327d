/*-------------------------------------------------------------------------
 *
 * fuzz_template.c
 *	  Fuzz target for the template engine (src/template.c).
 *
 * The input bytes are compiled as a template; when they compile, the
 * template is rendered against a fixed scope with input, outputs, state,
 * rows and row_count, once with strict input checking and once without.
 * Everything is freed, so the leak checker sees any leak.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>

#include "template.h"

static const char *const FUZZ_SCOPE =
"{\"input\": {\"name\": \"Ann\", \"text\": \"h\\u00e9llo \\\"w\\u00f6rld\\\"\","
" \"n\": 3, \"x\": -2.5, \"big\": 18446744073709551615, \"flag\": true,"
" \"none\": null, \"tags\": [\"a\", \"b\", \"c\"], \"empty\": \"\","
" \"obj\": {\"k\": [1, {\"z\": null}], \"e\": {}}},"
" \"outputs\": {\"cell\": {\"label\": \"x\", \"score\": 0.75}},"
" \"state\": {\"i\": 9223372036854775807, \"s\": \"/path\"},"
" \"rows\": [{\"id\": 1, \"v\": \"a\"}, {\"id\": 2, \"v\": [1, 2]},"
" {\"id\": -3, \"v\": null}],"
" \"row_count\": 3}";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RvError		err;
	RvTemplate *tmpl;
	json_object *scope;
	char	   *out;

	rv_error_clear(&err);
	tmpl = rv_template_compile((const char *) data, size, &err);
	if (tmpl == NULL)
		return 0;
	scope = json_tokener_parse(FUZZ_SCOPE);
	rv_error_clear(&err);
	out = rv_template_render(tmpl, scope, true, &err);
	free(out);
	rv_error_clear(&err);
	out = rv_template_render(tmpl, scope, false, &err);
	free(out);
	json_object_put(scope);
	rv_template_free(tmpl);
	return 0;
}
