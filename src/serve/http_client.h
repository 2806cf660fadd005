// Minimal blocking HTTP/1.1 client for JSON APIs (an OpenAI-compatible judge, health checks).
// Plain http:// only; cpp-httplib stays inside http_client.cpp.
#pragma once

#include <string>

namespace mustdrop::serve {

struct HttpResponse {
  int status = 0;     // HTTP status; 0 = no response (see error)
  std::string body;   // response body, as received
  std::string error;  // why there was no response (connection refused, timeout, ...); empty otherwise
};

// POSTs `body` as application/json to `url` (http://host[:port][/path]), with
// "Authorization: Bearer <bearer>" when `bearer` is non-empty. Network failures come back as
// status 0 with `error` set; ConfigError naming the URL when it is malformed, https://, or
// timeout_sec <= 0.
HttpResponse http_post_json(const std::string& url, const std::string& body, const std::string& bearer,
                            double timeout_sec);

// GETs `url`; same conventions and failures as http_post_json.
HttpResponse http_get(const std::string& url, const std::string& bearer, double timeout_sec);

}  // namespace mustdrop::serve
