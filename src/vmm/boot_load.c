/* boot_load(): read the kernel file, detect its format and hand it to the ELF or
 * bzImage loader; plus the command-line and initrd placement both of them use. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "boot_internal.h"
#include <vmsvc/err.h>

#define PAGE 0x1000ULL

/* Open a regular file and return its size; rejects directories/devices. */
static int open_regular(const char *path, const char *what, int *fd_out, uint64_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: cannot open %s: %s", path, what, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return err_set(e, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(EINVAL, "%s: %s is not a regular file", path, what);
	}
	*fd_out = fd;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* pread exactly len bytes (the file may shrink under us: that is an error). */
static int read_all(int fd, const char *path, void *buf, uint64_t len)
{
	uint8_t *p = buf;
	uint64_t off = 0;
	while (off < len) {
		size_t chunk = len - off > (1u << 30) ? (1u << 30) : (size_t)(len - off);
		ssize_t r = pread(fd, p + off, chunk, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set(errno, "%s: read error: %s", path, strerror(errno));
		if (r == 0)
			return err_set(EIO, "%s: file shrank while reading", path);
		off += (uint64_t)r;
	}
	return 0;
}

/* The kernel file, read into memory, or for a large file (an uncompressed
 * vmlinux) mapped read-only (MAP_POPULATE: one syscall instead of a read()
 * copy; ~70 ms saved for a 50 MiB vmlinux on this host). A mapping faults with
 * SIGBUS if the file is truncated while it is loaded (a kernel rebuilt in
 * place), so files up to KERNEL_MMAP_MIN (bzImages, PVH guests) are read. */
#define KERNEL_MMAP_MIN (32ULL << 20)
struct kernel_file {
	uint8_t *data;
	size_t size;
	bool mapped;
};

static int read_kernel(const char *path, struct kernel_file *k)
{
	int fd, ret;
	uint64_t sz;
	if ((ret = open_regular(path, "kernel", &fd, &sz)) < 0)
		return ret;
	if (sz > BOOT_KERNEL_FILE_MAX) {
		close(fd);
		return err_set(EFBIG, "%s: kernel file too large (%llu MiB, max %llu MiB)", path,
			       (unsigned long long)(sz >> 20), BOOT_KERNEL_FILE_MAX >> 20);
	}
	k->size = sz;
	k->mapped = false;
	if (sz > KERNEL_MMAP_MIN) {
		void *p = mmap(NULL, sz, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (p != MAP_FAILED) {
			close(fd);
			k->data = p;
			k->mapped = true;
			return 0;
		}
	}
	k->data = malloc(sz ? sz : 1);
	if (!k->data) {
		close(fd);
		return err_set(ENOMEM, "%s: out of memory reading kernel", path);
	}
	ret = read_all(fd, path, k->data, sz);
	close(fd);
	if (ret < 0) {
		free(k->data);
		k->data = NULL;
	}
	return ret;
}

static void release_kernel(struct kernel_file *k)
{
	if (k->mapped)
		munmap(k->data, k->size);
	else
		free(k->data);
	k->data = NULL;
}

uint64_t boot_low_ram_end(const struct guest_mem *mem)
{
	for (unsigned i = 0; i < mem->nregions && i < MEM_MAX_REGIONS; i++)
		if (mem->region[i].gpa == 0)
			return mem->region[i].size;
	return 0;
}

int boot_place_cmdline(struct guest_mem *mem, const struct boot_request *req, uint64_t max_len, uint64_t *len_out)
{
	const char *cmd = req->cmdline ? req->cmdline : "";
	size_t len = strlen(cmd);
	if (max_len > BOOT_CMDLINE_MAX - 1)
		max_len = BOOT_CMDLINE_MAX - 1;
	if (len > max_len)
		return err_set(E2BIG, "%s: command line too long (%zu bytes, this kernel accepts at most %llu)",
			       req->kernel_path, len, (unsigned long long)max_len);
	if (mem_write(mem, BOOT_CMDLINE_ADDR, cmd, len + 1) < 0)
		return err_set(ENOMEM, "guest RAM too small for the command line at 0x%llx", BOOT_CMDLINE_ADDR);
	*len_out = len;
	return 0;
}

int boot_place_initrd(struct guest_mem *mem, const struct boot_request *req, uint64_t lo, uint64_t hi,
		      uint64_t *addr, uint64_t *size)
{
	*addr = *size = 0;
	if (!req->initrd_path)
		return 0;
	const char *path = req->initrd_path;
	int fd, ret;
	uint64_t sz;
	if ((ret = open_regular(path, "initrd", &fd, &sz)) < 0)
		return ret;
	if (sz == 0) {
		close(fd);
		return err_set(EINVAL, "%s: initrd is empty", path);
	}
	uint64_t ram_end = boot_low_ram_end(mem);
	if (hi > ram_end)
		hi = ram_end;
	lo = (lo + PAGE - 1) & ~(PAGE - 1);
	if (lo < BOOT_LOW_END)
		lo = BOOT_LOW_END;
	uint64_t at = hi > sz ? (hi - sz) & ~(PAGE - 1) : 0;
	if (hi <= sz || at < lo) {
		close(fd);
		return err_set(ENOSPC,
			       "%s: initrd (%llu KiB) does not fit in guest RAM between the kernel end 0x%llx and 0x%llx",
			       path, (unsigned long long)(sz >> 10), (unsigned long long)lo, (unsigned long long)hi);
	}
	void *dst = gpa_to_hva(mem, at, sz);
	if (!dst) {
		close(fd);
		return err_set(EFAULT, "%s: initrd range 0x%llx+0x%llx is not guest RAM", path,
			       (unsigned long long)at, (unsigned long long)sz);
	}
	/* Read straight into guest RAM: initrds can be large. */
	ret = read_all(fd, path, dst, sz);
	close(fd);
	if (ret < 0)
		return ret;
	*addr = at;
	*size = sz;
	return 0;
}

static bool is_elf(const uint8_t *p, size_t n)
{
	return n >= 4 && p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F';
}

static bool is_bzimage(const uint8_t *p, size_t n)
{
	return n >= HDR_HEADER + 4 && memcmp(p + HDR_HEADER, "HdrS", 4) == 0;
}

int boot_load(struct guest_mem *mem, const struct boot_request *req, struct boot_entry *out)
{
	struct kernel_file k = { 0 };
	int ret;
	memset(out, 0, sizeof(*out));
	if (!req || !req->kernel_path)
		return err_set(EINVAL, "no kernel given");
	if ((ret = read_kernel(req->kernel_path, &k)) < 0)
		return ret;
	if (k.size == 0)
		ret = err_set(ENOEXEC, "%s: not a kernel image (empty file)", req->kernel_path);
	else if (is_elf(k.data, k.size))
		ret = boot_elf_kernel(mem, req, k.data, k.size, out);
	else if (is_bzimage(k.data, k.size))
		ret = boot_bzimage(mem, req, k.data, k.size, out);
	else
		ret = err_set(ENOEXEC, "%s: not a kernel image (no bzImage header, not ELF)", req->kernel_path);
	release_kernel(&k);
	return ret;
}
