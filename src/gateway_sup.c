/*-------------------------------------------------------------------------
 *
 * gateway_sup.c
 *	  The supervisor of rvbbit-gateway: a background worker that starts the
 *	  gateway program (fork + exec), restarts it when it dies, and stops it
 *	  with the server; and the rvbbit.gateway_* GUCs.
 *
 * The gateway is a separate executable (src/gateway/), so a crash of the
 * network-facing code never forces the postmaster's crash restart.  The
 * supervisor holds the write end of a pipe whose read end the gateway
 * watches: when the supervisor exits for any reason (the postmaster's
 * death included, through WL_EXIT_ON_PM_DEATH) the gateway sees EOF and
 * exits; it also sets PR_SET_PDEATHSIG.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "rvbbit.h"

PGDLLEXPORT void rv_gateway_sup_main(Datum arg);

static int	gw_port = 0;
static char *gw_listen_addresses = NULL;
static bool gw_ssl = false;
static bool gw_allow_trust = false;

static pid_t gw_child = 0;
static int	gw_pipe_wr = -1;

/*
 * Define the rvbbit.gateway_* GUCs and, when the library is being
 * preloaded with rvbbit.gateway_port set, register the supervisor.
 * Called from _PG_init before MarkGUCPrefixReserved.
 */
void
rv_gateway_init(void)
{
	BackgroundWorker worker;

	DefineCustomIntVariable("rvbbit.gateway_port",
							"Sets the TCP port of the rvbbit gateway (literal RVBBIT statements from any client).",
							"0 turns the gateway off.",
							&gw_port, 0, 0, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("rvbbit.gateway_listen_addresses",
							   "Sets the addresses the rvbbit gateway listens on.",
							   "A comma-separated list of host names or addresses; * means all.",
							   &gw_listen_addresses, "localhost",
							   PGC_POSTMASTER, GUC_LIST_INPUT, NULL, NULL, NULL);
	DefineCustomBoolVariable("rvbbit.gateway_ssl",
							 "Makes the rvbbit gateway accept TLS, with the server's ssl_cert_file and ssl_key_file.",
							 NULL,
							 &gw_ssl, false,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("rvbbit.gateway_allow_trust",
							 "Lets the rvbbit gateway relay sessions the server accepts without authentication.",
							 "Off by default: with a trust line for loopback connections in pg_hba.conf every client of the gateway would be let in.",
							 &gw_allow_trust, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress || gw_port == 0)
		return;

	rv_bgworker_prepare(&worker, BgWorkerStart_ConsistentState, 5,
						"rv_gateway_sup_main", "rvbbit gateway supervisor");
	/* it runs a program and needs no database connection */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	RegisterBackgroundWorker(&worker);
}

/* SIGCHLD: wake the loop, which reaps the gateway. */
static void
sup_sigchld(SIGNAL_ARGS)
{
	int			save_errno = errno;

	SetLatch(MyLatch);
	errno = save_errno;
}

/* on_proc_exit: never leave the gateway behind. */
static void
sup_kill_child(int code, Datum arg)
{
	int			i;

	if (gw_child <= 0)
		return;
	kill(gw_child, SIGTERM);
	for (i = 0; i < 50; i++)
	{
		if (waitpid(gw_child, NULL, WNOHANG) == gw_child)
		{
			gw_child = 0;
			return;
		}
		pg_usleep(100000L);
	}
	kill(gw_child, SIGKILL);
	waitpid(gw_child, NULL, 0);
	gw_child = 0;
}

/* Append one argument to argv (palloc'd in the worker's context). */
static void
sup_arg(char **argv, int *argc, int max, const char *a)
{
	if (*argc < max - 1)
		argv[(*argc)++] = pstrdup(a);
}

/*
 * Fork and exec the gateway.  Returns the child's pid, or 0 when it could
 * not be started (logged).
 */
static pid_t
sup_start(void)
{
	char		path[MAXPGPATH];
	char	   *argv[80];
	int			argc = 0;
	char	   *list;
	char	   *tok;
	char	   *save;
	int			pfd[2];
	pid_t		pid;

	strlcpy(path, my_exec_path, sizeof(path));
	get_parent_directory(path);
	strlcat(path, "/rvbbit-gateway", sizeof(path));

	sup_arg(argv, &argc, lengthof(argv), path);
	list = pstrdup(gw_listen_addresses ? gw_listen_addresses : "localhost");
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		char	   *spec;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		while (*tok && (tok[strlen(tok) - 1] == ' ' || tok[strlen(tok) - 1] == '\t'))
			tok[strlen(tok) - 1] = '\0';
		if (*tok == '\0')
			continue;
		if (strchr(tok, ':') != NULL)
			spec = psprintf("[%s]:%d", tok, gw_port);
		else
			spec = psprintf("%s:%d", tok, gw_port);
		sup_arg(argv, &argc, lengthof(argv), "--listen");
		sup_arg(argv, &argc, lengthof(argv), spec);
	}
	sup_arg(argv, &argc, lengthof(argv), "--upstream");
	sup_arg(argv, &argc, lengthof(argv), psprintf("127.0.0.1:%d", PostPortNumber));
	if (gw_ssl)
	{
		const char *cert = GetConfigOption("ssl_cert_file", false, false);
		const char *key = GetConfigOption("ssl_key_file", false, false);

		sup_arg(argv, &argc, lengthof(argv), "--ssl-cert");
		sup_arg(argv, &argc, lengthof(argv), cert ? cert : "server.crt");
		sup_arg(argv, &argc, lengthof(argv), "--ssl-key");
		sup_arg(argv, &argc, lengthof(argv), key ? key : "server.key");
	}
	if (gw_allow_trust)
		sup_arg(argv, &argc, lengthof(argv), "--allow-trust");
	/* a client has as long for its first packets as the server gives it */
	sup_arg(argv, &argc, lengthof(argv), "--startup-timeout");
	sup_arg(argv, &argc, lengthof(argv), psprintf("%d", AuthenticationTimeout));
	sup_arg(argv, &argc, lengthof(argv), "--parent-fd");
	sup_arg(argv, &argc, lengthof(argv), "3");
	argv[argc] = NULL;

	if (pipe(pfd) != 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not create a pipe for the rvbbit gateway: %m")));
		return 0;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
	{
		ereport(LOG,
				(errmsg("could not fork the rvbbit gateway: %m")));
		close(pfd[0]);
		close(pfd[1]);
		return 0;
	}
	if (pid == 0)
	{
		sigset_t	none;
		int			sig;
		long		maxfd = sysconf(_SC_OPEN_MAX);
		int			fd;

		/* the child: only stdin/out/err and the pipe as fd 3 */
		if (pfd[0] != 3)
		{
			dup2(pfd[0], 3);
			close(pfd[0]);
		}
		if (maxfd < 0 || maxfd > 65536)
			maxfd = 65536;
		for (fd = 4; fd < maxfd; fd++)
			close(fd);
		for (sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(path, argv);
		fprintf(stderr, "rvbbit gateway supervisor: could not execute \"%s\": %s\n",
				path, strerror(errno));
		_exit(127);
	}
	close(pfd[0]);
	if (gw_pipe_wr >= 0)
		close(gw_pipe_wr);
	gw_pipe_wr = pfd[1];
	ereport(LOG,
			(errmsg("rvbbit gateway started on port %d (pid %d)", gw_port, (int) pid)));
	return pid;
}

/*
 * Main loop of the supervisor: keep one gateway running; when it dies,
 * start it again after a backoff that grows (1 s doubling to 30 s) while
 * it keeps dying within 10 s of its start.  SIGHUP re-reads the
 * configuration and tells the gateway the new rvbbit.gateway_allow_trust
 * (SIGUSR1 on, SIGUSR2 off).  SIGTERM stops the gateway and exits.
 */
void
rv_gateway_sup_main(Datum arg)
{
	TimestampTz started = 0;
	TimestampTz next_start = 0;
	long		backoff_ms = 0;
	bool		trust_sent;

	pqsignal(SIGCHLD, sup_sigchld);
	rv_bgworker_signals(SignalHandlerForShutdownRequest);
	on_proc_exit(sup_kill_child, 0);
	trust_sent = gw_allow_trust;

	for (;;)
	{
		long		timeout = 1000;
		TimestampTz now = GetCurrentTimestamp();
		int			status;

		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (gw_child > 0 && gw_allow_trust != trust_sent)
				kill(gw_child, gw_allow_trust ? SIGUSR1 : SIGUSR2);
			trust_sent = gw_allow_trust;
		}

		if (gw_child > 0 && waitpid(gw_child, &status, WNOHANG) == gw_child)
		{
			bool		quick = TimestampDifferenceExceeds(started, now, 10000) == false;

			if (WIFSIGNALED(status))
				ereport(LOG,
						(errmsg("rvbbit gateway (pid %d) was terminated by signal %d",
								(int) gw_child, WTERMSIG(status))));
			else
				ereport(LOG,
						(errmsg("rvbbit gateway (pid %d) exited with status %d",
								(int) gw_child, WEXITSTATUS(status))));
			gw_child = 0;
			backoff_ms = quick ? (backoff_ms == 0 ? 1000 : Min(backoff_ms * 2, 30000)) : 0;
			next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
		}

		if (gw_child == 0)
		{
			if (now >= next_start)
			{
				gw_child = sup_start();
				started = now;
				trust_sent = gw_allow_trust;
				if (gw_child == 0)
				{
					backoff_ms = backoff_ms == 0 ? 1000 : Min(backoff_ms * 2, 30000);
					next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
				}
			}
			else
			{
				long		secs;
				int			usecs;

				TimestampDifference(now, next_start, &secs, &usecs);
				timeout = Min(timeout, secs * 1000 + usecs / 1000 + 1);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	sup_kill_child(0, 0);
	proc_exit(0);
}
