#include "comm/transport.h"

#include "runtime/error.h"

namespace asgd {

LentBuffer Transport::lend(int, std::int64_t) {
  ASGD_THROW("this transport does not lend send buffers (lends_buffers() is false): use post()");
}

void Transport::post_lent(LentBuffer, const MessageHeader&) {
  ASGD_THROW("this transport does not lend send buffers (lends_buffers() is false): use post()");
}

void Transport::end_loan(int, void*) {}

}  // namespace asgd
