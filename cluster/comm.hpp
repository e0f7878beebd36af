// Processes and communication. Comm is the MPI world of a `grm` stage: started under mpirun/srun it
// has K ranks, started alone it is one rank without touching MPI at all. Gradients are averaged across
// ranks by GradientAllReducer in flattened buckets (MPI on CPU, NCCL on GPU builds), each bucket launched
// from autograd hooks as soon as all of its gradients exist, so communication overlaps the rest of the
// backward pass. Knows nothing of models.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/torch.hpp"

namespace grm {

class Comm {
 public:
  // The process-wide world, initialised on first use (MPI_Init only under a launcher).
  static Comm& world();
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  int local_rank() const { return local_rank_; }

  // MPI collectives are watched: every rank announces itself to its peers on entering a collective and
  // every second while waiting in one; a rank that waits longer than $GRM_COLLECTIVE_TIMEOUT_S seconds
  // (default 300) names the peers it has not heard from and ends the whole job, instead of waiting
  // forever on a stopped or hung peer.
  // NCCL collectives (CUDA tensors) are not watched.
  void all_reduce_sum(torch::Tensor& tensor);  // in place; CPU tensors via MPI, CUDA via NCCL
  double all_reduce_sum(double value);
  void broadcast(torch::Tensor& tensor, int root = 0);  // in place
  // ZeRO's two collectives over equal slices: `full` holds size() slices of shard.numel() elements end to
  // end, rank r's being the r-th. reduce_scatter_sum: shard = the sum over ranks of their full's slice r.
  // all_gather: every rank's full = the ranks' shards in rank order. Both contiguous, of one dtype.
  void reduce_scatter_sum(const torch::Tensor& full, torch::Tensor& shard);
  void all_gather(const torch::Tensor& shard, torch::Tensor& full);
  void barrier();
  // Ends every rank of the job: one failing rank must never leave the others waiting.
  [[noreturn]] void abort(int code);
  void finalize();

 private:
  friend class GradientAllReducer;
  Comm();
  // The watch: enter() before posting a collective (announces it to the peers), wait() on its request.
  void enter_collective();
  void announce();
  void wait_collective(void* mpi_request, const char* what);
  void drain_announcements();
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool mpi_ = false;
  double collective_timeout_s_ = 300;
  int64_t collectives_ = 0;         // collectives this rank has entered
  std::vector<int64_t> announced_;  // per peer: the collectives it has announced entering
  std::vector<double> heard_at_;    // per peer: when it last announced itself (steady clock, seconds)
  struct Announcement;
  std::vector<std::unique_ptr<Announcement>> sends_;  // announcements still in flight
  struct Nccl;
  Nccl& nccl();  // GPU builds: started on first use
  std::unique_ptr<Nccl> nccl_;
};

// True when this process was started by an MPI launcher (mpirun, srun with PMI/PMIx).
bool launched_by_mpi();

// LibTorch threads for one rank: $OMP_NUM_THREADS when set (the pipeline sets it per stage), else the
// machine's cores shared among the ranks on it.
int default_thread_count(int ranks_per_machine);

// Gives this process `n` compute threads: LibTorch's intra-op pool gets n and a BLAS with a thread pool
// of its own (OpenBLAS) gets 1, so that the two pools do not stack on the same cores (OpenBLAS's threads
// spin between calls and starve LibTorch's; README "Results and timings" has the measurements). Every
// command sets its threads through here. Returns n.
int set_compute_threads(int n);
// The BLAS library's own thread count as it reports it (openblas_get_num_threads), 0 when the BLAS in
// this process has no such call: what benches print beside LibTorch's.
int blas_thread_count();

// Averages gradients of `parameters` over the world after backward(). Bucket boundaries follow the
// parameters in reverse registration order (the order backward produces them).
class GradientAllReducer {
 public:
  GradientAllReducer(std::vector<torch::Tensor> parameters, Comm& comm, int64_t bucket_bytes = 16 << 20);
  ~GradientAllReducer();
  // Call before the backward() whose gradients complete the step (the last micro-batch): hooks then
  // launch each bucket's all-reduce as soon as its gradients are ready.
  void arm();
  // Waits for every bucket, then writes the averaged gradients into .grad. Buckets whose hooks did not
  // fire (parameters unused this step) are reduced here.
  void synchronize();
  int64_t n_buckets() const { return int64_t(buckets_.size()); }

 private:
  struct Bucket;
  void on_gradient(size_t bucket, size_t slot, const torch::Tensor& grad);
  void launch(Bucket& bucket);
  std::vector<torch::Tensor> parameters_;
  Comm& comm_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  bool armed_ = false;
};

}  // namespace grm
