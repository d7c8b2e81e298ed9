//! Loading backbone weights saved by Hugging Face `transformers` (safetensors).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, fit_pos_embed, read_tensor};
use crate::config::VitConfig;
use crate::error::{LoraError, Result, check_shape};

/// The naming scheme of a Hugging Face checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HfLayout {
    /// `ViTModel` / `ViTForImageClassification` (e.g. `google/vit-base-patch16-224`):
    /// `[vit.]embeddings.patch_embeddings.projection.weight`,
    /// `[vit.]encoder.layer.N.attention.attention.{query,key,value}`,
    /// `…attention.output.dense`, `…layernorm_before/after`,
    /// `…intermediate.dense`, `…output.dense`, `[vit.]layernorm`.
    VitBase,
    /// `Dinov2Model` (e.g. `facebook/dinov2-small`): `[dinov2.]embeddings.*`,
    /// `encoder.layer.N.norm1/norm2`, `…attention.attention.{query,key,value}`,
    /// `…attention.output.dense`, `…layer_scale{1,2}.lambda1`,
    /// `…mlp.fc1/fc2`, `layernorm`.
    Dinov2,
}

impl HfLayout {
    fn prefixes(self) -> [&'static str; 2] {
        match self {
            Self::VitBase => ["vit.", ""],
            Self::Dinov2 => ["dinov2.", ""],
        }
    }

    /// `(hf name, canonical name)` pairs for block `i`, without the model prefix.
    fn block_names(self, i: usize, layer_scale: bool) -> Vec<(String, String)> {
        let h = format!("encoder.layer.{i}");
        let c = format!("blocks.{i}");
        let (n1, n2, fc1, fc2) = match self {
            Self::VitBase => (
                "layernorm_before",
                "layernorm_after",
                "intermediate.dense",
                "output.dense",
            ),
            Self::Dinov2 => ("norm1", "norm2", "mlp.fc1", "mlp.fc2"),
        };
        let mut v = Vec::new();
        for wb in ["weight", "bias"] {
            v.push((format!("{h}.{n1}.{wb}"), format!("{c}.norm1.{wb}")));
            v.push((format!("{h}.{n2}.{wb}"), format!("{c}.norm2.{wb}")));
            for (hn, cn) in [("query", "q"), ("key", "k"), ("value", "v")] {
                v.push((
                    format!("{h}.attention.attention.{hn}.{wb}"),
                    format!("{c}.attn.{cn}.{wb}"),
                ));
            }
            v.push((
                format!("{h}.attention.output.dense.{wb}"),
                format!("{c}.attn.o.{wb}"),
            ));
            v.push((format!("{h}.{fc1}.{wb}"), format!("{c}.mlp.fc1.{wb}")));
            v.push((format!("{h}.{fc2}.{wb}"), format!("{c}.mlp.fc2.{wb}")));
        }
        if layer_scale {
            v.push((format!("{h}.layer_scale1.lambda1"), format!("{c}.ls1")));
            v.push((format!("{h}.layer_scale2.lambda1"), format!("{c}.ls2")));
        }
        v
    }
}

/// Reads a Hugging Face safetensors checkpoint in `layout` into a backbone of
/// shape `config` (the classifier, pooler and mask token are ignored).
/// Position embeddings trained at another resolution are interpolated
/// bilinearly to the grid of `config`.
///
/// # Errors
/// [`LoraError::Io`] naming the file, else as [`load_hf_backbone_bytes`].
pub fn load_hf_backbone(path: &Path, config: &VitConfig, layout: HfLayout) -> Result<Backbone> {
    let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_hf_backbone_bytes(&bytes, config, layout, &path.display().to_string())
}

/// As [`load_hf_backbone`] from bytes; `source_name` labels errors.
///
/// # Errors
/// [`LoraError::InvalidConfig`] if `config.layer_scale` does not match the
/// layout (DINOv2 has LayerScale, ViT-Base has not), [`LoraError::WeightFile`]
/// for unparsable bytes, [`LoraError::MissingTensor`] / [`LoraError::Shape`]
/// naming the Hugging Face tensor and its expected shape.
pub fn load_hf_backbone_bytes(
    bytes: &[u8],
    config: &VitConfig,
    layout: HfLayout,
    source_name: &str,
) -> Result<Backbone> {
    config.validate()?;
    check_layer_scale(config, layout)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| LoraError::WeightFile {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    let names = st.names();
    assemble(
        config,
        layout,
        source_name,
        |name| names.contains(&name),
        |name, expected| read_tensor(&st, name, expected, source_name),
    )
}

/// As [`load_hf_backbone_bytes`] from tensors already in memory, keyed by
/// their Hugging Face names (for converters that read another format, such
/// as an ONNX export).
///
/// # Errors
/// As [`load_hf_backbone_bytes`], but for unparsable bytes.
pub fn load_hf_backbone_tensors(
    tensors: &BTreeMap<String, Tensor>,
    config: &VitConfig,
    layout: HfLayout,
    source_name: &str,
) -> Result<Backbone> {
    config.validate()?;
    check_layer_scale(config, layout)?;
    assemble(
        config,
        layout,
        source_name,
        |name| tensors.contains_key(name),
        |name, expected| {
            tensors
                .get(name)
                .map(|t| t.to_dtype(candle_core::DType::F32))
                .transpose()?
                .ok_or_else(|| LoraError::MissingTensor {
                    name: name.to_owned(),
                    expected: expected.to_vec(),
                    source_name: source_name.to_owned(),
                })
        },
    )
}

fn check_layer_scale(config: &VitConfig, layout: HfLayout) -> Result<()> {
    let wants_ls = layout == HfLayout::Dinov2;
    if config.layer_scale.is_some() != wants_ls {
        return Err(LoraError::InvalidConfig {
            field: "layer_scale",
            reason: format!(
                "the {layout:?} layout {} LayerScale",
                if wants_ls { "has" } else { "has no" }
            ),
        });
    }
    Ok(())
}

/// Maps the Hugging Face names onto the canonical ones; `has` says whether a
/// name exists, `read` reads one as `f32` (shape unchecked).
fn assemble(
    config: &VitConfig,
    layout: HfLayout,
    source_name: &str,
    has: impl Fn(&str) -> bool,
    read: impl Fn(&str, &[usize]) -> Result<Tensor>,
) -> Result<Backbone> {
    let wants_ls = layout == HfLayout::Dinov2;
    let prefix = layout
        .prefixes()
        .into_iter()
        .find(|p| has(&format!("{p}embeddings.cls_token")))
        .ok_or_else(|| LoraError::MissingTensor {
            name: format!("{}embeddings.cls_token", layout.prefixes()[0]),
            expected: vec![1, 1, config.width],
            source_name: source_name.to_owned(),
        })?;
    let (d, c, p) = (config.width, config.in_channels, config.patch_size);
    let mut map: BTreeMap<String, Tensor> = BTreeMap::new();
    let get = |hf: &str, expected: &[usize]| -> Result<Tensor> {
        let name = format!("{prefix}{hf}");
        let t = read(&name, expected)?;
        if !name.ends_with("position_embeddings") {
            check_shape(&name, expected, t.dims())?;
        }
        Ok(t)
    };
    let e = "embeddings";
    let pw = get(
        &format!("{e}.patch_embeddings.projection.weight"),
        &[d, c, p, p],
    )?;
    map.insert("patch_embed.weight".into(), pw.reshape((d, c * p * p))?);
    map.insert(
        "patch_embed.bias".into(),
        get(&format!("{e}.patch_embeddings.projection.bias"), &[d])?,
    );
    map.insert(
        "cls_token".into(),
        get(&format!("{e}.cls_token"), &[1, 1, d])?.reshape(d)?,
    );
    let pos_name = format!("{e}.position_embeddings");
    let pos = get(&pos_name, &[1, config.num_tokens(), d])?;
    let pos = match pos.dims() {
        [1, t, dd] => pos.reshape((*t, *dd))?,
        other => {
            return Err(LoraError::Shape {
                what: format!("{prefix}{pos_name}"),
                expected: vec![1, config.num_tokens(), d],
                got: other.to_vec(),
            });
        }
    };
    map.insert(
        "pos_embed".into(),
        fit_pos_embed(&format!("{prefix}{pos_name}"), &pos, config)?,
    );
    let shapes: BTreeMap<String, Vec<usize>> = crate::backbone::expected_shapes(config)
        .into_iter()
        .collect();
    for i in 0..config.depth {
        for (hf, canon) in layout.block_names(i, wants_ls) {
            let shape = shapes.get(&canon).cloned().unwrap_or_default();
            map.insert(canon, get(&hf, &shape)?);
        }
    }
    for wb in ["weight", "bias"] {
        map.insert(format!("norm.{wb}"), get(&format!("layernorm.{wb}"), &[d])?);
    }
    Backbone::from_tensors(config, map)
}
