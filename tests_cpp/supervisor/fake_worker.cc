// fake_worker: a stand-in for the Python worker, spawned by cell_runner_test through the
// real sandbox_exec_launcher. It attaches WorkerChannel on descriptors 5-8 exactly like the
// Python worker, sends kReady {"protocol": V, "pid": N, "python": "fake"}, and then answers each kExecute
// as its single argument says:
//
//   echo            kStdout with the request's payload, then kCellDone {"status":"ok"}
//   segv            dies of SIGSEGV (the default action, even under AddressSanitizer)
//   exit3           _exit(3) in the middle of the cell
//   garbage         scribbles over the event ring's control block (tail = 12345), rings
//                   the event doorbell and sleeps
//   bad-type        sends an event frame of unknown type 99
//   ignore-sigint   ignores SIGINT and sleeps forever
//   honour-sigint   sleeps until SIGINT, then reports KeyboardInterrupt and kCellDone
//                   {"status":"error"}
//   default-sigint  sleeps forever with SIGINT's default action (dies of it)
//   big-output      a 7-byte kMessage, a 100000-byte kMessage (many frames), then four
//                   3000-byte kStdout frames of two-byte UTF-8 characters, then kCellDone
//                   counting what it did not send (the cap closed the output)
//   close-bell      closes its end of the event doorbell (fd 7), then sleeps forever
//   big-done        a kCellDone of 100000 bytes (as the Python worker sends when the cell
//                   raised an exception with a huge message: the report carries evalue)
//
// and, before ever being ready:
//   exit-before-ready    _exit(3)
//   stdout-before-ready  a kStdout frame instead of kReady
//   never-ready          sleeps
//   old-protocol         kReady naming another protocol version
//
// kShutdown ends it with status 0.
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "ipc/channel.h"
#include "launch/spawn_spec.h"

using namespace sandbox_exec;

namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

auto no_signal = [] {};

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

void corrupt_event_ring() {
  struct stat st {};
  if (::fstat(launcher_fd::kRegion, &st) != 0) ::_exit(20);
  void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                   launcher_fd::kRegion, 0);
  if (p == MAP_FAILED) ::_exit(21);
  auto* events = reinterpret_cast<RingControl*>(static_cast<std::byte*>(p) + 512);
  events->tail.store(12345, std::memory_order_release);
  const char one = 1;
  [[maybe_unused]] ssize_t n = ::write(launcher_fd::kEventBell, &one, 1);
}

void run_cell(WorkerChannel& channel, const std::string& mode, const std::string& request) {
  if (mode == "echo") {
    channel.send(FrameType::kStdout, request, no_signal);
    channel.send(FrameType::kCellDone, R"({"status":"ok"})", no_signal);
  } else if (mode == "slow-echo") {  // output, a pause of 1 s, more output, the end
    channel.send(FrameType::kStdout, "before\n", no_signal);
    ::usleep(1000 * 1000);
    channel.send(FrameType::kStdout, request, no_signal);
    channel.send(FrameType::kCellDone, R"({"status":"ok"})", no_signal);
  } else if (mode == "segv") {
    ::signal(SIGSEGV, SIG_DFL);  // past any sanitizer's handler
    ::raise(SIGSEGV);
    ::_exit(30);
  } else if (mode == "exit3") {
    ::_exit(3);
  } else if (mode == "garbage") {
    corrupt_event_ring();
    sleep_forever();
  } else if (mode == "bad-type") {
    channel.send(static_cast<FrameType>(99), "?", no_signal);
    sleep_forever();
  } else if (mode == "ignore-sigint") {
    ::signal(SIGINT, SIG_IGN);
    sleep_forever();
  } else if (mode == "honour-sigint") {
    while (!g_interrupted) ::usleep(1000);
    channel.send(FrameType::kStderr, "KeyboardInterrupt\n", no_signal);
    channel.send(FrameType::kCellDone, R"({"status":"error"})", no_signal);
  } else if (mode == "default-sigint") {
    ::signal(SIGINT, SIG_DFL);
    sleep_forever();
  } else if (mode == "big-output") {
    channel.send(FrameType::kMessage, R"({"m":1})", no_signal);
    channel.send(FrameType::kMessage, std::string(100000, 'm'), no_signal);
    std::string text;
    for (int i = 0; i < 1500; ++i) text += "\xc3\xa9";  // U+00E9, two bytes
    for (int i = 0; i < 4; ++i) channel.send(FrameType::kStdout, text, no_signal);
    // As the Python worker does: output not sent once the supervisor closed it is counted in
    // the report (whether the fourth frame is drained and dropped there or never sent here
    // depends on who runs first; the total is the same).
    channel.send(FrameType::kCellDone,
                 R"({"status":"ok","dropped_output_bytes":)" + std::to_string(channel.take_dropped()) + "}", no_signal);
  } else if (mode == "close-bell") {
    ::close(launcher_fd::kEventBell);
    sleep_forever();
  } else if (mode == "big-done") {
    channel.send(FrameType::kCellDone, R"({"status":"error","error":{"evalue":")" + std::string(100000, 'e') + R"("}})",
                 no_signal);
  } else {
    std::fprintf(stderr, "fake_worker: unknown mode %s\n", mode.c_str());
    ::_exit(40);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string mode = argv[1];
  if (mode == "exit-before-ready") ::_exit(3);
  if (mode == "honour-sigint") {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    ::sigaction(SIGINT, &sa, nullptr);
  }

  WorkerChannel channel(
      WorkerFds{launcher_fd::kRegion, launcher_fd::kRequestBell, launcher_fd::kEventBell, launcher_fd::kSpaceBell});
  if (mode == "never-ready") sleep_forever();
  if (mode == "stdout-before-ready") {
    channel.send(FrameType::kStdout, "hello", no_signal);
    sleep_forever();
  }
  // "old-protocol": a worker of another build (its protocol version is not ours).
  const uint32_t protocol = mode == "old-protocol" ? kProtocolVersion + 1 : kProtocolVersion;
  channel.send(
      FrameType::kReady,
      R"({"protocol":)" + std::to_string(protocol) + R"(,"pid":)" + std::to_string(::getpid()) + R"(,"python":"fake"})",
      no_signal);

  MessageAssembler assembler(1 << 24);
  FrameHeader header{};
  std::string payload;
  for (;;) {
    if (!channel.receive(header, payload, -1)) continue;  // EINTR or a spurious wake
    if (assembler.feed(header, payload.data(), payload.size()) != MessageAssembler::Result::kComplete) continue;
    if (header.type == static_cast<uint16_t>(FrameType::kShutdown)) ::_exit(0);
    if (header.type == static_cast<uint16_t>(FrameType::kExecute)) run_cell(channel, mode, assembler.message());
  }
}
