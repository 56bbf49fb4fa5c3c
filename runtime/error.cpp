#include "runtime/error.h"

namespace asgd {
namespace {
std::string format_what(const std::string& message, const char* file, int line,
                        const std::string& call) {
  if (call.empty()) return fmt::format("{}:{}: {}", file, line, message);
  return fmt::format("{}:{}: {} failed: {}", file, line, call, message);
}
}  // namespace

Error::Error(const std::string& message, const char* file, int line, const std::string& call)
    : std::runtime_error(format_what(message, file, line, call)),
      message_(message),
      file_(file),
      line_(line),
      call_(call) {}

InputError::InputError(const std::string& message, const char* file, int line)
    : Error(message, file, line) {}

namespace detail {
void throw_error(const char* file, int line, const std::string& call, const std::string& message) {
  throw Error(message, file, line, call);
}
void throw_input_error(const char* file, int line, const std::string& message) {
  throw InputError(message, file, line);
}
}  // namespace detail

void ErrorSlot::capture(std::exception_ptr error) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_) error_ = std::move(error);
}

bool ErrorSlot::has_error() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<bool>(error_);
}

void ErrorSlot::rethrow_if_set() const {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error = error_;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace asgd
