/* Garbage I/O: every access size on many unassigned ports, junk PCI config
 * cycles, huge rep ins/outs into valid buffers, and MMIO to holes. The VMM
 * has to survive all of it; reads from holes must give all-ones or zero.
 * Ports that reset or power off a PC (0x64, 0x92, 0xcf9, ACPI PM) and DMA
 * capable ones (fw_cfg) are left alone: the point is junk, not a reboot.
 * Counts stay in the hundreds: every access is a VM exit. */
#include "lib/kit.h"

static uint8_t buf[65536] __attribute__((aligned(4096), section(".noinit")));

struct range { uint16_t lo, hi; };
/* Inclusive port ranges never touched. */
static const struct range avoid[] = {
	{ 0x0000, 0x00ff },  /* DMA, PIC, PIT, KBC (0x64 reset), port 0x92, debug exit 0xf4 */
	{ 0x01f0, 0x01f7 }, { 0x0170, 0x0177 }, { 0x03f6, 0x03f6 }, { 0x0376, 0x0376 },  /* IDE */
	{ 0x03f8, 0x03ff },  /* our serial port */
	{ 0x04d0, 0x04d1 },  /* ELCR */
	{ 0x0510, 0x051b },  /* QEMU fw_cfg (DMA) */
	{ 0x0600, 0x073f },  /* ACPI PM (poweroff), SMBus */
	{ 0x0a00, 0x0a1f }, { 0xae00, 0xafff },  /* QEMU hotplug, GPE */
	{ 0x0cf8, 0x0cff },  /* PCI config and reset control: exercised separately */
	{ 0xb000, 0xb03f },
	{ 0xc000, 0xcfff },  /* PCI I/O BARs assigned by firmware */
};

static bool avoided(unsigned p)
{
	for (unsigned i = 0; i < sizeof(avoid) / sizeof(avoid[0]); i++)
		if (p >= avoid[i].lo && p <= avoid[i].hi + 3u)  /* +3: wide accesses spill over */
			return true;
	return false;
}

static unsigned accesses;

static void hammer_port(uint16_t p)
{
	(void)inb(p);
	(void)inw(p);
	(void)inl(p);
	outb(p, 0xa5);
	outw(p, 0x5aa5);
	outl(p, 0xdeadbeef);
	accesses += 6;
}

static bool hole_value_ok(uint64_t v, unsigned bytes)
{
	uint64_t ones = bytes == 8 ? ~0ULL : ((1ULL << (8 * bytes)) - 1);
	return v == 0 || v == ones;
}

static void check_unassigned_port(uint16_t p)
{
	uint32_t b = inb(p), w = inw(p), l = inl(p);
	if (!hole_value_ok(b, 1) || !hole_value_ok(w, 2) || !hole_value_ok(l, 4))
		kit_fail("unassigned port %x reads %x/%x/%x", p, b, w, l);
}

static void pci_junk(void)
{
	/* Bus 255 and bus 0 device 31 function 7 do not exist on either VMM. */
	static const uint32_t addrs[] = { 0x80ff0000, 0x80fff8fc, 0x8000ff00, 0x8000fffc, 0x7fffff00, 0xffffffff };
	for (unsigned i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		outl(0xcf8, addrs[i]);
		uint32_t v = inl(0xcfc);
		if ((addrs[i] & 0x80000000u) && addrs[i] != 0xffffffff && !hole_value_ok(v, 4))
			kit_fail("config read of absent device %x gave %x", addrs[i], v);
		outl(0xcfc, 0xdeadbeef);
		(void)inb(0xcfd);
		(void)inw(0xcfe);
		outb(0xcff, 0x55);
		outw(0xcfe, 0x1234);
		accesses += 7;
	}
	outl(0xcf8, 0);
	/* Unaligned dword into the address register's neighbourhood is not
	 * allowed to reach 0xcf9 (reset control): no such access here. */
}

static void rep_string_io(void)
{
	/* Unassigned ports, 64 KiB at a time: the VMM must bound what it copies. */
	uint16_t port = 0x2c0;
	void *d = buf;
	size_t n = sizeof(buf);
	__asm__ volatile("rep insb" : "+D"(d), "+c"(n) : "d"(port) : "memory");
	d = buf; n = 4096;
	__asm__ volatile("rep insw" : "+D"(d), "+c"(n) : "d"(port) : "memory");
	d = buf; n = 4096;
	__asm__ volatile("rep insl" : "+D"(d), "+c"(n) : "d"(port) : "memory");
	const void *s = buf;
	n = sizeof(buf);
	__asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"(port) : "memory");
	s = buf; n = 4096;
	__asm__ volatile("rep outsl" : "+S"(s), "+c"(n) : "d"(port) : "memory");
	/* Port 0x80 (POST) also eats anything. */
	s = buf; n = 4096;
	__asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"((uint16_t)0x80) : "memory");
	accesses += 6;
}

static void mmio_holes(void)
{
	static const uint64_t holes[] = {
		0xd0000000, 0xd0001000, 0xdffffffc, 0xe0000000 + 0x123450,
		0xfe000000, 0xfebff000, 0xfec01000, 0xfec10000, 0xfed40000,
		0x10000000,  /* above 128 MiB of RAM, below the PCI hole */
		0xf0f01000,  /* vmsvc: ECAM of bus 15, which has no devices: all-ones, writes dropped */
	};
	for (unsigned i = 0; i < sizeof(holes) / sizeof(holes[0]); i++) {
		volatile uint8_t *p8 = (volatile uint8_t *)(uintptr_t)holes[i];
		volatile uint16_t *p16 = (volatile uint16_t *)(uintptr_t)(holes[i] + 2);
		volatile uint32_t *p32 = (volatile uint32_t *)(uintptr_t)(holes[i] + 4);
		volatile uint64_t *p64 = (volatile uint64_t *)(uintptr_t)(holes[i] + 8);
		uint64_t v8 = *p8, v16 = *p16, v32 = *p32, v64 = *p64;
		if (!hole_value_ok(v8, 1) || !hole_value_ok(v16, 2) || !hole_value_ok(v32, 4) || !hole_value_ok(v64, 8))
			kit_fail("MMIO hole %lx reads %lx/%lx/%lx/%lx", holes[i], v8, v16, v32, v64);
		*p8 = 0x5a;
		*p16 = 0xa55a;
		*p32 = 0xdeadbeef;
		*p64 = 0x0123456789abcdefULL;
		/* Writes to a hole must not make it read back as memory. */
		v32 = *p32;
		if (!hole_value_ok(v32, 4))
			kit_fail("MMIO hole %lx reads %lx after a write", holes[i] + 4, v32);
		accesses += 9;
	}
	/* A string copy out of a hole, and one into a hole. */
	void *d = buf;
	const void *s = (const void *)(uintptr_t)0xd0000000;
	size_t n = 64;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	for (unsigned i = 0; i < 64; i++)
		if (buf[i] != 0 && buf[i] != 0xff)
			kit_fail("rep movsb from hole gave byte %x", buf[i]);
	d = (void *)(uintptr_t)0xd0002000;
	s = buf;
	n = 64;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	accesses += 2;
}

int kit_main(void)
{
	unsigned ports = 0;
	/* Legacy ISA space in steps of 3, then the rest of the 64 K space sparsely. */
	for (unsigned p = 0x100; p < 0x1000; p += 3)
		if (!avoided(p) && ports < 400) {
			hammer_port((uint16_t)p);
			ports++;
		}
	for (unsigned p = 0x1000; p <= 0xfff0; p += 0x1f3)
		if (!avoided(p)) {
			hammer_port((uint16_t)p);
			ports++;
		}
	hammer_port(0xffff);   /* wide accesses wrap past the end of the space */
	kit_printf("hostile_io: %u ports hammered\n", ports);
	check_unassigned_port(0x2c0);
	check_unassigned_port(0x7000);
	pci_junk();
	rep_string_io();
	mmio_holes();
	kit_printf("hostile_io: %u accesses, VMM still alive\n", accesses);
	return 0;
}
