// Compile time of iat's umbrella header alone (benchmarks/compile_time.sh).
#include <iat/iat.hpp>

int main() { return iat::version()[0] == '\0'; }
