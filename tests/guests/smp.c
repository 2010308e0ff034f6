/* Every vCPU checks in. Expected count: "cpus=N" on the command line, else
 * the MADT. When both exist they must agree (catches a wrong MADT). */
#include "lib/kit.h"

int kit_main(void)
{
	struct kit_madt madt;
	bool have_madt = kit_acpi_madt(&madt) == 0;
	unsigned long want = kit_cmdline_ulong("cpus", have_madt ? madt.ncpus : 0);
	kit_printf("smp: cmdline \"%s\", MADT %s with %u CPUs, expecting %lu\n", kit_cmdline(),
		   have_madt ? "found" : "absent", have_madt ? madt.ncpus : 0, want);
	if (want == 0 || want > KIT_MAX_CPUS)
		kit_fail("no usable CPU count (cpus=%lu)", want);
	if (have_madt && madt.ncpus != want)
		kit_fail("MADT lists %u CPUs, command line says %lu", madt.ncpus, want);

	kit_smp_start();
	/* Bounded wait (TSC cycles; a few seconds at most on any host clock). */
	uint64_t t0 = rdtsc();
	while (kit_cpus_online < want && rdtsc() - t0 < 4000000000ULL)
		cpu_relax();
	/* Give stragglers a moment to show up as extra CPUs. */
	kit_delay_cycles(20000000);
	uint32_t online = kit_cpus_online;
	kit_printf("smp: %u CPUs online, APIC IDs:", online);
	for (uint32_t i = 0; i < online && i < KIT_MAX_CPUS; i++)
		kit_printf(" %u", kit_cpu_apic_id[i]);
	kit_putc('\n');
	if (online != want)
		kit_fail("%u CPUs checked in, expected %lu", online, want);
	return 0;
}
