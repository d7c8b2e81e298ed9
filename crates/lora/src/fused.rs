//! Fused CPU kernels with hand-written backward passes: the frozen linear
//! map, LayerNorm and the attention softmax.
//!
//! * Frozen linear: candle's matmul backward always computes the gradient of
//!   both operands, so `x·W0ᵀ` with a frozen `W0` would spend a second matmul
//!   (the size of the forward one) on a weight gradient nobody reads, plus a
//!   zero-filled buffer for it and for the bias. The op here returns only the
//!   input gradient `dy·W0`.
//! * LayerNorm and softmax: composing them from candle primitives costs 9 and
//!   5 tensor ops forward plus their backward ops, which dominated the small
//!   presets' step time; candle-nn's own fused versions have no backward pass.
//! * Exact GELU: candle's backward for `gelu_erf` is a chain of 8 tensor ops;
//!   here it is one pass.
//! * Attention: sixteen candle nodes (head splits, scores, softmax, weighted
//!   sum, head merge) become one, whose backward runs the same matmuls on
//!   the same operands, so its floats are the composed version's to the bit;
//!   what goes is candle's zero-filled gradient buffer per node (for ViT-B/16
//!   at 224×224 most of them the size of the `B·H·T·T` scores).
//! * A whole pre-norm block (`fused_block.rs`) is one node on a frozen
//!   backbone, built from the kernels here with the same floats.
//!
//! The GELU's `erf` and the `expf` of the GELU's backward pass and of the
//! softmax run vectorised with the scalar functions' bits (`erf.rs`,
//! `expf.rs`). LayerNorm works on eight rows at a time, one accumulator per
//! row, so the rows' sequential `f32` sums overlap while each row adds the
//! same terms in the same order (the floats of one row at a time, to the
//! bit: `blocked_layer_norm_is_rowwise_to_the_bit`). The kernels take `f32`
//! input (made contiguous by the wrappers) and are tested against the
//! composed versions, values and gradients.
//!
//! On a CUDA device (feature `cuda`) the frozen linear map keeps its
//! input-gradient-only backward (its forward is the device's own matmul),
//! attention is its own one-node op (`fused_cuda`), and the other three ops
//! run the same maths as CUDA kernels
//! (`fused_cuda.rs`), in `f32` whatever the activations' dtype, as mixed
//! precision does. Any other device gets the composed candle versions.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor, bail};

/// `y = x·Wᵀ + b` for a frozen (untracked) `W` (`out × in`) and `b`; the
/// backward pass yields only `dx = dy·W`.
struct FrozenLinearOp {
    w: Tensor,
    b: Option<Tensor>,
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "wflora-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        let (n, kw) = self.w.dims2()?;
        if k != kw {
            bail!("frozen linear: input width {k}, weight {:?}", self.w.dims())
        }
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let Storage::Cpu(ws) = &*w_storage else {
            bail!("frozen linear: the weight is not on the cpu")
        };
        let wt_layout = w_layout.transpose(0, 1)?;
        let mut out = s.matmul(ws, (1, m, n, k), l, &wt_layout)?;
        if let Some(b) = &self.b {
            let (b_storage, b_layout) = b.storage_and_layout();
            let Storage::Cpu(bs) = &*b_storage else {
                bail!("frozen linear: the bias is not on the cpu")
            };
            let bias = f32_slice(bs, b_layout, "frozen linear bias")?;
            let CpuStorage::F32(y) = &mut out else {
                bail!("frozen linear: only f32 is supported")
            };
            add_bias_rows(y, bias);
        }
        Ok((out, Shape::from((m, n))))
    }

    /// The device's matmul (cuBLAS), then the bias in place.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        let (n, kw) = self.w.dims2()?;
        if k != kw {
            bail!("frozen linear: input width {k}, weight {:?}", self.w.dims())
        }
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let Storage::Cuda(ws) = &*w_storage else {
            bail!("frozen linear: the weight is not on the gpu")
        };
        let mut out = s.matmul(ws, (1, m, n, k), l, &w_layout.transpose(0, 1)?)?;
        if let Some(b) = &self.b {
            let (b_storage, b_layout) = b.storage_and_layout();
            let Storage::Cuda(bs) = &*b_storage else {
                bail!("frozen linear: the bias is not on the gpu")
            };
            crate::fused_cuda::add_bias_lora(&mut out, None, bs, b_layout, 0.0, m, n)?;
        }
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// Adds `bias` to every row of `y` (rows of `bias.len()` values), as the
/// frozen linear op does after its matmul.
pub(crate) fn add_bias_rows(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, bi)| *v += bi);
    }
}

/// `x·Wᵀ + b` for 2-D `x` with frozen `w` and `b` (no weight gradients).
pub(crate) fn frozen_linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        if x.dtype() != w.dtype() {
            bail!(
                "frozen linear: input {:?}, weight {:?}",
                x.dtype(),
                w.dtype()
            )
        }
        return x.contiguous()?.apply_op1(FrozenLinearOp {
            w: w.contiguous()?,
            b: b.map(Tensor::contiguous).transpose()?,
        });
    }
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        bail!("frozen linear: only f32 is supported")
    }
    x.contiguous()?.apply_op1(FrozenLinearOp {
        w: w.contiguous()?,
        b: b.map(Tensor::contiguous).transpose()?,
    })
}

/// `x·W0ᵀ + b + scale·(x·Aᵀ)·Bᵀ` for 2-D `x` on a CUDA device as one
/// autograd node (`fused_cuda::LoraLinearOp`); `a`, `b_fac` are the factors
/// in the compute dtype. `None` where that op does not apply (the CPU, or a
/// build without `cuda`): the caller composes the layer then.
pub(crate) fn lora_linear_gpu(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    a: &Tensor,
    b_fac: &Tensor,
    scale: f64,
) -> candle_core::Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let op = crate::fused_cuda::LoraLinearOp {
            w: w.contiguous()?,
            bias: bias.contiguous()?,
            scale,
        };
        return Ok(Some(x.contiguous()?.apply_op3(
            &a.contiguous()?,
            &b_fac.contiguous()?,
            op,
        )?));
    }
    let _ = (x, w, bias, a, b_fac, scale);
    Ok(None)
}

/// Multi-head self-attention from the projected `q`, `k`, `v` (`B·T × D`,
/// `q` unscaled) to the context (`B·T × D`). On the CPU and on a CUDA
/// device one autograd node ([`AttentionOp`] here, `fused_cuda` there);
/// elsewhere composed from candle ops ([`composed::attention`]).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: usize,
    tokens: usize,
    heads: usize,
) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if q.device().is_cuda() {
        return crate::fused_cuda::attention(q, k, v, batch, tokens, heads);
    }
    if !q.device().is_cpu() {
        return composed::attention(q, k, v, batch, tokens, heads);
    }
    for (t, name) in [(q, "q"), (k, "k"), (v, "v")] {
        if t.dtype() != DType::F32 {
            bail!(
                "attention: only f32 is supported, {name} is {:?}",
                t.dtype()
            )
        }
    }
    let state = AttentionState::forward(q, k, v, (batch, tokens, heads), false)?;
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, AttentionOp(state))
}

/// What an attention node keeps between its forward and its backward pass,
/// on the CPU ([`AttentionOp`]) and on the GPU (`fused_cuda`) alike.
pub(crate) struct AttentionState {
    /// The forward result, handed over once to the node's device forward:
    /// the heads' context `(B, H, T, dh)`, or already merged to `(B·T, D)`.
    ctx: std::sync::Mutex<Option<Tensor>>,
    /// Softmax probabilities `(B, H, T, T)`.
    pub(crate) p: Tensor,
    /// Heads `(B, H, T, dh)`: scaled queries, keys, values.
    pub(crate) qh: Tensor,
    pub(crate) kh: Tensor,
    pub(crate) vh: Tensor,
    /// The query scale `1/√dh`.
    pub(crate) scale: f64,
    /// `(B, T, H, dh)`.
    pub(crate) dims: (usize, usize, usize, usize),
}

impl AttentionState {
    /// The forward pass on detached inputs, with exactly the ops (and so the
    /// floats) of [`composed::attention`]: head split, scaled scores,
    /// softmax, weighted sum, and with `merge` the head merge as candle ops
    /// (else the node's device forward merges). `(batch, tokens, heads)`.
    pub(crate) fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        (batch, tokens, heads): (usize, usize, usize),
        merge: bool,
    ) -> candle_core::Result<Self> {
        let d = q.dim(1)?;
        if heads == 0 || d % heads != 0 || q.dims() != [batch * tokens, d] {
            bail!(
                "attention: q {:?} is not {batch}·{tokens} tokens of {heads} heads",
                q.dims()
            )
        }
        let dh = d / heads;
        let scale = 1.0 / (dh as f64).sqrt();
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, tokens, heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let qh = split(q.detach().affine(scale, 0.0)?)?;
        let kh = split(k.detach())?;
        let vh = split(v.detach())?;
        let p = softmax_last(&qh.matmul(&kh.t()?)?)?;
        let mut ctx = p.matmul(&vh)?;
        if merge {
            ctx = ctx
                .transpose(1, 2)?
                .reshape((batch * tokens, d))?
                .contiguous()?;
        }
        Ok(Self {
            ctx: std::sync::Mutex::new(Some(ctx)),
            p,
            qh,
            kh,
            vh,
            scale,
            dims: (batch, tokens, heads, dh),
        })
    }

    /// The forward result, once (a second device forward is an error).
    pub(crate) fn take_ctx(&self) -> candle_core::Result<Tensor> {
        take_once(&self.ctx, "attention")
    }
}

/// What a node's forward pass computed ahead of its device forward, handed
/// over once: a second device forward of the same node is an error.
pub(crate) fn take_once<T>(
    slot: &std::sync::Mutex<Option<T>>,
    what: &str,
) -> candle_core::Result<T> {
    let value = slot
        .lock()
        .map_err(|_| candle_core::Error::Msg(format!("{what}: poisoned lock")))?
        .take();
    match value {
        Some(value) => Ok(value),
        None => bail!("{what}: the forward ran twice"),
    }
}

/// Attention on the CPU as one autograd node. Composed from candle ops it is
/// sixteen nodes (scale, three head splits of three nodes each, the key
/// transpose, two matmuls, the softmax, the head merge of two), and candle's
/// backward pass gives every node a zero-filled gradient buffer that the
/// contributions are added into: sixteen such passes over the activations'
/// size per block. Here the forward pass runs the composed ops on detached
/// inputs and keeps what the backward needs ([`AttentionState`]); the
/// backward is written out with the same ops on the same operands in the
/// same layouts, so values and gradients are those of the composed version
/// to the bit (tested).
struct AttentionOp(AttentionState);

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "wflora-attention-cpu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, h, dh) = self.0.dims;
        let out = self.0.take_merged_ctx()?;
        Ok((CpuStorage::F32(out), Shape::from((b * t, h * dh))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dq, dk, dv] = self
            .0
            .backward(grad, [q.track_op(), k.track_op(), v.track_op()])?;
        Ok((dq, dk, dv))
    }
}

impl AttentionState {
    /// The context merged to `(B·T, D)` (row `b·T + t`, heads side by side),
    /// once: one copy, as the composed version's reshape of the transposed
    /// context.
    pub(crate) fn take_merged_ctx(&self) -> candle_core::Result<Vec<f32>> {
        let ctx = self.take_ctx()?;
        let (b, t, h, dh) = self.dims;
        with_f32(&ctx, "attention context", |c| {
            if c.len() != b * h * t * dh {
                bail!(
                    "attention: context of {} values for {:?}",
                    c.len(),
                    self.dims
                )
            }
            let mut out = vec![0f32; c.len()];
            for bi in 0..b {
                for ti in 0..t {
                    for hi in 0..h {
                        let src = ((bi * h + hi) * t + ti) * dh;
                        let dst = ((bi * t + ti) * h + hi) * dh;
                        out[dst..dst + dh].copy_from_slice(&c[src..src + dh]);
                    }
                }
            }
            Ok(out)
        })
    }

    /// The gradients of `q`, `k`, `v` (`B·T × D`, those asked for in
    /// `need`) from the context's gradient `grad` (`B·T × D`): what candle's
    /// backward does for the composed version, node by node, minus its
    /// zero-filled buffers (adding to zero changes no value): the same
    /// matmuls with the same operand layouts, so the same floats.
    pub(crate) fn backward(
        &self,
        grad: &Tensor,
        [need_q, need_k, need_v]: [bool; 3],
    ) -> candle_core::Result<[Option<Tensor>; 3]> {
        let st = self;
        let (b, t, h, dh) = st.dims;
        let merge = |x: Tensor| -> candle_core::Result<Tensor> {
            x.transpose(1, 2)?.reshape((b * t, h * dh))
        };
        let g = grad.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?;
        // ctx = p·vh.
        let dp = g.matmul(&st.vh.t()?)?;
        let dv = if need_v {
            Some(merge(st.p.t()?.matmul(&g)?)?)
        } else {
            None
        };
        // p = softmax(s), s = qh·khᵀ.
        let ds = softmax_grad_cpu(&st.p, &dp)?;
        let dq = if need_q {
            Some(merge(ds.matmul(&st.kh)?)?.affine(st.scale, 0.0)?)
        } else {
            None
        };
        let dk = if need_k {
            Some(merge(st.qh.t()?.matmul(&ds)?.t()?)?)
        } else {
            None
        };
        Ok([dq, dk, dv])
    }
}

pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: only f32 is supported")
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{what}: input must be contiguous")
    };
    Ok(&v[start..end])
}

/// Runs `f` on the contiguous `f32` values of `t` (borrowed from its
/// storage, copied only if `t` is not contiguous).
pub(crate) fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("{what}: only cpu tensors are supported")
    };
    f(f32_slice(cpu, layout, what)?)
}

/// LayerNorm over the last dimension: `y = (x − μ)/sqrt(σ² + eps)·w + b`.
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "wflora-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer norm x")?;
        let w = f32_slice(s2, l2, "layer norm weight")?;
        let b = f32_slice(s3, l3, "layer norm bias")?;
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 {
            bail!("layer norm: shapes x {:?}, w {d}, b {}", l1.dims(), b.len())
        }
        let y = layer_norm_fwd(x, w, b, self.eps);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, cols) = crate::fused_cuda::rows_cols(l1);
        if l2.shape().elem_count() != cols || l3.shape().elem_count() != cols {
            bail!(
                "layer norm: shapes x {:?}, w {:?}, b {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let y = crate::fused_cuda::layer_norm_fwd(s1, l1, s2, l2, s3, l3, rows, cols, self.eps)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let (dx, dw, db) = crate::fused_cuda::layer_norm_grads(x, w, grad, self.eps)?;
            return Ok((Some(dx), Some(dw), Some(db)));
        }
        let d = w.elem_count();
        let (dx, dw, db) = with_f32(x, "layer norm x", |xv| {
            with_f32(w, "layer norm weight", |wv| {
                with_f32(grad, "layer norm grad", |gv| {
                    Ok(layer_norm_bwd(xv, wv, gv, d, self.eps))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, d, dev)?),
            Some(Tensor::from_vec(db, d, dev)?),
        ))
    }
}

/// Rows of a LayerNorm handled together on the CPU.
///
/// A row's mean, variance and the two sums of its backward pass are
/// sequential `f32` additions: each waits for the one before it, so one row
/// at a time runs at the adder's latency, not its throughput. A block keeps
/// one accumulator per row and interleaves the rows' additions. Every row
/// still adds the same terms in the same order, starting from the same zero,
/// so the floats are those of one row at a time to the bit
/// (`blocked_layer_norm_is_rowwise_to_the_bit`); only independent chains
/// overlap.
const LN_BLOCK: usize = 8;

/// Mean and `1/sqrt(var + eps)` of each of the `R` rows of width `d` in `x`
/// (two passes, for accuracy). Each row's sums are `Iterator::sum`'s: from
/// `-0.0`, in index order.
#[allow(clippy::needless_range_loop)] // `i` walks a column across the R rows: the interleaving is the point
fn moments_block<const R: usize>(x: &[f32], d: usize, eps: f32) -> ([f32; R], [f32; R]) {
    let rows: [&[f32]; R] = std::array::from_fn(|l| &x[l * d..(l + 1) * d]);
    let n = d as f32;
    let mut sum = [-0.0f32; R];
    for i in 0..d {
        for l in 0..R {
            sum[l] += rows[l][i];
        }
    }
    let mean = sum.map(|s| s / n);
    let mut sq = [-0.0f32; R];
    for i in 0..d {
        for l in 0..R {
            let c = rows[l][i] - mean[l];
            sq[l] += c * c;
        }
    }
    let rstd = std::array::from_fn(|l| 1.0 / (sq[l] / n + eps).sqrt());
    (mean, rstd)
}

/// LayerNorm's forward pass over rows of width `w.len()` (which divides
/// `x.len()`), [`LN_BLOCK`] rows at a time.
pub(crate) fn layer_norm_fwd(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let step = LN_BLOCK * d;
    let full = x.len() / step * step;
    for (xb, yb) in x[..full]
        .chunks_exact(step)
        .zip(y[..full].chunks_exact_mut(step))
    {
        layer_norm_fwd_block::<LN_BLOCK>(xb, w, b, yb, eps);
    }
    for (xr, yr) in x[full..].chunks_exact(d).zip(y[full..].chunks_exact_mut(d)) {
        layer_norm_fwd_block::<1>(xr, w, b, yr, eps);
    }
    y
}

/// LayerNorm's forward pass over `R` rows (`x`, `y`: `R·d` values).
fn layer_norm_fwd_block<const R: usize>(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], eps: f32) {
    let d = w.len();
    let (mean, rstd) = moments_block::<R>(x, d, eps);
    for (l, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        for i in 0..d {
            yr[i] = (xr[i] - mean[l]) * rstd[l] * w[i] + b[i];
        }
    }
}

/// `(dx, dw, db)` of LayerNorm for rows of width `d`.
fn layer_norm_bwd(
    xv: &[f32],
    wv: &[f32],
    gv: &[f32],
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    layer_norm_bwd_impl::<true>(xv, wv, gv, d, eps)
}

/// LayerNorm's `dx` alone, for a frozen weight and bias: the values of
/// [`layer_norm_bwd`]'s `dx` (the same operations), without the two column
/// sums nobody reads.
pub(crate) fn layer_norm_dx(xv: &[f32], wv: &[f32], gv: &[f32], eps: f32) -> Vec<f32> {
    layer_norm_bwd_impl::<false>(xv, wv, gv, wv.len(), eps).0
}

/// `dx`, and with `WB` also `dw`, `db` (else left at zero).
fn layer_norm_bwd_impl<const WB: bool>(
    xv: &[f32],
    wv: &[f32],
    gv: &[f32],
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; xv.len()];
    let mut dw = vec![0f32; d];
    let mut db = vec![0f32; d];
    let mut scratch = vec![0f32; 2 * LN_BLOCK * d];
    let step = LN_BLOCK * d;
    let full = xv.len() / step * step;
    let mut grads = (dw.as_mut_slice(), db.as_mut_slice());
    for ((xb, gb), dxb) in xv[..full]
        .chunks_exact(step)
        .zip(gv[..full].chunks_exact(step))
        .zip(dx[..full].chunks_exact_mut(step))
    {
        layer_norm_bwd_block::<LN_BLOCK, WB>(xb, wv, gb, dxb, &mut grads, &mut scratch, eps);
    }
    for ((xr, gr), dxr) in xv[full..]
        .chunks_exact(d)
        .zip(gv[full..].chunks_exact(d))
        .zip(dx[full..].chunks_exact_mut(d))
    {
        layer_norm_bwd_block::<1, WB>(xr, wv, gr, dxr, &mut grads, &mut scratch, eps);
    }
    (dx, dw, db)
}

/// LayerNorm's backward pass over `R` rows: writes their `dx` and (with
/// `WB`) adds their contributions to `dw`, `db` in row order. `scratch`
/// holds at least `2·R·d` values.
fn layer_norm_bwd_block<const R: usize, const WB: bool>(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    dx: &mut [f32],
    (dw, db): &mut (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
    eps: f32,
) {
    let d = w.len();
    let (mean, rstd) = moments_block::<R>(x, d, eps);
    let (xhat, gxhat) = scratch[..2 * R * d].split_at_mut(R * d);
    for l in 0..R {
        let rows = l * d..(l + 1) * d;
        let (xr, gr) = (&x[rows.clone()], &g[rows.clone()]);
        let (xh, gh) = (&mut xhat[rows.clone()], &mut gxhat[rows]);
        for i in 0..d {
            xh[i] = (xr[i] - mean[l]) * rstd[l];
            gh[i] = gr[i] * w[i];
        }
    }
    // Each row's two sums from +0.0, interleaved across the rows.
    let (mut m1, mut m2) = ([0f32; R], [0f32; R]);
    let xh: [&[f32]; R] = std::array::from_fn(|l| &xhat[l * d..(l + 1) * d]);
    let gh: [&[f32]; R] = std::array::from_fn(|l| &gxhat[l * d..(l + 1) * d]);
    for i in 0..d {
        for l in 0..R {
            m1[l] += gh[l][i];
            m2[l] += gh[l][i] * xh[l][i];
        }
    }
    for l in 0..R {
        let rows = l * d..(l + 1) * d;
        let (gr, dxr) = (&g[rows.clone()], &mut dx[rows]);
        let (m1, m2) = (m1[l] / d as f32, m2[l] / d as f32);
        for i in 0..d {
            dxr[i] = rstd[l] * (gh[l][i] - m1 - xh[l][i] * m2);
        }
        if WB {
            for i in 0..d {
                dw[i] += gr[i] * xh[l][i];
                db[i] += gr[i];
            }
        }
    }
}

/// Fused LayerNorm over the last dimension with a hand-written backward.
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        let (x32, w32, b32) = (
            x.to_dtype(DType::F32)?,
            w.to_dtype(DType::F32)?,
            b.to_dtype(DType::F32)?,
        );
        let out = if cfg!(feature = "cuda") && x.device().is_cuda() {
            x32.contiguous()?.apply_op3(
                &w32.contiguous()?,
                &b32.contiguous()?,
                LayerNormOp { eps: eps as f32 },
            )?
        } else {
            composed::layer_norm(&x32, &w32, &b32, eps)?
        };
        return out.to_dtype(x.dtype());
    }
    if x.dtype() != DType::F32 {
        bail!("layer norm: only f32 is supported, got {:?}", x.dtype())
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

/// Softmax over the last dimension.
struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "wflora-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "softmax")?;
        let d = l.dims().last().copied().unwrap_or(0);
        if d == 0 {
            bail!("softmax: empty last dimension")
        }
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (yi, &xi) in yr.iter_mut().zip(xr) {
                *yi = xi - max;
            }
            // The library's expf, vectorised with the same bits (`expf.rs`).
            crate::expf::exp_in_place(yr);
            let sum = yr.iter().fold(0f32, |s, &v| s + v);
            let inv = 1.0 / sum;
            yr.iter_mut().for_each(|v| *v *= inv);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, cols) = crate::fused_cuda::rows_cols(l);
        let y = crate::fused_cuda::softmax_fwd(s, l, rows, cols)?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if res.device().is_cuda() {
            return Ok(Some(crate::fused_cuda::softmax_grad(res, grad)?));
        }
        Ok(Some(softmax_grad_cpu(res, grad)?))
    }
}

/// The softmax's input gradient from its output `y` and the output's
/// gradient `dy`, over the last dimension: `dx = y ⊙ (dy − Σ_j dy_j y_j)`,
/// row by row (`f32`, CPU).
fn softmax_grad_cpu(y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
    let d = y.dims().last().copied().unwrap_or(1).max(1);
    let dx = with_f32(y, "softmax output", |y| {
        with_f32(grad, "softmax grad", |g| {
            if g.len() != y.len() {
                bail!(
                    "softmax grad: {} values for an output of {}",
                    g.len(),
                    y.len()
                )
            }
            let mut dx = vec![0f32; y.len()];
            for ((yr, gr), dr) in y
                .chunks_exact(d)
                .zip(g.chunks_exact(d))
                .zip(dx.chunks_exact_mut(d))
            {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for i in 0..d {
                    dr[i] = yr[i] * (gr[i] - dot);
                }
            }
            Ok(dx)
        })
    })?;
    Tensor::from_vec(dx, y.shape(), y.device())
}

/// Exact GELU `x·Φ(x)` with `Φ` the standard normal cdf: candle's `erf`
/// bit for bit, vectorised (`erf.rs`). On the CPU, when the input is
/// tracked, the forward pass keeps `Φ(x)` for the backward pass, which then
/// only adds `x·φ(x)` (the same values it would recompute: the floats do not
/// change, one `erf` pass per step is saved at the cost of one buffer of the
/// activation's size until the graph is dropped).
struct GeluOp {
    keep: bool,
    cdf: std::sync::OnceLock<Vec<f32>>,
}

impl GeluOp {
    fn new(keep: bool) -> Self {
        Self {
            keep,
            cdf: std::sync::OnceLock::new(),
        }
    }
}

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "wflora-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "gelu")?;
        let mut cdf = crate::erf::normal_cdf(x);
        if !self.keep {
            // Nothing to keep: the output overwrites Φ in place.
            cdf.iter_mut().zip(x).for_each(|(c, &v)| *c *= v);
            return Ok((CpuStorage::F32(cdf), l.shape().clone()));
        }
        let y: Vec<f32> = cdf.iter().zip(x).map(|(&c, &v)| v * c).collect();
        // A second forward through the same op (never done) would keep the
        // first Φ; the backward checks the length before using it.
        let _ = self.cdf.set(cdf);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let y = crate::fused_cuda::gelu_fwd(s, l, l.shape().elem_count())?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return Ok(Some(crate::fused_cuda::gelu_grad(x, grad)?));
        }
        let dx = with_f32(x, "gelu input", |xv| {
            with_f32(grad, "gelu grad", |g| {
                let recomputed;
                let cdf = match self.cdf.get() {
                    Some(c) if c.len() == xv.len() => c.as_slice(),
                    _ => {
                        recomputed = crate::erf::normal_cdf(xv);
                        recomputed.as_slice()
                    }
                };
                Ok(gelu_grad(xv, cdf, g))
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// The exact GELU's input gradient from its input `xv`, `Φ(xv)` and the
/// output's gradient `g`: d/dx x·Φ(x) = Φ(x) + x·φ(x), φ(x) =
/// exp(−x²/2)/√(2π).
pub(crate) fn gelu_grad(xv: &[f32], cdf: &[f32], g: &[f32]) -> Vec<f32> {
    // e^{−x²/2} by the library's expf, vectorised with the same bits
    // (`expf.rs`); then the same products as before.
    let mut dx: Vec<f32> = xv.iter().map(|&v| -0.5 * v * v).collect();
    crate::expf::exp_in_place(&mut dx);
    for (((d, &c), &v), &gi) in dx.iter_mut().zip(cdf).zip(xv).zip(g) {
        *d = gi * (c + v * FRAC_1_SQRT_2PI * *d);
    }
    dx
}

/// Fused exact GELU with a hand-written backward.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        if cfg!(feature = "cuda") && x.device().is_cuda() {
            let y = x
                .to_dtype(DType::F32)?
                .contiguous()?
                .apply_op1(GeluOp::new(false))?;
            return y.to_dtype(x.dtype());
        }
        return x.gelu_erf();
    }
    if x.dtype() != DType::F32 {
        bail!("gelu: only f32 is supported, got {:?}", x.dtype())
    }
    let keep = x.track_op();
    x.contiguous()?.apply_op1(GeluOp::new(keep))
}

/// Fused softmax over the last dimension with a hand-written backward.
pub(crate) fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        let x32 = x.to_dtype(DType::F32)?;
        let y = if cfg!(feature = "cuda") && x.device().is_cuda() {
            x32.contiguous()?.apply_op1(SoftmaxOp)?
        } else {
            composed::softmax_last(&x32)?
        };
        return y.to_dtype(x.dtype());
    }
    if x.dtype() != DType::F32 {
        bail!("softmax: only f32 is supported, got {:?}", x.dtype())
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}

/// The same maps composed from candle primitives: candle's autograd gives
/// their backward passes, and they run on any device and float dtype. The
/// fused CPU kernels are tested against them.
mod composed {
    use candle_core::{D, Tensor};

    /// LayerNorm over the last dimension.
    pub(super) fn layer_norm(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    }

    /// Multi-head self-attention composed from candle ops (the fused
    /// softmax included): the reference for [`super::AttentionOp`], and the
    /// version run on devices without fused kernels.
    pub(super) fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: usize,
        tokens: usize,
        heads: usize,
    ) -> candle_core::Result<Tensor> {
        let d = q.dim(1)?;
        let dh = d / heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, tokens, heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(q.affine(1.0 / (dh as f64).sqrt(), 0.0)?)?;
        let k = split(k.clone())?;
        let v = split(v.clone())?;
        let att = super::softmax_last(&q.matmul(&k.t()?)?)?;
        att.matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * tokens, d))
    }

    /// Softmax over the last dimension (max-shifted).
    pub(super) fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn rand_var(shape: &[usize], rng: &mut StdRng) -> Var {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        Var::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The reference: LayerNorm composed from candle primitives (autograd).
    fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        composed::layer_norm(x, w, b, eps).unwrap()
    }

    fn softmax_composed(x: &Tensor) -> Tensor {
        composed::softmax_last(x).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn layer_norm_matches_composed_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(1);
        let x = rand_var(&[3, 5, 6], &mut rng);
        let w = rand_var(&[6], &mut rng);
        let b = rand_var(&[6], &mut rng);
        // A random linear functional of the output, so every gradient entry matters.
        let probe = rand_var(&[3, 5, 6], &mut rng);
        let y1 = layer_norm(&x, &w, &b, 1e-5).unwrap();
        let y2 = layer_norm_composed(&x, &w, &b, 1e-5);
        assert!(max_diff(&y1, &y2) < 1e-5);
        let g1 = (y1 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (y2 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(d < 1e-4, "{d}");
        }
    }

    /// The reference for the blocked LayerNorm: one row at a time, as the
    /// kernels were written before `LN_BLOCK` (and as `Iterator::sum` adds).
    fn layer_norm_rowwise(x: &[f32], w: &[f32], b: &[f32], g: &[f32], eps: f32) -> [Vec<f32>; 4] {
        let d = w.len();
        let moments = |r: &[f32]| {
            let n = d as f32;
            let mean = r.iter().sum::<f32>() / n;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            (mean, 1.0 / (var + eps).sqrt())
        };
        let (mut y, mut dx) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
        for ((xr, gr), (yr, dxr)) in x
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(y.chunks_exact_mut(d).zip(dx.chunks_exact_mut(d)))
        {
            let (mean, rstd) = moments(xr);
            let (mut m1, mut m2) = (0f32, 0f32);
            let (mut xhat, mut gxhat) = (vec![0f32; d], vec![0f32; d]);
            for i in 0..d {
                yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                xhat[i] = (xr[i] - mean) * rstd;
                gxhat[i] = gr[i] * w[i];
                m1 += gxhat[i];
                m2 += gxhat[i] * xhat[i];
                dw[i] += gr[i] * xhat[i];
                db[i] += gr[i];
            }
            let (m1, m2) = (m1 / d as f32, m2 / d as f32);
            for i in 0..d {
                dxr[i] = rstd * (gxhat[i] - m1 - xhat[i] * m2);
            }
        }
        [y, dx, dw, db]
    }

    fn assert_blocked_equals_rowwise(x: &[f32], w: &[f32], b: &[f32], g: &[f32], eps: f32) {
        let d = w.len();
        let y = layer_norm_fwd(x, w, b, eps);
        let (dx, dw, db) = layer_norm_bwd(x, w, g, d, eps);
        let want = layer_norm_rowwise(x, w, b, g, eps);
        for (name, got, want) in [
            ("y", &y, &want[0]),
            ("dx", &dx, &want[1]),
            ("dw", &dw, &want[2]),
            ("db", &db, &want[3]),
        ] {
            assert_eq!(got.len(), want.len(), "{name}");
            for (k, (a, e)) in got.iter().zip(want).enumerate() {
                // Bit patterns: -0.0 against 0.0 and NaN payloads count.
                assert_eq!(
                    a.to_bits(),
                    e.to_bits(),
                    "{name}[{k}] {a} vs {e} (width {d}, {} rows)",
                    x.len() / d
                );
            }
        }
    }

    #[test]
    fn blocked_layer_norm_is_rowwise_to_the_bit() {
        let mut rng = StdRng::seed_from_u64(11);
        // Rows below, at and above multiples of the block; widths from 1 to a ViT's.
        for rows in [1, 2, 7, 8, 9, 15, 16, 17, 33] {
            for d in [1, 2, 3, 8, 63, 384] {
                let n = rows * d;
                let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
                // Rows whose sums meet signed zeros, constants and a wide range of scales.
                if rows > 2 {
                    x[..d].fill(-0.0);
                    x[d..2 * d].fill(0.5);
                }
                if rows > 8 {
                    for (i, v) in x[8 * d..9 * d].iter_mut().enumerate() {
                        *v = if i % 2 == 0 { 1e30 } else { -1e-30 };
                    }
                }
                let w: Vec<f32> = (0..d).map(|_| rng.random_range(-2.0..2.0)).collect();
                let b: Vec<f32> = (0..d).map(|_| rng.random_range(-2.0..2.0)).collect();
                let mut g: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                g[..d].fill(-0.0);
                assert_blocked_equals_rowwise(&x, &w, &b, &g, 1e-6);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn blocked_layer_norm_is_rowwise_for_any_input(
            rows in 1usize..20,
            d in 1usize..40,
            seed in 0u64..u64::MAX,
            scale in -20i32..20,
            eps in proptest::sample::select(vec![1e-12f32, 1e-6, 1e-5, 0.1]),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let s = 2f32.powi(scale);
            let x: Vec<f32> = (0..rows * d).map(|_| s * rng.random_range(-1.0f32..1.0)).collect();
            let w: Vec<f32> = (0..d).map(|_| rng.random_range(-2.0..2.0)).collect();
            let b: Vec<f32> = (0..d).map(|_| rng.random_range(-2.0..2.0)).collect();
            let g: Vec<f32> = (0..rows * d).map(|_| s * rng.random_range(-1.0f32..1.0)).collect();
            assert_blocked_equals_rowwise(&x, &w, &b, &g, eps);
        }
    }

    #[test]
    fn softmax_matches_composed_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(2);
        let x = rand_var(&[2, 3, 4, 7], &mut rng);
        let probe = rand_var(&[2, 3, 4, 7], &mut rng);
        let y1 = softmax_last(&x).unwrap();
        let y2 = softmax_composed(&x);
        assert!(max_diff(&y1, &y2) < 1e-6);
        let g1 = (y1 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (y2 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn frozen_linear_matches_matmul_and_passes_input_gradients_only() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = rand_var(&[7, 5], &mut rng);
        let w = rand_var(&[4, 5], &mut rng).as_detached_tensor();
        let b = rand_var(&[4], &mut rng).as_detached_tensor();
        let probe = rand_var(&[7, 4], &mut rng);
        let y1 = frozen_linear(&x, &w, Some(&b)).unwrap();
        let y2 = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&y1, &y2) < 1e-5);
        let g1 = (y1 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (y2 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
        assert!(g1.get(&w).is_none());
        let no_bias = frozen_linear(&x, &w, None).unwrap();
        assert!(max_diff(&no_bias, &x.matmul(&w.t().unwrap()).unwrap()) < 1e-5);
    }

    #[test]
    fn gelu_matches_candle_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(4);
        let x = rand_var(&[6, 9], &mut rng);
        let probe = rand_var(&[6, 9], &mut rng);
        let y1 = gelu(&x).unwrap();
        let y2 = x.gelu_erf().unwrap();
        assert!(max_diff(&y1, &y2) < 1e-6);
        let g1 = (y1 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (y2 * probe.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
        // Hand values: GELU(0) = 0, GELU'(0) = 1/2, GELU(1) = Φ(1) = 0.841345.
        let v = gelu(&Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap()).unwrap();
        let v = v.to_vec1::<f32>().unwrap();
        assert!(v[0].abs() < 1e-7 && (v[1] - 0.841_345).abs() < 1e-5);
    }

    /// Every value of `a` equals `b`'s (`==`, so `-0 == +0`).
    fn assert_same(a: &Tensor, b: &Tensor, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        let bad = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(bad, 0, "{what}: {bad} of {} values differ", a.len());
    }

    /// The one-node CPU attention against the composed candle version: the
    /// same values and gradients, to the bit (the backward pass runs the same
    /// matmuls on the same layouts). `q`, `k`, `v` are projections of one
    /// input, as in a block, so the input's gradient also checks that the
    /// three contributions arrive in the same order.
    #[test]
    fn attention_node_equals_composed_to_the_bit() {
        let (batch, tokens, heads, dh) = (3, 17, 3, 6);
        let d = heads * dh;
        for (seed, track_k) in [(7u64, true), (8, false)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let x = rand_var(&[batch * tokens, d], &mut rng);
            let wq = rand_var(&[d, d], &mut rng);
            let wk = rand_var(&[d, d], &mut rng);
            let wv = rand_var(&[d, d], &mut rng);
            let probe = rand_var(&[batch * tokens, d], &mut rng);
            let run = |fused: bool| {
                let q = x.matmul(wq.as_tensor()).unwrap();
                let k = if track_k {
                    x.matmul(wk.as_tensor()).unwrap()
                } else {
                    x.as_tensor()
                        .detach()
                        .matmul(&wk.as_detached_tensor())
                        .unwrap()
                };
                // Scores of several units, so the softmax is far from uniform.
                let v = x.matmul(wv.as_tensor()).unwrap();
                let y = if fused {
                    attention(&q, &k, &v, batch, tokens, heads).unwrap()
                } else {
                    composed::attention(&q, &k, &v, batch, tokens, heads).unwrap()
                };
                let g = (&y * probe.as_tensor())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (y, g)
            };
            let (y1, g1) = run(true);
            let (y2, g2) = run(false);
            assert_same(&y1, &y2, "context");
            for (var, name) in [(&x, "x"), (&wq, "wq"), (&wv, "wv"), (&wk, "wk")] {
                match (g1.get(var), g2.get(var)) {
                    (Some(a), Some(b)) => assert_same(a, b, name),
                    (None, None) => assert!(!track_k && name == "wk"),
                    _ => panic!("{name}: a gradient on one side only"),
                }
            }
            // Not vacuous: the gradients are far from zero.
            let gx = g1.get(&x).unwrap().abs().unwrap().max_all().unwrap();
            assert!(gx.to_scalar::<f32>().unwrap() > 1e-2);
        }
    }

    /// The softmax's gradient from a hand computation: for `y = softmax(x)`
    /// and a probe `c`, `∂(c·y)/∂x_i = y_i (c_i − c·y)`.
    #[test]
    fn softmax_grad_matches_hand_values() {
        let y = Tensor::new(&[[0.5f32, 0.25, 0.25]], &Device::Cpu).unwrap();
        let c = Tensor::new(&[[1f32, 2.0, -1.0]], &Device::Cpu).unwrap();
        // c·y = 0.5 + 0.5 − 0.25 = 0.75.
        let dx = softmax_grad_cpu(&y, &c).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(dx, vec![vec![0.125, 0.3125, -0.4375]]);
        let wrong = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        assert!(softmax_grad_cpu(&y, &wrong).is_err());
    }

    #[test]
    fn attention_rejects_bad_shapes_and_dtypes() {
        let q = Tensor::zeros((6, 8), DType::F32, &Device::Cpu).unwrap();
        // 6 rows are not 4 inputs of 2 tokens.
        assert!(attention(&q, &q, &q, 4, 2, 2).is_err());
        // 8 features do not split into 3 heads.
        assert!(attention(&q, &q, &q, 3, 2, 3).is_err());
        let q64 = q.to_dtype(DType::F64).unwrap();
        assert!(attention(&q64, &q64, &q64, 3, 2, 2).is_err());
        assert!(attention(&q, &q, &q, 3, 2, 2).is_ok());
    }

    #[test]
    fn non_f32_input_is_an_error() {
        let x = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(softmax_last(&x).is_err());
        assert!(gelu(&x).is_err());
        let w = Tensor::ones(3, DType::F64, &Device::Cpu).unwrap();
        assert!(layer_norm(&x, &w, &w, 1e-5).is_err());
    }
}
