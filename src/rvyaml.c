/*-------------------------------------------------------------------------
 *
 * rvyaml.c
 *	  YAML text to json-c values, with a node tree that keeps positions.
 *
 * The YAML is read with libyaml's event parser into a small node tree of
 * our own that keeps every node's position (libyaml marks), so that each
 * error about a cascade can name the line and column it is about.  The
 * tree is then turned into json-c values; cascade.c reads the cascade from
 * the JSON and the tree side by side: the JSON gives the values, the tree
 * gives the positions.
 *
 * Limits: nesting depth 64 (in the text and after expanding aliases), and
 * 100000 nodes in all, counting every expansion of an alias (against
 * "billion laughs").  Aliases may only refer to complete nodes, so the
 * tree has no cycles.  The parse is iterative; only the conversion to JSON
 * recurses, at most YML_MAX_DEPTH levels deep.
 *
 * Pure: no PostgreSQL headers, no global state; memory is malloc'd and
 * freed by rv_yaml_doc_free().  Errors go to an RvError, never raised.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rvyaml.h"

#define YML_MAX_DEPTH 64
#define YML_MAX_NODES 100000
#define YML_ANCHOR_BUCKETS 256

/* an anchor name and the node it names */
typedef struct YmlAnchor
{
	char	   *name;
	RvYamlNode *node;
	struct YmlAnchor *next;
} YmlAnchor;

/* a parsed YAML stream: the first non-empty document's root and all nodes */
typedef struct RvYamlDoc
{
	const char *text;
	size_t		len;
	RvYamlNode *nodes;			/* allocation list */
	int			nnodes;
	RvYamlNode *root;			/* NULL when the stream had no content */
	YmlAnchor  *anchors[YML_ANCHOR_BUCKETS];
} RvYamlDoc;

/* state of one conversion of a node tree to JSON */
typedef struct YmlConv
{
	int			count;			/* JSON values made so far */
	RvError    *err;
} YmlConv;

/* ----------------------------------------------------------------
 *		Errors and positions
 * ----------------------------------------------------------------
 */

/* Set err's position from a libyaml mark (0-based line and column). */
void
rv_yaml_mark_loc(RvError *err, const yaml_mark_t *mark)
{
	err->line = (int) mark->line + 1;
	err->column = (int) mark->column + 1;
	err->position = (int) mark->index + 1;
}

/*
 * Record an error at node's position (or without one when node is NULL).
 * Like rv_error_set(), keeps an earlier error and its position.
 */
void
rv_yaml_error(RvError *err, const RvYamlNode *node, const char *fmt,...)
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
		rv_yaml_mark_loc(err, &node->start);
}

/*
 * Set err's line and column (1-based, column in characters) and compute
 * the matching 1-based character position by scanning text.  A line or
 * column past the end is clamped.
 */
void
rv_yaml_set_loc(RvError *err, const char *text, size_t len, int line, int column)
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
size_t
rv_yaml_line_offset(const char *text, size_t len, int line)
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
yml_parser_error(RvError *err, yaml_parser_t *parser, const char *text, size_t len)
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
		rv_yaml_set_loc(err, text, len, line, col);
		if (parser->problem_value != -1)
			rv_error_detail(err, "The offending byte is 0x%02x at byte offset %zu.",
							(unsigned) parser->problem_value & 0xFF, parser->problem_offset);
		return;
	}
	rv_yaml_mark_loc(err, &parser->problem_mark);
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

/* Forget the anchors of the previous document (anchors are per document). */
static void
yml_anchors_reset(RvYamlDoc *doc)
{
	int			b;

	for (b = 0; b < YML_ANCHOR_BUCKETS; b++)
	{
		YmlAnchor  *a = doc->anchors[b];

		while (a != NULL)
		{
			YmlAnchor  *next = a->next;

			free(a->name);
			free(a);
			a = next;
		}
		doc->anchors[b] = NULL;
	}
}

/* Free a document and all its nodes and anchors. */
void
rv_yaml_doc_free(RvYamlDoc *doc)
{
	RvYamlNode *n;

	if (doc == NULL)
		return;
	n = doc->nodes;
	while (n != NULL)
	{
		RvYamlNode *next = n->next_alloc;

		free(n->value);
		free(n->anchor);
		free(n->items);
		free(n);
		n = next;
	}
	yml_anchors_reset(doc);
	free(doc);
}

/* The document's root node (never NULL for a document from rv_yaml_load). */
const RvYamlNode *
rv_yaml_doc_root(const RvYamlDoc *doc)
{
	return doc->root;
}

/* Bucket of an anchor name. */
static unsigned
yml_anchor_hash(const char *name)
{
	unsigned	h = 5381;

	while (*name)
		h = h * 33 + (unsigned char) *name++;
	return h % YML_ANCHOR_BUCKETS;
}

/* Name node with anchor (a later anchor of the same name hides it). */
static bool
yml_anchor_add(RvYamlDoc *doc, const char *name, RvYamlNode *node)
{
	YmlAnchor  *a = malloc(sizeof(YmlAnchor));
	unsigned	h = yml_anchor_hash(name);

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
static RvYamlNode *
yml_anchor_find(RvYamlDoc *doc, const char *name)
{
	YmlAnchor  *a;

	for (a = doc->anchors[yml_anchor_hash(name)]; a != NULL; a = a->next)
	{
		if (strcmp(a->name, name) == 0)
			return a->node;
	}
	return NULL;
}

/* Allocate a node of kind at mark, counting it against the node limit. */
static RvYamlNode *
yml_node_new(RvYamlDoc *doc, RvYamlKind kind, const yaml_mark_t *start,
			 const yaml_mark_t *end, RvError *err)
{
	RvYamlNode *n;

	if (doc->nnodes >= YML_MAX_NODES)
	{
		rv_error_set(err, "YAML document has too many nodes");
		rv_error_detail(err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
						YML_MAX_NODES);
		rv_yaml_mark_loc(err, start);
		return NULL;
	}
	n = calloc(1, sizeof(RvYamlNode));
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
yml_node_append(RvYamlNode *parent, RvYamlNode *child, RvError *err)
{
	if (parent->nitems == parent->cap)
	{
		int			cap = parent->cap ? parent->cap * 2 : 4;
		RvYamlNode **items = realloc(parent->items, (size_t) cap * sizeof(RvYamlNode *));

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
typedef struct YmlKeyRef
{
	RvYamlNode *key;
	int			index;
} YmlKeyRef;

/* Order keys by text (as C strings, as json-c sees them), then position. */
static int
yml_key_cmp(const void *a, const void *b)
{
	const YmlKeyRef *x = a;
	const YmlKeyRef *y = b;
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
yml_check_duplicates(RvYamlNode *map, RvError *err)
{
	int			nkeys = map->nitems / 2;
	YmlKeyRef  *refs;
	YmlKeyRef  *first = NULL;
	YmlKeyRef  *second = NULL;
	int			i;

	if (nkeys < 2)
		return true;
	refs = malloc((size_t) nkeys * sizeof(YmlKeyRef));
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
	qsort(refs, (size_t) nkeys, sizeof(YmlKeyRef), yml_key_cmp);
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
		rv_yaml_error(err, second->key, "duplicate key \"%s\"", shown);
		rv_error_detail(err, "The key first appears at line %d.",
						(int) first->key->start.line + 1);
	}
	free(refs);
	return second == NULL;
}

/* state of one parse: the open containers and the current document */
typedef struct YmlParse
{
	RvYamlDoc  *doc;
	RvYamlNode *stack[YML_MAX_DEPTH + 1];	/* open sequences and mappings */
	int			depth;
	RvYamlNode *docroot;		/* root of the current document, or NULL */
	RvError    *err;
} YmlParse;

/*
 * Attach a finished or newly opened node to the open container on top of
 * the stack, or make it the document root.  A mapping key must be a
 * scalar.
 */
static bool
yml_attach(YmlParse *ps, RvYamlNode *node, const yaml_mark_t *mark)
{
	RvYamlNode *parent;

	if (ps->depth == 0)
	{
		ps->docroot = node;
		return true;
	}
	parent = ps->stack[ps->depth - 1];
	if (parent->kind == RV_YAML_MAPPING && parent->nitems % 2 == 0 &&
		node->kind != RV_YAML_SCALAR)
	{
		rv_error_set(ps->err, "mapping key must be a scalar, not a %s",
					 node->kind == RV_YAML_MAPPING ? "mapping" : "sequence");
		rv_yaml_mark_loc(ps->err, mark);
		return false;
	}
	return yml_node_append(parent, node, ps->err);
}

/* True for a document root that holds nothing (an empty plain scalar). */
static bool
yml_is_empty_root(const RvYamlNode *root)
{
	return root == NULL ||
		(root->kind == RV_YAML_SCALAR && root->len == 0 &&
		 root->style == YAML_PLAIN_SCALAR_STYLE && root->resolve == RV_YAML_RESOLVE_PLAIN);
}

/* How a scalar with this tag and style is to be typed. */
static RvYamlResolve
yml_resolve_kind(const char *tag, yaml_scalar_style_t style)
{
	if (tag == NULL || tag[0] == '\0')
		return style == YAML_PLAIN_SCALAR_STYLE ? RV_YAML_RESOLVE_PLAIN : RV_YAML_RESOLVE_STRING;
	if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_STR_TAG) == 0)
		return RV_YAML_RESOLVE_STRING;
	if (strcmp(tag, YAML_NULL_TAG) == 0 || strcmp(tag, YAML_BOOL_TAG) == 0 ||
		strcmp(tag, YAML_INT_TAG) == 0 || strcmp(tag, YAML_FLOAT_TAG) == 0)
		return RV_YAML_RESOLVE_PLAIN;
	/* an application tag: ignore it */
	return style == YAML_PLAIN_SCALAR_STYLE ? RV_YAML_RESOLVE_PLAIN : RV_YAML_RESOLVE_STRING;
}

/*
 * A document ended: keep its root as the stream's, unless it is empty.  A
 * second non-empty document is an error.
 */
static bool
yml_on_document_end(YmlParse *ps)
{
	if (yml_is_empty_root(ps->docroot))
		return true;
	if (ps->doc->root != NULL)
	{
		rv_error_set(ps->err, "cascade definition contains more than one YAML document");
		rv_error_hint(ps->err, "Remove the \"---\" line, or give each cascade its own definition.");
		rv_yaml_mark_loc(ps->err, &ps->docroot->start);
		return false;
	}
	ps->doc->root = ps->docroot;
	return true;
}

/* An alias: attach the node its anchor names (shared, not copied). */
static bool
yml_on_alias(YmlParse *ps, const yaml_event_t *event)
{
	RvYamlNode *node = yml_anchor_find(ps->doc, (const char *) event->data.alias.anchor);

	if (node == NULL)
	{
		rv_error_set(ps->err, "could not parse YAML: found undefined alias \"%.100s\"",
					 (const char *) event->data.alias.anchor);
		rv_yaml_mark_loc(ps->err, &event->start_mark);
		return false;
	}
	return yml_attach(ps, node, &event->start_mark);
}

/* A scalar: copy its text, note how it resolves, name it, attach it. */
static bool
yml_on_scalar(YmlParse *ps, const yaml_event_t *event)
{
	RvYamlNode *node;

	node = yml_node_new(ps->doc, RV_YAML_SCALAR, &event->start_mark, &event->end_mark, ps->err);
	if (node == NULL)
		return false;
	node->len = event->data.scalar.length;
	node->value = malloc(node->len + 1);
	if (node->value == NULL)
	{
		rv_error_set(ps->err, "out of memory");
		return false;
	}
	memcpy(node->value, event->data.scalar.value, node->len);
	node->value[node->len] = '\0';
	node->style = event->data.scalar.style;
	node->resolve = yml_resolve_kind((const char *) event->data.scalar.tag,
									 event->data.scalar.style);
	if (event->data.scalar.anchor != NULL &&
		!yml_anchor_add(ps->doc, (const char *) event->data.scalar.anchor, node))
	{
		rv_error_set(ps->err, "out of memory");
		return false;
	}
	return yml_attach(ps, node, &event->start_mark);
}

/*
 * A sequence or mapping starts: attach it and push it on the stack.  Its
 * anchor is only remembered here; the node is named when it is complete
 * (yml_on_close), so that it cannot contain itself.
 */
static bool
yml_on_open(YmlParse *ps, const yaml_event_t *event)
{
	bool		mapping = event->type == YAML_MAPPING_START_EVENT;
	const yaml_char_t *anchor;
	RvYamlNode *node;

	if (ps->depth >= YML_MAX_DEPTH)
	{
		rv_error_set(ps->err, "YAML document is nested too deeply");
		rv_error_detail(ps->err, "Lists and mappings may be nested at most %d levels deep.",
						YML_MAX_DEPTH);
		rv_yaml_mark_loc(ps->err, &event->start_mark);
		return false;
	}
	node = yml_node_new(ps->doc, mapping ? RV_YAML_MAPPING : RV_YAML_SEQUENCE,
						&event->start_mark, &event->end_mark, ps->err);
	if (node == NULL)
		return false;
	anchor = mapping ? event->data.mapping_start.anchor : event->data.sequence_start.anchor;
	if (anchor != NULL)
	{
		node->anchor = strdup((const char *) anchor);
		if (node->anchor == NULL)
		{
			rv_error_set(ps->err, "out of memory");
			return false;
		}
	}
	if (!yml_attach(ps, node, &event->start_mark))
		return false;
	ps->stack[ps->depth++] = node;
	return true;
}

/*
 * A sequence or mapping ends: pop it, check a mapping for duplicate keys,
 * and name it with its pending anchor.
 */
static bool
yml_on_close(YmlParse *ps, const yaml_event_t *event)
{
	RvYamlNode *node;

	if (ps->depth == 0)
		return true;			/* cannot happen: libyaml balances events */
	node = ps->stack[--ps->depth];
	node->end = event->end_mark;
	if (node->kind == RV_YAML_MAPPING && !yml_check_duplicates(node, ps->err))
		return false;
	if (node->anchor != NULL)
	{
		if (!yml_anchor_add(ps->doc, node->anchor, node))
		{
			rv_error_set(ps->err, "out of memory");
			return false;
		}
		free(node->anchor);
		node->anchor = NULL;
	}
	return true;
}

/*
 * Parse YAML text into a node tree.  Returns NULL with err set on a libyaml
 * error, an undefined alias, a non-scalar key, a duplicate key, nesting
 * deeper than YML_MAX_DEPTH, too many nodes, or more than one non-empty
 * document.  An empty stream gives a document whose root is NULL.
 */
static RvYamlDoc *
yml_doc_parse(const char *text, size_t len, RvError *err)
{
	yaml_parser_t parser;
	yaml_event_t event;
	YmlParse	ps;
	bool		done = false;
	bool		ok = true;

	memset(&ps, 0, sizeof(ps));
	ps.err = err;
	ps.doc = calloc(1, sizeof(RvYamlDoc));
	if (ps.doc == NULL)
	{
		rv_error_set(err, "out of memory");
		return NULL;
	}
	ps.doc->text = text;
	ps.doc->len = len;
	if (!yaml_parser_initialize(&parser))
	{
		rv_error_set(err, "out of memory");
		free(ps.doc);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *) text, len);

	while (ok && !done)
	{
		if (!yaml_parser_parse(&parser, &event))
		{
			yml_parser_error(err, &parser, text, len);
			ok = false;
			break;
		}
		switch (event.type)
		{
			case YAML_STREAM_END_EVENT:
				done = true;
				break;
			case YAML_DOCUMENT_START_EVENT:
				/* anchors are per document */
				yml_anchors_reset(ps.doc);
				ps.docroot = NULL;
				break;
			case YAML_DOCUMENT_END_EVENT:
				ok = yml_on_document_end(&ps);
				break;
			case YAML_ALIAS_EVENT:
				ok = yml_on_alias(&ps, &event);
				break;
			case YAML_SCALAR_EVENT:
				ok = yml_on_scalar(&ps, &event);
				break;
			case YAML_SEQUENCE_START_EVENT:
			case YAML_MAPPING_START_EVENT:
				ok = yml_on_open(&ps, &event);
				break;
			case YAML_SEQUENCE_END_EVENT:
			case YAML_MAPPING_END_EVENT:
				ok = yml_on_close(&ps, &event);
				break;
			default:
				break;
		}
		yaml_event_delete(&event);
	}
	yaml_parser_delete(&parser);
	if (!ok)
	{
		rv_yaml_doc_free(ps.doc);
		return NULL;
	}
	return ps.doc;
}

/* ----------------------------------------------------------------
 *		Node tree to JSON
 * ----------------------------------------------------------------
 */

/* Case-insensitive comparison of s (n bytes) with the word w. */
static bool
yml_word(const char *s, size_t n, const char *w)
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
yml_digit(char c, int base)
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
yml_parse_int(const char *s, size_t n, bool *matched)
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
		d = yml_digit(s[i], base);
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
yml_parse_float(const char *s, size_t n, bool *matched)
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
	if (yml_word(s + start, n - start, ".inf"))
	{
		*matched = true;
		return json_object_new_double(neg ? -INFINITY : INFINITY);
	}
	if (start == 0 && yml_word(s, n, ".nan"))
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
yml_scalar_json(const RvYamlNode *node)
{
	const char *s = node->value;
	size_t		n = node->len;
	json_object *v;
	bool		matched;

	if (node->resolve == RV_YAML_RESOLVE_STRING)
		return json_object_new_string_len(s, (int) n);
	if (n == 0 || (n == 1 && s[0] == '~') ||
		(n == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 ||
					memcmp(s, "NULL", 4) == 0)))
		return NULL;
	if (yml_word(s, n, "true") || yml_word(s, n, "yes") || yml_word(s, n, "on"))
		return json_object_new_boolean(1);
	if (yml_word(s, n, "false") || yml_word(s, n, "no") || yml_word(s, n, "off"))
		return json_object_new_boolean(0);
	v = yml_parse_int(s, n, &matched);
	if (matched)
		return v;
	v = yml_parse_float(s, n, &matched);
	if (matched)
		return v;
	return json_object_new_string_len(s, (int) n);
}

/*
 * Convert node to JSON in *out; depth counts the enclosing containers,
 * node included.  Returns false with cv->err set when containers nest
 * (after alias expansion) deeper than YML_MAX_DEPTH or more than
 * YML_MAX_NODES values would be made.
 */
static bool
yml_convert(YmlConv *cv, const RvYamlNode *node, int depth, json_object **out)
{
	json_object *result;
	int			i;

	*out = NULL;
	if (node->kind != RV_YAML_SCALAR && depth > YML_MAX_DEPTH)
	{
		rv_error_set(cv->err, "YAML document is nested too deeply");
		rv_error_detail(cv->err, "Lists and mappings may be nested at most %d levels deep, counting the expansion of aliases.",
						YML_MAX_DEPTH);
		rv_yaml_mark_loc(cv->err, &node->start);
		return false;
	}
	if (++cv->count > YML_MAX_NODES)
	{
		rv_error_set(cv->err, "YAML document has too many nodes");
		rv_error_detail(cv->err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
						YML_MAX_NODES);
		rv_yaml_mark_loc(cv->err, &node->start);
		return false;
	}
	if (node->kind == RV_YAML_SCALAR)
	{
		*out = yml_scalar_json(node);
		return true;
	}
	if (node->kind == RV_YAML_SEQUENCE)
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

			if (!yml_convert(cv, node->items[i], depth + 1, &child))
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
		if (++cv->count > YML_MAX_NODES)
		{
			rv_error_set(cv->err, "YAML document has too many nodes");
			rv_error_detail(cv->err, "A cascade definition may have at most %d nodes, counting each use of an alias.",
							YML_MAX_NODES);
			rv_yaml_mark_loc(cv->err, &node->items[i]->start);
			json_object_put(result);
			return false;
		}
		if (!yml_convert(cv, node->items[i + 1], depth + 1, &child))
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
 * (to be freed with rv_yaml_doc_free) or NULL with err set; an empty stream is
 * the error "cascade definition is empty".
 */
RvYamlDoc *
rv_yaml_load(const char *text, size_t len, json_object **out, RvError *err)
{
	RvYamlDoc  *doc;
	YmlConv		cv;

	*out = NULL;
	if (text == NULL)
		len = 0;
	doc = yml_doc_parse(text ? text : "", len, err);
	if (doc == NULL)
		return NULL;
	if (doc->root == NULL)
	{
		rv_error_set(err, "cascade definition is empty");
		rv_yaml_doc_free(doc);
		return NULL;
	}
	cv.count = 0;
	cv.err = err;
	if (!yml_convert(&cv, doc->root, 1, out))
	{
		rv_yaml_doc_free(doc);
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
	RvYamlDoc  *doc;
	json_object *result;

	if (err == NULL)
	{
		rv_error_clear(&local);
		err = &local;
	}
	doc = rv_yaml_load(text, len, &result, err);
	if (doc == NULL)
		return NULL;
	rv_yaml_doc_free(doc);
	return result;
}
