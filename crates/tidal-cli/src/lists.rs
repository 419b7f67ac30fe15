//! Parsing of list-valued flags: `--gpus MODEL:MEM_MB,...`, `--labels k=v,...`.
//!
//! clap splits on commas; these parse one item each.

use std::collections::BTreeMap;

use tidal_proto::v1::Gpu;

/// One GPU, `MODEL:MEM_MB` (e.g. `A100:81920`). The model may itself contain
/// `:`; the memory is after the last one.
pub fn parse_gpu(s: &str) -> Result<Gpu, String> {
    let (model, mem) = s
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("GPU {s:?} is not MODEL:MEM_MB (e.g. A100:81920)"))?;
    if model.is_empty() {
        return Err(format!(
            "GPU {s:?} has no model (expected MODEL:MEM_MB, e.g. A100:81920)"
        ));
    }
    let memory_mb = mem.parse::<u64>().map_err(|_| {
        format!("GPU {s:?}: memory {mem:?} is not a number of MB (e.g. A100:81920)")
    })?;
    Ok(Gpu {
        model: model.to_string(),
        memory_mb,
    })
}

/// One label, `KEY=VALUE` (the value may be empty or contain `=`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Labels into a map; a key given twice is an error rather than a silent overwrite.
pub fn labels_map(labels: Vec<(String, String)>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, v) in labels {
        if let Some(old) = map.insert(k.clone(), v) {
            return Err(format!("label {k:?} is given twice (first as {k}={old})"));
        }
    }
    Ok(map)
}

/// Drops surrounding spaces and rejects empty items (`a,,b`), naming the flag.
pub fn clean(flag: &str, items: Vec<String>) -> Result<Vec<String>, String> {
    items
        .into_iter()
        .map(|s| {
            let t = s.trim();
            if t.is_empty() {
                Err(format!(
                    "{flag} has an empty item (two commas in a row, or a trailing comma)"
                ))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "lists_test.rs"]
mod tests;
