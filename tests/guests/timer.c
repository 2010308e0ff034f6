/* Periodic interrupts: LAPIC timer (periodic mode) and the PIT through the
 * IOAPIC pin the MADT names for ISA IRQ0. A first interrupt must arrive
 * within a TSC-bounded spin; after that sti;hlt waits for the rest. */
#include "lib/kit.h"

#define WANT 10
#define VEC_LAPIC 0x40
#define VEC_PIT 0x41

static volatile unsigned lapic_ticks, pit_ticks;

static void on_lapic(struct kit_frame *f)
{
	(void)f;
	lapic_ticks++;
	lapic_eoi();
}

static void on_pit(struct kit_frame *f)
{
	(void)f;
	pit_ticks++;
	lapic_eoi();
}

static bool wait_ticks(volatile unsigned *ticks, const char *what)
{
	uint64_t t0 = rdtsc();
	irq_enable();
	while (*ticks == 0 && rdtsc() - t0 < 4000000000ULL)
		cpu_relax();
	if (*ticks == 0) {
		irq_disable();
		kit_printf("timer: no %s interrupt within the time limit\n", what);
		return false;
	}
	while (*ticks < WANT)
		wait_for_interrupt();
	irq_disable();
	return true;
}

int kit_main(void)
{
	kit_set_handler(VEC_LAPIC, on_lapic);
	kit_set_handler(VEC_PIT, on_pit);
	lapic_enable();

	/* 1 GHz APIC bus (KVM and QEMU), divide 16, 62500 -> 1 ms period. */
	uint64_t t0 = rdtsc();
	lapic_timer_periodic(VEC_LAPIC, 16, 62500);
	bool ok = wait_ticks(&lapic_ticks, "LAPIC timer");
	lapic_timer_stop();
	uint64_t t1 = rdtsc();
	kit_printf("timer: %u LAPIC timer interrupts (%lu TSC cycles)\n", lapic_ticks, t1 - t0);
	if (!ok)
		kit_fail("LAPIC timer");

	struct kit_madt madt;
	unsigned pin = 2;   /* the usual IRQ0 -> GSI2 override */
	if (kit_acpi_madt(&madt) == 0)
		pin = madt.irq0_gsi;
	pin = (unsigned)kit_cmdline_ulong("pit_pin", pin);   /* diagnosis override */
	if (pin > 23)
		kit_fail("IRQ0 override to GSI %u: outside the IOAPIC", pin);
	ioapic_route(pin, VEC_PIT, (uint8_t)lapic_id(), false);
	t0 = rdtsc();
	pit_periodic(1000);
	ok = wait_ticks(&pit_ticks, "PIT");
	pit_stop();
	ioapic_route(pin, VEC_PIT, 0, true);
	t1 = rdtsc();
	kit_printf("timer: %u PIT interrupts on IOAPIC pin %u (%lu TSC cycles)\n", pit_ticks, pin, t1 - t0);
	if (!ok)
		kit_fail("PIT via IOAPIC pin %u", pin);
	return 0;
}
