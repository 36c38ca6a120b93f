//! The plot of `rookery bench`: one horizontal bar per pair, Rookery's speed-up over
//! the peer on a log scale (a line at 1: parity), with the per-round range as a
//! whisker; written as `ratios.png` (bitmap) and `ratios.svg`.
//!
//! Text is laid out with ab_glyph from a TrueType font found at run time
//! (`ROOKERY_FONT`, else DejaVu / Liberation from Debian's font packages); no font is
//! compiled in. Without a font there is no plot, and the error says what to install.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::RangedCoordusize;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Pair;

/// Fonts tried in order when `ROOKERY_FONT` is unset.
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
const FONT: &str = "sans-serif";
const WIDTH: u32 = 1100;

/// Writes `ratios.png` and `ratios.svg` into `dir`; pairs without a speed-up are left out.
pub fn write(dir: &Path, pairs: &[Pair]) -> anyhow::Result<()> {
    register_font()?;
    let bars: Vec<&Pair> = pairs.iter().filter(|p| p.speedup.is_some()).collect();
    anyhow::ensure!(
        !bars.is_empty(),
        "no pair has figures on both sides: nothing to plot"
    );
    let size = (WIDTH, 110 + 34 * bars.len() as u32);
    let png = dir.join("ratios.png");
    draw(BitMapBackend::new(&png, size).into_drawing_area(), &bars)
        .map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
    let svg = dir.join("ratios.svg");
    draw(SVGBackend::new(&svg, size).into_drawing_area(), &bars)
        .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))
}

/// Registers the first font found, once per process.
fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = find_font().ok_or(
            "no TrueType font found for the plot: install fonts-dejavu-core or set ROOKERY_FONT=/path/font.ttf",
        )?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Registered fonts live as long as the process: plotters keeps a &'static.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", path.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
    .context("the plot needs a font")
}

fn find_font() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROOKERY_FONT") {
        return Some(PathBuf::from(path));
    }
    FONT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, bars: &[&Pair]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = bars.len();
    let (lo, hi) = x_range(bars);
    let names: Vec<String> = bars.iter().rev().map(|p| bar_name(p)).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Rookery vs the peers: speed-up (× faster, log scale)",
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(400)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format!("{x}×"))
        .x_desc("right of 1: Rookery faster; whiskers: range over the rounds")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()?;
    for (i, p) in bars.iter().rev().enumerate() {
        draw_bar(&mut chart, i, p)?;
    }
    let parity = [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)];
    chart.draw_series(std::iter::once(PathElement::new(
        parity,
        BLACK.stroke_width(2),
    )))?;
    root.present()?;
    Ok(())
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, SegmentedCoord<RangedCoordusize>>>;

fn draw_bar<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, i: usize, p: &Pair) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = p.speedup.unwrap_or(1.0);
    let colour = if x >= 1.0 {
        RGBColor(46, 139, 87)
    } else {
        RGBColor(200, 70, 60)
    };
    let mut bar = Rectangle::new(
        [
            (1.0, SegmentValue::Exact(i)),
            (x, SegmentValue::Exact(i + 1)),
        ],
        colour.mix(0.8).filled(),
    );
    bar.set_margin(5, 5, 0, 0);
    chart.draw_series(std::iter::once(bar))?;
    if let (Some(a), Some(b)) = (p.speedup_min, p.speedup_max) {
        let whisker = [
            (a, SegmentValue::CenterOf(i)),
            (b, SegmentValue::CenterOf(i)),
        ];
        chart.draw_series(std::iter::once(PathElement::new(
            whisker,
            BLACK.stroke_width(2),
        )))?;
    }
    // The value sits past the far end of the bar and its whisker.
    let label = format!("{x:.2}×");
    let (at, anchor) = if x >= 1.0 {
        (x.max(p.speedup_max.unwrap_or(x)) * 1.04, HPos::Left)
    } else {
        (x.min(p.speedup_min.unwrap_or(x)) / 1.04, HPos::Right)
    };
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(anchor, VPos::Center));
    let text = Text::new(label, (at, SegmentValue::CenterOf(i)), style);
    chart.draw_series(std::iter::once(text))?;
    Ok(())
}

fn bar_name(p: &Pair) -> String {
    format!("{} (vs {})", p.label.replace('`', ""), p.peer)
}

/// A log range around every bar, whisker and 1, with room for the labels.
fn x_range(bars: &[&Pair]) -> (f64, f64) {
    let values = bars
        .iter()
        .flat_map(|p| [p.speedup, p.speedup_min, p.speedup_max])
        .flatten()
        .filter(|x| x.is_finite() && *x > 0.0);
    let (lo, hi) = values.fold((1.0_f64, 1.0_f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    (lo / 2.5, hi * 2.2)
}
