/* Internals of suspend.c and suspend_disks.c: the disk records of a suspend
 * file (layouts in docs/suspend-format.md). Unit tests use the parser. */
#ifndef VMSVC_SUSPEND_INTERNAL_H
#define VMSVC_SUSPEND_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

struct vm;
struct vm_config;
struct sealed_writer;
struct sealed_reader;
struct suspend_disks;

#define SUSPEND_DISKS_VERSION 1u
#define SUSPEND_DISKS_HDR 16u            /* u32 version, u32 ndisks, u64 reserved */
#define SUSPEND_DISK_ENTRY 80u           /* fixed part of one disk's entry; path bytes follow */
#define SUSPEND_DISK_PATH_MAX 4096u
#define SUSPEND_EXTENT_HDR 32u           /* u32 disk, u32 kind, u64 offset, u64 length, u64 reserved */
#define SUSPEND_EXTENT_DATA_MAX (4u << 20)
#define SUSPEND_EXTENTS_MAX (4u << 20)   /* per file: bounds the reader's extent list */

enum suspend_disk_kind { SUSPEND_DISK_PLAIN = 0, SUSPEND_DISK_OVERLAY = 1, SUSPEND_DISK_EPHEMERAL = 2 };
enum suspend_extent_kind { SUSPEND_EXTENT_DATA = 1, SUSPEND_EXTENT_ZERO = 2 };

/* Writer (VM paused): the DISKS record for every disk of vm, and how many
 * overlay data bytes suspend_disks_export will write. *rec: free(). */
int suspend_disks_describe(struct vm *vm, uint8_t **rec, size_t *len, uint64_t *data_bytes);
/* Writer: the overlay blocks of every overlaid disk as DISK_EXTENT records. */
int suspend_disks_export(struct vm *vm, struct sealed_writer *w, const uint8_t *rec, size_t len);

/* Reader: validate a DISKS record (fname, file offset-free: names the record)
 * against the resume --disk specs (cfg may be NULL: no image checks). */
int suspend_disks_parse(const uint8_t *rec, size_t len, const char *fname, const struct vm_config *cfg,
			struct suspend_disks **out);
/* Reader: the body of one DISK_EXTENT record of len bytes, staged. */
int suspend_disks_stage(struct suspend_disks *d, struct sealed_reader *rd, uint64_t len, const char *fname);
/* Reader, after the verified end: every disk got exactly its announced data. */
int suspend_disks_check_complete(const struct suspend_disks *d, const char *fname);
/* Resume: rewrite cfg's disk specs (overlaid disks given as a plain image get
 * ",ephemeral"); then write the staged blocks into vm's disks. */
int suspend_disks_configure(struct suspend_disks *d, struct vm_config *cfg);
int suspend_disks_apply(struct vm *vm, void *disks);
void suspend_disks_free(struct suspend_disks *d);
/* The VM did not start: remove overlay files resume created (truncate those that
 * were empty files already). */
void suspend_disks_discard_new(struct suspend_disks *d);

#endif
