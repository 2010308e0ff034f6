/* Block backend front end: opening raw files/block devices, the request pool,
 * completion delivery, and the raw (no overlay) request paths. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "blk_internal.h"

uint64_t blk_hash(uint64_t h, const void *p, size_t n)
{
	const uint8_t *s = p;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

enum blk_status_class blk_status_class(int status)
{
	if (status == 0)
		return BLK_S_OK;
	if (status == -EOPNOTSUPP)
		return BLK_S_UNSUPP;
	return BLK_S_IOERR;
}

/* ---- engine completion glue ---- */

void eio_start(struct blk *b, struct eio *io)
{
	io->done_bytes = 0;
	io->iov_own = NULL;
	if (io->op == EIO_READV || io->op == EIO_WRITEV) {
		uint64_t len = 0;
		for (unsigned i = 0; i < io->iovcnt; i++)
			len += io->iov[i].iov_len;
		io->len = len;
	}
	eng_queue(&b->eng, io);
}

/* Continue a short read/write with the remainder (a private iovec copy: the
 * owner's array is left alone). Rare on regular files, so malloc is fine here. */
static int eio_resubmit_rest(struct blk *b, struct eio *io, uint64_t got)
{
	unsigned i = 0;
	while (i < io->iovcnt && got >= io->iov[i].iov_len)
		got -= io->iov[i++].iov_len;
	unsigned n = io->iovcnt - i;
	struct iovec *rest = malloc(sizeof(*rest) * (n ? n : 1));
	if (!rest)
		return -ENOMEM;
	memcpy(rest, io->iov + i, sizeof(*rest) * n);
	if (n) {
		rest[0].iov_base = (char *)rest[0].iov_base + got;
		rest[0].iov_len -= got;
	}
	free(io->iov_own);
	io->iov_own = rest;
	io->iov = rest;
	io->iovcnt = n;
	eng_queue(&b->eng, io);
	return 0;
}

void eio_complete(struct blk *b, struct eio *io)
{
	int res = io->res;
	if ((io->op == EIO_READV || io->op == EIO_WRITEV) && res >= 0) {
		uint64_t got = (uint64_t)res;
		io->done_bytes += got;
		if (io->done_bytes < io->len) {
			if (got == 0) {
				if (io->op == EIO_READV && io->eof_zero) {
					for (unsigned i = 0; i < io->iovcnt; i++)
						memset(io->iov[i].iov_base, 0, io->iov[i].iov_len);
					io->done_bytes = io->len;
				} else {
					res = -EIO;
				}
			} else {
				io->off += got;
				if (eio_resubmit_rest(b, io, got) == 0)
					return;
				res = -ENOMEM;
			}
		}
		if (res >= 0)
			res = 0;
	} else if (res > 0) {
		res = 0;
	}
	free(io->iov_own);
	io->iov_own = NULL;
	io->done(b, io, res);
}

/* ---- request pool ---- */

static struct blk_req *req_alloc(struct blk *b)
{
	struct blk_req *r = b->free_reqs;
	if (!r)
		return NULL;
	b->free_reqs = r->next;
	b->inflight++;
	r->next = NULL;
	r->status = 0;
	r->pending = 0;
	return r;
}

void blk_req_finish(struct blk *b, struct blk_req *r, int status)
{
	r->status = status;
	r->next = NULL;
	*b->finished_tail = r;
	b->finished_tail = &r->next;
	if (!b->in_process) {
		uint64_t one = 1;
		if (write(b->efd, &one, sizeof(one)) < 0)
			log_warn("blk: eventfd write: %s", strerror(errno));
	}
}

/* ---- raw paths ---- */

static void raw_done(struct blk *b, struct eio *io, int res)
{
	blk_req_finish(b, io->ctx, res);
}

static void raw_start(struct blk *b, struct blk_req *r, uint8_t op)
{
	struct eio *io = &r->io;
	io->op = op;
	io->fd = b->fd;
	io->off = r->off;
	io->eof_zero = false;
	io->iov = (struct iovec *)r->iov;   /* engines only read it */
	io->iovcnt = r->iovcnt;
	io->done = raw_done;
	io->ctx = r;
	eio_start(b, io);
}

static void raw_discard_done(struct blk *b, struct eio *io, int res)
{
	if (res == -EOPNOTSUPP || res == -ENOTTY) {
		if (b->can_discard)
			log_info("blk: %s: discard unsupported by the host; disabled", b->path);
		b->can_discard = false;
		res = -EOPNOTSUPP;
	}
	blk_req_finish(b, io->ctx, res);
}

/* Write-zeroes fallback: write the range from the shared zero buffer, 1 MiB at a time. */
static void raw_wz_chunk(struct blk *b, struct blk_req *r);

static void raw_wz_chunk_done(struct blk *b, struct eio *io, int res)
{
	struct blk_req *r = io->ctx;
	uint64_t n = r->one_iov.iov_len;
	if (res < 0 || r->len == n) {
		blk_req_finish(b, r, res);
		return;
	}
	r->off += n;
	r->len -= n;
	raw_wz_chunk(b, r);
}

static void raw_wz_chunk(struct blk *b, struct blk_req *r)
{
	r->one_iov.iov_base = b->zero_buf;
	r->one_iov.iov_len = r->len < BLK_ZERO_BUF ? r->len : BLK_ZERO_BUF;
	struct eio *io = &r->io;
	io->op = EIO_WRITEV;
	io->fd = b->fd;
	io->off = r->off;
	io->iov = &r->one_iov;
	io->iovcnt = 1;
	io->done = raw_wz_chunk_done;
	io->ctx = r;
	eio_start(b, io);
}

static void raw_wz_done(struct blk *b, struct eio *io, int res)
{
	struct blk_req *r = io->ctx;
	if (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOTTY) {
		b->wz_fallocate = false;   /* e.g. tmpfs, old block devices: write real zeros from now on */
		raw_wz_chunk(b, r);
		return;
	}
	blk_req_finish(b, r, res);
}

static void raw_fallocate(struct blk *b, struct blk_req *r, int mode, eio_done_fn done)
{
	struct eio *io = &r->io;
	io->op = EIO_FALLOCATE;
	io->fd = b->fd;
	io->mode = mode;
	io->off = r->off;
	io->len = r->len;
	io->done = done;
	io->ctx = r;
	eio_start(b, io);
}

/* ---- request entry points ---- */

static int check_range(const struct blk *b, uint64_t off, uint64_t len)
{
	if ((off | len) % BLK_SECTOR_SIZE || off > b->size || len > b->size - off)
		return -EINVAL;
	if (b->direct && ((off | len) & (b->lbs - 1)))
		return -EINVAL;
	return 0;
}

static int submit_rw(struct blk *b, uint8_t op, uint64_t off, const struct iovec *iov, unsigned iovcnt,
		     blk_done_fn done, void *opaque)
{
	if (!b || !done || (iovcnt && !iov) || iovcnt > BLK_MAX_IOV)
		return err_set(EINVAL, "blk: bad request arguments");
	struct blk_req *r = req_alloc(b);
	if (!r)
		return -EAGAIN;
	r->op = op;
	r->done = done;
	r->opaque = opaque;
	r->off = off;
	r->iov = iov;
	r->iovcnt = iovcnt;
	uint64_t len = 0;
	bool misaligned = false;
	for (unsigned i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		if (len < iov[i].iov_len || len > b->size) {   /* overflow or obviously too long */
			blk_req_finish(b, r, -EINVAL);
			return 0;
		}
		if (b->direct && (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (b->lbs - 1)))
			misaligned = true;
	}
	r->len = len;
	if (op == BLK_OP_WRITE && b->ro)
		blk_req_finish(b, r, -EROFS);
	else if (misaligned || check_range(b, off, len))
		blk_req_finish(b, r, -EINVAL);
	else if (len == 0)
		blk_req_finish(b, r, 0);
	else if (b->ovl)
		op == BLK_OP_READ ? ovl_read(b, r) : ovl_write(b, r);
	else
		raw_start(b, r, op == BLK_OP_READ ? EIO_READV : EIO_WRITEV);
	return 0;
}

int blk_read(struct blk *b, uint64_t offset, const struct iovec *iov, unsigned iovcnt, blk_done_fn done, void *opaque)
{
	return submit_rw(b, BLK_OP_READ, offset, iov, iovcnt, done, opaque);
}

int blk_write(struct blk *b, uint64_t offset, const struct iovec *iov, unsigned iovcnt, blk_done_fn done, void *opaque)
{
	return submit_rw(b, BLK_OP_WRITE, offset, iov, iovcnt, done, opaque);
}

int blk_flush(struct blk *b, blk_done_fn done, void *opaque)
{
	if (!b || !done)
		return err_set(EINVAL, "blk: bad request arguments");
	struct blk_req *r = req_alloc(b);
	if (!r)
		return -EAGAIN;
	r->op = BLK_OP_FLUSH;
	r->done = done;
	r->opaque = opaque;
	r->off = r->len = 0;
	if (b->ro)
		blk_req_finish(b, r, 0);   /* nothing of ours can be dirty */
	else if (b->ovl)
		ovl_flush(b, r);
	else {
		struct eio *io = &r->io;
		io->op = EIO_FDATASYNC;
		io->fd = b->fd;
		io->done = raw_done;
		io->ctx = r;
		eio_start(b, io);
	}
	return 0;
}

static int submit_range(struct blk *b, uint8_t op, uint64_t off, uint64_t len, blk_done_fn done, void *opaque)
{
	if (!b || !done)
		return err_set(EINVAL, "blk: bad request arguments");
	struct blk_req *r = req_alloc(b);
	if (!r)
		return -EAGAIN;
	r->op = op;
	r->done = done;
	r->opaque = opaque;
	r->off = off;
	r->len = len;
	r->iov = NULL;
	r->iovcnt = 0;
	if (b->ro)
		blk_req_finish(b, r, -EROFS);
	else if (check_range(b, off, len))
		blk_req_finish(b, r, -EINVAL);
	else if (op == BLK_OP_DISCARD && !b->can_discard)
		blk_req_finish(b, r, -EOPNOTSUPP);
	else if (len == 0)
		blk_req_finish(b, r, 0);
	else if (b->ovl)
		op == BLK_OP_DISCARD ? ovl_discard(b, r) : ovl_write(b, r);
	else if (op == BLK_OP_DISCARD)
		raw_fallocate(b, r, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, raw_discard_done);
	else if (b->wz_fallocate)
		raw_fallocate(b, r, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, raw_wz_done);
	else
		raw_wz_chunk(b, r);
	return 0;
}

int blk_discard(struct blk *b, uint64_t offset, uint64_t len, blk_done_fn done, void *opaque)
{
	return submit_range(b, BLK_OP_DISCARD, offset, len, done, opaque);
}

int blk_write_zeroes(struct blk *b, uint64_t offset, uint64_t len, blk_done_fn done, void *opaque)
{
	return submit_range(b, BLK_OP_WZ, offset, len, done, opaque);
}

void blk_kick(struct blk *b)
{
	eng_kick(&b->eng);
}

bool blk_completions_ready(struct blk *b)
{
	return b->finished || eng_ready(&b->eng);
}

int blk_completion_fd(const struct blk *b)
{
	return b->efd;
}

unsigned blk_inflight(const struct blk *b)
{
	return b->inflight;
}

int blk_process_completions(struct blk *b)
{
	uint64_t cnt;
	if (read(b->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		log_warn("blk: eventfd read: %s", strerror(errno));
	int ran = 0;
	b->in_process = true;
	/* Bounded passes: with cached data io_uring completes reads inside the submit,
	 * and callbacks that resubmit would otherwise keep us here forever. Anything
	 * left has signalled the eventfd again, so the caller's poll comes back. */
	for (int pass = 0; pass < 2; pass++) {
		struct eio *list = eng_reap(&b->eng);
		bool progress = list || b->finished;
		while (list) {
			struct eio *next = list->next;
			eio_complete(b, list);
			list = next;
		}
		while (b->finished) {
			struct blk_req *r = b->finished;
			b->finished = r->next;
			if (!b->finished)
				b->finished_tail = &b->finished;
			blk_done_fn done = r->done;
			void *opaque = r->opaque;
			int status = r->status;
			uint64_t bytes = status == 0 ? r->len : 0;
			/* Back to the pool before the callback, so it can submit the next request. */
			r->next = b->free_reqs;
			b->free_reqs = r;
			b->inflight--;
			if (!b->closing)
				done(opaque, status, bytes);
			ran++;
		}
		if (!progress)
			break;
		eng_kick(&b->eng);
	}
	eng_kick(&b->eng);
	b->in_process = false;
	return ran;
}

void blk_drain(struct blk *b)
{
	while (b->inflight) {
		eng_kick(&b->eng);
		if (!b->finished) {
			struct pollfd p = { .fd = b->efd, .events = POLLIN };
			poll(&p, 1, 1000);
		}
		blk_process_completions(b);
	}
}

/* ---- open/close/info ---- */

static void derive_serial(struct blk *b, const char *path)
{
	char *real = realpath(path, NULL);
	const char *p = real ? real : path;
	uint64_t h = blk_hash(BLK_HASH_INIT, p, strlen(p));
	free(real);
	snprintf(b->serial, sizeof(b->serial), "vmsvc-%014llx", (unsigned long long)(h & 0xffffffffffffffull));
}

int blk_open(const struct blk_spec *spec, struct blk **out)
{
	*out = NULL;
	if (!spec || !spec->path || !*spec->path)
		return err_set(EINVAL, "blk: no disk path");
	if (spec->serial && strlen(spec->serial) > BLK_SERIAL_MAX)
		return err_set(EINVAL, "%s: serial '%s' longer than %u characters", spec->path, spec->serial, BLK_SERIAL_MAX);
	if (spec->queue_depth > BLK_MAX_QUEUE_DEPTH)
		return err_set(EINVAL, "%s: queue depth %u above %u", spec->path, spec->queue_depth, BLK_MAX_QUEUE_DEPTH);
	bool overlaid = spec->overlay || spec->ephemeral;

	struct blk *b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(ENOMEM, "blk: out of memory");
	b->fd = b->efd = -1;
	b->finished_tail = &b->finished;
	b->ro = spec->read_only;
	b->direct = spec->cache == BLK_CACHE_NONE;
	b->depth = spec->queue_depth ? spec->queue_depth : BLK_DEFAULT_QUEUE_DEPTH;
	b->path = strdup(spec->path);
	int ret;
	if (!b->path) {
		ret = err_set(ENOMEM, "blk: out of memory");
		goto fail;
	}

	int flags = (b->ro || overlaid ? O_RDONLY : O_RDWR) | O_CLOEXEC | (b->direct ? O_DIRECT : 0);
	b->fd = open(spec->path, flags);
	if (b->fd < 0) {
		ret = err_set(errno, "%s: %s", spec->path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if (fstat(b->fd, &st) < 0) {
		ret = err_set(errno, "%s: stat: %s", spec->path, strerror(errno));
		goto fail;
	}
	b->lbs = BLK_SECTOR_SIZE;
	if (S_ISBLK(st.st_mode)) {
		b->is_bdev = true;
		uint64_t sz;
		if (ioctl(b->fd, BLKGETSIZE64, &sz) < 0) {
			ret = err_set(errno, "%s: BLKGETSIZE64: %s", spec->path, strerror(errno));
			goto fail;
		}
		b->file_size = sz;
		int ssz;
		if (b->direct && ioctl(b->fd, BLKSSZGET, &ssz) == 0 && ssz >= 512 && ssz <= 65536 && !(ssz & (ssz - 1)))
			b->lbs = (unsigned)ssz;
	} else if (S_ISREG(st.st_mode)) {
		b->file_size = (uint64_t)st.st_size;
	} else {
		ret = err_set(EINVAL, "%s: not a regular file or block device", spec->path);
		goto fail;
	}
	b->size = b->file_size & ~(uint64_t)(BLK_SECTOR_SIZE - 1);
	if (b->size < BLK_SECTOR_SIZE) {
		ret = err_set(EINVAL, "%s: image smaller than one sector (%llu bytes)", spec->path,
			      (unsigned long long)b->file_size);
		goto fail;
	}
	if (b->direct)
		b->size &= ~(uint64_t)(b->lbs - 1);

	b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (b->efd < 0) {
		ret = err_set(errno, "blk: eventfd: %s", strerror(errno));
		goto fail;
	}
	b->zero_buf = aligned_alloc(4096, BLK_ZERO_BUF);
	b->reqs = calloc(b->depth, sizeof(*b->reqs));
	if (!b->zero_buf || !b->reqs) {
		ret = err_set(ENOMEM, "blk: out of memory");
		goto fail;
	}
	memset(b->zero_buf, 0, BLK_ZERO_BUF);
	for (unsigned i = b->depth; i-- > 0;) {
		b->reqs[i].next = b->free_reqs;
		b->free_reqs = &b->reqs[i];
	}
	ret = eng_init(&b->eng, spec->engine, b->depth, b->efd);
	if (ret < 0) {
		err_prefix(ret, "%s", spec->path);
		goto fail;
	}
	b->eng_ok = true;
	b->eng.sync_writes = !b->direct;
	if (spec->serial)
		snprintf(b->serial, sizeof(b->serial), "%s", spec->serial);
	else
		derive_serial(b, spec->path);
	b->can_discard = b->can_wz = !b->ro;
	b->wz_fallocate = true;
	if (overlaid) {
		ret = ovl_open(b, spec);
		if (ret < 0)
			goto fail;
	}
	*out = b;
	return 0;
fail:
	blk_close(b);
	return ret;
}

void blk_close(struct blk *b)
{
	if (!b)
		return;
	b->closing = true;
	if (b->eng_ok)
		blk_drain(b);
	if (b->ovl)
		ovl_close(b);
	if (b->eng_ok)
		eng_destroy(&b->eng);
	if (b->fd >= 0)
		close(b->fd);
	if (b->efd >= 0)
		close(b->efd);
	free(b->reqs);
	free(b->zero_buf);
	free(b->path);
	free(b);
}

uint64_t blk_size(const struct blk *b) { return b->size; }
uint64_t blk_sectors(const struct blk *b) { return b->size / BLK_SECTOR_SIZE; }
unsigned blk_logical_block_size(const struct blk *b) { return b->lbs; }
bool blk_is_read_only(const struct blk *b) { return b->ro; }
bool blk_can_discard(const struct blk *b) { return b->can_discard; }
bool blk_can_write_zeroes(const struct blk *b) { return b->can_wz; }
const char *blk_serial(const struct blk *b) { return b->serial; }
const char *blk_engine_name(const struct blk *b) { return eng_name(&b->eng); }
