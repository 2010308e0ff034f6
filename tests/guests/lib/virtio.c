/* Guest virtio modern PCI driver library (see virtio.h). */
#include "virtio.h"

/* struct virtio_pci_common_cfg offsets */
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_MSIX_CONFIG 0x10
#define CC_NUM_QUEUES 0x12
#define CC_STATUS 0x14
#define CC_CFG_GENERATION 0x15
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOTIFY_OFF 0x1e
#define CC_Q_DESC 0x20
#define CC_Q_DRIVER 0x28
#define CC_Q_DEVICE 0x30

#define VIRTIO_CAP_COMMON 1
#define VIRTIO_CAP_NOTIFY 2
#define VIRTIO_CAP_ISR 3
#define VIRTIO_CAP_DEVICE 4

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void full_fence(void) { __asm__ volatile("mfence" ::: "memory"); }

static inline uint8_t r8(uintptr_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t r16(uintptr_t a) { return *(volatile uint16_t *)a; }
static inline void w8(uintptr_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void w16(uintptr_t a, uint16_t v) { *(volatile uint16_t *)a = v; }

/* ---- pool ---- */
#define POOL_SIZE (1536u * 1024u)
static uint8_t pool[POOL_SIZE] __attribute__((aligned(4096), section(".noinit")));
static size_t pool_used;

void *virtio_alloc(size_t size, size_t align)
{
	if (align == 0 || (align & (align - 1)))
		return NULL;
	size_t off = (pool_used + align - 1) & ~(align - 1);
	if (off > POOL_SIZE || size > POOL_SIZE - off)
		return NULL;
	pool_used = off + size;
	memset(pool + off, 0, size);
	return pool + off;
}

uint64_t virtio_ring_features_wanted(void)
{
	uint64_t f = 0;
	if (kit_cmdline_ulong("virtio.indirect", 1))
		f |= 1ULL << VIRTIO_F_RING_INDIRECT_DESC;
	if (kit_cmdline_ulong("virtio.event_idx", 1))
		f |= 1ULL << VIRTIO_F_RING_EVENT_IDX;
	return f;
}

/* ---- discovery ---- */
static uint16_t transitional_id(unsigned type)
{
	switch (type) {
	case VIRTIO_ID_NET: return 0x1000;
	case VIRTIO_ID_BLOCK: return 0x1001;
	case VIRTIO_ID_RNG: return 0x1005;
	default: return 0xffff;
	}
}

static bool cap_region(const struct virtio_dev *vd, unsigned cap, uintptr_t *addr, uint32_t *len)
{
	const struct pci_dev *d = &vd->pci;
	uint8_t bar = pci_cfg_read8(d, cap + 4);
	uint32_t off = pci_cfg_read32(d, cap + 8);
	uint32_t length = pci_cfg_read32(d, cap + 12);
	if (bar >= PCI_MAX_BARS || d->bar_io[bar] || d->bar[bar] == 0)
		return false;
	if ((uint64_t)off + length > d->bar_size[bar])
		return false;
	*addr = (uintptr_t)(d->bar[bar] + off);
	*len = length;
	return true;
}

int virtio_open(unsigned type, struct virtio_dev *vd)
{
	memset(vd, 0, sizeof(*vd));
	vd->type = type;
	if (pci_find(VIRTIO_PCI_VENDOR, (uint16_t)(0x1040 + type), transitional_id(type), &vd->pci) != 0) {
		kit_printf("virtio: no device of type %u on PCI bus 0\n", type);
		return -1;
	}
	struct pci_dev *d = &vd->pci;
	if (kit_cmdline_ulong("pci.reassign", 0))
		pci_clear_bars(d);
	if (pci_setup_bars(d) != 0) {
		kit_printf("virtio: BAR set-up failed for %02x:%02x.%x\n", d->bus, d->dev, d->fn);
		return -1;
	}
	pci_enable(d);
	uint32_t len = 0;
	bool common = false, notify = false, isr = false, dev = false;
	for (unsigned cap = pci_find_cap(d, PCI_CAP_ID_VENDOR, 0); cap; cap = pci_find_cap(d, PCI_CAP_ID_VENDOR, cap)) {
		uint8_t cfg_type = pci_cfg_read8(d, cap + 3);
		if (cfg_type == VIRTIO_CAP_COMMON && !common) {
			common = cap_region(vd, cap, &vd->common, &len) && len >= 0x38;
		} else if (cfg_type == VIRTIO_CAP_NOTIFY && !notify) {
			notify = cap_region(vd, cap, &vd->notify_base, &len) && len >= 2;
			vd->notify_mult = pci_cfg_read32(d, cap + 16);
		} else if (cfg_type == VIRTIO_CAP_ISR && !isr) {
			isr = cap_region(vd, cap, &vd->isr, &len) && len >= 1;
		} else if (cfg_type == VIRTIO_CAP_DEVICE && !dev) {
			dev = cap_region(vd, cap, &vd->device_cfg, &vd->device_cfg_len);
		}
	}
	if (!common || !notify || !isr) {
		kit_printf("virtio: %04x:%04x lacks modern capabilities (common %d notify %d isr %d)\n", d->vendor,
			   d->device, common, notify, isr);
		return -1;
	}
	vd->have_msix = pci_msix_init(d, &vd->msix) == 0;
	kit_printf("virtio: type %u at %02x:%02x.%x id %04x, common %lx notify %lx*%u isr %lx device %lx, msix %u\n",
		   type, d->bus, d->dev, d->fn, d->device, (uint64_t)vd->common, (uint64_t)vd->notify_base,
		   vd->notify_mult, (uint64_t)vd->isr, (uint64_t)vd->device_cfg, vd->have_msix ? vd->msix.entries : 0);
	return 0;
}

/* ---- status and features ---- */
uint8_t virtio_status(const struct virtio_dev *vd)
{
	return r8(vd->common + CC_STATUS);
}

bool virtio_needs_reset(const struct virtio_dev *vd)
{
	return (virtio_status(vd) & VIRTIO_STATUS_NEEDS_RESET) != 0;
}

void virtio_reset(struct virtio_dev *vd)
{
	w8(vd->common + CC_STATUS, 0);
	/* The reset is complete when status reads back 0 (bounded). */
	for (int i = 0; i < 100000 && virtio_status(vd) != 0; i++)
		cpu_relax();
}

int virtio_negotiate(struct virtio_dev *vd, uint64_t wanted)
{
	virtio_reset(vd);
	if (virtio_status(vd) != 0) {
		kit_printf("virtio: reset did not complete (status %x)\n", virtio_status(vd));
		return -1;
	}
	w8(vd->common + CC_STATUS, VIRTIO_STATUS_ACK);
	w8(vd->common + CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	mmio_write32(vd->common + CC_DFSELECT, 0);
	uint64_t lo = mmio_read32(vd->common + CC_DF);
	mmio_write32(vd->common + CC_DFSELECT, 1);
	uint64_t hi = mmio_read32(vd->common + CC_DF);
	vd->offered = lo | hi << 32;
	wanted |= 1ULL << VIRTIO_F_VERSION_1;
	vd->features = vd->offered & wanted;
	kit_printf("virtio: features offered %lx wanted %lx -> %lx\n", vd->offered, wanted, vd->features);
	if (!(vd->features & (1ULL << VIRTIO_F_VERSION_1))) {
		kit_printf("virtio: device does not offer VERSION_1\n");
		w8(vd->common + CC_STATUS, VIRTIO_STATUS_FAILED);
		return -1;
	}
	mmio_write32(vd->common + CC_GFSELECT, 0);
	mmio_write32(vd->common + CC_GF, (uint32_t)vd->features);
	mmio_write32(vd->common + CC_GFSELECT, 1);
	mmio_write32(vd->common + CC_GF, (uint32_t)(vd->features >> 32));
	w8(vd->common + CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(vd) & VIRTIO_STATUS_FEATURES_OK)) {
		kit_printf("virtio: device refused FEATURES_OK (status %x)\n", virtio_status(vd));
		w8(vd->common + CC_STATUS, VIRTIO_STATUS_FAILED);
		return -1;
	}
	return 0;
}

void virtio_driver_ok(struct virtio_dev *vd)
{
	w8(vd->common + CC_STATUS, (uint8_t)(virtio_status(vd) | VIRTIO_STATUS_DRIVER_OK));
}

uint16_t virtio_num_queues(const struct virtio_dev *vd)
{
	return r16(vd->common + CC_NUM_QUEUES);
}

uint16_t virtio_config_vector(struct virtio_dev *vd, uint16_t entry)
{
	w16(vd->common + CC_MSIX_CONFIG, entry);
	return r16(vd->common + CC_MSIX_CONFIG);
}

int virtio_msix_route(struct virtio_dev *vd, unsigned entry, uint8_t vector)
{
	if (!vd->have_msix || entry >= vd->msix.entries)
		return -1;
	pci_msix_enable(&vd->pci, &vd->msix, true);
	pci_msix_set(&vd->msix, entry, vector, (uint8_t)lapic_id());
	return 0;
}

uint8_t virtio_isr_read(const struct virtio_dev *vd)
{
	return r8(vd->isr);
}

/* ---- device configuration ---- */
#define CFG_READ(T, vd, off, rd)                                                        \
	do {                                                                            \
		T v = 0;                                                                \
		if ((vd)->device_cfg == 0 || (off) + sizeof(T) > (vd)->device_cfg_len)  \
			return 0;                                                       \
		for (int tries = 0; tries < 8; tries++) {                               \
			uint8_t g = r8((vd)->common + CC_CFG_GENERATION);               \
			v = rd;                                                         \
			if (r8((vd)->common + CC_CFG_GENERATION) == g)                  \
				break;                                                  \
		}                                                                       \
		return v;                                                               \
	} while (0)

uint8_t virtio_cfg8(const struct virtio_dev *vd, unsigned off)
{
	CFG_READ(uint8_t, vd, off, r8(vd->device_cfg + off));
}

uint16_t virtio_cfg16(const struct virtio_dev *vd, unsigned off)
{
	CFG_READ(uint16_t, vd, off, r16(vd->device_cfg + off));
}

uint32_t virtio_cfg32(const struct virtio_dev *vd, unsigned off)
{
	CFG_READ(uint32_t, vd, off, mmio_read32(vd->device_cfg + off));
}

uint64_t virtio_cfg64(const struct virtio_dev *vd, unsigned off)
{
	/* Two 32-bit reads: the spec lets the driver split 64-bit fields. */
	CFG_READ(uint64_t, vd, off,
		 mmio_read32(vd->device_cfg + off) | (uint64_t)mmio_read32(vd->device_cfg + off + 4) << 32);
}

/* ---- virtqueues ---- */
static void write64(uintptr_t a, uint64_t v)
{
	mmio_write32(a, (uint32_t)v);
	mmio_write32(a + 4, (uint32_t)(v >> 32));
}

int virtio_queue_setup(struct virtio_dev *vd, struct virtq *q, uint16_t index, uint16_t want, uint16_t msix_vector)
{
	memset(q, 0, sizeof(*q));
	w16(vd->common + CC_Q_SELECT, index);
	uint16_t max = r16(vd->common + CC_Q_SIZE);
	if (max == 0) {
		kit_printf("virtio: queue %u does not exist\n", index);
		return -1;
	}
	uint16_t size = want < max ? want : max;
	if (size > VIRTQ_MAX_SIZE)
		size = VIRTQ_MAX_SIZE;
	/* Split rings need a power of two. */
	while (size & (size - 1))
		size &= (uint16_t)(size - 1);
	q->index = index;
	q->size = size;
	q->indirect = (vd->features >> VIRTIO_F_RING_INDIRECT_DESC) & 1;
	q->event_idx = (vd->features >> VIRTIO_F_RING_EVENT_IDX) & 1;
	q->desc = virtio_alloc(16u * size, 4096);
	q->avail = virtio_alloc(6u + 2u * size, 4096);
	q->used = virtio_alloc(6u + 8u * size, 4096);
	if (q->indirect)
		q->indirect_tables = virtio_alloc(sizeof(struct virtq_desc) * VIRTQ_MAX_SG * size, 16);
	if (!q->desc || !q->avail || !q->used || (q->indirect && !q->indirect_tables)) {
		kit_printf("virtio: out of ring memory\n");
		return -1;
	}
	for (uint16_t i = 0; i < size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->free_head = 0;
	q->num_free = size;
	w16(vd->common + CC_Q_SIZE, size);
	write64(vd->common + CC_Q_DESC, (uintptr_t)q->desc);
	write64(vd->common + CC_Q_DRIVER, (uintptr_t)q->avail);
	write64(vd->common + CC_Q_DEVICE, (uintptr_t)q->used);
	if (msix_vector != VIRTIO_NO_VECTOR || vd->have_msix) {
		w16(vd->common + CC_Q_MSIX, msix_vector);
		if (r16(vd->common + CC_Q_MSIX) != msix_vector) {
			kit_printf("virtio: queue %u refused MSI-X vector %u\n", index, msix_vector);
			return -1;
		}
	}
	uint16_t noff = r16(vd->common + CC_Q_NOTIFY_OFF);
	uint64_t na = (uint64_t)noff * vd->notify_mult;
	q->notify = (volatile uint16_t *)(vd->notify_base + (uintptr_t)na);
	w16(vd->common + CC_Q_ENABLE, 1);
	virtq_interrupts(q, msix_vector != VIRTIO_NO_VECTOR);
	return 0;
}

static volatile uint16_t *used_event(struct virtq *q)
{
	return &q->avail->ring[q->size];
}

static volatile uint16_t *avail_event(struct virtq *q)
{
	return (volatile uint16_t *)&q->used->ring[q->size];
}

void virtq_interrupts(struct virtq *q, bool on)
{
	q->irq_on = on;
	if (q->event_idx) {
		/* Far behind: the device's "crossed used_event" test stays false
		 * for 32K completions; on: interrupt at the next one. */
		*used_event(q) = on ? q->last_used : (uint16_t)(q->last_used - 0x8000);
	} else {
		q->avail->flags = on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
	}
	full_fence();
}

int virtq_add(struct virtq *q, const struct virtq_sg *sg, unsigned n_out, unsigned n_in, void *token)
{
	unsigned n = n_out + n_in;
	if (n == 0 || n > VIRTQ_MAX_SG)
		return -1;
	bool use_indirect = q->indirect && n > 1;
	unsigned need = use_indirect ? 1 : n;
	if (q->num_free < need)
		return -1;
	uint16_t head = q->free_head;
	if (use_indirect) {
		struct virtq_desc *t = q->indirect_tables + (size_t)head * VIRTQ_MAX_SG;
		for (unsigned i = 0; i < n; i++) {
			t[i].addr = (uintptr_t)sg[i].addr;
			t[i].len = sg[i].len;
			t[i].flags = (uint16_t)((i >= n_out ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
			t[i].next = (uint16_t)(i + 1 < n ? i + 1 : 0);
		}
		struct virtq_desc *d = &q->desc[head];
		q->free_head = d->next;
		d->addr = (uintptr_t)t;
		d->len = (uint32_t)(n * sizeof(struct virtq_desc));
		d->flags = VIRTQ_DESC_F_INDIRECT;
	} else {
		uint16_t idx = head, last = head;
		for (unsigned i = 0; i < n; i++) {
			struct virtq_desc *d = &q->desc[idx];
			d->addr = (uintptr_t)sg[i].addr;
			d->len = sg[i].len;
			d->flags = (uint16_t)((i >= n_out ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
			last = idx;
			idx = d->next;
		}
		(void)last;
		q->free_head = idx;
	}
	q->num_free = (uint16_t)(q->num_free - need);
	q->token[head] = token;
	q->avail->ring[q->avail_idx & (q->size - 1)] = head;
	barrier();   /* x86 keeps stores in order; the compiler must too */
	q->avail_idx++;
	*(volatile uint16_t *)&q->avail->idx = q->avail_idx;
	return 0;
}

void virtq_kick(struct virtq *q)
{
	full_fence();   /* publish avail->idx before reading the device's suppression state */
	uint16_t new_idx = q->avail_idx, old_idx = q->kicked_idx;
	bool notify;
	if (q->event_idx) {
		uint16_t ev = *avail_event(q);
		notify = (uint16_t)(new_idx - ev - 1) < (uint16_t)(new_idx - old_idx);
	} else {
		notify = !(q->used->flags & VIRTQ_USED_F_NO_NOTIFY);
	}
	q->kicked_idx = new_idx;
	if (notify) {
		*q->notify = q->index;
		q->kicks++;
	} else {
		q->kicks_suppressed++;
	}
}

bool virtq_has_used(const struct virtq *q)
{
	return q->used->idx != q->last_used;
}

void *virtq_get(struct virtq *q, uint32_t *len)
{
	if (q->used->idx == q->last_used)
		return NULL;
	barrier();   /* read the element after seeing the index */
	volatile struct virtq_used_elem *e = &q->used->ring[q->last_used & (q->size - 1)];
	uint32_t id = e->id;
	uint32_t l = e->len;
	q->last_used++;
	if (q->event_idx && q->irq_on)
		*used_event(q) = q->last_used;
	if (id >= q->size || q->token[id] == NULL)
		return VIRTQ_BAD_USED;
	void *token = q->token[id];
	q->token[id] = NULL;
	/* Return the chain to the free list. */
	uint16_t idx = (uint16_t)id;
	unsigned count = 1;
	while ((q->desc[idx].flags & VIRTQ_DESC_F_NEXT) && count < q->size) {
		idx = q->desc[idx].next;
		count++;
	}
	q->desc[idx].next = q->free_head;
	q->free_head = (uint16_t)id;
	q->num_free = (uint16_t)(q->num_free + count);
	if (len)
		*len = l;
	return token;
}

void *virtq_wait(struct virtq *q, uint32_t *len, uint64_t cycles)
{
	uint64_t t0 = rdtsc();
	for (;;) {
		void *t = virtq_get(q, len);
		if (t)
			return t;
		if (rdtsc() - t0 > cycles)
			return NULL;
		cpu_relax();
	}
}
