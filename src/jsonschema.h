/*-------------------------------------------------------------------------
 *
 * jsonschema.h
 *	  The JSON Schema subset used for cell output_schema.
 *
 * Pure: no PostgreSQL headers, json-c values, errors in an RvError.
 *
 * Keywords: type (string or array of: object, array, string, number,
 * integer, boolean, null), properties, required, additionalProperties
 * (boolean or schema), enum, const, items, minItems, maxItems, minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength
 * (counted in characters, UTF-8), pattern is accepted and ignored,
 * description/title/default/$schema/examples ignored.  Nesting depth of
 * schemas and values is limited (64).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_JSONSCHEMA_H
#define RV_JSONSCHEMA_H

#include <json-c/json.h>

#include "rverror.h"

/*
 * Check that a schema uses the supported subset correctly (e.g. "type" is a
 * known type name, "required" is an array of strings, "minimum" is a number,
 * "properties" is an object of schemas).  Returns false with err->message
 * such as "output_schema: \"type\" must be one of object, array, ..."
 * naming the path inside the schema, e.g. "properties.sentiment.enum".
 */
extern bool rv_schema_check(json_object *schema, RvError *err);

/*
 * Validate value against schema.  Returns true when valid.  On failure
 * err->message names the JSON path of the first problem and what was
 * wrong, e.g. "$.sentiment: \"meh\" is not one of \"positive\", \"negative\""
 * or "$: missing required property \"brand\"" or
 * "$.score: 11 is greater than the maximum 10".  The message is written to
 * be shown to the LLM when re-asking, and to users.
 */
extern bool rv_schema_validate(json_object *schema, json_object *value, RvError *err);

#endif							/* RV_JSONSCHEMA_H */
