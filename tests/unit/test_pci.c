/* PCI bus (type-1 config access, BARs, MSI-X, INTx) and the virtio-pci transport
 * driven end to end through virtio-rng, on a bare struct vm with fake guest RAM
 * and a fake interrupt controller: no /dev/kvm needed. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <vmsvc/devices.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>
#include <vmsvc/virtio.h>
#include <vmsvc/vm.h>

/* ---- fake VM ---- */

#define RAM_SIZE (16u << 20)
#define MAX_GSI 64

struct fake_irq {
	bool level[24];
	unsigned msi_signalled;
	unsigned routes_added, routes_set, routes_deleted;
	bool used[MAX_GSI];
	uint64_t addr[MAX_GSI];
	uint32_t data[MAX_GSI];
	int irqfd[MAX_GSI];
};

static int fake_set_level(struct irqchip *c, unsigned gsi, bool level)
{
	struct fake_irq *f = c->priv;
	if (gsi < 24)
		f->level[gsi] = level;
	return 0;
}
static int fake_signal_msi(struct irqchip *c, uint64_t addr, uint32_t data)
{
	(void)addr;
	(void)data;
	((struct fake_irq *)c->priv)->msi_signalled++;
	return 0;
}
static int fake_route_add(struct irqchip *c, uint64_t addr, uint32_t data, unsigned *gsi)
{
	struct fake_irq *f = c->priv;
	for (unsigned i = 24; i < MAX_GSI; i++)
		if (!f->used[i]) {
			f->used[i] = true;
			f->addr[i] = addr;
			f->data[i] = data;
			f->irqfd[i] = -1;
			f->routes_added++;
			*gsi = i;
			return 0;
		}
	return -ENOSPC;
}
static int fake_route_set(struct irqchip *c, unsigned gsi, uint64_t addr, uint32_t data)
{
	struct fake_irq *f = c->priv;
	if (gsi >= MAX_GSI || !f->used[gsi])
		return -ENOENT;
	f->addr[gsi] = addr;
	f->data[gsi] = data;
	f->routes_set++;
	return 0;
}
static void fake_route_del(struct irqchip *c, unsigned gsi)
{
	struct fake_irq *f = c->priv;
	if (gsi < MAX_GSI && f->used[gsi]) {
		f->used[gsi] = false;
		f->routes_deleted++;
	}
}
static int fake_irqfd(struct irqchip *c, unsigned gsi, int efd, bool assign)
{
	struct fake_irq *f = c->priv;
	if (gsi >= MAX_GSI || !f->used[gsi])
		return -EINVAL;
	f->irqfd[gsi] = assign ? efd : -1;
	return 0;
}

static const struct irqchip_ops fake_irq_ops = {
	.name = "fake", .set_level = fake_set_level, .signal_msi = fake_signal_msi,
	.msi_route_add = fake_route_add, .msi_route_set = fake_route_set, .msi_route_del = fake_route_del,
	.irqfd = fake_irqfd,
};

struct fixture {
	struct vm *vm;
	struct fake_irq irq;
	uint8_t *ram;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vm *vm = calloc(1, sizeof(*vm));
	f->ram = calloc(1, RAM_SIZE);
	if (!f || !vm || !f->ram)
		return -1;
	io_bus_init(&vm->io);
	bus_init(&vm->bus);
	pthread_mutex_init(&vm->end_lock, NULL);
	vm->kvm_fd = vm->vm_fd = -1;
	vm->irq.ops = &fake_irq_ops;
	vm->irq.priv = &f->irq;
	vm->mem.nregions = 1;
	vm->mem.region[0] = (struct mem_region){ 0, RAM_SIZE, 0, f->ram };
	vm->mem.ram_size = RAM_SIZE;
	vm->cfg.mem_size = RAM_SIZE;
	f->vm = vm;
	if (pci_bus_create(vm) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	for (int i = (int)f->vm->ndevices - 1; i >= 0; i--)
		if (f->vm->devices[i].ops->destroy)
			f->vm->devices[i].ops->destroy(f->vm->devices[i].dev);
	assert_null(f->vm->pci);
	assert_int_equal(f->vm->io.mmio.n, 0);   /* every BAR unmapped */
	io_bus_destroy(&f->vm->io);
	pthread_mutex_destroy(&f->vm->end_lock);
	free(f->vm);
	free(f->ram);
	free(f);
	return 0;
}

/* ---- guest-side accessors ---- */

static void outl(struct vm *vm, uint16_t port, uint32_t v) { io_pio(&vm->io, port, &v, 4, true); }
static void outw(struct vm *vm, uint16_t port, uint16_t v) { io_pio(&vm->io, port, &v, 2, true); }
static void outb(struct vm *vm, uint16_t port, uint8_t v) { io_pio(&vm->io, port, &v, 1, true); }
static uint32_t inl(struct vm *vm, uint16_t port) { uint32_t v; io_pio(&vm->io, port, &v, 4, false); return v; }
static uint16_t inw(struct vm *vm, uint16_t port) { uint16_t v; io_pio(&vm->io, port, &v, 2, false); return v; }
static uint8_t inb(struct vm *vm, uint16_t port) { uint8_t v; io_pio(&vm->io, port, &v, 1, false); return v; }

static void cfg_addr(struct vm *vm, unsigned slot, unsigned off)
{
	outl(vm, 0xcf8, 0x80000000u | slot << 11 | (off & 0xfc));
}
static uint32_t cfg_read(struct vm *vm, unsigned slot, unsigned off, unsigned size)
{
	cfg_addr(vm, slot, off);
	uint16_t port = (uint16_t)(0xcfc + (off & 3));
	return size == 4 ? inl(vm, port) : size == 2 ? inw(vm, port) : inb(vm, port);
}
static void cfg_write(struct vm *vm, unsigned slot, unsigned off, unsigned size, uint32_t v)
{
	cfg_addr(vm, slot, off);
	uint16_t port = (uint16_t)(0xcfc + (off & 3));
	if (size == 4)
		outl(vm, port, v);
	else if (size == 2)
		outw(vm, port, (uint16_t)v);
	else
		outb(vm, port, (uint8_t)v);
}

static uint64_t mmio_read(struct vm *vm, uint64_t gpa, unsigned size)
{
	uint64_t v = 0;
	io_mmio(&vm->io, gpa, &v, size, false);
	return v;
}
static bool mmio_write(struct vm *vm, uint64_t gpa, unsigned size, uint64_t v)
{
	return io_mmio(&vm->io, gpa, &v, size, true);
}

/* ---- a test device ---- */

struct tdev {
	unsigned accesses, remaps;
	unsigned last_bar;
	uint64_t last_off, last_val, remap_addr;
	bool remap_mapped;
};

static void tdev_bar_rw(void *opaque, unsigned bar, uint64_t off, void *data, unsigned size, bool w)
{
	struct tdev *t = opaque;
	t->accesses++;
	t->last_bar = bar;
	t->last_off = off;
	if (w)
		memcpy(&t->last_val, data, size);
	else
		memset(data, 0x5a, size);
}
static void tdev_remap(void *opaque, unsigned bar, uint64_t addr, bool mapped)
{
	struct tdev *t = opaque;
	(void)bar;
	t->remaps++;
	t->remap_addr = addr;
	t->remap_mapped = mapped;
}
static const struct pci_device_ops tdev_ops = { .bar_rw = tdev_bar_rw, .bar_remap = tdev_remap };

static struct pci_device *make_tdev(struct vm *vm, struct tdev *t, bool msix)
{
	static const struct pci_device_info info = { .name = "tdev", .vendor = 0x1234, .device = 0x5678,
						     .revision = 3, .class_code = 0x020000, .intx = true };
	struct pci_device *d;
	assert_int_equal(pci_device_add(vm->pci, &info, &tdev_ops, t, &d), 0);
	assert_int_equal(pci_add_bar(d, 0, PCI_BAR_IO, 32, 0), 0);
	assert_int_equal(pci_add_bar(d, 2, PCI_BAR_MEM64, 16384, PCI_BAR_PREFETCH), 0);
	assert_int_equal(pci_add_bar(d, 4, PCI_BAR_MEM32, 8192, 0), 0);
	if (msix)
		assert_int_equal(pci_msix_init(d, 1, 4), 0);
	assert_int_equal(pci_device_realize(d), 0);
	return d;
}

/* ---- bus ---- */

static void test_host_bridge(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	assert_int_equal(cfg_read(vm, 0, 0, 4), PCI_HOST_DEVICE << 16 | PCI_HOST_VENDOR);
	/* Byte and word lanes: 0xcfe reads bytes 2-3 of the dword. */
	assert_int_equal(cfg_read(vm, 0, 2, 2), PCI_HOST_DEVICE);
	assert_int_equal(cfg_read(vm, 0, 3, 1), PCI_HOST_DEVICE >> 8);
	assert_int_equal(cfg_read(vm, 0, 0x0b, 1), 0x06);   /* bridge class */
	assert_int_equal(cfg_read(vm, 0, 0x0a, 1), 0x00);   /* host bridge */
	/* The address latch reads back (reserved bits zero). */
	outl(vm, 0xcf8, 0xffffffffu);
	assert_int_equal(inl(vm, 0xcf8), 0x80fffffcu);
	/* Empty slot, other bus, other function, enable bit clear: all-ones. */
	assert_int_equal(cfg_read(vm, 7, 0, 4), 0xffffffffu);
	outl(vm, 0xcf8, 0x80010000u);
	assert_int_equal(inl(vm, 0xcfc), 0xffffffffu);
	outl(vm, 0xcf8, 0x80000100u);
	assert_int_equal(inl(vm, 0xcfc), 0xffffffffu);
	outl(vm, 0xcf8, 0x00000000u);
	assert_int_equal(inl(vm, 0xcfc), 0xffffffffu);
	/* Read-only identity. */
	cfg_write(vm, 0, 0, 4, 0);
	assert_int_equal(cfg_read(vm, 0, 0, 2), PCI_HOST_VENDOR);
}

static void test_reset_port_shared_with_cf8(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	assert_int_equal(pm_attach(vm), 0);   /* leaves 0xcf9 to the PCI bus */
	outl(vm, 0xcf8, 0x80000000u);
	outb(vm, RESET_PORT, 0x02);
	assert_int_equal(inb(vm, RESET_PORT), 0x02);
	assert_int_equal(inl(vm, 0xcf8), 0x80000000u);   /* latch untouched */
	assert_int_equal(vm->end_reason, VM_END_NONE);
	outb(vm, RESET_PORT, 0x06);
	assert_int_equal(vm->end_reason, VM_END_RESET);
}

static void test_bars(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static struct tdev t;   /* outlives the test: teardown unmaps BARs */
	struct pci_device *d = make_tdev(vm, &t, false);
	unsigned s = 1;
	assert_int_equal(cfg_read(vm, s, 0, 4), 0x56781234u);
	assert_int_equal(cfg_read(vm, s, PCI_INTERRUPT_PIN, 1), 1);
	assert_int_equal(cfg_read(vm, s, PCI_INTERRUPT_LINE, 1), PCI_INTX_GSI);
	assert_int_equal(cfg_read(vm, s, PCI_COMMAND, 2) & 3, 3);   /* firmware enabled io + mem */

	uint32_t io = cfg_read(vm, s, 0x10, 4);
	assert_int_equal(io & 1, 1);
	assert_true((io & ~3u) >= PCI_IO_BASE && (io & ~3u) % 32 == 0);
	uint32_t lo = cfg_read(vm, s, 0x18, 4), hi = cfg_read(vm, s, 0x1c, 4);
	assert_int_equal(lo & 0xf, 0xc);   /* 64-bit, prefetchable */
	uint64_t m64 = (lo & ~0xfu) | (uint64_t)hi << 32;
	assert_true(m64 >= PCI_MMIO32_BASE && m64 + 16384 <= PCI_MMIO32_END && m64 % 16384 == 0);
	uint32_t m32 = cfg_read(vm, s, 0x20, 4);
	assert_true(m32 >= PCI_MMIO32_BASE && m32 % 8192 == 0 && (m32 & 0xf) == 0);
	assert_int_equal(pci_bar_addr(d, 4), m32);
	assert_int_equal(pci_bar_addr(d, 2), m64);
	assert_int_equal(cfg_read(vm, s, 0x14, 4), 0);   /* undeclared BAR */

	/* Sizing: all-ones reads back the size mask with the type bits. */
	cfg_write(vm, s, 0x10, 4, 0xffffffffu);
	assert_int_equal(cfg_read(vm, s, 0x10, 4), 0xffffffe1u);
	cfg_write(vm, s, 0x10, 4, io);
	cfg_write(vm, s, 0x20, 4, 0xffffffffu);
	assert_int_equal(cfg_read(vm, s, 0x20, 4), 0xffffe000u);
	cfg_write(vm, s, 0x20, 4, m32);
	cfg_write(vm, s, 0x18, 4, 0xffffffffu);
	cfg_write(vm, s, 0x1c, 4, 0xffffffffu);
	assert_int_equal(cfg_read(vm, s, 0x18, 4), 0xffffc00cu);
	assert_int_equal(cfg_read(vm, s, 0x1c, 4), 0xffffffffu);
	cfg_write(vm, s, 0x18, 4, lo);
	cfg_write(vm, s, 0x1c, 4, hi);
	cfg_write(vm, s, 0x14, 4, 0xffffffffu);
	assert_int_equal(cfg_read(vm, s, 0x14, 4), 0);

	/* Accesses reach the device with BAR-relative offsets. */
	assert_true(mmio_write(vm, m32 + 0x10, 4, 0xabcd));
	assert_int_equal(t.last_bar, 4);
	assert_int_equal(t.last_off, 0x10);
	assert_int_equal(t.last_val, 0xabcd);
	assert_int_equal(mmio_read(vm, m64 + 8, 4), 0x5a5a5a5a);
	assert_int_equal(t.last_bar, 2);
	uint8_t b;
	assert_true(io_pio(&vm->io, (uint16_t)((io & ~3u) + 5), &b, 1, false));
	assert_int_equal(t.last_bar, 0);
	assert_int_equal(t.last_off, 5);
}

static void test_bar_move_and_decode(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static struct tdev t;   /* outlives the test: teardown unmaps BARs */
	make_tdev(vm, &t, false);
	unsigned s = 1;
	uint32_t m32 = cfg_read(vm, s, 0x20, 4);
	unsigned remaps = t.remaps;
	/* Move BAR4 to a new address: old address dead, new one live. */
	uint32_t moved = 0xd0000000u;
	cfg_write(vm, s, 0x20, 4, moved);
	assert_int_equal(cfg_read(vm, s, 0x20, 4), moved);
	assert_int_equal(t.remaps, remaps + 2);   /* unmapped old, mapped new */
	assert_true(t.remap_mapped);
	assert_int_equal(t.remap_addr, moved);
	assert_false(mmio_write(vm, m32, 4, 1));
	unsigned n = t.accesses;
	assert_true(mmio_write(vm, moved + 4, 4, 1));
	assert_int_equal(t.accesses, n + 1);
	/* COMMAND memory off: no MMIO decode; I/O still on. */
	uint32_t io = cfg_read(vm, s, 0x10, 4) & ~3u;
	cfg_write(vm, s, PCI_COMMAND, 2, PCI_COMMAND_IO);
	assert_false(mmio_write(vm, moved + 4, 4, 1));
	assert_false(t.remap_mapped);
	uint8_t b;
	assert_true(io_pio(&vm->io, (uint16_t)io, &b, 1, false));
	/* Sizing with decode off does not map anything at the all-ones address. */
	cfg_write(vm, s, 0x20, 4, 0xffffffffu);
	cfg_write(vm, s, 0x20, 4, moved);
	cfg_write(vm, s, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	assert_true(mmio_write(vm, moved, 4, 1));
	/* A BAR moved onto another BAR's range is left unmapped, not a crash. */
	uint32_t lo64 = cfg_read(vm, s, 0x18, 4) & ~0xfu;
	cfg_write(vm, s, 0x20, 4, lo64);
	assert_int_equal(mmio_read(vm, lo64, 4), 0x5a5a5a5a);
	assert_int_equal(t.last_bar, 2);
}

static void test_capabilities(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static const struct pci_device_info info = { .name = "caps", .vendor = 1, .device = 2 };
	struct pci_device *d;
	assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d), 0);
	uint8_t c1[8] = { PCI_CAP_ID_VNDR, 0xee, 8, 1, 2, 3, 4, 5 }, c2[6] = { PCI_CAP_ID_VNDR, 0, 6, 9, 9, 9 };
	uint8_t wm[6] = { 0xff, 0xff, 0, 0, 0x0f, 0 };
	int o1 = pci_add_capability(d, c1, sizeof(c1), NULL), o2 = pci_add_capability(d, c2, sizeof(c2), wm);
	assert_int_equal(o1, 0x40);
	assert_int_equal(o2, 0x48);
	assert_int_equal(pci_device_realize(d), 0);
	assert_true(cfg_read(vm, 1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	assert_int_equal(cfg_read(vm, 1, PCI_CAPABILITY_LIST, 1), 0x40);
	assert_int_equal(cfg_read(vm, 1, 0x41, 1), 0x48);   /* next filled in */
	assert_int_equal(cfg_read(vm, 1, 0x49, 1), 0);
	cfg_write(vm, 1, 0x48, 4, 0xffffffffu);            /* id/next never writable */
	assert_int_equal(cfg_read(vm, 1, 0x48, 2), 0x0009);
	cfg_write(vm, 1, 0x4c, 1, 0xff);
	assert_int_equal(cfg_read(vm, 1, 0x4c, 1), 0x0f);
	cfg_write(vm, 1, 0x44, 4, 0);                      /* read-only capability */
	assert_int_equal(cfg_read(vm, 1, 0x44, 4), 0x05040302u);
	/* Extended space (ECAM) of a present function reads as an empty list and
	 * ignores writes; past 4 KiB and across dwords, accesses fail cleanly. */
	assert_int_equal(pci_config_read(vm->pci, 1 << 3, 256, 4), 0);
	pci_config_write(vm->pci, 1 << 3, 256, 4, 0x12345678u);
	assert_int_equal(pci_config_read(vm->pci, 1 << 3, 0xffc, 4), 0);
	assert_int_equal(pci_config_read(vm->pci, 7 << 3, 256, 4), 0xffffffffu);
	assert_int_equal(pci_config_read(vm->pci, 1 << 3, 4096, 4), 0xffffffffu);
	assert_int_equal(pci_config_read(vm->pci, 1 << 3, 0xfe, 4), 0xffffffffu);
}

static void test_slots_full(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static const struct pci_device_info info = { .name = "filler", .vendor = 1, .device = 2 };
	struct pci_device *d;
	for (unsigned i = 1; i < PCI_MAX_SLOTS; i++)
		assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d), 0);
	assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d), -ENOSPC);
	assert_int_equal(cfg_read(vm, 31, 0, 4), 0x00020001u);
}

/* ---- ECAM ---- */

static uint64_t ecam_addr(unsigned bus, unsigned slot, unsigned fn, unsigned reg)
{
	return PCI_ECAM_BASE + ((uint64_t)bus << 20 | slot << 15 | fn << 12 | reg);
}

/* Every byte, word and dword of every slot's config space reads the same
 * through ECAM as through 0xcf8/0xcfc. */
static void test_ecam_matches_type1(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static struct tdev t;
	make_tdev(vm, &t, true);
	for (unsigned slot = 0; slot < 3; slot++)
		for (unsigned off = 0; off < PCI_CFG_SIZE; off++) {
			assert_int_equal(mmio_read(vm, ecam_addr(0, slot, 0, off), 1), cfg_read(vm, slot, off, 1));
			if (off % 2 == 0)
				assert_int_equal(mmio_read(vm, ecam_addr(0, slot, 0, off), 2), cfg_read(vm, slot, off, 2));
			if (off % 4 == 0)
				assert_int_equal(mmio_read(vm, ecam_addr(0, slot, 0, off), 4), cfg_read(vm, slot, off, 4));
		}
	assert_int_equal(mmio_read(vm, ecam_addr(0, 2, 0, 0), 4), 0xffffffffu);   /* empty slot */
	/* Other functions, other buses inside the window: nothing there. */
	assert_int_equal(mmio_read(vm, ecam_addr(0, 1, 3, 0), 4), 0xffffffffu);
	assert_int_equal(mmio_read(vm, ecam_addr(1, 1, 0, 0), 4), 0xffffffffu);
	assert_int_equal(mmio_read(vm, ecam_addr(PCI_ECAM_BUSES - 1, 0, 0, 0), 4), 0xffffffffu);
	assert_false(mmio_write(vm, ecam_addr(PCI_ECAM_BUSES, 0, 0, 0), 4, 0));   /* past the window */
	/* Extended space of a present function: an empty list (reads 0). */
	assert_int_equal(mmio_read(vm, ecam_addr(0, 1, 0, 0x100), 4), 0);
	assert_int_equal(mmio_read(vm, ecam_addr(0, 1, 0, 0xffc), 4), 0);
	/* Writes through ECAM land where type-1 reads them (interrupt line). */
	assert_true(mmio_write(vm, ecam_addr(0, 1, 0, PCI_INTERRUPT_LINE), 1, 0x42));
	assert_int_equal(cfg_read(vm, 1, PCI_INTERRUPT_LINE, 1), 0x42);
	/* An aligned 8-byte read is two dwords. */
	assert_int_equal(mmio_read(vm, ecam_addr(0, 1, 0, 0), 8),
			 (uint64_t)cfg_read(vm, 1, 4, 4) << 32 | cfg_read(vm, 1, 0, 4));
}

static void test_ecam_bar_sizing(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static struct tdev t;
	make_tdev(vm, &t, false);
	uint64_t bar4 = ecam_addr(0, 1, 0, 0x20);
	uint32_t m32 = (uint32_t)mmio_read(vm, bar4, 4);
	assert_int_equal(m32, cfg_read(vm, 1, 0x20, 4));
	assert_true(mmio_write(vm, bar4, 4, 0xffffffffu));
	assert_int_equal(mmio_read(vm, bar4, 4), 0xffffe000u);
	assert_int_equal(cfg_read(vm, 1, 0x20, 4), 0xffffe000u);
	assert_true(mmio_write(vm, bar4, 4, m32));
	/* 64-bit BAR: both halves through one 8-byte write, then sized. */
	uint64_t bar2 = ecam_addr(0, 1, 0, 0x18);
	uint64_t m64 = mmio_read(vm, bar2, 8);
	assert_true(mmio_write(vm, bar2, 8, ~0ULL));
	assert_int_equal(mmio_read(vm, bar2, 8), 0xffffffffffffc00cULL);
	assert_true(mmio_write(vm, bar2, 8, m64));
	assert_int_equal(mmio_read(vm, bar2, 8), m64);
	/* Moving the BAR through ECAM moves its decode. */
	assert_true(mmio_write(vm, bar4, 4, 0xd0000000u));
	t.accesses = 0;
	assert_true(mmio_write(vm, 0xd0000010u, 4, 7));
	assert_int_equal(t.accesses, 1);
	assert_int_equal(t.last_bar, 4);
}

/* Straddling and odd-sized accesses: all-ones, writes dropped, no crash. */
static void test_ecam_bad_accesses(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	uint8_t buf[16];
	uint64_t a = ecam_addr(0, 0, 0, 0);
	uint32_t before = cfg_read(vm, 0, PCI_COMMAND, 4);
	memset(buf, 0, sizeof(buf));
	assert_true(io_mmio(&vm->io, a + 3, buf, 2, false));
	assert_int_equal(buf[0] & buf[1], 0xff);
	assert_true(io_mmio(&vm->io, a + 2, buf, 4, false));
	assert_int_equal(buf[0] & buf[1] & buf[2] & buf[3], 0xff);
	memset(buf, 0, sizeof(buf));
	assert_true(io_mmio(&vm->io, a + 4, buf, 8, false));   /* 8 bytes, not 8-aligned */
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(buf[i], 0xff);
	assert_true(io_mmio(&vm->io, a, buf, 3, false));
	assert_true(io_mmio(&vm->io, a, buf, 16, false));
	memset(buf, 0, sizeof(buf));
	assert_true(io_mmio(&vm->io, a + 4 - 1, buf, 2, true));
	assert_true(io_mmio(&vm->io, a + 4, buf, 3, true));
	assert_true(io_mmio(&vm->io, a + 4, buf, 16, true));
	assert_int_equal(cfg_read(vm, 0, PCI_COMMAND, 4), before);
	/* The last bytes of the window. */
	assert_true(io_mmio(&vm->io, PCI_ECAM_BASE + PCI_ECAM_SIZE - 4, buf, 4, false));
	assert_false(io_mmio(&vm->io, PCI_ECAM_BASE + PCI_ECAM_SIZE - 2, buf, 4, false));
}

/* ---- 64-bit BAR placement ---- */

static void test_bar64_placement(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	static const struct pci_device_info info = { .name = "big", .vendor = 1, .device = 3 };
	struct pci_device *d;
	uint64_t high = pci_mmio64_base(RAM_SIZE);
	assert_int_equal(high, 1ULL << 32);
	/* Large prefetchable: above 4 GiB; small prefetchable and non-prefetchable: below. */
	assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d), 0);
	assert_int_equal(pci_add_bar(d, 0, PCI_BAR_MEM64, 1ULL << 30, PCI_BAR_PREFETCH), 0);
	assert_int_equal(pci_add_bar(d, 2, PCI_BAR_MEM64, 1 << 20, PCI_BAR_PREFETCH), 0);
	assert_int_equal(pci_add_bar(d, 4, PCI_BAR_MEM64, 256u << 20, 0), 0);
	assert_int_equal(pci_device_realize(d), 0);
	uint64_t b0 = pci_bar_addr(d, 0), b2 = pci_bar_addr(d, 2), b4 = pci_bar_addr(d, 4);
	assert_int_equal(b0, high);
	assert_true(b2 >= PCI_MMIO32_BASE && b2 + (1 << 20) <= PCI_MMIO32_END);
	assert_true(b4 >= PCI_MMIO32_BASE && b4 + (256u << 20) <= PCI_MMIO32_END && b4 % (256u << 20) == 0);
	assert_int_equal(cfg_read(vm, 1, 0x14, 4), high >> 32);   /* upper half */
	/* The high BAR decodes there. */
	assert_true(mmio_write(vm, b0 + 0x1000, 4, 1));
	/* Fill the 32-bit window: the next prefetchable 64-bit BAR goes high,
	 * a 32-bit or non-prefetchable one gets -ENOSPC. */
	struct pci_device *d2, *d4;
	assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d2), 0);
	assert_int_equal(pci_add_bar(d2, 0, PCI_BAR_MEM32, 256u << 20, 0), 0);          /* the last 256 MiB */
	assert_int_equal(pci_add_bar(d2, 2, PCI_BAR_MEM64, 64u << 20, PCI_BAR_PREFETCH), 0);   /* no room: high */
	assert_int_equal(pci_device_realize(d2), 0);
	assert_int_equal(pci_bar_addr(d2, 0), PCI_MMIO32_END - (256u << 20));
	assert_int_equal(pci_bar_addr(d2, 2), high + (1ULL << 30));
	assert_int_equal(pci_device_add(vm->pci, &info, NULL, NULL, &d4), 0);
	assert_int_equal(pci_add_bar(d4, 0, PCI_BAR_MEM64, 4096, 0), 0);
	assert_int_equal(pci_device_realize(d4), -ENOSPC);
	/* PCI_BAR_HIGH: only prefetchable 64-bit BARs (the window is prefetchable). */
	assert_int_equal(pci_add_bar(d4, 2, PCI_BAR_MEM64, 4096, PCI_BAR_HIGH), -EINVAL);
	assert_int_equal(pci_add_bar(d4, 2, PCI_BAR_MEM32, 4096, PCI_BAR_HIGH | PCI_BAR_PREFETCH), -EINVAL);
}

/* ---- the bus's saved state ---- */

static void test_bus_state(void **state)
{
	struct vm *vm = ((struct fixture *)*state)->vm;
	struct device *bus = &vm->devices[0];
	assert_string_equal(bus->ops->name, "pci");
	assert_non_null(bus->ops->save);
	assert_non_null(bus->ops->load);
	cfg_write(vm, 0, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
	cfg_write(vm, 0, 0x0d, 1, 0x40);   /* latency timer */
	outl(vm, 0xcf8, 0x80000808u);
	void *blob;
	size_t len;
	assert_int_equal(bus->ops->save(bus->dev, &blob, &len), 0);
	assert_memory_equal(blob, "PCIB", 4);
	/* Wreck it, then load. */
	cfg_write(vm, 0, PCI_COMMAND, 2, 0);
	cfg_write(vm, 0, 0x0d, 1, 0);
	outl(vm, 0xcf8, 0);
	uint8_t *bad = malloc(len);
	memcpy(bad, blob, len);
	assert_true(bus->ops->load(bus->dev, bad, len - 1) < 0);
	assert_true(bus->ops->load(bus->dev, bad, 5) < 0);
	bad[4] = 2;
	assert_true(bus->ops->load(bus->dev, bad, len) < 0);
	memcpy(bad, blob, len);
	bad[9] ^= 1;   /* host bridge length */
	assert_true(bus->ops->load(bus->dev, bad, len) < 0);
	memcpy(bad, blob, len);
	bad[13] = 'X';   /* host bridge blob header */
	assert_true(bus->ops->load(bus->dev, bad, len) < 0);
	free(bad);
	assert_int_equal(inl(vm, 0xcf8), 0);
	assert_int_equal(bus->ops->load(bus->dev, blob, len), 0);
	free(blob);
	assert_int_equal(inl(vm, 0xcf8), 0x80000808u);
	outl(vm, 0xcf8, 0x80000004u);
	assert_int_equal(inw(vm, 0xcfc), PCI_COMMAND_MASTER);
	assert_int_equal(cfg_read(vm, 0, 0x0d, 1), 0x40);
	/* Snapshots from before the bus had save/load: latch + COMMAND. */
	uint8_t legacy[8] = { 0x0c, 0x08, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00 };
	assert_int_equal(bus->ops->load(bus->dev, legacy, sizeof(legacy)), 0);
	assert_int_equal(inl(vm, 0xcf8), 0x8000080cu);
	assert_int_equal(cfg_read(vm, 0, PCI_COMMAND, 2), 0);
}

/* ---- MSI-X ---- */

static uint64_t efd_count(int fd)
{
	uint64_t v = 0;
	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static unsigned find_cap(struct vm *vm, unsigned slot, uint8_t id, unsigned after)
{
	unsigned off = cfg_read(vm, slot, PCI_CAPABILITY_LIST, 1);
	for (unsigned n = 0; off && n < 48; n++) {
		if (cfg_read(vm, slot, off, 1) == id && off > after)
			return off;
		off = cfg_read(vm, slot, off + 1, 1);
	}
	return 0;
}

static void test_msix(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	static struct tdev t;   /* outlives the test: teardown unmaps BARs */
	struct pci_device *d = make_tdev(vm, &t, true);
	unsigned s = 1;
	unsigned cap = find_cap(vm, s, PCI_CAP_ID_MSIX, 0);
	assert_true(cap >= 0x40);
	assert_int_equal(cfg_read(vm, s, cap + 2, 2), 3);   /* 4 vectors, disabled */
	uint32_t table = cfg_read(vm, s, cap + 4, 4), pba = cfg_read(vm, s, cap + 8, 4);
	assert_int_equal(table & 7, 1);
	assert_int_equal(pba & 7, 1);
	uint64_t bar = cfg_read(vm, s, 0x14, 4) & ~0xfu;
	assert_true(bar >= PCI_MMIO32_BASE);
	uint64_t tab = bar + (table & ~7u), pb = bar + (pba & ~7u);
	assert_int_equal(pci_msix_notify(d, 0), -ENODEV);   /* disabled */
	assert_int_equal(pci_msix_notify(d, 4), -EINVAL);

	/* Enable; vectors start masked. */
	cfg_write(vm, s, cap + 2, 2, 0x8000);
	assert_true(pci_msix_enabled(d));
	assert_int_equal(mmio_read(vm, tab + 12, 4), 1);
	mmio_write(vm, tab + 0, 4, 0xfee00000u);
	mmio_write(vm, tab + 4, 4, 0);
	mmio_write(vm, tab + 8, 4, 0x4041);
	assert_int_equal(mmio_read(vm, tab + 8, 4), 0x4041);
	assert_int_equal(pci_msix_notify(d, 0), 0);          /* masked: pending */
	assert_int_equal(mmio_read(vm, pb, 8), 1);
	assert_int_equal(f->irq.routes_added, 0);
	int efd = pci_msix_eventfd(d, 0);
	assert_true(efd >= 0);
	assert_int_equal(efd_count(efd), 0);
	/* Unmask: route + irqfd set up, pending interrupt delivered, PBA cleared. */
	mmio_write(vm, tab + 12, 4, 0);
	assert_int_equal(f->irq.routes_added, 1);
	unsigned gsi = 24;
	assert_true(f->irq.used[gsi]);
	assert_int_equal(f->irq.addr[gsi], 0xfee00000u);
	assert_int_equal(f->irq.data[gsi], 0x4041);
	assert_int_equal(f->irq.irqfd[gsi], efd);
	assert_int_equal(efd_count(efd), 1);
	assert_int_equal(mmio_read(vm, pb, 8), 0);
	/* Unmasked: delivered at once. */
	assert_int_equal(pci_msix_notify(d, 0), 0);
	assert_int_equal(pci_msix_notify(d, 0), 0);
	assert_int_equal(efd_count(efd), 2);
	/* Function mask: pending, then delivered on unmask. */
	cfg_write(vm, s, cap + 2, 2, 0xc000);
	assert_int_equal(pci_msix_notify(d, 0), 0);
	assert_int_equal(efd_count(efd), 0);
	assert_int_equal(mmio_read(vm, pb, 4), 1);
	cfg_write(vm, s, cap + 2, 2, 0x8000);
	assert_int_equal(efd_count(efd), 1);
	/* New address/data while unmasked: the route follows (64-bit write). */
	mmio_write(vm, tab + 0, 8, 0x00000000fee01000ULL);
	assert_int_equal(f->irq.addr[gsi], 0xfee01000u);
	assert_true(f->irq.routes_set >= 1);
	mmio_write(vm, tab + 8, 4, 0x4042);
	assert_int_equal(f->irq.data[gsi], 0x4042);
	/* Masked change takes effect only at unmask. */
	mmio_write(vm, tab + 12, 4, 1);
	mmio_write(vm, tab + 8, 4, 0x4043);
	assert_int_equal(f->irq.data[gsi], 0x4042);
	mmio_write(vm, tab + 12, 4, 0);
	assert_int_equal(f->irq.data[gsi], 0x4043);
	/* Reserved control bits read back zero; PBA is read-only; accesses past
	 * the table and unaligned sizes are harmless. */
	mmio_write(vm, tab + 16 + 12, 4, 0xfffffffe);
	assert_int_equal(mmio_read(vm, tab + 16 + 12, 4), 0);
	mmio_write(vm, pb, 8, ~0ULL);
	assert_int_equal(mmio_read(vm, pb, 8), 0);
	mmio_write(vm, tab + 14, 4, 0xffffffff);   /* straddles entries 0 and 1 */
	mmio_read(vm, tab + 0x700, 8);
	/* Disable: INTx is back, notify refuses. */
	cfg_write(vm, s, cap + 2, 2, 0);
	assert_int_equal(pci_msix_notify(d, 0), -ENODEV);
}

static void test_intx(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	static struct tdev t, t2;   /* outlive the test: teardown unmaps BARs */
	struct pci_device *d = make_tdev(vm, &t, true);
	struct pci_device *d2 = make_tdev(vm, &t2, false);
	pci_intx_set(d, true);
	assert_true(f->irq.level[PCI_INTX_GSI]);
	assert_true(cfg_read(vm, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	pci_intx_set(d2, true);   /* shared line: stays high until both drop */
	pci_intx_set(d, false);
	assert_true(f->irq.level[PCI_INTX_GSI]);
	pci_intx_set(d2, false);
	assert_false(f->irq.level[PCI_INTX_GSI]);
	/* INTX_DISABLE masks the output, clearing it re-drives it. */
	pci_intx_set(d, true);
	cfg_write(vm, 1, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
	assert_false(f->irq.level[PCI_INTX_GSI]);
	assert_true(cfg_read(vm, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	cfg_write(vm, 1, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	assert_true(f->irq.level[PCI_INTX_GSI]);
	/* MSI-X enabled: no INTx. */
	unsigned cap = find_cap(vm, 1, PCI_CAP_ID_MSIX, 0);
	cfg_write(vm, 1, cap + 2, 2, 0x8000);
	assert_false(f->irq.level[PCI_INTX_GSI]);
	cfg_write(vm, 1, cap + 2, 2, 0);
	assert_true(f->irq.level[PCI_INTX_GSI]);
	/* VM reset: everything back to firmware state, line low. */
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (vm->devices[i].ops->reset)
			vm->devices[i].ops->reset(vm->devices[i].dev);
	assert_false(f->irq.level[PCI_INTX_GSI]);
}

/* ---- virtio-pci transport through virtio-rng ---- */

struct vdrv {
	struct vm *vm;
	struct fixture *f;
	unsigned slot;
	uint64_t common, notify, isr, device;
	uint32_t notify_mult;
	unsigned msix_cap, pci_cfg_cap;
	uint64_t msix_table;
};

#define Q_DESC 0x100000
#define Q_AVAIL 0x101000
#define Q_USED 0x102000
#define Q_BUF 0x110000

static void find_virtio(struct vdrv *v, struct fixture *f)
{
	struct vm *vm = f->vm;
	v->vm = vm;
	v->f = f;
	v->slot = 1;
	assert_int_equal(cfg_read(vm, 1, 0, 2), 0x1af4);
	assert_int_equal(cfg_read(vm, 1, 2, 2), 0x1040 + VIRTIO_ID_RNG);
	assert_int_equal(cfg_read(vm, 1, PCI_REVISION_ID, 1), 1);
	assert_int_equal(cfg_read(vm, 1, PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
	uint64_t bar4 = (cfg_read(vm, 1, 0x20, 4) & ~0xfu) | (uint64_t)cfg_read(vm, 1, 0x24, 4) << 32;
	assert_true(bar4 >= PCI_MMIO32_BASE && bar4 < PCI_MMIO32_END);
	unsigned off = 0, seen = 0;
	while ((off = find_cap(vm, 1, PCI_CAP_ID_VNDR, off)) != 0) {
		unsigned type = cfg_read(vm, 1, off + 3, 1), bar = cfg_read(vm, 1, off + 4, 1);
		uint64_t where = bar4 + cfg_read(vm, 1, off + 8, 4);
		seen |= 1u << type;
		if (type != 5)
			assert_int_equal(bar, 4);
		switch (type) {
		case 1: v->common = where; assert_true(cfg_read(vm, 1, off + 12, 4) >= 0x38); break;
		case 2: v->notify = where; v->notify_mult = cfg_read(vm, 1, off + 16, 4); break;
		case 3: v->isr = where; break;
		case 4: v->device = where; break;
		case 5: v->pci_cfg_cap = off; break;
		}
	}
	assert_int_equal(seen, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 5));   /* rng: no device cfg */
	assert_int_equal(v->notify_mult, 4);
	v->msix_cap = find_cap(vm, 1, PCI_CAP_ID_MSIX, 0);
	assert_true(v->msix_cap);
	assert_int_equal(cfg_read(vm, 1, v->msix_cap + 2, 2) & 0x7ff, 1);   /* 2 vectors */
	uint32_t t = cfg_read(vm, 1, v->msix_cap + 4, 4);
	v->msix_table = (cfg_read(vm, 1, 0x10 + 4 * (t & 7), 4) & ~0xfu) + (t & ~7u);
}

static void cw(struct vdrv *v, unsigned off, unsigned size, uint64_t val) { mmio_write(v->vm, v->common + off, size, val); }
static uint64_t cr(struct vdrv *v, unsigned off, unsigned size) { return mmio_read(v->vm, v->common + off, size); }

static int negotiate(struct vdrv *v, uint64_t want)
{
	cw(v, 0x14, 1, 0);
	assert_int_equal(cr(v, 0x14, 1), 0);
	cw(v, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	cw(v, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	cw(v, 0x00, 4, 0);
	uint64_t feat = cr(v, 0x04, 4);
	cw(v, 0x00, 4, 1);
	feat |= cr(v, 0x04, 4) << 32;
	assert_true(feat & (1ULL << VIRTIO_F_VERSION_1));
	assert_true(feat & (1ULL << VIRTIO_F_RING_EVENT_IDX));
	assert_true(feat & (1ULL << VIRTIO_F_RING_INDIRECT_DESC));
	cw(v, 0x08, 4, 0);
	cw(v, 0x0c, 4, (uint32_t)want);
	cw(v, 0x08, 4, 1);
	cw(v, 0x0c, 4, (uint32_t)(want >> 32));
	cw(v, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return (cr(v, 0x14, 1) & VIRTIO_STATUS_FEATURES_OK) ? 0 : -1;
}

static void setup_queue(struct vdrv *v, uint16_t size, uint16_t vector)
{
	memset(v->f->ram + Q_DESC, 0, 0x3000);
	cw(v, 0x16, 2, 0);
	assert_int_equal(cr(v, 0x18, 2), 64);   /* max size */
	assert_int_equal(cr(v, 0x1c, 2), 0);
	cw(v, 0x18, 2, size);
	cw(v, 0x1a, 2, vector);
	cw(v, 0x20, 4, Q_DESC);   /* two halves, as Linux writes them */
	cw(v, 0x24, 4, 0);
	cw(v, 0x28, 8, Q_AVAIL);
	cw(v, 0x30, 8, Q_USED);
	cw(v, 0x1c, 2, 1);
}

static void driver_ok(struct vdrv *v)
{
	cw(v, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
			       VIRTIO_STATUS_DRIVER_OK);
}

static void msix_setup(struct vdrv *v, unsigned vec, uint32_t data)
{
	cfg_write(v->vm, 1, v->msix_cap + 2, 2, 0x8000);
	mmio_write(v->vm, v->msix_table + 16 * vec, 4, 0xfee00000u);
	mmio_write(v->vm, v->msix_table + 16 * vec + 4, 4, 0);
	mmio_write(v->vm, v->msix_table + 16 * vec + 8, 4, data);
	mmio_write(v->vm, v->msix_table + 16 * vec + 12, 4, 0);
}

static void desc(struct vdrv *v, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = v->f->ram + Q_DESC + 16 * i;
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void offer_kick(struct vdrv *v, uint16_t head, uint16_t qsize)
{
	uint16_t *avail = (uint16_t *)(v->f->ram + Q_AVAIL);
	uint16_t idx = avail[1];
	avail[2 + idx % qsize] = head;
	__atomic_store_n(&avail[1], (uint16_t)(idx + 1), __ATOMIC_RELEASE);
	mmio_write(v->vm, v->notify + 0 * v->notify_mult, 2, 0);
}

static volatile uint16_t *used_idx(struct vdrv *v) { return (volatile uint16_t *)(v->f->ram + Q_USED + 2); }

static bool wait_for(bool (*cond)(struct vdrv *), struct vdrv *v)
{
	for (int i = 0; i < 2000; i++) {
		if (cond(v))
			return true;
		usleep(1000);
	}
	return false;
}
static uint16_t want_used;
static bool used_reached(struct vdrv *v) { return __atomic_load_n(used_idx(v), __ATOMIC_ACQUIRE) == want_used; }
static bool needs_reset(struct vdrv *v) { return cr(v, 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET; }

static int efd_for(struct fixture *f, uint32_t data)
{
	for (unsigned g = 24; g < MAX_GSI; g++)
		if (f->irq.used[g] && f->irq.data[g] == data)
			return f->irq.irqfd[g];
	return -1;
}

static void test_virtio_rng_msix(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(virtio_rng_attach(f->vm), 0);
	struct vdrv v;
	find_virtio(&v, f);
	assert_int_equal(cr(&v, 0x12, 2), 1);   /* num_queues */
	/* Without VERSION_1 the device refuses FEATURES_OK. */
	assert_int_equal(negotiate(&v, 0), -1);
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX | 1ULL << VIRTIO_F_RING_INDIRECT_DESC), 0);
	msix_setup(&v, 0, 0x30);
	msix_setup(&v, 1, 0x31);
	cw(&v, 0x10, 2, 1);   /* config vector */
	assert_int_equal(cr(&v, 0x10, 2), 1);
	cw(&v, 0x10, 2, 7);   /* no such vector: NO_VECTOR */
	assert_int_equal(cr(&v, 0x10, 2), VIRTIO_MSI_NO_VECTOR);
	cw(&v, 0x10, 2, 1);
	/* A kick before the queue exists is ignored. */
	mmio_write(f->vm, v.notify, 2, 0);
	setup_queue(&v, 8, 0);
	assert_int_equal(cr(&v, 0x1c, 2), 1);
	assert_int_equal(cr(&v, 0x1e, 2), 0);   /* notify_off */
	assert_int_equal(cr(&v, 0x20, 8), Q_DESC);
	driver_ok(&v);

	/* used_event far away: with EVENT_IDX the first interrupt still comes. */
	desc(&v, 0, Q_BUF, 64, VIRTQ_DESC_F_WRITE, 0);
	want_used = 1;
	offer_kick(&v, 0, 8);
	assert_true(wait_for(used_reached, &v));
	uint32_t *used_ring = (uint32_t *)(f->ram + Q_USED + 4);
	assert_int_equal(used_ring[0], 0);
	assert_int_equal(used_ring[1], 64);
	bool nonzero = false;
	for (int i = 0; i < 64; i++)
		nonzero |= f->ram[Q_BUF + i] != 0;
	assert_true(nonzero);
	int efd0 = efd_for(f, 0x30);
	assert_true(efd0 >= 0);
	struct pollfd pfd = { efd0, POLLIN, 0 };
	assert_int_equal(poll(&pfd, 1, 2000), 1);
	assert_int_equal(efd_count(efd0), 1);

	/* Indirect chain: two writable buffers. */
	uint8_t *tbl = f->ram + 0x120000;
	uint64_t a = Q_BUF + 0x100;
	uint32_t l = 16;
	uint16_t fl = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, nx = 1;
	memcpy(tbl, &a, 8); memcpy(tbl + 8, &l, 4); memcpy(tbl + 12, &fl, 2); memcpy(tbl + 14, &nx, 2);
	a = Q_BUF + 0x200; fl = VIRTQ_DESC_F_WRITE; nx = 0;
	memcpy(tbl + 16, &a, 8); memcpy(tbl + 24, &l, 4); memcpy(tbl + 28, &fl, 2); memcpy(tbl + 30, &nx, 2);
	desc(&v, 1, 0x120000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	want_used = 2;
	offer_kick(&v, 1, 8);
	assert_true(wait_for(used_reached, &v));
	assert_int_equal(used_ring[2], 1);
	assert_int_equal(used_ring[3], 32);

	/* Hostile: a descriptor loop puts the device in NEEDS_RESET with a config
	 * interrupt; the queue stops, nothing crashes. */
	desc(&v, 2, Q_BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
	desc(&v, 3, Q_BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	offer_kick(&v, 2, 8);
	assert_true(wait_for(needs_reset, &v));
	int efd1 = efd_for(f, 0x31);
	assert_true(efd1 >= 0);
	pfd.fd = efd1;
	assert_int_equal(poll(&pfd, 1, 2000), 1);
	assert_int_equal(*used_idx(&v), 2);

	/* Reset: status 0, queue disabled; the driver can start over. */
	cw(&v, 0x14, 1, 0);
	assert_int_equal(cr(&v, 0x14, 1), 0);
	assert_int_equal(cr(&v, 0x1c, 2), 0);
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1), 0);
	setup_queue(&v, 4, 0);
	driver_ok(&v);
	desc(&v, 0, Q_BUF, 64, VIRTQ_DESC_F_WRITE, 0);
	want_used = 1;
	offer_kick(&v, 0, 4);
	assert_true(wait_for(used_reached, &v));
	assert_false(needs_reset(&v));

	/* VIRTIO_PCI_CAP_PCI_CFG window: read num_queues through config space. */
	cfg_write(f->vm, 1, v.pci_cfg_cap + 4, 1, 4);
	cfg_write(f->vm, 1, v.pci_cfg_cap + 8, 4, 0x12);
	cfg_write(f->vm, 1, v.pci_cfg_cap + 12, 4, 2);
	assert_int_equal(cfg_read(f->vm, 1, v.pci_cfg_cap + 16, 2), 1);
}

static void test_virtio_rng_intx_and_bad_queue(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(virtio_rng_attach(f->vm), 0);
	struct vdrv v;
	find_virtio(&v, f);
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1), 0);
	/* Queue size not a power of two: NEEDS_RESET at enable. */
	setup_queue(&v, 6, VIRTIO_MSI_NO_VECTOR);
	assert_true(needs_reset(&v));
	assert_int_equal(cr(&v, 0x1c, 2), 0);
	cw(&v, 0x14, 1, 0);
	/* Queue outside RAM: NEEDS_RESET. */
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1), 0);
	cw(&v, 0x16, 2, 0);
	cw(&v, 0x20, 8, 0xf0000000ULL);
	cw(&v, 0x28, 8, Q_AVAIL);
	cw(&v, 0x30, 8, Q_USED);
	cw(&v, 0x1c, 2, 1);
	assert_true(needs_reset(&v));
	cw(&v, 0x14, 1, 0);
	/* Odd accesses to the common config, device config and notify area. */
	cw(&v, 0x01, 2, 0xffff);
	cw(&v, 0x3a, 2, 1);
	assert_int_equal(mmio_read(f->vm, v.notify + 0x100, 4), 0);
	mmio_write(f->vm, v.notify + 0x100, 2, 5);   /* no queue 64 */
	cw(&v, 0x16, 2, 9);                          /* selecting a missing queue */
	assert_int_equal(cr(&v, 0x18, 2), 0);
	cw(&v, 0x1c, 2, 1);
	/* INTx: MSI-X off, queue works with ISR + level interrupt. */
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1), 0);
	setup_queue(&v, 8, VIRTIO_MSI_NO_VECTOR);
	driver_ok(&v);
	desc(&v, 0, Q_BUF, 32, VIRTQ_DESC_F_WRITE, 0);
	want_used = 1;
	offer_kick(&v, 0, 8);
	assert_true(wait_for(used_reached, &v));
	for (int i = 0; i < 2000 && !f->irq.level[PCI_INTX_GSI]; i++)
		usleep(1000);
	assert_true(f->irq.level[PCI_INTX_GSI]);
	assert_int_equal(mmio_read(f->vm, v.isr, 1), 1);   /* queue interrupt; read clears */
	assert_false(f->irq.level[PCI_INTX_GSI]);
	assert_int_equal(mmio_read(f->vm, v.isr, 1), 0);
	/* Writable-then-readable chain: NEEDS_RESET, config interrupt via ISR bit 1. */
	desc(&v, 1, Q_BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	desc(&v, 2, Q_BUF, 8, 0, 0);
	offer_kick(&v, 1, 8);
	assert_true(wait_for(needs_reset, &v));
	assert_int_equal(mmio_read(f->vm, v.isr, 1) & 2, 2);
	/* DRIVER_OK while broken and writes to status don't clear NEEDS_RESET. */
	driver_ok(&v);
	assert_true(needs_reset(&v));
}

static void test_virtio_state(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(virtio_rng_attach(vm), 0);
	struct device *dev = &vm->devices[vm->ndevices - 1];
	assert_non_null(dev->ops->save);
	struct vdrv v;
	find_virtio(&v, f);
	assert_int_equal(negotiate(&v, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX), 0);
	msix_setup(&v, 0, 0x30);
	setup_queue(&v, 8, 0);
	driver_ok(&v);
	desc(&v, 0, Q_BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	want_used = 1;
	offer_kick(&v, 0, 8);
	assert_true(wait_for(used_reached, &v));
	/* Move the BAR too: the restored BAR address must be the one in use. */
	uint64_t bar4 = cfg_read(vm, 1, 0x20, 4) & ~0xfu;
	uint8_t st = (uint8_t)cr(&v, 0x14, 1);

	void *blob;
	size_t len;
	assert_int_equal(dev->ops->save(dev->dev, &blob, &len), 0);
	/* Wreck the live state: reset, MSI-X off, BAR moved. */
	cw(&v, 0x14, 1, 0);
	cfg_write(vm, 1, v.msix_cap + 2, 2, 0);
	cfg_write(vm, 1, 0x20, 4, 0xe0000000u);
	assert_int_equal(cr(&v, 0x14, 1), 0xff);   /* nothing there any more: BAR moved */

	/* Corrupt blobs are refused without touching the device. */
	uint8_t *bad = malloc(len);
	memcpy(bad, blob, len);
	assert_true(dev->ops->load(dev->dev, bad, len - 1) < 0);
	assert_true(dev->ops->load(dev->dev, bad, 3) < 0);
	bad[0] = 'X';
	assert_true(dev->ops->load(dev->dev, bad, len) < 0);
	memcpy(bad, blob, len);
	bad[5] = 2;   /* other device id */
	assert_true(dev->ops->load(dev->dev, bad, len) < 0);
	memcpy(bad, blob, len);
	bad[len - 38] = 7;   /* queue 0 size 7 */
	assert_true(dev->ops->load(dev->dev, bad, len) < 0);
	free(bad);

	assert_int_equal(dev->ops->load(dev->dev, blob, len), 0);
	free(blob);
	assert_int_equal(cfg_read(vm, 1, 0x20, 4) & ~0xfu, bar4);
	assert_int_equal(cr(&v, 0x14, 1), st);
	assert_int_equal(cr(&v, 0x1c, 2), 1);
	assert_int_equal(cr(&v, 0x18, 2), 8);
	assert_int_equal(cr(&v, 0x28, 8), Q_AVAIL);
	assert_true(cfg_read(vm, 1, v.msix_cap + 2, 2) & 0x8000);
	/* A loaded device is held until the VM runs (vm_run calls resume). */
	dev->ops->resume(dev->dev);
	/* The queue continues where it was: next request gets used entry 1. */
	int efd0 = efd_for(f, 0x30);
	assert_true(efd0 >= 0);
	efd_count(efd0);
	desc(&v, 1, Q_BUF + 0x100, 16, VIRTQ_DESC_F_WRITE, 0);
	((uint16_t *)(f->ram + Q_AVAIL))[2 + 8] = 1;   /* used_event: interrupt after used entry 1 */
	want_used = 2;
	offer_kick(&v, 1, 8);
	assert_true(wait_for(used_reached, &v));
	uint32_t *used_ring = (uint32_t *)(f->ram + Q_USED + 4);
	assert_int_equal(used_ring[2], 1);
	struct pollfd pfd = { efd0, POLLIN, 0 };
	assert_int_equal(poll(&pfd, 1, 2000), 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_host_bridge), T(test_reset_port_shared_with_cf8), T(test_bars), T(test_bar_move_and_decode),
		T(test_capabilities), T(test_slots_full), T(test_ecam_matches_type1), T(test_ecam_bar_sizing),
		T(test_ecam_bad_accesses), T(test_bar64_placement), T(test_bus_state), T(test_msix), T(test_intx), T(test_virtio_rng_msix),
		T(test_virtio_rng_intx_and_bad_queue), T(test_virtio_state),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
