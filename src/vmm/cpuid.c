/* CPUID for vCPUs: fetch what KVM supports, then give each vCPU its APIC ID, a
 * flat topology (one core per vCPU, one thread per core, one package), the
 * hypervisor bit, and hide features the user (or a preset) asked to hide. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <vmsvc/err.h>
#include <vmsvc/platform.h>

enum { EAX, EBX, ECX, EDX };

/* A hideable feature, spelled as in Linux's /proc/cpuinfo. `dep` names the
 * feature it needs: hiding `dep` hides this one too (like Linux's cpuid-deps),
 * because a guest that sees e.g. AVX without XSAVE would fault enabling it. */
struct cpu_feature {
	const char *name;
	uint32_t leaf, subleaf;
	uint8_t reg, bit;
	const char *dep;
};

static const struct cpu_feature features[] = {
	/* leaf 1 ECX */
	{ "pni", 1, 0, ECX, 0, NULL },
	{ "pclmulqdq", 1, 0, ECX, 1, NULL },
	{ "monitor", 1, 0, ECX, 3, NULL },
	{ "ssse3", 1, 0, ECX, 9, NULL },
	{ "fma", 1, 0, ECX, 12, "avx" },
	{ "cx16", 1, 0, ECX, 13, NULL },
	{ "pcid", 1, 0, ECX, 17, NULL },
	{ "sse4_1", 1, 0, ECX, 19, NULL },
	{ "sse4_2", 1, 0, ECX, 20, NULL },
	{ "x2apic", 1, 0, ECX, 21, NULL },
	{ "movbe", 1, 0, ECX, 22, NULL },
	{ "popcnt", 1, 0, ECX, 23, NULL },
	{ "tsc_deadline_timer", 1, 0, ECX, 24, NULL },
	{ "aes", 1, 0, ECX, 25, NULL },
	{ "xsave", 1, 0, ECX, 26, NULL },
	{ "osxsave", 1, 0, ECX, 27, "xsave" },
	{ "avx", 1, 0, ECX, 28, "xsave" },
	{ "f16c", 1, 0, ECX, 29, "avx" },
	{ "rdrand", 1, 0, ECX, 30, NULL },
	/* leaf 7.0 EBX */
	{ "fsgsbase", 7, 0, EBX, 0, NULL },
	{ "bmi1", 7, 0, EBX, 3, NULL },
	{ "hle", 7, 0, EBX, 4, NULL },
	{ "avx2", 7, 0, EBX, 5, "avx" },
	{ "smep", 7, 0, EBX, 7, NULL },
	{ "bmi2", 7, 0, EBX, 8, NULL },
	{ "erms", 7, 0, EBX, 9, NULL },
	{ "invpcid", 7, 0, EBX, 10, NULL },
	{ "rtm", 7, 0, EBX, 11, NULL },
	{ "avx512f", 7, 0, EBX, 16, "avx" },
	{ "avx512dq", 7, 0, EBX, 17, "avx512f" },
	{ "rdseed", 7, 0, EBX, 18, NULL },
	{ "adx", 7, 0, EBX, 19, NULL },
	{ "smap", 7, 0, EBX, 20, NULL },
	{ "avx512ifma", 7, 0, EBX, 21, "avx512f" },
	{ "clflushopt", 7, 0, EBX, 23, NULL },
	{ "clwb", 7, 0, EBX, 24, NULL },
	{ "avx512pf", 7, 0, EBX, 26, "avx512f" },
	{ "avx512er", 7, 0, EBX, 27, "avx512f" },
	{ "avx512cd", 7, 0, EBX, 28, "avx512f" },
	{ "sha_ni", 7, 0, EBX, 29, NULL },
	{ "avx512bw", 7, 0, EBX, 30, "avx512f" },
	{ "avx512vl", 7, 0, EBX, 31, "avx512f" },
	/* leaf 7.0 ECX */
	{ "avx512vbmi", 7, 0, ECX, 1, "avx512f" },
	{ "umip", 7, 0, ECX, 2, NULL },
	{ "pku", 7, 0, ECX, 3, "xsave" },
	{ "ospke", 7, 0, ECX, 4, "pku" },
	{ "waitpkg", 7, 0, ECX, 5, NULL },
	{ "avx512_vbmi2", 7, 0, ECX, 6, "avx512f" },
	{ "gfni", 7, 0, ECX, 8, NULL },
	{ "vaes", 7, 0, ECX, 9, "avx" },
	{ "vpclmulqdq", 7, 0, ECX, 10, "avx" },
	{ "avx512_vnni", 7, 0, ECX, 11, "avx512f" },
	{ "avx512_bitalg", 7, 0, ECX, 12, "avx512f" },
	{ "avx512_vpopcntdq", 7, 0, ECX, 14, "avx512f" },
	{ "la57", 7, 0, ECX, 16, NULL },
	{ "rdpid", 7, 0, ECX, 22, NULL },
	/* leaf 7.0 EDX */
	{ "avx512_4vnniw", 7, 0, EDX, 2, "avx512f" },
	{ "avx512_4fmaps", 7, 0, EDX, 3, "avx512f" },
	{ "avx512_vp2intersect", 7, 0, EDX, 8, "avx512f" },
	{ "avx512_fp16", 7, 0, EDX, 23, "avx512bw" },
	/* leaf 7.1 EAX */
	{ "avx_vnni", 7, 1, EAX, 4, "avx" },
	{ "avx512_bf16", 7, 1, EAX, 5, "avx512vl" },
	/* leaf 0xd.1 EAX: XSAVE variants */
	{ "xsaveopt", 0xd, 1, EAX, 0, "xsave" },
	{ "xsavec", 0xd, 1, EAX, 1, "xsave" },
	{ "xgetbv1", 0xd, 1, EAX, 2, "xsave" },
	{ "xsaves", 0xd, 1, EAX, 3, "xsave" },
	/* leaf 0x80000001 */
	{ "abm", 0x80000001, 0, ECX, 5, NULL },
	{ "sse4a", 0x80000001, 0, ECX, 6, NULL },
	{ "3dnowprefetch", 0x80000001, 0, ECX, 8, NULL },
	{ "xop", 0x80000001, 0, ECX, 11, "avx" },
	{ "fma4", 0x80000001, 0, ECX, 16, "avx" },
	{ "tbm", 0x80000001, 0, ECX, 21, NULL },
	{ "pdpe1gb", 0x80000001, 0, EDX, 26, NULL },
	{ "rdtscp", 0x80000001, 0, EDX, 27, NULL },
};
#define NFEATURES (sizeof(features) / sizeof(features[0]))

/* "emulator-safe": on kvm_pvm, guest CPL0 code runs in KVM's instruction emulator
 * (see docs / shared notes pvm.md). Hide what makes a Linux guest kernel execute
 * instructions that emulator rejects or #UDs on, so it takes its fallbacks:
 *   xsave       xsave/xrstor/xgetbv fail; hiding it (+ dependents: avx, avx2,
 *               avx512*, fma, f16c, pku, xsaveopt...) keeps Linux on FXSAVE
 *   cx16        SLUB's lock cmpxchg16b fails
 *   popcnt      popcnt fails (hweight alternatives)
 *   sse4_2      crc32 fails (crc32c-intel); also gates other SSE4.2 users
 *   pni ssse3 sse4_1 pclmulqdq aes sha_ni gfni
 *               SSE in the kernel runs only in kernel_fpu_begin() sections
 *               (crypto, RAID6, ...): hiding the optional levels keeps those on
 *               their generic C paths (SSE instructions fail in the emulator)
 *   bmi1 bmi2 adx
 *               VEX-encoded / ADX instructions used by crypto and alternatives
 *   movbe rdpid #UD in the emulator
 *   rdtscp      rdtscp fails (vDSO / getcpu paths)
 *   smap        stac/clac fail: every user-access section and interrupt entry
 *   pku         rdpkru/wrpkru fail
 *   fsgsbase    rd/wr{fs,gs}base on context switch
 *   pcid invpcid
 *               invpcid in TLB flushes; PCID only matters with invpcid
 *   rdseed clflushopt clwb waitpkg monitor
 *               not emulated / idle loops that use monitor+mwait/umwait
 * Note: on kvm_pvm, bits outside KVM's supported set still show through in
 * emulated CPUID; pass the matching kernel options too (noxsave, clearcpuid=). */
static const char *const preset_emulator_safe[] = {
	"xsave", "cx16", "popcnt", "sse4_2", "pni", "ssse3", "sse4_1", "pclmulqdq",
	"aes", "sha_ni", "gfni", "bmi1", "bmi2", "adx", "movbe", "rdpid", "rdtscp",
	"smap", "pku", "fsgsbase", "pcid", "invpcid", "rdseed", "clflushopt", "clwb",
	"waitpkg", "monitor", "avx", "avx2",
};

static const struct cpu_feature *feature_by_name(const char *name, size_t len)
{
	for (size_t i = 0; i < NFEATURES; i++)
		if (strlen(features[i].name) == len && memcmp(features[i].name, name, len) == 0)
			return &features[i];
	return NULL;
}

static int hide_add(struct cpuid_hide *out, const struct cpu_feature *f)
{
	for (unsigned i = 0; i < out->n; i++)
		if (out->item[i].leaf == f->leaf && out->item[i].subleaf == f->subleaf &&
		    out->item[i].reg == f->reg && out->item[i].bit == f->bit)
			return 0;
	if (out->n >= sizeof(out->item) / sizeof(out->item[0]))
		return err_set(EINVAL, "too many CPU features to hide in --cpu-features (max %zu)",
			       sizeof(out->item) / sizeof(out->item[0]));
	out->item[out->n].leaf = f->leaf;
	out->item[out->n].subleaf = f->subleaf;
	out->item[out->n].reg = f->reg;
	out->item[out->n].bit = f->bit;
	out->n++;
	return 0;
}

static int unknown_feature(const char *name, size_t len)
{
	/* The whole list would overflow the one-line message: name as many as fit. */
	char known[360];
	size_t off = 0, i;
	for (i = 0; i < NFEATURES; i++) {
		if (strncmp(features[i].name, "avx512", 6) == 0 && strcmp(features[i].name, "avx512f") != 0)
			continue; /* avx512f stands for the family */
		size_t need = strlen(features[i].name) + (i ? 1 : 0);
		if (off + need + sizeof(" ...") > sizeof(known))
			break;
		off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s", i ? " " : "", features[i].name);
	}
	if (i < NFEATURES)
		snprintf(known + off, sizeof(known) - off, " ...");
	return err_set(EINVAL, "unknown CPU feature '%.*s' in --cpu-features (known: %s)",
		       (int)(len > 64 ? 64 : len), name, known);
}

int cpuid_parse_features(const char *spec, struct cpuid_hide *out)
{
	memset(out, 0, sizeof(*out));
	if (!spec)
		return 0;
	const char *p = spec;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *item = p;
		p = end ? end + 1 : p + len;
		while (len && (*item == ' ' || *item == '\t'))
			item++, len--;
		while (len && (item[len - 1] == ' ' || item[len - 1] == '\t'))
			len--;
		if (len == 0)
			continue; /* "a,,b" or a trailing comma */
		if (item[0] == '-') {
			const struct cpu_feature *f = feature_by_name(item + 1, len - 1);
			if (!f)
				return unknown_feature(item + 1, len - 1);
			int r = hide_add(out, f);
			if (r < 0)
				return r;
			continue;
		}
		if (item[0] == '+')
			return err_set(EINVAL, "--cpu-features: '%.*s': adding CPU features is not supported, only hiding ('-name')",
				       (int)(len > 64 ? 64 : len), item);
		if (len == strlen("emulator-safe") && memcmp(item, "emulator-safe", len) == 0) {
			for (size_t i = 0; i < sizeof(preset_emulator_safe) / sizeof(preset_emulator_safe[0]); i++) {
				const struct cpu_feature *f = feature_by_name(preset_emulator_safe[i],
									      strlen(preset_emulator_safe[i]));
				int r = f ? hide_add(out, f) : -EINVAL; /* preset names are all in the table */
				if (r < 0)
					return r;
			}
			continue;
		}
		if (feature_by_name(item, len))
			return err_set(EINVAL, "--cpu-features: '%.*s': write '-%.*s' to hide it (presets: emulator-safe)",
				       (int)len, item, (int)len, item);
		return err_set(EINVAL, "--cpu-features: unknown preset '%.*s' (presets: emulator-safe; features are hidden with '-name')",
			       (int)(len > 64 ? 64 : len), item);
	}
	return 0;
}

/* ---- adjusting ---- */

static bool entry_matches(const struct kvm_cpuid_entry2 *e, uint32_t leaf, uint32_t subleaf)
{
	if (e->function != leaf)
		return false;
	return !(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == subleaf;
}

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t subleaf)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (entry_matches(&c->entries[i], leaf, subleaf))
			return &c->entries[i];
	return NULL;
}

static uint32_t *entry_reg(struct kvm_cpuid_entry2 *e, unsigned reg)
{
	switch (reg) {
	case EAX: return &e->eax;
	case EBX: return &e->ebx;
	case ECX: return &e->ecx;
	default: return &e->edx;
	}
}

static void clear_bit_everywhere(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t subleaf, unsigned reg, unsigned bit)
{
	if (reg > EDX || bit > 31)
		return;
	for (uint32_t i = 0; i < c->nent; i++)
		if (entry_matches(&c->entries[i], leaf, subleaf))
			*entry_reg(&c->entries[i], reg) &= ~(1u << bit);
}

/* Bits of APIC ID needed to number ncpus cores: ceil(log2(ncpus)). */
static unsigned id_bits(unsigned ncpus)
{
	unsigned b = 0;
	while (b < 31 && (1u << b) < ncpus)
		b++;
	return b;
}

/* Leaves 0xb / 0x1f: SMT level (1 thread), core level (ncpus cores), then invalid.
 * Rewrites the subleaves present (cpuid_add_topology_leaves provides 0..2). */
static void set_ext_topology(struct kvm_cpuid2 *c, uint32_t leaf, unsigned index, unsigned ncpus)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != leaf)
			continue;
		e->flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		e->edx = index; /* x2APIC ID, in every subleaf */
		if (e->index == 0) {
			e->eax = 0;
			e->ebx = 1;
			e->ecx = 0 | 1u << 8;
		} else if (e->index == 1) {
			e->eax = id_bits(ncpus);
			e->ebx = ncpus;
			e->ecx = 1 | 2u << 8;
		} else {
			e->eax = 0;
			e->ebx = 0;
			e->ecx = e->index & 0xff; /* level type 0: invalid, enumeration ends */
		}
	}
}

/* Cache sharing in leaf 4 (Intel) and 0x8000001d (AMD): L1/L2 private to the
 * core, L3 shared by all vCPUs. */
static void set_cache_sharing(struct kvm_cpuid2 *c, uint32_t leaf, unsigned ncpus)
{
	unsigned cores = ncpus > 64 ? 64 : ncpus;
	unsigned l3share = ncpus > 4096 ? 4096 : ncpus;
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != leaf || (e->eax & 0x1f) == 0)
			continue; /* type 0: no more caches */
		unsigned level = (e->eax >> 5) & 7;
		uint32_t share = level >= 3 ? l3share - 1 : 0;
		e->eax = (e->eax & 0x3fff) | share << 14;
		if (leaf == 4)
			e->eax |= (uint32_t)(cores - 1) << 26;
	}
}

/* Hide one feature plus, transitively, everything in the table that depends on it. */
static void hide_with_dependents(struct kvm_cpuid2 *c, const struct cpu_feature *f, int depth)
{
	clear_bit_everywhere(c, f->leaf, f->subleaf, f->reg, f->bit);
	if (depth > 8)
		return; /* the table is acyclic and shallow; this is a guard */
	for (size_t i = 0; i < NFEATURES; i++)
		if (features[i].dep && strcmp(features[i].dep, f->name) == 0)
			hide_with_dependents(c, &features[i], depth + 1);
	if (strcmp(f->name, "xsave") == 0) {
		/* Without XSAVE leaf 0xd means nothing; zero it like real CPUs report an
		 * absent leaf so nothing sizes an XSAVE area from it. */
		for (uint32_t i = 0; i < c->nent; i++)
			if (c->entries[i].function == 0xd)
				c->entries[i].eax = c->entries[i].ebx = c->entries[i].ecx = c->entries[i].edx = 0;
	}
}

static void apply_hide(struct kvm_cpuid2 *c, const struct cpuid_hide *hide)
{
	unsigned n = hide->n;
	if (n > sizeof(hide->item) / sizeof(hide->item[0]))
		n = sizeof(hide->item) / sizeof(hide->item[0]);
	for (unsigned i = 0; i < n; i++) {
		const struct cpu_feature *f = NULL;
		for (size_t k = 0; k < NFEATURES && !f; k++)
			if (features[k].leaf == hide->item[i].leaf && features[k].subleaf == hide->item[i].subleaf &&
			    features[k].reg == hide->item[i].reg && features[k].bit == hide->item[i].bit)
				f = &features[k];
		if (f)
			hide_with_dependents(c, f, 0);
		else
			clear_bit_everywhere(c, hide->item[i].leaf, hide->item[i].subleaf, hide->item[i].reg,
					     hide->item[i].bit);
	}
}

void cpuid_adjust(struct kvm_cpuid2 *c, unsigned index, unsigned ncpus, const struct cpuid_hide *hide)
{
	if (ncpus == 0)
		ncpus = 1;
	struct kvm_cpuid_entry2 *e;

	if ((e = find_entry(c, 1, 0))) {
		unsigned logical = ncpus > 255 ? 255 : ncpus;
		e->ebx = (e->ebx & 0xffff) | (uint32_t)logical << 16 | (index & 0xff) << 24;
		if (ncpus > 1)
			e->edx |= 1u << 28; /* HTT: EBX[23:16] is valid */
		else
			e->edx &= ~(1u << 28);
		e->ecx |= 1u << 31; /* running under a hypervisor */
	}
	set_cache_sharing(c, 4, ncpus);
	set_cache_sharing(c, 0x8000001d, ncpus);
	set_ext_topology(c, 0xb, index, ncpus);
	set_ext_topology(c, 0x1f, index, ncpus);

	if ((e = find_entry(c, 0x80000008, 0))) {
		/* NC = cores - 1, ApicIdSize = bits of APIC ID that number the cores */
		e->ecx = (e->ecx & ~0xf0ffu) | ((ncpus - 1) & 0xff) | id_bits(ncpus) << 12;
	}
	if ((e = find_entry(c, 0x8000001e, 0))) {
		/* AMD extended APIC ID, core ID, 1 thread per core; node 0 of 1 */
		e->eax = index;
		e->ebx = index & 0xff;
		e->ecx = 0;
	}
	/* Leaves 0x40000000/1 (KVM signature, paravirt features) are kept as KVM gave them. */
	if (hide)
		apply_hide(c, hide);
}

static bool has_subleaf(const struct kvm_cpuid2 *c, uint32_t leaf, uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == leaf && c->entries[i].index == sub)
			return true;
	return false;
}

int cpuid_add_topology_leaves(struct kvm_cpuid2 **cp)
{
	struct kvm_cpuid2 *c = *cp;
	uint32_t max_basic = 0;
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0)
			max_basic = c->entries[i].eax;
	/* 0xb is how Linux finds the topology: provide it whenever the basic range
	 * covers it. 0x1f only when KVM offers it (its presence changes how Linux
	 * reads the topology). */
	bool want_0x1f = has_subleaf(c, 0x1f, 0);
	unsigned missing = 0;
	for (uint32_t sub = 0; sub < 3; sub++) {
		missing += max_basic >= 0xb && !has_subleaf(c, 0xb, sub);
		missing += want_0x1f && !has_subleaf(c, 0x1f, sub);
	}
	if (!missing)
		return 0;
	c = realloc(c, sizeof(*c) + (size_t)(c->nent + missing) * sizeof(c->entries[0]));
	if (!c)
		return err_set(ENOMEM, "CPUID: out of memory");
	*cp = c;
	for (uint32_t sub = 0; sub < 3; sub++) {
		static const uint32_t leaves[2] = { 0xb, 0x1f };
		for (unsigned k = 0; k < 2; k++) {
			if (leaves[k] == 0xb ? max_basic < 0xb : !want_0x1f)
				continue;
			if (has_subleaf(c, leaves[k], sub))
				continue;
			struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
			memset(e, 0, sizeof(*e));
			e->function = leaves[k];
			e->index = sub;
			e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		}
	}
	return 0;
}

int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out)
{
	*out = NULL;
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
		if (!c)
			return err_set(ENOMEM, "KVM_GET_SUPPORTED_CPUID: out of memory");
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			int r = cpuid_add_topology_leaves(&c);
			if (r < 0) {
				free(c);
				return r;
			}
			*out = c;
			return 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG)
			return err_set(e, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
	}
	return err_set(E2BIG, "KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}
