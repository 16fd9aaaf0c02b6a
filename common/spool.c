/* spool.c - durable ordered queue with group commit (see spool.h). */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "error.h"
#include "log.h"

#define HEADER_LEN 39            /* "FS1 " + 16 + " " + 8 + " " + 8 + "\n" */
#define SEGMENT_MAX ((off_t)8 << 20)
#define SLOT_LEN 256
#define RESULT_RING 4096
#define PENDING_MAX ((size_t)256 << 20)

typedef struct {
	spool_done_fn fn;
	void *ctx;
	uint64_t seq;
} done_cb;

typedef struct {
	uint64_t first_seq;  /* from the file name */
	off_t size;          /* bytes that are durable and valid */
	int damaged;         /* a damaged record was found: keep the file, rename it when done */
	long long written_ms; /* last write (the file's mtime when loaded) */
} segment;

struct spool {
	char *dir;
	int lock_fd;
	int dir_fd;
	int state_fd;

	pthread_mutex_t mu;
	pthread_mutex_t state_mu; /* one state write at a time, without holding mu */
	pthread_cond_t flushed;   /* a flush finished */
	pthread_cond_t avail;     /* new records are durable, or a wake-up */
	pthread_cond_t work;      /* the flusher thread has something to write */

	/* writer */
	int wfd;                  /* the last segment, opened for appending */
	fbuf pending;             /* encoded records waiting for the next flush */
	uint64_t pending_first;   /* first seq in `pending` */
	uint64_t batch_gen;       /* the batch `pending` will be written in */
	uint64_t durable_gen;     /* batches up to this one are done */
	unsigned char failed[RESULT_RING]; /* by batch gen: the flush failed */
	int flushing;
	uint64_t last_seq;
	done_cb *cbs;             /* callbacks of the records in `pending` */
	size_t ncbs, acbs;
	pthread_t flusher;        /* for spool_append_async(), started on first use */
	int flusher_running;
	int stopping;

	/* segments, oldest first; the last one is the writer's */
	segment *segs;
	size_t nsegs;
	size_t asegs;

	/* reader */
	size_t rseg;              /* index into segs */
	off_t roff;               /* offset of the next record to read in segs[rseg] */
	int rfd;                  /* fd of segs[rseg] for reading, -1 if not open */
	size_t rfd_seg_first;     /* which segment rfd belongs to (first_seq) */
	uint64_t cur_seq;         /* record handed out and not yet acked (0: none) */
	off_t cur_next_off;       /* offset after it */
	int woken;
	long long keep_ms;        /* keep delivered segments this long (spool_keep_delivered) */
	size_t keep_segments;     /* and at most this many */

	/* state: written under state_mu, the fields changed under mu */
	uint64_t state_gen;
	uint64_t delivered;
	uint64_t current;
	char mark[SPOOL_MARK_MAX + 1];

	uint64_t pending_count;
	uint64_t appended;
	uint64_t flushes;
	uint64_t damaged;
};

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	uint32_t c;
	int i, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 (IEEE), as zlib computes it. */
static uint32_t crc32_of(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t c = 0xFFFFFFFFu;

	pthread_once(&crc_once, crc_init);
	while (len--)
		c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static int io_error(const char *what, const char *path)
{
	return ferror_set(FACTORY_ERR, "spool: %s %s: %s", what, path, strerror(errno));
}

/* Exactly `n` lowercase hex digits at `p` into *out; -1 if not. */
static int parse_hex(uint64_t *out, const char *p, size_t n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		char ch = p[i];
		if (ch >= '0' && ch <= '9')
			v = v << 4 | (uint64_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v = v << 4 | (uint64_t)(ch - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 1; /* short */
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static void seg_path(char *out, size_t len, const spool *sp, uint64_t first)
{
	snprintf(out, len, "%s/seg-%016" PRIx64 ".log", sp->dir, first);
}

static int mkdirs(const char *dir)
{
	char tmp[4096];
	char *p;

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return ferror_set(FACTORY_EINVALID, "spool: directory name too long");
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return io_error("cannot create", tmp);
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return io_error("cannot create", tmp);
	return 0;
}

/* ---- the state file ---- */

static long long wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Write and sync the next state slot. Called with state_mu held and mu not
 * held (a sync must not stop appends); the caller then sets the fields
 * under mu. */
static int state_write(spool *sp, uint64_t delivered, uint64_t current, const char *mark)
{
	char slot[SLOT_LEN], body[SLOT_LEN];
	uint64_t gen = sp->state_gen + 1;
	int n;

	n = snprintf(body, sizeof(body), "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " ", gen, delivered, current);
	if (n < 0 || (size_t)n + strlen(mark) + 1 > sizeof(body))
		return ferror_set(FACTORY_EINVALID, "spool: mark too long");
	strcat(body, mark);
	memset(slot, ' ', sizeof(slot));
	n = snprintf(slot, sizeof(slot), "FST1 %08" PRIx32 " %s", crc32_of(body, strlen(body)), body);
	if (n < 0 || n >= SLOT_LEN - 1)
		return ferror_set(FACTORY_EINVALID, "spool: mark too long");
	slot[n] = '\n';
	memset(slot + n + 1, ' ', SLOT_LEN - (size_t)n - 2);
	slot[SLOT_LEN - 1] = '\n';
	if (pwrite(sp->state_fd, slot, SLOT_LEN, (off_t)(gen % 2) * SLOT_LEN) != SLOT_LEN || fdatasync(sp->state_fd) < 0)
		return ferror_set(FACTORY_ERR, "spool: cannot write %s/state: %s", sp->dir, strerror(errno));
	sp->state_gen = gen;
	return 0;
}

/* Parse one slot; 0 if valid. */
static int state_parse(const char *slot, uint64_t *gen, uint64_t *delivered, uint64_t *current, char *mark)
{
	char body[SLOT_LEN];
	const char *nl;
	uint64_t crc;
	size_t blen;

	if (strncmp(slot, "FST1 ", 5) != 0 || slot[13] != ' ' || parse_hex(&crc, slot + 5, 8) < 0)
		return -1;
	nl = memchr(slot + 14, '\n', SLOT_LEN - 14);
	if (!nl)
		return -1;
	blen = (size_t)(nl - (slot + 14));
	memcpy(body, slot + 14, blen);
	body[blen] = '\0';
	if (crc32_of(body, blen) != crc)
		return -1;
	if (blen < 51 || body[16] != ' ' || body[33] != ' ' || body[50] != ' ' || parse_hex(gen, body, 16) < 0 ||
	    parse_hex(delivered, body + 17, 16) < 0 || parse_hex(current, body + 34, 16) < 0)
		return -1;
	if (blen - 51 > SPOOL_MARK_MAX)
		return -1;
	memcpy(mark, body + 51, blen - 51);
	mark[blen - 51] = '\0';
	return 0;
}

static int state_load(spool *sp)
{
	char path[4200], buf[2 * SLOT_LEN];
	ssize_t n;
	int i;

	snprintf(path, sizeof(path), "%s/state", sp->dir);
	sp->state_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sp->state_fd < 0)
		return io_error("cannot open", path);
	memset(buf, 0, sizeof(buf));
	n = pread(sp->state_fd, buf, sizeof(buf), 0);
	if (n < 0)
		return io_error("cannot read", path);
	for (i = 0; i < 2; i++) {
		uint64_t gen, delivered, current;
		char mark[SLOT_LEN];

		if ((i + 1) * SLOT_LEN > n || state_parse(buf + i * SLOT_LEN, &gen, &delivered, &current, mark) < 0)
			continue;
		if (gen > sp->state_gen) {
			sp->state_gen = gen;
			sp->delivered = delivered;
			sp->current = current;
			snprintf(sp->mark, sizeof(sp->mark), "%.63s", mark);
		}
	}
	if (n > 0 && sp->state_gen == 0)
		log_error("spool: %s holds no valid slot: starting from the first record", path);
	return 0;
}

/* ---- segments ---- */

static int seg_add(spool *sp, uint64_t first)
{
	if (sp->nsegs == sp->asegs) {
		size_t n = sp->asegs ? sp->asegs * 2 : 8;
		segment *s = realloc(sp->segs, n * sizeof(*s));
		if (!s)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		sp->segs = s;
		sp->asegs = n;
	}
	memset(&sp->segs[sp->nsegs], 0, sizeof(segment));
	sp->segs[sp->nsegs].first_seq = first;
	sp->segs[sp->nsegs].written_ms = wall_ms();
	sp->nsegs++;
	return 0;
}

static int cmp_seg(const void *a, const void *b)
{
	const segment *x = a, *y = b;
	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* Parse a record header; 0 if it is well-formed. */
static int header_parse(const char *h, uint64_t *seq, uint32_t *len, uint32_t *crc)
{
	uint64_t l, c;
	int i;

	if (memcmp(h, "FS1 ", 4) != 0 || h[20] != ' ' || h[29] != ' ' || h[38] != '\n')
		return -1;
	for (i = 4; i < 38; i++) {
		if (i == 20 || i == 29)
			continue;
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return -1;
	}
	if (parse_hex(seq, h + 4, 16) < 0 || parse_hex(&l, h + 21, 8) < 0 || parse_hex(&c, h + 30, 8) < 0)
		return -1;
	*len = (uint32_t)l;
	*crc = (uint32_t)c;
	return 0;
}

/*
 * Read and check the record at `off` of `fd`. Returns 0 (record in *data,
 * malloc'd, unless data is NULL), 1 when the file ends inside it (torn),
 * -1 when it is damaged, -2 on an I/O error.
 */
static int record_read(int fd, off_t off, uint64_t *seq, char **data, uint32_t *len)
{
	char h[HEADER_LEN];
	uint32_t crc;
	char *buf;
	int r;

	if ((r = read_full(fd, h, HEADER_LEN, off)) != 0)
		return r < 0 ? -2 : 1;
	if (header_parse(h, seq, len, &crc) < 0 || *len == 0 || *len > SPOOL_RECORD_MAX)
		return -1;
	buf = malloc((size_t)*len + 1);
	if (!buf)
		return -2;
	if ((r = read_full(fd, buf, (size_t)*len + 1, off + HEADER_LEN)) != 0) {
		free(buf);
		return r < 0 ? -2 : 1;
	}
	if (buf[*len] != '\n' || crc32_of(buf, *len) != crc) {
		free(buf);
		return -1;
	}
	buf[*len] = '\0';
	if (data)
		*data = buf;
	else
		free(buf);
	return 0;
}

/* Check every record of segment `i`, set its valid size, count pending. */
static int seg_scan(spool *sp, size_t i)
{
	char path[4200];
	segment *s = &sp->segs[i];
	struct stat st;
	off_t off = 0;
	int fd, error = -1;

	seg_path(path, sizeof(path), sp, s->first_seq);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		error = io_error("cannot open", path);
		goto cleanup;
	}
	s->written_ms = (long long)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	while (off < st.st_size) {
		uint64_t seq = 0;
		uint32_t len = 0;
		int r = record_read(fd, off, &seq, NULL, &len);

		if (r == -2) {
			error = io_error("cannot read", path);
			goto cleanup;
		}
		if (r == 0) {
			if (seq > sp->last_seq)
				sp->last_seq = seq;
			if (seq > sp->delivered)
				sp->pending_count++;
			off += HEADER_LEN + len + 1;
			continue;
		}
		if (i == sp->nsegs - 1 && (r == 1 || off + HEADER_LEN + (off_t)len + 1 >= st.st_size)) {
			/* A torn tail: never acknowledged to anyone, cut it off. */
			log_warn("spool: %s: cutting an incomplete record at byte %lld (a write was interrupted)", path,
				 (long long)off);
			if (ftruncate(fd, off) < 0 || fdatasync(fd) < 0) {
				error = io_error("cannot truncate", path);
				goto cleanup;
			}
			break;
		}
		log_error("spool: %s: damaged record at byte %lld: the rest of this file is skipped and kept", path,
			  (long long)off);
		s->damaged = 1;
		sp->damaged++;
		break;
	}
	s->size = off;
	error = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	return error;
}

static int open_writer(spool *sp, uint64_t first)
{
	char path[4200];

	if (sp->wfd >= 0)
		close(sp->wfd);
	seg_path(path, sizeof(path), sp, first);
	sp->wfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (sp->wfd < 0)
		return io_error("cannot open", path);
	if (fsync(sp->dir_fd) < 0)
		return io_error("cannot sync", sp->dir);
	return 0;
}

static int segments_load(spool *sp)
{
	DIR *d = opendir(sp->dir);
	struct dirent *e;
	size_t i;
	int error = -1;

	if (!d)
		return io_error("cannot list", sp->dir);
	while ((e = readdir(d))) {
		uint64_t first;

		if (strncmp(e->d_name, "seg-", 4) != 0 || strlen(e->d_name) != 4 + 16 + 4)
			continue;
		if (strcmp(e->d_name + 20, ".log") != 0 || parse_hex(&first, e->d_name + 4, 16) < 0)
			continue;
		if ((error = seg_add(sp, first)) < 0)
			goto cleanup;
	}
	if (sp->nsegs > 1)
		qsort(sp->segs, sp->nsegs, sizeof(segment), cmp_seg);
	for (i = 0; i < sp->nsegs; i++) {
		if ((error = seg_scan(sp, i)) < 0)
			goto cleanup;
	}
	if (sp->delivered > sp->last_seq)
		sp->last_seq = sp->delivered;
	if (sp->current > sp->last_seq)
		sp->last_seq = sp->current;
	/* Append to the last segment when it is healthy, else start a new one. */
	if (!sp->nsegs || sp->segs[sp->nsegs - 1].damaged || sp->segs[sp->nsegs - 1].size >= SEGMENT_MAX) {
		if ((error = seg_add(sp, sp->last_seq + 1)) < 0)
			goto cleanup;
	}
	error = open_writer(sp, sp->segs[sp->nsegs - 1].first_seq);
cleanup:
	closedir(d);
	return error;
}

int spool_open(spool **out, const char *dir)
{
	spool *sp;
	char path[4200];
	int error = -1;

	*out = NULL;
	if (!dir || !*dir)
		return ferror_set(FACTORY_ECONFIG, "spool: no directory given");
	if (strlen(dir) > 4000)
		return ferror_set(FACTORY_ECONFIG, "spool: directory name too long");
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	sp->lock_fd = sp->dir_fd = sp->state_fd = sp->wfd = sp->rfd = -1;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_mutex_init(&sp->state_mu, NULL);
	pthread_cond_init(&sp->flushed, NULL);
	pthread_cond_init(&sp->avail, NULL);
	pthread_cond_init(&sp->work, NULL);
	fbuf_init(&sp->pending, PENDING_MAX);
	sp->batch_gen = 1;
	if (!(sp->dir = strdup(dir))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = mkdirs(dir)) < 0)
		goto cleanup;
	sp->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dir_fd < 0) {
		error = io_error("cannot open", dir);
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/lock", dir);
	sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sp->lock_fd < 0) {
		error = io_error("cannot open", path);
		goto cleanup;
	}
	if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		error = errno == EWOULDBLOCK
				? ferror_set(FACTORY_ECONFLICT, "spool: %s is in use by another process (lock %s)", dir, path)
				: io_error("cannot lock", path);
		goto cleanup;
	}
	if ((error = state_load(sp)) < 0 || (error = segments_load(sp)) < 0)
		goto cleanup;
	if (sp->current && sp->current <= sp->delivered) {
		sp->current = 0;
		sp->mark[0] = '\0';
	}
	*out = sp;
	sp = NULL;
	error = 0;
cleanup:
	spool_close(sp);
	return error;
}

void spool_close(spool *sp)
{
	if (!sp)
		return;
	if (sp->flusher_running) {
		/* The flusher writes what is queued, then ends. */
		pthread_mutex_lock(&sp->mu);
		sp->stopping = 1;
		pthread_cond_broadcast(&sp->work);
		pthread_mutex_unlock(&sp->mu);
		pthread_join(sp->flusher, NULL);
	}
	free(sp->cbs);
	if (sp->wfd >= 0)
		close(sp->wfd);
	if (sp->rfd >= 0)
		close(sp->rfd);
	if (sp->state_fd >= 0)
		close(sp->state_fd);
	if (sp->dir_fd >= 0)
		close(sp->dir_fd);
	if (sp->lock_fd >= 0)
		close(sp->lock_fd); /* releases the flock */
	fbuf_release(&sp->pending);
	pthread_mutex_destroy(&sp->mu);
	pthread_mutex_destroy(&sp->state_mu);
	pthread_cond_destroy(&sp->flushed);
	pthread_cond_destroy(&sp->avail);
	pthread_cond_destroy(&sp->work);
	free(sp->segs);
	free(sp->dir);
	free(sp);
}

/* ---- appending ---- */

/* Write `data` (records from `first` on) to the writer segment, rotating
 * first when it is full, then sync. Called without the lock by the one
 * flusher; reads sp->segs under the lock. */
static int flush_batch(spool *sp, const char *data, size_t len, uint64_t first)
{
	uint64_t prev_first;
	off_t size;
	int error;

	pthread_mutex_lock(&sp->mu);
	size = sp->segs[sp->nsegs - 1].size;
	prev_first = sp->segs[sp->nsegs - 1].first_seq;
	if (size > 0 && size + (off_t)len > SEGMENT_MAX) {
		if ((error = seg_add(sp, first)) < 0) {
			pthread_mutex_unlock(&sp->mu);
			return error;
		}
		pthread_mutex_unlock(&sp->mu);
		if ((error = open_writer(sp, first)) < 0) {
			pthread_mutex_lock(&sp->mu);
			sp->nsegs--; /* no file, no segment */
			pthread_mutex_unlock(&sp->mu);
			/* Reopen the previous writer so later batches can go on. */
			open_writer(sp, prev_first);
			return error;
		}
		size = 0;
	} else {
		pthread_mutex_unlock(&sp->mu);
	}
	if (write_all(sp->wfd, data, len) < 0 || fdatasync(sp->wfd) < 0) {
		int saved = errno;
		/* Nothing of this batch counts: cut what may have been written. */
		if (ftruncate(sp->wfd, size) < 0 || fdatasync(sp->wfd) < 0)
			log_error("spool: cannot cut a failed write in %s: %s", sp->dir, strerror(errno));
		errno = saved;
		return ferror_set(FACTORY_ERR, "spool: cannot write to %s: %s", sp->dir, strerror(saved));
	}
	pthread_mutex_lock(&sp->mu);
	sp->segs[sp->nsegs - 1].size = size + (off_t)len;
	sp->segs[sp->nsegs - 1].written_ms = wall_ms();
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

/* Add one record to the pending batch (lock held). 0 with *seq_out, or an
 * error with nothing added. */
static int enqueue(uint64_t *seq_out, spool *sp, const void *data, size_t len)
{
	char header[HEADER_LEN + 1];
	uint64_t seq = sp->last_seq + 1;
	size_t before = sp->pending.len;
	int error;

	snprintf(header, sizeof(header), "FS1 %016" PRIx64 " %08" PRIx32 " %08" PRIx32 "\n", seq, (uint32_t)len,
		 crc32_of(data, len));
	if ((error = fbuf_put(&sp->pending, header, HEADER_LEN)) < 0 || (error = fbuf_put(&sp->pending, data, len)) < 0 ||
	    (error = fbuf_putc(&sp->pending, '\n')) < 0) {
		if (sp->pending.ptr) {
			sp->pending.len = before;
			sp->pending.ptr[before] = '\0';
		}
		return error == FACTORY_ETOOBIG ? ferror_set(FACTORY_ERR, "spool: too many records waiting for the disk")
						: error;
	}
	if (before == 0)
		sp->pending_first = seq;
	sp->last_seq = seq;
	*seq_out = seq;
	return 0;
}

/* Write and sync the pending batch, then run its callbacks. Called with
 * the lock held and no flush running; the lock is let go during the I/O and
 * the callbacks and held again on return. */
static void flush_once(spool *sp)
{
	fbuf batch = sp->pending;
	done_cb *cbs = sp->cbs;
	size_t ncbs = sp->ncbs, i;
	uint64_t first = sp->pending_first, bgen = sp->batch_gen;
	int error;

	sp->flushing = 1;
	fbuf_init(&sp->pending, PENDING_MAX);
	sp->cbs = NULL;
	sp->ncbs = sp->acbs = 0;
	sp->batch_gen++;
	pthread_mutex_unlock(&sp->mu);
	error = flush_batch(sp, batch.ptr, batch.len, first);
	fbuf_release(&batch);
	pthread_mutex_lock(&sp->mu);
	sp->flushing = 0;
	sp->flushes++;
	sp->failed[bgen % RESULT_RING] = error < 0;
	if (error == 0) {
		sp->appended += ncbs;
		sp->pending_count += ncbs;
	}
	sp->durable_gen = bgen;
	pthread_cond_broadcast(&sp->flushed);
	pthread_cond_broadcast(&sp->avail);
	if (ncbs) {
		pthread_mutex_unlock(&sp->mu);
		for (i = 0; i < ncbs; i++)
			cbs[i].fn(cbs[i].ctx, cbs[i].seq, error < 0 ? error : 0);
		pthread_mutex_lock(&sp->mu);
	}
	free(cbs);
}

int spool_append(uint64_t *seq_out, spool *sp, const void *data, size_t len)
{
	uint64_t seq, gen;
	int error;

	if (len == 0 || len > SPOOL_RECORD_MAX)
		return ferror_set(FACTORY_ETOOBIG, "spool: record of %zu bytes (1 to %zu allowed)", len, SPOOL_RECORD_MAX);
	pthread_mutex_lock(&sp->mu);
	if ((error = enqueue(&seq, sp, data, len)) < 0) {
		pthread_mutex_unlock(&sp->mu);
		return error;
	}
	gen = sp->batch_gen;
	while (sp->durable_gen < gen) {
		if (!sp->flushing)
			flush_once(sp);
		else
			pthread_cond_wait(&sp->flushed, &sp->mu);
	}
	if (sp->failed[gen % RESULT_RING]) {
		pthread_mutex_unlock(&sp->mu);
		return ferror_set(FACTORY_ERR, "spool: cannot write to %s (disk full or failing?)", sp->dir);
	}
	sp->appended++;
	sp->pending_count++;
	pthread_mutex_unlock(&sp->mu);
	if (seq_out)
		*seq_out = seq;
	return 0;
}

static void *flusher_main(void *arg)
{
	spool *sp = arg;

	pthread_mutex_lock(&sp->mu);
	while (!sp->stopping || sp->pending.len) {
		if (!sp->pending.len)
			pthread_cond_wait(&sp->work, &sp->mu);
		else if (sp->flushing)
			pthread_cond_wait(&sp->flushed, &sp->mu);
		else
			flush_once(sp);
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

int spool_append_async(spool *sp, const void *data, size_t len, spool_done_fn fn, void *ctx)
{
	uint64_t seq;
	int error, rc;

	if (len == 0 || len > SPOOL_RECORD_MAX)
		return ferror_set(FACTORY_ETOOBIG, "spool: record of %zu bytes (1 to %zu allowed)", len, SPOOL_RECORD_MAX);
	pthread_mutex_lock(&sp->mu);
	if (sp->stopping) {
		pthread_mutex_unlock(&sp->mu);
		return ferror_set(FACTORY_ERR, "spool: closing");
	}
	if (!sp->flusher_running) {
		if ((rc = pthread_create(&sp->flusher, NULL, flusher_main, sp)) != 0) {
			pthread_mutex_unlock(&sp->mu);
			return ferror_set(FACTORY_ERR, "spool: cannot start the flusher thread: %s", strerror(rc));
		}
		sp->flusher_running = 1;
	}
	if (sp->ncbs == sp->acbs) {
		size_t n = sp->acbs ? sp->acbs * 2 : 64;
		done_cb *c = realloc(sp->cbs, n * sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&sp->mu);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		sp->cbs = c;
		sp->acbs = n;
	}
	if ((error = enqueue(&seq, sp, data, len)) < 0) {
		pthread_mutex_unlock(&sp->mu);
		return error;
	}
	sp->cbs[sp->ncbs++] = (done_cb){fn, ctx, seq};
	pthread_cond_signal(&sp->work);
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

/* ---- delivering ---- */

static void drop_consumed_segments(spool *sp)
{
	char path[4200], kept[4300];

	long long now = sp->keep_ms > 0 ? wall_ms() : 0;

	/* Called with the lock held; segments before rseg are fully
	 * acknowledged, and go once they are no longer kept. */
	while (sp->rseg > 0) {
		segment *s = &sp->segs[0];

		if (sp->keep_ms > 0 && sp->rseg <= sp->keep_segments && now - s->written_ms <= sp->keep_ms)
			break;

		seg_path(path, sizeof(path), sp, s->first_seq);
		if (s->damaged) {
			snprintf(kept, sizeof(kept), "%s/damaged-%016" PRIx64 ".log", sp->dir, s->first_seq);
			if (rename(path, kept) < 0)
				log_error("spool: cannot rename %s: %s", path, strerror(errno));
		} else if (unlink(path) < 0 && errno != ENOENT) {
			log_error("spool: cannot delete %s: %s", path, strerror(errno));
		}
		memmove(sp->segs, sp->segs + 1, (sp->nsegs - 1) * sizeof(segment));
		sp->nsegs--;
		sp->rseg--;
	}
}

int spool_next(uint64_t *seq_out, char **data_out, size_t *len_out, char *mark_out, spool *sp, long wait_ms)
{
	struct timespec deadline;
	int error = FACTORY_ENOTFOUND;

	*data_out = NULL;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += wait_ms / 1000;
	deadline.tv_nsec += (wait_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&sp->mu);
	for (;;) {
		segment *s;
		char path[4200];
		uint64_t seq;
		uint32_t len;
		char *data = NULL;
		int r;

		if (sp->woken) {
			sp->woken = 0;
			error = ferror_set(FACTORY_ENOTFOUND, "spool: woken");
			break;
		}
		s = &sp->segs[sp->rseg];
		if (sp->roff >= s->size) {
			if (sp->rseg + 1 < sp->nsegs) {
				sp->rseg++;
				sp->roff = 0;
				drop_consumed_segments(sp);
				continue;
			}
			if (wait_ms <= 0 || pthread_cond_timedwait(&sp->avail, &sp->mu, &deadline) == ETIMEDOUT) {
				error = ferror_set(FACTORY_ENOTFOUND, "spool: no record waiting");
				break;
			}
			continue;
		}
		if (sp->rfd < 0 || sp->rfd_seg_first != s->first_seq) {
			if (sp->rfd >= 0)
				close(sp->rfd);
			seg_path(path, sizeof(path), sp, s->first_seq);
			sp->rfd = open(path, O_RDONLY | O_CLOEXEC);
			if (sp->rfd < 0) {
				error = io_error("cannot open", path);
				break;
			}
			sp->rfd_seg_first = s->first_seq;
		}
		r = record_read(sp->rfd, sp->roff, &seq, &data, &len);
		if (r != 0) {
			seg_path(path, sizeof(path), sp, s->first_seq);
			error = r == -2 ? io_error("cannot read", path)
					: ferror_set(FACTORY_ERR, "spool: %s changed under us at byte %lld", path,
						     (long long)sp->roff);
			break;
		}
		if (seq <= sp->delivered) {
			free(data);
			sp->roff += HEADER_LEN + len + 1;
			continue;
		}
		sp->cur_seq = seq;
		sp->cur_next_off = sp->roff + HEADER_LEN + len + 1;
		*seq_out = seq;
		*data_out = data;
		if (len_out)
			*len_out = len;
		if (mark_out)
			snprintf(mark_out, SPOOL_MARK_MAX + 1, "%s", sp->current == seq ? sp->mark : "");
		error = 0;
		break;
	}
	pthread_mutex_unlock(&sp->mu);
	return error;
}

/* Record a new state durably: the slot is written and synced under
 * state_mu alone, so appends go on meanwhile (the consumer is one thread:
 * nothing else changes delivered, current or the reader). */
static int state_change(spool *sp, uint64_t seq, int ack, const char *mark)
{
	uint64_t delivered;
	int error;

	pthread_mutex_lock(&sp->state_mu);
	pthread_mutex_lock(&sp->mu);
	if (seq != sp->cur_seq || seq == 0) {
		pthread_mutex_unlock(&sp->mu);
		pthread_mutex_unlock(&sp->state_mu);
		return ferror_set(FACTORY_EINVALID, "spool: record %" PRIu64 " is not the one being delivered", seq);
	}
	delivered = sp->delivered;
	pthread_mutex_unlock(&sp->mu);
	error = ack ? state_write(sp, seq, 0, "") : state_write(sp, delivered, seq, mark);
	pthread_mutex_lock(&sp->mu);
	if (!error && ack) {
		sp->delivered = seq;
		sp->current = 0;
		sp->mark[0] = '\0';
		sp->roff = sp->cur_next_off;
		sp->cur_seq = 0;
		if (sp->pending_count)
			sp->pending_count--;
		drop_consumed_segments(sp);
	} else if (!error) {
		sp->current = seq;
		snprintf(sp->mark, sizeof(sp->mark), "%s", mark);
	}
	pthread_mutex_unlock(&sp->mu);
	pthread_mutex_unlock(&sp->state_mu);
	return error;
}

int spool_mark(spool *sp, uint64_t seq, const char *mark)
{
	if (!mark || strlen(mark) > SPOOL_MARK_MAX || strchr(mark, '\n'))
		return ferror_set(FACTORY_EINVALID, "spool: bad mark");
	return state_change(sp, seq, 0, mark);
}

int spool_ack(spool *sp, uint64_t seq)
{
	return state_change(sp, seq, 1, "");
}

void spool_keep_delivered(spool *sp, long keep_ms, size_t max_segments)
{
	pthread_mutex_lock(&sp->mu);
	sp->keep_ms = keep_ms > 0 ? keep_ms : 0;
	sp->keep_segments = max_segments;
	pthread_mutex_unlock(&sp->mu);
}

int spool_scan(spool *sp, spool_scan_fn fn, void *ctx)
{
	segment *segs = NULL;
	size_t nsegs, i;
	int error = 0;

	pthread_mutex_lock(&sp->mu);
	nsegs = sp->nsegs;
	if (nsegs && !(segs = malloc(nsegs * sizeof(*segs)))) {
		pthread_mutex_unlock(&sp->mu);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	if (nsegs)
		memcpy(segs, sp->segs, nsegs * sizeof(*segs));
	pthread_mutex_unlock(&sp->mu);
	for (i = 0; i < nsegs && !error; i++) {
		char path[4200];
		off_t off = 0;
		int fd;

		seg_path(path, sizeof(path), sp, segs[i].first_seq);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			if (errno == ENOENT)
				continue; /* delivered and deleted meanwhile */
			error = io_error("cannot open", path);
			break;
		}
		/* Only what was valid and durable when the scan began. */
		while (off < segs[i].size && !error) {
			uint64_t seq;
			uint32_t len;
			char *data = NULL;
			int r = record_read(fd, off, &seq, &data, &len);

			if (r != 0) {
				if (r == -2)
					error = io_error("cannot read", path);
				break;
			}
			error = fn(ctx, seq, data, len);
			free(data);
			off += HEADER_LEN + len + 1;
		}
		close(fd);
	}
	free(segs);
	return error;
}

void spool_wake(spool *sp)
{
	pthread_mutex_lock(&sp->mu);
	sp->woken = 1;
	pthread_cond_broadcast(&sp->avail);
	pthread_mutex_unlock(&sp->mu);
}

void spool_get_stats(spool_stats *out, spool *sp)
{
	pthread_mutex_lock(&sp->mu);
	out->last_seq = sp->last_seq;
	out->delivered = sp->delivered;
	out->pending = sp->pending_count;
	out->appended = sp->appended;
	out->flushes = sp->flushes;
	out->damaged = sp->damaged;
	out->segments = sp->nsegs;
	pthread_mutex_unlock(&sp->mu);
}
