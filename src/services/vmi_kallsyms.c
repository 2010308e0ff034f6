/* kallsyms recovery from guest memory; see include/vmsvc/vmi.h.
 *
 * The tables (scripts/kallsyms.c output, every label 8-aligned):
 *   <= 6.1        offsets[N] relative_base num_syms names markers[M] token_table token_index[256]
 *   6.2, 6.3      ... markers[M] seqs_of_names[3N] token_table token_index (Debian 6.1 too)
 *   >= 6.4        num_syms names markers[M] token_table token_index offsets[N] relative_base seqs
 * Search order: the token table (its single-digit tokens "0".."9" sit at indices
 * 48..57) and the token_index that must follow it, then markers before the
 * table, then names + num_syms before the markers, then offsets in either place.
 * Every step is validated against the next, so random data is rejected. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

#define KS_MAX_SYMS 4000000u
#define KS_NAME_MAX 1024u          /* expanded name incl. type letter (KSYM_NAME_LEN is 512) */
#define KS_TOKEN_MAX 64u
#define KS_MARKER_MIN 0x200u       /* 256 names of >= 2 bytes each */
#define KS_MARKER_MAX 0x40000u
#define KS_MARKERS_BACK (32u << 20) /* how far before the token table markers may start */

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

struct ks_scan {
	const uint8_t *buf;
	size_t len;
	uint64_t base_pa;
	size_t tt, ti;          /* token_table, token_index positions in buf */
	uint16_t tok_off[256];
	uint8_t tok_len[256];
	size_t markers, m;      /* markers position and count */
	size_t names, n;
	size_t offsets, relbase;
	enum vmi_ks_layout layout;
};

/* pa-aligned position: buf offsets and physical addresses share alignment only
 * through base_pa, so align on the physical address. */
static size_t align8(const struct ks_scan *s, size_t pos)
{
	uint64_t pa = s->base_pa + pos;
	return pos + (size_t)((8 - (pa & 7)) & 7);
}
static bool aligned8(const struct ks_scan *s, size_t pos) { return ((s->base_pa + pos) & 7) == 0; }

/* Given "0\0" of token 48 at `hit`, find the table start and token_index. */
static bool find_token_table(struct ks_scan *s, size_t hit)
{
	/* Walk forward from token 48 to the end of token 255. */
	size_t pos = hit;
	for (int i = 48; i < 256; i++) {
		size_t start = pos;
		while (pos < s->len && s->buf[pos] && pos - start <= KS_TOKEN_MAX)
			pos++;
		if (pos >= s->len || s->buf[pos] || pos == start)
			return false;
		pos++;
	}
	size_t end = pos;
	/* token_index follows at the next 8-byte boundary; it must describe
	 * exactly the tokens we walked (ascending, each ending in its own NUL). */
	size_t ti = align8(s, end);
	if (ti + 512 > s->len)
		return false;
	uint16_t idx[256];
	memcpy(idx, s->buf + ti, sizeof(idx));
	if (idx[0] != 0 || idx[48] > hit)
		return false;
	size_t tt = hit - idx[48];
	for (int i = 0; i < 256; i++) {
		size_t t = tt + idx[i];
		size_t next = i < 255 ? tt + idx[i + 1] : end;
		if (i < 255 && idx[i + 1] <= idx[i])
			return false;
		if (next - t < 2 || next - t - 1 > KS_TOKEN_MAX || s->buf[next - 1] != 0 ||
		    memchr(s->buf + t, 0, next - t - 1))
			return false;
		s->tok_off[i] = idx[i];
		s->tok_len[i] = (uint8_t)(next - t - 1);
	}
	s->tt = tt;
	s->ti = ti;
	return true;
}

/* Walk n names from `names`; check they hit every marker and end within 8 bytes
 * before `end`. */
static bool walk_names(const struct ks_scan *s, size_t names, size_t n, size_t end)
{
	size_t pos = names;
	for (size_t i = 0; i < n; i++) {
		if (!(i & 255) && pos - names != rd32(s->buf + s->markers + 4 * (i >> 8)))
			return false;
		if (pos >= end)
			return false;
		size_t len = s->buf[pos++];
		if (len & 0x80) {
			if (pos >= end)
				return false;
			len = (len & 0x7f) | ((size_t)s->buf[pos++] << 7);
		}
		if (!len || len > end - pos)
			return false;
		pos += len;
	}
	return pos <= end && end - pos < 8;
}

static bool plausible_base(uint64_t b) { return b >= VMI_KERNEL_MAP && !(b & 0xfff); }

/* With markers at s->markers (count s->m), find names/num_syms and offsets. */
static bool find_names(struct ks_scan *s)
{
	size_t p = s->markers;
	uint32_t last = rd32(s->buf + p + 4 * (s->m - 1));
	if (last >= p)
		return false;
	size_t hi = p - last; /* names start below this */
	size_t lo = hi > 256u * (2 + KS_NAME_MAX) + 16 ? hi - 256u * (2 + KS_NAME_MAX) - 16 : 16;
	for (size_t names = hi; names >= lo && names >= 16; names--) {
		if (!aligned8(s, names))
			continue;
		uint32_t n = rd32(s->buf + names - 8);
		if (rd32(s->buf + names - 4) != 0 || n <= 256u * (s->m - 1) || n > 256u * s->m || n > KS_MAX_SYMS)
			continue;
		if (!walk_names(s, names, n, p))
			continue;
		s->names = names;
		s->n = n;
		/* Old order: relative_base just before num_syms, offsets before it. */
		size_t rb = names - 16;
		if (rb >= 4 * (size_t)n && plausible_base(rd64(s->buf + rb))) {
			s->relbase = rb;
			s->offsets = rb - 4 * (size_t)n;
			if (!aligned8(s, s->offsets)) {
				if (s->offsets < 4)
					return false;
				s->offsets -= 4;
			}
			return true;
		}
		/* New order: offsets right after token_index, then relative_base. */
		size_t off = align8(s, s->ti + 512);
		rb = align8(s, off + 4 * (size_t)n);
		if (rb + 8 <= s->len && plausible_base(rd64(s->buf + rb))) {
			s->offsets = off;
			s->relbase = rb;
			s->layout = VMI_KS_NEW;
			return true;
		}
		return false;
	}
	return false;
}

/* Markers end at the token table (or at seqs_of_names, which end there). */
static bool find_markers(struct ks_scan *s)
{
	if (s->tt < 16)
		return false;
	size_t stop = s->tt > KS_MARKERS_BACK ? s->tt - KS_MARKERS_BACK : 0;
	size_t first = s->tt - (size_t)((s->base_pa + s->tt) & 7); /* 8-aligned by pa */
	for (size_t p = first; p >= stop + 8 && p <= first; p -= 8) {
		if (p + 8 > s->tt || rd32(s->buf + p) != 0)
			continue;
		uint32_t d = rd32(s->buf + p + 4);
		if (d < KS_MARKER_MIN || d > KS_MARKER_MAX)
			continue;
		/* Count markers while the deltas look like 256-name blocks. */
		size_t m = 1;
		uint32_t prev = 0;
		while (p + 4 * (m + 1) <= s->tt) {
			uint32_t v = rd32(s->buf + p + 4 * m);
			if (v < prev + KS_MARKER_MIN || v > prev + KS_MARKER_MAX)
				break;
			prev = v;
			m++;
		}
		/* The word after the last marker may look like one more: try m, m-1. */
		for (size_t k = 0; k < 2 && m - k >= 1; k++) {
			s->markers = p;
			s->m = m - k;
			s->layout = VMI_KS_OLD;
			if (find_names(s)) {
				size_t mend = align8(s, p + 4 * s->m);
				if (s->layout != VMI_KS_NEW && mend != s->tt)
					s->layout = VMI_KS_OLD_SEQS;
				return true;
			}
		}
	}
	return false;
}

static int cmp_addr(const void *a, const void *b)
{
	const struct vmi_sym *x = a, *y = b;
	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	return (x->name > y->name) - (x->name < y->name); /* decode order: deterministic */
}

/* The index by name is a hash table (building it is O(n); sorting 87k names
 * by strcmp cost ~70 ms). Eight bytes per step (a byte-wise hash was a fifth
 * of the decode); `len` bytes of s are read, nothing beyond. */
static size_t name_hash_len(const char *s, size_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		memcpy(&w, s + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, s + i, len - i);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 29;
	return (size_t)h;
}

static size_t name_hash(const char *s)
{
	return name_hash_len(s, strlen(s));
}

/* Fill the name index from each symbol's home slot (hv[i], already masked).
 * The table (1 MiB for 87,000 symbols) does not fit in cache, so inserting in
 * symbol order costs a cache miss per symbol (~60% of the decode): insert in
 * slot order instead, after a counting sort by the slot's top 8 bits, so each
 * group of inserts stays within 1/256 of the table. Lookups take the lowest
 * address among equal names, so the result does not depend on this order. */
static int build_index(struct vmi_kallsyms *ks, const uint32_t *hv)
{
	uint32_t *order = malloc(ks->n * sizeof(*order));
	if (!order)
		return -ENOMEM;
	unsigned shift = 0;
	while ((ks->hash_size >> shift) > 256)
		shift++;
	size_t start[257] = { 0 };
	for (size_t i = 0; i < ks->n; i++)
		start[(hv[i] >> shift) + 1]++;
	for (int g = 0; g < 256; g++)
		start[g + 1] += start[g];
	for (size_t i = 0; i < ks->n; i++)
		order[start[hv[i] >> shift]++] = (uint32_t)i;
	size_t mask = ks->hash_size - 1;
	for (size_t k = 0; k < ks->n; k++) {
		uint32_t i = order[k];
		size_t h = hv[i];
		while (ks->name_hash[h])
			h = (h + 1) & mask;
		ks->name_hash[h] = i + 1;
	}
	free(order);
	return 0;
}

static int alloc_hash(struct vmi_kallsyms *ks)
{
	size_t size = 1024;
	while (size < ks->n * 2 + 1)
		size *= 2;
	free(ks->name_hash);
	ks->name_hash = calloc(size, sizeof(*ks->name_hash));
	if (!ks->name_hash)
		return -ENOMEM;
	ks->hash_size = size;
	return 0;
}

double vmi_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Tokens are copied 16 bytes at a time (one unaligned load/store pair instead
 * of a variable-length memcpy per token: expansion is the bulk of the decode);
 * the output keeps KS_TOKEN_PAD bytes of slack for the over-copy. */
#define KS_TOKEN_PAD 16

static int decode(struct vmi_kallsyms *ks, const struct ks_scan *s)
{
	memset(ks, 0, sizeof(*ks));
	double t0 = vmi_now_ms();
	ks->n = s->n;
	ks->sym = malloc(s->n * sizeof(*ks->sym));
	/* Names are stored with their type letter in front (name points after
	 * it), so expansion writes straight into the final buffer. */
	size_t cap = s->n * 24 + KS_NAME_MAX + KS_TOKEN_PAD + 4096, used = 0;
	ks->names = malloc(cap);
	uint32_t *hv = malloc(s->n * sizeof(*hv)); /* home slot of each name */
	if (!ks->sym || !ks->names || !hv || alloc_hash(ks) < 0)
		goto nomem;
	uint8_t tokpad[256][KS_TOKEN_PAD];
	for (int t = 0; t < 256; t++) {
		memset(tokpad[t], 0, KS_TOKEN_PAD);
		memcpy(tokpad[t], s->buf + s->tt + s->tok_off[t], s->tok_len[t] < KS_TOKEN_PAD ? s->tok_len[t] : KS_TOKEN_PAD);
	}
	ks->relative_base = rd64(s->buf + s->relbase);
	for (size_t i = 0; i < s->n; i++)
		if ((int32_t)rd32(s->buf + s->offsets + 4 * i) < 0)
			ks->absolute_percpu = true;
	size_t pos = s->names;
	bool sorted = true;
	uint64_t prev = 0;
	for (size_t i = 0; i < s->n; i++) {
		size_t len = s->buf[pos++];
		if (len & 0x80)
			len = (len & 0x7f) | ((size_t)s->buf[pos++] << 7);
		if (used + KS_NAME_MAX + KS_TOKEN_PAD + 1 > cap) {
			cap = cap * 2;
			char *nn = realloc(ks->names, cap);
			if (!nn)
				goto nomem;
			ks->names = nn;
		}
		char *o = ks->names + used;
		size_t out = 0;
		const uint8_t *c = s->buf + pos;
		for (size_t j = 0; j < len; j++) {
			uint8_t b = c[j];
			size_t tl = s->tok_len[b];
			if (out + tl > KS_NAME_MAX) {
				free(hv);
				vmi_kallsyms_free(ks);
				return err_set(EINVAL, "kallsyms: symbol %zu expands beyond %u bytes", i, KS_NAME_MAX);
			}
			if (tl <= KS_TOKEN_PAD)
				memcpy(o + out, tokpad[b], KS_TOKEN_PAD);
			else /* a few long tokens ("__pfx___x64_sys_"...) */
				memcpy(o + out, s->buf + s->tt + s->tok_off[b], tl);
			out += tl;
		}
		pos += len;
		if (out < 1) {
			free(hv);
			vmi_kallsyms_free(ks);
			return err_set(EINVAL, "kallsyms: symbol %zu has an empty name", i);
		}
		o[out] = 0;
		int32_t off = (int32_t)rd32(s->buf + s->offsets + 4 * i);
		uint64_t addr;
		if (ks->absolute_percpu)
			addr = off >= 0 ? (uint64_t)off : ks->relative_base - 1 - (uint64_t)(int64_t)off;
		else
			addr = ks->relative_base + (uint32_t)off;
		ks->sym[i] = (struct vmi_sym){ .addr = addr, .name = (uint32_t)used + 1, .type = o[0] };
		used += out + 1;
		if (addr < prev)
			sorted = false;
		prev = addr;
		/* Hash the name now, while it is in cache. */
		hv[i] = (uint32_t)(name_hash_len(o + 1, out - 1) & (ks->hash_size - 1));
	}
	ks->names_len = used;
	double t1 = vmi_now_ms();
	/* The kernel emits the table in address order (scripts/kallsyms.c sorts
	 * it), so the sort is normally skipped; a table that is not in order is
	 * sorted and re-indexed. Equal addresses stay in decode order either way. */
	if (!sorted) {
		qsort(ks->sym, ks->n, sizeof(*ks->sym), cmp_addr);
		for (size_t i = 0; i < ks->n; i++)
			hv[i] = (uint32_t)(name_hash(ks->names + ks->sym[i].name) & (ks->hash_size - 1));
	}
	double t2 = vmi_now_ms();
	if (build_index(ks, hv) < 0)
		goto nomem;
	free(hv);
	hv = NULL;
	ks->ms_decode = t1 - t0;
	ks->ms_sort = t2 - t1;
	ks->ms_index = vmi_now_ms() - t2;
	ks->layout = s->layout;
	ks->pa_names = s->base_pa + s->names;
	ks->pa_markers = s->base_pa + s->markers;
	ks->pa_token_table = s->base_pa + s->tt;
	ks->pa_token_index = s->base_pa + s->ti;
	ks->pa_offsets = s->base_pa + s->offsets;
	ks->pa_relative_base = s->base_pa + s->relbase;
	return 0;
nomem:
	free(hv);
	vmi_kallsyms_free(ks);
	return err_set(ENOMEM, "kallsyms: out of memory for %zu symbols", s->n);
}

int vmi_kallsyms_from_buf(struct vmi_kallsyms *ks, const uint8_t *buf, size_t len, uint64_t base_pa)
{
	static const char digits[] = "0\0" "1\0" "2\0" "3\0" "4\0" "5\0" "6\0" "7\0" "8\0" "9";
	struct ks_scan s = { .buf = buf, .len = len, .base_pa = base_pa };
	memset(ks, 0, sizeof(*ks));
	size_t pos = 0;
	while (pos < len) {
		const uint8_t *hit = memmem(buf + pos, len - pos, digits, sizeof(digits));
		if (!hit)
			break;
		size_t h = (size_t)(hit - buf);
		pos = h + 1;
		if (find_token_table(&s, h) && find_markers(&s))
			return decode(ks, &s);
	}
	return -ENOENT;
}

/* Where a CPU was executing kernel code, the image (and its .rodata with the
 * tables) is close by: scan from that 2 MiB boundary first. Only the search
 * order depends on this guest-controlled value; results are validated alike. */
static int scan_near_cpus(struct vmi_kallsyms *ks, const struct vmi_mem *m)
{
	for (unsigned c = 0; c < m->ncpus; c++) {
		uint64_t pa;
		if (m->cpu_rip[c] < VMI_KERNEL_MAP || !(m->cpu[c].cr0 >> 31))
			continue;
		struct pw_regs r = m->cpu[c];
		r.cr3 &= 0x000ffffffffff000ULL;
		if (pw_translate_fn(vmi_pw_read, (void *)m, &r, m->cpu_rip[c], &pa, NULL, NULL) < 0)
			continue;
		for (unsigned i = 0; i < m->nranges; i++) {
			const struct vmi_range *rg = &m->range[i];
			if (pa < rg->pa || pa - rg->pa >= rg->len)
				continue;
			uint64_t start = (pa & ~0x1fffffULL) < rg->pa ? rg->pa : pa & ~0x1fffffULL;
			uint64_t len = rg->len - (start - rg->pa);
			if (len > (256u << 20))
				len = 256u << 20;
			if (vmi_kallsyms_from_buf(ks, rg->host + (start - rg->pa), (size_t)len, start) != -ENOENT)
				return 0;
		}
	}
	return -ENOENT;
}

int vmi_kallsyms_scan(struct vmi_kallsyms *ks, const struct vmi_mem *m)
{
	double t0 = vmi_now_ms();
	int rc = scan_near_cpus(ks, m);
	for (unsigned i = 0; i < m->nranges && rc == -ENOENT; i++)
		rc = vmi_kallsyms_from_buf(ks, m->range[i].host, m->range[i].len, m->range[i].pa);
	if (rc == 0) {
		ks->ms_find = vmi_now_ms() - t0 - ks->ms_decode - ks->ms_sort - ks->ms_index;
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	return err_set(ENOENT, "no kallsyms tables found in guest memory (kernel without CONFIG_KALLSYMS_ALL?)");
}

void vmi_kallsyms_free(struct vmi_kallsyms *ks)
{
	free(ks->sym);
	free(ks->name_hash);
	free(ks->names);
	memset(ks, 0, sizeof(*ks));
}

int vmi_ksym_addr(const struct vmi_kallsyms *ks, const char *name, uint64_t *addr)
{
	if (!ks->hash_size)
		return -ENOENT;
	/* Names repeat (static functions): the lowest address wins, so the
	 * answer does not depend on the table order. */
	bool found = false;
	for (size_t h = name_hash(name) & (ks->hash_size - 1); ks->name_hash[h]; h = (h + 1) & (ks->hash_size - 1)) {
		const struct vmi_sym *s = &ks->sym[ks->name_hash[h] - 1];
		if (!strcmp(ks->names + s->name, name) && (!found || s->addr < *addr)) {
			*addr = s->addr;
			found = true;
		}
	}
	return found ? 0 : -ENOENT;
}

const struct vmi_sym *vmi_ksym_at(const struct vmi_kallsyms *ks, uint64_t addr)
{
	size_t lo = 0, hi = ks->n;
	while (lo < hi) { /* first index whose address is > addr */
		size_t mid = lo + (hi - lo) / 2;
		if (ks->sym[mid].addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? &ks->sym[lo - 1] : NULL;
}
