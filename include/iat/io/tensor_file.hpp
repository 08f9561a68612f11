#pragma once
/// \file
/// Files in torch.save's zip format that hold a dict of tensors, shared with Python:
/// iat::io::save_tensor_dict writes one that `torch.load(path)` returns as {name: tensor} (also with
/// `weights_only=True`), iat::io::read_tensor_dict reads those and the ones Python's `torch.save(dict)` writes
/// (`model.state_dict()`, a dict of named tensors). The reader is a small pickle interpreter for exactly
/// that subset: it runs no code, accepts a fixed list of globals (dicts, tensor and storage rebuilds), and
/// bounds every read, size, nesting level and allocation by the file, so that a damaged or hostile file
/// ends in an error naming it. iat::models' state-dict functions are written with it.

#include <iat/detail/file_io.hpp>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace iat {
namespace io {

namespace detail {

/// One value of the pickle subset that torch.save / torch::jit::pickle_save write for a dict of tensors.
struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor, kStorage };
  Kind kind = Kind::kNone;
  int64_t integer = 0;
  double real = 0.0;
  std::string text;  ///< kString, or "module.name" for kGlobal
  std::vector<std::shared_ptr<PickleValue>> items;                                             ///< tuple/list
  std::vector<std::pair<std::shared_ptr<PickleValue>, std::shared_ptr<PickleValue>>> entries;  ///< dict
  torch::Tensor tensor;                                                                        ///< kTensor; kStorage: 1-D
  int depth = 1;        ///< 1 + the deepest value held (values are never changed once held: no cycles)
  bool held = false;    ///< inside a tuple, list or dict
};
using PickleValuePtr = std::shared_ptr<PickleValue>;

inline const char* pickle_kind_name(PickleValue::Kind kind) {
  switch (kind) {
    case PickleValue::Kind::kNone: return "None";
    case PickleValue::Kind::kBool: return "bool";
    case PickleValue::Kind::kInt: return "int";
    case PickleValue::Kind::kFloat: return "float";
    case PickleValue::Kind::kString: return "str";
    case PickleValue::Kind::kTuple: return "tuple";
    case PickleValue::Kind::kList: return "list";
    case PickleValue::Kind::kDict: return "dict";
    case PickleValue::Kind::kGlobal: return "global";
    case PickleValue::Kind::kTensor: return "tensor";
    case PickleValue::Kind::kStorage: return "storage";
  }
  return "?";
}

/// The element type of a legacy storage class name (`torch FloatStorage` → float).
inline bool storage_dtype(const std::string& global, torch::ScalarType* out) {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"torch.FloatStorage", torch::kFloat},   {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},     {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},     {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},     {"torch.BoolStorage", torch::kBool}};
  auto it = kTypes.find(global);
  if (it == kTypes.end()) return false;
  *out = it->second;
  return true;
}

/// A minimal unpickler for torch.save's zip format (protocol 2, plus the protocol-4 opcodes Python may
/// use with pickle_protocol=4): dicts, lists, tuples, scalars, strings and tensors rebuilt with
/// torch._utils._rebuild_tensor(_v2) / _rebuild_parameter. Anything else is an error naming what was
/// found, never a crash: every read is bounds-checked against the record.
///
/// LibTorch's own torch::jit::pickle_load cannot read Python state dicts: it turns the
/// collections.OrderedDict that `state_dict()` returns into None.
class Unpickler {
 public:
  Unpickler(std::string path, caffe2::serialize::PyTorchStreamReader& reader, const char* who)
      : path_(std::move(path)), reader_(reader), who_(who) {}

  PickleValuePtr run(const char* data, size_t size) {
    data_ = data;
    size_ = size;
    pos_ = 0;
    while (true) {
      fail_if(pos_ >= size_, "the pickle ends without a STOP opcode");
      const size_t at = pos_;
      const auto op = static_cast<unsigned char>(data_[pos_++]);
      switch (op) {
        case 0x80: read_bytes(1); break;                      // PROTO
        case 0x95: read_bytes(8); break;                      // FRAME
        case '.': {                                           // STOP
          fail_if(stack_.size() != 1, "STOP with ", stack_.size(), " values on the stack");
          return stack_.back();
        }
        case '(': marks_.push_back(stack_.size()); break;     // MARK
        case 'N': push(make(PickleValue::Kind::kNone)); break;
        case 0x88: push(make_int(PickleValue::Kind::kBool, 1)); break;  // NEWTRUE
        case 0x89: push(make_int(PickleValue::Kind::kBool, 0)); break;  // NEWFALSE
        case 'K': push(make_int(PickleValue::Kind::kInt, static_cast<unsigned char>(*read_bytes(1)))); break;
        case 'M': push(make_int(PickleValue::Kind::kInt, static_cast<int64_t>(read_uint(2)))); break;
        case 'J': push(make_int(PickleValue::Kind::kInt, static_cast<int32_t>(static_cast<uint32_t>(read_uint(4))))); break;
        case 0x8a: {                                          // LONG1
          const auto n = static_cast<size_t>(static_cast<unsigned char>(*read_bytes(1)));
          fail_if(n > 8, "LONG1 of ", n, " bytes (integers beyond 64 bits are not supported)");
          const char* b = read_bytes(n);
          uint64_t v = 0;
          for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
          if (n > 0 && n < 8 && (static_cast<unsigned char>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
          push(make_int(PickleValue::Kind::kInt, static_cast<int64_t>(v)));
          break;
        }
        case 'G': {                                           // BINFLOAT (big-endian)
          const char* b = read_bytes(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(b[i]);
          auto v = make(PickleValue::Kind::kFloat);
          std::memcpy(&v->real, &bits, sizeof bits);
          push(v);
          break;
        }
        case 'X': push_string(read_uint(4)); break;           // BINUNICODE
        case 0x8c: push_string(read_uint(1)); break;          // SHORT_BINUNICODE
        case 0x8d: push_string(read_uint(8)); break;          // BINUNICODE8
        case '}': push(make(PickleValue::Kind::kDict)); break;
        case ']': push(make(PickleValue::Kind::kList)); break;
        case ')': push(make(PickleValue::Kind::kTuple)); break;
        case 't': {                                           // TUPLE
          auto t = make(PickleValue::Kind::kTuple);
          for (auto& item : pop_to_mark()) hold(*t, item, &t->items);
          push(t);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                    // TUPLE1..3
          const size_t n = op - 0x84u;
          fail_if(stack_.size() < n, "TUPLE", n, " on a stack of ", stack_.size());
          auto t = make(PickleValue::Kind::kTuple);
          for (auto it = stack_.end() - static_cast<std::ptrdiff_t>(n); it != stack_.end(); ++it) hold(*t, *it, &t->items);
          stack_.resize(stack_.size() - n);
          push(t);
          break;
        }
        case 'q': memo_put(read_uint(1)); break;              // BINPUT
        case 'r': memo_put(read_uint(4)); break;              // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;             // MEMOIZE
        case 'h': memo_get(read_uint(1)); break;              // BINGET
        case 'j': memo_get(read_uint(4)); break;              // LONG_BINGET
        case 'c': {                                           // GLOBAL "module\nname\n"
          auto g = make(PickleValue::Kind::kGlobal);
          const std::string module = read_line();
          g->text = module + "." + read_line();
          push(g);
          break;
        }
        case 0x93: {                                          // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          fail_if(name->kind != PickleValue::Kind::kString || module->kind != PickleValue::Kind::kString,
                  "STACK_GLOBAL without module and name strings");
          auto g = make(PickleValue::Kind::kGlobal);
          g->text = module->text + "." + name->text;
          push(g);
          break;
        }
        case 'Q': push(persistent_load(pop())); break;        // BINPERSID
        case 'R': {                                           // REDUCE
          auto args = pop();
          auto callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b': pop(); break;                               // BUILD: state (OrderedDict._metadata) ignored
        case 's': {                                           // SETITEM
          auto value = pop();
          auto key = pop();
          auto dict = top();
          fail_if(dict->kind != PickleValue::Kind::kDict, "SETITEM on a ", pickle_kind_name(dict->kind));
          set_item(*dict, key, value);
          break;
        }
        case 'u': {                                           // SETITEMS
          auto items = pop_to_mark();
          auto dict = top();
          fail_if(dict->kind != PickleValue::Kind::kDict, "SETITEMS on a ", pickle_kind_name(dict->kind));
          fail_if(items.size() % 2 != 0, "SETITEMS with an odd number of values");
          for (size_t i = 0; i < items.size(); i += 2) set_item(*dict, items[i], items[i + 1]);
          break;
        }
        case 'a': {                                           // APPEND
          auto value = pop();
          auto list = top();
          fail_if(list->kind != PickleValue::Kind::kList, "APPEND on a ", pickle_kind_name(list->kind));
          hold(*list, value, &list->items);
          break;
        }
        case 'e': {                                           // APPENDS
          auto items = pop_to_mark();
          auto list = top();
          fail_if(list->kind != PickleValue::Kind::kList, "APPENDS on a ", pickle_kind_name(list->kind));
          for (auto& item : items) hold(*list, item, &list->items);
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail_if(true, "unsupported pickle opcode ", hex, " at offset ", at,
                  " (only what torch.save writes for a dict of tensors is read)");
        }
      }
    }
  }

 private:
  template <typename... Args>
  void fail_if(bool failed, const Args&... args) const {
    TORCH_CHECK(!failed, who_, ": cannot read '", path_, "' (data.pkl, offset ", pos_, " of ", size_,
                " bytes): ", args...);
  }

  static PickleValuePtr make(PickleValue::Kind kind) {
    auto v = std::make_shared<PickleValue>();
    v->kind = kind;
    return v;
  }
  static PickleValuePtr make_int(PickleValue::Kind kind, int64_t value) {
    auto v = make(kind);
    v->integer = value;
    return v;
  }

  const char* read_bytes(size_t n) {
    fail_if(n > size_ - pos_, "a value of ", n, " bytes runs past the end of the pickle");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t read_uint(size_t n) {
    const char* b = read_bytes(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
    return v;
  }
  std::string read_line() {
    const size_t start = pos_;
    while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
    fail_if(pos_ >= size_, "a GLOBAL name runs past the end of the pickle");
    std::string line(data_ + start, pos_ - start);
    ++pos_;
    return line;
  }
  void push_string(uint64_t n) {
    fail_if(n > size_ - pos_, "a string of ", n, " bytes runs past the end of the pickle");
    auto v = make(PickleValue::Kind::kString);
    v->text.assign(read_bytes(static_cast<size_t>(n)), static_cast<size_t>(n));
    push(v);
  }

  void push(PickleValuePtr v) { stack_.push_back(std::move(v)); }

  /// Deepest nesting accepted: a state dict nests 3 or 4 levels (dict, rebuild arguments, size tuple).
  static constexpr int kMaxDepth = 64;

  /// Puts `value` into `container` (appended to `slot`). A container that is already held by another is
  /// never changed, and none holds itself, so the values form no cycle (which would leak them) and every
  /// depth is exact; a nesting deeper than kMaxDepth is refused (freeing it would recurse that deep).
  void hold(PickleValue& container, const PickleValuePtr& value, std::vector<PickleValuePtr>* slot) {
    fail_if(container.held, "a ", pickle_kind_name(container.kind),
            " changed after it was put into another container (cyclic or not written by torch.save)");
    fail_if(value.get() == &container, "a ", pickle_kind_name(container.kind), " put into itself");
    fail_if(value->depth >= kMaxDepth, "values nested deeper than ", kMaxDepth, " levels");
    value->held = true;
    container.depth = std::max(container.depth, value->depth + 1);
    if (slot != nullptr) slot->push_back(value);
  }
  void set_item(PickleValue& dict, const PickleValuePtr& key, const PickleValuePtr& value) {
    hold(dict, key, nullptr);
    hold(dict, value, nullptr);
    dict.entries.emplace_back(key, value);
  }
  PickleValuePtr pop() {
    fail_if(stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()), "pop from an empty stack");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValuePtr top() {
    fail_if(stack_.empty(), "an opcode needs a value on an empty stack");
    return stack_.back();
  }
  std::vector<PickleValuePtr> pop_to_mark() {
    fail_if(marks_.empty(), "an opcode needs a MARK that is missing");
    const size_t mark = marks_.back();
    marks_.pop_back();
    fail_if(mark > stack_.size(), "a MARK beyond the stack");
    std::vector<PickleValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  void memo_put(uint64_t key) { memo_[key] = top(); }
  void memo_get(uint64_t key) {
    auto it = memo_.find(key);
    fail_if(it == memo_.end(), "memo entry ", key, " read before it was written");
    push(it->second);
  }

  int64_t as_int(const PickleValuePtr& v, const char* what) const {
    fail_if(v->kind != PickleValue::Kind::kInt, what, " must be an int, got a ", pickle_kind_name(v->kind));
    return v->integer;
  }
  std::vector<int64_t> as_ints(const PickleValuePtr& v, const char* what) const {
    fail_if(v->kind != PickleValue::Kind::kTuple && v->kind != PickleValue::Kind::kList, what,
            " must be a tuple of ints, got a ", pickle_kind_name(v->kind));
    std::vector<int64_t> out;
    for (const auto& item : v->items) out.push_back(as_int(item, what));
    return out;
  }

  /// ('storage', <storage class>, key, location, numel) → the record data/<key> as a 1-D tensor.
  PickleValuePtr persistent_load(const PickleValuePtr& pid) {
    fail_if(pid->kind != PickleValue::Kind::kTuple || pid->items.size() < 5 ||
                pid->items[0]->kind != PickleValue::Kind::kString || pid->items[0]->text != "storage",
            "a persistent id that is not ('storage', type, key, location, numel)");
    const auto& type = pid->items[1];
    const auto& key = pid->items[2];
    fail_if(type->kind != PickleValue::Kind::kGlobal || key->kind != PickleValue::Kind::kString,
            "a storage without a type or key");
    torch::ScalarType dtype{};
    fail_if(!storage_dtype(type->text, &dtype), "unsupported storage type ", type->text);
    const int64_t numel = as_int(pid->items[4], "a storage's numel");
    fail_if(numel < 0, "a storage with ", numel, " elements");
    auto cached = storages_.find(key->text);
    if (cached != storages_.end()) return cached->second;
    const std::string record = "data/" + key->text;
    fail_if(!reader_.hasRecord(record), "the archive has no record '", record, "'");
    // LibTorch's reader names no file in its errors (a damaged entry, a short read): this one does.
    std::tuple<at::DataPtr, size_t> data;
    try {
      data = reader_.getRecord(record);
    } catch (const c10::Error& e) {
      fail_if(true, "its record '", record, "' cannot be read: ", e.what_without_backtrace());
    }
    const size_t bytes = std::get<1>(data);
    const auto item = static_cast<uint64_t>(torch::elementSize(dtype));
    fail_if(static_cast<uint64_t>(numel) > bytes / item, "record '", record, "' holds ", bytes, " bytes, too few for ",
            numel, " elements of ", dtype);
    const size_t need = static_cast<size_t>(numel) * static_cast<size_t>(item);
    auto storage = make(PickleValue::Kind::kStorage);  // only a persistent id makes one: a rebuilt tensor is no storage
    storage->tensor = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (need > 0) std::memcpy(storage->tensor.data_ptr(), std::get<0>(data).get(), need);
    storages_[key->text] = storage;
    return storage;
  }

  PickleValuePtr reduce(const PickleValuePtr& callable, const PickleValuePtr& args) {
    fail_if(callable->kind != PickleValue::Kind::kGlobal, "REDUCE on a ", pickle_kind_name(callable->kind));
    fail_if(args->kind != PickleValue::Kind::kTuple, "REDUCE with ", pickle_kind_name(args->kind), " arguments");
    const std::string& name = callable->text;
    if (name == "collections.OrderedDict" || name == "builtins.dict" || name == "__builtin__.dict") {
      fail_if(!args->items.empty(), name, " with arguments");
      return make(PickleValue::Kind::kDict);
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      fail_if(args->items.size() < 4, name, " with ", args->items.size(), " arguments");
      const auto& storage = args->items[0];
      // A storage, never a rebuilt tensor: a view that repeats elements (stride 0) is not materialised, so a
      // rebuild over it would pass the bounds check below against its huge element count and clone it.
      fail_if(storage->kind != PickleValue::Kind::kStorage, name, " on a ", pickle_kind_name(storage->kind),
              ", not a storage");
      const int64_t offset = as_int(args->items[1], "a tensor's storage offset");
      const auto sizes = as_ints(args->items[2], "a tensor's size");
      const auto strides = as_ints(args->items[3], "a tensor's stride");
      fail_if(sizes.size() != strides.size(), "a tensor with ", sizes.size(), " sizes but ", strides.size(),
              " strides");
      const int64_t numel = storage->tensor.numel();
      fail_if(offset < 0 || offset > numel, "a tensor at offset ", offset, " of a storage of ", numel, " elements");
      // The last element's position and the element count, both checked against overflow: every element
      // must lie inside the storage, and the tensor may not hold more elements than its storage unless it
      // repeats them (stride 0), which is kept as a view of the storage (as torch.load does) rather than
      // materialised, so a small file cannot ask for a huge allocation.
      bool empty = false;
      int64_t last = offset;
      int64_t count = 1;
      const int64_t kMax = std::numeric_limits<int64_t>::max();
      for (size_t d = 0; d < sizes.size(); ++d) {
        fail_if(sizes[d] < 0 || strides[d] < 0, "a tensor with a negative size or stride");
        if (sizes[d] == 0) {
          empty = true;
          continue;
        }
        fail_if(strides[d] > 0 && sizes[d] - 1 > (kMax - last) / strides[d], "a tensor of size ",
                torch::IntArrayRef(sizes), " and stride ", torch::IntArrayRef(strides), " runs past its storage of ",
                numel, " elements");
        last += (sizes[d] - 1) * strides[d];
        fail_if(count > kMax / sizes[d], "a tensor of size ", torch::IntArrayRef(sizes), " has more than 2^63 elements");
        count *= sizes[d];
      }
      fail_if(!empty && last >= numel, "a tensor of size ", torch::IntArrayRef(sizes), " at offset ", offset,
              " runs past its storage of ", numel, " elements");
      auto v = make(PickleValue::Kind::kTensor);
      if (empty) {
        v->tensor = storage->tensor.as_strided(sizes, strides, std::min(offset, numel));
      } else {
        auto view = storage->tensor.as_strided(sizes, strides, offset);
        v->tensor = count <= numel ? view.clone() : view;
      }
      return v;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch.jit._pickle.restore_type_tag") {
      fail_if(args->items.empty(), name, " without arguments");
      return args->items[0];
    }
    fail_if(true, "unsupported object ", name,
            " (a state-dict file holds a dict of tensors; save `model.state_dict()`, not the model)");
    return nullptr;
  }

  std::string path_;
  caffe2::serialize::PyTorchStreamReader& reader_;
  const char* who_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  size_t pos_ = 0;
  std::vector<PickleValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PickleValuePtr> memo_;
  std::map<std::string, PickleValuePtr> storages_;
};

/// read_tensor_dict, with errors naming `who` (the public function the user called).
inline torch::OrderedDict<std::string, torch::Tensor> read_tensor_dict(const std::string& path, const char* who) {
  {
    std::ifstream probe(path, std::ios::binary);
    TORCH_CHECK(probe.good(), who, ": cannot open '", path, "'");
    char magic[2] = {0, 0};
    probe.read(magic, 2);
    TORCH_CHECK(probe.gcount() == 2 && magic[0] == 'P' && magic[1] == 'K', who, ": '", path,
                "' is not a zip archive as torch.save writes (", probe.gcount() < 2 ? "shorter than 2 bytes" : "no 'PK' magic",
                "); files written with _use_new_zipfile_serialization=False are not supported");
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, who, ": '", path, "' is not a readable torch.save archive: ", e.what_without_backtrace());
  }
  TORCH_CHECK(reader->hasRecord("data.pkl"), who, ": '", path,
              "' has no data.pkl record (is it a TorchScript module rather than a state dict?)");
  std::tuple<at::DataPtr, size_t> record;
  try {
    record = reader->getRecord("data.pkl");
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, who, ": '", path, "': its data.pkl record cannot be read: ", e.what_without_backtrace());
  }
  const auto* bytes = static_cast<const char*>(std::get<0>(record).get());
  Unpickler unpickler(path, *reader, who);
  auto root = unpickler.run(bytes, std::get<1>(record));
  TORCH_CHECK(root->kind == PickleValue::Kind::kDict, who, ": '", path,
              "' holds a ", pickle_kind_name(root->kind), ", not a dict of tensors");
  torch::OrderedDict<std::string, torch::Tensor> out("tensor_dict");
  for (const auto& entry : root->entries) {
    TORCH_CHECK(entry.first->kind == PickleValue::Kind::kString, who, ": '", path, "' has a ",
                pickle_kind_name(entry.first->kind), " key; a state dict has string keys");
    TORCH_CHECK(entry.second->kind == PickleValue::Kind::kTensor, who, ": '", path, "' entry '",
                entry.first->text, "' is not a tensor (found: ", pickle_kind_name(entry.second->kind), ")");
    TORCH_CHECK(!out.contains(entry.first->text), who, ": '", path, "' has the key '", entry.first->text, "' twice");
    out.insert(entry.first->text, entry.second->tensor);
  }
  return out;
}

}  // namespace detail

/// Reads a file written by Python's `torch.save(d, path)` for a dict `d` of tensors (zip format, the
/// default since PyTorch 1.6; `model.state_dict()` is such a dict) or by save_tensor_dict: the top-level
/// dict's string keys and tensors, in file order, on the CPU. Each tensor is a copy of its elements, except
/// one that repeats elements of its storage (a stride-0 `expand`), which stays a view of the storage as
/// torch.load keeps it, so that a small file cannot ask for a huge allocation. Errors name the file and
/// what was found there.
///
/// **Example**
/// \code
/// auto tensors = iat::io::read_tensor_dict("found.pt");   // Python: torch.save({"x": x, "y": y}, "found.pt")
/// torch::Tensor x_found = tensors["x"];
/// \endcode
inline torch::OrderedDict<std::string, torch::Tensor> read_tensor_dict(const std::string& path) {
  return detail::read_tensor_dict(path, "iat::io::read_tensor_dict");
}

/// Writes named tensors (CPU copies) to `path` in torch.save's zip format without TorchScript type
/// tags, so that Python's `torch.load(path)` returns the dict {name: tensor}, also with
/// `weights_only=True` (the default from PyTorch 2.6 on). The bytes go to `path.tmp` with checked writes,
/// are flushed (fsync) and renamed over `path`, so a reader never sees half a file and a kill leaves at most
/// `path.tmp`, which the next save replaces; a failing write removes `path.tmp`, leaves `path` as it was and
/// throws naming the file and the system's reason.
///
/// **Example**
/// \code
/// c10::Dict<std::string, torch::Tensor> found;
/// found.insert("x_adv", x_adv);
/// iat::io::save_tensor_dict(found, "adv.pt");   // Python: torch.load("adv.pt")["x_adv"]
/// \endcode
inline void save_tensor_dict(const c10::Dict<std::string, torch::Tensor>& tensors, const std::string& path) {
  const char* who = "iat::io::save_tensor_dict";
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& kv : tensors) dict.insert(kv.key(), kv.value().detach().to(torch::kCPU).contiguous());
  // torch::jit::pickle_save would tag the dict with torch.jit._pickle.restore_type_tag, a global that
  // Python's torch.load refuses by default from PyTorch 2.6 on. The same archive without type tags: the
  // pickle of a plain dict of tensors (storages by index), then each storage as data/<index>, as
  // torch.save lays them out.
  std::vector<char> pickle;
  torch::jit::Pickler pickler([&](const char* p, size_t n) { pickle.insert(pickle.end(), p, p + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
                              /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();
  std::vector<char> bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
      bytes.insert(bytes.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
      return n;
    });
    const auto& storages = pickler.tensorData();
    for (size_t i = 0; i < storages.size(); ++i) {
      const auto data = torch::jit::getWriteableTensorData(storages[i], /*to_cpu=*/true);
      writer.writeRecord("data/" + std::to_string(i), data.data(), data.sizeInBytes());
    }
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    writer.writeEndOfFile();
  }
  // The one atomic writer (NAME.tmp, checked writes, fsync, rename): a kill leaves NAME.tmp, which the next
  // save of NAME replaces, never a temporary file under a name no later run looks for.
  iat::detail::write_file_atomically(who, path, bytes.data(), bytes.size());
}

}  // namespace io
}  // namespace iat
