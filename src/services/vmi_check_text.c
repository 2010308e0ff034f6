/* Kernel text integrity against a baseline taken from a clean boot.
 *
 * The baseline holds one hash per function of [_stext, _etext) (ranges between
 * consecutive text symbols of kallsyms), with offsets relative to _text so a
 * different KASLR slide does not matter, plus a hash of the whole range. On
 * comparison the whole-range hash is checked first (cheap when nothing
 * changed); otherwise every function is compared and the changed ones are
 * named, the ranges coming from the baseline (not from the possibly tampered
 * kallsyms of the inspected guest).
 *
 * The baseline belongs to one boot: the decompressor relocates absolute
 * addresses in text by the KASLR slide, so a baseline from a boot with another
 * slide is refused (take it at the first inspection of each boot).
 *
 * Text is patched at boot (alternatives by CPU feature, retpolines/returns,
 * ftrace call sites turned into NOPs) and at run time (jump labels/static
 * keys, ftrace, kprobes, livepatch): a baseline is only meaningful for the
 * same kernel build booted on the same CPU model, taken when the guest is
 * known to be clean (first inspection), and a later legitimate tracing or
 * static-key change shows up as a changed function.
 *
 * File format (little-endian): struct hdr, then nfuncs struct fent. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"
#ifdef HAVE_SODIUM
#include <sodium.h>
#endif

#define MAGIC "VMITXT01"
#define HASH_LEN 16
#define MAX_TEXT (256u << 20)
#define MAX_REPORTED 64

struct hdr {
	char magic[8];
	char release[64];
	uint64_t text_off, text_len; /* _stext - _text, _etext - _stext */
	uint64_t slide;              /* KASLR slide of the boot the baseline is from */
	uint32_t nfuncs, reserved;
	uint8_t whole[HASH_LEN];
};
struct fent {
	uint32_t off, len; /* from _stext */
	uint8_t hash[HASH_LEN];
};

static void hash(const uint8_t *p, size_t len, uint8_t out[HASH_LEN])
{
#ifdef HAVE_SODIUM
	crypto_generichash(out, HASH_LEN, p, len, NULL, 0); /* BLAKE2b-128 */
#else
	/* Without libsodium: two independent FNV-1a-64 lanes. Detects accidental
	 * and naive changes, not a forger who knows the baseline. */
	uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
	for (size_t i = 0; i < len; i++) {
		a = (a ^ p[i]) * 0x100000001b3ULL;
		b = (b ^ p[i] ^ (i & 0xff)) * 0x100000001b3ULL;
	}
	memcpy(out, &a, 8);
	memcpy(out + 8, &b, 8);
#endif
}

struct text {
	uint64_t stext, etext;
	uint8_t *bytes;
};

static int read_text(const struct vmi_kernel *k, struct text *t)
{
	if (!vmi_text_bounds(k, &t->stext, &t->etext))
		return err_set(ENOENT, "no _stext/_etext in kallsyms");
	if (t->etext - t->stext > MAX_TEXT)
		return err_set(EINVAL, "kernel text of %" PRIu64 " bytes is implausible", t->etext - t->stext);
	t->bytes = malloc(t->etext - t->stext);
	if (!t->bytes)
		return err_set(ENOMEM, "out of memory for kernel text");
	int rc = vmi_kread(k, t->stext, t->bytes, t->etext - t->stext);
	if (rc < 0) {
		free(t->bytes);
		t->bytes = NULL;
	}
	return rc;
}

int vmi_text_baseline_write(const struct vmi_kernel *k, const char *path)
{
	struct text t;
	int rc = read_text(k, &t);
	if (rc < 0)
		return rc;
	size_t cap = 1024, n = 0;
	struct fent *f = malloc(cap * sizeof(*f));
	if (!f) {
		free(t.bytes);
		return err_set(ENOMEM, "out of memory");
	}
	/* Function ranges: consecutive distinct text-symbol addresses. */
	uint64_t prev = t.stext;
	for (size_t i = 0; i <= k->ks.n; i++) {
		uint64_t a = t.etext;
		if (i < k->ks.n) {
			const struct vmi_sym *s = &k->ks.sym[i];
			if ((s->type != 't' && s->type != 'T') || s->addr <= prev || s->addr >= t.etext)
				continue;
			a = s->addr;
		}
		if (a <= prev)
			continue;
		if (n == cap) {
			struct fent *g = realloc(f, 2 * cap * sizeof(*f));
			if (!g) {
				free(f);
				free(t.bytes);
				return err_set(ENOMEM, "out of memory");
			}
			f = g;
			cap *= 2;
		}
		f[n].off = (uint32_t)(prev - t.stext);
		f[n].len = (uint32_t)(a - prev);
		hash(t.bytes + f[n].off, f[n].len, f[n].hash);
		n++;
		prev = a;
	}
	struct hdr h = { .text_off = t.stext - k->text, .text_len = t.etext - t.stext, .nfuncs = (uint32_t)n,
			 .slide = k->kaslr_slide };
	memcpy(h.magic, MAGIC, 8);
	memcpy(h.release, k->release, strnlen(k->release, sizeof(h.release) - 1));
	hash(t.bytes, t.etext - t.stext, h.whole);
	free(t.bytes);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *fp = fopen(tmp, "wb");
	if (!fp) {
		free(f);
		return err_set(errno, "%s: %s", tmp, strerror(errno));
	}
	bool ok = fwrite(&h, sizeof(h), 1, fp) == 1 && fwrite(f, sizeof(*f), n, fp) == n;
	ok = (fclose(fp) == 0) && ok;
	free(f);
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		return err_set(EIO, "%s: cannot write the baseline", path);
	}
	return 0;
}

int vmi_check_text_buf(const struct vmi_kernel *k, const uint8_t *buf, size_t len, struct vmi_findings *out)
{
	struct hdr h;
	if (len < sizeof(h))
		return err_set(EINVAL, "baseline: truncated header");
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, MAGIC, 8))
		return err_set(EINVAL, "baseline: not a vmsvc kernel text baseline");
	h.release[sizeof(h.release) - 1] = 0;
	if ((len - sizeof(h)) / sizeof(struct fent) < h.nfuncs)
		return err_set(EINVAL, "baseline: %" PRIu32 " functions do not fit in %zu bytes", h.nfuncs, len);
	struct text t;
	int rc = read_text(k, &t);
	if (rc < 0)
		return vmi_finding_cannot(out, "text", err_msg());
	char rel[80];
	if (strcmp(h.release, k->release) || h.text_off != t.stext - k->text || h.text_len != t.etext - t.stext) {
		rc = err_set(EINVAL, "baseline is for kernel %s (text %" PRIu64 " bytes at _text+%#" PRIx64
				     "), this guest runs %s (text %" PRIu64 " bytes at _text+%#" PRIx64 ")",
			     vmi_printable(h.release, rel, sizeof(rel)), h.text_len, h.text_off, k->release,
			     t.etext - t.stext, t.stext - k->text);
		free(t.bytes);
		return rc;
	}
	/* Absolute addresses in text are relocated by the KASLR slide at boot,
	 * so another boot's text differs everywhere (undoing that needs the
	 * kernel's relocation table, which is gone after boot). */
	if (h.slide != k->kaslr_slide) {
		free(t.bytes);
		return err_set(EINVAL, "baseline is from another boot (KASLR slide %#" PRIx64 ", this guest %#" PRIx64
				       "): text is relocated differently; record a baseline of this boot while it is clean",
			       h.slide, k->kaslr_slide);
	}
	uint8_t whole[HASH_LEN];
	hash(t.bytes, h.text_len, whole);
	if (!memcmp(whole, h.whole, HASH_LEN)) {
		free(t.bytes);
		return 0;
	}
	size_t changed = 0, changed_bytes = 0;
	for (uint32_t i = 0; i < h.nfuncs && rc == 0; i++) {
		struct fent f;
		memcpy(&f, buf + sizeof(h) + (size_t)i * sizeof(f), sizeof(f));
		if ((uint64_t)f.off + f.len > h.text_len || !f.len)
			continue; /* not from our writer: ignore, the whole hash already differs */
		uint8_t now[HASH_LEN];
		hash(t.bytes + f.off, f.len, now);
		if (!memcmp(now, f.hash, HASH_LEN))
			continue;
		changed++;
		changed_bytes += f.len;
		if (changed > MAX_REPORTED)
			continue;
		uint64_t va = t.stext + f.off;
		const struct vmi_sym *s = vmi_ksym_at(&k->ks, va);
		char what[160];
		snprintf(what, sizeof(what), "kernel text changed: %s", s ? vmi_ksym_name(&k->ks, s) : "?");
		/* First differing byte is not known (the baseline has no bytes);
		 * show the current first 8 for the record. */
		uint8_t b[8] = { 0 };
		memcpy(b, t.bytes + f.off, f.len < 8 ? f.len : 8);
		rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "text", what,
				     "%#" PRIx64 "..%#" PRIx64 " (%" PRIu32 " bytes, _text+%#" PRIx64
				     ") differs from the baseline; now starts %02x %02x %02x %02x %02x %02x %02x %02x",
				     va, va + f.len, f.len, t.stext - k->text + f.off, b[0], b[1], b[2], b[3], b[4], b[5], b[6],
				     b[7]);
	}
	if (rc == 0)
		rc = vmi_finding_add(out, changed ? VMI_SEV_CRITICAL : VMI_SEV_WARNING, "text",
				     "kernel text differs from the baseline",
				     "%zu functions (%zu bytes) changed%s", changed, changed_bytes,
				     changed > MAX_REPORTED ? ", only the first 64 are listed" : "");
	free(t.bytes);
	return rc;
}

int vmi_check_text(const struct vmi_kernel *k, const char *path, struct vmi_findings *out)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		if (errno != ENOENT)
			return err_set(errno, "%s: %s", path, strerror(errno));
		int rc = vmi_text_baseline_write(k, path);
		if (rc < 0)
			return rc;
		return vmi_finding_add(out, VMI_SEV_INFO, "text", "kernel text baseline recorded",
				       "%s written from this image (kernel %s): later checks compare against it; it "
				       "is only valid if this guest was clean now",
				       path, k->release);
	}
	fseek(fp, 0, SEEK_END);
	long len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	if (len <= 0 || len > (64L << 20)) {
		fclose(fp);
		return err_set(EINVAL, "%s: baseline of %ld bytes is implausible", path, len);
	}
	uint8_t *buf = malloc((size_t)len);
	if (!buf || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
		free(buf);
		fclose(fp);
		return err_set(EIO, "%s: cannot read the baseline", path);
	}
	fclose(fp);
	int rc = vmi_check_text_buf(k, buf, (size_t)len, out);
	free(buf);
	return rc < 0 ? err_prefix(rc, "%s", path) : rc;
}
