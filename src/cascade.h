/*-------------------------------------------------------------------------
 *
 * cascade.h
 *	  Loading cascade definitions (YAML) into an RvCascade.
 *
 * Pure: no PostgreSQL headers; libyaml and json-c; malloc'd memory freed by
 * rv_cascade_free(); errors in an RvError with the YAML line and column.
 *
 * The file format is compatible with the RVBBIT project's cascade files:
 *
 *   cascade_id: classify_sentiment
 *   description: ...
 *   inputs_schema: { review_text: "the text" }    # name -> description
 *   model: openai/gpt-4o-mini                     # default for all cells
 *   cells:                                        # also accepted: phases
 *     - name: classify
 *       instructions: "Classify: {{ input.review_text }}"
 *       system: "You are ..."                    # optional
 *       model: ...                                # optional
 *       output_schema: { type: object, ... }      # optional JSON Schema
 *       rules: { max_attempts: 3, max_turns: 1,
 *                grow_max_tokens: true }          # or a number: see RvCell
 *       temperature: 0.0
 *       max_tokens: 200
 *       candidates: { factor: 3, evaluator_instructions: "..." }
 *         # also spelled takes: / soundings:
 *
 * Unknown keys are ignored (the RVBBIT files carry more than we run).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_CASCADE_H
#define RV_CASCADE_H

#include <json-c/json.h>

#include "rverror.h"
#include "template.h"

typedef struct RvCell
{
	char	   *name;			/* unique within the cascade */
	char	   *instructions;	/* template source */
	char	   *system;			/* template source or NULL */
	char	   *model;			/* NULL: cascade model, then the default */
	json_object *output_schema; /* NULL if none; owned by the cascade root */
	int			max_attempts;	/* >= 1, default 1 (3 when output_schema) */
	int			max_turns;		/* >= 1, default 1 */
	bool		has_temperature;
	double		temperature;
	int			max_tokens;		/* 0: rvbbit.default_max_tokens */
	int			grow_max_tokens;	/* rules.grow_max_tokens: 0 no, -1 twice
									 * the cap, else the cap of the one retry
									 * of a schema reply cut off at max_tokens */
	int			candidates;		/* 0 or 1: none; else factor */
	char	   *evaluator_instructions; /* template source or NULL */
	RvTemplate *tmpl_instructions;	/* compiled */
	RvTemplate *tmpl_system;	/* compiled or NULL */
	RvTemplate *tmpl_evaluator; /* compiled or NULL */
} RvCell;

typedef struct RvCascade
{
	char	   *cascade_id;		/* may be NULL in inline definitions */
	char	   *description;	/* may be NULL */
	json_object *inputs_schema; /* object or NULL */
	char	   *model;			/* NULL if none */
	int			ncells;			/* >= 1 */
	RvCell	   *cells;
	json_object *root;			/* the whole document as JSON */
} RvCascade;

/*
 * YAML text (one document) to a json-c value.  Plain scalars resolve as
 * YAML 1.1 core: null/~, true/false/yes/no/on/off, integers, floats;
 * quoted and block scalars are strings.  Aliases are expanded with a
 * limit on the total number of nodes (against "billion laughs").  Returns
 * NULL with err (message, line, column) on malformed YAML, e.g.
 * "could not parse YAML: mapping values are not allowed in this context"
 * at line 3, column 12.  Never crashes on any input.
 */
extern json_object *rv_yaml_to_json(const char *text, size_t len, RvError *err);

/*
 * Parse and check a cascade: YAML, then structure (a mapping with a
 * non-empty "cells" list, each cell a mapping with a string "name" and
 * "instructions", names unique, numbers in range), compile each template
 * and check each output_schema.  Errors name the cell and the key, e.g.
 * "cell \"classify\": template error in instructions: unknown filter
 * \"uper\"" with line/column of the YAML node when known.
 */
extern RvCascade *rv_cascade_parse(const char *text, size_t len, RvError *err);

extern void rv_cascade_free(RvCascade *cascade);

/*
 * True when text looks like an inline cascade definition: a YAML mapping
 * with a "cells:" (or "phases:") key, as opposed to a name.
 */
extern bool rv_cascade_is_inline(const char *text);

/* Longest cascade name after normalisation, in bytes. */
#define RV_CASCADE_NAME_MAX 200
/* Size of the buffer rv_cascade_name_normalize() writes (room for a suffix). */
#define RV_CASCADE_NAME_BUF (RV_CASCADE_NAME_MAX + 6)

/*
 * The one normalisation rule for cascade names, used by create_cascade,
 * drop_cascade and every lookup (registry, rvbbit.cascade_path, the
 * shipped examples):
 *   - the name is not empty, has no control character or backslash, no
 *     invisible or space-like Unicode character (U+00A0, U+200B, ...) and
 *     does not begin or end with white space;
 *   - it is relative: no leading "/", no ".." component;
 *   - "." components and repeated or trailing slashes are dropped
 *     ("./traits//x.yaml" is "traits/x.yaml");
 *   - one trailing ".yaml" or ".yml" (lower case) is removed;
 *   - what is left is 1 to RV_CASCADE_NAME_MAX bytes.
 * Case, dots, quotes, spaces and non-ASCII letters are kept as they are.
 * Writes the normalised name to out (RV_CASCADE_NAME_BUF bytes) and
 * returns true, or fills err and returns false.
 */
extern bool rv_cascade_name_normalize(const char *name, char *out, RvError *err);

#endif							/* RV_CASCADE_H */
