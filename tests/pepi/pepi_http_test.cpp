// PEPI end to end over HTTP: `epwa serve-api` in the background on a loopback port, `epwa detect
// --method pepi --api-url` against it must give exactly the z-score of the local source (the
// committed oracle of the bundled model, so no --oracle), and a broken server gives a clear error.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "support/run_cli.hpp"

extern char** environ;

namespace {

using Result = epwa_test::CliResult;
Result run(const std::string& args) {
  return epwa_test::run_cli(args, epwa_test::Stderr::Drop);
}

// A port nobody listens on right now (the kernel picks it; the tiny race is harmless here).
int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  close(s);
  return ntohs(a.sin_port);
}

// `epwa serve-api` as a child process, stopped (SIGTERM, then reaped) when this goes out of scope.
class Server {
 public:
  explicit Server(int port) : port_(std::to_string(port)) {
    std::string bin = EPWA_BINARY;
    std::array<std::string, 6> args = {bin,      "serve-api", "--quiet",
                                       "--port", port_,       "--max-logprobs"};
    std::string k = "50";
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(k.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Polls until the server answers (any HTTP status) or `seconds` pass.
  bool wait_ready(int seconds) const {
    httplib::Client c("127.0.0.1", std::stoi(port_));
    c.set_connection_timeout(1);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (c.Get("/")) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string url() const { return "http://127.0.0.1:" + port_; }

 private:
  std::string port_;
  pid_t pid_ = -1;
};

// The JSON output of a run that worked: exit 0, or 1 for detect's "not watermarked".
nlohmann::json json_line(const Result& r) {
  EXPECT_TRUE(r.code == 0 || r.code == 1) << r.out;
  return nlohmann::json::parse(r.out, nullptr, false);
}

TEST(PepiHttp, ServeApiGivesTheLocalSourcesZScore) {
  // A short GSG text from the bundled model.
  const Result g =
      run("generate --quiet --prompt \"The king said unto them\" --watermark gsg --key pepi-http "
          "-n 60 --seed 3 --json");
  const auto gj = json_line(g);
  ASSERT_FALSE(gj.is_discarded()) << g.out;
  std::string prompt, tokens;
  for (int32_t t : gj.at("prompt_tokens").get<std::vector<int32_t>>())
    prompt += (prompt.empty() ? "" : ",") + std::to_string(t);
  for (int32_t t : gj.at("tokens").get<std::vector<int32_t>>())
    tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
  const std::string common =
      "detect --quiet --method pepi --key pepi-http --json --prompt-tokens " + prompt +
      " --tokens " + tokens;
  const auto local = json_line(run(common));
  ASSERT_FALSE(local.is_discarded());

  const int port = free_port();
  Server srv(port);
  ASSERT_TRUE(srv.wait_ready(60)) << "epwa serve-api did not start on port " << port;
  for (const char* extra : {"", " --api-top-k 20"}) {
    const auto remote = json_line(run(common + " --api-url " + srv.url() + extra));
    ASSERT_FALSE(remote.is_discarded());
    EXPECT_EQ(remote.at("method"), "pepi");
    EXPECT_EQ(remote.at("g"), local.at("g"));
    EXPECT_EQ(remote.at("n"), local.at("n"));
    EXPECT_DOUBLE_EQ(remote.at("z").get<double>(), local.at("z").get<double>());
  }
  EXPECT_GT(local.at("n").get<int64_t>(), 30);
}

TEST(PepiHttp, BrokenServerGivesAOneLineError) {
  // A server that answers 200 with a body that is not a completions response.
  httplib::Server srv;
  srv.Post("/v1/completions", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(R"({"choices": [{"logprobs": {"top_logprobs": "nope"}}]})", "application/json");
  });
  const int port = srv.bind_to_any_port("127.0.0.1");
  std::thread th([&] { srv.listen_after_bind(); });
  while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto [code, out] = epwa_test::run_cli(
      "detect --quiet --method pepi --key k --tokens 5,6,7,8 --api-url http://127.0.0.1:" +
      std::to_string(port));
  srv.stop();
  th.join();
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("top_logprobs"), std::string::npos) << out;
  EXPECT_NE(out.find("127.0.0.1"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

}  // namespace
