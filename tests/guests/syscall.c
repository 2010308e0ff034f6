/* SYSCALL from CPL3 and SYSRET back, the way Linux uses them: the entry's first
 * instruction is swapgs. On kvm_pvm the host leaves the vCPU at CPL3 after
 * SYSCALL, and vmsvc's SYSCALL assist (src/vmm/vcpu_syscall.c) completes the
 * switch; elsewhere the CPU does it. Checks what the entry saw (CPL0 CS/SS,
 * RCX = return address, R11 = user RFLAGS, IF masked by SFMASK) and the result. */
#include "lib/kit.h"

static inline void wrmsr(uint32_t m, uint64_t v)
{
	__asm__ volatile("wrmsr" ::"c"(m), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline uint64_t rdmsr(uint32_t m)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(m));
	return lo | (uint64_t)hi << 32;
}

/* What the entry saw: calls, CS, RCX, R11, RFLAGS, SS. */
volatile uint64_t seen[6];
void syscall_entry(void);
__asm__(".globl syscall_entry\nsyscall_entry:\n"
	"swapgs\n"
	"incq seen(%rip)\n"
	"mov %cs, %rdx\n mov %rdx, seen+8(%rip)\n"
	"mov %rcx, seen+16(%rip)\n mov %r11, seen+24(%rip)\n"
	"pushfq\n popq %rdx\n mov %rdx, seen+32(%rip)\n"
	"mov %ss, %rdx\n mov %rdx, seen+40(%rip)\n"
	"xor $0x5150, %rax\n"
	"swapgs\n sysretq\n");

static long do_hlt(long arg)
{
	__asm__ volatile("hlt"); /* #GP at CPL3: an ordinary fault through the same handler */
	return arg;
}

volatile uint64_t user_return;
static long do_syscalls(long n)
{
	long r = 0;
	for (long i = 0; i < n; i++) {
		__asm__ volatile("lea 1f(%%rip), %%rdx\n mov %%rdx, user_return(%%rip)\n syscall\n1:"
				 : "=a"(r) : "a"(i) : "rcx", "rdx", "r11", "memory");
		if (r != (i ^ 0x5150))
			return -1;
	}
	return r;
}

int kit_main(void)
{
	wrmsr(0xc0000080, rdmsr(0xc0000080) | 1);                /* EFER.SCE */
	wrmsr(0xc0000081, (0x10ULL << 48) | (0x08ULL << 32));   /* SYSCALL CS 0x08 SS 0x10; SYSRET CS 0x23 SS 0x1b */
	wrmsr(0xc0000082, (uint64_t)(uintptr_t)syscall_entry);  /* LSTAR */
	wrmsr(0xc0000084, 0x200);                                /* SFMASK: IF */
	long n = 100;
	long r = kit_user_call(do_syscalls, n);
	kit_printf("syscall: result %lx (fault vector %lu), %lu calls; entry saw CS %lx SS %lx RCX %lx R11 %lx RFLAGS %lx\n",
		   (uint64_t)r, kit_user_fault_vector, seen[0], seen[1], seen[5], seen[2], seen[3], seen[4]);
	if (r != ((n - 1) ^ 0x5150) || seen[0] != (uint64_t)n)
		kit_fail("SYSCALL/SYSRET round trips failed");
	if (seen[1] != 0x08 || seen[5] != 0x10)
		kit_fail("entry ran with CS %lx SS %lx, expected 0x8/0x10 (CPL0)", seen[1], seen[5]);
	if (seen[2] != user_return || !(seen[3] & 0x200) || (seen[4] & 0x200))
		kit_fail("RCX/R11/RFLAGS at entry wrong");
	/* Ordinary faults in between must still reach the guest, and SYSCALL keep working. */
	for (int round = 0; round < 3; round++) {
		r = kit_user_call(do_hlt, 0);
		if (r != KIT_USER_FAULT || kit_user_fault_vector != 13)
			kit_fail("hlt at CPL3: result %lx vector %lu, expected #GP", (uint64_t)r, kit_user_fault_vector);
		r = kit_user_call(do_syscalls, 10);
		if (r != (9 ^ 0x5150))
			kit_fail("SYSCALL after a #GP: result %lx (fault vector %lu)", (uint64_t)r, kit_user_fault_vector);
	}
	kit_printf("syscall: %lu calls, ordinary #GPs in between delivered\n", seen[0]);
	return 0;
}
