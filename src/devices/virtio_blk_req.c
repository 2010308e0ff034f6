/* virtio-blk requests (virtio 1.2, 5.2.6) on the device's I/O thread: take every
 * available chain, validate it, hand the guest's own buffers (iovecs into guest
 * RAM: zero copy) to the block backend, kick the backend once per batch, and
 * complete in the backend's callbacks with one guest interrupt per batch.
 *
 * Everything in a chain is guest-controlled. The header and the DISCARD /
 * WRITE_ZEROES segments are copied out before they are looked at (they may be
 * split across descriptors at any byte). A request we can answer (it has a
 * writable status byte) gets VIRTIO_BLK_S_IOERR / UNSUPP; a chain without a
 * status byte, or a head that is already in flight, is a structural violation:
 * NEEDS_RESET. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vmsvc/bus.h>
#include <vmsvc/iov.h>
#include <vmsvc/err.h>
#include "virtio_blk_internal.h"

struct vblk_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};
_Static_assert(sizeof(struct vblk_hdr) == 16, "virtio_blk_req header");

struct vblk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};
_Static_assert(sizeof(struct vblk_dwz_seg) == 16, "discard/write-zeroes segment");

/* Kick the backend after this many submissions even if more chains are
 * waiting, so a long burst does not delay its first requests. */
#define KICK_BATCH 64u
/* Backend errors logged per device (the rest are only counted). */
#define IO_ERRORS_LOGGED 5u

/* Copy `len` bytes starting `off` bytes into iov[0..n) to dst; returns bytes copied. */


static const char *type_name(uint8_t t)
{
	switch (t) {
	case VIRTIO_BLK_T_IN: return "read";
	case VIRTIO_BLK_T_OUT: return "write";
	case VIRTIO_BLK_T_FLUSH: return "flush";
	case VIRTIO_BLK_T_DISCARD: return "discard";
	case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
	default: return "request";
	}
}

static void malformed(struct virtio_blk *d, const char *why, uint64_t a)
{
	if (d->malformed++ == 0)
		log_warn("%s: malformed request: %s (%llu); completed with IOERR (further ones not logged)", d->name,
			 why, (unsigned long long)a);
}

static int bus_op(uint8_t type)
{
	switch (type) {
	case VIRTIO_BLK_T_IN: return BUS_BLK_READ;
	case VIRTIO_BLK_T_OUT: return BUS_BLK_WRITE;
	case VIRTIO_BLK_T_FLUSH: return BUS_BLK_FLUSH;
	case VIRTIO_BLK_T_DISCARD: return BUS_BLK_DISCARD;
	case VIRTIO_BLK_T_WRITE_ZEROES: return BUS_BLK_WRITE_ZEROES;
	default: return -1;
	}
}

/* Status byte, used ring, element back to the heap. */
static void finish(struct vblk_req *req)
{
	struct virtio_blk *d = req->dev;
	if (!d->dropping && bus_wants(d->bus, BUS_EV_BLK_DONE) && bus_op(req->type) >= 0) {
		struct bus_event ev = { .type = BUS_EV_BLK_DONE, .vcpu = -1 };
		ev.u.blk = (typeof(ev.u.blk)){ .dev = d->index, .op = (uint8_t)bus_op(req->type), .status = req->result,
					       .sector = req->sector, .bytes = req->bytes };
		bus_dispatch(d->bus, &ev);
	}
	if (!d->dropping) {
		*req->status = req->result;
		uint32_t len = req->result == VIRTIO_BLK_S_OK ? req->written + 1 : 1;
		virtq_push(virtio_queue(d->vdev, 0), req->elem, len);
		d->need_notify = true;
	}
	free(req->elem);
	req->elem = NULL;
	req->busy = false;
	d->inflight--;
	d->requests++;
}

static void complete_now(struct vblk_req *req, uint8_t status)
{
	req->result = status;
	finish(req);
}

static void backend_done(void *opaque, int status, uint64_t bytes)
{
	(void)bytes;
	struct vblk_req *req = opaque;
	struct virtio_blk *d = req->dev;
	if (status != 0) {
		uint8_t cls = (uint8_t)blk_status_class(status);
		if (cls > req->result)
			req->result = cls;
		/* Read-only and unsupported are the guest's business, not host trouble. */
		if (status != -EROFS && status != -EOPNOTSUPP && d->io_errors++ < IO_ERRORS_LOGGED)
			log_warn("%s: %s at sector %llu failed: %s", d->name, type_name(req->type),
				 (unsigned long long)req->sector, strerror(-status));
	}
	if (--req->pending == 0)
		finish(req);
}

/* A submit that did not queue (the callback will not run). */
static void submit_failed(struct vblk_req *req, int r)
{
	struct virtio_blk *d = req->dev;
	if (d->io_errors++ < IO_ERRORS_LOGGED)
		log_warn("%s: %s at sector %llu not submitted: %s", d->name, type_name(req->type),
			 (unsigned long long)req->sector, strerror(-r));
	req->result = VIRTIO_BLK_S_IOERR;
	if (--req->pending == 0)
		finish(req);
}

static bool range_ok(const struct virtio_blk *d, uint64_t sector, uint64_t nsect)
{
	return sector <= d->capacity && nsect <= d->capacity - sector;
}

/* The service bus's say on a validated request (docs/bus.md): gates may deny
 * it (completed with IOERR, the disk is not touched) or move a read/write to
 * another sector (checked again). false: the request is already completed. */
static bool bus_gate(struct virtio_blk *d, struct vblk_req *req, uint64_t bytes)
{
	req->bytes = bytes;
	if (!bus_wants(d->bus, BUS_EV_BLK_REQUEST))
		return true;
	struct bus_event ev = { .type = BUS_EV_BLK_REQUEST, .vcpu = -1 };
	ev.u.blk = (typeof(ev.u.blk)){ .dev = d->index, .op = (uint8_t)bus_op(req->type), .sector = req->sector,
				       .bytes = bytes };
	enum bus_verdict v = bus_dispatch(d->bus, &ev);
	if (v == BUS_REWRITTEN && (req->type == VIRTIO_BLK_T_IN || req->type == VIRTIO_BLK_T_OUT)) {
		if (!range_ok(d, ev.u.blk.sector, bytes / BLK_SECTOR_SIZE)) {
			complete_now(req, VIRTIO_BLK_S_IOERR);
			return false;
		}
		req->sector = ev.u.blk.sector;
	} else if (v == BUS_DENY) {
		d->denied++;
		complete_now(req, VIRTIO_BLK_S_IOERR);
		return false;
	}
	return true;
}

/* One request's read/write straight to the backend. */
static void submit_one(struct virtio_blk *d, struct vblk_req *req, bool write)
{
	uint64_t off = req->sector * BLK_SECTOR_SIZE;
	int r = write ? blk_write(d->blk, off, req->data, req->ndata, backend_done, req)
		      : blk_read(d->blk, off, req->data, req->ndata, backend_done, req);
	if (r < 0)
		submit_failed(req, r);
}

/* A merged I/O finished: each of its requests gets the same outcome. */
static void merge_done(void *opaque, int status, uint64_t bytes)
{
	struct vblk_merge *m = opaque;
	struct virtio_blk *d = m->reqs->dev;
	for (struct vblk_req *req = m->reqs, *next; req; req = next) {
		next = req->merge_next;
		req->merge_next = NULL;
		backend_done(req, status, bytes);
	}
	m->reqs = NULL;
	m->next_free = d->free_merges;
	d->free_merges = m;
}

/* Submit the run collected so far. */
static void flush_run(struct virtio_blk *d)
{
	struct vblk_run *run = &d->run;
	if (!run->active)
		return;
	run->active = false;
	struct vblk_merge *m = run->n > 1 ? d->free_merges : NULL;
	if (!m) {
		for (struct vblk_req *req = run->first, *next; req; req = next) {
			next = req->merge_next;
			req->merge_next = NULL;
			submit_one(d, req, run->write);
		}
		return;
	}
	d->free_merges = m->next_free;
	unsigned k = 0;
	for (struct vblk_req *req = run->first; req; req = req->merge_next)
		for (unsigned i = 0; i < req->ndata; i++)
			m->iov[k++] = req->data[i];
	m->reqs = run->first;
	d->merged += run->n;
	uint64_t off = run->start * BLK_SECTOR_SIZE;
	int r = run->write ? blk_write(d->blk, off, m->iov, k, merge_done, m)
			   : blk_read(d->blk, off, m->iov, k, merge_done, m);
	if (r < 0) {
		for (struct vblk_req *req = m->reqs, *next; req; req = next) {
			next = req->merge_next;
			req->merge_next = NULL;
			submit_failed(req, r);
		}
		m->reqs = NULL;
		m->next_free = d->free_merges;
		d->free_merges = m;
	}
}

/* Add a validated read/write to the run, or start a new run. */
static void queue_rw(struct virtio_blk *d, struct vblk_req *req, bool write, uint64_t bytes)
{
	struct vblk_run *run = &d->run;
	if (run->active && (run->write != write || run->end != req->sector ||
			    run->iovcnt + req->ndata > VBLK_MERGE_MAX_IOV || run->bytes + bytes > VBLK_MERGE_MAX_BYTES))
		flush_run(d);
	req->merge_next = NULL;
	if (!run->active) {
		*run = (struct vblk_run){ .active = true, .write = write, .start = req->sector, .first = req };
	} else {
		run->last->merge_next = req;
	}
	run->last = req;
	run->n++;
	run->iovcnt += req->ndata;
	run->bytes += bytes;
	run->end = req->sector + bytes / BLK_SECTOR_SIZE;
}

/* DISCARD / WRITE_ZEROES: validate every segment, then submit them all. */
static bool handle_dwz(struct virtio_blk *d, struct vblk_req *req, const struct virtq_elem *e)
{
	bool wz = req->type == VIRTIO_BLK_T_WRITE_ZEROES;
	unsigned feature = wz ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD;
	if (!(d->features & (1ULL << feature))) {
		complete_now(req, VIRTIO_BLK_S_UNSUPP);
		return false;
	}
	uint64_t payload = e->out_len - sizeof(struct vblk_hdr);
	if (payload == 0 || payload % sizeof(struct vblk_dwz_seg) ||
	    payload / sizeof(struct vblk_dwz_seg) > VBLK_MAX_DWZ_SEGS) {
		malformed(d, "discard/write-zeroes payload is not 1..8 segments (bytes)", payload);
		complete_now(req, VIRTIO_BLK_S_IOERR);
		return false;
	}
	unsigned nseg = (unsigned)(payload / sizeof(struct vblk_dwz_seg));
	struct vblk_dwz_seg seg[VBLK_MAX_DWZ_SEGS];
	iov_to_buf(e->iov, e->out_num, sizeof(struct vblk_hdr), seg, nseg * sizeof(seg[0]));
	for (unsigned i = 0; i < nseg; i++) {
		/* Unknown flags, or unmap on a discard: UNSUPP (5.2.6.2). */
		if ((seg[i].flags & ~VIRTIO_BLK_WZ_FLAG_UNMAP) || (!wz && seg[i].flags)) {
			complete_now(req, VIRTIO_BLK_S_UNSUPP);
			return false;
		}
		if (seg[i].num_sectors > VBLK_MAX_DWZ_SECTORS) {
			malformed(d, "discard/write-zeroes segment above the advertised maximum (sectors)",
				  seg[i].num_sectors);
			complete_now(req, VIRTIO_BLK_S_IOERR);
			return false;
		}
		if (!range_ok(d, seg[i].sector, seg[i].num_sectors)) {
			complete_now(req, VIRTIO_BLK_S_IOERR);
			return false;
		}
	}
	req->sector = seg[0].sector;
	uint64_t total = 0;
	for (unsigned i = 0; i < nseg; i++)
		total += (uint64_t)seg[i].num_sectors * BLK_SECTOR_SIZE;
	if (!bus_gate(d, req, total))
		return false;
	req->pending = nseg;
	for (unsigned i = 0; i < nseg; i++) {
		uint64_t off = seg[i].sector * BLK_SECTOR_SIZE, len = (uint64_t)seg[i].num_sectors * BLK_SECTOR_SIZE;
		int r = wz ? blk_write_zeroes(d->blk, off, len, backend_done, req)
			   : blk_discard(d->blk, off, len, backend_done, req);
		if (r < 0)
			submit_failed(req, r);
	}
	return true;
}

/* One chain. Returns true if something was handed to the backend. */
static bool handle(struct virtio_blk *d, struct virtq_elem *e)
{
	if (e->head >= VBLK_QUEUE_SIZE || d->reqs[e->head].busy) {
		d->broken = true;
		virtio_set_needs_reset(d->vdev, "virtio-blk: descriptor head made available while in flight");
		free(e);
		return false;
	}
	if (e->in_num == 0) {
		d->broken = true;
		virtio_set_needs_reset(d->vdev, "virtio-blk: request without a writable status byte");
		free(e);
		return false;
	}
	struct vblk_req *req = &d->reqs[e->head];
	*req = (struct vblk_req){ .dev = d, .elem = e, .busy = true, .result = VIRTIO_BLK_S_OK };
	d->inflight++;
	struct iovec *last = &e->iov[e->out_num + e->in_num - 1];   /* zero-length segments never reach us */
	req->status = (uint8_t *)last->iov_base + last->iov_len - 1;

	struct vblk_hdr h;
	if (e->out_len < sizeof(h)) {
		malformed(d, "request header shorter than 16 bytes (bytes)", e->out_len);
		complete_now(req, VIRTIO_BLK_S_IOERR);
		return false;
	}
	iov_to_buf(e->iov, e->out_num, 0, &h, sizeof(h));
	req->type = (uint8_t)(h.type <= 0xff ? h.type : 0xff);
	req->sector = h.sector;

	/* Writable data: every writable byte but the status. Shrinking our copy of
	 * the last segment is safe: elem->iov is private to us. */
	uint64_t in_data = e->in_len - 1;
	struct iovec *in_iov = &e->iov[e->out_num];
	unsigned in_cnt = e->in_num;
	last->iov_len--;
	if (last->iov_len == 0)
		in_cnt--;

	int r;
	switch (h.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool write = h.type == VIRTIO_BLK_T_OUT;
		uint64_t bytes;
		if (write) {
			/* Readable data after the 16 header bytes, which may end inside a segment. */
			size_t off = sizeof(h);
			unsigned i = 0;
			while (i < e->out_num && off >= e->iov[i].iov_len)
				off -= e->iov[i++].iov_len;
			req->data = &e->iov[i];
			req->ndata = e->out_num - i;
			if (req->ndata) {
				req->data[0].iov_base = (uint8_t *)req->data[0].iov_base + off;
				req->data[0].iov_len -= off;
			}
			bytes = e->out_len - sizeof(h);
		} else {
			req->data = in_iov;
			req->ndata = in_cnt;
			bytes = in_data;
			req->written = (uint32_t)in_data;
		}
		if (bytes % BLK_SECTOR_SIZE) {
			malformed(d, "data length not a multiple of 512 (bytes)", bytes);
			complete_now(req, VIRTIO_BLK_S_IOERR);
			return false;
		}
		if (!range_ok(d, h.sector, bytes / BLK_SECTOR_SIZE)) {
			complete_now(req, VIRTIO_BLK_S_IOERR);
			return false;
		}
		if (!bus_gate(d, req, bytes))
			return false;
		req->pending = 1;
		queue_rw(d, req, write, bytes);
		return true;
	}
	case VIRTIO_BLK_T_FLUSH:
		flush_run(d);   /* the writes before it go out first */
		if (!bus_gate(d, req, 0))
			return false;
		req->pending = 1;
		if ((r = blk_flush(d->blk, backend_done, req)) < 0)
			submit_failed(req, r);
		return true;
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = { 0 };
		const char *serial = blk_serial(d->blk);
		size_t n = strlen(serial);
		memcpy(id, serial, n < sizeof(id) ? n : sizeof(id));   /* NUL-terminated only if shorter */
		req->written = (uint32_t)buf_to_iov(in_iov, in_cnt, 0, id, sizeof(id));
		complete_now(req, VIRTIO_BLK_S_OK);
		return false;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		flush_run(d);
		return handle_dwz(d, req, e);
	default:
		complete_now(req, VIRTIO_BLK_S_UNSUPP);
		return false;
	}
}

/* Take every available chain (kicks stay off meanwhile: the caller turns
 * them back on), submit, kick the backend once per KICK_BATCH. */
static void take_available(struct virtio_blk *d, struct virtq *vq)
{
	unsigned unkicked = 0;
	struct virtq_elem *e;
	while (!d->broken && virtq_pop(vq, &e) == 1) {
		if (handle(d, e) && ++unkicked >= KICK_BATCH) {
			flush_run(d);
			blk_kick(d->blk);
			unkicked = 0;
		}
	}
	flush_run(d);
	if (unkicked)
		blk_kick(d->blk);
	/* Cached reads (and buffered writes) are done by now: answer them before
	 * going back to epoll, whose wake-up for the eventfd would come only after
	 * another round trip. Saves the polling guest 15-60% per cached read at
	 * depth 1 on this host (docs/devices.md, "Host ceiling"). */
	if (d->inflight && blk_completions_ready(d->blk))
		blk_process_completions(d->blk);
}

static void notify_guest(struct virtio_blk *d, struct virtq *vq)
{
	if (d->need_notify) {
		d->need_notify = false;
		virtio_notify_queue(vq);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Adaptive polling: after activity, keep watching the available ring and the
 * backend's completions for poll_ns with guest kicks suppressed. A driver
 * that submits its next request right after a completion then costs no VM
 * exit and no thread wake-up. Bounded (VBLK_POLL_MAX_NS) so that other work
 * on the I/O thread (reset, save) is never held up for long. */
static void poll_for_work(struct virtio_blk *d, struct virtq *vq)
{
	if (!d->poll_ns || d->stopped || d->held || d->broken || !vq->ready)
		return;
	uint64_t now = now_ns(), stop = now + VBLK_POLL_MAX_NS, idle_until = now + d->poll_ns;
	while (now < idle_until && now < stop && !d->broken) {
		bool progress = false;
		if (d->inflight && blk_process_completions(d->blk) > 0)
			progress = true;
		notify_guest(d, vq);
		if (virtq_pending(vq)) {
			take_available(d, vq);
			progress = true;
		}
		now = now_ns();
		if (progress)
			idle_until = now + d->poll_ns;
		else
			__builtin_ia32_pause();
	}
}

void vblk_queue_notify(void *opaque, struct virtq *vq)
{
	struct virtio_blk *d = opaque;
	if (d->stopped || d->held || d->broken || vq->index != 0)
		return;
	/* No guest kicks while we are taking chains anyway. */
	virtq_set_notification(vq, false);
	take_available(d, vq);
	notify_guest(d, vq);
	poll_for_work(d, vq);
	/* Kicks back on, then look again: a chain made available just before
	 * would otherwise wait for the next kick. */
	for (;;) {
		virtq_set_notification(vq, true);
		if (d->broken || virtq_pending(vq) == 0)
			break;
		virtq_set_notification(vq, false);
		take_available(d, vq);
	}
	notify_guest(d, vq);
}

void vblk_completion_ready(void *opaque, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	struct virtio_blk *d = opaque;
	struct virtq *vq = virtio_queue(d->vdev, 0);
	blk_process_completions(d->blk);
	notify_guest(d, vq);
	if (d->poll_ns && !d->stopped && !d->held && !d->broken && vq->ready) {
		/* The driver may answer this completion with its next request. */
		virtq_set_notification(vq, false);
		poll_for_work(d, vq);
		for (;;) {
			virtq_set_notification(vq, true);
			if (d->broken || virtq_pending(vq) == 0)
				break;
			virtq_set_notification(vq, false);
			take_available(d, vq);
		}
		notify_guest(d, vq);
	}
}

void vblk_drain(struct virtio_blk *d, bool drop)
{
	d->dropping = drop;
	blk_drain(d->blk);
	d->dropping = false;
	/* Every request with a backend part completed above; none is left behind. */
	for (unsigned i = 0; i < VBLK_QUEUE_SIZE; i++)
		if (d->reqs[i].busy) {
			log_warn("%s: request %u still busy after drain; dropped", d->name, i);
			free(d->reqs[i].elem);
			d->reqs[i] = (struct vblk_req){ 0 };
		}
	d->inflight = 0;
	if (drop)
		d->need_notify = false;
	else if (d->need_notify) {
		d->need_notify = false;
		virtio_notify_queue(virtio_queue(d->vdev, 0));
	}
}
