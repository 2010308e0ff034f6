/* Sealed-file writer: records -> frames -> pieces -> zstd frames -> 1 MiB chunks
 * -> secretstream -> temp file -> fsync -> atomic rename. See docs/suspend-format.md.
 *
 * Pipeline: the calling thread cuts the plaintext record stream into pieces (at
 * most PIECE_SIZE bytes) and hands them to a few worker threads, each of which
 * compresses whole pieces into independent zstd frames with its own context.
 * The calling thread takes finished pieces strictly in order, cuts their output
 * into chunks and encrypts them (secretstream is one sequential stream); a
 * file-writing thread writes the chunks in order. With one CPU there are no
 * threads: the calling thread does everything. */
#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)
#include <errno.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include <zstd.h>
#include <zstd_errors.h>
#include <vmsvc/err.h>
#include "services/sealed_internal.h"

/* Progress and zero-run detection happen in runs of at most this size. */
#define FEED_PIECE (4u << 20)
/* Plaintext per zstd frame (one piece). Big enough that frame overhead and the
 * restarted match finder cost nothing measurable, small enough that 2 workers
 * start early and finish together. */
#define PIECE_SIZE SEALED_PIECE_SIZE
/* Frame headers, short runs and data that must be copied (sealed_write's) are
 * gathered into a piece's own buffer of this size. */
#define STAGE_CAP (1u << 20)
/* Runs of stable memory shorter than this are copied into the stage instead of
 * becoming a piece of their own (each piece is a zstd frame). */
#define SPAN_MIN (64u << 10)
/* Pieces shorter than this are compressed on the calling thread: waking a
 * worker costs more. */
#define INLINE_MAX (64u << 10)
#define MAX_WORKERS 4
/* Ring of pieces in flight: 4 per worker, as about every other piece is the
 * few bytes of frame headers before a run (compressed inline, output buffer
 * barely touched), so each worker still finds work queued while the calling
 * thread encrypts and writes. */
#define SLOTS_PER_WORKER 4
#define MAX_SLOTS (SLOTS_PER_WORKER * MAX_WORKERS + 2)
/* Encrypted chunks queued for the file-writing thread. */
#define NWBUF 4
/* Writeback is started every this many file bytes (sync_file_range). */
#define WRITEBACK_STEP (8u << 20)

/* Test hook (tests/unit/test_sealed.c): the piece with this 1-based sequence
 * number fails to compress, as a zstd error on a worker would. */
uint64_t sealed__fail_piece;
/* Test hook: the format version written (0 = SEALED_FORMAT_VERSION). Version 1
 * files are only valid while the whole stream fits one piece (one zstd frame). */
uint32_t sealed__write_version;

/* What must not be swappable: the stream state holds the key. */
struct writer_secret {
	crypto_secretstream_xchacha20poly1305_state st;
	uint8_t key[SEALED_KEY_BYTES];
};

enum piece_state { PIECE_FILLING, PIECE_QUEUED, PIECE_DONE };

struct piece {
	const uint8_t *src; /* input: the caller's stable memory, or stage */
	size_t len;
	uint8_t *stage;     /* STAGE_CAP, allocated on first use */
	uint8_t *out;       /* ZSTD_compressBound(PIECE_SIZE), allocated on first use */
	size_t olen;
	size_t zerr;        /* zstd error code, or 0 */
	uint64_t seq;       /* 1-based piece number (test hook) */
	int state;          /* enum piece_state; QUEUED/DONE change under mu */
};

struct sealed_writer {
	char *path;
	int dirfd, fd;
	char *tmpname;   /* named temp file, or NULL while the file is unnamed (O_TMPFILE) */
	struct writer_secret *sec;
	uint8_t hdr[SEALED_HDR_SIZE];
	uint8_t *pbuf, *cbuf; /* chunk plaintext (compressed bytes) and ciphertext */
	size_t psize, plen;
	uint64_t nchunks, nrecords, done, reported;
	uint64_t written, flushed; /* file bytes written (after the header) / handed to writeback */
	int failed;       /* first error; every later call returns it */
	struct sealed_opts opts;

	/* Pipeline. Pieces [head, tail) are submitted, in ring slots seq % nslots;
	 * slot tail is being filled while `filling`. Workers take QUEUED pieces from
	 * `next` on. head/filling belong to the calling thread; tail, next, stop and
	 * the QUEUED/DONE states are shared under mu. */
	pthread_mutex_t mu;
	pthread_cond_t work, done_cv;
	bool sync_ready;
	pthread_t thr[MAX_WORKERS];
	int nworkers, nstarted, nslots;
	ZSTD_CCtx *cz[MAX_WORKERS + 1]; /* one per worker, [nworkers] for the calling thread */
	uint64_t head, tail, next, nseq;
	bool filling, stop;
	struct piece slot[MAX_SLOTS];

	/* File-writing thread (with workers only): encrypted chunks [wdone, wsent)
	 * wait in wbuf[i % NWBUF]; it writes them in order, so the kernel's part of
	 * writing runs beside encryption. Its first error is kept in werr/wmsg (the
	 * err_set message is per thread). Shared under mu. */
	pthread_t wthr;
	bool wthr_started, wstop;
	pthread_cond_t wq_cv, wfree_cv;
	uint64_t wsent, wdone;
	int werr;
	char wmsg[256];
	uint8_t *wbuf[NWBUF];
	size_t wlen[NWBUF];
};

static int write_all(struct sealed_writer *w, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(w->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_set(errno, "%s: write: %s", w->path, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write one encrypted chunk (the calling thread, or the file-writing thread). */
static int write_chunk(struct sealed_writer *w, const uint8_t *c, size_t clen)
{
	int rc = write_all(w, c, clen);
	w->written += clen;
	if (rc == 0 && w->written - w->flushed >= WRITEBACK_STEP) {
		/* Start writeback of what is written so far now, so the disk works while we
		 * compress and the final fsync waits only for the tail. Advisory: errors
		 * surface at fsync. */
		sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->written - w->flushed), SYNC_FILE_RANGE_WRITE);
		w->flushed = w->written;
	}
	return rc;
}

static void *file_writer_main(void *arg)
{
	struct sealed_writer *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->wstop && w->wdone == w->wsent)
			pthread_cond_wait(&w->wq_cv, &w->mu);
		if (w->wstop)
			break;
		unsigned i = (unsigned)(w->wdone % NWBUF);
		bool skip = w->werr != 0; /* after an error nothing more is written */
		pthread_mutex_unlock(&w->mu);
		int rc = skip ? 0 : write_chunk(w, w->wbuf[i], w->wlen[i]);
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && !w->werr) {
			w->werr = rc;
			snprintf(w->wmsg, sizeof(w->wmsg), "%s", err_msg());
		}
		w->wdone++;
		pthread_cond_signal(&w->wfree_cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* With mu held: the file-writing thread's error, raised on this thread. */
static int file_writer_error(struct sealed_writer *w)
{
	return w->werr ? err_set(-w->werr, "%s", w->wmsg) : 0;
}

/* Wait until every queued chunk is in the file. */
static int wait_written(struct sealed_writer *w)
{
	if (!w->wthr_started)
		return 0;
	pthread_mutex_lock(&w->mu);
	while (w->wdone != w->wsent)
		pthread_cond_wait(&w->wfree_cv, &w->mu);
	int rc = file_writer_error(w);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* Encrypt one chunk of n compressed bytes at src and write it (or queue it for
 * the file-writing thread). */
static int emit_chunk(struct sealed_writer *w, const uint8_t *src, size_t n, uint8_t tag)
{
	uint8_t *c = w->cbuf;
	unsigned i = 0;
	if (w->wthr_started) {
		pthread_mutex_lock(&w->mu);
		while (w->wsent - w->wdone == NWBUF && !w->werr)
			pthread_cond_wait(&w->wfree_cv, &w->mu);
		int rc = file_writer_error(w);
		pthread_mutex_unlock(&w->mu);
		if (rc < 0)
			return rc;
		i = (unsigned)(w->wsent % NWBUF);
		if (!w->wbuf[i] && !(w->wbuf[i] = malloc(w->psize + crypto_secretstream_xchacha20poly1305_ABYTES)))
			return err_set(ENOMEM, "out of memory");
		c = w->wbuf[i];
	}
	unsigned long long clen;
	/* The header rides as additional data of the first chunk: editing any byte fails it. */
	const uint8_t *ad = w->nchunks == 0 ? w->hdr : NULL;
	crypto_secretstream_xchacha20poly1305_push(&w->sec->st, c, &clen, src, n, ad, ad ? SEALED_HDR_SIZE : 0, tag);
	w->nchunks++;
	if (!w->wthr_started)
		return write_chunk(w, c, (size_t)clen);
	pthread_mutex_lock(&w->mu);
	w->wlen[i] = (size_t)clen;
	w->wsent++;
	pthread_cond_signal(&w->wq_cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* A finished piece's zstd frame into chunks, in stream order. Whole chunks that
 * lie inside the piece's output are encrypted from there without a copy. */
static int emit_piece(struct sealed_writer *w, struct piece *p)
{
	if (p->zerr)
		return err_set(EIO, "%s: zstd: %s", w->path, ZSTD_getErrorName(p->zerr));
	const uint8_t *s = p->out;
	size_t n = p->olen;
	while (n) {
		if (w->plen == 0 && n >= w->psize) {
			int rc = emit_chunk(w, s, w->psize, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
			if (rc < 0)
				return rc;
			s += w->psize;
			n -= w->psize;
			continue;
		}
		size_t k = n < w->psize - w->plen ? n : w->psize - w->plen;
		memcpy(w->pbuf + w->plen, s, k);
		w->plen += k;
		s += k;
		n -= k;
		if (w->plen == w->psize) {
			w->plen = 0;
			int rc = emit_chunk(w, w->pbuf, w->psize, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* One piece into one zstd frame (any thread; cz is that thread's own). */
static void compress_piece(ZSTD_CCtx *cz, struct piece *p)
{
	if (sealed__fail_piece && p->seq == sealed__fail_piece) {
		p->zerr = (size_t)-ZSTD_error_GENERIC;
		return;
	}
	size_t r = ZSTD_compress2(cz, p->out, ZSTD_compressBound(PIECE_SIZE), p->src, p->len);
	if (ZSTD_isError(r))
		p->zerr = r;
	else
		p->olen = r;
}

static void *worker_main(void *arg)
{
	struct sealed_writer *w = arg;
	pthread_mutex_lock(&w->mu);
	ZSTD_CCtx *cz = w->cz[w->nstarted++];
	for (;;) {
		/* Pieces compressed inline are DONE already: skip them. */
		while (w->next < w->tail && w->slot[w->next % w->nslots].state != PIECE_QUEUED)
			w->next++;
		if (w->stop)
			break;
		if (w->next == w->tail) {
			pthread_cond_wait(&w->work, &w->mu);
			continue;
		}
		struct piece *p = &w->slot[w->next++ % w->nslots];
		pthread_mutex_unlock(&w->mu);
		compress_piece(cz, p);
		pthread_mutex_lock(&w->mu);
		p->state = PIECE_DONE;
		pthread_cond_signal(&w->done_cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Write out finished pieces from head on; with `wait`, first wait for the head
 * piece to finish. Stops at the first piece still being compressed, and (without
 * `wait`) as soon as fewer pieces are queued than there are workers: then making
 * the next piece comes first, or a worker would go idle while this thread
 * encrypts a backlog. */
static int drain(struct sealed_writer *w, bool wait)
{
	while (w->head < w->tail) {
		struct piece *p = &w->slot[w->head % w->nslots];
		pthread_mutex_lock(&w->mu);
		if (!wait && w->tail - w->next < (uint64_t)w->nworkers) {
			pthread_mutex_unlock(&w->mu);
			return 0;
		}
		while (wait && p->state != PIECE_DONE)
			pthread_cond_wait(&w->done_cv, &w->mu);
		bool ready = p->state == PIECE_DONE;
		pthread_mutex_unlock(&w->mu);
		if (!ready)
			return 0;
		wait = false;
		int rc = emit_piece(w, p);
		pthread_mutex_lock(&w->mu);
		w->head++;
		/* Workers never look behind head: an inline piece they have not skipped
		 * yet has a slot that is about to be reused. */
		if (w->next < w->head)
			w->next = w->head;
		pthread_mutex_unlock(&w->mu);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The ring slot for the next piece, writing out old pieces while the ring is full. */
static int next_slot(struct sealed_writer *w, struct piece **out)
{
	while (w->tail - w->head == (uint64_t)w->nslots) {
		int rc = drain(w, true);
		if (rc < 0)
			return rc;
	}
	struct piece *p = &w->slot[w->tail % w->nslots];
	if (!p->out && !(p->out = malloc(ZSTD_compressBound(PIECE_SIZE))))
		return err_set(ENOMEM, "out of memory");
	p->src = NULL;
	p->len = p->olen = p->zerr = 0;
	p->seq = ++w->nseq;
	p->state = PIECE_FILLING;
	*out = p;
	return 0;
}

/* Hand the piece at tail on: small ones are compressed right here. Then write
 * out whatever has finished meanwhile. */
static int submit(struct sealed_writer *w, struct piece *p)
{
	w->filling = false;
	bool inline_ = w->nworkers == 0 || p->len < INLINE_MAX;
	if (inline_)
		compress_piece(w->cz[w->nworkers], p);
	pthread_mutex_lock(&w->mu);
	p->state = inline_ ? PIECE_DONE : PIECE_QUEUED;
	w->tail++;
	if (!inline_)
		pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->mu);
	return drain(w, false);
}

static int flush_stage(struct sealed_writer *w)
{
	if (!w->filling)
		return 0;
	struct piece *p = &w->slot[w->tail % w->nslots];
	if (p->len == 0)
		return 0;
	return submit(w, p);
}

/* Plaintext in order, copied into the stage of the piece being filled. */
static int put_plain(struct sealed_writer *w, const void *src, size_t n)
{
	const uint8_t *s = src;
	while (n) {
		struct piece *p = &w->slot[w->tail % w->nslots];
		if (!w->filling) {
			int rc = next_slot(w, &p);
			if (rc < 0)
				return rc;
			if (!p->stage && !(p->stage = malloc(STAGE_CAP)))
				return err_set(ENOMEM, "out of memory");
			p->src = p->stage;
			w->filling = true;
		}
		size_t k = n < STAGE_CAP - p->len ? n : STAGE_CAP - p->len;
		memcpy(p->stage + p->len, s, k);
		p->len += k;
		s += k;
		n -= k;
		if (p->len == STAGE_CAP) {
			int rc = submit(w, p);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Plaintext in order from memory that stays unchanged until commit or abort:
 * compressed where it is, in pieces of its own (short runs are copied). */
static int put_stable(struct sealed_writer *w, const uint8_t *src, size_t n)
{
	if (n < SPAN_MIN)
		return put_plain(w, src, n);
	int rc = flush_stage(w);
	while (rc == 0 && n) {
		struct piece *p;
		if ((rc = next_slot(w, &p)) < 0)
			break;
		size_t k = n < PIECE_SIZE ? n : PIECE_SIZE;
		p->src = src;
		p->len = k;
		src += k;
		n -= k;
		rc = submit(w, p);
	}
	return rc;
}

static int feed_frame(struct sealed_writer *w, uint32_t kind, uint32_t type, uint64_t len)
{
	uint8_t f[SEALED_FRAME_SIZE];
	sealed__put32(f, kind);
	sealed__put32(f + 4, type);
	sealed__put64(f + 8, len);
	return put_plain(w, f, sizeof(f));
}

static bool page_is_zero(const uint8_t *p, size_t n)
{
	/* 64-byte blocks, early exit on the first non-zero block (random and text pages
	 * fail within the first block; zero pages are scanned once at memory speed). */
	for (size_t i = 0; i < n; i += 64) {
		uint64_t acc = 0, v;
		for (size_t j = 0; j < 64 && i + j < n; j += 8) {
			memcpy(&v, p + i + j, 8);
			acc |= v;
		}
		if (acc)
			return false;
	}
	return true;
}

/* At most about once per MiB (runs can be single pages), and at each record's end. */
static void report(struct sealed_writer *w, bool record_end)
{
	if (w->opts.progress && (record_end || w->done - w->reported >= (1u << 20))) {
		w->reported = w->done;
		w->opts.progress(w->done, w->opts.progress_total, w->opts.progress_arg);
	}
}

static int fail(struct sealed_writer *w, int rc)
{
	if (!w->failed)
		w->failed = rc;
	return rc;
}

/* Body bytes [pos, end) of the current record: runs of all-zero pages become
 * ZERO frames, the rest DATA frames. */
static int write_range(struct sealed_writer *w, const uint8_t *p, uint64_t pos, uint64_t end, uint64_t len,
		       bool stable)
{
	int rc = 0;
	while (rc == 0 && pos < end) {
		/* One run: consecutive pages that are all zero, or all not (at most FEED_PIECE). */
		size_t first = (size_t)(end - pos < SEALED_PAGE ? end - pos : SEALED_PAGE);
		bool zero = first == SEALED_PAGE && page_is_zero(p + pos, SEALED_PAGE);
		uint64_t stop = pos + first;
		while (stop < end && stop - pos < FEED_PIECE) {
			size_t n = (size_t)(end - stop < SEALED_PAGE ? end - stop : SEALED_PAGE);
			bool z = n == SEALED_PAGE && page_is_zero(p + stop, SEALED_PAGE);
			if (z != zero)
				break;
			stop += n;
		}
		if (zero) {
			rc = feed_frame(w, SEALED_FR_ZERO, 0, stop - pos);
		} else {
			rc = feed_frame(w, SEALED_FR_DATA, 0, stop - pos);
			if (rc == 0)
				rc = stable ? put_stable(w, p + pos, (size_t)(stop - pos))
					    : put_plain(w, p + pos, (size_t)(stop - pos));
		}
		w->done += stop - pos;
		pos = stop;
		report(w, pos == len);
	}
	return rc;
}

/* Anonymous memory: offset of the first page at or after pos (page-aligned)
 * whose residency is `resident`, or len. A page never touched is not resident
 * and reads as zero. mincore failing counts as resident (scan it). */
static uint64_t anon_next(const uint8_t *p, uint64_t pos, uint64_t len, bool resident)
{
	unsigned char vec[512];
	while (pos < len) {
		uint64_t n = len - pos < sizeof(vec) * 4096 ? len - pos : sizeof(vec) * 4096;
		if (mincore((void *)(p + pos), n, vec) < 0)
			return resident ? pos : len;
		for (uint64_t i = 0; i < (n + 4095) / 4096; i++)
			if ((bool)(vec[i] & 1) == resident)
				return pos + i * 4096;
		pos += n;
	}
	return len;
}

static int write_record(struct sealed_writer *w, uint32_t type, const void *data, uint64_t len, int fd,
			uint64_t fd_off, bool stable)
{
	if (w->failed)
		return err_set(-w->failed, "%s: writer already failed", w->path);
	if (len && !data)
		return err_set(EINVAL, "%s: record %u has no data", w->path, type);
	int rc = feed_frame(w, SEALED_FR_BEGIN, type, len);
	const uint8_t *p = data;
	for (uint64_t pos = 0; rc == 0 && pos < len;) {
		uint64_t end = len;
		if (fd >= 0) {
			/* Holes of the backing file are zero and never read: touching them
			 * through the mapping would allocate (and clear) a page for each. */
			off_t d = lseek(fd, (off_t)(fd_off + pos), SEEK_DATA);
			uint64_t data_at = d < 0 ? len : (uint64_t)d - fd_off;
			if (d < 0 && errno != ENXIO)
				data_at = pos;   /* cannot tell: scan it */
			if (data_at > pos) {
				uint64_t z = (data_at < len ? data_at : len) - pos;
				rc = feed_frame(w, SEALED_FR_ZERO, 0, z);
				w->done += z;
				pos += z;
				report(w, pos == len);
				continue;
			}
			off_t h = lseek(fd, (off_t)(fd_off + pos), SEEK_HOLE);
			if (h > 0 && (uint64_t)h - fd_off > pos && (uint64_t)h - fd_off < len)
				end = (uint64_t)h - fd_off;
		}
		if (fd == SEALED_FD_ANON && !((uintptr_t)p & 4095)) {
			uint64_t data_at = anon_next(p, pos, len, true);
			if (data_at > pos) {
				uint64_t z = data_at - pos;
				rc = feed_frame(w, SEALED_FR_ZERO, 0, z);
				w->done += z;
				pos += z;
				report(w, pos == len);
				continue;
			}
			end = anon_next(p, pos, len, false);
		}
		rc = write_range(w, p, pos, end, len, stable);
		pos = end;
	}
	if (rc < 0)
		return fail(w, rc);
	w->nrecords++;
	return 0;
}

int sealed_write(struct sealed_writer *w, uint32_t type, const void *data, uint64_t len)
{
	return write_record(w, type, data, len, -1, 0, false);
}

int sealed_write_mapped(struct sealed_writer *w, uint32_t type, const void *data, uint64_t len, int fd,
			uint64_t fd_off)
{
	return write_record(w, type, data, len, fd, fd_off, true);
}

void sealed_set_progress_total(struct sealed_writer *w, uint64_t total)
{
	w->opts.progress_total = total;
}

/* ---- Temp file and atomic placement ---- */

int sealed__no_tmpfile;

static void random_suffix(char *s, size_t n)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	for (size_t i = 0; i < n; i++)
		s[i] = abc[randombytes_uniform(sizeof(abc) - 1)];
}

/* "<path>.tmp.XXXXXX" with a fresh random suffix. */
static char *temp_name(const char *path)
{
	size_t n = strlen(path);
	char *t = malloc(n + 12);
	if (t) {
		memcpy(t, path, n);
		memcpy(t + n, ".tmp.", 5);
		random_suffix(t + n + 5, 6);
		t[n + 11] = 0;
	}
	return t;
}

static int open_temp(struct sealed_writer *w)
{
	char *slash = strrchr(w->path, '/');
	char *dir = slash ? strndup(w->path, slash == w->path ? 1 : (size_t)(slash - w->path)) : strdup(".");
	if (!dir)
		return err_set(ENOMEM, "out of memory");
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int e = errno;
	if (w->dirfd < 0) {
		int rc = err_set(e, "%s: cannot open directory %s: %s", w->path, dir, strerror(e));
		free(dir);
		return rc;
	}
	/* Unnamed first: a writer killed at any point before commit leaves nothing behind. */
	if (sealed__no_tmpfile) {
		w->fd = -1;
		errno = EOPNOTSUPP;
	} else {
		w->fd = openat(w->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	}
	free(dir);
	for (int tries = 0; w->fd < 0 && tries < 100; tries++) {
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != EEXIST)
			break;
		free(w->tmpname);
		if (!(w->tmpname = temp_name(w->path)))
			return err_set(ENOMEM, "out of memory");
		w->fd = open(w->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (w->fd < 0)
		return err_set(errno, "%s: cannot create temp file: %s", w->path, strerror(errno));
	/* The lock tells sealed_clean_temps this temp file still has a live writer. */
	flock(w->fd, LOCK_EX | LOCK_NB);
	return 0;
}

/* Give the unnamed file a temp name (linkat via /proc, works unprivileged). */
static int name_temp(struct sealed_writer *w)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->fd);
	for (int tries = 0; tries < 100; tries++) {
		free(w->tmpname);
		if (!(w->tmpname = temp_name(w->path)))
			return err_set(ENOMEM, "out of memory");
		if (linkat(AT_FDCWD, proc, AT_FDCWD, w->tmpname, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	int rc = err_set(errno, "%s: cannot link temp file: %s", w->path, strerror(errno));
	free(w->tmpname);
	w->tmpname = NULL;
	return rc;
}

static int place(struct sealed_writer *w)
{
	if (fsync(w->fd) < 0)
		return err_set(errno, "%s: fsync: %s", w->path, strerror(errno));
	if (!w->tmpname) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->fd);
		/* No file at path yet: one link puts it there atomically. */
		if (linkat(AT_FDCWD, proc, AT_FDCWD, w->path, AT_SYMLINK_FOLLOW) == 0)
			goto sync_dir;
		if (errno != EEXIST)
			return err_set(errno, "%s: cannot link: %s", w->path, strerror(errno));
		int rc = name_temp(w);
		if (rc < 0)
			return rc;
	}
	if (rename(w->tmpname, w->path) < 0)
		return err_set(errno, "%s: rename from %s: %s", w->path, w->tmpname, strerror(errno));
	free(w->tmpname);
	w->tmpname = NULL;
sync_dir:
	if (fsync(w->dirfd) < 0)
		return err_set(errno, "%s: fsync of its directory: %s", w->path, strerror(errno));
	return 0;
}

static void stop_workers(struct sealed_writer *w)
{
	if (!w->sync_ready)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_broadcast(&w->work);
	pthread_mutex_unlock(&w->mu);
	/* A worker finishes the piece it has (the caller's memory stays valid until
	 * sealed_commit/sealed_abort return) and leaves. */
	for (int i = 0; i < w->nworkers; i++)
		pthread_join(w->thr[i], NULL);
	w->nworkers = 0;
	if (w->wthr_started) {
		pthread_mutex_lock(&w->mu);
		w->wstop = true;
		pthread_cond_signal(&w->wq_cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->wthr, NULL);
		w->wthr_started = false;
	}
}

static void writer_free(struct sealed_writer *w)
{
	stop_workers(w);
	if (w->tmpname)
		unlink(w->tmpname);
	if (w->fd >= 0)
		close(w->fd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	if (w->sec)
		sodium_free(w->sec);
	for (int i = 0; i <= MAX_WORKERS; i++)
		ZSTD_freeCCtx(w->cz[i]);
	/* Compressed plaintext and staged copies: not key, but private. */
	if (w->pbuf)
		sodium_memzero(w->pbuf, w->psize);
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct piece *p = &w->slot[i];
		if (p->stage)
			sodium_memzero(p->stage, STAGE_CAP);
		if (p->out)
			sodium_memzero(p->out, p->olen);
		free(p->stage);
		free(p->out);
	}
	for (int i = 0; i < NWBUF; i++)
		free(w->wbuf[i]);
	if (w->sync_ready) {
		pthread_cond_destroy(&w->work);
		pthread_cond_destroy(&w->done_cv);
		pthread_cond_destroy(&w->wq_cv);
		pthread_cond_destroy(&w->wfree_cv);
		pthread_mutex_destroy(&w->mu);
	}
	free(w->pbuf);
	free(w->cbuf);
	free(w->tmpname);
	free(w->path);
	free(w);
}

void sealed_abort(struct sealed_writer *w)
{
	if (w)
		writer_free(w);
}

int sealed_commit(struct sealed_writer *w)
{
	int rc = w->failed;
	if (rc < 0) {
		rc = err_set(-rc, "%s: not written (an earlier write failed)", w->path);
	} else {
		rc = feed_frame(w, SEALED_FR_END, 0, w->nrecords);
		if (rc == 0)
			rc = flush_stage(w);
		while (rc == 0 && w->head < w->tail)
			rc = drain(w, true);
		if (rc == 0)
			rc = emit_chunk(w, w->pbuf, w->plen, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
		if (rc == 0)
			rc = wait_written(w);
		if (rc == 0)
			rc = place(w);
	}
	writer_free(w);
	return rc;
}

/* ---- Creation ---- */

static int check_opts(const char *path, struct sealed_opts *o)
{
	if (!o->kdf_opslimit)
		o->kdf_opslimit = SEALED_DEFAULT_OPS;
	if (!o->kdf_memlimit)
		o->kdf_memlimit = SEALED_DEFAULT_MEM;
	if (!o->chunk_size)
		o->chunk_size = SEALED_CHUNK_DEFAULT;
	if (!o->zstd_level)
		o->zstd_level = SEALED_DEFAULT_LEVEL;
	if (o->kdf_opslimit < crypto_pwhash_OPSLIMIT_MIN || o->kdf_opslimit > SEALED_OPS_MAX ||
	    o->kdf_memlimit < crypto_pwhash_MEMLIMIT_MIN || o->kdf_memlimit > SEALED_MEM_MAX)
		return err_set(EINVAL, "%s: Argon2id limits out of range (ops %llu, mem %llu)", path,
			       (unsigned long long)o->kdf_opslimit, (unsigned long long)o->kdf_memlimit);
	if (o->chunk_size < SEALED_CHUNK_MIN || o->chunk_size > SEALED_CHUNK_MAX)
		return err_set(EINVAL, "%s: chunk size %u out of range", path, o->chunk_size);
	if (o->zstd_level < -7 || o->zstd_level > 19) /* negative: zstd's --fast levels */
		return err_set(EINVAL, "%s: zstd level %d out of range", path, o->zstd_level);
	return 0;
}

static int setup_pipeline(struct sealed_writer *w)
{
	int workers = w->opts.zstd_workers;
	if (workers == 0) {
		/* auto: compression (the heavier half) on every core, up to 4; this thread
		 * encrypts and writes in between. One core: no threads at all. */
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		workers = cpus >= 2 ? (int)(cpus < MAX_WORKERS ? cpus : MAX_WORKERS) : 0;
	}
	if (workers < 0)
		workers = 0;
	if (workers > MAX_WORKERS)
		workers = MAX_WORKERS;
	for (int i = 0; i <= workers; i++) {
		if (!(w->cz[i] = ZSTD_createCCtx()))
			return err_set(ENOMEM, "out of memory for zstd");
		/* No zstd checksum: the AEAD covers every byte. */
		size_t e = ZSTD_CCtx_setParameter(w->cz[i], ZSTD_c_compressionLevel, w->opts.zstd_level);
		if (!ZSTD_isError(e))
			e = ZSTD_CCtx_setParameter(w->cz[i], ZSTD_c_windowLog, 21);
		if (ZSTD_isError(e))
			return err_set(EINVAL, "%s: zstd: %s", w->path, ZSTD_getErrorName(e));
	}
	/* With default attributes these cannot fail (glibc, musl). */
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->done_cv, NULL);
	pthread_cond_init(&w->wq_cv, NULL);
	pthread_cond_init(&w->wfree_cv, NULL);
	w->sync_ready = true;
	w->nslots = workers ? SLOTS_PER_WORKER * workers + 2 : 2;
	/* Workers take no signals: the VM process directs its own at specific threads. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int n = 0;
	while (n < workers && pthread_create(&w->thr[n], NULL, worker_main, w) == 0)
		n++;
	/* Writing gets a thread of its own only where compression has some too. */
	if (n > 0 && pthread_create(&w->wthr, NULL, file_writer_main, w) == 0)
		w->wthr_started = true;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Fewer threads than asked (resource limits) still works: the calling thread
	 * takes the context after the last worker's. */
	w->nworkers = n;
	return 0;
}

int sealed_create(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		  struct sealed_writer **out)
{
	int rc = sealed__sodium_ready();
	if (rc < 0)
		return rc;
	struct sealed_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(ENOMEM, "out of memory");
	w->fd = w->dirfd = -1;
	if (opts)
		w->opts = *opts;
	if (!(w->path = strdup(path))) {
		free(w);
		return err_set(ENOMEM, "out of memory");
	}
	if ((rc = check_opts(path, &w->opts)) < 0)
		goto fail;
	w->psize = w->opts.chunk_size;
	w->pbuf = malloc(w->psize);
	w->cbuf = malloc(w->psize + crypto_secretstream_xchacha20poly1305_ABYTES);
	w->sec = sealed__secure_alloc(sizeof(*w->sec));
	if (!w->pbuf || !w->cbuf || !w->sec) {
		rc = err_set(ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = setup_pipeline(w)) < 0)
		goto fail;

	uint8_t *h = w->hdr;
	memcpy(h, SEALED_MAGIC, 8);
	sealed__put32(h + SEALED_OFF_VERSION, sealed__write_version ? sealed__write_version : SEALED_FORMAT_VERSION);
	sealed__put32(h + SEALED_OFF_FLAGS, SEALED_FLAG_ZSTD);
	sealed__put32(h + SEALED_OFF_CHUNK, w->opts.chunk_size);
	if (key->kind == SEALED_KEY_PASS) {
		sealed__put32(h + SEALED_OFF_KDF, SEALED_KDF_ARGON2ID);
		sealed__put64(h + SEALED_OFF_OPSLIMIT, w->opts.kdf_opslimit);
		sealed__put64(h + SEALED_OFF_MEMLIMIT, w->opts.kdf_memlimit);
		randombytes_buf(h + SEALED_OFF_SALT, SEALED_SALT_BYTES);
	}
	if ((rc = sealed__derive(key, h, w->sec->key)) < 0)
		goto fail;
	crypto_secretstream_xchacha20poly1305_init_push(&w->sec->st, h + SEALED_OFF_SSHDR, w->sec->key);
	sodium_memzero(w->sec->key, sizeof(w->sec->key));

	if ((rc = open_temp(w)) < 0 || (rc = write_all(w, h, SEALED_HDR_SIZE)) < 0)
		goto fail;
	*out = w;
	return 0;
fail:
	writer_free(w);
	return rc;
}
#endif
