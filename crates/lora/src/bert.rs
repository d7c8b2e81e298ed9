//! Loading a Hugging Face BERT checkpoint (`BertModel` naming, e.g.
//! sentence-transformers' all-MiniLM-L6-v2) as a text-encoder [`Backbone`].
//!
//! The name map (HF → ours): `embeddings.word_embeddings.weight` →
//! `embed.word`, `…position_embeddings.weight` → `embed.pos`,
//! `…token_type_embeddings.weight` → `embed.type`, `embeddings.LayerNorm` →
//! `embed.norm`; in block `N` (`encoder.layer.N`): `attention.self.{query,
//! key,value}` → `blocks.N.attn.{q,k,v}`, `attention.output.dense` →
//! `attn.o`, `attention.output.LayerNorm` → `norm1`, `intermediate.dense` →
//! `mlp.fc1`, `output.dense` → `mlp.fc2`, `output.LayerNorm` → `norm2`. The
//! pooler and `position_ids` are ignored; an optional `bert.` prefix is
//! accepted.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::SafeTensors;
use serde::Deserialize;

use crate::backbone::{Backbone, expected_shapes, read_tensor};
use crate::config::{TextStem, VitConfig};
use crate::error::{LoraError, Result, check_shape};

/// The fields of a Hugging Face BERT `config.json` that fix the shapes.
#[derive(Debug, Deserialize)]
struct HfBertConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

/// The encoder configuration of a Hugging Face BERT `config.json`, for
/// sequences of `seq_len` tokens.
///
/// # Errors
/// [`LoraError::WeightFile`] naming `source_name` for malformed JSON, a
/// missing field, an activation other than exact GELU (`gelu`) or position
/// embeddings other than `absolute`; [`LoraError::InvalidConfig`] for
/// inconsistent shapes.
pub fn bert_config_from_hf(json: &str, seq_len: usize, source_name: &str) -> Result<VitConfig> {
    let bad = |reason: String| LoraError::WeightFile {
        source_name: source_name.to_owned(),
        reason,
    };
    let c: HfBertConfig =
        serde_json::from_str(json).map_err(|e| bad(format!("not a BERT config.json: {e}")))?;
    if c.hidden_act != "gelu" {
        return Err(bad(format!(
            "hidden_act `{}`: only exact GELU (`gelu`) is implemented",
            c.hidden_act
        )));
    }
    if let Some(p) = c
        .position_embedding_type
        .as_deref()
        .filter(|&p| p != "absolute")
    {
        return Err(bad(format!(
            "position_embedding_type `{p}`: only `absolute` is implemented"
        )));
    }
    let mut cfg = VitConfig::bert(
        TextStem {
            vocab_size: c.vocab_size,
            max_positions: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
            seq_len,
        },
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
    );
    cfg.ln_eps = c.layer_norm_eps;
    cfg.validate()?;
    Ok(cfg)
}

/// `(hf name, canonical name)` for every tensor of a BERT encoder of
/// `depth` blocks, without the model prefix.
fn bert_names(depth: usize) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            "embed.word".to_owned(),
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            "embed.pos".to_owned(),
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            "embed.type".to_owned(),
        ),
    ];
    for wb in ["weight", "bias"] {
        v.push((
            format!("embeddings.LayerNorm.{wb}"),
            format!("embed.norm.{wb}"),
        ));
    }
    for i in 0..depth {
        let (h, c) = (format!("encoder.layer.{i}"), format!("blocks.{i}"));
        for wb in ["weight", "bias"] {
            for (hn, cn) in [
                ("attention.self.query", "attn.q"),
                ("attention.self.key", "attn.k"),
                ("attention.self.value", "attn.v"),
                ("attention.output.dense", "attn.o"),
                ("attention.output.LayerNorm", "norm1"),
                ("intermediate.dense", "mlp.fc1"),
                ("output.dense", "mlp.fc2"),
                ("output.LayerNorm", "norm2"),
            ] {
                v.push((format!("{h}.{hn}.{wb}"), format!("{c}.{cn}.{wb}")));
            }
        }
    }
    v
}

/// Reads a Hugging Face BERT safetensors checkpoint into a text-encoder
/// backbone of shape `config` (which must have [`VitConfig::text`]).
///
/// # Errors
/// [`LoraError::WeightFile`] for an unreadable file or a config without a
/// text stem; [`LoraError::MissingTensor`] / [`LoraError::Shape`] naming the
/// tensor and the file.
pub fn load_hf_bert_bytes(bytes: &[u8], config: &VitConfig, source_name: &str) -> Result<Backbone> {
    config.validate()?;
    if !config.is_text() {
        return Err(LoraError::InvalidConfig {
            field: "text",
            reason: "a BERT checkpoint needs a text-encoder configuration".into(),
        });
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| LoraError::WeightFile {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    let names = st.names();
    let prefix = ["", "bert."]
        .into_iter()
        .find(|p| names.contains(&&*format!("{p}embeddings.word_embeddings.weight")))
        .ok_or_else(|| LoraError::MissingTensor {
            name: "embeddings.word_embeddings.weight".into(),
            expected: vec![config.text.map_or(0, |s| s.vocab_size), config.width],
            source_name: source_name.to_owned(),
        })?;
    let shapes: BTreeMap<String, Vec<usize>> = expected_shapes(config).into_iter().collect();
    let mut map = BTreeMap::new();
    for (hf, canon) in bert_names(config.depth) {
        let shape = shapes.get(&canon).cloned().unwrap_or_default();
        let name = format!("{prefix}{hf}");
        let t = read_tensor(&st, &name, &shape, source_name)?;
        check_shape(&format!("{source_name}: {name}"), &shape, t.dims())?;
        map.insert(canon, t);
    }
    Backbone::from_tensors(config, map)
}

/// Reads the model directory of a Hugging Face BERT (`config.json` and
/// `model.safetensors`) for sequences of `seq_len` tokens.
///
/// # Errors
/// [`LoraError::Io`] naming a missing file, else as
/// [`bert_config_from_hf`] and [`load_hf_bert_bytes`].
pub fn load_hf_bert(dir: &Path, seq_len: usize) -> Result<Backbone> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|source| LoraError::Io { path, source })
    };
    let json = read("config.json")?;
    let source = dir.join("config.json").display().to_string();
    let json = String::from_utf8(json).map_err(|e| LoraError::WeightFile {
        source_name: source.clone(),
        reason: e.to_string(),
    })?;
    let config = bert_config_from_hf(&json, seq_len, &source)?;
    let weights = read("model.safetensors")?;
    load_hf_bert_bytes(
        &weights,
        &config,
        &dir.join("model.safetensors").display().to_string(),
    )
}
