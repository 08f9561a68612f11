/// \file
/// The names the C++ examples of README.md and docs/ take as given, declared (never defined: the examples
/// are compiled, not linked) so that tests/docs/extract_snippets.py's output compiles. An example declares
/// everything else it uses; one that needs a name not listed here does not compile until it declares it.
#pragma once
#include <torch/torch.h>  // a LibTorch program, as every user's is
#include <iat/iat.hpp>

namespace iat_docs {
extern iat::models::PreActResNet18 net;    ///< the model being trained or attacked
extern iat::models::PreActResNet18 model;  ///< the same, under the other name the examples use
extern torch::optim::SGD opt;              ///< its optimiser
extern torch::optim::SGD optimizer;
extern iat::data::Loader loader;           ///< training batches {x, y, index}
extern torch::Tensor x, y;                 ///< one batch: float [N, C, H, W] in [0, 1], int64 [N]
extern torch::Tensor x_adv, x_inv;         ///< an adversarial and an inverse-adversarial batch
extern torch::Tensor x_train, y_train;     ///< a whole training set as tensors
extern double eps;                         ///< ε
extern int64_t epoch, epochs, momentum_epoch, n, batch, seed;
extern torch::Device device;
extern iat::PGD pgd;
extern iat::UniversalInversePerturbation uip;
extern iat::AlignmentLoss align;
extern iat::train::AWP awp;
}  // namespace iat_docs
