/* A small RTSP server for the tests, on gst-rtsp-server. Binds 127.0.0.1 (port 0 = any free
 * port), prints "PORT <n>" once listening, serves /stream, and exits after --seconds.
 *   rtsp_test_server [--port N] [--file clip.mp4] [--seconds S]
 * Without --file it serves a live test pattern (640x360, 30 fps H.264); with --file it serves an
 * H.264 MP4 in real time, then ends the stream. */
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gboolean quit_loop(gpointer loop) {
  g_main_loop_quit((GMainLoop *)loop);
  return G_SOURCE_REMOVE;
}

int main(int argc, char **argv) {
  const char *port = "0";
  const char *file = NULL;
  int seconds = 60;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0) port = argv[i + 1];
    else if (strcmp(argv[i], "--file") == 0) file = argv[i + 1];
    else if (strcmp(argv[i], "--seconds") == 0) seconds = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  gst_init(&argc, &argv);
  GMainLoop *loop = g_main_loop_new(NULL, FALSE);
  GstRTSPServer *server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(server, "127.0.0.1");
  gst_rtsp_server_set_service(server, port);

  char launch[1024];
  if (file) {
    snprintf(launch, sizeof(launch),
             "( filesrc location=\"%s\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )", file);
  } else {
    snprintf(launch, sizeof(launch),
             "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! "
             "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! rtph264pay name=pay0 pt=96 "
             "config-interval=1 )");
  }
  GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new();
  gst_rtsp_media_factory_set_launch(factory, launch);
  gst_rtsp_media_factory_set_shared(factory, TRUE);
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(server);
  gst_rtsp_mount_points_add_factory(mounts, "/stream", factory);
  g_object_unref(mounts);

  if (gst_rtsp_server_attach(server, NULL) == 0) {
    fprintf(stderr, "rtsp_test_server: cannot listen on 127.0.0.1:%s\n", port);
    return 1;
  }
  printf("PORT %d\n", gst_rtsp_server_get_bound_port(server));
  fflush(stdout);
  g_timeout_add_seconds(seconds, quit_loop, loop);
  g_main_loop_run(loop);
  return 0;
}
