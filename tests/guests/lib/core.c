/* Boot-time setup (start info, command line, TSS, IDT), exception reporting,
 * interrupt dispatch and the CPL3 call machinery. */
#include "kit.h"

int kit_main(void);

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct desc_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

extern char kit_isr_stubs[];            /* 16 bytes per vector */
extern uint64_t kit_gdt_tss[2];
extern char kit_user_return_stub[];
__attribute__((noreturn)) void kit_user_resume(long result);
long kit_user_enter(long (*fn)(long), long arg, void *stack_top);

const struct hvm_start_info *kit_start_info;
uint64_t kit_rsdp_paddr;
volatile uint64_t kit_user_fault_vector;

static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct tss64 tss __attribute__((aligned(16)));
static kit_irq_handler handlers[256];
static char cmdline[512];
static uint8_t rsp0_stack[8192] __attribute__((aligned(16), section(".noinit")));
static uint8_t df_stack[4096] __attribute__((aligned(16), section(".noinit")));
static uint8_t user_stack[65536] __attribute__((aligned(16), section(".noinit")));
static bool in_user_call;

static void idt_set(unsigned vec, unsigned ist)
{
	uint64_t a = (uint64_t)(uintptr_t)(kit_isr_stubs + 16 * vec);
	idt[vec] = (struct idt_gate){
		.off_lo = (uint16_t)a, .sel = KIT_SEL_KCODE, .ist = (uint8_t)ist,
		.type = 0x8e /* present, DPL0, 64-bit interrupt gate */,
		.off_mid = (uint16_t)(a >> 16), .off_hi = (uint32_t)(a >> 32),
	};
}

void kit_load_idt(void)
{
	struct desc_ptr p = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" ::"m"(p));
}

void kit_set_handler(unsigned vector, kit_irq_handler fn)
{
	if (vector >= 256)
		return;
	handlers[vector] = fn;
	idt_set(vector, vector == 8 ? 1 : 0);
}

static void setup_tss(void)
{
	uint64_t base = (uint64_t)(uintptr_t)&tss;
	tss.rsp[0] = (uint64_t)(uintptr_t)(rsp0_stack + sizeof(rsp0_stack));
	tss.ist[0] = (uint64_t)(uintptr_t)(df_stack + sizeof(df_stack));
	tss.iomap_base = sizeof(tss);   /* no I/O bitmap: CPL3 port access faults */
	uint64_t limit = sizeof(tss) - 1;
	kit_gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) /* present, 64-bit TSS available */
			 | (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	kit_gdt_tss[1] = base >> 32;
	__asm__ volatile("ltr %w0" ::"r"(KIT_SEL_TSS));
}

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "?15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?22", "?23", "?24", "?25", "?26", "?27", "?28", "?29", "#SX", "?31",
};

void kit_isr_dispatch(struct kit_frame *f)
{
	unsigned v = (unsigned)f->vector;
	/* A fault at CPL3 during kit_user_call ends the call. */
	if (v < 32 && (f->cs & 3) == 3 && in_user_call) {
		in_user_call = false;
		if (v == 6 && f->rip == (uint64_t)(uintptr_t)kit_user_return_stub) {
			kit_user_resume((long)f->rax);
		}
		kit_user_fault_vector = v;
		kit_user_resume(KIT_USER_FAULT);
	}
	if (handlers[v]) {
		handlers[v](f);
		return;
	}
	if (v < 32) {
		uint64_t cr2;
		__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		kit_fail("exception %u %s at rip=%lx cs=%lx error=%lx cr2=%lx rsp=%lx", v, exc_names[v], f->rip, f->cs,
			 f->error, cr2, f->rsp);
	}
	kit_fail("unexpected interrupt vector %u at rip=%lx", v, f->rip);
}

static void spurious(struct kit_frame *f)
{
	(void)f;  /* spurious APIC interrupts need no EOI */
}

long kit_user_call(long (*fn)(long), long arg)
{
	kit_user_fault_vector = 0;
	in_user_call = true;
	long r = kit_user_enter(fn, arg, user_stack + sizeof(user_stack));
	in_user_call = false;
	return r;
}

const char *kit_cmdline(void)
{
	return cmdline;
}

unsigned long kit_cmdline_ulong(const char *key, unsigned long def)
{
	size_t klen = strlen(key);
	for (const char *p = cmdline; *p; p++) {
		if ((p != cmdline && p[-1] != ' ') || memcmp(p, key, klen) != 0 || p[klen] != '=')
			continue;
		const char *q = p + klen + 1;
		unsigned base = 10;
		if (q[0] == '0' && (q[1] == 'x' || q[1] == 'X')) {
			base = 16;
			q += 2;
		}
		unsigned long v = 0;
		bool any = false;
		for (;; q++) {
			unsigned d;
			if (*q >= '0' && *q <= '9')
				d = (unsigned)(*q - '0');
			else if (base == 16 && *q >= 'a' && *q <= 'f')
				d = (unsigned)(*q - 'a' + 10);
			else if (base == 16 && *q >= 'A' && *q <= 'F')
				d = (unsigned)(*q - 'A' + 10);
			else
				break;
			v = v * base + d;
			any = true;
		}
		return any ? v : def;
	}
	return def;
}

/* Read everything we need from the start info before anything overwrites low memory. */
static void read_start_info(uint32_t si_addr)
{
	const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)si_addr;
	if (si_addr == 0 || si->magic != HVM_START_MAGIC)
		return;
	kit_start_info = si;
	kit_rsdp_paddr = si->rsdp_paddr;
	uint64_t c = si->cmdline_paddr;
	if (c == 0 || c >= 0x100000000ULL - sizeof(cmdline))
		return;
	const char *src = (const char *)(uintptr_t)c;
	size_t n = 0;
	while (n < sizeof(cmdline) - 1 && src[n])
		n++;
	memcpy(cmdline, src, n);
	cmdline[n] = '\0';
}

void kit_start(uint32_t start_info)
{
	read_start_info(start_info);
	setup_tss();
	for (unsigned v = 0; v < 32; v++)
		idt_set(v, v == 8 ? 1 : 0);
	kit_set_handler(0xff, spurious);
	kit_load_idt();
	/* Mask the 8259s: an uninitialised PIC would deliver IRQs on exception vectors. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	int r = kit_main();
	if (r == 0)
		kit_pass();
	kit_fail("kit_main returned %d", r);
}
