/* Unit tests for the legacy platform devices through a VM's port-I/O bus.
 * The VM is a bare struct vm with an I/O bus and a fake interrupt controller:
 * no /dev/kvm needed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <vmsvc/devices.h>
#include <vmsvc/platform.h>
#include <vmsvc/vm.h>

/* ---- fake VM ---- */

struct fake_irq {
	bool level[24];
	unsigned calls[24];
};

static int fake_set_level(struct irqchip *c, unsigned gsi, bool level)
{
	struct fake_irq *f = c->priv;
	if (gsi < 24) {
		f->level[gsi] = level;
		f->calls[gsi]++;
	}
	return 0;
}

static const struct irqchip_ops fake_irq_ops = { .name = "fake", .set_level = fake_set_level };

struct fixture {
	struct vm *vm;
	struct fake_irq irq;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!f || !vm)
		return -1;
	io_bus_init(&vm->io);
	bus_init(&vm->bus);
	pthread_mutex_init(&vm->end_lock, NULL);
	vm->irq.ops = &fake_irq_ops;
	vm->irq.priv = &f->irq;
	vm->cfg.mem_size = 512ull << 20;
	f->vm = vm;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	for (unsigned i = 0; i < f->vm->ndevices; i++)
		if (f->vm->devices[i].ops->destroy)
			f->vm->devices[i].ops->destroy(f->vm->devices[i].dev);
	io_bus_destroy(&f->vm->io);
	pthread_mutex_destroy(&f->vm->end_lock);
	free(f->vm);
	free(f);
	return 0;
}

static uint8_t inb(struct vm *vm, uint16_t port)
{
	uint8_t v;
	io_pio(&vm->io, port, &v, 1, false);
	return v;
}

static void outb(struct vm *vm, uint16_t port, uint8_t v)
{
	io_pio(&vm->io, port, &v, 1, true);
}

static uint16_t inw(struct vm *vm, uint16_t port)
{
	uint8_t b[2];
	io_pio(&vm->io, port, b, 2, false);
	return (uint16_t)(b[0] | b[1] << 8);
}

static void outw(struct vm *vm, uint16_t port, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	io_pio(&vm->io, port, b, 2, true);
}

static void outl(struct vm *vm, uint16_t port, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	io_pio(&vm->io, port, b, 4, true);
}

static const struct device *find_device(struct vm *vm, const char *name)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (strcmp(vm->devices[i].ops->name, name) == 0)
			return &vm->devices[i];
	return NULL;
}

/* ---- i8042 ---- */

#define KBD_DATA 0x60
#define KBD_CMD 0x64

static uint8_t i8042_cmd_reply(struct vm *vm, uint8_t cmd)
{
	outb(vm, KBD_CMD, cmd);
	assert_true(inb(vm, KBD_CMD) & 0x01);   /* OBF */
	return inb(vm, KBD_DATA);
}

static void test_i8042_probe(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(i8042_attach(vm), 0);
	uint8_t st = inb(vm, KBD_CMD);
	assert_int_not_equal(st, 0xff);
	assert_int_equal(st & 0x03, 0);          /* nothing to read, input buffer empty */
	assert_true(st & 0x04);                  /* system flag */

	assert_int_equal(i8042_cmd_reply(vm, 0xaa), 0x55);
	uint8_t ctr = i8042_cmd_reply(vm, 0x20);
	outb(vm, KBD_CMD, 0x60);
	outb(vm, KBD_DATA, (uint8_t)((ctr | 0x10) & ~0x01));
	assert_int_equal(i8042_cmd_reply(vm, 0x20), (ctr | 0x10) & ~0x01);
	outb(vm, KBD_CMD, 0xae);
	assert_false(i8042_cmd_reply(vm, 0x20) & 0x10);
	outb(vm, KBD_CMD, 0xad);
	assert_true(i8042_cmd_reply(vm, 0x20) & 0x10);
	outb(vm, KBD_CMD, 0xa7);
	assert_true(i8042_cmd_reply(vm, 0x20) & 0x20);
	outb(vm, KBD_CMD, 0xa8);
	assert_false(i8042_cmd_reply(vm, 0x20) & 0x20);
	assert_int_equal(i8042_cmd_reply(vm, 0xa9), 0x00);
	assert_int_equal(i8042_cmd_reply(vm, 0xab), 0x00);
	assert_int_equal(vm->end_reason, VM_END_NONE);
}

static void test_i8042_aux_loop_and_irqs(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(i8042_attach(vm), 0);
	/* Without AUXINT the loop byte arrives but IRQ 12 stays low. */
	outb(vm, KBD_CMD, 0x60);
	outb(vm, KBD_DATA, 0x44);
	outb(vm, KBD_CMD, 0xd3);
	outb(vm, KBD_DATA, 0x5a);
	assert_int_equal(inb(vm, KBD_CMD) & 0x21, 0x21);   /* OBF + AUXDATA */
	assert_false(f->irq.level[12]);
	assert_int_equal(inb(vm, KBD_DATA), 0x5a);
	/* With AUXINT enabled the loop raises IRQ 12 until the byte is read. */
	outb(vm, KBD_CMD, 0x60);
	outb(vm, KBD_DATA, 0x47);
	outb(vm, KBD_CMD, 0xd3);
	outb(vm, KBD_DATA, 0xa5);
	assert_true(f->irq.level[12]);
	assert_false(f->irq.level[1]);
	assert_int_equal(inb(vm, KBD_DATA), 0xa5);
	assert_false(f->irq.level[12]);
	/* A byte for the (absent) keyboard times out on IRQ 1. */
	outb(vm, KBD_DATA, 0xf2);
	assert_true(f->irq.level[1]);
	assert_int_equal(inb(vm, KBD_CMD) & 0x61, 0x41);   /* OBF + TIMEOUT, not AUX */
	assert_int_equal(inb(vm, KBD_DATA), 0xfe);
	assert_false(f->irq.level[1]);
	/* Same for the mouse via 0xd4. */
	outb(vm, KBD_CMD, 0xd4);
	outb(vm, KBD_DATA, 0xf2);
	assert_int_equal(inb(vm, KBD_CMD) & 0x61, 0x61);
	assert_true(f->irq.level[12]);
	assert_int_equal(inb(vm, KBD_DATA), 0xfe);
	assert_int_equal(inb(vm, KBD_CMD) & 0x01, 0);

	/* Save/load round trip keeps a queued byte. */
	outb(vm, KBD_CMD, 0xd2);
	outb(vm, KBD_DATA, 0x99);
	const struct device *d = find_device(vm, "i8042");
	assert_non_null(d);
	void *blob;
	size_t len;
	assert_int_equal(d->ops->save(d->dev, &blob, &len), 0);
	assert_int_equal(inb(vm, KBD_DATA), 0x99);
	assert_int_equal(d->ops->load(d->dev, blob, len), 0);
	assert_int_equal(inb(vm, KBD_DATA), 0x99);
	assert_int_equal(d->ops->load(d->dev, blob, len - 1), -EINVAL);
	free(blob);
}

static void test_i8042_reset_command(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(i8042_attach(f->vm), 0);
	outb(f->vm, KBD_CMD, 0xfe);
	assert_int_equal(f->vm->end_reason, VM_END_RESET);
	assert_int_equal(f->vm->end_status, 0);
}

static void test_i8042_reset_via_output_port(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(i8042_attach(f->vm), 0);
	outb(f->vm, KBD_CMD, 0xd1);
	outb(f->vm, KBD_DATA, 0x03);   /* A20 on, reset line high: nothing happens */
	assert_int_equal(f->vm->end_reason, VM_END_NONE);
	assert_int_equal(i8042_cmd_reply(f->vm, 0xd0), 0x03);
	outb(f->vm, KBD_CMD, 0xd1);
	outb(f->vm, KBD_DATA, 0x02);
	assert_int_equal(f->vm->end_reason, VM_END_RESET);
}

/* ---- RTC ---- */

static uint8_t cmos_read(struct vm *vm, uint8_t reg)
{
	outb(vm, 0x70, reg | 0x80);   /* with the NMI-mask bit, which must be ignored */
	return inb(vm, 0x71);
}

static void cmos_write(struct vm *vm, uint8_t reg, uint8_t val)
{
	outb(vm, 0x70, reg);
	outb(vm, 0x71, val);
}

static unsigned bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 15);
}

/* Read the clock like Linux does: until two consecutive reads agree. */
static void read_clock(struct vm *vm, uint8_t out[8])
{
	static const uint8_t regs[8] = { 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x06 };
	uint8_t again[8];
	do {
		for (int i = 0; i < 8; i++)
			out[i] = cmos_read(vm, regs[i]);
		for (int i = 0; i < 8; i++)
			again[i] = cmos_read(vm, regs[i]);
	} while (memcmp(out, again, 8) != 0);
}

static time_t clock_to_time(const uint8_t c[8], bool binary)
{
	unsigned (*dec)(uint8_t) = binary ? NULL : bcd;
	struct tm tm = { 0 };
#define D(x) (dec ? dec(x) : (x))
	tm.tm_sec = (int)D(c[0]);
	tm.tm_min = (int)D(c[1]);
	tm.tm_hour = (int)D(c[2]);
	tm.tm_mday = (int)D(c[3]);
	tm.tm_mon = (int)D(c[4]) - 1;
	tm.tm_year = (int)(D(c[6]) * 100 + D(c[5])) - 1900;
#undef D
	return timegm(&tm);
}

static void test_rtc_time_bcd_and_binary(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(rtc_attach(vm), 0);
	assert_int_equal(cmos_read(vm, 0x0a) & 0x80, 0);   /* UIP never set */
	assert_int_equal(cmos_read(vm, 0x0d), 0x80);       /* VRT */
	assert_int_equal(cmos_read(vm, 0x0b), 0x02);       /* BCD, 24 h */

	uint8_t c[8];
	read_clock(vm, c);
	time_t now = time(NULL);
	time_t t = clock_to_time(c, false);
	assert_true(t <= now && now - t <= 2);
	struct tm tm;
	gmtime_r(&t, &tm);
	assert_int_equal(bcd(c[7]), tm.tm_wday + 1);
	for (int i = 0; i < 7; i++) {
		assert_true((c[i] & 0x0f) <= 9);   /* valid BCD digits */
		assert_true((c[i] >> 4) <= 9);
	}

	cmos_write(vm, 0x0b, 0x06);   /* binary, 24 h */
	read_clock(vm, c);
	t = clock_to_time(c, true);
	now = time(NULL);
	assert_true(t <= now && now - t <= 2);

	/* 12-hour mode: hour 1..12 with bit 7 = PM. */
	cmos_write(vm, 0x0b, 0x04);   /* binary, 12 h */
	uint8_t h12 = cmos_read(vm, 0x04);
	time_t n2 = time(NULL);
	gmtime_r(&n2, &tm);
	unsigned h = h12 & 0x7f;
	assert_true(h >= 1 && h <= 12);
	assert_int_equal((h % 12) + ((h12 & 0x80) ? 12 : 0), tm.tm_hour);
}

static void test_rtc_set_time(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(rtc_attach(vm), 0);
	/* Set 2031-07-15 23:59:30 (BCD, 24 h) the way hwclock does: SET, write, clear SET. */
	cmos_write(vm, 0x0b, 0x82);
	cmos_write(vm, 0x00, 0x30);
	cmos_write(vm, 0x02, 0x59);
	cmos_write(vm, 0x04, 0x23);
	cmos_write(vm, 0x07, 0x15);
	cmos_write(vm, 0x08, 0x07);
	cmos_write(vm, 0x09, 0x31);
	cmos_write(vm, 0x32, 0x20);
	/* While SET, the time is held. */
	assert_int_equal(cmos_read(vm, 0x00), 0x30);
	assert_int_equal(cmos_read(vm, 0x09), 0x31);
	cmos_write(vm, 0x0b, 0x02);
	uint8_t c[8];
	read_clock(vm, c);
	struct tm want = { .tm_sec = 30, .tm_min = 59, .tm_hour = 23, .tm_mday = 15, .tm_mon = 6, .tm_year = 131 };
	time_t t = clock_to_time(c, false);
	time_t w = timegm(&want);
	assert_true(t >= w && t - w <= 2);

	/* Save/load keeps the guest's offset. */
	const struct device *d = find_device(vm, "rtc");
	assert_non_null(d);
	void *blob;
	size_t len;
	assert_int_equal(d->ops->save(d->dev, &blob, &len), 0);
	cmos_write(vm, 0x09, 0x99);
	assert_int_equal(d->ops->load(d->dev, blob, len), 0);
	assert_int_equal(cmos_read(vm, 0x09), 0x31);
	assert_int_equal(d->ops->load(d->dev, blob, 5), -EINVAL);
	free(blob);
}

static void test_rtc_cmos_storage_and_memory(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(rtc_attach(vm), 0);
	for (unsigned r = 0x0e; r < 0x80; r++) {
		if (r == 0x32)
			continue;   /* century: part of the clock */
		cmos_write(vm, (uint8_t)r, (uint8_t)(r ^ 0x5a));
	}
	for (unsigned r = 0x0e; r < 0x80; r++)
		if (r != 0x32)
			assert_int_equal(cmos_read(vm, (uint8_t)r), r ^ 0x5a);

	/* Fresh RTC: memory sizes for 512 MiB. */
	struct fixture *g;
	assert_int_equal(setup((void **)&g), 0);
	assert_int_equal(rtc_attach(g->vm), 0);
	unsigned above16 = cmos_read(g->vm, 0x34) | cmos_read(g->vm, 0x35) << 8;
	assert_int_equal(above16, (512 - 16) * 16);   /* 64 KiB units */
	assert_int_equal(cmos_read(g->vm, 0x5b) | cmos_read(g->vm, 0x5c) | cmos_read(g->vm, 0x5d), 0);
	assert_int_equal(cmos_read(g->vm, 0x15) | cmos_read(g->vm, 0x16) << 8, 640);
	teardown((void **)&g);
}

/* ---- debug exit, port 0x80, PM ---- */

static void test_debugexit(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(debugexit_attach(vm, 0xf4, 4), 0);
	uint8_t b[4];
	io_pio(&vm->io, 0xf4, b, 4, false);
	assert_int_equal(b[0] | b[1] | b[2] | b[3], 0);
	assert_int_equal(vm->end_reason, VM_END_NONE);
	outl(vm, 0xf4, 0x10);
	assert_int_equal(vm->end_reason, VM_END_DEBUG_EXIT);
	assert_int_equal(vm->end_status, 0x21);
	assert_int_equal(debugexit_attach(vm, 0xfff0, 0x20), -EINVAL);
}

static void test_debugexit_byte_in_range(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(debugexit_attach(f->vm, 0xf4, 4), 0);
	outb(f->vm, 0xf6, 0x00);
	assert_int_equal(f->vm->end_reason, VM_END_DEBUG_EXIT);
	assert_int_equal(f->vm->end_status, 1);
}

static void test_port80(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(port80_attach(vm), 0);
	uint64_t before = vm->io.pio.unhandled;
	outb(vm, 0x80, 0x12);
	outb(vm, 0xed, 0x34);
	assert_int_equal(inb(vm, 0x80), 0xff);
	assert_int_equal(vm->io.pio.unhandled, before);
	assert_int_equal(vm->end_reason, VM_END_NONE);
}

static void test_pm_reset_port(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(pm_attach(vm), 0);
	outb(vm, RESET_PORT, 0x02);   /* Linux writes 0x02 first: no reset yet */
	assert_int_equal(vm->end_reason, VM_END_NONE);
	assert_int_equal(inb(vm, RESET_PORT), 0x02);
	outb(vm, RESET_PORT, 0x06);
	assert_int_equal(vm->end_reason, VM_END_RESET);
}

static void test_pm_poweroff(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(pm_attach(vm), 0);
	assert_true(inw(vm, PM1A_CNT_PORT) & 1);   /* SCI_EN: ACPI mode */
	/* PM1 status is write-1-to-clear; enable is plain read/write. */
	outw(vm, PM1A_EVT_PORT + 2, 0x0121);
	assert_int_equal(inw(vm, PM1A_EVT_PORT + 2), 0x0121);
	assert_int_equal(inw(vm, PM1A_EVT_PORT), 0);
	/* An unsupported sleep type (S3) is ignored. */
	outw(vm, PM1A_CNT_PORT, (3 << 10) | (1 << 13));
	assert_int_equal(vm->end_reason, VM_END_NONE);
	assert_int_equal(inw(vm, PM1A_CNT_PORT) & 0x2000, 0);   /* SLP_EN reads 0 */
	/* SLP_TYP alone does nothing; with SLP_EN it powers off. */
	outw(vm, PM1A_CNT_PORT, (5 << 10) | 1);
	assert_int_equal(vm->end_reason, VM_END_NONE);
	assert_int_equal(inw(vm, PM1A_CNT_PORT), (5 << 10) | 1);
	outw(vm, PM1A_CNT_PORT, (5 << 10) | (1 << 13) | 1);
	assert_int_equal(vm->end_reason, VM_END_POWEROFF);
	assert_int_equal(vm->end_status, 0);
}

static void test_pm_poweroff_byte_writes(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	assert_int_equal(pm_attach(vm), 0);
	outb(vm, PM1A_CNT_PORT + 1, (5 << 2) | (1 << 5));   /* high byte: SLP_TYP 5 + SLP_EN */
	assert_int_equal(vm->end_reason, VM_END_POWEROFF);
}

/* ---- UART attached to a VM ---- */

static void test_uart_attach(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(uart_attach(vm, 0x3f8, 4, p[1]), 0);
	assert_non_null(vm->uart);
	assert_int_equal(uart_attach(vm, 0x3f8, 4, p[1]) < 0, 1);   /* ports taken */

	outb(vm, 0x3f8, 'o');
	outb(vm, 0x3f8, 'k');
	char buf[4] = { 0 };
	assert_int_equal(read(p[0], buf, sizeof(buf)), 2);
	assert_string_equal(buf, "ok");
	assert_int_equal(inb(vm, 0x3fd) & 0x60, 0x60);

	/* Input: interrupt on IRQ 4 once the guest enables it. */
	outb(vm, 0x3fa, 0x01);   /* FIFO on */
	assert_int_equal(uart_receive(vm->uart, (const uint8_t *)"x", 1), 1);
	assert_false(f->irq.level[4]);
	outb(vm, 0x3f9, 0x01);
	assert_true(f->irq.level[4]);
	assert_int_equal(inb(vm, 0x3f8), 'x');
	assert_false(f->irq.level[4]);

	/* Device ops: save/load/reset. */
	const struct device *d = find_device(vm, "uart");
	assert_non_null(d);
	void *blob;
	size_t len;
	assert_int_equal(d->ops->save(d->dev, &blob, &len), 0);
	d->ops->reset(d->dev);
	assert_int_equal(inb(vm, 0x3f9), 0);
	assert_int_equal(d->ops->load(d->dev, blob, len), 0);
	assert_int_equal(inb(vm, 0x3f9), 0x01);
	free(blob);

	/* A reader that went away must not hang or kill the VM (EPIPE is ignored). */
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	outb(vm, 0x3f8, '!');
	close(p[1]);
}

static void test_uart_output_never_blocks_forever(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	int p[2];
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	assert_int_equal(uart_attach(vm, 0x3f8, 4, p[1]), 0);
	/* Fill the pipe, then one more byte: it waits at most the timeout, then later
	 * bytes are dropped immediately while the reader stays stuck. */
	char junk[4096];
	memset(junk, 'j', sizeof(junk));
	while (write(p[1], junk, sizeof(junk)) > 0)
		;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 100; i++)
		outb(vm, 0x3f8, 'z');
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	assert_true(secs < 3.0);
	close(p[0]);
	close(p[1]);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_i8042_probe),
		T(test_i8042_aux_loop_and_irqs),
		T(test_i8042_reset_command),
		T(test_i8042_reset_via_output_port),
		T(test_rtc_time_bcd_and_binary),
		T(test_rtc_set_time),
		T(test_rtc_cmos_storage_and_memory),
		T(test_debugexit),
		T(test_debugexit_byte_in_range),
		T(test_port80),
		T(test_pm_reset_port),
		T(test_pm_poweroff),
		T(test_pm_poweroff_byte_writes),
		T(test_uart_attach),
		T(test_uart_output_never_blocks_forever),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
