/* sandbox.c - paths inside the repository root, and commands with nothing to steal. */
#define _GNU_SOURCE
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "log.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#define SB_RESOLVE_NO_MAGICLINKS 0x02
#define SB_RESOLVE_BENEATH 0x08

/* The kernel's struct open_how, spelled out so no recent header is needed. */
struct sb_open_how {
	uint64_t flags;
	uint64_t mode;
	uint64_t resolve;
};

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ENV 96
#define REPORT_MAX 512
#define EXIT_GRACE_MS 200

struct sandbox {
	char *root; /* real path, no trailing slash */
	size_t root_len;
	int root_fd; /* O_PATH descriptor of the root */
	int network;
	int namespaces; /* 1 while namespaces are in use */
	int as_root;    /* the job runs as root: drop to uid/gid */
	uid_t uid;
	gid_t gid;
	mode_t root_mode; /* the root's mode before we changed it (as root) */
	int root_mode_changed;
	char *home;         /* private HOME, removed at free */
	char *env[MAX_ENV]; /* "NAME=value", NULL-terminated */
	size_t nenv;
	size_t head, tail;
	char describe[160];
	int openat2_missing;
};

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sandbox_options_init(sandbox_options *o)
{
	memset(o, 0, sizeof(*o));
	o->namespaces = 1;
	o->uid = 65534;
	o->gid = 65534;
	o->chown_tree = 1;
	o->output_head = 16 * 1024;
	o->output_tail = 16 * 1024;
}

int sandbox_protect_self(void)
{
	struct rlimit rl = {0, 0};

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return ferror_set(FACTORY_ERR, "cannot make the job non-dumpable: %s", strerror(errno));
	if (setrlimit(RLIMIT_CORE, &rl) < 0)
		return ferror_set(FACTORY_ERR, "cannot turn core files off: %s", strerror(errno));
	return 0;
}

static int has_prefix(const char *s, const char *p)
{
	return !strncmp(s, p, strlen(p));
}

int sandbox_env_forbidden(const char *name)
{
	if (has_prefix(name, "FACTORY_") || has_prefix(name, "GITLAB_") || !strcmp(name, "CI_JOB_TOKEN") ||
	    has_prefix(name, "CI_JOB_JWT"))
		return 1;
	if (has_prefix(name, "CI_") && (strstr(name, "TOKEN") || strstr(name, "PASSWORD")))
		return 1;
	return 0;
}

int sandbox_env_secretish(const char *name)
{
	static const char *const words[] = {"TOKEN",   "SECRET", "PASSWORD",    "PASSWD", "CREDENTIAL",
	                                    "API_KEY", "APIKEY", "PRIVATE_KEY", NULL};
	char up[256];
	size_t i, n = strlen(name);

	if (sandbox_env_forbidden(name))
		return 1;
	if (n >= sizeof(up))
		return 1;
	for (i = 0; i <= n; i++)
		up[i] = (char)((name[i] >= 'a' && name[i] <= 'z') ? name[i] - 32 : name[i]);
	for (i = 0; words[i]; i++)
		if (strstr(up, words[i]))
			return 1;
	return n >= 4 && !strcmp(up + n - 4, "_KEY");
}

static int valid_env_name(const char *name)
{
	const char *p;

	if (!*name || (*name >= '0' && *name <= '9'))
		return 0;
	for (p = name; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	return 1;
}

static int env_add(sandbox *sb, const char *name, const char *value)
{
	size_t n;
	char *s;

	if (sb->nenv + 1 >= MAX_ENV)
		return ferror_set(FACTORY_ETOOBIG, "too many environment variables for commands");
	n = strlen(name) + strlen(value) + 2;
	if (!(s = malloc(n)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	snprintf(s, n, "%s=%s", name, value);
	sb->env[sb->nenv++] = s;
	sb->env[sb->nenv] = NULL;
	return 0;
}

static int build_env(sandbox *sb, const sandbox_options *o)
{
	static const char *const pass[] = {"LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", NULL};
	char tmp[PATH_MAX + 8];
	const char *v;
	size_t i;
	int error;

	v = getenv("PATH");
	if ((error = env_add(sb, "PATH", v && *v ? v : DEFAULT_PATH)) < 0)
		return error;
	if ((error = env_add(sb, "HOME", sb->home)) < 0)
		return error;
	snprintf(tmp, sizeof(tmp), "%s/tmp", sb->home);
	if ((error = env_add(sb, "TMPDIR", tmp)) < 0)
		return error;
	if ((error = env_add(sb, "TERM", "dumb")) < 0 || (error = env_add(sb, "SHELL", "/bin/sh")) < 0)
		return error;
	for (i = 0; pass[i]; i++) {
		if ((v = getenv(pass[i])) && (error = env_add(sb, pass[i], v)) < 0)
			return error;
	}
	/* git: no prompts, no system config, and the tree belongs to someone else when we dropped to nobody. */
	if ((error = env_add(sb, "GIT_TERMINAL_PROMPT", "0")) < 0 ||
	    (error = env_add(sb, "GIT_CONFIG_NOSYSTEM", "1")) < 0 ||
	    (error = env_add(sb, "GIT_CONFIG_COUNT", "1")) < 0 ||
	    (error = env_add(sb, "GIT_CONFIG_KEY_0", "safe.directory")) < 0 ||
	    (error = env_add(sb, "GIT_CONFIG_VALUE_0", "*")) < 0)
		return error;
	for (i = 0; o->env_allow && o->env_allow[i]; i++) {
		const char *name = o->env_allow[i];
		if (!valid_env_name(name))
			return ferror_set(FACTORY_ECONFIG, "bad variable name '%s' in the command allow-list", name);
		if (sandbox_env_secretish(name))
			return ferror_set(FACTORY_ECONFIG,
			                  "variable %s looks like a secret and cannot be passed to commands", name);
		if ((v = getenv(name)) && (error = env_add(sb, name, v)) < 0)
			return error;
	}
	return 0;
}

/* ---- walking a tree without following symlinks ---- */

typedef int (*walk_fn)(int dirfd, const char *name, const struct stat *st, void *ctx);

/* Call fn for every entry under dirfd (depth first, children before the
 * directory itself), never following symlinks, skipping directories named
 * ".git" when skip_git is set. */
static int walk_at(int dirfd, int skip_git, int depth, walk_fn fn, void *ctx)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	int fd, error = 0;

	if (depth > 256)
		return ferror_set(FACTORY_ETOOBIG, "directory tree deeper than 256 levels");
	if ((fd = dup(dirfd)) < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return ferror_set(FACTORY_ERR, "cannot read a directory: %s", strerror(errno));
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub;
			if (skip_git && !strcmp(e->d_name, ".git"))
				continue;
			sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				error = walk_at(sub, skip_git, depth + 1, fn, ctx);
				close(sub);
				if (error < 0)
					break;
			}
		}
		if ((error = fn(dirfd, e->d_name, &st, ctx)) < 0)
			break;
	}
	closedir(d);
	return error;
}

static int chown_cb(int dirfd, const char *name, const struct stat *st, void *ctx)
{
	const sandbox *sb = ctx;

	(void)st;
	if (fchownat(dirfd, name, sb->uid, sb->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return ferror_set(FACTORY_ERR, "cannot hand %s to uid %ld: %s", name, (long)sb->uid, strerror(errno));
	return 0;
}

static int remove_cb(int dirfd, const char *name, const struct stat *st, void *ctx)
{
	(void)ctx;
	unlinkat(dirfd, name, S_ISDIR(st->st_mode) ? AT_REMOVEDIR : 0);
	return 0;
}

static void remove_tree(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0) {
		walk_at(fd, 0, 0, remove_cb, NULL);
		close(fd);
	}
	rmdir(path);
}

/* ---- creating and freeing ---- */

static int probe(sandbox *sb);

int sandbox_new(sandbox **out, const sandbox_options *o)
{
	sandbox *sb = NULL;
	char real[PATH_MAX], home[] = "/tmp/factory-sandbox-XXXXXX", tmp[PATH_MAX];
	struct stat st;
	int error = -1;

	*out = NULL;
	if (!o->root || !*o->root)
		return ferror_set(FACTORY_ECONFIG, "no repository root given to the sandbox");
	if (!realpath(o->root, real) || stat(real, &st) < 0)
		return ferror_set(FACTORY_ECONFIG, "repository root %s: %s", o->root, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return ferror_set(FACTORY_ECONFIG, "repository root %s is not a directory", o->root);
	if (!(sb = calloc(1, sizeof(*sb))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	sb->root_fd = -1;
	if (!(sb->root = strdup(real))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	sb->root_len = strlen(sb->root);
	if ((sb->root_fd = open(sb->root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot open %s: %s", sb->root, strerror(errno));
		goto cleanup;
	}
	sb->network = o->network;
	sb->namespaces = o->namespaces;
	sb->as_root = geteuid() == 0;
	sb->uid = sb->as_root ? (uid_t)o->uid : geteuid();
	sb->gid = sb->as_root ? (gid_t)o->gid : getegid();
	if (sb->as_root && (o->uid <= 0 || o->gid <= 0)) {
		error = ferror_set(FACTORY_ECONFIG, "the sandbox user must not be root (uid %ld, gid %ld)", o->uid,
		                   o->gid);
		goto cleanup;
	}
	sb->head = o->output_head ? o->output_head : 16 * 1024;
	sb->tail = o->output_tail ? o->output_tail : 16 * 1024;

	if (!mkdtemp(home)) {
		error = ferror_set(FACTORY_ERR, "cannot make a private HOME for commands: %s", strerror(errno));
		goto cleanup;
	}
	if (!(sb->home = strdup(home))) {
		rmdir(home);
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	snprintf(tmp, sizeof(tmp), "%s/tmp", sb->home);
	if (mkdir(tmp, 0700) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot make %s: %s", tmp, strerror(errno));
		goto cleanup;
	}
	if (sb->as_root && (chown(sb->home, sb->uid, sb->gid) < 0 || chown(tmp, sb->uid, sb->gid) < 0)) {
		error = ferror_set(FACTORY_ERR, "cannot hand %s to uid %ld: %s", sb->home, (long)sb->uid,
		                   strerror(errno));
		goto cleanup;
	}
	if ((error = build_env(sb, o)) < 0)
		goto cleanup;

	if (sb->as_root && o->chown_tree) {
		/* The tree goes to the command user, .git/ stays ours. The root
		 * directory itself stays ours too, made sticky and writable, so the
		 * command user can add files there but cannot rename or remove .git. */
		int fd = open(sb->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			error = ferror_set(FACTORY_ERR, "cannot open %s: %s", sb->root, strerror(errno));
			goto cleanup;
		}
		error = walk_at(fd, 1, 0, chown_cb, sb);
		close(fd);
		if (error < 0)
			goto cleanup;
		sb->root_mode = st.st_mode & 07777;
		if (chmod(sb->root, 01777) < 0) {
			error = ferror_set(FACTORY_ERR, "cannot open %s to the command user: %s", sb->root,
			                   strerror(errno));
			goto cleanup;
		}
		sb->root_mode_changed = 1;
	}
	if ((error = probe(sb)) < 0)
		goto cleanup;
	*out = sb;
	sb = NULL;
	error = 0;
cleanup:
	sandbox_free(sb);
	return error;
}

void sandbox_free(sandbox *sb)
{
	size_t i;

	if (!sb)
		return;
	if (sb->root_mode_changed)
		chmod(sb->root, sb->root_mode);
	if (sb->home)
		remove_tree(sb->home);
	for (i = 0; i < sb->nenv; i++)
		free(sb->env[i]);
	if (sb->root_fd >= 0)
		close(sb->root_fd);
	free(sb->home);
	free(sb->root);
	free(sb);
}

const char *sandbox_root(const sandbox *sb)
{
	return sb->root;
}

const char *sandbox_describe(const sandbox *sb)
{
	return sb->describe;
}

int sandbox_has_namespaces(const sandbox *sb)
{
	return sb->namespaces;
}

int sandbox_private_file(char **path_out, sandbox *sb, const char *name, const char *data, size_t len)
{
	char path[PATH_MAX];
	size_t done = 0;
	ssize_t n;
	int fd;

	*path_out = NULL;
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return ferror_set(FACTORY_EINVALID, "bad private file name '%s'", name);
	snprintf(path, sizeof(path), "%s/%s", sb->home, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return ferror_set(FACTORY_ERR, "cannot write %s: %s", path, strerror(errno));
	while (done < len) {
		n = write(fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			return ferror_set(FACTORY_ERR, "cannot write %s: %s", path, strerror(e));
		}
		done += (size_t)n;
	}
	if (sb->as_root && fchown(fd, sb->uid, sb->gid) < 0) {
		int e = errno;
		close(fd);
		return ferror_set(FACTORY_ERR, "cannot hand %s to uid %ld: %s", path, (long)sb->uid, strerror(e));
	}
	close(fd);
	if (!(*path_out = strdup(path)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

/* ---- paths ---- */

static int is_git_component(const char *rel)
{
	const char *p = rel;

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 4 && !strncmp(p, ".git", 4))
			return 1;
		if (!slash)
			break;
		p = slash + 1;
	}
	return 0;
}

/* Normalise `path` into `out`: no leading "./", no empty or "." parts. */
static int normalise(fbuf *out, const char *path, int mode)
{
	const char *p = path;
	int error;

	fbuf_reset(out);
	if (!path || !*path) {
		if (mode == SANDBOX_WRITE)
			return ferror_set(FACTORY_EINVALID, "a path is needed");
		return fbuf_puts(out, ".");
	}
	if (*path == '/')
		return ferror_set(FACTORY_EINVALID,
		                  "absolute paths are not allowed: give a path relative to the repository root, "
		                  "not %.200s",
		                  path);
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && !strncmp(p, "..", 2))
			return ferror_set(FACTORY_EINVALID,
			                  "'..' is not allowed in paths (%.200s): paths stay "
			                  "inside the repository",
			                  path);
		if (n > NAME_MAX)
			return ferror_set(FACTORY_EINVALID, "a path component is longer than %d bytes", NAME_MAX);
		if (n && !(n == 1 && *p == '.')) {
			if (out->len && (error = fbuf_putc(out, '/')) < 0)
				return error;
			if ((error = fbuf_put(out, p, n)) < 0)
				return error;
		}
		if (!slash)
			break;
		p = slash + 1;
	}
	if (!out->len) {
		if (mode == SANDBOX_WRITE)
			return ferror_set(FACTORY_EINVALID, "cannot write the repository root itself: name a file");
		return fbuf_puts(out, ".");
	}
	if (out->len >= (size_t)PATH_MAX - 1 - 4096)
		return ferror_set(FACTORY_EINVALID, "path too long");
	return 0;
}

int sandbox_path(fbuf *out, const sandbox *sb, const char *path, int mode)
{
	char abs[PATH_MAX], real[PATH_MAX], *cut;
	size_t rl;
	int error;

	if ((error = normalise(out, path, mode)) < 0)
		return error;
	if (mode == SANDBOX_WRITE && is_git_component(out->ptr))
		return ferror_set(FACTORY_EINVALID, ".git/ cannot be written (%.200s): only the job commits", path);
	if (sb->root_len + 1 + out->len >= sizeof(abs))
		return ferror_set(FACTORY_EINVALID, "path too long");
	snprintf(abs, sizeof(abs), "%s/%s", sb->root, out->ptr);

	/* Resolve the longest prefix that exists; what is left cannot be a symlink. */
	while (!realpath(abs, real)) {
		if (errno != ENOENT && errno != ENOTDIR) {
			if (errno == ELOOP)
				return ferror_set(FACTORY_EINVALID, "%.200s: too many levels of symbolic links", path);
			return ferror_set(FACTORY_EINVALID, "%.200s: %s", path, strerror(errno));
		}
		cut = strrchr(abs, '/');
		if (!cut || (size_t)(cut - abs) < sb->root_len)
			return ferror_set(FACTORY_ERR, "the repository root %s is gone", sb->root);
		*cut = '\0'; /* a missing part: what follows it cannot be a symlink */
	}
	rl = strlen(real);
	if (!(rl == sb->root_len && !memcmp(real, sb->root, rl)) &&
	    !(rl > sb->root_len && !memcmp(real, sb->root, sb->root_len) && real[sb->root_len] == '/'))
		return ferror_set(FACTORY_EINVALID, "%.200s leads outside the repository (through a symbolic link)",
		                  path);
	if (mode == SANDBOX_WRITE && rl > sb->root_len && is_git_component(real + sb->root_len + 1))
		return ferror_set(FACTORY_EINVALID, "%.200s leads into .git/, which cannot be written", path);
	return 0;
}

static int open_error(const char *path, int err)
{
	switch (err) {
	case ENOENT:
		return ferror_set(FACTORY_ENOTFOUND, "no such file: %.200s", path);
	case ENOTDIR:
		return ferror_set(FACTORY_ENOTFOUND, "no such file: %.200s (a part of the path is not a directory)",
		                  path);
	case EISDIR:
		return ferror_set(FACTORY_EINVALID, "%.200s is a directory", path);
	case EXDEV:
		return ferror_set(FACTORY_EINVALID, "%.200s leads outside the repository", path);
	case ELOOP:
		return ferror_set(FACTORY_EINVALID, "%.200s: too many levels of symbolic links", path);
	case ENXIO:
		return ferror_set(FACTORY_EINVALID, "%.200s is not a regular file", path);
	default:
		return ferror_set(FACTORY_ERR, "cannot open %.200s: %s", path, strerror(err));
	}
}

/* openat2 beneath the root, or the checked path where the kernel has none. */
static int open_beneath(sandbox *sb, const char *rel, int flags, mode_t mode)
{
	struct sb_open_how how;
	char abs[PATH_MAX];
	long fd;

	if (!sb->openat2_missing) {
		memset(&how, 0, sizeof(how));
		how.flags = (uint64_t)flags;
		how.mode = (flags & O_CREAT) ? mode : 0;
		how.resolve = SB_RESOLVE_BENEATH | SB_RESOLVE_NO_MAGICLINKS;
		fd = syscall(SYS_openat2, sb->root_fd, rel, &how, sizeof(how));
		if (fd >= 0 || errno != ENOSYS)
			return (int)fd;
		sb->openat2_missing = 1;
	}
	snprintf(abs, sizeof(abs), "%s/%s", sb->root, rel);
	return open(abs, flags, mode);
}

int sandbox_open(int *out_fd, const sandbox *sb, const char *path, int flags, mode_t mode)
{
	sandbox *msb = (sandbox *)sb; /* only the openat2 probe flag changes */
	fbuf rel;
	struct stat st;
	int fd = -1, error, writing = (flags & O_ACCMODE) != O_RDONLY;

	*out_fd = -1;
	fbuf_init(&rel, PATH_MAX);
	if ((error = sandbox_path(&rel, sb, path, writing ? SANDBOX_WRITE : SANDBOX_READ)) < 0)
		goto cleanup;
	fd = open_beneath(msb, rel.ptr, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, mode);
	if (fd < 0) {
		error = open_error(path, errno);
		goto cleanup;
	}
	if (fstat(fd, &st) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot stat %.200s: %s", path, strerror(errno));
		goto cleanup;
	}
	if (S_ISDIR(st.st_mode)) {
		error = ferror_set(FACTORY_EINVALID, "%.200s is a directory", path);
		goto cleanup;
	}
	if (!S_ISREG(st.st_mode)) {
		error = ferror_set(FACTORY_EINVALID, "%.200s is not a regular file", path);
		goto cleanup;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*out_fd = fd;
	fd = -1;
	error = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	fbuf_release(&rel);
	return error;
}

int sandbox_read_file(fbuf *out, const sandbox *sb, const char *path, size_t max)
{
	struct stat st;
	char chunk[65536];
	ssize_t n;
	int fd = -1, error;

	fbuf_reset(out);
	if ((error = sandbox_open(&fd, sb, path, O_RDONLY, 0)) < 0)
		return error;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size > max) {
		error = ferror_set(FACTORY_ETOOBIG, "%.200s is %lld bytes, more than the %zu that can be read at once",
		                   path, (long long)st.st_size, max);
		goto cleanup;
	}
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			error = ferror_set(FACTORY_ERR, "cannot read %.200s: %s", path, strerror(errno));
			goto cleanup;
		}
		if (n == 0)
			break;
		if (out->len + (size_t)n > max) {
			error = ferror_set(FACTORY_ETOOBIG, "%.200s grew past the %zu bytes that can be read at once",
			                   path, max);
			goto cleanup;
		}
		if ((error = fbuf_put(out, chunk, (size_t)n)) < 0)
			goto cleanup;
	}
	if (!out->ptr && (error = fbuf_puts(out, "")) < 0)
		goto cleanup;
	error = 0;
cleanup:
	close(fd);
	return error;
}

/* Make the directories leading to `rel` (a normal relative path). */
static int make_parents(sandbox *sb, const char *rel)
{
	char buf[PATH_MAX];
	char *slash;
	int dfd;

	snprintf(buf, sizeof(buf), "%s", rel);
	for (slash = strchr(buf, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		dfd = open_beneath(sb, buf, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
		if (dfd >= 0) {
			close(dfd);
		} else if (errno == ENOENT) {
			char *last = strrchr(buf, '/');
			const char *name = last ? last + 1 : buf;
			int pfd;
			if (last) {
				*last = '\0';
				pfd = open_beneath(sb, buf, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
				*last = '/';
			} else {
				pfd = dup(sb->root_fd);
			}
			if (pfd < 0)
				return open_error(buf, errno);
			if (mkdirat(pfd, name, 0755) < 0 && errno != EEXIST) {
				int e = errno;
				close(pfd);
				return ferror_set(FACTORY_ERR, "cannot make directory %.200s: %s", buf, strerror(e));
			}
			if (sb->as_root)
				fchownat(pfd, name, sb->uid, sb->gid, AT_SYMLINK_NOFOLLOW);
			close(pfd);
		} else if (errno == ENOTDIR) {
			return ferror_set(FACTORY_EINVALID, "%.200s is a file, not a directory", buf);
		} else {
			return open_error(buf, errno);
		}
		*slash = '/';
	}
	return 0;
}

int sandbox_write_file(const sandbox *sb, const char *path, const char *data, size_t len)
{
	sandbox *msb = (sandbox *)sb;
	fbuf rel;
	size_t done = 0;
	ssize_t n;
	int fd = -1, created = 1, error;

	fbuf_init(&rel, PATH_MAX);
	if ((error = sandbox_path(&rel, sb, path, SANDBOX_WRITE)) < 0)
		goto cleanup;
	if ((error = make_parents(msb, rel.ptr)) < 0)
		goto cleanup;
	/* Check again: a directory made above may have been a symlink's target. */
	if ((error = sandbox_path(&rel, sb, path, SANDBOX_WRITE)) < 0)
		goto cleanup;
	error = sandbox_open(&fd, sb, rel.ptr, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (error == FACTORY_EINVALID || error == FACTORY_ERR) {
		created = 0;
		error = sandbox_open(&fd, sb, rel.ptr, O_WRONLY | O_TRUNC, 0);
	}
	if (error < 0)
		goto cleanup;
	if (created && sb->as_root)
		fchown(fd, sb->uid, sb->gid);
	while (done < len) {
		n = write(fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			error = ferror_set(FACTORY_ERR, "cannot write %.200s: %s", path, strerror(errno));
			goto cleanup;
		}
		done += (size_t)n;
	}
	if (close(fd) < 0) {
		fd = -1;
		error = ferror_set(FACTORY_ERR, "cannot write %.200s: %s", path, strerror(errno));
		goto cleanup;
	}
	fd = -1;
	error = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	fbuf_release(&rel);
	return error;
}

/* ---- commands ---- */

void sandbox_result_init(sandbox_result *r)
{
	memset(r, 0, sizeof(*r));
	fbuf_init(&r->output, 0);
}

void sandbox_result_release(sandbox_result *r)
{
	fbuf_release(&r->output);
}

/* Tell the parent why the child could not go on, then leave. */
static void __attribute__((noreturn)) child_fail(int rep, const char *stage, int err)
{
	char msg[REPORT_MAX];
	int n = snprintf(msg, sizeof(msg), "%s\t%s", stage, strerror(err));

	if (n > 0 && write(rep, msg, (size_t)n) < 0) {
		/* nothing more can be done */
	}
	_exit(127);
}

static int write_file_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

static int loopback_up(void)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = -1;

	if (s < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return rc;
}

/* Mount .git read-only in our own mount namespace, keeping the flags the
 * kernel locks (nosuid, nodev, noexec, atime) when we are in a user namespace. */
static int git_readonly(const char *root)
{
	char git[PATH_MAX];
	struct statvfs sv;
	struct stat st;
	unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;

	snprintf(git, sizeof(git), "%s/.git", root);
	if (lstat(git, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	if (mount(git, git, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -1;
	if (statvfs(git, &sv) == 0) {
		if (sv.f_flag & ST_NOSUID)
			flags |= MS_NOSUID;
		if (sv.f_flag & ST_NODEV)
			flags |= MS_NODEV;
		if (sv.f_flag & ST_NOEXEC)
			flags |= MS_NOEXEC;
		if (sv.f_flag & ST_NOATIME)
			flags |= MS_NOATIME;
		if (sv.f_flag & ST_NODIRATIME)
			flags |= MS_NODIRATIME;
		if (sv.f_flag & ST_RELATIME)
			flags |= MS_RELATIME;
	}
	return mount(NULL, git, NULL, flags, NULL);
}

static void close_from(int lowfd)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0)
		return;
#endif
	for (int fd = lowfd; fd < 4096; fd++)
		close(fd);
}

/* The command's own process: pid 1 of the new PID namespace when there is one. */
static void __attribute__((noreturn))
run_command(sandbox *sb, int ns, const char *command, char **envp, int outfd, int rep)
{
	char *argv[4];
	int devnull;

	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (ns) {
		/* A /proc of our own: only this namespace's processes are in it. */
		mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	}
	if ((devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		child_fail(rep, "open /dev/null", errno);
	if (dup2(devnull, 0) < 0 || dup2(outfd, 1) < 0 || dup2(outfd, 2) < 0)
		child_fail(rep, "dup2", errno);
	if (rep <= 2)
		child_fail(rep, "descriptors", EBADF);
	/* Keep only 0-2 and the report pipe (close-on-exec). */
	if (rep > 3) {
		if (dup2(rep, 3) < 0)
			child_fail(rep, "dup2", errno);
		rep = 3;
		fcntl(rep, F_SETFD, FD_CLOEXEC);
	}
	close_from(rep + 1);
	if (chdir(sb->root) < 0)
		child_fail(rep, "enter the repository", errno);
	if (sb->as_root) {
		if (setgroups(0, NULL) < 0)
			child_fail(rep, "drop groups", errno);
		if (setresgid(sb->gid, sb->gid, sb->gid) < 0)
			child_fail(rep, "drop to the sandbox group", errno);
		if (setresuid(sb->uid, sb->uid, sb->uid) < 0)
			child_fail(rep, "drop to the sandbox user", errno);
		if (setuid(0) == 0)
			child_fail(rep, "drop root", EPERM);
		if (chdir(sb->root) < 0)
			child_fail(rep, "enter the repository as the sandbox user", errno);
	}
	/* Changing uid resets dumpability to fs.suid_dumpable, which may be 1:
	 * this process still holds a copy of the job's memory until it execs
	 * (and for good when it stays as the namespace's init), so close it. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		child_fail(rep, "non-dumpable", errno);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(rep, "no_new_privs", errno);
	argv[0] = "sh";
	argv[1] = "-c";
	argv[2] = (char *)command;
	argv[3] = NULL;
	if (ns) {
		/* We are pid 1 of the namespace, which ignores its own signals: the
		 * command runs as our child, we reap and report, and when we leave
		 * the kernel kills whatever else is left in the namespace. */
		pid_t pid = fork(), w;
		int status;
		if (pid < 0)
			child_fail(rep, "fork", errno);
		if (pid == 0) {
			execve("/bin/sh", argv, envp);
			child_fail(rep, "exec /bin/sh", errno);
		}
		close(0);
		close(1);
		close(2);
		for (;;) {
			w = waitpid(-1, &status, 0);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				_exit(127);
			if (w == pid)
				break;
		}
		if (WIFSIGNALED(status)) {
			char msg[16];
			int n = snprintf(msg, sizeof(msg), "\001%d", WTERMSIG(status));
			if (write(rep, msg, (size_t)n) < 0)
				_exit(127);
			_exit(128 + WTERMSIG(status));
		}
		_exit(WEXITSTATUS(status));
	}
	execve("/bin/sh", argv, envp);
	child_fail(rep, "exec /bin/sh", errno);
}

/* The intermediate process: its own process group, the namespaces, then the command. */
static void __attribute__((noreturn)) run_middle(sandbox *sb, const char *command, char **envp, int outfd, int rep)
{
	sigset_t none;
	char map[64];
	pid_t pid, w;
	int status, flags = 0, ns = sb->namespaces;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	char **e;
	extern char **environ;

	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	/* No copy of the job's environment stays readable here. */
	for (e = environ; e && *e; e++)
		explicit_bzero(*e, strlen(*e));
	if (ns) {
		flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | (sb->network ? 0 : CLONE_NEWNET);
		if (!sb->as_root)
			flags |= CLONE_NEWUSER;
		if (unshare(flags) < 0)
			child_fail(rep, "namespaces", errno);
		if (!sb->as_root) {
			/* Writing our own maps needs /proc/self to be ours for a moment. */
			prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
			snprintf(map, sizeof(map), "%lu %lu 1\n", (unsigned long)uid, (unsigned long)uid);
			if (write_file_str("/proc/self/setgroups", "deny") < 0 ||
			    write_file_str("/proc/self/uid_map", map) < 0)
				child_fail(rep, "namespaces: uid map", errno);
			snprintf(map, sizeof(map), "%lu %lu 1\n", (unsigned long)gid, (unsigned long)gid);
			if (write_file_str("/proc/self/gid_map", map) < 0)
				child_fail(rep, "namespaces: gid map", errno);
			prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		}
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			child_fail(rep, "namespaces: private mounts", errno);
		if (git_readonly(sb->root) < 0)
			child_fail(rep, "namespaces: read-only .git", errno);
		if (!sb->network && loopback_up() < 0)
			child_fail(rep, "namespaces: loopback", errno);
	}
	pid = fork();
	if (pid < 0)
		child_fail(rep, "fork", errno);
	if (pid == 0)
		run_command(sb, ns, command, envp, outfd, rep);
	close(outfd);
	close(rep);
	while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	if (w < 0)
		_exit(127);
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		kill(getpid(), WTERMSIG(status));
		_exit(128 + WTERMSIG(status));
	}
	_exit(WEXITSTATUS(status));
}

/* Output kept as head + ring of the tail. */
typedef struct {
	fbuf head;
	char *ring;
	size_t ring_cap, ring_len, ring_pos;
	size_t total;
} capture;

static void capture_put(capture *c, const char *p, size_t n)
{
	size_t room;

	c->total += n;
	room = c->head.max > c->head.len ? c->head.max - c->head.len : 0;
	if (room) {
		size_t k = n < room ? n : room;
		if (fbuf_put(&c->head, p, k) < 0)
			k = 0;
		p += k;
		n -= k;
	}
	if (!c->ring_cap)
		return;
	if (n >= c->ring_cap) {
		memcpy(c->ring, p + n - c->ring_cap, c->ring_cap);
		c->ring_pos = 0;
		c->ring_len = c->ring_cap;
		return;
	}
	while (n) {
		size_t k = c->ring_cap - c->ring_pos;
		if (k > n)
			k = n;
		memcpy(c->ring + c->ring_pos, p, k);
		c->ring_pos = (c->ring_pos + k) % c->ring_cap;
		c->ring_len = c->ring_len + k > c->ring_cap ? c->ring_cap : c->ring_len + k;
		p += k;
		n -= k;
	}
}

static int capture_finish(sandbox_result *r, capture *c)
{
	size_t start;
	int error;

	fbuf_reset(&r->output);
	if ((error = fbuf_put(&r->output, c->head.ptr ? c->head.ptr : "", c->head.len)) < 0)
		return error;
	r->output_total = c->total;
	if (c->total > c->head.len + c->ring_len) {
		r->truncated = 1;
		if ((error = fbuf_printf(&r->output, "\n[... %zu bytes left out ...]\n",
		                         c->total - c->head.len - c->ring_len)) < 0)
			return error;
	}
	if (c->ring_len) {
		start = c->ring_len < c->ring_cap ? 0 : c->ring_pos;
		if ((error = fbuf_put(&r->output, c->ring + start, c->ring_len - start)) < 0)
			return error;
		if (start && (error = fbuf_put(&r->output, c->ring, start)) < 0)
			return error;
	}
	if (!r->output.ptr)
		return fbuf_puts(&r->output, "");
	return 0;
}

/* Start the command; on failure of the namespaces stage *ns_failed is set. */
static int run_once(sandbox_result *out, sandbox *sb, const char *command, long timeout_ms, char **envp, int *ns_failed)
{
	int outp[2] = {-1, -1}, repp[2] = {-1, -1};
	char rep[REPORT_MAX + 1], buf[65536];
	capture cap;
	size_t replen = 0;
	long start = now_ms(), deadline = start + timeout_ms, exited_at = 0;
	pid_t pid = -1;
	int status = 0, done = 0, eof = 0, error = -1;

	*ns_failed = 0;
	memset(&cap, 0, sizeof(cap));
	fbuf_init(&cap.head, sb->head);
	if (!(cap.ring = malloc(sb->tail ? sb->tail : 1))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	cap.ring_cap = sb->tail;
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(repp, O_CLOEXEC) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot make a pipe: %s", strerror(errno));
		goto cleanup;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		error = ferror_set(FACTORY_ERR, "cannot start a command: %s", strerror(errno));
		goto cleanup;
	}
	if (pid == 0) {
		close(outp[0]);
		close(repp[0]);
		run_middle(sb, command, envp, outp[1], repp[1]);
	}
	setpgid(pid, pid);
	close(outp[1]);
	outp[1] = -1;
	close(repp[1]);
	repp[1] = -1;
	fcntl(outp[0], F_SETFL, O_NONBLOCK);

	for (;;) {
		long now = now_ms(), wait_ms;
		struct pollfd pfd;
		ssize_t n;

		if (!done) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid) {
				done = 1;
				exited_at = now;
			}
		}
		if (done && eof)
			break;
		if (done && now - exited_at >= EXIT_GRACE_MS)
			break; /* something the command left behind still holds the pipe */
		if (!done && now >= deadline) {
			kill(-pid, SIGKILL);
			out->timed_out = 1;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			done = 1;
			exited_at = now_ms();
			continue;
		}
		wait_ms = done ? EXIT_GRACE_MS - (now - exited_at) : deadline - now;
		if (wait_ms > 20)
			wait_ms = 20;
		if (wait_ms < 1)
			wait_ms = 1;
		if (eof) {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
			continue;
		}
		pfd.fd = outp[0];
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)wait_ms) <= 0)
			continue;
		for (;;) {
			n = read(outp[0], buf, sizeof(buf));
			if (n > 0) {
				capture_put(&cap, buf, (size_t)n);
				continue;
			}
			if (n == 0)
				eof = 1;
			break;
		}
	}
	/* Anything left in the command's process group goes too. */
	kill(-pid, SIGKILL);
	pid = -1;
	{
		ssize_t n;
		while (replen < REPORT_MAX && (n = read(repp[0], rep + replen, REPORT_MAX - replen)) > 0)
			replen += (size_t)n;
		rep[replen] = '\0';
	}
	out->elapsed_ms = now_ms() - start;
	if (replen && rep[0] == '\001') {
		/* The namespace's first process tells how the command died. */
		out->exit_code = -1;
		out->signal = (int)strtol(rep + 1, NULL, 10);
		if ((error = capture_finish(out, &cap)) < 0)
			goto cleanup;
		error = 0;
		goto cleanup;
	}
	if (replen) {
		char *tab = strchr(rep, '\t');
		if (tab)
			*tab = '\0';
		if (!strncmp(rep, "namespaces", 10))
			*ns_failed = 1;
		error = ferror_set(FACTORY_ERR, "cannot run the command: %s: %s", rep, tab ? tab + 1 : "failed");
		goto cleanup;
	}
	if (WIFSIGNALED(status)) {
		out->exit_code = -1;
		out->signal = WTERMSIG(status);
	} else {
		out->exit_code = WEXITSTATUS(status);
	}
	if ((error = capture_finish(out, &cap)) < 0)
		goto cleanup;
	error = 0;
cleanup:
	if (pid > 0) {
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (repp[i] >= 0)
			close(repp[i]);
	}
	fbuf_release(&cap.head);
	free(cap.ring);
	return error;
}

int sandbox_run(sandbox_result *out, sandbox *sb, const char *command, long timeout_ms, const char *const *extra_env)
{
	char *envp[MAX_ENV * 2];
	char *own[MAX_ENV * 2];
	char *cmd = NULL;
	size_t n = 0, nown = 0, i;
	int ns_failed, error = -1;

	fbuf_reset(&out->output);
	out->exit_code = out->signal = out->timed_out = out->truncated = 0;
	out->output_total = 0;
	out->elapsed_ms = 0;
	if (!command)
		return ferror_set(FACTORY_EINVALID, "no command given");
	/* Copies: the child wipes every string of the job's environment before it
	 * runs the command, and the command or a value may be one of them. */
	if (!(cmd = strdup(command)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (i = 0; i < sb->nenv; i++)
		envp[n++] = sb->env[i];
	for (i = 0; extra_env && extra_env[i]; i++) {
		const char *eq = strchr(extra_env[i], '=');
		char name[256];
		if (!eq || (size_t)(eq - extra_env[i]) >= sizeof(name) || n + 1 >= MAX_ENV * 2) {
			error = ferror_set(FACTORY_EINVALID, "bad extra environment entry for a command");
			goto cleanup;
		}
		memcpy(name, extra_env[i], (size_t)(eq - extra_env[i]));
		name[eq - extra_env[i]] = '\0';
		if (!valid_env_name(name) || sandbox_env_forbidden(name)) {
			error = ferror_set(FACTORY_EINVALID, "variable %s can never be given to a command", name);
			goto cleanup;
		}
		if (!(own[nown] = strdup(extra_env[i]))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		envp[n++] = own[nown++];
	}
	envp[n] = NULL;
	if (timeout_ms < 1)
		timeout_ms = 1;
	error = run_once(out, sb, cmd, timeout_ms, envp, &ns_failed);
cleanup:
	for (i = 0; i < nown; i++) {
		explicit_bzero(own[i], strlen(own[i]));
		free(own[i]);
	}
	free(cmd);
	return error;
}

/* Learn whether namespaces work and whether the command user can get in. */
static int probe(sandbox *sb)
{
	sandbox_result r;
	int ns_failed = 0, error;
	char *envp[MAX_ENV];
	size_t i;

	for (i = 0; i <= sb->nenv; i++)
		envp[i] = sb->env[i];
	sandbox_result_init(&r);
	error = run_once(&r, sb, "exit 0", 10000, envp, &ns_failed);
	if (error < 0 && ns_failed && sb->namespaces) {
		log_info("sandbox: namespaces unavailable here (%s): commands run without them", ferror_last());
		sb->namespaces = 0;
		error = run_once(&r, sb, "exit 0", 10000, envp, &ns_failed);
	}
	if (error < 0) {
		error = ferror_set(FACTORY_ECONFIG, "the sandbox cannot run commands in %s (%s)%s", sb->root,
		                   ferror_last(),
		                   sb->as_root ? ": the command user needs search permission on every directory "
		                                 "above the repository"
		                               : "");
		goto cleanup;
	}
	if (r.exit_code != 0) {
		error = ferror_set(FACTORY_ECONFIG, "the sandbox's probe command failed (exit %d): %.200s", r.exit_code,
		                   r.output.ptr ? r.output.ptr : "");
		goto cleanup;
	}
	if (sb->as_root)
		snprintf(sb->describe, sizeof(sb->describe), "uid %ld gid %ld, %s, %s", (long)sb->uid, (long)sb->gid,
		         sb->namespaces ? "namespaces (pid, mount, ipc), .git read-only" : "no namespaces",
		         sb->network ? "network allowed" : (sb->namespaces ? "no network" : "network not isolated"));
	else
		snprintf(sb->describe, sizeof(sb->describe), "the job's own uid %ld, %s, %s", (long)sb->uid,
		         sb->namespaces ? "user namespaces (pid, mount, ipc), .git read-only" : "no namespaces",
		         sb->network ? "network allowed" : (sb->namespaces ? "no network" : "network not isolated"));
	error = 0;
cleanup:
	sandbox_result_release(&r);
	return error;
}

#define CONFIG_ALLOW_MAX 64

int sandbox_new_from_config(sandbox **out, const fconfig *cfg, const char *root, int default_network)
{
	sandbox_options so;
	const char *allow[CONFIG_ALLOW_MAX];
	char buf[4096], *save = NULL, *tok;
	const char *v;
	size_t n = 0;
	long num;
	int b, error;

	*out = NULL;
	sandbox_options_init(&so);
	so.root = root;
	if ((error = fconfig_get_bool(&b, cfg, "agent.network", default_network)) < 0)
		return error;
	so.network = b;
	if ((error = fconfig_get_bool(&b, cfg, "agent.namespaces", 1)) < 0)
		return error;
	so.namespaces = b;
	if ((error = fconfig_get_long(&num, cfg, "agent.sandbox_uid", so.uid, 1, 4294967294L)) < 0)
		return error;
	so.uid = num;
	if ((error = fconfig_get_long(&num, cfg, "agent.sandbox_gid", so.gid, 1, 4294967294L)) < 0)
		return error;
	so.gid = num;
	if ((v = fconfig_get(cfg, "agent.env_allow", NULL)) && *v) {
		if (strlen(v) >= sizeof(buf))
			return ferror_set(FACTORY_ECONFIG, "bad setting agent.env_allow: longer than %zu bytes",
					  sizeof(buf) - 1);
		snprintf(buf, sizeof(buf), "%s", v);
		for (tok = strtok_r(buf, ", ", &save); tok && n + 1 < CONFIG_ALLOW_MAX; tok = strtok_r(NULL, ", ", &save))
			allow[n++] = tok;
		allow[n] = NULL;
		so.env_allow = allow;
	}
	return sandbox_new(out, &so);
}
