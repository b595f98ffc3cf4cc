// The umbrella header: #include <fgvc/fgvc.h> and link fgvc::fgvc.
#pragma once

#include "fgvc/config.h"

#include "tensor/cuda_runtime.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

#include "kernels/concat.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"

#include "autograd/autocast.h"
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "autograd/nn_ops.h"
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"

#include "nn/layers.h"
#include "nn/models/registry.h"

#include "data/dataset.h"
#include "data/decode.h"
#include "data/loader.h"
#include "data/subset.h"
#include "data/transforms.h"

#include "emd/domain.h"
#include "emd/ground_distance.h"
#include "emd/transport_simplex.h"

#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "optim/update_kernels.h"

#include "dist/communicator.h"
#include "dist/gradient_reducer.h"

#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/features.h"
#include "train/trainer.h"
