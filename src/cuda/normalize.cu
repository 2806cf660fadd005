#include <cuda_runtime.h>

#include "core/error.h"
#include "cuda/normalize.h"

namespace mustdrop::cuda {
namespace {

void check(cudaError_t err, const char* call) {
  if (err != cudaSuccess) throw InternalError(std::string("CUDA: ") + call + " failed: " + cudaGetErrorString(err));
}

struct Affine {
  float scale[3];
  float shift[3];
};

// One thread per pixel: reads 3 bytes, writes one float to each channel plane.
__global__ void normalise_kernel(const uint8_t* rgb, int64_t n_pixels, int64_t plane, Affine a, float* out) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_pixels) return;
  int64_t image = i / plane;
  int64_t p = i % plane;
  const uint8_t* px = rgb + i * 3;
  float* base = out + image * 3 * plane + p;
  for (int c = 0; c < 3; ++c) base[c * plane] = px[c] * a.scale[c] + a.shift[c];
}

}  // namespace

bool device_available(std::string* reason) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (reason) *reason = cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    if (reason) *reason = "no CUDA device";
    return false;
  }
  return true;
}

void normalise_rgb(const uint8_t* rgb, int n, int height, int width, const float mean[3], const float stddev[3],
                   float* out) {
  int64_t plane = static_cast<int64_t>(height) * width;
  int64_t n_pixels = plane * n;
  if (n_pixels == 0) return;
  Affine a;
  for (int c = 0; c < 3; ++c) {
    a.scale[c] = 1.0f / (255.0f * stddev[c]);
    a.shift[c] = -mean[c] / stddev[c];
  }
  uint8_t* d_in = nullptr;
  float* d_out = nullptr;
  check(cudaMalloc(&d_in, n_pixels * 3), "cudaMalloc");
  cudaError_t err = cudaMalloc(&d_out, n_pixels * 3 * sizeof(float));
  if (err != cudaSuccess) {
    cudaFree(d_in);
    check(err, "cudaMalloc");
  }
  auto release = [&] {
    cudaFree(d_in);
    cudaFree(d_out);
  };
  err = cudaMemcpy(d_in, rgb, n_pixels * 3, cudaMemcpyHostToDevice);
  if (err == cudaSuccess) {
    int threads = 256;
    int64_t blocks = (n_pixels + threads - 1) / threads;
    normalise_kernel<<<static_cast<unsigned>(blocks), threads>>>(d_in, n_pixels, plane, a, d_out);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpy(out, d_out, n_pixels * 3 * sizeof(float), cudaMemcpyDeviceToHost);
  release();
  check(err, "normalise_rgb");
}

}  // namespace mustdrop::cuda
