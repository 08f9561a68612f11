// Tests of the example programs' picture writer (examples/common/plot.hpp): the PNG files are read back
// with stb_image and their pixels checked against the documented layout.
#include <plot.hpp>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

#include "temp_dir.hpp"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <set>
#include <unistd.h>

namespace fs = std::filesystem;
using iat_examples::ImageRow;
using iat_examples::Panel;
using iat_examples::Series;
namespace pd = iat_examples::plot_detail;
using iat_test::TempDir;

namespace {


// A PNG read back as RGB.
struct Png {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  explicit Png(const std::string& path) {
    int channels = 0;
    unsigned char* data = stbi_load(path.c_str(), &width, &height, &channels, 3);
    REQUIRE(data != nullptr);
    rgb.assign(data, data + static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
    stbi_image_free(data);
  }
  pd::Rgb at(int x, int y) const {
    const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3;
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

struct Box {
  int x, y, w, h;
  bool contains(int px, int py) const { return px >= x && px < x + w && py >= y && py < y + h; }
};

// Pixels of colour c inside and outside the given boxes.
std::pair<long, long> count_colour(const Png& png, pd::Rgb c, const std::vector<Box>& boxes) {
  long inside = 0, outside = 0;
  for (int y = 0; y < png.height; ++y)
    for (int x = 0; x < png.width; ++x)
      if (png.at(x, y) == c) {
        bool in = false;
        for (const Box& b : boxes) in = in || b.contains(x, y);
        (in ? inside : outside) += 1;
      }
  return {inside, outside};
}

// Pixels darker than mid-grey (text, frame) inside a box.
long dark_pixels(const Png& png, const Box& b) {
  long n = 0;
  for (int y = b.y; y < b.y + b.h; ++y)
    for (int x = b.x; x < b.x + b.w; ++x) {
      const pd::Rgb c = png.at(x, y);
      n += c.r < 128 && c.g < 128 && c.b < 128;
    }
  return n;
}

uint8_t quantise(float v) {
  if (!(v >= 0.0f)) v = 0.0f;
  if (v > 1.0f) v = 1.0f;
  return static_cast<uint8_t>(std::lround(v * 255.0f));
}

// Images [n, c, h, w] with values k/255 (so quantisation is exact), random per IAT_TEST_SEED.
torch::Tensor exact_images(int64_t n, int64_t c, int64_t h, int64_t w) {
  return torch::randint(0, 256, {n, c, h, w}).to(torch::kFloat) / 255.0;
}

}  // namespace

TEST_CASE("nice ticks are 1, 2 or 5 times a power of ten and cover the data", "[plot]") {
  SECTION("accuracy-like data in [0.13, 0.87]: 0, 0.2, ..., 1") {
    const auto t = pd::nice_ticks(0.13, 0.87);
    CHECK(t.lo == Approx(0.0).margin(1e-12));
    CHECK(t.hi == Approx(1.0));
    CHECK(t.step == Approx(0.2));
    REQUIRE(t.values.size() == 6);
    std::vector<std::string> labels;
    for (double v : t.values) labels.push_back(t.label(v));
    CHECK(labels == std::vector<std::string>{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});
  }
  SECTION("loss-like data in [0.31, 2.27]: steps of 0.5 from 0 to 2.5") {
    const auto t = pd::nice_ticks(0.31, 2.27);
    CHECK(t.step == Approx(0.5));
    CHECK(t.lo == Approx(0.0).margin(1e-12));
    CHECK(t.hi == Approx(2.5));
    CHECK(t.label(t.values[3]) == "1.5");
  }
  SECTION("epochs 1..30 as integers: 0, 10, 20, 30; epochs 1..3: steps of 1, not 0.5") {
    const auto t = pd::nice_ticks(1, 30, 5, true);
    CHECK(t.step == Approx(10.0));
    CHECK(t.label(t.values.back()) == "30");
    const auto few = pd::nice_ticks(1, 3, 5, true);
    CHECK(few.step == Approx(1.0));
    CHECK(few.label(few.values[1]) == "2");
    CHECK(pd::nice_ticks(1, 3, 5, false).step == Approx(0.5));
  }
  SECTION("small values around zero: no '-0.000', enough decimals") {
    const auto t = pd::nice_ticks(-0.003, 0.004);
    CHECK(t.step == Approx(0.002));
    std::set<std::string> labels;
    for (double v : t.values) labels.insert(t.label(v));
    CHECK(labels.count("0.000") == 1);
    CHECK(labels.count("-0.000") == 0);
    CHECK(labels.count("-0.004") == 1);
    CHECK(labels.size() == t.values.size());  // all distinct
  }
  SECTION("tiny steps and huge values share one exponent per axis") {
    const auto t = pd::nice_ticks(0.0, 1.2e-4);
    CHECK(t.step == Approx(5e-5));
    std::vector<std::string> labels;
    for (double v : t.values) labels.push_back(t.label(v));
    CHECK(labels == std::vector<std::string>{"0", "0.5e-4", "1.0e-4", "1.5e-4"});
    const auto big = pd::nice_ticks(1.2e5, 2.1e6);
    CHECK(big.step == Approx(5e5));
    CHECK(big.label(big.values.back()) == "2.5e6");
  }
  SECTION("extreme data stays finite and bounded") {
    for (auto [a, b] : std::vector<std::pair<double, double>>{
             {-1e308, 1e308}, {1e-320, 2e-320}, {1.0, 1.0 + 1e-15}, {1e17, 1e17 + 16}, {-5e-324, 0.0}}) {
      const auto t = pd::nice_ticks(a, b);
      INFO("data [" << a << ", " << b << "] ticks [" << t.lo << ", " << t.hi << "] step " << t.step);
      CHECK(std::isfinite(t.lo));
      CHECK(std::isfinite(t.hi));
      CHECK(t.hi > t.lo);
      CHECK(t.values.size() >= 2);
      CHECK(t.values.size() <= 101);
      for (double v : t.values) CHECK_FALSE(t.label(v).empty());
    }
  }
  SECTION("a constant is widened around its value") {
    const auto t = pd::nice_ticks(0.5, 0.5);
    CHECK(t.lo < 0.5);
    CHECK(t.hi > 0.5);
    const auto z = pd::nice_ticks(0.0, 0.0);
    CHECK(z.lo <= -1.0);
    CHECK(z.hi >= 1.0);
  }
  SECTION("every tick set covers its data with at most 11 ticks") {
    std::mt19937 gen(static_cast<uint32_t>(torch::randint(0, 1 << 30, {1}).item<int64_t>()));
    std::uniform_real_distribution<double> u(-1e3, 1e3);
    for (int k = 0; k < 200; ++k) {
      double a = u(gen) * std::pow(10.0, static_cast<int>(u(gen)) % 5), b = a + std::abs(u(gen)) * 1e-2;
      const auto t = pd::nice_ticks(a, b);
      INFO("data [" << a << ", " << b << "] ticks [" << t.lo << ", " << t.hi << "] step " << t.step);
      CHECK(t.lo <= a);
      CHECK(t.hi >= b);
      CHECK(t.values.size() >= 2);
      CHECK(t.values.size() <= 11);
      const double mantissa = t.step / std::pow(10.0, std::floor(std::log10(t.step) + 1e-9));
      CHECK((std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 || std::abs(mantissa - 5) < 1e-6));
    }
  }
}

TEST_CASE("Canvas draws lines, rectangles and text where it says", "[plot]") {
  const pd::Rgb red{200, 0, 0};
  SECTION("text at scale 2: each font pixel is a 2x2 square") {
    pd::Canvas c(40, 24, pd::kWhite);
    c.text(3, 4, "Ay", red, 2);
    for (int k = 0; k < 2; ++k)
      for (int row = 0; row < 9; ++row)  // 7 rows and 2 of descent
        for (int col = 0; col < 5; ++col)
          for (int d = 0; d < 4; ++d) {
            const int x = 3 + k * 12 + col * 2 + d % 2, y = 4 + row * 2 + d / 2;
            CHECK((c.pixel(x, y) == red) == iat_examples::font5x7::ink("Ay"[k], col, row));
          }
    CHECK(pd::text_width("Ay", 2) == 22);
    CHECK(iat_examples::font5x7::ink('y', 1, 8));  // the descender is drawn below the baseline
    CHECK_FALSE(iat_examples::font5x7::ink('A', 0, 8));
    CHECK(iat_examples::font5x7::ink('\x01', 1, 0) == iat_examples::font5x7::ink('?', 1, 0));
  }
  SECTION("fit_text cuts long text to the width, with an ellipsis") {
    CHECK(pd::fit_text("accuracy", 47) == "accuracy");  // exactly 8 * 6 - 1 pixels
    CHECK(pd::fit_text("accuracy", 46) == "accu...");
    CHECK(pd::fit_text("accuracy", 46, 2) == "a...");  // (4 * 6 - 1) * 2 = 46
    CHECK(pd::fit_text("accuracy", 45, 2) == "");      // not even "a..." fits
    const std::string huge(1000000, 'x');
    for (int w : {23, 24, 100, 479}) {
      const std::string cut = pd::fit_text(huge, w);
      CHECK(pd::text_width(cut) <= w);
      CHECK(pd::text_width(cut + "x") > w);  // one more character would not fit
    }
  }
  SECTION("text_up reads bottom to top") {
    pd::Canvas c(20, 20, pd::kWhite);
    c.text_up(5, 15, "L", red);
    // L's left stroke (column 0 of the glyph) becomes the bottom row, its foot (row 6) the right column.
    for (int x = 5; x < 12; ++x) CHECK(c.pixel(x, 15) == red);
    for (int y = 11; y <= 15; ++y) CHECK(c.pixel(11, y) == red);
    CHECK(c.pixel(5, 14) == pd::kWhite);
    CHECK(c.pixel(5, 16) == pd::kWhite);
  }
  SECTION("lines include both ends, clipping drops pixels outside") {
    pd::Canvas c(20, 20, pd::kWhite);
    c.line(2, 3, 12, 8, red);
    CHECK(c.pixel(2, 3) == red);
    CHECK(c.pixel(12, 8) == red);
    long n = 0;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 20; ++x) n += c.pixel(x, y) == red;
    CHECK(n == 11);  // one pixel per column of an x-major line
    pd::Canvas d(20, 20, pd::kWhite);
    d.set_clip(5, 0, 5, 20);
    d.line(0, 10, 19, 10, red, 2);
    for (int x = 0; x < 20; ++x) CHECK((d.pixel(x, 10) == red) == (x >= 5 && x < 10));
    d.reset_clip();
    d.set_pixel(-1, 3, red);  // silently dropped
    d.set_pixel(25, 3, red);
  }
}

TEST_CASE("write_curves_png: layout, colours inside their panels, lines at the right height", "[plot]") {
  TempDir dir;
  const int pw = 400, ph = 300;  // not the defaults, so the arguments must be honoured
  std::vector<double> x, rising, flat, late_x, late_y;
  for (int i = 0; i <= 10; ++i) {
    x.push_back(i);
    rising.push_back(i / 10.0);
    flat.push_back(0.5);
  }
  for (int i = 0; i < 25; ++i) {
    late_x.push_back(100 + i);
    late_y.push_back(2.0 + std::sin(i * 0.3));
  }
  const std::vector<Panel> panels{
      Panel{"accuracy", "epoch", "accuracy", {Series{"rising", x, rising}, Series{"flat", x, flat}}},
      Panel{"loss", "step", "loss", {Series{"wavy", late_x, late_y}}}};
  const std::string path = dir.file("curves.png");
  iat_examples::write_curves_png(path, panels, pw, ph);
  const Png png(path);

  REQUIRE(png.width == 2 * pw);
  REQUIRE(png.height == ph);

  // The plot areas, from the documented layout.
  using L = pd::CurvesLayout;
  const Box area0{L::kLeft, L::kTop, pw - L::kLeft - L::kRight, ph - L::kTop - L::kBottom};
  const Box area1{pw + L::kLeft, L::kTop, area0.w, area0.h};
  // Axis fraction f (0 at the lower limit, 1 at the upper) to a pixel of area 0: the axis spans the area
  // less kInset pixels at each end.
  const int inset = pd::kInset;
  auto column = [&](double f) { return area0.x + inset + static_cast<int>(std::lround(f * (area0.w - 1 - 2 * inset))); };
  auto row_of = [&](double f) { return area0.y + inset + static_cast<int>(std::lround((1 - f) * (area0.h - 1 - 2 * inset))); };

  SECTION("each series colour appears in its panel's plot area and nowhere else") {
    const auto [flat_in, flat_out] = count_colour(png, pd::series_colour(1), {area0});
    CHECK(flat_in > area0.w);  // a line across the whole plot area, plus its legend swatch
    CHECK(flat_out == 0);
    const auto [first_in0, out0] = count_colour(png, pd::series_colour(0), {area0});
    const auto [first_in1, out1] = count_colour(png, pd::series_colour(0), {area1});
    CHECK(first_in0 > 0);
    CHECK(first_in1 > 0);
    const auto [both_in, both_out] = count_colour(png, pd::series_colour(0), {area0, area1});
    CHECK(both_in == first_in0 + first_in1);
    CHECK(both_out == 0);
    CHECK(count_colour(png, pd::series_colour(2), {}).second == 0);  // no third series anywhere
  }
  SECTION("lines sit where the axes [0, 10] x [0, 1] put them") {
    // x ticks 0, 2, ..., 10 and y ticks 0, 0.2, ..., 1 (nice ticks of the data), mapped to pixel centres.
    const int col = column(2.5 / 10.0);
    const int flat_row = row_of(0.5);
    const int rising_row = row_of(0.25);
    std::set<int> flat_rows, rising_rows;
    for (int y = area0.y; y < area0.y + area0.h; ++y) {
      if (png.at(col, y) == pd::series_colour(1)) flat_rows.insert(y);
      if (png.at(col, y) == pd::series_colour(0)) rising_rows.insert(y);
    }
    CHECK(flat_rows == std::set<int>{flat_row, flat_row + 1});  // a 2-pixel line
    REQUIRE_FALSE(rising_rows.empty());
    CHECK(*rising_rows.begin() >= rising_row - 1);
    CHECK(*rising_rows.rbegin() <= rising_row + 2);
    // The frame is one pixel outside the plot area, in ink.
    CHECK(png.at(area0.x - 1, flat_row) == pd::kInk);
    CHECK(png.at(area0.x + area0.w, flat_row) == pd::kInk);
    CHECK(png.at(col, area0.y - 1) == pd::kInk);
  }
  SECTION("tick labels left of each y tick and below each x tick, titles above the areas") {
    for (int k = 0; k <= 5; ++k) {
      const int row = row_of(k * 0.2);
      INFO("y tick " << k);
      CHECK(dark_pixels(png, Box{area0.x - 8 - 17, row - 3, 17, 7}) > 5);  // "0.2" is 17 pixels wide
      const int x_col = column(k * 0.2);
      CHECK(dark_pixels(png, Box{x_col - 6, area0.y + area0.h + 8, 12, 7}) > 5);
    }
    CHECK(dark_pixels(png, Box{0, 0, pw, L::kTop - 4}) > 40);   // "accuracy"
    CHECK(dark_pixels(png, Box{pw, 0, pw, L::kTop - 4}) > 30);  // "loss"
    CHECK(dark_pixels(png, Box{0, 0, 20, ph}) > 20);            // y label written upwards
  }
}

TEST_CASE("write_curves_png: robust to NaN, single points and many series", "[plot]") {
  TempDir dir;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<Series> many;
  for (int s = 0; s < 12; ++s) many.push_back(Series{std::string(1, 's').append(std::to_string(s)), {0, 1}, {0.0 + s, 1.0 + s}});
  const std::vector<Panel> panels{Panel{"nan", "x", "y", {Series{"gap", {1, 2, 3, 4}, {0.5, nan, 0.7, 0.9}}}},
                                  Panel{"all nan", "", "", {Series{"", {1}, {nan}}}},
                                  Panel{"one point", "x", "y", {Series{"p", {3}, {7}}}},
                                  Panel{"many", "x", "y", many}};
  const std::string path = dir.file("robust.png");
  iat_examples::write_curves_png(path, panels);
  // Values at the ends of double's range neither hang nor crash.
  iat_examples::write_curves_png(dir.file("extreme.png"),
                                 {Panel{"extreme", "x", "y", {Series{"huge", {-1e308, 0, 1e308}, {1e308, -1e308, 0}}}},
                                  Panel{"denormal", "x", "y", {Series{"tiny", {0, 1}, {1e-320, 2e-320}}}}});
  CHECK(Png(dir.file("extreme.png")).width == 2 * 480);
  const Png png(path);
  CHECK(png.width == 4 * 480);
  CHECK(png.height == 360);
  using L = pd::CurvesLayout;
  const Box one{2 * 480 + L::kLeft, L::kTop, 480 - L::kLeft - L::kRight, 360 - L::kTop - L::kBottom};
  CHECK(count_colour(png, pd::series_colour(0), {one}).first >= 16);  // a 4x4 marker (and a swatch)
}

TEST_CASE("write_image_grid_png: layout formula, pixel-exact upscaled images, captions", "[plot]") {
  TempDir dir;
  const int scale = 2;
  // Non-square images (H = 8, W = 6) so that a transposition would show; row 1 has fewer images.
  const torch::Tensor gray = exact_images(3, 1, 8, 6);
  const torch::Tensor colour = exact_images(2, 3, 8, 6);
  const std::vector<ImageRow> rows{{"a", gray, {"p=1", "p=2", "p=3"}}, {"bb", colour, {}}};
  const std::string path = dir.file("grid.png");
  iat_examples::write_image_grid_png(path, rows, scale);
  const Png png(path);

  // The documented formula, written out: text scale 1 (scale < 4); caption "p=1" is 3*6-1 = 17 pixels
  // wide, wider than an image (6*2 = 12); "bb" is 11 pixels wide; one caption line is 4 + 7 high.
  using G = iat_examples::ImageGridLayout;
  const int column_width = 17, title_column = 11 + G::kTitleGap, row_height = 8 * scale + G::kCaptionGap + 7;
  const int width = 2 * G::kMargin + title_column + 3 * column_width + 2 * G::kColumnGap;
  const int height = 2 * G::kMargin + 2 * row_height + G::kRowGap;
  const auto layout = iat_examples::image_grid_layout(rows, scale);
  CHECK(layout.width == width);
  CHECK(layout.height == height);
  REQUIRE(png.width == width);
  REQUIRE(png.height == height);
  for (int c = 0; c < 3; ++c)
    CHECK(layout.image_x(c) == G::kMargin + title_column + c * (column_width + G::kColumnGap) + (17 - 12) / 2);
  CHECK(layout.image_y(1) == G::kMargin + row_height + G::kRowGap);

  SECTION("every image appears pixel-exactly at its cell, framed") {
    for (int r = 0; r < 2; ++r) {
      const torch::Tensor& images = rows[static_cast<size_t>(r)].images;
      for (int64_t i = 0; i < images.size(0); ++i) {
        const int x0 = layout.image_x(static_cast<int>(i)), y0 = layout.image_y(r);
        long mismatches = 0;
        for (int y = 0; y < 8 * scale; ++y)
          for (int x = 0; x < 6 * scale; ++x) {
            const pd::Rgb got = png.at(x0 + x, y0 + y);
            const int64_t c_g = images.size(1) == 3 ? 1 : 0, c_b = images.size(1) == 3 ? 2 : 0;
            const pd::Rgb want{quantise(images[i][0][y / scale][x / scale].item<float>()),
                               quantise(images[i][c_g][y / scale][x / scale].item<float>()),
                               quantise(images[i][c_b][y / scale][x / scale].item<float>())};
            mismatches += got != want;
          }
        INFO("row " << r << " image " << i);
        CHECK(mismatches == 0);
        CHECK(png.at(x0 - 1, y0 + 3) == pd::kImageFrame);
        CHECK(png.at(x0 + 6 * scale, y0 + 3) == pd::kImageFrame);
        CHECK(png.at(x0 + 3, y0 + 8 * scale) == pd::kImageFrame);
      }
    }
  }
  SECTION("captions under row 0's images, none under row 1's, the missing cell blank, titles at the left") {
    for (int i = 0; i < 3; ++i)
      CHECK(dark_pixels(png, Box{layout.image_x(i) - 3, layout.image_y(0) + 16 + G::kCaptionGap, 18, 7}) > 10);
    CHECK(dark_pixels(png, Box{layout.image_x(0) - 3, layout.image_y(1) + 17, 18, 10}) == 0);
    const Box empty_cell{layout.image_x(2) - 1, layout.image_y(1) - 1, 14, row_height};
    CHECK(count_colour(png, pd::kWhite, {empty_cell}).first == empty_cell.w * empty_cell.h);
    CHECK(dark_pixels(png, Box{G::kMargin, layout.image_y(0), 11, 16}) > 5);  // "a"
    CHECK(dark_pixels(png, Box{G::kMargin, layout.image_y(1), 11, 16}) > 5);  // "bb"
  }
}

TEST_CASE("write_image_grid_png: clamping, long titles, larger scales", "[plot]") {
  TempDir dir;
  SECTION("values outside [0, 1] and NaN are clamped") {
    auto img = torch::tensor({-0.5f, 1.7f, std::numeric_limits<float>::quiet_NaN(), 0.2f}).reshape({1, 1, 2, 2});
    const std::string path = dir.file("clamp.png");
    iat_examples::write_image_grid_png(path, {{"", img, {}}}, 1);
    const Png png(path);
    const auto g = iat_examples::image_grid_layout({{"", img, {}}}, 1);
    CHECK(g.title_column == 0);  // no title, no title column
    CHECK(png.width == 2 * iat_examples::ImageGridLayout::kMargin + 2);
    const int x0 = g.image_x(0), y0 = g.image_y(0);
    CHECK(png.at(x0, y0) == pd::Rgb{0, 0, 0});
    CHECK(png.at(x0 + 1, y0) == pd::Rgb{255, 255, 255});
    CHECK(png.at(x0, y0 + 1) == pd::Rgb{0, 0, 0});
    CHECK(png.at(x0 + 1, y0 + 1) == pd::Rgb{51, 51, 51});
  }
  SECTION("the Figure 1 rows: 28x28 at scale 3 and 32x32 RGB at scale 4 (text scale 2)") {
    const torch::Tensor x = exact_images(4, 1, 28, 28);
    const torch::Tensor delta = (torch::rand({4, 1, 28, 28}) * 2 - 1) * (8.0 / 255);
    const std::vector<ImageRow> rows{{"natural", x, {"p_y=0.83", "p_y=0.12", "p_y=0.99", "p_y=0.50"}},
                                     {"inverse adversarial", (x + delta).clamp(0, 1), {"a", "b", "c", "d"}},
                                     {"universal inverse perturbation x10",
                                      iat_examples::visualize_perturbation(delta, 10.0),
                                      {}}};
    const auto g = iat_examples::image_grid_layout(rows, 3);
    CHECK(g.title_lines[2] == std::vector<std::string>{"universal", "inverse", "perturbation", "x10"});
    CHECK(g.title_column == pd::text_width("perturbation") + iat_examples::ImageGridLayout::kTitleGap);
    const std::string path = dir.file("figure1.png");
    iat_examples::write_image_grid_png(path, rows, 3);
    const Png png(path);
    CHECK(png.width == g.width);
    CHECK(png.height == g.height);
    CHECK(png.at(g.image_x(3) + 3 * 27, g.image_y(0)) ==
          pd::Rgb{quantise(x[3][0][0][27].item<float>()), quantise(x[3][0][0][27].item<float>()),
                  quantise(x[3][0][0][27].item<float>())});

    const auto big = iat_examples::image_grid_layout({{"natural", exact_images(2, 3, 32, 32), {"p_y=0.9", "x"}}}, 4);
    CHECK(big.text_scale == 2);
    CHECK(big.image_width == 128);
    CHECK(big.caption_height == iat_examples::ImageGridLayout::kCaptionGap + 14);
  }
}

TEST_CASE("visualize_perturbation maps -eps, 0, +eps to 0.5 -/+ amplification * eps, clamped", "[plot]") {
  const double eps = 8.0 / 255;
  const auto delta = torch::tensor({-eps, 0.0, eps, 0.2, -0.2}, torch::kDouble);
  const auto shown = iat_examples::visualize_perturbation(delta, 10.0);
  CHECK(shown.scalar_type() == torch::kFloat);
  CHECK(shown[0].item<double>() == Approx(0.5 - 80.0 / 255).epsilon(1e-6));
  CHECK(shown[1].item<double>() == Approx(0.5));
  CHECK(shown[2].item<double>() == Approx(0.5 + 80.0 / 255).epsilon(1e-6));
  CHECK(shown[3].item<double>() == 1.0);  // 0.5 + 2, clamped
  CHECK(shown[4].item<double>() == 0.0);
  const auto soft = iat_examples::visualize_perturbation(delta, 3.0);
  CHECK(soft[2].item<double>() == Approx(0.5 + 3 * eps).epsilon(1e-6));
  CHECK(soft[3].item<double>() == 1.0);  // 0.5 + 0.6 clamps to 1
  CHECK(delta[1].item<double>() == 0.0);  // input untouched

  CHECK_THROWS_WITH(iat_examples::visualize_perturbation(delta, 0.0), Catch::Contains("amplification"));
  CHECK_THROWS_WITH(iat_examples::visualize_perturbation(delta, std::nan("")), Catch::Contains("amplification"));
  CHECK_THROWS_WITH(iat_examples::visualize_perturbation(torch::ones({2}, torch::kLong)),
                    Catch::Contains("floating-point"));
  CHECK_THROWS_WITH(iat_examples::visualize_perturbation(torch::Tensor()), Catch::Contains("undefined"));
}

TEST_CASE("plot errors name the path, the panel, the series or the row", "[plot]") {
  TempDir dir;
  const std::vector<double> three{1, 2, 3};
  const Panel ok{"loss", "epoch", "loss", {Series{"train", three, three}}};
  const std::vector<ImageRow> grid{{"natural", torch::rand({2, 1, 4, 4}), {}}};

  SECTION("a path in a missing directory, or a directory, is a runtime_error naming the path") {
    const std::string missing = dir.file("no_such_dir/curves.png");
    CHECK_THROWS_AS(iat_examples::write_curves_png(missing, {ok}), std::runtime_error);
    CHECK_THROWS_WITH(iat_examples::write_curves_png(missing, {ok}), Catch::Contains(missing));
    const std::string missing_grid = dir.file("no_such_dir/grid.png");
    CHECK_THROWS_AS(iat_examples::write_image_grid_png(missing_grid, grid), std::runtime_error);
    CHECK_THROWS_WITH(iat_examples::write_image_grid_png(missing_grid, grid), Catch::Contains(missing_grid));
    CHECK_THROWS_WITH(iat_examples::write_curves_png(dir.path.string(), {ok}),
                      Catch::Contains("cannot open '" + dir.path.string() + "'"));
    CHECK_FALSE(fs::exists(dir.path / "no_such_dir"));
  }
  SECTION("curves: empty series, mismatched x/y, no series, no panels, tiny panels") {
    const std::string path = dir.file("c.png");
    const Panel empty{"acc", "epoch", "acc", {Series{"train", three, three}, Series{"test", {}, {}}}};
    CHECK_THROWS_AS(iat_examples::write_curves_png(path, {ok, empty}), std::invalid_argument);
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, {ok, empty}),
                      Catch::Contains("panel 1 ('acc') series 1 ('test') is empty"));
    const Panel mismatched{"acc", "epoch", "acc", {Series{"test", three, {0.1, 0.2}}}};
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, {mismatched}),
                      Catch::Contains("x and y must have the same length, got 3 x values and 2 y values"));
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, {Panel{"acc", "", "", {}}}),
                      Catch::Contains("panel 0 ('acc') has no series"));
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, {}), Catch::Contains("no panels"));
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, {ok}, 100, 360), Catch::Contains("got 100x360"));
    CHECK_THROWS_WITH(iat_examples::write_curves_png(path, std::vector<Panel>(40, ok), 8000, 8000),
                      Catch::Contains("exceed the limit"));
    CHECK_FALSE(fs::exists(path));  // nothing half-written
  }
  SECTION("grid: shapes, dtypes, captions, scale") {
    const std::string path = dir.file("g.png");
    using iat_examples::write_image_grid_png;
    CHECK_THROWS_WITH(write_image_grid_png(path, {}), Catch::Contains("no rows"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"natural", torch::rand({2, 4, 4}), {}}}),
                      Catch::Contains("row 0 ('natural'): images must be [N, C, H, W] with C = 1 or 3, got [2, 4, 4]"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"x", torch::rand({2, 2, 4, 4}), {}}}),
                      Catch::Contains("got [2, 2, 4, 4]"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"x", torch::ones({2, 1, 4, 4}, torch::kByte), {}}}),
                      Catch::Contains("floating-point"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"x", torch::rand({0, 1, 4, 4}), {}}}),
                      Catch::Contains("has no images"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {grid[0], {"inverse", torch::rand({2, 1, 5, 4}), {}}}),
                      Catch::Contains("row 1 ('inverse'): every image must be 4x4 like row 0's"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"natural", torch::rand({2, 1, 4, 4}), {"only one"}}}),
                      Catch::Contains("got 1 captions for 2 images"));
    CHECK_THROWS_WITH(write_image_grid_png(path, grid, 0), Catch::Contains("scale must be in [1, 32], got 0"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"x", torch::zeros({1000, 1, 128, 128}), {}}}, 32),
                      Catch::Contains("more than the limit"));
    CHECK_THROWS_WITH(write_image_grid_png(path, {{"x", torch::Tensor(), {}}}), Catch::Contains("undefined"));
    CHECK_FALSE(fs::exists(path));
  }
}
