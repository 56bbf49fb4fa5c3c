// Checking bad-input errors: the one-line InputError that names what was wrong and where.
#pragma once

#include <exception>
#include <functional>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace asgd::testing {

// Runs `body`, which must throw an InputError whose one-line message contains every one of
// `parts`.
inline void expect_input_error(const std::function<void()>& body,
                               std::initializer_list<std::string> parts) {
  try {
    body();
  } catch (const InputError& error) {
    const std::string what = error.what();
    for (const std::string& part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "message: " << what << "\nlacks: " << part;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
    return;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "expected asgd::InputError, got another exception: " << error.what();
    return;
  }
  ADD_FAILURE() << "expected asgd::InputError, nothing was thrown";
}

}  // namespace asgd::testing
