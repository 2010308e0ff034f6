/* Test tool: turn a QEMU dump-guest-memory ELF core of a Linux guest into a
 * vmsvc snapshot directory that `vmsvc run --restore DIR --paused` accepts, so
 * that `vmsvc inspect NAME` can be tested on a real kernel in a live VM (this
 * host cannot boot Linux fast enough under KVM: docs/linux-guest.md).
 *
 *   vmi_core2snap TEMPLATE_DIR CORE.elf OUT_DIR [--lstar HEX]
 *
 * TEMPLATE_DIR is a snapshot of any vmsvc VM with one vCPU and enough RAM
 * (the test takes one of the idle test guest): its device, VM-wide KVM and
 * vCPU state are valid for this host, so restore accepts them. Replaced:
 *  - memory: the core's RAM ranges at their physical addresses;
 *  - vCPU 0: CR0/CR3/CR4 and RIP from the core's QEMU CPU note, EFER with
 *    long mode and NX as a 64-bit Linux kernel runs;
 *  - the syscall MSRs, which QEMU's note does not carry: LSTAR, CSTAR and
 *    SYSENTER_EIP set to entry_SYSCALL_64, entry_SYSCALL_compat and
 *    entry_SYSENTER_compat as Linux programs them (found through the
 *    kernel's kallsyms), or LSTAR=HEX to simulate a hooked MSR.
 * The vCPUs of such a VM must never run (--paused): the rest of the CPU and
 * device state is the template's, not the kernel's. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#include <vmsvc/vmstate.h>

enum { T_REGS = 1, T_SREGS = 2, T_SREGS2 = 3, T_MSRS = 6 };

static int die(const char *what)
{
	fprintf(stderr, "vmi_core2snap: %s: %s\n", what, err_msg());
	return 1;
}

static int write_all(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, buf, len);
	close(fd);
	return w == (ssize_t)len ? 0 : -1;
}

static void set_msr(uint8_t *d, uint32_t n, uint32_t index, uint64_t v)
{
	for (uint32_t i = 0; i + 16 <= n; i += 16) {
		uint32_t idx;
		memcpy(&idx, d + i, 4);
		if (idx == index)
			memcpy(d + i + 8, &v, 8);
	}
}

int main(int argc, char **argv)
{
	if (argc != 4 && !(argc == 6 && !strcmp(argv[4], "--lstar"))) {
		fprintf(stderr, "usage: vmi_core2snap TEMPLATE_DIR CORE.elf OUT_DIR [--lstar HEX]\n");
		return 2;
	}
	const char *tdir = argv[1], *core = argv[2], *out = argv[3];
	char path[4096];
	snprintf(path, sizeof(path), "%s/state", tdir);
	size_t slen;
	uint8_t *state;
	if (snap_read_file(path, &state, &slen) < 0)
		return die("template");
	struct snap_header h;
	struct snap_section *sec;
	unsigned nsec;
	if (snap_parse(state, slen, path, &h, &sec, &nsec) < 0)
		return die("template");

	struct vmi_mem m;
	struct vmi_kernel k;
	if (vmi_mem_open_file(&m, core) < 0)
		return die(core);
	if (m.ncpus < 1) {
		fprintf(stderr, "vmi_core2snap: %s: no QEMU CPU note\n", core);
		return 1;
	}
	if (vmi_kernel_open(&k, &m, VMI_OPEN_NO_BTF) < 0)
		return die(core);
	uint64_t lstar = 0, cstar = 0, sysenter = 0;
	if (vmi_ksym(&k, "entry_SYSCALL_64", &lstar) < 0)
		return die(core);
	if (vmi_ksym(&k, "entry_SYSCALL_compat", &cstar) < 0)
		cstar = 0;
	if (vmi_ksym(&k, "entry_SYSENTER_compat", &sysenter) < 0)
		sysenter = 0;
	if (argc == 6)
		lstar = strtoull(argv[5], NULL, 16);

	/* vCPU 0: registers from the core. */
	bool done = false;
	for (unsigned i = 0; i < nsec; i++) {
		if (sec[i].type != SNAP_SEC_VCPU || sec[i].id != 0)
			continue;
		uint8_t *b = (uint8_t *)sec[i].data; /* points into our own copy of the file */
		for (size_t off = 4; sec[i].len - off >= 8;) {
			uint32_t tag, n;
			memcpy(&tag, b + off, 4);
			memcpy(&n, b + off + 4, 4);
			uint8_t *d = b + off + 8;
			off += 8 + (size_t)n;
			if (tag == T_REGS) {
				memcpy(d + offsetof(struct kvm_regs, rip), &m.cpu_rip[0], 8);
			} else if (tag == T_SREGS || tag == T_SREGS2) {
				size_t cr0 = tag == T_SREGS ? offsetof(struct kvm_sregs, cr0) : offsetof(struct kvm_sregs2, cr0);
				uint64_t efer = 0xd01; /* SCE | LME | LMA | NXE */
				memcpy(d + cr0, &m.cpu[0].cr0, 8);
				memcpy(d + cr0 + 16, &m.cpu[0].cr3, 8);
				memcpy(d + cr0 + 24, &m.cpu[0].cr4, 8);
				memcpy(d + cr0 + 40, &efer, 8);
			} else if (tag == T_MSRS) {
				set_msr(d, n, 0xc0000082, lstar);
				set_msr(d, n, 0xc0000083, cstar);
				set_msr(d, n, 0x176, sysenter);
			}
		}
		done = true;
	}
	if (!done) {
		fprintf(stderr, "vmi_core2snap: %s: no vCPU 0\n", path);
		return 1;
	}
	uint8_t *nstate;
	size_t nlen;
	if (snap_build(&h, sec, nsec, &nstate, &nlen) < 0)
		return die("building the state");
	if (mkdir(out, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "vmi_core2snap: %s: %s\n", out, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/state", out);
	if (write_all(path, nstate, nlen) < 0) {
		fprintf(stderr, "vmi_core2snap: %s: write failed\n", path);
		return 1;
	}
	/* Memory: the core's ranges inside the snapshot's RAM (QEMU also dumps
	 * ROM and VGA ranges above it: they are not RAM here). Zero pages are
	 * left as holes. */
	snprintf(path, sizeof(path), "%s/memory", out);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)h.mem_size) < 0) {
		fprintf(stderr, "vmi_core2snap: %s: %s\n", path, strerror(errno));
		return 1;
	}
	static const uint8_t zero[4096];
	uint64_t copied = 0;
	for (unsigned r = 0; r < m.nranges; r++) {
		const struct vmi_range *x = &m.range[r];
		for (uint64_t o = 0; o + 4096 <= x->len; o += 4096) {
			uint64_t pa = x->pa + o, foff;
			if (h.nregions >= 1 && pa < h.region[0].size)
				foff = pa;
			else if (h.nregions == 2 && pa >= h.region[1].gpa && pa - h.region[1].gpa < h.region[1].size)
				foff = h.region[0].size + (pa - h.region[1].gpa);
			else
				continue;
			if (!memcmp(x->host + o, zero, 4096))
				continue;
			if (pwrite(fd, x->host + o, 4096, (off_t)foff) != 4096) {
				fprintf(stderr, "vmi_core2snap: %s: write failed\n", path);
				return 1;
			}
			copied += 4096;
		}
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		return 1;
	printf("%s: %llu MiB of RAM, CR3 %#" PRIx64 ", RIP %#" PRIx64 ", LSTAR %#" PRIx64 "\n", out,
	       (unsigned long long)(copied >> 20), m.cpu[0].cr3, m.cpu_rip[0], lstar);
	free(nstate);
	free(sec);
	free(state);
	vmi_kernel_close(&k);
	vmi_mem_close(&m);
	return 0;
}
