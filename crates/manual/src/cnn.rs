//! The write-up's pre-activation residual CNN, layer for layer as the burn engine's
//! (`burn_models::Cnn`), on pixel-major feature maps ([`MapShape`]):
//!
//! ```text
//! conv3×3(3→64) · PreAct(64) · conv1×1(64→128) · maxpool(3, s2, p1) · PreAct(128)×2 ·
//! conv1×1(128→256) · maxpool · PreAct(256)×2 · conv1×1(256→512) · maxpool · PreAct(512)×2 ·
//! maxpool · PreAct(512)×2 · maxpool · BatchNorm · ReLU · flatten · Linear(512→10)
//! ```
//!
//! Images arrive as the data set stores them (`[batch, channels·side·side]`, planes) and
//! are transposed once to the pixel-major rows of [`MapShape`].

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, Uniform};

use crate::conv2d::{MapShape, Window};
use crate::max_pool::MaxPool2d;
use crate::param::{prefixed, trainable};
use crate::preact_block::PreActBlock;
use crate::softmax_cross_entropy::count_correct;
use crate::{BatchNorm, Conv2d, Float, LinearLayer, Param, Parameters, SoftmaxCrossEntropy};

/// Shape of the network: the write-up's is [`CnnConfig::cifar10`]; tests use tiny ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CnnConfig {
    /// Input image side (square images).
    pub side: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the first block and of the three widened stages (64, 128, 256, 512).
    pub widths: [usize; 4],
    /// Output classes.
    pub classes: usize,
}

impl CnnConfig {
    /// The write-up's network for CIFAR-10.
    pub fn cifar10() -> Self {
        CnnConfig {
            side: 32,
            in_channels: 3,
            widths: [64, 128, 256, 512],
            classes: 10,
        }
    }
}

/// The max-pooling of every stage: 3×3, stride 2, padding 1.
const POOL: Window = Window {
    kernel: 3,
    stride: 2,
    padding: 1,
};

/// One layer of the convolutional trunk.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // eighteen layers, built once: boxing would buy nothing
enum Layer<T> {
    Conv(Conv2d<T>),
    Pool(MaxPool2d),
    Block(PreActBlock<T>),
}

/// A trunk layer with the shapes and buffers of the current batch.
#[derive(Debug, Clone)]
struct Node<T> {
    layer: Layer<T>,
    input: MapShape,
    output: MapShape,
    /// The layer's output, `[pixels, channels]`.
    out: Array2<T>,
    /// `∂L/∂out`, written by the next layer's backward pass.
    d_out: Array2<T>,
}

impl<T: Float> Node<T> {
    fn forward(&mut self, x: ArrayView2<'_, T>, training: bool) {
        let y = self.out.view_mut();
        match &mut self.layer {
            Layer::Conv(conv) => conv.forward(x, self.input, y, false),
            Layer::Pool(pool) => pool.forward(x, self.input, y),
            Layer::Block(block) => block.forward(x, self.input, y, training),
        }
    }

    fn backward(&mut self, x: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) {
        let dy = self.d_out.view();
        match (&mut self.layer, dx) {
            (Layer::Conv(conv), dx) => conv.backward(x, self.input, dy, dx),
            (Layer::Pool(pool), Some(dx)) => pool.backward(dy, self.input, dx),
            (Layer::Block(block), Some(dx)) => block.backward(x, self.input, dy, dx),
            (_, None) => unreachable!("only a convolution starts the network"),
        }
    }

    fn out_and_grad(&mut self) -> (ArrayView2<'_, T>, ArrayViewMut2<'_, T>) {
        (self.out.view(), self.d_out.view_mut())
    }
}

/// The residual CNN with hand-written backward passes.
#[derive(Debug, Clone)]
pub struct Cnn<T> {
    config: CnnConfig,
    trunk: Vec<Node<T>>,
    /// BatchNorm of the pooled features, before the last ReLU.
    norm: BatchNorm<T>,
    head: LinearLayer<T>,
    /// The batch, pixel-major `[side·side·images, channels]`.
    input: Array2<T>,
    /// `ReLU(BatchNorm(pooled))`, `[batch, channels]`: the head's input.
    features: Array2<T>,
    /// `∂L/∂features`.
    d_features: Array2<T>,
    /// Logits `[batch, classes]`.
    logits: Array2<T>,
    /// Softmax of the logits; the loss's backward pass turns it into `∂L/∂logits`.
    probs: Array2<T>,
}

impl<T: Float> Cnn<T> {
    /// A freshly initialised network: convolutions Kaiming-normal (fan-out, ReLU gain) with
    /// zero biases, BatchNorms `γ = 1, β = 0`, the head as PyTorch's `nn.Linear` (uniform in
    /// `±1/√fan_in`).
    pub fn new(config: CnnConfig, rng: &mut impl Rng) -> Self {
        let [w0, w1, w2, w3] = config.widths;
        let same3 = Window {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let one = Window {
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        let mut layers = vec![
            Layer::Conv(Conv2d::new(config.in_channels, w0, same3, true, rng)),
            Layer::Block(PreActBlock::new(w0, rng)),
        ];
        for (from, to) in [(w0, w1), (w1, w2), (w2, w3), (w3, w3)] {
            if from != to {
                layers.push(Layer::Conv(Conv2d::new(from, to, one, true, rng)));
            }
            layers.push(Layer::Pool(MaxPool2d::new(POOL)));
            layers.push(Layer::Block(PreActBlock::new(to, rng)));
            layers.push(Layer::Block(PreActBlock::new(to, rng)));
        }
        layers.push(Layer::Pool(MaxPool2d::new(POOL)));
        // Shapes for one image; `reserve` scales them to the batch.
        let mut shape = MapShape {
            images: 1,
            height: config.side,
            width: config.side,
            channels: config.in_channels,
        };
        let trunk = layers
            .into_iter()
            .map(|layer| {
                let output = match &layer {
                    Layer::Conv(conv) => conv.output_shape(shape),
                    Layer::Pool(pool) => pool.output_shape(shape),
                    Layer::Block(_) => shape,
                };
                let node = Node {
                    layer,
                    input: shape,
                    output,
                    out: Array2::zeros((0, 0)),
                    d_out: Array2::zeros((0, 0)),
                };
                shape = output;
                node
            })
            .collect();
        assert_eq!(
            (shape.height, shape.width),
            (1, 1),
            "the trunk must pool a {0}×{0} image down to 1×1",
            config.side
        );
        let features = shape.channels;
        let bound = 1.0 / (features as f64).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
        let weight = Array2::from_shape_simple_fn((features, config.classes), || T::of(uniform.sample(rng)));
        let bias = Array1::from_shape_simple_fn(config.classes, || T::of(uniform.sample(rng)));
        Cnn {
            config,
            trunk,
            norm: BatchNorm::new(features),
            head: LinearLayer::from_weights(weight, bias),
            input: Array2::zeros((0, 0)),
            features: Array2::zeros((0, 0)),
            d_features: Array2::zeros((0, 0)),
            logits: Array2::zeros((0, 0)),
            probs: Array2::zeros((0, 0)),
        }
    }

    /// The network's shape.
    pub fn config(&self) -> &CnnConfig {
        &self.config
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.config.in_channels * self.config.side * self.config.side
    }

    /// Sizes every buffer for `batch` images; allocates only when the batch size changes.
    fn reserve(&mut self, batch: usize) {
        // Every buffer is sized together, so the logits' rows say the batch they are for.
        if self.logits.nrows() == batch {
            return;
        }
        let with_images = |s: MapShape| MapShape { images: batch, ..s };
        for node in &mut self.trunk {
            node.input = with_images(node.input);
            node.output = with_images(node.output);
            node.out = Array2::zeros(node.output.dim());
            node.d_out = Array2::zeros(node.output.dim());
        }
        let features = self.norm.features();
        self.input = Array2::zeros((batch * self.config.side * self.config.side, self.config.in_channels));
        self.features = Array2::zeros((batch, features));
        self.d_features = Array2::zeros((batch, features));
        self.logits = Array2::zeros((batch, self.config.classes));
        self.probs = Array2::zeros((batch, self.config.classes));
    }

    /// Forward pass: logits `[batch, classes]` of images `x: [batch, channels·side·side]`
    /// (planes, as stored), BatchNorm in training or evaluation mode.
    fn forward_mode(&mut self, x: ArrayView2<'_, T>, training: bool) -> ArrayView2<'_, T> {
        assert_eq!(
            x.ncols(),
            self.input_len(),
            "the CNN expects images of {} values, got {}",
            self.input_len(),
            x.ncols()
        );
        let batch = x.nrows();
        self.reserve(batch);
        // Planes to pixel-major rows: input[p·batch + i, c] = x[i, c·side² + p].
        let (pixels, channels) = (self.config.side * self.config.side, self.config.in_channels);
        for (i, image) in x.rows().into_iter().enumerate() {
            for c in 0..channels {
                for p in 0..pixels {
                    self.input[[p * batch + i, c]] = image[c * pixels + p];
                }
            }
        }
        for i in 0..self.trunk.len() {
            let (before, rest) = self.trunk.split_at_mut(i);
            let x = before.last().map_or(self.input.view(), |prev| prev.out.view());
            rest[0].forward(x, training);
        }
        let pooled = &self.trunk.last().expect("the trunk is not empty").out;
        // After the last pooling every map is 1×1: its rows are the images' feature vectors.
        let pooled = pooled
            .view()
            .into_shape_with_order((batch, self.norm.features()))
            .expect("contiguous");
        self.norm.forward_relu(pooled, self.features.view_mut(), training);
        self.head.forward(self.features.view(), self.logits.view_mut());
        self.logits.view()
    }

    /// Logits in evaluation mode (BatchNorm with its running statistics).
    pub fn forward(&mut self, x: ArrayView2<'_, T>) -> ArrayView2<'_, T> {
        self.forward_mode(x, false)
    }

    /// Mean cross-entropy of a batch, no gradients, BatchNorm in evaluation mode.
    pub fn loss(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.loss_mode(x, targets, false)
    }

    /// Mean cross-entropy in training mode (batch statistics, which also moves the running
    /// ones), no gradients: what [`forward_backward`](Self::forward_backward) differentiates.
    pub fn training_loss(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.loss_mode(x, targets, true)
    }

    fn loss_mode(&mut self, x: ArrayView2<'_, T>, targets: &[usize], training: bool) -> T {
        self.forward_mode(x, training);
        SoftmaxCrossEntropy.forward(self.logits.view(), targets, self.probs.view_mut())
    }

    /// Number of images whose prediction is the target (evaluation mode).
    pub fn count_correct(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> usize {
        let logits = self.forward(x);
        count_correct(logits, targets)
    }

    /// Forward and backward pass on one batch in training mode: returns the mean loss and
    /// accumulates the gradient of every parameter.
    pub fn forward_backward(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        let loss = self.training_loss(x, targets);
        SoftmaxCrossEntropy.backward_in_place(self.probs.view_mut(), targets);
        let batch = x.nrows();
        self.head.backward(
            self.features.view(),
            self.probs.view(),
            Some(self.d_features.view_mut()),
        );
        {
            let features = self.norm.features();
            let last = self.trunk.last_mut().expect("the trunk is not empty");
            let (pooled, d_pooled) = last.out_and_grad();
            let pooled = pooled.into_shape_with_order((batch, features)).expect("contiguous");
            let d_pooled = d_pooled.into_shape_with_order((batch, features)).expect("contiguous");
            self.norm
                .backward_relu(pooled, self.d_features.view(), self.features.view(), d_pooled);
        }
        for i in (0..self.trunk.len()).rev() {
            let (before, rest) = self.trunk.split_at_mut(i);
            match before.last_mut() {
                Some(prev) => {
                    let (x, dx) = prev.out_and_grad();
                    rest[0].backward(x, Some(dx));
                }
                None => rest[0].backward(self.input.view(), None),
            }
        }
        loss
    }
}

impl<T: Float> Parameters<T> for Cnn<T> {
    /// Every parameter (as [`Parameters::parameters`] lists them) followed by the BatchNorm
    /// running statistics (with empty gradients): what a checkpoint keeps.
    fn tensors(&mut self) -> Vec<Param<'_, T>> {
        let (mut params, mut statistics) = (Vec::new(), Vec::new());
        for (i, node) in self.trunk.iter_mut().enumerate() {
            match &mut node.layer {
                Layer::Conv(conv) => params.extend(prefixed(format!("layer{i}"), conv.parameters())),
                Layer::Pool(_) => {}
                Layer::Block(block) => {
                    block
                        .norm
                        .append_tensors(format!("layer{i}.norm"), &mut params, &mut statistics);
                    params.extend(prefixed(format!("layer{i}.conv"), block.conv.parameters()));
                }
            }
        }
        self.norm.append_tensors("norm", &mut params, &mut statistics);
        params.extend(prefixed("head", self.head.parameters()));
        params.extend(statistics);
        params
    }

    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        trainable(self.tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, random_array, relative_error};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn the_write_ups_network_has_its_parameter_count() {
        let mut cnn = Cnn::<f32>::new(CnnConfig::cifar10(), &mut StdRng::seed_from_u64(1));
        // PyTorch's count for the write-up's network (see burn_models::cnn).
        assert_eq!(cnn.num_parameters(), 11_135_242);
        let x = Array2::zeros((2, 3 * 32 * 32));
        assert_eq!(cnn.forward(x.view()).dim(), (2, 10));
    }

    #[test]
    fn whole_network_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(95);
        // Every stage with a 1×1 widening, a pooling down to 1×1 and two blocks, at widths
        // small enough to check every parameter.
        let config = CnnConfig {
            side: 6,
            in_channels: 2,
            widths: [2, 3, 3, 4],
            classes: 3,
        };
        let mut cnn = Cnn::<f64>::new(config, &mut rng);
        // Non-trivial BatchNorm parameters, so that γ and β paths are exercised.
        for p in cnn.parameters() {
            if p.name.contains("norm") {
                for v in p.value.iter_mut() {
                    *v = rng.random_range(0.5..1.5);
                }
            }
        }
        let x = random_array(&mut rng, (4, 2 * 6 * 6));
        let targets = [0, 2, 1, 2];
        cnn.zero_grad();
        cnn.forward_backward(x.view(), &targets);
        let analytic: Vec<(String, Vec<f64>)> = cnn
            .parameters()
            .into_iter()
            .map(|p| (p.name, p.grad.to_vec()))
            .collect();
        for (k, (name, grad)) in analytic.iter().enumerate() {
            let numeric = numerical_gradient(grad.len(), |i, h| {
                cnn.parameters()[k].value[i] += h;
                let l = cnn.training_loss(x.view(), &targets);
                cnn.parameters()[k].value[i] -= h;
                l
            });
            // The convolution biases get no gradient at all: a per-channel constant passes
            // unchanged through the residual paths, the 1×1 convolutions and the poolings,
            // and the BatchNorms (inside each block and before the head) subtract it again.
            // Both sides must then be zero up to rounding.
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if name.ends_with("bias") && !name.starts_with("head") {
                assert!(
                    norm(grad) < 1e-12 && norm(&numeric) < 1e-8,
                    "{name}: {grad:?} {numeric:?}"
                );
                continue;
            }
            let err = relative_error(grad, &numeric);
            assert!(err < TOLERANCE, "{name}: relative error {err:e}");
        }
    }
}
