//! A whole pre-norm transformer block as one autograd node on the CPU.
//!
//! Composed from the ops of [`crate::fused`] and candle's own, a block with
//! LoRA on q and v is about twenty autograd nodes (LayerNorm, six linear
//! maps of up to seven nodes each with their adapters, attention, the
//! residual sums, the GELU). candle's backward pass gives every node a
//! zero-filled gradient buffer and adds each contribution into it: one
//! `memset` and one pass of additions over the node's output per node, most
//! of them the size of the activations (in a two-shard ViT-S/14 step, about
//! 8% of the time). Here the forward pass runs the block on detached inputs
//! and keeps what the backward pass needs; the backward pass is written out
//! below.
//!
//! Every float is the composed version's, to the bit: the same matmuls on
//! the same operands in the same layouts (contiguous gradients, as candle's
//! accumulated ones are), the same element-wise kernels, and where several
//! contributions meet (the LayerNorm output that feeds q, k and v) the sum
//! in the order candle's backward pass adds them (the reverse of its
//! post-order walk of the graph: v's adapter, v, k's adapter, k, q's
//! adapter, q). `block_node_equals_composed_to_the_bit` in `model.rs`
//! checks the logits and every trainable gradient with `to_bits`.
//!
//! The block's LoRA factors enter the node as one packed input (their
//! flattened values concatenated by a candle `cat`, whose backward pass
//! hands each factor its slice): a custom op takes at most three inputs.
//! Frozen weights only: the node computes no gradient for the backbone's
//! weights, LayerNorm parameters or LayerScale, so full fine-tuning keeps
//! the composed block. Anything else (another device or dtype, a tracked
//! backbone tensor, a post-norm text block) also keeps it.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Storage, Tensor, bail};

use crate::fused::{
    AttentionState, add_bias_rows, gelu_grad, layer_norm_dx, layer_norm_fwd, take_once, with_f32,
};

type Result<T> = candle_core::Result<T>;

/// The six linear maps of a block, in [`crate::config::LoraTarget::ALL`]
/// order.
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const FC1: usize = 4;
const FC2: usize = 5;

/// A frozen linear map `x·Wᵀ + b` with an optional adapter.
pub(crate) struct Linear<'a> {
    /// `W` (`out × in`).
    pub(crate) w: &'a Tensor,
    /// `b` (`out`).
    pub(crate) b: Option<&'a Tensor>,
    /// `(A, B, scale)`: the variables' tensors (`r × in`, `out × r`) and
    /// `α/r`.
    pub(crate) adapter: Option<(&'a Tensor, &'a Tensor, f64)>,
}

/// A LayerNorm's frozen weight, bias and `eps`.
pub(crate) type Norm<'a> = (&'a Tensor, &'a Tensor, f64);

/// One pre-norm block's tensors.
pub(crate) struct Block<'a> {
    /// The LayerNorm before attention.
    pub(crate) norm1: Norm<'a>,
    /// q, k, v, o, fc1, fc2.
    pub(crate) linear: [Linear<'a>; 6],
    /// The LayerNorm before the MLP.
    pub(crate) norm2: Norm<'a>,
    /// LayerScale after attention and after the MLP.
    pub(crate) ls1: Option<&'a Tensor>,
    /// See `ls1`.
    pub(crate) ls2: Option<&'a Tensor>,
}

/// Whether the node applies to `t`: a CPU `f32` tensor nobody trains.
fn frozen_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

/// `x` (`B·T × D`) through the block as one autograd node, or `None` where
/// the node does not apply (the caller composes the block then).
pub(crate) fn forward(
    x: &Tensor,
    block: &Block<'_>,
    (batch, tokens, heads): (usize, usize, usize),
) -> Result<Option<Tensor>> {
    let mut frozen = vec![block.norm1.0, block.norm1.1, block.norm2.0, block.norm2.1];
    frozen.extend(block.ls1);
    frozen.extend(block.ls2);
    for l in &block.linear {
        frozen.push(l.w);
        frozen.extend(l.b);
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 || !frozen.iter().all(|t| frozen_f32(t)) {
        return Ok(None);
    }
    let adapters: Vec<(usize, &Tensor, &Tensor)> = block
        .linear
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.adapter.map(|(a, b, _)| (i, a, b)))
        .collect();
    if adapters
        .iter()
        .any(|(_, a, b)| a.dtype() != DType::F32 || b.dtype() != DType::F32 || !a.device().is_cpu())
    {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let tracked_x = x.track_op();
    if adapters.is_empty() && tracked_x {
        // Never the case with a frozen backbone (the stem has nothing to
        // train); the composed block handles it.
        return Ok(None);
    }
    let state = State::forward(&x, block, (batch, tokens, heads), tracked_x)?;
    if adapters.is_empty() {
        // Nothing in the block is trained and its input is not tracked: the
        // composed version has no backward pass either.
        let out = state.take_out()?;
        return Tensor::from_vec(out, x.shape(), &Device::Cpu).map(Some);
    }
    let mut flat = Vec::with_capacity(2 * adapters.len());
    for (_, a, b) in &adapters {
        flat.push(a.flatten_all()?);
        flat.push(b.flatten_all()?);
    }
    let packed = Tensor::cat(&flat, 0)?;
    x.apply_op2(&packed, BlockOp(state)).map(Some)
}

/// A frozen linear map with its adapter, detached.
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
    /// `(A, B, scale)`, detached.
    adapter: Option<(Tensor, Tensor, f64)>,
}

/// What the node keeps between its forward and its backward pass.
struct State {
    lin: [Lin; 6],
    norm1: (Tensor, Tensor, f32),
    norm2: (Tensor, Tensor, f32),
    ls1: Option<Vec<f32>>,
    ls2: Option<Vec<f32>>,
    /// The block's input, its first LayerNorm's output, the attention
    /// context, the residual stream after attention, the second LayerNorm's
    /// output, the MLP's hidden pre-activation `u`, `Φ(u)` and `gelu(u)`.
    x: Tensor,
    h: Tensor,
    ctx: Tensor,
    x1: Tensor,
    h2: Tensor,
    u: Tensor,
    cdf: Vec<f32>,
    g: Tensor,
    attention: AttentionState,
    /// Per linear map with an adapter: `s·(input·Aᵀ)`.
    low: [Option<Tensor>; 6],
    tracked_x: bool,
    out: Mutex<Option<Vec<f32>>>,
    dims: (usize, usize),
}

/// `a·b` for 2-D CPU `f32` tensors by the storage's matmul with
/// `Tensor::matmul`'s arguments (so its floats), into an owned vector.
fn mm(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    let (m, k) = a.dims2()?;
    let (k2, n) = b.dims2()?;
    if k != k2 {
        bail!("block: matmul of {:?} by {:?}", a.dims(), b.dims())
    }
    if m * n == 0 || k == 0 {
        return Ok(vec![0f32; m * n]);
    }
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(ca), Storage::Cpu(cb)) = (&*sa, &*sb) else {
        bail!("block: operands are not on the cpu")
    };
    match ca.matmul(cb, (1, m, n, k), la, lb)? {
        CpuStorage::F32(v) => Ok(v),
        _ => bail!("block: only f32 is supported"),
    }
}

fn cpu(v: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Tensor::from_vec(v, (rows, cols), &Device::Cpu)
}

/// `a += b` element-wise (the same floats as candle's `a + b`).
fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// Rows of `a` times `s` element-wise (candle's `broadcast_mul` by a vector).
fn scale_rows(a: &mut [f32], s: &[f32]) {
    for row in a.chunks_exact_mut(s.len()) {
        row.iter_mut().zip(s).for_each(|(x, y)| *x *= y);
    }
}

/// The residual stream after a branch: `stream + LayerScale·branch`, with
/// candle's floats (the scale, then the sum), in the branch's buffer.
fn residual(stream: &Tensor, mut branch: Vec<f32>, ls: Option<&Vec<f32>>) -> Result<Vec<f32>> {
    if let Some(ls) = ls {
        scale_rows(&mut branch, ls);
    }
    with_f32(stream, "block residual", |v| {
        add_into(&mut branch, v);
        Ok(())
    })?;
    Ok(branch)
}

fn vec_of(t: &Tensor) -> Result<Vec<f32>> {
    with_f32(t, "block", |v| Ok(v.to_vec()))
}

impl Lin {
    fn new(l: &Linear<'_>) -> Result<Self> {
        Ok(Self {
            w: l.w.contiguous()?,
            b: l.b.map(Tensor::contiguous).transpose()?,
            adapter: l
                .adapter
                .map(|(a, b, s)| Ok::<_, candle_core::Error>((a.detach(), b.detach(), s)))
                .transpose()?,
        })
    }

    /// `y = input·Wᵀ + b (+ (s·input·Aᵀ)·Bᵀ)` as the composed layer computes
    /// it (the frozen op's matmul and bias rows, then candle's matmuls,
    /// `affine` and sum), with `s·input·Aᵀ` kept for the backward pass.
    fn forward(&self, input: &Tensor) -> Result<(Vec<f32>, Option<Tensor>)> {
        let mut y = mm(input, &self.w.t()?)?;
        if let Some(b) = &self.b {
            with_f32(b, "block bias", |bias| {
                add_bias_rows(&mut y, bias);
                Ok(())
            })?;
        }
        let Some((a, b, scale)) = &self.adapter else {
            return Ok((y, None));
        };
        let low = input.matmul(&a.t()?)?.affine(*scale, 0.0)?;
        let t = mm(&low, &b.t()?)?;
        add_into(&mut y, &t);
        Ok((y, Some(low)))
    }

    /// From the output's gradient `gy` (contiguous): the factors' gradients
    /// `(dA, dB)` as candle's backward pass of the composed layer computes
    /// them, and with `need_input` the input's gradient contributions in the
    /// order candle adds them (the adapter's, then the frozen map's).
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        input: &Tensor,
        low: Option<&Tensor>,
        gy: &Tensor,
        need_input: bool,
    ) -> Result<(Option<(Tensor, Tensor)>, Vec<Tensor>)> {
        let mut contributions = Vec::with_capacity(2);
        let mut factors = None;
        if let (Some((a, b, scale)), Some(low)) = (&self.adapter, low) {
            // t = low·Bᵀ: d low = gy·B, d Bᵀ = lowᵀ·gy.
            let glow = gy.matmul(b)?;
            let db = low.t()?.matmul(gy)?.t()?.contiguous()?;
            // low = s·xa: d xa = s·d low.
            let gxa = glow.affine(*scale, 0.0)?;
            // xa = input·Aᵀ: d input = d xa·A, d Aᵀ = inputᵀ·d xa.
            if need_input {
                contributions.push(gxa.matmul(a)?);
            }
            let da = input.t()?.matmul(&gxa)?.t()?.contiguous()?;
            factors = Some((da, db));
        }
        if need_input {
            contributions.push(gy.matmul(&self.w)?);
        }
        Ok((factors, contributions))
    }
}

/// The sum of `parts` from the first, in order (candle's accumulation
/// order; adding to its zero-filled buffer first changes no value).
fn sum_in_order(parts: &[Tensor]) -> Result<Vec<f32>> {
    let mut acc = match parts {
        [] => bail!("block: no gradient to sum"),
        [only] => vec_of(only)?,
        [first, second, ..] => with_f32(first, "block gradient", |a| {
            with_f32(second, "block gradient", |b| {
                Ok(a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f32>>())
            })
        })?,
    };
    for p in parts.iter().skip(2) {
        with_f32(p, "block gradient", |v| {
            add_into(&mut acc, v);
            Ok(())
        })?;
    }
    Ok(acc)
}

/// `t` with its rows times `s` element-wise, or `t` itself without `s`.
fn scaled(t: &Tensor, s: Option<&Vec<f32>>) -> Result<Tensor> {
    let Some(s) = s else {
        return Ok(t.clone());
    };
    let (m, d) = t.dims2()?;
    let v = with_f32(t, "block gradient", |v| {
        Ok(v.chunks_exact(d)
            .flat_map(|row| row.iter().zip(s).map(|(x, y)| x * y))
            .collect::<Vec<f32>>())
    })?;
    cpu(v, m, d)
}

impl State {
    fn forward(
        x: &Tensor,
        block: &Block<'_>,
        (batch, tokens, heads): (usize, usize, usize),
        tracked_x: bool,
    ) -> Result<Self> {
        let (m, d) = x.dims2()?;
        if m != batch * tokens {
            bail!("block: {m} rows for {batch}·{tokens} tokens")
        }
        let lin = [0, 1, 2, 3, 4, 5].map(|i| Lin::new(&block.linear[i]));
        let [q, k, v, o, fc1, fc2] = lin;
        let lin = [q?, k?, v?, o?, fc1?, fc2?];
        let norm = |(w, b, eps): Norm<'_>| -> Result<(Tensor, Tensor, f32)> {
            Ok((w.contiguous()?, b.contiguous()?, eps as f32))
        };
        let (norm1, norm2) = (norm(block.norm1)?, norm(block.norm2)?);
        let ls1 = block.ls1.map(vec_of).transpose()?;
        let ls2 = block.ls2.map(vec_of).transpose()?;
        let x = x.detach();
        let ln = |input: &[f32], (w, b, eps): &(Tensor, Tensor, f32)| -> Result<Vec<f32>> {
            with_f32(w, "block norm weight", |wv| {
                with_f32(b, "block norm bias", |bv| {
                    if wv.len() != d || bv.len() != d {
                        bail!("block: norm of width {} for tokens of width {d}", wv.len())
                    }
                    Ok(layer_norm_fwd(input, wv, bv, *eps))
                })
            })
        };
        let h = cpu(with_f32(&x, "block input", |xv| ln(xv, &norm1))?, m, d)?;
        // Each linear map's output, keeping `s·input·Aᵀ` of an adapter.
        let mut low: [Option<Tensor>; 6] = Default::default();
        let mut proj = |i: usize, input: &Tensor| -> Result<Vec<f32>> {
            let (y, l) = lin[i].forward(input)?;
            low[i] = l;
            Ok(y)
        };
        let (yq, yk, yv) = (
            cpu(proj(Q, &h)?, m, d)?,
            cpu(proj(K, &h)?, m, d)?,
            cpu(proj(V, &h)?, m, d)?,
        );
        let attention = AttentionState::forward(&yq, &yk, &yv, (batch, tokens, heads), false)?;
        let ctx = cpu(attention.take_merged_ctx()?, m, d)?;
        let x1 = cpu(residual(&x, proj(O, &ctx)?, ls1.as_ref())?, m, d)?;
        let h2 = cpu(with_f32(&x1, "block residual", |v| ln(v, &norm2))?, m, d)?;
        let u = proj(FC1, &h2)?;
        let hidden = u.len() / m;
        let cdf = crate::erf::normal_cdf(&u);
        let g: Vec<f32> = cdf.iter().zip(&u).map(|(&c, &v)| v * c).collect();
        let (u, g) = (cpu(u, m, hidden)?, cpu(g, m, hidden)?);
        let out = residual(&x1, proj(FC2, &g)?, ls2.as_ref())?;
        Ok(Self {
            lin,
            norm1,
            norm2,
            ls1,
            ls2,
            x,
            h,
            ctx,
            x1,
            h2,
            u,
            cdf,
            g,
            attention,
            low,
            tracked_x,
            out: Mutex::new(Some(out)),
            dims: (m, d),
        })
    }

    /// The block's output, once.
    fn take_out(&self) -> Result<Vec<f32>> {
        take_once(&self.out, "block")
    }

    /// LayerNorm's `dx` for input `x` and output gradient `g`.
    fn ln_dx(x: &Tensor, (w, _, eps): &(Tensor, Tensor, f32), g: &[f32]) -> Result<Vec<f32>> {
        with_f32(x, "block norm input", |xv| {
            with_f32(w, "block norm weight", |wv| {
                Ok(layer_norm_dx(xv, wv, g, *eps))
            })
        })
    }

    /// The input's gradient (if tracked) and the packed factors' gradient
    /// from the output's gradient.
    fn backward(&self, grad: &Tensor) -> Result<(Option<Tensor>, Vec<f32>)> {
        let mut factors: [Option<(Tensor, Tensor)>; 6] = Default::default();
        let dx = self.backward_into(grad, &mut factors)?;
        Ok((dx, self.pack(&factors)?))
    }

    /// Walks the block backwards from the output's gradient, filling each
    /// adapter's `(dA, dB)`; stops where candle's graph stops tracking and
    /// returns the input's gradient if it is tracked.
    fn backward_into(
        &self,
        grad: &Tensor,
        factors: &mut [Option<(Tensor, Tensor)>; 6],
    ) -> Result<Option<Tensor>> {
        let (m, d) = self.dims;
        if grad.dims() != [m, d] {
            bail!("block: gradient of shape {:?} for {m}×{d}", grad.dims())
        }
        let has = |i: usize| self.lin[i].adapter.is_some();
        // What candle's graph tracks (and so what its backward computes).
        let t_x = self.tracked_x;
        let t_y = [t_x || has(Q), t_x || has(K), t_x || has(V)];
        let t_ctx = t_y.iter().any(|&t| t);
        let t_x1 = t_x || t_ctx || has(O);
        let t_u = t_x1 || has(FC1);
        // out = x1 + LayerScale2·fc2(g).
        let gm = scaled(grad, self.ls2.as_ref())?;
        let (f, parts) = self.lin[FC2].backward(&self.g, self.low[FC2].as_ref(), &gm, t_u)?;
        factors[FC2] = f;
        if !t_u {
            return Ok(None);
        }
        // g = gelu(u).
        let gg = sum_in_order(&parts)?;
        let gu = with_f32(&self.u, "block hidden", |uv| {
            Ok(gelu_grad(uv, &self.cdf, &gg))
        })?;
        let gu = cpu(gu, m, gg.len() / m)?;
        let (f, parts) = self.lin[FC1].backward(&self.h2, self.low[FC1].as_ref(), &gu, t_x1)?;
        factors[FC1] = f;
        if !t_x1 {
            return Ok(None);
        }
        // x1 feeds the output sum (first) and the second LayerNorm (two
        // terms: either order gives the same floats).
        let gh2 = sum_in_order(&parts)?;
        let mut gx1 = Self::ln_dx(&self.x1, &self.norm2, &gh2)?;
        with_f32(grad, "block gradient", |g| {
            add_into(&mut gx1, g);
            Ok(())
        })?;
        let gx1 = cpu(gx1, m, d)?;
        let ga = scaled(&gx1, self.ls1.as_ref())?;
        let (f, parts) = self.lin[O].backward(&self.ctx, self.low[O].as_ref(), &ga, t_ctx)?;
        factors[O] = f;
        if !t_ctx {
            return Ok(None);
        }
        let gctx = cpu(sum_in_order(&parts)?, m, d)?;
        let dqkv = self.attention.backward(&gctx, t_y)?;
        // candle reaches v's nodes first, then k's, then q's.
        let mut into_h = Vec::new();
        for i in [V, K, Q] {
            if let Some(gy) = &dqkv[i] {
                let (f, parts) = self.lin[i].backward(&self.h, self.low[i].as_ref(), gy, t_x)?;
                factors[i] = f;
                into_h.extend(parts);
            }
        }
        if !t_x {
            return Ok(None);
        }
        // x feeds the residual sum (first) and the first LayerNorm (two
        // terms).
        let gh = sum_in_order(&into_h)?;
        let mut gx = Self::ln_dx(&self.x, &self.norm1, &gh)?;
        with_f32(&gx1, "block gradient", |g| {
            add_into(&mut gx, g);
            Ok(())
        })?;
        Ok(Some(cpu(gx, m, d)?))
    }

    /// The factors' gradients in the packed input's order.
    fn pack(&self, factors: &[Option<(Tensor, Tensor)>; 6]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (l, f) in self.lin.iter().zip(factors) {
            if l.adapter.is_none() {
                continue;
            }
            let Some((da, db)) = f else {
                bail!("block: an adapter's gradient is missing")
            };
            with_f32(da, "block dA", |v| {
                out.extend_from_slice(v);
                Ok(())
            })?;
            with_f32(db, "block dB", |v| {
                out.extend_from_slice(v);
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// The block as one autograd node: input `x`, the packed factors.
struct BlockOp(State);

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "wflora-block-cpu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.0.take_out()?), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = self.0.backward(&grad.contiguous()?)?;
        if dp.len() != packed.elem_count() {
            bail!(
                "block: {} factor gradients for {} factors",
                dp.len(),
                packed.elem_count()
            )
        }
        Ok((
            dx,
            Some(Tensor::from_vec(dp, packed.shape(), &Device::Cpu)?),
        ))
    }
}
