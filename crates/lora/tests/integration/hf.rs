//! Loading Hugging Face safetensors layouts (files written here with tiny shapes).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use wflora_lora::{
    Backbone, HfLayout, LoraError, VitConfig, interpolate_pos_embed_bicubic, load_hf_backbone,
    load_hf_backbone_bytes,
};

use crate::common::{flat, small_config};

/// `(name, shape, values)` of a checkpoint.
type Entries = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Spells out the Hugging Face names by hand for a canonical backbone.
fn hf_entries(bb: &Backbone, layout: HfLayout, prefix: &str) -> Entries {
    let cfg = bb.config();
    let (d, c, p) = (cfg.width, cfg.in_channels, cfg.patch_size);
    let g = |n: &str| flat(bb.get(n).unwrap());
    let mut e: Entries = vec![
        (
            format!("{prefix}embeddings.patch_embeddings.projection.weight"),
            vec![d, c, p, p],
            g("patch_embed.weight"),
        ),
        (
            format!("{prefix}embeddings.patch_embeddings.projection.bias"),
            vec![d],
            g("patch_embed.bias"),
        ),
        (
            format!("{prefix}embeddings.cls_token"),
            vec![1, 1, d],
            g("cls_token"),
        ),
        (
            format!("{prefix}embeddings.position_embeddings"),
            vec![1, cfg.num_tokens(), d],
            g("pos_embed"),
        ),
        (
            format!("{prefix}layernorm.weight"),
            vec![d],
            g("norm.weight"),
        ),
        (format!("{prefix}layernorm.bias"), vec![d], g("norm.bias")),
        // Tensors the loader must ignore.
        (
            format!("{prefix}embeddings.mask_token"),
            vec![1, d],
            vec![0.5; d],
        ),
        ("classifier.weight".into(), vec![5, d], vec![0.25; 5 * d]),
    ];
    for i in 0..cfg.depth {
        let h = format!("{prefix}encoder.layer.{i}");
        let b = format!("blocks.{i}");
        let pairs: Vec<(String, String)> = match layout {
            HfLayout::VitBase => vec![
                (format!("{h}.layernorm_before"), format!("{b}.norm1")),
                (format!("{h}.layernorm_after"), format!("{b}.norm2")),
                (
                    format!("{h}.attention.attention.query"),
                    format!("{b}.attn.q"),
                ),
                (
                    format!("{h}.attention.attention.key"),
                    format!("{b}.attn.k"),
                ),
                (
                    format!("{h}.attention.attention.value"),
                    format!("{b}.attn.v"),
                ),
                (format!("{h}.attention.output.dense"), format!("{b}.attn.o")),
                (format!("{h}.intermediate.dense"), format!("{b}.mlp.fc1")),
                (format!("{h}.output.dense"), format!("{b}.mlp.fc2")),
            ],
            HfLayout::Dinov2 => vec![
                (format!("{h}.norm1"), format!("{b}.norm1")),
                (format!("{h}.norm2"), format!("{b}.norm2")),
                (
                    format!("{h}.attention.attention.query"),
                    format!("{b}.attn.q"),
                ),
                (
                    format!("{h}.attention.attention.key"),
                    format!("{b}.attn.k"),
                ),
                (
                    format!("{h}.attention.attention.value"),
                    format!("{b}.attn.v"),
                ),
                (format!("{h}.attention.output.dense"), format!("{b}.attn.o")),
                (format!("{h}.mlp.fc1"), format!("{b}.mlp.fc1")),
                (format!("{h}.mlp.fc2"), format!("{b}.mlp.fc2")),
            ],
        };
        for (hn, cn) in pairs {
            for wb in ["weight", "bias"] {
                let t = bb.get(&format!("{cn}.{wb}")).unwrap();
                e.push((format!("{hn}.{wb}"), t.dims().to_vec(), flat(t)));
            }
        }
        if layout == HfLayout::Dinov2 {
            e.push((
                format!("{h}.layer_scale1.lambda1"),
                vec![d],
                g(&format!("{b}.ls1")),
            ));
            e.push((
                format!("{h}.layer_scale2.lambda1"),
                vec![d],
                g(&format!("{b}.ls2")),
            ));
        }
    }
    e
}

fn write(entries: &Entries, f64_values: bool) -> Vec<u8> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = entries
        .iter()
        .map(|(n, s, v)| {
            let bytes = if f64_values {
                v.iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (n.clone(), s.clone(), bytes)
        })
        .collect();
    let dtype = if f64_values { Dtype::F64 } else { Dtype::F32 };
    let views: Vec<(&str, TensorView<'_>)> = raw
        .iter()
        .map(|(n, s, b)| (n.as_str(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn vit_config() -> VitConfig {
    VitConfig {
        layer_scale: None,
        ln_eps: 1e-12,
        ..small_config()
    }
}

fn assert_same(a: &Backbone, b: &Backbone) {
    for ((n1, t1), (n2, t2)) in a.iter().zip(b.iter()) {
        assert_eq!(n1, n2);
        assert_eq!(flat(t1), flat(t2), "{n1}");
    }
}

#[test]
fn vit_base_layout_with_prefix_loads_exactly() {
    let cfg = vit_config();
    let bb = Backbone::random(&cfg, 8).unwrap();
    let bytes = write(&hf_entries(&bb, HfLayout::VitBase, "vit."), false);
    let path =
        std::env::temp_dir().join(format!("wflora-hf-vit-{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let loaded = load_hf_backbone(&path, &cfg, HfLayout::VitBase).unwrap();
    assert_same(&bb, &loaded);
    let _ = std::fs::remove_file(&path);
    // Without the `vit.` prefix (ViTModel) too.
    let bytes = write(&hf_entries(&bb, HfLayout::VitBase, ""), false);
    assert_same(
        &bb,
        &load_hf_backbone_bytes(&bytes, &cfg, HfLayout::VitBase, "mem").unwrap(),
    );
}

#[test]
fn dinov2_layout_in_f64_loads_exactly() {
    let cfg = small_config();
    let bb = Backbone::random(&cfg, 9).unwrap();
    let bytes = write(&hf_entries(&bb, HfLayout::Dinov2, ""), true);
    assert_same(
        &bb,
        &load_hf_backbone_bytes(&bytes, &cfg, HfLayout::Dinov2, "mem").unwrap(),
    );
    // LayerScale must match the layout.
    assert!(matches!(
        load_hf_backbone_bytes(&bytes, &vit_config(), HfLayout::Dinov2, "mem"),
        Err(LoraError::InvalidConfig {
            field: "layer_scale",
            ..
        })
    ));
}

#[test]
fn position_embeddings_are_interpolated_from_another_resolution() {
    // Weights trained at 12×12 (grid 3) loaded for 8×8 (grid 2).
    let big = VitConfig {
        image_size: 12,
        ..small_config()
    };
    let bb = Backbone::random(&big, 10).unwrap();
    let bytes = write(&hf_entries(&bb, HfLayout::Dinov2, "dinov2."), false);
    let small = small_config();
    let loaded = load_hf_backbone_bytes(&bytes, &small, HfLayout::Dinov2, "mem").unwrap();
    let expect =
        interpolate_pos_embed_bicubic(&flat(bb.get("pos_embed").unwrap()), 3, 2, 8).unwrap();
    assert_eq!(flat(loaded.get("pos_embed").unwrap()), expect);
    assert_eq!(loaded.get("pos_embed").unwrap().dims(), &[5, 8]);
    assert_eq!(
        flat(loaded.get("blocks.1.attn.k.weight").unwrap()),
        flat(bb.get("blocks.1.attn.k.weight").unwrap())
    );
}

#[test]
fn missing_or_misshaped_tensors_are_named() {
    let cfg = vit_config();
    let bb = Backbone::random(&cfg, 11).unwrap();
    let mut entries = hf_entries(&bb, HfLayout::VitBase, "vit.");
    entries.retain(|(n, _, _)| n != "vit.encoder.layer.1.attention.attention.value.bias");
    let bytes = write(&entries, false);
    match load_hf_backbone_bytes(&bytes, &cfg, HfLayout::VitBase, "ckpt").unwrap_err() {
        LoraError::MissingTensor {
            name,
            expected,
            source_name,
        } => {
            assert_eq!(name, "vit.encoder.layer.1.attention.attention.value.bias");
            assert_eq!(expected, vec![8]);
            assert_eq!(source_name, "ckpt");
        }
        other => panic!("{other}"),
    }
    let mut entries = hf_entries(&bb, HfLayout::VitBase, "vit.");
    for e in &mut entries {
        if e.0 == "vit.encoder.layer.0.intermediate.dense.weight" {
            e.1 = vec![8, 16];
        }
    }
    let bytes = write(&entries, false);
    match load_hf_backbone_bytes(&bytes, &cfg, HfLayout::VitBase, "ckpt").unwrap_err() {
        LoraError::Shape {
            what,
            expected,
            got,
        } => {
            assert_eq!(what, "vit.encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, vec![16, 8]);
            assert_eq!(got, vec![8, 16]);
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        load_hf_backbone_bytes(b"not a safetensors file", &cfg, HfLayout::VitBase, "junk"),
        Err(LoraError::WeightFile { .. })
    ));
    let missing = std::env::temp_dir().join("wflora-no-such-file.safetensors");
    assert!(matches!(
        load_hf_backbone(&missing, &cfg, HfLayout::VitBase),
        Err(LoraError::Io { .. })
    ));
}
