/* PCI INTx routed the way the MP table says: find the MP table (floating
 * pointer in the EBDA or 0xf0000-0xfffff), the PCI bus and IOAPIC entries, and
 * the I/O interrupt entry for the virtio-rng device's slot and INTx pin; route
 * that IOAPIC pin (level-triggered, the entry's polarity), turn MSI-X off and
 * INTx on, and require every entropy request to complete with an interrupt on
 * that pin (the handler reads the ISR, which drops the line, then EOIs).
 * A LAPIC-timer watchdog turns a lost interrupt into a failure. */
#include "lib/virtio.h"

#define READS 3
#define BUF_LEN 32
#define VEC_INTX 0x60
#define VEC_WATCHDOG 0x61
#define WATCHDOG_TICKS 300      /* 10 ms each */
#define PCI_INTERRUPT_PIN 0x3d

static struct virtio_dev vd;
static volatile unsigned intx_irqs, spurious, watchdog_ticks;

static void on_intx(struct kit_frame *f)
{
	(void)f;
	/* Reading the ISR deasserts the line; EOI only after that, or a
	 * level-triggered pin fires again at once. */
	if (virtio_isr_read(&vd) & 1)
		intx_irqs++;
	else
		spurious++;
	lapic_eoi();
}

static void on_watchdog(struct kit_frame *f)
{
	(void)f;
	watchdog_ticks++;
	lapic_eoi();
}

static uint8_t sum8(const uint8_t *p, unsigned n)
{
	uint8_t s = 0;
	while (n--)
		s += *p++;
	return s;
}

static const uint8_t *scan_mp(uint32_t start, uint32_t len)
{
	for (uint32_t a = start; a + 16 <= start + len; a += 16) {
		const uint8_t *p = (const uint8_t *)(uintptr_t)a;
		if (memcmp(p, "_MP_", 4) == 0 && p[8] == 1 && sum8(p, 16) == 0)
			return p;
	}
	return NULL;
}

/* The MP configuration table (checksummed), or NULL. */
static const uint8_t *mp_config(void)
{
	uintptr_t bda = 0x40e;   /* BIOS data area: EBDA segment */
	__asm__("" : "+r"(bda)); /* an address, not a null-page constant, to the compiler */
	uint32_t ebda = (uint32_t)*(volatile uint16_t *)bda << 4;
	const uint8_t *fp = NULL;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		fp = scan_mp(ebda, 1024);
	if (!fp)
		fp = scan_mp(0x9fc00, 1024);
	if (!fp)
		fp = scan_mp(0xf0000, 0x10000);
	if (!fp)
		return NULL;
	uint32_t cfg;
	memcpy(&cfg, fp + 4, 4);
	if (cfg < 0x1000 || cfg >= 0x100000)
		return NULL;
	const uint8_t *t = (const uint8_t *)(uintptr_t)cfg;
	uint16_t len;
	memcpy(&len, t + 4, 2);
	if (memcmp(t, "PCMP", 4) != 0 || len < 44 || cfg + len > 0x100000 || sum8(t, len) != 0)
		return NULL;
	return t;
}

struct route {
	bool found;
	unsigned pin;          /* IOAPIC input */
	uint16_t flags;
	uint32_t ioapic_addr;
};

/* The I/O interrupt entry for PCI bus 0, this slot and INTx pin (1 = INTA). */
static struct route mp_route(const uint8_t *t, unsigned slot, unsigned intx_pin)
{
	struct route r = { 0 };
	uint16_t len, count;
	memcpy(&len, t + 4, 2);
	memcpy(&count, t + 34, 2);
	int pci_bus = -1;
	uint8_t ioapic_id = 0xff;
	uint32_t ioapic_addr = 0;
	/* Two passes: bus and IOAPIC entries may follow the interrupt entries. */
	for (unsigned pass = 0; pass < 2; pass++) {
		uint32_t off = 44;
		for (unsigned n = 0; n < count && off < len; n++) {
			const uint8_t *e = t + off;
			unsigned elen = e[0] == 0 ? 20 : 8;
			if (off + elen > len)
				kit_fail("MP entry %u (type %u) runs past the table", n, e[0]);
			if (pass == 0 && e[0] == 1 && memcmp(e + 2, "PCI", 3) == 0 && pci_bus < 0)
				pci_bus = e[1];   /* the first PCI bus: bus 0 */
			if (pass == 0 && e[0] == 2 && (e[3] & 1)) {
				ioapic_id = e[1];
				memcpy(&ioapic_addr, e + 4, 4);
			}
			if (pass == 1 && e[0] == 3 && e[1] == 0 && (int)e[4] == pci_bus &&
			    e[5] == (slot << 2 | (intx_pin - 1))) {
				if (e[6] != ioapic_id && e[6] != 0xff)
					kit_fail("MP: slot %u INT%c goes to IOAPIC id %u, the table's IOAPIC is %u", slot,
						 'A' + intx_pin - 1, e[6], ioapic_id);
				r.found = true;
				r.pin = e[7];
				memcpy(&r.flags, e + 2, 2);
				r.ioapic_addr = ioapic_addr;
				return r;
			}
			off += elen;
		}
		if (pass == 0 && pci_bus < 0)
			kit_fail("MP table has no PCI bus entry");
	}
	return r;
}

int kit_main(void)
{
	const uint8_t *t = mp_config();
	if (!t)
		kit_fail("no MP table");
	if (virtio_open(VIRTIO_ID_RNG, &vd) != 0)
		kit_fail("no virtio-rng device");
	unsigned intx_pin = pci_cfg_read8(&vd.pci, PCI_INTERRUPT_PIN);
	if (intx_pin < 1 || intx_pin > 4)
		kit_fail("virtio-rng has no INTx pin (%u)", intx_pin);
	struct route r = mp_route(t, vd.pci.dev, intx_pin);
	if (!r.found)
		kit_fail("MP table has no interrupt entry for slot %u INT%c", vd.pci.dev, 'A' + intx_pin - 1);
	/* PCI defaults ("conforms to the bus"): level, active low. */
	unsigned pol = r.flags & 3, trig = (r.flags >> 2) & 3;
	bool active_low = pol == 0 || pol == 3;
	if (trig == 1)
		kit_fail("MP table says slot %u INTx is edge-triggered (flags 0x%x)", vd.pci.dev, r.flags);
	if (r.pin >= 24 || r.ioapic_addr != IOAPIC_BASE)
		kit_fail("MP route to IOAPIC pin %u at 0x%x", r.pin, r.ioapic_addr);
	kit_printf("intx: slot %u INT%c -> IOAPIC pin %u, flags 0x%x (MP table)\n", vd.pci.dev, 'A' + intx_pin - 1,
		   r.pin, r.flags);

	if (virtio_negotiate(&vd, virtio_ring_features_wanted()) != 0)
		kit_fail("feature negotiation");
	if (vd.have_msix)
		pci_msix_enable(&vd.pci, &vd.msix, false);
	uint16_t cmd = pci_cfg_read16(&vd.pci, PCI_COMMAND);
	pci_cfg_write16(&vd.pci, PCI_COMMAND, (uint16_t)(cmd & ~PCI_CMD_INTX_DISABLE));
	struct virtq q;
	if (virtio_queue_setup(&vd, &q, 0, 8, VIRTIO_NO_VECTOR) != 0)
		kit_fail("queue set-up");
	virtq_interrupts(&q, true);
	virtio_driver_ok(&vd);
	kit_set_handler(VEC_INTX, on_intx);
	kit_set_handler(VEC_WATCHDOG, on_watchdog);
	lapic_enable();
	ioapic_route_level(r.pin, VEC_INTX, (uint8_t)lapic_id(), active_low, false);
	lapic_timer_periodic(VEC_WATCHDOG, 16, 625000);
	static uint8_t buf[BUF_LEN];
	for (unsigned i = 0; i < READS; i++) {
		memset(buf, 0, sizeof(buf));
		struct virtq_sg sg = { buf, sizeof(buf) };
		unsigned irqs0 = intx_irqs;
		if (virtq_add(&q, &sg, 0, 1, buf) != 0)
			kit_fail("virtq_add");
		virtq_kick(&q);
		watchdog_ticks = 0;
		irq_disable();
		while (intx_irqs == irqs0 && watchdog_ticks < WATCHDOG_TICKS)
			wait_for_interrupt();
		irq_disable();
		if (intx_irqs == irqs0)
			kit_fail("read %u: no INTx interrupt on IOAPIC pin %u (used %d, status 0x%x)", i, r.pin,
				 virtq_has_used(&q), virtio_status(&vd));
		uint32_t len = 0;
		void *tok = virtq_get(&q, &len);
		if (tok != buf || len == 0 || len > sizeof(buf))
			kit_fail("read %u: used ring gave %p, %u bytes", i, tok, len);
		kit_printf("intx: read %u: %u bytes, interrupt on pin %u\n", i, len, r.pin);
	}
	lapic_timer_stop();
	ioapic_route_level(r.pin, VEC_INTX, 0, active_low, true);
	virtio_reset(&vd);
	kit_printf("intx: %u interrupts, %u spurious\n", intx_irqs, spurious);
	return 0;
}
