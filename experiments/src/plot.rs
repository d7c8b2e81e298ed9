//! Line plots written as PNG and SVG with an embedded font.
//!
//! The font (DejaVu Sans, from the `dejavu` crate) is registered with
//! plotters' `ab_glyph` backend once per process, so no system fonts are
//! needed. A figure is a set of series (points, optionally a spread band) on
//! linear or log axes; the same drawing code renders both formats.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Errors while drawing.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (for the named file).
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// What the backend said.
        message: String,
    },
    /// Nothing to draw: no finite points in any series.
    #[error("plot '{0}' has no finite points to draw")]
    Empty(String),
}

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Optional spread band `(x, low, high)` drawn shaded behind the line.
    pub band: Vec<(f64, f64, f64)>,
    /// Draw markers at the points as well as the line.
    pub markers: bool,
}

impl Series {
    /// A plain line.
    pub fn line(label: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.to_owned(),
            points,
            band: Vec::new(),
            markers: false,
        }
    }

    /// The same series with a spread band.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = band;
        self
    }

    /// The same series with markers.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// A figure: title, axis labels, series.
#[derive(Debug, Clone)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate;
        // if registration failed, text would be missing, not wrong, so the
        // error is reported once and drawing goes on.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            eprintln!("warning: could not register the embedded DejaVu Sans font");
        }
    });
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A compact tick label: up to four significant digits, trailing zeros
/// dropped, scientific notation outside `[1e-3, 1e5)`.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// The label of a tick at `v = log10(x)` on a linearised log axis: `x`
/// with two significant digits (`10^v` exactly at whole decades).
fn log_tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let x = 10f64.powf(v);
    if (v - v.round()).abs() < 1e-9 {
        return tick(10f64.powi(v.round() as i32));
    }
    let digits = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1);
    tick((x / scale).round() * scale)
}

impl LinePlot {
    /// Writes `<stem>.png` and `<stem>.svg` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<[PathBuf; 2], PlotError> {
        register_font();
        let png = dir.join(format!("{stem}.png"));
        let svg = dir.join(format!("{stem}.svg"));
        {
            let root = BitMapBackend::new(&png, (960, 600)).into_drawing_area();
            self.draw(&root, &png)?;
            root.present().map_err(|e| draw_err(&png, e))?;
        }
        {
            let root = SVGBackend::new(&svg, (960, 600)).into_drawing_area();
            self.draw(&root, &svg)?;
            root.present().map_err(|e| draw_err(&svg, e))?;
        }
        Ok([png, svg])
    }

    fn ranges(&self) -> Option<((f64, f64), (f64, f64))> {
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for s in &self.series {
            for &(x, y) in &s.points {
                if ok(x, self.log_x) && ok(y, self.log_y) {
                    xs.push(x);
                    ys.push(y);
                }
            }
            for &(x, lo, hi) in &s.band {
                if ok(x, self.log_x) && ok(lo, self.log_y) && ok(hi, self.log_y) {
                    ys.push(lo);
                    ys.push(hi);
                }
            }
        }
        let span = |v: &[f64], log: bool| -> Option<(f64, f64)> {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return None;
            }
            Some(if log {
                let (a, b) = if hi > lo {
                    (lo, hi)
                } else {
                    (lo / 2.0, hi * 2.0)
                };
                (a / 1.2, b * 1.2)
            } else {
                let pad = if hi > lo {
                    0.05 * (hi - lo)
                } else {
                    0.5f64.max(lo.abs() * 0.1)
                };
                (lo - pad, hi + pad)
            })
        };
        Some((span(&xs, self.log_x)?, span(&ys, self.log_y)?))
    }

    /// The plot with every log axis replaced by `log10` of its values on a
    /// linear axis (non-positive values dropped); tick labels then show
    /// `10^v` (see [`log_tick`]). Drawing log axes this way keeps the ticks
    /// evenly spaced and never crowded.
    fn linearised(&self) -> Self {
        let f = |v: f64, log: bool| {
            if log {
                if v > 0.0 { v.log10() } else { f64::NAN }
            } else {
                v
            }
        };
        let (lx, ly) = (self.log_x, self.log_y);
        Self {
            series: self
                .series
                .iter()
                .map(|s| Series {
                    label: s.label.clone(),
                    points: s
                        .points
                        .iter()
                        .map(|&(x, y)| (f(x, lx), f(y, ly)))
                        .collect(),
                    band: s
                        .band
                        .iter()
                        .map(|&(x, lo, hi)| (f(x, lx), f(lo, ly), f(hi, ly)))
                        .collect(),
                    markers: s.markers,
                })
                .collect(),
            log_x: false,
            log_y: false,
            ..self.clone()
        }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let lin = self.linearised();
        let ((x0, x1), (y0, y1)) = lin
            .ranges()
            .ok_or_else(|| PlotError::Empty(self.title.clone()))?;
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        lin.draw_in(root, path, x0..x1, y0..y1, (self.log_x, self.log_y))
    }

    fn draw_in<DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
        x: X,
        y: Y,
        (log_x, log_y): (bool, bool),
    ) -> Result<(), PlotError>
    where
        DB: DrawingBackend,
        X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
        Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
        X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
        Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_labels(8)
            .y_labels(10)
            .x_label_formatter(&|v| if log_x { log_tick(*v) } else { tick(*v) })
            .y_label_formatter(&|v| if log_y { log_tick(*v) } else { tick(*v) })
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if !s.band.is_empty() {
                let mut poly: Vec<(f64, f64)> = s.band.iter().map(|&(x, lo, _)| (x, lo)).collect();
                poly.extend(s.band.iter().rev().map(|&(x, _, hi)| (x, hi)));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.18).filled(),
                    )))
                    .map_err(|e| draw_err(path, e))?;
            }
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if s.markers {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(|e| draw_err(path, e))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        Ok(())
    }
}

fn draw_err<E: std::fmt::Display>(path: &Path, e: E) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(16.0), "16");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.8), "0.8");
        assert_eq!(tick(1024.0), "1024");
        assert_eq!(tick(-0.05), "-0.05");
        assert_eq!(tick(2e6), "2.0e6");
        assert_eq!(log_tick(0.0), "1");
        assert_eq!(log_tick(-2.0), "0.01");
        assert_eq!(log_tick(3.0), "1000");
        assert_eq!(log_tick(0.5), "3.2");
        assert_eq!(log_tick(2f64.log10()), "2");
        assert_eq!(log_tick(f64::NAN), "");
    }

    #[test]
    fn writes_png_and_svg_with_text() {
        let dir = std::env::temp_dir().join(format!("wflora-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plot = LinePlot {
            title: "test accuracy".into(),
            x_label: "round".into(),
            y_label: "accuracy".into(),
            log_x: false,
            log_y: false,
            series: vec![
                Series::line("a", vec![(0.0, 0.1), (1.0, 0.5), (2.0, 0.7)]).with_band(vec![
                    (0.0, 0.05, 0.15),
                    (1.0, 0.4, 0.6),
                    (2.0, 0.65, 0.75),
                ]),
                Series::line("b", vec![(0.0, 0.2), (2.0, 0.3)]).with_markers(),
            ],
        };
        let [png, svg] = plot.write(&dir, "t").unwrap();
        let png_bytes = std::fs::read(&png).unwrap();
        assert_eq!(&png_bytes[1..4], b"PNG");
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("<svg") && svg_text.contains("accuracy"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_plot_is_an_error() {
        let plot = LinePlot {
            title: "nothing".into(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: true,
            log_y: false,
            series: vec![Series::line("a", vec![(0.0, f64::NAN)])],
        };
        let dir = std::env::temp_dir();
        assert!(matches!(
            plot.write(&dir, "never"),
            Err(PlotError::Empty(_))
        ));
    }
}
