/*-------------------------------------------------------------------------
 *
 * unit.h
 *	  A minimal test harness for the pure-module unit tests.
 *
 * Each check prints "ok N - description" or "not ok N - description"
 * (TAP-like); unit_done() prints the plain summary line
 * "unit <name>: N passed, N failed" and returns the exit status.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_UNIT_H
#define RV_UNIT_H

#include <stdio.h>
#include <string.h>

static int	unit_passed;
static int	unit_failed;

#define CHECK(cond, desc) \
	do { \
		if (cond) { unit_passed++; printf("ok %d - %s\n", unit_passed + unit_failed, (desc)); } \
		else { unit_failed++; printf("not ok %d - %s (%s:%d: %s)\n", unit_passed + unit_failed, (desc), __FILE__, __LINE__, #cond); } \
	} while (0)

#define CHECK_STR(got, want, desc) \
	do { \
		const char *g_ = (got); const char *w_ = (want); \
		if (g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0) { unit_passed++; printf("ok %d - %s\n", unit_passed + unit_failed, (desc)); } \
		else { unit_failed++; printf("not ok %d - %s\n#   got:  %s\n#   want: %s\n", unit_passed + unit_failed, (desc), g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } \
	} while (0)

static inline int
unit_done(const char *name)
{
	printf("unit %s: %d passed, %d failed\n", name, unit_passed, unit_failed);
	return unit_failed == 0 ? 0 : 1;
}

#endif							/* RV_UNIT_H */
