/*-------------------------------------------------------------------------
 *
 * map.h
 *	  Options and cascade resolution shared by run, map and the statement
 *	  rewrite.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_MAP_H
#define RV_MAP_H

#include "utils/jsonb.h"
#include "cascade.h"

typedef enum RvOnError
{
	RV_ON_ERROR_NULL,
	RV_ON_ERROR_FAIL,
	RV_ON_ERROR_VALUE
} RvOnError;

typedef struct RvOptions
{
	char	   *model;			/* or NULL */
	bool		cache_read;
	bool		cache_write;
	long		cache_max_age_s;	/* -1: any age */
	long		timeout_ms;
	int			max_retries;
	RvOnError	on_error;
	bool		on_error_given;
	int			parallel;		/* -1: not given */
	int64		limit;			/* -1: not given */
} RvOptions;

extern void rv_parse_options(Jsonb *jb, RvOptions *o);
extern char *rv_resolve_cascade(const char *ref, char **display);
extern RvCascade *rv_check_cascade(const char *display, const char *def);

#endif							/* RV_MAP_H */
