//! Integration tests of `wflora-lora` (one binary, several modules, to keep
//! link time down).
#![allow(clippy::unwrap_used)]

#[path = "integration/bert.rs"]
mod bert;
#[path = "integration/common.rs"]
mod common;
#[path = "integration/hf.rs"]
mod hf;
#[path = "integration/model.rs"]
mod model;
#[cfg(feature = "onnx")]
#[path = "integration/onnx.rs"]
mod onnx;
#[path = "integration/pretrain.rs"]
mod pretrain;
#[path = "integration/regularizer.rs"]
mod regularizer;
#[path = "integration/train.rs"]
mod train;
