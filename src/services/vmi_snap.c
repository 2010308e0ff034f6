/* A vmsvc snapshot directory as introspection memory (include/vmsvc/vmi.h).
 *
 * DIR/state is validated in full by snap_parse (checksums, lengths) and each
 * vCPU blob by vmstate_vcpu_check; only then are the control registers, RIP
 * and the syscall MSRs taken, and only as hints: the kernel is still located
 * from memory, CR3/RIP only say where to look first and are cross-checked
 * (k->hints), the MSRs are what `check` compares with the kernel's symbols.
 * DIR/memory is mapped read-only; its regions come from the header. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/mem.h>
#include <vmsvc/vmi.h>
#include <vmsvc/vmstate.h>

/* vCPU blob record tags (docs/snapshot-format.md, "KVM blobs"). */
enum { T_REGS = 1, T_SREGS = 2, T_SREGS2 = 3, T_MSRS = 6 };
#define MSR_REC 16
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083

/* Registers of one vCPU blob (already checked by vmstate_vcpu_check). */
static void vcpu_hints(struct vmi_mem *m, const uint8_t *b, size_t len, bool first)
{
	struct pw_regs r = { 0 };
	uint64_t rip = 0;
	bool have_sregs = false;
	for (size_t off = 4; len - off >= 8;) {
		uint32_t tag, n;
		memcpy(&tag, b + off, 4);
		memcpy(&n, b + off + 4, 4);
		const uint8_t *d = b + off + 8;
		if (n > len - off - 8)
			break;
		off += 8 + (size_t)n;
		if (tag == T_REGS && n == sizeof(struct kvm_regs)) {
			memcpy(&rip, d + offsetof(struct kvm_regs, rip), 8);
		} else if ((tag == T_SREGS && n == sizeof(struct kvm_sregs)) ||
			   (tag == T_SREGS2 && n == sizeof(struct kvm_sregs2))) {
			/* Both start with the same segment/descriptor-table fields,
			 * then cr0, cr2, cr3, cr4, cr8, efer. */
			size_t cr0 = tag == T_SREGS ? offsetof(struct kvm_sregs, cr0) : offsetof(struct kvm_sregs2, cr0);
			memcpy(&r.cr0, d + cr0, 8);
			memcpy(&r.cr3, d + cr0 + 16, 8);
			memcpy(&r.cr4, d + cr0 + 24, 8);
			memcpy(&r.efer, d + cr0 + 40, 8);
			have_sregs = true;
		} else if (tag == T_MSRS && first) {
			for (uint32_t i = 0; i + MSR_REC <= n; i += MSR_REC) {
				uint32_t idx;
				uint64_t v;
				memcpy(&idx, d + i, 4);
				memcpy(&v, d + i + 8, 8);
				if (idx == MSR_LSTAR) {
					m->msrs.lstar = v;
					m->have_msrs = true;
				} else if (idx == MSR_CSTAR) {
					m->msrs.cstar = v;
					m->msrs.have_cstar = true;
				} else if (idx == MSR_IA32_SYSENTER_EIP) {
					m->msrs.sysenter_eip = v;
					m->msrs.have_sysenter = true;
				}
			}
		}
	}
	if (have_sregs && m->ncpus < VMI_MAX_CPUS) {
		m->cpu[m->ncpus] = r;
		m->cpu_rip[m->ncpus++] = rip;
	}
}

int vmi_mem_open_snapshot(struct vmi_mem *m, const char *dir)
{
	memset(m, 0, sizeof(*m));
	char state[4096], memory[4096];
	if (snprintf(state, sizeof(state), "%s/state", dir) >= (int)sizeof(state) ||
	    snprintf(memory, sizeof(memory), "%s/memory", dir) >= (int)sizeof(memory))
		return err_set(ENAMETOOLONG, "%s: path too long", dir);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = snap_read_file(state, &buf, &len);
	if (rc < 0)
		return rc;
	struct snap_header h;
	struct snap_section *sec = NULL;
	unsigned nsec = 0;
	rc = snap_parse(buf, len, state, &h, &sec, &nsec);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	/* The header's regions must be what vmsvc lays out for its memory size
	 * (as restore requires): then they are sorted, disjoint and sum up. */
	struct guest_mem layout;
	memset(&layout, 0, sizeof(layout));
	if (h.mem_size == 0 || h.mem_size > (1ULL << 46) || h.mem_size % 4096) {
		rc = err_set(EINVAL, "%s: offset 40: memory size %llu", state, (unsigned long long)h.mem_size);
		goto out;
	}
	mem_layout(&layout, h.mem_size);
	if (layout.nregions != h.nregions) {
		rc = err_set(EINVAL, "%s: offset 52: %u memory regions, %u expected for %llu bytes", state, h.nregions,
			     layout.nregions, (unsigned long long)h.mem_size);
		goto out;
	}
	for (unsigned i = 0; i < h.nregions; i++)
		if (h.region[i].gpa != layout.region[i].gpa || h.region[i].size != layout.region[i].size) {
			rc = err_set(EINVAL, "%s: offset %u: region %u is %#llx+%#llx, expected %#llx+%#llx", state,
				     56 + 16 * i, i, (unsigned long long)h.region[i].gpa,
				     (unsigned long long)h.region[i].size, (unsigned long long)layout.region[i].gpa,
				     (unsigned long long)layout.region[i].size);
			goto out;
		}
	unsigned ncpu_sec = 0;
	for (unsigned i = 0; i < nsec; i++) {
		if (sec[i].type != SNAP_SEC_VCPU)
			continue;
		if (vmstate_vcpu_check(sec[i].data, sec[i].len) < 0) {
			rc = err_prefix(-EINVAL, "%s: offset %llu: vCPU %u: ", state, (unsigned long long)sec[i].offset,
					sec[i].id);
			goto out;
		}
		vcpu_hints(m, sec[i].data, sec[i].len, sec[i].id == 0);
		ncpu_sec++;
	}
	if (ncpu_sec != h.ncpus) {
		rc = err_set(EINVAL, "%s: %u vCPU sections, header says %u", state, ncpu_sec, h.ncpus);
		goto out;
	}
	int fd = open(memory, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = err_set(errno, "%s: %s", memory, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != h.mem_size) {
		close(fd);
		rc = err_set(EINVAL, "%s: expected a regular file of %llu bytes (the state's memory size)", memory,
			     (unsigned long long)h.mem_size);
		goto out;
	}
	void *map = mmap(NULL, h.mem_size, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	int e = errno;
	close(fd);
	if (map == MAP_FAILED) {
		rc = err_set(e, "%s: mmap: %s", memory, strerror(e));
		goto out;
	}
	/* Hints are kept across the range set-up (vmi_mem_from_guest clears m). */
	struct vmi_mem hints = *m;
	for (unsigned i = 0; i < layout.nregions; i++)
		layout.region[i].hva = (uint8_t *)map + layout.region[i].fd_offset;
	rc = vmi_mem_from_guest(m, &layout);
	if (rc < 0) {
		munmap(map, h.mem_size);
		memset(m, 0, sizeof(*m));
		goto out;
	}
	vmi_mem_adopt(m, &hints, map, h.mem_size);
out:
	if (rc < 0)
		memset(m, 0, sizeof(*m));
	free(sec);
	free(buf);
	return rc;
}
