#include "video/media_reader.h"

extern "C" {
#include <libavutil/display.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
}

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::video {
namespace {

using Clock = std::chrono::steady_clock;

void av_log_to_facade(void* avcl, int level, const char* fmt, va_list args) {
  if (level > AV_LOG_WARNING) return;  // info and chatter stay out
  if (!log::enabled(log::Level::kDebug)) return;
  char line[1024];
  int print_prefix = 1;
  av_log_format_line2(avcl, level, fmt, args, line, sizeof(line), &print_prefix);
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (!text.empty()) log::write(log::Level::kDebug, "libav", text);
}

// Clockwise rotation (0/90/180/270) that makes a picture with this display matrix upright.
int rotation_from_matrix(const int32_t* matrix) {
  if (!matrix) return 0;
  double theta = -std::round(av_display_rotation_get(matrix));
  if (std::isnan(theta)) return 0;
  theta -= 360.0 * std::floor(theta / 360.0 + 0.9 / 360.0);
  int deg = static_cast<int>(std::lround(theta / 90.0)) * 90;
  return ((deg % 360) + 360) % 360;
}

double to_sec(int64_t ts, AVRational tb) { return static_cast<double>(ts) * av_q2d(tb); }

bool is_missing_file(const std::string& url) {
  if (url.find("://") != std::string::npos) return false;
  struct stat st {};
  return ::stat(url.c_str(), &st) != 0;
}

}  // namespace

void install_av_log_bridge() {
  static std::once_flag once;
  std::call_once(once, [] {
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(av_log_to_facade);
  });
}

int MediaReader::interrupt_callback(void* opaque) {
  auto* self = static_cast<MediaReader*>(opaque);
  if (self->options_.stop && self->options_.stop->load()) return 1;
  auto now = Clock::now();
  if (now > self->deadline_) return 1;
  if (self->options_.live && self->options_.watchdog_sec > 0 &&
      now - self->last_frame_at_ > std::chrono::duration<double>(self->options_.watchdog_sec)) {
    self->watchdog_fired_ = true;
    return 1;
  }
  return 0;
}

void MediaReader::arm_deadline(int timeout_ms) {
  if (!options_.network || timeout_ms <= 0) {
    deadline_ = Clock::time_point::max();
  } else {
    deadline_ = Clock::now() + std::chrono::milliseconds(timeout_ms);
  }
}

MediaReader::MediaReader(ReaderOptions options) : options_(std::move(options)) {
  install_av_log_bridge();
  const std::string& url = options_.url;
  auto fail = [&](const std::string& what) -> void {
    if (options_.live) throw StreamError(url + ": " + what);
    throw InputError(url + ": " + what);
  };
  if (!options_.network && is_missing_file(url)) throw InputError(url + ": no such file");

  AVFormatContext* raw = avformat_alloc_context();
  if (!raw) throw InternalError("avformat_alloc_context failed (out of memory)");
  raw->interrupt_callback.callback = &MediaReader::interrupt_callback;
  raw->interrupt_callback.opaque = this;
  last_frame_at_ = Clock::now();

  AVDictionary* opts = nullptr;
  if (options_.network) {
    av_dict_set_int(&opts, "timeout", static_cast<int64_t>(options_.read_timeout_ms) * 1000, 0);
    if (url.rfind("rtsp", 0) == 0) av_dict_set(&opts, "rtsp_transport", options_.rtsp_transport.c_str(), 0);
  }
  arm_deadline(options_.open_timeout_ms);
  int ret = avformat_open_input(&raw, url.c_str(), nullptr, &opts);  // frees raw on failure
  av_dict_free(&opts);
  if (ret < 0) {
    if (ret == AVERROR(ENOENT)) fail("no such file");
    if (ret == AVERROR_INVALIDDATA) fail("not a video: libav cannot recognise the data (" + av_error_text(ret) + ")");
    if (ret == AVERROR_EXIT) fail("timed out or interrupted while opening");
    fail("cannot open (avformat_open_input: " + av_error_text(ret) + ")");
  }
  format_.reset(raw);

  arm_deadline(options_.open_timeout_ms);
  ret = avformat_find_stream_info(format_.get(), nullptr);
  if (ret < 0) fail("cannot read stream information (avformat_find_stream_info: " + av_error_text(ret) + ")");

  // A video stream that is not cover art; prefer libav's own choice.
  int best = av_find_best_stream(format_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  std::string others;
  for (unsigned i = 0; i < format_->nb_streams; ++i) {
    const AVStream* st = format_->streams[i];
    const AVCodecParameters* par = st->codecpar;
    bool usable = par->codec_type == AVMEDIA_TYPE_VIDEO && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC);
    if (usable && (stream_index_ < 0 || static_cast<int>(i) == best)) stream_index_ = static_cast<int>(i);
    if (!others.empty()) others += ", ";
    const char* type = av_get_media_type_string(par->codec_type);
    others += std::string(type ? type : "unknown") + " " + avcodec_get_name(par->codec_id);
  }
  if (stream_index_ < 0) {
    fail("no video stream (streams found: " + (others.empty() ? std::string("none") : others) + ")");
  }
  AVStream* st = format_->streams[stream_index_];
  time_base_ = st->time_base;

  const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
  if (!codec) fail(std::string("no decoder for codec '") + avcodec_get_name(st->codecpar->codec_id) + "' in this libav build");
  decoder_.reset(avcodec_alloc_context3(codec));
  if (!decoder_) throw InternalError("avcodec_alloc_context3 failed (out of memory)");
  ret = avcodec_parameters_to_context(decoder_.get(), st->codecpar);
  if (ret < 0) fail("bad codec parameters (" + av_error_text(ret) + ")");
  decoder_->thread_count = options_.decoder_threads;
  decoder_->pkt_timebase = st->time_base;
  ret = avcodec_open2(decoder_.get(), codec, nullptr);
  if (ret < 0) fail(std::string("cannot open decoder '") + codec->name + "' (" + av_error_text(ret) + ")");
  packet_.reset(av_packet_alloc());
  if (!packet_) throw InternalError("av_packet_alloc failed (out of memory)");

  info_.url = url;
  info_.container = format_->iformat->name;
  info_.codec = codec->name;
  info_.width = st->codecpar->width;
  info_.height = st->codecpar->height;
  info_.rotation_deg = rotation_from_matrix(
      reinterpret_cast<const int32_t*>(av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, nullptr)));
  AVRational sar = av_guess_sample_aspect_ratio(format_.get(), st, nullptr);
  double aspect = (sar.num > 0 && sar.den > 0) ? av_q2d(sar) : 1.0;
  int dw = static_cast<int>(std::lround(info_.width * aspect));
  bool swap = info_.rotation_deg == 90 || info_.rotation_deg == 270;
  info_.display_width = swap ? info_.height : dw;
  info_.display_height = swap ? dw : info_.height;
  AVRational rate = st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
  info_.avg_fps = (rate.num > 0 && rate.den > 0) ? av_q2d(rate) : 0.0;
  frame_period_sec_ = info_.avg_fps > 0 ? 1.0 / info_.avg_fps : 0.0;
  if (st->start_time != AV_NOPTS_VALUE) {
    info_.start_sec = to_sec(st->start_time, time_base_);
  } else if (format_->start_time != AV_NOPTS_VALUE) {
    info_.start_sec = static_cast<double>(format_->start_time) / AV_TIME_BASE;
  }
  if (st->duration != AV_NOPTS_VALUE && st->duration > 0) {
    info_.duration_sec = to_sec(st->duration, time_base_);
  } else if (format_->duration != AV_NOPTS_VALUE && format_->duration > 0) {
    info_.duration_sec = static_cast<double>(format_->duration) / AV_TIME_BASE;
  }
  info_.declared_frames = st->nb_frames > 0 ? st->nb_frames : -1;
  info_.live = options_.live;
  info_.seekable = !options_.live && format_->pb && (format_->pb->seekable & AVIO_SEEKABLE_NORMAL);

  // Where the container's index says the data ends; a file shorter than that was cut off.
  int64_t index_end_byte = -1;
  int n_index = avformat_index_get_entries_count(st);
  for (int i = 0; i < n_index; ++i) {
    const AVIndexEntry* e = avformat_index_get_entry(st, i);
    if (e && e->pos >= 0) index_end_byte = std::max<int64_t>(index_end_byte, e->pos + e->size);
  }
  int64_t file_size = (!options_.network && format_->pb) ? avio_size(format_->pb) : -1;
  if (index_end_byte > 0 && file_size > 0 && file_size < index_end_byte) {
    stats_.truncated = true;
    stats_.damage = "truncated: the file has " + std::to_string(file_size) + " bytes but its index reaches byte " +
                    std::to_string(index_end_byte);
  }
  last_frame_at_ = Clock::now();
}

MediaReader::~MediaReader() {
  // Closing an RTSP session sends TEARDOWN; the deadline bounds it when the server is silent.
  arm_deadline(options_.open_timeout_ms);
  if (options_.network && options_.live) deadline_ = Clock::now() + std::chrono::milliseconds(500);
  format_.reset();
}

void MediaReader::note_end_of_data(int read_error) {
  if (options_.live) return;
  if (read_error != 0 && read_error != AVERROR_EOF && read_error != AVERROR_EXIT) {
    stats_.truncated = true;
    if (stats_.damage.empty()) {
      stats_.damage = "read error after " + std::to_string(stats_.n_frames_decoded) +
                      " frames (" + av_error_text(read_error) + ")";
    }
  }
  if (format_->pb && format_->pb->error < 0 && format_->pb->error != AVERROR_EOF && !stats_.truncated) {
    stats_.truncated = true;
    if (stats_.damage.empty()) stats_.damage = "I/O error (" + av_error_text(format_->pb->error) + ")";
  }
}

bool MediaReader::av_read_packet(int* error) {
  arm_deadline(options_.read_timeout_ms);
  int ret = av_read_frame(format_.get(), packet_.get());
  *error = ret;
  return ret >= 0;
}

AvFramePtr MediaReader::read_frame(double* pts_sec) {
  if (finished_) return nullptr;
  AvFramePtr frame(av_frame_alloc());
  if (!frame) throw InternalError("av_frame_alloc failed (out of memory)");
  for (;;) {
    if (options_.stop && options_.stop->load()) {
      finished_ = true;
      return nullptr;
    }
    int ret = avcodec_receive_frame(decoder_.get(), frame.get());
    if (ret == 0) {
      ++stats_.n_frames_decoded;
      if (frame->decode_error_flags || (frame->flags & AV_FRAME_FLAG_CORRUPT)) ++stats_.n_corrupt_frames;
      // The frame's own pts first: libav's best-effort guess goes wrong on some files with
      // B-frames (opencv's box.mp4). Output order is presentation order, so time never runs
      // backwards: a timestamp that does is replaced by the previous one plus a frame period.
      int64_t ts = frame->pts != AV_NOPTS_VALUE ? frame->pts : frame->best_effort_timestamp;
      double t = ts != AV_NOPTS_VALUE ? to_sec(ts, time_base_)
                                      : (have_last_pts_ ? last_pts_sec_ + frame_period_sec_ : info_.start_sec);
      if (have_last_pts_ && t <= last_pts_sec_) {
        ++stats_.n_timestamp_repairs;
        t = last_pts_sec_ + (frame_period_sec_ > 0 ? frame_period_sec_ : 1e-3);
      }
      last_pts_sec_ = t;
      have_last_pts_ = true;
      last_frame_at_ = Clock::now();
      *pts_sec = t;
      return frame;
    }
    if (ret == AVERROR_EOF) {
      finished_ = true;
      return nullptr;
    }
    if (ret != AVERROR(EAGAIN)) {
      // A decoder error on one picture: count it and go on with the next packet.
      ++stats_.n_corrupt_packets;
      MD_LOG_DEBUG("video", describe() << ": avcodec_receive_frame: " << av_error_text(ret));
      if (draining_) {
        finished_ = true;
        return nullptr;
      }
    }
    if (draining_) continue;

    int err = 0;
    if (!av_read_packet(&err)) {
      if (options_.live) {
        if (watchdog_fired_) {
          throw StreamError(describe() + ": no frame for " + std::to_string(options_.watchdog_sec) + " s (watchdog)");
        }
        if (err == AVERROR_EOF) throw StreamError(describe() + ": the server ended the stream (end of file)");
        if (err == AVERROR_EXIT && !(options_.stop && options_.stop->load())) {
          throw StreamError(describe() + ": read timed out");
        }
        if (err != AVERROR_EXIT) throw StreamError(describe() + ": read failed (" + av_error_text(err) + ")");
      }
      note_end_of_data(err);
      // Flush: a null packet drains the frames the decoder still holds.
      avcodec_send_packet(decoder_.get(), nullptr);
      draining_ = true;
      continue;
    }
    if (packet_->stream_index != stream_index_) {
      av_packet_unref(packet_.get());
      continue;
    }
    ++stats_.n_packets;
    if (packet_->flags & AV_PKT_FLAG_CORRUPT) {
      ++stats_.n_corrupt_packets;
      if (stats_.damage.empty()) stats_.damage = "corrupt packets (first at packet " + std::to_string(stats_.n_packets) + ")";
    }
    ret = avcodec_send_packet(decoder_.get(), packet_.get());
    av_packet_unref(packet_.get());
    if (ret < 0 && ret != AVERROR(EAGAIN)) {
      ++stats_.n_corrupt_packets;
      if (stats_.damage.empty()) {
        stats_.damage = "corrupt packets skipped (first at packet " + std::to_string(stats_.n_packets) + ": " +
                        av_error_text(ret) + ")";
      }
      MD_LOG_DEBUG("video", describe() << ": skipped packet " << stats_.n_packets << ": " << av_error_text(ret));
    }
  }
}

bool MediaReader::seek(double pts_sec) {
  if (!info_.seekable) return false;
  int64_t ts = static_cast<int64_t>(std::floor(pts_sec / av_q2d(time_base_)));
  arm_deadline(options_.read_timeout_ms);
  int ret = av_seek_frame(format_.get(), stream_index_, ts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) {
    MD_LOG_DEBUG("video", describe() << ": seek to " << pts_sec << " s failed: " << av_error_text(ret));
    return false;
  }
  avcodec_flush_buffers(decoder_.get());
  draining_ = false;
  finished_ = false;
  have_last_pts_ = false;
  return true;
}

std::optional<std::vector<double>> MediaReader::scan_packet_times() {
  std::vector<double> times;
  int err = 0;
  bool untimed = false, reordered = false;
  while (!untimed && av_read_packet(&err)) {
    if (packet_->stream_index == stream_index_) {
      if (packet_->pts == AV_NOPTS_VALUE) {
        untimed = true;  // AVI gives I/P packets only a decode time, which is not when they show
      } else {
        double t = to_sec(packet_->pts, time_base_);
        reordered = reordered || (!times.empty() && t < times.back());
        times.push_back(t);
      }
    }
    av_packet_unref(packet_.get());
  }
  finished_ = true;
  if (untimed) return std::nullopt;
  // A codec that reorders pictures whose packets' times never run backwards in decode order:
  // the file stamped decode times as presentation times (opencv's box.mp4).
  if (format_->streams[stream_index_]->codecpar->video_delay > 0 && !reordered) return std::nullopt;
  std::sort(times.begin(), times.end());
  times.erase(std::unique(times.begin(), times.end()), times.end());
  return times;
}

}  // namespace mustdrop::video
