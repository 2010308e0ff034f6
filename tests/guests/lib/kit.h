/* vmsvc guest test kit: a tiny freestanding x86-64 "kernel" library for test
 * guests. Booted through PVH (vmsvc and `qemu-system-x86_64 -kernel`), it sets
 * up long mode with a static identity map of the low 4 GiB (2 MiB pages, user
 * accessible), a GDT/TSS/IDT, and offers serial output, a QEMU-compatible
 * debug-exit, LAPIC/IOAPIC/PIT helpers, CPL3 calls and AP start-up.
 *
 * On this host guest CPL0 code runs in KVM's instruction emulator (~1.2 us per
 * instruction), so everything here is written to execute few instructions.
 *
 * A guest defines `int kit_main(void)`; returning 0 passes, non-zero fails. */
#ifndef KIT_H
#define KIT_H
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GDT selectors (see entry.S). */
#define KIT_SEL_KCODE 0x08
#define KIT_SEL_KDATA 0x10
#define KIT_SEL_UDATA 0x1b
#define KIT_SEL_UCODE 0x23
#define KIT_SEL_TSS 0x28
#define KIT_SEL_KCODE32 0x38

#define KIT_MAX_CPUS 16
#define KIT_AP_TRAMPOLINE 0x70000u  /* free in both vmsvc's and QEMU's PVH layouts */

/* Xen's hvm_start_info (arch-x86/hvm/start_info.h), version 1. */
struct hvm_start_info {
	uint32_t magic;   /* 0x336ec578 */
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};
#define HVM_START_MAGIC 0x336ec578u

/* Saved by the common interrupt stub; the layout matches entry.S. */
struct kit_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

/* ---- port and memory-mapped I/O ---- */
static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t mmio_read32(uintptr_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
/* sti;hlt back to back: an interrupt pending at sti wakes the hlt (STI shadow). */
static inline void wait_for_interrupt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }

/* ---- console and exit ---- */
void kit_putc(char c);
void kit_puts(const char *s);
void kit_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kit_vprintf(const char *fmt, va_list ap);
/* isa-debug-exit (port 0xf4): the VMM exits with status (value << 1) | 1. */
__attribute__((noreturn)) void kit_exit(uint32_t value);
__attribute__((noreturn)) void kit_pass(void);                /* prints PASS, value 0 */
__attribute__((noreturn, format(printf, 1, 2))) void kit_fail(const char *fmt, ...); /* FAIL: ..., value 1 */

/* ---- tiny libc ---- */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
size_t strlen(const char *s);
int memcmp(const void *a, const void *b, size_t n);

/* ---- boot information ---- */
extern const struct hvm_start_info *kit_start_info;  /* NULL if the magic was wrong */
extern uint64_t kit_rsdp_paddr;                      /* from the start info, 0 = none */
const char *kit_cmdline(void);               /* copied at boot, "" if none */
/* Value of "key=<number>" on the command line (decimal or 0x hex), or def. */
unsigned long kit_cmdline_ulong(const char *key, unsigned long def);

/* ---- interrupts ---- */
typedef void (*kit_irq_handler)(struct kit_frame *f);
void kit_set_handler(unsigned vector, kit_irq_handler fn);
void kit_load_idt(void);                  /* APs load the shared IDT */
/* Exceptions without a registered handler print vector/RIP/error and fail. */

/* ---- ACPI (MADT) ---- */
struct kit_madt {
	bool found;
	unsigned ncpus;                  /* enabled local APICs */
	uint8_t apic_id[KIT_MAX_CPUS];
	uint32_t irq0_gsi;               /* ISA IRQ0 after overrides (identity if none) */
	uint64_t ioapic_addr;
};
int kit_acpi_madt(struct kit_madt *out); /* 0 on success, -1 no/invalid tables */
/* The RSDP (signature and checksum checked), or NULL. */
const uint8_t *kit_acpi_rsdp(void);
/* The table with this signature listed in the XSDT (else the RSDT), its length
 * sane and checksum right; NULL if none. */
const uint8_t *kit_acpi_table(const char sig[4]);

/* ---- LAPIC / IOAPIC / PIT ---- */
#define LAPIC_BASE 0xfee00000u
#define IOAPIC_BASE 0xfec00000u
void lapic_enable(void);                  /* SVR enable, spurious vector 0xff, TPR 0 */
uint32_t lapic_id(void);
void lapic_eoi(void);
/* Periodic timer: divide is 1,2,4,...,128; count is the initial count. */
void lapic_timer_periodic(uint8_t vector, unsigned divide, uint32_t count);
void lapic_timer_stop(void);
/* Raw ICR write: low word carries vector/mode/shorthand, dest is the APIC ID. */
void lapic_send_ipi(uint32_t dest, uint32_t icr_low);
void ioapic_route(unsigned pin, uint8_t vector, uint8_t dest_apic, bool masked);
/* The same, level-triggered (PCI INTx), with the given polarity. */
void ioapic_route_level(unsigned pin, uint8_t vector, uint8_t dest_apic, bool active_low, bool masked);
void pit_periodic(unsigned hz);           /* channel 0, mode 2 */
void pit_stop(void);

/* ---- CPL3 ---- */
#define KIT_USER_FAULT ((long)0x8000000000000000ULL)
/* Run fn(arg) at CPL3 on a private user stack, back via ud2 at a known stub.
 * Returns fn's result, or KIT_USER_FAULT if fn raised an exception (then
 * kit_user_fault_vector tells which). */
long kit_user_call(long (*fn)(long), long arg);
extern volatile uint64_t kit_user_fault_vector;

/* ---- SMP ---- */
extern volatile uint32_t kit_cpus_online;          /* starts at 1 (the BSP) */
extern volatile uint8_t kit_cpu_apic_id[KIT_MAX_CPUS];
/* Broadcast INIT-SIPI-SIPI; APs join long mode, check in, run kit_ap_work(slot)
 * (slot = 1.. in check-in order; a weak no-op unless the guest defines it, at
 * CPL0 with interrupts off) and halt. */
void kit_smp_start(void);
void kit_ap_work(uint32_t slot);
/* Busy-wait about `cycles` TSC cycles. */
void kit_delay_cycles(uint64_t cycles);

#endif
