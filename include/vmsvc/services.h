/* Services that subscribe to a VM's service bus. */
#ifndef VMSVC_SERVICES_H
#define VMSVC_SERVICES_H
#include <stdio.h>

struct vm;
struct stats;
/* Per-exit-type counters (plus top ports/MMIO addresses and assisted instructions). */
int stats_attach(struct vm *vm, struct stats **out);
void stats_print(const struct stats *s, FILE *f);
void stats_detach(struct vm *vm, struct stats *s);

#endif
