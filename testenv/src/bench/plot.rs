//! The benchmark's picture: one cycle with the defaults and one of the negative control,
//! requests per second answered by the old and the new version and failures over time, with the
//! steps (deploy, swap, proxy flip, clean, old pods gone) marked.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{CycleFigures, Scenario, ScenarioRun};
use crate::load::Outcome;

/// Width of a rate bucket, in seconds.
const BUCKET: f64 = 0.5;

pub fn draw(path: &Path, runs: &[ScenarioRun]) -> Result<()> {
    let mut panels: Vec<(&ScenarioRun, &CycleFigures)> = Vec::new();
    for scenario in [Scenario::Defaults, Scenario::Control] {
        if let Some(run) = runs.iter().find(|r| r.scenario == scenario) {
            // The control's most telling cycle is one that dropped requests.
            let cycle = run
                .cycles
                .iter()
                .find(|c| scenario == Scenario::Defaults || c.failed > 0)
                .or(run.cycles.first());
            if let Some(cycle) = cycle {
                panels.push((run, cycle));
            }
        }
    }
    if panels.is_empty() {
        return Err(anyhow!("no cycle to draw"));
    }
    let root = SVGBackend::new(path, (1100, 400 * panels.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (run, cycle)) in areas.iter().zip(panels) {
        draw_cycle(area, run, cycle).map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Requests per second in each bucket from `t0`, for the records `keep` selects.
fn rate(
    run: &ScenarioRun,
    t0: f64,
    buckets: usize,
    keep: impl Fn(&crate::load::Record) -> bool,
) -> Vec<(f64, f64)> {
    let mut counts = vec![0u32; buckets];
    for r in run.records.iter().filter(|r| keep(r)) {
        let at = (r.done() - t0) / BUCKET;
        if at >= 0.0 && (at as usize) < buckets {
            counts[at as usize] += 1;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| ((i as f64 + 0.5) * BUCKET, f64::from(n) / BUCKET))
        .collect()
}

fn draw_cycle(
    area: &DrawingArea<SVGBackend, Shift>,
    run: &ScenarioRun,
    c: &CycleFigures,
) -> Result<(), Box<dyn std::error::Error>> {
    let t = &c.times;
    let t0 = t.deploy - 2.0;
    // The load stops soon after the last cycle: end the picture before its data does.
    let last = run
        .records
        .iter()
        .map(|r| r.done())
        .fold(t.old_gone, f64::max);
    let span = (t.old_gone + 4.0).min(last - BUCKET) - t0;
    let buckets = (span / BUCKET).ceil() as usize;
    let old = rate(run, t0, buckets, |r| {
        r.outcome == Outcome::Ok && r.version.as_deref() == Some(t.old_tag.as_str())
    });
    let new = rate(run, t0, buckets, |r| {
        r.outcome == Outcome::Ok && r.version.as_deref() == Some(t.tag.as_str())
    });
    let failed = rate(run, t0, buckets, |r| r.outcome != Outcome::Ok);
    let top = old
        .iter()
        .chain(&new)
        .chain(&failed)
        .map(|(_, v)| *v)
        .fold(1.0, f64::max)
        * 1.25;

    let caption = format!(
        "{} · helm {} · {} -> {} · {} failed",
        run.scenario_label(),
        run.helm,
        t.old_tag,
        t.tag,
        c.failed
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..span, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since deploy started")
        .y_desc("requests per second")
        .light_line_style(WHITE)
        .draw()?;

    let old_color = RGBColor(31, 119, 180);
    let new_color = RGBColor(44, 160, 44);
    chart
        .draw_series(LineSeries::new(old, old_color.stroke_width(2)))?
        .label(format!("answered by {} (old)", t.old_tag))
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], old_color.stroke_width(2))
        });
    chart
        .draw_series(LineSeries::new(new, new_color.stroke_width(2)))?
        .label(format!("answered by {} (new)", t.tag))
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], new_color.stroke_width(2))
        });
    chart
        .draw_series(LineSeries::new(failed, RED.stroke_width(2)))?
        .label("failed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));

    let mut marks = vec![
        (t.deploy, "deploy"),
        (t.swap, "swap"),
        (t.clean, "clean"),
        (t.old_gone, "old pods gone"),
    ];
    if let Some(flip) = t.flip {
        marks.push((flip, "proxy flip"));
    }
    marks.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, (at, label)) in marks.into_iter().enumerate() {
        let x = at - t0;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, top)],
            BLACK.mix(0.35).stroke_width(1),
        )))?;
        // Alternate heights so marks close in time stay readable.
        let y = top * if i % 2 == 0 { 0.97 } else { 0.90 };
        chart.draw_series(std::iter::once(Text::new(
            label.to_string(),
            (x, y),
            ("sans-serif", 13).into_font().color(&BLACK),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

impl ScenarioRun {
    fn scenario_label(&self) -> &'static str {
        self.scenario.label()
    }
}
