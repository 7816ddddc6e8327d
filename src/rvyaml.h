/*-------------------------------------------------------------------------
 *
 * rvyaml.h
 *	  YAML text to json-c values, keeping a node tree with every node's
 *	  position so that callers (cascade.c) can point errors at a line and
 *	  column.
 *
 * Pure: no PostgreSQL headers; libyaml and json-c; malloc'd memory freed by
 * rv_yaml_doc_free(); errors in an RvError with the YAML line and column.
 *
 * (Not named yaml.h: src/ is on the include path, and a yaml.h there would
 * hide libyaml's <yaml.h>.)
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_YAML_H
#define RV_YAML_H

#include <json-c/json.h>
#include <yaml.h>

#include "rverror.h"

typedef enum RvYamlKind
{
	RV_YAML_SCALAR,
	RV_YAML_SEQUENCE,
	RV_YAML_MAPPING
} RvYamlKind;

/* how a scalar's value is typed */
typedef enum RvYamlResolve
{
	RV_YAML_RESOLVE_PLAIN,		/* resolve null / bool / int / float / string */
	RV_YAML_RESOLVE_STRING		/* always a string */
} RvYamlResolve;

/*
 * One YAML node with its position.  Aliases share the node they name.
 * Callers read kind, start, end, value, len, style, items and nitems; the
 * other fields belong to rvyaml.c.
 */
typedef struct RvYamlNode
{
	RvYamlKind	kind;
	yaml_mark_t start;
	yaml_mark_t end;
	char	   *value;			/* scalar text, NUL-terminated (may hold NULs) */
	size_t		len;			/* scalar length in bytes */
	yaml_scalar_style_t style;
	RvYamlResolve resolve;
	char	   *anchor;			/* pending anchor of an open container */
	struct RvYamlNode **items;	/* children; mappings alternate key, value */
	int			nitems;
	int			cap;
	struct RvYamlNode *next_alloc;	/* every node of a document, for freeing */
} RvYamlNode;

/* a parsed YAML stream (opaque): its root node and all its nodes */
typedef struct RvYamlDoc RvYamlDoc;

/*
 * YAML text (one document) to a json-c value.  Plain scalars resolve as
 * YAML 1.1 core: null/~, true/false/yes/no/on/off, integers, floats;
 * quoted and block scalars are strings.  Aliases are expanded with a
 * limit on the total number of nodes (against "billion laughs").  Returns
 * NULL with err (message, line, column) on malformed YAML, e.g.
 * "could not parse YAML: mapping values are not allowed in this context"
 * at line 3, column 12.  A document holding only null (e.g. "~") also
 * gives NULL, without an error.  Never crashes on any input.
 */
extern json_object *rv_yaml_to_json(const char *text, size_t len, RvError *err);

/*
 * Parse text (NULL is the empty text) into a node tree and its root's JSON
 * in *out.  Returns the document, to be freed with rv_yaml_doc_free(), or
 * NULL with err set; an empty stream is the error "cascade definition is
 * empty".
 */
extern RvYamlDoc *rv_yaml_load(const char *text, size_t len, json_object **out,
							   RvError *err);
extern const RvYamlNode *rv_yaml_doc_root(const RvYamlDoc *doc);
extern void rv_yaml_doc_free(RvYamlDoc *doc);

/*
 * Record an error at node's position (or without one when node is NULL).
 * Like rv_error_set(), keeps an earlier error and its position.
 */
extern void rv_yaml_error(RvError *err, const RvYamlNode *node, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/* Set err's position from a libyaml mark (0-based line and column). */
extern void rv_yaml_mark_loc(RvError *err, const yaml_mark_t *mark);

/*
 * Set err's line and column (1-based, column in characters) and the
 * matching 1-based character position in text.  Clamped at the end.
 */
extern void rv_yaml_set_loc(RvError *err, const char *text, size_t len,
							int line, int column);

/* Byte offset of the start of 1-based line in text, or len. */
extern size_t rv_yaml_line_offset(const char *text, size_t len, int line);

#endif							/* RV_YAML_H */
