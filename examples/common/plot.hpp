#pragma once
// Pictures for the example programs: training curves and the supplement's Figure 1 (natural images,
// inverse adversaries and amplified universal inverse perturbations in a grid), written as PNG files.
//
// ## What it draws
//
// * write_curves_png: one PNG with the panels side by side, each panel_width x panel_height pixels. A panel
//   has its title on top, a framed plot area with light grid lines at "nice" tick values (1, 2 or 5 times a
//   power of ten, e.g. 0, 0.2, 0.4 ...; integer ticks when all x are integers such as epochs), tick labels,
//   the x label below and the y label written upwards at the left, and a legend in the corner of the plot
//   area that covers the fewest drawn pixels. Series are 2-pixel polylines in distinct colours (the ten
//   colours of plot_detail::series_colour, repeating after ten), with square markers when a series has at most
//   40 points. Non-finite values (a NaN loss) are skipped and break the line. The axis limits are the
//   data range widened to the nearest ticks, drawn kInset pixels inside the frame so that nothing on a
//   limit is cut. Tick labels are fixed-point ("0.25"), or share one exponent per axis for steps below
//   1e-4 or values from 1e6 up ("1.5e-4").
// * write_image_grid_png: a grid with one row per ImageRow: the row title (word-wrapped) at the left, then
//   the row's images, upscaled by an integer factor with nearest neighbour so 28x28 or 32x32 images stay
//   legible, each with a thin grey frame and its caption centred underneath. Values are clamped to [0, 1]
//   (NaN shows as 0) and quantised as round(255 v). Rows with fewer images than the widest row leave their
//   last cells empty. image_grid_layout gives the geometry (size, where each image lands).
// * visualize_perturbation: 0.5 + amplification * delta, clamped to [0, 1], so that a perturbation of a
//   few 1/255 becomes visible (grey means zero, brighter positive, darker negative).
//
// Text uses the 5x7 bitmap font in font5x7.hpp (printable ASCII; other bytes draw as '?').
//
// ## PNG encoding: stb_image_write
//
// PNG files are encoded by stb_image_write from Debian's libstb-dev (`/usr/include/stb/`), compiled into
// each translation unit that includes this header with STB_IMAGE_WRITE_STATIC, so every function gets
// internal linkage: no library to link (Debian's libstb.so is not needed), no "define the implementation
// in exactly one file" rule, and no clash between several files that include plot.hpp. If a translation
// unit already included <stb/stb_image_write.h> itself before this header, that declaration is used as is
// and the program must provide the implementation (e.g. link `pkg-config stb`). The encoded bytes are
// written with std::ofstream and checked, so a missing directory or a full disk is reported (stb's own
// file writer ignores short writes).
//
// ## Errors
//
// Bad arguments (no panels, an empty series, x and y of different lengths, images that are not
// [N, C, H, W] with C = 1 or 3, captions that do not match the images ...) throw std::invalid_argument
// naming the function, the panel/series/row and the expected and actual values. A file that cannot be
// written throws std::runtime_error naming the path and the system's reason.
//
// Tensors may live on any device and have any floating dtype; they are copied to CPU float here.

#include "font5x7.hpp"

#include <torch/types.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef INCLUDE_STB_IMAGE_WRITE_H
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wshadow"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif

namespace iat_examples {

/// One line of a curves panel: y against x, both the same length (non-finite values are skipped).
///
/// **Example**
/// \code
/// iat_examples::Series train{"train", {1, 2, 3}, {0.41, 0.55, 0.62}};
/// \endcode
struct Series {
  std::string label;
  std::vector<double> x, y;
};

/// One panel of a curves picture: a title, axis labels and the series drawn in it.
///
/// **Example**
/// \code
/// iat_examples::Panel acc{"accuracy", "epoch", "accuracy", {train, test}};
/// \endcode
struct Panel {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Series> series;
};

/// One row of an image grid: a title at the left, images [N, C, H, W] (C = 1 or 3, values in [0, 1]) and
/// either no captions or one caption per image.
///
/// **Example**
/// \code
/// iat_examples::ImageRow natural{"natural", x.slice(0, 0, 8), {"p_y=0.91", "p_y=0.78", ...}};
/// \endcode
struct ImageRow {
  std::string title;
  torch::Tensor images;
  std::vector<std::string> captions;
};

namespace plot_detail {

/// An 8-bit RGB colour.
struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
  bool operator!=(const Rgb& o) const { return !(*this == o); }
};

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kInk{25, 25, 25};           // text, frame, ticks
constexpr Rgb kGridLine{228, 228, 228};   // grid lines of the plot area
constexpr Rgb kLegendEdge{170, 170, 170}; // legend box edge
constexpr Rgb kImageFrame{190, 190, 190}; // thin frame around each image of the grid

/// The colour of series i of a panel: ten well-separated colours (the "tab10" hues), repeating.
inline Rgb series_colour(size_t i) {
  static const Rgb palette[10] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                                  {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                  {188, 189, 34},  {23, 190, 207}};
  return palette[i % 10];
}

/// Width in pixels of `text` drawn at `scale` (no trailing spacing); 0 for an empty string.
inline int text_width(const std::string& text, int scale = 1) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * font5x7::kAdvance - 1) * scale;
}

/// Height in pixels of one line of text at `scale`, baseline included (descenders of g j p q y reach
/// font5x7::kDescent * scale pixels further down).
inline int text_height(int scale = 1) { return font5x7::kGlyphHeight * scale; }

/// `text` cut to at most `max_width` pixels at `scale`, ending in "..." when it had to be cut.
inline std::string fit_text(const std::string& text, int max_width, int scale = 1) {
  if (text_width(text, scale) <= max_width) return text;
  const int fit = (max_width / scale + 1) / font5x7::kAdvance;  // characters that fit
  return fit > 3 ? text.substr(0, static_cast<size_t>(fit - 3)) + "..." : std::string();
}

/// An RGB picture with simple drawing: pixels, rectangles, thick lines and 5x7 text. Drawing outside the
/// canvas, or outside the clip rectangle when one is set, is silently dropped.
///
/// **Example**
/// \code
/// iat_examples::plot_detail::Canvas c(200, 100, iat_examples::plot_detail::kWhite);
/// c.line(10, 90, 190, 10, {31, 119, 180}, 2);
/// c.text(10, 10, "hello", iat_examples::plot_detail::kInk, 2);
/// \endcode
class Canvas {
 public:
  /// The largest picture drawn (300 MB of RGB).
  static constexpr int64_t kMaxPixels = 100'000'000;
  Canvas(int width, int height, Rgb background) : width_(width), height_(height) {
    if (width <= 0 || height <= 0 || static_cast<int64_t>(width) * height > kMaxPixels)
      throw std::invalid_argument("iat_examples::Canvas: size must be positive and at most " +
                                  std::to_string(kMaxPixels) + " pixels, got " + std::to_string(width) + "x" +
                                  std::to_string(height));
    data_.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
    for (size_t i = 0; i < data_.size(); i += 3) {
      data_[i] = background.r;
      data_[i + 1] = background.g;
      data_[i + 2] = background.b;
    }
    reset_clip();
  }

  int width() const { return width_; }
  int height() const { return height_; }
  /// Row-major RGB bytes, width * height * 3.
  const std::vector<uint8_t>& data() const { return data_; }

  /// Only pixels inside [x, x + w) x [y, y + h) are drawn until reset_clip().
  void set_clip(int x, int y, int w, int h) {
    clip_x0_ = std::max(0, x);
    clip_y0_ = std::max(0, y);
    clip_x1_ = std::min(width_, x + w);
    clip_y1_ = std::min(height_, y + h);
  }
  void reset_clip() { set_clip(0, 0, width_, height_); }

  void set_pixel(int x, int y, Rgb c) {
    if (x < clip_x0_ || x >= clip_x1_ || y < clip_y0_ || y >= clip_y1_) return;
    const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 3;
    data_[i] = c.r;
    data_[i + 1] = c.g;
    data_[i + 2] = c.b;
  }

  /// The colour at (x, y); (x, y) must be inside the canvas.
  Rgb pixel(int x, int y) const {
    const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 3;
    return {data_[i], data_[i + 1], data_[i + 2]};
  }

  void fill_rect(int x, int y, int w, int h, Rgb c) {
    for (int yy = y; yy < y + h; ++yy)
      for (int xx = x; xx < x + w; ++xx) set_pixel(xx, yy, c);
  }

  /// A one-pixel outline whose outer edge is [x, x + w) x [y, y + h).
  void rect(int x, int y, int w, int h, Rgb c) {
    fill_rect(x, y, w, 1, c);
    fill_rect(x, y + h - 1, w, 1, c);
    fill_rect(x, y, 1, h, c);
    fill_rect(x + w - 1, y, 1, h, c);
  }

  /// A Bresenham line from (x0, y0) to (x1, y1) drawn with a square brush of `thickness` pixels whose
  /// top-left corner follows the line (so thickness 2 covers the line and the pixels right of and below it).
  void line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1) {
    const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      fill_rect(x0, y0, thickness, thickness, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  /// `text` with its top-left corner at (x, y), each font pixel a scale x scale square.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1) {
    for (size_t k = 0; k < s.size(); ++k) {
      const int gx = x + static_cast<int>(k) * font5x7::kAdvance * scale;
      for (int row = 0; row < font5x7::kGlyphHeight + font5x7::kDescent; ++row)
        for (int col = 0; col < font5x7::kGlyphWidth; ++col)
          if (font5x7::ink(s[k], col, row)) fill_rect(gx + col * scale, y + row * scale, scale, scale, c);
    }
  }

  /// `text` turned a quarter left (read bottom to top), starting at the bottom-left corner (x, y): it
  /// occupies columns [x, x + text_height) and rows (y - text_width, y].
  void text_up(int x, int y, const std::string& s, Rgb c, int scale = 1) {
    for (size_t k = 0; k < s.size(); ++k) {
      const int gy = y - static_cast<int>(k) * font5x7::kAdvance * scale;
      for (int row = 0; row < font5x7::kGlyphHeight + font5x7::kDescent; ++row)
        for (int col = 0; col < font5x7::kGlyphWidth; ++col)
          if (font5x7::ink(s[k], col, row))
            fill_rect(x + row * scale, gy - (col + 1) * scale + 1, scale, scale, c);
    }
  }

 private:
  int width_, height_;
  int clip_x0_ = 0, clip_y0_ = 0, clip_x1_ = 0, clip_y1_ = 0;
  std::vector<uint8_t> data_;
};

/// Encodes `canvas` as PNG and writes it to `path`; throws std::runtime_error naming `who` and `path`.
inline void write_png(const std::string& path, const Canvas& canvas, const std::string& who) {
  std::vector<char> bytes;
  auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<char>*>(context);
    const char* begin = static_cast<const char*>(data);
    out->insert(out->end(), begin, begin + size);
  };
  const int ok = stbi_write_png_to_func(append, &bytes, canvas.width(), canvas.height(), 3, canvas.data().data(),
                                        canvas.width() * 3);
  if (!ok || bytes.empty())
    throw std::runtime_error(who + ": PNG encoding of a " + std::to_string(canvas.width()) + "x" +
                             std::to_string(canvas.height()) + " picture for '" + path + "' failed");
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    const std::string reason = errno ? std::strerror(errno) : "unknown reason";
    throw std::runtime_error(who + ": cannot open '" + path + "' for writing (" + reason + ")");
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    const std::string reason = errno ? std::strerror(errno) : "unknown reason";
    throw std::runtime_error(who + ": writing " + std::to_string(bytes.size()) + " bytes to '" + path +
                             "' failed (" + reason + ")");
  }
}

/// Tick positions for an axis covering [lo, hi]: a step of 1, 2 or 5 times a power of ten giving about
/// `target` intervals, the limits widened to multiples of the step, and the labels' decimal count.
struct Ticks {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> values;
  int decimals = 1;
  /// The label of a tick value: fixed-point with just enough decimals for the step ("0.25"), or, for steps
  /// below 1e-4 or values from 1e6 up, a mantissa with one exponent shared by the whole axis ("1.5e-4").
  std::string label(double v) const {
    char buf[64];
    const double biggest = std::max(std::abs(lo), std::abs(hi));
    if (decimals <= 4 && biggest < 1e6) {
      std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    } else if (v == 0.0 || !(biggest > 0) || !std::isfinite(biggest) || !(step > 0) || !std::isfinite(step)) {
      std::snprintf(buf, sizeof buf, "%.3g", v);
    } else {
      const int exponent = static_cast<int>(std::floor(std::log10(biggest)));
      const int digits = std::min(
          6, std::max(0, exponent - static_cast<int>(std::floor(std::log10(step) + 1e-9))));
      std::snprintf(buf, sizeof buf, "%.*fe%d", digits, v / std::pow(10.0, exponent), exponent);
    }
    return buf;
  }
};

/// Nice ticks for data in [min, max] (finite); `integer` forces a step of at least 1 (epochs, steps).
inline Ticks nice_ticks(double min, double max, int target = 5, bool integer = false) {
  // Keep the arithmetic finite and meaningful: limit magnitudes, and treat a range lost in rounding
  // (relative 1e-9, or below 1e-200) as a constant, which is widened around its value.
  min = std::max(min, -1e300);
  max = std::min(max, 1e300);
  if (!(max - min > 1e-9 * std::max(std::abs(min), std::abs(max))) || max - min < 1e-200) {
    const double mid = std::abs(min) < 1e-200 ? 0.0 : min;
    const double d = mid == 0 ? 1.0 : std::abs(mid) * 0.1;
    min = mid - d;
    max = mid + d;
  }
  const double raw = (max - min) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  double step = (norm <= 1.0 ? 1.0 : norm <= 2.0 ? 2.0 : norm <= 5.0 ? 5.0 : 10.0) * magnitude;
  if (integer && step < 1.0) step = 1.0;
  Ticks t;
  t.step = step;
  t.lo = std::floor(min / step + 1e-9) * step;
  t.hi = std::ceil(max / step - 1e-9) * step;
  const double intervals = std::round((t.hi - t.lo) / step);
  if (!(intervals >= 1 && intervals <= 100)) {  // not expected; never loop or draw wildly
    t.lo = min;
    t.hi = max;
    t.step = max - min;
    t.values = {min, max};
  } else {
    for (int i = 0; i <= static_cast<int>(intervals); ++i) {
      double v = t.lo + i * step;
      if (std::abs(v) < step * 1e-9) v = 0.0;  // no "-0.0"
      t.values.push_back(v);
    }
  }
  t.decimals = std::max(0, -static_cast<int>(std::floor(std::log10(t.step) + 1e-9)));
  return t;
}

/// Geometry of a curves picture: each panel's plot area in picture coordinates. The plot area of panel i
/// is [i * panel_width + kLeft, (i + 1) * panel_width - kRight) x [kTop, panel_height - kBottom); its frame
/// is drawn one pixel outside it.
struct CurvesLayout {
  static constexpr int kLeft = 72, kRight = 16, kTop = 34, kBottom = 44;
  int panel_width = 0, panel_height = 0, panels = 0;
  int width() const { return panel_width * panels; }
  int height() const { return panel_height; }
  int plot_x(int panel) const { return panel * panel_width + kLeft; }
  int plot_y() const { return kTop; }
  int plot_w() const { return panel_width - kLeft - kRight; }
  int plot_h() const { return panel_height - kTop - kBottom; }
};

/// Pixel column of x and row of y in a plot area [px, px + pw) x [py, py + ph) whose axes show
/// [t.lo, t.hi]: the axis range spans the area less kInset pixels at each end, so that lines and markers
/// on the axis limits are not cut by the frame.
constexpr int kInset = 4;
/// Fractions outside [-1, 2] (values far outside the axis, which the axes never produce for their data)
/// are clamped, so that a line can never be asked to run over millions of pixels.
inline double axis_fraction(double v, const Ticks& t) {
  const double f = (v - t.lo) / (t.hi - t.lo);
  return std::isfinite(f) ? std::min(2.0, std::max(-1.0, f)) : 0.0;
}
inline int map_x(double x, const Ticks& t, int px, int pw) {
  return px + kInset + static_cast<int>(std::lround(axis_fraction(x, t) * (pw - 1 - 2 * kInset)));
}
inline int map_y(double y, const Ticks& t, int py, int ph) {
  return py + kInset + static_cast<int>(std::lround((1.0 - axis_fraction(y, t)) * (ph - 1 - 2 * kInset)));
}

/// The axes a panel is drawn with (validates the panel; `who` prefixes the messages).
inline std::pair<Ticks, Ticks> panel_ticks(const Panel& panel, size_t index, const std::string& who) {
  const std::string where = who + ": panel " + std::to_string(index) + " ('" + panel.title + "')";
  if (panel.series.empty()) throw std::invalid_argument(where + " has no series");
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min;
  double y_min = x_min, y_max = -x_min;
  bool x_integer = true;
  for (size_t s = 0; s < panel.series.size(); ++s) {
    const Series& series = panel.series[s];
    const std::string at = where + " series " + std::to_string(s) + " ('" + series.label + "')";
    if (series.x.empty() && series.y.empty()) throw std::invalid_argument(at + " is empty (no points)");
    if (series.x.size() != series.y.size())
      throw std::invalid_argument(at + ": x and y must have the same length, got " +
                                  std::to_string(series.x.size()) + " x values and " +
                                  std::to_string(series.y.size()) + " y values");
    for (size_t k = 0; k < series.x.size(); ++k) {
      const double x = series.x[k], y = series.y[k];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
      x_integer = x_integer && x == std::floor(x);
    }
  }
  if (!(x_min <= x_max)) x_min = 0, x_max = 1, y_min = 0, y_max = 1;  // nothing finite to show
  return {nice_ticks(x_min, x_max, 5, x_integer), nice_ticks(y_min, y_max, 5)};
}

}  // namespace plot_detail

/// Writes training curves as one PNG with the panels side by side (each panel_width x panel_height
/// pixels, so the picture is panels.size() * panel_width wide): axes with nice ticks and tick labels, grid
/// lines, a legend per panel and a distinct colour per series.
///
/// Throws std::invalid_argument for no panels, a panel without series, an empty series, x and y of
/// different lengths or a panel smaller than 160 x 120, and std::runtime_error naming the path if the file
/// cannot be written.
///
/// **Example**
/// \code
/// using iat_examples::Panel; using iat_examples::Series;
/// std::vector<double> epochs{1, 2, 3};
/// iat_examples::write_curves_png("curves.png", {
///     Panel{"loss", "epoch", "loss", {Series{"train", epochs, {2.1, 1.7, 1.5}}}},
///     Panel{"accuracy", "epoch", "accuracy", {Series{"train", epochs, {0.31, 0.45, 0.52}},
///                                             Series{"PGD-10", epochs, {0.22, 0.30, 0.34}}}}});
/// \endcode
inline void write_curves_png(const std::string& path, const std::vector<Panel>& panels, int panel_width = 480,
                             int panel_height = 360) {
  using namespace plot_detail;
  const std::string who = "iat_examples::write_curves_png('" + path + "')";
  if (panels.empty()) throw std::invalid_argument(who + ": no panels to draw");
  if (panel_width < 160 || panel_height < 120 || panel_width > 8192 || panel_height > 8192)
    throw std::invalid_argument(who + ": panel size must be between 160x120 and 8192x8192, got " +
                                std::to_string(panel_width) + "x" + std::to_string(panel_height));
  if (static_cast<int64_t>(panels.size()) * panel_width * panel_height > Canvas::kMaxPixels)
    throw std::invalid_argument(who + ": " + std::to_string(panels.size()) + " panels of " +
                                std::to_string(panel_width) + "x" + std::to_string(panel_height) +
                                " pixels exceed the limit of " + std::to_string(Canvas::kMaxPixels) + " pixels");
  std::vector<std::pair<Ticks, Ticks>> axes;
  for (size_t p = 0; p < panels.size(); ++p) axes.push_back(panel_ticks(panels[p], p, who));

  CurvesLayout layout{panel_width, panel_height, static_cast<int>(panels.size())};
  Canvas canvas(layout.width(), layout.height(), kWhite);
  const int ph = layout.plot_h(), pw = layout.plot_w(), py = layout.plot_y();

  for (size_t p = 0; p < panels.size(); ++p) {
    const Panel& panel = panels[p];
    const Ticks& xt = axes[p].first;
    const Ticks& yt = axes[p].second;
    const int ox = static_cast<int>(p) * panel_width;
    const int px = layout.plot_x(static_cast<int>(p));

    // Grid lines, then the series clipped to the plot area.
    for (double v : xt.values) canvas.fill_rect(map_x(v, xt, px, pw), py, 1, ph, kGridLine);
    for (double v : yt.values) canvas.fill_rect(px, map_y(v, yt, py, ph), pw, 1, kGridLine);
    canvas.set_clip(px, py, pw, ph);
    for (size_t s = 0; s < panel.series.size(); ++s) {
      const Series& series = panel.series[s];
      const Rgb colour = series_colour(s);
      const size_t n = series.x.size();
      const bool markers = n <= 40;
      for (size_t k = 0; k < n; ++k) {
        if (!std::isfinite(series.x[k]) || !std::isfinite(series.y[k])) continue;
        const int x0 = map_x(series.x[k], xt, px, pw), y0 = map_y(series.y[k], yt, py, ph);
        const bool next = k + 1 < n && std::isfinite(series.x[k + 1]) && std::isfinite(series.y[k + 1]);
        const bool prev = k > 0 && std::isfinite(series.x[k - 1]) && std::isfinite(series.y[k - 1]);
        if (next) canvas.line(x0, y0, map_x(series.x[k + 1], xt, px, pw), map_y(series.y[k + 1], yt, py, ph), colour, 2);
        if (markers || (!next && !prev)) canvas.fill_rect(x0 - 1, y0 - 1, 4, 4, colour);
      }
    }
    canvas.reset_clip();

    // Frame, ticks and tick labels.
    canvas.rect(px - 1, py - 1, pw + 2, ph + 2, kInk);
    for (double v : xt.values) {
      const int x = map_x(v, xt, px, pw);
      canvas.fill_rect(x, py + ph + 1, 1, 4, kInk);
      const std::string label = xt.label(v);
      canvas.text(x - text_width(label) / 2, py + ph + 8, label, kInk);
    }
    for (double v : yt.values) {
      const int y = map_y(v, yt, py, ph);
      canvas.fill_rect(px - 5, y, 4, 1, kInk);
      const std::string label = yt.label(v);
      canvas.text(px - 8 - text_width(label), y - text_height() / 2, label, kInk);
    }

    // Title, axis labels.
    const std::string title = fit_text(panel.title, panel_width - 8, 2);
    canvas.text(std::max(ox + 4, px + pw / 2 - text_width(title, 2) / 2), 10, title, kInk, 2);
    const std::string x_label = fit_text(panel.x_label, pw);
    canvas.text(px + pw / 2 - text_width(x_label) / 2, py + ph + 24, x_label, kInk);
    const std::string y_label = fit_text(panel.y_label, ph);
    canvas.text_up(ox + 10, py + ph / 2 + text_width(y_label) / 2, y_label, kInk);

    // Legend in the corner of the plot area that hides the fewest drawn pixels.
    std::vector<std::string> labels;
    bool any_label = false;
    for (const Series& series : panel.series) {
      labels.push_back(fit_text(series.label, pw / 2));
      any_label = any_label || !series.label.empty();
    }
    if (!any_label) continue;
    int label_w = 0;
    for (const auto& l : labels) label_w = std::max(label_w, text_width(l));
    constexpr int kLine = 12, kSwatch = 16, kPad = 6, kCorner = 6;
    const int box_w = kPad + kSwatch + 5 + label_w + kPad;
    const int box_h = kPad + static_cast<int>(labels.size()) * kLine - 5 + kPad;
    const int corners[4][2] = {{px + pw - kCorner - box_w, py + kCorner},
                               {px + kCorner, py + kCorner},
                               {px + pw - kCorner - box_w, py + ph - kCorner - box_h},
                               {px + kCorner, py + ph - kCorner - box_h}};
    int best = 0;
    long best_covered = std::numeric_limits<long>::max();
    for (int c = 0; c < 4; ++c) {
      long covered = 0;
      for (int y = corners[c][1]; y < corners[c][1] + box_h; ++y)
        for (int x = corners[c][0]; x < corners[c][0] + box_w; ++x)
          if (x >= px && x < px + pw && y >= py && y < py + ph) {
            const Rgb colour = canvas.pixel(x, y);
            covered += colour != kWhite && colour != kGridLine;
          }
      if (covered < best_covered) best = c, best_covered = covered;
    }
    const int bx = corners[best][0], by = corners[best][1];
    canvas.set_clip(px, py, pw, ph);
    canvas.fill_rect(bx, by, box_w, box_h, kWhite);
    canvas.rect(bx, by, box_w, box_h, kLegendEdge);
    for (size_t s = 0; s < labels.size(); ++s) {
      const int y = by + kPad + static_cast<int>(s) * kLine;
      canvas.fill_rect(bx + kPad, y + 2, kSwatch, 2, series_colour(s));
      canvas.text(bx + kPad + kSwatch + 5, y, labels[s], kInk);
    }
    canvas.reset_clip();
  }
  write_png(path, canvas, who);
}

namespace plot_detail {

/// Words of `text` joined into lines of at most `max_chars` characters (a longer word gets its own line).
inline std::vector<std::string> wrap_words(const std::string& text, size_t max_chars) {
  std::vector<std::string> lines;
  std::string line, word;
  auto flush_word = [&] {
    if (word.empty()) return;
    if (!line.empty() && line.size() + 1 + word.size() > max_chars) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    word.clear();
  };
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\t') flush_word();
    else word += c;
  }
  flush_word();
  if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace plot_detail

/// Geometry of an image grid (see image_grid_layout): the picture size and where each image lands.
///
/// With s the scale, t the text scale (1, or 2 when s >= 4), images H x W, `cols` the most images in a
/// row, title_w the widest line of the word-wrapped row titles (0 if there are none), caption_w the widest
/// caption and caption_h = kCaptionGap + 7 t if any row has captions (else 0):
///   column_width = max(W s, caption_w),   title_column = title_w > 0 ? title_w + kTitleGap : 0,
///   row_height   = max(H s + caption_h, title lines * kTitleLine t),
///   width  = 2 kMargin + title_column + cols column_width + (cols - 1) kColumnGap,
///   height = 2 kMargin + rows row_height + (rows - 1) kRowGap,
///   image (r, c) top-left = (kMargin + title_column + c (column_width + kColumnGap) + (column_width - W s) / 2,
///                            kMargin + r (row_height + kRowGap)).
///
/// **Example**
/// \code
/// auto layout = iat_examples::image_grid_layout(rows, 3);
/// std::cout << layout.width << "x" << layout.height << "\n";
/// \endcode
struct ImageGridLayout {
  static constexpr int kMargin = 12, kColumnGap = 10, kRowGap = 14, kTitleGap = 12, kCaptionGap = 4;
  static constexpr int kTitleLine = 10;           // line pitch of row titles, times the text scale
  static constexpr size_t kTitleWrapChars = 14;  // row titles wrap at spaces to lines of this many chars
  int width = 0, height = 0;
  int scale = 1, text_scale = 1;
  int image_width = 0, image_height = 0;  // one image after upscaling
  int column_width = 0, row_height = 0, title_column = 0, caption_height = 0, columns = 0;
  std::vector<std::vector<std::string>> title_lines;  // per row
  int image_x(int column) const {
    return kMargin + title_column + column * (column_width + kColumnGap) + (column_width - image_width) / 2;
  }
  int image_y(int row) const { return kMargin + row * (row_height + kRowGap); }
};

/// Validates `rows` and computes the grid's geometry (documented on ImageGridLayout). Throws
/// std::invalid_argument for no rows, images that are not a floating [N, C, H, W] tensor with N >= 1 and
/// C = 1 or 3, rows whose H x W differ, captions not matching N, or a scale outside [1, 32].
///
/// **Example**
/// \code
/// auto layout = iat_examples::image_grid_layout({{"natural", x, {}}}, 3);  // x: [8, 1, 28, 28]
/// // layout.image_width == 84
/// \endcode
inline ImageGridLayout image_grid_layout(const std::vector<ImageRow>& rows, int scale = 3,
                                         const std::string& who = "iat_examples::image_grid_layout") {
  if (rows.empty()) throw std::invalid_argument(who + ": no rows to draw");
  if (rows.size() > 1000)
    throw std::invalid_argument(who + ": at most 1000 rows, got " + std::to_string(rows.size()));
  if (scale < 1 || scale > 32)
    throw std::invalid_argument(who + ": scale must be in [1, 32], got " + std::to_string(scale));
  ImageGridLayout g;
  g.scale = scale;
  g.text_scale = scale >= 4 ? 2 : 1;
  int64_t h = -1, w = -1;
  int caption_w = 0, title_w = 0;
  size_t title_lines = 0;
  bool captions = false;
  for (size_t r = 0; r < rows.size(); ++r) {
    const ImageRow& row = rows[r];
    const std::string at = who + ": row " + std::to_string(r) + " ('" + row.title + "')";
    if (!row.images.defined()) throw std::invalid_argument(at + ": images are an undefined tensor");
    if (row.images.dim() != 4 || (row.images.size(1) != 1 && row.images.size(1) != 3)) {
      std::string shape;
      for (int64_t d : row.images.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      throw std::invalid_argument(at + ": images must be [N, C, H, W] with C = 1 or 3, got [" + shape + "]");
    }
    if (!row.images.is_floating_point())
      throw std::invalid_argument(at + ": images must be a floating-point tensor with values in [0, 1], got " +
                                  std::string(c10::toString(row.images.scalar_type())));
    const int64_t n = row.images.size(0);
    if (n < 1) throw std::invalid_argument(at + " has no images (N = 0)");
    if (n > 1000) throw std::invalid_argument(at + ": at most 1000 images per row, got " + std::to_string(n));
    if (h < 0) h = row.images.size(2), w = row.images.size(3);
    if (row.images.size(2) != h || row.images.size(3) != w || h < 1 || w < 1 || h * scale > 4096 ||
        w * scale > 4096)
      throw std::invalid_argument(at + ": every image must be " + std::to_string(h) + "x" + std::to_string(w) +
                                  " like row 0's (and at most 4096 pixels after scaling), got " +
                                  std::to_string(row.images.size(2)) + "x" + std::to_string(row.images.size(3)));
    if (!row.captions.empty() && static_cast<int64_t>(row.captions.size()) != n)
      throw std::invalid_argument(at + ": captions must be empty or one per image, got " +
                                  std::to_string(row.captions.size()) + " captions for " + std::to_string(n) +
                                  " images");
    for (const auto& c : row.captions) caption_w = std::max(caption_w, plot_detail::text_width(c, g.text_scale));
    captions = captions || !row.captions.empty();
    g.title_lines.push_back(plot_detail::wrap_words(row.title, ImageGridLayout::kTitleWrapChars));
    for (const auto& l : g.title_lines.back()) title_w = std::max(title_w, plot_detail::text_width(l, g.text_scale));
    title_lines = std::max(title_lines, g.title_lines.back().size());
    g.columns = std::max(g.columns, static_cast<int>(n));
  }
  g.image_width = static_cast<int>(w) * scale;
  g.image_height = static_cast<int>(h) * scale;
  g.caption_height = captions ? ImageGridLayout::kCaptionGap + plot_detail::text_height(g.text_scale) : 0;
  g.column_width = std::max(g.image_width, caption_w);
  g.title_column = title_w > 0 ? title_w + ImageGridLayout::kTitleGap : 0;
  g.row_height = std::max(g.image_height + g.caption_height,
                          static_cast<int>(title_lines) * ImageGridLayout::kTitleLine * g.text_scale);
  const int n_rows = static_cast<int>(rows.size());
  const int64_t width = 2 * ImageGridLayout::kMargin + g.title_column +
                        static_cast<int64_t>(g.columns) * g.column_width +
                        static_cast<int64_t>(g.columns - 1) * ImageGridLayout::kColumnGap;
  const int64_t height = 2 * ImageGridLayout::kMargin + static_cast<int64_t>(n_rows) * g.row_height +
                         static_cast<int64_t>(n_rows - 1) * ImageGridLayout::kRowGap;
  if (width * height > plot_detail::Canvas::kMaxPixels)
    throw std::invalid_argument(who + ": the grid would be " + std::to_string(width) + "x" + std::to_string(height) +
                                " pixels, more than the limit of " +
                                std::to_string(plot_detail::Canvas::kMaxPixels) +
                                "; use fewer images or a smaller scale");
  g.width = static_cast<int>(width);
  g.height = static_cast<int>(height);
  return g;
}

/// Writes a grid of images as a PNG, like Figure 1 of the paper's supplement: one row per ImageRow with
/// its title at the left, images upscaled `scale` times (nearest neighbour) and captions underneath.
/// Values are clamped to [0, 1] (NaN shows as 0); C = 1 is drawn in grey. Throws as image_grid_layout for
/// bad rows, and std::runtime_error naming the path if the file cannot be written.
///
/// **Example**
/// \code
/// auto delta = uip->delta();                       // [K, C, H, W], in [-eps, eps]
/// iat_examples::write_image_grid_png("figure1.png", {
///     {"natural", x, {"p_y=0.91", "p_y=0.64"}},
///     {"inverse adversarial", x_inv, {"p_y=0.99", "p_y=0.93"}},
///     {"universal inverse perturbation x10", iat_examples::visualize_perturbation(delta, 10), {}}});
/// \endcode
inline void write_image_grid_png(const std::string& path, const std::vector<ImageRow>& rows, int scale = 3) {
  using namespace plot_detail;
  const std::string who = "iat_examples::write_image_grid_png('" + path + "')";
  const ImageGridLayout g = image_grid_layout(rows, scale, who);
  Canvas canvas(g.width, g.height, kWhite);
  const int ts = g.text_scale;
  for (size_t r = 0; r < rows.size(); ++r) {
    const int row = static_cast<int>(r);
    const int y0 = g.image_y(row);
    // Row title, right-aligned against the images and centred on them.
    const auto& lines = g.title_lines[r];
    const int block = static_cast<int>(lines.size()) * ImageGridLayout::kTitleLine * ts - (ImageGridLayout::kTitleLine - 7) * ts;
    int ty = y0 + std::max(0, (g.image_height - block) / 2);
    for (const auto& l : lines) {
      canvas.text(ImageGridLayout::kMargin + g.title_column - ImageGridLayout::kTitleGap - text_width(l, ts), ty, l,
                  kInk, ts);
      ty += ImageGridLayout::kTitleLine * ts;
    }
    const torch::Tensor images = rows[r].images.detach().to(torch::kCPU, torch::kFloat).contiguous();
    const int64_t n = images.size(0), channels = images.size(1), h = images.size(2), w = images.size(3);
    const float* data = images.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int x0 = g.image_x(static_cast<int>(i));
      canvas.rect(x0 - 1, y0 - 1, g.image_width + 2, g.image_height + 2, kImageFrame);
      for (int64_t yy = 0; yy < h; ++yy)
        for (int64_t xx = 0; xx < w; ++xx) {
          uint8_t rgb[3];
          for (int64_t c = 0; c < 3; ++c) {
            float v = data[((i * channels + (channels == 1 ? 0 : c)) * h + yy) * w + xx];
            if (!(v >= 0.0f)) v = 0.0f;  // also NaN
            if (v > 1.0f) v = 1.0f;
            rgb[c] = static_cast<uint8_t>(std::lround(v * 255.0f));
          }
          canvas.fill_rect(x0 + static_cast<int>(xx) * scale, y0 + static_cast<int>(yy) * scale, scale, scale,
                           {rgb[0], rgb[1], rgb[2]});
        }
      if (!rows[r].captions.empty()) {
        const std::string& caption = rows[r].captions[static_cast<size_t>(i)];
        canvas.text(x0 + g.image_width / 2 - text_width(caption, ts) / 2,
                    y0 + g.image_height + ImageGridLayout::kCaptionGap, caption, kInk, ts);
      }
    }
  }
  write_png(path, canvas, who);
}

/// Maps a perturbation delta (e.g. in [-eps, eps]) to [0, 1] for display: 0.5 + amplification * delta,
/// clamped, so zero is mid-grey. Keeps delta's device; the result is float.
///
/// **Example**
/// \code
/// auto shown = iat_examples::visualize_perturbation(uip->delta(), 10.0);  // 8/255 -> 0.5 + 80/255
/// \endcode
inline torch::Tensor visualize_perturbation(const torch::Tensor& delta, double amplification = 10.0) {
  if (!delta.defined())
    throw std::invalid_argument("iat_examples::visualize_perturbation: delta is an undefined tensor");
  if (!delta.is_floating_point())
    throw std::invalid_argument("iat_examples::visualize_perturbation: delta must be floating-point, got " +
                                std::string(c10::toString(delta.scalar_type())));
  if (!std::isfinite(amplification) || amplification <= 0)
    throw std::invalid_argument("iat_examples::visualize_perturbation: amplification must be finite and > 0, got " +
                                std::to_string(amplification));
  return (delta.detach().to(torch::kFloat) * amplification + 0.5).clamp(0.0, 1.0);
}

}  // namespace iat_examples
