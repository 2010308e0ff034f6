/* vmsvc command line: subcommand dispatch. Only this folder may exit(). */
#include <stdio.h>
#include <string.h>
#include "cli/cli.h"

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("vmsvc %s\n", VMSVC_VERSION);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vmsvc <command> [options]\n"
		"\n"
		"A lightweight KVM virtual machine monitor.\n"
		"\n"
		"commands:\n"
		"  run       boot a guest kernel and connect its serial console\n"
		"  inspect   introspect a Linux guest's kernel (processes, modules, interfaces)\n"
		"  ls        list running VMs (their control sockets, docs/api.md)\n"
		"  info      describe a running VM: info NAME [--json]\n"
		"  pause     stop a running VM's vCPUs: pause NAME\n"
		"  resume    let a paused VM run again: resume NAME; or continue a suspended one:\n"
		"            resume [--passphrase-file F | --key-file F] [run options] FILE\n"
		"  stats     a running VM's exit counters: stats NAME [--json]\n"
		"  stop      end a running VM (its vmsvc exits with status 0): stop NAME\n"
		"  events    stream a running VM's events as JSON lines: events NAME\n"
		"  regs      a running VM's vCPU registers (paused for the read): regs NAME [--vcpu N] [--json]\n"
		"  snapshot  write a running VM's state to a directory: snapshot NAME DIR [--stop]\n"
		"  suspend   save a running VM to an encrypted file and end it: suspend NAME FILE\n"
		"            [--passphrase-file F | --key-file F]; continue it with: resume FILE\n"
		"  version   print the version\n"
		"  help      this text (also: vmsvc <command> --help)\n"
		"\n"
		"Example: vmsvc run --kernel bzImage --initrd initrd.img --append \"console=ttyS0\" --mem 512M\n");
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	usage(stdout);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", cmd_run },
	{ "inspect", cmd_inspect },
	{ "ls", cmd_ls },
	{ "info", cmd_info },
	{ "pause", cmd_pause },
	{ "resume", cmd_resume },
	{ "stats", cmd_stats },
	{ "stop", cmd_stop },
	{ "events", cmd_events },
	{ "regs", cmd_regs },
	{ "snapshot", cmd_snapshot },
	{ "suspend", cmd_suspend },
	{ "version", cmd_version },
	{ "--version", cmd_version },
	{ "help", cmd_help },
	{ "--help", cmd_help },
	{ "-h", cmd_help },
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "vmsvc: unknown command '%s' (try 'vmsvc --help')\n", argv[1]);
	return 2;
}
