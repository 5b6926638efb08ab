// Work that touches tensor data runs on one thread per device, in submission order, and settles a JS promise.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace easyinv {

class Job;
class EnvState;

void DeliverJob(Napi::Env env, Napi::Function, EnvState* state, Job* job);
using Completions = Napi::TypedThreadSafeFunction<EnvState, Job, DeliverJob>;

// Per JS environment (main thread, each worker thread): the channel completions come back on.
class EnvState : public std::enable_shared_from_this<EnvState> {
 public:
  explicit EnvState(Napi::Env env);
  void Submit(const c10::Device& device, Job* job);    // JS thread
  void Finished();                                     // JS thread, after the promise settled
  void Close();                                        // JS thread, at environment teardown: waits for running work

 private:
  Napi::Env env_;
  Completions completions_;
  std::mutex mutex_;
  std::condition_variable idle_;
  bool closing_ = false;
  size_t running_ = 0;     // jobs of this environment executing on a device thread now
  size_t in_flight_ = 0;   // jobs submitted and not yet settled (JS thread only)
  friend class Job;
};

class Job {
 public:
  Job(Napi::Env env, std::string what) : deferred_(Napi::Promise::Deferred::New(env)), what_(std::move(what)) {}
  virtual ~Job() = default;
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Run();                      // device thread
  void Settle(Napi::Env env);      // JS thread

 protected:
  virtual void Execute() = 0;                       // device thread; may throw
  virtual Napi::Value Result(Napi::Env env) = 0;    // JS thread

 private:
  Napi::Promise::Deferred deferred_;
  std::string what_;
  std::optional<std::string> error_;
  std::shared_ptr<EnvState> owner_;
  friend class EnvState;
};

// The stream every job of `device` runs on (none on the CPU). Work queued from another thread on this stream stays
// in order with the device's jobs.
std::optional<c10::Stream> DeviceStream(const c10::Device& device);

// LibTorch's intra-op thread count is per calling thread (OpenMP's and MKL's settings are), so the count asked for
// here is applied by each device thread before its next job.
void SetIntraOpThreads(int threads);

// The completion channel of the JS environment `env` (kept with the addon's per-environment state, addon.h).
EnvState& EnvStateOf(Napi::Env env);

// Runs `work` on the device's thread; `deliver` turns its value into JS on the JS thread.
template <typename Work, typename Deliver>
Napi::Promise Schedule(Napi::Env env, const c10::Device& device, std::string what, Work work, Deliver deliver) {
  using Value = decltype(work());
  class Task final : public Job {
   public:
    Task(Napi::Env env, std::string what, Work work, Deliver deliver)
        : Job(env, std::move(what)), work_(std::move(work)), deliver_(std::move(deliver)) {}

   protected:
    void Execute() override { value_.emplace(work_()); }
    Napi::Value Result(Napi::Env env) override { return deliver_(env, *value_); }

   private:
    Work work_;
    Deliver deliver_;
    std::optional<Value> value_;
  };
  auto job = std::make_unique<Task>(env, std::move(what), std::move(work), std::move(deliver));
  Napi::Promise promise = job->Promise();
  EnvStateOf(env).Submit(device, job.get());
  job.release();  // the device thread owns it now
  return promise;
}

}  // namespace easyinv
