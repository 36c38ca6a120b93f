//! The demo set-up of the README's first command: a user `demo` who may call the two
//! demo scoring services (`glm/1` and `rf/1`, the workload of docs/peers.md), an API
//! key for it, and a curl line that calls the glm service. Idempotent: a second run
//! keeps the user and services and only issues a new key.

use std::time::Duration;

use serde_json::json;

use crate::admin;
use crate::engine::{record_for, ServiceSpec, Services};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{service_grant, Role};

pub const DEMO_USER: &str = "demo";

/// R code that fits the demo models (docs/peers.md) and defines `score_glm` and
/// `score_rf`: what `serve --demo` publishes, `batch --demo` scores with, and
/// `rookery bench` measures.
pub const MODEL_CODE: &str = include_str!("demo_model.R");

/// What the operator is told once the demo is in place.
#[derive(Debug)]
pub struct DemoCredentials {
    /// Only when the user was created by this run (it is never stored).
    pub password: Option<String>,
    pub api_key: String,
}

fn inputs() -> serde_json::Value {
    let columns: Vec<_> = (1..=10)
        .map(|i| json!({"name": format!("x{i}"), "type": "double"}))
        .collect();
    json!({ "columns": columns })
}

/// Publishes the demo services (if missing) from `model_code` and makes sure the demo
/// user exists with a grant for each.
pub async fn install(state: &AppState, model_code: &str) -> Result<DemoCredentials, AppError> {
    for (name, function, description) in [
        (
            "glm",
            "score_glm",
            "Binomial glm on ten features: probability of class 1",
        ),
        (
            "rf",
            "score_rf",
            "Random forest (50 trees) on ten features: probability of class 1",
        ),
    ] {
        if state.services.get(name, "1").is_some() {
            continue;
        }
        let spec = ServiceSpec {
            name: name.into(),
            version: "1".into(),
            description: description.into(),
            code: model_code.into(),
            function: function.into(),
            inputs: inputs(),
            outputs: json!({"type": "array", "items": {"type": "number"}}),
            files: Default::default(),
            env: Default::default(),
        };
        let (schema, files) = Services::check(&spec)?;
        let previous = state.store.service(name, "1")?.filter(|p| !p.retired);
        let record = record_for(&spec, DEMO_USER, previous.as_ref());
        state
            .services
            .publish(record.clone(), schema, files)
            .await?;
        state.store.put_service(&record)?;
    }
    let store = state.store.as_ref();
    let password = match store.user(DEMO_USER)? {
        Some(_) => None,
        None => {
            let password = admin::random_password();
            admin::add_user(store, DEMO_USER, Role::User, &password)
                .map_err(|e| AppError::Internal(e.to_string()))?;
            Some(password)
        }
    };
    for name in ["glm", "rf"] {
        admin::grant(store, DEMO_USER, &service_grant(name))
            .map_err(|e| AppError::Internal(e.to_string()))?;
    }
    let api_key = admin::create_api_key(
        store,
        DEMO_USER,
        Some("demo"),
        Some(Duration::from_secs(30 * 86_400)),
    )
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(DemoCredentials { password, api_key })
}

/// A curl command that scores one row with the glm service.
pub fn curl_line(base_url: &str, api_key: &str) -> String {
    let row: Vec<String> = (1..=10)
        .map(|i| format!("\"x{i}\":{:.2}", (i as f64 - 5.5) / 10.0))
        .collect();
    format!(
        "curl -s -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \
         -d '[{{{}}}]' {base_url}/api/v1/services/glm/1",
        row.join(",")
    )
}
