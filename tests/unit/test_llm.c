/*-------------------------------------------------------------------------
 *
 * test_llm.c
 *	  Unit tests for llm.c: request bodies for both flavours, every response
 *	  shape the providers send, error bodies, and JSON extraction from model
 *	  output.
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "unit.h"
#include "../fuzz/llm_diff.h"

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

/* ---- the reply scanner against the json-c path ---- */

typedef struct ScanCase
{
	RvFlavor	flavor;
	int			fast;			/* 1: the scanner must take it; 0: must give up */
	const char *body;
	size_t		len;			/* 0: strlen(body) */
} ScanCase;

#define OA RV_FLAVOR_OPENAI
#define AN RV_FLAVOR_ANTHROPIC
/* an OpenAI reply around a content string's JSON text */
/* a body with NUL bytes, and its length */
#define WITH_NUL(s) s, sizeof(s) - 1
#define OA_CONTENT(c) "{\"choices\":[{\"message\":{\"content\":" c "},\"finish_reason\":\"stop\"}]}"

static const ScanCase scan_cases[] = {
	/* the common reply, as the profile's nginx sends it */
	{OA, 1, "{\"id\":\"fixed\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"
	 "\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":\"stop\"}],"
	 "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}", 0},
	{OA, 1, " \t\r\n{ \"choices\" : [ { \"message\" : { \"content\" : \"x\" } } ] } \n\n", 0},
	/* escapes */
	{OA, 1, OA_CONTENT("\"line1\\nline2 \\\"q\\\" \\\\ \\/ \\b\\f\\r\\t end\""), 0},
	{OA, 1, OA_CONTENT("\"\\u0041\\u00e9\\u65e5\\u20AC\\uFFFF\""), 0},
	{OA, 1, OA_CONTENT("\"pair \\ud83c\\udf89 \\uD834\\uDD1E\""), 0},
	{OA, 1, OA_CONTENT("\"lone high \\ud800 end\""), 0},
	{OA, 1, OA_CONTENT("\"lone high at the end \\ud800\""), 0},
	{OA, 1, OA_CONTENT("\"lone low \\udc00 x\""), 0},
	{OA, 1, OA_CONTENT("\"high then letter \\ud800\\u0041\""), 0},
	{OA, 1, OA_CONTENT("\"high high low \\ud800\\ud800\\udc00\""), 0},
	{OA, 1, OA_CONTENT("\"high then escape \\ud800\\n\\ud801\\\\\""), 0},
	{OA, 1, OA_CONTENT("\"low low \\udfff\\udfff\""), 0},
	{OA, 1, OA_CONTENT("\"nul \\u0000 inside\""), 0},
	{OA, 1, OA_CONTENT("\"\""), 0},
	/* raw UTF-8 and raw control characters (json-c takes those) */
	{OA, 1, OA_CONTENT("\"h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89 \xf4\x8f\xbf\xbf\""), 0},
	{OA, 1, OA_CONTENT("\"raw\ttab and\x01 \x1f and \x7f\""), 0},
	{OA, 1, OA_CONTENT("\"raw\nnewline\""), 0},
	/* invalid UTF-8: the scanner leaves it to json-c (which is looser) */
	{OA, 0, OA_CONTENT("\"\xff\""), 0},
	{OA, 0, OA_CONTENT("\"overlong \xc0\x80\""), 0},
	{OA, 0, OA_CONTENT("\"surrogate \xed\xa0\x80\""), 0},
	{OA, 0, OA_CONTENT("\"above \xf4\x90\x80\x80\""), 0},
	{OA, 0, OA_CONTENT("\"cut \xe6\x97\""), 0},
	{OA, 0, WITH_NUL("{\"choices\":[{\"message\":{\"content\":\"a\0b\"}}]}")},
	{OA, 0, WITH_NUL("{\"choices\":[{\"message\":{\"content\":\"ab\"}}]}\0")},
	/* nulls, other types and missing members */
	{OA, 1, "{\"id\":null,\"model\":7,\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":null}],\"usage\":null}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":true}}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":[1,2]}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"error\":null}],\"error\":null}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"error\":\"\"}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"error\":{\"message\":\"m\"}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"error\":{\"message\":\"m\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"no\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"role\":\"assistant\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":\"x\"}]}", 0},
	{OA, 0, "{\"choices\":[null]}", 0},
	{OA, 0, "{\"choices\":[]}", 0},
	{OA, 0, "{\"choices\":{\"message\":{\"content\":\"x\"}}}", 0},
	{OA, 0, "{}", 0},
	/* the first of several choices */
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"first\"},\"finish_reason\":\"length\"},"
	 "{\"message\":{\"content\":\"second\"},\"finish_reason\":\"stop\"}]}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":\"max_tokens\"}]}", 0},
	/* duplicate names: the last one wins, also for what is under it */
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"one\",\"content\":\"two\"}}]}", 0},
	{OA, 1, "{\"model\":\"a\",\"model\":\"b\",\"id\":\"x\",\"id\":null,"
	 "\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"one\"},\"finish_reason\":\"stop\"}],"
	 "\"choices\":[{\"message\":{\"content\":\"two\"}}]}", 0},
	{OA, 1, "{\"usage\":{\"prompt_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":2}},"
	 "\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"completion_tokens\":1}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"message\":{\"role\":\"assistant\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"choices\":[]}", 0},
	/* token counts */
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":100,"
	 "\"completion_tokens\":0,\"prompt_tokens_details\":{\"cached_tokens\":40}}}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":10,\"cached_tokens\":40}}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":10,\"cached_tokens\":4,"
	 "\"prompt_tokens_details\":{\"cached_tokens\":null}}}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":-0,\"completion_tokens\":-7}}", 0},
	{OA, 1, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":999999999999999999}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":9223372036854775807}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":18446744073709551616}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":12.0}}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"completion_tokens\":1e2}}", 0},
	/* numbers elsewhere */
	{OA, 1, "{\"created\":1.5e300,\"x\":[-0.0,0,1E+2,2e-5,1e999,-1.25],\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":123456789012345678901234567890,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":-123456789012345678901,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":01,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":1.,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":-,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":NaN,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":-Infinity,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"created\":True,\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	/* member names */
	{OA, 1, "{\"x\":{\"a\\nb\":1,\"\\u0063\":[]},\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"\\u0063ontent\":\"x\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\\u0000junk\":\"x\"}}]}", 0},
	{OA, 0, "{'choices':[{\"message\":{\"content\":\"x\"}}]}", 0},
	/* syntax json-c strict refuses, or that the scanner leaves to it */
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]} x", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}{}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}},]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}] /* c */}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\\q\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\\u12G4\"}}]}", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]", 0},
	{OA, 0, "{\"choices\":[{\"message\":{\"content\":\"x", 0},
	{OA, 0, "\f{\"choices\":[{\"message\":{\"content\":\"x\"}}]}", 0},
	{OA, 0, "", 0},
	{OA, 0, "null", 0},
	{OA, 0, "[]", 0},
	{OA, 0, "\"x\"", 0},
	{OA, 0, "12", 0},
	/* anthropic */
	{AN, 1, "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku\","
	 "\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
	 "\"usage\":{\"input_tokens\":10,\"output_tokens\":2}}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\"},{\"type\":\"text\",\"text\":\"a\\n\"},"
	 "{\"type\":\"tool_use\",\"input\":{}},{\"text\":\"untyped\"},null,7,{\"type\":\"text\",\"text\":5},"
	 "{\"text\":\"b\\u00e9\",\"type\":\"text\"}],\"stop_reason\":\"max_tokens\"}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"usage\":{\"input_tokens\":10,\"output_tokens\":2,"
	 "\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":1000}}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"usage\":{\"output_tokens\":2,"
	 "\"cache_read_input_tokens\":1000}}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"usage\":{\"input_tokens\":999999999999999999,"
	 "\"cache_creation_input_tokens\":999999999999999999,\"cache_read_input_tokens\":999999999999999999}}", 0},
	{AN, 1, "{\"content\":\"plain\",\"type\":7}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"one\"}],\"content\":\"two\"}", 0},
	{AN, 1, "{\"content\":\"one\",\"content\":[{\"type\":\"text\",\"text\":\"two\"}]}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"one\"}],\"content\":[{\"type\":\"text\",\"text\":\"two\"}]}", 0},
	{AN, 1, "{\"content\":[{\"type\":\"text\",\"text\":\"a\",\"text\":\"b\",\"type\":\"text\"}]}", 0},
	{AN, 1, "{\"type\":\"message\",\"error\":null,\"content\":[{\"type\":\"text\",\"text\":\"\"}]}", 0},
	{AN, 0, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", 0},
	{AN, 0, "{\"type\":\"error\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}", 0},
	{AN, 0, "{\"type\":\"err\\u006fr\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}", 0},
	{AN, 0, "{\"error\":\"x\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}", 0},
	{AN, 0, "{\"content\":[{\"type\":\"tool_use\",\"input\":{}}],\"stop_reason\":\"tool_use\"}", 0},
	{AN, 0, "{\"content\":[]}", 0},
	{AN, 0, "{\"content\":[{\"type\":\"te\\u0078t\",\"text\":\"x\"}]}", 0},
	{AN, 0, "{\"content\":{\"type\":\"text\",\"text\":\"x\"}}", 0},
	{AN, 0, "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"usage\":{\"input_tokens\":1.5}}", 0},
	{AN, 0, "{\"id\":\"x\"}", 0},
};

/* A reply with a member nested depth containers deep (the root not counted). */
static char *
scan_nested(int depth)
{
	char	   *b = malloc(6 * (size_t) depth + 100);
	size_t		o;
	int			k;

	o = (size_t) sprintf(b, "{\"x\":");
	for (k = 0; k < depth; k++)
		o += (size_t) sprintf(b + o, "%s", (k % 2) ? "[" : "{\"k\":");
	b[o++] = '1';
	for (k = depth - 1; k >= 0; k--)
		b[o++] = (k % 2) ? ']' : '}';
	sprintf(b + o, ",\"choices\":[{\"message\":{\"content\":\"deep\"}}]}");
	return b;
}

/*
 * Does rv_llm_parse_response() give what rv_llm_parse_response_tree()
 * gives, error messages included?
 */
static bool
scan_same_as_tree(RvFlavor flavor, const char *body, size_t len)
{
	RvLlmResponse a;
	RvLlmResponse b;
	RvError		ea;
	RvError		eb;
	bool		oka;
	bool		okb;
	bool		same;

	rv_error_clear(&ea);
	rv_error_clear(&eb);
	oka = rv_llm_parse_response(flavor, body, len, &a, &ea);
	okb = rv_llm_parse_response_tree(flavor, body, len, &b, &eb);
	same = (oka == okb);
	if (same && oka)
		same = llm_diff_same_str(a.content, b.content) &&
			llm_diff_same_str(a.finish_reason, b.finish_reason) &&
			llm_diff_same_str(a.model, b.model) && llm_diff_same_str(a.id, b.id) &&
			a.input_tokens == b.input_tokens && a.output_tokens == b.output_tokens &&
			a.cached_tokens == b.cached_tokens && a.truncated == b.truncated;
	else if (same)
		same = strcmp(ea.message, eb.message) == 0 && strcmp(ea.detail, eb.detail) == 0 &&
			strcmp(ea.hint, eb.hint) == 0;
	if (oka)
		rv_llm_response_free(&a);
	if (okb)
		rv_llm_response_free(&b);
	return same;
}

static uint64_t scan_rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t
scan_rng(void)
{
	scan_rng_state ^= scan_rng_state << 13;
	scan_rng_state ^= scan_rng_state >> 7;
	scan_rng_state ^= scan_rng_state << 17;
	return scan_rng_state;
}

/* Mutate buf[0..*len) (room for cap bytes) once. */
static void
scan_mutate(char *buf, size_t *len, size_t cap)
{
	static const char *const tokens[] = {
		"\\u", "\\ud83d", "\\udc00", "\\\"", "\"", "\\", "{", "}", "[", "]", ",", ":", "null",
		"\"content\":", "\"choices\":", "\"usage\":", "\"error\":", "\"text\"", "\"type\":",
		"\"message\":", "\"prompt_tokens\":", "-", "0", "1e5", ".5", "\xc3\xa9", "\xff", "\xed\xa0\x80",
		"\x01", " ", "\n", "\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],",
		"12345678901234567890", "\"finish_reason\":\"length\",", "\"cache_read_input_tokens\":",
	};
	size_t		n = *len;
	size_t		at = n ? (size_t) (scan_rng() % n) : 0;

	switch (scan_rng() % 5)
	{
		case 0:					/* flip a byte */
			if (n > 0)
				buf[at] = (char) scan_rng();
			break;
		case 1:					/* delete a run */
			if (n > 0)
			{
				size_t		k = 1 + (size_t) (scan_rng() % 4);

				if (k > n - at)
					k = n - at;
				memmove(buf + at, buf + at + k, n - at - k);
				*len = n - k;
			}
			break;
		case 2:					/* duplicate a run */
		default:
			{
				const char *t = tokens[scan_rng() % (sizeof(tokens) / sizeof(tokens[0]))];
				size_t		k = strlen(t);

				if (n + k < cap)
				{
					memmove(buf + at + k, buf + at, n - at);
					memcpy(buf + at, t, k);
					*len = n + k;
				}
			}
			break;
	}
}

static void
test_scan(void)
{
	size_t		i;
	int			k;
	char		why[256];
	char		desc[128];
	int			bad = 0;
	int			taken = 0;
	int			runs = 0;
	int			depths[] = {1, 10, 40, 58, 59, 60, 61, 62, 63, 64, 70};

	for (i = 0; i < sizeof(scan_cases) / sizeof(scan_cases[0]); i++)
	{
		const ScanCase *c = &scan_cases[i];
		size_t		len = c->len ? c->len : strlen(c->body);
		int			r = llm_diff_reply(c->flavor, c->body, len, why, sizeof(why));

		snprintf(desc, sizeof(desc), "scan case %zu: %s (%.50s)", i,
				 c->fast ? "the scanner takes it, same as json-c" : "the scanner leaves it to json-c",
				 c->body);
		for (k = 0; desc[k] != '\0'; k++)
			if ((unsigned char) desc[k] < 0x20 || (unsigned char) desc[k] >= 0x7F)
				desc[k] = '?';
		if (r != (c->fast ? 1 : 0) && why[0] != '\0')
			printf("# %s\n", why);
		CHECK(r == (c->fast ? 1 : 0), desc);
		snprintf(desc, sizeof(desc), "scan case %zu: rv_llm_parse_response() answers as json-c", i);
		CHECK(scan_same_as_tree(c->flavor, c->body, len), desc);
	}

	/*
	 * json-c's tokener kept a \u high surrogate pending after a body cut
	 * in the \u escape that follows it, and decoded the next body's first
	 * \u escape after it
	 */
	{
		static const char cut[] = "{\"choices\":[{\"message\":{\"content\":\"\\ud83d\\u";
		static const char pair[] = OA_CONTENT("\"\\ud83c\\udf89\"");
		RvLlmResponse r;
		RvError		err;

		rv_error_clear(&err);
		CHECK(!rv_llm_parse_response_tree(OA, cut, strlen(cut), &r, &err),
			  "a body cut after a high surrogate is malformed");
		rv_error_clear(&err);
		CHECK(rv_llm_parse_response_tree(OA, pair, strlen(pair), &r, &err) &&
			  strcmp(r.content, "\xf0\x9f\x8e\x89") == 0,
			  "the next body's surrogate pair is one character (json-c path)");
		rv_llm_response_free(&r);
	}

	/* nesting: up to LLM_SCAN_DEPTH containers in all the scanner takes */
	for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++)
	{
		char	   *b = scan_nested(depths[i]);
		int			r = llm_diff_reply(OA, b, strlen(b), why, sizeof(why));

		snprintf(desc, sizeof(desc), "a member %d containers deep: %s", depths[i],
				 depths[i] + 1 <= LLM_DIFF_SCAN_DEPTH ? "taken" : "left to json-c");
		CHECK(r == (depths[i] + 1 <= LLM_DIFF_SCAN_DEPTH ? 1 : 0), desc);
		CHECK(scan_same_as_tree(OA, b, strlen(b)), "deep nesting: same answer as json-c");
		free(b);
	}

	/* mutations of every case: the scanner never disagrees with json-c */
	for (i = 0; i < sizeof(scan_cases) / sizeof(scan_cases[0]); i++)
	{
		const ScanCase *c = &scan_cases[i];
		size_t		len0 = c->len ? c->len : strlen(c->body);

		for (k = 0; k < 400; k++)
		{
			char		buf[2048];
			size_t		len = len0;
			int			m;
			int			nm = 1 + (int) (scan_rng() % 3);
			int			r;

			if (len0 >= sizeof(buf))
				break;
			memcpy(buf, c->body, len0);
			for (m = 0; m < nm; m++)
				scan_mutate(buf, &len, sizeof(buf));
			r = llm_diff_reply(c->flavor, buf, len, why, sizeof(why));
			runs++;
			if (r == 1)
				taken++;
			if (r < 0 || !scan_same_as_tree(c->flavor, buf, len))
			{
				if (bad++ < 5)
				{
					size_t		b;

					for (b = 0; b < len; b++)
						if ((unsigned char) buf[b] < 0x20 || (unsigned char) buf[b] >= 0x7F)
							buf[b] = '?';
					printf("# mutation of case %zu: %s: %.*s\n", i, why[0] ? why : "answers differ",
						   (int) len, buf);
				}
			}
		}
	}
	snprintf(desc, sizeof(desc), "%d mutated replies: the scanner agrees with json-c", runs);
	CHECK(bad == 0, desc);
	snprintf(desc, sizeof(desc), "the scanner took %d of the %d mutated replies", taken, runs);
	CHECK(taken >= 1000, desc);
}

/* ---- the body writer against the json-c tree builder ---- */

static void
test_body_diff(void)
{
	static const char *const texts[] = {
		"", "Hello", "quote \" backslash \\ slash / </script>", "\b\f\n\r\t \x01\x1f\x7f",
		"h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89", "\xff\xfe invalid \xc0\x80 bytes",
		"{{ input.text }} {\"json\": [1, 2]}",
	};
	static const char *const trees[] = {
		"{\"role\":\"user\",\"content\":\"x\"}",
		"{\"role\":\"assistant\",\"content\":\"a\\u0000b\\n\",\"extra\":[1,-2,3.50,1e5,true,false,null,{}],\"k\\\"\":{}}",
		"{\"big\":18446744073709551615,\"max\":9223372036854775807,\"min\":-9223372036854775808,"
		"\"d\":0.1,\"e\":-0.0,\"f\":1E+2,\"g\":123456789.123456789}",
		"[[[],{}],\"s\",0]",
		"null",
		"\"just a string\"",
		"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0.5}},\"required\":[\"a\"]}",
	};
	static const double temps[] = {0.0, 0.7, 1.0, 0.1 + 0.2, 1e-20, -0.0, 2.5e300};
	char		why[256];
	char		desc[160];
	int			bad = 0;
	int			runs = 0;
	size_t		t;
	size_t		m;
	int			f;
	int			variant;

	for (f = RV_FLAVOR_OPENAI; f <= RV_FLAVOR_ANTHROPIC; f++)
		for (t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
			for (m = 0; m < sizeof(trees) / sizeof(trees[0]); m++)
				for (variant = 0; variant < 8; variant++)
				{
					RvLlmRequest req;
					json_object *msgs = json_object_new_array();
					json_object *tree = json_tokener_parse(trees[m]);
					json_object *schema = NULL;
					json_object *um = json_object_new_object();

					json_object_object_add(um, "role", json_object_new_string("user"));
					json_object_object_add(um, "content", json_object_new_string(texts[t]));
					json_object_array_add(msgs, um);
					json_object_array_add(msgs, json_object_get(tree));
					/* doubles made in C print with json-c's own format */
					json_object_array_add(msgs, json_object_new_double(variant * 0.25 + 1.0 / 3));
					if (variant & 2)
						schema = json_tokener_parse(trees[6]);

					memset(&req, 0, sizeof(req));
					req.flavor = (RvFlavor) f;
					req.model = (variant & 1) ? texts[t] : NULL;
					req.system = (variant & 4) ? texts[t] : NULL;
					req.messages = (variant == 7) ? NULL : (variant == 5 ? tree : msgs);
					req.has_temperature = (variant != 3);
					req.temperature = temps[(t + m + (size_t) variant) % (sizeof(temps) / sizeof(temps[0]))];
					req.max_tokens = (variant & 1) ? 0 : 100 * variant;
					req.output_schema = schema;
					req.schema_name = texts[t];
					runs++;
					if (!llm_diff_body(&req, why, sizeof(why)) && bad++ < 5)
						printf("# flavour %d text %zu tree %zu variant %d: %s\n", f, t, m, variant, why);
					json_object_put(msgs);
					json_object_put(tree);
					json_object_put(schema);
				}
	snprintf(desc, sizeof(desc), "%d request bodies: written the same as by the json-c tree", runs);
	CHECK(bad == 0, desc);

	/* NaN and infinities leave the temperature out; deep trees */
	{
		RvLlmRequest req;
		json_object *msgs = json_object_new_array();
		json_object *deep = json_object_new_array();
		json_object *cur = deep;
		int			k;

		for (k = 0; k < 100; k++)
		{
			json_object *next = json_object_new_object();

			json_object_array_add(cur, next);
			cur = json_object_new_array();
			json_object_object_add(next, "k", cur);
		}
		json_object_array_add(msgs, deep);
		memset(&req, 0, sizeof(req));
		req.model = "m";
		req.messages = msgs;
		req.has_temperature = true;
		req.temperature = NAN;
		CHECK(llm_diff_body(&req, why, sizeof(why)), "NaN temperature: same body");
		req.temperature = INFINITY;
		req.flavor = RV_FLAVOR_ANTHROPIC;
		CHECK(llm_diff_body(&req, why, sizeof(why)), "infinite temperature, 200 levels deep: same body");
		json_object_put(msgs);
	}
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
	test_scan();
	test_body_diff();
	return unit_done("llm");
}
