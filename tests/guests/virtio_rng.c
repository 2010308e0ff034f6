/* virtio-rng: entropy requests completed through MSI-X interrupts (sti;hlt,
 * with a LAPIC-timer watchdog so a lost interrupt fails instead of hanging),
 * then, after a device reset, through polling with the other ring options.
 * Every read must return some bytes, not all zero, differing from the last.
 * Last, a descriptor outside guest RAM (NEEDS_RESET or a dropped request),
 * then reset and recovery. */
#include "lib/virtio.h"

#define READS 4
#define BUF_LEN 64
#define VEC_MSIX 0x50
#define VEC_WATCHDOG 0x51
#define WATCHDOG_TICKS 300      /* 10 ms each: 3 s per request */
#define POLL_CYCLES 10000000000ULL

static volatile unsigned msix_irqs, watchdog_ticks;
static uint8_t prev[BUF_LEN];
static uint32_t prev_len;

static void on_msix(struct kit_frame *f)
{
	(void)f;
	msix_irqs++;
	lapic_eoi();
}

static void on_watchdog(struct kit_frame *f)
{
	(void)f;
	watchdog_ticks++;
	lapic_eoi();
}

static void check_bytes(const uint8_t *buf, uint32_t len, unsigned round, unsigned i)
{
	if (len == 0 || len > BUF_LEN)
		kit_fail("round %u read %u: device wrote %u bytes (buffer %u)", round, i, len, BUF_LEN);
	bool nonzero = false;
	for (uint32_t k = 0; k < len; k++)
		nonzero |= buf[k] != 0;
	if (!nonzero)
		kit_fail("round %u read %u: %u bytes, all zero", round, i, len);
	uint32_t n = len < prev_len ? len : prev_len;
	if (n >= 8 && memcmp(buf, prev, n) == 0)
		kit_fail("round %u read %u: same %u bytes as the previous read", round, i, n);
	memcpy(prev, buf, len);
	prev_len = len;
	kit_printf("rng: round %u read %u: %u bytes %02x%02x%02x%02x%02x%02x%02x%02x...\n", round, i, len, buf[0],
		   buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7]);
}

static void round_irq(struct virtio_dev *vd, uint8_t *buf)
{
	struct virtq q;
	if (virtio_negotiate(vd, virtio_ring_features_wanted()) != 0)
		kit_fail("feature negotiation");
	if (!vd->have_msix)
		kit_fail("device has no MSI-X capability");
	if (virtio_msix_route(vd, 0, VEC_MSIX) != 0)
		kit_fail("MSI-X entry 0");
	if (virtio_queue_setup(vd, &q, 0, 8, 0) != 0)
		kit_fail("queue set-up");
	virtio_driver_ok(vd);
	lapic_timer_periodic(VEC_WATCHDOG, 16, 625000);   /* 10 ms at the 1 GHz APIC bus */
	for (unsigned i = 0; i < READS; i++) {
		memset(buf, 0, BUF_LEN);
		struct virtq_sg sg = { buf, BUF_LEN };
		unsigned irqs0 = msix_irqs;
		if (virtq_add(&q, &sg, 0, 1, buf) != 0)
			kit_fail("virtq_add");
		virtq_kick(&q);
		watchdog_ticks = 0;
		irq_disable();
		while (!virtq_has_used(&q) && watchdog_ticks < WATCHDOG_TICKS)
			wait_for_interrupt();   /* sti;hlt, then the IRQ returns with IF=1 */
		irq_disable();
		/* The used entry may land a moment before its interrupt. */
		while (msix_irqs == irqs0 && watchdog_ticks < WATCHDOG_TICKS)
			wait_for_interrupt();
		irq_disable();
		if (msix_irqs == irqs0)
			kit_fail("round 1 read %u: no MSI-X interrupt (used %d, status %x)", i, virtq_has_used(&q),
				 virtio_status(vd));
		uint32_t len = 0;
		void *t = virtq_get(&q, &len);
		if (t != buf)
			kit_fail("round 1 read %u: used ring returned %p, expected %p", i, t, buf);
		check_bytes(buf, len, 1, i);
	}
	lapic_timer_stop();
	if (virtio_needs_reset(vd))
		kit_fail("device signalled NEEDS_RESET");
	kit_printf("rng: round 1: %u MSI-X interrupts, %lu kicks (%lu suppressed)\n", msix_irqs, q.kicks,
		   q.kicks_suppressed);
}

static void round_poll(struct virtio_dev *vd, uint8_t *buf)
{
	struct virtq q;
	/* The ring options the first round did not use. */
	uint64_t ring = virtio_ring_features_wanted() ^
			((1ULL << VIRTIO_F_RING_INDIRECT_DESC) | (1ULL << VIRTIO_F_RING_EVENT_IDX));
	if (virtio_negotiate(vd, ring) != 0)
		kit_fail("feature negotiation after reset");
	if (vd->have_msix)
		pci_msix_mask(&vd->msix, 0, true);
	if (virtio_queue_setup(vd, &q, 0, 8, VIRTIO_NO_VECTOR) != 0)
		kit_fail("queue set-up after reset");
	virtio_driver_ok(vd);
	unsigned irqs0 = msix_irqs;
	for (unsigned i = 0; i < READS; i++) {
		memset(buf, 0, BUF_LEN);
		struct virtq_sg sg = { buf, BUF_LEN };
		if (virtq_add(&q, &sg, 0, 1, buf) != 0)
			kit_fail("virtq_add");
		virtq_kick(&q);
		uint32_t len = 0;
		void *t = virtq_wait(&q, &len, POLL_CYCLES);
		if (t == NULL)
			kit_fail("round 2 read %u: no completion (status %x)", i, virtio_status(vd));
		if (t != buf)
			kit_fail("round 2 read %u: used ring returned %p, expected %p", i, t, buf);
		check_bytes(buf, len, 2, i);
	}
	if (msix_irqs != irqs0)
		kit_fail("round 2: %u interrupts with no vector configured", msix_irqs - irqs0);
	if (virtio_needs_reset(vd))
		kit_fail("device signalled NEEDS_RESET");
	virtio_reset(vd);
}

/* A descriptor pointing far outside guest RAM: the device may flag
 * NEEDS_RESET, drop the request, or (QEMU: DMA to unassigned space is
 * discarded through a bounce buffer) complete it; it must not complete it
 * with an absurd length, and it must work again after a reset. */
static void round_hostile(struct virtio_dev *vd, uint8_t *buf)
{
	struct virtq q;
	if (virtio_negotiate(vd, 0) != 0)
		kit_fail("feature negotiation before the bad descriptor");
	if (virtio_queue_setup(vd, &q, 0, 8, VIRTIO_NO_VECTOR) != 0)
		kit_fail("queue set-up before the bad descriptor");
	virtio_driver_ok(vd);
	struct virtq_sg bad = { (const void *)0x7ffffffff000ULL, BUF_LEN };
	if (virtq_add(&q, &bad, 0, 1, &bad) != 0)
		kit_fail("virtq_add");
	virtq_kick(&q);
	uint32_t len = 0xffffffffu;
	void *t = NULL;
	uint64_t t0 = rdtsc();
	while (!virtio_needs_reset(vd) && !t && rdtsc() - t0 < 2000000000ULL)
		t = virtq_get(&q, &len);
	const char *outcome;
	if (virtio_needs_reset(vd))
		outcome = "NEEDS_RESET";
	else if (t == NULL)
		outcome = "request dropped";
	else if (t == &bad && len == 0)
		outcome = "completed with length 0";
	else if (t == &bad && len <= BUF_LEN)
		outcome = "completed (QEMU: bytes went to unassigned space)";
	else
		kit_fail("bad descriptor: completion %p with length %u", t, len);
	kit_printf("rng: descriptor outside RAM: %s\n", outcome);
	/* Recovery: reset, set up again, one good read. */
	if (virtio_negotiate(vd, 0) != 0)
		kit_fail("feature negotiation after the bad descriptor");
	if (virtio_needs_reset(vd))
		kit_fail("NEEDS_RESET survives a device reset");
	if (virtio_queue_setup(vd, &q, 0, 8, VIRTIO_NO_VECTOR) != 0)
		kit_fail("queue set-up after the bad descriptor");
	virtio_driver_ok(vd);
	memset(buf, 0, BUF_LEN);
	struct virtq_sg sg = { buf, BUF_LEN };
	if (virtq_add(&q, &sg, 0, 1, buf) != 0)
		kit_fail("virtq_add");
	virtq_kick(&q);
	t = virtq_wait(&q, &len, POLL_CYCLES);
	if (t != buf)
		kit_fail("no completion after reset (%p, status %x)", t, virtio_status(vd));
	check_bytes(buf, len, 3, 0);
	virtio_reset(vd);
}

int kit_main(void)
{
	struct virtio_dev vd;
	kit_set_handler(VEC_MSIX, on_msix);
	kit_set_handler(VEC_WATCHDOG, on_watchdog);
	lapic_enable();
	if (virtio_open(VIRTIO_ID_RNG, &vd) != 0)
		kit_fail("no virtio-rng device");
	uint8_t *buf = virtio_alloc(BUF_LEN, 64);
	if (!buf)
		kit_fail("out of memory");
	round_irq(&vd, buf);
	round_poll(&vd, buf);
	round_hostile(&vd, buf);
	return 0;
}
