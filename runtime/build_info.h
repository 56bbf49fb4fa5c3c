// What this build of asgd is: the version and the git commit it was built from.
#pragma once

#include <asgd/config.h>

namespace asgd {

// The commit (12 hex digits, "-dirty" when built with uncommitted changes, "unknown" outside
// a checkout), refreshed at every build.
const char* git_commit();

}  // namespace asgd
