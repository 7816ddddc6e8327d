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
 * maximum, exclusiveMinimum, exclusiveMaximum (numbers, or draft-4
 * booleans), minLength, maxLength (counted in characters, UTF-8),
 * minProperties/maxProperties (checked for satisfiability only), pattern
 * (ECMA-262 subset run as a POSIX extended regular expression: \d \w \s
 * and their negations are translated; lookaround, backreferences and lazy
 * quantifiers are rejected), format (date, date-time, time, email, uuid,
 * uri, ipv4; others rejected); description/title/default/$schema/examples
 * ignored.  Keywords changing what validates that are not implemented
 * ($ref, allOf, anyOf, oneOf, not, if/then/else, multipleOf, uniqueItems,
 * ...) are rejected.  Nesting depth of
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
 * Rewrite draft-4 forms in place ("exclusiveMinimum": true next to
 * "minimum": m becomes "exclusiveMinimum": m), so that what is sent to a
 * provider is the current form.  Validation accepts both.
 */
extern void rv_schema_normalize(json_object *schema);

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
