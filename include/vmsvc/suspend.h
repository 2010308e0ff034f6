/* Suspend to an encrypted file, resume from it (`vmsvc suspend NAME FILE`,
 * `vmsvc resume FILE`). The file is a sealed container (include/vmsvc/sealed.h,
 * docs/suspend-format.md) holding, in this order:
 *   one SUSPEND_REC_STATE record: the snapshot state image (what a snapshot
 *     directory's `state` file holds: docs/snapshot-format.md);
 *   SUSPEND_REC_MEMORY records: guest RAM in order from byte 0, each at most
 *     SUSPEND_MEM_RECORD_MAX bytes, together exactly the state's mem_size.
 * VMs with disk overlays (,overlay= or ,ephemeral) are refused: their blocks are
 * not saved yet. Plain disks are not copied: give the same --disk to resume. */
#ifndef VMSVC_SUSPEND_H
#define VMSVC_SUSPEND_H
#include <stddef.h>
#include <stdint.h>

#define SUSPEND_REC_STATE 1u
#define SUSPEND_REC_MEMORY 2u
#define SUSPEND_MEM_RECORD_MAX (64ull << 20)

struct vm;
struct sealed_key;
struct sealed_opts;
struct control;

/* Pause, write everything to `path` (atomically) and, on success, end the VM
 * with VM_END_USER status 0. On failure nothing appears at `path`, the VM is
 * resumed and keeps running. Any thread but a vCPU's. */
int suspend_to_file(struct vm *vm, const char *path, const struct sealed_key *key, const struct sealed_opts *opts);

/* Read a suspend file completely and authenticate it: *state (malloc'd) is the
 * state image, *mem_fd a memfd of guest RAM (sparse). Only returns 0 when the
 * whole file was verified (sealed_close() == 0); nothing is kept otherwise. */
int suspend_load_file(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		      uint8_t **state, size_t *state_len, int *mem_fd);

/* Register {"cmd":"suspend","file":ABS,"passphrase_file":ABS | "key_file":ABS}
 * on a control socket. The key is loaded in the VM process from the named file;
 * key bytes never cross the socket. Only with json-c (HAVE_JSONC). */
int suspend_control_register(struct control *ctl, struct vm *vm);

#endif
