/* VM lifecycle: create (KVM, memory, irqchip, devices, firmware tables, kernel,
 * vCPUs), run (one thread per vCPU), end (first reason wins), destroy. */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/boot.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmstate.h>
#include "vmm/vcpu.h"

#define DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=1"

const char *vm_end_reason_name(enum vm_end_reason r)
{
	switch (r) {
	case VM_END_NONE: return "running";
	case VM_END_POWEROFF: return "poweroff";
	case VM_END_RESET: return "reset";
	case VM_END_DEBUG_EXIT: return "debug-exit";
	case VM_END_TRIPLE_FAULT: return "triple fault";
	case VM_END_EMUL_FAILURE: return "emulation failure";
	case VM_END_INTERNAL: return "internal error";
	case VM_END_USER: return "stopped by user";
	}
	return "?";
}

int vm_add_device(struct vm *vm, const struct device_ops *ops, void *dev)
{
	if (vm->ndevices == VM_MAX_DEVICES)
		return err_set(ENOSPC, "too many devices (max %d)", VM_MAX_DEVICES);
	vm->devices[vm->ndevices++] = (struct device){ ops, dev };
	return 0;
}

static int vm_setup_memory(struct vm *vm)
{
	int r = vm->restore ? snapshot_restore_memory(vm) : mem_init(&vm->mem, vm->cfg.mem_size,
							   vm->cfg.hugepages    ? MEM_BACKEND_HUGETLB
							   : vm->cfg.mem_shared ? MEM_BACKEND_MEMFD
										: MEM_BACKEND_ANON);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		struct mem_region *reg = &vm->mem.region[i];
		struct kvm_userspace_memory_region kr = {
			.slot = i,
			.guest_phys_addr = reg->gpa,
			.memory_size = reg->size,
			.userspace_addr = (uint64_t)(uintptr_t)reg->hva,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0)
			return err_set(errno, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu MiB at %#llx): %s", i,
				       (unsigned long long)(reg->size >> 20), (unsigned long long)reg->gpa, strerror(errno));
	}
	return 0;
}

static int vm_setup_devices(struct vm *vm)
{
	int r;
	/* The PCI bus first: it owns 0xcf8-0xcfb, so pm_attach leaves 0xcf9 to it. */
	if ((r = pci_bus_create(vm)) < 0)
		return err_prefix(r, "setting up devices");
	if ((r = uart_attach(vm, 0x3f8, 4, vm->cfg.serial_out_fd)) < 0 ||
	    (r = i8042_attach(vm)) < 0 || (r = rtc_attach(vm)) < 0 ||
	    (r = debugexit_attach(vm, 0xf4, 4)) < 0 || (r = port80_attach(vm)) < 0 || (r = pm_attach(vm)) < 0)
		return err_prefix(r, "setting up devices");
	for (unsigned i = 0; i < vm->cfg.ndisks; i++)
		if ((r = virtio_blk_attach(vm, vm->cfg.disks[i])) < 0)
			return err_prefix(r, "--disk %s", vm->cfg.disks[i]);
	for (unsigned i = 0; i < vm->cfg.nnets; i++)
		if ((r = virtio_net_attach(vm, vm->cfg.nets[i])) < 0)
			return err_prefix(r, "--net %s", vm->cfg.nets[i]);
	if (vm->cfg.rng && (r = virtio_rng_attach(vm)) < 0)
		return err_prefix(r, "setting up devices");
	return 0;
}

/* A piece of restore work that runs on a helper thread or, if that thread has
 * not started it yet when its result is needed, on the thread that needs it:
 * on a loaded host a new thread can wait milliseconds for a CPU, and waiting
 * for it would then cost more than the work. Shared by the owner and the
 * helper thread (refs); whoever drops the last reference frees it, so the
 * owner never has to wait for a helper that never got to run. */
struct side_job {
	int (*fn)(void *arg);
	void *arg;
	int refs;      /* atomic */
	int claimed;   /* atomic: the work was taken by one of the two threads */
	int done;      /* owner-side: result is final */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int result;
	char err[512];
};

static void side_job_put(struct side_job *j)
{
	if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		pthread_mutex_destroy(&j->lock);
		pthread_cond_destroy(&j->cond);
		free(j);
	}
}

static void side_job_run(struct side_job *j)
{
	int r = j->fn(j->arg);
	pthread_mutex_lock(&j->lock);
	j->result = r;
	if (r < 0)   /* err_msg() is per thread: carried over */
		snprintf(j->err, sizeof(j->err), "%s", err_msg());
	j->done = 1;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

static void *side_job_thread(void *arg)
{
	struct side_job *j = arg;
	if (!__atomic_exchange_n(&j->claimed, 1, __ATOMIC_ACQ_REL))
		side_job_run(j);
	side_job_put(j);
	return NULL;
}

/* Start fn(arg) on a detached thread (or run it now if `thread` is false or no
 * thread can be made). NULL only when out of memory (then nothing ran). */
static struct side_job *side_job_start(int (*fn)(void *), void *arg, bool thread)
{
	struct side_job *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->fn = fn;
	j->arg = arg;
	j->refs = 1;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	pthread_t t;
	pthread_attr_t attr;
	bool started = false;
	if (thread && pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		j->refs = 2;
		started = pthread_create(&t, &attr, side_job_thread, j) == 0;
		if (!started)
			j->refs = 1;
		pthread_attr_destroy(&attr);
	}
	if (!started) {
		j->claimed = 1;
		side_job_run(j);
	}
	return j;
}

/* The job's result (0 or its error, err_msg() set); runs it here if the helper
 * thread has not begun, else waits for it. Frees the owner's reference. */
static int side_job_finish(struct side_job *j)
{
	if (!__atomic_exchange_n(&j->claimed, 1, __ATOMIC_ACQ_REL))
		side_job_run(j);
	pthread_mutex_lock(&j->lock);
	while (!j->done)
		pthread_cond_wait(&j->cond, &j->lock);
	int r = j->result;
	pthread_mutex_unlock(&j->lock);
	if (r < 0)
		err_set(-r, "%s", j->err);
	side_job_put(j);
	return r;
}

/* The owner no longer wants the result: if the work has not begun it never
 * will; if it has, wait for it (it uses the owner's data). */
static void side_job_cancel(struct side_job *j)
{
	if (__atomic_exchange_n(&j->claimed, 1, __ATOMIC_ACQ_REL)) {
		pthread_mutex_lock(&j->lock);
		while (!j->done)
			pthread_cond_wait(&j->cond, &j->lock);
		pthread_mutex_unlock(&j->lock);
	}
	side_job_put(j);
}

static int irqchip_finish_job(void *arg)
{
	struct vm *vm = arg;
	return irqchip_kvm_finish(&vm->irq);
}

int vm_irqchip_ready(struct vm *vm)
{
	struct side_job *j = vm->irq_job;
	if (!j)
		return 0;
	vm->irq_job = NULL;
	return side_job_finish(j);
}

/* Restore: read and validate the snapshot as a side job while KVM creates the
 * VM (neither needs the other). */
struct restore_open_args {
	struct vm *vm;
	const struct vm_config *cfg;
};

static int restore_open_job(void *arg)
{
	struct restore_open_args *a = arg;
	const struct vm_config *cfg = a->cfg;
	return cfg->restore_state ? snapshot_restore_open_buf(a->vm, cfg->restore_state, cfg->restore_state_len,
							      cfg->restore_mem_fd, cfg->restore_name)
				  : snapshot_restore_open(a->vm, cfg->restore_dir);
}

int vm_supported_cpuid(struct vm *vm, const struct kvm_cpuid2 **out)
{
	struct kvm_cpuid2 *have = __atomic_load_n(&vm->supported_cpuid, __ATOMIC_ACQUIRE);
	if (!have) {
		struct kvm_cpuid2 *got = NULL;
		int r = cpuid_get_supported(vm->kvm_fd, &got);
		if (r < 0)
			return r;
		/* Two threads may both fetch it; the first one stored wins. */
		if (__atomic_compare_exchange_n(&vm->supported_cpuid, &have, got, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			have = got;
		else
			free(got);
	}
	*out = have;
	return 0;
}

/* vCPUs with CPUID and initial MSRs; the BSP starts at `entry` (NULL: restore). */
static int vm_create_vcpus(struct vm *vm, const struct boot_entry *entry)
{
	int r;
	struct cpuid_hide hide = { 0 };
	if (vm->cfg.cpu_features && (r = cpuid_parse_features(vm->cfg.cpu_features, &hide)) < 0)
		return r;
	const struct kvm_cpuid2 *supported;
	if ((r = vm_supported_cpuid(vm, &supported)) < 0)
		return r;
	for (int i = 0; i < vm->ncpus; i++) {
		r = vcpu_create(vm, i, supported, &hide, i == 0 ? entry : NULL);
		if (r < 0)
			break;
	}
	return r;
}

/* VMSVC_RESTORE_TIMING=1: vm_create prints how long each step of a restore
 * took (stderr, one line), to see where restore latency goes. */
#define VM_MAX_STEPS 12
struct step_timer {
	bool on;
	unsigned n;
	uint64_t t0, last;
	const char *name[VM_MAX_STEPS];
	uint64_t ns[VM_MAX_STEPS];
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void step_start(struct step_timer *t, bool restoring)
{
	const char *e = getenv("VMSVC_RESTORE_TIMING");
	t->on = restoring && e && *e && strcmp(e, "0") != 0;
	t->n = 0;
	t->t0 = t->last = t->on ? mono_ns() : 0;
}

static void step_done(struct step_timer *t, const char *name)
{
	if (!t->on || t->n == VM_MAX_STEPS)
		return;
	uint64_t now = mono_ns();
	t->name[t->n] = name;
	t->ns[t->n++] = now - t->last;
	t->last = now;
}

static void step_print(const struct step_timer *t)
{
	if (!t->on)
		return;
	char line[512];
	int len = snprintf(line, sizeof(line), "restore timing (us):");
	for (unsigned i = 0; i < t->n && len < (int)sizeof(line); i++)
		len += snprintf(line + len, sizeof(line) - (size_t)len, " %s %.0f", t->name[i], (double)t->ns[i] / 1e3);
	if (len < (int)sizeof(line))
		snprintf(line + len, sizeof(line) - (size_t)len, "; vm_create total %.0f",
			 (double)(t->last - t->t0) / 1e3);
	fprintf(stderr, "vmsvc: %s\n", line);
}

int vm_create(const struct vm_config *cfg, struct vm **out)
{
	int r;
	bool restoring = cfg->restore_dir || cfg->restore_state;
	struct step_timer st;
	step_start(&st, restoring);
	if (!restoring && (cfg->ncpus < 1 || cfg->ncpus > VM_MAX_CPUS))
		return err_set(EINVAL, "--cpus %d out of range (1..%d)", cfg->ncpus, VM_MAX_CPUS);
	if (!cfg->kernel && !restoring)
		return err_set(EINVAL, "no kernel given");
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return err_set(ENOMEM, "out of memory");
	vm->cfg = *cfg;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->mem.fd = -1;
	vm->ncpus = cfg->ncpus;
	for (int i = 0; i < VM_MAX_CPUS; i++)
		vm->cpu[i].fd = -1;
	pthread_mutex_init(&vm->end_lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	bus_init(&vm->bus);
	io_bus_init(&vm->io);

	if ((r = kvm_probe(&vm->kvm_fd)) < 0)
		goto fail;
	step_done(&st, "open-kvm");
	/* Restore: validate the whole snapshot and take the machine shape from it
	 * before anything is built on the VM (only the empty KVM VM is created
	 * meanwhile, on this thread). */
	struct restore_open_args open_args = { .vm = vm, .cfg = cfg };
	bool threads = !getenv("VMSVC_RESTORE_SEQUENTIAL");
	struct side_job *open_job = NULL;
	if (restoring && !(open_job = side_job_start(restore_open_job, &open_args, threads))) {
		r = err_set(ENOMEM, "out of memory");
		goto fail;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	int create_errno = errno;
	step_done(&st, "create-vm");
	if (open_job && (r = side_job_finish(open_job)) < 0)
		goto fail;
	step_done(&st, "read+validate(overlapped)");
	if (vm->vm_fd < 0) {
		r = err_set(create_errno, "KVM_CREATE_VM failed: %s (KVM is not usable on this host)",
			    strerror(create_errno));
		goto fail;
	}
	vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
		r = err_set(EINVAL, "KVM_GET_VCPU_MMAP_SIZE returned %d", vm->vcpu_mmap_size);
		goto fail;
	}
	/* Intel needs these three pages somewhere unused; just below the BIOS area at 4 GiB. */
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	uint64_t idmap = 0xfffbc000ULL;
	ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	/* With this, emulation failures come with the instruction bytes, so the
	 * emulation assist can complete them. Absent on old kernels: fine. */
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_EXIT_ON_EMULATION_FAILURE) > 0) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_ON_EMULATION_FAILURE, .args[0] = 1 };
		ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap);
	}
	/* Lets guest user space make system calls on hosts (kvm_pvm) whose SYSCALL
	 * does not enter CPL0; inert elsewhere. Optional: without it, none can. */
	vm->syscall_assist = vm_syscall_assist_setup(vm->vm_fd, vm->kvm_fd) == 0;
	vm->syscall_step_flags = vm_syscall_assist_step_flags(vm->kvm_fd);
	/* Memory slots before the irqchip: on the development host (kvm_pvm) a
	 * 512 MiB slot took 0.5-3 ms this way round and 6-12 ms after
	 * KVM_CREATE_IRQCHIP/PIT2 (docs/benchmarks.md, "State"). */
	if ((r = vm_setup_memory(vm)) < 0)
		goto fail;
	step_done(&st, "memory");
	if ((r = irqchip_kvm_create(&vm->irq, vm->vm_fd)) < 0)
		goto fail;
	vm->irq.bus = &vm->bus;
	step_done(&st, "irqchip");

	if (vm->restore) {
		/* vCPUs right after the irqchip (KVM_CREATE_PIT2 holds the lock that
		 * KVM_CREATE_VCPU needs); then the PIT and routes on a thread while the
		 * devices are built and the vCPU state loaded. Nothing of a fresh boot
		 * (ACPI/MP tables, kernel loading, boot registers) is done. */
		if ((r = vm_create_vcpus(vm, NULL)) < 0)
			goto fail;
		step_done(&st, "vcpus");
		if (!(vm->irq_job = side_job_start(irqchip_finish_job, vm, threads))) {
			r = err_set(ENOMEM, "out of memory");
			goto fail;
		}
		if ((r = vm_setup_devices(vm)) < 0)
			goto fail;
		step_done(&st, "devices");
		if ((r = snapshot_restore_state(vm)) < 0)   /* joins the irqchip thread (vm_irqchip_ready) */
			goto fail;
		/* e.g. suspend's disk overlay blocks, written before any vCPU runs */
		if (cfg->restore_hook && (r = cfg->restore_hook(vm, cfg->restore_hook_arg)) < 0)
			goto fail;
		step_done(&st, "load-state(+pit)");
		step_print(&st);
		*out = vm;
		return 0;
	}
	if ((r = irqchip_kvm_finish(&vm->irq)) < 0)
		goto fail;
	if ((r = vm_setup_devices(vm)) < 0)
		goto fail;

	uint64_t rsdp = 0;
	if ((r = platform_write_tables(&vm->mem, (unsigned)vm->ncpus, &rsdp)) < 0) {
		r = err_prefix(r, "writing ACPI/MP tables");
		goto fail;
	}
	struct boot_request req = {
		.kernel_path = cfg->kernel,
		.initrd_path = cfg->initrd,
		.cmdline = cfg->cmdline ? cfg->cmdline : DEFAULT_CMDLINE,
		.acpi_rsdp = rsdp,
	};
	struct boot_entry entry;
	if ((r = boot_load(&vm->mem, &req, &entry)) < 0)
		goto fail;
	log_info("loaded %s: %s, entry %#llx", cfg->kernel, entry.kind, (unsigned long long)entry.rip);

	if ((r = vm_create_vcpus(vm, &entry)) < 0)
		goto fail;
	*out = vm;
	return 0;
fail:
	vm_destroy(vm);
	return r;
}

void vm_request_end(struct vm *vm, enum vm_end_reason reason, int status, const char *msg)
{
	pthread_mutex_lock(&vm->end_lock);
	if (!vm->ending) {
		vm->end_reason = reason;
		vm->end_status = status;
		snprintf(vm->end_msg, sizeof(vm->end_msg), "%s", msg ? msg : vm_end_reason_name(reason));
		__atomic_store_n(&vm->ending, 1, __ATOMIC_RELEASE);
		struct bus_event ev = { .type = BUS_EV_GUEST_END, .vcpu = -1, .u.end = { reason, status } };
		bus_publish(&vm->bus, &ev);
	}
	pthread_mutex_unlock(&vm->end_lock);
	vcpu_kick_all(vm);
	/* Parked vCPUs must see the end too. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

int vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->ending) {
		pthread_mutex_unlock(&vm->pause_lock);
		return err_set(EBUSY, "the VM is ending");
	}
	bool first = vm->pause_depth++ == 0;
	pthread_mutex_unlock(&vm->pause_lock);
	if (first)
		vcpu_kick_all(vm);
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->parked < vm->running_threads && !vm->ending)
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	pthread_mutex_unlock(&vm->pause_lock);
	if (first) {
		struct bus_event ev = { .type = BUS_EV_VM_PAUSED, .vcpu = -1 };
		bus_publish(&vm->bus, &ev);
	}
	return 0;
}

/* Devices held by quiesce (snapshot) or load (restore) carry on. Called with
 * pause_lock held and only when no pause is in effect, so a snapshot that pauses
 * and quiesces concurrently cannot be undone by a late release. (Device I/O
 * threads never take pause_lock, so waiting for them here cannot deadlock.) */
static void vm_resume_devices_locked(struct vm *vm)
{
	if (vm->pause_depth != 0 || __atomic_load_n(&vm->ending, __ATOMIC_ACQUIRE))
		return;
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (vm->devices[i].ops->resume)
			vm->devices[i].ops->resume(vm->devices[i].dev);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool last = vm->pause_depth > 0 && --vm->pause_depth == 0;
	if (last) {
		/* Devices first, then the vCPUs. Not for a VM that ends (snapshot
		 * --stop, suspend): nothing may reach its disks or guest memory after
		 * its final state was captured. */
		vm_resume_devices_locked(vm);
		pthread_cond_broadcast(&vm->pause_cond);
	}
	pthread_mutex_unlock(&vm->pause_lock);
	if (last) {
		struct bus_event ev = { .type = BUS_EV_VM_RESUMED, .vcpu = -1 };
		bus_publish(&vm->bus, &ev);
	}
}

bool vm_is_paused(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool p = vm->pause_depth > 0;
	pthread_mutex_unlock(&vm->pause_lock);
	return p;
}

int vm_run(struct vm *vm)
{
	int r = vcpu_signals_init();
	if (r < 0)
		return r;
	struct bus_event ev = { .type = BUS_EV_VM_STARTED, .vcpu = -1 };
	bus_publish(&vm->bus, &ev);
	for (int i = 0; i < vm->ncpus; i++) {
		r = vcpu_start(&vm->cpu[i]);
		if (r < 0) {
			vm_request_end(vm, VM_END_INTERNAL, 8, err_msg());
			break;
		}
	}
	/* A restored VM's devices are held until now (after the vCPUs start, so
	 * that this is not on the restore latency path; kicks wait meanwhile). If
	 * a pause is in effect, its vm_resume does it. */
	pthread_mutex_lock(&vm->pause_lock);
	vm_resume_devices_locked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
	for (int i = 0; i < vm->ncpus; i++)
		if (vm->cpu[i].thread_started) {
			pthread_join(vm->cpu[i].thread, NULL);
			vm->cpu[i].thread_started = false;
		}
	ev.type = BUS_EV_VM_STOPPED;
	bus_publish(&vm->bus, &ev);
	switch (vm->end_reason) {
	case VM_END_POWEROFF:
	case VM_END_RESET:
		return 0;
	case VM_END_DEBUG_EXIT:
	case VM_END_USER:
		return vm->end_status;
	case VM_END_TRIPLE_FAULT:
		return 4;
	case VM_END_EMUL_FAILURE:
		return 6;
	default:
		return 8;
	}
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->irq_job) {   /* a failed restore may leave it running */
		side_job_cancel(vm->irq_job);
		vm->irq_job = NULL;
	}
	for (int i = 0; i < VM_MAX_CPUS; i++)
		vcpu_destroy(&vm->cpu[i]);
	for (int i = (int)vm->ndevices - 1; i >= 0; i--)
		if (vm->devices[i].ops->destroy)
			vm->devices[i].ops->destroy(vm->devices[i].dev);
	if (vm->irq.ops && vm->irq.ops->destroy)
		vm->irq.ops->destroy(&vm->irq);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	mem_free(&vm->mem);
	free(vm->supported_cpuid);
	snapshot_restore_close(vm);
	io_bus_destroy(&vm->io);
	/* After the devices and vCPUs: nothing publishes any more. */
	bus_cleanup(&vm->bus);
	pthread_mutex_destroy(&vm->end_lock);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm);
}
