/* PCI configuration through ECAM: find the ACPI MCFG table (RSDP -> XSDT/RSDT),
 * then, on the MCFG's first bus, require every present function's 256 bytes of
 * configuration space to read the same through ECAM as through 0xcf8/0xcfc
 * (dwords, plus word and byte reads), an absent slot to read all-ones, a BAR to
 * size through ECAM, and an ECAM write to be seen by type-1.
 *
 * No MCFG (QEMU -M pc): the ECAM part is skipped and the guest passes after the
 * type-1 scan, unless MCFG is required: "ecam.require=1", or the tables are
 * vmsvc's (RSDP OEM ID "VMSVC "), which always provide one. */
#include "lib/pci.h"

#define PCI_BAR0 0x10
#define PCI_INTERRUPT_LINE 0x3c

static uintptr_t ecam_base;

static uintptr_t ecam(const struct pci_dev *d, unsigned reg)
{
	return ecam_base + ((uintptr_t)d->bus << 20 | (uintptr_t)d->dev << 15 | (uintptr_t)d->fn << 12 | reg);
}
static uint32_t ecam_read32(const struct pci_dev *d, unsigned reg) { return mmio_read32(ecam(d, reg)); }
static uint16_t ecam_read16(const struct pci_dev *d, unsigned reg) { return *(volatile uint16_t *)ecam(d, reg); }
static uint8_t ecam_read8(const struct pci_dev *d, unsigned reg) { return *(volatile uint8_t *)ecam(d, reg); }
static void ecam_write32(const struct pci_dev *d, unsigned reg, uint32_t v) { mmio_write32(ecam(d, reg), v); }
static void ecam_write16(const struct pci_dev *d, unsigned reg, uint16_t v) { *(volatile uint16_t *)ecam(d, reg) = v; }
static void ecam_write8(const struct pci_dev *d, unsigned reg, uint8_t v) { *(volatile uint8_t *)ecam(d, reg) = v; }

struct scan {
	unsigned functions;
	uint32_t present;         /* slots with function 0 present */
	struct pci_dev bar_dev;   /* a type-0 function with a memory BAR (not the host bridge) */
	unsigned bar_off;
	bool have_bar;
};

static bool compare_function(const struct pci_dev *d, void *opaque)
{
	struct scan *s = opaque;
	for (unsigned off = 0; off < 256; off += 4) {
		uint32_t t = pci_cfg_read32(d, off), e = ecam_read32(d, off);
		if (t != e)
			kit_fail("%02x:%02x.%u offset 0x%x: type-1 0x%x, ECAM 0x%x", d->bus, d->dev, d->fn, off, t, e);
	}
	if (ecam_read16(d, 0) != d->vendor || ecam_read16(d, 2) != d->device)
		kit_fail("%02x:%02x.%u: ECAM word reads of the ids differ", d->bus, d->dev, d->fn);
	if (ecam_read8(d, 0x0b) != d->class_code || ecam_read8(d, 0x0a) != d->subclass)
		kit_fail("%02x:%02x.%u: ECAM byte reads of the class differ", d->bus, d->dev, d->fn);
	kit_printf("ecam: %02x:%02x.%u %04x:%04x class %02x%02x: 256 bytes match\n", d->bus, d->dev, d->fn, d->vendor,
		   d->device, d->class_code, d->subclass);
	s->functions++;
	if (d->fn == 0)
		s->present |= 1u << d->dev;
	if (!s->have_bar && d->dev != 0 && (d->header_type & 0x7f) == 0)
		for (unsigned i = 0; i < 6; i++) {
			uint32_t bar = pci_cfg_read32(d, PCI_BAR0 + 4 * i);
			if (bar && !(bar & 1)) {
				s->bar_dev = *d;
				s->bar_off = PCI_BAR0 + 4 * i;
				s->have_bar = true;
				break;
			}
			if ((bar & 7) == 4)
				i++;   /* upper half of a 64-bit BAR */
		}
	return false;
}

/* Size a memory BAR with ECAM writes (decode off meanwhile), put it back. */
static void size_bar(const struct scan *s)
{
	const struct pci_dev *d = &s->bar_dev;
	uint16_t cmd = ecam_read16(d, PCI_COMMAND);
	uint32_t old = ecam_read32(d, s->bar_off);
	ecam_write16(d, PCI_COMMAND, (uint16_t)(cmd & ~(PCI_CMD_MEM | PCI_CMD_IO)));
	ecam_write32(d, s->bar_off, 0xffffffffu);
	uint32_t e = ecam_read32(d, s->bar_off), t = pci_cfg_read32(d, s->bar_off);
	ecam_write32(d, s->bar_off, old);
	ecam_write16(d, PCI_COMMAND, cmd);
	if (e != t)
		kit_fail("BAR sizing: ECAM reads 0x%x, type-1 0x%x", e, t);
	uint32_t mask = e & ~0xfu;
	if (!mask || (e & 0xf) != (old & 0xf))
		kit_fail("BAR sizing: 0x%x after writing all-ones (was 0x%x)", e, old);
	if (pci_cfg_read32(d, s->bar_off) != old || pci_cfg_read16(d, PCI_COMMAND) != cmd)
		kit_fail("BAR/COMMAND not restored");
	kit_printf("ecam: %02x:%02x.%u BAR at 0x%x sized through ECAM: %u bytes\n", d->bus, d->dev, d->fn,
		   s->bar_off, ~mask + 1);
	/* A write through ECAM, read through type-1 (and the other way). */
	uint8_t line = pci_cfg_read8(d, PCI_INTERRUPT_LINE);
	ecam_write8(d, PCI_INTERRUPT_LINE, 0x5a);
	uint8_t got = pci_cfg_read8(d, PCI_INTERRUPT_LINE);
	pci_cfg_write8(d, PCI_INTERRUPT_LINE, 0xa5);
	uint8_t got2 = ecam_read8(d, PCI_INTERRUPT_LINE);
	pci_cfg_write8(d, PCI_INTERRUPT_LINE, line);
	if (got != 0x5a || got2 != 0xa5)
		kit_fail("interrupt line: ECAM write 0x5a read 0x%x through type-1; type-1 write 0xa5 read 0x%x", got,
			 got2);
}

/* Is [base, base+len) inside a reserved entry of the boot memory map? */
static bool memmap_reserved(uint64_t base, uint64_t len)
{
	const struct hvm_start_info *si = kit_start_info;
	if (!si || !si->memmap_paddr || si->memmap_entries > 128)
		return false;
	const struct { uint64_t addr, size; uint32_t type, reserved; } *e = (const void *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++)
		if (e[i].type == 2 && e[i].addr <= base && base + len <= e[i].addr + e[i].size)
			return true;
	return false;
}

int kit_main(void)
{
	const uint8_t *rsdp = kit_acpi_rsdp();
	bool vmsvc = rsdp && memcmp(rsdp + 9, "VMSVC ", 6) == 0;
	bool require = kit_cmdline_ulong("ecam.require", 0) != 0 || vmsvc;
	const uint8_t *mcfg = kit_acpi_table("MCFG");
	uint32_t len = 0;
	if (mcfg)
		memcpy(&len, mcfg + 4, 4);
	if (!mcfg || len < 44 + 16) {
		if (require)
			kit_fail("no MCFG table (RSDP %s)", rsdp ? "found" : "not found");
		kit_printf("ecam: no MCFG table: ECAM checks skipped\n");
		struct pci_dev host = { 0 };
		if (pci_cfg_read16(&host, 0) == 0xffff)
			kit_fail("no host bridge at 00:00.0 through type-1");
		return 0;
	}
	/* First allocation for segment 0 (the only one type-1 reaches). */
	uint64_t base = 0;
	unsigned start_bus = 0, end_bus = 0;
	bool found = false;
	for (uint32_t off = 44; off + 16 <= len && !found; off += 16) {
		uint16_t seg;
		memcpy(&seg, mcfg + off + 8, 2);
		if (seg != 0)
			continue;
		memcpy(&base, mcfg + off, 8);
		start_bus = mcfg[off + 10];
		end_bus = mcfg[off + 11];
		found = true;
	}
	if (!found || end_bus < start_bus)
		kit_fail("MCFG has no sane allocation for segment 0");
	/* Bus b's config space starts at base + (b << 20) (base is for bus 0). */
	uint64_t lo = base + ((uint64_t)start_bus << 20), hi = base + ((uint64_t)(end_bus + 1) << 20);
	kit_printf("ecam: MCFG: base 0x%lx, buses %u-%u (%s in the boot memory map)\n", (unsigned long)base, start_bus,
		   end_bus, memmap_reserved(lo, hi - lo) ? "reserved" : "not reserved");
	if (vmsvc && !memmap_reserved(lo, hi - lo))
		kit_fail("vmsvc's ECAM window is not reserved in the memory map");
	if (hi > 0x100000000ULL || base >= 0x100000000ULL) {
		if (require)
			kit_fail("ECAM above 4 GiB, which the kit does not map");
		kit_printf("ecam: window above 4 GiB: ECAM checks skipped\n");
		return 0;
	}
	if (start_bus != 0)
		kit_fail("ECAM starts at bus %u: bus 0 not covered", start_bus);
	ecam_base = (uintptr_t)base;
	struct scan s = { 0 };
	pci_scan_bus0(compare_function, &s);
	if (!(s.present & 1))
		kit_fail("no host bridge at 00:00.0");
	for (unsigned dev = 0; dev < 32; dev++)
		if (!(s.present & (1u << dev))) {
			struct pci_dev d = { .bus = 0, .dev = (uint8_t)dev };
			if (ecam_read32(&d, 0) != 0xffffffffu)
				kit_fail("absent slot %u reads 0x%x through ECAM", dev, ecam_read32(&d, 0));
			kit_printf("ecam: absent slot %u reads all-ones\n", dev);
			break;
		}
	if (s.have_bar)
		size_bar(&s);
	else
		kit_printf("ecam: no device with a memory BAR: sizing not tested\n");
	kit_printf("ecam: %u functions compared\n", s.functions);
	return 0;
}
