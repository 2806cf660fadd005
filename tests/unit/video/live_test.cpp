// Live sources against a local RTSP server (gst-rtsp-server on 127.0.0.1, free port):
// receiving, reconnecting after the server dies, timeouts, and the newest-frames queue.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

extern "C" {
#include <libavutil/frame.h>
}

#include "clips.h"
#include "core/error.h"
#include "video/async_reader.h"
#include "video/latest_queue.h"
#include "video/source.h"

namespace mustdrop::test {
namespace {

using Clock = std::chrono::steady_clock;

TEST(LatestQueue, KeepsTheNewestAndCountsDrops) {
  video::LatestQueue<int> q(3);
  for (int i = 0; i < 10; ++i) q.push(i);
  EXPECT_EQ(q.n_dropped(), 7);
  EXPECT_EQ(q.n_pushed(), 10);
  EXPECT_EQ(*q.pop(std::chrono::milliseconds(0)), 7);
  EXPECT_EQ(*q.pop(std::chrono::milliseconds(0)), 8);
  EXPECT_EQ(*q.pop(std::chrono::milliseconds(0)), 9);
  EXPECT_FALSE(q.pop(std::chrono::milliseconds(10)));
  q.close();
  q.push(11);
  EXPECT_TRUE(q.closed_and_empty());
}

TEST(LatestQueue, CloseWakesAWaitingConsumer) {
  video::LatestQueue<int> q(2);
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    q.close();
  });
  auto t0 = Clock::now();
  EXPECT_FALSE(q.pop(std::chrono::seconds(30)));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(20));
  t.join();
}

#ifdef MUSTDROP_RTSP_SERVER

RtspServer start_server(int port = 0, const std::string& file = "") { return start_rtsp_server(port, file); }

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

config::VideoConfig live_config() {
  config::VideoConfig c;
  c.live.read_timeout_ms = 1500;
  c.live.open_timeout_ms = 3000;
  c.live.initial_connect_sec = 10;
  c.live.watchdog_sec = 5;
  c.live.reconnect.initial_delay_ms = 100;
  c.live.reconnect.max_delay_ms = 500;
  c.live.reconnect.max_attempts = 0;
  return c;
}

// Sum of the luma plane: a cheap fingerprint of a decoded picture.
uint64_t luma_sum(const video::Frame& f) {
  uint64_t sum = 0;
  for (int y = 0; y < f.image->height; ++y) {
    const uint8_t* row = f.image->data[0] + y * f.image->linesize[0];
    for (int x = 0; x < f.image->width; ++x) sum += row[x];
  }
  return sum;
}

TEST(Rtsp, ReceivesFramesOverTcpAndUdp) {
  RtspServer server = start_server();
  ASSERT_GT(server.port, 0) << "test RTSP server did not start";
  for (const char* transport : {"tcp", "udp"}) {
    config::VideoConfig c = live_config();
    c.live.transport = transport;
    auto source = video::open_source(server.url(), c);
    EXPECT_TRUE(source->info().live);
    EXPECT_EQ(source->info().codec, "h264");
    double last_t = -1;
    for (int i = 0; i < 15; ++i) {
      auto f = source->next();
      ASSERT_TRUE(f) << transport << " frame " << i;
      EXPECT_EQ(f->width(), 640);
      EXPECT_GE(f->t_sec, last_t);
      last_t = f->t_sec;
    }
  }
}

TEST(Rtsp, FileServedOverRtspMatchesDirectDecoding) {
  std::string clip = h264_mp4();
  auto direct = video::open_source(clip, config::VideoConfig{});
  std::vector<uint64_t> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(luma_sum(*direct->next()));
  RtspServer server = start_server(0, clip);
  ASSERT_GT(server.port, 0);
  auto source = video::open_source(server.url(), live_config());
  for (int i = 0; i < 10; ++i) {
    auto f = source->next();
    ASSERT_TRUE(f) << i;
    EXPECT_EQ(luma_sum(*f), expected[i]) << "frame " << i;
  }
}

// Reads frames until the source has reconnected `reconnects` times, then `after` more frames.
// Frames buffered before the failure come first; `max_frames` bounds the whole read.
int read_through_reconnect(video::Source& source, int reconnects, int after, double* last_t, int max_frames = 3000) {
  int got_after = 0;
  for (int i = 0; i < max_frames && got_after < after; ++i) {
    auto f = source.next();
    if (!f) break;
    EXPECT_GT(f->t_sec, *last_t);
    *last_t = f->t_sec;
    if (source.stats().n_reconnects >= reconnects) ++got_after;
  }
  return got_after;
}

TEST(Rtsp, ReconnectsWhenTheServerIsKilledAndRestarted) {
  RtspServer server = start_server();
  ASSERT_GT(server.port, 0);
  int port = server.port;
  auto source = video::open_source(server.url(), live_config());
  double last_t = -1;
  for (int i = 0; i < 10; ++i) {
    auto f = source->next();
    ASSERT_TRUE(f);
    last_t = f->t_sec;
  }
  server.child->signal(SIGKILL);
  server.child->wait(10);
  // Restart on the same port a moment later, from another thread, while the reader retries.
  RtspServer again;
  std::thread restarter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    again = start_server(port);
  });
  int got = read_through_reconnect(*source, 1, 10, &last_t);
  restarter.join();
  ASSERT_GT(again.port, 0) << "could not restart the server on port " << port;
  EXPECT_EQ(got, 10);
  EXPECT_GE(source->stats().n_disconnects, 1);
  EXPECT_GE(source->stats().n_reconnects, 1);
}

TEST(Rtsp, SilentServerTimesOutAndReconnectsWhenItWakes) {
  RtspServer server = start_server();
  ASSERT_GT(server.port, 0);
  auto source = video::open_source(server.url(), live_config());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(source->next());
  server.child->signal(SIGSTOP);  // the socket stays open, nothing arrives: only timeouts can tell
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    server.child->signal(SIGCONT);
  });
  double last_t = -1;
  int got = read_through_reconnect(*source, 1, 5, &last_t);
  waker.join();
  EXPECT_EQ(got, 5);
  EXPECT_GE(source->stats().n_disconnects, 1);
}

TEST(Rtsp, ServerThatNeverStartsGivesATimeoutErrorInTime) {
  int port = free_port();
  config::VideoConfig c = live_config();
  c.live.initial_connect_sec = 2;
  std::string url = "rtsp://127.0.0.1:" + std::to_string(port) + "/stream";
  auto t0 = Clock::now();
  try {
    video::open_source(url, c);
    FAIL() << "connected to nothing";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(url), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30));  // generous: the setting is 2 s
}

TEST(Rtsp, SlowConsumerGetsTheNewestFramesAndDropsAreCounted) {
  RtspServer server = start_server();
  ASSERT_GT(server.port, 0);
  config::VideoConfig c = live_config();
  config::SamplerConfig every;
  every.kind = config::SamplerKind::kFps;
  every.fps = 1000;  // every frame
  every.frames = 0;
  video::AsyncReader reader(video::open_source(server.url(), c), video::make_sampler(every), 2);
  auto first = reader.pop(std::chrono::seconds(20));
  ASSERT_TRUE(first);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // ~45 frames arrive meanwhile
  auto later = reader.pop(std::chrono::seconds(20));
  ASSERT_TRUE(later);
  EXPECT_GT(reader.n_dropped(), 10);
  EXPECT_GT(later->t_sec - first->t_sec, 1.0);  // not the frame right after the first one
  reader.stop();
}

#endif  // MUSTDROP_RTSP_SERVER

}  // namespace
}  // namespace mustdrop::test
