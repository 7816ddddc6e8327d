/*-------------------------------------------------------------------------
 *
 * test_cascade.c
 *	  Unit tests for the cascade loader (src/cascade.c): YAML to JSON with
 *	  positions of errors, the cascade structure and its error messages,
 *	  rv_cascade_is_inline(), and the shipped example cascades.
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stdlib.h>

#include "cascade.h"
#include "jsonschema.h"
#include "unit.h"

/* the error of the last call */
static RvError last;

/* YAML to JSON; returns the compact JSON text (static) or "ERROR". */
static const char *
y2j(const char *yaml)
{
	static char out[4096];
	json_object *j;

	rv_error_clear(&last);
	j = rv_yaml_to_json(yaml, strlen(yaml), &last);
	if (last.set)
		return "ERROR";
	snprintf(out, sizeof(out), "%s",
			 json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(j);
	return out;
}

/* The error message of parsing yaml as a YAML document, or "ok". */
static const char *
yerr(const char *yaml)
{
	return strcmp(y2j(yaml), "ERROR") == 0 ? last.message : "ok";
}

/* Parse a cascade; returns it, or NULL with last set. */
static RvCascade *
parse(const char *yaml)
{
	rv_error_clear(&last);
	return rv_cascade_parse(yaml, strlen(yaml), &last);
}

/* The error message of parsing a cascade, or "ok". */
static const char *
cerr(const char *yaml)
{
	RvCascade  *c = parse(yaml);

	if (c != NULL)
	{
		rv_cascade_free(c);
		return "ok";
	}
	return last.message;
}

/* true when the last error is at line, column */
static bool
at(int line, int column)
{
	if (last.line == line && last.column == column)
		return true;
	printf("#   error at line %d, column %d (position %d); expected %d, %d\n",
		   last.line, last.column, last.position, line, column);
	return false;
}

/* Read a whole file; NULL when missing. */
static char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t) n + 1);
	*len = fread(buf, 1, (size_t) n, f);
	buf[*len] = '\0';
	fclose(f);
	return buf;
}

/* Load a shipped example cascade and check it has the expected cells. */
static RvCascade *
load_example(const char *name)
{
	char		path[256];
	char	   *text;
	size_t		len;
	RvCascade  *c;

	snprintf(path, sizeof(path), "../../cascades/%s.yaml", name);
	text = slurp(path, &len);
	if (text == NULL)
	{
		printf("# cannot read %s\n", path);
		return NULL;
	}
	rv_error_clear(&last);
	c = rv_cascade_parse(text, len, &last);
	if (c == NULL)
		printf("# %s: %s (line %d, column %d)\n", path, last.message, last.line, last.column);
	free(text);
	return c;
}

/* The normalised cascade name, or "ERROR: message". */
static const char *
norm(const char *name)
{
	static char out[RV_CASCADE_NAME_BUF];
	static char msg[RV_ERRMSG_LEN + 8];

	rv_error_clear(&last);
	if (rv_cascade_name_normalize(name, out, &last))
		return out;
	snprintf(msg, sizeof(msg), "ERROR: %s", last.message);
	return msg;
}

#define CELL_OK "cells:\n  - name: a\n    instructions: hi\n"

int
main(void)
{
	RvCascade  *c;
	json_object *j;
	json_object *v;
	char	   *big;
	size_t		i;

	/* ---------------- YAML to JSON ---------------- */
	CHECK_STR(y2j("a: 1\nb: -2.5\nc: yes\nd: ~\ne: hello world\nf: \"123\"\ng: 0x1F\nh: 0o17\n"
				  "i: 017\nj: 1e3\nk: 08\nl: OFF\nm: NULL\nn: ''\no: 1_000\np: +7\nq: True\n"),
			  "{\"a\":1,\"b\":-2.5,\"c\":true,\"d\":null,\"e\":\"hello world\",\"f\":\"123\",\"g\":31,\"h\":15,"
			  "\"i\":15,\"j\":1000.0,\"k\":\"08\",\"l\":false,\"m\":null,\"n\":\"\",\"o\":1000,\"p\":7,\"q\":true}",
			  "yaml: plain scalars resolve to null, bool, int, float, string");
	CHECK_STR(y2j("- !!str 12\n- !!int \"12\"\n- 'yes'\n- |\n  line 1\n  line 2\n- >\n  folded\n  text\n- :x\n- null_x\n"),
			  "[\"12\",12,\"yes\",\"line 1\\nline 2\\n\",\"folded text\\n\",\":x\",\"null_x\"]",
			  "yaml: tags, quoted and block scalars");
	CHECK_STR(y2j("{a: [1, 2, {b: c}], 'd e': null}"), "{\"a\":[1,2,{\"b\":\"c\"}],\"d e\":null}",
			  "yaml: flow collections");
	CHECK_STR(y2j("base: &b {x: 1}\nuse: *b\nlist: &l [a, b]\nagain: *l\n"),
			  "{\"base\":{\"x\":1},\"use\":{\"x\":1},\"list\":[\"a\",\"b\"],\"again\":[\"a\",\"b\"]}",
			  "yaml: aliases are expanded");
	CHECK_STR(y2j("1: one\ntrue: t\n~: n\n"), "{\"1\":\"one\",\"true\":\"t\",\"~\":\"n\"}",
			  "yaml: scalar keys keep their text");
	CHECK_STR(y2j("---\n---\na: 1\n"), "{\"a\":1}", "yaml: an empty first document is skipped");
	CHECK_STR(y2j("# comment\n---\na: 1\n...\n"), "{\"a\":1}", "yaml: explicit document markers");

	rv_error_clear(&last);
	j = rv_yaml_to_json("- .inf\n- -.Inf\n- .NaN\n- 99999999999999999999\n- -9223372036854775808\n", 68, &last);
	CHECK(j != NULL && isinf(json_object_get_double(json_object_array_get_idx(j, 0))) &&
		  json_object_get_double(json_object_array_get_idx(j, 1)) < 0 &&
		  isnan(json_object_get_double(json_object_array_get_idx(j, 2))) &&
		  json_object_is_type(json_object_array_get_idx(j, 3), json_type_double) &&
		  json_object_get_int64(json_object_array_get_idx(j, 4)) == INT64_MIN,
		  "yaml: .inf, .nan, big integers");
	json_object_put(j);

	CHECK_STR(yerr("a: b: c\n"), "could not parse YAML: mapping values are not allowed in this context",
			  "yaml: libyaml error message");
	CHECK(at(1, 5), "yaml: libyaml error position");
	CHECK_STR(yerr("cells:\n  - name: x\n    instructions: \"open\n"),
			  "could not parse YAML: found unexpected end of stream", "yaml: unterminated quote");
	CHECK(at(4, 1), "yaml: unterminated quote position");
	CHECK_STR(last.detail, "While scanning a quoted scalar that started at line 3, column 19.",
			  "yaml: context goes to the detail");
	CHECK_STR(yerr("a:\n\t- b\n"), "could not parse YAML: found character that cannot start any token",
			  "yaml: tab indentation");
	CHECK(at(2, 1), "yaml: tab indentation position");
	CHECK_STR(yerr("a: 1\nb: 2\na: 3\n"), "duplicate key \"a\"", "yaml: duplicate key");
	CHECK(at(3, 1), "yaml: duplicate key position is the second key");
	CHECK_STR(last.detail, "The key first appears at line 1.", "yaml: duplicate key detail");
	CHECK_STR(yerr("x:\n  name: a\n  k: 1\n  name: b\n"), "duplicate key \"name\"", "yaml: nested duplicate key");
	CHECK(at(4, 3), "yaml: nested duplicate key position");
	CHECK_STR(yerr("a: *nope\n"), "could not parse YAML: found undefined alias \"nope\"", "yaml: undefined alias");
	CHECK(at(1, 4), "yaml: undefined alias position");
	CHECK_STR(yerr("a: &x [1, *x]\n"), "could not parse YAML: found undefined alias \"x\"",
			  "yaml: a node cannot contain itself");
	CHECK_STR(yerr("? [a, b]\n: c\n"), "mapping key must be a scalar, not a sequence", "yaml: sequence as key");
	CHECK(at(1, 3), "yaml: sequence key position");
	CHECK_STR(yerr("{a: 1}: 2\n"), "mapping key must be a scalar, not a mapping", "yaml: mapping as key");
	CHECK_STR(yerr("a: 1\n---\nb: 2\n"), "cascade definition contains more than one YAML document",
			  "yaml: two documents");
	CHECK(at(3, 1), "yaml: second document position");
	CHECK_STR(yerr(""), "cascade definition is empty", "yaml: empty input");
	CHECK_STR(yerr("  \n# just a comment\n\n"), "cascade definition is empty", "yaml: only comments");
	CHECK_STR(yerr("a: \"\xff\"\n"), "could not parse YAML: invalid leading UTF-8 octet", "yaml: invalid UTF-8");
	CHECK(at(1, 5), "yaml: invalid UTF-8 position");
	rv_error_clear(&last);
	j = rv_yaml_to_json("a: b\0c", 6, &last);
	CHECK(j == NULL && strcmp(last.message, "could not parse YAML: control characters are not allowed") == 0,
		  "yaml: NUL byte in input");

	/* nesting limit: 64 levels pass, 65 fail */
	big = malloc(200);
	for (i = 0; i < 64; i++)
		big[i] = '[';
	for (i = 64; i < 128; i++)
		big[i] = ']';
	big[128] = '\0';
	CHECK(strcmp(yerr(big), "ok") == 0, "yaml: 64 nested lists are accepted");
	memmove(big + 1, big, 129);
	big[0] = '[';
	big[129] = ']';
	big[130] = '\0';
	CHECK_STR(yerr(big), "YAML document is nested too deeply", "yaml: 65 nested lists are refused");
	CHECK(at(1, 65), "yaml: nesting error position");
	free(big);
	big = malloc(200);
	strcpy(big, "a: &a ");
	for (i = 0; i < 40; i++)
		strcat(big, "[");
	strcat(big, "1");
	for (i = 0; i < 40; i++)
		strcat(big, "]");
	strcat(big, "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]\n");
	CHECK_STR(yerr(big), "YAML document is nested too deeply", "yaml: nesting limit counts alias expansion");
	CHECK(at(1, 45), "yaml: alias nesting error points into the anchored node");
	free(big);

	/* billion laughs */
	CHECK_STR(yerr("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
				   "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
				   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
				   "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
				   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
				   "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
				   "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
				   "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"),
			  "YAML document has too many nodes", "yaml: alias expansion is limited");

	/* a several-megabyte document is handled */
	big = malloc(6 * 1024 * 1024);
	strcpy(big, "cells:\n  - name: big\n    instructions: |\n");
	for (i = strlen(big); i < 6 * 1024 * 1024 - 100;)
	{
		memcpy(big + i, "      lorem ipsum dolor sit amet {{ input.x }}\n", 47);
		i += 47;
	}
	big[i] = '\0';
	rv_error_clear(&last);
	c = rv_cascade_parse(big, i, &last);
	CHECK(c != NULL && strlen(c->cells[0].instructions) > 5000000, "cascade: a 6 MB definition loads");
	rv_cascade_free(c);
	free(big);

	/* ---------------- cascade structure ---------------- */
	c = parse("cascade_id: t\ndescription: d\nmodel: m/x\ninputs_schema: {text: the text}\n"
			  "cells:\n"
			  "  - name: one\n"
			  "    instructions: \"Say {{ input.text }}\"\n"
			  "    system: be brief\n"
			  "    model: other/model\n"
			  "    temperature: 0.5\n"
			  "    max_tokens: 200\n"
			  "    rules: {max_turns: 2}\n"
			  "    candidates: {factor: 3, evaluator_instructions: pick the best}\n"
			  "  - name: two\n"
			  "    prompt: \"{{ outputs.one }}\"\n"
			  "    output_schema: {type: object}\n");
	CHECK(c != NULL && c->ncells == 2 && strcmp(c->cascade_id, "t") == 0 &&
		  strcmp(c->description, "d") == 0 && strcmp(c->model, "m/x") == 0 &&
		  json_object_is_type(c->inputs_schema, json_type_object),
		  "cascade: top-level keys");
	CHECK(c != NULL && strcmp(c->cells[0].name, "one") == 0 &&
		  strcmp(c->cells[0].instructions, "Say {{ input.text }}") == 0 &&
		  strcmp(c->cells[0].system, "be brief") == 0 &&
		  strcmp(c->cells[0].model, "other/model") == 0 &&
		  c->cells[0].has_temperature && c->cells[0].temperature == 0.5 &&
		  c->cells[0].max_tokens == 200 && c->cells[0].max_turns == 2 &&
		  c->cells[0].max_attempts == 1 && c->cells[0].candidates == 3 &&
		  strcmp(c->cells[0].evaluator_instructions, "pick the best") == 0 &&
		  c->cells[0].tmpl_instructions != NULL && c->cells[0].tmpl_system != NULL &&
		  c->cells[0].tmpl_evaluator != NULL && c->cells[0].output_schema == NULL,
		  "cascade: cell keys");
	CHECK(c != NULL && strcmp(c->cells[1].instructions, "{{ outputs.one }}") == 0 &&
		  c->cells[1].max_attempts == 3 && !c->cells[1].has_temperature &&
		  c->cells[1].system == NULL && c->cells[1].model == NULL &&
		  c->cells[1].candidates == 0 && c->cells[1].tmpl_system == NULL &&
		  json_object_is_type(c->cells[1].output_schema, json_type_object),
		  "cascade: prompt alias and defaults (max_attempts 3 with output_schema)");
	rv_cascade_free(c);

	c = parse("phases:\n  - name: p\n    instructions: x\n    takes: {factor: 2}\n    rules: {max_attempts: 5}\n");
	CHECK(c != NULL && c->ncells == 1 && c->cascade_id == NULL && c->cells[0].candidates == 2 &&
		  c->cells[0].max_attempts == 5 && c->cells[0].evaluator_instructions == NULL,
		  "cascade: phases and takes spellings");
	rv_cascade_free(c);

	c = parse("defs:\n  cell: &c {name: shared, instructions: hi, temperature: 1, soundings: {factor: 4}}\n"
			  "cells: [*c]\nunknown_key: [1, 2]\n");
	CHECK(c != NULL && strcmp(c->cells[0].name, "shared") == 0 && c->cells[0].candidates == 4 &&
		  c->cells[0].temperature == 1.0, "cascade: alias as a cell, unknown keys ignored");
	rv_cascade_free(c);

	CHECK_STR(cerr("- a\n- b\n"), "cascade definition must be a YAML mapping", "cascade: root is a list");
	CHECK_STR(cerr("extract_brand"), "cascade definition must be a YAML mapping", "cascade: a bare name");
	CHECK_STR(cerr("cascade_id: x\n"), "cascade has no cells", "cascade: no cells");
	CHECK_STR(last.hint, "Add a \"cells:\" list with at least one cell that has a name and instructions.",
			  "cascade: no cells hint");
	CHECK_STR(cerr("cascade_id: x\ncells: []\n"), "cascade has no cells", "cascade: empty cells");
	CHECK(at(2, 8), "cascade: empty cells position");
	CHECK_STR(cerr("cells:\n"), "cascade has no cells", "cascade: null cells");
	CHECK(at(1, 1), "cascade: null cells position is the key");
	CHECK_STR(cerr("cells: {name: a}\n"), "\"cells\" must be a list of cells", "cascade: cells not a list");
	CHECK_STR(cerr("phases: 3\n"), "\"phases\" must be a list of cells", "cascade: phases not a list");
	CHECK_STR(cerr(CELL_OK "phases: []\n"), "cascade has both \"cells\" and \"phases\"", "cascade: cells and phases");
	CHECK(at(4, 1), "cascade: cells and phases position");
	CHECK_STR(cerr("cascade_id: [1]\n" CELL_OK), "\"cascade_id\" must be a string", "cascade: cascade_id type");
	CHECK(at(1, 13), "cascade: cascade_id position");
	CHECK_STR(cerr("description: 5\n" CELL_OK), "\"description\" must be a string", "cascade: description type");
	CHECK_STR(cerr("model: ''\n" CELL_OK), "\"model\" must be a non-empty string", "cascade: model empty");
	CHECK_STR(cerr("inputs_schema: [a]\n" CELL_OK), "\"inputs_schema\" must be a mapping", "cascade: inputs_schema type");

	CHECK_STR(cerr("cells:\n  - just text\n"), "cell 1 must be a mapping with \"name\" and \"instructions\"",
			  "cascade: cell not a mapping");
	CHECK(at(2, 5), "cascade: cell not a mapping position");
	CHECK_STR(cerr("cells:\n  - instructions: hi\n"), "cell 1: missing \"name\"", "cascade: missing name");
	CHECK(at(2, 5), "cascade: missing name position is the cell");
	CHECK_STR(cerr(CELL_OK "  - name: 12\n    instructions: x\n"), "cell 2: \"name\" must be a non-empty string",
			  "cascade: name not a string");
	CHECK(at(4, 11), "cascade: name position");
	CHECK_STR(cerr("cells:\n  - name: \"\"\n    instructions: x\n"), "cell 1: \"name\" must be a non-empty string",
			  "cascade: empty name");
	CHECK_STR(cerr(CELL_OK "  - name: a\n    instructions: again\n"), "duplicate cell name \"a\"",
			  "cascade: duplicate cell name");
	CHECK(at(4, 11), "cascade: duplicate cell name position");
	CHECK_STR(cerr("cells:\n  - name: classify\n"), "cell \"classify\": missing \"instructions\"",
			  "cascade: missing instructions");
	CHECK_STR(last.hint, "Each cell needs \"instructions\": the prompt template sent to the model.",
			  "cascade: missing instructions hint");
	CHECK_STR(cerr("cells:\n  - name: classify\n    instructions: [a]\n"),
			  "cell \"classify\": \"instructions\" must be a string", "cascade: instructions type");
	CHECK_STR(cerr("cells:\n  - name: classify\n    prompt: 5\n"),
			  "cell \"classify\": \"prompt\" must be a string", "cascade: prompt type");
	CHECK_STR(cerr("cells:\n  - name: c\n    instructions: a\n    prompt: b\n"),
			  "cell \"c\": \"instructions\" and \"prompt\" cannot both be given", "cascade: instructions and prompt");
	CHECK_STR(cerr("cells:\n  - name: c\n    instructions: \"a\\0b\"\n"),
			  "cell \"c\": \"instructions\" must be a string", "cascade: NUL in instructions");
	CHECK_STR(cerr(CELL_OK "    system: {a: 1}\n"), "cell \"a\": \"system\" must be a string", "cascade: system type");
	CHECK_STR(cerr(CELL_OK "    model: 3\n"), "cell \"a\": \"model\" must be a non-empty string", "cascade: cell model type");
	CHECK_STR(cerr(CELL_OK "    output_schema: [1]\n"), "cell \"a\": \"output_schema\" must be a mapping",
			  "cascade: output_schema type");
	CHECK_STR(cerr("cells:\n  - name: classify\n    instructions: x\n    output_schema:\n      type: object\n"
				   "      properties:\n        sentiment: {type: string, enum: []}\n"),
			  "cell \"classify\": output_schema: \"properties.sentiment.enum\" must be a non-empty array",
			  "cascade: output_schema is checked");
	CHECK(at(5, 7), "cascade: output_schema error position");
	CHECK_STR(cerr(CELL_OK "    output_schema: {type: text}\n"),
			  "cell \"a\": output_schema: \"type\" must be one of object, array, string, number, integer, boolean, null or a list of them",
			  "cascade: output_schema bad type");
	CHECK_STR(cerr(CELL_OK "    rules: 3\n"), "cell \"a\": \"rules\" must be a mapping", "cascade: rules type");
	CHECK_STR(cerr(CELL_OK "    rules: {max_attempts: 0}\n"),
			  "cell \"a\": \"rules.max_attempts\" must be an integer between 1 and 20", "cascade: max_attempts 0");
	CHECK(at(4, 27), "cascade: max_attempts position");
	CHECK_STR(cerr(CELL_OK "    rules: {max_attempts: 21}\n"),
			  "cell \"a\": \"rules.max_attempts\" must be an integer between 1 and 20", "cascade: max_attempts 21");
	CHECK_STR(cerr(CELL_OK "    rules: {max_turns: 2.5}\n"),
			  "cell \"a\": \"rules.max_turns\" must be an integer between 1 and 20", "cascade: max_turns fraction");
	CHECK_STR(cerr(CELL_OK "    temperature: 2.5\n"), "cell \"a\": \"temperature\" must be a number between 0 and 2",
			  "cascade: temperature range");
	CHECK_STR(cerr(CELL_OK "    temperature: hot\n"), "cell \"a\": \"temperature\" must be a number between 0 and 2",
			  "cascade: temperature type");
	CHECK_STR(cerr(CELL_OK "    temperature: .nan\n"), "cell \"a\": \"temperature\" must be a number between 0 and 2",
			  "cascade: temperature NaN");
	CHECK_STR(cerr("cells:\n  - name: classify\n    instructions: x\n    max_tokens: 0\n"),
			  "cell \"classify\": \"max_tokens\" must be an integer between 1 and 1000000", "cascade: max_tokens 0");
	CHECK(at(4, 17), "cascade: max_tokens position");
	CHECK_STR(cerr(CELL_OK "    max_tokens: \"100\"\n"),
			  "cell \"a\": \"max_tokens\" must be an integer between 1 and 1000000", "cascade: max_tokens string");
	CHECK_STR(cerr(CELL_OK "    candidates: 3\n"),
			  "cell \"a\": \"candidates\" must be a mapping with \"factor\" and \"evaluator_instructions\"",
			  "cascade: candidates type");
	CHECK_STR(cerr(CELL_OK "    takes: {factor: 17}\n"), "cell \"a\": \"takes.factor\" must be an integer between 1 and 16",
			  "cascade: factor range");
	CHECK_STR(cerr(CELL_OK "    soundings: {evaluator_instructions: pick}\n"),
			  "cell \"a\": \"soundings.factor\" must be an integer between 1 and 16", "cascade: factor missing");
	CHECK_STR(cerr(CELL_OK "    candidates: {factor: 2, evaluator_instructions: [x]}\n"),
			  "cell \"a\": \"candidates.evaluator_instructions\" must be a string", "cascade: evaluator type");
	CHECK_STR(cerr(CELL_OK "    candidates: {factor: 2}\n    takes: {factor: 2}\n"),
			  "cell \"a\": only one of \"candidates\", \"takes\" and \"soundings\" may be given",
			  "cascade: two candidate spellings");
	CHECK(at(5, 12), "cascade: second candidate spelling position");

	/* template errors: the position is the template's place in the file */
	{
		const char *tsrc = "Classify:\n  {{ input.text | uper }}\n";
		RvError		terr;
		RvTemplate *t;

		rv_error_clear(&terr);
		t = rv_template_compile(tsrc, strlen(tsrc), &terr);
		CHECK(t == NULL && terr.line == 2, "template: the engine reports the bad filter on line 2");
		rv_template_free(t);
		CHECK_STR(cerr("cascade_id: x\ncells:\n  - name: classify\n    instructions: |\n"
					   "      Classify:\n        {{ input.text | uper }}\n"),
				  "cell \"classify\": template error in instructions: unknown filter \"uper\"",
				  "cascade: template error message");
		CHECK(at(6, 6 + terr.column), "cascade: template error position in a block scalar");
		CHECK(last.position > 0, "cascade: template error has a character position");

		rv_error_clear(&terr);
		t = rv_template_compile("Classify {{ input.text | uper }}", 32, &terr);
		rv_template_free(t);
		CHECK_STR(cerr("cells:\n  - name: classify\n    instructions: \"Classify {{ input.text | uper }}\"\n"),
				  "cell \"classify\": template error in instructions: unknown filter \"uper\"",
				  "cascade: template error in a quoted scalar");
		CHECK(at(3, 19 + terr.column), "cascade: template error position in a quoted scalar");
	}
	CHECK(strncmp(cerr(CELL_OK "    system: \"{{ x | uper }}\"\n"),
				  "cell \"a\": template error in system: ", 36) == 0, "cascade: template error in system");
	CHECK(strncmp(cerr(CELL_OK "    candidates: {factor: 2, evaluator_instructions: \"{{ x | uper }}\"}\n"),
				  "cell \"a\": template error in evaluator_instructions: ", 51) == 0,
		  "cascade: template error in evaluator_instructions");
	CHECK(strncmp(cerr("cells:\n  - name: a\n    prompt: \"{{ x | uper }}\"\n"),
				  "cell \"a\": template error in prompt: ", 36) == 0, "cascade: template error in prompt");
	CHECK_STR(cerr("cells:\n  - name: a\n    instructions: \"x\n"), "could not parse YAML: found unexpected end of stream",
			  "cascade: YAML errors pass through");
	CHECK_STR(cerr(""), "cascade definition is empty", "cascade: empty");
	CHECK(rv_cascade_parse(NULL, 0, NULL) == NULL, "cascade: NULL text and NULL error record");

	/* ---------------- rv_cascade_is_inline ---------------- */
	CHECK(!rv_cascade_is_inline("extract_brand"), "inline: a name");
	CHECK(!rv_cascade_is_inline("dir/x.yaml"), "inline: a path");
	CHECK(!rv_cascade_is_inline(""), "inline: empty");
	CHECK(rv_cascade_is_inline(CELL_OK), "inline: cells first");
	CHECK(rv_cascade_is_inline("# comment\n\ncascade_id: x\nphases:\n  - name: a\n"), "inline: phases after comments");
	CHECK(rv_cascade_is_inline("\n  cascade_id: x\n  cells:\n    - name: a\n"), "inline: indented document");
	CHECK(!rv_cascade_is_inline("cascade_id: x\nother:\n  cells: []\n"), "inline: nested cells key is not top-level");
	CHECK(rv_cascade_is_inline("{\"cells\": [{\"name\": \"a\", \"instructions\": \"b\"}]}"), "inline: JSON");
	CHECK(rv_cascade_is_inline("{cascade_id: x, cells: [{name: a, instructions: b}]}"), "inline: flow mapping");
	CHECK(!rv_cascade_is_inline("cellsx: 1\n"), "inline: other key");
	CHECK(rv_cascade_is_inline("---\ncells:\n"), "inline: after document start");

	/* ---------------- shipped examples ---------------- */
	c = load_example("extract_brand");
	v = NULL;
	CHECK(c != NULL && strcmp(c->cascade_id, "extract_brand") == 0 && c->ncells == 1 &&
		  c->cells[0].output_schema != NULL && c->cells[0].max_attempts == 3 &&
		  c->cells[0].has_temperature && c->cells[0].temperature == 0 &&
		  json_object_object_get_ex(c->inputs_schema, "product_name", &v) &&
		  strstr(c->cells[0].instructions, "{{ input.product_name }}") != NULL,
		  "example: extract_brand loads");
	if (c != NULL)
	{
		json_object *val;

		val = json_tokener_parse("{\"brand\": \"Apple\"}");
		CHECK(rv_schema_validate(c->cells[0].output_schema, val, &last), "example: extract_brand schema accepts a brand");
		json_object_put(val);
		val = json_tokener_parse("{}");
		rv_error_clear(&last);
		CHECK(!rv_schema_validate(c->cells[0].output_schema, val, &last) &&
			  strcmp(last.message, "$: missing required property \"brand\"") == 0,
			  "example: extract_brand schema requires brand");
		json_object_put(val);
	}
	rv_cascade_free(c);

	c = load_example("classify_sentiment");
	CHECK(c != NULL && strcmp(c->cascade_id, "classify_sentiment") == 0 && c->ncells == 1 &&
		  c->cells[0].max_attempts == 3 && c->cells[0].temperature == 0 &&
		  strstr(c->cells[0].instructions, "input.review_text") != NULL,
		  "example: classify_sentiment loads");
	if (c != NULL)
	{
		json_object *val = json_tokener_parse("{\"sentiment\": \"meh\", \"confidence\": 0.5}");

		rv_error_clear(&last);
		CHECK(!rv_schema_validate(c->cells[0].output_schema, val, &last) &&
			  strncmp(last.message, "$.sentiment: \"meh\" is not one of \"positive\"", 42) == 0,
			  "example: classify_sentiment schema has the enum");
		json_object_put(val);
		val = json_tokener_parse("{\"sentiment\": \"mixed\", \"confidence\": 1.2}");
		rv_error_clear(&last);
		CHECK(!rv_schema_validate(c->cells[0].output_schema, val, &last) &&
			  strcmp(last.message, "$.confidence: 1.2 is greater than the maximum 1") == 0,
			  "example: classify_sentiment schema has the maximum");
		json_object_put(val);
	}
	rv_cascade_free(c);

	c = load_example("summarize_rows");
	CHECK(c != NULL && c->ncells == 1 && strstr(c->cells[0].instructions, "{{ rows | tojson }}") != NULL &&
		  strstr(c->cells[0].instructions, "{{ row_count }}") != NULL,
		  "example: summarize_rows loads");
	rv_cascade_free(c);

	c = load_example("two_step");
	CHECK(c != NULL && c->ncells == 2 && strcmp(c->cells[0].name, "facts") == 0 &&
		  strstr(c->cells[1].instructions, "outputs.facts.") != NULL,
		  "example: two_step loads");
	rv_cascade_free(c);

	/* ---------------- cascade names ---------------- */
	CHECK_STR(norm("extract_brand"), "extract_brand", "name: plain");
	CHECK_STR(norm("extract_brand.yaml"), "extract_brand", "name: .yaml removed");
	CHECK_STR(norm("extract_brand.yml"), "extract_brand", "name: .yml removed");
	CHECK_STR(norm("traits/extract_brand.yaml"), "traits/extract_brand", "name: directory kept");
	CHECK_STR(norm("./traits//extract_brand.yaml"), "traits/extract_brand", "name: . and // dropped");
	CHECK_STR(norm("traits/"), "traits", "name: trailing slash dropped");
	CHECK_STR(norm("x.yaml.yaml"), "x.yaml", "name: only one suffix removed");
	CHECK_STR(norm("X.YAML"), "X.YAML", "name: upper-case suffix and case kept");
	CHECK_STR(norm("v1.2/it's a \"test\" caf\xc3\xa9"), "v1.2/it's a \"test\" caf\xc3\xa9",
			  "name: dots, quotes, spaces and UTF-8 kept");
	CHECK_STR(norm("..x/y..z/.hidden"), "..x/y..z/.hidden", "name: dots inside components kept");
	CHECK_STR(norm(""), "ERROR: cascade name must not be empty", "name: empty refused");
	CHECK_STR(norm("../x"), "ERROR: cascade name \"../x\" is not allowed", "name: .. refused");
	CHECK_STR(norm("a/../../x"), "ERROR: cascade name \"a/../../x\" is not allowed", "name: inner .. refused");
	CHECK_STR(norm("a/.."), "ERROR: cascade name \"a/..\" is not allowed", "name: final .. refused");
	CHECK_STR(norm("/etc/passwd"), "ERROR: cascade name \"/etc/passwd\" is not allowed", "name: absolute refused");
	CHECK_STR(norm("a\\b"), "ERROR: cascade name contains a control character or a backslash",
			  "name: backslash refused");
	CHECK_STR(norm("a\nb"), "ERROR: cascade name contains a control character or a backslash",
			  "name: newline refused");
	CHECK_STR(norm("extract_brand\xc2\xa0"), "ERROR: cascade name contains an invisible or space-like character",
			  "name: trailing no-break space refused");
	CHECK_STR(last.detail, "Character 14 of the name (U+00A0) is not allowed: it would make a name that looks like another one.",
			  "name: the invisible character's position and code point");
	CHECK_STR(norm("extract\xe2\x80\x8b" "brand"), "ERROR: cascade name contains an invisible or space-like character",
			  "name: zero-width space refused");
	CHECK_STR(norm("\xef\xbb\xbfx"), "ERROR: cascade name contains an invisible or space-like character",
			  "name: byte order mark refused");
	CHECK_STR(norm("a\xe2\x80\xae" "b"), "ERROR: cascade name contains an invisible or space-like character",
			  "name: bidirectional override refused");
	CHECK_STR(norm("caf\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5"), "caf\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5",
			  "name: visible non-ASCII letters and symbols kept");
	CHECK_STR(norm(" x"), "ERROR: cascade name \" x\" begins or ends with white space", "name: leading space refused");
	CHECK_STR(norm("x.yaml "), "ERROR: cascade name \"x.yaml \" begins or ends with white space",
			  "name: trailing space refused");
	CHECK_STR(norm(".yaml"), "ERROR: cascade name \".yaml\" is empty once normalised", "name: bare suffix refused");
	CHECK_STR(norm("traits/.yml"), "ERROR: cascade name \"traits/.yml\" is empty once normalised",
			  "name: bare suffix in a directory refused");
	CHECK_STR(norm("./."), "ERROR: cascade name \"./.\" is empty once normalised", "name: only dots refused");
	big = malloc(100001);
	memset(big, 'a', 100000);
	big[100000] = '\0';
	CHECK_STR(norm(big), "ERROR: cascade name is too long", "name: 100000 bytes refused");
	big[RV_CASCADE_NAME_MAX] = '\0';
	CHECK_STR(norm(big), big, "name: exactly the maximum accepted");
	strcpy(big + RV_CASCADE_NAME_MAX, ".yaml");
	CHECK(strlen(norm(big)) == RV_CASCADE_NAME_MAX, "name: the maximum plus a suffix accepted");
	big[RV_CASCADE_NAME_MAX] = 'b';
	big[RV_CASCADE_NAME_MAX + 1] = '\0';
	CHECK_STR(norm(big), "ERROR: cascade name is too long", "name: one byte over refused");
	memset(big, '/', 5000);
	big[5000] = '\0';
	CHECK_STR(norm(big), "ERROR: cascade name \"////////////////////////////////////////////////////////////////"
			  "////////////////////////////////////////////////////////////////////////////////////////////////////////"
			  "////////////////////////////////\" is not allowed", "name: only slashes refused, quoted at most 200 bytes");
	free(big);

	return unit_done("cascade");
}
