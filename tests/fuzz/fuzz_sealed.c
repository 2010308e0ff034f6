/* libFuzzer target for sealed (encrypted suspend) files. The first input byte
 * picks a mode:
 *   0: the rest is a whole file, opened with a fixed raw key (header parsing,
 *      bounds, authentication failure paths);
 *   1: the rest is decrypted, decompressed plaintext: the record frame parser;
 *   2: the rest is the zstd stream inside the chunks: decompression + parser;
 *   3: the rest is sealed properly with the fixed key (split into chunks at
 *      4 KiB, last one FINAL) so the full file path reaches the layers behind
 *      authentication, as a forged-but-keyed file would. Bit 2 of the mode
 *      byte picks the header's format version: 2 (the compressed stream may be
 *      several zstd frames) or 1 (one frame).
 * Records are read into a 64 KiB buffer: longer ones must be refused. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sodium.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include "services/sealed_internal.h"

#define CAP (64u << 10)
static uint8_t buf[CAP];
static const uint8_t fixed_key[SEALED_KEY_BYTES] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
static struct sealed_key *key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(0);
	if (sealed_key_from_raw(fixed_key, &key) < 0)
		abort();
	return 0;
}

static void drain(struct sealed_reader *r)
{
	uint32_t type;
	uint64_t len;
	while (sealed_read(r, &type, buf, CAP, &len) == 1)
		if (len > CAP)
			abort(); /* the cap was not enforced */
	sealed_close(r);
}

static int memfd_with(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int fd = memfd_create("fuzz_sealed", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if ((an && write(fd, a, an) != (ssize_t)an) || (bn && write(fd, b, bn) != (ssize_t)bn))
		abort();
	lseek(fd, 0, SEEK_SET);
	return fd;
}

/* Mode 3: a correctly sealed file around arbitrary compressed-stream bytes. */
static int seal_fd(const uint8_t *data, size_t n, uint32_t version)
{
	uint8_t hdr[SEALED_HDR_SIZE] = {0};
	memcpy(hdr, SEALED_MAGIC, 8);
	sealed__put32(hdr + SEALED_OFF_VERSION, version);
	sealed__put32(hdr + SEALED_OFF_FLAGS, SEALED_FLAG_ZSTD);
	sealed__put32(hdr + SEALED_OFF_CHUNK, SEALED_CHUNK_MIN);
	crypto_secretstream_xchacha20poly1305_state st;
	crypto_secretstream_xchacha20poly1305_init_push(&st, hdr + SEALED_OFF_SSHDR, fixed_key);
	size_t nchunks = n / SEALED_CHUNK_MIN + 1;
	size_t olen = SEALED_HDR_SIZE + n + nchunks * crypto_secretstream_xchacha20poly1305_ABYTES;
	uint8_t *out = malloc(olen), *p = out + SEALED_HDR_SIZE;
	memcpy(out, hdr, SEALED_HDR_SIZE);
	for (size_t i = 0; i < nchunks; i++) {
		size_t off = i * SEALED_CHUNK_MIN, len = n - off < SEALED_CHUNK_MIN ? n - off : SEALED_CHUNK_MIN;
		unsigned long long clen;
		uint8_t tag = i + 1 == nchunks ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
					       : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
		crypto_secretstream_xchacha20poly1305_push(&st, p, &clen, data + off, len, i ? NULL : hdr,
							   i ? 0 : SEALED_HDR_SIZE, tag);
		p += clen;
	}
	int fd = memfd_with(out, (size_t)(p - out), NULL, 0);
	free(out);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0] & 3;
	uint32_t version = data[0] & 4 ? SEALED_FORMAT_VERSION_MIN : SEALED_FORMAT_VERSION;
	data++;
	size--;
	struct sealed_reader *r;
	if (mode == 1 || mode == 2) {
		if (sealed__reader_from_plain(data, size, mode == 2, &r) == 0)
			drain(r);
		return 0;
	}
	int fd = mode == 0 ? memfd_with(data, size, NULL, 0) : seal_fd(data, size, version);
	if (sealed_open_fd(fd, "fuzz", key, NULL, &r) == 0)
		drain(r);
	close(fd);
	return 0;
}
