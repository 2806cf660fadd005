// The OpenAI-compatible server over cpp-httplib 0.11 (Debian 12). Routing is ours: one catch-all
// handler per method, so authentication, 404/405, the body limit and exceptions are handled in
// one place. Streams use httplib's chunked content provider, which calls us again and again on
// the connection's thread; each call waits briefly for the answer and checks the client.
#include "serve/api_server.h"

#include <httplib.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::serve {
namespace {

using nlohmann::json;
using Response = httplib::Response;
constexpr auto kPoll = std::chrono::milliseconds(100);  // how long a stream waits before checking its client
constexpr int64_t kDrainBytes = 64 << 20;                // of an oversized chunked body, read and dropped

// Model text may split or garble UTF-8; a reply must never fail on it.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* error_type(int status) {
  if (status == 401) return "authentication_error";
  if (status == 429) return "rate_limit_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

json error_body(int status, const std::string& message, const json& param = nullptr, const json& code = nullptr) {
  return {{"error", {{"message", message}, {"type", error_type(status)}, {"param", param}, {"code", code}}}};
}

void reply_json(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void reply_error(Response& res, int status, const std::string& message, const json& param = nullptr,
                 const json& code = nullptr) {
  reply_json(res, status, error_body(status, message, param, code));
}

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence.
size_t utf8_complete_prefix(const std::string& s) {
  size_t back = 0;  // continuation bytes seen from the end
  for (size_t i = s.size(); i > 0 && back < 4; --i, ++back) {
    const auto c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    return back + 1 >= need ? s.size() : i - 1;
  }
  return s.size();  // no lead byte: invalid anyway, sent as is (replaced)
}

// A client mistake in a chat request: 400 naming the parameter.
struct BadRequest {
  std::string message;
  std::string param;
};

void need(bool ok, const std::string& message, const std::string& param) {
  if (!ok) throw BadRequest{message, param};
}

// The member `key` of an object; nullptr when absent or null.
const json* field(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// A message's text: a string, or the "text" of its parts of type "text" joined by '\n'.
std::string content_text(const json* content, const std::string& where) {
  if (content == nullptr || content->is_string()) return content == nullptr ? "" : content->get<std::string>();
  need(content->is_array(), where + ".content must be a string or an array of parts", where + ".content");
  std::string out;
  for (const json& part : *content) {
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    need(type != nullptr && type->is_string(), "each part of " + where + ".content needs a string \"type\"", where + ".content");
    if (*type != "text") continue;  // images and audio are not for us
    const json* text = field(part, "text");
    need(text != nullptr && text->is_string(), "a text part of " + where + ".content needs a string \"text\"", where + ".content");
    out += (out.empty() ? "" : "\n") + text->get<std::string>();
  }
  return out;
}

ChatRequest parse_chat(const json& body) {
  need(body.is_object(), "the request body must be a JSON object", "");
  ChatRequest r;
  const json* model = field(body, "model");
  need(model == nullptr || model->is_string(), "\"model\" must be a string", "model");
  if (model != nullptr) r.source_id = model->get<std::string>();
  const json* messages = field(body, "messages");
  need(messages != nullptr && messages->is_array() && !messages->empty(), "\"messages\" must be a non-empty array", "messages");
  bool have_user = false;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    need(m.is_object(), where + " must be an object", where);
    const json* role = field(m, "role");
    need(role != nullptr && role->is_string(), where + ".role must be a string", where + ".role");
    const std::string text = content_text(field(m, "content"), where);
    if (*role == "user") r.question = text;
    if (*role == "system" || *role == "developer") r.system += (r.system.empty() ? "" : "\n") + text;
    have_user = have_user || *role == "user";
  }
  need(have_user, "\"messages\" has no message with role \"user\"", "messages");
  need(!r.question.empty(), "the last user message has no text", "messages");
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    const json* v = field(body, key);
    need(v == nullptr || (v->is_number_integer() && *v >= 1 && *v <= INT_MAX),
         std::string("\"") + key + "\" must be a positive integer", key);
    if (v != nullptr) r.max_tokens = v->get<int>();
  }
  const json* t = field(body, "temperature");
  need(t == nullptr || (t->is_number() && *t >= 0 && *t <= 2), "\"temperature\" must be a number from 0 to 2", "temperature");
  if (t != nullptr) r.temperature = t->get<double>();
  const json* stream = field(body, "stream");
  need(stream == nullptr || stream->is_boolean(), "\"stream\" must be a boolean", "stream");
  r.stream = stream != nullptr && stream->get<bool>();
  const json* so = field(body, "stream_options");
  const json* usage = so != nullptr && so->is_object() ? field(*so, "include_usage") : nullptr;
  need(so == nullptr || (so->is_object() && (usage == nullptr || usage->is_boolean())),
       "\"stream_options\" must be an object with a boolean \"include_usage\"", "stream_options");
  r.include_usage = usage != nullptr && usage->get<bool>();
  return r;
}

// How an answer ended.
struct Outcome {
  bool failed = false;
  int status = 500;
  std::string message;
  ChatUsage usage;
  std::string finish_reason;
  json extra;
};

class Sink final : public ChatSink {
 public:
  struct Events {
    std::vector<std::string> pieces;  // text since the last call
    std::optional<Outcome> end;       // set once the answer ended
    bool cancelled = false;
  };

  void text(const std::string& piece) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (end_ || cancelled_) return;
    pieces_.push_back(piece);
    cv_.notify_all();
  }
  void done(const ChatUsage& usage, const std::string& finish_reason, const json& extra) override {
    finish(Outcome{false, 200, "", usage, finish_reason.empty() ? "stop" : finish_reason, extra});
  }
  void fail(int http_status, const std::string& message) override {
    finish(Outcome{true, http_status >= 400 && http_status <= 599 ? http_status : 500, message, {}, "", nullptr});
  }
  const std::atomic<bool>* cancelled() const override { return &cancelled_; }

  void cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }
  // Waits up to `wait` for text, the end or cancellation, and takes what arrived.
  Events next(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [&] { return !pieces_.empty() || end_ || cancelled_; });
    Events ev{std::move(pieces_), end_, cancelled_};
    pieces_.clear();
    return ev;
  }

 private:
  void finish(Outcome outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    if (end_ || cancelled_) return;
    end_ = std::move(outcome);
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> pieces_;
  std::optional<Outcome> end_;
  std::atomic<bool> cancelled_{false};
};

// What every reply of one completion shares.
struct Reply {
  std::string id;
  int64_t created = 0;
  std::string model;  // the request's model, else the one admission chose ("" = from extra)
};

std::string resolved_model(const Reply& reply, const json& extra) {
  if (!reply.model.empty() || !extra.is_object()) return reply.model;
  const auto source = extra.find("source");
  return source != extra.end() && source->is_string() ? source->get<std::string>() : "";
}

json usage_json(const ChatUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json chunk(const Reply& r, const std::string& model, json delta, json finish_reason) {
  return {{"id", r.id}, {"object", "chat.completion.chunk"}, {"created", r.created}, {"model", model},
          {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}}})}};
}

struct Stream {
  std::shared_ptr<Sink> sink;
  Reply reply;
  bool include_usage = false;
  bool started = false;
  bool finished = false;
  std::string carry;  // an incomplete UTF-8 character held back for the next piece
};

bool write_event(httplib::DataSink& out, const std::string& data) {
  const std::string event = "data: " + data + "\n\n";
  return out.write(event.data(), event.size());
}

// One call of httplib's chunked provider: sends what the answer produced within kPoll. False
// when the client is gone or the server stops.
bool stream_step(Stream& st, httplib::DataSink& out) {
  if (!st.started) {
    st.started = true;
    return write_event(out, dump(chunk(st.reply, st.reply.model, {{"role", "assistant"}, {"content", ""}}, nullptr)));
  }
  Sink::Events ev = st.sink->next(kPoll);
  for (const std::string& piece : ev.pieces) {
    st.carry += piece;
    const size_t n = utf8_complete_prefix(st.carry);
    if (n == 0) continue;
    if (!write_event(out, dump(chunk(st.reply, st.reply.model, {{"content", st.carry.substr(0, n)}}, nullptr)))) return false;
    st.carry.erase(0, n);
  }
  if (ev.end) {
    st.finished = true;
    if (!st.carry.empty() && !write_event(out, dump(chunk(st.reply, st.reply.model, {{"content", st.carry}}, nullptr)))) {
      return false;
    }
    json last;
    if (ev.end->failed) {
      last = error_body(ev.end->status, ev.end->message);
    } else {
      last = chunk(st.reply, resolved_model(st.reply, ev.end->extra), json::object(), ev.end->finish_reason);
      last["mustdrop"] = ev.end->extra;
      if (st.include_usage) last["usage"] = usage_json(ev.end->usage);
    }
    if (!write_event(out, dump(last)) || !write_event(out, "[DONE]")) return false;
    out.done();
    return true;
  }
  return !ev.cancelled && out.is_writable();  // is_writable() peeks: false once the client hung up
}

std::string host_port(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

struct ApiServer::Impl {
  ServerOptions opt;
  Handlers h;
  httplib::Server http;
  std::thread listener;
  int port = 0;
  std::mutex mu;  // guards sinks and stopped
  std::vector<std::weak_ptr<Sink>> sinks;
  bool stopped = false;
  std::mutex join_mu;
  std::atomic<uint64_t> n_replies{0};
  uint64_t id_salt = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();

  void serve(const httplib::Request& req, Response& res, const httplib::ContentReader* reader);
  bool read_body(const httplib::Request& req, Response& res, const httplib::ContentReader& reader, std::string& body);
  bool authorized(const httplib::Request& req) const;
  void dispatch(const httplib::Request& req, Response& res, const std::string& body);
  void chat(Response& res, const std::string& body);
  void track(const std::shared_ptr<Sink>& sink);
};

void ApiServer::Impl::serve(const httplib::Request& req, Response& res, const httplib::ContentReader* reader) {
  try {
    std::string body;
    if (reader != nullptr && !read_body(req, res, *reader, body)) return;
    dispatch(req, res, body);
  } catch (const std::exception& e) {
    MD_LOG_WARN("serve", req.method << " " << req.path << " failed: " << e.what());
    res.headers.clear();
    reply_error(res, 500, std::string("internal error: ") + e.what());
  } catch (...) {
    MD_LOG_WARN("serve", req.method << " " << req.path << " failed with an unknown exception");
    res.headers.clear();
    reply_error(res, 500, "internal error");
  }
}

bool ApiServer::Impl::read_body(const httplib::Request& req, Response& res, const httplib::ContentReader& reader,
                                std::string& body) {
  // Without a length or chunking a request has no body (httplib would read until the client closes).
  if (!req.has_header("Content-Length") && strcasecmp(req.get_header_value("Transfer-Encoding").c_str(), "chunked") != 0) {
    return true;
  }
  // httplib checks Content-Length itself (413, after skipping the body); chunked or compressed
  // bodies are counted here. Past the limit the rest is read and dropped (up to kDrainBytes), so
  // the client is not reset before it reads the 413.
  int64_t total = 0;
  const bool ok = reader([&](const char* data, size_t n) {
    total += static_cast<int64_t>(n);
    if (total <= opt.max_body_bytes) body.append(data, n);
    return total <= opt.max_body_bytes + kDrainBytes;
  });
  const bool too_big = total > opt.max_body_bytes || res.status == 413;
  if (ok && !too_big) return true;
  if (!ok && res.status != 413) res.set_header("Connection", "close");  // the rest of the body is unread
  if (too_big) {
    reply_error(res, 413, "the request body exceeds " + std::to_string(opt.max_body_bytes) + " bytes", nullptr,
                "request_too_large");
  } else {
    reply_error(res, 400, "could not read the request body");
  }
  return false;
}

bool ApiServer::Impl::authorized(const httplib::Request& req) const {
  if (opt.bearer_token.empty()) return true;
  const std::string value = req.get_header_value("Authorization");
  if (value.size() < 7 || strncasecmp(value.c_str(), "Bearer ", 7) != 0) return false;
  std::string token = value.substr(7);
  token.erase(0, token.find_first_not_of(' '));
  if (token.size() != opt.bearer_token.size()) return false;
  unsigned char diff = 0;  // constant time: no early exit on the first wrong byte
  for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(token[i] ^ opt.bearer_token[i]);
  return diff == 0;
}

void ApiServer::Impl::dispatch(const httplib::Request& req, Response& res, const std::string& body) {
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  const auto not_found = [&] { reply_error(res, 404, "no such endpoint: " + req.method + " " + path, nullptr, "not_found"); };
  const auto allow = [&](bool ok, const char* method) {
    if (!ok) {
      res.set_header("Allow", method);
      reply_error(res, 405, path + " takes " + method + ", not " + req.method, nullptr, "method_not_allowed");
    }
    return ok;
  };
  if (path == "/healthz") {
    if (!allow(get, "GET")) return;
    const bool ok = !h.healthy || h.healthy();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok\n" : "unhealthy\n", "text/plain");
    return;
  }
  if (path != "/metrics" && path.rfind("/v1/", 0) != 0) return not_found();
  if (!authorized(req)) {
    res.set_header("WWW-Authenticate", "Bearer");
    return reply_error(res, 401, "missing or wrong bearer token (Authorization: Bearer <token>)", nullptr, "invalid_api_key");
  }
  static const std::regex kSource(R"(/v1/sources/([^/]+)(/pause|/resume)?)");
  std::smatch match;
  if (path == "/metrics" && h.metrics) {
    if (allow(get, "GET")) res.set_content(h.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  } else if (path == "/v1/models" && h.models) {
    if (!allow(get, "GET")) return;
    json data = json::array();
    for (const std::string& id : h.models()) {
      data.push_back({{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "mustdrop"}});
    }
    reply_json(res, 200, {{"object", "list"}, {"data", data}});
  } else if (path == "/v1/chat/completions" && h.chat) {
    if (allow(post, "POST")) chat(res, body);
  } else if (std::regex_match(path, match, kSource) && (match[2].matched ? bool(h.pause) : bool(h.source))) {
    const std::string id = match[1];
    if (!allow(match[2].matched ? post : get, match[2].matched ? "POST" : "GET")) return;
    const auto found = match[2].matched ? h.pause(id, match[2] == "/pause") : h.source(id);
    if (found) return reply_json(res, 200, *found);
    reply_error(res, 404, "unknown source '" + id + "'", nullptr, "source_not_found");
  } else {
    not_found();
  }
}

void ApiServer::Impl::track(const std::shared_ptr<Sink>& sink) {
  std::lock_guard<std::mutex> lock(mu);
  if (stopped) return sink->cancel();
  sinks.erase(std::remove_if(sinks.begin(), sinks.end(), [](const auto& w) { return w.expired(); }), sinks.end());
  sinks.push_back(sink);
}

void ApiServer::Impl::chat(Response& res, const std::string& body) {
  ChatRequest request;
  try {
    request = parse_chat(json::parse(body));
  } catch (const json::parse_error& e) {
    return reply_error(res, 400, std::string("the request body is not valid JSON: ") + e.what());
  } catch (const BadRequest& e) {
    return reply_error(res, 400, e.message, e.param.empty() ? json(nullptr) : json(e.param));
  }
  auto sink = std::make_shared<Sink>();
  track(sink);
  Admit admit;
  try {
    admit = h.chat(request, sink);
  } catch (...) {
    sink->cancel();
    throw;
  }
  const auto refuse = [&](int status, const std::string& fallback, const json& param, const char* code) {
    sink->cancel();
    if (status != 404) res.set_header("Retry-After", std::to_string(std::max(0, admit.retry_after_sec)));
    reply_error(res, status, admit.message.empty() ? fallback : admit.message, param, code);
  };
  switch (admit.admission) {
    case Admission::kAccepted:
      break;
    case Admission::kUnknownSource:
      return refuse(404, "unknown model '" + request.source_id + "'", "model", "model_not_found");
    case Admission::kBusy:
      return refuse(429, "too many answers in progress; retry later", nullptr, "rate_limit_exceeded");
    case Admission::kUnavailable:
      return refuse(503, "the source cannot answer now", nullptr, "unavailable");
  }
  char id[40];
  std::snprintf(id, sizeof(id), "chatcmpl-%016llx%06llx", static_cast<unsigned long long>(id_salt),
                static_cast<unsigned long long>(++n_replies));
  const Reply reply{id, static_cast<int64_t>(std::time(nullptr)), request.source_id.empty() ? admit.source_id : request.source_id};

  if (request.stream) {
    auto st = std::make_shared<Stream>();
    *st = {sink, reply, request.include_usage, false, false, ""};
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    // Exactly "text/event-stream": httplib would gzip any other text/* type, holding chunks back.
    res.set_chunked_content_provider(
        "text/event-stream",
        [st](size_t, httplib::DataSink& out) {
          try {
            if (stream_step(*st, out)) return true;
          } catch (const std::exception& e) {  // nothing may escape here: httplib does not catch it
            MD_LOG_WARN("serve", "stream " << st->reply.id << " failed: " << e.what());
          }
          st->sink->cancel();
          return false;
        },
        [st](bool) {
          if (!st->finished) st->sink->cancel();
        });
    return;
  }
  std::string text;
  for (;;) {
    Sink::Events ev = sink->next(kPoll);
    for (const std::string& piece : ev.pieces) text += piece;
    if (ev.end && ev.end->failed) return reply_error(res, ev.end->status, ev.end->message);
    if (ev.end) {
      return reply_json(res, 200,
                        {{"id", reply.id}, {"object", "chat.completion"}, {"created", reply.created},
                         {"model", resolved_model(reply, ev.end->extra)},
                         {"choices", json::array({{{"index", 0},
                                                   {"message", {{"role", "assistant"}, {"content", text}}},
                                                   {"finish_reason", ev.end->finish_reason}}})},
                         {"usage", usage_json(ev.end->usage)}, {"mustdrop", ev.end->extra}});
    }
    if (ev.cancelled) return reply_error(res, 503, "the server is stopping", nullptr, "unavailable");
  }
}

ApiServer::ApiServer(ServerOptions options, Handlers handlers) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.opt = std::move(options);
  d.h = std::move(handlers);
  const std::string where = host_port(d.opt.bind, d.opt.port);
  if (d.opt.port < 0 || d.opt.port > 65535 || d.opt.threads < 1 || d.opt.max_body_bytes < 1) {
    throw ConfigError("server options for " + where + ": port must be 0..65535, threads and max_body_bytes >= 1");
  }
  const size_t threads = static_cast<size_t>(d.opt.threads);
  d.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  d.http.set_payload_max_length(static_cast<size_t>(d.opt.max_body_bytes));
  d.http.set_tcp_nodelay(true);         // stream pieces are small; don't let Nagle hold them
  d.http.set_keep_alive_timeout(2);     // stop() waits this long for idle keep-alive clients
  d.http.set_socket_options([](int sock) {  // httplib's default sets SO_REUSEPORT: a second server would share the port
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  using Req = httplib::Request;
  const auto plain = [&d](const Req& req, Response& res) { d.serve(req, res, nullptr); };
  const auto with_body = [&d](const Req& req, Response& res, const httplib::ContentReader& reader) {
    d.serve(req, res, &reader);
  };
  d.http.Get(".*", plain);
  d.http.Options(".*", plain);
  d.http.Post(".*", with_body);
  d.http.Put(".*", with_body);
  d.http.Patch(".*", with_body);
  d.http.Delete(".*", with_body);
  // Errors httplib answers itself (a bad request line, an unknown method) get a JSON body too.
  d.http.set_error_handler(httplib::Server::HandlerWithResponse([](const Req&, Response& res) {
    if (!res.body.empty() || res.has_header("Content-Type")) return httplib::Server::HandlerResponse::Unhandled;
    reply_error(res, res.status, res.status == 413 ? "the request body is too large" : "HTTP " + std::to_string(res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));

  errno = 0;
  d.port = d.opt.port == 0 ? d.http.bind_to_any_port(d.opt.bind) : (d.http.bind_to_port(d.opt.bind, d.opt.port) ? d.opt.port : -1);
  if (d.port < 0) {
    const int err = errno;
    throw InputError("cannot listen on " + where + ": " + (err != 0 ? std::strerror(err) : "the address does not resolve"));
  }
  d.listener = std::thread([&d] { d.http.listen_after_bind(); });
  // httplib's stop() does nothing before the accept loop runs; wait for it so stop() cannot be lost.
  for (int i = 0; i < 10000 && !d.http.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  MD_LOG_INFO("serve", "listening on http://" << host_port(d.opt.bind, d.port));
}

ApiServer::~ApiServer() { stop(); }

int ApiServer::port() const { return impl_->port; }

const std::string& ApiServer::address() const { return impl_->opt.bind; }

void ApiServer::stop() {
  Impl& d = *impl_;
  std::vector<std::shared_ptr<Sink>> open;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (!d.stopped) {
      d.stopped = true;
      d.http.stop();  // once only: httplib asserts on a second call while its loop winds down
      for (const auto& w : d.sinks) {
        if (auto s = w.lock()) open.push_back(std::move(s));
      }
      d.sinks.clear();
    }
  }
  for (const auto& s : open) s->cancel();
  std::lock_guard<std::mutex> lock(d.join_mu);
  if (d.listener.joinable()) d.listener.join();
}

}  // namespace mustdrop::serve
