/* Sealed-file keys: passphrase or raw key, held in sodium_malloc'd memory
 * (guard pages, mlock'd, wiped on free). Key bytes are never logged. */
#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include <vmsvc/err.h>
#include "services/sealed_internal.h"

#define PASSPHRASE_MAX 4096

int sealed__sodium_ready(void)
{
	if (sodium_init() < 0)
		return err_set(EIO, "libsodium failed to initialise");
	return 0;
}

int sealed__lock_failures;

void *sealed__secure_alloc(size_t size)
{
	/* sodium_malloc puts the block right before a guard page, so only sizes that
	 * are a multiple of the alignment come back aligned. */
	size = (size + 15) & ~(size_t)15;
	void *p = sodium_malloc(size);
	/* sodium_malloc also mlocks, but ignores failure (RLIMIT_MEMLOCK): lock again
	 * and say so when it does not work. sodium_free unlocks and wipes. */
	if (p && sodium_mlock(p, size) != 0 &&
	    __atomic_fetch_add(&sealed__lock_failures, 1, __ATOMIC_RELAXED) == 0)
		log_warn("key material could not be locked in memory (%s): it may be swapped out; "
			 "raise the locked-memory limit (ulimit -l)", strerror(errno));
	return p;
}

static int key_alloc(int kind, size_t len, struct sealed_key **out)
{
	struct sealed_key *k = sealed__secure_alloc(sizeof(struct sealed_key) + len);
	if (!k)
		return err_set(ENOMEM, "out of memory for key material");
	k->kind = kind;
	k->len = len;
	*out = k;
	return 0;
}

void sealed_key_free(struct sealed_key *key)
{
	if (key)
		sodium_free(key); /* sodium_free wipes before unmapping */
}

int sealed_key_from_raw(const uint8_t raw[SEALED_KEY_BYTES], struct sealed_key **out)
{
	int rc = sealed__sodium_ready();
	if (rc < 0 || (rc = key_alloc(SEALED_KEY_RAW, SEALED_KEY_BYTES, out)) < 0)
		return rc;
	memcpy((*out)->bytes, raw, SEALED_KEY_BYTES);
	return 0;
}

int sealed_key_from_passphrase(const void *pass, size_t len, struct sealed_key **out)
{
	int rc = sealed__sodium_ready();
	if (rc < 0)
		return rc;
	if (len == 0)
		return err_set(EINVAL, "empty passphrase");
	if (len > PASSPHRASE_MAX)
		return err_set(EINVAL, "passphrase longer than %d bytes", PASSPHRASE_MAX);
	if ((rc = key_alloc(SEALED_KEY_PASS, len, out)) < 0)
		return rc;
	memcpy((*out)->bytes, pass, len);
	return 0;
}

/* Read at most cap bytes of path straight into secure memory (no stdio buffers
 * holding copies). *len = bytes read; reading cap bytes means "too long". */
static int read_secret_file(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", path, strerror(errno));
	size_t got = 0;
	while (got < cap) {
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			return err_set(e, "%s: %s", path, strerror(e));
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return 0;
}

int sealed_key_from_key_file(const char *path, struct sealed_key **out)
{
	struct sealed_key *k = NULL;
	size_t len;
	int rc = sealed__sodium_ready();
	if (rc < 0 || (rc = key_alloc(SEALED_KEY_RAW, SEALED_KEY_BYTES + 1, &k)) < 0)
		return rc;
	rc = read_secret_file(path, k->bytes, SEALED_KEY_BYTES + 1, &len);
	if (rc == 0 && len != SEALED_KEY_BYTES)
		rc = err_set(EINVAL, "%s: a key file must hold exactly %d raw bytes (%s)", path,
			     SEALED_KEY_BYTES, len > SEALED_KEY_BYTES ? "it is longer" : "it is shorter");
	if (rc < 0) {
		sealed_key_free(k);
		return rc;
	}
	k->len = SEALED_KEY_BYTES;
	*out = k;
	return 0;
}

int sealed_key_from_passphrase_file(const char *path, struct sealed_key **out)
{
	struct sealed_key *k = NULL;
	size_t len;
	int rc = sealed__sodium_ready();
	if (rc < 0 || (rc = key_alloc(SEALED_KEY_PASS, PASSPHRASE_MAX + 1, &k)) < 0)
		return rc;
	rc = read_secret_file(path, k->bytes, PASSPHRASE_MAX + 1, &len);
	if (rc == 0) {
		if (len > PASSPHRASE_MAX)
			rc = err_set(EINVAL, "%s: passphrase longer than %d bytes", path, PASSPHRASE_MAX);
		/* One trailing newline is the editor's, not the passphrase's. */
		if (len && k->bytes[len - 1] == '\n')
			len--;
		if (len && k->bytes[len - 1] == '\r')
			len--;
		if (rc == 0 && len == 0)
			rc = err_set(EINVAL, "%s: empty passphrase", path);
	}
	if (rc < 0) {
		sealed_key_free(k);
		return rc;
	}
	k->len = len;
	*out = k;
	return 0;
}

int sealed__derive(const struct sealed_key *key, const uint8_t *hdr, uint8_t out[SEALED_KEY_BYTES])
{
	if (key->kind == SEALED_KEY_RAW) {
		memcpy(out, key->bytes, SEALED_KEY_BYTES);
		return 0;
	}
	uint64_t ops = sealed__get64(hdr + SEALED_OFF_OPSLIMIT);
	uint64_t mem = sealed__get64(hdr + SEALED_OFF_MEMLIMIT);
	if (crypto_pwhash(out, SEALED_KEY_BYTES, (const char *)key->bytes, key->len,
			  hdr + SEALED_OFF_SALT, ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
		return err_set(ENOMEM, "Argon2id key derivation failed (out of memory for %llu MiB?)",
			       (unsigned long long)(mem >> 20));
	return 0;
}
#endif
