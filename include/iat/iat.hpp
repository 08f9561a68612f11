#pragma once
/// \file
/// The umbrella header: everything iat offers. Each component also has a header of its own.
///
/// **Example**
/// \code
/// #include <iat/iat.hpp>
/// iat::PGD pgd;                                        // docs/method.md §1.2 training defaults
/// torch::Tensor x_adv = pgd.perturb(net, x, y);
/// \endcode

#include <iat/version.hpp>
#include <iat/cpu_allocator.hpp>
#include <iat/model_ref.hpp>
#include <iat/options_field.hpp>
#include <iat/precision.hpp>
#include <iat/functional/losses.hpp>
#include <iat/functional/grad_align.hpp>
#include <iat/attacks/attack.hpp>
#include <iat/attacks/pgd.hpp>
#include <iat/attacks/fgsm.hpp>
#include <iat/attacks/nfgsm.hpp>
#include <iat/attacks/apgd.hpp>
#include <iat/attacks/fab.hpp>
#include <iat/attacks/square.hpp>
#include <iat/eval/autoattack.hpp>
#include <iat/eval/robust_accuracy.hpp>
#include <iat/inverse/inverse_loss.hpp>
#include <iat/inverse/inverse_attack.hpp>
#include <iat/inverse/universal_perturbation.hpp>
#include <iat/inverse/alignment_loss.hpp>
#include <iat/inverse/one_off_cache.hpp>
#include <iat/train/checkpoint.hpp>
#include <iat/train/ema.hpp>
#include <iat/train/one_cycle.hpp>
#include <iat/train/recipes.hpp>
#include <iat/train/awp.hpp>
#include <iat/train/run_model.hpp>
#include <iat/models/common.hpp>
#include <iat/models/preact_resnet.hpp>
#include <iat/models/wide_resnet.hpp>
#include <iat/models/small_cnn.hpp>
#include <iat/io/tensor_file.hpp>
#include <iat/models/state_dict.hpp>
#include <iat/models/zoo.hpp>
#include <iat/data/dataset.hpp>
#include <iat/data/cifar.hpp>
#include <iat/data/svhn.hpp>
#include <iat/data/idx.hpp>
#include <iat/data/npz.hpp>
#include <iat/data/load.hpp>
#include <iat/data/augment.hpp>
#include <iat/data/loader.hpp>
#include <iat/data/mix.hpp>
