/*
 * single_row: run one query in libpq's single-row mode and print each row's
 * columns, tab-separated, as soon as it arrives (stdout flushed per row).
 * TAP 040 uses it to check that MAP rows reach such a client while later
 * calls are still pending (psql 17+ implements FETCH_COUNT this way).
 *
 *   single_row CONNINFO QUERY
 */
#include <stdio.h>
#include <stdlib.h>
#include <libpq-fe.h>

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	PGresult   *res;
	int			rc = 0;

	if (argc != 3)
	{
		fprintf(stderr, "usage: single_row CONNINFO QUERY\n");
		return 2;
	}
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	if (!PQsendQuery(conn, argv[2]) || !PQsetSingleRowMode(conn))
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	while ((res = PQgetResult(conn)) != NULL)
	{
		ExecStatusType st = PQresultStatus(res);

		if (st == PGRES_SINGLE_TUPLE)
		{
			for (int c = 0; c < PQnfields(res); c++)
				printf("%s%s", c ? "\t" : "", PQgetvalue(res, 0, c));
			printf("\n");
			fflush(stdout);
		}
		else if (st != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "%s", PQresultErrorMessage(res));
			rc = 1;
		}
		PQclear(res);
	}
	printf("done\n");
	PQfinish(conn);
	return rc;
}
