// Output files named on the command line (--summary, --json): checked before the work that
// fills them, so that a bad path fails at once instead of after a long run.
//
// Thread-safety: a free function touching only the file system; callable from any thread.
#pragma once

#include <string>
#include <string_view>

namespace asgd {

// Throws InputError naming `flag` and `path` when nothing can be written there (a directory, a
// missing directory, no permission). An existing file is left as it is; a file that did not
// exist is created to find out and removed again. An empty path means "not wanted": no check.
void check_output_path(const std::string& path, std::string_view flag);

}  // namespace asgd
