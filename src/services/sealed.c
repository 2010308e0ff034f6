/* Sealed files: shared pieces (stale temp cleanup) and stubs for builds
 * without libsodium or libzstd. The writer, reader and keys live in
 * sealed_writer.c, sealed_reader.c and sealed_key.c. */
#include <errno.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>

#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int sealed_clean_temps(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	const char *base = slash ? slash + 1 : path;
	if (!dir)
		return err_set(ENOMEM, "out of memory");
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int e = errno;
	free(dir);
	if (dfd < 0)
		return err_set(e, "%s: cannot open its directory: %s", path, strerror(e));
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return err_set(ENOMEM, "out of memory");
	}
	size_t bl = strlen(base);
	int removed = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		/* Exactly "<base>.tmp.XXXXXX", as the writer names them. */
		if (strlen(de->d_name) != bl + 11 || strncmp(de->d_name, base, bl) != 0 ||
		    strncmp(de->d_name + bl, ".tmp.", 5) != 0)
			continue;
		int fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* A live writer holds an exclusive lock on its temp file; a dead one does not. */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dfd, de->d_name, 0) == 0)
			removed++;
		close(fd);
	}
	closedir(d);
	return removed;
}

#else /* no libsodium or no libzstd: every entry point says so */
#define NOSUP() err_set(ENOTSUP, "vmsvc was built without libsodium/libzstd: encrypted suspend unavailable")
int sealed_key_from_passphrase_file(const char *p, struct sealed_key **o) { return NOSUP(); }
int sealed_key_from_key_file(const char *p, struct sealed_key **o) { return NOSUP(); }
int sealed_key_from_passphrase(const void *p, size_t l, struct sealed_key **o) { return NOSUP(); }
int sealed_key_from_raw(const uint8_t k[SEALED_KEY_BYTES], struct sealed_key **o) { return NOSUP(); }
void sealed_key_free(struct sealed_key *k) {}
int sealed_create(const char *p, const struct sealed_key *k, const struct sealed_opts *o,
		  struct sealed_writer **w) { return NOSUP(); }
int sealed_write(struct sealed_writer *w, uint32_t t, const void *d, uint64_t l) { return NOSUP(); }
int sealed_write_mapped(struct sealed_writer *w, uint32_t t, const void *d, uint64_t l, int fd, uint64_t o)
{
	return NOSUP();
}
int sealed_commit(struct sealed_writer *w) { return NOSUP(); }
void sealed_set_progress_total(struct sealed_writer *w, uint64_t t) {}
void sealed_abort(struct sealed_writer *w) {}
int sealed_open(const char *p, const struct sealed_key *k, const struct sealed_opts *o,
		struct sealed_reader **r) { return NOSUP(); }
int sealed_open_fd(int fd, const char *n, const struct sealed_key *k, const struct sealed_opts *o,
		   struct sealed_reader **r) { return NOSUP(); }
int sealed_next(struct sealed_reader *r, uint32_t *t, uint64_t *l) { return NOSUP(); }
int sealed_read_body(struct sealed_reader *r, void *b, uint64_t l) { return NOSUP(); }
int sealed_read(struct sealed_reader *r, uint32_t *t, void *b, uint64_t c, uint64_t *l) { return NOSUP(); }
int sealed_close(struct sealed_reader *r) { return NOSUP(); }
int sealed_verify(const char *p, const struct sealed_key *k, const struct sealed_opts *o) { return NOSUP(); }
int sealed_clean_temps(const char *p) { return NOSUP(); }
#endif
