//! `curves.png` like the write-up's figures: test accuracy over steps above, training loss
//! below, one colour per series (per seed, say).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One curve pair: training losses and test accuracies by step.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub losses: Vec<(usize, f64)>,
    pub accuracies: Vec<(usize, f64)>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the two panels into a 900×800 PNG at `path`; `accuracy` names the upper panel's
/// figure ("test accuracy", "training accuracy").
pub fn draw_curves(path: &Path, title: &str, accuracy: &str, series: &[Series]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let root = BitMapBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);

    let max_step = series
        .iter()
        .flat_map(|s| s.losses.iter().chain(&s.accuracies).map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let finite = |v: &f64| v.is_finite();
    let max_loss = series
        .iter()
        .flat_map(|s| s.losses.iter().map(|p| p.1))
        .filter(finite)
        .fold(0.0f64, f64::max)
        .max(1e-3);

    let mut acc_chart = ChartBuilder::on(&top)
        .caption(format!("{title}: {accuracy}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..max_step, 0f64..1f64)
        .map_err(|e| err(&e))?;
    acc_chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        acc_chart
            .draw_series(LineSeries::new(s.accuracies.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        acc_chart
            .draw_series(s.accuracies.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    if series.len() > 1 {
        acc_chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
    }

    let mut loss_chart = ChartBuilder::on(&bottom)
        .caption(format!("{title}: training loss"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..max_step, 0f64..max_loss * 1.05)
        .map_err(|e| err(&e))?;
    loss_chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        loss_chart
            .draw_series(LineSeries::new(
                s.losses.iter().copied().filter(|p| p.1.is_finite()),
                colour.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let s = Series {
            label: "seed 1".into(),
            losses: (1..=50).map(|i| (i, 2.0 / i as f64)).collect(),
            accuracies: vec![(10, 0.2), (50, 0.6)],
        };
        draw_curves(&path, "test", "test accuracy", &[s.clone(), s]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
