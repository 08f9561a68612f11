# A PyPI torch wheel's LibTorch loads the CUDA libraries of the nvidia-* wheels installed beside it
# (site-packages/nvidia/*/lib, through its own RUNPATH). A CUDA toolkit elsewhere on the machine
# (/usr/local/cuda) can hold older libraries with the same sonames (libnccl.so.2, libcudart.so.13, ...),
# and both the linker and the loader of an executable would take those first: the link then fails on
# symbols the older library lacks, or the program runs on a CUDA runtime torch was not built for.
# iat_torch_wheel_link_options(<var> <torch install prefix>) sets <var> to the link options that put the
# wheel's folders first (-rpath-link for the linker, -rpath for the loader), or to nothing for a LibTorch
# that is not a wheel (Debian's, an unpacked libtorch zip).
function(iat_torch_wheel_link_options out prefix)
  file(GLOB dirs LIST_DIRECTORIES true "${prefix}/../nvidia/*/lib")
  set(options)
  foreach(dir IN LISTS dirs)
    if(IS_DIRECTORY "${dir}")
      get_filename_component(dir "${dir}" REALPATH)
      list(APPEND options "LINKER:-rpath-link,${dir}" "LINKER:-rpath,${dir}")
    endif()
  endforeach()
  set(${out} "${options}" PARENT_SCOPE)
endfunction()
