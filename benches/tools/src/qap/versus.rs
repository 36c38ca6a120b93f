//! `rookery bench qap --target A --versus B`: both servers measured the same way,
//! interleaved round by round (A B A B ...) so the drift of a shared machine hits
//! both, and printed side by side with the ratio of the medians per figure.

use anyhow::Context;
use serde::Serialize;

use super::{run, QapArgs, QapReport, CONCURRENCY};

/// The password of the `--versus` server's login.
pub const VERSUS_PASSWORD_ENV: &str = "ROOKERY_QAP_VERSUS_PASSWORD";

/// One figure of both servers: medians over the rounds, and how many times the
/// target beats the other (above 1: the target is better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub target: f64,
    pub versus: f64,
    pub ratio: f64,
}

/// The `--json` form: both addresses, the rows, and every round's reports.
#[derive(Debug, Serialize)]
struct Comparison<'a> {
    target: &'a str,
    versus: &'a str,
    rounds: usize,
    rows: Vec<Row>,
    target_runs: Vec<QapReport>,
    versus_runs: Vec<QapReport>,
}

pub fn command(args: &QapArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let target_name = args.target.clone().unwrap_or_default();
    let versus_name = args.versus.clone().unwrap_or_default();
    let versus_args = QapArgs {
        target: args.versus.clone(),
        unix: None,
        user: args.versus_user.clone(),
        versus: None,
        versus_user: None,
        password_env: Some(VERSUS_PASSWORD_ENV),
        ..args.clone()
    };
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        mine.push(run(args).with_context(|| format!("{target_name}, round {round}"))?);
        theirs.push(run(&versus_args).with_context(|| format!("{versus_name}, round {round}"))?);
    }
    let rows = rows(&mine, &theirs);
    if args.json {
        let all = Comparison {
            target: &target_name,
            versus: &versus_name,
            rounds: args.rounds,
            rows,
            target_runs: mine,
            versus_runs: theirs,
        };
        println!("{}", serde_json::to_string(&all)?);
    } else {
        print!("{}", table(&target_name, &versus_name, args.rounds, &rows));
    }
    Ok(())
}

/// The medians of both sides, figure by figure.
pub fn rows(mine: &[QapReport], theirs: &[QapReport]) -> Vec<Row> {
    type Pick = fn(&QapReport) -> f64;
    /// Name, unit, whether higher is better, and how to read it from a report.
    type Figure = (String, &'static str, bool, Box<dyn Fn(&QapReport) -> f64>);
    let mut figures: Vec<Figure> = vec![];
    let lower: [(&str, &'static str, Pick); 8] = [
        ("1+1 p50", "µs", |r| r.eval_1p1_p50_us),
        ("1+1 p99", "µs", |r| r.eval_1p1_p99_us),
        ("connect + 1+1 + close, p50", "ms", |r| {
            r.connect_eval_close_p50_ms
        }),
        ("connect + 1+1 + close, p99", "ms", |r| {
            r.connect_eval_close_p99_ms
        }),
        ("the same, paced, p50", "ms", |r| {
            r.connect_eval_close_paced_p50_ms
        }),
        ("the same, paced, p99", "ms", |r| {
            r.connect_eval_close_paced_p99_ms
        }),
        ("1e6 doubles out", "ms", |r| r.transfer_1e6_out_ms),
        ("1e6 doubles in", "ms", |r| r.transfer_1e6_in_ms),
    ];
    for (name, unit, pick) in lower {
        figures.push((name.to_owned(), unit, false, Box::new(pick)));
    }
    for n in CONCURRENCY {
        let key = n.to_string();
        figures.push((
            format!("evals/s, {n} connection{}", if n == 1 { "" } else { "s" }),
            "evals/s",
            true,
            Box::new(move |r: &QapReport| r.evals_per_s.get(&key).copied().unwrap_or(0.0)),
        ));
    }
    figures
        .into_iter()
        .map(|(figure, unit, higher_is_better, pick)| {
            let target = median(mine.iter().map(&pick));
            let versus = median(theirs.iter().map(&pick));
            let ratio = if higher_is_better {
                target / versus
            } else {
                versus / target
            };
            Row {
                figure,
                unit,
                target,
                versus,
                ratio,
            }
        })
        .collect()
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The side-by-side table for a person.
pub fn table(target: &str, versus: &str, rounds: usize, rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut t = format!(
        "medians of {rounds} interleaved round{}; ratio above 1: {target} is better\n",
        if rounds == 1 { "" } else { "s" }
    );
    t += &format!(
        "{:<w$}  {:>14}  {:>14}  {:>7}  unit\n",
        "figure", target, versus, "ratio"
    );
    for r in rows {
        let fmt = |x: f64| {
            if r.unit == "evals/s" {
                format!("{x:.0}")
            } else if r.unit == "µs" {
                format!("{x:.1}")
            } else {
                format!("{x:.3}")
            }
        };
        t += &format!(
            "{:<w$}  {:>14}  {:>14}  {:>6.2}×  {}\n",
            r.figure,
            fmt(r.target),
            fmt(r.versus),
            r.ratio,
            r.unit
        );
    }
    t
}
