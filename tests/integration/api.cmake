# VM API tests (C programs linked with the core, real guests on /dev/kvm).
add_executable(vm_api_test ${CMAKE_CURRENT_LIST_DIR}/vm_api_test.c)
target_link_libraries(vm_api_test PRIVATE vmsvc_core)
vmsvc_host_target(vm_api_test)
if(TARGET guest_hello AND TARGET guest_cpl3)
  add_test(NAME vm_api.two_vms_pause_resume
           COMMAND vm_api_test $<TARGET_FILE:guest_hello> $<TARGET_FILE:guest_cpl3>)
  set_tests_properties(vm_api.two_vms_pause_resume PROPERTIES LABELS integration TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
