# Builds and runs tests/consumers/project against iat in one of three ways (MODE):
#   find_package  - iat installed into a prefix with `cmake --install`, found with find_package(iat)
#   fetchcontent  - FetchContent_Declare(iat SOURCE_DIR <this checkout>)
#   subdirectory  - add_subdirectory(<this checkout>)
foreach(var MODE IAT_SOURCE_DIR IAT_BUILD_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "consumer (${MODE}): command failed with ${rc}: ${cmd}")
  endif()
endfunction()

# The parent build's prefix path (PREFIX_PATH, '|'-separated), plus the install prefix for find_package.
string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
set(extra)
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${IAT_BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  list(PREPEND prefix_path ${WORK_DIR}/prefix)
endif()
if(CUDA_COMPILER)
  set(extra -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER})
endif()

# Called directly, not through run(): the quoted prefix list must stay one argument.
execute_process(COMMAND ${CMAKE_COMMAND} -S ${IAT_SOURCE_DIR}/tests/consumers/project -B ${WORK_DIR}/build
                        -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release
                        "-DCMAKE_PREFIX_PATH=${prefix_path}" -DIAT_CONSUMER_MODE=${MODE}
                        -DIAT_SOURCE_DIR=${IAT_SOURCE_DIR} ${extra}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer (${MODE}): configuring the consumer project failed with ${rc}")
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
foreach(exe consumer consumer_compiled)
  execute_process(COMMAND ${WORK_DIR}/build/${exe} OUTPUT_VARIABLE out_${exe} RESULT_VARIABLE rc)
  message(STATUS "${exe}: ${out_${exe}}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer (${MODE}): ${exe} failed with ${rc}")
  endif()
endforeach()
if(NOT out_consumer STREQUAL out_consumer_compiled)
  message(FATAL_ERROR "consumer (${MODE}): iat::compiled printed another result than iat::iat")
endif()
