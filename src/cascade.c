/*-------------------------------------------------------------------------
 *
 * cascade.c
 *	  Loading cascade definitions: YAML to JSON, and JSON to an RvCascade
 *	  whose templates are compiled and whose output schemas are checked.
 *
 * The YAML is read with libyaml's event parser into a small node tree of
 * our own that keeps every node's position (libyaml marks), so that each
 * error about a cascade can name the line and column it is about.  The
 * tree is then turned into json-c values (the cascade's "root") and the
 * cascade structure is read from the JSON and the tree side by side: the
 * JSON gives the values, the tree gives the positions.
 *
 * Limits: nesting depth 64 (in the text and after expanding aliases), and
 * 100000 nodes in all, counting every expansion of an alias (against
 * "billion laughs").  Aliases may only refer to complete nodes, so the
 * tree has no cycles.  The parse is iterative; only the conversion to JSON
 * recurses, at most CAS_MAX_DEPTH levels deep.
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
#include <yaml.h>

#include "cascade.h"
#include "jsonschema.h"

#define CAS_MAX_DEPTH 64
#define CAS_MAX_NODES 100000
#define CAS_ANCHOR_BUCKETS 256

typedef enum CasKind
{
	CAS_SCALAR,
	CAS_SEQUENCE,
	CAS_MAPPING
} CasKind;

/* how a scalar's value is typed */
typedef enum CasResolve
{
	CAS_RESOLVE_PLAIN,			/* resolve null / bool / int / float / string */
	CAS_RESOLVE_STRING			/* always a string */
} CasResolve;

/* One YAML node with its position.  Aliases share the node they name. */
typedef struct CasNode
{
	CasKind		kind;
	yaml_mark_t start;
	yaml_mark_t end;
	char	   *value;			/* scalar text, NUL-terminated (may hold NULs) */
	size_t		len;			/* scalar length in bytes */
	yaml_scalar_style_t style;
	CasResolve	resolve;
	char	   *anchor;			/* pending anchor of an open container */
	struct CasNode **items;		/* children; mappings alternate key, value */
	int			nitems;
	int			cap;
	struct CasNode *next_alloc; /* every node of a document, for freeing */
} CasNode;

/* an anchor name and the node it names */
typedef struct CasAnchor
{
	char	   *name;
	CasNode    *node;
	struct CasAnchor *next;
} CasAnchor;

/* a parsed YAML stream: the first non-empty document's root and all nodes */
typedef struct CasDoc
{
	const char *text;
	size_t		len;
	CasNode    *nodes;			/* allocation list */
	int			nnodes;
	CasNode    *root;			/* NULL when the stream had no content */
	CasAnchor  *anchors[CAS_ANCHOR_BUCKETS];
} CasDoc;

/* state of one conversion of a node tree to JSON */
typedef struct CasConv
{
	int			count;			/* JSON values made so far */
	RvError    *err;
} CasConv;

/* a value looked up in a cascade mapping: JSON value and its YAML nodes */
typedef struct CasVal
{
	bool		present;		/* key given with a non-null value */
	json_object *json;
	CasNode    *node;			/* value node, or NULL */
	CasNode    *key;			/* key node, or NULL */
} CasVal;

/* ----------------------------------------------------------------
 *		Errors and positions
 * ----------------------------------------------------------------
 */

/* Set err's position from a libyaml mark (0-based line and column). */
static void
cas_mark_loc(RvError *err, const yaml_mark_t *mark)
{
	err->line = (int) mark->line + 1;
	err->column = (int) mark->column + 1;
	err->position = (int) mark->index + 1;
}

/*
 * Record an error at node's position (or without one when node is NULL).
 * Like rv_error_set(), keeps an earlier error and its position.
 */
static void
cas_error(RvError *err, const CasNode *node, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
cas_error(RvError *err, const CasNode *node, const char *fmt,...)
{
	char		buf[RV_ERRMSG_LEN];
	va_list		ap;

	if (err->set)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rv_error_set(err, "%s", buf);
	if (node != NULL)
		cas_mark_loc(err, &node->start);
}

/*
 * Set err's line and column (1-based, column in characters) and compute
 * the matching 1-based character position by scanning text.  A line or
 * column past the end is clamped.
 */
static void
cas_set_loc(RvError *err, const char *text, size_t len, int line, int column)
{
	size_t		i = 0;
	int			l = 1;
	int			c = 1;
	int			chars = 1;

	while (i < len && l < line)
	{
		if (((unsigned char) text[i] & 0xC0) != 0x80)
			chars++;
		if (text[i] == '\n')
			l++;
		i++;
	}
	while (i < len && c < column && text[i] != '\n')
	{
		i++;
		while (i < len && ((unsigned char) text[i] & 0xC0) == 0x80)
			i++;
		chars++;
		c++;
	}
	err->line = line;
	err->column = column;
	err->position = chars;
}

/* Byte offset of the start of 1-based line in text, or len. */
static size_t
cas_line_offset(const char *text, size_t len, int line)
{
	size_t		i = 0;
	int			l = 1;

	while (i < len && l < line)
	{
		if (text[i] == '\n')
			l++;
		i++;
	}
	return i;
}

/*
 * Record a libyaml parser error: "could not parse YAML: <problem>" at the
 * problem mark, with the context as detail.
 */
static void
cas_yaml_error(RvError *err, yaml_parser_t *parser, const char *text, size_t len)
{
	if (err->set)
		return;
	if (parser->error == YAML_MEMORY_ERROR)
	{
		rv_error_set(err, "could not parse YAML: out of memory");
		return;
	}
	rv_error_set(err, "could not parse YAML: %s",
				 parser->problem ? parser->problem : "unknown error");
	if (parser->error == YAML_READER_ERROR)
	{
		/* reader errors carry a byte offset, not a mark */
		size_t		off = parser->problem_offset < len ? parser->problem_offset : len;
		size_t		i;
		int			line = 1;
		int			col = 1;

		for (i = 0; i < off; i++)
		{
			if (text[i] == '\n')
			{
				line++;
				col = 1;
			}
			else if (((unsigned char) text[i] & 0xC0) != 0x80)
				col++;
		}
		cas_set_loc(err, text, len, line, col);
		if (parser->problem_value != -1)
			rv_error_detail(err, "The offending byte is 0x%02x at byte offset %zu.",
							(unsigned) parser->problem_value & 0xFF, parser->problem_offset);
		return;
	}
	cas_mark_loc(err, &parser->problem_mark);
	if (parser->context != NULL && parser->context[0] != '\0')
		rv_error_detail(err, "%c%s that started at line %d, column %d.",
						toupper((unsigned char) parser->context[0]),
						parser->context + 1,
						(int) parser->context_mark.line + 1,
						(int) parser->context_mark.column + 1);
}

/* ----------------------------------------------------------------
 *		YAML text to a node tree
 * ----------------------------------------------------------------
 */

/* Free a document and all its nodes and anchors. */
static void
cas_doc_free(CasDoc *doc)
{
	CasNode    *n;
	int			b;

	if (doc == NULL)
		return;
	n = doc->nodes;
	while (n != NULL)
	{
		CasNode    *next = n->next_alloc;

		free(n->value);
		free(n->anchor);
		free(n->items);
		free(n);
		n = next;
	}
	for (b = 0; b < CAS_ANCHOR_BUCKETS; b++)
	{
		CasAnchor  *a = doc->anchors[b];

		while (a != NULL)
		{
			CasAnchor  *next = a->next;

			free(a->name);
			free(a);
			a = next;
		}
		doc->anchors[b] = NULL;
	}
	free(doc);
}

/* Forget the anchors of the previous document (anchors are per document). */
static void
cas_anchors_reset(CasDoc *doc)
{
	int			b;

	for (b = 0; b < CAS_ANCHOR_BUCKETS; b++)
	{
		CasAnchor  *a = doc->anchors[b];

		while (a != NULL)
		{
			CasAnchor  *next = a->next;

			free(a->name);
			free(a);
			a = next;
		}
		doc->anchors[b] = NULL;
	}
}

/* Bucket of an anchor name. */
static unsigned
cas_anchor_hash(const char *name)
{
	unsigned	h = 5381;

	while (*name)
		h = h * 33 + (unsigned char) *name++;
	return h % CAS_ANCHOR_BUCKETS;
}

/* Name node with anchor (a later anchor of the same name hides it). */
static bool
cas_anchor_add(CasDoc *doc, const char *name, CasNode *node)
{
	CasAnchor  *a = malloc(sizeof(CasAnchor));
	unsigned	h = cas_anchor_hash(name);

	if (a == NULL)
		return false;
	a->name = strdup(name);
	if (a->name == NULL)
	{
		free(a);
		return false;
	}
	a->node = node;
	a->next = doc->anchors[h];
	doc->anchors[h] = a;
	return true;
}

/* The node named by an anchor, or NULL. */
static CasNode *
cas_anchor_find(CasDoc *doc, const char *name)
{
	CasAnchor  *a;

	for (a = doc->anchors[cas_anchor_hash(name)]; a != NULL; a = a->next)
	{
		if (strcmp(a->name, name) == 0)
			return a->node;
	}
	return NULL;
}

/* Allocate a node of kind at mark, counting it against the node limit. */
static CasNode *
cas_node_new(CasDoc *doc, CasKind kind, const yaml_mark_t *start,
			 const yaml_mark_t *end, RvError *err)
{
	CasNode    *n;

	if (doc->nnodes >= CAS_MAX_NODES)
	{
		rv_error_set(err, "YAML document has too many nodes");
		rv_error_detail(err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
						CAS_MAX_NODES);
		cas_mark_loc(err, start);
		return NULL;
	}
	n = calloc(1, sizeof(CasNode));
	if (n == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}
	n->kind = kind;
	n->start = *start;
	n->end = *end;
	n->next_alloc = doc->nodes;
	doc->nodes = n;
	doc->nnodes++;
	return n;
}

/* Append child to a container node. */
static bool
cas_node_append(CasNode *parent, CasNode *child, RvError *err)
{
	if (parent->nitems == parent->cap)
	{
		int			cap = parent->cap ? parent->cap * 2 : 4;
		CasNode   **items = realloc(parent->items, (size_t) cap * sizeof(CasNode *));

		if (items == NULL)
		{
			rv_error_set(err, "out of memory");
			return false;
		}
		parent->items = items;
		parent->cap = cap;
	}
	parent->items[parent->nitems++] = child;
	return true;
}

/* a key of a mapping, for finding duplicates */
typedef struct CasKeyRef
{
	CasNode    *key;
	int			index;
} CasKeyRef;

/* Order keys by text (as C strings, as json-c sees them), then position. */
static int
cas_key_cmp(const void *a, const void *b)
{
	const CasKeyRef *x = a;
	const CasKeyRef *y = b;
	int			c = strcmp(x->key->value, y->key->value);

	if (c != 0)
		return c;
	return x->index - y->index;
}

/*
 * Reject a mapping with the same key twice: 'duplicate key "name"' at the
 * second occurrence (the earliest second occurrence when there are
 * several).  Sorting keeps this O(n log n) for big mappings.
 */
static bool
cas_check_duplicates(CasNode *map, RvError *err)
{
	int			nkeys = map->nitems / 2;
	CasKeyRef  *refs;
	CasKeyRef  *first = NULL;
	CasKeyRef  *second = NULL;
	int			i;

	if (nkeys < 2)
		return true;
	refs = malloc((size_t) nkeys * sizeof(CasKeyRef));
	if (refs == NULL)
	{
		rv_error_set(err, "out of memory");
		return false;
	}
	for (i = 0; i < nkeys; i++)
	{
		refs[i].key = map->items[2 * i];
		refs[i].index = i;
	}
	qsort(refs, (size_t) nkeys, sizeof(CasKeyRef), cas_key_cmp);
	for (i = 1; i < nkeys; i++)
	{
		if (strcmp(refs[i].key->value, refs[i - 1].key->value) != 0)
			continue;
		/* refs[i - 1] is the first of its group only if it differs before */
		if (i >= 2 && strcmp(refs[i - 2].key->value, refs[i].key->value) == 0)
			continue;
		if (second == NULL || refs[i].index < second->index)
		{
			second = &refs[i];
			first = &refs[i - 1];
		}
	}
	if (second != NULL)
	{
		char		shown[120];

		snprintf(shown, sizeof(shown), "%.100s%s", second->key->value,
				 strlen(second->key->value) > 100 ? "..." : "");
		cas_error(err, second->key, "duplicate key \"%s\"", shown);
		rv_error_detail(err, "The key first appears at line %d.",
						(int) first->key->start.line + 1);
	}
	free(refs);
	return second == NULL;
}

/*
 * Attach a finished or newly opened node to the open container on top of
 * the stack, or make it the document root.  A mapping key must be a
 * scalar.
 */
static bool
cas_attach(CasNode **stack, int depth, CasNode **docroot, CasNode *node,
		   const yaml_mark_t *mark, RvError *err)
{
	CasNode    *parent;

	if (depth == 0)
	{
		*docroot = node;
		return true;
	}
	parent = stack[depth - 1];
	if (parent->kind == CAS_MAPPING && parent->nitems % 2 == 0 &&
		node->kind != CAS_SCALAR)
	{
		rv_error_set(err, "mapping key must be a scalar, not a %s",
					 node->kind == CAS_MAPPING ? "mapping" : "sequence");
		cas_mark_loc(err, mark);
		return false;
	}
	return cas_node_append(parent, node, err);
}

/* True for a document root that holds nothing (an empty plain scalar). */
static bool
cas_is_empty_root(const CasNode *root)
{
	return root == NULL ||
		(root->kind == CAS_SCALAR && root->len == 0 &&
		 root->style == YAML_PLAIN_SCALAR_STYLE && root->resolve == CAS_RESOLVE_PLAIN);
}

/* How a scalar with this tag and style is to be typed. */
static CasResolve
cas_resolve_kind(const char *tag, yaml_scalar_style_t style)
{
	if (tag == NULL || tag[0] == '\0')
		return style == YAML_PLAIN_SCALAR_STYLE ? CAS_RESOLVE_PLAIN : CAS_RESOLVE_STRING;
	if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_STR_TAG) == 0)
		return CAS_RESOLVE_STRING;
	if (strcmp(tag, YAML_NULL_TAG) == 0 || strcmp(tag, YAML_BOOL_TAG) == 0 ||
		strcmp(tag, YAML_INT_TAG) == 0 || strcmp(tag, YAML_FLOAT_TAG) == 0)
		return CAS_RESOLVE_PLAIN;
	/* an application tag: ignore it */
	return style == YAML_PLAIN_SCALAR_STYLE ? CAS_RESOLVE_PLAIN : CAS_RESOLVE_STRING;
}

/*
 * Parse YAML text into a node tree.  Returns NULL with err set on a libyaml
 * error, an undefined alias, a non-scalar key, a duplicate key, nesting
 * deeper than CAS_MAX_DEPTH, too many nodes, or more than one non-empty
 * document.  An empty stream gives a document whose root is NULL.
 */
static CasDoc *
cas_doc_parse(const char *text, size_t len, RvError *err)
{
	yaml_parser_t parser;
	yaml_event_t event;
	CasDoc	   *doc;
	CasNode    *stack[CAS_MAX_DEPTH + 1];
	int			depth = 0;
	CasNode    *docroot = NULL;
	bool		done = false;
	bool		ok = true;

	doc = calloc(1, sizeof(CasDoc));
	if (doc == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}
	doc->text = text;
	doc->len = len;
	if (!yaml_parser_initialize(&parser))
	{
		rv_error_set(err, "out of memory");
		free(doc);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *) text, len);

	while (ok && !done)
	{
		CasNode    *node = NULL;

		if (!yaml_parser_parse(&parser, &event))
		{
			cas_yaml_error(err, &parser, text, len);
			ok = false;
			break;
		}
		switch (event.type)
		{
			case YAML_STREAM_END_EVENT:
				done = true;
				break;
			case YAML_DOCUMENT_START_EVENT:
				cas_anchors_reset(doc);
				docroot = NULL;
				break;
			case YAML_DOCUMENT_END_EVENT:
				if (!cas_is_empty_root(docroot))
				{
					if (doc->root != NULL)
					{
						rv_error_set(err, "cascade definition contains more than one YAML document");
						rv_error_hint(err, "Remove the \"---\" line, or give each cascade its own definition.");
						cas_mark_loc(err, &docroot->start);
						ok = false;
					}
					else
						doc->root = docroot;
				}
				break;
			case YAML_ALIAS_EVENT:
				node = cas_anchor_find(doc, (const char *) event.data.alias.anchor);
				if (node == NULL)
				{
					rv_error_set(err, "could not parse YAML: found undefined alias \"%.100s\"",
								 (const char *) event.data.alias.anchor);
					cas_mark_loc(err, &event.start_mark);
					ok = false;
				}
				else
					ok = cas_attach(stack, depth, &docroot, node, &event.start_mark, err);
				break;
			case YAML_SCALAR_EVENT:
				node = cas_node_new(doc, CAS_SCALAR, &event.start_mark, &event.end_mark, err);
				if (node == NULL)
				{
					ok = false;
					break;
				}
				node->len = event.data.scalar.length;
				node->value = malloc(node->len + 1);
				if (node->value == NULL)
				{
					rv_error_set(err, "out of memory");
					ok = false;
					break;
				}
				memcpy(node->value, event.data.scalar.value, node->len);
				node->value[node->len] = '\0';
				node->style = event.data.scalar.style;
				node->resolve = cas_resolve_kind((const char *) event.data.scalar.tag,
												 event.data.scalar.style);
				if (event.data.scalar.anchor != NULL &&
					!cas_anchor_add(doc, (const char *) event.data.scalar.anchor, node))
				{
					rv_error_set(err, "out of memory");
					ok = false;
					break;
				}
				ok = cas_attach(stack, depth, &docroot, node, &event.start_mark, err);
				break;
			case YAML_SEQUENCE_START_EVENT:
			case YAML_MAPPING_START_EVENT:
				{
					const yaml_char_t *anchor;

					if (depth >= CAS_MAX_DEPTH)
					{
						rv_error_set(err, "YAML document is nested too deeply");
						rv_error_detail(err, "Lists and mappings may be nested at most %d levels deep.",
										CAS_MAX_DEPTH);
						cas_mark_loc(err, &event.start_mark);
						ok = false;
						break;
					}
					node = cas_node_new(doc,
										event.type == YAML_MAPPING_START_EVENT ? CAS_MAPPING : CAS_SEQUENCE,
										&event.start_mark, &event.end_mark, err);
					if (node == NULL)
					{
						ok = false;
						break;
					}
					anchor = event.type == YAML_MAPPING_START_EVENT ?
						event.data.mapping_start.anchor : event.data.sequence_start.anchor;
					if (anchor != NULL)
					{
						/* named when complete, so that it cannot contain itself */
						node->anchor = strdup((const char *) anchor);
						if (node->anchor == NULL)
						{
							rv_error_set(err, "out of memory");
							ok = false;
							break;
						}
					}
					ok = cas_attach(stack, depth, &docroot, node, &event.start_mark, err);
					if (ok)
						stack[depth++] = node;
				}
				break;
			case YAML_SEQUENCE_END_EVENT:
			case YAML_MAPPING_END_EVENT:
				if (depth == 0)
					break;		/* cannot happen: libyaml balances events */
				node = stack[--depth];
				node->end = event.end_mark;
				if (node->kind == CAS_MAPPING && !cas_check_duplicates(node, err))
				{
					ok = false;
					break;
				}
				if (node->anchor != NULL)
				{
					if (!cas_anchor_add(doc, node->anchor, node))
					{
						rv_error_set(err, "out of memory");
						ok = false;
						break;
					}
					free(node->anchor);
					node->anchor = NULL;
				}
				break;
			default:
				break;
		}
		yaml_event_delete(&event);
	}
	yaml_parser_delete(&parser);
	if (!ok)
	{
		cas_doc_free(doc);
		return NULL;
	}
	return doc;
}

/* ----------------------------------------------------------------
 *		Node tree to JSON
 * ----------------------------------------------------------------
 */

/* Case-insensitive comparison of s (n bytes) with the word w. */
static bool
cas_word(const char *s, size_t n, const char *w)
{
	size_t		i;

	if (strlen(w) != n)
		return false;
	for (i = 0; i < n; i++)
	{
		if (tolower((unsigned char) s[i]) != w[i])
			return false;
	}
	return true;
}

/* Value of a digit in base, or -1. */
static int
cas_digit(char c, int base)
{
	int			d;

	if (c >= '0' && c <= '9')
		d = c - '0';
	else if (c >= 'a' && c <= 'f')
		d = c - 'a' + 10;
	else if (c >= 'A' && c <= 'F')
		d = c - 'A' + 10;
	else
		return -1;
	return d < base ? d : -1;
}

/*
 * Parse s (n bytes) as a YAML 1.1 integer: [-+] then decimal (0 or no
 * leading zero), 0x hex, 0o octal or 0-prefixed octal; '_' may separate
 * digits.  Values beyond int64 become doubles.  Returns NULL (and sets
 * *matched false) when s is not an integer.
 */
static json_object *
cas_parse_int(const char *s, size_t n, bool *matched)
{
	size_t		i = 0;
	bool		neg = false;
	int			base = 10;
	uint64_t	acc = 0;
	double		dacc = 0;
	bool		overflow = false;
	int			ndigits = 0;

	*matched = false;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (i >= n)
		return NULL;
	if (n - i >= 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X'))
	{
		base = 16;
		i += 2;
	}
	else if (n - i >= 2 && s[i] == '0' && (s[i + 1] == 'o' || s[i + 1] == 'O'))
	{
		base = 8;
		i += 2;
	}
	else if (n - i >= 2 && s[i] == '0')
	{
		base = 8;
		i += 1;
	}
	for (; i < n; i++)
	{
		int			d;

		if (s[i] == '_' && ndigits > 0)
			continue;
		d = cas_digit(s[i], base);
		if (d < 0)
			return NULL;
		ndigits++;
		dacc = dacc * base + d;
		if (acc > (UINT64_MAX - (uint64_t) d) / (uint64_t) base)
			overflow = true;
		else
			acc = acc * (uint64_t) base + (uint64_t) d;
	}
	if (ndigits == 0)
		return NULL;
	*matched = true;
	if (!overflow && !neg && acc <= (uint64_t) INT64_MAX)
		return json_object_new_int64((int64_t) acc);
	if (!overflow && neg && acc <= (uint64_t) INT64_MAX + 1)
		return json_object_new_int64(acc == (uint64_t) INT64_MAX + 1 ?
									 INT64_MIN : -(int64_t) acc);
	return json_object_new_double(neg ? -dacc : dacc);
}

/*
 * Parse s (n bytes) as a float: [-+] (digits [. digits] | . digits)
 * [e [-+] digits], with a '.' or an exponent; or .inf / .nan in any of
 * the YAML spellings.  Returns NULL with *matched false otherwise.
 */
static json_object *
cas_parse_float(const char *s, size_t n, bool *matched)
{
	size_t		i = 0;
	size_t		start;
	int			intdigits = 0;
	int			fracdigits = 0;
	bool		dot = false;
	bool		exp = false;
	char	   *buf;
	size_t		o = 0;
	double		d;
	bool		neg = false;

	*matched = false;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	start = i;
	if (cas_word(s + start, n - start, ".inf"))
	{
		*matched = true;
		return json_object_new_double(neg ? -INFINITY : INFINITY);
	}
	if (start == 0 && cas_word(s, n, ".nan"))
	{
		*matched = true;
		return json_object_new_double(NAN);
	}
	while (i < n && (isdigit((unsigned char) s[i]) || (s[i] == '_' && intdigits > 0)))
	{
		if (s[i] != '_')
			intdigits++;
		i++;
	}
	if (i < n && s[i] == '.')
	{
		dot = true;
		i++;
		while (i < n && (isdigit((unsigned char) s[i]) || (s[i] == '_' && fracdigits > 0)))
		{
			if (s[i] != '_')
				fracdigits++;
			i++;
		}
	}
	if (intdigits + fracdigits == 0)
		return NULL;
	if (i < n && (s[i] == 'e' || s[i] == 'E'))
	{
		int			expdigits = 0;

		exp = true;
		i++;
		if (i < n && (s[i] == '-' || s[i] == '+'))
			i++;
		while (i < n && isdigit((unsigned char) s[i]))
		{
			expdigits++;
			i++;
		}
		if (expdigits == 0)
			return NULL;
	}
	if (i != n || (!dot && !exp))
		return NULL;

	/* copy without underscores for strtod */
	buf = malloc(n + 1);
	if (buf == NULL)
		return NULL;
	for (i = 0; i < n; i++)
	{
		if (s[i] != '_')
			buf[o++] = s[i];
	}
	buf[o] = '\0';
	d = strtod(buf, NULL);
	free(buf);
	*matched = true;
	return json_object_new_double(d);
}

/*
 * The JSON value of a scalar node: a string, or for plain scalars null,
 * a boolean, an integer or a float when the text reads as one.
 */
static json_object *
cas_scalar_json(const CasNode *node)
{
	const char *s = node->value;
	size_t		n = node->len;
	json_object *v;
	bool		matched;

	if (node->resolve == CAS_RESOLVE_STRING)
		return json_object_new_string_len(s, (int) n);
	if (n == 0 || (n == 1 && s[0] == '~') ||
		(n == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 ||
					memcmp(s, "NULL", 4) == 0)))
		return NULL;
	if (cas_word(s, n, "true") || cas_word(s, n, "yes") || cas_word(s, n, "on"))
		return json_object_new_boolean(1);
	if (cas_word(s, n, "false") || cas_word(s, n, "no") || cas_word(s, n, "off"))
		return json_object_new_boolean(0);
	v = cas_parse_int(s, n, &matched);
	if (matched)
		return v;
	v = cas_parse_float(s, n, &matched);
	if (matched)
		return v;
	return json_object_new_string_len(s, (int) n);
}

/*
 * Convert node to JSON in *out; depth counts the enclosing containers,
 * node included.  Returns false with cv->err set when containers nest
 * (after alias expansion) deeper than CAS_MAX_DEPTH or more than
 * CAS_MAX_NODES values would be made.
 */
static bool
cas_convert(CasConv *cv, const CasNode *node, int depth, json_object **out)
{
	json_object *result;
	int			i;

	*out = NULL;
	if (node->kind != CAS_SCALAR && depth > CAS_MAX_DEPTH)
	{
		rv_error_set(cv->err, "YAML document is nested too deeply");
		rv_error_detail(cv->err, "Lists and mappings may be nested at most %d levels deep, counting the expansion of aliases.",
						CAS_MAX_DEPTH);
		cas_mark_loc(cv->err, &node->start);
		return false;
	}
	if (++cv->count > CAS_MAX_NODES)
	{
		rv_error_set(cv->err, "YAML document has too many nodes");
		rv_error_detail(cv->err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
						CAS_MAX_NODES);
		cas_mark_loc(cv->err, &node->start);
		return false;
	}
	if (node->kind == CAS_SCALAR)
	{
		*out = cas_scalar_json(node);
		return true;
	}
	if (node->kind == CAS_SEQUENCE)
	{
		result = json_object_new_array_ext(node->nitems > 0 ? node->nitems : 1);
		if (result == NULL)
		{
			rv_error_set(cv->err, "out of memory");
			return false;
		}
		for (i = 0; i < node->nitems; i++)
		{
			json_object *child;

			if (!cas_convert(cv, node->items[i], depth + 1, &child))
			{
				json_object_put(result);
				return false;
			}
			if (json_object_array_add(result, child) != 0)
			{
				json_object_put(child);
				json_object_put(result);
				rv_error_set(cv->err, "out of memory");
				return false;
			}
		}
		*out = result;
		return true;
	}

	result = json_object_new_object();
	if (result == NULL)
	{
		rv_error_set(cv->err, "out of memory");
		return false;
	}
	for (i = 0; i + 1 < node->nitems; i += 2)
	{
		json_object *child;

		/* keys are scalars (checked while parsing); count them too */
		if (++cv->count > CAS_MAX_NODES)
		{
			rv_error_set(cv->err, "YAML document has too many nodes");
			rv_error_detail(cv->err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
							CAS_MAX_NODES);
			cas_mark_loc(cv->err, &node->items[i]->start);
			json_object_put(result);
			return false;
		}
		if (!cas_convert(cv, node->items[i + 1], depth + 1, &child))
		{
			json_object_put(result);
			return false;
		}
		if (json_object_object_add(result, node->items[i]->value, child) != 0)
		{
			json_object_put(child);
			json_object_put(result);
			rv_error_set(cv->err, "out of memory");
			return false;
		}
	}
	*out = result;
	return true;
}

/*
 * Parse text into a node tree and its root's JSON.  Returns the document
 * (to be freed with cas_doc_free) or NULL with err set; an empty stream is
 * the error "cascade definition is empty".
 */
static CasDoc *
cas_load(const char *text, size_t len, json_object **out, RvError *err)
{
	CasDoc	   *doc;
	CasConv		cv;

	*out = NULL;
	if (text == NULL)
		len = 0;
	doc = cas_doc_parse(text ? text : "", len, err);
	if (doc == NULL)
		return NULL;
	if (doc->root == NULL)
	{
		rv_error_set(err, "cascade definition is empty");
		cas_doc_free(doc);
		return NULL;
	}
	cv.count = 0;
	cv.err = err;
	if (!cas_convert(&cv, doc->root, 1, out))
	{
		cas_doc_free(doc);
		return NULL;
	}
	return doc;
}

/*
 * YAML text (one document) to a json-c value.  Returns NULL with err set
 * on an error; note that a document holding only null (e.g. "~") also
 * gives NULL, without an error.
 */
json_object *
rv_yaml_to_json(const char *text, size_t len, RvError *err)
{
	RvError		local;
	CasDoc	   *doc;
	json_object *result;

	if (err == NULL)
	{
		rv_error_clear(&local);
		err = &local;
	}
	doc = cas_load(text, len, &result, err);
	if (doc == NULL)
		return NULL;
	cas_doc_free(doc);
	return result;
}

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
cas_get(json_object *jmap, const CasNode *nmap, const char *key, CasVal *out)
{
	int			i;

	memset(out, 0, sizeof(CasVal));
	if (json_object_object_get_ex(jmap, key, &out->json))
		out->present = out->json != NULL;
	if (nmap == NULL || nmap->kind != CAS_MAPPING)
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
static const CasNode *
cas_where(const CasVal *v, const CasNode *fallback)
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
cas_template_loc(RvError *err, const CasNode *node, const RvError *terr,
				 const char *text, size_t len)
{
	int			tline = terr->line;
	int			tcol = terr->column > 0 ? terr->column : 1;

	if (node == NULL)
		return;
	cas_mark_loc(err, &node->start);
	if (tline <= 0)
		return;
	if (node->style == YAML_LITERAL_SCALAR_STYLE || node->style == YAML_FOLDED_SCALAR_STYLE)
	{
		int			line = (int) node->start.line + 1 + tline;
		size_t		off = cas_line_offset(text, len, (int) node->start.line + 2);
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
		cas_set_loc(err, text, len, line, indent + tcol);
	}
	else if (node->start.line == node->end.line && tline == 1)
	{
		int			quote = (node->style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
							 node->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE) ? 1 : 0;

		cas_set_loc(err, text, len, (int) node->start.line + 1,
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
			const CasNode *node, const char *text, size_t len,
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
					 const CasVal *cv, const char *spelled, const CasNode *ncell)
{
	CasVal		v;

	if (!json_object_is_type(cv->json, json_type_object))
	{
		cas_error(b->err, cas_where(cv, ncell), "%s: \"%s\" must be a mapping with \"factor\" and \"evaluator_instructions\"",
				  label, spelled);
		return false;
	}
	cas_get(cv->json, cv->node, "factor", &v);
	if (!v.present || !cas_int_in(&v, 1, 16, &cell->candidates))
	{
		cas_error(b->err, cas_where(&v, cv->node), "%s: \"%s.factor\" must be an integer between 1 and 16",
				  label, spelled);
		return false;
	}
	cas_get(cv->json, cv->node, "evaluator_instructions", &v);
	if (!cas_string(&v, &cell->evaluator_instructions, b->err))
	{
		cas_error(b->err, cas_where(&v, cv->node), "%s: \"%s.evaluator_instructions\" must be a string",
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
cas_cell_name(CasBuild *b, int i, json_object *jcell, const CasNode *ncell,
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
		cas_error(err, cas_where(&v, ncell), "%s: missing \"name\"", label);
		rv_error_hint(err, "Each cell needs a \"name\"; later cells refer to its output as outputs.<name>.");
		return false;
	}
	if (!cas_string(&v, &cell->name, err) || cell->name[0] == '\0')
	{
		cas_error(err, cas_where(&v, ncell), "%s: \"name\" must be a non-empty string", label);
		return false;
	}
	snprintf(label, labelsize, "cell \"%.200s%s\"", cell->name,
			 strlen(cell->name) > 200 ? "..." : "");
	bucket = cas_name_bucket(b, cell->name);
	for (k = b->name_head[bucket]; k >= 0; k = b->name_next[k])
	{
		if (strcmp(b->cascade->cells[k].name, cell->name) == 0)
		{
			cas_error(err, cas_where(&v, ncell), "duplicate cell name \"%.200s\"", cell->name);
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
cas_cell_prompts(CasBuild *b, RvCell *cell, json_object *jcell, const CasNode *ncell,
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
		cas_error(err, cas_where(&prompt, ncell), "%s: \"instructions\" and \"prompt\" cannot both be given", label);
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
		cas_error(err, cas_where(&v, ncell), "%s: missing \"instructions\"", label);
		rv_error_hint(err, "Each cell needs \"instructions\": the prompt template sent to the model.");
		return false;
	}
	if (!cas_string(&v, &cell->instructions, err))
	{
		cas_error(err, cas_where(&v, ncell), "%s: \"%s\" must be a string", label, instr_key);
		return false;
	}
	if (!cas_compile(label, instr_key, cell->instructions, v.node, b->text, b->len,
					 &cell->tmpl_instructions, err))
		return false;

	/* system */
	cas_get(jcell, ncell, "system", &v);
	if (!cas_string(&v, &cell->system, err))
	{
		cas_error(err, cas_where(&v, ncell), "%s: \"system\" must be a string", label);
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
		cas_error(err, cas_where(&v, ncell), "%s: \"model\" must be a non-empty string", label);
		return false;
	}

	return true;
}

/* output_schema: a JSON Schema the reply must match (three attempts by default). */
static bool
cas_cell_schema(CasBuild *b, RvCell *cell, json_object *jcell, const CasNode *ncell,
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
			cas_error(err, cas_where(&v, ncell), "%s: \"output_schema\" must be a mapping", label);
			rv_error_hint(err, "Write a JSON Schema, for example {type: object, properties: {answer: {type: string}}, required: [answer]}.");
			return false;
		}
		rv_error_clear(&serr);
		if (!rv_schema_check(v.json, &serr))
		{
			cas_error(err, cas_where(&v, ncell), "%s: output_schema: %s", label, serr.message);
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
cas_cell_rules(CasBuild *b, RvCell *cell, json_object *jcell, const CasNode *ncell,
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
			cas_error(err, cas_where(&rules, ncell), "%s: \"rules\" must be a mapping", label);
			return false;
		}
		cas_get(rules.json, rules.node, "max_attempts", &v);
		if (v.present && !cas_int_in(&v, 1, 20, &cell->max_attempts))
		{
			cas_error(err, cas_where(&v, rules.node), "%s: \"rules.max_attempts\" must be an integer between 1 and 20", label);
			return false;
		}
		cas_get(rules.json, rules.node, "max_turns", &v);
		if (v.present && !cas_int_in(&v, 1, 20, &cell->max_turns))
		{
			cas_error(err, cas_where(&v, rules.node), "%s: \"rules.max_turns\" must be an integer between 1 and 20", label);
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
				cas_error(err, cas_where(&v, rules.node), "%s: \"rules.grow_max_tokens\" must be true, false or an integer between 1 and 1000000", label);
				return false;
			}
		}
	}

	return true;
}

/* temperature and max_tokens. */
static bool
cas_cell_sampling(CasBuild *b, RvCell *cell, json_object *jcell, const CasNode *ncell,
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
			cas_error(err, cas_where(&v, ncell), "%s: \"temperature\" must be a number between 0 and 2", label);
			return false;
		}
		cell->has_temperature = true;
	}

	/* max_tokens */
	cas_get(jcell, ncell, "max_tokens", &v);
	if (v.present && !cas_int_in(&v, 1, 1000000, &cell->max_tokens))
	{
		cas_error(err, cas_where(&v, ncell), "%s: \"max_tokens\" must be an integer between 1 and 1000000", label);
		return false;
	}

	return true;
}

/* candidates, also spelled takes or soundings (one of them). */
static bool
cas_cell_candidates(CasBuild *b, RvCell *cell, json_object *jcell, const CasNode *ncell,
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
			cas_error(err, cas_where(&v, ncell), "%s: only one of \"candidates\", \"takes\" and \"soundings\" may be given", label);
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
cas_build_cell(CasBuild *b, int i, json_object *jcell, const CasNode *ncell)
{
	RvCell	   *cell = &b->cascade->cells[i];
	char		label[300];

	cell->max_attempts = 1;
	cell->max_turns = 1;

	if (!json_object_is_type(jcell, json_type_object))
	{
		cas_error(b->err, ncell, "cell %d must be a mapping with \"name\" and \"instructions\"", i + 1);
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
cas_build(CasBuild *b, const CasNode *nroot)
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
		cas_error(err, nroot, "cascade definition must be a YAML mapping");
		rv_error_hint(err, "A cascade has keys such as \"cascade_id:\" and \"cells:\".");
		return false;
	}

	cas_get(root, nroot, "cascade_id", &v);
	if (!cas_string(&v, &c->cascade_id, err))
	{
		cas_error(err, cas_where(&v, nroot), "\"cascade_id\" must be a string");
		return false;
	}
	cas_get(root, nroot, "description", &v);
	if (!cas_string(&v, &c->description, err))
	{
		cas_error(err, cas_where(&v, nroot), "\"description\" must be a string");
		return false;
	}
	cas_get(root, nroot, "model", &v);
	if (!cas_string(&v, &c->model, err) || (c->model != NULL && c->model[0] == '\0'))
	{
		cas_error(err, cas_where(&v, nroot), "\"model\" must be a non-empty string");
		return false;
	}
	cas_get(root, nroot, "inputs_schema", &v);
	if (v.present)
	{
		if (!json_object_is_type(v.json, json_type_object))
		{
			cas_error(err, cas_where(&v, nroot), "\"inputs_schema\" must be a mapping");
			rv_error_hint(err, "Map each input name to its description, for example {product_name: \"the product title\"}.");
			return false;
		}
		c->inputs_schema = v.json;
	}

	cas_get(root, nroot, "cells", &v);
	cas_get(root, nroot, "phases", &phases);
	if (v.key != NULL && phases.key != NULL)
	{
		cas_error(err, phases.key, "cascade has both \"cells\" and \"phases\"");
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
		cas_error(err, cas_where(&v, nroot), "\"%s\" must be a list of cells", cells_key);
		rv_error_hint(err, "Add a \"cells:\" list with at least one cell that has a name and instructions.");
		return false;
	}
	n = v.present ? (int) json_object_array_length(v.json) : 0;
	if (n == 0)
	{
		cas_error(err, cas_where(&v, nroot), "cascade has no cells");
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
		const CasNode *ncell = NULL;

		if (v.node != NULL && v.node->kind == CAS_SEQUENCE && i < v.node->nitems)
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
	CasDoc	   *doc;
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
	doc = cas_load(text, len, &root, err);
	if (doc == NULL)
		return NULL;
	b.cascade = calloc(1, sizeof(RvCascade));
	if (b.cascade == NULL)
	{
		json_object_put(root);
		cas_doc_free(doc);
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
	ok = cas_build(&b, doc->root);
	free(b.name_head);
	free(b.name_next);
	cas_doc_free(doc);
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
	for (p = name; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c < 0x20 || c == 0x7f || c == '\\')
		{
			const char *q;
			int			chars = 0;

			rv_error_set(err, "cascade name contains a control character or a backslash");
			/* count characters, not bytes (UTF-8 continuation bytes) */
			for (q = name; q <= p; q++)
				if ((((unsigned char) *q) & 0xC0) != 0x80)
					chars++;
			rv_error_detail(err, "Character %d of the name is not allowed.", chars);
			return false;
		}
	}
	for (p = name; *p; p++)
	{
		int			n = cas_invisible_len((const unsigned char *) p);

		if (n > 0)
		{
			const char *q;
			int			chars = 0;

			for (q = name; q <= p; q++)
				if ((((unsigned char) *q) & 0xC0) != 0x80)
					chars++;
			rv_error_set(err, "cascade name contains an invisible or space-like character");
			rv_error_detail(err, "Character %d of the name (U+%04X) is not allowed: "
							"it would make a name that looks like another one.",
							chars, cas_utf8_code((const unsigned char *) p, n));
			return false;
		}
	}
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
