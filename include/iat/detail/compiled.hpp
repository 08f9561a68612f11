#pragma once
/// \file
/// Header-only or compiled: where the bodies of iat's heavy entry points (the attacks' perturb, AutoAttack's
/// run, the training recipes, the inverse components' updates) are compiled.
///
/// By default iat is header-only: every body is `inline` in its header and compiled in each translation unit
/// that uses it. A program that links the CMake target `iat::compiled` instead gets `IAT_COMPILED_LIB`
/// defined: the headers then declare those entry points only, and their bodies are compiled once, in the
/// static library built from src/iat_compiled.cpp (which also defines `IAT_BUILDING_COMPILED_LIB`). The
/// results are the same either way; only where the code is compiled changes (docs/build.md, "Compiled
/// mode"). Every translation unit of one program must use the same mode: CMake's `iat::compiled` passes the
/// definition to all of them.
///
/// **Example**
/// \code
/// // CMakeLists.txt: target_link_libraries(my_trainer PRIVATE iat::compiled)   # instead of iat::iat
/// #include <iat/iat.hpp>   // unchanged: the same headers, the same API
/// \endcode

/// IAT_HEADER_BODIES: 1 where this translation unit compiles the entry points' bodies (header-only mode, and
/// the compiled library itself), 0 in a program's own files in the compiled mode (declarations only).
#if defined(IAT_COMPILED_LIB) && !defined(IAT_BUILDING_COMPILED_LIB)
#define IAT_HEADER_BODIES 0
#else
#define IAT_HEADER_BODIES 1
#endif

/// IAT_INLINE: `inline` in header-only mode; nothing in the compiled mode, whose library holds the only
/// definitions.
#if defined(IAT_COMPILED_LIB)
#define IAT_INLINE
#else
#define IAT_INLINE inline
#endif
