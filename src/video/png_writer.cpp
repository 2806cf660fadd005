#include "video/png_writer.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "video/av_ptr.h"

namespace mustdrop::video {

void write_png(const RgbImage& image, const std::string& path) {
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  if (!codec) throw InternalError("this libav build has no PNG encoder");
  CodecContextPtr enc(avcodec_alloc_context3(codec));
  if (!enc) throw InternalError("avcodec_alloc_context3(png) failed");
  enc->width = image.width;
  enc->height = image.height;
  enc->pix_fmt = AV_PIX_FMT_RGB24;
  enc->time_base = AVRational{1, 1};
  int ret = avcodec_open2(enc.get(), codec, nullptr);
  if (ret < 0) throw InternalError("png encoder: avcodec_open2 failed: " + av_error_text(ret));

  AvFramePtr frame(av_frame_alloc());
  frame->width = image.width;
  frame->height = image.height;
  frame->format = AV_PIX_FMT_RGB24;
  ret = av_frame_get_buffer(frame.get(), 0);
  if (ret < 0) throw InternalError("png encoder: av_frame_get_buffer failed: " + av_error_text(ret));
  for (int y = 0; y < image.height; ++y) {
    std::memcpy(frame->data[0] + y * frame->linesize[0], image.data.data() + static_cast<size_t>(y) * image.width * 3,
                static_cast<size_t>(image.width) * 3);
  }
  PacketPtr pkt(av_packet_alloc());
  ret = avcodec_send_frame(enc.get(), frame.get());
  if (ret >= 0) ret = avcodec_send_frame(enc.get(), nullptr);
  if (ret < 0) throw InternalError("png encoder: avcodec_send_frame failed: " + av_error_text(ret));
  ret = avcodec_receive_packet(enc.get(), pkt.get());
  if (ret < 0) throw InternalError("png encoder: avcodec_receive_packet failed: " + av_error_text(ret));

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(pkt->data), pkt->size);
  out.close();
  if (!out) throw InputError(path + ": cannot write PNG file");
}

}  // namespace mustdrop::video
