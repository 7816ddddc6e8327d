/*-------------------------------------------------------------------------
 *
 * fuzz_jsonschema.c
 *	  Fuzz target for the JSON Schema subset (src/jsonschema.c).
 *
 * The input is "<schema JSON>\n---\n<value JSON>": split at the first
 * "\n---\n", parse both halves with json_tokener (deep nesting allowed, to
 * reach our own depth limits), check the schema and, when it passes,
 * validate the value against it.  Without a separator the whole input is
 * the schema and it is validated against itself.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

/* Parse len bytes of JSON text; NULL (and *ok false) when it is not JSON. */
static json_object *
fz_parse(const uint8_t *data, size_t len, bool *ok)
{
	char	   *buf = malloc(len + 1);
	json_tokener *tok;
	json_object *obj;

	*ok = false;
	if (buf == NULL)
		return NULL;
	memcpy(buf, data, len);
	buf[len] = '\0';
	tok = json_tokener_new_ex(200);
	obj = json_tokener_parse_ex(tok, buf, (int) len + 1);
	if (json_tokener_get_error(tok) == json_tokener_success)
		*ok = true;
	else
	{
		json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	free(buf);
	return obj;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *sep = NULL;
	size_t		i;
	size_t		schema_len = size;
	json_object *schema;
	json_object *value = NULL;
	bool		schema_ok;
	bool		value_ok = false;
	RvError		err;

	for (i = 0; i + 5 <= size; i++)
	{
		if (memcmp(data + i, "\n---\n", 5) == 0)
		{
			sep = data + i;
			schema_len = i;
			break;
		}
	}
	schema = fz_parse(data, schema_len, &schema_ok);
	if (sep != NULL)
		value = fz_parse(sep + 5, size - schema_len - 5, &value_ok);
	else if (schema_ok)
	{
		value = json_object_get(schema);
		value_ok = true;
	}
	if (schema_ok && value_ok)
	{
		rv_error_clear(&err);
		if (rv_schema_check(schema, &err))
		{
			rv_error_clear(&err);
			(void) rv_schema_validate(schema, value, &err);
		}
	}
	json_object_put(schema);
	json_object_put(value);
	return 0;
}
