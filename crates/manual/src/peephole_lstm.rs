//! The original practical's peephole LSTM, gate products fused. Its gates read the previous
//! cell state instead of the previous output, and its candidate reads the input alone:
//! ```text
//! A_t = x_t·W_x + b  [B, 4H] (blocks i, f, o, candidate);   A_ifo += c_{t−1}·W_c  (W_c: [H, 3H])
//! i, f, o, k = σ(A_i), σ(A_f), σ(A_o), σ(A_k)
//! c_t = k⊙i + c_{t−1}⊙f                   h_t = tanh(c_t)⊙o
//! ```
//! from `c_0 = 0`. `h` feeds nothing but the output, so only `c` carries the recurrence.

use ndarray::{Array2, ArrayView2, s};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::float::{sigmoid, tanh};
use crate::input_projection::{InputProjection, RecurrentInput, RecurrentInputGrad};
use crate::lstm::{output_grad_rows, reserve, rows_per_chunk};
use crate::matmul::matmul;
use crate::{Float, Param, Parameters};

/// The peephole LSTM layer with its buffers for one batch of sequences.
#[derive(Debug, Clone)]
pub struct PeepholeLstm<T> {
    /// `W_x: [D, 4H]`, `b: [4H]` (blocks `i, f, o, k`).
    pub input: InputProjection<T>,
    /// `W_c: [H, 3H]` (blocks `i, f, o`).
    pub w_c: Array2<T>,
    /// `[H, 3H]`, accumulated by `backward`.
    pub grad_w_c: Array2<T>,
    batch: usize,
    steps: usize,
    /// `[T·B, 4H]`: pre-activations, then the gate values `i, f, o, k`.
    gates: Array2<T>,
    /// `[(T+1)·B, H]`: `c_0 = 0`, then every step's cell state.
    c: Array2<T>,
    /// `[T·B, H]`: `tanh(c_t)`.
    tanh_c: Array2<T>,
    /// `[T·B, H]`: every step's output.
    h: Array2<T>,
    /// `∂L/∂A: [T·B, 4H]`
    dgates: Array2<T>,
    /// `∂L/∂h_t` of the current step (from outside only), `[B, H]`.
    dh: Array2<T>,
    /// `∂L/∂c_t` flowing back from step `t + 1`, `[B, H]`.
    dc: Array2<T>,
    /// `W_cᵀ: [3H, H]`, contiguous for the backward product.
    w_c_t: Array2<T>,
}

impl<T: Float> PeepholeLstm<T> {
    /// A peephole LSTM from `inputs` features to `hidden` units, initialised as the original:
    /// Kaiming-normal with linear gain (std `1/√fan_in`, the true fan-in), biases zero.
    pub fn new(inputs: usize, hidden: usize, rng: &mut impl Rng) -> Self {
        let input = InputProjection::new(inputs, 4 * hidden, 1.0 / (inputs as f64).sqrt(), rng);
        let normal = Normal::new(0.0, 1.0 / (hidden as f64).sqrt()).expect("finite standard deviation");
        let w_c = Array2::from_shape_simple_fn((hidden, 3 * hidden), || T::of(normal.sample(rng)));
        Self::from_weights(input, w_c)
    }

    /// A peephole LSTM with the given input projection (`[D, 4H]`) and `W_c: [H, 3H]`.
    pub fn from_weights(input: InputProjection<T>, w_c: Array2<T>) -> Self {
        let hidden = w_c.nrows();
        assert_eq!(w_c.ncols(), 3 * hidden, "W_c must be [H, 3H]");
        assert_eq!(input.weight.ncols(), 4 * hidden, "W_x must be [D, 4H]");
        PeepholeLstm {
            input,
            grad_w_c: Array2::zeros(w_c.raw_dim()),
            w_c,
            batch: 0,
            steps: 0,
            gates: Array2::zeros((0, 0)),
            c: Array2::zeros((0, 0)),
            tanh_c: Array2::zeros((0, 0)),
            h: Array2::zeros((0, 0)),
            dgates: Array2::zeros((0, 0)),
            dh: Array2::zeros((0, 0)),
            dc: Array2::zeros((0, 0)),
            w_c_t: Array2::zeros((0, 0)),
        }
    }

    /// Hidden units `H`.
    pub fn hidden(&self) -> usize {
        self.w_c.nrows()
    }

    /// Every step's output `h_t`, time-major `[T·B, H]`.
    pub fn outputs(&self) -> ArrayView2<'_, T> {
        self.h.view()
    }

    /// The last step's output `h_T: [B, H]`.
    pub fn last_output(&self) -> ArrayView2<'_, T> {
        self.h.slice(s![(self.steps - 1) * self.batch.., ..])
    }

    /// Runs over the `T·B` time-major input rows of `batch` sequences from zero state.
    pub fn forward(&mut self, input: RecurrentInput<'_, T>, batch: usize) {
        let rows = input.rows();
        assert!(
            batch > 0 && rows > 0 && rows.is_multiple_of(batch),
            "peephole LSTM: {rows} input rows are not whole steps of {batch}"
        );
        let (b, h, steps) = (batch, self.hidden(), rows / batch);
        (self.batch, self.steps) = (b, steps);
        reserve(&mut self.gates, (rows, 4 * h));
        reserve(&mut self.c, (rows + b, h));
        reserve(&mut self.h, (rows, h));
        reserve(&mut self.tanh_c, (rows, h));
        self.c.slice_mut(s![..b, ..]).fill(T::zero());
        self.input.forward(input, self.gates.view_mut());
        let chunk = rows_per_chunk(b, 4 * h);
        for t in 0..steps {
            if t > 0 {
                let c_prev = self.c.slice(s![t * b..(t + 1) * b, ..]);
                let mut a = self.gates.slice_mut(s![t * b..(t + 1) * b, ..3 * h]);
                matmul(c_prev, self.w_c.view(), &mut a, true);
            }
            let step = t * b * h..(t + 1) * b * h;
            let gates = &mut self.gates.as_slice_mut().expect("contiguous")[t * b * 4 * h..(t + 1) * b * 4 * h];
            let (c_before, c_after) = self.c.as_slice_mut().expect("contiguous").split_at_mut((t + 1) * b * h);
            let c_prev = &c_before[t * b * h..];
            let c_new = &mut c_after[..b * h];
            let tanh_c = &mut self.tanh_c.as_slice_mut().expect("contiguous")[step.clone()];
            let h_new = &mut self.h.as_slice_mut().expect("contiguous")[step];
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
    /// last step only (a classifier) or `[T·B, H]` for every step.
    ///
    /// Derivation, per step from the last:
    /// - `h_t` feeds only the output: `dh_t = (∂L/∂h_t)_out`;
    /// - `h = tanh(c)⊙o`: `do = dh⊙tanh(c)`; `c_t` feeds `h_t`, `c_{t+1} = … + c_t⊙f_{t+1}` and
    ///   the next gates `A_ifo,t+1 = … + c_t·W_c`, so
    ///   `dc_t = dh⊙o⊙(1 − tanh²c_t) + dc_{t+1}⊙f_{t+1} + dA_ifo,t+1·W_cᵀ`;
    /// - `c = k⊙i + c_{t−1}⊙f`: `di = dc⊙k`, `dk = dc⊙i`, `df = dc⊙c_{t−1}`;
    /// - all four gates are sigmoids: `dA_x = dx⊙x(1 − x)`;
    /// - `∂L/∂W_c = Σ_t c_{t−1}ᵀ·dA_ifo,t` (one product over all steps at the end).
    pub fn backward(&mut self, dh_out: ArrayView2<'_, T>, input: RecurrentInputGrad<'_, T>) {
        let (b, h, steps) = (self.batch, self.hidden(), self.steps);
        assert!(steps > 0, "peephole LSTM backward before forward");
        let last_only = output_grad_rows(dh_out.view(), b, steps);
        let dh_out = dh_out.as_standard_layout();
        let dh_out = dh_out.as_slice().expect("standard layout");
        reserve(&mut self.dgates, (steps * b, 4 * h));
        reserve(&mut self.dh, (b, h));
        reserve(&mut self.dc, (b, h));
        reserve(&mut self.w_c_t, (3 * h, h));
        self.w_c_t.assign(&self.w_c.t());
        self.dc.fill(T::zero());
        let chunk = rows_per_chunk(b, 4 * h);
        for t in (0..steps).rev() {
            let rows = t * b * h..(t + 1) * b * h;
            let dh = self.dh.as_slice_mut().expect("contiguous");
            match (last_only, t == steps - 1) {
                (true, false) => dh.fill(T::zero()),
                (true, true) => dh.copy_from_slice(dh_out),
                (false, _) => dh.copy_from_slice(&dh_out[rows.clone()]),
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
                let da = self.dgates.slice(s![t * b..(t + 1) * b, ..3 * h]);
                matmul(da, self.w_c_t.view(), &mut self.dc.view_mut(), true);
            }
        }
        if steps > 1 {
            // ∂L/∂W_c = Σ_{t≥1} c_{t−1}ᵀ·dA_ifo,t; step 0 read c_0 = 0.
            let c_prev = self.c.slice(s![b..steps * b, ..]);
            let da = self.dgates.slice(s![b.., ..3 * h]);
            matmul(c_prev.t(), da, &mut self.grad_w_c.view_mut(), true);
        }
        self.input.backward(input, self.dgates.view());
    }
}

/// One step's element-wise work for some rows; `a` (pre-activations `[rows, 4H]`) is
/// overwritten with the gate values.
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
        let (o, k) = rest.split_at_mut(hidden);
        row_forward(i, f, o, k, c_prev, c, tanh_c, h_out);
    }
}

/// One step's element-wise backward work (see [`PeepholeLstm::backward`]): turns `dc` from
/// the later steps' part into `dc_t⊙f_t` (the caller then adds `dA_ifo·W_cᵀ`); writes `dA_t`.
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
        let (o, k) = rest.split_at(hidden);
        let (da_i, rest) = da.split_at_mut(hidden);
        let (da_f, rest) = rest.split_at_mut(hidden);
        let (da_o, da_k) = rest.split_at_mut(hidden);
        row_backward(i, f, o, k, c_prev, tanh_c, dh, dc, da_i, da_f, da_o, da_k);
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
    k: &mut [T],
    c_prev: &[T],
    c: &mut [T],
    tanh_c: &mut [T],
    h_out: &mut [T],
) {
    // Equal lengths, stated once, let the compiler drop the bounds checks.
    let n = i.len();
    let (f, o, k, c_prev, c, tanh_c, h_out) = (
        &mut f[..n],
        &mut o[..n],
        &mut k[..n],
        &c_prev[..n],
        &mut c[..n],
        &mut tanh_c[..n],
        &mut h_out[..n],
    );
    for j in 0..n {
        let (iv, fv, ov, kv) = (sigmoid(i[j]), sigmoid(f[j]), sigmoid(o[j]), sigmoid(k[j]));
        (i[j], f[j], o[j], k[j]) = (iv, fv, ov, kv);
        let cv = kv * iv + c_prev[j] * fv;
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
    k: &[T],
    c_prev: &[T],
    tanh_c: &[T],
    dh: &[T],
    dc: &mut [T],
    da_i: &mut [T],
    da_f: &mut [T],
    da_o: &mut [T],
    da_k: &mut [T],
) {
    let n = i.len();
    let (f, o, k, c_prev, tanh_c, dh, dc) = (
        &f[..n],
        &o[..n],
        &k[..n],
        &c_prev[..n],
        &tanh_c[..n],
        &dh[..n],
        &mut dc[..n],
    );
    let (da_i, da_f, da_o, da_k) = (&mut da_i[..n], &mut da_f[..n], &mut da_o[..n], &mut da_k[..n]);
    let one = T::one();
    for j in 0..n {
        let (iv, fv, ov, kv, tc) = (i[j], f[j], o[j], k[j], tanh_c[j]);
        let dcv = dc[j] + dh[j] * ov * (one - tc * tc);
        da_i[j] = dcv * kv * iv * (one - iv);
        da_f[j] = dcv * c_prev[j] * fv * (one - fv);
        da_o[j] = dh[j] * tc * ov * (one - ov);
        da_k[j] = dcv * iv * kv * (one - kv);
        dc[j] = dcv * fv;
    }
}

impl<T: Float> Parameters<T> for PeepholeLstm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut params = self.input.parameters();
        params.insert(
            1,
            Param {
                name: "w_c".into(),
                shape: self.w_c.shape().to_vec(),
                value: self.w_c.as_slice_mut().expect("contiguous"),
                grad: self.grad_w_c.as_slice_mut().expect("contiguous"),
            },
        );
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const BATCH: usize = 3;

    fn layer(rng: &mut StdRng, inputs: usize, hidden: usize) -> PeepholeLstm<f64> {
        let input = InputProjection::from_weights(
            random_array(rng, (inputs, 4 * hidden)) * 0.5,
            random_array(rng, 4 * hidden) * 0.5,
        );
        PeepholeLstm::from_weights(input, random_array(rng, (hidden, 3 * hidden)) * 0.5)
    }

    fn outputs(l: &mut PeepholeLstm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        l.outputs().to_owned()
    }

    fn last(l: &mut PeepholeLstm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        l.last_output().to_owned()
    }

    fn backward(l: &mut PeepholeLstm<f64>, x: ArrayView2<f64>, dh: ArrayView2<f64>) -> Array2<f64> {
        l.forward(RecurrentInput::Features(x), BATCH);
        let mut dx = Array2::zeros(x.raw_dim());
        l.backward(dh, RecurrentInputGrad::Features(x, Some(dx.view_mut())));
        dx
    }

    #[test]
    fn matches_the_per_gate_equations() {
        let mut rng = StdRng::seed_from_u64(41);
        let (d, h, steps) = (2, 3, 4);
        let mut l = layer(&mut rng, d, h);
        let x = random_array(&mut rng, (steps * BATCH, d));
        let out = outputs(&mut l, x.view());
        let (wx, b, wc) = (&l.input.weight, &l.input.bias, &l.w_c);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        for seq in 0..BATCH {
            let mut cv = vec![0.0; h];
            for t in 0..steps {
                let xr = x.row(t * BATCH + seq);
                let input = |col: usize| b[col] + (0..d).map(|p| xr[p] * wx[[p, col]]).sum::<f64>();
                let peep = |col: usize| (0..h).map(|p| cv[p] * wc[[p, col]]).sum::<f64>();
                let mut c_new = vec![0.0; h];
                for j in 0..h {
                    let i = sig(input(j) + peep(j));
                    let f = sig(input(h + j) + peep(h + j));
                    let o = sig(input(2 * h + j) + peep(2 * h + j));
                    let k = sig(input(3 * h + j));
                    c_new[j] = k * i + cv[j] * f;
                    assert!((out[[t * BATCH + seq, j]] - c_new[j].tanh() * o).abs() < 1e-12);
                }
                cv = c_new;
            }
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(42);
        for (d, h, steps) in [(2, 3, 1), (3, 4, 5)] {
            let mut l = layer(&mut rng, d, h);
            let x = random_array(&mut rng, (steps * BATCH, d));
            check_input_gradient(&mut l, &x, outputs, backward, &mut rng);
            check_parameter_gradients(&mut l, &x, outputs, backward, &mut rng);
            check_input_gradient(&mut l, &x, last, backward, &mut rng);
            check_parameter_gradients(&mut l, &x, last, backward, &mut rng);
        }
    }
}
