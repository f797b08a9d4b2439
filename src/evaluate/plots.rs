//! Plots in the style physicists use (ROOT / mplhep): unit-area histograms of MC (filled, with
//! `sqrt(N)` error bars) and generated events (step line) with a generated/MC ratio panel, a
//! grid of all features, the correlation-difference heatmap, the C2ST score distributions and
//! training curves. Every figure is drawn once per backend (PNG bitmap and SVG) and written
//! atomically (temporary file in the target directory + rename).
//!
//! Text uses the embedded DejaVu Sans font (`assets/DejaVuSans.ttf`, registered once with
//! plotters as the `sans-serif` family), so no system fonts are needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{EvalError, FeatureHistogram};

static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static FONT_OK: OnceLock<bool> = OnceLock::new();

/// MC fill colour (light blue).
const MC_FILL: RGBColor = RGBColor(158, 202, 225);
/// MC line / error-bar colour (dark blue).
const MC_LINE: RGBColor = RGBColor(31, 90, 160);
/// Generated line colour (red).
const GEN_LINE: RGBColor = RGBColor(214, 39, 40);
const FONT: &str = "sans-serif";

/// Registers the embedded font as plotters' `sans-serif` family (once per process).
pub fn ensure_font() -> Result<(), EvalError> {
    let ok = *FONT_OK.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(EvalError::Plot(
            "embedded font could not be registered".into(),
        ))
    }
}

fn perr<E: std::fmt::Debug>(e: E) -> EvalError {
    EvalError::Plot(format!("{e:?}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (see [`crate::fsutil::atomic_write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    crate::fsutil::atomic_write(path, bytes).map_err(io_err(path))
}

/// A figure that can be drawn on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError>;
}

/// Draws `fig` into a `size` PNG at `png` and, when given, an SVG at `svg` (both atomic).
fn save_figure<F: Figure>(
    fig: &F,
    size: (u32, u32),
    png: &Path,
    svg: Option<&Path>,
) -> Result<(), EvalError> {
    ensure_font()?;
    let tmp = crate::fsutil::temp_file_next_to(png, ".tmp.png").map_err(io_err(png))?;
    {
        let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        fig.draw(&root)?;
        root.present().map_err(perr)?;
    }
    tmp.persist(png).map_err(|e| EvalError::Io {
        path: png.to_path_buf(),
        source: e.error,
    })?;
    if let Some(svg) = svg {
        let mut s = String::new();
        {
            let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
            root.fill(&WHITE).map_err(perr)?;
            fig.draw(&root)?;
            root.present().map_err(perr)?;
        }
        write_atomic(svg, s.as_bytes())?;
    }
    Ok(())
}

fn font(px: f64) -> TextStyle<'static> {
    (FONT, px).into_font().color(&BLACK)
}

/// Compact number format for tick labels.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.into() }
    }
}

/// Unit-area densities `n_i / (N w_i)` and errors `sqrt(n_i) / (N w_i)`.
fn densities(counts: &[f64], edges: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n: f64 = counts.iter().sum::<f64>().max(1.0);
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let w = (edges[i + 1] - edges[i]).max(1e-300);
            (c / (n * w), c.sqrt() / (n * w))
        })
        .unzip()
}

fn step_points(edges: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(2 * y.len() + 2);
    pts.push((edges[0], 0.0));
    for (i, &v) in y.iter().enumerate() {
        pts.push((edges[i], v));
        pts.push((edges[i + 1], v));
    }
    pts.push((edges[y.len()], 0.0));
    pts
}

/// One feature: main panel (unit-area histograms) over a ratio panel, filling `area`.
/// `s` scales fonts and line widths (1 for a 1200 x 900 figure).
fn draw_feature_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    h: &FeatureHistogram,
    annotation: Option<&str>,
    s: f64,
) -> Result<(), EvalError> {
    let nb = h.reference.len();
    if nb == 0 || h.edges.len() != nb + 1 || h.generated.len() != nb {
        return Err(EvalError::Shape(format!(
            "inconsistent histogram for {name}"
        )));
    }
    let (x0, x1) = (h.edges[0], h.edges[nb]);
    let (dr, er) = densities(&h.reference, &h.edges);
    let (dg, _) = densities(&h.generated, &h.edges);
    let ymax = dr
        .iter()
        .zip(&er)
        .map(|(d, e)| d + e)
        .chain(dg.iter().copied())
        .fold(0.0, f64::max)
        .max(1e-300)
        * 1.35;
    let (_, height) = area.dim_in_pixel();
    let (top, bottom) = area.split_vertically((height as f64 * 0.70) as u32);
    let ylab = (95.0 * s) as u32;
    let lw = (2.0 * s).max(1.0) as u32;

    let mut chart = ChartBuilder::on(&top)
        .margin_top((20.0 * s) as u32)
        .margin_bottom((8.0 * s) as u32)
        .margin_right((30.0 * s) as u32)
        .margin_left((10.0 * s) as u32)
        .x_label_area_size(0)
        .y_label_area_size(ylab)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| if *v == 0.0 { String::new() } else { tick(*v) })
        .y_desc("normalised entries")
        .axis_desc_style(font(26.0 * s))
        .label_style(font(22.0 * s))
        .axis_style(BLACK.stroke_width(lw))
        .draw()
        .map_err(perr)?;
    chart
        .draw_series(dr.iter().enumerate().map(|(i, &v)| {
            Rectangle::new([(h.edges[i], 0.0), (h.edges[i + 1], v)], MC_FILL.filled())
        }))
        .map_err(perr)?
        .label("MC")
        .legend(move |(x, y)| {
            Rectangle::new(
                [
                    (x, y - (8.0 * s) as i32),
                    (x + (30.0 * s) as i32, y + (8.0 * s) as i32),
                ],
                MC_FILL.filled(),
            )
        });
    chart
        .draw_series(LineSeries::new(
            step_points(&h.edges, &dr),
            MC_LINE.stroke_width(lw),
        ))
        .map_err(perr)?;
    chart
        .draw_series((0..nb).filter(|&i| er[i] > 0.0).map(|i| {
            let xc = 0.5 * (h.edges[i] + h.edges[i + 1]);
            PathElement::new(
                vec![(xc, dr[i] - er[i]), (xc, dr[i] + er[i])],
                MC_LINE.stroke_width(lw),
            )
        }))
        .map_err(perr)?;
    chart
        .draw_series(LineSeries::new(
            step_points(&h.edges, &dg),
            GEN_LINE.stroke_width(lw + 1),
        ))
        .map_err(perr)?
        .label("generated")
        .legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + (30.0 * s) as i32, y)],
                GEN_LINE.stroke_width(lw + 1),
            )
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin((12.0 * s) as u32)
        .legend_area_size((40.0 * s) as u32)
        .label_font(font(22.0 * s))
        .border_style(BLACK.stroke_width(1))
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(perr)?;
    if let Some(text) = annotation {
        let (px, py) = chart.backend_coord(&(x0, ymax));
        top.draw(&Text::new(
            text.to_string(),
            (px + (15.0 * s) as i32, py + (12.0 * s) as i32),
            font(20.0 * s),
        ))
        .map_err(perr)?;
    }

    // ratio panel
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.0), (x1, ymax)],
            BLACK.stroke_width(lw),
        )))
        .map_err(perr)?;
    let mut rc = ChartBuilder::on(&bottom)
        .margin_top((8.0 * s) as u32)
        .margin_right((30.0 * s) as u32)
        .margin_left((10.0 * s) as u32)
        .margin_bottom((10.0 * s) as u32)
        .x_label_area_size((70.0 * s) as u32)
        .y_label_area_size(ylab)
        .build_cartesian_2d(x0..x1, 0.5..1.5)
        .map_err(perr)?;
    rc.configure_mesh()
        .disable_mesh()
        .x_labels(8)
        .y_labels(11)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v: &f64| {
            // label 0.6, 0.8, ..., 1.4 only; the other ticks act as minor ticks
            let r = (v * 10.0).round() as i64;
            let step = if s < 0.8 { 4 } else { 2 };
            if (r - 10) % step == 0 && (6..=14).contains(&r) {
                format!("{v:.1}")
            } else {
                String::new()
            }
        })
        .x_desc(name)
        .y_desc("gen/MC")
        .axis_desc_style(font(26.0 * s))
        .label_style(font(22.0 * s))
        .axis_style(BLACK.stroke_width(lw))
        .draw()
        .map_err(perr)?;
    rc.draw_series(LineSeries::new(
        vec![(x0, 1.0), (x1, 1.0)],
        RGBColor(120, 120, 120).stroke_width(lw),
    ))
    .map_err(perr)?;
    let nr: f64 = h.reference.iter().sum::<f64>().max(1.0);
    let ng: f64 = h.generated.iter().sum::<f64>().max(1.0);
    let mut pts = Vec::new();
    let mut bars = Vec::new();
    for i in 0..nb {
        let (r, g) = (h.reference[i], h.generated[i]);
        if r <= 0.0 || g <= 0.0 {
            continue;
        }
        let ratio = (g / ng) / (r / nr);
        let err = ratio * (1.0 / g + 1.0 / r).sqrt();
        let xc = 0.5 * (h.edges[i] + h.edges[i + 1]);
        let (lo, hi) = ((ratio - err).max(0.5), (ratio + err).min(1.5));
        if lo < hi {
            bars.push(PathElement::new(
                vec![(xc, lo), (xc, hi)],
                BLACK.stroke_width(lw),
            ));
        }
        if (0.5..=1.5).contains(&ratio) {
            pts.push(Circle::new(
                (xc, ratio),
                (4.0 * s).max(2.0) as i32,
                BLACK.filled(),
            ));
        }
    }
    rc.draw_series(bars).map_err(perr)?;
    rc.draw_series(pts).map_err(perr)?;
    rc.draw_series(std::iter::once(Rectangle::new(
        [(x0, 0.5), (x1, 1.5)],
        BLACK.stroke_width(lw),
    )))
    .map_err(perr)?;
    Ok(())
}

struct FeatureFigure<'a> {
    name: &'a str,
    hist: &'a FeatureHistogram,
    annotation: Option<&'a str>,
}

impl Figure for FeatureFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError> {
        draw_feature_panel(root, self.name, self.hist, self.annotation, 1.0)
    }
}

/// One feature's unit-area histograms (MC filled with `sqrt(N)` error bars, generated as a
/// step line) and a generated/MC ratio panel (0.5-1.5), as a 1200 x 900 PNG and an SVG.
pub fn plot_feature(
    name: &str,
    hist: &FeatureHistogram,
    annotation: Option<&str>,
    png: &Path,
    svg: Option<&Path>,
) -> Result<(), EvalError> {
    let fig = FeatureFigure {
        name,
        hist,
        annotation,
    };
    save_figure(&fig, (1200, 900), png, svg)
}

struct GridFigure<'a> {
    names: &'a [String],
    hists: &'a [FeatureHistogram],
    cols: usize,
}

impl Figure for GridFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError> {
        let rows = self.names.len().div_ceil(self.cols);
        let cells = root.split_evenly((rows, self.cols));
        for ((cell, name), hist) in cells.iter().zip(self.names).zip(self.hists) {
            draw_feature_panel(cell, name, hist, None, 0.65)?;
        }
        Ok(())
    }
}

/// All features on one page (a grid of 660 x 520 cells with main and ratio panels).
pub fn plot_feature_grid(
    names: &[String],
    hists: &[FeatureHistogram],
    png: &Path,
    svg: Option<&Path>,
) -> Result<(), EvalError> {
    if names.is_empty() || names.len() != hists.len() {
        return Err(EvalError::Shape(
            "feature grid needs one histogram per name".into(),
        ));
    }
    let cols = (names.len() as f64).sqrt().ceil() as usize;
    let rows = names.len().div_ceil(cols);
    let fig = GridFigure { names, hists, cols };
    save_figure(&fig, (660 * cols as u32, 520 * rows as u32), png, svg)
}

/// Diverging colour map: -1 -> blue, 0 -> white, +1 -> red.
fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let (end, a) = if t < 0.0 {
        ((33.0, 102.0, 172.0), -t)
    } else {
        ((178.0, 24.0, 43.0), t)
    };
    let mix = |e: f64| (255.0 + (e - 255.0) * a).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

struct CorrFigure<'a> {
    names: &'a [String],
    diff: &'a [f64],
    title: &'a str,
}

impl Figure for CorrFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError> {
        let d = self.names.len();
        let (w, h) = root.dim_in_pixel();
        let (w, h) = (w as i32, h as i32);
        let label_style = font(if d > 20 { 16.0 } else { 22.0 });
        let max_label = self
            .names
            .iter()
            .map(|n| root.estimate_text_size(n, &label_style).map(|s| s.0 as i32))
            .collect::<Result<Vec<_>, _>>()
            .map_err(perr)?
            .into_iter()
            .max()
            .unwrap_or(0);
        let title_h = 70;
        let left = max_label + 25;
        let bottom = max_label + 25;
        let cbar_w = 170;
        let side = (w - left - cbar_w - 20)
            .min(h - title_h - bottom - 10)
            .max(d as i32);
        let cell = side / d as i32;
        let side = cell * d as i32;
        let (ox, oy) = (left, title_h);
        let m = self.diff.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let scale = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
            .into_iter()
            .find(|&s| s >= m)
            .unwrap_or(2.0);

        root.draw(&Text::new(
            self.title.to_string(),
            (w / 2, 20),
            font(30.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(perr)?;
        for i in 0..d {
            for j in 0..d {
                let v = self.diff[i * d + j];
                let (x, y) = (ox + j as i32 * cell, oy + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    diverging(v / scale).filled(),
                ))
                .map_err(perr)?;
                if d <= 12 && cell >= 50 {
                    let txt_col = if (v / scale).abs() > 0.6 {
                        WHITE
                    } else {
                        BLACK
                    };
                    let digits = if scale <= 0.05 { 3 } else { 2 };
                    root.draw(&Text::new(
                        format!("{v:+.digits$}"),
                        (x + cell / 2, y + cell / 2),
                        font((cell as f64 / 4.0).min(22.0))
                            .color(&txt_col)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    ))
                    .map_err(perr)?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(ox, oy), (ox + side, oy + side)],
            BLACK.stroke_width(2),
        ))
        .map_err(perr)?;
        for (k, name) in self.names.iter().enumerate() {
            let c = k as i32 * cell + cell / 2;
            root.draw(&Text::new(
                name.clone(),
                (ox - 10, oy + c),
                label_style.pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(perr)?;
            // x labels read bottom-to-top, ending just below the matrix
            root.draw(&Text::new(
                name.clone(),
                (ox + c, oy + side + 10),
                label_style
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(perr)?;
        }
        // colour bar
        let (bx, bw) = (ox + side + 40, 35);
        let steps = 200;
        for k in 0..steps {
            let t = 1.0 - 2.0 * (k as f64 + 0.5) / steps as f64;
            let y0 = oy + (k * side) / steps;
            let y1 = oy + ((k + 1) * side) / steps;
            root.draw(&Rectangle::new(
                [(bx, y0), (bx + bw, y1)],
                diverging(t).filled(),
            ))
            .map_err(perr)?;
        }
        root.draw(&Rectangle::new(
            [(bx, oy), (bx + bw, oy + side)],
            BLACK.stroke_width(1),
        ))
        .map_err(perr)?;
        for k in 0..=4 {
            let t = 1.0 - k as f64 / 2.0;
            let y = oy + (k * side) / 4;
            root.draw(&PathElement::new(
                vec![(bx + bw, y), (bx + bw + 8, y)],
                BLACK,
            ))
            .map_err(perr)?;
            root.draw(&Text::new(
                if t == 0.0 {
                    "0".to_string()
                } else {
                    format!("{:+}", t * scale)
                },
                (bx + bw + 12, y),
                font(20.0).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(perr)?;
        }
        Ok(())
    }
}

/// Heatmap of `corr(gen) - corr(ref)` (row-major `d x d`) with feature names and a colour bar
/// (symmetric range, blue = lower correlation in generated, red = higher).
pub fn plot_corr_diff(
    names: &[String],
    diff: &[f64],
    png: &Path,
    svg: Option<&Path>,
) -> Result<(), EvalError> {
    let d = names.len();
    if d == 0 || diff.len() != d * d {
        return Err(EvalError::Shape(
            "correlation difference must be d x d".into(),
        ));
    }
    let fig = CorrFigure {
        names,
        diff,
        title: "corr(generated) − corr(MC)",
    };
    let size = (1200 + 20 * d.saturating_sub(20) as u32).min(3000);
    save_figure(&fig, (size, size * 10 / 11), png, svg)
}

struct ScoreFigure<'a> {
    mc: &'a [f64],
    generated: &'a [f64],
    title: String,
}

impl Figure for ScoreFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError> {
        let all = self
            .mc
            .iter()
            .chain(self.generated)
            .copied()
            .filter(|v| v.is_finite());
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            let pad = 0.02 * (hi - lo);
            (lo - pad, hi + pad)
        } else {
            (0.0, 1.0)
        };
        let nb = 40;
        let edges: Vec<f64> = (0..=nb)
            .map(|i| lo + (hi - lo) * i as f64 / nb as f64)
            .collect();
        let hist = FeatureHistogram {
            reference: super::metrics::histogram(self.mc, &edges),
            generated: super::metrics::histogram(self.generated, &edges),
            edges,
        };
        root.draw(&Text::new(
            self.title.clone(),
            (root.dim_in_pixel().0 as i32 / 2, 12),
            font(28.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(perr)?;
        let (_, body) = root.split_vertically(50);
        draw_feature_panel(&body, "classifier score P(generated | x)", &hist, None, 1.0)
    }
}

/// Distributions of the out-of-fold C2ST classifier scores for MC and generated events.
pub fn plot_scores(
    scores_mc: &[f64],
    scores_gen: &[f64],
    auc: f64,
    auc_err: f64,
    png: &Path,
    svg: Option<&Path>,
) -> Result<(), EvalError> {
    let fig = ScoreFigure {
        mc: scores_mc,
        generated: scores_gen,
        title: format!("C2ST classifier scores (AUC = {auc:.4} ± {auc_err:.4})"),
    };
    save_figure(&fig, (1200, 950), png, svg)
}

struct CurveFigure<'a> {
    history: &'a [(usize, f64, f64)],
}

impl Figure for CurveFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), EvalError> {
        let h = self.history;
        let e0 = h.iter().map(|r| r.0).min().unwrap_or(0) as f64;
        let e1 = (h.iter().map(|r| r.0).max().unwrap_or(1) as f64).max(e0 + 1.0);
        let vals = h.iter().flat_map(|r| [r.1, r.2]).filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() {
            let pad = 0.05 * (hi - lo).max(1e-3);
            (lo - pad, hi + pad)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(root)
            .caption("Training history", font(30.0))
            .margin(25)
            .x_label_area_size(70)
            .y_label_area_size(100)
            .build_cartesian_2d(e0..e1, lo..hi)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .x_desc("epoch")
            .y_desc("negative log-likelihood")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .axis_desc_style(font(26.0))
            .label_style(font(22.0))
            .axis_style(BLACK.stroke_width(2))
            .draw()
            .map_err(perr)?;
        for (label, col, k) in [("train", MC_LINE, 1usize), ("validation", GEN_LINE, 2)] {
            let pts: Vec<(f64, f64)> = h
                .iter()
                .map(|r| (r.0 as f64, if k == 1 { r.1 } else { r.2 }))
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(3)))
                .map_err(perr)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 30, y)], col.stroke_width(3))
                });
            if pts.len() <= 60 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                    .map_err(perr)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(15)
            .legend_area_size(45)
            .label_font(font(22.0))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(perr)?;
        Ok(())
    }
}

/// Training and validation NLL per epoch (`history` rows: epoch, train NLL, val NLL) as a
/// 1200 x 900 PNG (written atomically).
pub fn plot_training_curves(
    history: &[(usize, f64, f64)],
    path_png: &Path,
) -> Result<(), EvalError> {
    if history.is_empty() {
        return Err(EvalError::TooFewEvents("training history is empty".into()));
    }
    save_figure(&CurveFigure { history }, (1200, 900), path_png, None)
}
