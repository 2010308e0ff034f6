/* virtio-rng (virtio 1.2, 5.4): one request queue; every writable buffer the
 * driver posts is filled with getrandom(2) bytes on the device's I/O thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/virtio.h>
#include <vmsvc/vm.h>

/* Bytes given per request at most: a guest asking for a huge buffer gets a
 * short answer (the used length says how much) instead of stalling the thread. */
#define RNG_MAX_PER_REQUEST (64u << 10)

struct virtio_rng {
	struct virtio_dev *vdev;
};

static uint32_t fill_random(struct virtq_elem *e)
{
	uint32_t done = 0;
	for (unsigned i = e->out_num; i < (unsigned)e->out_num + e->in_num && done < RNG_MAX_PER_REQUEST; i++) {
		uint8_t *p = e->iov[i].iov_base;
		size_t want = e->iov[i].iov_len;
		if (want > RNG_MAX_PER_REQUEST - done)
			want = RNG_MAX_PER_REQUEST - done;
		size_t got = 0;
		while (got < want) {
			ssize_t n = getrandom(p + got, want - got, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				log_warn("virtio-rng: getrandom: %s", strerror(errno));
				return done + (uint32_t)got;
			}
			got += (size_t)n;
		}
		done += (uint32_t)got;
	}
	return done;
}

static void rng_queue_notify(void *opaque, struct virtq *vq)
{
	(void)opaque;
	struct virtq_elem *e;
	bool pushed = false;
	int r;
	while ((r = virtq_pop(vq, &e)) == 1) {
		uint32_t len = fill_random(e);
		virtq_push(vq, e, len);
		free(e);
		pushed = true;
	}
	if (pushed)
		virtio_notify_queue(vq);
}

static const struct virtio_dev_ops rng_virtio_ops = {
	.queue_notify = rng_queue_notify,
};

static void rng_reset(void *dev)
{
	struct virtio_rng *rng = dev;
	virtio_pci_reset(rng->vdev);
}

static void rng_destroy(void *dev)
{
	struct virtio_rng *rng = dev;
	virtio_pci_destroy(rng->vdev);
	free(rng);
}

/* No state of its own: the transport's (queues, negotiation, PCI) is all. */
static int rng_save(void *dev, void **buf, size_t *len)
{
	struct virtio_rng *rng = dev;
	return virtio_pci_save(rng->vdev, buf, len);
}

/* Requests are answered synchronously, so nothing is ever in flight: holding
 * the kicks is all a snapshot needs. */
static int rng_quiesce(void *dev)
{
	struct virtio_rng *rng = dev;
	virtio_pci_hold(rng->vdev, true);
	return 0;
}

static void rng_resume(void *dev)
{
	struct virtio_rng *rng = dev;
	virtio_pci_hold(rng->vdev, false);
}

static int rng_load(void *dev, const void *buf, size_t len)
{
	struct virtio_rng *rng = dev;
	virtio_pci_hold(rng->vdev, true);   /* until the VM runs (rng_resume) */
	return virtio_pci_load(rng->vdev, buf, len);
}

static const struct device_ops rng_device_ops = {
	.name = "virtio-rng",
	.reset = rng_reset,
	.save = rng_save,
	.load = rng_load,
	.quiesce = rng_quiesce,
	.resume = rng_resume,
	.destroy = rng_destroy,
};

int virtio_rng_attach(struct vm *vm)
{
	static const struct virtio_dev_desc desc = {
		.name = "virtio-rng",
		.device_id = VIRTIO_ID_RNG,
		.num_queues = 1,
		.queue_max_size = 64,
		.config_size = 0,
		.pci_class = 0xff0000,   /* "unclassified device", as QEMU's */
	};
	struct virtio_rng *rng = calloc(1, sizeof(*rng));
	if (!rng)
		return err_set(ENOMEM, "virtio-rng: out of memory");
	int r = virtio_pci_create(vm, &desc, &rng_virtio_ops, rng, &rng->vdev);
	if (r < 0) {
		free(rng);
		return r;
	}
	if ((r = vm_add_device(vm, &rng_device_ops, rng)) < 0) {
		rng_destroy(rng);
		return r;
	}
	return 0;
}
