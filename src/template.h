/*-------------------------------------------------------------------------
 *
 * template.h
 *	  The Jinja-subset template engine used for cell instructions.
 *
 * Pure: no PostgreSQL headers; values are json-c objects; memory is
 * malloc'd and released by the matching free function; errors are returned
 * in an RvError, never raised.
 *
 * Supported: {{ expr }}, {% if %}/{% elif %}/{% else %}/{% endif %},
 * {% for x in expr %}...{% else %}...{% endfor %} (with loop.index,
 * loop.index0, loop.first, loop.last, loop.length), {# comments #},
 * whitespace control with {%- -%} {{- -}}.  Expressions: dotted paths and
 * [index] / ["key"] subscripts, string / number / true / false / none
 * literals, list literals, comparisons (== != < > <= >=), in, not in,
 * and, or, not, parentheses, "is defined" / "is not defined", "~"
 * concatenation, filters (| name or | name(args)): tojson, default, upper,
 * lower, trim, length, join, first, last, string, int, float, round.
 *
 * Names in scope come from the scope object given to render (input,
 * outputs, state, rows, row_count, ...).  A missing name renders as empty
 * and is false in a test, as in Jinja, with one exception: when strict
 * input checking is on, printing "input.<field>" where the input object
 * has no such field (and no default filter applies) is an error naming the
 * field, so a prompt is never sent with a silent gap.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_TEMPLATE_H
#define RV_TEMPLATE_H

#include <json-c/json.h>

#include "rverror.h"

typedef struct RvTemplate RvTemplate;

/*
 * Compile template source text.  Returns NULL on a syntax error, with
 * err->message (e.g. "unexpected end of template, expected \"endif\"" or
 * "unknown filter \"uper\""), err->line/column/position pointing at the
 * offending tag or token.  Never crashes on any byte sequence.
 * Nesting depth is limited (64) and reported as an error beyond that.
 */
extern RvTemplate *rv_template_compile(const char *src, size_t len, RvError *err);

/*
 * Render a compiled template against scope (a json-c object whose keys are
 * the names in scope; may be NULL).  Returns a malloc'd NUL-terminated
 * string, or NULL with err set (missing input field under strict_input,
 * filter applied to a wrong type, output larger than 16 MB, loop over a
 * non-array...).
 *
 * Rendering rules: strings print raw; numbers, booleans print as JSON;
 * null/missing print as empty; arrays and objects print as compact JSON.
 */
extern char *rv_template_render(const RvTemplate *tmpl, json_object *scope,
								bool strict_input, RvError *err);

extern void rv_template_free(RvTemplate *tmpl);

#endif							/* RV_TEMPLATE_H */
