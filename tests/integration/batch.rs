//! `rookery batch`, run as a user would: real R workers, real files in every format,
//! a real `rookery serve` for `--server`, SIGINT to the child for Ctrl-C.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn rookery(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("batch")
        .args(args)
        .env_remove("ROOKERY_TOKEN")
        .output()
        .expect("rookery runs")
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

fn run(args: &[std::ffi::OsString]) -> Output {
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    rookery(&refs)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path_arg(p: &Path) -> std::ffi::OsString {
    p.as_os_str().to_owned()
}

/// `--server ADDR --service glm --quiet --token TOKEN`: batch through a server.
fn remote_glm(addr: &str, token: &str) -> Vec<std::ffi::OsString> {
    os(&[
        "--server",
        addr,
        "--service",
        "glm",
        "--quiet",
        "--token",
        token,
    ])
}

/// Runs `rookery batch ARGS --input INPUT --output OUTPUT`.
fn run_io(mut args: Vec<std::ffi::OsString>, input: &Path, output: &Path) -> Output {
    args.extend([
        "--input".into(),
        path_arg(input),
        "--output".into(),
        path_arg(output),
    ]);
    run(&args)
}

/// Every row of a table file, in one batch.
fn read_table(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ext = path.extension().unwrap().to_str().unwrap();
    let (schema, batches): (_, Vec<RecordBatch>) = match ext {
        "parquet" => {
            let r = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            (r.schema(), r.map(Result::unwrap).collect())
        }
        "arrow" => {
            let r = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
            (r.schema(), r.map(Result::unwrap).collect())
        }
        "arrows" => {
            let r = arrow_ipc::reader::StreamReader::try_new(file, None).unwrap();
            (r.schema(), r.map(Result::unwrap).collect())
        }
        "csv" => {
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = format
                .infer_schema(File::open(path).unwrap(), None)
                .unwrap();
            let schema = Arc::new(schema);
            let r = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .build(file)
                .unwrap();
            (schema, r.map(Result::unwrap).collect())
        }
        other => panic!("no reader for .{other}"),
    };
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

fn doubles(batch: &RecordBatch, column: &str) -> Vec<f64> {
    let c = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", batch.schema()));
    let c = arrow_cast::cast(c, &arrow_schema::DataType::Float64).unwrap();
    c.as_primitive::<Float64Type>().values().to_vec()
}

fn generate(dir: &Path, name: &str, rows: usize) -> PathBuf {
    let path = dir.join(name);
    let mut args = os(&["--generate-demo", &rows.to_string(), "--output"]);
    args.push(path_arg(&path));
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

fn write_code(dir: &Path, code: &str) -> PathBuf {
    let path = dir.join("score.R");
    std::fs::write(&path, code).unwrap();
    path
}

fn batch_args(code: &Path, input: &Path, output: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args = os(&["--code"]);
    args.push(path_arg(code));
    args.extend(os(&["--fn", "f", "--quiet", "--input"]));
    args.push(path_arg(input));
    args.push("--output".into());
    args.push(path_arg(output));
    args.extend(os(extra));
    args
}

/// A chunk-dependent delay, so chunks finish out of order on two workers.
const ECHO: &str = "f <- function(d) {
  Sys.sleep(if (d$x1[1] > 0) 0.05 else 0)
  data.frame(id = d$x1, twice = d$x2 * 2)
}";

#[test]
fn batch_every_format_in_and_out_keeps_input_order_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = generate(dir.path(), "in.parquet", 3_000);
    let arrow = generate(dir.path(), "in.arrow", 3_000);
    let csv = generate(dir.path(), "in.csv", 3_000);
    let expected = doubles(&read_table(&parquet), "x1");
    let x3 = doubles(&read_table(&parquet), "x3");
    assert_eq!(expected, doubles(&read_table(&arrow), "x1"), "a fixed seed");
    let code = write_code(dir.path(), ECHO);
    for (input, out_name) in [
        (&parquet, "out.csv"),
        (&csv, "out.parquet"),
        (&arrow, "out.arrows"),
        (&parquet, "out.arrow"),
    ] {
        let output = dir.path().join(out_name);
        let o = run(&batch_args(
            &code,
            input,
            &output,
            &["--workers", "2", "--chunk-rows", "250", "--keep", "x3"],
        ));
        assert!(o.status.success(), "{out_name}: {}", stderr(&o));
        assert!(stderr(&o).contains("scored 3000 rows"), "{}", stderr(&o));
        let out = read_table(&output);
        let ids = doubles(&out, "id");
        assert_eq!(ids.len(), expected.len(), "{out_name}");
        for (i, (a, b)) in ids.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() < 1e-12, "{out_name} row {i}: {a} != {b}");
        }
        assert_eq!(
            doubles(&out, "x3"),
            x3,
            "{out_name}: --keep copies input columns"
        );
        assert_eq!(out.schema().field(0).name(), "x3");
        assert!(!dir.path().join(format!("{out_name}.partial")).exists());
    }
}

/// 1,000 rows `id` 1..1000; the function fails on the chunk holding id 450.
fn failing_setup(dir: &Path) -> (PathBuf, PathBuf) {
    let input = dir.join("ids.csv");
    let mut text = String::from("id,x\n");
    for i in 1..=1000 {
        text.push_str(&format!("{i},{}\n", i as f64 / 10.0));
    }
    std::fs::write(&input, text).unwrap();
    let code = write_code(
        dir,
        "f <- function(d) { if (any(d$id == 450)) stop('row 450 is bad'); d$id * 2 }",
    );
    (input, code)
}

/// Scores [`failing_setup`]'s rows into `dir/output` on 2 workers, 100-row chunks,
/// with `extra` flags; returns the output path, the run and its stderr.
fn run_failing(dir: &Path, output: &str, extra: &[&str]) -> (PathBuf, Output, String) {
    let (input, code) = failing_setup(dir);
    let output = dir.join(output);
    let mut flags = vec!["--workers", "2", "--chunk-rows", "100"];
    flags.extend_from_slice(extra);
    let o = run(&batch_args(&code, &input, &output, &flags));
    let err = stderr(&o);
    (output, o, err)
}

#[test]
fn batch_failing_chunk_is_skipped_with_its_rows_and_r_message() {
    let dir = tempfile::tempdir().unwrap();
    let (output, o, err) = run_failing(dir.path(), "out.parquet", &["--on-error", "skip"]);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rows 401-500"), "{err}");
    assert!(err.contains("row 450 is bad"), "{err}");
    let values = doubles(&read_table(&output), "value");
    let expected: Vec<f64> = (1..=1000)
        .filter(|i| !(401..=500).contains(i))
        .map(|i| f64::from(i) * 2.0)
        .collect();
    assert_eq!(values, expected);
}

#[test]
fn batch_failing_chunk_stops_and_leaves_only_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (output, o, err) = run_failing(dir.path(), "out.csv", &[]);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rows 401-500") && err.contains("row 450 is bad"),
        "{err}"
    );
    assert!(err.contains("incomplete"), "{err}");
    assert!(!output.exists(), "no file under the final name");
    let partial = dir.path().join("out.csv.partial");
    let copy = dir.path().join("partial.csv");
    std::fs::copy(&partial, &copy).unwrap();
    let values = doubles(&read_table(&copy), "value");
    let expected: Vec<f64> = (1..=400).map(|i| f64::from(i) * 2.0).collect();
    assert_eq!(values, expected, "every chunk before the failure, in order");
}

#[test]
fn batch_bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let code = write_code(dir.path(), "f <- function(d) d$x1");
    let out = dir.path().join("out.csv");
    let missing = dir.path().join("missing.parquet");
    let o = run(&batch_args(&code, &missing, &out, &[]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot open"), "{}", stderr(&o));

    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"this is not parquet at all").unwrap();
    let o = run(&batch_args(&code, &garbage, &out, &[]));
    assert!(
        stderr(&o).contains("is not a readable Parquet file"),
        "{}",
        stderr(&o)
    );

    let txt = dir.path().join("table.txt");
    std::fs::write(&txt, "x1\n1\n").unwrap();
    let o = run(&batch_args(&code, &txt, &out, &[]));
    assert!(stderr(&o).contains("--input-format"), "{}", stderr(&o));

    let input = generate(dir.path(), "in.csv", 10);
    let o = run(&batch_args(&code, &input, &input, &[]));
    assert!(stderr(&o).contains("is the input file"), "{}", stderr(&o));

    let o = run(&batch_args(&code, &input, &out, &["--keep", "nope"]));
    assert!(
        stderr(&o).contains("--keep nope: the input has no such column"),
        "{}",
        stderr(&o)
    );

    let nofn = write_code(dir.path(), "g <- 1");
    let o = run(&batch_args(&nofn, &input, &out, &["--workers", "1"]));
    assert!(
        stderr(&o).contains("does not define a function `f`"),
        "{}",
        stderr(&o)
    );

    let mut args = os(&["--service", "glm", "--data"]);
    args.push(path_arg(&dir.path().join("no-data")));
    let o = run_io(args, &input, &out);
    assert!(
        stderr(&o).contains("no server data folder"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn batch_through_a_server_matches_the_local_pool_and_the_data_folder() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (child, mut lines) = crate::server::spawn_demo(data.path());
    let mut next = || lines.next().expect("serve prints").unwrap();
    let first = next();
    let addr = first
        .strip_prefix("rookery listening on ")
        .expect(&first)
        .to_owned();
    let key = loop {
        if let Some(k) = next().strip_prefix("demo API key: ") {
            break k.to_owned();
        }
    };
    let input = generate(dir.path(), "in.parquet", 2_500);
    let remote_out = dir.path().join("remote.csv");
    let mut args = remote_glm(&addr, &key);
    args.extend(os(&[
        "--chunk-rows",
        "1000",
        "--workers",
        "2",
        "--max-body",
        "30000",
    ]));
    let o = run_io(args, &input, &remote_out);
    assert!(o.status.success(), "{}", stderr(&o));

    let local_out = dir.path().join("local.arrow");
    let args = os(&["--demo", "--quiet", "--workers", "2", "--chunk-rows", "700"]);
    let o = run_io(args, &input, &local_out);
    assert!(o.status.success(), "{}", stderr(&o));

    let args = remote_glm(&addr, "wrong");
    let o = run_io(args, &input, &dir.path().join("never.csv"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    crate::server::stop_server(child);

    // Local mode on the data folder the server published into.
    let service_out = dir.path().join("service.parquet");
    let mut args = os(&["--service", "glm@1", "--quiet", "--workers", "1", "--data"]);
    args.push(path_arg(data.path()));
    let o = run_io(args, &input, &service_out);
    assert!(o.status.success(), "{}", stderr(&o));

    // A bad row: a missing value where the service declares a non-nullable double.
    let bad = dir.path().join("bad.csv");
    let mut text = (1..=10)
        .map(|i| format!("x{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for row in 1..=10 {
        let x3 = if row == 7 {
            String::new()
        } else {
            "0.5".to_owned()
        };
        text.push_str(&format!("\n0.1,0.2,{x3},0.4,0.5,0.6,0.7,0.8,0.9,1.0"));
    }
    std::fs::write(&bad, text + "\n").unwrap();
    let bad_out = dir.path().join("bad-out.csv");
    let mut args = os(&["--service", "glm", "--quiet", "--workers", "1", "--data"]);
    args.push(path_arg(data.path()));
    args.extend(os(&["--chunk-rows", "5", "--on-error", "skip", "--input"]));
    args.push(path_arg(&bad));
    args.push("--output".into());
    args.push(path_arg(&bad_out));
    let o = run(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rows 6-10") && err.contains("input row 7, column \"x3\""),
        "{err}"
    );
    assert_eq!(read_table(&bad_out).num_rows(), 5);

    let remote = doubles(&read_table(&remote_out), "value");
    let local = doubles(&read_table(&local_out), "value");
    let service = doubles(&read_table(&service_out), "value");
    assert_eq!(remote.len(), 2_500);
    assert_eq!(local, service);
    for (i, (a, b)) in remote.iter().zip(&local).enumerate() {
        assert!((a - b).abs() < 1e-9, "row {i}: {a} != {b}");
    }
}

#[test]
fn batch_sigint_stops_workers_and_leaves_no_file_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.parquet", 20_000);
    let code = write_code(dir.path(), "f <- function(d) { Sys.sleep(0.3); d$x1 }");
    let output = dir.path().join("out.parquet");
    let partial = dir.path().join("out.parquet.partial");
    let args = batch_args(
        &code,
        &input,
        &output,
        &["--workers", "2", "--chunk-rows", "500"],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("batch")
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !partial.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        partial.exists(),
        "the first chunk is written to FILE.partial"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!output.exists(), "never a file under the final name");
    let copy = dir.path().join("partial.parquet");
    std::fs::copy(&partial, &copy).unwrap();
    let rows = read_table(&copy).num_rows();
    assert!(rows < 20_000 && rows % 500 == 0, "{rows}");
}
