# Encrypted suspend/resume (issue 4): vmsvc suspend NAME FILE / vmsvc resume FILE.
if(TARGET guest_idle AND JSONC_FOUND AND SODIUM_FOUND AND ZSTD_FOUND)
  add_test(NAME suspend.resume
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/suspend_test.sh $<TARGET_FILE:vmsvc> $<TARGET_FILE:guest_idle>
                   $<TARGET_FILE:guest_virtio_blk>)
  set_tests_properties(suspend.resume PROPERTIES LABELS integration TIMEOUT 180 SKIP_RETURN_CODE 77)
endif()
