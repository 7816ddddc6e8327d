/*-------------------------------------------------------------------------
 *
 * test_llm.c
 *	  Unit tests for llm.c: request bodies for both flavours, every response
 *	  shape the providers send, error bodies, and JSON extraction from model
 *	  output.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "unit.h"

/* Parse a built body back; the caller puts the result. */
static json_object *
reparse(const char *body)
{
	return body != NULL ? json_tokener_parse(body) : NULL;
}

/* The string at a json-c path like "/messages/0/role", or NULL. */
static const char *
path_str(json_object *root, const char *path)
{
	json_object *v = NULL;

	if (json_pointer_get(root, path, &v) != 0 || v == NULL ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Does the json-c path exist (with a non-null value)? */
static bool
has_path(json_object *root, const char *path)
{
	json_object *v = NULL;

	return json_pointer_get(root, path, &v) == 0 && v != NULL;
}

/* A messages array with one user message. */
static json_object *
user_messages(const char *text)
{
	json_object *arr = json_object_new_array();
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string("user"));
	json_object_object_add(m, "content", json_object_new_string(text));
	json_object_array_add(arr, m);
	return arr;
}

static void
test_build(void)
{
	RvLlmRequest req;
	json_object *msgs = user_messages("Hello");
	json_object *schema = json_tokener_parse("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}");
	json_object *root;
	json_object *v;
	char	   *body;

	CHECK_STR(rv_llm_path(RV_FLAVOR_OPENAI), "/chat/completions", "openai path");
	CHECK_STR(rv_llm_path(RV_FLAVOR_ANTHROPIC), "/messages", "anthropic path");

	/* openai, minimal */
	memset(&req, 0, sizeof(req));
	req.flavor = RV_FLAVOR_OPENAI;
	req.model = "gpt-4o-mini";
	req.messages = msgs;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(root != NULL, "openai minimal body is JSON");
	CHECK_STR(path_str(root, "/model"), "gpt-4o-mini", "openai model");
	CHECK_STR(path_str(root, "/messages/0/role"), "user", "openai without system: first message is the user's");
	CHECK(!has_path(root, "/temperature") && !has_path(root, "/max_tokens") &&
		  !has_path(root, "/response_format"),
		  "openai minimal body has no temperature, max_tokens or response_format");
	json_object_put(root);
	free(body);

	/* openai, everything */
	req.system = "You are terse.";
	req.has_temperature = true;
	req.temperature = 0.7;
	req.max_tokens = 256;
	req.output_schema = schema;
	req.schema_name = "classify ticket/π v2";
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(root != NULL, "openai full body is JSON");
	CHECK_STR(path_str(root, "/messages/0/role"), "system", "openai system prompt is the first message");
	CHECK_STR(path_str(root, "/messages/0/content"), "You are terse.", "openai system prompt text");
	CHECK_STR(path_str(root, "/messages/1/content"), "Hello", "openai user message follows");
	CHECK(body != NULL && strstr(body, "\"temperature\":0.7") != NULL, "openai temperature printed as 0.7");
	CHECK(json_pointer_get(root, "/max_tokens", &v) == 0 && json_object_get_int(v) == 256, "openai max_tokens");
	CHECK_STR(path_str(root, "/response_format/type"), "json_schema", "openai response_format type");
	CHECK_STR(path_str(root, "/response_format/json_schema/name"), "classify_ticket___v2",
			  "schema name sanitized (one _ per character)");
	CHECK(json_pointer_get(root, "/response_format/json_schema/strict", &v) == 0 &&
		  json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v),
		  "openai response_format strict is false");
	CHECK_STR(path_str(root, "/response_format/json_schema/schema/properties/a/type"), "integer",
			  "openai response_format carries the schema");
	CHECK(json_object_array_length(msgs) == 1, "caller's messages array untouched");
	json_object_put(root);
	free(body);

	/* schema names: long, empty, NULL */
	req.schema_name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(path_str(root, "/response_format/json_schema/name") != NULL &&
		  strlen(path_str(root, "/response_format/json_schema/name")) == 64,
		  "schema name cut to 64 characters");
	json_object_put(root);
	free(body);
	req.schema_name = "";
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK_STR(path_str(root, "/response_format/json_schema/name"), "reply", "empty schema name becomes reply");
	json_object_put(root);
	free(body);
	req.schema_name = NULL;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK_STR(path_str(root, "/response_format/json_schema/name"), "reply", "NULL schema name becomes reply");
	json_object_put(root);
	free(body);

	/* non-finite temperature is left out */
	req.temperature = 0.0 / 0.0;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(root != NULL && !has_path(root, "/temperature"), "NaN temperature left out");
	json_object_put(root);
	free(body);

	/* anthropic, minimal */
	memset(&req, 0, sizeof(req));
	req.flavor = RV_FLAVOR_ANTHROPIC;
	req.model = "claude-sonnet-4-5";
	req.messages = msgs;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(root != NULL, "anthropic minimal body is JSON");
	CHECK(json_pointer_get(root, "/max_tokens", &v) == 0 && json_object_get_int(v) == 1024,
		  "anthropic max_tokens defaults to 1024");
	CHECK(!has_path(root, "/system") && !has_path(root, "/temperature"),
		  "anthropic minimal body has no system or temperature");
	CHECK_STR(path_str(root, "/messages/0/role"), "user", "anthropic messages passed through");
	json_object_put(root);
	free(body);

	/* anthropic with system, temperature, max_tokens */
	req.system = "Be brief.";
	req.has_temperature = true;
	req.temperature = 0;
	req.max_tokens = 50;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK_STR(path_str(root, "/system"), "Be brief.", "anthropic system is top-level");
	CHECK(json_pointer_get(root, "/max_tokens", &v) == 0 && json_object_get_int(v) == 50,
		  "anthropic max_tokens");
	CHECK(json_pointer_get(root, "/temperature", &v) == 0 && json_object_get_double(v) == 0.0,
		  "anthropic temperature 0 is sent");
	CHECK(!has_path(root, "/messages/1"), "anthropic system is not a message");
	json_object_put(root);
	free(body);

	/* anthropic with schema: described in the system prompt */
	req.output_schema = schema;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(path_str(root, "/system") != NULL &&
		  strncmp(path_str(root, "/system"), "Be brief.\n\nReply with only a JSON value that matches this JSON Schema: {", 72) == 0,
		  "anthropic schema appended to the system prompt");
	CHECK(!has_path(root, "/response_format"), "anthropic has no response_format");
	json_object_put(root);
	free(body);
	req.system = NULL;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(path_str(root, "/system") != NULL &&
		  strncmp(path_str(root, "/system"), "Reply with only a JSON value", 28) == 0 &&
		  strstr(path_str(root, "/system"), "\"integer\"") != NULL,
		  "anthropic schema alone makes the system prompt");
	json_object_put(root);
	free(body);

	/* no messages at all */
	req.messages = NULL;
	body = rv_llm_build_body(&req);
	root = reparse(body);
	CHECK(json_pointer_get(root, "/messages", &v) == 0 && json_object_is_type(v, json_type_array) &&
		  json_object_array_length(v) == 0, "NULL messages become an empty array");
	json_object_put(root);
	free(body);
	CHECK(rv_llm_build_body(NULL) == NULL, "NULL request gives NULL");

	json_object_put(msgs);
	json_object_put(schema);
}

/* Parse body as flavor; returns ok and fills r / err. */
static bool
parse(RvFlavor flavor, const char *body, RvLlmResponse *r, RvError *err)
{
	rv_error_clear(err);
	return rv_llm_parse_response(flavor, body, strlen(body), r, err);
}

static void
test_parse_openai(void)
{
	RvLlmResponse r;
	RvError		err;
	bool		ok;

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\","
			   "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hi there\",\"refusal\":null},"
			   "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
			   "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n",
			   &r, &err);
	CHECK(ok, "openai response parses");
	CHECK_STR(r.content, "Hi there", "openai content");
	CHECK(r.input_tokens == 12 && r.output_tokens == 3, "openai usage");
	CHECK_STR(r.finish_reason, "stop", "openai finish_reason");
	CHECK_STR(r.model, "gpt-4o-mini-2024-07-18", "openai model");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"x\"}}]}", &r, &err);
	CHECK(ok && r.input_tokens == -1 && r.output_tokens == -1 && r.finish_reason == NULL && r.model == NULL,
		  "openai without usage, finish_reason, model");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Hello, \"},"
			   "{\"type\":\"image_url\",\"image_url\":{}},{\"type\":\"text\",\"text\":\"world\"}]}}],"
			   "\"usage\":{\"prompt_tokens\":5.0,\"completion_tokens\":-2}}", &r, &err);
	CHECK(ok, "openai content parts parse");
	CHECK_STR(r.content, "Hello, world", "openai text parts concatenated");
	CHECK(r.input_tokens == 5 && r.output_tokens == -1, "integral double count kept, negative count dropped");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"I can't help with that.\"},"
			   "\"finish_reason\":\"stop\"}]}", &r, &err);
	CHECK(ok, "openai refusal is a reply");
	CHECK_STR(r.content, "I can't help with that.", "openai refusal text used as content");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
			   "\"finish_reason\":\"tool_calls\"}]}", &r, &err);
	CHECK(!ok && r.content == NULL, "null content without refusal fails");
	CHECK_STR(err.message, "provider returned an empty reply", "null content: empty reply error");
	CHECK_STR(err.detail, "The finish reason is \"tool_calls\".", "empty reply detail names the finish reason");

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[{\"message\":{\"content\":[]}}]}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned an empty reply") == 0, "empty parts array: empty reply");

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"error\":{\"message\":\"Provider returned error\",\"code\":502,"
			   "\"metadata\":{\"raw\":\"upstream\"}},\"user_id\":\"u\"}", &r, &err);
	CHECK(!ok, "openrouter error in a 200 fails");
	CHECK_STR(err.message, "provider returned an error: Provider returned error", "error-in-200 message");
	CHECK_STR(err.detail, "The provider reported error code \"502\": upstream", "error-in-200 detail has the code and upstream text");

	ok = parse(RV_FLAVOR_OPENAI, "{\"error\":{\"message\":\"Bad key\",\"code\":401}}", &r, &err);
	CHECK(!ok && strcmp(err.detail, "The provider reported error code \"401\".") == 0, "error-in-200 code without metadata");

	ok = parse(RV_FLAVOR_OPENAI, "{\"error\":\"model not loaded\"}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned an error: model not loaded") == 0, "error string in a 200");

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"id\":\"gen-1\",\"choices\":[{\"finish_reason\":\"error\",\"error\":{\"code\":429,"
			   "\"message\":\"Rate limit exceeded upstream\"},\"message\":{\"content\":\"\"}}]}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned an error: Rate limit exceeded upstream") == 0,
		  "error inside choices[0] fails");

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"error\":null,\"choices\":[{\"message\":{\"content\":\"fine\"}}]}", &r, &err);
	CHECK(ok && strcmp(r.content, "fine") == 0, "\"error\": null is not an error");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[]}", &r, &err);
	CHECK(!ok, "empty choices fails");
	CHECK_STR(err.message, "provider response has no choices[0].message.content", "missing content message");
	CHECK(strncmp(err.detail, "The response body starts with: {\"choices\":[]}", 45) == 0,
		  "missing content detail shows the body");
	CHECK(err.hint[0] != '\0', "missing content has a hint");

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[{\"message\":{\"content\":42}}]}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider response has no choices[0].message.content") == 0,
		  "numeric content fails");

	ok = parse(RV_FLAVOR_OPENAI, "[1,2]", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider response is not a JSON object") == 0, "array body fails");

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"trunc", &r, &err);
	CHECK(!ok, "truncated body fails");
	CHECK_STR(err.message, "provider returned malformed JSON", "truncated body: malformed JSON");
	CHECK_STR(err.detail, "json-c: unexpected end of data at offset 40", "truncated body: detail has the offset");

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]} trailing", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned malformed JSON") == 0, "trailing garbage fails");
	CHECK(strstr(err.detail, "at offset 42") != NULL, "trailing garbage detail has the offset");

	{
		const char	body[] = "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}\0{}";

		rv_error_clear(&err);
		ok = rv_llm_parse_response(RV_FLAVOR_OPENAI, body, sizeof(body) - 1, &r, &err);
		CHECK(!ok && strstr(err.detail, "unexpected data after the value at offset 41") != NULL,
			  "NUL byte after the value fails");
	}

	ok = parse(RV_FLAVOR_OPENAI, "", &r, &err);
	CHECK(!ok && strcmp(err.detail, "json-c: unexpected end of data at offset 0") == 0, "empty body fails");

	ok = parse(RV_FLAVOR_OPENAI, "<html>502 Bad Gateway</html>", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned malformed JSON") == 0, "HTML body fails");

	ok = parse(RV_FLAVOR_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"bad \xC3\x28\"}}]}", &r, &err);
	CHECK(!ok && strstr(err.detail, "utf-8") != NULL, "invalid UTF-8 fails");

	{
		char		deep[300];
		int			i;

		for (i = 0; i < 100; i++)
			deep[i] = '[';
		for (i = 0; i < 100; i++)
			deep[100 + i] = ']';
		deep[200] = '\0';
		ok = parse(RV_FLAVOR_OPENAI, deep, &r, &err);
		CHECK(!ok && strstr(err.detail, "nesting too deep") != NULL, "100-deep nesting refused");
	}
}

static void
test_parse_anthropic(void)
{
	RvLlmResponse r;
	RvError		err;
	bool		ok;

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\","
			   "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\",\"signature\":\"s\"},"
			   "{\"type\":\"text\",\"text\":\"Paris\"},{\"type\":\"text\",\"text\":\" is the capital.\"}],"
			   "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
			   "\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":100,"
			   "\"output_tokens\":7}}", &r, &err);
	CHECK(ok, "anthropic response parses");
	CHECK_STR(r.content, "Paris is the capital.", "anthropic text blocks concatenated, thinking skipped");
	CHECK(r.input_tokens == 120 && r.output_tokens == 7, "anthropic usage (cache reads counted as input)");
	CHECK_STR(r.finish_reason, "end_turn", "anthropic stop_reason");
	CHECK_STR(r.model, "claude-sonnet-4-5-20250929", "anthropic model");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_ANTHROPIC, "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}", &r, &err);
	CHECK(ok && r.input_tokens == -1 && r.output_tokens == -1 && r.model == NULL, "anthropic without usage");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", &r, &err);
	CHECK(!ok, "anthropic error document fails");
	CHECK_STR(err.message, "provider returned an error: Overloaded", "anthropic error message");
	CHECK_STR(err.detail, "The provider reported error type \"overloaded_error\".", "anthropic error type in detail");

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"type\":\"message\",\"content\":[],\"stop_reason\":\"max_tokens\"}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned an empty reply") == 0, "anthropic empty content");
	CHECK_STR(err.detail, "The stop reason is \"max_tokens\".", "anthropic empty content detail");

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"choices\":[{\"message\":{\"content\":\"wrong flavour\"}}]}", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider response has no content") == 0, "openai body under anthropic flavour");

	ok = parse(RV_FLAVOR_ANTHROPIC, "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"cut", &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned malformed JSON") == 0, "anthropic truncated body");
}

static void
test_huge(void)
{
	size_t		n = 5 * 1024 * 1024;
	const char *pre = "{\"choices\":[{\"message\":{\"content\":\"";
	const char *post = "\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
	size_t		len = strlen(pre) + n + strlen(post);
	char	   *body = malloc(len + 1);
	char	   *text;
	RvLlmResponse r;
	RvError		err;
	bool		ok;
	json_object *v;

	strcpy(body, pre);
	memset(body + strlen(pre), 'a', n);
	strcpy(body + strlen(pre) + n, post);
	rv_error_clear(&err);
	ok = rv_llm_parse_response(RV_FLAVOR_OPENAI, body, len, &r, &err);
	CHECK(ok && r.content != NULL && strlen(r.content) == n && strcmp(r.finish_reason, "length") == 0,
		  "5 MB content parses");
	rv_llm_response_free(&r);

	rv_error_clear(&err);
	ok = rv_llm_parse_response(RV_FLAVOR_OPENAI, body, len - 10, &r, &err);
	CHECK(!ok && strcmp(err.message, "provider returned malformed JSON") == 0, "truncated 5 MB body fails");

	text = rv_llm_error_message(body, len);
	CHECK(text != NULL && strlen(text) < 300, "error message of a 5 MB body is short");
	free(text);
	free(body);

	/* a 5 MB reply full of unclosed brackets: bounded work, no JSON */
	text = malloc(n + 1);
	memset(text, '{', n);
	text[n] = '\0';
	rv_error_clear(&err);
	v = rv_llm_extract_json(text, &err);
	CHECK(v == NULL && err.set, "5 MB of open braces is not JSON");
	/* 5 MB of prose ending in JSON */
	memset(text, 'x', n);
	memcpy(text + n - 10, "{\"k\": [1]}", 10);
	rv_error_clear(&err);
	v = rv_llm_extract_json(text, &err);
	CHECK(v != NULL && json_object_is_type(v, json_type_object), "JSON after 5 MB of prose found");
	json_object_put(v);
	free(text);
}

static void
test_error_message(void)
{
	char	   *m;
	char		big[1000];

#define EM(s) rv_llm_error_message((s), strlen(s))
	m = EM("{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}");
	CHECK_STR(m, "Incorrect API key provided", "error.message");
	free(m);
	m = EM("{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of requests has exceeded your rate limit\"}}");
	CHECK_STR(m, "Number of requests has exceeded your rate limit", "anthropic error.message");
	free(m);
	m = EM("{\"error\":\"model 'llama9' not found\"}");
	CHECK_STR(m, "model 'llama9' not found", "error as a string (ollama)");
	free(m);
	m = EM("{\"message\":\"Internal server error\"}");
	CHECK_STR(m, "Internal server error", "top-level message");
	free(m);
	m = EM("{\"detail\":\"Not Found\"}");
	CHECK_STR(m, "Not Found", "top-level detail (FastAPI)");
	free(m);
	m = EM("{\"error\":{\"message\":\"line one\\nline two\\t\\u0001end  \"}}");
	CHECK_STR(m, "line one line two end", "control characters collapsed");
	free(m);
	m = EM("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>\r\n");
	CHECK_STR(m, "<html> <head><title>502 Bad Gateway</title></head> </html>", "non-JSON body: its start");
	free(m);
	m = EM("{\"error\":{\"code\":500}}");
	CHECK_STR(m, "{\"error\":{\"code\":500}}", "JSON without a message: the body");
	free(m);
	m = EM("bad \xFF\xFE bytes \xC3\xA9");
	CHECK_STR(m, "bad ?? bytes \xC3\xA9", "invalid UTF-8 replaced, valid kept");
	free(m);
	CHECK(EM("") == NULL, "empty body gives NULL");
	CHECK(EM("  \r\n") == NULL, "blank body gives NULL");
	CHECK(rv_llm_error_message(NULL, 10) == NULL, "NULL body gives NULL");

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	m = EM(big);
	CHECK(m != NULL && strlen(m) < 300 && strcmp(m + strlen(m) - 3, "...") == 0, "long body cut to 300 bytes with ...");
	free(m);
	/* multibyte characters are not cut in the middle */
	{
		int			i;

		for (i = 0; i + 2 <= 998; i += 2)
			memcpy(big + i, "\xC3\xA9", 2);
		big[998] = '\0';
		m = EM(big);
		CHECK(m != NULL && strlen(m) < 300 && strlen(m) % 2 == 1, "cut on a character boundary");
		free(m);
	}
#undef EM
}

/* Extract and serialize, or NULL. */
static char *
extract(const char *text, RvError *err)
{
	json_object *v;
	char	   *s;

	rv_error_clear(err);
	v = rv_llm_extract_json(text, err);
	if (v == NULL)
		return NULL;
	s = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	json_object_put(v);
	return s;
}

static void
test_extract(void)
{
	RvError		err;
	char	   *s;

#define EX(text, want, desc) \
	do { s = extract((text), &err); CHECK_STR(s, (want), (desc)); free(s); } while (0)
	EX("{\"a\": 1}", "{\"a\":1}", "plain object");
	EX("  \n[1, 2]\n ", "[1,2]", "array with surrounding whitespace");
	EX("42", "42", "plain number");
	EX("\"just a string\"", "\"just a string\"", "plain string");
	EX("```json\n{\"a\": [1, 2]}\n```", "{\"a\":[1,2]}", "json fence");
	EX("Sure! Here it is:\n```JSON\n{\"ok\": true}\n```\nAnything else?", "{\"ok\":true}", "json fence in prose");
	EX("```\n{\"b\": null}\n```", "{\"b\":null}", "bare fence");
	EX("```python\nprint(1)\n```\nthen ```json {\"c\": 3}```", "{\"c\":3}", "json fence preferred over an earlier fence");
	EX("```javascript\n[true]\n```", "[true]", "fence with another info string");
	EX("The answer is {\"x\": \"a } in a string\"} as requested.", "{\"x\":\"a } in a string\"}",
	   "prose-wrapped object, brace inside a string");
	EX("See [1] and [the docs]. Result: {\"v\": \"\\\"q\\\"\"}", "[1]", "first balanced span that parses");
	EX("Note [this]. Result: {\"v\": \"\\\"q\\\"\"}", "{\"v\":\"\\\"q\\\"\"}", "unparseable span skipped, escapes tracked");
	EX("{ unclosed then {\"k\": 2}", "{\"k\":2}", "unclosed brace skipped");
	EX("```json\n{\"a\": 1}", "{\"a\":1}", "unterminated fence runs to the end");
	s = extract("```json\n{\"a\": 1", &err);
	CHECK(s == NULL && err.set, "truncated JSON in a fence is not JSON");
	EX("{\"score\": NaN} but really {\"score\": 1}", "{\"score\":1}", "NaN span refused");
	EX("1e999", "1e999", "huge number kept as written");

	s = extract("I cannot answer that.", &err);
	CHECK(s == NULL && err.set, "prose without JSON fails");
	CHECK_STR(err.message, "reply is not valid JSON", "extract error message");
	CHECK(strncmp(err.detail, "json-c: ", 8) == 0, "extract error detail from json-c");
	s = extract("null", &err);
	CHECK(s == NULL && err.set, "top-level null refused");
	s = extract("Infinity", &err);
	CHECK(s == NULL && err.set, "Infinity refused");
	s = extract("", &err);
	CHECK(s == NULL && strcmp(err.detail, "The reply is empty.") == 0, "empty reply");
	s = extract(" \n\t", &err);
	CHECK(s == NULL && err.set, "blank reply");
	s = extract("['a']", &err);
	CHECK(s == NULL && err.set, "single-quoted string refused (strict)");
	s = extract("{\"a\": 1,}", &err);
	CHECK(s == NULL && err.set, "trailing comma refused (strict)");
	rv_error_clear(&err);
	CHECK(rv_llm_extract_json(NULL, &err) == NULL && err.set, "NULL text");
	CHECK(rv_llm_extract_json("nope", NULL) == NULL, "NULL err tolerated");
#undef EX
}

/*
 * What real providers report: truncation (finish_reason "length",
 * Anthropic stop_reason "max_tokens"), the response id, and prompt tokens
 * read from the provider's cache; the bodies are the providers' documented
 * examples (tests/mock/fixtures/replies/).
 */
static void
test_provider_fields(void)
{
	RvLlmResponse r;
	RvError		err;
	bool		ok;

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\",\"created\":1741569952,"
			   "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
			   "\"content\":\"Hello!\",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
			   "\"usage\":{\"prompt_tokens\":1919,\"completion_tokens\":10,\"total_tokens\":1929,"
			   "\"prompt_tokens_details\":{\"cached_tokens\":1792,\"audio_tokens\":0}},\"system_fingerprint\":\"fp_06737a9306\"}",
			   &r, &err);
	CHECK(ok && !r.truncated, "openai documented reply is not truncated");
	CHECK_STR(r.id, "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "openai response id");
	CHECK(r.input_tokens == 1919 && r.cached_tokens == 1792 && r.output_tokens == 10,
		  "openai cached_tokens are part of prompt_tokens");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"{\\\"brand\\\": \\\"Ac\"},"
			   "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":52,\"completion_tokens\":16}}", &r, &err);
	CHECK(ok && r.truncated, "openai finish_reason length is a truncation");
	CHECK(r.cached_tokens == -1, "no cached_tokens when the provider does not say");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],"
			   "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":50}}}",
			   &r, &err);
	CHECK(ok && r.cached_tokens == 5, "cached_tokens capped at prompt_tokens");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\","
			   "\"model\":\"claude-3-5-sonnet-20241022\",\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}],"
			   "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":21,"
			   "\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":1888,\"output_tokens\":12}}", &r, &err);
	CHECK(ok && !r.truncated, "anthropic documented reply");
	CHECK_STR(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF", "anthropic response id");
	CHECK(r.input_tokens == 21 + 100 + 1888 && r.cached_tokens == 1888,
		  "anthropic cache reads counted in the prompt and reported apart");
	rv_llm_response_free(&r);

	ok = parse(RV_FLAVOR_ANTHROPIC,
			   "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\","
			   "\"content\":[{\"type\":\"text\",\"text\":\"{\\\"a\\\": \"}],\"stop_reason\":\"max_tokens\","
			   "\"usage\":{\"input_tokens\":40,\"output_tokens\":10}}", &r, &err);
	CHECK(ok && r.truncated, "anthropic stop_reason max_tokens is a truncation");
	rv_llm_response_free(&r);

	CHECK(rv_llm_is_truncation("length") && rv_llm_is_truncation("max_tokens") &&
		  !rv_llm_is_truncation("stop") && !rv_llm_is_truncation("end_turn") &&
		  !rv_llm_is_truncation(NULL), "rv_llm_is_truncation");

	/* llama-server's reply: its own model name, no cached tokens */
	ok = parse(RV_FLAVOR_OPENAI,
			   "{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"message\":{\"role\":\"assistant\","
			   "\"content\":\"ok\"}}],\"created\":1764614400,\"model\":\"tinyllama.gguf\",\"object\":\"chat.completion\","
			   "\"usage\":{\"completion_tokens\":7,\"prompt_tokens\":45,\"total_tokens\":52},\"id\":\"chatcmpl-3Kq9\","
			   "\"timings\":{\"prompt_n\":45}}", &r, &err);
	CHECK(ok && strcmp(r.model, "tinyllama.gguf") == 0 && strcmp(r.id, "chatcmpl-3Kq9") == 0 &&
		  r.cached_tokens == -1, "llama-server reply");
	rv_llm_response_free(&r);
}

int
main(void)
{
	test_build();
	test_provider_fields();
	test_parse_openai();
	test_parse_anthropic();
	test_huge();
	test_error_message();
	test_extract();
	return unit_done("llm");
}
