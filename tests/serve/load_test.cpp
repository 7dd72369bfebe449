// A bounded loopback load test of `epwa serve`: fixed counts, stops by itself. Mixed traffic from
// several client threads at once (plain and streamed completions, detection, malformed bodies,
// requests beyond the queue) plus slow clients trickling their headers. Every request must be
// answered (200, a 4xx, or 429), the server must still answer correctly afterwards, and its
// memory must stay bounded.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "epwa/server.hpp"
#include "epwa/session.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kBundle = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";

int64_t rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

TEST(ServerLoad, MixedTrafficIsAllAnsweredAndNothingLeaks) {
  auto model = epwa::Model::load(kBundle);
  std::shared_ptr<const epwa::Tokenizer> tok = epwa::load_tokenizer(kBundle);
  epwa::ServerOptions o;
  o.port = 0;
  o.threads = 2;
  o.engine.slots = 4;
  o.engine.queue = 6;
  o.policy = epwa::WatermarkPolicy::OptIn;
  o.keyring.keys = {{"k", "load-test-secret"}};
  o.keyring.default_id = "k";
  o.limits.detect_per_minute = 1e6;
  o.limits.header_timeout = std::chrono::milliseconds(1000);
  epwa::Server server(*model, tok, o);
  std::thread serving([&] { server.run(); });
  const uint16_t port = server.port();
  auto client = [&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  };

  // Slow clients: each sends a byte of its headers every 300 ms; they are cut off.
  std::atomic<bool> done{false};
  std::thread slow([&] {
    std::vector<int> fds;
    for (int i = 0; i < 8; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) fds.push_back(fd);
    }
    const char* head = "POST /v1/completions HTTP/1.1\r\n";
    for (size_t i = 0; !done && i < std::strlen(head); ++i) {
      for (int fd : fds) ::send(fd, head + i, 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    for (int fd : fds) ::close(fd);
  });

  const int64_t rss0 = rss_kib();
  constexpr int kThreads = 6, kEach = 12;
  std::atomic<int> ok{0}, refused{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto c = client();
        const int kind = (t + i) % 5;
        auto send = [&]() -> httplib::Result {
          switch (kind) {
            case 0:
              return c.Post(
                  "/v1/completions",
                  json{{"prompt", "The river " + std::to_string(i)}, {"max_tokens", 24}}.dump(),
                  "application/json");
            case 1:
              return c.Post("/v1/completions",
                            json{{"prompt", "A king"},
                                 {"max_tokens", 24},
                                 {"stream", true},
                                 {"watermark", true}}
                                .dump(),
                            "application/json");
            case 2:
              return c.Post("/v1/watermark/detect",
                            json{{"text", "The river is long and wide."}}.dump(),
                            "application/json");
            case 3:
              return c.Post("/v1/completions", "{\"prompt\": [1, 2.5", "application/json");
            default:
              return c.Post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1.5}}.dump(),
                            "application/json");
          }
        };
        const httplib::Result r = send();
        if (!r) {
          ++other;
          continue;
        }
        if (r->status == 200)
          ++ok;
        else if (r->status == 429)
          ++busy;
        else if (r->status >= 400 && r->status < 500)
          ++refused;
        else
          ++other;
      }
    });
  for (auto& t : threads) t.join();
  done = true;
  slow.join();
  EXPECT_EQ(other, 0) << "requests without an answer, or answered with a 5xx";
  EXPECT_EQ(ok + refused + busy, kThreads * kEach);
  EXPECT_EQ(refused, kThreads * kEach * 2 / 5);  // the malformed ones, exactly
  EXPECT_GT(ok, kThreads * kEach / 3);
  // Still answering, and answering right: greedy text as the library generates it.
  auto r = client().Post("/v1/completions",
                         R"({"prompt": "The river", "max_tokens": 12, "temperature": 0})",
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  epwa::GenerateOptions go;
  go.max_new_tokens = 12;
  go.stop_tokens = {model->config().eos_token_id};
  for (int32_t x : epwa::non_text_token_ids(*tok, model->config().vocab_size))
    if (x != model->config().eos_token_id) go.suppress_tokens.push_back(x);
  const auto ids = tok->encode("The river", true, false);
  auto out = epwa::generate(*model, ids, go);
  if (!out.empty() && out.back() == model->config().eos_token_id) out.pop_back();
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], tok->decode_continuation(out, true));
  // Memory: the KV caches of 4 slots and the buffers grow once; nothing per request.
  EXPECT_LT(rss_kib() - rss0, 256 * 1024);
  server.stop();
  serving.join();
}

}  // namespace
