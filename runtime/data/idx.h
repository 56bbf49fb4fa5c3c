// The IDX format of the MNIST family (MNIST, Fashion-MNIST, KMNIST), raw or gzip-compressed
// (detected from the content, not the name).
#pragma once

#include <string>

#include "runtime/data/dataset.h"

namespace asgd {

// Reads an unsigned-byte image file (magic 0x00000803, N x H x W, or 0x00000801/2-D variants
// with N x D) and its label file (magic 0x00000801, N bytes). Features are the bytes as floats
// in [0, 255], one row of H*W per image; classes = max label + 1. Throws InputError naming
// the file for a missing file, a wrong magic, a truncated file, mismatched counts, or a
// file that is not IDX at all.
Dataset read_idx(const std::string& images_path, const std::string& labels_path);

// Finds "<dir>/<stem>" or "<dir>/<stem>.gz"; returns "" when neither exists.
std::string find_idx_file(const std::string& dir, const std::string& stem);

}  // namespace asgd
