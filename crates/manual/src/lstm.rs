//! The original practical's LSTM, its four gate products fused into one per step.
//!
//! Per step `t`, with gate blocks in the order `i, f, o, g` (the original keeps a separate
//! `W_x`, `W_h`, `b` per gate; stacking them side by side is the same maths):
//! ```text
//! A_t = x_t·W_x + b + h_{t−1}·W_h          [B, 4H]
//! i, f, o = σ(A_i), σ(A_f), σ(A_o)        g = tanh(A_g)
//! c_t = g⊙i + c_{t−1}⊙f                   h_t = tanh(c_t)⊙o
//! ```
//! from `h_0 = c_0 = 0`. The input products of all steps are one product
//! ([`InputProjection`]); only `h_{t−1}·W_h` has to wait for the previous step.

use ndarray::{Array2, ArrayView2, s};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use rayon::prelude::*;

use crate::float::{sigmoid, tanh};
use crate::input_projection::{InputProjection, RecurrentInput, RecurrentInputGrad};
use crate::matmul::matmul;
use crate::{Float, Param, Parameters};

/// Rows per parallel chunk of a step's element-wise work: all of them when the step is too
/// small for a fork to pay, otherwise one chunk per thread.
pub(crate) fn rows_per_chunk(rows: usize, width: usize) -> usize {
    const PARALLEL_THRESHOLD: usize = 1 << 14;
    if rows * width < PARALLEL_THRESHOLD {
        rows.max(1)
    } else {
        rows.div_ceil(rayon::current_num_threads()).max(1)
    }
}

/// Makes `a` shaped `shape` (zeros), allocating only when the shape changes.
pub(crate) fn reserve<T: Float>(a: &mut Array2<T>, shape: (usize, usize)) {
    if a.dim() != shape {
        *a = Array2::zeros(shape);
    }
}

/// Which rows of the outputs' gradient the backward pass receives.
pub(crate) fn output_grad_rows(dh: ArrayView2<'_, impl Sized>, batch: usize, steps: usize) -> bool {
    let rows = dh.nrows();
    assert!(
        rows == batch || rows == batch * steps,
        "LSTM backward: the output gradient has {rows} rows, expected {batch} (last step) or {} (every step)",
        batch * steps
    );
    rows == batch && steps > 1
}

/// The LSTM layer with its buffers for one batch of sequences.
#[derive(Debug, Clone)]
pub struct Lstm<T> {
    /// `W_x: [D, 4H]`, `b: [4H]`.
    pub input: InputProjection<T>,
    /// `W_h: [H, 4H]`
    pub w_h: Array2<T>,
    /// `[H, 4H]`, accumulated by `backward`.
    pub grad_w_h: Array2<T>,
    batch: usize,
    steps: usize,
    /// Whether the last forward pass started from `h_0 = c_0 = 0`.
    zero_start: bool,
    /// `[T·B, 4H]`: the pre-activations, then the gate values `i, f, o, g` (the backward
    /// pass needs every one of them).
    gates: Array2<T>,
    /// `[(T+1)·B, H]`: `c_0 = 0`, then every step's cell state (the backward pass needs
    /// `c_{t−1}` for `∂L/∂f`).
    c: Array2<T>,
    /// `[T·B, H]`: `tanh(c_t)`, kept rather than recomputed.
    tanh_c: Array2<T>,
    /// `[(T+1)·B, H]`: `h_0 = 0`, then every step's output (the backward pass needs `h_{t−1}`
    /// for `∂L/∂W_h`).
    h: Array2<T>,
    /// `∂L/∂A: [T·B, 4H]`
    dgates: Array2<T>,
    /// `∂L/∂h_t` and `∂L/∂c_t` flowing back from step `t + 1`, `[B, H]` each.
    dh: Array2<T>,
    dc: Array2<T>,
    /// `W_hᵀ: [4H, H]`, contiguous for the backward product.
    w_h_t: Array2<T>,
}

impl<T: Float> Lstm<T> {
    /// An LSTM from `inputs` features to `hidden` units, initialised as the original:
    /// Kaiming-normal with linear gain (std `1/√fan_in`, the true fan-in), biases zero.
    pub fn new(inputs: usize, hidden: usize, rng: &mut impl Rng) -> Self {
        let input = InputProjection::new(inputs, 4 * hidden, 1.0 / (inputs as f64).sqrt(), rng);
        let normal = Normal::new(0.0, 1.0 / (hidden as f64).sqrt()).expect("finite standard deviation");
        let w_h = Array2::from_shape_simple_fn((hidden, 4 * hidden), || T::of(normal.sample(rng)));
        Self::from_weights(input, w_h)
    }

    /// An LSTM initialised as PyTorch's `nn.LSTM`: every weight and bias uniform in `±1/√H`.
    pub fn uniform(inputs: usize, hidden: usize, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (hidden as f64).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
        let mut sample = |shape: (usize, usize)| Array2::from_shape_simple_fn(shape, || T::of(uniform.sample(rng)));
        let (w_x, w_h, bias) = (
            sample((inputs, 4 * hidden)),
            sample((hidden, 4 * hidden)),
            sample((1, 4 * hidden)),
        );
        let bias = bias.into_shape_with_order(4 * hidden).expect("one row");
        Self::from_weights(InputProjection::from_weights(w_x, bias), w_h)
    }

    /// An LSTM with the given input projection (`[D, 4H]`) and `W_h: [H, 4H]`.
    pub fn from_weights(input: InputProjection<T>, w_h: Array2<T>) -> Self {
        let hidden = w_h.nrows();
        assert_eq!(w_h.ncols(), 4 * hidden, "W_h must be [H, 4H]");
        assert_eq!(input.weight.ncols(), 4 * hidden, "W_x must be [D, 4H]");
        Lstm {
            input,
            grad_w_h: Array2::zeros(w_h.raw_dim()),
            w_h,
            batch: 0,
            steps: 0,
            zero_start: true,
            gates: Array2::zeros((0, 0)),
            c: Array2::zeros((0, 0)),
            tanh_c: Array2::zeros((0, 0)),
            h: Array2::zeros((0, 0)),
            dgates: Array2::zeros((0, 0)),
            dh: Array2::zeros((0, 0)),
            dc: Array2::zeros((0, 0)),
            w_h_t: Array2::zeros((0, 0)),
        }
    }

    /// Hidden units `H`.
    pub fn hidden(&self) -> usize {
        self.w_h.nrows()
    }

    /// Every step's output `h_t`, time-major `[T·B, H]`.
    pub fn outputs(&self) -> ArrayView2<'_, T> {
        self.h.slice(s![self.batch.., ..])
    }

    /// The last step's output `h_T: [B, H]`.
    pub fn last_output(&self) -> ArrayView2<'_, T> {
        self.h.slice(s![self.steps * self.batch.., ..])
    }

    /// Runs over the `T·B` time-major input rows of `batch` sequences from zero state.
    pub fn forward(&mut self, input: RecurrentInput<'_, T>, batch: usize) {
        self.forward_from(input, batch, None);
    }

    /// The last step's `(h_T, c_T)`, `[B, H]` each: the state to continue from.
    pub fn final_state(&self) -> (ArrayView2<'_, T>, ArrayView2<'_, T>) {
        let last = self.steps * self.batch;
        (self.h.slice(s![last.., ..]), self.c.slice(s![last.., ..]))
    }

    /// Runs over the `T·B` time-major input rows of `batch` sequences from `state`
    /// (`(h_0, c_0)`, `[B, H]` each; zeros when `None`).
    pub fn forward_from(
        &mut self,
        input: RecurrentInput<'_, T>,
        batch: usize,
        state: Option<(ArrayView2<'_, T>, ArrayView2<'_, T>)>,
    ) {
        let rows = input.rows();
        assert!(
            batch > 0 && rows > 0 && rows.is_multiple_of(batch),
            "LSTM: {rows} input rows are not whole steps of {batch}"
        );
        let (b, h, steps) = (batch, self.hidden(), rows / batch);
        (self.batch, self.steps) = (b, steps);
        reserve(&mut self.gates, (rows, 4 * h));
        reserve(&mut self.c, (rows + b, h));
        reserve(&mut self.h, (rows + b, h));
        reserve(&mut self.tanh_c, (rows, h));
        self.zero_start = state.is_none();
        match state {
            Some((h0, c0)) => {
                self.h.slice_mut(s![..b, ..]).assign(&h0);
                self.c.slice_mut(s![..b, ..]).assign(&c0);
            }
            None => {
                self.h.slice_mut(s![..b, ..]).fill(T::zero());
                self.c.slice_mut(s![..b, ..]).fill(T::zero());
            }
        }
        self.input.forward(input, self.gates.view_mut());
        let chunk = rows_per_chunk(b, 4 * h);
        for t in 0..steps {
            if t > 0 || !self.zero_start {
                let (h_prev, mut a) = (
                    self.h.slice(s![t * b..(t + 1) * b, ..]),
                    self.gates.slice_mut(s![t * b..(t + 1) * b, ..]),
                );
                matmul(h_prev, self.w_h.view(), &mut a, true);
            }
            let gates = &mut self.gates.as_slice_mut().expect("contiguous")[t * b * 4 * h..(t + 1) * b * 4 * h];
            let (c_before, c_after) = self.c.as_slice_mut().expect("contiguous").split_at_mut((t + 1) * b * h);
            let c_prev = &c_before[t * b * h..];
            let c_new = &mut c_after[..b * h];
            let tanh_c = &mut self.tanh_c.as_slice_mut().expect("contiguous")[t * b * h..(t + 1) * b * h];
            let h_new = &mut self.h.as_slice_mut().expect("contiguous")[(t + 1) * b * h..(t + 2) * b * h];
            gates
                .par_chunks_mut(chunk * 4 * h)
                .zip(c_prev.par_chunks(chunk * h))
                .zip(c_new.par_chunks_mut(chunk * h))
                .zip(tanh_c.par_chunks_mut(chunk * h))
                .zip(h_new.par_chunks_mut(chunk * h))
                .for_each(|((((a, cp), c), tc), hn)| cell_forward(a, cp, c, tc, hn, h));
        }
    }

    /// Backward pass through time, given the gradient of the outputs: `dh: [B, H]` for the
    /// last step only (a classifier) or `[T·B, H]` for every step. Accumulates the parameter
    /// gradients and sends the input's gradient to `input`.
    ///
    /// Derivation, per step from the last (`⊙` elementwise, `dX` = `∂L/∂X`):
    /// - `h_t` feeds the output and the next step's `A_{t+1} = … + h_t·W_h`, so
    ///   `dh_t = (∂L/∂h_t)_out + dA_{t+1}·W_hᵀ`;
    /// - `h = tanh(c)⊙o`: `do = dh⊙tanh(c)`, and `c_t` feeds `h_t` and `c_{t+1} = … + c_t⊙f_{t+1}`,
    ///   so `dc_t = dh⊙o⊙(1 − tanh²c_t) + dc_{t+1}⊙f_{t+1}`;
    /// - `c = g⊙i + c_{t−1}⊙f`: `di = dc⊙g`, `dg = dc⊙i`, `df = dc⊙c_{t−1}`;
    /// - through the nonlinearities, `σ' = σ(1 − σ)` and `tanh' = 1 − tanh²`:
    ///   `dA_i = di⊙i(1−i)`, `dA_f = df⊙f(1−f)`, `dA_o = do⊙o(1−o)`, `dA_g = dg⊙(1−g²)`;
    /// - `A_t = … + h_{t−1}·W_h` is a linear layer in `h_{t−1}`: `∂L/∂W_h = Σ_t h_{t−1}ᵀ·dA_t`
    ///   (one product over all steps at the end) and the `dA_t·W_hᵀ` above.
    ///
    /// The input side, `A = x·W_x + b`, is the linear layer's derivation ([`InputProjection`]).
    pub fn backward(&mut self, dh_out: ArrayView2<'_, T>, input: RecurrentInputGrad<'_, T>) {
        let (b, h, steps) = (self.batch, self.hidden(), self.steps);
        assert!(steps > 0, "LSTM backward before forward");
        let last_only = output_grad_rows(dh_out.view(), b, steps);
        let dh_out = dh_out.as_standard_layout();
        let dh_out = dh_out.as_slice().expect("standard layout");
        reserve(&mut self.dgates, (steps * b, 4 * h));
        reserve(&mut self.dh, (b, h));
        reserve(&mut self.dc, (b, h));
        reserve(&mut self.w_h_t, (4 * h, h));
        self.w_h_t.assign(&self.w_h.t());
        self.dh.fill(T::zero());
        self.dc.fill(T::zero());
        let chunk = rows_per_chunk(b, 4 * h);
        for t in (0..steps).rev() {
            let rows = t * b * h..(t + 1) * b * h;
            let external = if last_only {
                (t == steps - 1).then_some(dh_out)
            } else {
                Some(&dh_out[rows.clone()])
            };
            let dh = self.dh.as_slice_mut().expect("contiguous");
            if let Some(external) = external {
                dh.iter_mut().zip(external).for_each(|(d, &e)| *d += e);
            }
            let gates = &self.gates.as_slice().expect("contiguous")[t * b * 4 * h..(t + 1) * b * 4 * h];
            let c_prev = &self.c.as_slice().expect("contiguous")[rows.clone()];
            let tanh_c = &self.tanh_c.as_slice().expect("contiguous")[rows];
            let dgates = &mut self.dgates.as_slice_mut().expect("contiguous")[t * b * 4 * h..(t + 1) * b * 4 * h];
            gates
                .par_chunks(chunk * 4 * h)
                .zip(c_prev.par_chunks(chunk * h))
                .zip(tanh_c.par_chunks(chunk * h))
                .zip(dh.par_chunks(chunk * h))
                .zip(self.dc.as_slice_mut().expect("contiguous").par_chunks_mut(chunk * h))
                .zip(dgates.par_chunks_mut(chunk * 4 * h))
                .for_each(|(((((a, cp), tc), dh), dc), da)| cell_backward(a, cp, tc, dh, dc, da, h));
            if t > 0 {
                let da = self.dgates.slice(s![t * b..(t + 1) * b, ..]);
                matmul(da, self.w_h_t.view(), &mut self.dh.view_mut(), false);
            }
        }
        // ∂L/∂W_h = Σ_t h_{t−1}ᵀ·dA_t; from zero state step 0 read h_0 = 0 and adds nothing.
        let first = if self.zero_start { b } else { 0 };
        if first < steps * b {
            let h_prev = self.h.slice(s![first..steps * b, ..]);
            let da = self.dgates.slice(s![first.., ..]);
            matmul(h_prev.t(), da, &mut self.grad_w_h.view_mut(), true);
        }
        self.input.backward(input, self.dgates.view());
    }
}

/// One step's element-wise work for some rows: `a` holds the pre-activations `[rows, 4H]`
/// and is overwritten with the gate values.
fn cell_forward<T: Float>(a: &mut [T], c_prev: &[T], c: &mut [T], tanh_c: &mut [T], h_out: &mut [T], hidden: usize) {
    for ((((a, c_prev), c), tanh_c), h_out) in a
        .chunks_exact_mut(4 * hidden)
        .zip(c_prev.chunks_exact(hidden))
        .zip(c.chunks_exact_mut(hidden))
        .zip(tanh_c.chunks_exact_mut(hidden))
        .zip(h_out.chunks_exact_mut(hidden))
    {
        let (i, rest) = a.split_at_mut(hidden);
        let (f, rest) = rest.split_at_mut(hidden);
        let (o, g) = rest.split_at_mut(hidden);
        row_forward(i, f, o, g, c_prev, c, tanh_c, h_out);
    }
}

/// One step's element-wise backward work for some rows (see [`Lstm::backward`]): reads the
/// gate values, `c_{t−1}`, `tanh(c_t)` and `dh_t`; turns `dc` from `dc_{t+1}⊙…` into
/// `dc_t⊙f_t` for the step before; writes `dA_t`.
fn cell_backward<T: Float>(a: &[T], c_prev: &[T], tanh_c: &[T], dh: &[T], dc: &mut [T], da: &mut [T], hidden: usize) {
    for (((((a, c_prev), tanh_c), dh), dc), da) in a
        .chunks_exact(4 * hidden)
        .zip(c_prev.chunks_exact(hidden))
        .zip(tanh_c.chunks_exact(hidden))
        .zip(dh.chunks_exact(hidden))
        .zip(dc.chunks_exact_mut(hidden))
        .zip(da.chunks_exact_mut(4 * hidden))
    {
        let (i, rest) = a.split_at(hidden);
        let (f, rest) = rest.split_at(hidden);
        let (o, g) = rest.split_at(hidden);
        let (da_i, rest) = da.split_at_mut(hidden);
        let (da_f, rest) = rest.split_at_mut(hidden);
        let (da_o, da_g) = rest.split_at_mut(hidden);
        row_backward(i, f, o, g, c_prev, tanh_c, dh, dc, da_i, da_f, da_o, da_g);
    }
}

/// One row of [`cell_forward`]. A function of its own so that every slice arrives as a
/// separate argument the compiler knows does not alias the others: split from one buffer
/// inside a loop, they would need run-time overlap checks, and the loop would not vectorise.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn row_forward<T: Float>(
    i: &mut [T],
    f: &mut [T],
    o: &mut [T],
    g: &mut [T],
    c_prev: &[T],
    c: &mut [T],
    tanh_c: &mut [T],
    h_out: &mut [T],
) {
    // Equal lengths, stated once, let the compiler drop the bounds checks.
    let n = i.len();
    let (f, o, g, c_prev, c, tanh_c, h_out) = (
        &mut f[..n],
        &mut o[..n],
        &mut g[..n],
        &c_prev[..n],
        &mut c[..n],
        &mut tanh_c[..n],
        &mut h_out[..n],
    );
    for j in 0..n {
        let (iv, fv, ov, gv) = (sigmoid(i[j]), sigmoid(f[j]), sigmoid(o[j]), tanh(g[j]));
        (i[j], f[j], o[j], g[j]) = (iv, fv, ov, gv);
        let cv = gv * iv + c_prev[j] * fv;
        let tc = tanh(cv);
        c[j] = cv;
        tanh_c[j] = tc;
        h_out[j] = tc * ov;
    }
}

/// One row of [`cell_backward`] (a function of its own for the reason [`row_forward`] gives).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn row_backward<T: Float>(
    i: &[T],
    f: &[T],
    o: &[T],
    g: &[T],
    c_prev: &[T],
    tanh_c: &[T],
    dh: &[T],
    dc: &mut [T],
    da_i: &mut [T],
    da_f: &mut [T],
    da_o: &mut [T],
    da_g: &mut [T],
) {
    let n = i.len();
    let (f, o, g, c_prev, tanh_c, dh, dc) = (
        &f[..n],
        &o[..n],
        &g[..n],
        &c_prev[..n],
        &tanh_c[..n],
        &dh[..n],
        &mut dc[..n],
    );
    let (da_i, da_f, da_o, da_g) = (&mut da_i[..n], &mut da_f[..n], &mut da_o[..n], &mut da_g[..n]);
    let one = T::one();
    for j in 0..n {
        let (iv, fv, ov, gv, tc) = (i[j], f[j], o[j], g[j], tanh_c[j]);
        let dcv = dc[j] + dh[j] * ov * (one - tc * tc);
        da_i[j] = dcv * gv * iv * (one - iv);
        da_f[j] = dcv * c_prev[j] * fv * (one - fv);
        da_o[j] = dh[j] * tc * ov * (one - ov);
        da_g[j] = dcv * iv * (one - gv * gv);
        dc[j] = dcv * fv;
    }
}

impl<T: Float> Parameters<T> for Lstm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut params = self.input.parameters();
        params.insert(
            1,
            Param {
                name: "w_h".into(),
                shape: self.w_h.shape().to_vec(),
                value: self.w_h.as_slice_mut().expect("contiguous"),
                grad: self.grad_w_h.as_slice_mut().expect("contiguous"),
            },
        );
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Embedding;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const BATCH: usize = 3;

    fn layer(rng: &mut StdRng, inputs: usize, hidden: usize) -> Lstm<f64> {
        let input = InputProjection::from_weights(
            random_array(rng, (inputs, 4 * hidden)) * 0.5,
            random_array(rng, 4 * hidden) * 0.5,
        );
        Lstm::from_weights(input, random_array(rng, (hidden, 4 * hidden)) * 0.5)
    }

    fn outputs(l: &mut Lstm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        l.outputs().to_owned()
    }

    fn last(l: &mut Lstm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        l.last_output().to_owned()
    }

    fn backward(l: &mut Lstm<f64>, x: ArrayView2<f64>, dh: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        let mut dx = Array2::zeros(x.raw_dim());
        l.backward(dh, RecurrentInputGrad::Features(x, Some(dx.view_mut())));
        dx
    }

    #[test]
    fn matches_the_per_gate_equations() {
        let mut rng = StdRng::seed_from_u64(31);
        let (d, h, steps) = (2, 3, 4);
        let mut l = layer(&mut rng, d, h);
        let x = random_array(&mut rng, (steps * BATCH, d));
        let out = outputs(&mut l, x.view());
        let (wx, b, wh) = (&l.input.weight, &l.input.bias, &l.w_h);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        for seq in 0..BATCH {
            let (mut hv, mut cv) = (vec![0.0; h], vec![0.0; h]);
            for t in 0..steps {
                let xr = x.row(t * BATCH + seq);
                let gate = |k: usize, j: usize| {
                    let col = k * h + j;
                    b[col]
                        + (0..d).map(|p| xr[p] * wx[[p, col]]).sum::<f64>()
                        + (0..h).map(|p| hv[p] * wh[[p, col]]).sum::<f64>()
                };
                let mut h_new = vec![0.0; h];
                for j in 0..h {
                    let (i, f, o, g) = (sig(gate(0, j)), sig(gate(1, j)), sig(gate(2, j)), gate(3, j).tanh());
                    cv[j] = g * i + cv[j] * f;
                    h_new[j] = cv[j].tanh() * o;
                }
                hv = h_new;
                for j in 0..h {
                    assert!((out[[t * BATCH + seq, j]] - hv[j]).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(32);
        for (d, h, steps) in [(2, 3, 1), (3, 4, 5)] {
            let mut l = layer(&mut rng, d, h);
            let x = random_array(&mut rng, (steps * BATCH, d));
            // Every step's output feeding the loss, and only the last one (a classifier).
            check_input_gradient(&mut l, &x, outputs, backward, &mut rng);
            check_parameter_gradients(&mut l, &x, outputs, backward, &mut rng);
            check_input_gradient(&mut l, &x, last, backward, &mut rng);
            check_parameter_gradients(&mut l, &x, last, backward, &mut rng);
        }
    }

    #[test]
    fn token_inputs_reach_the_embedding() {
        let mut rng = StdRng::seed_from_u64(33);
        let (d, h, steps) = (2, 3, 4);
        let ids: Vec<usize> = (0..steps * BATCH).map(|r| (r * 7 + r / 3) % 3).collect();
        let mut model = (
            Embedding::from_weights(random_array(&mut rng, (3, d))),
            layer(&mut rng, d, h),
        );
        let dummy = Array2::zeros((1, 1));
        let forward = |(e, l): &mut (Embedding<f64>, Lstm<f64>), _: ArrayView2<f64>| {
            l.forward(RecurrentInput::Tokens(&ids, e), BATCH);
            l.last_output().to_owned()
        };
        let backward = |(e, l): &mut (Embedding<f64>, Lstm<f64>), _: ArrayView2<f64>, dh: ArrayView2<f64>| {
            l.forward(RecurrentInput::Tokens(&ids, e), BATCH);
            l.backward(dh, RecurrentInputGrad::Tokens(&ids, e));
        };
        check_parameter_gradients(&mut model, &dummy, forward, backward, &mut rng);
    }

    #[test]
    fn continuing_from_the_final_state_equals_one_long_run() {
        let mut rng = StdRng::seed_from_u64(34);
        let (d, h) = (2, 3);
        let mut l = layer(&mut rng, d, h);
        let x = random_array(&mut rng, (5 * BATCH, d));
        let whole = outputs(&mut l, x.view());
        l.forward(RecurrentInput::Features(x.slice(s![..2 * BATCH, ..])), BATCH);
        let (h0, c0) = (l.final_state().0.to_owned(), l.final_state().1.to_owned());
        l.forward_from(
            RecurrentInput::Features(x.slice(s![2 * BATCH.., ..])),
            BATCH,
            Some((h0.view(), c0.view())),
        );
        let rest = l.outputs().to_owned();
        assert!(
            rest.iter()
                .zip(whole.slice(s![2 * BATCH.., ..]))
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
    }

    #[test]
    fn gradients_from_a_given_state_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(35);
        let (d, h, steps) = (2, 3, 3);
        let mut l = layer(&mut rng, d, h);
        let x = random_array(&mut rng, (steps * BATCH, d));
        let (h0, c0) = (random_array(&mut rng, (BATCH, h)), random_array(&mut rng, (BATCH, h)));
        let forward = |l: &mut Lstm<f64>, x: ArrayView2<f64>| {
            l.forward_from(RecurrentInput::Features(x), BATCH, Some((h0.view(), c0.view())));
            l.outputs().to_owned()
        };
        let backward = |l: &mut Lstm<f64>, x: ArrayView2<f64>, dh: ArrayView2<f64>| {
            forward(l, x);
            l.backward(dh, RecurrentInputGrad::Features(x, None));
        };
        check_parameter_gradients(&mut l, &x, forward, backward, &mut rng);
    }

    impl Parameters<f64> for (Embedding<f64>, Lstm<f64>) {
        fn parameters(&mut self) -> Vec<Param<'_, f64>> {
            let mut p = self.0.parameters();
            p.extend(self.1.parameters());
            p
        }
    }
}
