/*-------------------------------------------------------------------------
 *
 * fuzz_cascade.c
 *	  Fuzz target for the cascade loader (src/rvyaml.c, src/cascade.c): YAML to JSON,
 *	  cascade parsing (which compiles templates and checks schemas), and
 *	  rv_cascade_is_inline() on the same bytes.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cascade.h"
#include "rvyaml.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RvError		err;
	json_object *json;
	RvCascade  *cascade;
	char	   *text;

	rv_error_clear(&err);
	json = rv_yaml_to_json((const char *) data, size, &err);
	json_object_put(json);

	rv_error_clear(&err);
	cascade = rv_cascade_parse((const char *) data, size, &err);
	rv_cascade_free(cascade);

	text = malloc(size + 1);
	if (text != NULL)
	{
		memcpy(text, data, size);
		text[size] = '\0';
		(void) rv_cascade_is_inline(text);
		free(text);
	}
	return 0;
}
