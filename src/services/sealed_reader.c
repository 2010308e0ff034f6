/* Sealed-file reader: header checks, key derivation, chunk authentication,
 * decompression and the record parser. Every failure is one line naming the
 * file and the file offset of the chunk being processed; after a failure the
 * reader refuses further calls. See docs/suspend-format.md. */
#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include <zstd.h>
#include <vmsvc/err.h>
#include "services/sealed_internal.h"

#define TAG_MESSAGE crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#define TAG_FINAL crypto_secretstream_xchacha20poly1305_TAG_FINAL
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

#define SINK_SIZE (64u << 10)
#define POPULATE_QUEUE 64

/* Page population ahead of the decompressor (opts.populate): the first write to
 * a page of fresh shared memory costs a fault that allocates and clears it, as
 * much CPU as decompressing the page. A helper thread takes that cost on the
 * second core with MADV_POPULATE_WRITE on each DATA run as soon as its frame
 * header is parsed; the decompressor then writes into mapped pages. Best effort:
 * a full queue or an old kernel (EINVAL) only loses the speed-up. */
struct populate {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct { uint8_t *p; size_t n; } q[POPULATE_QUEUE];
	unsigned head, tail;
	bool stop, broken;
};

static void *populate_main(void *arg)
{
	struct populate *pp = arg;
	pthread_mutex_lock(&pp->mu);
	for (;;) {
		while (pp->head == pp->tail && !pp->stop)
			pthread_cond_wait(&pp->cv, &pp->mu);
		if (pp->stop)
			break;
		uint8_t *p = pp->q[pp->tail % POPULATE_QUEUE].p;
		size_t n = pp->q[pp->tail % POPULATE_QUEUE].n;
		pp->tail++;
		pthread_mutex_unlock(&pp->mu);
		bool bad = madvise(p, n, MADV_POPULATE_WRITE) != 0 && (errno == EINVAL || errno == ENOSYS);
		pthread_mutex_lock(&pp->mu);
		if (bad)
			pp->broken = true;
	}
	pthread_mutex_unlock(&pp->mu);
	return NULL;
}

static void populate_post(struct populate *pp, uint8_t *p, size_t n)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = ((uintptr_t)p + n + 4095) & ~(uintptr_t)4095;
	pthread_mutex_lock(&pp->mu);
	if (!pp->broken && pp->head - pp->tail < POPULATE_QUEUE) {
		pp->q[pp->head % POPULATE_QUEUE].p = (uint8_t *)a;
		pp->q[pp->head % POPULATE_QUEUE].n = e - a;
		pp->head++;
		pthread_cond_signal(&pp->cv);
	}
	pthread_mutex_unlock(&pp->mu);
}

static void populate_stop(struct populate *pp)
{
	pthread_mutex_lock(&pp->mu);
	pp->stop = true;
	pthread_cond_signal(&pp->cv);
	pthread_mutex_unlock(&pp->mu);
	pthread_join(pp->th, NULL);
	pthread_mutex_destroy(&pp->mu);
	pthread_cond_destroy(&pp->cv);
	free(pp);
}

static struct populate *populate_start(void)
{
	struct populate *pp = calloc(1, sizeof(*pp));
	if (!pp)
		return NULL;
	pthread_mutex_init(&pp->mu, NULL);
	pthread_cond_init(&pp->cv, NULL);
	if (pthread_create(&pp->th, NULL, populate_main, pp) != 0) {
		pthread_mutex_destroy(&pp->mu);
		pthread_cond_destroy(&pp->cv);
		free(pp);
		return NULL;
	}
	return pp;
}

enum source { SRC_FILE, SRC_MEM_ZSTD, SRC_MEM_RAW };

struct reader_secret {
	crypto_secretstream_xchacha20poly1305_state st;
	uint8_t key[SEALED_KEY_BYTES];
};

struct sealed_reader {
	char *name;
	enum source src;
	int fd;
	struct reader_secret *sec;
	uint8_t hdr[SEALED_HDR_SIZE];
	size_t chunk_size;
	uint8_t *cbuf, *pbuf;
	uint8_t *sink; /* discard target for sealed_verify; contents never read */
	uint64_t file_size;
	uint64_t chunk_off, next_off; /* file offsets of the current and the next chunk */
	uint64_t nchunks;
	bool final_seen, mem_given;
	const uint8_t *mem;
	size_t mem_len;
	ZSTD_inBuffer in; /* compressed bytes of the current chunk not yet decompressed */
	ZSTD_DCtx *dz;
	size_t zret; /* last ZSTD_decompressStream result: 0 = the frame is complete */
	uint32_t version; /* 1: one zstd frame; 2: any number of frames, back to back */
	/* Record state. */
	bool in_record, done;
	uint32_t rec_type;
	uint64_t rec_len, nrecords;
	int failed;
	char msg[256]; /* the first failure's message, repeated by later calls */
	struct populate *populate; /* opts.populate: helper thread, started on first use */
	struct readahead *ra;      /* chunk read-ahead thread (files), started at the second chunk */
	bool no_readahead;         /* sealed__no_readahead at open (tests) */
	struct sealed_opts opts;
};

/* Record the first failure; later calls get the same errno back. */
static int fail(struct sealed_reader *r, int rc)
{
	if (!r->failed) {
		r->failed = rc;
		snprintf(r->msg, sizeof(r->msg), "%s", err_msg());
	}
	return rc;
}

static unsigned long long off(const struct sealed_reader *r)
{
	return (unsigned long long)r->chunk_off;
}

static int bad(struct sealed_reader *r, const char *what)
{
	return fail(r, err_set(EBADMSG, "%s: %s at offset %llu", r->name, what, off(r)));
}

/* Read up to n bytes at fd's position; *got < n only at end of file. Touches no
 * reader state (the read-ahead thread uses it). */
static int read_raw(int fd, const char *name, uint8_t *buf, size_t n, size_t *got)
{
	*got = 0;
	while (*got < n) {
		ssize_t k = read(fd, buf + *got, n - *got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_set(errno, "%s: read: %s", name, strerror(errno));
		if (k == 0)
			break;
		*got += (size_t)k;
	}
	return 0;
}

static int read_full(struct sealed_reader *r, uint8_t *buf, size_t n, size_t *got)
{
	int rc = read_raw(r->fd, r->name, buf, n, got);
	return rc < 0 ? fail(r, rc) : 0;
}

/* Where the chunk stream stands: owned by whoever reads chunks (the caller's
 * thread, or the read-ahead thread once it runs). */
struct chunk_io {
	uint64_t chunk_off, next_off, nchunks;
	size_t plen;
	bool final;
};

/* Read, authenticate and decrypt the chunk at io->next_off into pbuf. Uses
 * r->fd, r->cbuf and the stream state, read-only r fields otherwise; errors are
 * err_set() on the calling thread and returned. */
static int read_chunk(struct sealed_reader *r, struct chunk_io *io, uint8_t *pbuf)
{
	size_t want = r->chunk_size + ABYTES, got;
	io->chunk_off = io->next_off;
	unsigned long long at = (unsigned long long)io->chunk_off;
	int rc = read_raw(r->fd, r->name, r->cbuf, want, &got);
	if (rc < 0)
		return rc;
	if (got < ABYTES)
		return err_set(EBADMSG, "%s: truncated (the final chunk is missing) at offset %llu", r->name, at);
	unsigned long long plen;
	unsigned char tag;
	const uint8_t *ad = io->nchunks == 0 ? r->hdr : NULL;
	if (crypto_secretstream_xchacha20poly1305_pull(&r->sec->st, pbuf, &plen, &tag, r->cbuf, got, ad,
						       ad ? SEALED_HDR_SIZE : 0) != 0)
		return err_set(EBADMSG,
			       "%s: wrong key or passphrase, or the file was modified "
			       "(authentication failed at offset %llu)",
			       r->name, at);
	io->nchunks++;
	io->next_off += got;
	io->plen = (size_t)plen;
	if (tag == TAG_FINAL) {
		uint8_t extra;
		size_t n;
		if ((rc = read_raw(r->fd, r->name, &extra, 1, &n)) < 0)
			return rc;
		if (n)
			return err_set(EBADMSG, "%s: %llu bytes of trailing data after the final chunk at offset %llu",
				       r->name, (unsigned long long)(r->file_size - io->next_off), at);
		io->final = true;
	} else if (tag != TAG_MESSAGE) {
		return err_set(EBADMSG, "%s: unexpected chunk tag at offset %llu", r->name, at);
	} else if (got < want) {
		return err_set(EBADMSG, "%s: truncated (the final chunk is missing) at offset %llu", r->name, at);
	}
	return 0;
}

/* Read-ahead: after the first chunk (read on the caller's thread, so a wrong key
 * fails in sealed_open), a thread reads, authenticates and decrypts the next
 * chunks into a ring of buffers while the caller decompresses: the two halves
 * of reading run on two cores. The caller takes chunks in order; an error is
 * delivered in order too, at the chunk where it happened, with its message. */
#define RA_SLOTS 4
struct ra_slot {
	uint8_t *pbuf;
	struct chunk_io io;
	int rc;
	char msg[256];
};
struct readahead {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ra_slot slot[RA_SLOTS];
	uint64_t head;   /* slots produced */
	uint64_t tail;   /* slots the consumer gave back */
	uint64_t taken;  /* slots handed to the consumer */
	bool stop;
	struct chunk_io io;
	struct sealed_reader *r;
	size_t chunk_size;
};

static void *ra_main(void *arg)
{
	struct readahead *ra = arg;
	pthread_mutex_lock(&ra->mu);
	for (;;) {
		while (!ra->stop && ra->head - ra->tail >= RA_SLOTS)
			pthread_cond_wait(&ra->cv, &ra->mu);
		if (ra->stop)
			break;
		struct ra_slot *sl = &ra->slot[ra->head % RA_SLOTS];
		pthread_mutex_unlock(&ra->mu);
		sl->rc = read_chunk(ra->r, &ra->io, sl->pbuf);
		sl->io = ra->io;
		if (sl->rc < 0)
			snprintf(sl->msg, sizeof(sl->msg), "%s", err_msg());
		pthread_mutex_lock(&ra->mu);
		ra->head++;
		pthread_cond_broadcast(&ra->cv);
		if (sl->rc < 0 || sl->io.final)
			break;   /* nothing follows an error or the final chunk */
	}
	pthread_mutex_unlock(&ra->mu);
	return NULL;
}

static void ra_free(struct readahead *ra)
{
	for (unsigned i = 0; i < RA_SLOTS; i++) {
		if (ra->slot[i].pbuf)
			sodium_memzero(ra->slot[i].pbuf, ra->chunk_size);
		free(ra->slot[i].pbuf);
	}
	pthread_mutex_destroy(&ra->mu);
	pthread_cond_destroy(&ra->cv);
	free(ra);
}

static void ra_stop(struct readahead *ra)
{
	pthread_mutex_lock(&ra->mu);
	ra->stop = true;
	pthread_cond_broadcast(&ra->cv);
	pthread_mutex_unlock(&ra->mu);
	pthread_join(ra->th, NULL);
	ra_free(ra);
}

/* NULL when it cannot start: the caller then reads synchronously. */
static struct readahead *ra_start(struct sealed_reader *r, const struct chunk_io *io)
{
	struct readahead *ra = calloc(1, sizeof(*ra));
	if (!ra)
		return NULL;
	pthread_mutex_init(&ra->mu, NULL);
	pthread_cond_init(&ra->cv, NULL);
	ra->r = r;
	ra->io = *io;
	ra->chunk_size = r->chunk_size;
	for (unsigned i = 0; i < RA_SLOTS; i++)
		if (!(ra->slot[i].pbuf = malloc(r->chunk_size))) {
			ra_free(ra);
			return NULL;
		}
	if (pthread_create(&ra->th, NULL, ra_main, ra) != 0) {
		ra_free(ra);
		return NULL;
	}
	return ra;
}

/* The next chunk in order; the previous one's buffer goes back to the thread. */
static int ra_take(struct readahead *ra, struct chunk_io *io, uint8_t **pbuf)
{
	pthread_mutex_lock(&ra->mu);
	ra->tail = ra->taken;
	pthread_cond_broadcast(&ra->cv);
	while (ra->head == ra->taken)
		pthread_cond_wait(&ra->cv, &ra->mu);
	struct ra_slot *sl = &ra->slot[ra->taken % RA_SLOTS];
	ra->taken++;
	pthread_mutex_unlock(&ra->mu);
	*io = sl->io;
	*pbuf = sl->pbuf;
	if (sl->rc < 0)
		return err_set(-sl->rc, "%s", sl->msg);
	return 0;
}

/* Read, authenticate and decrypt the next chunk into r->in. */
static int next_chunk(struct sealed_reader *r)
{
	struct chunk_io io = { .next_off = r->next_off, .nchunks = r->nchunks };
	uint8_t *pbuf = r->pbuf;
	if (!r->ra && r->nchunks > 0 && !r->no_readahead)
		r->ra = ra_start(r, &io);   /* from here on the thread owns fd, cbuf and the stream state */
	int rc = r->ra ? ra_take(r->ra, &io, &pbuf) : read_chunk(r, &io, r->pbuf);
	r->chunk_off = io.chunk_off;
	if (rc < 0)
		return fail(r, rc);
	r->nchunks = io.nchunks;
	r->next_off = io.next_off;
	r->final_seen = io.final;
	r->in = (ZSTD_inBuffer){pbuf, io.plen, 0};
	if (r->opts.progress)
		r->opts.progress(r->next_off, r->file_size, r->opts.progress_arg);
	return 0;
}

/* Make more compressed input available: 1 = some (possibly empty chunk), 0 = none left. */
static int more_input(struct sealed_reader *r)
{
	if (r->src != SRC_FILE) {
		if (r->mem_given)
			return 0;
		r->mem_given = true;
		r->in = (ZSTD_inBuffer){r->mem, r->mem_len, 0};
		return 1;
	}
	if (r->final_seen)
		return 0;
	int rc = next_chunk(r);
	return rc < 0 ? rc : 1;
}

/* Exactly n plaintext bytes into dst; running out is an error (the writer always
 * closes a stream with an END frame). */
static int plain_read(struct sealed_reader *r, uint8_t *dst, size_t n)
{
	ZSTD_outBuffer out = {dst, n, 0};
	while (out.pos < out.size) {
		if (r->src == SRC_MEM_RAW) {
			size_t k = r->in.size - r->in.pos;
			if (k > out.size - out.pos)
				k = out.size - out.pos;
			if (k)
				memcpy(dst + out.pos, (const uint8_t *)r->in.src + r->in.pos, k);
			out.pos += k;
			r->in.pos += k;
		} else {
			size_t in0 = r->in.pos, out0 = out.pos;
			size_t zr = r->zret = ZSTD_decompressStream(r->dz, &out, &r->in);
			if (ZSTD_isError(zr)) {
				char what[96];
				snprintf(what, sizeof(what), "bad compressed data (%s)", ZSTD_getErrorName(zr));
				return bad(r, what);
			}
			/* A frame ended; version 2 streams go on with the next one. */
			if (zr == 0 && out.pos < out.size && r->version < 2)
				return bad(r, "compressed stream ends before the end of the records");
			if (r->in.pos != in0 || out.pos != out0)
				continue;
		}
		if (out.pos == out.size)
			break;
		if (r->in.pos < r->in.size)
			return bad(r, "decompressor made no progress");
		int rc = more_input(r);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return bad(r, "stream ends before the end of the records");
	}
	return 0;
}

/* After the END frame: nothing may follow, the zstd frame must be complete and
 * (for files) the final chunk must have been read with the file ending there. */
static int check_end(struct sealed_reader *r)
{
	if (r->src != SRC_MEM_RAW && r->zret != 0) {
		for (;;) {
			uint8_t extra;
			ZSTD_outBuffer out = {&extra, 1, 0};
			size_t in0 = r->in.pos;
			size_t zr = ZSTD_decompressStream(r->dz, &out, &r->in);
			if (ZSTD_isError(zr))
				return bad(r, "bad compressed data after the end marker");
			if (out.pos)
				return bad(r, "data after the end marker");
			if (zr == 0)
				break;
			if (r->in.pos != in0)
				continue;
			if (r->in.pos < r->in.size)
				return bad(r, "decompressor made no progress");
			int rc = more_input(r);
			if (rc < 0)
				return rc;
			if (rc == 0)
				return bad(r, "compressed stream is truncated");
		}
	}
	for (;;) {
		if (r->in.pos < r->in.size)
			return bad(r, "trailing data after the end marker");
		int rc = more_input(r);
		if (rc <= 0)
			return rc;
	}
}

static int read_frame(struct sealed_reader *r, uint32_t *kind, uint32_t *type, uint64_t *len)
{
	uint8_t f[SEALED_FRAME_SIZE];
	int rc = plain_read(r, f, sizeof(f));
	if (rc < 0)
		return rc;
	*kind = sealed__get32(f);
	*type = sealed__get32(f + 4);
	*len = sealed__get64(f + 8);
	return 0;
}

int sealed_next(struct sealed_reader *r, uint32_t *type, uint64_t *len)
{
	if (r->failed)
		return err_set(-r->failed, "%s", r->msg);
	if (r->in_record)
		return err_set(EINVAL, "%s: sealed_next before the previous record's body was read", r->name);
	if (r->done)
		return 0;
	uint32_t kind, t;
	uint64_t n;
	int rc = read_frame(r, &kind, &t, &n);
	if (rc < 0)
		return rc;
	if (kind == SEALED_FR_BEGIN) {
		r->in_record = true;
		r->rec_type = t;
		r->rec_len = n;
		*type = t;
		*len = n;
		return 1;
	}
	if (kind != SEALED_FR_END || t != 0)
		return bad(r, "bad record frame");
	if (n != r->nrecords)
		return bad(r, "record count mismatch at the end marker");
	if ((rc = check_end(r)) < 0)
		return rc;
	r->done = true;
	return 0;
}

/* Body of the current record into buf (NULL: authenticate and discard). */
static int read_body(struct sealed_reader *r, uint8_t *buf, uint64_t len)
{
	if (r->failed)
		return err_set(-r->failed, "%s", r->msg);
	if (!r->in_record || len != r->rec_len)
		return err_set(EINVAL, "%s: record body read of %llu bytes does not match the record (%llu)",
			       r->name, (unsigned long long)len, (unsigned long long)r->rec_len);
	uint64_t pos = 0;
	while (pos < len) {
		uint32_t kind, t;
		uint64_t n;
		int rc = read_frame(r, &kind, &t, &n);
		if (rc < 0)
			return rc;
		if ((kind != SEALED_FR_DATA && kind != SEALED_FR_ZERO) || t != 0)
			return bad(r, "bad frame inside a record");
		if (n > len - pos)
			return bad(r, "frame runs past the end of its record");
		if (kind == SEALED_FR_ZERO) {
			if (buf && !r->opts.buf_prezeroed)
				memset(buf + pos, 0, (size_t)n);
		} else if (buf) {
			if (r->opts.populate && n >= 2 * SEALED_PAGE) {
				if (!r->populate)
					r->populate = populate_start();
				if (r->populate)
					populate_post(r->populate, buf + pos, (size_t)n);
			}
			if ((rc = plain_read(r, buf + pos, (size_t)n)) < 0)
				return rc;
		} else {
			if (!r->sink && !(r->sink = malloc(SINK_SIZE)))
				return fail(r, err_set(ENOMEM, "out of memory"));
			for (uint64_t k = 0; k < n;) {
				size_t piece = n - k < SINK_SIZE ? (size_t)(n - k) : SINK_SIZE;
				if ((rc = plain_read(r, r->sink, piece)) < 0)
					return rc;
				k += piece;
			}
		}
		pos += n;
	}
	r->in_record = false;
	r->nrecords++;
	return 0;
}

int sealed_read_body(struct sealed_reader *r, void *buf, uint64_t len)
{
	if (len && !buf)
		return err_set(EINVAL, "%s: no buffer for a %llu-byte record", r->name, (unsigned long long)len);
	return read_body(r, buf, len);
}

int sealed_read(struct sealed_reader *r, uint32_t *type, void *buf, uint64_t cap, uint64_t *len)
{
	int rc = sealed_next(r, type, len);
	if (rc <= 0)
		return rc;
	if (*len > cap) {
		char what[96];
		snprintf(what, sizeof(what), "record of %llu bytes exceeds the limit of %llu",
			 (unsigned long long)*len, (unsigned long long)cap);
		return bad(r, what);
	}
	rc = sealed_read_body(r, buf, *len);
	return rc < 0 ? rc : 1;
}

int sealed__no_readahead;

static void reader_free(struct sealed_reader *r)
{
	if (r->ra)
		ra_stop(r->ra);   /* before closing the fd and freeing what it uses */
	if (r->populate)
		populate_stop(r->populate);
	if (r->fd >= 0)
		close(r->fd);
	if (r->sec)
		sodium_free(r->sec);
	ZSTD_freeDCtx(r->dz);
	if (r->pbuf)
		sodium_memzero(r->pbuf, r->chunk_size);
	free(r->pbuf);
	free(r->cbuf);
	free(r->sink);
	free(r->name);
	free(r);
}

int sealed_close(struct sealed_reader *r)
{
	if (!r)
		return 0;
	int rc = 0;
	if (r->failed)
		rc = err_set(-r->failed, "%s", r->msg);
	else if (!r->done)
		rc = err_set(EBADMSG, "%s: closed before the end of the file was verified", r->name);
	reader_free(r);
	return rc;
}

/* ---- Opening ---- */

static struct sealed_reader *reader_new(const char *name, const struct sealed_opts *opts)
{
	struct sealed_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->fd = -1;
	if (opts)
		r->opts = *opts;
	if (!(r->name = strdup(name)) || !(r->dz = ZSTD_createDCtx()) ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(r->dz, ZSTD_d_windowLogMax, SEALED_ZSTD_WINDOWLOG_MAX))) {
		reader_free(r);
		return NULL;
	}
	return r;
}

/* Header fields, checked before any allocation or key derivation they size. */
static int check_header(struct sealed_reader *r, const struct sealed_key *key)
{
	const uint8_t *h = r->hdr;
	const char *n = r->name;
	if (memcmp(h, SEALED_MAGIC, 8) != 0)
		return err_set(EINVAL, "%s: not a vmsvc suspend file (bad magic)", n);
	uint32_t version = sealed__get32(h + SEALED_OFF_VERSION);
	if (version > SEALED_FORMAT_VERSION)
		return err_set(ENOTSUP, "%s: format version %u is newer than this vmsvc supports (%u)", n,
			       version, SEALED_FORMAT_VERSION);
	if (version < SEALED_FORMAT_VERSION_MIN)
		return err_set(ENOTSUP, "%s: unsupported format version %u", n, version);
	r->version = version;
	if (sealed__get32(h + SEALED_OFF_FLAGS) != SEALED_FLAG_ZSTD)
		return err_set(EINVAL, "%s: unknown flags 0x%x in the header", n, sealed__get32(h + SEALED_OFF_FLAGS));
	uint32_t chunk = sealed__get32(h + SEALED_OFF_CHUNK);
	if (chunk < SEALED_CHUNK_MIN || chunk > SEALED_CHUNK_MAX)
		return err_set(EINVAL, "%s: chunk size %u out of range", n, chunk);
	r->chunk_size = chunk;
	uint32_t kdf = sealed__get32(h + SEALED_OFF_KDF);
	uint64_t ops = sealed__get64(h + SEALED_OFF_OPSLIMIT), mem = sealed__get64(h + SEALED_OFF_MEMLIMIT);
	static const uint8_t zero_salt[SEALED_SALT_BYTES];
	if (kdf == SEALED_KDF_RAW) {
		if (ops || mem || memcmp(h + SEALED_OFF_SALT, zero_salt, SEALED_SALT_BYTES))
			return err_set(EINVAL, "%s: raw-key file with KDF parameters in the header", n);
		if (key->kind != SEALED_KEY_RAW)
			return err_set(EINVAL, "%s: sealed with a raw key file, not a passphrase (use --key-file)", n);
	} else if (kdf == SEALED_KDF_ARGON2ID) {
		/* Bounds first: an absurd memlimit would make us allocate on a stranger's say-so. */
		if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > SEALED_OPS_MAX || mem < crypto_pwhash_MEMLIMIT_MIN ||
		    mem > SEALED_MEM_MAX)
			return err_set(EINVAL, "%s: Argon2id parameters out of bounds (ops %llu, mem %llu bytes)", n,
				       (unsigned long long)ops, (unsigned long long)mem);
		if (key->kind != SEALED_KEY_PASS)
			return err_set(EINVAL, "%s: sealed with a passphrase, not a key file (use --passphrase-file)", n);
	} else {
		return err_set(EINVAL, "%s: unknown key derivation %u", n, kdf);
	}
	return 0;
}

int sealed_open_fd(int fd, const char *name, const struct sealed_key *key, const struct sealed_opts *opts,
		   struct sealed_reader **out)
{
	int rc = sealed__sodium_ready();
	if (rc < 0)
		return rc;
	struct sealed_reader *r = reader_new(name, opts);
	if (!r)
		return err_set(ENOMEM, "out of memory");
	r->src = SRC_FILE;
	r->no_readahead = sealed__no_readahead != 0;
	struct stat st;
	if ((r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 || fstat(r->fd, &st) < 0) {
		rc = err_set(errno, "%s: %s", name, strerror(errno));
		goto fail;
	}
	r->file_size = (uint64_t)st.st_size;
	size_t got;
	if ((rc = read_full(r, r->hdr, SEALED_HDR_SIZE, &got)) < 0)
		goto fail;
	if (got < SEALED_HDR_SIZE) {
		rc = err_set(EINVAL, "%s: not a vmsvc suspend file (too short)", name);
		goto fail;
	}
	if ((rc = check_header(r, key)) < 0)
		goto fail;
	r->pbuf = malloc(r->chunk_size);
	r->cbuf = malloc(r->chunk_size + ABYTES);
	r->sec = sealed__secure_alloc(sizeof(*r->sec));
	if (!r->pbuf || !r->cbuf || !r->sec) {
		rc = err_set(ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = sealed__derive(key, r->hdr, r->sec->key)) < 0)
		goto fail;
	rc = crypto_secretstream_xchacha20poly1305_init_pull(&r->sec->st, r->hdr + SEALED_OFF_SSHDR, r->sec->key);
	sodium_memzero(r->sec->key, sizeof(r->sec->key));
	if (rc != 0) {
		rc = err_set(EBADMSG, "%s: bad stream header", name);
		goto fail;
	}
	r->next_off = SEALED_HDR_SIZE;
	/* The first chunk carries the header as additional data: a wrong key or an
	 * edited header fails here, before the caller sees any record. */
	if ((rc = next_chunk(r)) < 0)
		goto fail;
	*out = r;
	return 0;
fail:
	reader_free(r);
	return rc;
}

int sealed_open(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		struct sealed_reader **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", path, strerror(errno));
	int rc = sealed_open_fd(fd, path, key, opts, out);
	close(fd);
	return rc;
}

int sealed_verify(const char *path, const struct sealed_key *key, const struct sealed_opts *opts)
{
	struct sealed_reader *r;
	int rc = sealed_open(path, key, opts, &r);
	if (rc < 0)
		return rc;
	uint32_t type;
	uint64_t len;
	while ((rc = sealed_next(r, &type, &len)) == 1) {
		if ((rc = read_body(r, NULL, len)) < 0)
			break;
	}
	if (rc < 0) {
		reader_free(r);
		return rc;
	}
	return sealed_close(r);
}

int sealed__reader_from_plain(const void *data, size_t len, int compressed, struct sealed_reader **out)
{
	struct sealed_reader *r = reader_new("(plaintext)", NULL);
	if (!r)
		return err_set(ENOMEM, "out of memory");
	r->src = compressed ? SRC_MEM_ZSTD : SRC_MEM_RAW;
	r->version = SEALED_FORMAT_VERSION;
	r->mem = data;
	r->mem_len = len;
	*out = r;
	return 0;
}
#endif
