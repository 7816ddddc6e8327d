/*-------------------------------------------------------------------------
 *
 * pgjsonc.h
 *	  Include PostgreSQL's function prototypes and json-c together.
 *
 * utils/fmgrprotos.h declares the SQL function json_object(), which is
 * also the name of json-c's value type.  Server files that use json-c
 * include this header before any other header that pulls in
 * fmgrprotos.h (utils/builtins.h does): the prototype is renamed while it
 * is read, and the include guard keeps it from being read again.
 *
 * It also makes every json-c allocation in server code checked: the
 * constructors, the serialisers and the container adds are wrapped so that
 * a failed allocation raises ERRCODE_OUT_OF_MEMORY instead of handing NULL
 * on (json-c reports out-of-memory only by its return values).  Server
 * code calls json-c directly, never from inside a library callback, so
 * raising there is allowed.  The pure modules (cascade.c, llm.c, ...) do
 * not include this header; they check json-c's results themselves and
 * return an RvError.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_PGJSONC_H
#define RV_PGJSONC_H

#define json_object pg_sql_json_object
#include "utils/fmgrprotos.h"
#include "utils/builtins.h"
#undef json_object

#include <json-c/json.h>

/* Raise the out-of-memory error of a failed json-c allocation. */
static inline void
rv_json_oom(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("out of memory"),
			 errdetail("A JSON value could not be allocated.")));
}

/* A json-c value that must not be NULL. */
static inline json_object *
rv_json_checked(json_object *v)
{
	if (v == NULL)
		rv_json_oom();
	return v;
}

/* A json-c serialisation that must not be NULL. */
static inline const char *
rv_json_str_checked(const char *s)
{
	if (s == NULL)
		rv_json_oom();
	return s;
}

/* The result of json_object_array_add / json_object_object_add. */
static inline int
rv_json_add_checked(int rc)
{
	if (rc != 0)
		rv_json_oom();
	return rc;
}

/*
 * The checked spellings.  A function-like macro does not expand inside its
 * own expansion, so each calls the json-c function of the same name.
 */
#define json_object_new_object() rv_json_checked(json_object_new_object())
#define json_object_new_array() rv_json_checked(json_object_new_array())
#define json_object_new_string(s) rv_json_checked(json_object_new_string(s))
#define json_object_new_string_len(s, n) rv_json_checked(json_object_new_string_len((s), (n)))
#define json_object_new_int(i) rv_json_checked(json_object_new_int(i))
#define json_object_new_int64(i) rv_json_checked(json_object_new_int64(i))
#define json_object_new_double(d) rv_json_checked(json_object_new_double(d))
#define json_object_new_boolean(b) rv_json_checked(json_object_new_boolean(b))
#define json_object_to_json_string_ext(o, f) rv_json_str_checked(json_object_to_json_string_ext((o), (f)))
#define json_object_to_json_string(o) rv_json_str_checked(json_object_to_json_string(o))
#define json_object_array_add(a, v) rv_json_add_checked(json_object_array_add((a), (v)))
#define json_object_object_add(o, k, v) rv_json_add_checked(json_object_object_add((o), (k), (v)))

#endif							/* RV_PGJSONC_H */
