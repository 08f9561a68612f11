// The compiled mode's one translation unit (iat/detail/compiled.hpp, docs/build.md "Compiled mode"):
// every entry point whose body is guarded by IAT_HEADER_BODIES is defined here, once, as an ordinary
// (non-inline) function, for the programs that link iat::compiled.
#define IAT_BUILDING_COMPILED_LIB
#include <iat/attacks/apgd.hpp>
#include <iat/attacks/fab.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/attacks/square.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/inverse_loss.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/train/recipes.hpp>

#ifndef IAT_COMPILED_LIB
#error "src/iat_compiled.cpp is the iat::compiled library: build it through CMake's iat_compiled target"
#endif
