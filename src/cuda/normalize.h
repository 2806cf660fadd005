// Optional CUDA kernels (built with MUSTDROP_CUDA=ON). No CUDA types in this header.
#pragma once

#include <cstdint>
#include <string>

namespace mustdrop::cuda {

// True when a CUDA device can run kernels; otherwise false with the driver's reason in `reason`.
bool device_available(std::string* reason);

// Normalises packed RGB images [n, height, width, 3] (host memory) into float tensors
// [n, 3, height, width] (host memory): (v / 255 - mean[c]) / stddev[c], on the GPU.
// Throws InternalError with CUDA's message on failure.
void normalise_rgb(const uint8_t* rgb, int n, int height, int width, const float mean[3], const float stddev[3],
                   float* out);

}  // namespace mustdrop::cuda
