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
 *-------------------------------------------------------------------------
 */
#ifndef RV_PGJSONC_H
#define RV_PGJSONC_H

#define json_object pg_sql_json_object
#include "utils/fmgrprotos.h"
#include "utils/builtins.h"
#undef json_object

#include <json-c/json.h>

#endif							/* RV_PGJSONC_H */
