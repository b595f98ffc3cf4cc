// A small raster chart for a run's plots (train/plots.h): line series on a left axis, bars
// on an optional right axis, grid, ticks at 1-2-5 steps, legend and labels, written as PNG by
// stb_image_write with text from stb_easy_font (both Debian's libstb). No plotting library:
// the plots come with every build.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fgvc {
namespace train {

struct Rgb {
  uint8_t r, g, b;
};

class Chart {
 public:
  Chart(int width, int height);

  void set_labels(const std::string& x, const std::string& y, const std::string& right_y = "");
  // The left axis's range; by default it spans the lines' values.
  void set_y_range(double lo, double hi);
  void line(const std::vector<double>& x, const std::vector<double>& y, Rgb color, const std::string& legend,
            bool markers = false, bool dashed = false);
  // Bars at x = 0, 1, ... on the right axis (from 0), drawn under the lines.
  void bars(const std::vector<double>& heights, Rgb color, const std::string& legend);
  // Names under the ticks x = 0, 1, ..., written upwards (for up to about 40 categories).
  void set_categories(const std::vector<std::string>& names);

  // The rendered image, width x height x 3 bytes, row-major from the top.
  std::vector<uint8_t> render() const;
  // Writes render() as PNG; false with *error on failure.
  bool write_png(const std::string& path, std::string* error) const;

  int width() const { return width_; }
  int height() const { return height_; }

 private:
  struct Series {
    std::vector<double> x, y;
    Rgb color;
    std::string legend;
    bool markers, dashed;
  };
  int width_, height_;
  std::string x_label_, y_label_, right_label_;
  bool fixed_y_ = false;
  double y_lo_ = 0, y_hi_ = 1;
  std::vector<Series> lines_;
  std::vector<double> bars_;
  Rgb bar_color_{217, 217, 217};
  std::string bar_legend_;
  std::vector<std::string> categories_;
};

// Tick positions at a 1, 2 or 5 times a power of ten step covering [lo, hi] with about
// `count` ticks; the range is widened to whole steps (returned in *lo, *hi).
std::vector<double> nice_ticks(double* lo, double* hi, int count);

}  // namespace train
}  // namespace fgvc
