/* The "regs" control command: every vCPU's general-purpose and control registers,
 * read with the VM paused for the few microseconds it takes (KVM_GET_REGS/SREGS
 * need the vCPU outside KVM_RUN). What a developer wants first when a guest hangs:
 * where each vCPU is (RIP, CPL, mode, CR3), sampled repeatedly if need be. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include "control_internal.h"

#ifdef HAVE_JSONC
#include <json-c/json.h>

static void put_u64(struct json_object *o, const char *key, uint64_t v)
{
	/* As "0x..." strings: JSON numbers lose precision above 2^53 in most
	 * clients, and kernel addresses are all above it. */
	char buf[24];
	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	json_object_object_add(o, key, json_object_new_string(buf));
}

static struct json_object *segment(const struct kvm_segment *s)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "selector", json_object_new_int(s->selector));
	put_u64(o, "base", s->base);
	json_object_object_add(o, "limit", json_object_new_int64(s->limit));
	json_object_object_add(o, "type", json_object_new_int(s->type));
	json_object_object_add(o, "dpl", json_object_new_int(s->dpl));
	json_object_object_add(o, "present", json_object_new_boolean(s->present));
	json_object_object_add(o, "l", json_object_new_boolean(s->l));
	json_object_object_add(o, "db", json_object_new_boolean(s->db));
	return o;
}

static const char *cpu_mode(const struct kvm_sregs *s)
{
	if (!(s->cr0 & 1))
		return "real";
	if (s->efer & (1u << 10)) /* EFER.LMA */
		return s->cs.l ? "long" : "compat";
	return "protected";
}

static struct json_object *one_vcpu(struct vcpu *c)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &s) < 0) {
		err_set(errno, "vCPU %d: reading registers: %s", c->index, strerror(errno));
		return NULL;
	}
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "index", json_object_new_int(c->index));
	json_object_object_add(o, "mode", json_object_new_string(cpu_mode(&s)));
	json_object_object_add(o, "cpl", json_object_new_int(s.cs.dpl & 3));
	static const char *const gpr[] = { "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
					   "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15" };
	const uint64_t vals[] = { r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp,
				  r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15 };
	put_u64(o, "rip", r.rip);
	put_u64(o, "rflags", r.rflags);
	for (unsigned i = 0; i < 16; i++)
		put_u64(o, gpr[i], vals[i]);
	put_u64(o, "cr0", s.cr0);
	put_u64(o, "cr2", s.cr2);
	put_u64(o, "cr3", s.cr3);
	put_u64(o, "cr4", s.cr4);
	put_u64(o, "cr8", s.cr8);
	put_u64(o, "efer", s.efer);
	put_u64(o, "apic_base", s.apic_base);
	json_object_object_add(o, "cs", segment(&s.cs));
	json_object_object_add(o, "ss", segment(&s.ss));
	json_object_object_add(o, "ds", segment(&s.ds));
	json_object_object_add(o, "es", segment(&s.es));
	json_object_object_add(o, "fs", segment(&s.fs));
	json_object_object_add(o, "gs", segment(&s.gs));
	json_object_object_add(o, "tr", segment(&s.tr));
	struct json_object *dt = json_object_new_object();
	put_u64(dt, "base", s.gdt.base);
	json_object_object_add(dt, "limit", json_object_new_int(s.gdt.limit));
	json_object_object_add(o, "gdt", dt);
	dt = json_object_new_object();
	put_u64(dt, "base", s.idt.base);
	json_object_object_add(dt, "limit", json_object_new_int(s.idt.limit));
	json_object_object_add(o, "idt", dt);
	return o;
}

/* {"cmd":"regs"} or {"cmd":"regs","vcpu":N}. The VM is paused around the reads
 * (a no-op when it already is), so the registers of all vCPUs are from the same
 * instant of guest time. */
static int cmd_regs(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	struct vm *vm = ctl->vm;
	int only = -1;
	struct json_object *v;
	if (req && json_object_object_get_ex(req, "vcpu", &v)) {
		if (!json_object_is_type(v, json_type_int))
			return err_set(EINVAL, "regs: \"vcpu\" must be an integer");
		int64_t n = json_object_get_int64(v);
		if (n < 0 || n >= vm->ncpus)
			return err_set(EINVAL, "regs: no vCPU %lld (the VM has %d)", (long long)n, vm->ncpus);
		only = (int)n;
	}
	int r = vm_pause(vm);
	if (r < 0)
		return r;
	struct json_object *arr = json_object_new_array();
	for (int i = 0; i < vm->ncpus && r == 0; i++) {
		if (only >= 0 && i != only)
			continue;
		struct json_object *o = one_vcpu(&vm->cpu[i]);
		if (!o)
			r = -EIO;
		else
			json_object_array_add(arr, o);
	}
	vm_resume(vm);
	if (r < 0) {
		json_object_put(arr);
		return r;
	}
	struct json_object *res = json_object_new_object();
	json_object_object_add(res, "vcpus", arr);
	*result = res;
	return 0;
}

void ctl_register_regs(struct control *ctl)
{
	if (ctl->vm)
		control_register_command(ctl, "regs", cmd_regs, ctl);
}
#else
void ctl_register_regs(struct control *ctl) { (void)ctl; }
#endif
