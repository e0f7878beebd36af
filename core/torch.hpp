// The parts of LibTorch grm uses. Sources include LibTorch through this header, and it is also the
// precompiled header (CMakeLists.txt): all of <torch/torch.h> makes a 630 MB PCH that costs every source
// 5 s to load, this subset a 510 MB one that loads in 3 s.
#pragma once

#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>
