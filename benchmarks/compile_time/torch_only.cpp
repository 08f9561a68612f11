// Compile-time baseline (benchmarks/compile_time.sh): LibTorch's umbrella header alone.
#include <torch/torch.h>

int main() { return torch::ones({1}).item<int>() - 1; }
