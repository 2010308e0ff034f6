/* KVM state of vCPUs and of the VM as tagged-record blobs (include/vmsvc/vmstate.h).
 * Blob: 4-byte magic ("KVC1" vCPU, "KVV1" VM), then records {le32 tag, le32 len,
 * payload}. Payloads are the raw x86-64 struct kvm_* of linux/kvm.h (stable ABI),
 * except MSRS: {le32 index, le32 reserved, le64 value} per MSR. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <vmsvc/err.h>
#include <vmsvc/platform.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmstate.h>
#include "vmm/vcpu.h"

enum vcpu_tag {
	T_REGS = 1, T_SREGS, T_SREGS2, T_XSAVE, T_XCRS, T_MSRS, T_LAPIC, T_EVENTS, T_DEBUGREGS, T_MP_STATE,
	T_VCPU_MAX
};
enum vm_tag { V_PIC_MASTER = 1, V_PIC_SLAVE, V_IOAPIC, V_PIT2, V_CLOCK, V_MAX };

#define XSAVE_MIN 4096u
#define XSAVE_MAX (64u << 10)
#define MSR_MAX 1024u
#define MSR_REC 16u

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

/* ---- record buffer ---- */
struct rec_buf {
	uint8_t *p;
	size_t len, cap;
	int err;
};

static void rb_put(struct rec_buf *b, uint32_t tag, const void *data, size_t len)
{
	if (b->err)
		return;
	size_t need = b->len + 8 + len;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *np = realloc(b->p, cap);
		if (!np) {
			b->err = -ENOMEM;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	uint32_t h[2] = { tag, (uint32_t)len };
	memcpy(b->p + b->len, h, 8);
	if (len)
		memcpy(b->p + b->len + 8, data, len);
	b->len = need;
}

/* Start a blob with its 4-byte magic. */
static void rb_magic(struct rec_buf *b, const char *magic)
{
	b->p = malloc(4096);
	if (!b->p) {
		b->err = -ENOMEM;
		return;
	}
	b->cap = 4096;
	memcpy(b->p, magic, 4);
	b->len = 4;
}

static int rb_finish(struct rec_buf *b, void **buf, size_t *len, const char *what)
{
	if (b->err) {
		free(b->p);
		return err_set(ENOMEM, "%s state: out of memory", what);
	}
	*buf = b->p;
	*len = b->len;
	return 0;
}

/* Walk records: returns 1 with tag, data and len set, 0 at the end, <0 on a malformed blob. */
struct rec_iter {
	const uint8_t *b;
	size_t len, off;
};
static int rec_next(struct rec_iter *it, uint32_t *tag, const uint8_t **data, uint32_t *len)
{
	if (it->off == it->len)
		return 0;
	if (it->len - it->off < 8)
		return -EINVAL;
	uint32_t h[2];
	memcpy(h, it->b + it->off, 8);
	if (h[1] > it->len - it->off - 8)
		return -EINVAL;
	*tag = h[0];
	*len = h[1];
	*data = it->b + it->off + 8;
	it->off += 8 + (size_t)h[1];
	return 1;
}

static size_t vcpu_tag_size(uint32_t tag)
{
	switch (tag) {
	case T_REGS: return sizeof(struct kvm_regs);
	case T_SREGS: return sizeof(struct kvm_sregs);
	case T_SREGS2: return sizeof(struct kvm_sregs2);
	case T_XCRS: return sizeof(struct kvm_xcrs);
	case T_LAPIC: return sizeof(struct kvm_lapic_state);
	case T_EVENTS: return sizeof(struct kvm_vcpu_events);
	case T_DEBUGREGS: return sizeof(struct kvm_debugregs);
	case T_MP_STATE: return sizeof(struct kvm_mp_state);
	default: return 0; /* variable: XSAVE, MSRS */
	}
}

int vmstate_vcpu_check(const void *buf, size_t len)
{
	if (!buf || len < 4 || memcmp(buf, "KVC1", 4) != 0)
		return err_set(EINVAL, "vCPU state: bad magic");
	struct rec_iter it = { (const uint8_t *)buf + 4, len - 4, 0 };
	uint32_t seen = 0, tag, n;
	const uint8_t *d;
	int r;
	while ((r = rec_next(&it, &tag, &d, &n)) == 1) {
		if (tag == 0 || tag >= T_VCPU_MAX)
			return err_set(EINVAL, "vCPU state: offset %zu: unknown record %u", it.off - n - 8 + 4, tag);
		if (seen & (1u << tag))
			return err_set(EINVAL, "vCPU state: record %u twice", tag);
		seen |= 1u << tag;
		size_t want = vcpu_tag_size(tag);
		if (want && n != want)
			return err_set(EINVAL, "vCPU state: record %u has %u bytes, expected %zu", tag, n, want);
		if (tag == T_XSAVE && (n < XSAVE_MIN || n > XSAVE_MAX || n % 4))
			return err_set(EINVAL, "vCPU state: XSAVE area of %u bytes", n);
		if (tag == T_MSRS && (n % MSR_REC || n / MSR_REC > MSR_MAX))
			return err_set(EINVAL, "vCPU state: MSR record of %u bytes", n);
	}
	if (r < 0)
		return err_set(EINVAL, "vCPU state: offset %zu: truncated record", it.off + 4);
	uint32_t need = 1u << T_REGS | 1u << T_XSAVE | 1u << T_MSRS | 1u << T_LAPIC | 1u << T_EVENTS | 1u << T_MP_STATE;
	if ((seen & need) != need || !(seen & (1u << T_SREGS | 1u << T_SREGS2)))
		return err_set(EINVAL, "vCPU state: required records missing (have %#x)", seen);
	return 0;
}

/* ---- MSR list ---- */
/* MSRs saved on top of what KVM_GET_MSR_INDEX_LIST reports (it may omit some). */
static const uint32_t extra_msrs[] = {
	0x10, 0x1b, 0x3b, 0x174, 0x175, 0x176, 0x1a0, 0x277, 0x6e0,      /* TSC APICBASE TSC_ADJ SYSENTER MISC PAT DEADLINE */
	0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,      /* EFER STAR LSTAR CSTAR SFMASK */
	0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103,                  /* FS GS KERNEL_GS TSC_AUX */
	0x11, 0x12, 0x4b564d00, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04, /* kvmclock, async PF, steal, PV EOI */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* The candidate list: KVM's list + extra_msrs, sorted, unique. *out: free(). */
static int msr_candidates(int kvm_fd, uint32_t **out, unsigned *n_out)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe); /* E2BIG, sets nmsrs */
	unsigned nk = probe.nmsrs > MSR_MAX ? MSR_MAX : probe.nmsrs;
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + nk * sizeof(uint32_t));
	uint32_t *idx = malloc((nk + sizeof(extra_msrs) / 4) * sizeof(uint32_t));
	if (!l || !idx) {
		free(l);
		free(idx);
		return err_set(ENOMEM, "out of memory");
	}
	l->nmsrs = nk;
	unsigned n = 0;
	if (nk && ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) == 0)
		for (unsigned i = 0; i < l->nmsrs && i < nk; i++)
			idx[n++] = l->indices[i];
	free(l);
	for (unsigned i = 0; i < sizeof(extra_msrs) / 4; i++)
		idx[n++] = extra_msrs[i];
	qsort(idx, n, sizeof(uint32_t), cmp_u32);
	unsigned u = 0;
	for (unsigned i = 0; i < n; i++)
		if (u == 0 || idx[u - 1] != idx[i])
			idx[u++] = idx[i];
	*out = idx;
	*n_out = u > MSR_MAX ? MSR_MAX : u;
	return 0;
}

/* Read every candidate; KVM_GET_MSRS stops at the first MSR it cannot read, so
 * skip that one and go on. Appends {index, 0, value} records to *rec. */
static int read_msrs(struct vcpu *c, uint8_t **rec, size_t *rec_len)
{
	uint32_t *idx = NULL;
	unsigned n = 0;
	int r = msr_candidates(c->vm->kvm_fd, &idx, &n);
	if (r < 0)
		return r;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	uint8_t *out = malloc((size_t)n * MSR_REC + 1);
	if (!m || !out) {
		free(idx);
		free(m);
		free(out);
		return err_set(ENOMEM, "out of memory");
	}
	size_t olen = 0;
	unsigned pos = 0;
	while (pos < n) {
		m->nmsrs = n - pos;
		for (unsigned i = 0; i < m->nmsrs; i++)
			m->entries[i] = (struct kvm_msr_entry){ .index = idx[pos + i] };
		int got = ioctl(c->fd, KVM_GET_MSRS, m);
		if (got < 0) {
			r = err_set(errno, "KVM_GET_MSRS on vCPU %d: %s", c->index, strerror(errno));
			break;
		}
		for (int i = 0; i < got; i++) {
			uint32_t rec32[2] = { m->entries[i].index, 0 };
			memcpy(out + olen, rec32, 8);
			memcpy(out + olen + 8, &m->entries[i].data, 8);
			olen += MSR_REC;
		}
		pos += (unsigned)got + 1; /* skip the unreadable one */
	}
	free(idx);
	free(m);
	if (r < 0) {
		free(out);
		return r;
	}
	*rec = out;
	*rec_len = olen;
	return 0;
}

static int vcpu_get(struct vcpu *c, unsigned long req, void *p, const char *name)
{
	if (ioctl(c->fd, req, p) < 0)
		return err_set(errno, "%s on vCPU %d: %s", name, c->index, strerror(errno));
	return 0;
}

static bool vm_cap(struct vm *vm, long cap)
{
	return ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap) > 0;
}

int vmstate_vcpu_save(struct vcpu *c, void **buf, size_t *len)
{
	struct rec_buf b = { 0 };
	int r;
	rb_magic(&b, "KVC1");
	struct kvm_regs regs;
	if ((r = vcpu_get(c, KVM_GET_REGS, &regs, "KVM_GET_REGS")) < 0)
		goto fail;
	rb_put(&b, T_REGS, &regs, sizeof(regs));

	struct kvm_sregs2 sr2;
	if (vm_cap(c->vm, KVM_CAP_SREGS2) && ioctl(c->fd, KVM_GET_SREGS2, &sr2) == 0) {
		rb_put(&b, T_SREGS2, &sr2, sizeof(sr2));
	} else {
		struct kvm_sregs sr;
		if ((r = vcpu_get(c, KVM_GET_SREGS, &sr, "KVM_GET_SREGS")) < 0)
			goto fail;
		rb_put(&b, T_SREGS, &sr, sizeof(sr));
	}

	int xsize = ioctl(c->vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	size_t xs = xsize > (int)XSAVE_MIN ? (size_t)xsize : XSAVE_MIN;
	if (xs > XSAVE_MAX) {
		r = err_set(E2BIG, "XSAVE area of %zu bytes is larger than supported", xs);
		goto fail;
	}
	void *x = calloc(1, xs);
	if (!x) {
		r = err_set(ENOMEM, "out of memory");
		goto fail;
	}
	r = vcpu_get(c, xs > XSAVE_MIN ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, x, "KVM_GET_XSAVE");
	if (r == 0)
		rb_put(&b, T_XSAVE, x, xs);
	free(x);
	if (r < 0)
		goto fail;

	if (vm_cap(c->vm, KVM_CAP_XCRS)) {
		struct kvm_xcrs xcrs;
		if ((r = vcpu_get(c, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS")) < 0)
			goto fail;
		rb_put(&b, T_XCRS, &xcrs, sizeof(xcrs));
	}

	uint8_t *msrs = NULL;
	size_t mlen = 0;
	if ((r = read_msrs(c, &msrs, &mlen)) < 0)
		goto fail;
	rb_put(&b, T_MSRS, msrs, mlen);
	free(msrs);

	struct kvm_lapic_state lapic;
	if ((r = vcpu_get(c, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC")) < 0)
		goto fail;
	rb_put(&b, T_LAPIC, &lapic, sizeof(lapic));

	struct kvm_vcpu_events ev;
	if ((r = vcpu_get(c, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS")) < 0)
		goto fail;
	rb_put(&b, T_EVENTS, &ev, sizeof(ev));

	if (vm_cap(c->vm, KVM_CAP_DEBUGREGS)) {
		struct kvm_debugregs dr;
		if ((r = vcpu_get(c, KVM_GET_DEBUGREGS, &dr, "KVM_GET_DEBUGREGS")) < 0)
			goto fail;
		rb_put(&b, T_DEBUGREGS, &dr, sizeof(dr));
	}

	struct kvm_mp_state mp;
	if ((r = vcpu_get(c, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE")) < 0)
		goto fail;
	rb_put(&b, T_MP_STATE, &mp, sizeof(mp));
	return rb_finish(&b, buf, len, "vCPU");
fail:
	free(b.p);
	return r;
}

static int vcpu_set(struct vcpu *c, unsigned long req, const void *p, const char *name)
{
	if (ioctl(c->fd, req, p) < 0)
		return err_set(errno, "%s on vCPU %d: %s", name, c->index, strerror(errno));
	return 0;
}

/* Set the MSR records; `deadline` selects the TSC-deadline MSR alone (it must
 * follow KVM_SET_LAPIC, which re-arms the timer) or everything else. */
static int write_msrs(struct vcpu *c, const uint8_t *rec, uint32_t len, bool deadline)
{
	unsigned n = len / MSR_REC;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + (n + 1) * sizeof(struct kvm_msr_entry));
	if (!m)
		return err_set(ENOMEM, "out of memory");
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++) {
		uint32_t index;
		uint64_t v;
		memcpy(&index, rec + i * MSR_REC, 4);
		memcpy(&v, rec + i * MSR_REC + 8, 8);
		if ((index == MSR_IA32_TSC_DEADLINE) != deadline)
			continue;
		m->entries[k++] = (struct kvm_msr_entry){ .index = index, .data = v };
	}
	int r = 0;
	unsigned pos = 0;
	while (pos < k) {
		/* KVM_SET_MSRS stops at the first MSR it refuses: report it, go on. */
		struct kvm_msrs *part = m;
		if (pos) {
			memmove(m->entries, m->entries + pos, (k - pos) * sizeof(m->entries[0]));
			k -= pos;
			pos = 0;
		}
		part->nmsrs = k;
		int done = ioctl(c->fd, KVM_SET_MSRS, part);
		if (done < 0) {
			r = err_set(errno, "KVM_SET_MSRS on vCPU %d: %s", c->index, strerror(errno));
			break;
		}
		if ((unsigned)done < k)
			log_warn("restore: vCPU %d: KVM refused MSR %#x = %#llx (skipped)", c->index,
				 m->entries[done].index, (unsigned long long)m->entries[done].data);
		pos = (unsigned)done + 1;
	}
	free(m);
	return r;
}

int vmstate_vcpu_load(struct vcpu *c, const void *buf, size_t len)
{
	int r = vmstate_vcpu_check(buf, len);
	if (r < 0)
		return r;
	const uint8_t *rec[T_VCPU_MAX] = { 0 };
	uint32_t rlen[T_VCPU_MAX] = { 0 };
	struct rec_iter it = { (const uint8_t *)buf + 4, len - 4, 0 };
	uint32_t tag, n;
	const uint8_t *d;
	while (rec_next(&it, &tag, &d, &n) == 1) {
		rec[tag] = d;
		rlen[tag] = n;
	}
	/* Copies: records in the file are not aligned for the structs. */
	union {
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct kvm_sregs2 sregs2;
		struct kvm_xcrs xcrs;
		struct kvm_lapic_state lapic;
		struct kvm_vcpu_events ev;
		struct kvm_debugregs dr;
		struct kvm_mp_state mp;
	} u;
	/* sregs first: CR0/CR4/EFER and the APIC base that the LAPIC state needs. */
	if (rec[T_SREGS2]) {
		memcpy(&u.sregs2, rec[T_SREGS2], sizeof(u.sregs2));
		if ((r = vcpu_set(c, KVM_SET_SREGS2, &u.sregs2, "KVM_SET_SREGS2")) < 0)
			return r;
	} else {
		memcpy(&u.sregs, rec[T_SREGS], sizeof(u.sregs));
		if ((r = vcpu_set(c, KVM_SET_SREGS, &u.sregs, "KVM_SET_SREGS")) < 0)
			return r;
	}
	memcpy(&u.regs, rec[T_REGS], sizeof(u.regs));
	if ((r = vcpu_set(c, KVM_SET_REGS, &u.regs, "KVM_SET_REGS")) < 0)
		return r;
	void *x = calloc(1, rlen[T_XSAVE]);
	if (!x)
		return err_set(ENOMEM, "out of memory");
	memcpy(x, rec[T_XSAVE], rlen[T_XSAVE]);
	r = vcpu_set(c, KVM_SET_XSAVE, x, "KVM_SET_XSAVE");
	free(x);
	if (r < 0)
		return r;
	if (rec[T_XCRS]) {
		memcpy(&u.xcrs, rec[T_XCRS], sizeof(u.xcrs));
		if ((r = vcpu_set(c, KVM_SET_XCRS, &u.xcrs, "KVM_SET_XCRS")) < 0)
			return r;
	}
	if ((r = write_msrs(c, rec[T_MSRS], rlen[T_MSRS], false)) < 0)
		return r;
	memcpy(&u.lapic, rec[T_LAPIC], sizeof(u.lapic));
	if ((r = vcpu_set(c, KVM_SET_LAPIC, &u.lapic, "KVM_SET_LAPIC")) < 0)
		return r;
	if ((r = write_msrs(c, rec[T_MSRS], rlen[T_MSRS], true)) < 0)
		return r;
	memcpy(&u.mp, rec[T_MP_STATE], sizeof(u.mp));
	if ((r = vcpu_set(c, KVM_SET_MP_STATE, &u.mp, "KVM_SET_MP_STATE")) < 0)
		return r;
	if (rec[T_DEBUGREGS]) {
		memcpy(&u.dr, rec[T_DEBUGREGS], sizeof(u.dr));
		u.dr.flags = 0;
		if ((r = vcpu_set(c, KVM_SET_DEBUGREGS, &u.dr, "KVM_SET_DEBUGREGS")) < 0)
			return r;
	}
	/* Pending exceptions/interrupts/NMIs last: earlier sets may clear them. */
	memcpy(&u.ev, rec[T_EVENTS], sizeof(u.ev));
	u.ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
		     (u.ev.flags & (KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM |
				    KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT));
	return vcpu_set(c, KVM_SET_VCPU_EVENTS, &u.ev, "KVM_SET_VCPU_EVENTS");
}

/* ---- VM-wide ---- */
static size_t vm_tag_size(uint32_t tag)
{
	switch (tag) {
	case V_PIC_MASTER:
	case V_PIC_SLAVE:
	case V_IOAPIC: return sizeof(struct kvm_irqchip);
	case V_PIT2: return sizeof(struct kvm_pit_state2);
	case V_CLOCK: return sizeof(struct kvm_clock_data);
	default: return 0;
	}
}

int vmstate_vm_check(const void *buf, size_t len)
{
	if (!buf || len < 4 || memcmp(buf, "KVV1", 4) != 0)
		return err_set(EINVAL, "VM state: bad magic");
	struct rec_iter it = { (const uint8_t *)buf + 4, len - 4, 0 };
	uint32_t seen = 0, tag, n;
	const uint8_t *d;
	int r;
	while ((r = rec_next(&it, &tag, &d, &n)) == 1) {
		if (tag == 0 || tag >= V_MAX || (seen & (1u << tag)))
			return err_set(EINVAL, "VM state: unknown or repeated record %u", tag);
		seen |= 1u << tag;
		if (n != vm_tag_size(tag))
			return err_set(EINVAL, "VM state: record %u has %u bytes, expected %zu", tag, n, vm_tag_size(tag));
		if (tag <= V_IOAPIC) {
			struct kvm_irqchip chip;
			memcpy(&chip, d, sizeof(chip));
			if (chip.chip_id != tag - 1)
				return err_set(EINVAL, "VM state: irqchip record %u holds chip %u", tag, chip.chip_id);
		}
	}
	if (r < 0)
		return err_set(EINVAL, "VM state: offset %zu: truncated record", it.off + 4);
	uint32_t need = (1u << V_MAX) - 2;
	if ((seen & need) != need)
		return err_set(EINVAL, "VM state: required records missing (have %#x)", seen);
	return 0;
}

int vmstate_vm_save(struct vm *vm, void **buf, size_t *len)
{
	struct rec_buf b = { 0 };
	rb_magic(&b, "KVV1");
	for (unsigned chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic = { .chip_id = chip };
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &ic) < 0) {
			free(b.p);
			return err_set(errno, "KVM_GET_IRQCHIP %u: %s", chip, strerror(errno));
		}
		rb_put(&b, V_PIC_MASTER + chip, &ic, sizeof(ic));
	}
	struct kvm_pit_state2 pit;
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0) {
		free(b.p);
		return err_set(errno, "KVM_GET_PIT2: %s", strerror(errno));
	}
	rb_put(&b, V_PIT2, &pit, sizeof(pit));
	struct kvm_clock_data clk = { 0 };
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clk) < 0) {
		free(b.p);
		return err_set(errno, "KVM_GET_CLOCK: %s", strerror(errno));
	}
	rb_put(&b, V_CLOCK, &clk, sizeof(clk));
	return rb_finish(&b, buf, len, "VM");
}

int vmstate_vm_load(struct vm *vm, const void *buf, size_t len)
{
	int r = vmstate_vm_check(buf, len);
	if (r < 0)
		return r;
	struct rec_iter it = { (const uint8_t *)buf + 4, len - 4, 0 };
	uint32_t tag, n;
	const uint8_t *d;
	while (rec_next(&it, &tag, &d, &n) == 1) {
		union {
			struct kvm_irqchip ic;
			struct kvm_pit_state2 pit;
			struct kvm_clock_data clk;
		} u;
		memcpy(&u, d, n);
		unsigned long req;
		const char *name;
		if (tag <= V_IOAPIC) {
			req = KVM_SET_IRQCHIP;
			name = "KVM_SET_IRQCHIP";
		} else if (tag == V_PIT2) {
			req = KVM_SET_PIT2;
			name = "KVM_SET_PIT2";
		} else {
			/* The guest's clock continues from the saved value: time stands
			 * still while the snapshot rests, like the saved TSC. */
			u.clk.flags = 0;
			memset(u.clk.pad, 0, sizeof(u.clk.pad));
			u.clk.realtime = u.clk.host_tsc = 0;
			req = KVM_SET_CLOCK;
			name = "KVM_SET_CLOCK";
		}
		if (ioctl(vm->vm_fd, req, &u) < 0)
			return err_set(errno, "%s: %s", name, strerror(errno));
	}
	return 0;
}

/* FNV-1a over the feature-bearing CPUID fields KVM supports: vendor and maximum
 * leaves, leaf 1 ECX/EDX, leaf 7 EBX/ECX/EDX, leaf 0xD (XSAVE components and
 * sizes), 0x80000001 ECX/EDX. Not the whole table: some fields describe the host
 * CPU the ioctl ran on (leaf 1 EBX's APIC ID, topology leaves) and vary between calls. */
int vmstate_host_cpuid_hash(struct vm *vm, uint64_t *hash)
{
	const struct kvm_cpuid2 *cp;
	int r = vm_supported_cpuid(vm, &cp);
	if (r < 0)
		return r;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (uint32_t i = 0; i < cp->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &cp->entries[i];
		uint32_t v[6] = { e->function, e->index, 0, 0, 0, 0 };
		switch (e->function) {
		case 0: case 0x80000000: v[2] = e->eax; v[3] = e->ebx; v[4] = e->ecx; v[5] = e->edx; break;
		case 1: case 0x80000001: v[4] = e->ecx; v[5] = e->edx; break;
		case 7: v[3] = e->ebx; v[4] = e->ecx; v[5] = e->edx; break;
		case 0xd: v[2] = e->eax; v[4] = e->ecx; v[5] = e->edx; break;
		default: continue;
		}
		const uint8_t *p = (const uint8_t *)v;
		for (size_t k = 0; k < sizeof(v); k++)
			h = (h ^ p[k]) * 0x100000001b3ULL;
	}
	*hash = h;
	return 0;
}
