/* Deliberate triple fault: an empty IDT turns #UD into #GP, #DF, shutdown.
 * vmsvc must exit non-zero saying "triple fault"; QEMU -no-reboot exits 0. */
#include "lib/kit.h"

int kit_main(void)
{
	kit_puts("triple fault next\n");
	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) empty = { 0, 0 };
	__asm__ volatile("lidt %0; ud2" ::"m"(empty));
	kit_fail("still running after the triple fault");
}
