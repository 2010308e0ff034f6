# Control socket (docs/api.md): a real guest that stays up (tests/guests/idle.c).
if(TARGET guest_idle AND JSONC_FOUND)
  add_test(NAME control.socket
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/control_test.sh $<TARGET_FILE:vmsvc> $<TARGET_FILE:guest_idle>)
  set_tests_properties(control.socket PROPERTIES LABELS integration TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
