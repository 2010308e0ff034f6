/* Copy-on-write overlay (format: docs/overlay-format.md). The base is opened
 * read-only and never written; writes land in clusters of the overlay file,
 * allocated on first write (copying up the rest of the cluster from the base).
 * The whole cluster table lives in memory (4 bytes per cluster) so lookups are
 * O(1); changed table pages are written back on flush, after an fdatasync of the
 * data they point to, so the on-disk table never references unwritten data. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/falloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "blk_overlay.h"

/* ---- small helpers ---- */

static void mark_dirty(struct ovl *o, uint64_t vcl)
{
	uint64_t pg = vcl / OVL_PAGE_ENTRIES;
	o->dirty[pg / 64] |= 1ull << (pg % 64);
}

static struct ovl_piece *piece_get(struct ovl *o, struct blk_req *r, uint8_t kind)
{
	struct ovl_piece *p = o->free_pieces;
	if (p) {
		o->free_pieces = p->next;
	} else {
		p = calloc(1, sizeof(*p));
		if (!p)
			return NULL;
		p->all_next = o->all_pieces;
		o->all_pieces = p;
	}
	p->req = r;
	p->kind = kind;
	p->stage = 0;
	p->bounce = NULL;
	p->iovcnt = 0;
	p->next = NULL;
	p->io.eof_zero = false;
	p->io.ctx = p;
	if (r)
		r->pending++;
	return p;
}

static void req_put(struct blk *b, struct blk_req *r)
{
	if (--r->pending == 0)
		blk_req_finish(b, r, r->status);
}

static void *bounce_get(struct ovl *o)
{
	void *p = o->bounce_free;
	if (p) {
		o->bounce_free = *(void **)p;
		o->nbounce_free--;
		return p;
	}
	return aligned_alloc(4096, o->csize);
}

static void bounce_put(struct ovl *o, void *p)
{
	if (!p)
		return;
	if (o->nbounce_free >= OVL_BOUNCE_KEEP) {
		free(p);
		return;
	}
	*(void **)p = o->bounce_free;
	o->bounce_free = p;
	o->nbounce_free++;
}

static void piece_end(struct blk *b, struct ovl_piece *p, int res)
{
	struct ovl *o = b->ovl;
	struct blk_req *r = p->req;
	bounce_put(o, p->bounce);
	p->bounce = NULL;
	p->next = o->free_pieces;
	o->free_pieces = p;
	if (r) {
		if (res < 0 && !r->status)
			r->status = res;
		req_put(b, r);
	}
}

/* Cursor over a request's iovec array. */
struct cursor {
	const struct iovec *iov;
	unsigned cnt, i;
	size_t off;
};

static unsigned cursor_entries(const struct cursor *c, uint64_t n)
{
	unsigned k = 0, i = c->i;
	size_t off = c->off;
	while (n && i < c->cnt) {
		size_t take = c->iov[i].iov_len - off;
		if (take > n)
			take = n;
		n -= take;
		k++;
		i++;
		off = 0;
	}
	return k;
}

static int piece_reserve(struct ovl_piece *p, unsigned extra)
{
	if (p->iovcnt + extra <= p->iov_cap)
		return 0;
	unsigned cap = p->iov_cap ? p->iov_cap : 8;
	while (cap < p->iovcnt + extra)
		cap *= 2;
	struct iovec *n = realloc(p->iov, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	p->iov = n;
	p->iov_cap = cap;
	return 0;
}

/* Append the next n bytes of the request's buffers to the piece's slice. */
static int piece_take(struct ovl_piece *p, struct cursor *c, uint64_t n)
{
	if (piece_reserve(p, cursor_entries(c, n)))
		return -ENOMEM;
	while (n && c->i < c->cnt) {
		size_t take = c->iov[c->i].iov_len - c->off;
		if (take > n)
			take = n;
		if (take) {
			p->iov[p->iovcnt].iov_base = (char *)c->iov[c->i].iov_base + c->off;
			p->iov[p->iovcnt++].iov_len = take;
		}
		n -= take;
		c->off += take;
		if (c->off == c->iov[c->i].iov_len) {
			c->i++;
			c->off = 0;
		}
	}
	return 0;
}

/* Source of zeros for write-zeroes: the shared zero buffer, repeated. */
static int piece_take_zeros(struct blk *b, struct ovl_piece *p, uint64_t n)
{
	if (piece_reserve(p, (unsigned)((n + BLK_ZERO_BUF - 1) / BLK_ZERO_BUF)))
		return -ENOMEM;
	while (n) {
		size_t take = n < BLK_ZERO_BUF ? n : BLK_ZERO_BUF;
		p->iov[p->iovcnt].iov_base = b->zero_buf;
		p->iov[p->iovcnt++].iov_len = take;
		n -= take;
	}
	return 0;
}

static void cursor_zero(struct cursor *c, uint64_t n)
{
	while (n && c->i < c->cnt) {
		size_t take = c->iov[c->i].iov_len - c->off;
		if (take > n)
			take = n;
		memset((char *)c->iov[c->i].iov_base + c->off, 0, take);
		n -= take;
		c->off += take;
		if (c->off == c->iov[c->i].iov_len) {
			c->i++;
			c->off = 0;
		}
	}
}

static void piece_io(struct blk *b, struct ovl_piece *p, uint8_t op, int fd, uint64_t off,
		     struct iovec *iov, unsigned iovcnt, eio_done_fn done)
{
	p->io.op = op;
	p->io.fd = fd;
	p->io.off = off;
	p->io.iov = iov;
	p->io.iovcnt = iovcnt;
	p->io.done = done;
	eio_start(b, &p->io);
}

/* ---- reads ---- */

static void read_done(struct blk *b, struct eio *io, int res)
{
	piece_end(b, io->ctx, res);
}

static void dispatch_read(struct blk *b, struct ovl_piece *p, int fd, uint64_t off)
{
	piece_io(b, p, EIO_READV, fd, off, p->iov, p->iovcnt, read_done);
}

void ovl_read(struct blk *b, struct blk_req *r)
{
	struct ovl *o = b->ovl;
	struct cursor c = { r->iov, r->iovcnt, 0, 0 };
	struct ovl_piece *cur = NULL;
	int cur_fd = -1;
	uint64_t cur_off = 0, cur_end = 0, end = r->off + r->len;
	r->pending = 1;   /* held until the split is done */
	for (uint64_t pos = r->off, n; pos < end; pos += n) {
		uint64_t vcl = pos >> o->cbits, co = pos & (o->csize - 1);
		n = end - pos < o->csize - co ? end - pos : o->csize - co;
		uint32_t e = o->table[vcl] & ~OVL_BUSY;   /* mid-allocation: old contents still valid */
		if (e == OVL_E_ZERO) {
			cursor_zero(&c, n);
			continue;
		}
		int fd = e == OVL_E_BASE ? b->fd : o->fd;
		uint64_t foff = e == OVL_E_BASE ? pos : ((uint64_t)e << o->cbits) + co;
		if (cur && cur_fd == fd && cur_end == foff && cur->iovcnt + cursor_entries(&c, n) <= BLK_MAX_IOV) {
			if (piece_take(cur, &c, n) < 0)
				goto nomem;
			cur_end += n;
			continue;
		}
		if (cur)
			dispatch_read(b, cur, cur_fd, cur_off);
		cur = piece_get(o, r, P_READ);
		if (!cur || piece_take(cur, &c, n) < 0)
			goto nomem;
		cur_fd = fd;
		cur_off = foff;
		cur_end = foff + n;
	}
	if (cur)
		dispatch_read(b, cur, cur_fd, cur_off);
	req_put(b, r);
	return;
nomem:
	if (cur)
		piece_end(b, cur, -ENOMEM);
	if (!r->status)
		r->status = -ENOMEM;
	req_put(b, r);
}

/* ---- writes, write-zeroes, discard ---- */

static void write_chunk(struct blk *b, struct ovl_piece *p);

static void wake(struct blk *b, uint64_t vcl)
{
	struct ovl *o = b->ovl;
	struct ovl_piece *ready = NULL, **rt = &ready;
	for (struct ovl_piece **pp = &o->waiters; *pp;) {
		struct ovl_piece *p = *pp;
		if (p->vcl == vcl) {
			*pp = p->next;
			p->next = NULL;
			*rt = p;
			rt = &p->next;
		} else {
			pp = &p->next;
		}
	}
	o->waiters_tail = &o->waiters;
	while (*o->waiters_tail)
		o->waiters_tail = &(*o->waiters_tail)->next;
	while (ready) {
		struct ovl_piece *p = ready;
		ready = p->next;
		p->next = NULL;
		write_chunk(b, p);
	}
}

static void punch_done(struct blk *b, struct eio *io, int res)
{
	piece_end(b, io->ctx, 0);   /* freeing space is best effort; the table already says zero */
}

/* The cluster reads as zeros from now on; its old data cluster (if any) is punched
 * out and never reused in this session (see crash semantics in the format doc). */
static void set_zero(struct blk *b, struct blk_req *r, uint64_t vcl)
{
	struct ovl *o = b->ovl;
	uint32_t e = o->table[vcl];
	if (e == OVL_E_ZERO)
		return;
	o->table[vcl] = OVL_E_ZERO;
	mark_dirty(o, vcl);
	if (e != OVL_E_BASE) {
		struct ovl_piece *p = piece_get(o, r, P_PUNCH);
		if (!p)
			return;
		p->io.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		p->io.len = o->csize;
		piece_io(b, p, EIO_FALLOCATE, o->fd, (uint64_t)e << o->cbits, NULL, 0, punch_done);
	}
}

static void alloc_write_done(struct blk *b, struct eio *io, int res)
{
	struct ovl_piece *p = io->ctx;
	struct ovl *o = b->ovl;
	if (res == 0) {
		o->table[p->vcl] = p->phys;
		mark_dirty(o, p->vcl);
	} else {
		o->table[p->vcl] &= ~OVL_BUSY;   /* the data cluster leaks; the table still holds the old state */
	}
	uint64_t vcl = p->vcl;
	piece_end(b, p, res);
	wake(b, vcl);
}

static void copy_src_into_bounce(struct ovl_piece *p)
{
	char *dst = (char *)p->bounce + p->coff;
	for (unsigned i = 0; i < p->iovcnt; i++) {
		memcpy(dst, p->iov[i].iov_base, p->iov[i].iov_len);
		dst += p->iov[i].iov_len;
	}
}

static void alloc_write_bounce(struct blk *b, struct ovl_piece *p)
{
	struct ovl *o = b->ovl;
	copy_src_into_bounce(p);
	p->biov.iov_base = p->bounce;
	p->biov.iov_len = o->csize;
	p->stage = S_WRITE;
	piece_io(b, p, EIO_WRITEV, o->fd, (uint64_t)p->phys << o->cbits, &p->biov, 1, alloc_write_done);
}

static void copyup_done(struct blk *b, struct eio *io, int res)
{
	struct ovl_piece *p = io->ctx;
	if (res < 0) {
		b->ovl->table[p->vcl] &= ~OVL_BUSY;
		uint64_t vcl = p->vcl;
		piece_end(b, p, res);
		wake(b, vcl);
		return;
	}
	alloc_write_bounce(b, p);
}

/* One chunk inside one cluster; the source slice is already in p->iov. */
static void write_chunk(struct blk *b, struct ovl_piece *p)
{
	struct ovl *o = b->ovl;
	uint32_t e = o->table[p->vcl];
	if (e & OVL_BUSY) {
		/* Another request is allocating this cluster: wait for it (serialises copy-up). */
		*o->waiters_tail = p;
		o->waiters_tail = &p->next;
		p->next = NULL;
		return;
	}
	if (p->kind == P_ZERO_CL) {
		set_zero(b, p->req, p->vcl);
		piece_end(b, p, 0);
		return;
	}
	if (e != OVL_E_BASE && e != OVL_E_ZERO) {
		p->kind = P_INPLACE;
		piece_io(b, p, EIO_WRITEV, o->fd, ((uint64_t)e << o->cbits) + p->coff, p->iov, p->iovcnt, read_done);
		return;
	}
	if (o->next_phys > OVL_MAX_PHYS || ((o->next_phys + 1) << o->cbits) < o->next_phys) {
		piece_end(b, p, -ENOSPC);
		return;
	}
	p->kind = P_ALLOC;
	p->phys = (uint32_t)o->next_phys++;
	o->table[p->vcl] = e | OVL_BUSY;
	if (p->coff == 0 && p->clen == o->csize) {
		p->stage = S_WRITE;
		piece_io(b, p, EIO_WRITEV, o->fd, (uint64_t)p->phys << o->cbits, p->iov, p->iovcnt, alloc_write_done);
		return;
	}
	p->bounce = bounce_get(o);
	if (!p->bounce) {
		o->table[p->vcl] = e;
		piece_end(b, p, -ENOMEM);
		wake(b, p->vcl);
		return;
	}
	uint64_t cstart = p->vcl << o->cbits;
	uint64_t avail = b->file_size > cstart ? b->file_size - cstart : 0;
	if (e == OVL_E_ZERO || avail == 0) {
		memset(p->bounce, 0, o->csize);
		alloc_write_bounce(b, p);
		return;
	}
	/* Copy-up: read the base's cluster (zeros past its end), then merge the new data. */
	uint64_t len = avail < o->csize ? avail : o->csize;
	if (len < o->csize) {
		uint64_t al = (len + b->lbs - 1) & ~(uint64_t)(b->lbs - 1);
		memset((char *)p->bounce + len, 0, o->csize - len);
		len = al;
	}
	p->biov.iov_base = p->bounce;
	p->biov.iov_len = len;
	p->stage = S_COPYUP;
	p->io.eof_zero = true;
	piece_io(b, p, EIO_READV, b->fd, cstart, &p->biov, 1, copyup_done);
}

void ovl_write(struct blk *b, struct blk_req *r)
{
	struct ovl *o = b->ovl;
	bool zeroes = r->op == BLK_OP_WZ;
	struct cursor c = { r->iov, r->iovcnt, 0, 0 };
	struct ovl_piece *cur = NULL;
	uint64_t cur_off = 0, cur_end = 0, end = r->off + r->len;
	r->pending = 1;
	for (uint64_t pos = r->off, n; pos < end; pos += n) {
		uint64_t vcl = pos >> o->cbits, co = pos & (o->csize - 1);
		n = end - pos < o->csize - co ? end - pos : o->csize - co;
		bool full = co == 0 && (n == o->csize || pos + n == o->vsize);
		uint32_t e = o->table[vcl];
		if (!zeroes && !(e & OVL_BUSY) && e != OVL_E_BASE && e != OVL_E_ZERO) {
			/* Already in the overlay: write in place, merging physically contiguous clusters. */
			uint64_t foff = ((uint64_t)e << o->cbits) + co;
			if (cur && cur_end == foff && cur->iovcnt + cursor_entries(&c, n) <= BLK_MAX_IOV) {
				if (piece_take(cur, &c, n) < 0)
					goto nomem;
				cur_end += n;
				continue;
			}
			if (cur)
				piece_io(b, cur, EIO_WRITEV, o->fd, cur_off, cur->iov, cur->iovcnt, read_done);
			cur = piece_get(o, r, P_INPLACE);
			if (!cur || piece_take(cur, &c, n) < 0)
				goto nomem;
			cur_off = foff;
			cur_end = foff + n;
			continue;
		}
		struct ovl_piece *p = piece_get(o, r, zeroes && full ? P_ZERO_CL : P_ALLOC);
		if (!p)
			goto nomem;
		p->vcl = vcl;
		p->coff = co;
		p->clen = n;
		if ((zeroes ? piece_take_zeros(b, p, zeroes && full ? 0 : n) : piece_take(p, &c, n)) < 0) {
			piece_end(b, p, -ENOMEM);
			goto nomem_nocur;
		}
		write_chunk(b, p);
	}
	if (cur)
		piece_io(b, cur, EIO_WRITEV, o->fd, cur_off, cur->iov, cur->iovcnt, read_done);
	req_put(b, r);
	return;
nomem:
	if (cur)
		piece_end(b, cur, -ENOMEM);
nomem_nocur:
	if (!r->status)
		r->status = -ENOMEM;
	req_put(b, r);
}

/* Whole clusters become zero clusters; partial clusters at the ends are left
 * alone (discard promises nothing about the contents). */
void ovl_discard(struct blk *b, struct blk_req *r)
{
	struct ovl *o = b->ovl;
	uint64_t end = r->off + r->len;
	r->pending = 1;
	for (uint64_t pos = r->off, n; pos < end; pos += n) {
		uint64_t vcl = pos >> o->cbits, co = pos & (o->csize - 1);
		n = end - pos < o->csize - co ? end - pos : o->csize - co;
		if (co != 0 || (n != o->csize && pos + n != o->vsize))
			continue;
		struct ovl_piece *p = piece_get(o, r, P_ZERO_CL);
		if (!p) {
			r->status = -ENOMEM;
			break;
		}
		p->vcl = vcl;
		write_chunk(b, p);
	}
	req_put(b, r);
}

/* ---- flush: fdatasync data, write changed table pages, fdatasync again ---- */

static void flush_start(struct blk *b, struct blk_req *r);

static void flush_finish(struct blk *b)
{
	struct ovl *o = b->ovl;
	struct blk_req *r = o->fl_cur;
	o->fl_cur = NULL;
	if (o->fl_status < 0)   /* try those pages again next time */
		for (uint64_t i = 0; i < (o->npages + 63) / 64; i++)
			o->dirty[i] |= o->snap_dirty[i];
	blk_req_finish(b, r, o->fl_status);
	if (o->fl_wait) {
		struct blk_req *n = o->fl_wait;
		o->fl_wait = n->next;
		if (!o->fl_wait)
			o->fl_wait_tail = &o->fl_wait;
		flush_start(b, n);
	}
}

static void flush_step(struct blk *b, struct eio *io, int res);

static void flush_issue(struct blk *b, uint8_t op, uint64_t off, void *buf, uint64_t len)
{
	struct ovl *o = b->ovl;
	struct ovl_piece *p = piece_get(o, NULL, P_FLUSH);
	if (!p) {
		o->fl_status = -ENOMEM;
		return;
	}
	o->fl_pending++;
	p->biov.iov_base = buf;
	p->biov.iov_len = len;
	piece_io(b, p, op, o->fd, off, &p->biov, op == EIO_WRITEV ? 1 : 0, flush_step);
}

static void flush_step(struct blk *b, struct eio *io, int res)
{
	struct ovl *o = b->ovl;
	piece_end(b, io->ctx, 0);
	if (res < 0 && !o->fl_status)
		o->fl_status = res;
	if (--o->fl_pending)
		return;
	if (o->fl_status < 0 || o->fl_stage == 3) {
		flush_finish(b);
		return;
	}
	if (o->fl_stage == 1) {
		o->fl_stage = 2;
		for (uint64_t pg = 0; pg < o->npages;) {
			if (!(o->snap_dirty[pg / 64] & (1ull << (pg % 64)))) {
				pg++;
				continue;
			}
			uint64_t run = 1;
			while (pg + run < o->npages && (o->snap_dirty[(pg + run) / 64] & (1ull << ((pg + run) % 64))))
				run++;
			flush_issue(b, EIO_WRITEV, OVL_HEADER_SIZE + pg * OVL_PAGE, (char *)o->snap + pg * OVL_PAGE,
				    run * OVL_PAGE);
			pg += run;
		}
		if (!o->fl_pending)
			flush_finish(b);
		return;
	}
	o->fl_stage = 3;
	flush_issue(b, EIO_FDATASYNC, 0, NULL, 0);
	if (!o->fl_pending)
		flush_finish(b);
}

/* Snapshot the changed table pages now: only entries whose data write had
 * completed before this flush started are covered by its first fdatasync. */
void ovl_snapshot_dirty(struct ovl *o)
{
	for (uint64_t w = 0; w < (o->npages + 63) / 64; w++) {
		o->snap_dirty[w] = o->dirty[w];
		o->dirty[w] = 0;
		for (uint64_t bits = o->snap_dirty[w]; bits; bits &= bits - 1) {
			uint64_t pg = w * 64 + (uint64_t)__builtin_ctzll(bits);
			uint64_t first = pg * OVL_PAGE_ENTRIES, last = first + OVL_PAGE_ENTRIES;
			if (last > o->nclusters)
				last = o->nclusters;
			for (uint64_t i = first; i < last; i++)
				o->snap[i] = htole32(o->table[i] & ~OVL_BUSY);
		}
	}
}

static void flush_start(struct blk *b, struct blk_req *r)
{
	struct ovl *o = b->ovl;
	o->fl_cur = r;
	o->fl_status = 0;
	o->fl_pending = 0;
	o->fl_stage = 1;
	ovl_snapshot_dirty(o);
	flush_issue(b, EIO_FDATASYNC, 0, NULL, 0);
	if (!o->fl_pending)
		flush_finish(b);
}

void ovl_flush(struct blk *b, struct blk_req *r)
{
	struct ovl *o = b->ovl;
	if (o->ephemeral) {
		blk_req_finish(b, r, 0);   /* gone at exit anyway: nothing to make durable */
		return;
	}
	if (o->fl_cur) {
		r->next = NULL;
		*o->fl_wait_tail = r;
		o->fl_wait_tail = &r->next;
		return;
	}
	flush_start(b, r);
}

/* ---- extent iterator ---- */

uint64_t blk_overlay_cluster_size(const struct blk *b)
{
	return b->ovl ? b->ovl->csize : 0;
}

int blk_overlay_next_extent(const struct blk *b, uint64_t *pos, struct blk_extent *ext)
{
	const struct ovl *o = b->ovl;
	if (!o)
		return -EINVAL;
	uint64_t i = *pos >> o->cbits;
	while (i < o->nclusters && (o->table[i] & ~OVL_BUSY) == OVL_E_BASE)
		i++;
	if (i >= o->nclusters)
		return 0;
	bool zero = (o->table[i] & ~OVL_BUSY) == OVL_E_ZERO;
	uint64_t j = i + 1;
	while (j < o->nclusters) {
		uint32_t e = o->table[j] & ~OVL_BUSY;
		if (e == OVL_E_BASE || (e == OVL_E_ZERO) != zero)
			break;
		j++;
	}
	ext->offset = i << o->cbits;
	ext->length = (j << o->cbits < o->vsize ? j << o->cbits : o->vsize) - ext->offset;
	ext->kind = zero ? BLK_EXTENT_ZERO : BLK_EXTENT_DATA;
	*pos = j << o->cbits;
	return 1;
}


int blk_overlay_read(const struct blk *b, uint64_t offset, void *buf, uint64_t len)
{
	const struct ovl *o = b->ovl;
	if (!o)
		return err_set(EINVAL, "%s: no overlay", b->path);
	if (offset > o->vsize || len > o->vsize - offset)
		return err_set(EINVAL, "overlay %s: read of %llu bytes at %llu is outside the disk", o->path,
			       (unsigned long long)len, (unsigned long long)offset);
	int fd = o->fd;
	if (b->direct) {
		/* O_DIRECT wants aligned buffers; a second, buffered description of the
		 * same file (also works for unnamed ephemeral overlays) does not. */
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
		if ((fd = open(proc, O_RDONLY | O_CLOEXEC)) < 0)
			return err_set(errno, "overlay %s: reopen: %s", o->path, strerror(errno));
	}
	uint8_t *p = buf;
	int ret = 0;
	while (len && ret == 0) {
		uint64_t vcl = offset >> o->cbits, in = offset & (o->csize - 1);
		uint64_t n = o->csize - in < len ? o->csize - in : len;
		uint32_t e = o->table[vcl] & ~OVL_BUSY;
		if (e == OVL_E_ZERO) {
			memset(p, 0, n);
		} else if (e == OVL_E_BASE) {
			ret = err_set(EINVAL, "overlay %s: offset %llu is not in the overlay", o->path,
				      (unsigned long long)offset);
		} else {
			uint64_t at = ((uint64_t)e << o->cbits) + in;
			for (uint64_t got = 0; got < n && ret == 0;) {
				ssize_t k = pread(fd, p + got, n - got, (off_t)(at + got));
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0)
					ret = err_set(k < 0 ? errno : EIO, "overlay %s: reading at offset %llu: %s", o->path,
						      (unsigned long long)(at + got), k < 0 ? strerror(errno) : "short read");
				else
					got += (uint64_t)k;
			}
		}
		p += n;
		offset += n;
		len -= n;
	}
	if (fd != o->fd)
		close(fd);
	return ret;
}
