/* PCI bus 0: type-1 and ECAM configuration access, BAR assignment and
 * (re)mapping, INTx, the bus's own saved state.
 * MSI-X lives in pci_msix.c. Layout and choices: docs/devices.md.
 *
 * Locks: bus->lock serializes configuration accesses (the 0xcf8 address latch and
 * everything a config write triggers: BAR remaps, MSI-X control changes, device
 * callbacks). dev->lock protects the config bytes and MSI-X/INTx state against
 * device threads. Order: bus->lock, then dev->lock, then the io bus lock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/vm.h>
#include "devices/pci_internal.h"

#define CONFIG_ADDRESS_PORT 0xcf8
#define CONFIG_DATA_PORT 0xcfc
#define CONFIG_ENABLE 0x80000000u
#define ECAM_FUNC_SIZE 4096u

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* ---- config bytes ---- */

void pci_config_set(struct pci_device *d, unsigned offset, const void *src, unsigned len)
{
	if (offset > PCI_CFG_SIZE || len > PCI_CFG_SIZE - offset)
		return;
	pthread_mutex_lock(&d->lock);
	memcpy(d->cfg + offset, src, len);
	pthread_mutex_unlock(&d->lock);
}

void pci_config_get(struct pci_device *d, unsigned offset, void *dst, unsigned len)
{
	if (offset > PCI_CFG_SIZE || len > PCI_CFG_SIZE - offset)
		return;
	pthread_mutex_lock(&d->lock);
	memcpy(dst, d->cfg + offset, len);
	pthread_mutex_unlock(&d->lock);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
uint16_t pci_cfg_get16(const struct pci_device *d, unsigned off) { return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8); }

/* ---- BARs ---- */

/* Guest-programmed address of BAR i (from config bytes; dev->lock held). */
static uint64_t bar_cfg_addr(const struct pci_device *d, unsigned i)
{
	const struct pci_bar *b = &d->bar[i];
	uint32_t lo = get32(d->cfg + PCI_BAR0 + 4 * i);
	switch (b->type) {
	case PCI_BAR_IO:
		return lo & ~3u;
	case PCI_BAR_MEM32:
		return lo & ~0xfu;
	case PCI_BAR_MEM64:
		return (lo & ~0xfu) | (uint64_t)get32(d->cfg + PCI_BAR0 + 4 * (i + 1)) << 32;
	default:
		return 0;
	}
}

uint64_t pci_bar_addr(struct pci_device *d, unsigned bar)
{
	if (bar >= PCI_NUM_BARS)
		return 0;
	pthread_mutex_lock(&d->lock);
	uint64_t a = bar_cfg_addr(d, bar);
	pthread_mutex_unlock(&d->lock);
	return a;
}

static void bar_io_handler(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_bar *b = opaque;
	struct pci_device *d = b->dev;
	if (b->is_msix)
		pci_msix_bar_rw(d, offset, data, size, is_write);
	else if (d->ops && d->ops->bar_rw)
		d->ops->bar_rw(d->opaque, b->index, offset, data, size, is_write);
}

/* Which BARs must be visible where, after a COMMAND or BAR write: unmap the ones
 * that moved or were disabled, map the new positions. bus->lock held, dev->lock not. */
static void bars_update(struct pci_device *d)
{
	struct io_bus *io = &d->bus->vm->io;
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &d->bar[i];
		if (b->type == PCI_BAR_NONE)
			continue;
		pthread_mutex_lock(&d->lock);
		uint16_t cmd = pci_cfg_get16(d, PCI_COMMAND);
		uint64_t addr = bar_cfg_addr(d, i);
		pthread_mutex_unlock(&d->lock);
		bool is_io = b->type == PCI_BAR_IO;
		bool enabled = d->realized && (cmd & (is_io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY));
		/* Address 0 is "unassigned"; all-ones sizing patterns and ranges past the
		 * address space are not decoded (real devices would, but nothing valid is
		 * there, and it keeps io bus ranges sane). */
		bool valid = addr != 0 && addr + b->size > addr &&
			     (is_io ? addr + b->size <= 0x10000 : addr + b->size <= (1ULL << 52));
		bool want = enabled && valid;
		if (b->mapped && (!want || b->mapped_addr != addr)) {
			if (is_io)
				io_unregister_pio(io, (uint16_t)b->mapped_addr);
			else
				io_unregister_mmio(io, b->mapped_addr);
			b->mapped = false;
			if (!b->is_msix && d->ops && d->ops->bar_remap)
				d->ops->bar_remap(d->opaque, i, b->mapped_addr, false);
		}
		if (want && !b->mapped) {
			int r = is_io ? io_register_pio(io, (uint16_t)addr, (uint16_t)b->size, bar_io_handler, b, d->info.name)
				      : io_register_mmio(io, addr, b->size, bar_io_handler, b, d->info.name);
			if (r < 0) {
				/* Overlap with another range (a guest bug or a sizing write with
				 * decode left on): leave it unmapped, say so once. */
				if (!b->overlap_logged++)
					log_warn("pci %s: BAR%u at %#llx+%#llx not mapped: %s", d->info.name, i,
						 (unsigned long long)addr, (unsigned long long)b->size, err_msg());
				continue;
			}
			b->mapped = true;
			b->mapped_addr = addr;
			if (!b->is_msix && d->ops && d->ops->bar_remap)
				d->ops->bar_remap(d->opaque, i, addr, true);
		}
	}
}

int pci_add_bar(struct pci_device *d, unsigned bar, enum pci_bar_type type, uint64_t size, unsigned flags)
{
	if (d->realized || bar >= PCI_NUM_BARS || d->bar[bar].type != PCI_BAR_NONE ||
	    (type == PCI_BAR_MEM64 && (bar == PCI_NUM_BARS - 1 || d->bar[bar + 1].type != PCI_BAR_NONE)))
		return err_set(EINVAL, "pci %s: BAR%u cannot be declared", d->info.name, bar);
	if (!is_pow2(size) || (type == PCI_BAR_IO && (size < 4 || size > 256)) ||
	    (type == PCI_BAR_MEM32 && size > (256u << 20)) || (type == PCI_BAR_MEM64 && size > (16ULL << 30)) ||
	    type == PCI_BAR_NONE || type > PCI_BAR_MEM64)
		return err_set(EINVAL, "pci %s: BAR%u: bad size %#llx", d->info.name, bar, (unsigned long long)size);
	if ((flags & PCI_BAR_HIGH) && (type != PCI_BAR_MEM64 || !(flags & PCI_BAR_PREFETCH)))
		return err_set(EINVAL, "pci %s: BAR%u: only a prefetchable 64-bit BAR can go above 4 GiB", d->info.name,
			       bar);
	if (type != PCI_BAR_IO && size < 4096)
		size = 4096;   /* a page at least, so BARs never share a page */
	struct pci_bar *b = &d->bar[bar];
	b->type = type;
	b->flags = flags;
	b->size = size;
	uint32_t low_bits = type == PCI_BAR_IO ? 1 : type == PCI_BAR_MEM64 ? 4 : 0;
	if (type != PCI_BAR_IO && (flags & PCI_BAR_PREFETCH))
		low_bits |= 8;
	uint8_t *reg = d->cfg + PCI_BAR0 + 4 * bar, *wm = d->wmask + PCI_BAR0 + 4 * bar;
	put32(reg, low_bits);
	/* Sizing: the size's low address bits and the type bits are read-only, so
	 * writing all-ones reads back ~(size - 1) | type. */
	put32(wm, (uint32_t)~(size - 1) & (type == PCI_BAR_IO ? ~3u : ~0xfu));
	if (type == PCI_BAR_MEM64) {
		d->bar[bar + 1].type = PCI_BAR_NONE;
		d->bar[bar + 1].upper_half = true;
		put32(reg + 4, 0);
		put32(wm + 4, (uint32_t)(~(size - 1) >> 32));
	}
	return 0;
}

/* Firmware-style assignment: natural alignment, bump allocation per window. */
static int bar_assign(struct pci_device *d, unsigned i)
{
	struct pci_bus *bus = d->bus;
	struct pci_bar *b = &d->bar[i];
	uint64_t *next, end;
	/* Only prefetchable 64-bit BARs may live in the (prefetchable) high window. */
	bool may_go_high = b->type == PCI_BAR_MEM64 && (b->flags & PCI_BAR_PREFETCH);
	bool high = may_go_high && ((b->flags & PCI_BAR_HIGH) || b->size >= PCI_MMIO64_MIN_HIGH);
	if (b->type == PCI_BAR_IO) {
		next = &bus->io_next;
		end = PCI_IO_END;
	} else if (high) {
		next = &bus->mmio64_next;
		end = bus->mmio64_end;
	} else {
		next = &bus->mmio32_next;
		end = PCI_MMIO32_END;
	}
	uint64_t addr = align_up(*next, b->size);
	if ((addr < *next || addr + b->size > end || addr + b->size < addr) && may_go_high && !high) {
		/* The 32-bit hole is full: a 64-bit BAR can go above 4 GiB instead. */
		next = &bus->mmio64_next;
		end = bus->mmio64_end;
		addr = align_up(*next, b->size);
	}
	if (addr < *next || addr + b->size > end || addr + b->size < addr)
		return err_set(ENOSPC, "pci %s: no room for BAR%u (%#llx bytes)", d->info.name, i,
			       (unsigned long long)b->size);
	*next = addr + b->size;
	uint8_t *reg = d->cfg + PCI_BAR0 + 4 * i;
	put32(reg, (get32(reg) & (b->type == PCI_BAR_IO ? 3u : 0xfu)) | (uint32_t)addr);
	if (b->type == PCI_BAR_MEM64)
		put32(reg + 4, (uint32_t)(addr >> 32));
	return 0;
}

/* ---- INTx ---- */

/* Recompute the device's contribution to the shared line. dev->lock held. */
static void intx_update_locked(struct pci_device *d)
{
	uint16_t cmd = pci_cfg_get16(d, PCI_COMMAND);
	bool out = d->info.intx && d->intx_level && !(cmd & PCI_COMMAND_INTX_DISABLE) && !d->msix_enabled;
	uint16_t st = pci_cfg_get16(d, PCI_STATUS);
	st = d->intx_level ? (st | PCI_STATUS_INTERRUPT) : (st & ~PCI_STATUS_INTERRUPT);
	put16(d->cfg + PCI_STATUS, st);
	if (out == d->intx_out)
		return;
	d->intx_out = out;
	struct pci_bus *bus = d->bus;
	pthread_mutex_lock(&bus->intx_lock);
	unsigned before = bus->intx_count;
	bus->intx_count = out ? bus->intx_count + 1 : bus->intx_count - 1;
	if ((before == 0) != (bus->intx_count == 0))
		irq_set_level(&bus->vm->irq, PCI_INTX_GSI, bus->intx_count != 0);
	pthread_mutex_unlock(&bus->intx_lock);
}

void pci_intx_update(struct pci_device *d)
{
	pthread_mutex_lock(&d->lock);
	intx_update_locked(d);
	pthread_mutex_unlock(&d->lock);
}

void pci_intx_set(struct pci_device *d, bool level)
{
	pthread_mutex_lock(&d->lock);
	d->intx_level = level;
	intx_update_locked(d);
	pthread_mutex_unlock(&d->lock);
}

/* ---- config access ---- */

static struct pci_device *bus_device(struct pci_bus *b, unsigned bdf)
{
	if ((bdf >> 8) != 0 || (bdf & 7) != 0)
		return NULL;   /* bus 0, function 0 only */
	return b->slot[(bdf >> 3) & 31];
}

uint32_t pci_config_read(struct pci_bus *b, unsigned bdf, unsigned offset, unsigned size)
{
	if ((size != 1 && size != 2 && size != 4) || offset >= ECAM_FUNC_SIZE || (offset & 3) + size > 4)
		return 0xffffffffu;
	pthread_mutex_lock(&b->lock);
	struct pci_device *d = bus_device(b, bdf);
	uint32_t v = 0xffffffffu;
	if (d && offset >= PCI_CFG_SIZE) {
		v = 0;   /* extended space: an empty extended capability list */
	} else if (d) {
		if (d->ops && d->ops->config_read)
			d->ops->config_read(d->opaque, offset, size);
		v = 0;
		pthread_mutex_lock(&d->lock);
		for (unsigned i = 0; i < size; i++)
			v |= (uint32_t)d->cfg[offset + i] << (8 * i);
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return v;
}

static bool overlaps(unsigned off, unsigned size, unsigned start, unsigned len)
{
	return off < start + len && start < off + size;
}

void pci_config_write(struct pci_bus *b, unsigned bdf, unsigned offset, unsigned size, uint32_t val)
{
	/* Extended space (ECAM offsets 256..4095) has nothing writable. */
	if ((size != 1 && size != 2 && size != 4) || offset >= PCI_CFG_SIZE || (offset & 3) + size > 4)
		return;
	pthread_mutex_lock(&b->lock);
	struct pci_device *d = bus_device(b, bdf);
	if (!d) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < size; i++) {
		uint8_t wm = d->wmask[offset + i], v = (uint8_t)(val >> (8 * i));
		d->cfg[offset + i] = (uint8_t)((d->cfg[offset + i] & ~wm) | (v & wm));
	}
	if (overlaps(offset, size, PCI_COMMAND, 2))
		intx_update_locked(d);
	pthread_mutex_unlock(&d->lock);
	if (overlaps(offset, size, PCI_COMMAND, 2) || overlaps(offset, size, PCI_BAR0, 4 * PCI_NUM_BARS))
		bars_update(d);
	if (d->msix_cap && overlaps(offset, size, d->msix_cap + 2, 2))
		pci_msix_control_written(d);
	if (d->ops && d->ops->config_write)
		d->ops->config_write(d->opaque, offset, size);
	pthread_mutex_unlock(&b->lock);
}

/* 0xcf8: the address latch (dword accesses only). 0xcf9 is the chipset reset
 * control register, byte-accessed, inside the same dword: forward it to pm. */
static void config_address_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_bus *b = opaque;
	uint8_t *bytes = data;
	if (offset == 1 && size == 1) {
		if (is_write)
			pm_reset_control_write(b->vm, bytes[0]);
		else
			bytes[0] = pm_reset_control_read(b->vm);
		return;
	}
	if (offset != 0 || size != 4)
		return;   /* other byte/word accesses: not decoded (reads all-ones) */
	pthread_mutex_lock(&b->lock);
	if (is_write)
		b->config_address = get32(bytes) & 0x80fffffcu;   /* reserved bits 30:24, 1:0 read 0 */
	else
		put32(bytes, b->config_address);
	pthread_mutex_unlock(&b->lock);
}

static void config_data_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_bus *b = opaque;
	uint8_t *bytes = data;
	if (size > 4)
		return;
	pthread_mutex_lock(&b->lock);
	uint32_t addr = b->config_address;
	pthread_mutex_unlock(&b->lock);
	if (!(addr & CONFIG_ENABLE))
		return;
	unsigned bdf = (addr >> 8) & 0xffff;
	unsigned reg = (addr & 0xfc) + (unsigned)offset;   /* the byte lane picks the offset */
	if (is_write) {
		uint32_t v = 0;
		for (unsigned i = 0; i < size; i++)
			v |= (uint32_t)bytes[i] << (8 * i);
		pci_config_write(b, bdf, reg, size, v);
	} else {
		uint32_t v = pci_config_read(b, bdf, reg, size);
		for (unsigned i = 0; i < size; i++)
			bytes[i] = (uint8_t)(v >> (8 * i));
	}
}

/* ECAM: the address picks bus/device/function/register. Accesses of 1, 2 or 4
 * bytes inside one dword are config accesses; an aligned 8-byte access is two
 * dword accesses (low first). Anything else (straddling a dword, odd sizes from
 * string instructions) reads all-ones and writes nothing, like an unsupported
 * request on real hardware. */
static void ecam_handler(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_bus *b = opaque;
	uint8_t *bytes = data;
	unsigned bdf = (unsigned)(offset >> 12) & 0xffff;
	unsigned reg = (unsigned)(offset & (ECAM_FUNC_SIZE - 1));
	unsigned chunk = size == 8 && (reg & 7) == 0 ? 4 : size;
	bool ok = (chunk == 1 || chunk == 2 || chunk == 4) && (reg & 3) + chunk <= 4;
	if (!ok) {
		if (!is_write)
			memset(bytes, 0xff, size);
		return;
	}
	for (unsigned done = 0; done < size; done += chunk) {
		if (is_write) {
			uint32_t v = 0;
			for (unsigned i = 0; i < chunk; i++)
				v |= (uint32_t)bytes[done + i] << (8 * i);
			pci_config_write(b, bdf, reg + done, chunk, v);
		} else {
			uint32_t v = pci_config_read(b, bdf, reg + done, chunk);
			for (unsigned i = 0; i < chunk; i++)
				bytes[done + i] = (uint8_t)(v >> (8 * i));
		}
	}
}

/* ---- devices ---- */

int pci_device_add(struct pci_bus *b, const struct pci_device_info *info, const struct pci_device_ops *ops,
		   void *opaque, struct pci_device **out)
{
	pthread_mutex_lock(&b->lock);
	unsigned slot = 0;
	while (slot < PCI_MAX_SLOTS && b->slot[slot])
		slot++;
	if (slot == PCI_MAX_SLOTS) {
		pthread_mutex_unlock(&b->lock);
		return err_set(ENOSPC, "pci: no free slot for %s", info->name);
	}
	struct pci_device *d = calloc(1, sizeof(*d));
	if (!d) {
		pthread_mutex_unlock(&b->lock);
		return err_set(ENOMEM, "pci: out of memory");
	}
	d->bus = b;
	d->slot = slot;
	d->info = *info;
	d->ops = ops;
	d->opaque = opaque;
	pthread_mutex_init(&d->lock, NULL);
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		d->bar[i].dev = d;
		d->bar[i].index = i;
	}
	uint8_t *c = d->cfg;
	put16(c + PCI_VENDOR_ID, info->vendor);
	put16(c + PCI_DEVICE_ID, info->device);
	c[PCI_REVISION_ID] = info->revision;
	c[PCI_CLASS_PROG] = (uint8_t)info->class_code;
	c[PCI_CLASS_PROG + 1] = (uint8_t)(info->class_code >> 8);
	c[PCI_CLASS_PROG + 2] = (uint8_t)(info->class_code >> 16);
	c[PCI_HEADER_TYPE] = 0;   /* type 0, single function */
	put16(c + PCI_SUBSYSTEM_VENDOR_ID, info->subsys_vendor);
	put16(c + PCI_SUBSYSTEM_ID, info->subsys_id);
	if (info->intx) {
		c[PCI_INTERRUPT_PIN] = 1;   /* INTA# */
		c[PCI_INTERRUPT_LINE] = PCI_INTX_GSI;
	}
	/* Writable: COMMAND io/mem/master/intx-disable, cache line, latency timer,
	 * interrupt line. BARs get their masks in pci_add_bar. */
	put16(d->wmask + PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
	d->wmask[0x0c] = 0xff;
	d->wmask[0x0d] = 0xff;
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->next_cap = 0x40;
	b->slot[slot] = d;
	pthread_mutex_unlock(&b->lock);
	*out = d;
	return 0;
}

int pci_add_capability(struct pci_device *d, const void *body, unsigned len, const uint8_t *wmask)
{
	unsigned off = d->next_cap;
	if (d->realized || len < 2 || off + len > PCI_CFG_SIZE || off + len < off)
		return err_set(ENOSPC, "pci %s: no room for a %u-byte capability", d->info.name, len);
	memcpy(d->cfg + off, body, len);
	d->cfg[off + 1] = 0;
	if (wmask)
		memcpy(d->wmask + off, wmask, len);
	d->wmask[off] = d->wmask[off + 1] = 0;   /* id and next are never writable */
	if (d->last_cap)
		d->cfg[d->last_cap + 1] = (uint8_t)off;
	else
		d->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	put16(d->cfg + PCI_STATUS, pci_cfg_get16(d, PCI_STATUS) | PCI_STATUS_CAP_LIST);
	d->last_cap = off;
	d->next_cap = (uint8_t)align_up(off + len, 4);
	if (off + len >= PCI_CFG_SIZE - 3)
		d->next_cap = 0xff;   /* full */
	return (int)off;
}

int pci_device_realize(struct pci_device *d)
{
	struct pci_bus *b = d->bus;
	pthread_mutex_lock(&b->lock);
	int r = 0;
	uint16_t cmd = 0;
	/* Largest BARs first keeps the bump allocator's alignment gaps small. */
	for (uint64_t size = 1ULL << 40; size >= 4 && r == 0; size >>= 1)
		for (unsigned i = 0; i < PCI_NUM_BARS && r == 0; i++)
			if (d->bar[i].type != PCI_BAR_NONE && d->bar[i].size == size)
				r = bar_assign(d, i);
	if (r < 0) {
		pthread_mutex_unlock(&b->lock);
		return r;
	}
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		if (d->bar[i].type == PCI_BAR_IO)
			cmd |= PCI_COMMAND_IO;
		else if (d->bar[i].type != PCI_BAR_NONE)
			cmd |= PCI_COMMAND_MEMORY;
	}
	put16(d->cfg + PCI_COMMAND, cmd);
	memcpy(d->cfg_reset, d->cfg, PCI_CFG_SIZE);
	d->realized = true;
	bars_update(d);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

void pci_device_remove(struct pci_device *d)
{
	if (!d)
		return;
	struct pci_bus *b = d->bus;
	pthread_mutex_lock(&b->lock);
	d->realized = false;
	bars_update(d);   /* not realized: everything unmapped */
	pthread_mutex_lock(&d->lock);
	d->intx_level = false;
	intx_update_locked(d);
	pthread_mutex_unlock(&d->lock);
	b->slot[d->slot] = NULL;
	pthread_mutex_unlock(&b->lock);
	pci_msix_free(d);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* Back to the power-on configuration (VM reset): firmware's BAR assignment,
 * COMMAND, MSI-X disabled and all vectors masked. */
static void device_reset(struct pci_device *d)
{
	pthread_mutex_lock(&d->lock);
	memcpy(d->cfg, d->cfg_reset, PCI_CFG_SIZE);
	d->intx_level = false;
	intx_update_locked(d);
	pthread_mutex_unlock(&d->lock);
	bars_update(d);
	pci_msix_reset(d);
}

/* ---- state ---- */

/* Blob v1: "PCI1", version, nvec (le16), cfg[256], intx_level, then per MSI-X
 * vector addr_lo, addr_hi, data, ctrl (le32) and pending (1 byte). */
#define STATE_HDR (4 + 1 + 2 + PCI_CFG_SIZE + 1)
#define STATE_VEC 17

int pci_device_save(struct pci_device *d, void **buf, size_t *len)
{
	size_t n = STATE_HDR + (size_t)d->msix_nvec * STATE_VEC;
	uint8_t *b = malloc(n);
	if (!b)
		return err_set(ENOMEM, "pci %s: out of memory saving state", d->info.name);
	pthread_mutex_lock(&d->lock);
	memcpy(b, "PCI1", 4);
	b[4] = 1;
	put16(b + 5, (uint16_t)d->msix_nvec);
	memcpy(b + 7, d->cfg, PCI_CFG_SIZE);
	b[7 + PCI_CFG_SIZE] = d->intx_level;
	uint8_t *p = b + STATE_HDR;
	for (unsigned i = 0; i < d->msix_nvec; i++, p += STATE_VEC) {
		const struct msix_vec *v = &d->vec[i];
		put32(p, v->addr_lo);
		put32(p + 4, v->addr_hi);
		put32(p + 8, v->data);
		put32(p + 12, v->ctrl);
		p[16] = v->pending;
	}
	pthread_mutex_unlock(&d->lock);
	*buf = b;
	*len = n;
	return 0;
}

int pci_device_load(struct pci_device *d, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	if (!b || len < STATE_HDR || memcmp(b, "PCI1", 4) != 0)
		return err_set(EINVAL, "pci %s state: bad header", d->info.name);
	if (b[4] != 1)
		return err_set(EINVAL, "pci %s state: unsupported version %u", d->info.name, b[4]);
	unsigned nvec = b[5] | b[6] << 8;
	if (nvec != d->msix_nvec || len != STATE_HDR + (size_t)nvec * STATE_VEC)
		return err_set(EINVAL, "pci %s state: %u MSI-X vectors, device has %u", d->info.name, nvec, d->msix_nvec);
	struct msix_vec *vecs = calloc(nvec ? nvec : 1, sizeof(*vecs));
	if (!vecs)
		return err_set(ENOMEM, "pci %s: out of memory loading state", d->info.name);
	const uint8_t *p = b + STATE_HDR;
	for (unsigned i = 0; i < nvec; i++, p += STATE_VEC)
		vecs[i] = (struct msix_vec){ .addr_lo = get32(p), .addr_hi = get32(p + 4), .data = get32(p + 8),
					     .ctrl = get32(p + 12), .pending = p[16] != 0 };
	struct pci_bus *bus = d->bus;
	pthread_mutex_lock(&bus->lock);
	pthread_mutex_lock(&d->lock);
	/* Only guest-writable bits come from the blob: identity, capability layout
	 * and BAR types stay what this build of the device says. */
	for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
		d->cfg[i] = (uint8_t)((d->cfg_reset[i] & ~d->wmask[i]) | (b[7 + i] & d->wmask[i]));
	d->intx_level = b[7 + PCI_CFG_SIZE] != 0;
	pthread_mutex_unlock(&d->lock);
	bars_update(d);
	if (d->msix_nvec)
		pci_msix_set_vectors(d, vecs);
	/* INTx last, once MSI-X enable is restored: a device that saved "MSI-X on,
	 * INTx level high" must not pulse the shared line (the IOAPIC would deliver). */
	pci_intx_update(d);
	pthread_mutex_unlock(&bus->lock);
	free(vecs);
	return 0;
}

unsigned pci_device_slot(const struct pci_device *d) { return d->slot; }

struct vm *pci_device_vm(struct pci_device *d) { return d->bus->vm; }
const char *pci_device_name(struct pci_device *d) { return d->info.name; }

/* ---- the bus as a VM device ---- */

static void bus_reset(void *opaque)
{
	struct pci_bus *b = opaque;
	pthread_mutex_lock(&b->lock);
	b->config_address = 0;
	for (unsigned i = 0; i < PCI_MAX_SLOTS; i++)
		if (b->slot[i])
			device_reset(b->slot[i]);
	pthread_mutex_unlock(&b->lock);
}

static void bus_destroy(void *opaque)
{
	struct pci_bus *b = opaque;
	for (unsigned i = 0; i < PCI_MAX_SLOTS; i++)
		pci_device_remove(b->slot[i]);
	io_unregister_pio(&b->vm->io, CONFIG_ADDRESS_PORT);
	io_unregister_pio(&b->vm->io, CONFIG_DATA_PORT);
	io_unregister_mmio(&b->vm->io, PCI_ECAM_BASE);
	if (b->vm->pci == b)
		b->vm->pci = NULL;
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->intx_lock);
	free(b);
}

/* The bus's own state: the 0xcf8 latch and the host bridge's function (the
 * other functions are saved by their devices, through pci_device_save).
 * Blob v1: "PCIB", version (1 byte), latch (le32), host bridge blob length
 * (le32), the host bridge's pci_device_save blob.
 * Also accepted: the 8-byte layout snapshots used before the bus had save/load
 * (latch le32, host bridge COMMAND le32). */
#define BUS_STATE_HDR 13
#define BUS_STATE_LEGACY_LEN 8

static int bus_save(void *opaque, void **buf, size_t *len)
{
	struct pci_bus *b = opaque;
	void *host = NULL;
	size_t host_len = 0;
	int r = pci_device_save(b->slot[0], &host, &host_len);
	if (r < 0)
		return r;
	uint8_t *out = malloc(BUS_STATE_HDR + host_len);
	if (!out) {
		free(host);
		return err_set(ENOMEM, "pci: out of memory saving state");
	}
	memcpy(out, "PCIB", 4);
	out[4] = 1;
	pthread_mutex_lock(&b->lock);
	put32(out + 5, b->config_address);
	pthread_mutex_unlock(&b->lock);
	put32(out + 9, (uint32_t)host_len);
	memcpy(out + BUS_STATE_HDR, host, host_len);
	free(host);
	*buf = out;
	*len = BUS_STATE_HDR + host_len;
	return 0;
}

static int bus_load(void *opaque, const void *buf, size_t len)
{
	struct pci_bus *b = opaque;
	const uint8_t *in = buf;
	if (in && len == BUS_STATE_LEGACY_LEN) {
		pci_config_write(b, 0, PCI_COMMAND, 2, get32(in + 4) & 0xffff);
		pthread_mutex_lock(&b->lock);
		b->config_address = get32(in) & 0x80fffffcu;
		pthread_mutex_unlock(&b->lock);
		return 0;
	}
	if (!in || len < BUS_STATE_HDR || memcmp(in, "PCIB", 4) != 0)
		return err_set(EINVAL, "pci bus state: bad header (%zu bytes)", len);
	if (in[4] != 1)
		return err_set(EINVAL, "pci bus state: unsupported version %u", in[4]);
	uint32_t host_len = get32(in + 9);
	if (host_len != len - BUS_STATE_HDR)
		return err_set(EINVAL, "pci bus state: host bridge state of %u bytes in %zu", host_len,
			       len - BUS_STATE_HDR);
	int r = pci_device_load(b->slot[0], in + BUS_STATE_HDR, host_len);
	if (r < 0)
		return err_prefix(r, "pci bus state");
	pthread_mutex_lock(&b->lock);
	b->config_address = get32(in + 5) & 0x80fffffcu;
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static const struct device_ops pci_bus_device_ops = {
	.name = "pci",
	.reset = bus_reset,
	.save = bus_save,
	.load = bus_load,
	.destroy = bus_destroy,
};

int pci_bus_create(struct vm *vm)
{
	if (vm->pci)
		return err_set(EEXIST, "pci: bus already exists");
	struct pci_bus *b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(ENOMEM, "pci: out of memory");
	b->vm = vm;
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->intx_lock, NULL);
	b->mmio32_next = PCI_MMIO32_BASE;
	b->io_next = PCI_IO_BASE;
	b->mmio64_next = pci_mmio64_base(vm->mem.nregions ? mem_top(&vm->mem) : 0);
	b->mmio64_end = b->mmio64_next + PCI_MMIO64_SIZE;
	int r = io_register_pio(&vm->io, CONFIG_ADDRESS_PORT, 4, config_address_port, b, "pci-config-address");
	if (r == 0 && (r = io_register_pio(&vm->io, CONFIG_DATA_PORT, 4, config_data_port, b, "pci-config-data")) < 0)
		io_unregister_pio(&vm->io, CONFIG_ADDRESS_PORT);
	if (r == 0 && (r = io_register_mmio(&vm->io, PCI_ECAM_BASE, PCI_ECAM_SIZE, ecam_handler, b, "pci-ecam")) < 0) {
		io_unregister_pio(&vm->io, CONFIG_ADDRESS_PORT);
		io_unregister_pio(&vm->io, CONFIG_DATA_PORT);
	}
	if (r < 0) {
		bus_destroy(b);
		return err_prefix(r, "pci");
	}
	vm->pci = b;
	struct pci_device *host;
	static const struct pci_device_info host_info = {
		.name = "pci-host", .vendor = PCI_HOST_VENDOR, .device = PCI_HOST_DEVICE,
		.subsys_vendor = PCI_HOST_VENDOR, .subsys_id = 0x1100, .class_code = 0x060000,
	};
	if ((r = pci_device_add(b, &host_info, NULL, NULL, &host)) < 0 || (r = pci_device_realize(host)) < 0 ||
	    (r = vm_add_device(vm, &pci_bus_device_ops, b)) < 0) {
		bus_destroy(b);
		return r;
	}
	return 0;
}
