/* VM state capture and snapshots.
 *
 * Two layers:
 *  - KVM state (src/vmm/vmstate.c): one vCPU's or the whole VM's in-kernel state
 *    as a blob of tagged records (raw struct kvm_* payloads). Save needs the VM
 *    paused (vm_pause); load needs vCPUs that have not run yet or are parked.
 *  - The snapshot directory (src/services/snapshot.c): `state` (header + checked
 *    sections: config, vCPUs, VM, devices) and `memory` (raw guest RAM, sparse).
 *    Layout: docs/snapshot-format.md.
 * Every parser here treats its input as hostile: lengths, tags and checksums are
 * validated before anything is applied. */
#ifndef VMSVC_VMSTATE_H
#define VMSVC_VMSTATE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct vcpu;
struct guest_mem;

/* ---- KVM state blobs (vmstate.c). *buf: free(). ---- */
int vmstate_vcpu_save(struct vcpu *c, void **buf, size_t *len);
/* Structural check only (no KVM): known tags, exact sizes, required records. */
int vmstate_vcpu_check(const void *buf, size_t len);
/* Apply in the order KVM needs (sregs/apic base, regs, xsave, xcrs, MSRs, LAPIC,
 * TSC deadline, MP state, debug registers, vCPU events last). */
int vmstate_vcpu_load(struct vcpu *c, const void *buf, size_t len);
/* VM-wide: PIC master/slave and IOAPIC, PIT2, kvmclock. MSI routes are not part
 * of it: the PCI functions' MSI-X load re-creates them. */
int vmstate_vm_save(struct vm *vm, void **buf, size_t *len);
int vmstate_vm_check(const void *buf, size_t len);
int vmstate_vm_load(struct vm *vm, const void *buf, size_t len);
/* Hash of KVM_GET_SUPPORTED_CPUID on this host (a snapshot taken on a host with
 * another hash is refused). */
int vmstate_host_cpuid_hash(struct vm *vm, uint64_t *hash);

/* ---- snapshot file format (snapshot.c) ---- */
#define SNAP_MAGIC "VMSVCSNP"
#define SNAP_FORMAT_VERSION 1u
#define SNAP_HEADER_LEN 128u
#define SNAP_SECTION_HDR_LEN 40u
#define SNAP_NAME_LEN 16u
#define SNAP_MAX_SECTIONS 4096u
#define SNAP_MAX_FILE (64u << 20)     /* a state file larger than this is refused */

enum snap_section_type {
	SNAP_SEC_CONFIG = 1,   /* text: key=value lines (docs/snapshot-format.md) */
	SNAP_SEC_VCPU = 2,     /* id = vCPU index; vmstate_vcpu_* blob */
	SNAP_SEC_VM = 3,       /* vmstate_vm_* blob */
	SNAP_SEC_DEVICE = 4,   /* id = index in vm->devices, name = device_ops name */
	SNAP_SEC_END = 0xffffffffu, /* payload: crc32c of every byte before this section */
};

struct snap_header {
	uint32_t version;
	char vmsvc_version[17];
	uint64_t created_ns;      /* CLOCK_REALTIME */
	uint64_t mem_size;
	uint32_t ncpus;
	uint32_t nregions;
	struct { uint64_t gpa, size; } region[2];
	uint64_t cpuid_hash;
};

struct snap_section {
	uint32_t type, id;
	char name[SNAP_NAME_LEN + 1];
	const uint8_t *data;
	uint64_t len;
	uint64_t offset;          /* of the payload in the file (for error messages) */
};

uint32_t snap_crc32c(uint32_t crc, const void *buf, size_t len);
/* Read a state file (regular, at most SNAP_MAX_FILE bytes) into a malloc'd buffer;
 * a short read gives a short buffer, which snap_parse reports with its offset. */
int snap_read_file(const char *path, uint8_t **out, size_t *len);
/* Serialise header + sections + end marker into a malloc'd buffer. */
int snap_build(const struct snap_header *h, const struct snap_section *sec, unsigned n, uint8_t **out,
	       size_t *out_len);
/* Validate and index a whole state file image. `fname` names it in errors
 * ("FILE: offset N: what"). sec[] points into buf; *sec: free(). */
int snap_parse(const uint8_t *buf, size_t len, const char *fname, struct snap_header *h, struct snap_section **sec,
	       unsigned *n);

/* ---- snapshot service (snapshot.c) ---- */
/* Pause, quiesce devices, capture, write DIR/state and DIR/memory atomically,
 * then resume (or end the VM with VM_END_USER when `stop`). Any thread but a
 * vCPU's. Fails (and resumes) when a device has no save op, naming it. */
int snapshot_save(struct vm *vm, const char *dir, bool stop);

/* The state file image (what DIR/state holds) of a paused VM, in memory: quiesces
 * devices, captures, serialises. *state: free(). Fails when a device cannot be
 * saved. Used by snapshot_save and by suspend (include/vmsvc/suspend.h). */
int snapshot_state_build(struct vm *vm, uint8_t **state, size_t *len);

/* Restore (used by vm_create when cfg->restore_dir is set):
 * open + validate everything and overwrite the machine shape in vm->cfg; */
int snapshot_restore_open(struct vm *vm, const char *dir);
/* the same from memory (cfg->restore_state): a state image (copied) and a memfd of
 * guest RAM (dup'ed, becomes the VM's RAM memfd); `name` names them in errors; */
int snapshot_restore_open_buf(struct vm *vm, const uint8_t *state, size_t len, int mem_fd, const char *name);
/* map DIR/memory MAP_PRIVATE as guest RAM (lazy, copy-on-write); */
int snapshot_restore_memory(struct vm *vm);
/* load vCPU, VM and device state (vCPUs and devices exist, nothing ran yet); */
int snapshot_restore_state(struct vm *vm);
/* free what snapshot_restore_open kept (vm_destroy). */
void snapshot_restore_close(struct vm *vm);

/* Register the "snapshot" command ({"dir": DIR, "stop": bool}) on a control
 * socket (include/vmsvc/control.h); replaces the placeholder. Only in builds
 * with json-c (HAVE_JSONC). */
struct control;
int snapshot_control_register(struct control *ctl, struct vm *vm);

#endif
