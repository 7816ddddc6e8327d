/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The one place where rvbbit deals with differences between the
 *	  PostgreSQL major versions it supports (15, 17 and 18 are built and
 *	  tested; 16 lies between and is covered by the same guards).
 *
 * Every version-dependent call or declaration in the sources goes through
 * a macro here; no other file tests PG_VERSION_NUM.  rvbbit.h includes it.
 * The macros expand where they are used, so the file using one includes
 * the headers that declare what it wraps (each section names them).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RVBBIT_COMPAT_H
#define RVBBIT_COMPAT_H

/*
 * Name lists and type names from strings (catalog/namespace.h,
 * parser/parse_type.h): 16 added an escontext argument for soft errors;
 * NULL keeps the old behaviour of throwing.
 */
#if PG_VERSION_NUM >= 160000
#define rv_stringToQualifiedNameList(s)	stringToQualifiedNameList((s), NULL)
#define rv_typeStringToTypeName(s)		typeStringToTypeName((s), NULL)
#else
#define rv_stringToQualifiedNameList(s)	stringToQualifiedNameList(s)
#define rv_typeStringToTypeName(s)		typeStringToTypeName(s)
#endif

/*
 * A wait event set that lives as long as the process (storage/latch.h):
 * 17 ties the set to a resource owner instead of a memory context; a NULL
 * owner means "not released with any owner", and the set is allocated in
 * TopMemoryContext, as before.
 */
#if PG_VERSION_NUM >= 170000
#define rv_CreateWaitEventSet(nevents)	CreateWaitEventSet(NULL, (nevents))
#else
#define rv_CreateWaitEventSet(nevents)	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * A relation range table entry of query added only to record a dependency
 * (a prepared statement's plan is invalidated when the relation changes),
 * never to check permissions (parser/parse_relation.h).  Up to 15 the
 * permissions to check are in the entry (requiredPerms); from 16 on every
 * relation entry needs an RTEPermissionInfo in query->rteperminfos, and
 * addRTEPermissionInfo makes one that requires nothing.
 */
#if PG_VERSION_NUM >= 160000
#define rv_rte_no_permission_check(query, rte) \
	((void) addRTEPermissionInfo(&(query)->rteperminfos, (rte)))
#else
#define rv_rte_no_permission_check(query, rte)	((rte)->requiredPerms = 0)
#endif

/*
 * A database that an interrupted DROP DATABASE left invalid
 * (catalog/pg_database.h): its datconnlimit is DATCONNLIMIT_INVALID_DB
 * in 17, 18 and the minor releases of 15 and 16 since August 2023; such
 * a database accepts no connections.
 */
#ifdef DATCONNLIMIT_INVALID_DB
#define rv_database_is_invalid(db)	((db)->datconnlimit == DATCONNLIMIT_INVALID_DB)
#else
#define rv_database_is_invalid(db)	((void) (db), false)
#endif

/*
 * Per-object privilege checks (utils/acl.h): 16 replaced the
 * pg_<kind>_aclcheck functions with object_aclcheck(classid, ...).
 * Include catalog/pg_namespace.h, pg_proc.h, pg_database.h for the
 * classid constants.
 */
#if PG_VERSION_NUM >= 160000
#define rv_namespace_aclcheck(oid, role, mode) \
	object_aclcheck(NamespaceRelationId, (oid), (role), (mode))
#define rv_proc_aclcheck(oid, role, mode) \
	object_aclcheck(ProcedureRelationId, (oid), (role), (mode))
#define rv_database_aclcheck(oid, role, mode) \
	object_aclcheck(DatabaseRelationId, (oid), (role), (mode))
#else
#define rv_namespace_aclcheck(oid, role, mode)	pg_namespace_aclcheck((oid), (role), (mode))
#define rv_proc_aclcheck(oid, role, mode)		pg_proc_aclcheck((oid), (role), (mode))
#define rv_database_aclcheck(oid, role, mode)	pg_database_aclcheck((oid), (role), (mode))
#endif

/*
 * ExecutorRun_hook (executor/executor.h): 18 dropped execute_once.  A hook
 * is declared and chained as
 *
 *	static void rv_ExecutorRun(RV_EXECUTOR_RUN_PARAMS);
 *	...
 *	if (prev_ExecutorRun)
 *		prev_ExecutorRun(RV_EXECUTOR_RUN_ARGS);
 *	else
 *		standard_ExecutorRun(RV_EXECUTOR_RUN_ARGS);
 *
 * with the parameters named queryDesc, direction, count (, execute_once).
 */
#if PG_VERSION_NUM >= 180000
#define RV_EXECUTOR_RUN_PARAMS \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count
#define RV_EXECUTOR_RUN_ARGS	queryDesc, direction, count
#else
#define RV_EXECUTOR_RUN_PARAMS \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once
#define RV_EXECUTOR_RUN_ARGS	queryDesc, direction, count, execute_once
#endif

/*
 * A background worker connecting as a role without LOGIN
 * (postmaster/bgworker.h): 17 added BGWORKER_BYPASS_ROLELOGINCHECK; before
 * it such a connection fails, so the callers check rolcanlogin first when
 * RV_BGW_NEEDS_LOGIN is true.
 */
#ifdef BGWORKER_BYPASS_ROLELOGINCHECK
#define RV_BGW_NEEDS_LOGIN	false
#define rv_BackgroundWorkerConnectAsRole(dboid, roleoid) \
	BackgroundWorkerInitializeConnectionByOid((dboid), (roleoid), BGWORKER_BYPASS_ROLELOGINCHECK)
#else
#define RV_BGW_NEEDS_LOGIN	true
#define rv_BackgroundWorkerConnectAsRole(dboid, roleoid) \
	BackgroundWorkerInitializeConnectionByOid((dboid), (roleoid), 0)
#endif

/*
 * EXPLAIN's property functions (ExplainPropertyInteger, ...): 18 moved
 * their declarations from commands/explain.h to commands/explain_format.h,
 * which needs nothing else, so it is included here for every file.
 */
#if PG_VERSION_NUM >= 180000
#include "commands/explain_format.h"
#endif

/*
 * Index entries for a tuple just inserted, and the ON CONFLICT pre-check
 * (executor/executor.h): 16 added ExecInsertIndexTuples' onlySummarizing
 * (false: every index, as for an INSERT); 18 added the TID of a tuple
 * ExecCheckIndexConstraints is to ignore (invalid_tid: an item pointer
 * set with ItemPointerSetInvalid, the tuple not being inserted yet).
 * rv_ExecInsertIndexTuples is the plain INSERT's call: not an UPDATE, a
 * duplicate key is an error, no arbiter indexes.
 */
#if PG_VERSION_NUM >= 160000
#define rv_ExecInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define rv_ExecInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif
#if PG_VERSION_NUM >= 180000
#define rv_ExecCheckIndexConstraints(rri, slot, estate, conflict_tid, invalid_tid, arbiters) \
	ExecCheckIndexConstraints((rri), (slot), (estate), (conflict_tid), (invalid_tid), (arbiters))
#else
#define rv_ExecCheckIndexConstraints(rri, slot, estate, conflict_tid, invalid_tid, arbiters) \
	((void) (invalid_tid), \
	 ExecCheckIndexConstraints((rri), (slot), (estate), (conflict_tid), (arbiters)))
#endif

/*
 * A function that does not return (c.h): 18 replaced the postfix
 * pg_attribute_noreturn() with the prefix pg_noreturn (C11 _Noreturn).
 * Declare such a function as
 *
 *	pg_noreturn static void f(void);
 *
 * before 18 pg_noreturn is GCC's and Clang's attribute, also valid before
 * the declaration.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

#endif							/* RVBBIT_COMPAT_H */
