/* Virtual machine introspection (VMI) of Linux guests without per-kernel profiles.
 *
 * Layers (each usable on its own, all treating guest memory as hostile):
 *   vmi_mem       guest-physical memory: a QEMU dump-guest-memory ELF core, a raw
 *                 flat image, or a live struct guest_mem; bounded physical reads.
 *   vmi_kallsyms  the kernel's compressed symbol table recovered from memory.
 *   vmi_btf       the kernel's BTF type information, member offsets via libbpf.
 *   vmi_kernel    everything above plus the KASLR slide, phys_base and the kernel
 *                 page tables: kernel-virtual reads, and the views (ps, lsmod, netdev).
 *
 * Finding the kernel in an image without vCPU state (no CR3 needed):
 *   1. scan physical memory for the kallsyms token table/index pair, walk back to
 *      markers, names and offsets (both table orders, with or without the 3-byte
 *      seqs_of_names); kallsyms_relative_base is the runtime (_text) address;
 *   2. the kernel image is physically contiguous and mapped linearly, so one
 *      constant K = va - pa holds for all of it: find "Linux version " near the
 *      tables at the address congruent to linux_banner's, confirm with
 *      linux_proc_banner and the kernel's own phys_base variable;
 *   3. CR3 = pa(init_top_pgt), levels from __pgtable_l5_enabled; other memory
 *      (direct map, vmalloc, modules) is read through that page walk.
 *   VMCOREINFO and the QEMU per-CPU note (CR3/CR4/RIP) are hints, cross-checked
 *   only; a kernel-mode RIP just tells the step-1 scan where to look first.
 * Live VMs will use the same path (vmi_mem_from_guest), with CR3/CR4 and LSTAR
 * from KVM_GET_SREGS/MSRs as further cross-checks. */
#ifndef VMSVC_VMI_H
#define VMSVC_VMI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/mem.h>
#include <vmsvc/pagewalk.h>

/* ---- guest-physical memory ---- */
struct vmi_range {
	uint64_t pa, len;
	const uint8_t *host; /* bytes of [pa, pa+len) in this process */
};

#define VMI_MAX_RANGES 64
#define VMI_MAX_CPUS 64

/* MSRs of a live VM or vmsvc snapshot (KVM_GET_MSRS); images have none. */
struct vmi_msrs {
	uint64_t lstar, cstar, sysenter_eip;
	bool have_cstar, have_sysenter;
};

struct vmi_mem {
	unsigned nranges;
	struct vmi_range range[VMI_MAX_RANGES]; /* sorted by pa, non-overlapping */
	/* Hints from an ELF core (never trusted): the guest's VMCOREINFO text and
	 * the control registers QEMU stored per CPU. */
	char *vmcoreinfo;
	unsigned ncpus;
	struct pw_regs cpu[VMI_MAX_CPUS];
	uint64_t cpu_rip[VMI_MAX_CPUS];
	/* vCPU 0's syscall MSRs (live VM, vmsvc snapshot): for vmi_check_msrs. */
	bool have_msrs;
	struct vmi_msrs msrs;
	/* owned resources */
	void *map;
	size_t map_len;
	void *buf;
};

/* Open a memory image: a vmsvc snapshot (its directory, or its state or memory
 * file), an ELF core (QEMU dump-guest-memory, detected by magic) or else a raw
 * flat file holding physical memory from address 0. */
int vmi_mem_open_file(struct vmi_mem *m, const char *path);
/* A vmsvc snapshot directory (docs/snapshot-format.md): RAM from DIR/memory at
 * the header's regions; vCPU registers and MSRs from the state file as hints
 * (vmi_snap.c). The state file is validated in full (checksums included). */
int vmi_mem_open_snapshot(struct vmi_mem *m, const char *dir);
/* The same on bytes already in memory (tests, fuzzing); `img` must outlive m. */
int vmi_mem_from_elfcore(struct vmi_mem *m, const uint8_t *img, size_t len);
int vmi_mem_from_flat(struct vmi_mem *m, const uint8_t *img, size_t len, uint64_t base_pa);
/* A live VM's RAM; regions must stay mapped while m is used. */
int vmi_mem_from_guest(struct vmi_mem *m, const struct guest_mem *g);
/* After vmi_mem_from_guest on a mapping made for m: take the CPU and MSR hints
 * of `hints` and own the mapping [map, map+map_len) (unmapped by close). */
void vmi_mem_adopt(struct vmi_mem *m, const struct vmi_mem *hints, void *map, size_t map_len);
void vmi_mem_close(struct vmi_mem *m);
/* Register the "memory" control command (control_mem.c, docs/api.md) that
 * hands `vmsvc inspect NAME` the guest RAM fd, layout and vCPU registers. */
struct control;
int vmi_control_register(struct control *ctl);

/* Read [pa, pa+len) (may span ranges that touch); 0 or -EFAULT. */
int vmi_read_phys(const struct vmi_mem *m, uint64_t pa, void *dst, size_t len);
/* Host pointer to [pa, pa+len) if it lies within one range, else NULL. */
const uint8_t *vmi_phys_ptr(const struct vmi_mem *m, uint64_t pa, size_t len);
/* pw_read_phys_fn adapter: opaque is a const struct vmi_mem *. */
int vmi_pw_read(void *opaque, uint64_t pa, void *dst, size_t len);

/* ---- kallsyms ---- */
struct vmi_sym {
	uint64_t addr;
	uint32_t name;  /* offset into vmi_kallsyms.names */
	char type;      /* nm-style type letter ('T', 't', 'D', 'R', 'A', ...) */
};

enum vmi_ks_layout {
	VMI_KS_OLD,      /* <= 6.1: offsets, base, num, names, markers, token_table, token_index */
	VMI_KS_OLD_SEQS, /* 6.2-6.3 (and Debian 6.1): + seqs_of_names before token_table */
	VMI_KS_NEW,      /* >= 6.4: num, names, markers, token_table, token_index, offsets, base, seqs */
};

struct vmi_kallsyms {
	size_t n;
	struct vmi_sym *sym;  /* sorted by address */
	uint32_t *name_hash;  /* open addressing: index into sym + 1, 0 = empty */
	size_t hash_size;     /* power of two, > 2n */
	char *names;
	size_t names_len;
	uint64_t relative_base;  /* runtime _text (relocated at boot) */
	bool absolute_percpu;    /* offsets >= 0 are absolute (per-CPU symbols) */
	enum vmi_ks_layout layout;
	/* where the time went (ms, CLOCK_MONOTONIC): finding the tables, decoding
	 * the names, the address order, the name index (inspect --timing) */
	double ms_find, ms_decode, ms_sort, ms_index;
	/* physical addresses of the tables where they were found */
	uint64_t pa_names, pa_markers, pa_token_table, pa_token_index, pa_offsets, pa_relative_base;
};

/* Find and decode kallsyms in one contiguous buffer whose first byte is at
 * physical address base_pa. -ENOENT if there is no valid table. */
int vmi_kallsyms_from_buf(struct vmi_kallsyms *ks, const uint8_t *buf, size_t len, uint64_t base_pa);
/* The same over every range of m (the first valid table wins). A CPU whose
 * saved RIP is in the kernel image is only a hint where to look first. */
int vmi_kallsyms_scan(struct vmi_kallsyms *ks, const struct vmi_mem *m);
void vmi_kallsyms_free(struct vmi_kallsyms *ks);
/* Address of the lowest-addressed symbol called name; -ENOENT if none. */
int vmi_ksym_addr(const struct vmi_kallsyms *ks, const char *name, uint64_t *addr);
/* The symbol containing addr (highest address <= addr), or NULL. */
const struct vmi_sym *vmi_ksym_at(const struct vmi_kallsyms *ks, uint64_t addr);
static inline const char *vmi_ksym_name(const struct vmi_kallsyms *ks, const struct vmi_sym *s)
{
	return ks->names + s->name;
}

/* ---- BTF ---- */
struct vmi_btf; /* libbpf's struct btf, opaque here */
/* Parse a raw BTF blob (copied; data may be freed afterwards). -ENOTSUP if built
 * without libbpf, -EINVAL if the blob is not valid BTF. */
int vmi_btf_new(struct vmi_btf **out, const void *data, size_t len);
void vmi_btf_free(struct vmi_btf *b);
unsigned vmi_btf_ntypes(const struct vmi_btf *b);
/* Byte offset of `path` in struct/union `type`. path: members separated by '.',
 * array elements as "[n]" ("mem[0].base"); members of anonymous structs/unions
 * are found as if they were direct members. A bitfield that does not start on a
 * byte boundary gives -EINVAL (use vmi_btf_member). A missing type or member
 * gives -ENOENT with a message naming both. */
int vmi_btf_offset(const struct vmi_btf *b, const char *type, const char *path, uint64_t *off);
/* Like vmi_btf_offset but in bits, with the member's size in bits (bitfield
 * width, or 8 * byte size). */
int vmi_btf_member(const struct vmi_btf *b, const char *type, const char *path, uint64_t *bit_off,
		   uint64_t *bit_size);
/* sizeof(struct/union type); -ENOENT if missing. */
int vmi_btf_sizeof(const struct vmi_btf *b, const char *type, uint64_t *size);
/* Number of elements of an array member (e.g. module.mem); -ENOENT/-EINVAL. */
int vmi_btf_array_len(const struct vmi_btf *b, const char *type, const char *path, uint64_t *n);

/* ---- the kernel ---- */
#define VMI_KERNEL_MAP 0xffffffff80000000ULL /* __START_KERNEL_map */
#define VMI_TEXT_DEFAULT 0xffffffff81000000ULL

struct vmi_kernel;
/* Offsets of the fields the views use, filled from BTF (bytes). */
struct vmi_offsets {
	uint64_t task_size, task_tasks, task_pid, task_tgid, task_real_parent, task_cred, task_comm,
		task_state, task_exit_state, task_mm;
	unsigned task_state_size; /* 4 (__state, >= 5.14) or 8 (long state) */
	uint64_t cred_uid;
	uint64_t module_list, module_name, module_base, module_size, module_state;
	unsigned module_nmem;     /* >= 6.4: number of mem[] entries; 0: core_layout */
	uint64_t module_mem_stride;
	uint64_t net_dev_base_head, netdev_dev_list, netdev_name, netdev_flags, netdev_promiscuity;
	/* Why a view cannot run ("" when all its fields were found): fail closed. */
	char err_ps[192], err_lsmod[192], err_netdev[192];
};
/* Fill k->off from k->btf (called by vmi_kernel_open). */
void vmi_offsets_resolve(struct vmi_kernel *k);

struct vmi_kernel {
	struct vmi_mem *mem;
	struct vmi_kallsyms ks;
	struct vmi_btf *btf;
	struct vmi_offsets off;
	uint64_t text;        /* runtime _text */
	uint64_t kaslr_slide; /* text - 0xffffffff81000000 */
	uint64_t phys_base;   /* pa = va - __START_KERNEL_map + phys_base inside the image */
	uint64_t image_end;   /* runtime _end: [text, image_end) is read linearly */
	bool have_pt;         /* the kernel page tables were found */
	struct pw_regs pt;    /* cr3 = pa(init_top_pgt) */
	int levels;           /* 4 or 5 */
	char release[65];     /* init_uts_ns.name.release */
	char hints[512];      /* mismatches with VMCOREINFO/QEMU notes, "" if none */
	char btf_err[192];    /* why there is no BTF ("" when k->btf is set) */
	double ms_layout, ms_btf, ms_offsets; /* time of the steps after kallsyms (--timing) */
};
/* CLOCK_MONOTONIC in milliseconds (phase timings). */
double vmi_now_ms(void);

enum {
	VMI_OPEN_NO_BTF = 1,  /* symbols only (no type information needed) */
};
/* Recover symbols, layout and (unless VMI_OPEN_NO_BTF) types. Fails only if
 * the kernel cannot be located; missing BTF leaves k->btf NULL, k->btf_err set
 * and the views failing closed. */
int vmi_kernel_open(struct vmi_kernel *k, struct vmi_mem *m, unsigned flags);
void vmi_kernel_close(struct vmi_kernel *k);
/* Kernel-virtual read: the kernel image linearly, everything else through the
 * page walk. 0 or -EFAULT (with a message naming the address). */
int vmi_kread(const struct vmi_kernel *k, uint64_t va, void *dst, size_t len);
int vmi_kread_u64(const struct vmi_kernel *k, uint64_t va, uint64_t *v);
/* va of a symbol; -ENOENT with a message naming it. */
int vmi_ksym(const struct vmi_kernel *k, const char *name, uint64_t *va);

/* ---- list walking (cycle-safe, capped) ---- */
#define VMI_LIST_CAP 1000000
/* Calls fn(node_va, arg) for every entry of the list_head at head_va (the entry
 * address is the list_head's address; subtract the member offset yourself).
 * Stops after `cap` entries, on a cycle that does not return to the head, on an
 * unreadable pointer, or when fn returns nonzero. Returns the number of entries
 * visited, or a negative errno; *broken (may be NULL) is set when the walk ended
 * for a reason other than returning to the head. */
long vmi_list_walk(const struct vmi_kernel *k, uint64_t head_va, long cap, int (*fn)(uint64_t node, void *arg),
		   void *arg, bool *broken);

/* ---- views ---- */
struct vmi_task {
	uint64_t addr;  /* task_struct */
	int32_t pid, tgid, ppid;
	uint32_t uid;
	uint32_t state; /* raw __state */
	uint32_t exit_state;
	char state_char;
	bool kthread;   /* mm == NULL */
	char comm[16];
};
struct vmi_module {
	uint64_t addr, base, size;
	uint32_t state;
	char name[57];
};
struct vmi_netdev {
	uint64_t addr;
	uint32_t flags, promiscuity;
	char name[17];
};
/* Each returns a malloc'd array in *out (free() it) and its length in *n; a
 * list that was cut short still returns what was read and sets *truncated. */
int vmi_ps(const struct vmi_kernel *k, struct vmi_task **out, size_t *n, bool *truncated);
int vmi_lsmod(const struct vmi_kernel *k, struct vmi_module **out, size_t *n, bool *truncated);
int vmi_netdev(const struct vmi_kernel *k, struct vmi_netdev **out, size_t *n, bool *truncated);

#define VMI_IFF_PROMISC 0x100
#define VMI_IFF_UP 0x1

/* ---- checks (intrusion detection; vmi_check*.c) ----
 * Each check compares independent views of the same kernel state, or kernel
 * pointers against where they must point. A finding is evidence, not a proof:
 * warning = suspicious, critical = what a rootkit does (hidden task or module,
 * hooked table, patched text). info entries are notes (a check that cannot run
 * from this source, a baseline written), not findings: a clean guest gives no
 * warning or critical entries. */
enum vmi_severity { VMI_SEV_INFO, VMI_SEV_WARNING, VMI_SEV_CRITICAL };

struct vmi_finding {
	enum vmi_severity sev;
	char check[16];     /* "tasks", "modules", "syscalls", "idt", "msr", "text", "netdev", "packet" */
	char what[160];     /* one line: what is wrong */
	char evidence[400]; /* addresses, symbols, values (guest strings made printable) */
};
struct vmi_findings {
	struct vmi_finding *f;
	size_t n, cap;
};
void vmi_findings_free(struct vmi_findings *fs);
/* Number of entries with severity >= min. */
size_t vmi_findings_count(const struct vmi_findings *fs, enum vmi_severity min);

struct vmi_check_opts {
	const struct vmi_msrs *msrs; /* NULL: not available (memory image) */
	const char *baseline;        /* kernel text baseline file: written if absent, else compared */
	unsigned skip;               /* VMI_CHECK_* bits of checks not to run */
};
enum {
	VMI_CHECK_TASKS = 1, VMI_CHECK_MODULES = 2, VMI_CHECK_SYSCALLS = 4, VMI_CHECK_IDT = 8,
	VMI_CHECK_MSRS = 16, VMI_CHECK_TEXT = 32, VMI_CHECK_NET = 64,
};
/* Run every check not skipped, appending to *out (start it zeroed). A check
 * that cannot run (missing symbol or type) adds a warning saying so and the
 * others still run; the return value is negative only for out-of-memory or an
 * unusable baseline file. */
int vmi_check(const struct vmi_kernel *k, const struct vmi_check_opts *o, struct vmi_findings *out);
/* The individual checks (same contract). */
int vmi_check_tasks(const struct vmi_kernel *k, struct vmi_findings *out);
int vmi_check_modules(const struct vmi_kernel *k, struct vmi_findings *out);
int vmi_check_syscalls(const struct vmi_kernel *k, struct vmi_findings *out);
int vmi_check_idt(const struct vmi_kernel *k, struct vmi_findings *out);
int vmi_check_msrs(const struct vmi_kernel *k, const struct vmi_msrs *msrs, struct vmi_findings *out);
int vmi_check_net(const struct vmi_kernel *k, struct vmi_findings *out);
/* Kernel text baseline: per-function hashes of [_stext, _etext), offsets from
 * _text so they survive KASLR. Boot-time patching (alternatives, jump labels,
 * ftrace NOPs) makes text depend on the CPU and on runtime state: a baseline is
 * only comparable with the same kernel booted the same way. */
int vmi_text_baseline_write(const struct vmi_kernel *k, const char *path);
int vmi_check_text(const struct vmi_kernel *k, const char *path, struct vmi_findings *out);
/* Fuzzing/tests: the same checks over a baseline already in memory. */
int vmi_check_text_buf(const struct vmi_kernel *k, const uint8_t *buf, size_t len, struct vmi_findings *out);

#endif
