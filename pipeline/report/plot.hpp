// Figures for reports, drawn by the gnuplot executable into a PNG and an SVG. A figure is one or
// more panels (drawn side by side, wrapping into rows); a panel holds series of (x, y, lo, hi) points,
// each drawn solid or dashed, with an optional shaded band or error bars for [lo, hi].
#pragma once

#include <string>
#include <vector>

namespace grm {

struct PlotPoint {
  double x = 0, y = 0;
  double lo = 0, hi = 0;  // interval around y; lo == hi: none
};

struct Series {
  std::string title;  // legend entry; empty: not in the legend
  std::vector<PlotPoint> points;
  int color = 0;  // index into a colour-blind-safe palette
  bool dashed = false;
  enum class Interval { none, band, bars } interval = Interval::none;
};

struct Panel {
  std::string title, x_label, y_label;
  bool log_x = false;
  std::vector<Series> series;
  std::vector<double> x_tics;  // tic marks at these values; empty: gnuplot's choice
};

struct Figure {
  std::string name;     // file stem: NAME.png, NAME.svg
  std::string caption;  // shown under the figure in the report
  std::vector<Panel> panels;
  int columns = 2;  // panels per row
};

struct RenderedFigure {
  std::string png_path, svg_path;
};

// Writes DIR/NAME.gp and runs gnuplot on it; throws grm::Error (with gnuplot's output) on failure, or
// saying how to install gnuplot when it is missing.
RenderedFigure render_figure(const Figure& figure, const std::string& dir);

}  // namespace grm
