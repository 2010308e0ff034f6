/* Exit diagnostics and the emulation assist glue (KVM state <-> struct emul_cpu). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <vmsvc/emul.h>
#include <vmsvc/err.h>
#include <vmsvc/pagewalk.h>
#include "vmm/vcpu.h"

static void pw_from_sregs(struct pw_regs *pw, const struct kvm_sregs *sr)
{
	*pw = (struct pw_regs){ .cr0 = sr->cr0, .cr3 = sr->cr3, .cr4 = sr->cr4, .efer = sr->efer };
}

void vcpu_dump(struct vcpu *c, const char *why)
{
	struct kvm_regs r;
	struct kvm_sregs sr;
	char line[1600];
	int n = 0;
	if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &sr) < 0) {
		log_error("vCPU %d: %s (registers unavailable: %s)", c->index, why, strerror(errno));
		return;
	}
	struct pw_regs pw;
	pw_from_sregs(&pw, &sr);
	uint8_t bytes[15];
	uint64_t lin = r.rip + ((sr.efer & (1 << 10)) && sr.cs.l ? 0 : sr.cs.base);
	int have_bytes = pw_read(&c->vm->mem, &pw, lin, bytes, sizeof(bytes)) == 0;
	if (!have_bytes && c->run->exit_reason == KVM_EXIT_INTERNAL_ERROR &&
	    c->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && c->run->emulation_failure.ndata >= 3 &&
	    (c->run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
		unsigned nb = c->run->emulation_failure.insn_size;
		memcpy(bytes, c->run->emulation_failure.insn_bytes, nb < 15 ? nb : 15);
		have_bytes = 1;
	}
	n += snprintf(line + n, sizeof(line) - n, "vCPU %d: %s at RIP %#llx (CS %#x, CPL %u), bytes:", c->index, why,
		      (unsigned long long)r.rip, sr.cs.selector, sr.cs.dpl);
	if (have_bytes)
		for (int i = 0; i < 15; i++)
			n += snprintf(line + n, sizeof(line) - n, " %02x", bytes[i]);
	else
		n += snprintf(line + n, sizeof(line) - n, " (unmapped)");
	log_error("%s", line);
	log_error("  rax %016llx rbx %016llx rcx %016llx rdx %016llx", r.rax, r.rbx, r.rcx, r.rdx);
	log_error("  rsi %016llx rdi %016llx rbp %016llx rsp %016llx", r.rsi, r.rdi, r.rbp, r.rsp);
	log_error("  r8  %016llx r9  %016llx r10 %016llx r11 %016llx", r.r8, r.r9, r.r10, r.r11);
	log_error("  r12 %016llx r13 %016llx r14 %016llx r15 %016llx", r.r12, r.r13, r.r14, r.r15);
	log_error("  rflags %08llx cr0 %08llx cr2 %016llx cr3 %016llx cr4 %08llx efer %llx", r.rflags,
		  sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer);
	log_error("  gdt %llx/%x idt %llx/%x tr %x ss %x", sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit,
		  sr.tr.selector, sr.ss.selector);
}

struct assist_ctx {
	struct vcpu *c;
	struct pw_regs pw;
};

static int assist_read(void *opaque, uint64_t gva, void *dst, unsigned len)
{
	struct assist_ctx *a = opaque;
	return pw_read(&a->c->vm->mem, &a->pw, gva, dst, len);
}
static int assist_write(void *opaque, uint64_t gva, const void *src, unsigned len)
{
	struct assist_ctx *a = opaque;
	return pw_write(&a->c->vm->mem, &a->pw, gva, src, len);
}

int vcpu_emul_assist(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	if (run->emulation_failure.ndata < 3 ||
	    !(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
		return -ENODATA;
	unsigned nbytes = run->emulation_failure.insn_size;
	if (nbytes == 0 || nbytes > 15)
		return -EINVAL;
	struct emul_cpu *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	struct assist_ctx ctx = { .c = c };
	int r = -EIO;
	if (ioctl(c->fd, KVM_GET_REGS, &e->regs) < 0 || ioctl(c->fd, KVM_GET_SREGS, &e->sregs) < 0 ||
	    ioctl(c->fd, KVM_GET_XSAVE, &e->xsave) < 0)
		goto out;
	if (ioctl(c->fd, KVM_GET_XCRS, &e->xcrs) < 0)
		memset(&e->xcrs, 0, sizeof(e->xcrs));
	pw_from_sregs(&ctx.pw, &e->sregs);
	e->read = assist_read;
	e->write = assist_write;
	e->opaque = &ctx;
	e->inject_vector = -1;
	e->inject_error_code = -1;
	{
		struct { struct kvm_msrs h; struct kvm_msr_entry m[2]; } msrs = { .h.nmsrs = 2 };
		msrs.m[0].index = 0x10;        /* TSC */
		msrs.m[1].index = 0xc0000103;  /* TSC_AUX */
		if (ioctl(c->fd, KVM_GET_MSRS, &msrs) >= 1) {
			e->tsc = msrs.m[0].data;
			e->tsc_aux = (uint32_t)msrs.m[1].data;
		}
	}
	const char *name = NULL;
	uint64_t rip = e->regs.rip;
	r = emul_complete(e, run->emulation_failure.insn_bytes, nbytes, &name);
	if (r < 0)
		goto out;
	if (ioctl(c->fd, KVM_SET_REGS, &e->regs) < 0)
		r = -errno;
	if (r == 0 && e->xsave_dirty && ioctl(c->fd, KVM_SET_XSAVE, &e->xsave) < 0)
		r = -errno;
	if (r == 0 && e->xcrs_dirty && ioctl(c->fd, KVM_SET_XCRS, &e->xcrs) < 0)
		r = -errno;
	if (r == 0 && e->inject_vector >= 0) {
		struct kvm_vcpu_events ev;
		if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) == 0) {
			ev.exception.injected = 1;
			ev.exception.nr = (uint8_t)e->inject_vector;
			ev.exception.has_error_code = e->inject_error_code >= 0;
			ev.exception.error_code = e->inject_error_code >= 0 ? (uint32_t)e->inject_error_code : 0;
			ev.flags = 0;
			if (ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
				r = -errno;
		} else {
			r = -errno;
		}
	}
	if (r == 0) {
		c->assists++;
		struct bus_event bev = { .type = BUS_EV_EMUL_ASSIST, .vcpu = c->index,
					 .exit_reason = KVM_EXIT_INTERNAL_ERROR };
		if (bus_wants(&c->vm->bus, bev.type)) {
			bev.u.emul.rip = rip;
			bev.u.emul.mnemonic = name;
			bev.u.emul.len = (uint8_t)nbytes;
			memcpy(bev.u.emul.bytes, run->emulation_failure.insn_bytes, nbytes);
			bus_dispatch(&c->vm->bus, &bev);
		}
	}
out:
	free(e);
	return r;
}
