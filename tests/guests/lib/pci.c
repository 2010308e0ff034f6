/* Guest PCI library (see pci.h). Every config access is two port exits, so
 * the code reads only what it needs. */
#include "pci.h"

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2c

/* Window used for BARs nobody assigned: inside both vmsvc's hole (from
 * 0xc0000000) and QEMU pc's, below the IOAPIC/LAPIC pages and clear of the
 * area SeaBIOS fills top-down from 0xfe000000 and of q35's ECAM. */
#define PCI_ALLOC_MEM_START 0xe0000000u
#define PCI_ALLOC_MEM_END 0xf0000000u
#define PCI_ALLOC_IO_START 0x6000u
#define PCI_ALLOC_IO_END 0x8000u

static uint32_t alloc_mem_next = PCI_ALLOC_MEM_START;
static uint32_t alloc_io_next = PCI_ALLOC_IO_START;

static void cfg_select(const struct pci_dev *d, unsigned off)
{
	outl(PCI_CONFIG_ADDR, 0x80000000u | ((uint32_t)d->bus << 16) | ((uint32_t)d->dev << 11) |
					  ((uint32_t)d->fn << 8) | (off & 0xfc));
}

uint32_t pci_cfg_read32(const struct pci_dev *d, unsigned off)
{
	cfg_select(d, off);
	return inl(PCI_CONFIG_DATA);
}

uint16_t pci_cfg_read16(const struct pci_dev *d, unsigned off)
{
	cfg_select(d, off);
	return inw((uint16_t)(PCI_CONFIG_DATA + (off & 2)));
}

uint8_t pci_cfg_read8(const struct pci_dev *d, unsigned off)
{
	cfg_select(d, off);
	return inb((uint16_t)(PCI_CONFIG_DATA + (off & 3)));
}

void pci_cfg_write32(const struct pci_dev *d, unsigned off, uint32_t v)
{
	cfg_select(d, off);
	outl(PCI_CONFIG_DATA, v);
}

void pci_cfg_write16(const struct pci_dev *d, unsigned off, uint16_t v)
{
	cfg_select(d, off);
	outw((uint16_t)(PCI_CONFIG_DATA + (off & 2)), v);
}

void pci_cfg_write8(const struct pci_dev *d, unsigned off, uint8_t v)
{
	cfg_select(d, off);
	outb((uint16_t)(PCI_CONFIG_DATA + (off & 3)), v);
}

int pci_scan_bus0(bool (*fn)(const struct pci_dev *d, void *ctx), void *ctx)
{
	for (unsigned dev = 0; dev < 32; dev++) {
		unsigned nfn = 1;
		for (unsigned f = 0; f < nfn; f++) {
			struct pci_dev d = { .bus = 0, .dev = (uint8_t)dev, .fn = (uint8_t)f };
			uint32_t id = pci_cfg_read32(&d, 0);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
				continue;
			d.vendor = (uint16_t)id;
			d.device = (uint16_t)(id >> 16);
			uint32_t cls = pci_cfg_read32(&d, 0x08);
			d.class_code = (uint8_t)(cls >> 24);
			d.subclass = (uint8_t)(cls >> 16);
			d.header_type = (uint8_t)(pci_cfg_read32(&d, 0x0c) >> 16);
			if (f == 0 && (d.header_type & 0x80))
				nfn = 8;
			if ((d.header_type & 0x7f) == 0) {
				uint32_t ss = pci_cfg_read32(&d, PCI_SUBSYS_VENDOR);
				d.subsys_vendor = (uint16_t)ss;
				d.subsys_id = (uint16_t)(ss >> 16);
			}
			if (fn(&d, ctx))
				return 1;
		}
	}
	return 0;
}

struct find_ctx {
	uint16_t vendor, a, b;
	struct pci_dev *out;
};

static bool find_cb(const struct pci_dev *d, void *ctx)
{
	struct find_ctx *c = ctx;
	if (d->vendor != c->vendor || (d->device != c->a && d->device != c->b))
		return false;
	*c->out = *d;
	return true;
}

int pci_find(uint16_t vendor, uint16_t device_a, uint16_t device_b, struct pci_dev *out)
{
	struct find_ctx c = { vendor, device_a, device_b, out };
	return pci_scan_bus0(find_cb, &c) ? 0 : -1;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Sizing writes all-ones, which would move a decoding BAR over arbitrary
 * addresses: decoding is off while it happens (the caller restores it). */
int pci_setup_bars(struct pci_dev *d)
{
	if ((d->header_type & 0x7f) != 0)
		return -1;
	uint16_t cmd = pci_cfg_read16(d, PCI_COMMAND);
	pci_cfg_write16(d, PCI_COMMAND, (uint16_t)(cmd & ~(PCI_CMD_IO | PCI_CMD_MEM)));
	int rc = 0;
	for (unsigned i = 0; i < PCI_MAX_BARS; i++) {
		unsigned off = PCI_BAR0 + 4 * i;
		uint32_t orig = pci_cfg_read32(d, off);
		pci_cfg_write32(d, off, 0xffffffffu);
		uint32_t mask = pci_cfg_read32(d, off);
		pci_cfg_write32(d, off, orig);
		d->bar[i] = 0;
		d->bar_size[i] = 0;
		d->bar_io[i] = false;
		d->bar_64[i] = false;
		if (mask == 0 || mask == 0xffffffffu)
			continue;
		if (orig & 1) {
			d->bar_io[i] = true;
			uint32_t m = mask & ~3u;
			d->bar_size[i] = (uint16_t)(~m + 1);
			d->bar[i] = orig & ~3u;
			if (d->bar[i] == 0 && d->bar_size[i]) {
				uint32_t base = (uint32_t)align_up(alloc_io_next, d->bar_size[i]);
				if (base + d->bar_size[i] > PCI_ALLOC_IO_END) {
					rc = -1;
					continue;
				}
				alloc_io_next = base + (uint32_t)d->bar_size[i];
				pci_cfg_write32(d, off, base);
				d->bar[i] = base;
			}
			continue;
		}
		bool is64 = ((orig >> 1) & 3) == 2 && i + 1 < PCI_MAX_BARS;
		uint64_t base = orig & ~0xfu;
		uint64_t m = mask & ~0xfu;
		if (is64) {
			uint32_t hi = pci_cfg_read32(d, off + 4);
			pci_cfg_write32(d, off + 4, 0xffffffffu);
			uint32_t mhi = pci_cfg_read32(d, off + 4);
			pci_cfg_write32(d, off + 4, hi);
			base |= (uint64_t)hi << 32;
			m |= (uint64_t)mhi << 32;
		} else {
			m |= 0xffffffff00000000ULL;
		}
		uint64_t size = ~m + 1;
		d->bar_64[i] = is64;
		d->bar_size[i] = size;
		if (size == 0 || size > 0x10000000u) {
			rc = -1;
		} else if (base == 0 || base + size > 0xfec00000u) {
			/* Unassigned, or out of the kit's 4 GiB identity map: place it. */
			uint64_t nb = align_up(alloc_mem_next, size);
			if (nb + size > PCI_ALLOC_MEM_END) {
				rc = -1;
			} else {
				alloc_mem_next = (uint32_t)(nb + size);
				kit_printf("pci %02x:%02x.%x: BAR%u %lx -> %lx (size %lx)\n", d->bus, d->dev, d->fn, i,
					   base, nb, size);
				pci_cfg_write32(d, off, (uint32_t)nb | (orig & 0xfu));
				if (is64)
					pci_cfg_write32(d, off + 4, 0);
				base = nb;
			}
		}
		d->bar[i] = base;
		if (is64)
			i++;   /* the high half is not a BAR of its own */
	}
	pci_cfg_write16(d, PCI_COMMAND, cmd);
	return rc;
}

void pci_clear_bars(const struct pci_dev *d)
{
	uint16_t cmd = pci_cfg_read16(d, PCI_COMMAND);
	pci_cfg_write16(d, PCI_COMMAND, (uint16_t)(cmd & ~(PCI_CMD_IO | PCI_CMD_MEM)));
	for (unsigned i = 0; i < PCI_MAX_BARS; i++)
		pci_cfg_write32(d, PCI_BAR0 + 4 * i, 0);
}

void pci_enable(const struct pci_dev *d)
{
	uint16_t cmd = pci_cfg_read16(d, PCI_COMMAND);
	cmd |= PCI_CMD_MEM | PCI_CMD_MASTER | PCI_CMD_INTX_DISABLE;
	for (unsigned i = 0; i < PCI_MAX_BARS; i++)
		if (d->bar_io[i] && d->bar[i])
			cmd |= PCI_CMD_IO;
	pci_cfg_write16(d, PCI_COMMAND, cmd);
}

unsigned pci_find_cap(const struct pci_dev *d, uint8_t id, unsigned after)
{
	if (!(pci_cfg_read16(d, PCI_STATUS) & PCI_STATUS_CAPS))
		return 0;
	unsigned off = after ? (pci_cfg_read8(d, after + 1) & 0xfc) : (pci_cfg_read8(d, PCI_CAP_PTR) & 0xfc);
	/* 48 = at most (256 - 64) / 4 capabilities: a looping list ends here. */
	for (unsigned n = 0; off >= 0x40 && n < 48; n++) {
		uint16_t hdr = pci_cfg_read16(d, off);
		if ((hdr & 0xff) == id)
			return off;
		off = (hdr >> 8) & 0xfc;
	}
	return 0;
}

#define MSIX_CTRL 2
#define MSIX_TABLE 4
#define MSIX_CTRL_ENABLE 0x8000u
#define MSIX_CTRL_FMASK 0x4000u

int pci_msix_init(const struct pci_dev *d, struct pci_msix *m)
{
	unsigned cap = pci_find_cap(d, PCI_CAP_ID_MSIX, 0);
	if (!cap)
		return -1;
	uint16_t ctrl = pci_cfg_read16(d, cap + MSIX_CTRL);
	uint32_t tbl = pci_cfg_read32(d, cap + MSIX_TABLE);
	unsigned bir = tbl & 7;
	if (bir >= PCI_MAX_BARS || d->bar_io[bir] || d->bar[bir] == 0)
		return -1;
	m->cap = cap;
	m->entries = (ctrl & 0x7ffu) + 1;
	m->table = (uintptr_t)(d->bar[bir] + (tbl & ~7u));
	if ((tbl & ~7u) + 16ULL * m->entries > d->bar_size[bir])
		return -1;
	return 0;
}

void pci_msix_set(const struct pci_msix *m, unsigned entry, uint8_t vector, uint8_t apic_id)
{
	if (entry >= m->entries)
		return;
	uintptr_t e = m->table + 16 * entry;
	mmio_write32(e + 12, 1);    /* masked while it changes */
	mmio_write32(e + 0, LAPIC_BASE | ((uint32_t)apic_id << 12));
	mmio_write32(e + 4, 0);
	mmio_write32(e + 8, vector);   /* fixed delivery, edge */
	mmio_write32(e + 12, 0);
}

void pci_msix_mask(const struct pci_msix *m, unsigned entry, bool masked)
{
	if (entry < m->entries)
		mmio_write32(m->table + 16 * entry + 12, masked ? 1 : 0);
}

void pci_msix_enable(const struct pci_dev *d, const struct pci_msix *m, bool on)
{
	uint16_t ctrl = pci_cfg_read16(d, m->cap + MSIX_CTRL);
	ctrl &= (uint16_t)~MSIX_CTRL_FMASK;
	if (on)
		ctrl |= MSIX_CTRL_ENABLE;
	else
		ctrl &= (uint16_t)~MSIX_CTRL_ENABLE;
	pci_cfg_write16(d, m->cap + MSIX_CTRL, ctrl);
}
