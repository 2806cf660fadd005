// The whole model against an independent reference: tests/reference/llava_reference.py (its
// own safetensors reader, the forward pass written from the published architectures, float64)
// must give the same last-token logits. Skipped where Debian's python3-torch is absent.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"
#include "model/vlm.h"
#include "model/weights.h"
#include "support/test_support.h"

namespace mustdrop::model {
namespace {

const char* const kPython = "/usr/bin/python3";

bool have_python_torch() {
  test::ProcResult r = test::run_process({kPython, "-c", "import torch"}, 60);
  return !r.timed_out && r.exit_code == 0;
}

struct Comparison {
  at::Tensor ours;    // [vocab] float32 (C++)
  at::Tensor theirs;  // [vocab] float64 (reference)
};

// Writes the `preset` tiny model, runs `frames` deterministic frames and the usual question
// through the C++ model and through the reference, and returns both last-token logits.
Comparison compare(const std::string& preset, int frames, Media media = Media::kVideo) {
  Comparison c;
  std::string dir = test::temp_dir() + "/ref_" + preset;
  TinyModelOptions o;
  o.preset = preset;
  o.seed = 4321;
  o.overwrite = true;  // several comparisons may use the same preset
  write_tiny_model(dir, o);
  auto m = VisionLanguageModel::load(dir);

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  at::Tensor pixels = at::randn({frames, 3, m->image_size(), m->image_size()}, gen);

  // C++ logits, exactly as a prompt runs end to end.
  at::Tensor vision = m->encode_frames(pixels, media);
  PromptLayout layout = m->build_prompt("What is happening in this video?", vision.size(0), media);
  if (media == Media::kImage) {
    EXPECT_EQ(vision.size(0), m->tokens_per_frame(Media::kImage));
  }
  DenseKvCache cache(m->llm().n_layers());
  c.ours = m->prefill(layout, vision, cache).logits.reshape({-1});

  // The reference's inputs: pixels as safetensors, ids as a JSON list.
  std::string pixels_path = dir + "/ref_pixels.safetensors", ids_path = dir + "/ref_ids.json";
  std::string out_path = dir + "/ref_logits.safetensors";
  write_safetensors(pixels_path, {to_tensor_data("pixels", pixels, DType::kF32)});
  {
    std::ofstream ids(ids_path);
    ids << "[";
    for (size_t i = 0; i < layout.ids.size(); ++i) ids << (i ? "," : "") << layout.ids[i];
    ids << "]\n";
  }
  std::vector<std::string> argv = {kPython, test::source_dir() + "/tests/reference/llava_reference.py", "--model", dir,
                                   "--pixels", pixels_path, "--ids", ids_path, "--vision-begin",
                                   std::to_string(layout.vision_begin), "--out", out_path};
  if (media == Media::kImage) argv.push_back("--image");
  test::ProcResult r = test::run_process(argv, 120);
  EXPECT_FALSE(r.timed_out) << "the reference ran past 120 s";
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return c;

  SafetensorsFile out(out_path);
  const TensorView* t = out.find("logits");
  EXPECT_NE(t, nullptr) << out_path << " holds no \"logits\"";
  if (!t) return c;
  EXPECT_EQ(t->dtype, DType::kF64);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{m->config().text.vocab_size}));
  if (t->dtype != DType::kF64 || t->shape.size() != 1) return c;
  c.theirs = at::empty({t->shape[0]}, at::kDouble);
  std::memcpy(c.theirs.data_ptr(), t->data, t->n_bytes);
  return c;
}

void expect_match(const Comparison& c) {
  ASSERT_TRUE(c.theirs.defined()) << "no reference logits";
  ASSERT_EQ(c.ours.numel(), c.theirs.numel());
  at::Tensor ours = c.ours.to(at::kDouble);
  double err = (ours - c.theirs).abs().max().item<double>() / c.theirs.abs().max().item<double>();
  std::printf("relative error max|cpp - ref| / max|ref| = %.3e\n", err);
  EXPECT_LE(err, 1e-4);
  EXPECT_EQ(ours.argmax().item<int64_t>(), c.theirs.argmax().item<int64_t>());
}

TEST(Reference, LlavaLogitsMatchTheIndependentReference) {
  if (!have_python_torch()) GTEST_SKIP() << "python3-torch is not installed: no independent reference to compare with";
  expect_match(compare("tiny-llava", 1));
}

TEST(Reference, VideoLlavaLogitsMatchTheIndependentReference) {
  if (!have_python_torch()) GTEST_SKIP() << "python3-torch is not installed: no independent reference to compare with";
  expect_match(compare("tiny-video-llava", 2));
}

TEST(Reference, VideoLlavaStillImageGoesThroughTheImageTower) {
  if (!have_python_torch()) GTEST_SKIP() << "python3-torch is not installed: no independent reference to compare with";
  Comparison c = compare("tiny-video-llava", 1, Media::kImage);
  expect_match(c);
  // The video path over the same picture is another computation: the comparison can tell.
  Comparison as_video = compare("tiny-video-llava", 1, Media::kVideo);
  ASSERT_TRUE(as_video.ours.defined());
  EXPECT_GT((as_video.ours - c.ours).abs().max().item<float>(), 1e-3);
}

}  // namespace
}  // namespace mustdrop::model
