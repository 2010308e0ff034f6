/* vCPU creation, the KVM_RUN loop and the one exit dispatch function. Every exit
 * is published on the VM's service bus before it is handled. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "vmm/vcpu.h"

#define KICK_SIGNAL (SIGRTMIN + 1)

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MISC_ENABLE_FAST_STRING 1ULL

static void kick_handler(int sig) { (void)sig; }

int vcpu_signals_init(void)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: KVM_RUN must return EINTR. */
	if (sigaction(KICK_SIGNAL, &sa, NULL) < 0)
		return err_set(errno, "sigaction: %s", strerror(errno));
	return 0;
}

static int vcpu_set_cpuid(struct vcpu *c, const struct kvm_cpuid2 *supported, const struct cpuid_hide *hide)
{
	size_t sz = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *cp = malloc(sz);
	if (!cp)
		return err_set(ENOMEM, "out of memory");
	memcpy(cp, supported, sz);
	cpuid_adjust(cp, (unsigned)c->index, (unsigned)c->vm->ncpus, hide);
	int r = ioctl(c->fd, KVM_SET_CPUID2, cp);
	free(cp);
	if (r < 0)
		return err_set(errno, "KVM_SET_CPUID2 on vCPU %d: %s", c->index, strerror(errno));
	return 0;
}

static int vcpu_set_msrs(struct vcpu *c)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[8];
	} m = { 0 };
	static const struct { uint32_t index; uint64_t value; } init[] = {
		{ MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_STAR, 0 }, { MSR_LSTAR, 0 }, { MSR_CSTAR, 0 },
		{ MSR_SYSCALL_MASK, 0 }, { MSR_KERNEL_GS_BASE, 0 }, { MSR_IA32_TSC, 0 },
	};
	for (unsigned i = 0; i < 8; i++) {
		m.e[i].index = init[i].index;
		m.e[i].data = init[i].value;
	}
	m.hdr.nmsrs = 8;
	int n = ioctl(c->fd, KVM_SET_MSRS, &m);
	if (n < 0)
		return err_set(errno, "KVM_SET_MSRS on vCPU %d: %s", c->index, strerror(errno));
	if (n != 8)
		log_info("vCPU %d: KVM accepted %d of 8 initial MSRs (first rejected %#x)", c->index, n,
			 m.e[n].index);
	return 0;
}

static void seg_flat(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64, bool db)
{
	*s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
				    .dpl = 0, .db = db, .s = 1, .l = code64, .g = 1 };
}

static int vcpu_set_boot_regs(struct vcpu *c, const struct boot_entry *e)
{
	struct kvm_sregs sr;
	struct kvm_regs regs = { .rflags = 2, .rip = e->rip };
	if (ioctl(c->fd, KVM_GET_SREGS, &sr) < 0)
		return err_set(errno, "KVM_GET_SREGS: %s", strerror(errno));
	if (e->mode == BOOT_MODE_LINUX64) {
		seg_flat(&sr.cs, 0x08, 0xb, true, false);
		seg_flat(&sr.ds, 0x10, 0x3, false, true);
		sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
		sr.tr = (struct kvm_segment){ .selector = 0x18, .limit = 0x67, .type = 0xb, .present = 1 };
		sr.gdt.base = e->gdt_base;
		sr.gdt.limit = e->gdt_limit;
		sr.cr3 = e->cr3;
		sr.cr4 = 1ULL << 5;                            /* PAE */
		sr.cr0 = (1ULL << 0) | (1ULL << 4) | (1ULL << 5) | (1ULL << 31); /* PE ET NE PG */
		sr.efer = (1ULL << 8) | (1ULL << 10);          /* LME LMA */
		regs.rsi = e->rsi;
	} else {
		/* PVH: 32-bit protected mode, paging off, flat segments. A tiny GDT with the
		 * matching descriptors so a guest that reloads selectors before its own
		 * lgdt still sees flat segments. */
		static const uint64_t gdt[4] = { 0, 0x00cf9b000000ffffULL, 0x00cf93000000ffffULL, 0x00008b0000000067ULL };
		if (mem_write(&c->vm->mem, BOOT_GDT_ADDR, gdt, sizeof(gdt)) < 0)
			return err_set(EFAULT, "cannot write the boot GDT");
		seg_flat(&sr.cs, 0x08, 0xb, false, true);
		seg_flat(&sr.ds, 0x10, 0x3, false, true);
		sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
		sr.tr = (struct kvm_segment){ .selector = 0x18, .limit = 0x67, .type = 0xb, .present = 1 };
		sr.gdt.base = BOOT_GDT_ADDR;
		sr.gdt.limit = sizeof(gdt) - 1;
		sr.cr0 = (1ULL << 0) | (1ULL << 4);            /* PE ET */
		sr.cr3 = sr.cr4 = sr.efer = 0;
		regs.rbx = e->rbx;
	}
	sr.idt.base = 0;
	sr.idt.limit = 0;
	if (ioctl(c->fd, KVM_SET_SREGS, &sr) < 0)
		return err_set(errno, "KVM_SET_SREGS: %s", strerror(errno));
	if (ioctl(c->fd, KVM_SET_REGS, &regs) < 0)
		return err_set(errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

int vcpu_create(struct vm *vm, int index, const struct kvm_cpuid2 *supported, const struct cpuid_hide *hide,
		const struct boot_entry *entry)
{
	struct vcpu *c = &vm->cpu[index];
	c->vm = vm;
	c->index = index;
	c->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (c->fd < 0)
		return err_set(errno, "KVM_CREATE_VCPU %d: %s", index, strerror(errno));
	c->run_size = (size_t)vm->vcpu_mmap_size;
	void *p = mmap(NULL, c->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (p == MAP_FAILED) {
		c->run = NULL;
		return err_set(errno, "mmap of vCPU %d run area: %s", index, strerror(errno));
	}
	c->run = p;
	int r;
	if ((r = vcpu_set_cpuid(c, supported, hide)) < 0)
		return r;
	/* A restore loads every MSR from the snapshot: no initial values needed. */
	if (!vm->restore && (r = vcpu_set_msrs(c)) < 0)
		return r;
	if (entry && (r = vcpu_set_boot_regs(c, entry)) < 0)
		return r;
	return 0;
}

void vcpu_destroy(struct vcpu *c)
{
	if (c->run)
		munmap(c->run, c->run_size);
	c->run = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

void vcpu_kick_all(struct vm *vm)
{
	pthread_t self = pthread_self();
	/* Under pause_lock: a vCPU thread registers itself (kickable) under the same
	 * lock before its first KVM_RUN, and checks pause/end requests after that, so
	 * a thread is either signalled here or sees the request itself. */
	pthread_mutex_lock(&vm->pause_lock);
	for (int i = 0; i < vm->ncpus; i++) {
		struct vcpu *c = &vm->cpu[i];
		if (!c->run)
			continue;
		__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_RELEASE);
		if (c->kickable && !pthread_equal(c->thread, self))
			pthread_kill(c->thread, KICK_SIGNAL);
	}
	pthread_mutex_unlock(&vm->pause_lock);
}

static enum bus_event_type exit_event_type(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_IO: return BUS_EV_EXIT_IO;
	case KVM_EXIT_MMIO: return BUS_EV_EXIT_MMIO;
	case KVM_EXIT_HLT: return BUS_EV_EXIT_HLT;
	case KVM_EXIT_SHUTDOWN: return BUS_EV_EXIT_SHUTDOWN;
	case KVM_EXIT_INTERNAL_ERROR: return BUS_EV_EXIT_INTERNAL;
	case KVM_EXIT_FAIL_ENTRY: return BUS_EV_EXIT_FAIL_ENTRY;
	case KVM_EXIT_SYSTEM_EVENT: return BUS_EV_EXIT_SYSTEM;
	case KVM_EXIT_INTR: return BUS_EV_EXIT_INTR;
	default: return BUS_EV_EXIT_OTHER;
	}
}

static void report_unhandled(struct vcpu *c, const char *what, uint64_t addr, bool write, unsigned size)
{
	/* The guest is hostile: unassigned accesses are ignored (reads see all-ones);
	 * only the first few are logged, the total is reported at exit. */
	uint64_t n = __atomic_add_fetch(&c->vm->unassigned_logged, 1, __ATOMIC_RELAXED);
	if (n <= 3)
		log_warn("vCPU %d: %s %s of %u bytes at unassigned address %#llx ignored%s", c->index, what,
			 write ? "write" : "read", size, (unsigned long long)addr, n == 3 ? " (further ones counted silently)" : "");
}

static void handle_io(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	unsigned size = run->io.size;
	uint64_t total = (uint64_t)size * run->io.count;
	if ((size != 1 && size != 2 && size != 4) || run->io.data_offset > c->run_size ||
	    total > c->run_size - run->io.data_offset) {
		log_warn("vCPU %d: malformed I/O exit (size %u count %u) ignored", c->index, size, run->io.count);
		return;
	}
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool write = run->io.direction == KVM_EXIT_IO_OUT;
	for (uint32_t i = 0; i < run->io.count; i++)
		if (!io_pio(&c->vm->io, run->io.port, data + i * size, size, write) && i == 0)
			report_unhandled(c, "port", run->io.port, write, size);
}

static void handle_mmio(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	unsigned len = run->mmio.len;
	if (len == 0 || len > 8) {
		log_warn("vCPU %d: malformed MMIO exit (len %u) ignored", c->index, len);
		return;
	}
	if (!io_mmio(&c->vm->io, run->mmio.phys_addr, run->mmio.data, len, run->mmio.is_write))
		report_unhandled(c, "MMIO", run->mmio.phys_addr, run->mmio.is_write, len);
}

static void handle_system_event(struct vcpu *c)
{
	switch (c->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_end(c->vm, VM_END_POWEROFF, 0, "guest powered off");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_end(c->vm, VM_END_RESET, 0, "guest reset");
		break;
	default:
		vcpu_dump(c, "system event (crash)");
		vm_request_end(c->vm, VM_END_INTERNAL, 8, "guest crash system event");
	}
}

static void handle_internal_error(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && vcpu_emul_assist(c) == 0)
		return;
	char why[128];
	bool emul = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION;
	snprintf(why, sizeof(why), "%s (KVM internal error, suberror %u)",
		 emul ? "emulation failure: KVM could not emulate the instruction" : "KVM internal error",
		 run->internal.suberror);
	vcpu_dump(c, why);
	vm_request_end(c->vm, emul ? VM_END_EMUL_FAILURE : VM_END_INTERNAL, emul ? 6 : 8,
		       emul ? "emulation failure" : "KVM internal error");
}

static inline void count_exit(struct vcpu *c, enum bus_event_type t)
{
	/* Only this thread writes the counter: load + store, no locked add. */
	__atomic_store_n(&c->exits[t], __atomic_load_n(&c->exits[t], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* The one dispatch function: count, publish, then handle. */
static void vcpu_dispatch_exit(struct vcpu *c)
{
	struct kvm_run *run = c->run;
	struct bus_event ev = { .type = exit_event_type(run->exit_reason), .vcpu = c->index, .exit_reason = run->exit_reason };
	count_exit(c, ev.type);
	if (bus_wants(&c->vm->bus, ev.type)) {
		if (ev.type == BUS_EV_EXIT_IO)
			ev.u.io = (typeof(ev.u.io)){ run->io.port, run->io.size, run->io.direction == KVM_EXIT_IO_OUT, run->io.count };
		else if (ev.type == BUS_EV_EXIT_MMIO)
			ev.u.mmio = (typeof(ev.u.mmio)){ run->mmio.phys_addr, (uint8_t)run->mmio.len, run->mmio.is_write };
		bus_dispatch(&c->vm->bus, &ev);
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(c);
		break;
	case KVM_EXIT_MMIO:
		handle_mmio(c);
		break;
	case KVM_EXIT_HLT:
	case KVM_EXIT_INTR:
	case KVM_EXIT_IRQ_WINDOW_OPEN:
		break;
	case KVM_EXIT_SHUTDOWN:
		vcpu_dump(c, "triple fault (KVM_EXIT_SHUTDOWN)");
		vm_request_end(c->vm, VM_END_TRIPLE_FAULT, 4, "guest triple fault");
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		handle_system_event(c);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		handle_internal_error(c);
		break;
	case KVM_EXIT_X86_WRMSR:
		vcpu_syscall_handle_wrmsr(c);
		break;
	case KVM_EXIT_DEBUG:
		if (vcpu_syscall_handle_debug(c) < 0) {
			vcpu_dump(c, err_msg());
			vm_request_end(c->vm, VM_END_INTERNAL, 8, "SYSCALL assist failed");
		}
		break;
	case KVM_EXIT_FAIL_ENTRY: {
		char why[96];
		snprintf(why, sizeof(why), "VM entry failed (hardware reason %#llx)",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vcpu_dump(c, why);
		vm_request_end(c->vm, VM_END_INTERNAL, 8, "VM entry failure");
		break;
	}
	default: {
		char why[64];
		snprintf(why, sizeof(why), "unexpected exit reason %u", run->exit_reason);
		vcpu_dump(c, why);
		vm_request_end(c->vm, VM_END_INTERNAL, 8, why);
	}
	}
}

/* Park this vCPU while the VM is paused (called right after an EINTR exit, when
 * no I/O completion is pending inside KVM). */
static void vcpu_park_if_paused(struct vcpu *c)
{
	struct vm *vm = c->vm;
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_depth && !vm->ending) {
		vm->parked++;
		pthread_cond_broadcast(&vm->pause_cond);
		while (vm->pause_depth && !vm->ending)
			pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
		vm->parked--;
	}
	pthread_mutex_unlock(&vm->pause_lock);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *c = arg;
	char name[16];
	snprintf(name, sizeof(name), "vcpu%d", c->index);
	pthread_setname_np(pthread_self(), name);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	struct vm *vm = c->vm;
	pthread_mutex_lock(&vm->pause_lock);
	c->thread = pthread_self();
	c->kickable = true;
	vm->running_threads++;
	pthread_mutex_unlock(&vm->pause_lock);
	/* Restore latency is measured up to here (first KVM_RUN of any vCPU). */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t none = 0, now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	__atomic_compare_exchange_n(&vm->first_run_ns, &none, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	vcpu_syscall_assist_arm(c);   /* a restored vCPU may have LSTAR set already */
	while (!__atomic_load_n(&vm->ending, __ATOMIC_ACQUIRE)) {
		/* A pause request sets immediate_exit, so KVM_RUN completes any pending
		 * I/O exit and returns EINTR at once: only then is the state stable. */
		if (__atomic_load_n(&vm->pause_depth, __ATOMIC_ACQUIRE))
			__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_RELEASE);
		int r = ioctl(c->fd, KVM_RUN, 0);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				c->run->immediate_exit = 0;
				count_exit(c, BUS_EV_EXIT_INTR);
				struct bus_event ev = { .type = BUS_EV_EXIT_INTR, .vcpu = c->index, .exit_reason = KVM_EXIT_INTR };
				bus_publish(&vm->bus, &ev);
				vcpu_park_if_paused(c);
				continue;
			}
			char why[96];
			snprintf(why, sizeof(why), "KVM_RUN failed on vCPU %d: %s", c->index, strerror(errno));
			vcpu_dump(c, why);
			vm_request_end(c->vm, VM_END_INTERNAL, 8, why);
			break;
		}
		vcpu_dispatch_exit(c);
	}
	pthread_mutex_lock(&vm->pause_lock);
	c->kickable = false;
	vm->running_threads--;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	return NULL;
}

int vcpu_start(struct vcpu *c)
{
	/* vCPU threads never take process signals (SIGINT etc. go to the CLI). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&c->thread, NULL, vcpu_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return err_set(r, "creating vCPU %d thread: %s", c->index, strerror(r));
	c->thread_started = true;
	return 0;
}
