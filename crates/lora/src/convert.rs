//! Conversions between candle tensors and plain `ndarray` matrices.

use candle_core::{DType, Device, Tensor};
use ndarray::Array2;

use crate::error::{LoraError, Result};

/// A 2-D `f32` tensor on `device` from a row-major matrix.
pub(crate) fn tensor_from_array(a: &Array2<f32>, device: &Device) -> Result<Tensor> {
    let (rows, cols) = a.dim();
    let data: Vec<f32> = a.iter().copied().collect();
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

/// A row-major `f32` matrix from a 2-D tensor (any float dtype).
pub(crate) fn array_from_tensor(what: &str, t: &Tensor) -> Result<Array2<f32>> {
    let (rows, cols) = t.dims2()?;
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Array2::from_shape_vec((rows, cols), data).map_err(|e| LoraError::Shape {
        what: format!("{what}: {e}"),
        expected: vec![rows, cols],
        got: t.dims().to_vec(),
    })
}

/// Flattens all leading dimensions: `(…, k)` becomes `(m, k)`.
pub(crate) fn flatten_leading(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let Some((&k, lead)) = dims.split_last() else {
        return Err(LoraError::InvalidInput {
            what: "linear input",
            reason: "a scalar has no feature dimension".into(),
        });
    };
    let m: usize = lead.iter().product();
    let x2 = if dims.len() == 2 {
        x.clone()
    } else {
        x.reshape((m, k))?
    };
    Ok((x2, lead.to_vec()))
}

/// Restores the leading dimensions removed by [`flatten_leading`].
pub(crate) fn restore_leading(y: Tensor, lead: &[usize]) -> Result<Tensor> {
    if lead.len() == 1 {
        return Ok(y);
    }
    let mut dims = lead.to_vec();
    dims.push(y.dim(1)?);
    Ok(y.reshape(dims)?)
}
