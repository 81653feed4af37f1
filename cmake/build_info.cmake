# Writes build_info.cpp; rewrites it only when its content changes (no needless relinks).
execute_process(COMMAND git -C ${SRC} rev-parse --short=12 HEAD
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
execute_process(COMMAND git -C ${SRC} status --porcelain --untracked-files=no
                OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit "unknown")
elseif(dirty)
  set(commit "${commit}-dirty")
endif()
if(CUDA)
  set(cuda_on "true")
else()
  set(cuda_on "false")
endif()
set(content "#include \"build_info.h\"
namespace nibble {
const BuildInfo& build_info() {
  static const BuildInfo info{\"${VERSION}\", \"${commit}\", ${cuda_on}, \"${CUDA_ARCHS}\", \"${BUILD_TYPE}\"};
  return info;
}
}  // namespace nibble
")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${content}")
  file(WRITE ${OUT} "${content}")
endif()
