//! Fuzz targets of the gRPC edge: request bodies' framing, and protobuf
//! requests converted into domain types (see `crate::fuzz`).

use prost::Message;
use tidal_proto::v1;

use super::convert;

#[cfg(test)]
#[path = "fuzz_test.rs"]
mod tests;

/// Target `grpc_framing`: a request body in chunks. The first byte says
/// whether the request names a compression (bit 0) and how many chunk
/// boundaries follow (bits 1..4), each one byte: where to cut. Cutting
/// the body anywhere gives the same verdict as feeding it whole.
pub fn grpc_framing(bytes: &[u8]) {
    let Some((&head, rest)) = bytes.split_first() else {
        return;
    };
    let compressed = head & 1 == 1;
    let cuts = usize::from((head >> 1) & 0x0f).min(rest.len());
    let (cuts, body) = rest.split_at(cuts);
    let mut chunked = super::framing::Scan::new(compressed);
    let mut at = 0usize;
    let mut verdict = Ok(());
    for &c in cuts {
        let end = (at + usize::from(c)).min(body.len());
        verdict = chunked.feed(&body[at..end]);
        at = end;
        if verdict.is_err() {
            break;
        }
    }
    let verdict = verdict
        .and_then(|()| chunked.feed(&body[at..]))
        .and_then(|()| chunked.finish());
    let mut whole = super::framing::Scan::new(compressed);
    let once = whole.feed(body).and_then(|()| whole.finish());
    assert_eq!(
        verdict.map_err(|s| s.message().to_string()),
        once.map_err(|s| s.message().to_string()),
        "the verdict does not depend on where the body is cut"
    );
}

/// Target `proto_to_domain`: a request message as the API's codec decodes
/// it, converted into domain types and validated as the handlers do. The
/// first byte picks the message.
pub fn proto_to_domain(bytes: &[u8]) {
    let Some((&which, msg)) = bytes.split_first() else {
        return;
    };
    let limits = tidal_core::Limits::default();
    match which % 6 {
        0 => {
            if let Ok(req) = v1::SubmitRequest::decode(msg) {
                for spec in req.tasks {
                    // The placement fields parse and echo back to the same ask.
                    if let Ok(ask) = super::convert_placement::ask_from(&spec) {
                        // As Get shows it: the spec's GPUs are the first
                        // shape's, and it reads back as it is.
                        let (gpus, gpu_memory_mb) = ask
                            .shapes
                            .first()
                            .map_or((spec.gpus, spec.gpu_memory_mb), |f| {
                                (f.count, f.min_memory_mb)
                            });
                        let mut echoed = v1::TaskSpec {
                            gpus,
                            gpu_memory_mb,
                            ..Default::default()
                        };
                        super::convert_placement::ask_into(&ask, &mut echoed);
                        assert_eq!(
                            super::convert_placement::ask_from(&echoed).ok(),
                            Some(ask),
                            "an echoed ask reads back"
                        );
                    }
                    if let Ok(spec) = convert::spec_from(spec) {
                        let _ = tidal_core::limits::validate_task_spec(&spec, &limits);
                    }
                }
            }
        }
        1 => {
            if let Ok(req) = v1::AgentMessage::decode(msg) {
                match req.msg {
                    Some(v1::agent_message::Msg::Register(r)) => {
                        let spec = convert::agent_spec_from(r.spec.unwrap_or_default());
                        let _ = tidal_core::limits::validate_agent_spec(&spec, &limits);
                        for run in r.running.iter().chain(&r.fenced) {
                            let _ = convert::task_id(&run.task_id);
                        }
                    }
                    Some(v1::agent_message::Msg::Started(s)) => {
                        let _ = convert::task_id(&s.task_id);
                    }
                    Some(v1::agent_message::Msg::Completed(c)) => {
                        let _ = convert::task_id(&c.task_id);
                    }
                    Some(v1::agent_message::Msg::Checkpoint(c)) => {
                        let _ = convert::task_id(&c.task_id);
                    }
                    Some(v1::agent_message::Msg::Heartbeat(_)) | None => {}
                }
            }
        }
        2 => {
            if let Ok(req) = v1::GetTaskRequest::decode(msg) {
                let _ = convert::task_id(&req.id);
            }
        }
        3 => {
            if let Ok(req) = v1::ListTasksRequest::decode(msg) {
                let _ = convert::state_kind_from(req.state);
                if !req.after_id.is_empty() {
                    let _ = convert::task_id(&req.after_id);
                }
            }
        }
        4 => {
            if let Ok(req) = v1::CancelTaskRequest::decode(msg) {
                let _ = convert::task_id(&req.id);
            }
        }
        // The settings requests share a selector, so the corpus keeps its meaning.
        _ => {
            if let Ok(req) = v1::SetQueueRequest::decode(msg) {
                let _ = tidal_core::limits::validate_name("queue", &req.name, &limits);
                let _ = super::convert_placement::strategy_from(&req.strategy, &req.spread_key);
            }
            if let Ok(req) = v1::SetTenantRequest::decode(msg) {
                let _ = tidal_core::limits::validate_name("tenant", &req.name, &limits);
                let _ = super::tenant_service::limits_from(req.limits);
            }
        }
    }
}
