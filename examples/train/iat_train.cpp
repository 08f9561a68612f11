// iat-train: adversarial training with iat's components, reproducing the paper's experiments.
//
//   iat-train --preset cifar10-uiat-prn18 --data-dir ~/data/cifar-10-batches-bin --out runs/c10-uiat
//   iat-train --preset fashion-pgd-at-cnn --out runs/demo/pgd-at
//   iat-train --list-presets
//
// Every method is one of the library's loss recipes (iat::train::*_loss); this program only runs the
// loop around them: data, optimiser, schedule, weight averaging, evaluation, checkpoints, progress,
// metrics and pictures. docs/reproduce.md lists the presets; `iat-train --help` explains every flag.

#include "command_line.hpp"
#include "trainer.hpp"

#include <iat/cpu_allocator.hpp>

#include <iostream>

int main(int argc, char** argv) {
  // Every training step allocates and frees hundreds of activation buffers; kept in the heap they cost no
  // page faults (docs/benchmarks.md, "CPU memory allocator").
  iat::keep_freed_memory();
  iat_examples::TrainConfig cfg;
  const int status = iat_examples::parse_command_line(argc, argv, cfg, std::cout, std::cerr);
  if (status != iat_examples::kRunTraining) return status;

  iat_examples::install_stop_handlers();
  try {
    return iat_examples::Trainer(cfg).run();
  } catch (const c10::Error& e) {
    std::cerr << "iat-train: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "iat-train: error: " << e.what() << "\n";
    return 1;
  }
}
