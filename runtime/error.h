// One error policy for all of asgd.
//
// Every failure is a C++ exception derived from asgd::Error that carries the source file and
// line where it was detected and, for a failing library call (CUDA, cuBLAS, MPI, NCCL), the
// text of that call. InputError is the subclass for bad user input (a file, a flag, a config
// key): its message already names the file/line/key, and the CLI prints it as one line.
//
// Background threads never swallow an error: they store the first one in an ErrorSlot and the
// owning thread rethrows it on its next call (see ErrorSlot below).
#pragma once

#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace asgd {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file, int line, const std::string& call = {});

  const std::string& message() const { return message_; }
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  // The failing library call as written in the source, or empty.
  const std::string& call() const { return call_; }

 private:
  std::string message_;
  std::string file_;
  int line_;
  std::string call_;
};

// Bad input from the user: what() is the message alone, which names what was wrong and where.
class InputError : public Error {
 public:
  InputError(const std::string& message, const char* file, int line);
  const char* what() const noexcept override { return message().c_str(); }
};

// Bad input found by a collective check of a multi-process run: every rank throws the same
// error at the same point, so each can end normally instead of aborting the others.
class CollectiveInputError : public InputError {
 public:
  using InputError::InputError;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& call,
                              const std::string& message);
[[noreturn]] void throw_input_error(const char* file, int line, const std::string& message);
}  // namespace detail

// Keeps the first exception raised on a background thread so that the thread that owns the
// work can rethrow it. Thread-safe; capture() never throws.
class ErrorSlot {
 public:
  void capture(std::exception_ptr error) noexcept;
  bool has_error() const noexcept;
  // Rethrows the stored exception, if any. The slot keeps it: every later call rethrows too.
  void rethrow_if_set() const;

 private:
  mutable std::mutex mutex_;
  std::exception_ptr error_;
};

}  // namespace asgd

#define ASGD_THROW(...) ::asgd::detail::throw_error(__FILE__, __LINE__, {}, fmt::format(__VA_ARGS__))
#define ASGD_INPUT_ERROR(...) \
  ::asgd::detail::throw_input_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
// Checks an internal invariant or a caller's precondition.
#define ASGD_CHECK(cond, ...)                                                               \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::asgd::detail::throw_error(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__));     \
  } while (0)
