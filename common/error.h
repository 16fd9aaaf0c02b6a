/*
 * error.h - error codes and the last error message, libgit2-style.
 *
 * Every common/ function that can fail returns an int: 0 on success, one of
 * the negative FACTORY_E* codes on failure. Before returning an error it
 * calls ferror_set() so the caller can print ferror_last(). The message is
 * thread-local, lowercase, says what failed first, and never contains a
 * secret (ferror_set masks registered secrets, see log.h).
 */
#ifndef FACTORY_ERROR_H
#define FACTORY_ERROR_H

enum {
	FACTORY_OK = 0,
	FACTORY_ERR = -1,        /* generic failure */
	FACTORY_ENOMEM = -2,     /* allocation failed */
	FACTORY_EUPSTREAM = -3,  /* GitLab or another upstream unavailable after retries */
	FACTORY_ECONFIG = -4,    /* missing or bad setting, usage error */
	FACTORY_ENOTFOUND = -5,  /* 404 or no such thing */
	FACTORY_EAUTH = -6,      /* 401/403 */
	FACTORY_ECONFLICT = -7,  /* 409 */
	FACTORY_EINVALID = -8,   /* 400/422, malformed input or response */
	FACTORY_ETOOBIG = -9,    /* a cap was hit */
	FACTORY_ETIMEOUT = -10,  /* a time limit was hit */
};

/* Exit codes every job uses. */
enum {
	EXIT_DONE = 0,
	EXIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_UPSTREAM = 3,
};

/* Set the thread's last error message (printf format). Always returns `code`
 * so callers can write `return ferror_set(FACTORY_EINVALID, "...")`. */
int ferror_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The thread's last error message, or "unknown error". Never NULL; owned by
 * the library, valid until the next ferror_set on this thread. */
const char *ferror_last(void);

/* The code given to the last ferror_set on this thread (0 if none). */
int ferror_last_code(void);

/* Clear the last error. */
void ferror_clear(void);

/* Map an error code to the job exit code (EXIT_*). */
int ferror_exit_code(int code);

#endif
