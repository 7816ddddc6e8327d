/*-------------------------------------------------------------------------
 *
 * cascade.c
 *	  Loading cascade definitions: the JSON and node tree of a YAML text
 *	  (rvyaml.c) to an RvCascade whose templates are compiled and whose
 *	  output schemas are checked.
 *
 * The cascade structure is read from the JSON and the YAML node tree side
 * by side: the JSON gives the values, the tree gives the positions, so
 * that each error about a cascade can name the line and column it is
 * about.
 *
 * Pure: no PostgreSQL headers, no global state; memory is malloc'd and
 * freed before returning, except the RvCascade, freed by
 * rv_cascade_free().  Errors go to an RvError, never raised.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cascade.h"
#include "rvtext.h"
#include "jsonschema.h"
#include "rvyaml.h"

/* a value looked up in a cascade mapping: JSON value and its YAML nodes */
typedef struct CasVal
{
	bool		present;		/* key given with a non-null value */
	json_object *json;
	RvYamlNode *node;			/* value node, or NULL */
	RvYamlNode *key;			/* key node, or NULL */
} CasVal;

/* ----------------------------------------------------------------
 *		JSON and node tree to an RvCascade
 * ----------------------------------------------------------------
 */

/*
 * Look up key in a cascade mapping given as its JSON (jmap) and its node
 * (nmap).  A key with a null value counts as absent but keeps its nodes
 * for error positions.
 */
static void
cas_get(json_object *jmap, const RvYamlNode *nmap, const char *key, CasVal *out)
{
	int			i;

	memset(out, 0, sizeof(CasVal));
	if (json_object_object_get_ex(jmap, key, &out->json))
		out->present = out->json != NULL;
	if (nmap == NULL || nmap->kind != RV_YAML_MAPPING)
		return;
	for (i = 0; i + 1 < nmap->nitems; i += 2)
	{
		if (strcmp(nmap->items[i]->value, key) == 0)
		{
			out->key = nmap->items[i];
			out->node = nmap->items[i + 1];
			return;
		}
	}
}

/*
 * The node to point at for an error about v: its value when given, else
 * its key (for "key:" with nothing after it), else fallback.
 */
static const RvYamlNode *
cas_where(const CasVal *v, const RvYamlNode *fallback)
{
	if (v->node != NULL && (v->present || v->key == NULL))
		return v->node;
	if (v->key != NULL)
		return v->key;
	return fallback;
}

/*
 * Copy a string value.  Returns false when v is present but not a string
 * (or holds a NUL byte); *out stays NULL when v is absent.
 */
static bool
cas_string(const CasVal *v, char **out, RvError *err)
{
	const char *s;
	int			n;

	*out = NULL;
	if (!v->present)
		return true;
	if (!json_object_is_type(v->json, json_type_string))
		return false;
	s = json_object_get_string(v->json);
	n = json_object_get_string_len(v->json);
	if (strlen(s) != (size_t) n)
		return false;
	*out = strdup(s);
	if (*out == NULL)
	{
		rv_error_set(err, "out of memory");
		return false;
	}
	return true;
}

/* Read an integer (or integral number) in [lo, hi] from v into *out. */
static bool
cas_int_in(const CasVal *v, int lo, int hi, int *out)
{
	if (json_object_is_type(v->json, json_type_int))
	{
		int64_t		i = json_object_get_int64(v->json);

		if (i < lo || i > hi)
			return false;
		*out = (int) i;
		return true;
	}
	if (json_object_is_type(v->json, json_type_double))
	{
		double		d = json_object_get_double(v->json);

		if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
			return false;
		*out = (int) d;
		return true;
	}
	return false;
}

/* Read a finite number in [lo, hi] from v into *out. */
static bool
cas_number_in(const CasVal *v, double lo, double hi, double *out)
{
	double		d;

	if (!json_object_is_type(v->json, json_type_int) &&
		!json_object_is_type(v->json, json_type_double))
		return false;
	d = json_object_get_double(v->json);
	if (!isfinite(d) || d < lo || d > hi)
		return false;
	*out = d;
	return true;
}

/*
 * Point err at the place of a template error: the YAML node of the
 * template plus the template's own line and column.  For block scalars
 * (| and >) the template's line n is n lines below the indicator; for a
 * one-line scalar the column is offset from the node's start.  Otherwise
 * the node's start is used.
 */
static void
cas_template_loc(RvError *err, const RvYamlNode *node, const RvError *terr,
				 const char *text, size_t len)
{
	int			tline = terr->line;
	int			tcol = terr->column > 0 ? terr->column : 1;

	if (node == NULL)
		return;
	rv_yaml_mark_loc(err, &node->start);
	if (tline <= 0)
		return;
	if (node->style == YAML_LITERAL_SCALAR_STYLE || node->style == YAML_FOLDED_SCALAR_STYLE)
	{
		int			line = (int) node->start.line + 1 + tline;
		size_t		off = rv_yaml_line_offset(text, len, (int) node->start.line + 2);
		int			indent = 0;

		/* the block's indentation is that of its first non-blank line */
		while (off < len)
		{
			size_t		j = off;

			while (j < len && text[j] == ' ')
				j++;
			if (j < len && text[j] != '\n' && text[j] != '\r')
			{
				indent = (int) (j - off);
				break;
			}
			while (j < len && text[j] != '\n')
				j++;
			off = j + 1;
		}
		rv_yaml_set_loc(err, text, len, line, indent + tcol);
	}
	else if (node->start.line == node->end.line && tline == 1)
	{
		int			quote = (node->style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
							 node->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE) ? 1 : 0;

		rv_yaml_set_loc(err, text, len, (int) node->start.line + 1,
					(int) node->start.column + 1 + quote + tcol - 1);
	}
}

/*
 * Compile the template src found at node, for the cell labelled label and
 * the key what.  On a template error, records
 * "<label>: template error in <what>: <message>" at the template's place
 * in the YAML text.
 */
static bool
cas_compile(const char *label, const char *what, const char *src,
			const RvYamlNode *node, const char *text, size_t len,
			RvTemplate **out, RvError *err)
{
	RvError		terr;

	rv_error_clear(&terr);
	*out = rv_template_compile(src, strlen(src), &terr);
	if (*out != NULL)
		return true;
	if (err->set)
		return false;
	rv_error_set(err, "%s: template error in %s: %s", label, what,
				 terr.set ? terr.message : "invalid template");
	if (terr.detail[0] != '\0')
		rv_error_detail(err, "%s", terr.detail);
	if (terr.hint[0] != '\0')
		rv_error_hint(err, "%s", terr.hint);
	cas_template_loc(err, node, &terr, text, len);
	return false;
}

/* Context for reading one cascade. */
typedef struct CasBuild
{
	RvCascade  *cascade;
	const char *text;
	size_t		len;
	RvError    *err;
	int		   *name_head;		/* hash of cell names: first cell per bucket */
	int		   *name_next;		/* next cell in the same bucket, or -1 */
	int			nbuckets;
} CasBuild;

/* Bucket of a cell name in the CasBuild name hash. */
static int
cas_name_bucket(const CasBuild *b, const char *name)
{
	unsigned	h = 5381;

	while (*name)
		h = h * 33 + (unsigned char) *name++;
	return (int) (h % (unsigned) b->nbuckets);
}

/*
 * Read the candidates block of a cell (spelled candidates, takes or
 * soundings): factor (1..16) and evaluator_instructions.
 */
static bool
cas_build_candidates(CasBuild *b, RvCell *cell, const char *label,
					 const CasVal *cv, const char *spelled, const RvYamlNode *ncell)
{
	CasVal		v;

	if (!json_object_is_type(cv->json, json_type_object))
	{
		rv_yaml_error(b->err, cas_where(cv, ncell), "%s: \"%s\" must be a mapping with \"factor\" and \"evaluator_instructions\"",
				  label, spelled);
		return false;
	}
	cas_get(cv->json, cv->node, "factor", &v);
	if (!v.present || !cas_int_in(&v, 1, 16, &cell->candidates))
	{
		rv_yaml_error(b->err, cas_where(&v, cv->node), "%s: \"%s.factor\" must be an integer between 1 and 16",
				  label, spelled);
		return false;
	}
	cas_get(cv->json, cv->node, "evaluator_instructions", &v);
	if (!cas_string(&v, &cell->evaluator_instructions, b->err))
	{
		rv_yaml_error(b->err, cas_where(&v, cv->node), "%s: \"%s.evaluator_instructions\" must be a string",
				  label, spelled);
		return false;
	}
	if (cell->evaluator_instructions != NULL &&
		!cas_compile(label, "evaluator_instructions", cell->evaluator_instructions,
					 v.node, b->text, b->len, &cell->tmpl_evaluator, b->err))
		return false;
	return true;
}

/* The name of cell i, unique in the cascade; label becomes "cell \"name\"". */
static bool
cas_cell_name(CasBuild *b, int i, json_object *jcell, const RvYamlNode *ncell,
			  char *label, size_t labelsize)
{
	RvCell	   *cell = &b->cascade->cells[i];
	RvError    *err = b->err;
	CasVal		v;
	int			bucket;
	int			k;

	/* name */
	cas_get(jcell, ncell, "name", &v);
	if (!v.present)
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: missing \"name\"", label);
		rv_error_hint(err, "Each cell needs a \"name\"; later cells refer to its output as outputs.<name>.");
		return false;
	}
	if (!cas_string(&v, &cell->name, err) || cell->name[0] == '\0')
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: \"name\" must be a non-empty string", label);
		return false;
	}
	snprintf(label, labelsize, "cell \"%.200s%s\"", cell->name,
			 strlen(cell->name) > 200 ? "..." : "");
	bucket = cas_name_bucket(b, cell->name);
	for (k = b->name_head[bucket]; k >= 0; k = b->name_next[k])
	{
		if (strcmp(b->cascade->cells[k].name, cell->name) == 0)
		{
			rv_yaml_error(err, cas_where(&v, ncell), "duplicate cell name \"%.200s\"", cell->name);
			rv_error_detail(err, "Cell %d has the same name; names must be unique because later cells refer to outputs.<name>.",
							k + 1);
			return false;
		}
	}
	b->name_next[i] = b->name_head[bucket];
	b->name_head[bucket] = i;

	return true;
}

/* instructions (or its alias prompt) and system, compiled as templates; model. */
static bool
cas_cell_prompts(CasBuild *b, RvCell *cell, json_object *jcell, const RvYamlNode *ncell,
			  const char *label)
{
	RvError    *err = b->err;
	CasVal		v;
	CasVal		prompt;
	const char *instr_key = "instructions";

	/* instructions, or its alias prompt */
	cas_get(jcell, ncell, "instructions", &v);
	cas_get(jcell, ncell, "prompt", &prompt);
	if (v.present && prompt.present)
	{
		rv_yaml_error(err, cas_where(&prompt, ncell), "%s: \"instructions\" and \"prompt\" cannot both be given", label);
		rv_error_detail(err, "\"prompt\" is another spelling of \"instructions\".");
		return false;
	}
	if (!v.present && prompt.present)
	{
		v = prompt;
		instr_key = "prompt";
	}
	if (!v.present)
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: missing \"instructions\"", label);
		rv_error_hint(err, "Each cell needs \"instructions\": the prompt template sent to the model.");
		return false;
	}
	if (!cas_string(&v, &cell->instructions, err))
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: \"%s\" must be a string", label, instr_key);
		return false;
	}
	if (!cas_compile(label, instr_key, cell->instructions, v.node, b->text, b->len,
					 &cell->tmpl_instructions, err))
		return false;

	/* system */
	cas_get(jcell, ncell, "system", &v);
	if (!cas_string(&v, &cell->system, err))
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: \"system\" must be a string", label);
		return false;
	}
	if (cell->system != NULL &&
		!cas_compile(label, "system", cell->system, v.node, b->text, b->len,
					 &cell->tmpl_system, err))
		return false;

	/* model */
	cas_get(jcell, ncell, "model", &v);
	if (!cas_string(&v, &cell->model, err) || (cell->model != NULL && cell->model[0] == '\0'))
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: \"model\" must be a non-empty string", label);
		return false;
	}

	return true;
}

/* output_schema: a JSON Schema the reply must match (three attempts by default). */
static bool
cas_cell_schema(CasBuild *b, RvCell *cell, json_object *jcell, const RvYamlNode *ncell,
			  const char *label)
{
	RvError    *err = b->err;
	CasVal		v;

	/* output_schema */
	cas_get(jcell, ncell, "output_schema", &v);
	if (v.present)
	{
		RvError		serr;

		if (!json_object_is_type(v.json, json_type_object))
		{
			rv_yaml_error(err, cas_where(&v, ncell), "%s: \"output_schema\" must be a mapping", label);
			rv_error_hint(err, "Write a JSON Schema, for example {type: object, properties: {answer: {type: string}}, required: [answer]}.");
			return false;
		}
		rv_error_clear(&serr);
		if (!rv_schema_check(v.json, &serr))
		{
			rv_yaml_error(err, cas_where(&v, ncell), "%s: output_schema: %s", label, serr.message);
			if (serr.detail[0] != '\0')
				rv_error_detail(err, "%s", serr.detail);
			if (serr.hint[0] != '\0')
				rv_error_hint(err, "%s", serr.hint);
			return false;
		}
		/* what is sent is the current form of draft-4 keywords */
		rv_schema_normalize(v.json);
		cell->output_schema = v.json;
		cell->max_attempts = 3;
	}

	return true;
}

/* rules: max_attempts, max_turns, grow_max_tokens. */
static bool
cas_cell_rules(CasBuild *b, RvCell *cell, json_object *jcell, const RvYamlNode *ncell,
			  const char *label)
{
	RvError    *err = b->err;
	CasVal		v;
	CasVal		rules;

	/* rules */
	cas_get(jcell, ncell, "rules", &rules);
	if (rules.present)
	{
		if (!json_object_is_type(rules.json, json_type_object))
		{
			rv_yaml_error(err, cas_where(&rules, ncell), "%s: \"rules\" must be a mapping", label);
			return false;
		}
		cas_get(rules.json, rules.node, "max_attempts", &v);
		if (v.present && !cas_int_in(&v, 1, 20, &cell->max_attempts))
		{
			rv_yaml_error(err, cas_where(&v, rules.node), "%s: \"rules.max_attempts\" must be an integer between 1 and 20", label);
			return false;
		}
		cas_get(rules.json, rules.node, "max_turns", &v);
		if (v.present && !cas_int_in(&v, 1, 20, &cell->max_turns))
		{
			rv_yaml_error(err, cas_where(&v, rules.node), "%s: \"rules.max_turns\" must be an integer between 1 and 20", label);
			return false;
		}
		/* grow_max_tokens: true (twice the cap) or the larger cap itself */
		cas_get(rules.json, rules.node, "grow_max_tokens", &v);
		if (v.present)
		{
			if (json_object_is_type(v.json, json_type_boolean))
				cell->grow_max_tokens = json_object_get_boolean(v.json) ? -1 : 0;
			else if (!cas_int_in(&v, 1, 1000000, &cell->grow_max_tokens))
			{
				rv_yaml_error(err, cas_where(&v, rules.node), "%s: \"rules.grow_max_tokens\" must be true, false or an integer between 1 and 1000000", label);
				return false;
			}
		}
	}

	return true;
}

/* temperature and max_tokens. */
static bool
cas_cell_sampling(CasBuild *b, RvCell *cell, json_object *jcell, const RvYamlNode *ncell,
			  const char *label)
{
	RvError    *err = b->err;
	CasVal		v;

	/* temperature */
	cas_get(jcell, ncell, "temperature", &v);
	if (v.present)
	{
		if (!cas_number_in(&v, 0.0, 2.0, &cell->temperature))
		{
			rv_yaml_error(err, cas_where(&v, ncell), "%s: \"temperature\" must be a number between 0 and 2", label);
			return false;
		}
		cell->has_temperature = true;
	}

	/* max_tokens */
	cas_get(jcell, ncell, "max_tokens", &v);
	if (v.present && !cas_int_in(&v, 1, 1000000, &cell->max_tokens))
	{
		rv_yaml_error(err, cas_where(&v, ncell), "%s: \"max_tokens\" must be an integer between 1 and 1000000", label);
		return false;
	}

	return true;
}

/* candidates, also spelled takes or soundings (one of them). */
static bool
cas_cell_candidates(CasBuild *b, RvCell *cell, json_object *jcell, const RvYamlNode *ncell,
			  const char *label)
{
	RvError    *err = b->err;
	CasVal		v;
	bool		found_candidates = false;
	int			k;
	static const char *const cand_keys[] = {"candidates", "takes", "soundings"};

	/* candidates, also spelled takes or soundings */
	for (k = 0; k < 3; k++)
	{
		cas_get(jcell, ncell, cand_keys[k], &v);
		if (!v.present)
			continue;
		if (found_candidates)
		{
			rv_yaml_error(err, cas_where(&v, ncell), "%s: only one of \"candidates\", \"takes\" and \"soundings\" may be given", label);
			return false;
		}
		found_candidates = true;
		if (!cas_build_candidates(b, cell, label, &v, cand_keys[k], ncell))
			return false;
	}
	return true;
}

/*
 * Read the i-th cell (0-based) from its JSON jcell and node ncell into
 * cascade->cells[i], checking types and ranges and compiling templates.
 * The keys are read in a fixed order, so the first error reported is
 * the same for the same definition.
 */
static bool
cas_build_cell(CasBuild *b, int i, json_object *jcell, const RvYamlNode *ncell)
{
	RvCell	   *cell = &b->cascade->cells[i];
	char		label[300];

	cell->max_attempts = 1;
	cell->max_turns = 1;

	if (!json_object_is_type(jcell, json_type_object))
	{
		rv_yaml_error(b->err, ncell, "cell %d must be a mapping with \"name\" and \"instructions\"", i + 1);
		return false;
	}
	snprintf(label, sizeof(label), "cell %d", i + 1);
	return cas_cell_name(b, i, jcell, ncell, label, sizeof(label)) &&
		cas_cell_prompts(b, cell, jcell, ncell, label) &&
		cas_cell_schema(b, cell, jcell, ncell, label) &&
		cas_cell_rules(b, cell, jcell, ncell, label) &&
		cas_cell_sampling(b, cell, jcell, ncell, label) &&
		cas_cell_candidates(b, cell, jcell, ncell, label);
}

/*
 * Read the cascade from the document's JSON root and node tree: the
 * top-level keys, then each cell.  Returns false with err set.
 */
static bool
cas_build(CasBuild *b, const RvYamlNode *nroot)
{
	RvCascade  *c = b->cascade;
	RvError    *err = b->err;
	json_object *root = c->root;
	CasVal		v;
	CasVal		phases;
	const char *cells_key = "cells";
	int			n,
				i;

	if (!json_object_is_type(root, json_type_object))
	{
		rv_yaml_error(err, nroot, "cascade definition must be a YAML mapping");
		rv_error_hint(err, "A cascade has keys such as \"cascade_id:\" and \"cells:\".");
		return false;
	}

	cas_get(root, nroot, "cascade_id", &v);
	if (!cas_string(&v, &c->cascade_id, err))
	{
		rv_yaml_error(err, cas_where(&v, nroot), "\"cascade_id\" must be a string");
		return false;
	}
	cas_get(root, nroot, "description", &v);
	if (!cas_string(&v, &c->description, err))
	{
		rv_yaml_error(err, cas_where(&v, nroot), "\"description\" must be a string");
		return false;
	}
	cas_get(root, nroot, "model", &v);
	if (!cas_string(&v, &c->model, err) || (c->model != NULL && c->model[0] == '\0'))
	{
		rv_yaml_error(err, cas_where(&v, nroot), "\"model\" must be a non-empty string");
		return false;
	}
	cas_get(root, nroot, "inputs_schema", &v);
	if (v.present)
	{
		if (!json_object_is_type(v.json, json_type_object))
		{
			rv_yaml_error(err, cas_where(&v, nroot), "\"inputs_schema\" must be a mapping");
			rv_error_hint(err, "Map each input name to its description, for example {product_name: \"the product title\"}.");
			return false;
		}
		c->inputs_schema = v.json;
	}

	cas_get(root, nroot, "cells", &v);
	cas_get(root, nroot, "phases", &phases);
	if (v.key != NULL && phases.key != NULL)
	{
		rv_yaml_error(err, phases.key, "cascade has both \"cells\" and \"phases\"");
		rv_error_detail(err, "\"phases\" is another spelling of \"cells\".");
		return false;
	}
	if (v.key == NULL && phases.key != NULL)
	{
		v = phases;
		cells_key = "phases";
	}
	if (v.present && !json_object_is_type(v.json, json_type_array))
	{
		rv_yaml_error(err, cas_where(&v, nroot), "\"%s\" must be a list of cells", cells_key);
		rv_error_hint(err, "Add a \"cells:\" list with at least one cell that has a name and instructions.");
		return false;
	}
	n = v.present ? (int) json_object_array_length(v.json) : 0;
	if (n == 0)
	{
		rv_yaml_error(err, cas_where(&v, nroot), "cascade has no cells");
		rv_error_hint(err, "Add a \"cells:\" list with at least one cell that has a name and instructions.");
		return false;
	}
	c->cells = calloc((size_t) n, sizeof(RvCell));
	b->nbuckets = n;
	b->name_head = malloc((size_t) n * sizeof(int));
	b->name_next = malloc((size_t) n * sizeof(int));
	if (c->cells == NULL || b->name_head == NULL || b->name_next == NULL)
	{
		rv_error_set(err, "out of memory");
		return false;
	}
	c->ncells = n;
	for (i = 0; i < n; i++)
		b->name_head[i] = -1;
	for (i = 0; i < n; i++)
	{
		const RvYamlNode *ncell = NULL;

		if (v.node != NULL && v.node->kind == RV_YAML_SEQUENCE && i < v.node->nitems)
			ncell = v.node->items[i];
		if (!cas_build_cell(b, i, json_object_array_get_idx(v.json, i), ncell))
			return false;
	}
	return true;
}

/*
 * Parse and check a cascade definition.  Returns a malloc'd RvCascade, or
 * NULL with err set (message, and line/column/position in text when the
 * error is about a place in it).
 */
RvCascade *
rv_cascade_parse(const char *text, size_t len, RvError *err)
{
	RvError		local;
	RvYamlDoc  *doc;
	json_object *root;
	CasBuild	b;
	bool		ok;

	if (err == NULL)
	{
		rv_error_clear(&local);
		err = &local;
	}
	if (text == NULL)
	{
		text = "";
		len = 0;
	}
	doc = rv_yaml_load(text, len, &root, err);
	if (doc == NULL)
		return NULL;
	b.cascade = calloc(1, sizeof(RvCascade));
	if (b.cascade == NULL)
	{
		json_object_put(root);
		rv_yaml_doc_free(doc);
		rv_error_set(err, "out of memory");
		return NULL;
	}
	b.cascade->root = root;
	b.text = text;
	b.len = len;
	b.err = err;
	b.name_head = NULL;
	b.name_next = NULL;
	b.nbuckets = 0;
	ok = cas_build(&b, rv_yaml_doc_root(doc));
	free(b.name_head);
	free(b.name_next);
	rv_yaml_doc_free(doc);
	if (!ok)
	{
		rv_cascade_free(b.cascade);
		return NULL;
	}
	return b.cascade;
}

/* Free a cascade, its cells, templates and JSON root.  NULL is allowed. */
void
rv_cascade_free(RvCascade *cascade)
{
	int			i;

	if (cascade == NULL)
		return;
	for (i = 0; cascade->cells != NULL && i < cascade->ncells; i++)
	{
		RvCell	   *cell = &cascade->cells[i];

		free(cell->name);
		free(cell->instructions);
		free(cell->system);
		free(cell->model);
		free(cell->evaluator_instructions);
		if (cell->tmpl_instructions)
			rv_template_free(cell->tmpl_instructions);
		if (cell->tmpl_system)
			rv_template_free(cell->tmpl_system);
		if (cell->tmpl_evaluator)
			rv_template_free(cell->tmpl_evaluator);
	}
	free(cascade->cells);
	free(cascade->cascade_id);
	free(cascade->description);
	free(cascade->model);
	json_object_put(cascade->root);
	free(cascade);
}

/*
 * Does the line at p (indent spaces already skipped) start with the key
 * cells or phases, bare or quoted, followed by ':' and a space or the end
 * of the line?
 */
static bool
cas_is_cells_key(const char *p)
{
	char		quote = 0;
	size_t		n;

	if (*p == '"' || *p == '\'')
		quote = *p++;
	if (strncmp(p, "cells", 5) == 0)
		n = 5;
	else if (strncmp(p, "phases", 6) == 0)
		n = 6;
	else
		return false;
	p += n;
	if (quote)
	{
		if (*p != quote)
			return false;
		p++;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != ':')
		return false;
	p++;
	return *p == '\0' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' ||
		(quote && (*p == '[' || *p == '{'));
}

/*
 * True when text looks like an inline cascade definition: a line at the
 * indentation of the first significant line starts with a cells: or
 * phases: key, or the text is a flow mapping ({...}) with such a key.
 */
bool
rv_cascade_is_inline(const char *text)
{
	const char *p = text;
	int			base = -1;

	if (text == NULL)
		return false;
	while (*p != '\0')
	{
		const char *q = p;
		int			indent;

		while (*q == ' ')
			q++;
		indent = (int) (q - p);
		if (*q == '\0' || *q == '\n' || *q == '\r' || *q == '#' ||
			(base < 0 && strncmp(q, "---", 3) == 0 &&
			 (q[3] == '\0' || q[3] == '\n' || q[3] == '\r' || q[3] == ' ')))
		{
			/* blank line, comment or document start */
		}
		else if (base < 0 && *q == '{')
		{
			/* a flow mapping: look for the key anywhere in it */
			const char *s;

			for (s = q; *s != '\0'; s++)
			{
				if ((s[0] == 'c' || s[0] == 'p') &&
					(s == q || !isalnum((unsigned char) s[-1])) &&
					cas_is_cells_key(s))
					return true;
				if ((s[0] == '"' || s[0] == '\'') && cas_is_cells_key(s))
					return true;
			}
			return false;
		}
		else
		{
			if (base < 0)
				base = indent;
			if (indent == base && cas_is_cells_key(q))
				return true;
		}
		while (*p != '\0' && *p != '\n')
			p++;
		if (*p == '\n')
			p++;
	}
	return false;
}

/*
 * How many bytes of name to quote in an error: at most RV_CASCADE_NAME_MAX,
 * never cutting a UTF-8 sequence.
 */
static int
cas_quote_len(const char *name)
{
	size_t		n = strlen(name);

	if (n <= RV_CASCADE_NAME_MAX)
		return (int) n;
	n = RV_CASCADE_NAME_MAX;
	while (n > 0 && (((unsigned char) name[n]) & 0xC0) == 0x80)
		n--;
	return (int) n;
}

/*
 * The length of the UTF-8 sequence at p when it encodes a character that
 * shows as nothing or as a space (no-break and typographic spaces,
 * zero-width characters, bidirectional controls, C1 controls, the byte
 * order mark), else 0.  Such a character makes a name look like another:
 * "extract_brand" followed by U+00A0, or with U+200B inside.
 */
static int
cas_invisible_len(const unsigned char *p)
{
	if (p[0] == 0xC2 && ((p[1] >= 0x80 && p[1] <= 0xA0) || p[1] == 0xAD))
		return 2;				/* C1 controls, U+00A0, U+00AD */
	if (p[0] == 0xE1 && ((p[1] == 0x9A && p[2] == 0x80) || (p[1] == 0xA0 && p[2] == 0x8E)))
		return 3;				/* U+1680, U+180E */
	if (p[0] == 0xE2 && p[1] == 0x80 &&
		((p[2] >= 0x80 && p[2] <= 0x8F) || (p[2] >= 0xA8 && p[2] <= 0xAF)))
		return 3;				/* U+2000-U+200F, U+2028-U+202F */
	if (p[0] == 0xE2 && p[1] == 0x81 && p[2] >= 0x9F && p[2] <= 0xAF)
		return 3;				/* U+205F-U+206F */
	if ((p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) ||
		(p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF))
		return 3;				/* U+3000, U+FEFF */
	return 0;
}

/* The code point of a 2- or 3-byte UTF-8 sequence (for a message). */
static unsigned int
cas_utf8_code(const unsigned char *p, int n)
{
	if (n == 2)
		return ((p[0] & 0x1F) << 6) | (p[1] & 0x3F);
	return ((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
}

/*
 * The characters a cascade name may not hold: control characters, a
 * backslash, invisible or space-like Unicode characters.  Fills err and
 * returns false at the first one.
 */
static bool
cas_name_chars_ok(const char *name, RvError *err)
{
	const char *p;

	for (p = name; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c < 0x20 || c == 0x7f || c == '\\')
		{
			rv_error_set(err, "cascade name contains a control character or a backslash");
			rv_error_detail(err, "Character %d of the name is not allowed.",
							(int) rv_utf8_count(name, (size_t) (p - name) + 1));
			return false;
		}
	}
	for (p = name; *p; p++)
	{
		int			n = cas_invisible_len((const unsigned char *) p);

		if (n > 0)
		{
			rv_error_set(err, "cascade name contains an invisible or space-like character");
			rv_error_detail(err, "Character %d of the name (U+%04X) is not allowed: "
							"it would make a name that looks like another one.",
							(int) rv_utf8_count(name, (size_t) (p - name) + 1),
							cas_utf8_code((const unsigned char *) p, n));
			return false;
		}
	}
	return true;
}

/*
 * rv_cascade_name_normalize: see cascade.h for the rule.  Works on the
 * bytes of the name (any server encoding is ASCII-compatible in the
 * characters the rule looks at); needs no allocation.
 */
bool
rv_cascade_name_normalize(const char *name, char *out, RvError *err)
{
	size_t		len;
	size_t		o = 0;
	const char *p;

	out[0] = '\0';
	if (name == NULL || name[0] == '\0')
	{
		rv_error_set(err, "cascade name must not be empty");
		return false;
	}
	len = strlen(name);
	if (!cas_name_chars_ok(name, err))
		return false;
	if (isspace((unsigned char) name[0]) || isspace((unsigned char) name[len - 1]))
	{
		rv_error_set(err, "cascade name \"%.*s\" begins or ends with white space",
					 cas_quote_len(name), name);
		return false;
	}
	if (name[0] == '/')
	{
		rv_error_set(err, "cascade name \"%.*s\" is not allowed", cas_quote_len(name), name);
		rv_error_detail(err, "A cascade name is relative: it may not begin with \"/\".");
		return false;
	}

	/* components: drop "" and ".", refuse "..", copy the rest */
	p = name;
	while (*p)
	{
		const char *slash = strchr(p, '/');
		size_t		n = slash ? (size_t) (slash - p) : strlen(p);

		if (n == 2 && p[0] == '.' && p[1] == '.')
		{
			rv_error_set(err, "cascade name \"%.*s\" is not allowed", cas_quote_len(name), name);
			rv_error_detail(err, "A cascade name may not contain a \"..\" component.");
			return false;
		}
		if (n > 0 && !(n == 1 && p[0] == '.'))
		{
			/* +5: room for a ".yaml" suffix that is removed below */
			if (o + (o > 0) + n > RV_CASCADE_NAME_MAX + 5)
			{
				rv_error_set(err, "cascade name is too long");
				rv_error_detail(err, "A cascade name has at most %d bytes without its suffix.",
								RV_CASCADE_NAME_MAX);
				return false;
			}
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	out[o] = '\0';

	/* one trailing suffix */
	if (o >= 5 && strcmp(out + o - 5, ".yaml") == 0)
		o -= 5;
	else if (o >= 4 && strcmp(out + o - 4, ".yml") == 0)
		o -= 4;
	out[o] = '\0';

	if (o == 0 || out[o - 1] == '/')
	{
		rv_error_set(err, "cascade name \"%.*s\" is empty once normalised",
					 cas_quote_len(name), name);
		rv_error_detail(err, "Nothing is left of it after removing \".\" components, "
						"slashes and a \".yaml\" or \".yml\" suffix.");
		out[0] = '\0';
		return false;
	}
	if (o > RV_CASCADE_NAME_MAX)
	{
		rv_error_set(err, "cascade name is too long");
		rv_error_detail(err, "A cascade name has at most %d bytes without its suffix.",
						RV_CASCADE_NAME_MAX);
		out[0] = '\0';
		return false;
	}
	return true;
}
