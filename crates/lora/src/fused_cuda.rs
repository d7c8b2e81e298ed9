//! The fused kernels on an NVIDIA GPU (feature `cuda`): LayerNorm, the
//! attention softmax and exact GELU, forward and backward, as CUDA C compiled
//! once per process by NVRTC (the CUDA runtime compiler candle links anyway)
//! and launched on candle's stream. `f32` only: the wrappers in `fused.rs`
//! cast reduced-precision activations to `f32` around them, as mixed
//! precision does for these ops.
//!
//! One warp per row for the row-wise ops (softmax rows of `T` tokens,
//! LayerNorm rows of `D` features), a grid-stride loop for GELU. Each kernel
//! computes what its CPU twin in `fused.rs` computes, in the same order per
//! row up to the warp's summation order; the peer bench's device check
//! (`PEER_CHECK=1`) compares whole training steps against the CPU.
//!
//! The model crate's only `unsafe`: allocating an uninitialised device buffer
//! that a kernel then fills, and the kernel launches (FFI whose arguments
//! must match the kernel's signature). Each block says why it holds.

#![allow(unsafe_code)]

use std::sync::OnceLock;

use crate::fused::AttentionState;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
    bail,
};

const MODULE: &str = "wflora_fused";

const SRC: &str = r#"
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Softmax over rows of `cols`: y = exp(x - max) / sum.
extern "C" __global__ void wf_softmax_fwd(const float* __restrict__ x, float* __restrict__ y,
                                          int rows, int cols) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* xr = x + (long long)row * cols;
    float* yr = y + (long long)row * cols;
    float m = __int_as_float(0xff800000);
    for (int i = threadIdx.x; i < cols; i += 32) m = fmaxf(m, xr[i]);
    m = warp_max(m);
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += 32) { float e = expf(xr[i] - m); yr[i] = e; s += e; }
    float inv = 1.f / warp_sum(s);
    for (int i = threadIdx.x; i < cols; i += 32) yr[i] *= inv;
}

// dx = y * (g - sum_j g_j y_j), row by row.
extern "C" __global__ void wf_softmax_bwd(const float* __restrict__ y, const float* __restrict__ g,
                                          float* __restrict__ dx, int rows, int cols) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    long long off = (long long)row * cols;
    float d = 0.f;
    for (int i = threadIdx.x; i < cols; i += 32) d += y[off + i] * g[off + i];
    d = warp_sum(d);
    for (int i = threadIdx.x; i < cols; i += 32) dx[off + i] = y[off + i] * (g[off + i] - d);
}

__device__ __forceinline__ void moments(const float* xr, int cols, float eps, float* mean, float* rstd) {
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += 32) s += xr[i];
    float mu = warp_sum(s) / cols;
    float v = 0.f;
    for (int i = threadIdx.x; i < cols; i += 32) { float c = xr[i] - mu; v += c * c; }
    *mean = mu;
    *rstd = 1.f / sqrtf(warp_sum(v) / cols + eps);
}

// LayerNorm over rows of `cols`: y = (x - mean) * rstd * w + b.
extern "C" __global__ void wf_layernorm_fwd(const float* __restrict__ x, const float* __restrict__ w,
                                            const float* __restrict__ b, float* __restrict__ y,
                                            int rows, int cols, float eps) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* xr = x + (long long)row * cols;
    float* yr = y + (long long)row * cols;
    float mean, rstd;
    moments(xr, cols, eps, &mean, &rstd);
    for (int i = threadIdx.x; i < cols; i += 32) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
}

// out[0] = dx, out[1] = g * xhat (summed over rows by the caller for dw).
extern "C" __global__ void wf_layernorm_bwd(const float* __restrict__ x, const float* __restrict__ w,
                                            const float* __restrict__ g, float* __restrict__ out,
                                            int rows, int cols, float eps) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    long long off = (long long)row * cols;
    long long half = (long long)rows * cols;
    const float* xr = x + off;
    const float* gr = g + off;
    float mean, rstd;
    moments(xr, cols, eps, &mean, &rstd);
    float m1 = 0.f, m2 = 0.f;
    for (int i = threadIdx.x; i < cols; i += 32) {
        float xhat = (xr[i] - mean) * rstd;
        float gx = gr[i] * w[i];
        m1 += gx;
        m2 += gx * xhat;
    }
    m1 = warp_sum(m1) / cols;
    m2 = warp_sum(m2) / cols;
    for (int i = threadIdx.x; i < cols; i += 32) {
        float xhat = (xr[i] - mean) * rstd;
        out[off + i] = rstd * (gr[i] * w[i] - m1 - xhat * m2);
        out[half + off + i] = gr[i] * xhat;
    }
}

// A linear layer's epilogue, in place on y = x W^T (rows x cols):
// y += bias, or y += bias + s * t with t = (x A^T) B^T the LoRA term.
extern "C" __global__ void wf_bias_f32(float* __restrict__ y, const float* __restrict__ bias,
                                       long long n, int cols) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] += bias[i % cols];
}
extern "C" __global__ void wf_bias_lora_f32(float* __restrict__ y, const float* __restrict__ t,
                                            const float* __restrict__ bias, float s,
                                            long long n, int cols) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = y[i] + bias[i % cols] + s * t[i];
}
// bf16 as raw bits: widened exactly, narrowed with round-to-nearest-even.
__device__ __forceinline__ float bf2f(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
extern "C" __global__ void wf_bias_bf16(unsigned short* __restrict__ y,
                                        const unsigned short* __restrict__ bias,
                                        long long n, int cols) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + bf2f(bias[i % cols]));
}
extern "C" __global__ void wf_bias_lora_bf16(unsigned short* __restrict__ y,
                                             const unsigned short* __restrict__ t,
                                             const unsigned short* __restrict__ bias, float s,
                                             long long n, int cols) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + bf2f(bias[i % cols]) + s * bf2f(t[i]));
}

// Exact GELU x * Phi(x) and its derivative Phi(x) + x * phi(x).
extern "C" __global__ void wf_gelu_fwd(const float* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v * 0.5f * (1.f + erff(v * 0.70710678f));
    }
}
extern "C" __global__ void wf_gelu_bwd(const float* __restrict__ x, const float* __restrict__ g,
                                       float* __restrict__ dx, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float cdf = 0.5f * (1.f + erff(v * 0.70710678f));
        dx[i] = g[i] * (cdf + v * 0.3989423f * expf(-0.5f * v * v));
    }
}
"#;

/// The module's PTX, compiled by NVRTC on first use.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let r = PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SRC)
            .map(|p| p.to_src())
            .map_err(|e| format!("nvrtc: {e:?}"))
    });
    match r {
        Ok(s) => Ok(s.as_str()),
        Err(e) => bail!("compiling the fused CUDA kernels: {e}"),
    }
}

/// The contiguous `f32` values of a storage as a device slice view's parent
/// and its element range.
fn f32_view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let Some((o1, o2)) = l.contiguous_offsets() else {
        bail!("{what}: input must be contiguous")
    };
    Ok(s.as_cuda_slice::<f32>()?.slice(o1..o2))
}

/// Rows of one warp each, 8 rows per block.
fn row_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

fn flat_config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{what} {v} exceeds i32")))
}

/// Launches kernel `$name` of the module with `$cfg` on the arguments, into
/// a fresh `f32` buffer of `$len` elements passed after the inputs (every
/// kernel writes all of it), and wraps the buffer as a storage.
macro_rules! launch_into {
    ($dev:expr, $name:literal, $cfg:expr, $len:expr, [$($input:expr),+], [$($scalar:expr),*]) => {{
        let func = $dev.get_or_load_custom_func($name, MODULE, ptx()?)?;
        // SAFETY: every element is written by the kernel before it is read.
        let out: CudaSlice<f32> = unsafe { $dev.alloc::<f32>($len)? };
        let mut b = func.builder();
        $( b.arg($input); )+
        b.arg(&out);
        $( b.arg($scalar); )*
        // SAFETY: the arguments match the kernel's signature, and the
        // buffers hold the element counts the kernel indexes.
        unsafe { b.launch($cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, $dev.clone()))
    }};
}

/// Softmax over the last dimension of `x` (`rows × cols`).
pub(crate) fn softmax_fwd(
    s: &CudaStorage,
    l: &Layout,
    rows: usize,
    cols: usize,
) -> Result<CudaStorage> {
    let dev = s.device();
    let x = f32_view(s, l, "softmax")?;
    let (r, c) = (to_i32(rows, "rows")?, to_i32(cols, "cols")?);
    launch_into!(
        dev,
        "wf_softmax_fwd",
        row_config(rows),
        rows * cols,
        [&x],
        [&r, &c]
    )
}

/// The softmax's input gradient from its output `y` and output gradient `g`.
pub(crate) fn softmax_bwd(
    ys: &CudaStorage,
    yl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    rows: usize,
    cols: usize,
) -> Result<CudaStorage> {
    let dev = ys.device();
    let y = f32_view(ys, yl, "softmax output")?;
    let g = f32_view(gs, gl, "softmax grad")?;
    let (r, c) = (to_i32(rows, "rows")?, to_i32(cols, "cols")?);
    launch_into!(
        dev,
        "wf_softmax_bwd",
        row_config(rows),
        rows * cols,
        [&y, &g],
        [&r, &c]
    )
}

/// LayerNorm of `x` (`rows × cols`) with weight `w` and bias `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_fwd(
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
    bs: &CudaStorage,
    bl: &Layout,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "layer norm x")?;
    let w = f32_view(ws, wl, "layer norm weight")?;
    let bias = f32_view(bs, bl, "layer norm bias")?;
    let (r, c) = (to_i32(rows, "rows")?, to_i32(cols, "cols")?);
    launch_into!(
        dev,
        "wf_layernorm_fwd",
        row_config(rows),
        rows * cols,
        [&x, &w, &bias],
        [&r, &c, &eps]
    )
}

/// LayerNorm's backward: a `2 × rows × cols` buffer holding `dx` and then
/// `g·x̂` (whose column sums are the weight gradient).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_bwd(
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "layer norm x")?;
    let w = f32_view(ws, wl, "layer norm weight")?;
    let g = f32_view(gs, gl, "layer norm grad")?;
    let (r, c) = (to_i32(rows, "rows")?, to_i32(cols, "cols")?);
    launch_into!(
        dev,
        "wf_layernorm_bwd",
        row_config(rows),
        2 * rows * cols,
        [&x, &w, &g],
        [&r, &c, &eps]
    )
}

/// Exact GELU of `n` values.
pub(crate) fn gelu_fwd(s: &CudaStorage, l: &Layout, n: usize) -> Result<CudaStorage> {
    let dev = s.device();
    let x = f32_view(s, l, "gelu")?;
    let len = n as i64;
    launch_into!(dev, "wf_gelu_fwd", flat_config(n), n, [&x], [&len])
}

/// GELU's input gradient from its input `x` and output gradient `g`.
pub(crate) fn gelu_bwd(
    xs: &CudaStorage,
    xl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    n: usize,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "gelu input")?;
    let g = f32_view(gs, gl, "gelu grad")?;
    let len = n as i64;
    launch_into!(dev, "wf_gelu_bwd", flat_config(n), n, [&x, &g], [&len])
}

/// `y += bias` or `y += bias + s·t` in place (`y`, `t`: `rows × cols`
/// fresh contiguous buffers; `bias`: `cols`, as laid out by `bl`), `f32` or
/// `bf16`.
pub(crate) fn add_bias_lora(
    y: &mut CudaStorage,
    t: Option<&CudaStorage>,
    bias: &CudaStorage,
    bl: &Layout,
    s: f32,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let Some((o1, o2)) = bl.contiguous_offsets() else {
        bail!("linear bias: must be contiguous")
    };
    let dev = y.device().clone();
    let n = rows * cols;
    let c = to_i32(cols, "cols")?;
    let len = n as i64;
    let cfg = flat_config(n);
    macro_rules! launch {
        ($ty:ty, $plain:literal, $lora:literal) => {{
            let b_view = bias.as_cuda_slice::<$ty>()?.slice(o1..o2);
            match t {
                None => {
                    let func = dev.get_or_load_custom_func($plain, MODULE, ptx()?)?;
                    let yv = y.as_cuda_slice_mut::<$ty>()?;
                    let mut b = func.builder();
                    b.arg(yv);
                    b.arg(&b_view);
                    b.arg(&len);
                    b.arg(&c);
                    // SAFETY: y holds n elements, bias cols; the signature matches.
                    unsafe { b.launch(cfg) }.w()?;
                }
                Some(t) => {
                    let tv = t.as_cuda_slice::<$ty>()?;
                    let func = dev.get_or_load_custom_func($lora, MODULE, ptx()?)?;
                    let yv = y.as_cuda_slice_mut::<$ty>()?;
                    let mut b = func.builder();
                    b.arg(yv);
                    b.arg(tv);
                    b.arg(&b_view);
                    b.arg(&s);
                    b.arg(&len);
                    b.arg(&c);
                    // SAFETY: y and t hold n elements, bias cols; the signature matches.
                    unsafe { b.launch(cfg) }.w()?;
                }
            }
        }};
    }
    match y.dtype() {
        DType::F32 => launch!(f32, "wf_bias_f32", "wf_bias_lora_f32"),
        DType::BF16 => launch!(half::bf16, "wf_bias_bf16", "wf_bias_lora_bf16"),
        other => bail!("linear on the gpu: {other:?} is not supported (f32 or bf16)"),
    }
    Ok(())
}

/// `y = x·W0ᵀ + b + s·(x·Aᵀ)·Bᵀ` as one autograd node, with frozen `W0`
/// and `b` (the op's fields) and the factors `A`, `B` as its inputs: candle
/// accumulates one gradient per node, so the six nodes of the composed
/// version (matmul, bias, two matmuls, scale, sum) cost six passes over
/// the output's size in the backward pass; this costs one.
pub(crate) struct LoraLinearOp {
    pub(crate) w: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) scale: f64,
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "wflora-lora-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        gpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        a_s: &CudaStorage,
        al: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, kw) = self.w.dims2()?;
        let (r, ka) = al.shape().dims2()?;
        let (nb, rb) = bl.shape().dims2()?;
        if k != kw || k != ka || n != nb || r != rb {
            bail!(
                "lora linear: x {:?}, W {:?}, A {:?}, B {:?}",
                xl.dims(),
                self.w.dims(),
                al.dims(),
                bl.dims()
            )
        }
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let Storage::Cuda(ws) = &*w_storage else {
            bail!("lora linear: the weight is not on the gpu")
        };
        let mut y = xs.matmul(ws, (1, m, n, k), xl, &w_layout.transpose(0, 1)?)?;
        let low = xs.matmul(a_s, (1, m, r, k), xl, &al.transpose(0, 1)?)?;
        let low_l = Layout::contiguous((m, r));
        let t = low.matmul(bs, (1, m, n, r), &low_l, &bl.transpose(0, 1)?)?;
        let (b_storage, b_layout) = self.bias.storage_and_layout();
        let Storage::Cuda(b_cuda) = &*b_storage else {
            bail!("lora linear: the bias is not on the gpu")
        };
        add_bias_lora(&mut y, Some(&t), b_cuda, b_layout, self.scale as f32, m, n)?;
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // g_low = s·dy·B (m×r); dx = dy·W0 + g_low·A; dA = g_lowᵀ·x;
        // dB = s·dyᵀ·(x·Aᵀ).
        let g_low = grad.matmul(b)?.affine(self.scale, 0.0)?;
        let dx = (grad.matmul(&self.w)? + g_low.matmul(a)?)?;
        let da = g_low.t()?.matmul(x)?;
        let db = grad
            .t()?
            .matmul(&x.matmul(&a.t()?)?)?
            .affine(self.scale, 0.0)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// Multi-head attention from the projected `q`, `k`, `v` (`B·T × D`) to the
/// context (`B·T × D`) as one autograd node: the forward pass runs on
/// detached inputs ([`AttentionState`]: head split, scaled scores, softmax,
/// weighted sum, head merge) and the node's backward is written out below,
/// so candle keeps one gradient per input instead of one per intermediate
/// (twelve of them, the `B·H·T·T` scores among them).
struct AttentionOp(AttentionState);

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "wflora-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        gpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let ctx = self.0.take_ctx()?;
        let (storage, layout) = ctx.storage_and_layout();
        let Storage::Cuda(cs) = &*storage else {
            bail!("attention: the context is not on the gpu")
        };
        Ok((cs.try_clone(layout)?, ctx.shape().clone()))
    }

    fn bwd(
        &self,
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let st = &self.0;
        let (b, t, h, dh) = st.dims;
        let dtype = st.p.dtype();
        let g = grad.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?;
        let dv = st.p.t()?.matmul(&g)?;
        let dp = g.matmul(&st.vh.t()?)?;
        let ds = softmax_grad(&st.p.to_dtype(DType::F32)?, &dp.to_dtype(DType::F32)?)?
            .to_dtype(dtype)?;
        let dq = ds.matmul(&st.kh)?.affine(st.scale, 0.0)?;
        let dk = ds.t()?.matmul(&st.qh)?;
        let merge = |x: Tensor| -> Result<Tensor> { x.transpose(1, 2)?.reshape((b * t, h * dh)) };
        Ok((Some(merge(dq)?), Some(merge(dk)?), Some(merge(dv)?)))
    }
}

/// Attention on the GPU as one node (see [`AttentionOp`]); the shapes are
/// checked by [`AttentionState::forward`].
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: usize,
    tokens: usize,
    heads: usize,
) -> Result<Tensor> {
    let state = AttentionState::forward(q, k, v, (batch, tokens, heads), true)?;
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, AttentionOp(state))
}

/// The backward passes as custom ops of their own (no backward of theirs):
/// what the forward ops' `bwd` call on the GPU.
struct SoftmaxBwd;
struct GeluBwd;
struct LayerNormBwd {
    eps: f32,
}

fn gpu_only(name: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{name}: the gpu backward ran on the cpu")
}

/// `(rows, cols)` of a tensor taken row-wise over its last dimension.
pub(crate) fn rows_cols(l: &Layout) -> (usize, usize) {
    let cols = l.dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / cols, cols)
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "wflora-softmax-bwd"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        gpu_only(self.name())
    }
    fn cuda_fwd(
        &self,
        ys: &CudaStorage,
        yl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, cols) = rows_cols(yl);
        Ok((softmax_bwd(ys, yl, gs, gl, rows, cols)?, yl.shape().clone()))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "wflora-gelu-bwd"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        gpu_only(self.name())
    }
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = xl.shape().elem_count();
        Ok((gelu_bwd(xs, xl, gs, gl, n)?, xl.shape().clone()))
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "wflora-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        gpu_only(self.name())
    }
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, cols) = rows_cols(xl);
        let out = layer_norm_bwd(xs, xl, ws, wl, gs, gl, rows, cols, self.eps)?;
        Ok((out, Shape::from((2, rows, cols))))
    }
}

/// Softmax input gradient from the output `y` and the output gradient.
pub(crate) fn softmax_grad(y: &Tensor, grad: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)
}

/// GELU input gradient from the input `x` and the output gradient.
pub(crate) fn gelu_grad(x: &Tensor, grad: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)
}

/// LayerNorm's `(dx, dw, db)` from the input, the weight and the output
/// gradient.
pub(crate) fn layer_norm_grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let out = x
        .contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &grad, &LayerNormBwd { eps })?;
    let cols = w.elem_count();
    let dx = out.get(0)?.reshape(x.shape())?;
    let dw = out.get(1)?.sum(0)?.reshape(cols)?;
    let db = grad.reshape(((), cols))?.sum(0)?;
    Ok((dx, dw, db))
}
