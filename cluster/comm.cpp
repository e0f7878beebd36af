#include "cluster/comm.hpp"

#include <dlfcn.h>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"

#ifdef GRM_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>
#endif

namespace grm {
namespace {

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char message[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, message, &length);
  fail("MPI {} failed: {}", what, std::string(message, size_t(length)));
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

MPI_Datatype mpi_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return MPI_FLOAT;
    case torch::kFloat64:
      return MPI_DOUBLE;
    case torch::kInt64:
      return MPI_INT64_T;
    case torch::kInt32:
      return MPI_INT32_T;
    default:
      fail("MPI all-reduce: unsupported dtype {}", c10::toString(t.scalar_type()));
  }
}

}  // namespace

#ifdef GRM_CUDA
#define GRM_NCCL_CHECK(call)                                                                    \
  do {                                                                                          \
    ncclResult_t result_ = (call);                                                              \
    if (result_ != ncclSuccess) fail("NCCL {} failed: {}", #call, ncclGetErrorString(result_)); \
  } while (0)

struct Comm::Nccl {
  ncclComm_t comm = nullptr;
  ncclDataType_t type(const torch::Tensor& t) {
    switch (t.scalar_type()) {
      case torch::kFloat32:
        return ncclFloat32;
      case torch::kFloat64:
        return ncclFloat64;
      case torch::kBFloat16:
        return ncclBfloat16;
      case torch::kFloat16:
        return ncclFloat16;
      case torch::kInt64:
        return ncclInt64;
      default:
        fail("NCCL all-reduce: unsupported dtype {}", c10::toString(t.scalar_type()));
    }
  }
};
#else
struct Comm::Nccl {};
#endif

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(name)) return true;
  return false;
}

int default_thread_count(int ranks_per_machine) {
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) return std::atoi(env);
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_per_machine));
}

namespace {

// OpenBLAS's thread setters, looked up at run time: LibTorch may be linked against another BLAS (MKL,
// the reference BLAS), which has none of these, or against a CUDA build where they do not matter.
template <class F>
F* blas_symbol(const char* name) {
  return reinterpret_cast<F*>(::dlsym(RTLD_DEFAULT, name));
}

}  // namespace

int set_compute_threads(int n) {
  n = std::max(1, n);
  torch::set_num_threads(n);
  if (auto* set = blas_symbol<void(int)>("openblas_set_num_threads")) set(1);
  return n;
}

int blas_thread_count() {
  auto* get = blas_symbol<int()>("openblas_get_num_threads");
  return get ? get() : 0;
}

Comm& Comm::world() {
  static Comm comm;
  return comm;
}

Comm::Comm() {
  if (!launched_by_mpi()) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) check_mpi(MPI_Init(nullptr, nullptr), "MPI_Init");
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "split");
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_free(&local);
  log::set_rank(rank_, size_);
  announced_.assign(size_t(size_), 0);
  heard_at_.assign(size_t(size_), steady_seconds());
  if (const char* env = std::getenv("GRM_COLLECTIVE_TIMEOUT_S"); env && std::atof(env) > 0)
    collective_timeout_s_ = std::atof(env);
}

// ---- the collective watch ----

namespace {
constexpr int kAnnounceTag = 7301;  // point-to-point tag of "I entered collective N"
}

struct Comm::Announcement {
  int64_t collective = 0;
  MPI_Request request = MPI_REQUEST_NULL;
};

void Comm::enter_collective() {
  ++collectives_;
  announce();
}

// Tells every peer "I am alive, at collective N": on entering a collective and, while waiting in one,
// every heartbeat. A stopped or hung rank is the one that falls silent.
void Comm::announce() {
  // Drop the announcements that have gone out; a tiny message completes at once under the eager protocol.
  sends_.erase(std::remove_if(sends_.begin(), sends_.end(),
                              [](const std::unique_ptr<Announcement>& a) {
                                int done = 0;
                                MPI_Test(&a->request, &done, MPI_STATUS_IGNORE);
                                return done != 0;
                              }),
               sends_.end());
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto announcement = std::make_unique<Announcement>();
    announcement->collective = collectives_;
    check_mpi(MPI_Isend(&announcement->collective, 1, MPI_INT64_T, peer, kAnnounceTag, MPI_COMM_WORLD,
                        &announcement->request),
              "MPI_Isend(announcement)");
    sends_.push_back(std::move(announcement));
  }
}

void Comm::drain_announcements() {
  for (;;) {
    int pending = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, kAnnounceTag, MPI_COMM_WORLD, &pending, &status);
    if (!pending) return;
    int64_t collective = 0;
    MPI_Recv(&collective, 1, MPI_INT64_T, status.MPI_SOURCE, kAnnounceTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    auto peer = size_t(status.MPI_SOURCE);
    announced_[peer] = std::max(announced_[peer], collective);
    heard_at_[peer] = steady_seconds();
  }
}

void Comm::wait_collective(void* mpi_request, const char* what) {
  auto* request = static_cast<MPI_Request*>(mpi_request);
  const double start = steady_seconds(), heartbeat = std::min(1.0, collective_timeout_s_ / 4);
  double next_heartbeat = start + heartbeat;
  for (int polls = 0;; ++polls) {
    int done = 0;
    check_mpi(MPI_Test(request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    drain_announcements();
    double now = steady_seconds();
    if (now >= next_heartbeat) announce(), next_heartbeat = now + heartbeat;
    if (now - start > collective_timeout_s_) {
      // Silent: not heard from for two heartbeats (a peer waiting with us keeps announcing itself).
      std::string silent;
      for (int peer = 0; peer < size_; ++peer)
        if (peer != rank_ && now - heard_at_[size_t(peer)] > 2 * heartbeat)
          silent +=
              fmt::format("{}rank {} (last heard {:.1f} s ago, at collective {})", silent.empty() ? "" : ", ",
                          peer, now - heard_at_[size_t(peer)], announced_[size_t(peer)]);
      std::fprintf(stderr,
                   "rank %d: waited %.0f s in %s (collective %lld) for %s; stopping every rank "
                   "(GRM_COLLECTIVE_TIMEOUT_S=%g)\n",
                   rank_, now - start, what, (long long)collectives_,
                   silent.empty() ? "peers that all still answer: the interconnect is stuck"
                                  : (silent + ", which stopped responding (stopped, hung or dead)").c_str(),
                   collective_timeout_s_);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    // Spin briefly (collectives of a training step finish in microseconds), then poll gently.
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

#ifdef GRM_CUDA
// NCCL starts at the first collective over CUDA tensors, which every rank reaches together; a job whose
// ranks work on the CPU (tests, small models) then runs on a GPU machine without one GPU per rank.
Comm::Nccl& Comm::nccl() {
  if (nccl_) return *nccl_;
  int gpus = int(torch::cuda::device_count());
  c10::cuda::set_device(c10::DeviceIndex(local_rank_ % gpus));
  ncclUniqueId id;  // rank 0 makes the id, MPI carries it to the others
  if (rank_ == 0) GRM_NCCL_CHECK(ncclGetUniqueId(&id));
  check_mpi(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast(nccl id)");
  auto nccl = std::make_unique<Nccl>();
  ncclResult_t result = ncclCommInitRank(&nccl->comm, size_, id, rank_);
  if (result != ncclSuccess)
    fail(
        "NCCL could not start for {} ranks ({}); NCCL needs its own GPU for each rank, and this machine has "
        "{} GPU(s): start fewer ranks per machine, or train on the CPU (device: cpu)",
        size_, ncclGetErrorString(result), gpus);
  nccl_ = std::move(nccl);
  return *nccl_;
}
#endif

void Comm::all_reduce_sum(torch::Tensor& tensor) {
  if (size_ == 1) return;
  TORCH_CHECK(tensor.is_contiguous(), "all_reduce_sum needs a contiguous tensor");
#ifdef GRM_CUDA
  if (tensor.is_cuda()) {
    auto& nccl = this->nccl();
    auto stream = c10::cuda::getCurrentCUDAStream();
    GRM_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()),
                                 nccl.type(tensor), ncclSum, nccl.comm, stream.stream()));
    return;
  }
#endif
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), int(tensor.numel()), mpi_type(tensor), MPI_SUM,
                           MPI_COMM_WORLD, &request),
            "MPI_Iallreduce");
  wait_collective(&request, "an all-reduce");
}

double Comm::all_reduce_sum(double value) {
  if (size_ == 1) return value;
  double out = 0;
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Iallreduce(&value, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &request), "MPI_Iallreduce");
  wait_collective(&request, "an all-reduce");
  return out;
}

namespace {
void check_slices(const torch::Tensor& full, const torch::Tensor& shard, int size, const char* what) {
  TORCH_CHECK(full.is_contiguous() && shard.is_contiguous(), what, " needs contiguous tensors");
  TORCH_CHECK(full.numel() == shard.numel() * size && full.scalar_type() == shard.scalar_type(), what,
              ": full must hold one slice of shard's size and dtype per rank");
}
}  // namespace

void Comm::reduce_scatter_sum(const torch::Tensor& full, torch::Tensor& shard) {
  check_slices(full, shard, size_, "reduce_scatter_sum");
  if (size_ == 1) {
    shard.copy_(full);
    return;
  }
#ifdef GRM_CUDA
  if (full.is_cuda()) {
    auto& nccl = this->nccl();
    auto stream = c10::cuda::getCurrentCUDAStream();
    GRM_NCCL_CHECK(ncclReduceScatter(full.data_ptr(), shard.data_ptr(), size_t(shard.numel()),
                                     nccl.type(full), ncclSum, nccl.comm, stream.stream()));
    return;
  }
#endif
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Ireduce_scatter_block(full.data_ptr(), shard.data_ptr(), int(shard.numel()), mpi_type(full),
                                      MPI_SUM, MPI_COMM_WORLD, &request),
            "MPI_Ireduce_scatter_block");
  wait_collective(&request, "a reduce-scatter");
}

void Comm::all_gather(const torch::Tensor& shard, torch::Tensor& full) {
  check_slices(full, shard, size_, "all_gather");
  if (size_ == 1) {
    full.copy_(shard);
    return;
  }
#ifdef GRM_CUDA
  if (full.is_cuda()) {
    auto& nccl = this->nccl();
    auto stream = c10::cuda::getCurrentCUDAStream();
    GRM_NCCL_CHECK(ncclAllGather(shard.data_ptr(), full.data_ptr(), size_t(shard.numel()), nccl.type(full),
                                 nccl.comm, stream.stream()));
    return;
  }
#endif
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Iallgather(shard.data_ptr(), int(shard.numel()), mpi_type(shard), full.data_ptr(),
                           int(shard.numel()), mpi_type(full), MPI_COMM_WORLD, &request),
            "MPI_Iallgather");
  wait_collective(&request, "an all-gather");
}

void Comm::broadcast(torch::Tensor& tensor, int root) {
  if (size_ == 1) return;
  TORCH_CHECK(tensor.is_contiguous(), "broadcast needs a contiguous tensor");
#ifdef GRM_CUDA
  if (tensor.is_cuda()) {
    auto& nccl = this->nccl();
    auto stream = c10::cuda::getCurrentCUDAStream();
    GRM_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()),
                                 nccl.type(tensor), root, nccl.comm, stream.stream()));
    return;
  }
#endif
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Ibcast(tensor.data_ptr(), int(tensor.numel() * tensor.element_size()), MPI_BYTE, root,
                       MPI_COMM_WORLD, &request),
            "MPI_Ibcast");
  wait_collective(&request, "a broadcast");
}

void Comm::barrier() {
  if (size_ == 1) return;
  enter_collective();
  MPI_Request request;
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier");
  wait_collective(&request, "a barrier");
}

void Comm::abort(int code) {
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void Comm::finalize() {
#ifdef GRM_CUDA
  if (nccl_ && nccl_->comm) ncclCommDestroy(nccl_->comm);
#endif
  for (auto& announcement : sends_) MPI_Wait(&announcement->request, MPI_STATUS_IGNORE);
  sends_.clear();
  int finalized = 0;
  if (mpi_) MPI_Finalized(&finalized);
  if (mpi_ && !finalized) MPI_Finalize();
  mpi_ = false;
}

// ---- gradient buckets ----

struct GradientAllReducer::Bucket {
  std::vector<size_t> parameters;  // indices into parameters_
  std::vector<int64_t> offsets;    // element offset of each parameter in `flat`
  torch::Tensor flat;              // (n) gradients laid end to end
  size_t ready = 0;
  bool launched = false;
  MPI_Request request = MPI_REQUEST_NULL;
#ifdef GRM_CUDA
  std::unique_ptr<at::cuda::CUDAEvent> done;
#endif
};

GradientAllReducer::GradientAllReducer(std::vector<torch::Tensor> parameters, Comm& comm,
                                       int64_t bucket_bytes)
    : parameters_(std::move(parameters)), comm_(comm) {
  // Backward produces gradients roughly in reverse order of the forward, so buckets are filled from the end.
  for (size_t k = parameters_.size(); k-- > 0;) {
    const auto& p = parameters_[k];
    if (buckets_.empty() || buckets_.back()->offsets.back() * int64_t(p.element_size()) >= bucket_bytes) {
      buckets_.push_back(std::make_unique<Bucket>());
      buckets_.back()->offsets.push_back(0);
    }
    auto& bucket = *buckets_.back();
    bucket.parameters.push_back(k);
    bucket.offsets.push_back(bucket.offsets.back() + p.numel());
  }
  for (auto& bucket : buckets_)
    bucket->flat = torch::zeros({bucket->offsets.back()}, parameters_[bucket->parameters.front()].options());
  if (comm_.size() == 1) return;  // nothing to reduce, no hooks
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t slot = 0; slot < buckets_[b]->parameters.size(); ++slot) {
      auto& p = parameters_[buckets_[b]->parameters[slot]];
      p.register_hook([this, b, slot](torch::Tensor grad) {
        on_gradient(b, slot, grad);
        return grad;
      });
    }
}

GradientAllReducer::~GradientAllReducer() {
  for (auto& bucket : buckets_)
    if (bucket->request != MPI_REQUEST_NULL) MPI_Request_free(&bucket->request);
}

void GradientAllReducer::arm() {
  armed_ = true;
  for (auto& bucket : buckets_) bucket->ready = 0, bucket->launched = false;
}

void GradientAllReducer::on_gradient(size_t b, size_t slot, const torch::Tensor& grad) {
  if (!armed_) return;
  auto& bucket = *buckets_[b];
  const auto& p = parameters_[bucket.parameters[slot]];
  // The step's gradient is what .grad will hold after accumulation: earlier micro-batches plus this one.
  auto view = bucket.flat.narrow(0, bucket.offsets[slot], p.numel()).view_as(p);
  if (p.grad().defined())
    torch::add_out(view, p.grad(), grad);
  else
    view.copy_(grad);
  if (++bucket.ready == bucket.parameters.size()) launch(bucket);
}

void GradientAllReducer::launch(Bucket& bucket) {
  bucket.launched = true;
  bucket.flat.div_(comm_.size());
#ifdef GRM_CUDA
  if (bucket.flat.is_cuda()) {
    comm_.all_reduce_sum(bucket.flat);  // enqueued on the current stream: ordered after the gradient copies
    bucket.done = std::make_unique<at::cuda::CUDAEvent>();
    bucket.done->record(c10::cuda::getCurrentCUDAStream());
    return;
  }
#endif
  comm_.enter_collective();
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, bucket.flat.data_ptr(), int(bucket.flat.numel()),
                           mpi_type(bucket.flat), MPI_SUM, MPI_COMM_WORLD, &bucket.request),
            "MPI_Iallreduce");
}

void GradientAllReducer::synchronize() {
  if (comm_.size() == 1) return;
  for (auto& bucket : buckets_) {
    if (!armed_ || !bucket->launched) {
      // Hooks did not run for every parameter (not armed, or some were unused): reduce from .grad.
      for (size_t slot = 0; slot < bucket->parameters.size(); ++slot) {
        const auto& p = parameters_[bucket->parameters[slot]];
        auto view = bucket->flat.narrow(0, bucket->offsets[slot], p.numel()).view_as(p);
        if (p.grad().defined())
          view.copy_(p.grad());
        else
          view.zero_();
      }
      launch(*bucket);
    }
    if (bucket->request != MPI_REQUEST_NULL)
      comm_.wait_collective(&bucket->request, "the gradient all-reduce");
#ifdef GRM_CUDA
    if (bucket->done) bucket->done->block(c10::cuda::getCurrentCUDAStream());
#endif
    for (size_t slot = 0; slot < bucket->parameters.size(); ++slot) {
      auto& p = parameters_[bucket->parameters[slot]];
      auto view = bucket->flat.narrow(0, bucket->offsets[slot], p.numel()).view_as(p);
      if (p.grad().defined())
        p.mutable_grad().copy_(view);
      else
        p.mutable_grad() = view.clone();
    }
  }
  armed_ = false;
}

}  // namespace grm
