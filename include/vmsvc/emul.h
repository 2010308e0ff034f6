/* Emulation assist: completes instructions that KVM's instruction emulator could
 * not execute (KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION with the
 * instruction bytes). Inert on VMX/SVM hosts, where KVM never reports this for
 * ordinary instructions. State access goes through emul_cpu so the decoder and
 * executor are unit-tested without KVM. */
#ifndef VMSVC_EMUL_H
#define VMSVC_EMUL_H
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

struct emul_cpu {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave;      /* FPU/SSE state (legacy area: fcw @0, fsw @2, mxcsr @24, xmm @160) */
	struct kvm_xcrs xcrs;
	bool xsave_dirty, xcrs_dirty, regs_dirty;
	/* Guest virtual memory access (through the guest's page tables). 0 or -EFAULT. */
	int (*read)(void *opaque, uint64_t gva, void *dst, unsigned len);
	int (*write)(void *opaque, uint64_t gva, const void *src, unsigned len);
	/* Exceptions the instruction raises (e.g. #BP for int3): vector, or -1. */
	int inject_vector;
	int inject_error_code;       /* -1 = none */
	uint64_t tsc;                /* for rdtscp */
	uint32_t tsc_aux;
	void *opaque;
};

/* Try to complete the instruction at regs.rip given its bytes. On success the
 * state in *c is updated (RIP advanced) and 0 is returned; the mnemonic is put
 * in *name. -ENOSYS if the instruction is not one the assist knows. */
int emul_complete(struct emul_cpu *c, const uint8_t *insn, unsigned len, const char **name);

#endif
