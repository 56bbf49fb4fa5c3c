// Checking bad-input errors: the one-line InputError that names what was wrong and where.
#pragma once

#include <exception>
#include <functional>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace asgd::testing {

// Runs `body`, which must throw an E (or a subclass of it) whose message contains every one of
// `parts`. Returns the message (empty when the check failed).
template <typename E>
std::string expect_throw(const std::function<void()>& body,
                         std::initializer_list<std::string> parts) {
  try {
    body();
  } catch (const E& error) {
    const std::string what = error.what();
    for (const std::string& part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "message: " << what << "\nlacks: " << part;
    return what;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "expected another kind of exception, got: " << error.what();
    return {};
  }
  ADD_FAILURE() << "expected an exception, nothing was thrown";
  return {};
}

// Runs `body`, which must throw an InputError whose one-line message contains every one of
// `parts`.
inline void expect_input_error(const std::function<void()>& body,
                               std::initializer_list<std::string> parts) {
  const std::string what = expect_throw<InputError>(body, parts);
  EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
}

}  // namespace asgd::testing
