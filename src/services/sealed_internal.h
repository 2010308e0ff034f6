/* Internals shared by the sealed_*.c files (see include/vmsvc/sealed.h and
 * docs/suspend-format.md). Not a contract for other code; the fuzz target and
 * unit tests use sealed__reader_from_plain to reach the record parser. */
#ifndef VMSVC_SEALED_INTERNAL_H
#define VMSVC_SEALED_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/sealed.h>

/* ---- On-disk header: 80 bytes, little-endian ---- */
#define SEALED_MAGIC "VMSVCSUS"
#define SEALED_HDR_SIZE 80
#define SEALED_OFF_VERSION 8
#define SEALED_OFF_FLAGS 12
#define SEALED_OFF_KDF 16
#define SEALED_OFF_CHUNK 20
#define SEALED_OFF_OPSLIMIT 24
#define SEALED_OFF_MEMLIMIT 32
#define SEALED_OFF_SALT 40
#define SEALED_SALT_BYTES 16
#define SEALED_OFF_SSHDR 56 /* crypto_secretstream header, 24 bytes */

#define SEALED_FLAG_ZSTD 1u /* v1: must be exactly this */
enum sealed_kdf { SEALED_KDF_RAW = 0, SEALED_KDF_ARGON2ID = 1 };

/* Reader-side sanity bounds (refuse absurd values before allocating). */
#define SEALED_OPS_MAX 16ull
#define SEALED_MEM_MAX (1ull << 30)
#define SEALED_CHUNK_MIN 4096u
#define SEALED_CHUNK_MAX (16u << 20)
#define SEALED_CHUNK_DEFAULT (1u << 20)
#define SEALED_DEFAULT_OPS 3ull
#define SEALED_DEFAULT_MEM (256ull << 20)
/* zstd --fast=4: CPU is what bounds suspend. On guest memory --fast=1 took
 * 10-25% less CPU than level 1 for a file a tenth larger; --fast=4 is another
 * ~8% faster end to end (quiet host, /dev/shm: 1.06 against 0.98 GB/s) for a
 * file another tenth larger (docs/benchmarks.md). */
#define SEALED_DEFAULT_LEVEL (-4)
/* Decompression window bound: the writer never uses more than 2^21 at levels <= 3. */
#define SEALED_ZSTD_WINDOWLOG_MAX 23

/* ---- Plaintext (inside zstd) frames: 16 bytes each, little-endian ---- */
#define SEALED_FRAME_SIZE 16
enum sealed_frame_kind {
	SEALED_FR_BEGIN = 1, /* type, len = record length; body frames follow */
	SEALED_FR_DATA = 2,  /* len bytes follow */
	SEALED_FR_ZERO = 3,  /* len zero bytes, nothing follows */
	SEALED_FR_END = 4,   /* len = number of records; must be last */
};
#define SEALED_PAGE 4096u

/* ---- Keys ---- */
enum sealed_key_kind { SEALED_KEY_RAW = 1, SEALED_KEY_PASS = 2 };
struct sealed_key {
	int kind;
	size_t len;
	uint8_t bytes[]; /* raw key or passphrase; lives in sodium_malloc'd memory */
};
/* Derive the stream key for a header (salt, limits, kdf id already filled). */
int sealed__derive(const struct sealed_key *key, const uint8_t *hdr, uint8_t out[SEALED_KEY_BYTES]);
int sealed__sodium_ready(void);
/* Key material: sodium_malloc (guard pages, no core dump) + a checked mlock;
 * free with sodium_free (wipes). sealed__lock_failures counts failed locks. */
void *sealed__secure_alloc(size_t size);
extern int sealed__lock_failures;

static inline void sealed__put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sealed__put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t sealed__get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t sealed__get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* A reader over an in-memory plaintext stream (no file, no crypto): the zstd
 * stream when compressed, else the frames themselves. Used by the fuzzer's
 * parser mode and unit tests; data must outlive the reader. */
int sealed__reader_from_plain(const void *data, size_t len, int compressed, struct sealed_reader **out);

/* Tests: read chunks on the caller's thread only (no read-ahead thread). */
extern int sealed__no_readahead;

/* Tests: behave as on a filesystem without O_TMPFILE (named temp files). */
extern int sealed__no_tmpfile;

/* Tests: the writer's piece with this 1-based number fails to compress (0: none). */
extern uint64_t sealed__fail_piece;
/* Tests: the format version the writer puts in the header (0: SEALED_FORMAT_VERSION). */
extern uint32_t sealed__write_version;
/* Writer: plaintext per zstd frame (each piece is compressed independently). */
#define SEALED_PIECE_SIZE (4u << 20)

#endif
