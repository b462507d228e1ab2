// The FFI firewall shared by every `extern "C"` entry point of the shim: no C++ exception may
// cross into Rust (it would abort the process), so each body runs under `guarded`, which turns
// an exception into a malloc'ed message. Rust frees it with `asymvalley_free_error`.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace asymvalley::ffi {

// A heap copy of `msg` that C (and Rust) can free with `std::free`.
inline char* copy_message(const std::string& msg) {
  char* out = static_cast<char*>(std::malloc(msg.size() + 1));
  if (out != nullptr) std::memcpy(out, msg.c_str(), msg.size() + 1);
  return out;
}

// Runs `body`; NULL on success, else the exception's message (without libtorch's C++
// backtrace: it is for a user reading a Rust error).
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception in the asymvalley shim");
  }
}

}  // namespace asymvalley::ffi
