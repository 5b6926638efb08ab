#include "module.h"

#include <array>
#include <optional>

#include "addon.h"
#include "convert.h"
#include "cuda_graphs.h"
#include "network.h"
#include "queue.h"
#include "tensor.h"

namespace easyinv {
namespace {

struct LoadedModule {
  std::shared_ptr<Network> network;
  std::string path;
  c10::Device device;
  c10::ScalarType dtype;
  bool channels_last;
  std::shared_ptr<CudaGraphs> graphs;
};

// Refuses, on the device thread, an output that JS cannot take whole, so that no part of it is wrapped for JS
// first: a tuple's tensors wrapped before its bad element would have no owner to dispose them.
void CheckPassable(const c10::IValue& value) {
  if (value.isTuple() || value.isList()) {
    const auto items = value.isTuple() ? value.toTupleRef().elements().vec() : value.toListRef().vec();
    for (const auto& item : items) CheckPassable(item);
  } else if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      TORCH_CHECK(entry.key().isString(), "the module returned a dict with keys of type ", entry.key().tagKind(),
                  ", which easyinv cannot pass to JS (its keys must be strings)");
      CheckPassable(entry.value());
    }
  } else {
    TORCH_CHECK(value.isTensor() || value.isDouble() || value.isInt() || value.isBool() || value.isString() ||
                    value.isNone(),
                "the module returned a value of type ", value.tagKind(), ", which easyinv cannot pass to JS");
  }
}

// An output CheckPassable let through.
Napi::Value OutputToJs(Napi::Env env, const c10::IValue& value) {
  if (value.isTensor()) return TensorWrap::Wrap(env, value.toTensor());
  if (value.isTuple() || value.isList()) {
    const auto items = value.isTuple() ? value.toTupleRef().elements().vec() : value.toListRef().vec();
    auto array = Napi::Array::New(env, items.size());
    for (size_t i = 0; i < items.size(); ++i) array.Set(static_cast<uint32_t>(i), OutputToJs(env, items[i]));
    return array;
  }
  if (value.isGenericDict()) {
    auto object = Napi::Object::New(env);
    for (const auto& entry : value.toGenericDict()) {
      object.Set(entry.key().toStringRef(), OutputToJs(env, entry.value()));
    }
    return object;
  }
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isString()) return Napi::String::New(env, value.toStringRef());
  return env.Null();
}

Napi::Value TensorValueOf(Napi::Env env, const at::Tensor& tensor) { return TensorWrap::Wrap(env, tensor); }

std::string Described(const c10::IValue& value) {
  if (value.isTensor()) return "a tensor of shape " + ShapeText(value.toTensor().sizes());
  if (value.isTuple()) return "a tuple of " + std::to_string(value.toTupleRef().elements().size()) + " values";
  if (value.isList()) return "a list of " + std::to_string(value.toListRef().size()) + " values";
  return "a " + value.tagKind();
}

// An optional boolean field of the options object at `index`.
bool FlagOption(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (!info[index].IsObject()) return false;
  Napi::Value flag = info[index].As<Napi::Object>().Get(name);
  if (flag.IsUndefined()) return false;
  if (!flag.IsBoolean()) ThrowType(info.Env(), std::string(name) + " must be true or false");
  return flag.As<Napi::Boolean>().Value();
}

}  // namespace

Napi::Function ModuleWrap::Define(Napi::Env env) {
  return DefineClass(env, "Module",
                     {
                         InstanceMethod<&ModuleWrap::Forward>("forward"),
                         InstanceMethod<&ModuleWrap::Denoise>("denoise"),
                         InstanceMethod<&ModuleWrap::Dispose>("dispose"),
                         InstanceAccessor<&ModuleWrap::Disposed>("disposed"),
                         InstanceAccessor<&ModuleWrap::Path>("path"),
                         InstanceAccessor<&ModuleWrap::Device>("device"),
                         InstanceAccessor<&ModuleWrap::Dtype>("dtype"),
                         InstanceAccessor<&ModuleWrap::ChannelsLast>("channelsLast"),
                         InstanceAccessor<&ModuleWrap::CudaGraphsEnabled>("cudaGraphs"),
                     });
}

ModuleWrap::ModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    ThrowType(info.Env(), "Module cannot be constructed directly: use loadModule(path, options)");
  }
  const LoadedModule& loaded = *info[0].As<Napi::External<LoadedModule>>().Data();
  network_ = loaded.network;
  path_ = loaded.path;
  device_ = loaded.device;
  dtype_ = loaded.dtype;
  channels_last_ = loaded.channels_last;
  graphs_ = loaded.graphs;
}

Napi::Value ModuleWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  c10::Device device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
  DeviceDtypeArg(info, 1, device, dtype);
  if (!c10::isFloatingType(dtype)) ThrowType(env, "a module's dtype must be a floating type, not " + DtypeName(dtype));
  const bool channels_last = FlagOption(info, 1, "channelsLast");
  const bool cuda_graphs = FlagOption(info, 1, "cudaGraphs");
  if (cuda_graphs && !device.is_cuda()) {
    auto error = Napi::RangeError::New(env, "easyinv: cudaGraphs needs a CUDA device, not " + DeviceName(device));
    error.Set("option", "cudaGraphs");  // as errors.ts optionError: the command line names its flag instead
    throw error;
  }
  auto work = [path, device, dtype, channels_last, cuda_graphs] {
    return LoadedModule{LoadNetwork(path, device, dtype, channels_last), path, device, dtype, channels_last,
                        cuda_graphs ? MakeCudaGraphs() : nullptr};
  };
  auto deliver = [](Napi::Env env, LoadedModule& loaded) -> Napi::Value {
    return AddonOf(env).module_class.New({Napi::External<LoadedModule>::New(env, &loaded)});
  };
  return Schedule(env, device, "loading module '" + path + "'", work, deliver);
}

Napi::Value ModuleWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!network_) throw Napi::Error::New(env, "easyinv: module '" + path_ + "' has been disposed");
  std::vector<at::Tensor> inputs;
  for (size_t i = 0; i < info.Length(); ++i) {
    inputs.push_back(TensorWrap::Extract(env, info[i], "forward argument " + std::to_string(i + 1)));
  }
  auto work = [network = network_, inputs, channels_last = channels_last_]() mutable {
    if (channels_last) {
      for (auto& input : inputs) input = ChannelsLastIfImage(input);
    }
    c10::IValue output = network->Run(inputs);
    CheckPassable(output);
    return output;
  };
  return Schedule(env, device_, "forward of module '" + path_ + "'", work, OutputToJs);
}

// One diffusion step's use of the UNet as one job: the forward (on the doubled batch [uncond; cond] when guidance
// != 1), the guidance combination eps_u + w (eps_c - eps_u), and, given weights [a, b], the step a z + b eps. No
// handoff to JS between them, and with cudaGraphs the forward is a graph replay.
Napi::Value ModuleWrap::Denoise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!network_) throw Napi::Error::New(env, "easyinv: module '" + path_ + "' has been disposed");
  at::Tensor latents = TensorWrap::Extract(env, info[0], "latents");
  at::Tensor timesteps = TensorWrap::Extract(env, info[1], "timesteps");
  if (!info[2].IsArray()) ThrowType(env, "conditioning must be an array of Tensors");
  std::vector<at::Tensor> conditioning;
  auto list = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    conditioning.push_back(TensorWrap::Extract(env, list.Get(i), "conditioning[" + std::to_string(i) + "]"));
  }
  const double guidance = NumberArg(info, 3, "guidance");
  std::optional<std::array<double, 2>> weights;
  if (!info[4].IsUndefined()) {
    const char* expected = "weights must be [a, b], the step a latents + b eps";
    if (!info[4].IsArray()) ThrowType(env, expected);
    auto pair = info[4].As<Napi::Array>();
    if (pair.Length() != 2 || !pair.Get(0u).IsNumber() || !pair.Get(1u).IsNumber()) ThrowType(env, expected);
    weights = {pair.Get(0u).As<Napi::Number>().DoubleValue(), pair.Get(1u).As<Napi::Number>().DoubleValue()};
  }
  const int64_t rows = latents.dim() > 0 ? latents.size(0) * (guidance == 1 ? 1 : 2) : 0;
  if (latents.dim() == 0 || timesteps.dim() != 1 || timesteps.size(0) != rows) {
    throw Napi::RangeError::New(env, "easyinv: denoise needs latents [B, ...] and timesteps [" +
                                         std::string(guidance == 1 ? "B" : "2B") + "] (" + std::to_string(rows) +
                                         " rows), not " + ShapeText(latents.sizes()) + " and " +
                                         ShapeText(timesteps.sizes()));
  }
  auto work = [network = network_, graphs = graphs_, latents, timesteps, conditioning, guidance, weights,
               channels_last = channels_last_] {
    at::Tensor sample = guidance == 1 ? latents : at::cat({latents, latents});
    std::vector<at::Tensor> inputs = {channels_last ? ChannelsLastIfImage(sample) : sample, timesteps};
    inputs.insert(inputs.end(), conditioning.begin(), conditioning.end());
    const c10::IValue output = graphs ? ReplayForward(*graphs, *network, inputs) : network->Run(inputs);
    // A wrong output must not reach the step: a [B, 1, h, w] one would broadcast.
    const bool noise_shaped = output.isTensor() && output.toTensor().sizes() == sample.sizes();
    TORCH_CHECK(noise_shaped, "the UNet returned ", Described(output), "; a noise prediction is one tensor of the "
                "latents' shape ", ShapeText(sample.sizes()), " (export with tools/export_sd.py, which unwraps "
                "diffusers' outputs)");
    at::Tensor eps = output.toTensor();
    if (guidance != 1) {
      const auto halves = eps.chunk(2);
      eps = WeightedSum({halves[0], halves[1]}, {1 - guidance, guidance});
    }
    if (weights) return WeightedSum({latents, eps}, {(*weights)[0], (*weights)[1]});
    return graphs && guidance == 1 ? eps.clone() : eps;  // a graph's output is overwritten by its next replay
  };
  return Schedule(env, device_, "noise prediction of module '" + path_ + "'", work, TensorValueOf);
}

Napi::Value ModuleWrap::Dispose(const Napi::CallbackInfo& info) {
  network_.reset();
  graphs_.reset();  // their memory pools hold every captured shape's activations; queued steps keep their own
  return info.Env().Undefined();
}

Napi::Value ModuleWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !network_); }

Napi::Value ModuleWrap::Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

Napi::Value ModuleWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DeviceName(device_));
}

Napi::Value ModuleWrap::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DtypeName(dtype_));
}

Napi::Value ModuleWrap::ChannelsLast(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), channels_last_);
}

Napi::Value ModuleWrap::CudaGraphsEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), graphs_ != nullptr);
}

}  // namespace easyinv
