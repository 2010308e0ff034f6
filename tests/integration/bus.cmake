# Service bus with real guests (docs/bus.md): a gate that denies virtio-blk
# writes, observers of device requests and MSI-X interrupts, runtime
# subscribe/unsubscribe while the guest runs.
add_executable(bus_gate_test ${CMAKE_CURRENT_LIST_DIR}/bus_gate_test.c)
target_link_libraries(bus_gate_test PRIVATE vmsvc_core)
vmsvc_host_target(bus_gate_test)
if(TARGET guest_virtio_blk)
  add_test(NAME bus.gate_denies_blk_writes COMMAND bus_gate_test $<TARGET_FILE:guest_virtio_blk>)
  set_tests_properties(bus.gate_denies_blk_writes PROPERTIES LABELS "integration;virtio" TIMEOUT 150 SKIP_RETURN_CODE 77)
endif()
