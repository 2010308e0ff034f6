/* Network checks (Livewire's NIC and raw-socket detectors, from memory):
 *   promiscuous interfaces: IFF_PROMISC in net_device.flags or a nonzero
 *   promiscuity count (what dev_set_promiscuity() raises, also without the
 *   flag the user sees);
 *   AF_PACKET sockets: init_net.packet.sklist, with the owning process found
 *   by matching sock->sk_socket->file against every process's open files. A
 *   socket bound to ETH_P_ALL sees all traffic (a sniffer): warning; other
 *   packet sockets (DHCP clients, arping) are reported as info.
 * Only the initial network namespace is inspected. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"

#define MAX_SOCKS 65536
#define MAX_FDS 65536
#define ETH_P_ALL 0x0003

static int check_promisc(const struct vmi_kernel *k, struct vmi_findings *out)
{
	struct vmi_netdev *d;
	size_t n;
	bool trunc;
	if (vmi_netdev(k, &d, &n, &trunc) < 0)
		return vmi_finding_cannot(out, "netdev", err_msg());
	int rc = 0;
	if (trunc)
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "netdev", "the device list is broken or loops",
				     "%zu devices read", n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (!(d[i].flags & VMI_IFF_PROMISC) && !d[i].promiscuity)
			continue;
		char name[32], what[160];
		snprintf(what, sizeof(what), "interface %s is promiscuous", vmi_printable(d[i].name, name, sizeof(name)));
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "netdev", what,
				     "net_device %#" PRIx64 ", flags %#" PRIx32 "%s, promiscuity count %" PRIu32, d[i].addr,
				     d[i].flags, d[i].flags & VMI_IFF_PROMISC ? " (IFF_PROMISC)" : "", d[i].promiscuity);
	}
	free(d);
	return rc;
}

struct owner {
	int32_t pid;
	int fd;
	char comm[16];
};

/* Which process has `file` open? Searches thread-group leaders' fd tables. */
static bool find_owner(const struct vmi_kernel *k, const struct vmi_task *t, size_t nt, uint64_t file, struct owner *o)
{
	uint64_t o_files, o_fdt, o_max, o_fd;
	if (!file || !vmi_off(k, "task_struct", "files", &o_files) || !vmi_off(k, "files_struct", "fdt", &o_fdt) ||
	    !vmi_off(k, "fdtable", "max_fds", &o_max) || !vmi_off(k, "fdtable", "fd", &o_fd))
		return false;
	uint64_t *fds = malloc(MAX_FDS * sizeof(uint64_t));
	if (!fds)
		return false;
	bool found = false;
	for (size_t i = 0; i < nt && !found; i++) {
		uint64_t files, fdt, arr;
		uint32_t max;
		if (t[i].kthread || vmi_kread_u64(k, t[i].addr + o_files, &files) < 0 || !files ||
		    vmi_kread_u64(k, files + o_fdt, &fdt) < 0 || vmi_kread(k, fdt + o_max, &max, 4) < 0 ||
		    vmi_kread_u64(k, fdt + o_fd, &arr) < 0)
			continue;
		if (max > MAX_FDS)
			max = MAX_FDS;
		/* Read page by page: the array may be partly unmapped. */
		for (uint32_t j = 0; j < max && !found; j += 512) {
			uint32_t cnt = max - j < 512 ? max - j : 512;
			if (vmi_kread(k, arr + 8ULL * j, fds, 8ULL * cnt) < 0)
				break;
			for (uint32_t x = 0; x < cnt; x++)
				if (fds[x] == file) {
					o->pid = t[i].pid;
					o->fd = (int)(j + x);
					memcpy(o->comm, t[i].comm, sizeof(o->comm));
					found = true;
					break;
				}
		}
	}
	free(fds);
	err_clear();
	return found;
}

static int check_packet(const struct vmi_kernel *k, struct vmi_findings *out)
{
	uint64_t init_net, o_sklist, o_node, o_type, o_sock, o_file, o_num;
	if (vmi_ksym(k, "init_net", &init_net) < 0)
		return vmi_finding_cannot(out, "packet", err_msg());
	if (!vmi_off(k, "net", "packet.sklist", &o_sklist))
		return 0; /* kernel without AF_PACKET: nothing to look at */
	if (!vmi_off(k, "sock", "__sk_common.skc_node", &o_node) || !vmi_off(k, "sock", "sk_type", &o_type) ||
	    !vmi_off(k, "sock", "sk_socket", &o_sock) || !vmi_off(k, "socket", "file", &o_file) ||
	    !vmi_off(k, "packet_sock", "num", &o_num))
		return vmi_finding_cannot(out, "packet", "BTF lacks sock/packet_sock members");
	struct vmi_task *t = NULL;
	size_t nt = 0;
	bool trunc;
	if (vmi_ps(k, &t, &nt, &trunc) < 0)
		err_clear(); /* owners stay unknown */
	uint64_t node;
	int rc = 0;
	if (vmi_kread_u64(k, init_net + o_sklist, &node) < 0) {
		free(t);
		return vmi_finding_cannot(out, "packet", err_msg());
	}
	for (unsigned n = 0; node && n < MAX_SOCKS && rc == 0; n++) {
		uint64_t sk = node - o_node, sock = 0, file = 0;
		uint16_t type = 0, num = 0;
		vmi_kread(k, sk + o_type, &type, 2);
		vmi_kread(k, sk + o_num, &num, 2); /* packet_sock embeds struct sock first */
		if (vmi_kread_u64(k, sk + o_sock, &sock) == 0 && sock)
			vmi_kread_u64(k, sock + o_file, &file);
		err_clear();
		uint16_t proto = (uint16_t)(num >> 8 | num << 8); /* __be16 */
		struct owner ow;
		char owner[96], comm[32], what[160];
		if (!file)
			snprintf(owner, sizeof(owner), "no owning process (kernel socket or not attached to a file)");
		else if (find_owner(k, t, nt, file, &ow))
			snprintf(owner, sizeof(owner), "owned by pid %d '%s' (fd %d)", ow.pid,
				 vmi_printable(ow.comm, comm, sizeof(comm)), ow.fd);
		else
			snprintf(owner, sizeof(owner), "file %#" PRIx64 " open in no listed process", file);
		bool all = proto == ETH_P_ALL;
		snprintf(what, sizeof(what), "AF_PACKET socket%s", all ? " capturing all traffic (ETH_P_ALL)" : "");
		rc = vmi_finding_add(out, all ? VMI_SEV_WARNING : VMI_SEV_INFO, "packet", what,
				     "sock %#" PRIx64 ", type %s, protocol %#06x, %s", sk,
				     type == 3 ? "SOCK_RAW" : type == 2 ? "SOCK_DGRAM" : "other", proto, owner);
		if (vmi_kread_u64(k, node, &node) < 0)
			break;
	}
	free(t);
	err_clear();
	return rc;
}

int vmi_check_net(const struct vmi_kernel *k, struct vmi_findings *out)
{
	int rc = check_promisc(k, out);
	return rc < 0 ? rc : check_packet(k, out);
}
