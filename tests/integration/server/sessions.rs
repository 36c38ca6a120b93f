//! Sessions: state kept between calls, output, R errors, objects, files, owners,
//! deadlines and crashes.

use axum::body::Body;
use axum::http::StatusCode;
use rookery_server::store::Role;
use serde_json::{json, Value as Json};

use super::{call, code, send, shared, user};

async fn open(token: &str) -> String {
    let (status, body) = call("POST", "/api/v1/sessions", Some(token), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/sessions` through `router` (a server of the test's own).
async fn post_session(router: &axum::Router, token: &str) -> (StatusCode, Json) {
    send(
        router,
        "POST",
        "/api/v1/sessions",
        Some(token),
        Body::empty(),
    )
    .await
}

async fn exec(token: &str, id: &str, code: &str) -> (StatusCode, Json) {
    call(
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        Some(token),
        Some(json!({ "code": code })),
    )
    .await
}

#[tokio::test]
async fn a_session_keeps_state_and_reports_output_warnings_and_errors() {
    let t = user("sam", Role::Publisher, &[]);
    let id = open(&t).await;
    let (status, body) = exec(&t, &id, "x <- c(1.5, 2.5); y <- 'kept'").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["visible"], false);
    let (status, body) = exec(&t, &id, "print('hello'); warning('careful'); sum(x)").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!(4));
    assert!(body["stdout"].as_str().unwrap().contains("hello"));
    assert_eq!(body["warnings"][0]["message"], "careful");
    let (status, body) = exec(&t, &id, "f <- function(v) stop('bad value: ', v); f(7)").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "r_error");
    assert_eq!(body["error"]["message"], "bad value: 7");
    assert_eq!(body["error"]["call"], "f(7)");
    assert!(body["error"]["classes"]
        .as_array()
        .unwrap()
        .contains(&json!("error")));
    let (status, body) = exec(&t, &id, "1 +* 2").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "parse_error");
    // The error did not lose the session's state.
    let (_, body) = call(
        "GET",
        &format!("/api/v1/sessions/{id}/objects/y"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(body, json!(["kept"]));
    let (status, _) = call(
        "GET",
        &format!("/api/v1/sessions/{id}/objects/nope"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        "GET",
        &format!("/api/v1/sessions/{id}/objects/a;b"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A value with no JSON form is not an error: the code ran.
    let (status, body) = exec(&t, &id, "cat('shown\\n'); g <- function() 1; g").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["note"].as_str().unwrap().contains("closure"));
    assert_eq!(body["stdout"], "shown\n", "the output of that call is kept");
    let (status, _) = call("DELETE", &format!("/api/v1/sessions/{id}"), Some(&t), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = exec(&t, &id, "1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_the_owner_or_an_admin_reaches_a_session() {
    let owner = user("olga", Role::Publisher, &[]);
    let other = user("oscar", Role::Publisher, &[]);
    let admin = super::token_for(&shared().server, "root");
    let id = open(&owner).await;
    exec(&owner, &id, "secret <- 42").await;
    for uri in [
        format!("/api/v1/sessions/{id}"),
        format!("/api/v1/sessions/{id}/objects/secret"),
        format!("/api/v1/sessions/{id}/files"),
    ] {
        let (status, body) = call("GET", &uri, Some(&other), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(
            body["error"]["message"],
            format!("session `{id}` not found")
        );
    }
    let (status, _) = exec(&other, &id, "secret").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call("GET", "/api/v1/sessions", Some(&other), None).await;
    assert!(!list.to_string().contains(&id));
    let (status, body) = call(
        "GET",
        &format!("/api/v1/sessions/{id}/objects/secret"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([42]));
    call(
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        Some(&owner),
        None,
    )
    .await;
}

#[tokio::test]
async fn files_live_in_the_session_folder_and_paths_cannot_leave_it() {
    let t = user("fiona", Role::Publisher, &[]);
    let other = user("felix", Role::Publisher, &[]);
    let id = open(&t).await;
    let theirs = open(&other).await;
    let router = &shared().router;
    let base = format!("/api/v1/sessions/{id}/files");
    let (status, _) = send(
        router,
        "PUT",
        &format!("{base}/data/in.csv"),
        Some(&t),
        Body::from("a,b\n1,2\n"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // R works in the same folder.
    let (status, body) = exec(
        &t,
        &id,
        "d <- read.csv('data/in.csv'); writeLines(as.character(d$a + d$b), 'out.txt'); d$b",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, bytes) = super::send_raw(
        router,
        "GET",
        &format!("{base}/out.txt"),
        Some(&t),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"3\n");
    let (_, listing) = call("GET", &base, Some(&t), None).await;
    let names: Vec<_> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"data/in.csv".to_owned()) && names.contains(&"out.txt".to_owned()),
        "{names:?}"
    );
    // Paths that try to leave the folder.
    for bad in [
        "../x",
        "data/../../x",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "./x",
        &"n".repeat(300),
    ] {
        let (status, body) = send(
            router,
            "PUT",
            &format!("{base}/{bad}"),
            Some(&t),
            Body::from("x"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let (status, _) = send(
            router,
            "GET",
            &format!("{base}/{bad}"),
            Some(&t),
            Body::empty(),
        )
        .await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad}: {status}"
        );
    }
    // A symlink made by R code that points into another user's session is not followed.
    send(
        router,
        "PUT",
        &format!("/api/v1/sessions/{theirs}/files/private.txt"),
        Some(&other),
        Body::from("felix only"),
    )
    .await;
    let target = shared()
        .server
        .state
        .config
        .data
        .join(format!("users/felix/sessions/{theirs}/private.txt"));
    assert!(target.exists());
    let code = format!("file.symlink({:?}, 'peek.txt')", target.to_str().unwrap());
    let (status, body) = exec(&t, &id, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        router,
        "GET",
        &format!("{base}/peek.txt"),
        Some(&t),
        Body::empty(),
    )
    .await;
    assert_ne!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("felix only"));
    let (status, _) = send(
        router,
        "PUT",
        &format!("{base}/peek.txt"),
        Some(&t),
        Body::from("overwritten"),
    )
    .await;
    assert_ne!(status, StatusCode::CREATED);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "felix only");
    let (status, _) = send(
        router,
        "DELETE",
        &format!("{base}/out.txt"),
        Some(&t),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        router,
        "GET",
        &format!("{base}/out.txt"),
        Some(&t),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (tok, sid) in [(&t, &id), (&other, &theirs)] {
        call(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            Some(tok),
            None,
        )
        .await;
    }
    assert!(!target.exists(), "closing a session removes its folder");
}

#[tokio::test]
async fn a_timeout_is_504_and_a_crash_502_and_the_session_goes_on() {
    let t = user("tim", Role::Publisher, &[]);
    let id = open(&t).await;
    exec(&t, &id, "before <- 1").await;
    let (status, body) = exec(&t, &id, "Sys.sleep(30)").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(code(&body), "timeout");
    let (status, body) = exec(&t, &id, "1 + 1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!(2));
    let (status, body) = exec(&t, &id, "tools::pskill(Sys.getpid(), 9L)").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(code(&body), "worker_died");
    let (status, body) = exec(&t, &id, "exists('before')").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!(false), "a new worker starts clean");
    call("DELETE", &format!("/api/v1/sessions/{id}"), Some(&t), None).await;
}

#[tokio::test]
async fn unknown_sessions_are_404() {
    let t = user("ulla", Role::Publisher, &[]);
    for id in ["not-a-uuid", "6f1c3c1e-3c55-4d2e-9d7e-0a4e1d1b2c3d"] {
        let (status, body) = call(
            "POST",
            &format!("/api/v1/sessions/{id}/execute"),
            Some(&t),
            Some(json!({"code": "1"})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, body) = call(
        "POST",
        "/api/v1/sessions/x/execute",
        Some(&t),
        Some(json!({"cod": "1"})),
    )
    .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
        "{body}"
    );
}

#[test]
fn idle_sessions_expire_and_each_user_has_a_session_limit() {
    let (server, _data) = super::server_with(|c| {
        c.limits.session_idle_secs = 1;
        c.limits.sessions_per_user = 1;
    });
    let router = server.router();
    let token = super::token_for(&server, "pub");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Three opens at once, a limit of one: exactly one gets a session.
        let open = || post_session(&router, &token);
        let (a, b, c) = tokio::join!(open(), open(), open());
        let created: Vec<_> = [&a, &b, &c]
            .into_iter()
            .filter(|r| r.0 == StatusCode::CREATED)
            .collect();
        assert_eq!(created.len(), 1, "{a:?} {b:?} {c:?}");
        for r in [&a, &b, &c]
            .into_iter()
            .filter(|r| r.0 != StatusCode::CREATED)
        {
            assert_eq!(r.0, StatusCode::CONFLICT, "{r:?}");
        }
        let id = created[0].1["id"].as_str().unwrap().to_owned();
        let folder = server
            .state
            .config
            .data
            .join(format!("users/pub/sessions/{id}"));
        assert!(folder.is_dir());
        assert_eq!(server.state.sessions.expire_idle().await, 0, "not idle yet");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(server.state.sessions.expire_idle().await, 1);
        let (status, _) = send(
            &router,
            "GET",
            &format!("/api/v1/sessions/{id}"),
            Some(&token),
            Body::empty(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!folder.exists(), "an expired session's folder is removed");
        let (status, _) = post_session(&router, &token).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "the limit counts open sessions only"
        );
        server.shut_down().await;
    });
}

#[test]
fn the_next_session_is_made_ready_ahead_for_its_owner_alone_and_discarded_unused() {
    let (server, _data) = super::server_with(|c| c.pool.session_ready_ms = 1500);
    let router = server.router();
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "ugo", Role::Publisher, super::PASSWORD).unwrap();
    let (rhea, ugo) = (
        super::token_for(&server, "pub"),
        super::token_for(&server, "ugo"),
    );
    let sessions = server.state.sessions.clone();
    let wait_ready = move |owner: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(id) = sessions.ready_for(owner) {
                return id.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "nothing made ready");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let open = |token: String| {
            let router = router.clone();
            async move {
                let (status, body) = post_session(&router, &token).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                body["id"].as_str().unwrap().to_owned()
            }
        };
        let run = |token: String, id: String, code: &'static str| {
            let router = router.clone();
            async move {
                let body = Body::from(json!({ "code": code }).to_string());
                let uri = format!("/api/v1/sessions/{id}/execute");
                let (status, body) = send(&router, "POST", &uri, Some(&token), body).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body["result"].clone()
            }
        };
        let first = open(rhea.clone()).await;
        run(
            rhea.clone(),
            first.clone(),
            "x <- 42; writeLines('a', 'a.txt')",
        )
        .await;
        let ready = tokio::task::spawn_blocking({
            let wait_ready = wait_ready.clone();
            move || wait_ready("pub")
        })
        .await
        .unwrap();
        // Another user opening now gets a session of their own, never pub's.
        let other = open(ugo.clone()).await;
        assert_ne!(other, ready);
        let wd = run(ugo.clone(), other.clone(), "getwd()").await;
        assert!(wd.to_string().contains("users/ugo/sessions"), "{wd}");
        // pub's next open takes the one made ready: a pristine worker in its own
        // folder and temp dir, which knows nothing of the first session.
        let second = open(rhea.clone()).await;
        assert_eq!(second, ready);
        let wd = run(rhea.clone(), second.clone(), "getwd()").await;
        let own = format!("users/pub/sessions/{second}");
        assert!(wd.as_str().is_some_and(|w| w.ends_with(&own)), "{wd}");
        let seen = run(
            rhea.clone(),
            second.clone(),
            "c(exists('x'), file.exists('a.txt'))",
        )
        .await;
        assert_eq!(seen, json!([false, false]));
        if rustix::process::geteuid().is_root() {
            // Confined: the session's own temp dir, named by its id.
            let temp = run(rhea.clone(), second.clone(), "basename(tempdir())").await;
            assert_eq!(temp, json!(second));
        }
        // The next one made ready is discarded unused after its TTL: worker, folder
        // and temp dir.
        let next = tokio::task::spawn_blocking(move || wait_ready("pub"))
            .await
            .unwrap();
        assert_ne!(next, second);
        let data = &server.state.config.data;
        let folder = data.join(format!("users/pub/sessions/{next}"));
        let temp = data.join(format!("users/pub/tmp/{next}"));
        assert!(folder.is_dir(), "{}", folder.display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while (folder.exists() || server.state.sessions.ready_for("pub").is_some())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            !folder.exists(),
            "an unused ready session's folder is removed"
        );
        assert!(!temp.exists(), "and its temp dir");
        assert_eq!(server.state.sessions.ready_for("pub"), None);
        for (token, id) in [(&rhea, &first), (&rhea, &second), (&ugo, &other)] {
            let uri = format!("/api/v1/sessions/{id}");
            send(&router, "DELETE", &uri, Some(token), Body::empty()).await;
        }
    });
}

/// The worker process whose working directory is `dir` (a session's worker).
fn worker_in(dir: &std::path::Path) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read_link(e.path().join("cwd")).ok()? == dir).then_some(pid)
    })
}

#[test]
fn a_ready_session_whose_worker_died_is_not_handed_out() {
    let (server, _data) = super::server_with(|c| c.pool.session_ready_ms = 60_000);
    let router = server.router();
    let token = super::token_for(&server, "pub");
    let sessions = server.state.sessions.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (status, body) = post_session(&router, &token).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let ready = loop {
            if let Some(id) = sessions.ready_for("pub") {
                break id.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "nothing made ready");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let folder = server
            .state
            .config
            .data
            .join(format!("users/pub/sessions/{ready}"));
        let pid = worker_in(&folder).expect("the ready session's worker");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The next open gets a working session of its own, not the dead one.
        let (status, body) = post_session(&router, &token).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_ne!(id, ready);
        let body = Body::from(json!({ "code": "1 + 1" }).to_string());
        let uri = format!("/api/v1/sessions/{id}/execute");
        let (status, out) = send(&router, "POST", &uri, Some(&token), body).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while folder.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!folder.exists(), "the dead one's folder is removed");
        server.shut_down().await;
    });
}
