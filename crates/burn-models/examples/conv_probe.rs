use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use std::time::Instant;
fn conv_mm(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [cout, _, _, _] = weight.dims();
    let padded = x.pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let mut taps = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            taps.push(padded.clone().slice([0..b, 0..c, dy..dy + h, dx..dx + w]));
        }
    }
    let cols = Tensor::stack::<5>(taps, 2)
        .reshape([b, c * 9, h * w])
        .swap_dims(0, 1)
        .reshape([c * 9, b * h * w]);
    let out = weight.reshape([cout, c * 9]).matmul(cols);
    out.reshape([cout, b, h, w]).swap_dims(0, 1)
}

fn main() {
    let device = Device::flex().autodiff();
    for (c, side) in [(64usize, 32usize), (128, 16), (256, 8), (512, 4), (512, 2)] {
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random([32, c, side, side], burn::tensor::Distribution::Default, &device).require_grad();
        let mut ts = vec![];
        for i in 0..6 {
            let t = Instant::now();
            let y = conv.forward(x.clone());
            let g = y.sum().backward();
            let _ = conv.weight.grad(&g).unwrap().into_data();
            if i > 0 {
                ts.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        ts.sort_by(f64::total_cmp);
        let mut ms = vec![];
        for i in 0..6 {
            let t = Instant::now();
            let y = conv_mm(x.clone(), conv.weight.val());
            let g = y.sum().backward();
            let _ = conv.weight.grad(&g).unwrap().into_data();
            if i > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        ms.sort_by(f64::total_cmp);
        let a = conv.forward(x.clone()).into_data().convert::<f32>();
        let bb = conv_mm(x.clone(), conv.weight.val()).into_data().convert::<f32>();
        let (a, bb) = (a.as_slice::<f32>().unwrap(), bb.as_slice::<f32>().unwrap());
        let err = a.iter().zip(bb).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        println!("   as unfold+matmul: {:.1} ms (max diff {err:e})", ms[2]);
        let flops = 3.0 * 2.0 * (32 * c * c * 9 * side * side) as f64;
        println!(
            "conv3x3 {c}@{side}: {:.1} ms, {:.1} GFLOP/s",
            ts[2],
            flops / ts[2] / 1e6
        );
    }
}
