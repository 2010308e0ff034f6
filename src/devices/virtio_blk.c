/* virtio-blk (virtio 1.2, 5.2) on the virtio-pci transport: one request queue
 * served on the device's I/O thread by the block backend (include/vmsvc/blk.h:
 * io_uring, optional copy-on-write overlay). This file: the --disk spec, the
 * configuration space, features and the device lifecycle (reset, save/load,
 * destroy). Requests: virtio_blk_req.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/iothread.h>
#include <vmsvc/vm.h>
#include "virtio_blk_internal.h"

int virtio_blk_parse_spec(const char *text, struct blk_spec *spec, char **buf)
{
	*buf = NULL;
	memset(spec, 0, sizeof(*spec));
	if (!text || !*text)
		return err_set(EINVAL, "empty disk spec");
	char *s = strdup(text);
	if (!s)
		return err_set(ENOMEM, "out of memory");
	char *save = NULL;
	char *path = strtok_r(s, ",", &save);
	if (!path || text[0] == ',') {
		free(s);
		return err_set(EINVAL, "disk spec '%s' has no path", text);
	}
	spec->path = path;
	spec->cache = BLK_CACHE_WRITEBACK;
	for (char *opt; (opt = strtok_r(NULL, ",", &save));) {
		char *val = strchr(opt, '=');
		if (val)
			*val++ = 0;
		if (!strcmp(opt, "ro") && !val) {
			spec->read_only = true;
		} else if (!strcmp(opt, "ephemeral") && !val) {
			spec->ephemeral = true;
		} else if (!strcmp(opt, "overlay") && val && *val) {
			spec->overlay = val;
		} else if (!strcmp(opt, "serial") && val) {
			if (strlen(val) > BLK_SERIAL_MAX) {
				err_set(EINVAL, "serial '%s' longer than %u characters", val, BLK_SERIAL_MAX);
				free(s);
				return -EINVAL;
			}
			spec->serial = val;
		} else if (!strcmp(opt, "cache") && val && (!strcmp(val, "none") || !strcmp(val, "writeback"))) {
			spec->cache = !strcmp(val, "none") ? BLK_CACHE_NONE : BLK_CACHE_WRITEBACK;
		} else {
			err_set(EINVAL,
				"unknown disk option '%s%s%s' (want ro, overlay=FILE, ephemeral, serial=ID, "
				"cache=none|writeback)",
				opt, val ? "=" : "", val ? val : "");
			free(s);
			return -EINVAL;
		}
	}
	if (spec->overlay && spec->ephemeral) {
		free(s);
		return err_set(EINVAL, "overlay=FILE and ephemeral exclude each other");
	}
	*buf = s;
	return 0;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Features and the (immutable) configuration space from the opened disk. */
static void describe(struct virtio_blk *d)
{
	struct blk *b = d->blk;
	d->capacity = blk_sectors(b);
	d->features = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
		      1ULL << VIRTIO_BLK_F_FLUSH;
	if (blk_is_read_only(b))
		d->features |= 1ULL << VIRTIO_BLK_F_RO;
	else {
		if (blk_can_discard(b))
			d->features |= 1ULL << VIRTIO_BLK_F_DISCARD;
		if (blk_can_write_zeroes(b))
			d->features |= 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
	}
	uint8_t *c = d->config;
	memset(c, 0, sizeof(d->config));
	put64(c + VBLK_CFG_CAPACITY, d->capacity);
	put32(c + VBLK_CFG_SIZE_MAX, VBLK_SIZE_MAX);
	put32(c + VBLK_CFG_SEG_MAX, VBLK_SEG_MAX);
	put32(c + VBLK_CFG_BLK_SIZE, blk_logical_block_size(b));
	put16(c + VBLK_CFG_NUM_QUEUES, 1);
	/* Discard granularity: an overlay cluster, else 4 KiB (host page/fs block). */
	uint64_t gran = blk_overlay_cluster_size(b);
	if (gran == 0)
		gran = blk_logical_block_size(b) > 4096 ? blk_logical_block_size(b) : 4096;
	put32(c + VBLK_CFG_MAX_DISCARD_SECTORS, VBLK_MAX_DWZ_SECTORS);
	put32(c + VBLK_CFG_MAX_DISCARD_SEG, VBLK_MAX_DWZ_SEGS);
	put32(c + VBLK_CFG_DISCARD_ALIGN, (uint32_t)(gran / BLK_SECTOR_SIZE));
	put32(c + VBLK_CFG_MAX_WZ_SECTORS, VBLK_MAX_DWZ_SECTORS);
	put32(c + VBLK_CFG_MAX_WZ_SEG, VBLK_MAX_DWZ_SEGS);
	c[VBLK_CFG_WZ_MAY_UNMAP] = 1;   /* the overlay turns whole zeroed clusters into zero clusters */
}

/* Read-only after creation, so no lock. The transport bounds offset + size. */
static void vblk_config_read(void *opaque, unsigned offset, void *data, unsigned size)
{
	struct virtio_blk *d = opaque;
	if (offset < VBLK_CFG_SIZE && size <= VBLK_CFG_SIZE - offset)
		memcpy(data, d->config + offset, size);
	else
		memset(data, 0, size);
}

static void vblk_config_write(void *opaque, unsigned offset, const void *data, unsigned size)
{
	(void)opaque;
	(void)offset;
	(void)data;
	(void)size;   /* writeback toggling (CONFIG_WCE) is not offered: nothing is writable */
}

/* Driver reset (status 0) or VM reset, on the I/O thread: wait for the backend
 * to finish everything in flight without touching guest memory again. */
static void vblk_reset_cb(void *opaque)
{
	struct virtio_blk *d = opaque;
	vblk_drain(d, true);
	d->broken = false;
	d->malformed = 0;
}

static const struct virtio_dev_ops vblk_virtio_ops = {
	.config_read = vblk_config_read,
	.config_write = vblk_config_write,
	.reset = vblk_reset_cb,
	.queue_notify = vblk_queue_notify,
};

static void vblk_reset(void *dev)
{
	struct virtio_blk *d = dev;
	virtio_pci_reset(d->vdev);
}

/* I/O thread: no more kicks, nothing in flight, completion fd unwatched. */
static void quiesce(void *opaque)
{
	struct virtio_blk *d = opaque;
	d->stopped = true;
	vblk_drain(d, true);
	if (d->fd_watched) {
		iothread_del_fd(d->it, blk_completion_fd(d->blk));
		d->fd_watched = false;
	}
}

static void free_dev(struct virtio_blk *d)
{
	if (d->vdev) {
		if (d->blk)
			iothread_run_sync(d->it, quiesce, d);
		virtio_pci_destroy(d->vdev);
	}
	blk_close(d->blk);
	free(d->merges);
	free(d);
}

static void vblk_destroy(void *dev)
{
	free_dev(dev);
}

static void complete_in_flight(void *opaque)
{
	vblk_drain(opaque, false);
}

/* The transport's blob is the whole state: requests in flight are completed
 * (into guest RAM) first, so the used ring saved is final. The disk contents
 * are the disk's business (an overlay persists itself at close/flush). */
static int vblk_save(void *dev, void **buf, size_t *len)
{
	struct virtio_blk *d = dev;
	iothread_run_sync(d->it, complete_in_flight, d);
	return virtio_pci_save(d->vdev, buf, len);
}

/* Snapshot, VM paused: hold the kicks (the transport records them), then
 * complete every request in flight on the I/O thread. The used-ring entries and
 * their interrupts land now, before any vCPU state is captured; a request is
 * thus either finished in the snapshot or still only in the available ring
 * (taken after the VM resumes or is restored): it completes exactly once. */
static void hold_and_complete(void *opaque)
{
	struct virtio_blk *d = opaque;
	d->held = true;
	if (d->inflight)
		log_info("%s: snapshot: completing %u request(s) in flight", d->name, d->inflight);
	d->snapshot_completed += d->inflight;
	vblk_drain(d, false);
}

static int vblk_quiesce(void *dev)
{
	struct virtio_blk *d = dev;
	virtio_pci_hold(d->vdev, true);
	iothread_run_sync(d->it, hold_and_complete, d);
	return 0;
}

static void release(void *opaque)
{
	struct virtio_blk *d = opaque;
	d->held = false;
}

static void vblk_resume(void *dev)
{
	struct virtio_blk *d = dev;
	iothread_run_sync(d->it, release, d);
	virtio_pci_hold(d->vdev, false);   /* kicks that came meanwhile are taken now */
}

static void hold(void *opaque)
{
	struct virtio_blk *d = opaque;
	d->held = true;
}

static int vblk_load(void *dev, const void *buf, size_t len)
{
	struct virtio_blk *d = dev;
	/* Held until the VM runs: chains the guest made available before the
	 * snapshot are taken by vblk_resume, not while the VM is being built. */
	virtio_pci_hold(d->vdev, true);
	iothread_run_sync(d->it, hold, d);
	return virtio_pci_load(d->vdev, buf, len);   /* resets us (drain) before restoring */
}

static const struct device_ops vblk_device_ops = {
	.name = "virtio-blk",
	.reset = vblk_reset,
	.save = vblk_save,
	.load = vblk_load,
	.quiesce = vblk_quiesce,
	.resume = vblk_resume,
	.destroy = vblk_destroy,
};

struct with_backend {
	struct virtio_blk *d;
	int (*fn)(struct blk *b, void *arg);
	void *arg;
	int ret;
};

static void with_backend_cb(void *opaque)
{
	struct with_backend *w = opaque;
	vblk_drain(w->d, false);
	w->ret = w->fn(w->d->blk, w->arg);
}

int virtio_blk_with_backend(struct vm *vm, unsigned index, int (*fn)(struct blk *b, void *arg), void *arg)
{
	for (unsigned i = 0; i < vm->ndevices; i++) {
		if (vm->devices[i].ops != &vblk_device_ops || index-- != 0)
			continue;
		struct with_backend w = { vm->devices[i].dev, fn, arg, 0 };
		/* On the I/O thread: it is the backend's only driver, and while it runs fn
		 * it takes no queue notification, so no new request can start. */
		int r = iothread_run_sync(w.d->it, with_backend_cb, &w);
		return r < 0 ? err_set(-r, "virtio-blk: cannot reach the I/O thread") : w.ret;
	}
	return err_set(ENOENT, "no disk %u", index);
}

int virtio_blk_attach(struct vm *vm, const char *text)
{
	static unsigned instances;   /* log names only */
	struct blk_spec spec;
	char *buf;
	int r = virtio_blk_parse_spec(text, &spec, &buf);
	if (r < 0)
		return r;
	struct virtio_blk *d = calloc(1, sizeof(*d));
	if (!d) {
		free(buf);
		return err_set(ENOMEM, "virtio-blk: out of memory");
	}
	d->merges = calloc(VBLK_MERGES, sizeof(*d->merges));
	if (!d->merges) {
		free(d);
		free(buf);
		return err_set(ENOMEM, "virtio-blk: out of memory");
	}
	for (unsigned i = 0; i < VBLK_MERGES; i++) {
		d->merges[i].next_free = d->free_merges;
		d->free_merges = &d->merges[i];
	}
	snprintf(d->name, sizeof(d->name), "virtio-blk%u", __atomic_fetch_add(&instances, 1, __ATOMIC_RELAXED));
	spec.queue_depth = VBLK_BACKEND_DEPTH;
	r = blk_open(&spec, &d->blk);
	free(buf);
	if (r < 0) {
		free(d->merges);
		free(d);
		return r;
	}
	describe(d);
	d->poll_ns = VBLK_POLL_DEFAULT_NS;
	const char *poll = getenv("VMSVC_BLK_POLL_US");
	if (poll && *poll) {
		char *end;
		unsigned long us = strtoul(poll, &end, 10);
		if (*end || us > VBLK_POLL_MAX_US_ENV)
			log_warn("%s: ignoring VMSVC_BLK_POLL_US=%s (want 0..%u)", d->name, poll, VBLK_POLL_MAX_US_ENV);
		else
			d->poll_ns = us * 1000u;
	}
	const struct virtio_dev_desc desc = {
		.name = "virtio-blk",
		.device_id = VIRTIO_ID_BLOCK,
		.features = d->features,
		.num_queues = 1,
		.queue_max_size = VBLK_QUEUE_SIZE,
		.config_size = VBLK_CFG_SIZE,
		.pci_class = 0x010000,   /* mass storage, SCSI: what virtio-blk has always used */
	};
	d->bus = &vm->bus;
	for (unsigned i = 0; i < vm->ndevices; i++)
		d->index += vm->devices[i].ops == &vblk_device_ops;
	if ((r = virtio_pci_create(vm, &desc, &vblk_virtio_ops, d, &d->vdev)) < 0) {
		free_dev(d);
		return r;
	}
	d->it = virtio_iothread(d->vdev);
	if ((r = iothread_add_fd(d->it, blk_completion_fd(d->blk), EPOLLIN, vblk_completion_ready, d)) < 0) {
		free_dev(d);
		return err_set(-r, "virtio-blk: cannot watch the completion eventfd");
	}
	d->fd_watched = true;
	if ((r = vm_add_device(vm, &vblk_device_ops, d)) < 0) {
		free_dev(d);
		return r;
	}
	log_info("%s: %s, %llu sectors, %s%s, engine %s", d->name, text, (unsigned long long)d->capacity,
		 blk_is_read_only(d->blk) ? "read-only" : "read-write",
		 blk_overlay_cluster_size(d->blk) ? " with overlay" : "", blk_engine_name(d->blk));
	return 0;
}
