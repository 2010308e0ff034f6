/* Guest page-table walk; see include/vmsvc/pagewalk.h. */
#include <errno.h>
#include <string.h>
#include <vmsvc/pagewalk.h>

#define CR0_PG (1ULL << 31)
#define CR4_PSE (1ULL << 4)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LMA (1ULL << 10)
#define PTE_P 1ULL
#define PTE_W 2ULL
#define PTE_PS (1ULL << 7)
#define ADDR_MASK 0x000ffffffffff000ULL

/* Table entries are little-endian and at most 8 bytes; the host is x86 too. */
static int read_entry(pw_read_phys_fn rd, void *opaque, uint64_t gpa, unsigned size, uint64_t *val)
{
	*val = 0;
	return rd(opaque, gpa, val, size);
}

int pw_translate_fn(pw_read_phys_fn rd, void *opaque, const struct pw_regs *r, uint64_t gva, uint64_t *gpa,
		    bool *writable, uint64_t *page_size)
{
	bool w = true;
	uint64_t e, psize = 4096;
	if (!(r->cr0 & CR0_PG)) {
		*gpa = gva & 0xffffffffULL;
		if (writable)
			*writable = true;
		if (page_size)
			*page_size = 4096;
		return 0;
	}
	if (r->efer & EFER_LMA) {
		int levels = (r->cr4 & CR4_LA57) ? 5 : 4;
		/* Non-canonical addresses fault (#GP) instead of translating:
		 * introspection follows guest pointers that may be garbage. */
		int vbits = levels == 5 ? 57 : 48;
		uint64_t top = gva >> (vbits - 1);
		if (top != 0 && top != (~0ULL >> (vbits - 1)))
			return -EFAULT;
		uint64_t table = r->cr3 & ADDR_MASK;
		for (int level = levels; level >= 1; level--) {
			unsigned shift = 12 + 9 * (level - 1);
			uint64_t idx = (gva >> shift) & 511;
			if (read_entry(rd, opaque, table + idx * 8, 8, &e) < 0 || !(e & PTE_P))
				return -EFAULT;
			w = w && (e & PTE_W);
			if (level <= 3 && level >= 2 && (e & PTE_PS)) {
				uint64_t size = 1ULL << shift;
				*gpa = (e & ADDR_MASK & ~(size - 1)) | (gva & (size - 1));
				psize = size;
				goto done;
			}
			table = e & ADDR_MASK;
		}
		*gpa = table | (gva & 0xfff);
		goto done;
	}
	if (r->cr4 & CR4_PAE) {
		uint64_t pdpte;
		if (read_entry(rd, opaque, (r->cr3 & 0xffffffe0ULL) + ((gva >> 30) & 3) * 8, 8, &pdpte) < 0 || !(pdpte & PTE_P))
			return -EFAULT;
		if (read_entry(rd, opaque, (pdpte & ADDR_MASK) + ((gva >> 21) & 511) * 8, 8, &e) < 0 || !(e & PTE_P))
			return -EFAULT;
		w = e & PTE_W;
		if (e & PTE_PS) {
			*gpa = (e & ADDR_MASK & ~0x1fffffULL) | (gva & 0x1fffff);
			psize = 0x200000;
			goto done;
		}
		uint64_t pte;
		if (read_entry(rd, opaque, (e & ADDR_MASK) + ((gva >> 12) & 511) * 8, 8, &pte) < 0 || !(pte & PTE_P))
			return -EFAULT;
		w = w && (pte & PTE_W);
		*gpa = (pte & ADDR_MASK) | (gva & 0xfff);
		goto done;
	}
	/* Legacy 32-bit paging. */
	gva &= 0xffffffffULL;
	if (read_entry(rd, opaque, (r->cr3 & 0xfffff000ULL) + (gva >> 22) * 4, 4, &e) < 0 || !(e & PTE_P))
		return -EFAULT;
	w = e & PTE_W;
	if ((e & PTE_PS) && (r->cr4 & CR4_PSE)) {
		*gpa = (e & 0xffc00000ULL) | ((e & 0x1fe000ULL) << 19) | (gva & 0x3fffff);
		psize = 0x400000;
		goto done;
	}
	uint64_t pte;
	if (read_entry(rd, opaque, (e & 0xfffff000ULL) + ((gva >> 12) & 1023) * 4, 4, &pte) < 0 || !(pte & PTE_P))
		return -EFAULT;
	w = w && (pte & PTE_W);
	*gpa = (pte & 0xfffff000ULL) | (gva & 0xfff);
done:
	if (writable)
		*writable = w;
	if (page_size)
		*page_size = psize;
	return 0;
}

static int guest_mem_rd(void *opaque, uint64_t gpa, void *dst, size_t len)
{
	return mem_read(opaque, gpa, dst, len);
}

int pw_translate(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, uint64_t *gpa, bool *writable)
{
	return pw_translate_fn(guest_mem_rd, (void *)m, r, gva, gpa, writable, NULL);
}

int pw_read_fn(pw_read_phys_fn rd, void *opaque, const struct pw_regs *r, uint64_t gva, void *dst, size_t len)
{
	uint8_t *p = dst;
	while (len) {
		size_t chunk = 4096 - (gva & 4095);
		if (chunk > len)
			chunk = len;
		uint64_t gpa;
		if (pw_translate_fn(rd, opaque, r, gva, &gpa, NULL, NULL) < 0)
			return -EFAULT;
		if (rd(opaque, gpa, p, chunk) < 0)
			return -EFAULT;
		p += chunk;
		gva += chunk;
		len -= chunk;
	}
	return 0;
}

static int pw_copy(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, void *buf, unsigned len, bool write)
{
	uint8_t *p = buf;
	while (len) {
		unsigned chunk = 4096 - (gva & 4095);
		if (chunk > len)
			chunk = len;
		uint64_t gpa;
		bool writable;
		if (pw_translate(m, r, gva, &gpa, &writable) < 0)
			return -EFAULT;
		int rc = write ? mem_write(m, gpa, p, chunk) : mem_read(m, gpa, p, chunk);
		if (rc < 0)
			return rc;
		p += chunk;
		gva += chunk;
		len -= chunk;
	}
	return 0;
}

int pw_read(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, void *dst, unsigned len)
{
	return pw_copy(m, r, gva, dst, len, false);
}
int pw_write(const struct guest_mem *m, const struct pw_regs *r, uint64_t gva, const void *src, unsigned len)
{
	return pw_copy(m, r, gva, (void *)src, len, true);
}
