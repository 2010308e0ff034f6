/* `vmsvc inspect NAME`: a running VM's memory over its control socket
 * (src/cli/inspect_live.c). */
#ifndef VMSVC_CLI_INSPECT_H
#define VMSVC_CLI_INSPECT_H
#include <stdbool.h>
#include <stddef.h>

struct vmi_mem;
struct live_vm {
	int fd;          /* control connection, -1 when closed */
	char name[128];
	bool copied;     /* RAM was a copy (a VM restored from a snapshot directory) */
};
/* Connect to the VM's control socket; message set on failure. */
int live_open(struct live_vm *lv, const char *name);
/* A command without arguments ("info", "pause", "resume"); *state (may be
 * NULL) receives the result's "state" member. */
int live_call(struct live_vm *lv, const char *cmd, char *state, size_t state_len);
/* The "memory" command: map the guest RAM fd read-only into m, with the vCPU
 * registers and vCPU 0's MSRs as hints. vmi_mem_close unmaps it. */
int live_attach(struct live_vm *lv, struct vmi_mem *m);
void live_close(struct live_vm *lv);

#endif
