// StreamText: one stream's text of one cell, built in place (pybind11; supervisor side).
//
// Why not a list of strings joined at the end: a 100 MB print flood would become 1,600
// Python strings and then one more 100 MB string joining them, two passes over fresh
// memory, whose page faults cost as much as the copying. Here ASCII text (the usual case) is copied
// once, from the frame into a single str that grows in place (PyUnicode_Resize reallocs,
// which moves large blocks by remapping, not copying); each frame's text is only described
// to Python by its character offsets. The first non-ASCII frame switches to a list of
// decoded chunks joined at the end. Invalid UTF-8 from the worker is replaced, never trusted.
#pragma once

#include <pybind11/pybind11.h>

#include <cstring>
#include <utility>

namespace sandbox_exec {

class StreamText {
 public:
  StreamText() = default;
  StreamText(const StreamText&) = delete;
  StreamText& operator=(const StreamText&) = delete;
  ~StreamText() { Py_XDECREF(ascii_); }

  // Appends UTF-8 bytes (with the GIL); returns the [start, end) character offsets.
  std::pair<Py_ssize_t, Py_ssize_t> append(const char* data, std::size_t size) {
    if (finished_) throw std::logic_error("StreamText: append after value()");
    if (!has_cr_ && std::memchr(data, '\r', size) != nullptr) has_cr_ = true;
    const Py_ssize_t start = length_;
    if (!chunked_ && is_ascii(data, size)) {
      reserve(length_ + static_cast<Py_ssize_t>(size));
      std::memcpy(static_cast<char*>(PyUnicode_DATA(ascii_)) + length_, data, size);
      length_ += static_cast<Py_ssize_t>(size);
      return {start, length_};
    }
    PyObject* text = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(size), "replace");
    if (text == nullptr) throw pybind11::error_already_set();
    return append_chunk(pybind11::reinterpret_steal<pybind11::str>(text));
  }

  std::pair<Py_ssize_t, Py_ssize_t> append_str(const pybind11::str& text) {
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
    if (utf8 == nullptr) throw pybind11::error_already_set();
    return append(utf8, static_cast<std::size_t>(size));
  }

  // The text of [start, end) as a str (a copy), for live on_output events.
  pybind11::str slice(Py_ssize_t start, Py_ssize_t end) const {
    if (!chunked_) {
      return pybind11::reinterpret_steal<pybind11::str>(PyUnicode_FromKindAndData(
          PyUnicode_1BYTE_KIND, static_cast<const char*>(PyUnicode_DATA(ascii_)) + start, end - start));
    }
    return pybind11::reinterpret_borrow<pybind11::str>(
        PyList_GET_ITEM(chunks_.ptr(), PyList_GET_SIZE(chunks_.ptr()) - 1));
  }

  // The whole text; the object is final afterwards.
  pybind11::str value() {
    if (!finished_) {
      finished_ = true;
      if (chunked_) {
        whole_ = pybind11::str("").attr("join")(chunks_);
        chunks_ = pybind11::list();
      } else if (ascii_ != nullptr) {
        if (PyUnicode_Resize(&ascii_, length_) != 0) throw pybind11::error_already_set();
        whole_ = pybind11::reinterpret_steal<pybind11::str>(ascii_);
        ascii_ = nullptr;
      } else {
        whole_ = pybind11::str("");
      }
    }
    return whole_;
  }

  [[nodiscard]] bool has_cr() const noexcept { return has_cr_; }
  [[nodiscard]] Py_ssize_t length() const noexcept { return length_; }

 private:
  static bool is_ascii(const char* data, std::size_t size) noexcept {
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      uint64_t word;
      std::memcpy(&word, data + i, 8);
      if (word & 0x8080808080808080ULL) return false;
    }
    for (; i < size; ++i) {
      if (static_cast<unsigned char>(data[i]) & 0x80) return false;
    }
    return true;
  }

  void reserve(Py_ssize_t needed) {
    if (ascii_ != nullptr && needed <= capacity_) return;
    Py_ssize_t capacity = capacity_ ? capacity_ : 4096;
    while (capacity < needed) capacity *= 2;
    if (ascii_ == nullptr) {
      ascii_ = PyUnicode_New(capacity, 127);
      if (ascii_ == nullptr) throw pybind11::error_already_set();
    } else if (PyUnicode_Resize(&ascii_, capacity) != 0) {
      throw pybind11::error_already_set();
    }
    capacity_ = capacity;
  }

  std::pair<Py_ssize_t, Py_ssize_t> append_chunk(pybind11::str text) {
    if (!chunked_) {
      chunked_ = true;
      if (ascii_ != nullptr) {
        if (PyUnicode_Resize(&ascii_, length_) != 0) throw pybind11::error_already_set();
        chunks_.append(pybind11::reinterpret_steal<pybind11::str>(ascii_));
        ascii_ = nullptr;
      }
    }
    const Py_ssize_t start = length_;
    length_ += PyUnicode_GET_LENGTH(text.ptr());
    chunks_.append(std::move(text));
    return {start, length_};
  }

  PyObject* ascii_ = nullptr;  // compact ASCII str, `capacity_` long, `length_` filled
  Py_ssize_t length_ = 0;
  Py_ssize_t capacity_ = 0;
  pybind11::list chunks_;
  pybind11::object whole_;
  bool chunked_ = false;
  bool finished_ = false;
  bool has_cr_ = false;
};

}  // namespace sandbox_exec
