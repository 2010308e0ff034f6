/* x86 guest page-table walk (no paging, 32-bit, PAE, 4- and 5-level long mode,
 * large pages). Used for diagnostics, the emulation assist and introspection.
 * Bounded: never more than 5 table reads, every read bounds-checked. */
#ifndef VMSVC_PAGEWALK_H
#define VMSVC_PAGEWALK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/mem.h>

struct pw_regs {
	uint64_t cr0, cr3, cr4, efer;
};
/* 0 and *gpa on success; -EFAULT if not mapped or a table is outside RAM. */
int pw_translate(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, uint64_t *gpa, bool *writable);
/* Read/write guest-virtual memory, crossing pages; 0 or -EFAULT. */
int pw_read(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, void *dst, unsigned len);
int pw_write(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, const void *src, unsigned len);

/* The same walk over any physical memory (memory images, snapshots): `rd` reads
 * guest-physical bytes and returns 0 or a negative errno. *page_size (may be
 * NULL) receives the size of the mapping that translated gva (4 KiB, 2 MiB,
 * 1 GiB, 4 MiB). Returns 0 or -EFAULT. */
typedef int (*pw_read_phys_fn)(void *opaque, uint64_t gpa, void *dst, size_t len);
int pw_translate_fn(pw_read_phys_fn rd, void *opaque, const struct pw_regs *r, uint64_t gva, uint64_t *gpa,
		    bool *writable, uint64_t *page_size);
/* Read guest-virtual memory through `rd`, crossing pages; 0 or -EFAULT. */
int pw_read_fn(pw_read_phys_fn rd, void *opaque, const struct pw_regs *r, uint64_t gva, void *dst, size_t len);

#endif
