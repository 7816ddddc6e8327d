/*-------------------------------------------------------------------------
 *
 * test_template.c
 *	  Unit tests for the Jinja-subset template engine (src/template.c).
 *
 * Each check compiles a template, renders it against a JSON scope and
 * compares the output, or checks the exact error message, hint and
 * location of a compile or render error.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"
#include "unit.h"

static const char *const SCOPE =
"{\"input\": {\"name\": \"Ann\", \"review_text\": \"Great product\","
" \"score\": 4, \"price\": 2.5, \"tags\": [\"red\", \"green\", \"blue\"],"
" \"empty\": \"\", \"nothing\": null, \"zero\": 0, \"list0\": [],"
" \"obj0\": {}, \"nested\": {\"a\": {\"b\": \"deep\"}},"
" \"uni\": \"h\\u00e9llo w\\u00f6rld\", \"flag\": true, \"padded\": \"  hi  \"},"
" \"outputs\": {\"classify\": {\"label\": \"positive\", \"confidence\": 0.9}},"
" \"state\": {},"
" \"rows\": [{\"id\": 1, \"text\": \"a\"}, {\"id\": 2, \"text\": \"b\"},"
" {\"id\": 3, \"text\": \"c\"}],"
" \"row_count\": 3}";

/*
 * Compile and render src against the JSON scope text (NULL: no scope).
 * Returns the malloc'd output, or NULL with *err filled.
 */
static char *
render_with(const char *src, const char *scope_json, bool strict, RvError *err)
{
	json_object *scope = scope_json ? json_tokener_parse(scope_json) : NULL;
	RvTemplate *t;
	char	   *out = NULL;

	rv_error_clear(err);
	t = rv_template_compile(src, strlen(src), err);
	if (t != NULL)
		out = rv_template_render(t, scope, strict, err);
	rv_template_free(t);
	json_object_put(scope);
	return out;
}

/* Check the non-strict output of src against the standard scope. */
static void
check_render(const char *src, const char *want, const char *desc)
{
	RvError		err;
	char	   *out = render_with(src, SCOPE, false, &err);

	if (out == NULL)
		printf("#   error: %s\n", err.message);
	CHECK_STR(out, want, desc);
	free(out);
}

/* Check the strict output of src against the standard scope. */
static void
check_strict(const char *src, const char *want, const char *desc)
{
	RvError		err;
	char	   *out = render_with(src, SCOPE, true, &err);

	if (out == NULL)
		printf("#   error: %s\n", err.message);
	CHECK_STR(out, want, desc);
	free(out);
}

/* Check that rendering src fails with exactly message msg. */
static void
check_render_error(const char *src, bool strict, const char *msg,
				   const char *desc)
{
	RvError		err;
	char	   *out = render_with(src, SCOPE, strict, &err);

	if (out != NULL)
		printf("#   output: %s\n", out);
	CHECK_STR(out == NULL && err.set ? err.message : "(rendered)", msg, desc);
	free(out);
}

/*
 * Check that compiling src fails with message msg at the given line,
 * column and position (1-based).
 */
static void
check_compile_error(const char *src, const char *msg, int line, int column,
					int position, const char *desc)
{
	RvError		err;
	RvTemplate *t;

	rv_error_clear(&err);
	t = rv_template_compile(src, strlen(src), &err);
	if (t != NULL)
	{
		rv_template_free(t);
		CHECK(false, desc);
		return;
	}
	if (err.line != line || err.column != column || err.position != position)
		printf("#   location: line %d column %d position %d\n",
			   err.line, err.column, err.position);
	CHECK(strcmp(err.message, msg) == 0 && err.line == line &&
		  err.column == column && err.position == position, desc);
	if (strcmp(err.message, msg) != 0)
		printf("#   got:  %s\n#   want: %s\n", err.message, msg);
}

/* A string made of n copies of s followed by mid and m copies of e. */
static char *
repeat3(const char *s, int n, const char *mid, const char *e, int m)
{
	size_t		len = strlen(s) * (size_t) n + strlen(mid) + strlen(e) * (size_t) m;
	char	   *r = malloc(len + 1);
	char	   *p = r;
	int			i;

	for (i = 0; i < n; i++)
		p += sprintf(p, "%s", s);
	p += sprintf(p, "%s", mid);
	for (i = 0; i < m; i++)
		p += sprintf(p, "%s", e);
	return r;
}

/* "{{ " + expr + " }}", freeing expr */
static char *
wrap_output(char *expr)
{
	char	   *r = malloc(strlen(expr) + 7);

	sprintf(r, "{{ %s }}", expr);
	free(expr);
	return r;
}

static void
test_basics(void)
{
	check_render("", "", "empty template");
	check_render("just text, { } %} }}", "just text, { } %} }}", "plain text passes through");
	check_render("Hello {{ input.name }}!", "Hello Ann!", "dotted path");
	check_render("{{ input.nested.a.b }}", "deep", "deep dotted path");
	check_render("{{ rows[1].text }}/{{ rows[-1].id }}/{{ rows.0.id }}", "b/3/1",
				 "array subscripts, negative index, .0");
	check_render("{{ input[\"name\"] }}{{ input['score'] }}", "Ann4", "string subscripts");
	check_render("{{ outputs.classify.label }}", "positive", "outputs path");
	check_render("[{{ nope }}{{ outputs.nope.x }}{{ input.zz }}{{ rows[9] }}]", "[]",
				 "missing names render empty");
	check_render("{{ input.score }} {{ input.price }} {{ row_count }}", "4 2.5 3",
				 "numbers print as JSON");
	check_render("{{ 0.1 + 0.2 }} {{ 1.0 }} {{ 10 / 4 }} {{ 1e20 }} {{ 4 / 2 }}",
				 "0.30000000000000004 1.0 2.5 1e+20 2.0",
				 "computed doubles print in the shortest form");
	check_render("{{ true }} {{ False }} [{{ none }}{{ None }}{{ input.nothing }}]",
				 "true false []", "booleans lower case, null empty");
	check_render("{{ input.tags }} {{ outputs.classify }}",
				 "[\"red\",\"green\",\"blue\"] {\"label\":\"positive\",\"confidence\":0.9}",
				 "arrays and objects as compact JSON");
	check_render("{{ ['a/b', 1, none, true, 2.5,] }}", "[\"a/b\",1,null,true,2.5]",
				 "list literal, no slash escaping, trailing comma");
	check_render("{{ 'it\\'s' }}|{{ \"a\\nb\" }}|{{ \"q\\\"q\" }}|{{ \"\\u00e9\" }}|{{ '\\d' }}",
				 "it's|a\nb|q\"q|\xc3\xa9|\\d", "string literal escapes");
	check_render("{{ \"}}\" }}{{ '%}' }}", "}}%}", "closers inside string literals");
	check_render("{{ -3 }} {{ 007 }} {{ 1.5e3 }}", "-3 7 1500.0", "numeric literals");
}

static void
test_comments_whitespace(void)
{
	check_render("a{# hidden {{ x }} #}b", "ab", "comment");
	check_render("a {#- c -#} b", "ab", "comment with whitespace control");
	check_render("a  {{- \"x\" -}}  b", "axb", "output whitespace control");
	check_render("<ul>\n{%- for t in input.tags %}\n  <li>{{ t }}</li>\n{%- endfor %}\n</ul>",
				 "<ul>\n  <li>red</li>\n  <li>green</li>\n  <li>blue</li>\n</ul>",
				 "block whitespace control in a loop");
	check_render("{% if true -%}\n   yes\n{%- endif %}", "yes", "strip inside if");
	check_render("{% if true %}\n yes\n{% endif %}", "\n yes\n",
				 "whitespace kept without control");
	check_render("x {%+ if true %}y{% endif %}", "x y", "{%+ is accepted");
	check_render("{% raw %}{{ x }} {% if %}{% endraw %}", "{{ x }} {% if %}", "raw block");
	check_render("a {%- raw -%}  {{ y }}  {%- endraw -%} b", "a{{ y }}b",
				 "raw block with whitespace control");
}

static void
test_if(void)
{
	const char *tmpl = "{% if input.score > 3 %}high{% elif input.score > 1 %}mid{% else %}low{% endif %}";

	check_render(tmpl, "high", "if branch");
	check_render("{% if input.score > 5 %}a{% elif input.score >= 4 %}b{% else %}c{% endif %}",
				 "b", "elif branch");
	check_render("{% if input.zz %}a{% elif input.zero %}b{% else %}c{% endif %}", "c",
				 "else branch");
	check_render("{% if input.flag %}{% if input.empty %}x{% else %}y{% endif %}{% endif %}",
				 "y", "nested if");
	check_render("{% if input.zz %}never{% endif %}", "", "if on a missing name");
	check_render("{% for v in [0, 1, '', 'a', [], [0], none, true, false, 0.0, 0.5] %}"
				 "{{ 'T' if v else 'F' }}{% endfor %}",
				 "FTFTFTFTFFT", "truthiness of literals");
	check_render("{{ 'T' if input.obj0 else 'F' }}{{ 'T' if input.nested else 'F' }}"
				 "{{ 'T' if nope else 'F' }}{{ 'T' if input.nothing else 'F' }}",
				 "FTFF", "truthiness of objects, missing and null");
	check_render("{{ 'yes' if false }}|{{ 'a' if input.flag else 'b' }}", "|a",
				 "inline if");
}

static void
test_for(void)
{
	check_render("{% for t in input.tags %}{{ loop.index }}{{ loop.index0 }}{{ t }}"
				 "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}"
				 "{{ loop.length }}{{ loop.revindex }};{% endfor %}",
				 "10redF33;21green32;32blueL31;", "loop variables");
	check_render("{% for x in input.list0 %}x{% else %}empty{% endfor %}", "empty",
				 "for else on an empty array");
	check_render("{% for x in nope %}x{% else %}none{% endfor %}", "none",
				 "for else on a missing name");
	check_render("{% for x in [1] %}{{ x }}{% else %}{% endfor %}", "1",
				 "for with an empty else");
	check_render("{% for r in rows %}{% for t in input.tags %}{{ r.id }}{{ t[0] }}{% endfor %};{% endfor %}",
				 "1r1g1b;2r2g2b;3r3g3b;", "nested loops");
	check_render("{% for a in [1, 2] %}{% for b in [1, 2, 3] %}{{ loop.length }}{% endfor %}"
				 "{{ loop.length }}{% endfor %}",
				 "33323332", "loop refers to the innermost loop");
	check_render("{% for k, v in outputs.classify.items() %}{{ k }}={{ v }};{% endfor %}",
				 "label=positive;confidence=0.9;", "for k, v in obj.items()");
	check_render("{% for k in outputs.classify %}{{ k }},{% endfor %}"
				 "{{ outputs.classify.keys() }}{{ outputs.classify.values() }}",
				 "label,confidence,[\"label\",\"confidence\"][\"positive\",0.9]",
				 "loop over an object's keys, keys(), values()");
	check_render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", "37",
				 "unpacking pairs");
	check_render("{% for k, v in outputs.classify %}{{ k }}:{{ v }} {% endfor %}",
				 "label:positive confidence:0.9 ", "two variables over an object");
	check_render("{% for input in [1] %}{{ input }}{% endfor %}{{ input.name }}", "1Ann",
				 "loop variable shadows, then restores");
	check_render_error("{% for c in input.name %}{% endfor %}", false,
					   "cannot loop over a string", "loop over a string");
	check_render_error("{% for a, b in [[1, 2, 3]] %}{% endfor %}", false,
					   "cannot unpack an array of 3 elements into 2 loop variables",
					   "unpacking error");
}

static void
test_expressions(void)
{
	check_render("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 2 < 3 }} {{ 3 >= 3 }} {{ 3 <= 2 }} {{ 4 > 5 }}",
				 "true true true true false false", "comparisons");
	check_render("{{ 'abc' < 'abd' }} {{ [1, 2] == [1, 2] }} {{ none == none }} {{ nope == none }}",
				 "true true true false", "string, array and null comparisons");
	check_render("{{ 'red' in input.tags }} {{ 'x' not in input.tags }} {{ 'ell' in 'hello' }}"
				 " {{ 'name' in input }} {{ 2 in [1, 2] }} {{ 'a' in nope }}",
				 "true true true true true false", "in and not in");
	check_render("{{ true and false }} {{ none or 'fallback' }} {{ not input.empty }}"
				 " {{ not false and false }} {{ 0 or '' or 'z' }} {{ 1 and 2 }}",
				 "false fallback true false z 2", "and, or, not");
	check_render("{{ (1 + 2) * 3 }} {{ 1 + 2 * 3 }} {{ -(2 + 3) }}", "9 7 -5",
				 "precedence and parentheses");
	check_render("{{ input.name is defined }} {{ input.zz is not defined }}"
				 " {{ input.nothing is none }} {{ input.zz is none }} {{ input.nothing is defined }}",
				 "true true true false true", "is defined / is not defined / is none");
	check_render("{{ 3 is odd }} {{ input.score is number }} {{ input.name is string }}"
				 " {{ rows is sequence }} {{ input is mapping }}",
				 "true true true true true", "other tests");
	check_render("{{ 'n=' ~ input.score ~ ';' ~ none ~ true ~ input.tags }}",
				 "n=4;true[\"red\",\"green\",\"blue\"]", "~ concatenation");
	check_render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 - 5 }} {{ -input.score }}",
				 "3 -4 1 2 -3 -4", "integer arithmetic");
	check_render("{{ 'ab' + 'cd' }} {{ [1] + [2] }} {{ input.price * 2 }}", "abcd [1,2] 5.0",
				 "+ on strings and arrays, float arithmetic");
	check_render("{{ 9223372036854775807 + 1 }}", "9.223372036854776e+18",
				 "integer overflow becomes a float");
	check_render_error("{{ 1 / 0 }}", false, "division by zero", "division by zero");
	check_render_error("{{ 1 < 'a' }}", false, "cannot compare a number with a string",
					   "comparing mismatched types");
	check_render_error("{{ 'a' - 1 }}", false,
					   "cannot apply \"-\" to a string and a number", "arithmetic type error");
}

static void
test_filters(void)
{
	check_render("{{ input.name | tojson }} {{ input.tags|tojson }} {{ 'a\"b/c' | tojson }}"
				 " {{ nope | tojson }} {{ 3 | tojson }}",
				 "\"Ann\" [\"red\",\"green\",\"blue\"] \"a\\\"b/c\" null 3", "tojson");
	check_render("{{ input.zz | default('none given') }}|{{ input.nothing | d('n/a') }}"
				 "|{{ input.empty | default('x') }}|{{ input.empty | default('x', true) }}"
				 "|{{ input.zz | default }}|{{ input.name | default('x') }}",
				 "none given|n/a||x||Ann", "default and d");
	check_render("{{ input.zz | default(value='v') }}{{ input.zero | default('z', boolean=true) }}",
				 "vz", "default with keyword arguments");
	check_render("{{ 'MiXed' | lower }} {{ 'MiXed' | upper }} {{ '\xc3\xa9" "a' | upper }}",
				 "mixed MIXED \xc3\xa9" "A", "lower and upper");
	check_render("[{{ input.padded | trim }}][{{ 'xxhixx' | trim('x') }}]"
				 "[{{ '\xc3\xa9h\xc3\xa9' | trim('\xc3\xa9') }}]",
				 "[hi][hi][h]", "trim, with characters");
	check_render("{{ input.uni | length }} {{ input.tags | length }} {{ outputs.classify | count }}"
				 " {{ nope | length }} {{ '' | length }}",
				 "11 3 2 0 0", "length of strings (UTF-8), arrays, objects");
	check_render("{{ input.tags | join(', ') }}|{{ input.tags | join }}|{{ [1, 2.5, true, none] | join('-') }}"
				 "|{{ input.tags | join(sep='/') }}|{{ rows | join(',', attribute='id') }}",
				 "red, green, blue|redgreenblue|1-2.5-true-|red/green/blue|1,2,3", "join");
	check_render("{{ input.tags | first }} {{ input.tags | last }} {{ '\xc3\xa9z' | first }}"
				 " {{ 'h\xc3\xa9' | last }} [{{ input.list0 | first }}]",
				 "red blue \xc3\xa9 \xc3\xa9 []", "first and last");
	check_render("{{ (input.score | string) ~ 'x' }} {{ [1] | string }} [{{ nope | string }}]",
				 "4x [1] []", "string");
	check_render("{{ '42' | int }} {{ '3.7' | int }} {{ 'abc' | int }} {{ 'abc' | int(-1) }}"
				 " {{ 4.9 | int }} {{ true | int }}",
				 "42 3 0 -1 4 1", "int");
	check_render("{{ '2.5' | float }} {{ 3 | float }} {{ 'x' | float }}", "2.5 3.0 0.0",
				 "float");
	check_render("{{ 3.14159 | round(2) }} {{ 2.5 | round }} {{ 7 | round }}"
				 " {{ 2.7 | round(method='floor') }} {{ 1234 | round(-2) }} {{ 2.45 | round(ndigits=1) }}",
				 "3.14 3.0 7 2.0 1200 2.5", "round");
	check_render("{{ input.name | lower | upper | length }}", "3", "filter chain");
	check_render("{{ -input.score | string }}", "-4", "filters apply after unary minus");
	check_render_error("{{ input.tags | upper }}", false,
					   "filter \"upper\" cannot be applied to an array", "filter type error");
	check_render_error("{{ 5 | length }}", false,
					   "filter \"length\" cannot be applied to a number", "length of a number");
	check_render_error("{{ 2.5 | round('x') }}", false, "round precision must be an integer",
					   "round precision type");
}

static void
test_strict(void)
{
	RvError		err;
	char	   *out;

	out = render_with("Review:\n  {{ input.review_txt }}", SCOPE, true, &err);
	CHECK(out == NULL, "strict: missing input field fails");
	CHECK_STR(err.message, "input has no field \"review_txt\"", "strict: message");
	CHECK_STR(err.hint,
			  "Add a column named \"review_txt\" to the USING query, or write {{ input.review_txt | default('') }} in the template.",
			  "strict: hint");
	CHECK(err.line == 2 && err.column == 6 && err.position == 14, "strict: location");
	free(out);

	out = render_with("{{ input['a b'] }}", SCOPE, true, &err);
	CHECK_STR(out == NULL ? err.hint : "(rendered)",
			  "Add a column named \"a b\" to the USING query, or write {{ input[\"a b\"] | default('') }} in the template.",
			  "strict: subscript form and its hint");
	free(out);

	check_strict("{{ input.review_text }}", "Great product", "strict: present field");
	check_strict("[{{ input.nothing }}]", "[]", "strict: present null field");
	check_strict("[{{ input.zz | default('') }}][{{ input.zz | d('x') | upper }}]", "[][X]",
				 "strict: default protects");
	check_strict("{{ input.zz is defined }} {{ input.zz is not defined }}", "false true",
				 "strict: tests do not fire");
	check_strict("{% if input.zz %}y{% else %}n{% endif %}{% for x in input.zz %}{% endfor %}",
				 "n", "strict: if and for do not fire");
	check_strict("[{{ outputs.x }}{{ state.y }}{{ nope }}{{ input.nested.zz }}]", "[]",
				 "strict: other names render empty");
	check_strict("{% for input in [1] %}{{ input }}{% endfor %}", "1",
				 "strict: a loop variable named input is not checked");
	check_strict("{{ input.zz if input.zz is defined else 'none' }}", "none",
				 "strict: inline if condition does not fire");
	check_render_error("{{ input.zz | upper }}", true, "input has no field \"zz\"",
					   "strict: other filters do not protect");
	check_render_error("{{ 'x' ~ input.zz }}", true, "input has no field \"zz\"",
					   "strict: inside an expression");
	check_render_error("{{ input.zz.deeper }}", true, "input has no field \"zz\"",
					   "strict: a missing first level below which a path continues");
	check_render("[{{ input.review_txt }}]", "[]", "non-strict: missing field is empty");

	out = render_with("{{ input.a }}", NULL, true, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)", "input has no field \"a\"",
			  "strict: no input in scope at all");
	free(out);
	out = render_with("[{{ input.a }}]", NULL, false, &err);
	CHECK_STR(out, "[]", "non-strict: NULL scope renders empty");
	free(out);
}

static void
test_compile_errors(void)
{
	RvError		err;
	RvTemplate *t;

	check_compile_error("Hello {{ name | uper }}", "unknown filter \"uper\"", 1, 17, 17,
						"unknown filter");
	check_compile_error("line1\n{% if x %}\nbody", "unexpected end of template, expected \"endif\"",
						2, 4, 10, "unclosed if");
	check_compile_error("{% for x in xs %}{{ x }}", "unexpected end of template, expected \"endfor\"",
						1, 4, 4, "unclosed for");
	check_compile_error("{% for x in xs %}{% endif %}", "unexpected \"endif\", expected \"endfor\"",
						1, 21, 21, "endif in for");
	check_compile_error("{% if a %}{% endfor %}", "unexpected \"endfor\", expected \"endif\"",
						1, 14, 14, "endfor in if");
	check_compile_error("{% if x %}{% else %}{% else %}{% endif %}",
						"unexpected \"else\", expected \"endif\"", 1, 24, 24, "second else");
	check_compile_error("a\n{% endif %}", "unexpected \"endif\"", 2, 4, 6, "stray endif");
	check_compile_error("ab {{ x", "unclosed \"{{\"", 1, 4, 4, "unclosed {{");
	check_compile_error("ab {% if", "unclosed \"{%\"", 1, 4, 4, "unclosed {%");
	check_compile_error("{# x", "unclosed \"{#\"", 1, 1, 1, "unclosed {#");
	check_compile_error("{% iff x %}", "unknown tag \"iff\"", 1, 4, 4, "unknown tag");
	check_compile_error("{{ 1 + * 2 }}", "syntax error in expression at \"*\"", 1, 8, 8,
						"operator in the wrong place");
	check_compile_error("{{ + 1 }}", "syntax error in expression at \"+\"", 1, 4, 4,
						"unary plus");
	check_compile_error("{{ }}", "syntax error in expression at \"}}\"", 1, 4, 4,
						"empty output");
	check_compile_error("{{ a b }}", "syntax error in expression at \"b\"", 1, 6, 6,
						"two names");
	check_compile_error("{{ a @ b }}", "syntax error in expression at \"@\"", 1, 6, 6,
						"invalid character");
	check_compile_error("{{ a < b < c }}", "syntax error in expression at \"<\"", 1, 10, 10,
						"chained comparison");
	check_compile_error("{{ \"abc }}", "unterminated string literal", 1, 4, 4,
						"unterminated string");
	check_compile_error("{{ x | length(1) }}", "filter \"length\" takes no arguments", 1, 15, 15,
						"argument to a filter without parameters");
	check_compile_error("{{ x | join(foo=1) }}", "unknown argument \"foo\" for filter \"join\"",
						1, 13, 13, "unknown keyword argument");
	check_compile_error("{{ x | join(1, 2, 3) }}", "too many arguments for filter \"join\"",
						1, 19, 19, "too many arguments");
	check_compile_error("{{ x is bogus }}", "unknown test \"bogus\"", 1, 9, 9, "unknown test");
	check_compile_error("{{ x.cycle() }}", "unknown method \"cycle\"", 1, 6, 6, "unknown method");
	check_compile_error("{% for in xs %}{% endfor %}", "syntax error in \"for\" tag at \"in\"",
						1, 8, 8, "for without a variable");
	check_compile_error("{% for x in xs if x %}{% endfor %}", "syntax error in \"for\" tag at \"if\"",
						1, 16, 16, "loop filter is not supported");
	check_compile_error("{% endif x %}", "unexpected \"endif\"", 1, 4, 4, "stray endif with junk");
	check_compile_error("{% if x %}{% endif junk %}", "syntax error in \"endif\" tag at \"junk\"",
						1, 20, 20, "junk after endif");
	check_compile_error("{% %}", "syntax error in tag at \"%}\"", 1, 4, 4, "empty tag");
	check_compile_error("h\xc3\xa9llo\n  w\xc3\xb6rld {{ x | nope }}", "unknown filter \"nope\"",
						2, 16, 22, "location counts UTF-8 characters");
	check_compile_error("{% raw %}abc", "unexpected end of template, expected \"endraw\"",
						1, 4, 4, "unclosed raw");

	rv_error_clear(&err);
	t = rv_template_compile("ab\0cd", 5, &err);
	CHECK(t == NULL && strcmp(err.message, "template contains a null byte") == 0 &&
		  err.position == 3, "null byte is rejected");
	rv_template_free(t);

	t = rv_template_compile("{{ x }", 6, NULL);
	CHECK(t == NULL, "compile with a NULL error record");
}

static void
test_limits(void)
{
	RvError		err;
	char	   *src;
	char	   *out;
	char	   *scope;
	size_t		i;

	src = repeat3("{% if true %}", 64, "x", "{% endif %}", 64);
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out, "x", "64 nested blocks are allowed");
	free(out);
	free(src);

	src = repeat3("{% for i in [1] %}", 65, "x", "{% endfor %}", 65);
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "block nesting exceeds the maximum depth of 64", "65 nested blocks fail");
	free(out);
	free(src);

	src = repeat3("(", 30, "1", ")", 30);
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out, "(((((((((((((((((((((((((((((("
			  "1))))))))))))))))))))))))))))))", "parentheses in text are text");
	free(out);
	free(src);

	src = repeat3("{{ ((((((((((", 1, "1", "))))))))))}}", 1);
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out, "1", "nested parentheses");
	free(out);
	free(src);

	src = wrap_output(repeat3("(", 100, "1", ")", 100));
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "expression nesting exceeds the maximum depth of 64",
			  "deeply nested parentheses fail");
	free(out);
	free(src);

	src = wrap_output(repeat3("not ", 200, "true", "", 0));
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "expression nesting exceeds the maximum depth of 64", "200 nots fail");
	free(out);
	free(src);

	src = wrap_output(repeat3("", 0, "1", " ~ 1", 100));
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "expression nesting exceeds the maximum depth of 64",
			  "long operator chains are bounded");
	free(out);
	free(src);

	src = wrap_output(repeat3("", 0, "1", " ~ 1", 60));
	out = render_with(src, SCOPE, false, &err);
	CHECK(out != NULL && strlen(out) == 61, "a chain of 60 operators is fine");
	free(out);
	free(src);

	/* 1 MB string printed 20 times: over 16 MB */
	scope = malloc(1024 * 1024 + 32);
	strcpy(scope, "{\"big\": \"");
	i = strlen(scope);
	memset(scope + i, 'x', 1024 * 1024);
	strcpy(scope + i + 1024 * 1024, "\"}");
	out = render_with("{% for i in [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20] %}{{ big }}{% endfor %}",
					  scope, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "template output exceeds the limit of 16 MB", "output size limit");
	free(out);
	out = render_with("{% for i in [1,2,3,4,5,6,7,8,9,10] %}{{ big }}{% endfor %}",
					  scope, false, &err);
	CHECK(out != NULL && strlen(out) == 10 * 1024 * 1024, "10 MB output is fine");
	free(out);
	free(scope);

	out = render_with("{% set l = [0,1,2,3,4,5,6,7,8,9] %}", SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)", "unknown tag \"set\"",
			  "set is not supported");
	free(out);

	src = repeat3("{% for a in [0,1,2,3,4,5,6,7,8,9] %}", 9, "", "{% endfor %}", 9);
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "template rendering exceeds the limit of 20000000 steps",
			  "loop work limit (10^9 iterations)");
	free(out);
	free(src);

	src = wrap_output(repeat3("", 0, "'\"\\\\'", " | tojson", 40));
	out = render_with(src, SCOPE, false, &err);
	CHECK_STR(out == NULL ? err.message : "(rendered)",
			  "template output exceeds the limit of 16 MB",
			  "exponential growth of a value is bounded");
	free(out);
	free(src);
}

static void
test_api(void)
{
	RvError		err;
	RvTemplate *t;
	json_object *s1 = json_tokener_parse("{\"input\": {\"x\": 1}}");
	json_object *s2 = json_tokener_parse("{\"input\": {\"x\": \"two\"}}");
	char	   *o1;
	char	   *o2;

	rv_error_clear(&err);
	t = rv_template_compile("x={{ input.x }}", 15, &err);
	o1 = rv_template_render(t, s1, true, &err);
	o2 = rv_template_render(t, s2, true, &err);
	CHECK(o1 != NULL && o2 != NULL && strcmp(o1, "x=1") == 0 && strcmp(o2, "x=two") == 0,
		  "a compiled template renders against several scopes");
	free(o1);
	free(o2);
	o1 = rv_template_render(t, s1, false, NULL);
	CHECK_STR(o1, "x=1", "render with a NULL error record");
	free(o1);
	rv_template_free(t);
	json_object_put(s1);
	json_object_put(s2);

	rv_error_clear(&err);
	CHECK(rv_template_render(NULL, NULL, false, &err) == NULL && err.set,
		  "rendering a NULL template fails");
	rv_template_free(NULL);

	t = rv_template_compile("abc{{ 1 }}", 3, &err);
	o1 = rv_template_render(t, NULL, false, &err);
	CHECK_STR(o1, "abc", "compile honours len");
	free(o1);
	rv_template_free(t);
}

/* The fallback of default is checked strictly only when it is printed. */
static void
test_default_fallback(void)
{
	check_strict("{{ input.review_text | default(input.text) }}", "Great product",
				 "strict: an unused default fallback may be missing");
	check_strict("{{ input.nothing | default(input.name) }}", "Ann",
				 "strict: a used default fallback that exists");
	check_render_error("{{ input.absent | default(input.text) }}", true,
					   "input has no field \"text\"",
					   "strict: a used default fallback that is missing fails");
	check_strict("{{ input.absent | default(input.text | default('none')) }}", "none",
				 "strict: nested defaults");
}

int
main(void)
{
	test_basics();
	test_default_fallback();
	test_comments_whitespace();
	test_if();
	test_for();
	test_expressions();
	test_filters();
	test_strict();
	test_compile_errors();
	test_limits();
	test_api();
	return unit_done("template");
}
