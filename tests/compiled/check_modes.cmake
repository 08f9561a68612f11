# tests/compiled: runs the mode-check program built header-only and built against iat::compiled, and
# requires (1) identical output, (2) that the compiled build's object file does not define the entry points
# (it references the library's) while the header-only one does.
foreach(var HEADER_ONLY COMPILED COMPILED_OBJECT HEADER_ONLY_OBJECT NM)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_modes.cmake: -D${var}=... is required")
  endif()
endforeach()

foreach(mode HEADER_ONLY COMPILED)
  execute_process(COMMAND ${${mode}} OUTPUT_VARIABLE out_${mode} ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${${mode}} failed with ${rc}: ${err}")
  endif()
endforeach()
message(STATUS "header-only:\n${out_HEADER_ONLY}")
if(NOT out_HEADER_ONLY STREQUAL out_COMPILED)
  message(FATAL_ERROR "the compiled mode printed other numbers than header-only:\n${out_COMPILED}")
endif()

# Mangled names of entry points whose bodies the compiled mode keeps in the library.
set(entry_points
    _ZN3iat3PGD7perturbERKNS_8ModelRefERKN2at6TensorES7_      # iat::PGD::perturb
    _ZN3iat4eval10AutoAttack3runERKNS_8ModelRefERKN2at6TensorES8_  # iat::eval::AutoAttack::run
    _ZN3iat3FAB7perturbERKNS_8ModelRefERKN2at6TensorES7_)     # iat::FAB::perturb
foreach(mode HEADER_ONLY COMPILED)
  execute_process(COMMAND ${NM} ${${mode}_OBJECT} OUTPUT_VARIABLE syms_${mode} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} ${${mode}_OBJECT} failed with ${rc}")
  endif()
endforeach()
foreach(sym IN LISTS entry_points)
  if(NOT syms_HEADER_ONLY MATCHES "[0-9a-f]+ [TW] ${sym}\n")
    message(FATAL_ERROR "header-only: ${sym} is not defined in its own object file")
  endif()
  if(syms_COMPILED MATCHES "[0-9a-f]+ [TW] ${sym}\n")
    message(FATAL_ERROR "compiled mode: ${sym} is defined in the user's object file, not left to iat::compiled")
  endif()
endforeach()
# A direct (non-virtual) call: the object file must reference the library's definition.
if(NOT syms_COMPILED MATCHES " U _ZN3iat4eval10AutoAttack3run")
  message(FATAL_ERROR "compiled mode: no undefined reference to iat::eval::AutoAttack::run")
endif()
message(STATUS "same output in both modes; the compiled build leaves ${entry_points} to the library")
