// Blocking HTTP client over cpp-httplib (plain HTTP; this build has no TLS). The timeout bounds
// connecting and every single read or write wait, not the whole exchange.
#include "serve/http_client.h"

#include <httplib.h>

#include <cmath>
#include <exception>

#include "core/error.h"

namespace mustdrop::serve {
namespace {

struct ParsedUrl {
  std::string scheme = "http";
  std::string host;
  int port = 80;
  std::string path = "/";  // path plus query, always starting with '/'
};

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

[[noreturn]] void bad_url(const std::string& url, const std::string& why) {
  throw ConfigError("malformed URL '" + url + "': " + why + " (expected http[s]://host[:port][/path])");
}

ParsedUrl parse_url(const std::string& url) {
  const size_t sep = url.find("://");
  if (sep == std::string::npos) bad_url(url, "no scheme");
  const std::string scheme = lower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") bad_url(url, "scheme '" + scheme + "' is not http or https");
  const size_t auth_begin = sep + 3;
  size_t auth_end = url.find_first_of("/?#", auth_begin);
  if (auth_end == std::string::npos) auth_end = url.size();
  const std::string authority = url.substr(auth_begin, auth_end - auth_begin);
  if (authority.find('@') != std::string::npos) bad_url(url, "user info is not supported");

  ParsedUrl out;
  out.scheme = scheme;
  out.port = scheme == "https" ? 443 : 80;
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {  // IPv6 literal: [::1]:8080
    const size_t close = authority.find(']');
    if (close == std::string::npos) bad_url(url, "unclosed '[' in the host");
    out.host = authority.substr(1, close - 1);
    const std::string rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') bad_url(url, "unexpected text after the host");
      port_text = rest.substr(1);
      if (port_text.empty()) bad_url(url, "empty port");
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) bad_url(url, "empty port");
    }
  }
  if (out.host.empty()) bad_url(url, "empty host");
  for (char c : out.host) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') bad_url(url, "whitespace in the host");
  }
  if (!port_text.empty()) {
    if (port_text.size() > 5) bad_url(url, "port out of range");
    int port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9') bad_url(url, "port '" + port_text + "' is not a number");
      port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535) bad_url(url, "port out of range");
    out.port = port;
  }
  std::string path = url.substr(auth_end);
  const size_t hash = path.find('#');  // a fragment is never sent
  if (hash != std::string::npos) path.resize(hash);
  if (path.empty()) path = "/";
  if (path[0] == '?') path = "/" + path;
  out.path = path;
  return out;
}

std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Success: return "no response";
    case httplib::Error::Unknown: return "unknown error";
    case httplib::Error::Connection: return "cannot connect (refused or unreachable)";
    case httplib::Error::BindIPAddress: return "cannot bind the local address";
    case httplib::Error::Read: return "read failed or timed out";
    case httplib::Error::Write: return "write failed or timed out";
    case httplib::Error::ExceedRedirectCount: return "too many redirects";
    case httplib::Error::Canceled: return "canceled";
    case httplib::Error::SSLConnection: return "TLS connection failed";
    case httplib::Error::SSLLoadingCerts: return "cannot load TLS certificates";
    case httplib::Error::SSLServerVerification: return "TLS server verification failed";
    case httplib::Error::UnsupportedMultipartBoundaryChars: return "bad multipart boundary";
    case httplib::Error::Compression: return "decompression failed";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
  }
  return "unknown error";
}

// Sends one request (POST when `post`, else GET) and folds every network failure into the reply.
HttpResponse request(const std::string& url, bool post, const std::string& body, const std::string& bearer,
                     double timeout_sec) {
  const ParsedUrl target = parse_url(url);
  if (!(timeout_sec > 0) || !std::isfinite(timeout_sec)) {
    throw ConfigError("'" + url + "': timeout_sec must be > 0, got " + std::to_string(timeout_sec));
  }
  const auto sec = static_cast<time_t>(timeout_sec);
  const auto usec = static_cast<time_t>((timeout_sec - static_cast<double>(sec)) * 1e6);

  HttpResponse out;
  try {
    // Debian's cpp-httplib is built with OpenSSL: the scheme picks plain or TLS.
    std::string host = target.host.find(':') != std::string::npos ? "[" + target.host + "]" : target.host;
    httplib::Client client(target.scheme + "://" + host + ":" + std::to_string(target.port));
    client.set_connection_timeout(sec, usec);
    client.set_read_timeout(sec, usec);
    client.set_write_timeout(sec, usec);
    httplib::Headers headers;
    if (!bearer.empty()) headers.emplace("Authorization", "Bearer " + bearer);
    httplib::Result res = post ? client.Post(target.path.c_str(), headers, body, "application/json")
                               : client.Get(target.path.c_str(), headers);
    if (!res) {
      out.error = describe(res.error());
      return out;
    }
    out.status = res->status;
    out.body = res->body;
  } catch (const std::exception& e) {  // httplib may throw from std (bad_alloc, system_error)
    out.status = 0;
    out.error = std::string("request failed: ") + e.what();
  }
  return out;
}

}  // namespace

HttpResponse http_post_json(const std::string& url, const std::string& body, const std::string& bearer,
                            double timeout_sec) {
  return request(url, /*post=*/true, body, bearer, timeout_sec);
}

HttpResponse http_get(const std::string& url, const std::string& bearer, double timeout_sec) {
  return request(url, /*post=*/false, "", bearer, timeout_sec);
}

}  // namespace mustdrop::serve
