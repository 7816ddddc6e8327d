/*-------------------------------------------------------------------------
 *
 * test_jsonschema.c
 *	  Unit tests for the JSON Schema subset (src/jsonschema.c): schema
 *	  checking and validation messages for every supported keyword.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>

#include "jsonschema.h"
#include "unit.h"

/* the message of the last call, or "" when it passed */
static char last_message[RV_ERRMSG_LEN];
static char last_detail[RV_ERRMSG_LEN];

/* Parse JSON text allowing deep nesting (json_tokener_parse stops at 32). */
static json_object *
parse(const char *text)
{
	json_tokener *tok = json_tokener_new_ex(1000);
	json_object *obj = json_tokener_parse_ex(tok, text, (int) strlen(text) + 1);

	if (json_tokener_get_error(tok) != json_tokener_success)
	{
		printf("# test bug: cannot parse %.60s\n", text);
		exit(2);
	}
	json_tokener_free(tok);
	return obj;
}

/*
 * Validate the JSON text value against the JSON text schema; returns the
 * result and leaves the message in last_message.
 */
static bool
validate(const char *schema_text, const char *value_text)
{
	json_object *schema = parse(schema_text);
	json_object *value = parse(value_text);
	RvError		err;
	bool		ok;

	rv_error_clear(&err);
	ok = rv_schema_validate(schema, value, &err);
	strcpy(last_message, err.set ? err.message : "");
	strcpy(last_detail, err.detail);
	json_object_put(schema);
	json_object_put(value);
	return ok;
}

/* Check the JSON text schema; message in last_message. */
static bool
check(const char *schema_text)
{
	json_object *schema = parse(schema_text);
	RvError		err;
	bool		ok;

	rv_error_clear(&err);
	ok = rv_schema_check(schema, &err);
	strcpy(last_message, err.set ? err.message : "");
	strcpy(last_detail, err.detail);
	json_object_put(schema);
	return ok;
}

/* the message for value against schema, or "valid" */
static const char *
vmsg(const char *schema_text, const char *value_text)
{
	return validate(schema_text, value_text) ? "valid" : last_message;
}

/* the message for checking schema, or "valid" */
static const char *
cmsg(const char *schema_text)
{
	return check(schema_text) ? "valid" : last_message;
}

static const char *sentiment =
"{\"type\":\"object\","
" \"properties\":{"
"   \"sentiment\":{\"type\":\"string\",\"enum\":[\"positive\",\"negative\",\"neutral\",\"mixed\"]},"
"   \"confidence\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1}},"
" \"required\":[\"sentiment\",\"confidence\"],"
" \"additionalProperties\":false}";

/* Build an object schema nested n levels deep through "properties.a". */
static char *
nested_schema(int n)
{
	char	   *buf = malloc((size_t) n * 40 + 64);
	size_t		o = 0;
	int			i;

	for (i = 0; i < n; i++)
		o += (size_t) sprintf(buf + o, "{\"type\":\"object\",\"properties\":{\"a\":");
	o += (size_t) sprintf(buf + o, "{\"type\":\"string\"}");
	for (i = 0; i < n; i++)
		o += (size_t) sprintf(buf + o, "}}");
	buf[o] = '\0';
	return buf;
}

int
main(void)
{
	char	   *deep;
	json_object *schema;
	json_object *value;
	json_object *cur;
	RvError		err;
	int			i;

	/* ---- rv_schema_check ---- */
	CHECK_STR(cmsg(sentiment), "valid", "check: sentiment schema is valid");
	CHECK_STR(cmsg("true"), "valid", "check: boolean schema true is valid");
	CHECK_STR(cmsg("[1]"), "schema must be an object", "check: array is not a schema");
	CHECK_STR(cmsg("{\"type\":\"str\"}"),
			  "\"type\" must be one of object, array, string, number, integer, boolean, null or a list of them",
			  "check: unknown type name");
	CHECK_STR(last_detail, "The value given was \"str\".", "check: unknown type name detail");
	CHECK_STR(cmsg("{\"type\":[\"string\",\"null\"]}"), "valid", "check: list of types");
	CHECK_STR(cmsg("{\"type\":[]}"),
			  "\"type\" must be one of object, array, string, number, integer, boolean, null or a list of them",
			  "check: empty type list");
	CHECK_STR(cmsg("{\"properties\":{\"sentiment\":{\"enum\":[]}}}"),
			  "\"properties.sentiment.enum\" must be a non-empty array",
			  "check: empty enum names its path");
	CHECK_STR(cmsg("{\"properties\":[1]}"),
			  "\"properties\" must be an object mapping property names to schemas",
			  "check: properties must be an object");
	CHECK_STR(cmsg("{\"properties\":{\"a\":5}}"), "\"properties.a\" must be an object",
			  "check: property schema must be an object");
	CHECK_STR(cmsg("{\"required\":[\"a\",1]}"), "\"required\" must be an array of property names",
			  "check: required holds strings");
	CHECK_STR(cmsg("{\"additionalProperties\":\"no\"}"),
			  "\"additionalProperties\" must be a schema object or a boolean",
			  "check: additionalProperties type");
	CHECK_STR(cmsg("{\"items\":{\"type\":\"strin\"}}"),
			  "\"items.type\" must be one of object, array, string, number, integer, boolean, null or a list of them",
			  "check: items schema is checked");
	CHECK_STR(cmsg("{\"properties\":{\"x\":{\"items\":{\"minimum\":\"0\"}}}}"),
			  "\"properties.x.items.minimum\" must be a number", "check: nested minimum path");
	CHECK_STR(cmsg("{\"maximum\":true}"), "\"maximum\" must be a number", "check: maximum type");
	CHECK_STR(cmsg("{\"exclusiveMinimum\":true,\"minimum\":0}"), "valid",
			  "check: draft 4 boolean exclusiveMinimum accepted");
	CHECK_STR(cmsg("{\"exclusiveMaximum\":\"1\"}"), "\"exclusiveMaximum\" must be a number",
			  "check: exclusiveMaximum type");
	CHECK_STR(cmsg("{\"minLength\":-1}"), "\"minLength\" must be a non-negative integer",
			  "check: minLength negative");
	CHECK_STR(cmsg("{\"maxItems\":1.5}"), "\"maxItems\" must be a non-negative integer",
			  "check: maxItems fractional");
	CHECK_STR(cmsg("{\"minItems\":2.0,\"maxLength\":3}"), "valid", "check: integral double count accepted");
	CHECK_STR(cmsg("{\"pattern\":5}"), "\"pattern\" must be a string", "check: pattern type");
	CHECK_STR(cmsg("{\"pattern\":\"^[a-z]+$\",\"title\":\"t\",\"description\":\"d\",\"default\":1,\"$schema\":\"x\",\"examples\":[1],\"format\":\"email\"}"),
			  "valid", "check: annotations and pattern are accepted");
	CHECK_STR(cmsg("{\"anyOf\":[{\"type\":\"string\"}]}"), "\"anyOf\" is not supported",
			  "check: unsupported keyword is an error");
	CHECK_STR(cmsg("{\"properties\":{\"a\":{\"$ref\":\"#/x\"}}}"), "\"properties.a.$ref\" is not supported",
			  "check: nested unsupported keyword");
	CHECK_STR(cmsg("{\"const\":{\"a\":[1,2]}}"), "valid", "check: const takes any value");
	deep = nested_schema(64);
	CHECK_STR(cmsg(deep), "valid", "check: schema nested 64 levels is accepted");
	free(deep);
	deep = nested_schema(65);
	CHECK_STR(cmsg(deep), "schema is nested too deeply", "check: schema nested 65 levels is refused");
	free(deep);

	/* ---- rv_schema_validate: type ---- */
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"positive\",\"confidence\":0.9}"), "valid",
			  "validate: good sentiment");
	CHECK_STR(vmsg("{\"type\":\"object\"}", "[1]"), "$: expected object, got an array", "validate: object vs array");
	CHECK_STR(vmsg("{\"type\":\"array\"}", "{}"), "$: expected array, got an object", "validate: array vs object");
	CHECK_STR(vmsg("{\"type\":\"string\"}", "5"), "$: expected string, got 5", "validate: string vs int");
	CHECK_STR(vmsg("{\"type\":\"integer\"}", "2.0"), "valid", "validate: integer accepts integral double");
	CHECK_STR(vmsg("{\"type\":\"integer\"}", "2.5"), "$: expected integer, got 2.5", "validate: integer refuses 2.5");
	CHECK_STR(vmsg("{\"type\":\"number\"}", "7"), "valid", "validate: number accepts int");
	CHECK_STR(vmsg("{\"type\":\"number\"}", "\"7\""), "$: expected number, got \"7\"", "validate: number vs string");
	CHECK_STR(vmsg("{\"type\":\"boolean\"}", "null"), "$: expected boolean, got null", "validate: boolean vs null");
	CHECK_STR(vmsg("{\"type\":\"null\"}", "false"), "$: expected null, got false", "validate: null vs false");
	CHECK_STR(vmsg("{\"type\":[\"string\",\"integer\",\"null\"]}", "1.5"),
			  "$: expected string, integer or null, got 1.5", "validate: list of types message");
	CHECK_STR(vmsg("{\"type\":[\"string\",\"null\"]}", "null"), "valid", "validate: nullable string");

	/* ---- properties, required, additionalProperties ---- */
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"meh\",\"confidence\":0.5}"),
			  "$.sentiment: \"meh\" is not one of \"positive\", \"negative\", \"neutral\", \"mixed\"",
			  "validate: enum message names path and values");
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"positive\"}"),
			  "$: missing required property \"confidence\"", "validate: missing required");
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"positive\",\"confidence\":1.5}"),
			  "$.confidence: 1.5 is greater than the maximum 1", "validate: maximum");
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"positive\",\"confidence\":-0.1}"),
			  "$.confidence: -0.1 is less than the minimum 0", "validate: minimum");
	CHECK_STR(vmsg(sentiment, "{\"sentiment\":\"positive\",\"confidence\":1,\"x\":1}"),
			  "$: unexpected property \"x\"", "validate: additionalProperties false");
	CHECK_STR(last_detail, "The allowed properties are: sentiment, confidence.",
			  "validate: additionalProperties detail lists the allowed names");
	CHECK_STR(vmsg("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":{\"type\":\"integer\"}}",
				   "{\"a\":\"s\",\"b\":1,\"c\":\"no\"}"),
			  "$.c: expected integer, got \"no\"", "validate: additionalProperties schema");
	CHECK_STR(vmsg("{\"additionalProperties\":true}", "{\"z\":1}"), "valid",
			  "validate: additionalProperties true");
	CHECK_STR(vmsg("{\"properties\":{\"brand\":{\"type\":\"string\"}},\"required\":[\"brand\"]}", "{}"),
			  "$: missing required property \"brand\"", "validate: missing brand");
	CHECK_STR(vmsg("{\"properties\":{\"a\":{\"properties\":{\"b c\":{\"type\":\"string\"}}}}}",
				   "{\"a\":{\"b c\":1}}"),
			  "$.a[\"b c\"]: expected string, got 1", "validate: odd property name in path");
	CHECK_STR(vmsg("{\"properties\":{\"a\":{\"type\":\"string\"}}}", "[1]"), "valid",
			  "validate: properties ignored for non-objects");

	/* ---- items, minItems, maxItems ---- */
	CHECK_STR(vmsg("{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"string\"}}}}}}",
				   "{\"items\":[{\"b\":\"x\"},{\"b\":\"y\"},{\"b\":3}]}"),
			  "$.items[2].b: expected string, got 3", "validate: path with array index");
	CHECK_STR(vmsg("{\"minItems\":2}", "[1]"), "$: expected at least 2 items, got 1", "validate: minItems");
	CHECK_STR(vmsg("{\"maxItems\":1}", "[1,2,3]"), "$: expected at most 1 item, got 3", "validate: maxItems");
	CHECK_STR(vmsg("{\"items\":false}", "[]"), "valid", "validate: items false on empty array");
	CHECK_STR(vmsg("{\"items\":false}", "[0]"), "$[0]: no value is allowed here", "validate: items false");

	/* ---- strings ---- */
	CHECK_STR(vmsg("{\"minLength\":3}", "\"\xc3\xa9t\xc3\xa9\""), "valid",
			  "validate: minLength counts characters, not bytes");
	CHECK_STR(vmsg("{\"maxLength\":2}", "\"\xc3\xa9t\xc3\xa9\""),
			  "$: expected at most 2 characters, got 3", "validate: maxLength");
	CHECK_STR(vmsg("{\"minLength\":1}", "\"\""), "$: expected at least 1 character, got 0",
			  "validate: minLength on empty string");
	CHECK_STR(vmsg("{\"pattern\":\"^x$\"}", "\"abc\""), "$: \"abc\" does not match the pattern \"^x$\"",
			  "validate: pattern is enforced");
	CHECK_STR(vmsg("{\"pattern\":\"b\"}", "\"abc\""), "valid", "validate: pattern is a search, not anchored");
	CHECK_STR(vmsg("{\"pattern\":\"^\\\\d{3}-\\\\w+$\"}", "\"123-ab_c\""), "valid", "validate: \\d and \\w translated");
	CHECK_STR(vmsg("{\"pattern\":\"^\\\\d{3}$\"}", "\"12a\""), "$: \"12a\" does not match the pattern \"^\\\\d{3}$\"",
			  "validate: \\d does not match a letter");
	CHECK_STR(vmsg("{\"pattern\":\"^[\\\\d.]+$\"}", "\"1.5\""), "valid", "validate: \\d inside brackets");
	CHECK_STR(vmsg("{\"pattern\":\"^\\\\S+\\\\s\\\\S+$\"}", "\"a b\""), "valid", "validate: \\s and \\S");
	CHECK_STR(vmsg("{\"pattern\":\"^a\\\\.b$\"}", "\"axb\""), "$: \"axb\" does not match the pattern \"^a\\\\.b$\"",
			  "validate: escaped dot is literal");
	CHECK_STR(vmsg("{\"pattern\":\"^x$\"}", "5"), "valid", "validate: pattern ignored for numbers");

	/* ---- formats ---- */
	CHECK_STR(vmsg("{\"format\":\"date\"}", "\"2024-02-29\""), "valid", "validate: date leap day");
	CHECK_STR(vmsg("{\"format\":\"date\"}", "\"2023-02-29\""), "$: \"2023-02-29\" is not a valid date",
			  "validate: date not a leap year");
	CHECK_STR(vmsg("{\"format\":\"date\"}", "\"2024-13-01\""), "$: \"2024-13-01\" is not a valid date",
			  "validate: date month 13");
	CHECK_STR(vmsg("{\"format\":\"date\"}", "\"2024-1-01\""), "$: \"2024-1-01\" is not a valid date",
			  "validate: date needs two-digit month");
	CHECK_STR(vmsg("{\"format\":\"date-time\"}", "\"2024-05-01T12:30:00Z\""), "valid", "validate: date-time Z");
	CHECK_STR(vmsg("{\"format\":\"date-time\"}", "\"2024-05-01T12:30:00.123+02:00\""), "valid",
			  "validate: date-time fraction and offset");
	CHECK_STR(vmsg("{\"format\":\"date-time\"}", "\"2024-05-01 12:30\""),
			  "$: \"2024-05-01 12:30\" is not a valid date-time", "validate: date-time without seconds and offset");
	CHECK_STR(vmsg("{\"format\":\"time\"}", "\"23:59:60Z\""), "valid", "validate: time leap second");
	CHECK_STR(vmsg("{\"format\":\"time\"}", "\"24:00:00Z\""), "$: \"24:00:00Z\" is not a valid time",
			  "validate: time hour 24");
	CHECK_STR(vmsg("{\"format\":\"email\"}", "\"ada@example.org\""), "valid", "validate: email");
	CHECK_STR(vmsg("{\"format\":\"email\"}", "\"ada@localhost\""), "$: \"ada@localhost\" is not a valid email",
			  "validate: email needs a dotted domain");
	CHECK_STR(vmsg("{\"format\":\"email\"}", "\"a b@example.org\""), "$: \"a b@example.org\" is not a valid email",
			  "validate: email without spaces");
	CHECK_STR(vmsg("{\"format\":\"uuid\"}", "\"123e4567-e89b-12d3-a456-426614174000\""), "valid", "validate: uuid");
	CHECK_STR(vmsg("{\"format\":\"uuid\"}", "\"123e4567e89b12d3a456426614174000\""),
			  "$: \"123e4567e89b12d3a456426614174000\" is not a valid uuid", "validate: uuid needs hyphens");
	CHECK_STR(vmsg("{\"format\":\"uri\"}", "\"https://example.org/a?b=c\""), "valid", "validate: uri");
	CHECK_STR(vmsg("{\"format\":\"uri\"}", "\"example.org/a\""), "$: \"example.org/a\" is not a valid uri",
			  "validate: uri needs a scheme");
	CHECK_STR(vmsg("{\"format\":\"ipv4\"}", "\"192.168.0.1\""), "valid", "validate: ipv4");
	CHECK_STR(vmsg("{\"format\":\"ipv4\"}", "\"256.1.1.1\""), "$: \"256.1.1.1\" is not a valid ipv4",
			  "validate: ipv4 octet range");
	CHECK_STR(vmsg("{\"minLength\":1}", "5"), "valid", "validate: minLength ignored for numbers");

	/* ---- numbers ---- */
	CHECK_STR(vmsg("{\"maximum\":10}", "11"), "$: 11 is greater than the maximum 10", "validate: int maximum");
	CHECK_STR(vmsg("{\"maximum\":10}", "10"), "valid", "validate: maximum inclusive");
	CHECK_STR(vmsg("{\"exclusiveMaximum\":10}", "10"), "$: 10 is not less than the exclusive maximum 10",
			  "validate: exclusiveMaximum");
	CHECK_STR(vmsg("{\"exclusiveMinimum\":0}", "0.0"), "$: 0 is not greater than the exclusive minimum 0",
			  "validate: exclusiveMinimum");
	CHECK_STR(vmsg("{\"minimum\":0,\"exclusiveMinimum\":true}", "0"),
			  "$: 0 is not greater than the exclusive minimum 0", "validate: draft 4 exclusiveMinimum");
	CHECK_STR(vmsg("{\"maximum\":1,\"exclusiveMaximum\":true}", "0.5"), "valid",
			  "validate: draft 4 exclusiveMaximum passes");
	CHECK_STR(vmsg("{\"minimum\":0.1}", "0.05"), "$: 0.05 is less than the minimum 0.1",
			  "validate: doubles print naturally");
	CHECK_STR(vmsg("{\"maximum\":9223372036854775806}", "9223372036854775807"),
			  "$: 9223372036854775807 is greater than the maximum 9223372036854775806",
			  "validate: int64 compared exactly");

	/* ---- enum and const ---- */
	CHECK_STR(vmsg("{\"enum\":[1,\"a\",null]}", "1.0"), "valid", "validate: enum compares 1 == 1.0");
	CHECK_STR(vmsg("{\"enum\":[[1,2],{\"a\":1}]}", "{\"a\":1}"), "valid", "validate: enum with object");
	CHECK_STR(vmsg("{\"enum\":[[1,2],{\"a\":1}]}", "[2,1]"), "$: [2,1] is not one of [1,2], {\"a\":1}",
			  "validate: enum with arrays message");
	CHECK_STR(vmsg("{\"const\":\"abc\"}", "\"abd\""), "$: expected \"abc\", got \"abd\"", "validate: const");
	CHECK_STR(vmsg("{\"const\":null}", "null"), "valid", "validate: const null");
	CHECK_STR(vmsg("{\"const\":{\"a\":[1,{\"b\":true}]}}", "{\"a\":[1,{\"b\":true}]}"), "valid",
			  "validate: const deep equal");
	CHECK_STR(vmsg("false", "1"), "$: no value is allowed here", "validate: false schema");
	CHECK_STR(vmsg("{\"type\":\"string\"}", "\"a \\\"quoted\\\"\\nline\""), "valid", "validate: escaped string");
	CHECK_STR(vmsg("{\"enum\":[\"x\"]}", "\"a\\\"b\\nc\""), "$: \"a\\\"b\\nc\" is not one of \"x\"",
			  "validate: message escapes quotes and newlines");

	/* ---- robustness: unchecked schemas are tolerated ---- */
	CHECK_STR(vmsg("{\"type\":5,\"required\":\"a\",\"minimum\":\"x\",\"items\":3,\"enum\":{}}", "[1]"), "valid",
			  "validate: malformed keywords are ignored");
	CHECK(rv_schema_validate(NULL, NULL, NULL), "validate: NULL schema accepts");

	/* a long string value is cut in the message */
	{
		char		big[400];

		memset(big, 'x', sizeof(big));
		big[0] = '"';
		big[sizeof(big) - 2] = '"';
		big[sizeof(big) - 1] = '\0';
		validate("{\"type\":\"integer\"}", big);
		CHECK(strlen(last_message) < 120 && strstr(last_message, "...\"") != NULL,
			  "validate: long value is cut in the message");
	}

	/* invalid UTF-8 (a long run of continuation bytes) is cut safely */
	{
		char		bad[300];

		strcpy(bad, "{\"type\":\"integer");
		memset(bad + strlen(bad), 0xb0, 200);
		strcpy(bad + 16 + 200, "\"}");
		CHECK(!check(bad) && strncmp(last_detail, "The value given was \"integer\xb0", 29) == 0 &&
			  strstr(last_detail, "...\".") != NULL,
			  "check: invalid UTF-8 in a message is cut safely");
	}

	/* schemas nested deeper than the limit are refused at validation too */
	schema = json_object_new_object();
	value = json_object_new_object();
	cur = schema;
	for (i = 0; i < 70; i++)
	{
		json_object *props = json_object_new_object();
		json_object *sub = json_object_new_object();

		json_object_object_add(cur, "properties", props);
		json_object_object_add(props, "a", sub);
		cur = sub;
	}
	{
		json_object *vcur = value;

		for (i = 0; i < 70; i++)
		{
			json_object *sub = json_object_new_object();

			json_object_object_add(vcur, "a", sub);
			vcur = sub;
		}
	}
	rv_error_clear(&err);
	CHECK(!rv_schema_validate(schema, value, &err) &&
		  strstr(err.message, "schema is nested too deeply") != NULL,
		  "validate: depth limit");
	rv_error_clear(&err);
	CHECK(!rv_schema_check(schema, &err) &&
		  strcmp(err.message, "schema is nested too deeply") == 0,
		  "check: depth limit on built schema");
	json_object_put(schema);
	json_object_put(value);

	/* ---- definition-time checks: unsatisfiable and unimplemented ---- */
	CHECK_STR(cmsg("{\"minItems\":3,\"maxItems\":2}"), "\"minItems\" is greater than maxItems: no value can match",
			  "check: minItems > maxItems");
	CHECK_STR(cmsg("{\"minItems\":2,\"maxItems\":2}"), "valid", "check: minItems = maxItems");
	CHECK_STR(cmsg("{\"properties\":{\"s\":{\"minLength\":5,\"maxLength\":4}}}"),
			  "\"properties.s.minLength\" is greater than maxLength: no value can match", "check: minLength > maxLength");
	CHECK_STR(cmsg("{\"minimum\":2,\"maximum\":1}"), "\"minimum\" leaves no number between its bounds",
			  "check: minimum > maximum");
	CHECK_STR(cmsg("{\"minimum\":1,\"maximum\":1}"), "valid", "check: minimum = maximum");
	CHECK_STR(cmsg("{\"exclusiveMinimum\":1,\"maximum\":1}"), "\"minimum\" leaves no number between its bounds",
			  "check: exclusive lower bound at the maximum");
	CHECK_STR(cmsg("{\"minimum\":1,\"exclusiveMinimum\":true,\"maximum\":1}"),
			  "\"minimum\" leaves no number between its bounds", "check: draft-4 exclusive bound at the maximum");
	CHECK_STR(cmsg("{\"required\":[\"a\",\"b\"],\"properties\":{\"a\":{}},\"additionalProperties\":false}"),
			  "\"required\" names \"b\", which additionalProperties: false forbids", "check: required not in properties");
	CHECK_STR(cmsg("{\"required\":[\"a\",\"b\"],\"properties\":{\"a\":{}}}"), "valid",
			  "check: required not in properties is fine when additional properties are allowed");
	CHECK_STR(cmsg("{\"enum\":[]}"), "\"enum\" must be a non-empty array", "check: empty enum");
	CHECK_STR(cmsg("{\"multipleOf\":2}"), "\"multipleOf\" is not supported", "check: multipleOf not implemented");
	CHECK_STR(cmsg("{\"uniqueItems\":true}"), "\"uniqueItems\" is not supported", "check: uniqueItems not implemented");
	CHECK_STR(cmsg("{\"format\":\"hostname\"}"), "\"format\" \"hostname\" is not supported", "check: unknown format");
	CHECK_STR(cmsg("{\"format\":5}"), "\"format\" 5 is not supported", "check: format not a string");
	CHECK_STR(cmsg("{\"pattern\":\"(?<=a)b\"}"),
			  "\"pattern\" is not a supported regular expression: \"(?\" groups (lookaround, non-capturing, named) are not supported",
			  "check: lookbehind refused");
	CHECK_STR(cmsg("{\"pattern\":\"a+?\"}"),
			  "\"pattern\" is not a supported regular expression: lazy quantifiers are not supported", "check: lazy quantifier refused");
	CHECK_STR(cmsg("{\"pattern\":\"(a)\\\\1\"}"),
			  "\"pattern\" is not a supported regular expression: word boundaries and backreferences are not supported",
			  "check: backreference refused");
	CHECK(!check("{\"pattern\":\"a(b\"}") && strstr(last_message, "\"pattern\" is not a supported regular expression: ") == last_message,
		  "check: unbalanced parenthesis refused by regcomp");
	CHECK_STR(cmsg("{\"pattern\":\"[a-z\"}"), "\"pattern\" is not a supported regular expression: a bracket expression is not closed",
			  "check: unclosed bracket");
	CHECK_STR(cmsg("{\"pattern\":\"^[]a-]+$\"}"), "valid", "check: ] first and - last in brackets");

	/* ---- draft-4 normalisation ---- */
	{
		json_object *sch = parse("{\"type\":\"object\",\"properties\":{\"n\":{\"minimum\":0,\"exclusiveMinimum\":true,"
								 "\"maximum\":9,\"exclusiveMaximum\":false},\"l\":{\"items\":{\"maximum\":3,\"exclusiveMaximum\":true}}}}");

		rv_schema_normalize(sch);
		CHECK_STR(json_object_to_json_string_ext(sch, JSON_C_TO_STRING_PLAIN),
				  "{\"type\":\"object\",\"properties\":{\"n\":{\"exclusiveMinimum\":0,\"maximum\":9},\"l\":{\"items\":{\"exclusiveMaximum\":3}}}}",
				  "normalize: draft-4 booleans become bounds, false is dropped, nested schemas too");
		CHECK(!validate("{\"exclusiveMinimum\":0}", "0") && validate("{\"exclusiveMinimum\":0}", "1"),
			  "normalize: the normalised form validates the same");
		json_object_put(sch);
	}

	/* only the first error is kept */
	rv_error_clear(&err);
	rv_error_set(&err, "earlier");
	schema = parse("{\"type\":\"string\"}");
	value = json_object_new_int(1);
	CHECK(!rv_schema_validate(schema, value, &err) && strcmp(err.message, "earlier") == 0,
		  "validate: earlier error is kept");
	json_object_put(schema);
	json_object_put(value);

	return unit_done("jsonschema");
}
