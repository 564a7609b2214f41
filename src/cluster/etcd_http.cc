#include "cluster/etcd_http.h"

#include <curl/curl.h>

#include <cstdio>

namespace spd::etcd_internal {
namespace {

// How long one poll slice lasts at most: the longest keep_going goes unasked when nothing
// happens and nobody calls Wake (a watcher's Stop does; curl's own timers end a slice early).
// An idle watch wakes once a second for it.
constexpr int kPollSliceMs = 1000;

struct Sink {
  const HttpRequest* req = nullptr;
  std::string data;  // unary: the body so far; stream: the unfinished line
  size_t scanned = 0;
  bool too_large = false;
  bool aborted = false;
};

size_t OnData(char* ptr, size_t size, size_t n, void* arg) {
  auto* s = static_cast<Sink*>(arg);
  const size_t len = size * n;
  const HttpRequest& req = *s->req;
  if (!req.on_line) {
    if (s->data.size() + len > req.max_body) {
      s->too_large = true;
      return 0;  // CURLE_WRITE_ERROR
    }
    s->data.append(ptr, len);
    return len;
  }
  s->data.append(ptr, len);
  size_t start = 0;
  while (true) {
    const size_t nl = s->data.find('\n', s->scanned);
    if (nl == std::string::npos) break;
    const std::string_view line(s->data.data() + start, nl - start);
    if (!line.empty() && !req.on_line(line)) {
      s->aborted = true;
      return 0;
    }
    start = nl + 1;
    s->scanned = start;
  }
  s->data.erase(0, start);
  s->scanned = s->data.size();
  if (s->data.size() > req.max_body) {
    s->too_large = true;
    return 0;
  }
  return len;
}

}  // namespace

HttpLoop::HttpLoop() : multi_(curl_multi_init()) {}

HttpLoop::~HttpLoop() {
  if (multi_ != nullptr) curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void HttpLoop::Wake() {
  if (multi_ != nullptr) curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

Status HttpGlobalInit() {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK)
    return Internal(std::string("libcurl initialisation failed: ") + curl_easy_strerror(init));
  return Status::Ok();
}

HttpResponse HttpPost(HttpLoop* loop, const HttpRequest& req) {
  HttpResponse r;
  CURL* e = curl_easy_init();
  if (e == nullptr || !loop->ok()) {
    if (e != nullptr) curl_easy_cleanup(e);
    r.outcome = HttpResponse::Outcome::kNoConnect;
    r.error = "libcurl handle could not be made";
    return r;
  }
  Sink sink;
  sink.req = &req;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(e, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, req.body.data());
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(req.connect_timeout.count()));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(req.total_timeout.count()));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);  // a thread of a daemon: no SIGALRM
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnData);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  // A unary answer announcing a larger body is refused before it is read; a stream has no end.
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(req.on_line ? 0 : req.max_body));
  if (req.tcp_keepalive) {
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, static_cast<long>(req.keepalive_idle.count()));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, static_cast<long>(req.keepalive_interval.count()));
  }

  auto* m = static_cast<CURLM*>(loop->multi());
  curl_multi_add_handle(m, e);
  CURLcode rc = CURLE_OK;
  bool done = false;
  bool stopped = false;
  while (true) {
    int running = 0;
    const CURLMcode mc = curl_multi_perform(m, &running);
    if (mc != CURLM_OK) {
      rc = CURLE_FAILED_INIT;
      snprintf(errbuf, sizeof(errbuf), "curl_multi_perform: %s", curl_multi_strerror(mc));
      break;
    }
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(m, &left)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == e) {
        rc = msg->data.result;
        done = true;
      }
    }
    if (done) break;
    if (req.keep_going && !req.keep_going()) {
      stopped = true;
      break;
    }
    curl_multi_poll(m, nullptr, 0, kPollSliceMs, nullptr);
  }
  curl_off_t connect_us = 0;
  long request_size = 0;
  curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &request_size);
  // Whether anything may have reached the server (a write's outcome is then unknown).
  const bool connected = connect_us > 0 || request_size > 0;
  if (done && rc == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.http_status);
  curl_multi_remove_handle(m, e);
  curl_slist_free_all(headers);
  curl_easy_cleanup(e);

  using O = HttpResponse::Outcome;
  if (stopped || sink.aborted) {
    r.outcome = O::kAborted;
    r.error = "stopped";
  } else if (sink.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    r.outcome = O::kTooLarge;
    r.error = "answer larger than " + std::to_string(req.max_body) + " bytes";
  } else if (rc == CURLE_OK) {
    r.outcome = O::kDone;
    r.body = std::move(sink.data);  // a stream: its last line, when it had no '\n'
  } else {
    r.error = errbuf[0] != 0 ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
        rc == CURLE_COULDNT_RESOLVE_PROXY || !connected) {
      r.outcome = O::kNoConnect;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      r.outcome = O::kTimeout;
    } else {
      r.outcome = O::kBroken;
    }
  }
  return r;
}

}  // namespace spd::etcd_internal
