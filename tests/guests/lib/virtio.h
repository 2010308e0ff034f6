/* Guest virtio 1.x modern PCI driver library: capabilities, status/feature
 * handshake, split virtqueues (direct chains or indirect tables, EVENT_IDX or
 * flag-based notification suppression), MSI-X vectors.
 *
 * Set-up (virtio_open .. virtio_driver_ok) uses PCI config cycles and must run
 * at CPL0. Everything after it (virtq_add/kick/get, config reads) touches only
 * RAM and MMIO, which the kit maps user-accessible, so the data path can run
 * at CPL3 through kit_user_call — natively, instead of in KVM's emulator. */
#ifndef KIT_VIRTIO_H
#define KIT_VIRTIO_H
#include "pci.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4

#define VIRTIO_STATUS_ACK 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTIO_NO_VECTOR 0xffff
#define VIRTQ_MAX_SIZE 256
#define VIRTQ_MAX_SG 16      /* segments per request (indirect table size) */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];    /* [size], then used_event */
};
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};
struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];  /* [size], then avail_event */
};
#define VIRTQ_USED_F_NO_NOTIFY 1

/* One buffer segment: guest-physical address (identity map: a pointer). */
struct virtq_sg {
	const void *addr;
	uint32_t len;
};

struct virtq {
	uint16_t index;       /* queue number */
	uint16_t size;
	bool indirect, event_idx;
	bool irq_on;          /* interrupts wanted (used_event kept current) */
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	volatile struct virtq_used *used;
	struct virtq_desc *indirect_tables;  /* size tables of VIRTQ_MAX_SG entries */
	volatile uint16_t *notify;           /* this queue's notify address */
	uint16_t free_head, num_free;
	uint16_t avail_idx;                  /* next avail index to publish */
	uint16_t kicked_idx;                 /* avail index at the last notify */
	uint16_t last_used;
	void *token[VIRTQ_MAX_SIZE];
	uint64_t kicks, kicks_suppressed;
};

struct virtio_dev {
	struct pci_dev pci;
	unsigned type;                       /* VIRTIO_ID_* */
	uintptr_t common, isr, device_cfg, notify_base;
	uint32_t notify_mult;
	uint32_t device_cfg_len;
	uint64_t offered, features;          /* device features, negotiated features */
	struct pci_msix msix;
	bool have_msix;
};

/* Knobs from the command line, defaults on: "virtio.indirect=0",
 * "virtio.event_idx=0" test the direct-chain and flag-suppression paths. */
uint64_t virtio_ring_features_wanted(void);

/* Find the first device of this type on bus 0, place/enable its BARs, locate
 * the virtio capabilities and MSI-X. 0 / -1 (printed). "pci.reassign=1" on
 * the command line clears the BARs first, so the library places them itself. */
int virtio_open(unsigned type, struct virtio_dev *vd);
/* Reset, ACKNOWLEDGE|DRIVER, negotiate (offered & wanted; VERSION_1 is
 * required and always requested), FEATURES_OK and check it stuck. 0 / -1. */
int virtio_negotiate(struct virtio_dev *vd, uint64_t wanted);
/* Queue set-up: size = min(device max, want); msix_vector or VIRTIO_NO_VECTOR.
 * Memory comes from the library's static pool. 0 / -1. */
int virtio_queue_setup(struct virtio_dev *vd, struct virtq *q, uint16_t index, uint16_t want, uint16_t msix_vector);
void virtio_driver_ok(struct virtio_dev *vd);
void virtio_reset(struct virtio_dev *vd);
uint8_t virtio_status(const struct virtio_dev *vd);
bool virtio_needs_reset(const struct virtio_dev *vd);
/* Route config-change interrupts to an MSI-X entry (or VIRTIO_NO_VECTOR);
 * returns what the device accepted (VIRTIO_NO_VECTOR = refused). */
uint16_t virtio_config_vector(struct virtio_dev *vd, uint16_t entry);
uint16_t virtio_num_queues(const struct virtio_dev *vd);
/* Program MSI-X entry -> LAPIC vector on this CPU and enable MSI-X. 0 / -1. */
int virtio_msix_route(struct virtio_dev *vd, unsigned entry, uint8_t vector);
uint8_t virtio_isr_read(const struct virtio_dev *vd);   /* read clears it */

/* Device-specific configuration, read with the generation-count retry. */
uint8_t virtio_cfg8(const struct virtio_dev *vd, unsigned off);
uint16_t virtio_cfg16(const struct virtio_dev *vd, unsigned off);
uint32_t virtio_cfg32(const struct virtio_dev *vd, unsigned off);
uint64_t virtio_cfg64(const struct virtio_dev *vd, unsigned off);

/* Pool for rings and buffers the device reads/writes (static, identity-mapped,
 * zeroed). NULL when exhausted. */
void *virtio_alloc(size_t size, size_t align);

/* Expose n_out device-readable then n_in device-writable segments as one
 * request; token comes back from virtq_get. Uses an indirect table when
 * negotiated and n_out+n_in > 1. 0, or -1 if the ring is full / too many. */
int virtq_add(struct virtq *q, const struct virtq_sg *sg, unsigned n_out, unsigned n_in, void *token);
/* Notify the device unless it suppressed notifications (EVENT_IDX avail_event
 * or VIRTQ_USED_F_NO_NOTIFY). */
void virtq_kick(struct virtq *q);
bool virtq_has_used(const struct virtq *q);
/* Next completed request's token and written length; NULL if none yet. A
 * used id that names no outstanding request returns VIRTQ_BAD_USED. */
void *virtq_get(struct virtq *q, uint32_t *len);
#define VIRTQ_BAD_USED ((void *)1)
/* Poll up to `cycles` TSC cycles for a completion; NULL on timeout. */
void *virtq_wait(struct virtq *q, uint32_t *len, uint64_t cycles);
/* Interrupt suppression for polling queues / re-arming for interrupt ones. */
void virtq_interrupts(struct virtq *q, bool on);

#endif
