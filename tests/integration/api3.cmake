# Snapshot/restore (issue 4): C-API equivalence test with 1 and 2 vCPUs.
add_executable(snapshot_test ${CMAKE_CURRENT_LIST_DIR}/snapshot_test.c)
target_link_libraries(snapshot_test PRIVATE vmsvc_core)
# io mode reads virtio-blk's count of requests a snapshot found in flight.
target_include_directories(snapshot_test PRIVATE ${PROJECT_SOURCE_DIR}/src)
vmsvc_host_target(snapshot_test)
if(TARGET guest_snapshot_guest)
  foreach(n 1 2)
    add_test(NAME snapshot.equivalence.${n}cpu
             COMMAND snapshot_test $<TARGET_FILE:guest_snapshot_guest> ${n} ${CMAKE_CURRENT_BINARY_DIR}/snapshot_work_${n})
    set_tests_properties(snapshot.equivalence.${n}cpu PROPERTIES LABELS integration TIMEOUT 180 SKIP_RETURN_CODE 77)
  endforeach()
endif()
# Snapshots at several points of a run with many virtio-blk requests in flight;
# every restore finishes with the uninterrupted run's verdict and summary.
if(TARGET guest_snapshot_io)
  foreach(n 1 2)
    add_test(NAME snapshot.io_in_flight.${n}cpu
             COMMAND snapshot_test $<TARGET_FILE:guest_snapshot_io> ${n} ${CMAKE_CURRENT_BINARY_DIR}/snapshot_io_work_${n} io)
    set_tests_properties(snapshot.io_in_flight.${n}cpu PROPERTIES LABELS integration TIMEOUT 240 SKIP_RETURN_CODE 77)
  endforeach()
endif()
