/* The "memory" control command: what `vmsvc inspect NAME` needs to introspect
 * a running VM from its own process (docs/api.md, docs/vmi.md).
 *
 * The response carries the RAM layout (regions: gpa, size, offset in the
 * memory file), per vCPU the control registers, RIP and the system-call MSRs
 * (LSTAR, CSTAR, SYSENTER_EIP), and passes a read-only fd of guest RAM with
 * SCM_RIGHTS. The client maps it and runs the introspection code itself: a
 * parser bug triggered by hostile guest memory then cannot hurt the VMM, and
 * the VM keeps running while the client reads (racily; `--pause` for a
 * consistent view). The socket is 0600, so only its owner gets the fd.
 *
 * RAM that is a memfd (`run --mem-shared`, `vmsvc resume FILE`) is passed as a
 * new read-only open of that memfd. Anonymous RAM (the default: transparent huge
 * pages, include/vmsvc/mem.h) and a VM restored from a snapshot directory (a
 * private copy-on-write mapping of DIR/memory) have no fd: the current RAM is
 * copied into a sealed memfd while the VM is paused (pages never touched and
 * zero pages are skipped and stay holes; up to about a second per GiB of
 * touched RAM on a loaded host). */
#ifdef HAVE_JSONC
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmi.h>
#include "services/control_internal.h"

#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083

static struct json_object *u64(uint64_t v)
{
	return json_object_new_uint64(v);
}

/* One MSR; false if KVM cannot read it on this vCPU. */
static bool read_msr(int vcpu_fd, uint32_t index, uint64_t *v)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = index };
	if (ioctl(vcpu_fd, KVM_GET_MSRS, &m) != 1)
		return false;
	*v = m.e.data;
	return true;
}

static int vcpu_json(struct vcpu *c, struct json_object **out)
{
	struct kvm_sregs sr;
	struct kvm_regs regs;
	if (ioctl(c->fd, KVM_GET_SREGS, &sr) < 0 || ioctl(c->fd, KVM_GET_REGS, &regs) < 0)
		return err_set(errno, "vCPU %d: reading registers: %s", c->index, strerror(errno));
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "cr0", u64(sr.cr0));
	json_object_object_add(o, "cr3", u64(sr.cr3));
	json_object_object_add(o, "cr4", u64(sr.cr4));
	json_object_object_add(o, "efer", u64(sr.efer));
	json_object_object_add(o, "rip", u64(regs.rip));
	static const struct { const char *name; uint32_t index; } msrs[] = {
		{ "lstar", MSR_LSTAR }, { "cstar", MSR_CSTAR }, { "sysenter_eip", MSR_IA32_SYSENTER_EIP },
	};
	for (unsigned i = 0; i < sizeof(msrs) / sizeof(msrs[0]); i++) {
		uint64_t v;
		if (read_msr(c->fd, msrs[i].index, &v))
			json_object_object_add(o, msrs[i].name, u64(v));
	}
	*out = o;
	return 0;
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[4096];
	return !memcmp(p, zero, sizeof(zero));
}

/* A sealed memfd holding the current RAM (the VM is paused). */
static int copy_ram(const struct guest_mem *g)
{
	int fd = memfd_create("vmsvc-ram-copy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return err_set(errno, "memfd_create: %s", strerror(errno));
	if (ftruncate(fd, (off_t)g->ram_size) < 0) {
		int e = errno;
		close(fd);
		return err_set(e, "sizing the RAM copy (%llu bytes): %s", (unsigned long long)g->ram_size, strerror(e));
	}
	for (unsigned i = 0; i < g->nregions; i++) {
		const struct mem_region *r = &g->region[i];
		/* Anonymous RAM (the default backing): pages the guest never touched
		 * are not resident and read as zero; skip them without reading them. */
		unsigned char *res = NULL;
		if (g->anon && (res = malloc(r->size / 4096 + 1)) && mincore(r->hva, r->size, res) < 0) {
			free(res);
			res = NULL;
		}
#define SKIP(o) ((res && !(res[(o) / 4096] & 1)) || page_is_zero(r->hva + (o)))
		for (uint64_t off = 0; off < r->size;) {
			/* Runs of non-zero pages in one pwrite; zero pages stay holes. */
			while (off < r->size && SKIP(off))
				off += 4096;
			uint64_t end = off;
			while (end < r->size && end - off < (8u << 20) && !SKIP(end))
				end += 4096;
#undef SKIP
			for (uint64_t done = off; done < end;) {
				ssize_t n = pwrite(fd, r->hva + done, end - done, (off_t)(r->fd_offset + done));
				if (n <= 0) {
					int e = n < 0 ? errno : EIO;
					if (e == EINTR)
						continue;
					close(fd);
					free(res);
					return err_set(e, "copying guest RAM: %s", strerror(e));
				}
				done += (uint64_t)n;
			}
			off = end;
		}
		free(res);
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
		int e = errno;
		close(fd);
		return err_set(e, "sealing the RAM copy: %s", strerror(e));
	}
	return fd;
}

/* A read-only open file description of memfd (the VM's own is read-write). */
static int reopen_ro(int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int ro = open(path, O_RDONLY | O_CLOEXEC);
	if (ro < 0)
		return err_set(errno, "reopening guest RAM read-only: %s", strerror(errno));
	return ro;
}

static int cmd_memory(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	struct vm *vm = ctl->vm;
	if (!vm)
		return err_set(ENOTSUP, "memory: no VM");
	/* vCPU registers are only stable (and KVM_GET_* only return without
	 * waiting for KVM_RUN to exit) while the vCPUs are parked. Nested with a
	 * pause the client or `vmsvc pause` may hold. */
	int r = vm_pause(vm);
	if (r < 0)
		return r;
	struct json_object *res = json_object_new_object();
	struct json_object *cpus = json_object_new_array();
	json_object_object_add(res, "vcpus", cpus);
	for (int i = 0; i < vm->ncpus && r == 0; i++) {
		struct json_object *c = NULL;
		r = vcpu_json(&vm->cpu[i], &c);
		if (r == 0)
			json_object_array_add(cpus, c);
	}
	const struct guest_mem *g = &vm->mem;
	int fd = -1;
	bool copied = g->fd < 0;
	if (r == 0) {
		fd = copied ? copy_ram(g) : reopen_ro(g->fd);
		if (fd < 0)
			r = fd;
		if (copied && fd >= 0) {
			int ro = reopen_ro(fd);
			close(fd);
			fd = ro;
			if (fd < 0)
				r = fd;
		}
	}
	vm_resume(vm);
	if (r < 0) {
		json_object_put(res);
		return r;
	}
	json_object_object_add(res, "ram_size", u64(g->ram_size));
	json_object_object_add(res, "copied", json_object_new_boolean(copied));
	struct json_object *regions = json_object_new_array();
	for (unsigned i = 0; i < g->nregions; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "gpa", u64(g->region[i].gpa));
		json_object_object_add(o, "size", u64(g->region[i].size));
		json_object_object_add(o, "offset", u64(g->region[i].fd_offset));
		json_object_array_add(regions, o);
	}
	json_object_object_add(res, "regions", regions);
	control_reply_fd(ctl, fd);
	*result = res;
	return 0;
}

int vmi_control_register(struct control *ctl)
{
	return control_register_command(ctl, "memory", cmd_memory, ctl);
}
#else
#include <errno.h>
#include <vmsvc/vmi.h>
int vmi_control_register(struct control *ctl)
{
	return -ENOTSUP;
}
#endif
