//! Inline SVG for the status page: a per-minute line chart of a target's last hour and a
//! timeline of windows with a "now" marker. Pure string building from numbers (no IO, no
//! clock, no JavaScript, nothing fetched from elsewhere: gateways often have no internet).
//! Never panics on empty or extreme input.

use super::html::esc;
use std::fmt::Write as _;

/// One line of a chart: its name (legend, CSS class `s-<name>`) and one value per bucket.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<u64>,
}

const W: f64 = 600.0;
const H: f64 = 140.0;
const PAD_L: f64 = 36.0;
const PAD_B: f64 = 18.0;

/// A line chart of `series` over `buckets` minutes ending now; the y axis is scaled to the
/// largest value (at least 1). `label` is the chart's accessible name.
pub fn lines(label: &str, series: &[Series<'_>], buckets: usize) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = buckets.max(2);
    let x = |i: usize| PAD_L + (W - PAD_L - 4.0) * i as f64 / (n - 1) as f64;
    let y = |v: u64| 4.0 + (H - PAD_B - 4.0) * (1.0 - v as f64 / max as f64);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\">\
         <line class=\"axis\" x1=\"{PAD_L}\" y1=\"{b}\" x2=\"{W}\" y2=\"{b}\"/>\
         <text class=\"tick\" x=\"2\" y=\"12\">{max}</text><text class=\"tick\" x=\"2\" y=\"{b}\">0</text>\
         <text class=\"tick\" x=\"{PAD_L}\" y=\"{H}\">-60 min</text><text class=\"tick\" x=\"{e}\" y=\"{H}\">now</text>",
        esc(label),
        b = H - PAD_B,
        e = W - 28.0,
    );
    for ser in series {
        let pts: Vec<String> = ser
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let total: u64 = ser.values.iter().sum();
        let _ = write!(
            s,
            "<polyline class=\"s-{name}\" data-series=\"{name}\" data-total=\"{total}\" fill=\"none\" points=\"{}\"><title>{name}: {total} in the last hour</title></polyline>",
            pts.join(" "),
            name = esc(ser.name),
        );
    }
    s.push_str("</svg>");
    s
}

/// One bar of a timeline: a name, a start and an end (Unix seconds; `None` = open-ended) and
/// a CSS state class (`active`, `scheduled`, `ended`, `always`).
pub struct Span<'a> {
    pub name: &'a str,
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub state: &'a str,
}

/// A timeline of `spans` around `now`, with a vertical "now" marker (class `now-marker`). The
/// visible range covers every bound plus a margin, and at least a day on each side of now.
pub fn timeline(spans: &[Span<'_>], now: i64) -> String {
    let bounds = spans.iter().flat_map(|s| [s.from, s.until]).flatten();
    let lo = bounds.clone().chain([now - 86_400]).min().unwrap_or(now);
    let hi = bounds.chain([now + 86_400]).max().unwrap_or(now);
    // In f64: any i64 bounds, no overflow.
    let (lo, hi) = (lo as f64, hi as f64);
    let margin = ((hi - lo) / 20.0).max(3600.0);
    let (lo, hi) = (lo - margin, hi + margin);
    let span = (hi - lo).max(1.0);
    let left = 110.0;
    let x = |t: f64| left + (W - left - 4.0) * ((t - lo) / span);
    let row = 22.0;
    let h = 24.0 + row * spans.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"timeline\" role=\"img\" aria-label=\"waves timeline\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\">"
    );
    for (i, sp) in spans.iter().enumerate() {
        let top = 4.0 + row * i as f64;
        let (a, b) = (
            sp.from.map_or(x(lo), |t| x(t as f64)),
            sp.until.map_or(x(hi), |t| x(t as f64)),
        );
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"2\" y=\"{ty}\">{name}</text>\
             <rect class=\"wave {state}\" data-wave=\"{name}\" x=\"{a:.1}\" y=\"{top}\" width=\"{w:.1}\" height=\"16\" rx=\"3\"><title>{name}: {from} → {until}</title></rect>",
            ty = top + 12.0,
            name = esc(sp.name),
            state = esc(sp.state),
            w = (b - a).max(2.0),
            from = sp.from.map_or("always".into(), crate::time::rfc3339_secs),
            until = sp.until.map_or("open".into(), crate::time::rfc3339_secs),
        );
    }
    let nx = x(now as f64);
    let _ = write!(
        s,
        "<line class=\"now-marker\" x1=\"{nx:.1}\" y1=\"0\" x2=\"{nx:.1}\" y2=\"{h}\"/>\
         <text class=\"tick now-label\" x=\"{tx:.1}\" y=\"{ly}\">now</text></svg>",
        tx = nx + 3.0,
        ly = h - 4.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_scale_and_label() {
        let svg = lines(
            "new <t>",
            &[
                Series {
                    name: "delivered",
                    values: vec![0, 5, 10],
                },
                Series {
                    name: "bounced",
                    values: vec![],
                },
            ],
            3,
        );
        assert!(svg.contains("aria-label=\"new &lt;t&gt;\""));
        assert!(svg.contains("data-series=\"delivered\" data-total=\"15\""));
        assert!(svg.contains("data-series=\"bounced\" data-total=\"0\""));
        assert!(svg.contains(">10</text>"), "y axis scaled to the max");
        // Empty input still gives a valid chart.
        assert!(lines("x", &[], 0).ends_with("</svg>"));
    }

    #[test]
    fn timeline_marks_now_inside_the_range() {
        let now = 1_800_000_000;
        let svg = timeline(
            &[
                Span {
                    name: "wave-1",
                    from: Some(now + 3600),
                    until: None,
                    state: "scheduled",
                },
                Span {
                    name: "pilot",
                    from: None,
                    until: None,
                    state: "always",
                },
            ],
            now,
        );
        assert!(svg.contains("class=\"now-marker\""));
        assert!(svg.contains("data-wave=\"wave-1\""));
        assert!(svg.contains("class=\"wave always\""));
        assert!(timeline(&[], now).contains("now-marker"));
        // Extreme bounds do not overflow.
        let _ = timeline(
            &[Span {
                name: "x",
                from: Some(i64::MIN / 2),
                until: Some(i64::MAX / 2),
                state: "active",
            }],
            now,
        );
    }
}
