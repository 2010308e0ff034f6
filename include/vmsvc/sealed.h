/* Sealed files: the encrypted, compressed, authenticated container behind
 * `vmsvc suspend` / `vmsvc resume`. Independent of VMs: a sealed file is a
 * sequence of typed records (type, bytes) written once, in order, and read back
 * in the same order. Format and guarantees: docs/suspend-format.md.
 *
 * Writing is atomic: data goes to an unnamed (O_TMPFILE) or "<path>.tmp.XXXXXX"
 * file in the target's directory and only appears at <path> after
 * sealed_commit() has fsync'ed it. Reading authenticates as it goes; a reader
 * must treat everything it got as untrusted until sealed_close() returns 0, or
 * call sealed_verify() first. All functions return 0 (or 1 where noted) on
 * success and a negative errno with a one-line err_msg() on failure. */
#ifndef VMSVC_SEALED_H
#define VMSVC_SEALED_H
#include <stddef.h>
#include <stdint.h>

#define SEALED_KEY_BYTES 32
/* Written: 2 (the compressed stream may be several zstd frames). Read: 1 and 2. */
#define SEALED_FORMAT_VERSION 2
#define SEALED_FORMAT_VERSION_MIN 1

/* ---- Keys: kept in sodium_malloc'd (guarded, mlock'd) memory, wiped on free. ---- */
struct sealed_key;
/* A passphrase file: its bytes minus one trailing newline ("\n" or "\r\n"). */
int sealed_key_from_passphrase_file(const char *path, struct sealed_key **out);
/* A key file: exactly SEALED_KEY_BYTES raw bytes, else an error. */
int sealed_key_from_key_file(const char *path, struct sealed_key **out);
/* The same from memory (tests, API callers); the input is copied. */
int sealed_key_from_passphrase(const void *pass, size_t len, struct sealed_key **out);
int sealed_key_from_raw(const uint8_t key[SEALED_KEY_BYTES], struct sealed_key **out);
void sealed_key_free(struct sealed_key *key);

/* Progress: done/total bytes. Writer: plaintext bytes handed to sealed_write
 * against sealed_opts.progress_total (0 if the caller did not say). Reader:
 * file bytes consumed against the file size. Called about once per chunk. */
typedef void (*sealed_progress_fn)(uint64_t done, uint64_t total, void *arg);

struct sealed_opts {
	/* Argon2id cost for passphrase keys; 0 = defaults (3 passes, 256 MiB). */
	uint64_t kdf_opslimit, kdf_memlimit;
	int zstd_level;            /* 0 = default (-4); -7..-1 = zstd --fast levels (less CPU, bigger file) */
	int zstd_workers;          /* compressing threads: 0 = auto (one per CPU up to 4; none on 1 CPU), -1 = none */
	uint32_t chunk_size;       /* encrypted chunk payload; 0 = 1 MiB */
	sealed_progress_fn progress;
	void *progress_arg;
	uint64_t progress_total;
	/* Reader: buffers given to sealed_read are already zero (e.g. fresh mmap), so
	 * zero runs are skipped rather than written, keeping guest memory sparse. */
	int buf_prezeroed;
	/* Reader: buffers are fresh shared mappings (guest RAM memfd): a helper thread
	 * populates the pages of each data run ahead of the decompressor. */
	int populate;
};

/* ---- Writer ---- */
struct sealed_writer;
int sealed_create(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		  struct sealed_writer **out);
/* Append one record. All-zero 4 KiB pages inside data are stored as runs. */
int sealed_write(struct sealed_writer *w, uint32_t type, const void *data, uint64_t len);
/* The same for data that is a MAP_SHARED mapping of fd at fd_off (guest RAM):
 * holes of fd (SEEK_DATA/SEEK_HOLE) are stored as zero runs without being read.
 * The data is compressed in the background straight from where it is: it must
 * stay mapped and unchanged until sealed_commit or sealed_abort has returned
 * (sealed_write copies what it needs before returning). fd = -1: no file, every
 * page is scanned.
 * fd = SEALED_FD_ANON: data is page-aligned anonymous memory; pages that are not
 * resident (mincore: never touched) are stored as zero runs without being read. */
#define SEALED_FD_ANON (-2)
int sealed_write_mapped(struct sealed_writer *w, uint32_t type, const void *data, uint64_t len, int fd,
			uint64_t fd_off);
/* Change opts.progress_total (when the total is known only after creation). */
void sealed_set_progress_total(struct sealed_writer *w, uint64_t total);
/* Finish, fsync, move into place at path, fsync the directory; frees w. */
int sealed_commit(struct sealed_writer *w);
/* Drop everything; nothing appears at path; frees w. NULL is fine. */
void sealed_abort(struct sealed_writer *w);

/* ---- Reader ---- */
struct sealed_reader;
/* Checks magic, version, KDF parameters; derives the key; authenticates the
 * first chunk (so a wrong key fails here). opts: only progress and buf_prezeroed are used. */
int sealed_open(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		struct sealed_reader **out);
/* The same on an open file descriptor (dup'ed; name is used in messages). */
int sealed_open_fd(int fd, const char *name, const struct sealed_key *key,
		   const struct sealed_opts *opts, struct sealed_reader **out);
/* Next record's header: 1 = a record (read its body next), 0 = verified end of file. */
int sealed_next(struct sealed_reader *r, uint32_t *type, uint64_t *len);
/* The body of the record announced by sealed_next; len must equal its length. */
int sealed_read_body(struct sealed_reader *r, void *buf, uint64_t len);
/* sealed_next + sealed_read_body: 1 = record in buf[0..*len), 0 = verified end.
 * A record longer than cap is an error (the file is hostile or not ours). */
int sealed_read(struct sealed_reader *r, uint32_t *type, void *buf, uint64_t cap, uint64_t *len);
/* 0 only if every byte of the file was read and authenticated (sealed_next
 * returned 0); otherwise an error. Always frees r. */
int sealed_close(struct sealed_reader *r);

/* Authenticate and parse the whole file in one pass without keeping any
 * plaintext: lets resume reject a bad file before touching anything, at the
 * cost of reading (and, for passphrases, deriving the key) twice. */
int sealed_verify(const char *path, const struct sealed_key *key, const struct sealed_opts *opts);

/* Remove temp files "<path>.tmp.*" left by killed writers (those no live
 * writer holds a lock on). Returns how many were removed. */
int sealed_clean_temps(const char *path);

#endif
