/* virtio 1.2: split virtqueues (src/devices/virtq.c) and the modern PCI transport
 * (src/devices/virtio_pci.c). A device (blk, net, rng) implements struct
 * virtio_dev_ops and gets: an I/O thread, its queues, and the helpers below.
 *
 * Threads: every device callback (activate, reset, queue_notify) runs on the
 * device's I/O thread (virtio_iothread()), so queue processing, activation and
 * reset never race. config_read/config_write run on vCPU threads (the device
 * locks its own config if another thread changes it). All virtq_* calls for a
 * queue must come from the I/O thread (or be serialized by the device).
 *
 * Hostile guests: every ring and buffer address is translated with gpa_to_hva
 * with overflow checks; any malformed ring or chain marks the queue broken, puts
 * the device into NEEDS_RESET (status bit 0x40), raises a configuration-change
 * interrupt and is logged once. virtq_pop then returns -EIO until reset. */
#ifndef VMSVC_VIRTIO_H
#define VMSVC_VIRTIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct vm;
struct guest_mem;
struct iothread;
struct virtio_dev;

/* ---- constants (virtio 1.2) ---- */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* Transport feature bits (offered by the transport for every device). */
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* Limits enforced on guest-supplied chains (docs/devices.md). */
#define VIRTQ_MAX_SIZE 1024              /* largest queue size a device may offer */
#define VIRTQ_MAX_INDIRECT 1024          /* entries in one indirect table */
#define VIRTQ_MAX_CHAIN_BYTES (256u << 20) /* total bytes of one chain */

/* ---- split virtqueue ---- */
/* One buffer chain taken from the available ring: out_num device-readable
 * segments, then in_num device-writable ones. Allocated by virtq_pop; the device
 * frees it with free() after virtq_push. */
struct virtq_elem {
	uint16_t head;         /* descriptor id to return in the used ring */
	uint16_t out_num, in_num;
	uint32_t out_len, in_len;   /* total bytes of each direction */
	struct iovec iov[];    /* out_num + in_num host pointers into guest RAM */
};

/* Queue state. Fields are owned by virtq.c and the transport; devices use the
 * functions. Public so that unit tests and the fuzzer can drive a queue over a
 * fake guest memory without a transport. */
struct virtq {
	const struct guest_mem *mem;
	struct virtio_dev *vdev;    /* NULL in tests */
	unsigned index;
	uint16_t size;              /* power of two, <= VIRTQ_MAX_SIZE */
	bool ready;                 /* enabled by the driver and rings validated */
	bool event_idx;             /* VIRTIO_F_RING_EVENT_IDX negotiated */
	bool indirect;              /* VIRTIO_F_RING_INDIRECT_DESC negotiated */
	bool broken;                /* malformed ring seen: pops fail until reset */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* Host pointers to the rings (valid while ready). */
	volatile uint8_t *desc;     /* struct { le64 addr; le32 len; le16 flags; le16 next; } [size] */
	volatile uint16_t *avail;   /* flags, idx, ring[size], used_event */
	volatile uint16_t *used;    /* flags, idx, {le32 id, le32 len}[size], avail_event */
	uint16_t last_avail_idx;    /* next avail ring entry to take */
	uint16_t used_idx;          /* next used ring entry to fill (shadow of used->idx) */
	uint16_t signalled_used;    /* used idx at the last interrupt (EVENT_IDX) */
	bool signalled_valid;
	bool kicks_off;             /* virtq_set_notification(false) in effect */
	uint64_t errors;            /* malformed chains seen (first one is logged) */
	/* Called once when the queue becomes broken (transport: NEEDS_RESET). */
	void (*on_error)(struct virtq *vq, const char *why);
	struct iovec *scratch;      /* parse buffer: max(VIRTQ_MAX_SIZE, VIRTQ_MAX_INDIRECT) entries */
};

/* Validate and map the rings of a queue (size, alignment, all inside RAM).
 * Returns 0 and sets vq->ready, or negative errno (the queue stays not ready). */
int virtq_setup(struct virtq *vq, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
		uint64_t avail_gpa, uint64_t used_gpa, bool event_idx, bool indirect);
/* Forget the rings (queue reset); keeps vdev/index/on_error. */
void virtq_reset(struct virtq *vq);
void virtq_free(struct virtq *vq);
/* Take the next available chain. 1: *out is an element (free() it after
 * virtq_push); 0: nothing available; -EIO: queue broken (reported once through
 * on_error); -ENOMEM. */
int virtq_pop(struct virtq *vq, struct virtq_elem **out);
/* Put `elem` on the used ring with `len` bytes written to its in segments
 * (clamped to in_len). Publishes the used index with release ordering. */
int virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t len);
/* Give back an element without using it (it will be popped again). Only for
 * the last popped element(s), in reverse order. */
void virtq_unpop(struct virtq *vq, unsigned n);
/* Should the driver be interrupted for the used entries pushed since the last
 * notification? (VIRTQ_AVAIL_F_NO_INTERRUPT or used_event, with a full barrier.)
 * Updates the "signalled" state when it returns true. */
bool virtq_should_notify(struct virtq *vq);
/* Ask for (enable=true) or suppress guest kicks while the device is busy
 * (VIRTQ_USED_F_NO_NOTIFY or avail_event). After enabling, re-check
 * virtq_pending() to close the race. */
void virtq_set_notification(struct virtq *vq, bool enable);
/* Number of available chains not yet popped (0 if broken/not ready). */
unsigned virtq_pending(struct virtq *vq);

/* ---- device model contract ---- */
struct virtio_dev_desc {
	const char *name;           /* "virtio-rng", used for logs, thread and PCI names */
	uint16_t device_id;         /* VIRTIO_ID_* */
	uint64_t features;          /* device-specific feature bits offered; the
	                             * transport adds VERSION_1, INDIRECT_DESC, EVENT_IDX */
	unsigned num_queues;        /* <= VIRTIO_MAX_QUEUES */
	uint16_t queue_max_size;    /* power of two <= VIRTQ_MAX_SIZE */
	unsigned config_size;       /* bytes of device configuration space (<= 4096) */
	uint32_t pci_class;         /* class code for the PCI header (e.g. 0x010000 blk) */
};
#define VIRTIO_MAX_QUEUES 64

struct virtio_dev_ops {
	/* Device configuration space (offset + size <= config_size, checked by the
	 * transport; size 1, 2, 4 or 8). vCPU thread. Reads default to zeros if NULL. */
	void (*config_read)(void *opaque, unsigned offset, void *data, unsigned size);
	void (*config_write)(void *opaque, unsigned offset, const void *data, unsigned size);
	/* Optional: the driver set FEATURES_OK with `features` (a subset of those
	 * offered, VERSION_1 included); return false to refuse the combination. */
	bool (*features_ok)(void *opaque, uint64_t features);
	/* DRIVER_OK was set: queues that the driver enabled are ready. I/O thread.
	 * Negative return: the device goes to NEEDS_RESET. */
	int (*activate)(void *opaque);
	/* The driver reset the device (status 0) or the VM is reset: stop all I/O,
	 * drop in-flight requests (their guest memory must no longer be touched after
	 * return), back to power-on state. The transport resets the queues after. I/O thread. */
	void (*reset)(void *opaque);
	/* The driver kicked queue `vq` (only delivered after DRIVER_OK, for ready
	 * queues; after activate each ready queue gets one call). I/O thread. */
	void (*queue_notify)(void *opaque, struct virtq *vq);
};

/* Create a virtio PCI device on vm->pci (which must exist), with its own I/O
 * thread. The device is visible to the guest when this returns. */
int virtio_pci_create(struct vm *vm, const struct virtio_dev_desc *desc, const struct virtio_dev_ops *ops,
		      void *opaque, struct virtio_dev **out);
/* Stop the I/O thread, unregister from the bus, free. Call from the device's
 * struct device_ops destroy before freeing the device state. */
void virtio_pci_destroy(struct virtio_dev *d);
/* VM-level reset (struct device_ops reset): as if the driver wrote status 0. */
void virtio_pci_reset(struct virtio_dev *d);

/* Transport state as a versioned blob: the PCI function (config, MSI-X), feature
 * negotiation, status, and every queue with its ring addresses and positions.
 * Save needs a quiescent device (VM paused, no request in flight: the device's
 * own save/drain is the caller's business). Load (VM paused) resets the device,
 * restores all of it, re-validates the rings against guest RAM and, if the driver
 * had set DRIVER_OK, calls activate and processes each ready queue once. A blob
 * from another device type or queue layout is refused (-EINVAL). *buf: free(). */
int virtio_pci_save(struct virtio_dev *d, void **buf, size_t *len);
int virtio_pci_load(struct virtio_dev *d, const void *buf, size_t len);

/* Hold (true): queue notifications (guest kicks, and the ones activation and
 * load make) are recorded instead of delivered; release (false) delivers the
 * recorded ones. For snapshots: a held device's queues stay as saved while the
 * VM is paused, and a restored device waits for the VM to run. A reset keeps
 * the hold. Any thread but the I/O thread's callbacks run it there. */
void virtio_pci_hold(struct virtio_dev *d, bool hold);

struct iothread *virtio_iothread(struct virtio_dev *d);
struct virtq *virtio_queue(struct virtio_dev *d, unsigned index);
/* Negotiated features (valid from FEATURES_OK on). */
uint64_t virtio_features(struct virtio_dev *d);
struct vm *virtio_vm(struct virtio_dev *d);

/* Interrupt the driver for `vq` if virtq_should_notify says so: the queue's
 * MSI-X vector, or INTx with ISR bit 0. Any thread. */
void virtio_notify_queue(struct virtq *vq);
/* Interrupt unconditionally (device-side decisions, e.g. after a batch). */
void virtio_interrupt_queue(struct virtq *vq);
/* Device configuration changed: bump config_generation and raise the config
 * interrupt (MSI-X config vector, or INTx with ISR bit 1). Any thread. */
void virtio_config_changed(struct virtio_dev *d);
/* Device error: set NEEDS_RESET and raise a configuration-change interrupt;
 * `why` is logged once per reset cycle. Any thread. */
void virtio_set_needs_reset(struct virtio_dev *d, const char *why);

#endif
