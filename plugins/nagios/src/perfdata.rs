//! Nagios plugin output: `TEXT | perfdata` on the first line, more text and
//! perfdata on later lines (`LONG TEXT | more perfdata`). Perfdata items are
//! `'label'=value[UOM];[warn];[crit];[min];[max]`, separated by spaces.

use healer_plugin_sdk::{Observation, Status};

/// The observation a check's output and status make.
pub fn parse_output(status: Status, stdout: &str) -> Observation {
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or("");
    let (summary, mut perfdata) = match first.split_once('|') {
        Some((text, perf)) => (text.trim().to_owned(), perf.to_owned()),
        None => (first.trim().to_owned(), String::new()),
    };
    let mut long_output = Vec::new();
    let mut in_perfdata = false;
    for line in lines {
        if in_perfdata {
            perfdata.push(' ');
            perfdata.push_str(line);
        } else if let Some((text, perf)) = line.split_once('|') {
            long_output.push(text.trim_end().to_owned());
            perfdata.push(' ');
            perfdata.push_str(perf);
            in_perfdata = true;
        } else {
            long_output.push(line.to_owned());
        }
    }
    let summary = if summary.is_empty() {
        format!("{status} (the check printed nothing)")
    } else {
        summary
    };
    let mut seen = Observation::new(status, summary);
    for (label, value, unit) in items(&perfdata) {
        seen = seen.metric(label, value, unit);
    }
    if !long_output.is_empty() {
        seen = seen.detail("long_output", long_output.join("\n"));
    }
    seen
}

/// `(label, value, unit)` of each well-formed perfdata item.
fn items(perfdata: &str) -> Vec<(String, f64, String)> {
    let mut items = Vec::new();
    let mut rest = perfdata.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            match quoted.find("'=") {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 2..]),
                None => break,
            }
        } else {
            match rest.find('=') {
                Some(end) => (rest[..end].to_owned(), &rest[end + 1..]),
                None => break,
            }
        };
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let value_part = after[..end].split(';').next().unwrap_or("");
        let number_end = value_part
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(value_part.len());
        if let Ok(value) = value_part[..number_end].parse::<f64>() {
            items.push((label, value, value_part[number_end..].to_owned()));
        }
        rest = after[end..].trim_start();
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_values_and_units() {
        let parsed = items("time=0.012s;1;2;0 size=512B 'disk space'=85%;80;90 count=3");
        assert_eq!(
            parsed,
            [
                ("time".into(), 0.012, "s".into()),
                ("size".into(), 512.0, "B".into()),
                ("disk space".into(), 85.0, "%".into()),
                ("count".into(), 3.0, String::new()),
            ]
        );
    }

    #[test]
    fn skips_values_that_are_not_numbers() {
        assert_eq!(items("a=U b=1"), [("b".into(), 1.0, String::new())]);
    }

    #[test]
    fn long_output_and_later_perfdata_are_kept() {
        let seen = parse_output(
            Status::Critical,
            "PROCS CRITICAL: 0 processes | procs=0\nnone found\nlast line | extra=2\nmore=3\n",
        );
        assert_eq!(seen.summary, "PROCS CRITICAL: 0 processes");
        assert_eq!(seen.metric_value("extra"), Some(2.0));
        assert_eq!(seen.metric_value("more"), Some(3.0));
        assert_eq!(seen.details["long_output"], "none found\nlast line");
    }
}
