#include "video/frame.h"

#include "core/error.h"
#include "video/av_ptr.h"

namespace mustdrop::video {

void AvFrameDeleter::operator()(AVFrame* frame) const { av_frame_free(&frame); }

Frame Frame::clone() const {
  Frame out;
  if (image) {
    out.image.reset(av_frame_clone(image.get()));
    if (!out.image) throw InternalError("av_frame_clone failed (out of memory)");
  }
  out.pts_sec = pts_sec;
  out.t_sec = t_sec;
  out.index = index;
  out.rotation_deg = rotation_deg;
  out.still_image = still_image;
  out.after_outage = after_outage;
  return out;
}

int Frame::width() const { return image ? image->width : 0; }
int Frame::height() const { return image ? image->height : 0; }

void add_stats(SourceStats& total, const SourceStats& part) {
  total.n_packets += part.n_packets;
  total.n_frames_decoded += part.n_frames_decoded;
  total.n_corrupt_packets += part.n_corrupt_packets;
  total.n_corrupt_frames += part.n_corrupt_frames;
  total.n_timestamp_repairs += part.n_timestamp_repairs;
  total.truncated = total.truncated || part.truncated;
  if (total.damage.empty()) total.damage = part.damage;
}

}  // namespace mustdrop::video
