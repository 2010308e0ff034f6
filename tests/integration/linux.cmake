# Linux boot test (label "linux", excluded from scripts/test.sh): boots Debian's cloud
# kernel built by scripts/build-linux-guest.sh. On hosts without VMX/SVM the kernel
# runs in KVM's emulator and this takes about 3-10 minutes. Run with:
#   ctest --test-dir build -L linux --output-on-failure
add_test(NAME linux.boot COMMAND ${CMAKE_SOURCE_DIR}/tests/linux/boot.sh)
set_tests_properties(linux.boot PROPERTIES LABELS linux TIMEOUT 3600 SKIP_RETURN_CODE 77
  ENVIRONMENT "VMSVC=$<TARGET_FILE:vmsvc>")
add_test(NAME linux.qemu_tcg COMMAND ${CMAKE_SOURCE_DIR}/tests/linux/qemu-tcg.sh)
set_tests_properties(linux.qemu_tcg PROPERTIES LABELS "linux;qemu" TIMEOUT 600 SKIP_RETURN_CODE 77)
# Interactive shell on the disk image (label "linux"; about 16 minutes on a kvm_pvm
# host): `vmsvc run guest.img` with the console on a pipe, waits for the prompt, types
# commands (root on /dev/vda1 as ext4, ls /, uname -r, echo) and `poweroff`, and
# requires vmsvc to exit 0. The GPT image is built into the build directory if missing
# or stale (scripts/build-guest-image.sh; skipped without mke2fs/debugfs/sfdisk). Run with:
#   ctest --test-dir build -R linux.shell --output-on-failure
add_test(NAME linux.shell COMMAND ${CMAKE_SOURCE_DIR}/tests/linux/shell.sh)
set_tests_properties(linux.shell PROPERTIES LABELS linux TIMEOUT 3600 SKIP_RETURN_CODE 77
  ENVIRONMENT "VMSVC=$<TARGET_FILE:vmsvc>;LINUX_SHELL_IMG=${CMAKE_BINARY_DIR}/guest.img")
