/* A guest that idles for a while: LAPIC periodic timer at 100 Hz, sti;hlt
 * between ticks, passes after idle.seconds=N seconds of ticks (default 30).
 * For control-socket tests (pause, resume, stop) that need a guest that stays
 * up. The tick count is printed every second ("idle: tick N"). Ticks are
 * counted, not wall time: a paused guest takes correspondingly longer. */
#include "lib/kit.h"

#define VEC_LAPIC 0x40
#define HZ 100

static volatile unsigned long ticks;

static void on_lapic(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

int kit_main(void)
{
	unsigned long seconds = kit_cmdline_ulong("idle.seconds", 30);
	kit_set_handler(VEC_LAPIC, on_lapic);
	lapic_enable();
	/* 1 GHz APIC bus, divide 16, 625000 -> 10 ms period. */
	lapic_timer_periodic(VEC_LAPIC, 16, 625000);
	kit_printf("idle: running for %lu s\n", seconds);
	unsigned long last = 0;
	while (ticks < seconds * HZ) {
		wait_for_interrupt();
		if (ticks / HZ != last) {
			last = ticks / HZ;
			kit_printf("idle: tick %lu\n", ticks);
		}
	}
	irq_disable();
	lapic_timer_stop();
	kit_printf("idle: done after %lu ticks\n", ticks);
	return 0;
}
