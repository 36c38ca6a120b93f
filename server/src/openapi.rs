//! The OpenAPI 3.1 description of the API (`GET /api/v1/openapi.json`), with one
//! concrete path per live service carrying its declared input schema. Owns the
//! document only; the routes themselves are in `routes`.

use std::sync::Arc;

use serde_json::{json, Map, Value as Json_};

use crate::engine::LiveService;

fn op(summary: &str, tag: &str, ok: &str) -> Json_ {
    json!({
        "summary": summary,
        "tags": [tag],
        "responses": {
            ok: { "description": "success" },
            "default": { "$ref": "#/components/responses/Error" },
        },
    })
}

fn with_body(mut op: Json_, schema: Json_) -> Json_ {
    op["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": schema } },
    });
    op
}

fn id_param(name: &str) -> Json_ {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

fn fixed_paths() -> Map<String, Json_> {
    let code =
        json!({"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}});
    let login = json!({"type": "object", "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string", "format": "password"}}});
    let spec = json!({"type": "object", "required": ["name", "version", "code", "function", "inputs"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
            "description": {"type": "string"}, "code": {"type": "string"},
            "function": {"type": "string"}, "inputs": {"type": "object"}, "outputs": {},
            "files": {"type": "object", "additionalProperties": {"type": "string", "contentEncoding": "base64"}},
            "env": {"type": "object", "writeOnly": true,
                "description": "Environment variables only this service's workers see; never returned. Names: [A-Za-z_][A-Za-z0-9_]*, not PATH, HOME, USER, LOGNAME, TMPDIR, SHELL or R_*, LD_*, ROOKERY_*.",
                "additionalProperties": {"type": "string"}}}});
    let mut p = Map::new();
    let mut add = |path: &str, item: Json_| {
        p.insert(format!("/api/v1{path}"), item);
    };
    add(
        "/login",
        json!({"post": with_body(op("Log in; returns a bearer token", "auth", "200"), login)}),
    );
    add(
        "/logout",
        json!({"post": op("Revoke the token of this request", "auth", "204")}),
    );
    add(
        "/me",
        json!({"get": op("Who the token belongs to", "auth", "200")}),
    );
    add(
        "/sessions",
        json!({
        "post": op("Open a session (one R process, a private GUID folder; in a cluster its \
            id is NODE.UUID and any node reaches it)", "sessions", "201"),
        "get": op("List your sessions (in a cluster, on every live node; \
            `unreachable_nodes` names any that did not answer)", "sessions", "200")}),
    );
    add(
        "/sessions/{id}",
        json!({"parameters": [id_param("id")],
        "get": op("Describe a session", "sessions", "200"),
        "delete": op("Close a session and remove its folder", "sessions", "204")}),
    );
    add(
        "/sessions/{id}/execute",
        json!({"parameters": [id_param("id")],
        "post": with_body(op("Run R code in the session", "sessions", "200"), code)}),
    );
    add(
        "/sessions/{id}/objects/{name}",
        json!({"parameters": [id_param("id"), id_param("name")],
        "get": op("A session variable as JSON", "sessions", "200")}),
    );
    add(
        "/sessions/{id}/files",
        json!({"parameters": [id_param("id")],
        "get": op("List the session's files", "files", "200")}),
    );
    add(
        "/sessions/{id}/files/{path}",
        json!({"parameters": [id_param("id"), id_param("path")],
        "get": op("Download a file (sent as it is read, with its Content-Length)", "files", "200"),
        "put": op("Upload a file (raw body, any size up to limits.max_body_bytes, written to disk \
            as it arrives; the file appears whole once all of it has arrived, or not at all)", "files", "201"),
        "delete": op("Delete a file", "files", "204")}),
    );
    add(
        "/services",
        json!({
        "post": with_body(op("Publish or update a service version", "services", "201"), spec),
        "get": op("List the services you may call", "services", "200")}),
    );
    add(
        "/services/{name}/{version}",
        json!({"parameters": [id_param("name"), id_param("version")],
        "get": op("Describe a service version", "services", "200"),
        "post": op("Call a service (JSON records/columns or Arrow IPC)", "services", "200"),
        "delete": op("Retire a service version", "services", "204")}),
    );
    add(
        "/services/{name}/{version}/batch",
        json!({"parameters": [id_param("name"), id_param("version")],
        "post": op("Start a batch job over a table", "jobs", "202")}),
    );
    add(
        "/jobs/{id}",
        json!({"parameters": [id_param("id")],
        "get": op("A job's state, progress and result", "jobs", "200"),
        "delete": op("Cancel a job", "jobs", "202")}),
    );
    add(
        "/jobs/{id}/result",
        json!({"parameters": [id_param("id")],
        "get": op("A finished job's result", "jobs", "200")}),
    );
    add(
        "/users",
        json!({"get": op("List users (admin)", "admin", "200"),
        "post": op("Create a user (admin)", "admin", "201")}),
    );
    add(
        "/users/{name}",
        json!({"parameters": [id_param("name")],
        "delete": op("Remove a user, its keys and folder (admin)", "admin", "204")}),
    );
    add(
        "/users/{name}/grants/{grant}",
        json!({"parameters": [id_param("name"), id_param("grant")],
        "put": op("Give a grant (admin)", "admin", "204"),
        "delete": op("Take a grant (admin)", "admin", "204")}),
    );
    add(
        "/nodes",
        json!({"get": op("The nodes of the cluster, their load and heartbeat (admin)", "admin", "200")}),
    );
    add(
        "/audit",
        json!({"get": op("The newest audit entries (admin)", "admin", "200")}),
    );
    p
}

fn service_path(s: &LiveService) -> Json_ {
    let input = s.schema.to_json_schema();
    let output = if s.record.outputs.is_null() {
        json!({})
    } else {
        s.record.outputs.clone()
    };
    json!({"post": {
        "summary": if s.record.description.is_empty() { format!("Call {}", s.record.name) } else { s.record.description.clone() },
        "tags": ["published services"],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": input},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "contentMediaType": "application/vnd.apache.arrow.stream"}},
        }},
        "responses": {
            "200": {"description": "the function's result", "content": {
                "application/json": {"schema": {"type": "object", "properties": {"result": output}}},
                "application/vnd.apache.arrow.stream": {},
            }},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }})
}

/// The whole document.
pub fn document(services: &[Arc<LiveService>]) -> Json_ {
    let mut paths = fixed_paths();
    for s in services {
        let path = format!("/api/v1/services/{}/{}", s.record.name, s.record.version);
        paths.insert(path, service_path(s));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Rookery",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run R code fast and safely: sessions, published services, batch jobs.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "an error. `code` names it: 400 `bad_request`, \
                `invalid_input`; 401 `unauthenticated`; 403 `forbidden`; 404 `not_found`; 408 \
                `request_timeout`; 413 `too_large` (a request body over limits.max_body_bytes); \
                422 `r_error`, `parse_error`, `unsupported_value`, `out_of_memory`, and \
                `result_too_large` (the call's value is over the caller's \
                limits.max_result_bytes: `bytes` and `limit` say by how much; keep the data \
                in the session and return a part, or write a file and download it with the \
                files API); 429 `too_many_bytes_in_flight`, `rate_limited`; 503 `busy`, \
                `memory_busy` (limits.max_inflight_bytes, with Retry-After), `login_busy` (every \
                password hasher stayed taken for 10 s, with Retry-After), `unavailable`, \
                `store_unavailable` (a cluster's PostgreSQL does not answer); 504 `timeout`; \
                502 `worker_died`, `node_unreachable` (the cluster node holding the session \
                does not answer); 410 `session_gone` (the cluster node that held the session \
                has stopped)",
                "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "call": {"type": ["string", "null"]}, "classes": {"type": "array", "items": {"type": "string"}},
                    "bytes": {"type": "integer", "description": "result_too_large: the result's size in bytes"},
                    "limit": {"type": "integer", "description": "result_too_large: the caller's cap in bytes"},
                }}},
            }}}}},
        },
    })
}
