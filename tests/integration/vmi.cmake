# Introspection of a live VM and of vmsvc snapshots with a real Linux kernel
# (issue 5): the QEMU-TCG dumps of Debian's cloud kernel (scripts/vmi-fixtures.sh,
# cached in build/vmi) are turned into vmsvc snapshots (vmi_core2snap), restored
# with --paused, and `vmsvc inspect NAME` must agree with `--image` on the dump
# and with the guest's own process list. Skipped (77) without the fixtures.
add_executable(vmi_core2snap vmi_core2snap.c)
target_link_libraries(vmi_core2snap PRIVATE vmsvc_core)
vmsvc_host_target(vmi_core2snap)
if(TARGET guest_idle AND JSONC_FOUND)
  add_test(NAME vmi.live
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/vmi_live_test.sh $<TARGET_FILE:vmsvc> $<TARGET_FILE:guest_idle>
                   $<TARGET_FILE:vmi_core2snap> ${CMAKE_SOURCE_DIR}/build/vmi)
  set_tests_properties(vmi.live PROPERTIES LABELS "integration;vmi" TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
