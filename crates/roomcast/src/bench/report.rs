//! Results: a readable table, or one JSON object; and the progress bar while running.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

use super::BenchError;

/// A finished run: labelled lines for people, fields for machines.
#[derive(Debug)]
pub struct Report {
    title: String,
    lines: Vec<(String, String)>,
    fields: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &str, title: String) -> Self {
        let mut fields = Map::new();
        fields.insert("scenario".into(), json!(scenario));
        Self {
            title,
            lines: Vec::new(),
            fields,
        }
    }

    /// A line of the table.
    pub fn line(&mut self, label: &str, text: String) -> &mut Self {
        self.lines.push((label.to_owned(), text));
        self
    }

    /// A field of the JSON object.
    pub fn field(&mut self, key: &str, value: Value) -> &mut Self {
        self.fields.insert(key.to_owned(), value);
        self
    }

    /// Latency percentiles, in µs, as a line and a field.
    pub fn latency(&mut self, h: &Histogram<u64>) -> &mut Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |p: f64| us(h.value_at_quantile(p));
        if h.is_empty() {
            return self;
        }
        self.line(
            "latency",
            format!(
                "p50 {:.0} µs   p99 {:.0} µs   p99.9 {:.0} µs   max {:.0} µs",
                q(0.5),
                q(0.99),
                q(0.999),
                us(h.max())
            ),
        );
        self.field("latency_us", json!({"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": us(h.max()), "count": h.len()}))
    }

    /// Ends a run: prints the report with its verdict (`"ok"`, and `"failure"` naming every
    /// problem, in the JSON) and fails when `problems` is not empty, so a script sees any
    /// loss or error both in the exit code and in the JSON.
    pub fn finish(mut self, as_json: bool, problems: &[String]) -> Result<(), BenchError> {
        self.field("ok", json!(problems.is_empty()));
        if problems.is_empty() {
            self.print(as_json);
            return Ok(());
        }
        let failure = problems.join("; ");
        self.field("failure", json!(failure));
        self.line("FAILED", failure.clone());
        self.print(as_json);
        Err(BenchError::Failed(failure))
    }

    /// Prints the report.
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", Value::Object(self.fields.clone()));
            return;
        }
        println!("{}", self.title);
        let width = self.lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, text) in &self.lines {
            println!("  {label:<width$}   {text}");
        }
    }
}

/// A progress bar on stderr (drawn only on a terminal, never with `--json`).
pub fn progress(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A histogram for latencies in ns, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant, valid bounds")
}

/// A byte count for people.
pub fn human_bytes(n: f64) -> String {
    if n.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else if n.abs() >= 1024.0 {
        format!("{:.2} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}
