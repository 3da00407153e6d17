// PyWorkerChannel: the worker's end of the channel as the worker's Python code uses it
// (pybind11; part of the _core module, used only inside the sandbox).
//
// Besides whole messages it owns the worker's stream buffer, in C++ because print() floods
// are the hot path of output capture: a write appends the text's UTF-8 (for ASCII text,
// CPython's own buffer: no encoding) to one buffer shared by stdout and stderr, which goes
// out as one frame when it reaches 64 KiB, when the other stream or a message is written,
// when the worker flushes at the end of a cell, or 20 ms after its first byte (the
// fd-capture thread calls flush_if_stale; a wake-up descriptor tells that thread a buffer
// started). Every 0.5 ms at most, a write first checks whether fds 1/2 hold output (C code,
// subprocesses) and, if so, returns True so the caller forwards that first: the order of
// Python-level and descriptor-level output is kept.
//
// Locking: buffer state is only touched with the GIL held. send_lock_ serialises frames and
// is taken before the buffer is swapped out, so frames leave in the order the text was
// written. Its holder never waits for the GIL: every send runs with the GIL released and
// unlocks send_lock_ *before* taking the GIL back (send_and_unlock). So a thread may block
// on send_lock_ while holding the GIL without deadlock. (Reacquiring the GIL with the lock
// still held deadlocked against the fd-capture thread: conformance tests found it.)
#pragma once

#include <poll.h>
#include <pybind11/pybind11.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "ipc/channel.h"

namespace sandbox_exec {

class PyWorkerChannel {
  using Clock = std::chrono::steady_clock;

 public:
  explicit PyWorkerChannel(std::tuple<int, int, int, int> fds)
      : channel_(WorkerFds{std::get<0>(fds), std::get<1>(fds), std::get<2>(fds), std::get<3>(fds)}) {}

  // Next request as (type, flags, payload), or None on timeout or a signal.
  pybind11::object receive(int timeout_ms) {
    FrameHeader header{};
    std::string payload;
    bool got;
    {
      pybind11::gil_scoped_release release;
      got = channel_.receive(header, payload, timeout_ms);
    }
    if (!got) return pybind11::none();
    return pybind11::make_tuple(header.type, header.flags, pybind11::bytes(payload));
  }

  // One whole message; pending stream text goes out first.
  void send(uint16_t type, const pybind11::bytes& payload) {
    char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(payload.ptr(), &data, &size) != 0) throw pybind11::error_already_set();
    std::unique_lock lock(send_lock_);
    std::string pending;
    pending.swap(buffer_);
    const auto pending_type = static_cast<FrameType>(type_);
    pybind11::gil_scoped_release release;
    if (!pending.empty()) channel_.send(pending_type, pending, [] {});
    channel_.send(static_cast<FrameType>(type), std::string_view(data, static_cast<std::size_t>(size)), [] {});
    lock.unlock();  // before the GIL is taken back (see the header comment)
  }

  // Output bytes dropped because the supervisor closed output (the cell's cap), since the
  // last call: reported with the cell's end.
  uint64_t take_dropped() {
    std::lock_guard lock(send_lock_);  // every send holds it; none waits for the GIL with it
    return channel_.take_dropped();
  }

  // Descriptors to watch (the read ends of the fd 1/2 pipes) and the fd-capture thread's
  // wake-up pipe.
  void watch(int stdout_pipe, int stderr_pipe, int wake_fd) {
    watched_[0] = stdout_pipe;
    watched_[1] = stderr_pipe;
    wake_fd_ = wake_fd;
  }

  // Appends stream text; True (and nothing appended) when descriptor-level output is
  // waiting and must be forwarded first (then call write_now).
  bool write(uint16_t type, const pybind11::str& text) {
    const auto now = Clock::now();
    if (now - last_fd_check_ >= std::chrono::microseconds(500)) {
      last_fd_check_ = now;
      if (fd_output_pending()) return true;
    }
    append(type, text, now);
    return false;
  }

  void write_now(uint16_t type, const pybind11::str& text) { append(type, text, Clock::now()); }

  void flush() {
    if (buffer_.empty()) return;
    std::unique_lock lock(send_lock_);
    std::string data;
    data.swap(buffer_);
    send_and_unlock(lock, static_cast<FrameType>(type_), data);
  }

  void flush_if_stale() {
    if (!buffer_.empty() && Clock::now() - since_ >= kMaxAge) flush();
  }

  // Seconds until the pending text must go out; None when nothing is pending.
  std::optional<double> seconds_to_stale() const {
    if (buffer_.empty()) return std::nullopt;
    const auto left = kMaxAge - (Clock::now() - since_);
    return std::max(0.0, std::chrono::duration<double>(left).count());
  }

  bool pending() const noexcept { return !buffer_.empty(); }

  // A plain CPython callable (METH_O, no pybind11 dispatch) doing write() for one stream:
  // it is what sys.stdout.write is bound to, so each print() call costs tens of
  // nanoseconds here. `forward_fd_output` is called (rarely) when fds 1/2 hold output that
  // must go out first. `owner` is the Python object wrapping this channel, kept alive.
  pybind11::object make_writer(uint16_t type, pybind11::object forward_fd_output, pybind11::object owner) {
    auto* w = new Writer{this, type, forward_fd_output.release().ptr(), owner.release().ptr()};
    pybind11::capsule state(w, [](void* p) {
      auto* writer = static_cast<Writer*>(p);
      Py_XDECREF(writer->forward);
      Py_XDECREF(writer->owner);
      delete writer;
    });
    static PyMethodDef def = {"write", reinterpret_cast<PyCFunction>(&Writer::call), METH_O,
                              "Writes stream text; returns its length."};
    PyObject* fn = PyCFunction_NewEx(&def, state.ptr(), nullptr);
    if (fn == nullptr) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::object>(fn);
  }

  // One poll() for both pipes (a negative descriptor is skipped). POLLIN only: a pipe whose
  // writers are all gone reads as POLLHUP, which is nothing to forward.
  bool fd_output_pending() const noexcept {
    pollfd fds[2] = {{watched_[0], POLLIN, 0}, {watched_[1], POLLIN, 0}};
    if (::poll(fds, 2, 0) <= 0) return false;
    return ((fds[0].revents | fds[1].revents) & POLLIN) != 0;
  }

 private:
  struct Writer {
    PyWorkerChannel* channel;
    uint16_t type;
    PyObject* forward;
    PyObject* owner;

    static PyObject* call(PyObject* capsule, PyObject* text) {
      auto* self = static_cast<Writer*>(PyCapsule_GetPointer(capsule, nullptr));
      if (self == nullptr) return nullptr;
      if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.100s", Py_TYPE(text)->tp_name);
        return nullptr;
      }
      try {
        const auto str = pybind11::reinterpret_borrow<pybind11::str>(text);
        if (self->channel->write(self->type, str)) {
          PyObject* r = PyObject_CallNoArgs(self->forward);
          if (r == nullptr) return nullptr;
          Py_DECREF(r);
          self->channel->write_now(self->type, str);
        }
      } catch (pybind11::error_already_set& e) {
        e.restore();
        return nullptr;
      } catch (const std::exception& e) {
        PyErr_SetString(PyExc_OSError, e.what());
        return nullptr;
      }
      return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(text));
    }
  };

  static constexpr auto kMaxAge = std::chrono::milliseconds(20);
  static constexpr std::size_t kMaxBytes = 1 << 16;

  void append(uint16_t type, const pybind11::str& text, Clock::time_point now) {
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
    pybind11::object replaced;
    if (utf8 == nullptr) {  // lone surrogates: encode with replacement, as a terminal would
      PyErr_Clear();
      replaced =
          pybind11::reinterpret_steal<pybind11::object>(PyUnicode_AsEncodedString(text.ptr(), "utf-8", "replace"));
      if (!replaced) throw pybind11::error_already_set();
      char* data = nullptr;
      if (PyBytes_AsStringAndSize(replaced.ptr(), &data, &size) != 0) throw pybind11::error_already_set();
      utf8 = data;
    }
    if (size == 0) return;
    if (!buffer_.empty() && type != type_) flush();
    if (buffer_.empty() && static_cast<std::size_t>(size) >= kMaxBytes) {
      // A large write goes out straight from the string's own UTF-8 (the caller holds a
      // reference, and str is immutable), without a copy into the buffer.
      std::unique_lock lock(send_lock_);
      send_and_unlock(lock, static_cast<FrameType>(type), std::string_view(utf8, static_cast<std::size_t>(size)));
      return;
    }
    if (buffer_.empty()) {
      since_ = now;
      type_ = type;
      if (wake_fd_ >= 0) {
        [[maybe_unused]] ssize_t n = ::write(wake_fd_, "!", 1);
      }
    }
    buffer_.append(utf8, static_cast<std::size_t>(size));
    if (buffer_.size() >= kMaxBytes) flush();
  }

  // Called with the GIL and `lock` (send_lock_) held: sends with the GIL released, and
  // unlocks before the GIL is taken back.
  void send_and_unlock(std::unique_lock<std::mutex>& lock, FrameType type, std::string_view data) {
    pybind11::gil_scoped_release release;
    channel_.send(type, data, [] {});
    lock.unlock();
  }

  WorkerChannel channel_;
  std::mutex send_lock_;
  std::string buffer_;
  uint16_t type_ = 0;
  Clock::time_point since_{};
  Clock::time_point last_fd_check_{};
  int watched_[2] = {-1, -1};
  int wake_fd_ = -1;
};

}  // namespace sandbox_exec
