//! The run's picture: test accuracy (top) and test loss (bottom) over elapsed
//! time, as a PNG in the run folder.
//!
//! Text needs a TrueType font from the system (plotters draws glyphs with
//! `ab_glyph`). Without one the plot is still drawn, without any text, and a
//! warning says so: a missing font never fails a run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::metrics::MetricsRow;

/// File name of the plot inside a run folder.
pub const PLOT_FILE: &str = "accuracy.png";

/// Width and height of the plot in pixels.
pub const PLOT_SIZE: (u32, u32) = (1000, 600);

/// Environment variable naming a TrueType font to use instead of the defaults.
pub const FONT_ENV: &str = "HERMES_PLOT_FONT";

/// Where the usual sans-serif fonts live on Debian/Ubuntu, Fedora, Arch and macOS.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Font family name the plot's text uses once a font is registered.
const FAMILY: &str = "sans-serif";

/// What the plot's title says.
#[derive(Debug, Clone)]
pub struct PlotLabels<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// Sync policy name.
    pub policy: &'a str,
    /// Drawn as a dashed line on the accuracy panel when set.
    pub target_accuracy: Option<f64>,
}

/// Draws `<run_dir>/accuracy.png` from the metrics rows (an empty run gives
/// empty axes) and returns its path. The file is replaced atomically, so it
/// can be redrawn while the run goes on.
pub fn write_plot(
    run_dir: &Path,
    labels: &PlotLabels<'_>,
    rows: &[MetricsRow],
) -> anyhow::Result<PathBuf> {
    let text = match registered_font() {
        Some(_) => true,
        None => {
            tracing::warn!(
                "no TrueType font found (tried ${FONT_ENV} and {}); the plot has no text. \
                 Install fonts-dejavu-core to get titles and labels",
                FONT_CANDIDATES[0]
            );
            false
        }
    };
    let path = run_dir.join(PLOT_FILE);
    super::write_png_atomically(&path, |tmp| draw(tmp, labels, rows, text))?;
    Ok(path)
}

/// The font registered for the plot's text (its path), if one was found.
/// Looked up once per process.
pub fn registered_font() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // Registered fonts must live for the whole process; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            match plotters::style::register_font(FAMILY, FontStyle::Normal, bytes) {
                Ok(()) => return Some(path),
                Err(_) => tracing::warn!(font = %path.display(), "not a usable TrueType font"),
            }
        }
        None
    })
    .as_deref()
}

/// Draws the two panels into `path`; `text` says whether a font is available.
fn draw(
    path: &Path,
    labels: &PlotLabels<'_>,
    rows: &[MetricsRow],
    text: bool,
) -> anyhow::Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: cannot draw: {e}", path.display());
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let body = if text {
        let title = format!("hermes-rs run {} (policy {})", labels.run_id, labels.policy);
        root.titled(&title, (FAMILY, 24)).map_err(|e| fail(&e))?
    } else {
        root.clone()
    };
    let panels = body.split_evenly((2, 1));

    let x_max = rows
        .iter()
        .map(|r| r.elapsed_secs)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.02;
    let loss_max = rows
        .iter()
        .map(|r| r.test_loss)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .fold(0.0_f64, f64::max)
        .max(1e-3)
        * 1.1;
    let accuracy: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.elapsed_secs.is_finite() && r.test_accuracy.is_finite())
        .map(|r| (r.elapsed_secs, r.test_accuracy.clamp(0.0, 1.0)))
        .collect();
    let loss: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.elapsed_secs.is_finite() && r.test_loss.is_finite())
        .map(|r| (r.elapsed_secs, r.test_loss.clamp(0.0, loss_max)))
        .collect();

    let accuracy_desc = match labels.target_accuracy {
        Some(t) => format!("test accuracy (dashed: target {:.1}%)", t * 100.0),
        None => "test accuracy".to_string(),
    };
    let panel_specs = [
        (&panels[0], 0.0..1.0, accuracy_desc, accuracy, BLUE),
        (
            &panels[1],
            0.0..loss_max,
            "test loss".to_string(),
            loss,
            RED,
        ),
    ];
    for (area, y_range, y_desc, points, color) in panel_specs {
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if text {
            builder.x_label_area_size(40).y_label_area_size(70);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, y_range)
            .map_err(|e| fail(&e))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("elapsed time (s)")
                .y_desc(y_desc)
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 16));
        } else {
            mesh.x_labels(10).y_labels(10);
        }
        mesh.draw().map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?;
        if let (Some(t), BLUE) = (labels.target_accuracy, color) {
            let t = t.clamp(0.0, 1.0);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, t), (x_max, t)],
                    8,
                    6,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
        }
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::metrics::tests::row;
    use super::*;

    const LABELS: PlotLabels<'static> = PlotLabels {
        run_id: "r1",
        policy: "hermes",
        target_accuracy: Some(0.75),
    };

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.len() > 24, "too short for a PNG");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn writes_a_png_of_the_right_size() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<MetricsRow> = (0..30).map(row).collect();
        let path = write_plot(dir.path(), &LABELS, &rows).unwrap();
        assert_eq!(path, dir.path().join(PLOT_FILE));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), PLOT_SIZE);
        // Only the plot is left in the folder (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn degenerate_runs_still_plot() {
        let dir = tempfile::tempdir().unwrap();
        write_plot(dir.path(), &LABELS, &[]).unwrap();
        let mut odd = row(1);
        odd.test_loss = f64::NAN;
        odd.test_accuracy = f64::INFINITY;
        let path = write_plot(dir.path(), &LABELS, &[odd]).unwrap();
        assert_eq!(png_size(&std::fs::read(path).unwrap()), PLOT_SIZE);
    }

    #[test]
    fn draws_without_a_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.png");
        let rows: Vec<MetricsRow> = (0..10).map(row).collect();
        draw(&path, &LABELS, &rows, false).unwrap();
        assert_eq!(png_size(&std::fs::read(path).unwrap()), PLOT_SIZE);
    }

    #[test]
    fn font_is_found_on_this_machine() {
        // deploy/setup.sh installs fonts-dejavu-core; without it plots lose their text.
        assert!(
            registered_font().is_some(),
            "no font found: install fonts-dejavu-core"
        );
    }
}
