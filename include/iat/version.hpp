#pragma once
/// \file
/// iat's version, as a macro and as a string.

#define IAT_VERSION_MAJOR 0
#define IAT_VERSION_MINOR 1
#define IAT_VERSION_PATCH 0

namespace iat {
/// The library version, "major.minor.patch".
///
/// **Example**
/// \code
/// std::cout << "iat " << iat::version() << "\n";
/// \endcode
inline const char* version() { return "0.1.0"; }
}  // namespace iat
