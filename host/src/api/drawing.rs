//! A target's last hour drawn for the dashboard, as inline SVG (no script,
//! no external asset): its status as a strip and its check durations as a
//! sparkline, each with the same in words beside it. Colour is never the
//! only carrier: a status's bar also has its own height (a thin line for
//! OK, up to the full height for CRITICAL, a hollow box for UNKNOWN), each
//! stretch has a tooltip, and the words say what the strip shows.

use std::fmt::Write as _;
use std::time::Duration;

use healer_plugin_sdk::Status;

use crate::timeline::TimelineView;

/// The drawings' width in SVG units (they scale to their box).
const WIDTH: f64 = 240.0;

/// The strip's columns: one per unit.
const COLUMNS: usize = 240;

const STRIP_HEIGHT: f64 = 18.0;
const SPARK_HEIGHT: f64 = 22.0;

/// The strip and the sparkline of `timeline`, with their words.
pub fn last_hour(timeline: &TimelineView) -> String {
    let mut html = String::with_capacity(2048);
    let said = in_words(timeline);
    let _ = write!(
        html,
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {STRIP_HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{said}\"><title>{said}</title><rect class=\"lane\" x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{STRIP_HEIGHT}\"/>"
    );
    // From the hour's start, or from the first check when the target is
    // younger than that (its strip is then its whole life, not a sliver).
    let start = timeline
        .segments
        .iter()
        .find(|segment| segment.status.is_some())
        .map_or(timeline.from, |segment| segment.from.max(timeline.from));
    let span = timeline.to.since(start).as_secs_f64().max(1.0);
    // One column per unit, each showing the worst status within it: a
    // flap of a second still shows, and a target that flapped all hour
    // draws at most as many bars as there are columns.
    let mut columns = [None::<Status>; COLUMNS];
    for segment in &timeline.segments {
        let Some(status) = segment.status else {
            continue;
        };
        let x0 = WIDTH * segment.from.since(start).as_secs_f64() / span;
        let x1 = WIDTH * segment.to.since(start).as_secs_f64() / span;
        let first = (x0.floor() as usize).min(COLUMNS - 1);
        let last = (x1.ceil() as usize).clamp(first + 1, COLUMNS);
        for column in &mut columns[first..last] {
            if column.is_none_or(|was| crate::board::rank(status) > crate::board::rank(was)) {
                *column = Some(status);
            }
        }
    }
    let per_column = span / WIDTH;
    let mut column = 0;
    while column < COLUMNS {
        let Some(status) = columns[column] else {
            column += 1;
            continue;
        };
        let run = columns[column..]
            .iter()
            .take_while(|other| **other == Some(status))
            .count();
        let (y, height) = bar(status);
        let from = start + Duration::from_secs_f64(column as f64 * per_column);
        let lasted = Duration::from_secs_f64(run as f64 * per_column);
        let _ = write!(
            html,
            "<rect class=\"seg {class}\" x=\"{x:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"{height}\"><title>{status} from {from} for about {lasted}</title></rect>",
            class = class(status),
            x = column as f64,
            width = run as f64,
            status = status.as_str(),
            lasted = humantime::format_duration(round(lasted)),
        );
        column += run;
    }
    html.push_str("</svg>");
    let _ = write!(html, "<div class=\"muted said\">{said}</div>");
    sparkline(&mut html, &timeline.durations_us);
    html
}

/// A status's CSS class (its colour on the page).
pub(super) fn class(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Critical => "critical",
        Status::Unknown => "unknown",
    }
}

/// Where a status's bar lies in the strip: its own height for each.
fn bar(status: Status) -> (f64, f64) {
    match status {
        Status::Ok => (7.0, 4.0),
        Status::Warning => (4.0, 10.0),
        Status::Unknown => (2.0, 14.0),
        Status::Critical => (0.0, STRIP_HEIGHT),
    }
}

/// "last hour: OK 58 min, CRITICAL 2 min; 3 changes".
fn in_words(timeline: &TimelineView) -> String {
    let mut spent: Vec<(Status, Duration)> = Vec::new();
    for segment in &timeline.segments {
        let Some(status) = segment.status else {
            continue;
        };
        let lasted = segment.to.since(segment.from);
        match spent.iter_mut().find(|(s, _)| *s == status) {
            Some((_, total)) => *total += lasted,
            None => spent.push((status, lasted)),
        }
    }
    if spent.is_empty() {
        return "last hour: not checked yet".to_owned();
    }
    spent.sort_by_key(|(status, _)| std::cmp::Reverse(crate::board::rank(*status)));
    let parts: Vec<String> = spent
        .iter()
        .map(|(status, lasted)| format!("{} {}", status.as_str(), short(*lasted)))
        .collect();
    let changes = timeline.segments.len().saturating_sub(1) + timeline.changes_dropped as usize;
    format!(
        "last hour: {}; {changes} change{}",
        parts.join(", "),
        if changes == 1 { "" } else { "s" }
    )
}

/// The durations as a line, broken where a minute had no check, and in
/// words: the latest and the longest.
fn sparkline(html: &mut String, durations: &[Option<u64>]) {
    let max = durations.iter().flatten().copied().max().unwrap_or(0);
    let latest = durations.iter().rev().flatten().next().copied();
    let said = match latest {
        Some(latest) => format!(
            "checks took {} (longest minute {})",
            micros(latest),
            micros(max)
        ),
        None => "no check timed in the last hour".to_owned(),
    };
    let _ = write!(
        html,
        "<svg class=\"sparkline\" viewBox=\"0 0 {WIDTH} {SPARK_HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{said}\"><title>{said}</title>"
    );
    // From the first minute with checks (a young target's line is not
    // squeezed into the hour's last minutes).
    let first = durations.iter().position(Option::is_some).unwrap_or(0);
    let durations = &durations[first..];
    let step = WIDTH / durations.len().saturating_sub(1).max(1) as f64;
    let mut line: Vec<String> = Vec::new();
    let flush = |line: &mut Vec<String>, html: &mut String| {
        match line.len() {
            0 => {}
            // A lone minute: a dot, not an invisible line.
            1 => {
                let (x, y) = line[0].split_once(',').unwrap_or(("0", "0"));
                let _ = write!(html, "<circle cx=\"{x}\" cy=\"{y}\" r=\"1.5\"/>");
            }
            _ => {
                let _ = write!(html, "<polyline points=\"{}\"/>", line.join(" "));
            }
        }
        line.clear();
    };
    for (index, duration) in durations.iter().enumerate() {
        match duration {
            Some(us) => {
                let y =
                    SPARK_HEIGHT - 2.0 - (SPARK_HEIGHT - 4.0) * (*us as f64) / (max.max(1) as f64);
                line.push(format!("{:.1},{y:.1}", index as f64 * step));
            }
            None => flush(&mut line, html),
        }
    }
    flush(&mut line, html);
    let _ = write!(html, "</svg><div class=\"muted said\">{said}</div>");
}

fn round(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

/// `58 min`, `40 s`.
fn short(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// `850 µs`, `1.2 ms`, `3.4 s`.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1_000.0),
        _ => format!("{:.1} s", us as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Wall;
    use crate::timeline::Segment;

    fn at(minutes: u64) -> Wall {
        Wall::from_millis(1_800_000_000_000 + minutes * 60_000)
    }

    fn flapped() -> TimelineView {
        let mut durations = vec![None; 60];
        durations[58] = Some(1_200);
        durations[59] = Some(4_000);
        TimelineView {
            from: at(0),
            to: at(60),
            segments: vec![
                Segment {
                    from: at(0),
                    to: at(30),
                    status: Some(Status::Ok),
                },
                Segment {
                    from: at(30),
                    to: at(32),
                    status: Some(Status::Critical),
                },
                Segment {
                    from: at(32),
                    to: at(60),
                    status: Some(Status::Ok),
                },
            ],
            changes_dropped: 0,
            durations_us: durations,
        }
    }

    #[test]
    fn the_strip_says_in_words_what_its_colours_and_heights_show() {
        let html = last_hour(&flapped());

        assert!(
            html.contains("last hour: CRITICAL 2 min, OK 58 min; 2 changes"),
            "{html}"
        );
        assert!(
            html.contains("class=\"seg critical\" x=\"120.0\" y=\"0\" width=\"8.0\" height=\"18\""),
            "{html}"
        );
        assert!(
            html.contains("class=\"seg ok\" x=\"0.0\" y=\"7\""),
            "{html}"
        );
        assert!(html.contains("<title>CRITICAL from "), "{html}");
        assert_eq!(html.matches("<rect class=\"seg").count(), 3, "{html}");
    }

    #[test]
    fn the_sparkline_draws_the_minutes_with_checks_and_says_the_latest_and_longest() {
        let html = last_hour(&flapped());

        assert!(html.contains("<polyline points=\"0.0,"), "{html}");
        assert!(
            html.contains(" 240.0,2.0\"/>"),
            "the longest minute at the top: {html}"
        );
        assert!(
            html.contains("checks took 4.0 ms (longest minute 4.0 ms)"),
            "{html}"
        );
    }

    #[test]
    fn a_young_targets_strip_spans_its_life_not_a_sliver_of_the_hour() {
        let mut young = flapped();
        young.segments = vec![Segment {
            from: at(59),
            to: at(60),
            status: Some(Status::Warning),
        }];

        let html = last_hour(&young);

        assert!(
            html.contains("class=\"seg warning\" x=\"0.0\" y=\"4\" width=\"240.0\""),
            "{html}"
        );
        assert!(
            html.contains("last hour: WARNING 60 s; 0 changes"),
            "{html}"
        );
    }

    #[test]
    fn a_target_that_flapped_all_hour_draws_at_most_a_bar_a_column() {
        let mut flapping = flapped();
        flapping.segments = (0..3600)
            .map(|second| Segment {
                from: Wall::from_millis(at(0).millis() + second * 1000),
                to: Wall::from_millis(at(0).millis() + (second + 1) * 1000),
                status: Some(if second % 2 == 0 {
                    Status::Ok
                } else {
                    Status::Critical
                }),
            })
            .collect();

        let html = last_hour(&flapping);

        assert!(
            html.matches("<rect class=\"seg").count() <= COLUMNS,
            "bounded"
        );
        assert!(
            html.contains("class=\"seg critical\" x=\"0.0\" y=\"0\" width=\"240.0\""),
            "the worst of each column"
        );
    }

    #[test]
    fn a_target_never_checked_says_so() {
        let view = TimelineView {
            from: at(0),
            to: at(60),
            segments: Vec::new(),
            changes_dropped: 0,
            durations_us: vec![None; 60],
        };

        let html = last_hour(&view);

        assert!(html.contains("last hour: not checked yet"));
        assert!(html.contains("no check timed in the last hour"));
    }
}
