/* VM lifecycle: create (KVM, memory, irqchip, devices, firmware tables, kernel,
 * vCPUs), run (one thread per vCPU), end (first reason wins), destroy. */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* vCPUs with CPUID and initial MSRs; the BSP starts at `entry` (NULL: restore). */
static int vm_create_vcpus(struct vm *vm, const struct boot_entry *entry)
{
	int r;
	struct cpuid_hide hide = { 0 };
	if (vm->cfg.cpu_features && (r = cpuid_parse_features(vm->cfg.cpu_features, &hide)) < 0)
		return r;
	struct kvm_cpuid2 *supported = NULL;
	if ((r = cpuid_get_supported(vm->kvm_fd, &supported)) < 0)
		return r;
	for (int i = 0; i < vm->ncpus; i++) {
		r = vcpu_create(vm, i, supported, &hide, i == 0 ? entry : NULL);
		if (r < 0)
			break;
	}
	free(supported);
	return r;
}

int vm_create(const struct vm_config *cfg, struct vm **out)
{
	int r;
	bool restoring = cfg->restore_dir || cfg->restore_state;
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
	/* Restore: validate the whole snapshot and take the machine shape from it
	 * before anything else is built. */
	r = 0;
	if (cfg->restore_state)
		r = snapshot_restore_open_buf(vm, cfg->restore_state, cfg->restore_state_len, cfg->restore_mem_fd,
					      cfg->restore_name);
	else if (cfg->restore_dir)
		r = snapshot_restore_open(vm, cfg->restore_dir);
	if (r < 0)
		goto fail;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		r = err_set(errno, "KVM_CREATE_VM failed: %s (KVM is not usable on this host)", strerror(errno));
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
	if ((r = irqchip_kvm_create(&vm->irq, vm->vm_fd)) < 0)
		goto fail;
	vm->irq.bus = &vm->bus;
	if ((r = vm_setup_memory(vm)) < 0)
		goto fail;
	if ((r = vm_setup_devices(vm)) < 0)
		goto fail;

	if (vm->restore) {
		r = vm_create_vcpus(vm, NULL);
		if (r == 0)
			r = snapshot_restore_state(vm);
		if (r < 0)
			goto fail;
		*out = vm;
		return 0;
	}

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

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool last = vm->pause_depth > 0 && --vm->pause_depth == 0;
	if (last)
		pthread_cond_broadcast(&vm->pause_cond);
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
	snapshot_restore_close(vm);
	io_bus_destroy(&vm->io);
	/* After the devices and vCPUs: nothing publishes any more. */
	bus_cleanup(&vm->bus);
	pthread_mutex_destroy(&vm->end_lock);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm);
}
