/* Host-side decompression of bzImage payloads. Decompressing in the guest costs
 * minutes under an emulating KVM; on the host it is milliseconds.
 * Formats as the kernel build produces them (scripts/Makefile.lib): each stream is
 * followed by a 4-byte little-endian decompressed size, which we ignore (every
 * decoder stops at the end of its first stream). lz4 is the *legacy* frame:
 * magic 0x184c2102, then blocks of { u32 LE compressed size, data } of <= 8 MiB.
 * The output never grows beyond `limit` (decompression bombs). */
#include <errno.h>
#include <stdlib.h>
#include "boot_internal.h"
#include <vmsvc/err.h>
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif
#ifdef HAVE_LZMA
#include <lzma.h>
#endif
#ifdef HAVE_LZ4
#include <lz4.h>
#endif
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

enum boot_comp boot_comp_detect(const uint8_t *p, size_t n)
{
	static const struct { enum boot_comp c; uint8_t len; uint8_t magic[6]; } magics[] = {
		{ COMP_GZIP, 2, { 0x1f, 0x8b } },
		{ COMP_XZ, 6, { 0xfd, '7', 'z', 'X', 'Z', 0x00 } },
		{ COMP_LZ4, 4, { 0x02, 0x21, 0x4c, 0x18 } },
		{ COMP_ZSTD, 4, { 0x28, 0xb5, 0x2f, 0xfd } },
		{ COMP_BZIP2, 3, { 'B', 'Z', 'h' } },
		{ COMP_LZO, 4, { 0x89, 'L', 'Z', 'O' } },
		{ COMP_LZMA, 3, { 0x5d, 0x00, 0x00 } },
	};
	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++)
		if (n >= magics[i].len && memcmp(p, magics[i].magic, magics[i].len) == 0)
			return magics[i].c;
	return COMP_UNKNOWN;
}

const char *boot_comp_name(enum boot_comp c)
{
	switch (c) {
	case COMP_GZIP: return "gzip";
	case COMP_XZ: return "xz";
	case COMP_LZ4: return "lz4";
	case COMP_ZSTD: return "zstd";
	case COMP_BZIP2: return "bzip2";
	case COMP_LZMA: return "lzma";
	case COMP_LZO: return "lzo";
	default: return "unknown";
	}
}

/* Growable output; capacity never exceeds limit + 1 so "exactly limit" fits and
 * "more than limit" is detectable. */
struct outbuf {
	uint8_t *p;
	size_t len, cap, limit;
};

__attribute__((unused)) static int ob_reserve(struct outbuf *o, size_t hint)
{
	if (o->cap > o->len)
		return 0;
	size_t hard = o->limit + 1;
	if (o->cap >= hard)
		return err_set(EFBIG, "decompressed payload exceeds the %zu MiB limit", o->limit >> 20);
	size_t n = o->cap ? o->cap * 2 : (hint ? hint : (4u << 20));
	if (n < o->cap || n > hard)
		n = hard;
	uint8_t *p = realloc(o->p, n);
	if (!p)
		return err_set(ENOMEM, "out of memory decompressing the kernel (%zu MiB)", n >> 20);
	o->p = p;
	o->cap = n;
	return 0;
}

#ifdef HAVE_ZLIB
static int gunzip(const uint8_t *in, size_t n, struct outbuf *o)
{
	z_stream s;
	memset(&s, 0, sizeof(s));
	if (n > UINT32_MAX || inflateInit2(&s, 16 + MAX_WBITS) != Z_OK)
		return err_set(EINVAL, "gzip decoder init failed");
	s.next_in = (Bytef *)in;
	s.avail_in = (uInt)n;
	int ret = 0;
	for (;;) {
		if ((ret = ob_reserve(o, n * 4)) < 0)
			break;
		size_t room = o->cap - o->len;
		s.next_out = o->p + o->len;
		s.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
		uInt before = s.avail_out;
		int z = inflate(&s, Z_NO_FLUSH);
		o->len += before - s.avail_out;
		if (z == Z_STREAM_END) {
			ret = 0;
			break;
		}
		if (z == Z_BUF_ERROR && s.avail_in == 0) {
			ret = err_set(EINVAL, "gzip payload is truncated");
			break;
		}
		if (z != Z_OK && z != Z_BUF_ERROR) {
			ret = err_set(EINVAL, "gzip payload is corrupt (%s)", s.msg ? s.msg : "inflate error");
			break;
		}
		if (s.avail_in == 0 && s.avail_out != 0) {
			ret = err_set(EINVAL, "gzip payload is truncated");
			break;
		}
	}
	inflateEnd(&s);
	return ret;
}
#endif

#ifdef HAVE_LZMA
static int unxz(const uint8_t *in, size_t n, struct outbuf *o)
{
	lzma_stream s = LZMA_STREAM_INIT;
	/* Single stream only (no LZMA_CONCATENATED): the size trailer follows it. */
	if (lzma_stream_decoder(&s, 256u << 20, 0) != LZMA_OK)
		return err_set(EINVAL, "xz decoder init failed");
	s.next_in = in;
	s.avail_in = n;
	int ret = 0;
	for (;;) {
		if ((ret = ob_reserve(o, n * 4)) < 0)
			break;
		s.next_out = o->p + o->len;
		s.avail_out = o->cap - o->len;
		size_t before = s.avail_out;
		lzma_ret r = lzma_code(&s, LZMA_FINISH);
		o->len += before - s.avail_out;
		if (r == LZMA_STREAM_END) {
			ret = 0;
			break;
		}
		if (r == LZMA_OK)
			continue;
		ret = err_set(EINVAL, "xz payload is %s (liblzma error %d)",
			      r == LZMA_BUF_ERROR ? "truncated" : "corrupt", (int)r);
		break;
	}
	lzma_end(&s);
	return ret;
}
#endif

#ifdef HAVE_ZSTD
static int unzstd(const uint8_t *in, size_t n, struct outbuf *o)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d)
		return err_set(ENOMEM, "zstd decoder init failed");
	ZSTD_inBuffer ib = { in, n, 0 };
	int ret = 0;
	for (;;) {
		if ((ret = ob_reserve(o, n * 4)) < 0)
			break;
		ZSTD_outBuffer ob = { o->p + o->len, o->cap - o->len, 0 };
		size_t r = ZSTD_decompressStream(d, &ob, &ib);
		o->len += ob.pos;
		if (ZSTD_isError(r)) {
			ret = err_set(EINVAL, "zstd payload is corrupt (%s)", ZSTD_getErrorName(r));
			break;
		}
		if (r == 0) /* frame complete */
			break;
		if (ib.pos == ib.size && ob.pos < ob.size) {
			ret = err_set(EINVAL, "zstd payload is truncated");
			break;
		}
	}
	ZSTD_freeDCtx(d);
	return ret;
}
#endif

#ifdef HAVE_LZ4
#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)
static int unlz4_legacy(const uint8_t *in, size_t n, struct outbuf *o)
{
	size_t off = 4; /* magic, checked by boot_comp_detect() */
	int ret;
	if (n < 4)
		return err_set(EINVAL, "lz4 payload is truncated");
	while (n - off >= 4) {
		uint32_t csize = get_le32(in + off);
		if (csize == LZ4_LEGACY_MAGIC) { /* concatenated legacy frames */
			off += 4;
			continue;
		}
		/* Exactly 4 bytes left after some output: the kernel's size trailer. */
		if (n - off == 4 && o->len)
			break;
		off += 4;
		if (csize == 0 || csize > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK) || csize > n - off)
			return err_set(EINVAL, "lz4 payload is %s (block of %u bytes, %zu left)",
				       csize > n - off ? "truncated" : "corrupt", csize, n - off);
		/* Make room for a whole block, up to the limit. */
		while (o->cap - o->len < LZ4_LEGACY_BLOCK && o->cap <= o->limit) {
			size_t keep = o->len;
			o->len = o->cap; /* force ob_reserve to grow */
			ret = ob_reserve(o, LZ4_LEGACY_BLOCK * 2);
			o->len = keep;
			if (ret < 0)
				return ret;
		}
		size_t room = o->cap - o->len;
		if (room > LZ4_LEGACY_BLOCK)
			room = LZ4_LEGACY_BLOCK;
		int r = LZ4_decompress_safe((const char *)in + off, (char *)o->p + o->len, (int)csize, (int)room);
		if (r < 0) {
			if (room < LZ4_LEGACY_BLOCK && o->cap > o->limit)
				return err_set(EFBIG, "decompressed payload exceeds the %zu MiB limit (or is corrupt)",
					       o->limit >> 20);
			return err_set(EINVAL, "lz4 payload is corrupt");
		}
		o->len += (size_t)r;
		off += csize;
	}
	if (!o->len)
		return err_set(EINVAL, "lz4 payload is empty");
	return 0;
}
#endif

int boot_decompress(enum boot_comp c, const uint8_t *in, size_t n, size_t limit, uint8_t **out, size_t *outlen)
{
	struct outbuf o = { .limit = limit };
	int ret = -ENOTSUP;
	*out = NULL;
	*outlen = 0;
	switch (c) {
#ifdef HAVE_ZLIB
	case COMP_GZIP: ret = gunzip(in, n, &o); break;
#endif
#ifdef HAVE_LZMA
	case COMP_XZ: ret = unxz(in, n, &o); break;
#endif
#ifdef HAVE_LZ4
	case COMP_LZ4: ret = unlz4_legacy(in, n, &o); break;
#endif
#ifdef HAVE_ZSTD
	case COMP_ZSTD: ret = unzstd(in, n, &o); break;
#endif
	default:
		ret = err_set(ENOTSUP, "no host decoder for %s payloads", boot_comp_name(c));
	}
	if (ret == 0 && o.len > limit)
		ret = err_set(EFBIG, "decompressed payload exceeds the %zu MiB limit", limit >> 20);
	if (ret < 0) {
		free(o.p);
		return ret;
	}
	*out = o.p;
	*outlen = o.len;
	return 0;
}
