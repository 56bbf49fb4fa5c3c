#include "comm/mpi/mpi_session.h"

#include <chrono>
#include <mutex>
#include <thread>

namespace asgd {
namespace {
std::mutex g_mutex;
MpiSession* g_session = nullptr;
bool g_finalized = false;
}  // namespace

namespace detail {
std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<std::size_t>(length));
}
}  // namespace detail

MpiSession& MpiSession::get() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_finalized) ASGD_THROW("MPI was already finalised in this process; it cannot be restarted");
  if (!g_session) g_session = new MpiSession();
  return *g_session;
}

void MpiSession::finalize() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_session) return;
  delete g_session;
  g_session = nullptr;
  g_finalized = true;
}

void MpiSession::abort(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

MpiSession::MpiSession() {
  int initialized = 0;
  ASGD_CHECK_MPI(MPI_Initialized(&initialized));
  if (initialized) {
    ASGD_CHECK_MPI(MPI_Query_thread(&thread_level_));
  } else {
    ASGD_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &thread_level_));
  }
  // Errors come back as codes and become exceptions, instead of aborting the job.
  ASGD_CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  if (thread_level_ < MPI_THREAD_SERIALIZED)
    ASGD_THROW(
        "this MPI library offers thread level {} but asgd needs MPI_THREAD_SERIALIZED "
        "({}) or better: its communication thread makes MPI calls",
        thread_level_, MPI_THREAD_SERIALIZED);
  ASGD_CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
  ASGD_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  ASGD_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  ASGD_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  MPI_Comm node = MPI_COMM_NULL;
  ASGD_CHECK_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  ASGD_CHECK_MPI(MPI_Comm_rank(node, &local_rank_));
  ASGD_CHECK_MPI(MPI_Comm_size(node, &local_size_));
  ASGD_CHECK_MPI(MPI_Comm_free(&node));
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  ASGD_CHECK_MPI(MPI_Get_processor_name(name, &length));
  host_.assign(name, static_cast<std::size_t>(length));
}

MpiSession::~MpiSession() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void require_thread_multiple(const MpiSession& session, const char* who) {
  if (session.thread_level() < MPI_THREAD_MULTIPLE)
    ASGD_THROW(
        "the {} needs MPI_THREAD_MULTIPLE ({}) and this MPI library gives thread level {}: its "
        "communication thread calls MPI while the main thread runs collectives. Use an MPI built "
        "with thread support (Open MPI: --enable-mpi-thread-multiple, as Debian's is)",
        who, MPI_THREAD_MULTIPLE, session.thread_level());
}

int improbe(int source, int tag, MPI_Comm comm, int* flag, MPI_Message* message,
            MPI_Status* status) {
  int rc = MPI_Improbe(source, tag, comm, flag, message, status);
  if (rc == MPI_SUCCESS && !*flag) rc = MPI_Improbe(source, tag, comm, flag, message, status);
  return rc;
}

std::vector<double> all_gather(MPI_Comm comm, double value) {
  int size = 0;
  ASGD_CHECK_MPI(MPI_Comm_size(comm, &size));
  std::vector<double> out(static_cast<std::size_t>(size));
  ASGD_CHECK_MPI(MPI_Allgather(&value, 1, MPI_DOUBLE, out.data(), 1, MPI_DOUBLE, comm));
  return out;
}

bool settle_requests(std::vector<MPI_Request>& requests, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    int done = 0;
    if (MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                    MPI_STATUSES_IGNORE) != MPI_SUCCESS)
      return false;
    if (done) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::yield();
  }
}

}  // namespace asgd
