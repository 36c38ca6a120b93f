//! What `rookery bench` reports: per pair, each side's runs, median and min-max, and
//! Rookery's speed-up over the peer; written as JSON (`bench.json`) and a Markdown
//! table (`bench.md`).
//!
//! The speed-up is always "how many times better Rookery is": peer / Rookery for
//! times, Rookery / peer for rates, so above 1 means Rookery is faster. Its min-max
//! comes from the per-round ratios (each round measures the two sides back to back).

use serde::Serialize;

use super::workloads::{Effort, Workload};

/// Median and range of a side's runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(runs: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = runs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One workload, both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub workload: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub peer: &'static str,
    pub peer_runs: Vec<f64>,
    pub rookery_runs: Vec<f64>,
    pub peer_summary: Option<Summary>,
    pub rookery_summary: Option<Summary>,
    /// Rookery's speed-up from the medians (above 1: Rookery faster).
    pub speedup: Option<f64>,
    /// The range of the per-round speed-ups.
    pub speedup_min: Option<f64>,
    pub speedup_max: Option<f64>,
    /// Why a side has no figure (peer missing, a measurement failed).
    pub note: Option<String>,
}

impl Pair {
    pub fn new(w: &Workload) -> Pair {
        Pair {
            workload: w.key,
            label: w.label,
            unit: w.unit,
            higher_is_better: w.higher_is_better,
            peer: w.peer.name(),
            peer_runs: Vec::new(),
            rookery_runs: Vec::new(),
            peer_summary: None,
            rookery_summary: None,
            speedup: None,
            speedup_min: None,
            speedup_max: None,
            note: None,
        }
    }

    fn speedup_of(&self, peer: f64, rookery: f64) -> f64 {
        if self.higher_is_better {
            rookery / peer
        } else {
            peer / rookery
        }
    }

    /// Fills the summaries and speed-ups from the runs.
    pub fn finish(&mut self) {
        self.peer_summary = Summary::of(&self.peer_runs);
        self.rookery_summary = Summary::of(&self.rookery_runs);
        if let (Some(p), Some(r)) = (self.peer_summary, self.rookery_summary) {
            self.speedup = Some(self.speedup_of(p.median, r.median));
            let rounds: Vec<f64> = self
                .peer_runs
                .iter()
                .zip(&self.rookery_runs)
                .map(|(p, r)| self.speedup_of(*p, *r))
                .collect();
            let range = Summary::of(&rounds);
            self.speedup_min = range.map(|s| s.min);
            self.speedup_max = range.map(|s| s.max);
        }
    }
}

/// Everything `bench.json` holds.
#[derive(Debug, Serialize)]
pub struct Report {
    pub rookery_version: &'static str,
    pub unix_time: u64,
    pub cores: usize,
    /// R and the peers' package versions.
    pub versions: String,
    pub rounds: usize,
    pub effort: Effort,
    /// Peers that could not be measured, with the reason.
    pub missing: Vec<String>,
    pub pairs: Vec<Pair>,
    pub command: String,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "`{}` — {}; {} cores, {} rounds interleaved (peer, Rookery, peer, Rookery, …), {:.1} s per throughput window; medians [min-max]. Speed-up: how many times faster Rookery is (above 1: Rookery wins), from the medians [range of the per-round ratios].\n\n",
            self.command, self.versions, self.cores, self.rounds, self.effort.duration.as_secs_f64()
        );
        md += "| workload | unit | peer | peer figure | Rookery figure | Rookery speed-up |\n|---|---|---|---|---|---|\n";
        for p in &self.pairs {
            md += &row(p);
        }
        if !self.missing.is_empty() {
            md += "\nNot measured: ";
            md += &self.missing.join("; ");
            md += "\n";
        }
        md
    }
}

fn row(p: &Pair) -> String {
    let side = |s: Option<Summary>| match s {
        Some(s) => format!("{} [{}-{}]", num(s.median), num(s.min), num(s.max)),
        None => "—".into(),
    };
    let speedup = match (p.speedup, p.speedup_min, p.speedup_max) {
        (Some(x), Some(lo), Some(hi)) => format!("**{x:.2}×** [{lo:.2}-{hi:.2}]"),
        _ => p.note.clone().unwrap_or_else(|| "—".into()),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        p.label,
        p.unit,
        p.peer,
        side(p.peer_summary),
        side(p.rookery_summary),
        speedup
    )
}

/// Three significant figures, thousands separated.
pub fn num(x: f64) -> String {
    if x >= 1000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        let s = Summary::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn speedup_direction() {
        let w = super::super::workloads::ALL[0]; // a latency: lower is better
        let mut p = Pair::new(&w);
        p.peer_runs = vec![30.0, 40.0];
        p.rookery_runs = vec![15.0, 40.0];
        p.finish();
        assert_eq!(p.speedup, Some(35.0 / 27.5));
        assert_eq!((p.speedup_min, p.speedup_max), (Some(1.0), Some(2.0)));
    }

    #[test]
    fn a_missing_peer_is_named_not_fatal() {
        let w = *super::super::workloads::ALL
            .iter()
            .find(|w| w.key == "glm_1row_1conn")
            .expect("an HTTP pair: plumber");
        let mut p = Pair::new(&w);
        p.peer_runs = vec![f64::NAN];
        p.rookery_runs = vec![900.0];
        p.note = Some("plumber: plumber is not installed (Debian: r-cran-plumber)".into());
        p.finish();
        assert_eq!(p.speedup, None);
        let report = Report {
            rookery_version: "0",
            unix_time: 0,
            cores: 2,
            versions: "R 4.2.2".into(),
            rounds: 1,
            effort: super::super::CompareArgs::default_effort(),
            missing: vec![p.note.clone().unwrap()],
            pairs: vec![p],
            command: "rookery bench".into(),
        };
        let md = report.markdown();
        assert!(
            md.contains("| plumber | — | 900 [900-900] | plumber: plumber is not installed"),
            "{md}"
        );
        assert!(
            md.contains("Not measured: plumber: plumber is not installed"),
            "{md}"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1850.4), "1,850");
        assert_eq!(num(34012.0), "34,012");
        assert_eq!(num(28.44), "28.4");
        assert_eq!(num(0.1361), "0.136");
    }
}
