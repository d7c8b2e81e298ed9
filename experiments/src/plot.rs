//! Line plots written as PNG and SVG with an embedded font.
//!
//! The font (DejaVu Sans, from the `dejavu` crate) is registered with
//! plotters' `ab_glyph` backend once per process, so no system fonts are
//! needed. A figure is a set of series (points, optionally a spread band) on
//! linear or log axes; the same drawing code renders both formats.
//!
//! Readability rules the drawing follows:
//! - every series has its own colour (Okabe–Ito, colour-blind safe), marker
//!   shape and dash pattern, so arms stay apart in greyscale too;
//! - a linear axis whose data are all whole numbers (rounds, ranks, counts)
//!   gets whole-number ticks only; a log axis gets ticks at 1-2-5 × powers
//!   of ten (powers of ten alone over many decades, 1…9 × over less than
//!   one);
//! - the legend goes in a corner of the plot where it covers no data, or
//!   below the plot when no corner is free; shaded bands get a legend entry
//!   of their own ([`LinePlot::band_label`]);
//! - size and resolution come from [`PlotOptions`].

use plotters::coord::Shift;
use plotters::coord::ranged1d::{
    KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter,
};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
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
    /// The PNG would be larger than [`MAX_PNG_PIXELS`].
    #[error(
        "a {width}x{height} PNG is too large (at most {MAX_PNG_PIXELS} pixels); lower --dpi or --plot-size"
    )]
    TooLarge {
        /// PNG width in pixels.
        width: u32,
        /// PNG height in pixels.
        height: u32,
    },
}

/// The resolution at which [`PlotOptions::width`] and
/// [`PlotOptions::height`] are pixels of the PNG.
pub const BASE_DPI: u32 = 100;

/// The largest PNG drawn, in pixels (width × height).
pub const MAX_PNG_PIXELS: u64 = 64 * 1024 * 1024;

/// The smallest and largest width or height `--plot-size` accepts.
pub const PLOT_SIDE_RANGE: std::ops::RangeInclusive<u32> = 200..=10_000;

/// Size and resolution of the written figures (`wflora reproduce
/// --plot-size WxH --dpi N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlotOptions {
    /// Width in pixels at [`BASE_DPI`]; the SVG's width.
    pub width: u32,
    /// Height in pixels at [`BASE_DPI`]; the SVG's height.
    pub height: u32,
    /// Resolution of the PNG: it is `width·dpi/100 × height·dpi/100`
    /// pixels, with text, lines and markers scaled alike (the SVG is vector
    /// and stays `width × height`).
    pub dpi: u32,
}

impl Default for PlotOptions {
    /// 960 × 600 at 100 dpi.
    fn default() -> Self {
        Self {
            width: 960,
            height: 600,
            dpi: BASE_DPI,
        }
    }
}

impl PlotOptions {
    /// The PNG's size in pixels.
    #[must_use]
    pub fn png_size(&self) -> (u32, u32) {
        let f = |v: u32| {
            let p = u64::from(v) * u64::from(self.dpi) / u64::from(BASE_DPI);
            u32::try_from(p.max(1)).unwrap_or(u32::MAX)
        };
        (f(self.width), f(self.height))
    }

    fn scale(&self) -> f64 {
        f64::from(self.dpi) / f64::from(BASE_DPI)
    }
}

/// Parses `--plot-size`: `WIDTHxHEIGHT` in pixels (`1200x800`; `X` and `×`
/// also separate), each within [`PLOT_SIDE_RANGE`].
///
/// # Errors
/// Anything else, with a message naming the expected form.
pub fn parse_plot_size(s: &str) -> Result<(u32, u32), String> {
    let expected =
        || format!("--plot-size: expected WIDTHxHEIGHT in pixels, e.g. 1200x800 (got '{s}')");
    let (w, h) = s.trim().split_once(['x', 'X', '×']).ok_or_else(expected)?;
    let w: u32 = w.trim().parse().map_err(|_| expected())?;
    let h: u32 = h.trim().parse().map_err(|_| expected())?;
    if !PLOT_SIDE_RANGE.contains(&w) || !PLOT_SIDE_RANGE.contains(&h) {
        return Err(format!(
            "--plot-size: {w}x{h} is out of range: width and height must be {} to {} pixels",
            PLOT_SIDE_RANGE.start(),
            PLOT_SIDE_RANGE.end()
        ));
    }
    Ok((w, h))
}

/// `n` and the noun, pluralised by an `s`: `1 seed`, `3 seeds`.
#[must_use]
pub fn count_of(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The legend text of a min–max band over `seeds` seeds:
/// `band: min–max over 3 seeds`.
#[must_use]
pub fn min_max_band_label(seeds: usize) -> String {
    format!("band: min–max over {}", count_of(seeds, "seed"))
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
    /// Draw a marker at every point (without it, markers at about ten
    /// evenly spaced points, enough to tell the series apart).
    pub markers: bool,
}

impl Series {
    /// A plain line.
    #[must_use]
    pub fn line(label: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.to_owned(),
            points,
            band: Vec::new(),
            markers: false,
        }
    }

    /// The same series with a spread band.
    #[must_use]
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = band;
        self
    }

    /// The same series with a marker at every point.
    #[must_use]
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// A figure: title, axis labels, series.
#[derive(Debug, Clone)]
pub struct LinePlot {
    /// Title above the plot (the file name says which figure it is).
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
    /// What the shaded bands are, as the legend says it (e.g.
    /// [`min_max_band_label`]); shown when some band has width. `None`
    /// reads "band: spread".
    pub band_label: Option<String>,
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

/// Okabe–Ito, yellow last (weak on white).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];

/// Marker shapes, one per series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Ring,
}

const MARKERS: [Marker; 8] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
    Marker::Plus,
    Marker::Ring,
];

/// Dash patterns (on, off, on, off… in pixels at 100 dpi); empty is solid.
const DASHES: [&[f64]; 6] = [
    &[],
    &[9.0, 5.0],
    &[2.5, 3.5],
    &[10.0, 4.0, 2.5, 4.0],
    &[18.0, 6.0],
    &[10.0, 3.0, 2.5, 3.0, 2.5, 3.0],
];

/// Colour, marker and dash pattern of series `i`: all three differ between
/// any two of the first 24 series.
fn series_style(i: usize) -> (RGBColor, Marker, &'static [f64]) {
    (
        PALETTE[i % PALETTE.len()],
        MARKERS[i % MARKERS.len()],
        DASHES[i % DASHES.len()],
    )
}

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

/// The label of a log-axis tick at `v = log10(x)` in the axis' notation:
/// as [`log_tick`], or with `sci` as `m e k` (`1e4`, `2e5`, `2.5e-4`), which
/// a log axis uses for all its ticks once any lies outside `[1e-3, 1e5)`.
fn log_label(v: f64, sci: bool) -> String {
    if !sci || !v.is_finite() {
        return log_tick(v);
    }
    let e = (v + 1e-9).floor();
    let m = (10f64.powf(v - e) * 10.0).round() / 10.0;
    let (m, e) = if m >= 10.0 { (1.0, e + 1.0) } else { (m, e) };
    format!("{}e{}", tick(m), e as i32)
}

/// The smallest of `{1, 2, 5} × 10^k` at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let base = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0] {
        if m * base >= raw * (1.0 - 1e-9) {
            return m * base;
        }
    }
    10.0 * base
}

/// Ticks of a linear axis over `[lo, hi]`: multiples of a 1-2-5 step,
/// at most about `target` of them; whole numbers only when `integer`.
fn linear_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<f64> {
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        return vec![lo];
    }
    let mut step = nice_step(span / target.max(1) as f64);
    if integer {
        step = step.max(1.0);
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let mut v: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
    if integer {
        v.iter_mut().for_each(|t| *t = t.round());
    }
    v
}

/// Ticks of a log axis whose ends are `lo = log10(min)`, `hi = log10(max)`,
/// as `log10` of the tick values: 1-2-5 × powers of ten; powers of ten
/// alone (every k-th, at most `target`) when 1-2-5 gives more than
/// `target + 2`; 1…9 × when the
/// 1-2-5 set gives fewer than three. With `integer`, values below 1 are
/// left out (ranks, counts).
fn log_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<f64> {
    let gen_ticks = |mantissas: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for e in (lo.floor() as i32 - 1)..=(hi.ceil() as i32) {
            if integer && e < 0 {
                continue;
            }
            for &m in mantissas {
                let v = m.log10() + f64::from(e);
                if v >= lo - 1e-9 && v <= hi + 1e-9 {
                    out.push(v);
                }
            }
        }
        out
    };
    let one_two_five = gen_ticks(&[1.0, 2.0, 5.0]);
    if one_two_five.len() > target + 2 {
        let decades = gen_ticks(&[1.0]);
        let k = decades.len().div_ceil(target.max(2)).max(1) as i64;
        return decades
            .into_iter()
            .filter(|v| (v.round() as i64).rem_euclid(k) == 0)
            .collect();
    }
    if one_two_five.len() >= 3 {
        return one_two_five;
    }
    let all: Vec<f64> = (1..10).map(f64::from).collect();
    let dense = gen_ticks(&all);
    if dense.len() > one_two_five.len() {
        dense
    } else {
        one_two_five
    }
}

/// A log axis over `[lo, hi]` (`log10` ends): its ends, widened outward to
/// the nearest `m × 10^k` (`m` in 1…9) when fewer than two ticks fall
/// inside, and its ticks.
fn log_axis(lo: f64, hi: f64, target: usize, integer: bool) -> (f64, f64, Vec<f64>) {
    let ticks = log_ticks(lo, hi, target, integer);
    if ticks.len() >= 2 {
        return (lo, hi, ticks);
    }
    let snap = |v: f64, up: bool| {
        let e = v.floor();
        let m = 10f64.powf(v - e);
        let m = if up { m.ceil() } else { m.floor().max(1.0) };
        let m = if integer && e < 0.0 { 1.0 } else { m };
        let e = if integer && e < 0.0 { 0.0 } else { e };
        m.log10() + e
    };
    let (lo, hi) = (snap(lo, false).min(lo), snap(hi, true).max(hi));
    (lo, hi, log_ticks(lo, hi, target, integer))
}

/// Every finite value a whole number (and at least one value).
fn integral(values: impl IntoIterator<Item = f64>) -> bool {
    let mut any = false;
    for v in values {
        if v.is_finite() {
            if v.fract() != 0.0 || v.abs() > 1e15 {
                return false;
            }
            any = true;
        }
    }
    any
}

/// A plot axis with its own tick positions (plotters' defaults put ticks
/// at 1.5 on round axes and at 63/71/79 on log axes).
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    /// Values are `log10` of the data; labels show `10^v`.
    log: bool,
    /// Labelled ticks.
    ticks: Vec<f64>,
    /// Light grid lines between them (2…9 × on log axes).
    minor: Vec<f64>,
    /// Log-axis labels as `2e5` (see [`log_label`]).
    sci: bool,
}

impl Axis {
    fn new(lo: f64, hi: f64, log: bool, integer: bool, target: usize) -> Self {
        if log {
            let (lo, hi, ticks) = log_axis(lo, hi, target, integer);
            let minor = if hi - lo <= 6.0 {
                let all: Vec<f64> = (2..10).map(f64::from).collect();
                let mut m = Vec::new();
                for e in (lo.floor() as i32)..=(hi.ceil() as i32) {
                    for &k in &all {
                        let v = k.log10() + f64::from(e);
                        if v > lo && v < hi && !ticks.iter().any(|t| (t - v).abs() < 1e-9) {
                            m.push(v);
                        }
                    }
                }
                m
            } else {
                Vec::new()
            };
            Self {
                lo,
                hi,
                log,
                sci: ticks.iter().any(|&t| !(1e-3..1e5).contains(&10f64.powf(t))),
                ticks,
                minor,
            }
        } else {
            Self {
                lo,
                hi,
                log,
                ticks: linear_ticks(lo, hi, target, integer),
                minor: Vec::new(),
                sci: false,
            }
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        if !f.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.ticks.clone(),
            KeyPointWeight::Any => {
                let mut v = self.minor.clone();
                v.extend(&self.ticks);
                v.sort_by(f64::total_cmp);
                v
            }
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, v: &f64) -> String {
        if self.log {
            log_label(*v, self.sci)
        } else {
            tick(*v)
        }
    }
}

/// Pixel sizes at 100 dpi, scaled to the output's resolution.
#[derive(Debug, Clone, Copy)]
struct Px(f64);

impl Px {
    fn i(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    fn f(self, v: f64) -> f64 {
        v * self.0
    }
}

/// Splits a pixel polyline into the drawn pieces of a dash `pattern`
/// (on, off, on, off… lengths); an empty pattern is the whole line.
fn dash(points: &[(f64, f64)], pattern: &[f64]) -> Vec<Vec<(f64, f64)>> {
    if pattern.is_empty() || points.len() < 2 || pattern.iter().any(|&p| !p.is_finite() || p <= 0.0)
    {
        return vec![points.to_vec()];
    }
    let mut out = Vec::new();
    let mut cur = vec![points[0]];
    let mut k = 0;
    let mut left = pattern[0];
    let mut on = true;
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = (b.0 - a.0).hypot(b.1 - a.1);
        let mut t = 0.0;
        while len - t > left {
            t += left;
            let p = (a.0 + (b.0 - a.0) * t / len, a.1 + (b.1 - a.1) * t / len);
            if on {
                cur.push(p);
                out.push(std::mem::take(&mut cur));
            } else {
                cur = vec![p];
            }
            on = !on;
            k = (k + 1) % pattern.len();
            left = pattern[k];
        }
        left -= len - t;
        if on {
            cur.push(b);
        }
    }
    if on && cur.len() >= 2 {
        out.push(cur);
    }
    out
}

/// Indices of the points that get a marker: all with `every` or when
/// there are few, else about ten, staggered between series so markers of
/// different series do not sit on one another.
fn marker_indices(n: usize, every: bool, series: usize, n_series: usize) -> Vec<usize> {
    if every || n <= 12 {
        return (0..n).collect();
    }
    let step = n.div_ceil(10);
    let offset = (series * step / n_series.max(1)) % step;
    (offset..n).step_by(step).collect()
}

fn draw_marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    marker: Marker,
    (x, y): (i32, i32),
    px: Px,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let r = px.f(4.5);
    let p = |dx: f64, dy: f64| (x + (dx * r).round() as i32, y + (dy * r).round() as i32);
    let fill = color.filled();
    let stroke = color.stroke_width(px.i(2.0).max(1) as u32);
    match marker {
        Marker::Circle => root.draw(&Circle::new((x, y), r.round() as i32, fill)),
        Marker::Ring => root.draw(&Circle::new((x, y), r.round() as i32, stroke)),
        Marker::Square => root.draw(&Rectangle::new([p(-0.85, -0.85), p(0.85, 0.85)], fill)),
        Marker::TriangleUp => root.draw(&Polygon::new(
            vec![p(0.0, -1.15), p(1.0, 0.75), p(-1.0, 0.75)],
            fill,
        )),
        Marker::TriangleDown => root.draw(&Polygon::new(
            vec![p(0.0, 1.15), p(1.0, -0.75), p(-1.0, -0.75)],
            fill,
        )),
        Marker::Diamond => root.draw(&Polygon::new(
            vec![p(0.0, -1.25), p(1.0, 0.0), p(0.0, 1.25), p(-1.0, 0.0)],
            fill,
        )),
        Marker::Cross => {
            root.draw(&PathElement::new(vec![p(-1.0, -1.0), p(1.0, 1.0)], stroke))?;
            root.draw(&PathElement::new(vec![p(-1.0, 1.0), p(1.0, -1.0)], stroke))
        }
        Marker::Plus => {
            root.draw(&PathElement::new(vec![p(-1.2, 0.0), p(1.2, 0.0)], stroke))?;
            root.draw(&PathElement::new(vec![p(0.0, -1.2), p(0.0, 1.2)], stroke))
        }
    }
}

/// A pixel polyline in the series' dash pattern.
fn draw_dashed<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[(i32, i32)],
    pattern: &[f64],
    px: Px,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let pattern: Vec<f64> = pattern.iter().map(|&v| px.f(v)).collect();
    let f: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(x, y)| (f64::from(x), f64::from(y)))
        .collect();
    let stroke = color.stroke_width(px.i(2.0).max(1) as u32);
    for piece in dash(&f, &pattern) {
        let piece: Vec<(i32, i32)> = piece
            .iter()
            .map(|&(x, y)| (x.round() as i32, y.round() as i32))
            .collect();
        if piece.len() >= 2 {
            root.draw(&PathElement::new(piece, stroke))?;
        }
    }
    Ok(())
}

/// What a legend entry shows left of its text.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    /// Series `i`'s line and marker.
    Series(usize),
    /// The shaded band.
    Band,
}

/// A measured legend.
struct Legend {
    entries: Vec<(String, Swatch)>,
    text_w: Vec<i32>,
    row_h: i32,
    sample_w: i32,
    gap: i32,
    pad: i32,
    font: f64,
}

impl Legend {
    fn item_w(&self, i: usize) -> i32 {
        self.sample_w + self.gap + self.text_w[i]
    }

    /// The boxed size of the legend as one column.
    fn box_size(&self) -> (i32, i32) {
        let w = (0..self.entries.len())
            .map(|i| self.item_w(i))
            .max()
            .unwrap_or(0);
        (
            w + 2 * self.pad,
            self.row_h * self.entries.len() as i32 + 2 * self.pad,
        )
    }

    /// The rows of entries when laid out in lines `width` pixels wide.
    fn rows(&self, width: i32) -> Vec<Vec<usize>> {
        let col_gap = 3 * self.gap;
        let mut rows: Vec<Vec<usize>> = Vec::new();
        let mut used = 0;
        for i in 0..self.entries.len() {
            let w = self.item_w(i);
            match rows.last_mut() {
                Some(row) if used + col_gap + w <= width => {
                    row.push(i);
                    used += col_gap + w;
                }
                _ => {
                    rows.push(vec![i]);
                    used = w;
                }
            }
        }
        rows
    }

    fn draw_entry<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        i: usize,
        (x, yc): (i32, i32),
        px: Px,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (label, swatch) = &self.entries[i];
        match *swatch {
            Swatch::Series(s) => {
                let (color, marker, pattern) = series_style(s);
                draw_dashed(
                    root,
                    &[(x, yc), (x + self.sample_w, yc)],
                    pattern,
                    px,
                    color,
                )?;
                draw_marker(root, marker, (x + self.sample_w / 2, yc), px, color)?;
            }
            Swatch::Band => {
                let h = px.i(6.0);
                root.draw(&Rectangle::new(
                    [(x, yc - h), (x + self.sample_w, yc + h)],
                    BLACK.mix(0.18).filled(),
                ))?;
            }
        }
        let style = TextStyle::from(("sans-serif", self.font).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            label.clone(),
            (x + self.sample_w + self.gap, yc),
            style,
        ))
    }
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Inside the plot, box top-left at this pixel.
    Inside(i32, i32),
    /// Below the plot, in a strip this many pixels high.
    Below(i32),
}

impl LinePlot {
    /// Writes `<stem>.png` and `<stem>.svg` into `dir` at the size and
    /// resolution of `opts`; returns both paths.
    ///
    /// # Errors
    /// No finite point to draw; a PNG over [`MAX_PNG_PIXELS`]; the backend
    /// failing.
    pub fn write(
        &self,
        dir: &Path,
        stem: &str,
        opts: &PlotOptions,
    ) -> Result<[PathBuf; 2], PlotError> {
        register_font();
        let png = dir.join(format!("{stem}.png"));
        let svg = dir.join(format!("{stem}.svg"));
        let (pw, ph) = opts.png_size();
        if u64::from(pw) * u64::from(ph) > MAX_PNG_PIXELS {
            return Err(PlotError::TooLarge {
                width: pw,
                height: ph,
            });
        }
        {
            let root = BitMapBackend::new(&png, (pw, ph)).into_drawing_area();
            self.draw(&root, &png, Px(opts.scale()))?;
            root.present().map_err(|e| draw_err(&png, e))?;
        }
        {
            let root = SVGBackend::new(&svg, (opts.width, opts.height)).into_drawing_area();
            self.draw(&root, &svg, Px(1.0))?;
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

    /// Whole-number data on the x and y axes (of the plot as given, before
    /// [`Self::linearised`]).
    fn integral_axes(&self) -> (bool, bool) {
        let xs = self.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.0)
                .chain(s.band.iter().map(|b| b.0))
        });
        let ys = self.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        });
        (integral(xs), integral(ys))
    }

    fn legend_entries(&self) -> Vec<(String, Swatch)> {
        let mut e: Vec<(String, Swatch)> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.label.is_empty())
            .map(|(i, s)| (s.label.clone(), Swatch::Series(i)))
            .collect();
        let banded = self.series.iter().any(|s| {
            s.band
                .iter()
                .any(|&(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite() && hi > lo)
        });
        if banded {
            let label = self
                .band_label
                .clone()
                .unwrap_or_else(|| "band: spread".to_owned());
            e.push((label, Swatch::Band));
        }
        e
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
        px: Px,
    ) -> Result<(), PlotError> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| draw_err(path, e);
        let lin = self.linearised();
        let ((x0, x1), (y0, y1)) = lin
            .ranges()
            .ok_or_else(|| PlotError::Empty(self.title.clone()))?;
        let (int_x, int_y) = self.integral_axes();
        let x_axis = Axis::new(x0, x1, self.log_x, int_x, 8);
        let y_axis = Axis::new(y0, y1, self.log_y, int_y, 10);
        root.fill(&WHITE).map_err(err)?;

        let m = px.i(16.0);
        let framed = root.margin(m, m, m, m);
        let area = framed
            .titled(&self.title, ("sans-serif", px.f(26.0)))
            .map_err(err)?;

        let entries = lin.legend_entries();
        let font = px.f(16.0);
        let text_style = TextStyle::from(("sans-serif", font).into_font());
        let mut text_w = Vec::new();
        let mut text_h = 0;
        for (label, _) in &entries {
            let (w, h) = root.estimate_text_size(label, &text_style).map_err(err)?;
            text_w.push(w as i32);
            text_h = text_h.max(h as i32);
        }
        let legend = Legend {
            entries,
            text_w,
            row_h: text_h.max(px.i(12.0)) + px.i(7.0),
            sample_w: px.i(34.0),
            gap: px.i(7.0),
            pad: px.i(8.0),
            font,
        };

        let placement = if legend.entries.is_empty() {
            Placement::Inside(0, 0)
        } else {
            let chart = build_chart(&area, &x_axis, &y_axis, px).map_err(err)?;
            lin.place_legend(&chart, &legend, px)
        };
        let (chart_area, strip) = match placement {
            Placement::Inside(..) => (area.clone(), None),
            Placement::Below(h) => {
                let (_, ah) = area.dim_in_pixel();
                let (top, bottom) = area.split_vertically(ah as i32 - h);
                (top, Some(bottom))
            }
        };
        let mut chart = build_chart(&chart_area, &x_axis, &y_axis, px).map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(("sans-serif", px.f(16.0)))
            .axis_desc_style(("sans-serif", px.f(18.0)))
            .light_line_style(BLACK.mix(0.06))
            .bold_line_style(BLACK.mix(0.16))
            .draw()
            .map_err(err)?;

        // Bands first, so no band covers another series' line.
        for (i, s) in lin.series.iter().enumerate() {
            let band: Vec<_> = s
                .band
                .iter()
                .copied()
                .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
                .collect();
            if band.is_empty() {
                continue;
            }
            let (color, _, _) = series_style(i);
            let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, lo, _)| (x, lo)).collect();
            poly.extend(band.iter().rev().map(|&(x, _, hi)| (x, hi)));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    color.mix(0.15).filled(),
                )))
                .map_err(err)?;
        }
        let n = lin.series.len();
        for (i, s) in lin.series.iter().enumerate() {
            let (color, marker, pattern) = series_style(i);
            let pts: Vec<(i32, i32)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|p| chart.backend_coord(p))
                .collect();
            draw_dashed(root, &pts, pattern, px, color).map_err(err)?;
            for k in marker_indices(pts.len(), s.markers, i, n) {
                draw_marker(root, marker, pts[k], px, color).map_err(err)?;
            }
        }

        match (placement, strip) {
            (_, Some(strip)) => {
                let (xr, yr) = strip.get_pixel_range();
                let (pxr, _) = chart.plotting_area().get_pixel_range();
                let width = pxr.end - pxr.start;
                let mut y = yr.start + legend.pad + legend.row_h / 2;
                for row in legend.rows(width) {
                    let w: i32 = row.iter().map(|&i| legend.item_w(i)).sum::<i32>()
                        + 3 * legend.gap * (row.len() as i32 - 1);
                    let mut x = (pxr.start + (width - w) / 2).max(xr.start);
                    for i in row {
                        legend.draw_entry(root, i, (x, y), px).map_err(err)?;
                        x += legend.item_w(i) + 3 * legend.gap;
                    }
                    y += legend.row_h;
                }
            }
            (Placement::Inside(bx, by), None) if !legend.entries.is_empty() => {
                let (bw, bh) = legend.box_size();
                root.draw(&Rectangle::new(
                    [(bx, by), (bx + bw, by + bh)],
                    WHITE.mix(0.9).filled(),
                ))
                .map_err(err)?;
                root.draw(&Rectangle::new(
                    [(bx, by), (bx + bw, by + bh)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(err)?;
                for i in 0..legend.entries.len() {
                    let y = by + legend.pad + legend.row_h * i as i32 + legend.row_h / 2;
                    legend
                        .draw_entry(root, i, (bx + legend.pad, y), px)
                        .map_err(err)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The first corner (upper right, upper left, lower right, lower left,
    /// upper middle, lower middle) where the legend's box covers no line,
    /// marker or band of the (linearised) plot; below the plot if none.
    fn place_legend<DB: DrawingBackend>(
        &self,
        chart: &Chart<'_, DB>,
        legend: &Legend,
        px: Px,
    ) -> Placement {
        let mut obstacles: Vec<(f64, f64)> = Vec::new();
        let step = px.f(3.0).max(1.0);
        let coord = |p: (f64, f64)| {
            let (x, y) = chart.backend_coord(&p);
            (f64::from(x), f64::from(y))
        };
        let sample = |a: (f64, f64), b: (f64, f64), out: &mut Vec<(f64, f64)>| {
            let len = (b.0 - a.0).hypot(b.1 - a.1);
            let k = (len / step).ceil().max(1.0) as usize;
            for j in 0..=k {
                let t = j as f64 / k as f64;
                out.push((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
            }
        };
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(coord)
                .collect();
            obstacles.extend(&pts);
            for w in pts.windows(2) {
                sample(w[0], w[1], &mut obstacles);
            }
            let band: Vec<((f64, f64), (f64, f64))> = s
                .band
                .iter()
                .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
                .map(|&(x, lo, hi)| (coord((x, lo)), coord((x, hi))))
                .collect();
            for &(lo, hi) in &band {
                sample(lo, hi, &mut obstacles);
            }
            for w in band.windows(2) {
                sample(w[0].0, w[1].0, &mut obstacles);
                sample(w[0].1, w[1].1, &mut obstacles);
            }
        }
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        let (bw, bh) = legend.box_size();
        let inset = px.i(10.0);
        let below = || {
            let rows = legend.rows(xr.end - xr.start).len() as i32;
            Placement::Below(rows * legend.row_h + 2 * legend.pad + px.i(4.0))
        };
        if bw + 2 * inset > xr.end - xr.start || bh + 2 * inset > yr.end - yr.start {
            return below();
        }
        let (left, right) = (xr.start + inset, xr.end - inset - bw);
        let (top, bottom) = (yr.start + inset, yr.end - inset - bh);
        let mid = (xr.start + xr.end - bw) / 2;
        let clear = f64::from(px.i(6.0));
        for (bx, by) in [
            (right, top),
            (left, top),
            (right, bottom),
            (left, bottom),
            (mid, top),
            (mid, bottom),
        ] {
            let (x0, y0) = (f64::from(bx) - clear, f64::from(by) - clear);
            let (x1, y1) = (f64::from(bx + bw) + clear, f64::from(by + bh) + clear);
            if !obstacles
                .iter()
                .any(|&(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
            {
                return Placement::Inside(bx, by);
            }
        }
        below()
    }
}

/// A chart on the plot's own axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

/// The chart on `area` (nothing is drawn yet).
fn build_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: &Axis,
    y: &Axis,
    px: Px,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    ChartBuilder::on(area)
        .margin_top(px.i(8.0))
        .margin_right(px.i(16.0))
        .x_label_area_size(px.i(52.0))
        .y_label_area_size(px.i(76.0))
        .build_cartesian_2d(x.clone(), y.clone())
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

    fn labels(ticks: &[f64], log: bool) -> Vec<String> {
        ticks
            .iter()
            .map(|&t| if log { log_tick(t) } else { tick(t) })
            .collect()
    }

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
        assert_eq!(tick(0.1 * 3.0), "0.3");
        assert_eq!(log_tick(0.0), "1");
        assert_eq!(log_tick(-2.0), "0.01");
        assert_eq!(log_tick(3.0), "1000");
        assert_eq!(log_tick(0.5), "3.2");
        assert_eq!(log_tick(2f64.log10()), "2");
        assert_eq!(log_tick(f64::NAN), "");
        assert_eq!(log_label(5.0, true), "1e5");
        assert_eq!(log_label(5.0 + 2f64.log10(), true), "2e5");
        assert_eq!(log_label(-4.0 + 2.5f64.log10(), true), "2.5e-4");
        assert_eq!(log_label(1.0, false), "10");
    }

    #[test]
    fn integer_axes_get_whole_ticks_only() {
        // Rounds 1..3 padded by 5%: plotters put ticks at 1.5 and 2.5.
        let t = linear_ticks(0.9, 3.1, 8, true);
        assert_eq!(t, vec![1.0, 2.0, 3.0]);
        // Without the integer rule the same range gets half steps.
        assert!(linear_ticks(0.9, 3.1, 8, false).contains(&1.5));
        // Long round axes step by 1-2-5 multiples.
        assert_eq!(
            labels(&linear_ticks(-4.0, 104.0, 8, true), false),
            ["0", "20", "40", "60", "80", "100"]
        );
        // A single round: one tick at it.
        assert_eq!(linear_ticks(4.5, 5.5, 8, true), vec![5.0]);
        for (lo, hi) in [(0.8, 5.2), (-0.15, 3.15), (0.55, 2.45), (1.0, 1000.0)] {
            let t = linear_ticks(lo, hi, 8, true);
            assert!(!t.is_empty() && t.len() <= 9, "{lo}..{hi}: {t:?}");
            assert!(t.iter().all(|v| v.fract() == 0.0), "{lo}..{hi}: {t:?}");
        }
        assert!(integral([1.0, 2.0, f64::NAN, 40.0]));
        assert!(!integral([1.0, 2.5]));
        assert!(!integral([f64::NAN]));
    }

    #[test]
    fn linear_ticks_use_1_2_5_steps() {
        assert_eq!(
            labels(&linear_ticks(0.05, 0.82, 10, false), false),
            ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]
        );
        for (raw, step) in [
            (0.055, 0.1),
            (13.0, 20.0),
            (3.0, 5.0),
            (2.0, 2.0),
            (0.3, 0.5),
        ] {
            assert!(
                (nice_step(raw) - step).abs() < 1e-12,
                "{raw}: {}",
                nice_step(raw)
            );
        }
    }

    #[test]
    fn log_axes_get_1_2_5_ticks() {
        let l = |lo: f64, hi: f64| {
            let a = Axis::new(lo.log10(), hi.log10(), true, false, 8);
            a.ticks.iter().map(|t| a.format_ext(t)).collect::<Vec<_>>()
        };
        // What read 63/71/79 before: a narrow axis gets 1…9 × 10^k.
        assert_eq!(l(52.5, 94.8), ["60", "70", "80", "90"]);
        // Up to about three decades: 1, 2, 5 per decade.
        assert_eq!(
            l(0.8, 1200.0),
            ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1000"]
        );
        // Many decades: powers of ten only, thinned to fit.
        assert_eq!(l(5e3, 2e8), ["1e4", "1e5", "1e6", "1e7", "1e8"]);
        let wide = l(1e-3, 1e12);
        assert!(wide.len() <= 8 && wide.len() >= 4, "{wide:?}");
        assert!(wide.iter().all(|s| s.starts_with('1')), "{wide:?}");
        // Too narrow for any tick: widened to the neighbouring m × 10^k.
        let (lo, hi, t) = log_axis(1.05f64.log10(), 1.5f64.log10(), 8, false);
        assert!(t.len() >= 2, "{t:?}");
        assert!(lo <= 1.05f64.log10() && hi >= 1.5f64.log10());
        // Ranks (integers) never get ticks below 1.
        let (_, _, t) = log_axis((1.0f64 / 1.2).log10(), 76.8f64.log10(), 8, true);
        assert_eq!(labels(&t, true), ["1", "2", "5", "10", "20", "50"]);
    }

    #[test]
    fn titles_pluralise_counts() {
        assert_eq!(count_of(1, "seed"), "1 seed");
        assert_eq!(count_of(3, "seed"), "3 seeds");
        assert_eq!(count_of(0, "seed"), "0 seeds");
        assert_eq!(min_max_band_label(3), "band: min–max over 3 seeds");
        assert_eq!(min_max_band_label(1), "band: min–max over 1 seed");
    }

    #[test]
    fn plot_sizes_parse_with_clear_errors() {
        assert_eq!(parse_plot_size("1200x800"), Ok((1200, 800)));
        assert_eq!(parse_plot_size(" 960X600 "), Ok((960, 600)));
        assert_eq!(parse_plot_size("640×480"), Ok((640, 480)));
        for bad in ["1200", "1200x", "x800", "12.5x800", "-1x800", "big"] {
            let e = parse_plot_size(bad).unwrap_err();
            assert!(
                e.starts_with("--plot-size: expected WIDTHxHEIGHT in pixels, e.g. 1200x800"),
                "{bad}: {e}"
            );
        }
        let e = parse_plot_size("50x50").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let o = PlotOptions {
            width: 1200,
            height: 800,
            dpi: 200,
        };
        assert_eq!(o.png_size(), (2400, 1600));
        assert_eq!(PlotOptions::default().png_size(), (960, 600));
    }

    #[test]
    fn dashes_cut_lines_into_pieces() {
        let line = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)];
        assert_eq!(dash(&line, &[]), vec![line.to_vec()]);
        let d = dash(&line, &[4.0, 2.0]);
        // On along the path: 0–4, 6–10 (up to the corner), 12–16, 18–20.
        assert_eq!(d.len(), 4);
        assert_eq!(d[0], vec![(0.0, 0.0), (4.0, 0.0)]);
        assert_eq!(d[1], vec![(6.0, 0.0), (10.0, 0.0), (10.0, 0.0)]);
        assert_eq!(d[2], vec![(10.0, 2.0), (10.0, 6.0)]);
        assert_eq!(d[3], vec![(10.0, 8.0), (10.0, 10.0)]);
    }

    #[test]
    fn series_styles_differ_in_colour_marker_and_dash() {
        for i in 0..6 {
            for j in (i + 1)..6 {
                let (a, b) = (series_style(i), series_style(j));
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1);
                assert_ne!(a.2, b.2);
            }
        }
        assert_eq!(marker_indices(5, false, 0, 3).len(), 5);
        let m = marker_indices(100, false, 1, 3);
        assert!(m.len() >= 9 && m.len() <= 11, "{m:?}");
        assert_ne!(m, marker_indices(100, false, 0, 3));
        assert_eq!(marker_indices(100, true, 1, 3).len(), 100);
    }

    fn sample_plot() -> LinePlot {
        LinePlot {
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
            band_label: Some(min_max_band_label(3)),
        }
    }

    #[test]
    fn writes_png_and_svg_with_text() {
        let dir = std::env::temp_dir().join(format!("wflora-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plot = sample_plot();
        let [png, svg] = plot.write(&dir, "t", &PlotOptions::default()).unwrap();
        let png_bytes = std::fs::read(&png).unwrap();
        assert_eq!(&png_bytes[1..4], b"PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(&png_bytes[16..24], &[0, 0, 3, 192, 0, 0, 2, 88]);
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("<svg") && svg_text.contains("accuracy"));
        assert!(svg_text.contains("band: min–max over 3 seeds"));
        // The round axis has whole-number ticks only.
        assert!(!svg_text.contains(">1.5<"));

        let big = PlotOptions {
            width: 1200,
            height: 800,
            dpi: 150,
        };
        let [png, svg] = plot.write(&dir, "big", &big).unwrap();
        let png_bytes = std::fs::read(&png).unwrap();
        let w = u32::from_be_bytes(png_bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png_bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (1800, 1200));
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("width=\"1200\"") && svg_text.contains("height=\"800\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_large_pngs_are_refused() {
        let opts = PlotOptions {
            width: 10_000,
            height: 10_000,
            dpi: 600,
        };
        assert!(matches!(
            sample_plot().write(&std::env::temp_dir(), "never", &opts),
            Err(PlotError::TooLarge { .. })
        ));
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
            band_label: None,
        };
        let dir = std::env::temp_dir();
        assert!(matches!(
            plot.write(&dir, "never", &PlotOptions::default()),
            Err(PlotError::Empty(_))
        ));
    }
}
