# Linux boot test (label "linux", excluded from scripts/test.sh): boots Debian's cloud
# kernel built by scripts/build-linux-guest.sh. On hosts without VMX/SVM the kernel
# runs in KVM's emulator and this takes about 3-10 minutes. Run with:
#   ctest --test-dir build -L linux --output-on-failure
add_test(NAME linux.boot COMMAND ${CMAKE_SOURCE_DIR}/tests/linux/boot.sh)
set_tests_properties(linux.boot PROPERTIES LABELS linux TIMEOUT 3600 SKIP_RETURN_CODE 77
  ENVIRONMENT "VMSVC=$<TARGET_FILE:vmsvc>")
add_test(NAME linux.qemu_tcg COMMAND ${CMAKE_SOURCE_DIR}/tests/linux/qemu-tcg.sh)
set_tests_properties(linux.qemu_tcg PROPERTIES LABELS "linux;qemu" TIMEOUT 600 SKIP_RETURN_CODE 77)
