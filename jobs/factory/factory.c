/*
 * factory - every job in one binary (the static build and the image ship
 * this, with factory-<job> symlinks to it: one copy of libcurl, libgit2 and
 * OpenSSL instead of one per job).
 *
 *   factory-<job> [options]      the job, chosen by the name it is run as
 *   factory <job> [options]      the same, chosen by the first argument
 *   factory --help | --version | --list
 *
 * The job sees argv[0] = "factory-<job>" either way, and its own flags,
 * exit codes and output are exactly those of the separate binary. This
 * file is not a job (there is no jobs/factory/main.c): `make all` does not
 * build it; `make multicall` does (see multicall.h).
 */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "multicall.h"
#include "version.h"

#define PREFIX "factory-"

static const multicall_job *find(const char *name)
{
	for (int i = 0; i < multicall_njobs; i++) {
		if (strcmp(multicall_jobs[i].name, name) == 0)
			return &multicall_jobs[i];
	}
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: factory JOB [options]   (or run it as factory-JOB [options])\n"
		   "       factory --help | --version | --list\n\n"
		   "The Factory's jobs in one binary. Jobs:\n");
	for (int i = 0; i < multicall_njobs; i++)
		fprintf(f, "  %s\n", multicall_jobs[i].name);
	fprintf(f, "\nEach job's own options: factory JOB --help.\n");
}

static int run(const multicall_job *job, int argc, char **argv)
{
	char program[64];

	/* The job names itself from its spec; argv[0] is set to match anyway,
	 * for anything that prints it. */
	snprintf(program, sizeof(program), PREFIX "%s", job->name);
	argv[0] = program;
	return job->main(argc, argv);
}

int main(int argc, char **argv)
{
	const char *self = argc > 0 && argv[0] ? argv[0] : "factory";
	const char *base = strrchr(self, '/');
	const multicall_job *job;

	base = base ? base + 1 : self;
	if (strncmp(base, PREFIX, strlen(PREFIX)) == 0) {
		if (!(job = find(base + strlen(PREFIX)))) {
			fprintf(stderr, "factory: no job named '%s' in this binary (see factory --help)\n",
				base + strlen(PREFIX));
			return EXIT_USAGE;
		}
		return run(job, argc, argv);
	}
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return EXIT_DONE;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("factory %s\n", FACTORY_VERSION);
		return EXIT_DONE;
	}
	if (strcmp(argv[1], "--list") == 0) {
		for (int i = 0; i < multicall_njobs; i++)
			printf("%s\n", multicall_jobs[i].name);
		return EXIT_DONE;
	}
	if (!(job = find(argv[1]))) {
		fprintf(stderr, "factory: unknown job '%s' (see factory --help)\n", argv[1]);
		return EXIT_USAGE;
	}
	return run(job, argc - 1, argv + 1);
}
