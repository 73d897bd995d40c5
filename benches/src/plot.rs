//! SVG plot of a run: throughput (expected / received packets/s) and latency percentiles over time.

use plotters::prelude::*;

use crate::report::{Point, Report};
use crate::Result;

/// A line of a chart: legend, colour, and the value it plots.
type Line = (&'static str, RGBColor, fn(&Point) -> f64);

/// Renders the report's time series as an SVG document.
pub fn render_svg(r: &Report) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(360);
        let t_max = r
            .series
            .iter()
            .map(|p| p.t_s)
            .fold(0.0f64, f64::max)
            .max(1.0);
        let pps_max = r
            .series
            .iter()
            .map(|p| p.expected_rx_pps.max(p.rx_pps))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let lat_max = r
            .series
            .iter()
            .map(|p| p.p999_us.max(p.p99_us))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;

        let mut c = ChartBuilder::on(&top)
            .caption(
                format!(
                    "{} {}: {} pub x {} pps -> {} players, {} B",
                    r.target,
                    r.target_addr,
                    r.publishers,
                    r.pps_per_publisher,
                    r.players,
                    r.packet_size
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_max, 0f64..pps_max)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("time (s)")
            .y_desc("packets/s received")
            .draw()
            .map_err(|e| e.to_string())?;
        let series: [Line; 2] = [
            ("expected (sent x fan-out)", RED, |p| p.expected_rx_pps),
            ("received", BLUE, |p| p.rx_pps),
        ];
        for (name, color, f) in series {
            c.draw_series(LineSeries::new(
                r.series.iter().map(|p| (p.t_s, f(p))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;

        let mut c = ChartBuilder::on(&bottom)
            .caption("one-way latency", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_max, 0f64..lat_max)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("time (s)")
            .y_desc("microseconds")
            .draw()
            .map_err(|e| e.to_string())?;
        let series: [Line; 3] = [
            ("p50", GREEN, |p| p.p50_us),
            ("p99", MAGENTA, |p| p.p99_us),
            ("p99.9", RED, |p| p.p999_us),
        ];
        for (name, color, f) in series {
            c.draw_series(LineSeries::new(
                r.series.iter().map(|p| (p.t_s, f(p))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes [`render_svg`] to `path`.
pub fn write_svg(path: &std::path::Path, r: &Report) -> Result<()> {
    let svg = render_svg(r)?;
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_panels() {
        let r = Report {
            target: "engine".into(),
            series: (0..10)
                .map(|i| Point {
                    t_s: i as f64,
                    tx_pps: 1000.0,
                    expected_rx_pps: 1000.0,
                    rx_pps: 990.0 + i as f64,
                    p50_us: 50.0,
                    p99_us: 120.0,
                    p999_us: 300.0,
                })
                .collect(),
            ..Default::default()
        };
        let svg = render_svg(&r).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for label in [
            "packets/s",
            "microseconds",
            "expected",
            "received",
            "p99.9",
            "one-way latency",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        assert!(svg.matches("<polyline").count() >= 5);
        // An empty run still renders.
        assert!(render_svg(&Report::default()).unwrap().contains("</svg>"));
    }
}
