/* A virtual machine: KVM fds, memory, devices, vCPU threads. No global state:
 * several VMs may live in one process (clones need it). */
#ifndef VMSVC_VM_H
#define VMSVC_VM_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <vmsvc/bus.h>
#include <vmsvc/io.h>
#include <vmsvc/irq.h>
#include <vmsvc/mem.h>

#define VM_MAX_CPUS 64
#define VM_MAX_DEVICES 32
#define VM_MAX_DISKS 8
#define VM_MAX_NETS 4

/* How the guest ended; decides the process exit status. */
enum vm_end_reason {
	VM_END_NONE = 0,
	VM_END_POWEROFF,      /* status 0 */
	VM_END_RESET,         /* status 0 */
	VM_END_DEBUG_EXIT,    /* status (value << 1) | 1, like QEMU's isa-debug-exit */
	VM_END_TRIPLE_FAULT,  /* non-zero, diagnostic printed */
	VM_END_EMUL_FAILURE,  /* non-zero, diagnostic printed */
	VM_END_INTERNAL,      /* other KVM/VMM failure */
	VM_END_USER,          /* user quit (escape sequence, signal) */
};
const char *vm_end_reason_name(enum vm_end_reason r);

struct vm;
struct vm_config {
	const char *kernel;
	const char *initrd;
	const char *cmdline;      /* NULL = default */
	uint64_t mem_size;        /* bytes */
	int ncpus;
	bool hugepages;           /* RAM on hugetlbfs (reserved 2 MiB pages) */
	bool mem_shared;          /* RAM in a memfd (vm->mem.fd) instead of anonymous THP memory */
	const char *cpu_features; /* "-cx16,-xsave,..." or a preset name; NULL = none */
	int serial_out_fd;        /* where UART output goes */
	int serial_in_fd;         /* where UART input comes from, -1 = none */
	bool stats;               /* print per-exit-type statistics at exit */
	bool rng;                 /* virtio-rng PCI device */
	/* virtio-blk disks: "PATH[,ro][,overlay=FILE|,ephemeral][,serial=S][,cache=none]" */
	unsigned ndisks;
	const char *disks[VM_MAX_DISKS];
	/* virtio-net NICs: "tap=NAME[,mac=MAC][,capture=FILE.pcap][,create=on]" */
	unsigned nnets;
	const char *nets[VM_MAX_NETS];
	/* Restore from this snapshot directory (include/vmsvc/vmstate.h) instead of
	 * booting a kernel: memory size, vCPUs, CPU features and the rng come from the
	 * snapshot; disks/nets must be given again, the same number as saved. */
	const char *restore_dir;
	/* The same from memory (`vmsvc resume FILE`): the state file image and a memfd
	 * of guest RAM (dup'ed; the caller closes its own). Used when restore_state. */
	const uint8_t *restore_state;
	size_t restore_state_len;
	int restore_mem_fd;
	const char *restore_name;  /* names the source in errors */
	/* Restores only: called at the end of vm_create (devices exist, state loaded,
	 * nothing ran yet); a failure fails vm_create. `vmsvc resume` fills the disk
	 * overlays from the suspend file here. */
	int (*restore_hook)(struct vm *vm, void *arg);
	void *restore_hook_arg;
};

struct vm;
struct pci_bus;
struct vcpu {
	struct vm *vm;
	int index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	bool kickable;            /* the thread is in its run loop (under vm->pause_lock) */
	uint64_t assists;         /* instructions completed by the emulation assist */
	uint64_t syscall_bp[2];   /* SYSCALL assist: breakpoints on the #PF, #GP handlers */
	bool syscall_stepping;    /* SYSCALL assist: stepping past a handler breakpoint */
	/* Exits by bus event type (BUS_EV_EXIT_*), counted by this vCPU's thread
	 * alone (relaxed loads and stores, no atomic add) and read racily by
	 * statistics: counting costs no shared cache line and no bus subscriber. */
	uint64_t exits[BUS_EV_EXIT_OTHER + 1];
};

/* Devices are behind an ops table; each owns its state struct. */
struct device_ops {
	const char *name;
	void (*reset)(void *dev);
	/* Versioned save/load of the device's own state (used by snapshots). Optional
	 * until the state issue; a device without them makes snapshotting fail. */
	int (*save)(void *dev, void **buf, size_t *len);
	int (*load)(void *dev, const void *buf, size_t len);
	/* Optional, called with the VM paused before save: finish every request in
	 * flight (completions and their interrupts land before any vCPU state is
	 * captured) and touch guest memory no more until `resume`. load leaves the
	 * device in the same held state: nothing reaches guest memory between a
	 * restore and the VM's first run. */
	int (*quiesce)(void *dev);
	/* Optional: the VM runs again (vm_resume of the last pause, or vm_run
	 * starting): end a quiesce/load hold and catch up on kicks that came while
	 * held. Harmless when not held. */
	void (*resume)(void *dev);
	void (*destroy)(void *dev);
};
struct device {
	const struct device_ops *ops;
	void *dev;
};

struct vm {
	struct vm_config cfg;
	int kvm_fd, vm_fd;
	int vcpu_mmap_size;
	struct guest_mem mem;
	struct io_bus io;
	struct irqchip irq;
	struct bus bus;
	int ncpus;
	struct vcpu cpu[VM_MAX_CPUS];
	unsigned ndevices;
	struct device devices[VM_MAX_DEVICES];
	void *uart;               /* the console UART (for input from the terminal) */
	struct pci_bus *pci;      /* PCI bus 0 (include/vmsvc/pci.h) */

	/* End of the VM: first writer wins, other vCPUs are kicked out of KVM_RUN. */
	pthread_mutex_t end_lock;
	volatile int ending;

	/* Pause: vCPU threads park outside KVM_RUN (after completing any pending I/O
	 * exit) until resumed. Protected by pause_lock. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;   /* signalled when parked changes or on resume */
	int pause_depth;             /* nested pause requests */
	int parked;                  /* vCPU threads currently parked */
	int running_threads;         /* vCPU threads inside their run loop */
	enum vm_end_reason end_reason;
	int end_status;
	char end_msg[256];

	struct snapshot_restore *restore; /* snapshot being restored (vmstate.h), else NULL */
	/* Restore: irqchip_kvm_finish (routes, PIT) runs as a side job (vm.c) while
	 * vCPUs and devices are set up; vm_irqchip_ready() finishes it. */
	struct side_job *irq_job;
	/* KVM_GET_SUPPORTED_CPUID, fetched once (vm_supported_cpuid): restore needs
	 * it twice (host check, vCPU CPUID) and each ioctl costs ~0.1 ms. */
	struct kvm_cpuid2 *supported_cpuid;
	uint64_t first_run_ns;    /* CLOCK_MONOTONIC when a vCPU first entered KVM_RUN */

	uint64_t unassigned_logged; /* unassigned port/MMIO accesses seen (logged: first few) */
	bool syscall_assist;      /* LSTAR writes trapped (src/vmm/vcpu_syscall.c) */
	uint32_t syscall_step_flags; /* extra KVM_GUESTDBG_* flags for its single steps */
};

/* Create the VM: probe KVM, memory, irqchip, platform devices, load the kernel,
 * set up vCPUs. On failure returns negative errno with err_msg() set. */
int vm_create(const struct vm_config *cfg, struct vm **out);
/* Run all vCPUs until the guest ends; returns the exit status the process should use. */
int vm_run(struct vm *vm);
void vm_destroy(struct vm *vm);

/* KVM's supported CPUID table for this VM's /dev/kvm (cached; any thread). */
int vm_supported_cpuid(struct vm *vm, const struct kvm_cpuid2 **out);

/* Restore: wait until the irqchip is complete (PIT created, ISA routes set);
 * before VM-wide irqchip/PIT state is loaded. 0 or the creation's error. */
int vm_irqchip_ready(struct vm *vm);

/* Ask the VM to end (callable from any thread: devices, vCPUs, signal thread). */
void vm_request_end(struct vm *vm, enum vm_end_reason reason, int status, const char *msg);
int vm_add_device(struct vm *vm, const struct device_ops *ops, void *dev);

/* Stop all vCPUs (returns once every vCPU thread is parked with no KVM exit
 * pending) / let them run again. Nestable and callable from any thread except a
 * vCPU thread; -EBUSY if the VM is ending. Publishes BUS_EV_VM_PAUSED/RESUMED. */
int vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
bool vm_is_paused(struct vm *vm);

/* Open /dev/kvm and create a throwaway VM to prove KVM works; checks the
 * capabilities vmsvc relies on and names any that is missing. */
int kvm_probe(int *kvm_fd_out);

#endif
