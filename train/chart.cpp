#include "train/chart.h"

#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "tensor/atomic_file.h"
#include "tensor/error.h"

namespace fgvc {
namespace train {

namespace {

constexpr Rgb kBlack{0, 0, 0}, kGrid{230, 230, 230}, kWhite{255, 255, 255}, kFrame{150, 150, 150};
constexpr int kText = 2;  // stb_easy_font's units (a capital is 7 tall) to pixels

struct Canvas {
  int w, h;
  std::vector<uint8_t> rgb;
  Canvas(int width, int height, Rgb fill) : w(width), h(height), rgb(static_cast<size_t>(width) * height * 3) {
    for (size_t k = 0; k < rgb.size(); k += 3) rgb[k] = fill.r, rgb[k + 1] = fill.g, rgb[k + 2] = fill.b;
  }
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  void fill(int x0, int y0, int x1, int y1, Rgb c) {  // [x0, x1) x [y0, y1)
    for (int y = std::max(y0, 0); y < std::min(y1, h); ++y)
      for (int x = std::max(x0, 0); x < std::min(x1, w); ++x) set(x, y, c);
  }
  // A segment `thick` pixels wide; dashed: 8 pixels drawn, 5 left out, along its length.
  void segment(double x0, double y0, double x1, double y1, Rgb c, int thick, bool dashed, double* travelled) {
    const double len = std::hypot(x1 - x0, y1 - y0);
    const int steps = std::max(1, static_cast<int>(std::ceil(len * 2)));
    for (int s = 0; s <= steps; ++s) {
      const double t = double(s) / steps, along = *travelled + t * len;
      if (dashed && std::fmod(along, 13.0) >= 8.0) continue;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0))), y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      fill(x - thick / 2, y - thick / 2, x - thick / 2 + thick, y - thick / 2 + thick, c);
    }
    *travelled += len;
  }
  void blit(const Canvas& from, int x0, int y0, bool upwards, Rgb background) {  // upwards: turned 90 degrees left
    for (int y = 0; y < from.h; ++y)
      for (int x = 0; x < from.w; ++x) {
        const uint8_t* p = &from.rgb[(static_cast<size_t>(y) * from.w + x) * 3];
        const Rgb c{p[0], p[1], p[2]};
        if (c.r == background.r && c.g == background.g && c.b == background.b) continue;
        if (upwards) set(x0 + y, y0 + from.w - 1 - x, c);
        else set(x0 + x, y0 + y, c);
      }
  }
};

// stb_easy_font has glyphs for the printable ASCII characters only (it indexes its table by
// the byte): anything else is drawn as '?'.
std::string printable(const std::string& s) {
  std::string out = s;
  for (char& ch : out)
    if (static_cast<unsigned char>(ch) < 32 || static_cast<unsigned char>(ch) > 126) ch = '?';
  return out;
}

int text_width(const std::string& s, int scale = kText) {
  std::string copy = printable(s);
  return stb_easy_font_width(copy.data()) * scale;
}
int text_height(int scale = kText) { return 9 * scale; }

// Text with its top-left corner at (x, y): stb_easy_font's axis-aligned quads, scaled.
void draw_text(Canvas& c, const std::string& s, int x, int y, Rgb color, int scale = kText) {
  static thread_local std::vector<char> buffer(1 << 16);  // 1,024 quads: about 240 characters
  std::string copy = printable(s);
  const int quads = stb_easy_font_print(0, 0, copy.data(), nullptr, buffer.data(), static_cast<int>(buffer.size()));
  for (int q = 0; q < quads; ++q) {
    float lo_x = 1e9f, lo_y = 1e9f, hi_x = -1e9f, hi_y = -1e9f;
    for (int v = 0; v < 4; ++v) {
      const float* p = reinterpret_cast<const float*>(buffer.data() + (q * 4 + v) * 16);
      lo_x = std::min(lo_x, p[0]), hi_x = std::max(hi_x, p[0]);
      lo_y = std::min(lo_y, p[1]), hi_y = std::max(hi_y, p[1]);
    }
    c.fill(x + static_cast<int>(lo_x * scale), y + static_cast<int>(lo_y * scale), x + static_cast<int>(hi_x * scale),
           y + static_cast<int>(hi_y * scale), color);
  }
}

void draw_text_upwards(Canvas& c, const std::string& s, int x, int y_bottom, Rgb color, int scale = kText) {
  Canvas t(std::max(1, text_width(s, scale)), text_height(scale), kWhite);
  draw_text(t, s, 0, 0, color, scale);
  c.blit(t, x, y_bottom - t.w, true, kWhite);
}

std::string tick_text(double v, double step) {
  char buf[64];
  if (std::fabs(v) >= 1e7 || (step < 1e-6 && v != 0)) {  // compact where fixed digits would run long
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
  }
  const int decimals = step >= 1 ? 0 : std::min(8, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  std::snprintf(buf, sizeof buf, "%.*f", decimals, std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return buf;
}

}  // namespace

std::vector<double> nice_ticks(double* lo, double* hi, int count) {
  if (!std::isfinite(*lo) || !std::isfinite(*hi)) *lo = 0, *hi = 1;  // nothing finite to show
  const double scale = std::max({std::fabs(*lo), std::fabs(*hi), 1e-300});
  if (!(*hi - *lo > 1e-9 * scale)) {  // one value, or values a few ulps apart: a range around them
    const double mid = 0.5 * (*lo + *hi), half = std::max(std::fabs(mid) * 0.1, 0.5);
    *lo = mid - half, *hi = mid + half;
  }
  const double raw = (*hi - *lo) / std::max(count, 1), power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  *lo = std::floor(*lo / step + 1e-9) * step;
  *hi = std::ceil(*hi / step - 1e-9) * step;
  // By index, not by adding the step: an addition too small to change the value never ends.
  const long long n = std::min<long long>(std::llround((*hi - *lo) / step), 4 * std::max(count, 1) + 4);
  std::vector<double> ticks;
  for (long long k = 0; k <= n; ++k) ticks.push_back(*lo + double(k) * step);
  return ticks;
}

Chart::Chart(int width, int height) : width_(width), height_(height) {}

void Chart::set_labels(const std::string& x, const std::string& y, const std::string& right_y) {
  x_label_ = x, y_label_ = y, right_label_ = right_y;
}
void Chart::set_y_range(double lo, double hi) { fixed_y_ = true, y_lo_ = lo, y_hi_ = hi; }
void Chart::line(const std::vector<double>& x, const std::vector<double>& y, Rgb color, const std::string& legend,
                 bool markers, bool dashed) {
  lines_.push_back({x, y, color, legend, markers, dashed});
}
void Chart::bars(const std::vector<double>& heights, Rgb color, const std::string& legend) {
  bars_ = heights, bar_color_ = color, bar_legend_ = legend;
}
void Chart::set_categories(const std::vector<std::string>& names) { categories_ = names; }

std::vector<uint8_t> Chart::render() const {
  Canvas c(width_, height_, kWhite);
  constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
  // Ranges: x over the lines (or the categories), left y over the lines, right y over the bars.
  double x_lo = kNan, x_hi = kNan, y_lo = kNan, y_hi = kNan;
  for (const Series& s : lines_)
    for (size_t k = 0; k < s.x.size() && k < s.y.size(); ++k) {
      if (!std::isfinite(s.x[k]) || !std::isfinite(s.y[k])) continue;
      x_lo = std::isnan(x_lo) ? s.x[k] : std::min(x_lo, s.x[k]), x_hi = std::isnan(x_hi) ? s.x[k] : std::max(x_hi, s.x[k]);
      y_lo = std::isnan(y_lo) ? s.y[k] : std::min(y_lo, s.y[k]), y_hi = std::isnan(y_hi) ? s.y[k] : std::max(y_hi, s.y[k]);
    }
  const size_t n_cat = std::max(categories_.size(), bars_.size());
  std::vector<double> x_ticks;
  if (n_cat > 0) {
    x_lo = -0.5, x_hi = double(n_cat) - 0.5;
    if (!categories_.empty() && n_cat <= 40)
      for (size_t k = 0; k < n_cat; ++k) x_ticks.push_back(double(k));
  } else {
    x_ticks = nice_ticks(&x_lo, &x_hi, 6);
  }
  if (fixed_y_) y_lo = y_lo_, y_hi = y_hi_;
  const std::vector<double> y_ticks = nice_ticks(&y_lo, &y_hi, 5);
  double r_lo = 0, r_hi = 0;
  for (double b : bars_)
    if (std::isfinite(b)) r_hi = std::max(r_hi, b);
  if (r_hi <= 0) r_hi = 1;  // all bars 0: the axis still starts at 0
  const std::vector<double> r_ticks = bars_.empty() ? std::vector<double>{} : nice_ticks(&r_lo, &r_hi, 5);
  const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1, r_step = r_ticks.size() > 1 ? r_ticks[1] - r_ticks[0] : 1;
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1;

  // Margins from what goes there.
  int y_tick_w = 0, r_tick_w = 0, cat_h = 0;
  for (double t : y_ticks) y_tick_w = std::max(y_tick_w, text_width(tick_text(t, y_step)));
  for (double t : r_ticks) r_tick_w = std::max(r_tick_w, text_width(tick_text(t, r_step)));
  // Category names upwards under the axis, in at most a third of the height: smaller text, then
  // names cut short (with "..") where they would not fit.
  const int cat_room = height_ / 3;
  int cat_scale = n_cat > 20 ? 1 : kText;
  std::vector<std::string> cats = categories_;
  if (!x_ticks.empty() && !cats.empty()) {
    for (const std::string& s : cats)
      if (text_width(s, cat_scale) > cat_room) cat_scale = 1;
    for (std::string& s : cats) {
      while (text_width(s, cat_scale) > cat_room && s.size() > 3) s = s.substr(0, s.size() - 3) + "..";
      cat_h = std::max(cat_h, text_width(s, cat_scale));
    }
  }
  const int th = text_height();
  const int left = 12 + th + 8 + y_tick_w + 6, top = 16;
  const int right = bars_.empty() ? 20 : 6 + r_tick_w + 8 + th + 12;
  const int bottom = 8 + (categories_.empty() ? th : cat_h) + 8 + th + 10;
  const int px0 = left, px1 = width_ - right, py0 = top, py1 = height_ - bottom;
  if (px1 - px0 < 20 || py1 - py0 < 20) return c.rgb;  // too small to draw into: blank
  auto X = [&](double v) { return px0 + (v - x_lo) / (x_hi - x_lo) * (px1 - px0); };
  auto Y = [&](double v) { return py1 - (v - y_lo) / (y_hi - y_lo) * (py1 - py0); };
  auto R = [&](double v) { return py1 - (v - r_lo) / (r_hi - r_lo) * (py1 - py0); };

  // Grid, bars, lines, frame, ticks, labels, legend.
  for (double t : y_ticks) c.fill(px0, static_cast<int>(std::lround(Y(t))), px1, static_cast<int>(std::lround(Y(t))) + 1, kGrid);
  if (categories_.empty())
    for (double t : x_ticks) c.fill(static_cast<int>(std::lround(X(t))), py0, static_cast<int>(std::lround(X(t))) + 1, py1, kGrid);
  const double half = n_cat > 0 ? 0.4 * (px1 - px0) / double(n_cat) : 0;  // of a bar's width
  for (size_t k = 0; k < bars_.size(); ++k) {
    if (!std::isfinite(bars_[k])) continue;
    const double bar_top = R(std::max(bars_[k], 0.0)), base = R(0.0);
    c.fill(static_cast<int>(std::lround(X(double(k)) - half)), static_cast<int>(std::lround(bar_top)),
           static_cast<int>(std::lround(X(double(k)) + half)) + 1, static_cast<int>(std::lround(base)) + 1, bar_color_);
  }
  for (const Series& s : lines_) {
    double travelled = 0;
    bool have = false;
    double lx = 0, ly = 0;
    for (size_t k = 0; k < s.x.size() && k < s.y.size(); ++k) {
      if (!std::isfinite(s.x[k]) || !std::isfinite(s.y[k])) {
        have = false;  // a gap
        continue;
      }
      const double x = X(s.x[k]), y = Y(std::min(std::max(s.y[k], y_lo), y_hi));
      if (have) c.segment(lx, ly, x, y, s.color, 2, s.dashed, &travelled);
      if (s.markers) c.fill(static_cast<int>(x) - 3, static_cast<int>(y) - 3, static_cast<int>(x) + 4, static_cast<int>(y) + 4, s.color);
      lx = x, ly = y, have = true;
    }
  }
  c.fill(px0, py0, px1 + 1, py0 + 1, kBlack), c.fill(px0, py1, px1 + 1, py1 + 1, kBlack);
  c.fill(px0, py0, px0 + 1, py1 + 1, kBlack), c.fill(px1, py0, px1 + 1, py1 + 1, kBlack);
  for (double t : y_ticks) {
    const std::string s = tick_text(t, y_step);
    const int y = static_cast<int>(std::lround(Y(t)));
    c.fill(px0 - 4, y, px0, y + 1, kBlack);
    draw_text(c, s, px0 - 6 - text_width(s), y - th / 2 + 1, kBlack);
  }
  for (double t : r_ticks) {
    const std::string s = tick_text(t, r_step);
    const int y = static_cast<int>(std::lround(R(t)));
    c.fill(px1, y, px1 + 4, y + 1, kBlack);
    draw_text(c, s, px1 + 6, y - th / 2 + 1, kBlack);
  }
  for (size_t k = 0; k < x_ticks.size(); ++k) {
    const int x = static_cast<int>(std::lround(X(x_ticks[k])));
    c.fill(x, py1, x + 1, py1 + 4, kBlack);
    if (!categories_.empty()) {
      if (k < cats.size()) draw_text_upwards(c, cats[k], x - text_height(cat_scale) / 2, py1 + 6 + cat_h, kBlack, cat_scale);
    } else {
      const std::string s = tick_text(x_ticks[k], x_step);
      draw_text(c, s, x - text_width(s) / 2, py1 + 7, kBlack);
    }
  }
  draw_text(c, x_label_, (px0 + px1) / 2 - text_width(x_label_) / 2, height_ - 6 - th, kBlack);
  draw_text_upwards(c, y_label_, 10, (py0 + py1) / 2 + text_width(y_label_) / 2, kBlack);
  if (!right_label_.empty())
    draw_text_upwards(c, right_label_, width_ - 8 - th, (py0 + py1) / 2 + text_width(right_label_) / 2, kBlack);
  struct Entry {
    std::string text;
    Rgb color;
    bool dashed;
  };
  std::vector<Entry> legend;
  if (!bar_legend_.empty() && !bars_.empty()) legend.push_back({bar_legend_, bar_color_, false});
  for (const Series& s : lines_)
    if (!s.legend.empty()) legend.push_back({s.legend, s.color, s.dashed});
  if (!legend.empty()) {
    int w = 0;
    for (const Entry& e : legend) w = std::max(w, text_width(e.text));
    const int row = th + 4, bw = 8 + 24 + 6 + w + 8, bh = 6 + row * static_cast<int>(legend.size()) + 2;
    const int bx = px1 - 8 - bw, by = py0 + 8;
    c.fill(bx, by, bx + bw, by + bh, kWhite);
    c.fill(bx, by, bx + bw, by + 1, kFrame), c.fill(bx, by + bh - 1, bx + bw, by + bh, kFrame);
    c.fill(bx, by, bx + 1, by + bh, kFrame), c.fill(bx + bw - 1, by, bx + bw, by + bh, kFrame);
    for (size_t k = 0; k < legend.size(); ++k) {
      const int y = by + 6 + row * static_cast<int>(k);
      double travelled = 0;
      for (int dy = -1; dy <= 1; ++dy)  // a swatch 3 pixels thick, dashed as its line
        travelled = 0, c.segment(bx + 8, y + th / 2 + dy, bx + 32, y + th / 2 + dy, legend[k].color, 1, legend[k].dashed, &travelled);
      draw_text(c, legend[k].text, bx + 38, y, kBlack);
    }
  }
  return c.rgb;
}

bool Chart::write_png(const std::string& path, std::string* error) const {
  const std::vector<uint8_t> rgb = render();
  std::string png;
  const auto append = [](void* to, void* data, int size) { static_cast<std::string*>(to)->append(static_cast<char*>(data), size); };
  if (!stbi_write_png_to_func(append, &png, width_, height_, 3, rgb.data(), width_ * 3)) {
    if (error) *error = path + ": the PNG encoder failed";
    return false;
  }
  try {
    write_file_atomic(path, png);  // a reader never sees half a plot
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
  return true;
}

}  // namespace train
}  // namespace fgvc
