/* vCPU internals shared by vm.c and vcpu*.c (not a cross-folder contract). */
#ifndef VMSVC_VMM_VCPU_H
#define VMSVC_VMM_VCPU_H
#include <linux/kvm.h>
#include <vmsvc/boot.h>
#include <vmsvc/platform.h>
#include <vmsvc/vm.h>

/* Create vCPU `index`: fd, kvm_run mapping, CPUID, MSRs; the BSP (entry != NULL)
 * also gets its registers from the boot entry. APs wait for INIT/SIPI in KVM. */
int vcpu_create(struct vm *vm, int index, const struct kvm_cpuid2 *supported, const struct cpuid_hide *hide,
		const struct boot_entry *entry);
int vcpu_start(struct vcpu *c);
void vcpu_destroy(struct vcpu *c);
/* Make every vCPU leave KVM_RUN promptly (immediate_exit + signal). */
void vcpu_kick_all(struct vm *vm);
/* Install the (no-op) kick signal handler once per process. */
int vcpu_signals_init(void);
/* Print exit diagnostics: RIP, instruction bytes (page-table walk), registers. */
void vcpu_dump(struct vcpu *c, const char *why);
/* Complete an instruction KVM failed to emulate; 0 if done, <0 if not possible. */
int vcpu_emul_assist(struct vcpu *c);
/* SYSCALL assist (vcpu_syscall.c): trap LSTAR writes on the VM (0 or -errno),
 * keep the LSTAR breakpoint of a vCPU current, handle its exits. */
int vm_syscall_assist_setup(int vm_fd, int kvm_fd);
uint32_t vm_syscall_assist_step_flags(int kvm_fd);
void vcpu_syscall_assist_arm(struct vcpu *c);
void vcpu_syscall_handle_wrmsr(struct vcpu *c);
int vcpu_syscall_handle_debug(struct vcpu *c);

#endif
