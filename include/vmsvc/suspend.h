/* Suspend to an encrypted file, resume from it (`vmsvc suspend NAME FILE`,
 * `vmsvc resume FILE`). The file is a sealed container (include/vmsvc/sealed.h,
 * docs/suspend-format.md) holding, in this order:
 *   one SUSPEND_REC_STATE record: the snapshot state image (what a snapshot
 *     directory's `state` file holds: docs/snapshot-format.md);
 *   one SUSPEND_REC_DISKS record: every disk's kind and image identity;
 *   SUSPEND_REC_MEMORY records: guest RAM in order from byte 0, each at most
 *     SUSPEND_MEM_RECORD_MAX bytes, together exactly the state's mem_size;
 *   SUSPEND_REC_DISK_EXTENT records: the blocks of every overlaid disk's overlay.
 * Plain disks are not copied (their identity is checked): give the same --disk
 * to resume. Record layouts: docs/suspend-format.md. */
#ifndef VMSVC_SUSPEND_H
#define VMSVC_SUSPEND_H
#include <stddef.h>
#include <stdint.h>

#define SUSPEND_REC_STATE 1u
#define SUSPEND_REC_MEMORY 2u
#define SUSPEND_REC_DISKS 3u
#define SUSPEND_REC_DISK_EXTENT 4u
#define SUSPEND_MEM_RECORD_MAX (64ull << 20)

struct vm;
struct vm_config;
struct sealed_key;
struct sealed_opts;
struct control;

/* Pause, write everything to `path` (atomically) and, on success, end the VM
 * with VM_END_USER status 0. On failure nothing appears at `path`, the VM is
 * resumed and keeps running. Any thread but a vCPU's. */
int suspend_to_file(struct vm *vm, const char *path, const struct sealed_key *key, const struct sealed_opts *opts);

/* What a verified suspend file gives back: the state image, a memfd of guest
 * RAM (sparse) and the overlay blocks, staged until the VM exists. */
struct suspend_disks;
struct suspend_image {
	uint8_t *state;
	size_t state_len;
	int mem_fd;
	struct suspend_disks *disks;
};

/* Read a suspend file completely and authenticate it. cfg: the --disk specs
 * given for resume (their number and images are checked against the file as
 * soon as its disk record is read). Only returns 0 when the whole file was
 * verified (sealed_close() == 0); nothing is kept otherwise. */
int suspend_load_file(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		      const struct vm_config *cfg, struct suspend_image *img);
/* After a successful load: disks that were overlaid and are given as a plain
 * image get ",ephemeral" (their base is never written); sets cfg's restore hook
 * that writes the overlay blocks into the new VM's disks. img must outlive the VM. */
int suspend_image_configure(struct suspend_image *img, struct vm_config *cfg);
void suspend_image_free(struct suspend_image *img);
/* The resumed VM did not start: remove the overlay files it created. */
void suspend_image_discard_new_overlays(struct suspend_image *img);

/* Register {"cmd":"suspend","file":ABS,"passphrase_file":ABS | "key_file":ABS}
 * on a control socket. The key is loaded in the VM process from the named file;
 * key bytes never cross the socket. Only with json-c (HAVE_JSONC). */
int suspend_control_register(struct control *ctl, struct vm *vm);

#endif
