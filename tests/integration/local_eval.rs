//! LocalR end to end: values, output, warnings, and every failure R can produce.

use std::time::Duration;

use rookery_engine::{Error, Value};
use rookery_ffi::Error as RError;

use crate::support::{r, value};

fn r_error(code: &str) -> RError {
    match r().eval(code) {
        Err(Error::R(e)) => e,
        other => panic!("{code}: expected an R error, got {other:?}"),
    }
}

#[test]
fn evaluates_and_returns_the_last_value() {
    assert_eq!(value("1 + 1"), Value::scalar_double(2.0));
    assert_eq!(value("t_a <- 5; t_a * 2L"), Value::scalar_double(10.0));
    assert_eq!(value("NULL"), Value::NULL);
}

#[test]
fn reports_visibility() {
    assert!(!r().eval("t_vis <- 1").unwrap().visible);
    assert!(!r().eval("invisible(3)").unwrap().visible);
    assert!(r().eval("t_vis").unwrap().visible);
}

#[test]
fn stop_is_an_r_error_with_message_call_and_classes() {
    match r_error("stop('boom')") {
        RError::R {
            message,
            call,
            classes,
            ..
        } => {
            assert_eq!(message, "boom");
            assert_eq!(call, None);
            assert_eq!(classes, ["simpleError", "error", "condition"]);
        }
        e => panic!("{e:?}"),
    }
    match r_error("t_f <- function(x) stop('bad x: ', x); t_f(3)") {
        RError::R { message, call, .. } => {
            assert_eq!(message, "bad x: 3");
            assert_eq!(call.as_deref(), Some("t_f(3)"));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn custom_condition_classes_survive() {
    let e = r_error(
        "stop(structure(class = c('modelError', 'error', 'condition'), \
         list(message = 'no model', call = NULL)))",
    );
    assert!(e.has_class("modelError"), "{e:?}");
    assert_eq!(e.to_string(), "Error: no model");
}

#[test]
fn errors_from_c_code_are_caught() {
    let e = r_error("log(-1:1, base = 'x')");
    assert!(matches!(e, RError::R { .. }), "{e:?}");
    let e = r_error(".Call('rookery_no_such_symbol')");
    assert!(e.to_string().contains("rookery_no_such_symbol"), "{e}");
    assert_eq!(value("2 * 21"), Value::scalar_double(42.0));
}

#[test]
fn parse_errors_name_the_line() {
    match r().eval("1 +)") {
        Err(Error::R(RError::Parse { message, line })) => {
            assert_eq!(line, 1);
            assert!(message.contains("unexpected"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match r().eval("x <- 1\ny <- (2\nz <- 3 3") {
        Err(Error::R(RError::Parse { line, .. })) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
    match r().eval("f(1,") {
        Err(Error::R(RError::Parse { message, .. })) => {
            assert_eq!(message, "unexpected end of input")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lexer_errors_are_parse_errors() {
    match r().eval("a <- 1\nb <- '\\q'") {
        Err(Error::R(RError::Parse { message, .. })) => {
            assert!(message.contains("unrecognized escape"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn user_code_is_data_not_source() {
    // Code that would break out of any string splice stays a plain parse error.
    let e = r().eval("'), stop('injected'), ('").unwrap_err();
    assert!(matches!(e, Error::R(RError::Parse { .. })), "{e:?}");
    assert_eq!(value("'\"quoted\"'"), Value::scalar_string("\"quoted\""));
}

#[test]
fn warnings_are_collected_and_muffled() {
    let ev = r()
        .eval("warning('w1'); t_w <- function() warning('w2'); t_w(); 7")
        .unwrap();
    assert_eq!(ev.value, Value::scalar_double(7.0));
    let msgs: Vec<_> = ev
        .output
        .warnings
        .iter()
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(msgs, ["w1", "w2"]);
    assert_eq!(ev.output.warnings[1].call.as_deref(), Some("t_w()"));
    assert!(ev.output.stderr.is_empty(), "{:?}", ev.output.stderr);
    // A C-level warning, and warnings attached to a later error.
    let ev = r().eval("as.integer('x')").unwrap();
    assert_eq!(ev.output.warnings.len(), 1);
    let e = r_error("warning('before'); stop('after')");
    assert_eq!(e.output().unwrap().warnings[0].message, "before");
}

#[test]
fn console_output_is_captured_per_call() {
    let ev = r()
        .eval("print(1:3); cat('hi\\n'); message('note'); 1")
        .unwrap();
    assert_eq!(ev.output.stdout, "[1] 1 2 3\nhi\n");
    assert_eq!(ev.output.stderr, "note\n");
    let ev = r().eval("2").unwrap();
    assert!(ev.output.is_empty());
    let e = r_error("cat('partial\\n'); stop('x')");
    assert_eq!(e.output().unwrap().stdout, "partial\n");
}

#[test]
fn fd_level_output_of_system_is_captured() {
    let ev = r().eval("system('echo from-the-shell'); 1").unwrap();
    assert!(
        ev.output.stdout.contains("from-the-shell"),
        "{:?}",
        ev.output
    );
}

#[test]
fn q_is_an_error_and_r_carries_on() {
    for code in ["q()", "quit(status = 3)", "q('no')"] {
        let e = r_error(code);
        assert!(e.to_string().contains("cannot end an embedded R"), "{e}");
    }
    assert_eq!(value("1L"), Value::scalar_int(1));
}

#[test]
fn deep_recursion_is_an_error_and_r_carries_on() {
    let e = r_error("t_rec <- function(n) t_rec(n + 1); t_rec(1)");
    assert!(e.to_string().contains("nested too deeply"), "{e}");
    // With the expression limit lifted, the C stack limit must catch it.
    let e = r_error(
        "t_old <- options(expressions = 500000); on.exit(options(t_old)); \
         t_rec2 <- function(n) t_rec2(n + 1); tryCatch(t_rec2(1), finally = options(t_old))",
    );
    assert!(e.to_string().to_lowercase().contains("stack"), "{e}");
    assert_eq!(value("sum(1:10)"), Value::scalar_int(55));
}

#[test]
fn interrupt_stops_a_running_loop() {
    let r = r();
    let interrupter = {
        let r = r.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            r.interrupt();
        })
    };
    let result = r.eval("t_i <- 0; repeat t_i <- t_i + 1");
    interrupter.join().unwrap();
    assert!(
        matches!(result, Err(Error::R(RError::Interrupted { .. }))),
        "{result:?}"
    );
    assert_eq!(value("1 + 2"), Value::scalar_double(3.0));
}

#[test]
fn a_panicking_job_does_not_take_r_down() {
    let e = r().with(|_r| -> () { panic!("job bug") }).unwrap_err();
    assert_eq!(e, Error::Panicked("job bug".into()));
    assert_eq!(value("3"), Value::scalar_double(3.0));
}

#[test]
fn assign_get_call_and_source() {
    let r = r();
    r.assign("t_vec", Value::doubles(vec![1.0, 2.5])).unwrap();
    assert_eq!(
        r.get("t_vec").unwrap(),
        Some(Value::doubles(vec![1.0, 2.5]))
    );
    assert_eq!(r.get("t_never_bound").unwrap(), None);
    let ev = r
        .call(
            "paste",
            vec![
                ("".into(), Value::strings(["a", "b"])),
                ("collapse".into(), Value::scalar_string("+")),
            ],
        )
        .unwrap();
    assert_eq!(ev.value, Value::scalar_string("a+b"));
    let ev = r
        .call(
            "stats::median",
            vec![("".into(), Value::integers(vec![3, 1, 2]))],
        )
        .unwrap();
    assert_eq!(ev.value, Value::scalar_int(2));
    let e = r.call("t_no_such_fn", vec![]).unwrap_err();
    assert!(e.to_string().contains("t_no_such_fn"), "{e}");

    let dir = std::env::temp_dir().join(format!("rookery-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.R");
    std::fs::write(&file, "t_score <- function(x) x * 2\nt_score(21)\n").unwrap();
    assert_eq!(r.source(&file).unwrap().value, Value::scalar_double(42.0));
    std::fs::write(&file, "ok <- 1\nbad <- (\n").unwrap();
    assert!(matches!(
        r.source(&file),
        Err(Error::R(RError::Parse { .. }))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn many_threads_share_one_r() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..50 {
                    let v = value(&format!("{i}L * 100L + {j}L"));
                    assert_eq!(v, Value::scalar_int(i * 100 + j));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn private_environments_keep_state_out_of_the_global_one() {
    let got = r()
        .with(|rt| {
            let env = rt.new_env(None).unwrap();
            rt.eval_str("t_private <- 41; t_private + 1", Some(&env))
                .unwrap();
            let inside = rt
                .get(Some(&env), "t_private")
                .unwrap()
                .map(|p| rt.to_value(&p).unwrap());
            let outside = rt.get(None, "t_private").unwrap().is_some();
            (inside, outside)
        })
        .unwrap();
    assert_eq!(got, (Some(Value::scalar_double(41.0)), false));
}

/// Rserve's native OOB routines, as its package's `self.oobSend` and
/// `self.oobMessage` call them: the handler around an evaluation gets each message
/// as a value with its 12-bit code, `oobMessage` returns the handler's reply,
/// `oobSend` returns TRUE (FALSE when the client is gone), and without a handler
/// both are a clear R error that R survives.
#[test]
fn rserve_oob_routines_reach_the_handler_around_an_evaluation() {
    use rookery_ffi::{OobFailure, OobKind, OobRequest};
    let got = r()
        .with(|tok| {
            let mut seen: Vec<OobRequest> = Vec::new();
            let mut handler = |req: OobRequest| {
                let reply = match (req.kind, &req.value) {
                    (OobKind::Message, _) if req.code == 7 => Ok(Some(Value::scalar_double(42.0))),
                    (OobKind::Message, _) => Err(OobFailure::Refused("no reply for you".into())),
                    (OobKind::Send, _) if req.code == 9 => Err(OobFailure::Gone("gone".into())),
                    (OobKind::Send, _) => Ok(None),
                };
                seen.push(req);
                reply
            };
            let results = rookery_ffi::with_oob_handler(tok, &mut handler, || {
                [
                    ".Call('Rserve_oobSend', list('url', 1:3), 0x1005L)",
                    ".Call('Rserve_oobMsg', 'ask', 7L) + 1",
                    ".Call('Rserve_oobSend', 'late', 9L)",
                    "tryCatch(.Call('Rserve_oobMsg', 'ask', 8L), error = conditionMessage)",
                ]
                .map(|code| {
                    tok.eval_str(code, None)
                        .and_then(|ev| tok.to_value(&ev.value))
                })
            });
            (results, seen)
        })
        .unwrap();
    let (results, seen) = got;
    let results: Vec<Value> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results[0], Value::scalar_bool(true));
    assert_eq!(results[1], Value::scalar_double(43.0));
    assert_eq!(results[2], Value::scalar_bool(false));
    assert_eq!(results[3], Value::scalar_string("no reply for you"));
    assert_eq!(seen.len(), 4);
    assert_eq!((seen[0].kind, seen[0].code), (OobKind::Send, 5));
    assert_eq!(
        seen[0].value,
        value("list('url', 1:3)"),
        "the object itself travels"
    );
    assert_eq!((seen[1].kind, seen[1].code), (OobKind::Message, 7));
    assert_eq!(seen[1].value, Value::scalar_string("ask"));

    let e = r_error(".Call('Rserve_oobSend', 1, 0L)");
    assert!(
        e.to_string().contains("only in code a QAP1 client runs"),
        "{e}"
    );
    let e = r_error(".Call('Rserve_ctrlEval', 'x <- 1')");
    assert!(e.to_string().contains("no control commands"), "{e}");
    assert_eq!(value("1 + 1"), Value::scalar_double(2.0));
}
