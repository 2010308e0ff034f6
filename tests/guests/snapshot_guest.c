/* Snapshot/restore equivalence guest: counts LAPIC timer interrupts and, round
 * after round, checks at CPL3 the memory pattern of the previous round and writes
 * the next one. A snapshot taken in the middle and restored must finish with the
 * same verdict as an uninterrupted run (tests/integration/snapshot_test.c).
 * Command line: rounds=N (default 60), ticks=N per round (default 10), cpus=N
 * (N > 1: the APs are started first and must all check in; they then halt). */
#include "lib/kit.h"

#define VEC_TIMER 0x40
#define BUF_ADDR (32ul << 20)             /* 16 MiB at 32 MiB: inside every test VM's RAM */
#define BUF_WORDS ((16ul << 20) / 8)

static volatile uint64_t ticks;

static void on_timer(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

static inline uint64_t pattern(uint64_t round, uint64_t i)
{
	uint64_t x = (round + 1) * 0x9e3779b97f4a7c15ULL ^ (i * 0xbf58476d1ce4e5b9ULL);
	return x ^ (x >> 31);
}

/* CPL3: verify round-1's pattern (if any), write round's. Returns the index of
 * the first bad word + 1, or 0 if all good. */
static long user_round(long round)
{
	volatile uint64_t *buf = (volatile uint64_t *)BUF_ADDR;
	for (uint64_t i = 0; i < BUF_WORDS; i++) {
		if (round > 0 && buf[i] != pattern((uint64_t)round - 1, i))
			return (long)i + 1;
		buf[i] = pattern((uint64_t)round, i);
	}
	return 0;
}

int kit_main(void)
{
	unsigned long rounds = kit_cmdline_ulong("rounds", 60);
	unsigned long per = kit_cmdline_ulong("ticks", 10);
	kit_printf("snapshot_guest: %lu rounds of %lu timer ticks\n", rounds, per);
	unsigned long cpus = kit_cmdline_ulong("cpus", 1);
	if (cpus > 1) {
		kit_smp_start();
		uint64_t t0 = rdtsc();
		while (kit_cpus_online < cpus && rdtsc() - t0 < 4000000000ULL)
			cpu_relax();
		if (kit_cpus_online != cpus)
			kit_fail("%u of %lu CPUs online", kit_cpus_online, cpus);
	}
	kit_set_handler(VEC_TIMER, on_timer);
	lapic_enable();
	lapic_timer_periodic(VEC_TIMER, 16, 62500);   /* 1 ms */
	uint64_t last = 0;
	for (unsigned long r = 0; r < rounds; r++) {
		long bad = kit_user_call(user_round, (long)r);
		if (bad == KIT_USER_FAULT)
			kit_fail("round %lu: fault %lu at CPL3", r, (unsigned long)kit_user_fault_vector);
		if (bad)
			kit_fail("round %lu: word %ld does not hold round %lu's pattern", r, bad - 1, r - 1);
		uint64_t want = (r + 1) * per;
		uint64_t t0 = rdtsc();
		irq_enable();
		while (ticks < want) {
			if (rdtsc() - t0 > 40000000000ULL) {
				irq_disable();
				kit_fail("round %lu: timer stopped at %lu ticks", r, (unsigned long)ticks);
			}
			wait_for_interrupt();
		}
		irq_disable();
		if (ticks < last)
			kit_fail("tick count went backwards");
		last = ticks;
		kit_printf("round %lu ticks %lu\n", r, (unsigned long)ticks);
	}
	lapic_timer_stop();
	if (kit_user_call(user_round, (long)rounds) != 0)
		kit_fail("final pattern check");
	kit_printf("snapshot_guest: %lu rounds, %lu ticks\n", rounds, (unsigned long)ticks);
	return 0;
}
