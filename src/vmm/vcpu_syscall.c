/* SYSCALL assist for hosts whose KVM does not switch a guest to CPL0 on SYSCALL.
 *
 * On kvm_pvm (/work/shared/notes/pvm.md), a SYSCALL executed by guest user code
 * jumps to LSTAR with RCX/R11 saved, but the vCPU stays at CPL3, so the first
 * instruction of the kernel's entry code faults (#PF: kernel text is not user
 * accessible, or #GP on swapgs) and user space cannot make a single system call.
 * Hardware breakpoints do not fire for natively run CPL3 code there, but they do
 * at CPL0 (emulated). So the assist keeps instruction breakpoints on the guest's
 * #PF and #GP handlers (from its IDT, re-read whenever LSTAR is written: writes
 * are trapped with an MSR filter). When one fires and the exception frame says
 * "user mode, RIP = LSTAR", the fault is undone and the SYSCALL completed as the
 * CPU would have: RSP back to the user's, CS/SS from STAR[47:32] at DPL0, RFLAGS
 * masked with SFMASK, RIP = LSTAR; RCX and R11 already hold what SYSCALL saved.
 * Any other hit is stepped over (see vcpu_syscall_handle_debug). The return,
 * SYSRET from emulated CPL0, works on that host without help.
 *
 * Enabled only on kvm_pvm (/sys/module/kvm_pvm): elsewhere SYSCALL works, and
 * the breakpoints would cost two exits per page fault. Limits: the guest's own
 * hardware breakpoints (DR0-DR7) are not in effect; a #DB that is not ours is
 * re-injected without its DR6 payload. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/pagewalk.h>
#include "vmm/vcpu.h"

#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_SFMASK 0xc0000084
#define DR7_L0 1ULL
#define DR7_L1 4ULL
#define DR7_FIXED (1ULL << 10)
#define VEC_DB 1
#define VEC_GP 13
#define VEC_PF 14

int vm_syscall_assist_setup(int vm_fd, int kvm_fd)
{
	if (access("/sys/module/kvm_pvm", F_OK) != 0)
		return -ENOTSUP;
	if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_USER_SPACE_MSR) <= 0 ||
	    ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) <= 0 ||
	    ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG) <= 0)
		return -ENOTSUP;
	struct kvm_enable_cap cap = { .cap = KVM_CAP_X86_USER_SPACE_MSR, .args[0] = KVM_MSR_EXIT_REASON_FILTER };
	if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return -errno;
	/* Default allow; writes of LSTAR alone are denied, i.e. exit to us. */
	uint8_t deny_bit = 0;   /* KVM copies the bitmap */
	struct kvm_msr_filter f = { .flags = KVM_MSR_FILTER_DEFAULT_ALLOW };
	f.ranges[0] = (struct kvm_msr_filter_range){ .flags = KVM_MSR_FILTER_WRITE, .nmsrs = 1, .base = MSR_LSTAR,
						     .bitmap = &deny_bit };
	if (ioctl(vm_fd, KVM_X86_SET_MSR_FILTER, &f) < 0)
		return -errno;
	return 0;
}

uint32_t vm_syscall_assist_step_flags(int kvm_fd)
{
	/* No interrupt in the middle of our single step, where the host supports it. */
	int dbg2 = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2);
	return dbg2 > 0 && (dbg2 & KVM_GUESTDBG_BLOCKIRQ) ? KVM_GUESTDBG_BLOCKIRQ : 0;
}

static int get_msrs(struct vcpu *c, const uint32_t *idx, uint64_t *val, unsigned n)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry m[4]; } msrs = { .h.nmsrs = n };
	if (n > 4)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		msrs.m[i].index = idx[i];
	if (ioctl(c->fd, KVM_GET_MSRS, &msrs) != (int)n)
		return -EIO;
	for (unsigned i = 0; i < n; i++)
		val[i] = msrs.m[i].data;
	return 0;
}

/* Breakpoints on the two handlers; or, with step, none and a single step instead
 * (see vcpu_syscall_handle_debug). */
static int set_debug(struct vcpu *c, uint64_t pf, uint64_t gp, bool step)
{
	struct kvm_guest_debug dbg = { 0 };
	if (step) {
		dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | c->vm->syscall_step_flags;
	} else if (pf || gp) {
		dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
		dbg.arch.debugreg[0] = pf;
		dbg.arch.debugreg[1] = gp;
		/* R/W and LEN 00: instruction breakpoints */
		dbg.arch.debugreg[7] = (pf ? DR7_L0 : 0) | (gp ? DR7_L1 : 0) | DR7_FIXED;
	}
	if (ioctl(c->fd, KVM_SET_GUEST_DEBUG, &dbg) < 0)
		return -errno;
	c->syscall_bp[0] = pf;
	c->syscall_bp[1] = gp;
	c->syscall_stepping = step;
	return 0;
}

static int set_breakpoints(struct vcpu *c, uint64_t pf, uint64_t gp)
{
	return set_debug(c, pf, gp, false);
}

static void pw_from_sregs(struct pw_regs *pw, const struct kvm_sregs *sr)
{
	*pw = (struct pw_regs){ .cr0 = sr->cr0, .cr3 = sr->cr3, .cr4 = sr->cr4, .efer = sr->efer };
}

/* The handler address of a 64-bit IDT gate, 0 if the IDT does not have it. */
static uint64_t idt_handler(struct vcpu *c, const struct kvm_sregs *sr, unsigned vec)
{
	uint8_t g[16];
	struct pw_regs pw;
	pw_from_sregs(&pw, sr);
	if ((uint32_t)vec * 16 + 15 > sr->idt.limit || pw_read(&c->vm->mem, &pw, sr->idt.base + vec * 16, g, 16) < 0)
		return 0;
	if (!(g[5] & 0x80))
		return 0; /* not present */
	return (uint64_t)g[0] | (uint64_t)g[1] << 8 | (uint64_t)g[6] << 16 | (uint64_t)g[7] << 24 |
	       (uint64_t)g[8] << 32 | (uint64_t)g[9] << 40 | (uint64_t)g[10] << 48 | (uint64_t)g[11] << 56;
}

void vcpu_syscall_assist_arm(struct vcpu *c)
{
	uint32_t idx = MSR_LSTAR;
	uint64_t lstar = 0;
	struct kvm_sregs sr;
	if (!c->vm->syscall_assist || get_msrs(c, &idx, &lstar, 1) < 0 || !lstar ||
	    ioctl(c->fd, KVM_GET_SREGS, &sr) < 0 || !(sr.efer & (1 << 10)))
		return;
	uint64_t pf = idt_handler(c, &sr, VEC_PF), gp = idt_handler(c, &sr, VEC_GP);
	if (pf == c->syscall_bp[0] && gp == c->syscall_bp[1] && !c->syscall_stepping)
		return;
	if (set_breakpoints(c, pf, gp) < 0)
		log_warn("vCPU %d: SYSCALL assist: KVM_SET_GUEST_DEBUG: %s", c->index, strerror(errno));
	else
		log_info("vCPU %d: SYSCALL assist on (LSTAR %#llx; #PF handler %#llx, #GP handler %#llx)", c->index,
			 (unsigned long long)lstar, (unsigned long long)pf, (unsigned long long)gp);
}

void vcpu_syscall_handle_wrmsr(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	if (run->msr.index != MSR_LSTAR) {
		run->msr.error = 1; /* only LSTAR is filtered; anything else: #GP as KVM would */
		return;
	}
	/* A host-side write bypasses the filter and applies KVM's own checks
	 * (canonical address): a rejected value becomes the guest's #GP. */
	struct { struct kvm_msrs h; struct kvm_msr_entry m; } msrs = { .h.nmsrs = 1 };
	msrs.m.index = MSR_LSTAR;
	msrs.m.data = run->msr.data;
	if (ioctl(c->fd, KVM_SET_MSRS, &msrs) != 1) {
		run->msr.error = 1;
		return;
	}
	run->msr.error = 0;
	vcpu_syscall_assist_arm(c);
}

static void publish_assist(struct vcpu *c, uint64_t rip)
{
	c->assists++;
	struct bus_event bev = { .type = BUS_EV_EMUL_ASSIST, .vcpu = c->index, .exit_reason = KVM_EXIT_DEBUG };
	if (bus_wants(&c->vm->bus, bev.type)) {
		bev.u.emul.rip = rip;
		bev.u.emul.mnemonic = "syscall";
		bev.u.emul.len = 0;
		bus_dispatch(&c->vm->bus, &bev);
	}
}

/* #DB that is not our breakpoint: give it back to the guest. */
static int reinject_db(struct vcpu *c)
{
	struct kvm_vcpu_events ev;
	if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	ev.exception.injected = 1;
	ev.exception.nr = VEC_DB;
	ev.exception.has_error_code = 0;
	ev.exception.error_code = 0;
	ev.flags = 0;
	return ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0 ? -errno : 0;
}

int vcpu_syscall_handle_debug(struct vcpu *c)
{
	struct kvm_regs r;
	struct kvm_sregs sr;
	if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &sr) < 0)
		return err_set(errno, "vCPU %d: debug exit: reading registers: %s", c->index, strerror(errno));
	if (c->syscall_stepping && c->run->debug.arch.exception == VEC_DB) {
		/* The one instruction after a handler breakpoint has run: re-arm. */
		if (set_breakpoints(c, c->syscall_bp[0], c->syscall_bp[1]) < 0)
			return err_set(errno, "vCPU %d: SYSCALL assist: re-arming: %s", c->index, strerror(errno));
		return 0;
	}
	bool ours = c->run->debug.arch.exception == VEC_DB && r.rip &&
		    (r.rip == c->syscall_bp[0] || r.rip == c->syscall_bp[1]);
	if (!ours)
		return reinject_db(c) < 0 ? err_set(errno, "vCPU %d: re-injecting #DB failed", c->index) : 0;
	/* The frame the CPU pushed: error code, RIP, CS, RFLAGS, RSP, SS. */
	uint64_t f[6];
	uint32_t idx[3] = { MSR_LSTAR, MSR_STAR, MSR_SFMASK };
	uint64_t v[3];
	struct pw_regs pw;
	pw_from_sregs(&pw, &sr);
	bool failed_syscall = (sr.cs.selector & 3) == 0 && pw_read(&c->vm->mem, &pw, r.rsp, f, sizeof(f)) == 0 &&
			      get_msrs(c, idx, v, 3) == 0 && (f[2] & 3) == 3 && f[1] == v[0];
	if (!failed_syscall) {
		/* An ordinary fault: let the handler run. KVM's emulator ignores RFLAGS.RF
		 * for these breakpoints on kvm_pvm (the hit repeats forever), so step
		 * over the first instruction without them and re-arm after it. */
		if (set_debug(c, c->syscall_bp[0], c->syscall_bp[1], true) < 0)
			return err_set(errno, "vCPU %d: SYSCALL assist: single step: %s", c->index, strerror(errno));
		return 0;
	}
	uint16_t sel = (uint16_t)(v[1] >> 32) & 0xfffc;
	sr.cs = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = 11, .present = 1,
				      .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
	sr.ss = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = (uint16_t)(sel + 8), .type = 3,
				      .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
	r.rip = v[0];
	r.rsp = f[4];
	r.rflags = (f[3] & ~v[2]) | 2;
	if (ioctl(c->fd, KVM_SET_SREGS, &sr) < 0 || ioctl(c->fd, KVM_SET_REGS, &r) < 0)
		return err_set(errno, "vCPU %d: SYSCALL assist: setting registers: %s", c->index, strerror(errno));
	publish_assist(c, f[1]);
	return 0;
}
