/* AP start-up: copy the real-mode trampoline to KIT_AP_TRAMPOLINE and
 * broadcast INIT-SIPI-SIPI. Each AP runs entry.S's ap path (same GDT and page
 * tables as the BSP), gets its own stack and ends in kit_ap_main. */
#include "kit.h"

extern char kit_ap_tramp_start[], kit_ap_tramp_end[];

volatile uint32_t kit_cpus_online = 1;
volatile uint8_t kit_cpu_apic_id[KIT_MAX_CPUS];

#define ICR_INIT 0x500
#define ICR_STARTUP 0x600
#define ICR_ASSERT (1u << 14)
#define ICR_LEVEL (1u << 15)
#define ICR_ALL_BUT_SELF (3u << 18)

/* A guest that wants its APs busy defines this (weak: by default they halt). */
__attribute__((weak)) void kit_ap_work(uint32_t slot)
{
	(void)slot;
}

void kit_ap_main(uint32_t index)
{
	kit_load_idt();
	uint32_t id = lapic_id();
	uint32_t slot = __atomic_fetch_add(&kit_cpus_online, 1, __ATOMIC_SEQ_CST);
	if (slot < KIT_MAX_CPUS)
		kit_cpu_apic_id[slot] = (uint8_t)id;
	(void)index;
	kit_ap_work(slot);
	/* Back in entry.S: cli; hlt forever. */
}

void kit_smp_start(void)
{
	memcpy((void *)(uintptr_t)KIT_AP_TRAMPOLINE, kit_ap_tramp_start,
	       (size_t)(kit_ap_tramp_end - kit_ap_tramp_start));
	kit_cpu_apic_id[0] = (uint8_t)lapic_id();
	lapic_enable();
	lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_INIT | ICR_ASSERT | ICR_LEVEL);
	/* The SDM's waits (10 ms, 200 us) matter on hardware; virtual CPUs
	 * need far less, and every spin here is emulated. Keep them short. */
	kit_delay_cycles(1000000);
	lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_STARTUP | (KIT_AP_TRAMPOLINE >> 12));
	kit_delay_cycles(200000);
	lapic_send_ipi(0, ICR_ALL_BUT_SELF | ICR_STARTUP | (KIT_AP_TRAMPOLINE >> 12));
}
