#pragma once
/// \file
/// The header of numpy's `.npy` format (versions 1–3): magic "\x93NUMPY", version, header length, and a
/// Python dict literal with 'descr', 'fortran_order' and 'shape'.

#include <iat/data/detail/io.hpp>

#include <torch/types.h>

#include <cctype>
#include <string>
#include <vector>

namespace iat {
namespace detail {

/// What an .npy header states.
struct NpyHeader {
  std::string descr;          ///< e.g. "|u1", "<i8"
  torch::Dtype dtype = torch::kByte;
  int64_t item_size = 1;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  uint64_t header_bytes = 0;  ///< magic + version + length field + dict
};

/// Bytes of the fixed prefix (magic, version, length field) for a given major version.
inline uint64_t npy_prefix_bytes(uint8_t major) { return major == 1 ? 10 : 12; }

/// Checks the magic and version at `p` (n bytes available, at least 10) and returns the dict's length;
/// the version's prefix length is npy_prefix_bytes(*major_out).
inline uint64_t npy_dict_length(const char* who, const std::string& where, const uint8_t* p, size_t n,
                                uint8_t* major_out) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  TORCH_CHECK(n >= 10 && std::equal(kMagic, kMagic + 6, p), who, ": ", where,
              " is not a .npy array (its first bytes are not the \\x93NUMPY magic)");
  const uint8_t major = p[6];
  TORCH_CHECK(major >= 1 && major <= 3, who, ": ", where, ": unsupported .npy format version ", int{major}, ".",
              int{p[7]});
  *major_out = major;
  if (major == 1) return static_cast<uint64_t>(p[8] | (p[9] << 8));
  TORCH_CHECK(n >= 12, who, ": ", where, " is truncated inside its .npy header");
  return uint64_t{p[8]} | (uint64_t{p[9]} << 8) | (uint64_t{p[10]} << 16) | (uint64_t{p[11]} << 24);
}

/// Parses the header dict text.
inline NpyHeader parse_npy_dict(const char* who, const std::string& where, const std::string& dict) {
  NpyHeader h;
  auto fail = [&](const std::string& what) {
    TORCH_CHECK(false, who, ": ", where, ": malformed .npy header (", what, "): ", dict);
  };
  auto value_of = [&](const std::string& key) -> size_t {
    size_t k = dict.find("'" + key + "'");
    if (k == std::string::npos) k = dict.find("\"" + key + "\"");
    if (k == std::string::npos) fail("no '" + key + "'");
    size_t c = dict.find(':', k + key.size() + 2);
    if (c == std::string::npos) fail("no value for '" + key + "'");
    ++c;
    while (c < dict.size() && std::isspace(static_cast<unsigned char>(dict[c]))) ++c;
    return c;
  };
  size_t v = value_of("descr");
  if (v >= dict.size() || (dict[v] != '\'' && dict[v] != '"')) fail("descr is not a string (structured dtype?)");
  const size_t close = dict.find(dict[v], v + 1);
  if (close == std::string::npos) fail("unterminated descr");
  h.descr = dict.substr(v + 1, close - v - 1);
  v = value_of("fortran_order");
  if (dict.compare(v, 4, "True") == 0) {
    h.fortran_order = true;
  } else if (dict.compare(v, 5, "False") != 0) {
    fail("fortran_order is neither True nor False");
  }
  v = value_of("shape");
  if (v >= dict.size() || dict[v] != '(') fail("shape is not a tuple");
  const size_t end = dict.find(')', v);
  if (end == std::string::npos) fail("unterminated shape");
  std::string num;
  for (size_t i = v + 1; i <= end; ++i) {
    const char ch = dict[i];
    if (std::isdigit(static_cast<unsigned char>(ch))) {
      num += ch;
    } else if (ch == ',' || ch == ')') {
      if (!num.empty()) {
        if (num.size() > 18) fail("dimension too large");
        h.shape.push_back(std::stoll(num));
        num.clear();
      }
    } else if (ch == 'L' || std::isspace(static_cast<unsigned char>(ch))) {
      continue;
    } else {
      fail("shape holds a non-integer");
    }
  }
  // dtype: byte order, kind, size.
  const std::string& d = h.descr;
  if (d.size() < 3) fail("unknown descr '" + d + "'");
  const char order = d[0];
  const char kind = d[1];
  const std::string size = d.substr(2);
  const bool one_byte = size == "1";
  TORCH_CHECK(order == '|' || order == '<' || order == '=' || one_byte, who, ": ", where, ": dtype '", d,
              "' is big-endian; only little-endian .npy arrays are supported");
  if (kind == 'u' && size == "1") { h.dtype = torch::kByte; h.item_size = 1; }
  else if (kind == 'i' && size == "1") { h.dtype = torch::kChar; h.item_size = 1; }
  else if (kind == 'b' && size == "1") { h.dtype = torch::kBool; h.item_size = 1; }
  else if (kind == 'i' && size == "2") { h.dtype = torch::kShort; h.item_size = 2; }
  else if (kind == 'i' && size == "4") { h.dtype = torch::kInt; h.item_size = 4; }
  else if (kind == 'i' && size == "8") { h.dtype = torch::kLong; h.item_size = 8; }
  else if (kind == 'u' && size == "8") { h.dtype = torch::kLong; h.item_size = 8; }  // labels: values < 2^63
  else if (kind == 'f' && size == "2") { h.dtype = torch::kHalf; h.item_size = 2; }
  else if (kind == 'f' && size == "4") { h.dtype = torch::kFloat; h.item_size = 4; }
  else if (kind == 'f' && size == "8") { h.dtype = torch::kDouble; h.item_size = 8; }
  else {
    TORCH_CHECK(false, who, ": ", where, ": unsupported dtype '", d,
                "' (supported: u1, i1, b1, i2, i4, i8, u8, f2, f4, f8)");
  }
  return h;
}

/// The .npy descr of a tensor dtype that numpy reads as the same type ("" for none).
inline std::string npy_descr(c10::ScalarType t) {
  switch (t) {
    case torch::kByte: return "|u1";
    case torch::kChar: return "|i1";
    case torch::kBool: return "|b1";
    case torch::kShort: return "<i2";
    case torch::kInt: return "<i4";
    case torch::kLong: return "<i8";
    case torch::kHalf: return "<f2";
    case torch::kFloat: return "<f4";
    case torch::kDouble: return "<f8";
    default: return "";
  }
}

/// A complete version-1.0 .npy file of a CPU tensor (C order, little-endian): the magic, the header dict
/// padded with spaces to a multiple of 64 bytes and ending in a newline, then the data, as numpy.save writes
/// it. Throws naming `who` and `key` for a dtype numpy has no match for.
inline std::string npy_file_bytes(const char* who, const std::string& key, const torch::Tensor& tensor) {
  const std::string descr = npy_descr(tensor.scalar_type());
  TORCH_CHECK_VALUE(!descr.empty(), who, ": array '", key, "' has dtype ", tensor.scalar_type(),
                    ", which .npy cannot hold (supported: uint8, int8, bool, int16, int32, int64, float16, float32, "
                    "float64)");
  const uint16_t one = 1;
  TORCH_CHECK(*reinterpret_cast<const uint8_t*>(&one) == 1, who, ": .npy output needs a little-endian machine");
  const auto t = tensor.to(torch::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 || i + 1 < t.dim() ? ", " : "");
  if (t.dim() == 1) shape.resize(shape.size() - 1);  // "(3,)"
  shape += ")";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t unpadded = 10 + dict.size() + 1;  // magic + version + length, dict, '\n'
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  TORCH_CHECK(dict.size() <= 65535, who, ": array '", key, "' has too many dimensions for a .npy 1.0 header");
  const size_t data_bytes = static_cast<size_t>(t.numel()) * t.element_size();
  std::string out;
  out.reserve(10 + dict.size() + data_bytes);
  out += "\x93NUMPY";
  out += static_cast<char>(1);
  out += static_cast<char>(0);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  if (data_bytes > 0) out.append(static_cast<const char*>(t.data_ptr()), data_bytes);
  return out;
}

}  // namespace detail
}  // namespace iat
