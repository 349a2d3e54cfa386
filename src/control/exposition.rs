//! A small writer of the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): the
//! families are declared up front (name, type, help), samples are added
//! in any order and come out grouped under their family's `# HELP` and
//! `# TYPE` lines, in declaration order. Label values and help texts are
//! escaped as the format asks. This module only formats text; what is
//! measured is `supervisor::metrics`' business.

use std::fmt::Write;

/// The text format's `Content-Type`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family: its name, type and help line.
pub type FamilySpec = (&'static str, Kind, &'static str);

/// The families and the sample lines gathered for each.
#[derive(Debug)]
pub struct Exposition {
    families: Vec<(FamilySpec, String)>,
}

impl Exposition {
    pub fn new(families: &[FamilySpec]) -> Exposition {
        Exposition {
            families: families.iter().map(|&f| (f, String::new())).collect(),
        }
    }

    /// Adds `family` + `suffix` (`_bucket`, `_sum`, `_count` for a
    /// histogram; empty otherwise) with `labels` and `value`.
    ///
    /// # Panics
    /// If `family` was not declared: a programming error, caught by tests.
    pub fn sample(&mut self, family: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let Some((_, lines)) = self.families.iter_mut().find(|(f, _)| f.0 == family) else {
            panic!("metric family {family} is not declared");
        };
        lines.push_str(family);
        lines.push_str(suffix);
        if !labels.is_empty() {
            lines.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    lines.push(',');
                }
                let _ = write!(lines, "{name}=\"{}\"", escape_label(value));
            }
            lines.push('}');
        }
        let _ = writeln!(lines, " {}", number(value));
    }

    /// The exposition; families without a sample are left out.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((name, kind, help), lines) in &self.families {
            if lines.is_empty() {
                continue;
            }
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            out.push_str(lines);
        }
        out
    }
}

/// A label value with `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value (or an `le` bound): integers without a fraction,
/// infinities as `+Inf`/`-Inf`.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_grouped_under_their_family() {
        let mut out = Exposition::new(&[
            ("forkd_a_total", Kind::Counter, "As seen."),
            ("forkd_unused", Kind::Gauge, "Never sampled."),
            ("forkd_b", Kind::Gauge, "Bs.\nTwo lines \\ here."),
        ]);
        out.sample("forkd_b", "", &[], 0.5);
        out.sample("forkd_a_total", "", &[("program", "api")], 3.0);
        out.sample(
            "forkd_a_total",
            "",
            &[("program", "web"), ("instance", "1")],
            4.0,
        );
        assert_eq!(
            out.render(),
            "# HELP forkd_a_total As seen.\n# TYPE forkd_a_total counter\n\
             forkd_a_total{program=\"api\"} 3\n\
             forkd_a_total{program=\"web\",instance=\"1\"} 4\n\
             # HELP forkd_b Bs.\\nTwo lines \\\\ here.\n# TYPE forkd_b gauge\nforkd_b 0.5\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("web#2 ü"), "web#2 ü");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.00025), "0.00025");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(1.7e18), "1700000000000000000");
    }
}
