//! Uniform access to a model's parameters and their gradients, for optimisers, gradient
//! checks and checkpoints.

/// One parameter tensor and its accumulated gradient, both as flat slices of equal length.
pub struct Param<'a, T> {
    /// A stable, human-readable name such as `linear.0.weight`.
    pub name: String,
    /// The values, in the tensor's row-major order.
    pub value: &'a mut [T],
    /// The gradient of the loss with respect to `value`, same layout.
    pub grad: &'a mut [T],
    /// The tensor's shape, for checkpoints.
    pub shape: Vec<usize>,
}

/// `params` renamed `<prefix>.<name>`: how a model names the parameters of its parts.
pub fn prefixed<'a, T>(
    prefix: impl std::fmt::Display,
    params: Vec<Param<'a, T>>,
) -> impl Iterator<Item = Param<'a, T>> {
    params.into_iter().map(move |mut p| {
        p.name = format!("{prefix}.{}", p.name);
        p
    })
}

/// The entries of `tensors` that have gradients: a model's parameters among everything its
/// checkpoint keeps (statistics such as BatchNorm's running mean carry empty gradients).
pub fn trainable<'a, T>(tensors: Vec<Param<'a, T>>) -> Vec<Param<'a, T>> {
    tensors.into_iter().filter(|p| p.value.len() == p.grad.len()).collect()
}

/// Something with parameters.
pub trait Parameters<T> {
    /// Every parameter with its gradient, in a fixed order.
    fn parameters(&mut self) -> Vec<Param<'_, T>>;

    /// Every parameter followed by whatever else a checkpoint must keep (BatchNorm running
    /// statistics, with empty gradients); by default just the parameters.
    fn tensors(&mut self) -> Vec<Param<'_, T>> {
        self.parameters()
    }

    /// Sets every gradient to zero.
    fn zero_grad(&mut self)
    where
        T: num_traits::Zero + Copy,
    {
        for p in self.parameters() {
            p.grad.fill(T::zero());
        }
    }

    /// Total number of scalar parameters.
    fn num_parameters(&mut self) -> usize {
        self.parameters().iter().map(|p| p.value.len()).sum()
    }
}
