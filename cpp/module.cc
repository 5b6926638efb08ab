#include "module.h"

#include "convert.h"
#include "addon.h"
#include "queue.h"
#include "tensor.h"

namespace easyinv {
namespace {

struct LoadedModule {
  std::shared_ptr<torch::jit::Module> module;
  std::string path;
  c10::Device device;
  c10::ScalarType dtype;
  bool channels_last;
};

// NHWC order for what has image axes: the 4-D parameters, buffers and inputs. Values are unchanged; only strides.
at::Tensor ChannelsLastIfImage(const at::Tensor& tensor) {
  return tensor.dim() == 4 ? tensor.contiguous(at::MemoryFormat::ChannelsLast) : tensor;
}

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
      if (!entry.key().isString()) break;
      object.Set(entry.key().toStringRef(), OutputToJs(env, entry.value()));
    }
    return object;
  }
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isString()) return Napi::String::New(env, value.toStringRef());
  if (value.isNone()) return env.Null();
  throw Napi::Error::New(env, "easyinv: a module returned a value of type " + value.tagKind() +
                                  ", which easyinv cannot pass to JS");
}

// As Python's nn.Module.to(dtype): C++'s Module::to(dtype) would also convert integer buffers (CLIP's int64
// position_ids), which then fail as embedding indices.
void ConvertFloatingTensors(torch::jit::Module& module, c10::ScalarType dtype) {
  auto convert = [dtype](at::Tensor tensor) {
    if (tensor.is_floating_point() && tensor.scalar_type() != dtype) tensor.set_data(tensor.to(dtype));
  };
  for (const auto& parameter : module.parameters()) convert(parameter);
  for (const auto& buffer : module.buffers()) convert(buffer);
}

void ConvertToChannelsLast(torch::jit::Module& module) {
  auto convert = [](at::Tensor tensor) {
    if (tensor.dim() == 4) tensor.set_data(ChannelsLastIfImage(tensor));
  };
  for (const auto& parameter : module.parameters()) convert(parameter);
  for (const auto& buffer : module.buffers()) convert(buffer);
}

}  // namespace

Napi::Function ModuleWrap::Define(Napi::Env env) {
  return DefineClass(env, "Module",
                     {
                         InstanceMethod<&ModuleWrap::Forward>("forward"),
                         InstanceMethod<&ModuleWrap::Dispose>("dispose"),
                         InstanceAccessor<&ModuleWrap::Disposed>("disposed"),
                         InstanceAccessor<&ModuleWrap::Path>("path"),
                         InstanceAccessor<&ModuleWrap::Device>("device"),
                         InstanceAccessor<&ModuleWrap::Dtype>("dtype"),
                         InstanceAccessor<&ModuleWrap::ChannelsLast>("channelsLast"),
                     });
}

ModuleWrap::ModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    ThrowType(info.Env(), "Module cannot be constructed directly: use loadModule(path, options)");
  }
  const LoadedModule& loaded = *info[0].As<Napi::External<LoadedModule>>().Data();
  module_ = loaded.module;
  path_ = loaded.path;
  device_ = loaded.device;
  dtype_ = loaded.dtype;
  channels_last_ = loaded.channels_last;
}

Napi::Value ModuleWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  c10::Device device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
  DeviceDtypeArg(info, 1, device, dtype);
  if (!c10::isFloatingType(dtype)) ThrowType(env, "a module's dtype must be a floating type, not " + DtypeName(dtype));
  bool channels_last = false;
  if (info[1].IsObject() && !info[1].As<Napi::Object>().Get("channelsLast").IsUndefined()) {
    Napi::Value flag = info[1].As<Napi::Object>().Get("channelsLast");
    if (!flag.IsBoolean()) ThrowType(env, "channelsLast must be true or false");
    channels_last = flag.As<Napi::Boolean>().Value();
  }
  auto work = [path, device, dtype, channels_last] {
    c10::InferenceMode normal_tensors(false);  // parameters must stay ordinary tensors for set_data
    auto module = std::make_shared<torch::jit::Module>(torch::jit::load(path, device));
    ConvertFloatingTensors(*module, dtype);
    if (channels_last) ConvertToChannelsLast(*module);
    module->eval();
    return LoadedModule{module, path, device, dtype, channels_last};
  };
  auto deliver = [](Napi::Env env, LoadedModule& loaded) -> Napi::Value {
    return AddonOf(env).module_class.New({Napi::External<LoadedModule>::New(env, &loaded)});
  };
  return Schedule(env, device, "loading TorchScript module '" + path + "'", work, deliver);
}

Napi::Value ModuleWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!module_) throw Napi::Error::New(env, "easyinv: module '" + path_ + "' has been disposed");
  std::vector<c10::IValue> inputs;
  for (size_t i = 0; i < info.Length(); ++i) {
    inputs.emplace_back(TensorWrap::Extract(env, info[i], "forward argument " + std::to_string(i + 1)));
  }
  auto work = [module = module_, inputs, channels_last = channels_last_]() mutable {
    if (channels_last) {
      for (auto& input : inputs) input = ChannelsLastIfImage(input.toTensor());
    }
    return module->forward(inputs);
  };
  return Schedule(env, device_, "forward of module '" + path_ + "'", work, OutputToJs);
}

Napi::Value ModuleWrap::Dispose(const Napi::CallbackInfo& info) {
  module_.reset();
  return info.Env().Undefined();
}

Napi::Value ModuleWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !module_); }

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

}  // namespace easyinv
