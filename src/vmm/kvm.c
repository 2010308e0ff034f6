/* KVM probing: open /dev/kvm, check the API version and the capabilities vmsvc
 * relies on. Never looks at CPUID vmx/svm flags: some hosts (e.g. kvm_pvm) offer
 * KVM without them. The real proof is creating a VM, which vm_create() does next. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_XSAVE, "KVM_CAP_XSAVE" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
};

int kvm_probe(int *kvm_fd_out)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return err_set(e, "/dev/kvm does not exist: KVM is not available on this host (load kvm_intel/kvm_amd)");
		if (e == EACCES)
			return err_set(e, "/dev/kvm: permission denied (add yourself to the 'kvm' group)");
		return err_set(e, "/dev/kvm: %s", strerror(e));
	}
	int ver = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION) {
		close(fd);
		return err_set(ENOTSUP, "/dev/kvm: API version %d, vmsvc needs %d", ver, KVM_API_VERSION);
	}
	char missing[512] = "";
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
		if (ioctl(fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			size_t l = strlen(missing);
			snprintf(missing + l, sizeof(missing) - l, "%s%s", l ? ", " : "", required_caps[i].name);
		}
	if (missing[0]) {
		close(fd);
		return err_set(ENOTSUP, "/dev/kvm lacks required capabilities: %s", missing);
	}
	*kvm_fd_out = fd;
	return 0;
}
