/* Modern virtio 1.2 PCI transport (virtio spec 4.1). One PCI function per
 * device: vendor 0x1af4, device 0x1040 + virtio id, revision 1.
 *   BAR1: MSI-X table + PBA, num_queues + 1 vectors (the driver assigns them to
 *         queues and config changes), handled by pci_msix.c.
 *   BAR4: 64-bit MMIO, 16 KiB: common cfg 0x0000, ISR 0x1000, device cfg 0x2000,
 *         notify 0x3000 (queue n at 0x3000 + 4n: notify_off = n, multiplier 4).
 * Queue kicks: one eventfd per queue, registered with KVM_IOEVENTFD at the
 * queue's notify address (no datamatch: each queue has its own address) and
 * watched by the device's I/O thread; a notify write that reaches the VMM (no
 * ioeventfd) is turned into a write to the same eventfd. Activation, reset and
 * queue setup run on the I/O thread (iothread_run_sync), so they never race
 * with queue processing. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/iothread.h>
#include <vmsvc/pci.h>
#include <vmsvc/virtio.h>
#include <vmsvc/vm.h>

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_SUBSYS_ID 0x1100

#define MSIX_BAR 1
#define REGS_BAR 4
#define REGS_BAR_SIZE 0x4000
#define COMMON_OFF 0x0000
#define COMMON_LEN 0x40
#define ISR_OFF 0x1000
#define DEVCFG_OFF 0x2000
#define DEVCFG_MAX 0x1000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULT 4

#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4
#define CAP_PCI_CFG 5

struct vqueue {
	struct virtq vq;
	struct virtio_dev *dev;
	uint16_t size;           /* queue_size as written (starts at the maximum) */
	uint16_t msix_vector;
	bool enabled;            /* queue_enable reads 1 */
	uint64_t desc, driver, device;
	int kick_fd;
	bool ioeventfd;          /* KVM_IOEVENTFD registered at ioeventfd_addr */
	uint64_t ioeventfd_addr;
	uint32_t ioeventfd_len;
	unsigned unready_kick_logged;
	bool kick_held;          /* a notification came while the device was held */
};

struct virtio_dev {
	struct vm *vm;
	struct virtio_dev_desc desc;
	const struct virtio_dev_ops *ops;
	void *opaque;
	struct pci_device *pci;
	struct iothread *it;
	pthread_mutex_t lock;    /* transport registers, ISR */
	uint32_t dfselect, gfselect;
	uint64_t host_features, guest_features;
	uint8_t status;
	uint8_t isr;
	uint8_t config_generation;
	uint16_t queue_select;
	uint16_t msix_config;
	bool active;             /* DRIVER_OK processed (I/O thread state) */
	bool held;               /* virtio_pci_hold: notifications recorded, not delivered */
	bool needs_reset_logged;
	unsigned pci_cfg_cap;    /* config offset of the VIRTIO_PCI_CAP_PCI_CFG capability */
	unsigned bad_access_logged;
	struct vqueue *q;
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint64_t getn(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

struct iothread *virtio_iothread(struct virtio_dev *d) { return d->it; }
struct virtq *virtio_queue(struct virtio_dev *d, unsigned i) { return i < d->desc.num_queues ? &d->q[i].vq : NULL; }
struct vm *virtio_vm(struct virtio_dev *d) { return d->vm; }
uint64_t virtio_features(struct virtio_dev *d)
{
	pthread_mutex_lock(&d->lock);
	uint64_t f = d->guest_features;
	pthread_mutex_unlock(&d->lock);
	return f;
}

/* ---- interrupts ---- */

/* Raise `vector` (MSI-X) or the INTx line with `isr_bit`. */
static void raise_irq(struct virtio_dev *d, uint16_t vector, uint8_t isr_bit)
{
	if (pci_msix_enabled(d->pci)) {
		if (vector != VIRTIO_MSI_NO_VECTOR)
			pci_msix_notify(d->pci, vector);
		return;
	}
	pthread_mutex_lock(&d->lock);
	d->isr |= isr_bit;
	pthread_mutex_unlock(&d->lock);
	pci_intx_set(d->pci, true);
}

void virtio_interrupt_queue(struct virtq *vq)
{
	struct virtio_dev *d = vq->vdev;
	if (!d)
		return;
	struct vqueue *q = &d->q[vq->index];
	pthread_mutex_lock(&d->lock);
	uint16_t vec = q->msix_vector;
	pthread_mutex_unlock(&d->lock);
	raise_irq(d, vec, 1);
}

void virtio_notify_queue(struct virtq *vq)
{
	if (virtq_should_notify(vq))
		virtio_interrupt_queue(vq);
}

void virtio_config_changed(struct virtio_dev *d)
{
	pthread_mutex_lock(&d->lock);
	d->config_generation++;
	uint16_t vec = d->msix_config;
	bool driver_ok = d->status & VIRTIO_STATUS_DRIVER_OK;
	pthread_mutex_unlock(&d->lock);
	if (driver_ok)
		raise_irq(d, vec, 2);
}

void virtio_set_needs_reset(struct virtio_dev *d, const char *why)
{
	pthread_mutex_lock(&d->lock);
	bool first = !d->needs_reset_logged;
	d->needs_reset_logged = true;
	d->status |= VIRTIO_STATUS_NEEDS_RESET;
	bool driver_ok = d->status & VIRTIO_STATUS_DRIVER_OK;
	uint16_t vec = d->msix_config;
	pthread_mutex_unlock(&d->lock);
	if (first)
		log_warn("%s: device needs reset: %s", d->desc.name, why);
	if (driver_ok)
		raise_irq(d, vec, 2);
}

static void vq_error(struct virtq *vq, const char *why)
{
	if (vq->vdev)
		virtio_set_needs_reset(vq->vdev, why);
}

/* ---- work on the I/O thread ---- */

static void kick_cb(void *opaque, int fd, uint32_t events)
{
	(void)events;
	struct vqueue *q = opaque;
	struct virtio_dev *d = q->dev;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0)
		return;   /* EAGAIN: spurious wakeup */
	if (!d->active || !q->vq.ready) {
		/* A kick for a queue that is not configured: harmless, ignored. */
		if (!q->unready_kick_logged++)
			log_info("%s: notification for queue %u that is not ready; ignored", d->desc.name, q->vq.index);
		return;
	}
	if (d->held) {
		q->kick_held = true;   /* delivered by virtio_pci_hold(d, false) */
		return;
	}
	if (d->ops->queue_notify)
		d->ops->queue_notify(d->opaque, &q->vq);
}

static void do_reset(void *opaque)
{
	struct virtio_dev *d = opaque;
	if (d->ops->reset)
		d->ops->reset(d->opaque);
	d->active = false;
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		struct vqueue *q = &d->q[i];
		virtq_reset(&q->vq);
		pthread_mutex_lock(&d->lock);
		q->enabled = false;
		q->size = d->desc.queue_max_size;
		q->msix_vector = VIRTIO_MSI_NO_VECTOR;
		q->desc = q->driver = q->device = 0;
		q->unready_kick_logged = 0;
		q->kick_held = false;
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_lock(&d->lock);
	d->status = 0;
	d->isr = 0;
	d->dfselect = d->gfselect = 0;
	d->guest_features = 0;
	d->queue_select = 0;
	d->msix_config = VIRTIO_MSI_NO_VECTOR;
	d->needs_reset_logged = false;
	pthread_mutex_unlock(&d->lock);
	pci_intx_set(d->pci, false);
}

static void do_activate(void *opaque)
{
	struct virtio_dev *d = opaque;
	if (d->active)
		return;
	int r = d->ops->activate ? d->ops->activate(d->opaque) : 0;
	if (r < 0) {
		virtio_set_needs_reset(d, "activation failed");
		return;
	}
	d->active = true;
	/* Buffers made available before DRIVER_OK (and kicks we ignored) are seen now. */
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		if (!d->q[i].vq.ready || !d->ops->queue_notify)
			continue;
		if (d->held)
			d->q[i].kick_held = true;
		else
			d->ops->queue_notify(d->opaque, &d->q[i].vq);
	}
}

struct hold_req {
	struct virtio_dev *d;
	bool hold;
};

static void do_hold(void *opaque)
{
	struct hold_req *req = opaque;
	struct virtio_dev *d = req->d;
	d->held = req->hold;
	if (d->held)
		return;
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		struct vqueue *q = &d->q[i];
		if (!q->kick_held)
			continue;
		q->kick_held = false;
		if (d->active && q->vq.ready && d->ops->queue_notify)
			d->ops->queue_notify(d->opaque, &q->vq);
	}
}

void virtio_pci_hold(struct virtio_dev *d, bool hold)
{
	struct hold_req req = { d, hold };
	iothread_run_sync(d->it, do_hold, &req);
}

struct enable_req {
	struct virtio_dev *d;
	struct vqueue *q;
	int result;
	char why[160];   /* err_msg() is per thread: carried back from the I/O thread */
};

static void do_enable_queue(void *opaque)
{
	struct enable_req *req = opaque;
	struct virtio_dev *d = req->d;
	struct vqueue *q = req->q;
	pthread_mutex_lock(&d->lock);
	uint16_t size = q->size;
	uint64_t desc = q->desc, drv = q->driver, dev = q->device, f = d->guest_features;
	pthread_mutex_unlock(&d->lock);
	if (size > d->desc.queue_max_size) {
		req->result = -EINVAL;
		snprintf(req->why, sizeof(req->why), "queue %u: size %u above the maximum %u", q->vq.index, size,
			 d->desc.queue_max_size);
		return;
	}
	req->result = virtq_setup(&q->vq, &d->vm->mem, size, desc, drv, dev,
				  f & (1ULL << VIRTIO_F_RING_EVENT_IDX), f & (1ULL << VIRTIO_F_RING_INDIRECT_DESC));
	if (req->result < 0)
		snprintf(req->why, sizeof(req->why), "queue %u: %s", q->vq.index, err_msg());
}

/* ---- common configuration ---- */

static void common_image(struct virtio_dev *d, uint8_t img[COMMON_LEN])
{
	memset(img, 0, COMMON_LEN);
	put32(img + 0x00, d->dfselect);
	put32(img + 0x04, d->dfselect < 2 ? (uint32_t)(d->host_features >> (32 * d->dfselect)) : 0);
	put32(img + 0x08, d->gfselect);
	put32(img + 0x0c, d->gfselect < 2 ? (uint32_t)(d->guest_features >> (32 * d->gfselect)) : 0);
	put16(img + 0x10, d->msix_config);
	put16(img + 0x12, (uint16_t)d->desc.num_queues);
	img[0x14] = d->status;
	img[0x15] = d->config_generation;
	put16(img + 0x16, d->queue_select);
	if (d->queue_select < d->desc.num_queues) {
		const struct vqueue *q = &d->q[d->queue_select];
		put16(img + 0x18, q->size);
		put16(img + 0x1a, q->msix_vector);
		put16(img + 0x1c, q->enabled);
		put16(img + 0x1e, d->queue_select);   /* queue_notify_off */
		put64(img + 0x20, q->desc);
		put64(img + 0x28, q->driver);
		put64(img + 0x30, q->device);
	}
}

static bool features_acceptable(struct virtio_dev *d, uint64_t f)
{
	if (f & ~d->host_features)
		return false;
	if (!(f & (1ULL << VIRTIO_F_VERSION_1)))
		return false;   /* modern transport only */
	return !d->ops->features_ok || d->ops->features_ok(d->opaque, f);
}

static void status_write(struct virtio_dev *d, uint8_t val)
{
	if (val == 0) {
		iothread_run_sync(d->it, do_reset, d);
		return;
	}
	pthread_mutex_lock(&d->lock);
	uint8_t old = d->status;
	uint8_t keep = old & VIRTIO_STATUS_NEEDS_RESET;   /* device-owned bit */
	uint8_t nv = (uint8_t)((val & ~VIRTIO_STATUS_NEEDS_RESET) | keep);
	if ((nv & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		uint64_t f = d->guest_features;
		pthread_mutex_unlock(&d->lock);
		bool ok = features_acceptable(d, f);
		pthread_mutex_lock(&d->lock);
		if (!ok)
			nv &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;   /* the driver reads it back and gives up */
	}
	/* FEATURES_OK cannot be taken back without a reset. */
	if (old & VIRTIO_STATUS_FEATURES_OK)
		nv |= VIRTIO_STATUS_FEATURES_OK;
	bool go = (nv & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK);
	if (go && !(nv & VIRTIO_STATUS_FEATURES_OK)) {
		go = false;
		nv &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
		if (!d->bad_access_logged++)
			log_warn("%s: DRIVER_OK without FEATURES_OK; ignored", d->desc.name);
	}
	d->status = nv;
	bool needs_reset = nv & VIRTIO_STATUS_NEEDS_RESET;
	uint64_t negotiated = d->guest_features;
	pthread_mutex_unlock(&d->lock);
	if (go && !needs_reset) {
		/* Device-side evidence that a guest driver bound (tests/linux/boot.sh greps it):
		 * the kernel itself prints nothing for some drivers, e.g. virtio_net. */
		log_info("%s: driver ready (DRIVER_OK), features %#llx of %#llx, PCI 00:%02x.0", d->desc.name,
		         (unsigned long long)negotiated, (unsigned long long)d->host_features,
		         d->pci ? pci_device_slot(d->pci) : 0u);
		iothread_run_sync(d->it, do_activate, d);
	}
}

static void common_write(struct virtio_dev *d, unsigned off, unsigned size, uint64_t v)
{
	if (off == 0x14 && size == 1) {
		status_write(d, (uint8_t)v);
		return;
	}
	pthread_mutex_lock(&d->lock);
	struct vqueue *q = d->queue_select < d->desc.num_queues ? &d->q[d->queue_select] : NULL;
	/* Queue fields are frozen once the queue is enabled (no VIRTIO_F_RING_RESET). */
	bool q_writable = q && !q->enabled;
	bool enable = false;
	switch (off << 4 | size) {
	case 0x004:
		d->dfselect = (uint32_t)v;
		break;
	case 0x084:
		d->gfselect = (uint32_t)v;
		break;
	case 0x0c4:
		if (d->gfselect < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned sh = 32 * d->gfselect;
			d->guest_features = (d->guest_features & ~(0xffffffffULL << sh)) | ((uint64_t)(uint32_t)v << sh);
		}
		break;
	case 0x102:
		d->msix_config = (uint16_t)v < d->desc.num_queues + 1 ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
		break;
	case 0x162:
		d->queue_select = (uint16_t)v;
		break;
	case 0x182:
		if (q_writable)
			q->size = (uint16_t)v;
		break;
	case 0x1a2:
		if (q)
			q->msix_vector = (uint16_t)v < d->desc.num_queues + 1 ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
		break;
	case 0x1c2:
		if (q_writable && v == 1)
			enable = true;
		break;
	case 0x204: case 0x244: case 0x284: case 0x2c4: case 0x304: case 0x344:
	case 0x208: case 0x288: case 0x308:
		if (q_writable) {
			uint64_t *field = off < 0x28 ? &q->desc : off < 0x30 ? &q->driver : &q->device;
			if (size == 8)
				*field = v;
			else if (off & 4)
				*field = (*field & 0xffffffffULL) | v << 32;
			else
				*field = (*field & ~0xffffffffULL) | v;
		}
		break;
	default:
		if (!d->bad_access_logged++)
			log_warn("%s: ignored %u-byte write to common config offset %#x", d->desc.name, size, off);
		break;
	}
	pthread_mutex_unlock(&d->lock);
	if (enable) {
		struct enable_req req = { d, q, 0, "" };
		iothread_run_sync(d->it, do_enable_queue, &req);
		if (req.result < 0) {
			virtio_set_needs_reset(d, req.why);
		} else {
			pthread_mutex_lock(&d->lock);
			q->enabled = true;
			pthread_mutex_unlock(&d->lock);
		}
	}
}

/* ---- BAR 4 ---- */

static void regs_rw(struct virtio_dev *d, uint64_t offset, void *data, unsigned size, bool is_write)
{
	uint8_t *bytes = data;
	if (offset < COMMON_LEN) {
		if (is_write) {
			common_write(d, (unsigned)offset, size, getn(bytes, size));
		} else if (offset + size <= COMMON_LEN) {
			uint8_t img[COMMON_LEN];
			pthread_mutex_lock(&d->lock);
			common_image(d, img);
			pthread_mutex_unlock(&d->lock);
			memcpy(bytes, img + offset, size);
		}
	} else if (offset >= ISR_OFF && offset < ISR_OFF + 4) {
		if (!is_write) {
			/* Reading the ISR acknowledges the interrupt (INTx). */
			pthread_mutex_lock(&d->lock);
			uint8_t isr = offset == ISR_OFF ? d->isr : 0;
			if (offset == ISR_OFF)
				d->isr = 0;
			pthread_mutex_unlock(&d->lock);
			memset(bytes, 0, size);
			bytes[0] = isr;
			if (offset == ISR_OFF && isr)
				pci_intx_set(d->pci, false);
		}
	} else if (offset >= DEVCFG_OFF && offset < DEVCFG_OFF + DEVCFG_MAX) {
		unsigned off = (unsigned)(offset - DEVCFG_OFF);
		if (off + size > d->desc.config_size) {
			if (!is_write)
				memset(bytes, 0, size);
		} else if (is_write) {
			if (d->ops->config_write)
				d->ops->config_write(d->opaque, off, bytes, size);
		} else {
			memset(bytes, 0, size);
			if (d->ops->config_read)
				d->ops->config_read(d->opaque, off, bytes, size);
		}
	} else if (offset >= NOTIFY_OFF && offset < NOTIFY_OFF + (uint64_t)NOTIFY_MULT * d->desc.num_queues) {
		/* Only reached when the queue's ioeventfd is not registered. */
		if (is_write) {
			uint64_t one = 1;
			struct vqueue *q = &d->q[(offset - NOTIFY_OFF) / NOTIFY_MULT];
			if (write(q->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
				log_warn("%s: kick eventfd: %s", d->desc.name, strerror(errno));
		} else {
			memset(bytes, 0, size);
		}
	} else if (!is_write) {
		memset(bytes, 0, size);
	}
}

static void ioeventfds_set(struct virtio_dev *d, uint64_t bar_addr, bool assign)
{
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		struct vqueue *q = &d->q[i];
		if (!assign) {
			if (q->ioeventfd) {
				struct kvm_ioeventfd io = { .addr = q->ioeventfd_addr, .len = q->ioeventfd_len,
							    .fd = q->kick_fd, .flags = KVM_IOEVENTFD_FLAG_DEASSIGN };
				ioctl(d->vm->vm_fd, KVM_IOEVENTFD, &io);
				q->ioeventfd = false;
			}
			continue;
		}
		if (d->vm->vm_fd < 0)
			continue;   /* no KVM (unit tests): the MMIO path delivers kicks */
		/* len 0 matches any access size (KVM_CAP_IOEVENTFD_ANY_LENGTH); the
		 * driver writes a 16-bit queue index. Fall back to len 2. */
		uint64_t addr = bar_addr + NOTIFY_OFF + (uint64_t)NOTIFY_MULT * i;
		static const uint32_t lens[2] = { 0, 2 };
		for (unsigned k = 0; k < 2 && !q->ioeventfd; k++) {
			struct kvm_ioeventfd io = { .addr = addr, .len = lens[k], .fd = q->kick_fd };
			if (ioctl(d->vm->vm_fd, KVM_IOEVENTFD, &io) == 0) {
				q->ioeventfd = true;
				q->ioeventfd_addr = addr;
				q->ioeventfd_len = lens[k];
			}
		}
		if (!q->ioeventfd)
			log_info("%s: KVM_IOEVENTFD failed for queue %u (%s); kicks go through MMIO exits",
				 d->desc.name, i, strerror(errno));
	}
}

static void pci_bar_rw(void *opaque, unsigned bar, uint64_t offset, void *data, unsigned size, bool is_write)
{
	if (bar == REGS_BAR)
		regs_rw(opaque, offset, data, size, is_write);
	else if (!is_write)
		memset(data, 0xff, size);
}

static void pci_bar_remap(void *opaque, unsigned bar, uint64_t addr, bool mapped)
{
	if (bar == REGS_BAR)
		ioeventfds_set(opaque, addr, mapped);
}

/* VIRTIO_PCI_CAP_PCI_CFG: a window into the BARs through config space
 * (cap + 4: bar; + 8: offset; + 12: length; + 16: data). */
static bool pci_cfg_window(struct virtio_dev *d, unsigned *off_out, unsigned *len_out)
{
	uint8_t c[16];
	pci_config_get(d->pci, d->pci_cfg_cap + 4, c, 16);
	unsigned bar = c[0], len = (unsigned)getn(c + 8, 4);
	uint64_t off = getn(c + 4, 4);
	if (bar != REGS_BAR || (len != 1 && len != 2 && len != 4) || off + len > REGS_BAR_SIZE)
		return false;
	*off_out = (unsigned)off;
	*len_out = len;
	return true;
}

static void pci_config_written(void *opaque, unsigned offset, unsigned size)
{
	struct virtio_dev *d = opaque;
	unsigned data = d->pci_cfg_cap + 16, off, len;
	if (offset + size <= data || offset >= data + 4 || !pci_cfg_window(d, &off, &len))
		return;
	uint8_t buf[4];
	pci_config_get(d->pci, data, buf, 4);
	regs_rw(d, off, buf, len, true);
}

static void pci_config_reading(void *opaque, unsigned offset, unsigned size)
{
	struct virtio_dev *d = opaque;
	unsigned data = d->pci_cfg_cap + 16, off, len;
	if (offset + size <= data || offset >= data + 4 || !pci_cfg_window(d, &off, &len))
		return;
	uint8_t buf[4] = { 0 };
	regs_rw(d, off, buf, len, false);
	pci_config_set(d->pci, data, buf, 4);
}

static const struct pci_device_ops virtio_pci_ops = {
	.bar_rw = pci_bar_rw,
	.bar_remap = pci_bar_remap,
	.config_write = pci_config_written,
	.config_read = pci_config_reading,
};

static int add_vendor_cap(struct virtio_dev *d, uint8_t type, uint32_t offset, uint32_t length, const uint32_t *extra,
			  bool writable_window)
{
	uint8_t cap[20] = { PCI_CAP_ID_VNDR, 0 }, wm[20] = { 0 };
	unsigned len = extra ? 20 : 16;
	cap[2] = (uint8_t)len;
	cap[3] = type;
	cap[4] = writable_window ? 0 : REGS_BAR;
	put32(cap + 8, offset);
	put32(cap + 12, length);
	if (extra)
		put32(cap + 16, *extra);
	if (writable_window) {
		wm[4] = 0xff;                     /* bar */
		memset(wm + 8, 0xff, 8);          /* offset, length */
		memset(wm + 16, 0xff, 4);         /* pci_cfg_data */
	}
	return pci_add_capability(d->pci, cap, len, writable_window ? wm : NULL);
}

/* ---- state ---- */

/* Blob v1: "VIO1", version, device id (le16), num_queues (le16), PCI blob length
 * (le32), PCI blob, transport fields (TRANSPORT_LEN), QUEUE_LEN per queue. */
#define HDR_LEN 13
#define TRANSPORT_LEN (3 + 4 + 4 + 8 + 2 + 2)
#define QUEUE_LEN (2 + 2 + 1 + 8 * 3 + 2 + 2 + 2 + 3)

static void putn(uint8_t **p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		(*p)[i] = (uint8_t)(v >> (8 * i));
	*p += n;
}
static uint64_t takn(const uint8_t **p, unsigned n)
{
	uint64_t v = getn(*p, n);
	*p += n;
	return v;
}

int virtio_pci_save(struct virtio_dev *d, void **buf, size_t *len)
{
	void *pb;
	size_t plen;
	int r = pci_device_save(d->pci, &pb, &plen);
	if (r < 0)
		return r;
	size_t n = HDR_LEN + plen + TRANSPORT_LEN + (size_t)QUEUE_LEN * d->desc.num_queues;
	uint8_t *b = malloc(n), *p = b;
	if (!b) {
		free(pb);
		return err_set(ENOMEM, "%s: out of memory saving state", d->desc.name);
	}
	memcpy(p, "VIO1", 4);
	p += 4;
	putn(&p, 1, 1);
	putn(&p, d->desc.device_id, 2);
	putn(&p, d->desc.num_queues, 2);
	putn(&p, plen, 4);
	memcpy(p, pb, plen);
	p += plen;
	free(pb);
	pthread_mutex_lock(&d->lock);
	putn(&p, d->status, 1);
	putn(&p, d->isr, 1);
	putn(&p, d->config_generation, 1);
	putn(&p, d->dfselect, 4);
	putn(&p, d->gfselect, 4);
	putn(&p, d->guest_features, 8);
	putn(&p, d->queue_select, 2);
	putn(&p, d->msix_config, 2);
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		const struct vqueue *q = &d->q[i];
		putn(&p, q->size, 2);
		putn(&p, q->msix_vector, 2);
		putn(&p, q->enabled, 1);
		putn(&p, q->desc, 8);
		putn(&p, q->driver, 8);
		putn(&p, q->device, 8);
		putn(&p, q->vq.last_avail_idx, 2);
		putn(&p, q->vq.used_idx, 2);
		putn(&p, q->vq.signalled_used, 2);
		putn(&p, q->vq.signalled_valid, 1);
		putn(&p, q->vq.kicks_off, 1);
		putn(&p, q->vq.broken, 1);
	}
	pthread_mutex_unlock(&d->lock);
	*buf = b;
	*len = n;
	return 0;
}

struct load_req {
	struct virtio_dev *d;
	const uint8_t *t;   /* transport fields, validated */
};

static void do_load(void *opaque)
{
	struct load_req *req = opaque;
	struct virtio_dev *d = req->d;
	const uint8_t *p = req->t;
	do_reset(d);
	pthread_mutex_lock(&d->lock);
	d->status = (uint8_t)takn(&p, 1);
	d->isr = (uint8_t)takn(&p, 1);
	d->config_generation = (uint8_t)takn(&p, 1);
	d->dfselect = (uint32_t)takn(&p, 4);
	d->gfselect = (uint32_t)takn(&p, 4);
	d->guest_features = takn(&p, 8);
	d->queue_select = (uint16_t)takn(&p, 2);
	d->msix_config = (uint16_t)takn(&p, 2);
	uint64_t f = d->guest_features;
	pthread_mutex_unlock(&d->lock);
	bool bad_ring = false;
	for (unsigned i = 0; i < d->desc.num_queues; i++) {
		struct vqueue *q = &d->q[i];
		pthread_mutex_lock(&d->lock);
		q->size = (uint16_t)takn(&p, 2);
		q->msix_vector = (uint16_t)takn(&p, 2);
		q->enabled = takn(&p, 1) != 0;
		q->desc = takn(&p, 8);
		q->driver = takn(&p, 8);
		q->device = takn(&p, 8);
		bool enabled = q->enabled;
		pthread_mutex_unlock(&d->lock);
		uint16_t last_avail = (uint16_t)takn(&p, 2), used = (uint16_t)takn(&p, 2), sig = (uint16_t)takn(&p, 2);
		bool sig_valid = takn(&p, 1), kicks_off = takn(&p, 1), broken = takn(&p, 1);
		if (!enabled)
			continue;
		if (virtq_setup(&q->vq, &d->vm->mem, q->size, q->desc, q->driver, q->device,
				f & (1ULL << VIRTIO_F_RING_EVENT_IDX), f & (1ULL << VIRTIO_F_RING_INDIRECT_DESC)) < 0) {
			bad_ring = true;
			continue;
		}
		q->vq.last_avail_idx = last_avail;
		q->vq.used_idx = used;
		q->vq.signalled_used = sig;
		q->vq.signalled_valid = sig_valid;
		q->vq.kicks_off = kicks_off;
		q->vq.broken = broken;
	}
	if (bad_ring)
		virtio_set_needs_reset(d, "restored queue rings are not in guest RAM");
	pthread_mutex_lock(&d->lock);
	bool go = (d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET);
	bool isr = d->isr != 0;
	pthread_mutex_unlock(&d->lock);
	if (isr && !pci_msix_enabled(d->pci))
		pci_intx_set(d->pci, true);
	if (go)
		do_activate(d);
}

int virtio_pci_load(struct virtio_dev *d, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	if (!b || len < HDR_LEN || memcmp(b, "VIO1", 4) != 0)
		return err_set(EINVAL, "%s state: bad header", d->desc.name);
	if (b[4] != 1)
		return err_set(EINVAL, "%s state: unsupported version %u", d->desc.name, b[4]);
	const uint8_t *p = b + 5;
	unsigned id = (unsigned)takn(&p, 2), nq = (unsigned)takn(&p, 2);
	uint64_t plen = takn(&p, 4);
	if (id != d->desc.device_id || nq != d->desc.num_queues)
		return err_set(EINVAL, "%s state: device %u with %u queues, expected %u with %u", d->desc.name, id, nq,
			       d->desc.device_id, d->desc.num_queues);
	if (len != HDR_LEN + plen + TRANSPORT_LEN + (uint64_t)QUEUE_LEN * nq)
		return err_set(EINVAL, "%s state: bad length", d->desc.name);
	const uint8_t *t = b + HDR_LEN + plen;
	/* Validate what the load will trust before changing anything. */
	uint64_t gf = getn(t + 11, 8);
	if (gf & ~d->host_features)
		return err_set(EINVAL, "%s state: negotiated features not offered", d->desc.name);
	for (unsigned i = 0; i < nq; i++) {
		const uint8_t *q = t + TRANSPORT_LEN + (size_t)QUEUE_LEN * i;
		uint16_t size = (uint16_t)getn(q, 2);
		if (size == 0 || size > d->desc.queue_max_size || (size & (size - 1)))
			return err_set(EINVAL, "%s state: queue %u size %u", d->desc.name, i, size);
	}
	int r = pci_device_load(d->pci, b + HDR_LEN, (size_t)plen);
	if (r < 0)
		return err_prefix(r, "%s", d->desc.name);
	struct load_req req = { d, t };
	iothread_run_sync(d->it, do_load, &req);
	return 0;
}

void virtio_pci_reset(struct virtio_dev *d)
{
	iothread_run_sync(d->it, do_reset, d);
}

void virtio_pci_destroy(struct virtio_dev *d)
{
	if (!d)
		return;
	/* The I/O thread first: a callback still running (a virtio-rng answer, a
	 * completion) may raise the INTx line or an MSI-X vector of d->pci, which
	 * pci_device_remove frees (a use after free that hung test_pci). */
	iothread_destroy(d->it);
	d->it = NULL;
	if (d->pci)
		pci_device_remove(d->pci);   /* unmaps BARs: ioeventfds deassigned */
	if (d->q) {
		for (unsigned i = 0; i < d->desc.num_queues; i++) {
			virtq_free(&d->q[i].vq);
			if (d->q[i].kick_fd >= 0)
				close(d->q[i].kick_fd);
		}
		free(d->q);
	}
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int virtio_pci_create(struct vm *vm, const struct virtio_dev_desc *desc, const struct virtio_dev_ops *ops,
		      void *opaque, struct virtio_dev **out)
{
	if (!vm->pci)
		return err_set(ENODEV, "%s: no PCI bus", desc->name);
	if (desc->num_queues == 0 || desc->num_queues > VIRTIO_MAX_QUEUES || desc->queue_max_size == 0 ||
	    desc->queue_max_size > VIRTQ_MAX_SIZE || (desc->queue_max_size & (desc->queue_max_size - 1)) ||
	    desc->config_size > DEVCFG_MAX)
		return err_set(EINVAL, "%s: bad virtio device description", desc->name);
	struct virtio_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(ENOMEM, "%s: out of memory", desc->name);
	d->vm = vm;
	d->desc = *desc;
	d->ops = ops;
	d->opaque = opaque;
	d->msix_config = VIRTIO_MSI_NO_VECTOR;
	d->host_features = desc->features | 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_INDIRECT_DESC |
			   1ULL << VIRTIO_F_RING_EVENT_IDX;
	pthread_mutex_init(&d->lock, NULL);
	int r;
	d->q = calloc(desc->num_queues, sizeof(*d->q));
	if (!d->q) {
		r = err_set(ENOMEM, "%s: out of memory", desc->name);
		goto fail;
	}
	for (unsigned i = 0; i < desc->num_queues; i++)
		d->q[i].kick_fd = -1;
	if ((r = iothread_create(desc->name, &d->it)) < 0)
		goto fail;
	for (unsigned i = 0; i < desc->num_queues; i++) {
		struct vqueue *q = &d->q[i];
		q->dev = d;
		q->vq.vdev = d;
		q->vq.index = i;
		q->vq.on_error = vq_error;
		q->size = desc->queue_max_size;
		q->msix_vector = VIRTIO_MSI_NO_VECTOR;
		q->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (q->kick_fd < 0) {
			r = err_set(errno, "%s: eventfd: %s", desc->name, strerror(errno));
			goto fail;
		}
		if ((r = iothread_add_fd(d->it, q->kick_fd, EPOLLIN, kick_cb, q)) < 0)
			goto fail;
	}
	struct pci_device_info info = {
		.name = desc->name,
		.vendor = VIRTIO_PCI_VENDOR,
		.device = (uint16_t)(VIRTIO_PCI_DEVICE_BASE + desc->device_id),
		.subsys_vendor = VIRTIO_PCI_VENDOR,
		.subsys_id = VIRTIO_PCI_SUBSYS_ID,
		.revision = 1,
		.class_code = desc->pci_class,
		.intx = true,
	};
	if ((r = pci_device_add(vm->pci, &info, &virtio_pci_ops, d, &d->pci)) < 0)
		goto fail;
	uint32_t mult = NOTIFY_MULT;
	int off;
	if ((r = pci_add_bar(d->pci, REGS_BAR, PCI_BAR_MEM64, REGS_BAR_SIZE, PCI_BAR_PREFETCH)) < 0 ||
	    (r = pci_msix_init(d->pci, MSIX_BAR, desc->num_queues + 1)) < 0 ||
	    (r = add_vendor_cap(d, CAP_COMMON, COMMON_OFF, COMMON_LEN, NULL, false)) < 0 ||
	    (r = add_vendor_cap(d, CAP_NOTIFY, NOTIFY_OFF, NOTIFY_MULT * desc->num_queues, &mult, false)) < 0 ||
	    (r = add_vendor_cap(d, CAP_ISR, ISR_OFF, 4, NULL, false)) < 0 ||
	    (desc->config_size && (r = add_vendor_cap(d, CAP_DEVICE, DEVCFG_OFF, desc->config_size, NULL, false)) < 0))
		goto fail;
	uint32_t zero = 0;
	if ((off = add_vendor_cap(d, CAP_PCI_CFG, 0, 0, &zero, true)) < 0) {
		r = off;
		goto fail;
	}
	d->pci_cfg_cap = (unsigned)off;
	if ((r = pci_device_realize(d->pci)) < 0)
		goto fail;
	*out = d;
	return 0;
fail:
	virtio_pci_destroy(d);
	return err_prefix(r, "%s", desc->name);
}
