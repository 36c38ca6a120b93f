//! OCAP mode (qap1.md §12): a QAP1 listener whose clients never log in and cannot run
//! arbitrary code. On connect the server sends `RsOC` with its capabilities, here the
//! function of one published service as an unguessable reference (class `OCref`),
//! fresh for each connection. The only command is `CMD_OCcall` with a call whose
//! first element is that reference; anything else gets ERR_disabled and a close, and
//! an unknown reference a close. Calls run statelessly on the service's warm workers.

use base64::Engine as _;
use rookery_engine::{CallOptions, Value};

use super::{Connection, End};
use crate::qap::frame::{self, cmd, dt, status};
use crate::qap::sexp;

impl Connection {
    /// Serves one OCAP connection for service `name/version`.
    pub(super) fn serve_ocap(mut self, name: &str, version: &str) {
        if let Err(super::End::Io(e)) = self.run_ocap(name, version) {
            tracing::debug!(conn = %self.id, error = %e, "QAP1 OCAP connection ended");
        }
    }

    fn run_ocap(&mut self, name: &str, version: &str) -> Result<(), End> {
        let Some(service) = self.state.services.get(name, version) else {
            tracing::warn!(service = %format!("{name}/{version}"), "OCAP service is not live");
            return Err(End::Close);
        };
        let function = service.record.function.clone();
        let reference =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let capability =
            Value::strings([reference.clone()]).with_attr("class", Value::strings(["OCref"]));
        let init = Value::named_list([(function.clone(), capability)]);
        let encoded = sexp::encode(&init).map_err(|_| End::Close)?;
        let mut payload = Vec::new();
        frame::push_param(&mut payload, dt::SEXP, &encoded);
        self.send(cmd::OC_INIT, &payload)?;
        loop {
            // An OCAP connection holds no session; it may be quiet as long as one.
            let max = self.state.config.limits.qap_max_message_bytes;
            let (command, payload) =
                self.read_message_after(super::listen::idle_timeout(&self.state), max)?;
            if command != cmd::OC_CALL {
                self.reply_err(status::DISABLED)?;
                return Err(End::Close);
            }
            let call = frame::decode_params(&payload)
                .ok()
                .and_then(|p| p.first().and_then(|p| p.as_sexp().ok()).map(<[u8]>::to_vec))
                .and_then(|bytes| sexp::decode_call(&bytes).ok());
            let Some(call) = call.filter(|c| c.head.as_str() == Some(reference.as_str())) else {
                tracing::warn!(conn = %self.id, "OCAP call without a valid reference");
                return Err(End::Close);
            };
            drop(payload);
            let done = self.oc_call(name, version, &function, call.args);
            self.message_held = None;
            done?;
        }
    }

    /// Calls the service's function (the live version now: an update in between is
    /// picked up) and answers its value, or Rserve's status 127.
    fn oc_call(
        &mut self,
        name: &str,
        version: &str,
        function: &str,
        args: Vec<(Option<String>, Value)>,
    ) -> Result<(), End> {
        let Some(service) = self.state.services.get(name, version) else {
            self.reply_err(status::R_ERROR)?;
            return Err(End::Close);
        };
        let named: Vec<(&str, &Value)> = args
            .iter()
            .map(|(tag, v)| (tag.as_deref().unwrap_or(""), v))
            .collect();
        let opts = CallOptions {
            timeout: Some(self.state.config.call_timeout()),
            cancel: None,
            // No user: the server's default cap.
            max_result_bytes: Some(self.state.config.limits.max_result_bytes),
        };
        let result = service.pool.call_with(function, &named, &opts);
        self.state.audit.record(crate::audit::Entry {
            request_id: &self.id,
            user: None,
            route: "CMD_OCcall",
            target: Some(format!("{name}/{version}")),
            code: None,
            outcome: if result.is_ok() { "ok" } else { "r_error" }.into(),
        });
        match result {
            Ok(v) => self.reply_value(&v),
            Err(e) => self.r_failure(&e.into()),
        }
    }
}
