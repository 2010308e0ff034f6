/* virtio-blk driven end to end through the virtio-pci transport by a fake
 * driver, on a bare struct vm with fake guest RAM and a fake interrupt
 * controller (no /dev/kvm), over a real temporary disk file and the real block
 * backend: read/write/flush/get-id, read-only disks, malformed requests,
 * discard/write-zeroes, many requests in flight, reset, the --disk parser. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>
#include <vmsvc/virtio.h>
#include <vmsvc/vm.h>
#include "devices/virtio_blk_internal.h"

#define RAM_SIZE (16u << 20)
#define DISK_SECTORS 8192u     /* 4 MiB */
#define QSIZE 32u

#define Q_DESC 0x100000
#define Q_AVAIL 0x101000
#define Q_USED 0x102000
#define Q_INDIRECT 0x104000
#define BUF 0x200000           /* request buffers: 64 KiB each */
#define BUF_STRIDE 0x10000

/* ---- fake interrupt controller (interrupts are not looked at: we poll) ---- */
static int fake_set_level(struct irqchip *c, unsigned gsi, bool level) { (void)c; (void)gsi; (void)level; return 0; }
static int fake_signal_msi(struct irqchip *c, uint64_t a, uint32_t d) { (void)c; (void)a; (void)d; return 0; }
static int fake_route_add(struct irqchip *c, uint64_t a, uint32_t d, unsigned *gsi) { (void)c; (void)a; (void)d; *gsi = 30; return 0; }
static int fake_route_set(struct irqchip *c, unsigned g, uint64_t a, uint32_t d) { (void)c; (void)g; (void)a; (void)d; return 0; }
static void fake_route_del(struct irqchip *c, unsigned g) { (void)c; (void)g; }
static int fake_irqfd(struct irqchip *c, unsigned g, int efd, bool assign) { (void)c; (void)g; (void)efd; (void)assign; return 0; }
static const struct irqchip_ops fake_irq_ops = {
	.name = "fake", .set_level = fake_set_level, .signal_msi = fake_signal_msi,
	.msi_route_add = fake_route_add, .msi_route_set = fake_route_set, .msi_route_del = fake_route_del,
	.irqfd = fake_irqfd,
};

struct fixture {
	struct vm *vm;
	uint8_t *ram;
	char path[64];
	int fd;                 /* the disk file, to check contents behind the device */
	/* driver side */
	uint64_t common, notify, device;
	uint16_t avail_idx, used_seen;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!f || !vm || !(f->ram = calloc(1, RAM_SIZE)))
		return -1;
	io_bus_init(&vm->io);
	bus_init(&vm->bus);
	pthread_mutex_init(&vm->end_lock, NULL);
	vm->kvm_fd = vm->vm_fd = -1;
	vm->irq.ops = &fake_irq_ops;
	vm->mem.nregions = 1;
	vm->mem.region[0] = (struct mem_region){ 0, RAM_SIZE, 0, f->ram };
	vm->mem.ram_size = RAM_SIZE;
	vm->cfg.mem_size = RAM_SIZE;
	f->vm = vm;
	if (pci_bus_create(vm) != 0)
		return -1;
	snprintf(f->path, sizeof(f->path), "/tmp/test_virtio_blk.XXXXXX");
	f->fd = mkstemp(f->path);
	if (f->fd < 0 || ftruncate(f->fd, (off_t)DISK_SECTORS * 512) != 0)
		return -1;
	/* Every sector starts with its number, so misplaced reads show. */
	for (uint64_t s = 0; s < DISK_SECTORS; s++)
		if (pwrite(f->fd, &s, sizeof(s), (off_t)(s * 512)) != sizeof(s))
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
	io_bus_destroy(&f->vm->io);
	bus_cleanup(&f->vm->bus);
	pthread_mutex_destroy(&f->vm->end_lock);
	close(f->fd);
	unlink(f->path);
	free(f->vm);
	free(f->ram);
	free(f);
	return 0;
}

/* ---- guest-side accessors ---- */
static void outl(struct vm *vm, uint16_t port, uint32_t v) { io_pio(&vm->io, port, &v, 4, true); }
static uint32_t inl(struct vm *vm, uint16_t port) { uint32_t v; io_pio(&vm->io, port, &v, 4, false); return v; }
static uint32_t cfg_read(struct vm *vm, unsigned off, unsigned size)
{
	outl(vm, 0xcf8, 0x80000000u | 1u << 11 | (off & 0xfc));
	uint32_t v = inl(vm, 0xcfc);
	v >>= 8 * (off & 3);
	return size == 4 ? v : v & ((1u << (8 * size)) - 1);
}
static uint64_t mmio_read(struct vm *vm, uint64_t gpa, unsigned size)
{
	uint64_t v = 0;
	io_mmio(&vm->io, gpa, &v, size, false);
	return v;
}
static void mmio_write(struct vm *vm, uint64_t gpa, unsigned size, uint64_t v) { io_mmio(&vm->io, gpa, &v, size, true); }
static void cw(struct fixture *f, unsigned off, unsigned size, uint64_t v) { mmio_write(f->vm, f->common + off, size, v); }
static uint64_t cr(struct fixture *f, unsigned off, unsigned size) { return mmio_read(f->vm, f->common + off, size); }
static uint64_t devcfg(struct fixture *f, unsigned off, unsigned size) { return mmio_read(f->vm, f->device + off, size); }

static void find_device(struct fixture *f)
{
	assert_int_equal(cfg_read(f->vm, 0, 2), 0x1af4);
	assert_int_equal(cfg_read(f->vm, 2, 2), 0x1040 + VIRTIO_ID_BLOCK);
	assert_int_equal(cfg_read(f->vm, 8, 4) >> 8, 0x010000);   /* class: mass storage */
	uint64_t bar4 = (cfg_read(f->vm, 0x20, 4) & ~0xfu) | (uint64_t)cfg_read(f->vm, 0x24, 4) << 32;
	unsigned off = cfg_read(f->vm, PCI_CAPABILITY_LIST, 1);
	for (unsigned n = 0; off && n < 48; n++, off = cfg_read(f->vm, off + 1, 1)) {
		if (cfg_read(f->vm, off, 1) != PCI_CAP_ID_VNDR)
			continue;
		uint64_t where = bar4 + cfg_read(f->vm, off + 8, 4);
		switch (cfg_read(f->vm, off + 3, 1)) {
		case 1: f->common = where; break;
		case 2: f->notify = where; break;
		case 4: f->device = where; assert_int_equal(cfg_read(f->vm, off + 12, 4), VBLK_CFG_SIZE); break;
		}
	}
	assert_true(f->common && f->notify && f->device);
}

static uint64_t device_features(struct fixture *f)
{
	cw(f, 0x00, 4, 0);
	uint64_t feat = cr(f, 0x04, 4);
	cw(f, 0x00, 4, 1);
	return feat | cr(f, 0x04, 4) << 32;
}

/* Reset, negotiate everything offered, one queue of QSIZE, DRIVER_OK. */
static uint64_t start(struct fixture *f)
{
	cw(f, 0x14, 1, 0);
	assert_int_equal(cr(f, 0x14, 1), 0);
	cw(f, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	uint64_t feat = device_features(f);
	cw(f, 0x08, 4, 0);
	cw(f, 0x0c, 4, (uint32_t)feat);
	cw(f, 0x08, 4, 1);
	cw(f, 0x0c, 4, (uint32_t)(feat >> 32));
	cw(f, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	assert_true(cr(f, 0x14, 1) & VIRTIO_STATUS_FEATURES_OK);
	memset(f->ram + Q_DESC, 0, 0x3000);
	f->avail_idx = f->used_seen = 0;
	cw(f, 0x16, 2, 0);
	assert_int_equal(cr(f, 0x18, 2), VBLK_QUEUE_SIZE);
	cw(f, 0x18, 2, QSIZE);
	cw(f, 0x1a, 2, VIRTIO_MSI_NO_VECTOR);
	cw(f, 0x20, 8, Q_DESC);
	cw(f, 0x28, 8, Q_AVAIL);
	cw(f, 0x30, 8, Q_USED);
	cw(f, 0x1c, 2, 1);
	cw(f, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
			       VIRTIO_STATUS_DRIVER_OK);
	return feat;
}

static void put_desc(uint8_t *table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = table + 16 * i;
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* A chain of segments {gpa, len, writable} at descriptors head..head+n-1. */
struct seg {
	uint64_t gpa;
	uint32_t len;
	bool w;
};
static void chain(struct fixture *f, unsigned head, const struct seg *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		put_desc(f->ram + Q_DESC, head + i, s[i].gpa, s[i].len,
			 (uint16_t)((s[i].w ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
			 (uint16_t)(head + i + 1));
}

static void make_avail(struct fixture *f, unsigned head)
{
	uint16_t *avail = (uint16_t *)(f->ram + Q_AVAIL);
	avail[2 + f->avail_idx % QSIZE] = (uint16_t)head;
	f->avail_idx++;
	__atomic_store_n(&avail[1], f->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct fixture *f) { mmio_write(f->vm, f->notify, 2, 0); }

static uint16_t used_idx(struct fixture *f) { return __atomic_load_n((uint16_t *)(f->ram + Q_USED + 2), __ATOMIC_ACQUIRE); }
static bool needs_reset(struct fixture *f) { return cr(f, 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET; }

/* Wait until `n` more used entries appeared; false on timeout. */
static bool wait_used(struct fixture *f, unsigned n)
{
	for (int i = 0; i < 5000; i++) {
		if ((uint16_t)(used_idx(f) - f->used_seen) >= n) {
			f->used_seen = (uint16_t)(f->used_seen + n);
			return true;
		}
		if (needs_reset(f))
			return false;
		usleep(1000);
	}
	return false;
}

static uint32_t used_len(struct fixture *f, uint16_t i)
{
	uint32_t *ring = (uint32_t *)(f->ram + Q_USED + 4);
	return ring[2 * (i % QSIZE) + 1];
}

/* Request layout in one BUF slot: header at +0, segments at +0x100, status at
 * +0x1ff, data at +0x1000. */
#define HDR(slot) (BUF + (uint64_t)(slot) * BUF_STRIDE)
#define SEGS(slot) (HDR(slot) + 0x100)
#define STATUS(slot) (HDR(slot) + 0x1ff)
#define DATA(slot) (HDR(slot) + 0x1000)

static void write_hdr(struct fixture *f, unsigned slot, uint32_t type, uint64_t sector)
{
	uint8_t *h = f->ram + HDR(slot);
	memset(h, 0, 16);
	memcpy(h, &type, 4);
	memcpy(h + 8, &sector, 8);
	f->ram[STATUS(slot)] = 0xee;
}

/* Simple request: header, optional data (direction from the type), status. */
static uint8_t simple(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len, uint32_t *used)
{
	write_hdr(f, 0, type, sector);
	struct seg s[3];
	unsigned n = 0;
	s[n++] = (struct seg){ HDR(0), 16, false };
	if (len)
		s[n++] = (struct seg){ DATA(0), len, type != VIRTIO_BLK_T_OUT };
	s[n++] = (struct seg){ STATUS(0), 1, true };
	chain(f, 0, s, n);
	uint16_t at = f->used_seen;
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	if (used)
		*used = used_len(f, at);
	return f->ram[STATUS(0)];
}

static int attach(struct fixture *f, const char *opts)
{
	char spec[128];
	snprintf(spec, sizeof(spec), "%s%s", f->path, opts);
	int r = virtio_blk_attach(f->vm, spec);
	if (r == 0)
		find_device(f);
	return r;
}

/* ---- tests ---- */

static void test_config_and_features(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ",serial=unit-serial"), 0);
	uint64_t feat = device_features(f);
	assert_true(feat & 1ULL << VIRTIO_F_VERSION_1);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_FLUSH);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_SEG_MAX);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_BLK_SIZE);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	assert_false(feat & 1ULL << VIRTIO_BLK_F_RO);
	assert_int_equal(devcfg(f, VBLK_CFG_CAPACITY, 8), DISK_SECTORS);
	assert_int_equal(devcfg(f, VBLK_CFG_CAPACITY, 4), DISK_SECTORS);   /* narrower reads work too */
	assert_int_equal(devcfg(f, VBLK_CFG_SEG_MAX, 4), VBLK_SEG_MAX);
	assert_int_equal(devcfg(f, VBLK_CFG_SIZE_MAX, 4), VBLK_SIZE_MAX);
	assert_int_equal(devcfg(f, VBLK_CFG_BLK_SIZE, 4), 512);
	assert_int_equal(devcfg(f, VBLK_CFG_NUM_QUEUES, 2), 1);
	assert_int_equal(devcfg(f, VBLK_CFG_MAX_WZ_SEG, 4), VBLK_MAX_DWZ_SEGS);
	assert_int_equal(devcfg(f, VBLK_CFG_WZ_MAY_UNMAP, 1), 1);
	/* The configuration is read-only. */
	mmio_write(f->vm, f->device + VBLK_CFG_CAPACITY, 4, 5);
	assert_int_equal(devcfg(f, VBLK_CFG_CAPACITY, 8), DISK_SECTORS);
}

static void test_read_write_flush_id(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ",serial=unit-serial"), 0);
	start(f);
	uint32_t used;
	/* Read sectors 10..17. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 10, 4096, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 4096 + 1);
	for (uint64_t i = 0; i < 8; i++)
		assert_memory_equal(f->ram + DATA(0) + i * 512, &(uint64_t){ 10 + i }, 8);
	/* Write two sectors at 100, then flush: the file has them. */
	memset(f->ram + DATA(0), 0xab, 1024);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, 100, 1024, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 1);
	assert_int_equal(simple(f, VIRTIO_BLK_T_FLUSH, 0, 0, NULL), VIRTIO_BLK_S_OK);
	uint8_t back[1024];
	assert_int_equal(pread(f->fd, back, sizeof(back), 100 * 512), (ssize_t)sizeof(back));
	for (unsigned i = 0; i < sizeof(back); i++)
		assert_int_equal(back[i], 0xab);
	/* GET_ID: 20 bytes, zero padded. */
	memset(f->ram + DATA(0), 0x55, 64);
	assert_int_equal(simple(f, VIRTIO_BLK_T_GET_ID, 0, 20, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 21);
	assert_string_equal((char *)f->ram + DATA(0), "unit-serial");
	assert_int_equal(f->ram[DATA(0) + 19], 0);
	/* Last sector exactly: fine. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 512, NULL), VIRTIO_BLK_S_OK);

	/* Header split 5 + 11 bytes over two descriptors, data in three pieces
	 * (the first sharing the header's second descriptor), status alone. */
	memset(f->ram + DATA(1), 0x11, 1536);
	write_hdr(f, 1, VIRTIO_BLK_T_OUT, 200);
	uint64_t d = DATA(1) - 11;
	memmove(f->ram + d, f->ram + HDR(1) + 5, 11);   /* header tail right before the data */
	struct seg s[] = {
		{ HDR(1), 5, false }, { d, 11 + 100, false }, { DATA(1) + 100, 1000, false },
		{ DATA(1) + 1100, 436, false }, { STATUS(1), 1, true },
	};
	chain(f, 4, s, 5);
	make_avail(f, 4);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(1)], VIRTIO_BLK_S_OK);
	uint8_t b3[1536];
	assert_int_equal(pread(f->fd, b3, sizeof(b3), 200 * 512), (ssize_t)sizeof(b3));
	for (unsigned i = 0; i < sizeof(b3); i++)
		assert_int_equal(b3[i], 0x11);

	/* Read with the status byte sharing the data's last descriptor, via an
	 * indirect table. */
	write_hdr(f, 2, VIRTIO_BLK_T_IN, 12);
	put_desc(f->ram + Q_INDIRECT, 0, HDR(2), 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(f->ram + Q_INDIRECT, 1, DATA(2), 513, VIRTQ_DESC_F_WRITE, 0);
	put_desc(f->ram + Q_DESC, 8, Q_INDIRECT, 32, VIRTQ_DESC_F_INDIRECT, 0);
	f->ram[DATA(2) + 512] = 0xee;
	uint16_t at = f->used_seen;
	make_avail(f, 8);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[DATA(2) + 512], VIRTIO_BLK_S_OK);
	assert_int_equal(used_len(f, at), 513);
	assert_memory_equal(f->ram + DATA(2), &(uint64_t){ 12 }, 8);
	assert_false(needs_reset(f));
}

static void test_bad_requests(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	start(f);
	/* Unknown type. */
	assert_int_equal(simple(f, 0x7f, 0, 0, NULL), VIRTIO_BLK_S_UNSUPP);
	/* Data not a multiple of 512. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 0, 100, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, 0, 700, NULL), VIRTIO_BLK_S_IOERR);
	/* Out of range: straddling the end, past it, and sectors that overflow. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 1024, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, DISK_SECTORS, 512, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, 1024, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, UINT64_MAX / 512 + 1, 512, NULL), VIRTIO_BLK_S_IOERR);
	/* Header too short (8 readable bytes). */
	write_hdr(f, 0, VIRTIO_BLK_T_IN, 0);
	struct seg s[] = { { HDR(0), 8, false }, { DATA(0), 512, true }, { STATUS(0), 1, true } };
	chain(f, 0, s, 3);
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(0)], VIRTIO_BLK_S_IOERR);
	/* No header at all (only writable descriptors). */
	chain(f, 0, &s[1], 2);
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(0)], VIRTIO_BLK_S_IOERR);
	/* Still healthy, and the disk is unchanged. */
	assert_false(needs_reset(f));
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 0, 512, NULL), VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &(uint64_t){ 0 }, 8);

	/* No writable status byte: structural, NEEDS_RESET. */
	write_hdr(f, 0, VIRTIO_BLK_T_OUT, 0);
	struct seg w[] = { { HDR(0), 16, false }, { DATA(0), 512, false } };
	chain(f, 0, w, 2);
	make_avail(f, 0);
	kick(f);
	for (int i = 0; i < 2000 && !needs_reset(f); i++)
		usleep(1000);
	assert_true(needs_reset(f));
	uint64_t s0;
	assert_int_equal(pread(f->fd, &s0, 8, 0), 8);
	assert_int_equal(s0, 0);

	/* Reset and start over: works again. */
	start(f);
	assert_false(needs_reset(f));
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 1, 512, NULL), VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &(uint64_t){ 1 }, 8);
}

static void test_head_reused_in_flight(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	start(f);
	/* The same head twice in one batch: the first is in the backend when the
	 * second is popped (completions run later on the same thread). */
	write_hdr(f, 0, VIRTIO_BLK_T_IN, 0);
	struct seg s[] = { { HDR(0), 16, false }, { DATA(0), 4096, true }, { STATUS(0), 1, true } };
	chain(f, 0, s, 3);
	make_avail(f, 0);
	make_avail(f, 0);
	kick(f);
	for (int i = 0; i < 2000 && !needs_reset(f); i++)
		usleep(1000);
	assert_true(needs_reset(f));
	start(f);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 3, 512, NULL), VIRTIO_BLK_S_OK);
}

static void test_many_in_flight(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	start(f);
	/* QSIZE writes of 8 sectors each (indirect chains), one kick; then as
	 * many reads back. */
	for (int pass = 0; pass < 2; pass++) {
		uint32_t type = pass == 0 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
		bool in = type == VIRTIO_BLK_T_IN;
		for (unsigned r = 0; r < QSIZE; r++) {
			write_hdr(f, r, type, 1000 + 8 * r);
			memset(f->ram + DATA(r), in ? 0 : (int)(r + 1), 4096);
			uint8_t *tbl = f->ram + Q_INDIRECT + 64 * r;
			put_desc(tbl, 0, HDR(r), 16, VIRTQ_DESC_F_NEXT, 1);
			put_desc(tbl, 1, DATA(r), 4096, (uint16_t)(VIRTQ_DESC_F_NEXT | (in ? VIRTQ_DESC_F_WRITE : 0)), 2);
			put_desc(tbl, 2, STATUS(r), 1, VIRTQ_DESC_F_WRITE, 0);
			put_desc(f->ram + Q_DESC, r, Q_INDIRECT + 64 * r, 48, VIRTQ_DESC_F_INDIRECT, 0);
			make_avail(f, r);
		}
		kick(f);
		assert_true(wait_used(f, QSIZE));
		for (unsigned r = 0; r < QSIZE; r++) {
			assert_int_equal(f->ram[STATUS(r)], VIRTIO_BLK_S_OK);
			if (in)
				for (unsigned i = 0; i < 4096; i++)
					assert_int_equal(f->ram[DATA(r) + i], r + 1);
		}
	}
	/* Contiguous requests of one batch went out merged (read after the used
	 * index, which the I/O thread published after counting). */
	struct virtio_blk *d = f->vm->devices[f->vm->ndevices - 1].dev;
	assert_true(__atomic_load_n(&d->merged, __ATOMIC_RELAXED) >= 2);
}

static void test_read_only(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ",ro"), 0);
	uint64_t feat = start(f);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_RO);
	assert_false(feat & 1ULL << VIRTIO_BLK_F_DISCARD);
	assert_false(feat & 1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 5, 512, NULL), VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &(uint64_t){ 5 }, 8);
	memset(f->ram + DATA(0), 0xcc, 512);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, 5, 512, NULL), VIRTIO_BLK_S_IOERR);   /* as QEMU */
	/* Discard/write-zeroes are not offered: UNSUPP. */
	write_hdr(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
	uint8_t seg[16] = { 5 };
	seg[8] = 1;
	memcpy(f->ram + SEGS(0), seg, 16);
	struct seg s[] = { { HDR(0), 16, false }, { SEGS(0), 16, false }, { STATUS(0), 1, true } };
	chain(f, 0, s, 3);
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(0)], VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(simple(f, VIRTIO_BLK_T_FLUSH, 0, 0, NULL), VIRTIO_BLK_S_OK);
	uint64_t s5;
	assert_int_equal(pread(f->fd, &s5, 8, 5 * 512), 8);
	assert_int_equal(s5, 5);
}

/* DISCARD / WRITE_ZEROES with `n` segments from `segs` (sector, count, flags). */
static uint8_t dwz(struct fixture *f, uint32_t type, const uint32_t (*segs)[3], unsigned n)
{
	write_hdr(f, 0, type, 0);
	for (unsigned i = 0; i < n; i++) {
		uint64_t sector = segs[i][0];
		memcpy(f->ram + SEGS(0) + 16 * i, &sector, 8);
		memcpy(f->ram + SEGS(0) + 16 * i + 8, &segs[i][1], 4);
		memcpy(f->ram + SEGS(0) + 16 * i + 12, &segs[i][2], 4);
	}
	/* Header and segments in one descriptor. */
	memcpy(f->ram + SEGS(0) - 16, f->ram + HDR(0), 16);
	struct seg s[] = { { SEGS(0) - 16, 16 + 16 * n, false }, { STATUS(0), 1, true } };
	chain(f, 0, s, 2);
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	return f->ram[STATUS(0)];
}

static void test_discard_write_zeroes(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	uint64_t feat = start(f);
	assert_true(feat & 1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	/* Two write-zeroes segments (one with unmap). */
	const uint32_t wz[2][3] = { { 300, 8, 0 }, { 400, 16, VIRTIO_BLK_WZ_FLAG_UNMAP } };
	assert_int_equal(dwz(f, VIRTIO_BLK_T_WRITE_ZEROES, wz, 2), VIRTIO_BLK_S_OK);
	uint8_t buf[16 * 512];
	assert_int_equal(pread(f->fd, buf, 8 * 512, 300 * 512), 8 * 512);
	for (unsigned i = 0; i < 8 * 512; i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(pread(f->fd, buf, 16 * 512, 400 * 512), 16 * 512);
	for (unsigned i = 0; i < 16 * 512; i++)
		assert_int_equal(buf[i], 0);
	uint64_t s308;
	assert_int_equal(pread(f->fd, &s308, 8, 308 * 512), 8);
	assert_int_equal(s308, 308);   /* neighbours untouched */
	/* Unknown flag: UNSUPP; out of range: IOERR; too many segments: IOERR;
	 * a segment above max_write_zeroes_sectors: IOERR. */
	const uint32_t bad_flag[1][3] = { { 0, 8, 2 } };
	assert_int_equal(dwz(f, VIRTIO_BLK_T_WRITE_ZEROES, bad_flag, 1), VIRTIO_BLK_S_UNSUPP);
	const uint32_t oor[1][3] = { { DISK_SECTORS - 4, 8, 0 } };
	assert_int_equal(dwz(f, VIRTIO_BLK_T_WRITE_ZEROES, oor, 1), VIRTIO_BLK_S_IOERR);
	uint32_t many[VBLK_MAX_DWZ_SEGS + 1][3];
	for (unsigned i = 0; i <= VBLK_MAX_DWZ_SEGS; i++) {
		many[i][0] = 16 * i;
		many[i][1] = 8;
		many[i][2] = 0;
	}
	assert_int_equal(dwz(f, VIRTIO_BLK_T_WRITE_ZEROES, (const uint32_t(*)[3])many, VBLK_MAX_DWZ_SEGS + 1),
			 VIRTIO_BLK_S_IOERR);
	const uint32_t huge[1][3] = { { 0, VBLK_MAX_DWZ_SECTORS + 1, 0 } };
	assert_int_equal(dwz(f, VIRTIO_BLK_T_WRITE_ZEROES, huge, 1), VIRTIO_BLK_S_IOERR);
	/* Payload not a whole number of segments. */
	write_hdr(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
	struct seg s[] = { { HDR(0), 16, false }, { SEGS(0), 10, false }, { STATUS(0), 1, true } };
	chain(f, 0, s, 3);
	make_avail(f, 0);
	kick(f);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(0)], VIRTIO_BLK_S_IOERR);
	uint64_t s0;
	assert_int_equal(pread(f->fd, &s0, 8, 16 * 512), 8);
	assert_int_equal(s0, 16);   /* nothing of the rejected requests happened */

	if (feat & 1ULL << VIRTIO_BLK_F_DISCARD) {
		const uint32_t d[1][3] = { { 600, 64, 0 } };
		assert_int_equal(dwz(f, VIRTIO_BLK_T_DISCARD, d, 1), VIRTIO_BLK_S_OK);
		/* Unmap is not a discard flag. */
		const uint32_t du[1][3] = { { 600, 8, VIRTIO_BLK_WZ_FLAG_UNMAP } };
		assert_int_equal(dwz(f, VIRTIO_BLK_T_DISCARD, du, 1), VIRTIO_BLK_S_UNSUPP);
	}
	assert_false(needs_reset(f));
}

/* A held device (loaded or quiesced) leaves a kicked read of `sector` alone
 * until its resume op runs; then the read completes. */
static void expect_held_until_resume(struct fixture *f, struct device *dev, uint64_t sector)
{
	write_hdr(f, 0, VIRTIO_BLK_T_IN, sector);
	struct seg s0[] = { { HDR(0), 16, false }, { DATA(0), 512, true }, { STATUS(0), 1, true } };
	chain(f, 0, s0, 3);
	uint16_t before = used_idx(f);
	make_avail(f, 0);
	kick(f);
	usleep(5000);
	assert_int_equal(used_idx(f), before);
	dev->ops->resume(dev->dev);
	assert_true(wait_used(f, 1));
	assert_int_equal(f->ram[STATUS(0)], VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &sector, 8);
}

static void test_reset_with_requests(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	for (int round = 0; round < 20; round++) {
		start(f);
		for (unsigned r = 0; r < 8; r++) {
			write_hdr(f, r, r % 2 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, 8 * r);
			struct seg s[] = { { HDR(r), 16, false }, { DATA(r), 32768, !(r % 2) }, { STATUS(r), 1, true } };
			chain(f, 3 * r, s, 3);
			make_avail(f, 3 * r);
		}
		kick(f);
		if (round % 2)
			usleep(200);
		cw(f, 0x14, 1, 0);   /* reset: everything in flight is waited for, nothing pushed after */
		assert_int_equal(cr(f, 0x14, 1), 0);
		uint16_t u = used_idx(f);
		usleep(2000);
		assert_int_equal(used_idx(f), u);
	}
	start(f);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 7, 512, NULL), VIRTIO_BLK_S_OK);
	/* VM-level reset through the device ops, and a save blob. */
	struct device *dev = &f->vm->devices[f->vm->ndevices - 1];
	assert_string_equal(dev->ops->name, "virtio-blk");
	dev->ops->reset(dev->dev);
	assert_int_equal(cr(f, 0x14, 1), 0);
	/* Save with a request completed but not yet seen, load it back: the
	 * driver continues where it was. */
	start(f);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 9, 512, NULL), VIRTIO_BLK_S_OK);
	void *blob;
	size_t len;
	assert_int_equal(dev->ops->save(dev->dev, &blob, &len), 0);
	assert_int_equal(dev->ops->load(dev->dev, blob, len), 0);
	free(blob);
	assert_true(cr(f, 0x14, 1) & VIRTIO_STATUS_DRIVER_OK);
	/* A loaded device is held until the VM runs: a request kicked now waits. */
	expect_held_until_resume(f, dev, 3000);
	/* Quiesce holds too, resume releases. */
	assert_int_equal(dev->ops->quiesce(dev->dev), 0);
	expect_held_until_resume(f, dev, 3001);
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 4000, 512, NULL), VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &(uint64_t){ 4000 }, 8);   /* the round writes reached up to 8 * 7 + 64 */
}

static void test_attach_errors(void **state)
{
	struct fixture *f = *state;
	unsigned before = f->vm->ndevices;
	assert_int_equal(attach(f, ",bogus=1"), -EINVAL);
	assert_non_null(strstr(err_msg(), "bogus"));
	assert_int_equal(attach(f, ",cache=sometimes"), -EINVAL);
	assert_int_equal(virtio_blk_attach(f->vm, "/nonexistent/disk.img"), -ENOENT);
	assert_int_equal(f->vm->ndevices, before);
}

static void test_parse_spec(void **state)
{
	(void)state;
	struct blk_spec s;
	char *buf;
	assert_int_equal(virtio_blk_parse_spec("a.img,ro,serial=xyz,cache=none", &s, &buf), 0);
	assert_string_equal(s.path, "a.img");
	assert_true(s.read_only);
	assert_string_equal(s.serial, "xyz");
	assert_int_equal(s.cache, BLK_CACHE_NONE);
	assert_null(s.overlay);
	free(buf);
	assert_int_equal(virtio_blk_parse_spec("b.img,overlay=o.img,cache=writeback", &s, &buf), 0);
	assert_string_equal(s.overlay, "o.img");
	assert_int_equal(s.cache, BLK_CACHE_WRITEBACK);
	assert_false(s.read_only);
	free(buf);
	assert_int_equal(virtio_blk_parse_spec("c.img,ephemeral", &s, &buf), 0);
	assert_true(s.ephemeral);
	free(buf);
	const char *bad[] = { "", ",ro", "a.img,ro=1", "a.img,overlay=", "a.img,overlay=x,ephemeral",
			      "a.img,serial=123456789012345678901", "a.img,cache", "a.img,what" };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(virtio_blk_parse_spec(bad[i], &s, &buf), -EINVAL);
		assert_null(buf);
		assert_true(strlen(err_msg()) > 0);
	}
}

/* ---- service bus gates (docs/bus.md) ---- */

static enum bus_verdict blk_gate(void *opaque, struct bus_event *ev)
{
	(void)opaque;
	if (ev->u.blk.op == BUS_BLK_WRITE)
		return BUS_DENY;
	if (ev->u.blk.op == BUS_BLK_READ && ev->u.blk.sector == 10) {
		ev->u.blk.sector = 20;   /* redirected */
		return BUS_REWRITTEN;
	}
	if (ev->u.blk.op == BUS_BLK_READ && ev->u.blk.sector == 30) {
		ev->u.blk.sector = DISK_SECTORS;   /* redirected out of range */
		return BUS_REWRITTEN;
	}
	return BUS_ALLOW;
}

struct blk_seen {
	unsigned done, write_ioerr, denied_requests;
	uint64_t last_sector;
};

static void blk_observe(void *opaque, const struct bus_event *ev)
{
	struct blk_seen *s = opaque;
	if (ev->type == BUS_EV_BLK_REQUEST) {
		s->denied_requests += ev->verdict == BUS_DENY;
		return;
	}
	s->done++;
	s->last_sector = ev->u.blk.sector;
	if (ev->u.blk.op == BUS_BLK_WRITE && ev->u.blk.status == VIRTIO_BLK_S_IOERR && ev->u.blk.dev == 0)
		s->write_ioerr++;
}

static void test_bus_gate(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(attach(f, ""), 0);
	start(f);
	struct blk_seen seen = { 0 };
	int gid = bus_subscribe_gate(&f->vm->bus, BUS_MASK(BUS_EV_BLK_REQUEST), 0, blk_gate, NULL);
	int oid = bus_subscribe(&f->vm->bus, BUS_MASK(BUS_EV_BLK_REQUEST) | BUS_MASK(BUS_EV_BLK_DONE), NULL,
				blk_observe, &seen);
	assert_true(gid > 0 && oid > 0);
	/* Denied write: IOERR, the disk keeps what it had. */
	memset(f->ram + DATA(0), 0xab, 1024);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, 100, 1024, NULL), VIRTIO_BLK_S_IOERR);
	uint64_t first;
	assert_int_equal(pread(f->fd, &first, sizeof(first), 100 * 512), (ssize_t)sizeof(first));
	assert_int_equal(first, 100);
	assert_int_equal(seen.write_ioerr, 1);
	assert_int_equal(seen.denied_requests, 1);
	/* Rewritten read: the data comes from the new sector. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 10, 512, NULL), VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA(0), &(uint64_t){ 20 }, 8);
	assert_int_equal(seen.last_sector, 20);
	/* A rewrite out of range is checked again. */
	assert_int_equal(simple(f, VIRTIO_BLK_T_IN, 30, 512, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(simple(f, VIRTIO_BLK_T_FLUSH, 0, 0, NULL), VIRTIO_BLK_S_OK);
	assert_int_equal(seen.done, 4);
	/* Gate gone: writes go through. */
	bus_unsubscribe(&f->vm->bus, gid);
	memset(f->ram + DATA(0), 0xab, 1024);
	assert_int_equal(simple(f, VIRTIO_BLK_T_OUT, 100, 1024, NULL), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, &first, sizeof(first), 100 * 512), (ssize_t)sizeof(first));
	assert_int_equal(first, 0xababababababababULL);
	bus_unsubscribe(&f->vm->bus, oid);
	assert_false(needs_reset(f));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_config_and_features), T(test_read_write_flush_id), T(test_bad_requests),
		T(test_head_reused_in_flight), T(test_many_in_flight), T(test_read_only),
		T(test_discard_write_zeroes), T(test_reset_with_requests), T(test_attach_errors), T(test_bus_gate),
		cmocka_unit_test(test_parse_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
