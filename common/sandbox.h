/*
 * sandbox.h - where the coding agent's hands reach: paths inside the
 * repository root, and commands run with no secret to find.
 *
 * Paths. Every path the agent gives is relative to the repository root.
 * sandbox_path() refuses, with a message the model can act on: an empty
 * path where a file is needed, an absolute path, any ".." component, a
 * path that resolves (through symlinks) outside the root, and, for writes,
 * anything inside a ".git" directory (also when a symlink leads there).
 * Files are then opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
 * from a descriptor of the root, so a symlink swapped in after the check
 * cannot lead out either (kernels without openat2 get the check alone).
 * Only regular files are read or written; FIFOs and devices are refused.
 *
 * Commands. sandbox_run() runs `sh -c COMMAND` in the root:
 *  - the environment is built from an allow-list only (PATH, locale, TZ,
 *    a private HOME and TMPDIR, TERM=dumb, git settings that keep git
 *    quiet and off the network credentials, plus names the options add);
 *    FACTORY_*, CI_JOB_TOKEN, CI_*PASSWORD*, CI_JOB_JWT* and GITLAB_* never
 *    pass, whatever the options say;
 *  - stdin is /dev/null, every other descriptor is closed;
 *  - the command gets its own process group; on timeout the whole group is
 *    killed (SIGKILL), and where namespaces work it is the first process of
 *    a new PID namespace, so everything it started dies with it;
 *  - output (stdout and stderr together) is capped keeping the first
 *    `output_head` and the last `output_tail` bytes, with the number of bytes
 *    left out in between;
 *  - when the job runs as root, the command runs as an unprivileged user
 *    (opts.uid/gid, default 65534 "nobody"), with no supplementary groups
 *    and PR_SET_NO_NEW_PRIVS; the working tree (not .git/) is handed to that
 *    user at sandbox_new() so builds and tests can write it, while .git/
 *    stays the job's;
 *  - where the kernel allows it (root, or unprivileged user namespaces),
 *    the command runs in new mount, PID, IPC and (unless opts.network)
 *    network namespaces: no network but a loopback of its own, a /proc that
 *    shows only its own processes, and .git/ mounted read-only. Where it
 *    does not, the command runs without them and sandbox_describe() says so:
 *    then, for a job that is not root, commands share its uid and can write
 *    .git/ and reach the network; its environment and memory stay closed
 *    (non-dumpable), and the credentials in .git/config are gone before
 *    the first command (fgit_scrub_credentials).
 *
 * The job itself must call sandbox_protect_self() early: it makes the
 * process non-dumpable, so /proc/<job>/environ and /proc/<job>/mem cannot
 * be read by a command even under the same uid, and no core file is left.
 */
#ifndef FACTORY_SANDBOX_H
#define FACTORY_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

typedef struct sandbox sandbox;

typedef struct {
	const char *root;             /* repository root (its work tree), must exist */
	int network;                  /* 1: commands may use the network */
	int namespaces;               /* 1 (default): use namespaces where the kernel allows */
	long uid;                     /* when running as root: user for commands (default 65534) */
	long gid;                     /* its group (default 65534) */
	int chown_tree;               /* when root: hand the work tree to uid/gid (default 1) */
	const char *const *env_allow; /* more variable names to pass through, NULL-terminated, may be NULL */
	size_t output_head;           /* bytes kept from the start of the output (default 16 KiB) */
	size_t output_tail;           /* bytes kept from the end (default 16 KiB) */
} sandbox_options;

/* Fill `o` with the defaults above (root NULL). */
void sandbox_options_init(sandbox_options *o);

/*
 * Make the sandbox for `root` from the agent.* settings every job shares
 * (config.h): agent.network (default `default_network`: an external agent
 * CLI must reach its own model), agent.namespaces (true),
 * agent.sandbox_uid / agent.sandbox_gid (65534), agent.env_allow (a
 * comma-separated list of variable names). Errors as sandbox_new, plus
 * FACTORY_ECONFIG naming a bad setting.
 */
struct fconfig;
int sandbox_new_from_config(sandbox **out, const struct fconfig *cfg, const char *root, int default_network);

/*
 * Make the sandbox for `o->root`. Checks the root is a directory, builds the
 * command environment, makes a private HOME (removed by sandbox_free), and,
 * as root, hands the work tree to the command user. Then runs one probe
 * command to learn whether namespaces work here (falling back without them)
 * and whether the command user can enter the root (FACTORY_ECONFIG with the
 * reason if it cannot). A name in env_allow that can never pass is
 * FACTORY_ECONFIG. Returns 0, FACTORY_ECONFIG, FACTORY_ENOMEM or FACTORY_ERR.
 */
int sandbox_new(sandbox **out, const sandbox_options *o);
/* Free the sandbox and remove its private HOME; NULL is fine. */
void sandbox_free(sandbox *sb);

/* The root's real path (no trailing slash); owned by the sandbox. */
const char *sandbox_root(const sandbox *sb);
/* One line on how commands run, e.g. "uid 65534, namespaces, no network". */
const char *sandbox_describe(const sandbox *sb);
/* 1 when commands run in namespaces, 0 when the kernel refused them. */
int sandbox_has_namespaces(const sandbox *sb);

/*
 * Put a file into the commands' private HOME (for an external agent's prompt,
 * say), readable by the command user; *path_out is its absolute path (caller
 * frees). `name` is a plain file name. Returns 0 or FACTORY_ERR/EINVALID.
 */
int sandbox_private_file(char **path_out, sandbox *sb, const char *name, const char *data, size_t len);

/* Make the calling process non-dumpable and without core files. Returns 0
 * or FACTORY_ERR. Call it before reading any secret. */
int sandbox_protect_self(void);

/* Is `name` a variable that can never reach a command: FACTORY_*,
 * GITLAB_*, CI_JOB_TOKEN, CI_JOB_JWT*, any CI_* holding TOKEN or PASSWORD? */
int sandbox_env_forbidden(const char *name);
/* Does `name` look like it holds a secret (forbidden, or containing TOKEN,
 * SECRET, PASSWORD, PASSWD, CREDENTIAL, API_KEY, APIKEY, PRIVATE_KEY or
 * ending in _KEY)? Such names are refused in opts.env_allow. */
int sandbox_env_secretish(const char *name);

#define SANDBOX_READ 0
#define SANDBOX_WRITE 1

/*
 * Check `path` for `mode` and put its normal form relative to the root
 * into `out` ("." for the root itself; "a/b" with no "." components or
 * doubled slashes). Returns 0, or FACTORY_EINVALID with a message for the
 * model ("absolute paths are not allowed: ..."), FACTORY_ENOTFOUND when a
 * directory on the way does not exist (writes create them, reads do not).
 * `out` is reset first.
 */
int sandbox_path(fbuf *out, const sandbox *sb, const char *path, int mode);

/*
 * Read a regular file into `out` (reset first). More than `max` bytes is
 * FACTORY_ETOOBIG (nothing read). Path errors as sandbox_path; not found is
 * FACTORY_ENOTFOUND; a directory or special file is FACTORY_EINVALID.
 */
int sandbox_read_file(fbuf *out, const sandbox *sb, const char *path, size_t max);

/*
 * Write `len` bytes to a file, creating it (mode 0644) and missing parent
 * directories, or replacing the content of an existing regular file (its
 * mode kept). As root, what it creates is given to the command user.
 */
int sandbox_write_file(const sandbox *sb, const char *path, const char *data, size_t len);

/* Open a file under the root (race-free as above) with open(2) flags;
 * only regular files. *out_fd is the caller's to close. */
int sandbox_open(int *out_fd, const sandbox *sb, const char *path, int flags, mode_t mode);

typedef struct {
	int exit_code;       /* exit status, or -1 when killed by a signal */
	int signal;          /* the signal that ended it, 0 if none */
	int timed_out;       /* 1 when the timeout killed it */
	fbuf output;         /* head + "\n[... N bytes left out ...]\n" + tail */
	size_t output_total; /* bytes the command wrote in all */
	int truncated;       /* 1 when bytes were left out */
	long elapsed_ms;
} sandbox_result;

void sandbox_result_init(sandbox_result *r);
void sandbox_result_release(sandbox_result *r);

/*
 * Run `sh -c command` as described above, for at most `timeout_ms`.
 * Returns 0 whenever the command ran (whatever its exit status; a timeout
 * is r->timed_out, not an error), FACTORY_ERR when it could not be started
 * (with the reason), FACTORY_ENOMEM. `extra_env` (NULL-terminated
 * "NAME=value" list, may be NULL) is added for this run only, for values the
 * job chooses to give (an external agent's own key, say); a name for which
 * sandbox_env_forbidden() holds is FACTORY_EINVALID. The caller releases
 * `out` in every case.
 */
int sandbox_run(sandbox_result *out, sandbox *sb, const char *command, long timeout_ms, const char *const *extra_env);

#endif
