#pragma once
/// \file
/// A reader of MATLAB level-5 MAT-files (the format of `save -v6` and `-v7`), enough for numeric arrays:
/// the 128-byte header, miMATRIX elements, miCOMPRESSED elements (zlib streams holding one miMATRIX), the
/// small-data-element form, and column-major data of any numeric storage type. Little-endian files only.
/// Every read is bounds-checked; errors name the file and the offset.

#include <iat/data/detail/io.hpp>

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace iat {
namespace detail {

/// MAT-file data types (storage of an element).
enum MatType : uint32_t {
  kMiInt8 = 1, kMiUInt8 = 2, kMiInt16 = 3, kMiUInt16 = 4, kMiInt32 = 5, kMiUInt32 = 6, kMiSingle = 7,
  kMiDouble = 9, kMiInt64 = 12, kMiUInt64 = 13, kMiMatrix = 14, kMiCompressed = 15, kMiUtf8 = 16,
};

/// MATLAB array classes.
enum MatClass : uint32_t {
  kMxCell = 1, kMxStruct = 2, kMxObject = 3, kMxChar = 4, kMxSparse = 5, kMxDouble = 6, kMxSingle = 7,
  kMxInt8 = 8, kMxUInt8 = 9, kMxInt16 = 10, kMxUInt16 = 11, kMxInt32 = 12, kMxUInt32 = 13, kMxInt64 = 14,
  kMxUInt64 = 15,
};

/// A numeric storage type's torch dtype and size; false for non-numeric types.
inline bool mat_numeric_type(uint32_t type, torch::Dtype* dtype, int64_t* size) {
  switch (type) {
    case kMiInt8: *dtype = torch::kChar; *size = 1; return true;
    case kMiUInt8: *dtype = torch::kByte; *size = 1; return true;
    case kMiInt16: *dtype = torch::kShort; *size = 2; return true;
    case kMiUInt16: *dtype = torch::kInt; *size = 2; return true;  // widened on read
    case kMiInt32: *dtype = torch::kInt; *size = 4; return true;
    case kMiUInt32: *dtype = torch::kLong; *size = 4; return true;  // widened on read
    case kMiSingle: *dtype = torch::kFloat; *size = 4; return true;
    case kMiDouble: *dtype = torch::kDouble; *size = 8; return true;
    case kMiInt64: *dtype = torch::kLong; *size = 8; return true;
    case kMiUInt64: *dtype = torch::kLong; *size = 8; return true;  // values above 2^63 are not images or labels
    default: return false;
  }
}

/// One variable of a MAT-file.
struct MatArray {
  std::string name;
  uint32_t array_class = 0;  ///< MatClass
  bool complex = false;
  std::vector<int64_t> dims;  ///< MATLAB's dimensions (column-major)
  uint32_t data_type = 0;     ///< storage type of the real part
  torch::Tensor values;       ///< the real part, shape dims reversed (row-major view of column-major data)
  uint64_t offset = 0;        ///< file offset of the variable's element (for messages)
};

/// Parses a miMATRIX element's payload. Only variables in `wanted` (all when empty) get their values.
inline MatArray parse_mat_matrix(const char* who, const std::string& path, const uint8_t* data, size_t size,
                                 uint64_t file_offset, const std::vector<std::string>& wanted) {
  ByteCursor cur(who, path, data, size, file_offset);
  MatArray out;
  out.offset = file_offset;
  // Sub-element tag: 8 bytes, or 4 in the small-data-element form (payload ≤ 4 bytes in the same 8).
  auto read_tag = [&](const char* what, uint32_t* type, uint32_t* bytes) {
    const uint32_t first = cur.u32_le(what);
    if ((first >> 16) != 0) {
      *type = first & 0xffff;
      *bytes = first >> 16;
      TORCH_CHECK(*bytes <= 4, who, ": '", path, "': small data element at offset ", cur.file_offset() - 4,
                  " claims ", *bytes, " bytes (at most 4)");
      return true;  // small
    }
    *type = first;
    *bytes = cur.u32_le(what);
    return false;
  };
  auto padded = [](uint64_t n) { return (n + 7) / 8 * 8; };

  uint32_t type = 0, bytes = 0;
  bool small = read_tag("the array flags", &type, &bytes);
  TORCH_CHECK(type == kMiUInt32 && bytes == 8 && !small, who, ": '", path, "': array at offset ", file_offset,
              " has no array-flags sub-element (type ", type, ", ", bytes, " bytes)");
  const uint32_t flags = cur.u32_le("the array flags");
  cur.skip(4, "the array flags");
  out.array_class = flags & 0xff;
  out.complex = (flags & 0x800) != 0;
  if (out.array_class == kMxSparse) return out;  // sparse arrays carry nzmax etc.; not supported, not needed

  small = read_tag("the dimensions", &type, &bytes);
  TORCH_CHECK(type == kMiInt32 && bytes % 4 == 0 && bytes >= 8, who, ": '", path, "': array at offset ", file_offset,
              " has no valid dimensions sub-element (type ", type, ", ", bytes, " bytes)");
  const size_t dims_start = cur.position();
  for (uint32_t i = 0; i < bytes / 4; ++i) {
    const auto d = static_cast<int32_t>(cur.u32_le("a dimension"));
    out.dims.push_back(d);
  }
  cur.seek(dims_start + (small ? 4 : padded(bytes)), "the dimensions' padding");

  small = read_tag("the array name", &type, &bytes);
  TORCH_CHECK(type == kMiInt8 || type == kMiUtf8, who, ": '", path, "': array at offset ", file_offset,
              " has no name sub-element (type ", type, ")");
  cur.need(bytes, "the array name");
  out.name.assign(reinterpret_cast<const char*>(cur.here()), bytes);
  cur.skip(small ? 4 : padded(bytes) <= cur.remaining() ? padded(bytes) : bytes, "the array name");

  const bool is_numeric = out.array_class >= kMxDouble && out.array_class <= kMxUInt64;
  bool want = wanted.empty();
  for (const auto& w : wanted) want = want || w == out.name;
  if (!is_numeric || !want) return out;

  const int64_t numel = checked_numel(who, path, out.dims);
  const uint64_t part_offset = cur.file_offset();
  small = read_tag("the real part", &type, &bytes);
  torch::Dtype dtype = torch::kByte;
  int64_t item = 1;
  TORCH_CHECK(mat_numeric_type(type, &dtype, &item), who, ": '", path, "': variable '", out.name,
              "' stores its data as type ", type, ", not a numeric MAT type");
  TORCH_CHECK(holds_exactly(bytes, numel, item), who, ": '", path, "': variable '",
              out.name, "' at offset ", part_offset, ": its dimensions need ", numel, " values of ", item,
              " bytes, the data element holds ", bytes, " bytes");
  cur.need(bytes, "the real part's data");
  out.data_type = type;
  std::vector<int64_t> shape(out.dims.rbegin(), out.dims.rend());
  const uint8_t* p = cur.here();
  if (type == kMiUInt16 || type == kMiUInt32) {  // no unsigned torch types beyond uint8: widen
    out.values = torch::empty(shape, dtype);
    if (type == kMiUInt16) {
      auto* o = out.values.data_ptr<int32_t>();
      for (int64_t i = 0; i < numel; ++i) o[i] = static_cast<int32_t>(p[2 * i] | (p[2 * i + 1] << 8));
    } else {
      auto* o = out.values.data_ptr<int64_t>();
      for (int64_t i = 0; i < numel; ++i) {
        o[i] = static_cast<int64_t>(uint32_t{p[4 * i]} | (uint32_t{p[4 * i + 1]} << 8) | (uint32_t{p[4 * i + 2]} << 16) |
                                    (uint32_t{p[4 * i + 3]} << 24));
      }
    }
  } else {
    out.values = torch::empty(shape, dtype);
    if (numel > 0) std::memcpy(out.values.data_ptr(), p, static_cast<size_t>(bytes));
  }
  return out;
}

/// Reads the variables of a level-5 MAT-file (values only for those in `wanted`, all when empty).
inline std::vector<MatArray> read_mat_file(const char* who, const std::string& path,
                                           const std::vector<std::string>& wanted = {}) {
  const ByteBuffer bytes = read_file_bytes(who, path);
  ByteCursor cur(who, path, bytes.data(), bytes.size());
  cur.need(128, "the 128-byte MAT-file header");
  const std::string text(reinterpret_cast<const char*>(bytes.data()), 116);
  TORCH_CHECK(text.rfind("MATLAB 7.3", 0) != 0, who, ": '", path,
              "' is a MATLAB 7.3 (HDF5) file; save it with -v7 or -v6 (level-5 format) instead");
  cur.skip(124, "the MAT-file header");
  const uint16_t version = cur.u16_le("the MAT-file version");
  const uint8_t e0 = cur.u8("the endian indicator");
  const uint8_t e1 = cur.u8("the endian indicator");
  TORCH_CHECK(!(e0 == 'M' && e1 == 'I'), who, ": '", path, "' is a big-endian MAT-file, which is not supported");
  TORCH_CHECK(e0 == 'I' && e1 == 'M' && version == 0x0100, who, ": '", path,
              "' is not a level-5 MAT-file: bytes 124..127 should be version 0x0100 and 'IM', got version 0x", std::hex,
              version, std::dec, " and '", static_cast<char>(e0), static_cast<char>(e1), "'");

  std::vector<MatArray> arrays;
  while (cur.remaining() > 0) {
    const uint64_t at = cur.file_offset();
    const uint32_t type = cur.u32_le("a data element's tag");
    TORCH_CHECK((type >> 16) == 0, who, ": '", path, "': unexpected small data element at top level, offset ", at);
    const uint32_t size = cur.u32_le("a data element's tag");
    cur.need(size, type == kMiCompressed ? "a compressed variable" : "a variable");
    if (type == kMiCompressed) {
      const ByteBuffer plain = inflate_bytes(who, path, cur.here(), size, cur.file_offset(), Compression::kZlib);
      ByteCursor inner(who, path, plain.data(), plain.size(), at);
      const uint32_t inner_type = inner.u32_le("the compressed variable's tag");
      const uint32_t inner_size = inner.u32_le("the compressed variable's tag");
      TORCH_CHECK(inner_type == kMiMatrix, who, ": '", path, "': compressed element at offset ", at,
                  " holds data type ", inner_type, ", expected a matrix (14)");
      inner.need(inner_size, "the compressed variable (decompressed)");
      if (inner_size > 0) arrays.push_back(parse_mat_matrix(who, path, inner.here(), inner_size, at, wanted));
    } else if (type == kMiMatrix && size > 0) {
      arrays.push_back(parse_mat_matrix(who, path, cur.here(), size, at + 8, wanted));
    }
    cur.skip(size, "a variable");
    // Uncompressed elements are padded to 8 bytes; MATLAB does not pad compressed ones.
    if (type != kMiCompressed && cur.position() % 8 != 0) {
      cur.skip(std::min<uint64_t>(8 - cur.position() % 8, cur.remaining()), "padding");
    }
  }
  return arrays;
}

}  // namespace detail
}  // namespace iat
