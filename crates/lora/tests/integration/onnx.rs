//! Reading a DINOv2 backbone out of an ONNX export (feature `onnx`): a tiny
//! graph written here in the export's patterns (named biases and norms,
//! anonymous transposed `MatMul` weights named by their nodes, position
//! embeddings split into two anonymous initialisers), checked against the
//! canonical backbone it was written from.

use candle_onnx::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};
use prost::Message as _;
use wflora_lora::onnx::{backbone_from_onnx, decode_onnx, dinov2_hf_tensors};
use wflora_lora::{Backbone, LoraError, VitConfig};

use crate::common::flat;

fn tiny_dinov2() -> VitConfig {
    VitConfig {
        image_size: 6,
        in_channels: 3,
        patch_size: 2,
        width: 8,
        depth: 2,
        heads: 2,
        mlp_dim: 16,
        layer_scale: Some(0.5),
        ln_eps: 1e-6,
        text: None,
    }
}

fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: 1, // FLOAT
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![format!("{name}_output_0")],
        ..NodeProto::default()
    }
}

/// The export of `bb` (3×3 grid) in the patterns of `torch.onnx.export` of
/// Hugging Face's `Dinov2Model` under the module `backbone`.
fn export(bb: &Backbone, with_pos: bool) -> ModelProto {
    let cfg = bb.config();
    let (d, g) = (cfg.width, cfg.grid());
    let get = |n: &str| flat(bb.get(n).unwrap());
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    let named = |hf: &str, canon: &str, dims: &[usize]| {
        f32_tensor(&format!("backbone.{hf}"), dims, &get(canon))
    };
    let p = cfg.patch_size;
    inits.push(f32_tensor(
        "backbone.embeddings.patch_embeddings.projection.weight",
        &[d, 3, p, p],
        &get("patch_embed.weight"),
    ));
    inits.push(named(
        "embeddings.patch_embeddings.projection.bias",
        "patch_embed.bias",
        &[d],
    ));
    inits.push(named("embeddings.cls_token", "cls_token", &[1, 1, d]));
    inits.push(f32_tensor(
        "backbone.embeddings.mask_token",
        &[1, d],
        &vec![9.0; d],
    ));
    let pos = get("pos_embed");
    if with_pos {
        inits.push(f32_tensor("onnx::Concat_17", &[1, 1, d], &pos[..d]));
        inits.push(f32_tensor("onnx::Reshape_18", &[1, g * g, d], &pos[d..]));
        nodes.push(node(
            "Reshape",
            "/backbone/embeddings/Reshape_1",
            &["onnx::Reshape_18", "shape"],
        ));
        nodes.push(node(
            "Concat",
            "/backbone/embeddings/Concat_6",
            &["onnx::Concat_17", "x"],
        ));
    }
    let mut anon = 100;
    for i in 0..cfg.depth {
        let h = format!("encoder.layer.{i}");
        let c = format!("blocks.{i}");
        for (hn, cn) in [("norm1", "norm1"), ("norm2", "norm2")] {
            for wb in ["weight", "bias"] {
                inits.push(named(
                    &format!("{h}.{hn}.{wb}"),
                    &format!("{c}.{cn}.{wb}"),
                    &[d],
                ));
            }
        }
        inits.push(named(
            &format!("{h}.layer_scale1.lambda1"),
            &format!("{c}.ls1"),
            &[d],
        ));
        inits.push(named(
            &format!("{h}.layer_scale2.lambda1"),
            &format!("{c}.ls2"),
            &[d],
        ));
        let linears = [
            ("attention/attention/query", "attn.q", d, d),
            ("attention/attention/key", "attn.k", d, d),
            ("attention/attention/value", "attn.v", d, d),
            ("attention/output/dense", "attn.o", d, d),
            ("mlp/fc1", "mlp.fc1", cfg.mlp_dim, d),
            ("mlp/fc2", "mlp.fc2", d, cfg.mlp_dim),
        ];
        for (path, canon, out, inp) in linears {
            let w = get(&format!("{c}.{canon}.weight"));
            // (out, in) → the export's (in, out).
            let wt: Vec<f32> = (0..inp)
                .flat_map(|j| (0..out).map(move |o| (o, j)))
                .map(|(o, j)| w[o * inp + j])
                .collect();
            let name = format!("onnx::MatMul_{anon}");
            anon += 1;
            inits.push(f32_tensor(&name, &[inp, out], &wt));
            nodes.push(node(
                "MatMul",
                &format!("/backbone/encoder/layer.{i}/{path}/MatMul"),
                &["x", &name],
            ));
            inits.push(named(
                &format!("{h}.{}.bias", path.replace('/', ".")),
                &format!("{c}.{canon}.bias"),
                &[out],
            ));
        }
    }
    inits.push(named("layernorm.weight", "norm.weight", &[d]));
    inits.push(named("layernorm.bias", "norm.bias", &[d]));
    // A decoder weight read by a MatMul outside the backbone: ignored.
    inits.push(f32_tensor("onnx::MatMul_999", &[d, 1], &vec![1.0; d]));
    nodes.push(node(
        "MatMul",
        "/decoder/MatMul",
        &["y", "onnx::MatMul_999"],
    ));
    ModelProto {
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

#[test]
fn the_export_patterns_give_back_the_backbone_exactly() {
    let cfg = tiny_dinov2();
    let bb = Backbone::random(&cfg, 7).unwrap();
    let bytes = export(&bb, true).encode_to_vec();
    let model = decode_onnx(&bytes, "mem.onnx").unwrap();
    let hf = dinov2_hf_tensors(&model, "mem.onnx").unwrap();
    assert!(hf.contains_key("encoder.layer.1.mlp.fc2.weight"));
    assert!(!hf.keys().any(|k| k.contains("decoder")));
    // The converter reads the native grid (3×3 here) whatever image size the
    // config asks for.
    let back = backbone_from_onnx(&model, &cfg.clone().with_image_size(2), "mem.onnx").unwrap();
    assert_eq!(back.config().image_size, 6);
    let mut n = 0;
    for (name, t) in bb.iter() {
        assert_eq!(flat(t), flat(back.get(name).unwrap()), "{name}");
        n += 1;
    }
    assert_eq!(n, back.iter().count());
}

#[test]
fn missing_position_embeddings_and_garbage_are_named_errors() {
    let cfg = tiny_dinov2();
    let bb = Backbone::random(&cfg, 7).unwrap();
    let model = export(&bb, false);
    let err = backbone_from_onnx(&model, &cfg, "nopos.onnx").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nopos.onnx") && msg.contains("position embeddings"),
        "{msg}"
    );

    // A truncated file is a weight-file error naming it, not a panic.
    let bytes = export(&bb, true).encode_to_vec();
    match decode_onnx(&bytes[..bytes.len() / 2], "cut.onnx") {
        Err(LoraError::WeightFile { source_name, .. }) => assert_eq!(source_name, "cut.onnx"),
        other => panic!("expected a weight-file error, got {other:?}"),
    }
    // A config whose shapes differ (width 16) names the tensor.
    let mut wide = cfg.clone();
    wide.width = 16;
    wide.mlp_dim = 32;
    let err = backbone_from_onnx(&export(&bb, true), &wide, "w.onnx").unwrap_err();
    assert!(err.to_string().contains("embeddings"), "{err}");
}
