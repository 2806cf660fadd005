#include "video/preprocess.h"

extern "C" {
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
}

#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "video/av_ptr.h"

namespace mustdrop::video {

ResizePlan plan_resize(int width, int height, int size, bool pad) {
  ResizePlan p;
  bool wide = width >= height;
  int short_side = wide ? height : width;
  int long_side = wide ? width : height;
  if (pad) {
    int scaled_short = std::max(1, static_cast<int>(static_cast<int64_t>(size) * short_side / long_side));
    p.scaled_w = wide ? size : scaled_short;
    p.scaled_h = wide ? scaled_short : size;
    p.offset_x = (size - p.scaled_w) / 2;
    p.offset_y = (size - p.scaled_h) / 2;
  } else {
    int scaled_long = std::max(size, static_cast<int>(static_cast<int64_t>(size) * long_side / short_side));
    p.scaled_w = wide ? scaled_long : size;
    p.scaled_h = wide ? size : scaled_long;
    p.offset_x = (p.scaled_w - size) / 2;
    p.offset_y = (p.scaled_h - size) / 2;
  }
  return p;
}

struct Preprocessor::Graph {
  FilterGraphPtr graph;
  AVFilterContext* src = nullptr;
  AVFilterContext* sink = nullptr;
  int width = 0, height = 0, format = -1, rotation = 0;
  AVRational sar{0, 1};
};

namespace {

void check(int ret, const char* call) {
  if (ret < 0) throw InternalError(std::string("preprocess: ") + call + " failed: " + av_error_text(ret));
}

std::string rotation_filters(int rotation_deg) {
  switch (rotation_deg) {
    case 90:
      return "transpose=clock,";
    case 180:
      return "hflip,vflip,";
    case 270:
      return "transpose=cclock,";
    default:
      return "";
  }
}

}  // namespace

Preprocessor::Preprocessor(const config::PreprocessConfig& config) : config_(config) {
  if (config_.mean.size() != 3 || config_.stddev.size() != 3) {
    throw ConfigError("video.preprocess: mean and stddev need 3 values each");
  }
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      lut_[c][v] = static_cast<float>((v / 255.0 - config_.mean[c]) / config_.stddev[c]);
    }
  }
}

Preprocessor::~Preprocessor() = default;

RgbImage Preprocessor::to_rgb(const Frame& frame) {
  const AVFrame* in = frame.image.get();
  if (!in) throw InternalError("preprocess: frame has no picture");
  AVRational sar = in->sample_aspect_ratio;
  if (!graph_ || graph_->width != in->width || graph_->height != in->height || graph_->format != in->format ||
      graph_->rotation != frame.rotation_deg || av_cmp_q(graph_->sar, sar) != 0) {
    auto g = std::make_unique<Graph>();
    g->width = in->width;
    g->height = in->height;
    g->format = in->format;
    g->rotation = frame.rotation_deg;
    g->sar = sar;
    g->graph.reset(avfilter_graph_alloc());
    if (!g->graph) throw InternalError("preprocess: avfilter_graph_alloc failed");
    g->graph->nb_threads = 1;  // one preprocessor per worker thread already

    char args[256];
    int sar_num = sar.num > 0 ? sar.num : 1, sar_den = sar.den > 0 ? sar.den : 1;
    std::snprintf(args, sizeof(args), "video_size=%dx%d:pix_fmt=%d:time_base=1/1000:pixel_aspect=%d/%d", in->width,
                  in->height, in->format, sar_num, sar_den);
    check(avfilter_graph_create_filter(&g->src, avfilter_get_by_name("buffer"), "in", args, nullptr, g->graph.get()),
          "avfilter_graph_create_filter(buffer)");
    check(avfilter_graph_create_filter(&g->sink, avfilter_get_by_name("buffersink"), "out", nullptr, nullptr,
                                       g->graph.get()),
          "avfilter_graph_create_filter(buffersink)");
    const enum AVPixelFormat rgb[] = {AV_PIX_FMT_RGB24, AV_PIX_FMT_NONE};
    check(av_opt_set_int_list(g->sink, "pix_fmts", rgb, AV_PIX_FMT_NONE, AV_OPT_SEARCH_CHILDREN),
          "av_opt_set_int_list(pix_fmts)");

    // Upright, display aspect applied, then scaled (with the conversion to RGB in the same
    // swscale pass) and cropped or padded to size x size.
    bool swap = frame.rotation_deg == 90 || frame.rotation_deg == 270;
    int disp_w = static_cast<int>(std::lround(in->width * static_cast<double>(sar_num) / sar_den));
    int upright_w = swap ? in->height : disp_w;
    int upright_h = swap ? disp_w : in->height;
    bool pad = config_.resize == "pad";
    ResizePlan plan = plan_resize(upright_w, upright_h, config_.size, pad);
    std::ostringstream chain;
    chain << rotation_filters(frame.rotation_deg) << "scale=" << plan.scaled_w << ":" << plan.scaled_h
          << ":flags=" << config_.interpolation << "+accurate_rnd+full_chroma_int,format=rgb24,setsar=1,";
    if (pad) {
      char color[16];
      std::snprintf(color, sizeof(color), "0x%02X%02X%02X", static_cast<int>(config_.mean[0] * 255),
                    static_cast<int>(config_.mean[1] * 255), static_cast<int>(config_.mean[2] * 255));
      chain << "pad=" << config_.size << ":" << config_.size << ":" << plan.offset_x << ":" << plan.offset_y
            << ":color=" << color;
    } else {
      chain << "crop=" << config_.size << ":" << config_.size << ":" << plan.offset_x << ":" << plan.offset_y
            << ":exact=1";
    }

    FilterInOutPtr outputs(avfilter_inout_alloc());
    FilterInOutPtr inputs(avfilter_inout_alloc());
    if (!outputs || !inputs) throw InternalError("preprocess: avfilter_inout_alloc failed");
    outputs->name = av_strdup("in");
    outputs->filter_ctx = g->src;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = g->sink;
    AVFilterInOut* in_raw = inputs.release();
    AVFilterInOut* out_raw = outputs.release();
    int ret = avfilter_graph_parse_ptr(g->graph.get(), chain.str().c_str(), &in_raw, &out_raw, nullptr);
    avfilter_inout_free(&in_raw);
    avfilter_inout_free(&out_raw);
    check(ret, "avfilter_graph_parse_ptr");
    check(avfilter_graph_config(g->graph.get(), nullptr), "avfilter_graph_config");
    graph_ = std::move(g);
  }

  AvFramePtr ref(av_frame_clone(in));
  if (!ref) throw InternalError("preprocess: av_frame_clone failed");
  check(av_buffersrc_add_frame_flags(graph_->src, ref.get(), AV_BUFFERSRC_FLAG_KEEP_REF), "av_buffersrc_add_frame");
  AvFramePtr out(av_frame_alloc());
  check(av_buffersink_get_frame(graph_->sink, out.get()), "av_buffersink_get_frame");
  if (out->width != config_.size || out->height != config_.size || out->format != AV_PIX_FMT_RGB24) {
    throw InternalError("preprocess: filter graph produced " + std::to_string(out->width) + "x" +
                        std::to_string(out->height) + " instead of " + std::to_string(config_.size) + " RGB");
  }
  RgbImage rgb;
  rgb.width = out->width;
  rgb.height = out->height;
  rgb.data.resize(static_cast<size_t>(rgb.width) * rgb.height * 3);
  for (int y = 0; y < rgb.height; ++y) {
    std::memcpy(rgb.data.data() + static_cast<size_t>(y) * rgb.width * 3, out->data[0] + y * out->linesize[0],
                static_cast<size_t>(rgb.width) * 3);
  }
  return rgb;
}

ImageTensor Preprocessor::normalise(const RgbImage& rgb) const {
  ImageTensor t;
  t.channels = 3;
  t.height = rgb.height;
  t.width = rgb.width;
  size_t plane = static_cast<size_t>(rgb.height) * rgb.width;
  t.data.resize(3 * plane);
  float* r = t.data.data();
  float* g = r + plane;
  float* b = g + plane;
  const uint8_t* p = rgb.data.data();
  for (size_t i = 0; i < plane; ++i, p += 3) {
    r[i] = lut_[0][p[0]];
    g[i] = lut_[1][p[1]];
    b[i] = lut_[2][p[2]];
  }
  return t;
}

ImageTensor Preprocessor::operator()(const Frame& frame) { return normalise(to_rgb(frame)); }

}  // namespace mustdrop::video
