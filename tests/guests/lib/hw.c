/* LAPIC (xAPIC MMIO), IOAPIC and PIT basics. */
#include "kit.h"

#define LAPIC_ID 0x20
#define LAPIC_TPR 0x80
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0
#define LVT_MASKED (1u << 16)
#define LVT_TIMER_PERIODIC (1u << 17)
#define ICR_PENDING (1u << 12)

static inline uint32_t lapic_read(uint32_t reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }

void lapic_enable(void)
{
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, 0x100 | 0xff);
}

uint32_t lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

void lapic_timer_periodic(uint8_t vector, unsigned divide, uint32_t count)
{
	/* Divide configuration encoding: bits 3,1,0; 0b1011 = divide by 1. */
	static const uint8_t enc[8] = { 0xb, 0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xa };
	unsigned log2 = 0;
	while ((1u << log2) < divide && log2 < 7)
		log2++;
	lapic_write(LAPIC_TIMER_DIV, enc[log2]);
	lapic_write(LAPIC_LVT_TIMER, vector | LVT_TIMER_PERIODIC);
	lapic_write(LAPIC_TIMER_INIT, count);
}

void lapic_timer_stop(void)
{
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
	lapic_write(LAPIC_TIMER_INIT, 0);
}

void lapic_send_ipi(uint32_t dest, uint32_t icr_low)
{
	lapic_write(LAPIC_ICR_HI, dest << 24);
	lapic_write(LAPIC_ICR_LO, icr_low);
	/* Virtual APICs deliver at once; bound the wait anyway. */
	for (int i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & ICR_PENDING); i++)
		cpu_relax();
}

void ioapic_route_level(unsigned pin, uint8_t vector, uint8_t dest_apic, bool active_low, bool masked)
{
	/* Fixed delivery, physical destination, level triggered (bit 15). */
	uint32_t lo = vector | 1u << 15 | (active_low ? 1u << 13 : 0) | (masked ? LVT_MASKED : 0);
	mmio_write32(IOAPIC_BASE, 0x11 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, (uint32_t)dest_apic << 24);
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, lo);
}

void ioapic_route(unsigned pin, uint8_t vector, uint8_t dest_apic, bool masked)
{
	/* Fixed delivery, physical destination, edge triggered, active high. */
	uint32_t lo = vector | (masked ? LVT_MASKED : 0);
	mmio_write32(IOAPIC_BASE, 0x11 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, (uint32_t)dest_apic << 24);
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, lo);
}

#define PIT_HZ 1193182u

void pit_periodic(unsigned hz)
{
	unsigned div = PIT_HZ / (hz ? hz : 1);
	if (div > 0xffff)
		div = 0xffff;
	if (div < 2)
		div = 2;
	outb(0x43, 0x34);   /* channel 0, lo/hi byte, mode 2 (rate generator), binary */
	outb(0x40, (uint8_t)div);
	outb(0x40, (uint8_t)(div >> 8));
}

void pit_stop(void)
{
	outb(0x43, 0x30);   /* mode 0 with no count written: the output stays low */
}

void kit_delay_cycles(uint64_t cycles)
{
	uint64_t t0 = rdtsc();
	while (rdtsc() - t0 < cycles)
		cpu_relax();
}
