//! A linear layer with a frozen weight and an optional LoRA adapter.

use candle_core::{DType, Device, Tensor, Var};
use ndarray::Array2;
use rand::Rng;
use rand::rngs::StdRng;

use crate::convert::{array_from_tensor, flatten_leading, restore_leading, tensor_from_array};
use crate::error::{LoraError, Result, check_shape};

/// The trainable low-rank factors of one adapted matrix.
///
/// Convention (docs/method.md §1): `B ∈ R^{d×r}`, `A ∈ R^{r×l}` with `d` the output
/// and `l` the input features; the adapted weight is `W0 + (α/r)·B·A`.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    a: Var,
    b: Var,
    scale: f64,
}

impl LoraAdapter {
    /// Fresh factors: `A` uniform in `±1/√l` (the variance of PyTorch's
    /// Kaiming-uniform init with `a = √5`, as PEFT uses), `B = 0`.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] if `rank` is 0 or `alpha` is not positive.
    pub fn init(
        out_features: usize,
        in_features: usize,
        rank: usize,
        alpha: f64,
        rng: &mut StdRng,
    ) -> Result<Self> {
        if rank == 0 {
            return Err(LoraError::InvalidConfig {
                field: "lora.rank",
                reason: "must be at least 1".into(),
            });
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "lora.alpha",
                reason: format!("{alpha} must be finite and > 0"),
            });
        }
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let a: Vec<f32> = (0..rank * in_features)
            .map(|_| rng.random_range(-bound..=bound))
            .collect();
        let a = Var::from_vec(a, (rank, in_features), &Device::Cpu)?;
        let b = Var::zeros((out_features, rank), DType::F32, &Device::Cpu)?;
        Ok(Self {
            a,
            b,
            scale: alpha / rank as f64,
        })
    }

    /// Rank `r`.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// The scale `α/r`.
    #[must_use]
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The variable holding `A` (`r × l`).
    #[must_use]
    pub fn a_var(&self) -> &Var {
        &self.a
    }

    /// The variable holding `B` (`d × r`).
    #[must_use]
    pub fn b_var(&self) -> &Var {
        &self.b
    }
}

/// `y = x·W0ᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ`, with `W0` (`out × in`) and `b` frozen.
///
/// The adapter is applied unmerged: `W0` is never scaled or modified. In full
/// fine-tuning `W0` and `b` may be the tensors of trainable variables; the
/// layer does not care.
#[derive(Clone, Debug)]
pub struct LoraLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<LoraAdapter>,
}

impl LoraLinear {
    /// A layer without adapter. `weight` must be 2-D (`out × in`) and `bias`,
    /// if any, 1-D of length `out`.
    ///
    /// # Errors
    /// [`LoraError::Shape`] on inconsistent shapes.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.rank() != 2 {
            return Err(LoraError::Shape {
                what: "linear weight".into(),
                expected: vec![0, 0],
                got: weight.dims().to_vec(),
            });
        }
        let out = weight.dim(0)?;
        if let Some(b) = &bias {
            check_shape("linear bias", &[out], b.dims())?;
        }
        Ok(Self {
            weight,
            bias,
            adapter: None,
        })
    }

    /// Attaches fresh LoRA factors (see [`LoraAdapter::init`]).
    ///
    /// # Errors
    /// As [`LoraAdapter::init`].
    pub fn with_adapter(mut self, rank: usize, alpha: f64, rng: &mut StdRng) -> Result<Self> {
        // The factors are f32 variables on the weight's device.
        let mut ad = LoraAdapter::init(self.out_features(), self.in_features(), rank, alpha, rng)?;
        let device = self.weight.device();
        if !device.is_cpu() {
            ad.a = Var::from_tensor(&ad.a.as_tensor().to_device(device)?)?;
            ad.b = Var::from_tensor(&ad.b.as_tensor().to_device(device)?)?;
        }
        self.adapter = Some(ad);
        Ok(self)
    }

    /// Output features `d`.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input features `l`.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The frozen weight `W0`.
    #[must_use]
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The frozen bias.
    #[must_use]
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The adapter, if any.
    #[must_use]
    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Unmerged forward over the last dimension of `x` (`(…, in)` to `(…, out)`).
    ///
    /// # Errors
    /// A candle error on a wrong input width.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (x2, lead) = flatten_leading(x)?;
        let frozen = !self.weight.track_op() && self.bias.as_ref().is_none_or(|b| !b.track_op());
        // f32 factors cast to the compute dtype (a no-op in f32; the cast is
        // in the autograd graph, so the f32 variables get the gradient).
        let factors = match &self.adapter {
            Some(ad) => {
                let dt = x2.dtype();
                Some((
                    ad.a.as_tensor().to_dtype(dt)?,
                    ad.b.as_tensor().to_dtype(dt)?,
                    ad.scale,
                ))
            }
            None => None,
        };
        if let (true, Some((a, b, scale)), Some(bias)) = (frozen, &factors, &self.bias) {
            // On a GPU the whole adapted layer is one autograd node.
            if let Some(y) = crate::fused::lora_linear_gpu(&x2, &self.weight, bias, a, b, *scale)? {
                return restore_leading(y, &lead);
            }
        }
        let mut y = if frozen && (self.weight.dtype() == DType::F32 || !x2.device().is_cpu()) {
            // No weight gradients are computed for a frozen weight.
            crate::fused::frozen_linear(&x2, &self.weight, self.bias.as_ref())?
        } else {
            let y = x2.matmul(&self.weight.t()?)?;
            match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            }
        };
        if let Some((a, b, scale)) = &factors {
            let low = x2.matmul(&a.t()?)?.affine(*scale, 0.0)?;
            y = (y + low.matmul(&b.t()?)?)?;
        }
        restore_leading(y, &lead)
    }

    /// `W0 + (α/r)·B·A` (just `W0` without adapter).
    ///
    /// # Errors
    /// Candle errors only.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            None => Ok(self.weight.clone()),
            Some(ad) => {
                let ba = ad.b.as_tensor().matmul(ad.a.as_tensor())?;
                let ba = ba.affine(ad.scale, 0.0)?.to_dtype(self.weight.dtype())?;
                Ok((&self.weight + ba)?)
            }
        }
    }

    /// Forward with the merged weight; equals [`Self::forward`] up to rounding.
    ///
    /// # Errors
    /// As [`Self::forward`].
    pub fn forward_merged(&self, x: &Tensor) -> Result<Tensor> {
        let (x2, lead) = flatten_leading(x)?;
        let mut y = x2.matmul(&self.merged_weight()?.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        restore_leading(y, &lead)
    }

    fn adapter_or_err(&self, what: &'static str) -> Result<&LoraAdapter> {
        self.adapter
            .as_ref()
            .ok_or_else(|| LoraError::InvalidInput {
                what,
                reason: "this layer has no LoRA adapter".into(),
            })
    }

    /// `A` (`r × in`) as a row-major matrix.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] if the layer has no adapter.
    pub fn a(&self) -> Result<Array2<f32>> {
        array_from_tensor("A", self.adapter_or_err("A")?.a.as_tensor())
    }

    /// `B` (`out × r`) as a row-major matrix.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] if the layer has no adapter.
    pub fn b(&self) -> Result<Array2<f32>> {
        array_from_tensor("B", self.adapter_or_err("B")?.b.as_tensor())
    }

    /// Overwrites `A` in place (the variable keeps its identity, so an
    /// optimizer holding it stays valid).
    ///
    /// # Errors
    /// [`LoraError::Shape`] if `a` is not `r × in`; [`LoraError::InvalidInput`]
    /// without adapter.
    pub fn set_a(&self, a: &Array2<f32>) -> Result<()> {
        let ad = self.adapter_or_err("A")?;
        check_shape("A", ad.a.dims(), &[a.nrows(), a.ncols()])?;
        ad.a.set(&tensor_from_array(a, ad.a.device())?)?;
        Ok(())
    }

    /// Overwrites `B` in place.
    ///
    /// # Errors
    /// [`LoraError::Shape`] if `b` is not `out × r`; [`LoraError::InvalidInput`]
    /// without adapter.
    pub fn set_b(&self, b: &Array2<f32>) -> Result<()> {
        let ad = self.adapter_or_err("B")?;
        check_shape("B", ad.b.dims(), &[b.nrows(), b.ncols()])?;
        ad.b.set(&tensor_from_array(b, ad.b.device())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn layer(out: usize, inp: usize, rank: usize, seed: u64) -> LoraLinear {
        let mut rng = StdRng::seed_from_u64(seed);
        let w: Vec<f32> = (0..out * inp)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let b: Vec<f32> = (0..out).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w = Tensor::from_vec(w, (out, inp), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(b, out, &Device::Cpu).unwrap();
        LoraLinear::new(w, Some(b))
            .unwrap()
            .with_adapter(rank, 2.0 * rank as f64, &mut rng)
            .unwrap()
    }

    #[test]
    fn merged_equals_unmerged_with_nonzero_b() {
        let l = layer(6, 5, 3, 1);
        let mut rng = StdRng::seed_from_u64(2);
        let bm = Array2::from_shape_fn((6, 3), |_| rng.random_range(-1.0f32..1.0));
        l.set_b(&bm).unwrap();
        let xv: Vec<f32> = (0..40).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = Tensor::from_vec(xv, (2, 4, 5), &Device::Cpu).unwrap();
        let y1 = l.forward(&x).unwrap();
        let y2 = l.forward_merged(&x).unwrap();
        assert_eq!(y1.dims(), &[2, 4, 6]);
        let diff = (y1 - y2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn forward_matches_hand_computation() {
        // W0 = [[1,2],[3,4]], b = [0.5,-0.5], A = [[1,-1]] (r = 1), B = [[2],[1]],
        // alpha = 3 so scale 3. x = [1, 2]:
        // x W0ᵀ + b = [5.5, 10.5]; x Aᵀ = -1; ·3 = -3; ·Bᵀ = [-6, -3] → [-0.5, 7.5].
        let w = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f32, -0.5], &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let l = LoraLinear::new(w, Some(b))
            .unwrap()
            .with_adapter(1, 3.0, &mut rng)
            .unwrap();
        l.set_a(&ndarray::array![[1.0f32, -1.0]]).unwrap();
        l.set_b(&ndarray::array![[2.0f32], [1.0]]).unwrap();
        let x = Tensor::new(&[[1f32, 2.]], &Device::Cpu).unwrap();
        let y = l.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![-0.5, 7.5]]);
    }

    #[test]
    fn zero_b_init_leaves_output_unchanged() {
        let l = layer(4, 3, 2, 5);
        let mut rng = StdRng::seed_from_u64(6);
        let xv: Vec<f32> = (0..21).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = Tensor::from_vec(xv, (7, 3), &Device::Cpu).unwrap();
        let plain = LoraLinear::new(l.weight().clone(), l.bias().cloned()).unwrap();
        let y1 = l
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y0 = plain
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y1, y0);
    }

    #[test]
    fn set_with_wrong_shape_is_a_typed_error() {
        let l = layer(4, 3, 2, 5);
        let err = l.set_a(&Array2::zeros((3, 3))).unwrap_err();
        assert!(matches!(err, LoraError::Shape { ref expected, .. } if expected == &vec![2, 3]));
        let err = l.set_b(&Array2::zeros((4, 1))).unwrap_err();
        assert!(matches!(err, LoraError::Shape { .. }));
        let plain = LoraLinear::new(l.weight().clone(), None).unwrap();
        assert!(matches!(plain.a(), Err(LoraError::InvalidInput { .. })));
    }

    #[test]
    fn factors_round_trip_and_init_is_bounded() {
        let l = layer(4, 9, 3, 11);
        let a = l.a().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 1.0 / 3.0 + 1e-6));
        assert!(l.b().unwrap().iter().all(|&v| v == 0.0));
        let a2 = a.mapv(|v| v * 2.0);
        l.set_a(&a2).unwrap();
        assert_eq!(l.a().unwrap(), a2);
    }
}
